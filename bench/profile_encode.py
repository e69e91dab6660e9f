"""Where ``AutoModel.encode`` spends its time beyond the forward, and what two candidate fixes would save.

1. cProfile of ``AutoModel.encode`` on the mixed workload: the top functions by own time, and the split between
   the model forward and everything else.
2. Side by side (interleaved repeats, medians, ratios to the floor of ``encode_bench``):
   - ``auto``: ``AutoModel.encode`` as shipped;
   - ``overlap``: the same steps with the next batch's preprocessing run in a background thread while the
     current batch's forward runs (a prototype of a fix in ``modeling_vipyloqwen.py``);
   - ``no_preshrink``: ``AutoModel.encode`` with the LANCZOS pre-shrink of in-memory PIL images switched off
     (a prototype of a fix in ``images_vipyloqwen.py``; patched in memory only, files untouched).

Example::

    python bench/profile_encode.py --model tiny --out out/bench/profile-tiny.json
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import harness
from bench.common import make_workloads, prepare_checkpoint
from bench.encode_bench import SIZES, SIZES_2B, Bench
from processing_vipyloqwen import length_batches


def encode_overlapped(model: Any, texts: list, images: list, task: str, batch_size: int) -> torch.Tensor:
    """``model.encode`` with the preprocessing of batch k+1 overlapped with the forward of batch k."""
    processor = model.processor
    messages = processor.build_messages(text=texts, images=images, task=task)
    chunks = length_batches(processor.item_lengths(messages), batch_size)
    from modeling_vipyloqwen import mean_pool

    def prepare(chunk: list[int]) -> dict[str, torch.Tensor]:
        return processor.batch_inputs([messages[i] for i in chunk], chunk)

    out = torch.empty(len(messages), model.config.embed_dim)
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        future = pool.submit(prepare, chunks[0])
        for index, chunk in enumerate(chunks):
            batch = future.result()
            if index + 1 < len(chunks):
                future = pool.submit(prepare, chunks[index + 1])
            hidden = model(**batch).last_hidden_state
            out[torch.tensor(chunk)] = F.normalize(mean_pool(hidden, batch["attention_mask"]), p=2, dim=-1)
    return out


def processing_module(model: Any) -> Any:
    """The loaded (remote-code) processing module of ``model``'s processor."""
    return sys.modules[type(model.processor).__module__]


def profile_encode(bench: Bench, workload: Any) -> dict[str, Any]:
    texts, images = bench.auto_inputs(workload.items)
    profiler = cProfile.Profile()
    profiler.enable()
    bench.auto.encode(text=texts, images=images, task=workload.task, batch_size=bench.batch_size)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    forward = next(
        (v[3] for k, v in stats.stats.items() if k[2] == "forward" and k[0].endswith("modeling_vipyloqwen.py")), 0.0
    )
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    top = [
        {"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1], "own_s": v[2], "cumulative_s": v[3]}
        for k, v in rows
    ]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
    return {"total_s": total, "model_forward_s": forward, "outside_forward_s": total - forward, "top_own_time": top}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.bench_parser(
        __doc__, "python bench/profile_encode.py --model tiny --out out/bench/profile-tiny.json"
    )
    harness.add_model_argument(parser)
    parser.add_argument("--size", default="quick", choices=sorted(SIZES), help="mixed workload size (default quick)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = harness.parse_run_arguments(parser, argv)
    threads = harness.set_threads(args.threads)
    table = SIZES_2B if args.model == "2b-shaped" else SIZES
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-profile-") as workdir:
        bench = Bench(prepare_checkpoint(args.model, Path(workdir)), args.batch_size)
    workload = make_workloads(bench.processor.tokenizer, {"mixed": table[args.size]["mixed"]})[0]
    texts, images = bench.auto_inputs(workload.items)
    module = processing_module(bench.auto)
    original_prepare = module.prepare_image

    def no_preshrink() -> torch.Tensor:
        module.prepare_image = lambda image, where, max_pixels=None: original_prepare(
            image, where, None if not isinstance(image, (str, Path)) else max_pixels
        )
        try:
            return bench.run_auto(workload)
        finally:
            module.prepare_image = original_prepare

    batches = bench.floor_batches(workload)
    runners = {
        "floor": lambda: bench.run_floor(batches, len(workload.items)),
        "auto": lambda: bench.run_auto(workload),
        "overlap": lambda: encode_overlapped(bench.auto, texts, images, workload.task, args.batch_size),
        "no_preshrink": no_preshrink,
        "preprocess": lambda: bench.floor_batches(workload),
    }
    outputs = {name: run() for name, run in runners.items()}  # warm-up
    times = harness.interleaved(runners, args.repeats)
    harness.release_memory()
    results = {
        "model": args.model,
        "items": len(workload.items),
        "threads": threads,
        "profile_auto_encode": profile_encode(bench, workload),
        "seconds_median": {name: statistics.median(v) for name, v in times.items()},
        "ratio_to_floor": {name: harness.median_ratio(v, times["floor"]) for name, v in times.items()},
        "max_abs_diff_to_auto": {
            name: float((outputs[name] - outputs["auto"]).abs().max()) for name in ("floor", "overlap", "no_preshrink")
        },
    }
    profile = results["profile_auto_encode"]
    print(
        f"AutoModel.encode, mixed x {results['items']}: {profile['total_s']:.2f} s profiled, model forward "
        f"{profile['model_forward_s']:.2f} s, outside the forward {profile['outside_forward_s']:.2f} s"
    )
    for row in profile["top_own_time"][:10]:
        print(f"  {row['own_s']:7.3f} s own  {row['calls']:6d} calls  {row['function']}")
    for name in runners:
        print(f"{name:13} {results['seconds_median'][name]:8.3f} s   x floor {results['ratio_to_floor'][name]:6.3f}")
    print("max |embedding - auto|:", {k: f"{v:.1e}" for k, v in results["max_abs_diff_to_auto"].items()})
    return harness.finish(results, args.out)


if __name__ == "__main__":
    main()
