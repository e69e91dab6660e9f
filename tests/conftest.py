"""Shared fixtures and helpers: one tiny offline checkpoint per session (and its processor, AutoModel and
SentenceTransformer), small generated images, JSONL files, the settings of a short tiny training run, the environment
of a child process, a free port, a local image server.

What a session builds once and shares (the suite's cost is model builds, training runs and process launches):

- the tiny checkpoint (:func:`shared_tiny`): the ``tiny_checkpoint`` fixture, and the ``init-tiny`` folder of every
  ``model: tiny`` run made from :func:`tiny_run_settings` (hard links to it, where ``train()`` would build it);
- the reference training run (``reference_run``, :mod:`fault_runs`): 6 uninterrupted steps with checkpoints at 3 and
  6, read by the resume, checkpoint and fault tests;
- the 2-process launch (``two_process_run``, :mod:`distributed_runs`): one ``torchrun --nproc_per_node 2`` training
  with a trace, read by the distributed tests;
- one pair of spawned gloo processes (``gloo_pair``, :mod:`gloo_pair`) where the tests that call collectives
  directly run their workers one after the other.

Tests that train, launch processes or take more than ~5 s are marked ``slow``: ``make test`` skips them, ``make
test-all`` (and CI) runs everything."""

from __future__ import annotations

import io
import json
import os
import shutil
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

TORCH_THREADS = max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(TORCH_THREADS)

REPO = Path(__file__).resolve().parent.parent
# What this session built once (see the module docstring); filled on first use.
_SESSION: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test ends with the session's torch threads, whatever it set: a bench's ``main`` sets ``--threads 1`` in
    this process, and a run trained in-process with other threads than a child's (or than the session's shared
    reference run) is not bit-identical to it. At teardown, not setup: the next test's session fixtures (the
    reference run) are built before its function fixtures."""
    yield
    if torch.get_num_threads() != TORCH_THREADS:
        torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session", autouse=True)
def _session_tmp(tmp_path_factory):
    """Lets the helpers below build the session's shared artefacts under pytest's temporary folder on first use."""
    _SESSION["tmp"] = tmp_path_factory


def shared_tiny() -> tuple[Any, Any, Path]:
    """``(model, processor, checkpoint folder)`` of the tiny model, built and saved once per session.

    The same model ``train()`` builds for ``model: tiny`` (``build_tiny``: ``tiny(seed=0)``, embed_dim 32, 64 image
    tokens; ``tests/test_export.py`` checks the files are byte-identical). Saved as soon as built, so no test can
    change the weights before they are written."""
    if "tiny" not in _SESSION:
        from vipyloqwen_tools.checkpoint.export import save_checkpoint, tiny

        model, processor = tiny(embed_dim=32, seed=0, max_image_tokens=64)
        folder = save_checkpoint(model, processor, _SESSION["tmp"].mktemp("tiny") / "checkpoint")
        _SESSION["tiny"] = (model, processor, folder)
    return _SESSION["tiny"]


def place_tiny_init(output_dir: Path) -> Path:
    """The session's tiny checkpoint at ``<output_dir>/init-tiny``, where a ``model: tiny`` run builds it
    (``build_tiny`` keeps a complete folder that is there). Hard links: a run only reads its initial model, and a
    build costs 5-25 s on 2 cores against milliseconds for the links."""
    target = Path(output_dir) / "init-tiny"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(shared_tiny()[2], target, copy_function=os.link)
    return target


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


def tiny_run_settings(
    output_dir: Path, train_file: Path, eval_file: Path | None, *, prebuilt_tiny: bool = True, **overrides: Any
) -> dict[str, Any]:
    """:data:`TINY_RUN` with its files and ``overrides``: the settings of a ``TrainConfig`` or a YAML config.

    With ``model: tiny`` the session's tiny checkpoint is placed in ``<output_dir>/init-tiny``
    (:func:`place_tiny_init`); ``prebuilt_tiny=False`` leaves the build to the run (a test of that build, or of
    what happens before it)."""
    files = {"train_file": str(train_file), "eval_file": str(eval_file) if eval_file else None}
    settings = {**TINY_RUN, **files, "output_dir": str(output_dir), **overrides}
    if prebuilt_tiny and settings["model"] == "tiny":
        place_tiny_init(Path(output_dir))
    return settings


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
    model, processor, _ = shared_tiny()
    return model, processor


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """A Hub-layout checkpoint folder of the tiny model (the session's one: read it, copy it to change it)."""
    return shared_tiny()[2]


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


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """``(root, (train, eval), out)`` of the session's uninterrupted tiny training run (:func:`fault_runs.reference`:
    6 steps, checkpoints at 3 and 6, ``final/``, ``log_history.json``). Read it; copy it (``fault_runs.copy_run``)
    to resume, tear or change it."""
    from fault_runs import reference

    return reference(tmp_path_factory)


@pytest.fixture(scope="session")
def two_process_run(tmp_path_factory):
    """The session's 2-process (torchrun, gloo) training (:func:`distributed_runs.two_process_training`): its
    ``root``, ``train`` file, ``out`` folder, per-rank ``trace`` (and ``trace_dir``) and launcher ``log``."""
    from distributed_runs import two_process_training

    return two_process_training(tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="session")
def gloo_pair(request, tmp_path_factory) -> dict[str, Path]:
    """The session's one pair of gloo processes (:mod:`gloo_pair`): runs ``gloo_worker`` of every collected test
    module that uses this fixture (after its ``gloo_prepare``); ``{module name: folder}`` with the workers' results."""
    from gloo_pair import run_pair

    modules = {item.module.__name__: item.module for item in request.session.items if "gloo_pair" in item.fixturenames}
    folders = {name: tmp_path_factory.mktemp(f"gloo-{name}") for name in sorted(modules)}
    for name, folder in folders.items():
        modules[name].gloo_prepare(folder)
    run_pair([(name, str(folder)) for name, folder in folders.items()])
    return folders


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
