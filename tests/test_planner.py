"""Memory planner: arithmetic on known configs, image tokens as the processor counts them, the data profile of a
generated file, the refusal before the first step, bad lines, the launcher, and the recorded calibration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import REPO, place_tiny_init, write_jsonl
from PIL import Image

from processing_vipyloqwen import image_token_count
from vipyloqwen_tools.plan import planner
from vipyloqwen_tools.plan.planner import (
    Architecture,
    BatchShape,
    Column,
    MemoryPlanError,
    Setup,
    launcher_world,
    limit_batches,
    plan_limits,
    predict,
    profile_data,
    static_parts,
)
from vipyloqwen_tools.train.config import TrainConfig
from vipyloqwen_tools.train.run import train

# A round architecture for hand arithmetic: 1e9 parameters.
ROUND = Architecture(
    name="round",
    parameters=1_000_000_000,
    vocab_rows=100_000,
    hidden=1536,
    layers=28,
    vision_width=1280,
    vision_layers=32,
    embed_dim=1024,
    largest_unit=40_000_000,
    root_unit=200_000_000,
    text_parameters=700_000_000,
)


def test_static_memory_is_16_bytes_per_parameter_sharded_by_fsdp_world_size():
    single = static_parts(ROUND, Setup(world_size=1))
    assert sum(single.values()) == 16e9  # fp32 params + grads + AdamW exp_avg + exp_avg_sq
    ddp = static_parts(ROUND, Setup(world_size=2))
    assert ddp["DDP gradient buckets (fp32)"] == 4e9 and sum(ddp.values()) == 20e9
    fsdp = static_parts(ROUND, Setup(world_size=4, sharding="fsdp", precision="bf16"))
    assert fsdp["parameters (fp32)"] == 1e9 and fsdp["gradients (fp32)"] == 1e9
    assert fsdp["AdamW states (fp32 exp_avg + exp_avg_sq)"] == 2e9
    # gathered root unit + 2 layers in bf16, their fp32 gradients
    assert fsdp["gathered units (params + grads)"] == (200e6 + 80e6) * 2 + (200e6 + 40e6) * 4
    zero2 = static_parts(ROUND, Setup(world_size=4, sharding="zero2"))
    assert (zero2["parameters (fp32)"], zero2["gradients (fp32)"]) == (4e9, 1e9)


def test_real_2b_parameter_count_matches_the_published_checkpoint():
    arch = Architecture.qwen2_vl_2b(embed_dim=1024)
    # model.safetensors.index.json of Qwen/Qwen2-VL-2B-Instruct: total_size 4417971200 bytes of bf16
    assert arch.parameters - 1536 * 1024 == 4_417_971_200 // 2
    assert (arch.layers, arch.vision_layers, arch.hidden, arch.vision_width) == (28, 32, 1536, 1280)


def test_activations_scale_with_tokens_depth_checkpointing_and_gradcache():
    batch = BatchShape("ocr", "test", (Column("anchor", 2000, 4000), Column("positive", 500)))
    setup = Setup(per_device_batch=8, gradient_checkpointing=True)
    full = planner.activation_parts(ROUND, setup, batch)
    cal = planner.CALIBRATION
    per_token = cal["text_token_base"][True] + 28 * cal["text_token_layer"][True]
    per_patch = cal["patch_base"][True] + 32 * cal["patch_layer"][True]
    assert full["activations: LLM tokens"] == pytest.approx(8 * 2500 * per_token)
    assert full["activations: vision patches"] == pytest.approx(8 * 4000 * per_patch)
    assert full["attention mask (sdpa, padded)"] == 8 * (2000**2 + 500**2)
    cached = planner.activation_parts(
        ROUND, Setup(per_device_batch=8, gradient_checkpointing=True, mini_batch=2), batch
    )
    # GradCache: only one mini-batch (2 rows) of the largest column is live
    assert cached["activations: LLM tokens"] == pytest.approx(2 * 2000 * per_token)
    assert cached["activations: vision patches"] == pytest.approx(2 * 4000 * per_patch)
    no_gc = planner.activation_parts(ROUND, Setup(per_device_batch=8), batch)
    assert no_gc["activations: LLM tokens"] > 5 * full["activations: LLM tokens"]
    # bf16 autocast over fp32 weights keeps the fp32 activations and adds bf16 casts; bf16 weights (FSDP) shrink them
    autocast = planner.activation_parts(ROUND, Setup(per_device_batch=8, precision="bf16"), batch)
    assert autocast["activations: LLM tokens"] == pytest.approx(
        planner.AUTOCAST_FACTOR[False] * no_gc["activations: LLM tokens"]
    )
    fsdp = planner.activation_parts(
        ROUND, Setup(world_size=2, sharding="fsdp", precision="bf16", per_device_batch=8), batch
    )
    assert fsdp["activations: LLM tokens"] == pytest.approx(
        planner.BF16_PARAMS_FACTOR[False] * no_gc["activations: LLM tokens"]
    )


def test_limit_batches_use_max_length_and_five_images_on_image_queries():
    setup = Setup(max_length=8192, max_image_tokens=1024)
    shapes = {b.dataset: b for b in limit_batches(setup)}
    anchor = shapes["ocr"].columns[0]
    assert anchor.tokens == 1 + 8192 + 5 * (1024 + 2) and anchor.patches == 4 * 5 * 1024
    assert shapes["instr"].columns[0] == Column("anchor", 8193, 0)
    assert [c.name for c in shapes["ocr"].columns] == ["anchor", "positive", "negative"]


def test_the_plan_counts_every_explicit_negative():
    """Mined rows carry K negatives: K document columns per row, and K x more InfoNCE candidates."""
    arch = Architecture.qwen2_vl_2b()
    one, four = Setup(per_device_batch=8), Setup(per_device_batch=8, negatives=4)
    shape = {b.dataset: b for b in limit_batches(four)}["ocr"]
    assert [c.name for c in shape.columns] == ["anchor", "positive", "negative", "negative2", "negative3", "negative4"]
    small = predict(arch, one, {b.dataset: b for b in limit_batches(one)}["ocr"])
    large = predict(arch, four, shape)
    assert large.parts["activations: LLM tokens"] > small.parts["activations: LLM tokens"]
    assert large.parts["embeddings + loss"] > small.parts["embeddings + loss"]


@pytest.mark.parametrize(
    ("size", "budget"),
    [((10, 40), 64), ((120, 90), 64), ((1240, 1754), 64), ((1240, 1754), 1024), ((3000, 40), 256), ((28, 28), 16)],
)
def test_image_tokens_match_the_processor(st_model, size, budget):
    with image_budget(st_model[0].processor, budget):
        features = st_model.preprocess([{"image": [Image.new("RGB", size)]}])
    assert image_token_count(*size, max_image_tokens=budget) == int(features["image_grid_thw"][0].prod()) // 4


@contextmanager
def image_budget(processor, tokens: int) -> Iterator[None]:
    """The session's shared processor with ``max_image_tokens = tokens`` inside the block, restored after it."""
    saved, processor.max_image_tokens = processor.max_image_tokens, tokens
    try:
        yield
    finally:
        processor.max_image_tokens = saved


def _write_profile_file(root: Path) -> Path:
    (root / "img").mkdir()
    Image.new("RGB", (56, 56)).save(root / "img" / "small.png")  # 2x2 = 4 tokens
    Image.new("RGB", (280, 140)).save(root / "img" / "wide.png")  # 10x5 = 50 tokens (budget 64)
    rows = [
        {"task": "ocr", "query": {"text": "đọc chữ", "images": ["img/small.png"]}, "positive": "một hai"},
        {"task": "ocr", "query": {"text": "ảnh", "images": ["img/wide.png", "img/small.png"]}, "positive": "ba"},
        {"task": "instr", "query": "tìm tài liệu về mèo", "positive": "con mèo", "negative": "con chó"},
        {"task": "ocr", "query": "no image"},  # bad: ocr needs an image, positive missing
    ]
    return write_jsonl(root / "train.jsonl", rows)


def test_profile_of_a_generated_file(tmp_path, processor):
    path = _write_profile_file(tmp_path)
    tokenizer = processor.tokenizer
    profile = profile_data(path, tokenizer, max_length=256, max_image_tokens=64)
    assert profile.rows == 3 and [number for number, _ in profile.bad] == [4]

    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    ocr = profile.lengths["ocr"]
    assert ocr["anchor"] == [(1 + n("đọc chữ") + 4 + 2, 16), (1 + n("ảnh") + 50 + 2 + 4 + 2, 4 * 54)]
    assert ocr["positive"] == [(1 + n("một hai"), 0), (1 + n("ba"), 0)]
    assert set(profile.columns("instr+neg")) == {"anchor", "positive", "negative"}
    worst = {(b.dataset, b.case): b for b in profile.batches()}
    assert worst[("ocr", "worst")].columns[0] == Column("anchor", 1 + n("ảnh") + 58, 216)


def test_profile_lengths_match_the_model_inputs(tmp_path, st_model):
    path = _write_profile_file(tmp_path)
    profile = profile_data(path, st_model[0].processor.tokenizer, max_length=256, max_image_tokens=64)
    from configuration_vipyloqwen import TASKS
    from vipyloqwen_tools.data import iter_file, to_st_input

    rows = [row for _, _, row, error in iter_file(path) if error is None and row["task"] == "ocr"]
    with image_budget(st_model[0].processor, 64):
        features = st_model.preprocess([to_st_input(r["query"]) for r in rows], prompt=TASKS["ocr"].prefix)
    lengths = features["attention_mask"].sum(dim=1).tolist()
    patches = features["image_grid_thw"].prod(dim=1).tolist()
    assert [t for t, _ in profile.lengths["ocr"]["anchor"]] == lengths
    assert sum(p for _, p in profile.lengths["ocr"]["anchor"]) == sum(patches)


def test_plan_command_reports_bad_lines_and_exit_status(tmp_path, capsys):
    import train_st

    path = _write_profile_file(tmp_path)
    argv = ["plan", "--config", str(REPO / "configs/tiny-cpu.yaml"), "--data", str(path), "--device-memory-gb", "8"]
    assert train_st.main(argv + ["--output-dir", str(tmp_path / "run")]) == 1
    out = capsys.readouterr().out
    assert "1 bad line(s)" in out and "line 4:" in out and "fits" in out
    assert (
        train_st.main(
            ["plan", "--config", str(REPO / "configs/tiny-cpu.yaml"), "--data", "limits", "--device-memory-gb", "8"]
        )
        == 0
    )


def test_shipped_2b_recipe_fits_four_h100_nvl_by_the_plan():
    config = TrainConfig.from_yaml(REPO / "configs/vipyloqwen-2b.yaml")
    setup = planner.setup_from_config(config, accelerate_config=REPO / "configs/accelerate/fsdp-4gpu.yaml")
    assert (setup.world_size, setup.sharding, setup.per_device_batch, setup.effective_batch) == (4, "fsdp", 24, 768)
    assert setup.mini_batch and setup.gradient_checkpointing
    plan = plan_limits(Architecture.qwen2_vl_2b(), setup, device_memory=94e9)
    assert plan.fits, plan.summary()
    without_cache = Setup(**{**setup.__dict__, "mini_batch": None})
    assert not plan_limits(Architecture.qwen2_vl_2b(), without_cache, 94e9).fits


def test_launcher_world_from_accelerate_configs_and_env(monkeypatch):
    assert launcher_world(REPO / "configs/accelerate/fsdp-4gpu.yaml") == (4, "fsdp")
    assert launcher_world(REPO / "configs/accelerate/deepspeed-zero3-4gpu.yaml") == (4, "zero3")
    assert launcher_world(REPO / "configs/accelerate/cpu-2proc.yaml") == (2, "ddp")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert launcher_world() == (2, "fsdp")


def test_training_refuses_a_run_that_does_not_fit_before_the_first_step(tmp_path, processor):
    # own data (40 long instr rows), so the test does not depend on the sample's row counts
    words = "tìm tài liệu về con mèo đỏ trong thành phố Hà Nội hôm nay".split()
    rows = [
        {"task": "instr", "query": " ".join(words[(i + j) % len(words)] for j in range(200)), "positive": "con mèo"}
        for i in range(40)
    ]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    settings = {"per_device_train_batch_size": 32, "gradient_accumulation_steps": 2, "max_length": 256}
    # a budget between the plan with GradCache mini-batches of 2 and the plan without GradCache
    arch = Architecture.resolve("tiny")
    profile = profile_data(data, processor.tokenizer, max_length=256, max_image_tokens=16)
    base = TrainConfig.from_yaml(REPO / "configs/tiny-cpu.yaml", **settings)
    full = planner.plan_data(arch, planner.setup_from_config(base, 1, "none", "fp32"), profile).worst.total
    small = planner.plan_data(arch, planner.setup_from_config(base, 1, "none", "fp32"), profile)
    small.setup.mini_batch = 2
    budget = (planner.predict(arch, small.setup, small.worst.batch).total + full) / 2
    config = TrainConfig.from_yaml(
        REPO / "configs/tiny-cpu.yaml",
        train_file=str(data),
        eval_file=None,
        output_dir=str(tmp_path / "run"),
        device_memory_gb=budget / 0.9 / 1e9,
        max_steps=1,
        **settings,
    )
    place_tiny_init(tmp_path / "run")  # the model: tiny of the config, as the session built it
    with pytest.raises(MemoryPlanError) as refused:
        train(config)
    message = str(refused.value)
    assert "DOES NOT FIT" in message and "(instr, worst batch)" in message
    mini = int(message.split("cached_mini_batch_size: ")[1].split()[0])
    assert 2 <= mini < 32 and "per_device_train_batch_size:" in message
    assert "--ignore-memory-plan" in message
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_ignore_memory_plan_logs_and_continues(st_model, caplog):
    config = TrainConfig(model="tiny", device_memory_gb=0.01, ignore_memory_plan=True, precision="fp32")
    with caplog.at_level("WARNING", logger="vipyloqwen.planner"):
        plan = planner.check_training_memory(config, st_model, "fp32")
    assert plan is not None and plan.fits is False
    assert "--ignore-memory-plan" in caplog.text
    assert (
        planner.check_training_memory(TrainConfig(model="tiny"), st_model, "fp32") is None or torch.cuda.is_available()
    )


def test_refusal_suggestions_fit_when_applied():
    setup = Setup(
        world_size=4,
        sharding="fsdp",
        precision="bf16",
        gradient_checkpointing=True,
        per_device_batch=24,
        gradient_accumulation=8,
        max_length=8192,
        max_image_tokens=1024,
    )
    arch = Architecture.qwen2_vl_2b()
    plan = plan_limits(arch, setup, 94e9)
    assert plan.fits is False
    fix = plan.fix()
    mini = int(fix.split("cached_mini_batch_size: ")[1].split()[0])
    assert plan_limits(arch, Setup(**{**setup.__dict__, "mini_batch": mini}), 94e9).fits
    assert not plan_limits(arch, Setup(**{**setup.__dict__, "mini_batch": mini + 1}), 94e9).fits


def test_recorded_calibration_predicts_measured_peaks_within_20_percent():
    results = json.loads((REPO / "bench/results/planner-calibration.json").read_text())
    points = results["validation_points"]
    assert len(points) >= 3
    for point in points:
        row = planner.compare_point(point)
        assert abs(row["error_pct"]) <= 20, row
    assert results["fitted_constants"]["fixed"] == planner.CALIBRATION["fixed"]
