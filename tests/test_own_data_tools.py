"""Your own data through the tools: every flag explains itself, a missing image says where it was looked for and
the rule, a 0-5 score gets the rescaling hint, one flag name skips bad rows everywhere, and Sentence-Transformers'
``image`` key and the JSONL's ``images`` are both read."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
from conftest import make_image, write_jsonl

from vipyloqwen_tools.data import IMAGE_PATH_RULE, validate_file
from vipyloqwen_tools.data.cache import cache_entry
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.flag_help import HELP
from vipyloqwen_tools.train.prepare import prepare_data


def _flags(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    return {
        "/".join(action.option_strings) or action.dest: action.help
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
    }


def test_every_train_st_flag_has_help_text():
    import train_st
    from vipyloqwen_tools.train.plan_command import build_plan_parser

    assert set(HELP) == set(TrainConfig.field_names())  # a new setting needs its line in train/flag_help.py
    assert all(text.strip() for text in HELP.values())
    parsers = {
        "train": train_st.build_parser(),
        "validate": train_st.build_validate_parser(),
        "plan": build_plan_parser(),
    }
    missing = {name: [flag for flag, text in _flags(p).items() if not text] for name, p in parsers.items()}
    assert all(not flags for flags in missing.values()), missing
    text = " ".join(train_st.build_parser().format_help().split())
    assert "--eval-file EVAL_FILE" in text and "held-out JSONL" in text and "(default: 'auto')" in text
    assert "--model MODEL" in text and "Hub id" in text and "--train-file" in text


def _ocr(image: str) -> dict:
    return {"task": "ocr", "query": {"text": "Chữ gì?", "images": [image]}, "positive": "đỏ"}


def test_missing_image_names_the_path_looked_at_and_the_rule(tmp_path):
    (tmp_path / "data").mkdir()
    path = write_jsonl(tmp_path / "data" / "mine.jsonl", [_ocr("imgs/x.jpg")])
    [bad] = validate_file(path, num_proc=1).bad
    looked = tmp_path / "data" / "imgs" / "x.jpg"
    assert bad.reason == f"query: missing image 'imgs/x.jpg': no file {looked} ({IMAGE_PATH_RULE})"
    assert IMAGE_PATH_RULE == "a relative image path is read from the JSONL file's folder, or from --image-root DIR"


def test_unreadable_image_names_the_path_read(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    [bad] = validate_file(write_jsonl(tmp_path / "mine.jsonl", [_ocr("x.png")]), num_proc=1).bad
    assert bad.reason.startswith(f"query: unreadable image 'x.png' ({tmp_path / 'x.png'}): ")


def test_image_root_reads_relative_paths_from_another_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "pictures" / "imgs").mkdir(parents=True)
    make_image(56, 56).save(tmp_path / "pictures" / "imgs" / "x.png")
    path = write_jsonl(tmp_path / "data" / "mine.jsonl", [_ocr("imgs/x.png")])
    assert len(validate_file(path, num_proc=1).bad) == 1
    report = validate_file(path, num_proc=1, image_root=tmp_path / "pictures")
    assert not report.bad and report.good == 1
    # the validate-once cache keeps the two apart: the same lines name other images
    plain, _ = cache_entry(tmp_path / "cache", path, True)
    rooted, _ = cache_entry(tmp_path / "cache", path, True, str(tmp_path / "pictures"))
    assert plain != rooted
    config = TrainConfig.from_yaml(None, train_file=str(path), image_root=str(tmp_path / "pictures"))
    datasets, report = prepare_data(dataclasses.replace(config, output_dir=str(tmp_path / "run")))
    assert report.good == 1 and datasets["ocr"].with_format(None)[0]["anchor"]["images"] == [
        str(tmp_path / "pictures" / "imgs" / "x.png")
    ]


def test_validate_command_prints_where_images_are_read_from(tmp_path, capsys):
    import train_st

    path = write_jsonl(tmp_path / "mine.jsonl", [{"task": "text_pair", "query": "a", "positive": "b", "score": 1}])
    assert train_st.main(["validate", str(path), "--num-proc", "1", "--image-root", str(tmp_path / "pics")]) == 0
    out = capsys.readouterr().out
    assert f"images: relative paths read from {tmp_path / 'pics'} ({IMAGE_PATH_RULE})" in out


def test_scores_on_a_0_5_scale_get_the_rescaling_hint(tmp_path):
    rows = [
        {"task": "text_pair", "query": f"a{i}", "positive": f"b{i}", "score": s} for i, s in enumerate([0.5, 3, 4.5])
    ]
    report = validate_file(write_jsonl(tmp_path / "sts.jsonl", rows), num_proc=1)
    assert [bad.reason for bad in report.bad] == ["score 3 outside [0, 1]", "score 4.5 outside [0, 1]"]
    hint = (
        "2 score(s) above 1 and every score of the file lies in [0, 5]: a 0-5 scale (as STS data uses)? Rescale the "
        "scores to [0, 1] (score / 5) and validate again"
    )
    assert report.hints() == [hint] and f"  hint: {hint}" in report.summary()
    rows.append({"task": "text_pair", "query": "c", "positive": "d", "score": 7})
    assert validate_file(write_jsonl(tmp_path / "other.jsonl", rows), num_proc=1).hints() == []  # not a 0-5 file


def test_st_image_key_is_read_as_images(tmp_path):
    make_image(56, 56).save(tmp_path / "x.png")
    single = {"task": "ocr", "query": {"text": "Chữ gì?", "image": "x.png"}, "positive": "đỏ"}
    both = {"task": "ocr", "query": {"text": "Chữ gì?", "image": "x.png", "images": ["x.png"]}, "positive": "đỏ"}
    wrong = {"task": "ocr", "query": {"text": "Chữ gì?", "picture": "x.png"}, "positive": "đỏ"}
    report = validate_file(write_jsonl(tmp_path / "mine.jsonl", [single, both, wrong]), num_proc=1)
    assert report.good == 1
    assert [bad.reason for bad in report.bad] == [
        "query: both 'images' and 'image': give the image paths once, as 'images'",
        "query: unknown field(s) ['picture']; valid: text, images (or image), turns",
    ]


def test_index_items_read_the_image_key_too(tmp_path):
    from vipyloqwen_tools.index.items import parse_item

    make_image(56, 56).save(tmp_path / "x.png")
    item = parse_item(json.dumps({"id": "a", "image": "x.png", "source": "s"}), 1, tmp_path)
    assert item.images == [str(tmp_path / "x.png")] and item.metadata == {"source": "s"}
    with pytest.raises(ValueError) as error:
        parse_item(json.dumps({"id": "a", "image": "x.png", "images": ["x.png"]}), 1, tmp_path)
    assert str(error.value) == "has both 'images' and 'image': give the image paths once, as 'images'"


def test_sentence_transformers_images_key_error_says_which_to_use(st_model):
    """ST reads its dicts itself: its error names the key to use."""
    with pytest.raises(ValueError) as error:
        st_model.encode([{"text": "x", "images": make_image()}])
    assert "unrecognized modality keys: ['images']" in str(error.value) and "'image'" in str(error.value)


def test_evaluate_jsonl_skips_bad_rows_with_the_training_flag_name(tmp_path):
    from eval import evaluate_jsonl

    rows = [{"task": "text_pair", "query": "a", "positive": "b", "score": 1}, "not json"]
    path = write_jsonl(tmp_path / "eval.jsonl", rows)
    with pytest.raises(evaluate_jsonl.JsonlError) as error:
        evaluate_jsonl.read_jsonl(path)
    assert "1 bad line(s) in" in str(error.value) and "(--skip-bad-rows evaluates the rest)" in str(error.value)
    parser = evaluate_jsonl.build_parser()
    for flag in ("--skip-bad-rows", "--skip-bad-lines"):  # the old name is kept as an alias
        assert parser.parse_args(["--model", "m", "--data", "d", flag]).skip_bad_rows is True
    kept, skipped = evaluate_jsonl.read_jsonl(path, skip_bad_rows=True)
    assert len(kept) == 1 and [line for line, _ in skipped] == [2]
    assert evaluate_jsonl.read_jsonl(path, skip_bad_lines=True)[1] == skipped
