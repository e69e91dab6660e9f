"""viPyloQwen configuration, with the task registry re-exported.

The task registry (:data:`TASKS`, :func:`resolve_task`, :func:`split_task_prefix`, ...) lives in
:mod:`tasks_vipyloqwen` (standard library only) and is re-exported here, so
``from configuration_vipyloqwen import TASKS`` keeps working. This module adds the model configuration, the
default budgets and the MTEB prompt mapping.

Example::

    >>> from configuration_vipyloqwen import TASKS, resolve_task, split_task_prefix
    >>> TASKS["ocr"].prefix
    '<ocr>'
    >>> resolve_task("<vqa_single>")
    'vqa_single'
    >>> split_task_prefix("<ocr> Biển số xe này là gì?")
    ('ocr', 'Biển số xe này là gì?')
"""

from __future__ import annotations

from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig
from transformers.utils.versions import require_version

try:
    from .tasks_vipyloqwen import (
        MAX_IMAGES_PER_ITEM,
        ROLE_PROMPTS,
        TASKS,
        TaskSpec,
        prefix_tokens,
        resolve_task,
        split_task_prefix,
        st_prompts,
        task_names,
    )
except ImportError:  # imported as a top-level module (tests, scripts)
    from tasks_vipyloqwen import (
        MAX_IMAGES_PER_ITEM,
        ROLE_PROMPTS,
        TASKS,
        TaskSpec,
        prefix_tokens,
        resolve_task,
        split_task_prefix,
        st_prompts,
        task_names,
    )

# Fail at import, with the fix, rather than mis-load weights or configs on an untested major version.
require_version(
    "transformers>=5.23,<6", "viPyloQwen needs transformers 5.x (>=5.23): pip install 'transformers>=5.23,<6'"
)

DEFAULT_EMBED_DIM = 1024
# Per-image budget in merged image tokens (one token = a 28x28 pixel area).
DEFAULT_MAX_IMAGE_TOKENS = 1024
DEFAULT_MIN_IMAGE_TOKENS = 4
# Text budget in tokens per item (the task prefix and image tokens are not counted).
DEFAULT_MAX_TEXT_TOKENS = 8192


class ViPyloQwenConfig(Qwen2VLConfig):
    """Configuration of :class:`ViPyloQwenModel`: a Qwen2-VL config plus the embedding width.

    Args:
        embed_dim: width of the output embeddings (default 1024). A linear projection maps the text
            hidden size to it; no projection when it equals the hidden size.
        matryoshka_dimensions: the smaller widths the model was trained at (Matryoshka: the first ``d`` features,
            re-normalised, are a ``d``-wide embedding), e.g. ``[768, 512, 256]``; ``None`` (default): the model was
            not trained for truncation. Training writes it (``matryoshka_dims``); vLLM's ``dimensions`` request
            field accepts only these widths (docs/serving.md).
        **kwargs: everything :class:`~transformers.Qwen2VLConfig` takes (``text_config``,
            ``vision_config``, token ids, ...).

    Without ``text_config`` the text part takes transformers' ``Qwen2VLTextConfig`` defaults, which are the
    72B's (hidden 8192 x 80 layers), not the 2B's: load a checkpoint's config, or pass the sizes (the 2B's are
    in ``vipyloqwen_tools/checkpoint/architectures.py``).

    Example::

        >>> config = ViPyloQwenConfig.from_pretrained("erax-ai/viPyloQwen")  # the released 2B
        >>> small = ViPyloQwenConfig(embed_dim=32, text_config={"hidden_size": 64, "num_hidden_layers": 2})
        >>> small.model_type
        'vipyloqwen'
    """

    # Distinct from qwen2_vl on purpose: without trust_remote_code, loading must fail rather than
    # silently building the stock class.
    model_type = "vipyloqwen"
    embed_dim: int = DEFAULT_EMBED_DIM
    matryoshka_dimensions: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not isinstance(self.embed_dim, int) or isinstance(self.embed_dim, bool) or self.embed_dim <= 0:
            raise ValueError(f"embed_dim must be a positive integer, got {self.embed_dim!r}")
        dims = self.matryoshka_dimensions
        if dims is not None:
            if (
                not isinstance(dims, (list, tuple))
                or not dims
                or any(not isinstance(d, int) or isinstance(d, bool) or not 0 < d <= self.embed_dim for d in dims)
                or len(set(dims)) != len(dims)
            ):
                raise ValueError(
                    f"matryoshka_dimensions must be a non-empty list of distinct integers in 1..embed_dim "
                    f"({self.embed_dim}), got {dims!r}"
                )
            self.matryoshka_dimensions = list(dims)


# --- MTEB prompt mapping (used by eval/run_mteb.py) -------------------------------------------------
# Keys follow mteb's model-prompt keys: a task type ("STS") or "<TaskType>-query" / "<TaskType>-document"
# (mteb tries task name, then task type + role, then task type, then the bare role). Values are registry
# task names or the role names of ROLE_PROMPTS, never prefix strings: `mteb_prompts()` turns them into
# the prefix text through `st_prompts()`, so a renamed prefix follows automatically.
# - Symmetric text tasks (similarity, pair classification, clustering, classification, bitext, summary
#   scoring) compare two texts for meaning: the text_pair task, on every input.
# - Retrieval and reranking (text and multimodal: MIEB Any2Any, document screenshots): plain queries and
#   plain documents carry no prefix, as in the design notes' search example. The instr task is an
#   instruction -> response pairing, not question -> passage search, so it is not used here.
# - Visual QA with image + question queries: vqa_single on the query side, the answer side unprefixed.
_MTEB_SYMMETRIC_TEXT_TYPES = (
    "STS",
    "PairClassification",
    "Clustering",
    "Classification",
    "MultilabelClassification",
    "BitextMining",
    "Summarization",
)
_MTEB_RETRIEVAL_TYPES = (
    "Retrieval",
    "Reranking",
    "InstructionRetrieval",
    "InstructionReranking",
    "Any2AnyRetrieval",
    "Any2AnyMultilingualRetrieval",
    "Any2AnyReranking",
    "DocumentUnderstanding",
)
MTEB_PROMPTS: dict[str, str] = {
    **{task_type: "text_pair" for task_type in _MTEB_SYMMETRIC_TEXT_TYPES if "text_pair" in TASKS},
    **{f"{task_type}-{role}": role for task_type in _MTEB_RETRIEVAL_TYPES for role in ROLE_PROMPTS},
    **({"VisionCentricQA-query": "vqa_single"} if "vqa_single" in TASKS else {}),
    "VisionCentricQA-document": "document",
    # Anything not matched above (image classification/clustering, ...) falls back to the bare roles.
    **{role: role for role in ROLE_PROMPTS},
}


def mteb_prompts() -> dict[str, str]:
    """:data:`MTEB_PROMPTS` resolved to prompt text (the prefix token, or "" for no prefix), for mteb's
    ``model_prompts``."""
    prompts = st_prompts()
    return {key: prompts[name] for key, name in MTEB_PROMPTS.items()}


__all__ = [
    "ViPyloQwenConfig",
    "TaskSpec",
    "TASKS",
    "ROLE_PROMPTS",
    "MAX_IMAGES_PER_ITEM",
    "DEFAULT_EMBED_DIM",
    "DEFAULT_MAX_IMAGE_TOKENS",
    "DEFAULT_MIN_IMAGE_TOKENS",
    "DEFAULT_MAX_TEXT_TOKENS",
    "MTEB_PROMPTS",
    "task_names",
    "prefix_tokens",
    "st_prompts",
    "resolve_task",
    "split_task_prefix",
    "mteb_prompts",
]
