"""The validation report: per-task counts, every bad line, blank lines, duplicates and the line invariant.

The invariant ``lines read = good + bad + blank`` holds for every file (:meth:`ValidationReport.check_invariant`
raises :class:`DataError` otherwise: a lost line is an error, never a warning). Reports serialise to JSON for the
validate-once cache and for ``write_rejects``.

Example::

    >>> report = validate_file("data/sample/train.jsonl")
    >>> report.check_invariant()
    'data/sample/train.jsonl: 1000 lines read = 1000 good + 0 bad + 0 blank'
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.data.schema import SCORE_RANGE_ERROR, DataError

MAX_PAIRS = 10  # duplicate line pairs kept in a report (the counts are exact)
_SCORE_OUT = re.compile("^" + re.escape(SCORE_RANGE_ERROR).replace(re.escape("{score}"), r"(\S+)") + "$")


@dataclass
class BadLine:
    """One bad line: its 1-based number in the file, why it is bad, and its raw text (bytes escaped if not UTF-8)."""

    line: int
    reason: str
    raw: str


@dataclass
class Duplicates:
    """Lines that repeat an earlier line's value (``count``) and the first pairs ``(first line, repeat line)``."""

    count: int = 0
    pairs: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Result of :func:`vipyloqwen_tools.data.validate_file`.

    ``counts`` per task of good rows, ``bad`` every bad line in line order, ``lines`` every line read, ``blank``
    the blank ones, ``bom_lines`` lines after line 1 that started with a BOM (read as if it were absent),
    ``duplicate_ids`` / ``duplicate_rows`` among the good rows (reported, nothing dropped), ``images`` the distinct
    image files verified, ``cached`` whether it came from the validate-once cache, ``content_hash`` the full-file
    hash computed while the lines were read (:mod:`~vipyloqwen_tools.data.content_hash`). ``late_bad``: lines of
    ``bad`` that passed validation but were found unreadable when training built their batch (the cache learned
    them, :mod:`~vipyloqwen_tools.data.learned`): their rows are still in the datasets and are dropped at batch time.
    """

    path: Path
    counts: Counter = field(default_factory=Counter)
    bad: list[BadLine] = field(default_factory=list)
    lines: int = 0
    blank: int = 0
    bom_lines: list[int] = field(default_factory=list)
    duplicate_ids: Duplicates = field(default_factory=Duplicates)
    duplicate_rows: Duplicates = field(default_factory=Duplicates)
    check_images: bool = True
    images: int = 0
    cached: bool = False
    content_hash: str = ""
    cache_entry: str = ""  # the validate-once cache entry the datasets come from ("" without a cache)
    late_bad: list[int] = field(default_factory=list)  # bad lines found after validation, still in the datasets

    @property
    def good(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        """Non-blank lines (good + bad)."""
        return self.good + len(self.bad)

    def invariant(self) -> str:
        return f"{self.path}: {self.lines} lines read = {self.good} good + {len(self.bad)} bad + {self.blank} blank"

    def check_invariant(self) -> str:
        """Raise :class:`DataError` unless lines read = good + bad + blank; returns the line to log."""
        if self.lines != self.good + len(self.bad) + self.blank:
            raise DataError(f"line invariant broken (lines were lost): {self.invariant()}")
        return self.invariant()

    def summary(self, max_bad: int | None = None) -> str:
        good, bad = self.good, len(self.bad)
        out = [f"{self.path}: {self.lines} lines read: {good} good, {bad} bad, {self.blank} blank"]
        if not self.check_images:
            out[0] += " (images not checked)"
        elif self.images:
            out[0] += f"; {self.images} distinct image file(s) verified"
        for task in TASKS:
            out.append(f"  {task:<11} {self.counts.get(task, 0)}")
        for name, dup in (("id", self.duplicate_ids), ("row", self.duplicate_rows)):
            if dup.count:
                pairs = ", ".join(f"{a}={b}" for a, b in dup.pairs)
                out.append(f"  duplicate {name}s: {dup.count} line(s) repeat an earlier {name} (lines {pairs}, ...)")
        if self.bom_lines:
            shown = ", ".join(map(str, self.bom_lines[:MAX_PAIRS]))
            count = len(self.bom_lines)
            out.append(f"  {count} line(s) after line 1 begin with a BOM, read without it (joined files?): {shown}")
        shown = self.bad if max_bad is None else self.bad[:max_bad]
        for line in shown:
            out.append(f"  line {line.line}: {line.reason}")
        if len(shown) < bad:
            out.append(f"  ... {bad - len(shown)} more bad lines")
        out += [f"  hint: {hint}" for hint in self.hints()]
        return "\n".join(out)

    def hints(self) -> list[str]:
        """What the bad lines suggest about the whole file: scores on a 0-5 scale."""
        scores = [float(match.group(1)) for line in self.bad if (match := _SCORE_OUT.match(line.reason))]
        if scores and all(1.0 < score <= 5.0 for score in scores):
            # The other scores passed, so they are in [0, 1]: every score of the file lies in [0, 5].
            return [
                f"{len(scores)} score(s) above 1 and every score of the file lies in [0, 5]: a 0-5 scale (as STS "
                "data uses)? Rescale the scores to [0, 1] (score / 5) and validate again"
            ]
        return []

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["counts"] = dict(self.counts)
        for runtime in ("cache_entry", "late_bad"):  # where this load came from; not part of the file's report
            data.pop(runtime)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidationReport:
        data = dict(data)
        data["path"] = Path(data["path"])
        data["counts"] = Counter(data["counts"])
        data["bad"] = [BadLine(**bad) for bad in data["bad"]]
        for key in ("duplicate_ids", "duplicate_rows"):
            dup = data[key]
            data[key] = Duplicates(dup["count"], [tuple(pair) for pair in dup["pairs"]])
        return cls(**data)


def write_rejects(report: ValidationReport, out: str | os.PathLike) -> Path:
    """Write the bad lines of a report as JSONL (``{"file", "line", "reason", "raw"}``) to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for bad in report.bad:
            record = {"file": str(report.path), "line": bad.line, "reason": bad.reason, "raw": bad.raw}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


__all__ = ["MAX_PAIRS", "BadLine", "Duplicates", "ValidationReport", "write_rejects"]
