"""The training progress (train/progress.py): transformers' bar on a terminal, one readable line per log off it,
step/total in every log line, the plan at the start, nothing from the other processes."""

from __future__ import annotations

import io
import logging
import time
from types import SimpleNamespace

from transformers import TrainerControl, TrainerState

from vipyloqwen_tools.train.progress import RunProgress, plan_line


def _args(world_size: int = 1):
    return SimpleNamespace(gradient_accumulation_steps=2, per_device_train_batch_size=8, world_size=world_size)


def _state(global_step: int = 0, main: bool = True) -> TrainerState:
    return TrainerState(
        global_step=global_step, max_steps=10, num_train_epochs=2, logging_steps=2, is_world_process_zero=main
    )


def _run(progress: RunProgress, state: TrainerState, steps: int) -> None:
    args, control = _args(), TrainerControl()
    progress.on_train_begin(args, state, control, train_dataloader=list(range(10)))
    for _ in range(steps):
        state.global_step += 1
        time.sleep(0.01)
        progress.on_step_end(args, state, control)
        if state.global_step % 2 == 0:
            progress.on_log(args, state, control, logs={"loss": 1.234567, "total_flos": 5.0, "epoch": 0.4})
    progress.on_train_end(args, state, control)


def test_off_a_terminal_each_log_is_one_line_with_step_total_elapsed_eta_rate(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="vipyloqwen.train"):
        _run(RunProgress(stream=stream), _state(), 4)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(" [")[0] for line in lines] == ["step 2/10  20%", "step 4/10  40%"]
    for line in lines:  # tqdm's own meter: elapsed<remaining, rate; the logs as transformers formats them
        assert "<" in line and ("it/s]" in line or "s/it]" in line)
        assert line.endswith("{'loss': '1.235', 'epoch': '0.4'}")  # total_flos left out, floats to 4 digits
    assert "training: 10 optimizer steps = 2 epoch(s) x 5 steps" in caplog.text


def test_on_a_terminal_the_bar_is_drawn_and_log_lines_carry_the_step():
    stream = io.StringIO()
    _run(RunProgress(stream=stream, interactive=True), _state(), 4)
    text = stream.getvalue()
    assert "\r" in text and "4/10" in text  # tqdm's bar, redrawn in place
    assert "step 2/10 {'loss': '1.235', 'epoch': '0.4'}" in text and "step 4/10 {" in text


def test_other_processes_print_nothing(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="vipyloqwen.train"):
        _run(RunProgress(stream=stream, interactive=True), _state(main=False), 4)
    assert stream.getvalue() == "" and "training:" not in caplog.text


def test_a_resumed_run_counts_from_its_step():
    stream = io.StringIO()
    progress = RunProgress(stream=stream)
    _run(progress, _state(global_step=6), 4)
    assert stream.getvalue().splitlines()[0].startswith("step 8/10  80%")


def test_plan_line_names_steps_epoch_length_and_the_batch():
    line = plan_line(_args(world_size=2), _state(global_step=3), train_dataloader=list(range(12)))
    assert line == (
        "training: 10 optimizer steps = 2 epoch(s) x 6 steps; a step = 8 rows per device x 2 accumulation x 2 "
        "process(es); a log line every 2 steps, resumed at step 3"
    )
    assert "epoch length unknown" in plan_line(_args(), _state(), train_dataloader=iter(range(3)))
