"""A corpus that changes: fingerprints, what a rebuild does with each item, upserts, deletes, sync, kill -9 mid-update.

The fast tests need no model (fingerprints, the classification, the sync arithmetic, the store's one-commit upserts
and deletes, the delete command); the slow ones build with the tiny model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import child_env, make_image, write_jsonl

from scripts import index as cli
from vipyloqwen_tools.index.build import BuildStats, SyncRefused, build, classify, sync_check
from vipyloqwen_tools.index.fingerprint import content_hash, fingerprint, packed
from vipyloqwen_tools.index.items import IndexItem
from vipyloqwen_tools.index.search import Index
from vipyloqwen_tools.index.store import MANIFEST, Store, rows, schema

TOL = 1e-5


# ------------------------------------------------------------------------------------------- fingerprints
def test_content_hash_follows_text_task_image_bytes_and_budget_not_paths(tmp_path):
    make_image(64, 48, seed=1).save(tmp_path / "a.png")
    base = content_hash("xe hơi", None, [str(tmp_path / "a.png")], 64)
    assert content_hash("xe hơi đỏ", None, [str(tmp_path / "a.png")], 64) != base
    assert content_hash("xe hơi", "ocr", [str(tmp_path / "a.png")], 64) != base
    assert content_hash("xe hơi", None, [str(tmp_path / "a.png")], 256) != base  # the image's tokens change
    (tmp_path / "moved").mkdir()
    shutil.copy(tmp_path / "a.png", tmp_path / "moved" / "a.png")
    assert content_hash("xe hơi", None, [str(tmp_path / "moved" / "a.png")], 64) == base  # same bytes elsewhere
    make_image(64, 48, seed=2).save(tmp_path / "a.png")  # same path and size, other pixels
    assert content_hash("xe hơi", None, [str(tmp_path / "a.png")], 64) != base
    assert content_hash("chỉ chữ", None, [], 64) == content_hash("chỉ chữ", None, [], 256)  # text: no budget
    assert content_hash("", None, [], 64) != content_hash(None, None, [], 64)
    with pytest.raises(OSError):
        content_hash("x", None, [str(tmp_path / "gone.png")], 64)


def test_fingerprint_adds_metadata_in_any_key_order():
    content = content_hash("Điều khoản 1", None, [], 64)
    assert fingerprint(content, {"a": 1, "b": "x"}) == fingerprint(content, {"b": "x", "a": 1})
    assert fingerprint(content, {"a": 1}) != fingerprint(content, {"a": 2})
    assert fingerprint(content, {}) != fingerprint(content_hash("Điều khoản 2", None, [], 64), {})


# ------------------------------------------------------------------------------------------- what a rebuild does
def _hashes(content: str, meta: str) -> tuple[str, str]:
    """(content_hash, fingerprint) of a text ``content`` with the metadata ``{"m": meta}``."""
    text_hash = content_hash(content, None, [], 64)
    return text_hash, fingerprint(text_hash, {"m": meta})


def _packed(hashes: tuple[str, str] | tuple[None, None]) -> bytes:
    return packed(*hashes)


def _item(item_id: str, content: str, meta: str) -> IndexItem:
    item = IndexItem(line=1, id=item_id, text=content, images=[], task=None, metadata={"m": meta})
    item.content_hash, item.fingerprint = _hashes(content, meta)
    return item


@pytest.mark.parametrize(
    ("stored", "staged", "expected"),
    [
        (None, None, ("new", "embed")),
        (("c1", "m1"), None, ("unchanged", "skip")),
        (("c0", "m1"), None, ("changed", "embed")),  # the text changed: re-embed
        (("c1", "m0"), None, ("changed", "reuse")),  # metadata only: keep the stored vector
        ("format 1", None, ("changed", "embed")),  # a row of a format-1 db: no fingerprint yet
        (None, ("c1", "m1"), ("new", "resume")),  # staged by an interrupted build: not embedded again
        (("c0", "m0"), ("c1", "m1"), ("changed", "resume")),
        (("c1", "m1"), ("c1", "m1"), ("unchanged", "skip")),  # committed, killed before the shard file's removal
        (None, ("c2", "m1"), ("new", "embed")),  # staged, then edited again before the rerun: the newest content
        (("c1", "m1"), ("c2", "m1"), ("unchanged", "reuse")),  # edited, staged, edited back: the stored row wins
    ],
)
def test_classify(stored, staged, expected):
    item = _item("a", "c1", "m1")
    table = {} if stored is None else {"a": b"" if stored == "format 1" else _packed(_hashes(*stored))}
    pending = {} if staged is None else {"a": _hashes(*staged)[1]}
    assert classify(item, table, pending) == expected


def test_sync_check_refuses_a_large_deletion_unless_forced():
    sync_check(5, 10, 0.5, force=False)  # exactly the share: allowed
    sync_check(0, 0, 0.5, force=False)
    with pytest.raises(SyncRefused, match=r"delete 9 of the 10 rows \(90%\), above --max-delete 0.5.*--force"):
        sync_check(9, 10, 0.5, force=False)
    sync_check(9, 10, 0.5, force=True)
    sync_check(9, 10, 0.9, force=False)
    with pytest.raises(ValueError, match="between 0 and 1"):
        sync_check(0, 10, 1.5, force=False)


def test_build_counts_add_up():
    stats = BuildStats(lines=10, new=2, changed=3, unchanged=4, rejected=1)
    assert stats.lines == stats.new + stats.changed + stats.unchanged + stats.rejected


# ------------------------------------------------------------------------------------------- the store
class Row:
    def __init__(self, item_id: str, text: str, fingerprint_: str | None = None):
        self.id, self.text, self.images, self.task, self.metadata = item_id, text, [], None, {"n": item_id}
        self.content_hash, self.fingerprint = fingerprint_, fingerprint_


def _store(tmp_path: Path, n: int = 6) -> Store:
    store = Store.create_or_open(tmp_path / "db", "m", 4, [1.0, 0.0, 0.0, 0.0])
    store.stage(rows(4, [Row(f"r{i}", f"old {i}", f"f{i}") for i in range(n)], np.eye(n, 4, dtype=np.float32)), "w")
    store.commit_staged()
    return store


def _texts(store: Store) -> dict[str, str]:
    data = store.table.to_arrow()
    return dict(zip(data.column("id").to_pylist(), data.column("text").to_pylist(), strict=True))


def test_upsert_replaces_changed_rows_in_one_commit_and_newer_run_wins(tmp_path):
    store = _store(tmp_path)
    version = store.table.version
    vectors = np.full((2, 4), 0.5, dtype=np.float32)
    store.stage(rows(4, [Row("r1", "new 1", "g1"), Row("x", "added", "gx")], vectors), "w1", run=2)
    store.stage(rows(4, [Row("r1", "stale 1", "s1")], vectors[:1]), "w1", run=1)  # an interrupted older build
    assert [p.name[:9] for p in store.staged_files()] == ["run000001", "run000002"]
    assert store.staged_fingerprints() == {"r1": "g1", "x": "gx"}  # the one committed last
    assert store.commit_staged() == 1
    assert store.table.version == version + 2  # one commit per shard file
    texts = _texts(store)
    assert texts["r1"] == "new 1" and texts["x"] == "added" and len(texts) == 7
    assert "stale 1" not in texts.values() and "old 1" not in texts.values()
    assert store.table.to_arrow().filter(pc.field("id") == "r1").column("fingerprint").to_pylist() == ["g1"]


def test_deletes_are_one_commit_each(tmp_path):
    store = _store(tmp_path, 8)
    version = store.table.version
    assert store.delete_ids(["r0", "r1", "nothere", "r0"]) == 2
    assert store.delete_where("json_get_string(metadata, 'n') = 'r2'") == 1
    assert store.delete_absent({"r3", "r4", "r5", "new"}) == 2  # r6, r7
    assert store.table.version == version + 3
    assert sorted(store.table_ids()) == ["r3", "r4", "r5"]
    with pytest.raises(ValueError, match="empty filter"):
        store.delete_where(" ")


def test_format_1_db_is_searched_as_is_and_upgraded_by_a_build(tmp_path):
    store = _store(tmp_path)
    old = pa.schema([field for field in schema(4) if field.name not in ("content_hash", "fingerprint")])
    data = store.table.to_arrow().select(old.names)
    store._db.drop_table("items")
    store._db.create_table("items", data, schema=old)
    manifest = json.loads((tmp_path / "db" / MANIFEST).read_text())
    (tmp_path / "db" / MANIFEST).write_text(json.dumps({**manifest, "format": 1}))
    old_store = Store.open(tmp_path / "db")
    assert old_store.fingerprints()["r1"] == b""  # classified as changed: re-embedded once
    assert old_store.upgrade() and Store.open(tmp_path / "db").manifest["format"] == 2
    assert set(old_store.table.schema.names) >= {"content_hash", "fingerprint"} and old_store.count() == 6
    assert not old_store.upgrade()


def test_delete_command_by_ids_and_by_where(tmp_path, capsys):
    store = _store(tmp_path, 6)
    db = str(tmp_path / "db")
    assert cli.main(["delete", "--db", db, "--ids", "r0", "r5", "nothere"]) == 0
    assert json.loads(capsys.readouterr().out) == {"db": db, "deleted": 2, "rows_in_db": 4}
    where = "text LIKE 'old 1%' OR json_get_string(metadata, 'n') = 'r2'"
    assert cli.main(["delete", "--db", db, "--where", where]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 2
    assert sorted(store.table_ids()) == ["r3", "r4"]
    assert json.loads((tmp_path / "db" / MANIFEST).read_text())["rows"] == 2
    # rows staged by an interrupted build would come back after a delete: refused until the build is finished
    store.stage(rows(4, [Row("r3", "x", "y")], np.ones((1, 4), dtype=np.float32)), "w", run=3)
    assert cli.main(["delete", "--db", db, "--ids", "r3"]) == 2
    assert "interrupted build" in capsys.readouterr().err and store.count() == 2
    with pytest.raises(SystemExit):
        cli.main(["delete", "--db", db])  # --ids or --where
    with pytest.raises(SystemExit):
        cli.main(["build", "--model", "m", "--items", "i", "--db", db, "--max-delete", "2"])
    assert "a share between 0 and 1" in capsys.readouterr().err


def test_optimize_compacts_many_commits(tmp_path, capsys):
    store = _store(tmp_path, 4)
    for step in range(5):  # five updates: five small fragments and their versions
        store.stage(rows(4, [Row(f"r{step % 4}", f"v{step}", f"h{step}")], np.ones((1, 4), np.float32)), "w", step)
        store.commit_staged()
    before = store.shape()
    with pytest.warns(UserWarning, match="removes every version except the latest"):  # LanceDB's own warning
        assert cli.main(["optimize", "--db", str(tmp_path / "db"), "--keep-versions-days", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["before"] == before and result["after"]["rows"] == before["rows"] == 4
    assert result["after"]["fragments"] < before["fragments"] and result["after"]["versions"] < before["versions"]
    assert result["after"]["disk_bytes"] < before["disk_bytes"]
    assert _texts(store)["r0"] == "v4"


# ------------------------------------------------------------------------------------------- with the model
def _table(db: Path) -> dict[str, dict]:
    data = Store.open(db).table.to_arrow()
    return {row["id"]: row for row in data.to_pylist()}


def _texts_v(version: int, n: int, changed: set[int]) -> list[dict]:
    return [
        {"id": f"d{i}", "text": f"Văn bản {i}, phiên bản {version if i in changed else 1}: điều khoản {'bảo mật ' * i}",
         "source": "contracts" if i % 2 else "policies"}
        for i in range(n)
    ]  # fmt: skip


@pytest.mark.slow
def test_edit_replaces_the_row_searchable_with_the_new_text(tiny_checkpoint, auto_model, tmp_path):
    v1 = _texts_v(1, 6, set())
    db = tmp_path / "db"
    build(auto_model, write_jsonl(tmp_path / "v1.jsonl", v1), db, num_workers=0, log=lambda m: None)
    before = _table(db)
    v2 = [dict(row) for row in v1]
    v2[2]["text"] = "Hợp đồng thuê nhà ở Hà Nội, giá 10 triệu đồng một tháng."
    v2[3]["source"] = "archive"  # metadata only
    stats = build(auto_model, write_jsonl(tmp_path / "v2.jsonl", v2), db, num_workers=0, log=lambda m: None)
    assert (stats.new, stats.changed, stats.unchanged, stats.rejected) == (0, 2, 4, 0)
    assert (stats.embedded, stats.reused) == (1, 1)
    table = _table(db)
    assert len(table) == 6 and table["d2"]["text"] == v2[2]["text"]
    assert all(row["text"] != v1[2]["text"] for row in table.values())  # the old text is gone
    assert json.loads(table["d3"]["metadata"])["source"] == "archive"
    new_vector = auto_model.encode(text=v2[2]["text"], num_workers=0)[0]
    assert np.abs(np.asarray(table["d2"]["vector"]) - new_vector.numpy()).max() < TOL
    assert table["d3"]["vector"] == before["d3"]["vector"]  # metadata only: the stored vector is kept
    hits = Index(db, auto_model).search(v2[2]["text"], k=6)
    assert hits[0]["id"] == "d2" and abs(hits[0]["score"] - 1.0) < 1e-4
    old = Index(db, auto_model).search(v1[2]["text"], k=6)
    assert all(hit["text"] != v1[2]["text"] for hit in old)


@pytest.mark.slow
def test_sync_deletes_rows_of_removed_items_and_refuses_a_90_percent_deletion(
    auto_model, tiny_checkpoint, tmp_path, capsys
):
    rows_ = _texts_v(1, 10, set())
    db = tmp_path / "db"
    build(auto_model, write_jsonl(tmp_path / "all.jsonl", rows_), db, num_workers=0, log=lambda m: None)
    version = Store.open(db).table.version
    truncated = write_jsonl(tmp_path / "one.jsonl", rows_[:1])  # a file cut short: 9 of the 10 rows would go
    with pytest.raises(SyncRefused, match=r"delete 9 of the 10 rows \(90%\), above --max-delete 0.5"):
        build(auto_model, truncated, db, num_workers=0, sync=True, log=lambda m: None)
    assert len(_table(db)) == 10 and Store.open(db).table.version == version  # nothing written
    assert not Store.open(db).staged_files()
    argv = ["build", "--model", str(tiny_checkpoint), "--items", str(truncated), "--db", str(db)]
    capsys.readouterr()
    assert cli.main([*argv, "--sync"]) == 2 and "--force" in capsys.readouterr().err
    assert len(_table(db)) == 10

    stats = build(auto_model, write_jsonl(tmp_path / "nine.jsonl", rows_[:9]), db, num_workers=0, sync=True,
                  log=lambda m: None)  # fmt: skip
    assert (stats.unchanged, stats.deleted, stats.embedded) == (9, 1, 0) and "d9" not in _table(db)
    stats = build(auto_model, truncated, db, num_workers=0, sync=True, force=True, log=lambda m: None)
    assert stats.deleted == 8 and list(_table(db)) == ["d0"]


# A child process that updates the db and dies by SIGKILL: while staging (after two shard files) or while committing
# (right after the first shard file's upsert went through, before the rest).
UPDATER = """
import os, signal
import lancedb.merge
from vipyloqwen_tools.index.build import build
where = {where!r}
if where == "commit":
    execute = lancedb.merge.LanceMergeInsertBuilder.execute
    def execute_then_die(self, *args, **kwargs):
        result = execute(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    lancedb.merge.LanceMergeInsertBuilder.execute = execute_then_die
windows = []
def log(message):
    windows.append(message)
    if where == "staging" and len(windows) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
build({model!r}, {items!r}, {db!r}, batch_size=2, num_workers=0, commit_every=2, log=log)
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["staging", "commit"])
def test_kill_9_during_an_update_then_rerun_gives_every_id_once_with_the_newest_content(
    where, tiny_checkpoint, auto_model, tmp_path
):
    db = tmp_path / "db"
    v1 = _texts_v(1, 8, set())
    build(auto_model, write_jsonl(tmp_path / "v1.jsonl", v1), db, num_workers=0, log=lambda m: None)
    v2 = _texts_v(2, 8, {1, 2, 3, 4, 5, 6}) + [{"id": "extra", "text": "Một mục mới"}]
    items = write_jsonl(tmp_path / "v2.jsonl", v2)
    script = UPDATER.format(where=where, model=str(tiny_checkpoint), items=str(items), db=str(db))
    killed = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, timeout=600)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    store = Store.open(db)
    staged = store.staged_fingerprints()
    texts = _texts(store)
    updated = {row["id"] for row in v2 if texts.get(row["id"]) == row["text"]} - {f"d{i}" for i in (0, 7)}
    if where == "staging":  # two windows of two items staged, the table untouched
        assert len(staged) == 4 and texts == {row["id"]: row["text"] for row in v1} and not updated
    else:  # killed between two upsert commits: some rows new, others old, the shard files all still there
        assert len(staged) == 7 and 0 < len(updated) < 7
    # before the rerun, one item staged by the killed run is edited again: the newest text must win
    newest = next(row for row in v2 if row["id"] in staged)
    newest["text"] = "Phiên bản 3, sửa sau khi tiến trình bị giết"
    stats = build(auto_model, write_jsonl(tmp_path / "v3.jsonl", v2), db, batch_size=2, num_workers=0,
                  commit_every=2, log=lambda m: None)  # fmt: skip
    assert stats.lines == stats.new + stats.changed + stats.unchanged + stats.rejected
    table = _table(db)
    ids = Store.open(db).table.to_arrow().column("id").to_pylist()
    assert sorted(ids) == sorted(row["id"] for row in v2) and len(ids) == len(set(ids))  # every id exactly once
    expected = auto_model.encode(text=[row["text"] for row in v2], num_workers=0).numpy()
    for row, vector in zip(v2, expected, strict=True):
        assert table[row["id"]]["text"] == row["text"], row["id"]  # the newest content
        assert np.abs(np.asarray(table[row["id"]]["vector"]) - vector).max() < TOL, row["id"]
    assert not Store.open(db).staged_files()
    if where == "staging":
        assert stats.resumed == len(staged) - 1  # the staged rows were not embedded again, but the re-edited one


@pytest.mark.slow
def test_index_bench_sync_and_compaction_report_every_field(tiny_checkpoint, tmp_path):
    from bench import index_bench, report

    out = tmp_path / "index-sync.json"
    argv = ["--sizes", "none", "--sync", "--sync-model", str(tiny_checkpoint), "--sync-items", "200", "--repeats", "1"]
    argv += ["--compaction", "--compaction-rows", "300", "--compaction-dim", "16", "--compaction-updates", "3"]
    index_bench.main([*argv, "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    sync = written["sync"]
    assert sync["sync_counts"] == {"lines": 200, "new": 0, "changed": 2, "unchanged": 198, "embedded": 2}
    assert set(sync["seconds"]) == {"full build", "sync, changed", "sync, unchanged"} and sync["sync_over_full"] > 0
    shapes = written["compaction"]["shapes"]
    assert shapes["after_updates"]["fragments"] == 4 and shapes["optimize --keep-versions-days 0"]["versions"] == 1
    assert all(shape["rows"] == 300 for shape in shapes.values())
    markdown = report.index_section(written)
    assert "| sync, changed |" in markdown and "| after the 3 upserts | 4 |" in markdown
