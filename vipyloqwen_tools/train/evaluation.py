"""Held-out retrieval evaluation per task, as a Sentence-Transformers evaluator.

For each task in the eval file: every query (anchor, encoded with its task prefix) is ranked against the task's
candidate pool, the distinct documents of that task (positives and explicit negatives, encoded without prefix,
or with it for text_pair whose sides are symmetric). ``r@1`` = share of queries whose own positive ranks first.
For text_pair only pairs with score >= 0.5 are retrieval queries, and ``spearman`` is the Spearman correlation
between cos(anchor, positive) and the gold score over all pairs.

Example::

    >>> evaluator = ViPyloQwenEvaluator.from_file("data/sample/eval.jsonl")
    >>> metrics = evaluator(model)   # {"eval_ocr_r@1": ..., "eval_text_pair_spearman": ..., "eval_mean_r@1": ...}
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.evaluation import BaseEvaluator

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.data import load_eval_rows, to_st_input
from vipyloqwen_tools.train.correlation import spearman


def document_prefix(task: str, prefix_documents: bool) -> str | None:
    """The prompt of the document side: text_pair sides are symmetric (both prefixed); others only if asked."""
    return TASKS[task].prefix if task == "text_pair" or prefix_documents else None


def _key(side: dict[str, Any]) -> str:
    return json.dumps([side.get("text"), side.get("images")], ensure_ascii=False)


class ViPyloQwenEvaluator(BaseEvaluator):
    """Per-task R@1 (+ text_pair Spearman) on eval rows; ``primary_metric`` is the mean R@1 over tasks.

    Args:
        rows: ``{task: [normalised row, ...]}`` as :func:`vipyloqwen_tools.data.load_eval_rows` returns.
        name: metric name prefix.
        batch_size: encode batch size.
        prefix_documents: encode documents with the task prefix too (default: only text_pair's).
    """

    def __init__(
        self, rows: dict[str, list[dict]], name: str = "", batch_size: int = 16, prefix_documents: bool = False
    ):
        super().__init__()
        unknown = set(rows) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown eval tasks {sorted(unknown)}")
        self.rows = rows
        self.name = name
        self.batch_size = batch_size
        self.prefix_documents = prefix_documents
        self.primary_metric = "mean_r@1"

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> ViPyloQwenEvaluator:
        return cls(load_eval_rows(path), **kwargs)

    def _encode(self, model, sides: list[dict], prompt: str | None) -> torch.Tensor:
        inputs = [to_st_input(side) for side in sides]
        return (
            model.encode(
                inputs,
                prompt=prompt,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            .float()
            .cpu()
        )

    def compute_metrics(self, model) -> dict[str, float]:
        """Un-prefixed metrics: ``{"<task>_r@1", "text_pair_spearman", "mean_r@1"}``."""
        metrics: dict[str, float] = {}
        for task in (t for t in TASKS if t in self.rows):
            rows = self.rows[task]
            documents: dict[str, dict] = {}
            for row in rows:
                for side in (row["positive"], row["negative"]):
                    if side is not None:
                        documents.setdefault(_key(side), side)
            keys = list(documents)
            queries = self._encode(model, [row["query"] for row in rows], TASKS[task].prefix)
            docs = self._encode(model, list(documents.values()), document_prefix(task, self.prefix_documents))
            positive_index = torch.tensor([keys.index(_key(row["positive"])) for row in rows])
            similarities = queries @ docs.T
            hits = similarities.argmax(dim=1) == positive_index
            if task == "text_pair":
                scores = np.array([row["score"] for row in rows])
                retrieval = torch.from_numpy(scores >= 0.5)
                metrics[f"{task}_r@1"] = float(hits[retrieval].float().mean()) if retrieval.any() else float("nan")
                pair_cos = similarities[torch.arange(len(rows)), positive_index].numpy()
                correlation = spearman(pair_cos, scores)
                # Logged as 0.0 rather than NaN when either side is constant (nothing to rank).
                metrics[f"{task}_spearman"] = 0.0 if np.isnan(correlation) else correlation
            else:
                metrics[f"{task}_r@1"] = float(hits.float().mean())
        recalls = [v for k, v in metrics.items() if k.endswith("_r@1") and not np.isnan(v)]
        metrics["mean_r@1"] = float(np.mean(recalls)) if recalls else float("nan")
        return metrics

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        metrics = self.compute_metrics(model)
        if output_path is not None:
            os.makedirs(output_path, exist_ok=True)
            with open(os.path.join(output_path, "vipyloqwen_eval.jsonl"), "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"epoch": epoch, "steps": steps, **metrics}) + "\n")
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


__all__ = ["ViPyloQwenEvaluator", "document_prefix", "spearman"]
