"""Build (or extend) an index: items JSONL -> embeddings -> the LanceDB store, resumable and sharded over ranks.

Flow (every rank, ``torchrun --nproc_per_node N`` or a single process):

1. every rank reads the whole items file (parsing is cheap) and skips ids already in the table or in a staged
   shard file: an interrupted build resumes where its last shard file ended, an append adds only new ids;
2. the new items are cut into windows of ``commit_every`` items in file order; a window is batched exactly as
   ``AutoModel.encode`` batches (by length), and rank ``r`` embeds the batches ``r, r + N, r + 2N, ...``; so
   every item is embedded once, in the same batch as in a one-process build (identical vectors);
3. the batches are prepared (images opened and resized, text tokenised) by ``num_workers`` workers while the
   model runs (:mod:`prefetch_vipyloqwen`); an item whose image cannot be read is rejected alone;
4. each rank writes its part of a window as one shard file (atomic rename); after a barrier, rank 0 alone
   commits the shard files into the table (insert where the id is absent) and (re)builds the indexes.

Lines that break the schema, missing images and repeated ids go to the rejects file with their line number.
Every line is counted once: ``lines = new + already stored + rejected``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source
from vipyloqwen_tools.index.items import IndexItem, read_items
from vipyloqwen_tools.index.store import DEFAULT_INDEX_MIN_ROWS, PROBE_TEXT, Store, rows

DEFAULT_COMMIT_EVERY = 1024


@dataclass
class BuildStats:
    """Counts of one build; ``lines == new + already_stored + rejected``."""

    lines: int = 0
    new: int = 0
    already_stored: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rows_in_db: int = 0


def load_model(model: str, device: str | None = None):
    """``AutoModel.from_pretrained(model, trust_remote_code=True)`` on ``device`` (fp32 on CPU, bf16 on CUDA)."""
    from transformers import AutoModel

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        loaded = AutoModel.from_pretrained(model, trust_remote_code=True, dtype=dtype)
    except OSError as error:  # transformers' answer for a repo that is not there / a folder without weights
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelSourceError(f"--model {model}: cannot load it as a checkpoint: {first}") from error
    return loaded.to(device).eval()


def probe_vector(model: Any) -> list[float]:
    """The model's fingerprint: the embedding of :data:`PROBE_TEXT` (computed once per loaded model)."""
    cached = getattr(model, "_vipyloqwen_index_probe", None)
    if cached is None:
        cached = model.encode(text=PROBE_TEXT, num_workers=0)[0].tolist()
        model._vipyloqwen_index_probe = cached
    return cached


class _Dist:
    """The launcher's process group (torchrun's env://), or a one-process stand-in."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started = False
        if self.world > 1 and not torch.distributed.is_initialized():
            # gloo: CPU tensors only (counts and barriers), whatever device the model runs on.
            import datetime as dt

            torch.distributed.init_process_group("gloo", timeout=dt.timedelta(hours=6))
            self.started = True

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def total(self, stats: BuildStats, load_rejects: int) -> BuildStats:
        """Totals over ranks: lines, already-stored ids and schema rejects are counted alike on every rank (each
        reads every line); new items and items whose images failed to load are summed."""
        counts = torch.tensor([stats.new, load_rejects], dtype=torch.float64)
        if self.world > 1:
            torch.distributed.all_reduce(counts)
        new, loaded_rejects = (int(v) for v in counts.tolist())
        return BuildStats(stats.lines, new, stats.already_stored, stats.rejected + loaded_rejects, stats.seconds)

    def close(self) -> None:
        if self.started:
            torch.distributed.destroy_process_group()


def _windows(
    source: Iterator[tuple[int, IndexItem | None, str | None, str | None]],
    done: set[str],
    size: int,
    stats: BuildStats,
    rejects: Any,
    check: Any,
) -> Iterator[list[IndexItem]]:
    window: list[IndexItem] = []
    for line, item, error, item_id in source:
        stats.lines += 1
        if item is not None and item.id not in done:
            error = check(item)
            if error is not None:
                item = None
        if item is None:
            rejects(line, item_id, error)
        elif item.id in done:
            stats.already_stored += 1
        else:
            window.append(item)
            if len(window) == size:
                yield window
                window = []
    if window:
        yield window


def _message(processor: Any, item: IndexItem) -> list[dict]:
    return processor.build_messages(text=[item.text], images=[item.images or None], task=item.task)[0]


def _item_error(processor: Any, item: IndexItem) -> str | None:
    """Why encode's length estimate would refuse the item (a malformed item, an image size Qwen2-VL cannot take:
    checked from the file header, no decoding), or None. Every rank checks alike, so the windows stay equal."""
    from images_vipyloqwen import check_size, image_size
    from items_vipyloqwen import split_item

    where = f"line {item.line}"
    try:
        split_item(_message(processor, item), where)
        for number, path in enumerate(item.images, start=1):
            size = image_size(path)
            if size is not None:
                check_size(size, f"{where}, image {number}")
    except (ValueError, TypeError) as error:
        return str(error)
    return None


def build(
    model: str | Any,
    items: str | Path,
    db: str | Path,
    batch_size: int = 8,
    num_workers: int | None = None,
    task: str | None = None,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    rejects_path: str | Path | None = None,
    max_image_tokens: int | None = None,
    index_min_rows: int = DEFAULT_INDEX_MIN_ROWS,
    device: str | None = None,
    worker_type: str = "auto",
    log: Any = None,
) -> BuildStats:
    """Embed the items of ``items`` into the db folder ``db``; see the module docstring. Returns the totals.

    ``model`` is a checkpoint path or Hub id (loaded here, on ``device``), or an already loaded viPyloQwen
    ``AutoModel`` (its ``config._name_or_path`` names it in the db's manifest).

    Example::

        >>> build("erax-ai/viPyloQwen", "corpus.jsonl", "out/corpus-index", batch_size=16)
        BuildStats(lines=1000, new=998, already_stored=0, rejected=2, ...)
    """
    from prefetch_vipyloqwen import prefetch, resolve_num_workers

    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(commit_every, int) or commit_every <= 0:
        raise ValueError(f"commit_every must be a positive integer, got {commit_every!r}")
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.perf_counter()
    if not Path(items).is_file():
        raise FileNotFoundError(f"items file not found: {items}")
    Store.check_target(db)
    dist = _Dist()
    try:
        if dist.world > 1 and device is None and torch.cuda.is_available():
            device = f"cuda:{dist.local_rank}"
        if isinstance(model, (str, os.PathLike)):
            model = check_model_source(model)
            embedder = load_model(model, device)
        else:
            embedder, model = model, str(model.config._name_or_path or type(model).__name__)
        processor = embedder.processor
        probe = probe_vector(embedder)
        dim = embedder.config.embed_dim
        db = Path(db)
        rejects_path = Path(rejects_path) if rejects_path else db / "rejects.jsonl"
        if dist.rank == 0:
            store = Store.create_or_open(db, model, dim, probe)
            store.clear_partial_files()
            for stale in store.staging.glob("rejects-*.jsonl") if store.staging.is_dir() else []:
                stale.unlink()
        dist.barrier()
        if dist.rank != 0:
            store = Store.open(db)
            store.check_model(model, dim, probe)
        done = store.table_ids() | store.staged_ids()
        dist.barrier()  # every rank has read the same state before any rank stages new rows

        stats = BuildStats()
        store.staging.mkdir(parents=True, exist_ok=True)
        rank_rejects = (store.staging / f"rejects-r{dist.rank}.jsonl").open("w", encoding="utf-8")

        def write_reject(line: int, item_id: str | None, error: str) -> None:
            rank_rejects.write(json.dumps({"line": line, "id": item_id, "error": error}, ensure_ascii=False) + "\n")

        def schema_reject(line: int, item_id: str | None, error: str) -> None:
            # Every rank reads every line and counts these alike; rank 0 writes them.
            stats.rejected += 1
            if dist.rank == 0:
                write_reject(line, item_id, error)

        images_kwargs = {"max_image_tokens": max_image_tokens} if max_image_tokens else {}

        def prepare(job: tuple[list[IndexItem], list[list[dict]], list[int]]):
            """Model inputs for one batch; an item that fails to load is rejected alone."""
            window, messages, chunk = job
            kept, canonical, failed = [], [], []
            for position in chunk:
                try:
                    canonical.append(
                        processor.canonicalize(
                            messages[position], position, max_image_tokens, where=f"line {window[position].line}"
                        )
                    )
                    kept.append(position)
                except (ValueError, TypeError, OSError) as error:
                    failed.append((position, str(error)))
            if not kept:
                return kept, None, failed
            batch = processor.apply_chat_template(
                canonical,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"text_kwargs": {"padding": True, "truncation": True}, "images_kwargs": images_kwargs},
            )
            return kept, {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, failed

        load_rejects = 0
        source = read_items(items, default_task=task)
        check = functools.partial(_item_error, processor)
        for window in _windows(source, done, commit_every, stats, schema_reject, check):
            messages = [_message(processor, item) for item in window]
            chunks = embedder._batches(embedder._item_lengths(messages, max_image_tokens, None), batch_size)
            mine = chunks[dist.rank :: dist.world]
            jobs = [(window, messages, chunk) for chunk in mine]
            workers = resolve_num_workers(num_workers, len(jobs), any(item.images for item in window))
            done_items: list[IndexItem] = []
            vectors: list[torch.Tensor] = []
            with warnings.catch_warnings():
                # lancedb warns on every fork; no lancedb call is in flight while the workers start (shard files
                # are written with pyarrow, the table is touched only before and after this loop).
                warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
                batches = prefetch(prepare, jobs, workers, worker_type, device=next(embedder.parameters()).device)
                for kept, batch, failed in batches:
                    for position, error in failed:
                        load_rejects += 1
                        write_reject(window[position].line, window[position].id, error)
                    if batch is not None:
                        vectors.append(embedder.embed_batch(batch).float().cpu())
                        done_items.extend(window[p] for p in kept)
            if done_items:
                matrix = torch.cat(vectors).numpy().astype(np.float32, copy=False)
                store.stage(rows(dim, done_items, matrix), f"w{window[0].line:09d}-r{dist.rank}")
                stats.new += len(done_items)
            log(
                f"[index] rank {dist.rank}/{dist.world}: lines up to {window[-1].line}: {stats.new} new items staged,"
                f" {stats.rejected + load_rejects} rejected"
            )
        rank_rejects.close()
        stats.seconds = time.perf_counter() - started
        dist.barrier()  # every shard file is written
        total = dist.total(stats, load_rejects)
        if dist.rank == 0:
            added = store.commit_staged()
            if added != total.new:
                log(f"[index] note: {total.new} rows staged by this run, {added} added (others were staged earlier)")
            rejected = []
            for path in sorted(store.staging.glob("rejects-*.jsonl")):
                rejected += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
                path.unlink()
            rejected.sort(key=lambda entry: entry["line"])
            rejects_path.parent.mkdir(parents=True, exist_ok=True)
            rejects_path.write_text(
                "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in rejected), encoding="utf-8"
            )
            index = store.ensure_indexes(index_min_rows)
            store.manifest["last_build"] = {**asdict(total), "rejects": str(rejects_path), "world_size": dist.world}
            store.manifest["rows"] = index["rows"]
            store.manifest["vector_index"] = index["vector_index"]
            store.write_manifest()
            total.rows_in_db = index["rows"]
            total.seconds = time.perf_counter() - started
            log(
                f"[index] {total.lines} lines = {total.new} new + {total.already_stored} already stored + "
                f"{total.rejected} rejected ({rejects_path}); {total.rows_in_db} rows in {db}; "
                f"{total.seconds:.1f}s on {dist.world} process(es)"
            )
        dist.barrier()
        return total
    finally:
        dist.close()
