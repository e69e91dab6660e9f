"""``--items FOLDER``: text files, images and PDFs (page by page) as items; a rerun of the same folder is a sync.

Fast: the walk, the rejects (encrypted, damaged PDFs, non-UTF-8 text), the written items file, the page renders
within the image budget. Slow: builds of a generated folder with the tiny model (8 items; a second run changes
nothing; an edited file alone is re-embedded, counted at the model; a touched file keeps its vector; --sync drops a
deleted file; a PDF page is found with its path and page).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, write_jsonl

from scripts import index as cli
from vipyloqwen_tools.index.build import build, probe_vector
from vipyloqwen_tools.index.folder import read_folder
from vipyloqwen_tools.index.items import read_items
from vipyloqwen_tools.index.pdf import PdfError, max_pixels, page_sizes, render_page, render_scale, render_size
from vipyloqwen_tools.index.search import Index
from vipyloqwen_tools.index.store import Store

TOL = 1e-5
ITEM_IDS = [
    "a.txt",
    "report.pdf#page=1",
    "report.pdf#page=2",
    "report.pdf#page=3",
    "x.png",
    "notes/b.md",
    "notes/c.txt",
    "photos/y.jpg",
]


def make_folder(root: Path) -> Path:
    """3 texts, 2 images, a 3-page PDF (pages of different sizes), and files that are no items."""
    (root / "notes").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "a.txt").write_text("Điều khoản bảo mật: bên B giữ bí mật thông tin khách hàng.", encoding="utf-8")
    (root / "notes" / "b.md").write_text("# Chính sách đổi trả\n\nĐổi trả trong 30 ngày.", encoding="utf-8")
    (root / "notes" / "c.txt").write_text("Hợp đồng mua bán xe hơi màu đỏ.", encoding="utf-8")
    make_image(160, 120, seed=1).save(root / "x.png")
    make_image(120, 180, seed=2).save(root / "photos" / "y.jpg")
    pages = [make_image(595, 842, seed=3), make_image(842, 595, seed=4), make_image(400, 400, seed=5)]
    pages[0].save(root / "report.pdf", save_all=True, append_images=pages[1:], resolution=72)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD.txt").write_text("hidden: not an item")
    (root / "data.csv").write_text("a,b\n")
    return root


def pdf_bytes(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A small PDF file written object by object (with its cross-reference table)."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R " % (len(objects) + 1) + trailer + b">>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


PAGE = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"]  # fmt: skip


def encrypted_pdf() -> bytes:
    """A PDF under the standard security handler with a user password: the empty password does not open it, as
    for any PDF that asks for a password when opened."""
    encrypt = b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>"
    return pdf_bytes([*PAGE, encrypt], b"/Encrypt 4 0 R /ID [<" + b"33" * 16 + b"> <" + b"33" * 16 + b">] ")


# ------------------------------------------------------------------------------------------- the walk
def test_folder_of_3_texts_2_images_and_a_3_page_pdf_gives_8_items(tmp_path):
    root = make_folder(tmp_path / "docs")
    skipped = Counter()
    out = list(read_folder(root, skipped=skipped))
    assert [item_id for _, _, _, item_id in out] == ITEM_IDS and all(error is None for _, _, error, _ in out)
    items = {item.id: item for _, item, _, _ in out}
    assert items["a.txt"].text.startswith("Điều khoản") and items["a.txt"].images == []
    assert items["x.png"].images == [str((root / "x.png").resolve())] and items["x.png"].text is None
    page = items["report.pdf#page=2"]
    assert page.images == [f"{(root / 'report.pdf').resolve()}#page=2"]
    assert page.metadata == {"path": "report.pdf", "page": 2, "mtime": (root / "report.pdf").stat().st_mtime}
    assert items["notes/b.md"].metadata == {"path": "notes/b.md", "mtime": (root / "notes/b.md").stat().st_mtime}
    assert [line for line, *_ in out] == list(range(1, 9))
    assert skipped == {".csv": 1}  # .git is hidden: not walked


def test_unreadable_files_are_rejects_with_the_reason(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "secret.pdf").write_bytes(encrypted_pdf())
    (root / "damaged.pdf").write_bytes(b"%PDF-1.4 cut short")
    (root / "one.pdf").write_bytes(pdf_bytes(PAGE))
    (root / "latin1.txt").write_bytes("Điều khoản".encode("cp1258", errors="replace") + b"\xff")
    out = {item_id: (item, error) for _, item, error, item_id in read_folder(root)}
    assert set(out) == {"damaged.pdf", "latin1.txt", "one.pdf#page=1", "secret.pdf"}
    assert "encrypted PDF (a password is needed to open it)" in out["secret.pdf"][1]
    assert out["secret.pdf"][1].startswith("secret.pdf: ")  # named by its place in the folder
    assert "cannot read the PDF" in out["damaged.pdf"][1]
    assert "not UTF-8 text" in out["latin1.txt"][1]
    assert out["one.pdf#page=1"][1] is None
    with pytest.raises(PdfError, match="encrypted"):
        page_sizes(root / "secret.pdf")


def test_written_items_file_reads_back_as_the_same_items(tmp_path):
    root = make_folder(tmp_path / "docs")
    written = tmp_path / "out" / "items.jsonl"
    walked = [item for _, item, _, _ in read_folder(root, write_items=written)]
    again = [item for _, item, _, _ in read_items(written)]
    assert [vars(a) for a in again] == [vars(w) for w in walked]
    assert json.loads(written.read_text(encoding="utf-8").splitlines()[1])["id"] == "report.pdf#page=1"


def test_page_reference_in_an_items_file(tmp_path):
    root = make_folder(tmp_path / "docs")
    items = write_jsonl(root / "items.jsonl", [{"id": "p", "text": "trang 2", "images": ["report.pdf#page=2"]},
                                               {"id": "q", "images": ["report.pdf#page=4"]}])  # fmt: skip
    (_, item, _, _), (_, bad, error, _) = read_items(items)
    assert item.images == [f"{(root / 'report.pdf').resolve()}#page=2"] and bad is None
    assert "image 1: " in error and "no page 4 (the PDF has 3 pages)" in error


# ------------------------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("tokens", [64, 1024])
def test_pages_render_within_the_image_budget(tmp_path, tokens):
    root = make_folder(tmp_path / "docs")
    pixels = max_pixels(tokens)
    for page, (width_pt, height_pt) in enumerate(page_sizes(root / "report.pdf"), start=1):
        image = render_page(root / "report.pdf", page, pixels)
        assert image.mode == "RGB" and image.size == render_size(root / "report.pdf", page, pixels)
        width, height = image.size
        assert width * height <= pixels and width * height > 0.97 * pixels  # fills the budget
        assert abs(width / height - width_pt / height_pt) < 0.02  # aspect kept
    # the resolution follows the budget: an A4 page at the default 1024 tokens
    assert round(72 * render_scale((595, 842), max_pixels(1024))) == 91


# ------------------------------------------------------------------------------------------- builds
@pytest.fixture
def counted(auto_model, monkeypatch):
    """The model, counting the items its forward embeds (its probe embedding, computed once per model, first)."""
    probe_vector(auto_model)
    seen = []
    forward = auto_model.embed_batch

    def embed_batch(batch, *args, **kwargs):
        seen.append(int(batch["input_ids"].shape[0]))
        return forward(batch, *args, **kwargs)

    monkeypatch.setattr(auto_model, "embed_batch", embed_batch)
    return auto_model, seen


@pytest.mark.slow
def test_folder_rebuild_is_a_sync(counted, tmp_path, capsys):
    model, seen = counted
    root, db = make_folder(tmp_path / "docs"), tmp_path / "db"
    quiet = {"num_workers": 0, "log": lambda message: None}
    stats = build(model, root, db, write_items=tmp_path / "items.jsonl", **quiet)
    assert (stats.lines, stats.new, stats.rejected, stats.embedded, sum(seen)) == (8, 8, 0, 8, 8)
    assert sorted(Store.open(db).table_ids()) == sorted(ITEM_IDS)
    assert len((tmp_path / "items.jsonl").read_text().splitlines()) == 8
    first = {row["id"]: row for row in Store.open(db).table.to_arrow().to_pylist()}

    seen.clear()
    stats = build(model, root, db, **quiet)  # the same folder again: nothing to do
    assert (stats.unchanged, stats.new, stats.changed, stats.embedded, sum(seen)) == (8, 0, 0, 0, 0)

    (root / "notes" / "b.md").write_text("# Chính sách đổi trả\n\nĐổi trả trong 7 ngày.", encoding="utf-8")
    os.utime(root / "x.png", (1_700_000_000, 1_700_000_000))  # touched: only its mtime changes
    stats = build(model, root, db, **quiet)
    assert (stats.changed, stats.unchanged, stats.embedded, stats.reused, sum(seen)) == (2, 6, 1, 1, 1)
    now = {row["id"]: row for row in Store.open(db).table.to_arrow().to_pylist()}
    assert now["notes/b.md"]["text"].endswith("7 ngày.")
    assert now["notes/b.md"]["vector"] != first["notes/b.md"]["vector"]
    assert now["x.png"]["vector"] == first["x.png"]["vector"] and json.loads(now["x.png"]["metadata"])["mtime"] == 1.7e9
    assert all(now[i]["vector"] == first[i]["vector"] for i in ITEM_IDS if i not in ("notes/b.md",))

    (root / "report.pdf").unlink()
    stats = build(model, root, db, sync=True, **quiet)  # 3 of 8 rows go: under --max-delete 0.5
    assert (stats.deleted, stats.unchanged, sum(seen)) == (3, 5, 1)
    assert not any(i.startswith("report.pdf") for i in Store.open(db).table_ids())


@pytest.mark.slow
def test_pdf_pages_are_embedded_as_rendered_and_found_with_path_and_page(auto_model, tmp_path, processor):
    root, db = make_folder(tmp_path / "docs"), tmp_path / "db"
    build(auto_model, root, db, num_workers=0, log=lambda message: None)
    page = render_page(root / "report.pdf", 2, max_pixels(processor.max_image_tokens))
    vector = auto_model.encode(images=page, num_workers=0)[0]
    stored = {row["id"]: row for row in Store.open(db).table.to_arrow().to_pylist()}
    assert np.abs(np.asarray(stored["report.pdf#page=2"]["vector"]) - vector.numpy()).max() < TOL
    hits = Index(db, auto_model).search(page, k=3)
    assert hits[0]["id"] == "report.pdf#page=2" and abs(hits[0]["score"] - 1) < 1e-4
    assert hits[0]["metadata"]["path"] == "report.pdf" and hits[0]["metadata"]["page"] == 2
    assert hits[0]["images"] == [f"{(root / 'report.pdf').resolve()}#page=2"]


@pytest.mark.slow
def test_cli_builds_a_folder_and_reports_rejected_files(tiny_checkpoint, tmp_path, capsys):
    root = make_folder(tmp_path / "docs")
    (root / "secret.pdf").write_bytes(encrypted_pdf())
    db = tmp_path / "db"
    argv = ["build", "--model", str(tiny_checkpoint), "--items", str(root), "--db", str(db), "--num-workers", "0"]
    assert cli.main([*argv, "--write-items", str(tmp_path / "items.jsonl")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["lines"], out["new"], out["rejected"]) == (9, 8, 1)
    reject = json.loads((db / "rejects.jsonl").read_text(encoding="utf-8"))
    assert reject["line"] is None and reject["id"] == "secret.pdf" and "encrypted PDF" in reject["error"]
    assert cli.main(["build", "--model", str(tiny_checkpoint), "--items", str(tmp_path / "nothere"), "--db",
                     str(db)]) == 2  # fmt: skip
    assert "items file or folder not found" in capsys.readouterr().err


@pytest.mark.slow
def test_pages_render_in_thread_and_process_workers_with_identical_vectors(auto_model, tmp_path):
    """PDFium allows one call at a time per process: threads take turns (a lock), forked workers render apart."""
    root = make_folder(tmp_path / "docs")
    tables = {}
    for label, workers in (("none", {"num_workers": 0}), ("threads", {"num_workers": 2, "worker_type": "thread"}),
                           ("processes", {"num_workers": 2, "worker_type": "process"})):  # fmt: skip
        build(auto_model, root, tmp_path / label, batch_size=2, log=lambda message: None, **workers)
        data = Store.open(tmp_path / label).table.to_arrow().sort_by("id")
        tables[label] = (data.column("id").to_pylist(), np.stack(data.column("vector").to_numpy(zero_copy_only=False)))
    for label in ("threads", "processes"):
        assert tables[label][0] == tables["none"][0] and np.array_equal(tables[label][1], tables["none"][1]), label
