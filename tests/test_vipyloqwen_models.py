"""eval/vipyloqwen_models.py: the mteb ModelMeta + loader, its numbers recomputed from the architecture, registry
lookups, and loading through it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import torch

from configuration_vipyloqwen import DEFAULT_EMBED_DIM, DEFAULT_MAX_TEXT_TOKENS, mteb_prompts
from eval import vipyloqwen_models
from eval.vipyloqwen_models import register, vipyloqwen

ROOT = Path(__file__).resolve().parent.parent


def test_numbers_are_those_of_the_released_architecture():
    from accelerate import init_empty_weights

    from bench.common import two_b_shaped_config
    from modeling_vipyloqwen import ViPyloQwenModel

    with init_empty_weights():  # the real 2B architecture (28 text layers, 32 vision blocks), no memory
        model = ViPyloQwenModel(two_b_shaped_config(text_layers=28, vision_layers=32))
    assert vipyloqwen.n_parameters == sum(p.numel() for p in model.parameters())
    assert vipyloqwen.n_embedding_parameters == model.get_input_embeddings().weight.numel()
    assert vipyloqwen.memory_usage_mb == vipyloqwen.calculate_memory_usage_mb()
    assert vipyloqwen.embed_dim == DEFAULT_EMBED_DIM == model.config.embed_dim
    assert vipyloqwen.max_tokens == DEFAULT_MAX_TEXT_TOKENS
    front_matter = (ROOT / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert f"license: {vipyloqwen.license}" in front_matter
    assert set(vipyloqwen.modalities) == {"text", "image"} and vipyloqwen.similarity_fn_name == "cosine"


def test_training_datasets_follow_the_data_card():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    card = readme[readme.index("### Training data") :]
    declared = re.search(r"mteb datasets in the training data: (.*)\.", card).group(1)
    names = set() if declared == "none" else {name.strip(" `") for name in declared.split(",")}
    assert vipyloqwen.training_datasets == names
    assert vipyloqwen.to_dict()["training_datasets"] == sorted(names)  # [] (known: none), not null (unknown)


def test_module_is_self_contained_as_mteb_requires():
    """It must run as mteb/models/model_implementations/vipyloqwen_models.py: no import of this repository."""
    tree = ast.parse((ROOT / "eval" / "vipyloqwen_models.py").read_text(encoding="utf-8"))
    roots = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert roots <= {"__future__", "logging", "sys", "warnings", "typing", "mteb", "sentence_transformers"}, roots


def test_registered_meta_is_found_and_loads_the_model_with_its_prompts(tiny_checkpoint, st_model):
    import mteb

    register()
    meta = mteb.get_model_meta("erax-ai/viPyloQwen")
    assert meta is vipyloqwen and meta.to_dict()["loader"] == "vipyloqwen_loader"
    assert meta._resolve_extras_groups() == []  # no torchvision needed (PIL image backend)
    encoder = mteb.get_model("erax-ai/viPyloQwen", device="cpu", model_name_or_path=str(tiny_checkpoint))
    assert encoder.mteb_model_meta.name == "erax-ai/viPyloQwen"
    assert encoder.model_prompts == mteb_prompts()  # the checkpoint's own registry mapping
    text = ["Hà Nội là thủ đô của Việt Nam."]
    assert torch.allclose(
        torch.as_tensor(encoder.model.encode(text)), torch.as_tensor(st_model.encode(text)), atol=1e-6
    )


def test_prompts_come_from_the_checkpoint_code(st_model):
    module = sys.modules[type(st_model[0].auto_model.config).__module__]
    assert module.__name__.startswith("transformers_modules.")  # the checkpoint's own configuration file
    assert vipyloqwen_models.mteb_prompt_mapping(st_model) == module.mteb_prompts() == mteb_prompts()


def test_a_model_without_the_mapping_is_a_clear_error():
    from transformers import BertConfig

    class Stub:
        auto_model = type("AutoModel", (), {"config": BertConfig()})()

    with pytest.raises(ValueError, match="BertConfig comes with no mteb_prompts"):
        vipyloqwen_models.mteb_prompt_mapping([Stub()])


def test_wrapping_a_loaded_model_declares_text_and_image(st_model):
    encoder = vipyloqwen_models.wrap(st_model)
    assert encoder.mteb_model_meta is vipyloqwen and set(encoder.mteb_model_meta.modalities) == {"text", "image"}
    assert encoder.model_prompts == mteb_prompts()
