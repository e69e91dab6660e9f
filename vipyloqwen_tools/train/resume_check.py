"""Resume checks: a checkpoint records the settings that define its run; ``--resume`` refuses changed ones.

Every checkpoint holds ``run_settings.json``: the run-defining settings (:data:`RUN_DEFINING`: the model, the train
file with its content fingerprint, the task mix (rows per dataset), the held-out share (``eval_split``) and the
image folder (``image_root``), world size and batch sizes, the learning-rate schedule, the loss settings, the input
limits, precision and seed), the other settings for the record, and the history of earlier resumes. ``--resume``
compares them with the current run and refuses any change with a message naming each setting (old -> new) and the
flag that accepts it: ``--accept-changes name[,name...]``. The other settings (logging, save / eval steps, max
steps, epochs, eval file, workers, paths of caches and traces) may change freely.

An accepted change is used from the resumed step on: the optimizer and scheduler states loaded from the checkpoint
carry the old learning rate and weight decay, so :class:`ApplyResumeChanges` sets the new ones after they are
loaded (and recomputes the current learning rate when the schedule changed); ``train_config.json`` records the
values used and the resume history (old -> new, at which step).

Example::

    $ python train_st.py --config configs/tiny-cpu.yaml --resume --learning-rate 1e-2
    error: --resume from runs/tiny-cpu/checkpoint-100: ... learning_rate: 0.001 -> 0.01 ...
    add --accept-changes learning_rate ...
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("vipyloqwen.train")

# name -> what it sets (a TrainConfig field, except world_size and the content of train_file)
RUN_DEFINING: dict[str, str] = {
    "model": "the model the run started from",
    "train_file": "the training data (path, size, content fingerprint)",
    "task_mix": "rows per training dataset (task)",
    "eval_split": "share of the train file held out for evaluation (the rows trained)",
    "image_root": "folder the train file's relative image paths are read from",
    "world_size": "number of processes",
    "per_device_train_batch_size": "batch size per process",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "learning_rate": "peak learning rate",
    "lr_scheduler_type": "learning-rate schedule",
    "warmup_ratio": "warm-up share of the schedule",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping",
    "seed": "data order and initialisation seed",
    "temperature": "InfoNCE temperature",
    "margin": "triplet margin",
    "vqa_multi_margin": "vqa_multi triplet margin",
    "score_threshold": "text_pair positive threshold",
    "loss_weights": "loss term weights",
    "matryoshka_dims": "Matryoshka dimensions",
    "matryoshka_weights": "Matryoshka weights",
    "gather_across_devices": "InfoNCE candidates from every process",
    "mask_false_negatives": "correct answers masked out of the in-batch negatives",
    "false_negative_margin": "in-batch candidates masked above the positive's score by this margin",
    "prefix_documents": "task prefix on documents",
    "max_length": "token limit per input",
    "max_image_tokens": "image token limit",
    "precision": "training precision (as used)",
}
CONFIG_SETTINGS = [
    name for name in RUN_DEFINING if name not in ("train_file", "task_mix", "world_size", "model", "precision")
]
SCHEDULE = ("learning_rate", "lr_scheduler_type", "warmup_ratio")


class ResumeMismatchError(ValueError):
    """``--resume`` with run-defining settings other than the checkpoint's, not accepted."""


@dataclasses.dataclass
class Change:
    name: str
    old: Any
    new: Any

    def line(self) -> str:
        return f"{self.name}: {show(self.name, self.old)} -> {show(self.name, self.new)}"


def show(name: str, value: Any) -> str:
    if name == "train_file" and isinstance(value, dict):
        content = ", ".join(f"{k} {v}" for k, v in sorted(value.get("content", {}).items()))
        return f"{value.get('path')} ({content})"
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def parse_accept(value: str | None) -> set[str]:
    """The names of ``--accept-changes`` (comma-separated); unknown names are an error listing the valid ones."""
    names = {name.strip() for name in (value or "").split(",") if name.strip()}
    unknown = names - set(RUN_DEFINING)
    if unknown:
        raise ValueError(f"accept_changes: unknown setting(s) {sorted(unknown)}; valid: {', '.join(RUN_DEFINING)}")
    return names


def data_identity(train_file: str, datasets) -> dict[str, Any]:
    """``{"path", "content"}`` of the train file: the content part of the fingerprint its validate-once cache entry
    was built for (no second read of the file), or of a fresh fingerprint if the datasets are not from the cache."""
    fingerprint = None
    for dataset in datasets.values():
        for cache_file in getattr(dataset, "cache_files", None) or []:
            for parent in Path(cache_file["filename"]).parents:
                if (parent / "meta.json").is_file():
                    fingerprint = json.loads((parent / "meta.json").read_text(encoding="utf-8"))["fingerprint"]
                    break
            if fingerprint:
                break
        if fingerprint:
            break
    if fingerprint is None:
        from vipyloqwen_tools.data.cache import fingerprint as file_fingerprint

        fingerprint = file_fingerprint(train_file)
    # mtime is not content: a touched file with the same bytes is the same data
    content = {k: v for k, v in fingerprint.items() if k not in ("path", "mtime_ns")}
    return {"path": str(Path(train_file).resolve()), "content": content}


def run_settings(config, datasets, world_size: int, precision: str) -> dict[str, Any]:
    """The settings a checkpoint of this run records (``run_settings.json`` without the history)."""
    settings: dict[str, Any] = {name: getattr(config, name) for name in CONFIG_SETTINGS}
    model = config.model
    settings.update(
        model=model if model == "tiny" else str(Path(model).resolve()),
        train_file=data_identity(config.train_file, datasets),
        task_mix={name: len(dataset) for name, dataset in sorted(datasets.items())},
        world_size=int(world_size),
        precision=precision,
    )
    others = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in settings}
    return {"settings": settings, "other_settings": others, "history": []}


def compare(recorded: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """The run-defining settings that differ (the train file by content; a moved file with the same content is
    the same data)."""
    changes = []
    for name in RUN_DEFINING:
        old, new = recorded.get(name), current.get(name)
        if name == "train_file" and isinstance(old, dict) and isinstance(new, dict):
            if old.get("content") == new.get("content"):
                if old.get("path") != new.get("path"):
                    logger.info("train_file moved: %s -> %s (same content): allowed", old.get("path"), new.get("path"))
                continue
        if old != new:
            changes.append(Change(name, old, new))
    return changes


def effective_batch(settings: dict[str, Any]) -> int | None:
    try:
        return (
            int(settings["per_device_train_batch_size"])
            * int(settings["gradient_accumulation_steps"])
            * int(settings["world_size"])
        )
    except (KeyError, TypeError, ValueError):
        return None


def check_resume(checkpoint: Path, current: dict[str, Any], accept: set[str]) -> list[Change]:
    """Refuse (:class:`ResumeMismatchError`) a resume whose run-defining settings differ from ``checkpoint``'s,
    except the ``accept``-ed ones; return the accepted changes (logged). Also logs the allowed changes."""
    from vipyloqwen_tools.train.checkpoints import RUN_SETTINGS

    recorded = json.loads((Path(checkpoint) / RUN_SETTINGS).read_text(encoding="utf-8"))
    changes = compare(recorded["settings"], current["settings"])
    refused = [c for c in changes if c.name not in accept]
    old_batch, new_batch = effective_batch(recorded["settings"]), effective_batch(current["settings"])
    batch_note = f"  (effective batch size {old_batch} -> {new_batch})\n" if old_batch != new_batch else ""
    if refused:
        names = ",".join(c.name for c in refused)
        raise ResumeMismatchError(
            f"--resume from {checkpoint}: this run's settings differ from the ones the checkpoint was trained with "
            "(continuing would silently mix two runs):\n"
            + "".join(f"  {c.line()}\n" for c in refused)
            + batch_note
            + f"To resume with {'this change' if len(refused) == 1 else 'these changes'} knowingly, add "
            f"--accept-changes {names} (YAML: accept_changes: {names}); or train into a new --output-dir. "
            "Settings that may change on resume: logging, save and eval steps, max_steps, num_train_epochs, the "
            "eval file, workers and cache / trace folders."
        )
    for change in changes:
        logger.warning("--resume: accepted change %s", change.line())
    safe_old, safe_new = recorded.get("other_settings", {}), current.get("other_settings", {})
    for name in sorted(set(safe_old) & set(safe_new)):
        if safe_old[name] != safe_new[name] and name not in ("resume", "resume_from", "accept_changes"):
            logger.info("--resume: %s %r -> %r (allowed)", name, safe_old[name], safe_new[name])
    current["history"] = [
        *recorded.get("history", []),
        {
            "resumed_at_step": int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]),
            "from": str(checkpoint),
            "accepted": {c.name: {"old": c.old, "new": c.new} for c in changes},
        },
    ]
    return changes


def prepare_resume(trainer, config, settings: dict[str, Any]) -> str:
    """``--resume``: the newest complete checkpoint of ``config.output_dir`` (logging what it skipped and why), checked
    against this run's ``settings`` (refused unless accepted); the trainer gets :class:`ApplyResumeChanges`. Returns
    the checkpoint folder for ``trainer.train(resume_from_checkpoint=...)``."""
    from vipyloqwen_tools.train.checkpoints import (
        RUN_SETTINGS,
        NoCompleteCheckpointError,
        ResumePick,
        checkpoint_problem,
        complete_checkpoints,
        find_resume_checkpoint,
    )

    if config.resume_from:  # a chosen checkpoint (e.g. the last one before a divergence): it must be complete
        chosen = Path(config.resume_from)
        chosen = chosen if chosen.is_absolute() or chosen.exists() else Path(config.output_dir) / chosen
        problem = checkpoint_problem(chosen, verify=True) if chosen.is_dir() else "no such folder"
        if problem:
            raise NoCompleteCheckpointError(f"--resume-from {chosen}: not a complete checkpoint: {problem}")
        at = int(json.loads((chosen / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
        newer = [path.name for step, path in complete_checkpoints(config.output_dir) if step > at]
        if newer:
            logger.warning("--resume-from %s: newer checkpoints %s are replaced as the run reaches them", chosen, newer)
        pick = ResumePick(chosen, [])
    else:
        pick = find_resume_checkpoint(config.output_dir)
    for line in pick.report():
        (logger.warning if line.startswith("skipping") else logger.info)("%s", line)
    if pick.path is None:
        raise NoCompleteCheckpointError(
            f"--resume: no complete checkpoint in {config.output_dir}"
            + "".join(f"\n  skipped {folder}: {reason}" for folder, reason in pick.skipped)
        )
    check_max_steps(pick.path, config.max_steps)
    changes = check_resume(pick.path, settings, parse_accept(config.accept_changes))
    old = json.loads((pick.path / RUN_SETTINGS).read_text(encoding="utf-8")).get("other_settings", {})
    length_changed = any(old.get(k) != getattr(config, k) for k in ("max_steps", "num_train_epochs"))
    trainer.add_callback(ApplyResumeChanges(changes, schedule_changed=length_changed))
    return str(pick.path)


def check_max_steps(checkpoint: Path, max_steps: int) -> None:
    """Refuse a ``--max-steps`` below the checkpoint's step (transformers would train one more step and stop, and
    the run would export that silently); equal is the run that stopped at its export: nothing to train, it exports."""
    step = int(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    if 0 < max_steps < step:
        raise ResumeMismatchError(
            f"--resume from {checkpoint}: --max-steps {max_steps} is below the checkpoint's step {step}; a run cannot "
            f"go back. Give --max-steps {step} or more ({step}: nothing is trained, the export runs), or "
            "--resume-from an earlier checkpoint."
        )
    if max_steps == step:
        logger.info("--resume at step %d = --max-steps: nothing to train; the run evaluates and exports", step)


class NothingLeftToTrainMixin:
    """Trainer mixin: a run resumed at its last step (``global_step >= max_steps``) trains nothing. transformers 5.24
    skips the resumed epoch's trained batches and then trains one more step before it checks ``max_steps``."""

    def _run_epoch(self, *args, **kwargs):
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)


def resume_point(trainer, config, settings: dict[str, Any]) -> str | None:
    """The checkpoint ``trainer.train`` resumes from: ``None`` without ``--resume`` / ``--resume-from``, else
    :func:`prepare_resume`'s pick (checked against ``settings``)."""
    if not (config.resume or config.resume_from):
        return None
    return prepare_resume(trainer, config, settings)


def used_config(config, precision: str, attention: str | None, trainer, settings: dict[str, Any]) -> dict[str, Any]:
    """``train_config.json``: the settings as the run used them (precision and attention as resolved, no eval steps
    without evaluation, no accepted changes without a resume), the train file's fingerprint, the resume history
    (which settings changed at which step, old -> new) and the number of steps the guard skipped."""
    used = dataclasses.asdict(config)
    if used["precision"] != precision:
        used["precision_requested"], used["precision"] = used["precision"], precision
    if not ((config.eval_file or config.eval_split) and config.eval_steps):
        used["eval_steps"] = None
    if not (config.resume or config.resume_from):
        used["accept_changes"] = None
    return {
        **used,
        "attention": attention,
        "precision_used": precision,
        "world_size": trainer.args.world_size,
        "distributed_type": getattr(trainer.accelerator.distributed_type, "value", None),
        "train_file_fingerprint": settings["settings"]["train_file"],
        "resume_history": settings["history"],
        "skipped_steps": trainer._guard_state()["total"],
    }


class ApplyResumeChanges(TrainerCallback):
    """After the optimizer and scheduler states are loaded from the checkpoint (which carry the old values): use
    an accepted new learning rate / weight decay, and the current schedule's learning rate at the resumed step."""

    def __init__(self, changes: list[Change], schedule_changed: bool) -> None:
        self.changes = {c.name: c for c in changes}
        self.schedule_changed = schedule_changed or any(name in self.changes for name in SCHEDULE)

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if optimizer is None:
            return
        groups = optimizer.param_groups
        if "weight_decay" in self.changes:
            old, new = self.changes["weight_decay"].old, self.changes["weight_decay"].new
            # transformers puts the decayed parameters in group 0 and the others (weight decay 0) after it
            for index, group in enumerate(groups):
                if group.get("weight_decay") == old and (old != 0 or index == 0):
                    group["weight_decay"] = new
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
        if "learning_rate" in self.changes and scheduler is not None:
            old, new = self.changes["learning_rate"].old, self.changes["learning_rate"].new
            scale = new / old if old else None
            scheduler.base_lrs = [base * scale if scale is not None else new for base in scheduler.base_lrs]
            for group, base in zip(groups, scheduler.base_lrs, strict=False):
                group["initial_lr"] = base
        if self.schedule_changed and hasattr(scheduler, "lr_lambdas"):
            rates = [
                base * fn(scheduler.last_epoch)
                for fn, base in zip(scheduler.lr_lambdas, scheduler.base_lrs, strict=True)
            ]
            for group, rate in zip(groups, rates, strict=False):
                group["lr"] = rate
            scheduler._last_lr = rates
            logger.info("--resume: learning rate at step %d is now %s", state.global_step, rates[0])


__all__ = [
    "ApplyResumeChanges",
    "Change",
    "NothingLeftToTrainMixin",
    "check_max_steps",
    "RUN_DEFINING",
    "ResumeMismatchError",
    "check_resume",
    "compare",
    "data_identity",
    "parse_accept",
    "prepare_resume",
    "run_settings",
    "used_config",
]
