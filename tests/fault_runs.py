"""Shared by the fault tests (guard, checkpoints, resume checks): small generated data, the run settings, one
uninterrupted reference run per session, and helpers to run ``train_st.py`` in a subprocess.

The reference run: 6 steps on the tiny model (batch 4, 3 tasks x 16 rows, text + small images), checkpoints at
steps 3 and 6. A resumed run that ends with the same weights continued exactly.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
COLOURS = ["đỏ", "xanh", "vàng", "tím", "hồng", "đen", "trắng", "nâu"]
ANIMALS = ["mèo", "chó", "bò", "vịt", "gà", "cá", "ngựa", "dê"]
_CACHE: dict[str, Any] = {}


def write_data(root: Path, per_task: int = 16, name: str = "train.jsonl") -> tuple[Path, Path]:
    """instr and text_pair (text) and ocr (one 56x56 image) rows, ``per_task`` each, and an eval file of 12 rows."""
    from conftest import make_image, write_jsonl

    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(per_task):
        colour, animal = COLOURS[i % 8], ANIMALS[(i * 3 + i // 8) % 8]
        lines.append({"task": "instr", "query": f"Tìm câu về con {animal} màu {colour} số {i}", "positive": animal})
        lines.append(
            {"task": "text_pair", "query": f"con {animal} {colour} {i}", "positive": f"a {colour} {animal} {i}",
             "score": 0.5 + i / (2 * per_task)}
        )  # fmt: skip
        make_image(56, 56, seed=i).save(root / "img" / f"ocr{i}.png")
        lines.append({"task": "ocr", "query": {"text": "Chữ gì?", "images": [f"img/ocr{i}.png"]}, "positive": colour})
    return write_jsonl(root / name, lines), write_jsonl(root / "eval.jsonl", lines[:12])


def settings(out: Path, train: Path, evals: Path, **overrides: Any) -> dict[str, Any]:
    """The shared tiny run (conftest ``TINY_RUN``) at this file's size: 6 steps of batch 4, checkpoints at 3 and 6."""
    from conftest import tiny_run_settings

    values = dict(
        num_train_epochs=1, max_steps=6, per_device_train_batch_size=4, max_length=32, max_image_tokens=16,
        save_total_limit=None, eval_batch_size=16, seed=7,
    )  # fmt: skip
    return tiny_run_settings(out, train, evals, **{**values, **overrides})


def config(out: Path, data: tuple[Path, Path], **overrides: Any):
    from vipyloqwen_tools.train.config import TrainConfig

    return TrainConfig.from_yaml(None, **settings(out, *data, **overrides))


def write_yaml(path: Path, values: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def env(threads: int = 1) -> dict[str, str]:
    """A child's environment: ``threads`` torch threads (the number this process uses makes a child's steps
    bit-identical to this process's), output unbuffered (a test reads the child's log while it runs)."""
    from conftest import child_env

    return child_env(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")


def train_command(config_path: Path, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "train_st.py"), "--config", str(config_path), *flags]


def gated_command(config_path: Path, gate: Path, *flags: str, hold_after: int = 1) -> list[str]:
    """``train_st.py`` held after step ``hold_after`` until ``gate`` exists (``tests/gated_train.py``): a fault
    test meets the run at a known point, however fast the machine."""
    held = ["--hold-after", str(hold_after), "--gate", str(gate)]
    return [sys.executable, str(ROOT / "tests" / "gated_train.py"), *held, "--config", str(config_path), *flags]


def reference(tmp_path_factory) -> tuple[Path, tuple[Path, Path], Path]:
    """``(root, (train, eval), out)`` of the uninterrupted reference run (built once per session; tests take it
    through the conftest fixture ``reference_run``)."""
    if "reference" not in _CACHE:
        from vipyloqwen_tools.train.run import train

        root = tmp_path_factory.mktemp("fault-runs")
        data = write_data(root)
        out = root / "reference"
        train(config(out, data))
        _CACHE["reference"] = (root, data, out)
    return _CACHE["reference"]


def copy_run(source: Path, target: Path, keep_steps: tuple[int, ...]) -> Path:
    """A copy of a run folder holding only the checkpoints of ``keep_steps`` (no export, no logs): where a run
    stopped after its last kept checkpoint."""
    keep = {f"checkpoint-{step}" for step in keep_steps}

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) != source:
            return []
        return [n for n in names if (n.startswith("checkpoint-") and n not in keep) or n in ("final", "eval")]

    shutil.copytree(source, target, ignore=ignore)
    return target


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def assert_same_weights(a: Path, b: Path, exact: bool) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if exact:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wb[key], wa[key], atol=1e-5, rtol=1e-4)
