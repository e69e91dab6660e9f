"""Generate the performance docs (markdown + one PNG) from benchmark JSON files, naming the machine they ran on.

- every table goes between ``<!-- performance:start -->`` and ``<!-- performance:end -->`` of
  ``docs/performance.md`` (``--out``);
- a short summary (a few rows and the plot) goes between ``<!-- performance-summary:start/end -->`` of
  ``README.md``, the model card (``--readme``); see :mod:`bench.report_summary`;
- the plot (time / floor and items/s by workload) is written to ``docs/performance.png`` (``--plot``).

Every number comes from the JSON; nothing is typed in by hand.

Example::

    python bench/report.py bench/results/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from vipyloqwen_tools.release.readme import replace_block

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_OUT = REPO_ROOT / "docs" / "performance.md"
DEFAULT_README = REPO_ROOT / "README.md"
DEFAULT_PLOT = REPO_ROOT / "docs" / "performance.png"
START, END = "<!-- performance:start -->", "<!-- performance:end -->"
PATH_LABELS = {
    "floor": "floor",
    "st": "ST encode",
    "auto": "AutoModel.encode",
    "naive": "naive",
    "preprocess": "(preprocessing only)",
}
LEGEND = (
    "Paths: **floor** = stock transformers `Qwen2VLModel` forward (`use_cache=False`, inference mode) on the "
    "pre-tokenised batches `AutoModel.encode` builds; **ST encode** = `SentenceTransformer(..., "
    "trust_remote_code=True).encode`; **AutoModel.encode** = our model's `encode`; **naive** = "
    "`Qwen2VLForConditionalGeneration(..., output_hidden_states=True)` (LM head, default KV cache), mean of "
    "`hidden_states[-1]`, batches in input order; **(preprocessing only)** = our processor building the floor's "
    "batches, i.e. the work the floor leaves out. Tokens are counted at each model's embedding layer. "
    "Peak RSS is measured in the warm-up pass, floor first: the floor also pays for heap growth that the later "
    "paths reuse, so differences of a few hundred MB between floor, ST and AutoModel are allocator effects; the "
    "naive path's GB-scale peaks are its LM-head logits and KV cache."
)


def machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_1min_at_start")
    load_text = f", 1-min load {load:.1f} at start (shared machine)" if load is not None else ""
    return (
        f"{machine['device'].upper()}: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB RAM, "
        f"torch {machine['torch']} with {machine['torch_threads']} thread(s), transformers {machine['transformers']}, "
        f"sentence-transformers {machine['sentence_transformers']}{load_text}"
    )


def _status(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[met]


def encode_section(data: dict[str, Any]) -> str:
    model = data["model"]
    settings = data["settings"]
    lines = [
        f"### Encoding: `{model['name']}` model",
        "",
        f"Measured on {data['created']}. Machine: {machine_line(data['machine'])}.",
        "",
        f"Model: text {model['text_hidden']} x {model['text_layers']} layers, vision {model['vision_width']} x "
        f"{model['vision_layers']} layers, {model['vocab_rows']} vocabulary rows, {model['parameters'] / 1e6:.1f}M "
        f"parameters, {model['dtype']}, {model['attn_implementation']} attention, embed_dim {model['embed_dim']}, "
        f"image budget {model['max_image_tokens']} tokens per image (the budget saved with this checkpoint).",
        f"Batch size {settings['batch_size']}, {settings['repeats']} interleaved repeats (median), "
        f"size `{settings['size']}`. Peak memory: {data['memory_method']}.",
        "",
        "| workload | items | path | items/s | tokens/s | padding efficiency | peak RSS (MB) | time / floor |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, workload in data["workloads"].items():
        for path, entry in workload["paths"].items():
            tokens = f"{entry['tokens_per_s']:.0f}" if "tokens_per_s" in entry else "-"
            efficiency = f"{entry['padding_efficiency']:.3f}" if entry.get("padding_efficiency") is not None else "-"
            lines.append(
                f"| {name} | {workload['items']} | {PATH_LABELS.get(path, path)} | {entry['items_per_s']:.2f} | "
                f"{tokens} | {efficiency} | {entry['peak_rss_mb']:.1f} | {entry['ratio_to_floor']:.2f} |"
            )
    lines += [
        "",
        LEGEND,
        "",
        "Workloads: " + "; ".join(f"**{k}**: {v['description']}" for k, v in data["workloads"].items()),
        "",
    ]
    padding = data.get("padding_by_stream_length")
    if padding:
        lines += [
            f"Padding efficiency of freshly generated mixed streams by length (exact lengths from the image grids "
            f"and the tokenizer, no forward; batch size {padding['batch_size']}): **`AutoModel.encode` grouping** = "
            "the batches `encode` forms; **sorted** = longest first, fixed batch size; **token budget** = longest "
            "first, each batch cut at batch size x mean length padded tokens (at most 4 x batch size items).",
            "",
            "| stream items | `AutoModel.encode` grouping | sorted | token budget |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for row in padding["rows"]:
            grouping = f"{row['encode_grouping']:.3f}" if "encode_grouping" in row else "-"
            lines.append(f"| {row['items']} | {grouping} | {row['sorted_fixed']:.3f} | {row['token_budget']:.3f} |")
        lines.append("")
    stream = data.get("stream")
    if stream:
        lines += [
            f"Long stream (`{stream['model']}` model, short texts, batch size {stream['batch_size']}): peak RSS "
            "above the pre-call RSS by stream length.",
            "",
            "| path | " + " | ".join(f"{n} items" for n in stream["sizes"]) + " | growth beyond the output |",
            "| --- | " + " | ".join("---:" for _ in stream["sizes"]) + " | ---: |",
        ]
        for path, entry in stream["paths"].items():
            cells = " | ".join(f"{row['peak_rss_mb']:.1f} MB" for row in entry["rows"])
            lines.append(f"| {PATH_LABELS.get(path, path)} | {cells} | {entry['growth_beyond_output_mb']:.1f} MB |")
        estimate = stream.get("length_estimate")
        if estimate:
            cells = " | ".join(f"{row['peak_rss_mb']:.1f} MB" for row in estimate["rows"])
            lines.append(f"| `AutoModel.encode` length estimate only, {estimate['text']} | {cells} | - |")
        lines.append("")
    prefetch = data.get("prefetch")
    if prefetch:
        lines += prefetch_lines(prefetch)
    lines += ["| target | measured | limit | status |", "| --- | ---: | --- | --- |"]
    for check in data["targets"]:
        lines.append(f"| {check['target']} | {check['value']:.3f} | {check['limit']} | {_status(check['met'])} |")
    return "\n".join(lines) + "\n"


def prefetch_lines(prefetch: dict[str, Any]) -> list[str]:
    """The preprocessing-bound workload (``bench/prefetch.py``) and the GPU feeding projection."""
    projection = prefetch["projection"]
    lines = [
        f"Preprocessing off the critical path: {prefetch['items']} A4 pages, {prefetch['batches']} batches of "
        f"{prefetch['batch_size']}, image budget {prefetch['image_budget_tokens']} tokens; `AutoModel.encode` with "
        "each `num_workers` / `worker_type`, interleaved (median).",
        "",
        "| num_workers | worker type | items/s | x num_workers=0 | main-process CPU ms/item | worker CPU ms/item "
        "| bit-identical to num_workers=0 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in prefetch["settings"].values():
        main = entry.get("main_process_cpu_ms_per_item")
        workers = entry.get("worker_cpu_ms_per_item")
        lines.append(
            f"| {entry['num_workers']} | {entry['worker_type'] or '-'} | {entry['items_per_s']:.1f} | "
            f"{entry['speedup_over_0']:.2f} | {'-' if main is None else f'{main:.1f}'} | "
            f"{'-' if workers is None else f'{workers:.1f}'} | {'yes' if entry['bit_identical_to_0'] else '**no**'} |"
        )
    if "load_average_1min_after" in prefetch:
        lines += [
            "",
            f"1-minute load average after this workload: {prefetch['load_average_1min_after']:.1f} on "
            "2 cores. Worker speed-ups need idle cores; the CPU columns show where the work ran (main process = "
            "the critical path; workers = what moved off it, reaped DataLoader processes only: thread workers' CPU "
            "counts as main-process CPU).",
        ]
    lines += [
        "",
        f"Same batches: the forward alone (floor) runs {prefetch['floor_items_per_s']:.1f} pages/s; preprocessing "
        f"alone {prefetch['preprocess_items_per_s_one_core']:.1f} pages/s on one core at this budget, "
        f"{projection['measured_preprocess_pages_per_s_per_core_at_1024_tokens']:.1f} pages/s per core at the real "
        "default budget of 1024 tokens.",
        "",
        f"GPU projection (**not measured**; no GPU was available): one page at 1024 image tokens costs "
        f"{projection['page_forward_tflops_real_2b']:.1f} TFLOP through the real 2B (vision 32 x 1280, text 28 x "
        f"1536; `bench/prefetch.py:page_forward_flops`). At an assumed {projection['assumed_gpu_effective_tflops']:.0f}"
        f" TFLOP/s effective bf16 a GPU would embed {projection['projected_gpu_forward_pages_per_s']:.0f} pages/s, "
        f"which takes **{projection['workers_to_keep_the_gpu_fed']} preprocessing workers** (cores) per GPU at the "
        "measured per-core rate.",
        "",
    ]
    return lines


def index_section(data: dict[str, Any]) -> str:
    """``bench/index_bench.py``: index build vs encode (stream), torchrun equality, 2b-shaped vs floor."""
    lines = [
        "### Index build (`scripts/index.py build`)",
        "",
        f"Measured on {data['created']}. Machine: {machine_line(data['machine'])}. "
        f"Peak memory: {data['memory_method']}.",
        "",
    ]
    stream = data.get("stream")
    if stream:
        lines += [
            f"Tiny model, short texts, batch size {stream['batch_size']}, `num_workers=0` (all work in the measured "
            "process); build = items file -> LanceDB db (new), encode = `AutoModel.encode` of the same texts.",
            "",
            "| items | build items/s | build peak RSS (MB) | encode peak RSS (MB) | db size on disk (MB) |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in stream["rows"]:
            lines.append(
                f"| {row['items']} | {row['build_items_per_s']:.0f} | {row['build_peak_rss_mb']:.1f} | "
                f"{row['encode_peak_rss_mb']:.1f} | {row['db_bytes'] / 2**20:.2f} |"
            )
        lines += [
            "",
            f"Throughput at {stream['rows'][-1]['items']} items, interleaved repeats (median):",
            "",
            "| workers | build items/s | encode items/s | encode / build |",
            "| --- | ---: | ---: | ---: |",
        ]
        for label, entry in stream["throughput"].items():
            lines.append(
                f"| {label} | {entry['build_items_per_s']:.0f} | {entry['encode_items_per_s']:.0f} | "
                f"{entry['encode_over_build_items_per_s']:.2f} |"
            )
        lines.append("")
    sharded = data.get("sharded")
    if sharded:
        diff = sharded["vectors_max_abs_diff"]
        lines += [
            f"`torchrun --nproc_per_node {sharded['processes']}` build of the same {sharded['items']} items: "
            f"{sharded['rows']} rows, ids identical: {sharded['ids_identical']}, texts and metadata identical: "
            f"{sharded['texts_and_metadata_identical']}, rows with bit-identical vectors: "
            f"{sharded['vectors_bit_identical_rows']} of {sharded['rows']} (max abs diff "
            f"{diff if diff is None else f'{diff:.1e}'}); {sharded['seconds_including_startup']:.1f} s including "
            "the start of both processes.",
            "",
        ]
    two_b = data.get("two_b")
    if two_b:
        lines += [
            f"`2b-shaped` model (real 2B widths, 2 + 2 layers, fp32, 1 torch thread), workloads of "
            f"`bench/encode_bench.py` size `{two_b['size']}`, batch size {two_b['batch_size']}, {two_b['repeats']} "
            "interleaved repeats: floor = stock forward on pre-built batches; index build = items file (images as "
            "PNG files) -> new db, default workers.",
            "",
            "| workload | items | floor items/s | AutoModel.encode time / floor | index build time / floor |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, workload in two_b["workloads"].items():
            paths = workload["paths"]
            lines.append(
                f"| {name} | {workload['items']} | {paths['floor']['items_per_s']:.2f} | "
                f"{paths['auto']['ratio_to_floor']:.3f} | {paths['index']['ratio_to_floor']:.3f} |"
            )
        lines.append("")
        if "build_fixed_seconds" in two_b:
            lines += [
                f"The build's fixed cost per run (create the table, commit, indexes, manifest; a 1-item build minus "
                f"its encode): {two_b['build_fixed_seconds']:.3f} s. It does not grow with the corpus, so the build "
                "ratio of a small workload overstates the cost of a real one.",
                "",
            ]
    lines += _sync_lines(data.get("sync")) + _compaction_lines(data.get("compaction"))
    lines += ["| target | measured | limit | status |", "| --- | ---: | --- | --- |"]
    for check in data["targets"]:
        lines.append(f"| {check['target']} | {check['value']:.3f} | {check['limit']} | {_status(check['met'])} |")
    return "\n".join(lines) + "\n"


def _sync_lines(sync: dict[str, Any] | None) -> list[str]:
    """A sync of an edited corpus against a full build of it (``index_bench.py --sync``)."""
    if not sync:
        return []
    full = sync["seconds"]["full build"]
    lines = [
        f"Sync (`build --sync` into a copy of the built db) of {sync['items']} short texts with "
        f"{sync['changed_share']:.0%} edited, `{sync.get('model', 'tiny')}` model, batch size {sync['batch_size']}, "
        f"{sync['repeats']} interleaved repeats (medians; ratio = median of the per-repeat ratios):",
        "",
        "| run | seconds | time / full build |",
        "| --- | ---: | ---: |",
    ]
    ratios = {"full build": 1.0, "sync, changed": sync["sync_over_full"], "sync, unchanged": None}
    ratios["sync, unchanged"] = sync["unchanged_sync_over_full"]
    for name, seconds in sync["seconds"].items():
        lines.append(f"| {name} | {seconds:.3f} | {ratios.get(name, seconds / full):.4f} |")
    counts = sync["sync_counts"]
    lines += [
        "",
        f"The sync counted {counts['lines']} lines = {counts['new']} new + {counts['changed']} changed + "
        f"{counts['unchanged']} unchanged and embedded {counts['embedded']}. A sync of the unchanged file (nothing "
        "embedded) is its fixed cost: reading, hashing and comparing every line, opening and committing the db.",
        "",
    ]
    return lines


def _compaction_lines(compaction: dict[str, Any] | None) -> list[str]:
    """Many small upserts, then ``Store.optimize`` (``index_bench.py --compaction``)."""
    if not compaction:
        return []
    lines = [
        f"Compaction: a table of {compaction['rows']} rows x {compaction['dim']}-d vectors after "
        f"{compaction['updates']} upserts of {compaction['rows_per_update']} rows each (median upsert commit "
        f"{compaction['upsert_commit_seconds_median']:.3f} s), then `index.py optimize`:",
        "",
        "| state | fragments | versions | on disk (MB) | exact search (ms) | optimize (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, shape in compaction["shapes"].items():
        seconds = shape.get("optimize_seconds")
        name = f"after the {compaction['updates']} upserts" if name == "after_updates" else name
        lines.append(
            f"| {name} | {shape['fragments']} | {shape['versions']} | {shape['disk_bytes'] / 2**20:.1f} | "
            f"{shape['exact_search_seconds'] * 1000:.1f} | {'' if seconds is None else f'{seconds:.2f}'} |"
        )
    return [*lines, ""]


def train_section(data: dict[str, Any]) -> str:
    settings = data["settings"]
    lines = [
        f"### Training: `{data['model']}` model, task `{settings['task']}`",
        "",
        f"Measured on {data['created']}. Machine: {machine_line(data['machine'])}.",
        "",
        f"Step = forward of both columns + loss + backward + SGD step; batch {settings['batch']} pairs "
        f"(queries ~20 tokens, passages ~{settings['passage_tokens']} tokens), median of {settings['repeats']} "
        "interleaved repeats.",
        "",
        "| loss | step time (ms) |",
        "| --- | ---: |",
    ]
    for name, entry in data["step_seconds"].items():
        lines.append(f"| {name} | {entry['median'] * 1000:.1f} |")
    loss_math = data.get("loss_math_seconds")
    if loss_math:
        lines += [
            "",
            "Loss alone (`compute_loss_from_embeddings` + backward to the embeddings, same batch): "
            + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in loss_math.items())
            + ".",
        ]
    lines += [
        "",
        f"Peak RSS of one step at batch {settings['large_batch']} (cached: mini-batch {settings['mini_batch']}): "
        + ", ".join(f"{k} {v['peak_rss_mb']:.1f} MB" for k, v in data["large_batch_memory"].items())
        + ".",
        "",
        "| target | measured | limit | status |",
        "| --- | ---: | --- | --- |",
    ]
    for check in data["targets"]:
        lines.append(f"| {check['target']} | {check['value']:.3f} | {check['limit']} | {_status(check['met'])} |")
    return "\n".join(lines) + "\n"


def render(results: list[dict[str, Any]]) -> str:
    """The performance section for these benchmark results (encode and/or train JSON)."""
    parts = [
        "Generated by `python bench/report.py bench/results/*.json` from the JSON of `bench/encode_bench.py`, "
        "`bench/index_bench.py` and `bench/train_bench.py`.",
        "Ratios are measured side by side in one run (paths interleaved per repeat); absolute numbers depend on "
        "the machine named with them.",
        "",
    ]
    busy = [d for d in results if (d["machine"].get("load_average_1min_at_start") or 0) > (d["machine"]["cores"] or 1)]
    if busy:
        parts += [
            "Caution: some of these runs started with a 1-minute load above the machine's core count (other jobs "
            "on the same cores); short runs there carry run-to-run noise of tens of percent even in the ratios. "
            "Rerun on an idle machine (or with more `--repeats`) before quoting a ratio close to a limit.",
            "",
        ]
    sections = {"encode": encode_section, "index": index_section, "train": train_section}
    for data in results:
        if data.get("benchmark") in sections:  # other benchmarks' JSON (images, data, planner) has its own doc
            parts.append(sections[data["benchmark"]](data))
    if not any(data["machine"]["device"] != "cpu" for data in results):
        parts.append(
            "GPU numbers (bf16, sdpa / flash-attention 2, 2b-shaped and full-size models): not measured; no GPU "
            "machine was available to the runs above.\n"
        )
    return "\n".join(parts)


SECTIONS = {"encode": encode_section, "index": index_section, "train": train_section}


def write(markdown: str, out: Path, block: str = "performance", check: bool = False) -> bool:
    """Put ``markdown`` between the ``block`` markers of ``out``; with ``check``, write nothing and return
    whether the file already holds it."""
    try:
        old = out.read_text(encoding="utf-8")
        text = replace_block(old, block, markdown)
    except (OSError, ValueError) as error:
        raise SystemExit(f"{out}: {error}") from None
    if check:
        return text == old
    out.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python bench/report.py bench/results/*.json",
    )
    parser.add_argument("results", nargs="+", type=Path, help="JSON of encode_bench / index_bench / train_bench")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"full tables (default {DEFAULT_OUT})")
    parser.add_argument("--readme", type=Path, default=DEFAULT_README, help="model card for the summary")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"the PNG (default {DEFAULT_PLOT})")
    parser.add_argument("--no-summary", action="store_true", help="write the full tables only")
    parser.add_argument("--stdout", action="store_true", help="print the markdown instead of writing it")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when --out or the README summary is stale"
    )
    args = parser.parse_args(argv)
    results = []
    for path in args.results:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("benchmark") not in SECTIONS:  # e.g. the planner's calibration: documented elsewhere
            print(f"skipping {path}: benchmark {data.get('benchmark')!r} is not one of {sorted(SECTIONS)}")
            continue
        results.append(data)
    markdown = render(results)
    if args.stdout:
        sys.stdout.write(markdown)
        return markdown
    if args.check:  # the markdown only: the PNG's bytes depend on the matplotlib build
        from bench.report_summary import summary

        stale = [] if write(markdown, args.out, check=True) else [str(args.out)]
        if not args.no_summary:
            relative = Path(os.path.relpath(args.plot, args.readme.parent)).as_posix()
            doc = Path(os.path.relpath(args.out, args.readme.parent)).as_posix()
            if not write(summary(results, relative, doc), args.readme, "performance-summary", check=True):
                stale.append(f"{args.readme} (performance-summary)")
        if stale:
            print(f"stale: {', '.join(stale)}; run python bench/report.py with the same results", file=sys.stderr)
            raise SystemExit(1)
        print("up to date: the performance tables and the summary")
        return markdown
    write(markdown, args.out)
    print(f"wrote the performance tables into {args.out}")
    if not args.no_summary:
        from bench.report_summary import plot, summary

        plot(results, args.plot)
        relative = Path(os.path.relpath(args.plot, args.readme.parent)).as_posix()
        doc = Path(os.path.relpath(args.out, args.readme.parent)).as_posix()
        write(summary(results, relative, doc), args.readme, "performance-summary")
        print(f"wrote the summary into {args.readme} and the plot {args.plot}")
    return markdown


if __name__ == "__main__":
    main()
