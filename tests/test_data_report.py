"""The validation report: the line invariant, JSON round trip for the cache, the rejects file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vipyloqwen_tools.data.report import BadLine, Duplicates, ValidationReport, write_rejects
from vipyloqwen_tools.data.schema import DataError


def report() -> ValidationReport:
    return ValidationReport(
        Path("f.jsonl"),
        counts=Counter({"ocr": 2, "text_pair": 1}),
        bad=[BadLine(2, "malformed JSON: x", '{"a"'), BadLine(5, "not UTF-8: y", "caf\\xe9")],
        lines=6,
        blank=1,
        bom_lines=[4],
        duplicate_ids=Duplicates(1, [(1, 3)]),
    )


def test_invariant_holds_or_raises():
    good = report()
    assert good.check_invariant() == "f.jsonl: 6 lines read = 3 good + 2 bad + 1 blank"
    lost = report()
    lost.lines = 7
    with pytest.raises(DataError, match="line invariant broken"):
        lost.check_invariant()


def test_summary_names_counts_duplicates_bom_and_bad_lines():
    text = report().summary()
    assert "6 lines read: 3 good, 2 bad, 1 blank" in text
    assert "duplicate ids: 1 line(s) repeat an earlier id (lines 1=3" in text
    assert "begin with a BOM" in text and "line 5: not UTF-8" in text


def test_json_round_trip():
    original = report()
    back = ValidationReport.from_json(json.loads(json.dumps(original.to_json())))
    assert back == original


def test_rejects_keep_raw_escaped_bytes(tmp_path: Path):
    rejects = write_rejects(report(), tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r)["line"] for r in rejects] == [2, 5]
    assert json.loads(rejects[1])["raw"] == "caf\\xe9"
