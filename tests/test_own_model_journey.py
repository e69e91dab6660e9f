"""Your own model, from JSONL to a verified release, as a new user runs it (docs/training.md "Train on your own
data"): ~30 own Vietnamese rows with drawn-text images, the tiny model, the CLI in a pipe (not a terminal).

One training run at 256 text / 16 image tokens shows: a progress line with step/total, elapsed, ETA and rate per log,
the plan at the start, no carriage returns; evaluation on rows held out of the user's file (never the bundled sample
eval file); final/ and every checkpoint keep the base model's limits (ST max_seq_length included) while
train_config.json records the training limits. The release of that run under the user's repo id gets a card written
for it that the release check verifies; a checkpoint with reduced limits is refused.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import child_env, write_jsonl
from PIL import Image, ImageDraw

from vipyloqwen_tools.checkpoint.limits import InferenceLimits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BASE_LIMITS = InferenceLimits(max_text_tokens=8192, max_image_tokens=64, min_image_tokens=4)
REPO_ID = "me/bien-so"
STREETS = ["Lê Lợi", "Hai Bà Trưng", "Trần Hưng Đạo", "Nguyễn Huệ", "Lý Thường Kiệt", "Điện Biên Phủ"]


def own_rows(root: Path) -> list[dict]:
    """12 text pairs and 12 sign photos with drawn text (the user's own data, images next to the file)."""
    (root / "imgs").mkdir(parents=True)  # makes root too
    rows = []
    for i in range(12):
        street = STREETS[i % len(STREETS)]
        rows.append(
            {"task": "text_pair", "query": f"Đường {street} số {i}", "positive": f"số {i} {street}", "score": 0.9}
        )
        image = Image.new("RGB", (112, 56), (240, 240, 230))
        ImageDraw.Draw(image).text((6, 20), f"{i} {street[:8]}", fill=(10, 10, 10))
        image.save(root / "imgs" / f"bien_{i}.png")
        rows.append(
            {"task": "ocr", "query": {"text": "Biển ghi gì?", "images": [f"imgs/bien_{i}.png"]}, "positive": street}
        )
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    data = write_jsonl(root / "data" / "mine.jsonl", own_rows(root / "data"))
    out = root / "runs" / "mine"
    command = [
        sys.executable, str(ROOT / "train_st.py"), "--config", str(ROOT / "configs" / "tiny-cpu.yaml"),
        "--train-file", str(data), "--eval-split", "0.25", "--output-dir", str(out), "--max-steps", "4",
        "--num-train-epochs", "1", "--per-device-train-batch-size", "4", "--logging-steps", "1", "--save-steps", "2",
        "--eval-steps", "2", "--save-total-limit", "3",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=child_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return out, done.stdout + done.stderr


def test_progress_lines_in_a_log_file(run):
    _, log = run
    assert "\r" not in log  # no bar redrawn in place: neither ours nor the libraries' (loading, writing weights)
    assert "training: 4 optimizer steps = 1 epoch(s) x 4 steps; a step = 4 rows per device x 1 accumulation" in log
    lines = [line for line in log.splitlines() if line.startswith("step ")]
    for step in range(1, 5):
        mine = [line for line in lines if line.startswith(f"step {step}/4 ")]
        assert mine and all(("it/s]" in line or "s/it]" in line) and "<" in line for line in mine), lines
    assert any("'loss'" in line for line in lines) and any("'eval_mean_r@1'" in line for line in lines)


def test_evaluation_on_rows_held_out_of_the_users_file(run):
    out, log = run
    assert "evaluation: 6 rows held out of" in log and "(--eval-split 0.25) (text_pair 3, ocr 3)" in log
    assert "data/sample/eval.jsonl" not in log and "eval_vqa_multi" not in log  # never the bundled sample eval
    record = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert record["eval_file"] is None and record["evaluation"]["kind"] == "eval_split"
    assert record["evaluation"]["rows"] == {"text_pair": 3, "ocr": 3}
    assert record["rows"]["per_dataset"] == {"ocr": 9, "text_pair": 9}
    assert record["rows"]["rows_in"] == 24 and record["rows"]["held_out_for_eval"] == 6
    assert record["rows"]["trained"] == 18


def test_every_export_keeps_the_base_limits_and_the_record_the_training_ones(run):
    from sentence_transformers import SentenceTransformer

    out, _ = run
    record = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert record["limits"] == {
        "inference": BASE_LIMITS.as_dict(),
        "training": {"max_text_tokens": 256, "max_image_tokens": 16, "min_image_tokens": 4},
    }
    assert InferenceLimits.of_folder(out / "init-tiny") == BASE_LIMITS  # the base the run started from
    for folder in (out / "checkpoint-2", out / "checkpoint-4", out / "final"):
        assert InferenceLimits.of_folder(folder) == BASE_LIMITS, folder
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert tokenizer["model_max_length"] == 8192
    model = SentenceTransformer(str(out / "final"), trust_remote_code=True, device="cpu")
    assert model.max_seq_length == 8192 and model[0].processor.max_image_tokens == 64


def _results(root: Path, name: str) -> Path:
    """An MTEB results folder as ``run_mteb.py --name`` files it, one task run on stand-in data."""
    folder = root / "results" / name.replace("/", "__") / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "model_meta.json").write_text(json.dumps({"name": name, "revision": "0123abcd"}))
    for task, score, revision in (("KTVICT2IRetrieval", 0.4, "local"), ("STSBenchmark-VN", 0.6, "abc")):
        result = {"task_name": task, "dataset_revision": revision, "scores": {"test": [{"main_score": score}]}}
        (folder / f"{task}.json").write_text(json.dumps(result))
    return root


def test_release_card_written_for_the_model_and_verified(run, tmp_path, capsys):
    from scripts import release

    out, _ = run
    results = _results(tmp_path / "mteb", REPO_ID)
    argv = ["--checkpoint", str(out / "final"), "--repo-id", REPO_ID, "--base-model", "erax-ai/viPyloQwen"]
    argv += ["--eval-results", str(results), "--dry-run", str(tmp_path / "release"), "--report", str(tmp_path / "r")]
    assert release.main(argv) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "model card: fine-tune (written for me/bien-so)" in printed and "verification passed" in printed
    card = (tmp_path / "release" / "README.md").read_text(encoding="utf-8")
    assert f'SentenceTransformer("{REPO_ID}", trust_remote_code=True)' in card
    assert "| embedding size | 32 (L2-normalised; cosine similarity) |" in card
    assert (
        "| text tokens per item | 8,192 (longer text is truncated) |" in card
        and "| image tokens per image | 4-64" in card
    )
    assert "| `text_pair` | 9 |" in card and "| `ocr` | 9 |" in card and "| all | 18 |" in card
    assert "- Data: `mine.jsonl`, 24 rows: 18 trained, 6 held out for evaluation, 0 rejected by the validator." in card
    assert "Trained at 256 text tokens per item and 16 image tokens per image" in card
    assert f"| Task | Type | {REPO_ID} |" in card and "| STSBenchmark-VN | STS | 60.00 |" in card
    assert re.search(r"\| KTVICT2IRetrieval \| \w+ \| 40\.00\* \|", card)  # * run on stand-in data
    assert "| All (mean over tasks) | 2 | 50.00 |" in card and "* stand-in data" in card
    for claim in ("11 million", "1024-dimensional", "@misc", "TRAIN_11M", str(out)):
        assert claim not in card, claim
    assert json.loads((tmp_path / "r").read_text())["ok"] is True


def test_release_refuses_a_checkpoint_with_reduced_limits(run, tmp_path, capsys):
    """A checkpoint exported at its training limits (as before): the release check names them and the flag."""
    from scripts import release

    out, _ = run
    reduced = out / "checkpoint-99"  # a checkpoint of the run: its train_config.json is found in the run folder
    shutil.copytree(out / "final", reduced)
    for name, key in (("processor_config.json", "max_text_tokens"), ("tokenizer_config.json", "model_max_length")):
        data = json.loads((reduced / name).read_text(encoding="utf-8"))
        (reduced / name).write_text(json.dumps({**data, key: 256}), encoding="utf-8")
    argv = ["--checkpoint", str(reduced), "--repo-id", REPO_ID, "--base-model", "erax-ai/viPyloQwen"]
    assert release.main([*argv, "--dry-run", str(tmp_path / "release")]) == 1
    err = capsys.readouterr().err
    assert "inference limits below the base model's: max_text_tokens 256 < 8192" in err
    assert "pass --allow-reduced-limits if this is intended" in err
