"""serving/vipyloqwen_vllm request reading, without vLLM: the token ids and chat items it hands to vLLM are
what ``encode`` computes (same ids as ViPyloQwenProcessor), bad items (token ids included) are refused naming
the item, ``/pooling`` and ``/v2/embed`` bodies are read by the same rules, the Cohere ``input_type`` table
follows the registry's MTEB choices, and the launcher builds the documented vLLM command and names a missing
model in one line. The server itself (vLLM's media connector, every route): tests/test_serving_vllm.py.

Image URLs are fetched here by :func:`fetch_data_urls`, a stand-in for vLLM's media connector (no vLLM in this
venv) that reads ``data:`` URLs and records what it was asked; the connector's own rules are tested against a
real server."""

from __future__ import annotations

import base64
import io
import json
import shutil

import pytest
from conftest import make_image, png_bytes
from PIL import Image
from vipyloqwen_vllm import check_vllm_version
from vipyloqwen_vllm.checkpoint import ModelNotFound, locate_model, read_checkpoint
from vipyloqwen_vllm.middleware import reader_for
from vipyloqwen_vllm.requests import MAX_IMAGES_PER_ITEM, RequestError

FETCHED: list[str] = []


def fetch_data_urls(url: str, where: str) -> bytes:
    """Stand-in for vLLM's media connector: the bytes of a base64 ``data:`` URL; other URLs are recorded, refused."""
    FETCHED.append(url)
    if not url.startswith("data:"):
        raise RequestError(f"{where}: only data: URLs in these tests")
    return base64.b64decode(url.split(",", 1)[1])


@pytest.fixture(scope="module")
def reader(tiny_checkpoint):
    return reader_for(str(tiny_checkpoint), fetch_data_urls)


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def library_ids(processor, text, task=None, images=None):
    messages = processor.build_messages(text=[text], images=[images] if images else None, task=task)
    return processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"][0]


def test_registry_and_checkpoint_agree(tiny_checkpoint):
    from configuration_vipyloqwen import MAX_IMAGES_PER_ITEM as library_max
    from configuration_vipyloqwen import TASKS

    assert MAX_IMAGES_PER_ITEM == library_max
    info = read_checkpoint(str(tiny_checkpoint))
    assert info.tasks == {name: spec.prefix for name, spec in TASKS.items()}
    assert (info.max_image_tokens, info.min_image_tokens, info.max_text_tokens, info.eos_token) == (
        64,
        4,
        8192,
        "<|im_end|>",
    )


@pytest.mark.parametrize(
    "text",
    [
        "Biển số xe này là gì?",
        "<ocr> Biển số xe này là gì?",
        "  <vqa_single>\tXe màu gì?",
        "<ocr>",
        "",
        "   ",
        "a <ocr> in the middle and <|im_start|> typed",
        "<|image_pad|> at the start is text",
        "<p> an HTML passage",
    ],
)
def test_text_ids_equal_the_processor(reader, processor, text):
    body = reader.read({"input": [text], "model": "m"})
    assert body["model"] == "m"
    assert body["input"] == [library_ids(processor, text)]


def test_task_field_is_encode_task(reader, processor):
    body = reader.read({"input": ["Biển số xe này là gì?", "<ocr> x"], "task": "ocr"})
    assert body["input"] == [library_ids(processor, "Biển số xe này là gì?", "ocr"), library_ids(processor, "x", "ocr")]
    assert "task" not in body
    assert reader.read({"input": "<ocr> x", "task": "<ocr>"})["input"] == [library_ids(processor, "x", "ocr")]
    # "query" / "document": no task, and a leading <name> is then plain text.
    assert reader.read({"input": ["<foo> x"], "task": "query"})["input"] == [library_ids(processor, "<foo> x")]


def test_token_ids_pass_through(reader):
    assert reader.read({"input": [1, 2, 3]}) == {"input": [1, 2, 3]}
    assert reader.read({"input": [[1, 2], [3]]}) == {"input": [[1, 2], [3]]}
    # vLLM's bound: the tokenizer's largest id or the embedding table's last row, whichever is larger.
    assert reader.max_token_id == max(reader.info.vocab_size - 1, *reader.tokenizer.get_vocab(True).values())
    assert reader.read({"input": [[reader.max_token_id]]}) == {"input": [[reader.max_token_id]]}
    # The tiny checkpoint's max model length: prefix + 5 images at 64 tokens (+2 each) + 8192 text tokens.
    assert reader.max_tokens == 1 + 5 * 66 + 8192
    assert reader.read({"input": [[7] * reader.max_tokens]})["input"] == [[7] * reader.max_tokens]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([[1, 2], [5, -1]], r"^item 2 of 2: token id -1 \(token 2\) is out of vocabulary; valid ids: 0\.\.151935$"),
        ([[1], [2], [151936]], r"^item 3 of 3: token id 151936 \(token 1\) is out of vocabulary"),
        ([1, 2, -5], r"^item 1 of 1: token id -5 \(token 3\)"),
        ([[1, 2], [3, 4], []], r"^item 3 of 3: empty list of token ids"),
        ([[], [1, 2]], r"^item 1 of 2: empty list of token ids"),
        ([[1, 2], [3, "4"]], r"^item 2 of 2: token 2 is '4', not an integer token id"),
        ([[1, True]], r"^item 1 of 1: token 2 is True, not an integer token id"),
        ([[1], [151655]], r"^item 2 of 2: token id 151655 \(token 1\) is the image_token_id placeholder"),
        ([[1], [2] * (1 + 5 * 66 + 8192 + 1)], r"^item 2 of 2: 8524 token ids, more than this server's 8523 tokens"),
        ([[1, 2], [{"role": "user", "content": "x"}]], r"^item 2 of 2: chat messages, where the request's first"),
        ([[], []], r"^item 1 of 2: expected token ids \(a non-empty list of integers\) or chat messages"),
    ],
)
def test_bad_token_ids_name_the_item(reader, ids, message):
    with pytest.raises(RequestError, match=message) as error:
        reader.read({"input": ids})
    assert error.value.param == "input" and error.value.status == 400


def test_dimensions_must_be_a_declared_width(reader, tiny_checkpoint, tmp_path):
    with pytest.raises(RequestError, match=r"`dimensions` 16: this model declares no Matryoshka widths.*32-wide"):
        reader.read({"input": ["x"], "dimensions": 16})
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [32, 16, 8]}))
    widths = reader_for(str(folder), fetch_data_urls)
    assert widths.read({"input": ["x"], "dimensions": 16})["dimensions"] == 16
    with pytest.raises(
        RequestError, match=r"^`dimensions` 12 is not a width .*; allowed widths: 32, 16, 8 \(embedding"
    ):
        widths.read({"input": ["x"], "dimensions": 12})


def test_chat_item_layout_matches_build_messages(reader, processor):
    image = make_image(84, 56, seed=1)
    body = reader.read(
        {
            "messages": [
                [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(image)}},
                    {"type": "text", "text": "<ocr> Biển số xe này là gì?"},
                ]}],
                [{"role": "system", "content": "<vqa_multi>"}, {"role": "user", "content": "chỉ có chữ"}],
                [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}}]}],
                [{"role": "system", "content": "<instr>"}, {"role": "user", "content": ""}],
            ]
        }
    )  # fmt: skip
    first, second, third, fourth = body["messages"]
    content = first[0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "text"]
    assert content[0]["text"] == "<ocr>" and content[2]["text"] == "Biển số xe này là gì?"
    sent = Image.open(io.BytesIO(base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1])))
    assert sent.mode == "RGB" and sent.tobytes() == image.tobytes()  # lossless
    assert second == [
        {"role": "user", "content": [{"type": "text", "text": "<vqa_multi>"}, {"type": "text", "text": "chỉ có chữ"}]}
    ]
    assert [part["type"] for part in third[0]["content"]] == ["image_url"]
    assert fourth[0]["content"][-1]["text"] == "<|im_end|>"  # an empty item embeds as the eos token
    # The rendered template + special-token parsing gives the processor's ids (what vLLM's chat path computes).
    rendered = "".join(part.get("text", "<|vision_start|><|image_pad|><|vision_end|>") for part in second[0]["content"])
    tokenizer = processor.tokenizer
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == library_ids(
        processor, "chỉ có chữ", "vqa_multi"
    )


def test_image_urls_go_to_the_media_connector(reader, tmp_path):
    """Every image URL is handed to ``fetch`` (vLLM's media connector in the server); an absolute path as the
    ``file://`` URL vLLM's connector checks against ``--allowed-local-media-path``."""
    page = tmp_path / "a page.png"
    FETCHED.clear()
    for url in (str(page), f"file://{page}", "http://127.0.0.1:9/x.png"):
        with pytest.raises(RequestError, match=r"^item 1 of 1, image 1: only data: URLs"):
            reader.read({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})
    assert FETCHED == [page.as_uri(), f"file://{page}", "http://127.0.0.1:9/x.png"]


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def user(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


SIX_IMAGES = [image_part(data_url(make_image(seed=s))) for s in range(6)]
NOT_AN_IMAGE = image_part("data:image/png;base64,bm90IGFuIGltYWdl")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": []}, "empty request"),
        ({}, "empty request"),
        ({"messages": []}, "empty request"),
        (
            {"input": ["ok", "<ocrr> Biển số"]},
            r"item 2 of 2 \(text '<ocrr> Biển số'\): unknown task prefix <ocrr>.*<ocr>",
        ),
        ({"input": ["ok"], "task": "ocrx"}, r"unknown task 'ocrx'; valid tasks: text_pair, instr, ocr"),
        ({"input": ["<ocr> a"], "task": "instr"}, r"item 1 of 1 .*conflicting tasks \['instr', 'ocr'\]"),
        ({"input": ["a", 3]}, r"item 2 of 2: expected a text, got int"),
        (
            {"messages": [user({"type": "text", "text": "a"}), user(*SIX_IMAGES, {"type": "text", "text": "six"})]},
            r"item 2 of 2 \(text 'six'\): 6 images, at most 5 per item",
        ),
        (
            {"messages": user(NOT_AN_IMAGE, {"type": "text", "text": "x"})},
            r"item 1 of 1 \(text 'x'\), image 1: .*(cannot|decode|identify)",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}]}, r"item 1 of 1: unsupported message role 'assistant'"),
        ({"messages": [{"role": "system", "content": "<ocr>"}]}, r"item 1 of 1: has neither text nor image"),
        ({"messages": [{"role": "user", "content": "a <|im_start|> b"}]}, r"item 1 of 1 .*special token"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_item(reader, body, message):
    with pytest.raises(RequestError, match=message):
        reader.read(body)


def test_version_check_names_the_supported_release():
    assert check_vllm_version("0.32.0") == "0.32.0"
    with pytest.raises(RuntimeError, match=r"supports vLLM 0.32.0, found 0.33.0: run `make serve-install`"):
        check_vllm_version("0.33.0")


def test_launcher_flags_come_from_the_checkpoint(tiny_checkpoint):
    from vipyloqwen_vllm.serve import kv_cache_bytes, parse_args, startup_lines, vllm_command

    args, extra = parse_args([str(tiny_checkpoint), "--port", "8011", "--", "--max-num-seqs", "4"])
    command = vllm_command(args, extra, cuda=False)
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert flags["--model"] == str(tiny_checkpoint) and flags["--runner"] == "pooling" and flags["--port"] == "8011"
    assert flags["--host"] == "127.0.0.1" and flags["--chat-template-content-format"] == "openai"
    assert flags["--chat-template"] == str(tiny_checkpoint / "chat_template.jinja")
    assert flags["--mm-processor-kwargs"] == '{"max_image_tokens": 64, "min_image_tokens": 4}'
    assert flags["--limit-mm-per-prompt"] == '{"image": 5, "video": 0}'
    assert flags["--max-model-len"] == str(1 + 5 * 66 + 8192) == flags["--max-num-batched-tokens"]
    assert flags["--dtype"] == "float32"  # the checkpoint's (vLLM's auto would serve float32 weights in float16)
    assert "--enforce-eager" in command and command[-2:] == ["--max-num-seqs", "4"]
    budget, _ = parse_args([str(tiny_checkpoint), "--max-image-tokens", "16"])
    assert '"max_image_tokens": 16' in vllm_command(budget, [], cuda=True)[command.index("--mm-processor-kwargs") + 1]
    on_gpu = vllm_command(budget, [], cuda=True)
    assert "--enforce-eager" not in on_gpu and "--kv-cache-memory-bytes" not in on_gpu
    bf16, _ = parse_args([str(tiny_checkpoint), "--dtype", "bfloat16"])
    assert vllm_command(bf16, [], cuda=False)[command.index("--dtype") + 1] == "bfloat16"
    info = read_checkpoint(str(tiny_checkpoint))
    assert "dtype bfloat16 (--dtype; the checkpoint is float32)" in startup_lines(bf16, info, "here", [])[0]
    assert "dtype float32 (the checkpoint's; --dtype to change)" in startup_lines(args, info, "here", command)[0]
    # The KV cache: one engine step at full batch (128 items of up to 128-token blocks + the batched tokens), at
    # 2 layers x K and V x 2 KV heads x 32 values x 4 bytes (float32) per token.
    assert info.kv_values_per_token == 2 * 2 * 2 * 32
    kv = int(command[command.index("--kv-cache-memory-bytes") + 1])
    assert kv == kv_cache_bytes(info, 8523, 128, 128, "float32") == (67 + 128) * 128 * 256 * 4
    assert command[command.index("--block-size") + 1] == "128"
    assert "KV cache: 24.4 MiB" in startup_lines(args, info, "here", command)[1]


def test_launcher_passes_the_media_guards_and_warns_on_a_public_address(tiny_checkpoint, tmp_path):
    from vipyloqwen_vllm.serve import parse_args, startup_lines, vllm_command

    args, _ = parse_args(
        [str(tiny_checkpoint), "--host", "0.0.0.0", "--allowed-local-media-path", str(tmp_path)]
        + ["--allowed-media-domains", "example.com", "cdn.example.com"]
    )
    command = vllm_command(args, [], cuda=False)
    at = command.index("--allowed-media-domains")
    assert command[at + 1 : at + 3] == ["example.com", "cdn.example.com"]
    assert command[command.index("--allowed-local-media-path") + 1] == str(tmp_path.resolve())
    info = read_checkpoint(str(tiny_checkpoint))
    assert not any("warning" in line for line in startup_lines(args, info, "here", command))
    open_args, _ = parse_args([str(tiny_checkpoint), "--host", "0.0.0.0"])
    lines = startup_lines(open_args, info, "here", vllm_command(open_args, [], cuda=False))
    assert "warning: listening on 0.0.0.0 without --allowed-media-domains" in lines[-1]


def test_a_missing_model_is_one_line_naming_it(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from vipyloqwen_vllm.serve import main

    assert locate_model(str(tiny_checkpoint)) == f"folder {tiny_checkpoint.resolve()}"
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "no-such-checkpoint"), "--port", "8011"])  # before vLLM is imported (none here)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"MODEL={tmp_path / 'no-such-checkpoint'}: no such folder\n"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build").mkdir()
    (tmp_path / "empty").mkdir()
    cases = {
        "build/tiny": f"MODEL=build/tiny: no such folder ({tmp_path / 'build'} has no tiny)",  # never the Hub
        "./tiny": "MODEL=./tiny: no such folder",
        "empty": "MODEL=empty: the folder has no config.json (not a viPyloQwen checkpoint folder)",
        # conftest sets HF_HUB_OFFLINE=1: a Hub id not in the cache says so.
        "erax-ai/no-such-repo": "MODEL=erax-ai/no-such-repo: no such folder, and not in the Hub cache (HF_HUB_OFFLINE",
    }
    for model, message in cases.items():
        with pytest.raises(ModelNotFound) as error:
            locate_model(model)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_middleware_answers_400_or_hands_on_the_rewritten_body(reader):
    import asyncio
    import json

    from vipyloqwen_vllm.middleware import ViPyloQwenRequests

    seen = []

    async def app(scope, receive, send):  # stands for vLLM's app: records what it was handed
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message["body"], message.get("more_body", False)
        seen.append((scope["path"], dict(scope["headers"]), body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = ViPyloQwenRequests(app)
    middleware._reader = reader

    def call(path: str, body: bytes) -> list[dict]:
        scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"1")]}
        chunks = [{"type": "http.request", "body": body[:5], "more_body": True},
                  {"type": "http.request", "body": body[5:], "more_body": False}]  # fmt: skip
        sent = []

        async def receive():
            return chunks.pop(0)

        async def send(message):
            sent.append(message)

        asyncio.run(middleware(scope, receive, send))
        return sent

    sent = call("/v1/embeddings", json.dumps({"input": ["<ocrr> x"]}).encode())
    assert sent[0]["status"] == 400 and not seen
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == 400 and error["type"] == "BadRequestError" and "item 1 of 1" in error["message"]

    call("/v1/embeddings", json.dumps({"input": ["<ocr> Biển số"], "model": "m"}).encode())
    path, headers, body = seen.pop()
    assert json.loads(body) == reader.read({"input": ["<ocr> Biển số"], "model": "m"})
    assert headers[b"content-length"] == str(len(body)).encode()

    call("/v2/embed", json.dumps({"texts": ["Biển số"], "input_type": "search_document"}).encode())
    path, _, body = seen.pop()
    assert path == "/v2/embed" and json.loads(body)["inputs"][0]["content"] == [{"type": "text", "text": "Biển số"}]

    call("/v1/chat/completions", b'{"messages": []}')  # other routes: untouched
    assert seen.pop()[2] == b'{"messages": []}'

    for path in ("/score", "/v1/rerank", "/invocations"):  # routes that would embed without the reader
        sent = call(path, b'{"text_1": "a", "text_2": "b"}')
        error = json.loads(sent[1]["body"])["error"]
        assert sent[0]["status"] == 400 and f"POST {path} is not served" in error["message"]
        assert "POST /v1/embeddings" in error["message"] and not seen


def test_models_route_lists_the_widths_and_size(reader):
    import asyncio
    import json
    from types import SimpleNamespace

    from vipyloqwen_vllm.middleware import ViPyloQwenRequests

    card = {"id": "m", "object": "model", "max_model_len": 8523}

    async def app(scope, receive, send):  # vLLM's /v1/models answer, in two chunks
        body = json.dumps({"object": "list", "data": [card]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": body[:7], "more_body": True})
        await send({"type": "http.response.body", "body": body[7:]})

    middleware = ViPyloQwenRequests(app)
    middleware._reader = reader
    config = SimpleNamespace(model_config=SimpleNamespace(dtype="torch.float32"))
    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [], "app": SimpleNamespace(
        state=SimpleNamespace(vllm_config=config))}  # fmt: skip
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, None, send))
    (answer,) = json.loads(sent[1]["body"])["data"]
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
    assert answer == {
        **card,
        "embedding_size": 32,
        "matryoshka_dimensions": [],
        "tasks": reader.info.tasks,
        "max_images_per_item": 5,
        "max_image_tokens": 64,
        "max_text_tokens": 8192,
        "dtype": "float32",
    }


def test_cohere_input_types_follow_the_registry():
    """Each Cohere input_type maps to a registry task or role (never a prefix string), the choice MTEB makes."""
    from vipyloqwen_vllm.routes import COHERE_INPUT_TYPES

    from configuration_vipyloqwen import MTEB_PROMPTS, ROLE_PROMPTS, TASKS

    mteb_key = {
        "search_query": "Retrieval-query",
        "search_document": "Retrieval-document",
        "classification": "Classification",
        "clustering": "Clustering",
        "image": "document",
    }
    assert set(COHERE_INPUT_TYPES) == set(mteb_key)
    for input_type, task in COHERE_INPUT_TYPES.items():
        assert task in TASKS or task in ROLE_PROMPTS
        assert task == MTEB_PROMPTS[mteb_key[input_type]], input_type


def test_cohere_bodies_become_chat_items_of_the_same_reader(reader):
    from vipyloqwen_vllm.routes import read_cohere

    image = make_image(84, 56, seed=1)
    messages = reader.read(
        {
            "messages": [
                user({"type": "text", "text": "Biển số xe này là gì?"}),
                user({"type": "text", "text": ""}),
                user(image_part(data_url(image)), {"type": "text", "text": "Biển số"}),
            ],
            "task": "text_pair",
        }
    )["messages"]
    texts = read_cohere(reader, {"texts": ["Biển số xe này là gì?", ""], "input_type": "classification"})
    assert "input_type" not in texts and "texts" not in texts
    assert texts["inputs"] == [{"content": item[0]["content"]} for item in messages[:2]]
    inputs = read_cohere(
        reader,
        {
            "inputs": [{"content": [image_part(data_url(image)), {"type": "text", "text": "Biển số"}]}],
            "input_type": "classification",
            "embedding_types": ["float"],
        },
    )
    assert inputs["inputs"] == [{"content": messages[2][0]["content"]}] and inputs["embedding_types"] == ["float"]
    # search_query: no task, and a typed prefix still counts; a task name works as input_type too.
    query = read_cohere(reader, {"texts": ["<ocr> x"], "input_type": "search_query"})["inputs"]
    assert query == read_cohere(reader, {"texts": ["x"], "input_type": "ocr"})["inputs"]
    assert query[0]["content"][0] == {"type": "text", "text": "<ocr>"}
    images = read_cohere(reader, {"images": [data_url(image)], "input_type": "image"})["inputs"]
    assert [part["type"] for part in images[0]["content"]] == ["image_url"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"texts": ["a"], "input_type": "search"},
            r"unknown input_type 'search'; valid: search_query, search_document",
        ),
        ({"texts": ["a", "<ocrr> b"]}, r"^item 2 of 2 \(text '<ocrr> b'\): unknown task prefix <ocrr>"),
        ({"texts": ["a", 3]}, r"^item 2 of 2: expected a string, got int"),
        ({"texts": []}, r"^empty request: `texts` must be a non-empty list"),
        ({"texts": ["a"], "images": ["b"]}, r"^give exactly one of `texts`, `images` or `inputs`"),
        ({"texts": ["a"], "max_tokens": 5}, r"^`max_tokens` is not supported"),
        ({"texts": ["a"], "output_dimension": 8}, r"^`output_dimension` 8: this model declares no Matryoshka"),
        ({"inputs": [{"content": "a"}]}, r"^item 1 of 1: an `inputs` item is"),
    ],
)
def test_bad_cohere_bodies_name_the_item(reader, body, message):
    from vipyloqwen_vllm.routes import read_cohere

    with pytest.raises(RequestError, match=message):
        read_cohere(reader, body)


def test_pooling_bodies_are_read_as_embeddings(reader):
    from vipyloqwen_vllm.routes import read_pooling

    texts = {"input": ["<ocr> Biển số", ""], "model": "m"}
    assert read_pooling(reader, texts) == {**reader.read(texts), "task": "embed"}
    assert read_pooling(reader, {**texts, "task": "embed"}) == {**reader.read(texts), "task": "embed"}
    tasked = read_pooling(reader, {"input": ["Biển số"], "task": "ocr"})
    assert tasked == {"input": reader.read({"input": ["Biển số"], "task": "ocr"})["input"], "task": "embed"}
    one = user(image_part(data_url(make_image(seed=2))), {"type": "text", "text": "x"})
    assert read_pooling(reader, {"messages": one})["messages"] == reader.read({"messages": one})["messages"][0]
    with pytest.raises(RequestError, match=r"^/pooling takes one chat item per request .*got 2"):
        read_pooling(reader, {"messages": [one, one]})
    with pytest.raises(RequestError, match=r"^unknown task 'classify'; valid tasks: text_pair"):
        read_pooling(reader, {"input": ["x"], "task": "classify"})
