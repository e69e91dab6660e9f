"""Parallel validation and Arrow build of one JSONL file over byte ranges, with an exact merged report.

:func:`scan_file` cuts the file at line boundaries into ranges (:func:`~vipyloqwen_tools.data.lines.split_ranges`),
and worker processes each read one range losslessly, validate every line, write the good rows to per-task Arrow
files (:class:`~vipyloqwen_tools.data.arrow.RangeWriter`) and hash them for duplicate detection. Image checks come
in a second phase: the distinct image paths of all ranges are verified once each, in parallel; the (rare) ranges
that hold a bad image are then read again with the verdicts, so their rows are reported and left out. The main
process adds the line counts of earlier ranges to each range's local line numbers and merges everything in line
order, so 1 worker and N workers give identical reports and identical datasets.

Memory: rows stream through workers in Arrow batches; the main process holds the bad lines, the distinct image
paths, and for duplicate detection 12 bytes per good row of one hash bucket at a time (1/16 of the rows).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
import sys
from array import array
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vipyloqwen_tools.data.arrow import RangeWriter, write_range_lines
from vipyloqwen_tools.data.content_hash import RangeHasher, RangeHashes, combine
from vipyloqwen_tools.data.lines import (
    BOM,
    auto_parts,
    decode_line,
    default_num_proc,
    escape_bytes,
    iter_raw_lines,
    split_ranges,
)
from vipyloqwen_tools.data.report import MAX_PAIRS, BadLine, Duplicates, ValidationReport
from vipyloqwen_tools.data.schema import DataError, check_row, image_folder, row_images, verify_image

logger = logging.getLogger(__name__)
BUCKET_BITS = 4  # duplicate hashes are merged in 2**BUCKET_BITS buckets: the main process holds one at a time
DUP_KINDS = ("ids", "rows")


@dataclass
class RangeJob:
    path: str
    root: str
    index: int
    start: int
    end: int
    work: str | None  # folder for the Arrow files (work/arrow/r<index>) and duplicate hashes (work/dups)
    arrow: bool
    collect_images: bool
    bad_images: dict[str, str] | None = None  # phase 2: verdicts for this range's bad images
    size: int = 0  # the file's size (the content hash's last chunk)


@dataclass
class RangeResult:
    index: int
    lines: int = 0
    blank: int = 0
    bytes_read: int = 0
    counts: Counter = field(default_factory=Counter)
    bad: list[tuple[int, str, str]] = field(default_factory=list)
    bom_lines: list[int] = field(default_factory=list)
    images: set[str] = field(default_factory=set)
    rows_written: dict[str, int] = field(default_factory=dict)
    hashes: RangeHashes | None = None  # this range's share of the file's content hash


def _hash64(data: bytes) -> bytes:
    # blake2b, not hash(): stable across processes (str hashing is salted per interpreter).
    return hashlib.blake2b(data, digest_size=8).digest()


def _save_hashes(work: Path, kind: str, index: int, hashes: bytearray, lines: array) -> None:
    values = np.frombuffer(bytes(hashes), dtype="<u8")
    numbers = np.frombuffer(lines.tobytes(), dtype="<u4").astype("<u8")
    buckets = values >> np.uint64(64 - BUCKET_BITS)
    folder = work / "dups"
    folder.mkdir(parents=True, exist_ok=True)
    for bucket in range(2**BUCKET_BITS):
        mask = buckets == bucket
        np.save(folder / f"{kind}-{bucket:02d}-{index:05d}.npy", np.stack([values[mask], numbers[mask]]))


def scan_range(job: RangeJob) -> RangeResult:
    """Validate (and convert) the lines of one byte range; line numbers in the result are local (from 1)."""
    result = RangeResult(job.index)
    check = job.bad_images.get if job.bad_images is not None else None
    writer = None
    if job.arrow:
        folder = Path(job.work) / "arrow" / f"r{job.index:05d}"
        shutil.rmtree(folder, ignore_errors=True)  # a re-read range replaces what it wrote before
        writer = RangeWriter(folder)
    hashes = {kind: bytearray() for kind in DUP_KINDS}
    numbers = {kind: array("I") for kind in DUP_KINDS}
    hasher = RangeHasher(job.path, job.start, job.end, job.size)
    for number, data in iter_raw_lines(job.path, job.start, job.end):
        offset = job.start + result.bytes_read
        result.lines += 1
        result.bytes_read += len(data)
        hasher.update(data)  # the content hash of the validate-once cache, from this very read
        data = data.removesuffix(b"\n")
        text, error, had_bom = decode_line(data)
        if had_bom and not (job.start == 0 and number == 1):
            result.bom_lines.append(number)
        if error is not None:
            result.bad.append((number, error, escape_bytes(data.removesuffix(b"\r"))))
            continue
        if not text.strip():
            result.blank += 1
            continue
        try:
            row = check_row(text, job.root, check)
        except ValueError as reason:
            result.bad.append((number, str(reason), text))
            continue
        result.counts[row["task"]] += 1
        if job.collect_images:
            result.images.update(row_images(row))
        if writer is not None:
            writer.add(row, number, offset)
        hashes["rows"] += _hash64(data.strip().removeprefix(BOM).strip())
        numbers["rows"].append(number)
        if row["id"] is not None:
            hashes["ids"] += _hash64(row["id"].encode("utf-8"))
            numbers["ids"].append(number)
    result.hashes = hasher.result()
    if writer is not None:
        result.rows_written = writer.close()
    if job.work is not None:
        for kind in DUP_KINDS:
            _save_hashes(Path(job.work), kind, job.index, hashes[kind], numbers[kind])
    return result


def _merge_duplicates(work: Path, kind: str, offsets: list[int]) -> Duplicates:
    """Lines whose hash repeats an earlier line's, bucket by bucket (12 bytes per row of one bucket in memory)."""
    found = Duplicates()
    pairs: list[tuple[int, int]] = []
    for bucket in range(2**BUCKET_BITS):
        parts = []
        for index, offset in enumerate(offsets):
            stacked = np.load(work / "dups" / f"{kind}-{bucket:02d}-{index:05d}.npy")
            parts.append((stacked[0], stacked[1] + np.uint64(offset)))
        values = np.concatenate([p[0] for p in parts])
        lines = np.concatenate([p[1] for p in parts])
        if len(values) < 2:
            continue
        order = np.lexsort((lines, values))
        values, lines = values[order], lines[order]
        repeat = np.flatnonzero(values[1:] == values[:-1]) + 1
        if not len(repeat):
            continue
        found.count += len(repeat)
        starts = np.where(np.r_[True, values[1:] != values[:-1]], np.arange(len(values)), 0)
        first = lines[np.maximum.accumulate(starts)[repeat]]
        again = lines[repeat]
        keep = np.argsort(again, kind="stable")[:MAX_PAIRS]
        pairs.extend(zip(first[keep].tolist(), again[keep].tolist(), strict=True))
    found.pairs = sorted(pairs, key=lambda pair: pair[1])[:MAX_PAIRS]
    return found


def _executor(workers: int) -> Executor | None:
    if workers <= 1:
        return None
    # fork: workers start in milliseconds and inherit the imported modules (spawn would re-import transformers
    # per worker); the parent has started no threads of its own at this point of data preparation.
    method = "fork" if sys.platform.startswith("linux") else None
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


def _run(pool: Executor | None, function, items, chunksize: int = 1) -> list:
    if pool is None:
        return [function(item) for item in items]
    return list(pool.map(function, items, chunksize=chunksize))


def scan_file(
    path: str | os.PathLike,
    num_proc: int | None = None,
    check_images: bool = True,
    work: str | os.PathLike | None = None,
    arrow: bool = False,
    image_root: str | os.PathLike | None = None,
) -> tuple[ValidationReport, dict[str, int]]:
    """Validate every line of ``path`` with ``num_proc`` workers (default: the machine's cores).

    Relative image paths are read from ``image_root`` (default: the file's folder).

    With ``arrow`` the good rows are written under ``work/arrow`` (see :func:`open_task_datasets`); ``work`` also
    holds the duplicate hashes (a temporary folder when None). Returns the report and the rows written per
    dataset name. The line invariant is checked here: a violation raises :class:`DataError`.

    With ``num_proc=None`` each worker gets at least 4 MB of the file (small files are read in this process);
    an explicit ``num_proc`` uses that many ranges (fewer only when the file has fewer lines).
    """
    import tempfile

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if num_proc is not None and num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    workers = num_proc or default_num_proc()
    ranges = split_ranges(path, workers if num_proc is not None else auto_parts(path, workers))
    size = path.stat().st_size
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-scan-") as scratch:
        work_dir = Path(work) if work is not None else Path(scratch)
        jobs = [
            RangeJob(str(path), image_folder(path, image_root), i, a, b, str(work_dir), arrow, check_images, size=size)
            for i, (a, b) in enumerate(ranges)
        ]
        pool = _executor(min(workers, len(jobs)))
        try:
            results = _run(pool, scan_range, jobs)
            distinct = sorted(set().union(*(r.images for r in results)))
            if check_images and distinct:
                chunk = max(1, len(distinct) // (4 * workers))
                if pool is None and workers > 1 and len(distinct) > 64:
                    pool = _executor(workers)  # one range (small file) but many images: verify them in parallel
                verdicts = _run(pool, verify_image, distinct, chunksize=chunk)
                bad_images = {p: v for p, v in zip(distinct, verdicts, strict=True) if v is not None}
                again = []
                for job, result in zip(jobs, results, strict=True):
                    mine = {p: bad_images[p] for p in result.images if p in bad_images}
                    if mine:
                        job.bad_images = mine
                        again.append(job)
                for result in _run(pool, scan_range, again):
                    results[result.index] = result
        finally:
            if pool is not None:
                pool.shutdown()
        report = _merge(path, results, check_images, len(distinct))
        if sum(r.bytes_read for r in results) != size:
            raise DataError(f"{path}: read {sum(r.bytes_read for r in results)} bytes of {size}: the file changed?")
        report.content_hash = combine((r.hashes for r in results), size)
        if arrow:
            (work_dir / "arrow").mkdir(parents=True, exist_ok=True)
            write_range_lines(work_dir / "arrow", (np.cumsum([0] + [r.lines for r in results[:-1]]) + 1).tolist())
        offsets = np.cumsum([0] + [r.lines for r in results[:-1]]).tolist()
        report.duplicate_ids = _merge_duplicates(work_dir, "ids", offsets)
        report.duplicate_rows = _merge_duplicates(work_dir, "rows", offsets)
        shutil.rmtree(work_dir / "dups", ignore_errors=True)
    rows_written: Counter = Counter()
    for result in results:
        rows_written.update(result.rows_written)
    if arrow and sum(rows_written.values()) != report.good:
        raise DataError(f"{path}: {sum(rows_written.values())} rows written to Arrow != {report.good} good rows")
    logger.info("%s", report.check_invariant())
    return report, dict(rows_written)


def _merge(path: Path, results: list[RangeResult], check_images: bool, images: int) -> ValidationReport:
    report = ValidationReport(path, check_images=check_images, images=images)
    offset = 0
    for result in results:
        report.lines += result.lines
        report.blank += result.blank
        report.counts.update(result.counts)
        report.bad.extend(BadLine(offset + n, reason, raw) for n, reason, raw in result.bad)
        report.bom_lines.extend(offset + n for n in result.bom_lines)
        offset += result.lines
    return report


__all__ = ["RangeJob", "RangeResult", "scan_file", "scan_range"]
