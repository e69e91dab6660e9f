"""Shared by the distributed tests: generated data, the environment of a launched process, and the session's one
``torchrun --nproc_per_node 2 train_st.py`` training (the conftest fixture ``two_process_run`` starts it once; the
tests of ``tests/test_train_distributed.py`` each check another fact of that run through its trace).

The run: 6 steps of 4 rows per process on the tiny model (16 rows per task: 2 grouped steps per task, one epoch), a
training trace per rank, checkpoints at steps 3 and 6. Its ``init-tiny`` is built by the run itself (rank 0, once):
the launch is also the test of that build under 2 processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
WORLD, BATCH, STEPS = 2, 4, 6
COLOURS = ["đỏ", "xanh", "vàng", "tím", "hồng", "đen", "trắng", "nâu"]
ANIMALS = ["mèo", "chó", "bò", "vịt", "gà", "cá", "ngựa", "dê"]


def env() -> dict[str, str]:
    """A launched process's environment: one thread per process (2 processes on 2 cores), offline."""
    from conftest import child_env

    return child_env(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")  # offline: conftest set HF_*_OFFLINE


def write_data(root: Path, per_task: int = 16) -> tuple[Path, Path]:
    """Rows of three tasks (instr and text_pair text-only, every text_pair row a positive; ocr with one small image)
    and a small eval file. A text-only and an image task both train: DDP must handle the unused vision tower."""
    from conftest import make_image, write_jsonl

    (root / "img").mkdir(exist_ok=True)
    lines = []
    for i in range(per_task):
        colour, animal = COLOURS[i % 8], ANIMALS[(i * 3 + i // 8) % 8]
        query, positive = f"Tìm câu về con {animal} màu {colour} số {i}", f"{animal} {colour} {i}"
        lines.append({"task": "instr", "query": query, "positive": positive})
        query, positive, score = f"con {animal} {colour} {i}", f"a {colour} {animal} {i}", 0.5 + i / (2 * per_task)
        lines.append({"task": "text_pair", "query": query, "positive": positive, "score": score})
        make_image(56, 56, seed=i).save(root / "img" / f"ocr{i}.png")
        lines.append({"task": "ocr", "query": {"text": "Chữ gì?", "images": [f"img/ocr{i}.png"]}, "positive": colour})
    return write_jsonl(root / "train.jsonl", lines), write_jsonl(root / "eval.jsonl", lines[:12])


def two_process_training(root: Path) -> SimpleNamespace:
    """Launch the 2-process training in ``root``; its folders, trace and log (the launch must succeed)."""
    from conftest import free_port, write_tiny_run_yaml

    from vipyloqwen_tools.train.trace import read_trace

    train, evals = write_data(root)
    out, trace = root / "out", root / "trace"
    settings = {"max_steps": STEPS, "per_device_train_batch_size": BATCH, "max_length": 32, "seed": 5}
    config = write_tiny_run_yaml(root / "config.yaml", out, train, evals, prebuilt_tiny=False, **settings)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
        "--master_port", str(free_port()),
        str(ROOT / "train_st.py"), "--config", str(config), "--trace-dir", str(trace),
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return SimpleNamespace(root=root, train=train, out=out, trace=read_trace(trace), trace_dir=trace, log=done.stderr)
