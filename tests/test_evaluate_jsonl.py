"""eval/evaluate_jsonl.py: metrics equal hand-checked values, bad lines reported with their number, and an
end-to-end run on the tiny model equals an independent computation from the same embeddings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from configuration_vipyloqwen import TASKS
from eval import evaluate_jsonl as ej
from tests.conftest import make_image


def test_perfect_ranking_gives_one_everywhere():
    sim = np.eye(4) + 0.01 * np.arange(16).reshape(4, 4) / 16  # the diagonal stays the row maximum
    m = ej.retrieval_metrics(sim, [0, 1, 2, 3])
    assert m == {"r@1": 1.0, "r@5": 1.0, "r@10": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}


def test_known_permutation_gives_known_mrr_and_ndcg():
    # 12 candidates; the positives of the four queries sit at ranks 1, 2, 3 and 11.
    ranks = [1, 2, 3, 11]
    sim = np.zeros((4, 12))
    positives = []
    for q, rank in enumerate(ranks):
        order = np.linspace(1.0, 0.0, 12)  # candidate c gets the c-th best score
        sim[q] = order
        positives.append(rank - 1)
    m = ej.retrieval_metrics(sim, positives)
    assert m["r@1"] == 0.25 and m["r@5"] == 0.75 and m["r@10"] == 0.75
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4) + 0) / 4)


def test_ties_count_against_the_query():
    sim = np.array([[0.5, 0.5, 0.1]])
    assert ej.ranks_of_positives(sim, [0]).tolist() == [2]
    assert ej.retrieval_metrics(sim, [0])["r@1"] == 0.0


def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    return path


GOOD = {"task": "text_pair", "query": "con mèo", "positive": "the cat", "score": 0.9}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"task": "ocr", "query": ', "malformed JSON"),
        ({"task": "ocrr", "query": "a", "positive": "b"}, "unknown task 'ocrr'"),
        ({"task": "text_pair", "query": "a", "positive": "b"}, "missing field 'score' (required for text_pair)"),
        ({"task": "text_pair", "query": "a", "positive": "b", "score": 1.5}, "outside [0, 1]"),
        (
            {"task": "ocr", "query": {"text": "q", "images": ["nope.png"]}, "positive": "b"},
            "query: missing image 'nope.png'",
        ),
        ({"task": "instr", "positive": "b"}, "missing field 'query'"),
    ],
)
def test_malformed_line_is_reported_with_its_line_number(tmp_path, bad, reason):
    path = _write(tmp_path / "eval.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(ej.JsonlError) as info:
        ej.read_jsonl(path)
    assert f"{path}:3: " in str(info.value) and reason in str(info.value)
    rows, skipped = ej.read_jsonl(path, skip_bad_lines=True)
    assert len(rows) == 3 and [n for n, _ in skipped] == [3]


def test_cli_reports_bad_line_and_exits_2(tmp_path, capsys):
    path = _write(tmp_path / "eval.jsonl", [GOOD, "not json"])
    assert ej.main(["--model", str(tmp_path / "unused"), "--data", str(path)]) == 2
    assert f"{path}:2: malformed JSON" in capsys.readouterr().err


def test_wrong_model_path_is_one_line_naming_it(tmp_path, capsys):
    path = _write(tmp_path / "eval.jsonl", [GOOD])
    (tmp_path / "empty").mkdir()
    for model, says in ((tmp_path / "nothere", "no such folder"), (tmp_path / "empty", "not a checkpoint")):
        assert ej.main(["--model", str(model), "--data", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --model {model}: {says}") and err.count("\n") == 1, err


def test_end_to_end_equals_independent_computation(tiny_checkpoint, st_model, tmp_path):
    for i in range(3):
        make_image(56, 56, seed=i + 3).save(tmp_path / f"p{i}.png")
    lines = [
        {"task": "text_pair", "query": "con mèo đỏ", "positive": "the red cat", "score": 0.95},
        {"task": "text_pair", "query": "trời mưa", "positive": "it is raining", "score": 0.8},
        {"task": "text_pair", "query": "xe buýt", "positive": "giá vàng", "score": 0.1},
        {"task": "<ocr>", "query": {"text": "Chữ gì?", "images": ["p0.png"]}, "positive": "đỏ", "negative": "xanh"},
        {"task": "ocr", "query": {"text": "Số mấy?", "images": ["p1.png", "p2.png"]}, "positive": "ba"},
        {
            "task": "instr",
            "query": {"text": "Tóm tắt", "turns": [{"role": "user", "content": "Chào"}]},
            "positive": "Ok",
        },
    ]
    data = _write(tmp_path / "eval.jsonl", lines)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_checkpoint), "--data", str(data), "--output", str(out), "--batch-size", "2"]
    assert ej.main([*argv, "--no-progress"]) == 0
    report = json.loads((out / "jsonl_eval.json").read_text(encoding="utf-8"))
    assert (out / "jsonl_eval.md").read_text().startswith("| Task |")
    assert list(report["tasks"]) == ["text_pair", "instr", "ocr"]

    # text_pair: both sides prefixed; queries are the two rows with score >= 0.5 among 3 candidates.
    tp = TASKS["text_pair"].prefix
    q = st_model.encode([x["query"] for x in lines[:3]], prompt=tp, normalize_embeddings=True)
    d = st_model.encode([x["positive"] for x in lines[:3]], prompt=tp, normalize_embeddings=True)
    cos = (q * d).sum(axis=1)
    got = report["tasks"]["text_pair"]
    assert got["queries"] == 2 and got["candidates"] == 3
    assert got["spearman"] == pytest.approx(ej.spearman(cos, [0.95, 0.8, 0.1]), abs=1e-6)
    assert got["pearson"] == pytest.approx(ej.pearson(cos, [0.95, 0.8, 0.1]), abs=1e-5)
    sim = q[:2] @ d.T
    assert got["mrr@10"] == pytest.approx(ej.retrieval_metrics(sim, [0, 1])["mrr@10"], abs=1e-6)

    # ocr: queries prefixed, 3 unprefixed candidates (two positives + the explicit negative).
    from PIL import Image

    ocr = TASKS["ocr"].prefix
    imgs = [Image.open(tmp_path / f"p{i}.png").convert("RGB") for i in range(3)]
    q = st_model.encode(
        [{"text": "Chữ gì?", "image": [imgs[0]]}, {"text": "Số mấy?", "image": [imgs[1], imgs[2]]}],
        prompt=ocr,
        normalize_embeddings=True,
    )
    d = st_model.encode(["đỏ", "xanh", "ba"], normalize_embeddings=True)
    expected = ej.retrieval_metrics(q @ d.T, [0, 2])
    got = report["tasks"]["ocr"]
    assert got["candidates"] == 3
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6)
    assert report["mean_r@1"] == pytest.approx(np.mean([report["tasks"][t]["r@1"] for t in report["tasks"]]))
