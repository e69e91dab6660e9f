"""Image input handling for viPyloQwen: load, orient, convert to RGB and bound the size of one image.

Every image an item carries passes through :func:`prepare_image` before the Qwen2-VL image processor.

Accepted image values (anything else is a TypeError naming the item and listing these):

- a ``PIL.Image.Image`` (a closed one is a ValueError naming the item);
- a local path (``str`` or ``os.PathLike`` such as ``pathlib.Path``); a missing or unreadable file is a
  ValueError naming the item and the path;
- an ``http://`` / ``https://`` URL, downloaded with a timeout of :data:`URL_TIMEOUT_S` seconds and at most
  :data:`URL_MAX_BYTES` bytes (a larger or slower download is a ValueError naming the item and the URL);
  a ``data:image/...;base64,...`` URI;
- encoded file bytes (``bytes``, ``bytearray``, ``memoryview``);
- a numpy array ``HxW`` (grey) or ``HxWxC`` (C = 1, 2, 3, 4; ``CxHxW`` too when unambiguous), or a torch tensor
  ``CxHxW`` (the torch convention) or ``HxWxC``; ``uint8`` values (or other integers within 0..255) or floats in
  [0, 1]. NaN/Inf values, floats outside [0, 1] and other dtypes are ValueErrors naming the item.

Then:

- animated images (GIF, APNG, WebP, multi-page TIFF) use their first frame; a file this module opens is closed
  after reading; a caller's open image is left open, at the frame it was at;
- EXIF orientation is applied; every mode (L, LA, RGBA, P, CMYK, I;16, I, F, ...) becomes RGB, with
  transparency composited on white and 16/32-bit data scaled to 8 bits;
- an image with a side shorter than one 28-pixel merged patch is upscaled (aspect kept) so that side is
  28 pixels; an aspect ratio above 200 (which Qwen2-VL cannot resize) is a ValueError;
- an image far above the pixel budget is shrunk early: JPEG files are decoded at a reduced scale (draft
  mode, 1/2 to 1/8 per side), then every image is box-reduced by an integer factor to no less than four
  times the budget; the processor then resizes it exactly into the budget.

Huge files: PIL refuses files above about 179 million pixels (its decompression-bomb guard). Files
opened here are instead checked against :data:`MAX_IMAGE_PIXELS` (1,000,000,000 pixels, e.g. 31,622 x 31,622)
from their header, before any pixel is decoded, and against :data:`MAX_DECODE_PIXELS` (400,000,000 pixels,
e.g. a 20,000 x 20,000 page) for what is actually decoded: a JPEG decoded in draft mode needs at most 1/4 of
its pixels (1/64 far above the budget), other formats (PNG, TIFF, WebP, ...) are decoded in full, so their
decoded size, and so their memory (1 to 4 bytes per pixel), is bounded by that budget. Past either limit the
error names the item, the size and the limit. Both are module attributes (raise them knowingly).

Every size rule (zero side, aspect ratio, the two pixel limits) raises :class:`ImageSizeError`, a ValueError;
:func:`check_image_file` applies them all to a file from its header alone (the training data validator refuses
such an image with its line, ``vipyloqwen_tools/data/schema.py``).

Example::

    >>> from PIL import Image
    >>> prepare_image(Image.new("RGBA", (10, 40)), where="item 1, image 1").size
    (28, 112)
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# One merged image token covers a PATCH x PATCH pixel area (patch 14, merge 2) and is PATCHES_PER_TOKEN vision
# patches (2 x 2) in the vision tower.
PATCH = 28
PATCHES_PER_TOKEN = 4
MAX_ASPECT_RATIO = 200
# Images above this multiple of the pixel budget are pre-shrunk before the exact resize.
PRESHRINK_FACTOR = 4
# Largest image (width x height, from the file header) accepted from a file, bytes or a URL.
MAX_IMAGE_PIXELS = 1_000_000_000
# Largest number of pixels decoded from one file (after JPEG draft scaling): bounds the memory of one image.
MAX_DECODE_PIXELS = 400_000_000
# Image URLs: seconds to connect / between received bytes, and the largest download accepted.
URL_TIMEOUT_S = 10.0
URL_MAX_BYTES = 64 * 2**20
ACCEPTED = (
    "a PIL.Image.Image, a path (str / pathlib.Path), an http(s) URL, a data:image URI, encoded bytes, "
    "a numpy array (HxW, HxWxC) or a torch tensor (CxHxW, HxWxC)"
)
# EXIF orientation -> the transposition that displays the image upright (as PIL.ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes PIL's Image.reduce supports; others are converted first.
_REDUCIBLE = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "I", "F", "PA"}
_PIL_LIMIT_LOCK = threading.Lock()


def is_url(value: object) -> bool:
    """Whether ``value`` is an http(s) URL or a data URI (rather than a local path)."""
    return isinstance(value, str) and value.startswith(("http://", "https://", "data:"))


def describe(image: object) -> str:
    """A short description of an image value for error messages: its path/URL, or its type and size."""
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if isinstance(text, str) and text.startswith("data:"):
            return f"data URI ({len(text)} characters)"
        return repr(text if len(text) <= 80 else text[:77] + "...")
    if isinstance(image, Image.Image):
        return f"PIL {image.mode} {image.size[0]}x{image.size[1]}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"{len(image)} bytes"
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{type(image).__module__.split('.')[0]} {getattr(image, 'dtype', '')} {tuple(shape)}"
    return type(image).__name__


# ----------------------------------------------------------------------------------------------- files


@contextmanager
def _pil_limit_lifted() -> Iterator[None]:
    """Let PIL open files above its decompression-bomb limit: this module checks its own limits right after
    reading the header. The lock keeps concurrent opens from restoring the limit under each other."""
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


# Public: the data validator decodes a file under the same lifted limit as this module (its own limits checked first).
pil_limit_lifted = _pil_limit_lifted


class ImageSizeError(ValueError):
    """An image whose size breaks one of this module's rules: a zero side, an aspect ratio above
    :data:`MAX_ASPECT_RATIO`, more than :data:`MAX_IMAGE_PIXELS` in the file, more than :data:`MAX_DECODE_PIXELS`
    to decode. A ValueError naming the item, like every image error here; its own type lets a caller tell "the
    file reads, but the model cannot take it" from "the file does not read"."""


def _check_file_pixels(size: tuple[int, int], where: str, source: str) -> None:
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageSizeError(
            f"{where}: image {source} is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, above the limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels (images_vipyloqwen.MAX_IMAGE_PIXELS); downscale it first"
        )


def _check_header(opened: Image.Image, where: str, source: str, max_pixels: int | None) -> None:
    """The limits of a file, from its header: its pixel count, then (JPEG: at the draft scale chosen for
    ``max_pixels``, which this sets) the pixels it would decode."""
    _check_file_pixels(opened.size, where, source)
    if max_pixels is not None and opened.format == "JPEG":
        # Decode at a reduced scale (1/2..1/8 per side) when the file is far larger than the budget.
        side = int((PRESHRINK_FACTOR * max_pixels) ** 0.5)
        opened.draft("RGB", (side, side))
    decoded = opened.size[0] * opened.size[1]
    if decoded > MAX_DECODE_PIXELS:
        drafted = max_pixels is not None and opened.format == "JPEG"
        kind = "a JPEG at its draft scale" if drafted else f"a {opened.format} image"
        raise ImageSizeError(
            f"{where}: image {source} ({opened.format} {opened.size[0]}x{opened.size[1]}) would decode "
            f"{decoded:,} pixels as {kind}, above the decode budget of {MAX_DECODE_PIXELS:,} pixels "
            "(images_vipyloqwen.MAX_DECODE_PIXELS); save it as JPEG (decoded at a reduced scale) or "
            "downscale it"
        )


def _open(fp: Any, where: str, source: str, max_pixels: int | None) -> Image.Image:
    """Open and decode one image file (path or file object): frame 0, file closed, within the pixel limits."""
    try:
        with _pil_limit_lifted():
            opened = Image.open(fp)
        with opened:
            _check_header(opened, where, source, max_pixels)
            opened.load()
            # A multi-frame file keeps its file open for seeking: copy frame 0 out so it can be closed here.
            image = opened.copy() if getattr(opened, "n_frames", 1) > 1 else opened
            exif = opened.getexif()
            if image is not opened and exif.get(0x0112, 1) != 1:
                image.info["exif"] = exif.tobytes()
    except FileNotFoundError:
        raise ValueError(f"{where}: image file not found: {os.fspath(fp)!r}") from None
    except UnidentifiedImageError:
        raise ValueError(f"{where}: cannot read image {source}: not in an image format PIL can read") from None
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ValueError(f"{where}: cannot read image {source}: {error}") from None
    return image


def check_image_file(path: str | os.PathLike, where: str, max_pixels: int | None = None) -> tuple[int, int]:
    """Check an image file against every size rule of :func:`prepare_image` from its header, decoding nothing:
    the pixel limit of a file, the decode budget (a JPEG at its draft scale for ``max_pixels``; ``None``: decoded in
    full), a zero side and the aspect ratio (:func:`check_size`). Returns the file's ``(width, height)``.

    Raises :class:`ImageSizeError` naming ``where`` for a size the model cannot take; a file that does not open
    raises what PIL raises (OSError, ...). A data validator calls this to refuse such an image up front, with its
    line, instead of at the batch that would load it.

    Example::

        >>> check_image_file("img/strip.png", "line 12, image 1")
        ImageSizeError: line 12, image 1: aspect ratio 250 exceeds 200 (size 5000x20); crop or pad the image
    """
    source = f"file {os.fspath(path)!r}"
    with _pil_limit_lifted():
        opened = Image.open(path)
    with opened:
        size = opened.size
        check_size(size, where)
        _check_header(opened, where, source, max_pixels)
    return size


def _download(url: str, where: str) -> bytes:
    """The bytes of an http(s) URL: timeout URL_TIMEOUT_S, at most URL_MAX_BYTES."""
    request = urllib.request.Request(url, headers={"User-Agent": "viPyloQwen"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > URL_MAX_BYTES:
                raise ValueError(
                    f"{where}: image URL {url!r} is {int(length):,} bytes, above the limit of {URL_MAX_BYTES:,} "
                    "bytes (images_vipyloqwen.URL_MAX_BYTES)"
                )
            data = response.read(URL_MAX_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise ValueError(f"{where}: cannot download image {url!r}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ValueError(f"{where}: cannot download image {url!r} (timeout {URL_TIMEOUT_S:g} s): {reason}") from None
    if len(data) > URL_MAX_BYTES:
        raise ValueError(
            f"{where}: image URL {url!r} sent more than {URL_MAX_BYTES:,} bytes (images_vipyloqwen.URL_MAX_BYTES)"
        )
    return data


def _data_uri(uri: str, where: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError(f"{where}: expected a data URI of the form 'data:image/<type>;base64,<data>'")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"{where}: the data URI is not valid base64: {error}") from None


# ----------------------------------------------------------------------------------------------- arrays


def _from_array(array: Any, where: str) -> Image.Image:
    """A numpy array or torch tensor (HxW, HxWxC, CxHxW; uint8 / integers in 0..255 / floats in [0, 1])."""
    channels_first = False
    if not isinstance(array, np.ndarray):  # a torch tensor: CxHxW unless it is clearly HxWxC
        tensor = array.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()  # numpy has no bfloat16
        array = tensor.numpy()
        channels_first = array.ndim == 3 and array.shape[0] in (1, 2, 3, 4)
    if array.ndim == 3:
        first, last = array.shape[0] in (1, 2, 3, 4), array.shape[-1] in (1, 2, 3, 4)
        if channels_first or (first and not last):
            array = np.moveaxis(array, 0, -1)
        elif not last:
            raise ValueError(
                f"{where}: image array of shape {array.shape} has no channel axis of size 1-4 (expected HxW, "
                "HxWxC or CxHxW)"
            )
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"{where}: image array must be HxW, HxWxC or CxHxW, got {array.ndim} dimensions")
    if array.size == 0:
        raise ValueError(f"{where}: image has zero size {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: image has NaN or infinite pixel values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{where}: float image values must lie in [0, 1], got [{low:g}, {high:g}]; pass uint8 for 0-255 data"
            )
        array = np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)
    elif array.dtype.kind in "iu" and array.dtype != np.uint8:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{where}: integer image values must lie in 0..255, got {low}..{high} ({array.dtype}); "
                "scale to uint8 or to floats in [0, 1]"
            )
        array = array.astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"{where}: image array dtype {array.dtype} is not supported; use uint8 or floats in [0, 1]")
    # uint8 HxW -> L, HxWx2 -> LA, HxWx3 -> RGB, HxWx4 -> RGBA (PIL infers the mode from the shape).
    return Image.fromarray(np.ascontiguousarray(array))


def _is_tensor(value: object) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


# ----------------------------------------------------------------------------------------------- PIL


def _closed(where: str) -> ValueError:
    return ValueError(
        f"{where}: the PIL image was closed (image.close(), or its `with Image.open(...)` block ended before it "
        "was loaded); keep it open until encode returns, or pass its path"
    )


def _first_frame(image: Image.Image, where: str) -> Image.Image:
    """The caller's PIL image, loaded, at frame 0 (an animated image is copied; its frame is restored)."""
    if isinstance(image, ImageFile.ImageFile) and image.tile and getattr(image, "fp", None) is None:
        raise _closed(where)  # a lazily opened file whose file was closed before its pixels were read
    try:
        if getattr(image, "n_frames", 1) > 1:
            position = image.tell()
            image.seek(0)
            try:
                frame = image.copy()
            finally:
                image.seek(position)
            return frame
        image.load()
    except ValueError as error:
        if "closed" in str(error):
            raise _closed(where) from None
        raise
    except OSError as error:  # truncated / corrupt data surfaces on first decode
        raise ValueError(f"{where}: cannot decode image: {error}") from None
    return image


def _scale_to_8bit(image: Image.Image, where: str) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: image has NaN or infinite pixel values")
    if image.mode == "F" and array.size and array.max() <= 1.0:
        array = array * 255.0
    elif image.mode.startswith("I") and array.size and array.max() > 255:
        array = array * (255.0 / 65535.0) if array.max() <= 65535 else array * (255.0 / array.max())
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image, where: str = "image") -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode to RGB (transparency over white)."""
    orientation = image.getexif().get(0x0112, 1)
    if orientation in _ORIENTATION:  # transposing copies, so only when needed
        image = image.transpose(_ORIENTATION[orientation])
    return _rgb(image, where)


def _rgb(image: Image.Image, where: str) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _scale_to_8bit(image, where)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def check_size(size: tuple[int, int], where: str) -> None:
    """Raise :class:`ImageSizeError` (a ValueError) naming the item for a size Qwen2-VL cannot take (zero side,
    aspect ratio > 200)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageSizeError(f"{where}: image has zero size {width}x{height}")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageSizeError(
            f"{where}: aspect ratio {max(width, height) / min(width, height):.0f} exceeds {MAX_ASPECT_RATIO}"
            f" (size {width}x{height}); crop or pad the image"
        )


# ----------------------------------------------------------------------------------------------- sizes


def preshrink_factor(width: int, height: int, max_pixels: int | None) -> int:
    """The integer factor :func:`prepare_image` box-reduces a decoded ``width`` x ``height`` image by before the
    image processor's exact resize: the largest that keeps at least :data:`PRESHRINK_FACTOR` x ``max_pixels``
    pixels and a short side of one merged patch; 1 (no reduction) below 2, without a budget or below one patch.

    Example::

        >>> preshrink_factor(4000, 3000, max_pixels=64 * 28 * 28)  # far above a 64-token budget
        7
        >>> preshrink_factor(1240, 1754, max_pixels=1024 * 28 * 28)
        1
    """
    if max_pixels is None or min(width, height) < PATCH:
        return 1
    factor = int((width * height / (PRESHRINK_FACTOR * max_pixels)) ** 0.5)
    factor = min(factor, min(width, height) // PATCH)
    return factor if factor >= 2 else 1


def upscaled_size(width: int, height: int) -> tuple[int, int]:
    """The size :func:`prepare_image` gives an image with a side shorter than one merged patch (:data:`PATCH`
    pixels): upscaled, aspect kept, so the short side is one patch. Larger sizes are returned unchanged.

    Example::

        >>> upscaled_size(10, 40)
        (28, 112)
    """
    if min(width, height) >= PATCH:
        return width, height
    scale = PATCH / min(width, height)
    return max(PATCH, round(width * scale)), max(PATCH, round(height * scale))


def prepared_size(width: int, height: int, max_pixels: int | None = None) -> tuple[int, int]:
    """The size of the image :func:`prepare_image` hands the image processor, from the decoded size alone: the
    pre-shrink (:func:`preshrink_factor`; PIL's ``Image.reduce`` keeps the partial last box, so sides round up),
    then the upscale of a side below one patch (:func:`upscaled_size`).

    A JPEG file far above the budget is decoded at a reduced scale first (draft mode), so from its header size
    the result can differ by a few pixels; for every other value the size is exact.

    Example::

        >>> prepared_size(4000, 3000, max_pixels=64 * 28 * 28)
        (572, 429)
    """
    factor = preshrink_factor(width, height, max_pixels)
    if factor > 1:
        width, height = -(-width // factor), -(-height // factor)
    return upscaled_size(width, height)


# ----------------------------------------------------------------------------------------------- public


def load_image(image: object, where: str, max_pixels: int | None = None) -> Image.Image:
    """Any accepted image value (see the module docstring) as a decoded PIL image at frame 0, mode unchanged.

    Files, bytes and URLs are opened here (JPEG draft decoding when ``max_pixels`` is far exceeded) and
    closed; a caller's PIL image is returned as is (loaded) unless it is animated.
    """
    if isinstance(image, Image.Image):
        return _first_frame(image, where)
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        return _open(io.BytesIO(_download(image, where)), where, f"URL {image!r}", max_pixels)
    if isinstance(image, str) and image.startswith("data:"):
        return _open(io.BytesIO(_data_uri(image, where)), where, describe(image), max_pixels)
    if isinstance(image, (str, os.PathLike)):
        return _open(image, where, f"file {os.fspath(image)!r}", max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _open(io.BytesIO(bytes(image)), where, f"bytes ({len(image)} bytes)", max_pixels)
    if isinstance(image, np.ndarray) or _is_tensor(image):
        return _from_array(image, where)
    raise TypeError(f"{where}: expected {ACCEPTED}; got {type(image).__name__}")


def image_size(image: object) -> tuple[int, int] | None:
    """(width, height) of an image value without decoding its pixels; None if unknown (URLs, unreadable)."""
    if isinstance(image, Image.Image):
        return image.size
    shape = getattr(image, "shape", None)
    if shape is not None and len(shape) in (2, 3):
        if len(shape) == 2:
            return int(shape[1]), int(shape[0])
        channels_first = shape[0] in (1, 2, 3, 4) and (_is_tensor(image) or shape[-1] not in (1, 2, 3, 4))
        return (int(shape[2]), int(shape[1])) if channels_first else (int(shape[1]), int(shape[0]))
    if is_url(image):
        return None
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray, memoryview)) else image
        try:
            with _pil_limit_lifted():
                opened = Image.open(source)
            with opened:
                return opened.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None  # reported with the item's name when the image is loaded
    return None


def prepare_image(image: object, where: str, max_pixels: int | None = None) -> Image.Image:
    """Return ``image`` as an RGB PIL image ready for the Qwen2-VL image processor.

    Args:
        image: any accepted image value (see the module docstring).
        where: names the item in error messages, e.g. ``"item 3 (text 'Biển số'), image 1"``.
        max_pixels: the per-image pixel budget; images far above it are shrunk early.
    """
    loaded = load_image(image, where, max_pixels)
    check_size(loaded.size, where)
    width, height = loaded.size
    orientation = loaded.getexif().get(0x0112, 1)
    out = loaded
    # Integer box reduction (cheap, anti-aliased) to no less than PRESHRINK_FACTOR x the budget, in the decoded
    # mode (before RGB conversion, so a huge grey page is never expanded to 4 bytes per pixel); the image processor
    # then resizes exactly into the budget.
    factor = preshrink_factor(width, height, max_pixels)
    if factor >= 2:
        if out.mode == "1":
            out = out.convert("L")  # 1 byte per pixel, as decoded
        elif out.mode not in _REDUCIBLE:
            out = _rgb(out, where)
        out = out.reduce(factor)
    if orientation in _ORIENTATION:
        out = out.transpose(_ORIENTATION[orientation])
    try:
        out = _rgb(out, where)
    except OSError as error:  # truncated / corrupt data surfaces on first decode
        raise ValueError(f"{where}: cannot decode image: {error}") from None
    if min(out.size) < PATCH:  # smaller than one merged patch: upscale so the short side is one patch
        out = out.resize(upscaled_size(*out.size), Image.BICUBIC)
    return out
