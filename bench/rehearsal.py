"""Real-width rehearsal of the 2B recipe on CPU: 2 processes (torchrun, gloo), seconds per step, peak RSS per
process and the loss terms.

What is real: the Qwen2-VL-2B widths (text 1536 / 12 heads / 2 KV heads / intermediate 8960 / vocab 151,936;
vision 1280 / 16 heads; embed_dim 1024), the recipe's settings (``configs/vipyloqwen-2b.yaml``: learning rate,
schedule, loss, temperature, margins, gradient checkpointing, max_length, gathering across processes), the default
image budget (1024 tokens per image: data/sample's pages, receipts, forms, charts and scenes reach 667-999 tokens),
GradCache (``cached_mini_batch_size``) and Matryoshka (``matryoshka_dims``) on, data parallelism over 2 processes.
What is cut down: depth (``--text-layers`` / ``--vision-layers``, the 2B has 28 / 32), steps, batch size (and
gradient accumulation 1), no evaluation, dataloader workers 0; on CPU the trainer runs fp32 (the recipe's bf16 needs
CUDA; the training code logs the fallback). Random weights (``bench/common.py: two_b_shaped``).

    flock /tmp/bigmem.lock flock /tmp/bench.lock python bench/rehearsal.py            # ~16 GB RAM, minutes

Writes ``bench/results/rehearsal-2b-width.json`` and deletes its multi-GB work folder unless ``--keep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO_ROOT
from bench.harness import machine_info, utc_now, write_json

RECIPE = REPO_ROOT / "configs" / "vipyloqwen-2b.yaml"
DEFAULT_MATRYOSHKA = [1024, 768, 512, 256, 128]


def loss_terms(log_history: list[dict]) -> list[dict]:
    """Per logged step: the loss and every ``task/term`` value."""
    keep = []
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            terms = {k: v for k, v in entry.items() if "/" in k}
            keep.append({"step": entry["step"], "loss": entry["loss"], "terms": terms})
    return keep


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="per-device batch size")
    parser.add_argument("--mini-batch", type=int, default=1, help="cached_mini_batch_size (GradCache)")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--max-image-tokens", type=int, default=1024)
    parser.add_argument("--train-file", type=Path, default=REPO_ROOT / "data" / "sample" / "train.jsonl")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vipyloqwen-rehearsal")
    parser.add_argument("--out", type=Path, required=True, help="e.g. bench/results/rehearsal-2b-width.json")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="the tiny model at 16 image tokens (checks the harness)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no run: write the JSON again from the reports a previous run left in --workdir (e.g. one killed)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        return report(args, argv, **json.loads((args.workdir / "status.json").read_text(encoding="utf-8")))
    return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """Build the model, train it under torchrun, then :func:`report`."""

    import yaml

    from bench.common import two_b_shaped
    from vipyloqwen_tools.checkpoint.export import save_checkpoint

    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    shutil.rmtree(args.workdir, ignore_errors=True)
    if args.smoke:
        from vipyloqwen_tools.checkpoint.export import tiny

        args.max_image_tokens = 16
        model, processor = tiny(embed_dim=32, max_image_tokens=16)
    else:
        model, processor = two_b_shaped(
            embed_dim=1024,
            max_image_tokens=args.max_image_tokens,
            text_layers=args.text_layers,
            vision_layers=args.vision_layers,
        )
    parameters = sum(p.numel() for p in model.parameters())
    init = save_checkpoint(model, processor, args.workdir / "init")
    del model
    overrides = {
        "model": str(init),
        "train_file": str(args.train_file),
        "eval_file": "",  # no evaluation (None would keep the recipe's file: from_yaml ignores None)
        "output_dir": str(args.workdir / "run"),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "cached_mini_batch_size": args.mini_batch,
        "matryoshka_dims": [32, 16] if args.smoke else recipe.get("matryoshka_dims") or DEFAULT_MATRYOSHKA,
        "max_image_tokens": args.max_image_tokens,
        "logging_steps": 1,
        "save_steps": 10_000,
        "dataloader_num_workers": 0,
        "trace_dir": str(args.workdir / "trace"),  # per-rank batches, loss terms and InfoNCE candidate counts
    }
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // args.nproc)),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(args.nproc),
        "--master_port",
        str(29500 + os.getpid() % 1000),
        str(REPO_ROOT / "bench" / "rehearsal_worker.py"),
        str(RECIPE),
        json.dumps(overrides),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (args.workdir / "torchrun.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    status = {"returncode": done.returncode, "wall": wall, "parameters": parameters, "overrides": overrides}
    status["layers"] = [args.text_layers, args.vision_layers]  # what --report-only must not take from its own flags
    status["nproc"] = args.nproc
    (args.workdir / "status.json").write_text(json.dumps(status), encoding="utf-8")
    return report(args, argv, **status)


def report(
    args: argparse.Namespace,
    argv: list[str] | None,
    returncode: int,
    wall: float | None,
    parameters: int,
    overrides: dict,
    layers: list[int],
    nproc: int,
) -> dict:
    """The result JSON from the per-rank reports and the trace in ``args.workdir``."""
    from vipyloqwen_tools.checkpoint.architectures import qwen2_vl_2b_widths
    from vipyloqwen_tools.train.config import TrainConfig

    log = (args.workdir / "torchrun.log").read_text(encoding="utf-8")
    # Each rank rewrites its report after every step, so a run killed part way (out of memory) still reports
    # the steps it finished; the failure is recorded beside them and the exit status stays non-zero.
    reports = [args.workdir / "run" / f"rank-{r}.json" for r in range(nproc)]
    ranks = [json.loads(path.read_text()) for path in reports if path.is_file()]
    if not ranks or not ranks[0]["steps"]:
        raise SystemExit(
            f"torchrun failed ({returncode}) before a step; log: {args.workdir / 'torchrun.log'}\n{log[-4000:]}"
        )
    from vipyloqwen_tools.train.trace import read_trace

    trace = read_trace(args.workdir / "trace")
    written = args.workdir / "run" / "train_config.json"  # written at the end of a run that finished
    if written.is_file():
        used = json.loads(written.read_text())
    else:
        used = dataclasses.asdict(TrainConfig.from_yaml(RECIPE, **overrides))
    result = {
        "benchmark": "real-width rehearsal (2B widths, few layers, 2 processes)",
        "command": "flock /tmp/bigmem.lock flock /tmp/bench.lock python bench/rehearsal.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": utc_now(),
        "machine": machine_info(),
        "model": {
            "text_layers": layers[0],
            "vision_layers": layers[1],
            "parameters": parameters,
            "widths": {**qwen2_vl_2b_widths(), "embed_dim": 1024},  # the depths cut to the two above
        },
        "settings": {k: used.get(k) for k in sorted(used) if k not in ("model", "train_file", "output_dir")},
        "processes": nproc,
        "returncode": returncode,
        "finished": returncode == 0 and all(r.get("finished") for r in ranks),
        "log_tail": log.splitlines()[-24:] if returncode else [],
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "seconds_per_step": {f"rank{r['rank']}": [s["seconds"] for s in r["steps"]] for r in ranks},
        "median_seconds_per_step": statistics.median(s["seconds"] for s in ranks[0]["steps"]),
        "peak_rss_gb_per_process": {f"rank{r['rank']}": round(r["peak_rss_bytes"] / 1e9, 2) for r in ranks},
        "world_size_seen": [r["world_size"] for r in ranks],
        "loss_terms": loss_terms(ranks[0]["log_history"]),
        "per_rank_steps": {
            f"rank{rank}": [
                {
                    "step": record["step"],
                    "tasks": [m["dataset"] for m in record["micro_batches"]],
                    "rows": [m["rows"] for m in record["micro_batches"]],
                    "loss": [m["loss"] for m in record["micro_batches"]],
                    "terms": [m["terms"] for m in record["micro_batches"]],
                    "candidates": [m.get("candidates") for m in record["micro_batches"]],
                    "param_norm": record.get("param_norm"),
                }
                for record in records
                if "micro_batches" in record  # the last line only lists the final writes
            ]
            for rank, records in sorted(trace.items())
        },
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("seconds_per_step", "peak_rss_gb_per_process", "loss_terms")}, indent=1))
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    if returncode != 0:
        raise SystemExit(f"torchrun failed ({returncode}) after {len(ranks[0]['steps'])} step(s); see {args.out}")
    return result


if __name__ == "__main__":
    main()
