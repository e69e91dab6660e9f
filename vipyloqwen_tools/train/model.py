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


def prepare_model(config: TrainConfig, run: RunSetup) -> SentenceTransformer:
    """The run's model: loaded once per process (the tiny model is built by the main process first), with the run's
    Matryoshka widths and gradient checkpointing; refused before the first step if the memory plan says it does not
    fit (:func:`vipyloqwen_tools.plan.planner.check_training_memory`)."""
    with main_process_first(run.args):  # the tiny model is built once, then loaded (no --ddp-timeout on this wait)
        model = load_model(config, run.precision)
    if config.matryoshka_dims:
        # The checkpoint declares the widths it was trained at: vLLM's `dimensions` accepts only these (serving/).
        model[0].model.config.matryoshka_dimensions = list(config.matryoshka_dims)
    if config.gradient_checkpointing:
        model[0].model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model[0].model.config.use_cache = False
    check_training_memory(config, model, run.precision)  # refuses a run predicted not to fit, before the first step
    return model


__all__ = ["ST_BACKBONE_PREFIX", "build_tiny", "load_model", "pick_attention", "prepare_model"]
