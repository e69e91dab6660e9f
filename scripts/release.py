"""Turn a checkpoint into a verified Hugging Face Hub release (assemble -> verify -> upload).

    # offline: assemble + verify into a folder, upload nothing
    python scripts/release.py --checkpoint build/tiny --repo-id erax-ai/viPyloQwen --dry-run build/release
    # your fine-tune: a card written from the checkpoint's facts (base model, sizes, limits, rows trained)
    python scripts/release.py --checkpoint runs/mine/final --repo-id me/my-embedder --base-model erax-ai/viPyloQwen \\
        --eval-results runs/mteb --dry-run build/my-release
    # release: needs a write token (HF_TOKEN or `hf auth login`); checked before any work
    python scripts/release.py --checkpoint runs/final --repo-id erax-ai/viPyloQwen --tag v1.0 --eval-results runs/mteb

Step 1 assembles the folder (safetensors weights, config, tokenizer/processor files, chat template, the repo's
code files byte-identical, Sentence-Transformers files with the `requirements` entry, the model card: the
repository's README.md for erax-ai/viPyloQwen, one written for the model for any other repo id, or --card FILE).
Step 2 verifies it: static checks (the card's snippets load --repo-id; the inference limits are not below the base
model's), then SentenceTransformer + AutoModel load and encode one item per task and per modality in a fresh offline
interpreter with an empty module cache, and compare with the checkpoint's own embeddings. Step 3 uploads it in one
commit, tags it and prints the commit URL; a folder that failed verification is never uploaded. Exit status: 0
success, 1 verification failed, 2 any other error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from vipyloqwen_tools.checkpoint.limits import InferenceLimits
from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source
from vipyloqwen_tools.release.assemble import (
    DEFAULT_LANGUAGES,
    ReleaseError,
    assemble,
    check_repo_id,
    preflight,
    upload,
    verify,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--checkpoint", required=True, type=Path, help="checkpoint folder (build_model or training output)")
    add("--repo-id", required=True, help="Hub model repo, ORG/NAME (also used in the card's snippets)")
    add("--dry-run", metavar="OUT", type=Path, default=None, help="assemble + verify into OUT; no upload")
    add("--report", type=Path, default=None, help="also write the verification report (JSON) to this file")
    parser.add_argument("--tag", default=None, help="tag for the release commit, e.g. v1.0")
    parser.add_argument("--private", action="store_true", help="create the repo private (if it does not exist)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    parser.add_argument("--revision-message", default=None, help="commit message (default 'Release <tag>')")
    add("--eval-results", type=Path, default=None, help="eval/run_mteb.py's --output folder (or any folder under it "
        "down to results/<org>__<name>/<revision>): the card's evaluation tables")  # fmt: skip
    add("--card", type=Path, default=None, help="your own model card (Markdown with YAML front matter): released as "
        "written, and checked")  # fmt: skip
    add("--repository-card", action="store_true", help="release the repository's README.md as the card (the "
        "maintainers' card; the default for erax-ai/viPyloQwen), with --repo-id in its code")  # fmt: skip
    add("--base-model", default=None, help="Hub id of the model the checkpoint was fine-tuned from (the card's "
        "base_model; default: the training record's --model when it is a Hub id)")  # fmt: skip
    add("--train-config", type=Path, default=None, help="the run's train_config.json (default: beside the "
        "checkpoint, or in the run folder above final/ or checkpoint-<step>/)")  # fmt: skip
    add("--license", default="apache-2.0", help="licence of a written card (default: apache-2.0, the base's)")
    add("--language", nargs="+", default=None, help="languages of a written card (default: vi en zh)")
    add("--allow-reduced-limits", action="store_true", help="release a checkpoint whose inference limits (text / "
        "image tokens) are below its base model's, on purpose")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs embedding difference (default 1e-5)")
    parser.add_argument("--no-reference", action="store_true", help="skip comparing with the checkpoint's embeddings")
    return parser.parse_args(argv)


def base_limits_of(checkpoint: Path, train_config: Path | None) -> InferenceLimits | None:
    """The base model's inference limits from the run's training record (None without one: nothing to compare)."""
    from vipyloqwen_tools.release.facts import checkpoint_facts

    limits = checkpoint_facts(checkpoint, train_config).base_limits()
    if limits is None:
        print("inference limits: no training record with the base model's limits; compared with nothing")
    return limits


def run(args: argparse.Namespace) -> int:
    check_model_source(args.checkpoint, "--checkpoint", local=True)  # before the token check and the assembly
    check_repo_id(args.repo_id)
    if args.tag and args.create_pr:
        raise ReleaseError("--tag with --create-pr: tag the merged commit instead")
    api = None
    if args.dry_run is None:
        api, who = preflight(args.repo_id, tag=args.tag)  # fail fast, before minutes of assembling
        print(f"token OK: {who.get('name')} can write to {args.repo_id.split('/')[0]}")
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-release-") as tmp:
        out = args.dry_run or Path(tmp) / "release"
        folder = assemble(
            args.checkpoint, out, repo_id=args.repo_id, eval_dir=args.eval_results, card=args.card,
            repository_card_=args.repository_card, base_model=args.base_model, train_config=args.train_config,
            license=args.license, languages=args.language or DEFAULT_LANGUAGES,
        )  # fmt: skip
        print(f"assembled {folder}")
        base_limits = base_limits_of(args.checkpoint, args.train_config)
        report = verify(
            folder, reference=None if args.no_reference else args.checkpoint, tolerance=args.tolerance,
            repo_id=args.repo_id, base_limits=base_limits, allow_reduced_limits=args.allow_reduced_limits,
        )  # fmt: skip
        keys = ("max_abs_diff", "reference_max_abs_diff", "load_check_s", "timings_s")
        summary = {k: report.details.get(k) for k in keys}
        print(f"verification: {json.dumps(summary)}")
        if args.report:
            report.save(args.report)
        if not report.ok:
            print("verification FAILED, nothing uploaded:", file=sys.stderr)
            for problem in report.problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        print(f"verification passed: {len(report.details.get('items', []))} items, both loading paths agree")
        if api is None:
            print(f"dry run: {folder} is ready; nothing uploaded")
            return 0
        url = upload(report, args.repo_id, api, tag=args.tag, private=args.private or None,
                     create_pr=args.create_pr, message=args.revision_message)  # fmt: skip
        print(f"uploaded: {url}" + (f" (tag {args.tag})" if args.tag else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ReleaseError, ModelSourceError) as exc:
        print(f"release error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
