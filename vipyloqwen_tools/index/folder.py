"""``--items FOLDER``: a folder of documents as index items, one per text file or image and one per PDF page.

What becomes an item (files and folders whose names start with ``.`` are skipped, as are files of other kinds,
counted by suffix):

==================  =============================================  ==============================================
file                id                                             item
==================  =============================================  ==============================================
``.txt``, ``.md``   its path relative to the folder                ``text``: the file's UTF-8 text
an image            its relative path                              ``images``: the file (any format Pillow opens)
``.pdf``            ``<relative path>#page=N``, one per page       ``images``: the page (:mod:`.pdf`)
==================  =============================================  ==============================================

Every item carries the metadata ``path`` (relative, ``/``-separated), ``mtime`` (seconds since the epoch) and, for a
PDF page, ``page`` (1-based): search results name the file and page. A PDF that cannot be opened (encrypted,
damaged, no pages) and a text file that is not UTF-8 are *rejects* with the reason. The items are the same as an
items file's; :func:`write_items` saves them as one (``--write-items``) so they can be inspected, or built again.

Because the ids are paths and each row keeps a content fingerprint, building the same folder again is a sync:
unchanged files are skipped, edited ones re-embedded, new ones added (``--sync`` also removes deleted files).

Example::

    >>> for line, item, error, item_id in read_folder("docs"):
    ...     print(item_id, error or item.metadata)
    notes.md {'path': 'notes.md', 'mtime': 1733561234.5}
    report.pdf#page=1 {'path': 'report.pdf', 'page': 1, 'mtime': 1733561200.0}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vipyloqwen_tools.index.items import IndexItem, parse_item
from vipyloqwen_tools.index.pdf import PdfError, page_ref, page_sizes

TEXT_SUFFIXES = (".txt", ".md")
PDF_SUFFIX = ".pdf"


def image_suffixes() -> frozenset[str]:
    """The file suffixes Pillow can open (its registered readers), except PDF, which is read page by page."""
    Image.init()
    return frozenset(s for s, kind in Image.registered_extensions().items() if kind in Image.OPEN) - {PDF_SUFFIX}


@dataclass
class Rejected:
    """A file that gives no item, and why."""

    id: str
    error: str


def _kind(path: Path, images: frozenset[str]) -> str | None:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix == PDF_SUFFIX:
        return "pdf"
    return "image" if suffix in images else None


def folder_files(root: str | Path, exclude: Iterable[str | Path] = ()) -> Iterator[tuple[str, Path, str | None]]:
    """``(relative path, path, kind)`` of every file under ``root`` in path order (kind None: not indexed).
    Hidden names and the ``exclude`` folders (the db, when it lies inside) are skipped."""
    root = Path(root)
    excluded = {Path(p).resolve() for p in exclude}
    images = image_suffixes()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = here / name
            yield path.relative_to(root).as_posix(), path, _kind(path, images)


def folder_rows(root: str | Path, exclude: Iterable[str | Path] = (), skipped: Counter | None = None):
    """Items-file rows (dicts, absolute paths) and :class:`Rejected` files of the folder, in path order."""
    for relative, path, kind in folder_files(root, exclude):
        if kind is None:
            if skipped is not None:
                skipped[path.suffix.lower() or "(no suffix)"] += 1
            continue
        try:
            meta: dict[str, Any] = {"path": relative, "mtime": path.stat().st_mtime}
            if kind == "text":
                try:
                    text = path.read_text(encoding="utf-8-sig")
                except UnicodeDecodeError as error:
                    yield Rejected(relative, f"{relative}: not UTF-8 text ({error.reason} at byte {error.start})")
                    continue
                yield {"id": relative, "text": text, **meta}
            elif kind == "image":
                yield {"id": relative, "images": [str(path.resolve())], **meta}
            else:
                pages = page_sizes(path.resolve())
                for page in range(1, len(pages) + 1):
                    ref = page_ref(path.resolve(), page)
                    yield {"id": f"{relative}#page={page}", "images": [ref], "path": relative, "page": page,
                           "mtime": meta["mtime"]}  # fmt: skip
        except PdfError as error:
            yield Rejected(relative, str(error).replace(str(path.resolve()), relative))
        except OSError as error:
            yield Rejected(relative, f"{relative}: cannot read the file ({error.strerror or error})")


def read_folder(
    root: str | Path,
    default_task: str | None = None,
    exclude: Iterable[str | Path] = (),
    write_items: str | Path | None = None,
    skipped: Counter | None = None,
) -> Iterator[tuple[int | None, IndexItem | None, str | None, str | None]]:
    """The folder as :func:`~.items.read_items` tuples ``(line, item, error, id)``: items are numbered as the lines
    of the items file ``write_items`` (written as they stream, renamed into place at the end); a rejected file has
    line None. Raises ``FileNotFoundError`` if ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"items folder not found: {root}")
    sink, tmp = None, None
    if write_items is not None:
        tmp = Path(f"{write_items}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        sink = tmp.open("w", encoding="utf-8")
    try:
        line = 0
        for row in folder_rows(root, exclude, skipped):
            if isinstance(row, Rejected):
                yield None, None, row.error, row.id
                continue
            raw = json.dumps(row, ensure_ascii=False)
            line += 1
            if sink is not None:
                sink.write(raw + "\n")
            try:
                yield line, parse_item(raw, line, root.resolve(), default_task), None, row["id"]
            except ValueError as error:
                yield line, None, str(error), row["id"]
        if sink is not None:
            sink.close()
            os.replace(tmp, write_items)
    finally:
        if sink is not None and not sink.closed:
            sink.close()
