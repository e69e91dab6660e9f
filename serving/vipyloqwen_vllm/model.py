"""``ViPyloQwenModel`` as a vLLM pooling model.

vLLM's Qwen2-VL with the runner ``pooling`` (its language-model head is never built): the last hidden states
(after the final norm, as transformers' ``last_hidden_state``) are MEAN-pooled over every token of the item
(task prefix, image and text tokens), projected by the checkpoint's ``embedding_projection`` (no bias) and
L2-normalised. A linear map commutes with the mean, so projecting the pooled vector equals the checkpoint's
per-token projection followed by the mean. The projection and the pooling run in vLLM's ``head_dtype`` (float32).

Weight names are mapped from the checkpoint as saved (``language_model.*``, ``visual.*``,
``embedding_projection.weight``): no re-saved copy.
"""

from __future__ import annotations

from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.layers.pooler import DispatchPooler, Pooler
from vllm.model_executor.layers.pooler.activations import PoolerNormalize
from vllm.model_executor.layers.pooler.seqwise.heads import EmbeddingPoolerHead
from vllm.model_executor.layers.pooler.seqwise.methods import get_seq_pooling_method
from vllm.model_executor.layers.pooler.seqwise.poolers import SequencePooler
from vllm.model_executor.models.adapters import as_embedding_model
from vllm.model_executor.models.interfaces_base import default_pooling_type
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
)
from vllm.model_executor.models.utils import WeightsMapper
from vllm.multimodal import MULTIMODAL_REGISTRY

from .processing import ViPyloQwenProcessingInfo


@MULTIMODAL_REGISTRY.register_processor(
    Qwen2VLMultiModalProcessor, info=ViPyloQwenProcessingInfo, dummy_inputs=Qwen2VLDummyInputsBuilder
)
@default_pooling_type(seq_pooling_type="MEAN")
class ViPyloQwenForEmbedding(as_embedding_model(Qwen2VLForConditionalGeneration)):
    # Checkpoint names (transformers' Qwen2VLModel + our projection) -> vLLM's Qwen2-VL module names.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "language_model.": "language_model.model.",
            "visual.": "visual.",
            "embedding_projection.": "embedding_projection.",
        }
    )

    def _init_pooler(self, vllm_config: VllmConfig, prefix: str = "") -> Pooler:
        model_config = vllm_config.model_config
        config = model_config.hf_config
        hidden = config.get_text_config().hidden_size
        # The checkpoint has no projection when embed_dim equals the hidden size (see modeling_vipyloqwen.py).
        self.embedding_projection = (
            nn.Linear(hidden, config.embed_dim, bias=False, dtype=model_config.head_dtype)
            if config.embed_dim != hidden
            else None
        )
        head = EmbeddingPoolerHead(
            projector=self.embedding_projection, head_dtype=model_config.head_dtype, activation=PoolerNormalize()
        )
        return DispatchPooler({"embed": SequencePooler(pooling=get_seq_pooling_method("MEAN"), head=head)})

    def load_weights(self, weights):
        loaded = super().load_weights(weights)
        if self.embedding_projection is not None and "embedding_projection.weight" not in loaded:
            raise ValueError("the checkpoint has no embedding_projection.weight (embed_dim != hidden size)")
        return loaded


__all__ = ["ViPyloQwenForEmbedding"]
