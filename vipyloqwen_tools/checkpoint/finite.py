"""Refuse to write non-finite weights: the export and every training checkpoint check them first.

A diverged run can hold NaN / inf weights while every file write succeeds; a checkpoint or export of them is a
broken model that looks like a success. :func:`check_finite` raises :class:`NonFiniteWeightsError` naming the bad
tensors instead.

Example::

    >>> check_finite(model.state_dict().items(), "final/")   # raises if any tensor holds a NaN or an inf
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class NonFiniteWeightsError(ValueError):
    """Weights with NaN / inf values were about to be saved."""


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[list[str], int]:
    """``(names of the floating-point tensors holding a NaN or an inf, number of floating-point tensors checked)``.

    One flag per tensor, read back with a single device sync.
    """
    names, flags = [], []
    for name, tensor in named:
        if tensor is None or not torch.is_floating_point(tensor):
            continue
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor shard (FSDP2)
        names.append(name)
        flags.append(torch.isfinite(local.detach()).all())
    if not flags:
        return [], 0
    bad = (~torch.stack([f.cpu() for f in flags])).tolist()
    return [name for name, is_bad in zip(names, bad, strict=True) if is_bad], len(names)


def describe(bad: list[str], checked: int, limit: int = 5) -> str:
    shown = ", ".join(bad[:limit]) + (f", ... ({len(bad) - limit} more)" if len(bad) > limit else "")
    return f"{len(bad)} of {checked} weight tensors hold NaN/inf values ({shown})"


def check_finite(named: Iterable[tuple[str, torch.Tensor]], target: str) -> None:
    """Raise :class:`NonFiniteWeightsError` if any tensor of ``named`` is not finite; ``target`` names what was
    about to be written (a folder)."""
    bad, checked = nonfinite_tensors(named)
    if bad:
        raise NonFiniteWeightsError(
            f"refusing to save {target}: {describe(bad, checked)}; a diverged model is not saved"
        )


__all__ = ["NonFiniteWeightsError", "check_finite", "describe", "nonfinite_tensors"]
