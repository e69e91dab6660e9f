"""Index a corpus into an embedded vector database (LanceDB, on disk), keep it in step with the corpus, search it.

    python scripts/index.py build --model M --items FOLDER --db DIR [--sync] [--write-items ITEMS.jsonl]
    python scripts/index.py build --model M --items ITEMS.jsonl --db DIR [--sync] [--batch-size N] [--task T]
    torchrun --nproc_per_node N scripts/index.py build ...        # sharded: one process per GPU (or several on CPU)
    python scripts/index.py search [--model M] --db DIR [--text Q] [--image PATH ...] [--task T] [--top-k K] [--json]
    python scripts/index.py delete --db DIR (--ids ID [ID ...] | --where SQL)
    python scripts/index.py optimize --db DIR [--keep-versions-days D] [--reindex]

Items: a folder (text files, images, PDFs page by page; ids are the relative paths), or an items file with one JSON
object per line, {"id": str, "text": str?, "images": [path or "doc.pdf#page=N", ...]?, "task": str?, ...metadata};
paths are relative to the items file. Building into an existing db compares each item's content fingerprint with
its row: new ids are added, changed ones re-embedded and replaced, unchanged ones skipped, and rerunning an
interrupted build resumes it; --sync also deletes the rows of ids the items no longer name. Rejected lines (bad
JSON or schema, a missing or unreadable image or PDF, a repeated id) go to DIR/rejects.jsonl (or --rejects) with
their line numbers; the build goes on. See docs/index.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from prefetch_vipyloqwen import WORKER_TYPES
from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, report
from vipyloqwen_tools.index.store import DEFAULT_INDEX_MIN_ROWS, DEFAULT_MAX_DELETE, StoreError


def _workers(value: str) -> int | None:
    return None if value == "auto" else int(value)


def _share(value: str) -> float:
    share = float(value)
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1 (0.5 = half the rows), got {value}")
    return share


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="embed a folder or an items JSONL file into a db folder (new or old)")
    build.add_argument("--model", required=True, help="checkpoint folder or Hub id")
    build.add_argument(
        "--items", required=True, type=Path, help="a folder (text files, images, PDFs) or an items JSONL file"
    )
    build.add_argument("--sync", action="store_true", help="also delete the rows of ids the items no longer name")
    build.add_argument(
        "--max-delete",
        type=_share,
        default=DEFAULT_MAX_DELETE,
        help=f"--sync refuses to delete more than this share of the rows (default {DEFAULT_MAX_DELETE})",
    )
    build.add_argument("--force", action="store_true", help="--sync deletes whatever share it must")
    build.add_argument("--write-items", type=Path, help="save the items of an --items folder as an items JSONL file")
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

    delete = commands.add_parser("delete", help="delete rows by id or by a SQL filter (one commit)")
    delete.add_argument("--db", required=True, type=Path)
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", nargs="+", help="ids to delete (absent ids are ignored)")
    which.add_argument("--where", help="SQL filter, e.g. \"json_get_string(metadata, 'path') = 'old/report.pdf'\"")

    optimize = commands.add_parser("optimize", help="compact the table after many updates; fold rows into indexes")
    optimize.add_argument("--db", required=True, type=Path)
    optimize.add_argument(
        "--keep-versions-days",
        type=float,
        help="remove the files of table versions older than this (default: LanceDB's 7 days; 0: only the latest, "
        "when no reader or writer is using the db)",
    )
    optimize.add_argument("--reindex", action="store_true", help="retrain the IVF-PQ vector index on the rows now")
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
        sync=args.sync,
        max_delete=args.max_delete,
        force=args.force,
        write_items=args.write_items,
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


def run_delete(args: argparse.Namespace) -> int:
    from vipyloqwen_tools.index.store import Store

    store = Store.open(args.db)
    if store.staged_files():
        raise StoreError(
            f"{args.db} has rows staged by an interrupted build ({len(store.staged_files())} shard files in "
            f"{store.staging}); finish it first (rerun the build), or its rows would come back after this delete"
        )
    deleted = store.delete_ids(args.ids) if args.ids else store.delete_where(args.where)
    store.manifest["rows"] = store.count()
    store.write_manifest()
    print(json.dumps({"db": str(args.db), "deleted": deleted, "rows_in_db": store.manifest["rows"]}))
    return 0


def run_optimize(args: argparse.Namespace) -> int:
    from vipyloqwen_tools.index.store import Store

    result = Store.open(args.db).optimize(args.keep_versions_days, args.reindex)
    print(json.dumps({"db": str(args.db), **result}))
    return 0


COMMANDS = {"build": run_build, "search": run_search, "delete": run_delete, "optimize": run_optimize}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (StoreError, ModelSourceError, FileNotFoundError) as error:
        return report(error)  # one line, from the first process only under torchrun


if __name__ == "__main__":
    sys.exit(main())
