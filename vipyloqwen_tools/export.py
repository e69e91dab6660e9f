"""Build and export a complete viPyloQwen Hub checkpoint folder.

Two sources of weights:

- :func:`from_base`: a pretrained Qwen2-VL checkpoint (``Qwen/Qwen2-VL-2B-Instruct`` or a local folder),
  streamed shard by shard into the output without loading the model (:mod:`vipyloqwen_tools.base_export`:
  bit-identical tensors, the base's dtype and sharding, peak memory far below one fp32 copy).
- :func:`tiny`: a small randomly initialised Qwen2-VL with the real Qwen2 vocabulary, fully offline,
  written by :func:`save_checkpoint`.

Both get the five task prefix tokens as special tokens (embedding rows initialised to the mean of the
trained rows; the matrix is never shrunk).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AddedToken
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from configuration_vipyloqwen import (
    DEFAULT_MAX_IMAGE_TOKENS,
    DEFAULT_MAX_TEXT_TOKENS,
    DEFAULT_MIN_IMAGE_TOKENS,
    ViPyloQwenConfig,
    prefix_tokens,
    st_prompts,
)
from modeling_vipyloqwen import ViPyloQwenModel
from processing_vipyloqwen import ViPyloQwenProcessor
from vipyloqwen_tools.tokenizer import build_qwen2_vl_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
HUB_CODE_FILES = (
    "configuration_vipyloqwen.py",
    "modeling_vipyloqwen.py",
    "processing_vipyloqwen.py",
    "images_vipyloqwen.py",
    "items_vipyloqwen.py",
    "prefetch_vipyloqwen.py",
)
# Keys transformers writes that describe the machine that saved, not the model.
MACHINE_LOCAL_KEYS = ("is_local", "local_files_only", "_name_or_path", "name_or_path", "cache_dir", "_commit_hash")
SUPPORTED_VERSIONS = {"transformers": ">=5.23,<6", "sentence-transformers": ">=6.2,<7"}


def tiny_config(embed_dim: int = 32, vocab_size: int = 151_936) -> ViPyloQwenConfig:
    """A ~10M-parameter Qwen2-VL with the real vocabulary size (text 64 x 2 layers, vision 32 x 2)."""
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
    }
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2}
    return ViPyloQwenConfig(text_config=text, vision_config=vision, embed_dim=embed_dim)


def add_task_tokens(tokenizer) -> list[int]:
    """Add the registry's prefix tokens as special tokens; returns their ids (registry order)."""
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in prefix_tokens()]},
        replace_extra_special_tokens=False,
    )
    return tokenizer.convert_tokens_to_ids(prefix_tokens())


def init_task_rows(model: ViPyloQwenModel, task_ids: list[int], trained_rows: int) -> None:
    """Make room for the task tokens (never shrinking) and set their rows to the mean trained row."""
    embeddings = model.get_input_embeddings()
    if max(task_ids) >= embeddings.num_embeddings:
        model.resize_token_embeddings(max(task_ids) + 1, mean_resizing=False)
        model.config.text_config.vocab_size = model.get_input_embeddings().num_embeddings
        embeddings = model.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight[task_ids] = embeddings.weight[:trained_rows].float().mean(0).to(embeddings.weight.dtype)


def build_processor(tokenizer, max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS, image_processor=None):
    """The viPyloQwen processor (it sets the tokenizer's model_max_length, which ST reads, to the text budget)."""
    return ViPyloQwenProcessor(
        image_processor or Qwen2VLImageProcessorPil(),
        tokenizer,
        max_image_tokens=max_image_tokens,
        min_image_tokens=min(DEFAULT_MIN_IMAGE_TOKENS, max_image_tokens),
        max_text_tokens=DEFAULT_MAX_TEXT_TOKENS,
    )


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
    streaming its tensors (see :mod:`vipyloqwen_tools.base_export`); returns ``out``."""
    from vipyloqwen_tools.base_export import build_from_base

    return build_from_base(base, out, embed_dim, max_image_tokens).out


# ---------------------------------------------------------------------------------------- ST files
def st_files(embed_dim: int) -> dict[str, dict | list]:
    """The Sentence-Transformers files of a checkpoint (and of the repo root): path -> JSON content."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.base.modules.normalize.Normalize",
            },
        ],
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {
                "text": {"method": "forward", "method_output_name": "last_hidden_state"},
                "image": {"method": "forward", "method_output_name": "last_hidden_state"},
                "message": {"method": "forward", "method_output_name": "last_hidden_state", "format": "structured"},
            },
            "module_output_name": "token_embeddings",
            "unpad_inputs": False,
        },
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "__version__": {"sentence_transformers": "6.2.0", "transformers": "5.23.0", "pytorch": "2.13.0"},
            "prompts": st_prompts(),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
            "requirements": dict(SUPPORTED_VERSIONS),
        },
        "1_Pooling/config.json": {
            "embedding_dimension": embed_dim,
            "pooling_mode": "mean",
            "include_prompt": True,
        },
        "2_Normalize/config.json": {
            "module_input_name": "sentence_embedding",
            "module_output_name": "sentence_embedding",
        },
    }


def write_st_files(out: Path, embed_dim: int) -> None:
    for relative, content in st_files(embed_dim).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _without_machine_local_keys(value):
    if isinstance(value, dict):
        return {k: _without_machine_local_keys(v) for k, v in value.items() if k not in MACHINE_LOCAL_KEYS}
    if isinstance(value, list):
        return [_without_machine_local_keys(v) for v in value]
    return value


def strip_machine_local_keys(out: Path) -> None:
    """Remove keys transformers writes about the saving machine (paths, local-only flags), at any depth, from
    every JSON file (tokenizer.json, 11 MB of vocabulary, and weight indexes hold none)."""
    for path in Path(out).rglob("*.json"):
        if path.name == "tokenizer.json" or path.name.endswith(".index.json"):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        cleaned = _without_machine_local_keys(data)
        if cleaned != data:
            path.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_checkpoint(
    model: ViPyloQwenModel, processor: ViPyloQwenProcessor, out: str | Path, state_dict: dict | None = None
) -> Path:
    """Write a Hub-layout checkpoint: config + safetensors + code + tokenizer/processor + ST files + card.

    ``state_dict``: the weights to write instead of the module's own (the gathered full state dict of an FSDP2-sharded
    model; see ``vipyloqwen_tools.distributed.full_state_dict``).
    """
    out = Path(out)
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


def write_support_files(processor: ViPyloQwenProcessor, out: Path, embed_dim: int) -> None:
    """Everything of a checkpoint but the weights and config.json: processor + tokenizer, the Hub code files,
    the Sentence-Transformers files and the model card; then strips machine-local keys from every JSON."""
    type(processor).register_for_auto_class("AutoProcessor")
    processor.save_pretrained(out)
    for name in HUB_CODE_FILES:  # save_pretrained copies imported files; make sure all ship
        shutil.copyfile(REPO_ROOT / name, out / name)
    write_st_files(out, embed_dim)
    shutil.copyfile(REPO_ROOT / "README.md", out / "README.md")
    strip_machine_local_keys(out)


def main() -> None:
    """Rewrite the repo root's Sentence-Transformers files (the 1024-d release): python -m vipyloqwen_tools.export"""
    from configuration_vipyloqwen import DEFAULT_EMBED_DIM

    write_st_files(REPO_ROOT, DEFAULT_EMBED_DIM)
    print(f"wrote {', '.join(st_files(DEFAULT_EMBED_DIM))} in {REPO_ROOT}")


if __name__ == "__main__":
    main()
