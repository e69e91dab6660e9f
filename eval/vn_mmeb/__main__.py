"""``python -m eval.vn_mmeb``: list the benchmark's tasks; ``--table``: print the dataset table; ``--write``:
rewrite the table between ``<!-- vn-mmeb-datasets:start -->`` and ``<!-- vn-mmeb-datasets:end -->`` in
docs/evaluation.md and eval/vn_mmeb/README.md (a test keeps both in sync)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from . import dataset_table, get_benchmark

REPO = Path(__file__).resolve().parent.parent.parent
DOCS = (REPO / "docs" / "evaluation.md", REPO / "eval" / "vn_mmeb" / "README.md")
BLOCK = re.compile(r"(<!-- vn-mmeb-datasets:start -->\n).*?(\n<!-- vn-mmeb-datasets:end -->)", re.S)


def write_tables(files: tuple[Path, ...] = DOCS) -> None:
    """Replace the dataset table block in each file (an error when a file lacks the markers)."""
    table = dataset_table()
    for path in files:
        text = path.read_text(encoding="utf-8")
        if not BLOCK.search(text):
            raise SystemExit(f"{path}: no <!-- vn-mmeb-datasets:start --> ... <!-- vn-mmeb-datasets:end --> block")
        path.write_text(BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")
        print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.vn_mmeb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="print the dataset table (markdown)")
    parser.add_argument("--write", action="store_true", help="rewrite the table in docs/evaluation.md and README.md")
    args = parser.parse_args()
    if args.write:
        write_tables()
    elif args.table:
        print(dataset_table())
    else:
        for task in get_benchmark().tasks:
            meta = task.metadata
            print(f"{meta.name}\t{meta.type}\t{meta.category}\t{meta.main_score}\t{','.join(task.hf_subsets)}")


if __name__ == "__main__":
    main()
