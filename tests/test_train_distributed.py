"""Data-parallel training with 2 CPU processes (gloo), observed through the training trace (``trace_dir``).

The session's one ``torchrun --nproc_per_node 2 train_st.py`` run (conftest ``two_process_run``, see
``tests/distributed_runs.py``) on the tiny model and generated text data: after every optimizer
step both ranks hold equal parameters, their batches differ (same task), the InfoNCE compares world_size x batch
candidates, only rank 0 writes files, and the first step's loss equals the single-process loss of the concatenated
global batch. Plus: the grouping refusal, error propagation of the data preparation, the FSDP2 full state dict
export, and accelerate's cpu-2proc config starting 2 processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import free_port
from distributed_runs import BATCH, STEPS, WORLD, env, write_data

from vipyloqwen_tools.data import DataError
from vipyloqwen_tools.train.distributed import check_task_grouping

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_ranks_stay_equal_and_see_different_batches(two_process_run):
    trace = two_process_run.trace
    assert sorted(trace) == [0, 1]
    steps = [[r for r in trace[rank] if r["step"] != "end"] for rank in (0, 1)]
    assert [r["step"] for r in steps[0]] == list(range(1, STEPS + 1)) == [r["step"] for r in steps[1]]
    for zero, one in zip(*steps, strict=True):
        assert zero["world_size"] == one["world_size"] == WORLD
        # Equal parameters after every optimizer step (DDP synchronised the gradients).
        assert one["param_norm"] == pytest.approx(zero["param_norm"], rel=1e-6)
        sums0, sums1 = torch.tensor(zero["param_sums"]), torch.tensor(one["param_sums"])
        assert float((sums0 - sums1).norm() / sums0.norm()) < 1e-6
        # Same task, different rows; InfoNCE candidates = world_size x batch.
        (batch0,), (batch1,) = zero["micro_batches"], one["micro_batches"]
        assert batch0["dataset"] == batch1["dataset"]
        assert len(batch0["rows"]) == len(batch1["rows"]) == BATCH
        assert not set(batch0["rows"]) & set(batch1["rows"])
        for batch in (batch0, batch1):
            assert batch["candidates"] == {"documents": WORLD * BATCH, "anchors": WORLD * BATCH}
    assert steps[0][0]["param_norm"] != steps[0][-1]["param_norm"]  # it trained
    assert sorted(r["micro_batches"][0]["dataset"] for r in steps[0]) == ["instr"] * 2 + ["ocr"] * 2 + ["text_pair"] * 2


@pytest.mark.slow
def test_one_progress_display_under_torchrun(two_process_run):
    """Rank 0 alone shows the plan and one progress line per logged step (step/total, elapsed<ETA, rate); the
    captured output (a pipe, not a terminal) has no carriage returns."""
    log = two_process_run.log
    assert "\r" not in log
    assert log.count(f"training: {STEPS} optimizer steps") == 1 and f"x {WORLD} process(es)" in log
    for step in range(1, STEPS + 1):
        lines = [line for line in log.splitlines() if line.startswith(f"step {step}/{STEPS} ") and "'loss'" in line]
        assert len(lines) == 1 and "<" in lines[0] and ("it/s]" in lines[0] or "s/it]" in lines[0]), lines


@pytest.mark.slow
def test_only_rank_zero_writes(two_process_run):
    trace, out = two_process_run.trace, two_process_run.out
    rank0 = {entry for record in trace[0] for entry in record["writes"]}
    rank1 = {entry for record in trace[1] for entry in record["writes"]}
    # Rank 1 opened no file for writing and renamed / removed nothing; it only made exist_ok folders: the data
    # cache it reads, and the staged .saving/checkpoint-N for its own rng_state_1.pth (written by torch.save,
    # outside the hook).
    for entry in rank1:
        event, path = entry.split(" ", 1)
        assert event == "mkdir" and (path.startswith(".data-cache") or path.startswith(".saving/checkpoint-")), entry
    # The hook saw rank 0 write the data cache, the tiny model, checkpoints, the export and the logs.
    for expected in (
        ".saving/final/config.json", ".saving/checkpoint-3/trainer_state.json", "train_config.json",
        "log_history.json", ".run.lock",
    ):  # fmt: skip
        assert f"open {expected}" in rank0, sorted(rank0)
    # Checkpoints and the export are staged and renamed into place once complete (every rank's part written first);
    # os.replace raises the audit event os.rename.
    marker = ".saving/checkpoint-3/checkpoint_complete.json"
    assert {f"rename {marker}", "rename .saving/checkpoint-3", "rename checkpoint-3"} <= rank0, sorted(rank0)
    assert {"rename .saving/final/checkpoint_complete.json", "rename .saving/final"} <= rank0, sorted(rank0)
    assert any(e.startswith("open .data-cache/") and e.endswith("report.json") for e in rank0)
    assert any(e.startswith("open .init-tiny-") for e in rank0)
    listing = sorted(p.name for p in out.iterdir())
    assert listing == [
        ".data-cache", ".run.lock", "checkpoint-3", "checkpoint-6", "final", "init-tiny", "log_history.json",
        "train_config.json", "training_curves.png",
    ]  # fmt: skip
    # transformers keeps one RNG state per rank in a checkpoint (for an exact --resume); nothing else is per rank.
    assert sorted(p.name for p in (out / "checkpoint-6").glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    config = json.loads((out / "train_config.json").read_text())
    assert config["world_size"] == WORLD and config["distributed_type"] == "MULTI_CPU"
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_first_step_loss_equals_single_process_loss_of_global_batch(two_process_run):
    from vipyloqwen_tools.train.trace import reference_loss, summarize

    run = two_process_run
    loss = reference_loss(run.trace_dir, run.train, run.out / "init-tiny", max_length=32)
    assert loss["distributed"] == pytest.approx(loss["single"], rel=1e-5)
    first = [run.trace[rank][0]["micro_batches"][0]["loss"] for rank in (0, 1)]
    assert first[0] != pytest.approx(first[1], rel=1e-6)  # each rank its own rows
    summary = summarize(run.trace_dir)  # the CLI's summary agrees with the checks above
    assert summary["same_task_every_step"] and summary["rows_disjoint_every_step"] and summary["steps"] == STEPS
    assert summary["candidates"] == [{"anchors": WORLD * BATCH, "documents": WORLD * BATCH}]
    assert summary["max_rel_param_norm_diff"] < 1e-6 and summary["max_rel_param_sums_diff"] < 1e-6


def test_grouping_that_cannot_fill_a_step_is_refused():
    datasets = {"instr": list(range(40)), "ocr+neg": list(range(13))}
    with pytest.raises(DataError) as caught:
        check_task_grouping(datasets, per_device_batch=8, world_size=2)
    message = str(caught.value)
    assert "dataset 'ocr+neg' has 13 rows" in message and "2 x per_device_train_batch_size 8 = 16" in message
    assert "per_device_train_batch_size <= 6 with 2 process(es)" in message
    assert "at most 1 process(es) at per_device_train_batch_size 8" in message
    assert "instr" not in message.split("\n", 1)[1]
    check_task_grouping(datasets, per_device_batch=6, world_size=2)  # 2 x 6 <= 13: fine


def test_train_refuses_a_batch_no_dataset_can_fill(tmp_path):
    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.run import train

    train_file, _ = write_data(tmp_path, per_task=6)
    out = tmp_path / "out"
    config = TrainConfig.from_yaml(None, train_file=str(train_file), eval_file=None, output_dir=str(out))
    config.per_device_train_batch_size = 8
    with pytest.raises(DataError, match=r"dataset 'instr' has 6 rows, .* per_device_train_batch_size <= 6 with 1"):
        train(config)
    assert not (tmp_path / "out" / "init-tiny").exists()  # refused before building the model


def gloo_prepare(folder: Path) -> None:
    """The inputs of :func:`gloo_worker` (conftest ``gloo_pair``): a train file with a bad line, the tiny model."""
    from conftest import shared_tiny

    (folder / "bad.jsonl").write_text('{"task": "instr", "query": "q"}\n', encoding="utf-8")
    (folder / "checkpoint.txt").write_text(str(shared_tiny()[2]), encoding="utf-8")


def gloo_worker(rank: int, root: str) -> None:
    """In each of the 2 gloo processes: the data preparation of a bad file, then an FSDP2-sharded export."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModel, AutoProcessor

    from vipyloqwen_tools.checkpoint.export import save_checkpoint
    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.distributed import full_state_dict, prepare_data_once
    from vipyloqwen_tools.train.prepare import prepare_data

    checkpoint = Path(root, "checkpoint.txt").read_text(encoding="utf-8")
    # 1. A bad train file: the main process's DataError reaches the other process (nobody waits forever).
    config = TrainConfig.from_yaml(None, train_file=f"{root}/bad.jsonl", output_dir=f"{root}/out", data_num_proc=1)
    try:
        prepare_data_once(config, SimpleNamespace(world_size=2, process_index=rank), prepare_data)
        outcome = "no error"
    except DataError as error:
        outcome = str(error)
    Path(f"{root}/rank{rank}.txt").write_text(outcome, encoding="utf-8")
    # 2. FSDP2 (fully_shard) on CPU: the gathered full state dict is what the export writes.
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True)
    assert full_state_dict(model) is None  # not sharded yet: save as usual
    for layer in model.language_model.layers:
        fully_shard(layer)
    fully_shard(model)
    state = full_state_dict(model)
    if rank == 0:
        processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
        save_checkpoint(model, processor, Path(root) / "export", state_dict=state)
    dist.barrier()


@pytest.mark.slow
def test_gloo_data_error_reaches_every_process_and_fsdp2_exports_full_weights(gloo_pair, tiny_checkpoint):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    folder = gloo_pair[__name__]
    for rank in (0, 1):
        assert "bad.jsonl has 1 bad line(s)" in (folder / f"rank{rank}.txt").read_text()
    written = load_file(folder / "export" / "model.safetensors")
    expected = load_file(tiny_checkpoint / "model.safetensors")
    assert sorted(written) == sorted(expected)
    for key, value in written.items():
        assert torch.equal(value, expected[key]), key
    assert AutoConfig.from_pretrained(folder / "export", trust_remote_code=True).architectures == ["ViPyloQwenModel"]
    AutoModel.from_pretrained(folder / "export", trust_remote_code=True)  # loads with the shipped code


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("mpiexec") or shutil.which("mpirun")),
    reason="accelerate's MULTI_CPU launcher needs an MPI launcher (apt-get install mpich; .ci/run installs it)",
)
def test_accelerate_cpu_2proc_config_starts_two_processes(tmp_path):
    script = tmp_path / "who.py"
    # Each process writes its own file: mpiexec forwards the ranks' stdout unsynchronised, so two prints can
    # arrive on one line.
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from accelerate import PartialState\n"
        "state = PartialState(cpu=True)\n"
        "line = f'process {state.process_index} of {state.num_processes} {state.distributed_type}'\n"
        "Path(sys.argv[1], f'who-{state.process_index}.txt').write_text(line, encoding='utf-8')\n",
        encoding="utf-8",
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "configs" / "accelerate" / "cpu-2proc.yaml"), "--main_process_port", str(free_port()), str(script),
        str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = [path.read_text(encoding="utf-8") for path in sorted(tmp_path.glob("who-*.txt"))]
    assert lines == ["process 0 of 2 DistributedType.MULTI_CPU", "process 1 of 2 DistributedType.MULTI_CPU"], (
        done.stdout[-2000:] + done.stderr[-2000:]
    )


def test_every_shipped_accelerate_config_parses_to_what_it_says():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    expected = {
        "cpu-2proc.yaml": (DistributedType.MULTI_CPU, 2),
        "fsdp-4gpu.yaml": (DistributedType.FSDP, 4),
        "deepspeed-zero3-4gpu.yaml": (DistributedType.DEEPSPEED, 4),
    }
    folder = ROOT / "configs" / "accelerate"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(expected)
    for name, (kind, processes) in expected.items():
        config = load_config_from_file(str(folder / name))
        assert (config.distributed_type, config.num_processes) == (kind, processes), name
    cpu = load_config_from_file(str(folder / "cpu-2proc.yaml"))
    assert cpu.use_cpu and (ROOT / cpu.mpirun_config["mpirun_hostfile"]).read_text().split() == ["localhost:2"]
    fsdp = load_config_from_file(str(folder / "fsdp-4gpu.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_fsdp2_final_norm_heuristic_skips_st_normalize(tiny_checkpoint, tmp_path):
    """accelerate's FSDP2 preparation shards what its _find_final_norm returns; on a SentenceTransformer that is ST's
    parameter-free Normalize module, and fully_shard fails on it. load_model points it at a module without one."""
    from accelerate.utils.fsdp_utils import _find_final_norm

    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.model import load_model

    model = load_model(TrainConfig(model=str(tiny_checkpoint), output_dir=str(tmp_path)), "fp32")
    assert _find_final_norm(model) is None
    del model.base_model_prefix
    assert type(_find_final_norm(model)).__name__ == "Normalize"  # what it would shard without the fix


def test_checkpoint_save_from_a_gathered_state_dict(tiny_checkpoint, tmp_path):
    """The FSDP / DeepSpeed checkpoint path: transformers hands _save the gathered full state dict (SentenceTransformer
    keys); the checkpoint is written from it, not from the module's own (sharded) tensors."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments

    from vipyloqwen_tools.train.trainer import ViPyloQwenTrainer

    model = SentenceTransformer(str(tiny_checkpoint), trust_remote_code=True, device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none")
    trainer = ViPyloQwenTrainer(model=model, args=args)
    state = {key: value + 1.0 for key, value in model.state_dict().items()}  # differs from the module's tensors
    trainer._save(str(tmp_path / "checkpoint-1"), state_dict=state)
    written = load_file(tmp_path / "checkpoint-1" / "model.safetensors")
    assert sorted(written) == sorted(key.removeprefix("0.model.") for key in state)
    for key, value in state.items():
        assert torch.equal(written[key.removeprefix("0.model.")], value), key
    assert (tmp_path / "checkpoint-1" / "training_args.bin").is_file()
    assert (tmp_path / "checkpoint-1" / "modules.json").is_file()
