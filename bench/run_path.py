"""The path of a training run through the project's modules: which modules ``train(config)`` calls into, in order.

Runs a short tiny-model run (2 steps, no evaluation) under ``sys.setprofile`` and records every call that
:func:`vipyloqwen_tools.train.run.train` makes itself (its direct callees) into a project module (the Hub files and
``vipyloqwen_tools``), plus the calls those callees make into other project modules (depth 2: what one step of
``train()`` hands on), both reported. Generator and comprehension frames count as calls of their module.

- **stops**: the sequence of modules, consecutive repeats collapsed (a stop is a move to another module);
- **modules**: distinct modules on the path;
- **returns**: stops at a module the path had already left (reading the run, you jump back).

    python bench/run_path.py --out bench/results/run-path.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent


def project_module(name: str) -> bool:
    return name.startswith("vipyloqwen_tools") or name.endswith("_vipyloqwen")


def record_path(train, config) -> dict[int, list[str]]:
    """Modules entered by ``train(config)``'s direct callees (depth 1) and by theirs (depth 2), in call order."""
    entry = train.__code__
    paths: dict[int, list[str]] = {1: [], 2: []}

    def depth(frame) -> int | None:
        for level in (1, 2):
            frame = frame.f_back
            if frame is None:
                return None
            if frame.f_code is entry:
                return level
        return None

    def profile(frame, event, arg):
        if event != "call":
            return
        name = frame.f_globals.get("__name__", "")
        if not project_module(name) or frame.f_code is entry:
            return
        level = depth(frame)
        if level is not None:
            for up_to in range(level, 3):
                paths[up_to].append(name)

    sys.setprofile(profile)
    try:
        train(config)
    finally:
        sys.setprofile(None)
    return paths


def summarise(path: list[str]) -> dict:
    stops: list[str] = []
    for name in path:
        if not stops or stops[-1] != name:
            stops.append(name)
    seen: set[str] = set()
    returns = 0
    for index, name in enumerate(stops):
        if name in seen and stops[index - 1] != name:
            returns += 1
        seen.add(name)
    return {"stops": len(stops), "modules": len(seen), "returns": returns, "path": stops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the path as JSON here")
    args = parser.parse_args(argv)
    from vipyloqwen_tools.train.config import TrainConfig
    from vipyloqwen_tools.train.run import train

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig.from_yaml(
            None, model="tiny", train_file=str(REPO / "data/sample/train.jsonl"), eval_file=None, output_dir=tmp,
            max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_length=64,
            max_image_tokens=16, precision="fp32", logging_steps=1, save_steps=100, warmup_ratio=0.0,
        )
        paths = record_path(train, config)
    summary = {f"depth_{level}": summarise(path) for level, path in paths.items()}
    for key, found in summary.items():
        print(f"{key}: {found['stops']} stops, {found['modules']} modules, {found['returns']} returns")
    for stop in summary["depth_1"]["path"]:
        print("  " + stop)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
