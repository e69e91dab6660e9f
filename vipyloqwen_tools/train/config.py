"""The training run's settings: :class:`TrainConfig` (one field per YAML key and ``train_st.py`` flag).

Example::

    >>> from vipyloqwen_tools.train.config import TrainConfig
    >>> config = TrainConfig.from_yaml("configs/tiny-cpu.yaml", output_dir="runs/tiny", max_steps=3)
    >>> config.max_steps, config.output_dir
    (3, 'runs/tiny')
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

SAMPLE_TRAIN_FILE = "data/sample/train.jsonl"
SAMPLE_EVAL_FILE = "data/sample/eval.jsonl"
AUTO = "auto"
_REPO = Path(__file__).resolve().parents[2]


def is_sample_train_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the repository's bundled sample train file (as the default names it, or resolved)."""
    return str(path) == SAMPLE_TRAIN_FILE or Path(path).resolve() == (_REPO / SAMPLE_TRAIN_FILE).resolve()


@dataclasses.dataclass
class TrainConfig:
    """Every training setting; YAML keys and ``--flag`` names are these field names (``-`` for ``_`` on the CLI).

    ``model`` is a viPyloQwen checkpoint folder (``scripts/build_model.py`` writes one) or ``tiny`` (built
    offline into ``<output_dir>/init-tiny``).

    Evaluation: ``eval_file`` (a JSONL file in the training schema), or ``eval_split`` (a held-out share of the train
    file's rows), or none. The bundled ``data/sample/eval.jsonl`` is only ever paired with the bundled sample train
    file: with your own ``train_file`` and no ``eval_file`` the run evaluates on nothing unless ``eval_split`` says so.
    """

    model: str = "tiny"
    train_file: str = SAMPLE_TRAIN_FILE
    # "auto": the bundled sample eval file beside the bundled sample train file, else none (a flag --train-file
    # without --eval-file resets the YAML's eval file to "auto"); "" or None: no evaluation
    eval_file: str | None = AUTO
    eval_split: float | None = None  # hold out this share of the train file's rows per task for evaluation
    image_root: str | None = None  # relative image paths of the train file: under this folder, not the file's own
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
    # false negatives (docs/training.md "Negatives"): candidates that are the same document as a correct answer are
    # masked out of every in-batch term; a margin also masks candidates scoring above the positive by that much
    mask_false_negatives: bool = True
    false_negative_margin: float | None = None
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
    # faults (docs/faults.md): the non-finite guard (train/guard.py) and the run-defining settings a
    # --resume may change knowingly (comma-separated names; train/resume_check.py)
    nonfinite_policy: str = "skip"  # skip | stop
    max_nonfinite_steps: int = 3
    nonfinite_window: int = 100
    accept_changes: str | None = None
    resume_from: str | None = None  # a checkpoint folder (or its name in output_dir) instead of the newest one

    def __post_init__(self) -> None:
        # "auto" is resolved once, here: after it the eval file is a path or None (replace() keeps it so).
        if self.eval_file == AUTO:
            sample = is_sample_train_file(self.train_file) and not self.eval_split
            self.eval_file = str(Path(self.train_file).with_name(Path(SAMPLE_EVAL_FILE).name)) if sample else None
        elif self.eval_file == "":
            self.eval_file = None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
        """Load a YAML config (unknown keys are an error) and apply ``overrides`` (``None`` values ignored).

        An overriding ``train_file`` or ``eval_split`` without an overriding ``eval_file`` resets the eval file to
        ``"auto"``: the YAML's eval file was chosen for the YAML's train file (``eval_file=""`` turns evaluation
        off)."""
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
        given = {k: v for k, v in overrides.items() if v is not None}
        if ("train_file" in given or "eval_split" in given) and "eval_file" not in given:
            values["eval_file"] = AUTO  # the YAML's eval file was chosen for the YAML's train file
        values.update(given)
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
        if self.false_negative_margin is not None and not self.false_negative_margin >= 0:
            raise ValueError(f"false_negative_margin must be >= 0 (or null: off), got {self.false_negative_margin}")
        if self.per_device_train_batch_size < 2:
            raise ValueError("per_device_train_batch_size must be >= 2 (in-batch negatives)")
        from vipyloqwen_tools.train.guard import POLICIES
        from vipyloqwen_tools.train.resume_check import parse_accept

        if self.nonfinite_policy not in POLICIES:
            raise ValueError(f"nonfinite_policy must be one of {', '.join(POLICIES)}, got {self.nonfinite_policy!r}")
        parse_accept(self.accept_changes)
        if self.eval_split is not None:
            if not 0.0 < self.eval_split < 1.0:
                raise ValueError(
                    f"eval_split is the share of the train file's rows held out, in (0, 1), e.g. 0.01; got "
                    f"{self.eval_split}"
                )
            if self.eval_file:
                raise ValueError(
                    f"eval_split {self.eval_split} and eval_file {self.eval_file}: evaluate on one of them; "
                    '--eval-file "" turns the eval file off'
                )


__all__ = ["AUTO", "SAMPLE_EVAL_FILE", "SAMPLE_TRAIN_FILE", "TrainConfig", "is_sample_train_file"]
