"""bench/gpu_check.sh without a GPU: the CPU preparation runs, the JSON records it, and the script stops at the
CUDA check with exit status 3 and says why (the GPU part itself runs only where a GPU is lent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the real check (minutes)")
def test_gpu_check_prepares_on_cpu_then_stops_at_the_cuda_check(tmp_path):
    results = ROOT / "bench" / "results"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in results.iterdir())
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_FLASH": "0", "HF_HUB_OFFLINE": "1"}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],  # no OUT_JSON: the report goes to a temp folder
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in results.iterdir()) == before  # nothing written there
    out = Path(done.stdout.split("gpu_check: report: ", 1)[1].split()[0])
    assert out.is_file() and ROOT not in out.parents
    assert "CUDA is not available" in done.stderr and "the CPU preparation passed" in done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["benchmark"] == "gpu-check" and "CUDA is not available" in report["error"]
    prepared = report["prepare"]
    assert set(prepared["workloads"]) >= {"queries", "passages", "pages"}
    assert all(count > 0 for count in prepared["workloads"].values())
    # The planner's prediction for the recipe's training step on the full-size 2B, ready to sit beside the GPU peak.
    assert prepared["architecture"]["layers"] == 28 and prepared["architecture"]["vision_layers"] == 32
    assert 1 < prepared["predicted_train_step_gb"] < 200
    assert "encode" not in report and "train_step" not in report  # nothing measured without a GPU
