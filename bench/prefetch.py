"""Preprocessing-bound encoding (pages on the tiny model): ``AutoModel.encode`` with and without prefetch workers,
and a projection of how many preprocessing cores keep a GPU fed.

Part of ``bench/encode_bench.py`` (``--prefetch-pages N``). Measured here, on this machine:

- ``encode`` items/s of a stream of A4 pages for each (``num_workers``, ``worker_type``) setting, interleaved per
  repeat; every setting's embeddings are compared bit for bit with ``num_workers=0``;
- the floor (the model's forward alone on the pre-built batches) and the preprocessing alone (our processor
  building those batches in this process, one core), both at the model's image budget;
- preprocessing items/s per core at the real 2B budget (1024 image tokens per page), the same image processor.

Projected (labelled so in the JSON and the report; nothing here ran on a GPU): the forward's pages/s of the real
2B model on a GPU = the GPU's assumed effective bf16 throughput (``--gpu-tflops``) / the forward FLOPs of one
page (:func:`page_forward_flops`, from the 2B architecture); workers to keep it fed = that rate / the measured
preprocessing pages/s per core.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from bench.common import make_workloads
from bench.harness import interleaved, target
from images_vipyloqwen import PATCHES_PER_TOKEN
from vipyloqwen_tools.checkpoint.architectures import qwen2_vl_2b_widths

# (num_workers, worker_type) settings timed side by side.
SETTINGS = ((0, "process"), (1, "process"), (2, "process"), (2, "thread"))
# The real Qwen2-VL-2B (widths, depths, MLP sizes): vipyloqwen_tools/checkpoint/architectures.py.
REAL_2B = qwen2_vl_2b_widths()


def page_forward_flops(image_tokens: int = 1024, text_tokens: int = 8, arch: dict[str, int] = REAL_2B) -> float:
    """Forward FLOPs of one page (2 x multiply-adds): vision tower over 4 patches per image token (full attention
    within the image), merger, then the language model over image + text tokens (no LM head)."""
    patches = PATCHES_PER_TOKEN * image_tokens
    w, v_layers, v_mlp = arch["vision_width"], arch["vision_layers"], arch["vision_mlp"]
    vision = v_layers * (patches * (4 * w * w + 2 * w * v_mlp) + 2 * patches * patches * w)
    merged = PATCHES_PER_TOKEN * w  # the merger's input: the patches of one token, concatenated
    merger = image_tokens * (merged * merged + merged * arch["text_hidden"])
    tokens = image_tokens + text_tokens + 2
    h, t_layers, mlp, kv = arch["text_hidden"], arch["text_layers"], arch["text_mlp"], arch["kv_dim"]
    text = t_layers * (tokens * (2 * h * h + 2 * h * kv + 3 * h * mlp) + 2 * tokens * tokens * h)
    return 2.0 * (vision + merger + text)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _preprocess_seconds(processor: Any, messages: list, batches: list[list[int]], max_image_tokens: int) -> float:
    start = time.perf_counter()
    for chunk in batches:
        canonical = [processor.canonicalize(messages[i], i, max_image_tokens) for i in chunk]
        processor.apply_chat_template(
            canonical,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"images_kwargs": {"max_image_tokens": max_image_tokens}},
        )
    return time.perf_counter() - start


def prefetch_bench(bench: Any, pages: int, repeats: int, gpu_tflops: float) -> dict[str, Any]:
    """Time encode over ``pages`` A4 pages per worker setting; see the module docstring."""
    workload = make_workloads(bench.processor.tokenizer, {"pages": pages}, seed=3)[0]
    texts, images = bench.auto_inputs(workload.items)
    batches = bench.floor_batches(workload)
    n = len(workload.items)

    def run(workers: int, kind: str) -> torch.Tensor:
        return bench.auto.encode(
            text=texts, images=images, task=workload.task, batch_size=bench.batch_size, num_workers=workers,
            worker_type=kind,
        )  # fmt: skip

    reference = run(0, "process")  # warm-up
    identical = {f"{w}-{k}": bool(torch.equal(run(w, k), reference)) for w, k in SETTINGS}
    messages = bench.processor.build_messages(text=texts, images=images, task=workload.task)
    chunks = [chunk for chunk, _ in batches]
    budget = bench.processor.max_image_tokens
    runners: dict[str, Callable[[], Any]] = {f"{w}-{k}": partial(run, w, k) for w, k in SETTINGS}
    runners["floor"] = partial(bench.run_floor, batches, n)
    runners["preprocess"] = partial(_preprocess_seconds, bench.processor, messages, chunks, budget)
    # Main process CPU = the critical path; reaped DataLoader workers' CPU = the work moved off it.
    main_cpu: dict[str, list[float]] = {f"{w}-{k}": [] for w, k in SETTINGS}
    worker_cpu: dict[str, list[float]] = {f"{w}-{k}": [] for w, k in SETTINGS}
    cpu_before: list[float] = [0.0, 0.0]

    def before(name: str) -> None:
        cpu_before[:] = [time.process_time(), _children_cpu()]

    def after(name: str) -> None:
        if name in main_cpu:
            main_cpu[name].append(time.process_time() - cpu_before[0])
            worker_cpu[name].append(_children_cpu() - cpu_before[1])

    times = interleaved(runners, repeats, before=before, after=after)
    median = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    settings = {}
    for workers, kind in SETTINGS:
        name = f"{workers}-{kind}"
        settings[name] = {
            "num_workers": workers,
            "worker_type": kind if workers else None,
            "seconds_median": median[name],
            "seconds_all": times[name],
            "items_per_s": n / median[name],
            "speedup_over_0": median["0-process"] / median[name],
            "main_process_cpu_ms_per_item": 1000 * sorted(main_cpu[name])[len(main_cpu[name]) // 2] / n,
            "worker_cpu_ms_per_item": 1000 * sorted(worker_cpu[name])[len(worker_cpu[name]) // 2] / n,
            "bit_identical_to_0": identical[name],
        }
    real_budget = 1024
    real_seconds = min(_preprocess_seconds(bench.processor, messages, chunks, real_budget) for _ in range(2))
    per_core = n / real_seconds
    flops = page_forward_flops(real_budget)
    gpu_pages_per_s = gpu_tflops * 1e12 / flops
    return {
        "items": n,
        "load_average_1min_after": os.getloadavg()[0],
        "batch_size": bench.batch_size,
        "batches": len(batches),
        "image_budget_tokens": budget,
        "settings": settings,
        "floor_items_per_s": n / median["floor"],
        "preprocess_items_per_s_one_core": n / median["preprocess"],
        "projection": {
            "measured_preprocess_pages_per_s_per_core_at_1024_tokens": per_core,
            "page_forward_tflops_real_2b": flops / 1e12,
            "assumed_gpu_effective_tflops": gpu_tflops,
            "projected_gpu_forward_pages_per_s": gpu_pages_per_s,
            "workers_to_keep_the_gpu_fed": math.ceil(gpu_pages_per_s / per_core),
            "note": "projection: GPU throughput assumed, not measured; preprocessing rate measured on this CPU",
        },
    }


def prefetch_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    from prefetch_vipyloqwen import resolve_worker_type

    default = resolve_worker_type("auto", "cpu")  # what encode uses here (the model is on the CPU)
    chosen = result["settings"][f"2-{default}"]["speedup_over_0"]
    other = "process" if default == "thread" else "thread"
    plural = {"thread": "threads", "process": "processes"}
    return [
        target(
            (
                f"pages on tiny: encode items/s with 2 workers (worker_type auto = {plural[default]} on CPU) / "
                "num_workers=0"
            ),
            chosen,
            ">= 1.6",
            chosen >= 1.6,
        ),
        target(
            f"pages on tiny: encode items/s with 2 {plural[other]} / num_workers=0",
            result["settings"][f"2-{other}"]["speedup_over_0"],
            "report",
            None,
        ),
        target(
            "encode with workers bit-identical to num_workers=0 (all settings)",
            float(all(s["bit_identical_to_0"] for s in result["settings"].values())),
            "== 1",
            all(s["bit_identical_to_0"] for s in result["settings"].values()),
        ),
    ]
