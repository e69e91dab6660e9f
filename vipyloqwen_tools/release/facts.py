"""What a release states about a checkpoint, read from its files and its training record, never typed.

- the checkpoint folder: embedding size and Matryoshka widths (``config.json``), inference limits
  (``processor_config.json``, :mod:`vipyloqwen_tools.checkpoint.limits`), parameter count (the safetensors headers);
- the training record ``train_config.json`` (beside the checkpoint, or in the run folder above ``final/`` /
  ``checkpoint-<step>/``): the model trained from, rows per task, steps, the limits the run kept and trained at,
  the evaluation source;
- the base model's Hub id (the card's ``base_model``): given (``--base-model``), or the record's ``model`` when
  that is a Hub id or a Hub cache snapshot of one.

Example::

    >>> from vipyloqwen_tools.release.facts import checkpoint_facts
    >>> facts = checkpoint_facts("runs/mine/final", base_model="erax-ai/viPyloQwen")
    >>> facts.embed_dim, facts.limits.max_text_tokens, facts.rows_per_task()
    (32, 8192, {'ocr': 150, 'text_pair': 160})
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from vipyloqwen_tools.checkpoint.limits import InferenceLimits, folder_problems, reduced
from vipyloqwen_tools.checkpoint.user_errors import HUB_ID

TRAIN_CONFIG = "train_config.json"
# A Hub cache snapshot: .../models--<org>--<name>/snapshots/<commit>
HUB_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/[^/]+/?$")


class FactsError(ValueError):
    """A fact the release needs and cannot find; the message says which option gives it."""


@dataclasses.dataclass
class CheckpointFacts:
    """The facts of one checkpoint (see the module docstring); ``train_config`` is None without a record."""

    folder: Path
    embed_dim: int
    matryoshka_dims: list[int] | None
    limits: InferenceLimits
    parameters: int
    train_config: dict[str, Any] | None
    train_config_path: Path | None
    base_model: str | None

    def rows_per_task(self) -> dict[str, int]:
        """Rows trained per task (the record's datasets ``<task>`` and ``<task>+neg`` added), registry order."""
        from configuration_vipyloqwen import TASKS

        per_dataset = ((self.train_config or {}).get("rows") or {}).get("per_dataset") or {}
        rows: dict[str, int] = {}
        for name, count in per_dataset.items():
            task = name.split("+")[0]
            rows[task] = rows.get(task, 0) + int(count)
        return {task: rows[task] for task in TASKS if task in rows}

    def base_limits(self) -> InferenceLimits | None:
        """The base model's inference limits: as the training record kept them; for a record written before it kept
        them, read from the model the run started from when that folder is still there; else None."""
        record = self.train_config or {}
        recorded = (record.get("limits") or {}).get("inference")
        if recorded:
            return InferenceLimits(**recorded)
        model = record.get("model")
        start = Path(record.get("output_dir", ".")) / "init-tiny" if model == "tiny" else Path(model or "")
        if model and (start / "processor_config.json").is_file():
            return InferenceLimits.of_folder(start)
        return None


def find_train_config(checkpoint: str | Path) -> Path | None:
    """``train_config.json`` of a checkpoint: in the folder, or in the run folder when the checkpoint is a run's
    ``final/`` or ``checkpoint-<step>/``."""
    checkpoint = Path(checkpoint)
    if (checkpoint / TRAIN_CONFIG).is_file():
        return checkpoint / TRAIN_CONFIG
    if checkpoint.name == "final" or re.fullmatch(r"checkpoint-\d+", checkpoint.name):
        candidate = checkpoint.parent / TRAIN_CONFIG
        if candidate.is_file():
            return candidate
    return None


def hub_id_of(model: str | None) -> str | None:
    """The Hub id a training record's ``model`` names: an ``org/name`` id, or a Hub cache snapshot folder of one;
    None for ``tiny`` or a local folder (which could hold anything)."""
    if not model or model == "tiny":
        return None
    snapshot = HUB_SNAPSHOT.search(str(model))
    if snapshot:
        return f"{snapshot['org']}/{snapshot['name']}"
    looks_like_id = model.count("/") == 1 and HUB_ID.match(model) and not model.startswith((".", "/"))
    return model if looks_like_id and not Path(model).exists() else None


def parameter_count(folder: Path) -> int:
    """Parameters in the checkpoint's safetensors files (read from the headers: no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                count = 1
                for size in handle.get_slice(key).get_shape():
                    count *= size
                total += count
    return total


def checkpoint_facts(
    checkpoint: str | Path, train_config: str | Path | None = None, base_model: str | None = None
) -> CheckpointFacts:
    """Read the facts of ``checkpoint``; ``train_config`` overrides where the record is looked for
    (:func:`find_train_config`); ``base_model`` the Hub id of the model it was trained from."""
    folder = Path(checkpoint)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    record_path = Path(train_config) if train_config else find_train_config(folder)
    if record_path is not None and not record_path.is_file():
        raise FactsError(f"--train-config {record_path}: no such file")
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path else None
    return CheckpointFacts(
        folder=folder,
        embed_dim=int(config["embed_dim"]),
        matryoshka_dims=config.get("matryoshka_dimensions"),
        limits=InferenceLimits.of_folder(folder),
        parameters=parameter_count(folder),
        train_config=record,
        train_config_path=record_path,
        base_model=base_model or hub_id_of((record or {}).get("model")),
    )


def limit_problems(folder: str | Path, base: InferenceLimits | None, allow_reduced: bool = False) -> list[str]:
    """The release check of a folder's inference limits: its files agree with each other, and (unless
    ``allow_reduced``) no upper limit is below the base model's (a model trained at shorter limits and exported
    with them would truncate every user's input there)."""
    problems = folder_problems(folder)
    if problems or base is None or allow_reduced:
        return problems
    lower = reduced(InferenceLimits.of_folder(folder), base)
    if lower:
        return [
            f"inference limits below the base model's: {', '.join(lower)} (the training limits were exported?); "
            "re-export with the base's limits, or pass --allow-reduced-limits if this is intended"
        ]
    return []


__all__ = [
    "TRAIN_CONFIG",
    "CheckpointFacts",
    "FactsError",
    "checkpoint_facts",
    "find_train_config",
    "hub_id_of",
    "limit_problems",
    "parameter_count",
]
