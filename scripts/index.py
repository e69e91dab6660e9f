"""Index a corpus into an embedded vector database (LanceDB, on disk) and search it.

    python scripts/index.py build --model M --items ITEMS.jsonl --db DIR [--batch-size N] [--num-workers N] [--task T]
    torchrun --nproc_per_node N scripts/index.py build ...        # sharded: one process per GPU (or several on CPU)
    python scripts/index.py search --model M --db DIR [--text Q] [--image PATH ...] [--task T] [--top-k K] [--json]

Items: one JSON object per line, {"id": str, "text": str?, "images": [path, ...]?, "task": str?, ...metadata};
image paths are relative to the items file. Building into an existing db adds only ids it does not hold yet, so
rerunning an interrupted build resumes it. Rejected lines (bad JSON or schema, a missing or unreadable image, a
repeated id) go to DIR/rejects.jsonl (or --rejects) with their line numbers; the build goes on. See docs/index.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefetch_vipyloqwen import WORKER_TYPES  # noqa: E402
from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, report  # noqa: E402
from vipyloqwen_tools.index.store import DEFAULT_INDEX_MIN_ROWS, StoreError  # noqa: E402


def _workers(value: str) -> int | None:
    return None if value == "auto" else int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="embed an items JSONL file into a db folder (new or existing)")
    build.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    build.add_argument("--items", required=True, type=Path, help="items JSONL file")
    build.add_argument("--db", required=True, type=Path, help="db folder (created if new or empty)")
    build.add_argument("--batch-size", type=int, default=8, help="items per forward pass (default 8)")
    build.add_argument(
        "--num-workers", type=_workers, default=None, help="preprocessing workers per process (default auto)"
    )
    build.add_argument(
        "--worker-type",
        choices=WORKER_TYPES,
        default="auto",
        help="preprocessing workers: auto (default: threads on CPU, processes on GPU), process or thread",
    )
    build.add_argument("--task", help="task of items that name none (registry key or prefix token)")
    build.add_argument("--commit-every", type=int, default=1024, help="items per shard file (resume granularity)")
    build.add_argument("--rejects", type=Path, help="rejects file (default DIR/rejects.jsonl)")
    build.add_argument("--max-image-tokens", type=int, help="per-image token budget (default: the checkpoint's)")
    build.add_argument(
        "--index-min-rows",
        type=int,
        default=DEFAULT_INDEX_MIN_ROWS,
        help=f"build the IVF-PQ vector index from this many rows on (default {DEFAULT_INDEX_MIN_ROWS})",
    )
    build.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA if available; one GPU per rank)")

    search = commands.add_parser("search", help="query a db folder")
    search.add_argument("--model", help="checkpoint folder or Hub id (default: the model the db was built with)")
    search.add_argument("--db", required=True, type=Path)
    search.add_argument("--text", help="query text")
    search.add_argument("--image", action="append", default=[], help="query image path (repeat for several)")
    search.add_argument("--task", help="query task, e.g. ocr for a question about the image")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--where", help="SQL filter, e.g. \"json_get_string(metadata, 'lang') = 'vi'\"")
    search.add_argument("--exact", action="store_true", help="exact cosine ranking even with an ANN index")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.add_argument("--device")
    return parser.parse_args(argv)


def run_build(args: argparse.Namespace) -> int:
    from vipyloqwen_tools.index.build import build

    stats = build(
        args.model,
        args.items,
        args.db,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        task=args.task,
        commit_every=args.commit_every,
        rejects_path=args.rejects,
        max_image_tokens=args.max_image_tokens,
        index_min_rows=args.index_min_rows,
        device=args.device,
        worker_type=args.worker_type,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"db": str(args.db), **stats.__dict__}))
    return 0


def run_search(args: argparse.Namespace) -> int:
    from vipyloqwen_tools.index.search import Index

    if args.text is None and not args.image:
        raise SystemExit("search: give --text and/or --image")
    query = {"text": args.text, "images": args.image or None, "task": args.task}
    index = Index(args.db, args.model, args.device)
    hits = index.search(query, k=args.top_k, where=args.where, exact=args.exact)
    if args.json:
        print(json.dumps({"db": str(args.db), "model": index.model_name, "hits": hits}, ensure_ascii=False))
        return 0
    for rank, hit in enumerate(hits, start=1):
        extra = json.dumps(hit["metadata"], ensure_ascii=False) if hit["metadata"] else ""
        text = (hit["text"] or "").replace("\n", " ")
        shown = text[:60] + ("…" if len(text) > 60 else "")
        images = f" [{len(hit['images'])} image(s)]" if hit["images"] else ""
        print(f"{rank:3d}. {hit['score']:+.4f}  {hit['id']}  {shown}{images}  {extra}".rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_build(args) if args.command == "build" else run_search(args)
    except (StoreError, ModelSourceError, FileNotFoundError) as error:
        return report(error)  # one line, from the first process only under torchrun


if __name__ == "__main__":
    sys.exit(main())
