"""ASGI middleware reading every embedding request with viPyloQwen's rules before vLLM (``--middleware``).

:mod:`.requests` and :mod:`.routes` do the reading; this wires them into vLLM's server: the body of a route
that embeds (``/v1/embeddings``, ``/pooling``, ``/v2/embed``) is read, checked and rewritten (texts to token
ids, images fetched by vLLM's media connector and prepared), and handed on; a bad item, or a route that would
embed without the reader (:data:`.routes.REFUSED`), is answered in vLLM's error format (``{"error":
{"message", "type", "param", "code"}}``) without reaching the engine, so the server keeps serving.
``GET /v1/models`` gets the model's embedding facts added to each model card (:func:`model_facts`).

The reader is built on the first request from the running server's config (the checkpoint, the image budget
of ``--mm-processor-kwargs``, the max model length, the media settings).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .requests import MAX_IMAGES_PER_ITEM, ItemReader, RequestError
from .routes import REFUSED, read_cohere, read_pooling, refusal

READERS: dict[str, Callable[[ItemReader, Any], dict]] = {
    "/v1/embeddings": ItemReader.read,
    "/pooling": read_pooling,
    "/v2/embed": read_cohere,
}
MODELS_PATH = "/v1/models"


def reader_for(
    model: str,
    fetch: Callable[[str, str], bytes],
    revision: str | None = None,
    max_image_tokens: int | None = None,
    max_tokens: int | None = None,
) -> ItemReader:
    """The ItemReader of a checkpoint (folder or Hub id): its tokenizer, task prefixes and image budget
    (``max_image_tokens`` overrides the checkpoint's, as ``--mm-processor-kwargs`` does); image URLs are fetched
    with ``fetch`` (in the server: vLLM's media connector); ``max_tokens`` is the server's max model length
    (default: what ``vipyloqwen-serve`` passes)."""
    from . import images_vipyloqwen
    from .checkpoint import plain_tokenizer, read_checkpoint

    info = read_checkpoint(model, revision)
    tokenizer, specials = plain_tokenizer(model, revision)
    budget = max_image_tokens or info.max_image_tokens
    return ItemReader(
        info=info,
        tokenizer=tokenizer,
        special_tokens=specials,
        eos_token=info.eos_token,
        prepare_image=images_vipyloqwen.prepare_image,
        fetch=fetch,
        max_image_tokens=budget,
        max_tokens=max_tokens or info.max_model_len(MAX_IMAGES_PER_ITEM, budget),
        # vLLM's bound (renderers/base.py validate_token_ids): the tokenizer's largest id or the last embedding row.
        max_token_id=max(info.vocab_size - 1, *tokenizer.get_vocab(with_added_tokens=True).values()),
    )


def build_reader(vllm_config) -> ItemReader:
    """The ItemReader of the checkpoint a vLLM server runs (its model, revision, image budget, max length, media
    settings)."""
    from .media import connector_fetch
    from .processing import BUDGET_KWARGS

    model_config = vllm_config.model_config
    mm_kwargs = model_config.mm_processor_kwargs or {}
    budget = {key: mm_kwargs.get(key) for key in BUDGET_KWARGS}
    return reader_for(
        model_config.model,
        connector_fetch(model_config),
        model_config.revision,
        max_image_tokens=budget["max_image_tokens"],
        max_tokens=model_config.max_model_len,
    )


def model_facts(reader: ItemReader, dtype: str | None) -> dict[str, Any]:
    """What ``GET /v1/models`` adds to each model card: the embedding size, the Matryoshka widths (the values
    ``dimensions`` takes), the tasks (name -> prefix), the image limits and the served dtype."""
    info = reader.info
    return {
        "embedding_size": info.embed_dim,
        "matryoshka_dimensions": list(info.matryoshka_dimensions),
        "tasks": dict(info.tasks),
        "max_images_per_item": MAX_IMAGES_PER_ITEM,
        "max_image_tokens": reader.max_image_tokens,
        "max_text_tokens": info.max_text_tokens,
        "dtype": dtype,
    }


async def _read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_json(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode("utf-8")
    kept = [(k, v) for k, v in headers or [] if k.lower() not in (b"content-length", b"content-type")]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ViPyloQwenRequests:
    """Pure ASGI middleware (other routes and streams pass through untouched)."""

    def __init__(self, app):
        self.app = app
        self._reader: ItemReader | None = None
        self._lock = threading.Lock()

    def reader(self, scope) -> ItemReader:
        with self._lock:
            if self._reader is None:
                self._reader = build_reader(scope["app"].state.vllm_config)
            return self._reader

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == MODELS_PATH:
            return await self._models(scope, receive, send)
        if method != "POST" or (path not in READERS and path not in REFUSED):
            return await self.app(scope, receive, send)
        raw = await _read_body(receive)
        if raw is None:
            return
        if path in REFUSED:
            return await self._error(send, refusal(path))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None  # not JSON: vLLM answers it as it always does
        if body is not None:
            try:
                reader = self.reader(scope)
                # Images are fetched and opened off the event loop.
                body = await asyncio.to_thread(READERS[path], reader, body)
            except RequestError as error:
                return await self._error(send, error)
            raw = json.dumps(body).encode("utf-8")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(raw)).encode())]}
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return await self.app(scope, replay, send)

    async def _models(self, scope, receive, send) -> None:
        """vLLM's ``/v1/models`` answer with :func:`model_facts` in each model card."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._send_models(scope, send, start, b"".join(chunks))
            else:
                await send(message)

        await self.app(scope, receive, capture)

    async def _send_models(self, scope, send, start: dict, body: bytes) -> None:
        try:
            answer = json.loads(body)
            cards = answer["data"]
        except (ValueError, KeyError, TypeError):
            cards = None
        if start.get("status") != HTTPStatus.OK or not isinstance(cards, list):
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        model_config = scope["app"].state.vllm_config.model_config
        facts = model_facts(self.reader(scope), str(model_config.dtype).removeprefix("torch."))
        for card in cards:
            card.update(facts)
        await _send_json(send, HTTPStatus.OK, answer, start.get("headers"))

    @staticmethod
    async def _error(send, error: RequestError) -> None:
        payload = {
            "error": {"message": str(error), "type": error.kind, "param": error.param, "code": int(error.status)}
        }
        await _send_json(send, int(error.status), payload)
