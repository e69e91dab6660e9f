"""Search an index built by ``scripts/index.py build``: a text, image or text+image query -> ranked items.

Example::

    >>> from vipyloqwen_tools.index.search import Index
    >>> index = Index("out/my-index")                       # the model named in the db's manifest
    >>> index.search("Tìm điều khoản bảo mật", k=3)
    [{'id': 'doc_privacy', 'score': 0.83, 'text': '...', 'images': [], 'task': None, 'metadata': {...}}, ...]
    >>> index.search({"text": "Biển số xe này là gì?", "images": ["plate.jpg"], "task": "ocr"}, k=5)
    >>> index.search("hợp đồng", k=5, where="json_get_string(metadata, 'source') = 'contracts'")

Scores are cosine similarities (the vectors are unit length). Without an ANN index (dbs under
``index_min_rows`` rows), and always with ``exact=True``, the ranking is an exact scan; with the IVF-PQ index
the candidates are re-scored with the stored full vectors (``refine_factor``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source
from vipyloqwen_tools.index.build import load_model, probe_vector
from vipyloqwen_tools.index.store import Store

# ANN search settings: partitions probed, and candidates re-ranked with full vectors per result wanted.
NPROBES = 32
REFINE_FACTOR = 10


def _query_parts(query: Any) -> tuple[str | None, Any, str | None]:
    """(text, images, task) of a query given as a string, an image, a path object or a dict."""
    if isinstance(query, dict):
        unknown = set(query) - {"text", "images", "image", "task"}
        if unknown:
            raise ValueError(f"query dict: unknown keys {sorted(unknown)}; valid: text, images, task")
        images = query.get("images", query.get("image"))
        return query.get("text"), images, query.get("task")
    if isinstance(query, str):
        return query, None, None
    if isinstance(query, os.PathLike):
        return None, os.fspath(query), None
    return None, query, None  # a PIL image (encode checks the type)


class Index:
    """An opened db folder and the model that embeds its queries.

    Args:
        db: the db folder.
        model: a loaded viPyloQwen ``AutoModel``, a checkpoint path / Hub id, or ``None`` for the manifest's model.
            A model other than the db's (another width, or other embeddings of the probe text) is refused.
        device: where a model loaded here runs (default: CUDA if available, else CPU).
    """

    def __init__(self, db: str | Path, model: Any = None, device: str | None = None) -> None:
        self.store = Store.open(db)
        name = model if isinstance(model, (str, os.PathLike)) else None
        if model is None or name is not None:
            if name is not None:
                name = check_model_source(name, "model")
            else:
                name = self.store.manifest["model"]
                try:
                    check_model_source(name, f"the model of {db} (its manifest)")
                except ModelSourceError as error:
                    fix = "if it moved, give its new place: --model / Index(db, model=...)"
                    raise ModelSourceError(f"{error}; {fix}") from None
            model = load_model(name, device)
        else:
            name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        self.model = model
        self.model_name = name
        self.store.check_model(name, model.config.embed_dim, probe_vector(model))
        self.table = self.store.table

    def embed(self, query: Any, task: str | None = None, max_image_tokens: int | None = None) -> torch.Tensor:
        """The query's unit vector [embed_dim]."""
        text, images, query_task = _query_parts(query)
        if task is not None and query_task is not None and task != query_task:
            raise ValueError(f"task given twice and different: {task!r} and {query_task!r}")
        return self.model.encode(
            text=text, images=images, task=task or query_task, max_image_tokens=max_image_tokens, num_workers=0
        )[0]

    def search(
        self,
        query: Any,
        k: int = 10,
        task: str | None = None,
        where: str | None = None,
        exact: bool = False,
    ) -> list[dict[str, Any]]:
        """The ``k`` best items for ``query``: dicts of id, score (cosine), text, images, task, metadata.

        Args:
            query: a text, a PIL image, a ``pathlib.Path`` to an image, or ``{"text", "images", "task"}``.
            k: results wanted (at most the db's size).
            task: the query's task (registry key or prefix token), e.g. ``"ocr"`` for a question about an image.
            where: a SQL filter on the columns (``task = 'ocr'``, ``json_get_string(metadata, 'lang') = 'vi'``),
                applied before the vector search.
            exact: rank by an exact scan even when the db has an ANN index.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return self.search_vector(self.embed(query, task), k, where=where, exact=exact)

    def search_vector(
        self, vector: torch.Tensor, k: int = 10, where: str | None = None, exact: bool = False
    ) -> list[dict[str, Any]]:
        """Like :meth:`search` for an embedding computed elsewhere."""
        return query_table(self.store, vector, k, where=where, exact=exact)


def query_table(
    store: Store, vector: torch.Tensor, k: int = 10, where: str | None = None, exact: bool = False
) -> list[dict[str, Any]]:
    """The ``k`` rows of ``store`` nearest to the unit ``vector`` (exact scan or IVF-PQ + re-ranking)."""
    values = vector.detach().float().cpu().reshape(-1)
    if values.numel() != store.embed_dim:
        raise ValueError(f"query vector has {values.numel()} dims, the db holds {store.embed_dim}")
    builder = store.table.search(values.numpy(), vector_column_name="vector").distance_type("dot").limit(k)
    builder = builder.select(["id", "text", "images", "task", "metadata", "_distance"])
    if where:
        builder = builder.where(where, prefilter=True)
    if exact or not store.has_vector_index():
        builder = builder.bypass_vector_index()
    else:
        builder = builder.nprobes(NPROBES).refine_factor(REFINE_FACTOR)
    hits = []
    for row in builder.to_list():
        metadata = row.get("metadata")
        hits.append(
            {
                "id": row["id"],
                "score": 1.0 - float(row["_distance"]),  # lance's dot distance is 1 - dot
                "text": row.get("text"),
                "images": list(row.get("images") or []),
                "task": row.get("task"),
                "metadata": json.loads(metadata) if isinstance(metadata, (str, bytes)) else (metadata or {}),
            }
        )
    return hits


def search(db: str | Path, query: Any, k: int = 10, model: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
    """One-shot :meth:`Index.search` (opens the db and loads the model each call; keep an :class:`Index` for many)."""
    return Index(db, model).search(query, k, **kwargs)
