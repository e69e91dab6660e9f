"""Lossless JSONL line reading: bytes in, one decoded line (or one precise error) per line out.

A line is what lies between two ``\\n`` bytes (the last one may lack its ``\\n``; an empty tail after the final
newline is no line). Every line is decoded on its own with strict UTF-8, so one bad byte costs exactly one line,
keeps its exact number and shows its raw bytes escaped; reading goes on with the next line. ``\\r\\n`` endings are
fine. A UTF-8 BOM is stripped on line 1 (editors write one) and tolerated at the start of any later line (what
``cat a.jsonl b.jsonl`` makes of a second file with a BOM); such lines are counted in the report, never dropped.

Files are split into byte ranges at line boundaries (:func:`split_ranges`) so worker processes can read them in
parallel; each range counts its own lines and the caller adds the lines of the ranges before it.

Example::

    >>> for number, data in iter_raw_lines("train.jsonl"):
    ...     text, error, had_bom = decode_line(data)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

BOM = b"\xef\xbb\xbf"
# Each worker gets at least this much of the file when num_proc is chosen automatically: below it, starting a
# process costs more than it saves.
MIN_AUTO_RANGE_BYTES = 4 * 1024 * 1024


def escape_bytes(data: bytes) -> str:
    """The raw bytes of a line as text, undecodable bytes escaped (``\\xff``): shows exactly what is in the file."""
    return data.decode("utf-8", errors="backslashreplace")


def decode_line(data: bytes) -> tuple[str | None, str | None, bool]:
    """One raw line -> ``(text, error, had_bom)``; exactly one of text/error is set.

    The ``\\n`` and a ``\\r`` before it are dropped; a leading BOM is removed (``had_bom`` tells the caller,
    which counts BOMs after line 1). Errors: not UTF-8 (with the byte offset and the bad byte), NUL bytes.
    """
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    had_bom = data.startswith(BOM)
    if had_bom:
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as error:
        bad = data[error.start : error.end]
        return None, f"not UTF-8: {error.reason} (byte {bad.hex(' ')} at byte offset {error.start})", had_bom
    if "\x00" in text:
        # Valid UTF-8 but never valid JSON outside a string and refused inside one: a zero-filled block
        # (crash, preallocated file) deserves its own reason rather than "malformed JSON".
        return None, f"NUL byte at column {text.index(chr(0)) + 1} (a zero-filled or corrupted block?)", had_bom
    return text, None, had_bom


def _line_start_at_or_after(handle, offset: int) -> int:
    """The offset of the first line that starts at or after ``offset`` (the file size if none)."""
    if offset == 0:
        return 0
    handle.seek(offset - 1)
    handle.readline()  # consumes up to and including the next newline (the byte before offset included)
    return handle.tell()


def split_ranges(path: str | os.PathLike, parts: int) -> list[tuple[int, int]]:
    """Cut a file into at most ``parts`` contiguous byte ranges ``[start, end)`` that begin at line starts.

    The ranges cover every byte exactly once, in order; fewer come back when the file has fewer lines.
    """
    size = os.path.getsize(path)
    if size == 0:
        return [(0, 0)]
    parts = max(1, parts)
    with open(path, "rb") as handle:
        cuts = sorted({_line_start_at_or_after(handle, size * i // parts) for i in range(parts)} | {size})
    ranges = [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    assert ranges[0][0] == 0 and ranges[-1][1] == size, ranges
    return ranges


def auto_parts(path: str | os.PathLike, num_proc: int) -> int:
    """How many ranges to use for ``num_proc`` workers: each gets at least :data:`MIN_AUTO_RANGE_BYTES`."""
    return max(1, min(num_proc, os.path.getsize(path) // MIN_AUTO_RANGE_BYTES))


def iter_raw_lines(path: str | os.PathLike, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(local_line_number, raw_bytes)`` for every line in ``[start, end)``, numbered from 1.

    ``raw_bytes`` keeps its ``\\n`` (absent only on a last line without one), so the bytes yielded add up to the
    range exactly.

    Binary mode: nothing is decoded here, so nothing can stop the reading early. The caller checks that the
    line count against its classification of the lines (the invariant lines = good + bad + blank).
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = (os.path.getsize(path) if end is None else end) - start
        number = 0
        while remaining > 0:
            data = handle.readline(remaining)
            if not data:
                raise OSError(f"{path}: the file shrank while it was being read; {remaining} byte(s) missing")
            remaining -= len(data)
            number += 1
            yield number, data


def default_num_proc() -> int:
    """The machine's cores available to this process (``os.sched_getaffinity`` where the OS has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


__all__ = [
    "BOM",
    "MIN_AUTO_RANGE_BYTES",
    "auto_parts",
    "decode_line",
    "default_num_proc",
    "escape_bytes",
    "iter_raw_lines",
    "split_ranges",
]
