"""Beyond one machine: ``torchrun --nnodes 2 --rdzv-backend c10d``, two launches on this machine standing in for two
nodes that share the db folder, gives the same db as one process: for a first build of a folder (texts, images, PDF
pages) and for the sync that follows an edit, a touched file and a deleted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import child_env, free_port
from test_index_folder import make_folder

from vipyloqwen_tools.index.build import build
from vipyloqwen_tools.index.store import Store

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {"batch_size": 2, "commit_every": 3, "num_workers": 0}


def two_node_build(checkpoint: Path, items: Path, db: Path, *extra: str) -> list[dict]:
    """Two torchrun launches, one process each, meeting at a c10d rendezvous as two nodes would; their summaries."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("torchrun")), "--nnodes", "2", "--nproc_per_node", "1"]
    command += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"index-{port}"]
    command += [str(REPO / "scripts" / "index.py"), "build", "--model", str(checkpoint), "--items", str(items)]
    command += ["--db", str(db), "--batch-size", str(SETTINGS["batch_size"]), "--num-workers", "0"]
    command += ["--commit-every", str(SETTINGS["commit_every"]), *extra]
    env = child_env(OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [node.communicate(timeout=900) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    errors = "".join(err for _, err in outputs)
    assert "rank 0/2" in errors and "rank 1/2" in errors  # both nodes embedded
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs if out.strip()]


def content(db: Path) -> dict:
    data = Store.open(db).table.to_arrow().sort_by("id")
    return {
        "ids": data.column("id").to_pylist(),
        "rows": [{k: v for k, v in row.items() if k != "vector"} for row in data.to_pylist()],
        "vectors": np.stack(data.column("vector").to_numpy(zero_copy_only=False)),
    }


def assert_same_db(one: Path, many: Path) -> None:
    a, b = content(one), content(many)
    assert a["ids"] == b["ids"] and len(set(a["ids"])) == len(a["ids"])
    assert a["rows"] == b["rows"]  # texts, images, tasks, metadata, fingerprints
    assert np.abs(a["vectors"] - b["vectors"]).max() < 1e-6  # the same batches as one process


@pytest.mark.slow
def test_two_nodes_give_the_same_db_as_one_process(tiny_checkpoint, auto_model, tmp_path):
    root = make_folder(tmp_path / "docs")
    one, many = tmp_path / "one", tmp_path / "shared" / "db"  # "shared": the folder both nodes reach
    build(auto_model, root, one, log=lambda message: None, **SETTINGS)
    (summary,) = two_node_build(tiny_checkpoint, root, many)  # only the node of rank 0 prints the summary
    assert (summary["lines"], summary["new"], summary["embedded"]) == (8, 8, 8)
    assert_same_db(one, many)

    # the corpus changes: an edit, a touched file, a deleted PDF; a sync on two nodes == a sync in one process
    (root / "a.txt").write_text("Điều khoản mới: bên B xoá dữ liệu sau 30 ngày.", encoding="utf-8")
    os.utime(root / "x.png", (1_700_000_000, 1_700_000_000))  # x.png: another mtime, same bytes
    (root / "report.pdf").unlink()
    stats = build(auto_model, root, one, sync=True, log=lambda message: None, **SETTINGS)
    (summary,) = two_node_build(tiny_checkpoint, root, many, "--sync")
    for key in ("lines", "new", "changed", "unchanged", "embedded", "reused", "deleted"):
        assert summary[key] == getattr(stats, key), key
    assert (stats.changed, stats.embedded, stats.reused, stats.deleted) == (2, 1, 1, 3)
    assert_same_db(one, many)
    assert not Store.open(many).staged_files()
