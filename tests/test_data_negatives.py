"""Explicit negatives in the data (``negative`` and the ``negatives`` list) and the identity keys of every side.

- the validator names the line of a ``negatives`` that is not a list, an empty list, a negative equal to the
  positive (old single ``negative`` included), a ``negative_scores`` that does not match;
- the Arrow datasets hold every negative and the identity keys, and a batch has one column per negative (a shorter
  row padded with its first negative, whose key is NO_DOCUMENT);
- identity keys follow the encode path: equal keys exactly when the processor makes the same model input (NFC,
  the typed task prefix, empty text), images by content (a copy under another name is the same image).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import make_image, write_jsonl

from vipyloqwen_tools.data import load_task_datasets, validate_file
from vipyloqwen_tools.data.identity import NO_DOCUMENT, row_keys, side_key
from vipyloqwen_tools.data.schema import parse_line


def _row(**extra) -> dict:
    return {"task": "instr", "query": "câu hỏi", "positive": "đúng", **extra}


def test_the_validator_names_each_bad_negatives_line(tmp_path: Path):
    rows = [
        _row(negative="sai"),  # 1: the old single negative stays valid
        _row(negatives=["sai 1", {"text": "sai 2"}], negative_scores=[0.5, 0.4]),  # 2: the miner's output
        _row(negatives="sai"),  # 3: not a list
        _row(negatives=[]),  # 4: empty
        _row(negatives=["sai", "đúng"]),  # 5: a negative equal to the positive
        _row(negative=" đúng"),  # 6: another text (a leading space is a token): valid
        _row(negative="Đúng".lower()),  # 7: the same text as typed: equal to the positive
        _row(negatives=["x"], negative_scores=[0.1, 0.2]),  # 8: scores do not match
        _row(negatives=[{"text": "x", "colour": "red"}]),  # 9: a side with an unknown field
    ]
    report = validate_file(write_jsonl(tmp_path / "train.jsonl", rows), num_proc=1)
    bad = {b.line: b.reason for b in report.bad}
    assert sorted(bad) == [3, 4, 5, 7, 8, 9]
    assert "negatives: expected a list of 1-32 documents" in bad[3] and "got str" in bad[3]
    assert "negatives: empty list" in bad[4]
    assert bad[5].startswith("negatives[1]: the same document as the positive")
    assert bad[7].startswith("negative: the same document as the positive")
    assert "negative_scores: 2 scores for 1 negatives" in bad[8]
    assert bad[9].startswith("negatives[0]: unknown field(s) ['colour']")
    assert report.good == 3


def test_a_negative_equal_to_the_positive_after_normalisation_is_an_error():
    decomposed = "đu\u0301ng"  # "đúng" with a combining acute: NFC makes it the positive's text
    with pytest.raises(ValueError, match="negatives\\[0\\]: the same document as the positive"):
        parse_line(json.dumps(_row(negatives=[decomposed])), Path("."), check_images=False)
    with pytest.raises(ValueError, match="the same document as the positive"):
        parse_line(json.dumps(_row(positive="<instr> đúng", negative="<instr>đúng")), Path("."), check_images=False)
    parse_line(json.dumps(_row(positive="<instr> đúng", negative="đúng")), Path("."), check_images=False)  # no task


def test_datasets_hold_every_negative_and_the_keys(tmp_path: Path):
    rows = [
        _row(query="q0", positive="p0", negatives=["a", "b", "c"]),
        _row(query="q1", positive="p1", negative="d"),
        _row(query="q2", positive="p2"),
    ]
    datasets = load_task_datasets(write_jsonl(tmp_path / "train.jsonl", rows), cache_dir=tmp_path / "cache")
    assert sorted(datasets) == ["instr+neg"]  # one dataset per task: the row without negatives joins it
    mined = datasets["instr+neg"]
    first, second, third = mined[0], mined[1], mined[2]
    assert [first[c] for c in ("negative", "negative2", "negative3")] == ["a", "b", "c"]
    assert [second[c] for c in ("negative", "negative2", "negative3")] == ["d", "d", "d"]  # padded with its first
    assert [third[c] for c in ("negative", "negative2", "negative3")] == ["p2", "p2", "p2"]  # none: its positive
    keys = mined.with_format(None)["_keys"]
    parsed = [parse_line(json.dumps(r), tmp_path, check_images=False) for r in rows]
    assert keys == [row_keys(p) for p in parsed]  # stored as computed, unpadded
    assert second["_keys"] == row_keys(parsed[1]) + [NO_DOCUMENT, NO_DOCUMENT]  # padded at batch time
    assert third["_keys"] == row_keys(parsed[2]) + [NO_DOCUMENT] * 3


def test_keys_are_equal_exactly_when_the_processor_makes_the_same_input(processor):
    texts = [
        "Có",
        "Co\u0301",  # NFD: the tokenizer normalises to NFC
        " Có",  # a leading space is a token
        "có",
        "<ocr> Có",  # a typed prefix selects a task: another input
        "<ocr>Có",
        "",
        "   ",
        "\n",
        "Có ",
    ]
    items = [processor.canonicalize([{"role": "user", "content": text}], i) for i, text in enumerate(texts)]
    encoded = processor.encode_items(items)
    inputs = [
        tuple(t for t, m in zip(row, mask, strict=True) if m)
        for row, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    ]
    keys = [side_key({"text": text, "images": []}) for text in texts]
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert (keys[i] == keys[j]) == (inputs[i] == inputs[j]), (texts[i], texts[j])
    assert keys[0] == keys[1] and keys[4] == keys[5] and keys[6] == keys[7] == keys[8]


def test_images_count_by_content(tmp_path: Path):
    make_image(seed=1).save(tmp_path / "a.png")
    shutil.copy(tmp_path / "a.png", tmp_path / "copy of a.png")
    make_image(seed=2).save(tmp_path / "b.png")

    def key(name: str) -> int:
        return side_key({"text": "Mô tả", "images": [str(tmp_path / name)]})

    assert key("a.png") == key("copy of a.png") != key("b.png")
    assert side_key({"text": "Mô tả", "images": []}) != key("a.png")
    assert key("missing.png") == key("missing.png") != key("a.png")  # an unreadable file counts by its path
