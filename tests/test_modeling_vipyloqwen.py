"""Model: ST encode == AutoModel.encode == an independent stock-transformers reference, in fp32."""

from __future__ import annotations

import io
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image, png_bytes
from PIL import Image
from transformers import Qwen2VLConfig, Qwen2VLModel

from configuration_vipyloqwen import TASKS

TOL = 1e-5


@pytest.fixture(scope="module")
def reference(auto_model):
    """Stock Qwen2VLModel on the same weights + projection + masked mean + L2 (no viPyloQwen code)."""
    settings = auto_model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "embed_dim"):
        settings.pop(key, None)
    stock = Qwen2VLModel(Qwen2VLConfig(**settings)).eval()
    state = {k: v for k, v in auto_model.state_dict().items() if not k.startswith("embedding_projection")}
    stock.load_state_dict(state, strict=True)
    weight = auto_model.embedding_projection.weight.detach().float()

    @torch.no_grad()
    def embed(batch) -> torch.Tensor:
        hidden = stock(**{k: v for k, v in batch.items()}, use_cache=False).last_hidden_state.float() @ weight.T
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    return embed


def items():
    """(name, text, images) covering text, image, text+image and multi-image items."""
    return [
        ("text", "Hợp đồng này quy định các điều khoản về dịch vụ điện toán đám mây.", None),
        ("image", None, make_image(140, 100, seed=1)),
        ("text+image", "Biển số xe này là gì?", make_image(100, 60, seed=2)),
        ("multi-image", "So sánh hai biểu đồ doanh thu.", [make_image(90, 90, seed=3), make_image(60, 120, seed=4)]),
    ]


def st_input(text, images):
    if images is None:
        return text
    if text is None:
        return images if not isinstance(images, list) else {"image": images}
    return {"text": text, "image": images}


@pytest.mark.parametrize("task", [None, *TASKS])
def test_st_automodel_and_reference_agree_for_every_prompt(st_model, auto_model, processor, reference, task):
    cases = items()
    texts = [text for _, text, _ in cases]
    images = [image for _, _, image in cases]
    auto = auto_model.encode(text=texts, images=images, task=task, batch_size=4)
    st = st_model.encode([st_input(t, i) for _, t, i in cases], prompt_name=task, convert_to_tensor=True, batch_size=4)
    typed = [f"{TASKS[task].prefix} {t}" if (task and t) else t for t in texts]
    auto_typed = auto_model.encode(text=typed, images=images, task=None if any(typed) and task else task)
    for index, (name, text, image) in enumerate(cases):
        batch = processor.apply_chat_template(
            processor.build_messages(text=[text], images=[image], task=task),
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        ref = reference(dict(batch))[0]
        assert torch.allclose(auto[index], ref, atol=TOL), f"{name}: AutoModel vs reference"
        assert torch.allclose(st[index].float().cpu(), ref, atol=TOL), f"{name}: ST vs reference"
        if text is not None:
            assert torch.allclose(auto_typed[index], ref, atol=TOL), f"{name}: typed prefix vs reference"
    assert auto.shape == (len(cases), auto_model.config.embed_dim) and auto.dtype == torch.float32
    assert torch.allclose(auto.norm(dim=-1), torch.ones(len(cases)), atol=1e-5)


def test_item_alone_equals_item_in_mixed_padded_batch(auto_model):
    cases = items()
    texts = [t for _, t, _ in cases] + ["Một câu rất ngắn", "Một câu dài hơn nhiều " * 20]
    images = [i for _, _, i in cases] + [None, None]
    batched = auto_model.encode(text=texts, images=images, task="vqa_single", batch_size=len(texts))
    for index in range(len(texts)):
        alone = auto_model.encode(text=[texts[index]], images=[images[index]], task="vqa_single")
        assert torch.allclose(alone[0], batched[index], atol=TOL), f"item {index}"


def test_output_is_in_input_order(auto_model):
    texts = ["ngắn", "một câu dài hơn một chút", "một câu còn dài hơn nhiều nữa, rất nhiều chữ ở đây"]
    forward = auto_model.encode(text=texts, batch_size=1)
    backward = auto_model.encode(text=texts[::-1], batch_size=2)
    assert torch.allclose(forward, backward.flip(0), atol=TOL)


def test_single_item_forms(auto_model):
    image = make_image()
    one = auto_model.encode(text="Biển số xe", images=image, task="ocr")
    listed = auto_model.encode(text=["Biển số xe"], images=[image], task="ocr")
    assert one.shape == (1, auto_model.config.embed_dim) and torch.allclose(one, listed, atol=TOL)
    two_images = auto_model.encode(text="Hai ảnh", images=[image, make_image(seed=5)])
    assert two_images.shape == (1, auto_model.config.embed_dim)
    image_only = auto_model.encode(images=[image, [image, image]])
    assert image_only.shape == (2, auto_model.config.embed_dim)


def test_projection_is_initialised_to_truncation(tiny_parts):
    model, _ = tiny_parts
    weight = model.embedding_projection.weight
    assert weight.shape == (model.config.embed_dim, model.config.text_config.hidden_size)
    assert torch.equal(weight, torch.eye(*weight.shape))


def test_task_rows_initialised_to_mean_of_trained_rows(tiny_parts):
    model, processor = tiny_parts
    table = model.get_input_embeddings().weight
    ids = list(processor.task_token_ids.values())
    assert table.shape[0] == 151936  # never shrunk to len(tokenizer)
    expected = table[: min(ids)].mean(0)
    for token_id in ids:
        assert torch.allclose(table[token_id], expected, atol=1e-6)


def test_loading_without_trust_remote_code_fails_loudly(tiny_checkpoint):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tiny_checkpoint))


def test_save_load_keeps_embeddings_and_writes_no_machine_local_keys(auto_model, tmp_path, tiny_checkpoint):
    from transformers import AutoModel

    from vipyloqwen_tools.checkpoint.export import MACHINE_LOCAL_KEYS, save_checkpoint

    texts = ["Trời hôm nay đẹp", None]
    images = [None, make_image(seed=7)]
    before = auto_model.encode(text=texts, images=images, task="ocr")
    out = save_checkpoint(auto_model, auto_model.processor, tmp_path / "again")
    after = AutoModel.from_pretrained(out, trust_remote_code=True).encode(text=texts, images=images, task="ocr")
    assert torch.equal(before, after)
    for path in [*out.rglob("*.json"), *tiny_checkpoint.rglob("*.json")]:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        if isinstance(data, dict):
            assert not set(MACHINE_LOCAL_KEYS) & set(data), path
        assert str(tmp_path) not in text and "/work/" not in text and "/tmp/" not in text, path


def test_encode_rejects_bad_arguments(auto_model):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        auto_model.encode(text=["a"], batch_size=0)
    with pytest.raises(ValueError, match="Empty input"):
        auto_model.encode(text=[])


def test_st_budgets_max_seq_length_and_per_call_image_tokens(st_model):
    image = make_image(1200, 900)
    image_token = st_model[0].processor.image_token_id
    per_call = st_model.preprocess([image], processing_kwargs={"image": {"max_image_tokens": 9}})
    assert 0 < (per_call["input_ids"] == image_token).sum() <= 9
    previous = st_model.max_seq_length
    try:
        st_model.max_seq_length = 3
        features = st_model.preprocess([{"text": "một hai ba bốn năm sáu bảy tám", "image": image}], prompt="<ocr>")
        full = st_model[0].processor.tokenizer("một hai ba bốn năm sáu bảy tám", add_special_tokens=False)
        ids = features["input_ids"][0].tolist()
        vision_end = ids.index(st_model[0].processor.vision_end_token_id)
        assert len(full["input_ids"]) > 3 and ids[vision_end + 1 :] == full["input_ids"][:3]
        assert ids[0] == st_model[0].processor.task_token_ids["ocr"]
    finally:
        st_model.max_seq_length = previous


@pytest.mark.slow
def test_loads_offline_from_a_hub_id_like_from_a_path(tiny_checkpoint, auto_model, tmp_path):
    """A Hub id resolved from the local HF cache (HF_HUB_OFFLINE=1) gives the same vectors as the folder."""
    import shutil
    import subprocess
    import sys

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--erax-ai--viPyloQwen"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "import sys, torch\n"
        "from sentence_transformers import SentenceTransformer\n"
        "from transformers import AutoModel\n"
        "a = AutoModel.from_pretrained('erax-ai/viPyloQwen', trust_remote_code=True).encode(text=['Xin chào'],"
        " task='text_pair')\n"
        "b = SentenceTransformer('erax-ai/viPyloQwen', trust_remote_code=True, device='cpu').encode("
        "['Xin chào'], prompt_name='text_pair', convert_to_tensor=True)\n"
        "torch.save(torch.cat([a, b.cpu()]), sys.argv[1])\n"
    )
    env = {
        **__import__("os").environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.pt")], check=True, env=env, timeout=300)
    from_hub = torch.load(tmp_path / "out.pt")
    local = auto_model.encode(text=["Xin chào"], task="text_pair")
    assert torch.allclose(from_hub[0], local[0], atol=TOL) and torch.allclose(from_hub[1], local[0], atol=TOL)


def test_batches_cover_every_item_once_and_limit_padding():
    import random

    from processing_vipyloqwen import length_batches

    rng = random.Random(0)
    lengths = [rng.choice([20, 300, 70, 260, 600]) + rng.randint(0, 30) for _ in range(200)]
    batches = length_batches(lengths, 8)
    assert sorted(i for batch in batches for i in batch) == list(range(200))
    assert all(1 <= len(batch) <= 8 for batch in batches)
    real = sum(lengths)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    fixed = sorted(range(200), key=lengths.__getitem__, reverse=True)
    fixed_padded = sum(len(b) * lengths[b[0]] for b in (fixed[s : s + 8] for s in range(0, 200, 8)))
    assert real / padded >= 0.85 and padded <= fixed_padded


def test_item_lengths_are_exact_for_untruncated_items(auto_model):
    processor = auto_model.processor
    # Sizes the image rule must get right: a side below one 28-pixel patch (upscaled, aspect kept), far above the
    # budget (box-reduced early), an extreme aspect ratio, and images within the budget.
    texts = ["Xin chào các bạn", None, "Biển số xe này là gì?", "nhỏ", None, "dài", ""]
    images = [
        None,
        make_image(300, 200),
        [make_image(90, 60), make_image(seed=3)],
        make_image(10, 40),
        make_image(2000, 1500, seed=5),
        [make_image(3000, 40), make_image(22, 900)],
        None,
    ]
    messages = processor.build_messages(text=texts, images=images, task="ocr")
    estimated = processor.item_lengths(messages)
    for index, conversation in enumerate(messages):
        batch = processor.apply_chat_template(
            [processor.canonicalize(conversation, index)], tokenize=True, return_dict=True, return_tensors="pt"
        )
        assert estimated[index] == batch["input_ids"].shape[1]  # prefix + image tokens + text


# ---------------------------------------------------------------- issue 11: ST == AutoModel on odd inputs
ODD_TEXTS = [
    "",  # 1: empty and whitespace-only chunks, a bare prefix
    "   ",
    "\n",
    "<ocr>",
    "<ocr>  ",
    "xin <ocr> chào",  # 4: special tokens typed inside text
    "<|image_pad|> x <|vision_start|><|vision_end|>",
    "<|im_start|>user\nxin chào<|im_end|>",
    "<ocr> <ocr> foo",  # 5: only the very first prefix is a task
    "<ocr><instr> a",
]


def close(a, b) -> bool:
    return torch.allclose(a.float().cpu(), b.float().cpu(), atol=TOL)


def test_odd_texts_st_equals_automodel(st_model, auto_model):
    auto = auto_model.encode(text=ODD_TEXTS, batch_size=4)
    st = st_model.encode(ODD_TEXTS, convert_to_tensor=True, batch_size=4)
    for index, text in enumerate(ODD_TEXTS):
        assert close(auto[index], st[index]), text
    assert torch.isfinite(auto).all() and torch.allclose(auto.norm(dim=-1), torch.ones(len(ODD_TEXTS)), atol=1e-5)
    # Empty text is deterministic: "", "   ", "\n" embed alike; so do "<ocr>" and "<ocr>  " (the ocr prefix + it).
    assert close(auto[0], auto[1]) and close(auto[0], auto[2]) and close(auto[3], auto[4])
    assert close(auto[3], auto_model.encode(text=[""], task="ocr")[0])
    # Only the first prefix is a task; the second is characters (the whitespace after the first is dropped).
    assert close(auto[8], auto_model.encode(text=["<ocr><ocr> foo"])[0])
    assert close(auto[9], auto_model.encode(text=["<ocr>  <instr> a"])[0])
    assert not close(auto[8], auto_model.encode(text=["foo"], task="ocr")[0])


def test_break2_free_prompts_and_prompt_names_in_both_paths(st_model, auto_model):
    texts = ["Hà Nội là thủ đô.", "", "<ocr> x"]
    st = st_model.encode(texts, prompt="query: ", convert_to_tensor=True)
    auto = auto_model.encode(text=texts, prompt="query: ")
    typed = auto_model.encode(text=["query: " + t for t in texts])
    assert all(close(st[i], auto[i]) and close(auto[i], typed[i]) for i in range(len(texts)))
    with_task = st_model.encode(["Hà Nội"], prompt="<ocr> query: ", convert_to_tensor=True)
    assert close(with_task[0], auto_model.encode(text=["query: Hà Nội"], task="ocr")[0])
    assert close(with_task[0], auto_model.encode(text=["Hà Nội"], prompt="<ocr> query: ")[0])
    by_name = st_model.encode(["Hà Nội"], prompt_name="ocr", convert_to_tensor=True)
    assert close(by_name[0], auto_model.encode(text=["Hà Nội"], prompt_name="ocr")[0])
    with pytest.raises(ValueError, match="Unknown prompt_name 'query: '. Saved prompts: text_pair, instr, ocr"):
        auto_model.encode(text=["a"], prompt_name="query: ")
    with pytest.raises(ValueError, match="Prompt name 'query: ' not found"):  # Sentence-Transformers' own check
        st_model.encode(["a"], prompt_name="query: ")


def test_break3_image_values_st_equals_automodel(st_model, auto_model, tmp_path, image_server):
    import base64
    from pathlib import Path

    import numpy as np

    base, body = image_server
    pil = Image.open(io.BytesIO(body)).convert("RGB")
    path = tmp_path / "ok.png"
    path.write_bytes(body)
    array = np.asarray(pil)
    values = {
        "PIL": pil,
        "str path": str(path),
        "pathlib.Path": Path(path),
        "numpy HWC uint8": array,
        "numpy HWC float": array.astype(np.float32) / 255,
        "numpy HW": np.asarray(pil.convert("L")),
        "torch CHW float": torch.from_numpy(np.moveaxis(array, -1, 0).copy()).float() / 255,
        "torch HWC uint8": torch.from_numpy(array.copy()),
        "bytes": png_bytes(pil),
        "URL": f"{base}/ok.png",
        "data URI": "data:image/png;base64," + base64.b64encode(body).decode(),
    }
    names = list(values)
    auto = auto_model.encode(images=[values[n] for n in names], batch_size=4)
    # ST routes PIL images, image paths/URLs and 3-D arrays by themselves; bytes, Path and a bare 2-D
    # array (which ST calls audio) are given as {"image": ...} / work bare where noted.
    st_inputs = [values[n] if n not in ("bytes", "pathlib.Path") else {"image": values[n]} for n in names]
    st = st_model.encode(st_inputs, convert_to_tensor=True, batch_size=4)
    grey = names.index("numpy HW")
    for index, name in enumerate(names):
        assert close(auto[index], st[index]), name
        if index != grey:
            assert close(auto[index], auto[0]), f"{name} differs from the PIL image"
    assert close(auto[grey], auto_model.encode(images=[pil.convert("L")])[0])


def test_break6_7_errors_name_the_item_in_both_paths(st_model, auto_model):
    import numpy as np

    texts = ["dài " * 30, "ngắn", "vừa", "lỗi \ud800 ở đây", "x"]
    with pytest.raises(ValueError, match=r"^item 4 \(text 'lỗi .*'\): text is not valid Unicode: lone surrogate"):
        auto_model.encode(text=texts)
    with pytest.raises(ValueError, match=r"^batch item [1-5] \(text 'lỗi .*'\): text is not valid Unicode"):
        st_model.encode(texts)
    thin = Image.new("RGB", (1, 100000))
    with pytest.raises(ValueError, match=r"^item 2 \(image PIL RGB 1x100000\), image 1: aspect ratio 100000 exceeds"):
        auto_model.encode(images=[make_image(), thin])
    with pytest.raises(ValueError, match=r"^batch item [12] \(image PIL RGB 1x100000\), image 1: aspect ratio"):
        st_model.encode([make_image(), thin])
    nan = np.full((30, 40, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match=r"^item 1 \(text 'a'; image numpy float32 \(30, 40, 3\)\), image 1: .*NaN"):
        auto_model.encode(text=["a"], images=[nan])
    with pytest.raises(ValueError, match=r"^batch item 1 \(text 'a'; image numpy .*\), image 1: .*NaN"):
        st_model.encode([{"text": "a", "image": nan}])
    closed = make_image()
    closed.close()
    with pytest.raises(ValueError, match=r"^item 2 .*, image 1: the PIL image was closed"):
        auto_model.encode(images=[make_image(), closed])
    with pytest.raises(ValueError, match=r"^batch item [12] .*, image 1: the PIL image was closed"):
        st_model.encode([make_image(), closed])
    with pytest.raises(ValueError, match=r"^batch item 1 \(image '/missing/x.png'\), image 1: image file not found"):
        st_model.encode([{"image": "/missing/x.png"}])
    with pytest.raises(TypeError, match="text must be a string, a list of strings .* got int"):
        auto_model.encode(text=5)


def test_break7_8_animated_and_huge_files_in_both_paths(st_model, auto_model, tmp_path, monkeypatch):
    frames = [Image.new("RGB", (60, 40), color) for color in ((200, 10, 10), (10, 200, 10))]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = Image.open(gif).convert("RGB")
    auto = auto_model.encode(images=[str(gif), first])
    assert close(auto[0], auto[1]) and close(st_model.encode([str(gif)], convert_to_tensor=True)[0], auto[0])
    page = tmp_path / "page.png"
    make_image(900, 1200, seed=3).save(page)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # PIL's bomb guard would refuse the file now
    auto = auto_model.encode(images=[str(page)])
    st = st_model.encode([str(page)], convert_to_tensor=True)
    monkeypatch.undo()
    assert close(auto[0], st[0]) and close(auto[0], auto_model.encode(images=[Image.open(page)])[0])
