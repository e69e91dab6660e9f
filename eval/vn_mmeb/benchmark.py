"""The VN-MMEB benchmark: the VN-MMEB tasks plus mteb's own Vietnamese text->image tasks, the prompt routing of
their queries, and the dataset table of the docs.

Example::

    from eval.vn_mmeb import get_benchmark
    bench = get_benchmark("VN-MMEB (vie, v1)")
    print([t.metadata.name for t in bench.tasks])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import VNMMEBTask
from .ktvic import KTVICI2TRetrieval, KTVICT2IRetrieval
from .mtvqa import MTVQAViIT2TRetrieval, MTVQAViT2IRetrieval
from .openvivqa import OpenViVQAIT2TRetrieval, OpenViVQAT2IRetrieval
from .viinfographicvqa import ViInfographicVQAMultiT2IRetrieval, ViInfographicVQAT2IRetrieval
from .vitextvqa import ViTextVQAIT2TRetrieval, ViTextVQAT2IRetrieval
from .xm3600 import VnXM3600I2TRetrieval

BENCHMARK_NAME = "VN-MMEB (vie, v1)"

#: The VN-MMEB task classes, in benchmark order.
TASK_CLASSES: tuple[type[VNMMEBTask], ...] = (
    VnXM3600I2TRetrieval,
    KTVICT2IRetrieval,
    KTVICI2TRetrieval,
    OpenViVQAIT2TRetrieval,
    OpenViVQAT2IRetrieval,
    ViTextVQAT2IRetrieval,
    ViTextVQAIT2TRetrieval,
    ViInfographicVQAT2IRetrieval,
    ViInfographicVQAMultiT2IRetrieval,
    MTVQAViT2IRetrieval,
    MTVQAViIT2TRetrieval,
)

#: mteb's own tasks in the benchmark: (task name, hf subset). mteb 2.26 names them XM3600T2IRetrieval and
#: WITT2IRetrieval; their Vietnamese subset is "vi" in both.
MTEB_TASKS: tuple[tuple[str, str], ...] = (("XM3600T2IRetrieval", "vi"), ("WITT2IRetrieval", "vi"))

#: Sizes as published on the dataset cards / papers (for the docs table; the stand-ins are tiny copies).
PUBLISHED_SIZES: dict[str, str] = {
    "floschne/xm3600": "3,600 images per language split (36 languages)",
    "KTVIC": "4,327 images / 21,635 captions in all splits",
    "uitnlp/OpenViVQA-dataset": "11,000+ images, 37,000+ QA pairs in all splits",
    "nhonhoccode/ViTextVQA": "16,762 images, 50,342 QA pairs in all splits",
    "duytranus/ViInfographicVQA": "6,747 infographics, 20,409 QA pairs (single + multi)",
    "ByteDance/MTVQA": "2,116 test images over 9 languages (vi rows used)",
    "mteb/xm3600": "3,600 images per language (vi subset used)",
    "mteb/wit": "WIT test set (vi subset used)",
}

NON_COMMERCIAL = {"cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "cc-by-nc-3.0", "cc-by-nc-sa-3.0", "msr-la-nc"}
#: Datasets whose cards restrict use beyond what the mteb licence field can say.
USE_NOTES = {"nhonhoccode/ViTextVQA": "research use only", "KTVIC": "licence not stated by the release"}


def _mteb_task(name: str, subset: str) -> Any:
    import mteb

    return mteb.get_task(name, hf_subsets=[subset])


def get_tasks(names: Sequence[str] | None = None) -> list[Any]:
    """Fresh instances of the benchmark's tasks (all, or those named), in benchmark order."""
    tasks: list[Any] = [cls() for cls in TASK_CLASSES]
    tasks += [_mteb_task(n, s) for n, s in MTEB_TASKS]
    if names is not None:
        by_name = {t.metadata.name: t for t in tasks}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"not in {BENCHMARK_NAME}: {', '.join(missing)}; tasks: {', '.join(by_name)}")
        tasks = [by_name[n] for n in names]
    return tasks


def get_benchmark(name: str = BENCHMARK_NAME) -> Any:
    """The ``mteb.Benchmark`` "VN-MMEB (vie, v1)" (fresh task instances on each call)."""
    import mteb

    if name != BENCHMARK_NAME:
        raise KeyError(f"unknown benchmark {name!r}; this module defines {BENCHMARK_NAME!r}")
    return mteb.Benchmark(
        name=BENCHMARK_NAME,
        tasks=get_tasks(),
        description=(
            "VN-MMEB: a Vietnamese multimodal embedding benchmark. Caption <-> image (XM3600, KTVIC, WIT), question "
            "-> image (OpenViVQA, ViTextVQA, MTVQA), image + question -> answer with per-query candidate lists "
            "(OpenViVQA, ViTextVQA, MTVQA) and question -> infographic page(s) in single- and multi-image settings "
            "(ViInfographicVQA, nDCG@5)."
        ),
        reference=None,
        citation=None,
    )


def query_prompt_tasks(tasks: Sequence[Any]) -> dict[str, str]:
    """mteb prompt keys ``<Task>-query`` -> the registry task whose prefix those queries carry (it2t tasks).

    Values are registry task names (configuration_vipyloqwen.TASKS), resolved to prefix tokens by the caller
    through ``st_prompts()``: no prefix is typed here.
    """
    return {f"{t.metadata.name}-query": t.query_task for t in tasks if getattr(t, "query_task", None)}


def register() -> None:
    """Make mteb's task registry know the VN-MMEB tasks, so ``mteb.get_task(name)`` works and prompt keys named
    after them pass mteb's prompt validation (it drops keys of unknown tasks)."""
    from mteb.get_tasks import _TASKS_REGISTRY as registry

    for cls in TASK_CLASSES:
        registry.setdefault(cls.metadata.name, cls)


def localize(tasks: Sequence[Any], data_root: str | Path) -> list[str]:
    """Point every task whose dataset has a local copy at ``<data_root>/<dataset path>`` (e.g. the stand-ins in
    tests/fixtures/vn_mmeb, or a download made elsewhere). Returns the names of the tasks switched to local data.

    mteb's own tasks read the copy through ``datasets.load_dataset(<folder>)``, ours through their adapters; the
    folder must hold the dataset's published layout. The revision becomes ``local``.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} is not a folder")
    switched = []
    for task in tasks:
        path = task.metadata.dataset["path"]
        local = root / path
        if local.is_dir():
            dataset = {**task.metadata.dataset, "path": str(local.resolve()), "revision": "local"}
            task.metadata = task.metadata.model_copy(update={"dataset": dataset})
            switched.append(task.metadata.name)
    return switched


def dataset_table() -> str:
    """The markdown table of the benchmark's datasets: source, licence, size, tasks."""
    rows: dict[str, dict[str, Any]] = {}
    for task in get_tasks():
        meta = task.metadata
        path = meta.dataset["path"]
        row = rows.setdefault(path, {"license": meta.license, "tasks": [], "source": meta.reference})
        row["tasks"].append(f"`{meta.name}` ({meta.category}, {meta.main_score.replace('_at_', '@')})")
    lines = ["| dataset (source) | licence | size (published) | tasks |", "| --- | --- | --- | --- |"]
    for path, row in rows.items():
        lic = str(row["license"])
        if lic in NON_COMMERCIAL:
            lic += " (**non-commercial**)"
        if path in USE_NOTES:
            lic += f" ({USE_NOTES[path]})"
        where = f"`{path}`" if "/" in path else f"{path} ({row['source']})"
        lines.append(f"| {where} | {lic} | {PUBLISHED_SIZES.get(path, '')} | {'; '.join(row['tasks'])} |")
    return "\n".join(lines)
