"""Mine hard negatives for a training file, with a false-negative filter (see docs/training.md "Negatives").

    python scripts/mine.py --model M --data IN.jsonl --out OUT.jsonl --num-negatives K \\
        [--relative-margin 0.05] [--absolute-margin X] [--range-min N] [--range-max N] [--corpus ITEMS.jsonl | --db DIR]
    torchrun --nproc_per_node N scripts/mine.py ...          # sharded like the index build; the same OUT as 1 process

Every row's query (task prefix, images) is scored against the candidate documents as training encodes them (the
model's own encode, ``--prefix-documents`` as in training): by default every distinct document of the row's task in
IN (positives and explicit negatives), or the items of ``--corpus`` (scripts/index.py's items schema), or a
``scripts/index.py`` database (``--db``; built with the same model). A document that is the same as the row's
positive, or as the positive of any row with the same query (same text after the encode path's normalisation,
same images by content), is never returned. ``--relative-margin m`` drops every candidate at or above
``s_p - |s_p| x m`` (``s_p``: the positive's score; 0.05 is NV-Retriever's 95% line), ``--absolute-margin a`` at or
above ``s_p - a``; ``--range-max`` considers only the best N remaining candidates, ``--range-min`` skips the first N
that pass the filters (Sentence-Transformers' ``mine_hard_negatives`` options and meanings). Then the K
highest-scoring candidates, hardest first.

OUT: every good line of IN once, as it was, plus ``"negatives": [document, ...]`` (the shape of ``positive``) and
``"negative_scores": [...]``; a row with fewer valid candidates gets fewer (none: its line as it was). Bad lines go
to ``--rejects`` (default ``OUT.rejects.jsonl``) with their line numbers and reasons, as ``train_st.py validate``
reports them. Pools of ``--ann-min-rows`` documents or more are searched with the LanceDB ANN (IVF-PQ), smaller
ones exactly. A killed run resumes from ``--work-dir`` (default ``OUT.work``) when started again with the same
command: no row is mined twice.

Exit status: 0 mined; 2 refused (a missing file or model, a work folder of other settings, a db of another model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, report
from vipyloqwen_tools.index.store import StoreError
from vipyloqwen_tools.mine import MineError, MineOptions, mine
from vipyloqwen_tools.mine.embed import DEFAULT_WINDOW
from vipyloqwen_tools.mine.search import DEFAULT_ANN_MIN_ROWS
from vipyloqwen_tools.mine.select import SAMPLING_STRATEGIES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a viPyloQwen checkpoint folder or Hub id")
    parser.add_argument("--data", required=True, type=Path, help="the training JSONL file (IN)")
    parser.add_argument("--out", required=True, type=Path, help="the mined JSONL file (OUT)")
    parser.add_argument("--num-negatives", required=True, type=int, help="K: negatives per row")
    parser.add_argument("--relative-margin", type=float, help="drop candidates at or above s_p - |s_p| x m")
    parser.add_argument("--absolute-margin", type=float, help="drop candidates at or above s_p - a")
    parser.add_argument("--max-score", type=float, help="drop candidates scoring above this")
    parser.add_argument("--min-score", type=float, help="drop candidates scoring below this")
    parser.add_argument("--range-min", type=int, default=0, help="skip the first N candidates that pass the filters")
    parser.add_argument("--range-max", type=int, help="consider only the N best candidates (default: all, exact)")
    parser.add_argument("--sampling-strategy", choices=SAMPLING_STRATEGIES, default="top")
    parser.add_argument("--seed", type=int, default=0, help="for --sampling-strategy random")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", type=Path, help="candidates from an items file (scripts/index.py's schema)")
    source.add_argument("--db", type=Path, help="candidates from a scripts/index.py database")
    parser.add_argument("--prefix-documents", action="store_true", help="as training's prefix_documents")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="text_pair rows below are not mined")
    parser.add_argument("--max-image-tokens", type=int, help="as training's max_image_tokens")
    parser.add_argument("--max-length", type=int, help="text tokens per item, as training's max_length")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, help="batch preparation workers (default: auto)")
    parser.add_argument("--num-proc", type=int, help="validation workers (default: the machine's cores)")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="rows per resumable unit of work")
    parser.add_argument("--ann-min-rows", type=int, default=DEFAULT_ANN_MIN_ROWS, help="ANN from this pool size on")
    parser.add_argument("--work-dir", type=Path, help="what a resumed run reuses (default OUT.work)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work folder (embeddings) at the end")
    parser.add_argument("--rejects", type=Path, help="bad lines of IN (default OUT.rejects.jsonl)")
    parser.add_argument("--stats", type=Path, help="also write the counts as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = MineOptions(
            num_negatives=args.num_negatives,
            range_min=args.range_min,
            range_max=args.range_max,
            relative_margin=args.relative_margin,
            absolute_margin=args.absolute_margin,
            max_score=args.max_score,
            min_score=args.min_score,
            sampling_strategy=args.sampling_strategy,
            seed=args.seed,
        )
        stats = mine(
            args.model,
            args.data,
            args.out,
            options,
            corpus=args.corpus,
            db=args.db,
            work_dir=args.work_dir,
            rejects=args.rejects,
            batch_size=args.batch_size,
            window=args.window,
            ann_min_rows=args.ann_min_rows,
            prefix_documents=args.prefix_documents,
            score_threshold=args.score_threshold,
            max_image_tokens=args.max_image_tokens,
            max_length=args.max_length,
            num_workers=args.num_workers,
            num_proc=args.num_proc,
            keep_work=args.keep_work,
        )
    except (MineError, StoreError, ModelSourceError, FileNotFoundError, ValueError) as error:
        return report(error)
    if args.stats and int(os.environ.get("RANK", "0")) == 0:
        args.stats.parent.mkdir(parents=True, exist_ok=True)
        args.stats.write_text(json.dumps(stats.__dict__, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
