"""Faults that need real processes: SIGTERM to a training run (once: the step ends, a complete checkpoint, exit 4;
twice: it exits at once), two runs on one output folder (the second exits at once naming the first's pid; a lock
left by a killed run is taken over with a message), and both under ``torchrun --nproc_per_node 2`` (a SIGTERM to
one rank stops both at the same step; a second torchrun on the folder is refused on both ranks).

Where the fault loses nothing, ``--resume`` ends with the final weights of the uninterrupted run, bit for bit: the
child trains with as many threads as this process (``fault_runs.env``), so its steps are this process's steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port
from fault_runs import (
    ROOT,
    assert_same_weights,
    config,
    env,
    gated_command,
    reference,
    settings,
    train_command,
    write_yaml,
)

from vipyloqwen_tools.train.checkpoints import STAGING, checkpoint_problem, complete_checkpoints
from vipyloqwen_tools.train.run_lock import LOCK_FILE
from vipyloqwen_tools.train.stop_signal import EXIT_STOPPED, REPEAT_S

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return reference(tmp_path_factory)


def wait_until(condition, process: subprocess.Popen, timeout: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        if process.poll() is not None:
            break
        time.sleep(0.01)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.is_file() else ""
    raise AssertionError(f"timed out or exited ({process.poll()}) waiting for {what}\n{tail}")


def logged_steps(log: Path) -> int:
    """Optimizer steps a run has logged so far (logging_steps 1: one "{'loss': ..." line each)."""
    return log.read_text(errors="replace").count("{'loss': ") if log.is_file() else 0


def start(command: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    """The command in a child with ``threads`` torch threads (default: this process's, as the reference run had)."""
    handle = log.open("w")
    threads = threads or torch.get_num_threads()
    return subprocess.Popen(command, env=env(threads), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)


def held_after_step_1(log: Path) -> bool:
    """Step 1 is logged: a gated run (``fault_runs.gated_command``) now waits for its gate before step 2."""
    return logged_steps(log) >= 1


def lock_record(out: Path) -> dict:
    text = (out / LOCK_FILE).read_text() if (out / LOCK_FILE).is_file() else ""
    return json.loads(text) if text.strip() else {}


# ------------------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_ends_the_step_saves_and_exits_4_then_resume_is_exact(ref, tmp_path):
    from vipyloqwen_tools.train.run import train

    _, data, out = ref
    run, log, gate = tmp_path / "run", tmp_path / "first.log", tmp_path / "gate"
    process = start(gated_command(write_yaml(tmp_path / "run.yaml", settings(run, *data)), gate), log)
    wait_until(lambda: held_after_step_1(log), process, 600, "step 1", log)
    os.kill(process.pid, signal.SIGTERM)  # between steps 1 and 2: step 2 runs, then the run stops
    wait_until(lambda: "SIGTERM: stopping after" in log.read_text(), process, 60, "the handler's line", log)
    gate.touch()
    assert process.wait(timeout=600) == EXIT_STOPPED, log.read_text()[-4000:]
    text = log.read_text()
    assert f"SIGTERM: stopping after the current step with a complete checkpoint (pid {process.pid})" in text
    step = int(text.split("error: stopped on SIGTERM at step ")[1].split(":")[0])
    assert logged_steps(log) == step == 2  # the step under way ended; no further step began
    assert f"{run / f'checkpoint-{step}'} is complete; nothing was exported. Run the same command with --resume" in text
    assert checkpoint_problem(run / f"checkpoint-{step}", verify=True) is None
    assert not (run / "final").exists() and not (run / STAGING).exists()
    assert lock_record(run) == {}  # released

    result = train(config(run, data, resume=True))  # nothing lost: the uninterrupted run's weights, bit for bit
    assert_same_weights(out / "final", Path(result["final_dir"]), exact=True)


def test_a_second_sigterm_exits_at_once(ref, tmp_path):
    _, data, _ = ref
    run, log, gate = tmp_path / "run", tmp_path / "run.log", tmp_path / "gate"
    process = start(gated_command(write_yaml(tmp_path / "run.yaml", settings(run, *data)), gate), log)
    wait_until(lambda: held_after_step_1(log), process, 600, "step 1", log)
    before = [step for step, _ in complete_checkpoints(run)]
    os.kill(process.pid, signal.SIGTERM)  # held before step 2: the stop cannot finish before the second signal
    time.sleep(REPEAT_S + 0.1)  # a repeat sooner than this is the same request delivered twice
    assert process.poll() is None, "the run ended before the second signal: " + log.read_text()[-2000:]
    second = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM, log.read_text()[-4000:]
    assert time.monotonic() - second < 10  # at once: no step finished, no save completed
    assert f"second SIGTERM: exiting at once (pid {process.pid})" in log.read_text()
    assert [step for step, _ in complete_checkpoints(run)] == before and not (run / "final").exists()


# ------------------------------------------------------------------------------------------------ the lock
def test_a_second_run_on_the_folder_exits_at_once_and_a_dead_runs_lock_is_taken_over(ref, tmp_path, caplog):
    from vipyloqwen_tools.train.run import train

    _, data, out = ref
    run, gate = tmp_path / "run", tmp_path / "gate"
    config_path = write_yaml(tmp_path / "run.yaml", settings(run, *data))
    first_log = tmp_path / "first.log"
    first = start(gated_command(config_path, gate), first_log)  # held after step 1 while the second run tries
    try:
        wait_until(lambda: lock_record(run).get("pid") == first.pid, first, 600, "the first run's lock", first_log)
        started = time.monotonic()
        second = subprocess.run(train_command(config_path), env=env(1), capture_output=True, text=True, timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        assert time.monotonic() - started < 120
        assert f"error: output folder {run} is in use by another run (pid {first.pid} on " in second.stderr
        assert "Traceback" not in second.stderr and "attention:" not in second.stderr  # stopped before the model
        assert first.poll() is None and lock_record(run)["pid"] == first.pid  # the first run goes on, undisturbed
        gate.touch()
        wait_until(lambda: checkpoint_problem(run / "checkpoint-3") is None if (run / "checkpoint-3").is_dir()
                   else False, first, 600, "checkpoint-3", first_log)  # fmt: skip
    finally:
        first.kill()  # kill -9: the kernel frees the lock, its record stays in the file
        first.wait()
    assert first.returncode == -signal.SIGKILL and lock_record(run)["pid"] == first.pid

    caplog.set_level("WARNING", logger="vipyloqwen.train")
    result = train(config(run, data, resume=True))
    takeover = [r.getMessage() for r in caplog.records if "taking over the lock" in r.getMessage()]
    assert len(takeover) == 1 and f"(pid {first.pid} on " in takeover[0]
    assert takeover[0].endswith("; that process no longer runs)")
    assert lock_record(run) == {}
    assert_same_weights(out / "final", Path(result["final_dir"]), exact=True)


# ------------------------------------------------------------------------------------------------ torchrun
def torchrun(config_path: Path, *flags: str, gate: Path | None = None) -> list[str]:
    """``torchrun --nproc_per_node 2 train_st.py``; with ``gate``, both ranks are held after step 1 until it exists."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    if gate is None:
        return [*launch, str(ROOT / "train_st.py"), "--config", str(config_path), *flags]
    return [*launch, *gated_command(config_path, gate, *flags)[1:]]  # the same script, without the interpreter


def worker_of_rank(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of torchrun's worker process of ``rank`` (its child whose environment has RANK=<rank>)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
    for pid in children.read_text().split() if children.exists() else []:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


def test_torchrun_one_lock_for_the_run_and_sigterm_to_one_rank_stops_both(ref, tmp_path):
    """2-process torchrun (gloo): a second torchrun on the same folder is refused on both of its ranks naming the
    first run's rank-0 pid; then a SIGTERM to rank 1 only: both ranks stop at the same step (one all-reduce) and
    save one complete checkpoint (both ranks' RNG states), exit 4; a torchrun --resume then ends with the weights of
    an uninterrupted torchrun run, bit for bit."""
    _, data, _ = ref
    values = dict(max_steps=6, save_steps=100, per_device_train_batch_size=2)
    run, log, gate = tmp_path / "run", tmp_path / "first.log", tmp_path / "gate"
    config_path = write_yaml(tmp_path / "run.yaml", settings(run, *data, **values))
    first = start(torchrun(config_path, gate=gate), log, threads=1)  # both ranks held after step 1
    try:
        wait_until(lambda: lock_record(run).get("world_size") == 2, first, 600, "the run's lock", log)
        holder = lock_record(run)["pid"]
        assert holder == worker_of_rank(first, 0)  # one lock, held by rank 0
        second = subprocess.run(torchrun(config_path), env=env(1), capture_output=True, text=True, timeout=600)
        assert second.returncode != 0 and second.stderr.count("exitcode: 2") >= 1, second.stderr[-4000:]
        assert f"error: output folder {run} is in use by another run (pid {holder} on " in second.stderr
        assert second.stderr.count("error: output folder") == 1  # printed by its rank 0 only; both ranks exit 2
        wait_until(lambda: held_after_step_1(log), first, 600, "step 1", log)
        rank1 = worker_of_rank(first, 1)
        os.kill(rank1, signal.SIGTERM)  # one rank only: the other learns it from the all-reduce
        wait_until(lambda: "SIGTERM: stopping after" in log.read_text(), first, 60, "rank 1's handler line", log)
        gate.touch()
        first.wait(timeout=600)
    finally:
        if first.poll() is None:  # a failed assertion: no worker outlives the test (they would load later tests)
            for rank in (0, 1):
                pid = worker_of_rank(first, rank)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
            first.kill()
    text = log.read_text()
    assert f"SIGTERM: stopping after the current step with a complete checkpoint (pid {rank1})" in text
    step = int(text.split("error: stopped on SIGTERM at step ")[1].split(":")[0])
    assert step == 2  # held after step 1, then step 2 ran on both ranks and they stopped together
    assert text.count("exitcode: 4") >= 1 and "exitcode: 1" not in text, text[-4000:]
    checkpoint = run / f"checkpoint-{step}"
    assert checkpoint_problem(checkpoint, verify=True) is None
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert [s for s, _ in complete_checkpoints(run)] == [step] and not (run / "final").exists()

    resumed = subprocess.run(torchrun(config_path, "--resume"), env=env(1), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    plain = tmp_path / "uninterrupted"
    straight = subprocess.run(
        torchrun(write_yaml(tmp_path / "plain.yaml", settings(plain, *data, **values))), env=env(1),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-4000:]
    assert_same_weights(plain / "final", run / "final", exact=True)
