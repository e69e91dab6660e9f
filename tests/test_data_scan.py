"""Parallel validation over byte ranges: every bad-line kind, the awkward files, 1 worker == N workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vipyloqwen_tools.data.cache import prepare_task_datasets
from vipyloqwen_tools.data.lines import BOM
from vipyloqwen_tools.data.scan import scan_file


def dump(row) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


TP = {"task": "text_pair", "query": "con mèo", "positive": "the cat", "score": 0.9}
OCR = {"task": "ocr", "query": {"text": "Chữ gì?", "images": ["ok.png"]}, "positive": "đỏ"}


def ocr_with(image: str) -> bytes:
    return dump({"task": "ocr", "query": {"text": "q", "images": [image]}, "positive": "a"})


# Every kind of bad line the validator knows: (line bytes, part of the reason).
BAD_KINDS = [
    (b'{"task": "instr", "query": "x", ', "malformed JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (dump({"query": "a", "positive": "b"}), "missing field 'task'"),
    (dump({"task": 3, "query": "a", "positive": "b"}), "'task' must be a string"),
    (dump({"task": "summarise", "query": "a", "positive": "b"}), "unknown task 'summarise'; valid: text_pair"),
    (dump({**TP, "extra": 1}), "unknown field(s) ['extra']"),
    (dump({"task": "instr", "query": "a"}), "missing field 'positive'"),
    (dump({"task": "instr", "positive": "a"}), "missing field 'query'"),
    (dump({"task": "text_pair", "query": "a", "positive": "b"}), "missing field 'score'"),
    (dump({**TP, "score": "high"}), "score must be a number"),
    (dump({**TP, "score": True}), "score must be a number"),
    (b'{"task": "text_pair", "query": "a", "positive": "b", "score": NaN}', "score must be a number"),
    (dump({**TP, "score": 1.5}), "score 1.5 outside [0, 1]"),
    (dump({"task": "instr", "query": 5, "positive": "b"}), "query: expected a string or an object, got int"),
    (dump({"task": "instr", "query": {"txt": "a"}, "positive": "b"}), "query: unknown field(s) ['txt']"),
    (dump({"task": "instr", "query": {"text": 1}, "positive": "b"}), "query.text: expected a string, got int"),
    (dump({"task": "instr", "query": "q", "positive": {"text": "b", "turns": []}}), "only the query side has turns"),
    (dump({"task": "instr", "query": {"text": "q", "turns": []}, "positive": "b"}), "expected a non-empty list"),
    (dump({"task": "instr", "query": {"turns": [{"role": "bot", "content": "x"}]}, "positive": "b"}), "turns[0]"),
    (dump({"task": "instr", "query": {"turns": [{"role": "user", "content": " "}]}, "positive": "b"}), "empty content"),
    (dump({"task": "ocr", "query": {"text": "q", "images": [1]}, "positive": "a"}), "expected a list of image paths"),
    (dump({"task": "vqa_multi", "query": {"text": "q", "images": ["ok.png"] * 6}, "positive": "a"}), "too many"),
    (dump({"task": "instr", "query": {"text": "q", "images": ["ok.png"]}, "positive": "a"}), "takes text only"),
    (dump({"task": "vqa_single", "query": "no image", "positive": "b"}), "needs 1-5 images"),
    (ocr_with("nope.png"), "missing image 'nope.png'"),
    (ocr_with("junk.png"), "unreadable image"),
    (ocr_with("cut.jpg"), "unreadable image 'cut.jpg'"),
    (ocr_with("cut.png"), "unreadable image 'cut.png'"),
    (dump({"task": "instr", "query": "   ", "positive": "b"}), "query: empty text and no image"),
    (b'{"task": "instr", "query": "caf\xe9", "positive": "b"}', "not UTF-8"),
    (b"\x00" * 64, "NUL byte at column 1"),
    (b'{"task": "instr", "query": "a\x00b", "positive": "b"}', "NUL byte"),
]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "ok.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    Image.effect_noise((256, 256), 60).convert("RGB").save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # Image.verify alone lets this pass
    Image.effect_noise((256, 256), 60).convert("RGB").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    return tmp_path


def write(path: Path, lines: list[bytes], end: bytes = b"\n", final: bool = True) -> Path:
    path.write_bytes(end.join(lines) + (end if final else b""))
    return path


def same_everywhere(path: Path, tmp_path: Path, workers=(1, 2, 5)):
    """Reports and datasets for several worker counts; asserts they are identical; returns the first."""
    outs = []
    for n in workers:
        datasets, report = prepare_task_datasets(path, tmp_path / f"cache-{n}", num_proc=n)
        report.check_invariant()
        rows = {name: ds.with_format(None)[:] for name, ds in datasets.items()}
        assert sum(len(ds) for ds in datasets.values()) == report.good
        outs.append((report.to_json(), rows))
    for other in outs[1:]:
        assert other == outs[0]
    return prepare_task_datasets(path, tmp_path / f"cache-{workers[0]}")[1]


def test_every_bad_line_kind_is_one_bad_line_with_its_number(images: Path, tmp_path: Path):
    lines = []
    expected = {}
    for raw, reason in BAD_KINDS:
        lines += [dump(TP), raw]
        expected[len(lines)] = reason
    lines += [b"", dump({**OCR, "query": {"text": "x", "images": ["full.jpg", "full.png"]}})]
    report = same_everywhere(write(tmp_path / "kinds.jsonl", lines), tmp_path)
    got = {bad.line: bad.reason for bad in report.bad}
    assert sorted(got) == sorted(expected)
    for line, reason in expected.items():
        assert reason in got[line], (line, got[line])
    assert report.lines == len(lines) and report.blank == 1 and report.good == len(BAD_KINDS) + 1
    assert report.images == 6  # distinct paths of good-schema rows, each verified once
    not_utf8 = next(b for b in report.bad if "not UTF-8" in b.reason)
    assert not_utf8.raw == '{"task": "instr", "query": "caf\\xe9", "positive": "b"}'


def test_non_utf8_byte_mid_file_and_in_the_first_read_buffer_cost_one_line_each(tmp_path: Path):
    # The case: one bad byte on line 70 of 100 once hid the 30 rows after it.
    lines = [dump({**TP, "query": f"câu {i}"}) for i in range(100)]
    lines[2] = lines[2].replace(b"\xc3\xa2", b"\xff")  # inside the first 8 KB buffer a text reader decodes
    lines[69] = lines[69].replace(b"\xc3\xa2", b"\xc3")  # mid-file, a truncated 2-byte sequence
    report = same_everywhere(write(tmp_path / "bytes.jsonl", lines), tmp_path)
    assert [b.line for b in report.bad] == [3, 70] and report.good == 98 and report.lines == 100
    assert "\\xff" in report.bad[0].raw and "\\xc3" in report.bad[1].raw


def test_bom_line_one_and_mid_file_crlf_and_no_final_newline(tmp_path: Path):
    lines = [BOM + dump(TP), dump(OCR | {"query": "x", "task": "instr"}), BOM + dump(TP), dump(TP)]
    path = write(tmp_path / "bom.jsonl", lines, end=b"\r\n", final=False)
    report = same_everywhere(path, tmp_path)
    assert not report.bad and report.good == 4 and report.lines == 4
    assert report.bom_lines == [3]  # tolerated, and said: files joined with cat
    assert report.duplicate_rows.count == 2 and report.duplicate_rows.pairs == [(1, 3), (1, 4)]


def test_a_10_mb_line_and_the_lines_around_it(tmp_path: Path):
    big = dump({"task": "instr", "query": "dài " * 2_600_000, "positive": "b", "id": "big"})
    assert len(big) > 10_000_000
    lines = [dump(TP), big, dump({**TP, "query": "sau"}), b"{broken"]
    report = same_everywhere(write(tmp_path / "big.jsonl", lines), tmp_path, workers=(1, 3))
    assert report.good == 3 and [b.line for b in report.bad] == [4] and report.lines == 4


def test_empty_file_and_blank_only_file(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    report, rows = scan_file(empty, num_proc=2)
    assert (report.lines, report.good, report.blank, rows) == (0, 0, 0, {})
    blank = write(tmp_path / "blank.jsonl", [b"", b"  ", b"\t"])
    report, _ = scan_file(blank, num_proc=2)
    assert (report.lines, report.blank) == (3, 3)
    report.check_invariant()


def test_duplicate_ids_and_rows_are_reported_not_dropped(tmp_path: Path):
    lines = [dump({**TP, "id": f"r{i % 7}", "query": f"q{i % 5}"}) for i in range(40)]
    report = same_everywhere(write(tmp_path / "dups.jsonl", lines), tmp_path, workers=(1, 4))
    assert report.good == 40  # nothing dropped
    assert report.duplicate_ids.count == 40 - 7 and report.duplicate_ids.pairs[0] == (1, 8)
    assert report.duplicate_rows.count == 40 - 35  # id and query repeat together every 35 lines
    assert report.duplicate_rows.pairs == [(i + 1, i + 36) for i in range(5)]


def test_rows_keep_file_order_within_each_task(images: Path, tmp_path: Path):
    lines = [dump({**TP, "query": f"t{i}"}) if i % 3 else dump({**OCR, "positive": f"o{i}"}) for i in range(30)]
    datasets, _ = prepare_task_datasets(write(tmp_path / "order.jsonl", lines), tmp_path / "c", num_proc=4)
    assert [r["anchor"]["text"] for r in datasets["text_pair"].with_format(None)] == [
        f"t{i}" for i in range(30) if i % 3
    ]
    assert datasets["ocr"].with_format(None)[0]["anchor"]["images"] == [str(images / "ok.png")]


VERIFIED_LOG: list[Path] = []


def counting_verify(path: str):
    """verify_image that also logs each call (workers are forked processes: count through a file)."""
    from vipyloqwen_tools.data.schema import verify_image

    with VERIFIED_LOG[0].open("a") as handle:
        handle.write(path + "\n")
    return verify_image(path)


def test_each_distinct_image_is_verified_once_across_workers(images: Path, tmp_path: Path, monkeypatch):
    from vipyloqwen_tools.data import scan as data_scan

    VERIFIED_LOG[:] = [tmp_path / "verified.txt"]
    monkeypatch.setattr(data_scan, "verify_image", counting_verify)
    names = ["ok.png", "full.jpg", "full.png", "cut.jpg"]
    lines = [dump({**OCR, "query": {"text": f"q{i}", "images": [names[i % 4], names[(i + 1) % 4]]}}) for i in range(80)]
    try:
        report, _ = scan_file(write(tmp_path / "imgs.jsonl", lines), num_proc=4)
    finally:
        checked = VERIFIED_LOG[0].read_text().splitlines()
        VERIFIED_LOG.clear()
    assert sorted(checked) == sorted(str(images / n) for n in names)  # 4 distinct files, 160 uses, 4 checks
    assert report.images == 4 and report.good == 40 and len(report.bad) == 40  # every row that uses cut.jpg
