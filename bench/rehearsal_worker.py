"""One rank of the real-width rehearsal (started by torchrun from ``bench/rehearsal.py``; not for direct use).

Runs :func:`vipyloqwen_tools.train.run.train` with the recipe YAML and the overrides given as JSON, with a
callback that times every optimizer step, and writes ``<output_dir>/rank-<RANK>.json``: step seconds, this
process's peak RSS (``VmHWM`` of ``/proc/self/status``, sampled after each step and at the end) and the
trainer's log history (loss terms per step). The file is rewritten after every step (``"finished": false``), so a
run killed part way (out of memory) still leaves what it measured.

    torchrun --nproc_per_node 2 bench/rehearsal_worker.py configs/vipyloqwen-2b.yaml '{"max_steps": 4, ...}'
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

# VmHWM, not ru_maxrss: on Linux that starts at the parent's RSS at fork (here torchrun's agent).
from bench.harness import peak_rss_bytes, write_json
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.run import train


def write_report(out: Path, report: dict) -> None:
    """Atomic rewrite: a reader (or a killed run) never sees half a file."""
    write_json(out, report, indent=1, atomic=True, log=False)


class StepTimer(TrainerCallback):
    """Wall time and peak RSS after every optimizer step; the report so far is rewritten after each one."""

    def __init__(self, out: Path, base: dict) -> None:
        self.steps: list[dict] = []
        self._started = 0.0
        self.out = out
        self.base = base

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(
            {
                "step": state.global_step,
                "seconds": round(time.perf_counter() - self._started, 2),
                "peak_rss_bytes": peak_rss_bytes(),
            }
        )
        self._write(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._write(state)  # the step's loss terms are logged after on_step_end

    def _write(self, state) -> None:
        """Every rank rewrites its own file with what it has measured so far."""
        report = {**self.base, "finished": False, "global_step": state.global_step, "steps": self.steps}
        report.update(peak_rss_bytes=peak_rss_bytes(), log_history=list(state.log_history))
        write_report(self.out, report)


def main(argv: list[str]) -> None:
    recipe, overrides = argv[0], json.loads(argv[1])
    rank = int(os.environ.get("RANK", "0"))
    base = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "pid": os.getpid()}
    out = Path(overrides["output_dir"]) / f"rank-{rank}.json"
    timer = StepTimer(out, base)
    config = TrainConfig.from_yaml(recipe, **overrides)
    started = time.perf_counter()
    result = train(config, callbacks=[timer])
    report = {
        **base,
        "finished": True,
        "seconds_total": round(time.perf_counter() - started, 1),
        "global_step": result["global_step"],
        "steps": timer.steps,
        "peak_rss_bytes": peak_rss_bytes(),
        "log_history": result["log_history"],
    }
    write_report(out, report)


if __name__ == "__main__":
    main(sys.argv[1:])
