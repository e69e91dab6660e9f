"""viPyloQwen in mteb's model registry: its ModelMeta and loader, written as mteb writes them.

This file is ready to submit to mteb as ``mteb/models/model_implementations/vipyloqwen_models.py``: it imports
only mteb, sentence-transformers and the standard library (no module of this repository), like mteb's own model
implementations. Until it is part of mteb, :func:`register` adds :data:`vipyloqwen` to mteb's registry in the
running process, so ``mteb.get_model_meta("erax-ai/viPyloQwen")``, ``mteb.get_model(...)`` and reading
results back (``model_meta.json`` names the loader) work. ``eval/run_mteb.py`` registers it and builds the
ModelMeta of every run from it.

- The loader builds ``SentenceTransformer(model, revision=..., trust_remote_code=True)`` and wraps it in mteb's
  ``SentenceTransformerEncoderWrapper`` with the model's prompt mapping: ``configuration_vipyloqwen.mteb_prompts()``
  taken from the checkpoint's own code (the task registry there is the single source of truth), so mteb task types
  get the task prefixes the model was trained with.
- ``modalities`` are text and image, so mteb routes image tasks to the model (a bare SentenceTransformer is
  treated as text-only).
- The numbers describe the released architecture (Qwen2-VL-2B backbone without its LM head + the 1536 -> 1024
  projection); ``tests/test_vipyloqwen_models.py`` recomputes them from the architecture built on the meta device.
- ``training_datasets`` follows the data card (README, "Training data"): the training data names no mteb
  dataset, so the set is empty: zero-shot on every mteb task as far as the card says.

Example::

    >>> import mteb
    >>> from eval.vipyloqwen_models import register
    >>> meta = register()
    >>> mteb.get_model_meta("erax-ai/viPyloQwen").modalities
    ['text', 'image']
    >>> model = mteb.get_model("erax-ai/viPyloQwen")  # SentenceTransformer(..., trust_remote_code=True) + prompts
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TYPE_CHECKING, Any

from mteb.models.model_meta import ModelMeta, ScoringFunction

if TYPE_CHECKING:
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer

VIPYLOQWEN_CITATION = None  # no article yet: mteb asks to leave the citation out rather than cite a model card

# The data card (README.md, "Training data"): the datasets of mteb's tasks that the training data includes.
VIPYLOQWEN_TRAINING_DATASETS: set[str] = set()


def mteb_prompt_mapping(model: SentenceTransformer) -> dict[str, str]:
    """The mteb prompt mapping shipped with the checkpoint: ``configuration_vipyloqwen.mteb_prompts()`` of the
    code the model was loaded with (its task registry), keyed by mteb task type and query/document role."""
    module = sys.modules.get(type(model[0].auto_model.config).__module__)
    prompts = getattr(module, "mteb_prompts", None)
    if prompts is None:
        raise ValueError(
            f"{type(model[0].auto_model.config).__name__} comes with no mteb_prompts(): not a viPyloQwen checkpoint"
        )
    return prompts()


def wrap(
    model: SentenceTransformer, model_prompts: dict[str, str] | None = None, meta: ModelMeta | None = None
) -> SentenceTransformerEncoderWrapper:
    """mteb's SentenceTransformer wrapper around a loaded viPyloQwen model, with ``model_prompts`` (default: the
    checkpoint's :func:`mteb_prompt_mapping`) and ``meta`` (default: :data:`vipyloqwen`, text + image: a bare
    SentenceTransformer would get a text-only ModelMeta, and mteb would refuse image tasks)."""
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    prompts = model_prompts if model_prompts is not None else mteb_prompt_mapping(model)
    with warnings.catch_warnings():  # "Model prompts specified, these will overwrite...": intended here
        warnings.simplefilter("ignore")
        wrapper_logger = logging.getLogger("mteb.models.sentence_transformer_wrapper")
        level = wrapper_logger.level
        wrapper_logger.setLevel(logging.ERROR)
        try:
            encoder = SentenceTransformerEncoderWrapper(model, model_prompts=prompts)
        finally:
            wrapper_logger.setLevel(level)
    encoder.mteb_model_meta = meta or vipyloqwen
    return encoder


def vipyloqwen_loader(
    model_name: str,
    revision: str | None = None,
    device: str | None = None,
    model_prompts: dict[str, str] | None = None,
    model_name_or_path: str | None = None,
    **kwargs: Any,
) -> SentenceTransformerEncoderWrapper:
    """Load viPyloQwen for mteb: ``SentenceTransformer(..., trust_remote_code=True)`` + the prompt mapping.

    Args:
        model_name: the Hub id (mteb passes the ModelMeta's name).
        revision: the Hub revision (mteb passes the ModelMeta's revision).
        device: torch device (default: sentence-transformers' choice).
        model_prompts: mteb prompt mapping (default: the checkpoint's own, :func:`mteb_prompt_mapping`).
        model_name_or_path: load from this folder or Hub id instead of ``model_name`` (a local copy).
        **kwargs: passed on to ``SentenceTransformer`` (e.g. ``model_kwargs``).
    """
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        model_name_or_path or model_name,
        revision=None if model_name_or_path else revision,
        device=device,
        trust_remote_code=True,
        **kwargs,
    )
    return wrap(model, model_prompts)


class ViPyloQwenModelMeta(ModelMeta):
    """mteb adds its ``image`` extras (torchvision among them) to every image model's requirements; viPyloQwen
    reads images with PIL only (its processor pins the PIL image backend), so loading it needs no torchvision."""

    def _resolve_extras_groups(self) -> list[str]:
        return [group for group in super()._resolve_extras_groups() if group != "image"]


vipyloqwen = ViPyloQwenModelMeta(
    loader=vipyloqwen_loader,
    name="erax-ai/viPyloQwen",
    model_type=["dense"],
    languages=["vie-Latn", "eng-Latn", "zho-Hans"],
    open_weights=True,
    # The Hub commit of the release (`python scripts/release.py upload` prints it): set when submitting.
    revision=None,
    release_date=None,
    modalities=["text", "image"],
    # Qwen2-VL-2B backbone without its LM head (2,208,985,600) + the 1536 -> 1024 projection (1,572,864).
    n_parameters=2_210_558_464,
    n_embedding_parameters=233_373_696,  # 151,936 vocabulary rows x 1536
    memory_usage_mb=8433,  # float32, as mteb counts it (ModelMeta.calculate_memory_usage_mb)
    embed_dim=1024,
    license="apache-2.0",
    max_tokens=8192,  # text tokens per item (max_text_tokens); the task prefix and image tokens come on top
    reference="https://huggingface.co/erax-ai/viPyloQwen",
    similarity_fn_name=ScoringFunction.COSINE,
    framework=["Sentence Transformers", "PyTorch", "Transformers", "safetensors"],
    use_instructions=True,
    public_training_code=None,
    public_training_data=None,
    training_datasets=VIPYLOQWEN_TRAINING_DATASETS,
    adapted_from="Qwen/Qwen2-VL-2B-Instruct",
    citation=VIPYLOQWEN_CITATION,
)


def register(meta: ModelMeta = vipyloqwen) -> ModelMeta:
    """Add ``meta`` to mteb's model registry in this process (until this file is part of mteb); returns it."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    MODEL_REGISTRY[meta.name] = meta
    return meta


__all__ = ["vipyloqwen", "ViPyloQwenModelMeta", "vipyloqwen_loader", "wrap", "mteb_prompt_mapping", "register"]
