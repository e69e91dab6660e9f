"""Atomic checkpoints (vipyloqwen_tools/checkpoints.py), each fault injected for real: a torn checkpoint folder (no
trainer state, empty weights), a kill -9 of the training process while it saves, a full disk (a small tmpfs mounted
under the output folder) while it saves. Every time ``--resume`` takes the newest complete checkpoint, says what it
skipped and why, and finishes with the weights of the uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fault_runs import assert_same_weights, config, copy_run, env, settings, train_command, write_yaml

from vipyloqwen_tools.train.checkpoints import (
    MARKER,
    STAGING,
    checkpoint_problem,
    find_resume_checkpoint,
    missing_parts,
    write_marker,
)


def fake_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    for name, size in {
        "model.safetensors": 64, "optimizer.pt": 128, "scheduler.pt": 8, "rng_state.pth": 16,
        "trainer_state.json": 32, "run_settings.json": 4,
    }.items():  # fmt: skip
        (folder / name).write_bytes(b"x" * size)
    write_marker(folder, step, 1, {"global_step": step})
    return folder


def test_marker_records_every_file_and_detects_each_tear(tmp_path):
    good = fake_checkpoint(tmp_path / "checkpoint-5", 5)
    assert checkpoint_problem(good) is None and missing_parts(good, 1) == []
    assert missing_parts(good, 2) == ["rng_state_0.pth", "rng_state_1.pth"]  # a 2-process run needs both
    record = json.loads((good / MARKER).read_text())
    assert record["step"] == 5 and record["files"]["optimizer.pt"]["size"] == 128

    (torn := tmp_path / "checkpoint-6").mkdir()
    shutil.copytree(good, torn, dirs_exist_ok=True)
    (torn / "trainer_state.json").unlink()
    assert checkpoint_problem(torn) == "trainer_state.json is missing (the completion marker lists it with 32 bytes)"
    shutil.copy(good / "trainer_state.json", torn / "trainer_state.json")
    (torn / "model.safetensors").write_bytes(b"")
    assert checkpoint_problem(torn) == "model.safetensors has 0 bytes, the completion marker recorded 64"
    (torn / MARKER).unlink()
    assert checkpoint_problem(torn) == (
        f"no completion marker ({MARKER}): its save did not finish (model.safetensors is empty (0 bytes))"
    )


def test_resume_pick_takes_the_newest_complete_and_names_what_it_skipped(tmp_path):
    fake_checkpoint(tmp_path / "checkpoint-5", 5)
    (torn := tmp_path / "checkpoint-10").mkdir()
    (torn / "config.json").write_text("{}")
    (torn / "model.safetensors").write_bytes(b"")
    (tmp_path / STAGING / "checkpoint-15").mkdir(parents=True)
    fake_checkpoint(tmp_path / "checkpoint-2", 2)
    pick = find_resume_checkpoint(tmp_path)
    assert pick.path == tmp_path / "checkpoint-5"
    assert [(folder.name, reason.split(":")[0].split(" (")[0]) for folder, reason in pick.skipped] == [
        ("checkpoint-15", "an unfinished save"),
        ("checkpoint-10", "no completion marker"),
    ]
    assert "no trainer_state.json; model.safetensors is empty (0 bytes)" in pick.skipped[1][1]
    assert pick.report()[-1] == f"resuming from {tmp_path / 'checkpoint-5'}"
    assert find_resume_checkpoint(tmp_path / "nothing").path is None


@pytest.fixture(scope="module")
def ref(reference_run):
    root, data, out = reference_run
    for step in (3, 6):
        assert checkpoint_problem(out / f"checkpoint-{step}") is None
    assert not (out / STAGING).exists()
    return root, data, out


@pytest.mark.slow
def test_torn_checkpoint_is_skipped_and_resume_matches_the_uninterrupted_run(ref, tmp_path, caplog):
    """A torn checkpoint-6 (no trainer state, empty weights: what a kill during a non-atomic save left)."""
    from vipyloqwen_tools.train.run import train

    _, data, out = ref
    run = copy_run(out, tmp_path / "run", keep_steps=(3, 6))
    (run / "checkpoint-6" / "trainer_state.json").unlink()
    (run / "checkpoint-6" / "model.safetensors").write_bytes(b"")
    (run / "checkpoint-6" / MARKER).unlink()
    caplog.set_level("INFO", logger="vipyloqwen.train")
    result = train(config(run, data, resume=True))
    messages = [r.getMessage() for r in caplog.records]
    skipped = [m for m in messages if m.startswith(f"skipping {run / 'checkpoint-6'}: no completion marker")]
    assert len(skipped) == 1 and "no trainer_state.json" in skipped[0], messages
    assert "model.safetensors is empty (0 bytes)" in skipped[0]
    assert messages.index(f"resuming from {run / 'checkpoint-3'}") > messages.index(skipped[0])
    assert result["global_step"] == 6
    assert checkpoint_problem(run / "checkpoint-6") is None  # the torn folder was replaced by a complete save
    assert_same_weights(out / "final", Path(result["final_dir"]), exact=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if path.exists():
            return True
        time.sleep(0.001)
    return False


@pytest.mark.slow
def test_kill_9_during_a_save_then_resume_finishes(ref, tmp_path, caplog):
    """SIGKILL the moment the save of checkpoint-6 starts writing; --resume continues from checkpoint-3."""
    _, data, out = ref
    run = tmp_path / "run"
    config_path = write_yaml(tmp_path / "run.yaml", settings(run, *data))
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(train_command(config_path), env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        staged = run / STAGING / "checkpoint-6" / "model.safetensors"
        assert _wait_for(staged, process, timeout=300), (tmp_path / "first.log").read_text()[-3000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "checkpoint-6").exists() and (run / STAGING / "checkpoint-6").is_dir()
    assert checkpoint_problem(run / "checkpoint-3") is None and not (run / "final").exists()

    import train_st  # --resume, in this process

    caplog.set_level("INFO", logger="vipyloqwen.train")
    assert train_st.main(["--config", str(config_path), "--resume"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"skipping {run / STAGING / 'checkpoint-6'}: an unfinished save") for m in messages)
    assert f"resuming from {run / 'checkpoint-3'}" in messages
    assert checkpoint_problem(run / "checkpoint-6") is None and not (run / STAGING).exists()
    # Steps 1-3 ran in the child (1 thread), 4-6 here (2 threads): equal to float tolerance, not bit for bit.
    assert_same_weights(out / "final", run / "final", exact=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MiB tmpfs: room for the data cache and one checkpoint of the tiny model (about 130 MB), not two."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_full_disk_during_a_save_says_so_and_keeps_the_last_checkpoint(ref, tmp_path, small_disk, capsys):
    from conftest import place_tiny_init

    import train_st

    _, data, out = ref
    run = small_disk / "run"
    init = place_tiny_init(tmp_path)  # the model outside the small disk: only checkpoints land there
    values = settings(run, *data, model=str(init), data_cache_dir=str(tmp_path / "cache"))
    config_path = write_yaml(tmp_path / "run.yaml", values)
    status = train_st.main(["--config", str(config_path)])
    error = capsys.readouterr().err
    assert status == 3, error[-3000:]
    error = error[error.index("error: ") :]
    assert f"error: disk full: saving checkpoint-6 into {run / STAGING / 'checkpoint-6'} failed" in error
    assert "(RuntimeError: " in error  # what torch.save said (a short write, no errno)
    free = int(error.split("); ", 1)[1].split(" bytes were free on the file system of ")[0])
    assert free < (1 << 20) and f"of {run} (of 209715200)" in error  # the disk was full ...
    assert "after removing the unfinished save; a checkpoint takes " in error  # ... until the unfinished save went
    assert f"The last complete checkpoint is {run / 'checkpoint-3'}; free space, then run again with --resume" in error
    assert checkpoint_problem(run / "checkpoint-3") is None
    assert not (run / "checkpoint-6").exists() and not (run / STAGING).exists()  # the unfinished save is gone

    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)  # space freed
    assert train_st.main(["--config", str(config_path), "--resume"]) == 0
    assert_same_weights(out / "final", run / "final", exact=True)


@pytest.mark.slow
def test_resume_from_a_chosen_checkpoint_replaces_the_newer_ones(ref, tmp_path, caplog):
    """--resume-from checkpoint-3 with a complete checkpoint-6 beside it (the one to go on from after a divergence
    is not always the newest): continues from step 3, exactly as the uninterrupted run."""
    from vipyloqwen_tools.train.run import train

    _, data, out = ref
    run = copy_run(out, tmp_path / "run", keep_steps=(3, 6))
    caplog.set_level("INFO", logger="vipyloqwen.train")
    result = train(config(run, data, resume_from="checkpoint-3"))
    messages = [r.getMessage() for r in caplog.records]
    assert (
        f"--resume-from {run / 'checkpoint-3'}: newer checkpoints ['checkpoint-6'] are replaced as the run "
        "reaches them" in messages
    )
    assert f"resuming from {run / 'checkpoint-3'}" in messages
    assert [e["step"] for e in result["log_history"] if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert_same_weights(out / "final", Path(result["final_dir"]), exact=True)
    assert_same_weights(out / "checkpoint-6", run / "checkpoint-6", exact=True)
