"""ViInfographicVQA (Vietnamese infographics), test split: question -> infographic page(s), ViDoRe-style
(nDCG@5), in its single-image and multi-image settings.

Published layout (``duytranus/ViInfographicVQA``): ``data/single_test.json``, a list of {``question_id``,
``image_id``, ``question``, ``answer``, ...}, and ``data/multi_test.json``, a list of {``question_id``,
``image_ids`` (list; or ``image_paths``), ``question``, ``answer``, ...}; page images ``<image_id>.jpg`` in
``images/`` (or ``images.zip``), as the authors' evaluation code reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from .base import COMMON, VNMMEBTask, image_rows, text_rows
from .layout import ImageSource, LayoutError, field, read_json, unique

VIINFOGRAPHIC_CITATION = r"""
@misc{vandinh2025viinfographicvqa,
  author = {Tue-Thu Van-Dinh and Hoang-Duy Tran and Truong-Binh Duong and Mai-Hanh Pham
    and Binh-Nam Le-Nguyen and Quoc-Thai Nguyen},
  eprint = {2512.12424},
  title = {ViInfographicVQA: A Benchmark for Single and Multi-image Visual Question Answering on Vietnamese
    Infographics},
  year = {2025},
}
"""


def _pages(record: dict, where: Path, item: str) -> list[tuple[str, str]]:
    """(page key, image file name) of every page a multi-image record refers to (``image_ids``, else
    ``image_paths``)."""
    if "image_ids" in record or "image_paths" not in record:
        ids = field(record, "image_ids", list, where, item)
        for j, i in enumerate(ids):
            if isinstance(i, bool) or not isinstance(i, (str, int)):
                raise LayoutError(
                    f"{where}: {item}: image id [{j}] must be a string or integer, got {type(i).__name__}"
                )
        return [(str(i), f"{i}.jpg") for i in ids]
    paths = field(record, "image_paths", list, where, item)
    out = []
    for j, p in enumerate(paths):
        if not isinstance(p, str) or not p:
            raise LayoutError(f"{where}: {item}: image_paths[{j}] must be a non-empty string")
        out.append((os.path.splitext(os.path.basename(p))[0], os.path.basename(p)))
    return out


def build_pages(root: Path, file: str, multi: bool) -> RetrievalSplitData:
    """Queries: the questions; corpus: every page the file refers to; relevant: the question's page(s)."""
    where = root / "data" / file
    records = read_json(where)
    if not isinstance(records, list) or not records:
        raise LayoutError(f"{where}: expected a non-empty JSON list of questions, got {type(records).__name__}")
    images = ImageSource(root, "images", "images.zip")
    unique((str(r.get("question_id")) for r in records if isinstance(r, dict)), str(where), "question_id")
    pages: dict[str, object] = {}
    qids, texts, qrels = [], [], {}
    for i, record in enumerate(records):
        item = f"[{i}]"
        if not isinstance(record, dict):
            raise LayoutError(f"{where}: {item}: expected an object, got {type(record).__name__}")
        if multi:
            refs = _pages(record, where, item)
        else:
            refs = [(str(field(record, "image_id", (str, int), where, item)), f"{record['image_id']}.jpg")]
        qid = f"q-{field(record, 'question_id', (str, int), where, item)}"
        for key, name in refs:
            if key not in pages:
                pages[key] = images.get(name, f"{where}: {item}")
        qids.append(qid)
        texts.append(field(record, "question", str, where, item))
        qrels[qid] = {f"d-{key}": 1 for key, _ in refs}
    corpus = image_rows([f"d-{k}" for k in pages], list(pages.values()))
    return RetrievalSplitData(queries=text_rows(qids, texts), corpus=corpus, relevant_docs=qrels, top_ranked=None)


_META = dict(
    reference="https://arxiv.org/abs/2512.12424",
    dataset={"path": "duytranus/ViInfographicVQA", "revision": "main"},
    type="DocumentUnderstanding",
    category="t2i",
    modalities=["text", "image"],
    eval_splits=["test"],
    main_score="ndcg_at_5",
    date=("2024-01-01", "2025-12-31"),
    domains=["Web", "Non-fiction"],
    task_subtypes=["Image Text Retrieval"],
    license="not specified",
    annotations_creators="human-annotated",
    bibtex_citation=VIINFOGRAPHIC_CITATION,
    **COMMON,
)


class ViInfographicVQAT2IRetrieval(VNMMEBTask):
    """Single-image setting: each question has one relevant infographic page."""

    hub_files = ["data/single_test.json", "images/*", "images.zip"]
    metadata = TaskMetadata(
        name="ViInfographicVQAT2IRetrieval",
        description="ViInfographicVQA single-image test questions: retrieve the infographic that answers the question "
        "among all test infographics (ViDoRe-style page retrieval, nDCG@5).",
        **_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return build_pages(root, f"single_{split}.json", multi=False)


class ViInfographicVQAMultiT2IRetrieval(VNMMEBTask):
    """Multi-image setting: each question needs several infographics; all of them are relevant."""

    hub_files = ["data/multi_test.json", "images/*", "images.zip"]
    metadata = TaskMetadata(
        name="ViInfographicVQAMultiT2IRetrieval",
        description="ViInfographicVQA multi-image test questions: retrieve all the infographics a cross-image question "
        "needs (several relevant pages per query) among all pages of the multi-image test set (nDCG@5).",
        **_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return build_pages(root, f"multi_{split}.json", multi=True)
