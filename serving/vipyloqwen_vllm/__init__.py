"""vLLM plugin for viPyloQwen: serves a viPyloQwen checkpoint as is through vLLM's OpenAI-compatible server.

- :mod:`.config`: the checkpoint's ``model_type: vipyloqwen`` config for vLLM (no remote code needed).
- :mod:`.model`: ``ViPyloQwenModel`` as a vLLM pooling model: Qwen2-VL, MEAN pooling over every token, the
  checkpoint's ``embedding_projection`` (no bias), L2 normalisation.
- :mod:`.requests` / :mod:`.middleware`: ``/v1/embeddings`` requests read with the rules of ``encode``
  (task prefixes, plain text, images prepared by the checkpoint's own image code), bad items refused by number.
- :mod:`.serve`: ``vipyloqwen-serve MODEL --port N`` (``make serve``) starts vLLM with the right flags.

vLLM loads :func:`register` through the ``vllm.general_plugins`` entry point in each of its processes.
Nothing here imports vLLM at import time, so the request code is testable without it.
"""

from __future__ import annotations

ARCHITECTURE = "ViPyloQwenModel"
MODEL_TYPE = "vipyloqwen"
# vLLM releases this plugin is tested with (pooling, renderer and model internals change between releases).
SUPPORTED_VLLM = ("0.32.0",)


def check_vllm_version(version: str | None = None) -> str:
    """Return the installed vLLM version; raise RuntimeError naming the supported ones if it is another."""
    if version is None:
        import vllm

        version = vllm.__version__
    if version.split("+")[0] not in SUPPORTED_VLLM:
        raise RuntimeError(
            f"viPyloQwen's vLLM plugin supports vLLM {', '.join(SUPPORTED_VLLM)}, found {version}: "
            "run `make serve-install` (it recreates .venv-serve with the supported release)"
        )
    return version


def register() -> None:
    """vLLM plugin hook: register the viPyloQwen config and model (runs in every vLLM process)."""
    check_vllm_version()
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.transformers_utils import config as vllm_config

    from .config import ViPyloQwenVllmConfig

    vllm_config._CONFIG_REGISTRY[MODEL_TYPE] = ViPyloQwenVllmConfig
    AutoConfig.register(MODEL_TYPE, ViPyloQwenVllmConfig, exist_ok=True)
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "vipyloqwen_vllm.model:ViPyloQwenForEmbedding")
