"""Index-build benchmark: ``scripts/index.py build`` against ``AutoModel.encode`` alone and the bare forward.

Measured, on this machine:

- **stream** (tiny model, short texts, ``--sizes``): build time and peak RSS (above the pre-call RSS, in-process,
  ``num_workers=0`` so every allocation is in the measured process) at each size, and the same for
  ``AutoModel.encode`` of the same texts; then ``--repeats`` interleaved rounds at the largest size, build vs
  encode, with ``num_workers=0`` (the default for text) and with 2 workers (median ratio of the items/s);
- **sharded** (same items, largest size): ``torchrun --nproc_per_node 2 scripts/index.py build`` into a second
  db, compared with the one-process db: ids, texts, metadata, and vectors bit for bit;
- **sync** (``--sync``, ``--sync-model``, default tiny): a db of ``--sync-items`` short texts, then the same file with
  ``--sync-changed`` of its texts edited, built with ``sync=True`` into a copy of that db, against a full build of
  the file into a fresh db, and a sync of the unchanged file (the fixed cost), interleaved; ratio = median over
  repeats of sync time / full build time of the same repeat;
- **compaction** (``--compaction``, no model: random unit vectors of ``--compaction-dim``): a table of
  ``--compaction-rows`` rows updated ``--compaction-updates`` times (1% of the rows re-staged and upserted, as a
  sync commits them), then ``Store.optimize`` with LanceDB's default version retention and with 0 days: rows,
  fragments, versions, bytes on disk and the median exact-search time before and after;
- **2b-shaped** (``--two-b``): per workload of ``bench/encode_bench.py`` (queries, passages, pages, mixed; images
  written as PNG files the build reads back), the floor (stock forward on the pre-built batches),
  ``AutoModel.encode`` and the index build of the workload into a fresh db, interleaved; ratio = median over
  repeats of time / floor time of the same repeat. The build's fixed costs (new db, commit, id index) are inside
  its time; the model's probe embedding is computed once per loaded model, in the warm-up.

Example::

    python bench/index_bench.py --out bench/results/index-tiny.json
    python bench/index_bench.py --two-b --sizes none --no-sharded --out bench/results/index-2b-shaped.json
    python bench/index_bench.py --sizes none --sync --compaction --out bench/results/index-sync-tiny.json
    python bench/index_bench.py --sizes none --sync --sync-model 2b-shaped --sync-items 1000 --batch-size 16 \
        --out bench/results/index-sync-2b-shaped.json
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import harness
from bench.common import REPO_ROOT, make_workloads, prepare_checkpoint, short_texts
from vipyloqwen_tools.index.build import build
from vipyloqwen_tools.index.search import query_table
from vipyloqwen_tools.index.store import Store, rows


def write_texts(path: Path, texts: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for number, text in enumerate(texts):
            handle.write(json.dumps({"id": f"t{number}", "text": text, "n": number}, ensure_ascii=False) + "\n")
    return path


def write_workload(folder: Path, workload: Any) -> Path:
    """The workload as an items file; images saved as PNG (lossless: the build reads back the same pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "items.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for number, item in enumerate(workload.items):
            paths = []
            for image_number, image in enumerate(item.images):
                name = f"{number}-{image_number}.png"
                image.save(folder / name)
                paths.append(name)
            row = {"id": f"{workload.name}{number}", "text": item.text, "images": paths, "task": workload.task}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _quiet(message: str) -> None:
    pass


def remove_db(db: Path) -> Callable[[str], None]:
    """An :func:`~bench.harness.interleaved` ``before`` hook: ``db`` removed (untimed) before each build runs."""

    def before(name: str) -> None:
        if name == "build":
            shutil.rmtree(db, ignore_errors=True)

    return before


def timed_build(model: Any, items: Path, db: Path, batch_size: int, workers: int | None) -> float:
    """Seconds of an index build of ``items`` into a fresh ``db`` (removing an old one is not timed)."""
    shutil.rmtree(db, ignore_errors=True)
    return harness.timed(lambda: build(model, items, db, batch_size=batch_size, num_workers=workers, log=_quiet))


def timed_encode(model: Any, texts: list[str], batch_size: int, workers: int | None) -> float:
    return harness.timed(lambda: model.encode(text=texts, batch_size=batch_size, num_workers=workers))


def stream_bench(model: Any, workdir: Path, sizes: list[int], batch_size: int, repeats: int) -> dict[str, Any]:
    texts = short_texts(max(sizes))
    warm = write_texts(workdir / "items-warm.jsonl", texts[:64])
    timed_build(model, warm, workdir / "db-warm", batch_size, 0)  # first use of lancedb / pyarrow: not measured
    rows = []
    for n in sizes:
        items = write_texts(workdir / f"items-{n}.jsonl", texts[:n])
        harness.release_memory()
        with harness.PeakRSS() as peak:
            seconds = timed_build(model, items, workdir / f"db-{n}", batch_size, 0)
        harness.release_memory()
        with harness.PeakRSS() as encode_peak:
            encode_seconds = timed_encode(model, texts[:n], batch_size, 0)
        rows.append(
            {
                "items": n,
                "build_seconds": seconds,
                "build_items_per_s": n / seconds,
                "build_peak_rss_mb": round(peak.delta_mb, 1),
                "encode_seconds": encode_seconds,
                "encode_peak_rss_mb": round(encode_peak.delta_mb, 1),
                "db_bytes": sum(f.stat().st_size for f in (workdir / f"db-{n}").rglob("*") if f.is_file()),
            }
        )
    n = max(sizes)
    items = workdir / f"items-{n}.jsonl"
    ratios: dict[str, Any] = {}
    # Default workers are 0 for text-only items; 2 shows what handing text batches between processes costs.
    db = workdir / "db-timed"
    for label, workers in (("num_workers=0", 0), ("num_workers=2", 2)):
        runs = {
            "build": lambda w=workers: build(model, items, db, batch_size=batch_size, num_workers=w, log=_quiet),
            "encode": lambda w=workers: model.encode(text=texts[:n], batch_size=batch_size, num_workers=w),
        }
        times = harness.interleaved(runs, repeats, before=remove_db(db))
        ratios[label] = {
            "build_seconds_all": times["build"],
            "encode_seconds_all": times["encode"],
            "build_items_per_s": n / statistics.median(times["build"]),
            "encode_items_per_s": n / statistics.median(times["encode"]),
            "encode_over_build_items_per_s": harness.median_ratio(times["build"], times["encode"]),
        }
    return {"batch_size": batch_size, "sizes": sizes, "rows": rows, "throughput": ratios}


def edit(text: str) -> str:
    """Another text of about the same length (the words in reverse order), so the edited items cost the model what
    the originals did."""
    words = text.split()
    reversed_text = " ".join(reversed(words))
    return reversed_text if reversed_text != text else f"{text} {words[0]}"


def sync_bench(model: Any, workdir: Path, n: int, share: float, batch_size: int, repeats: int) -> dict[str, Any]:
    """A sync of ``n`` items of which ``share`` changed, against a full build of the same file (see the docstring)."""
    texts = short_texts(n)
    base = write_texts(workdir / "sync-base.jsonl", texts)
    every = round(1 / share)
    edited = write_texts(workdir / "sync-edited.jsonl", [edit(t) if i % every == 0 else t for i, t in enumerate(texts)])
    reference, db = workdir / "sync-reference", workdir / "sync-db"
    shutil.rmtree(reference, ignore_errors=True)
    build(model, base, reference, batch_size=batch_size, num_workers=0, log=_quiet)

    def before(name: str) -> None:  # untimed: the db a run starts from
        shutil.rmtree(db, ignore_errors=True)
        if name != "full build":
            shutil.copytree(reference, db)

    last: dict[str, Any] = {}

    def run(items: Path, sync: bool) -> None:
        last[str(items)] = build(model, items, db, batch_size=batch_size, num_workers=0, sync=sync, log=_quiet)

    runs = {
        "full build": lambda: run(base, False),
        "sync, changed": lambda: run(edited, True),
        "sync, unchanged": lambda: run(base, True),
    }
    for name in runs:  # warm-up: first use of each path
        before(name)
        runs[name]()
    times = harness.interleaved(runs, repeats, before=before)
    changed = last[str(edited)]
    return {
        "items": n,
        "changed_share": share,
        "batch_size": batch_size,
        "repeats": repeats,
        "seconds_all": times,
        "seconds": {name: statistics.median(values) for name, values in times.items()},
        "sync_over_full": harness.median_ratio(times["sync, changed"], times["full build"]),
        "unchanged_sync_over_full": harness.median_ratio(times["sync, unchanged"], times["full build"]),
        "sync_counts": {key: getattr(changed, key) for key in ("lines", "new", "changed", "unchanged", "embedded")},
    }


def compaction_bench(workdir: Path, n: int, dim: int, updates: int, queries: int = 20) -> dict[str, Any]:
    """What many small upsert commits leave behind, and what ``Store.optimize`` makes of it (no model)."""
    rng = np.random.default_rng(0)

    def unit(count: int) -> np.ndarray:
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    class Row:
        def __init__(self, number: int, version: int) -> None:
            self.id, self.text, self.images, self.task = f"r{number}", f"row {number} v{version}", [], None
            self.metadata = {"n": number}
            self.content_hash = self.fingerprint = f"{number}-{version}"

    db = workdir / "compaction-db"
    shutil.rmtree(db, ignore_errors=True)
    store = Store.create_or_open(db, "random", dim, unit(1)[0].tolist())
    store.stage(rows(dim, [Row(i, 0) for i in range(n)], unit(n)), "w0", run=0)
    store.commit_staged()
    store.ensure_indexes()
    probes = [torch.from_numpy(v) for v in unit(queries)]

    def search_seconds() -> float:
        return statistics.median(harness.timed(lambda q=q: query_table(store, q, k=10, exact=True)) for q in probes)

    step = max(1, n // 100)
    update_seconds = []
    for update in range(1, updates + 1):
        chosen = rng.choice(n, size=step, replace=False)
        store.stage(rows(dim, [Row(int(i), update) for i in chosen], unit(step)), "w", run=update)
        update_seconds.append(harness.timed(store.commit_staged))
    measured: dict[str, Any] = {"after_updates": {**store.shape(), "exact_search_seconds": search_seconds()}}
    for label, days in (("optimize (versions kept 7 days)", None), ("optimize --keep-versions-days 0", 0)):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="optimize\\(cleanup_older_than=0\\)")
            seconds = harness.timed(lambda d=days: store.optimize(d))
        measured[label] = {**store.shape(), "exact_search_seconds": search_seconds(), "optimize_seconds": seconds}
    return {
        "rows": n,
        "dim": dim,
        "updates": updates,
        "rows_per_update": step,
        "upsert_commit_seconds_median": statistics.median(update_seconds),
        "shapes": measured,
    }


def db_content(db: Path) -> dict[str, Any]:
    data = Store.open(db).table.to_arrow().sort_by("id")
    return {
        "ids": data.column("id").to_pylist(),
        "texts": data.column("text").to_pylist(),
        "metadata": [json.loads(m) for m in data.column("metadata").to_pylist()],
        "vectors": np.stack(data.column("vector").to_numpy(zero_copy_only=False)),
    }


def sharded_bench(checkpoint: Path, workdir: Path, n: int, batch_size: int, procs: int) -> dict[str, Any]:
    items = workdir / f"items-{n}.jsonl"
    reference_db = workdir / f"db-{n}"
    db = workdir / f"db-{n}-torchrun"
    shutil.rmtree(db, ignore_errors=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", str(procs), str(REPO_ROOT / "scripts" / "index.py"), "build"]
    command += ["--model", str(checkpoint), "--items", str(items), "--db", str(db), "--batch-size", str(batch_size)]
    command += ["--num-workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"torchrun build failed:\n{done.stderr[-4000:]}")
    one, many = db_content(reference_db), db_content(db)
    same_ids = one["ids"] == many["ids"]
    equal_rows = int((one["vectors"] == many["vectors"]).all(axis=1).sum()) if same_ids else 0
    return {
        "processes": procs,
        "items": n,
        "seconds_including_startup": seconds,
        "ids_identical": same_ids,
        "rows": len(many["ids"]),
        "texts_and_metadata_identical": one["texts"] == many["texts"] and one["metadata"] == many["metadata"],
        "vectors_bit_identical_rows": equal_rows,
        "vectors_max_abs_diff": float(np.abs(one["vectors"] - many["vectors"]).max()) if same_ids else None,
        "summary": json.loads(done.stdout.strip().splitlines()[-1]),
    }


def two_b_bench(
    workdir: Path, batch_size: int, repeats: int, size: str, only: list[str] | None = None
) -> dict[str, Any]:
    from bench.encode_bench import SIZES_2B, Bench

    checkpoint = prepare_checkpoint("2b-shaped", workdir)
    bench = Bench(checkpoint, batch_size)
    sizes = {name: n for name, n in SIZES_2B[size].items() if not only or name in only}
    workloads = make_workloads(bench.processor.tokenizer, sizes)
    results: dict[str, Any] = {"size": size, "batch_size": batch_size, "repeats": repeats, "workloads": {}}
    # The build's fixed cost (create the table, commit, indexes, manifest) beside the per-item cost: a 1-item
    # build minus the same item's encode. It does not grow with the corpus, so small workloads overstate it.
    one = make_workloads(bench.processor.tokenizer, {"queries": 1})[0]
    one_items = write_workload(workdir / "2b-one", one)
    timed_build(bench.auto, one_items, workdir / "2b-db", batch_size, None)  # warm-up
    fixed = [timed_build(bench.auto, one_items, workdir / "2b-db", batch_size, None) for _ in range(3)]
    encode_one = [harness.timed(lambda: bench.run_auto(one)) for _ in range(3)]
    results["build_fixed_seconds"] = statistics.median(fixed) - statistics.median(encode_one)
    for workload in workloads:
        print(f"2b-shaped {workload.name}: {len(workload.items)} items ...", flush=True)
        items = write_workload(workdir / f"2b-{workload.name}", workload)
        batches = bench.floor_batches(workload)
        n = len(workload.items)
        runs = {
            "floor": lambda b=batches, n=n: bench.run_floor(b, n),
            "auto": lambda w=workload: bench.run_auto(w),
            # timed with the removal of the previous db, as the build of a fresh index is used
            "index": lambda i=items: timed_build(bench.auto, i, workdir / "2b-db", batch_size, None),
        }
        for run in runs.values():  # warm-up (and the probe embedding of the loaded model)
            run()
        times = harness.interleaved(runs, repeats)
        entry = {}
        for name, values in times.items():
            entry[name] = {
                "seconds_all": values,
                "items_per_s": n / statistics.median(values),
                "ratio_to_floor": harness.median_ratio(values, times["floor"]),
            }
        results["workloads"][workload.name] = {"items": n, "paths": entry}
    return results


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    stream = results.get("stream")
    if stream:
        first, last = stream["rows"][0], stream["rows"][-1]
        growth = last["build_peak_rss_mb"] - first["build_peak_rss_mb"]
        checks.append(
            harness.target(
                f"index build peak RSS flat: {last['items']} vs {first['items']} short texts (tiny)",
                growth,
                "<= 50 MB",
                growth <= 50,
            )
        )
        for label, entry in stream["throughput"].items():
            ratio = entry["encode_over_build_items_per_s"]
            default = label == "num_workers=0"  # the default for text-only items
            checks.append(
                harness.target(
                    (
                        f"AutoModel.encode items/s / index build items/s, {last['items']} texts ({label}"
                        + (", the default for text)" if default else ", report: workers start per window)")
                    ),
                    ratio,
                    "<= 1.2" if default else "report",
                    ratio <= 1.2 if default else None,
                )
            )
    sharded = results.get("sharded")
    if sharded:
        same = sharded["ids_identical"] and sharded["texts_and_metadata_identical"]
        same = same and sharded["vectors_bit_identical_rows"] == sharded["rows"]
        checks.append(
            harness.target(
                (
                    f"{sharded['processes']}-process torchrun build == 1-process build (ids, texts, metadata, "
                    "vectors bit for bit)"
                ),
                float(same),
                "== 1",
                same,
            )
        )
    sync = results.get("sync")
    if sync:
        share = sync["changed_share"]
        checks.append(
            harness.target(
                f"sync of {sync['items']} items, {share:.0%} changed: time / full build ({sync.get('model', 'tiny')})",
                sync["sync_over_full"],
                f"about {share:.0%} (report)",
                None,
            )
        )
        checks.append(
            harness.target(
                f"sync of {sync['items']} unchanged items: time / full build (the fixed cost)",
                sync["unchanged_sync_over_full"],
                "report",
                None,
            )
        )
        counts = sync["sync_counts"]
        right = counts["embedded"] == round(sync["items"] * share) and counts["unchanged"] == counts["lines"] - counts[
            "embedded"
        ]
        checks.append(harness.target("sync embeds exactly the changed items", float(right), "== 1", right))
    compaction = results.get("compaction")
    if compaction:
        shapes = compaction["shapes"]
        after, done = shapes["after_updates"], shapes["optimize --keep-versions-days 0"]
        checks.append(
            harness.target(
                f"optimize after {compaction['updates']} updates: fragments {after['fragments']} -> "
                f"{done['fragments']}, versions {after['versions']} -> {done['versions']}: bytes after / before",
                done["disk_bytes"] / after["disk_bytes"],
                "report",
                None,
            )
        )
    two_b = results.get("two_b")
    if two_b:
        for name, workload in two_b["workloads"].items():
            for path, label in (("auto", "AutoModel.encode"), ("index", "index build")):
                ratio = workload["paths"][path]["ratio_to_floor"]
                checks.append(
                    harness.target(f"2b-shaped {label} time / floor ({name})", ratio, "<= 1.05", ratio <= 1.05)
                )
    return checks


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = harness.bench_parser(__doc__)
    parser.add_argument("--sizes", default="1000,10000", help="stream sizes (short texts); 'none' skips")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the stream (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sharded", action="store_true", help="skip the torchrun build")
    parser.add_argument("--procs", type=int, default=2, help="torchrun processes (default 2)")
    parser.add_argument("--sync", action="store_true", help="time a sync against a full build")
    parser.add_argument("--sync-model", default="tiny", help="tiny (default), 2b-shaped or a checkpoint folder")
    parser.add_argument("--sync-items", type=int, default=10_000, help="items of the sync (default 10,000)")
    parser.add_argument("--sync-changed", type=float, default=0.01, help="share of them edited (default 0.01)")
    parser.add_argument("--compaction", action="store_true", help="measure optimize after many upserts (no model)")
    parser.add_argument("--compaction-rows", type=int, default=10_000)
    parser.add_argument("--compaction-dim", type=int, default=1024, help="vector width (default 1024, the 2B's)")
    parser.add_argument("--compaction-updates", type=int, default=50, help="upserts of 1%% of the rows (default 50)")
    parser.add_argument("--two-b", action="store_true", help="also time the 2b-shaped workloads")
    parser.add_argument("--two-b-size", default="quick", choices=("smoke", "quick", "full"))
    parser.add_argument(
        "--two-b-workloads", help="comma-separated subset of the 2b-shaped workloads (queries,passages,pages,mixed)"
    )
    parser.add_argument("--two-b-batch-size", type=int, default=8)
    args = harness.parse_run_arguments(parser, argv)
    # encode's workers fork; lancedb (imported by the builder) warns on every fork of the process.
    warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
    harness.set_threads(args.threads)
    sizes = [] if args.sizes == "none" else [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    results: dict[str, Any] = {
        **harness.results_header("index"),
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        "memory_method": harness.memory_method(),
    }
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-index-bench-") as tmp:
        workdir = Path(tmp)
        if args.sync:
            from transformers import AutoModel

            checkpoint = prepare_checkpoint(args.sync_model, workdir)
            model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, dtype=torch.float32).eval()
            print(f"sync: {args.sync_items} items, {args.sync_changed:.0%} changed ...", flush=True)
            results["sync"] = sync_bench(
                model, workdir, args.sync_items, args.sync_changed, args.batch_size, args.repeats
            )
            results["sync"]["model"] = args.sync_model
            del model
            harness.release_memory()
        if args.compaction:
            print(f"compaction: {args.compaction_rows} rows, {args.compaction_updates} updates ...", flush=True)
            results["compaction"] = compaction_bench(
                workdir, args.compaction_rows, args.compaction_dim, args.compaction_updates
            )
        if sizes:
            from transformers import AutoModel

            checkpoint = prepare_checkpoint("tiny", workdir)
            model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, dtype=torch.float32).eval()
            model.encode(text=short_texts(64), batch_size=args.batch_size, num_workers=0)  # warm-up
            print(f"stream: {sizes} short texts ...", flush=True)
            results["stream"] = stream_bench(model, workdir, sizes, args.batch_size, args.repeats)
            if not args.no_sharded:
                print(f"sharded: torchrun x{args.procs} ...", flush=True)
                results["sharded"] = sharded_bench(checkpoint, workdir, max(sizes), args.batch_size, args.procs)
            del model
            harness.release_memory()
        if args.two_b:
            only = args.two_b_workloads.split(",") if args.two_b_workloads else None
            results["two_b"] = two_b_bench(workdir, args.two_b_batch_size, args.repeats, args.two_b_size, only)
    results["targets"] = targets(results)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    return harness.finish(results, args.out)


if __name__ == "__main__":
    main()
