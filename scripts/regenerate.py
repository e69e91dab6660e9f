"""``--check`` for the scripts that regenerate checked-in files: generate into a scratch folder, compare.

    status = check_folder(generate, Path("data/sample"))   # 0: identical, 1: stale (the differences printed)
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def differences(expected: Path, actual: Path) -> list[str]:
    """Files only in one folder or with other bytes, as ``relative/path: why`` (sorted)."""
    mine = {p.relative_to(expected).as_posix(): p for p in expected.rglob("*") if p.is_file()}
    theirs = {p.relative_to(actual).as_posix(): p for p in actual.rglob("*") if p.is_file()}
    found = [f"{name}: missing" for name in sorted(mine.keys() - theirs.keys())]
    found += [f"{name}: not generated any more" for name in sorted(theirs.keys() - mine.keys())]
    found += [
        f"{name}: differs"
        for name in sorted(mine.keys() & theirs.keys())
        if mine[name].read_bytes() != theirs[name].read_bytes()
    ]
    return sorted(found)


def check_folder(generate: Callable[[Path], None], target: Path, command: str) -> int:
    """Run ``generate`` into a scratch folder and compare it with ``target``; print the verdict, return 0 or 1."""
    with tempfile.TemporaryDirectory(prefix="regenerate-check-") as scratch:
        fresh = Path(scratch) / target.name
        generate(fresh)
        stale = differences(fresh, target)
    if stale:
        print(f"{target} is stale ({len(stale)} file(s)); run {command}:", file=sys.stderr)
        for line in stale[:20]:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{target} is up to date")
    return 0
