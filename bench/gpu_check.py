"""GPU check of the full-size 2B (random weights, the published Qwen2-VL-2B shape): bf16 encode parity vs fp32,
throughput and peak memory with sdpa and flash-attention 2, and one training step at the recipe's settings with
the memory planner's prediction beside the measured peak. Run through ``bench/gpu_check.sh`` (one command):

    bash bench/gpu_check.sh bench/results/gpu-check.json     # the report (default: a temp folder)

Stages (each result lands in the JSON as soon as it is measured):

1. CPU preparation: the tokenizer, the generated workloads (Vietnamese queries ~20 tokens, passages ~300 tokens,
   A4 document pages at the 1024-token image budget), the training batch and the planner's prediction for it.
   Without CUDA the script stops here with exit status 3 and a clear message.
2. The 2B model is built on the GPU (fp32, random weights, seed 0) and saved once as a checkpoint, then loaded as
   the trainer loads it (SentenceTransformer, fp32 weights).
3. Encode: fp32 + sdpa is the reference; bf16 + sdpa and bf16 + flash_attention_2 (when flash-attn imports) are
   compared to it (per-item cosine, min must be >= 0.999) and timed (items/s, peak GPU memory per workload).
4. One training micro-step at the recipe's settings (configs/vipyloqwen-2b.yaml: 24 rows, gradient checkpointing,
   GradCache ``cached_mini_batch_size``, bf16 autocast over fp32 weights, fused AdamW; steady state with every
   gradient and optimizer state allocated) on one GPU: ``torch.cuda.max_memory_allocated`` / ``reserved`` beside
   the planner's prediction for the same batch (1 process, no sharding).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import make_workloads, page_image, vietnamese_text
from bench.harness import results_header, write_json

REPO = Path(__file__).resolve().parent.parent
SIZES = {"queries": 512, "passages": 256, "pages": 32}
BATCH = {"queries": 64, "passages": 32, "pages": 8}
TRAIN_ROWS_TEXT_TOKENS = 1024
TRAIN_PAGES_PER_ROW = 2
TRAIN_POSITIVE_TOKENS = 512
PAGE_SIZE = (827, 1169)  # A4 at 100 dpi


def write(out: Path, report: dict[str, Any]) -> None:
    """The report so far (rewritten after every section, so a failing GPU run still leaves what it measured)."""
    write_json(out, report, indent=1, atomic=True, log=False, default=str)


def prepare(report: dict[str, Any]) -> dict[str, Any]:
    """CPU side: tokenizer, workloads, training batch, planner prediction."""
    from processing_vipyloqwen import image_token_count
    from vipyloqwen_tools.checkpoint.export import add_task_tokens, build_processor
    from vipyloqwen_tools.checkpoint.tokenizer import build_qwen2_vl_tokenizer
    from vipyloqwen_tools.plan.planner import (
        Architecture,
        BatchShape,
        Column,
        predict,
        setup_from_config,
        side_shape,
    )
    from vipyloqwen_tools.train.config import TrainConfig

    started = time.perf_counter()
    tokenizer = build_qwen2_vl_tokenizer()
    trained_rows = len(tokenizer)
    task_ids = add_task_tokens(tokenizer)
    processor = build_processor(tokenizer, 1024)
    workloads = make_workloads(tokenizer, SIZES, seed=0)
    rng = random.Random(1)
    config = TrainConfig.from_yaml(REPO / "configs/vipyloqwen-2b.yaml")
    rows = config.per_device_train_batch_size
    anchors = [
        {
            "text": vietnamese_text(rng, tokenizer, TRAIN_ROWS_TEXT_TOKENS),
            "image": [page_image(rng, *PAGE_SIZE) for _ in range(TRAIN_PAGES_PER_ROW)],
        }
        for _ in range(rows)
    ]
    positives = [vietnamese_text(rng, tokenizer, TRAIN_POSITIVE_TOKENS) for _ in range(rows)]
    setup = setup_from_config(config, world_size=1, sharding="none", precision="bf16")
    arch = Architecture.qwen2_vl_2b()
    # the planner's prediction for this batch from the lengths alone (the GPU stage re-predicts from the tensors)
    page_tokens = image_token_count(*PAGE_SIZE, setup.max_image_tokens)
    text = max(len(tokenizer(a["text"], add_special_tokens=False)["input_ids"]) for a in anchors)
    doc = max(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in positives)
    batch = BatchShape(
        "ocr",
        "gpu-check",
        (
            Column("anchor", *side_shape(text, [page_tokens] * TRAIN_PAGES_PER_ROW, setup.max_length)),
            Column("positive", *side_shape(doc, [], setup.max_length)),
        ),
    )
    report["prepare"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "workloads": {w.name: len(w.items) for w in workloads},
        "train_batch": f"{rows} ocr rows: {TRAIN_PAGES_PER_ROW} A4 pages + ~{TRAIN_ROWS_TEXT_TOKENS} text tokens; "
        f"positive ~{TRAIN_POSITIVE_TOKENS} tokens",
        "planner_setup": setup.describe(),
        "planner_batch": [c.__dict__ for c in batch.columns],
        "predicted_train_step_gb": round(predict(arch, setup, batch).total / 2**30, 2),
        "architecture": arch.__dict__,
    }
    return {
        "tokenizer": tokenizer,
        "trained_rows": trained_rows,
        "task_ids": task_ids,
        "processor": processor,
        "workloads": workloads,
        "config": config,
        "anchors": anchors,
        "positives": positives,
        "setup": setup,
        "arch": arch,
    }


def require_cuda(report: dict[str, Any], out: Path) -> None:
    if torch.cuda.is_available():
        report["gpu"] = {
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "total_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
        return
    report["error"] = (
        f"CUDA is not available (torch {torch.__version__}, built with CUDA {torch.version.cuda}): "
        "the CPU preparation passed; run this on a machine with an NVIDIA GPU and a CUDA build of torch"
    )
    write(out, report)
    print(f"gpu_check: {report['error']}", file=sys.stderr)
    sys.exit(3)


def build_checkpoint(state: dict[str, Any], workdir: Path) -> Path:
    """The 2B model with random weights (seed 0), built on the GPU and saved once (fp32)."""
    from modeling_vipyloqwen import ViPyloQwenModel
    from vipyloqwen_tools.checkpoint.architectures import qwen2_vl_2b_config
    from vipyloqwen_tools.checkpoint.export import init_task_rows, save_checkpoint

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = ViPyloQwenModel(qwen2_vl_2b_config(1024)).eval()
    init_task_rows(model, state["task_ids"], state["trained_rows"])
    out = save_checkpoint(model.cpu(), state["processor"], workdir / "vipyloqwen-2b-random")
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return out


def set_attention(model: Any, name: str) -> str | None:
    """Switch the attention implementation; returns an error string if it is not available."""
    try:
        model.set_attn_implementation(name)
    except Exception as error:  # noqa: BLE001 - ImportError / ValueError depending on what is missing
        return f"{type(error).__name__}: {error}"
    return None


def encode_workload(model: Any, workload: Any) -> tuple[torch.Tensor, float, float]:
    texts = [item.text for item in workload.items]
    images = [item.images or None for item in workload.items]
    has_images = any(images)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    embeddings = model.encode(
        text=texts if any(t is not None for t in texts) else None,
        images=images if has_images else None,
        task=workload.task,
        batch_size=BATCH[workload.name],
        num_workers=0,
    )
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return embeddings, len(workload.items) / seconds, torch.cuda.max_memory_allocated() / 2**30


def encode_section(st_model: Any, state: dict[str, Any], report: dict[str, Any], out: Path) -> None:
    fp32 = st_model[0].model
    fp32.processor = state["processor"]
    workloads = state["workloads"]
    results: dict[str, Any] = {}
    reference = {}
    for workload in workloads:  # warm-up + reference
        encode_workload(fp32, type(workload)(workload.name, workload.description, workload.task, workload.items[:2]))
        reference[workload.name], speed, peak = encode_workload(fp32, workload)
        results.setdefault("fp32-sdpa", {})[workload.name] = {"items_per_s": round(speed, 2), "peak_gb": round(peak, 2)}
    report["encode"] = results
    write(out, report)
    half = copy.deepcopy(fp32).to(torch.bfloat16)
    half.processor = state["processor"]
    for attention in ("sdpa", "flash_attention_2"):
        key = f"bf16-{attention}"
        error = set_attention(half, attention)
        if error:
            results[key] = {"skipped": error}
            continue
        for workload in workloads:
            encode_workload(
                half, type(workload)(workload.name, workload.description, workload.task, workload.items[:2])
            )
            embeddings, speed, peak = encode_workload(half, workload)
            cosine = torch.nn.functional.cosine_similarity(embeddings.float(), reference[workload.name].float(), dim=1)
            results.setdefault(key, {})[workload.name] = {
                "items_per_s": round(speed, 2),
                "peak_gb": round(peak, 2),
                "cosine_vs_fp32_min": round(float(cosine.min()), 5),
                "cosine_vs_fp32_mean": round(float(cosine.mean()), 5),
                "parity_ok": bool(cosine.min() >= 0.999),
            }
        write(out, report)
    del half
    gc.collect()
    torch.cuda.empty_cache()


def train_section(st_model: Any, state: dict[str, Any], report: dict[str, Any], out: Path) -> None:
    from configuration_vipyloqwen import TASKS
    from vipyloqwen_tools.plan.planner import BatchShape, Column, predict
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    config, setup = state["config"], state["setup"]
    st_model.train()
    st_model.max_seq_length = config.max_length
    inner = st_model[0].model
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    inner.config.use_cache = False
    features = [
        st_model.preprocess(state["anchors"], prompt=TASKS["ocr"].prefix),
        st_model.preprocess(state["positives"], prompt=None),
    ]
    rows = len(state["anchors"])
    patches = int(features[0]["image_grid_thw"].prod(dim=1).sum())
    batch = BatchShape(
        "ocr",
        "gpu-check",
        (
            Column("anchor", int(features[0]["input_ids"].shape[1]), patches // rows),
            Column("positive", int(features[1]["input_ids"].shape[1]), 0),
        ),
    )
    prediction = predict(state["arch"], setup, batch)
    loss = ViPyloQwenRouterLoss(
        st_model, temperature=config.temperature, margin=config.margin, mini_batch_size=config.cached_mini_batch_size
    ).task_losses(["ocr"])["ocr"]
    params = [p for p in st_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, fused=True)
    for p in params:  # steady state of gradient accumulation: every gradient and AdamW state exists
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        terms = loss([{k: v.to("cuda") for k, v in f.items()} for f in features], None)
        total = torch.stack(list(terms.values())).sum()
    if total.requires_grad:
        total.backward()
    optimizer.step()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() / 2**30
    report["train_step"] = {
        "seconds": round(time.perf_counter() - started, 1),
        "setup": setup.describe(),
        "batch_columns": [c.__dict__ for c in batch.columns],
        "loss": float(total.detach()),
        "measured_peak_allocated_gb": round(measured, 2),
        "measured_peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "predicted_peak_gb": round(prediction.total / 2**30, 2),
        "predicted_parts_gb": {k: round(v / 2**30, 3) for k, v in prediction.parts.items()},
        "error_pct": round(100 * (prediction.total / 2**30 - measured) / measured, 1),
    }
    write(out, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the JSON report (bench/gpu_check.sh picks it)")
    parser.add_argument("--workdir", type=Path, help="where the 2B checkpoint is written (default: a temp dir)")
    parser.add_argument("--skip-train", action="store_true", help="encode checks only")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {**results_header("gpu-check"), "flash_attn": None}
    try:
        import flash_attn

        report["flash_attn"] = flash_attn.__version__
    except ImportError as error:
        report["flash_attn"] = f"not importable: {error}"
    state = prepare(report)
    write(args.out, report)
    require_cuda(report, args.out)
    from sentence_transformers import SentenceTransformer

    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.workdir) as workdir:
        checkpoint = build_checkpoint(state, Path(workdir))
        st_model = SentenceTransformer(
            str(checkpoint),
            trust_remote_code=True,
            device="cuda",
            model_kwargs={"attn_implementation": "sdpa", "dtype": torch.float32},
        )
        encode_section(st_model, state, report, args.out)
        if not args.skip_train:
            train_section(st_model, state, report, args.out)
    report["seconds"] = round(time.perf_counter() - started, 1)
    parity = [v.get("parity_ok") for k, r in report["encode"].items() if k != "fp32-sdpa" for v in r.values()]
    report["parity_ok"] = all(p for p in parity if p is not None) if parity else None
    write(args.out, report)
    print(json.dumps({k: report[k] for k in ("encode", "train_step", "parity_ok", "seconds") if k in report}, indent=1))
    return 0 if report["parity_ok"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
