"""A full-file content hash that the validating workers compute while they read their byte ranges (no second pass).

The file is cut into fixed chunks of :data:`CHUNK_BYTES` (1 MiB) at absolute offsets. The hash is blake2b over the
file size and the blake2b digest of every chunk, in order, so it does not depend on how the file was split among
workers: each worker feeds the bytes of its range (:class:`RangeHasher`, line by line as it validates them), hashes
the chunks that lie wholly inside the range, and hands back the raw bytes of the (at most two) chunks it shares with
a neighbour; :func:`combine` finishes those. :func:`file_content_hash` computes the same value from a file at rest
with threads (blake2b and file reads release the GIL): what the validate-once cache does to check that a file whose
size and mtime match its entry still has the content it validated.

Any changed byte changes its chunk's digest and so the hash; a changed size is in the hash too.

Example::

    >>> file_content_hash("train.jsonl")           # what a validation of the file stored
    'b3c1...'
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

CHUNK_BYTES = 1024 * 1024
DIGEST_BYTES = 16


def _chunk_digest(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


@dataclass
class RangeHashes:
    """What one byte range contributes: digests of the chunks wholly inside it, raw bytes of the shared ones."""

    digests: dict[int, bytes] = field(default_factory=dict)
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # (absolute offset, bytes), within one chunk


class RangeHasher:
    """Feed the bytes of ``[start, end)`` of a file of ``size`` bytes in order; :meth:`result` gives its share.

    Example::

        >>> hasher = RangeHasher(start, end, size)
        >>> for _, data in iter_raw_lines(path, start, end):
        ...     hasher.update(data)
        >>> share = hasher.result()
    """

    def __init__(self, start: int, end: int, size: int, chunk: int = CHUNK_BYTES) -> None:
        self.position, self.end, self.size, self.chunk = start, end, size, chunk
        self.current = bytearray()  # bytes of the current chunk seen so far (at most one chunk)
        self.current_start = start
        self.out = RangeHashes()

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            boundary = (self.position // self.chunk + 1) * self.chunk
            take = min(len(view), boundary - self.position)
            self.current += view[:take]
            self.position += take
            view = view[take:]
            if self.position == boundary or self.position == self.size:
                self._close_chunk()

    def _close_chunk(self) -> None:
        if not self.current:
            return
        index, offset = divmod(self.current_start, self.chunk)
        length = len(self.current)
        complete = offset == 0 and (length == self.chunk or self.current_start + length == self.size)
        if complete:
            self.out.digests[index] = _chunk_digest(self.current)
        else:
            self.out.pieces.append((self.current_start, bytes(self.current)))
        self.current = bytearray()
        self.current_start = self.position

    def result(self) -> RangeHashes:
        if self.position != self.end:
            raise ValueError(f"hashed up to byte {self.position}, the range ends at {self.end}")
        self._close_chunk()
        return self.out


def combine(shares: Iterable[RangeHashes], size: int, chunk: int = CHUNK_BYTES) -> str:
    """The file's content hash from the shares of ranges that cover it exactly once."""
    digests: dict[int, bytes] = {}
    pieces: dict[int, list[tuple[int, bytes]]] = {}
    for share in shares:
        digests.update(share.digests)
        for offset, data in share.pieces:
            pieces.setdefault(offset // chunk, []).append((offset, data))
    for index, parts in pieces.items():
        data = b"".join(part for _, part in sorted(parts))
        expected = min(chunk, size - index * chunk)
        if index in digests or len(data) != expected:
            raise ValueError(f"chunk {index}: ranges overlap or leave a gap ({len(data)} of {expected} bytes)")
        digests[index] = _chunk_digest(data)
    count = (size + chunk - 1) // chunk
    if sorted(digests) != list(range(count)):
        raise ValueError(f"the ranges cover {len(digests)} of the file's {count} chunks")
    total = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=DIGEST_BYTES)
    for index in range(count):
        total.update(digests[index])
    return total.hexdigest()


def _hash_chunks(path: str, first: int, last: int, size: int, chunk: int) -> RangeHashes:
    share = RangeHashes()
    with open(path, "rb", buffering=0) as handle:
        handle.seek(first * chunk)
        for index in range(first, last):
            data = handle.read(min(chunk, size - index * chunk))
            share.digests[index] = _chunk_digest(data)
    return share


def file_content_hash(path: str | os.PathLike, threads: int | None = None, chunk: int = CHUNK_BYTES) -> str:
    """The content hash of a file at rest, read once by ``threads`` threads (default: the machine's cores)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    count = (size + chunk - 1) // chunk
    threads = max(1, min(threads or os.cpu_count() or 1, count or 1))
    bounds = [count * i // threads for i in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        shares = list(pool.map(lambda i: _hash_chunks(path, bounds[i], bounds[i + 1], size, chunk), range(threads)))
    return combine(shares, size, chunk)


__all__ = ["CHUNK_BYTES", "RangeHasher", "RangeHashes", "combine", "file_content_hash"]
