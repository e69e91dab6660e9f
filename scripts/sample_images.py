"""Real-size document and picture renderers of the sample data (used by scripts/make_sample_data.py).

Every image is sized to reach 500-1024 image tokens at the default budget (1024 tokens = 28 x 28-pixel cells):

- :func:`receipt`: a till receipt, 640 x ~1150 px: shop header band in the shop's colour, items, total (~940 tokens);
- :func:`form`: a membership form, 1120 x 800 px, landscape, filled-in fields and ticked boxes (budget-capped);
- :func:`page`: an A4 notice at ~120 dpi, 992 x 1403 px, national motto, title, paragraphs, signature (capped);
- :func:`chart`: a bar chart with a Vietnamese title, axis and labels, 896 x 672 px (768 tokens);
- :func:`scene`: one drawn shape on a light background, 840 x 840 px (900 tokens).

Text is rendered in Be Vietnam Pro (PyPI ``fontpkg-be-vietnam-pro``, OFL-1.1), a typeface designed for
Vietnamese diacritics. Images are saved as 16-colour palette PNGs: text on white compresses to a few tens of KB.
"""

from __future__ import annotations

import random
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

FAMILY = "Be Vietnam Pro"
PAPER = (252, 252, 248)
INK = (28, 28, 32)
GREY = (120, 120, 126)


@lru_cache(maxsize=32)
def font(size: int, weight: int = 400) -> ImageFont.FreeTypeFont:
    """Be Vietnam Pro at ``size`` px and ``weight`` (400 regular, 600 semibold, 700 bold)."""
    try:
        import fontpkg
    except ImportError as error:
        raise ImportError("pip install fontpkg-be-vietnam-pro (the [train] extra) to render the sample data") from error
    return ImageFont.truetype(str(fontpkg.path(FAMILY, weight=weight)), size)


def money(value: int) -> str:
    """Vietnamese price format: 125000 -> '125.000 đ'."""
    return f"{value:,}".replace(",", ".") + " đ"


def receipt(rng: random.Random, shop: str, address: str, rgb: tuple[int, int, int], items: list[tuple[str, int, int]]):
    """A till receipt; ``items`` are (name, quantity, unit price)."""
    width, height = 640, 560 + 52 * len(items)
    image = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 150), fill=rgb)
    draw.text((width // 2, 58), shop.upper(), font=font(34, 700), fill=(255, 255, 255), anchor="mm")
    draw.text((width // 2, 110), address, font=font(20), fill=(255, 255, 255), anchor="mm")
    y = 180
    draw.text((width // 2, y), "HÓA ĐƠN BÁN LẺ", font=font(30, 700), fill=INK, anchor="mt")
    y += 50
    day, month, hour = rng.randint(1, 28), rng.randint(1, 12), rng.randint(7, 21)
    draw.text(
        (32, y), f"Ngày: {day:02d}/{month:02d}/2026   {hour:02d}:{rng.randint(0, 59):02d}", font=font(20), fill=GREY
    )
    draw.text((width - 32, y), f"Số: {rng.randint(1000, 9999)}", font=font(20), fill=GREY, anchor="ra")
    y += 40
    draw.line((32, y, width - 32, y), fill=INK, width=2)
    y += 14
    total = 0
    for name, quantity, price in items:
        draw.text((32, y), name, font=font(22), fill=INK)
        draw.text((32, y + 26), f"{quantity} x {money(price)}", font=font(18), fill=GREY)
        draw.text((width - 32, y + 10), money(quantity * price), font=font(22, 600), fill=INK, anchor="ra")
        total += quantity * price
        y += 52
    y += 8
    draw.line((32, y, width - 32, y), fill=INK, width=2)
    y += 18
    draw.text((32, y), "TỔNG CỘNG", font=font(28, 700), fill=INK)
    draw.text((width - 32, y), money(total), font=font(28, 700), fill=rgb, anchor="ra")
    y += 60
    draw.text((32, y), "Tiền mặt", font=font(20), fill=GREY)
    draw.text((width - 32, y), money(-(-total // 50_000) * 50_000), font=font(20), fill=GREY, anchor="ra")
    y += 60
    draw.text((width // 2, y), "Cảm ơn quý khách. Hẹn gặp lại!", font=font(22, 600), fill=INK, anchor="mt")
    return image


def form(rng: random.Random, org: str, rgb: tuple[int, int, int], fields: list[tuple[str, str]], boxes: list[str]):
    """A filled-in membership form (landscape); ``fields`` are (label, value), ``boxes`` tick-box labels."""
    width, height = 1120, 800
    image = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 24), fill=rgb)
    draw.text((56, 60), org.upper(), font=font(26, 700), fill=rgb)
    draw.text((width // 2, 130), "PHIẾU ĐĂNG KÝ THÀNH VIÊN", font=font(40, 700), fill=INK, anchor="mt")
    draw.text((width - 56, 64), f"Mã số: {rng.randint(100000, 999999)}", font=font(20), fill=GREY, anchor="ra")
    y = 220
    for label, value in fields:
        draw.text((72, y), f"{label}:", font=font(24, 600), fill=INK)
        draw.line((330, y + 32, width - 72, y + 32), fill=GREY, width=1)
        draw.text((340, y), value, font=font(24), fill=(20, 40, 120))
        y += 62
    y += 16
    draw.text((72, y), "Hình thức nhận thông tin:", font=font(24, 600), fill=INK)
    x = 400
    for label in boxes:
        draw.rectangle((x, y + 4, x + 26, y + 30), outline=INK, width=2)
        if rng.random() < 0.5:
            draw.line((x + 5, y + 16, x + 12, y + 25, x + 23, y + 7), fill=rgb, width=4)
        draw.text((x + 38, y), label, font=font(22), fill=INK)
        x += 200
    draw.text((width - 120, height - 110), "Người đăng ký", font=font(22, 600), fill=INK, anchor="mt")
    draw.text((width - 120, height - 70), "(ký, ghi rõ họ tên)", font=font(18), fill=GREY, anchor="mt")
    return image


def page(rng: random.Random, org: str, rgb: tuple[int, int, int], title: str, paragraphs: list[str]):
    """An A4 notice (~120 dpi): issuer and national motto, title, wrapped paragraphs, signature block."""
    width, height = 992, 1403
    image = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, 28), fill=rgb)  # letterhead rule in the issuer's colour
    draw.rectangle((0, height - 28, width, height), fill=rgb)
    draw.text((220, 70), org.upper(), font=font(22, 700), fill=rgb, anchor="mt")
    draw.text((220, 104), f"Số: {rng.randint(10, 299)}/TB", font=font(20), fill=INK, anchor="mt")
    draw.text((700, 70), "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", font=font(20, 700), fill=INK, anchor="mt")
    draw.text((700, 100), "Độc lập - Tự do - Hạnh phúc", font=font(20, 600), fill=INK, anchor="mt")
    draw.line((610, 130, 790, 130), fill=INK, width=2)
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    draw.text((930, 160), f"Hà Nội, ngày {day} tháng {month} năm 2026", font=font(20), fill=INK, anchor="ra")
    draw.text((width // 2, 250), title, font=font(40, 700), fill=INK, anchor="mt")
    y, body = 340, font(24)
    for paragraph in paragraphs:
        line = "    "
        for word in paragraph.split():
            if draw.textlength(line + word, font=body) > width - 180:
                draw.text((90, y), line, font=body, fill=INK)
                y, line = y + 38, ""
            line += word + " "
        draw.text((90, y), line, font=body, fill=INK)
        y += 56
    draw.text((760, y + 30), "THỦ TRƯỞNG ĐƠN VỊ", font=font(22, 700), fill=INK, anchor="mt")
    draw.ellipse((670, y + 70, 850, y + 250), outline=rgb, width=8)  # the stamp, in the issuer's colour
    draw.text((760, y + 160), "ĐÃ KÝ", font=font(30, 700), fill=rgb, anchor="mm")
    return image


def chart(rng: random.Random, title: str, labels: list[str], rgbs: list[tuple[int, int, int]], tallest: int):
    """A bar chart (values in millions of dong); bar ``tallest`` is the highest."""
    width, height = 896, 672
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((width // 2, 30), title, font=font(30, 700), fill=INK, anchor="mt")
    left, bottom, top = 110, height - 90, 110
    draw.line((left, top, left, bottom, width - 40, bottom), fill=INK, width=2)
    for tick in range(0, 101, 25):
        y = bottom - (bottom - top) * tick / 100
        draw.line((left - 8, y, left, y), fill=INK, width=2)
        draw.text((left - 14, y), str(tick), font=font(18), fill=GREY, anchor="rm")
    draw.text((28, top - 40), "triệu đồng", font=font(18), fill=GREY)
    slot = (width - 40 - left) / len(labels)
    for index, (label, rgb) in enumerate(zip(labels, rgbs, strict=True)):
        value = 95 if index == tallest else rng.randint(20, 70)
        x0 = left + slot * index + slot * 0.18
        draw.rectangle((x0, bottom - (bottom - top) * value / 100, x0 + slot * 0.64, bottom - 1), fill=rgb)
        draw.text((x0 + slot * 0.32, bottom + 16), label, font=font(22), fill=INK, anchor="mt")
    return image


def scene(rng: random.Random, shape: int, rgb: tuple[int, int, int]):
    """One drawn shape (0 circle, 1 square, 2 triangle) on a light background."""
    size = 840
    image = Image.new("RGB", (size, size), (250, 250, 252))
    draw = ImageDraw.Draw(image)
    side = rng.randint(380, 620)
    x0, y0 = rng.randint(20, size - 20 - side), rng.randint(20, size - 20 - side)
    box = (x0, y0, x0 + side, y0 + side)
    if shape == 0:
        draw.ellipse(box, fill=rgb)
    elif shape == 1:
        draw.rectangle(box, fill=rgb)
    else:
        draw.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=rgb)
    return image
