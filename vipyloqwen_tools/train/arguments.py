"""The run's environment: precision, the trainer's arguments (which set up the process group), this process's role.

:func:`open_run` is the first step of :func:`vipyloqwen_tools.train.run.train`: it resolves the precision, creates the
``SentenceTransformerTrainingArguments`` (under torchrun / accelerate launch this forms the process group), starts the
per-step trace when asked (first, so that it sees every file this process writes), takes the output folder's lock
(:mod:`.run_lock`: one run per folder; a second run is refused before it writes anything) and creates the folder.

Example::

    >>> from vipyloqwen_tools.train.arguments import open_run
    >>> run = open_run(config)  # a TrainConfig
    >>> run.precision, run.is_main, run.args.world_size
    ('fp32', True, 1)
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformerTrainingArguments

from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.process_group import init_process_group

logger = logging.getLogger("vipyloqwen.train")


@dataclasses.dataclass
class RunSetup:
    """What every later step of a run reads: the trainer's arguments, the precision used, this process's role,
    the output folder and the trace (``None`` without ``trace_dir``)."""

    args: SentenceTransformerTrainingArguments
    precision: str
    output_dir: Path
    trace: Any = None
    lock: Any = None  # the main process's RunLock (None on the others)

    @property
    def is_main(self) -> bool:
        return self.args.process_index == 0

    def close(self) -> None:
        """The end of the run, however it ends: the output folder's lock is released."""
        if self.lock is not None:
            self.lock.release()


def resolve_precision(precision: str) -> str:
    """bf16/fp16 need an accelerator here: on CPU training runs in fp32 (logged)."""
    if precision != "fp32" and not torch.cuda.is_available():
        logger.warning("precision %s requested without CUDA: training in fp32", precision)
        return "fp32"
    return precision


def training_arguments(config: TrainConfig, precision: str) -> SentenceTransformerTrainingArguments:
    """The trainer's arguments. Creating them sets up the process group under torchrun / accelerate launch.

    ``use_cpu`` without CUDA is what makes a multi-process CPU launch distributed: without it accelerate's
    ``PartialState`` finds no accelerator, reports ``DistributedType.NO`` and world size 1, and every process trains
    alone on the same batches. With it, the processes form a gloo group (``MULTI_CPU``); with CUDA, NCCL.
    ``ddp_find_unused_parameters``: text-only tasks leave the vision tower without gradients.
    """
    eval_on = bool((config.eval_file or config.eval_split) and config.eval_steps)
    init_process_group(config.ddp_timeout)  # on CPU (gloo) too: transformers passes the timeout on GPUs only
    return SentenceTransformerTrainingArguments(
        output_dir=str(config.output_dir),
        use_cpu=not torch.cuda.is_available(),
        ddp_timeout=config.ddp_timeout,
        ddp_find_unused_parameters=True,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        seed=config.seed,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if eval_on else "no",
        eval_steps=config.eval_steps if eval_on else None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        dataloader_num_workers=config.dataloader_num_workers,
        dataloader_drop_last=True,
        remove_unused_columns=False,
        logging_nan_inf_filter=False,  # a NaN / inf loss is logged as it is (the guard skips that step)
        report_to="none",
        disable_tqdm=False,  # the progress bar of train/progress.py (a plain line per log off a terminal)
    )


def open_run(config: TrainConfig) -> RunSetup:
    """Precision, arguments (process group), trace and output folder of a run; other processes log warnings only."""
    precision = resolve_precision(config.precision)
    args = training_arguments(config, precision)
    output_dir = Path(config.output_dir)
    if args.process_index != 0:
        logger.setLevel(logging.WARNING)
    trace = None
    if config.trace_dir:  # first, so that it sees every file this process writes
        from vipyloqwen_tools.train.trace import TrainingTrace

        trace = TrainingTrace(config.trace_dir, args.process_index, args.world_size, watch_dir=output_dir)
    lock = lock_output_dir(output_dir, args)
    return RunSetup(args=args, precision=precision, output_dir=output_dir, trace=trace, lock=lock)


def lock_output_dir(output_dir: Path, args: SentenceTransformerTrainingArguments):
    """The main process takes the output folder's lock (creating the folder); every process learns from one
    all-reduce whether it got it and all raise :class:`~.run_lock.OutputDirLockedError` if not."""
    from vipyloqwen_tools.train.checkpoints import any_rank
    from vipyloqwen_tools.train.run_lock import OutputDirLockedError, RunLock

    lock, refused = None, None
    if args.process_index == 0:
        lock = RunLock(output_dir, world_size=args.world_size)
        try:
            lock.acquire()
        except OutputDirLockedError as error:
            lock, refused = None, error
    if any_rank(refused is not None, args.device):
        raise refused or OutputDirLockedError(f"output folder {output_dir} is in use by another run (see rank 0)")
    return lock


__all__ = ["RunSetup", "lock_output_dir", "open_run", "resolve_precision", "training_arguments"]
