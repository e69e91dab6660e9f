"""The trainer: Sentence-Transformers' trainer with task-grouped batches, per-term logging, the non-finite guard,
atomic checkpoints and the bad-row guard; :func:`build_trainer` wires a run's loss, evaluator and callbacks into it.

Example::

    >>> from vipyloqwen_tools.train.trainer import build_trainer
    >>> trainer = build_trainer(config, run, model, data)  # TrainConfig, RunSetup, SentenceTransformer, RunData
    >>> trainer.train()
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
from transformers import PrinterCallback, ProgressCallback
from transformers.trainer import DEFAULT_PROGRESS_CALLBACK

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.data.arrow import KEYS_COLUMN
from vipyloqwen_tools.train import distributed
from vipyloqwen_tools.train.arguments import RunSetup
from vipyloqwen_tools.train.checkpoints import AtomicCheckpointsMixin
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.evaluation import ViPyloQwenEvaluator
from vipyloqwen_tools.train.guard import NonFiniteGuardMixin
from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss
from vipyloqwen_tools.train.model import ST_BACKBONE_PREFIX
from vipyloqwen_tools.train.progress import RunProgress
from vipyloqwen_tools.train.resume_check import NothingLeftToTrainMixin
from vipyloqwen_tools.train.run_data import RunData
from vipyloqwen_tools.train.sampler import TaskGroupedBatchSampler
from vipyloqwen_tools.train.stop_signal import StopOnSignal


@contextlib.contextmanager
def export_limits(model: SentenceTransformer) -> Iterator[None]:
    """The base model's inference limits on the model's processor while a checkpoint is written
    (:mod:`vipyloqwen_tools.checkpoint.limits`); the run's training limits before and after."""
    limits = getattr(model, "vipyloqwen_limits", None)
    if limits is None:  # a model not loaded by train.model.load_model: its limits are its own
        yield
        return
    with limits.applied(model[0].processor):
        yield


class ViPyloQwenTrainer(
    NonFiniteGuardMixin, AtomicCheckpointsMixin, NothingLeftToTrainMixin, SentenceTransformerTrainer
):
    """SentenceTransformerTrainer with task-grouped batches and per-term averages over the steps that had the term
    (the stock trainer divides every term by all logged steps, which dilutes a task seen in one step of four), the
    non-finite guard (:mod:`.guard`), atomic checkpoints (:mod:`.checkpoints`) and no extra step for a run resumed at
    its last step (:class:`.resume_check.NothingLeftToTrainMixin`).

    Batches carry their row ids (:func:`.trace.add_row_ids` on the datasets) when the datasets have them: the guard
    names the rows of a non-finite step, the trace those of every step.
    """

    def __init__(self, *args, trace=None, row_guard=None, **kwargs) -> None:
        self.row_guard = row_guard  # train/bad_rows.py: rows whose images fail to open at batch time
        super().__init__(*args, **kwargs)
        self.trace = trace
        from vipyloqwen_tools.train.false_negatives import KeysCollator
        from vipyloqwen_tools.train.trace import RowIdCollator

        self.data_collator = KeysCollator(RowIdCollator(self.data_collator))
        if trace is not None:
            self.add_callback(trace)
        if row_guard is not None:
            self.data_collator = row_guard.collator(self.data_collator)

    def add_model_card_callback(self, default_args_dict) -> None:
        from vipyloqwen_tools.train.bad_rows import model_card_without_unreadable_rows

        with model_card_without_unreadable_rows(self.model, self.loss):
            super().add_model_card_callback(default_args_dict)

    def _build_dataloader(self, dataset, batch_size, dataset_kind):
        loader = super()._build_dataloader(dataset, batch_size, dataset_kind)
        if dataset_kind != "train" or self.row_guard is None:
            return loader
        return self.row_guard.wrap_loader(loader, list(dataset.keys()))

    def get_multi_dataset_batch_sampler(self, dataset, batch_samplers, generator=None, seed=0):
        # The same sampler on every process; accelerate's BatchSamplerShard then hands batch i of each group of
        # world_size to process i (it yields batches round-robin), so the sampler itself must not shard.
        return TaskGroupedBatchSampler(
            dataset, batch_samplers, generator=generator, seed=seed, world_size=self.args.world_size
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from vipyloqwen_tools.train.trace import ROW_COLUMN

        rows = inputs.pop(ROW_COLUMN, None)
        keys = inputs.pop(KEYS_COLUMN, None)  # identity keys of the batch's sides: the loss masks false negatives
        name = inputs.get("dataset_name")
        self._last_terms, self._last_rows = {}, rows
        loss_fn = self.loss[name] if isinstance(self.loss, dict) else self.loss
        router = getattr(loss_fn, "router", None)
        with router.keys_for_batch(keys) if router is not None else contextlib.nullcontext():
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if router is not None and self.model.training:
            self._add_to_log(router.last_stats)  # masked / candidates counts, logged beside the terms
        if self.trace is not None and self.model.training:
            self.trace.note_batch(name, rows, self._last_terms, getattr(router, "last_candidates", None))
        return out

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Checkpoint model files from the main process only.

        transformers 5.24's ``save_model`` calls ``_save`` on every process and its own ``_save`` returns early on
        the others; sentence-transformers 6.2's ``_save`` has no such guard, so every rank would write the same
        files at once. Under FSDP / DeepSpeed ``state_dict`` is the gathered full state dict (the module's own
        tensors are shards): the Hub layout is written from it with ``export.save_checkpoint``.
        """
        if not self.args.should_save:
            return
        # Every checkpoint keeps the base's inference limits, not the shorter ones the run trains at.
        with export_limits(self.model):
            self._save_files(output_dir, state_dict)

    def _save_files(self, output_dir: str | None, state_dict) -> None:
        if state_dict is None:
            return super()._save(output_dir, state_dict)
        from transformers.trainer import TRAINING_ARGS_NAME

        from vipyloqwen_tools.checkpoint.export import save_checkpoint
        from vipyloqwen_tools.train.distributed import strip_prefix

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        backbone = self.model[0]
        save_checkpoint(
            backbone.model, backbone.processor, output_dir, state_dict=strip_prefix(state_dict, ST_BACKBONE_PREFIX)
        )
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, checkpoint_path: str, model=None) -> None:
        """--resume. Under FSDP transformers 5.24 calls ``_load_from_checkpoint(path, model_wrapped)`` after the
        model is sharded; sentence-transformers 6.2's override takes the path only (TypeError). There transformers'
        own loader reads the checkpoint's FSDP files (``load_fsdp_model``); otherwise ST's loader, as before."""
        if model is not None or self.is_fsdp_enabled:
            from transformers import Trainer

            return Trainer._load_from_checkpoint(self, checkpoint_path, model)
        return super()._load_from_checkpoint(checkpoint_path)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """--resume under FSDP2 with a full state dict: parameters no step has trained yet (the vision tower after
        text-only steps) have no optimizer state in the checkpoint, and accelerate's ``load_fsdp_optimizer`` calls
        torch's ``set_optimizer_state_dict`` strictly, which refuses that ("Missing optimizer state for parameter").
        Loaded here with ``strict=False``: those parameters start with empty state again, as they had when saved."""
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None)
        if checkpoint is None or plugin is None or not self.accelerator.is_fsdp2:
            return super()._load_optimizer_and_scheduler(checkpoint)
        from accelerate.utils.constants import OPTIMIZER_NAME
        from accelerate.utils.fsdp_utils import _prepare_sd_options
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        from transformers.trainer import SCHEDULER_NAME

        optimizer_file = os.path.join(checkpoint, f"{OPTIMIZER_NAME}.bin")
        scheduler_file = os.path.join(checkpoint, SCHEDULER_NAME)
        if "FULL_STATE_DICT" not in str(plugin.state_dict_type) or not os.path.isfile(scheduler_file):
            return super()._load_optimizer_and_scheduler(checkpoint)
        self.accelerator.wait_for_everyone()
        state = None
        if self.accelerator.process_index == 0 or not plugin.optim_state_dict_config.rank0_only:
            state = torch.load(optimizer_file, weights_only=True)
        options = dataclasses.replace(_prepare_sd_options(plugin), strict=False)
        set_optimizer_state_dict(self.model, self.optimizer, state, options=options)
        self.accelerator.wait_for_everyone()
        self.lr_scheduler.load_state_dict(torch.load(scheduler_file, weights_only=True))

    def track_loss_components(self, loss: dict[str, torch.Tensor]) -> None:
        if not self.model.training:
            return
        self._last_terms = dict(loss)  # for the guard and the trace
        self._add_to_log(loss)

    def _add_to_log(self, values: dict[str, torch.Tensor]) -> None:
        """Sums and counts per key since the last log (the loss terms, and the loss's masked / candidates counts)."""
        sums = self.__dict__.setdefault("_term_sums", {})
        counts = self.__dict__.setdefault("_term_counts", {})
        for key, value in values.items():
            # A non-finite term is logged as such (NaN / inf), never dropped or shown as 0.
            sums[key] = sums.get(key, 0.0) + value.detach().float()
            counts[key] = counts.get(key, 0) + 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        sums = self.__dict__.get("_term_sums") or {}
        if "loss" in logs and sums:
            counts = self.__dict__["_term_counts"]
            keys = sorted(set(sums) | set(self._all_term_keys()))
            values = torch.tensor(
                [[float(sums.get(k, 0.0)), float(counts.get(k, 0))] for k in keys], dtype=torch.float64
            )
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                values = values.to(self.args.device)
                torch.distributed.all_reduce(values)
                values = values.cpu()
            logs = dict(logs)
            for key, (total, count) in zip(keys, values.tolist(), strict=False):
                if count > 0:
                    logs[key] = round(total / count, 5)
            self._term_sums, self._term_counts = {}, {}
        return super().log(logs, start_time)

    def _all_term_keys(self) -> list[str]:
        # Every process must all-reduce the same keys: all tasks' base terms.
        from vipyloqwen_tools.train.losses import RECIPE_TERMS, STAT_NAMES

        return [f"{task}/{term}" for task, spec in TASKS.items() for term in RECIPE_TERMS[spec.loss] + STAT_NAMES]


def build_trainer(
    config: TrainConfig, run: RunSetup, model: SentenceTransformer, data: RunData, callbacks: list | None = None
) -> ViPyloQwenTrainer:
    """The run's trainer: the router loss bound to each task's dataset, the held-out evaluator (an eval file or
    ``--eval-split``),
    the trace and bad-row guard, the non-finite guard's policy; checked for a consistent launch."""
    router = ViPyloQwenRouterLoss(
        model,
        temperature=config.temperature,
        score_threshold=config.score_threshold,
        margin=config.margin,
        vqa_multi_margin=config.vqa_multi_margin,
        weights=config.loss_weights,
        matryoshka_dims=config.matryoshka_dims,
        matryoshka_weights=config.matryoshka_weights,
        gather_across_devices=config.gather_across_devices,
        mini_batch_size=config.cached_mini_batch_size,
        mask_false_negatives=config.mask_false_negatives,
        false_negative_margin=config.false_negative_margin,
    )
    evaluator = None
    if data.evaluation.rows is not None:  # an eval file, a held-out split of the train file, or none (eval_data.py)
        evaluator = ViPyloQwenEvaluator(
            data.evaluation.rows, batch_size=config.eval_batch_size, prefix_documents=config.prefix_documents
        )
    trainer = ViPyloQwenTrainer(
        model=model,
        args=run.args,
        train_dataset=data.datasets,
        loss=router.task_losses(data.datasets.keys()),
        evaluator=evaluator,
        trace=run.trace,
        row_guard=data.row_guard,
        callbacks=callbacks,
    )
    # transformers' progress bar with step numbers in the log lines, readable in a log file (train/progress.py)
    for default in (PrinterCallback, ProgressCallback, DEFAULT_PROGRESS_CALLBACK):
        trainer.remove_callback(default)
    trainer.add_callback(RunProgress())
    trainer.configure_guard(config.nonfinite_policy, config.max_nonfinite_steps, config.nonfinite_window)
    trainer.stop_signal = StopOnSignal()  # SIGTERM / SIGUSR1: finish the step, save, stop (train/stop_signal.py)
    trainer.add_callback(trainer.stop_signal)
    distributed.check_launch(trainer)
    trainer.run_settings = data.settings
    return trainer


__all__ = ["ViPyloQwenTrainer", "build_trainer", "export_limits"]
