"""The items file of ``scripts/index.py build``: one JSON object per line, parsed and checked one line at a time.

Schema::

    id        required  a non-empty string, unique in the db
    text      optional  the item's text (a typed task prefix such as "<ocr> ..." selects the task too)
    images    optional  1-5 image paths, relative to the items file's folder (or absolute); "image" (the key
                        Sentence-Transformers' dicts use) is read the same way; a PDF page is
                        ``"report.pdf#page=N"`` (1-based; rendered at the image budget, :mod:`.pdf`)
    task      optional  a registry key or its prefix token (default: --task, else none)
    ...       any other key is metadata: stored with the item (a JSON column) and returned by search

An item needs a text or at least one image. As in ``encode``, an empty or whitespace text (``""``, ``"   "``)
and a bare prefix (``"<ocr>"``) are valid: they embed as the task prefix and the end-of-text token.
A line that breaks the schema, an image file that does not exist, a PDF page that cannot be read (encrypted,
damaged, no such page) and a repeated id are *rejects*: reported with their line number, never embedded, and the
build goes on.

Example::

    >>> for line, item, error, item_id in read_items("corpus.jsonl"):
    ...     print(line, item.id if item else error)
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from configuration_vipyloqwen import MAX_IMAGES_PER_ITEM, resolve_task
from vipyloqwen_tools.index.pdf import check_page_ref, split_page_ref

RESERVED_KEYS = ("id", "text", "images", "image", "task")  # "image" (Sentence-Transformers' key) = "images"


@dataclass
class IndexItem:
    """One valid line of an items file."""

    line: int
    id: str
    text: str | None
    images: list[str]
    task: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Set by the build (:mod:`.fingerprint`): what decides unchanged / changed / metadata-only.
    content_hash: str | None = None
    fingerprint: str | None = None


def parse_item(raw: str, line: int, root: Path, default_task: str | None = None) -> IndexItem:
    """Parse one line; raises ``ValueError`` with the reason (the caller adds the line number)."""
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON: {error}") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    item_id = row.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise ValueError(f"'id' must be a non-empty string, got {item_id!r}")
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {type(text).__name__}")
    if "image" in row and "images" in row:
        raise ValueError("has both 'images' and 'image': give the image paths once, as 'images'")
    images = row.get("images", row.get("image"))
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError("'images' must be a list of image paths (strings)")
    if len(images) > MAX_IMAGES_PER_ITEM:
        raise ValueError(f"{len(images)} images, at most {MAX_IMAGES_PER_ITEM} per item")
    resolved = []
    for number, image in enumerate(images, start=1):
        if split_page_ref(image):
            try:
                resolved.append(check_page_ref(image, root))
            except ValueError as error:
                raise ValueError(f"image {number}: {error}") from None
            continue
        path = Path(image) if os.path.isabs(image) else root / image
        if not path.is_file():
            raise ValueError(f"image {number} not found: {image!r} (looked for {path})")
        resolved.append(str(path))
    # As in encode: "", "   " and a bare "<ocr>" are valid items (RAG splitters produce them); no text at all is not.
    if text is None and not resolved:
        raise ValueError("has neither text nor images (give 'text', even \"\", or 'images')")
    task = row.get("task", default_task)
    if task is not None:
        if not isinstance(task, str):
            raise ValueError(f"'task' must be a string, got {type(task).__name__}")
        task = resolve_task(task)  # ValueError naming the valid tasks
    metadata = {key: value for key, value in row.items() if key not in RESERVED_KEYS}
    return IndexItem(line=line, id=item_id, text=text, images=resolved, task=task, metadata=metadata)


def owner(item_id: str | None, line: int, world_size: int) -> int:
    """The rank that handles an item: by a stable hash of its id, so every copy of a repeated id meets on one
    rank (which reports the repeats); a line without a usable id goes by its line number."""
    if world_size == 1:
        return 0
    if item_id is None:
        return line % world_size
    return zlib.crc32(item_id.encode("utf-8")) % world_size


def _raw_id(raw: str) -> str | None:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError:
        return None
    value = row.get("id") if isinstance(row, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def read_items(
    path: str | Path, default_task: str | None = None, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[int, IndexItem | None, str | None, str | None]]:
    """Stream ``(line_number, item, None, id)`` or ``(line_number, None, error, id_or_None)`` for this rank's lines.

    Blank lines are skipped (not items). A repeated id is an error on the later line, naming the first one.
    Memory: one dict entry per id of this rank (id -> first line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"items file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        yield from parse_lines(handle, path.resolve().parent, default_task, rank, world_size)


def parse_lines(
    lines: Iterable[str], root: Path, default_task: str | None = None, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[int, IndexItem | None, str | None, str | None]]:
    """:func:`read_items` over lines already in hand (relative paths resolve against ``root``)."""
    first_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if world_size > 1 and owner(_raw_id(raw), number, world_size) != rank:
            continue
        try:
            item = parse_item(raw, number, root, default_task)
        except ValueError as error:
            yield number, None, str(error), _raw_id(raw)
            continue
        if item.id in first_line:
            yield number, None, f"duplicate id {item.id!r} (first at line {first_line[item.id]})", item.id
            continue
        first_line[item.id] = number
        yield number, item, None, item.id

