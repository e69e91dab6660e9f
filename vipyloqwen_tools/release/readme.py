"""Generated parts of README.md (the model card): the tasks table comes from the registry.

python -m vipyloqwen_tools.release.readme          # rewrite the block between <!-- tasks:start/end -->
"""

from __future__ import annotations

import re
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


def main() -> None:
    for path, name, content in (
        (README, "tasks", tasks_table()),
        (EVALUATION_DOC, "mteb-prompts", mteb_prompts_table()),
    ):
        path.write_text(replace_block(path.read_text(encoding="utf-8"), name, content), encoding="utf-8")
        print(f"updated <!-- {name} --> in {path}")


if __name__ == "__main__":
    main()
