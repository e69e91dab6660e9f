"""The task registry: the five tasks, their prefix tokens and the item limits (standard library only).

:data:`TASKS` is the single source of truth for the task prefixes. The prefix tokens added to the tokenizer, the
Sentence-Transformers prompt names, the training dataset names, the loss routing and the README tasks table are all
derived from it. This module imports nothing but the standard library, so code that reads items without a model
(:mod:`items_vipyloqwen`, a server's request reader, data tools) needs neither torch nor transformers;
:mod:`configuration_vipyloqwen` re-exports every name here.

Example::

    >>> from tasks_vipyloqwen import TASKS, resolve_task, split_task_prefix
    >>> TASKS["ocr"].prefix
    '<ocr>'
    >>> resolve_task("<vqa_single>")
    'vqa_single'
    >>> split_task_prefix("<ocr> Biển số xe này là gì?")
    ('ocr', 'Biển số xe này là gì?')
"""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = [
    "TaskSpec",
    "TASKS",
    "ROLE_PROMPTS",
    "MAX_IMAGES_PER_ITEM",
    "task_names",
    "prefix_tokens",
    "st_prompts",
    "resolve_task",
    "split_task_prefix",
]
