"""``train_st.py`` held before one optimizer step until a file appears: a fault test's handle on a run's timing.

    python tests/gated_train.py --hold-after STEP --gate FILE <train_st.py arguments>

After optimizer step STEP has ended (and been logged), every process of the run waits until FILE exists (polling every
20 ms, at most 600 s), then trains on. Nothing else changes: the run is ``train_st.main`` with one extra trainer
callback. A SIGTERM, a second run on the folder or a stopped rank then meets the run at a known point instead of racing
the machine's speed: on an idle CI machine a tiny step takes 0.1 s and a whole 6-step run ends within a second, under
load a step takes seconds.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

import train_st
from vipyloqwen_tools.train.run import train

HOLD_LIMIT_S = 600.0


class HoldAfterStep(TrainerCallback):
    """Waits at the beginning of optimizer step ``step + 1`` until ``gate`` exists (a signal's handler still runs:
    the wait is a sleep loop)."""

    def __init__(self, step: int, gate: Path) -> None:
        self.step, self.gate = step, gate

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            end = time.monotonic() + HOLD_LIMIT_S
            while not self.gate.exists():
                if time.monotonic() > end:
                    raise TimeoutError(f"gated_train: {self.gate} did not appear within {HOLD_LIMIT_S:.0f} s")
                time.sleep(0.02)
        return control


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold-after", type=int, required=True, metavar="STEP")
    parser.add_argument("--gate", type=Path, required=True, metavar="FILE")
    ours, rest = parser.parse_known_args(argv)
    train_st.train = functools.partial(train, callbacks=[HoldAfterStep(ours.hold_after, ours.gate)])
    return train_st.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
