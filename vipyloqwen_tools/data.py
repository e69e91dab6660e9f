"""Training data: the JSONL schema, the validator and Arrow-backed per-task datasets.

Schema: one JSON object per line.

.. code-block:: text

    task      required  registry key or its prefix: text_pair | instr | ocr | vqa_multi | vqa_single
                        (or "<text_pair>", "<ocr>", ...)
    query     required  the anchor side: a string, or {"text": str, "images": [path, ...], "turns": [...]}
    positive  required  the document side: a string, or {"text": str, "images": [path, ...]}
    negative  optional  an explicit hard negative, same shape as positive
    score     number in [0, 1]; required for text_pair (graded similarity), optional elsewhere
    id        optional  any string, kept in reports

    "turns" (instr, vqa_multi): the earlier turns, [{"role": "user" | "assistant", "content": str}, ...],
    serialised before "text" as "user: ...\\nassistant: ...\\n" lines (a multi-turn instruction or the
    dialogue history of a multi-turn VQA). Images: 1-5 per side, paths relative to the JSONL file's
    folder (or absolute). ocr / vqa_single / vqa_multi need at least one query image; text_pair and
    instr take text only.

Example lines::

    {"task": "text_pair", "query": "con mèo đỏ", "positive": "the red cat", "score": 0.95}
    {"task": "<ocr>", "query": {"text": "Chữ trong ảnh là gì?", "images": ["img/ocr_001.png"]},
     "positive": "đỏ", "negative": "xanh"}

Reading scales: :func:`validate_file` streams the file line by line (constant memory); :func:`load_task_datasets`
writes the normalised rows to Arrow (``datasets``, memory-mapped on disk) and splits them into one dataset per
task, keyed by the registry name (``<task>+neg`` for the rows of a task that carry an explicit negative, so
every batch has one column layout). Images are stored as paths and opened only when a batch is built.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from configuration_vipyloqwen import MAX_IMAGES_PER_ITEM, TASKS, resolve_task

IMAGE_TASKS = frozenset(name for name, spec in TASKS.items() if "image" in spec.query)
TEXT_ONLY_TASKS = frozenset(TASKS) - IMAGE_TASKS
SIDES = ("query", "positive", "negative")
ROLES = ("user", "assistant", "system")


class DataError(ValueError):
    """A data file that cannot be used, with every bad line in the message."""


@dataclass
class BadLine:
    line: int
    reason: str
    raw: str


@dataclass
class ValidationReport:
    """Result of :func:`validate_file`: per-task counts of good rows and every bad line."""

    path: Path
    counts: Counter = field(default_factory=Counter)
    bad: list[BadLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + len(self.bad)

    def summary(self, max_bad: int | None = None) -> str:
        lines = [f"{self.path}: {self.total} lines, {sum(self.counts.values())} good, {len(self.bad)} bad"]
        for task in TASKS:
            lines.append(f"  {task:<11} {self.counts.get(task, 0)}")
        shown = self.bad if max_bad is None else self.bad[:max_bad]
        for bad in shown:
            lines.append(f"  line {bad.line}: {bad.reason}")
        if len(shown) < len(self.bad):
            lines.append(f"  ... {len(self.bad) - len(shown)} more bad lines")
        return "\n".join(lines)


def _side(value: Any, side: str, task: str, root: Path, check_images: bool) -> dict[str, Any]:
    """Normalise one side to {"text": str | None, "images": [abs path]}; raises ValueError with the reason."""
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise ValueError(f"{side}: expected a string or an object, got {type(value).__name__}")
    unknown = set(value) - {"text", "images", "turns"}
    if unknown:
        raise ValueError(f"{side}: unknown field(s) {sorted(unknown)}; valid: text, images, turns")
    text = value.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{side}.text: expected a string, got {type(text).__name__}")
    turns = value.get("turns")
    if turns is not None:
        if side != "query":
            raise ValueError(f"{side}.turns: only the query side has turns")
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{side}.turns: expected a non-empty list of {{role, content}} objects")
        rendered = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                raise ValueError(f'{side}.turns[{index}]: expected {{"role": user|assistant|system, "content": str}}')
            if not turn["content"].strip():
                raise ValueError(f"{side}.turns[{index}]: empty content")
            rendered.append(f"{turn['role']}: {turn['content']}")
        text = "\n".join(rendered + ([f"user: {text}"] if text and text.strip() else []))
    images = value.get("images", [])
    if images is None:
        images = []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{side}.images: expected a list of image paths")
    if len(images) > MAX_IMAGES_PER_ITEM:
        raise ValueError(f"{side}: too many images ({len(images)}), at most {MAX_IMAGES_PER_ITEM}")
    if images and task in TEXT_ONLY_TASKS:
        raise ValueError(f"{side}: task {task} takes text only, got {len(images)} image(s)")
    if side == "query" and task in IMAGE_TASKS and not images:
        raise ValueError(f"query: task {task} needs 1-{MAX_IMAGES_PER_ITEM} images")
    resolved = []
    for image in images:
        path = Path(image) if os.path.isabs(image) else root / image
        if check_images:
            if not path.is_file():
                raise ValueError(f"{side}: missing image {image!r}")
            try:
                with Image.open(path) as opened:
                    opened.verify()
            except Exception as error:  # noqa: BLE001 - PIL raises many types for a bad file
                raise ValueError(f"{side}: unreadable image {image!r}: {error}") from None
        resolved.append(str(path.resolve()))
    if (text is None or not text.strip()) and not resolved:
        raise ValueError(f"{side}: empty text and no image")
    return {"text": text if text is not None and text.strip() else None, "images": resolved}


def parse_line(raw: str, root: Path, check_images: bool = True) -> dict[str, Any]:
    """Validate and normalise one JSONL line; raises ValueError with the reason.

    Returns ``{"task", "query", "positive", "negative" (or None), "score" (or None), "id" (or None)}`` with
    sides normalised to ``{"text", "images"}`` (absolute image paths).
    """
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "task" not in row:
        raise ValueError("missing field 'task'")
    if not isinstance(row["task"], str):
        raise ValueError("'task' must be a string")
    try:
        task = resolve_task(row["task"])
    except ValueError:
        task = None
    if task is None:
        raise ValueError(f"unknown task {row['task']!r}; valid: {', '.join(TASKS)} (or their <prefix> forms)")
    unknown = set(row) - {"task", "query", "positive", "negative", "score", "id"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    for side in ("query", "positive"):
        if row.get(side) is None:
            raise ValueError(f"missing field {side!r}")
    score = row.get("score")
    if score is None and task == "text_pair":
        raise ValueError("missing field 'score' (required for text_pair)")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"score must be a number in [0, 1], got {score!r}")
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"score {score} outside [0, 1]")
    return {
        "task": task,
        "query": _side(row["query"], "query", task, root, check_images),
        "positive": _side(row["positive"], "positive", task, root, check_images),
        "negative": _side(row["negative"], "negative", task, root, check_images)
        if row.get("negative") is not None
        else None,
        "score": float(score) if score is not None else None,
        "id": str(row["id"]) if row.get("id") is not None else None,
    }


def iter_file(path: str | os.PathLike, check_images: bool = True) -> Iterator[tuple[int, str, dict | None, str | None]]:
    """Yield ``(line_number, raw, row, error)`` for every non-blank line; exactly one of row/error is set."""
    path = Path(path)
    root = path.resolve().parent
    with path.open("r", encoding="utf-8", errors="strict") as handle:
        number = 0
        while True:
            try:
                raw = handle.readline()
            except UnicodeDecodeError as error:
                number += 1
                yield number, "", None, f"not UTF-8: {error.reason}"
                return
            if not raw:
                return
            number += 1
            if not raw.strip():
                continue
            try:
                yield number, raw.rstrip("\n"), parse_line(raw, root, check_images), None
            except ValueError as error:
                yield number, raw.rstrip("\n"), None, str(error)


def validate_file(path: str | os.PathLike, check_images: bool = True) -> ValidationReport:
    """Check every line of a JSONL file; returns per-task counts and every bad line (number + reason).

    Example::

        >>> report = validate_file("data/sample/train.jsonl")
        >>> print(report.summary())
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    report = ValidationReport(path)
    for number, raw, row, error in iter_file(path, check_images):
        if error is not None:
            report.bad.append(BadLine(number, error, raw))
        else:
            report.counts[row["task"]] += 1
    return report


def write_rejects(report: ValidationReport, out: str | os.PathLike) -> Path:
    """Write the bad lines of a report as JSONL ({"line", "reason", "raw"}) to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for bad in report.bad:
            handle.write(
                json.dumps(
                    {"file": str(report.path), "line": bad.line, "reason": bad.reason, "raw": bad.raw},
                    ensure_ascii=False,
                )
                + "\n"
            )
    return out


# ---------------------------------------------------------------------------------------- Arrow datasets
def _features():
    from datasets import Features, List, Value

    side = {"text": Value("string"), "images": List(Value("string"))}
    return Features(
        {
            "task": Value("string"),
            "anchor": side,
            "positive": side,
            "negative": side,
            "has_negative": Value("bool"),
            "score": Value("float32"),
        }
    )


def _generate(path: str, skip_lines: str, stamp: str) -> Iterator[dict[str, Any]]:
    # skip_lines is a comma-joined string: datasets would treat a list in gen_kwargs as shards.
    del stamp  # only part of the cache fingerprint: a changed file gets a new Arrow cache
    empty = {"text": None, "images": []}
    skip = {int(n) for n in skip_lines.split(",") if n}
    for number, _, row, error in iter_file(path, check_images=False):
        if error is not None or number in skip:
            continue  # reported (or refused) by the validation pass
        yield {
            "task": row["task"],
            "anchor": row["query"],
            "positive": row["positive"],
            "negative": row["negative"] or empty,
            "has_negative": row["negative"] is not None,
            "score": row["score"] if row["score"] is not None else float("nan"),
        }


def to_st_input(side: dict[str, Any] | None) -> str | dict[str, Any]:
    """One stored side -> a Sentence-Transformers input; images are opened here (batch time), lazily."""
    text = side.get("text")
    images = side.get("images") or []
    if not images:
        return text
    opened = []
    for path in images:
        try:
            image = Image.open(path)
            image.load()
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read image {path!r}: {error}") from None
        opened.append(image)
    item: dict[str, Any] = {}
    if text:
        item["text"] = text
    item["image"] = opened
    return item


def st_transform(batch: dict[str, list]) -> dict[str, list]:
    """Dataset transform: stored sides -> ST inputs (text, or {"text", "image": [PIL]}); scores pass through."""
    out: dict[str, list] = {}
    for column, values in batch.items():
        if column in ("anchor", "positive", "negative"):
            out[column] = [to_st_input(value) for value in values]
        else:
            out[column] = values
    return out


def load_task_datasets(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, report: ValidationReport | None = None
):
    """Arrow-backed per-task datasets from a (validated) JSONL file: a ``DatasetDict`` keyed by registry task.

    Each dataset has the columns ``anchor, positive[, negative][, score]`` (``score`` only for text_pair), stored
    as ``{"text", "images"}`` structs and turned into ST inputs by a transform at batch time. Rows of a task that
    carry an explicit negative form the dataset ``<task>+neg``. ``report`` is the file's :func:`validate_file`
    result: its bad lines are skipped (training refuses them, or writes them to a rejects file first). Without a
    report the file is validated here and any bad line is a :class:`DataError`.

    Example::

        >>> datasets = load_task_datasets("data/sample/train.jsonl")
        >>> sorted(datasets)
        ['instr', 'ocr', 'text_pair', 'vqa_multi', 'vqa_single']
    """
    from datasets import Dataset, DatasetDict

    path = Path(path).resolve()
    if report is None:
        report = validate_file(path)
        if report.bad:
            raise DataError(f"{path} has bad lines:\n{report.summary(max_bad=50)}")
    stat = path.stat()
    full = Dataset.from_generator(
        _generate,
        gen_kwargs={
            "path": str(path),
            "skip_lines": ",".join(str(bad.line) for bad in report.bad),
            "stamp": f"{stat.st_size}-{stat.st_mtime_ns}",
        },
        features=_features(),
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    tasks = full["task"]
    negatives = full["has_negative"]
    groups: dict[str, list[int]] = {}
    for index, (task, has_negative) in enumerate(zip(tasks, negatives, strict=False)):
        groups.setdefault(f"{task}+neg" if has_negative else task, []).append(index)
    order = {name: i for i, name in enumerate(TASKS)}
    out = DatasetDict()
    for name in sorted(groups, key=lambda n: (order[n.split("+")[0]], n)):
        task = name.split("+")[0]
        columns = ["anchor", "positive"] + (["negative"] if name.endswith("+neg") else [])
        if task == "text_pair":
            columns.append("score")
        subset = full.select(groups[name]).select_columns(columns)
        subset.set_transform(st_transform)
        out[name] = subset
    return out


def load_eval_rows(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The rows of an eval JSONL file grouped by task (normalised; raises DataError listing bad lines)."""
    report = validate_file(path)
    if report.bad:
        raise DataError(f"eval file has bad lines:\n{report.summary()}")
    rows: dict[str, list[dict[str, Any]]] = {}
    for _, _, row, _ in iter_file(path, check_images=False):
        rows.setdefault(row["task"], []).append(row)
    return rows


__all__ = [
    "BadLine",
    "DataError",
    "ValidationReport",
    "iter_file",
    "load_eval_rows",
    "load_task_datasets",
    "parse_line",
    "st_transform",
    "to_st_input",
    "validate_file",
    "write_rejects",
]
