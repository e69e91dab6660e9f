"""Nearest documents of a batch of queries: exact (a matrix product) for small pools, the LanceDB ANN for large ones.

- :func:`exact_scores`: every candidate's score, ``[rows, pool]`` (the pool's vectors in memory, chunked by rows).
- :class:`AnnPool`: the pool's vectors in a LanceDB table with an IVF-PQ index (the index settings of
  :mod:`vipyloqwen_tools.index.store`), searched ``depth`` deep per query with the re-ranking of
  :mod:`vipyloqwen_tools.index.search` (``nprobes``, ``refine_factor``); the scores of what it returns are recomputed
  exactly from the vectors, so only the recall is approximate (measured in ``bench/negatives_bench.py``).
- :class:`DbPool`: a ``scripts/index.py`` database searched the same way (its stored vectors: the same model,
  checked by the probe embedding; a SQL filter keeps the rows embedded as training embeds the task's documents).

Example::

    >>> scores, ids = AnnPool.build(vectors, Path("work/ann-ocr")).search(queries, depth=40)
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

# Pools from this size on are searched with the ANN (``--ann-min-rows``): an exact search keeps the pool's vectors in
# memory (1M x 1024 dims = 4 GB) and scores every one; the ANN's time per query grows far slower with the pool
# (bench/negatives_bench.py, docs/training-internals.md Appendix E).
DEFAULT_ANN_MIN_ROWS = 1_000_000
# The ANN retrieves this many times the candidates a row needs (range_min + num_negatives) and rescores them exactly:
# the PQ codes alone order near neighbours poorly. Measured on 100k tiny-model embeddings (bench/negatives_bench.py):
# the exact top 4 found 35% at 1x, 60% at 2.5x, 86% at 10x, 95% at 25x, in 2.4 times the time of 1x.
ANN_OVERFETCH = 25


def exact_scores(queries: np.ndarray, documents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [rows, pool], ids [rows, pool])``: every document (``[pool, dim]`` in memory), by dot product of
    unit vectors (= cosine)."""
    scores = torch.from_numpy(np.array(queries, dtype=np.float32)) @ documents.T
    return scores, torch.arange(documents.size(0)).expand(scores.size(0), -1)


def _index_config(rows: int, dim: int):
    """IVF-PQ as :meth:`vipyloqwen_tools.index.store.Store.ensure_indexes` builds it."""
    from lancedb.index import IvfPq

    sub_vectors = next(d for d in (dim // 16, dim // 8, 1) if d and dim % d == 0)
    return IvfPq(distance_type="dot", num_partitions=max(1, int(math.sqrt(rows))), num_sub_vectors=sub_vectors)


def _search(table: Any, queries: np.ndarray, depth: int, where: str | None, columns: list[str]) -> pa.Table:
    from vipyloqwen_tools.index.search import NPROBES, REFINE_FACTOR

    builder = table.search(np.ascontiguousarray(queries, dtype=np.float32), vector_column_name="vector")
    builder = builder.distance_type("dot").limit(depth).select([*columns, "_distance"])
    if where:
        builder = builder.where(where, prefilter=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return builder.nprobes(NPROBES).refine_factor(REFINE_FACTOR).to_arrow()


def _padded(hits: pa.Table, rows: int, depth: int, id_column: str) -> torch.Tensor:
    """``[rows, depth]`` ids from a multi-query result (``-1`` where a query got fewer)."""
    ids = torch.full((rows, depth), -1, dtype=torch.long)
    if "query_index" in hits.column_names:
        which = hits.column("query_index").to_numpy()
    else:  # one query: no query_index column
        which = np.zeros(hits.num_rows, dtype=np.int64)
    found = hits.column(id_column).to_numpy()
    counts = np.zeros(rows, dtype=np.int64)
    for query, value in zip(which.tolist(), found.tolist(), strict=True):
        if counts[query] < depth:
            ids[query, counts[query]] = value
            counts[query] += 1
    return ids


class AnnPool:
    """A pool's vectors in a LanceDB table with an IVF-PQ index (built once; reopened by a resumed run)."""

    def __init__(self, table: Any, vectors: np.ndarray) -> None:
        self.table, self.vectors = table, vectors

    @classmethod
    def build(cls, vectors: np.ndarray, folder: Path) -> AnnPool:
        import lancedb

        db = lancedb.connect(str(folder))
        if (folder / "indexed").is_file() and "pool" in db.list_tables().tables:
            return cls(db.open_table("pool"), vectors)
        rows, dim = vectors.shape
        data = pa.table(
            {
                "i": np.arange(rows, dtype=np.int64),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).reshape(-1)), dim),
            }
        )
        table = db.create_table("pool", data, mode="overwrite")
        table.create_index("vector", config=_index_config(rows, dim))
        (folder / "indexed").write_text("IVF_PQ\n", encoding="utf-8")
        return cls(table, vectors)

    def search(self, queries: np.ndarray, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, ids)`` ``[rows, depth]``: the ANN's candidates, scored exactly (``-inf`` / ``-1``: none)."""
        depth = min(depth, len(self.vectors))
        hits = _search(self.table, queries, depth, None, ["i"])
        ids = _padded(hits, len(queries), depth, "i")
        vectors = torch.from_numpy(np.array(self.vectors[ids.clamp(min=0).numpy()], dtype=np.float32))
        scores = torch.einsum("rd,rkd->rk", torch.from_numpy(np.array(queries, dtype=np.float32)), vectors)
        return scores.masked_fill(ids < 0, float("-inf")), ids


class DbPool:
    """A ``scripts/index.py`` database as the candidate pool of one task (rows kept by ``where``)."""

    def __init__(self, store: Any, where: str | None) -> None:
        self.store, self.where = store, where
        self.seen: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []

    def search(self, queries: np.ndarray, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, local ids)``; the rows found are kept in :attr:`rows` (``id``, ``text``, ``images``, ``vector``,
        and ``key``: the identity key of the document)."""
        from vipyloqwen_tools.data.identity import side_key

        table = self.store.table
        hits = _search(table, queries, depth, self.where, ["id", "text", "images", "vector"])
        local = []
        for row in hits.select(["id", "text", "images", "vector"]).to_pylist():
            if row["id"] not in self.seen:
                self.seen[row["id"]] = len(self.rows)
                row["key"] = side_key({"text": row["text"], "images": list(row["images"] or [])})
                self.rows.append(row)
            local.append(self.seen[row["id"]])
        hits = hits.append_column("local", pa.array(local, pa.int64()))
        ids = _padded(hits, len(queries), depth, "local")
        vectors = torch.tensor([r["vector"] for r in self.rows] or [[0.0]], dtype=torch.float32)
        chosen = vectors[ids.clamp(min=0)]
        scores = torch.einsum("rd,rkd->rk", torch.from_numpy(np.array(queries, dtype=np.float32)), chosen)
        return scores.masked_fill(ids < 0, float("-inf")), ids


__all__ = ["ANN_OVERFETCH", "DEFAULT_ANN_MIN_ROWS", "AnnPool", "DbPool", "exact_scores"]
