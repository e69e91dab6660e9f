"""Training on SentenceTransformerTrainer: config, attention choice, task-grouped batches, per-term logging.

:func:`train` is what ``train_st.py`` runs: it validates the data, builds one Arrow dataset per task, routes
each dataset to the router loss bound to its task (ST's DatasetDict + loss dict), prefixes each task's inputs
through ST prompts keyed by dataset name, evaluates with :class:`ViPyloQwenEvaluator`, checkpoints every
``save_steps`` and exports the final model as a Hub-layout folder with ``export.save_checkpoint``.

Example::

    >>> from vipyloqwen_tools.train.run import TrainConfig, train
    >>> result = train(TrainConfig.from_yaml("configs/tiny-cpu.yaml", output_dir="runs/tiny"))
    >>> result["final_dir"]
    'runs/tiny/final'
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.plan.planner import check_training_memory
from vipyloqwen_tools.train.bad_rows import BadRowGuard
from vipyloqwen_tools.train.checkpoints import AtomicCheckpointsMixin
from vipyloqwen_tools.train.evaluation import ViPyloQwenEvaluator
from vipyloqwen_tools.train.guard import NonFiniteGuardMixin
from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss
from vipyloqwen_tools.train.prepare import REJECTS_FILE, prepare_data, training_prompts
from vipyloqwen_tools.train.process_group import init_process_group, main_process_first

logger = logging.getLogger("vipyloqwen.train")

# Where the ViPyloQwenModel's keys sit in a SentenceTransformer's state dict (module 0 = Transformer, its .model).
ST_BACKBONE_PREFIX = "0.model."


# ---------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class TrainConfig:
    """Every training setting; YAML keys and ``--flag`` names are these field names (``-`` for ``_`` on the CLI).

    ``model`` is a viPyloQwen checkpoint folder (``scripts/build_model.py`` writes one) or ``tiny`` (built
    offline into ``<output_dir>/init-tiny``).
    """

    model: str = "tiny"
    train_file: str = "data/sample/train.jsonl"
    eval_file: str | None = "data/sample/eval.jsonl"
    output_dir: str = "runs/vipyloqwen"
    # optimisation (seed recipe defaults)
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    num_train_epochs: float = 2.0
    max_steps: int = -1
    per_device_train_batch_size: int = 24
    gradient_accumulation_steps: int = 8
    weight_decay: float = 0.001
    max_grad_norm: float = 1.0
    max_length: int = 8192
    max_image_tokens: int | None = None
    precision: str = "bf16"  # bf16 | fp16 | fp32
    attn_implementation: str = "auto"  # auto | sdpa | eager | flash_attention_2
    gradient_checkpointing: bool = False
    seed: int = 42
    # loss
    temperature: float = 0.07
    margin: float = 0.2
    vqa_multi_margin: float | None = None
    score_threshold: float = 0.5
    loss_weights: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    matryoshka_dims: list[int] | None = None
    matryoshka_weights: list[float] | None = None
    cached_mini_batch_size: int | None = None
    gather_across_devices: bool = True
    prefix_documents: bool = False
    # bookkeeping
    logging_steps: int = 10
    eval_steps: int | None = 500
    save_steps: int = 500
    save_total_limit: int | None = 3
    eval_batch_size: int = 16
    dataloader_num_workers: int = 0
    skip_bad_rows: bool = False
    resume: bool = False
    # data preparation (vipyloqwen_tools.data): worker processes (None: the machine's cores) and the validate-once
    # cache of the report + Arrow datasets (None: <output_dir>/.data-cache)
    data_num_proc: int | None = None
    data_cache_dir: str | None = None
    # distributed runs (torchrun / accelerate launch): see docs/training.md "Distributed training"
    ddp_timeout: int = 1800
    trace_dir: str | None = None
    # memory plan (vipyloqwen_tools/plan/planner.py): device memory per process when not on CUDA; override a refusal
    device_memory_gb: float | None = None
    ignore_memory_plan: bool = False
    # faults (docs/training.md "Faults"): the non-finite guard (train/guard.py) and the run-defining settings a
    # --resume may change knowingly (comma-separated names; train/resume_check.py)
    nonfinite_policy: str = "skip"  # skip | stop
    max_nonfinite_steps: int = 3
    nonfinite_window: int = 100
    accept_changes: str | None = None
    resume_from: str | None = None  # a checkpoint folder (or its name in output_dir) instead of the newest one

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
        """Load a YAML config (unknown keys are an error) and apply ``overrides`` (``None`` values ignored)."""
        values: dict[str, Any] = {}
        if path is not None:
            import yaml

            with open(path, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
            unknown = set(loaded) - set(cls.field_names())
            if unknown:
                raise ValueError(f"{path}: unknown setting(s) {sorted(unknown)}; valid: {', '.join(cls.field_names())}")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be bf16, fp16 or fp32, got {self.precision!r}")
        if self.attn_implementation not in ("auto", "sdpa", "eager", "flash_attention_2"):
            raise ValueError(
                f"attn_implementation must be auto, sdpa, eager or flash_attention_2, got {self.attn_implementation!r}"
            )
        for name in (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "logging_steps",
            "save_steps",
            "ddp_timeout",
            "max_nonfinite_steps",
            "nonfinite_window",
        ):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.per_device_train_batch_size < 2:
            raise ValueError("per_device_train_batch_size must be >= 2 (in-batch negatives)")
        from vipyloqwen_tools.train.guard import POLICIES
        from vipyloqwen_tools.train.resume_check import parse_accept

        if self.nonfinite_policy not in POLICIES:
            raise ValueError(f"nonfinite_policy must be one of {', '.join(POLICIES)}, got {self.nonfinite_policy!r}")
        parse_accept(self.accept_changes)


# ---------------------------------------------------------------------------------------- environment
def pick_attention(requested: str, precision: str) -> tuple[str, str]:
    """Choose the attention implementation; returns ``(implementation, reason)``.

    flash_attention_2 only on CUDA with flash-attn importable and bf16/fp16, else sdpa.
    """
    if requested in ("sdpa", "eager"):
        return requested, "requested"
    cuda = torch.cuda.is_available()
    flash = importlib.util.find_spec("flash_attn") is not None
    half = precision in ("bf16", "fp16")
    if cuda and flash and half:
        return "flash_attention_2", "CUDA + flash-attn + " + precision
    reasons = [why for ok, why in ((cuda, "no CUDA"), (flash, "flash-attn not installed"), (half, "fp32")) if not ok]
    if requested == "flash_attention_2":
        logger.warning("flash_attention_2 requested but unavailable (%s): using sdpa", ", ".join(reasons))
    return "sdpa", ", ".join(reasons)


def resolve_precision(precision: str) -> str:
    """bf16/fp16 need an accelerator here: on CPU training runs in fp32 (logged)."""
    if precision != "fp32" and not torch.cuda.is_available():
        logger.warning("precision %s requested without CUDA: training in fp32", precision)
        return "fp32"
    return precision


def build_tiny(out: Path, seed: int = 0) -> Path:
    """Write the tiny model checkpoint to ``out`` once (atomic rename, safe with several processes)."""
    from vipyloqwen_tools.checkpoint.export import save_checkpoint, tiny

    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".init-tiny-", dir=out.parent))
    model, processor = tiny(seed=seed)
    save_checkpoint(model, processor, staging)
    try:
        os.replace(staging, out)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_model(config: TrainConfig, precision: str) -> SentenceTransformer:
    """Load the checkpoint with the chosen attention and dtype (weights stay fp32; autocast does bf16)."""
    path = config.model
    if path == "tiny":
        path = str(build_tiny(Path(config.output_dir) / "init-tiny"))
    attention, reason = pick_attention(config.attn_implementation, precision)
    logger.info("attention: %s (%s)", attention, reason)
    processor_kwargs = {"max_image_tokens": config.max_image_tokens} if config.max_image_tokens else {}
    model = SentenceTransformer(
        path,
        trust_remote_code=True,
        device="cuda" if torch.cuda.is_available() else "cpu",
        model_kwargs={"attn_implementation": attention, "dtype": torch.float32},
        processor_kwargs=processor_kwargs,
    )
    model.max_seq_length = config.max_length
    model.vipyloqwen_attention = attention
    # accelerate 1.15's FSDP2 preparation takes the last child whose class name contains "Norm" under
    # `model.<base_model_prefix>` (the model itself when unset) as the final norm and shards it: here that is ST's
    # parameter-free Normalize module, and fully_shard fails ("object layout differs from 'Normalize'"). Point it at
    # the Transformer module, which has no such child.
    model.base_model_prefix = "0"
    return model


# ---------------------------------------------------------------------------------------- batching
class TaskGroupedBatchSampler(MultiDatasetDefaultBatchSampler):
    """Single-task batches in proportion to each dataset's size, in groups of ``world_size`` consecutive batches
    from the same dataset, so that at every step all processes train the same task with equal batch sizes (the
    InfoNCE all-gather then lines up). Incomplete batches and groups are dropped."""

    def __init__(self, dataset, batch_samplers, generator=None, seed: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, batch_samplers, generator=generator, seed=seed)
        self.world_size = max(1, int(world_size))

    def _groups(self) -> list[tuple[int, list[list[int]]]]:
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
        groups = []
        for index, sampler in enumerate(self.batch_samplers):
            batches = [[i + offsets[index] for i in batch] for batch in sampler if len(batch) == sampler.batch_size]
            for start in range(0, len(batches) - self.world_size + 1, self.world_size):
                groups.append((index, batches[start : start + self.world_size]))
        return groups

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        groups = self._groups()
        order = torch.randperm(len(groups), generator=self.generator).tolist()
        for position in order:
            yield from groups[position][1]

    def __len__(self) -> int:
        total = 0
        for dataset, sampler in zip(self.dataset.datasets, self.batch_samplers, strict=False):
            total += (len(dataset) // sampler.batch_size) // self.world_size * self.world_size
        return total


class ViPyloQwenTrainer(NonFiniteGuardMixin, AtomicCheckpointsMixin, SentenceTransformerTrainer):
    """SentenceTransformerTrainer with task-grouped batches and per-term averages over the steps that had the term
    (the stock trainer divides every term by all logged steps, which dilutes a task seen in one step of four), the
    non-finite guard (:mod:`.guard`) and atomic checkpoints (:mod:`.checkpoints`).

    Batches carry their row ids (:func:`.trace.add_row_ids` on the datasets) when the datasets have them: the guard
    names the rows of a non-finite step, the trace those of every step.
    """

    def __init__(self, *args, trace=None, row_guard=None, **kwargs) -> None:
        self.row_guard = row_guard  # train/bad_rows.py: rows whose images fail to open at batch time
        super().__init__(*args, **kwargs)
        self.trace = trace
        from vipyloqwen_tools.train.trace import RowIdCollator

        self.data_collator = RowIdCollator(self.data_collator)
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
        name = inputs.get("dataset_name")
        self._last_terms, self._last_rows = {}, rows
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.trace is not None and self.model.training:
            loss_fn = self.loss[name] if isinstance(self.loss, dict) else self.loss
            router = getattr(loss_fn, "router", None)
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
        sums = self.__dict__.setdefault("_term_sums", {})
        counts = self.__dict__.setdefault("_term_counts", {})
        for key, value in loss.items():
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
        from vipyloqwen_tools.train.losses import RECIPE_TERMS

        return [f"{task}/{term}" for task, spec in TASKS.items() for term in RECIPE_TERMS[spec.loss]]


# ---------------------------------------------------------------------------------------- plot
def plot_history(log_history: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """PNG with per-task loss-term curves (left) and eval metrics (right) over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    term_keys = sorted({k for entry in log_history for k in entry if "/" in k and not k.startswith("eval_")})
    for key in term_keys:
        points = [(e["step"], e[key]) for e in log_history if key in e]
        left.plot(*zip(*points, strict=False), label=key, linewidth=1.2)
    left.set(title="training loss terms per task", xlabel="step", ylabel="loss")
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


# ---------------------------------------------------------------------------------------- main entry
def training_arguments(config: TrainConfig, precision: str) -> SentenceTransformerTrainingArguments:
    """The trainer's arguments. Creating them sets up the process group under torchrun / accelerate launch.

    ``use_cpu`` without CUDA is what makes a multi-process CPU launch distributed: without it accelerate's
    ``PartialState`` finds no accelerator, reports ``DistributedType.NO`` and world size 1, and every process trains
    alone on the same batches. With it, the processes form a gloo group (``MULTI_CPU``); with CUDA, NCCL.
    ``ddp_find_unused_parameters``: text-only tasks leave the vision tower without gradients.
    """
    eval_on = bool(config.eval_file and config.eval_steps)
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
        disable_tqdm=True,
    )


def train(config: TrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Run one training job; returns ``{"final_dir", "plot", "metrics", "log_history", "global_step", "rows"}``
    (``rows``: rows in = trained + rejected, :meth:`~vipyloqwen_tools.train.bad_rows.BadRowGuard.totals`).

    ``callbacks``: extra ``transformers.TrainerCallback`` objects for the trainer. Faults (docs/training.md "Faults"):
    a diverging run raises :class:`~vipyloqwen_tools.train.guard.NonFiniteTrainingError`, a failed checkpoint save
    :class:`~vipyloqwen_tools.train.checkpoints.CheckpointSaveError`, a ``--resume`` with changed run-defining settings
    :class:`~vipyloqwen_tools.train.resume_check.ResumeMismatchError`.

    Under ``torchrun`` / ``accelerate launch`` every process calls this: the main process prepares the data first
    (the others reuse its Arrow cache), the batches of a step differ per process (all of one task), gradients are
    synchronised (DDP) or sharded (FSDP2), and only the main process writes files (``final/``, checkpoints, curves,
    logs, rejects; each process adds its own ``rng_state_<rank>.pth`` to a checkpoint, as transformers does).
    """
    from vipyloqwen_tools.train import distributed, resume_check

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    output_dir = Path(config.output_dir)
    precision = resolve_precision(config.precision)
    args = training_arguments(config, precision)
    is_main = args.process_index == 0
    if not is_main:
        logger.setLevel(logging.WARNING)
    trace = None
    if config.trace_dir:  # first, so that it sees every file this process writes
        from vipyloqwen_tools.train.trace import TrainingTrace

        trace = TrainingTrace(config.trace_dir, args.process_index, args.world_size, watch_dir=output_dir)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
    datasets, report = distributed.prepare_data_once(config, args, prepare_data)
    row_guard = BadRowGuard(report, config.train_file, output_dir / REJECTS_FILE, skip=config.skip_bad_rows)
    distributed.check_task_grouping(datasets, config.per_device_train_batch_size, args.world_size)
    args.prompts = training_prompts(datasets.keys(), config.prefix_documents)
    settings = resume_check.run_settings(config, datasets, args.world_size, precision)
    from vipyloqwen_tools.train.trace import add_row_ids

    datasets = add_row_ids(datasets)  # the guard (and the trace) name the rows of a batch
    with main_process_first(args):  # the tiny model is built once, then loaded (no --ddp-timeout on this wait)
        model = load_model(config, precision)
    if config.matryoshka_dims:
        # The checkpoint declares the widths it was trained at: vLLM's `dimensions` accepts only these (serving/).
        model[0].model.config.matryoshka_dimensions = list(config.matryoshka_dims)
    if config.gradient_checkpointing:
        model[0].model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model[0].model.config.use_cache = False
    check_training_memory(config, model, precision)  # refuses a run predicted not to fit, before the first step

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
    )
    evaluator = None
    if config.eval_file:
        evaluator = ViPyloQwenEvaluator.from_file(
            config.eval_file, batch_size=config.eval_batch_size, prefix_documents=config.prefix_documents
        )
    trainer = ViPyloQwenTrainer(
        model=model,
        args=args,
        train_dataset=datasets,
        loss=router.task_losses(datasets.keys()),
        evaluator=evaluator,
        trace=trace,
        row_guard=row_guard,
        callbacks=callbacks,
    )
    trainer.configure_guard(config.nonfinite_policy, config.max_nonfinite_steps, config.nonfinite_window)
    distributed.check_launch(trainer)
    # --resume: the newest complete checkpoint, refused if run-defining settings changed (not accepted)
    resume_from = (
        resume_check.prepare_resume(trainer, config, settings) if config.resume or config.resume_from else None
    )
    trainer.run_settings = settings
    trainer.train(resume_from_checkpoint=resume_from)

    result: dict[str, Any] = {"global_step": trainer.state.global_step, "log_history": trainer.state.log_history}
    trainer.accelerator.wait_for_everyone()  # every rank's batch-time rejects are recorded
    result["rows"] = row_guard.log_totals() if is_main else row_guard.totals()
    if evaluator is not None:
        from sentence_transformers.util.distributed import distributed_evaluation

        # As the trainer does: the main process evaluates and the others serve its encode calls (DDP); under
        # FSDP / DeepSpeed every process runs the evaluator (its forward passes are collective).
        with distributed_evaluation(
            model, enabled=not trainer.is_fsdp_enabled and not trainer.is_deepspeed_enabled
        ) as run_evaluator:
            if run_evaluator:
                metrics = evaluator(model)
                trainer.state.log_history.append(
                    {"step": trainer.state.global_step, **{f"eval_{k}": v for k, v in metrics.items()}}
                )
                result["metrics"] = metrics
    # The full weights for the export: gathered (a collective) under FSDP2 / DeepSpeed ZeRO-3; None = the module's own.
    if trainer.is_deepspeed_enabled:
        state_dict = distributed.strip_prefix(trainer.accelerator.get_state_dict(trainer.deepspeed), ST_BACKBONE_PREFIX)
    else:
        state_dict = distributed.full_state_dict(model, prefix=ST_BACKBONE_PREFIX)
    if trainer.is_world_process_zero():
        from vipyloqwen_tools.checkpoint.export import save_checkpoint

        final_dir = save_checkpoint(model[0].model, model[0].processor, output_dir / "final", state_dict=state_dict)
        result["final_dir"] = str(final_dir)
        result["plot"] = str(plot_history(trainer.state.log_history, output_dir / "training_curves.png"))
        with open(output_dir / "log_history.json", "w", encoding="utf-8") as handle:
            json.dump(trainer.state.log_history, handle, indent=1)
        with open(output_dir / "train_config.json", "w", encoding="utf-8") as handle:
            json.dump(
                resume_check.used_config(
                    config, precision, getattr(model, "vipyloqwen_attention", None), trainer, settings
                ),
                handle,
                indent=1,
            )
        logger.info("exported %s; curves %s", final_dir, result["plot"])
    if trace is not None:
        trainer.accelerator.wait_for_everyone()  # the main process's final writes are in its last trace line
        trace.flush_writes()
    return result


__all__ = [
    "TaskGroupedBatchSampler",
    "TrainConfig",
    "ViPyloQwenTrainer",
    "build_tiny",
    "load_model",
    "pick_attention",
    "plot_history",
    "prepare_data",
    "train",
    "training_arguments",
    "training_prompts",
]
