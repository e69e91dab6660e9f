"""The benchmarks run at their smallest size and report every field (timings are not checked)."""

from __future__ import annotations

import json
import math

import pytest

from bench import encode_bench, report, train_bench

PATH_FIELDS = {"seconds_median", "seconds_all", "items_per_s", "peak_rss_mb", "ratio_to_floor"}
TOKEN_FIELDS = {"real_tokens", "padded_tokens", "batches", "tokens_per_s", "padding_efficiency"}


@pytest.fixture(scope="module")
def encode_results(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "encode.json"
    argv = ["--model", str(tiny_checkpoint), "--stream-model", str(tiny_checkpoint), "--size", "smoke"]
    argv += ["--repeats", "1", "--stream-sizes", "8,16", "--stream-batch-size", "4", "--out", str(out)]
    argv += ["--prefetch-pages", "16"]
    returned = encode_bench.main(argv)
    return returned, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_encode_bench_reports_every_path_and_workload(encode_results):
    returned, written = encode_results
    assert written["workloads"].keys() == returned["workloads"].keys() == {"queries", "passages", "pages", "mixed"}
    for name, workload in written["workloads"].items():
        assert set(workload["paths"]) == set(encode_bench.PATHS), name
        assert workload["items"] == encode_bench.SIZES["smoke"][name]
        for path, entry in workload["paths"].items():
            assert PATH_FIELDS <= entry.keys(), (name, path)
            assert entry["items_per_s"] > 0 and math.isfinite(entry["ratio_to_floor"])
            if path != "preprocess":
                assert TOKEN_FIELDS <= entry.keys(), (name, path)
                assert 0 < entry["padding_efficiency"] <= 1
                assert entry["real_tokens"] <= entry["padded_tokens"]
        # Same batches and weights: our paths reproduce the floor's embeddings.
        assert workload["max_abs_diff_to_floor"]["auto"] < 1e-4
        assert workload["max_abs_diff_to_floor"]["st"] < 1e-4
    # Every path of a workload saw the same real tokens.
    mixed = written["workloads"]["mixed"]["paths"]
    assert len({mixed[p]["real_tokens"] for p in ("floor", "st", "auto", "naive")}) == 1
    assert all(workload["estimate_exact"] for workload in written["workloads"].values())
    padding = written["padding_by_stream_length"]["rows"]
    assert [row["items"] for row in padding] == [5, 20, 80]
    assert all(0 < row[key] <= 1 for row in padding for key in ("encode_grouping", "sorted_fixed", "token_budget"))
    assert written["machine"]["cpu"] and written["model"]["max_image_tokens"] == 64
    assert [row["items"] for row in written["stream"]["paths"]["auto"]["rows"]] == [8, 16]
    assert [row["items"] for row in written["stream"]["length_estimate"]["rows"]] == [8, 16]
    names = [check["target"] for check in written["targets"]]
    assert any("padding efficiency" in n for n in names) and any("flat" in n for n in names)
    assert all(isinstance(check["value"], float) for check in written["targets"])
    prefetch = written["prefetch"]
    assert prefetch["items"] == 16 and prefetch["batches"] == 2
    assert all(entry["bit_identical_to_0"] and entry["items_per_s"] > 0 for entry in prefetch["settings"].values())
    assert prefetch["projection"]["workers_to_keep_the_gpu_fed"] >= 1


@pytest.mark.slow
def test_train_bench_smoke(tiny_checkpoint, tmp_path):
    out = tmp_path / "train.json"
    results = train_bench.main(
        ["--model", str(tiny_checkpoint), "--size", "smoke", "--repeats", "1", "--out", str(out)]
    )
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["step_seconds"].keys() == {"router", "mnrl"}
    assert written["large_batch_memory"].keys() == {"mnrl", "mnrl_cached", "router", "router_cached"}
    assert all(math.isfinite(entry["loss"]) for entry in written["large_batch_memory"].values())
    assert results["router_over_mnrl"] > 0
    assert written["loss_math_seconds"].keys() == {"router", "mnrl"}


@pytest.mark.slow
def test_report_writes_between_markers(encode_results, tmp_path):
    _, written = encode_results
    source = tmp_path / "encode.json"
    source.write_text(json.dumps(written), encoding="utf-8")
    target = tmp_path / "performance.md"
    target.write_text(f"# keep\n\n{report.START}\nold\n{report.END}\n\ntail\n", encoding="utf-8")
    card = tmp_path / "README.md"
    card.write_text("# card\n<!-- performance-summary:start -->\nold\n<!-- performance-summary:end -->\n", "utf-8")
    plot = tmp_path / "docs" / "performance.png"
    other = tmp_path / "planner-calibration.json"  # another helper's JSON in bench/results: skipped, not a crash
    other.write_text(json.dumps({"benchmark": "planner-calibration"}), encoding="utf-8")
    argv = [str(source), str(other), "--out", str(target), "--readme", str(card), "--plot", str(plot)]
    markdown = report.main(argv)
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# keep") and text.rstrip().endswith("tail") and "old" not in text
    assert markdown in text and written["machine"]["cpu"] in markdown
    assert "| mixed |" in markdown and "padding efficiency" in markdown
    assert plot.read_bytes().startswith(b"\x89PNG")
    summary = card.read_text(encoding="utf-8")
    assert "](docs/performance.png)" in summary and "old" not in summary and "| pages | AutoModel.encode |" in summary
    assert report.main([*argv, "--check"]) == markdown  # up to date: exit 0, nothing written
    target.write_text(text.replace("| mixed |", "| stale |"), encoding="utf-8")
    with pytest.raises(SystemExit) as stale:
        report.main([*argv, "--check"])
    assert stale.value.code == 1 and "| stale |" in target.read_text(encoding="utf-8")


def test_images_bench_reports_every_case(tmp_path):
    from bench import images_bench

    out = tmp_path / "images.json"
    assert images_bench.main(["--side", "1200", "--out", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert [row["case"] for row in written["results"]] == list(images_bench.CASES)
    for row in written["results"]:
        assert row["pixels"] == 1200 * 1200 and row["seconds"] > 0 and math.isfinite(row["peak_rss_delta_mb"])
        assert row["output_size"] == [1200, 1200]  # within 4x the 1024-token budget: untouched
