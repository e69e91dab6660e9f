"""The base class of the VN-MMEB tasks: an mteb retrieval task whose data an adapter reads from the dataset's
published files (a local folder, or the Hub repository downloaded with ``snapshot_download`` at its pinned
revision), and the text-only twin of a task (the same data with the images removed from the queries)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from vipyloqwen_tools.release.results import TEXT_ONLY_SUFFIX

from .layout import LayoutError

# Metadata shared by every VN-MMEB task unless its dataset says otherwise (mteb's TaskMetadata fields).
COMMON: dict[str, Any] = {
    "eval_langs": ["vie-Latn"],
    "dialect": [],
    "sample_creation": "found",
    "modalities": ["image", "text"],
    "eval_splits": ["test"],
    "main_score": "ndcg_at_10",
    "annotations_creators": "human-annotated",
}

#: ``dataset["revision"]`` of a dataset that is not on the Hugging Face Hub (read from a local copy only).
NOT_ON_HUB = "not-on-hub"
COMMIT = re.compile(r"[0-9a-f]{40}")


def _offline_hint() -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return " (offline: it must be in the Hugging Face cache, or give a local copy with --data-root)" if offline else ""


def snapshot(path: str, revision: str | None, files: list[str] | None, how_to_get: str | None = None) -> Path:
    """``snapshot_download`` of the Hub dataset ``path`` at ``revision`` (only ``files``); errors name the dataset
    and say how to provide it (``how_to_get``: extra advice, e.g. for a gated repository)."""
    from huggingface_hub import constants, snapshot_download

    try:
        # Offline, read the cache directly: with a pinned commit snapshot_download would otherwise list the remote
        # tree (it skips its local fallback for commit ids).
        return Path(
            snapshot_download(
                path,
                repo_type="dataset",
                revision=revision,
                allow_patterns=files,
                local_files_only=bool(constants.HF_HUB_OFFLINE),
            )
        )
    except Exception as err:  # noqa: BLE001 - any hub error: say which dataset and how to provide it
        advice = f". {how_to_get}" if how_to_get else ""
        raise LayoutError(
            f"{path}: could not get the dataset{_offline_hint()}: {type(err).__name__}: {err}{advice}"
        ) from err


def text_rows(ids: list[str], texts: list[str]) -> Dataset:
    """A text corpus / query set."""
    return Dataset.from_dict(
        {"id": ids, "text": texts}, features=Features({"id": Value("string"), "text": Value("string")})
    )


def image_rows(ids: list[str], images: list[Any], texts: list[str] | None = None) -> Dataset:
    """An image (or image + text) corpus / query set; images are file paths, ``{"bytes": ...}`` dicts or PIL images."""
    data: dict[str, list[Any]] = {"id": ids, "image": images}
    features = {"id": Value("string"), "image": ImageFeature()}
    if texts is not None:
        data["text"] = texts
        features["text"] = Value("string")
    return Dataset.from_dict(data, features=Features(features))


class VNMMEBTask(AbsTaskRetrieval):
    """A VN-MMEB task. Subclasses set ``metadata``, ``layout`` and implement :meth:`build` (one eval split)."""

    #: Registry task (configuration_vipyloqwen.TASKS) whose prefix the queries carry; None: plain queries.
    query_task: ClassVar[str | None] = None
    #: Files of the Hub repository the task needs (allow_patterns for snapshot_download).
    hub_files: ClassVar[list[str] | None] = None
    #: Where to download a dataset that is not on the Hub (then it needs a local copy).
    source: ClassVar[str | None] = None
    #: The published layout the adapter reads, in one line (appended to every layout error).
    layout: ClassVar[str] = ""
    #: How to get a Hub dataset that snapshot_download cannot fetch as is (gated repository, mirror).
    how_to_get: ClassVar[str | None] = None
    #: Another Hub copy read when only it is under ``--data-root`` (``{"path", "revision"}``), e.g. a mirror.
    fallback: ClassVar[dict[str, str] | None] = None

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        """Read ``split`` from the dataset folder ``root`` and return the queries, corpus, qrels, top_ranked."""
        raise NotImplementedError

    def more_hub_files(self, root: Path, split: str) -> list[str]:
        """Files to fetch after ``hub_files`` once those are read (e.g. only the images the test split uses)."""
        return []

    def dataset_root(self) -> Path:
        """The folder holding the dataset's published files: ``dataset["path"]`` when it is a folder (a local copy,
        e.g. from ``--data-root``), else the Hub snapshot at the pinned revision (from the cache when offline).
        A Hub snapshot of an unpinned revision records the commit it resolved to in the task metadata, so the
        result files name the exact data."""
        dataset = self.metadata.dataset
        path = dataset["path"]
        if Path(path).is_dir():
            return Path(path)
        if self.source is not None:
            raise LayoutError(
                f"{path}: not on the Hugging Face Hub; download it from {self.source} and give its parent folder "
                f"as --data-root (the files must be in <data-root>/{path}/)"
            )
        root = snapshot(path, dataset.get("revision"), self.hub_files, self.how_to_get)
        extra = sorted({f for split in self.eval_splits for f in self.more_hub_files(root, split)})
        if extra:
            root = snapshot(path, dataset.get("revision"), extra, self.how_to_get)
        if not COMMIT.fullmatch(str(dataset.get("revision"))) and COMMIT.fullmatch(root.name):
            self.metadata = self.metadata.model_copy(update={"dataset": {**dataset, "revision": root.name}})
        return root

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Load every eval split through :meth:`build`; an empty split is an error, never a silent empty task, and
        a layout error says which published layout was expected."""
        if self.data_loaded:
            return
        root = self.dataset_root()
        self.dataset = {"default": {}}
        for split in self.eval_splits:
            try:
                data = self.build(root, split)
            except LayoutError as err:
                raise LayoutError(f"{err}\n  expected the published layout: {self.layout}") from err
            if len(data["queries"]) == 0 or len(data["corpus"]) == 0:
                raise LayoutError(f"{root}: {self.metadata.name} split {split!r} has no queries or no documents")
            self.dataset["default"][split] = data
        self.data_loaded = True


def text_only(task: type[VNMMEBTask]) -> type[VNMMEBTask]:
    """The text-only baseline of an image + text -> text task: the same data, candidate lists, prompt and scoring,
    with the images removed from the queries. Named ``<Task>TextOnly``; how far it trails the task is how much
    the model's score depends on the image."""
    meta = task.metadata
    name = f"{meta.name}{TEXT_ONLY_SUFFIX}"  # release/results.py reads the suffix: out of every mean

    def build(self: VNMMEBTask, root: Path, split: str) -> RetrievalSplitData:
        data = task.build(self, root, split)
        return RetrievalSplitData(
            queries=data["queries"].remove_columns("image"),
            corpus=data["corpus"],
            relevant_docs=data["relevant_docs"],
            top_ranked=data["top_ranked"],
        )

    metadata = TaskMetadata(
        **{
            **meta.model_dump(),
            "name": name,
            "description": f"Text-only baseline of {meta.name}: its queries without their images (the same model, "
            "prompt, corpus and candidate lists), to show how much the image matters. " + meta.description,
            "category": "t2t",
            "modalities": ["text"],
            "adapted_from": [meta.name],
        }
    )
    return type(name, (task,), {"metadata": metadata, "build": build, "__doc__": f"{meta.name} without images."})


#: mteb task type and subtypes of each VN-MMEB task category.
_KINDS: dict[str, tuple[str, list[str]]] = {
    "t2i": ("Any2AnyRetrieval", ["Image Text Retrieval"]),
    "i2t": ("Any2AnyRetrieval", ["Image Text Retrieval"]),
    "it2t": ("Any2AnyRetrieval", ["Question answering"]),
}


def task_metadata(name: str, category: str, description: str, **meta: Any) -> TaskMetadata:
    """The TaskMetadata of a VN-MMEB task: its name, category (t2i, i2t, it2t), description and the dataset's
    fields (``meta``) over :data:`COMMON`; the mteb type and subtypes follow from the category unless ``meta`` sets
    them."""
    kind, subtypes = _KINDS[category]
    fields = {**COMMON, "type": kind, "task_subtypes": subtypes, **meta}
    return TaskMetadata(**fields, name=name, category=category, description=description)
