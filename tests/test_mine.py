"""The miner (vipyloqwen_tools/mine, scripts/mine.py).

Fast: the selection rules against a brute-force reading of them; the output line; the ANN's recall and exact scores.
With the tiny model (in this process): planted duplicates of a positive (same text after normalisation, the same
image under another name) are never returned, nor the positive of a row with the same query; nothing at or above
the relative-margin line is returned; the K returned are the K best allowed candidates by the model's ``encode``
(brute force); bad lines are rejects with their line numbers. Slow (subprocesses): ``train_st.py`` trains 3 steps on
the output; ``torchrun`` with 2 processes writes the file 1 process writes; kill -9 then a rerun mines no row twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, child_env, free_port, make_image, write_jsonl, write_tiny_run_yaml

from vipyloqwen_tools.data.identity import side_key
from vipyloqwen_tools.mine import MineOptions, mine
from vipyloqwen_tools.mine.run import with_negatives
from vipyloqwen_tools.mine.search import AnnPool
from vipyloqwen_tools.mine.select import choose

COLOURS = ["đỏ", "xanh", "vàng", "tím", "cam", "hồng", "nâu", "đen", "trắng", "xám", "lục", "lam"]


# --------------------------------------------------------------------------- selection rules
def _brute_force(scores, excluded, positive, options):
    """The module docstring's rules, one row at a time, in plain Python."""
    chosen = []
    for row, values in enumerate(scores.tolist()):
        ranked = sorted((v, i) for i, v in enumerate(values) if not excluded[row, i] and v != float("-inf"))[::-1]
        if options.range_max is not None:
            ranked = ranked[: options.range_max]
        s_p = float(positive[row])
        kept = [
            (v, i)
            for v, i in ranked
            if (options.relative_margin is None or v < s_p - abs(s_p) * options.relative_margin)
            and (options.absolute_margin is None or v < s_p - options.absolute_margin)
        ]
        chosen.append([i for _, i in kept[options.range_min : options.range_min + options.num_negatives]])
    return chosen


@pytest.mark.parametrize(
    "options",
    [
        MineOptions(num_negatives=4),
        MineOptions(num_negatives=3, relative_margin=0.05),
        MineOptions(num_negatives=2, absolute_margin=0.1, range_min=2),
        MineOptions(num_negatives=5, relative_margin=0.2, range_max=12),
    ],
)
def test_choose_follows_the_rules(options):
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 60, generator=generator) * 2 - 1
    excluded = torch.rand(20, 60, generator=generator) < 0.1
    positive = torch.rand(20, generator=generator)
    ids = torch.arange(60).expand(20, -1)
    chosen = choose(scores, ids, excluded, positive, list(range(20)), options)
    expected = _brute_force(scores, excluded, positive, options)
    for row in range(20):
        got = [i for i in chosen.ids[row].tolist() if i >= 0]
        assert got == expected[row]
        assert chosen.scores[row, : len(got)].tolist() == [scores[row, i].item() for i in got]  # hardest first


def test_random_sampling_is_seeded_and_sorted():
    scores = torch.linspace(1, 0, 30).expand(4, -1)
    options = MineOptions(num_negatives=3, sampling_strategy="random", seed=7)
    args = (scores, torch.arange(30).expand(4, -1), torch.zeros(4, 30, dtype=torch.bool), torch.ones(4), [1, 2, 3, 4])
    first, again = choose(*args, options), choose(*args, options)
    assert torch.equal(first.ids, again.ids)
    assert all(row == sorted(row) for row in first.ids.tolist())  # hardest (lowest id here) first


def test_the_output_line_keeps_the_input_as_it_was():
    raw = '{"task":  "instr", "query": "q", "positive": "p"}'
    assert with_negatives(raw, ["a", {"text": "b"}], [0.5, 0.25]) == (
        '{"task":  "instr", "query": "q", "positive": "p", "negatives": ["a", {"text": "b"}], '
        '"negative_scores": [0.5, 0.25]}'
    )
    mined_again = with_negatives(with_negatives(raw, ["a"], [0.5]), ["c"], [0.1])
    assert json.loads(mined_again)["negatives"] == ["c"] and json.loads(mined_again)["negative_scores"] == [0.1]


@pytest.mark.slow
def test_the_ann_recall_and_exact_scores(tmp_path):
    generator = np.random.default_rng(0)
    centres = generator.standard_normal((40, 32)).astype(np.float32)  # clustered, as embeddings of topics are
    vectors = centres[generator.integers(0, 40, 3000)] + 0.5 * generator.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.2 * generator.standard_normal((50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, ids = AnnPool.build(vectors, tmp_path / "ann").search(queries, depth=10)
    exact = torch.from_numpy(queries @ vectors.T).topk(10, dim=1).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), exact.tolist(), strict=True)])
    assert recall >= 0.8, recall
    found = ids >= 0
    assert torch.allclose(scores[found], torch.from_numpy(queries @ vectors.T).gather(1, ids.clamp(min=0))[found])


# --------------------------------------------------------------------------- with the tiny model
def _mine_file(root: Path) -> Path:
    """instr rows (text) and ocr rows (query images), with planted duplicates of row 1's positive and a query
    shared by two rows."""
    (root / "img").mkdir(exist_ok=True)
    for i in range(8):
        make_image(seed=i).save(root / "img" / f"q{i}.png")
    make_image(seed=40).save(root / "img" / "doc.png")
    shutil.copy(root / "img" / "doc.png", root / "img" / "doc copy.png")  # the same image under another name
    rows = [{"task": "instr", "query": f"Màu số {i}?", "positive": f"màu {c}"} for i, c in enumerate(COLOURS)]
    rows[1]["positive"] = "Có"
    rows.append({"task": "instr", "query": "Có phải không?", "positive": "Co\u0301"})  # NFD "Có": row 1's answer
    rows.append({"task": "instr", "query": "Màu số 2?", "positive": "màu thứ hai"})  # row 3's query, another answer
    rows.append({"task": "instr", "query": "Màu số 5?", "positive": "màu sai", "negative": "màu cam"})
    for i in range(8):
        query = {"text": f"Chữ {i}?", "images": [f"img/q{i}.png"]}
        rows.append({"task": "ocr", "query": query, "positive": f"chữ {COLOURS[i]}"})
    rows[-1]["positive"] = {"text": "ảnh", "images": ["img/doc.png"]}
    rows.append({"task": "ocr", "query": {"text": "Chữ?", "images": ["img/q0.png"]}, "positive": {"text": "ảnh",
                 "images": ["img/doc copy.png"]}})  # fmt: skip
    rows.append("{not json")
    rows.append({"task": "ocr", "query": "no image", "positive": "x"})
    return write_jsonl(root / "train.jsonl", rows)


def _parse(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def _side(value, root: Path) -> dict:
    value = {"text": value} if isinstance(value, str) else value
    return {"text": value.get("text"), "images": [str(root / p) for p in value.get("images") or []]}


@pytest.fixture(scope="module")
def mined(auto_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("mine")
    data = _mine_file(root)
    options = MineOptions(num_negatives=4, relative_margin=0.05)
    stats = mine(auto_model, data, root / "out.jsonl", options, batch_size=8, window=5, log=lambda m: None)
    return root, data, stats, options


def test_every_good_line_once_and_rejects_with_line_numbers(mined):
    root, data, stats, _ = mined
    lines = data.read_text(encoding="utf-8").splitlines()
    out = _parse(root / "out.jsonl")
    assert len(out) == stats.rows == len(lines) - 2
    assert stats.rows == stats.full + stats.short + stats.none + stats.not_positive and stats.this_run == stats.rows
    for row, line in zip(out, lines[:-2], strict=True):  # the last two lines are the bad ones
        original = json.loads(line)
        assert {k: v for k, v in row.items() if k not in ("negatives", "negative_scores")} == original
    rejects = [json.loads(line) for line in (root / "out.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rejects] == [len(lines) - 1, len(lines)]
    assert "malformed JSON" in rejects[0]["reason"] and "needs 1-5 images" in rejects[1]["reason"]
    assert not (root / "out.jsonl.work").exists()


def test_no_correct_answer_is_ever_returned(mined):
    root, _, _, _ = mined
    out = _parse(root / "out.jsonl")
    answers: dict[tuple, set] = {}
    for row in out:
        query = (row["task"], side_key(_side(row["query"], root)))
        answers.setdefault(query, set()).add(side_key(_side(row["positive"], root)))
    returned = 0
    for row in out:
        correct = answers[(row["task"], side_key(_side(row["query"], root)))]
        for negative in row.get("negatives", []):
            assert side_key(_side(negative, root)) not in correct, (row["query"], negative)
            returned += 1
    assert returned > 20
    # the planted duplicates: "Có" (NFD), the image copy, and the other answer of the shared query
    first = out[1]["negatives"]
    assert "Co\u0301" not in first and "Có" not in first
    assert all(negative != "màu thứ hai" for negative in out[2].get("negatives", []))
    image_rows = [row for row in out if isinstance(row["positive"], dict)]
    for row in image_rows:
        assert all(not isinstance(n, dict) or "images" not in n for n in row.get("negatives", []))
    assert out[14]["negative"] == "màu cam" and "màu cam" not in out[14].get("negatives", [])  # its own negative


def test_returned_negatives_are_the_best_allowed_by_encode(mined, auto_model):
    """Brute force: every query and every document through the model's encode, then the rules by hand."""
    root, _, _, options = mined
    out = _parse(root / "out.jsonl")
    for task in ("instr", "ocr"):
        rows = [row for row in out if row["task"] == task]
        documents: dict[int, tuple] = {}
        for row in rows:
            for value in [row["positive"], *([row["negative"]] if "negative" in row else [])]:
                side = _side(value, root)
                documents.setdefault(side_key(side), (value, side))
        keys = list(documents)
        sides = [documents[k][1] for k in keys]
        doc_vectors = auto_model.encode(text=[s["text"] or "" for s in sides], images=[s["images"] or None for s in
                                        sides], num_workers=0)  # fmt: skip
        answers: dict[int, set] = {}
        for row in rows:
            answers.setdefault(side_key(_side(row["query"], root)), set()).add(side_key(_side(row["positive"], root)))
        for row in rows:
            query = _side(row["query"], root)
            images = query["images"] or None  # one item: its list of images
            vector = auto_model.encode(text=query["text"], images=images, task=task, num_workers=0)[0]
            scores = doc_vectors @ vector
            correct = answers[side_key(query)]
            s_p = min(float(scores[keys.index(k)]) for k in correct)
            line = s_p - abs(s_p) * options.relative_margin
            own = {side_key(_side(row["negative"], root))} if "negative" in row else set()
            allowed = sorted(
                ((float(scores[i]), k) for i, k in enumerate(keys) if k not in correct | own and scores[i] < line),
                reverse=True,
            )
            expected = allowed[: options.num_negatives]
            got = row.get("negatives", [])
            assert len(got) == len(expected)
            got_scores = row.get("negative_scores", [])
            assert all(score < line + 1e-5 for score in got_scores)  # nothing at or above the margin line
            for (score, _), returned in zip(expected, got_scores, strict=True):
                assert returned == pytest.approx(score, abs=1e-5)
            got_keys = {side_key(_side(n, root)) for n in got}
            strict = {k for s, k in expected if s > expected[-1][0] + 1e-5} if expected else set()
            assert strict <= got_keys  # the same K, up to ties at the K-th score


def test_the_ann_path_searches_deeper_until_the_filters_leave_enough(mined, auto_model, tmp_path):
    """The ANN retrieves ST's default depth; rows the margin leaves short are searched again deeper (up to the pool),
    so on this small pool the ANN run returns what the exact run returns."""
    root, data, stats, options = mined
    ann = mine(auto_model, data, root / "ann.jsonl", options, batch_size=8, window=5, ann_min_rows=1,
               work_dir=tmp_path / "work", log=lambda m: None)  # fmt: skip
    assert set(ann.search.values()) == {"ann"} and (ann.full, ann.short, ann.none) == (stats.full, stats.short,
                                                                                      stats.none)  # fmt: skip
    for exact_row, ann_row in zip(_parse(root / "out.jsonl"), _parse(root / "ann.jsonl"), strict=True):
        assert sorted(map(json.dumps, exact_row.get("negatives", []))) == sorted(
            map(json.dumps, ann_row.get("negatives", []))
        )
        assert ann_row.get("negative_scores", []) == pytest.approx(exact_row.get("negative_scores", []), abs=1e-5)


def test_the_miner_refuses_a_work_folder_of_other_settings(mined, auto_model, tmp_path):
    from vipyloqwen_tools.mine import MineError

    root, data, _, _ = mined
    work = tmp_path / "work"
    work.mkdir()
    (work / "state.json").write_text(json.dumps({"model": "another"}))
    with pytest.raises(MineError, match="other settings"):
        mine(auto_model, data, tmp_path / "o.jsonl", MineOptions(num_negatives=2), work_dir=work, log=lambda m: None)


# --------------------------------------------------------------------------- subprocesses
def _cli(tiny_checkpoint, data: Path, out: Path, *extra: str) -> list[str]:
    script = str(REPO / "scripts" / "mine.py")
    options = ["--num-negatives", "3", "--relative-margin", "0.05", "--batch-size", "8"]
    return [sys.executable, script, "--model", str(tiny_checkpoint), "--data", str(data), "--out", str(out), *options,
            *extra]  # fmt: skip


@pytest.mark.slow
def test_train_st_trains_three_steps_on_the_output(mined, tmp_path):
    root, _, _, _ = mined
    config = write_tiny_run_yaml(
        tmp_path / "run.yaml", tmp_path / "run", root / "out.jsonl", None, max_steps=3,
        per_device_train_batch_size=4, max_length=64, max_image_tokens=16, save_steps=100,
    )  # fmt: skip
    command = [sys.executable, str(REPO / "train_st.py"), "--config", str(config)]
    env = child_env(HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert max(entry.get("step", 0) for entry in history) == 3


@pytest.mark.slow
def test_two_processes_write_the_file_one_process_writes(tiny_checkpoint, tmp_path):
    data = _mine_file(tmp_path)
    env = child_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    one = subprocess.run(_cli(tiny_checkpoint, data, tmp_path / "one.jsonl", "--window", "4"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port())]  # fmt: skip
    two = subprocess.run(torchrun + _cli(tiny_checkpoint, data, tmp_path / "two.jsonl", "--window", "4")[1:], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 process(es)" in two.stderr
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "two.rejects.jsonl").read_bytes() == (tmp_path / "one.rejects.jsonl").read_bytes()


@pytest.mark.slow
def test_kill_9_then_rerun_mines_no_row_twice(tiny_checkpoint, tmp_path):
    rows = [{"task": "instr", "query": f"câu hỏi {i}", "positive": f"trả lời {i % 97}"} for i in range(400)]
    data = write_jsonl(tmp_path / "big.jsonl", rows)
    out, work = tmp_path / "out.jsonl", tmp_path / "work"
    command = _cli(tiny_checkpoint, data, out, "--window", "1", "--work-dir", str(work), "--stats")
    env = child_env(HF_HUB_OFFLINE="1")
    process = subprocess.Popen(command + [str(tmp_path / "first.json")], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    parts = work / "parts"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and len(list(parts.glob("w*.jsonl")) if parts.is_dir() else []) < 5:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = {path.name for path in parts.glob("w*.jsonl")}
    before = {name: (parts / name).read_bytes() for name in done}
    assert 5 <= len(done) < 400 and not out.exists()
    result = subprocess.run(command + [str(tmp_path / "second.json")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((tmp_path / "second.json").read_text())
    assert stats["already"] == len(done) and stats["this_run"] == 400 - len(done)  # no row mined twice
    out_lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["query"] for line in out_lines] == [row["query"] for row in rows]
    for name, content in before.items():  # the windows mined before the kill are in the output as they were
        number = int(name[1:7])
        assert out_lines[number] + "\n" == content.decode()
