"""Lossless line reading: bytes in, one line per line out, byte ranges that cover the file exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from vipyloqwen_tools.data.lines import (
    BOM,
    auto_parts,
    decode_line,
    escape_bytes,
    iter_raw_lines,
    split_ranges,
)


def test_decode_line_strips_newline_crlf_and_bom():
    assert decode_line(b'{"a": 1}\n') == ('{"a": 1}', None, False)
    assert decode_line(b'{"a": 1}\r\n') == ('{"a": 1}', None, False)
    assert decode_line(BOM + b'{"a": 1}\r\n') == ('{"a": 1}', None, True)
    assert decode_line("chữ Việt".encode() + b"\n") == ("chữ Việt", None, False)


def test_decode_line_names_the_bad_byte_and_nul():
    text, error, _ = decode_line(b'{"q": "caf\xe9"}\n')
    assert text is None and "not UTF-8" in error and "e9" in error and "byte offset 10" in error
    text, error, _ = decode_line(b"\x00\x00\x00\n")
    assert text is None and "NUL byte at column 1" in error
    assert escape_bytes(b'{"q": "caf\xe9"}') == '{"q": "caf\\xe9"}'


def test_iter_raw_lines_counts_every_line_and_byte(tmp_path: Path):
    path = tmp_path / "f.jsonl"
    data = b"a\n\nb\r\n\xff\xfe\nlast without newline"
    path.write_bytes(data)
    lines = list(iter_raw_lines(path))
    assert [n for n, _ in lines] == [1, 2, 3, 4, 5]
    assert b"".join(raw for _, raw in lines) == data
    path.write_bytes(b"")
    assert list(iter_raw_lines(path)) == []
    path.write_bytes(b"one\n")
    assert list(iter_raw_lines(path)) == [(1, b"one\n")]


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_split_ranges_cut_at_line_starts_and_cover_the_file(tmp_path: Path, parts: int):
    path = tmp_path / "f.jsonl"
    data = b"".join(b"x" * (i % 13) + b"\n" for i in range(40)) + b"tail"
    path.write_bytes(data)
    ranges = split_ranges(path, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) and len(ranges) <= parts
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    assert all(start == 0 or data[start - 1 : start] == b"\n" for start, _ in ranges)
    lines = [raw for start, end in ranges for _, raw in iter_raw_lines(path, start, end)]
    assert b"".join(lines) == data and len(lines) == 41


def test_split_ranges_of_an_empty_file_and_one_long_line(tmp_path: Path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"")
    assert split_ranges(path, 4) == [(0, 0)]
    path.write_bytes(b"y" * 10_000 + b"\n")
    assert split_ranges(path, 4) == [(0, 10_001)]  # one line cannot be cut
    assert auto_parts(path, 8) == 1  # small files stay in one process
