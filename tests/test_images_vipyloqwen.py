"""Image preparation: modes, EXIF orientation, tiny and huge images, unreadable files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from images_vipyloqwen import PATCH, image_size, prepare_image


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    image = make_image(64, 48).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        image = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.int32))
    elif mode == "F":
        image = Image.fromarray(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64))
    out = prepare_image(image, "item 0, image 0")
    assert out.mode == "RGB" and out.size == (64, 48)
    if mode in ("I;16", "I", "F"):
        array = np.asarray(out)
        assert array.max() > 200 and array.min() < 10  # the range is scaled, not clipped to white/black


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    assert prepare_image(image, "x").getpixel((5, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    image = make_image(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    out = prepare_image(path, "x")
    assert out.size == (40, 80)


def test_images_smaller_than_a_patch_are_upscaled():
    out = prepare_image(make_image(10, 40), "x")
    assert min(out.size) == PATCH and out.size == (PATCH, 112)


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ValueError, match="item 2, image 0: aspect ratio"):
        prepare_image(Image.new("RGB", (30 * 201, 30)), "item 2, image 0")


def test_huge_image_is_shrunk_early(tmp_path):
    path = tmp_path / "page.jpg"
    Image.new("RGB", (6000, 4000), (250, 250, 250)).save(path, quality=80)
    max_pixels = 64 * PATCH * PATCH
    out = prepare_image(path, "x", max_pixels=max_pixels)
    # JPEG draft + integer reduction: within [4, 16) x the budget, far below the 24M pixels of the file
    assert 4 * max_pixels <= out.size[0] * out.size[1] < 16 * max_pixels
    assert image_size(path) == (6000, 4000)


def test_non_image_object_and_missing_file():
    with pytest.raises(TypeError, match="item 3, image 1: expected a PIL.Image.Image, a path .* got dict"):
        prepare_image({"not": "an image"}, "item 3, image 1")
    with pytest.raises(ValueError, match=r"item 3, image 1: cannot read image bytes \(5 bytes\): not in an image"):
        prepare_image(b"bytes", "item 3, image 1")
    with pytest.raises(ValueError, match="image file not found: '/no/such.png'"):
        prepare_image("/no/such.png", "item 0, image 0")


def test_huge_in_memory_image_is_reduced_by_an_integer_factor():
    max_pixels = 64 * PATCH * PATCH
    out = prepare_image(Image.new("RGB", (3000, 2000), (9, 9, 9)), "x", max_pixels=max_pixels)
    assert out.size == (3000 // 5, 2000 // 5) and out.size[0] * out.size[1] >= 4 * max_pixels
    small = make_image(300, 200)
    assert prepare_image(small, "x", max_pixels=max_pixels) is small  # within budget x 4: untouched, no copy
