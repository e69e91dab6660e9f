"""viPyloQwen processor: Qwen2-VL image processor + tokenizer with an embedding chat template.

Every item is rendered as ``[task prefix] [images] [text]``: the task prefix token (if any), then each
image as ``<|vision_start|><|image_pad|>...<|vision_end|>``, then the item's text. There is no chat
boilerplate (no default system prompt, no role markers, no generation prompt).

The task can be given three ways, all giving the same tokens:

- a system message holding the prefix token (what Sentence-Transformers sends for ``prompt_name``),
- ``task=`` in :meth:`ViPyloQwenModel.encode` / :meth:`ViPyloQwenProcessor.build_messages`,
- the prefix typed at the start of the text (``"<ocr> Biển số xe này là gì?"``); the whitespace after
  a typed prefix is dropped.

Budgets (load-time defaults, overridable per call):

- ``max_image_tokens`` (default 1024) / ``min_image_tokens`` (default 4): per-image token budget; one
  image token covers 28x28 pixels, images are resized (aspect kept) into the budget.
- ``max_text_tokens`` (default 8192): text tokens per item. A ``max_length`` passed at call time
  (Sentence-Transformers passes its ``max_seq_length``) has the same meaning. Truncation only ever cuts
  the item's text: the task prefix and the image tokens are never cut.

Example::

    >>> processor = AutoProcessor.from_pretrained("erax-ai/viPyloQwen", trust_remote_code=True)
    >>> messages = processor.build_messages(text=["Xin chào"], images=[None], task="text_pair")
    >>> batch = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

try:
    from .configuration_vipyloqwen import (
        DEFAULT_MAX_IMAGE_TOKENS,
        DEFAULT_MAX_TEXT_TOKENS,
        DEFAULT_MIN_IMAGE_TOKENS,
        MAX_IMAGES_PER_ITEM,
        TASKS,
        resolve_task,
        split_task_prefix,
    )
    from .images_vipyloqwen import PATCH, prepare_image
except ImportError:  # imported as a top-level module (tests, scripts)
    from configuration_vipyloqwen import (
        DEFAULT_MAX_IMAGE_TOKENS,
        DEFAULT_MAX_TEXT_TOKENS,
        DEFAULT_MIN_IMAGE_TOKENS,
        MAX_IMAGES_PER_ITEM,
        TASKS,
        resolve_task,
        split_task_prefix,
    )
    from images_vipyloqwen import PATCH, prepare_image

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


def _content_items(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content)


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
        self.vision_end_token_id = tokenizer.convert_tokens_to_ids("<|vision_end|>")

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

    # ------------------------------------------------------------------ items -> messages
    def build_messages(
        self,
        text: str | Sequence[str | None] | None = None,
        images: Any = None,
        task: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Turn parallel ``text`` / ``images`` inputs into one message list per item.

        Args:
            text: one string or a list (``None`` entries for image-only items).
            images: one image (PIL or path), a list with one entry per item (each ``None``, an image, or
                a list of 1-5 images), or ``None``. With a single text, a list of images is that
                item's images.
            task: registry key or prefix token applied to every item (``None``: no prefix, or the prefix
                typed in each text).

        Raises:
            ValueError: empty input, lists of different lengths, an item with neither text nor image.
        """
        single = isinstance(text, str) or (text is None and not isinstance(images, (list, tuple)))
        if single:
            texts = [text]
            per_item_images = [images]
        else:
            texts = list(text) if text is not None else None
            per_item_images = list(images) if isinstance(images, (list, tuple)) else images
            if texts is None:
                texts = [None] * len(per_item_images)
            elif per_item_images is None:
                per_item_images = [None] * len(texts)
            elif not isinstance(per_item_images, list):
                raise ValueError(
                    f"images must be a list with one entry per text item ({len(texts)} texts), "
                    f"got a single {type(per_item_images).__name__}"
                )
        if not texts:
            raise ValueError("Empty input: give at least one text or image")
        if len(texts) != len(per_item_images):
            raise ValueError(
                f"text and images must have the same length: {len(texts)} texts vs {len(per_item_images)} image entries"
            )
        prefix = TASKS[name].prefix if (name := resolve_task(task)) else ""
        messages = []
        for index, (item_text, item_images) in enumerate(zip(texts, per_item_images, strict=True)):
            if item_text is not None and not isinstance(item_text, str):
                raise TypeError(f"item {index}: text must be a string or None, got {type(item_text).__name__}")
            if item_images is None:
                item_images = []
            elif not isinstance(item_images, (list, tuple)):
                item_images = [item_images]
            content = [{"type": "image", "image": image} for image in item_images]
            if item_text is not None:
                content.append({"type": "text", "text": item_text})
            conversation = [{"role": "user", "content": content}]
            if prefix:
                conversation.insert(0, {"role": "system", "content": [{"type": "text", "text": prefix}]})
            messages.append(conversation)
        return messages

    def canonicalize(self, conversation: list[dict[str, Any]], index: int, max_image_tokens: int | None = None):
        """Validate one item's messages and return them as ``[system: prefix] + [user: images, text]``.

        The task comes from a system message (a prefix token) and/or a prefix typed at the start of
        the text; both must agree. Images are opened, oriented and converted to RGB here.
        """
        where = f"item {index}"
        if not isinstance(conversation, (list, tuple)) or not all(isinstance(m, dict) for m in conversation):
            raise TypeError(f"{where}: expected a list of message dicts, got {type(conversation).__name__}")
        tasks: list[str] = []
        texts: list[str] = []
        images: list[Any] = []
        for message in conversation:
            role = message.get("role")
            items = _content_items(message.get("content"))
            if role == "system":
                for item in items:
                    prompt = (item.get("text") or "").strip()
                    if prompt:
                        tasks.append(resolve_task(prompt))
                continue
            if role != "user":
                raise ValueError(f"{where}: unsupported message role {role!r}; use 'system' (task prefix) and 'user'")
            for item in items:
                kind = item.get("type")
                if kind == "text":
                    texts.append(item.get("text") or "")
                elif kind == "image":
                    images.append(next((item[k] for k in ("image", "url", "path") if k in item), None))
                else:
                    raise ValueError(f"{where}: unsupported content type {kind!r}; valid: 'text', 'image'")
        text = "\n".join(texts)
        typed_task, text = split_task_prefix(text)
        if typed_task is not None:
            tasks.append(typed_task)
        tasks = [task for task in tasks if task is not None]
        if len(set(tasks)) > 1:
            raise ValueError(
                f"{where}: conflicting tasks {sorted(set(tasks))} (from the prompt and the typed prefix); give one task"
            )
        if len(images) > MAX_IMAGES_PER_ITEM:
            raise ValueError(f"{where}: {len(images)} images, at most {MAX_IMAGES_PER_ITEM} per item")
        if not text.strip() and not images:
            raise ValueError(f"{where}: has neither text nor image")
        max_pixels = (max_image_tokens or self.max_image_tokens) * PATCH * PATCH
        content = [
            {"type": "image", "image": prepare_image(image, f"{where}, image {j}", max_pixels)}
            for j, image in enumerate(images)
        ]
        if text.strip():
            content.append({"type": "text", "text": text})
        canonical = [{"role": "user", "content": content}]
        if tasks:
            canonical.insert(0, {"role": "system", "content": [{"type": "text", "text": TASKS[tasks[0]].prefix}]})
        return canonical

    def apply_chat_template(self, conversation, chat_template: str | None = None, **kwargs):
        """Canonicalise every item (see :meth:`canonicalize`), then render and tokenise as transformers does."""
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        if not conversations or (not batched and not conversation):
            raise ValueError("Empty input: give at least one item")
        images_kwargs = (kwargs.get("processor_kwargs") or {}).get("images_kwargs") or {}
        max_image_tokens = images_kwargs.get("max_image_tokens") or kwargs.get("max_image_tokens")
        canonical = [self.canonicalize(conv, index, max_image_tokens) for index, conv in enumerate(conversations)]
        return super().apply_chat_template(canonical if batched else canonical[0], chat_template, **kwargs)

    # ------------------------------------------------------------------ tokenisation
    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """Tokenise rendered text and process images; truncation only ever cuts text after the images.

        ``max_length`` (default: the tokenizer's ``model_max_length``, set from ``max_text_tokens``) bounds
        each item's text tokens, not counting the task prefix and image tokens. ``max_image_tokens`` /
        ``min_image_tokens`` (top level or in ``images_kwargs``) set the per-image budget for this call.
        """
        if videos is not None or audio is not None:
            raise ValueError("viPyloQwen embeds text and images only (no video or audio)")
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
        padding = size["padding"] or False
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
        return super().to_dict()

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


__all__ = ["ViPyloQwenProcessor", "EMBEDDING_CHAT_TEMPLATE"]
