"""Image input handling for viPyloQwen: open, orient, convert to RGB and bound the size of one image.

Every image an item carries passes through :func:`prepare_image` before the Qwen2-VL image processor:

- a ``PIL.Image.Image`` or a path (``str`` / ``os.PathLike``) is accepted; anything else is a TypeError;
- a missing or unreadable file is a ValueError naming the item and the path;
- EXIF orientation is applied; every mode (L, LA, RGBA, P, CMYK, I;16, I, F, ...) becomes RGB, with
  transparency composited on white and 16/32-bit data scaled to 8 bits;
- an image with a side shorter than one 28-pixel merged patch is upscaled (aspect kept) so that side is
  28 pixels; an aspect ratio above 200 (which Qwen2-VL cannot resize) is a ValueError;
- an image far above the pixel budget is shrunk early (JPEG draft decoding, then an integer box reduction
  to no less than four times the budget) so a huge page costs no more memory than the budget needs; the processor then
  resizes it exactly to the budget.

Example::

    >>> from PIL import Image
    >>> prepare_image(Image.new("RGBA", (10, 40)), where="item 0, image 0").size
    (28, 112)
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# One merged image token covers a PATCH x PATCH pixel area (patch 14, merge 2).
PATCH = 28
MAX_ASPECT_RATIO = 200
# Images above this multiple of the pixel budget are pre-shrunk before the exact resize.
PRESHRINK_FACTOR = 4


def _open(path: str | os.PathLike, where: str, max_pixels: int | None) -> Image.Image:
    try:
        image = Image.open(path)
        if max_pixels is not None and image.format == "JPEG":
            # Decode at a reduced scale when the file is far larger than the budget.
            side = int((PRESHRINK_FACTOR * max_pixels) ** 0.5)
            image.draft("RGB", (side, side))
        image.load()
    except FileNotFoundError:
        raise ValueError(f"{where}: image file not found: {os.fspath(path)!r}") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: cannot read image file {os.fspath(path)!r}: {error}") from None
    return image


def image_size(image: object) -> tuple[int, int] | None:
    """(width, height) of a PIL image or image file without decoding its pixels; None if unknown."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                return opened.size
        except (OSError, ValueError, Image.DecompressionBombError):
            return None  # reported with the item's index when the image is loaded
    return None


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and array.size and array.max() <= 1.0:
        array = array * 255.0
    elif image.mode.startswith("I") and array.size and array.max() > 255:
        array = array * (255.0 / 65535.0) if array.max() <= 65535 else array * (255.0 / array.max())
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode to RGB (transparency over white)."""
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation tag; transposing copies, so only when needed
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _scale_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def prepare_image(image: object, where: str, max_pixels: int | None = None) -> Image.Image:
    """Return ``image`` (PIL image or path) as an RGB PIL image ready for the Qwen2-VL image processor.

    Args:
        image: a ``PIL.Image.Image`` or a path to an image file.
        where: names the item in error messages, e.g. ``"item 3, image 1"``.
        max_pixels: the per-image pixel budget; images far above it are shrunk early.
    """
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, where, max_pixels)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"{where}: expected a PIL.Image.Image or a path to an image file, got {type(image).__name__}")
    try:
        image = to_rgb(image)
    except OSError as error:  # truncated / corrupt data surfaces on first decode
        raise ValueError(f"{where}: cannot decode image: {error}") from None
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"{where}: image has zero size {image.size}")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"{where}: aspect ratio {max(width, height) / min(width, height):.0f} exceeds {MAX_ASPECT_RATIO}"
            f" (size {width}x{height}); crop or pad the image"
        )
    if min(width, height) < PATCH:
        # Smaller than one merged patch: upscale so the short side is one patch.
        scale = PATCH / min(width, height)
        image = image.resize((max(PATCH, round(width * scale)), max(PATCH, round(height * scale))), Image.BICUBIC)
    elif max_pixels is not None:
        # Integer box reduction (cheap, anti-aliased) to no less than PRESHRINK_FACTOR x the budget; the
        # image processor then resizes exactly into the budget.
        factor = int((width * height / (PRESHRINK_FACTOR * max_pixels)) ** 0.5)
        factor = min(factor, min(width, height) // PATCH)
        if factor >= 2:
            image = image.reduce(factor)
    return image
