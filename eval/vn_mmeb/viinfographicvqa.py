"""ViInfographicVQA (Vietnamese infographics), test split: question -> infographic page(s), ViDoRe-style (nDCG@5),
in its single-image and multi-image settings.

Published layout (``duytranus/ViInfographicVQA``; sources: the Hub file page of ``data/single_test.json``
(502 kB, commit ``db06072`` "initial dataset commit"), and two third-party loaders written against the Hub files
(``hf download duytranus/ViInfographicVQA --repo-type=dataset``), whose docstrings list the files and records):

=========================  ==================================================================================
``data/single_test.json``  JSON list of ``{"question_id": str, "image_path": "images/4813.jpg", "question",
                           "answer", "answer_source", "element", "image_type"}`` (also ``single_train.json``)
``data/multi_test.json``   JSON list of ``{"question_id": str, "image_paths": ["images/18777.jpg", ...],
                           "question", "answer", "answer_source", "image_type"}`` (also ``multi_train.json``)
``images/<n>.jpg``         the infographics, paths relative to the repository root
=========================  ==================================================================================

Split sizes (a third-party count, not verified here): single_test 1,374 questions / 192 images, multi_test 636
questions / 509 images. The paper: 6,747 infographics, 20,409 QA pairs in all. Licence: none stated on the card.

Not read: the authors' GitHub repository (duongtruongbinh/ViInfographicVQA, commit 9fc768f) ships
``data/test.json`` with ``image_id`` instead of ``image_path`` and a different question set (1,926 questions /
230 images, counted here); a record with ``image_id`` gets an error saying so.

Grading of the multi-image setting: every page a question lists in ``image_paths`` is relevant (gain 1). The lists
hold context pages too: the authors' own multi-image example (question 1 of their released predictions) asks about
two dates and lists three weather infographics, one of them from a third date. The release does not mark which
listed pages hold the evidence, so none can be told apart; a model that ranks the listed group first scores 1,
and nDCG@5 covers every list (up to three pages in the authors' examples). Read the score as "finds the group of
infographics the question was written over", not "finds exactly the evidence pages".
"""

from __future__ import annotations

from pathlib import Path

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from .base import VNMMEBTask, task_metadata
from .builders import text_to_images
from .layout import ImageSource, LayoutError, field, read_json, unique

VIINFOGRAPHIC_LAYOUT = (
    "data/single_{split}.json = [{question_id, image_path: 'images/<n>.jpg', question, answer, ...}], "
    "data/multi_{split}.json = [{question_id, image_paths: ['images/<n>.jpg', ...], question, answer, ...}], "
    "images/<n>.jpg"
)
GITHUB_SCHEMA = (
    "this record has 'image_id', the schema of the authors' GitHub data/test.json (a different question set); "
    "the Hub release's data/{file} has '{field}'"
)
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


def read_records(root: Path, file: str) -> tuple[Path, list[dict]]:
    """The question records of ``data/<file>`` (a non-empty JSON list of objects with unique question ids)."""
    where = root / "data" / file
    records = read_json(where)
    if not isinstance(records, list) or not records:
        raise LayoutError(f"{where}: expected a non-empty JSON list of questions, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise LayoutError(f"{where}: [{i}]: expected an object, got {type(record).__name__}")
    unique((str(r.get("question_id")) for r in records), str(where), "question_id")
    return where, records


def page_paths(record: dict, where: Path, item: str, multi: bool) -> list[str]:
    """The page paths a record refers to: ``image_paths`` (multi) or ``[image_path]`` (single)."""
    name = "image_paths" if multi else "image_path"
    if name not in record and "image_id" in record:
        raise LayoutError(
            f"{where}: {item}: missing field {name!r}: " + GITHUB_SCHEMA.format(file=where.name, field=name)
        )
    if not multi:
        return [field(record, name, str, where, item)]
    paths = field(record, name, list, where, item)
    for j, p in enumerate(paths):
        if not isinstance(p, str) or not p:
            raise LayoutError(f"{where}: {item}: {name}[{j}] must be a non-empty string, got {p!r:.40}")
    if len(set(paths)) != len(paths):
        raise LayoutError(f"{where}: {item}: {name} lists a page twice: {paths}")
    return paths


def build_pages(root: Path, file: str, multi: bool) -> RetrievalSplitData:
    """Queries: the questions; corpus: every page the file refers to; relevant: the question's page(s)."""
    where, records = read_records(root, file)
    images = ImageSource(root, "")
    pages: dict[str, object] = {}
    queries = []
    for i, record in enumerate(records):
        item = f"[{i}]"
        paths = page_paths(record, where, item, multi)
        for path in paths:
            if path not in pages:
                pages[path] = images.get(path, f"{where}: {item}")
        qid = f"q-{field(record, 'question_id', (str, int), where, item)}"
        queries.append((qid, field(record, "question", str, where, item), paths))
    return text_to_images(queries, pages)


def referenced_pages(root: Path, file: str, multi: bool) -> list[str]:
    """The page paths ``data/<file>`` refers to (what a Hub download needs beyond the JSON file)."""
    where, records = read_records(root, file)
    return sorted({p for i, r in enumerate(records) for p in page_paths(r, where, f"[{i}]", multi)})


_META = dict(
    reference="https://arxiv.org/abs/2512.12424",
    # No full commit id could be read offline (only the short db06072); see the dataset table. The commit a
    # download resolves to is recorded in the results.
    dataset={"path": "duytranus/ViInfographicVQA", "revision": "main"},
    type="DocumentUnderstanding",
    main_score="ndcg_at_5",
    date=("2024-01-01", "2025-12-31"),
    domains=["Web", "Non-fiction"],
    license="not specified",
    bibtex_citation=VIINFOGRAPHIC_CITATION,
)


class _Pages(VNMMEBTask):
    multi = False
    layout = VIINFOGRAPHIC_LAYOUT

    def _file(self, split: str) -> str:
        return f"{'multi' if self.multi else 'single'}_{split}.json"

    def more_hub_files(self, root: Path, split: str) -> list[str]:
        return referenced_pages(root, self._file(split), self.multi)  # only the pages the split uses

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return build_pages(root, self._file(split), self.multi)


class ViInfographicVQAT2IRetrieval(_Pages):
    """Single-image setting: each question has one relevant infographic page."""

    hub_files = ["data/single_test.json", "README.md"]
    metadata = task_metadata(
        "ViInfographicVQAT2IRetrieval",
        "t2i",
        "ViInfographicVQA single-image test questions: retrieve the infographic that answers the question "
        "among all test infographics (ViDoRe-style page retrieval, nDCG@5).",
        **_META,
    )


class ViInfographicVQAMultiT2IRetrieval(_Pages):
    """Multi-image setting: each question lists several infographics; all of them are relevant."""

    multi = True
    hub_files = ["data/multi_test.json", "README.md"]
    metadata = task_metadata(
        "ViInfographicVQAMultiT2IRetrieval",
        "t2i",
        "ViInfographicVQA multi-image test questions: retrieve the infographics a cross-image question was written "
        "over (every listed page relevant, context pages included: the release does not mark the evidence pages) "
        "among all pages of the multi-image test set (nDCG@5).",
        **_META,
    )
