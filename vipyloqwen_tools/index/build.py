"""Build or update an index: items (a JSONL file or a folder) -> embeddings -> the LanceDB store, resumable and
sharded over ranks.

Flow (every rank, ``torchrun --nproc_per_node N`` or a single process):

1. every rank reads every item (parsing is cheap), computes its fingerprint (:mod:`.fingerprint`) and compares it
   with the stored row and with any row staged by an interrupted build: unchanged ids are skipped, ids staged
   with the same fingerprint are not embedded again (resume), ids whose metadata alone changed keep their stored
   vector (rank 0 re-stages the row), and new or changed ids are embedded;
2. the items to embed are cut into windows of ``commit_every`` items in file order; a window is batched exactly as
   ``AutoModel.encode`` batches (by length), and rank ``r`` embeds the batches ``r, r + N, r + 2N, ...``; so
   every item is embedded once, in the same batch as in a one-process build (identical vectors);
3. the batches are prepared (images opened and resized, PDF pages rendered, text tokenised) by ``num_workers``
   workers while the model runs (:mod:`prefetch_vipyloqwen`); an item whose image cannot be read is rejected alone;
4. each rank writes its part of a window as one shard file (atomic rename); after a barrier, rank 0 alone
   commits the shard files into the table (one upsert commit per file), deletes with ``sync`` the ids the items no
   longer name (one commit), and (re)builds the indexes.

Lines that break the schema, missing images and repeated ids go to the rejects file with their line number.
Every line is counted once: ``lines = new + changed + unchanged + rejected``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from processing_vipyloqwen import length_batches
from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source
from vipyloqwen_tools.index.fingerprint import content_hash, fingerprint, packed
from vipyloqwen_tools.index.folder import read_folder
from vipyloqwen_tools.index.items import IndexItem, read_items
from vipyloqwen_tools.index.launcher import LauncherGroup
from vipyloqwen_tools.index.pdf import max_pixels, placeholder, render_page, split_page_ref
from vipyloqwen_tools.index.store import (
    DEFAULT_INDEX_MIN_ROWS,
    DEFAULT_MAX_DELETE,
    PROBE_TEXT,
    Store,
    StoreError,
    rows,
)

DEFAULT_COMMIT_EVERY = 1024


class SyncRefused(StoreError):
    """``sync`` would delete more than ``max_delete`` of the rows: nothing was committed or deleted."""


@dataclass
class BuildStats:
    """Counts of one build; ``lines == new + changed + unchanged + rejected`` (new, changed, unchanged: compared with
    the table as the build found it).

    How the new and changed rows were made: ``embedded`` by the model in this build, ``reused`` (only the metadata
    changed: the stored vector is kept), ``resumed`` (embedded and staged by an interrupted earlier build).
    ``deleted``: rows removed by ``sync`` because the items no longer name their ids.
    """

    lines: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: int = 0
    embedded: int = 0
    reused: int = 0
    resumed: int = 0
    deleted: int = 0
    seconds: float = 0.0
    rows_in_db: int = 0


def sync_check(doomed: int, rows_now: int, max_delete: float, force: bool) -> None:
    """Refuse (:class:`SyncRefused`) to delete ``doomed`` of ``rows_now`` rows when that share passes
    ``max_delete``, unless ``force``."""
    if not 0 <= max_delete <= 1:
        raise ValueError(f"max_delete must be a share between 0 and 1, got {max_delete!r}")
    if force or doomed == 0 or doomed <= max_delete * rows_now:
        return
    raise SyncRefused(
        f"--sync would delete {doomed} of the {rows_now} rows ({doomed / rows_now:.0%}), above --max-delete "
        f"{max_delete:g}: is the items file complete? Nothing was committed or deleted (rows embedded by this "
        "build stay staged for the next one). To delete them, rerun with --force (or a higher --max-delete)"
    )


def classify(item: IndexItem, stored: dict[str, bytes], staged: dict[str, str | None]) -> tuple[str, str]:
    """``(kind, action)`` of an item with its fingerprint set; ``stored`` as :meth:`Store.fingerprints` gives it.
    kind: ``new`` / ``changed`` / ``unchanged`` (against the table); action: ``skip``, ``resume`` (a staged row of an
    interrupted build has this content), ``reuse`` (the stored vector is right: only the metadata differs, or a
    stale staged row must be overwritten) or ``embed``."""
    entry, mine = stored.get(item.id), packed(item.content_hash, item.fingerprint)
    half = len(mine) // 2
    kind = "new" if entry is None else "unchanged" if entry and entry[half:] == mine[half:] else "changed"
    vector_stored = bool(entry) and entry[:half] == mine[:half]
    if item.id in staged:
        if staged[item.id] == item.fingerprint:
            return kind, "skip" if kind == "unchanged" else "resume"
        return kind, "reuse" if vector_stored else "embed"  # this build's row is committed after the stale one
    if kind == "unchanged":
        return kind, "skip"
    return kind, "reuse" if vector_stored else "embed"


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


class _Dist(LauncherGroup):
    """The launcher's process group, with the build's totals over ranks."""

    def total(self, stats: BuildStats, embedded: list[int]) -> BuildStats:
        """Totals over ranks: every rank reads every line, so lines, rejects of the schema, unchanged items and the
        items that need no model are counted alike on each; ``embedded`` (new, changed, items whose image failed to
        load) is this rank's share and is summed."""
        counts = torch.tensor(embedded, dtype=torch.float64)
        if self.world > 1:
            torch.distributed.all_reduce(counts)
        new, changed, load_rejects = (int(v) for v in counts.tolist())
        total = BuildStats(**asdict(stats))
        total.new, total.changed = stats.new + new, stats.changed + changed
        total.rejected, total.embedded = stats.rejected + load_rejects, new + changed
        return total


@dataclass
class _Window:
    """Items to embed and items whose stored vector is kept, in file order."""

    embed: list[IndexItem]
    reuse: list[IndexItem]

    @property
    def first_line(self) -> int:
        return min(item.line for item in self.embed + self.reuse)

    @property
    def last_line(self) -> int:
        return max(item.line for item in self.embed + self.reuse)


def _windows(
    source: Iterator[tuple[int | None, IndexItem | None, str | None, str | None]],
    stored: dict[str, bytes],
    staged: dict[str, str | None],
    size: int,
    stats: BuildStats,
    rejects: Any,
    identify: Any,
    check: Any,
) -> Iterator[_Window]:
    """Windows of ``size`` items that need work; counts (alike on every rank) the lines, rejects, unchanged items
    and the items that need no model; the embedded ones are counted when embedded. ``identify(item)`` sets the
    item's fingerprint; ``check(item)`` (what the model would refuse) runs only for the items to embed: an unchanged
    row passed it when it was embedded."""
    window = _Window([], [])
    for line, item, error, item_id in source:
        stats.lines += 1
        if item is not None:
            error = identify(item)
        if item is not None and error is None:
            kind, action = classify(item, stored, staged)
            if action == "embed":
                error = check(item)
        if item is None or error is not None:
            rejects(line, item_id, error)
            continue
        if action == "embed":
            window.embed.append(item)  # counted once embedded: a load failure makes it a reject instead
        else:
            setattr(stats, kind, getattr(stats, kind) + 1)
            if action == "resume":
                stats.resumed += 1
            elif action == "reuse":
                stats.reused += 1
                window.reuse.append(item)
        if len(window.embed) + len(window.reuse) == size:
            yield window
            window = _Window([], [])
    if window.embed or window.reuse:
        yield window


def _noting_ids(source: Iterator[tuple], ids: set[str]) -> Iterator[tuple]:
    for entry in source:
        if entry[3] is not None:
            ids.add(entry[3])
        yield entry


def _images(item: IndexItem, pixels: int, render: bool = False) -> list[Any]:
    """The item's images for the processor: files as paths; PDF pages rendered (``render``) or, for the length
    estimate and the size checks, as zero-byte stand-ins of the rendered size."""
    out: list[Any] = []
    for image in item.images:
        page = split_page_ref(image)
        out.append(image if page is None else (render_page if render else placeholder)(page[0], page[1], pixels))
    return out


def _message(processor: Any, item: IndexItem, pixels: int, render: bool = False) -> list[dict]:
    images = _images(item, pixels, render)
    return processor.build_messages(text=[item.text], images=[images or None], task=item.task)[0]


def _identify(image_tokens: int, item: IndexItem) -> str | None:
    """Set the item's content hash and fingerprint (:mod:`.fingerprint`); an image that cannot be read is an error."""
    try:
        item.content_hash = content_hash(item.text, item.task, item.images, image_tokens)
    except OSError as error:
        where = f"line {item.line}" if item.line is not None else repr(item.id)
        return f"{where}: cannot read {error.filename or 'an image'}: {error.strerror or error}"
    item.fingerprint = fingerprint(item.content_hash, item.metadata)
    return None


def _item_error(processor: Any, image_tokens: int, item: IndexItem) -> str | None:
    """Why encode's length estimate would refuse the item (a malformed item, an image size Qwen2-VL cannot take:
    checked from the file header or the PDF page size, no decoding), or None. Every rank checks alike, so the
    windows stay equal."""
    from images_vipyloqwen import check_size, image_size
    from items_vipyloqwen import split_item

    where = f"line {item.line}" if item.line is not None else repr(item.id)
    try:
        parsed = split_item(_message(processor, item, max_pixels(image_tokens)), where)
        for number, image in enumerate(parsed.images, start=1):
            size = image_size(image)
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
    sync: bool = False,
    max_delete: float = DEFAULT_MAX_DELETE,
    force: bool = False,
    write_items: str | Path | None = None,
) -> BuildStats:
    """Embed the items of ``items`` (an items JSONL file, or a folder: :mod:`.folder`) into the db folder ``db``,
    new or existing; see the module docstring. Returns the totals.

    ``model`` is a checkpoint path or Hub id (loaded here, on ``device``), or an already loaded viPyloQwen
    ``AutoModel`` (its ``config._name_or_path`` names it in the db's manifest). With ``sync`` the rows whose ids
    the items no longer name are deleted, unless they are more than ``max_delete`` of the rows and not ``force``
    (:class:`SyncRefused`, raised before anything is committed). ``write_items`` saves a folder's items as an items
    file.

    Example::

        >>> build("erax-ai/viPyloQwen", "docs/", "out/docs-index", batch_size=16, sync=True)
        BuildStats(lines=1000, new=3, changed=2, unchanged=993, rejected=2, embedded=5, ..., deleted=1, ...)
    """
    from prefetch_vipyloqwen import prefetch, resolve_num_workers

    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(commit_every, int) or commit_every <= 0:
        raise ValueError(f"commit_every must be a positive integer, got {commit_every!r}")
    sync_check(0, 0, max_delete, force)  # validates max_delete before a model is loaded
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.perf_counter()
    folder = Path(items).is_dir()
    if not folder and not Path(items).is_file():
        raise FileNotFoundError(f"items file or folder not found: {items}")
    if write_items is not None and not folder:
        raise ValueError(f"write_items saves the items of a folder; {items} is already an items file")
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
        image_tokens = max_image_tokens or processor.max_image_tokens
        pixels = max_pixels(image_tokens)
        db = Path(db)
        rejects_path = Path(rejects_path) if rejects_path else db / "rejects.jsonl"
        if dist.rank == 0:
            store = Store.create_or_open(db, model, dim, probe)
            store.upgrade()
            store.clear_partial_files()
            for stale in store.staging.glob("rejects-*.jsonl") if store.staging.is_dir() else []:
                stale.unlink()
            run = store.begin_run()
        dist.barrier()
        if dist.rank != 0:
            store = Store.open(db)
            store.check_model(model, dim, probe)
            run = store.manifest["runs"]
        stored, staged = store.fingerprints(), store.staged_fingerprints()
        dist.barrier()  # every rank has read the same state before any rank stages new rows

        stats = BuildStats()
        store.staging.mkdir(parents=True, exist_ok=True)
        rank_rejects = (store.staging / f"rejects-r{dist.rank}.jsonl").open("w", encoding="utf-8")

        def write_reject(line: int | None, item_id: str | None, error: str) -> None:
            rank_rejects.write(json.dumps({"line": line, "id": item_id, "error": error}, ensure_ascii=False) + "\n")

        def schema_reject(line: int | None, item_id: str | None, error: str) -> None:
            # Every rank reads every line and counts these alike; rank 0 writes them.
            stats.rejected += 1
            if dist.rank == 0:
                write_reject(line, item_id, error)

        def prepare(job: tuple[list[IndexItem], list[list[dict]], list[int]]):
            """Model inputs for one batch (encode's: ``processor.batch_inputs``); an item whose images fail to load
            is rejected alone, named by its line."""
            window, messages, chunk = job
            kept, canonical, failed = [], [], []
            for position in chunk:
                item = window[position]
                try:
                    # PDF pages are rendered here, in the worker, only for the items being embedded.
                    message = _message(processor, item, pixels, True) if item.images else messages[position]
                    canonical.append(
                        processor.canonicalize(message, position, max_image_tokens, where=f"line {item.line}")
                    )
                    kept.append(position)
                except (ValueError, TypeError, OSError) as error:
                    failed.append((position, str(error)))
            if not kept:
                return kept, None, failed
            return kept, processor.batch_inputs(canonical, kept, max_image_tokens), failed

        embedded = [0, 0, 0]  # new, changed, failed to load (this rank's share)
        skipped: Counter = Counter()
        if folder:
            source = read_folder(items, task, [db], write_items if dist.rank == 0 else None, skipped)
        else:
            source = read_items(items, default_task=task)
        identify = functools.partial(_identify, image_tokens)
        check = functools.partial(_item_error, processor, image_tokens)
        keep: set[str] = set()  # every id a line or file names, valid or not: what sync keeps
        if sync:
            source = _noting_ids(source, keep)
        for work in _windows(source, stored, staged, commit_every, stats, schema_reject, identify, check):
            name = f"w{work.first_line:09d}"
            if work.reuse and dist.rank == 0:
                # Only the metadata changed (or a stale staged row is overwritten): the stored vector is kept.
                kept_rows = store.rows_of([item.id for item in work.reuse])
                ids, vectors_kept = kept_rows.column("id").to_pylist(), kept_rows.column("vector").to_pylist()
                by_id = dict(zip(ids, vectors_kept, strict=True))
                matrix = np.asarray([by_id[item.id] for item in work.reuse], dtype=np.float32)
                store.stage(rows(dim, work.reuse, matrix), f"{name}-kept", run)
            window = work.embed
            if not window:
                continue
            messages = [_message(processor, item, pixels) for item in window]
            chunks = length_batches(processor.item_lengths(messages, max_image_tokens), batch_size)
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
                        embedded[2] += 1
                        write_reject(window[position].line, window[position].id, error)
                    if batch is not None:
                        vectors.append(embedder.embed_batch(batch).float().cpu())
                        done_items.extend(window[p] for p in kept)
            if done_items:
                matrix = torch.cat(vectors).numpy().astype(np.float32, copy=False)
                store.stage(rows(dim, done_items, matrix), f"{name}-r{dist.rank}", run)
                changed = sum(item.id in stored for item in done_items)
                embedded[0] += len(done_items) - changed
                embedded[1] += changed
            log(
                f"[index] rank {dist.rank}/{dist.world}: lines up to {work.last_line}: "
                f"{embedded[0] + embedded[1]} items embedded and staged, {stats.rejected + embedded[2]} rejected"
            )
        rank_rejects.close()
        if sync:
            # Every rank read every line: all decide alike, before any commit. A refused sync leaves this build's
            # embeddings staged, so the rerun (with the whole items file, or --force) does not embed them again.
            known = stored.keys() | staged.keys()
            doomed = len(known - keep)
            sync_check(doomed, len(known), max_delete, force)
        stats.seconds = time.perf_counter() - started
        dist.barrier()  # every shard file is written
        total = dist.total(stats, embedded)
        if dist.rank == 0:
            store.commit_staged()
            if sync and doomed:
                total.deleted = store.delete_absent(keep)
            rejected = []
            for path in sorted(store.staging.glob("rejects-*.jsonl")):
                rejected += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
                path.unlink()
            rejected.sort(key=lambda entry: (entry["line"] is not None, entry["line"] or 0))
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
            if skipped:
                log(f"[index] files of other kinds, not indexed: {dict(sorted(skipped.items()))}")
            log(
                f"[index] {total.lines} lines = {total.new} new + {total.changed} changed + {total.unchanged} "
                f"unchanged + {total.rejected} rejected ({rejects_path}); {total.embedded} embedded, {total.reused} "
                f"kept their vector (metadata only), {total.resumed} staged by an interrupted build; "
                f"{total.deleted} deleted; {total.rows_in_db} rows in {db}; {total.seconds:.1f}s on "
                f"{dist.world} process(es)"
            )
        dist.barrier()
        return total
    finally:
        dist.close()
