"""The vector index of ``scripts/index.py``: a JSONL corpus of texts / images / both -> a LanceDB table -> search.

- :mod:`.items`: one corpus line -> :class:`~.items.IndexItem` (validated, 1-based line numbers in errors).
- :mod:`.folder`: a folder of text files, images and PDFs -> items (ids are relative paths).
- :mod:`.pdf`: PDF pages as images (``report.pdf#page=N``), rendered at the image budget.
- :mod:`.fingerprint`: the content hash and fingerprint of an item (unchanged / changed / metadata only).
- :mod:`.build`: encode and upsert (new, changed, sync deletions), resumable, sharded over torchrun ranks.
- :mod:`.store`: the LanceDB table, its manifest, staging, one-commit upserts and deletes, compaction, ANN index.
- :mod:`.search`: :class:`~.search.Index` (``Index(db).search(query, k)``), the public search API.

Example::

    >>> from vipyloqwen_tools.index import Index
    >>> Index("out/my-index").search("Tìm điều khoản bảo mật", k=3)

May import: the Hub files (the model is loaded through transformers' AutoModel). ``vipyloqwen_tools.index_search``
is the old path of :mod:`.search`, kept for one release with a DeprecationWarning (:mod:`vipyloqwen_tools.moved`).
"""

from vipyloqwen_tools.index.search import Index, search

__all__ = ["Index", "search"]
