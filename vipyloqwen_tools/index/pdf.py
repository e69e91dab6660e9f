"""PDF pages as images: the ``report.pdf#page=N`` image reference of an items file, sized by the image budget.

Visual-document retrieval embeds a PDF page by page as images (the ColPali way). In an items file a page is an
image reference ``"images": ["report.pdf#page=2"]`` (1-based page number, the ``#page=`` fragment of PDF open
parameters); ``--items FOLDER`` writes one such item per page. The page is rendered (PDFium, through pypdfium2)
only when it is embedded, at the scale that makes it fill the per-image token budget: ``max_image_tokens`` tokens
of 28x28 pixels (:data:`images_vipyloqwen.PATCH`), so the render is as sharp as the model can see and no sharper.
For the default budget of 1024 tokens an A4 page (595 x 842 pt) renders at 91 DPI, 753 x 1065 pixels.

PDFium is not thread-safe (one call at a time in a process, whatever the document), so every call here holds
:data:`_PDFIUM_LOCK`; rendering in worker *processes* runs in parallel.

Example::

    >>> split_page_ref("docs/report.pdf#page=2")
    ('docs/report.pdf', 2)
    >>> render_page("docs/report.pdf", 2, max_pixels=1024 * 28 * 28).size
    (753, 1065)
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from pathlib import Path

import numpy as np

from images_vipyloqwen import PATCH

PAGE_FRAGMENT = "#page="
_PAGE_REF = re.compile(r"^(?P<path>.+\.pdf)#page=(?P<page>[1-9][0-9]*)$", re.IGNORECASE)
_PDFIUM_LOCK = threading.Lock()


class PdfError(ValueError):
    """A PDF that cannot be read: encrypted (a password is needed), damaged, or a page number it does not have."""


def page_ref(path: str | os.PathLike, page: int) -> str:
    """The image reference of page ``page`` (1-based) of the PDF at ``path``."""
    return f"{os.fspath(path)}{PAGE_FRAGMENT}{page}"


def split_page_ref(value: str) -> tuple[str, int] | None:
    """``(pdf path, 1-based page)`` of a page reference, or None for any other image value."""
    match = _PAGE_REF.match(value) if isinstance(value, str) else None
    return (match["path"], int(match["page"])) if match else None


def max_pixels(max_image_tokens: int) -> int:
    """The pixel budget of one image: ``max_image_tokens`` merged tokens of ``PATCH`` x ``PATCH`` pixels."""
    return max_image_tokens * PATCH * PATCH


def _open(path: str):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as error:
        if error.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise PdfError(f"{path}: encrypted PDF (a password is needed to open it); decrypt it to index it") from None
        raise PdfError(f"{path}: cannot read the PDF ({error})") from None
    except OSError as error:
        raise PdfError(f"{path}: cannot read the PDF ({error})") from None


@functools.lru_cache(maxsize=256)
def _sizes(path: str, size: int, mtime_ns: int) -> tuple[tuple[float, float], ...]:
    del size, mtime_ns  # the cache key: a rewritten file is read again
    with _PDFIUM_LOCK:
        document = _open(path)
        try:
            return tuple(tuple(document[index].get_size()) for index in range(len(document)))
        finally:
            document.close()


def page_sizes(path: str | os.PathLike) -> tuple[tuple[float, float], ...]:
    """(width, height) in points of every page (after the page's rotation), read without rendering; cached while
    the file's size and mtime stay the same. Raises :class:`PdfError` for an unreadable or encrypted PDF."""
    path = os.fspath(path)
    try:
        stat = os.stat(path)
    except OSError as error:
        raise PdfError(f"{path}: cannot read the PDF ({error.strerror})") from None
    sizes = _sizes(path, stat.st_size, stat.st_mtime_ns)
    if not sizes:
        raise PdfError(f"{path}: the PDF has no pages")
    return sizes


def _page_size(path: str, page: int) -> tuple[float, float]:
    sizes = page_sizes(path)
    if not 1 <= page <= len(sizes):
        raise PdfError(f"{path}: no page {page} (the PDF has {len(sizes)} pages)")
    return sizes[page - 1]


def render_scale(size: tuple[float, float], pixels: int) -> float:
    """Pixels per point that make a page of ``size`` points fill ``pixels`` (PDFium rounds each side up)."""
    width, height = size
    scale = math.sqrt(pixels / (width * height))
    while scale > 0 and math.ceil(width * scale) * math.ceil(height * scale) > pixels:
        scale *= 0.999
    return scale


def render_size(path: str | os.PathLike, page: int, pixels: int) -> tuple[int, int]:
    """(width, height) in pixels that :func:`render_page` gives, computed without rendering."""
    width, height = _page_size(os.fspath(path), page)
    scale = render_scale((width, height), pixels)
    return math.ceil(width * scale), math.ceil(height * scale)


def placeholder(path: str | os.PathLike, page: int, pixels: int) -> np.ndarray:
    """A zero-byte stand-in with the rendered page's shape (a broadcast array): what encode's length estimate
    and size checks read before any page is rendered."""
    width, height = render_size(path, page, pixels)
    return np.broadcast_to(np.zeros((), dtype=np.uint8), (height, width))


def render_page(path: str | os.PathLike, page: int, pixels: int):
    """Page ``page`` (1-based) of the PDF at ``path`` as an RGB PIL image filling ``pixels`` (see the module
    docstring). Raises :class:`PdfError` naming the file for an unreadable PDF or a page it does not have."""
    path = os.fspath(path)
    scale = render_scale(_page_size(path, page), pixels)
    with _PDFIUM_LOCK:
        document = _open(path)
        try:
            bitmap = document[page - 1].render(scale=scale, rev_byteorder=True)
            return bitmap.to_pil().convert("RGB")
        finally:
            document.close()


def check_page_ref(value: str, root: Path) -> str:
    """The absolute page reference of ``value`` (its path relative to ``root``), checked: the PDF opens and has
    that page. Raises :class:`PdfError` with the reason."""
    path, page = split_page_ref(value)  # type: ignore[misc]
    absolute = Path(path) if os.path.isabs(path) else root / path
    _page_size(str(absolute), page)
    return page_ref(absolute, page)
