"""Start vLLM's OpenAI-compatible server for a viPyloQwen checkpoint, in the foreground.

    vipyloqwen-serve build/tiny --port 8000                    # what `make serve MODEL=build/tiny PORT=8000` runs
    vipyloqwen-serve erax-ai/viPyloQwen --port 8000 -- --tensor-parallel-size 2   # after --: more vLLM flags

Flags given to vLLM's API server (``vllm serve``) (printed before it starts):

- ``--runner pooling`` (an embedding model: ``/v1/embeddings``), the plugin's pooling (MEAN over every token,
  the checkpoint's projection, L2 normalisation);
- ``--chat-template`` the checkpoint's embedding template (``chat_template.jinja``: prefix, images, text, no
  roles) with ``--chat-template-content-format openai`` (the parts in order, nothing inserted between them);
- ``--limit-mm-per-prompt`` 5 images, no video; ``--mm-processor-kwargs`` the per-image token budget from the
  checkpoint's ``processor_config.json`` (``--max-image-tokens`` overrides it);
- ``--max-model-len`` = task prefix + 5 images at the budget (+2 vision tokens each) + the checkpoint's
  ``max_text_tokens``, and ``--max-num-batched-tokens`` at least that (MEAN pooling needs each item in one step);
- ``--middleware vipyloqwen_vllm.middleware.ViPyloQwenRequests`` (reads requests as ``encode`` does);
- on a machine without CUDA: ``--enforce-eager`` and ``VLLM_CPU_KVCACHE_SPACE`` (GiB) 2 unless set.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .checkpoint import checkpoint_file, read_checkpoint
from .requests import MAX_IMAGES_PER_ITEM

MIDDLEWARE = "vipyloqwen_vllm.middleware.ViPyloQwenRequests"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint folder or Hub id")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--max-image-tokens", type=int, default=None, help="per-image token budget (default: checkpoint's)"
    )
    parser.add_argument(
        "--max-num-batched-tokens", type=int, default=None, help="tokens per engine step (default: max-model-len)"
    )
    parser.add_argument("--dtype", default="auto", help="weights dtype (default auto: the checkpoint's)")
    parser.add_argument("--allowed-local-media-path", default=None, help="folder requests may name image files in")
    parser.add_argument("--revision", default=None, help="Hub revision")
    parser.add_argument("--dry-run", action="store_true", help="print the vllm command and exit")
    return parser.parse_args(argv), extra


def vllm_command(args: argparse.Namespace, extra: list[str], cuda: bool) -> list[str]:
    """The ``vllm serve`` command line for ``args`` (see the module docstring)."""
    info = read_checkpoint(args.model, args.revision)
    max_image_tokens = args.max_image_tokens or info.max_image_tokens
    if max_image_tokens <= 0:
        raise SystemExit(f"--max-image-tokens must be positive, got {max_image_tokens}")
    min_image_tokens = min(info.min_image_tokens, max_image_tokens)
    max_model_len = 1 + MAX_IMAGES_PER_ITEM * (max_image_tokens + 2) + info.max_text_tokens
    batched = max(args.max_num_batched_tokens or max_model_len, max_model_len)
    command = [
        sys.executable,
        "-m",
        # vLLM's API server (what `vllm serve` runs; vllm-cpu's `vllm` command looks for a `vllm` distribution).
        "vllm.entrypoints.launchers.api_server.entry",
        "--model",
        args.model,
        "--runner", "pooling",
        "--host", args.host,
        "--port", str(args.port),
        "--dtype", args.dtype,
        "--chat-template", str(checkpoint_file(args.model, "chat_template.jinja", args.revision)),
        "--chat-template-content-format", "openai",
        "--limit-mm-per-prompt", json.dumps({"image": MAX_IMAGES_PER_ITEM, "video": 0}),
        "--mm-processor-kwargs",
        json.dumps({"max_image_tokens": max_image_tokens, "min_image_tokens": min_image_tokens}),
        "--max-model-len", str(max_model_len),
        "--max-num-batched-tokens", str(batched),
        "--middleware", MIDDLEWARE,
    ]  # fmt: skip
    if args.revision:
        command += ["--revision", args.revision]
    if args.allowed_local_media_path:
        command += ["--allowed-local-media-path", str(Path(args.allowed_local_media_path).resolve())]
    if not cuda:
        command.append("--enforce-eager")
    return command + extra


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    from . import check_vllm_version

    check_vllm_version()
    import torch

    cuda = torch.cuda.is_available()
    command = vllm_command(args, extra, cuda)
    if not cuda:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return
    print(
        f"viPyloQwen embeddings server for {args.model}: http://{args.host}:{args.port}/v1/embeddings "
        "(ready when vLLM logs 'Application startup complete')",
        flush=True,
    )
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
