"""The training run: :func:`train` is what ``train_st.py`` runs, a short linear script of the run's steps.

config -> environment (:mod:`.arguments`) -> data (:mod:`.run_data`) -> model (:mod:`.model`) -> trainer and its
callbacks (:mod:`.trainer`) -> resume point (:mod:`.resume_check`) -> training -> evaluation and export
(:mod:`.finish`). Each step is one module; none returns to a module already left.

Example::

    >>> from vipyloqwen_tools.train.config import TrainConfig
    >>> from vipyloqwen_tools.train.run import train
    >>> result = train(TrainConfig.from_yaml("configs/tiny-cpu.yaml", output_dir="runs/tiny"))
    >>> result["final_dir"]
    'runs/tiny/final'
"""

from __future__ import annotations

import logging
from typing import Any

from vipyloqwen_tools.train.arguments import open_run
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.finish import finish_run
from vipyloqwen_tools.train.model import prepare_model
from vipyloqwen_tools.train.progress import quiet_library_bars
from vipyloqwen_tools.train.resume_check import resume_point
from vipyloqwen_tools.train.run_data import prepare_run_data
from vipyloqwen_tools.train.trainer import build_trainer


def train(config: TrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Run one training job; returns ``{"final_dir", "plot", "metrics", "log_history", "global_step", "rows"}``
    (``rows``: rows in = trained + rejected, :meth:`~vipyloqwen_tools.train.bad_rows.BadRowGuard.totals`).

    ``callbacks``: extra ``transformers.TrainerCallback`` objects for the trainer. Faults (docs/faults.md):
    a diverging run raises :class:`~vipyloqwen_tools.train.guard.NonFiniteTrainingError`, a failed checkpoint save
    :class:`~vipyloqwen_tools.train.checkpoints.CheckpointSaveError` (an export too), a ``--resume`` with changed
    run-defining settings :class:`~vipyloqwen_tools.train.resume_check.ResumeMismatchError`, an output folder another
    run holds :class:`~vipyloqwen_tools.train.run_lock.OutputDirLockedError`, a SIGTERM / SIGUSR1
    :class:`~vipyloqwen_tools.train.stop_signal.StopRequested` (after a complete checkpoint).

    Under ``torchrun`` / ``accelerate launch`` every process calls this: the main process prepares the data first
    (the others reuse its Arrow cache), the batches of a step differ per process (all of one task), gradients are
    synchronised (DDP) or sharded (FSDP2), and only the main process writes files (``final/``, checkpoints, curves,
    logs, rejects; each process adds its own ``rng_state_<rank>.pth`` to a checkpoint, as transformers does).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_library_bars()  # off a terminal: a log file gets lines, not carriage returns (train/progress.py)
    run = open_run(config)  # precision, trainer arguments (the process group), trace, the output folder's lock
    try:
        data = prepare_run_data(config, run)  # validated once, per-task datasets with row ids, prompts, settings
        model = prepare_model(config, run, data.negatives)  # loaded, Matryoshka widths, checkpointing, memory plan
        trainer = build_trainer(config, run, model, data, callbacks)  # router loss, evaluator, guards, trace, signals
        # --resume: the newest complete checkpoint that verifies, refused if run-defining settings changed
        resume_from = resume_point(trainer, config, data.settings)
        with trainer.stop_signal:  # SIGTERM / SIGUSR1 while training: the step ends, a checkpoint is saved
            trainer.train(resume_from_checkpoint=resume_from)
        trainer.stop_signal.raise_if_stopped(run.output_dir)  # stopped on a signal: StopRequested, no export
        return finish_run(config, run, trainer, model, data)  # evaluation, logs, train_config.json, curves, final/
    finally:
        run.close()  # the output folder's lock is released, however the run ends


__all__ = ["TrainConfig", "train"]
