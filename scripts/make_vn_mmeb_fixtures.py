"""Write the offline stand-ins of the VN-MMEB datasets: a few items each, in each dataset's published layout
(see the adapters in eval/vn_mmeb/), with small images rendered here carrying Vietnamese text.

    python scripts/make_vn_mmeb_fixtures.py [--out tests/fixtures/vn_mmeb]
    python scripts/make_vn_mmeb_fixtures.py --check   # exit 1 when the fixtures differ from a fresh run

Deterministic: the same files on every run (fixed seeds, no timestamps in the zip archives).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

try:
    from scripts.regenerate import check_folder
except ImportError:  # run as python scripts/make_vn_mmeb_fixtures.py
    from regenerate import check_folder

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "vn_mmeb"
FONT_CANDIDATES = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    str(ROOT / "data" / "fonts" / "BeVietnamPro-Regular.ttf"),
]


def _font(size: int) -> ImageFont.ImageFont:
    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def render(lines: list[str], seed: int, size: tuple[int, int] = (112, 84)) -> bytes:
    """A small JPEG: a coloured background, a shape and the Vietnamese text lines."""
    bg = ((53 * seed + 40) % 200 + 30, (97 * seed + 90) % 200 + 30, (31 * seed + 150) % 200 + 30)
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    draw.ellipse([size[0] - 34, 4, size[0] - 6, 32], fill=((200 + 17 * seed) % 256, 40, 90))
    font = _font(11)
    for i, line in enumerate(lines):
        draw.text((5, 6 + 15 * i), line, fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    """A zip with fixed timestamps (reproducible bytes)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            zf.writestr(info, data)


def dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def xm3600(out: Path) -> None:
    """mteb/xm3600 (read by mteb's XM3600T2IRetrieval / XM3600I2TRetrieval): data/vi-00000-of-00001.parquet with
    the columns mteb's loader uses (image_id, image_locale, captions, captions_tokenized(_lowercase), image)."""
    items = [
        ("0a1b2c3d4e5f6789", ["Một bát phở bò nóng trên bàn gỗ.", "Tô phở có hành và thịt bò."], ["PHỞ BÒ"]),
        ("1b2c3d4e5f678901", ["Chiếc xe máy đỗ trước cửa hàng.", "Xe máy màu đỏ bên vỉa hè."], ["XE MÁY"]),
        ("2c3d4e5f67890123", ["Cánh đồng lúa xanh dưới trời xanh.", "Ruộng lúa ở vùng quê."], ["ĐỒNG LÚA"]),
        ("3d4e5f6789012345", ["Con mèo nằm ngủ trên ghế.", "Một chú mèo đang ngủ."], ["CON MÈO"]),
    ]
    table = pa.table(
        {
            "image_id": [i for i, _, _ in items],
            "image_locale": ["vi"] * len(items),
            "captions": [c for _, c, _ in items],
            "captions_tokenized": [[x.lower() for x in c] for _, c, _ in items],
            "captions_tokenized_lowercase": [[x.lower() for x in c] for _, c, _ in items],
            "image": pa.array(
                [{"bytes": render(t, k), "path": None} for k, (_, _, t) in enumerate(items)], IMAGE_STRUCT
            ),
        }
    )
    card = (
        "---\nlicense: cc-by-sa-4.0\nconfigs:\n- config_name: default\n  data_files:\n  - split: vi\n"
        "    path: data/vi-*\n---\nStand-in of the Vietnamese split (4 of 3,600 images).\n"
    )
    (out / "mteb/xm3600/data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "mteb/xm3600/data/vi-00000-of-00001.parquet")
    (out / "mteb/xm3600/README.md").write_text(card, encoding="utf-8")


def wit(out: Path) -> None:
    """mteb/wit: data/vi-00000-of-00001.parquet with image_id, captions, image (datasets Image feature)."""
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    items = [
        ("wit-vi-1", ["Chùa Một Cột ở Hà Nội"], ["CHÙA MỘT CỘT"]),
        ("wit-vi-2", ["Vịnh Hạ Long nhìn từ trên cao"], ["HẠ LONG"]),
        ("wit-vi-3", ["Phố cổ Hội An về đêm"], ["HỘI AN"]),
    ]
    ds = Dataset.from_dict(
        {
            "image_id": [i for i, _, _ in items],
            "captions": [c for _, c, _ in items],
            "image": [{"bytes": render(t, 20 + k), "path": None} for k, (_, _, t) in enumerate(items)],
        },
        features=Features(
            {"image_id": Value("string"), "captions": Sequence(Value("string")), "image": ImageFeature()}
        ),
    )
    (out / "mteb/wit/data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out / "mteb/wit/data/vi-00000-of-00001.parquet"))
    (out / "mteb/wit/README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: vi\n    path: data/vi-*\n---\n"
        "Stand-in of WIT's Vietnamese test split (3 images).\n",
        encoding="utf-8",
    )


def ktvic(out: Path) -> None:
    """KTVIC: test_data.json (COCO captions style, images[].filename) + public-test-images/ (see eval/vn_mmeb/ktvic.py
    for the sources of this layout)."""
    root = out / "KTVIC"
    (root / "public-test-images").mkdir(parents=True, exist_ok=True)
    items = [
        (["Hai người đang bán rau ở chợ.", "Người phụ nữ bán rau bên đường."], ["CHỢ RAU"]),
        (["Một em bé đang ăn kem.", "Em bé cầm que kem màu hồng."], ["KEM"]),
        (["Nhóm thanh niên chơi bóng đá.", "Các cầu thủ đá bóng trên sân cỏ."], ["BÓNG ĐÁ"]),
        (["Người đàn ông đạp xích lô.", "Chiếc xích lô chở khách du lịch."], ["XÍCH LÔ"]),
    ]
    images, annotations = [], []
    for i, (caps, text) in enumerate(items):
        name = f"{i:08d}.jpg"
        (root / "public-test-images" / name).write_bytes(render(text, 40 + i))
        images.append({"filename": name, "id": i})
        for cap in caps:
            annotations.append({"id": len(annotations), "image_id": i, "caption": cap, "segment_caption": cap})
    dump(root / "test_data.json", {"images": images, "annotations": annotations})


def openvivqa(out: Path) -> None:
    """uitnlp/OpenViVQA-dataset: vlsp2023_dev_data.json (images / annotations objects keyed by id) + dev-images.zip.
    Answers collide on purpose ("2", "có") and each image has several questions (the hard candidates)."""
    root = out / "uitnlp/OpenViVQA-dataset"
    root.mkdir(parents=True, exist_ok=True)
    pics = [["QUÁN CƠM", "2 người"], ["BIỂN BÁO", "cấm đỗ"], ["HIỆU SÁCH", "mở cửa"], ["XE BUÝT", "số 32"]]
    members = {f"dev-images/{i:012d}.jpg": render(t, 60 + i) for i, t in enumerate(pics)}
    write_zip(root / "dev-images.zip", members)
    qa = [
        (0, "có bao nhiêu người đang ngồi ăn cơm?", "2"),
        (0, "quán cơm có mở cửa không?", "có"),
        (0, "quán cơm bán món gì?", "cơm tấm sườn nướng"),
        (1, "biển báo trong ảnh cấm điều gì?", "cấm đỗ xe"),
        (1, "có bao nhiêu biển báo?", "2"),
        (2, "hiệu sách có đang mở cửa không?", "có"),
        (2, "tên cửa hàng là gì?", "hiệu sách"),
        (3, "xe buýt mang số mấy?", "số 32"),
        (3, "xe buýt màu gì?", "màu vàng"),
        (3, "xe buýt có đông người không?", "không"),
    ]
    data = {
        "images": {str(i): f"{i:012d}.jpg" for i in range(len(pics))},
        "annotations": {str(1000 + k): {"image_id": i, "question": q, "answer": a} for k, (i, q, a) in enumerate(qa)},
    }
    dump(root / "vlsp2023_dev_data.json", data)


VITEXTVQA_QA = [
    (0, "tên nhà thuốc là gì?", ["an khang", "nhà thuốc an khang"]),
    (0, "nhà thuốc mở cửa lúc mấy giờ?", ["7h"]),
    (1, "tiệm bánh bán gì?", ["bánh mì"]),
    (2, "biển số xe là gì?", ["29A-123.45"]),
    (2, "xe mang biển của tỉnh nào?", ["hà nội"]),
    (3, "cửa hàng giảm giá bao nhiêu?", ["50%", "giảm 50%"]),
    (3, "chữ trên biển màu gì?", ["trắng"]),
]


def vitextvqa(out: Path) -> None:
    """minhquan6203/ViTextVQA (the official release): ViTextVQA_test_gt.json (the answers), ViTextVQA_test.json (the
    submission template, answers "your answer") and ViTextVQA_images.zip (members st_images/<filename>: the member
    folder is not verified; the adapter matches by file name)."""
    root = out / "minhquan6203/ViTextVQA"
    root.mkdir(parents=True, exist_ok=True)
    pics = [
        ["NHÀ THUỐC", "AN KHANG 7h"],
        ["TIỆM BÁNH", "MÌ NGON"],
        ["BIỂN SỐ", "29A-123.45"],
        ["KHUYẾN MÃI", "GIẢM 50%"],
    ]
    names = [f"{1000 + i}.jpg" for i in range(len(pics))]
    write_zip(
        root / "ViTextVQA_images.zip",
        {f"st_images/{n}": render(t, 80 + i) for i, (n, t) in enumerate(zip(names, pics, strict=True))},
    )
    images = [{"id": i, "filename": n} for i, n in enumerate(names)]
    anns = [{"id": k, "image_id": i, "question": q, "answers": a} for k, (i, q, a) in enumerate(VITEXTVQA_QA)]
    dump(root / "ViTextVQA_test_gt.json", {"images": images, "annotations": anns})
    template = [{**a, "answers": ["your answer"]} for a in anns]
    dump(root / "ViTextVQA_test.json", {"images": images, "annotations": template})


def viinfographicvqa(out: Path) -> None:
    """duytranus/ViInfographicVQA (the Hub release): data/single_test.json (image_path), data/multi_test.json
    (image_paths), images/<n>.jpg."""
    root = out / "duytranus/ViInfographicVQA"
    (root / "images").mkdir(parents=True, exist_ok=True)
    pages = {
        "3433": ["GIÁ VÀNG SJC", "85,5 triệu/lượng"],
        "3434": ["THỜI TIẾT", "Hà Nội 19-25°C"],
        "3435": ["THỜI TIẾT", "Huế 22-28°C"],
        "3436": ["DÂN SỐ 2024", "100,3 triệu"],
        "3437": ["XUẤT KHẨU", "gạo 8 triệu tấn"],
    }
    for k, (pid, text) in enumerate(pages.items()):
        (root / "images" / f"{pid}.jpg").write_bytes(render(text, 100 + k, size=(84, 112)))
    single = [
        ("33918", "3433", "Giá vàng SJC bán ra là bao nhiêu?", "85,5 triệu đồng/lượng"),
        ("33919", "3434", "Nhiệt độ Hà Nội thấp nhất là bao nhiêu?", "19°C"),
        ("33920", "3435", "Nhiệt độ cao nhất ở Huế là bao nhiêu?", "28°C"),
        ("33921", "3436", "Dân số Việt Nam năm 2024 là bao nhiêu?", "100,3 triệu"),
        ("33922", "3437", "Việt Nam xuất khẩu bao nhiêu tấn gạo?", "8 triệu tấn"),
    ]
    dump(
        root / "data/single_test.json",
        [
            {
                "question_id": q,
                "image_type": "Kinh tế",
                "answer_source": "Image-span",
                "element": "Text",
                "question": t,
                "answer": a,
                "image_path": f"images/{i}.jpg",
            }
            for q, i, t, a in single
        ],
    )
    # Lists hold context pages too, as in the release (the authors' question 1 lists three weather pages for a
    # question about two dates): question 1 here also lists the gold-price page.
    multi = [
        ("1", ["3434", "3435", "3433"], "Chênh lệch nhiệt độ cao nhất giữa Huế và Hà Nội là bao nhiêu?", "3"),
        ("2", ["3433", "3436", "3437"], "Tổng hợp giá vàng, dân số và xuất khẩu gạo năm 2024?", "85,5; 100,3; 8"),
        ("3", ["3436", "3437"], "Bình quân mỗi người xuất khẩu bao nhiêu kg gạo?", "80"),
    ]
    dump(
        root / "data/multi_test.json",
        [
            {
                "question_id": q,
                "image_paths": [f"images/{i}.jpg" for i in ids],
                "image_type": "Tổng hợp",
                "answer_source": "Cross-Image Synthesis",
                "question": t,
                "answer": a,
            }
            for q, ids, t, a in multi
        ],
    )


def mtvqa(out: Path) -> None:
    """ByteDance/MTVQA: data/test-0000{0,1}-of-00002.parquet (image, id, qa_pairs as a string, lang upper case);
    one row spells qa_pairs as a Python literal (single quotes, an apostrophe inside), as the release does."""
    root = out / "ByteDance/MTVQA/data"
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        (["THỰC ĐƠN", "Cà phê 25k"], "VI", [("Giá cà phê là bao nhiêu?", "25k"), ("Đây là gì?", "thực đơn")]),
        (["GIỜ MỞ CỬA", "7h - 22h"], "VI", [("Cửa hàng mở cửa lúc mấy giờ?", "7h"), ("Đóng cửa lúc mấy giờ?", "22h")]),
        (["VÉ XE", "Hà Nội - Huế"], "VI", [("Vé xe đi đâu?", "Huế")]),
        (["SPEISEKARTE", "Kaffee 3 €"], "DE", [("Was kostet der Kaffee?", "3 €")]),
        (["L'ADDITION", "Café 2 €"], "FR", [("Combien coûte le café?", "2 €")]),
    ]

    def spell(k: int, pairs: list[tuple[str, str]]) -> str:
        objs = [{"question": q, "answer": a} for q, a in pairs]
        return repr(objs) if k == 1 else json.dumps(objs, ensure_ascii=False)

    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": render(t, 120 + k), "path": None} for k, (t, _, _) in enumerate(rows)], IMAGE_STRUCT
            ),
            "qa_pairs": [spell(k, p) for k, (_, _, p) in enumerate(rows)],
            "lang": [lang for _, lang, _ in rows],
            "id": pa.array([7000 + k for k in range(len(rows))], pa.int64()),
        }
    )
    pq.write_table(table.slice(0, 3), root / "test-00000-of-00002.parquet")
    pq.write_table(table.slice(3), root / "test-00001-of-00002.parquet")


def write(out: Path) -> None:
    """Write every stand-in into ``out`` (its dataset folders are replaced)."""
    for sub in ("floschne", "mteb", "KTVIC", "uitnlp", "nhonhoccode", "minhquan6203", "duytranus", "ByteDance"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for make in (xm3600, wit, ktvic, openvivqa, vitextvqa, viinfographicvqa, mtvqa):
        make(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"folder to (re)write (default {FIXTURES})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out is stale")
    args = parser.parse_args(argv)
    if args.check:
        return check_folder(write, args.out, "python scripts/make_vn_mmeb_fixtures.py")
    write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
