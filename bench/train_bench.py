"""Training benchmark: step time of the prefix router loss vs plain MultipleNegativesRankingLoss, and peak memory
of the cached (GradCache) variants vs plain at a large batch.

One training step = forward of both columns (anchor, positive) + loss + backward + an SGD step (no optimizer
state, so memory is the model's), on the same pre-tokenised batches for every loss. Losses:

- ``router``: ``ViPyloQwenRouterLoss(model).task_losses([task])[task]`` (``vipyloqwen_tools/train/losses.py``);
  for ``instr``: symmetric InfoNCE + cosine term.
- ``mnrl``: sentence-transformers' ``MultipleNegativesRankingLoss(model)``.
- ``router_cached`` / ``mnrl_cached``: the GradCache variants (``mini_batch_size`` rows per forward).

Timed repeats alternate router and MNRL (each repeat runs ``--steps`` steps of each, in rotated order); the ratio
is the median over repeats of ``time(router) / time(mnrl)``. Peak memory is the peak RSS above the pre-step RSS
(see ``bench/common.py``), one step per loss at ``--large-batch``.

Example::

    python bench/train_bench.py --model tiny --quick --out out/bench/train-tiny.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import harness
from bench.common import prepare_checkpoint, vietnamese_text

REPEATS = (8, 10)  # timed rounds with --quick, without
SIZES = {
    "smoke": {"batch": 4, "passage_tokens": 40, "large_batch": 8, "mini_batch": 2, "steps": 1},
    "quick": {"batch": 16, "passage_tokens": 120, "large_batch": 64, "mini_batch": 8, "steps": 3},
    "full": {"batch": 32, "passage_tokens": 300, "large_batch": 128, "mini_batch": 16, "steps": 4},
}


def make_pairs(tokenizer: Any, n: int, passage_tokens: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (query ~20 tokens, passage ~``passage_tokens`` tokens) Vietnamese pairs."""
    rng = random.Random(seed)
    queries = [vietnamese_text(rng, tokenizer, max(8, int(rng.gauss(20, 4)))) for _ in range(n)]
    passages = [
        vietnamese_text(rng, tokenizer, max(16, int(rng.gauss(passage_tokens, passage_tokens / 5)))) for _ in range(n)
    ]
    return queries, passages


class TrainBench:
    """A SentenceTransformer in train mode, an SGD optimizer and the losses under test."""

    def __init__(self, checkpoint: Path, task: str, mini_batch: int) -> None:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )

        from configuration_vipyloqwen import TASKS
        from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

        self.model = SentenceTransformer(str(checkpoint), trust_remote_code=True, device="cpu")
        self.model.train()
        self.task = task
        self.prompt = TASKS[task].prefix
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-6)
        self.losses: dict[str, torch.nn.Module] = {
            "router": ViPyloQwenRouterLoss(self.model).task_losses([task])[task],
            "mnrl": MultipleNegativesRankingLoss(self.model),
            "router_cached": ViPyloQwenRouterLoss(self.model, mini_batch_size=mini_batch).task_losses([task])[task],
            "mnrl_cached": CachedMultipleNegativesRankingLoss(self.model, mini_batch_size=mini_batch),
        }

    def features(self, queries: list[str], passages: list[str]) -> list[dict[str, Any]]:
        """Pre-tokenised anchor and positive columns (with the task prompt), as the trainer's collator gives."""
        return [self.model.preprocess(column, prompt=self.prompt) for column in (queries, passages)]

    def step(self, name: str, features: list[dict[str, Any]]) -> float:
        """One step (forward, loss, backward, SGD); returns the loss value."""
        self.optimizer.zero_grad(set_to_none=True)
        out = self.losses[name]([dict(f) for f in features], None)
        total = torch.stack(list(out.values())).sum() if isinstance(out, dict) else out
        if total.requires_grad:  # the cached losses have back-propagated already
            total.backward()
        self.optimizer.step()
        return float(total.detach())

    def runner(self, name: str, features: list[dict[str, Any]], steps: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                self.step(name, features)

        return run


def loss_math_seconds(bench: TrainBench, batch: int, repeats: int, calls: int = 50) -> dict[str, float]:
    """Median time of the loss alone (``compute_loss_from_embeddings`` + backward to the embeddings) on random
    ``[batch, embed_dim]`` embeddings: the part of a step that differs between the router and MNRL."""
    dim = bench.model.get_embedding_dimension()
    generator = torch.Generator().manual_seed(0)
    columns = [torch.randn(batch, dim, generator=generator) for _ in range(2)]
    router = bench.losses["router"].router
    mnrl = bench.losses["mnrl"]

    def run(name: str) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            embeddings = [c.clone().requires_grad_(True) for c in columns]
            if name == "router":
                total = torch.stack(list(router.compute_loss_from_embeddings(bench.task, embeddings).values())).sum()
            else:
                total = mnrl.compute_loss_from_embeddings(embeddings, None)
            total.backward()
        return (time.perf_counter() - start) / calls

    samples: dict[str, list[float]] = {"router": [], "mnrl": []}
    for _ in range(repeats):
        for name in samples:
            samples[name].append(run(name))
    return {name: statistics.median(values) for name, values in samples.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = harness.bench_parser(
        __doc__, "python bench/train_bench.py --model tiny --quick --out out/bench/train-tiny.json"
    )
    harness.add_model_argument(parser)
    harness.add_size_arguments(parser, SIZES, "batches", REPEATS)
    parser.add_argument("--task", default="instr", help="registry task the router loss is bound to (default instr)")
    return harness.parse_run_arguments(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = harness.set_threads(args.threads)
    size, repeats = harness.resolve_size(args, REPEATS)
    config = SIZES[size]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-train-bench-") as workdir:
        print(f"building/loading {args.model} ...", flush=True)
        checkpoint = prepare_checkpoint(args.model, Path(workdir))
        bench = TrainBench(checkpoint, args.task, config["mini_batch"])
    tokenizer = bench.model[0].processor.tokenizer
    queries, passages = make_pairs(tokenizer, config["large_batch"], config["passage_tokens"])
    small = bench.features(queries[: config["batch"]], passages[: config["batch"]])
    large = bench.features(queries, passages)

    # Step time: router vs MNRL, interleaved.
    names = ["router", "mnrl"]
    for name in names:  # warm-up
        bench.step(name, small)
    rounds = harness.interleaved({name: bench.runner(name, small, config["steps"]) for name in names}, repeats)
    times = {name: [seconds / config["steps"] for seconds in values] for name, values in rounds.items()}
    ratio = harness.median_ratio(times["router"], times["mnrl"])

    loss_only = loss_math_seconds(bench, config["batch"], repeats)

    # Peak memory at the large batch: plain vs cached, for both losses.
    memory: dict[str, dict[str, float]] = {}
    for name in ("mnrl", "mnrl_cached", "router", "router_cached"):
        harness.release_memory()
        start = time.perf_counter()
        with harness.PeakRSS() as peak:
            loss = bench.step(name, large)
        memory[name] = {"peak_rss_mb": round(peak.delta_mb, 1), "seconds": time.perf_counter() - start, "loss": loss}

    results: dict[str, Any] = {
        **harness.results_header("train"),
        "model": args.model,
        "settings": {**config, "size": size, "repeats": repeats, "task": args.task, "threads": threads},
        "memory_method": harness.memory_method("step"),
        "step_seconds": {name: {"median": statistics.median(v), "all": v} for name, v in times.items()},
        "router_over_mnrl": ratio,
        "loss_math_seconds": loss_only,
        "large_batch_memory": memory,
        "targets": [
            harness.target("router step time / MNRL step time", ratio, "<= 1.05", ratio <= 1.05),
            *(
                harness.target(
                    f"{name} cached / plain peak memory at batch {config['large_batch']}",
                    memory[f"{name}_cached"]["peak_rss_mb"] / max(memory[name]["peak_rss_mb"], 1e-9),
                    "report (< 1 expected)",
                    None,
                )
                for name in ("mnrl", "router")
            ),
        ],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(f"step time (batch {config['batch']}, median of {repeats}):")
    for name, data in results["step_seconds"].items():
        print(f"  {name:14} {data['median'] * 1000:9.1f} ms")
    print(f"  router / mnrl  {ratio:9.3f}")
    print(
        "loss alone (+ backward to the embeddings): " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in loss_only.items())
    )
    print(f"peak RSS of one step at batch {config['large_batch']} (mini-batch {config['mini_batch']}):")
    for name, data in memory.items():
        print(f"  {name:14} {data['peak_rss_mb']:9.1f} MB  ({data['seconds']:.2f} s, loss {data['loss']:.4f})")
    return harness.finish(results, args.out)


if __name__ == "__main__":
    main()
