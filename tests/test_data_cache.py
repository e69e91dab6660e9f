"""Validate once: the cache is reused on a second run, invalidated by a one-byte change, safe for concurrent use."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest
from conftest import write_jsonl

from vipyloqwen_tools.data import cache as data_cache
from vipyloqwen_tools.data.cache import fingerprint, prepare_task_datasets


def write_rows(path: Path, n: int = 20) -> Path:
    rows = [{"task": "text_pair", "query": f"câu {i}", "positive": f"sentence {i}", "score": 0.5} for i in range(n)]
    return write_jsonl(path, rows)


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir())


def test_second_run_reuses_the_cache_and_says_so(tmp_path: Path, caplog):
    path = write_rows(tmp_path / "train.jsonl")
    first, report = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert not report.cached
    with caplog.at_level(logging.INFO, logger="vipyloqwen_tools.data.cache"):
        second, again = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert again.cached and "reusing the validated data cache" in caplog.text
    assert again.to_json() | {"cached": False} == report.to_json()
    assert second["text_pair"].with_format(None)[:] == first["text_pair"].with_format(None)[:]
    assert len(entries(tmp_path / "cache")) == 1


def test_a_one_byte_change_invalidates_it(tmp_path: Path):
    path = write_rows(tmp_path / "train.jsonl")
    _, report = prepare_task_datasets(path, tmp_path / "cache")
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[data.index(b"0.5", 200)] = ord("7")  # same size: one score 0.5 -> 7.5, now out of range
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the mtime put back
    _, changed = prepare_task_datasets(path, tmp_path / "cache")
    assert not changed.cached and len(changed.bad) == 1 and "outside [0, 1]" in changed.bad[0].reason
    assert len(entries(tmp_path / "cache")) == 2


def write_large(path: Path, megabytes: int = 17) -> tuple[Path, int]:
    """A JSONL file over 16 MB (text_pair rows of about 4 KB, score 0.3), written in well under a second; returns
    it and the number of its middle line."""
    filler = "chữ " * 1000
    row = {"task": "text_pair", "query": "câu", "positive": filler, "score": 0.3}
    count = megabytes * 1024 * 1024 // len(filler.encode()) + 1
    return write_jsonl(path, ({**row, "query": f"câu {i:06d}"} for i in range(count))), count // 2


def test_one_byte_changed_in_a_large_file_with_size_and_mtime_restored_invalidates_it(tmp_path: Path, caplog):
    path, middle = write_large(tmp_path / "big.jsonl")
    assert path.stat().st_size > 16 * 1024 * 1024
    _, report = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert not report.bad and report.content_hash == fingerprint(path)["content_hash"]
    stat = path.stat()
    data = bytearray(path.read_bytes())
    at = data.index(f"câu {middle - 1:06d}".encode())  # on line `middle`, far from the file's first and last MB
    at = data.index(b'"score": 0.3', at) + len(b'"score": ')
    data[at] = ord("7")  # score 0.3 -> 7.3: same size
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with caplog.at_level(logging.INFO, logger="vipyloqwen_tools.data.cache"):
        _, changed = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert not changed.cached and "other content" in caplog.text
    assert [bad.line for bad in changed.bad] == [middle] and "outside [0, 1]" in changed.bad[0].reason
    # The entry of the old content stays (valid again if the byte is put back); each is found by its content hash.
    data[at] = ord("0")
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _, back = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert back.cached and not back.bad and back.content_hash == report.content_hash
    assert len(entries(tmp_path / "cache")) == 2


def _build(args) -> bool:
    path, cache = args
    return prepare_task_datasets(path, cache, num_proc=1)[1].cached


def test_concurrent_builders_validate_once(tmp_path: Path):
    path = write_rows(tmp_path / "train.jsonl", n=3000)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        cached = pool.map(_build, [(str(path), str(tmp_path / "cache"))] * 3)
    assert sorted(cached) == [False, True, True]  # one built it, the others waited on the lock and reused it
    assert len(entries(tmp_path / "cache")) == 1
    assert not list((tmp_path / "cache").glob("*.tmp-*"))


def test_a_failed_build_leaves_no_entry(tmp_path: Path, monkeypatch):
    path = write_rows(tmp_path / "train.jsonl")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(data_cache, "scan_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare_task_datasets(path, tmp_path / "cache")
    assert entries(tmp_path / "cache") == []
