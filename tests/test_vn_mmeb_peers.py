"""eval/run_peers.py dry run (which peers mteb 2.26 knows and can load here) and eval/compare.py's benchmark view."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pytest
from packaging.version import Version

from eval import compare, run_peers

BENCH = "VN-MMEB (vie, v1)"


def test_dry_run_lists_each_peer_and_whether_mteb_can_load_it(tmp_path, capsys):
    peers = [*run_peers.DEFAULT_PEERS, "org/not-a-model"]
    assert run_peers.main(["--dry-run", "--peers", *peers, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(" `"): line for line in out.splitlines() if line.startswith("| `")}
    assert set(rows) == set(peers)
    statuses = {s["name"]: s for s in json.loads((tmp_path / "peers_dry_run.json").read_text())}
    for name in run_peers.DEFAULT_PEERS:  # GME, Qwen3-VL-Embedding, jina-v4, VLM2Vec: all in mteb's registry
        s = statuses[name]
        assert s["known"] and s["loader"] and len(s["revision"]) == 40 and "image" in s["modalities"]
        # mteb's image extra needs torchvision: missing exactly when it is not installed here
        assert any(m.startswith("torchvision") for m in s["missing"]) == (
            importlib.util.find_spec("torchvision") is None
        )
        assert s["loadable"] == (not s["missing"])
    transformers = Version(importlib.metadata.version("transformers"))
    gme = statuses["Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"]
    assert any(m.startswith("transformers<4.52.0") for m in gme["missing"]) == (transformers >= Version("4.52.0"))
    assert statuses["org/not-a-model"]["known"] is False and "not in mteb's model registry" in rows["org/not-a-model"]


def test_a_peer_that_cannot_load_is_reported_not_fatal(tmp_path, capsys):
    if run_peers.check_peer("TIGER-Lab/VLM2Vec-Full").loadable:
        pytest.skip("its dependencies are installed here: loading would need the Hub")
    assert run_peers.main(["--peers", "TIGER-Lab/VLM2Vec-Full", "--output", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "TIGER-Lab/VLM2Vec-Full: FAILED to load or run: ImportError" in out.out
    assert "no table" in out.err


def _write(root, name, scores):
    folder = root / "results" / name.replace("/", "__") / "rev1"
    folder.mkdir(parents=True)
    (folder / "model_meta.json").write_text(json.dumps({"name": name, "revision": "rev1"}))
    for task, score in scores.items():
        (folder / f"{task}.json").write_text(
            json.dumps({"task_name": task, "scores": {"test": [{"main_score": score, "hf_subset": "default"}]}})
        )


def test_compare_benchmark_view_one_folder(tmp_path):
    _write(tmp_path, "org/peer", {"KTVICT2IRetrieval": 0.5, "OpenViVQAIT2TRetrieval": 0.2, "STSBenchmark-VN": 0.9})
    _write(tmp_path, "erax-ai/viPyloQwen", {"KTVICT2IRetrieval": 0.7, "OpenViVQAIT2TRetrieval": 0.4})
    text = compare.compare([tmp_path], benchmark=BENCH, first="erax-ai/viPyloQwen")
    assert "STSBenchmark-VN" not in text  # not a VN-MMEB task
    assert "| KTVICT2IRetrieval | Any2AnyRetrieval | 70.00 | 50.00 |" in text
    assert "| it2t | 1 | 40.00 | 20.00 |" in text and "| t2i | 1 | 70.00 | 50.00 |" in text
    assert compare.main([str(tmp_path), "--benchmark", "nope"]) == 2


def test_ours_goes_through_run_mteb_into_the_same_folder(tmp_path, monkeypatch):
    from eval import run_mteb

    seen = []
    monkeypatch.setattr(run_mteb, "main", lambda argv: seen.append(argv) or 0)
    rc = run_peers.main(
        ["--peers", "--ours", "ckpt", "--output", str(tmp_path), "--data-root", "fx", "--batch-size", "2"]
    )
    assert rc == 1  # nothing was written by the stub, so there is no table
    assert seen == [
        [
            "--model",
            "ckpt",
            "--benchmark",
            BENCH,
            "--output",
            str(tmp_path),
            "--batch-size",
            "2",
            "--no-progress",
            "--data-root",
            "fx",
        ]
    ]
