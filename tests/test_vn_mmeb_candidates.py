"""Hard candidate lists of the VN-MMEB it2t tasks (eval/vn_mmeb/candidates.py): same-image answers first (all of
them), then the gold answer's type, then random; seeded, never a string equal to a gold answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import vn_mmeb
from eval.vn_mmeb import benchmark as bm
from eval.vn_mmeb.candidates import answer_candidates, answer_id, answer_type, normalize_answer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vn_mmeb"


def _split() -> tuple[dict[str, list[str]], dict[str, str]]:
    """A split of 40 images x 3 questions: a yes/no, a number and a span each, plus long answers."""
    gold, image_of = {}, {}
    for i in range(40):
        for k, answer in enumerate(["có" if i % 2 else "không", f"{i} người", f"biển hiệu số {i}"]):
            gold[f"q{i}-{k}"], image_of[f"q{i}-{k}"] = [answer], f"img{i}"
    gold["long"], image_of["long"] = ["một quán phở nhỏ nằm ở góc phố cổ Hà Nội"], "img0"
    gold["long2"], image_of["long2"] = ["người đàn ông mặc áo xanh đang đạp xe qua cầu"], "img99"
    return gold, image_of


def test_answer_types():
    assert [answer_type(normalize_answer(a)) for a in ["Có.", "25k", "85,5 triệu", "số 32", "màu vàng"]] == [
        "yes/no",
        "number",
        "number",
        "number",
        "short span",
    ]
    assert answer_type("người đàn ông mặc áo xanh đang đạp xe") == "long text"
    assert answer_type("năm 2024 dân số tăng mạnh nhất") == "long text"  # a digit in a long answer is text


def test_candidates_hold_every_other_answer_of_the_same_image():
    gold, image_of = _split()
    corpus, qrels, top = answer_candidates(gold, image_of, n_distractors=5)
    for qid, cands in top.items():
        same_image = {d for q, g in qrels.items() if image_of[q] == image_of[qid] for d in g}
        assert same_image <= set(cands), qid  # the gold answer(s) and every other answer of the image
        assert len(cands) == len(set(cands)) == 1 + 5
    # past the list size too: an image with more other answers than distractors keeps them all
    crowded = {f"c{k}": [f"đáp án {k}"] for k in range(8)}
    _, qrels, top = answer_candidates(crowded, dict.fromkeys(crowded, "one image"), n_distractors=3)
    assert all(len(c) == 8 for c in top.values())


def test_then_answers_of_the_same_type_then_random():
    gold, image_of = _split()
    corpus, qrels, top = answer_candidates(gold, image_of, n_distractors=10)
    types = {r["id"]: answer_type(normalize_answer(r["text"])) for r in corpus}
    for qid in ("q7-1", "q12-1", "q30-2"):  # a number, a number, a short span: 2 same-image + 8 of its type
        (gold_id,) = qrels[qid]
        same_image = {d for q, g in qrels.items() if image_of[q] == image_of[qid] for d in g}
        others = [d for d in top[qid] if d not in same_image]
        assert len(others) == 8 and all(types[d] == types[gold_id] for d in others), qid
    # yes/no: only two distinct yes/no answers exist, so the list is filled with random answers of other types
    (yes,) = qrels["q1-0"]
    assert len(top["q1-0"]) == 11 and any(types[d] != "yes/no" for d in top["q1-0"])
    assert yes in top["q1-0"] and answer_id("không") in top["q1-0"]


def test_candidate_lists_are_seeded_and_skip_collisions():
    gold = {f"q{i}": [str(i % 7)] for i in range(40)} | {"qa": ["Có."], "qb": ["có"]}
    corpus, qrels, top = answer_candidates(gold, n_distractors=3)
    assert len(corpus) == 8 and qrels["qa"] == qrels["qb"]  # "Có." and "có" are one answer
    assert top == answer_candidates(gold, n_distractors=3)[2]  # the same lists on every call
    assert top != answer_candidates(gold, n_distractors=3, seed=1)[2]
    for qid, cands in top.items():
        assert len(cands) == 4 and set(qrels[qid]) <= set(cands)
        assert sum(d in qrels[qid] for d in cands) == len(qrels[qid])  # no second copy of a gold answer
    with pytest.raises(ValueError, match="'qz' has no non-empty gold answer"):
        answer_candidates({"qz": ["  ", "..."]})


def test_fixture_lists_hold_the_answers_of_the_same_image():
    """On the OpenViVQA stand-in: each query's list holds every answer given on its image."""
    task = bm.OpenViVQAIT2TRetrieval()
    vn_mmeb.localize([task], FIXTURES)
    task.load_data()
    data = task.dataset["default"]["dev"]
    raw = json.loads((FIXTURES / "uitnlp/OpenViVQA-dataset/vlsp2023_dev_data.json").read_text(encoding="utf-8"))
    anns = raw["annotations"]
    for qid, ann in anns.items():
        on_image = {answer_id(normalize_answer(a["answer"])) for a in anns.values() if a["image_id"] == ann["image_id"]}
        assert on_image <= set(data["top_ranked"][f"q-{qid}"]), qid
