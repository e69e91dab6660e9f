"""Progress you can watch: transformers' own progress bar, step numbers in every log line, the plan at the start.

:class:`RunProgress` is transformers' :class:`~transformers.ProgressCallback` (a tqdm bar on the main process only,
so one bar under ``torchrun``: step/total, elapsed, ETA, it/s) with three changes:

- at the start it logs the total number of optimizer steps, the steps per epoch and the batch that makes a step;
- every log line starts with ``step N/TOTAL`` (transformers prints the bare dict);
- on a stream that is not a terminal (a log file, a pipe, a job scheduler's output) no bar is drawn: tqdm redraws
  it with a carriage return per update, which fills a log file with one long line. Each log line carries the bar's
  numbers instead (``step 10/45 22% [00:12<00:42, 0.82it/s]``), computed by the same tqdm object, and
  :func:`quiet_library_bars` turns off the other libraries' bars (loading weights, writing shards).

Example (what a log file shows)::

    training: 45 optimizer steps = 5 epoch(s) x 9 steps; a step = 16 rows per device x 1 accumulation x 1 process(es)
    step 10/45 22% [00:12<00:42, 0.82it/s] {'loss': '2.31', 'grad_norm': '1.02', 'learning_rate': '0.0009', ...}
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm
from transformers import ProgressCallback

logger = logging.getLogger("vipyloqwen.train")
# The numbers of tqdm's default bar without the bar itself: one readable line in a log file.
LINE_FORMAT = "{percentage:3.0f}% [{elapsed}<{remaining}, {rate_fmt}]"


class _Discard:
    """A stream that drops what tqdm writes: off a terminal the bar only keeps time, the log lines show it."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def format_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """The log values as transformers' progress callbacks show them (floats to 4 significant digits)."""
    return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items() if k != "total_flos"}


class RunProgress(ProgressCallback):
    """transformers' progress bar with the plan at the start and ``step N/TOTAL`` in every log line; a plain line
    per log off a terminal (see the module docstring).

    Args:
        stream: where the bar and the lines go (default: standard error, as tqdm's bar).
        interactive: draw the bar (default: when ``stream`` is a terminal).
    """

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.interactive = interactive

    def _stream(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _interactive(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        return bool(getattr(self._stream(), "isatty", lambda: False)())

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.current_step = state.global_step
        if not state.is_world_process_zero:
            return
        logger.info("%s", plan_line(args, state, train_dataloader))
        self.training_bar = tqdm(
            total=state.max_steps,
            initial=state.global_step,  # a resumed run: the rate and ETA count this run's steps only
            dynamic_ncols=True,
            file=self._stream() if self._interactive() else _Discard(),
            mininterval=0.5,
        )

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self._interactive():  # an evaluation bar is as unreadable in a log file as the training bar
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or logs is None:
            return
        head = f"step {state.global_step}/{state.max_steps}"
        if self._interactive():
            self.training_bar.write(f"{head} {format_logs(logs)}", file=self._stream())
        else:
            meter = tqdm.format_meter(**{**self.training_bar.format_dict, "bar_format": LINE_FORMAT})
            print(f"{head} {meter} {format_logs(logs)}", file=self._stream(), flush=True)


def quiet_library_bars(stream: TextIO | None = None) -> bool:
    """Off a terminal, turn off the libraries' own progress bars (loading and writing weights, dataset maps, the
    model card's widget examples): each would leave a carriage-return line in a log file. Returns whether it did.

    transformers (and the Hub client under it) and datasets have switches for it; Sentence-Transformers' model card
    calls tqdm directly, so its module's tqdm is given ``disable=True``."""
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return False
    import datasets
    import sentence_transformers.base.model_card as st_model_card
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    st_model_card.tqdm = functools.partial(tqdm, disable=True)
    return True


def plan_line(args, state, train_dataloader=None) -> str:
    """``training: 45 optimizer steps = 5 epoch(s) x 9 steps; a step = ...``: what the run will do."""
    accumulation = args.gradient_accumulation_steps
    per_epoch = None
    if train_dataloader is not None:
        try:
            per_epoch = max(1, len(train_dataloader) // accumulation)
        except TypeError:  # an iterable dataloader has no length
            per_epoch = None
    epochs = f"{state.num_train_epochs} epoch(s) x {per_epoch} steps" if per_epoch else "epoch length unknown"
    batch = (
        f"{args.per_device_train_batch_size} rows per device x {accumulation} accumulation x "
        f"{args.world_size} process(es)"
    )
    resumed = f", resumed at step {state.global_step}" if state.global_step else ""
    return (
        f"training: {state.max_steps} optimizer steps = {epochs}; a step = {batch}; a log line every "
        f"{state.logging_steps} steps{resumed}"
    )


__all__ = ["LINE_FORMAT", "RunProgress", "format_logs", "plan_line", "quiet_library_bars"]
