"""The project's import graph: no circle among its own modules, and the rooms depend one way.

The graph is read from the source (every ``import`` statement, function-level ones included: a lazy import hides a
circle from Python, not from the design). Layers, lowest first: the Hub files, ``vipyloqwen_tools.checkpoint`` /
``.data``, ``.train`` / ``.plan`` / ``.index`` / ``.mine``, ``.release``, then the entry points (scripts, bench, eval,
tests).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_SKIP = {"build", "out", "runs", "node_modules"}  # build outputs at the repository root
SKIP = {".git", "fixtures", "__pycache__"}


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the repository (a package's __init__ is the package)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        folders = relative.parts[:-1]
        if folders and (folders[0] in TOP_SKIP or folders[0].startswith(".venv")):
            continue
        if any(part in SKIP for part in folders):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (absolute and relative; a ``from pkg import sub`` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule; ``from mod import name`` imports mod
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in modules:  # the longest project module that the name starts with
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int | None:
    """0: Hub files; 1: checkpoint, data; 2: train, plan, index, mine; 3: release, eval; None: scripts, bench, tests,
    train_st.py (entry points: they may import anything)."""
    if module.endswith("_vipyloqwen") and "." not in module:
        return 0
    parts = module.split(".")
    if parts[0] == "eval":
        return 3
    if parts[0] != "vipyloqwen_tools" or len(parts) < 2:
        return None
    return {"checkpoint": 1, "data": 1, "train": 2, "plan": 2, "index": 2, "mine": 2, "release": 3}.get(parts[1])


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("from .a import f\n")
    folder = tmp_path / "pkg"
    modules = {"pkg": folder / "__init__.py", "pkg.a": folder / "a.py", "pkg.b": folder / "b.py"}
    edges = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"} and edges["pkg"] == set()
    assert circles(edges) == [["pkg.a", "pkg.b"]]


def test_no_import_circle():
    edges = graph()
    assert "vipyloqwen_tools.train.run" in edges and edges["vipyloqwen_tools.train.run"], "graph not read"
    found = circles(edges)
    assert not found, "import circles among the project's modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_rooms_depend_one_way():
    wrong = []
    for module, targets in graph().items():
        own = layer(module)
        if own is None:
            continue
        for target in targets:
            theirs = layer(target)
            if theirs is None or theirs > own:
                wrong.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    assert not wrong, "imports against the dependency direction:\n" + "\n".join(sorted(wrong))


def room(module: str) -> str:
    """A module's room: ``vipyloqwen_tools.<room>``, a top-level folder (eval, bench, scripts, serving, tests) or
    module (train_st), or ``hub`` for the Hub files."""
    parts = module.split(".")
    if parts[0] == "vipyloqwen_tools":
        return ".".join(parts[:2])
    if len(parts) == 1 and module.endswith("_vipyloqwen"):
        return "hub"
    return parts[0]


def room_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in edges.items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    return rooms


def test_room_level_loops_are_caught(tmp_path):
    edges = {"vipyloqwen_tools.train.run": {"vipyloqwen_tools.plan.planner"},
             "vipyloqwen_tools.plan.cli": {"vipyloqwen_tools.train.config"},
             "vipyloqwen_tools.plan.planner": set(), "vipyloqwen_tools.train.config": set()}
    assert circles(edges) == []  # no module circle ...
    assert circles(room_graph(edges)) == [["vipyloqwen_tools.plan", "vipyloqwen_tools.train"]]  # ... but a room loop


def test_no_room_loop():
    """Rooms (subpackages, top-level folders) depend one way too: no loop even through different modules."""
    found = circles(room_graph(graph()))
    assert not found, "loops among rooms:\n" + "\n".join(" <-> ".join(c) for c in found)


def packaged(module: str) -> bool:
    """The library ``pip install`` ships: ``vipyloqwen_tools`` and the pyproject's py-modules (the Hub files). The
    entry-point folders eval/ and bench/ are installed too, only so that their scripts import their siblings; they
    are not library code."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    py_modules = set(config["tool"]["setuptools"].get("py-modules", []))
    return module.split(".")[0] == "vipyloqwen_tools" or module in py_modules


def test_packaged_code_imports_only_packaged_code():
    """The library must not need the entry-point folders (eval/, bench/, scripts/)."""
    wrong = [f"{module} imports {target}" for module, targets in graph().items() if packaged(module)
             for target in targets if not packaged(target)]
    assert not wrong, "packaged modules importing unpackaged ones:\n" + "\n".join(sorted(wrong))


def test_the_top_of_the_package_stays_small():
    top = sorted(p.name for p in (ROOT / "vipyloqwen_tools").glob("*.py"))
    assert top == ["__init__.py", "moved.py"], top  # moved: the old import paths, one release


def test_old_index_search_path_still_works_with_a_deprecation_warning():
    import importlib
    import sys
    import warnings

    sys.modules.pop("vipyloqwen_tools.index_search", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("vipyloqwen_tools.index_search")
    from vipyloqwen_tools.index import Index

    assert old.Index is Index
    assert any(issubclass(w.category, DeprecationWarning) and "vipyloqwen_tools.index.search" in str(w.message)
               for w in caught), [str(w.message) for w in caught]


def test_old_build_path_still_works_with_a_deprecation_warning():
    """vipyloqwen_tools.build (renamed checkpoint) resolves to the same module objects, warning once per import."""
    import importlib
    import sys
    import warnings

    for name in ("vipyloqwen_tools.build.export", "vipyloqwen_tools.build.checkpoint_files", "vipyloqwen_tools.build"):
        sys.modules.pop(name, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old_export = importlib.import_module("vipyloqwen_tools.build.export")
        old_files = importlib.import_module("vipyloqwen_tools.build.checkpoint_files")
    from vipyloqwen_tools.checkpoint import export, files

    assert old_export is export and old_files is files
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("vipyloqwen_tools.checkpoint.files" in m for m in messages), messages
    assert not (ROOT / "vipyloqwen_tools" / "build").exists()


@pytest.mark.slow
def test_every_entry_point_imports():
    """train_st.py and every file of scripts/, bench/ and eval/ load (module level only) in one fresh process, each as
    ``python <folder>/<file>.py`` from the repository root sees it: its own folder first on sys.path and the
    repository root not on it, so the project (Hub files, vipyloqwen_tools, eval, bench) comes from the editable
    install, not from a sys.path.insert."""
    import os
    import subprocess
    import sys

    folders = ("scripts", "bench", "eval")
    files = [ROOT / "train_st.py"]
    files += [path for folder in folders for path in sorted((ROOT / folder).glob("*.py")) if path.stem != "__init__"]
    # Module level runs; imports inside functions (``from scripts.build_model import main`` in demo.py's main) are
    # resolved with find_spec under the same sys.path, so a folder the editable install lacks fails here too.
    code = (
        "import ast, importlib.util, os, runpy, sys\n"
        "root = sys.argv[1]\n"
        "rest = [p for p in sys.path if p not in ('', root)]\n"
        "missing = []\n"
        "for path in sys.argv[2:]:\n"
        "    sys.path[:] = [os.path.dirname(path), *rest]\n"
        "    runpy.run_path(path, run_name='__entry_point_check__')\n"
        "    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):\n"
        "        if isinstance(node, ast.Import):\n"
        "            names = [alias.name for alias in node.names]\n"
        "        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:\n"
        "            names = [node.module]\n"
        "        else:\n"
        "            continue\n"
        "        for name in names:\n"
        "            if name.split('.')[0] in ('scripts', 'bench', 'eval', 'vipyloqwen_tools'):\n"
        "                try:\n"
        "                    found = importlib.util.find_spec(name) is not None\n"
        "                except ImportError:\n"
        "                    found = False\n"
        "                if not found:\n"
        "                    missing.append(f'{path}: {name}')\n"
        "if missing:\n"
        "    sys.exit('not importable as the script runs:\\n' + '\\n'.join(missing))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code, str(ROOT), *map(str, files)], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # serve_bench.py imports the vLLM plugin's client from serving/, a package of its own venv (not installed in
    # .venv); train_st.py is run from its own folder, the repository root, where the insert is a no-op.
    allowed = {"bench/serve_bench.py", "train_st.py"}
    inserting = {str(p.relative_to(ROOT)) for p in files if "sys.path.insert" in p.read_text(encoding="utf-8")}
    assert inserting <= allowed, sorted(inserting - allowed)
