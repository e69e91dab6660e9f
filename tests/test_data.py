"""The JSONL schema, the validator (every bad line with its number and reason) and the per-task Arrow datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from train_st import main as train_st_main
from vipyloqwen_tools.data import DataError, iter_file, load_task_datasets, validate_file, write_rejects

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def mixed_file(tmp_path: Path) -> Path:
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    good_ocr = {"task": "<ocr>", "query": {"text": "Chữ gì?", "images": ["ok.png"]}, "positive": "đỏ"}
    lines = [
        json.dumps({"task": "text_pair", "query": "con mèo", "positive": "the cat", "score": 0.9}),  # 1 good
        '{"task": "instr", "query": "x", ',  # 2 malformed JSON
        json.dumps({"task": "summarise", "query": "a", "positive": "b"}),  # 3 unknown task
        json.dumps({"task": "instr", "query": "a"}),  # 4 missing positive
        json.dumps({"task": "text_pair", "query": "a", "positive": "b", "score": 1.5}),  # 5 score outside
        json.dumps({"task": "ocr", "query": {"text": "q", "images": ["nope.png"]}, "positive": "a"}),  # 6 missing image
        json.dumps({"task": "ocr", "query": {"text": "q", "images": ["broken.png"]}, "positive": "a"}),  # 7 unreadable
        json.dumps(
            {"task": "vqa_multi", "query": {"text": "q", "images": ["ok.png"] * 6}, "positive": "a"}
        ),  # 8 too many
        json.dumps({"task": "instr", "query": "   ", "positive": "b"}),  # 9 empty text
        "",  # blank lines are skipped, still counted
        json.dumps(good_ocr),  # 11 good
        json.dumps({"task": "text_pair", "query": "a", "positive": "b"}),  # 12 text_pair without score
        json.dumps({"task": "vqa_single", "query": "no image", "positive": "b"}),  # 13 image task without image
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", lines)


def test_validator_reports_each_bad_line_with_number_and_reason(mixed_file: Path):
    report = validate_file(mixed_file)
    assert dict(report.counts) == {"text_pair": 1, "ocr": 1}
    reasons = {bad.line: bad.reason for bad in report.bad}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 12, 13]
    assert "malformed JSON" in reasons[2]
    assert "unknown task 'summarise'" in reasons[3]
    assert "missing field 'positive'" in reasons[4]
    assert "outside [0, 1]" in reasons[5]
    assert "missing image 'nope.png'" in reasons[6]
    assert "unreadable image 'broken.png'" in reasons[7]
    assert "too many images (6)" in reasons[8]
    assert "empty text" in reasons[9]
    assert "missing field 'score'" in reasons[12]
    assert "needs 1-5 images" in reasons[13]
    summary = report.summary()
    assert "line 7: query: unreadable image" in summary and "13 lines read: 2 good, 10 bad, 1 blank" in summary


def test_validate_cli_exit_codes_and_output(mixed_file: Path, capsys):
    assert train_st_main(["validate", str(mixed_file)]) == 1
    out = capsys.readouterr().out
    assert "2 good, 10 bad" in out and "line 3: unknown task" in out and "ocr         1" in out
    assert train_st_main(["validate", str(SAMPLE / "eval.jsonl")]) == 0


def test_rejects_file_keeps_every_bad_line(mixed_file: Path, tmp_path: Path):
    report = validate_file(mixed_file)
    rejects = [json.loads(line) for line in write_rejects(report, tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [b.line for b in report.bad]
    assert rejects[0]["raw"] == '{"task": "instr", "query": "x", '


def test_sample_data_is_valid_and_covers_every_task():
    from configuration_vipyloqwen import TASKS

    for split in ("train", "eval"):
        report = validate_file(SAMPLE / f"{split}.jsonl")
        assert not report.bad, report.summary()
        assert set(report.counts) == set(TASKS) and min(report.counts.values()) >= 32
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 3 * 1024 * 1024


def test_per_task_datasets_are_arrow_backed_with_lazy_images(mixed_file: Path, tmp_path: Path):
    with pytest.raises(DataError, match="line 7: query: unreadable image"):
        load_task_datasets(mixed_file, cache_dir=tmp_path / "cache")
    datasets = load_task_datasets(mixed_file, cache_dir=tmp_path / "cache", report=validate_file(mixed_file))
    assert sorted(datasets) == ["ocr", "text_pair"]  # bad lines are not loaded
    assert datasets["text_pair"].column_names == ["anchor", "positive", "score", "_keys"]
    assert datasets["ocr"].column_names == ["anchor", "positive", "_keys"]  # _keys: identity (test_data_negatives)
    stored = datasets["ocr"].with_format(None)[0]["anchor"]
    assert stored["text"] == "Chữ gì?" and stored["images"][0].endswith("ok.png")  # a path on disk, not pixels
    row = datasets["ocr"][0]  # the transform opens the image at batch time
    assert row["anchor"]["text"] == "Chữ gì?" and isinstance(row["anchor"]["image"][0], Image.Image)
    first = datasets["text_pair"][0]
    assert {k: first[k] for k in ("anchor", "positive", "score")} == {
        "anchor": "con mèo",
        "positive": "the cat",
        "score": pytest.approx(0.9),
    }
    assert datasets["ocr"].cache_files  # memory-mapped Arrow on disk


def test_a_task_with_explicit_negatives_is_one_dataset(tmp_path: Path):
    lines = [
        json.dumps({"task": "instr", "query": f"q{i}", "positive": f"p{i}", **({"negative": "n"} if i % 2 else {})})
        for i in range(4)
    ]
    lines.append(
        json.dumps(
            {
                "task": "instr",
                "query": {
                    "text": "tiếp",
                    "turns": [{"role": "user", "content": "Xin chào"}, {"role": "assistant", "content": "Chào bạn"}],
                },
                "positive": "ok",
            }
        )
    )
    datasets = load_task_datasets(write_jsonl(tmp_path / "neg.jsonl", lines), cache_dir=tmp_path / "cache")
    assert sorted(datasets) == ["instr+neg"]  # rows with negatives first, then the rows without (padded slots)
    assert datasets["instr+neg"].column_names == ["anchor", "positive", "negatives", "_keys"]
    assert list(datasets["instr+neg"][0]) == ["anchor", "positive", "negative", "_keys"]  # at batch time
    assert [datasets["instr+neg"][i]["anchor"] for i in range(4)] == ["q1", "q3", "q0", "q2"]
    assert datasets["instr+neg"][4]["anchor"] == "user: Xin chào\nassistant: Chào bạn\nuser: tiếp"


def test_iter_file_is_lossless_and_names_each_bad_line(tmp_path: Path):
    good = json.dumps({"task": "instr", "query": "câu", "positive": "b"}, ensure_ascii=False).encode()
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join([good, good.replace(b"\xc3\xa2", b"\xff"), b"", good + b"\r"]))  # no final newline
    got = [(n, raw, row is not None, error) for n, raw, row, error in iter_file(path)]
    assert [g[0] for g in got] == [1, 2, 4] and got[0][2] and got[2][2]
    assert got[1][1] == '{"task": "instr", "query": "c\\xffu", "positive": "b"}' and "not UTF-8" in got[1][3]


def test_validate_cli_parallel_cache_and_rejects(mixed_file: Path, tmp_path: Path, capsys):
    args = ["validate", str(mixed_file), "--num-proc", "3", "--cache-dir", str(tmp_path / "c")]
    assert train_st_main([*args, "--rejects", str(tmp_path / "rejects.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "13 lines read = 2 good + 10 bad + 1 blank" in out and "rejects.jsonl" in out
    assert train_st_main(args) == 1
    assert "(from the validate-once cache)" in capsys.readouterr().out
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == 10


def test_prepare_data_trains_exactly_the_good_rows(mixed_file: Path, tmp_path: Path, caplog):
    import logging

    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.prepare import prepare_data

    config = TrainConfig.from_yaml(
        None, train_file=str(mixed_file), output_dir=str(tmp_path / "run"), skip_bad_rows=False, data_num_proc=2
    )
    with pytest.raises(DataError, match="10 bad line"):
        prepare_data(config)
    config.skip_bad_rows = True
    with caplog.at_level(logging.INFO):
        datasets, report = prepare_data(config)
    assert sum(len(d) for d in datasets.values()) == report.good == 2
    assert "13 lines read = 2 good + 10 bad + 1 blank" in caplog.text and "rows trained: 2 = good rows" in caplog.text
    assert "reusing the validated data cache" in caplog.text  # the refused first run already built it
    assert len((tmp_path / "run" / "rejects-train.jsonl").read_text().splitlines()) == 10
