"""Side-by-side table of our MTEB results and baselines' result folders, per task and per task type.

Every path may be a run output folder (holding results/), a results/ folder, a model folder
(``<org>__<name>``) or a revision folder, e.g. a local checkout of the MTEB results repository
(``results/intfloat__multilingual-e5-large``). Scores are main scores (x100), the mean over a task's splits
and subsets; means per task type and overall are over the tasks all models have.

Example::

    python eval/compare.py runs/mteb ../results/results/intfloat__multilingual-e5-large \\
        --tasks-from runs/mteb --output runs/compare.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from eval.results_io import comparison_tables, find_revision_folders, load_models, load_revision_folder  # noqa: E402


def compare(paths: Sequence[str | Path], tasks_from: str | Path | None = None) -> str:
    """The markdown comparison of every model found under ``paths`` (first path first).

    Args:
        paths: result folders; the first is "ours".
        tasks_from: restrict every model to the tasks of this result folder (default: all tasks found).
    """
    models = load_models(paths)
    if tasks_from is not None:
        keep: set[str] = set()
        for folder in find_revision_folders(tasks_from):
            keep |= set(load_revision_folder(folder).scores)
        for m in models:
            m.scores = {t: s for t, s in m.scores.items() if t in keep}
            m.task_types = {t: s for t, s in m.task_types.items() if t in keep}
    return comparison_tables(models)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="compare.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python eval/compare.py runs/mteb baselines/results/intfloat__multilingual-e5-large",
    )
    parser.add_argument("paths", nargs="+", help="result folders: ours first, then baselines")
    parser.add_argument("--tasks-from", help="only the tasks present in this result folder (e.g. ours)")
    parser.add_argument("--output", help="also write the markdown here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 ok, 2 when a folder has no results."""
    args = build_parser().parse_args(argv)
    try:
        text = compare(args.paths, args.tasks_from)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
