"""Write the bundled sample dataset: data/sample/{train,eval}.jsonl + data/sample/img/*.png (deterministic).

    python scripts/make_sample_data.py [--out data/sample] [--seed 0]

All five tasks, Vietnamese first with some English and Chinese, generated images:

- text_pair: Vietnamese phrase ("con mèo màu đỏ") vs its English / Chinese rendering, graded score (0.95 same
  meaning, 0.4 / 0.3 one attribute differs, 0.05 both differ). Eval uses animal-colour combinations that no train
  pair has.
- instr: "Dịch sang tiếng Anh: Con mèo màu đỏ đang ngủ." -> "The red cat is sleeping." (some multi-turn, with a
  greeting turn first); eval uses held-out combinations.
- ocr: 1-2 images of a Vietnamese colour word rendered with diacritics (DejaVu Sans, shipped with matplotlib) in
  that colour, + a question (vi/en/zh) -> the word(s); some rows carry an explicit negative.
- vqa_single: a drawn shape scene ("một hình tròn màu đỏ") or a bar chart ("cột màu đỏ cao nhất") + question.
- vqa_multi: 2-3 shape images + a dialogue history -> a summary of all images.

The tiny model can solve the image tasks from colour alone; the text and glyphs are real, so a larger model
learns more from the same files. Images are small palette PNGs; the whole folder is well under 1 MB.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLORS = [  # (vi, en, zh, rgb)
    ("đỏ", "red", "红", (220, 30, 30)),
    ("xanh lá", "green", "绿", (30, 160, 50)),
    ("xanh dương", "blue", "蓝", (30, 70, 220)),
    ("vàng", "yellow", "黄", (235, 200, 20)),
    ("tím", "purple", "紫", (140, 40, 170)),
    ("cam", "orange", "橙", (245, 130, 20)),
    ("đen", "black", "黑", (20, 20, 20)),
    ("hồng", "pink", "粉", (240, 120, 180)),
]
ANIMALS = [  # (vi, en, zh)
    ("mèo", "cat", "猫"),
    ("chó", "dog", "狗"),
    ("chim", "bird", "鸟"),
    ("cá", "fish", "鱼"),
    ("ngựa", "horse", "马"),
    ("gà", "chicken", "鸡"),
    ("bò", "cow", "牛"),
    ("vịt", "duck", "鸭"),
]
ACTIONS = [("chạy", "running"), ("ngủ", "sleeping"), ("ăn", "eating"), ("bơi", "swimming")]
SHAPES = [("hình tròn", "circle"), ("hình vuông", "square"), ("hình tam giác", "triangle")]
OCR_QUESTIONS = [
    "Chữ trong ảnh là gì?",
    "Đọc nội dung trong ảnh.",
    "Ảnh ghi chữ gì?",
    "What text is in the image?",
    "图中写了什么字?",
]
SCENE_QUESTIONS = ["Trong ảnh có gì?", "Mô tả hình trong ảnh.", "Ảnh này vẽ hình gì?", "What is in the picture?"]
CHART_QUESTIONS = ["Cột nào cao nhất?", "Trong biểu đồ, cột nào cao nhất?", "Which bar is the tallest?"]
MULTI_OPENERS = ["Ảnh thứ nhất có gì?", "Hãy nhìn các ảnh này.", "Look at these pictures."]
MULTI_FOLLOWUPS = ["Tóm tắt tất cả các ảnh.", "Các ảnh vẽ những gì?", "Summarise all the images."]


def font_path() -> str:
    """DejaVu Sans from matplotlib's bundled fonts (has the Vietnamese diacritics)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: pip install matplotlib (the [train] extra)")
    return str(path)


class Writer:
    def __init__(self, out: Path, rng: random.Random) -> None:
        self.out = out
        self.rng = rng
        self.count = 0
        (out / "img").mkdir(parents=True, exist_ok=True)
        self.font = ImageFont.truetype(font_path(), 34)

    def save(self, image: Image.Image, kind: str) -> str:
        self.count += 1
        name = f"img/{kind}_{self.count:04d}.png"
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(self.out / name, optimize=True)
        return name

    def word_image(self, color: int) -> str:
        vi, _, _, rgb = COLORS[color]
        image = Image.new("RGB", (168, 56), (250, 250, 245))
        draw = ImageDraw.Draw(image)
        x, y = self.rng.randint(0, 12), self.rng.randint(0, 10)
        text = vi.upper() if self.rng.random() < 0.5 else vi
        draw.text((x, y), text, fill=rgb, font=self.font, stroke_width=1, stroke_fill=rgb)
        for _ in range(2):  # light clutter lines
            points = [(self.rng.randint(0, 167), self.rng.randint(0, 55)) for _ in range(2)]
            draw.line(points, fill=(200, 200, 200), width=1)
        return self.save(image, "ocr")

    def shape_image(self, shape: int, color: int) -> str:
        rgb = COLORS[color][3]
        image = Image.new("RGB", (84, 84), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        size = self.rng.randint(40, 64)
        x0, y0 = self.rng.randint(2, 82 - size), self.rng.randint(2, 82 - size)
        box = (x0, y0, x0 + size, y0 + size)
        if shape == 0:
            draw.ellipse(box, fill=rgb)
        elif shape == 1:
            draw.rectangle(box, fill=rgb)
        else:
            draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=rgb)
        return self.save(image, "scene")

    def chart_image(self, colors: list[int], tallest: int) -> str:
        image = Image.new("RGB", (112, 84), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        draw.line([(4, 80), (108, 80)], fill=(0, 0, 0), width=1)
        width = 100 // len(colors)
        for index, color in enumerate(colors):
            height = 72 if index == tallest else self.rng.randint(12, 40)
            x0 = 6 + index * width
            draw.rectangle((x0, 80 - height, x0 + width - 6, 79), fill=COLORS[color][3])
        return self.save(image, "chart")


def shape_text(shape: int, color: int) -> str:
    return f"một {SHAPES[shape][0]} màu {COLORS[color][0]}"


def make_rows(writer: Writer, rng: random.Random, split: str, sizes: dict[str, int]) -> list[dict]:
    rows: list[dict] = []
    combos = [(a, c) for a in range(len(ANIMALS)) for c in range(len(COLORS))]
    held_out = set(random.Random(7).sample(combos, 16))  # same split for train and eval
    pool = sorted(held_out) if split == "eval" else [c for c in combos if c not in held_out]

    # text_pair
    for index in range(sizes["text_pair"]):
        animal, color = rng.choice(pool)
        kind = index % 4
        other_animal, other_color = animal, color
        if kind in (1, 3):
            other_color = rng.choice([c for c in range(len(COLORS)) if c != color])
        if kind in (2, 3):
            other_animal = rng.choice([a for a in range(len(ANIMALS)) if a != animal])
        score = {0: 0.95, 1: 0.4, 2: 0.3, 3: 0.05}[kind]
        if rng.random() < 0.7:
            positive = f"a {COLORS[other_color][1]} {ANIMALS[other_animal][1]}"
        else:
            positive = f"{COLORS[other_color][2]}色的{ANIMALS[other_animal][2]}"
        query = f"con {ANIMALS[animal][0]} màu {COLORS[color][0]}"
        rows.append({"task": "text_pair", "query": query, "positive": positive, "score": score})

    # instr
    for _ in range(sizes["instr"]):
        animal, color = rng.choice(pool)
        action = rng.randrange(len(ACTIONS))
        sentence = f"Con {ANIMALS[animal][0]} màu {COLORS[color][0]} đang {ACTIONS[action][0]}."
        answer = f"The {COLORS[color][1]} {ANIMALS[animal][1]} is {ACTIONS[action][1]}."
        query: dict = {"text": f"Dịch sang tiếng Anh: {sentence}"}
        if rng.random() < 0.3:
            query["turns"] = [
                {"role": "user", "content": "Xin chào!"},
                {"role": "assistant", "content": "Chào bạn, tôi có thể giúp gì?"},
            ]
        rows.append({"task": "instr", "query": query, "positive": answer})

    # ocr
    for index in range(sizes["ocr"]):
        count = 1 if rng.random() < 0.75 else 2
        colors = rng.sample(range(len(COLORS)), count)
        images = [writer.word_image(c) for c in colors]
        answer = ", ".join(COLORS[c][0] for c in colors)
        row: dict = {
            "task": "<ocr>" if index % 5 == 0 else "ocr",
            "query": {"text": rng.choice(OCR_QUESTIONS), "images": images},
            "positive": answer,
        }
        if split == "train" and rng.random() < 0.3:
            row["negative"] = ", ".join(
                COLORS[c][0] for c in rng.sample([c for c in range(len(COLORS)) if c not in colors], count)
            )
        rows.append(row)

    # vqa_single: scenes and bar charts
    for _ in range(sizes["vqa_single"]):
        if rng.random() < 0.7:
            shape, color = rng.randrange(len(SHAPES)), rng.randrange(len(COLORS))
            image, question, answer = (
                writer.shape_image(shape, color),
                rng.choice(SCENE_QUESTIONS),
                shape_text(shape, color),
            )
        else:
            colors = rng.sample(range(len(COLORS)), 3)
            tallest = rng.randrange(3)
            image = writer.chart_image(colors, tallest)
            question, answer = rng.choice(CHART_QUESTIONS), f"cột màu {COLORS[colors[tallest]][0]} cao nhất"
        rows.append({"task": "vqa_single", "query": {"text": question, "images": [image]}, "positive": answer})

    # vqa_multi
    for _ in range(sizes["vqa_multi"]):
        count = rng.choice([2, 3])
        items = [(rng.randrange(len(SHAPES)), c) for c in rng.sample(range(len(COLORS)), count)]
        images = [writer.shape_image(s, c) for s, c in items]
        turns = [
            {"role": "user", "content": rng.choice(MULTI_OPENERS)},
            {"role": "assistant", "content": "Tôi thấy các hình có màu khác nhau."},
        ]
        answer = f"{count} ảnh: " + "; ".join(shape_text(s, c) for s, c in items)
        rows.append(
            {
                "task": "vqa_multi",
                "query": {"text": rng.choice(MULTI_FOLLOWUPS), "images": images, "turns": turns},
                "positive": answer,
            }
        )
    rng.shuffle(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "img").is_dir():
        for old in (out / "img").glob("*.png"):
            old.unlink()
    rng = random.Random(args.seed)
    writer = Writer(out, rng)
    splits = {
        "train": {"text_pair": 160, "instr": 128, "ocr": 192, "vqa_single": 192, "vqa_multi": 160},
        "eval": {"text_pair": 48, "instr": 32, "ocr": 32, "vqa_single": 32, "vqa_multi": 32},
    }
    for split, sizes in splits.items():
        rows = make_rows(writer, rng, split, sizes)
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{out / (split + '.jsonl')}: {len(rows)} rows")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{writer.count} images; {total / 1024:.0f} KiB in {out}")


if __name__ == "__main__":
    main()
