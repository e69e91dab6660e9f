"""scripts/make_vn_mmeb_fixtures.py --check: the committed stand-ins are exactly what the script generates, and the
check writes nothing."""

from __future__ import annotations

from pathlib import Path

from scripts import make_vn_mmeb_fixtures

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vn_mmeb"


def test_committed_fixtures_equal_a_fresh_generation(capsys):
    before = sorted((p.as_posix(), p.stat().st_mtime_ns) for p in FIXTURES.rglob("*"))
    assert make_vn_mmeb_fixtures.main(["--check"]) == 0, capsys.readouterr().err
    assert sorted((p.as_posix(), p.stat().st_mtime_ns) for p in FIXTURES.rglob("*")) == before
