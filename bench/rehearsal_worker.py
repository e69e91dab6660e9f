"""One rank of the real-width rehearsal (started by torchrun from ``bench/rehearsal.py``; not for direct use).

Runs :func:`vipyloqwen_tools.training.train` with the recipe YAML and the overrides given as JSON, with a
callback that times every optimizer step, and writes ``<output_dir>/rank-<RANK>.json``: step seconds, this
process's peak RSS (``VmHWM`` of ``/proc/self/status``, sampled after each step and at the end) and the
trainer's log history (loss terms per step).

    torchrun --nproc_per_node 2 bench/rehearsal_worker.py configs/vipyloqwen-2b.yaml '{"max_steps": 4, ...}'
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import TrainerCallback  # noqa: E402

from vipyloqwen_tools import training  # noqa: E402


def peak_rss_bytes() -> int:
    """This process's own peak RSS: VmHWM (the high-water mark of its memory map, fresh after exec). ru_maxrss is
    not used: on Linux it starts at the parent's RSS at fork (here torchrun's agent), so it is only an upper bound."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the upper bound


class StepTimer(TrainerCallback):
    """Wall time and peak RSS after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict] = []
        self._started = 0.0

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


def main(argv: list[str]) -> None:
    recipe, overrides = argv[0], json.loads(argv[1])
    timer = StepTimer()
    base_trainer = training.ViPyloQwenTrainer

    class TimedTrainer(base_trainer):  # the training code builds its trainer itself: add the callback there
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(timer)

    training.ViPyloQwenTrainer = TimedTrainer
    config = training.TrainConfig.from_yaml(recipe, **overrides)
    started = time.perf_counter()
    result = training.train(config)
    rank = int(os.environ.get("RANK", "0"))
    report = {
        "rank": rank,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "pid": os.getpid(),
        "seconds_total": round(time.perf_counter() - started, 1),
        "global_step": result["global_step"],
        "steps": timer.steps,
        "peak_rss_bytes": peak_rss_bytes(),
        "log_history": result["log_history"],
    }
    out = Path(config.output_dir) / f"rank-{rank}.json"
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
