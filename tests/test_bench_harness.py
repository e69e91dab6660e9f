"""bench/harness.py: the rotated round order, ratios per round, peak RSS, the results header and the JSON files."""

from __future__ import annotations

import json
import math

import pytest

from bench import harness


def test_interleaved_rotates_the_start_and_calls_hooks_around_each_timed_call():
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    events: list[tuple[str, str]] = []
    times = harness.interleaved(
        runners, 4, before=lambda n: events.append(("before", n)), after=lambda n: events.append(("after", n))
    )
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert list(times) == ["a", "b", "c"] and all(len(v) == 4 and min(v) >= 0 for v in times.values())
    assert events[:2] == [("before", "a"), ("after", "a")] and len(events) == 24


def test_median_ratio_is_per_round_and_needs_equal_lengths():
    # per-round ratios 2, 3, 10: median 3 (the ratio of the medians would be 4 / 1 = 4)
    assert harness.median_ratio([2.0, 6.0, 4.0], [1.0, 2.0, 0.4]) == 3.0
    assert math.isnan(harness.median([]))
    with pytest.raises(ValueError):
        harness.median_ratio([1.0], [1.0, 2.0])


def test_peak_rss_sees_an_allocation_and_vmhwm_is_at_least_the_current_rss():
    with harness.PeakRSS() as peak:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    assert peak.delta_mb >= 48
    del block
    assert harness.peak_rss_bytes() >= harness.status_bytes("VmRSS") > 0


def test_results_header_and_memory_method():
    header = harness.results_header("encode")
    assert list(header) == ["benchmark", "created", "machine"] and header["benchmark"] == "encode"
    assert header["machine"]["cores"] and header["machine"]["torch"] and header["created"].endswith("+00:00")
    assert "pre-step RSS" in harness.memory_method("step")


def test_write_json_keeps_non_ascii_and_atomic_leaves_no_partial_file(tmp_path, capsys):
    path = tmp_path / "deep" / "r.json"
    harness.write_json(path, {"văn bản": 1.5}, indent=1)
    assert path.read_text(encoding="utf-8") == '{\n "văn bản": 1.5\n}\n'
    assert f"wrote {path}" in capsys.readouterr().out
    harness.write_json(path, {"step": 2}, atomic=True, log=False)
    assert json.loads(path.read_text(encoding="utf-8")) == {"step": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"] and capsys.readouterr().out == ""


def test_targets_print_and_finish_writes(tmp_path, capsys):
    checks = [harness.target("ratio", 1.01, "<= 1.05", True), harness.target("speed-up", 3.0, "report", None)]
    results = harness.finish({"targets": checks}, tmp_path / "out.json")
    out = capsys.readouterr().out
    assert "[MET   ] ratio: 1.010 (<= 1.05)" in out and "[info  ] speed-up: 3.000 (report)" in out
    assert json.loads((tmp_path / "out.json").read_text())["targets"] == results["targets"] == checks


def test_size_arguments_resolve_quick_full_and_explicit_values():
    def parse(*argv: str):
        parser = harness.bench_parser("A bench.\n\nmore", "python bench/x.py")
        harness.add_size_arguments(parser, {"smoke": {}, "quick": {}, "full": {}}, "workloads", (3, 5))
        args = harness.parse_run_arguments(parser, list(argv))
        return harness.resolve_size(args, (3, 5)), args.threads, args.out

    assert parse() == (("full", 5), 1, None)
    assert parse("--quick") == (("quick", 3), 1, None)
    assert parse("--quick", "--size", "smoke", "--repeats", "1", "--threads", "0")[:2] == (("smoke", 1), 0)
    with pytest.raises(SystemExit):
        parse("--size", "huge")
