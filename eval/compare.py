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

from eval.results_io import (  # noqa: E402
    comparison_tables,
    find_revision_folders,
    fmt,
    load_models,
    load_revision_folder,
    markdown_table,
    mean,
)


def benchmark_task_categories(benchmark: str) -> dict[str, str]:
    """Task name -> category (t2i, i2t, it2t, ...) of every task of a benchmark (VN-MMEB or an mteb one)."""
    import mteb

    from eval import vn_mmeb

    bench = vn_mmeb.get_benchmark(benchmark) if benchmark == vn_mmeb.BENCHMARK_NAME else mteb.get_benchmark(benchmark)
    return {t.metadata.name: str(t.metadata.category) for t in bench.tasks}


def category_table(models: list, categories: dict[str, str]) -> str:
    """Mean main score per task category over the tasks every model has (x100)."""
    common = [t for t in categories if all(t in m.scores for m in models)]
    rows = []
    for cat in sorted({categories[t] for t in common}):
        tasks = [t for t in common if categories[t] == cat]
        rows.append([cat, str(len(tasks)), *(fmt(mean(m.scores[t] for t in tasks)) for m in models)])
    return markdown_table(["Category", "Tasks", *(m.name for m in models)], rows)


def compare(
    paths: Sequence[str | Path],
    tasks_from: str | Path | None = None,
    benchmark: str | None = None,
    first: str | None = None,
) -> str:
    """The markdown comparison of every model found under ``paths`` (first path first).

    Args:
        paths: result folders; the first is "ours". One folder may hold several models (e.g. the output of
            eval/run_peers.py: ours and the peers side by side).
        tasks_from: restrict every model to the tasks of this result folder (default: all tasks found).
        benchmark: restrict to this benchmark's tasks (e.g. "VN-MMEB (vie, v1)") and add a table per category.
        first: the model name to put in the first column (default: the order found).
    """
    from eval import vn_mmeb  # noqa: F401 - registers the VN-MMEB tasks, so their task types are known

    models = load_models(paths)
    keep: set[str] | None = None
    if tasks_from is not None:
        keep = set()
        for folder in find_revision_folders(tasks_from):
            keep |= set(load_revision_folder(folder).scores)
    categories = benchmark_task_categories(benchmark) if benchmark else {}
    if benchmark:
        keep = set(categories) if keep is None else keep & set(categories)
    if keep is not None:
        for m in models:
            m.scores = {t: s for t, s in m.scores.items() if t in keep}
            m.task_types = {t: s for t, s in m.task_types.items() if t in keep}
    models = [m for m in models if m.scores] or models
    if first is not None:
        models.sort(key=lambda m: m.name != first)
    text = comparison_tables(models)
    if categories:
        text += "\n\n" + category_table(models, categories)
    return text


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
    parser.add_argument(
        "--benchmark", help='only this benchmark\'s tasks, plus a table per category, e.g. "VN-MMEB (vie, v1)"'
    )
    parser.add_argument("--first", help="model name for the first column (e.g. erax-ai/viPyloQwen)")
    parser.add_argument("--output", help="also write the markdown here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 ok, 2 when a folder has no results."""
    args = build_parser().parse_args(argv)
    try:
        text = compare(args.paths, args.tasks_from, args.benchmark, args.first)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
