"""The offline-built tokenizer is the real Qwen2 BPE (checked against quicktok's own encoder)."""

from __future__ import annotations

import unicodedata

import quicktok

from vipyloqwen_tools.checkpoint.tokenizer import QWEN2_VL_SPECIAL_TOKENS, build_qwen2_vl_tokenizer

TEXTS = [
    "Hello world",
    "Biển số xe này là gì? Hợp đồng này quy định các điều khoản về việc cung cấp dịch vụ.",
    "Ngày hết hạn của giấy phép lái xe: 12/05/2031. Số CCCD: 079203001234",
    "Phát hiện có khối u bất thường ở thùy trên phổi trái không?",
    "你好，世界！这是一个测试。",
    "def f(x):\n    return x ** 2  # comment\n\n\t tabs",
    "Emoji 🙂🚗 and accents: café naïve Ærøskøbing",
    "   leading spaces and trailing   ",
]


def test_matches_the_reference_bpe_on_varied_text():
    tokenizer = build_qwen2_vl_tokenizer()
    reference = quicktok.get_encoding("qwen3")
    for text in TEXTS:
        text = unicodedata.normalize("NFC", text)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == list(reference.encode(text)), text
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_special_tokens_and_known_ids():
    tokenizer = build_qwen2_vl_tokenizer()
    assert tokenizer("Hello world")["input_ids"] == [9707, 1879]
    assert tokenizer.convert_tokens_to_ids(QWEN2_VL_SPECIAL_TOKENS) == list(range(151643, 151657))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == 151643
    assert len(tokenizer) == 151657
