"""All-gather of per-rank rows when the ranks hold different numbers of them.

The InfoNCE candidates are gathered from every process (Sentence-Transformers' ``all_gather_with_grad``), which needs
equal batch sizes on every rank. A row dropped from one rank's batch at batch time (an unreadable image with
``--skip-bad-rows``, :mod:`~vipyloqwen_tools.train.bad_rows`) breaks that: :func:`gather_rows` gathers the row
counts first, pads each rank's rows to the largest count, gathers (with gradients), and cuts the padding off again;
:func:`rows_before` is where this rank's rows start in the gathered tensor. With equal counts (the normal case) it is
``all_gather_with_grad`` plus one gather of one integer.

Example::

    >>> everyone = gather_rows(anchors)            # (sum of the ranks' rows, dim)
    >>> targets = torch.arange(rows_before(len(anchors)), ...)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sentence_transformers.util import all_gather
from torch import Tensor


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def row_counts(rows: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's row count (a collective: call it on every rank)."""
    if not _distributed():
        return [rows]
    count = torch.tensor([rows], device=device)
    counts = [torch.zeros_like(count) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(counts, count)
    return [int(c) for c in counts]


def rows_before(rows: int, device: torch.device | str = "cpu") -> int:
    """Where this rank's ``rows`` start among every rank's rows, in rank order (a collective)."""
    if not _distributed():
        return 0
    return sum(row_counts(rows, device)[: torch.distributed.get_rank()])


def gather_rows(tensor: Tensor, with_grad: bool = True) -> Tensor:
    """Every rank's rows (dimension 0) concatenated in rank order; this rank's part keeps its gradient (and the
    others' too with ``with_grad``). The ranks may hold different numbers of rows (a collective)."""
    if not _distributed():
        return tensor
    counts = row_counts(tensor.size(0), tensor.device)
    most = max(counts)
    if min(counts) == most:
        return all_gather(tensor, with_grad=with_grad)
    padded = F.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, most - tensor.size(0)))
    parts = all_gather(padded, with_grad=with_grad).split(most)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


__all__ = ["gather_rows", "row_counts", "rows_before"]
