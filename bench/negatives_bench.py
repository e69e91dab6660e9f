"""Negatives done right, measured: does masking false negatives (and mining hard ones) help, and what mining costs.

``train``: the tiny model trained on the bundled sample (``data/sample/train.jsonl``, held-out ``eval.jsonl``) four
ways, each with the same seeds (the data order; the initial weights are the same tiny model):

- ``in-batch``: today's loss before this change: every other row's positive is a negative, duplicates included
  (``mask_false_negatives: false``);
- ``masked``: candidates that are the same document as a correct answer are masked (the default);
- ``masked+margin``: also candidates scoring above the positive by 0.1 (``false_negative_margin: 0.1``);
- ``masked+mined``: masked, trained on the sample mined with ``scripts/mine.py`` (K=4, relative margin 0.05) by
  the initial model.

Reported per way: held-out mean R@1 (mean and spread over the seeds) and the share of in-batch candidates per step
that are correct answers (``<task>/masked`` / ``<task>/candidates`` over the logged steps): trained as negatives
by ``in-batch``, masked by the others.

``mine``: mining ``--rows`` synthetic text rows (instr; answers shared by several questions, as short answers are)
with the tiny model on this machine's cores: embedded once (the ``exact+margin`` run: K=4, relative margin 0.05),
then the same embeddings mined exactly and with the LanceDB ANN (IVF-PQ), K=4 without a filter: seconds per phase,
and the ANN's recall of the exact run's negatives.

    python bench/negatives_bench.py train --steps 260 --seeds 0 1 2 --out bench/results/negatives-train.json
    python bench/negatives_bench.py mine --rows 100000 --out bench/results/negatives-mining.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import results_header, write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent

WAYS: dict[str, dict[str, Any]] = {
    "in-batch": {"mask_false_negatives": False},
    "masked": {"mask_false_negatives": True},
    "masked+margin": {"mask_false_negatives": True, "false_negative_margin": 0.1},
    "masked+mined": {"mask_false_negatives": True, "mined": True},
}
MINED_K = 4
MINED_MARGIN = 0.05
# The sample run's settings (configs/tiny-cpu.yaml), shortened to --steps.
RUN = {
    "learning_rate": 1.0e-3,
    "warmup_ratio": 0.05,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "max_length": 256,
    "max_image_tokens": 16,
    "precision": "fp32",
    "logging_steps": 1,
    "eval_steps": None,
    "save_steps": 100000,
}


def false_negative_share(history: list[dict[str, Any]]) -> dict[str, float]:
    """Per task and overall: masked / candidates summed over the logged steps (the share of in-batch candidates per
    step that are correct answers)."""
    masked: dict[str, float] = {}
    candidates: dict[str, float] = {}
    for entry in history:
        for key, value in entry.items():
            task, _, stat = key.partition("/")
            if stat == "masked":
                masked[task] = masked.get(task, 0.0) + value
            elif stat == "candidates":
                candidates[task] = candidates.get(task, 0.0) + value
    shares = {task: masked.get(task, 0.0) / total for task, total in candidates.items() if total}
    overall = sum(candidates.values())
    shares["all"] = sum(masked.values()) / overall if overall else float("nan")
    return shares


def prepare_sample(work: Path, init: Path, log) -> tuple[Path, Path, dict[str, Any]]:
    """The sample copied into ``work`` (image paths stay relative) and mined there with the initial model."""
    from vipyloqwen_tools.mine import MineOptions, mine

    data = work / "data"
    if not data.is_dir():
        shutil.copytree(REPO / "data" / "sample", data)
    mined = data / "train.mined.jsonl"
    started = time.perf_counter()
    stats = mine(
        str(init), data / "train.jsonl", mined, MineOptions(num_negatives=MINED_K, relative_margin=MINED_MARGIN),
        max_image_tokens=RUN["max_image_tokens"], max_length=RUN["max_length"], log=log,
    )  # fmt: skip
    summary = {k: v for k, v in stats.__dict__.items() if k != "seconds"}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return data / "train.jsonl", mined, summary


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.model import build_tiny
    from vipyloqwen_tools.train.run import train

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="negatives-bench-"))
    init = build_tiny(work / "init-tiny")
    results = json.loads(args.out.read_text()) if args.out and args.out.is_file() and args.resume else None
    if results is None:
        results = {**results_header("negatives-train"), "settings": {**RUN, "max_steps": args.steps}, "runs": []}
        train_file, mined_file, results["mining"] = prepare_sample(work, init, print)
    else:
        train_file, mined_file = work / "data" / "train.jsonl", work / "data" / "train.mined.jsonl"
    done = {(r["way"], r["seed"]) for r in results["runs"]}
    for seed in args.seeds:
        for way, settings in WAYS.items():
            if way not in args.ways or (way, seed) in done:
                continue
            options = {k: v for k, v in settings.items() if k != "mined"}
            config = TrainConfig.from_yaml(
                None, model=str(init), train_file=str(mined_file if settings.get("mined") else train_file),
                eval_file=str(work / "data" / "eval.jsonl"), output_dir=str(work / f"{way}-{seed}"),
                max_steps=args.steps, seed=seed, **RUN, **options,
            )  # fmt: skip
            started = time.perf_counter()
            result = train(config)
            metrics = result.get("metrics") or {}
            recalls = {k.removeprefix("eval_"): v for k, v in metrics.items() if k.endswith("r@1")}
            history = [entry for entry in result["log_history"] if "loss" in entry]
            results["runs"].append(
                {
                    "way": way,
                    "seed": seed,
                    "mean_r@1": recalls.get("mean_r@1"),
                    "r@1": recalls,
                    "false_negative_share": false_negative_share(history),
                    "final_loss": history[-1]["loss"] if history else None,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(json.dumps(results["runs"][-1]), flush=True)
            results["summary"] = summarize(results["runs"])
            if args.out:
                write_json(args.out, results, atomic=True)
            shutil.rmtree(work / f"{way}-{seed}", ignore_errors=True)
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {}
    for way in WAYS:
        mine = [r for r in runs if r["way"] == way and r["mean_r@1"] is not None]
        if not mine:
            continue
        values = [r["mean_r@1"] for r in mine]
        shares = [r["false_negative_share"]["all"] for r in mine]
        summary[way] = {
            "seeds": [r["seed"] for r in mine],
            "mean_r@1": round(statistics.mean(values), 4),
            "stdev_r@1": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "false_negative_share": round(statistics.mean(shares), 4),
        }
    return summary


# ------------------------------------------------------------------------------------------------ mining time
WORDS = (
    "màu đỏ xanh vàng tím cam hồng nâu đen trắng con mèo chó gà cá ngựa bò đang chạy bơi ngủ ăn hát bay nhà cửa "
    "sông núi biển trời mưa nắng gió sáng tối hôm nay ngày mai người bạn thầy giáo học sinh sách vở bút bàn ghế"
).split()


def synthetic_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` instr rows: distinct questions; answers drawn from ``count // 4`` (short answers repeat)."""
    import random

    rng = random.Random(seed)
    answers = [" ".join(rng.choices(WORDS, k=rng.randint(2, 8))) for _ in range(max(1, count // 4))]
    return [
        {"task": "instr", "query": f"Câu {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + "?",
         "positive": rng.choice(answers)}
        for i in range(count)
    ]  # fmt: skip


def _agreement(a: Path, b: Path) -> float | None:
    """The share of the negatives in ``a`` that ``b`` returns for the same row (rows in the same order)."""
    found = total = 0
    with a.open(encoding="utf-8") as first, b.open(encoding="utf-8") as second:
        for line_a, line_b in zip(first, second, strict=True):
            x, y = json.loads(line_a).get("negatives", []), json.loads(line_b).get("negatives", [])
            total += len(x)
            found += len(set(x) & set(y))
    return round(found / total, 4) if total else None


def depth_sweep(embeddings: Path, work: Path, queries: int = 2000) -> list[dict[str, Any]]:
    """The ANN's recall of the exact 4 nearest documents when it retrieves ``depth`` and rescores them exactly, for
    the first ``queries`` queries (what :data:`vipyloqwen_tools.mine.search.ANN_OVERFETCH` was chosen from)."""
    import numpy as np
    import torch

    from vipyloqwen_tools.mine.search import AnnPool

    def load(name: str) -> np.ndarray:
        return np.concatenate([np.load(p) for p in sorted((embeddings / name).glob("w*.npy"))])

    documents, vectors = load("documents-instr"), load("queries-instr")[:queries]
    exact = torch.from_numpy(vectors @ documents.T).topk(MINED_K, dim=1).indices.tolist()
    pool = AnnPool.build(documents, work / "ann-sweep")
    sweep = []
    for depth in (MINED_K, 10, 40, 100):
        started = time.perf_counter()
        scores, ids = pool.search(vectors, depth)
        seconds = time.perf_counter() - started
        best = ids.gather(1, scores.topk(MINED_K, dim=1).indices).tolist()
        recall = sum(len(set(a) & set(b)) for a, b in zip(best, exact, strict=True)) / (MINED_K * len(exact))
        sweep.append({"depth": depth, "recall_at_4": round(recall, 4), "seconds": round(seconds, 2)})
        print(sweep[-1], flush=True)
    return sweep


def run_mine(args: argparse.Namespace) -> dict[str, Any]:
    """Embeds once (the first run, ``exact+margin``), then mines the same embeddings exact and with the ANN."""
    import torch

    from vipyloqwen_tools.mine import MineOptions, mine
    from vipyloqwen_tools.train.model import build_tiny

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="negatives-mining-"))
    init = build_tiny(work / "init-tiny")
    data = work / "rows.jsonl"
    if not data.is_file():
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in synthetic_rows(args.rows)), "utf-8")
    margin = MineOptions(num_negatives=MINED_K, relative_margin=MINED_MARGIN)
    plain = MineOptions(num_negatives=MINED_K)
    runs = {"exact+margin": (margin, 10**12), "exact": (plain, 10**12), "ann": (plain, 1)}
    source = work / "exact+margin.work"
    results: dict[str, Any] = {}
    for name, (options, ann_min_rows) in runs.items():
        folder = work / f"{name}.work"
        if name != "exact+margin" and not (folder / "emb").is_dir():  # the same embeddings: only the search differs
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source / "emb", folder / "emb")
            shutil.copy(source / "validation.json", folder / "validation.json")
        stats = mine(
            str(init), data, work / f"{name}.jsonl", options, work_dir=folder, ann_min_rows=ann_min_rows,
            batch_size=args.batch_size, window=args.window, keep_work=name == "exact+margin", log=print,
        )  # fmt: skip
        results[name] = {
            "options": {k: v for k, v in options.__dict__.items() if v is not None},
            "seconds": stats.seconds, "pool": stats.pool, "search": stats.search, "full": stats.full,
            "short": stats.short, "none": stats.none, "dropped": stats.dropped,
            "load_after": round(os.getloadavg()[0], 2),
        }  # fmt: skip
    return {
        **results_header("negatives-mining"),
        "rows": args.rows,
        "threads": args.threads,
        "runs": results,
        "ann_recall_of_exact_negatives": _agreement(work / "exact.jsonl", work / "ann.jsonl"),
        "ann_depth_sweep": depth_sweep(source / "emb", work),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    training = sub.add_parser("train", help="held-out R@1 and false-negative share, four ways x seeds")
    training.add_argument(
        "--steps", type=int, default=260, help="optimizer steps per run (260: the demo's 5 epochs of the sample)"
    )
    training.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    training.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    training.add_argument("--resume", action="store_true", help="skip the runs --out already holds (same --work)")
    mining = sub.add_parser("mine", help="mining time, exact vs ANN, and the ANN's recall")
    mining.add_argument("--rows", type=int, default=100_000)
    mining.add_argument("--batch-size", type=int, default=64)
    mining.add_argument("--window", type=int, default=16384)
    for command in (training, mining):
        command.add_argument("--out", type=Path, help="results JSON")
        command.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
        command.add_argument("--threads", type=int, default=2, help="torch threads (this machine has 2 cores)")
    args = parser.parse_args(argv)
    results = run_train(args) if args.command == "train" else run_mine(args)
    if args.out:
        write_json(args.out, results, atomic=True)
    print(json.dumps(results.get("summary") or results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
