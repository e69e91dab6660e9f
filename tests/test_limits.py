"""Inference limits: a run trains at its own (shorter) limits and every export keeps the base model's; the release
check refuses limits below the base's unless told (--allow-reduced-limits) and files that disagree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vipyloqwen_tools.checkpoint.limits import InferenceLimits, folder_problems, reduced
from vipyloqwen_tools.release.facts import limit_problems

BASE = InferenceLimits(max_text_tokens=8192, max_image_tokens=64, min_image_tokens=4)


def test_folder_limits_are_the_tiny_models(tiny_checkpoint):
    assert InferenceLimits.of_folder(tiny_checkpoint) == BASE
    assert folder_problems(tiny_checkpoint) == []


def test_applied_sets_and_restores_every_limit(processor):
    live = InferenceLimits.of_processor(processor)
    short = InferenceLimits(256, 16, 4)
    with short.applied(processor):
        assert InferenceLimits.of_processor(processor) == short
        assert processor.image_processor.size["longest_edge"] == 16 * 28 * 28
    assert InferenceLimits.of_processor(processor) == live
    assert processor.image_processor.size["longest_edge"] == live.max_image_tokens * 28 * 28


def test_reduced_names_each_lower_upper_limit():
    assert reduced(InferenceLimits(256, 16, 4), BASE) == ["max_text_tokens 256 < 8192", "max_image_tokens 16 < 64"]
    assert reduced(InferenceLimits(8192, 128, 4), BASE) == []


def _copy_with(tiny_checkpoint: Path, tmp_path: Path, processor_changes: dict, tokenizer_changes: dict) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    for name, changes in (("processor_config.json", processor_changes), ("tokenizer_config.json", tokenizer_changes)):
        data = json.loads((folder / name).read_text(encoding="utf-8"))
        data.update(changes)
        (folder / name).write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_release_check_refuses_limits_below_the_base_unless_allowed(tiny_checkpoint, tmp_path):
    folder = _copy_with(tiny_checkpoint, tmp_path, {"max_text_tokens": 256, "max_image_tokens": 16}, {
        "model_max_length": 256
    })  # fmt: skip
    [problem] = limit_problems(folder, BASE)
    assert problem == (
        "inference limits below the base model's: max_text_tokens 256 < 8192, max_image_tokens 16 < 64 (the training "
        "limits were exported?); re-export with the base's limits, or pass --allow-reduced-limits if this is intended"
    )
    assert limit_problems(folder, BASE, allow_reduced=True) == []
    assert limit_problems(tiny_checkpoint, BASE) == []
    assert limit_problems(folder, None) == []  # no base known: nothing to compare with


def test_release_check_refuses_tokenizer_and_processor_disagreeing(tiny_checkpoint, tmp_path):
    folder = _copy_with(tiny_checkpoint, tmp_path, {}, {"model_max_length": 256})
    assert limit_problems(folder, BASE, allow_reduced=True) == [
        "tokenizer_config.json model_max_length 256 != processor_config.json max_text_tokens 8192 "
        "(Sentence-Transformers and AutoModel would truncate differently)"
    ]


def test_unreadable_limits_are_a_problem(tiny_checkpoint, tmp_path):
    folder = _copy_with(tiny_checkpoint, tmp_path, {"max_image_tokens": None}, {})
    [problem] = folder_problems(folder)
    assert problem.startswith("limits unreadable:") and "lacks the integer limit(s) ['max_image_tokens']" in problem


@pytest.mark.slow
def test_training_loads_short_limits_and_every_export_writes_the_bases(tiny_checkpoint, tmp_path):
    """In process, without a training run: the model a run loads trains at 256 / 16, a checkpoint saved by the
    trainer's path and the final export keep 8192 / 64, and the model goes on training at 256 / 16 after each."""
    from sentence_transformers import SentenceTransformer

    from vipyloqwen_tools.checkpoint.export import save_checkpoint
    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.model import limits_record, load_model
    from vipyloqwen_tools.train.trainer import export_limits

    config = TrainConfig.from_yaml(
        None, model=str(tiny_checkpoint), output_dir=str(tmp_path), max_length=256, max_image_tokens=16
    )
    model = load_model(config, "fp32")
    training = InferenceLimits(256, 16, 4)
    assert InferenceLimits.of_processor(model[0].processor) == training and model.max_seq_length == 256
    for out in (tmp_path / "checkpoint-1", tmp_path / "final"):
        with export_limits(model):
            if out.name == "final":
                save_checkpoint(model[0].model, model[0].processor, out)
            else:
                model.save_pretrained(str(out))  # Sentence-Transformers' save: what the trainer's checkpoints use
        assert InferenceLimits.of_processor(model[0].processor) == training  # back to the training limits
        assert InferenceLimits.of_folder(out) == BASE and folder_problems(out) == []
        reloaded = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
        assert reloaded.max_seq_length == 8192 and reloaded[0].processor.max_image_tokens == 64
    assert limits_record(config, model) == {"inference": BASE.as_dict(), "training": training.as_dict()}
