"""The vLLM server on the tiny model, as an operator exposes it.

- ``/v1/embeddings``, ``/pooling`` and ``/v2/embed`` give Sentence-Transformers' vectors (the fp32 checkpoint
  served in fp32: cosine >= 0.99999) for texts, a typed task prefix, image + text and 2-image items, a task
  per request, Cohere ``input_type`` values and Matryoshka widths; routes that would embed without the
  reader answer 400; every POST route of the server is classified.
- Image URLs go through vLLM's media connector: ``--allowed-media-domains`` (a 127.0.0.1 URL refused when
  only ``localhost`` is allowed), ``--allowed-local-media-path``, ``VLLM_IMAGE_FETCH_TIMEOUT``,
  ``VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB``, ``VLLM_MEDIA_URL_ALLOW_REDIRECTS``, ``VLLM_MAX_IMAGE_PIXELS`` and
  vLLM's image format allow-list each refuse what vLLM documents.
- Bad items (texts, token ids) get 400s naming the item, and the server keeps serving; ``/v1/models`` and the
  startup log list the embedding size, the widths and the served dtype.
- ``make serve`` with a missing folder prints one line naming it; with a Hub id it is not forced offline.

Needs ``.venv-serve`` (``make serve-install``); skipped with that reason without it. Run alone with
``make test-serve``. The server takes 1-3 minutes to start on 2 busy cores (one start for the module).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, png_bytes
from vipyloqwen_vllm.client import post_embeddings, running_server

ROOT = Path(__file__).resolve().parent.parent

SERVE = ROOT / ".venv-serve" / "bin" / "vipyloqwen-serve"
START_TIMEOUT_S = 900
MATRYOSHKA = [32, 16, 8]
# The fp32 checkpoint served in fp32: the same vectors up to float rounding.
MIN_COSINE = 0.99999
# vLLM's media settings of the module's server (each refuses something below).
FETCH_TIMEOUT_S = 2
SLOW_ANSWER_S = 8
MEDIA_ENV = {
    "VLLM_IMAGE_FETCH_TIMEOUT": str(FETCH_TIMEOUT_S),
    "VLLM_MEDIA_FETCH_MAX_RETRIES": "1",  # one try: the timeout is not multiplied by vLLM's retry backoff
    "VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB": "1",
    "VLLM_MEDIA_URL_ALLOW_REDIRECTS": "0",
    "VLLM_MAX_IMAGE_PIXELS": str(1000 * 1000),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT / ".venv-serve" / ".installed").exists() or not SERVE.exists(),
        reason="no .venv-serve (vLLM's own environment): run `make serve-install`, then `make test-serve`",
    ),
]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory):
    """The session's tiny checkpoint (float32), declaring Matryoshka widths (as a Matryoshka-trained export does)."""
    folder = tmp_path_factory.mktemp("serve") / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "float32"
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


PICTURE = make_image(96, 72, seed=5)


@pytest.fixture(scope="module")
def web():
    """A local web server (127.0.0.1, reachable as ``localhost`` too): /ok.png, /slow.png (answers after
    SLOW_ANSWER_S), /big.png (2 MB), /redirect.png (302 to /ok.png)."""
    ok = png_bytes(PICTURE)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/redirect.png":
                self.send_response(302)
                self.send_header("Location", "/ok.png")
                self.end_headers()
                return
            if self.path == "/slow.png":
                time.sleep(SLOW_ANSWER_S)
            data = ok + b"\0" * (2 * 2**20) if self.path == "/big.png" else ok
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading (size limit, timeout)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-log") / "server.log"


@pytest.fixture(scope="module")
def server(checkpoint, media, server_log):
    """``vipyloqwen-serve`` (what ``make serve`` runs, its defaults) on the tiny checkpoint with vLLM's media
    guards set; yields its base URL."""
    args = ["--allowed-local-media-path", str(media), "--allowed-media-domains", "localhost"]
    env = {"HF_HUB_OFFLINE": "1", **MEDIA_ENV}
    try:
        with running_server(checkpoint, SERVE.parent.parent, args, START_TIMEOUT_S, server_log, env) as url:
            assert f"{url}/v1/embeddings" in server_log.read_text()  # it says where it listens
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))


def post(url: str, body: dict, path: str = "/v1/embeddings") -> tuple[int, dict]:
    if path == "/v1/embeddings":
        return post_embeddings(url, body, timeout_s=300)
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def embed(url: str, body: dict) -> np.ndarray:
    status, answer = post(url, body)
    assert status == 200, answer
    assert [row["index"] for row in answer["data"]] == list(range(len(answer["data"])))
    return np.array([row["embedding"] for row in answer["data"]], dtype=np.float64)


def cosines(served: np.ndarray, expected) -> np.ndarray:
    expected = np.asarray(expected, dtype=np.float64)
    assert served.shape == expected.shape
    return (served * expected).sum(-1) / np.linalg.norm(served, axis=-1) / np.linalg.norm(expected, axis=-1)


def assert_same(served: np.ndarray, expected) -> None:
    cosine = cosines(served, expected)
    assert cosine.min() >= MIN_COSINE, cosine
    np.testing.assert_allclose(np.linalg.norm(served, axis=-1), 1.0, atol=1e-5)


def data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def image_item(url: str, text: str | None = "x") -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    return {"messages": [{"role": "user", "content": content + ([{"type": "text", "text": text}] if text else [])}]}


# ---------------------------------------------------------------------------------------------- /v1/embeddings
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


def test_fp32_checkpoint_is_served_in_fp32(server, server_log):
    log = server_log.read_text()
    assert "dtype float32 (the checkpoint's; --dtype to change)" in log  # the launcher says which
    assert "--dtype float32" in log.splitlines()[0] and "dtype=torch.float32" in log
    assert "Downcasting" not in log
    with urllib.request.urlopen(f"{server}/v1/models") as response:
        assert json.loads(response.read())["data"][0]["dtype"] == "float32"


def test_models_route_and_log_list_the_widths(server, server_log):
    with urllib.request.urlopen(f"{server}/v1/models") as response:
        card = json.loads(response.read())["data"][0]
    assert card["embedding_size"] == 32 and card["matryoshka_dimensions"] == MATRYOSHKA
    assert card["tasks"]["ocr"] == "<ocr>" and card["max_images_per_item"] == 5
    assert "embedding size 32; Matryoshka widths (`dimensions`): 32, 16, 8" in server_log.read_text()


def test_matryoshka_widths(server, st):
    full = st.encode(["Xin chào"])
    for width in MATRYOSHKA[1:]:
        cut = full[:, :width] / np.linalg.norm(full[:, :width], axis=-1, keepdims=True)
        assert_same(embed(server, {"input": ["Xin chào"], "dimensions": width}), cut)
    status, answer = post(server, {"input": ["Xin chào"], "dimensions": 12})
    assert status == 400, answer
    assert "allowed widths: 32, 16, 8 (embedding size 32)" in answer["error"]["message"]


def test_token_ids_give_the_texts_vectors(server, checkpoint):
    """Token-id items embed as the texts they spell (the reader's ids: prefix token, then the text's tokens)."""
    from vipyloqwen_vllm.checkpoint import plain_tokenizer

    tokenizer, specials = plain_tokenizer(str(checkpoint))
    as_ids = [[specials["<ocr>"], *tokenizer.encode("Biển số xe", add_special_tokens=False).ids],
              tokenizer.encode("Xin chào", add_special_tokens=False).ids]  # fmt: skip
    assert_same(embed(server, {"input": as_ids}), embed(server, {"input": ["<ocr> Biển số xe", "Xin chào"]}))


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
            "item 1 of 1 (text 'x'), image 1: Failed to load image: 12 bytes in no image format vLLM serves",
        ),
        ({"input": []}, "empty request"),
        ({"input": [[1, 2], [3, -1]]}, "item 2 of 2: token id -1 (token 2) is out of vocabulary; valid ids: 0..151935"),
        ({"input": [[1, 2], [3, 151936]]}, "item 2 of 2: token id 151936 (token 2) is out of vocabulary"),
        ({"input": [[1, 2], [3, 4], []]}, "item 3 of 3: empty list of token ids"),
        ({"input": [[1], [2] * 8524]}, "item 2 of 2: 8524 token ids, more than this server's 8523 tokens per item"),
    ],
)  # fmt: skip
def test_bad_items_get_400_and_the_server_keeps_serving(server, st, body, message):
    status, answer = post(server, body)
    assert status == 400, answer
    assert message in answer["error"]["message"], answer
    assert_same(embed(server, {"input": ["vẫn chạy"]}), st.encode(["vẫn chạy"]))


# ---------------------------------------------------------------------------------------------- media guards
def test_allowed_media_domains_refuse_other_hosts(server, st, web):
    """Only ``localhost`` is allowed: the same image on 127.0.0.1 is refused, on localhost fetched and embedded."""
    status, answer = post(server, image_item(f"http://127.0.0.1:{web}/ok.png"))
    assert status == 400, answer
    assert "image 1: The URL must be from one of the allowed domains: ['localhost']" in answer["error"]["message"]
    assert "Input URL domain: 127.0.0.1" in answer["error"]["message"]
    served = embed(server, image_item(f"http://localhost:{web}/ok.png"))
    assert_same(served, st.encode([{"text": "x", "image": [PICTURE]}]))


def test_allowed_local_media_path_refuses_other_folders(server, media, tmp_path):
    outside = tmp_path / "secret.png"
    make_image(60, 40).save(outside)
    for url in (str(outside), outside.as_uri()):
        status, answer = post(server, image_item(url))
        assert status == 400, answer
        # vLLM's message, with the server's paths masked as vLLM masks them in answers.
        refused = "image 1: The file path <path> must be a subpath of `--allowed-local-media-path <path>`"
        assert refused in answer["error"]["message"]


def test_fetch_timeout_applies(server, web):
    start = time.monotonic()
    status, answer = post(server, image_item(f"http://localhost:{web}/slow.png"))
    took = time.monotonic() - start
    assert status == 500 and f"Read timed out. (read timeout={FETCH_TIMEOUT_S})" in answer["error"]["message"], answer
    assert took < SLOW_ANSWER_S, took


def test_download_size_limit_applies(server, web):
    status, answer = post(server, image_item(f"http://localhost:{web}/big.png"))
    assert status == 422, answer
    assert "Remote media download exceeds VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB=1" in answer["error"]["message"]


def test_redirects_are_not_followed_when_turned_off(server, web):
    status, answer = post(server, image_item(f"http://localhost:{web}/redirect.png"))
    assert status == 400, answer
    assert "image 1: Failed to load image: 0 bytes in no image format vLLM serves" in answer["error"]["message"]


def test_image_pixel_limit_and_format_allow_list_apply(server):
    status, answer = post(server, image_item(data_url(make_image(1001, 1000))))
    assert status == 400, answer
    assert (
        "Image dimensions 1001x1000 (1001000 pixels) exceed the maximum of 1000000 pixels"
        in (answer["error"]["message"])
    )
    eps = io.BytesIO()
    make_image(40, 30).save(eps, "EPS")  # PIL reads EPS (through Ghostscript); vLLM's allow-list does not
    status, answer = post(server, image_item("data:image/eps;base64," + base64.b64encode(eps.getvalue()).decode()))
    assert status == 400, answer
    refused = f"image 1: Failed to load image: {len(eps.getvalue()):,} bytes in no image format vLLM serves (AVIF"
    assert refused in answer["error"]["message"]


# ---------------------------------------------------------------------------------------------- other routes
def test_pooling_gives_the_same_vectors(server, st):
    def pool(body: dict) -> np.ndarray:
        status, answer = post(server, body, "/pooling")
        assert status == 200, answer
        return np.array([row["data"] for row in answer["data"]], dtype=np.float64)

    texts = ["<ocr> Biển số xe", "", "Xin chào"]
    expected = np.concatenate([st.encode(["Biển số xe"], prompt_name="ocr"), st.encode(["", "Xin chào"])])
    assert_same(pool({"input": texts}), expected)
    assert_same(pool({"input": ["Biển số xe"], "task": "ocr"}), expected[:1])
    photo = make_image(120, 90, seed=3)
    assert_same(
        pool(image_item(data_url(photo), "Xe màu gì?") | {"task": "vqa_single"}),
        st.encode([{"text": "Xe màu gì?", "image": [photo]}], prompt_name="vqa_single"),
    )
    status, answer = post(server, {"input": ["<ocrr> x"]}, "/pooling")
    assert status == 400 and "item 1 of 1 (text '<ocrr> x'): unknown task prefix" in answer["error"]["message"]


def test_cohere_embed_gives_the_same_vectors(server, st):
    def cohere(body: dict) -> np.ndarray:
        status, answer = post(server, body, "/v2/embed")
        assert status == 200, answer
        return np.array(answer["embeddings"]["float"], dtype=np.float64)

    texts = ["Biển số xe này là gì?", ""]
    assert_same(cohere({"texts": texts, "input_type": "search_query"}), st.encode(texts))
    assert_same(cohere({"texts": texts, "input_type": "search_document"}), st.encode(texts))
    assert_same(cohere({"texts": texts, "input_type": "classification"}), st.encode(texts, prompt_name="text_pair"))
    assert_same(cohere({"texts": ["<ocr> Biển số"]}), st.encode(["Biển số"], prompt_name="ocr"))
    photo = make_image(120, 90, seed=3)
    assert_same(cohere({"images": [data_url(photo)], "input_type": "image"}), st.encode([{"image": [photo]}]))
    mixed = {"content": [{"type": "image_url", "image_url": {"url": data_url(photo)}}, {"type": "text", "text": "Xe"}]}
    assert_same(
        cohere({"inputs": [mixed], "input_type": "ocr"}),
        st.encode([{"text": "Xe", "image": [photo]}], prompt_name="ocr"),
    )
    status, answer = post(server, {"texts": ["a"], "input_type": "search"}, "/v2/embed")
    assert status == 400 and "unknown input_type 'search'" in answer["error"]["message"]


def test_every_post_route_is_read_or_refused(server):
    """Every POST route vLLM mounts is read (same vectors), refused (400 naming /v1/embeddings) or embeds nothing."""
    from vipyloqwen_vllm.middleware import READERS
    from vipyloqwen_vllm.routes import NOT_EMBEDDING, REFUSED

    with urllib.request.urlopen(f"{server}/openapi.json") as response:
        spec = json.loads(response.read())
    posts = {path for path, operations in spec["paths"].items() if "post" in operations}
    assert posts - set(READERS) - REFUSED - NOT_EMBEDDING == set()
    assert {"/v1/embeddings", "/pooling", "/v2/embed", "/score", "/v1/rerank", "/invocations"} <= posts
    for path in sorted(REFUSED & posts):
        status, answer = post(
            server, {"model": "m", "text_1": "a", "text_2": "b", "query": "a", "documents": ["b"]}, path
        )
        assert status == 400 and "Use POST /v1/embeddings" in answer["error"]["message"], (path, answer)


# ---------------------------------------------------------------------------------------------- make serve
def not_make(stderr: str) -> list[str]:
    """The lines not written by make itself ("make: ***", or "make[1]: ***" when the tests run under make)."""
    return [line for line in stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]


def test_make_serve_names_a_missing_folder_in_one_line(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    run = subprocess.run(
        ["make", "-s", "serve", f"MODEL={missing}", "PORT=8011"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines()[0] == f"MODEL={missing}: no such folder"
    assert len(not_make(run.stderr)) == 1


def test_make_serve_does_not_force_the_hub_offline():
    """A Hub id is looked up on the Hub (here the Hub is unreachable: the one line says so, not 'offline')."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    model = "vipyloqwen-tests/no-such-repo"
    run = subprocess.run(
        ["make", "-s", "serve", f"MODEL={model}", "PORT=8011"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    lines = not_make(run.stderr)
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith(f"MODEL={model}: no such folder, and ")
    assert "HF_HUB_OFFLINE" not in lines[0]
    # Unreachable here; where the Hub answers, the repo does not exist.
    assert "the Hugging Face Hub is unreachable" in lines[0] or "no Hub repo" in lines[0]
