"""The files every exported viPyloQwen checkpoint carries besides its weights and config.json.

The task prefix tokens (:func:`add_task_tokens`), the processor (:func:`build_processor`), the Hub code files, the
Sentence-Transformers files (:func:`st_files`) and the model card (:func:`write_support_files`), and the removal of
keys that describe the saving machine (:func:`strip_machine_local_keys`). Both checkpoint builders use it:
:mod:`vipyloqwen_tools.checkpoint.export` (tiny model, training exports) and :mod:`vipyloqwen_tools.checkpoint.base` (a
pretrained base streamed shard by shard).

Example::

    >>> from vipyloqwen_tools.checkpoint.files import st_files
    >>> sorted(st_files(1024))[:2]
    ['1_Pooling/config.json', '2_Normalize/config.json']
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import AddedToken
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from configuration_vipyloqwen import (
    DEFAULT_MAX_IMAGE_TOKENS,
    DEFAULT_MAX_TEXT_TOKENS,
    DEFAULT_MIN_IMAGE_TOKENS,
    prefix_tokens,
    st_prompts,
)
from processing_vipyloqwen import ViPyloQwenProcessor

REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_CODE_FILES = (
    "tasks_vipyloqwen.py",
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


def add_task_tokens(tokenizer) -> list[int]:
    """Add the registry's prefix tokens as special tokens; returns their ids (registry order)."""
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in prefix_tokens()]},
        replace_extra_special_tokens=False,
    )
    return tokenizer.convert_tokens_to_ids(prefix_tokens())


def build_processor(tokenizer, max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS, image_processor=None):
    """The viPyloQwen processor (it sets the tokenizer's model_max_length, which ST reads, to the text budget)."""
    return ViPyloQwenProcessor(
        image_processor or Qwen2VLImageProcessorPil(),
        tokenizer,
        max_image_tokens=max_image_tokens,
        min_image_tokens=min(DEFAULT_MIN_IMAGE_TOKENS, max_image_tokens),
        max_text_tokens=DEFAULT_MAX_TEXT_TOKENS,
    )


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
