"""Deprecated path of :mod:`vipyloqwen_tools.index.search` (kept for one release).

Use ``from vipyloqwen_tools.index import Index`` (or ``vipyloqwen_tools.index.search``).
"""

import warnings

from vipyloqwen_tools.index.search import Index, query_table, search

warnings.warn(
    "vipyloqwen_tools.index_search moved to vipyloqwen_tools.index.search (use `from vipyloqwen_tools.index import "
    "Index`); the old path will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["Index", "query_table", "search"]
