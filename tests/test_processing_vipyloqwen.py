"""Processor: input layout, the three ways to give a task, budgets, truncation and bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image

from configuration_vipyloqwen import MAX_IMAGES_PER_ITEM, TASKS


def render(processor, messages, **kwargs):
    return processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs=kwargs or None
    )


def ids_of(processor, text=None, images=None, task=None, prompt=None, **kwargs):
    batch = render(processor, processor.build_messages(text=text, images=images, task=task, prompt=prompt), **kwargs)
    return batch["input_ids"][batch["attention_mask"].bool()].tolist()


def st_style(processor, text, images, prompt):
    """What Sentence-Transformers sends for prompt_name: a system message holding the prompt."""
    content = [{"type": "text", "text": text}] + [{"type": "image", "image": image} for image in images]
    return [{"role": "system", "content": [{"type": "text", "text": prompt}]}, {"role": "user", "content": content}]


@pytest.mark.parametrize("task", list(TASKS))
def test_three_ways_of_giving_a_task_give_identical_tokens(processor, task):
    image = make_image()
    prefix = TASKS[task].prefix
    by_argument = ids_of(processor, ["Biển số xe này là gì?"], [image], task=task)
    by_typed_prefix = ids_of(processor, [f"{prefix} Biển số xe này là gì?"], [image])
    batch = render(processor, [st_style(processor, "Biển số xe này là gì?", [image], prefix)])
    by_prompt = batch["input_ids"][0].tolist()
    assert by_argument == by_typed_prefix == by_prompt


def test_layout_is_prefix_then_images_then_text_without_chat_boilerplate(processor):
    tok = processor.tokenizer
    ids = ids_of(processor, ["Xin chào"], [[make_image(), make_image(seed=1)]], task="vqa_multi")
    assert ids[0] == tok.convert_tokens_to_ids("<vqa_multi>")
    vision_start, vision_end = tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    assert ids[1] == vision_start and ids.count(vision_start) == 2 and ids.count(vision_end) == 2
    last_end = len(ids) - ids[::-1].index(vision_end)
    assert ids[last_end:] == tok("Xin chào", add_special_tokens=False)["input_ids"]
    text = tok.decode(ids)
    assert "system" not in text and "<|im_start|>" not in text and "assistant" not in text


def test_text_only_and_no_task_has_no_prefix(processor):
    ids = ids_of(processor, ["Hợp đồng dịch vụ"])
    assert ids == processor.tokenizer("Hợp đồng dịch vụ", add_special_tokens=False)["input_ids"]


def test_dict_key_order_does_not_change_the_layout(processor):
    image = make_image()
    text_first = [{"role": "user", "content": [{"type": "text", "text": "Ảnh gì?"}, {"type": "image", "image": image}]}]
    image_first = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Ảnh gì?"}]}
    ]
    a, b = render(processor, [text_first]), render(processor, [image_first])
    assert torch.equal(a["input_ids"], b["input_ids"])


def test_truncation_cuts_text_only_never_image_tokens(processor):
    tok = processor.tokenizer
    long_text = "Đây là một đoạn văn bản rất dài về hợp đồng. " * 40
    full = ids_of(processor, [long_text], [make_image()], task="ocr")
    cut = ids_of(processor, [long_text], [make_image()], task="ocr", text_kwargs={"truncation": True, "max_length": 7})
    image_token = tok.convert_tokens_to_ids("<|image_pad|>")
    assert cut.count(image_token) == full.count(image_token) > 0
    head = len(full) - len(tok(long_text, add_special_tokens=False)["input_ids"])
    assert cut == full[: head + 7]
    # A budget smaller than the image still keeps every image token.
    tiny_budget = ids_of(processor, [long_text], [make_image()], text_kwargs={"truncation": True, "max_length": 1})
    assert tiny_budget.count(image_token) == full.count(image_token)


def test_image_budget_default_per_call_and_at_load(processor, tiny_checkpoint):
    from transformers import AutoProcessor

    big = make_image(1200, 900)
    image_token = processor.image_token_id

    def n_tokens(proc, **kwargs):
        return ids_of(proc, None, [big], **kwargs).count(image_token)

    assert n_tokens(processor) <= 64  # the tiny checkpoint's saved default
    assert n_tokens(processor, images_kwargs={"max_image_tokens": 16}) <= 16
    loaded = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True, max_image_tokens=20)
    assert loaded.max_image_tokens == 20
    assert 4 < n_tokens(loaded) <= 20


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"text": [], "images": None}, ValueError, "Empty input"),
        ({"text": ["a", "b"], "images": [None]}, ValueError, "same length: 2 texts vs 1"),
        ({"text": ["ok", None], "images": [None, None]}, ValueError, r"item 2 \(text ''\): has neither text nor image"),
        (
            {"text": ["ok"], "images": [42]},
            TypeError,
            r"item 1 \(text 'ok'; image int\), image 1: expected a PIL.Image",
        ),
        (
            {"text": ["ok"], "images": ["/nonexistent/x.png"]},
            ValueError,
            r"item 1 \(text 'ok'; image '/nonexistent/x.png'\), image 1: image file not found",
        ),
        ({"text": ["ok"], "task": "ocrr"}, ValueError, "Unknown task 'ocrr'. Valid tasks: text_pair"),
        ({"text": ["<ocr> a"], "task": "instr"}, ValueError, r"item 1 \(text '<ocr> a'\): conflicting tasks"),
        ({"text": [1], "images": None}, TypeError, "item 1: text must be a string"),
        ({"text": 5}, TypeError, "text must be a string, a list of strings .* got int"),
        ({"text": ["ok", "bad \ud800 text"]}, ValueError, r"item 2 \(text 'bad .*lone surrogate '\\ud800'"),
    ],
)
def test_bad_input_names_the_item(processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        messages = processor.build_messages(**kwargs)
        for index, conversation in enumerate(messages):
            processor.canonicalize(conversation, index)


def test_too_many_images_and_corrupt_file(processor, tmp_path):
    images = [make_image(seed=i) for i in range(MAX_IMAGES_PER_ITEM + 1)]
    messages = processor.build_messages(text=["a", "b"], images=[None, images])
    with pytest.raises(
        ValueError,
        match=rf"batch item 2 \(text 'b'; image PIL RGB 120x90 \+ 5 more\): 6 images, at most {MAX_IMAGES_PER_ITEM}",
    ):
        render(processor, messages)
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(
        ValueError, match=r"batch item 1 \(text 'a'; image '.*broken.png'\), image 1: cannot read image"
    ):
        render(processor, processor.build_messages(text=["a"], images=[corrupt]))


# ---------------------------------------------------------------- issue 11: inputs as clients send them


def plain(processor, text):
    return processor.plain_token_ids([text])[0]


@pytest.mark.parametrize("text", ["", "   ", "\n", "\t \n"])
def test_break1_empty_text_is_the_end_of_text_token(processor, text):
    eot = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids_of(processor, [text]) == [eot]
    ocr = processor.task_token_ids["ocr"]
    assert ids_of(processor, [text], task="ocr") == [ocr, eot]
    assert ids_of(processor, ["<ocr>" + text]) == [ocr, eot]  # a bare prefix is an empty ocr item
    # With images, empty text adds nothing: the item is its images alone.
    image = make_image()
    assert ids_of(processor, [text], [image], task="ocr") == ids_of(processor, None, [image], task="ocr")


def test_break2_free_prompt_is_text_before_the_item_text(processor):
    system = [{"role": "system", "content": [{"type": "text", "text": "query: "}]}]
    user = [{"role": "user", "content": [{"type": "text", "text": "Hà Nội"}]}]
    by_system = render(processor, [system + user])["input_ids"][0].tolist()
    assert by_system == plain(processor, "query: Hà Nội") == ids_of(processor, ["query: Hà Nội"])
    assert ids_of(processor, ["Hà Nội"], prompt="query: ") == by_system
    # A prompt starting with a task prefix selects the task; the rest is text.
    ocr = processor.task_token_ids["ocr"]
    assert ids_of(processor, ["Hà Nội"], prompt="<ocr> query: ") == [ocr, *plain(processor, "query: Hà Nội")]
    # Text after a free prompt no longer starts the typed text: its prefix is plain characters.
    assert ids_of(processor, ["<ocr> Hà Nội"], prompt="query: ") == plain(processor, "query: <ocr> Hà Nội")


SPECIAL_TEXTS = {
    "task tokens": ["xin <ocr> chào", "a <text_pair><instr> b <vqa_multi><vqa_single>"],
    "vision tokens": ["<|vision_start|><|image_pad|><|vision_end|> ảnh", "x <|video_pad|> <|vision_pad|>"],
    "chat tokens": ["<|im_start|>user\nxin chào<|im_end|>", "<|endoftext|> hết <|object_ref_start|>"],
}


@pytest.mark.parametrize("family", list(SPECIAL_TEXTS))
def test_break4_special_tokens_in_text_are_plain_characters(processor, family):
    tok = processor.tokenizer
    special_ids = set(tok.all_special_ids) | set(processor.task_token_ids.values())
    special_ids |= {i for t, i in tok.get_vocab().items() if t.startswith("<|") and t.endswith("|>")}
    for text in SPECIAL_TEXTS[family]:
        ids = ids_of(processor, [text])
        assert ids == plain(processor, text) and not special_ids & set(ids), text
        assert tok.decode(ids) == text  # the same characters come back
        # Inside an image item the vision tokens are still exactly the image's own.
        image = make_image()
        batch = render(processor, processor.build_messages(text=[text], images=[image]))
        only_image = render(processor, processor.build_messages(text=None, images=[image]))
        n_image = (only_image["input_ids"] == processor.image_token_id).sum()
        assert (batch["input_ids"] == processor.image_token_id).sum() == n_image
        assert batch["mm_token_type_ids"].sum() == only_image["mm_token_type_ids"].sum()


def test_break4_task_prefix_counts_only_at_the_very_start(processor):
    ocr, instr = processor.task_token_ids["ocr"], processor.task_token_ids["instr"]
    assert ids_of(processor, ["<ocr><instr> a"]) == [ocr, *plain(processor, "<instr> a")]
    assert ids_of(processor, ["<ocr> <ocr> foo"]) == [ocr, *plain(processor, "<ocr> foo")]
    assert ids_of(processor, ["  <instr>\nfoo"]) == [instr, *plain(processor, "foo")]
    assert ids_of(processor, ["foo <ocr>"]) == plain(processor, "foo <ocr>")
    # The same task given separately and typed counts once.
    assert ids_of(processor, ["<ocr> foo"], task="ocr") == [ocr, *plain(processor, "foo")]


def test_break9_batches_are_padded_by_default_and_padding_can_be_turned_off(processor):
    messages = processor.build_messages(text=["ngắn", "một câu dài hơn nhiều, rất nhiều chữ"])
    batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    lengths = [len(plain(processor, t)) for t in ("ngắn", "một câu dài hơn nhiều, rất nhiều chữ")]
    assert batch["input_ids"].shape == (2, max(lengths)) and batch["attention_mask"].sum(1).tolist() == lengths
    ragged = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, processor_kwargs={"text_kwargs": {"padding": False}}
    )
    assert [len(ids) for ids in ragged["input_ids"]] == lengths
    # The low-level __call__ on rendered text pads by default too.
    direct = processor(text=["ngắn", "một câu dài hơn nhiều"], return_tensors="pt")
    assert direct["input_ids"].shape[0] == 2


def test_canonical_items_are_read_once(processor):
    messages = processor.build_messages(text=["<ocr> <ocr> foo"])
    canonical = processor.canonicalize(messages[0], 0)
    assert canonical.task == "ocr" and canonical.text == "<ocr> foo"
    assert processor.canonicalize(canonical, 0) is canonical
    assert (
        render(processor, [canonical])["input_ids"][0].tolist() == render(processor, messages)["input_ids"][0].tolist()
    )
    rendered = processor.apply_chat_template(messages, tokenize=False)
    assert rendered == ["<ocr><ocr> foo"]  # for display: the text as typed after the prefix
