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
    """Feed the bytes of ``[start, end)`` of the file at ``path`` (``size`` bytes) in order; :meth:`result` gives its
    share. Chunks wholly inside the range are hashed as the bytes stream by; the bytes of the (at most two) chunks
    shared with a neighbour are read back from the file at the end (at most 2 chunks: no second pass).

    Example::

        >>> hasher = RangeHasher(path, start, end, size)
        >>> for _, data in iter_raw_lines(path, start, end):
        ...     hasher.update(data)
        >>> share = hasher.result()
    """

    def __init__(self, path: str | os.PathLike, start: int, end: int, size: int, chunk: int = CHUNK_BYTES) -> None:
        self.path, self.position, self.end, self.size, self.chunk = path, start, end, size, chunk
        self.out = RangeHashes()
        self._open(start)

    def _open(self, at: int) -> None:
        self.current_start = at
        self.boundary = min((at // self.chunk + 1) * self.chunk, self.size)
        self.digest = hashlib.blake2b(digest_size=DIGEST_BYTES)

    def update(self, data: bytes) -> None:
        if self.position + len(data) < self.boundary:  # the common case: a line inside the current chunk
            self.digest.update(data)
            self.position += len(data)
            return
        view = memoryview(data)
        while len(view):
            take = min(len(view), self.boundary - self.position)
            self.digest.update(view[:take])
            self.position += take
            view = view[take:]
            if self.position == self.boundary:
                self._close_chunk()

    def _close_chunk(self) -> None:
        if self.position == self.current_start:
            return
        if self.current_start % self.chunk == 0 and self.position == self.boundary:
            self.out.digests[self.current_start // self.chunk] = self.digest.digest()
        else:  # shared with the neighbouring range: its raw bytes, read back (at most one chunk)
            with open(self.path, "rb") as handle:
                handle.seek(self.current_start)
                self.out.pieces.append((self.current_start, handle.read(self.position - self.current_start)))
        self._open(self.position)

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
