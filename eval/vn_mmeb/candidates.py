"""Answer corpora and per-query hard candidate lists for image + question -> answer (it2t) tasks.

Short answers collide across queries ("2", "có", "màu đỏ" answer many questions), and random distractors are easy
to tell apart from the gold answer without looking at the image (a yes/no question among 99 random phrases). So:

1. The corpus holds each distinct answer once, keyed by its normalised form (Unicode NFC, lower case, inner spaces
   collapsed, surrounding punctuation stripped). Every query whose gold answers include it marks that one document
   relevant, so a collision never turns a correct answer into a wrong one.
2. Each query is ranked only against its own candidate list (mteb's ``top_ranked``), filled in this order up to
   ``len(gold) + n_distractors`` entries, never with a string equal to one of its gold answers:

   a. every answer given to the *other questions on the same image* (all of them, even past the list size): the
      model has to read the image to tell which of that image's answers fits this question;
   b. answers of the *same answer type* as the gold answer (:func:`answer_type`: yes/no, number, short span,
      long text), drawn from the rest of the split;
   c. random answers of the split.

   Draws in (b) and (c) are seeded by the query id over id-sorted pools, so the lists are the same on every run,
   machine and model.

Example::

    gold = {"q1": ["2"], "q2": ["có"], "q3": ["màu đỏ"]}
    corpus, qrels, top = answer_candidates(gold, image_of={"q1": "img1", "q2": "img1", "q3": "img2"},
                                           n_distractors=2)
    # top["q1"] holds "2" (gold) and "có" (same image) first, then a number / random answer
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Mapping, Sequence

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = ".,;:!?\"'()[]{}“”‘’…-–—"
_DIGIT = re.compile(r"\d")

#: Normalised answers that count as yes/no (Vietnamese and English spellings seen in VQA data).
YES_NO = frozenset({"có", "không", "đúng", "sai", "phải", "không phải", "chưa", "rồi", "yes", "no", "co", "khong"})
#: Answer types of :func:`answer_type`, in the order they are tested.
ANSWER_TYPES = ("yes/no", "number", "short span", "long text")
#: Words up to which a non-numeric answer is a "short span".
SHORT_SPAN_WORDS = 4
#: Words up to which an answer holding a digit is a "number" ("25k", "19°c", "85,5 triệu", "số 32").
NUMBER_WORDS = 3


def normalize_answer(text: str) -> str:
    """The form two answers are compared in: NFC, lower case, one space between words, edge punctuation removed."""
    text = unicodedata.normalize("NFC", text).lower()
    return _SPACE.sub(" ", text).strip().strip(_EDGE_PUNCT).strip()


def answer_type(norm: str) -> str:
    """The answer type of a normalised answer (a simple rule, the same for every dataset):

    * ``yes/no``: one of :data:`YES_NO`;
    * ``number``: holds a digit and has at most :data:`NUMBER_WORDS` words;
    * ``short span``: at most :data:`SHORT_SPAN_WORDS` words;
    * ``long text``: anything longer.
    """
    if norm in YES_NO:
        return "yes/no"
    words = len(norm.split())
    if _DIGIT.search(norm) and words <= NUMBER_WORDS:
        return "number"
    return "short span" if words <= SHORT_SPAN_WORDS else "long text"


def answer_id(norm: str) -> str:
    """A stable document id for a normalised answer."""
    return "ans-" + hashlib.sha1(norm.encode("utf-8")).hexdigest()[:16]


def answer_candidates(
    gold: Mapping[str, Sequence[str]],
    image_of: Mapping[str, str] | None = None,
    n_distractors: int = 99,
    seed: int = 0,
) -> tuple[list[dict[str, str]], dict[str, dict[str, int]], dict[str, list[str]]]:
    """The answer corpus, the relevance judgements and the per-query hard candidate lists.

    Args:
        gold: query id -> its gold answers (raw strings, at least one non-empty after normalisation).
        image_of: query id -> the key of the image it was asked about (same-image answers go in first); None:
            every query on its own image.
        n_distractors: distractors per query beyond its gold answers (more only when the same image has more
            other answers; fewer when the split has fewer distinct answers).
        seed: mixed into the per-query draws.

    Returns:
        ``(corpus, qrels, top_ranked)``: corpus rows ``{"id", "text"}`` (the first raw spelling of each distinct
        answer, in first-seen order), ``qrels[qid] = {doc_id: 1}`` for every gold answer, and
        ``top_ranked[qid]``: gold ids + distractor ids, sorted by id (the list order carries no hint).

    Raises:
        ValueError: a query without a non-empty gold answer (its id in the message).
    """
    texts: dict[str, str] = {}  # doc id -> first raw spelling
    types: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for qid, answers in gold.items():
        ids: dict[str, int] = {}
        for raw in answers:
            norm = normalize_answer(raw)
            if not norm:
                continue
            doc = answer_id(norm)
            texts.setdefault(doc, raw.strip())
            types.setdefault(doc, answer_type(norm))
            ids[doc] = 1
        if not ids:
            raise ValueError(f"query {qid!r} has no non-empty gold answer")
        qrels[qid] = ids
    by_image: dict[str, set[str]] = {}
    for qid, positives in qrels.items():
        by_image.setdefault(image_of[qid] if image_of else qid, set()).update(positives)
    pool = sorted(texts)
    by_type: dict[str, list[str]] = {t: [d for d in pool if types[d] == t] for t in ANSWER_TYPES}
    top_ranked: dict[str, list[str]] = {}
    for qid, positives in qrels.items():
        rng = random.Random(f"{seed}:{qid}")
        same_image = sorted(by_image[image_of[qid] if image_of else qid] - positives.keys())
        chosen = set(same_image)
        room = max(0, n_distractors - len(chosen))
        # The gold answers' types (a query with a number and a span answer draws from both).
        kinds = sorted({types[d] for d in positives}, key=ANSWER_TYPES.index)
        same_type = [d for t in kinds for d in by_type[t] if d not in positives and d not in chosen]
        picked = rng.sample(same_type, min(room, len(same_type)))
        chosen.update(picked)
        room -= len(picked)
        rest = [d for d in pool if d not in positives and d not in chosen]
        chosen.update(rng.sample(rest, min(room, len(rest))))
        top_ranked[qid] = sorted([*positives, *chosen])
    corpus = [{"id": doc, "text": text} for doc, text in texts.items()]
    return corpus, qrels, top_ranked
