"""The final export, atomic like the checkpoints: ``final/`` exists only when it is whole.

``final/`` is written into ``<output_dir>/.saving/final/`` (:func:`vipyloqwen_tools.checkpoint.export.save_checkpoint`:
config, weights, code, tokenizer, processor, Sentence-Transformers files), every file is flushed and listed with its
size and checksum in the completion marker (:func:`~.checkpoints.write_marker`), then the folder is renamed to
``<output_dir>/final/`` (an earlier ``final/`` is moved aside first and deleted after). A process killed during
the export leaves only ``.saving/final``; a failed export removes it. Either way no half-written ``final/`` exists.

A full disk raises :class:`~.checkpoints.CheckpointSaveError` (``train_st.py``: exit 3) saying so: what the export
needs and what is free, the last complete checkpoint, and what to do: free space and run the same command with
``--resume``, which resumes at that checkpoint (the last step: nothing is left to train) and exports.

Example::

    >>> export_final(model[0].model, model[0].processor, Path("runs/tiny"), state_dict=None, step=6)
    PosixPath('runs/tiny/final')
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from vipyloqwen_tools.checkpoint.export import save_checkpoint
from vipyloqwen_tools.checkpoint.finite import NonFiniteWeightsError
from vipyloqwen_tools.train.checkpoints import (
    STAGING,
    CheckpointSaveError,
    disk_full,
    fsync_path,
    newest_complete,
    remove_if_empty,
    write_marker,
)

logger = logging.getLogger("vipyloqwen.train")
FINAL = "final"
# Files of a checkpoint that the export does not write (the trainer's own state): left out of the size estimate.
TRAINER_FILES = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args", "run_settings", "checkpoint_")
WEIGHT_FILES = ("model.safetensors",)


def weights_bytes(model, state_dict: dict | None) -> int:
    """Bytes of the weights the export writes (the safetensors payload)."""
    tensors = state_dict if state_dict is not None else model.state_dict()
    seen, total = set(), 0
    for tensor in tensors.values():
        key = (tensor.data_ptr(), tensor.numel()) if tensor.device.type != "meta" else id(tensor)
        if key not in seen:  # tied weights are written once
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def other_files_bytes(checkpoint: Path | None) -> int:
    """Bytes of the non-weight files of an export, as in ``checkpoint`` (tokenizer, config, code; 0 without one)."""
    if checkpoint is None:
        return 0
    return sum(
        path.stat().st_size
        for path in checkpoint.rglob("*")
        if path.is_file()
        and not path.name.startswith(TRAINER_FILES)
        and not path.name.startswith(WEIGHT_FILES)
        and not path.parent.name.startswith("global_step")
    )


def export_failure(error: BaseException, staging: Path, output_dir: Path, needed: int) -> CheckpointSaveError:
    """The error a failed export raises, after the unfinished export is removed."""
    full = disk_full(error, staging if staging.is_dir() else output_dir)
    shutil.rmtree(staging, ignore_errors=True)
    remove_if_empty(output_dir / STAGING)
    last = newest_complete(output_dir)
    final = output_dir / FINAL
    kept = f"{final} is as it was" if final.exists() else f"no {final} was written"
    resume = (
        f"The last complete checkpoint is {last}; free space, then run the same command with --resume: it resumes "
        "there, has nothing left to train if it is the last step, and exports."
        if last
        else "No complete checkpoint is left to resume from."
    )
    if full:
        usage = shutil.disk_usage(output_dir)
        return CheckpointSaveError(
            errno.ENOSPC,
            f"disk full: exporting {final} into {staging} failed ({type(error).__name__}: {error}); the export "
            f"needs about {needed} bytes, {usage.free} are free on the file system of {output_dir} (of "
            f"{usage.total}) after removing the unfinished export: free at least {max(0, needed - usage.free)} "
            f"more. Nothing was exported ({kept}); log_history.json and train_config.json are written. {resume}",
        )
    return CheckpointSaveError(
        errno.EIO,
        f"exporting {final} into {staging} failed ({type(error).__name__}: {error}); the unfinished export was "
        f"removed ({kept}). {resume}",
    )


def export_final(model, processor, output_dir: Path, state_dict: dict | None, step: int) -> Path:
    """Write ``<output_dir>/final`` atomically (see the module docstring); returns its path.

    Raises :class:`~vipyloqwen_tools.checkpoint.finite.NonFiniteWeightsError` (nothing written) for NaN / inf weights
    and :class:`~.checkpoints.CheckpointSaveError` when the files cannot be written."""
    output_dir = Path(output_dir)
    staging, final = output_dir / STAGING / FINAL, output_dir / FINAL
    shutil.rmtree(staging, ignore_errors=True)  # a leftover of an export that was killed
    needed = weights_bytes(model, state_dict) + other_files_bytes(newest_complete(output_dir))
    try:
        save_checkpoint(model, processor, staging, state_dict=state_dict)
        if not any((staging / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
            raise OSError(errno.EIO, f"{staging} has no weights after the save")
        write_marker(staging, step, 1, {"global_step": step})
    except NonFiniteWeightsError:
        shutil.rmtree(staging, ignore_errors=True)
        remove_if_empty(output_dir / STAGING)
        raise
    except Exception as error:  # noqa: BLE001 - any failure to write: the unfinished export goes, the error says why
        raise export_failure(error, staging, output_dir, needed) from error
    previous = output_dir / STAGING / f"{FINAL}-previous"
    if final.exists():  # an earlier export (a run exported again): moved aside, deleted once the new one is in place
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
    os.replace(staging, final)
    fsync_path(output_dir)
    shutil.rmtree(previous, ignore_errors=True)
    remove_if_empty(output_dir / STAGING)
    return final


__all__ = ["FINAL", "export_final", "export_failure", "other_files_bytes", "weights_bytes"]
