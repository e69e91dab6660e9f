"""Evaluate a viPyloQwen checkpoint (local folder or Hub id) on MTEB / VN-MTEB tasks with mteb 2.x.

The model is loaded exactly as users load it: ``SentenceTransformer(model, trust_remote_code=True)``. It is
handed to mteb with a ModelMeta that declares text + image modalities (so image tasks are routed to it), a
name with an org, a revision (the Hub commit, or a content hash of a local folder), the embedding width,
the parameter count, the license and a release date. Task prefixes come from the registry's
``MTEB_PROMPTS`` (configuration_vipyloqwen.py), keyed by mteb task type and query/document role.

Results are written in the layout of the public MTEB results repository::

    <output>/results/<org>__<name>/<revision>/<Task>.json + model_meta.json
    <output>/summary.json, <output>/summary.md     (main score per task, mean per task type, overall mean)

Offline (HF_HUB_OFFLINE=1) the tasks whose data is not in the local Hugging Face caches are named up
front and skipped; when none is left the script stops at once.

Examples::

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python eval/run_mteb.py --model ./ckpt \\
        --benchmark "VN-MTEB (vie, v1)" --task-types STS Retrieval --batch-size 16 --output runs/mteb
    python eval/run_mteb.py --model erax-ai/viPyloQwen --tasks XM3600T2IRetrieval WITI2TRetrieval \\
        --languages vie --output runs/mteb
    python eval/run_mteb.py --model ./ckpt --custom-tasks my_local_tasks.py --tasks MyLocalSTS
    python eval/run_mteb.py --model ./ckpt --benchmark "VN-MMEB (vie, v1)" --data-root tests/fixtures/vn_mmeb
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configuration_vipyloqwen import MTEB_PROMPTS, mteb_prompts, st_prompts
from eval.cli import eval_parser
from vipyloqwen_tools.release.results import (
    STAND_IN_MARK,
    STAND_IN_NOTE,
    STAND_IN_REVISION,
    SUMMARY_FILE,
    baseline_of,
    fmt,
    markdown_table,
    mean,
    overall_mean,
    type_means,
)

if TYPE_CHECKING:
    from mteb.abstasks import AbsTask
    from mteb.models import ModelMeta
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger("run_mteb")

DEFAULT_NAME = "erax-ai/viPyloQwen"
DEFAULT_BENCHMARK = "VN-MTEB (vie, v1)"
LICENSE = "apache-2.0"
BASE_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
MODEL_LANGUAGES = ["vie-Latn", "eng-Latn", "zho-Hans"]
# Files that do not change what the model computes; left out of a local folder's content hash.
HASH_EXCLUDE = {"README.md", ".gitattributes"}


class EvalError(RuntimeError):
    """A user-facing error: the CLI prints its message and exits with status 2."""


class UnknownTaskError(EvalError):
    """A task name that neither mteb nor the custom task files know."""


class ModelLoadError(EvalError):
    """The model could not be loaded with SentenceTransformer(trust_remote_code=True)."""


class MissingDataError(EvalError):
    """Offline, and no requested task has its data in the local caches."""


# ----------------------------------------------------------------------------------------------- model


@dataclass
class ModelSource:
    """Where the model comes from.

    Attributes:
        spec: what the user gave (folder or Hub id).
        path: the local folder the files are read from.
        hub_id: the Hub repo id, None for a local folder.
        revision: the Hub commit, or a content hash (sha256, 40 hex digits) of the local folder.
    """

    spec: str
    path: Path
    hub_id: str | None
    revision: str


def content_hash(folder: str | Path) -> str:
    """A revision for a local checkpoint folder: sha256 over (relative path, bytes) of every file, sorted,
    except model cards and hidden files; the first 40 hex digits (a Git commit's length)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.name in HASH_EXCLUDE or any(part.startswith(".") for part in Path(rel).parts):
            continue
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:40]


def check_model_argument(spec: str) -> None:
    """ModelLoadError in one line, naming ``spec`` and the fix, unless it is a checkpoint folder or a Hub id
    that can be had (offline: in the cache); cheap (nothing is hashed or downloaded)."""
    from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source

    try:
        check_model_source(spec, "--model")
    except ModelSourceError as err:
        raise ModelLoadError(str(err)) from None


def resolve_model_source(spec: str, revision: str | None = None) -> ModelSource:
    """A local folder (content-hashed) or a Hub id (downloaded, or taken from the cache offline).

    Raises ModelLoadError when it is neither an existing folder nor an available Hub repo.
    """
    check_model_argument(spec)
    path = Path(spec).expanduser()
    if path.exists():
        return ModelSource(spec=spec, path=path.resolve(), hub_id=None, revision=revision or content_hash(path))
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise ModelLoadError(f"model {spec!r} is not an existing folder nor a Hub id of the form org/name")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(spec, revision=revision)  # honours HF_HUB_OFFLINE (cache only)
    except Exception as err:  # noqa: BLE001 - many hub/network error types; all mean "cannot get it"
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = " (offline: it must already be in the Hugging Face cache)" if offline else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""  # one line: the cause, not its story
        raise ModelLoadError(f"could not get model {spec!r} from the Hub{hint}: {type(err).__name__}: {first}") from err
    return ModelSource(spec=spec, path=Path(local), hub_id=spec, revision=Path(local).name)


def load_model(source: ModelSource, device: str | None = None) -> SentenceTransformer:
    """``SentenceTransformer(folder, trust_remote_code=True)``, as users load it; errors become ModelLoadError."""
    from sentence_transformers import SentenceTransformer

    if not (source.path / "modules.json").is_file() and not (source.path / "config.json").is_file():
        raise ModelLoadError(
            f"could not load model {source.spec!r}: {source.path} has neither modules.json nor config.json "
            "(not a Sentence-Transformers / transformers checkpoint folder)"
        )
    try:
        return SentenceTransformer(str(source.path), trust_remote_code=True, device=device)
    except Exception as err:  # noqa: BLE001 - report any loading failure with its cause
        raise ModelLoadError(
            f"could not load model {source.spec!r} with SentenceTransformer(..., trust_remote_code=True): "
            f"{type(err).__name__}: {err}"
        ) from err


def release_date(source: ModelSource) -> str:
    """The date (UTC) the weights were last written: the newest *.safetensors / *.bin file, else any file."""
    files = list(source.path.glob("*.safetensors")) + list(source.path.glob("*.bin"))
    files = files or [p for p in source.path.iterdir() if p.is_file()]
    newest = max((p.stat().st_mtime for p in files), default=time.time())
    return dt.datetime.fromtimestamp(newest, tz=dt.timezone.utc).date().isoformat()


def folder_name(folder: str | Path) -> str:
    """The results name of a local checkpoint folder: ``<parent>/<folder>`` (``runs/mine/final`` -> ``mine/final``),
    the org/name shape mteb needs; never the official model's id, which a local folder's results must not take."""
    folder = Path(folder).resolve()

    def clean(part: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", part).strip("-.") or "local"

    return f"{clean(folder.parent.name)}/{clean(folder.name)}"


def build_model_meta(
    model: SentenceTransformer,
    source: ModelSource,
    name: str | None = None,
    date: str | None = None,
) -> ModelMeta:
    """The ModelMeta mteb stores in model_meta.json and uses to route tasks: the registry entry of
    ``eval/vipyloqwen_models.py`` (loader, text + image modalities, training datasets, license, ...) with this
    run's name, revision, release date and the loaded checkpoint's own sizes."""
    from eval.vipyloqwen_models import register, vipyloqwen

    name = name or source.hub_id or folder_name(source.path)
    if "/" not in name:
        raise EvalError(f"model name {name!r} must contain an org: 'org/name'")
    register()  # model_meta.json names the loader: mteb resolves it through its registry when reading back
    params = list(model.parameters())
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    embeddings = model[0].auto_model.get_input_embeddings().weight
    return vipyloqwen.model_copy(
        update={
            "name": name,
            "revision": source.revision,
            "release_date": date or release_date(source),
            "n_parameters": sum(p.numel() for p in params),
            "n_embedding_parameters": embeddings.numel(),
            "memory_usage_mb": round(sum(p.numel() * p.element_size() for p in params) / 2**20, 2),
            "max_tokens": getattr(model, "max_seq_length", None),
            "embed_dim": dim_fn(),
            "reference": f"https://huggingface.co/{source.hub_id}" if source.hub_id else vipyloqwen.reference,
        }
    )


def make_encoder(model: SentenceTransformer, meta: ModelMeta, prompts: dict[str, str] | None = None) -> Any:
    """mteb's SentenceTransformer wrapper with our ModelMeta and the registry's prompt mapping (the loader's
    wrapping, :func:`eval.vipyloqwen_models.wrap`)."""
    from eval.vipyloqwen_models import wrap

    return wrap(model, prompts or mteb_prompts(), meta)


def parse_prompt_overrides(items: Sequence[str], routed: dict[str, str] | None = None) -> dict[str, str]:
    """``KEY=TASK`` overrides of MTEB_PROMPTS (TASK: a registry task or role name) -> prompt texts.

    ``routed`` adds entries (mteb key -> registry task name) before the overrides, e.g. the it2t tasks of
    VN-MMEB routing their queries to ``vqa_single`` / ``ocr`` (``eval.vn_mmeb.query_prompt_tasks``).
    """
    prompts = st_prompts()
    names = {**MTEB_PROMPTS, **(routed or {})}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or value not in prompts:
            raise EvalError(f"--prompt {item!r}: expected KEY=TASK with TASK one of {', '.join(prompts)}")
        names[key] = value
    return {key: prompts[value] for key, value in names.items()}


# ----------------------------------------------------------------------------------------------- tasks


def load_custom_tasks(files: Iterable[str | Path]) -> list[AbsTask]:
    """Instances of every mteb task class defined in each Python file (tasks on local data)."""
    from mteb.abstasks import AbsTask

    tasks: list[AbsTask] = []
    for i, file in enumerate(files):
        path = Path(file)
        if not path.is_file():
            raise EvalError(f"--custom-tasks file {file} does not exist")
        spec = importlib.util.spec_from_file_location(f"_vipyloqwen_custom_tasks_{i}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        found = [
            obj()
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, AbsTask)
            and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)
            and hasattr(obj, "metadata")
        ]
        if not found:
            raise EvalError(f"--custom-tasks file {file} defines no mteb task class")
        tasks.extend(found)
    return tasks


def _unknown(kind: str, name: str, known: Iterable[str]) -> UnknownTaskError:
    known = sorted(set(known))
    lower = {k.lower(): k for k in known}
    close = [lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.5)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownTaskError(f"unknown {kind} {name!r}.{hint}")


def all_mteb_task_names() -> list[str]:
    """Names of every task mteb knows (including superseded and beta ones)."""
    try:  # the registry of task classes: no task is instantiated
        from mteb.get_tasks import _TASKS_REGISTRY

        return list(_TASKS_REGISTRY)
    except ImportError:
        import mteb

        return [t.metadata.name for t in mteb.get_tasks(exclude_superseded=False, exclude_beta=False)]


def resolve_tasks(
    benchmark: str | None = None,
    tasks: Sequence[str] | None = None,
    task_types: Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
    custom_tasks: Sequence[AbsTask] = (),
) -> list[AbsTask]:
    """The tasks to run.

    ``--tasks`` names (mteb or custom) are taken as given (within the benchmark when one is given too);
    without names, the benchmark's tasks. ``task_types`` then keeps tasks of those types and ``languages``
    keeps the subsets of multilingual tasks in those languages. Unknown names raise UnknownTaskError with
    close matches.
    """
    from typing import get_args

    import mteb
    from mteb.abstasks.task_metadata import TaskType

    if not benchmark and not tasks:
        raise EvalError("nothing to run: give --benchmark and/or --tasks")
    custom = {t.metadata.name: t for t in custom_tasks}
    selected: list[AbsTask] = []
    from eval import vn_mmeb  # registers the VN-MMEB tasks with mteb (names resolve like mteb's own)

    if benchmark:
        try:
            bench = vn_mmeb.get_benchmark(benchmark) if benchmark == vn_mmeb.BENCHMARK_NAME else None
            bench = bench or mteb.get_benchmark(benchmark)
        except (KeyError, ValueError) as err:
            names = [b.name for b in mteb.get_benchmarks()] + [vn_mmeb.BENCHMARK_NAME]
            raise _unknown("benchmark", benchmark, names) from err
        selected = list(bench.tasks)
    if tasks:
        if benchmark:
            by_name = {t.metadata.name: t for t in selected}
            for name in tasks:
                if name not in by_name and name not in custom:
                    raise _unknown(f"task in benchmark {benchmark!r}", name, [*by_name, *custom])
            selected = [by_name.get(n) or custom[n] for n in tasks]
        else:
            known = set(all_mteb_task_names())
            for name in tasks:
                if name not in known and name not in custom:
                    raise _unknown("task", name, [*known, *custom])
            hub_names = [n for n in tasks if n not in custom]
            hub_tasks = {t.metadata.name: t for t in mteb.get_tasks(tasks=hub_names)} if hub_names else {}
            selected = [custom[n] if n in custom else hub_tasks[n] for n in tasks]
    if task_types:
        valid_types = set(get_args(TaskType))
        for t in task_types:
            if t not in valid_types:
                raise _unknown("task type", t, valid_types)
        selected = [t for t in selected if t.metadata.type in task_types]
    if languages:
        selected = [t.filter_languages(languages) if t.metadata.is_multilingual else t for t in selected]
        selected = [t for t in selected if t.hf_subsets]
    if not selected:
        raise EvalError("the filters leave no task to run")
    return selected


def offline_mode() -> bool:
    """Whether the Hugging Face Hub is switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "0") in ("1", "ON", "YES", "TRUE")


def _dataset_cached(path: str, revision: str | None) -> bool:
    """Whether a Hub dataset is in the hub cache (a snapshot, of ``revision`` when it is a commit) or in
    the ``datasets`` cache (an ``<org>___<name>`` folder)."""
    import datasets.config
    from huggingface_hub import constants

    if Path(path).exists():
        return True
    repo_dir = Path(constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}"
    snapshots = repo_dir / "snapshots"
    if snapshots.is_dir():
        if revision and len(revision) == 40 and (snapshots / revision).is_dir():
            return True
        if not (revision and len(revision) == 40) and any(snapshots.iterdir()):
            return True
    ds_cache = Path(datasets.config.HF_DATASETS_CACHE)
    wanted = path.replace("/", "___").lower()
    return ds_cache.is_dir() and any(p.name.lower() == wanted for p in ds_cache.iterdir())


def missing_offline(tasks: Sequence[AbsTask], local_names: Iterable[str] = ()) -> list[str]:
    """Names of the tasks whose data is not in the local caches (tasks in ``local_names`` load their own)."""
    local = set(local_names)
    missing = []
    for task in tasks:
        name = task.metadata.name
        if name in local or task.data_loaded:
            continue
        subtasks = getattr(task.metadata, "tasks", None) or [task]  # aggregate tasks: check their parts
        for sub in subtasks:
            ds = sub.metadata.dataset or {}
            if not ds.get("path") or not _dataset_cached(ds["path"], ds.get("revision")):
                missing.append(name)
                break
    return missing


# ----------------------------------------------------------------------------------------------- run


@dataclass
class TaskOutcome:
    """One task's result row: main score (None on failure), type, seconds taken, error text, whether it ran on
    stand-in data (a local copy: dataset_revision "local")."""

    task: str
    type: str
    main_score: float | None
    seconds: float
    error: str | None = None
    stand_in: bool = False


def run(
    encoder: Any,
    tasks: Sequence[AbsTask],
    output: str | Path,
    batch_size: int = 16,
    overwrite: bool = False,
    show_progress: bool = True,
) -> list[TaskOutcome]:
    """Evaluate ``encoder`` on each task in turn (one progress line per task), saving to the result cache."""
    import mteb
    from mteb.cache import ResultCache

    cache = ResultCache(cache_path=str(output))
    outcomes: list[TaskOutcome] = []
    n = len(tasks)
    for i, task in enumerate(tasks, 1):
        name, ttype = task.metadata.name, str(task.metadata.type)
        stand_in = (task.metadata.dataset or {}).get("revision") == STAND_IN_REVISION
        print(f"[{i}/{n}] {name} ({ttype}) ...", flush=True)
        start = time.perf_counter()
        try:
            result = mteb.evaluate(
                encoder,
                task,
                encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress},
                cache=cache,
                overwrite_strategy="always" if overwrite else "only-missing",
                show_progress_bar=show_progress,
                raise_error=True,
                co2_tracker=False,
            )
            if result.exceptions:
                raise RuntimeError("; ".join(str(e.exception) for e in result.exceptions))
            task_result = result.task_results[0]
            scores = [s["main_score"] for split in task_result.scores.values() for s in split]
            score = mean(float(s) for s in scores)
            outcomes.append(TaskOutcome(name, ttype, score, time.perf_counter() - start, stand_in=stand_in))
            print(f"[{i}/{n}] {name}: main score {fmt(score)} ({time.perf_counter() - start:.1f} s)", flush=True)
        except Exception as err:  # noqa: BLE001 - one failing task must not lose the others
            logger.debug("task %s failed", name, exc_info=True)
            error = f"{type(err).__name__}: {err}"
            outcomes.append(TaskOutcome(name, ttype, None, time.perf_counter() - start, error, stand_in))
            print(f"[{i}/{n}] {name}: FAILED: {type(err).__name__}: {err}", flush=True)
    return outcomes


def summary_markdown(outcomes: Sequence[TaskOutcome], skipped: Sequence[str] = ()) -> str:
    """Main score per task, mean per task type and the overall mean (x100), as markdown tables; text-only
    baselines (VN-MMEB's ``<Task>TextOnly``) in a table of their own beside their task, out of the means (the one
    definition of :func:`vipyloqwen_tools.release.results.overall_mean`); stand-in scores marked."""
    baselines = [o for o in outcomes if baseline_of(o.task) is not None]
    outcomes = [o for o in outcomes if baseline_of(o.task) is None]
    done = [o for o in outcomes if o.main_score is not None]
    ordered = sorted(outcomes, key=lambda o: (o.type, o.task))
    rows = [[o.task, o.type, fmt(o.main_score) + (STAND_IN_MARK if o.stand_in else "")] for o in ordered]
    parts = [markdown_table(["Task", "Type", "Main score"], rows)]
    scores = {o.task: o.main_score for o in done}
    types = {o.task: o.type for o in done}
    by_type = type_means(scores, types)  # type: ignore[arg-type]
    counts = {t: sum(1 for o in done if o.type == t) for t in by_type}
    type_rows = [[t, str(counts[t]), fmt(v)] for t, v in by_type.items()]
    type_rows.append(["All (mean over tasks)", str(len(done)), fmt(overall_mean(scores))])  # type: ignore[arg-type]
    parts += ["", markdown_table(["Task type", "Tasks", "Mean"], type_rows)]
    if any(o.stand_in for o in [*outcomes, *baselines]):
        parts += ["", STAND_IN_NOTE]
    if baselines:
        full = {o.task: o.main_score for o in outcomes}
        base_rows = []
        for o in baselines:
            task = baseline_of(o.task)
            gain = None if o.main_score is None or full.get(task) is None else full[task] - o.main_score
            mark = STAND_IN_MARK if o.stand_in else ""
            base_rows.append([task, fmt(full.get(task)) + mark, fmt(o.main_score) + mark, fmt(gain)])
        header = ["Task", "Image + text", "Text only (images removed from the queries)", "Image adds"]
        parts += ["", markdown_table(header, base_rows)]
    failed = [o for o in [*outcomes, *baselines] if o.main_score is None]
    if failed:
        parts += ["", "Failed: " + "; ".join(f"{o.task} ({o.error})" for o in failed)]
    if skipped:
        parts += ["", "Skipped (data not in the local cache): " + ", ".join(skipped)]
    return "\n".join(parts)


def write_summary(
    output: Path,
    meta: ModelMeta,
    outcomes: Sequence[TaskOutcome],
    skipped: Sequence[str],
    prompts: dict[str, str],
) -> str:
    """Write summary.json and summary.md next to results/; returns the markdown."""
    output.mkdir(parents=True, exist_ok=True)
    text = summary_markdown(outcomes, skipped)
    data = {
        "model": meta.name,
        "revision": meta.revision,
        "results_folder": f"results/{meta.model_name_as_path()}/{meta.revision}",
        "prompts": prompts,
        "tasks": [o.__dict__ for o in outcomes],
        "skipped_missing_data": list(skipped),
        # The mean over the tasks, text-only baselines left out (they are listed with the task they belong to).
        "mean": overall_mean({o.task: o.main_score for o in outcomes if o.main_score is not None}),
        "text_only_baselines": {o.task: baseline_of(o.task) for o in outcomes if baseline_of(o.task)},
        "stand_in_tasks": [o.task for o in outcomes if o.stand_in],
    }
    (output / SUMMARY_FILE).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (output / "summary.md").write_text(text + "\n", encoding="utf-8")
    return text


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = eval_parser(
        "run_mteb.py",
        __doc__,
        "HF_HUB_OFFLINE=1 python eval/run_mteb.py --model ./ckpt --benchmark "
        '"VN-MTEB (vie, v1)" --task-types STS --output runs/mteb',
    )
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (org/name)")
    parser.add_argument("--revision", help="Hub revision to load (default: main); for a folder, overrides its hash")
    parser.add_argument(
        "--name",
        "--model-name",  # the old name, kept as an alias
        dest="name",
        help="the model's name in the results, org/name: its results go to results/<org>__<name>/ and a release "
        "card's table is headed by it (default: the Hub id; for a folder <parent>/<folder>, e.g. mine/final)",
    )
    parser.add_argument("--release-date", help="YYYY-MM-DD for model_meta.json (default: date of the weights file)")
    parser.add_argument("--benchmark", help=f'mteb benchmark name, e.g. "{DEFAULT_BENCHMARK}"')
    parser.add_argument("--tasks", nargs="+", help="task names (mteb or from --custom-tasks)")
    parser.add_argument("--task-types", nargs="+", help="keep only these task types, e.g. STS Retrieval")
    parser.add_argument("--languages", nargs="+", help="keep only these languages' subsets, e.g. vie")
    parser.add_argument("--custom-tasks", nargs="+", default=[], help="Python files defining mteb tasks on local data")
    parser.add_argument(
        "--data-root",
        help="folder of local dataset copies in their published layouts, <data-root>/<org>/<name>/ (e.g. "
        "tests/fixtures/vn_mmeb): tasks whose dataset is there read it instead of the Hub",
    )
    parser.add_argument("--prompt", action="append", default=[], help="override a mapping entry: KEY=TASK")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", help="torch device (default: sentence-transformers' choice)")
    parser.add_argument("--output", help="output folder (results/ + summary; default: a new temp folder)")
    parser.add_argument("--overwrite", action="store_true", help="re-run tasks that already have results")
    parser.add_argument("--no-progress", action="store_true", help="no per-batch progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 some task failed or was skipped, 2 usage/load error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.batch_size < 1:
            raise EvalError("--batch-size must be >= 1")
        check_model_argument(args.model)  # before the tasks load: a wrong path fails at once
        custom = load_custom_tasks(args.custom_tasks)
        tasks = resolve_tasks(args.benchmark, args.tasks, args.task_types, args.languages, custom)
        from eval import vn_mmeb

        prompts = parse_prompt_overrides(args.prompt, vn_mmeb.query_prompt_tasks(tasks))
        if args.data_root:
            try:
                local = vn_mmeb.localize(tasks, args.data_root)
            except FileNotFoundError as err:
                raise EvalError(str(err)) from err
            print(f"local data ({args.data_root}) for {len(local)} task(s): {', '.join(local) or 'none'}", flush=True)
        skipped: list[str] = []
        if offline_mode():
            skipped = missing_offline(tasks, local_names=[t.metadata.name for t in custom])
            if skipped:
                print(
                    f"offline: data not in the local cache for {len(skipped)} task(s), skipped: {', '.join(skipped)}",
                    file=sys.stderr,
                    flush=True,
                )
                tasks = [t for t in tasks if t.metadata.name not in skipped]
                if not tasks:
                    raise MissingDataError(
                        f"offline and no data for the requested task(s): {', '.join(skipped)}. Fill the Hugging Face "
                        "datasets cache online first (or unset HF_HUB_OFFLINE)."
                    )
        print(f"{len(tasks)} task(s): {', '.join(t.metadata.name for t in tasks)}", flush=True)
        source = resolve_model_source(args.model, args.revision)
        model = load_model(source, args.device)
        meta = build_model_meta(model, source, args.name, args.release_date)
        print(f"model {meta.name} revision {meta.revision} ({meta.n_parameters:,} parameters, dim {meta.embed_dim})")
        encoder = make_encoder(model, meta, prompts)
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="vipyloqwen-mteb-"))
    outcomes = run(encoder, tasks, output, args.batch_size, args.overwrite, show_progress=not args.no_progress)
    text = write_summary(output, meta, outcomes, skipped, prompts)
    print(f"\nresults: {output / 'results' / meta.model_name_as_path() / str(meta.revision)}\n")
    print(text)
    return 1 if skipped or any(o.main_score is None for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
