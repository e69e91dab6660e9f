"""Correlation of two score lists: Pearson, and Spearman as the Pearson of average ranks (ties share a rank).

Used by the training evaluator and eval/evaluate_jsonl.py, so both report the same numbers.

Example::

    >>> round(spearman([1, 2, 3, 4], [1, 3, 2, 4]), 3)
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, tied values sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[order[j + 1]] == values[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(average_ranks(x), average_ranks(y))
