"""The published Qwen/Qwen2-VL-2B-Instruct architecture: the one place its numbers are written.

:data:`QWEN2_VL_2B_CONFIG` is the checkpoint's ``config.json`` as published (the flat transformers-4.41 format, the
facts in STACK-NOTES.md), :data:`QWEN2_VL_2B_PREPROCESSOR` its ``preprocessor_config.json``. Everything else derives
from them: :func:`qwen2_vl_2b_config` (a :class:`ViPyloQwenConfig` of that shape, at full or reduced depth) for the
memory planner, the benchmarks' ``2b-shaped`` model and the GPU check; :func:`qwen2_vl_2b_widths` for FLOP counts and
the planner's calibration; ``vipyloqwen_tools.checkpoint.fake_base`` writes the stand-in checkpoint from the published
dicts.

Example::

    >>> from vipyloqwen_tools.checkpoint.architectures import qwen2_vl_2b_config, qwen2_vl_2b_widths
    >>> qwen2_vl_2b_config(embed_dim=1024, text_layers=2, vision_layers=2).text_config.hidden_size
    1536
    >>> qwen2_vl_2b_widths()["vision_mlp"]
    5120
"""

from __future__ import annotations

from typing import Any

# config.json of Qwen/Qwen2-VL-2B-Instruct as published.
QWEN2_VL_2B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_vl",
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}
# preprocessor_config.json of Qwen/Qwen2-VL-2B-Instruct as published.
QWEN2_VL_2B_PREPROCESSOR: dict[str, Any] = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}
# The tokenizer's pad token (<|endoftext|>, = bos); the published config.json does not name one.
QWEN2_VL_PAD_TOKEN_ID = 151643


def qwen2_vl_2b_text_config(text_layers: int | None = None) -> dict[str, Any]:
    """The text config in the transformers-5 format (``rope_parameters`` instead of ``rope_scaling``/``rope_theta``),
    with ``text_layers`` layers (default: the published 28)."""
    c = QWEN2_VL_2B_CONFIG
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    text = {key: c[key] for key in (*keys, "num_key_value_heads", "max_position_embeddings", "rms_norm_eps")}
    text.update(
        rope_parameters={
            "rope_type": "default",
            "rope_theta": c["rope_theta"],
            "mrope_section": list(c["rope_scaling"]["mrope_section"]),
        },
        tie_word_embeddings=c["tie_word_embeddings"],
        bos_token_id=c["bos_token_id"],
        eos_token_id=c["eos_token_id"],
        pad_token_id=QWEN2_VL_PAD_TOKEN_ID,
    )
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    return text


def qwen2_vl_2b_vision_config(vision_layers: int | None = None) -> dict[str, Any]:
    """The vision config with ``vision_layers`` blocks (default: the published 32)."""
    vision = {k: v for k, v in QWEN2_VL_2B_CONFIG["vision_config"].items() if k != "in_chans"}
    if vision_layers is not None:
        vision["depth"] = vision_layers
    return vision


def qwen2_vl_2b_config(embed_dim: int = 1024, text_layers: int | None = None, vision_layers: int | None = None):
    """A :class:`ViPyloQwenConfig` of the published 2B shape; ``text_layers`` / ``vision_layers`` cut the depth
    (the benchmarks' ``2b-shaped`` model and the real-width rehearsal), everything else is the 2B's."""
    from configuration_vipyloqwen import ViPyloQwenConfig

    return ViPyloQwenConfig(
        text_config=qwen2_vl_2b_text_config(text_layers),
        vision_config=qwen2_vl_2b_vision_config(vision_layers),
        embed_dim=embed_dim,
        tie_word_embeddings=QWEN2_VL_2B_CONFIG["tie_word_embeddings"],
    )


def qwen2_vl_2b_widths() -> dict[str, int]:
    """The sizes a FLOP or memory estimate needs: widths, depths, MLP sizes, KV width, vocabulary rows."""
    c, v = QWEN2_VL_2B_CONFIG, QWEN2_VL_2B_CONFIG["vision_config"]
    return {
        "text_hidden": c["hidden_size"],
        "text_layers": c["num_hidden_layers"],
        "text_mlp": c["intermediate_size"],
        "kv_dim": c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"],
        "vocab_rows": c["vocab_size"],
        "vision_width": v["embed_dim"],
        "vision_layers": v["depth"],
        "vision_mlp": v["embed_dim"] * v["mlp_ratio"],
    }


__all__ = [
    "QWEN2_VL_2B_CONFIG",
    "QWEN2_VL_2B_PREPROCESSOR",
    "QWEN2_VL_PAD_TOKEN_ID",
    "qwen2_vl_2b_config",
    "qwen2_vl_2b_text_config",
    "qwen2_vl_2b_vision_config",
    "qwen2_vl_2b_widths",
]
