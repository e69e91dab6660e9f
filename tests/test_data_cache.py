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


def test_large_files_hash_sampled_blocks(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(data_cache, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(data_cache, "EDGE_BYTES", 100)
    monkeypatch.setattr(data_cache, "SAMPLE_BLOCK", 50)
    path = write_rows(tmp_path / "train.jsonl", n=200)
    before = fingerprint(path)
    data = bytearray(path.read_bytes())
    middle = 31 * ((len(data) - 50) // 63) + 10  # inside the 32nd of the 64 evenly spaced sample blocks
    data[middle] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before["mtime_ns"], before["mtime_ns"]))
    after = fingerprint(path)
    assert after["size"] == before["size"] and after["mtime_ns"] == before["mtime_ns"]
    assert after["sample_hash"] != before["sample_hash"]


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
