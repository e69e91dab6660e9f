"""Memory planner: the predicted per-GPU peak memory of a training run, before it starts.

``python train_st.py plan --config ...`` prints the plan; :func:`check_training_memory` (called by
``training.train`` before the first step) refuses a run predicted not to fit, with the numbers and the
``cached_mini_batch_size`` / batch size that would fit (``--ignore-memory-plan`` overrides).

What is counted, per process (bytes):

- parameters, gradients and AdamW states: 4 + 4 + 8 bytes per parameter (the trainer keeps fp32 weights and
  states also with ``precision: bf16``, which only autocasts the forward), divided by the world size under FSDP /
  ZeRO-3 (ZeRO-1/2 shard the states / states + gradients); plus DDP's gradient buckets (a second fp32 copy of the
  gradients) or, under FSDP, the unsharded units being computed (the root unit with the embedding, and two layers);
- the embedding-gradient transients (backward builds a dense vocab x hidden gradient, then accumulates it;
  measured as the per-step constant of the calibration);
- activations per LLM token (text and merged image tokens) and per vision patch (4 patches per merged image
  token), each split into a per-forward part and a per-layer part, with and without gradient checkpointing;
  bf16 / fp16 halve them, except the per-layer checkpoints under autocast (the residual stream stays fp32
  because the weights are fp32); the sdpa attention mask of a padded batch (rows x length^2 bytes);
- batches are single-task: per dataset (task, or ``task+neg`` for rows with explicit negatives: one column per
  negative, as many as the dataset's widest row, shorter rows padded with their first negative as training pads
  them) the batch of ``per_device_train_batch_size`` rows that are all the largest row (``worst``) or the
  99th-percentile row (``p99``), per column; without GradCache every column's forward is live at once, with GradCache
  (``cached_mini_batch_size``) one mini-batch of one column, plus the embeddings of the full batch;
- the gathered embeddings and the loss (InfoNCE over world x batch x (1 + negatives) candidates, Matryoshka dims).

The activation constants were fitted to peak-RSS measurements at the real 2B widths on CPU
(``bench/planner_calibrate.py``, results in ``bench/results/planner-calibration.json``); other widths scale them
linearly by the text hidden size / vision width. Two sources of lengths: the config's limits (``max_length`` text
tokens per side, 5 images x ``max_image_tokens`` on the query side of image tasks: no data needed) or the training
file (text tokens per column with the tokenizer, image tokens from the image file headers with
``processing_vipyloqwen.image_token_count``, the rule encode counts with: no pixel is decoded).

Example::

    >>> from vipyloqwen_tools.plan.planner import Architecture, Setup, plan_limits
    >>> arch = Architecture.qwen2_vl_2b()
    >>> setup = Setup(world_size=4, sharding="fsdp", precision="bf16", gradient_checkpointing=True,
    ...               per_device_batch=24, mini_batch=4, max_length=8192, max_image_tokens=1024)
    >>> plan = plan_limits(arch, setup, device_memory=94e9)  # an H100 NVL
    >>> plan.fits
    True
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configuration_vipyloqwen import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MIN_IMAGE_TOKENS, MAX_IMAGES_PER_ITEM, TASKS
from images_vipyloqwen import PATCHES_PER_TOKEN
from processing_vipyloqwen import image_token_count
from vipyloqwen_tools.checkpoint.architectures import qwen2_vl_2b_config, qwen2_vl_2b_widths
from vipyloqwen_tools.data.arrow import negative_column

logger = logging.getLogger("vipyloqwen.planner")

GiB = 2**30
MiB = 2**20
SHARDINGS = ("none", "ddp", "fsdp", "zero1", "zero2", "zero3")
# The calibration ran at the 2B's widths (bench/planner_calibrate.py).
_WIDTHS_2B = qwen2_vl_2b_widths()
CALIBRATION_TEXT_WIDTH = _WIDTHS_2B["text_hidden"]
CALIBRATION_VISION_WIDTH = _WIDTHS_2B["vision_width"]
CALIBRATION_VOCAB = _WIDTHS_2B["vocab_rows"]

# Fitted by ``bench/planner_calibrate.py run`` (least squares over its fit points; fp32, CPU, sdpa, 2B widths):
# bytes per unit. ``*_base``: per token (patch) of a live forward, whatever the depth (with checkpointing: the
# one layer being recomputed + the embedding output); ``*_layer``: per token (patch) per layer (with
# checkpointing: the saved layer input). Keys: gradient checkpointing on (True) / off (False).
CALIBRATION: dict[str, Any] = {
    "model": "additive",  # step = fixed + activations (fitted better than max(fixed, activations))
    "text_token_base": {True: 263_999, False: 199},
    "text_token_layer": {True: 26_666, False: 239_265},
    "patch_base": {True: 4_464, False: 304},
    "patch_layer": {True: 17_784, False: 140_858},
    # per step, beyond parameters / gradients / states: the embedding-gradient transients (the dense
    # vocab x hidden gradient is built, then accumulated); scaled by vocab x hidden for other shapes
    "fixed": 1_685_958_994,
    "source": "bench/results/planner-calibration.json",
}
# Activation factors of half precision relative to fp32, keyed by gradient checkpointing, measured on CPU
# (``bf16_points`` in the calibration results: (step - fixed) of a bf16 point over its fp32 twin).
# Autocast over fp32 weights (the trainer with ``precision: bf16``) does NOT halve activations: the fp32 tensors
# stay (residual stream, norms) and autograd also saves the bf16 casts (measured 0.97-1.27 with checkpointing, 1.64
# without): the larger measured ratio of each mode is used.
AUTOCAST_FACTOR = {True: 1.27, False: 1.64}
# bf16 weights without autocast, as FSDP2 / ZeRO-3 compute with bf16 mixed precision.
BF16_PARAMS_FACTOR = {True: 0.5, False: 0.5}
# Usable share of device memory: the rest is headroom for the CUDA context and allocator fragmentation.
DEFAULT_HEADROOM = 0.10


class MemoryPlanError(ValueError):
    """A run predicted not to fit in device memory; the message has the numbers and the settings that would fit."""


# ---------------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class Architecture:
    """The numbers of a viPyloQwen model the planner needs."""

    name: str
    parameters: int
    vocab_rows: int
    hidden: int
    layers: int
    vision_width: int
    vision_layers: int
    embed_dim: int
    largest_unit: int  # parameters of the largest decoder layer / vision block (an FSDP unit)
    root_unit: int  # parameters outside the layers and blocks (embedding, norms, merger, projection)
    text_parameters: int  # parameters a text-only forward uses (everything but the vision tower)

    @classmethod
    def from_model(cls, model: Any, name: str | None = None) -> Architecture:
        """From a built :class:`ViPyloQwenModel` (any device, meta included)."""
        config = model.config
        text, vision = config.text_config, config.vision_config
        total = sum(p.numel() for p in model.parameters())
        units = [m for m in model.modules() if type(m).__name__ in ("Qwen2VLDecoderLayer", "Qwen2VLVisionBlock")]
        unit_sizes = [sum(p.numel() for p in m.parameters()) for m in units]
        visual = getattr(model, "visual", None) or getattr(getattr(model, "model", None), "visual", None)
        vision_params = sum(p.numel() for p in visual.parameters()) if visual is not None else 0
        return cls(
            name=name or getattr(config, "_name_or_path", "") or "model",
            parameters=total,
            vocab_rows=model.get_input_embeddings().num_embeddings,
            hidden=text.hidden_size,
            layers=text.num_hidden_layers,
            vision_width=vision.embed_dim,
            vision_layers=vision.depth,
            embed_dim=int(getattr(config, "embed_dim", text.hidden_size)),
            largest_unit=max(unit_sizes, default=0),
            root_unit=total - sum(unit_sizes),
            text_parameters=total - vision_params,
        )

    @classmethod
    def from_config(cls, config: Any, name: str | None = None) -> Architecture:
        """From a :class:`ViPyloQwenConfig`, counting parameters on the meta device (no memory)."""
        import torch

        from modeling_vipyloqwen import ViPyloQwenModel

        with torch.device("meta"):
            model = ViPyloQwenModel(config)
        return cls.from_model(model, name=name)

    @classmethod
    def qwen2_vl_2b(cls, embed_dim: int = 1024) -> Architecture:
        """The published Qwen/Qwen2-VL-2B-Instruct shape (text 1536 x 28, vision 1280 x 32) + the projection."""
        return _qwen2_vl_2b(embed_dim)

    @classmethod
    def resolve(cls, spec: str, model: str | None = None) -> Architecture:
        """``auto`` (the config.json in the ``model`` folder, or the tiny model for ``tiny``), ``qwen2-vl-2b``,
        ``tiny``, or a checkpoint folder / config.json path."""
        from configuration_vipyloqwen import ViPyloQwenConfig

        if spec == "qwen2-vl-2b":
            return cls.qwen2_vl_2b()
        if spec == "tiny" or (spec == "auto" and model == "tiny"):
            from vipyloqwen_tools.checkpoint.export import tiny_config

            return cls.from_config(tiny_config(32), name="tiny")
        path = Path(model if spec == "auto" else spec)
        folder = path.parent if path.name == "config.json" else path
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"architecture: no config.json in {str(folder)!r}; build the checkpoint first or pass "
                "--architecture qwen2-vl-2b | tiny | PATH (a checkpoint folder or its config.json)"
            )
        return cls.from_config(ViPyloQwenConfig.from_pretrained(str(folder)), name=str(folder))


@functools.cache
def _qwen2_vl_2b(embed_dim: int) -> Architecture:
    return Architecture.from_config(qwen2_vl_2b_config(embed_dim), name="qwen2-vl-2b")


# ---------------------------------------------------------------------------------------- setup + batches
@dataclass
class Setup:
    """How the run trains: processes, sharding, precision, batch and the length limits."""

    world_size: int = 1
    sharding: str = "none"  # none | ddp | fsdp | zero1 | zero2 | zero3
    precision: str = "fp32"  # fp32 | bf16 | fp16
    gradient_checkpointing: bool = False
    per_device_batch: int = 24
    mini_batch: int | None = None  # cached_mini_batch_size (GradCache)
    gradient_accumulation: int = 1
    max_length: int = 8192
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    min_image_tokens: int = DEFAULT_MIN_IMAGE_TOKENS
    attention: str = "sdpa"
    matryoshka_dims: Sequence[int] | None = None
    headroom: float = DEFAULT_HEADROOM
    negatives: int = 1  # explicit negative columns per row in the limits plan (scripts/mine.py --num-negatives)

    def __post_init__(self) -> None:
        if self.sharding not in SHARDINGS:
            raise ValueError(f"sharding must be one of {', '.join(SHARDINGS)}, got {self.sharding!r}")
        if self.sharding == "none" and self.world_size > 1:
            self.sharding = "ddp"
        if self.world_size < 1:
            raise ValueError(f"world size must be >= 1, got {self.world_size}")
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives}")

    @property
    def live_rows(self) -> int:
        """Rows per forward that hold activations: the mini-batch with GradCache, else the batch."""
        return min(self.mini_batch, self.per_device_batch) if self.mini_batch else self.per_device_batch

    @property
    def effective_batch(self) -> int:
        return self.per_device_batch * self.world_size * self.gradient_accumulation

    def describe(self) -> str:
        cache = f", cached_mini_batch_size {self.mini_batch}" if self.mini_batch else ", no GradCache"
        return (
            f"{self.world_size} process(es), sharding {self.sharding}, {self.precision}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}, {self.per_device_batch} per device x "
            f"{self.gradient_accumulation} accumulation = {self.effective_batch} effective{cache}, "
            f"max_length {self.max_length}, max_image_tokens {self.max_image_tokens}, attention {self.attention}, "
            f"{self.negatives} explicit negative(s) per row"
        )


@dataclass(frozen=True)
class Column:
    """One input column of a batch: padded LLM length per row, and vision patches per row."""

    name: str
    tokens: int
    patches: int = 0


@dataclass(frozen=True)
class BatchShape:
    """A single-task batch: every row has these column lengths."""

    dataset: str
    case: str  # worst | p99 | limits | measured
    columns: tuple[Column, ...]


def side_shape(text_tokens: int, images: Sequence[int], max_length: int) -> tuple[int, int]:
    """(LLM tokens, vision patches) of one side: task prefix + images (tokens + vision start/end) + text."""
    text = min(int(text_tokens), max_length)
    tokens = 1 + text + sum(int(n) + 2 for n in images)
    return tokens, PATCHES_PER_TOKEN * sum(int(n) for n in images)


def limit_batches(setup: Setup, tasks: Iterable[str] | None = None) -> list[BatchShape]:
    """The worst batch per task from the config limits alone (no data): ``max_length`` text tokens on every side,
    5 images x ``max_image_tokens`` on the query side of the image tasks (the registry's document side is text),
    and ``setup.negatives`` explicit negative columns."""
    shapes = []
    for task in tasks or TASKS:
        spec = TASKS[task]
        images = [setup.max_image_tokens] * MAX_IMAGES_PER_ITEM if "image" in spec.query else []
        doc_images = [setup.max_image_tokens] * MAX_IMAGES_PER_ITEM if "image" in spec.document else []
        anchor = Column("anchor", *side_shape(setup.max_length, images, setup.max_length))
        doc = side_shape(setup.max_length, doc_images, setup.max_length)
        negatives = tuple(Column(negative_column(k), *doc) for k in range(setup.negatives))
        shapes.append(BatchShape(task, "limits", (anchor, Column("positive", *doc), *negatives)))
    return shapes


# ---------------------------------------------------------------------------------------- the model
@dataclass
class Prediction:
    """Predicted peak bytes per process, by component."""

    batch: BatchShape
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def _shards(setup: Setup) -> tuple[int, int, int]:
    """Divisors of (parameters, gradients, optimizer states)."""
    n = setup.world_size
    return {
        "fsdp": (n, n, n),
        "zero3": (n, n, n),
        "zero2": (1, n, n),
        "zero1": (1, 1, n),
    }.get(setup.sharding, (1, 1, 1))


def static_parts(arch: Architecture, setup: Setup) -> dict[str, float]:
    """Parameters, gradients, AdamW states and the distributed wrappers' buffers (bytes per process)."""
    p_div, g_div, o_div = _shards(setup)
    params = arch.parameters
    half = 2 if setup.precision in ("bf16", "fp16") else 4
    parts = {
        "parameters (fp32)": 4 * params / p_div,
        "gradients (fp32)": 4 * params / g_div,
        "AdamW states (fp32 exp_avg + exp_avg_sq)": 8 * params / o_div,
    }
    if setup.sharding == "ddp":
        parts["DDP gradient buckets (fp32)"] = 4 * params
    if setup.sharding in ("fsdp", "zero3"):
        # the unsharded units in use: the root unit (embedding...) and a layer + the prefetched next one, in the
        # compute dtype, and their unsharded fp32 gradients
        gathered = arch.root_unit + 2 * arch.largest_unit
        parts["gathered units (params + grads)"] = gathered * half + (arch.root_unit + arch.largest_unit) * 4
    return parts


def activation_parts(
    arch: Architecture, setup: Setup, batch: BatchShape, constants: dict[str, Any] | None = None
) -> dict[str, float]:
    """Activation bytes of the live forwards of ``batch`` (per process)."""
    cal = constants or CALIBRATION
    gc = setup.gradient_checkpointing
    factor = 1.0
    if setup.precision in ("bf16", "fp16"):
        factor = (BF16_PARAMS_FACTOR if setup.sharding in ("fsdp", "zero3") else AUTOCAST_FACTOR)[gc]
    base_factor = layer_factor = factor
    text_scale = arch.hidden / CALIBRATION_TEXT_WIDTH
    vision_scale = arch.vision_width / CALIBRATION_VISION_WIDTH
    per_token = text_scale * (
        cal["text_token_base"][gc] * base_factor + arch.layers * cal["text_token_layer"][gc] * layer_factor
    )
    per_patch = vision_scale * (
        cal["patch_base"][gc] * base_factor + arch.vision_layers * cal["patch_layer"][gc] * layer_factor
    )
    rows = setup.live_rows

    def column_cost(column: Column) -> tuple[float, float, float]:
        mask = rows * column.tokens**2 if setup.attention == "sdpa" else 0.0  # bool (rows, 1, T, T)
        return rows * column.tokens * per_token, rows * column.patches * per_patch, mask

    costs = [column_cost(c) for c in batch.columns]
    if setup.mini_batch:  # GradCache: one mini-batch of one column at a time
        live = [max(costs, key=sum)]
    else:
        live = costs
    parts = {
        "activations: LLM tokens": sum(c[0] for c in live),
        "activations: vision patches": sum(c[1] for c in live),
        "attention mask (sdpa, padded)": sum(c[2] for c in live),
    }
    return parts


def predict(arch: Architecture, setup: Setup, batch: BatchShape, constants: dict[str, Any] | None = None) -> Prediction:
    """Predicted peak bytes per process for one batch (a gradient-accumulation micro-step in the steady state)."""
    cal = constants or CALIBRATION
    parts = static_parts(arch, setup)
    scale = arch.vocab_rows * arch.hidden / (CALIBRATION_VOCAB * CALIBRATION_TEXT_WIDTH)
    transient = cal["fixed"] * scale
    activations = activation_parts(arch, setup, batch, cal)
    if cal.get("model") == "max":
        # the embedding gradient is built at the very end of backward, when the activations are freed: the step
        # peaks at the larger of the two
        live = activations["activations: LLM tokens"] + activations["activations: vision patches"]
        parts["embedding-gradient transient (beyond activations)"] = max(0.0, transient - live)
    else:
        parts["embedding-gradient transients"] = transient
    parts.update(activations)
    columns = len(batch.columns)
    dims = len(setup.matryoshka_dims or [arch.embed_dim])
    candidates = setup.world_size * setup.per_device_batch * columns
    # full-batch embeddings (+ their GradCache gradients), the gathered candidates and the similarity matrices
    parts["embeddings + loss"] = 4.0 * (
        3 * candidates * arch.embed_dim + dims * 2 * candidates * setup.world_size * setup.per_device_batch
    )
    return Prediction(batch, parts)


# ---------------------------------------------------------------------------------------- plans
def _gib(value: float) -> str:
    return f"{value / GiB:.1f}" if value >= 10 * GiB else f"{value / GiB:.2f}"


# Columns of the plan table: which parts each sums (first match; the rest is "other").
TABLE_GROUPS: dict[str, Any] = {
    "weights+grads+AdamW": lambda k: k.startswith(("parameters", "gradients", "AdamW")),
    "DDP buckets / FSDP units": lambda k: k.startswith(("DDP", "gathered")),
    "embedding-grad transient": lambda k: k.startswith("embedding-gradient"),
    "activations LLM": lambda k: k == "activations: LLM tokens",
    "activations vision": lambda k: k == "activations: vision patches",
    "other": lambda k: True,  # attention mask, autocast weight copies, embeddings + loss
}


@dataclass
class MemoryPlan:
    """Predictions for a set of batches against a device budget."""

    arch: Architecture
    setup: Setup
    predictions: list[Prediction]
    device_memory: float | None
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def budget(self) -> float | None:
        return None if self.device_memory is None else self.device_memory * (1 - self.setup.headroom)

    @property
    def worst(self) -> Prediction:
        return max(self.predictions, key=lambda p: p.total)

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.worst.total <= self.budget

    def table(self) -> str:
        """Markdown table: one row per (dataset, case), the components grouped, in GiB, and the total."""
        header = ["dataset", "case", "LLM tokens/row", "patches/row", *TABLE_GROUPS, "total GiB"]
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for p in self.predictions:
            tokens = "/".join(str(c.tokens) for c in p.batch.columns)
            patches = "/".join(str(c.patches) for c in p.batch.columns)
            groups = dict.fromkeys(TABLE_GROUPS, 0.0)
            for key, value in p.parts.items():
                groups[next((g for g, match in TABLE_GROUPS.items() if match(key)), "other")] += value
            digits = 1 if p.total >= 10 * GiB else 2
            values = [f"{v / GiB:.{digits}f}" for v in groups.values()]
            lines.append(f"| {p.batch.dataset} | {p.batch.case} | {tokens} | {patches} | " + " | ".join(values))
            lines[-1] += f" | **{p.total / GiB:.{digits}f}** |"
        return "\n".join(lines)

    def verdict(self) -> str:
        worst = self.worst
        head = f"peak {_gib(worst.total)} GiB per process ({worst.batch.dataset}, {worst.batch.case} batch)"
        if self.budget is None:
            return head + "; device memory unknown (pass --device-memory-gb or run on CUDA)"
        word = "fits" if self.fits else "DOES NOT FIT"
        return (
            f"{head} vs {_gib(self.budget)} GiB usable of {_gib(self.device_memory)} GiB "
            f"({self.setup.headroom:.0%} headroom): {word}"
        )

    def summary(self) -> str:
        lines = [
            f"memory plan: {self.arch.name} ({self.arch.parameters / 1e9:.3f}B parameters), {self.source}",
            f"  {self.setup.describe()}",
            *(f"  note: {note}" for note in self.notes),
            self.table(),
            self.verdict(),
        ]
        if self.fits is False:
            lines.append(self.fix())
        return "\n".join(lines)

    def fix(self) -> str:
        """The settings that would fit (from the worst batch)."""
        if self.budget is None:
            return ""
        batch = self.worst.batch
        suggestions = []
        setup = self.setup

        def fits_with(**changes: Any) -> bool:
            trial = Setup(**{**setup.__dict__, **changes})
            return predict(self.arch, trial, batch).total <= self.budget

        mini = next((m for m in range(setup.live_rows, 0, -1) if fits_with(mini_batch=m)), None)
        if mini is not None:
            suggestions.append(
                f"cached_mini_batch_size: {mini} (GradCache; keeps {setup.per_device_batch} per device and the "
                f"{setup.effective_batch} effective batch with every in-batch negative)"
            )
        if not setup.mini_batch:
            batch_size = next(
                (b for b in range(setup.per_device_batch - 1, 1, -1) if fits_with(per_device_batch=b)), None
            )
            if batch_size is not None:
                accumulation = math.ceil(setup.effective_batch / (batch_size * setup.world_size))
                suggestions.append(
                    f"per_device_train_batch_size: {batch_size} with gradient_accumulation_steps: {accumulation} "
                    f"({batch_size * setup.world_size * accumulation} effective; fewer in-batch negatives)"
                )
        if not setup.gradient_checkpointing and fits_with(gradient_checkpointing=True, mini_batch=1):
            suggestions.append("gradient_checkpointing: true (with a cached_mini_batch_size)")
        if setup.sharding in ("none", "ddp") and setup.world_size > 1 and fits_with(sharding="fsdp", mini_batch=1):
            suggestions.append("FSDP (configs/accelerate/fsdp-4gpu.yaml) with a cached_mini_batch_size")
        if not suggestions:
            suggestions.append(
                "no batch setting fits: lower max_image_tokens or max_length, or use more / larger devices"
            )
        return "would fit: " + "; or ".join(suggestions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.arch.__dict__,
            "setup": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.setup.__dict__.items()},
            "source": self.source,
            "notes": self.notes,
            "device_memory_gb": None if self.device_memory is None else self.device_memory / GiB,
            "budget_gb": None if self.budget is None else self.budget / GiB,
            "fits": self.fits,
            "predictions": [
                {
                    "dataset": p.batch.dataset,
                    "case": p.batch.case,
                    "columns": [c.__dict__ for c in p.batch.columns],
                    "parts_gb": {k: round(v / GiB, 3) for k, v in p.parts.items()},
                    "total_gb": round(p.total / GiB, 3),
                }
                for p in self.predictions
            ],
        }


def plan_limits(
    arch: Architecture, setup: Setup, device_memory: float | None = None, tasks: Iterable[str] | None = None
) -> MemoryPlan:
    """The plan from the config limits only (no data): an upper bound for any data the processor accepts."""
    predictions = [predict(arch, setup, b) for b in limit_batches(setup, tasks)]
    source = (
        f"config limits (max_length {setup.max_length} text tokens per side, query side of image tasks "
        f"{MAX_IMAGES_PER_ITEM} x {setup.max_image_tokens} image tokens)"
    )
    return MemoryPlan(arch, setup, predictions, device_memory, source)


# ---------------------------------------------------------------------------------------- data profile
@dataclass
class DataProfile:
    """Per dataset (task / task+neg) and column: LLM tokens and vision patches of every good row (``negatives``:
    per ``+neg`` dataset, every row's list of its negatives' shapes)."""

    path: Path
    rows: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    lengths: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    negatives: dict[str, list[list[tuple[int, int]]]] = field(default_factory=dict)

    def datasets(self) -> list[str]:
        """The datasets as training opens them: a task with explicit negatives is one ``+neg`` dataset
        (:func:`vipyloqwen_tools.data.arrow.open_task_datasets`)."""
        return sorted(name for name in self.lengths if not (f"{name}+neg" in self.lengths and "+" not in name))

    def columns(self, dataset: str) -> dict[str, list[tuple[int, int]]]:
        """Every column's per-row shapes, laid out as training lays them out
        (:func:`vipyloqwen_tools.data.arrow.st_transform`: K negative columns, a shorter row padded with its first
        negative, a row without any with its positive)."""
        columns = {name: list(values) for name, values in self.lengths.get(dataset, {}).items()}
        rows = list(self.negatives.get(dataset) or [])
        task = dataset.split("+")[0]
        if dataset.endswith("+neg") and task in self.lengths:  # the task's rows without negatives join
            for name, values in self.lengths[task].items():
                columns.setdefault(name, []).extend(values)
            rows += [[] for _ in self.lengths[task]["anchor"]]
        positives = columns.get("positive", [])
        for k in range(max((len(r) for r in rows), default=0)):
            columns[negative_column(k)] = [
                r[k] if k < len(r) else (r[0] if r else positive) for r, positive in zip(rows, positives, strict=True)
            ]
        return columns

    def bad_summary(self, limit: int = 20) -> str:
        lines = [f"{self.path}: {len(self.bad)} bad line(s), not counted in the plan (training refuses them):"]
        lines += [f"  line {number}: {reason}" for number, reason in self.bad[:limit]]
        if len(self.bad) > limit:
            lines.append(f"  ... {len(self.bad) - limit} more")
        return "\n".join(lines)

    def batches(self) -> list[BatchShape]:
        """Per dataset: the ``worst`` batch (every row the column maximum) and the ``p99`` batch."""
        import numpy as np

        shapes = []
        for dataset in self.datasets():
            columns = self.columns(dataset)
            for case in ("worst", "p99"):
                cols = []
                for name, values in columns.items():
                    array = np.asarray(values, dtype=np.int64)
                    if case == "worst":
                        tokens, patches = array.max(axis=0)
                    else:
                        tokens, patches = np.percentile(array, 99, axis=0, method="higher")
                    cols.append(Column(name, int(tokens), int(patches)))
                shapes.append(BatchShape(dataset, case, tuple(cols)))
        return shapes


def profile_data(
    path: str | os.PathLike,
    tokenizer: Any,
    max_length: int,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
    min_image_tokens: int = DEFAULT_MIN_IMAGE_TOKENS,
    max_rows: int | None = None,
    chunk: int = 2048,
    image_root: str | os.PathLike | None = None,
) -> DataProfile:
    """Lengths of every good row of a training JSONL file: text tokens per column (``tokenizer``, cut at
    ``max_length``), image tokens from the image file headers (no pixels decoded). Bad lines (the validator's
    reasons, or an image whose header cannot be read) are collected in ``profile.bad``. Relative image paths are read
    from ``image_root`` (default: the file's folder), as training reads them.

    Example::

        >>> profile = profile_data("data/sample/train.jsonl", processor.tokenizer, max_length=8192)
        >>> sorted(profile.lengths)
        ['instr', 'ocr', 'text_pair', 'vqa_multi', 'vqa_single']
    """
    from images_vipyloqwen import image_size
    from vipyloqwen_tools.data import iter_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    profile = DataProfile(path)
    sizes: dict[str, int] = {}
    pending: list[tuple[str, str, list[int], str]] = []  # (dataset, column, image tokens, text)

    def flush() -> None:
        texts = [text for *_, text in pending]
        counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
        for (dataset, column, images, _), count in zip(pending, counts, strict=True):
            shape = side_shape(count, images, max_length)
            if column == "negatives[0]":  # a row's first negative opens its list
                profile.negatives.setdefault(dataset, []).append([shape])
            elif column.startswith("negatives["):
                profile.negatives[dataset][-1].append(shape)
            else:
                profile.lengths.setdefault(dataset, {}).setdefault(column, []).append(shape)
        pending.clear()

    for number, _, row, error in iter_file(path, check_images=False, image_root=image_root):
        if error is not None:
            profile.bad.append((number, error))
            continue
        if max_rows is not None and profile.rows >= max_rows:
            break
        dataset = row["task"] + ("+neg" if row["negatives"] else "")
        sides = []
        try:
            for column, side in (
                ("anchor", row["query"]),
                ("positive", row["positive"]),
                *((f"negatives[{k}]", negative) for k, negative in enumerate(row["negatives"])),
            ):
                tokens = []
                for image in side["images"]:
                    if image not in sizes:
                        size = image_size(image)
                        if size is None:
                            raise ValueError(f"{column}: cannot read the image header of {image!r}")
                        sizes[image] = image_token_count(*size, max_image_tokens, min_image_tokens)
                    tokens.append(sizes[image])
                sides.append((dataset, column, tokens, side["text"] or ""))
        except ValueError as reason:
            profile.bad.append((number, str(reason)))
            continue
        profile.rows += 1
        pending.extend(sides)
        if len(pending) >= chunk:
            flush()
    flush()
    return profile


def plan_data(arch: Architecture, setup: Setup, profile: DataProfile, device_memory: float | None = None) -> MemoryPlan:
    """The plan from a data profile: worst and p99 batch per dataset."""
    predictions = [predict(arch, setup, b) for b in profile.batches()]
    if not predictions:
        raise ValueError(f"{profile.path}: no good rows to plan for")
    plan = MemoryPlan(arch, setup, predictions, device_memory, f"data {profile.path} ({profile.rows} good rows)")
    if profile.bad:
        plan.notes.append(
            f"{len(profile.bad)} bad line(s) in {profile.path} not counted (first: line "
            f"{profile.bad[0][0]}: {profile.bad[0][1]})"
        )
    return plan


# ---------------------------------------------------------------------------------------- environment
def launcher_world(accelerate_config: str | os.PathLike | None = None) -> tuple[int, str]:
    """(world size, sharding) from an accelerate config file, else the launcher's environment
    (``WORLD_SIZE``; ``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED`` + ``ACCELERATE_DEEPSPEED_ZERO_STAGE``)."""
    if accelerate_config is not None:
        import yaml

        with open(accelerate_config, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        world = int(values.get("num_processes", 1)) * int(values.get("num_machines", 1))
        kind = str(values.get("distributed_type", "NO")).upper()
        if kind == "FSDP":
            return world, "fsdp"
        if kind == "DEEPSPEED":
            stage = int((values.get("deepspeed_config") or {}).get("zero_stage", 0))
            return world, f"zero{stage}" if stage in (1, 2, 3) else ("ddp" if world > 1 else "none")
        return world, "ddp" if world > 1 else "none"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return world, "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)
        if stage in (1, 2, 3):
            return world, f"zero{stage}"
    return world, "ddp" if world > 1 else "none"


def device_memory_bytes(configured_gb: float | None = None) -> float | None:
    """Device memory per process: the configured value (GB = 1e9 bytes), else CUDA's total memory, else None."""
    if configured_gb is not None:
        if configured_gb <= 0:
            raise ValueError(f"device_memory_gb must be positive, got {configured_gb}")
        return float(configured_gb) * 1e9  # GB as GPU makers count them (94 GB H100 NVL = 87.5 GiB)
    import torch

    if torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    return None


def setup_from_config(
    config: Any,
    world_size: int | None = None,
    sharding: str | None = None,
    precision: str | None = None,
    accelerate_config: str | os.PathLike | None = None,
    attention: str | None = None,
    negatives: int = 1,
) -> Setup:
    """A :class:`Setup` from a ``TrainConfig`` and the launcher (flags win over the accelerate file / env);
    ``negatives``: explicit negative columns per row (the training data's widest row, or the miner's K)."""
    launcher_size, launcher_sharding = launcher_world(accelerate_config)
    size = world_size or launcher_size
    kind = sharding or launcher_sharding
    if kind in ("none", "ddp"):
        kind = "ddp" if size > 1 else "none"
    if attention is None:
        attention = "sdpa" if config.attn_implementation in ("auto", "sdpa") else config.attn_implementation
    return Setup(
        world_size=size,
        sharding=kind,
        precision=precision or config.precision,
        gradient_checkpointing=bool(config.gradient_checkpointing),
        per_device_batch=int(config.per_device_train_batch_size),
        mini_batch=config.cached_mini_batch_size or None,  # 0 on the command line: plan without GradCache
        gradient_accumulation=int(config.gradient_accumulation_steps),
        max_length=int(config.max_length),
        max_image_tokens=int(config.max_image_tokens or DEFAULT_MAX_IMAGE_TOKENS),
        attention=attention,
        matryoshka_dims=config.matryoshka_dims,
        negatives=negatives,
    )


def check_training_memory(config: Any, model: Any, precision: str, negatives: int = 1) -> MemoryPlan | None:
    """Called by ``train()`` before the first step: refuse a run predicted not to fit (:class:`MemoryPlanError`).

    Device memory is CUDA's total memory, or ``config.device_memory_gb``; without either (a CPU run without the
    setting) the check is skipped. The config limits are checked first (no data pass); only if they do not fit is
    the training file profiled. ``negatives``: explicit negative columns per row (the datasets' widest row).
    ``config.ignore_memory_plan`` logs the plan and trains anyway.
    """
    device = device_memory_bytes(getattr(config, "device_memory_gb", None))
    if device is None:
        logger.info("memory plan skipped: no CUDA and no device_memory_gb set")
        return None
    module = model[0]
    arch = Architecture.from_model(module.model, name=str(config.model))
    attention = getattr(model, "vipyloqwen_attention", None)
    setup = setup_from_config(config, precision=precision, attention=attention, negatives=negatives)
    plan = plan_limits(arch, setup, device)
    if not plan.fits:
        profile = profile_data(
            config.train_file,
            module.processor.tokenizer,
            setup.max_length,
            setup.max_image_tokens,
            image_root=config.image_root,
        )
        plan = plan_data(arch, setup, profile, device)
    logger.info("%s", plan.summary())
    if plan.fits is False:
        message = f"training refused before the first step: {plan.verdict()}\n{plan.table()}\n{plan.fix()}"
        if getattr(config, "ignore_memory_plan", False):
            logger.warning("--ignore-memory-plan: %s", message)
        else:
            raise MemoryPlanError(message + "\n(pass --ignore-memory-plan to train anyway)")
    return plan


# ---------------------------------------------------------------------------------------- calibration
def _point_batch(point: dict[str, Any]) -> tuple[Architecture, Setup, BatchShape]:
    """The architecture, setup and batch of a ``bench/planner_calibrate.py`` measurement point."""
    layers = int(point["layers"])
    arch = Architecture(
        name=f"2b-shaped-L{layers}",
        parameters=int(point["parameters"]),
        vocab_rows=CALIBRATION_VOCAB,
        hidden=CALIBRATION_TEXT_WIDTH,
        layers=layers,
        vision_width=CALIBRATION_VISION_WIDTH,
        vision_layers=layers,
        embed_dim=1024,
        largest_unit=0,
        root_unit=0,
        text_parameters=int(point["parameters"]),
    )
    rows = int(point["rows"])
    dtype = point.get("dtype", "fp32")
    setup = Setup(
        # bf16 weights without autocast compute like FSDP2's bf16 parameters
        precision="bf16" if dtype == "bf16-params" else dtype,
        sharding="fsdp" if dtype == "bf16-params" else "none",
        gradient_checkpointing=bool(point["gc"]),
        per_device_batch=rows,
        mini_batch=point.get("mini_batch"),
    )
    (_, anchor_len), (_, positive_len) = point["sequence_shapes"]
    columns = (
        Column("anchor", int(anchor_len), int(point.get("vision_patches", 0)) // rows),
        Column("positive", int(positive_len), 0),
    )
    return arch, setup, BatchShape(point["name"], "measured", columns)


FIT_NAMES = ("fixed",) + tuple(
    f"{kind}:{gc}"
    for gc in (True, False)
    for kind in ("text_token_base", "text_token_layer", "patch_base", "patch_layer")
)


def _constants_from_vector(vector: Sequence[float], model: str) -> dict[str, Any]:
    values = dict(zip(FIT_NAMES, (float(v) for v in vector), strict=True))
    constants: dict[str, Any] = {"fixed": round(values["fixed"]), "model": model}
    for kind in ("text_token_base", "text_token_layer", "patch_base", "patch_layer"):
        constants[kind] = {gc: round(values[f"{kind}:{gc}"]) for gc in (True, False)}
    return constants


def step_mb(point: dict[str, Any], constants: dict[str, Any] | None = None) -> float:
    """Predicted step memory (MiB above parameters + gradients + states) of a calibration point."""
    arch, setup, batch = _point_batch(point)
    prediction = predict(arch, setup, batch, constants)
    static = sum(static_parts(arch, setup).values())
    return (prediction.total - static) / MiB


def fit_constants(points: list[dict[str, Any]], model: str = "additive") -> dict[str, Any]:
    """Fit the activation constants to the measured step memory (``measured_step_mb``) of fp32 points.

    Unknowns (non-negative): ``fixed`` (per step: the embedding-gradient transients) and, per gradient-checkpointing
    mode, the per-token base / per-layer and per-patch base / per-layer bytes. ``model``: ``additive`` (step =
    fixed + activations) or ``max`` (step = max(fixed, activations): the embedding gradient is built after the
    activations are freed). Returns constants in :data:`CALIBRATION`'s layout plus the residuals (MiB).
    """
    import numpy as np
    from scipy.optimize import least_squares

    points = [p for p in points if p.get("dtype", "fp32") == "fp32"]
    measured = np.array([p["measured_step_mb"] for p in points])

    def residuals(vector: np.ndarray) -> np.ndarray:
        constants = _constants_from_vector(vector * SCALES, model)
        return np.array([step_mb(p, constants) for p in points]) - measured

    SCALES = np.array([GiB] + [100_000.0] * (len(FIT_NAMES) - 1))
    start = np.array([1.0] + [0.5] * (len(FIT_NAMES) - 1))
    result = least_squares(residuals, start, bounds=(0, np.inf), x_scale=1.0, diff_step=1e-3)
    constants = _constants_from_vector(result.x * SCALES, model)
    constants["residual_mb"] = {p["name"]: round(step_mb(p, constants) - p["measured_step_mb"], 1) for p in points}
    constants["rms_residual_mb"] = round(float(np.sqrt(np.mean(np.square(residuals(result.x))))), 1)
    return constants


def compare_point(point: dict[str, Any], constants: dict[str, Any] | None = None) -> dict[str, Any]:
    """Predicted vs measured peak of a calibration point: the total (parameters, gradients, states, activations)
    and the step part alone (activations + transients)."""
    arch, setup, batch = _point_batch(point)
    predicted = predict(arch, setup, batch, constants).total / MiB
    measured = float(point["measured_total_mb"])
    step = step_mb(point, constants)
    if point.get("dtype") == "bf16-params":  # bf16 weights, gradients and states: 8 bytes per parameter
        predicted = measured - point["measured_step_mb"] + step
    return {
        "name": point["name"],
        "measured_total_mb": measured,
        "predicted_total_mb": round(predicted, 1),
        "error_pct": round(100 * (predicted - measured) / measured, 1),
        "measured_step_mb": point["measured_step_mb"],
        "predicted_step_mb": round(step, 1),
        "step_error_pct": round(100 * (step - point["measured_step_mb"]) / point["measured_step_mb"], 1),
    }


__all__ = [
    "CALIBRATION",
    "Architecture",
    "BatchShape",
    "Column",
    "DataProfile",
    "MemoryPlan",
    "MemoryPlanError",
    "Prediction",
    "Setup",
    "check_training_memory",
    "compare_point",
    "step_mb",
    "device_memory_bytes",
    "fit_constants",
    "launcher_world",
    "limit_batches",
    "plan_data",
    "plan_limits",
    "predict",
    "profile_data",
    "setup_from_config",
]
