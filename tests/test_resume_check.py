"""Resume checks (vipyloqwen_tools/resume_check.py): ``--resume`` with another train file, batch size, learning rate
or number of processes is refused with each change old -> new and the flag that accepts it; an accepted learning
rate is really used from the resumed step and ``train_config.json`` says so; safe settings may change."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fault_runs import ROOT, config, copy_run, env, settings, weights, write_yaml

from vipyloqwen_tools.train.resume_check import RUN_DEFINING, Change, ResumeMismatchError, compare, parse_accept


def test_compare_and_accept_names():
    old = {"learning_rate": 1e-3, "train_file": {"path": "/a.jsonl", "content": {"size": 5, "sample_hash": "x"}}}
    moved = {"learning_rate": 1e-3, "train_file": {"path": "/b.jsonl", "content": {"size": 5, "sample_hash": "x"}}}
    assert compare(old, moved) == []  # same bytes elsewhere: the same data
    edited = {"learning_rate": 1e-2, "train_file": {"path": "/a.jsonl", "content": {"size": 5, "sample_hash": "y"}}}
    changes = compare(old, edited)
    assert [c.name for c in changes] == ["train_file", "learning_rate"]
    assert changes[1].line() == "learning_rate: 0.001 -> 0.01"
    assert changes[0].line() == "train_file: /a.jsonl (sample_hash x, size 5) -> /a.jsonl (sample_hash y, size 5)"
    assert parse_accept(" learning_rate,train_file ") == {"learning_rate", "train_file"}
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['max_steps'\]; valid: model, train_file"):
        parse_accept("max_steps")
    assert "world_size" in RUN_DEFINING and "logging_steps" not in RUN_DEFINING
    assert Change("world_size", 1, 2).line() == "world_size: 1 -> 2"


@pytest.fixture(scope="module")
def ref(reference_run):
    return reference_run


@pytest.fixture
def stopped(ref, tmp_path):
    """The reference run as it was after step 3 (checkpoint-3 only)."""
    _, data, out = ref
    return copy_run(out, tmp_path / "run", keep_steps=(3,)), data


def _refusal(run, data, **changes) -> str:
    from vipyloqwen_tools.train.run import train

    with pytest.raises(ResumeMismatchError) as caught:
        train(config(run, data, resume=True, **changes))
    return str(caught.value)


@pytest.mark.slow
def test_resume_with_another_train_file_batch_size_or_learning_rate_is_refused(stopped):
    run, data = stopped
    lines = data[0].read_text(encoding="utf-8").splitlines(keepends=True)
    other = data[0].with_name("last-half.jsonl")  # the last 24 of the 48 lines (beside the images they name)
    other.write_text("".join(lines[24:]), encoding="utf-8")

    message = _refusal(run, (other, data[1]))
    assert f"train_file: {data[0]} (" in message and f"-> {other} (" in message
    assert "task_mix: " in message and '"instr": 16' in message and '"instr": 8' in message
    assert "--accept-changes train_file,task_mix" in message

    message = _refusal(run, data, per_device_train_batch_size=8)
    assert "per_device_train_batch_size: 4 -> 8\n" in message
    assert "(effective batch size 4 -> 8)" in message and "--accept-changes per_device_train_batch_size" in message

    message = _refusal(run, data, learning_rate=1e-2, logging_steps=2, save_steps=5, max_steps=7)
    assert "learning_rate: 0.001 -> 0.01\n" in message
    for name in ("logging_steps", "save_steps", "max_steps"):  # safe to change: not refused
        assert f"{name}:" not in message
    assert "--accept-changes learning_rate (YAML: accept_changes: learning_rate)" in message
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"] and not (run / "final").exists()


@pytest.mark.slow
def test_an_accepted_learning_rate_is_used_and_recorded(ref, stopped):
    from vipyloqwen_tools.train.run import train

    _, _, out = ref
    run, data = stopped
    result = train(config(run, data, resume=True, learning_rate=1e-2, accept_changes="learning_rate"))
    used = {e["step"]: e["learning_rate"] for e in result["log_history"] if "learning_rate" in e}
    before = {e["step"]: e["learning_rate"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e}
    for step in (4, 5, 6):  # the schedule of the original run, times 10 from the resumed step on
        assert used[step] == pytest.approx(before[step] * 10, rel=1e-9), (step, used, before)
    a, b = weights(out / "final"), weights(run / "final")
    assert any(not (a[k] == b[k]).all() for k in a)
    recorded = json.loads((run / "train_config.json").read_text())
    assert recorded["learning_rate"] == 0.01
    (entry,) = recorded["resume_history"]
    assert entry["resumed_at_step"] == 3 and entry["from"].endswith("checkpoint-3")
    assert entry["accepted"] == {"learning_rate": {"old": 0.001, "new": 0.01}}
    again = json.loads((run / "checkpoint-6" / "run_settings.json").read_text())
    assert again["settings"]["learning_rate"] == 0.01 and again["history"] == recorded["resume_history"]


@pytest.mark.slow
def test_a_one_process_checkpoint_resumed_under_two_process_torchrun_is_refused(stopped, tmp_path):
    from conftest import free_port

    run, data = stopped
    config_path = write_yaml(tmp_path / "run.yaml", settings(run, *data, per_device_train_batch_size=2))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        str(ROOT / "train_st.py"), "--config", str(config_path), "--resume",
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    # Every process refuses at the same point; torchrun stops the others when the first one exits (exit 2).
    assert "error: --resume from" in done.stderr and "failed (exitcode: 2)" in done.stderr, done.stderr[-4000:]
    assert "world_size: 1 -> 2\n" in done.stderr and "per_device_train_batch_size: 4 -> 2\n" in done.stderr
    assert "--accept-changes world_size,per_device_train_batch_size" in done.stderr
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"] and not (run / "final").exists()
