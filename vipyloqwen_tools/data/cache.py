"""Validate once: the report and the per-task Arrow datasets of a JSONL file, cached under its fingerprint.

An entry is found by the file's resolved path, size and mtime, and is trusted only if the file still has the content
it was built from: the full-file content hash (:mod:`~vipyloqwen_tools.data.content_hash`) is computed by the
validating workers while they read the file (no second pass when an entry is built) and stored in the entry; reusing
the entry hashes the file once (threads, at disk speed) and compares. So any changed byte invalidates it, even with
the size and mtime put back. The path is part of the key because image paths are stored absolute, relative to the
file's folder. One entry is a folder ``<cache_dir>/<name>-<stat key>-<content hash>/`` holding ``report.json``,
``meta.json``, ``arrow/r<range>/<dataset>.arrow`` (+ the JSONL line of every row) and, once training found rows
unreadable at batch time, ``learned-bad.jsonl`` (:mod:`~vipyloqwen_tools.data.learned`).

Concurrency: an entry is built in ``<name>-<stat key>.tmp-<pid>`` under an exclusive ``flock`` on
``<name>-<stat key>.lock`` and published with one atomic ``rename``; readers only ever see complete entries, and
processes that wait for the lock reuse the entry the first one built (so N training processes validate once).

Example::

    >>> datasets, report = prepare_task_datasets("train.jsonl", "runs/x/.data-cache")
    >>> report.cached  # True on the second call: only the content hash is read again
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
from vipyloqwen_tools.data.content_hash import file_content_hash
from vipyloqwen_tools.data.learned import apply_learned
from vipyloqwen_tools.data.lines import default_num_proc
from vipyloqwen_tools.data.report import ValidationReport
from vipyloqwen_tools.data.scan import scan_file
from vipyloqwen_tools.data.schema import DataError

logger = logging.getLogger(__name__)
# Bump when the schema, the Arrow layout or the report format changes. 2: full-file content hash; row lines.
# 3: images checked against every size rule of the model's image path (images_vipyloqwen.check_image_file).
# 4: explicit negatives as a list column, identity keys per side (_keys).
CACHE_VERSION = 4


def stat_key(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of a file: how an entry is found (its content is checked by hash)."""
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def fingerprint(path: str | os.PathLike, threads: int | None = None) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns", "content_hash"}`` of a file; the hash reads the whole file once (threads).

    ``content_hash`` equals the ``content_hash`` of the file's validation report (computed during validation).
    """
    return {**stat_key(path), "content_hash": file_content_hash(Path(path).resolve(), threads)}


def cache_entry(
    cache_dir: str | os.PathLike, path: str | os.PathLike, check_images: bool, image_root: str | None = None
) -> tuple[Path, dict]:
    """The entry name prefix ``<cache_dir>/<name>-<stat key>`` of a file and the stat key it stands for (an
    ``image_root`` is part of it: the same lines name other images)."""
    key = stat_key(path)
    root = {"image_root": os.path.abspath(image_root)} if image_root else {}
    text = json.dumps({**key, **root, "check_images": check_images, "version": CACHE_VERSION}, sort_keys=True)
    name = f"{Path(key['path']).stem}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"
    return Path(cache_dir) / name, key


@contextlib.contextmanager
def _locked(lock_path: Path):
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _candidates(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.parent.glob(prefix.name + "-*") if (p / "report.json").is_file())


def _matching(prefix: Path, path: Path, num_proc: int | None) -> Path | None:
    """The complete entry under ``prefix`` built from the file's present content, if any (hashes the file once)."""
    candidates = _candidates(prefix)
    if not candidates:
        return None
    began = time.perf_counter()
    content = file_content_hash(path, num_proc or default_num_proc())
    seconds = time.perf_counter() - began
    for entry in candidates:
        if entry.name.endswith("-" + content[:16]):
            logger.info("content hash of %s checked in %.1f s: the cache entry matches", path, seconds)
            return entry
    logger.warning(
        "%s has the size and mtime of %d cached validation(s) but other content (hash %s, checked in %.1f s): "
        "validating it again",
        path,
        len(candidates),
        content[:16],
        seconds,
    )
    return None


def _load(entry: Path, path: Path):
    report = ValidationReport.from_json(json.loads((entry / "report.json").read_text(encoding="utf-8")))
    report.path, report.cached = path, True
    logger.info("%s", report.check_invariant())
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    logger.info(
        "reusing the validated data cache %s (built %s in %.1f s; size=%d mtime_ns=%d content hash=%s)",
        entry,
        meta["built"],
        meta["seconds"],
        meta["fingerprint"]["size"],
        meta["fingerprint"]["mtime_ns"],
        meta["fingerprint"]["content_hash"],
    )
    report.cache_entry = str(entry)
    apply_learned(report, entry)
    return open_task_datasets(entry / "arrow"), report


def prepare_task_datasets(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    num_proc: int | None = None,
    check_images: bool = True,
    image_root: str | os.PathLike | None = None,
):
    """``(DatasetDict, ValidationReport)`` for a JSONL file, from the cache or built once (then cached).

    Relative image paths are read from ``image_root`` (default: the file's folder).

    The datasets hold the good rows only; the report says what was left out and why (the caller refuses bad rows
    or writes them to a rejects file). ``num_proc`` workers build a missing entry (default: the machine's cores).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix, key = cache_entry(cache_dir, path, check_images, str(image_root) if image_root else None)
    if (entry := _matching(prefix, path, num_proc)) is not None:
        return _load(entry, path)
    with _locked(prefix.with_name(prefix.name + ".lock")):
        if (entry := _matching(prefix, path, num_proc)) is not None:  # built by another process while we waited
            return _load(entry, path)
        for stale in cache_dir.glob(prefix.name + ".tmp-*"):  # left by a killed build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = prefix.with_name(f"{prefix.name}.tmp-{os.getpid()}")
        tmp.mkdir()
        began = time.perf_counter()
        try:
            report, rows = scan_file(
                path, num_proc=num_proc, check_images=check_images, work=tmp, arrow=True, image_root=image_root
            )
            if stat_key(path) != key:
                raise DataError(f"{path} changed while it was being validated; run again on a file at rest")
            entry = prefix.with_name(f"{prefix.name}-{report.content_hash[:16]}")
            report.cache_entry = str(entry)
            (tmp / "arrow").mkdir(exist_ok=True)
            (tmp / "report.json").write_text(json.dumps(report.to_json(), ensure_ascii=False), encoding="utf-8")
            meta = {
                "fingerprint": {**key, "content_hash": report.content_hash},
                "check_images": check_images,
                "version": CACHE_VERSION,
                "rows": rows,
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": time.perf_counter() - began,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if entry.exists():  # the file changed back to a content validated before, during this build
                shutil.rmtree(tmp)
                return _load(entry, path)
            os.rename(tmp, entry)  # atomic publish: readers see all of it or nothing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("validated %s once in %.1f s; cached in %s", path, meta["seconds"], entry)
    return open_task_datasets(entry / "arrow"), report


__all__ = ["CACHE_VERSION", "cache_entry", "fingerprint", "prepare_task_datasets", "stat_key"]
