"""Reading MTEB result folders and turning them into tables.

Shared by ``run_mteb.py`` (summary after a run), ``compare.py`` (side by side with baselines) and
``make_readme_table.py`` (README section). A result folder is in the layout of the public MTEB results
repository::

    <root>/results/<org>__<name>/<revision>/<Task>.json   (+ model_meta.json)

Any of ``<root>``, ``<root>/results``, ``<root>/results/<org>__<name>`` or the revision folder itself may be
given; when a model folder holds several revisions, the most recently modified one is used unless a
revision is asked for.

One definition of the means, used by ``run_mteb.py``'s summary, ``compare.py`` and the release card alike
(:func:`headline_scores`, :func:`overall_mean`): the mean over the tasks, text-only baselines (``<Task>TextOnly``:
the same task with the images removed from its queries) left out; they are shown beside their task instead. Scores
of stand-in data (a task run on a local copy: ``dataset_revision`` ``"local"``, e.g. the test fixtures) are marked
in every table (:data:`STAND_IN_NOTE`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

UNKNOWN_TYPE = "Unknown"
# A task named <Task>TextOnly is the text-only baseline of <Task> (eval/vn_mmeb/base.py names them so).
TEXT_ONLY_SUFFIX = "TextOnly"
# dataset_revision of a task run on a local copy of its data (eval/vn_mmeb's localize, run_mteb --data-root).
STAND_IN_REVISION = "local"
STAND_IN_MARK = "*"
STAND_IN_NOTE = (
    f'{STAND_IN_MARK} stand-in data: run on a local copy of the dataset (dataset_revision "{STAND_IN_REVISION}"), '
    "e.g. the test fixtures, not the published dataset; not comparable with published scores."
)
# Name of the run summary run_mteb.py writes next to results/ (not inside it: the results layout stays
# exactly the MTEB one). It carries the task type of tasks mteb's registry does not know (local tasks).
SUMMARY_FILE = "summary.json"


@dataclass
class ModelScores:
    """Main scores of one model revision, as read from its result folder.

    Attributes:
        name: model name ("org/name"), from model_meta.json or the folder name.
        revision: the revision folder's name.
        folder: the revision folder.
        scores: task name -> main score (mean over the task's splits and subsets, as mteb aggregates).
        task_types: task name -> mteb task type, where known.
        stand_in: tasks scored on stand-in data (``dataset_revision`` ``"local"``).
    """

    name: str
    revision: str
    folder: Path
    scores: dict[str, float] = field(default_factory=dict)
    task_types: dict[str, str] = field(default_factory=dict)
    stand_in: set[str] = field(default_factory=set)


def baseline_of(task: str) -> str | None:
    """The task a text-only baseline belongs to (``XTextOnly`` -> ``X``), or None for a task of its own."""
    if task.endswith(TEXT_ONLY_SUFFIX) and len(task) > len(TEXT_ONLY_SUFFIX):
        return task[: -len(TEXT_ONLY_SUFFIX)]
    return None


def headline_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """The scores the means are taken over: every task but the text-only baselines."""
    return {task: score for task, score in scores.items() if baseline_of(task) is None}


def overall_mean(scores: Mapping[str, float]) -> float | None:
    """The overall mean: over :func:`headline_scores` (the one definition: summary, compare and card)."""
    return mean(headline_scores(scores).values())


def main_score(result: Mapping) -> float | None:
    """The main score of one mteb task-result JSON object: the mean of ``main_score`` over all splits and
    subsets (what ``TaskResult.get_score()`` returns). ``None`` when it holds no scores."""
    values = [
        float(entry["main_score"])
        for entries in (result.get("scores") or {}).values()
        for entry in entries
        if entry.get("main_score") is not None
    ]
    return sum(values) / len(values) if values else None


@lru_cache(maxsize=4096)
def mteb_task_type(task_name: str) -> str | None:
    """The task type mteb's registry gives ``task_name`` ("Retrieval", "STS", ...), or None if unknown."""
    try:
        from mteb.get_tasks import _TASKS_REGISTRY  # task classes: no instantiation

        return str(_TASKS_REGISTRY[task_name].metadata.type)
    except Exception:  # noqa: BLE001 - any lookup failure means "not an mteb task"
        return None


def _revision_folders(path: Path) -> list[Path]:
    """All revision folders (folders holding task JSON files) at or under ``path``."""
    if (path / "results").is_dir():
        path = path / "results"
    elif (path / "model_meta.json").is_file() or any(
        p.name not in ("model_meta.json", SUMMARY_FILE) for p in path.glob("*.json")
    ):
        return [path]
    base = path
    found = [p.parent for p in base.glob("*/*.json")] + [p.parent for p in base.glob("*/*/*.json")]
    return sorted(set(found))


def find_revision_folders(path: str | Path) -> list[Path]:
    """Revision folders under ``path``: one per model, the newest revision when a model has several.

    Raises FileNotFoundError when there is none.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"result folder {path} does not exist")
    folders = _revision_folders(path)
    if not folders:
        raise FileNotFoundError(f"no MTEB result files (<org>__<name>/<revision>/<Task>.json) under {path}")
    newest: dict[Path, Path] = {}
    for folder in folders:
        model_dir = folder.parent
        if model_dir not in newest or folder.stat().st_mtime > newest[model_dir].stat().st_mtime:
            newest[model_dir] = folder
    return sorted(newest.values())


def _summary_task_types(folder: Path) -> dict[str, str]:
    """Task types recorded by run_mteb.py in a summary.json above the results/ folder, if any."""
    for parent in folder.parents:
        summary = parent / SUMMARY_FILE
        if summary.is_file():
            try:
                data = json.loads(summary.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                return {}
            return {row["task"]: row["type"] for row in data.get("tasks", []) if "task" in row and "type" in row}
    return {}


def load_revision_folder(folder: str | Path, task_types: Mapping[str, str] | None = None) -> ModelScores:
    """Read every ``<Task>.json`` of one revision folder.

    Args:
        folder: a ``<org>__<name>/<revision>`` folder.
        task_types: extra task name -> type entries (for tasks mteb does not know).
    """
    folder = Path(folder)
    meta_path = folder / "model_meta.json"
    name = folder.parent.name.replace("__", "/", 1)
    if meta_path.is_file():
        try:
            name = json.loads(meta_path.read_text(encoding="utf-8")).get("name") or name
        except json.JSONDecodeError:
            pass
    known_types = {**_summary_task_types(folder), **(task_types or {})}
    out = ModelScores(name=name, revision=folder.name, folder=folder)
    for path in sorted(folder.glob("*.json")):
        if path.name == "model_meta.json":
            continue
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        task = result.get("task_name") or path.stem
        score = main_score(result)
        if score is None:
            continue
        out.scores[task] = score
        if result.get("dataset_revision") == STAND_IN_REVISION:
            out.stand_in.add(task)
        out.task_types[task] = known_types.get(task) or mteb_task_type(task) or UNKNOWN_TYPE
    return out


def load_models(paths: Iterable[str | Path], task_types: Mapping[str, str] | None = None) -> list[ModelScores]:
    """Every model (newest revision) found under each of ``paths``, in the order given."""
    models: list[ModelScores] = []
    for path in paths:
        models.extend(load_revision_folder(folder, task_types) for folder in find_revision_folders(path))
    return models


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean, None for no values."""
    values = list(values)
    return sum(values) / len(values) if values else None


def type_means(scores: Mapping[str, float], task_types: Mapping[str, str]) -> dict[str, float]:
    """Mean main score per task type (types in sorted order)."""
    by_type: dict[str, list[float]] = {}
    for task, score in scores.items():
        by_type.setdefault(task_types.get(task, UNKNOWN_TYPE), []).append(score)
    return {t: sum(v) / len(v) for t, v in sorted(by_type.items())}


def fmt(value: float | None, scale: float = 100.0, digits: int = 2) -> str:
    """A score for a table: scaled (percent by default) or "-" when missing."""
    return "-" if value is None else f"{value * scale:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_tables(models: list[ModelScores], scale: float = 100.0) -> str:
    """Markdown: a per-task table (tasks grouped by type), a per-type table and the overall means.

    Means per type and overall are taken over the tasks every model has a score for, so a model is not
    favoured by having run fewer (or easier) tasks; the table says how many tasks that is. Text-only baselines
    are not tasks of these tables (:func:`headline_scores`); stand-in scores are marked (:data:`STAND_IN_NOTE`).
    """
    if not models:
        raise ValueError("no models to compare")
    models = [
        ModelScores(
            m.name,
            m.revision,
            m.folder,
            headline_scores(m.scores),
            {t: v for t, v in m.task_types.items() if baseline_of(t) is None},
            set(m.stand_in),
        )
        for m in models
    ]
    labels = [f"{m.name}@{m.revision[:8]}" if len({x.name for x in models}) < len(models) else m.name for m in models]
    types: dict[str, str] = {}
    for m in models:
        for task, t in m.task_types.items():
            if types.get(task, UNKNOWN_TYPE) == UNKNOWN_TYPE:
                types[task] = t
    all_tasks = sorted(types, key=lambda task: (types[task], task))
    task_rows = [[task, types[task], *(_cell(m, task, scale) for m in models)] for task in all_tasks]
    common = [task for task in all_tasks if all(task in m.scores for m in models)]
    type_rows = []
    for t in sorted({types[task] for task in common}):
        tasks_t = [task for task in common if types[task] == t]
        type_rows.append([t, str(len(tasks_t)), *(fmt(mean(m.scores[x] for x in tasks_t), scale) for m in models)])
    overall = [
        "All (mean over tasks)",
        str(len(common)),
        *(fmt(overall_mean({x: m.scores[x] for x in common}), scale) for m in models),
    ]
    parts = [
        "Per task (main score):\n",
        markdown_table(["Task", "Type", *labels], task_rows),
        f"\nPer task type (mean over the {len(common)} tasks every model has):\n",
        markdown_table(["Task type", "Tasks", *labels], [*type_rows, overall]),
    ]
    if any(m.stand_in & set(m.scores) for m in models):
        parts.append("\n" + STAND_IN_NOTE)
    return "\n".join(parts)


def _cell(model: ModelScores, task: str, scale: float) -> str:
    text = fmt(model.scores.get(task), scale)
    return f"{text}{STAND_IN_MARK}" if task in model.stand_in and task in model.scores else text
