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


def ids_of(processor, text=None, images=None, task=None, **kwargs):
    batch = render(processor, processor.build_messages(text=text, images=images, task=task), **kwargs)
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
        ({"text": ["ok", None], "images": [None, None]}, ValueError, "item 1: has neither text nor image"),
        ({"text": ["ok", "   "], "images": None}, ValueError, "item 1: has neither text nor image"),
        ({"text": ["ok"], "images": [42]}, TypeError, "item 0, image 0: expected a PIL.Image"),
        ({"text": ["ok"], "images": ["/nonexistent/x.png"]}, ValueError, "item 0, image 0: image file not found"),
        ({"text": ["ok"], "task": "ocrr"}, ValueError, "Unknown task 'ocrr'. Valid tasks: text_pair"),
        ({"text": ["<ocr> a"], "task": "instr"}, ValueError, "item 0: conflicting tasks"),
        ({"text": [1], "images": None}, TypeError, "item 0: text must be a string"),
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
    with pytest.raises(ValueError, match=f"item 1: 6 images, at most {MAX_IMAGES_PER_ITEM}"):
        render(processor, messages)
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="item 0, image 0: cannot read image file"):
        render(processor, processor.build_messages(text=["a"], images=[corrupt]))


def test_unknown_prompt_via_system_message_lists_valid(processor):
    with pytest.raises(ValueError, match="Unknown task '<bad>'.*<ocr>"):
        render(processor, [st_style(processor, "x", [], "<bad>")])
