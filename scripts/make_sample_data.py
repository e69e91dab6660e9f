"""Write the bundled sample dataset: data/sample/{train,eval}.jsonl + data/sample/img/*.png (deterministic).

    python scripts/make_sample_data.py [--out data/sample] [--seed 0]
    python scripts/make_sample_data.py --check     # exit 1 when data/sample differs from a fresh run

All five tasks, Vietnamese first with some English and Chinese. Images are real-size (500-1024 image tokens
at the default 1024-token budget; scripts/sample_images.py draws them, text in Be Vietnam Pro):

- text_pair: Vietnamese phrase ("con mèo màu đỏ") vs its English / Chinese rendering, graded score (0.95 same
  meaning, 0.4 / 0.3 one attribute differs, 0.05 both differ). Eval uses animal-colour combinations that no train
  pair has.
- instr: "Dịch sang tiếng Anh: Con mèo màu đỏ đang ngủ." -> "The red cat is sleeping." (some multi-turn, with a
  greeting turn first); eval uses held-out combinations.
- ocr: 1-2 documents (till receipts, membership forms, A4 notices) of eight shops/organisations, each with its
  own colour, + a question (vi/en/zh) -> what the document is and who issued it ("Hóa đơn bán lẻ của Nhà sách
  Biển Xanh"); some train rows ask for a receipt's total; some carry an explicit negative.
- vqa_single: a bar chart with a Vietnamese title and labels ("cột màu đỏ cao nhất") or a drawn shape scene
  ("một hình tròn màu đỏ") + question.
- vqa_multi: 2-3 images (shape scenes and documents) + a dialogue history -> a summary of all images.

Train and eval draw their documents and scenes from separate pools (no eval image is seen in training); rows
reuse pool images with different questions, as document-VQA sets do. The tiny model can solve the image tasks
from colour and layout alone at its 16-token budget; the text is real and legible, so a larger model learns
more from the same files. Images are 16-colour palette PNGs; the folder stays under 3 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from PIL import Image

try:
    from scripts import sample_images as draw
    from scripts.regenerate import check_folder
except ImportError:  # run as python scripts/make_sample_data.py
    import sample_images as draw
    from regenerate import check_folder

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"

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


ORGS = [  # one per colour of COLORS: (name, address)
    ("Cửa hàng Hoa Phượng", "12 Trần Hưng Đạo, Hoàn Kiếm, Hà Nội"),
    ("Siêu thị Lá Xanh", "88 Nguyễn Văn Linh, Hải Châu, Đà Nẵng"),
    ("Nhà sách Biển Xanh", "25 Lê Lợi, Quận 1, TP. Hồ Chí Minh"),
    ("Tiệm bánh Mặt Trời", "7 Hùng Vương, TP. Huế"),
    ("Nhà thuốc Hoa Sim", "40 Trần Phú, Nha Trang, Khánh Hòa"),
    ("Quán cà phê Hoàng Hôn", "3 Ngô Quyền, Ninh Kiều, Cần Thơ"),
    ("Điện máy Bảo Long", "156 Lạch Tray, Ngô Quyền, Hải Phòng"),
    ("Tiệm hoa Hồng Nhung", "19 Phan Đình Phùng, Đà Lạt, Lâm Đồng"),
]
ITEMS = [  # (name, unit price in dong)
    ("Cà phê sữa đá", 29000),
    ("Bánh mì thịt nướng", 25000),
    ("Trà đào cam sả", 45000),
    ("Nước suối", 10000),
    ("Bánh flan", 15000),
    ("Xôi gà", 30000),
    ("Sữa chua nếp cẩm", 20000),
    ("Phở bò tái", 55000),
    ("Chè ba màu", 25000),
    ("Bún chả Hà Nội", 45000),
    ("Vở ô ly 96 trang", 12000),
    ("Bút bi Thiên Long", 5000),
    ("Khẩu trang y tế (hộp)", 35000),
    ("Vitamin C 500mg", 60000),
    ("Bó hoa hồng đỏ", 250000),
    ("Bình giữ nhiệt 500ml", 189000),
    ("Dầu gội đầu 650g", 135000),
    ("Gạo ST25 (5 kg)", 180000),
]
PEOPLE = ["Nguyễn Thị Lan", "Trần Văn Minh", "Lê Hoàng Anh", "Phạm Thu Hà", "Võ Quốc Bảo", "Đặng Ngọc Mai"]
STREETS = ["25 Lê Lợi, Quận 1, TP. Hồ Chí Minh", "14 Hàng Bài, Hoàn Kiếm, Hà Nội", "9 Bạch Đằng, Hải Châu, Đà Nẵng"]
JOBS = ["Giáo viên", "Kỹ sư phần mềm", "Sinh viên", "Bác sĩ", "Nhân viên văn phòng", "Kế toán"]
NOTICE_SENTENCES = [
    "Nhằm phục vụ khách hàng tốt hơn trong dịp Tết Nguyên đán, đơn vị kéo dài thời gian mở cửa đến 22 giờ hằng ngày.",
    "Trong thời gian bảo trì hệ thống thanh toán, quý khách vui lòng sử dụng tiền mặt hoặc chuyển khoản.",
    "Chương trình khuyến mãi giảm giá 20% áp dụng cho tất cả thành viên từ ngày 1 đến hết ngày 15 của tháng.",
    "Khách hàng có thẻ thành viên được tích điểm cho mỗi hóa đơn và đổi quà tại quầy dịch vụ.",
    "Đơn vị trân trọng cảm ơn sự tin tưởng và ủng hộ của quý khách trong suốt thời gian qua.",
    "Mọi thắc mắc xin liên hệ số điện thoại đường dây nóng hoặc gửi thư điện tử cho bộ phận chăm sóc khách hàng.",
    "Để bảo đảm an toàn, quý khách vui lòng giữ gìn tư trang và không để xe trước cửa hàng.",
    "Kể từ ngày ký thông báo này, giờ làm việc buổi sáng bắt đầu lúc 7 giờ 30 phút.",
]
CHART_TITLES = [
    ("Doanh thu theo quý năm 2025", ["Quý 1", "Quý 2", "Quý 3", "Quý 4"]),
    ("Số khách theo tháng", ["Tháng 1", "Tháng 2", "Tháng 3", "Tháng 4"]),
    ("Sản lượng theo vùng", ["Miền Bắc", "Miền Trung", "Miền Nam"]),
    ("Chi phí theo hạng mục", ["Nhân sự", "Mặt bằng", "Điện nước"]),
]
DOC_QUESTIONS = {
    "receipt": [
        "Hóa đơn này của cửa hàng nào?",
        "Tên cửa hàng in trên hóa đơn là gì?",
        "Which shop issued this receipt?",
    ],
    "form": ["Đây là phiếu gì, của đơn vị nào?", "Đọc tiêu đề và tên đơn vị trên phiếu.", "What form is this?"],
    "page": ["Văn bản này là gì, do ai ban hành?", "Đọc tiêu đề và đơn vị ban hành văn bản.", "这是什么文件?"],
}
MULTI_DOC_QUESTIONS = ["Các giấy tờ này là gì?", "Đọc tên đơn vị trên từng ảnh.", "What documents are these?"]
TOTAL_QUESTIONS = ["Tổng cộng hóa đơn là bao nhiêu?", "Khách phải trả bao nhiêu tiền?", "What is the receipt total?"]
SCENE_QUESTIONS = ["Trong ảnh có gì?", "Mô tả hình trong ảnh.", "Ảnh này vẽ hình gì?", "What is in the picture?"]
CHART_QUESTIONS = ["Cột nào cao nhất?", "Trong biểu đồ, cột nào cao nhất?", "Which bar is the tallest?"]
MULTI_OPENERS = ["Ảnh thứ nhất có gì?", "Hãy nhìn các ảnh này.", "Look at these pictures."]
MULTI_FOLLOWUPS = ["Tóm tắt tất cả các ảnh.", "Các ảnh vẽ những gì?", "Summarise all the images."]
DOC_KINDS = ("receipt", "form", "page")


class Writer:
    """Saves images under ``out/img`` as 16-colour palette PNGs, numbered in creation order."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.count = 0
        (out / "img").mkdir(parents=True, exist_ok=True)

    def save(self, image: Image.Image, kind: str) -> str:
        self.count += 1
        name = f"img/{kind}_{self.count:04d}.png"
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(self.out / name, optimize=True)
        return name


def doc_answer(kind: str, org: int) -> str:
    title = {"receipt": "Hóa đơn bán lẻ", "form": "Phiếu đăng ký thành viên", "page": "Thông báo"}[kind]
    return f"{title} của {ORGS[org][0]}"


def make_document(writer: Writer, rng: random.Random, kind: str, org: int) -> dict:
    """One document image of ``kind`` issued by ``ORGS[org]`` (drawn in its colour); returns its facts."""
    name, address = ORGS[org]
    rgb = COLORS[org][3]
    facts: dict = {"kind": kind, "org": org, "answer": doc_answer(kind, org)}
    if kind == "receipt":
        items = [(item, rng.randint(1, 3), price) for item, price in rng.sample(ITEMS, rng.randint(5, 10))]
        facts["total"] = sum(q * p for _, q, p in items)
        image = draw.receipt(rng, name, address, rgb, items)
    elif kind == "form":
        fields = [
            ("Họ và tên", rng.choice(PEOPLE)),
            ("Ngày sinh", f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1960, 2005)}"),
            ("Số CCCD", f"0{rng.randint(10, 99)}{rng.randint(10**8, 10**9 - 1)}"),
            ("Địa chỉ", rng.choice(STREETS)),
            ("Số điện thoại", f"09{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}"),
            ("Nghề nghiệp", rng.choice(JOBS)),
        ]
        image = draw.form(rng, name, rgb, fields, ["Email", "Tin nhắn", "Điện thoại"])
    else:
        paragraphs = rng.sample(NOTICE_SENTENCES, 5)
        image = draw.page(rng, name, rgb, "THÔNG BÁO", paragraphs)
    facts["path"] = writer.save(image, kind)
    return facts


def make_pools(writer: Writer, rng: random.Random) -> dict:
    """Per split: one document of every kind for every organisation, and shape scenes (2 train variants of every
    shape/colour, 1 eval)."""
    pools = {}
    for split, variants in (("train", 2), ("eval", 1)):
        documents = [make_document(writer, rng, kind, org) for org in range(len(ORGS)) for kind in DOC_KINDS]
        scenes = {
            (shape, color): [writer.save(draw.scene(rng, shape, COLORS[color][3]), "scene") for _ in range(variants)]
            for shape in range(len(SHAPES))
            for color in range(len(COLORS))
        }
        pools[split] = {"documents": documents, "scenes": scenes}
    return pools


def shape_text(shape: int, color: int) -> str:
    return f"một {SHAPES[shape][0]} màu {COLORS[color][0]}"


def make_rows(writer: Writer, rng: random.Random, split: str, sizes: dict[str, int], pool: dict) -> list[dict]:
    rows: list[dict] = []
    combos = [(a, c) for a in range(len(ANIMALS)) for c in range(len(COLORS))]
    held_out = set(random.Random(7).sample(combos, 16))  # same split for train and eval
    pairs = sorted(held_out) if split == "eval" else [c for c in combos if c not in held_out]
    documents, scenes = pool["documents"], pool["scenes"]

    # text_pair
    for index in range(sizes["text_pair"]):
        animal, color = rng.choice(pairs)
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
        animal, color = rng.choice(pairs)
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

    # ocr: documents
    receipts = [d for d in documents if d["kind"] == "receipt"]
    for index in range(sizes["ocr"]):
        if split == "train" and rng.random() < 0.1:  # read a number: train only (no colour cue to learn it from)
            doc = rng.choice(receipts)
            question, images, answer = (
                rng.choice(TOTAL_QUESTIONS),
                [doc["path"]],
                f"Tổng cộng {draw.money(doc['total'])}",
            )
        elif rng.random() < 0.75:
            doc = rng.choice(documents)
            question, images, answer = rng.choice(DOC_QUESTIONS[doc["kind"]]), [doc["path"]], doc["answer"]
        else:
            docs = rng.sample(documents, 2)
            question, images = rng.choice(MULTI_DOC_QUESTIONS), [d["path"] for d in docs]
            answer = "; ".join(d["answer"] for d in docs)
        row: dict = {
            "task": "<ocr>" if index % 5 == 0 else "ocr",
            "query": {"text": question, "images": images},
            "positive": answer,
        }
        if split == "train" and len(images) == 1 and "Tổng" not in answer and rng.random() < 0.3:
            doc = next(d for d in documents if d["path"] == images[0])
            other = rng.choice([o for o in range(len(ORGS)) if o != doc["org"]])
            row["negative"] = doc_answer(doc["kind"], other)
        rows.append(row)

    # vqa_single: bar charts and shape scenes
    for _ in range(sizes["vqa_single"]):
        if rng.random() < 0.5:
            title, labels = rng.choice(CHART_TITLES)
            colors = rng.sample(range(len(COLORS)), len(labels))
            tallest = rng.randrange(len(labels))
            image = writer.save(draw.chart(rng, title, labels, [COLORS[c][3] for c in colors], tallest), "chart")
            question, answer = rng.choice(CHART_QUESTIONS), f"cột màu {COLORS[colors[tallest]][0]} cao nhất"
        else:
            shape, color = rng.randrange(len(SHAPES)), rng.randrange(len(COLORS))
            image, question, answer = (
                rng.choice(scenes[shape, color]),
                rng.choice(SCENE_QUESTIONS),
                shape_text(shape, color),
            )
        rows.append({"task": "vqa_single", "query": {"text": question, "images": [image]}, "positive": answer})

    # vqa_multi: 2-3 scenes and documents
    for _ in range(sizes["vqa_multi"]):
        count = rng.choice([2, 3])
        images, parts = [], []
        for color in rng.sample(range(len(COLORS)), count):
            if rng.random() < 0.3:
                doc = rng.choice([d for d in documents if d["org"] == color])
                images.append(doc["path"])
                parts.append(doc["answer"][0].lower() + doc["answer"][1:])
            else:
                shape = rng.randrange(len(SHAPES))
                images.append(rng.choice(scenes[shape, color]))
                parts.append(shape_text(shape, color))
        turns = [
            {"role": "user", "content": rng.choice(MULTI_OPENERS)},
            {"role": "assistant", "content": "Tôi thấy các ảnh có màu khác nhau."},
        ]
        rows.append(
            {
                "task": "vqa_multi",
                "query": {"text": rng.choice(MULTI_FOLLOWUPS), "images": images, "turns": turns},
                "positive": f"{count} ảnh: " + "; ".join(parts),
            }
        )
    rng.shuffle(rows)
    return rows


def write(out: Path, seed: int = 0) -> None:
    """Write the sample dataset into ``out`` (its old images are removed first)."""
    if (out / "img").is_dir():
        for old in (out / "img").glob("*.png"):
            old.unlink()
    rng = random.Random(seed)
    writer = Writer(out)
    pools = make_pools(writer, rng)
    splits = {
        "train": {"text_pair": 160, "instr": 128, "ocr": 192, "vqa_single": 192, "vqa_multi": 160},
        "eval": {"text_pair": 48, "instr": 32, "ocr": 32, "vqa_single": 32, "vqa_multi": 32},
    }
    for split, sizes in splits.items():
        rows = make_rows(writer, rng, split, sizes, pools[split])
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{out / (split + '.jsonl')}: {len(rows)} rows")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{writer.count} images; {total / 1024:.0f} KiB in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SAMPLE, help=f"folder to (re)write (default {SAMPLE})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out is stale")
    args = parser.parse_args(argv)
    if args.check:
        return check_folder(lambda folder: write(folder, args.seed), args.out, "python scripts/make_sample_data.py")
    write(args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
