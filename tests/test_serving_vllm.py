"""The vLLM server on the tiny model: ``/v1/embeddings`` gives Sentence-Transformers' vectors (same width,
cosine >= 0.9999 in fp32) for texts, a typed task prefix, image + text and 2-image items, a task given per
request and Matryoshka widths; bad items get HTTP 400 naming the item and the server keeps serving.

Needs ``.venv-serve`` (``make serve-install``); skipped with that reason without it. Run alone with
``make test-serve``. The server takes 1-3 minutes to start on 2 busy cores (one start for the module).
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, png_bytes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "serving"))
from vipyloqwen_vllm.client import post_embeddings, running_server  # noqa: E402

SERVE = ROOT / ".venv-serve" / "bin" / "vipyloqwen-serve"
START_TIMEOUT_S = 900
MATRYOSHKA = [32, 16, 8]

pytestmark = pytest.mark.skipif(
    not (ROOT / ".venv-serve" / ".installed").exists() or not SERVE.exists(),
    reason="no .venv-serve (vLLM's own environment): run `make serve-install`, then `make test-serve`",
)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory):
    """The session's tiny checkpoint, declaring Matryoshka widths (as a Matryoshka-trained export does)."""
    folder = tmp_path_factory.mktemp("serve") / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["matryoshka_dimensions"] = MATRYOSHKA
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def st(checkpoint):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(checkpoint), trust_remote_code=True, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def server(checkpoint, media, tmp_path_factory):
    """``vipyloqwen-serve`` (what ``make serve`` runs) on the tiny checkpoint; yields its base URL."""
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    args = ["--allowed-local-media-path", str(media)]
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    try:
        with running_server(checkpoint, SERVE.parent.parent, args, START_TIMEOUT_S, log, env) as url:
            assert f"{url}/v1/embeddings" in log.read_text()  # it says where it listens
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))


def post(url: str, body: dict) -> tuple[int, dict]:
    return post_embeddings(url, body, timeout_s=300)


def embed(url: str, body: dict) -> np.ndarray:
    status, answer = post(url, body)
    assert status == 200, answer
    assert [row["index"] for row in answer["data"]] == list(range(len(answer["data"])))
    return np.array([row["embedding"] for row in answer["data"]], dtype=np.float64)


def assert_same(served: np.ndarray, expected) -> None:
    expected = np.asarray(expected, dtype=np.float64)
    assert served.shape == expected.shape
    cosine = (served * expected).sum(-1) / np.linalg.norm(served, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(np.linalg.norm(served, axis=-1), 1.0, atol=1e-5)


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def test_texts_and_a_typed_prefix(server, st):
    texts = ["Xin chào thế giới", "Hà Nội là thủ đô của Việt Nam.", "", "a <ocr> typed inside is text"]
    assert_same(embed(server, {"input": texts}), st.encode(texts))
    typed = embed(server, {"input": "<ocr> Biển số xe này là gì?"})
    assert_same(typed, st.encode(["Biển số xe này là gì?"], prompt_name="ocr"))
    assert_same(embed(server, {"input": ["Biển số xe này là gì?"], "task": "ocr"}), typed)


def test_image_text_and_two_image_items(server, st, media):
    plate, page, photo = make_image(112, 84, seed=1), make_image(84, 140, seed=2), make_image(120, 90, seed=3)
    page.save(media / "page.png")
    messages = [
        [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(plate)}},
            {"type": "text", "text": "<ocr> Biển số xe này là gì?"},
        ]}],
        [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": str(media / "page.png")}},
            {"type": "image_url", "image_url": {"url": data_url(photo)}},
            {"type": "text", "text": "Hai bức ảnh này khác nhau ở đâu?"},
        ]}],
    ]  # fmt: skip
    served = embed(server, {"messages": messages})
    assert_same(served[:1], st.encode([{"text": "Biển số xe này là gì?", "image": [plate]}], prompt_name="ocr"))
    assert_same(served[1:], st.encode([{"text": "Hai bức ảnh này khác nhau ở đâu?", "image": [page, photo]}]))
    # The task per request: the `task` field, or a system message holding the prefix (what ST sends).
    question = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(photo)}}, {"type": "text", "text": "Xe màu gì?"},
    ]}]  # fmt: skip
    expected = st.encode([{"text": "Xe màu gì?", "image": [photo]}], prompt_name="vqa_single")
    assert_same(embed(server, {"messages": [question], "task": "vqa_single"}), expected)
    assert_same(embed(server, {"messages": [{"role": "system", "content": "<vqa_single>"}, *question]}), expected)


def test_matryoshka_widths(server, st):
    full = st.encode(["Xin chào"])
    for width in MATRYOSHKA[1:]:
        cut = full[:, :width] / np.linalg.norm(full[:, :width], axis=-1, keepdims=True)
        assert_same(embed(server, {"input": ["Xin chào"], "dimensions": width}), cut)
    status, answer = post(server, {"input": ["Xin chào"], "dimensions": 12})
    assert status == 400 and "16" in answer["error"]["message"], answer


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ["ok", "<ocrr> Biển số"]}, "item 2 of 2 (text '<ocrr> Biển số'): unknown task prefix <ocrr>"),
        (
            {"messages": [[{"role": "user", "content": [
                *[{"type": "image_url", "image_url": {"url": data_url(make_image(seed=s))}} for s in range(6)],
                {"type": "text", "text": "six"},
            ]}]]},
            "item 1 of 1 (text 'six'): 6 images, at most 5 per item",
        ),
        (
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "x"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}},
            ]}]},
            "item 1 of 1 (text 'x'), image 1:",
        ),
        ({"input": []}, "empty request"),
    ],
)  # fmt: skip
def test_bad_items_get_400_and_the_server_keeps_serving(server, st, body, message):
    status, answer = post(server, body)
    assert status == 400, answer
    assert message in answer["error"]["message"], answer
    assert_same(embed(server, {"input": ["vẫn chạy"]}), st.encode(["vẫn chạy"]))
