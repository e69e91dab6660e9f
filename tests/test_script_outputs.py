"""Scripts write into the repository only when asked: an output option (--out, --output, --workdir, ...) has no
default, or a default outside the repository (a temp folder), unless the script is a tool that regenerates
checked-in files, and then it has --check (exit 1 when stale, write nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_OPTIONS = {"--out", "--output", "--output-dir", "--workdir", "--work", "--db", "--cache-dir"}
FOLDERS = ("scripts", "bench", "eval", "vipyloqwen_tools")


def _output_defaults(path: Path) -> tuple[list[tuple[int, str, str]], bool]:
    """(line, option, default source) of every output option with a default; whether the file has --check."""
    found, has_check = [], False
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
                {"add_argument", "add"}):  # fmt: skip
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        has_check |= "--check" in names
        default = next((k.value for k in node.keywords if k.arg == "default"), None)
        if default is None or (isinstance(default, ast.Constant) and default.value is None):
            continue
        source = ast.unparse(default)
        if set(names) & OUTPUT_OPTIONS and "tempfile" not in source and "/tmp" not in source:
            found.append((node.lineno, names[0], source))
    return found, has_check


def test_output_options_default_outside_the_repository_or_the_tool_has_check():
    wrong = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            defaults, has_check = _output_defaults(path)
            if defaults and not has_check:
                where = path.relative_to(ROOT)
                wrong += [f"{where}:{line}: {name} default={source}" for line, name, source in defaults]
    assert not wrong, (
        "scripts must not write into the repository unless asked: drop these defaults (or use a temp folder), "
        "or give the tool a --check mode:\n" + "\n".join(wrong)
    )


def test_the_guard_sees_a_repository_default(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text('p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "x.json")\n')
    assert _output_defaults(script) == ([(1, "--out", "ROOT / 'bench' / 'results' / 'x.json'")], False)
    script.write_text('p.add_argument("--out", default=Path(tempfile.gettempdir()) / "x")\n')
    assert _output_defaults(script) == ([], False)
