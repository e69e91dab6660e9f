"""eval/evaluate_jsonl.py and training's evaluator: one implementation. Ties count against the query, bad lines are
reported with their number, an end-to-end run on the tiny model equals an independent computation from the same
embeddings, and planted ties give the same R@1 through both entry points."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sentence_transformers.util import cos_sim

from configuration_vipyloqwen import TASKS
from eval import evaluate_jsonl as ej
from tests.conftest import make_image
from vipyloqwen_tools.train.evaluation import HeldOutRetrieval, ViPyloQwenEvaluator


def reference_metrics(similarity: np.ndarray, positives: list[int]) -> dict[str, float]:
    """An independent computation of the reported retrieval metrics (not ST's code): the rank of each query's
    positive counts every candidate scoring at least as high (ties against the query)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    positive = similarity[np.arange(len(positives)), positives]
    ranks = (similarity >= positive[:, None]).sum(axis=1)
    metrics = {f"r@{k}": float(np.mean(ranks <= k)) for k in (1, 5, 10)}
    metrics["mrr@10"] = float(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))
    metrics["ndcg@10"] = float(np.mean(np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)))
    return metrics


def test_the_reference_is_right_on_hand_checked_rankings():
    # 12 candidates; the positives of the four queries sit at ranks 1, 2, 3 and 11.
    sim = np.tile(np.linspace(1.0, 0.0, 12), (4, 1))
    m = reference_metrics(sim, [0, 1, 2, 10])
    assert m["r@1"] == 0.25 and m["r@5"] == 0.75 and m["r@10"] == 0.75
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4) + 0) / 4)
    assert reference_metrics(np.array([[0.5, 0.5, 0.1]]), [0])["r@1"] == 0.0  # a tie counts against the query


def test_ties_count_against_the_query_in_the_score():
    retrieval = HeldOutRetrieval(["q1", "q2", "q3"], ["a", "b", "c"], positives=[0, 2, 1])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])  # a and b score alike for every query
    plain = cos_sim(queries, candidates)
    scores = retrieval.score(queries, candidates)
    below = torch.tensor(float("-inf"))
    # q1's positive a ties b, q3's positive b ties a: each lowered one float step; q2's positive c ties nothing.
    assert scores[0, 0] == torch.nextafter(plain[0, 0], below) and scores[2, 1] == torch.nextafter(plain[2, 1], below)
    changed = torch.zeros_like(plain, dtype=torch.bool)
    changed[0, 0] = changed[2, 1] = True
    assert torch.equal(scores[~changed], plain[~changed])


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
    assert got["spearman"] == pytest.approx(spearmanr(cos, [0.95, 0.8, 0.1]).statistic, abs=1e-6)
    assert got["pearson"] == pytest.approx(pearsonr(cos, [0.95, 0.8, 0.1]).statistic, abs=1e-5)
    sim = q[:2] @ d.T
    assert got["mrr@10"] == pytest.approx(reference_metrics(sim, [0, 1])["mrr@10"], abs=1e-6)

    # ocr: queries prefixed, 3 unprefixed candidates (two positives + the explicit negative).
    ocr = TASKS["ocr"].prefix
    paths = [str(tmp_path / f"p{i}.png") for i in range(3)]
    q = st_model.encode(
        [{"text": "Chữ gì?", "image": [paths[0]]}, {"text": "Số mấy?", "image": [paths[1], paths[2]]}],
        prompt=ocr,
        normalize_embeddings=True,
    )
    d = st_model.encode(["đỏ", "xanh", "ba"], normalize_embeddings=True)
    expected = reference_metrics(q @ d.T, [0, 2])
    got = report["tasks"]["ocr"]
    assert got["candidates"] == 3
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6)
    assert report["mean_r@1"] == pytest.approx(np.mean([report["tasks"][t]["r@1"] for t in report["tasks"]]))


def test_planted_ties_give_the_same_r1_through_training_and_eval(tiny_checkpoint, st_model, tmp_path):
    """Two candidates that differ as text but tokenise alike (the whitespace after a typed prefix is dropped) embed
    identically: the tie counts against the query through training's evaluator and through evaluate_jsonl.py alike
    (before, training's argmax gave the first-listed candidate the hit and evaluate_jsonl the miss)."""
    for i in range(2):
        make_image(56, 56, seed=i + 11).save(tmp_path / f"q{i}.png")
    tied = ["<vqa_single> có", "<vqa_single>    có"]
    lines = [
        # vqa_single: the only two candidates are the tie (each row's positive; a row's negative may not be its own
        # positive's input, the validator refuses that), so the tie decides R@1.
        {"task": "vqa_single", "query": {"text": "Có xe không?", "images": ["q0.png"]}, "positive": tied[0]},
        {"task": "vqa_single", "query": {"text": "Có người không?", "images": ["q1.png"]}, "positive": tied[1]},
        {"task": "text_pair", "query": "con mèo đỏ", "positive": "the red cat", "score": 0.95},
        {"task": "text_pair", "query": "trời mưa", "positive": "it is raining", "score": 0.8},
        {"task": "instr", "query": "Tóm tắt", "positive": "Ok"},
        {"task": "instr", "query": "Dịch", "positive": "Ok   "},
    ]  # fmt: skip
    data = _write(tmp_path / "eval.jsonl", lines)
    embeddings = st_model.encode(tied, convert_to_tensor=True)
    assert torch.equal(embeddings[0], embeddings[1]), "the planted tie is not a tie"

    training = ViPyloQwenEvaluator.from_file(data, batch_size=4).compute_metrics(st_model)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_checkpoint), "--data", str(data), "--output", str(out), "--batch-size", "4"]
    assert ej.main([*argv, "--no-progress"]) == 0
    report = json.loads((out / "jsonl_eval.json").read_text(encoding="utf-8"))
    assert training["vqa_single_r@1"] == report["tasks"]["vqa_single"]["r@1"] == 0.0
    for task in report["tasks"]:
        assert training[f"{task}_r@1"] == report["tasks"][task]["r@1"], task
    assert training["mean_r@1"] == pytest.approx(report["mean_r@1"], abs=1e-12)
