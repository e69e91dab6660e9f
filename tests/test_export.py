"""Export: --base keeps every pretrained tensor; ST files at the repo root equal what the export writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vipyloqwen_tools.export import from_base, st_files, tiny_config
from vipyloqwen_tools.tokenizer import build_qwen2_vl_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def stock_checkpoint(folder: Path, legacy: bool) -> dict[str, torch.Tensor]:
    """Save a small stock Qwen2-VL (ForConditionalGeneration) checkpoint; legacy = pre-v5 key names."""
    torch.manual_seed(1)
    settings = tiny_config().to_dict()
    for key in ("model_type", "architectures", "auto_map", "embed_dim", "transformers_version"):
        settings.pop(key, None)
    from transformers import Qwen2VLConfig

    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**settings)).eval()
    model.save_pretrained(folder)
    build_qwen2_vl_tokenizer().save_pretrained(folder)
    Qwen2VLImageProcessorPil().save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    if legacy:  # Qwen/Qwen2-VL-2B-Instruct's own layout: model.layers.*, visual.*, lm_head.*
        renamed = {}
        for key, value in state.items():
            key = key.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
            renamed[key] = value
        save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
        state = renamed
    return state


def backbone_name(key: str) -> str:
    """Map a stock key (either layout) to the viPyloQwen (Qwen2VLModel) key."""
    for old, new in (
        ("model.language_model.", "language_model."),
        ("model.visual.", "visual."),
        ("visual.", "visual."),
        ("model.", "language_model."),
    ):
        if key.startswith(old):
            return new + key[len(old) :]
    return key


@pytest.mark.parametrize("legacy", [False, True], ids=["current-layout", "legacy-layout"])
def test_base_keeps_every_pretrained_tensor(tmp_path, legacy):
    source = stock_checkpoint(tmp_path / "base", legacy)
    model, processor = from_base(str(tmp_path / "base"), embed_dim=48)
    state = model.state_dict()
    task_ids = set(processor.task_token_ids.values())
    checked = 0
    for key, tensor in source.items():
        if key.startswith("lm_head."):
            continue
        ours = state[backbone_name(key)]
        if key.endswith("embed_tokens.weight"):
            keep = [i for i in range(tensor.shape[0]) if i not in task_ids]
            assert torch.equal(ours[keep], tensor[keep])
        else:
            assert torch.equal(ours, tensor), key
        checked += 1
    assert checked == len(state) - 1  # everything but the new projection
    assert model.config.embed_dim == 48 and processor.max_image_tokens == 1024


def test_base_with_a_missing_backbone_tensor_is_an_error(tmp_path):
    stock_checkpoint(tmp_path / "base", legacy=True)
    state = load_file(tmp_path / "base" / "model.safetensors")
    state.pop("model.layers.1.mlp.down_proj.weight")
    save_file(state, tmp_path / "base" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing \[.*layers\.1\.mlp\.down_proj\.weight"):
        from_base(str(tmp_path / "base"))


def test_root_st_files_equal_the_export(tiny_checkpoint):
    for relative, content in st_files(32).items():
        exported = json.loads((tiny_checkpoint / relative).read_text(encoding="utf-8"))
        assert exported == content
        root_path = ROOT / relative
        assert root_path.exists(), f"{relative} missing at the repo root"
        root = json.loads(root_path.read_text(encoding="utf-8"))
        if relative.startswith("1_Pooling"):
            root = {**root, "embedding_dimension": 32}  # the root card is the 1024-d release
        assert root == content, relative
    assert json.loads((ROOT / "1_Pooling/config.json").read_text())["embedding_dimension"] == 1024
    assert json.loads((ROOT / "sentence_bert_config.json").read_text())["unpad_inputs"] is False


def test_st_files_equal_what_sentence_transformers_itself_writes(st_model, tmp_path):
    st_model.save(str(tmp_path / "st"))
    ours = st_files(32)
    for relative in ("modules.json", "1_Pooling/config.json", "2_Normalize/config.json"):
        assert json.loads((tmp_path / "st" / relative).read_text()) == ours[relative], relative
    written = json.loads((tmp_path / "st" / "sentence_bert_config.json").read_text())
    assert written == ours["sentence_bert_config.json"]
    config = json.loads((tmp_path / "st" / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == ours["config_sentence_transformers.json"]["prompts"]
    assert config["similarity_fn_name"] == "cosine"


def test_checkpoint_has_the_hub_layout(tiny_checkpoint):
    names = {p.relative_to(tiny_checkpoint).as_posix() for p in tiny_checkpoint.rglob("*") if p.is_file()}
    for required in (
        "config.json",
        "model.safetensors",
        "configuration_vipyloqwen.py",
        "modeling_vipyloqwen.py",
        "processing_vipyloqwen.py",
        "images_vipyloqwen.py",
        "items_vipyloqwen.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
        "2_Normalize/config.json",
        "README.md",
    ):
        assert required in names, required
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vipyloqwen.ViPyloQwenConfig",
        "AutoModel": "modeling_vipyloqwen.ViPyloQwenModel",
    }
    for name in ("configuration_vipyloqwen.py", "modeling_vipyloqwen.py", "processing_vipyloqwen.py"):
        assert (tiny_checkpoint / name).read_bytes() == (ROOT / name).read_bytes()


def test_build_script_is_deterministic_per_seed(tmp_path):
    outputs = []
    for name in ("a", "b"):
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts/build_model.py"),
                "--tiny",
                "--seed",
                "3",
                "--out",
                str(tmp_path / name),
            ],
            check=True,
            capture_output=True,
        )
        outputs.append(load_file(tmp_path / name / "model.safetensors"))
    assert outputs[0].keys() == outputs[1].keys()
    assert all(torch.equal(outputs[0][k], outputs[1][k]) for k in outputs[0])
    for name in ("tokenizer.json", "config.json", "processor_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
