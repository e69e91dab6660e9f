"""The non-finite guard (vipyloqwen_tools/guard.py) and the finite-weights check of every save
(vipyloqwen_tools/finite.py), with real NaN / inf values: a diverging learning rate, an inf weight during one step,
a NaN weight at a checkpoint step, a NaN weight at the export."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from fault_runs import config, settings, weights, write_data, write_yaml
from transformers import TrainerCallback

from vipyloqwen_tools.checkpoint.finite import NonFiniteWeightsError
from vipyloqwen_tools.train.checkpoints import STAGING, checkpoint_problem


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("guard-data"))


def test_export_refuses_nonfinite_weights(tiny_parts, tmp_path):
    from vipyloqwen_tools.checkpoint.export import save_checkpoint

    model, processor = tiny_parts
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(broken.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to save .*/out: 1 of \d+ weight tensors hold NaN/inf"):
        save_checkpoint(broken, processor, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_diverging_learning_rate_stops_with_the_last_good_checkpoint(data, tmp_path, capsys, caplog):
    """--learning-rate 1e3: the guard skips the non-finite steps, then stops (exit 3) naming the step, the task and
    the last complete checkpoint; nothing non-finite is saved and nothing is exported."""
    import train_st

    out = tmp_path / "run"
    # a checkpoint every step: there is always one before the first non-finite step (step 1 starts from finite
    # weights), and some after it (saved while steps were skipped)
    values = settings(out, *data, learning_rate=1e3, max_steps=20, save_steps=1, warmup_ratio=0.0)
    caplog.set_level("WARNING", logger="vipyloqwen.train")
    status = train_st.main(["--config", str(write_yaml(tmp_path / "run.yaml", values))])
    error = capsys.readouterr().err
    assert status == 3, error[-3000:]
    message = error.split("error: ", 1)[1]
    assert message.startswith("training diverged at step ")
    step = int(message.split("step ", 1)[1].split(":")[0])
    assert "in task " in message and "rows [" in message and "terms {" in message
    assert "reached max_nonfinite_steps=3" in message and "Nothing was exported" in message
    skipped = [r.getMessage() for r in caplog.records if "optimizer step skipped" in r.getMessage()]
    assert len(skipped) == 2  # the third non-finite step stops the run
    assert all("in task " in m and "rows [" in m and "terms {" in m for m in skipped)
    first = int(skipped[0].split("step ", 1)[1].split(":")[0])
    listed = message.split("non-finite steps (")[1].split(")")[0].split(", ")
    assert 2 <= first < step and listed[0] == str(first) and listed[-1] == str(step)
    complete = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if checkpoint_problem(p) is None)
    good = max(number for number in complete if number < first)  # the last one saved before the divergence
    assert (
        f"the last good checkpoint is {out / f'checkpoint-{good}'} (step {good}, before the first non-finite "
        f"step {first})" in message
    )
    later = [f"checkpoint-{number}" for number in complete if number >= first]
    assert ("--resume-from checkpoint-" if later else "resume from it with --resume ") in message
    if later:
        assert f"saved after the first non-finite step, not advised: {', '.join(later)}" in message
    for number in complete:  # every checkpoint written is finite
        assert all(torch.isfinite(t).all() for t in weights(out / f"checkpoint-{number}").values())
    assert not (out / "final").exists() and not (out / STAGING).exists()


class InfWeightForOneStep(TrainerCallback):
    """Sets one weight to inf for the forward pass of step ``step`` (a real inf loss and NaN gradients), restores it
    after that step, and records whether that step changed any weight or optimizer state."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.before = None
        self.changed: list[str] | None = None

    def _param(self, model):
        return model[0].model.language_model.norm.weight.unsqueeze(0)  # the final norm: every token goes through it

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step == self.step - 1:
            self.before = {name: p.detach().clone() for name, p in model.named_parameters()}
            self.steps = {id(p): s["step"].clone() for p, s in optimizer.state.items() if "step" in s}
            with torch.no_grad():
                self.saved = self._param(model)[0, 0].item()
                self._param(model)[0, 0] = float("inf")

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                self._param(model)[0, 0] = self.saved
            self.changed = [n for n, p in model.named_parameters() if not torch.equal(p, self.before[n])]
            self.steps_after = {id(p): s["step"].clone() for p, s in optimizer.state.items() if "step" in s}


@pytest.mark.slow
def test_a_nonfinite_step_is_skipped_logged_and_training_goes_on(data, tmp_path):
    from vipyloqwen_tools.train.run import train

    probe = InfWeightForOneStep(step=2)
    result = train(config(tmp_path / "run", data, max_steps=4, save_steps=4), callbacks=[probe])
    assert result["global_step"] == 4 and Path(result["final_dir"]).is_dir()
    assert probe.changed == []  # the skipped step updated no weight ...
    assert probe.steps_after.keys() == probe.steps.keys()  # ... and no AdamW state (its per-weight step counts)
    assert all(torch.equal(probe.steps_after[k], probe.steps[k]) for k in probe.steps)
    history = result["log_history"]
    (skip,) = [e for e in history if "skipped_step" in e]
    assert skip["step"] == 2
    record = skip["skipped_step"]
    (batch,) = record["batches"]
    assert record["task"] == batch["task"] and len(batch["rows"]) == 4
    assert not all(math.isfinite(v) for v in batch["terms"].values())
    (logged,) = [e for e in history if e.get("step") == 2 and "loss" in e]
    assert logged["skipped_steps"] == 1
    assert math.isnan(logged["loss"])  # the step's loss was not finite: NaN, never a silent 0 ...
    assert any(not math.isfinite(v) for k, v in logged.items() if k.startswith(f"{batch['task']}/"))  # ... its terms
    steps = [e for e in history if "loss" in e and e["step"] != 2]
    assert [e["step"] for e in steps] == [1, 3, 4]
    assert all(math.isfinite(e["loss"]) and e["loss"] > 0 and "skipped_steps" not in e for e in steps)


class NaNWeightAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters())[0, 0] = float("nan")


@pytest.mark.slow
def test_checkpoint_save_refuses_nonfinite_weights(data, tmp_path):
    from vipyloqwen_tools.train.run import train

    out = tmp_path / "run"
    with pytest.raises(NonFiniteWeightsError, match="refusing to save checkpoint-2 at step 2: 1 of .* NaN/inf"):
        train(config(out, data, max_steps=4, save_steps=2), callbacks=[NaNWeightAt(step=2)])
    assert not (out / "checkpoint-2").exists() and not (out / STAGING).exists()


@pytest.mark.slow
def test_two_processes_skip_the_same_steps_and_stop_together(data, tmp_path):
    """torchrun, 2 gloo processes, a diverging learning rate: the trace shows both ranks taking every step with
    equal parameters (a skipped step updates neither), and the run ends with the guard's error (exit 3)."""
    import subprocess
    import sys

    from conftest import free_port
    from fault_runs import ROOT, env

    from vipyloqwen_tools.train.trace import read_trace

    out, trace_dir = tmp_path / "run", tmp_path / "trace"
    values = settings(out, *data, learning_rate=1e3, max_steps=12, save_steps=100, per_device_train_batch_size=2)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(ROOT / "train_st.py"), "--config", str(write_yaml(tmp_path / "run.yaml", values)),
        "--trace-dir", str(trace_dir),
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600)
    assert "failed (exitcode: 3)" in done.stderr, done.stderr[-4000:]
    message = done.stderr.split("error: training diverged at step ", 1)[1]
    stop = int(message.split(":")[0])
    trace = read_trace(trace_dir)
    steps = [[r for r in trace[rank] if r["step"] != "end"] for rank in (0, 1)]
    assert [r["step"] for r in steps[0]] == [r["step"] for r in steps[1]] == list(range(1, stop))
    for zero, one in zip(*steps, strict=True):
        assert one["param_norm"] == pytest.approx(zero["param_norm"], rel=1e-6)
    skipped = [int(n) for n in message.split("non-finite steps (")[1].split(")")[0].split(", ")]
    assert len(skipped) == 3 and skipped[-1] == stop and skipped[0] >= 2  # step 1 trains: finite weights to start
    for step in skipped[:-1]:  # no update at a skipped step, on either rank
        for rank in (0, 1):
            assert steps[rank][step - 1]["param_sums"] == steps[rank][step - 2]["param_sums"], (rank, step)
    assert not (out / "final").exists()
