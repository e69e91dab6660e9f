"""viPyloQwen configuration and the task registry.

The task registry (:data:`TASKS`) is the single source of truth for the five task prefixes. The prefix
tokens added to the tokenizer, the Sentence-Transformers prompt names, the training dataset names, the
loss routing and the README tasks table are all derived from it.

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

from dataclasses import dataclass

from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLConfig
from transformers.utils.versions import require_version

# Fail at import, with the fix, rather than mis-load weights or configs on an untested major version.
require_version(
    "transformers>=5.23,<6", "viPyloQwen needs transformers 5.x (>=5.23): pip install 'transformers>=5.23,<6'"
)


@dataclass(frozen=True)
class TaskSpec:
    """One task of the registry.

    Attributes:
        name: registry key; also the ST prompt name and the training dataset name.
        prefix: the special token that starts every input of this task.
        description: one line for humans (README table, error messages).
        loss: name of the loss recipe training routes this task to.
        query: what the query side holds.
        document: what the document (positive) side holds.
    """

    name: str
    prefix: str
    description: str
    loss: str
    query: str
    document: str


# Order matters: it is the order of the added special tokens (and so of their ids).
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="text_pair",
            prefix="<text_pair>",
            description="Semantic similarity between two texts (graded score in [0, 1]).",
            loss="infonce+mse",
            query="text",
            document="text",
        ),
        TaskSpec(
            name="instr",
            prefix="<instr>",
            description="Instruction (single or multi-turn) -> response.",
            loss="infonce+cosine",
            query="text",
            document="text",
        ),
        TaskSpec(
            name="ocr",
            prefix="<ocr>",
            description="Image(s) of text (documents, signs, forms) + question -> answer.",
            loss="infonce+triplet",
            query="1-5 images + text",
            document="text",
        ),
        TaskSpec(
            name="vqa_multi",
            prefix="<vqa_multi>",
            description="Multi-turn visual question answering over 1-5 images.",
            loss="infonce+triplet",
            query="1-5 images + dialogue text",
            document="text",
        ),
        TaskSpec(
            name="vqa_single",
            prefix="<vqa_single>",
            description="Single-turn visual question answering over 1-5 images.",
            loss="infonce+triplet",
            query="1-5 images + question",
            document="text",
        ),
    )
}

# Generic retrieval roles. As in the design notes' search example, plain queries and documents
# carry no task prefix; ST's encode_query / encode_document find these names.
ROLE_PROMPTS: dict[str, str] = {"query": "", "document": ""}

MAX_IMAGES_PER_ITEM = 5
DEFAULT_EMBED_DIM = 1024
# Per-image budget in merged image tokens (one token = a 28x28 pixel area).
DEFAULT_MAX_IMAGE_TOKENS = 1024
DEFAULT_MIN_IMAGE_TOKENS = 4
# Text budget in tokens per item (the task prefix and image tokens are not counted).
DEFAULT_MAX_TEXT_TOKENS = 8192


def task_names() -> list[str]:
    """The registry keys, in registry order."""
    return list(TASKS)


def prefix_tokens() -> list[str]:
    """The task prefix tokens, in registry order (the order they are added to the tokenizer)."""
    return [spec.prefix for spec in TASKS.values()]


def st_prompts() -> dict[str, str]:
    """Sentence-Transformers prompts: one per task (named by its key) plus the query/document roles."""
    return {**{name: spec.prefix for name, spec in TASKS.items()}, **ROLE_PROMPTS}


def resolve_task(task: str | None) -> str | None:
    """Map a task given as a registry key or a prefix token to its registry key.

    ``None`` and the role names (``query``/``document``, no prefix) give ``None``.
    Raises ValueError naming the valid options otherwise.
    """
    if task is None or task in ROLE_PROMPTS:
        return None
    if task in TASKS:
        return task
    for name, spec in TASKS.items():
        if task == spec.prefix:
            return name
    valid = ", ".join([*TASKS, *(s.prefix for s in TASKS.values()), *ROLE_PROMPTS])
    raise ValueError(f"Unknown task {task!r}. Valid tasks: {valid}.")


def split_task_prefix(text: str) -> tuple[str | None, str]:
    """Split a typed task prefix off the start of ``text``.

    Returns ``(task_name, rest)`` where ``rest`` has the whitespace after the prefix removed, so
    ``"<ocr> Hỏi"`` and a task given separately produce the same tokens. Text without a leading
    prefix gives ``(None, text)`` unchanged.
    """
    stripped = text.lstrip()
    for name, spec in TASKS.items():
        if stripped.startswith(spec.prefix):
            return name, stripped[len(spec.prefix) :].lstrip()
    return None, text


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
