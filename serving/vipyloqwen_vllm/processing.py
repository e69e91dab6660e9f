"""vLLM's Qwen2-VL multimodal processing, with the checkpoint's image processor settings and budget.

vLLM would load ``Qwen2VLProcessor.from_pretrained(checkpoint)``, which needs a video processor config a
viPyloQwen checkpoint does not have, and picks the torchvision image backend when torchvision is installed.
ViPyloQwenProcessor pins the PIL backend (the torchvision one resizes slightly differently), so this builds the
same: a PIL Qwen2-VL image processor with the checkpoint's settings and its per-image token budget
(``max_image_tokens`` / ``min_image_tokens`` from the checkpoint, or from ``--mm-processor-kwargs``).
"""

from __future__ import annotations

import functools

from transformers import Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
from vllm.model_executor.models.qwen2_vl import Qwen2VLProcessingInfo

from .checkpoint import read_checkpoint

BUDGET_KWARGS = ("max_image_tokens", "min_image_tokens")


@functools.lru_cache(maxsize=16)
def _processor(model: str, revision: str | None, tokenizer, max_image_tokens: int | None, min_image_tokens: int | None):
    info = read_checkpoint(model, revision)
    image_processor = Qwen2VLImageProcessorPil(
        **info.image_settings, size=info.image_size(max_image_tokens, min_image_tokens)
    )
    # Qwen2VLProcessor insists on a video processor; videos are never served (--limit-mm-per-prompt video 0).
    return Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor()
    )


class ViPyloQwenProcessingInfo(Qwen2VLProcessingInfo):
    def get_hf_processor(self, **kwargs: object) -> Qwen2VLProcessor:
        config = self.ctx.model_config
        merged = {**(config.mm_processor_kwargs or {}), **kwargs}
        budget = {key: merged.get(key) for key in BUDGET_KWARGS}
        return _processor(config.model, config.revision, self.get_tokenizer(), **budget)

    def get_supported_mm_limits(self):
        return {"image": None, "video": 0}
