"""python -m vipyloqwen_tools.release.readme: --help writes nothing, --check exits 1 on a stale block, a plain run
rewrites only the generated blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vipyloqwen_tools.release import readme

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_help_prints_usage_and_writes_nothing():
    files = [ROOT / "README.md", ROOT / "docs" / "evaluation.md"]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    done = subprocess.run(
        [sys.executable, "-m", "vipyloqwen_tools.release.readme", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "--check" in done.stdout and "usage:" in done.stdout
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before


def test_check_exits_1_on_a_stale_block_and_a_run_fixes_it(tmp_path, capsys):
    card, doc = tmp_path / "README.md", tmp_path / "evaluation.md"
    card.write_text((ROOT / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    doc.write_text((ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8"), encoding="utf-8")
    argv = ["--readme", str(card), "--evaluation-doc", str(doc)]
    assert readme.main([*argv, "--check"]) == 0  # the repository's files are up to date
    stale = readme.replace_block(card.read_text(encoding="utf-8"), "tasks", "| old table |\n")
    card.write_text(stale, encoding="utf-8")
    assert readme.main([*argv, "--check"]) == 1
    assert f"stale: {card} (<!-- tasks -->)" in capsys.readouterr().err
    assert card.read_text(encoding="utf-8") == stale  # --check writes nothing
    assert readme.main(argv) == 0
    assert readme.main([*argv, "--check"]) == 0
    assert card.read_text(encoding="utf-8") == (ROOT / "README.md").read_text(encoding="utf-8")


def test_missing_markers_exit_2_naming_the_file(tmp_path, capsys):
    card = tmp_path / "README.md"
    card.write_text("# no markers\n", encoding="utf-8")
    assert readme.main(["--readme", str(card), "--check"]) == 2
    assert f"error: {card}: no <!-- tasks:start -->" in capsys.readouterr().err
