"""One item, read once: the canonical form every input takes before tokenisation.

An item is what one embedding is computed from: a task (or none), 0-5 images and a text. Items come as
chat messages (what Sentence-Transformers sends, and what :func:`build_messages` makes from ``encode``'s
``text`` / ``images`` / ``task`` / ``prompt`` arguments). :func:`split_item` reads them with these rules,
the same for every caller:

- **Prompt.** The text of the system message(s) is the prompt (Sentence-Transformers puts ``prompt`` /
  the text of ``prompt_name`` there). A prompt is text put before the item's text, exactly as if typed:
  ``prompt="query: "`` embeds ``"query: " + text``. A prompt that starts with a task prefix (the prompt of
  ``prompt_name="ocr"`` is ``"<ocr>"``) selects that task, and the rest of it is text.
- **Task prefix.** A task prefix counts only at the very start of the typed text (prompt + text, leading
  whitespace ignored; the whitespace after it is dropped). Everywhere else ``<ocr>``, ``<instr>``, ... are
  plain characters, as are the vision and chat tokens (``<|image_pad|>``, ``<|vision_start|>``,
  ``<|im_start|>``, ...): the tokenizer reads the text with special tokens split into plain characters.
  A task given separately (``task=``, ``prompt_name``, a prompt that is just a prefix) and a prefix typed
  at the start of the text must agree (the same task twice counts once).
- **Empty text.** Empty or whitespace-only text is valid. With images, the item is its images alone;
  without images, the item embeds as the task prefix (if any) followed by the end-of-text token
  ``<|im_end|>`` (the tokenizer's eos): deterministic, the same for ``""``, ``"   "``, ``"\\n"``; a bare
  ``"<ocr>"`` is that with the ocr prefix.
  An item with no text at all (``None``) and no image is an error.
- **Errors** name the item, counting from 1 (as people do): ``item 3 (text 'Biển số xe...')`` by its position
  in the caller's input
  (``AutoModel.encode``), ``batch item 1 (text '...')`` by its position in the batch handed to the
  processor (Sentence-Transformers sorts its input by length before batching, so the position is within
  that sorted batch; the text start / image path / image size in the message identify the item).

Example::

    >>> split_item([{"role": "system", "content": "<ocr>"}, {"role": "user", "content": "<ocr> <ocr> a"}], "item 1")
    ParsedItem(task='ocr', text='<ocr> a', images=[], has_text=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    from .images_vipyloqwen import describe
    from .tasks_vipyloqwen import MAX_IMAGES_PER_ITEM, TASKS, resolve_task, split_task_prefix
except ImportError:  # imported as a top-level module (tests, scripts)
    from images_vipyloqwen import describe
    from tasks_vipyloqwen import MAX_IMAGES_PER_ITEM, TASKS, resolve_task, split_task_prefix

TEXT_PREVIEW = 40


@dataclass
class ParsedItem:
    """An item's task, text and (not yet loaded) images, after the prompt and prefix rules.

    Attributes:
        task: registry key, or None.
        text: the text after the task prefix ("" when there is none).
        images: the image values as given (paths, PIL images, arrays, ...).
        has_text: whether the item had any text (a prompt or a text entry, possibly empty).
    """

    task: str | None
    text: str
    images: list[Any] = field(default_factory=list)
    has_text: bool = False

    @property
    def is_empty(self) -> bool:
        """No images and only whitespace text: embedded as ``[prefix] <|im_end|>``."""
        return not self.images and not self.text.strip()


class CanonicalItem(list):
    """An item in canonical form: ``[system: prefix] + [user: images..., text]`` messages (a list, so the
    chat template renders it), with the parsed fields as attributes.

    The processor never re-reads a CanonicalItem, so canonicalising is done once per item whoever calls
    :meth:`ViPyloQwenProcessor.apply_chat_template` with it.

    Attributes:
        task: registry key, or None.
        text: the text to tokenise as plain characters ("" for none).
        images: RGB PIL images, already oriented and bounded.
        where: the item's name in error messages.
    """

    def __init__(self, task: str | None, text: str, images: list[Any], where: str) -> None:
        self.task, self.text, self.images, self.where = task, text, list(images), where
        content: list[dict[str, Any]] = [{"type": "image", "image": image} for image in self.images]
        if text.strip():
            content.append({"type": "text", "text": text})
        messages = [{"role": "user", "content": content}]
        if task is not None:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": TASKS[task].prefix}]})
        super().__init__(messages)


def _content_items(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, dict):
        return [content]
    if not isinstance(content, (list, tuple)) or not all(isinstance(item, dict) for item in content):
        raise TypeError(f"{where}: message content must be a string or a list of content dicts")
    return list(content)


def _image_value(item: dict[str, Any]) -> Any:
    # Sentence-Transformers uses "image"; transformers chat messages also allow "url" / "path".
    # A 2-D array that Sentence-Transformers labelled "audio" is read as a grey image: viPyloQwen has no audio.
    return next((item[key] for key in ("image", "url", "path", "audio") if key in item), None)


def _raw_parts(conversation: Any, where: str) -> tuple[list[str], list[str], list[Any]]:
    """(system texts, user texts, images) of one item's messages, validated."""
    if isinstance(conversation, dict):
        conversation = [conversation]
    if not isinstance(conversation, (list, tuple)) or not all(isinstance(m, dict) for m in conversation):
        raise TypeError(f"{where}: expected a list of message dicts, got {type(conversation).__name__}")
    prompts: list[str] = []
    texts: list[str] = []
    images: list[Any] = []
    for message in conversation:
        role = message.get("role")
        if role not in ("system", "user"):
            raise ValueError(f"{where}: unsupported message role {role!r}; use 'system' (prompt) and 'user'")
        for item in _content_items(message.get("content"), where):
            kind = item.get("type", "text")
            if kind == "text":
                value = item.get("text")
                if value is not None and not isinstance(value, str):
                    raise TypeError(f"{where}: text must be a string, got {type(value).__name__}")
                (prompts if role == "system" else texts).append(value or "")
            elif kind in ("image", "audio") and role == "user":
                if kind == "audio" and getattr(_image_value(item), "ndim", None) != 2:
                    raise ValueError(f"{where}: viPyloQwen embeds text and images only (got audio)")
                images.append(_image_value(item))
            else:
                raise ValueError(
                    f"{where}: unsupported content type {kind!r} in a {role} message; valid: 'text' (system, user), "
                    "'image' (user)"
                )
    return prompts, texts, images


def describe_item(conversation: Any) -> str:
    """What identifies an item in an error message: its text start and its first image (path, size)."""
    try:
        prompts, texts, images = _raw_parts(conversation, "item")
    except (TypeError, ValueError):
        return type(conversation).__name__
    parts = []
    text = "\n".join(texts)
    if text or not images:
        preview = text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "..."
        parts.append(f"text {preview!r}")
    if images:
        more = f" + {len(images) - 1} more" if len(images) > 1 else ""
        parts.append(f"image {describe(images[0])}{more}")
    return "; ".join(parts)


def label(position: str, conversation: Any) -> str:
    """``"item 3 (text 'abc')"``: a position (``"item 3"``, ``"batch item 1"``) and what identifies the item."""
    return f"{position} ({describe_item(conversation)})"


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise ValueError(
            f"{where}: text is not valid Unicode: lone surrogate {bad!r} (U+{ord(bad):04X}) at character "
            f"{error.start}; decode the source text properly (e.g. errors='replace')"
        ) from None


def split_item(conversation: Any, where: str) -> ParsedItem:
    """Read one item's messages with the prompt / prefix / empty-text rules of the module docstring.

    Raises:
        TypeError / ValueError naming ``where``: malformed messages, conflicting tasks, too many images,
        invalid Unicode, neither text nor image.
    """
    prompts, texts, images = _raw_parts(conversation, where)
    prompt = "".join(prompts)
    text = "\n".join(texts) if texts else None
    prompt_task, prompt_rest = split_task_prefix(prompt) if prompt else (None, "")
    typed_task, body = split_task_prefix(prompt_rest + (text or ""))
    if prompt_task and typed_task and prompt_task != typed_task:
        raise ValueError(
            f"{where}: conflicting tasks {prompt_task!r} (task / prompt) and {typed_task!r} (typed at the start of "
            "the text); give one task"
        )
    _check_unicode(body, where)
    if len(images) > MAX_IMAGES_PER_ITEM:
        raise ValueError(f"{where}: {len(images)} images, at most {MAX_IMAGES_PER_ITEM} per item")
    has_text = text is not None or bool(prompt_rest)
    if not has_text and not images:
        raise ValueError(f"{where}: has neither text nor image (give '' for an empty text)")
    return ParsedItem(task=prompt_task or typed_task, text=body, images=images, has_text=has_text)


def build_messages(
    text: str | Sequence[str | None] | None = None,
    images: Any = None,
    task: str | None = None,
    prompt: str | None = None,
) -> list[list[dict[str, Any]]]:
    """Turn parallel ``text`` / ``images`` inputs into one message list per item.

    Args:
        text: one string, or a list/tuple with one entry per item (``None`` for image-only items).
        images: one image, or a list with one entry per item (each ``None``, an image, or a list of 1-5
            images), or ``None``. With a single text, a list of images is that item's images.
        task: registry key or prefix token applied to every item.
        prompt: free text put before every item's text, exactly as if typed (a leading task prefix in it
            selects that task).

    Raises:
        TypeError / ValueError: wrong types, empty input, lists of different lengths.
    """
    if text is not None and not isinstance(text, (str, list, tuple)):
        raise TypeError(
            f"text must be a string, a list of strings (None for image-only items) or None; got {type(text).__name__}"
        )
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string or None, got {type(prompt).__name__}")
    single = isinstance(text, str) or (text is None and not isinstance(images, (list, tuple)))
    if single:
        texts, per_item_images = [text], [images]
    else:
        texts = list(text) if text is not None else None
        per_item_images = list(images) if isinstance(images, (list, tuple)) else images
        if texts is None:
            texts = [None] * len(per_item_images)
        elif per_item_images is None:
            per_item_images = [None] * len(texts)
        elif not isinstance(per_item_images, list):
            raise ValueError(
                f"images must be a list with one entry per text item ({len(texts)} texts), "
                f"got a single {type(per_item_images).__name__}"
            )
    if not texts:
        raise ValueError("Empty input: give at least one text or image")
    if len(texts) != len(per_item_images):
        raise ValueError(
            f"text and images must have the same length: {len(texts)} texts vs {len(per_item_images)} image entries"
        )
    system = (TASKS[name].prefix if (name := resolve_task(task)) else "") + (prompt or "")
    messages = []
    for index, (item_text, item_images) in enumerate(zip(texts, per_item_images, strict=True)):
        if item_text is not None and not isinstance(item_text, str):
            raise TypeError(f"item {index + 1}: text must be a string or None, got {type(item_text).__name__}")
        if item_images is None:
            item_images = []
        elif not isinstance(item_images, (list, tuple)):
            item_images = [item_images]
        content: list[dict[str, Any]] = [{"type": "image", "image": image} for image in item_images]
        if item_text is not None:
            content.append({"type": "text", "text": item_text})
        conversation = [{"role": "user", "content": content}]
        if system:
            conversation.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        messages.append(conversation)
    return messages


__all__ = ["ParsedItem", "CanonicalItem", "split_item", "build_messages", "describe_item", "label"]
