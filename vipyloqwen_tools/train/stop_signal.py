"""SIGTERM / SIGUSR1: finish the current step, save a complete checkpoint, exit with :data:`EXIT_STOPPED`.

A scheduler about to preempt a job sends SIGTERM (SLURM ``--signal=USR1@<seconds>`` sends SIGUSR1 ahead of the time
limit) and kills it after a grace period. Without a handler the run died at once and lost every step since its
last checkpoint (with 1000 steps between saves, hours). :class:`StopOnSignal`, a trainer callback, installs
handlers for both signals while training runs:

- the first signal only sets a flag (a handler must not do more: it runs between two bytecodes of whatever the main
  thread was doing);
- at the end of every optimizer step every process takes part in one all-reduce of its flag, so all processes agree
  on the step to stop at even when only one of them got the signal (under torchrun the agent forwards a SIGTERM to
  every worker, but a ``kill`` may reach one); that step then saves a complete checkpoint (:mod:`.checkpoints`) and
  training stops; :func:`vipyloqwen_tools.train.run.train` raises :class:`StopRequested` and ``train_st.py`` exits
  with :data:`EXIT_STOPPED` (4). ``--resume`` continues from that checkpoint exactly; nothing is lost;
- a second SIGTERM (at least :data:`REPEAT_S` seconds after the first: a scheduler signalling every process of a job
  while torchrun's agent forwards its own copy delivers two at once, which count as one) exits at once, killed by
  that SIGTERM (exit status 143 in a shell): whatever was being saved stays an unfinished save that ``--resume``
  skips;
- once the stop checkpoint is complete, further signals are ignored: the process only exits (torchrun's agent sends
  SIGTERM to the remaining ranks as soon as one has exited, and rank 0 must still print why it stopped).

The handlers are installed by the main thread only (Python delivers signals there) when training begins (before
it, e.g. while the data is prepared, nothing since the last checkpoint could be lost: a signal ends the process as
usual), and the previous ones are restored when training returns (``with trainer.stop_signal:``), unless the run
stopped on a signal.

Example::

    $ python train_st.py --config configs/tiny-cpu.yaml &
    $ kill -TERM %1
    error: stopped on SIGTERM at step 4: runs/tiny-cpu/checkpoint-4 is complete; nothing was exported. Run the same
    command with --resume to continue from it.
    $ echo $?
    4
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

logger = logging.getLogger("vipyloqwen.train")

EXIT_STOPPED = 4
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
REPEAT_S = 1.0  # a second SIGTERM sooner than this after the first is the same request delivered twice


def agreed_signal(number: int, device) -> int:
    """The largest signal number any process holds (0: none), the same on every process (one all-reduce)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return number
    value = torch.tensor([float(number)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return int(value.item())


class StopRequested(RuntimeError):
    """Training stopped on SIGTERM / SIGUSR1 after saving a complete checkpoint (nothing exported)."""


class StopOnSignal(TrainerCallback):
    """The trainer callback of the module docstring. ``stopped_at``: the step the run stopped at (``None``: it did
    not stop on a signal); ``signal_name``: the signal that asked for it."""

    def __init__(self) -> None:
        self.requested: int | None = None
        self.requested_at = 0.0
        self.saved = False
        self.stopped_at: int | None = None
        self.previous: dict[int, object] = {}

    # ------------------------------------------------------------------ handlers
    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self.previous:
            return
        for number in SIGNALS:
            self.previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        """Put the previous handlers back (not after a stop on a signal: the process is exiting, see above)."""
        if self.stopped_at is not None and self.saved:
            return
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.requested).name if self.requested is not None else None

    def _say(self, text: str) -> None:
        # os.write, not logging: the handler may run while the main thread holds the logging lock
        os.write(2, f"{text}\n".encode())

    def _handle(self, number: int, frame) -> None:
        name = signal.Signals(number).name
        if self.saved:
            self._say(f"{name}: ignored, the stop checkpoint is complete and the run is exiting")
            return
        if self.requested is None:
            self.requested, self.requested_at = number, time.monotonic()
            self._say(
                f"{name}: stopping after the current step with a complete checkpoint (pid {os.getpid()}); "
                "a second SIGTERM exits at once"
            )
            return
        if number == signal.SIGTERM and time.monotonic() - self.requested_at >= REPEAT_S:
            self._say(f"second SIGTERM: exiting at once (pid {os.getpid()}); an unfinished save is skipped by --resume")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._say(f"{name}: a stop was already requested ({self.signal_name})")

    def __enter__(self) -> StopOnSignal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    # ------------------------------------------------------------------ callback
    def on_train_begin(self, args, state, control, **kwargs):
        self.install()

    def on_step_end(self, args, state, control, **kwargs):
        # One all-reduce per step on every process: they stop at the same step whichever of them got the signal.
        agreed = agreed_signal(self.requested or 0, args.device)
        if agreed:
            self.requested = self.requested or agreed  # the signal another process got, for the message
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopped_at is not None and state.global_step == self.stopped_at:
            self.saved = True  # from here on the run only exits: further signals are ignored
        return control

    def raise_if_stopped(self, output_dir: str | os.PathLike) -> None:
        """After ``trainer.train()``: raise :class:`StopRequested` if training stopped on a signal."""
        if self.stopped_at is not None:
            raise self.stop_error(output_dir)

    def stop_error(self, output_dir: str | os.PathLike) -> StopRequested:
        """The error ``train()`` raises after a stop (``self.stopped_at`` set)."""
        checkpoint = Path(output_dir) / f"checkpoint-{self.stopped_at}"
        name = self.signal_name or "a signal"
        return StopRequested(
            f"stopped on {name} at step {self.stopped_at}: {checkpoint} is complete; nothing was exported. Run the "
            "same command with --resume to continue from it (nothing is lost)."
        )


__all__ = ["EXIT_STOPPED", "REPEAT_S", "SIGNALS", "StopOnSignal", "StopRequested", "agreed_signal"]
