"""ASGI middleware reading ``POST /v1/embeddings`` with viPyloQwen's rules before vLLM (``--middleware``).

:mod:`.requests` does the reading; this wires it into vLLM's server: the body is read, checked and rewritten
(texts to token ids, images prepared), and handed on; a bad item is answered with HTTP 400 in vLLM's error
format (``{"error": {"message", "type", "param", "code"}}``) without reaching the engine, so the server keeps
serving. The reader is built on the first request from the running server's config (the checkpoint, the
image budget of ``--mm-processor-kwargs``, ``--allowed-local-media-path``).
"""

from __future__ import annotations

import asyncio
import json
import threading

from .requests import ItemReader, RequestError

PATHS = ("/v1/embeddings",)


def reader_for(
    model: str,
    revision: str | None = None,
    max_image_tokens: int | None = None,
    allowed_local_media_path: str | None = None,
) -> ItemReader:
    """The ItemReader of a checkpoint (folder or Hub id): its tokenizer, task prefixes and image budget
    (``max_image_tokens`` overrides the checkpoint's, as ``--mm-processor-kwargs`` does)."""
    from . import images_vipyloqwen
    from .checkpoint import plain_tokenizer, read_checkpoint

    info = read_checkpoint(model, revision)
    tokenizer, specials = plain_tokenizer(model, revision)
    return ItemReader(
        info=info,
        tokenizer=tokenizer,
        special_tokens=specials,
        eos_token=info.eos_token,
        prepare_image=images_vipyloqwen.prepare_image,
        max_image_tokens=max_image_tokens or info.max_image_tokens,
        allowed_local_media_path=allowed_local_media_path or None,
    )


def build_reader(vllm_config) -> ItemReader:
    """The ItemReader of the checkpoint a vLLM server runs (its model, revision, image budget, media path)."""
    from .processing import BUDGET_KWARGS

    model_config = vllm_config.model_config
    mm_kwargs = model_config.mm_processor_kwargs or {}
    budget = {key: mm_kwargs.get(key) for key in BUDGET_KWARGS}
    return reader_for(
        model_config.model,
        model_config.revision,
        max_image_tokens=budget["max_image_tokens"],
        allowed_local_media_path=model_config.allowed_local_media_path,
    )


class ViPyloQwenRequests:
    """Pure ASGI middleware (streams of other routes pass through untouched)."""

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
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in PATHS:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None  # not JSON: vLLM answers it as it always does
        if body is not None:
            try:
                reader = self.reader(scope)
                body = await asyncio.to_thread(reader.read, body)  # images are opened off the event loop
            except RequestError as error:
                return await self._error(send, str(error), error.param)
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

    @staticmethod
    async def _error(send, message: str, param: str | None) -> None:
        payload = json.dumps(
            {"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}}
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
