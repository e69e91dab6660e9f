r"""Serving benchmark: items/s through the vLLM server (``/v1/embeddings``) vs ``AutoModel.encode`` in one process.

Same checkpoint, same items, same machine, one after the other (the server is stopped before the in-process
run, so neither competes with the other for the cores):

- ``server``: ``vipyloqwen-serve`` (``.venv-serve``; what ``make serve`` runs). A client sends the workload in
  requests of ``--request-items`` items, ``--concurrency`` requests in flight (threads). Request bodies are
  built before the clock starts (images as PNG ``data:`` URLs); the time is first request sent -> last answer
  read, so it includes HTTP, JSON, the request reader (texts to token ids, images opened and prepared) and
  vLLM's scheduling and preprocessing.
- ``auto``: ``AutoModel.from_pretrained(ckpt, trust_remote_code=True).encode(text=, images=, task=,
  batch_size=--batch-size)`` on PIL images already in memory.

Workloads (bench/common.py, fixed seed): queries (~20 tokens), passages (~300 tokens), pages (A4 page images,
at the checkpoint's image budget). Each path runs a warm-up pass, then ``--repeats`` timed passes; items/s is
the median. The parity column is the smallest cosine between the two paths' vectors over the workload.

Server memory: the resident set (RSS, from ``/proc``) summed over the server's processes (vLLM's API server,
engine core and worker), once the server is up and at its peak while the workloads run (sampled every
:data:`MEMORY_SAMPLE_S` s); the proportional set (PSS: shared pages split between the processes that share
them) is recorded too.

Example::

    python bench/serve_bench.py --model tiny --out bench/results/serve-tiny.json
    python bench/serve_bench.py --render bench/results/serve-tiny.json   # its table into docs/serving.md
    python bench/serve_bench.py --model 2b-shaped --sizes queries=16,passages=8,pages=4 \
        --out bench/results/serve-2b-shaped.json
    # vLLM flags of another setup, after vipyloqwen-serve's own (here: vLLM's auto dtype and a 2 GiB KV cache)
    python bench/serve_bench.py --model tiny --serve-args "--dtype auto -- --kv-cache-memory-bytes 2147483648" \
        --out bench/results/serve-tiny-kv2g.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "serving"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from vipyloqwen_vllm.client import post_embeddings, running_server  # noqa: E402

from bench import harness  # noqa: E402
from bench.common import Workload, make_workloads, model_facts, prepare_checkpoint  # noqa: E402

DEFAULT_SIZES = "queries=64,passages=32,pages=16"
DOC = REPO_ROOT / "docs" / "serving.md"
MEMORY_SAMPLE_S = 0.25
MIB = 2**20


def _proc_stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[1]), int(fields[3])


def _proc_kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def server_memory() -> dict[str, float]:
    """RSS and PSS (MiB) summed over the server's processes: this process's child that leads its own session
    (``running_server`` starts it so) and every process of that session."""
    stats = {pid: _proc_stat(pid) for pid in os.listdir("/proc") if pid.isdigit()}
    leaders = {pid for pid, st in stats.items() if st and st[0] == os.getpid() and st[1] == int(pid)}
    tree = [pid for pid, st in stats.items() if st and str(st[1]) in leaders]
    rss = sum(_proc_kib(f"/proc/{pid}/status", "VmRSS") for pid in tree)
    pss = sum(_proc_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid in tree)
    return {"processes": len(tree), "rss_mib": rss / 1024, "pss_mib": pss / 1024}


class PeakServerMemory:
    """The peak of :func:`server_memory` over a block, sampled by a thread every MEMORY_SAMPLE_S s."""

    def __init__(self) -> None:
        self.peak = server_memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            now = server_memory()
            if now["rss_mib"] > self.peak["rss_mib"]:
                self.peak = now

    def __enter__(self) -> PeakServerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def request_bodies(workload: Workload, request_items: int) -> list[tuple[int, bytes]]:
    """(first item index, JSON body) per request: texts as ``input``, image items as chat ``messages``."""
    bodies = []
    for start in range(0, len(workload.items), request_items):
        chunk = workload.items[start : start + request_items]
        if all(not item.images for item in chunk):
            body: dict[str, Any] = {"input": [item.text for item in chunk]}
        else:
            body = {
                "messages": [
                    [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": data_url(image)}} for image in item.images
                            ]
                            + ([{"type": "text", "text": item.text}] if item.text is not None else []),
                        }
                    ]
                    for item in chunk
                ]
            }
        body["task"] = workload.task
        bodies.append((start, json.dumps(body).encode("utf-8")))
    return bodies


def run_server(url: str, bodies: list[tuple[int, bytes]], n: int, dim: int, concurrency: int) -> np.ndarray:
    out = np.zeros((n, dim), dtype=np.float32)

    def send(entry: tuple[int, bytes]) -> None:
        start, body = entry
        status, answer = post_embeddings(url, body)
        if status != 200:
            raise RuntimeError(f"request at item {start + 1}: HTTP {status}: {answer}")
        for row in answer["data"]:
            out[start + row["index"]] = row["embedding"]

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, bodies))
    return out


def full_size_checkpoint(workdir: Path, dtype: torch.dtype) -> Path:
    """The full-size 2B (28 text / 32 vision layers, random weights, seed 0) saved in ``dtype``."""
    from bench.common import two_b_shaped
    from vipyloqwen_tools.checkpoint.export import save_checkpoint

    model, processor = two_b_shaped(text_layers=28, vision_layers=32)
    return save_checkpoint(model.to(dtype), processor, workdir / "2b")


def timed(function, repeats: int) -> tuple[list[float], Any]:
    function()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def parse_sizes(text: str) -> dict[str, int]:
    sizes = {}
    for part in text.split(","):
        name, _, count = part.partition("=")
        if name not in ("queries", "passages", "pages") or not count.isdigit():
            raise SystemExit(f"--sizes: expected queries=N,passages=N,pages=N, got {part!r}")
        sizes[name] = int(count)
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.bench_parser(
        __doc__, "python bench/serve_bench.py --model tiny --out bench/results/serve-tiny.json"
    )
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny | 2b-shaped | 2b (full size, random) | PATH to a checkpoint (default: tiny)",
    )
    parser.add_argument("--device", default="cpu", help="device of the AutoModel.encode path (default cpu)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="weights of a generated model and of "
        "AutoModel.encode (default float32); the server runs the checkpoint's dtype",
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"items per workload (default {DEFAULT_SIZES})")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="AutoModel.encode batch_size (default 8)")
    parser.add_argument("--request-items", type=int, default=8, help="items per HTTP request (default 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--serve-venv", type=Path, default=REPO_ROOT / ".venv-serve", help="vLLM's venv")
    parser.add_argument("--serve-args", default="", help="more vipyloqwen-serve flags (one string)")
    parser.add_argument("--out", type=Path, help="result JSON")
    parser.add_argument("--render", type=Path, help="write this result JSON's table into --doc, run nothing")
    parser.add_argument("--doc", type=Path, default=DOC, help=f"the doc of --render (default {DOC})")
    args = parser.parse_args(argv)
    if not args.out and not args.render:
        parser.error("give --out (run the benchmark) or --render RESULT.json")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render:
        return render(args.render, args.doc)
    from transformers import AutoModel

    header = harness.results_header("serve")
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    dtype = getattr(torch, args.dtype)
    checkpoint = full_size_checkpoint(workdir, dtype) if args.model == "2b" else prepare_checkpoint(args.model, workdir)

    def load():
        return AutoModel.from_pretrained(checkpoint, trust_remote_code=True, dtype=dtype).to(args.device).eval()

    auto = load()
    facts = model_facts(auto, auto.processor, args.model)
    dim = auto.config.embed_dim
    workloads = make_workloads(auto.processor.tokenizer, parse_sizes(args.sizes))
    bodies = {w.name: request_bodies(w, args.request_items) for w in workloads}
    del auto  # the server runs alone first
    results: dict[str, dict[str, Any]] = {w.name: {"items": len(w.items), "task": w.task} for w in workloads}
    served: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    log = workdir / "server.log"
    serve_args = args.serve_args.split() if args.serve_args else []
    with running_server(checkpoint, args.serve_venv, serve_args, log=log, env={"HF_HUB_OFFLINE": "1"}) as url:
        startup_s = time.perf_counter() - start
        memory = {"started": server_memory()}
        print(f"server memory once started: {memory['started']}", flush=True)
        with PeakServerMemory() as peak:
            for w in workloads:
                times, served[w.name] = timed(
                    lambda w=w: run_server(url, bodies[w.name], len(w.items), dim, args.concurrency), args.repeats
                )
                results[w.name]["server_s"] = times
                results[w.name]["server_items_per_s"] = len(w.items) / harness.median(times)
                print(f"server {w.name}: {results[w.name]['server_items_per_s']:.2f} items/s", flush=True)
        memory["peak"] = peak.peak
        print(f"server memory peak: {memory['peak']}", flush=True)
    auto = load()
    for w in workloads:
        texts = [item.text for item in w.items]
        images = [item.images or None for item in w.items]
        if all(image is None for image in images):
            images = None

        def encode(texts=texts, images=images, task=w.task):
            return auto.encode(text=texts, images=images, task=task, batch_size=args.batch_size).numpy()

        times, vectors = timed(encode, args.repeats)
        result = results[w.name]
        result["auto_s"] = times
        result["auto_items_per_s"] = len(w.items) / harness.median(times)
        result["server_vs_auto"] = result["server_items_per_s"] / result["auto_items_per_s"]
        cosine = (
            (served[w.name] * vectors).sum(-1)
            / np.linalg.norm(served[w.name], axis=-1)
            / np.linalg.norm(vectors, axis=-1)
        )
        result["min_cosine"] = float(cosine.min())
        print(
            f"auto {w.name}: {result['auto_items_per_s']:.2f} items/s; server/auto {result['server_vs_auto']:.2f}x; "
            f"min cosine {result['min_cosine']:.6f}",
            flush=True,
        )
    report = {
        **header,
        "machine": {**header["machine"], "torch_threads_auto": torch.get_num_threads()},
        "model": facts,
        "auto_device": args.device,
        "settings": {
            "repeats": args.repeats,
            "batch_size": args.batch_size,
            "request_items": args.request_items,
            "concurrency": args.concurrency,
            "serve_args": serve_args,
            "vllm_command": log.read_text().splitlines()[0],
        },
        "server_startup_s": startup_s,
        "server_memory_mib": memory,
        "workloads": results,
        "command": " ".join(["python", "bench/serve_bench.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    harness.write_json(args.out, report, indent=1)
    print(format_table(report))
    return report


def render(result: Path, doc: Path) -> dict[str, Any]:
    """Put the table of ``result`` (and the machine it ran on) between doc's serve-bench markers."""
    from vipyloqwen_tools.release.readme import replace_block

    report = json.loads(result.read_text(encoding="utf-8"))
    doc.write_text(replace_block(doc.read_text(encoding="utf-8"), "serve-bench", format_table(report) + "\n"))
    print(f"wrote the table of {result} into {doc}")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The markdown table docs/serving.md shows, with the machine and settings it was measured with."""
    machine, settings, model = report["machine"], report["settings"], report["model"]
    load = machine.get("load_average_1min_at_start")
    command = settings["vllm_command"].split()
    served = command[command.index("--dtype") + 1] if "--dtype" in command else "?"
    kv = command[command.index("--kv-cache-memory-bytes") + 1] if "--kv-cache-memory-bytes" in command else None
    memory = report.get("server_memory_mib")
    lines = [
        f"{machine['device'].upper()}: {machine['cpu']}, {machine['cores']} cores"
        + (f", 1-min load {load:.1f} at start (shared machine)" if load is not None else "")
        + f"; model {model['name']} ({model['parameters'] / 1e6:.1f}M parameters, {model['dtype']}, image budget "
        f"{model['max_image_tokens']} tokens); {settings['repeats']} timed passes (median), "
        f"{settings['request_items']} items per request, {settings['concurrency']} in flight, encode batch_size "
        f"{settings['batch_size']}; server start {report['server_startup_s']:.0f} s; served dtype {served}, KV "
        f"cache {f'{int(kv) / MIB:.1f} MiB' if kv else 'vLLM default'}. `{report['command']}`",
        "",
    ]
    if memory:
        lines += [
            f"| server memory (MiB, summed over its {memory['started']['processes']} processes) | RSS | PSS |",
            "| --- | ---: | ---: |",
            f"| once started | {memory['started']['rss_mib']:.0f} | {memory['started']['pss_mib']:.0f} |",
            f"| peak while serving | {memory['peak']['rss_mib']:.0f} | {memory['peak']['pss_mib']:.0f} |",
            "",
        ]
    lines += [
        "| workload | items | server items/s | AutoModel.encode items/s | server / encode | min cosine |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report["workloads"].items():
        lines.append(
            f"| {name} | {r['items']} | {r['server_items_per_s']:.2f} | {r['auto_items_per_s']:.2f} | "
            f"{r['server_vs_auto']:.2f}x | {r['min_cosine']:.7f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
