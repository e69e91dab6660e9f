"""Validate once: the report and the per-task Arrow datasets of a JSONL file, cached under its fingerprint.

The fingerprint is the file's resolved path, size, mtime and a content hash (the whole file up to
:data:`FULL_HASH_BYTES`, else the first and last MB and evenly spaced 64 KB blocks): a changed byte changes the
mtime and, inside a sampled block, the hash. The path is part of the key because image paths are stored absolute,
relative to the file's folder. One cache entry is a folder ``<cache_dir>/<name>-<key>/`` holding ``report.json``,
``meta.json`` and ``arrow/r<range>/<dataset>.arrow``.

Concurrency: an entry is built in ``<entry>.tmp-<pid>`` under an exclusive ``flock`` on ``<entry>.lock`` and
published with one atomic ``rename``; readers only ever see complete entries, and processes that wait for the
lock reuse the entry the first one built (so N training processes validate once).

Example::

    >>> datasets, report = prepare_task_datasets("train.jsonl", "runs/x/.data-cache")
    >>> report.cached  # True on the second call: nothing is read again
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from vipyloqwen_tools.data.arrow import open_task_datasets
from vipyloqwen_tools.data.report import ValidationReport
from vipyloqwen_tools.data.scan import scan_file
from vipyloqwen_tools.data.schema import DataError

logger = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the schema, the Arrow layout or the report format changes
FULL_HASH_BYTES = 16 * 1024 * 1024
SAMPLE_BLOCK = 64 * 1024
SAMPLE_BLOCKS = 64
EDGE_BYTES = 1024 * 1024


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns", "sample_hash"}`` of a file (reads at most about 6 MB of a large file)."""
    path = Path(path).resolve()
    stat = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        if stat.st_size <= FULL_HASH_BYTES:
            digest.update(handle.read())
        else:
            edge = EDGE_BYTES
            offsets = [0, stat.st_size - edge]
            step = (stat.st_size - SAMPLE_BLOCK) // (SAMPLE_BLOCKS - 1)
            offsets += [i * step for i in range(SAMPLE_BLOCKS)]
            for offset in sorted(offsets):
                handle.seek(offset)
                digest.update(handle.read(edge if offset in (0, stat.st_size - edge) else SAMPLE_BLOCK))
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_hash": digest.hexdigest()}


def cache_entry(cache_dir: str | os.PathLike, path: str | os.PathLike, check_images: bool) -> tuple[Path, dict]:
    """The entry folder for a file in ``cache_dir`` and the fingerprint it is keyed by."""
    print_ = fingerprint(path)
    key = json.dumps({**print_, "check_images": check_images, "version": CACHE_VERSION}, sort_keys=True)
    name = f"{Path(print_['path']).stem}-{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}"
    return Path(cache_dir) / name, print_


@contextlib.contextmanager
def _locked(lock_path: Path):
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(entry: Path, path: Path):
    report = ValidationReport.from_json(json.loads((entry / "report.json").read_text(encoding="utf-8")))
    report.path, report.cached = path, True
    logger.info("%s", report.check_invariant())
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    logger.info(
        "reusing the validated data cache %s (built %s in %.1f s; fingerprint size=%d mtime_ns=%d hash=%s)",
        entry,
        meta["built"],
        meta["seconds"],
        meta["fingerprint"]["size"],
        meta["fingerprint"]["mtime_ns"],
        meta["fingerprint"]["sample_hash"],
    )
    return open_task_datasets(entry / "arrow"), report


def prepare_task_datasets(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    num_proc: int | None = None,
    check_images: bool = True,
):
    """``(DatasetDict, ValidationReport)`` for a JSONL file, from the cache or built once (then cached).

    The datasets hold the good rows only; the report says what was left out and why (the caller refuses bad rows
    or writes them to a rejects file). ``num_proc`` workers build a missing entry (default: the machine's cores).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry, print_ = cache_entry(cache_dir, path, check_images)
    if (entry / "report.json").is_file():
        return _load(entry, path)
    with _locked(entry.with_name(entry.name + ".lock")):
        if (entry / "report.json").is_file():  # built by another process while this one waited
            return _load(entry, path)
        for stale in cache_dir.glob(entry.name + ".tmp-*"):  # left by a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        began = time.perf_counter()
        try:
            report, rows = scan_file(path, num_proc=num_proc, check_images=check_images, work=tmp, arrow=True)
            if fingerprint(path) != print_:
                raise DataError(f"{path} changed while it was being validated; run again on a file at rest")
            (tmp / "arrow").mkdir(exist_ok=True)
            (tmp / "report.json").write_text(json.dumps(report.to_json(), ensure_ascii=False), encoding="utf-8")
            meta = {
                "fingerprint": print_,
                "check_images": check_images,
                "version": CACHE_VERSION,
                "rows": rows,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": time.perf_counter() - began,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.rename(tmp, entry)  # atomic publish: readers see all of it or nothing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("validated %s once in %.1f s; cached in %s", path, meta["seconds"], entry)
    return open_task_datasets(entry / "arrow"), report


__all__ = ["CACHE_VERSION", "cache_entry", "fingerprint", "prepare_task_datasets"]
