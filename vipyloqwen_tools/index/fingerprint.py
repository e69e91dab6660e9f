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


def _hash(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=DIGEST_BYTES).hexdigest()


def content_hash(text: str | None, task: str | None, images: Sequence[str], max_image_tokens: int) -> str:
    """The hash of what an item's vector depends on (see the module docstring); ``images`` are file paths or
    PDF page references. ``OSError`` if an image file cannot be read."""
    parts = []
    for image in images:
        page = split_page_ref(image)
        parts.append(["pdf", file_digest(page[0]), page[1]] if page else ["file", file_digest(image)])
    return _hash([VERSION, text, task, parts, max_image_tokens if parts else None])


def fingerprint(content: str, metadata: dict[str, Any]) -> str:
    """The row's fingerprint: its ``content_hash`` and its metadata (key order does not matter)."""
    return _hash([VERSION, content, metadata])
