"""The base class of the VN-MMEB tasks: an mteb retrieval task whose data an adapter reads from the dataset's
published files (a local folder, or the Hub repository downloaded with ``snapshot_download``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from .layout import LayoutError

# Metadata shared by every VN-MMEB task (mteb's TaskMetadata fields).
COMMON: dict[str, Any] = {
    "eval_langs": ["vie-Latn"],
    "dialect": [],
    "sample_creation": "found",
}


def dataset_root(dataset: dict[str, Any], hub_files: list[str] | None, source: str | None = None) -> Path:
    """The folder holding the dataset's published files.

    ``dataset["path"]`` is an existing folder (a local copy, e.g. from ``--data-root``), or a Hub dataset id
    fetched with ``snapshot_download`` (only ``hub_files``; from the cache when offline). ``source`` names where
    to get a dataset that is not on the Hub.
    """
    path = dataset["path"]
    if Path(path).is_dir():
        return Path(path)
    if source is not None:
        raise LayoutError(
            f"{path}: not on the Hugging Face Hub; download it from {source} and give its parent folder as "
            f"--data-root (the files must be in <data-root>/{path}/)"
        )
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(path, repo_type="dataset", revision=dataset.get("revision"), allow_patterns=hub_files)
    except Exception as err:  # noqa: BLE001 - any hub error: say which dataset and how to provide it
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = (
            " (offline: it must be in the Hugging Face cache, or give a local copy with --data-root)" if offline else ""
        )
        raise LayoutError(f"{path}: could not get the dataset{hint}: {type(err).__name__}: {err}") from err
    return Path(local)


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
    """A VN-MMEB task. Subclasses set ``metadata`` and implement :meth:`build` (one eval split)."""

    #: Registry task (configuration_vipyloqwen.TASKS) whose prefix the queries carry; None: plain queries.
    query_task: ClassVar[str | None] = None
    #: Files of the Hub repository the task needs (allow_patterns for snapshot_download).
    hub_files: ClassVar[list[str] | None] = None
    #: Where to download a dataset that is not on the Hub (then it needs a local copy).
    source: ClassVar[str | None] = None

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        """Read ``split`` from the dataset folder ``root`` and return the queries, corpus, qrels, top_ranked."""
        raise NotImplementedError

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Load every eval split through :meth:`build`; an empty split is an error, never a silent empty task."""
        if self.data_loaded:
            return
        root = dataset_root(self.metadata.dataset, self.hub_files, self.source)
        self.dataset = {"default": {}}
        for split in self.eval_splits:
            data = self.build(root, split)
            if len(data["queries"]) == 0 or len(data["corpus"]) == 0:
                raise LayoutError(f"{root}: {self.metadata.name} split {split!r} has no queries or no documents")
            self.dataset["default"][split] = data
        self.data_loaded = True
