"""Build a viPyloQwen checkpoint from a pretrained Qwen2-VL checkpoint without loading it.

:func:`build_from_base` never materialises the model. The target :class:`ViPyloQwenModel` is built on the
meta device (names, shapes, config); the stock tensors are streamed from the base's safetensors shards into
shards of the same layout (same file names, same tensors per file, same dtype), byte for byte, under the
names transformers' checkpoint conversion mapping for ``Qwen2VLModel`` gives them (legacy ``model.layers.*``
/ ``visual.*`` and current names both work; custom code gets no conversion at load time, so the output
holds our own names). Only what is new is computed:

- the five task-prefix rows of the token embedding (set to the mean of the rows of the base tokenizer's
  tokens, in float64, stored in the base dtype; the matrix grows only if a task id lies past its end);
- ``embedding_projection.weight`` (identity on the first ``embed_dim`` features, see the modeling file),
  appended to the last shard.

Peak memory is the embedding matrix twice plus the tokenizer (about 1.5 GB for the 2B), whatever the model
size. The config's dtype is the base's; the LM head (tied or not) is dropped: viPyloQwen has none.

Example::

    >>> build_from_base("Qwen/Qwen2-VL-2B-Instruct", "build/vipyloqwen-2b")    # or a local folder
    BuildReport(out=PosixPath('build/vipyloqwen-2b'), parameters=2209..., dtype='bfloat16', shards=2, ...)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, Qwen2VLModel
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, rename_source_key
from transformers.dynamic_module_utils import custom_object_save

from configuration_vipyloqwen import DEFAULT_EMBED_DIM, DEFAULT_MAX_IMAGE_TOKENS, ViPyloQwenConfig
from modeling_vipyloqwen import ViPyloQwenModel
from vipyloqwen_tools.checkpoint.files import add_task_tokens, build_processor, write_support_files
from vipyloqwen_tools.checkpoint.safetensors_stream import Entry, TensorSource, read_header, write_file

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
EMBED_KEY = "language_model.embed_tokens.weight"
PROJECTION_KEY = "embedding_projection.weight"
DROPPED_PREFIXES = ("lm_head.",)  # viPyloQwen has no LM head
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]


@dataclass
class BuildReport:
    """What :func:`build_from_base` wrote."""

    out: Path
    parameters: int
    dtype: str
    shards: int
    total_bytes: int
    copied: int
    dropped: list[str] = field(default_factory=list)
    task_token_ids: list[int] = field(default_factory=list)


def resolve_base(base: str) -> Path:
    """A local folder for ``base``: the folder itself, or a snapshot of the Hub repo ``base``.

    Raises:
        ValueError: ``base`` is neither a folder nor a reachable Hub repo.
    """
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    if path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise ValueError(f"--base {base!r}: not a checkpoint folder and not a Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(base, allow_patterns=HUB_PATTERNS))
    except Exception as error:  # offline, unknown repo, gated: say which and why
        reason = f"{type(error).__name__}: {error}"
        raise ValueError(f"--base {base!r}: could not download it from the Hub ({reason})") from error


def base_shards(folder: Path) -> list[tuple[str, dict[str, TensorSource]]]:
    """(file name, tensors) of every weight file of ``folder``, in file-name order; checks the index."""
    index_path = folder / INDEX_NAME
    if index_path.is_file():
        weight_map: dict[str, str] = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
        shards = [(name, read_header(folder / name)) for name in names]
        listed = {key for _, tensors in shards for key in tensors}
        if listed != set(weight_map):
            raise ValueError(
                f"{index_path}: the index and the shards disagree: only in the index "
                f"{sorted(set(weight_map) - listed)[:5]}, only in the shards {sorted(listed - set(weight_map))[:5]}"
            )
        return shards
    if (folder / SINGLE_NAME).is_file():
        return [(SINGLE_NAME, read_header(folder / SINGLE_NAME))]
    raise ValueError(f"{folder}: no {INDEX_NAME} or {SINGLE_NAME} (only safetensors checkpoints are supported)")


def target_config(stock_config, embed_dim: int, vocab_rows: int, dtype: torch.dtype) -> ViPyloQwenConfig:
    """The viPyloQwen config of a stock Qwen2-VL config (every setting kept), with its dtype set."""
    settings = stock_config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "dtype", "torch_dtype"):
        settings.pop(key, None)
    config = ViPyloQwenConfig(**settings, embed_dim=embed_dim)
    config.text_config.vocab_size = vocab_rows
    config.dtype = dtype
    config.text_config.dtype = config.vision_config.dtype = dtype
    return config


class KeyMapper:
    """Checkpoint key -> Qwen2VLModel key, by transformers' own conversion mapping (what
    ``Qwen2VLModel.from_pretrained`` applies; custom classes are skipped by the loader)."""

    def __init__(self, stock_config):
        with torch.device("meta"):
            stock = Qwen2VLModel(stock_config)
        transforms = get_model_conversion_mapping(stock)
        self.renamings = [t for t in transforms if not isinstance(t, WeightConverter)]
        self.converters = [t for t in transforms if isinstance(t, WeightConverter)]
        self.prefix = stock.base_model_prefix
        self.meta = stock.state_dict()

    def __call__(self, key: str) -> str:
        # Same two steps as transformers.core_model_loading's loader loop.
        renamed, pattern = rename_source_key(key, self.renamings, self.converters, self.prefix, self.meta)
        if renamed not in self.meta and key in self.meta:
            renamed, pattern = rename_source_key(key, [], [], self.prefix, self.meta)
        if pattern is not None:
            raise ValueError(f"checkpoint key {key!r} needs a weight conversion, which this build does not do")
        return renamed


def _embedding_producer(source: TensorSource, rows: int, trained_rows: int, task_ids: list[int]):
    def produce() -> torch.Tensor:
        weight = source.load()
        if rows > weight.shape[0]:  # a task id past the end: grow (never shrink); new rows are set below
            weight = torch.cat([weight, weight.new_zeros(rows - weight.shape[0], weight.shape[1])])
        total = torch.zeros(weight.shape[1], dtype=torch.float64)
        for start in range(0, trained_rows, 8192):  # float64 sum in chunks: no fp32 copy of the whole matrix
            total += weight[start : min(start + 8192, trained_rows)].sum(0, dtype=torch.float64)
        mean = (total / trained_rows).to(weight.dtype)
        weight[task_ids] = mean
        weight[source.shape[0] :] = mean  # rows added by growing (none for the 2B: 151936 rows > 151662 ids)
        return weight

    return produce


def build_from_base(
    base: str,
    out: str | Path,
    embed_dim: int = DEFAULT_EMBED_DIM,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
) -> BuildReport:
    """Write the viPyloQwen checkpoint of the Qwen2-VL checkpoint ``base`` (Hub id or folder) into ``out``.

    Every backbone tensor is copied bit for bit (same dtype, same shard as in the base); see the module
    docstring for what is new.

    Raises:
        ValueError: a backbone tensor is missing from the checkpoint, a key is unexpected, a shape differs,
            or the checkpoint is not safetensors.
    """
    folder = resolve_base(base)
    out = Path(out)
    shards = base_shards(folder)
    stock_config = AutoConfig.from_pretrained(folder)
    if getattr(stock_config, "model_type", None) != "qwen2_vl":
        raise ValueError(f"{base}: model_type {getattr(stock_config, 'model_type', None)!r}, expected 'qwen2_vl'")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    trained_rows = len(tokenizer)
    task_ids = add_task_tokens(tokenizer)

    mapper = KeyMapper(stock_config)
    sources = {key: src for _, tensors in shards for key, src in tensors.items()}
    embed_source = next((src for key, src in sources.items() if mapper(key) == EMBED_KEY), None)
    if embed_source is None:
        raise ValueError(f"{base}: checkpoint does not match Qwen2VLModel: missing [{EMBED_KEY!r}]")
    dtype = embed_source.dtype
    rows = max(embed_source.shape[0], max(task_ids) + 1)
    if trained_rows > embed_source.shape[0]:
        raise ValueError(
            f"{base}: the tokenizer has {trained_rows} tokens but the embedding only {embed_source.shape[0]} rows"
        )
    config = target_config(stock_config, embed_dim, rows, dtype)
    with torch.device("meta"):
        target = ViPyloQwenModel(config)
    expected = {key: (tensor.dtype, tuple(tensor.shape)) for key, tensor in target.state_dict().items()}

    plan: list[tuple[str, list[Entry]]] = []
    seen: dict[str, str] = {}
    unexpected, mismatched, dropped = [], [], []
    for file_name, tensors in shards:
        entries = []
        for key, src in tensors.items():
            if key.startswith(DROPPED_PREFIXES):
                dropped.append(key)
                continue
            name = mapper(key)
            if name not in expected or name == PROJECTION_KEY:
                unexpected.append(key)
                continue
            if name in seen:
                raise ValueError(f"{base}: {key!r} and {seen[name]!r} both map to {name!r}")
            seen[name] = key
            shape = expected[name][1]
            if name == EMBED_KEY:
                data = _embedding_producer(src, rows, trained_rows, task_ids)
            elif src.shape != shape:
                mismatched.append(f"{key}: checkpoint {list(src.shape)}, model {list(shape)}")
                continue
            else:
                data = src
            entries.append(Entry(name, src.dtype, shape, data))
        plan.append((file_name, entries))
    missing = sorted(set(expected) - set(seen) - {PROJECTION_KEY})
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{base}: checkpoint does not match Qwen2VLModel: missing {missing}, unexpected {sorted(unexpected)}, "
            f"mismatched {mismatched}"
        )
    if PROJECTION_KEY in expected:
        projection_shape = expected[PROJECTION_KEY][1]
        plan[-1][1].append(
            Entry(PROJECTION_KEY, dtype, projection_shape, lambda: torch.eye(*projection_shape, dtype=dtype))
        )

    out.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for file_name, entries in plan:
        total += write_file(out / file_name, entries, metadata={"format": "pt"})
        weight_map.update({entry.name: file_name for entry in entries})
    if len(plan) > 1 or file_name != SINGLE_NAME:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    # Config and code files as save_pretrained writes them (dtype, architectures, auto_map).
    type(target.config).register_for_auto_class()
    type(target).register_for_auto_class("AutoModel")
    config.architectures = [type(target).__name__]
    custom_object_save(target, out, config=config)
    config.save_pretrained(out)
    image_processor = AutoImageProcessor.from_pretrained(folder)
    write_support_files(build_processor(tokenizer, max_image_tokens, image_processor), out, embed_dim)
    return BuildReport(
        out=out,
        parameters=sum(t.numel() for t in target.state_dict().values()),
        dtype=re.sub(r"^torch\.", "", str(dtype)),
        shards=len(plan),
        total_bytes=total,
        copied=len(seen) - 1,
        dropped=dropped,
        task_token_ids=list(task_ids),
    )
