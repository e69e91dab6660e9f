"""The command-line parser every eval/ script starts from: its name, the first paragraph of its docstring as the
description, and an example command as the epilog (``--help`` prints them as written).

Example::

    >>> parser = eval_parser("compare.py", __doc__, "python eval/compare.py runs/mteb baselines/e5")
    >>> parser.add_argument("paths", nargs="+")
"""

from __future__ import annotations

import argparse


def eval_parser(prog: str, doc: str | None, example: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` for ``prog``: description ``doc``'s first paragraph, epilog ``Example:`` + ``example``."""
    return argparse.ArgumentParser(
        prog=prog,
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Example:\n  {example}",
    )
