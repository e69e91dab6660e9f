"""Encoding benchmark: our encode paths against the bare Qwen2-VL forward, side by side in one run.

Paths, all on the same weights (one set of tensors shared by every model object):

- ``floor``: stock transformers ``Qwen2VLModel`` forward (``use_cache=False``, inference mode) on
  pre-tokenised batches: the batches ``AutoModel.encode`` would build (same grouping, same tokens),
  prepared before the clock starts; + the projection and mean pooling (negligible).
- ``st``: ``SentenceTransformer(ckpt, trust_remote_code=True).encode(inputs, prompt_name=task)``.
- ``auto``: ``AutoModel.from_pretrained(ckpt, trust_remote_code=True).encode(text=, images=, task=)``.
- ``naive``: what a user writes from the conceptual code: ``Qwen2VLForConditionalGeneration`` (LM head,
  default KV cache), ``output_hidden_states=True``, mean of ``hidden_states[-1]``, batches in input order
  (processed by our processor batch by batch).
- ``preprocess`` (information): our processor alone building the floor's batches, i.e. what the floor
  leaves out.

Every timed repeat runs every path once, in a rotated order (interleaved, so machine noise hits all paths
alike); the ratio to the floor is the median over repeats of ``time(path) / time(floor)`` of the same
repeat. Tokens are counted at the embedding layer of each model (real = non-pad, padded = batch x length),
so padding efficiency is that of the batches each path really ran. Peak memory: see ``bench/common.py``
(peak RSS above the pre-call RSS, measured in the untimed warm-up pass).

Example::

    python bench/encode_bench.py --model tiny --quick --out out/bench/encode-tiny.json
    python bench/encode_bench.py --model 2b-shaped --quick --out out/bench/encode-2b-shaped.json
    python bench/report.py bench/results/*.json   # regenerates docs/performance.md and the README summary
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench import harness
from bench.common import Item, Workload, make_workloads, model_facts, prepare_checkpoint, short_texts
from bench.prefetch import prefetch_bench, prefetch_targets
from processing_vipyloqwen import length_batches

PATHS = ("floor", "st", "auto", "naive", "preprocess")
REPEATS = (3, 5)  # timed rounds per workload with --quick, without
SIZES = {
    "smoke": {"queries": 4, "passages": 2, "pages": 1, "mixed": 5},
    "quick": {"queries": 48, "passages": 16, "pages": 6, "mixed": 40},
    "full": {"queries": 256, "passages": 64, "pages": 24, "mixed": 160},
}
# The 2b-shaped model is ~30x slower per token on a CPU: smaller workloads keep --quick to minutes.
SIZES_2B = {
    "smoke": SIZES["smoke"],
    "quick": {"queries": 16, "passages": 4, "pages": 2, "mixed": 10},
    "full": {"queries": 64, "passages": 16, "pages": 8, "mixed": 40},
}


class TokenCounter:
    """Forward pre-hook on an embedding layer: counts real (non-pad) and padded tokens of every batch."""

    def __init__(self, module: torch.nn.Module, pad_id: int) -> None:
        self.pad_id = pad_id
        self.real = self.padded = self.batches = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        ids = args[0]
        self.real += int((ids != self.pad_id).sum())
        self.padded += ids.numel()
        self.batches += 1

    def reset(self) -> None:
        self.real = self.padded = self.batches = 0


class Bench:
    """Loads the four paths on one set of weights and runs workloads through them."""

    def __init__(self, checkpoint: Path, batch_size: int) -> None:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLModel

        self.batch_size = batch_size
        # One copy of the weights: every other model object points at the AutoModel's tensors.
        self.auto, self.st = load_paths(checkpoint)
        self.processor = self.auto.processor
        state = self.auto.state_dict()
        settings = self.auto.config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version", "embed_dim", "_name_or_path"):
            settings.pop(key, None)
        stock_config = Qwen2VLConfig(**settings)
        stock_config._attn_implementation = self.auto.config._attn_implementation
        backbone = {k: v for k, v in state.items() if not k.startswith("embedding_projection.")}
        self.floor = Qwen2VLModel(stock_config).eval()
        self.floor.load_state_dict(backbone, strict=True, assign=True)
        self.naive = Qwen2VLForConditionalGeneration(stock_config).eval()
        self.naive.model.load_state_dict(backbone, strict=True, assign=True)
        self.naive.lm_head.weight = self.naive.model.get_input_embeddings().weight  # tied, as in the 2B
        projection = self.auto.embedding_projection
        self.projection = projection.weight if projection is not None else None
        pad_id = self.processor.tokenizer.pad_token_id
        self.counters = {
            "floor": TokenCounter(self.floor.get_input_embeddings(), pad_id),
            "st": TokenCounter(self.st[0].model.get_input_embeddings(), pad_id),
            "auto": TokenCounter(self.auto.get_input_embeddings(), pad_id),
            "naive": TokenCounter(self.naive.model.get_input_embeddings(), pad_id),
        }
        harness.release_memory()

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def st_input(item: Item) -> Any:
        if not item.images:
            return item.text
        if item.text is None:
            return item.images[0] if len(item.images) == 1 else {"image": item.images}
        return {"image": item.images[0] if len(item.images) == 1 else item.images, "text": item.text}

    @staticmethod
    def auto_inputs(items: list[Item]) -> tuple[list[str | None], list[list | None]]:
        return [item.text for item in items], [list(item.images) or None for item in items]

    def floor_batches(self, workload: Workload) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
        """The batches ``AutoModel.encode`` builds for this workload (same grouping, same tokens)."""
        texts, images = self.auto_inputs(workload.items)
        messages = self.processor.build_messages(text=texts, images=images, task=workload.task)
        chunks = length_batches(self.processor.item_lengths(messages), self.batch_size)
        return [(chunk, self.processor.batch_inputs([messages[i] for i in chunk], chunk)) for chunk in chunks]

    # ------------------------------------------------------------------ paths
    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from modeling_vipyloqwen import mean_pool

        hidden = hidden.float()
        if self.projection is not None:
            hidden = F.linear(hidden, self.projection.float())
        return F.normalize(mean_pool(hidden, mask), p=2, dim=-1)

    @torch.inference_mode()
    def run_floor(self, batches: list[tuple[list[int], dict[str, torch.Tensor]]], n: int) -> torch.Tensor:
        out = torch.empty(n, self.auto.config.embed_dim)
        for chunk, batch in batches:
            hidden = self.floor(**batch, use_cache=False).last_hidden_state
            out[torch.tensor(chunk)] = self._pool(hidden, batch["attention_mask"])
        return out

    def run_st(self, workload: Workload) -> torch.Tensor:
        inputs = [self.st_input(item) for item in workload.items]
        return self.st.encode(
            inputs,
            batch_size=self.batch_size,
            prompt_name=workload.task,
            convert_to_tensor=True,
            show_progress_bar=False,
        )

    def run_auto(self, workload: Workload) -> torch.Tensor:
        texts, images = self.auto_inputs(workload.items)
        return self.auto.encode(text=texts, images=images, task=workload.task, batch_size=self.batch_size)

    @torch.no_grad()
    def run_naive(self, workload: Workload) -> torch.Tensor:
        texts, images = self.auto_inputs(workload.items)
        messages = self.processor.build_messages(text=texts, images=images, task=workload.task)
        outs = []
        for start in range(0, len(messages), self.batch_size):
            batch = self.processor.apply_chat_template(
                messages[start : start + self.batch_size],
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"text_kwargs": {"padding": True}},
            )
            output = self.naive(**batch, output_hidden_states=True)
            outs.append(self._pool(output.hidden_states[-1], batch["attention_mask"]))
        return torch.cat(outs)

    def runners(self, workload: Workload) -> dict[str, Callable[[], Any]]:
        """One zero-argument callable per path; the floor's batches are built here, outside any clock."""
        batches = self.floor_batches(workload)
        n = len(workload.items)
        return {
            "floor": lambda: self.run_floor(batches, n),
            "st": lambda: self.run_st(workload),
            "auto": lambda: self.run_auto(workload),
            "naive": lambda: self.run_naive(workload),
            "preprocess": lambda: self.floor_batches(workload),
        }


def bench_workload(bench: Bench, workload: Workload, repeats: int) -> dict[str, Any]:
    """A warm-up pass (its peak RSS is the path's peak memory), then ``repeats`` interleaved timed rounds."""
    runners = bench.runners(workload)
    n = len(workload.items)
    outputs = {}
    peaks = {}
    for name, run in runners.items():  # warm-up, measured for memory; its outputs are compared below
        with harness.PeakRSS() as peak:
            outputs[name] = run()
        peaks[name] = peak.delta_mb
    harness.release_memory()
    tokens: dict[str, tuple[int, int, int]] = {}

    def reset(name: str) -> None:
        if name in bench.counters:
            bench.counters[name].reset()

    def count(name: str) -> None:
        counter = bench.counters.get(name)
        if counter is not None:
            tokens[name] = (counter.real, counter.padded, counter.batches)

    times = harness.interleaved(runners, repeats, before=reset, after=count)

    result: dict[str, Any] = {
        "items": n,
        "description": workload.description,
        "task": workload.task,
        "kinds": {
            kind: sum(item.kind == kind for item in workload.items) for kind in sorted({i.kind for i in workload.items})
        },
        "images": sum(len(item.images) for item in workload.items),
        "paths": {},
    }
    floor_times = times["floor"]
    for name in runners:
        seconds = harness.median(times[name])
        entry: dict[str, Any] = {
            "seconds_median": seconds,
            "seconds_all": times[name],
            "items_per_s": n / seconds,
            "peak_rss_mb": round(peaks[name], 1),
            "ratio_to_floor": harness.median_ratio(times[name], floor_times),
        }
        if name in tokens:
            real, padded, batches = tokens[name]
            entry.update(
                real_tokens=real,
                padded_tokens=padded,
                batches=batches,
                tokens_per_s=real / seconds,
                padding_efficiency=real / padded if padded else None,
            )
        result["paths"][name] = entry
    texts, images = bench.auto_inputs(workload.items)
    messages = bench.processor.build_messages(text=texts, images=images, task=workload.task)
    result["estimated_tokens"] = sum(bench.processor.item_lengths(messages))
    result["estimate_exact"] = result["estimated_tokens"] == result["paths"]["floor"]["real_tokens"]
    reference = outputs["floor"].float()
    result["max_abs_diff_to_floor"] = {
        name: float((outputs[name].float().cpu() - reference).abs().max()) for name in ("st", "auto", "naive")
    }
    return result


def padding_efficiency(lengths: list[int], batches: list[list[int]]) -> float:
    """Real tokens / padded tokens of ``batches`` (lists of item indices) given each item's length."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return sum(lengths[i] for batch in batches for i in batch) / padded


def token_budget_batches(order: list[int], lengths: list[int], budget: int, max_items: int) -> list[list[int]]:
    """Cut a longest-first order into batches whose padded size (items x longest) stays within ``budget`` tokens."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and ((len(current) + 1) * lengths[current[0]] > budget or len(current) >= max_items):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def padding_by_stream_length(bench: Bench, counts: list[int]) -> dict[str, Any]:
    """Padding efficiency of the mixed stream as a function of its length, from ``processor.item_lengths`` (no forward).

    The streams are generated afresh (mixed only, seed 0), so the first is a different sample from the timed
    mixed workload of the same size. ``item_lengths`` is exact here: ``estimate_exact`` in each workload checks
    it against the tokens the floor really ran.

    ``encode_grouping``: the batches ``AutoModel.encode`` forms (``processing_vipyloqwen.length_batches``).
    ``sorted_fixed``: longest first, ``batch_size`` items per batch.
    ``token_budget``: a candidate fix, longest first, each batch cut at ``batch_size`` x the mean length padded
    tokens (at most 4 x ``batch_size`` items).
    """
    rows = []
    for count in counts:
        workload = make_workloads(bench.processor.tokenizer, {"mixed": count})[0]
        texts, images = bench.auto_inputs(workload.items)
        messages = bench.processor.build_messages(text=texts, images=images, task=workload.task)
        lengths = bench.processor.item_lengths(messages)
        order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
        grouping = length_batches(lengths, bench.batch_size)
        fixed = [order[start : start + bench.batch_size] for start in range(0, len(order), bench.batch_size)]
        budget = round(bench.batch_size * sum(lengths) / len(lengths))
        by_budget = token_budget_batches(order, lengths, budget, 4 * bench.batch_size)
        rows.append(
            {
                "items": count,
                "sorted_fixed": padding_efficiency(lengths, fixed),
                "encode_grouping": padding_efficiency(lengths, grouping),
                "encode_batches": len(grouping),
                "token_budget": padding_efficiency(lengths, by_budget),
                "token_budget_tokens": budget,
                "token_budget_batches": len(by_budget),
                "fixed_batches": len(fixed),
            }
        )
    return {"batch_size": bench.batch_size, "rows": rows}


def load_paths(checkpoint: Path) -> tuple[Any, Any]:
    """(AutoModel, SentenceTransformer) of ``checkpoint``, sharing one set of weights."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    auto = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, dtype=torch.float32).eval()
    st = SentenceTransformer(str(checkpoint), trust_remote_code=True, device="cpu")
    st.eval()
    st[0].model.load_state_dict(auto.state_dict(), assign=True)
    return auto, st


def stream_memory(auto: Any, st: Any, sizes: list[int], batch_size: int) -> dict[str, Any]:
    """Peak RSS of ``AutoModel.encode`` and ST ``encode`` over streams of ``sizes`` short texts (flat = no growth)."""
    texts = short_texts(max(sizes))
    auto.encode(text=texts[:batch_size], task="text_pair", batch_size=batch_size)  # warm-up
    st.encode(texts[:batch_size], prompt_name="text_pair", batch_size=batch_size)
    result: dict[str, Any] = {"batch_size": batch_size, "sizes": sizes, "paths": {}}
    for name in ("auto", "st"):
        rows = []
        for n in sizes:
            start = time.perf_counter()
            with harness.PeakRSS() as peak:
                if name == "auto":
                    out = auto.encode(text=texts[:n], task="text_pair", batch_size=batch_size)
                else:
                    out = st.encode(texts[:n], prompt_name="text_pair", batch_size=batch_size, convert_to_tensor=True)
            rows.append(
                {
                    "items": n,
                    "seconds": time.perf_counter() - start,
                    "peak_rss_mb": round(peak.delta_mb, 1),
                    "output_mb": round(out.numel() * out.element_size() / 2**20, 2),
                }
            )
            del out
        growth = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
        output_growth = rows[-1]["output_mb"] - rows[0]["output_mb"]
        result["paths"][name] = {
            "rows": rows,
            "growth_mb": round(growth, 1),
            "growth_beyond_output_mb": round(growth - output_growth, 1),
        }
    result["length_estimate"] = length_estimate_memory(auto, sizes)
    harness.release_memory()
    return result


def length_estimate_memory(auto: Any, sizes: list[int]) -> dict[str, Any]:
    """Peak RSS of ``AutoModel.encode``'s up-front length estimate (``processor.item_lengths``) over ``sizes``
    passages of ~300 tokens: the part of ``encode`` that touches every item before the first batch (no forward)."""
    import random

    from bench.common import vietnamese_text

    rng = random.Random(2)
    tokenizer = auto.processor.tokenizer
    base = [vietnamese_text(rng, tokenizer, 300) for _ in range(64)]
    rows = []
    for n in sizes:
        texts = [f"{base[i % len(base)]} {i}" for i in range(n)]
        messages = auto.processor.build_messages(text=texts, task="text_pair")
        with harness.PeakRSS() as peak:
            auto.processor.item_lengths(messages)
        rows.append({"items": n, "peak_rss_mb": round(peak.delta_mb, 1), "kb_per_item": peak.delta_mb * 1024 / n})
        del texts, messages
    return {
        "text": "passages of ~300 tokens",
        "rows": rows,
        "growth_mb": rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"],
    }


def targets(results: dict[str, Any], flat_tolerance_mb: float) -> list[dict[str, Any]]:
    """The issue's targets, checked against the measured numbers."""
    checks = []
    mixed = results["workloads"].get("mixed")
    if mixed:
        for name, label in (("st", "ST encode"), ("auto", "AutoModel.encode")):
            ratio = mixed["paths"][name]["ratio_to_floor"]
            checks.append(harness.target(f"{label} time / floor (mixed)", ratio, "<= 1.05", ratio <= 1.05))
        for name, label in (("auto", "AutoModel.encode"), ("st", "ST encode")):
            efficiency = mixed["paths"][name]["padding_efficiency"]
            checks.append(
                harness.target(f"padding efficiency, {label} (mixed)", efficiency, ">= 0.85", efficiency >= 0.85)
            )
    for workload, data in results["workloads"].items():
        naive = data["paths"]["naive"]["seconds_median"]
        for name in ("auto", "st"):
            speedup = naive / data["paths"][name]["seconds_median"]
            checks.append(harness.target(f"speed-up of {name} over naive ({workload})", speedup, "report", None))
    stream = results.get("stream")
    if stream:
        for name, data in stream["paths"].items():
            growth = data["growth_beyond_output_mb"]
            checks.append(
                harness.target(
                    f"peak memory flat over {stream['sizes'][0]}..{stream['sizes'][-1]} items ({name})",
                    growth,
                    f"growth beyond the output <= {flat_tolerance_mb} MB",
                    growth <= flat_tolerance_mb,
                )
            )
        estimate = stream["length_estimate"]
        checks.append(
            harness.target(
                (
                    f"peak memory flat, AutoModel.encode length estimate over {stream['sizes'][0]}.."
                    f"{stream['sizes'][-1]} passages"
                ),
                estimate["growth_mb"],
                f"growth <= {flat_tolerance_mb} MB",
                estimate["growth_mb"] <= flat_tolerance_mb,
            )
        )
    if results.get("prefetch"):
        checks += prefetch_targets(results["prefetch"])
    padding = results.get("padding_by_stream_length")
    if padding:
        row = padding["rows"][-1]
        checks.append(
            harness.target(
                (
                    f"padding efficiency, AutoModel.encode grouping, mixed stream of {row['items']} items "
                    "(exact lengths, no forward)"
                ),
                row["encode_grouping"],
                ">= 0.85",
                row["encode_grouping"] >= 0.85,
            )
        )
    return checks


def format_table(results: dict[str, Any]) -> str:
    """Plain-text table of every workload and path, with ratios to the floor."""
    lines = []
    header = f"{'workload':10} {'path':10} {'items/s':>9} {'tokens/s':>10} {'pad eff':>8} {'peak MB':>8} {'x floor':>8}"
    for workload, data in results["workloads"].items():
        lines.append(header)
        for name, entry in data["paths"].items():
            tokens = f"{entry['tokens_per_s']:10.0f}" if "tokens_per_s" in entry else f"{'-':>10}"
            efficiency = f"{entry['padding_efficiency']:8.3f}" if entry.get("padding_efficiency") else f"{'-':>8}"
            lines.append(
                f"{workload:10} {name:10} {entry['items_per_s']:9.2f} {tokens} {efficiency} "
                f"{entry['peak_rss_mb']:8.1f} {entry['ratio_to_floor']:8.3f}"
            )
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in data["max_abs_diff_to_floor"].items())
        lines.append(f"{'':10} max |embedding - floor|: {diffs}")
        lines.append("")
    padding = results.get("padding_by_stream_length")
    if padding:
        for row in padding["rows"]:
            lines.append(
                f"mixed stream of {row['items']} items: padding efficiency {row['encode_grouping']:.3f} (encode's "
                f"grouping), {row['sorted_fixed']:.3f} (sorted, "
                f"{padding['batch_size']} per batch), {row['token_budget']:.3f} "
                f"(token budget {row['token_budget_tokens']})"
            )
        lines.append("")
    stream = results.get("stream")
    if stream:
        for name, data in stream["paths"].items():
            rows = ", ".join(f"{r['items']} items: {r['peak_rss_mb']} MB" for r in data["rows"])
            lines.append(f"stream {name}: peak RSS {rows} (growth beyond output {data['growth_beyond_output_mb']} MB)")
        rows = ", ".join(f"{r['items']}: {r['peak_rss_mb']} MB" for r in stream["length_estimate"]["rows"])
        lines.append(f"AutoModel.encode length estimate (item_lengths), passages of ~300 tokens: peak RSS {rows}")
        lines.append("")
    prefetch = results.get("prefetch")
    if prefetch:
        for name, entry in prefetch["settings"].items():
            lines.append(
                f"prefetch pages ({prefetch['items']}): num_workers={name}: {entry['items_per_s']:.2f} items/s, "
                f"x{entry['speedup_over_0']:.2f} over 0 workers, bit-identical {entry['bit_identical_to_0']}"
            )
        lines.append(
            f"floor {prefetch['floor_items_per_s']:.1f} items/s; preprocessing alone "
            f"{prefetch['preprocess_items_per_s_one_core']:.1f} items/s on one core"
        )
        lines.append(json.dumps(prefetch["projection"]))
        lines.append("")
    lines += [harness.format_target(check) for check in results["targets"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.bench_parser(
        __doc__, "python bench/encode_bench.py --model tiny --quick --out out/bench/encode-tiny.json"
    )
    harness.add_model_argument(parser)
    harness.add_size_arguments(parser, SIZES, "workloads", REPEATS)
    parser.add_argument("--batch-size", type=int, default=8, help="items per forward pass (default 8)")
    parser.add_argument("--max-image-tokens", type=int, help="image budget saved with a generated model")
    parser.add_argument("--workloads", default="queries,passages,pages,mixed", help="comma-separated subset")
    parser.add_argument(
        "--stream-sizes", default=None, help="item counts of the memory stream (default 1000,10000; 'none' skips it)"
    )
    parser.add_argument("--stream-batch-size", type=int, default=64)
    parser.add_argument("--stream-model", default="tiny", help="model of the memory stream (default: tiny)")
    parser.add_argument("--flat-tolerance-mb", type=float, default=16.0, help="allowed peak growth over the stream")
    parser.add_argument(
        "--prefetch-pages",
        type=int,
        help="pages of the preprocessing-bound prefetch workload (default: 96 quick and full on tiny, 0 otherwise; "
        "0 skips it)",
    )
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=400.0,
        help="ASSUMED effective bf16 TFLOP/s of one GPU for the feeding projection (default 400: about 40%% of an "
        "H100's dense peak)",
    )
    return harness.parse_run_arguments(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = harness.set_threads(args.threads)
    size, repeats = harness.resolve_size(args, REPEATS)
    selected = {w.strip() for w in args.workloads.split(",") if w.strip()}
    table = (SIZES_2B if args.model == "2b-shaped" else SIZES)[size]
    sizes = {name: count for name, count in table.items() if name in selected}
    stream_sizes = (
        [] if args.stream_sizes == "none" else [int(s) for s in (args.stream_sizes or "1000,10000").split(",")]
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-bench-") as workdir:
        print(f"building/loading {args.model} ...", flush=True)
        checkpoint = prepare_checkpoint(args.model, Path(workdir), args.max_image_tokens)
        bench = Bench(checkpoint, args.batch_size)
        results: dict[str, Any] = {
            **harness.results_header("encode"),
            "model": model_facts(bench.auto, bench.processor, args.model),
            "settings": {
                "size": size,
                "repeats": repeats,
                "batch_size": args.batch_size,
                "quick": args.quick,
                "threads": threads,
            },
            "memory_method": harness.memory_method(),
            "workloads": {},
        }
        workloads = make_workloads(bench.processor.tokenizer, sizes)
        for workload in workloads:
            print(f"workload {workload.name}: {len(workload.items)} items x {repeats} repeats ...", flush=True)
            results["workloads"][workload.name] = bench_workload(bench, workload, repeats)
        prefetch_pages = args.prefetch_pages
        if prefetch_pages is None:
            # 96 pages = 12 batches: with 6 the pipeline's fill and drain (first batch prepared with nothing to
            # overlap, last forward with nothing left to prepare) were a third of the time.
            prefetch_pages = (96 if size in ("quick", "full") else 8) if args.model == "tiny" else 0
        if prefetch_pages:
            print(f"prefetch: {prefetch_pages} pages x {repeats} repeats per worker setting ...", flush=True)
            results["prefetch"] = prefetch_bench(bench, prefetch_pages, repeats, args.gpu_tflops)
        if "mixed" in results["workloads"]:
            mixed_items = results["workloads"]["mixed"]["items"]
            counts = [mixed_items, 4 * mixed_items, 16 * mixed_items]
            print(f"padding efficiency of the mixed stream at {counts} items (lengths only) ...", flush=True)
            results["padding_by_stream_length"] = padding_by_stream_length(bench, counts)
        auto, st = bench.auto, bench.st
        del bench
        harness.release_memory()
        if stream_sizes:
            if args.stream_model != args.model:
                del auto, st
                harness.release_memory()
                auto, st = load_paths(prepare_checkpoint(args.stream_model, Path(workdir)))
            print(f"memory stream: {stream_sizes} short texts on {args.stream_model} ...", flush=True)
            results["stream"] = {
                "model": args.stream_model,
                **stream_memory(auto, st, stream_sizes, args.stream_batch_size),
            }
    results["targets"] = targets(results, args.flat_tolerance_mb)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(format_table(results))  # the targets included
    return harness.finish(results, args.out, show_targets=False)


if __name__ == "__main__":
    main()
