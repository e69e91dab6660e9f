"""Evaluate a viPyloQwen checkpoint on a JSONL eval file in the training schema (EVAL_5k.jsonl style).

Per task (registry key), with the held-out evaluator training uses (``vipyloqwen_tools.train.evaluation``, built on
Sentence-Transformers' InformationRetrievalEvaluator / EmbeddingSimilarityEvaluator), so both give the same numbers:

- retrieval: each query is ranked against all candidates of its task, the distinct documents of that task
  (every row's positive and explicit negatives, deduplicated by text + images). Reported: R@1, R@5, R@10,
  MRR@10 and nDCG@10 (one relevant document per query: its own positive). Ties count against the query
  (a candidate scoring exactly the positive's cosine ranks above it). For text_pair only rows with
  score >= --positive-threshold (default 0.5) are retrieval queries: a 0.1-scored pair is not a match.
- text_pair: Pearson and Spearman correlation between cos(query, positive) and the gold score, all rows.

Encoding follows the training convention: queries carry their task prefix; documents carry none, except
text_pair whose two sides are symmetric (both prefixed). ``--prefix-documents`` prefixes every document.

Rows (field names of vipyloqwen_tools/data.py): ``task`` (registry key or prefix token), ``query`` and
``positive`` (a string, or {"text": str, "images": [path, ...], "turns": [{"role", "content"}, ...]}),
optional ``negative`` / ``negatives`` (same shape; a list), ``score`` in [0, 1] (required for text_pair), optional
``id``. Image paths are relative to the JSONL file's folder (or absolute). A malformed line stops the run with its line
number (``--skip-bad-rows``, the flag training uses, lists them and goes on; ``--skip-bad-lines`` is its old name).

Example::

    HF_HUB_OFFLINE=1 python eval/evaluate_jsonl.py --model ./ckpt --data data/sample/eval.jsonl --output runs/jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.cli import eval_parser
from vipyloqwen_tools.data import iter_file
from vipyloqwen_tools.release.results import markdown_table
from vipyloqwen_tools.train.evaluation import TaskReport, ViPyloQwenEvaluator


class JsonlError(ValueError):
    """A malformed eval file: the message names every bad line with its number."""


def read_jsonl(
    path: str | Path,
    skip_bad_rows: bool = False,
    image_root: str | Path | None = None,
    skip_bad_lines: bool | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Parse every non-blank line with the training schema's parser (``vipyloqwen_tools.data``); relative image
    paths are read from ``image_root`` (default: the file's folder).

    Returns (rows, normalised as ``iter_file`` yields them; bad lines as (line number, reason)). Raises JsonlError
    naming every bad line unless ``skip_bad_rows`` (``skip_bad_lines``: its old name).
    """
    skip_bad_rows = skip_bad_rows or bool(skip_bad_lines)
    path = Path(path)
    if not path.is_file():
        raise JsonlError(f"{path}: no such file")
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for number, _raw, row, error in iter_file(path, image_root=image_root):
        if error is not None:
            bad.append((number, error))
        else:
            rows.append(row)
    if bad and not skip_bad_rows:
        listed = "\n".join(f"  {path}:{n}: {reason}" for n, reason in bad[:50])
        more = f"\n  ... {len(bad) - 50} more" if len(bad) > 50 else ""
        raise JsonlError(f"{len(bad)} bad line(s) in {path} (--skip-bad-rows evaluates the rest):\n{listed}{more}")
    if not rows:
        raise JsonlError(f"{path}: no usable rows")
    return rows, bad


def evaluate_rows(
    model: Any,
    rows: Sequence[dict[str, Any]],
    batch_size: int = 16,
    positive_threshold: float = 0.5,
    prefix_documents: bool = False,
    progress: bool = True,
) -> dict[str, TaskReport]:
    """The report of every task present, in registry order (:meth:`ViPyloQwenEvaluator.reports`)."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    evaluator = ViPyloQwenEvaluator(
        by_task,
        batch_size=batch_size,
        prefix_documents=prefix_documents,
        positive_threshold=positive_threshold,
        show_progress_bar=progress,
    )
    return evaluator.reports(model)


METRIC_COLUMNS = ("r@1", "r@5", "r@10", "mrr@10", "ndcg@10", "pearson", "spearman")


def to_markdown(reports: dict[str, TaskReport]) -> str:
    """One row per task; metrics x100; "-" where a metric does not apply."""
    rows = []
    for rep in reports.values():
        cells = [f"{rep.metrics[m] * 100:.2f}" if m in rep.metrics else "-" for m in METRIC_COLUMNS]
        rows.append([rep.task, str(rep.rows), str(rep.queries), str(rep.candidates), *cells])
    return markdown_table(["Task", "Rows", "Queries", "Candidates", *(m.upper() for m in METRIC_COLUMNS)], rows)


def to_json(reports: dict[str, TaskReport], **info: Any) -> dict[str, Any]:
    """The JSON report: run info, per-task metrics and the mean R@1 / nDCG@10 over tasks."""
    tasks = {
        t: {"rows": r.rows, "queries": r.queries, "candidates": r.candidates, **r.metrics} for t, r in reports.items()
    }
    means = {}
    for metric in ("r@1", "ndcg@10"):
        values = [r.metrics[metric] for r in reports.values() if metric in r.metrics]
        if values:
            means[f"mean_{metric}"] = float(np.mean(values))
    return {**info, "tasks": tasks, **means}


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = eval_parser(
        "evaluate_jsonl.py",
        __doc__,
        "HF_HUB_OFFLINE=1 python eval/evaluate_jsonl.py --model ./ckpt --data eval.jsonl "
        "--output runs/jsonl",
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, help="eval JSONL file (training schema)")
    parser.add_argument("--output", help="folder for jsonl_eval.json and jsonl_eval.md (default: print only)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--positive-threshold", type=float, default=0.5, help="text_pair score for a retrieval match")
    parser.add_argument("--prefix-documents", action="store_true", help="prefix documents with the task token too")
    parser.add_argument(
        "--skip-bad-rows",
        "--skip-bad-lines",  # the old name, kept as an alias
        dest="skip_bad_rows",
        action="store_true",
        help="list the bad lines and evaluate the rest (the flag train_st.py uses; --skip-bad-lines is its old name)",
    )
    parser.add_argument(
        "--image-root", help="folder relative image paths are read from (default: the JSONL file's folder)"
    )
    parser.add_argument("--device", help="torch device")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 ok, 2 bad input or model load failure."""
    from eval.run_mteb import EvalError, load_model, resolve_model_source

    args = build_parser().parse_args(argv)
    try:
        if args.batch_size < 1:
            raise JsonlError("--batch-size must be >= 1")
        rows, bad = read_jsonl(args.data, args.skip_bad_rows, args.image_root)
        for number, reason in bad:
            print(f"skipped {args.data}:{number}: {reason}", file=sys.stderr)
        source = resolve_model_source(args.model)
        model = load_model(source, args.device)
    except (JsonlError, EvalError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    reports = evaluate_rows(
        model, rows, args.batch_size, args.positive_threshold, args.prefix_documents, progress=not args.no_progress
    )
    md = to_markdown(reports)
    data = to_json(
        reports,
        data=str(args.data),
        model=args.model,
        revision=source.revision,
        positive_threshold=args.positive_threshold,
        prefix_documents=args.prefix_documents,
        skipped_lines=[{"line": n, "reason": r} for n, r in bad],
    )
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "jsonl_eval.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "jsonl_eval.md").write_text(md + "\n", encoding="utf-8")
        print(f"wrote {out / 'jsonl_eval.json'} and {out / 'jsonl_eval.md'}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
