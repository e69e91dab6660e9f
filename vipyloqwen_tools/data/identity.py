"""Document identity: when two sides of the training data embed the same input, computed from the data alone.

Two sides (a query, a positive, a negative) are *the same document* when the encode path turns them into the same
model input: the same text after its own normalisation and the same images by content. Training masks such
candidates out of every in-batch loss term (:mod:`vipyloqwen_tools.train.false_negatives`) and the miner never
returns them (:mod:`vipyloqwen_tools.mine`); both read the keys computed here, never the embeddings.

The encode path's normalisation (``items_vipyloqwen.split_item`` and the processor):

- a task prefix typed at the very start of the text selects the task and the whitespace after it is dropped
  (``configuration_vipyloqwen.split_task_prefix``): ``"<ocr>  đỏ"`` reads as task ocr + ``"đỏ"``;
- a text that is empty or only whitespace is no text;
- the tokenizer normalises to Unicode NFC (the Qwen2 tokenizer's normalizer), so a decomposed ``"Có"`` (``o`` +
  combining acute) is the same input as the composed one. Everything else (case, inner and outer spaces,
  punctuation) reaches the tokenizer as typed and makes another input.

Images count by content: the blake2b digest of the file's bytes (:func:`vipyloqwen_tools.data.content_hash`'s
hash, memoised per path, size and mtime), so a copy under another name is the same image. A file that cannot be
read counts by its path.

A key is a signed 64-bit integer (an Arrow ``int64`` column and a torch ``long``, gathered with the batch across
ranks); :data:`NO_DOCUMENT` (0) is never a key: it marks a padded slot.

Example::

    >>> side_key({"text": "Có", "images": []}) == side_key({"text": "Co\\u0301", "images": []})
    True
    >>> side_key({"text": "<ocr> đỏ", "images": []}) == side_key({"text": "đỏ", "images": []})
    False
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from configuration_vipyloqwen import split_task_prefix
from vipyloqwen_tools.data.content_hash import file_content_hash

NO_DOCUMENT = 0  # a padded slot (a row with fewer explicit negatives than its dataset's widest row)


def canonical_text(text: str | None) -> tuple[str | None, str]:
    """``(typed task, text)`` as the encode path reads a side's text (see the module docstring)."""
    task, body = split_task_prefix(text or "")
    if not body.strip():
        body = ""
    return task, unicodedata.normalize("NFC", body)


@functools.lru_cache(maxsize=65536)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    return file_content_hash(path, threads=1)


def image_digest(path: str) -> str:
    """The content digest of an image file (``"path:<path>"`` when it cannot be read)."""
    try:
        stat = os.stat(path)
        return _file_digest(path, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return f"path:{os.path.normpath(path)}"


def side_key(side: Mapping[str, Any]) -> int:
    """The identity key of a normalised side ``{"text", "images"}`` (absolute image paths): equal keys = the same
    model input. Never :data:`NO_DOCUMENT`."""
    task, body = canonical_text(side.get("text"))
    images = [image_digest(path) for path in side.get("images") or []]
    data = json.dumps([task, body, images], ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    key = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)
    return key if key != NO_DOCUMENT else 1


def same_input(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two normalised sides are the same input by text and image *paths* (no file is read): what the
    validator can tell from the line alone. Copies of an image under another name are caught by :func:`side_key`."""
    return canonical_text(a.get("text")) == canonical_text(b.get("text")) and list(a.get("images") or []) == list(
        b.get("images") or []
    )


def row_keys(row: Mapping[str, Any]) -> list[int]:
    """``[query, positive, negative 1, ...]`` keys of a normalised row (as ``data.schema.parse_row`` returns)."""
    sides: Sequence[Mapping[str, Any]] = [row["query"], row["positive"], *row.get("negatives", ())]
    return [side_key(side) for side in sides]


__all__ = ["NO_DOCUMENT", "canonical_text", "image_digest", "row_keys", "same_input", "side_key"]
