"""The task registry is the one source of truth; everything derived from it stays in sync."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from configuration_vipyloqwen import (
    ROLE_PROMPTS,
    TASKS,
    ViPyloQwenConfig,
    prefix_tokens,
    resolve_task,
    split_task_prefix,
    st_prompts,
    task_names,
)
from vipyloqwen_tools.release.readme import mteb_prompts_table, tasks_table

ROOT = Path(__file__).resolve().parent.parent


def test_registry_has_the_five_tasks_with_unique_prefix_tokens():
    assert task_names() == ["text_pair", "instr", "ocr", "vqa_multi", "vqa_single"]
    assert len(set(prefix_tokens())) == 5
    for name, spec in TASKS.items():
        assert spec.name == name
        assert spec.prefix == f"<{name}>"
        assert spec.description and spec.loss


def test_st_prompts_derive_from_registry_and_match_root_config():
    prompts = st_prompts()
    assert {k: v for k, v in prompts.items() if k in TASKS} == {n: s.prefix for n, s in TASKS.items()}
    assert {k: v for k, v in prompts.items() if k not in TASKS} == ROLE_PROMPTS
    root = json.loads((ROOT / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert root["prompts"] == prompts


def test_readme_tasks_table_is_generated_from_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- tasks:start -->\n(.*?)<!-- tasks:end -->", readme, re.S)
    assert block, "README lacks the <!-- tasks:start --> ... <!-- tasks:end --> block"
    assert block.group(1) == tasks_table(), "README tasks table is stale: run python -m vipyloqwen_tools.release.readme"


@pytest.mark.parametrize("given, expected", [("ocr", "ocr"), ("<ocr>", "ocr"), ("query", None), (None, None)])
def test_resolve_task(given, expected):
    assert resolve_task(given) == expected


def test_unknown_task_lists_valid_options():
    with pytest.raises(ValueError, match=r"Unknown task 'ocrr'.*text_pair.*<vqa_single>.*query"):
        resolve_task("ocrr")


def test_split_task_prefix():
    assert split_task_prefix("<ocr> Biển số xe này là gì?") == ("ocr", "Biển số xe này là gì?")
    assert split_task_prefix("  <vqa_multi>\nHỏi") == ("vqa_multi", "Hỏi")
    assert split_task_prefix("Không có tiền tố <ocr>") == (None, "Không có tiền tố <ocr>")


def test_config_round_trip_and_validation():
    config = ViPyloQwenConfig(embed_dim=48)
    assert config.model_type == "vipyloqwen"
    again = ViPyloQwenConfig.from_dict(config.to_dict())
    assert again.embed_dim == 48
    assert again.text_config.hidden_size == config.text_config.hidden_size
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="embed_dim"):
            ViPyloQwenConfig(embed_dim=bad)


def test_matryoshka_dimensions_round_trip_and_validation(tmp_path):
    assert ViPyloQwenConfig(embed_dim=48).matryoshka_dimensions is None
    config = ViPyloQwenConfig(embed_dim=48, matryoshka_dimensions=[48, 32, 16])
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["matryoshka_dimensions"] == [48, 32, 16]
    assert ViPyloQwenConfig.from_pretrained(tmp_path).matryoshka_dimensions == [48, 32, 16]
    for bad in ([], [64], [0], [16, 16], [8.0], "32"):
        with pytest.raises(ValueError, match=r"matryoshka_dimensions must be .* in 1..embed_dim \(48\)"):
            ViPyloQwenConfig(embed_dim=48, matryoshka_dimensions=bad)


def test_mteb_prompt_table_in_the_docs_is_generated_from_registry():
    doc = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- mteb-prompts:start -->\n(.*?)<!-- mteb-prompts:end -->", doc, re.S)
    assert block and block.group(1) == mteb_prompts_table(), "stale: run python -m vipyloqwen_tools.release.readme"
