"""``python train_st.py plan``: print the memory plan of a training config (vipyloqwen_tools/plan/planner.py).

    # without data: the worst case by the config limits (max_length text tokens, 5 x max_image_tokens images)
    python train_st.py plan --config configs/vipyloqwen-2b.yaml --architecture qwen2-vl-2b \\
        --accelerate-config configs/accelerate/fsdp-4gpu.yaml --device-memory-gb 94 --data limits
    # with data: worst and 99th-percentile batch per task from the file's length distribution
    python train_st.py plan --config configs/tiny-cpu.yaml --data data/sample/train.jsonl --device-memory-gb 8

World size: ``--world-size``, else the accelerate config's ``num_processes``, else ``WORLD_SIZE`` (torchrun /
accelerate launch set it), else 1. Sharding: ``--sharding``, else the accelerate config's ``distributed_type``
(FSDP, DeepSpeed ZeRO stage), else the launcher environment, else DDP for more than one process. Any training
flag (``--cached-mini-batch-size 4``, ``--max-image-tokens 512`` ...) overrides the config as for training.
Exit status: 0 if the plan fits (or the device memory is unknown), 1 if it does not fit or the data file has bad
lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vipyloqwen_tools.plan.planner import (
    SHARDINGS,
    Architecture,
    device_memory_bytes,
    plan_data,
    plan_limits,
    profile_data,
    setup_from_config,
)


def load_tokenizer(model: str) -> tuple[Any, str]:
    """The tokenizer of the ``model`` checkpoint; for ``tiny`` or a folder that does not exist yet, the real
    Qwen2-VL vocabulary + task tokens built offline (what both the tiny model and the 2B use)."""
    folder = Path(model)
    if model != "tiny" and (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder)), f"tokenizer of {folder}"
    from vipyloqwen_tools.checkpoint.export import add_task_tokens
    from vipyloqwen_tools.checkpoint.tokenizer import build_qwen2_vl_tokenizer

    tokenizer = build_qwen2_vl_tokenizer()
    add_task_tokens(tokenizer)
    return tokenizer, "the Qwen2-VL tokenizer + task tokens (built offline)"


def build_plan_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_st.py plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world-size", type=int, help="processes (default: accelerate config / WORLD_SIZE / 1)")
    parser.add_argument("--sharding", choices=SHARDINGS, help="default: from the accelerate config / launcher env")
    parser.add_argument("--accelerate-config", type=Path, help="accelerate launch config (world size, FSDP/ZeRO)")
    parser.add_argument(
        "--architecture",
        default="auto",
        help="auto (the config's model folder, or tiny) | qwen2-vl-2b | tiny | PATH to a checkpoint / config.json",
    )
    parser.add_argument(
        "--data",
        default="auto",
        help="auto (the config's train_file if it exists) | limits (config limits only) | PATH to a JSONL file",
    )
    parser.add_argument("--max-rows", type=int, help="profile only the first N good rows")
    parser.add_argument(
        "--negatives",
        type=int,
        default=1,
        help="explicit negatives per row in the limits plan (scripts/mine.py --num-negatives; default 1); a data "
        "plan counts the file's own",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the config's precision")
    parser.add_argument("--headroom", type=float, help="share of device memory kept free (default 0.10)")
    parser.add_argument("--json", type=Path, help="also write the plans as JSON here")
    return parser


def plan_command(argv: list[str], config_parser: argparse.ArgumentParser) -> int:
    """Run ``train_st.py plan`` (``config_parser``: the training flags, which override the YAML)."""
    from vipyloqwen_tools.train.config import TrainConfig

    parser = build_plan_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = vars(config_parser.parse_args(rest))
    config = TrainConfig.from_yaml(overrides.pop("config"), **overrides)
    arch = Architecture.resolve(args.architecture, config.model)
    setup = setup_from_config(
        config, args.world_size, args.sharding, args.precision, args.accelerate_config, negatives=args.negatives
    )
    if args.headroom is not None:
        setup.headroom = args.headroom
    device = device_memory_bytes(getattr(config, "device_memory_gb", None))
    plans = [plan_limits(arch, setup, device)]
    status = 0
    data = None if args.data == "limits" else (config.train_file if args.data == "auto" else args.data)
    if data is not None and not Path(data).is_file():
        if args.data != "auto":
            raise FileNotFoundError(f"--data: no such file {data}")
        plans[0].notes.append(f"train_file {data} not found: planned from the config limits only")
        data = None
    if data is not None:
        tokenizer, where = load_tokenizer(config.model)
        profile = profile_data(
            data, tokenizer, setup.max_length, setup.max_image_tokens, max_rows=args.max_rows,
            image_root=config.image_root,
        )  # fmt: skip
        if profile.bad:
            print(profile.bad_summary())
            status = 1
        plan = plan_data(arch, setup, profile, device)
        plan.notes.append(f"text tokens counted with {where}; image tokens from the image file headers")
        plans.append(plan)
    for plan in plans:
        print(plan.summary())
        print()
    if plans[-1].fits is False:
        status = 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([plan.to_dict() for plan in plans], indent=1, default=str) + "\n")
    return status


__all__ = ["build_plan_parser", "load_tokenizer", "plan_command"]
