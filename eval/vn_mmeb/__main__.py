"""``python -m eval.vn_mmeb --table``: print the benchmark's dataset table (docs/evaluation.md embeds it);
``--tasks``: the task names, one per line."""

from __future__ import annotations

import argparse

from . import dataset_table, get_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.vn_mmeb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="the dataset table (markdown)")
    parser.add_argument("--tasks", action="store_true", help="the benchmark's task names")
    args = parser.parse_args()
    if args.tasks or not args.table:
        for task in get_benchmark().tasks:
            meta = task.metadata
            print(f"{meta.name}\t{meta.type}\t{meta.category}\t{meta.main_score}\t{','.join(task.hf_subsets)}")
    if args.table:
        print(dataset_table())


if __name__ == "__main__":
    main()
