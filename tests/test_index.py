"""scripts/index.py: build -> search is exact brute force; append, kill-and-resume, 2 processes, rejects, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import child_env, free_port, make_image, write_jsonl

from scripts import index as cli
from vipyloqwen_tools.index.build import build
from vipyloqwen_tools.index.search import Index, query_table
from vipyloqwen_tools.index.store import Store, StoreError, rows

REPO = Path(__file__).resolve().parent.parent
TOL = 1e-5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """15 good items (text, image, text+image, multi-image, an <ocr> item, metadata) + 5 bad lines."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "img").mkdir()
    for seed in range(5):
        make_image(160 + 30 * seed, 120 + 20 * seed, seed=seed).save(folder / "img" / f"p{seed}.png")
    (folder / "img" / "broken.png").write_bytes(b"not an image at all")
    make_image(2020, 10, seed=1).save(folder / "img" / "thin.png")  # aspect ratio 202: Qwen2-VL cannot take it
    good = [
        {
            "id": f"doc{i}",
            "text": f"Điều khoản số {i}: bên B bảo mật thông tin khách hàng {'và dữ liệu ' * i}",
            "lang": "vi",
            "source": "contracts" if i % 2 else "policies",
        }
        for i in range(9)
    ]
    good += [
        {"id": "page0", "images": ["img/p0.png"], "source": "scans"},
        {"id": "page1", "images": ["img/p1.png"]},
        {"id": "car", "text": "Một chiếc xe hơi màu đỏ", "images": ["img/p2.png"]},
        {"id": "two", "text": "Hai biểu đồ doanh thu", "images": ["img/p3.png", "img/p4.png"]},
        {"id": "plate", "text": "Biển số xe này là gì?", "images": ["img/p2.png"], "task": "ocr"},
        {"id": "typed", "text": "<instr> Viết một bài thơ"},
    ]
    bad_rows = [
        {"id": "doc3", "text": "a repeated id"},
        {"id": "lost", "images": ["img/nothere.png"]},
        {"id": "broken", "text": "bad bytes", "images": ["img/broken.png"]},
        {"text": "no id"},
    ]
    thin = json.dumps({"id": "thin", "images": ["img/thin.png"]})
    path = write_jsonl(
        folder / "items.jsonl", good[:7] + bad_rows[:2] + good[7:] + bad_rows[2:] + ["{this is not json", thin]
    )
    return {"path": path, "good": good, "folder": folder}


def _encode_items(model, items: list[dict], folder: Path) -> torch.Tensor:
    texts = [item.get("text") for item in items]
    images = [[str(folder / p) for p in item["images"]] if item.get("images") else None for item in items]
    out = []
    for item, text, image in zip(items, texts, images, strict=True):  # one by one: independent of the builder
        out.append(model.encode(text=text, images=image, task=item.get("task"), num_workers=0))
    return torch.cat(out)


def _table(db: Path) -> dict[str, np.ndarray]:
    data = Store.open(db).table.to_arrow().sort_by("id")
    vectors = np.stack(data.column("vector").to_numpy(zero_copy_only=False))
    return {"ids": data.column("id").to_pylist(), "vectors": vectors, "data": data}


@pytest.fixture(scope="module")
def built(corpus, tiny_checkpoint, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "index"
    stats = build(str(tiny_checkpoint), corpus["path"], db, batch_size=3, num_workers=0, commit_every=4)
    return db, stats


def test_build_counts_and_rejects_with_line_numbers(built, corpus):
    db, stats = built
    assert (stats.lines, stats.new, stats.changed, stats.unchanged, stats.rejected) == (21, 15, 0, 0, 6)
    assert stats.lines == stats.new + stats.changed + stats.unchanged + stats.rejected
    assert stats.embedded == 15
    rejects = [json.loads(line) for line in (db / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["id"]) for r in rejects] == [
        (8, "doc3"),
        (9, "lost"),
        (18, "broken"),
        (19, None),
        (20, None),
        (21, "thin"),
    ]
    assert "duplicate id 'doc3' (first at line 4)" in rejects[0]["error"]
    assert "nothere.png" in rejects[1]["error"] and "not found" in rejects[1]["error"]
    assert rejects[2]["error"].startswith("line 18, image 1: cannot read image")
    assert "'id' must be a non-empty string" in rejects[3]["error"]
    assert "not valid JSON" in rejects[4]["error"]
    assert rejects[5]["error"].startswith("line 21, image 1: aspect ratio 202 exceeds 200")
    table = _table(db)
    assert sorted(table["ids"]) == sorted(item["id"] for item in corpus["good"])
    manifest = json.loads((db / "vipyloqwen-index.json").read_text(encoding="utf-8"))
    assert manifest["embed_dim"] == 32 and manifest["last_build"]["new"] == 15
    assert not list((db / "_staging").glob("*.arrow"))


def test_stored_rows_keep_text_images_task_and_metadata(built, corpus):
    db, _ = built
    rows_ = {row["id"]: row for row in _table(db)["data"].to_pylist()}
    assert json.loads(rows_["doc1"]["metadata"]) == {"lang": "vi", "source": "contracts"}
    assert rows_["plate"]["task"] == "ocr" and rows_["typed"]["task"] is None
    assert rows_["two"]["images"] == [str(corpus["folder"].resolve() / "img" / p) for p in ("p3.png", "p4.png")]


@pytest.mark.parametrize(
    "query",
    [
        "Tìm điều khoản bảo mật",
        {"images": ["img/p1.png"]},
        {"text": "Biển số xe này là gì?", "images": ["img/p2.png"], "task": "ocr"},
    ],
    ids=["text", "image", "text+image"],
)
def test_search_equals_exact_brute_force(built, corpus, auto_model, query):
    db, _ = built
    index = Index(db, auto_model)
    if isinstance(query, dict) and "images" in query:
        query = {**query, "images": [str(corpus["folder"] / p) for p in query["images"]]}
    vectors = _encode_items(auto_model, corpus["good"], corpus["folder"])
    q = index.embed(query)
    scores = vectors @ q
    order = torch.argsort(scores, descending=True)[:5].tolist()
    for exact in (False, True):  # a small db has no ANN index: both are the exact scan
        hits = index.search(query, k=5, exact=exact)
        assert [h["id"] for h in hits] == [corpus["good"][i]["id"] for i in order]
        assert np.allclose([h["score"] for h in hits], scores[order].numpy(), atol=TOL, rtol=0)


def test_stored_vectors_equal_encode(built, corpus, auto_model):
    db, _ = built
    table = _table(db)
    by_id = dict(zip(table["ids"], table["vectors"], strict=True))
    vectors = _encode_items(auto_model, corpus["good"], corpus["folder"]).numpy()
    for item, vector in zip(corpus["good"], vectors, strict=True):
        assert np.abs(by_id[item["id"]] - vector).max() < TOL, item["id"]


@pytest.mark.slow
def test_where_filter_and_search_cli_json(built, tiny_checkpoint, capsys):
    db, _ = built
    argv = ["search", "--model", str(tiny_checkpoint), "--db", str(db), "--text", "bảo mật", "--top-k", "20"]
    assert cli.main([*argv, "--json", "--where", "json_get_string(metadata, 'source') = 'contracts'"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {h["id"] for h in result["hits"]} == {"doc1", "doc3", "doc5", "doc7"}
    assert all(h["metadata"]["source"] == "contracts" for h in result["hits"])
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert cli.main([*argv[:-2], "--top-k", "3", "--exact"]) == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert len(lines) == 3 and lines[0][:6] in ("  1. +", "  1. -")


@pytest.mark.slow
def test_append_adds_only_new_ids(corpus, tiny_checkpoint, tmp_path, built):
    first = write_jsonl(tmp_path / "items.jsonl", corpus["good"][:6])
    db = tmp_path / "db"
    build(str(tiny_checkpoint), first, db, batch_size=4, num_workers=0)
    before = _table(db)
    stats = build(str(tiny_checkpoint), corpus["path"], db, batch_size=3, num_workers=0, commit_every=4)
    assert (stats.new, stats.unchanged, stats.changed, stats.rejected, stats.embedded) == (9, 6, 0, 6, 9)
    after = _table(db)
    assert sorted(after["ids"]) == sorted(item["id"] for item in corpus["good"])  # each id once
    old = {i: v for i, v in zip(after["ids"], after["vectors"], strict=True) if i in before["ids"]}
    assert all(np.array_equal(old[i], v) for i, v in zip(before["ids"], before["vectors"], strict=True))


def test_workers_give_bit_identical_vectors(corpus, tiny_checkpoint, tmp_path, built):
    reference = _table(built[0])
    build(str(tiny_checkpoint), corpus["path"], tmp_path / "db", 3, num_workers=2, commit_every=4)
    got = _table(tmp_path / "db")  # threads: tests/test_prefetch_vipyloqwen.py
    assert got["ids"] == reference["ids"] and np.array_equal(got["vectors"], reference["vectors"])


KILLER = """
import os, signal
from vipyloqwen_tools.index.build import build
windows = []
def log(message):
    windows.append(message)
    if len(windows) == 2:  # two shard files written: die like a killed job (no cleanup, no commit)
        os.kill(os.getpid(), signal.SIGKILL)
build({model!r}, {items!r}, {db!r}, batch_size=2, num_workers=0, commit_every=3, log=log)
"""


@pytest.mark.slow
def test_kill_and_resume_neither_duplicates_nor_loses(corpus, tiny_checkpoint, tmp_path):
    db = tmp_path / "db"
    script = KILLER.format(model=str(tiny_checkpoint), items=str(corpus["path"]), db=str(db))
    env = child_env()
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    staged = list((db / "_staging").glob("*.arrow"))
    assert len(staged) == 2 and Store.open(db).count() == 0  # nothing committed, two shards on disk
    stats = build(str(tiny_checkpoint), corpus["path"], db, batch_size=2, num_workers=0, commit_every=3)
    assert stats.resumed == 6 and stats.embedded == 9  # the staged items were not embedded again
    assert stats.new == 15 and stats.unchanged == 0  # all new to the table
    ids = _table(db)["ids"]
    assert sorted(ids) == sorted(item["id"] for item in corpus["good"]) and len(ids) == len(set(ids))


def test_commit_interrupted_before_shard_removal_adds_nothing_twice(tmp_path):
    store = Store.create_or_open(tmp_path / "db", "m", 4, [1.0, 0.0, 0.0, 0.0])

    class Item:
        def __init__(self, name):
            self.id, self.text, self.images, self.task, self.metadata = name, name, [], None, {}

    data = rows(4, [Item("a"), Item("b")], np.eye(4, dtype=np.float32)[:2])
    store.stage(data, "w1-r0")
    shard = store.staged_files()[0]
    keep = shard.read_bytes()
    assert store.commit_staged() == 2
    shard.write_bytes(keep)  # as if killed between the table commit and the unlink
    store.stage(rows(4, [Item("c")], np.eye(4, dtype=np.float32)[2:3]), "w2-r0")
    assert store.commit_staged() == 1 and sorted(store.table_ids()) == ["a", "b", "c"]


@pytest.mark.slow
def test_two_process_torchrun_build_equals_one_process(corpus, tiny_checkpoint, tmp_path, built):
    db = tmp_path / "db2"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port())]
    command += [str(REPO / "scripts" / "index.py")]
    command += ["build", "--model", str(tiny_checkpoint), "--items", str(corpus["path"]), "--db", str(db)]
    command += ["--batch-size", "3", "--num-workers", "0", "--commit-every", "4"]
    done = subprocess.run(command, env=child_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1/2" in done.stderr and "rank 0/2" in done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["lines"], summary["new"], summary["rejected"]) == (21, 15, 6)
    reference, got = _table(built[0]), _table(db)
    assert got["ids"] == reference["ids"]  # every item exactly once
    assert np.abs(got["vectors"] - reference["vectors"]).max() < 1e-6  # same batches as one process
    assert (db / "rejects.jsonl").read_text() == (built[0] / "rejects.jsonl").read_text()


def test_unknown_or_foreign_db_folder(tmp_path, tiny_checkpoint, corpus, capsys):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(tmp_path / "nothing")
    assert cli.main(["search", "--db", str(tmp_path / "nothing"), "--text", "x"]) == 2
    assert "no index at" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a viPyloQwen index"):
        Store.open(foreign)
    assert cli.main(["build", "--model", str(tiny_checkpoint), "--items", str(corpus["path"]), "--db", str(foreign)])
    assert "is not a viPyloQwen index" in capsys.readouterr().err and sorted(os.listdir(foreign)) == ["notes.txt"]


@pytest.mark.parametrize(("embed_dim", "seed", "why"), [(16, 0, "widths differ"), (32, 1, "embeddings differ")])
def test_db_of_another_model_is_refused_naming_both(built, corpus, tiny_parts, tmp_path, embed_dim, seed, why):
    from modeling_vipyloqwen import ViPyloQwenModel
    from vipyloqwen_tools.checkpoint.export import save_checkpoint, tiny_config

    torch.manual_seed(seed)  # another random model, same tokenizer and processor
    other = save_checkpoint(ViPyloQwenModel(tiny_config(embed_dim)).eval(), tiny_parts[1], tmp_path / "other")
    db, _ = built
    manifest = json.loads((db / "vipyloqwen-index.json").read_text(encoding="utf-8"))
    # search refuses the other width, build (append) the other weights; both go through Store.check_model
    attempt = (lambda: Index(db, str(other))) if seed == 0 else lambda: build(str(other), corpus["path"], db)
    with pytest.raises(StoreError, match=why) as error:
        attempt()
    assert manifest["model"] in str(error.value) and str(other) in str(error.value)


def test_ann_index_on_a_larger_table_and_exact_override(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store.create_or_open(tmp_path / "db", "m", 32, vectors[0].tolist())

    class Item:
        def __init__(self, number):
            self.id, self.text, self.images, self.task, self.metadata = f"v{number}", None, [], None, {"n": number}

    store.stage(rows(32, [Item(n) for n in range(600)], vectors), "w0-r0")
    store.commit_staged()
    assert store.ensure_indexes(index_min_rows=500)["vector_index"] == "IVF_PQ" and store.has_vector_index()
    query = torch.from_numpy(vectors[7] * 0.8 + vectors[8] * 0.2)
    query = query / query.norm()
    exact = query_table(store, query, k=10, exact=True)
    brute = np.argsort(-(vectors @ query.numpy()))[:10]
    assert [h["id"] for h in exact] == [f"v{i}" for i in brute]
    approximate = query_table(store, query, k=10)
    assert approximate[0]["id"] == exact[0]["id"]  # re-ranked with full vectors
    assert abs(approximate[0]["score"] - exact[0]["score"]) < TOL
    filtered = query_table(store, query, k=5, where="json_get_int(metadata, 'n') < 100", exact=True)
    assert all(h["metadata"]["n"] < 100 for h in filtered) and len(filtered) == 5


def test_cli_rejects_bad_arguments(tmp_path, tiny_checkpoint):
    with pytest.raises(SystemExit):
        cli.main(["search", "--db", str(tmp_path)])
    items = write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "text": "x"}])
    with pytest.raises(ValueError, match="batch_size"):
        build(str(tiny_checkpoint), items, tmp_path / "db", batch_size=0)
    shutil.rmtree(tmp_path / "db", ignore_errors=True)


def test_empty_and_whitespace_texts_are_items_as_in_encode(tiny_checkpoint, auto_model, st_model, tmp_path):
    """"", "   " and a bare "<ocr>" are valid items in encode, Sentence-Transformers (the clients' path) and the
    indexer, with the same vectors; an item with no text key and no image is rejected everywhere."""
    texts = ["", "   ", "<ocr>", "\n"]
    rows_ = [*({"id": f"e{i}", "text": text} for i, text in enumerate(texts)), '{"id": "none"}']
    items = write_jsonl(tmp_path / "items.jsonl", rows_)
    stats = build(str(tiny_checkpoint), items, tmp_path / "db", num_workers=0)
    assert (stats.new, stats.rejected) == (4, 1)
    reject = json.loads((tmp_path / "db" / "rejects.jsonl").read_text(encoding="utf-8"))
    assert reject["line"] == 5 and "has neither text nor images" in reject["error"]
    stored = _table(tmp_path / "db")
    encoded = auto_model.encode(text=texts, num_workers=0)
    assert np.allclose(stored["vectors"], encoded.numpy(), atol=TOL)
    assert torch.allclose(st_model.encode(texts, convert_to_tensor=True), encoded, atol=TOL)
    assert torch.equal(encoded[0], encoded[1]) and not torch.allclose(encoded[0], encoded[2])
    with pytest.raises(ValueError, match=r"item 1 \(text ''\): has neither text nor image"):
        auto_model.encode(text=[None])


def test_wrong_model_path_is_one_line_naming_it_and_the_fix(tiny_checkpoint, tmp_path, capsys):
    items = write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "text": "x"}])
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "nothere", "no such folder"),  # an absolute path: never a Hub id
        ("build/nothere", "not a Hub model in the local cache"),  # could be a Hub id: the offline cache says no
        (tmp_path / "empty", "not a checkpoint (no config.json"),
        (items, "a file, not a checkpoint folder"),
    ]
    for model, says in cases:
        assert cli.main(["build", "--model", str(model), "--items", str(items), "--db", str(tmp_path / "db")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --model {model}: ") and says in err, err
        assert "build_model.py" in err or "config.json" in err  # the fix
    assert not (tmp_path / "db").exists()
    # the real process: one line on stderr, no traceback
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "index.py"), "search", "--model", "./nothere", "--db", str(tmp_path),
         "--text", "x"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.slow
def test_db_whose_model_folder_moved_says_so_and_takes_model(tiny_checkpoint, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    build(str(model), write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "text": "hợp đồng"}]), tmp_path / "db")
    model.rename(tmp_path / "moved")
    capsys.readouterr()  # the build's progress bars
    assert cli.main(["search", "--db", str(tmp_path / "db"), "--text", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the model of {tmp_path / 'db'} (its manifest) {model}: no such folder" in err
    assert "give its new place: --model" in err
    assert cli.main(["search", "--db", str(tmp_path / "db"), "--model", str(tmp_path / "moved"), "--text", "x"]) == 0
