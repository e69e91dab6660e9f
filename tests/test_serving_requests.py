"""serving/vipyloqwen_vllm request reading, without vLLM: the token ids and chat items it hands to vLLM are
what ``encode`` computes (same ids as ViPyloQwenProcessor), bad items are refused naming the item, and the
launcher builds the documented vLLM command. The server itself: tests/test_serving_vllm.py."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import pytest
from conftest import make_image, png_bytes
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serving"))

from vipyloqwen_vllm import check_vllm_version  # noqa: E402
from vipyloqwen_vllm.checkpoint import read_checkpoint  # noqa: E402
from vipyloqwen_vllm.middleware import reader_for  # noqa: E402
from vipyloqwen_vllm.requests import MAX_IMAGES_PER_ITEM, RequestError  # noqa: E402


@pytest.fixture(scope="module")
def reader(tiny_checkpoint, tmp_path_factory):
    return reader_for(str(tiny_checkpoint), allowed_local_media_path=str(tmp_path_factory.mktemp("media")))


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


def test_local_files_only_under_the_allowed_folder(reader, tmp_path):
    inside = Path(reader.allowed_local_media_path) / "page.png"
    make_image(60, 40, seed=2).save(inside)
    for url in (str(inside), f"file://{inside}"):
        body = reader.read(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
        )
        assert body["messages"][0][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    outside = tmp_path / "secret.png"
    make_image(60, 40).save(outside)
    with pytest.raises(RequestError, match=r"item 1 of 1, image 1: .* not an absolute path under the allowed folder"):
        reader.read(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(outside)}}]}]}
        )


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
    from vipyloqwen_vllm.serve import parse_args, vllm_command

    args, extra = parse_args([str(tiny_checkpoint), "--port", "8011", "--", "--max-num-seqs", "4"])
    command = vllm_command(args, extra, cuda=False)
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert flags["--model"] == str(tiny_checkpoint) and flags["--runner"] == "pooling" and flags["--port"] == "8011"
    assert flags["--host"] == "127.0.0.1" and flags["--chat-template-content-format"] == "openai"
    assert flags["--chat-template"] == str(tiny_checkpoint / "chat_template.jinja")
    assert flags["--mm-processor-kwargs"] == '{"max_image_tokens": 64, "min_image_tokens": 4}'
    assert flags["--limit-mm-per-prompt"] == '{"image": 5, "video": 0}'
    assert flags["--max-model-len"] == str(1 + 5 * 66 + 8192) == flags["--max-num-batched-tokens"]
    assert "--enforce-eager" in command and command[-2:] == ["--max-num-seqs", "4"]
    budget, _ = parse_args([str(tiny_checkpoint), "--max-image-tokens", "16"])
    assert '"max_image_tokens": 16' in vllm_command(budget, [], cuda=True)[command.index("--mm-processor-kwargs") + 1]
    assert "--enforce-eager" not in vllm_command(budget, [], cuda=True)


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

    call("/v1/chat/completions", b'{"messages": []}')  # other routes: untouched
    assert seen.pop()[2] == b'{"messages": []}'
