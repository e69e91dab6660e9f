"""The training curves: per-task loss terms and held-out metrics over steps, as a PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from vipyloqwen_tools.train.losses import STAT_NAMES  # counts (masked candidates), not loss terms


def plot_history(log_history: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """PNG with per-task loss-term curves (left) and eval metrics (right) over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))

    term_keys = sorted(
        {
            k
            for entry in log_history
            for k in entry
            if "/" in k and not k.startswith("eval_") and k.rpartition("/")[2] not in STAT_NAMES
        }
    )
    for key in term_keys:
        points = [(e["step"], e[key]) for e in log_history if key in e]
        left.plot(*zip(*points, strict=False), label=key, linewidth=1.2)
    left.set(title="training loss terms per task", xlabel="step", ylabel="loss")
    if term_keys:  # none when the run ended before its first logging step
        left.legend(fontsize=7, ncol=2)
    metric_keys = sorted(
        {k for e in log_history for k in e if k.startswith("eval_") and ("r@1" in k or "spearman" in k)}
    )
    for key in metric_keys:
        points = [(e["step"], e[key]) for e in log_history if key in e and not math.isnan(e[key])]
        if points:
            right.plot(*zip(*points, strict=False), marker="o", label=key.removeprefix("eval_"), linewidth=1.2)
    right.set(title="held-out eval", xlabel="step", ylabel="R@1 / Spearman", ylim=(-0.05, 1.05))
    if metric_keys:
        right.legend(fontsize=7)
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


__all__ = ["plot_history"]
