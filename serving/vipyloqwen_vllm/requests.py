"""Embedding requests read with the rules of ``encode`` (items_vipyloqwen), then handed to vLLM.

A request is refused (:class:`RequestError`, HTTP 400 unless said otherwise) naming the item, numbered from 1
as ``item 2 of 3``, before vLLM sees it; a valid one is rewritten so that vLLM computes exactly what ``encode``
does. :meth:`ItemReader.read` reads the ``/v1/embeddings`` body; :mod:`.routes` reads ``/pooling`` and
``/v2/embed`` bodies with the same item rules.

- **Texts** (``input``: a string or a list of strings) become token ids: ``[task prefix] [text]``, the prefix
  typed at the very start of the text (the whitespace after it dropped), the text read as plain characters
  (special tokens typed in it are not special), an empty text as the end-of-text token, the text cut to the
  checkpoint's ``max_text_tokens``.
- **Token ids** (``input``: a list of integers, one item; or a list of such lists, every element a non-empty
  list of integers) pass through unchanged once checked like vLLM checks them, but item by item: each id in
  ``0..max_token_id`` (vLLM's vocabulary bound), no image / video placeholder id (images go in chat items),
  at most the server's max model length per item.
- **Chat items** (``messages``, or ``input`` holding messages; one conversation or a list of them): system
  text is a prompt put before the item's text (a prompt holding a task prefix selects that task, as
  Sentence-Transformers' ``prompt_name`` does), user content is ``image_url`` parts and ``text`` parts. Each
  image URL (``data:``, http(s), ``file://``, or an absolute path, read as a ``file://`` URL) is fetched by
  vLLM's media connector (:mod:`.media`: the server's ``--allowed-media-domains``,
  ``--allowed-local-media-path``, fetch timeout and size limits apply), prepared by the checkpoint's own
  image code (``images_vipyloqwen.prepare_image``: orientation, RGB, early shrink) and sent to vLLM as a PNG
  ``data:`` URL; the item is rewritten as ``[prefix] [images] [text]``, the layout
  ``processor.build_messages`` + the embedding chat template produce.
- **Task per request**: a top-level ``"task"`` field (a task name such as ``"ocr"`` or its prefix ``"<ocr>"``;
  ``"query"`` / ``"document"``: no task) applies to every item, as ``encode(task=...)``.
- **Width**: ``dimensions`` must be one of the checkpoint's Matryoshka widths (the error lists them).

Refused: no items, an unknown ``task``, a text starting with what looks like a task prefix but is none
(``<name>`` + whitespace, ``name`` neither a task nor an HTML tag; only without a ``task`` field or prompt,
where ``encode`` would embed it as plain text), conflicting tasks, more than :data:`MAX_IMAGES_PER_ITEM`
images, an image that cannot be fetched or read, an item with neither text nor image, chat text holding a
special token string (vLLM's chat path would read it as a control token, ``encode`` as plain characters),
bad token ids, a width the model was not trained at.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointInfo

# configuration_vipyloqwen.MAX_IMAGES_PER_ITEM (the Hub code needs a newer transformers than vLLM's; the
# serving tests check the two agree).
MAX_IMAGES_PER_ITEM = 5
TEXT_PREVIEW = 40
# A text starting like a task prefix: "<name>" then whitespace or the end.
_PREFIX_LIKE = re.compile(r"\s*<([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)>(?:\s|$)")
# HTML elements a passage may start with (a "<p> ..." passage is text, not a mistyped task prefix).
HTML_TAGS = frozenset(
    "a abbr address area article aside audio b base bdi bdo big blockquote body br button canvas caption center "
    "cite code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure "
    "font footer form frame frameset head header hgroup hr html i iframe img input ins kbd label legend li link "
    "main map mark menu meta meter nav noscript object ol optgroup option output p param picture pre progress q "
    "rp rt ruby s samp script section select slot small source span strike strong style sub summary sup svg "
    "table tbody td template textarea tfoot th thead time title tr track tt u ul var video wbr".split()
)


class RequestError(ValueError):
    """A refused request: answered with ``status`` (400 unless said otherwise) and this message, in vLLM's error
    format (``kind`` is its ``type``)."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        kind: str = "BadRequestError",
    ):
        super().__init__(message)
        self.param = param
        self.status = status
        self.kind = kind


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ItemReader:
    """Reads requests for one served checkpoint.

    Args:
        info: the checkpoint's tasks and budgets (:func:`checkpoint.read_checkpoint`).
        tokenizer: the checkpoint's tokenizer reading text as plain characters (:func:`checkpoint.plain_tokenizer`).
        special_tokens: special token string -> id (the tokenizer's added tokens).
        eos_token: the end-of-text token string, the embedding of an empty item (``info.eos_token``).
        prepare_image: ``images_vipyloqwen.prepare_image`` (value, where, max_pixels) -> RGB PIL image.
        fetch: ``(url, where) -> bytes`` of an image URL, RequestError when refused (in the server: vLLM's media
            connector, :func:`.media.connector_fetch`).
        max_image_tokens: the server's per-image budget (images far above it are shrunk early).
        max_tokens: the server's max model length (the longest token-id item).
        max_token_id: the largest valid token id (vLLM's bound: the tokenizer's or the embedding table's).
    """

    info: CheckpointInfo
    tokenizer: Any
    special_tokens: dict[str, int]
    eos_token: str
    prepare_image: Callable[..., Any]
    fetch: Callable[[str, str], bytes]
    max_image_tokens: int
    max_tokens: int
    max_token_id: int

    # ------------------------------------------------------------------ request
    def read(self, body: Any) -> dict[str, Any]:
        """The request to hand to vLLM; RequestError naming the item when ``encode`` would refuse it."""
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        body = dict(body)
        task = self._request_task(body.pop("task", None))
        self.check_dimensions(body.get("dimensions"), "dimensions")
        if "messages" in body:
            conversations = self._conversations(body.pop("messages"), "messages")
            body["messages"] = self.chat_items(conversations, task)
            body.pop("input", None)
            return body
        if "input" not in body:
            raise RequestError("empty request: give `input` (texts) or `messages` (chat items with images)", "input")
        value = body["input"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise RequestError(
                "empty request: `input` must be a text, a non-empty list of texts, token ids or chat messages",
                "input",
            )
        if all(_is_int(v) for v in value):
            self.check_token_ids(value, "item 1 of 1")  # one item of token ids
            return body
        if all(isinstance(v, list) for v in value) and self._token_id_lists(value):
            for index, ids in enumerate(value):
                self.check_token_ids(ids, f"item {index + 1} of {len(value)}")
            return body
        if all(isinstance(v, dict) for v in value) or all(isinstance(v, list) for v in value):
            body.pop("input")
            body["messages"] = self.chat_items(self._conversations(value, "input"), task)
            return body
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise RequestError(
                    f"item {index + 1} of {len(value)}: expected a text, got {type(item).__name__} (a list mixes "
                    "texts with other values; chat items go in `messages`)",
                    "input",
                )
        body["input"] = [self.text_ids(text, task, f"item {i + 1} of {len(value)}") for i, text in enumerate(value)]
        return body

    # ------------------------------------------------------------------ token ids and widths
    @staticmethod
    def _token_id_lists(value: list[list]) -> bool:
        """Whether a list of lists is token ids per item (rather than chat conversations); RequestError naming the
        first item of the other kind when it mixes the two."""
        kinds = [
            "ids" if any(_is_int(x) for x in v) else "chat" if any(isinstance(x, dict) for x in v) else None
            for v in value
        ]
        first = next((kind for kind in kinds if kind), None)
        for index, kind in enumerate(kinds):
            if kind and kind != first:
                what = {"ids": "token ids", "chat": "chat messages"}
                raise RequestError(
                    f"item {index + 1} of {len(value)}: {what[kind]}, where the request's first items are "
                    f"{what[first]}; one request holds one kind of item",
                    "input",
                )
        if first is None:  # only empty (or unreadable) lists
            raise RequestError(
                f"item 1 of {len(value)}: expected token ids (a non-empty list of integers) or chat messages, got "
                f"{value[0]!r:.60}",
                "input",
            )
        return first == "ids"

    def check_token_ids(self, ids: list, where: str) -> None:
        """One token-id item checked as vLLM checks it (vocabulary, length), plus no image placeholder ids."""
        if not ids:
            raise RequestError(f'{where}: empty list of token ids (an empty text is the string "")', "input")
        for position, token in enumerate(ids):
            if not _is_int(token):
                raise RequestError(f"{where}: token {position + 1} is {token!r:.40}, not an integer token id", "input")
            if not 0 <= token <= self.max_token_id:
                raise RequestError(
                    f"{where}: token id {token} (token {position + 1}) is out of vocabulary; valid ids: "
                    f"0..{self.max_token_id}",
                    "input",
                )
            if token in self.info.placeholder_ids:
                raise RequestError(
                    f"{where}: token id {token} (token {position + 1}) is the {self.info.placeholder_ids[token]} "
                    "placeholder; send images as image_url parts of chat items",
                    "input",
                )
        if len(ids) > self.max_tokens:
            raise RequestError(
                f"{where}: {len(ids)} token ids, more than this server's {self.max_tokens} tokens per item "
                "(its max model length)",
                "input",
            )

    def check_dimensions(self, value: Any, field: str) -> None:
        """``dimensions`` (``field``) must be a Matryoshka width of the checkpoint; the error lists them."""
        if value is None:
            return
        widths = self.info.matryoshka_dimensions
        size = self.info.embed_dim
        if not widths:
            raise RequestError(
                f"`{field}` {value!r}: this model declares no Matryoshka widths, so it gives only its full "
                f"{size}-wide vectors; leave `{field}` unset",
                field,
            )
        if not _is_int(value) or value not in widths:
            raise RequestError(
                f"`{field}` {value!r} is not a width this model was trained at; allowed widths: "
                f"{', '.join(map(str, widths))} (embedding size {size})",
                field,
            )

    def _request_task(self, task: Any) -> str | None:
        """The request's ``task`` field as a task name; ``""`` for the roles (no task, but given)."""
        if task is None:
            return None
        if task in ("query", "document", ""):
            return ""
        for name, prefix in self.info.tasks.items():
            if task in (name, prefix):
                return name
        valid = ", ".join([*self.info.tasks, *self.info.tasks.values(), "query", "document"])
        raise RequestError(f"unknown task {task!r}; valid tasks: {valid}", "task")

    @staticmethod
    def _conversations(value: Any, field: str) -> list[list[dict]]:
        if not isinstance(value, list) or not value:
            raise RequestError(f"empty request: `{field}` must be a non-empty list of chat messages", field)
        if all(isinstance(m, dict) for m in value):
            return [value]  # one conversation
        if all(isinstance(c, list) for c in value):
            return value
        raise RequestError(f"`{field}` must be one conversation (a list of messages) or a list of them", field)

    # ------------------------------------------------------------------ task prefixes
    def split_prefix(self, text: str) -> tuple[str | None, str]:
        """configuration_vipyloqwen.split_task_prefix with the checkpoint's tasks."""
        stripped = text.lstrip()
        for name, prefix in self.info.tasks.items():
            if stripped.startswith(prefix):
                return name, stripped[len(prefix) :].lstrip()
        return None, text

    def _check_prefix_like(self, text: str, where: str) -> None:
        match = _PREFIX_LIKE.match(text)
        if match and match.group(1).lower() not in HTML_TAGS:
            valid = ", ".join(self.info.tasks.values())
            raise RequestError(
                f"{where}: unknown task prefix <{match.group(1)}> at the start of the text; valid prefixes: {valid} "
                '(to embed the text as typed, give the request field "task": "query")'
            )

    def _item_task(self, where: str, request_task: str | None, prompt: str, text: str) -> tuple[str | None, str]:
        """(task, body) of an item, as items_vipyloqwen.split_item: the request's task and a prompt's prefix
        first, then a prefix typed at the start of prompt rest + text; conflicting tasks are an error."""
        prompt_task, prompt_rest = self.split_prefix(prompt) if prompt else (None, "")
        typed_task, body = self.split_prefix(prompt_rest + text)
        given = [t for t in (request_task, prompt_task) if t]
        if len(set(given)) > 1 or (given and typed_task and typed_task != given[0]):
            found = sorted({*given, *([typed_task] if typed_task else [])})
            raise RequestError(f"{where}: conflicting tasks {found} (request `task`, prompt, typed prefix); give one")
        if request_task is None and not prompt and typed_task is None:
            self._check_prefix_like(body, where)
        return (given[0] if given else typed_task), body

    # ------------------------------------------------------------------ texts
    def text_ids(self, text: str, request_task: str | None, where: str) -> list[int]:
        """Token ids of one text item, as ViPyloQwenProcessor.encode_items."""
        self._check_unicode(text, where)
        task, body = self._item_task(f"{where} ({self._preview(text)})", request_task, "", text)
        ids = [self.special_tokens[self.info.tasks[task]]] if task else []
        text_ids = self._plain_ids(body) if body.strip() else []
        return ids + (text_ids or [self.special_tokens[self.eos_token]])

    def _plain_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids[: self.info.max_text_tokens]

    @staticmethod
    def _check_unicode(text: str, where: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise RequestError(
                f"{where}: text is not valid Unicode (lone surrogate at character {error.start})"
            ) from None

    @staticmethod
    def _preview(text: str) -> str:
        return "text " + repr(text if len(text) <= TEXT_PREVIEW else text[:TEXT_PREVIEW] + "...")

    # ------------------------------------------------------------------ chat items
    def chat_items(self, conversations: list[list[dict]], request_task: str | None) -> list[list[dict]]:
        """Chat items (one conversation each) rewritten by :meth:`chat_item`, numbered in the request."""
        total = len(conversations)
        return [self.chat_item(conv, request_task, f"item {i + 1} of {total}") for i, conv in enumerate(conversations)]

    def chat_item(self, conversation: list[dict], request_task: str | None, where: str) -> list[dict]:
        """One chat item rewritten as ``[prefix] [images as PNG data: URLs] [text]`` in one user message."""
        prompts, texts, images = self._parts(conversation, where)
        text = "\n".join(texts) if texts else None
        if text is not None:
            where = f"{where} ({self._preview(text)})"
        for value in (*prompts, text or ""):
            self._check_unicode(value, where)
        prompt = "".join(prompts)
        task, body = self._item_task(where, request_task, prompt, text or "")
        _, prompt_rest = self.split_prefix(prompt) if prompt else (None, "")
        if text is None and not prompt_rest and not images:
            raise RequestError(f"{where}: has neither text nor image (give '' for an empty text)")
        if len(images) > MAX_IMAGES_PER_ITEM:
            raise RequestError(f"{where}: {len(images)} images, at most {MAX_IMAGES_PER_ITEM} per item")
        content: list[dict] = [{"type": "text", "text": self.info.tasks[task]}] if task else []
        for j, url in enumerate(images):
            content.append(
                {"type": "image_url", "image_url": {"url": self._image_data_url(url, f"{where}, image {j + 1}")}}
            )
        if body.strip():
            found = [token for token in self.special_tokens if token in body]
            if found:
                raise RequestError(
                    f"{where}: the text holds the special token string(s) {found[:3]}, which vLLM's chat path would "
                    "read as control tokens (encode reads them as plain characters); send text-only items to "
                    "/v1/embeddings as `input`"
                )
            ids = self._plain_ids(body)
            if len(ids) == self.info.max_text_tokens:  # maybe cut: keep the first max_text_tokens tokens' text
                body = self.tokenizer.decode(ids, skip_special_tokens=False)
            content.append({"type": "text", "text": body})
        elif not images:
            content.append({"type": "text", "text": self.eos_token})
        return [{"role": "user", "content": content}]

    def _parts(self, conversation: Any, where: str) -> tuple[list[str], list[str], list[Any]]:
        """(system texts, user texts, image URLs) of one conversation, validated."""
        if not isinstance(conversation, list) or not conversation or not all(isinstance(m, dict) for m in conversation):
            raise RequestError(f"{where}: expected a non-empty list of chat messages")
        prompts: list[str] = []
        texts: list[str] = []
        images: list[Any] = []
        for message in conversation:
            role = message.get("role")
            if role not in ("system", "user"):
                raise RequestError(f"{where}: unsupported message role {role!r}; use 'system' (prompt) and 'user'")
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
                raise RequestError(f"{where}: message content must be a string or a list of content parts")
            for part in parts:
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    (prompts if role == "system" else texts).append(part["text"])
                elif kind == "image_url" and role == "user":
                    image_url = part.get("image_url")
                    url = image_url.get("url") if isinstance(image_url, dict) else image_url
                    if not isinstance(url, str) or not url:
                        raise RequestError(f"{where}: an image_url part needs {{'image_url': {{'url': ...}}}}")
                    images.append(url)
                else:
                    raise RequestError(
                        f"{where}: unsupported content part {kind!r} in a {role} message; valid: 'text' (system, "
                        "user) with a string, 'image_url' (user)"
                    )
        return prompts, texts, images

    def _image_data_url(self, url: str, where: str) -> str:
        """The image fetched (``fetch``: vLLM's media connector) and prepared as ``encode`` prepares it, as a
        lossless PNG data: URL."""
        if url.startswith("/"):
            url = Path(url).as_uri()  # an absolute path is a file:// URL (vLLM's connector checks the folder)
        data = self.fetch(url, where)
        try:
            image = self.prepare_image(data, where, self.max_image_tokens * 28 * 28)
        except (TypeError, ValueError, OSError) as error:
            raise RequestError(str(error)) from None
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = ["ItemReader", "RequestError", "MAX_IMAGES_PER_ITEM", "HTML_TAGS"]
