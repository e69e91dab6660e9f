"""What the benchmarks measure on: the models to benchmark and the generated workloads.

Models (``--model``):

- ``tiny``: :func:`vipyloqwen_tools.checkpoint.export.tiny` (real Qwen2 vocabulary, text 64 x 2 layers, vision 32 x 2,
  image budget 64 tokens), saved as a Hub checkpoint.
- ``2b-shaped``: the real Qwen2-VL-2B widths (text 1536, 12 heads, 2 KV heads, intermediate 8960, vocab
  151936; vision 1280, 16 heads) with few layers (default 2 text, 2 vision) and random weights.
- any other value: a path to a saved viPyloQwen checkpoint.

Workloads: Vietnamese queries and passages of measured token lengths, document-page pictures, and a mixed stream
of text, images, text+image and multi-image items (:func:`make_workloads`). Timing, memory, machine facts and the
results JSON: ``bench/harness.py``.
"""

from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


# ---------------------------------------------------------------------------------------------- models
def two_b_shaped_config(embed_dim: int = 1024, text_layers: int = 2, vision_layers: int = 2):
    """A :class:`ViPyloQwenConfig` with the real Qwen2-VL-2B widths and ``text_layers`` / ``vision_layers``
    layers (the real model has 28 / 32)."""
    from vipyloqwen_tools.checkpoint.architectures import qwen2_vl_2b_config

    return qwen2_vl_2b_config(embed_dim, text_layers, vision_layers)


def two_b_shaped(
    embed_dim: int = 1024, seed: int = 0, max_image_tokens: int = 256, text_layers: int = 2, vision_layers: int = 2
):
    """(model, processor): random weights at the real 2B widths with the real tokenizer and task tokens."""
    from modeling_vipyloqwen import ViPyloQwenModel
    from vipyloqwen_tools.checkpoint.export import add_task_tokens, build_processor, init_task_rows
    from vipyloqwen_tools.checkpoint.tokenizer import build_qwen2_vl_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_qwen2_vl_tokenizer()
    trained_rows = len(tokenizer)
    task_ids = add_task_tokens(tokenizer)
    model = ViPyloQwenModel(two_b_shaped_config(embed_dim, text_layers, vision_layers)).eval()
    init_task_rows(model, task_ids, trained_rows)
    return model, build_processor(tokenizer, max_image_tokens)


def prepare_checkpoint(spec: str, workdir: Path, max_image_tokens: int | None = None) -> Path:
    """A checkpoint folder for ``spec`` (``tiny``, ``2b-shaped`` or a path); generated models go in ``workdir``.

    ``max_image_tokens`` sets the image budget saved with a generated model (tiny: 64, 2b-shaped: 256 by
    default); it is ignored for a path (its saved budget is used).
    """
    from vipyloqwen_tools.checkpoint.export import save_checkpoint, tiny

    if spec == "tiny":
        model, processor = tiny(embed_dim=32, seed=0, max_image_tokens=max_image_tokens or 64)
    elif spec == "2b-shaped":
        model, processor = two_b_shaped(max_image_tokens=max_image_tokens or 256)
    else:
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise SystemExit(f"--model {spec!r}: not 'tiny', '2b-shaped' or a checkpoint folder with config.json")
        return path
    out = save_checkpoint(model, processor, workdir / spec)
    del model
    gc.collect()
    return out


def model_facts(model: Any, processor: Any, spec: str) -> dict[str, Any]:
    """Architecture numbers of a loaded viPyloQwen model, for the report."""
    text, vision = model.config.text_config, model.config.vision_config
    return {
        "name": spec,
        "parameters": sum(p.numel() for p in model.parameters()),
        "text_hidden": text.hidden_size,
        "text_layers": text.num_hidden_layers,
        "vision_width": vision.embed_dim,
        "vision_layers": vision.depth,
        "vocab_rows": model.get_input_embeddings().num_embeddings,
        "embed_dim": model.config.embed_dim,
        "max_image_tokens": processor.max_image_tokens,
        "dtype": str(model.dtype).replace("torch.", ""),
        "attn_implementation": model.config._attn_implementation,
    }


# ---------------------------------------------------------------------------------------------- workloads
VIETNAMESE_WORDS = (
    "tôi bạn chúng ta người Việt Nam Hà Nội thành phố Hồ Chí Minh đường phố nhà cửa gia đình công ty trường học "
    "sinh viên giáo viên bác sĩ bệnh viện thuốc sức khỏe thời tiết hôm nay ngày mai mưa nắng gió bão lũ lụt "
    "giá cả thị trường chứng khoán ngân hàng lãi suất tiền đồng đô la kinh tế phát triển tăng trưởng xuất khẩu "
    "nông nghiệp lúa gạo cà phê hồ tiêu thủy sản du lịch khách sạn nhà hàng món ăn phở bún chả bánh mì "
    "giao thông xe máy ô tô tàu hỏa máy bay sân bay cảng biển hợp đồng hóa đơn biên lai chứng minh nhân dân "
    "căn cước công dân hộ chiếu giấy phép lái xe biển số điện thoại máy tính phần mềm trí tuệ nhân tạo dữ liệu "
    "mô hình ngôn ngữ tìm kiếm văn bản hình ảnh tài liệu câu hỏi câu trả lời như thế nào tại sao ở đâu bao nhiêu "
    "khi nào ai cái gì được không có không rất nhiều ít lớn nhỏ mới cũ đẹp tốt xấu nhanh chậm quan trọng cần thiết "
    "theo quy định của pháp luật chính phủ quốc hội bộ trưởng tỉnh huyện xã phường quận ủy ban nhân dân"
).split()


def vietnamese_text(rng: random.Random, tokenizer: Any, target_tokens: int) -> str:
    """Random Vietnamese words until the text has about ``target_tokens`` tokens (measured, not guessed)."""
    words: list[str] = []
    while True:
        words.extend(rng.choice(VIETNAMESE_WORDS) for _ in range(max(1, (target_tokens - 1) // 3)))
        text = " ".join(words)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n >= target_tokens:
            return text
        if n >= target_tokens - 3:
            words.append(rng.choice(VIETNAMESE_WORDS))


def page_image(rng: random.Random, width: int = 827, height: int = 1169) -> Image.Image:
    """A document-page-like picture: white paper, a title bar and lines of dark 'text' (A4 at 100 dpi by default)."""
    image = Image.new("RGB", (width, height), (252, 252, 248))
    draw = ImageDraw.Draw(image)
    margin = max(4, width // 12)
    draw.rectangle([margin, margin, width - margin, margin + max(4, height // 30)], fill=(30, 30, 90))
    y = margin + height // 20
    line = max(3, height // 60)
    while y < height - margin:
        x = margin
        while x < width - margin:
            word = rng.randint(line, line * 6)
            draw.rectangle([x, y, min(width - margin, x + word), y + line // 2 + 1], fill=(20, 20, 20))
            x += word + line
        y += line * 2
    return image


# (width, height) of the kinds of pictures the mixed stream carries: page, receipt, screenshot, photo, sign.
MIXED_IMAGE_SIZES = ((827, 1169), (384, 1100), (1280, 720), (640, 480), (300, 200))


@dataclass
class Item:
    """One input: optional text and 0-5 images."""

    text: str | None = None
    images: list[Image.Image] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if not self.images:
            return "text"
        if self.text is None:
            return "image" if len(self.images) == 1 else "multi-image"
        return "text+image" if len(self.images) == 1 else "text+multi-image"


@dataclass
class Workload:
    """A named list of items encoded with one task."""

    name: str
    description: str
    task: str
    items: list[Item]


# name -> (description, task) of the generated workloads, in the order they are generated (the order fixes what
# the seeded random stream gives each one).
WORKLOADS = {
    "queries": ("Vietnamese queries, ~20 tokens", "text_pair"),
    "passages": ("Vietnamese passages, ~300 tokens", "text_pair"),
    "pages": ("document pages (A4, 827x1169 px) at the image budget", "ocr"),
    "mixed": (
        "mixed stream: queries, passages, images, text+image, text + 2-3 images (pages, receipts, screenshots, "
        "photos, signs)",
        "vqa_multi",
    ),
}
MIXED_KINDS = ("query", "passage", "image", "text+image", "multi-image")


def make_workloads(tokenizer: Any, sizes: dict[str, int], seed: int = 0) -> list[Workload]:
    """The fixed generated workloads (deterministic per seed): queries, passages, pages, mixed.

    ``sizes`` maps each workload name to its item count (0 skips it).
    """
    rng = random.Random(seed)

    def query() -> str:
        return vietnamese_text(rng, tokenizer, max(8, int(rng.gauss(20, 4))))

    def passage() -> str:
        return vietnamese_text(rng, tokenizer, max(120, int(rng.gauss(300, 60))))

    def picture() -> Image.Image:
        width, height = rng.choice(MIXED_IMAGE_SIZES)
        return page_image(rng, width, height)

    def mixed_item(index: int) -> Item:
        # the first items cover every kind once, then kinds are drawn at random
        kind = MIXED_KINDS[index] if index < len(MIXED_KINDS) else rng.choice(MIXED_KINDS)
        if kind == "query":
            return Item(query())
        if kind == "passage":
            return Item(passage())
        if kind == "image":
            return Item(None, [picture()])
        if kind == "text+image":
            return Item(query(), [picture()])
        return Item(query(), [picture() for _ in range(rng.randint(2, 3))])

    makers = {
        "queries": lambda index: Item(query()),
        "passages": lambda index: Item(passage()),
        "pages": lambda index: Item(None, [page_image(rng)]),
        "mixed": mixed_item,
    }
    workloads = []
    for name, (description, task) in WORKLOADS.items():
        if not sizes.get(name):
            continue
        items = [makers[name](index) for index in range(sizes[name])]
        if name == "mixed":
            rng.shuffle(items)
        workloads.append(Workload(name, description, task, items))
    return workloads


def short_texts(n: int, seed: int = 1) -> list[str]:
    """``n`` short Vietnamese texts (3-8 words) for the long-stream memory check."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(VIETNAMESE_WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]
