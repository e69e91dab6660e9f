"""Held-out retrieval evaluation per task: the one implementation behind training's evaluator and
``eval/evaluate_jsonl.py``, built on Sentence-Transformers' ``InformationRetrievalEvaluator`` and
``EmbeddingSimilarityEvaluator``.

For each task of the eval rows:

- **Retrieval.** Every query (the anchor, encoded with its task prefix) is ranked by cosine against the task's
  candidates: its distinct documents (every row's positive and explicit negatives, deduplicated by text + images),
  encoded without prefix, or with it for text_pair, whose sides are symmetric (and for every task with
  ``prefix_documents``). One relevant document per query, its own positive: R@1, R@5, R@10, MRR@10 and nDCG@10 are
  ST's accuracy@k, MRR@10 and NDCG@10. For text_pair only rows with ``score >= positive_threshold`` (0.5) are
  queries: a 0.1-scored pair is not a match.
- **Ties count against the query.** A candidate scoring exactly the positive's cosine ranks above it (the positive's
  score is lowered by one float step while it ties another candidate, before ST ranks), so R@1 does not depend on the
  order of the file, and a model that maps everything to one vector scores 0, not 1 / candidates.
- **text_pair correlation.** Pearson and Spearman (average ranks for ties) between cos(query, positive) and the gold
  score over all its rows (ST's ``EmbeddingSimilarityEvaluator``); NaN with fewer than 2 rows or a constant side.

Images are handed to ``encode`` as their paths: the processor opens them batch by batch, as ``encode`` does.

Training logs ``eval_<task>_r@1``, ``eval_text_pair_spearman`` (0.0 where it is NaN) and ``eval_mean_r@1`` (the mean
R@1 over tasks, the primary metric); ``eval/evaluate_jsonl.py`` reports every metric of :meth:`ViPyloQwenEvaluator.
reports`.

Example::

    >>> evaluator = ViPyloQwenEvaluator.from_file("data/sample/eval.jsonl", batch_size=16)
    >>> metrics = evaluator(model)   # {"eval_ocr_r@1": ..., "eval_text_pair_spearman": ..., "eval_mean_r@1": ...}
    >>> evaluator.reports(model)["ocr"].metrics["ndcg@10"]
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers.base.evaluation import BaseEvaluator
from sentence_transformers.sentence_transformer.evaluation import (
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
)
from sentence_transformers.util import cos_sim

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.data import load_eval_rows

KS = (1, 5, 10)
RETRIEVAL_METRICS = ("r@1", "r@5", "r@10", "mrr@10", "ndcg@10")


def document_prefix(task: str, prefix_documents: bool) -> str | None:
    """The prompt of the document side: text_pair sides are symmetric (both prefixed); others only if asked."""
    return TASKS[task].prefix if task == "text_pair" or prefix_documents else None


def st_input(side: dict[str, Any]) -> str | dict[str, Any]:
    """One eval side (``{"text", "images"}``) as a Sentence-Transformers input: its text, or ``{"text", "image":
    [paths]}`` (the processor opens the images when their batch is built)."""
    if not side.get("images"):
        return side.get("text") or ""
    item: dict[str, Any] = {}
    if side.get("text"):
        item["text"] = side["text"]
    item["image"] = list(side["images"])
    return item


def _key(side: dict[str, Any]) -> str:
    """A candidate's identity: same text and images = same candidate."""
    return json.dumps([side.get("text"), list(side.get("images") or [])], ensure_ascii=False)


@dataclass
class TaskReport:
    """Metrics of one task: rows, retrieval queries and candidates counted, and the metric values."""

    task: str
    rows: int
    queries: int
    candidates: int
    metrics: dict[str, float] = field(default_factory=dict)


class HeldOutRetrieval(InformationRetrievalEvaluator):
    """ST's ``InformationRetrievalEvaluator`` on one task: each query has one relevant candidate (``positives[i]``,
    an index into ``candidates``), cosine scores, ties counted against the query (:meth:`score`).

    Example::

        >>> retrieval = HeldOutRetrieval(["con mèo"], ["the cat", "a dog"], [0], query_prompt="<text_pair>")
        >>> retrieval.metrics(model)["r@1"]
    """

    def __init__(
        self,
        queries: list[Any],
        candidates: list[Any],
        positives: list[int],
        query_prompt: str | None = None,
        corpus_prompt: str | None = None,
        batch_size: int = 16,
        show_progress_bar: bool = False,
    ) -> None:
        self.positives = torch.tensor(positives, dtype=torch.long)
        super().__init__(
            queries={str(i): query for i, query in enumerate(queries)},
            corpus={str(j): candidate for j, candidate in enumerate(candidates)},
            relevant_docs={str(i): {str(p)} for i, p in enumerate(positives)},
            # One chunk: the score function sees every candidate of a query, so a tie is never split across chunks.
            corpus_chunk_size=max(1, len(candidates)),
            accuracy_at_k=list(KS),
            precision_recall_at_k=[1],
            mrr_at_k=[10],
            ndcg_at_k=[10],
            map_at_k=[10],
            show_progress_bar=show_progress_bar,
            batch_size=batch_size,
            write_csv=False,
            score_functions={"cosine": self.score},
            main_score_function="cosine",
            query_prompt=query_prompt,
            corpus_prompt=corpus_prompt,
        )

    def score(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Cosine scores [queries, candidates]; each query's positive is lowered by one float step while another
        candidate scores exactly the same, so ST's ranking puts the tied candidates above it."""
        scores = cos_sim(queries, candidates)
        rows = torch.arange(len(scores), device=scores.device)
        positives = self.positives.to(scores.device)
        down = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
        while True:  # a lowered score can meet another candidate's exactly: lower it again
            positive = scores[rows, positives]
            others = scores.clone()
            others[rows, positives] = float("-inf")
            tied = (others == positive[:, None]).any(dim=1)
            if not tied.any():
                return scores
            scores[rows[tied], positives[tied]] = torch.nextafter(positive[tied], down)

    def metrics(self, model: Any) -> dict[str, float]:
        """``{"r@1", "r@5", "r@10", "mrr@10", "ndcg@10"}`` of ``model`` (no CSV, no model-card entry)."""
        scores = self.compute_all_metrics(model)["cosine"]
        out = {f"r@{k}": float(scores["accuracy@k"][k]) for k in KS}
        out["mrr@10"] = float(scores["mrr@k"][10])
        out["ndcg@10"] = float(scores["ndcg@k"][10])
        return out


class PairCorrelation(EmbeddingSimilarityEvaluator):
    """ST's ``EmbeddingSimilarityEvaluator`` (Pearson / Spearman of cosine vs gold score) with a prompt on both
    sides (text_pair's prefix), returning ``{"pearson", "spearman"}`` without writing a CSV or a model-card entry.

    Example::

        >>> PairCorrelation(["con mèo"] * 2, ["the cat", "a dog"], [0.9, 0.1], prompt="<text_pair>").metrics(model)
    """

    def __init__(self, sentences1: list[Any], sentences2: list[Any], scores: list[float], prompt: str | None = None,
                 batch_size: int = 16, show_progress_bar: bool = False) -> None:  # fmt: skip
        super().__init__(
            sentences1,
            sentences2,
            scores,
            batch_size=batch_size,
            similarity_fn_names=["cosine"],
            show_progress_bar=show_progress_bar,
            write_csv=False,
        )
        self.prompt = prompt

    def embed_inputs(self, model: Any, sentences: Any, **kwargs: Any) -> Any:
        return super().embed_inputs(model, sentences, prompt=self.prompt, **kwargs)

    def store_metrics_in_model_card_data(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: :class:`ViPyloQwenEvaluator` records the task's metrics itself."""

    def metrics(self, model: Any) -> dict[str, float]:
        """``{"pearson", "spearman"}``; NaN for fewer than 2 pairs or a constant side (nothing to correlate)."""
        if len(self.scores) < 2:
            return {"pearson": float("nan"), "spearman": float("nan")}
        with warnings.catch_warnings():  # scipy warns on a constant side, then returns NaN
            warnings.simplefilter("ignore")
            values = self(model)
        return {"pearson": float(values["pearson_cosine"]), "spearman": float(values["spearman_cosine"])}


class ViPyloQwenEvaluator(BaseEvaluator):
    """Per-task retrieval (+ text_pair correlation) on eval rows; ``primary_metric`` is the mean R@1 over tasks.

    Args:
        rows: ``{task: [normalised row, ...]}`` as :func:`vipyloqwen_tools.data.load_eval_rows` returns.
        name: metric name prefix.
        batch_size: encode batch size.
        prefix_documents: encode documents with the task prefix too (default: only text_pair's).
        positive_threshold: text_pair rows scored at least this are retrieval queries.
        show_progress_bar: show ``encode``'s progress bars.

    Example::

        >>> evaluator = ViPyloQwenEvaluator.from_file("data/sample/eval.jsonl", batch_size=16)
        >>> evaluator.compute_metrics(model)   # {"ocr_r@1": ..., "text_pair_spearman": ..., "mean_r@1": ...}
    """

    def __init__(
        self,
        rows: dict[str, list[dict]],
        name: str = "",
        batch_size: int = 16,
        prefix_documents: bool = False,
        positive_threshold: float = 0.5,
        show_progress_bar: bool = False,
    ):
        super().__init__()
        unknown = set(rows) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown eval tasks {sorted(unknown)}; valid: {', '.join(TASKS)}")
        self.rows = rows
        self.name = name
        self.batch_size = batch_size
        self.prefix_documents = prefix_documents
        self.positive_threshold = positive_threshold
        self.show_progress_bar = show_progress_bar
        self.primary_metric = "mean_r@1"

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> ViPyloQwenEvaluator:
        """The evaluator of an eval JSONL file in the training schema (raises DataError listing bad lines)."""
        return cls(load_eval_rows(path), **kwargs)

    def task_report(self, model: Any, task: str) -> TaskReport:
        """Retrieval metrics (and correlations for text_pair) of one task's rows."""
        rows = self.rows[task]
        candidates: dict[str, dict] = {}
        for row in rows:
            for side in (row["positive"], *row["negatives"]):
                candidates.setdefault(_key(side), side)
        index = {key: j for j, key in enumerate(candidates)}
        threshold = self.positive_threshold
        queries = [
            row for row in rows if task != "text_pair" or (row["score"] is not None and row["score"] >= threshold)
        ]
        report = TaskReport(task, rows=len(rows), queries=len(queries), candidates=len(candidates))
        prefix = TASKS[task].prefix
        if queries:
            retrieval = HeldOutRetrieval(
                [st_input(row["query"]) for row in queries],
                [st_input(side) for side in candidates.values()],
                [index[_key(row["positive"])] for row in queries],
                query_prompt=prefix,
                corpus_prompt=document_prefix(task, self.prefix_documents),
                batch_size=self.batch_size,
                show_progress_bar=self.show_progress_bar,
            )
            report.metrics.update(retrieval.metrics(model))
        if task == "text_pair":
            correlation = PairCorrelation(
                [st_input(row["query"]) for row in rows],
                [st_input(row["positive"]) for row in rows],
                [float(row["score"]) for row in rows],
                prompt=prefix,
                batch_size=self.batch_size,
                show_progress_bar=self.show_progress_bar,
            )
            report.metrics.update(correlation.metrics(model))
        return report

    def reports(self, model: Any) -> dict[str, TaskReport]:
        """:meth:`task_report` of every task present, in registry order."""
        return {task: self.task_report(model, task) for task in TASKS if task in self.rows}

    def compute_metrics(self, model: Any) -> dict[str, float]:
        """Un-prefixed training metrics: ``{"<task>_r@1", "text_pair_spearman", "mean_r@1"}`` (a task without
        retrieval queries has R@1 NaN, left out of the mean; a NaN Spearman is logged as 0.0)."""
        metrics: dict[str, float] = {}
        for task, report in self.reports(model).items():
            metrics[f"{task}_r@1"] = report.metrics.get("r@1", float("nan"))
            if task == "text_pair":
                spearman = report.metrics["spearman"]
                metrics[f"{task}_spearman"] = 0.0 if math.isnan(spearman) else spearman
        recalls = [v for k, v in metrics.items() if k.endswith("_r@1") and not math.isnan(v)]
        metrics["mean_r@1"] = sum(recalls) / len(recalls) if recalls else float("nan")
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


__all__ = [
    "KS",
    "RETRIEVAL_METRICS",
    "HeldOutRetrieval",
    "PairCorrelation",
    "TaskReport",
    "ViPyloQwenEvaluator",
    "document_prefix",
    "st_input",
]
