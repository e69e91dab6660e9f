"""Write a complete Hub-layout viPyloQwen checkpoint folder.

    python scripts/build_model.py --tiny --out build/tiny                          # offline, ~10M params
    python scripts/build_model.py --base Qwen/Qwen2-VL-2B-Instruct --out build/2b  # or a local folder

The folder holds config.json (with auto_map), the weights, the Hub code files, the tokenizer (with the five
task prefix tokens), the processor config and chat template, the Sentence-Transformers files and the model
card. Load it with SentenceTransformer(out, trust_remote_code=True) or AutoModel.from_pretrained(out,
trust_remote_code=True). Deterministic (for a given --seed with --tiny).

--base streams the base's safetensors shards into the output without loading the model: every backbone
tensor is copied bit for bit, in the base's dtype (bf16 for the 2B) and sharding (same shard files + index);
only the five task-token embedding rows and the projection are new. Peak memory is about 1.5 GB for the 2B
(measured: bench/build_bench.py, docs/training-recipe.md "Building the 2B init").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from configuration_vipyloqwen import DEFAULT_EMBED_DIM, DEFAULT_MAX_IMAGE_TOKENS
from vipyloqwen_tools.checkpoint.base import build_from_base
from vipyloqwen_tools.checkpoint.export import save_checkpoint, tiny


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--base", metavar="PATH_OR_ID", help="pretrained Qwen2-VL checkpoint (Hub id or local folder)")
    source.add_argument("--tiny", action="store_true", help="small random Qwen2-VL with the real vocabulary, offline")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--embed-dim", type=int, default=None, help=f"embedding width (default {DEFAULT_EMBED_DIM}; 32 with --tiny)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights of --tiny (default 0; --base draws nothing)"
    )
    parser.add_argument(
        "--max-image-tokens",
        type=int,
        default=None,
        help=f"default per-image token budget saved with the processor ({DEFAULT_MAX_IMAGE_TOKENS}; 64 with --tiny)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.embed_dim is not None and args.embed_dim <= 0:
        raise SystemExit(f"--embed-dim must be positive, got {args.embed_dim}")
    if args.max_image_tokens is not None and args.max_image_tokens <= 0:
        raise SystemExit(f"--max-image-tokens must be positive, got {args.max_image_tokens}")
    if args.base:
        try:
            report = build_from_base(
                args.base,
                args.out,
                args.embed_dim or DEFAULT_EMBED_DIM,
                args.max_image_tokens or DEFAULT_MAX_IMAGE_TOKENS,
            )
        except ValueError as error:
            raise SystemExit(f"build_model.py: {error}") from error
        print(
            f"wrote {report.out} ({report.parameters / 1e6:.1f}M parameters, {report.dtype}, {report.shards} shard(s), "
            f"{report.total_bytes / 1e9:.2f} GB; {report.copied} tensors copied bit for bit, dropped {report.dropped})"
        )
        return report.out
    model, processor = tiny(args.embed_dim or 32, args.seed, args.max_image_tokens or 64)
    out = save_checkpoint(model, processor, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({params / 1e6:.1f}M parameters, embed_dim {model.config.embed_dim})")
    return out


if __name__ == "__main__":
    main()
