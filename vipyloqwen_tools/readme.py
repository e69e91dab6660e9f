"""Generated parts of README.md (the model card): the tasks table comes from the registry.

python -m vipyloqwen_tools.readme          # rewrite the block between <!-- tasks:start/end -->
"""

from __future__ import annotations

import re
from pathlib import Path

from configuration_vipyloqwen import TASKS

README = Path(__file__).resolve().parent.parent / "README.md"


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


def replace_block(text: str, name: str, content: str) -> str:
    """Replace the content between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- {name}:start --> ... <!-- {name}:end --> block")
    return pattern.sub(lambda m: m.group(1) + content + m.group(2), text)


def main() -> None:
    README.write_text(replace_block(README.read_text(encoding="utf-8"), "tasks", tasks_table()), encoding="utf-8")
    print(f"updated the tasks table in {README}")


if __name__ == "__main__":
    main()
