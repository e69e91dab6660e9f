"""Every code block of README.md and docs/*.md runs as written, offline, on the tiny model.

A block runs with the Hub id swapped for the tiny checkpoint, in a scratch folder that sees the repository's files
(links) and holds the image files and the ``my-index`` db the block names. ``python`` blocks run in this process
(their tracebacks name the Markdown file and line), ``bash`` blocks in ``bash -euo pipefail`` with the venv first
on PATH. A block that cannot run on its own offline carries ``<!-- not run: <reason> -->`` on the line before its
opening fence and is skipped with that reason. Blocks of data (``text``, ``bibtex``, ...) are not programs.

Adding a docs page or a block needs nothing here: the files are found by glob, each block is a test named
``<file>:<line>``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_image

from vipyloqwen_tools.release.assemble import CARD_SCREEN_LINES, DEFAULT_REPO_ID, SOURCE_REPOSITORY

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("python", "bash")
DATA = ("text", "bibtex", "yaml", "json", "jsonl", "toml")  # shown, not run: a listing, a citation, a config
NOT_RUN = re.compile(r"^<!--\s*not run:(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)```(.*)$")
IMAGE_NAME = re.compile(r"(?<![\w/:.-])((?:[\w-]+/)*[\w-]+\.(?:png|jpe?g|webp|gif|bmp|tiff?))\b", re.I)
SCREEN_LINES = CARD_SCREEN_LINES  # the README's "first screen": lines after the YAML front matter
# Repository entries a scratch folder does not link: what a block writes there stays in the scratch folder.
NOT_LINKED = {".git", ".venv", "build", "runs", "my-index"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    not_run: str | None  # the reason given in <!-- not run: ... -->, or None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the ``not run`` mark of the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start, language = index, opening.group(2).strip()
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"{path.relative_to(ROOT)}:{start + 1}: code block never closed")
        mark = NOT_RUN.match(lines[start - 1].strip()) if start else None
        indent = len(opening.group(1))
        code = "\n".join(line[indent:] for line in lines[start + 1 : end]) + "\n"
        blocks.append(Block(path, start + 1, language, code, mark.group(1).strip() if mark else None))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for document in DOCUMENTS for block in code_blocks(document)]


def _params(language: str) -> list:
    # A bash block starts processes (seconds each): the slow tier runs them (make test-all).
    marks = [pytest.mark.slow] if language == "bash" else []
    return [pytest.param(block, id=block.where, marks=marks) for block in ALL_BLOCKS if block.language == language]


def test_every_block_says_what_it_is():
    """A block is a program this test runs (python, bash), data (text, bibtex, ...), or marked with the reason it is
    not run; an unlabelled block that is not marked could be a program nobody runs."""
    problems = []
    for block in ALL_BLOCKS:
        if block.language not in PROGRAMS + DATA and block.not_run is None:
            problems.append(
                f"{block.where}: code block language {block.language!r}: use one of {PROGRAMS + DATA} "
                "(python and bash blocks run in tests/test_snippets.py), or mark it <!-- not run: <reason> -->"
            )
        if block.not_run is not None and not block.not_run:
            problems.append(f"{block.where}: <!-- not run: --> without a reason")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def my_index(tmp_path_factory, tiny_checkpoint: Path) -> Path:
    """The ``my-index`` db the README's search snippets open, as its build command would make it (built once)."""
    from vipyloqwen_tools.index.build import build

    folder = tmp_path_factory.mktemp("my-index")
    rows = [
        {"id": "c1", "text": "Điều khoản bảo mật: bên B giữ bí mật thông tin khách hàng.", "source": "contracts"},
        {"id": "c2", "text": "Điều khoản thanh toán trong 30 ngày.", "source": "contracts"},
        {"id": "p1", "text": "Chính sách đổi trả hàng.", "source": "policies"},
        {"id": "car", "text": "Xe hơi thể thao màu đỏ", "images": ["car.jpg"], "source": "photos"},
    ]
    make_image(120, 90, seed=7).save(folder / "car.jpg")
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    build(str(tiny_checkpoint), items, folder / "my-index", log=lambda message: None)
    return folder / "my-index"


def _tracked_files() -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file git tracks (empty outside a git checkout)."""
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    names = done.stdout.decode("utf-8", "replace").split("\0") if done.returncode == 0 else []
    stats = {}
    for name in filter(None, names):
        path = ROOT / name
        if path.is_file():
            stat = path.stat()
            stats[name] = (stat.st_mtime_ns, stat.st_size)
    return stats


@pytest.fixture
def scratch(tmp_path: Path, tiny_checkpoint: Path, my_index: Path):
    """A folder that sees the repository's files (links), the venv and ``my-index``, where a block may write; a
    block that writes into the repository itself (through a link) fails, naming the files."""
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED:
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    shutil.copytree(my_index, tmp_path / "my-index")  # a copy: a block may add to it
    before = _tracked_files()
    yield tmp_path
    after = _tracked_files()
    touched = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not touched, f"the block wrote into the repository (scripts write there only when asked): {touched[:10]}"


def _prepare(block: Block, scratch: Path, checkpoint: Path) -> str:
    """The block's code with the Hub id swapped for the tiny checkpoint; the files it names created."""
    code = block.code.replace(DEFAULT_REPO_ID, str(checkpoint))
    for seed, name in enumerate(dict.fromkeys(IMAGE_NAME.findall(code))):
        target = scratch / name
        if target.exists() or Path(name).is_absolute() or ROOT in target.resolve().parents:
            continue  # there already, not ours to make, or inside the repository (through a link): never written
        target.parent.mkdir(parents=True, exist_ok=True)
        make_image(96 + 8 * seed, 72 + 4 * seed, seed=seed).save(target)
    return code


@pytest.mark.parametrize("block", _params("python"))
def test_python_block(block: Block, scratch: Path, tiny_checkpoint: Path, monkeypatch):
    if block.not_run is not None:
        pytest.skip(f"{block.where}: not run: {block.not_run}")
    code = _prepare(block, scratch, tiny_checkpoint)
    monkeypatch.chdir(scratch)
    # Blank lines before the code: a traceback names the Markdown file and its line numbers.
    compiled = compile("\n" * block.line + code, block.where.split(":")[0], "exec")
    try:
        exec(compiled, {"__name__": "__snippet__"})
    except Exception as error:  # noqa: BLE001 - reported with the block's place
        details = "".join(traceback.format_exception(error)[-6:])
        pytest.fail(
            f"{block.where}: this python block fails as written (Hub id -> tiny model): "
            f"{type(error).__name__}: {error}\n{details}\nFix the block, or mark it on the line before with "
            "<!-- not run: <reason> -->",
            pytrace=False,
        )


@pytest.mark.parametrize("block", _params("bash"))
def test_bash_block(block: Block, scratch: Path, tiny_checkpoint: Path):
    if block.not_run is not None:
        pytest.skip(f"{block.where}: not run: {block.not_run}")
    code = _prepare(block, scratch, tiny_checkpoint)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=scratch, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (
        f"{block.where}: this bash block fails as written (Hub id -> tiny model), exit {done.returncode}:\n"
        f"{done.stderr[-3000:]}\nFix the block, or mark it on the line before with <!-- not run: <reason> -->"
    )


# ------------------------------------------------------------------------------------------- the front door


def _front_screen() -> tuple[str, int]:
    """The README's first screen: ``SCREEN_LINES`` lines after the YAML front matter, and its first line number."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "---", "README.md starts with the card's YAML front matter"
    after = lines.index("---", 1) + 1
    return "\n".join(lines[after : after + SCREEN_LINES]), after + 1


def test_readme_front_screen_has_install_quick_start_commands_and_offline_path():
    screen, first = _front_screen()
    where = f"README.md lines {first}-{first + SCREEN_LINES - 1} (the first screen after the metadata)"
    assert re.search(r"^# viPyloQwen\n\n\S.*\n", screen, re.M), f"{where}: title and a one-sentence description"
    assert re.search(r"`pip install [^`]*sentence-transformers[^`]*`", screen), f"{where}: no install line"
    quick = [b for b in code_blocks(ROOT / "README.md") if b.language == "python"][0]
    assert quick.line < first + SCREEN_LINES and quick.not_run is None, f"{where}: the quick start is not on it"
    statements = [line for line in quick.code.splitlines() if line.strip()]
    assert len(statements) <= 3 and DEFAULT_REPO_ID in quick.code, f"{quick.where}: the 3-line quick start"
    for command in ("make demo", "make test"):
        said = re.search(rf"^{command}\s+#(.+)$", screen, re.M)
        assert said, f"{where}: no `{command}` line with what it does"
        assert re.search(r"\d+ min", said.group(1)) and "2 " in said.group(1), f"{where}: `{command}`: how long"
    full = re.search(r"^make test-all\s+#(.+)$", screen, re.M)  # the full suite, named beside the quick tier
    assert full and "CI" in full.group(1), f"{where}: no `make test-all` line saying it is the full suite CI runs"
    assert f"]({SOURCE_REPOSITORY})" in screen, f"{where}: no link to the source repository"
    assert "scripts/build_model.py --tiny" in screen and "tests/test_snippets.py" in screen, (
        f"{where}: how to run the snippets offline on the tiny model"
    )


def test_unmarked_failing_block_is_reported_with_its_file_and_line(tmp_path, tiny_checkpoint, monkeypatch):
    """The failure a newly added broken block gets: the file and line of its fence."""
    page = ROOT / "docs" / "_snippet_probe.md"  # parsed from a temporary file, never written into the repo
    text = "# probe\n\n```python\nprint(img)\n```\n\n<!-- not run: needs a GPU -->\n```bash\nnvidia-smi\n```\n"
    text += "\n```bash\necho about to fail\nfalse\n```\n"
    source = tmp_path / "probe.md"
    source.write_text(text, encoding="utf-8")
    blocks = code_blocks(source)
    blocks = [Block(page, b.line, b.language, b.code, b.not_run) for b in blocks]
    assert [(b.line, b.language, b.not_run) for b in blocks] == [
        (3, "python", None),
        (8, "bash", "needs a GPU"),
        (12, "bash", None),
    ]
    with pytest.raises(pytest.fail.Exception, match=r"docs/_snippet_probe.md:3: this python block fails.*NameError"):
        test_python_block(blocks[0], tmp_path, tiny_checkpoint, monkeypatch)
    with pytest.raises(pytest.skip.Exception, match=r"docs/_snippet_probe.md:8: not run: needs a GPU"):
        test_bash_block(blocks[1], tmp_path, tiny_checkpoint)
    with pytest.raises(AssertionError, match=r"docs/_snippet_probe.md:12: this bash block fails as written.*exit 1"):
        test_bash_block(blocks[2], tmp_path, tiny_checkpoint)
