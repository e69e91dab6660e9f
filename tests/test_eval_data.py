"""What a run evaluates on: never the bundled sample eval file with your own train file; --eval-split holds rows
out of training (the same rows every time, never trained); none otherwise, said in the log."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest
from conftest import make_image, write_jsonl

from vipyloqwen_tools.data import DataError
from vipyloqwen_tools.train.config import SAMPLE_EVAL_FILE, TrainConfig
from vipyloqwen_tools.train.eval_data import choose_eval_data, hold_out

REPO = Path(__file__).resolve().parent.parent
TINY_YAML = REPO / "configs" / "tiny-cpu.yaml"


def test_defaults_pair_the_sample_eval_file_with_the_sample_train_file_only(tmp_path):
    assert TrainConfig().eval_file == SAMPLE_EVAL_FILE
    assert TrainConfig.from_yaml(TINY_YAML).eval_file == "data/sample/eval.jsonl"
    mine = str(tmp_path / "mine.jsonl")
    assert TrainConfig(train_file=mine).eval_file is None
    # the YAML names the sample eval file; a --train-file flag without --eval-file drops it
    assert TrainConfig.from_yaml(TINY_YAML, train_file=mine).eval_file is None
    assert TrainConfig.from_yaml(TINY_YAML, train_file=mine, eval_file="e.jsonl").eval_file == "e.jsonl"
    assert TrainConfig.from_yaml(TINY_YAML, eval_file="").eval_file is None  # --eval-file "" turns it off
    split = TrainConfig.from_yaml(TINY_YAML, eval_split=0.01)
    assert split.eval_file is None and split.eval_split == 0.01
    # resolved once: replace() keeps what was chosen
    assert dataclasses.replace(TrainConfig.from_yaml(TINY_YAML, eval_file=""), seed=1).eval_file is None


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5, -0.1])
def test_eval_split_outside_0_1_is_refused(share):
    with pytest.raises(ValueError) as error:
        TrainConfig(eval_split=share).check()
    assert str(error.value) == (
        f"eval_split is the share of the train file's rows held out, in (0, 1), e.g. 0.01; got {share}"
    )


def test_eval_split_with_an_eval_file_is_refused():
    with pytest.raises(ValueError) as error:
        TrainConfig.from_yaml(None, eval_file="e.jsonl", eval_split=0.1)
    assert str(error.value) == (
        'eval_split 0.1 and eval_file e.jsonl: evaluate on one of them; --eval-file "" turns the eval file off'
    )


def test_cli_reports_a_bad_setting_in_one_line(capsys):
    from train_st import main

    assert main(["--config", str(TINY_YAML), "--eval-split", "2"]) == 2
    assert capsys.readouterr().err == (
        "error: eval_split is the share of the train file's rows held out, in (0, 1), e.g. 0.01; got 2.0\n"
    )


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """Per-task datasets (with row ids) of a small own file: 10 text_pair rows, 6 ocr rows with images."""
    from vipyloqwen_tools.data import load_task_datasets
    from vipyloqwen_tools.train.trace import add_row_ids

    root = tmp_path_factory.mktemp("own")
    (root / "img").mkdir()
    rows = [{"task": "text_pair", "query": f"câu {i}", "positive": f"câu số {i}", "score": 0.8} for i in range(10)]
    for i in range(6):
        make_image(56, 40, seed=i).save(root / "img" / f"{i}.png")
        rows.append({"task": "ocr", "query": {"text": "Chữ gì?", "images": [f"img/{i}.png"]}, "positive": f"số {i}"})
    path = write_jsonl(root / "mine.jsonl", rows)
    return path, lambda: add_row_ids(load_task_datasets(path, cache_dir=root / "cache"))


def test_hold_out_takes_rows_out_of_training_the_same_every_time(own_data):
    _, load = own_data
    train, rows, counts = hold_out(load(), 0.2, seed=7)
    assert counts == {"text_pair": 2, "ocr": 1}  # round(10 x 0.2), max(1, round(6 x 0.2))
    assert {task: len(task_rows) for task, task_rows in rows.items()} == counts
    assert {name: len(dataset) for name, dataset in train.items()} == {"text_pair": 8, "ocr": 5}
    held = {row["query"]["text"] for row in rows["text_pair"]}
    trained = {row["anchor"]["text"] for row in train["text_pair"].with_format(None)}
    assert not held & trained and len(held | trained) == 10
    ocr = rows["ocr"][0]
    assert ocr["task"] == "ocr" and ocr["query"]["images"][0].endswith(".png") and ocr["negatives"] == []
    assert rows["text_pair"][0]["score"] == pytest.approx(0.8)
    _, again, _ = hold_out(load(), 0.2, seed=7)
    assert again == rows
    _, other, _ = hold_out(load(), 0.2, seed=8)
    assert other != rows


def test_hold_out_refuses_a_dataset_it_would_empty(own_data):
    _, load = own_data
    with pytest.raises(DataError) as error:
        hold_out(load(), 0.95, seed=1)
    assert str(error.value) == (
        "--eval-split 0.95: dataset 'text_pair' has 10 row(s); holding out 10 would leave none to train: use a "
        "smaller share, or an --eval-file"
    )


def test_no_eval_is_said_in_the_log(own_data, caplog):
    path, load = own_data
    config = TrainConfig.from_yaml(TINY_YAML, train_file=str(path))
    with caplog.at_level(logging.INFO, logger="vipyloqwen.train"):
        datasets, evaluation = choose_eval_data(config, load())
    assert evaluation.rows is None and evaluation.record(config)["kind"] == "none"
    said = f"evaluation: none (no --eval-file given for {path}; --eval-split 0.01 holds out 1% of its rows per task)"
    assert said in caplog.text
    assert {name: len(d) for name, d in datasets.items()} == {"text_pair": 10, "ocr": 6}


def test_eval_split_is_said_in_the_log_and_recorded(own_data, caplog):
    path, load = own_data
    config = TrainConfig.from_yaml(TINY_YAML, train_file=str(path), eval_split=0.2)
    with caplog.at_level(logging.INFO, logger="vipyloqwen.train"):
        _, evaluation = choose_eval_data(config, load())
    assert f"evaluation: 3 rows held out of {path} (--eval-split 0.2) (text_pair 2, ocr 1)" in caplog.text
    assert evaluation.record(config) == {
        "kind": "eval_split",
        "file": None,
        "eval_split": 0.2,
        "rows": {"text_pair": 2, "ocr": 1},
        "held_out": {"text_pair": 2, "ocr": 1},
    }


def test_an_unreadable_image_is_found_by_its_file_row_after_a_split(own_data, tmp_path):
    """Row ids stay the rows' indices in the file's datasets: the bad-row guard finds the right line although
    --eval-split moved every later row up."""
    from torch.utils.data import ConcatDataset

    from vipyloqwen_tools.data import load_task_datasets, validate_file
    from vipyloqwen_tools.train.bad_rows import BadRow, BadRowGuard
    from vipyloqwen_tools.train.trace import add_row_ids

    path, _ = own_data
    copy = tmp_path / "own"
    shutil.copytree(path.parent, copy, ignore=shutil.ignore_patterns("cache"))
    datasets = add_row_ids(load_task_datasets(copy / "mine.jsonl", cache_dir=tmp_path / "cache"))
    train, rows, _ = hold_out(datasets, 0.2, seed=7)
    held_images = {row["query"]["images"][0] for row in rows["ocr"]}
    position = 4  # the last trained ocr row
    stored = train["ocr"].with_format(None)[position]
    image = stored["anchor"]["images"][0]
    assert image not in held_images
    Path(image).unlink()
    report = validate_file(copy / "mine.jsonl", check_images=False, cache_dir=tmp_path / "cache")
    guard = BadRowGuard(report, copy / "mine.jsonl", tmp_path / "rejects.jsonl", skip=True)
    loader = SimpleLoader(ConcatDataset([train["text_pair"], train["ocr"]]))
    guard.wrap_loader(loader, ["text_pair", "ocr"])
    bad = guard.rows[8 + position]
    assert isinstance(bad, BadRow) and bad.position == position and bad.index == stored["_trace_row"]
    record = guard.learn(bad)
    number = 10 + 1 + bad.index  # the ocr rows follow the 10 text_pair lines
    assert record["line"] == number and record["images"] == [image]


class SimpleLoader:
    """What BadRowGuard.wrap_loader reads of a DataLoader."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.batch_sampler = None
        self.collate_fn = None
        self.num_workers = 0
        self.pin_memory = False
        self.persistent_workers = False
        self.timeout = 0
        self.worker_init_fn = None
