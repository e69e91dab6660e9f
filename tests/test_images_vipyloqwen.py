"""Image preparation: modes, EXIF orientation, tiny and huge images, unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from images_vipyloqwen import PATCH, image_size, prepare_image, prepared_size


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



@pytest.mark.parametrize("budget", [16, 64, 1024])
def test_prepared_size_is_the_size_prepare_image_gives(budget):
    """The size rule (pre-shrink, upscale) that the token count and the planner use, against prepare_image itself:
    sides below a patch, odd sizes that reduce() rounds up, far above the budget, extreme aspect ratios."""
    max_pixels = budget * PATCH * PATCH
    sizes = [(10, 40), (1, 27), (27, 5000), (28, 28), (29, 3001), (301, 199), (1001, 777), (2999, 2001), (3000, 40)]
    for width, height in sizes:
        out = prepare_image(Image.new("L", (width, height)), "x", max_pixels=max_pixels)
        assert prepared_size(width, height, max_pixels) == out.size, (width, height)
    assert prepared_size(4000, 3000) == (4000, 3000)  # no budget: no pre-shrink

# ---------------------------------------------------------------- issue 11: image values as clients send them
import io  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import images_vipyloqwen  # noqa: E402


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(prepare_image(image, "x"))


def test_arrays_and_tensors_in_every_layout_equal_the_pil_image():
    rgb = make_image(50, 40, seed=2)
    array = np.asarray(rgb)  # HxWx3 uint8
    expected = pixels(rgb)
    for value in (
        array,
        np.moveaxis(array, -1, 0),  # CxHxW numpy (unambiguous)
        array.astype(np.float32) / 255.0,  # float in [0, 1]
        torch.from_numpy(np.moveaxis(array, -1, 0).copy()),  # CxHxW uint8 tensor
        torch.from_numpy(np.moveaxis(array, -1, 0).copy()).float() / 255.0,  # CxHxW float (torchvision's ToTensor)
        torch.from_numpy(array.copy()),  # HxWxC tensor
        torch.from_numpy(array.astype(np.int64)),  # integers within 0..255
    ):
        assert np.array_equal(np.asarray(prepare_image(value, "x")), expected), type(value)
    grey = np.asarray(rgb.convert("L"))
    assert np.array_equal(np.asarray(prepare_image(grey, "x")), pixels(rgb.convert("L")))  # HxW
    assert np.array_equal(np.asarray(prepare_image(grey[..., None], "x")), pixels(rgb.convert("L")))  # HxWx1
    rgba = np.dstack([array, np.full(array.shape[:2], 255, np.uint8)])
    assert np.array_equal(np.asarray(prepare_image(rgba, "x")), expected)
    assert images_vipyloqwen.image_size(torch.zeros(3, 40, 50)) == (50, 40) == images_vipyloqwen.image_size(array)


@pytest.mark.parametrize(
    "value, match",
    [
        (np.full((20, 30, 3), np.nan, np.float32), "NaN or infinite"),
        (torch.full((3, 20, 30), float("inf")), "NaN or infinite"),
        (np.full((20, 30), 2.0), r"float image values must lie in \[0, 1\], got \[2, 2\]"),
        (np.full((20, 30, 3), 300, np.int32), "integer image values must lie in 0..255"),
        (np.zeros((20, 30, 7), np.uint8), "no channel axis of size 1-4"),
        (np.zeros((2, 20, 30, 3), np.uint8), "must be HxW, HxWxC or CxHxW"),
        (np.zeros((20, 30), bool), "dtype bool is not supported"),
        (Image.fromarray(np.full((20, 30), np.nan, np.float32)), "NaN or infinite"),
    ],
)
def test_bad_pixel_values_are_errors_naming_the_item(value, match):
    with pytest.raises(ValueError, match=f"item 4, image 2: .*{match}"):
        prepare_image(value, "item 4, image 2")


def test_bytes_path_and_data_uri_equal_the_file(tmp_path):
    import base64

    image = make_image(64, 48, seed=5)
    path = tmp_path / "a.png"
    image.save(path)
    expected = np.asarray(prepare_image(str(path), "x"))
    uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    for value in (Path(path), path.read_bytes(), bytearray(path.read_bytes()), memoryview(path.read_bytes()), uri):
        assert np.array_equal(np.asarray(prepare_image(value, "x")), expected), type(value)
    assert images_vipyloqwen.image_size(path.read_bytes()) == (64, 48)
    with pytest.raises(ValueError, match="item 1, image 0: expected a data URI"):
        prepare_image("data:text/plain,hello", "item 1, image 0")


def test_http_urls_with_timeout_and_byte_cap(image_server, monkeypatch):
    base, body = image_server
    expected = np.asarray(prepare_image(io.BytesIO(body).getvalue(), "x"))
    assert np.array_equal(np.asarray(prepare_image(f"{base}/ok.png", "x")), expected)
    with pytest.raises(ValueError, match=r"item 0, image 1: cannot download image .*/missing.png.*HTTP 404"):
        prepare_image(f"{base}/missing.png", "item 0, image 1")
    monkeypatch.setattr(images_vipyloqwen, "URL_MAX_BYTES", len(body) + 100)
    with pytest.raises(ValueError, match=r"item 2, image 0: image URL .*/big.png' sent more than"):
        prepare_image(f"{base}/big.png", "item 2, image 0")
    monkeypatch.setattr(images_vipyloqwen, "URL_TIMEOUT_S", 0.3)
    with pytest.raises(ValueError, match=r"item 3, image 0: cannot download image .*slow.png.*timeout 0.3 s"):
        prepare_image(f"{base}/slow.png", "item 3, image 0")


def test_closed_image_is_an_error_naming_the_item(tmp_path):
    image = make_image()
    image.close()
    with pytest.raises(ValueError, match="item 5, image 0: the PIL image was closed"):
        prepare_image(image, "item 5, image 0")
    path = tmp_path / "a.png"
    make_image().save(path)
    with Image.open(path) as lazy:  # opened but never loaded
        pass
    with pytest.raises(ValueError, match="item 1, image 0: the PIL image was closed"):
        prepare_image(lazy, "item 1, image 0")


def _open_fds_to(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += Path(os.readlink(fd)) == path
        except OSError:
            pass
    return count


def test_animated_image_uses_frame_0_and_closes_the_file(tmp_path):
    frames = [Image.new("RGB", (40, 30), color) for color in ((200, 10, 10), (10, 200, 10), (10, 10, 200))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    out = prepare_image(path, "x")
    assert out.getpixel((5, 5)) == pytest.approx((200, 10, 10), abs=8)
    assert _open_fds_to(path.resolve()) == 0  # the file was closed
    # A caller's open image at frame 2: frame 0 is embedded, the image stays open at frame 2.
    with Image.open(path) as caller:
        caller.seek(2)
        assert prepare_image(caller, "x").getpixel((5, 5)) == pytest.approx((200, 10, 10), abs=8)
        assert caller.tell() == 2


@pytest.fixture(scope="module")
def page_20k(tmp_path_factory) -> Path:
    """A 20000 x 20000 JPEG page scan (400 M pixels; PIL alone refuses it): 1.5 s to write."""
    path = tmp_path_factory.mktemp("huge") / "page.jpg"
    Image.new("L", (20000, 20000), 250).save(path, quality=50)
    return path


def test_break8_huge_jpeg_page_is_decoded_at_a_reduced_scale(page_20k):
    with pytest.raises(Image.DecompressionBombError):  # PIL's own guard, left in place for everyone else
        Image.open(page_20k)
    budget = 1024 * PATCH * PATCH
    out = prepare_image(page_20k, "x", max_pixels=budget)
    assert out.mode == "RGB" and out.size == (2500, 2500)  # draft decoding at 1/8 per side
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # restored
    assert image_size(page_20k) == (20000, 20000)


def test_break8_pixel_limits_for_files(tmp_path, monkeypatch):
    path = tmp_path / "scan.png"
    Image.new("L", (400, 300), 200).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # PIL's guard would refuse this file
    assert prepare_image(path, "x").size == (400, 300)
    monkeypatch.setattr(images_vipyloqwen, "MAX_DECODE_PIXELS", 100_000)  # a PNG is decoded in full
    with pytest.raises(ValueError, match=r"item 7, image 0: image file '.*scan.png' \(PNG 400x300\) would decode"):
        prepare_image(path, "item 7, image 0")
    monkeypatch.setattr(images_vipyloqwen, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(ValueError, match=r"item 7, image 0: image .* is 400x300 = 120,000 pixels, above the limit"):
        prepare_image(path, "item 7, image 0")
