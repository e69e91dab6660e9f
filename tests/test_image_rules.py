"""Every size rule of the image path is checked at validation, with the line; a row the collator refuses at batch time
goes down the bad-row path (learned, then a reject or a stop naming the file, the line and the image).

The images are real files (an aspect ratio of 250 either way, a zero-width PNG, a picture over the pixel limit of a
file and one over the decode budget, the two limits lowered for the test as the module documents), the batch-time
case runs the trainer's own collator (Sentence-Transformers' collator over the tiny model's processor) on a row whose
PIL image the processor refuses.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from conftest import make_image, write_jsonl
from PIL import Image

import images_vipyloqwen
from images_vipyloqwen import ImageSizeError, check_image_file
from train_st import main as train_st_main
from vipyloqwen_tools.data import DataError, prepare_task_datasets, validate_file
from vipyloqwen_tools.data.learned import recall, still_bad
from vipyloqwen_tools.data.schema import verify_image


def zero_width_png(path: Path) -> Path:
    """A PNG whose header says 0 x 10 pixels (PIL cannot open it: it is refused as unreadable)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


@pytest.fixture
def image_rows(tmp_path: Path, monkeypatch) -> Path:
    """An ocr file: line 1 fine, then one line per size rule, then a fine line."""
    monkeypatch.setattr(images_vipyloqwen, "MAX_IMAGE_PIXELS", 200_000)  # module attributes, raised knowingly
    monkeypatch.setattr(images_vipyloqwen, "MAX_DECODE_PIXELS", 100_000)
    make_image(56, 56).save(tmp_path / "ok.png")
    Image.new("RGB", (500, 2), (200, 10, 10)).save(tmp_path / "wide.png")  # aspect ratio 250
    Image.new("RGB", (2, 500), (10, 200, 10)).save(tmp_path / "tall.png")  # 250 the other way
    zero_width_png(tmp_path / "zero.png")
    make_image(500, 500).save(tmp_path / "huge.png")  # 250,000 pixels > 200,000 in the file
    make_image(400, 300).save(tmp_path / "dense.png")  # 120,000 pixels: a PNG decodes in full, > 100,000
    make_image(400, 300).save(tmp_path / "dense.jpg")  # a JPEG too: training decodes it in full
    rows = [
        {"task": "ocr", "query": {"text": "Chữ gì?", "images": [name]}, "positive": "chữ"}
        for name in ("ok.png", "wide.png", "tall.png", "zero.png", "huge.png", "dense.png", "dense.jpg", "ok.png")
    ]
    return write_jsonl(tmp_path / "images.jsonl", rows)


def test_validation_refuses_every_size_rule_with_its_line(image_rows: Path, capsys):
    report = validate_file(image_rows, num_proc=1)
    reasons = {bad.line: bad.reason for bad in report.bad}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7] and report.counts["ocr"] == 2
    folder = image_rows.parent
    assert reasons[2] == (
        f"query: image 'wide.png' ({folder / 'wide.png'}) cannot be used: aspect ratio 250 exceeds 200 (size 500x2); "
        "crop or pad the image"
    )
    assert "aspect ratio 250 exceeds 200 (size 2x500)" in reasons[3]
    assert reasons[4].startswith(f"query: unreadable image 'zero.png' ({folder / 'zero.png'}): cannot identify image")
    assert "is 500x500 = 250,000 pixels, above the limit of 200,000 pixels" in reasons[5]
    assert "would decode 120,000 pixels as a PNG image, above the decode budget of 100,000" in reasons[6]
    # a JPEG too: training opens images without a pixel budget, so a JPEG decodes in full (no draft scale)
    assert "would decode 120,000 pixels as a JPEG image, above the decode budget of 100,000" in reasons[7]
    # the command line prints every refused line with its number
    assert train_st_main(["validate", str(image_rows), "--num-proc", "1"]) == 1
    out = capsys.readouterr().out
    for line in (2, 3, 4, 5, 6, 7):
        assert f"  line {line}: query: " in out


def test_the_rules_are_the_model_image_path_rules(tmp_path: Path):
    """What validation refuses is what prepare_image refuses, with the same words (one source of the rules)."""
    Image.new("RGB", (500, 2)).save(tmp_path / "wide.png")
    with pytest.raises(ImageSizeError) as header:
        check_image_file(tmp_path / "wide.png", "item 1, image 1")
    with pytest.raises(ImageSizeError) as prepared:
        images_vipyloqwen.prepare_image(str(tmp_path / "wide.png"), "item 1, image 1", max_pixels=64 * 28 * 28)
    assert str(header.value) == str(prepared.value) == (
        "item 1, image 1: aspect ratio 250 exceeds 200 (size 500x2); crop or pad the image"
    )
    Image.new("RGB", (400, 2)).save(tmp_path / "ok-wide.png")  # 200: at the limit, accepted
    assert check_image_file(tmp_path / "ok-wide.png", "x") == (400, 2)
    assert verify_image(str(tmp_path / "ok-wide.png")) is None


# ------------------------------------------------------------------------------------------------ batch time
@pytest.fixture
def guarded_collator(tmp_path: Path, st_model):
    """The trainer's collator chain (Sentence-Transformers' collator -> row ids -> identity keys -> bad-row guard)
    over a cached ocr dataset of 4 rows; returns ``(collator, guard, train_file, rows)``."""
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from torch.utils.data import ConcatDataset

    from vipyloqwen_tools.train.bad_rows import BadRowGuard, GuardedRows
    from vipyloqwen_tools.train.false_negatives import KeysCollator
    from vipyloqwen_tools.train.trace import ROW_COLUMN, RowIdCollator, add_row_ids

    for i in range(4):
        make_image(56, 56, seed=i).save(tmp_path / f"ocr{i}.png")
    rows = [
        {"task": "ocr", "query": {"text": "Chữ gì?", "images": [f"ocr{i}.png"]}, "positive": f"chữ {i}"}
        for i in range(4)
    ]
    train_file = write_jsonl(tmp_path / "train.jsonl", [{"task": "instr", "query": "a", "positive": "b"}, *rows])
    datasets, report = prepare_task_datasets(train_file, tmp_path / "cache", num_proc=1)
    datasets = add_row_ids(datasets)
    guard = BadRowGuard(report, train_file, tmp_path / "rejects.jsonl", skip=False)
    guard.rows = GuardedRows(ConcatDataset([datasets["instr"], datasets["ocr"]]), ["instr", "ocr"])
    inner = SentenceTransformerDataCollator(preprocess_fn=st_model.preprocess)
    collator = guard.collator(KeysCollator(RowIdCollator(inner)))  # the trainer's chain (ViPyloQwenTrainer)
    features = [dict(datasets["ocr"][i], dataset_name="ocr") for i in range(4)]
    assert all(feature[ROW_COLUMN] == i for i, feature in enumerate(features))
    return collator, guard, train_file, features


def test_a_row_the_collator_refuses_is_learned_and_stops_the_run_naming_it(guarded_collator):
    """Row 2's image is swapped for a 500x2 PIL image after the dataset opened it (what a changed file gives): the
    processor refuses it (aspect ratio 250). The batch is collated again row by row: only that row fails alone; it is
    learned (its JSONL line) and the run stops naming file, line and image, never a raw traceback."""
    collator, guard, train_file, features = guarded_collator
    features[2]["anchor"]["image"] = [Image.new("RGB", (500, 2))]
    with pytest.raises(DataError) as stopped:
        collator(features)
    message = str(stopped.value)
    image = str(train_file.parent / "ocr2.png")
    assert f"{train_file.resolve()}: line 4: images [{image!r}]: " in message  # line 1 instr, lines 2-5 ocr 0-3
    assert "aspect ratio 250 exceeds 200 (size 500x2)" in message and "--skip-bad-rows" in message
    (record,) = recall(guard.entry)
    assert record["line"] == 4 and record["check"] == "preprocess"
    assert record["reason"].startswith("failed preprocessing when its batch was built: images [")
    assert still_bad(record)  # its image is unchanged: a resumed run refuses the line at its start (no crash loop)
    make_image(56, 56, seed=9).save(image)  # the image replaced: the row is tried again
    assert not still_bad(record)


def test_with_skip_the_refused_row_is_dropped_and_the_batch_trains(guarded_collator):
    collator, guard, train_file, features = guarded_collator
    guard.skip = True
    features[0]["anchor"]["image"] = [Image.new("RGB", (2, 500))]
    batch = collator(features)
    assert batch["_trace_row"].tolist() == [1, 2, 3]  # the three good rows, collated together
    (reject,) = [json.loads(line) for line in guard.rejects.read_text(encoding="utf-8").splitlines()]
    assert reject["line"] == 2 and "aspect ratio 250 exceeds 200 (size 2x500)" in reject["reason"]
    assert reject["raw"] == train_file.read_text(encoding="utf-8").splitlines()[1]


def test_a_batch_level_error_is_not_blamed_on_rows(guarded_collator):
    """An error no row raises alone (here: the processor given a bad setting) is raised as it is: no row learned."""
    collator, guard, _, features = guarded_collator
    inner = collator.inner.inner.inner  # guard -> keys -> row ids -> Sentence-Transformers' collator
    original = inner.preprocess_fn

    def only_in_batches(inputs, **kwargs):
        if len(inputs) > 1:
            raise ValueError("a batch-level failure")
        return original(inputs, **kwargs)

    inner.preprocess_fn = only_in_batches
    with pytest.raises(ValueError, match="a batch-level failure"):
        collator(features)
    assert recall(guard.entry) == []
