"""Train the tiny model on the sample data and show it learned: before/after held-out retrieval, side by side.

    python scripts/train_demo.py [--out runs/train-demo] [--config configs/tiny-cpu.yaml] [--max-steps N]

Offline, CPU. Steps: build the tiny random model; measure R@1 per task (and Spearman for text_pair) on
data/sample/eval.jsonl; train with train_st's recipe on data/sample/train.jsonl; export the Hub-layout
checkpoint; reload it (SentenceTransformer and AutoModel, trust_remote_code=True); measure again with the
reloaded model; print both. Exits 1, loudly, unless the trained model beats the untrained one on every task
by at least --min-gain (default 0.05).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sentence_transformers import SentenceTransformer  # noqa: E402
from transformers import AutoModel  # noqa: E402

from vipyloqwen_tools.train.config import TrainConfig  # noqa: E402
from vipyloqwen_tools.train.evaluation import ViPyloQwenEvaluator  # noqa: E402
from vipyloqwen_tools.train.model import build_tiny  # noqa: E402
from vipyloqwen_tools.train.run import train  # noqa: E402


def compare(before: dict[str, float], after: dict[str, float], min_gain: float) -> tuple[str, list[str]]:
    """A before/after table and the metrics that did not improve by ``min_gain``."""
    lines = [f"{'metric':<22}{'untrained':>11}{'trained':>10}{'gain':>9}"]
    failures = []
    for key in before:
        gain = after[key] - before[key]
        lines.append(f"{key:<22}{before[key]:>11.3f}{after[key]:>10.3f}{gain:>+9.3f}")
        if key != "mean_r@1" and (math.isnan(gain) or gain < min_gain):
            failures.append(f"{key}: {before[key]:.3f} -> {after[key]:.3f}")
    return "\n".join(lines), failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="run folder (default: a new temp folder; make demo: runs/train-demo)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny-cpu.yaml")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cap the training steps (default: the config's epochs)"
    )
    parser.add_argument("--min-gain", type=float, default=0.05, help="required improvement per metric")
    args = parser.parse_args(argv)
    # nothing is written into the repository unless asked; paths given are read before the chdir
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="vipyloqwen-train-demo-"))).resolve()
    args.config = args.config.resolve()
    os.chdir(ROOT)
    started = time.perf_counter()
    config = TrainConfig.from_yaml(args.config, output_dir=str(args.out), max_steps=args.max_steps, resume=False)
    evaluator = ViPyloQwenEvaluator.from_file(config.eval_file, batch_size=config.eval_batch_size)

    init = build_tiny(args.out / "init-tiny")
    untrained = SentenceTransformer(
        str(init), trust_remote_code=True, device="cpu", processor_kwargs={"max_image_tokens": config.max_image_tokens}
    )
    before = evaluator.compute_metrics(untrained)
    del untrained

    train_started = time.perf_counter()
    result = train(config)
    train_seconds = time.perf_counter() - train_started

    final = result["final_dir"]
    reloaded = SentenceTransformer(
        final, trust_remote_code=True, device="cpu", processor_kwargs={"max_image_tokens": config.max_image_tokens}
    )
    after = evaluator.compute_metrics(reloaded)
    auto = AutoModel.from_pretrained(final, trust_remote_code=True)
    auto_vec = auto.encode(text="con mèo màu đỏ", task="text_pair")
    st_vec = reloaded.encode(["con mèo màu đỏ"], prompt_name="text_pair", convert_to_tensor=True).cpu()
    agreement = float((auto_vec * st_vec).sum())

    table, failures = compare(before, after, args.min_gain)
    print("\n=== viPyloQwen tiny: held-out retrieval on data/sample/eval.jsonl ===")
    print(table)
    print(
        f"training: {result['global_step']} steps in {train_seconds:.0f} s; total {time.perf_counter() - started:.0f} s"
    )
    print(f"exported: {final} (reloaded with SentenceTransformer and AutoModel; cos(ST, AutoModel) = {agreement:.5f})")
    print(f"curves:   {result['plot']}")
    if agreement < 0.999:
        failures.append(f"SentenceTransformer and AutoModel embeddings disagree (cos {agreement:.4f})")
    if failures:
        print("\n!!! FAILED: the trained model does not clearly beat the untrained one:", file=sys.stderr)
        for failure in failures:
            print(f"!!!   {failure}", file=sys.stderr)
        return 1
    print(f"\nOK: trained beats untrained on every task (each by >= {args.min_gain}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
