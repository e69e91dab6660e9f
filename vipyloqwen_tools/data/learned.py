"""Rows found bad after validation: the validate-once cache entry learns them, so a resumed run knows them.

Training opens images only when it builds a batch. An image deleted, truncated or changed after the file was
validated (and cached) is found there; training then calls :func:`remember` (one JSON line in
``<entry>/learned-bad.jsonl``, appended under a ``flock``: any process or dataloader worker may find one).
Every later load of the entry calls :func:`apply_learned`: the rows whose images are still unreadable become bad
lines of the report (so a run without ``--skip-bad-rows`` is refused at its start, naming them, instead of dying
at the same batch again; with it they go to the rejects file), and their line numbers are listed in
``report.late_bad`` (their rows are still in the Arrow datasets: training drops them when it builds their batch).
A row whose images read again (the file was restored) is trained again.

Record: ``{"line", "dataset", "index", "task", "images", "reason", "raw", "check"}`` (line: 1-based in the JSONL
file; dataset / index: the row in its per-task dataset; images: every image path of the row). ``check`` says how a
later load decides whether the row is still bad: ``images`` (the default): :func:`~.schema.verify_image` on its
images (unreadable, or a size the model cannot take); ``preprocess`` (the collator refused the row for a reason
validation does not check): bad while its images are unchanged (``image_stats``: size and mtime of each, see
:func:`image_stats`), so it is tried again only once an image was replaced.

Example::

    >>> remember(entry, {"line": 12, "dataset": "ocr", "index": 3, "task": "ocr", "images": [...], ...})
    True
    >>> apply_learned(report, entry)   # report.bad now has line 12, report.late_bad == [12]
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from vipyloqwen_tools.data.report import BadLine, ValidationReport
from vipyloqwen_tools.data.schema import verify_image

logger = logging.getLogger(__name__)
LEARNED_FILE = "learned-bad.jsonl"


def recall(entry: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows the entry learned, in the order they were found (one per line number)."""
    path = Path(entry) / LEARNED_FILE
    if not path.is_file():
        return []
    records = {}
    for text in path.read_text(encoding="utf-8").splitlines():
        if text.strip():
            record = json.loads(text)
            records.setdefault(record["line"], record)
    return list(records.values())


def remember(entry: str | os.PathLike, record: dict[str, Any]) -> bool:
    """Append ``record`` to the entry's learned rows unless its line is there already; True when it was new."""
    path = Path(entry) / LEARNED_FILE
    with path.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            known = {json.loads(text)["line"] for text in handle.read().splitlines() if text.strip()}
            if record["line"] in known:
                return False
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # the next run must see it, even after a crash right after this
            return True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_stats(images: list[str]) -> dict[str, list[int] | None]:
    """``{path: [size, mtime_ns]}`` of each image (``None``: missing): tells a replaced image from the same one."""
    stats: dict[str, list[int] | None] = {}
    for image in images:
        try:
            stat = os.stat(image)
            stats[image] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stats[image] = None
    return stats


def still_bad(record: dict[str, Any]) -> bool:
    """Whether a learned row is still bad now (see the module docstring, ``check``)."""
    if any(verify_image(image) is not None for image in record["images"]):
        return True
    if record.get("check") == "preprocess":
        return image_stats(record["images"]) == record.get("image_stats")
    return False


def apply_learned(report: ValidationReport, entry: str | os.PathLike) -> list[dict[str, Any]]:
    """Turn the entry's learned rows that are still bad (:func:`still_bad`) into bad lines of ``report``.

    Returns those records; each is added to ``report.bad`` (line order kept) and ``report.late_bad``, and taken
    off its task's good count, so ``lines read = good + bad + blank`` still holds.
    """
    still = []
    for record in recall(entry):
        if not still_bad(record):
            logger.warning("line %d: its images read again now: it is trained again", record["line"])
            continue
        still.append(record)
    for record in still:
        report.bad.append(BadLine(record["line"], record["reason"], record["raw"]))
        report.counts[record["task"]] -= 1
    report.bad.sort(key=lambda bad: bad.line)
    report.late_bad = sorted(record["line"] for record in still)
    if still:
        logger.warning(
            "%s: %d row(s) found unreadable after validation (learned by %s): lines %s",
            report.path,
            len(still),
            entry,
            ", ".join(str(line) for line in report.late_bad[:20]),
        )
    return still


__all__ = ["LEARNED_FILE", "apply_learned", "image_stats", "recall", "remember", "still_bad"]
