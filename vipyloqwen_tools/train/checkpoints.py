"""Atomic training checkpoints, and ``--resume`` from the newest complete one.

A checkpoint is written into ``<output_dir>/.saving/checkpoint-<step>/`` by the trainer's own save (weights,
optimizer, scheduler, the RNG state of every rank, trainer state with the data position) plus ``run_settings.json``
(the settings that define the run, see :mod:`.resume_check`). When every rank has written its part,
the main process checks that nothing is missing, flushes the files to disk, writes the completion marker
``checkpoint_complete.json`` (every file with its size and checksum, :mod:`.checksums`; the step, the data
position, the world size) and renames the folder to ``<output_dir>/checkpoint-<step>/``. A process killed during
the save leaves only the ``.saving`` folder; a full disk gives :class:`CheckpointSaveError` saying so (path, free
bytes) and the unfinished folder is removed. Either way the previous complete checkpoint stays where it was.

Rotation (``save_total_limit``) deletes the oldest complete checkpoints beyond the limit, except the ones the
trainer protects (:meth:`AtomicCheckpointsMixin.protected_checkpoints`: the non-finite guard keeps the last good
one), and torn ``checkpoint-<step>`` folders older than the newest complete one. A folder is renamed into
``.saving/`` before it is deleted, so a kill during the deletion leaves no torn ``checkpoint-<step>``.

:func:`find_resume_checkpoint` takes the newest ``checkpoint-<step>`` folder whose marker and files check out, every
file's checksum included, and says why it skipped each newer one (an unfinished save, a missing or empty file, no
marker, a file whose bytes changed since the save).

Example::

    >>> pick = find_resume_checkpoint("runs/tiny")
    >>> pick.path, pick.skipped
    (PosixPath('runs/tiny/checkpoint-5'), [(PosixPath('runs/tiny/.saving/checkpoint-10'), 'an unfinished save ...')])
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from vipyloqwen_tools.checkpoint.finite import NonFiniteWeightsError, describe, nonfinite_tensors
from vipyloqwen_tools.train.checksums import file_checksum

logger = logging.getLogger("vipyloqwen.train")

MARKER = "checkpoint_complete.json"
STAGING = ".saving"
RUN_SETTINGS = "run_settings.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# A checkpoint folder holds one of each group (transformers / sentence-transformers / accelerate FSDP names; DeepSpeed
# keeps its optimizer state in a global_step<N>/ folder).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model_fsdp_0")
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin", "optimizer_0")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
PROBE_BYTES = 1 << 20


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (``errno`` ENOSPC when the disk is full); the last complete one stays."""

    def __str__(self) -> str:
        return str(self.strerror)


class NoCompleteCheckpointError(FileNotFoundError):
    """``--resume`` found no complete checkpoint."""


# ---------------------------------------------------------------------------------------- checking a folder
def checkpoint_step(folder: Path) -> int | None:
    match = CHECKPOINT_NAME.match(folder.name)
    return int(match.group(1)) if match else None


def missing_parts(folder: Path, world_size: int) -> list[str]:
    """What a complete checkpoint of a ``world_size``-process run needs and ``folder`` lacks (or has empty)."""

    def present(name: str) -> bool:
        path = folder / name
        return path.is_dir() and any(path.iterdir()) or path.is_file() and path.stat().st_size > 0

    missing = []
    if not any(present(name) for name in WEIGHT_FILES):
        missing.append("weights (" + " / ".join(WEIGHT_FILES) + ")")
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in folder.iterdir())  # its own layout
    if not deepspeed and not any(present(name) for name in OPTIMIZER_FILES):
        missing.append("optimizer state (" + " / ".join(OPTIMIZER_FILES) + ")")
    rng = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]
    missing += [name for name in ("scheduler.pt", "trainer_state.json", RUN_SETTINGS, *rng) if not present(name)]
    return missing


def _recorded(value: Any) -> tuple[int, str | None]:
    """``(size, checksum)`` of a marker's file entry (a marker written before checksums holds the size only)."""
    if isinstance(value, dict):
        return int(value["size"]), value.get("checksum")
    return int(value), None


def checkpoint_problem(folder: str | os.PathLike, verify: bool = False) -> str | None:
    """Why ``folder`` is not a complete checkpoint (``None`` if it is): no marker, or a file the marker lists is
    missing or has another size; with ``verify``, also a file whose checksum differs from the recorded one (its bytes
    changed after the save: a flipped bit, a bad disk; reads every file)."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        found = [
            name for name in ("trainer_state.json", "model.safetensors", "optimizer.pt") if (folder / name).exists()
        ]
        empty = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size == 0)
        details = [f"no {name}" for name in ("trainer_state.json",) if name not in found]
        details += [f"{name} is empty (0 bytes)" for name in empty]
        return f"no completion marker ({MARKER}): its save did not finish" + (
            f" ({'; '.join(details)})" if details else ""
        )
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        files = {relative: _recorded(value) for relative, value in dict(record["files"]).items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable completion marker {MARKER}: {error}"
    for relative, (size, _) in sorted(files.items()):
        path = folder / relative
        if not path.is_file():
            return f"{relative} is missing (the completion marker lists it with {size} bytes)"
        actual = path.stat().st_size
        if actual != size:
            return f"{relative} has {actual} bytes, the completion marker recorded {size}"
    if verify:
        for relative, (_, recorded) in sorted(files.items()):
            if recorded is None:
                continue  # a marker of an older version: sizes only
            actual = file_checksum(folder / relative)
            if actual != recorded:
                return (
                    f"{relative} is corrupt: its checksum is {actual}, the completion marker recorded {recorded} "
                    "(its bytes changed after the save: a flipped bit, a failing disk or a copy gone wrong)"
                )
    return None


@dataclasses.dataclass
class ResumePick:
    """The checkpoint ``--resume`` continues from and the newer folders it skipped, each with the reason."""

    path: Path | None
    skipped: list[tuple[Path, str]]

    def report(self) -> list[str]:
        """Log lines: each skipped folder with its reason (not a complete checkpoint), then the one resumed."""
        lines = [f"skipping {folder}: {reason}" for folder, reason in self.skipped]
        if self.path is not None:
            lines.append(f"resuming from {self.path}")
        return lines


def find_resume_checkpoint(output_dir: str | os.PathLike, verify: bool = True) -> ResumePick:
    """The newest complete ``checkpoint-<step>`` in ``output_dir`` and every newer folder that was skipped.

    ``verify``: every file of the pick is checked against its recorded checksum (:func:`checkpoint_problem`); a
    corrupt checkpoint is skipped, naming the file, and the previous complete one is taken."""
    output_dir = Path(output_dir)
    candidates = []
    for root, unfinished in ((output_dir, False), (output_dir / STAGING, True)):
        if root.is_dir():
            for folder in root.iterdir():
                if folder.is_dir() and (step := checkpoint_step(folder)) is not None:
                    candidates.append((step, not unfinished, folder))
    skipped = []
    for _step, final, folder in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        if not final:
            skipped.append((folder, "an unfinished save (the run stopped while writing it); never renamed into place"))
            continue
        problem = checkpoint_problem(folder, verify=verify)
        if problem is None:
            return ResumePick(folder, skipped)
        skipped.append((folder, problem))
    return ResumePick(None, skipped)


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted((step, p) for step, p in found if checkpoint_problem(p) is None)


def newest_complete(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint by its marker and sizes (no checksums read: for messages)."""
    return find_resume_checkpoint(output_dir, verify=False).path


# ---------------------------------------------------------------------------------------- writing
def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_marker(folder: Path, step: int, world_size: int, data_position: dict[str, Any]) -> dict[str, Any]:
    """Flush every file of ``folder`` to disk, then write the completion marker (last, flushed too): every file
    with its size and checksum (:func:`~.checksums.file_checksum`; the files were just written, so this reads them
    from the page cache)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fsync_path(path)
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "checksum": file_checksum(path)}
    record = {
        "step": step,
        "world_size": world_size,
        "data_position": data_position,
        "files": files,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = folder / (MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MARKER)
    for directory in sorted({p.parent for p in folder.rglob("*")} | {folder}):
        fsync_path(directory)
    return record


def _delete(folder: Path, output_dir: Path) -> None:
    """Rename ``folder`` into ``.saving/`` (atomic), then delete it: a kill during the deletion leaves no torn
    ``checkpoint-<step>`` behind, only a leftover in ``.saving/`` that the next save removes."""
    trash = output_dir / STAGING / f"deleting-{folder.name}"
    trash.parent.mkdir(exist_ok=True)
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def rotate(output_dir: Path, limit: int | None, keep: Path, protect: set[Path] | frozenset = frozenset()) -> None:
    """Delete the oldest complete checkpoints beyond ``limit`` (never ``keep`` nor one in ``protect``), then the torn
    ``checkpoint-<step>`` folders older than the newest complete one (a kill during an older version's rotation
    left them; they are never loaded). Nothing is deleted without a ``limit``."""
    if not limit or limit <= 0:
        return
    complete = complete_checkpoints(output_dir)
    for _, folder in complete[: max(0, len(complete) - limit)]:
        if folder != keep and folder not in protect:
            logger.info("deleting older checkpoint %s (save_total_limit=%d)", folder, limit)
            _delete(folder, output_dir)
    if not complete:
        return
    newest = complete[-1][0]
    named = [(checkpoint_step(p), p) for p in output_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    for step, folder in sorted(named):
        if step < newest and (problem := checkpoint_problem(folder)) is not None:
            logger.warning(
                "deleting torn checkpoint folder %s (%s), older than the newest complete checkpoint-%d",
                folder, problem, newest,
            )  # fmt: skip
            _delete(folder, output_dir)


def disk_full(error: BaseException | None, folder: Path) -> bool:
    """Whether a save failed because the file system is full: an ENOSPC / EDQUOT anywhere in the error chain, or
    (torch.save reports a short write as ``RuntimeError: ... iostream error`` without errno) a 1 MiB probe write
    next to it failing the same way."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in DISK_FULL_ERRNOS or "No space left" in str(error):
            return True
        error = error.__cause__ or error.__context__
    probe = folder / ".space-probe"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as probe_error:
        return probe_error.errno in DISK_FULL_ERRNOS
    finally:
        probe.unlink(missing_ok=True)
    return False


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _size(folder: Path | None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder is not None else 0


def save_failure(error: BaseException | None, staging: Path, output_dir: Path, rank_failed: str) -> CheckpointSaveError:
    """The error a failed save raises (after the unfinished folder is removed), naming what is kept."""
    name = staging.name
    full = error is not None and disk_full(error, staging.parent if staging.parent.is_dir() else output_dir)
    free_then = shutil.disk_usage(output_dir).free
    shutil.rmtree(staging, ignore_errors=True)  # frees the space the partial files took
    remove_if_empty(output_dir / STAGING)
    last = newest_complete(output_dir)
    keep = f"the last complete checkpoint is {last}" if last else "no complete checkpoint was written yet"
    if full:
        usage = shutil.disk_usage(output_dir)
        needed = _size(last)
        return CheckpointSaveError(
            errno.ENOSPC,
            f"disk full: saving {name} into {staging} failed ({type(error).__name__}: {error}); "
            f"{free_then} bytes were free on the file system of {output_dir} (of {usage.total}), {usage.free} "
            "after removing the unfinished save"
            + (f"; a checkpoint takes {needed} bytes" if needed else "")
            + f". {keep[0].upper()}{keep[1:]}; free space, then run again with --resume.",
        )
    cause = f"{type(error).__name__}: {error}" if error is not None else f"{rank_failed} failed to write its part"
    return CheckpointSaveError(
        errno.EIO, f"saving {name} into {staging} failed ({cause}). The unfinished save was removed; {keep}."
    )


def any_rank(flag: bool, device) -> bool:
    """True on every process if ``flag`` is true on any (also a barrier)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)


def refuse_nonfinite_model(trainer, target: str, cleanup: Path | None = None) -> None:
    """Raise :class:`NonFiniteWeightsError` on every process if any process holds a non-finite weight (each checks
    its own parameters: its shard under FSDP). ``cleanup``: a folder to remove first (the staging folder)."""
    bad, checked = nonfinite_tensors(trainer.model.named_parameters())
    if any_rank(bool(bad), trainer.args.device):
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        last = newest_complete(trainer.args.output_dir)
        raise NonFiniteWeightsError(
            f"refusing to save {target} at step {trainer.state.global_step}: "
            + (describe(bad, checked) if bad else "another process holds NaN/inf weights")
            + f"; the last complete checkpoint is {last}"
        )


class AtomicCheckpointsMixin:
    """Trainer mixin: every checkpoint is staged, checked, marked complete and renamed into place (see the module
    docstring); a non-finite model is refused before anything is written. Set ``run_settings`` (a dict) to have it
    written into every checkpoint as ``run_settings.json``."""

    run_settings: dict[str, Any] | None = None
    _staging_save = False

    @property
    def saved_steps(self) -> list[int]:
        """The steps of the complete checkpoints this trainer saved, in order."""
        return self.__dict__.setdefault("_saved_steps", [])

    def protected_checkpoints(self, complete: list[tuple[int, Path]]) -> set[Path]:
        """Complete checkpoints (of ``complete``, oldest first) that rotation keeps beyond ``save_total_limit``;
        none here (the non-finite guard's mixin adds its last good one)."""
        return set()

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging_save else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        output_dir = Path(self._get_output_dir(trial))
        step = self.state.global_step
        name = f"checkpoint-{step}"
        staging, final = output_dir / STAGING / name, output_dir / name
        main = self.args.should_save
        if main:  # only the current save is ever staged: leftovers of an earlier unfinished save go
            shutil.rmtree(output_dir / STAGING, ignore_errors=True)
            staging.mkdir(parents=True)
        # collective (every rank checks its parameters): also the barrier after the staging folder is made
        refuse_nonfinite_model(self, name, cleanup=output_dir / STAGING if main else None)
        error: BaseException | None = None
        self._staging_save = True
        try:
            super()._save_checkpoint(model, trial)
            if main:
                settings = dict(self.run_settings or {})
                (staging / RUN_SETTINGS).write_text(json.dumps(settings, indent=1, default=str), encoding="utf-8")
        except Exception as caught:  # every rank must hear of it: agreed below
            error = caught
        finally:
            self._staging_save = False
        if any_rank(error is not None, self.args.device):
            failure = save_failure(error, staging, output_dir, "another process") if main else None
            if main:
                raise failure from error
            raise CheckpointSaveError(errno.EIO, f"saving {name} failed on another process (see its error)") from error
        if main:
            missing = missing_parts(staging, self.args.world_size)
            if missing:
                shutil.rmtree(staging, ignore_errors=True)
                raise CheckpointSaveError(errno.EIO, f"saving {name}: the folder lacks {', '.join(missing)}")
            position = {"global_step": step, "epoch": self.state.epoch}
            write_marker(staging, step, self.args.world_size, position)
            if final.exists():  # a torn folder of the same step (an older version's save): replaced
                shutil.rmtree(final)
            os.replace(staging, final)
            fsync_path(output_dir)
            self.saved_steps.append(step)
            protect = self.protected_checkpoints(complete_checkpoints(output_dir))
            rotate(output_dir, self.args.save_total_limit, keep=final, protect=protect)
            remove_if_empty(output_dir / STAGING)
            logger.info("checkpoint %s complete (%s)", final, MARKER)
        any_rank(False, self.args.device)  # the others wait until the checkpoint is in place


__all__ = [
    "AtomicCheckpointsMixin",
    "CheckpointSaveError",
    "MARKER",
    "NoCompleteCheckpointError",
    "RUN_SETTINGS",
    "ResumePick",
    "STAGING",
    "any_rank",
    "checkpoint_problem",
    "complete_checkpoints",
    "disk_full",
    "find_resume_checkpoint",
    "fsync_path",
    "missing_parts",
    "refuse_nonfinite_model",
    "newest_complete",
    "remove_if_empty",
    "rotate",
    "write_marker",
]
