"""scripts/make_sample_data.py: the committed data/sample is exactly what the script generates, its images reach
500-1024 tokens at the default budget, documents are rendered in Be Vietnam Pro, and the folder stays small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from scripts import make_sample_data

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_committed_sample_equals_a_fresh_generation(capsys):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in SAMPLE.rglob("*"))
    assert make_sample_data.main(["--check"]) == 0, capsys.readouterr().err  # byte for byte, every file
    assert f"{SAMPLE} is up to date" in capsys.readouterr().out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in SAMPLE.rglob("*")) == before  # --check wrote nothing


def test_check_names_stale_missing_and_extra_files(tmp_path, capsys):
    from scripts.regenerate import check_folder

    def generate(folder: Path) -> None:
        (folder / "img").mkdir(parents=True)
        (folder / "a.jsonl").write_text("1\n")
        (folder / "img" / "x.png").write_bytes(b"png")

    target = tmp_path / "sample"
    generate(target)
    assert check_folder(generate, target, "the tool") == 0
    (target / "a.jsonl").write_text("2\n")
    (target / "img" / "x.png").unlink()
    (target / "old.txt").write_text("left over")
    assert check_folder(generate, target, "the tool") == 1
    err = capsys.readouterr().err
    assert f"{target} is stale (3 file(s)); run the tool" in err
    assert "a.jsonl: differs" in err and "img/x.png: missing" in err and "old.txt: not generated any more" in err


def test_every_image_reaches_500_to_1024_tokens_at_the_default_budget(processor):
    from configuration_vipyloqwen import DEFAULT_MAX_IMAGE_TOKENS

    size = processor.image_size_kwargs(DEFAULT_MAX_IMAGE_TOKENS)
    limits = {"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"]}
    merge = processor.image_processor.merge_size**2
    counts = {}
    for path in sorted((SAMPLE / "img").glob("*.png")):
        width, height = Image.open(path).size
        counts[path.name] = processor.image_processor.get_number_of_image_patches(height, width, limits) // merge
    assert counts and all(500 <= n <= DEFAULT_MAX_IMAGE_TOKENS for n in counts.values()), counts
    kinds = {name.split("_")[0] for name in counts}
    assert kinds == {"receipt", "form", "page", "chart", "scene"}


def test_rows_use_documents_multi_image_rows_and_separate_pools():
    train, evaluation = rows("train"), rows("eval")
    for split in (train, evaluation):
        multi = [r for r in split if r["task"] == "vqa_multi"]
        assert multi and all(2 <= len(r["query"]["images"]) <= 3 for r in multi)
        assert any(len(r["query"]["images"]) == 2 for r in split if r["task"].strip("<>") == "ocr")

    def images(split: list[dict]) -> set[str]:
        return {i for r in split if isinstance(r["query"], dict) for i in r["query"].get("images", [])}

    assert not images(train) & images(evaluation)  # no eval image is seen in training
    ocr_answers = {r["positive"] for r in evaluation if r["task"].strip("<>") == "ocr"}
    for title in ("Hóa đơn bán lẻ của", "Phiếu đăng ký thành viên của", "Thông báo của"):
        assert any(answer.startswith(title) for answer in ocr_answers), title


def test_documents_are_rendered_in_be_vietnam_pro():
    from scripts import sample_images

    pytest.importorskip("fontpkg")
    assert Path(sample_images.font(20).path).name == "BeVietnamPro-Regular.ttf"
    assert Path(sample_images.font(20, 700).path).name == "BeVietnamPro-Bold.ttf"
    assert sample_images.money(125000) == "125.000 đ"


def test_sample_folder_stays_small():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024, total
