"""viPyloQwen processor: Qwen2-VL image processor + tokenizer, tokenising items in the embedding layout.

Every item is tokenised as ``[task prefix] [images] [text]``: the task prefix token (if any), then each
image as ``<|vision_start|><|image_pad|>...<|vision_end|>``, then the item's text read as plain characters
(special tokens typed in the text are not special). There is no chat boilerplate (no default system prompt,
no role markers, no generation prompt). How an item's messages are read (prompts, task prefixes, empty
text, error names) is in :mod:`items_vipyloqwen`; which image values are accepted, in :mod:`images_vipyloqwen`.

The task can be given three ways, all giving the same tokens:

- a system message holding the prefix token (what Sentence-Transformers sends for ``prompt_name``),
- ``task=`` in :meth:`ViPyloQwenModel.encode` / :meth:`ViPyloQwenProcessor.build_messages`,
- the prefix typed at the very start of the text (``"<ocr> Biển số xe này là gì?"``); the whitespace after
  a typed prefix is dropped.

Budgets (load-time defaults, overridable per call):

- ``max_image_tokens`` (default 1024) / ``min_image_tokens`` (default 4): per-image token budget; one
  image token covers 28x28 pixels, images are resized (aspect kept) into the budget.
- ``max_text_tokens`` (default 8192): text tokens per item. A ``max_length`` passed at call time
  (Sentence-Transformers passes its ``max_seq_length``) has the same meaning. Truncation only ever cuts
  the item's text: the task prefix and the image tokens are never cut.

Batches are padded to their longest item by default (``text_kwargs={"padding": False}`` turns it off).

Example::

    >>> processor = AutoProcessor.from_pretrained("erax-ai/viPyloQwen", trust_remote_code=True)
    >>> messages = processor.build_messages(text=["Xin chào", "Tạm biệt"], task="text_pair")
    >>> batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

try:
    from .configuration_vipyloqwen import (
        DEFAULT_MAX_IMAGE_TOKENS,
        DEFAULT_MAX_TEXT_TOKENS,
        DEFAULT_MIN_IMAGE_TOKENS,
        TASKS,
    )
    from .images_vipyloqwen import PATCH, check_size, image_size, prepare_image, prepared_size
    from .items_vipyloqwen import CanonicalItem, build_messages, label, split_item
except ImportError:  # imported as a top-level module (tests, scripts)
    from configuration_vipyloqwen import (
        DEFAULT_MAX_IMAGE_TOKENS,
        DEFAULT_MAX_TEXT_TOKENS,
        DEFAULT_MIN_IMAGE_TOKENS,
        TASKS,
    )
    from images_vipyloqwen import PATCH, check_size, image_size, prepare_image, prepared_size
    from items_vipyloqwen import CanonicalItem, build_messages, label, split_item

# Renders every message's content in order, without roles. The processor canonicalises each item
# to [system: prefix] + [user: images..., text] before rendering, so the order is always
# prefix, images, text.
EMBEDDING_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
)

_SIZE_KEYS = ("max_length", "truncation", "padding", "return_tensors", "pad_to_multiple_of")
# An image whose size is unknown before it is downloaded (an http(s) URL) counts as this size in item_lengths.
UNKNOWN_IMAGE_SIZE = (PATCH * 32, PATCH * 32)
# Items read per chunk in item_lengths: only the counts are kept, so memory stays flat on long streams.
_LENGTH_CHUNK = 512


def image_token_count(
    width: int,
    height: int,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
    min_image_tokens: int = DEFAULT_MIN_IMAGE_TOKENS,
) -> int:
    """Merged image tokens of a ``width`` x ``height`` image (its decoded size) at a per-image token budget.

    The one home of the rule: :func:`images_vipyloqwen.prepared_size` (the early shrink and the upscale of
    :func:`images_vipyloqwen.prepare_image`), then Qwen2-VL's ``smart_resize`` into ``[min, max] x 28 x 28``
    pixels with sides multiples of 28 (patch 14 x merge 2); one merged token per 28 x 28 pixels, run by the
    vision tower as 4 patches. :meth:`ViPyloQwenProcessor.item_lengths` and the memory planner count with it.

    Example::

        >>> image_token_count(1240, 1754, max_image_tokens=1024)  # an A4 page scan at the default budget
        988
        >>> image_token_count(10, 40, max_image_tokens=64)  # upscaled to 28 x 112, then to the 4-token minimum
        4
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    max_pixels = max_image_tokens * PATCH * PATCH
    width, height = prepared_size(width, height, max_pixels)
    resized_height, resized_width = smart_resize(
        height,
        width,
        factor=PATCH,
        min_pixels=min(min_image_tokens, max_image_tokens) * PATCH * PATCH,
        max_pixels=max_pixels,
    )
    return (resized_height // PATCH) * (resized_width // PATCH)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Encode's batches: item indices grouped longest first, so long items do not drag short ones into padding.

    A batch closes at ``batch_size`` items or when its padded size (items x its longest item) would pass
    ``batch_size`` x the mean length, so every batch costs about the same. Every index appears exactly once.

    Example::

        >>> length_batches([5, 50, 6, 48], batch_size=2)  # 50 and 48 together would pad past 2 x the mean
        [[1], [3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    budget = batch_size * sum(lengths) / max(1, len(lengths))
    batches: list[list[int]] = []
    for index in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class ViPyloQwenProcessor(Qwen2VLProcessor):
    """Qwen2-VL processor for embeddings: image processor + tokenizer, no video processor.

    Works without torchvision (the image processor is the PIL backend). See the module docstring for
    the input layout and the budgets.

    Args:
        image_processor: a Qwen2-VL image processor.
        tokenizer: the Qwen2 tokenizer with the five task prefix tokens added as special tokens.
        chat_template: defaults to the embedding template (prefix, images, text).
        max_image_tokens: per-image token budget upper bound (default 1024).
        min_image_tokens: per-image token budget lower bound (default 4).
        max_text_tokens: text tokens per item before truncation (default 8192).

    Example::

        >>> processor = AutoProcessor.from_pretrained(path, trust_remote_code=True, max_image_tokens=256)
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
        min_image_tokens: int = DEFAULT_MIN_IMAGE_TOKENS,
        max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS,
        **kwargs,
    ):
        # Qwen2VLProcessor.__init__ insists on a video processor slot (needs torchvision): set the
        # token attributes it would set and go straight to ProcessorMixin.
        self.image_token = "<|image_pad|>"
        self.video_token = "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        missing = [spec.prefix for spec in TASKS.values() if spec.prefix not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"The tokenizer lacks the task prefix tokens {missing}; build it with scripts/build_model.py"
            )
        self.max_image_tokens = self._check_budget("max_image_tokens", max_image_tokens)
        self.min_image_tokens = self._check_budget("min_image_tokens", min_image_tokens)
        if self.min_image_tokens > self.max_image_tokens:
            raise ValueError(f"min_image_tokens ({min_image_tokens}) > max_image_tokens ({max_image_tokens})")
        self.max_text_tokens = self._check_budget("max_text_tokens", max_text_tokens)
        if not isinstance(image_processor, Qwen2VLImageProcessorPil):
            # Pin the PIL backend: the torchvision one resizes slightly differently, and embeddings must not
            # depend on whether torchvision happens to be installed.
            settings = image_processor.to_dict() if image_processor is not None else {}
            keep = ("image_mean", "image_std", "patch_size", "merge_size", "temporal_patch_size")
            image_processor = Qwen2VLImageProcessorPil(**{k: settings[k] for k in keep if k in settings})
        ProcessorMixin.__init__(
            self, image_processor, tokenizer, chat_template=chat_template or EMBEDDING_CHAT_TEMPLATE, **kwargs
        )
        self.image_processor.size = self.image_size_kwargs()
        # The tokenizer's model_max_length is the live text budget: Sentence-Transformers' max_seq_length
        # reads and writes it.
        self.tokenizer.model_max_length = self.max_text_tokens
        # Text is tokenised whole and cut after the images in __call__: the tokenizer's "longer than the
        # maximum" warning would be a false alarm.
        self.tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
        self.task_token_ids = {name: tokenizer.convert_tokens_to_ids(spec.prefix) for name, spec in TASKS.items()}
        self.vision_start_token_id = tokenizer.convert_tokens_to_ids("<|vision_start|>")
        self.vision_end_token_id = tokenizer.convert_tokens_to_ids("<|vision_end|>")
        # The embedding of an empty item: the end-of-text (eos) token <|im_end|>, not the pad token
        # <|endoftext|> (a pad row may be all zeros, which would give a zero vector).
        self.end_of_text_token_id = tokenizer.eos_token_id

    @staticmethod
    def _check_budget(name: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return value

    def image_size_kwargs(self, max_image_tokens: int | None = None, min_image_tokens: int | None = None) -> dict:
        """The image processor ``size`` for a token budget (defaults: this processor's budget)."""
        max_tokens = self._check_budget("max_image_tokens", max_image_tokens or self.max_image_tokens)
        min_tokens = self._check_budget("min_image_tokens", min_image_tokens or self.min_image_tokens)
        return {
            "shortest_edge": min(min_tokens, max_tokens) * PATCH * PATCH,
            "longest_edge": max_tokens * PATCH * PATCH,
        }

    # ------------------------------------------------------------------ items
    def build_messages(
        self,
        text: str | Sequence[str | None] | None = None,
        images: Any = None,
        task: str | None = None,
        prompt: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Turn parallel ``text`` / ``images`` inputs into one message list per item
        (:func:`items_vipyloqwen.build_messages`: ``task`` and ``prompt`` go into a system message).

        Raises:
            TypeError / ValueError: wrong types, empty input, lists of different lengths.
        """
        return build_messages(text=text, images=images, task=task, prompt=prompt)

    def canonicalize(
        self,
        conversation: list[dict[str, Any]],
        index: int,
        max_image_tokens: int | None = None,
        where: str | None = None,
    ) -> CanonicalItem:
        """Read one item's messages once (:func:`items_vipyloqwen.split_item`) and load its images.

        Returns a :class:`CanonicalItem` (``[system: prefix] + [user: images, text]``), which
        :meth:`apply_chat_template` tokenises without reading it again; a CanonicalItem given here is
        returned unchanged. Images are opened, oriented, converted to RGB and shrunk early here.

        Args:
            conversation: the item's messages.
            index: the item's 0-based position; errors name it 1-based (``item {index + 1} (...)``).
            max_image_tokens: per-image budget for the early shrink (default: the processor's).
            where: the item's name in error messages, instead of ``item {index + 1} (text / image)``.
        """
        if isinstance(conversation, CanonicalItem):
            return conversation
        where = where or label(f"item {index + 1}", conversation)
        parsed = split_item(conversation, where)
        max_pixels = (max_image_tokens or self.max_image_tokens) * PATCH * PATCH
        images = [
            prepare_image(image, f"{where}, image {j}", max_pixels) for j, image in enumerate(parsed.images, start=1)
        ]
        return CanonicalItem(parsed.task, parsed.text, images, where)

    def plain_token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of ``texts`` read as plain characters: special tokens typed in a text (``<ocr>``,
        ``<|image_pad|>``, ``<|im_start|>``, ...) are split like any other characters."""
        plain = self.__dict__.get("_plain_tokenizer")
        if plain is None:
            # A private copy of the Rust tokenizer with special-token matching off: thread- and fork-safe,
            # and it never changes the state of the shared tokenizer other code uses.
            plain = copy.deepcopy(self.tokenizer.backend_tokenizer)
            plain.encode_special_tokens = True
            plain.no_padding()
            plain.no_truncation()
            self._plain_tokenizer = plain
        return [encoding.ids for encoding in plain.encode_batch(list(texts), add_special_tokens=False)]

    def item_lengths(
        self,
        messages: Sequence[list[dict[str, Any]]],
        max_image_tokens: int | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """Sequence length of each item (task prefix + text tokens after truncation + image tokens), from the image
        sizes in the file headers: no image is decoded. ``encode`` groups items of similar length with it.

        Each item is read with the rules of :func:`items_vipyloqwen.split_item`, so a malformed item, or an image
        size Qwen2-VL cannot take, fails here, naming the item (``item {position + 1} (text / image)``), before any
        forward. Image tokens: :func:`image_token_count` (+2 for vision start / end) at ``max_image_tokens``
        (default: this processor's budget); an image of unknown size (an http(s) URL) counts as
        :data:`UNKNOWN_IMAGE_SIZE`. Text: ``max_length`` (default: the tokenizer's ``model_max_length``) tokens at
        most; an empty item without images is one token (``<|im_end|>``).

        Example::

            >>> messages = processor.build_messages(text=["Xin chào", None], images=[None, "a4.png"], task="ocr")
            >>> processor.item_lengths(messages, max_image_tokens=256)  # a4.png: 1240 x 1754
            [4, 250]
        """
        text_budget = max_length or self.tokenizer.model_max_length
        max_tokens = self._check_budget("max_image_tokens", max_image_tokens or self.max_image_tokens)
        lengths = []
        for start in range(0, len(messages), _LENGTH_CHUNK):
            chunk = messages[start : start + _LENGTH_CHUNK]
            wheres = [label(f"item {start + offset + 1}", conv) for offset, conv in enumerate(chunk)]
            parsed = [split_item(conv, where) for conv, where in zip(chunk, wheres, strict=True)]
            text_ids = self.plain_token_ids([item.text if item.text.strip() else "" for item in parsed])
            for item, where, ids in zip(parsed, wheres, text_ids, strict=True):
                image_tokens = 0
                for j, image in enumerate(item.images, start=1):
                    known = image_size(image)
                    if known is not None:
                        check_size(known, f"{where}, image {j}")
                    width, height = known or UNKNOWN_IMAGE_SIZE
                    image_tokens += image_token_count(width, height, max_tokens, self.min_image_tokens) + 2
                text_tokens = min(len(ids), text_budget) if ids or item.images else 1  # empty item: <|im_end|>
                lengths.append(int(item.task is not None) + text_tokens + image_tokens)
        return lengths

    def batch_inputs(
        self,
        items: Sequence[list[dict[str, Any]] | CanonicalItem],
        positions: Sequence[int] | None = None,
        max_image_tokens: int | None = None,
        max_length: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The model inputs of one ``encode`` batch: each item canonicalised (:meth:`canonicalize`: images opened,
        oriented, shrunk early), then tokenised in the embedding layout, padded to the longest item, text cut at
        ``max_length`` (default ``max_text_tokens``). ``positions`` name the items in errors (``item {p + 1}``;
        default: their order here); a :class:`CanonicalItem` is used as it is.

        Example::

            >>> messages = processor.build_messages(text=["Xin chào", "Tạm biệt"], task="text_pair")
            >>> sorted(processor.batch_inputs(messages))
            ['attention_mask', 'input_ids', 'mm_token_type_ids']
        """
        positions = range(len(items)) if positions is None else positions
        canonical = [self.canonicalize(item, p, max_image_tokens) for item, p in zip(items, positions, strict=True)]
        batch = self.apply_chat_template(
            canonical,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={
                "text_kwargs": {"padding": True, "truncation": True, "max_length": max_length},
                "images_kwargs": {"max_image_tokens": max_image_tokens} if max_image_tokens else {},
            },
        )
        return {key: value for key, value in batch.items() if isinstance(value, torch.Tensor)}

    def apply_chat_template(
        self,
        conversation,
        chat_template: str | None = None,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = "auto",
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """Canonicalise every item once (:meth:`canonicalize`), then tokenise it as
        ``[task prefix] [<|vision_start|><|image_pad|>...<|vision_end|>]... [text as plain characters]``.

        Batches are padded to the longest item by default (``padding=False`` in ``text_kwargs`` turns it
        off); ``truncation=True`` with ``max_length`` cuts each item's text only. ``max_image_tokens`` /
        ``min_image_tokens`` (in ``images_kwargs`` or top level) set the per-image budget for this call.
        With ``tokenize=False`` the rendered string is returned (for display: the text is shown as typed).

        Errors name the item as ``batch item {position} (text / image)``: its 1-based position in ``conversation``.
        """
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        if not conversations or (not batched and not conversation):
            raise ValueError("Empty input: give at least one item")
        options = self._call_options(processor_kwargs, kwargs)
        max_image_tokens = options["max_image_tokens"]
        items = [
            self.canonicalize(conv, index, max_image_tokens, label(f"batch item {index + 1}", conv))
            for index, conv in enumerate(conversations)
        ]
        if not tokenize:
            return super().apply_chat_template(items if batched else items[0], chat_template, tokenize=False)
        if chat_template is not None and chat_template != self.chat_template:
            raise ValueError(
                "viPyloQwen tokenises items in its fixed embedding layout; a custom chat_template only works with "
                "tokenize=False"
            )
        if return_tensors != "auto":
            options["return_tensors"] = return_tensors
        out = self.encode_items(items, **options)
        return out if return_dict else out["input_ids"]

    @staticmethod
    def _call_options(processor_kwargs: dict | None, kwargs: dict) -> dict[str, Any]:
        """The tokenisation options of an apply_chat_template call, from wherever transformers or
        Sentence-Transformers put them (nested ``*_kwargs`` dicts or top level)."""
        nested = dict(processor_kwargs or {})
        for key in ("text_kwargs", "images_kwargs", "common_kwargs", "audio_kwargs", "videos_kwargs"):
            if key in kwargs:  # the pre-5.4 calling convention passes them at top level
                nested[key] = kwargs.pop(key)
        flat: dict[str, Any] = {}
        for source in (nested.get("common_kwargs"), nested.get("text_kwargs"), nested, kwargs):
            for key in _SIZE_KEYS:
                if source and source.get(key) is not None:
                    flat[key] = source[key]
        images_kwargs = dict(nested.get("images_kwargs") or {})
        for key in ("max_image_tokens", "min_image_tokens"):
            value = images_kwargs.pop(key, None) or nested.get(key) or kwargs.get(key)
            flat[key] = value
        flat["images_kwargs"] = {k: v for k, v in images_kwargs.items() if k != "return_tensors"}
        return flat

    def encode_items(
        self,
        items: Sequence[CanonicalItem],
        padding: bool | str = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        max_image_tokens: int | None = None,
        min_image_tokens: int | None = None,
        images_kwargs: dict[str, Any] | None = None,
    ) -> BatchFeature:
        """Token ids, attention mask, ``mm_token_type_ids`` and pixel values of canonical items.

        Each item is ``[prefix id] + [vision_start, image_pad x n, vision_end] per image + text ids``, the text
        read as plain characters (:meth:`plain_token_ids`); an item without images whose text is empty or
        whitespace is ``[prefix id] + [<|im_end|>]`` (the eos token). ``truncation`` cuts the text to ``max_length``
        (default ``max_text_tokens``) tokens, never the prefix or image tokens.
        """
        images = [image for item in items for image in item.images]
        data: dict[str, Any] = {}
        counts: list[int] = []
        if images:
            size = (images_kwargs or {}).get("size") or self.image_size_kwargs(max_image_tokens, min_image_tokens)
            extra = {k: v for k, v in (images_kwargs or {}).items() if k != "size"}
            pixels = self.image_processor(images, size=size, return_tensors="pt", **extra)
            data["pixel_values"] = pixels["pixel_values"]
            data["image_grid_thw"] = pixels["image_grid_thw"]
            counts = (pixels["image_grid_thw"].prod(-1) // self.image_processor.merge_size**2).tolist()
        texts = [item.text if item.text.strip() else "" for item in items]
        text_ids = self.plain_token_ids(texts)
        cut = truncation not in (None, False, "do_not_truncate")
        budget = max_length or self.tokenizer.model_max_length
        input_ids = []
        image_index = 0
        for item, ids in zip(items, text_ids, strict=True):
            row = [self.task_token_ids[item.task]] if item.task is not None else []
            for _ in item.images:
                row += [self.vision_start_token_id, *[self.image_token_id] * counts[image_index]]
                row.append(self.vision_end_token_id)
                image_index += 1
            if not ids and not item.images:
                ids = [self.end_of_text_token_id]  # the documented embedding of an empty item
            row += ids[:budget] if cut else ids
            input_ids.append(row)
        padded = self.tokenizer.pad(
            {"input_ids": input_ids},
            padding="longest" if padding in (True, "max_length") else padding,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=True,
        )
        data = {
            "input_ids": padded["input_ids"],
            "attention_mask": padded["attention_mask"],
            "mm_token_type_ids": self.create_mm_token_type_ids(padded["input_ids"]),
            **data,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ tokenisation
    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Tokenise already rendered text and process images (the low-level path: special tokens in ``text`` are
        parsed as special; :meth:`apply_chat_template` reads item text as plain characters). Pads to the longest
        item unless ``padding`` is given; truncation only ever cuts text after the images.

        ``max_length`` (default: the tokenizer's ``model_max_length``, set from ``max_text_tokens``) bounds
        each item's text tokens, not counting the task prefix and image tokens. ``max_image_tokens`` /
        ``min_image_tokens`` (top level or in ``images_kwargs``) set the per-image budget for this call.
        """
        if videos is not None or audio is not None:
            raise ValueError("viPyloQwen embeds text and images only (no video or audio)")
        # Pad batches unless the caller says otherwise (the merged defaults would say padding=False).
        padding_given = "padding" in kwargs or "padding" in (kwargs.get("text_kwargs") or {})
        images_kwargs = dict(kwargs.pop("images_kwargs", None) or {})
        max_image_tokens = kwargs.pop("max_image_tokens", None) or images_kwargs.pop("max_image_tokens", None)
        min_image_tokens = kwargs.pop("min_image_tokens", None) or images_kwargs.pop("min_image_tokens", None)
        if "size" not in images_kwargs and "size" not in kwargs:
            images_kwargs["size"] = self.image_size_kwargs(max_image_tokens, min_image_tokens)
        merged = self._merge_kwargs(
            tokenizer_init_kwargs=self.tokenizer.init_kwargs, images_kwargs=images_kwargs, **kwargs
        )
        text_kwargs = merged["text_kwargs"]
        size = {key: text_kwargs.pop(key, None) for key in _SIZE_KEYS}
        return_tensors = size["return_tensors"] or merged["images_kwargs"].get("return_tensors")
        out = super().__call__(
            images=images,
            text=text,
            text_kwargs={**text_kwargs, "padding": False, "truncation": False},
            images_kwargs={**merged["images_kwargs"], "return_tensors": "pt"},
            return_mm_token_type_ids=False,
        )
        if text is None:
            return out
        input_ids = [list(ids) for ids in out["input_ids"]]
        truncation = size["truncation"]
        if truncation not in (None, False, "do_not_truncate"):
            budget = size["max_length"] or self.tokenizer.model_max_length
            input_ids = [self._truncate_text(ids, budget) for ids in input_ids]
        padding = size["padding"] if padding_given else "longest"
        padded = self.tokenizer.pad(
            {"input_ids": input_ids},
            padding="longest" if padding == "max_length" else padding,
            pad_to_multiple_of=size["pad_to_multiple_of"],
            return_attention_mask=True,
        )
        data = {
            "input_ids": padded["input_ids"],
            "attention_mask": padded["attention_mask"],
            "mm_token_type_ids": self.create_mm_token_type_ids(padded["input_ids"]),
        }
        for key in ("pixel_values", "image_grid_thw"):
            if key in out:
                data[key] = out[key]
        out.data = data
        if return_tensors:
            out.convert_to_tensors(tensor_type=return_tensors)
        return out

    def to_dict(self) -> dict[str, Any]:
        self.max_text_tokens = self.tokenizer.model_max_length  # save the live budget
        plain = self.__dict__.pop("_plain_tokenizer", None)  # a cache, not a setting: never deep-copied or saved
        try:
            return super().to_dict()
        finally:
            if plain is not None:
                self._plain_tokenizer = plain

    def _truncate_text(self, ids: list[int], budget: int) -> list[int]:
        """Keep the head (task prefix + images) and at most ``budget`` text tokens after it."""
        head = 0
        if ids and ids[0] in self.task_token_ids.values():
            head = 1
        if self.vision_end_token_id in ids:
            head = len(ids) - ids[::-1].index(self.vision_end_token_id)
        return ids[: head + budget]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"]


__all__ = [
    "ViPyloQwenProcessor",
    "EMBEDDING_CHAT_TEMPLATE",
    "UNKNOWN_IMAGE_SIZE",
    "image_token_count",
    "length_batches",
]
