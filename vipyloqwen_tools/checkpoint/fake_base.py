"""Local stand-ins of the ``Qwen/Qwen2-VL-2B-Instruct`` checkpoint, with random weights (offline tests and
benchmarks of ``scripts/build_model.py --base``).

The layout is the published one: the flat transformers-4.41 ``config.json`` (``rope_scaling`` with
``type: mrope``, ``torch_dtype``), the ``preprocessor_config.json``, the legacy key names
(``model.embed_tokens.weight``, ``model.layers.N.*``, ``visual.blocks.N.*``; no ``lm_head.weight``: tied),
bf16 shards split at ``max_shard_bytes`` in the order the 4.x ``Qwen2VLForConditionalGeneration`` saved them
(vision tower first), a ``model.safetensors.index.json``, and the real Qwen2 tokenizer. At the real config
(:data:`QWEN2_VL_2B_CONFIG`) that is 729 tensors, 4,417,971,200 bytes, two shards at 4 GB.

Tensors are generated and written one at a time, so writing the 4.4 GB stand-in takes little memory.

Example::

    >>> write_fake_base("build/fake-2b")                                     # real size
    >>> write_fake_base("/tmp/shallow", shallow_config(), max_shard_bytes=10_000_000)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from vipyloqwen_tools.checkpoint.architectures import QWEN2_VL_2B_CONFIG, QWEN2_VL_2B_PREPROCESSOR
from vipyloqwen_tools.checkpoint.safetensors_stream import Entry, write_file

REAL_SHARD_BYTES = 4_000_000_000  # save_pretrained's "4GB"


def shallow_config(text_layers: int = 2, vision_layers: int = 2) -> dict[str, Any]:
    """The real config's format and vocabulary with small widths (text 64, vision 32) and few layers."""
    config = copy.deepcopy(QWEN2_VL_2B_CONFIG)
    config.update(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=text_layers,
        max_window_layers=text_layers,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},  # sums to head_dim / 2 = 8
    )
    config["vision_config"].update(depth=vision_layers, embed_dim=32, num_heads=4, mlp_ratio=2, hidden_size=64)
    return config


def legacy_name(key: str) -> str:
    """The published checkpoint's name of a transformers-5 ``Qwen2VLForConditionalGeneration`` key."""
    if key.startswith("model.visual."):
        return "visual." + key[len("model.visual.") :]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    return key


def legacy_tensors(config: dict[str, Any]) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(legacy name, dtype, shape) of every tensor of the checkpoint, vision tower first (4.x save order)."""
    stock_config = Qwen2VLConfig(**copy.deepcopy(config))  # the config class edits nested dicts in place
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(stock_config)
    dtype = getattr(torch, config.get("torch_dtype", "bfloat16"))
    tensors = [
        (legacy_name(k), dtype, tuple(v.shape))
        for k, v in model.state_dict().items()
        if not (k == "lm_head.weight" and config.get("tie_word_embeddings", True))
    ]
    return sorted(tensors, key=lambda item: not item[0].startswith("visual."))  # stable: visual, model, lm_head


def _random(shape: tuple[int, ...], dtype: torch.dtype, seed: int):
    def produce() -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=generator) * 0.02).to(dtype)

    return produce


def write_fake_base(
    out: str | Path,
    config: dict[str, Any] | None = None,
    max_shard_bytes: int = REAL_SHARD_BYTES,
    seed: int = 0,
    tokenizer: bool = True,
) -> Path:
    """Write a stand-in checkpoint of ``config`` (default: the real 2B config) with random weights to ``out``."""
    config = config or QWEN2_VL_2B_CONFIG
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = legacy_tensors(config)
    shards: list[list[Entry]] = [[]]
    size = 0
    for index, (name, dtype, shape) in enumerate(tensors):
        entry = Entry(name, dtype, shape, _random(shape, dtype, seed * 100_003 + index))
        if shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    weight_map, total = {}, 0
    for number, entries in enumerate(shards, start=1):
        file_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        total += write_file(out / file_name, entries, metadata={"format": "pt"})
        weight_map.update({entry.name: file_name for entry in entries})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "preprocessor_config.json").write_text(json.dumps(QWEN2_VL_2B_PREPROCESSOR, indent=2) + "\n")
    if tokenizer:
        from vipyloqwen_tools.checkpoint.tokenizer import build_qwen2_vl_tokenizer

        build_qwen2_vl_tokenizer().save_pretrained(out)
    return out
