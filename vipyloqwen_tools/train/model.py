"""The model of a run: the checkpoint (or the tiny model built offline) loaded as a SentenceTransformer with the
chosen attention, the run's model options (Matryoshka widths, gradient checkpointing) and the memory check.

Example::

    >>> from vipyloqwen_tools.train.model import load_model
    >>> model = load_model(config, "fp32")  # a TrainConfig; model="tiny" builds <output_dir>/init-tiny once
    >>> model.vipyloqwen_attention
    'sdpa'
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

from vipyloqwen_tools.checkpoint.limits import InferenceLimits
from vipyloqwen_tools.plan.planner import check_training_memory
from vipyloqwen_tools.train.arguments import RunSetup
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.process_group import main_process_first

logger = logging.getLogger("vipyloqwen.train")

# Where the ViPyloQwenModel's keys sit in a SentenceTransformer's state dict (module 0 = Transformer, its .model).
ST_BACKBONE_PREFIX = "0.model."


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


def training_limits(config: TrainConfig, base: InferenceLimits) -> InferenceLimits:
    """The limits the run trains at: ``max_length`` text tokens and ``max_image_tokens`` per image (default: the
    base's image budget)."""
    max_image = config.max_image_tokens or base.max_image_tokens
    return InferenceLimits(config.max_length, max_image, min(base.min_image_tokens, max_image))


def limits_record(config: TrainConfig, model: SentenceTransformer) -> dict[str, dict[str, int]]:
    """``train_config.json``'s ``limits``: ``inference`` (the base's, which every export keeps) and ``training``
    (what the run trained at)."""
    base = model.vipyloqwen_limits
    return {"inference": base.as_dict(), "training": training_limits(config, base).as_dict()}


def load_model(config: TrainConfig, precision: str) -> SentenceTransformer:
    """Load the checkpoint with the chosen attention and dtype (weights stay fp32; autocast does bf16).

    The processor trains at the run's limits (:func:`training_limits`); ``model.vipyloqwen_limits`` keeps the
    checkpoint's own (its inference limits), which every export writes back."""
    path = config.model
    if path == "tiny":
        path = str(build_tiny(Path(config.output_dir) / "init-tiny"))
    attention, reason = pick_attention(config.attn_implementation, precision)
    logger.info("attention: %s (%s)", attention, reason)
    model = SentenceTransformer(
        path,
        trust_remote_code=True,
        device="cuda" if torch.cuda.is_available() else "cpu",
        model_kwargs={"attn_implementation": attention, "dtype": torch.float32},
    )
    model.vipyloqwen_attention = attention
    # The base's inference limits, kept for every export (checkpoint/limits.py); the run trains at its own.
    processor = model[0].processor
    model.vipyloqwen_limits = InferenceLimits.of_processor(processor)
    training_limits(config, model.vipyloqwen_limits).set_on(processor)
    # accelerate 1.15's FSDP2 preparation takes the last child whose class name contains "Norm" under
    # `model.<base_model_prefix>` (the model itself when unset) as the final norm and shards it: here that is ST's
    # parameter-free Normalize module, and fully_shard fails ("object layout differs from 'Normalize'"). Point it at
    # the Transformer module, which has no such child.
    model.base_model_prefix = "0"
    return model


def prepare_model(config: TrainConfig, run: RunSetup, negatives: int = 1) -> SentenceTransformer:
    """The run's model: loaded once per process (the tiny model is built by the main process first), with the run's
    Matryoshka widths and gradient checkpointing; refused before the first step if the memory plan says it does not
    fit (:func:`vipyloqwen_tools.plan.planner.check_training_memory`; ``negatives``: explicit negative columns per
    row, :attr:`vipyloqwen_tools.train.run_data.RunData.negatives`)."""
    with main_process_first(run.args):  # the tiny model is built once, then loaded (no --ddp-timeout on this wait)
        model = load_model(config, run.precision)
    if config.matryoshka_dims:
        # The checkpoint declares the widths it was trained at: vLLM's `dimensions` accepts only these (serving/).
        model[0].model.config.matryoshka_dimensions = list(config.matryoshka_dims)
    if config.gradient_checkpointing:
        model[0].model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model[0].model.config.use_cache = False
    check_training_memory(config, model, run.precision, negatives)  # refuses a run predicted not to fit, before step 1
    return model


__all__ = [
    "ST_BACKBONE_PREFIX",
    "build_tiny",
    "limits_record",
    "load_model",
    "pick_attention",
    "prepare_model",
    "training_limits",
]
