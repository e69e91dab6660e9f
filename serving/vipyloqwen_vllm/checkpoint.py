"""What the plugin reads from a viPyloQwen checkpoint (a folder or a Hub id): tasks, budgets, widths, tokenizer.

The checkpoint is the source of truth for the served model: the task prefixes are its Sentence-Transformers
prompts (``config_sentence_transformers.json``, written from the task registry), the image budget and text
budget its processor config (``processor_config.json``), the embedding size, Matryoshka widths, dtype and the
attention shape (for the KV cache) its ``config.json``. Pure Python (json, tokenizers): no vLLM import.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

# One merged image token covers a PATCH x PATCH pixel area (Qwen2-VL: patch 14, merge 2).
PATCH = 28
# Bytes per value of the dtype names a config.json may carry.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class ModelNotFound(ValueError):
    """``MODEL`` is neither a checkpoint folder here nor a Hub repo that can be fetched: one line saying which."""


def _root_cause(error: BaseException) -> str:
    """The innermost message of an exception chain (the socket error under the Hub client's wrapping)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def locate_model(model: str, revision: str | None = None) -> str:
    """Where ``model`` is: ``"folder PATH"`` or ``"Hub repo ID"``; ModelNotFound (one line) when it is a path that
    does not exist, a folder without ``config.json``, or a Hub id that cannot be fetched (the reason named).

    A name is a path (never looked up on the Hub) when it cannot be a Hub id (``/abs``, ``./rel``, ``a/b/c``) or
    when its parent folder exists here (``build/tiny`` where ``build/`` exists)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"MODEL={model}: the folder has no config.json (not a viPyloQwen checkpoint folder)")
        return f"folder {path.resolve()}"
    if path.exists():
        raise ModelNotFound(f"MODEL={model}: is a file, not a checkpoint folder")
    import logging

    from huggingface_hub import constants, errors, hf_hub_download
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except errors.HFValidationError:
        raise ModelNotFound(f"MODEL={model}: no such folder") from None
    if str(path.parent) != "." and path.parent.is_dir():
        raise ModelNotFound(f"MODEL={model}: no such folder ({path.parent.resolve()} has no {path.name})")
    # The Hub client logs each retry of an unreachable Hub: the one line below says it instead.
    http_logger = logging.getLogger("huggingface_hub.utils._http")
    level = http_logger.level
    http_logger.setLevel(logging.ERROR)
    try:
        hf_hub_download(model, "config.json", revision=revision)
    except errors.RepositoryNotFoundError:
        raise ModelNotFound(
            f"MODEL={model}: no such folder, and no Hub repo {model!r} (a private repo needs `hf auth login`)"
        ) from None
    except errors.RevisionNotFoundError:
        raise ModelNotFound(f"MODEL={model}: the Hub repo has no revision {revision!r}") from None
    except errors.EntryNotFoundError as error:
        if constants.HF_HUB_OFFLINE:
            raise ModelNotFound(
                f"MODEL={model}: no such folder, and not in the Hub cache (HF_HUB_OFFLINE=1 is set: unset it to "
                "download)"
            ) from None
        if isinstance(error, errors.LocalEntryNotFoundError):  # the Hub did not answer, nothing cached
            raise ModelNotFound(
                f"MODEL={model}: no such folder, and the Hugging Face Hub is unreachable ({_root_cause(error)}); "
                "check the connection (HF_ENDPOINT, proxy), or download the checkpoint elsewhere and give its folder"
            ) from None
        raise ModelNotFound(f"MODEL={model}: the Hub repo has no config.json (not a viPyloQwen checkpoint)") from None
    except (errors.HfHubHTTPError, OSError) as error:
        raise ModelNotFound(
            f"MODEL={model}: no such folder, and the Hub repo cannot be fetched ({_root_cause(error)})"
        ) from None
    finally:
        http_logger.setLevel(level)
    return f"Hub repo {model}"


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
    embed_dim: int  # the embedding size
    matryoshka_dimensions: tuple[int, ...]  # the widths ``dimensions`` may ask for (empty: none declared)
    dtype: str | None  # the weights' dtype (config.json ``dtype``), None when not recorded
    vocab_size: int  # rows of the language model's embedding table
    placeholder_ids: dict[int, str]  # image / video placeholder token ids -> their config key
    kv_values_per_token: int  # values one token holds in the KV cache (K and V, every layer and KV head)

    def image_size(self, max_image_tokens: int | None = None, min_image_tokens: int | None = None) -> dict:
        """The Qwen2-VL image processor ``size`` of a token budget (as ViPyloQwenProcessor.image_size_kwargs)."""
        max_tokens = max_image_tokens or self.max_image_tokens
        min_tokens = min(min_image_tokens or self.min_image_tokens, max_tokens)
        return {"shortest_edge": min_tokens * PATCH * PATCH, "longest_edge": max_tokens * PATCH * PATCH}

    def max_model_len(self, max_images: int, max_image_tokens: int | None = None) -> int:
        """The longest item in tokens: the task prefix, ``max_images`` images at the budget (each with its
        vision start / end tokens) and the text budget."""
        return 1 + max_images * ((max_image_tokens or self.max_image_tokens) + 2) + self.max_text_tokens

    def kv_cache_bytes(self, tokens: int, dtype: str | None = None) -> int:
        """KV cache bytes that hold ``tokens`` tokens with weights (and so the cache) in ``dtype``."""
        return tokens * self.kv_values_per_token * DTYPE_BYTES[dtype or self.dtype or "float32"]


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
    config = json.loads(checkpoint_file(model, "config.json", revision).read_text(encoding="utf-8"))
    text = config.get("text_config") or {}
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    dtype = config.get("dtype") or config.get("torch_dtype")
    return CheckpointInfo(
        path=str(model),
        tasks=tasks,
        max_image_tokens=int(processor.get("max_image_tokens", 1024)),
        min_image_tokens=int(processor.get("min_image_tokens", 4)),
        max_text_tokens=int(processor.get("max_text_tokens", 8192)),
        eos_token=tokenizer_config["eos_token"],
        image_settings={k: image[k] for k in keep if k in image},
        embed_dim=int(config["embed_dim"]),
        matryoshka_dimensions=tuple(int(d) for d in config.get("matryoshka_dimensions") or ()),
        dtype=dtype if dtype in DTYPE_BYTES else None,
        vocab_size=int(text["vocab_size"]),
        placeholder_ids={int(config[k]): k for k in ("image_token_id", "video_token_id") if config.get(k) is not None},
        # K and V, per layer, per KV head, head_dim values each.
        kv_values_per_token=2
        * int(text["num_hidden_layers"])
        * int(text.get("num_key_value_heads") or heads)
        * head_dim,
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
