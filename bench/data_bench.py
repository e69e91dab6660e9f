"""Training-data preparation at scale: validation (with and without image checks) and the Arrow build, 1 and N workers.

Generates the seed's mix at a chosen row count (text_pair 51%, instr 5%, ocr 23%, vqa_single 14% + vqa_multi 7%
with 1-5 images each from a pool of a few hundred real image files: JPEG photos and PNG pages/screenshots of
realistic sizes; Vietnamese text of realistic lengths, about 1.8 KB per row), then measures each step in a fresh
subprocess (so peak RSS is that step's): wall seconds, rows/s, peak RSS of the main process and of the largest
worker. Steps:

- ``validate``: :func:`vipyloqwen_tools.data.validate_file` with image checks;
- ``validate-no-images``: the same with ``check_images=False``;
- ``build``: :func:`vipyloqwen_tools.data.prepare_task_datasets` (validation with image checks + Arrow build +
  opening the per-task datasets), what training runs before its first step;
- ``cached``: the same call again (the validate-once cache).

Each result records the 1-minute load average before and after (the machine may be shared). The JSON goes to
``bench/results/data-bench.json``; ``--table`` prints the markdown tables of docs/training-internals.md (Appendix
A) with the extrapolation to 11M rows at 2, 16 and 32 cores.

    flock /tmp/bench.lock python bench/data_bench.py --rows 100000,1000000 --workers 1,2 \
        --out bench/results/data-bench.json
    python bench/data_bench.py --table bench/results/data-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

MIX = (("text_pair", 0.51), ("instr", 0.05), ("ocr", 0.23), ("vqa_single", 0.14), ("vqa_multi", 0.07))
STEPS = ("validate", "validate-no-images", "build", "cached")
TARGET_ROWS = 11_000_000
EXTRAPOLATE_CORES = (2, 16, 32)
# (width, height, format) of the image pool: document pages, receipts, screenshots, photos, signs.
POOL_KINDS = (
    (1240, 1754, "PNG"),
    (827, 1169, "JPEG"),
    (384, 1100, "PNG"),
    (1280, 720, "PNG"),
    (1600, 1200, "JPEG"),
    (640, 480, "JPEG"),
    (300, 200, "JPEG"),
)


# ------------------------------------------------------------------------------------------------ generation
def make_image_pool(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` image files of the kinds in :data:`POOL_KINDS` (kept between runs; not part of the repo)."""
    from PIL import Image, ImageDraw, ImageFilter

    from bench.common import page_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = []
    for index in range(count):
        width, height, fmt = POOL_KINDS[index % len(POOL_KINDS)]
        name = f"img{index:04d}.{'png' if fmt == 'PNG' else 'jpg'}"
        names.append(name)
        if (folder / name).is_file():
            continue
        if height > width:
            image = page_image(rng, width, height)
        else:  # a photo-like picture: gradient, shapes and sensor noise (realistic JPEG sizes)
            image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
            draw = ImageDraw.Draw(image)
            for _ in range(12):
                x, y = rng.randrange(width), rng.randrange(height)
                colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
                draw.ellipse([x, y, x + rng.randrange(20, width // 2), y + rng.randrange(20, height // 2)], colour)
            noise = Image.effect_noise((width, height), 18).convert("RGB")
            image = Image.blend(image.filter(ImageFilter.GaussianBlur(2)), noise, 0.15)
        image.save(folder / name, **({"quality": 88} if fmt == "JPEG" else {}))
    return names


def _words(rng: random.Random, words: list[str], chars: int) -> str:
    out, size = [], 0
    while size < chars:
        word = rng.choice(words)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def generate(path: Path, rows: int, images: list[str], seed: int = 0) -> dict[str, Any]:
    """Write ``rows`` JSONL rows of the seed's mix to ``path``; returns facts about the file."""
    from bench.common import VIETNAMESE_WORDS

    words = list(VIETNAMESE_WORDS)
    rng = random.Random(seed)
    # Pre-built text pieces, combined per row: generating 1M rows word by word would take longer than validating.
    pieces = {n: [_words(rng, words, n) for _ in range(257)] for n in (40, 100, 330, 750, 1300)}
    tasks = [name for name, _ in MIX]
    weights = [w for _, w in MIX]
    counts = dict.fromkeys(tasks, 0)
    started = time.perf_counter()
    with path.open("w", encoding="utf-8") as handle:
        for index in range(rows):
            task = rng.choices(tasks, weights)[0]
            counts[task] += 1
            pick = lambda n: rng.choice(pieces[n])  # noqa: E731
            if task == "text_pair":
                row = {"task": task, "query": pick(330), "positive": pick(750) + " " + pick(330)}
                row["score"] = round(rng.random(), 3)
            elif task == "instr":
                row = {"task": task, "query": pick(750), "positive": pick(750)}
            else:
                n_images = 1 if task == "ocr" else rng.randint(1, 5)
                query = {"text": pick(100), "images": rng.sample(images, n_images)}
                if task == "vqa_multi":
                    query["turns"] = [
                        {"role": "user", "content": pick(40)},
                        {"role": "assistant", "content": pick(100)},
                    ]
                row = {"task": task, "query": query, "positive": pick(1300 if task == "ocr" else 330)}
                if rng.random() < 0.3:
                    row["negative"] = pick(330)
            row["id"] = f"{task}-{index}"
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "rows": rows,
        "bytes": path.stat().st_size,
        "bytes_per_row": round(path.stat().st_size / max(1, rows), 1),
        "tasks": counts,
        "generate_seconds": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------------------------------------ measuring
def _status_mb(field: str) -> float:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of this process image, in MB (see :func:`bench.harness.status_bytes`)."""
    from bench.harness import status_bytes

    return round(status_bytes(field) / 2**20, 1)


def _children_peak_mb() -> float:
    # Workers are forked from the measured process (after its exec), so their maxrss is theirs.
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)  # Linux: KiB


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, of its finished worker processes), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measure(step: str, path: Path, workers: int, cache: Path) -> dict[str, Any]:
    """Run one step in this process; returns seconds, rows, and peak RSS of this process and its largest worker."""
    from vipyloqwen_tools.data import prepare_task_datasets, validate_file

    baseline = _status_mb("VmRSS")
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if step in ("validate", "validate-no-images"):
        report = validate_file(path, check_images=step == "validate", num_proc=workers)
        datasets = None
    else:
        datasets, report = prepare_task_datasets(path, cache, num_proc=workers, check_images=True)
        if step == "cached" and not report.cached:
            raise RuntimeError("the cached step found no cache entry: run build first")
    seconds = time.perf_counter() - started
    cpu_main, cpu_workers = (after - before for after, before in zip(_cpu_seconds(), cpu_before, strict=True))
    cpu = cpu_main + cpu_workers
    report.check_invariant()
    return {
        "step": step,
        "workers": workers,
        "seconds": round(seconds, 3),
        "rows": report.lines,
        "good": report.good,
        "rows_per_s": round(report.lines / seconds, 1),
        # CPU seconds of this process and its workers: what the step costs whatever else the machine runs.
        "cpu_seconds": round(cpu, 2),
        "cpu_main_seconds": round(cpu_main, 2),
        "cpu_workers_seconds": round(cpu_workers, 2),
        "rows_per_cpu_s": round(report.lines / cpu, 1) if cpu > 0 else None,
        "datasets_rows": sum(len(d) for d in datasets.values()) if datasets is not None else None,
        "images_verified": report.images,
        "peak_rss_mb": _status_mb("VmHWM"),
        "rss_after_imports_mb": baseline,
        "peak_rss_largest_worker_mb": _children_peak_mb(),
    }


def run_step(step: str, path: Path, workers: int, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    load_before = os.getloadavg()[0]
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", step, str(path), str(workers), str(cache)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["load_1min_before"] = round(load_before, 2)
    result["load_1min_after"] = round(os.getloadavg()[0], 2)
    return result


def bench(rows_list: list[int], workers_list: list[int], work: Path, pool_size: int, out: Path) -> dict[str, Any]:
    from bench.harness import machine_info, write_json

    images_dir = work / "images"
    images = [str(images_dir / name) for name in make_image_pool(images_dir, pool_size)]
    pool_bytes = sum((images_dir / Path(p).name).stat().st_size for p in images)
    results: dict[str, Any] = {
        "benchmark": "data",
        "machine": machine_info(),
        "image_pool": {"files": len(images), "bytes": pool_bytes, "kinds": [list(k) for k in POOL_KINDS]},
        "sizes": {},
    }
    for rows in rows_list:
        path = work / f"train-{rows}.jsonl"
        facts = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else None
        if facts is None or not path.is_file():
            facts = generate(path, rows, images)
            path.with_suffix(".json").write_text(json.dumps(facts))
        runs = []
        for workers in workers_list:
            cache = work / f"cache-{rows}-{workers}"
            shutil.rmtree(cache, ignore_errors=True)
            for step in STEPS:
                runs.append(run_step(step, path, workers, cache))
                print(json.dumps({"rows": rows, **runs[-1]}), flush=True)
            shutil.rmtree(cache, ignore_errors=True)
        results["sizes"][str(rows)] = {"file": facts, "runs": runs}
    results["summary"] = summarise(results)
    write_json(out, results, indent=1)
    return results


# ------------------------------------------------------------------------------------------------ reporting
def _run(size: dict[str, Any], step: str, workers: int) -> dict[str, Any] | None:
    return next((r for r in size["runs"] if r["step"] == step and r["workers"] == workers), None)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Speedups, memory growth, the 1M-row target check and the 11M extrapolation (model stated inside)."""
    sizes = {int(k): v for k, v in results["sizes"].items()}
    largest = max(sizes)
    size = sizes[largest]
    workers = sorted({r["workers"] for r in size["runs"]})
    one, many = workers[0], workers[-1]
    summary: dict[str, Any] = {"rows": largest, "workers": [one, many]}
    for step in ("validate", "validate-no-images", "build"):
        a, b = _run(size, step, one), _run(size, step, many)
        if a and b:
            summary[f"{step}_speedup_{many}_vs_{one}"] = round(a["seconds"] / b["seconds"], 2)
    build = _run(size, "build", many)
    summary["build_seconds_at_largest"] = build["seconds"]
    summary["build_rows_per_s_at_largest"] = build["rows_per_s"]
    if len(sizes) > 1:
        small = sizes[min(sizes)]
        growth = {}
        for step in ("validate", "build"):
            for w in workers:
                a, b = _run(small, step, w), _run(size, step, w)
                if a and b:
                    rss = lambda r: max(r["peak_rss_mb"], r["peak_rss_largest_worker_mb"])  # noqa: E731
                    growth[f"{step}_{w}w"] = round(rss(b) - rss(a), 1)
        summary[f"peak_rss_growth_mb_{min(sizes)}_to_{largest}"] = growth
    # 11M rows at C cores, two models (both scale the measured rows linearly to 11M):
    # - wall: the 1-worker build rate x C x the parallel efficiency measured here (speedup / workers), assumed to
    #   hold at C. Inherits this machine's load.
    # - cpu (Amdahl, for a dedicated node): the N-worker run's CPU seconds, split into the main process (serial:
    #   splitting, merging reports and duplicate hashes, opening the datasets) and the workers (parallel over
    #   ranges and over distinct images), T = main + workers / C. Independent of other load on this machine.
    # Image verification is per distinct file (this pool); a corpus with more distinct images adds
    # images x (seconds per image) / C.
    single = _run(size, "build", one)
    per_worker = single["rows_per_s"] / one
    efficiency = (single["seconds"] / build["seconds"]) / (many / one) if many > one else 1.0
    scale = TARGET_ROWS / build["rows"]
    summary["parallel_efficiency"] = round(efficiency, 3)
    summary["extrapolation_11M"] = {
        str(c): {
            "build_minutes_wall_model": round(TARGET_ROWS / (per_worker * c * min(1.0, efficiency)) / 60, 1),
            "build_minutes_cpu_model": round(
                scale * (build["cpu_main_seconds"] + build["cpu_workers_seconds"] / c) / 60, 1
            ),
        }
        for c in EXTRAPOLATE_CORES
    }
    summary["extrapolation_model"] = (
        "wall: 11M / (1-worker build rows/s x cores x measured parallel efficiency); "
        "cpu: 11M/rows x (main CPU s + worker CPU s / cores) of the N-worker build; image pool as in the bench"
    )
    return summary


def table(results: dict[str, Any]) -> str:
    """The markdown table of docs/training-internals.md (Appendix A)."""
    lines = [
        "| rows | step | workers | seconds | rows/s | CPU s (main + workers) | peak RSS main / largest worker (MB) "
        "| load 1 min |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for rows, size in results["sizes"].items():
        for r in size["runs"]:
            lines.append(
                f"| {int(rows):,} | {r['step']} | {r['workers']} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
                f"{r['cpu_main_seconds']:.1f} + {r['cpu_workers_seconds']:.1f} | "
                f"{r['peak_rss_mb']:.0f} / {r['peak_rss_largest_worker_mb']:.0f} | "
                f"{r['load_1min_before']:.1f} / {r['load_1min_after']:.1f} |"
            )
    summary = results["summary"]
    lines += [
        "",
        "| 11M rows, cores | JSONL -> per-task datasets, min (wall model) | min (CPU / Amdahl model) |",
        "|---:|---:|---:|",
    ]
    for cores, value in summary["extrapolation_11M"].items():
        lines.append(f"| {cores} | {value['build_minutes_wall_model']} | {value['build_minutes_cpu_model']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--measure":
        step, path, workers, cache = argv[1:5]
        print(json.dumps(measure(step, Path(path), int(workers), Path(cache))))
        return None
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--workers", default=f"1,{os.cpu_count()}", help="comma-separated worker counts")
    parser.add_argument("--images", type=int, default=300, help="image files in the pool")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "vipyloqwen-data-bench", help="generated files"
    )
    parser.add_argument("--out", type=Path, help="the results JSON, e.g. bench/results/data-bench.json (to run)")
    parser.add_argument("--table", type=Path, default=None, help="print the markdown table of a results JSON")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(json.loads(args.table.read_text(encoding="utf-8"))))
        return None
    if args.out is None:
        parser.error("give --out FILE for the results (nothing is written into the repository unless asked)")
    rows = [int(x) for x in args.rows.split(",")]
    workers = [int(x) for x in args.workers.split(",")]
    results = bench(rows, workers, args.work, args.images, args.out)
    print(json.dumps(results["summary"], indent=1))
    print(table(results))
    return results


if __name__ == "__main__":
    main()
