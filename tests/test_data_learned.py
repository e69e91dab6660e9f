"""The validate-once cache learns rows found unreadable after validation, and forgets them once they read again."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_image

from vipyloqwen_tools.data.arrow import read_line_at, row_source
from vipyloqwen_tools.data.cache import prepare_task_datasets
from vipyloqwen_tools.data.learned import recall, remember


def test_a_learned_row_is_a_bad_line_until_its_image_reads_again(tmp_path: Path):
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(6):
        make_image(40, 40, seed=i).save(tmp_path / "img" / f"{i}.png")
        lines.append({"task": "ocr", "query": {"text": "gì?", "images": [f"img/{i}.png"]}, "positive": str(i)})
        lines.append({"task": "instr", "query": f"q {i}", "positive": f"p {i}"})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    datasets, report = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    entry = Path(report.cache_entry)
    # Row 4 of the ocr dataset is line 9 of the file; its raw text is read back from its byte offset.
    line, offset = row_source(entry / "arrow", "ocr", 4)
    assert line == 9 and read_line_at(path, offset) == path.read_text(encoding="utf-8").splitlines()[8]
    image = tmp_path / "img" / "4.png"
    saved = image.read_bytes()
    image.unlink()
    record = {"line": 9, "dataset": "ocr", "index": 4, "task": "ocr", "images": [str(image)],
              "reason": "unreadable when its batch was built: missing", "raw": read_line_at(path, offset)}  # fmt: skip
    assert remember(entry, record) and not remember(entry, record)  # once per line
    assert [r["line"] for r in recall(entry)] == [9]
    datasets, again = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert again.cached and [b.line for b in again.bad] == [9] and again.late_bad == [9]
    assert again.counts["ocr"] == 5 and again.check_invariant()  # lines read = good + bad + blank still holds
    assert len(datasets["ocr"]) == 6  # the row stays in the datasets: training drops it at batch time
    image.write_bytes(saved)  # restored: trained again
    _, restored = prepare_task_datasets(path, tmp_path / "cache", num_proc=2)
    assert not restored.bad and restored.late_bad == [] and restored.counts["ocr"] == 6
