"""The VN-MMEB benchmark: the VN-MMEB tasks, their text-only baselines and mteb's own Vietnamese caption <-> image
tasks; the prompt routing of their queries; local copies (``localize``); the dataset table of the docs.

Example::

    from eval.vn_mmeb import get_benchmark
    bench = get_benchmark("VN-MMEB (vie, v1)")
    print([t.metadata.name for t in bench.tasks])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import COMMIT, NOT_ON_HUB, VNMMEBTask
from .ktvic import KTVICI2TRetrieval, KTVICT2IRetrieval
from .mtvqa import MTVQAViIT2TRetrieval, MTVQAViIT2TRetrievalTextOnly, MTVQAViT2IRetrieval
from .openvivqa import OpenViVQAIT2TRetrieval, OpenViVQAIT2TRetrievalTextOnly, OpenViVQAT2IRetrieval
from .viinfographicvqa import ViInfographicVQAMultiT2IRetrieval, ViInfographicVQAT2IRetrieval
from .vitextvqa import ViTextVQAIT2TRetrieval, ViTextVQAIT2TRetrievalTextOnly, ViTextVQAT2IRetrieval

logger = logging.getLogger(__name__)

BENCHMARK_NAME = "VN-MMEB (vie, v1)"

#: The text-only baselines: the it2t tasks with the images removed from the queries. The other tasks need none:
#: t2i queries are text already, i2t queries are an image and nothing else.
TEXT_ONLY_CLASSES: tuple[type[VNMMEBTask], ...] = (
    OpenViVQAIT2TRetrievalTextOnly,
    ViTextVQAIT2TRetrievalTextOnly,
    MTVQAViIT2TRetrievalTextOnly,
)

#: The VN-MMEB task classes, in benchmark order (the text-only baselines last).
TASK_CLASSES: tuple[type[VNMMEBTask], ...] = (
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
    *TEXT_ONLY_CLASSES,
)

#: Text-only baseline task name -> the task it is the baseline of.
TEXT_ONLY_BASELINES: dict[str, str] = {c.metadata.name: c.metadata.adapted_from[0] for c in TEXT_ONLY_CLASSES}

#: mteb 2.26's own tasks in the benchmark: (task name, hf subset), Vietnamese subset "vi" of each, at the
#: revisions mteb pins (mteb/xm3600 536cd45b..., mteb/wit 91ac153f...).
MTEB_TASKS: tuple[tuple[str, str], ...] = (
    ("XM3600T2IRetrieval", "vi"),
    ("XM3600I2TRetrieval", "vi"),
    ("WITT2IRetrieval", "vi"),
    ("WITI2TRetrieval", "vi"),
)

#: mteb 2.26 tasks with Vietnamese image data considered and left out of v1, and why (read from mteb's source).
MTEB_LEFT_OUT: dict[str, str] = {
    "MVLSIBSent2Img": "beta in mteb 2.26 (left out of mteb.get_tasks by default); it picks the topic image among 4 "
    "candidates for a SIB-200 sentence (accuracy, k=1..4): topic matching, not retrieval of a described image",
    "JinaVDRGitHubReadmeRetrieval": "its loader reads every language of metadata.eval_langs whatever hf_subsets "
    "says, so the vi subset costs the download of all 17 languages; run it on its own with --tasks",
    "JinaVDRWikimediaCommonsDocumentsRetrieval": "same loader: the vi subset downloads all 20 languages; run it "
    "on its own with --tasks",
}

#: Published facts per dataset for the table: size, licence, status, each with its source.
DATASET_FACTS: dict[str, dict[str, str]] = {
    "KTVIC": {
        "size": "4,327 images / 21,635 captions in all splits (paper); test split size not verified",
        "licence": "not stated by any source read",
        "status": "**release not verified**: no download location of the authors found; layout from third-party "
        "loaders",
    },
    "uitnlp/OpenViVQA-dataset": {
        "size": "11,000+ images, 37,000+ QA pairs in all splits (card); dev file 762 kB, dev-images.zip 165 MB (Hub "
        "listing)",
        "licence": "card",
        "status": "layout from the Hub listing and third-party loaders",
    },
    "minhquan6203/ViTextVQA": {
        "size": "16,762 images, 50,342 QA pairs (card); test 10,028 questions / 3,353 images (third-party count)",
        "licence": "CC BY-NC 3.0 recorded by a third party; the card states none; paper: 'for research purposes'",
        "status": "official release, **gated**; layout from a third-party script; mirror nhonhoccode/ViTextVQA "
        "(no licence tag) read only from --data-root",
    },
    "duytranus/ViInfographicVQA": {
        "size": "6,747 infographics, 20,409 QA pairs (paper); single_test 1,374 / 192 images, multi_test 636 / 509 "
        "(third-party count, not verified)",
        "licence": "not stated on the card",
        "status": "layout from third-party loaders of the Hub files",
    },
    "ByteDance/MTVQA": {
        "size": "test 2,116 images over 9 languages (card of an author's copy; viewer 2.12k rows); vi share not "
        "verified",
        "licence": "card",
        "status": "layout from the Hub tree and third-party loaders",
    },
    "mteb/xm3600": {"size": "3,600 images per language (XM3600 paper)", "licence": "mteb metadata", "status": "mteb"},
    "mteb/wit": {"size": "not verified here", "licence": "mteb metadata", "status": "mteb"},
}

#: Hub datasets whose revision could not be read offline: the table says so; the commit a download resolves to is
#: recorded in the result files (``VNMMEBTask.dataset_root``).
UNPINNED: dict[str, str] = {
    "minhquan6203/ViTextVQA": "gated: no commit id readable without accepting its conditions",
    "duytranus/ViInfographicVQA": "only the short commit db06072 was readable",
}

NON_COMMERCIAL = {"cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "cc-by-nc-3.0", "cc-by-nc-sa-3.0", "msr-la-nc"}


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
            "VN-MMEB: a Vietnamese multimodal embedding benchmark. Caption <-> image (XM3600, WIT, KTVIC), question "
            "-> image (OpenViVQA, ViTextVQA, MTVQA), image + question -> answer with hard per-query candidate lists "
            "(OpenViVQA, ViTextVQA, MTVQA) and their text-only baselines (images removed from the queries), and "
            "question -> infographic page(s) in single- and multi-image settings (ViInfographicVQA, nDCG@5)."
        ),
        reference=None,
        citation=None,
    )


def query_prompt_tasks(tasks: Sequence[Any]) -> dict[str, str]:
    """mteb prompt keys ``<Task>-query`` -> the registry task whose prefix those queries carry (it2t tasks and
    their text-only baselines, which keep the prefix: only the image is removed).

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
    folder must hold the dataset's published layout. The revision becomes ``local``. A task with a ``fallback``
    copy (ViTextVQA's mirror) reads it only when its own dataset is not there, and says so in the log.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-root {root} is not a folder")
    switched = []
    for task in tasks:
        path = task.metadata.dataset["path"]
        local = root / path
        fallback = getattr(task, "fallback", None)
        if not local.is_dir() and fallback and (root / fallback["path"]).is_dir():
            local = root / fallback["path"]
            logger.warning(
                "%s: %s is not under %s; reading the fallback copy %s", task.metadata.name, path, root, fallback["path"]
            )
        if local.is_dir():
            dataset = {**task.metadata.dataset, "path": str(local.resolve()), "revision": "local"}
            task.metadata = task.metadata.model_copy(update={"dataset": dataset})
            switched.append(task.metadata.name)
    return switched


def _revision_cell(path: str, revision: str) -> str:
    if revision == NOT_ON_HUB:
        return "not on the Hub"
    if COMMIT.fullmatch(revision):
        return f"`{revision[:12]}`"
    return f"**unpinned** ({UNPINNED.get(path, 'no commit id known')})"


def dataset_table() -> str:
    """The markdown table of the benchmark's datasets: revision, licence, size, status (each with its source) and
    tasks. Text-only baselines are listed with the task they belong to."""
    rows: dict[str, dict[str, Any]] = {}
    for task in get_tasks():
        meta = task.metadata
        if meta.name in TEXT_ONLY_BASELINES:
            continue
        path = meta.dataset["path"]
        row = rows.setdefault(
            path, {"license": meta.license, "revision": meta.dataset["revision"], "tasks": [], "ref": meta.reference}
        )
        baseline = next((b for b, t in TEXT_ONLY_BASELINES.items() if t == meta.name), None)
        extra = f" + text-only `{baseline}`" if baseline else ""
        row["tasks"].append(f"`{meta.name}` ({meta.category}, {meta.main_score.replace('_at_', '@')}){extra}")
    lines = [
        "| dataset | revision | licence (source) | size (source) | status | tasks |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for path, row in rows.items():
        facts = DATASET_FACTS.get(path, {})
        lic = str(row["license"])
        if lic in NON_COMMERCIAL:
            lic += " **non-commercial**"
        lic += f" ({facts.get('licence', 'mteb metadata')})"
        where = f"`{path}`" if "/" in path else f"{path} ({row['ref']})"
        lines.append(
            f"| {where} | {_revision_cell(path, row['revision'])} | {lic} | {facts.get('size', '')} | "
            f"{facts.get('status', '')} | {'; '.join(row['tasks'])} |"
        )
    return "\n".join(lines)
