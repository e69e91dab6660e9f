"""The full-file content hash: the same value whatever ranges the validating workers read, and from a file at rest."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vipyloqwen_tools.data.content_hash import RangeHasher, combine, file_content_hash
from vipyloqwen_tools.data.lines import iter_raw_lines, split_ranges
from vipyloqwen_tools.data.scan import scan_file


def shares_of(path: Path, ranges, chunk: int):
    size = path.stat().st_size
    shares = []
    for start, end in ranges:
        hasher = RangeHasher(path, start, end, size, chunk)
        for _, data in iter_raw_lines(path, start, end):
            hasher.update(data)
        shares.append(hasher.result())
    return shares


@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_any_split_gives_the_hash_of_the_file_at_rest(tmp_path: Path, chunk: int):
    rng = random.Random(chunk)
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(b"x" * rng.randrange(0, 90) + b"\n" for _ in range(300)) + b"tail without newline")
    expected = file_content_hash(path, threads=3, chunk=chunk)
    assert expected == file_content_hash(path, threads=1, chunk=chunk)
    for parts in (1, 2, 5, 40):
        assert combine(shares_of(path, split_ranges(path, parts), chunk), path.stat().st_size, chunk) == expected


def test_every_changed_byte_changes_it_and_a_gap_is_refused(tmp_path: Path):
    path = tmp_path / "f.bin"
    data = bytearray(range(256)) * 40
    path.write_bytes(bytes(data))
    before = file_content_hash(path, chunk=100)
    for position in (0, 99, 100, 5000, len(data) - 1):
        changed = bytearray(data)
        changed[position] ^= 1
        path.write_bytes(bytes(changed))
        assert file_content_hash(path, chunk=100) != before, position
    path.write_bytes(bytes(data))
    shares = shares_of(path, [(0, 3000), (4000, len(data))], 100)
    with pytest.raises(ValueError, match="gap|cover"):
        combine(shares, len(data), 100)


def test_the_validation_read_computes_it(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    line = '{"task": "text_pair", "query": "a", "positive": "b", "score": 0.5}\n'
    path.write_text(line * 5000, encoding="utf-8")
    one = scan_file(path, num_proc=1)[0].content_hash
    four = scan_file(path, num_proc=4)[0].content_hash
    assert one == four == file_content_hash(path)
