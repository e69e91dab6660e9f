"""Shared fixtures and helpers: one tiny offline checkpoint per session (and its processor, AutoModel and
SentenceTransformer), small generated images, JSONL files, the settings of a short tiny training run, the environment
of a child process, a free port, a local image server."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parent.parent

# A short CPU run of the tiny model that the training tests share; each test adds what it checks (steps, batch size,
# sequence length, seed). No evaluation, a loss every step, a checkpoint every 3 steps.
TINY_RUN: dict[str, Any] = {
    "model": "tiny",
    "learning_rate": 1.0e-3,
    "warmup_ratio": 0.0,
    "gradient_accumulation_steps": 1,
    "precision": "fp32",
    "logging_steps": 1,
    "eval_steps": None,
    "save_steps": 3,
}


def tiny_run_settings(output_dir: Path, train_file: Path, eval_file: Path | None, **overrides: Any) -> dict[str, Any]:
    """:data:`TINY_RUN` with its files and ``overrides``: the settings of a ``TrainConfig`` or a YAML config."""
    files = {"train_file": str(train_file), "eval_file": str(eval_file) if eval_file else None}
    return {**TINY_RUN, **files, "output_dir": str(output_dir), **overrides}


def tiny_run_config(output_dir: Path, train_file: Path, eval_file: Path | None = None, **overrides: Any):
    """A ``TrainConfig`` of :data:`TINY_RUN` (for ``train(config)`` in this process)."""
    from vipyloqwen_tools.train.config import TrainConfig

    return TrainConfig.from_yaml(None, **tiny_run_settings(output_dir, train_file, eval_file, **overrides))


def write_tiny_run_yaml(path: Path, output_dir: Path, train_file: Path, eval_file: Path | None = None, **overrides):
    """A YAML config of :data:`TINY_RUN` at ``path`` (for ``train_st.py --config`` in a child process)."""
    import yaml

    path.write_text(yaml.safe_dump(tiny_run_settings(output_dir, train_file, eval_file, **overrides)), "utf-8")
    return path


def write_jsonl(path: Path, rows: Iterable[dict | str]) -> Path:
    """One JSON object per line (UTF-8, non-ASCII as is); a ``str`` row is written as it is (a bad line on purpose)."""
    lines = (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process that imports this repository (offline, as the tests are)."""
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def free_port() -> int:
    """A TCP port free on localhost now, for a torchrun / gloo rendezvous (a fixed port collides with other runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_image(width: int = 120, height: int = 90, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small deterministic picture: coloured background with a rectangle and a line."""
    image = Image.new("RGB", (width, height), ((37 * seed) % 256, (91 * seed + 40) % 256, (53 * seed + 90) % 256))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 5, height // 5, width // 2, height // 2], fill=((200 + seed) % 256, 30, 60))
    draw.line([0, height - 1, width - 1, 0], fill=(255, 255, 255), width=3)
    return image.convert(mode) if mode != "RGB" else image


@pytest.fixture(scope="session")
def tiny_parts():
    """(model, processor) of the tiny random model with the real vocabulary (seed 0, embed_dim 32)."""
    from vipyloqwen_tools.checkpoint.export import tiny

    return tiny(embed_dim=32, seed=0, max_image_tokens=64)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_parts, tmp_path_factory):
    """A Hub-layout checkpoint folder of the tiny model."""
    from vipyloqwen_tools.checkpoint.export import save_checkpoint

    model, processor = tiny_parts
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("tiny") / "checkpoint")


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)


@pytest.fixture(scope="session")
def auto_model(tiny_checkpoint):
    from transformers import AutoModel

    return AutoModel.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()


@pytest.fixture(scope="session")
def st_model(tiny_checkpoint):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_checkpoint), trust_remote_code=True, device="cpu")


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as a PNG file."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def image_server():
    """A local HTTP server: /ok.png (an image), /big.png (more bytes), /slow.png (no answer in time), 404s."""
    body = png_bytes(make_image(64, 48, seed=4))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/slow.png":
                time.sleep(1.5)
            if self.path in ("/ok.png", "/slow.png", "/big.png"):
                data = body if self.path != "/big.png" else body + b"\0" * 4096
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                if self.path != "/big.png":  # no Content-Length: the cap is enforced while reading
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404, "Not Found")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", body
    server.shutdown()
    server.server_close()
