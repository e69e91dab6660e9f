"""Which vLLM routes embed, and how each is read: every route that embeds gives ``encode``'s vectors or a 400.

- ``POST /v1/embeddings``: :meth:`.requests.ItemReader.read` (OpenAI's format, plus ``task``).
- ``POST /pooling``: :func:`read_pooling`, the same reader; its ``task`` field is vLLM's pooling task there, so
  it takes ``"embed"`` (the model's only one) or one of the model's tasks, as on ``/v1/embeddings``. vLLM's
  ``/pooling`` takes one chat conversation per request.
- ``POST /v2/embed`` (Cohere's embed API): :func:`read_cohere`, the same reader; ``input_type`` selects the
  task through :data:`COHERE_INPUT_TYPES`, or names a task (``"ocr"``) or a role (``"query"``) directly.
- :data:`REFUSED`: routes that would embed items without the reader (scores and reranking from embeddings,
  SageMaker's ``/invocations`` dispatcher): HTTP 400 naming ``/v1/embeddings``.
- :data:`NOT_EMBEDDING`: vLLM's other POST routes of a pooling server, passed through (they embed nothing).

``tests/test_serving_vllm.py`` checks that every POST route the running server lists is in one of these.

Cohere ``input_type`` -> task (registry task names or the no-task roles, never prefix strings: the prefix is
the checkpoint's prompt of that name, written from ``configuration_vipyloqwen.TASKS``; the choices are those
of the MTEB prompt map ``configuration_vipyloqwen.MTEB_PROMPTS``, which the tests check):

=================== ============= =================================================================
``input_type``      task          why (MTEB_PROMPTS key)
=================== ============= =================================================================
``search_query``    ``query``     retrieval queries carry no prefix (``Retrieval-query``)
``search_document`` ``document``  retrieval documents carry no prefix (``Retrieval-document``)
``classification``  ``text_pair`` a symmetric text task (``Classification``)
``clustering``      ``text_pair`` a symmetric text task (``Clustering``)
``image``           ``document``  image classification / clustering fall back to the roles (``document``)
=================== ============= =================================================================
"""

from __future__ import annotations

from typing import Any

from .requests import ItemReader, RequestError

COHERE_INPUT_TYPES: dict[str, str] = {
    "search_query": "query",
    "search_document": "document",
    "classification": "text_pair",
    "clustering": "text_pair",
    "image": "document",
}
# vLLM's pooling task of an embedding model.
POOLING_TASK = "embed"
REFUSED = frozenset({"/score", "/v1/score", "/rerank", "/v1/rerank", "/v2/rerank", "/invocations", "/classify"})
NOT_EMBEDDING = frozenset({"/tokenize", "/detokenize", "/ping", "/v1/systemone"})


def refusal(path: str) -> RequestError:
    """The 400 of a route in :data:`REFUSED`."""
    return RequestError(
        f"POST {path} is not served by this viPyloQwen server: it would embed items without reading them as encode "
        "does (task prefixes, images). Use POST /v1/embeddings (compare the vectors by cosine for scores)"
    )


def read_pooling(reader: ItemReader, body: Any) -> dict[str, Any]:
    """A ``/pooling`` body read as ``/v1/embeddings`` (same items, same vectors); ``task`` is ``"embed"`` or a task."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    body = dict(body)
    task = body.pop("task", None)
    if task is not None and task != POOLING_TASK:
        body["task"] = task  # a viPyloQwen task (the reader refuses an unknown one, listing the valid ones)
    read = reader.read(body)
    if "messages" in read:
        if len(read["messages"]) != 1:
            raise RequestError(
                f"/pooling takes one chat item per request (vLLM's pooling chat request), got "
                f"{len(read['messages'])}; send several to /v1/embeddings as `messages`",
                "messages",
            )
        read["messages"] = read["messages"][0]
    read["task"] = POOLING_TASK
    return read


def cohere_task(reader: ItemReader, input_type: Any) -> str | None:
    """The reader's task of a Cohere ``input_type`` (:data:`COHERE_INPUT_TYPES`, or a task / role name): a task
    name, ``""`` for a role (no task, as ``"task": "query"``) or None when not given."""
    if input_type is None:
        return None
    name = COHERE_INPUT_TYPES.get(input_type, input_type) if isinstance(input_type, str) else None
    if name in ("query", "document"):
        return ""
    if name in reader.info.tasks:
        return name
    valid = ", ".join([*COHERE_INPUT_TYPES, *reader.info.tasks, "query", "document"])
    raise RequestError(f"unknown input_type {input_type!r}; valid: {valid}", "input_type")


def read_cohere(reader: ItemReader, body: Any) -> dict[str, Any]:
    """A Cohere ``/v2/embed`` body with every item (``texts``, ``images`` or ``inputs``) read as a chat item of
    ``/v1/embeddings``, handed on as ``inputs`` (vLLM renders those with the checkpoint's chat template)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    body = dict(body)
    task = cohere_task(reader, body.pop("input_type", None))
    if body.get("max_tokens") is not None:
        raise RequestError(
            "`max_tokens` is not supported: texts are cut to the checkpoint's max_text_tokens, as encode does",
            "max_tokens",
        )
    reader.check_dimensions(body.get("output_dimension"), "output_dimension")
    given = [field for field in ("texts", "images", "inputs") if body.get(field) is not None]
    if len(given) != 1:
        raise RequestError("give exactly one of `texts`, `images` or `inputs`", "texts")
    field = given[0]
    values = body.pop(field)
    if not isinstance(values, list) or not values:
        raise RequestError(f"empty request: `{field}` must be a non-empty list", field)
    conversations = []
    for index, value in enumerate(values):
        where = f"item {index + 1} of {len(values)}"
        if field == "inputs":
            content = value.get("content") if isinstance(value, dict) else None
            if not isinstance(content, list):
                raise RequestError(f"{where}: an `inputs` item is {{'content': [content parts]}}", field)
        elif not isinstance(value, str):
            raise RequestError(f"{where}: expected a string, got {type(value).__name__}", field)
        elif field == "texts":
            content = [{"type": "text", "text": value}]
        else:
            content = [{"type": "image_url", "image_url": {"url": value}}]
        conversations.append([{"role": "user", "content": content}])
    items = reader.chat_items(conversations, task)
    body["inputs"] = [{"content": item[0]["content"]} for item in items]
    return body


__all__ = ["COHERE_INPUT_TYPES", "REFUSED", "NOT_EMBEDDING", "read_pooling", "read_cohere", "cohere_task", "refusal"]
