"""train_st end to end on the tiny model: loss goes down, the export reloads, --resume continues, bad files are
refused or their rows kept as rejects, and InfoNCE gathers candidates across 2 gloo processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import free_port, tiny_run_config

from vipyloqwen_tools.data import DataError
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.run import train

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> tuple[Path, Path]:
    """A train file of 8 rows per task from the sample (+ one bad line) and an eval file of 8 per task.

    8 train rows per task = one batch per task, the rows fixed_batch_loss measures: the 6 steps train every task
    on exactly those rows (with 16 rows, 6 steps left some tasks untrained and the shared AdamW momentum of the
    other tasks moved their loss either way, depending on the data)."""
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(SAMPLE / "img", root / "img")

    def take(split: str, per_task: int) -> list[str]:
        kept, counts = [], {}
        for line in (SAMPLE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            task = json.loads(line)["task"].strip("<>")
            if counts.get(task, 0) < per_task and "negative" not in line:
                counts[task] = counts.get(task, 0) + 1
                kept.append(line)
        return kept

    train_lines = take("train", 8)
    train_lines.insert(3, '{"task": "ocr", "query": "no image here", "positive": "x"}')
    (root / "train.jsonl").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (root / "eval.jsonl").write_text("\n".join(take("eval", 8)) + "\n", encoding="utf-8")
    return root / "train.jsonl", root / "eval.jsonl"


# 6 steps of one batch of 8 rows per task (see small_files), every checkpoint kept, bad rows skipped.
RUN = {
    "num_train_epochs": 1,
    "max_steps": 6,
    "per_device_train_batch_size": 8,
    "max_length": 64,
    "max_image_tokens": 16,
    "save_total_limit": None,
    "seed": 3,
    "skip_bad_rows": True,
}


def config(out: Path, files, **overrides) -> TrainConfig:
    train_file, eval_file = files
    return tiny_run_config(out, train_file, eval_file, **{**RUN, **overrides})


def fixed_batch_loss(model_dir: Path, out: Path) -> float:
    """Sum over tasks of the router loss on the first 8 training rows of each task."""
    from sentence_transformers import SentenceTransformer

    from configuration_vipyloqwen import TASKS
    from vipyloqwen_tools.data import load_task_datasets, validate_file
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    train_file = out / "train_file.txt"
    datasets = load_task_datasets(
        train_file.read_text().strip(),
        cache_dir=out / ".arrow-cache",
        report=validate_file(train_file.read_text().strip()),
    )
    model = SentenceTransformer(
        str(model_dir), trust_remote_code=True, device="cpu", processor_kwargs={"max_image_tokens": 16}
    )
    router = ViPyloQwenRouterLoss(model)
    total = 0.0
    with torch.no_grad():
        for name, dataset in datasets.items():
            rows = dataset[:8]
            prefix = TASKS[name].prefix
            anchors = model.encode(rows["anchor"], prompt=prefix, convert_to_tensor=True)
            positives = model.encode(
                rows["positive"], prompt=prefix if name == "text_pair" else None, convert_to_tensor=True
            )
            scores = torch.tensor(rows["score"]) if "score" in rows else None
            total += sum(
                v.item() for v in router.compute_loss_from_embeddings(name, [anchors, positives], scores).values()
            )
    return total


@pytest.fixture(scope="module")
def run_a(small_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "a"
    result = train(config(out, small_files))
    (out / "train_file.txt").write_text(str(small_files[0]))
    return out, result


def test_bad_file_is_refused_by_default(small_files, tmp_path):
    with pytest.raises(DataError, match="line 4: query: task ocr needs 1-5 images"):
        train(config(tmp_path / "refused", small_files, skip_bad_rows=False, prebuilt_tiny=False))
    assert not (tmp_path / "refused" / "init-tiny").exists()  # refused before building anything


@pytest.mark.slow
def test_short_run_lowers_loss_exports_and_keeps_rejects(run_a):
    out, result = run_a
    losses = [entry["loss"] for entry in result["log_history"] if "loss" in entry]
    assert len(losses) == 6 and all(loss > 0 for loss in losses)
    # Lower loss: the router loss on the training rows, before (init-tiny) vs after (final).
    assert fixed_batch_loss(Path(result["final_dir"]), out) < fixed_batch_loss(out / "init-tiny", out)
    assert any("/infonce" in key for entry in result["log_history"] for key in entry)
    rejects = [json.loads(line) for line in (out / "rejects-train.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(4, "query: task ocr needs 1-5 images")]
    assert (out / "training_curves.png").stat().st_size > 10_000
    final = Path(result["final_dir"])
    assert (final / "modules.json").is_file() and (final / "modeling_vipyloqwen.py").is_file()

    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    model = SentenceTransformer(str(final), trust_remote_code=True, device="cpu")
    st_vec = model.encode(["con mèo màu đỏ"], prompt_name="text_pair", convert_to_tensor=True).cpu()
    auto_vec = AutoModel.from_pretrained(final, trust_remote_code=True).encode(text="con mèo màu đỏ", task="text_pair")
    assert st_vec.shape == (1, 32)
    torch.testing.assert_close(st_vec, auto_vec, atol=1e-5, rtol=1e-4)
    # The trained weights were exported (not the initial ones).
    initial = SentenceTransformer(str(out / "init-tiny"), trust_remote_code=True, device="cpu")
    assert not torch.allclose(
        initial.encode(["con mèo"], convert_to_tensor=True), model.encode(["con mèo"], convert_to_tensor=True)
    )


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_step(run_a, small_files, tmp_path, caplog):
    out_a, result_a = run_a
    out_b = tmp_path / "b"
    shutil.copytree(out_a, out_b, ignore=shutil.ignore_patterns("checkpoint-6", "final"))  # "killed" after step 3
    caplog.set_level("INFO", logger="vipyloqwen.train")
    result_b = train(config(out_b, small_files, resume=True))
    assert any("resuming from" in r.message and r.message.endswith("checkpoint-3") for r in caplog.records)
    assert result_b["global_step"] == 6
    steps = [entry["step"] for entry in result_b["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3, 4, 5, 6]
    from safetensors.torch import load_file

    weights_a = load_file(Path(result_a["final_dir"]) / "model.safetensors")
    weights_b = load_file(Path(result_b["final_dir"]) / "model.safetensors")
    for key in weights_a:
        torch.testing.assert_close(weights_b[key], weights_a[key], atol=1e-5, rtol=1e-4)


def gloo_prepare(folder: Path) -> None:
    """The inputs of :func:`gloo_worker`: 8 rows of query / positive embeddings and scores (conftest ``gloo_pair``)."""
    generator = torch.Generator().manual_seed(0)
    data = {
        "q": torch.randn(8, 6, generator=generator, dtype=torch.float64),
        "p": torch.randn(8, 6, generator=generator, dtype=torch.float64),
        "scores": torch.tensor([0.9, 0.2, 0.7, 0.6, 0.1, 0.95, 0.8, 0.3], dtype=torch.float64),
    }
    torch.save(data, folder / "data.pt")


def gloo_worker(rank: int, folder: str) -> None:
    """In each of the 2 gloo processes: the InfoNCE terms and gradients of its 4 rows, candidates gathered."""
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    data = torch.load(f"{folder}/data.pt")
    results = {}
    for task in ("instr", "ocr", "text_pair"):
        q = data["q"][rank * 4 : rank * 4 + 4].clone().requires_grad_()
        p = data["p"][rank * 4 : rank * 4 + 4].clone().requires_grad_()
        scores = data["scores"][rank * 4 : rank * 4 + 4]
        router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), gather_across_devices=True)
        terms = router.compute_loss_from_embeddings(task, [q, p], scores)
        total = torch.stack(list(terms.values())).sum()
        total.backward()
        results[task] = {"terms": {k: v.item() for k, v in terms.items()}, "q_grad": q.grad, "p_grad": p.grad}
    torch.save(results, f"{folder}/data.pt.rank{rank}")


@pytest.mark.slow
def test_two_gloo_processes_gather_infonce_candidates(gloo_pair):
    """Each process sees all 8 rows as candidates: its InfoNCE equals the single-process loss over the full batch
    restricted to its own rows (and differs from a local-only loss)."""
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    path = str(gloo_pair[__name__] / "data.pt")
    data = torch.load(path)
    ranks = [torch.load(f"{path}.rank{r}") for r in range(2)]
    router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1))
    for task in ("instr", "ocr", "text_pair"):
        q = data["q"].clone().requires_grad_()
        p = data["p"].clone().requires_grad_()
        full = router.compute_loss_from_embeddings(task, [q, p], data["scores"])
        term = f"{task}/infonce"
        # DDP averages the ranks' losses: that mean is the full batch's loss, also for text_pair, whose ranks
        # select different numbers of positive rows here (3 and 2).
        mean = (ranks[0][task]["terms"][term] + ranks[1][task]["terms"][term]) / 2
        assert mean == pytest.approx(full[term].item(), rel=1e-9)
        local = router.compute_loss_from_embeddings(task, [data["q"][:4], data["p"][:4]], data["scores"][:4])
        assert ranks[0][task]["terms"][term] != pytest.approx(local[term].item(), rel=1e-6)


REPO = Path(__file__).resolve().parent.parent


def test_wrong_model_or_missing_file_is_one_line_naming_the_setting(tmp_path, capsys):
    import train_st

    base = ["--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--output-dir", str(tmp_path / "out")]
    (tmp_path / "empty").mkdir()
    for extra, says in (
        (["--model", str(tmp_path / "nothere")], f"model (--model or in {REPO / 'configs' / 'tiny-cpu.yaml'}) "),
        (["--model", str(tmp_path / "empty")], "not a checkpoint (no config.json"),
        (["--train-file", str(tmp_path / "missing.jsonl")], f"train_file {tmp_path / 'missing.jsonl'}: no such file"),
        (["--eval-file", str(tmp_path / "missing.jsonl")], "eval_file"),
    ):
        assert train_st.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_train_file_under_two_processes_is_said_once(tmp_path):
    """torchrun, 2 processes: every process stops with exit 2, one prints the cause, none prints a traceback."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), str(REPO / "train_st.py"),
               "--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--train-file", str(tmp_path / "missing.jsonl"),
               "--output-dir", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count(f"error: train_file {tmp_path / 'missing.jsonl'}: no such file") == 1, output
    assert 'train_st.py", line' not in output and "FileNotFoundError" not in output, output
