"""The two item readers agree: ``encode`` (items_vipyloqwen through the processor) and the vLLM server's request
reader (serving/vipyloqwen_vllm/requests.py, a copy of the rules that runs beside vLLM's older transformers) accept
and refuse the same inputs, naming the same item, on one table of good and bad requests.

Each case is a ``/v1/embeddings`` body. Its ``encode`` form: ``input`` texts (+ ``task``) go to
``AutoModel.encode(text=..., task=...)``; ``messages`` become the same chat items for the processor (``image_url``
parts as ``image`` entries, the URL or path as the value) and run what ``encode`` runs before the forward
(:meth:`ViPyloQwenProcessor.item_lengths`, then :meth:`ViPyloQwenProcessor.batch_inputs`, which opens the images).

The server refuses two things ``encode`` accepts, on purpose (requests.py's docstring): a text that starts with
what looks like a task prefix but is none (``<ocrr> ...``: a typo that would silently embed as plain text), and a
special token string in chat text (vLLM's chat path would read it as a control token). They are in the table with
that expectation. Which URLs the server may fetch is vLLM's media connector's policy (allowed domains and folder),
with no ``encode`` counterpart: here :func:`fetch` stands in for it (``data:`` URLs and the files of the test's
media folder; tests/test_serving_vllm.py runs the real connector). Token-id inputs are server-only too
(tests/test_serving_requests.py).
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image, png_bytes
from vipyloqwen_vllm.middleware import reader_for
from vipyloqwen_vllm.requests import RequestError

OK = ("ok", None)
NO_ITEM = ("refused", None)  # refused as a whole (empty request, unknown task): no item to name


def refused(item: int) -> tuple[str, int]:
    return ("refused", item)


def data_url(seed: int, size: tuple[int, int] = (84, 56)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(make_image(*size, seed=seed))).decode()


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text(value: Any) -> dict:
    return {"type": "text", "text": value}


def user(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"not an image").decode()
MEDIA = "{media}"  # replaced by the reader's allowed folder

# (name, request body, expected outcome for both readers, or (server, encode) where they differ on purpose)
CASES: list[tuple[str, dict, Any]] = [
    ("texts", {"input": ["Biển số xe này là gì?", "<ocr> Biển số", "", "   ", "\n"]}, OK),
    ("typed prefix and the same task", {"input": ["<ocr> a", "b"], "task": "ocr"}, OK),
    ("prefix-like text with task query", {"input": ["<ocrr> x", "<foo> y"], "task": "query"}, OK),
    ("special tokens inside plain text", {"input": ["a <ocr> in the middle and <|im_start|> typed"]}, OK),
    ("an HTML passage", {"input": ["<p> an HTML passage"]}, OK),
    ("conflicting tasks", {"input": ["a", "<ocr> b"], "task": "instr"}, refused(2)),
    ("unknown task field", {"input": ["a"], "task": "ocrx"}, NO_ITEM),
    ("a number among texts", {"input": ["a", 3]}, refused(2)),
    ("no items", {"input": []}, NO_ITEM),
    ("lone surrogate", {"input": ["ok", "x \ud800 y"]}, refused(2)),
    ("image as data URL", {"messages": [user(image(data_url(1)), text("Chữ gì?"))]}, OK),
    ("image as a path", {"messages": [user(image(f"{MEDIA}/page.png"), text("Số mấy?"))]}, OK),
    (
        "multi-image and image-only items",
        {"messages": [user(*(image(data_url(s)) for s in range(3)), text("ba ảnh")), user(image(data_url(7)))]},
        OK,
    ),
    ("prompt with a task prefix", {"messages": [[{"role": "system", "content": "<vqa_multi>"},
                                                 {"role": "user", "content": "chỉ có chữ"}]]}, OK),  # fmt: skip
    ("prompt as free text", {"messages": [[{"role": "system", "content": "query: "},
                                           {"role": "user", "content": "trời mưa"}]]}, OK),  # fmt: skip
    ("empty chat text with the eos rule", {"messages": [[{"role": "system", "content": "<instr>"},
                                                         {"role": "user", "content": ""}]]}, OK),  # fmt: skip
    (
        "six images",
        {"messages": [user(text("a")), user(*(image(data_url(s)) for s in range(6)), text("six"))]},
        refused(2),
    ),
    ("not an image", {"messages": [user(text("a")), user(image(NOT_AN_IMAGE), text("x"))]}, refused(2)),
    ("missing file", {"messages": [user(image(f"{MEDIA}/missing.png"), text("x"))]}, refused(1)),
    ("conflicting prompt and typed prefix", {"messages": [[{"role": "system", "content": "<ocr>"},
                                                           {"role": "user", "content": "<instr> a"}]]},
     refused(1)),  # fmt: skip
    ("neither text nor image", {"messages": [user(text("a")), [{"role": "system", "content": "<ocr>"}]]}, refused(2)),
    ("assistant role", {"messages": [user(text("a")), [{"role": "assistant", "content": "a"}]]}, refused(2)),
    ("audio part", {"messages": [user({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})]},
     refused(1)),  # fmt: skip
    ("text part holding a number", {"messages": [user(text(5))]}, refused(1)),
    ("image in a system message", {"messages": [[{"role": "system", "content": [image(data_url(2))]},
                                                 {"role": "user", "content": "a"}]]}, refused(1)),  # fmt: skip
    ("no chat items", {"messages": []}, NO_ITEM),
    # On purpose, the server only (see the module docstring): (server, encode).
    ("unknown prefix-like text", {"input": ["ok", "<ocrr> Biển số"]}, (refused(2), OK)),
    ("special token string in chat text", {"messages": [user(image(data_url(3)), text("a <|im_start|> b"))]},
     (refused(1), OK)),  # fmt: skip
]


def outcome(error: BaseException | None) -> tuple[str, int | None]:
    """("ok", None), or ("refused", the item number the message starts with, or None)."""
    if error is None:
        return OK
    match = re.match(r"item (\d+)\b", str(error))
    return ("refused", int(match.group(1)) if match else None)


def as_items(conversation: Any) -> Any:
    """A chat conversation of the server's format as encode's chat item: ``image_url`` parts become ``image``."""
    if not isinstance(conversation, list):
        return conversation
    out = []
    for message in conversation:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    parts.append({"type": "image", "image": part["image_url"]["url"]})
                else:
                    parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


def encode_outcome(auto_model, body: dict) -> tuple[str, int | None]:
    processor = auto_model.processor
    try:
        if "input" in body:
            auto_model.encode(text=body["input"], task=body.get("task"))
        else:
            messages = [as_items(conversation) for conversation in body["messages"]]
            processor.item_lengths(messages)
            processor.batch_inputs(messages)
    except (ValueError, TypeError) as error:
        return outcome(error)
    return OK


def server_outcome(reader, body: dict) -> tuple[str, int | None]:
    try:
        reader.read(body)
    except RequestError as error:
        return outcome(error)
    return OK


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    make_image(90, 60, seed=5).save(folder / "page.png")
    return folder


@pytest.fixture(scope="module")
def reader(tiny_checkpoint, media):
    def fetch(url: str, where: str) -> bytes:
        """Stand-in for vLLM's media connector: ``data:`` URLs, and ``file://`` URLs under the media folder."""
        if url.startswith("data:"):
            return base64.b64decode(url.split(",", 1)[1])
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if url.startswith("file://") and path.is_relative_to(media):
            try:
                return path.read_bytes()
            except OSError as error:
                raise RequestError(f"{where}: cannot read {url}: {error.strerror}") from None
        raise RequestError(f"{where}: {url} is not served in this test")

    return reader_for(str(tiny_checkpoint), fetch)


def with_media(value: Any, folder: str) -> Any:
    if isinstance(value, str):
        return value.replace(MEDIA, folder)
    if isinstance(value, list):
        return [with_media(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: with_media(v, folder) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("name", "body", "expected"), CASES, ids=[case[0] for case in CASES])
def test_server_and_encode_accept_and_refuse_alike(reader, auto_model, media, name, body, expected):
    body = with_media(body, str(media))
    server_expected, encode_expected = expected if isinstance(expected[0], tuple) else (expected, expected)
    assert (server_outcome(reader, body), encode_outcome(auto_model, body)) == (server_expected, encode_expected)

