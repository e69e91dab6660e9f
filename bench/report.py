"""Generate the performance section (markdown) from benchmark JSON files, naming the machine they ran on.

The markdown goes between ``<!-- performance:start -->`` and ``<!-- performance:end -->`` in the output file
(default ``README.md``, the model card).
Every number comes from the JSON; nothing is typed in by hand.

Example::

    python bench/report.py out/bench/encode-tiny.json out/bench/encode-2b-shaped.json out/bench/train-tiny.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from vipyloqwen_tools.readme import replace_block  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "README.md"
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
    lines += ["| target | measured | limit | status |", "| --- | ---: | --- | --- |"]
    for check in data["targets"]:
        lines.append(f"| {check['target']} | {check['value']:.3f} | {check['limit']} | {_status(check['met'])} |")
    return "\n".join(lines) + "\n"


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
        "Generated by `python bench/report.py` from the JSON of `bench/encode_bench.py` and `bench/train_bench.py`.",
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
    for data in results:
        parts.append(encode_section(data) if data["benchmark"] == "encode" else train_section(data))
    if not any(data["machine"]["device"] != "cpu" for data in results):
        parts.append(
            "GPU numbers (bf16, sdpa / flash-attention 2, 2b-shaped and full-size models): not measured; no GPU "
            "machine was available to the runs above.\n"
        )
    return "\n".join(parts)


def write(markdown: str, out: Path) -> None:
    """Put ``markdown`` between the performance markers of ``out``."""
    try:
        text = replace_block(out.read_text(encoding="utf-8"), "performance", markdown)
    except (OSError, ValueError) as error:
        raise SystemExit(f"{out}: {error}") from None
    out.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python bench/report.py bench/results/*.json",
    )
    parser.add_argument("results", nargs="+", type=Path, help="JSON files written by encode_bench / train_bench")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"markdown file (default {DEFAULT_OUT})")
    parser.add_argument("--stdout", action="store_true", help="print the markdown instead of writing it")
    args = parser.parse_args(argv)
    markdown = render([json.loads(path.read_text(encoding="utf-8")) for path in args.results])
    if args.stdout:
        sys.stdout.write(markdown)
    else:
        write(markdown, args.out)
        print(f"wrote the performance section into {args.out}")
    return markdown


if __name__ == "__main__":
    main()
