"""Side-by-side table of our MTEB results and baselines' result folders, per task and per task type.

Every path may be a run output folder (holding results/), a results/ folder, a model folder
(``<org>__<name>``) or a revision folder, e.g. a local checkout of the MTEB results repository
(``results/intfloat__multilingual-e5-large``). Scores are main scores (x100), the mean over a task's splits
and subsets; means per task type and overall are over the tasks all models have.

Text-only baselines (VN-MMEB's ``<Task>TextOnly``: the same model with the images removed from the queries) are
kept out of the per-task and per-type tables and shown in their own table beside the task they belong to, with
the difference the image makes.

Example::

    python eval/compare.py runs/mteb ../results/results/intfloat__multilingual-e5-large \\
        --tasks-from runs/mteb --output runs/compare.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from eval.cli import eval_parser
from vipyloqwen_tools.release.results import (
    STAND_IN_MARK,
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


def text_only_table(models: list, categories: dict[str, str] | None = None) -> str:
    """Per task: each model's score with the images in the queries, without them (its text-only baseline) and the
    difference (x100). With ``categories`` (a benchmark's tasks) every task gets a row: t2i queries are text
    already, i2t queries are an image alone, so neither has a baseline to run."""
    from eval.vn_mmeb import TEXT_ONLY_BASELINES

    of_task = {task: baseline for baseline, task in TEXT_ONLY_BASELINES.items()}
    tasks = (
        list(categories) if categories else sorted(t for t in of_task if any(of_task[t] in m.scores for m in models))
    )
    header = ["Task", "Category"]
    for m in models:
        header += [f"{m.name}: image + text", "text only", "image adds"]
    rows = []
    for task in tasks:
        if task in TEXT_ONLY_BASELINES:
            continue
        category = (categories or {}).get(task, "it2t")
        row = [task, category]
        for m in models:
            full, base = m.scores.get(task), m.scores.get(of_task.get(task, ""))
            if task in of_task:
                gain = None if full is None or base is None else full - base
                row += [_marked(m, task), _marked(m, of_task[task]), fmt(gain)]
            else:
                why = "same (text queries)" if category == "t2i" else "n/a (image-only queries)"
                row += [_marked(m, task), why, "-"]
        rows.append(row)
    return markdown_table(header, rows)


def _marked(model, task: str) -> str:
    """A score (x100), marked when it was run on stand-in data (release/results.py's STAND_IN_NOTE)."""
    stand_in = task in model.stand_in and task in model.scores
    return fmt(model.scores.get(task)) + (STAND_IN_MARK if stand_in else "")


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
    from eval.vn_mmeb import TEXT_ONLY_BASELINES  # registers the VN-MMEB tasks, so their task types are known

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
    with_baselines = [m for m in models if any(t in TEXT_ONLY_BASELINES for t in m.scores)]
    baselines = text_only_table(models, categories) if with_baselines else ""
    text = comparison_tables(models)  # the baselines are not tasks of its means (results.headline_scores)
    if categories:
        categories = {t: c for t, c in categories.items() if t not in TEXT_ONLY_BASELINES}
        text += "\n\n" + category_table(models, categories)
    if baselines:
        text += "\n\nText-only baseline (the same model with the images removed from the queries):\n\n" + baselines
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = eval_parser(
        "compare.py",
        __doc__,
        "python eval/compare.py runs/mteb baselines/results/intfloat__multilingual-e5-large",
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
