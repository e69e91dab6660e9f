"""What the plugin reads from a viPyloQwen checkpoint (a folder or a Hub id): tasks, image budget, tokenizer.

The checkpoint is the source of truth for the served model: the task prefixes are its Sentence-Transformers
prompts (``config_sentence_transformers.json``, written from the task registry), the image budget and text
budget its processor config (``processor_config.json``). Pure Python (json, tokenizers): no vLLM import.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

# One merged image token covers a PATCH x PATCH pixel area (Qwen2-VL: patch 14, merge 2).
PATCH = 28


def checkpoint_file(model: str | Path, name: str, revision: str | None = None) -> Path:
    """Local path of ``name`` in a checkpoint folder or Hub repo (the Hub cache; HF_HUB_OFFLINE is honoured)."""
    if Path(model).is_dir():
        path = Path(model) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: is {model} a viPyloQwen checkpoint folder?")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(model), name, revision=revision))


@dataclass(frozen=True)
class CheckpointInfo:
    """The serving-relevant settings of a checkpoint."""

    path: str
    tasks: dict[str, str]  # task name -> prefix token, registry order
    max_image_tokens: int
    min_image_tokens: int
    max_text_tokens: int
    eos_token: str  # the embedding of an empty item
    image_settings: dict  # the image processor settings that shape pixels (mean, std, patch, merge ...)

    def image_size(self, max_image_tokens: int | None = None, min_image_tokens: int | None = None) -> dict:
        """The Qwen2-VL image processor ``size`` of a token budget (as ViPyloQwenProcessor.image_size_kwargs)."""
        max_tokens = max_image_tokens or self.max_image_tokens
        min_tokens = min(min_image_tokens or self.min_image_tokens, max_tokens)
        return {"shortest_edge": min_tokens * PATCH * PATCH, "longest_edge": max_tokens * PATCH * PATCH}


@functools.lru_cache(maxsize=8)
def read_checkpoint(model: str, revision: str | None = None) -> CheckpointInfo:
    """Read a checkpoint's tasks and budgets; ValueError naming the file when it is not a viPyloQwen one."""
    st_path = checkpoint_file(model, "config_sentence_transformers.json", revision)
    prompts = json.loads(st_path.read_text(encoding="utf-8")).get("prompts") or {}
    tasks = {name: prefix for name, prefix in prompts.items() if isinstance(prefix, str) and prefix}
    if not tasks:
        raise ValueError(f"{st_path} declares no task prompts: is {model} a viPyloQwen checkpoint?")
    processor = json.loads(checkpoint_file(model, "processor_config.json", revision).read_text(encoding="utf-8"))
    keep = ("image_mean", "image_std", "patch_size", "merge_size", "temporal_patch_size", "resample")
    image = processor.get("image_processor") or {}
    tokenizer_config = json.loads(checkpoint_file(model, "tokenizer_config.json", revision).read_text(encoding="utf-8"))
    return CheckpointInfo(
        path=str(model),
        tasks=tasks,
        max_image_tokens=int(processor.get("max_image_tokens", 1024)),
        min_image_tokens=int(processor.get("min_image_tokens", 4)),
        max_text_tokens=int(processor.get("max_text_tokens", 8192)),
        eos_token=tokenizer_config["eos_token"],
        image_settings={k: image[k] for k in keep if k in image},
    )


@functools.lru_cache(maxsize=8)
def plain_tokenizer(model: str, revision: str | None = None):
    """The checkpoint's tokenizer reading text as plain characters (special tokens typed in a text are split like
    any other characters), as ViPyloQwenProcessor.plain_token_ids; plus the special tokens' ids by string."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint_file(model, "tokenizer.json", revision)))
    specials = {token.content: token_id for token_id, token in tokenizer.get_added_tokens_decoder().items()}
    tokenizer.encode_special_tokens = True
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer, specials
