"""Export: ST files at the repo root equal what the export writes; the tiny build is deterministic (--base: see
test_base_export.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vipyloqwen_tools.checkpoint.export import st_files

ROOT = Path(__file__).resolve().parent.parent


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
        "tasks_vipyloqwen.py",
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_session_tiny_checkpoint_is_what_a_tiny_run_builds(tiny_checkpoint, tmp_path):
    """conftest links the session's tiny checkpoint into ``<output_dir>/init-tiny`` instead of letting each
    ``model: tiny`` run build it: the two must be the same files, byte for byte."""
    from vipyloqwen_tools.train.model import build_tiny

    built = build_tiny(tmp_path / "init-tiny")
    names = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tiny_checkpoint).as_posix() for p in tiny_checkpoint.rglob("*") if p.is_file())
    for name in names:
        assert (built / name).read_bytes() == (tiny_checkpoint / name).read_bytes(), name
