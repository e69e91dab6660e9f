"""Content fingerprints of index items: what tells a rebuild which stored rows are unchanged, changed or new.

Two hashes per item, both stored with its row:

- ``content_hash``: everything the *vector* depends on: the text, the task, the bytes of every image (a PDF page:
  the PDF's bytes and the page number) and, for an item with images, the image token budget it is embedded at.
  Not the image paths: moving a folder changes no vector.
- ``fingerprint``: the ``content_hash`` and the metadata (canonical JSON). Equal fingerprints: the row is
  unchanged. Equal content hashes but another fingerprint: only the metadata changed (a touched file's
  ``mtime``), so the stored vector is kept and the row rewritten without running the model.

Both are blake2b (16-byte digests, hex). File digests are cached per (path, size, mtime), so the pages of one
PDF hash its bytes once.

Example::

    >>> h = content_hash("Điều khoản 1", None, [], 1024)
    >>> fingerprint(h, {"source": "contracts"}) != fingerprint(h, {"source": "policies"})
    True
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from vipyloqwen_tools.index.pdf import split_page_ref

VERSION = 1  # part of every hash: a change of what is hashed makes every row "changed" once
DIGEST_BYTES = 16
READ_BYTES = 1 << 20


@functools.lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # the cache key: a rewritten file is read again
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """blake2b of the file's bytes (``OSError`` if it cannot be read)."""
    path = os.fspath(path)
    stat = os.stat(path)
    return _file_digest(path, stat.st_size, stat.st_mtime_ns)


def _feed(digest: Any, value: str | None) -> None:
    # Length-prefixed, None distinct from "": no two different sequences of parts feed the same bytes.
    if value is None:
        digest.update(b"\xff" * 8)
        return
    data = value.encode("utf-8", "surrogatepass")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def content_hash(text: str | None, task: str | None, images: Sequence[str], max_image_tokens: int) -> str:
    """The hash of what an item's vector depends on (see the module docstring); ``images`` are file paths or
    PDF page references. ``OSError`` if an image file cannot be read."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for part in (f"content v{VERSION}", text, task, str(len(images))):
        _feed(digest, part)
    for image in images:
        page = split_page_ref(image)
        for part in (f"pdf page {page[1]}", file_digest(page[0])) if page else ("file", file_digest(image)):
            _feed(digest, part)
    _feed(digest, str(max_image_tokens) if images else None)
    return digest.hexdigest()


def packed(content: str | None, row: str | None) -> bytes:
    """The two hex digests of a row as one 32-byte value (``b""`` when it has none: a format-1 row): what a build
    keeps in memory per stored row, about a third of two hex strings in a tuple."""
    return bytes.fromhex(content) + bytes.fromhex(row) if content and row else b""


def fingerprint(content: str, metadata: dict[str, Any]) -> str:
    """The row's fingerprint: its ``content_hash`` and its metadata (canonical JSON: key order does not matter)."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    _feed(digest, f"row v{VERSION}")
    _feed(digest, content)
    _feed(digest, json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if metadata else "")
    return digest.hexdigest()
