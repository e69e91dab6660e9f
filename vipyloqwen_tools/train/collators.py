"""A collator wrapper that carries one integer column of the rows past the tokenising collator, as a tensor.

Sentence-Transformers' collator turns every text/image column of a row into model inputs. Columns the loss or the
trace needs as plain numbers (row ids, identity keys) must not go through it: :class:`TensorColumnCollator` takes its
column out of the rows first and puts it back as one ``torch.long`` tensor (``[B]`` for a number per row, ``[B, K]``
for a list per row). A subclass names the column.

Example::

    class RowIdCollator(TensorColumnCollator):
        column = "_row"

    collator = RowIdCollator(trainer.data_collator)
    batch = collator([{"anchor": "a", "_row": 3}, {"anchor": "b", "_row": 7}])  # batch["_row"] == tensor([3, 7])
"""

from __future__ import annotations

from typing import Any

import torch


class TensorColumnCollator:
    """Wraps ``inner``; attributes not defined here are ``inner``'s (the trainer reads some of them). Rows without the
    column pass as they are; a batch where only some rows have it is an error naming the column."""

    column: str

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        if name == "inner":  # during unpickling
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        values = [feature.pop(self.column) for feature in features if self.column in feature]
        if values and len(values) != len(features):
            raise ValueError(f"column {self.column!r}: {len(values)} of {len(features)} rows have it")
        batch = self.inner(features)
        if values:
            batch[self.column] = torch.tensor(values, dtype=torch.long)
        return batch


__all__ = ["TensorColumnCollator"]
