"""False negatives: which in-batch candidates are correct answers, from the rows' identity keys.

Every in-batch term of the router loss (:mod:`.losses`) compares a row with the other rows of the gathered global
batch. A candidate that is the same document as a correct answer is not a negative, and training on it as one
teaches the model that correct answers are wrong. Short answers repeat in real VQA data ("Có", "2", a colour), so
this happens on most steps of a large batch. Identity comes from the data (:mod:`vipyloqwen_tools.data.identity`:
keys computed when the Arrow datasets are built, carried in the ``_keys`` column and gathered with the batch), never
from the embeddings.

For row ``i`` (query ``q_i``, positive ``p_i``) over the global batch (rows ``j``, positive pairs only: a text_pair
row under ``score_threshold`` says its document does *not* answer its query):

- the correct answers of ``i`` are ``p_i`` and the positive of every row whose query is the same as ``q_i``;
- query -> documents (InfoNCE, the triplet's hardest negative, explicit negatives): a document that is the same as
  a correct answer of ``i`` is masked (never the target itself);
- documents -> queries (InfoNCE): an anchor ``q_j`` is masked when it is the same query as ``q_i``, or when ``p_i``
  is a correct answer of ``q_j``;
- padded negative slots (:data:`~vipyloqwen_tools.data.identity.NO_DOCUMENT`) are masked and not counted.

Optionally (``margin``; Qwen3-Embedding's rule) a candidate that scores above the row's own positive pair by more
than ``margin`` is masked too: ``s_ij > s_ii + margin``, on detached similarities.

Example::

    >>> masks = identity_masks(keys, rows, gather=lambda t: t, offset=0)   # one process
    >>> masks.q2d.shape                                                    # (rows, documents)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from vipyloqwen_tools.data.arrow import KEYS_COLUMN
from vipyloqwen_tools.data.identity import NO_DOCUMENT
from vipyloqwen_tools.train.collators import TensorColumnCollator


@dataclasses.dataclass
class IdentityMasks:
    """Masks of one batch (this process's ``B`` rows against the ``N`` gathered rows).

    ``q2d``: ``[B, N * (1 + K)]`` over the InfoNCE documents (gathered positives, then each gathered negative
    column), True = not a negative (a correct answer, or a padded slot); the target is never masked.
    ``d2q``: ``[B, N]`` over the gathered anchors. ``padding``: ``[N * (1 + K)]`` padded document slots.
    ``explicit``: ``[B, K]`` this row's own explicit negatives that are not negatives (same as a correct answer, or
    padding); ``explicit_padding``: ``[B, K]`` its padded slots alone."""

    q2d: Tensor
    d2q: Tensor
    padding: Tensor
    explicit: Tensor
    explicit_padding: Tensor


def _any_through(left: Tensor, right: Tensor) -> Tensor:
    """``out[i, m] = any_j(left[i, j] & right[j, m])`` for bool matrices (a product of 0/1 counts: exact in fp32
    up to 2**24 rows)."""
    return (left.float() @ right.float()) > 0


def identity_masks(keys: Tensor, rows: Tensor, gather: Callable[[Tensor], Tensor], offset: int) -> IdentityMasks:
    """The identity masks of a batch; see the module docstring.

    Args:
        keys: ``[B, 2 + K]`` int64 keys of this process's rows (query, positive, negatives).
        rows: ``[B]`` bool, the rows that are positive pairs (all rows except text_pair under the threshold).
        gather: every process's rows in rank order (identity on one process); a collective.
        offset: where this process's rows start in the gathered rows.
    """
    keys = keys.to(torch.long)
    all_keys = gather(keys)
    all_rows = gather(rows.to(torch.long)).bool()
    batch, total = keys.size(0), all_keys.size(0)
    query, positive = keys[:, 0], keys[:, 1]
    all_query, all_positive = all_keys[:, 0], all_keys[:, 1]
    documents = all_keys[:, 1:].T.reshape(-1)  # positives, then negative column 1, 2, ... (the InfoNCE order)
    padding = documents == NO_DOCUMENT
    same_query = query[:, None] == all_query[None, :]  # [B, N]
    answers_of_same_query = same_query & all_rows[None, :]
    correct = _any_through(answers_of_same_query, all_positive[:, None] == documents[None, :])
    correct |= positive[:, None] == documents[None, :]
    own = torch.arange(batch, device=keys.device)
    q2d = correct | padding[None, :]
    q2d[own, own + offset] = False  # the target
    # documents -> queries: anchor j is masked when q_j == q_i, or p_i answers q_j (a positive pair (q_j, p_i))
    answered_by_own = (positive[:, None] == all_positive[None, :]) & all_rows[None, :]  # [B, N] rows l with p_l == p_i
    d2q = _any_through(answered_by_own, all_query[:, None] == all_query[None, :]) | same_query
    d2q[own, own + offset] = False
    # this row's own explicit negatives: column k of the documents holds them at total * (1 + k) + offset + row
    slots = total * torch.arange(1, keys.size(1) - 1, device=keys.device)[None, :] + (own + offset)[:, None]
    explicit = q2d.gather(1, slots)
    return IdentityMasks(q2d=q2d, d2q=d2q, padding=padding, explicit=explicit, explicit_padding=padding[slots])


def above_margin(similarities: Tensor, own: Tensor, margin: float | None) -> Tensor | None:
    """``similarities > own[:, None] + margin`` on detached values (Qwen3-Embedding's false-negative rule), or
    ``None`` without a margin. ``own``: each row's similarity to its positive pair."""
    if margin is None:
        return None
    return similarities.detach() > own.detach()[:, None] + margin


class KeysCollator(TensorColumnCollator):
    """Carries :data:`~vipyloqwen_tools.data.arrow.KEYS_COLUMN` past the tokenising collator as one ``[B, 2 + K]``
    long tensor (the trainer hands it to the loss)."""

    column = KEYS_COLUMN


__all__ = ["IdentityMasks", "KeysCollator", "above_margin", "identity_masks"]
