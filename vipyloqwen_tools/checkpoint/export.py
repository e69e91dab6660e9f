"""Build and export a complete viPyloQwen Hub checkpoint folder.

Two sources of weights:

- :func:`from_base`: a pretrained Qwen2-VL checkpoint (``Qwen/Qwen2-VL-2B-Instruct`` or a local folder),
  streamed shard by shard into the output without loading the model (:mod:`vipyloqwen_tools.checkpoint.base`:
  bit-identical tensors, the base's dtype and sharding, peak memory far below one fp32 copy).
- :func:`tiny`: a small randomly initialised Qwen2-VL with the real Qwen2 vocabulary, fully offline,
  written by :func:`save_checkpoint`.

Both get the five task prefix tokens as special tokens (embedding rows initialised to the mean of the
trained rows; the matrix is never shrunk).
"""

from __future__ import annotations

from pathlib import Path

import torch

from configuration_vipyloqwen import (
    DEFAULT_MAX_IMAGE_TOKENS,
    ViPyloQwenConfig,
)
from modeling_vipyloqwen import ViPyloQwenModel
from processing_vipyloqwen import ViPyloQwenProcessor
from vipyloqwen_tools.checkpoint.files import (  # noqa: F401  (re-exported: export's public names)
    HUB_CODE_FILES,
    MACHINE_LOCAL_KEYS,
    REPO_ROOT,
    SUPPORTED_VERSIONS,
    add_task_tokens,
    build_processor,
    st_files,
    strip_machine_local_keys,
    write_st_files,
    write_support_files,
)
from vipyloqwen_tools.checkpoint.tokenizer import build_qwen2_vl_tokenizer


def tiny_config(embed_dim: int = 32, vocab_size: int = 151_936) -> ViPyloQwenConfig:
    """A ~10M-parameter Qwen2-VL with the real vocabulary size (text 64 x 2 layers, vision 32 x 2).

    The text attention has 2 heads of width 32 (and 2 key/value heads): vLLM's CPU attention takes head widths
    from 32 up, so every tiny test model is also a vLLM serving test model (``serving/``).
    """
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
    }
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2}
    return ViPyloQwenConfig(text_config=text, vision_config=vision, embed_dim=embed_dim)


def init_task_rows(model: ViPyloQwenModel, task_ids: list[int], trained_rows: int) -> None:
    """Make room for the task tokens (never shrinking) and set their rows to the mean trained row."""
    embeddings = model.get_input_embeddings()
    if max(task_ids) >= embeddings.num_embeddings:
        model.resize_token_embeddings(max(task_ids) + 1, mean_resizing=False)
        model.config.text_config.vocab_size = model.get_input_embeddings().num_embeddings
        embeddings = model.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight[task_ids] = embeddings.weight[:trained_rows].float().mean(0).to(embeddings.weight.dtype)


def tiny(embed_dim: int = 32, seed: int = 0, max_image_tokens: int = 64):
    """A tiny random model + processor with the real Qwen2-VL tokenizer (deterministic per seed)."""
    torch.manual_seed(seed)
    tokenizer = build_qwen2_vl_tokenizer()
    trained_rows = len(tokenizer)
    task_ids = add_task_tokens(tokenizer)
    model = ViPyloQwenModel(tiny_config(embed_dim)).eval()
    init_task_rows(model, task_ids, trained_rows)
    return model, build_processor(tokenizer, max_image_tokens)


def from_base(
    base: str, out: str | Path, embed_dim: int = 1024, max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
) -> Path:
    """Write the viPyloQwen checkpoint of a pretrained Qwen2-VL checkpoint (Hub id or folder) into ``out``,
    streaming its tensors (see :mod:`vipyloqwen_tools.checkpoint.base`); returns ``out``."""
    from vipyloqwen_tools.checkpoint.base import build_from_base

    return build_from_base(base, out, embed_dim, max_image_tokens).out


def save_checkpoint(
    model: ViPyloQwenModel, processor: ViPyloQwenProcessor, out: str | Path, state_dict: dict | None = None
) -> Path:
    """Write a Hub-layout checkpoint: config + safetensors + code + tokenizer/processor + ST files + card.

    ``state_dict``: the weights to write instead of the module's own (the gathered full state dict of an FSDP2-sharded
    model; see ``vipyloqwen_tools.train.distributed.full_state_dict``). Raises
    :class:`~vipyloqwen_tools.checkpoint.finite.NonFiniteWeightsError` (and writes nothing) if a weight holds NaN / inf.
    """
    from vipyloqwen_tools.checkpoint.finite import check_finite

    out = Path(out)
    # Before anything is written: a diverged model (NaN / inf weights) is refused, never exported.
    check_finite((state_dict if state_dict is not None else model.state_dict()).items(), str(out))
    out.mkdir(parents=True, exist_ok=True)
    if state_dict is not None:
        # Save the given weights through a plain meta-device instance: a sharded module's class is FSDP<Name> under
        # FSDP2, which would leak into config.architectures, auto_map and the copied code files.
        with torch.device("meta"):
            model = ViPyloQwenModel(model.config)
    type(model.config).register_for_auto_class()
    type(model).register_for_auto_class("AutoModel")
    type(processor).register_for_auto_class("AutoProcessor")
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    write_support_files(processor, out, model.config.embed_dim)
    return out


def main() -> None:
    """Rewrite the repo root's Sentence-Transformers files (the 1024-d release).

    ``python -m vipyloqwen_tools.checkpoint.export``
    """
    from configuration_vipyloqwen import DEFAULT_EMBED_DIM

    write_st_files(REPO_ROOT, DEFAULT_EMBED_DIM)
    print(f"wrote {', '.join(st_files(DEFAULT_EMBED_DIM))} in {REPO_ROOT}")


if __name__ == "__main__":
    main()
