"""Main job, offline: build the tiny viPyloQwen checkpoint and run the product end to end.

    python scripts/demo.py [--out build/tiny]      # default: a new temp folder (make demo passes build/tiny)

1. builds a tiny random Qwen2-VL checkpoint with the real Qwen2 vocabulary (scripts/build_model.py --tiny);
2. loads it the three ways users do (SentenceTransformer, AutoModel, AutoProcessor; trust_remote_code=True);
3. writes Vietnamese texts, generated images and text+image / multi-image items as an items JSONL file and
   builds the embedded vector database from it with ``scripts/index.py build`` (LanceDB on disk);
4. queries that db with ``scripts/index.py search``: a text query, an image query and an <ocr> question;
5. checks that ST encode and AutoModel.encode agree, and that the three ways of giving a task agree.

The weights are random: the scores show the pipeline working, not retrieval quality (see the training
demo for learned quality).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from PIL import Image, ImageDraw


def picture(kind: str, seed: int) -> Image.Image:
    """Small generated images: a document page, a red car, a bar chart, a licence plate."""
    image = Image.new("RGB", (224, 168), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    if kind == "page":
        for row in range(8):
            draw.rectangle([16, 16 + row * 18, 208 - (row * 13 + seed * 7) % 60, 24 + row * 18], fill=(40, 40, 40))
    elif kind == "car":
        draw.rectangle([40, 80, 190, 130], fill=(200, 20, 30))
        draw.ellipse([55, 115, 90, 150], fill=(20, 20, 20))
        draw.ellipse([140, 115, 175, 150], fill=(20, 20, 20))
    elif kind == "chart":
        for bar in range(5):
            height = 20 + ((bar + 1) * (seed + 3) * 17) % 120
            draw.rectangle([20 + bar * 40, 150 - height, 48 + bar * 40, 150], fill=(30, 90 + bar * 30, 200))
    elif kind == "plate":
        draw.rectangle([30, 60, 194, 110], fill=(255, 255, 255), outline=(0, 0, 0), width=4)
        draw.text((50, 75), "51F-123.45", fill=(0, 0, 0))
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: a new temp folder)")
    args = parser.parse_args(argv)
    if args.out is None:  # nothing is written into the repository unless asked
        args.out = Path(tempfile.mkdtemp(prefix="vipyloqwen-demo-")) / "tiny"

    from scripts.build_model import main as build

    start = time.perf_counter()
    build(["--tiny", "--out", str(args.out)])
    print(f"[1] built the tiny checkpoint in {time.perf_counter() - start:.1f}s")

    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    st = SentenceTransformer(str(args.out), trust_remote_code=True, device="cpu")
    model = AutoModel.from_pretrained(args.out, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.out, trust_remote_code=True)
    print(f"[2] loaded: {type(st).__name__} ({len(st)} modules), {type(model).__name__}, {type(processor).__name__}")

    store = {
        "doc_cloud": ("Hợp đồng này quy định các điều khoản về việc cung cấp dịch vụ điện toán đám mây.", None),
        "doc_privacy": ("Bên B chịu trách nhiệm bảo mật thông tin khách hàng.", None),
        "doc_en": ("The supplier must keep customer data confidential.", None),
        "page_image": (None, picture("page", 1)),
        "car_with_caption": ("Ảnh chụp cận cảnh một chiếc xe hơi thể thao màu đỏ đang đỗ.", picture("car", 0)),
        "two_charts": ("Biểu đồ doanh thu quý 1 và quý 2", [picture("chart", 1), picture("chart", 2)]),
        "plate_ocr": ("<ocr> Biển số xe này là gì?", picture("plate", 0)),
    }
    ids = list(store)
    folder = args.out.parent / "demo-store"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "img").mkdir(parents=True)
    with (folder / "items.jsonl").open("w", encoding="utf-8") as handle:
        for key in ids:
            text, images = store[key]
            images = [] if images is None else images if isinstance(images, list) else [images]
            paths = []
            for number, image in enumerate(images):
                image.save(folder / "img" / f"{key}-{number}.png")
                paths.append(f"img/{key}-{number}.png")
            row = {"id": key, "text": text, "images": paths, "source": "demo"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    picture("car", 3).save(folder / "query-car.png")
    picture("plate", 0).save(folder / "query-plate.png")

    from scripts.index import main as index_cli
    from vipyloqwen_tools.index.search import Index

    db = folder / "db"
    start = time.perf_counter()
    items_arg = ["--items", str(folder / "items.jsonl"), "--db", str(db), "--batch-size", "4"]
    if index_cli(["build", "--model", str(args.out), *items_arg]) != 0:
        raise SystemExit("FAILED: scripts/index.py build")
    print(
        f"[3] built the embedded vector db {db} from {len(ids)} items (text, image, text+image, multi-image) "
        f"with scripts/index.py build in {time.perf_counter() - start:.2f}s"
    )

    queries = {
        "text query 'Tìm điều khoản bảo mật'": ["--text", "Tìm điều khoản bảo mật"],
        "image query (a red car)": ["--image", str(folder / "query-car.png")],
        "<ocr> question 'Biển số xe này là gì?' + plate image": [
            "--text", "Biển số xe này là gì?", "--image", str(folder / "query-plate.png"), "--task", "ocr",
        ],
    }  # fmt: skip
    print("[4] scripts/index.py search over the db (cosine similarity, random weights):")
    for name, query in queries.items():
        print(f"    {name}")
        if index_cli(["search", "--model", str(args.out), "--db", str(db), "--top-k", "3", *query]) != 0:
            raise SystemExit(f"FAILED: scripts/index.py search ({name})")

    index = Index(db, model)
    rows = {row["id"]: row["vector"] for row in index.table.to_arrow().select(["id", "vector"]).to_pylist()}
    vectors = torch.tensor([rows[key] for key in ids])
    ocr_query = index.embed({"text": "Biển số xe này là gì?", "images": [picture("plate", 0)], "task": "ocr"})
    api_hit = index.search({"text": "Biển số xe này là gì?", "images": [picture("plate", 0)], "task": "ocr"}, k=1)[0]
    print(f"    Python API: Index(db).search(<ocr> question, k=1) -> {api_hit['id']} {api_hit['score']:+.4f}")

    st_inputs = [
        {"text": store[i][0], "image": store[i][1]}
        if store[i][0] and store[i][1] is not None
        else (
            store[i][0]
            if store[i][1] is None
            else store[i][1]
            if not isinstance(store[i][1], list)
            else {"image": store[i][1]}
        )
        for i in ids
    ]
    st_vectors = st.encode(st_inputs, convert_to_tensor=True, batch_size=4).cpu()
    ocr_by_prompt = st.encode(
        [{"text": "Biển số xe này là gì?", "image": picture("plate", 0)}], prompt_name="ocr", convert_to_tensor=True
    ).cpu()
    with warnings.catch_warnings():  # encode's workers fork; lancedb (imported above) warns on any fork
        warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
        auto_vectors = model.encode(text=[store[i][0] for i in ids], images=[store[i][1] for i in ids], batch_size=4)
    gaps = {
        "ST encode vs the db's vectors (index.py build)": (st_vectors - vectors).abs().max().item(),
        "ST encode vs AutoModel.encode": (st_vectors - auto_vectors).abs().max().item(),
        "task: ST prompt_name vs task= vs typed '<ocr>'": max(
            (ocr_by_prompt - ocr_query).abs().max().item(),
            (ocr_by_prompt - vectors[ids.index("plate_ocr")]).abs().max().item(),
        ),
    }
    print("[5] agreement (max abs difference):")
    for name, gap in gaps.items():
        print(f"    {name:<50} {gap:.2e}")
    if max(gaps.values()) > 1e-5:
        raise SystemExit("FAILED: loading paths disagree by more than 1e-5")
    if not torch.allclose(vectors.norm(dim=-1), torch.ones(len(ids)), atol=1e-5):
        raise SystemExit("FAILED: embeddings are not L2-normalised")
    print("OK: all loading paths and task forms agree.")


if __name__ == "__main__":
    main()
