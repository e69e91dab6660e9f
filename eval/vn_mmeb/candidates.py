"""Answer corpora and per-query candidate lists for image+question -> answer (it2t) tasks.

Short answers collide across queries: "2", "có" or "màu đỏ" answer many different questions. Ranking every
question against one pool of all answers would then measure luck (the pool holds the right string many times, or a
string equal to the gold answer counts as wrong), so the it2t tasks use this scheme instead:

1. The corpus holds each distinct answer once, keyed by its normalised form (Unicode NFC, lower case, inner spaces
   collapsed, surrounding punctuation stripped). Every query whose gold answers include it marks that one document
   relevant, so a collision can never turn a correct answer into a wrong one.
2. Each query is ranked only against its own candidate list (mteb's ``top_ranked``): its gold answer(s) plus
   ``n_distractors`` other answers drawn from the same source (the same dataset and split), never a string equal
   to one of its gold answers after normalisation. The draw is seeded by the query id, so the lists are the same
   on every run and for every model.

Example::

    corpus, qrels, top = answer_candidates({"q1": ["2"], "q2": ["3", "ba"]}, n_distractors=9)
"""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Mapping, Sequence

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = ".,;:!?\"'()[]{}“”‘’…-–—"


def normalize_answer(text: str) -> str:
    """The form two answers are compared in: NFC, lower case, one space between words, edge punctuation removed."""
    text = unicodedata.normalize("NFC", text).lower()
    return _SPACE.sub(" ", text).strip().strip(_EDGE_PUNCT).strip()


def answer_id(norm: str) -> str:
    """A stable document id for a normalised answer."""
    return "ans-" + hashlib.sha1(norm.encode("utf-8")).hexdigest()[:16]


def answer_candidates(
    gold: Mapping[str, Sequence[str]],
    n_distractors: int = 99,
    seed: int = 0,
) -> tuple[list[dict[str, str]], dict[str, dict[str, int]], dict[str, list[str]]]:
    """The answer corpus, the relevance judgements and the per-query candidate lists.

    Args:
        gold: query id -> its gold answers (raw strings, at least one non-empty).
        n_distractors: distractors per query (fewer when the source has fewer other distinct answers).
        seed: mixed into the per-query draw.

    Returns:
        ``(corpus, qrels, top_ranked)``: corpus rows ``{"id", "text"}`` (the first raw spelling of each distinct
        answer, in first-seen order), ``qrels[qid] = {doc_id: 1}`` for every gold answer, and
        ``top_ranked[qid]`` = gold ids + distractor ids, sorted by id (so the list order carries no hint).
    """
    texts: dict[str, str] = {}  # doc id -> first raw spelling
    qrels: dict[str, dict[str, int]] = {}
    for qid, answers in gold.items():
        ids = {}
        for raw in answers:
            norm = normalize_answer(raw)
            if not norm:
                continue
            doc = answer_id(norm)
            texts.setdefault(doc, raw.strip())
            ids[doc] = 1
        if not ids:
            raise ValueError(f"query {qid!r} has no non-empty gold answer")
        qrels[qid] = ids
    pool = sorted(texts)
    top_ranked: dict[str, list[str]] = {}
    for qid, positives in qrels.items():
        rng = random.Random(f"{seed}:{qid}")
        others = [d for d in pool if d not in positives]
        picked = rng.sample(others, min(n_distractors, len(others)))
        top_ranked[qid] = sorted([*positives, *picked])
    corpus = [{"id": doc, "text": text} for doc, text in texts.items()]
    return corpus, qrels, top_ranked
