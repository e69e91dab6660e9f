"""What a run evaluates on: an eval file, a share of the train file held out (``--eval-split``), or nothing.

The bundled ``data/sample/eval.jsonl`` is never paired with your own train file (see
:class:`~vipyloqwen_tools.train.config.TrainConfig`); the log says which source was chosen and why.

A held-out split takes ``round(share x rows)`` rows (at least one) of every training dataset, chosen at random with
the run's seed (the same rows on every process and on a resume), out of the training data: they are never trained.

Example::

    >>> from vipyloqwen_tools.train.eval_data import hold_out
    >>> datasets, rows, counts = hold_out(datasets, 0.1, seed=42)  # per-task datasets with row ids
    >>> counts
    {'ocr': 15, 'text_pair': 16}
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vipyloqwen_tools.data import DataError, load_eval_rows
from vipyloqwen_tools.data.arrow import task_of

logger = logging.getLogger("vipyloqwen.train")


@dataclasses.dataclass
class EvalData:
    """``rows``: ``{task: [row, ...]}`` for the evaluator (None: no evaluation); ``source``: what it is, for the log;
    ``kind``: ``eval_split``, ``eval_file`` or ``none``; ``held_out``: rows held out per training dataset
    (``--eval-split``)."""

    rows: dict[str, list[dict[str, Any]]] | None
    source: str
    held_out: dict[str, int] = dataclasses.field(default_factory=dict)
    kind: str = "none"

    def record(self, config) -> dict[str, Any]:
        """``train_config.json``'s ``evaluation``: the kind, the file's name (not its path: a card quotes it), the
        share held out and the rows evaluated per task."""
        return {
            "kind": self.kind,
            "file": Path(config.eval_file).name if self.kind == "eval_file" else None,
            "eval_split": config.eval_split if self.kind == "eval_split" else None,
            "rows": {task: len(rows) for task, rows in (self.rows or {}).items()},
            "held_out": self.held_out,
        }


def eval_row(task: str, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored training row (``anchor, positive[, negatives][, score]``) as an eval row (the schema's names)."""
    return {
        "task": task,
        "query": stored["anchor"],
        "positive": stored["positive"],
        "negatives": list(stored.get("negatives") or []),
        "score": stored.get("score"),
        "id": None,
    }


def hold_out(datasets, share: float, seed: int) -> tuple[Any, dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Split ``share`` of every dataset's rows off for evaluation; returns ``(training datasets, eval rows per task,
    rows held out per dataset)``. Refuses (:class:`~vipyloqwen_tools.data.DataError`) a dataset that would keep no
    row to train."""
    rows: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    for name in list(datasets):
        dataset = datasets[name]
        total = len(dataset)
        take = max(1, round(total * share))
        if take >= total:
            raise DataError(
                f"--eval-split {share}: dataset {name!r} has {total} row(s); holding out {take} would leave none to "
                "train: use a smaller share, or an --eval-file"
            )
        # One generator per dataset, seeded by the run's seed and the dataset's name: the same rows every time.
        generator = np.random.default_rng([seed, zlib.crc32(name.encode())])
        picked = np.sort(generator.choice(total, size=take, replace=False))
        kept = np.setdiff1d(np.arange(total), picked)
        stored = dataset.with_format(None).select(picked.tolist())
        rows.setdefault(task_of(name), []).extend(eval_row(task_of(name), row) for row in stored)
        datasets[name] = dataset.select(kept.tolist())
        counts[name] = take
    return datasets, rows, counts


def choose_eval_data(config, datasets) -> tuple[Any, EvalData]:
    """The run's evaluation data and the training datasets left after it (``--eval-split`` takes rows out)."""
    if config.eval_split:
        datasets, rows, counts = hold_out(datasets, config.eval_split, config.seed)
        source = f"{sum(counts.values())} rows held out of {config.train_file} (--eval-split {config.eval_split})"
        data = EvalData(rows, source, counts, "eval_split")
    elif config.eval_file:
        rows = load_eval_rows(config.eval_file, image_root=config.image_root)
        data = EvalData(rows, str(config.eval_file), kind="eval_file")
    else:
        data = EvalData(None, "none")
    if data.rows is None:
        logger.info(
            "evaluation: none (no --eval-file given for %s; --eval-split 0.01 holds out 1%% of its rows per task)",
            config.train_file,
        )
    else:
        sizes = ", ".join(f"{task} {len(task_rows)}" for task, task_rows in data.rows.items())
        logger.info("evaluation: %s (%s)", data.source, sizes)
    return datasets, data


__all__ = ["EvalData", "choose_eval_data", "eval_row", "hold_out"]
