"""viPyloQwen model: Qwen2-VL (no LM head, no KV cache) + a per-token linear projection to ``embed_dim``.

``forward`` returns the projected last hidden states (float32) of every token; the embedding of an item
is their mean over the attention mask (text, prefix and image tokens), L2-normalised. Sentence-Transformers
does that with its stock ``Pooling("mean")`` + ``Normalize`` modules; :meth:`ViPyloQwenModel.encode`
does it directly. A linear map commutes with the mean, so projecting per token equals projecting the
pooled vector.

The projection (``embedding_projection``, no bias) is initialised to truncation: its weight is the
identity on the first ``embed_dim`` hidden features, so an untrained model's embedding is the mean of the
first ``embed_dim`` features of Qwen2-VL's last hidden states. With ``embed_dim`` equal to the text
hidden size there is no projection.

Example::

    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("erax-ai/viPyloQwen", trust_remote_code=True)
    >>> emb = model.encode(text=["Biển số xe này là gì?"], images=[Image.open("plate.jpg")], task="ocr")
    >>> emb.shape
    torch.Size([1, 1024])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

try:
    from .configuration_vipyloqwen import ViPyloQwenConfig, st_prompts
    from .prefetch_vipyloqwen import prefetch, resolve_num_workers
    from .processing_vipyloqwen import ViPyloQwenProcessor, length_batches
except ImportError:  # imported as a top-level module (tests, scripts)
    from configuration_vipyloqwen import ViPyloQwenConfig, st_prompts
    from prefetch_vipyloqwen import prefetch, resolve_num_workers
    from processing_vipyloqwen import ViPyloQwenProcessor, length_batches


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, in float32: [B, L, D] x [B, L] -> [B, D]."""
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class ViPyloQwenModel(Qwen2VLModel):
    """Qwen2-VL backbone + linear projection to ``config.embed_dim``; see the module docstring."""

    config_class = ViPyloQwenConfig

    def __init__(self, config: ViPyloQwenConfig):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.embedding_projection = (
            nn.Linear(hidden, config.embed_dim, bias=False) if config.embed_dim != hidden else None
        )
        self._processor: ViPyloQwenProcessor | None = None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is getattr(self, "embedding_projection", None):
            # Truncation: identity on the first embed_dim features (zero rows past the hidden size).
            init.copy_(module.weight, torch.eye(*module.weight.shape, dtype=module.weight.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Token embeddings: ``last_hidden_state`` is [B, L, embed_dim] float32 (projected per token).

        Position ids are left to Qwen2-VL (M-RoPE rebuilt from the attention mask) and no KV cache is
        allocated.
        """
        kwargs.pop("use_cache", None)
        kwargs.pop("past_key_values", None)
        kwargs["return_dict"] = True
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        hidden = outputs.last_hidden_state.float()
        if self.embedding_projection is not None:
            hidden = F.linear(hidden, self.embedding_projection.weight.float())
        return BaseModelOutputWithPast(
            last_hidden_state=hidden, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    # ------------------------------------------------------------------ processor
    @property
    def processor(self) -> ViPyloQwenProcessor:
        """The processor saved with the checkpoint, loaded on first use."""
        if self._processor is None:
            source = self.config._name_or_path
            if not source:
                raise ValueError("This model was not loaded from a checkpoint: set model.processor = processor")
            # Already running this checkpoint's code: its processor code is trusted the same way.
            self._processor = ViPyloQwenProcessor.from_pretrained(source, trust_remote_code=True)
        return self._processor

    @processor.setter
    def processor(self, processor: ViPyloQwenProcessor) -> None:
        self._processor = processor

    # ------------------------------------------------------------------ encode
    @torch.inference_mode()
    def encode(
        self,
        text: str | Sequence[str | None] | None = None,
        images: Any = None,
        batch_size: int = 8,
        max_length: int | None = None,
        task: str | None = None,
        max_image_tokens: int | None = None,
        normalize: bool = True,
        show_progress_bar: bool = False,
        num_workers: int | None = None,
        worker_type: str = "auto",
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> torch.Tensor:
        """Embed items of text, images or both: returns float32 [N, embed_dim], in input order.

        Args:
            text: one string or a list (``None`` for image-only items). A task prefix typed at the very start
                of the text (``"<ocr> ..."``) selects the task too; anywhere else special tokens are plain
                characters. Empty or whitespace-only text is valid (see :mod:`items_vipyloqwen`).
            images: one image, or one entry per item: ``None``, an image, or a list of 1-5 images. An image is
                a PIL image, a path, an http(s) URL, encoded bytes, a numpy array or a torch tensor (see
                :mod:`images_vipyloqwen`).
            batch_size: items per forward pass (at most); items are sorted by length (text tokens + image
                tokens: :meth:`ViPyloQwenProcessor.item_lengths`) and a batch of long items holds fewer of them, to
                limit padding (:func:`processing_vipyloqwen.length_batches`); each batch is
                :meth:`ViPyloQwenProcessor.batch_inputs`.
            max_length: text tokens per item (default: the processor's ``max_text_tokens``); the task
                prefix and image tokens are never truncated.
            task: a registry key (``text_pair``, ``instr``, ``ocr``, ``vqa_multi``, ``vqa_single``) or its
                prefix token, applied to every item.
            max_image_tokens: per-image token budget for this call (default: the processor's).
            normalize: L2-normalise the embeddings (default True).
            show_progress_bar: show a tqdm bar over batches.
            num_workers: workers that open, resize and tokenise the next batches while the model runs (the
                results are bit-identical to ``num_workers=0``, which prepares each batch in turn). Default
                ``None``: one per available core (at most 8) when items carry images; none for text only or a
                single batch.
            worker_type: ``"process"`` (forked DataLoader workers), ``"thread"``, or ``"auto"`` (default):
                processes when the model is on a GPU, threads when it is on the CPU, where the forward needs the
                cores (see :func:`prefetch_vipyloqwen.resolve_worker_type`).
            prompt: free text put before every item's text, exactly as if typed (as Sentence-Transformers'
                ``prompt=``); a prompt starting with a task prefix selects that task.
            prompt_name: the name of a saved prompt (the Sentence-Transformers prompts: the task names,
                ``query``, ``document``); an unknown name is an error listing them.

        Errors name the item by its position in ``text`` / ``images``: ``item 3 (text '...'): ...``.

        Example::

            >>> model.encode(text="<text_pair> Trời hôm nay đẹp quá")             # [1, 1024]
            >>> model.encode(images=[img1, [img2, img3]], task="vqa_multi")        # [2, 1024]
        """
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        processor = self.processor
        if prompt_name is not None:
            if prompt is not None:
                raise ValueError("give prompt (free text) or prompt_name (a saved prompt), not both")
            saved = st_prompts()
            if prompt_name not in saved:
                raise ValueError(f"Unknown prompt_name {prompt_name!r}. Saved prompts: {', '.join(saved)}.")
            prompt = saved[prompt_name]
        messages = processor.build_messages(text=text, images=images, task=task, prompt=prompt)
        # Items of similar length together (the lengths read every item first: a bad one fails before any forward).
        chunks = length_batches(processor.item_lengths(messages, max_image_tokens, max_length), batch_size)
        device = next(self.parameters()).device
        out = torch.empty(len(messages), self.config.embed_dim, dtype=torch.float32)

        def prepare(chunk: list[int]) -> dict[str, torch.Tensor]:
            """One batch's model inputs (images opened and resized, text tokenised); runs in a worker."""
            return processor.batch_inputs([messages[i] for i in chunk], chunk, max_image_tokens, max_length)

        has_images = any(c["type"] == "image" for conv in messages for m in conv for c in m["content"])
        workers = resolve_num_workers(num_workers, len(chunks), has_images)
        batches = prefetch(prepare, chunks, workers, worker_type, pin_memory=device.type == "cuda", device=device)
        if show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=len(chunks), desc="Encoding")
        was_training = self.training
        self.eval()
        try:
            for chunk, batch in zip(chunks, batches, strict=True):
                out[torch.tensor(chunk)] = self.embed_batch(batch, normalize).cpu()
        finally:
            self.train(was_training)
        return out

    @torch.inference_mode()
    def embed_batch(self, batch: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        """Pooled (and by default L2-normalised) float32 embeddings [B, embed_dim] of one processor batch."""
        device = next(self.parameters()).device
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        pooled = mean_pool(self(**batch).last_hidden_state, batch["attention_mask"])
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


__all__ = ["ViPyloQwenModel", "mean_pool"]
