"""Broken data at batch time: an image truncated or deleted after the data was validated and cached.

Each test builds the validate-once cache first (as ``train_st.py validate --cache-dir`` or an earlier run would),
then breaks an image for real, then trains the tiny model: the run never crashes in the dataloader or in the
trainer's set-up (the broken row is among the first rows of its task, which Sentence-Transformers' model card reads
when the trainer is created). With --skip-bad-rows the row is dropped from its batch, written to the rejects file
and counted; without it the run stops with an error naming the file, the line and the image, and a resume does not
crash-loop: the cache learned the row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_image, tiny_run_config, tiny_run_settings, write_jsonl
from PIL import Image

from vipyloqwen_tools.data import DataError, prepare_task_datasets
from vipyloqwen_tools.data.learned import recall
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.run import train

PER_TASK, BATCH = 8, 8
BROKEN = 2  # the ocr row whose image breaks (its index in the ocr dataset)


def write_data(root: Path) -> tuple[Path, int]:
    """instr / text_pair / ocr rows, 8 each, interleaved; returns the file and the line of ocr row BROKEN."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(PER_TASK):
        lines.append({"task": "instr", "query": f"Tìm câu số {i}", "positive": f"câu {i}"})
        lines.append({"task": "text_pair", "query": f"con mèo {i}", "positive": f"a cat {i}", "score": 0.9})
        make_image(56, 56, seed=i).save(root / "img" / f"ocr{i}.png")
        lines.append({"task": "ocr", "query": {"text": "Chữ gì?", "images": [f"img/ocr{i}.png"]}, "positive": f"{i}"})
    return write_jsonl(root / "train.jsonl", lines), 3 * BROKEN + 3


def config(root: Path, train_file: Path, **overrides) -> TrainConfig:
    settings = dict(
        max_steps=6, per_device_train_batch_size=BATCH, max_length=32, max_image_tokens=16, save_steps=1,
        save_total_limit=None, seed=3, data_num_proc=1,
    )  # fmt: skip
    return tiny_run_config(root / "out", train_file, **{**settings, **overrides})


def cache_then_break(root: Path, how: str) -> tuple[Path, int, Path]:
    train_file, line = write_data(root)
    _, report = prepare_task_datasets(train_file, root / "out" / ".data-cache", num_proc=1)
    assert not report.bad  # validated and cached while the image was fine
    image = root / "img" / f"ocr{BROKEN}.png"
    if how == "truncate":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    elif how == "aspect":  # replaced by a strip Qwen2-VL cannot resize (aspect ratio 250): it reads, it is unusable
        Image.new("RGB", (5000, 20), (250, 250, 250)).save(image)
    else:
        image.unlink()
    return train_file, line, image


def rejects(root: Path) -> list[dict]:
    path = root / "out" / "rejects-train.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_skip_bad_rows_drops_the_row_from_its_batch_and_counts_it(tmp_path: Path, caplog):
    train_file, line, image = cache_then_break(tmp_path, "delete")
    with caplog.at_level("INFO", logger="vipyloqwen.train"):
        result = train(config(tmp_path, train_file, skip_bad_rows=True, save_steps=6, trace_dir=str(tmp_path / "tr")))
    assert result["global_step"] == 6 and (tmp_path / "out" / "final" / "model.safetensors").is_file()
    (reject,) = rejects(tmp_path)
    assert reject["file"] == str(train_file) and reject["line"] == line and str(image) in reject["reason"]
    assert reject["raw"] == train_file.read_text(encoding="utf-8").splitlines()[line - 1]
    assert result["rows"] == {
        "rows_in": 24, "trained": 23, "held_out_for_eval": 0, "rejected": 1, "rejected_at_validation": 0,
        "rejected_at_batch_time": 1,
    }  # fmt: skip
    assert "rows in: 24 = 23 trained + 1 rejected (0 at validation, 1 unreadable at batch time)" in caplog.text
    # The row is among the first 100 of its task: the model card's set-up read it and went on (it used to die there).
    assert "model card: dataset statistics left out" in caplog.text
    # The ocr batches trained 7 rows: every ocr row but the broken one (the training trace's row ids).
    from vipyloqwen_tools.train.trace import read_trace

    ocr = [b for r in read_trace(tmp_path / "tr")[0] if r["step"] != "end" for b in r["micro_batches"]]
    ocr = [b["rows"] for b in ocr if b["dataset"] == "ocr"]
    assert ocr and all(sorted(rows) == [i for i in range(PER_TASK) if i != BROKEN] for rows in ocr)


@pytest.mark.slow
def test_without_skip_the_run_stops_naming_the_line_and_a_resume_does_not_crash_loop(tmp_path: Path):
    train_file, line = write_data(tmp_path)
    train(config(tmp_path, train_file, max_steps=3, save_steps=3))  # one epoch (a batch per task), data fine
    image = tmp_path / "img" / f"ocr{BROKEN}.png"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # truncated after validation and caching
    with pytest.raises(DataError) as stopped:
        train(config(tmp_path, train_file, resume=True, save_steps=3))  # epoch 2 reaches the ocr batch
    message = str(stopped.value)
    assert f"{train_file}: line {line}: image {str(image)!r}" in message and "--skip-bad-rows" in message
    assert "stops before the next optimizer step" in message
    out = tmp_path / "out"
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 3 <= steps[-1] < 6  # stopped mid-epoch: the steps before it are checkpointed
    (entry,) = [p for p in (out / ".data-cache").iterdir() if p.is_dir()]
    assert [r["line"] for r in recall(entry)] == [line]  # the cache learned the row
    # Resume without the flag: refused at the start, before the model is loaded, naming the line.
    with pytest.raises(DataError, match=rf"1 bad line\(s\)[^$]*--skip-bad-rows[^$]*line {line}: unreadable when its"):
        train(config(tmp_path, train_file, resume=True))
    # Resume with it: continues from the last checkpoint to the end; the row is a reject, counted once.
    result = train(config(tmp_path, train_file, resume=True, skip_bad_rows=True, save_steps=3))
    assert result["global_step"] == 6
    assert [(r["file"], r["line"]) for r in rejects(tmp_path)] == [(str(train_file), line)]
    assert result["rows"] == {
        "rows_in": 24, "trained": 23, "held_out_for_eval": 0, "rejected": 1, "rejected_at_validation": 1,
        "rejected_at_batch_time": 0,
    }  # fmt: skip


@pytest.mark.slow
def test_an_image_the_model_cannot_take_stops_with_exit_2_is_learned_and_skip_goes_on(tmp_path: Path, capsys):
    """The issue's fault: an ocr image replaced, after validation, by one of aspect ratio 250. It used to reach the
    collator and die there with a raw traceback (exit 1, with or without --skip-bad-rows, no file or line), and
    --resume crash-looped. Now: exit 2 naming file, line and image; the cache learned the row; a second run without
    the flag is refused at its start naming the line; with the flag it trains, the row a reject."""
    import yaml

    import train_st

    train_file, line, image = cache_then_break(tmp_path, "aspect")
    values = dict(
        max_steps=6, per_device_train_batch_size=BATCH, max_length=32, max_image_tokens=16, save_steps=6,
        save_total_limit=None, seed=3, data_num_proc=1,
    )  # fmt: skip
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(tiny_run_settings(tmp_path / "out", train_file, None, **values)), "utf-8")
    status = train_st.main(["--config", str(config_path)])
    error = capsys.readouterr().err
    assert status == 2, error[-3000:]
    assert "Traceback" not in error
    assert (
        f"{train_file}: line {line}: image {str(image)!r}: aspect ratio 250 exceeds 200 (size 5000x20); "
        "crop or pad the image" in error
    )
    assert "--skip-bad-rows" in error
    (entry,) = [p for p in (tmp_path / "out" / ".data-cache").iterdir() if p.is_dir()]
    (record,) = recall(entry)
    assert record["line"] == line and record["reason"].startswith("unusable when its batch was built: image ")
    # No crash loop: the next run is refused at its start (the learned row is a bad line), naming it.
    assert train_st.main(["--config", str(config_path)]) == 2
    assert f"line {line}: unusable when its batch was built" in capsys.readouterr().err
    # With --skip-bad-rows the run trains to the end; the row is a reject, counted once.
    assert train_st.main(["--config", str(config_path), "--skip-bad-rows"]) == 0
    assert [(r["file"], r["line"]) for r in rejects(tmp_path)] == [(str(train_file), line)]
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()
