"""The config of a viPyloQwen checkpoint (``model_type: vipyloqwen``) for vLLM's process.

The checkpoint's own ``configuration_vipyloqwen.py`` needs transformers >= 5.23, newer than what vLLM 0.32
pins, so vLLM reads config.json through this class instead (no remote code): a Qwen2-VL config plus
``embed_dim`` (the output width: vLLM's ``embedding_size``) and ``matryoshka_dimensions`` (the widths the model
was trained at: vLLM accepts only these as the request's ``dimensions``).
"""

from __future__ import annotations

from transformers import Qwen2VLConfig


class ViPyloQwenVllmConfig(Qwen2VLConfig):
    model_type = "vipyloqwen"
    embed_dim: int = 1024
    matryoshka_dimensions: list[int] | None = None

    @property
    def embedding_size(self) -> int:
        """The embedding width vLLM reports and checks ``dimensions`` against."""
        return self.embed_dim
