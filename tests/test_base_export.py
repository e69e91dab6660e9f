"""build_from_base on a shallow copy of the real Qwen2-VL-2B layout (real config format, legacy key names, two
bf16 shards): every tensor bit-identical, dtype and sharding kept, loads with AutoModel and SentenceTransformer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vipyloqwen_tools.checkpoint.base import build_from_base
from vipyloqwen_tools.checkpoint.fake_base import legacy_tensors, shallow_config, write_fake_base

TASK_ROWS = list(range(151657, 151662))
SHARD_BYTES = 19_700_000  # shallow config: vision tower + embedding in shard 1, the text layers in shard 2


def our_name(legacy: str) -> str:
    """The viPyloQwen (Qwen2VLModel) key of a published-checkpoint key, written out independently of the code."""
    if legacy.startswith("model."):
        return "language_model." + legacy[len("model.") :]
    return legacy


def read_all(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("base-export")
    base = write_fake_base(root / "base", shallow_config(), max_shard_bytes=SHARD_BYTES)
    report = build_from_base(str(base), root / "out", embed_dim=48)
    return base, report


def test_stand_in_has_the_published_layout(built):
    base, _ = built
    index = json.loads((base / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert (
        "model.embed_tokens.weight" in index["weight_map"] and "visual.blocks.1.attn.qkv.weight" in index["weight_map"]
    )
    assert not any(k.startswith(("lm_head", "model.language_model", "model.visual")) for k in index["weight_map"])
    config = json.loads((base / "config.json").read_text())
    assert (
        config["rope_scaling"] == {"type": "mrope", "mrope_section": [2, 3, 3]} and config["torch_dtype"] == "bfloat16"
    )


def test_every_backbone_tensor_is_bit_identical_in_the_base_dtype_and_shard(built):
    base, report = built
    out = report.out
    base_index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    out_index = json.loads((out / "model.safetensors.index.json").read_text())
    source, ours = read_all(base), read_all(out)
    assert set(ours) == {our_name(k) for k in source} | {"embedding_projection.weight"}
    for key, tensor in source.items():
        mine = ours[our_name(key)]
        assert mine.dtype == torch.bfloat16 and out_index["weight_map"][our_name(key)] == base_index[key]
        if key == "model.embed_tokens.weight":
            keep = torch.ones(tensor.shape[0], dtype=torch.bool)
            keep[TASK_ROWS] = False
            assert torch.equal(mine[keep].view(torch.int16), tensor[keep].view(torch.int16))
        else:
            assert torch.equal(mine.view(torch.int16), tensor.view(torch.int16)), key
    assert out_index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in ours.values())
    assert report.shards == 2 and report.dtype == "bfloat16" and report.copied == len(source) - 1


def test_new_tensors_are_the_deliberate_initialisation(built):
    base, report = built
    embed = read_all(base)["model.embed_tokens.weight"]
    ours = read_all(report.out)
    mean = embed[:151657].double().mean(0)
    rows = ours["language_model.embed_tokens.weight"][TASK_ROWS].double()
    assert report.task_token_ids == TASK_ROWS and ours["language_model.embed_tokens.weight"].shape == embed.shape
    assert torch.allclose(rows, mean.expand_as(rows), atol=2e-4, rtol=1 / 128)  # one bf16 rounding
    assert torch.equal(ours["embedding_projection.weight"].float(), torch.eye(48, 64))


def test_config_and_files_load_with_automodel_and_sentence_transformers(built):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    _, report = built
    config = json.loads((report.out / "config.json").read_text())
    assert (
        config["dtype"] == "bfloat16" and config["embed_dim"] == 48 and config["architectures"] == ["ViPyloQwenModel"]
    )
    model, info = AutoModel.from_pretrained(report.out, trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.dtype == torch.bfloat16
    stored = read_all(report.out)
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key]), key
    st = SentenceTransformer(str(report.out), trust_remote_code=True, device="cpu")
    vectors = st.encode(["Xin chào", "Hóa đơn bán lẻ"], prompt_name="text_pair")
    assert vectors.shape == (2, 48)
    tokenizer_config = json.loads((report.out / "tokenizer_config.json").read_text())
    assert "is_local" not in json.dumps(tokenizer_config)
    for name in ("processor_config.json", "chat_template.jinja", "modules.json", "1_Pooling/config.json", "README.md"):
        assert (report.out / name).is_file(), name


def test_a_checkpoint_saved_by_transformers_5_single_file_fp32(tmp_path):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from vipyloqwen_tools.checkpoint.tokenizer import build_qwen2_vl_tokenizer

    torch.manual_seed(1)
    settings = shallow_config()
    settings.pop("torch_dtype")
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**settings)).eval()
    model.save_pretrained(tmp_path / "base")
    build_qwen2_vl_tokenizer().save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "Qwen2VLImageProcessor"})
    )
    report = build_from_base(str(tmp_path / "base"), tmp_path / "out", embed_dim=64)
    assert report.shards == 1 and report.dtype == "float32" and (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "model.safetensors.index.json").exists()
    stock = {k: v for k, v in model.model.state_dict().items()}
    ours = load_file(tmp_path / "out" / "model.safetensors")
    assert "embedding_projection.weight" not in ours  # embed_dim == hidden size: no projection
    for key, value in stock.items():
        if key != "language_model.embed_tokens.weight":
            assert torch.equal(ours[key], value), key


def test_a_missing_backbone_tensor_is_an_error_naming_it(tmp_path):
    base = write_fake_base(tmp_path / "base", shallow_config(), max_shard_bytes=SHARD_BYTES)
    shard = base / "model-00002-of-00002.safetensors"
    with safe_open(shard, "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if k != "model.layers.1.mlp.down_proj.weight"}
    save_file(state, shard, metadata={"format": "pt"})
    index_path = base / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.layers.1.mlp.down_proj.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"missing \[.*layers\.1\.mlp\.down_proj\.weight"):
        build_from_base(str(base), tmp_path / "out")


def test_an_index_that_disagrees_with_its_shards_is_an_error(tmp_path):
    base = write_fake_base(tmp_path / "base", shallow_config(), max_shard_bytes=SHARD_BYTES, tokenizer=False)
    index_path = base / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"only in the index \['model\.layers\.9\.mlp\.up_proj\.weight'\]"):
        build_from_base(str(base), tmp_path / "out")


def test_not_a_folder_nor_a_repo_id(tmp_path):
    with pytest.raises(ValueError, match="not a checkpoint folder and not a Hub repo id"):
        build_from_base(str(tmp_path / "nope" / "deeper"), tmp_path / "out")


def test_the_real_layout_has_729_tensors_and_4_4_gb():
    from vipyloqwen_tools.checkpoint.architectures import QWEN2_VL_2B_CONFIG

    tensors = legacy_tensors(QWEN2_VL_2B_CONFIG)
    assert len(tensors) == 729
    assert sum(torch.Size(shape).numel() * 2 for _, _, shape in tensors) == 4_417_971_200


def test_build_script_base_cli(built, tmp_path, capsys):
    from scripts.build_model import main

    base, _ = built
    out = main(["--base", str(base), "--out", str(tmp_path / "cli"), "--embed-dim", "32", "--max-image-tokens", "256"])
    assert "bfloat16, 2 shard(s)" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["embed_dim"] == 32
    assert json.loads((out / "processor_config.json").read_text())["max_image_tokens"] == 256
    with pytest.raises(SystemExit, match="build_model.py: .*not a checkpoint folder"):
        main(["--base", str(tmp_path / "missing" / "x"), "--out", str(tmp_path / "o")])
