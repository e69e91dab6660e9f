"""Shared construction of the two task shapes built from visual-QA datasets.

* question -> image (t2i): each question is a query; the image it was asked about is its relevant document among
  all images of the split.
* image + question -> answer (it2t): each (image, question) is a query; its gold answers are relevant, and it is
  ranked against its own candidate list (see :mod:`eval.vn_mmeb.candidates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from .base import image_rows, text_rows
from .candidates import answer_candidates
from .layout import LayoutError

#: Distractors per it2t query (the candidate list holds the gold answers plus these).
N_DISTRACTORS = 99

IT2T_SCHEME = (
    " Short answers collide across questions, so each query is ranked only against its own candidate list "
    "(mteb's top_ranked): its gold answer(s) plus up to 99 other distinct answers of the same dataset split, "
    "drawn with a seed from the query id and never equal to a gold answer after normalisation (NFC, lower case, "
    "spaces collapsed, edge punctuation removed); identical answers are one document, relevant to every question "
    "they answer."
)


@dataclass
class VQAItem:
    """One question of a VQA dataset: its id, the image key and image (path / bytes dict), question, answers."""

    qid: str
    image_key: str
    image: Any
    question: str
    answers: Sequence[str]


def question_to_image(items: Sequence[VQAItem]) -> RetrievalSplitData:
    """Queries: the questions; corpus: the distinct images; one relevant image per question."""
    images: dict[str, Any] = {}
    for it in items:
        images.setdefault(it.image_key, it.image)
    corpus = image_rows([f"d-{k}" for k in images], list(images.values()))
    queries = text_rows([f"q-{it.qid}" for it in items], [it.question for it in items])
    qrels = {f"q-{it.qid}": {f"d-{it.image_key}": 1} for it in items}
    return RetrievalSplitData(queries=queries, corpus=corpus, relevant_docs=qrels, top_ranked=None)


def image_question_to_answer(items: Sequence[VQAItem], n_distractors: int = N_DISTRACTORS) -> RetrievalSplitData:
    """Queries: image + question; corpus: the distinct answers; each query ranked within its candidate list."""
    gold = {f"q-{it.qid}": list(it.answers) for it in items}
    try:
        corpus_rows, qrels, top_ranked = answer_candidates(gold, n_distractors=n_distractors)
    except ValueError as err:
        raise LayoutError(str(err)) from err
    queries = image_rows([f"q-{it.qid}" for it in items], [it.image for it in items], [it.question for it in items])
    corpus = text_rows([r["id"] for r in corpus_rows], [r["text"] for r in corpus_rows])
    return RetrievalSplitData(queries=queries, corpus=corpus, relevant_docs=qrels, top_ranked=top_ranked)
