"""A checkpoint's inference limits: the text and image token budgets its users get by default.

Three files carry them: ``processor_config.json`` (``max_text_tokens``, ``max_image_tokens``, ``min_image_tokens``),
``tokenizer_config.json`` (``model_max_length``: what Sentence-Transformers reads as ``max_seq_length``) and the
image processor's ``size`` in ``processor_config.json`` (pixels, derived from the image budget). A training run
shortens them to save memory (``--max-length``, ``--max-image-tokens``); :func:`applied` puts the base model's back
while a checkpoint is written, so every export (``final/``, ``checkpoint-<step>/``) keeps the base's limits whatever
the run trained at. :func:`reduced` is the release check's comparison.

Example::

    >>> from vipyloqwen_tools.checkpoint.limits import InferenceLimits
    >>> base = InferenceLimits.of_folder("build/tiny")
    >>> base.max_text_tokens, base.max_image_tokens
    (8192, 64)
    >>> with base.applied(processor):  # a processor loaded or shortened for training
    ...     save_checkpoint(model, processor, "runs/x/final")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LIMIT_NAMES = ("max_text_tokens", "max_image_tokens", "min_image_tokens")


@dataclasses.dataclass(frozen=True)
class InferenceLimits:
    """Text tokens per item and the per-image token budget (at most / at least)."""

    max_text_tokens: int
    max_image_tokens: int
    min_image_tokens: int

    @classmethod
    def of_processor(cls, processor: Any) -> InferenceLimits:
        """The live limits of a loaded viPyloQwen processor (the text budget is its tokenizer's ``model_max_length``,
        which Sentence-Transformers' ``max_seq_length`` reads and writes)."""
        return cls(
            max_text_tokens=int(processor.tokenizer.model_max_length),
            max_image_tokens=int(processor.max_image_tokens),
            min_image_tokens=int(processor.min_image_tokens),
        )

    @classmethod
    def of_folder(cls, folder: str | Path) -> InferenceLimits:
        """The limits a checkpoint folder loads with (its ``processor_config.json``)."""
        config = json.loads((Path(folder) / "processor_config.json").read_text(encoding="utf-8"))
        missing = [name for name in LIMIT_NAMES if not isinstance(config.get(name), int)]
        if missing:
            raise ValueError(f"{folder}/processor_config.json lacks the integer limit(s) {missing}")
        return cls(**{name: config[name] for name in LIMIT_NAMES})

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def set_on(self, processor: Any) -> None:
        """Make these the processor's live limits (text budget, image budget and the image processor's size)."""
        processor.tokenizer.model_max_length = self.max_text_tokens
        processor.max_text_tokens = self.max_text_tokens
        processor.max_image_tokens = self.max_image_tokens
        processor.min_image_tokens = min(self.min_image_tokens, self.max_image_tokens)
        processor.image_processor.size = processor.image_size_kwargs()

    @contextlib.contextmanager
    def applied(self, processor: Any) -> Iterator[None]:
        """These limits on ``processor`` inside the block (while a checkpoint is saved), its own ones after it."""
        live = InferenceLimits.of_processor(processor)
        self.set_on(processor)
        try:
            yield
        finally:
            live.set_on(processor)


def reduced(limits: InferenceLimits, base: InferenceLimits) -> list[str]:
    """Each upper limit of ``limits`` below the ``base``'s, as ``"max_text_tokens 256 < 8192"``."""
    return [
        f"{name} {getattr(limits, name)} < {getattr(base, name)}"
        for name in ("max_text_tokens", "max_image_tokens")
        if getattr(limits, name) < getattr(base, name)
    ]


def folder_problems(folder: str | Path) -> list[str]:
    """Disagreements between a folder's files on its text limit: Sentence-Transformers reads the tokenizer's
    ``model_max_length``, ``AutoModel.encode`` the processor's ``max_text_tokens``; both must say the same."""
    folder = Path(folder)
    try:
        limits = InferenceLimits.of_folder(folder)
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"limits unreadable: {error}"]
    if tokenizer.get("model_max_length") != limits.max_text_tokens:
        return [
            f"tokenizer_config.json model_max_length {tokenizer.get('model_max_length')} != processor_config.json "
            f"max_text_tokens {limits.max_text_tokens} (Sentence-Transformers and AutoModel would truncate "
            "differently)"
        ]
    return []


__all__ = ["LIMIT_NAMES", "InferenceLimits", "folder_problems", "reduced"]
