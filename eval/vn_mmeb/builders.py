"""One builder per task kind: every adapter reads its files into plain records and hands them to one of these.

* :func:`text_to_images` (t2i): text queries (captions, questions), each with its relevant image(s), against a
  corpus of images (KTVIC captions, VQA questions, infographic pages: one or several relevant).
* :func:`image_to_texts` (i2t): image queries, each with its own texts relevant, against all texts (captions).
* :func:`image_question_to_answer` (it2t): image + question queries against the answers, each query ranked only
  within its hard candidate list (:mod:`eval.vn_mmeb.candidates`).

Example::

    data = text_to_images([("q-1", "Một bát phở", ["img-7"])], {"img-7": "/data/7.jpg"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from .base import VNMMEBTask, image_rows, text_rows
from .candidates import answer_candidates
from .layout import LayoutError

#: Distractors per it2t query (the candidate list holds the gold answers plus these).
N_DISTRACTORS = 99

IT2T_SCHEME = (
    " Short answers collide across questions, so identical answers (NFC, lower case, spaces collapsed, edge "
    "punctuation removed) are one document and each query is ranked only against its own candidate list (mteb's "
    "top_ranked): its gold answer(s), then every answer to the other questions on the same image, then answers of "
    "the same type (yes/no, number, short span, long text), then random answers of the split, up to 99 "
    "distractors; never a string equal to a gold answer; seeded by the query id, the same for every model."
)


@dataclass
class VQAItem:
    """One question of a VQA dataset: its id, the image key and image (path / bytes dict), question, answers."""

    qid: str
    image_key: str
    image: Any
    question: str
    answers: Sequence[str]


def text_to_images(queries: Sequence[tuple[str, str, Sequence[str]]], images: Mapping[str, Any]) -> RetrievalSplitData:
    """Queries ``(query id, text, relevant image keys)``; corpus: every image of ``images`` (key -> image), ids
    ``d-<key>``. Every relevant key must be in ``images``."""
    qrels = {}
    for qid, _, keys in queries:
        missing = [k for k in keys if k not in images]
        if missing or not keys:
            raise LayoutError(f"query {qid}: relevant image(s) {missing or keys} not in the corpus")
        qrels[qid] = {f"d-{k}": 1 for k in keys}
    return RetrievalSplitData(
        queries=text_rows([q for q, _, _ in queries], [t for _, t, _ in queries]),
        corpus=image_rows([f"d-{k}" for k in images], list(images.values())),
        relevant_docs=qrels,
        top_ranked=None,
    )


def image_to_texts(queries: Sequence[tuple[str, Any, Sequence[tuple[str, str]]]]) -> RetrievalSplitData:
    """Queries ``(query id, image, [(doc id, text), ...])``: the image's own texts are relevant among all texts."""
    doc_ids = [d for _, _, docs in queries for d, _ in docs]
    if len(set(doc_ids)) != len(doc_ids):
        raise LayoutError("two texts share one document id")
    return RetrievalSplitData(
        queries=image_rows([q for q, _, _ in queries], [img for _, img, _ in queries]),
        corpus=text_rows(doc_ids, [t for _, _, docs in queries for _, t in docs]),
        relevant_docs={qid: {d: 1 for d, _ in docs} for qid, _, docs in queries},
        top_ranked=None,
    )


def question_to_image(items: Sequence[VQAItem]) -> RetrievalSplitData:
    """Queries: the questions; corpus: the distinct images; one relevant image per question."""
    images: dict[str, Any] = {}
    for it in items:
        images.setdefault(it.image_key, it.image)
    return text_to_images([(f"q-{it.qid}", it.question, [it.image_key]) for it in items], images)


def image_question_to_answer(items: Sequence[VQAItem], n_distractors: int = N_DISTRACTORS) -> RetrievalSplitData:
    """Queries: image + question; corpus: the distinct answers; each query ranked within its hard candidate list."""
    gold = {f"q-{it.qid}": list(it.answers) for it in items}
    image_of = {f"q-{it.qid}": it.image_key for it in items}
    try:
        corpus_rows, qrels, top_ranked = answer_candidates(gold, image_of, n_distractors=n_distractors)
    except ValueError as err:
        raise LayoutError(str(err)) from err
    queries = image_rows([f"q-{it.qid}" for it in items], [it.image for it in items], [it.question for it in items])
    corpus = text_rows([r["id"] for r in corpus_rows], [r["text"] for r in corpus_rows])
    return RetrievalSplitData(queries=queries, corpus=corpus, relevant_docs=qrels, top_ranked=top_ranked)


class VQATask(VNMMEBTask):
    """A task built from a VQA dataset: subclasses set :meth:`load` (the dataset's reader) and pick the kind by
    inheriting :class:`QuestionToImage` or :class:`ImageQuestionToAnswer`."""

    def load(self, root: Path, split: str) -> list[VQAItem]:
        """The split's questions (the dataset adapter's reader)."""
        raise NotImplementedError


class QuestionToImage(VQATask):
    """Question -> the image it was asked about (t2i)."""

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return question_to_image(self.load(root, split))


class ImageQuestionToAnswer(VQATask):
    """Image + question -> answer (it2t), ranked within hard candidate lists."""

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return image_question_to_answer(self.load(root, split))
