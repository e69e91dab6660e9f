"""Faults of a long run, round 2, each injected for real into a tiny training run in this process: a non-finite loss
in one task while checkpoints rotate, a full disk during the final export, a flipped bit in a complete checkpoint, a
torn checkpoint left by a killed rotation, ``--max-steps`` below or at the checkpoint's step. Each asserts the exit
code, the message and what is on disk, and (where the fault loses nothing) that ``--resume`` finishes with the final
weights of the uninterrupted reference run (``fault_runs.reference``), bit for bit.

The runs in a child process (SIGTERM, two runs on one folder, torchrun) are in ``test_faults_processes.py``; an image
the model cannot take at batch time in ``test_train_bad_rows.py``."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from fault_runs import assert_same_weights, config, copy_run, reference, settings, write_yaml

from vipyloqwen_tools.train.checkpoints import MARKER, STAGING, checkpoint_problem, complete_checkpoints

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return reference(tmp_path_factory)


def steps_on_disk(out: Path) -> list[int]:
    return [step for step, _ in complete_checkpoints(out)]


# ------------------------------------------------------------------------------------------------ divergence
def test_rotation_keeps_the_last_good_checkpoint_and_the_guard_names_file_lines(ref, tmp_path, capsys, caplog):
    """The issue's reproduction: an inf loss weight in one task (text_pair: steps 4, 5 and 9 of this data), a save
    every 2 steps, save_total_limit 2. Rotation used to delete checkpoint-2, the only one saved before the first
    non-finite step, and the message then said none had been saved. Now checkpoint-2 is kept beyond the limit."""
    import train_st

    _, data, _ = ref
    out = tmp_path / "run"
    values = settings(
        out, *data, max_steps=12, save_steps=2, save_total_limit=2, loss_weights={"text_pair": {"mse": 1e39}}
    )
    caplog.set_level("WARNING", logger="vipyloqwen.train")
    status = train_st.main(["--config", str(write_yaml(tmp_path / "run.yaml", values))])
    error = capsys.readouterr().err
    assert status == 3, error[-3000:]
    message = error.split("error: ", 1)[1]
    listed = [int(n) for n in message.split("non-finite steps (")[1].split(")")[0].split(", ")]
    assert listed[:2] == [4, 5] and len(listed) == 3  # text_pair steps; the third stops the run
    assert (
        f"the last good checkpoint is {out / 'checkpoint-2'} (step 2, before the first non-finite step 4); resume "
        "from it with --resume-from checkpoint-2" in message
    )
    saved_after = [step for step in range(4, listed[-1], 2)]  # a save every 2 steps; the stopping step saves nothing
    assert len(saved_after) >= 2  # without the guard's protection rotation would have deleted checkpoint-2
    assert steps_on_disk(out) == [2, *saved_after[-2:]]  # the limit's newest 2, and the last good one beyond it
    later = ", ".join(f"checkpoint-{step}" for step in saved_after[-2:])
    assert f"saved after the first non-finite step, not advised: {later}" in message
    assert "no checkpoint was saved" not in message
    # The guard names the rows as file:line of the train file: each is a text_pair line.
    lines = data[0].read_text(encoding="utf-8").splitlines()
    warnings = [r.getMessage() for r in caplog.records if "optimizer step skipped" in r.getMessage()]
    assert len(warnings) == 2
    for text in [*warnings, message]:
        named = text.split("rows [", 1)[1].split("]", 1)[0].split(", ")
        assert len(named) == 4
        for entry in named:
            path, number = entry.rsplit(":", 1)
            assert path == str(data[0].resolve()) and json.loads(lines[int(number) - 1])["task"] == "text_pair"


def test_without_a_checkpoint_before_the_first_nonfinite_step_the_message_says_why(ref, tmp_path, capsys):
    import train_st

    _, data, _ = ref
    values = settings(
        tmp_path / "run", *data, max_steps=12, save_steps=100, nonfinite_policy="stop",
        loss_weights={"text_pair": {"mse": 1e39}},
    )  # fmt: skip
    assert train_st.main(["--config", str(write_yaml(tmp_path / "run.yaml", values))]) == 3
    message = capsys.readouterr().err.split("error: ", 1)[1]
    assert message.startswith("training diverged at step 4: ")
    assert (
        "no checkpoint was saved before the first non-finite step 4 (this run started at step 0; save_steps=100): "
        "nothing to resume from" in message
    )


# ------------------------------------------------------------------------------------------------ the export
@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of a given size (MiB) under tmp_path; root only."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    mounted = []

    def mount(mib: int) -> Path:
        point = tmp_path / "disk"
        point.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(point)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_disk_full_during_the_export_exits_3_leaves_no_final_and_resume_exports(ref, tmp_path, tmpfs, capsys, caplog):
    """The output folder on a tmpfs sized (from the reference run) to hold both checkpoints and half of final/: the
    export fails for lack of space. Exit 3, the message says so (bytes needed vs free), no final/ and no leftover,
    log_history.json and train_config.json written. After the disk grows, --resume resumes at checkpoint-6 (the last
    step: nothing to train) and exports the reference run's weights bit for bit."""
    import train_st
    from vipyloqwen_tools.train.model import build_tiny

    _, data, reference_out = ref
    checkpoints = folder_bytes(reference_out / "checkpoint-3") + folder_bytes(reference_out / "checkpoint-6")
    final_bytes = folder_bytes(reference_out / "final")
    disk = tmpfs((checkpoints + final_bytes // 2) // 2**20 + 2)
    run = disk / "run"
    init = build_tiny(tmp_path / "init-tiny")  # model and data cache outside the small disk: only the run is there
    values = settings(run, *data, model=str(init), data_cache_dir=str(tmp_path / "cache"))
    config_path = write_yaml(tmp_path / "run.yaml", values)
    status = train_st.main(["--config", str(config_path)])
    error = capsys.readouterr().err
    assert status == 3, error[-3000:]
    message = error[error.index("error: ") :]
    assert message.startswith(f"error: disk full: exporting {run / 'final'} into {run / STAGING / 'final'} failed (")
    needed = int(message.split("the export needs about ")[1].split(" bytes")[0])
    free = int(message.split(" bytes, ")[1].split(" are free on the file system of ")[0])
    assert abs(needed - final_bytes) < 0.02 * final_bytes  # the estimate: within 2% of the real export
    assert free < needed and f"free at least {needed - free} more" in message
    assert f"Nothing was exported (no {run / 'final'} was written)" in message
    assert f"The last complete checkpoint is {run / 'checkpoint-6'}; free space, then run the same command" in message
    assert not (run / "final").exists() and not (run / STAGING).exists()  # never a half-written final/
    assert (run / "log_history.json").is_file() and (run / "train_config.json").is_file()
    assert steps_on_disk(run) == [3, 6]

    grown = (checkpoints + 2 * final_bytes) // 2**20 + 8
    subprocess.run(["mount", "-o", f"remount,size={grown}m", str(disk)], check=True)  # space freed
    caplog.set_level("INFO", logger="vipyloqwen.train")
    assert train_st.main(["--config", str(config_path), "--resume"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "--resume at step 6 = --max-steps: nothing to train; the run evaluates and exports" in messages
    history = json.loads((run / "log_history.json").read_text(encoding="utf-8"))
    assert max(e["step"] for e in history if "loss" in e) == 6  # no extra step
    assert_same_weights(reference_out / "final", run / "final", exact=True)
    assert checkpoint_problem(run / "final", verify=True) is None  # final/ carries its completion marker


# ------------------------------------------------------------------------------------------------ a flipped bit
def flip_exponent_bit(file: Path) -> tuple[str, float, float]:
    """Flip bit 30 (the top exponent bit) of the first element of the first float32 tensor with |value| < 1 in a
    safetensors file, in place: same size, completion marker untouched. Returns (tensor, old value, new value)."""
    raw = bytearray(file.read_bytes())
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    for name, info in sorted(header.items()):
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        at = 8 + length + info["data_offsets"][0]
        old = struct.unpack("<f", raw[at : at + 4])[0]
        if 0 < abs(old) < 1:
            raw[at + 3] ^= 0x40  # little-endian: bit 30 is bit 6 of the fourth byte
            new = struct.unpack("<f", raw[at : at + 4])[0]
            file.write_bytes(bytes(raw))
            return name, old, new
    raise AssertionError("no float32 weight below 1 found")


def test_flipped_bit_is_found_resume_falls_back_and_rotation_removes_a_torn_folder(ref, tmp_path, caplog):
    """A bit flipped in checkpoint-6's weights (a weight becomes ~1e36, size unchanged, marker intact), and a torn
    checkpoint-1 (what a kill during rotation left). --resume names the corrupt file and resumes from checkpoint-3;
    --resume-from checkpoint-6 is refused; the resumed run ends bit-identical to the uninterrupted one, and its
    rotation deletes the torn folder."""
    from vipyloqwen_tools.train.checkpoints import NoCompleteCheckpointError
    from vipyloqwen_tools.train.run import train

    _, data, out = ref
    run = copy_run(out, tmp_path / "run", keep_steps=(3, 6))
    name, old, new = flip_exponent_bit(run / "checkpoint-6" / "model.safetensors")
    assert abs(new) > 1e30 and torch.isfinite(torch.tensor(new))  # finite: the guard would not have seen it
    assert checkpoint_problem(run / "checkpoint-6") is None  # sizes agree: a size-only marker misses it
    problem = checkpoint_problem(run / "checkpoint-6", verify=True)
    assert problem.startswith("model.safetensors is corrupt: its checksum is xxh3_128:")
    torn = run / "checkpoint-1"
    shutil.copytree(run / "checkpoint-3", torn)
    for part in (MARKER, "optimizer.pt", "trainer_state.json"):  # rmtree got this far before the kill
        (torn / part).unlink()

    with pytest.raises(NoCompleteCheckpointError, match=r"--resume-from .*checkpoint-6: not a complete checkpoint: "
                       r"model.safetensors is corrupt"):  # fmt: skip
        train(config(run, data, resume_from="checkpoint-6"))

    caplog.set_level("INFO", logger="vipyloqwen.train")
    result = train(config(run, data, resume=True, save_total_limit=2))
    messages = [r.getMessage() for r in caplog.records]
    assert f"skipping {run / 'checkpoint-6'}: {problem}" in messages
    assert f"resuming from {run / 'checkpoint-3'}" in messages
    assert any(m.startswith(f"deleting torn checkpoint folder {torn} (no completion marker") for m in messages)
    assert not torn.exists() and steps_on_disk(run) == [3, 6]
    assert_same_weights(out / "final", Path(result["final_dir"]), exact=True)
    assert checkpoint_problem(run / "checkpoint-6", verify=True) is None  # replaced by the resumed run's save


# ------------------------------------------------------------------------------------------------ --max-steps
def test_max_steps_below_the_checkpoint_is_refused(ref, tmp_path, capsys):
    import train_st

    _, data, out = ref
    run = copy_run(out, tmp_path / "run", keep_steps=(3, 6))
    config_path = write_yaml(tmp_path / "run.yaml", settings(run, *data))
    assert train_st.main(["--config", str(config_path), "--resume", "--max-steps", "4"]) == 2
    error = capsys.readouterr().err
    assert (
        f"error: --resume from {run / 'checkpoint-6'}: --max-steps 4 is below the checkpoint's step 6; a run cannot "
        "go back. Give --max-steps 6 or more (6: nothing is trained, the export runs)" in error
    )
    assert steps_on_disk(run) == [3, 6] and not (run / "final").exists()
