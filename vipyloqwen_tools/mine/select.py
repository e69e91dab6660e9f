"""Which candidates become a row's negatives: Sentence-Transformers' ``mine_hard_negatives`` rules, on candidates that
exclude every correct answer by identity.

For one row, the candidates come ranked by score (``cos(query, document)`` as training computes it), hardest first:

1. every document that is the same as a correct answer (the row's positive, the positive of any row with the same
   query) or as the row's own single ``negative`` is excluded;
2. ``range_max``: only the ``range_max`` best remaining candidates are considered (ST: "maximum rank of the closest
   matches to consider as negatives"; its default with a filter, ``range_min + 10 x num_negatives``, is the ANN's
   retrieval depth here; exact search considers every candidate when it is not set);
3. filters: ``relative_margin m`` drops a candidate scoring at or above ``s_p - |s_p| x m`` (0.05: NV-Retriever's
   TopK-PercPos 95%), ``absolute_margin a`` one at or above ``s_p - a``, ``max_score`` / ``min_score`` one above /
   below the bound; ``s_p`` is the positive's score, the lowest over the rows with the same query (ST's choice: the
   hardest positive sets the line). ST drops only candidates strictly above the line; here the line itself is
   dropped too;
4. ``range_min``: the first ``range_min`` survivors are skipped;
5. ``sampling_strategy``: ``top`` returns the ``num_negatives`` best survivors, hardest first; ``random`` a seeded
   random choice of them (seed and the row's line number), then sorted hardest first.

A row with fewer survivors gets fewer negatives. Everything is batched: ``[rows, candidates]`` score matrices
(a row's missing candidates are ``-inf``).

Example::

    >>> options = MineOptions(num_negatives=4, relative_margin=0.05)
    >>> chosen = choose(scores, candidate_ids, excluded, positive_scores, lines, options)
    >>> chosen.ids[0], chosen.scores[0]       # pool indices (-1: none) and their scores
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

SAMPLING_STRATEGIES = ("top", "random")


@dataclasses.dataclass(frozen=True)
class MineOptions:
    """The selection rules (Sentence-Transformers' ``mine_hard_negatives`` names; see the module docstring)."""

    num_negatives: int = 3
    range_min: int = 0
    range_max: int | None = None
    relative_margin: float | None = None
    absolute_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling_strategy: str = "top"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {self.num_negatives}")
        if self.range_min < 0:
            raise ValueError(f"range_min must be non-negative, got {self.range_min}")
        if self.range_max is not None and self.range_max - self.range_min < self.num_negatives:
            raise ValueError(
                f"cannot mine {self.num_negatives} negatives per row: only {self.range_max - self.range_min} "
                f"candidates remain after skipping range_min={self.range_min} of range_max={self.range_max}"
            )
        for name in ("relative_margin", "absolute_margin", "max_score", "min_score"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.sampling_strategy not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"sampling_strategy must be one of {', '.join(SAMPLING_STRATEGIES)}, got {self.sampling_strategy!r}"
            )

    @property
    def filtered(self) -> bool:
        return any(v is not None for v in (self.relative_margin, self.absolute_margin, self.max_score, self.min_score))

    def retrieval_depth(self) -> int:
        """Candidates an approximate search must return per row (before the excluded ones): ``range_max``, else ST's
        default (``range_min + 10 x num_negatives`` with a filter, ``range_min + num_negatives`` without)."""
        if self.range_max is not None:
            return self.range_max
        return self.range_min + self.num_negatives * (10 if self.filtered else 1)


@dataclasses.dataclass
class Chosen:
    """``ids``: ``[rows, num_negatives]`` candidate ids, hardest first, ``-1`` where a row has fewer; ``scores``
    their scores; ``dropped``: candidates removed per rule (``relative_margin``, ...), ``[rows]`` counts."""

    ids: Tensor
    scores: Tensor
    dropped: dict[str, Tensor]


def choose(
    scores: Tensor,
    ids: Tensor,
    excluded: Tensor,
    positive: Tensor,
    lines: list[int],
    options: MineOptions,
) -> Chosen:
    """The negatives of a batch of rows.

    Args:
        scores: ``[rows, m]`` candidate scores (any order; ``-inf``: no candidate).
        ids: ``[rows, m]`` their ids (pool indices).
        excluded: ``[rows, m]`` True for a candidate that is the same as a correct answer of the row.
        positive: ``[rows]`` ``s_p`` per row (the margin's reference).
        lines: the rows' line numbers (the random strategy's seed per row).
        options: the rules.
    """
    scores = scores.masked_fill(excluded, float("-inf"))
    dropped: dict[str, Tensor] = {}
    if options.range_max is not None and scores.size(1) > options.range_max:
        window = torch.topk(scores, options.range_max, dim=1)
        scores = torch.full_like(scores, float("-inf")).scatter(1, window.indices, window.values)
    rules = []
    if options.relative_margin is not None:
        rules.append(("relative_margin", scores >= (positive - positive.abs() * options.relative_margin)[:, None]))
    if options.absolute_margin is not None:
        rules.append(("absolute_margin", scores >= (positive - options.absolute_margin)[:, None]))
    if options.max_score is not None:
        rules.append(("max_score", scores > options.max_score))
    if options.min_score is not None:
        rules.append(("min_score", scores < options.min_score))
    for name, drop in rules:
        drop &= torch.isfinite(scores)
        dropped[name] = drop.sum(dim=1)
        scores = scores.masked_fill(drop, float("-inf"))
    width = options.num_negatives
    if options.sampling_strategy == "top":
        depth = min(scores.size(1), options.range_min + width)
        best = torch.topk(scores, depth, dim=1)
        values, positions = best.values[:, options.range_min :], best.indices[:, options.range_min :]
    else:
        ordered = torch.sort(scores, dim=1, descending=True)
        values, positions = ordered.values[:, options.range_min :], ordered.indices[:, options.range_min :]
        picked_values, picked_positions = [], []
        for row, line in enumerate(lines):
            alive = int(torch.isfinite(values[row]).sum())
            generator = torch.Generator().manual_seed(options.seed * 1_000_003 + int(line))
            take = (
                torch.randperm(alive, generator=generator)[:width].sort().values
                if alive
                else torch.zeros(0, dtype=torch.long)
            )
            picked_values.append(values[row, take])
            picked_positions.append(positions[row, take])
        values = torch.full((len(lines), width), float("-inf"), dtype=scores.dtype)
        positions = torch.zeros((len(lines), width), dtype=torch.long)
        for row, (v, p) in enumerate(zip(picked_values, picked_positions, strict=True)):
            values[row, : len(v)], positions[row, : len(p)] = v, p
    if values.size(1) < width:  # fewer candidates than asked in the whole pool
        pad = width - values.size(1)
        values = torch.cat([values, values.new_full((values.size(0), pad), float("-inf"))], dim=1)
        positions = torch.cat([positions, positions.new_zeros((positions.size(0), pad))], dim=1)
    chosen = ids.gather(1, positions)
    found = torch.isfinite(values)
    return Chosen(ids=torch.where(found, chosen, torch.full_like(chosen, -1)), scores=values, dropped=dropped)


__all__ = ["SAMPLING_STRATEGIES", "Chosen", "MineOptions", "choose"]
