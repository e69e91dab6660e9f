"""Calibrate the memory planner (``vipyloqwen_tools/plan/planner.py``) by measuring peak RSS at the real 2B widths
on CPU.

Each measurement point runs in a fresh process: the 2B-shaped model (real widths: text 1536 x 12 heads / 2 KV
heads / intermediate 8960 / vocab 151936, vision 1280 x 16 heads; random weights; ``--layers`` text layers and
``--vision-layers`` vision blocks) is loaded as a SentenceTransformer, put in training mode (gradient checkpointing
as ``train()`` enables it), every parameter gets a gradient and AdamW (fused, as the trainer's default
``adamw_torch_fused``) state, and then ONE training micro-step is measured: the router loss of the task (plain or
GradCache) forward + backward + optimizer step, in the steady state of gradient accumulation (gradients and
optimizer states already held, as in micro-steps 2..N of every optimizer step).

Reported per point: ``measured_total_mb`` = peak RSS during the step - RSS just before the model was loaded (so
it counts parameters, gradients, AdamW states, activations and transients, not the Python/torch runtime; the
loaded weights are memory-mapped and become resident when the optimizer first writes them), and
``measured_step_mb`` = peak RSS during the step above the RSS before it (activations + transients).

    flock /tmp/bigmem.lock flock /tmp/bench.lock python bench/planner_calibrate.py run \
        --out bench/results/planner-calibration.json

``run`` measures the fitting points, fits the planner's activation constants (least squares, see
``fit_constants``), then measures validation configurations that were not used in the fit and writes predicted vs
measured for them (the planner's constants must be the fitted ones: ``tests/test_planner.py`` checks the
recorded validation points against the planner).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Fitting points: text-only (instr) and image (ocr) batches, with and without gradient checkpointing, at two
# depths so the per-layer and the per-forward parts separate.
FIT_POINTS: list[dict[str, Any]] = [
    {"name": "text-gc-L2-T512", "layers": 2, "task": "instr", "rows": 2, "text_tokens": 512, "gc": True},
    {"name": "text-gc-L2-T2048", "layers": 2, "task": "instr", "rows": 2, "text_tokens": 2048, "gc": True},
    {"name": "text-gc-L4-T2048", "layers": 4, "task": "instr", "rows": 2, "text_tokens": 2048, "gc": True},
    {"name": "text-nogc-L2-T512", "layers": 2, "task": "instr", "rows": 2, "text_tokens": 512, "gc": False},
    {"name": "text-nogc-L4-T512", "layers": 4, "task": "instr", "rows": 2, "text_tokens": 512, "gc": False},
    {"name": "image-gc-V2-N1024", "layers": 2, "task": "ocr", "rows": 2, "images": 1, "image_tokens": 1024, "gc": True},
    {"name": "image-gc-V4-N1024", "layers": 4, "task": "ocr", "rows": 2, "images": 1, "image_tokens": 1024, "gc": True},
    {
        "name": "image-nogc-V2-N256",
        "layers": 2,
        "task": "ocr",
        "rows": 2,
        "images": 1,
        "image_tokens": 256,
        "gc": False,
    },
    {
        "name": "image-nogc-V4-N256",
        "layers": 4,
        "task": "ocr",
        "rows": 2,
        "images": 1,
        "image_tokens": 256,
        "gc": False,
    },
]
# Held-out configurations: predicted (with the fitted constants) vs measured.
VALIDATION_POINTS: list[dict[str, Any]] = [
    {
        "name": "mixed-gc-L4-gradcache",
        "layers": 4,
        "task": "ocr",
        "rows": 4,
        "images": 2,
        "image_tokens": 400,
        "text_tokens": 300,
        "gc": True,
        "mini_batch": 2,
    },
    {"name": "text-gc-L4-B8-T1024", "layers": 4, "task": "instr", "rows": 8, "text_tokens": 1024, "gc": True},
    {
        "name": "mixed-nogc-L2",
        "layers": 2,
        "task": "ocr",
        "rows": 2,
        "images": 1,
        "image_tokens": 576,
        "text_tokens": 600,
        "gc": False,
    },
    {
        "name": "text-gc-L4-B8-gradcache",
        "layers": 4,
        "task": "instr",
        "rows": 8,
        "text_tokens": 1536,
        "gc": True,
        "mini_batch": 2,
    },
]
# bf16 autocast over fp32 weights (what the trainer does with precision: bf16), on CPU: the activation factor of
# half precision, compared with the fp32 points of the same shapes.
BF16_POINTS: list[dict[str, Any]] = [
    {**FIT_POINTS[1], "name": "text-gc-L2-T2048-bf16", "dtype": "bf16"},
    {**FIT_POINTS[5], "name": "image-gc-V2-N1024-bf16", "dtype": "bf16"},
    {**FIT_POINTS[3], "name": "text-nogc-L2-T512-bf16", "dtype": "bf16"},
    # bf16 weights (no autocast): how FSDP2 computes with mixed precision (param_dtype bf16)
    {**FIT_POINTS[1], "name": "text-gc-L2-T2048-bf16-params", "dtype": "bf16-params"},
    {**FIT_POINTS[5], "name": "image-gc-V2-N1024-bf16-params", "dtype": "bf16-params"},
]
POSITIVE_TOKENS = 32  # the document side of every point: a short text


def _checkpoint(workdir: Path, layers: int) -> Path:
    """The 2B-shaped checkpoint with ``layers`` text layers and as many vision blocks (built once, cached)."""
    from bench.common import two_b_shaped
    from vipyloqwen_tools.checkpoint.export import save_checkpoint

    out = workdir / f"2b-shaped-L{layers}"
    if not (out / "config.json").is_file():
        model, processor = two_b_shaped(max_image_tokens=1024, text_layers=layers, vision_layers=layers)
        save_checkpoint(model, processor, out)
    return out


def _long_text(tokenizer: Any, tokens: int, seed: int) -> str:
    import random

    from bench.common import VIETNAMESE_WORDS

    rng = random.Random(seed)
    words = [rng.choice(VIETNAMESE_WORDS) for _ in range(tokens)]  # >= 1 token per word: truncation cuts it exactly
    return " ".join(words)


def measure(point: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One measurement (call in a fresh process)."""
    import torch
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from bench.harness import PeakRSS, release_memory, rss_bytes
    from configuration_vipyloqwen import TASKS
    from images_vipyloqwen import PATCH
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    torch.set_num_threads(int(os.environ.get("CALIBRATE_THREADS", "2")))
    torch.manual_seed(0)
    checkpoint = _checkpoint(workdir, point["layers"])
    release_memory()
    rss_start = rss_bytes()
    model = SentenceTransformer(
        str(checkpoint),
        trust_remote_code=True,
        device="cpu",
        model_kwargs={
            "attn_implementation": "sdpa",
            "dtype": torch.bfloat16 if point.get("dtype") == "bf16-params" else torch.float32,
        },
        processor_kwargs={"max_image_tokens": 1024},
    )
    model.train()
    if point["gc"]:
        model[0].model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model[0].model.config.use_cache = False
    release_memory()
    rss_loaded = rss_bytes()
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)

    tokenizer = model[0].processor.tokenizer
    text_tokens = int(point.get("text_tokens", 16))
    model.max_seq_length = text_tokens  # the processor cuts each anchor's text to exactly this many tokens
    rows = int(point["rows"])
    side = PATCH * int(round(point.get("image_tokens", 0) ** 0.5))  # a square image of about that many tokens
    anchors: list[Any] = []
    for row in range(rows):
        text = _long_text(tokenizer, text_tokens, seed=row)
        if point.get("images"):
            images = [Image.new("RGB", (side, side), (40 * i % 255, 90, 160)) for i in range(point["images"])]
            anchors.append({"text": text, "image": images})
        else:
            anchors.append(text)
    positives = [_long_text(tokenizer, POSITIVE_TOKENS, seed=100 + row) for row in range(rows)]
    task = point["task"]
    features = [
        model.preprocess(anchors, prompt=TASKS[task].prefix),
        model.preprocess(positives, prompt=None),
    ]
    shapes = [list(f["input_ids"].shape) for f in features]
    patches = int(features[0]["pixel_values"].shape[0]) if "pixel_values" in features[0] else 0
    loss = ViPyloQwenRouterLoss(model, mini_batch_size=point.get("mini_batch")).task_losses([task])[task]

    optimizer = torch.optim.AdamW(params, lr=1e-6, fused=True)
    for p in params:  # steady state of gradient accumulation: every gradient and AdamW state exists
        p.grad = torch.zeros_like(p)
    try:
        optimizer.step()
    except RuntimeError:  # no fused CPU kernel for this dtype
        optimizer = torch.optim.AdamW(params, lr=1e-6, foreach=False)
        optimizer.step()
    release_memory()
    rss_ready = rss_bytes()
    started = time.perf_counter()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=point.get("dtype") == "bf16")
    with PeakRSS() as peak:
        with autocast:  # the trainer autocasts the loss (GradCache's backward included) with precision: bf16
            out = loss([dict(f) for f in features], None)
            total = torch.stack(list(out.values())).sum()
        if total.requires_grad:  # GradCache losses have back-propagated already
            total.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    mb = 2**20
    return {
        **point,
        "sequence_shapes": shapes,
        "vision_patches": patches,
        "parameters": sum(p.numel() for p in params),
        "param_mb": round(param_bytes / mb, 1),
        "loaded_model_rss_mb": round((rss_loaded - rss_start) / mb, 1),
        "grads_and_adamw_rss_mb": round((rss_ready - rss_loaded) / mb, 1),
        "measured_step_mb": round((peak.peak - rss_ready) / mb, 1),
        "measured_total_mb": round((peak.peak - rss_start) / mb, 1),
        "step_seconds": round(seconds, 1),
        "loss": float(total.detach()),
    }


def markdown_table(results: dict[str, Any]) -> str:
    """Predicted (the planner's shipped constants) vs measured, per point, from a results JSON."""
    from vipyloqwen_tools.plan import planner

    lines = [
        "| point | role | layers | GC | GradCache | dtype | rows x LLM tokens (anchor/positive) | patches | "
        "measured peak MiB | predicted MiB | error | measured step MiB | predicted step MiB | step error |",
        "|" + " --- |" * 14,
    ]
    for role in ("fit_points", "validation_points", "bf16_points"):
        for point in results.get(role, []):
            row = planner.compare_point(point)
            shapes = "/".join(str(s[1]) for s in point["sequence_shapes"])
            lines.append(
                f"| {point['name']} | {role.split('_')[0]} | {point['layers']} | {'on' if point['gc'] else 'off'} | "
                f"{point.get('mini_batch') or '-'} | {point.get('dtype', 'fp32')} | {point['rows']} x {shapes} | "
                f"{point['vision_patches']} | {row['measured_total_mb']:.0f} | {row['predicted_total_mb']:.0f} | "
                f"{row['error_pct']:+.1f} % | {row['measured_step_mb']:.0f} | {row['predicted_step_mb']:.0f} | "
                f"{row['step_error_pct']:+.1f} % |"
            )
    return "\n".join(lines)


def run_point(point: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Measure ``point`` in a fresh interpreter (clean heap, clean RSS)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), "point", json.dumps(point), "--workdir", str(workdir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"point {point['name']} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("point", help="measure one point (JSON) in this process; prints a JSON line")
    one.add_argument("spec")
    one.add_argument("--workdir", type=Path, default=Path("/tmp/vipyloqwen-calibrate"))
    everything = sub.add_parser("run", help="fit points + validation points; writes the results JSON")
    everything.add_argument("--workdir", type=Path, default=Path("/tmp/vipyloqwen-calibrate"))
    everything.add_argument("--out", type=Path, required=True, help="e.g. bench/results/planner-calibration.json")
    everything.add_argument("--only", help="comma-separated point names (default: all)")
    table = sub.add_parser("table", help="markdown table of predicted vs measured from the results JSON")
    table.add_argument("--results", type=Path, default=REPO / "bench/results/planner-calibration.json")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(markdown_table(json.loads(args.results.read_text())))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.command == "point":
        print(json.dumps(measure(json.loads(args.spec), args.workdir)))
        return 0

    from bench.harness import results_header, write_json

    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    done = {
        p["name"]: p for group in ("fit_points", "validation_points", "bf16_points") for p in previous.get(group, [])
    }
    wanted = set(args.only.split(",")) if args.only else None
    results: dict[str, list[dict[str, Any]]] = {"fit_points": [], "validation_points": [], "bf16_points": []}
    groups = (("fit_points", FIT_POINTS), ("validation_points", VALIDATION_POINTS), ("bf16_points", BF16_POINTS))
    for group, points in groups:
        for point in points:
            if point["name"] in done and (wanted is None or point["name"] not in wanted):
                results[group].append(done[point["name"]])
                continue
            if wanted is not None and point["name"] not in wanted:
                continue
            print(f"measuring {point['name']} ...", flush=True)
            result = run_point(point, args.workdir)
            print(json.dumps(result), flush=True)
            results[group].append(result)
            write_json(args.out, {**previous, **results}, indent=1, log=False)
    from vipyloqwen_tools.plan import planner

    complete = len(results["fit_points"]) == len(FIT_POINTS)
    models = {m: planner.fit_constants(results["fit_points"], m) for m in ("additive", "max")} if complete else {}
    chosen = min(models, key=lambda m: models[m]["rms_residual_mb"]) if models else None
    measured = results["fit_points"] + results["validation_points"] + results["bf16_points"]
    report = {
        **results_header("planner-calibration"),
        "method": __doc__.split("\n\n")[1],
        **results,
        "fits": models,
        "chosen_model": chosen,
        "fitted_constants": models.get(chosen),
        # with the constants the planner ships (vipyloqwen_tools/plan/planner.py CALIBRATION)
        "comparison": [planner.compare_point(p) for p in measured],
    }
    write_json(args.out, report, indent=1)
    for row in report["comparison"]:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
