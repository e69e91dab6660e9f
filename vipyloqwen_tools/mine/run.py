"""Mine hard negatives for a training file: :func:`mine`, what ``scripts/mine.py`` runs (one process or torchrun).

Steps (every rank runs them; rank 0 alone writes what is shared):

1. the input is validated once with the training validator (:func:`vipyloqwen_tools.data.validate_file`, parallel,
   images verified): bad lines are rejects with their line numbers and reasons, never mined;
2. per task, the distinct queries (task prefix, images) and documents (training's document prompt) are embedded with
   the model's own batching (:mod:`.embed`: windowed, sharded over the ranks, resumable);
3. the good rows are cut into windows of ``window`` rows in file order, window ``w`` mined by rank ``w mod N``: the
   candidates of each row (exact scores, or the ANN / a ``--db`` for large pools, :mod:`.search`) minus every
   correct answer, then the rules of :mod:`.select`; each window's lines are written as one part file (atomic
   rename), so a killed run resumes at the first missing window and mines no row twice;
4. rank 0 joins the parts in order into the output (atomic rename) and writes the rejects; the work folder goes.

Output: every good line once, as it was, plus ``"negatives": [document, ...]`` (the shape of ``positive``; the
file's own documents exactly as the file writes them) and ``"negative_scores": [...]``, hardest first. A row with
fewer valid candidates gets fewer (none: the line as it was); a text_pair row under ``score_threshold`` is not a
positive pair and is not mined.

Example::

    >>> stats = mine("runs/2b/final", "train.jsonl", "train.mined.jsonl", MineOptions(num_negatives=4,
    ...              relative_margin=0.05))
    >>> stats.rows == stats.full + stats.short + stats.none + stats.not_positive
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.index.launcher import LauncherGroup
from vipyloqwen_tools.mine.embed import DEFAULT_WINDOW, embed_sides
from vipyloqwen_tools.mine.rows import Pool, RowTable, TaskRows, corpus_pool, document_value, read_rows
from vipyloqwen_tools.mine.search import ANN_OVERFETCH, DEFAULT_ANN_MIN_ROWS, AnnPool, DbPool, exact_scores
from vipyloqwen_tools.mine.select import Chosen, MineOptions, choose
from vipyloqwen_tools.train.evaluation import document_prefix

ROWS_PER_SEARCH = 256  # rows scored at once: bounds the [rows, pool] score matrix of the exact search


class MineError(ValueError):
    """A miner run that cannot go on as asked (a work folder of other settings, a db of another model)."""


@dataclasses.dataclass
class MineStats:
    """Counts of one run. ``rows = full + short + none + not_positive``; ``already``: rows of windows mined by an
    earlier (interrupted) run, ``this_run``: rows mined now (their sum is ``rows``); ``search``: per task, ``exact``,
    ``ann`` or ``db``; ``dropped``: candidates removed per filter rule; ``seconds``: per phase (``embed``,
    ``ann_index``: building the ANN indexes, ``mine``: search and selection, ``total``)."""

    rows: int = 0
    rejected: int = 0
    full: int = 0
    short: int = 0
    none: int = 0
    not_positive: int = 0
    already: int = 0
    this_run: int = 0
    negatives: int = 0
    pool: dict[str, int] = dataclasses.field(default_factory=dict)
    search: dict[str, str] = dataclasses.field(default_factory=dict)
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    world_size: int = 1

    def add(self, other: dict[str, Any]) -> None:
        for name in ("full", "short", "none", "not_positive", "negatives"):
            setattr(self, name, getattr(self, name) + int(other.get(name, 0)))
        for rule, count in (other.get("dropped") or {}).items():
            self.dropped[rule] = self.dropped.get(rule, 0) + int(count)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def with_negatives(raw: str, values: list[Any], scores: list[float]) -> str:
    """The line ``raw`` plus ``negatives`` and ``negative_scores`` (replacing earlier ones): appended as text when the
    line has neither, so the rest of the line stays byte for byte as it was."""
    fields = f', "negatives": {json.dumps(values, ensure_ascii=False)}, "negative_scores": {json.dumps(scores)}'
    text = raw.rstrip()
    row = json.loads(text)
    if "negatives" not in row and "negative_scores" not in row and text.endswith("}") and row:
        return text[:-1].rstrip() + fields + "}"
    row.pop("negative_scores", None)
    row["negatives"], row["negative_scores"] = values, scores
    return json.dumps(row, ensure_ascii=False)


class _Candidates:
    """One task's search: the pool's keys and output values, and how to find a batch of queries' candidates."""

    def __init__(self, pool: Pool | None, vectors: np.ndarray | None, searcher: Any, mode: str) -> None:
        self.pool, self.searcher, self.mode = pool, searcher, mode
        self.keys = torch.tensor(pool.keys, dtype=torch.long) if pool is not None else None
        # the exact search keeps the pool's vectors in memory (one copy, not one per batch of queries)
        self.matrix = torch.from_numpy(np.array(vectors, dtype=np.float32)) if mode == "exact" else None

    def find(self, queries: np.ndarray, depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scores, ids, keys)`` ``[rows, m]`` of the candidates (-inf / -1 where none)."""
        if self.mode == "exact":
            scores, ids = exact_scores(queries, self.matrix)
            return scores, ids, self.keys.expand(len(queries), -1)
        scores, ids = self.searcher.search(queries, depth)
        if self.mode == "db":
            keys = torch.tensor([row["key"] for row in self.searcher.rows] or [0], dtype=torch.long)
        else:
            keys = self.keys
        return scores, ids, torch.where(ids >= 0, keys[ids.clamp(min=0)], torch.zeros_like(ids))

    def size(self) -> int:
        """Candidates in the pool (for a db: its rows)."""
        return self.searcher.store.count() if self.mode == "db" else len(self.pool)

    def value(self, index: int) -> Any:
        if self.mode == "db":
            row = self.searcher.rows[index]
            return document_value({"text": row["text"], "images": list(row["images"] or [])})
        return self.pool.values[index]


def _settings(data: Path, model_name: str, options: MineOptions, extra: dict[str, Any]) -> dict[str, Any]:
    stat = data.stat()
    return {
        "data": {"path": str(data.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "model": model_name,
        "options": dataclasses.asdict(options),
        **extra,
    }


def _open_work(work: Path, settings: dict[str, Any], group: LauncherGroup) -> None:
    """Create the work folder, or resume one made with the same settings (anything else is refused)."""
    state = work / "state.json"
    if group.rank == 0:
        if state.is_file():
            old = json.loads(state.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if changed:
                raise MineError(
                    f"{work} holds an interrupted run with other settings ({', '.join(changed)}): resume it with the "
                    "same command, or remove the folder to start again"
                )
        else:
            work.mkdir(parents=True, exist_ok=True)
            _write_atomic(state, json.dumps(settings, indent=1) + "\n")
    group.barrier()


def _validate(data: Path, work: Path, group: LauncherGroup, num_proc: int | None) -> dict[int, str]:
    """The validator's bad lines (line -> reason), computed once by rank 0 (kept in the work folder)."""
    from vipyloqwen_tools.data import validate_file

    path = work / "validation.json"
    if group.rank == 0 and not path.is_file():
        report = validate_file(data, num_proc=num_proc)
        _write_atomic(path, json.dumps({str(b.line): b.reason for b in report.bad}) + "\n")
    group.barrier()
    return {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def _load_model(model: str | Any, device: str | None, group: LauncherGroup) -> tuple[Any, str]:
    if not isinstance(model, (str, os.PathLike)):
        return model, str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    from vipyloqwen_tools.checkpoint.user_errors import check_model_source
    from vipyloqwen_tools.index.build import load_model

    if group.world > 1 and device is None and torch.cuda.is_available():
        device = f"cuda:{group.local_rank}"
    name = check_model_source(str(model))
    return load_model(name, device), str(name)


def _positive_scores(data: TaskRows, queries: np.ndarray, documents: np.ndarray) -> dict[int, float]:
    """``s_p`` per query: the lowest score of its positives (ST's reference for the margins)."""
    scores = {}
    for query, keys in data.answers.items():
        index = [data.documents.index[key] for key in keys]
        scores[query] = float((documents[index] @ queries[query]).min())
    return scores


def mine(
    model: str | Any,
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: MineOptions,
    corpus: str | os.PathLike | None = None,
    db: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    rejects: str | os.PathLike | None = None,
    batch_size: int = 16,
    window: int = DEFAULT_WINDOW,
    ann_min_rows: int = DEFAULT_ANN_MIN_ROWS,
    prefix_documents: bool = False,
    score_threshold: float = 0.5,
    max_image_tokens: int | None = None,
    max_length: int | None = None,
    num_workers: int | None = None,
    num_proc: int | None = None,
    device: str | None = None,
    keep_work: bool = False,
    log: Callable[[str], None] | None = None,
) -> MineStats:
    """Mine ``options.num_negatives`` hard negatives per row of ``data`` into ``out``; see the module docstring.

    ``model``: a checkpoint path / Hub id or a loaded viPyloQwen ``AutoModel``. ``corpus`` (an items file) or ``db``
    (a ``scripts/index.py`` folder) replace the default candidates (the file's own documents). ``work_dir``
    (default ``<out>.work``) holds what a resumed run reuses; removed at the end unless ``keep_work``.
    ``ann_min_rows``: pools this large are searched with the LanceDB ANN. ``prefix_documents``, ``max_image_tokens``
    and ``max_length`` must be the training run's. Returns the counts (on every rank).
    """
    if corpus is not None and db is not None:
        raise ValueError("give --corpus or --db, not both")
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    if not data.is_file():
        raise FileNotFoundError(f"--data: no such file {data}")
    rejects_path = Path(rejects) if rejects else out.with_name(out.stem + ".rejects.jsonl")
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    group = LauncherGroup()
    try:
        embedder, model_name = _load_model(model, device, group)
        store = None
        if db is not None:
            from vipyloqwen_tools.index.build import probe_vector
            from vipyloqwen_tools.index.store import Store

            store = Store.open(db)
            store.check_model(model_name, int(embedder.config.embed_dim), probe_vector(embedder))
        extra = {
            "corpus": str(Path(corpus).resolve()) if corpus else None,
            "db": str(Path(db).resolve()) if db else None,
            "window": window,
            "ann_min_rows": ann_min_rows,
            "prefix_documents": prefix_documents,
            "score_threshold": score_threshold,
            "max_image_tokens": max_image_tokens,
            "max_length": max_length,
            "batch_size": batch_size,
        }
        _open_work(work, _settings(data, model_name, options, extra), group)
        stats = MineStats(world_size=group.world)
        table = read_rows(data, _validate(data, work, group, num_proc), score_threshold)
        stats.rows, stats.rejected = table.rows, len(table.rejects)
        relative = any(
            isinstance(value, dict) and any(not os.path.isabs(p) for p in value.get("images") or [])
            for task in table.tasks.values()
            for value in task.documents.values
        )
        if relative and out.resolve().parent != data.resolve().parent:
            log(f"[mine] note: {out} is not in {data.parent}: its image paths are relative to {data.parent}")
        timer, index_seconds = time.perf_counter(), 0.0
        searches: dict[str, _Candidates] = {}
        embedded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        common = dict(
            group=group, batch_size=batch_size, window=window, max_image_tokens=max_image_tokens,
            max_length=max_length, num_workers=num_workers, log=log,
        )  # fmt: skip
        for task in (t for t in TASKS if t in table.tasks):
            rows = table.tasks[task]
            prompt = document_prefix(task, prefix_documents)
            queries = embed_sides(embedder, rows.queries.sides, work / "emb" / f"queries-{task}", task=task, **common)
            documents = embed_sides(embedder, rows.documents.sides, work / "emb" / f"documents-{task}", prompt=prompt,
                                    **common)  # fmt: skip
            embedded[task] = (queries, documents)
            if db is not None:
                where = f"task = '{task}'" if prompt is not None else "task IS NULL"
                searches[task] = _Candidates(None, None, DbPool(store, where), "db")
                stats.pool[task] = store.count()
            else:
                if corpus is not None:
                    rows.pool = corpus_pool(corpus, task)
                    vectors = embed_sides(embedder, rows.pool.sides, work / "emb" / f"corpus-{task}", prompt=prompt,
                                          **common)  # fmt: skip
                else:
                    vectors = documents
                pool = rows.candidates
                stats.pool[task] = len(pool)
                if len(pool) >= ann_min_rows:
                    building = time.perf_counter()
                    folder = work / f"ann-{task}"
                    if group.rank == 0:
                        AnnPool.build(vectors, folder)
                    group.barrier()
                    searches[task] = _Candidates(pool, vectors, AnnPool.build(vectors, folder), "ann")
                    index_seconds += time.perf_counter() - building
                else:
                    searches[task] = _Candidates(pool, vectors, None, "exact")
            stats.search[task] = searches[task].mode
        stats.seconds["embed"] = round(time.perf_counter() - timer - index_seconds, 3)
        stats.seconds["ann_index"] = round(index_seconds, 3)
        timer = time.perf_counter()
        parts = work / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        positive_scores = {task: _positive_scores(table.tasks[task], *embedded[task]) for task in embedded}
        for number, start in enumerate(range(0, table.rows, window)):
            part = parts / f"w{number:06d}.jsonl"
            if part.is_file() or number % group.world != group.rank:
                continue
            lines, counts = _mine_window(table, start, window, searches, embedded, positive_scores, options)
            _write_atomic(part.with_suffix(".json"), json.dumps(counts) + "\n")
            _write_atomic(part, "".join(line + "\n" for line in lines))  # the commit of this window
            stats.this_run += len(lines)
        stats.seconds["mine"] = round(time.perf_counter() - timer, 3)
        counts = torch.tensor([stats.this_run], dtype=torch.long)
        if group.world > 1:
            torch.distributed.all_reduce(counts)
        stats.this_run = int(counts[0])
        stats.already = stats.rows - stats.this_run
        group.barrier()  # every part is written
        for number in range(len(range(0, table.rows, window))):
            stats.add(json.loads((parts / f"w{number:06d}.json").read_text(encoding="utf-8")))
        if group.rank == 0:
            _finish(out, parts, table, data, rejects_path)
            stats.seconds["total"] = round(time.perf_counter() - started, 3)
            log(
                f"[mine] {stats.rows} rows: {stats.full} with {options.num_negatives} negatives, {stats.short} with "
                f"fewer, {stats.none} with none, {stats.not_positive} not positive pairs; {stats.rejected} rejected "
                f"({rejects_path}); {stats.already} mined by an earlier run, {stats.this_run} now; search "
                f"{stats.search}; dropped {stats.dropped}; {stats.seconds} s on {group.world} process(es)"
            )
            if not keep_work:
                shutil.rmtree(work, ignore_errors=True)
        group.barrier()
        return stats
    finally:
        group.close()


def _finish(out: Path, parts: Path, table: RowTable, data: Path, rejects_path: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for path in sorted(parts.glob("w*.jsonl")):
            handle.write(path.read_text(encoding="utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out)
    records = [
        json.dumps({"file": str(data.resolve()), "line": line, "reason": reason, "raw": raw}, ensure_ascii=False)
        for line, reason, raw in table.rejects
    ]
    _write_atomic(rejects_path, "".join(record + "\n" for record in records))


def _search_and_choose(
    candidates: _Candidates,
    vectors: np.ndarray,
    excluded_keys: list[list[int]],
    positive: torch.Tensor,
    batch: list,
    options: MineOptions,
) -> Chosen:
    """The negatives of a batch of rows. The exact search scores every candidate at once; an approximate one (ANN,
    db) retrieves ``range_max`` (or ST's default depth, at least :data:`~.search.ANN_OVERFETCH` times what a row
    needs) plus the excluded ones, rescored exactly, and for the rows left with fewer than ``num_negatives`` (the
    filters drop the best candidates when a model ranks much of the pool above the positive) searches again 4x
    deeper, up to the whole pool."""
    width = max(len(keys) for keys in excluded_keys)
    excluded = torch.tensor([keys + [0] * (width - len(keys)) for keys in excluded_keys], dtype=torch.long)
    lines = [row.line for row in batch]
    depth = max(options.retrieval_depth(), ANN_OVERFETCH * (options.range_min + options.num_negatives)) + width
    cap = max(depth, options.range_max + width) if options.range_max is not None else candidates.size()
    rows = torch.arange(len(batch))
    result: Chosen | None = None
    while True:
        scores, ids, keys = candidates.find(vectors[rows.numpy()], depth)
        mask = (keys[:, :, None] == excluded[rows][:, None, :]).any(dim=-1) | (ids < 0)
        chosen = choose(scores, ids, mask, positive[rows].to(scores.dtype), [lines[i] for i in rows], options)
        if result is None:
            result = chosen
        else:  # the deeper search replaces the shallower one for these rows
            result.ids[rows], result.scores[rows] = chosen.ids, chosen.scores
            for rule, per_row in chosen.dropped.items():
                result.dropped.setdefault(rule, torch.zeros(len(batch), dtype=per_row.dtype))[rows] = per_row
        short = (chosen.ids >= 0).sum(dim=1) < options.num_negatives
        if candidates.mode == "exact" or not bool(short.any()) or depth >= cap:
            return result
        rows, depth = rows[short], min(cap, depth * 4)


def _mine_window(
    table: RowTable,
    start: int,
    window: int,
    searches: dict[str, _Candidates],
    embedded: dict[str, tuple[np.ndarray, np.ndarray]],
    positive_scores: dict[str, dict[int, float]],
    options: MineOptions,
) -> tuple[list[str], dict[str, Any]]:
    """The output lines of the good rows ``start .. start + window`` (file order) and their counts."""
    order = table.order[start : start + window]
    picked: dict[int, str] = {}
    counts: dict[str, Any] = {"full": 0, "short": 0, "none": 0, "not_positive": 0, "negatives": 0, "dropped": {}}
    by_task: dict[str, list] = {}
    for _line, task, index in order:
        by_task.setdefault(task, []).append(table.tasks[task].rows[index])
    for task, rows in by_task.items():
        data = table.tasks[task]
        queries, _ = embedded[task]
        mined = [row for row in rows if row.positive_pair]
        for row in rows:
            if not row.positive_pair:
                picked[row.line] = row.raw
                counts["not_positive"] += 1
        for begin in range(0, len(mined), ROWS_PER_SEARCH):
            batch = mined[begin : begin + ROWS_PER_SEARCH]
            vectors = np.asarray(queries[[row.query for row in batch]], dtype=np.float32)
            excluded_keys = [sorted(data.answers.get(row.query, set()) | set(row.own_negatives)) for row in batch]
            positive = torch.tensor([positive_scores[task][row.query] for row in batch])
            chosen = _search_and_choose(searches[task], vectors, excluded_keys, positive, batch, options)
            for rule, per_row in chosen.dropped.items():
                counts["dropped"][rule] = counts["dropped"].get(rule, 0) + int(per_row.sum())
            for row, row_ids, row_scores in zip(batch, chosen.ids.tolist(), chosen.scores.tolist(), strict=True):
                found = [(i, s) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
                if not found:
                    picked[row.line] = row.raw
                    counts["none"] += 1
                    continue
                counts["full" if len(found) == options.num_negatives else "short"] += 1
                counts["negatives"] += len(found)
                values = [searches[task].value(i) for i, _ in found]
                picked[row.line] = with_negatives(row.raw, values, [round(float(s), 6) for _, s in found])
    return [picked[line] for line, _, _ in order], counts


__all__ = ["MineError", "MineStats", "mine", "with_negatives"]
