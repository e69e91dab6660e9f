"""Generated parts of README.md (the model card) and docs/evaluation.md: tables from the task registry.

    python -m vipyloqwen_tools.release.readme            # rewrite the generated blocks in place
    python -m vipyloqwen_tools.release.readme --check    # exit 1 (and name the files) when a block is stale
    python -m vipyloqwen_tools.release.readme --help

The blocks are the text between ``<!-- tasks:start -->`` / ``<!-- tasks:end -->`` (README.md) and
``<!-- mteb-prompts:start -->`` / ``<!-- mteb-prompts:end -->`` (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from configuration_vipyloqwen import MTEB_PROMPTS, TASKS, st_prompts

README = Path(__file__).resolve().parents[2] / "README.md"
EVALUATION_DOC = README.parent / "docs" / "evaluation.md"


def tasks_table() -> str:
    """Markdown table of the registry: prompt name, prefix token, inputs, loss recipe, description."""
    rows = [
        "| prompt_name / task | prefix token | query side | document side | training loss | use it for |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in TASKS.values():
        rows.append(
            f"| `{spec.name}` | `{spec.prefix}` | {spec.query} | {spec.document} | {spec.loss} | {spec.description} |"
        )
    return "\n".join(rows) + "\n"


def mteb_prompts_table() -> str:
    """Markdown table of :data:`MTEB_PROMPTS`: mteb key -> our task or role -> the prefix it puts on the text."""
    prompts = st_prompts()
    rows = ["| mteb key | our task / role | prefix |", "| --- | --- | --- |"]
    for key, name in MTEB_PROMPTS.items():
        prefix = f"`{prompts[name]}`" if prompts[name] else "none"
        rows.append(f"| `{key}` | `{name}` | {prefix} |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, name: str, content: str) -> str:
    """Replace the content between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + content + m.group(2), text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vipyloqwen_tools.release.readme",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--readme", type=Path, default=README, help="the model card (default: the repo's README.md)")
    parser.add_argument("--evaluation-doc", type=Path, default=EVALUATION_DOC, help="default: docs/evaluation.md")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a generated block is stale")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0: written or up to date; 1: stale (--check); 2: a file or its markers missing."""
    args = build_parser().parse_args(argv)
    stale = []
    for path, name, content in (
        (args.readme, "tasks", tasks_table()),
        (args.evaluation_doc, "mteb-prompts", mteb_prompts_table()),
    ):
        try:
            text = path.read_text(encoding="utf-8")
            new = replace_block(text, name, content)
        except (OSError, ValueError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 2
        if new == text:
            print(f"up to date: <!-- {name} --> in {path}")
        elif args.check:
            stale.append(f"{path} (<!-- {name} -->)")
        else:
            path.write_text(new, encoding="utf-8")
            print(f"updated <!-- {name} --> in {path}")
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m vipyloqwen_tools.release.readme", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
