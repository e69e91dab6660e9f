"""The on-disk vector store of ``scripts/index.py``: a LanceDB database folder plus a manifest naming the model.

Layout of a db folder::

    DIR/vipyloqwen-index.json   manifest: format, model name, embed_dim, a probe embedding (model fingerprint),
                                the number of builds started (``runs``: orders staged shard files)
    DIR/items.lance/            the LanceDB table: id, vector, text, images, task, metadata (JSON),
                                content_hash and fingerprint (:mod:`.fingerprint`)
    DIR/_staging/               shard files written by build ranks, committed into the table by rank 0
    DIR/rejects.jsonl           the last build's rejected lines (default place)

Why LanceDB (docs/index.md has the comparison): embedded (a library, no server), columnar files on disk, so
100M x 1024-d vectors live on disk rather than in RAM; IVF-PQ ANN index built on disk; SQL metadata filters
(``where``) pushed down before the vector search; versioned, atomic commits, so a killed writer never leaves
half a commit. A build never writes the table from several processes: each rank writes Arrow shard files
(written to a temporary name, then renamed) and only rank 0 commits them, one upsert (``merge_insert`` on ``id``:
replace a matched row, insert a new one) per shard file, oldest build first, so a commit interrupted after the
table write but before the shard file was removed is redone with the same rows, and a newer build's rows win.
Deletes (:meth:`Store.delete_where`, :meth:`Store.delete_absent`) are one commit each too.

Example::

    >>> store = Store.open("out/my-index")
    >>> store.count()
    1234
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

MANIFEST = "vipyloqwen-index.json"
TABLE = "items"
STAGING = "_staging"
FORMAT = 2  # 2: rows carry content_hash and fingerprint; a format-1 db is searched as is, upgraded by a build
READABLE_FORMATS = (1, 2)
PROBE_TEXT = "viPyloQwen index probe: Hà Nội là thủ đô của Việt Nam."
# Same model: the probe embeddings agree to float noise (bf16 on a GPU vs fp32 on a CPU: ~1e-3).
PROBE_MIN_COSINE = 0.99
# Below this many rows the table is searched exactly (a flat scan is fast and an ANN index needs rows to train).
DEFAULT_INDEX_MIN_ROWS = 100_000
# A sync (build --sync) refuses to delete more than this share of the db's rows unless forced: a truncated or wrong
# items file would otherwise empty the index (an empty file: every row).
DEFAULT_MAX_DELETE = 0.5


class StoreError(ValueError):
    """A db folder that cannot be used as asked (unknown, foreign, built with another model)."""


def schema(embed_dim: int) -> pa.Schema:
    """The table's columns."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), embed_dim)),
            pa.field("text", pa.string()),
            pa.field("images", pa.list_(pa.string())),
            pa.field("task", pa.string()),
            pa.field("metadata", pa.json_()),
            pa.field("content_hash", pa.string()),
            pa.field("fingerprint", pa.string()),
        ]
    )


FINGERPRINT_COLUMNS = ("content_hash", "fingerprint")
_RUN = re.compile(r"^run(\d+)-")
# Ids per ``id IN (...)`` filter: a short SQL text per query, few queries per window.
IDS_PER_QUERY = 1024


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def ids_filter(ids: Iterable[str]) -> str:
    """The SQL filter ``id IN (...)`` of ``ids``."""
    return f"id IN ({', '.join(sql_string(i) for i in ids)})"


def rows(embed_dim: int, items: list[Any], vectors: np.ndarray) -> pa.Table:
    """An Arrow table of ``items`` (:class:`~vipyloqwen_tools.index.items.IndexItem`) and their vectors."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table(
        {
            "id": [item.id for item in items],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), embed_dim),
            "text": [item.text for item in items],
            "images": [item.images for item in items],
            "task": [item.task for item in items],
            "metadata": pa.array([json.dumps(item.metadata, ensure_ascii=False) for item in items], type=pa.json_()),
            "content_hash": [getattr(item, "content_hash", None) for item in items],
            "fingerprint": [getattr(item, "fingerprint", None) for item in items],
        },
        schema=schema(embed_dim),
    )


def _connect(root: Path):
    """LanceDB connection to a db folder (imported here: search and build need it, the model package does not)."""
    import lancedb

    return lancedb.connect(str(root))


class Store:
    """A db folder: manifest + LanceDB table + staging area."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self._db = _connect(root)

    # ------------------------------------------------------------------ open / create
    @classmethod
    def open(cls, root: str | Path) -> Store:
        """Open an existing db folder; a missing or foreign folder is a :class:`StoreError`."""
        root = Path(root)
        manifest_path = root / MANIFEST
        if not root.is_dir():
            raise StoreError(f"no index at {root}: the folder does not exist (build one with scripts/index.py build)")
        if not manifest_path.is_file():
            raise StoreError(
                f"{root} is not a viPyloQwen index: {MANIFEST} is missing (build one with scripts/index.py build "
                "into a new or empty folder)"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") not in READABLE_FORMATS:
            raise StoreError(
                f"{root}: unsupported index format {manifest.get('format')!r} (this code reads {READABLE_FORMATS})"
            )
        return cls(root, manifest)

    @staticmethod
    def check_target(root: str | Path) -> None:
        """Fail fast (before a model is loaded) unless ``root`` is an index, or new, or an empty folder."""
        root = Path(root)
        if (root / MANIFEST).is_file():
            Store.open(root)
        elif root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise StoreError(
                f"{root} exists and is not a viPyloQwen index ({MANIFEST} is missing): give a new or empty folder"
            )

    @classmethod
    def create_or_open(cls, root: str | Path, model: str, embed_dim: int, probe: list[float]) -> Store:
        """Open ``root`` for appending (checking the model), or create it when it is new or empty."""
        root = Path(root)
        if (root / MANIFEST).is_file():
            store = cls.open(root)
            store.check_model(model, embed_dim, probe)
            return store
        cls.check_target(root)
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "model": model,
            "embed_dim": embed_dim,
            "probe": {"text": PROBE_TEXT, "vector": probe},
            "table": TABLE,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "runs": 0,
        }
        store = cls(root, manifest)
        store._db.create_table(TABLE, schema=schema(embed_dim))
        store.write_manifest()  # last: a folder with a manifest always has its table
        return store

    def upgrade(self) -> bool:
        """Bring a format-1 db (no fingerprints) to this format: the two columns are added empty (one commit), so
        its rows count as changed once and are re-embedded by the next build. Returns whether it upgraded."""
        if self.manifest["format"] == FORMAT:
            return False
        names = set(self.table.schema.names)
        missing = [pa.field(name, pa.string()) for name in FINGERPRINT_COLUMNS if name not in names]
        if missing:
            self.table.add_columns(missing)
        self.manifest["format"] = FORMAT
        self.write_manifest()
        return True

    def begin_run(self) -> int:
        """Number this build (the manifest's ``runs``, written before any shard file): shard files are committed
        in run order, so a row staged by a newer build wins over a stale one of an interrupted build."""
        self.manifest["runs"] = int(self.manifest.get("runs", 0)) + 1
        self.write_manifest()
        return self.manifest["runs"]

    def write_manifest(self) -> None:
        path = self.root / MANIFEST
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def check_model(self, model: str, embed_dim: int, probe: list[float]) -> None:
        """Refuse a model other than the one the db was built with (width, or the embedding of the probe text)."""
        built = f"{self.manifest['model']!r} (embed_dim {self.manifest['embed_dim']})"
        given = f"{model!r} (embed_dim {embed_dim})"
        if embed_dim != self.manifest["embed_dim"]:
            raise StoreError(f"{self.root} was built with model {built}; you gave model {given}: widths differ")
        stored = np.asarray(self.manifest["probe"]["vector"], dtype=np.float64)
        cosine = float(stored @ np.asarray(probe, dtype=np.float64))
        cosine /= float(np.linalg.norm(stored) * np.linalg.norm(probe)) or 1.0
        if not math.isfinite(cosine) or cosine < PROBE_MIN_COSINE:
            raise StoreError(
                f"{self.root} was built with model {built}; you gave model {given}, whose embeddings differ "
                f"(probe cosine {cosine:.4f} < {PROBE_MIN_COSINE}): use the db's model or a new --db"
            )

    # ------------------------------------------------------------------ table
    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def table(self):
        return self._db.open_table(TABLE)

    def count(self) -> int:
        return self.table.count_rows()

    def table_ids(self) -> set[str]:
        """Every id in the table (the id column only, streamed)."""
        ids: set[str] = set()
        for batch in self.table.search().select(["id"]).limit(None).to_batches():
            ids.update(batch.column("id").to_pylist())
        return ids

    def fingerprints(self) -> dict[str, bytes]:
        """id -> content_hash and fingerprint of every row, packed (:func:`~.fingerprint.packed`: 32 bytes, ``b""``
        for a format-1 row); three columns, streamed."""
        from vipyloqwen_tools.index.fingerprint import packed

        if not set(FINGERPRINT_COLUMNS) <= set(self.table.schema.names):
            return dict.fromkeys(self.table_ids(), b"")
        found: dict[str, bytes] = {}
        for batch in self.table.search().select(["id", *FINGERPRINT_COLUMNS]).limit(None).to_batches():
            hashes, prints = (batch.column(c).to_pylist() for c in FINGERPRINT_COLUMNS)
            found.update(zip(batch.column("id").to_pylist(), map(packed, hashes, prints), strict=True))
        return found

    def rows_of(self, ids: list[str]) -> pa.Table:
        """The stored rows (every column) of ``ids``, in no particular order."""
        parts = [
            self.table.search().where(ids_filter(ids[start : start + IDS_PER_QUERY])).limit(None).to_arrow()
            for start in range(0, len(ids), IDS_PER_QUERY)
        ]
        return pa.concat_tables(parts) if parts else schema(self.embed_dim).empty_table()

    def has_vector_index(self) -> bool:
        return any("vector" in config.columns for config in self.table.list_indices())

    # ------------------------------------------------------------------ staging (one writer per shard file)
    @property
    def staging(self) -> Path:
        return self.root / STAGING

    def staged_files(self) -> list[Path]:
        """The shard files waiting for their commit, in commit order: by build run, then by name."""
        if not self.staging.is_dir():
            return []

        def order(path: Path) -> tuple[int, str]:
            run = _RUN.match(path.name)
            return (int(run.group(1)) if run else 0, path.name)

        return sorted(self.staging.glob("*.arrow"), key=order)

    def staged_ids(self) -> set[str]:
        return set(self.staged_fingerprints())

    def staged_fingerprints(self) -> dict[str, str | None]:
        """id -> fingerprint of every staged row; where an id is staged twice, the one committed last."""
        found: dict[str, str | None] = {}
        for path in self.staged_files():
            with pa.memory_map(str(path)) as source:
                data = pa.ipc.open_file(source).read_all()
            prints = data.column("fingerprint").to_pylist() if "fingerprint" in data.schema.names else None
            found.update(zip(data.column("id").to_pylist(), prints or [None] * data.num_rows, strict=True))
        return found

    def stage(self, table: pa.Table, name: str, run: int | None = None) -> Path:
        """Write one shard file atomically (temporary name, fsync, rename): it is whole or absent. ``run`` (from
        :meth:`begin_run`) orders it after the shard files of earlier builds."""
        self.staging.mkdir(parents=True, exist_ok=True)
        prefix = f"run{run:06d}-" if run is not None else ""
        path = self.staging / f"{prefix}{name}-{uuid.uuid4().hex[:8]}.arrow"
        tmp = path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def clear_partial_files(self) -> None:
        """Remove temporary shard files of an interrupted run (never a finished shard file)."""
        for path in self.staging.glob("*.tmp") if self.staging.is_dir() else []:
            path.unlink()

    def commit_staged(self) -> int:
        """Upsert every shard file into the table (one ``merge_insert`` commit per file, in :meth:`staged_files`
        order: a matched id's row is replaced, a new id inserted), then remove the file. Redoing a file whose
        commit went through but whose removal did not writes the same rows again. Returns the number of rows
        added. Single writer: call from one process only."""
        table = self.table
        before = table.count_rows()
        for path in self.staged_files():
            with pa.memory_map(str(path)) as source:
                data = pa.ipc.open_file(source).read_all()
            if data.num_rows:
                data = data.cast(schema(self.embed_dim)) if data.schema != table.schema else data
                table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
            path.unlink()
        return table.count_rows() - before

    # ------------------------------------------------------------------ deletes (one commit each)
    def delete_where(self, where: str) -> int:
        """Delete the rows matching the SQL filter ``where`` in one commit; returns how many."""
        if not where or not where.strip():
            raise ValueError("delete: an empty filter would match every row; give a condition")
        return int(self.table.delete(where).num_deleted_rows)

    def delete_ids(self, ids: Iterable[str]) -> int:
        """Delete the rows of ``ids`` (absent ids are ignored) in one commit; returns how many were deleted."""
        ids = list(dict.fromkeys(ids))
        return self.delete_where(ids_filter(ids)) if ids else 0

    def delete_absent(self, keep: Iterable[str]) -> int:
        """Delete every row whose id is not in ``keep`` in one commit (a ``merge_insert`` whose source is the ids
        alone, deleting the rows the source does not match); returns how many."""
        source = pa.table({"id": pa.array(sorted(set(keep)), type=pa.string())})
        result = self.table.merge_insert("id").when_not_matched_by_source_delete().execute(source)
        return int(result.num_deleted_rows)

    def ensure_indexes(self, index_min_rows: int = DEFAULT_INDEX_MIN_ROWS) -> dict[str, Any]:
        """A BTREE index on ``id``; an IVF-PQ vector index once the table has ``index_min_rows`` rows (rows added
        later are searched exactly beside the index until :meth:`optimize` folds them in)."""
        from lancedb.index import BTree

        table = self.table
        rows_now = table.count_rows()
        if not rows_now:
            return {"rows": 0, "vector_index": None}
        names = {tuple(config.columns) for config in table.list_indices()}
        if ("id",) not in names:
            table.create_index("id", config=BTree())
        if ("vector",) in names:
            table.optimize()  # fold new rows into the existing indexes, compact small commits
        elif rows_now >= index_min_rows:
            self._create_vector_index(table, rows_now)
        else:
            table.optimize()
        return {"rows": rows_now, "vector_index": "IVF_PQ" if self.has_vector_index() else None}

    def _create_vector_index(self, table: Any, rows_now: int, replace: bool = False) -> None:
        from lancedb.index import IvfPq

        sub_vectors = next(d for d in (self.embed_dim // 16, self.embed_dim // 8, 1) if d and self.embed_dim % d == 0)
        config = IvfPq(
            distance_type="dot",  # unit vectors: dot = cosine
            num_partitions=max(1, int(math.sqrt(rows_now))),
            num_sub_vectors=sub_vectors,  # 16 dims per 8-bit code: 64 bytes per 1024-d vector
        )
        table.create_index("vector", config=config, replace=replace)

    def optimize(self, keep_versions_days: float | None = None, reindex: bool = False) -> dict[str, Any]:
        """Compact the table (small fragments of many commits merged, deleted rows dropped), fold new rows into the
        indexes, and remove the files of versions older than ``keep_versions_days`` (LanceDB's default, 7 days,
        when None; 0 keeps only the latest version: no reader may be on an older one). ``reindex`` retrains the
        IVF-PQ vector index on the rows as they are now. Returns the table's shape before and after."""
        table = self.table
        before = self.shape()
        if reindex and self.has_vector_index():
            self._create_vector_index(table, table.count_rows(), replace=True)
        cleanup = dt.timedelta(days=keep_versions_days) if keep_versions_days is not None else None
        table.optimize(cleanup_older_than=cleanup, delete_unverified=keep_versions_days == 0)
        return {"before": before, "after": self.shape()}

    def shape(self) -> dict[str, int]:
        """Rows, fragments, versions and bytes on disk of the table (what many small commits grow)."""
        table = self.table
        stats = table.stats()
        disk = sum(f.stat().st_size for f in (self.root / f"{TABLE}.lance").rglob("*") if f.is_file())
        return {
            "rows": int(stats["num_rows"]),
            "fragments": int(stats["fragment_stats"]["num_fragments"]),
            "versions": len(table.list_versions()),
            "disk_bytes": disk,
        }
