"""bench/data_bench.py at its smallest: the seed's mix, every step measured, summary and table (timings unchecked)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import data_bench


def test_data_bench_generates_the_mix_and_measures_every_step(tmp_path: Path):
    images = [str(tmp_path / "img" / n) for n in data_bench.make_image_pool(tmp_path / "img", 8)]
    assert len(set(images)) == 8 and all(Path(p).stat().st_size > 1000 for p in images)
    path = tmp_path / "train.jsonl"
    facts = data_bench.generate(path, 400, images)
    assert facts["rows"] == 400 and sum(facts["tasks"].values()) == 400
    assert 0.4 < facts["tasks"]["text_pair"] / 400 < 0.62 and 1200 < facts["bytes_per_row"] < 2600
    runs = []
    for workers in (1, 2):
        for step in data_bench.STEPS:
            run = data_bench.measure(step, path, workers, tmp_path / f"cache-{workers}")
            run.update(load_1min_before=0.0, load_1min_after=0.0)
            assert run["rows"] == run["good"] == 400 and run["rows_per_s"] > 0
            if step in ("build", "cached"):
                assert run["datasets_rows"] == 400
            runs.append(run)
    results = {"sizes": {"400": {"file": facts, "runs": runs}}}
    results["summary"] = data_bench.summarise(results)
    assert set(results["summary"]["extrapolation_11M"]) == {"2", "16", "32"}
    assert "build_speedup_2_vs_1" in results["summary"]
    text = data_bench.table(json.loads(json.dumps(results)))
    assert "| 400 | build | 2 |" in text and "| 32 |" in text and "CPU" in text
