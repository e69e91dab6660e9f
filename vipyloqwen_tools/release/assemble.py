"""Turn a checkpoint folder into a verified Hugging Face Hub release.

Three steps, each usable alone:

1. :func:`assemble` copies the checkpoint's safetensors weights, config, tokenizer, processor config and chat
   template into a release folder, adds the repo's own Hub code files (byte-identical), regenerates the
   Sentence-Transformers files from the registry (with the ``requirements`` entry) and writes the model card:
   the repo's README.md with YAML front matter and generated sections (tasks table, usage, input limits,
   evaluation table when eval results are given), each between ``<!-- NAME:start -->`` / ``<!-- NAME:end -->``
   markers (filled in place when the README has them, appended otherwise).
2. :func:`verify` checks the folder statically (file list, no pickle, no machine-local key or path in any JSON,
   code identical to the repo's, model card) and then loads it in a fresh interpreter with
   ``HF_HUB_OFFLINE=1`` and an empty ``HF_MODULES_CACHE`` (:mod:`vipyloqwen_tools.release.verify_child`).
3. :func:`upload` pushes a verified folder with huggingface_hub in one commit and tags it. It refuses a folder
   whose verification failed or that changed since it was verified. :func:`preflight` fails fast (short
   timeouts) on a malformed repo id, no token, no write access or an unreachable endpoint.

Example::

    >>> folder = assemble("build/tiny", "build/release", repo_id="erax-ai/viPyloQwen")
    >>> report = verify(folder, reference="build/tiny")
    >>> report.ok
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from configuration_vipyloqwen import TASKS, st_prompts
from vipyloqwen_tools.checkpoint.files import (
    HUB_CODE_FILES,
    MACHINE_LOCAL_KEYS,
    REPO_ROOT,
    SUPPORTED_VERSIONS,
    st_files,
    strip_machine_local_keys,
)
from vipyloqwen_tools.checkpoint.limits import InferenceLimits
from vipyloqwen_tools.release.card import (  # noqa: F401  (build_card, eval_section: re-exported)
    DEFAULT_LANGUAGES,
    DEFAULT_LICENSE,
    DEFAULT_REPO_ID,
    SOURCE_REPOSITORY,
    build_card,
    choose_card_kind,
    eval_section,
    fine_tune_card,
    repository_card,
)
from vipyloqwen_tools.release.facts import FactsError, checkpoint_facts, limit_problems
from vipyloqwen_tools.release.readme import replace_block, tasks_table

# Paths the card may name that a Hub download does not hold; naming any needs the source link on the first screen.
SOURCE_ONLY = ("scripts/", "train_st.py", "vipyloqwen_tools", "eval/", "bench/", "tests/", "Makefile", "make demo")
CARD_SCREEN_LINES = 40  # the card's first screen: this many lines after the YAML front matter
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
CORE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja")
# Released when the checkpoint has them (tokenizers from a base checkpoint may carry these), never required.
OPTIONAL_FILES = ("generation_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
REQUIRED_CARD_KEYS = ("license", "library_name", "pipeline_tag", "base_model", "language")
# JSON string values that look like a path on the saving machine (POSIX home/temp/work dirs, Windows drives).
LOCAL_PATH = re.compile(r"^(~/|/(home|root|tmp|var|work|Users|mnt|data|scratch|opt|private)/|[A-Za-z]:[\\/])")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0


class ReleaseError(RuntimeError):
    """A release step failed; the message says what and how to fix it."""


@dataclass
class VerificationReport:
    """Result of :func:`verify`. ``ok`` only when there are no problems; ``fingerprint`` pins the folder."""

    folder: Path
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.fingerprint)

    def save(self, path: str | Path) -> None:
        """Write the report as JSON (keep it next to the release folder, not inside it)."""
        data = {"folder": str(self.folder), "ok": self.ok, "problems": self.problems,
                "fingerprint": self.fingerprint, "details": self.details}  # fmt: skip
        Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> VerificationReport:
        """Read a report written by :meth:`save`."""
        data = _read_json(Path(path))
        return cls(Path(data["folder"]), data["problems"], data["details"], data["fingerprint"])


# ----------------------------------------------------------------------------------------- helpers
def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a valid ``ORG/NAME`` model id, else raise :class:`ReleaseError`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    problem = None
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        problem = "expected ORG/NAME (letters, digits, '-', '_', '.'; each part at most 96 characters)"
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as exc:
            problem = str(exc)
        if problem is None and (repo_id.endswith(".git") or any(p.strip(".") == "" for p in repo_id.split("/"))):
            problem = "a part is only dots or ends in .git"
    if problem:
        raise ReleaseError(f"malformed repo id {repo_id!r}: {problem}")
    return repo_id


def weight_files(folder: Path) -> list[str]:
    """The safetensors weight files of a checkpoint: ``model.safetensors`` or the shards of its index."""
    if (folder / WEIGHTS_INDEX).is_file():
        index = json.loads((folder / WEIGHTS_INDEX).read_text(encoding="utf-8"))
        return [WEIGHTS_INDEX, *sorted(set(index["weight_map"].values()))]
    return [WEIGHTS_FILE]


# Markdown links and images: [text](target "title") / ![alt](<target with spaces>).
CARD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")


def card_files(card: str) -> list[str]:
    """Repo-relative files the model card links to or shows (``docs/performance.png``, ``docs/index.md``): they
    ship with the release, or their links and images would be broken on the Hub. URLs, in-page anchors and
    ``#fragments`` are not files."""
    files = set()
    for bracketed, bare in CARD_LINK.findall(card):
        path = (bracketed or bare).split("#", 1)[0].split("?", 1)[0]
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path, re.I) or path.startswith("/"):
            continue  # in-page anchor, URL / mailto:, or site-absolute link
        if ".." in Path(path).parts:  # would resolve outside the release folder on the Hub (and when copied)
            raise ReleaseError(f"README.md links {path}: a released card may only link files inside the repo")
        files.add(Path(path).as_posix())
    return sorted(files)


def expected_files(folder: Path, embed_dim: int) -> set[str]:
    """Relative paths a release folder must hold (optional extras are checked separately): the code, weights
    and configs, the model card and the files the card links to."""
    card = folder / "README.md"
    try:
        linked = card_files(card.read_text(encoding="utf-8")) if card.is_file() else []
    except ReleaseError:  # a link out of the repo: reported by the card check (_card_problems)
        linked = []
    return {
        *CORE_FILES,
        *HUB_CODE_FILES,
        *weight_files(folder),
        *st_files(embed_dim),
        "README.md",
        *linked,
    }


def folder_files(folder: Path) -> list[str]:
    """All files under ``folder`` as sorted POSIX relative paths (hidden files included)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def fingerprint(folder: Path) -> str:
    """Hash of every file's path, size and mtime: changes when a file is added, removed or rewritten."""
    digest = hashlib.sha256()
    for rel in folder_files(folder):
        stat = (folder / rel).stat()
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------------------- model card
def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a Markdown file with optional ``---`` YAML front matter."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            metadata = yaml.safe_load(text[4:end]) or {}
            if not isinstance(metadata, dict):
                raise ReleaseError("README front matter is not a YAML mapping")
            return metadata, text[end + 5 :]
    return {}, text


# ----------------------------------------------------------------------------------------- step 1
def assemble(
    checkpoint: str | Path,
    out: str | Path,
    repo_id: str = DEFAULT_REPO_ID,
    eval_dir: str | Path | None = None,
    readme: str | Path | None = None,
    card: str | Path | None = None,
    repository_card_: bool = False,
    base_model: str | None = None,
    train_config: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    languages: list[str] | tuple[str, ...] = DEFAULT_LANGUAGES,
) -> Path:
    """Build the release folder ``out`` from ``checkpoint`` (a build_model or training output folder).

    ``out`` must not exist or be empty. Checkpoint files outside the release layout (trainer state, optimizer,
    logs) are left out and listed on stdout. Raises :class:`ReleaseError` when the checkpoint has no safetensors
    weights (pickle weights are never released) or lacks a required file.

    The card (:mod:`.card`): ``card`` (a file, released as written), the repository's ``readme`` for the
    maintainers' repo id or ``repository_card_``, else one written for the fine-tune from the checkpoint's facts
    (``base_model``, ``train_config``: :mod:`.facts`; ``license`` and ``languages`` for its front matter).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / "config.json").is_file():
        raise ReleaseError(f"{checkpoint} is not a checkpoint folder (no config.json)")
    if out.resolve() == checkpoint.resolve() or checkpoint.resolve() in out.resolve().parents:
        raise ReleaseError(f"--dry-run/output folder {out} must be outside the checkpoint {checkpoint}")
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"output folder {out} is not empty: give a new or empty folder")
    weights = [name for name in weight_files(checkpoint) if (checkpoint / name).is_file()]
    if WEIGHTS_FILE not in weights and WEIGHTS_INDEX not in weights:
        pickles = [p.name for p in checkpoint.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found pickle files {pickles}: re-save with safe_serialization=True)" if pickles else ""
        raise ReleaseError(f"{checkpoint} has no safetensors weights{hint}")
    missing = [n for n in (*weight_files(checkpoint), *CORE_FILES) if not (checkpoint / n).is_file()]
    if missing:
        raise ReleaseError(f"{checkpoint} lacks {missing}")

    out.mkdir(parents=True, exist_ok=True)
    copied = [*weight_files(checkpoint), *CORE_FILES, *(n for n in OPTIONAL_FILES if (checkpoint / n).is_file())]
    for name in copied:
        shutil.copyfile(checkpoint / name, out / name)
    for name in HUB_CODE_FILES:
        source = checkpoint / name
        if source.is_file() and _sha256(source) != _sha256(REPO_ROOT / name):
            print(f"note: {name} in the checkpoint differs from the repo's; releasing the repo's")
        shutil.copyfile(REPO_ROOT / name, out / name)

    config = _read_json(out / "config.json")
    embed_dim = config.get("embed_dim")
    if not isinstance(embed_dim, int):
        raise ReleaseError(f"{checkpoint}/config.json has no integer embed_dim (got {embed_dim!r})")
    for rel, content in st_files(embed_dim).items():
        old = checkpoint / rel
        if old.is_file() and _read_json(old) != content:
            print(f"note: {rel} regenerated from the registry (the checkpoint's differs)")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    strip_machine_local_keys(out)

    try:
        kind = choose_card_kind(repo_id, card, repository_card_)
    except ValueError as exc:
        raise ReleaseError(str(exc)) from exc
    eval_path = Path(eval_dir) if eval_dir else None
    if eval_path is not None:  # read once up front: a bad results folder is named as such, whatever the card
        from vipyloqwen_tools.release.results import load_models

        try:
            load_models([eval_path])
        except (FileNotFoundError, ValueError) as exc:
            raise ReleaseError(f"eval results in {eval_dir}: {exc}") from exc
    try:
        if kind == "given":
            card_path = Path(card)
            if not card_path.is_file():
                raise ReleaseError(f"--card {card_path}: no such file")
            text, readme_dir = card_path.read_text(encoding="utf-8"), card_path.parent
        elif kind == "repository":
            readme_text = Path(readme or REPO_ROOT / "README.md").read_text(encoding="utf-8")
            try:
                text = repository_card(readme_text, repo_id, eval_path)
            except ValueError as exc:  # replace_block: the README lost its tasks markers
                raise ReleaseError(f"README.md: {exc}") from exc
            readme_dir = Path(readme).parent if readme else REPO_ROOT
        else:
            facts = checkpoint_facts(checkpoint, train_config, base_model)
            text, readme_dir = fine_tune_card(facts, repo_id, eval_path, license, languages), checkpoint
    except FactsError as exc:
        raise ReleaseError(str(exc)) from exc
    said = {"given": f"your {card}", "repository": f"the repository's README.md, for {repo_id}"}
    print(f"model card: {kind} ({said.get(kind, f'written for {repo_id}')})")
    card = text
    for rel in card_files(card):  # the plot and the docs pages the card links to
        source = readme_dir / rel
        if not source.is_file():
            raise ReleaseError(f"README.md links {rel}, which is not a file in {readme_dir}")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / rel)
    (out / "README.md").write_text(card, encoding="utf-8")

    left_out = sorted(set(folder_files(checkpoint)) - set(folder_files(out)))
    if left_out:
        print(f"not released (outside the release layout): {', '.join(left_out)}")
    return out


# ----------------------------------------------------------------------------------------- step 2
def _json_problems(rel: str, data: Any, local_dirs: Iterable[str]) -> list[str]:
    """Machine-local keys and absolute local paths anywhere in a JSON value."""
    problems = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in MACHINE_LOCAL_KEYS:
                    problems.append(f"{rel}: machine-local key {where}{key!r}")
                walk(item, f"{where}{key}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}{i}.")
        elif isinstance(value, str):
            if LOCAL_PATH.match(value) or any(d in value for d in local_dirs):
                problems.append(f"{rel}: local path {value!r} at {where.rstrip('.') or 'top level'}")

    if rel == "tokenizer.json" and isinstance(data, dict):  # the vocabulary holds strings like "/usr"
        data = {k: v for k, v in data.items() if k not in ("model", "added_tokens")}
    walk(data, "")
    return problems


def _source_link_problems(body: str) -> list[str]:
    """A card that names tools a Hub download lacks must link the source repository on its first screen (a Hub
    reader then knows where they are and that they need a clone)."""
    named = sorted({name for name in SOURCE_ONLY if name in body})
    screen = "\n".join(body.lstrip("\n").splitlines()[:CARD_SCREEN_LINES])
    if named and f"]({SOURCE_REPOSITORY})" not in screen:
        return [
            f"README.md: names {', '.join(named)} (not in the Hub repo) but its first {CARD_SCREEN_LINES} lines do "
            f"not link the source repository {SOURCE_REPOSITORY}"
        ]
    return []


MAINTAINERS_ID = re.compile(rf"(?<![\w/.-]){re.escape(DEFAULT_REPO_ID)}(?![\w.-])")  # not inside a longer id
LOADED_ID = re.compile(r"""^\s*(?:model_name_or_path\s*=\s*)?["']([^"']+)["']""")


def _repo_id_problems(body: str, repo_id: str) -> list[str]:
    """The card's code loads the model being released: every loading call's model id is ``repo_id``, and no code
    block names the maintainers' model in a release of another one (a copied snippet would load the wrong model)."""
    problems = []
    for block in re.findall(r"```(?:python|py)\n(.*?)```", body, re.S):
        for match in re.finditer(r"(?:SentenceTransformer|\.from_pretrained)\(", block):
            loaded = LOADED_ID.match(block[match.end() :])
            if loaded and loaded[1] != repo_id:
                problems.append(f"README.md: a snippet loads {loaded[1]!r}, not the released {repo_id!r}")
    if repo_id != DEFAULT_REPO_ID:
        for block in re.findall(r"```[^\n]*\n(.*?)```", body, re.S):
            if MAINTAINERS_ID.search(block):
                line = next(line for line in block.splitlines() if MAINTAINERS_ID.search(line))
                problems.append(
                    f"README.md: a code block names {DEFAULT_REPO_ID}, not the released {repo_id}: {line.strip()!r}"
                )
    return problems


def _card_problems(card: str, repo_id: str | None = None) -> list[str]:
    """Front matter keys, trust_remote_code=True in every loading call of the Python snippets, the repo id in
    every snippet (when ``repo_id`` is given), tasks table."""
    problems = []
    try:
        metadata, body = split_front_matter(card)
    except (ReleaseError, yaml.YAMLError) as exc:
        return [f"README.md: front matter does not parse: {exc}"]
    if not metadata:
        problems.append("README.md: no YAML front matter")
    problems += [f"README.md: front matter lacks {key!r}" for key in REQUIRED_CARD_KEYS if not metadata.get(key)]
    calls = 0
    for block in re.findall(r"```(?:python|py)\n(.*?)```", body, re.S):
        for match in re.finditer(r"(SentenceTransformer|\.from_pretrained)\(", block):
            depth, i = 1, match.end()
            while i < len(block) and depth:
                depth += {"(": 1, ")": -1}.get(block[i], 0)
                i += 1
            calls += 1
            if "trust_remote_code=True" not in block[match.start() : i]:
                problems.append(f"README.md: loading call without trust_remote_code=True: {block[match.start() : i]!r}")
    if calls == 0:
        problems.append("README.md: no Python loading snippet")
    try:
        card_files(card)
    except ReleaseError as exc:
        problems.append(str(exc))
    problems += _source_link_problems(body)
    if repo_id is not None:
        problems += _repo_id_problems(body, repo_id)
    try:
        if replace_block(body, "tasks", tasks_table()) != body:
            problems.append("README.md: tasks table differs from the task registry")
    except ValueError:
        problems.append(
            "README.md: no <!-- tasks:start --> ... <!-- tasks:end --> table (the task prefixes a user needs): add "
            "the two marker lines and run python -m vipyloqwen_tools.release.readme --readme CARD to fill them"
        )
    return problems


def static_problems(
    folder: Path,
    local_dirs: Iterable[str] = (),
    repo_id: str | None = None,
    base_limits: InferenceLimits | None = None,
    allow_reduced_limits: bool = False,
) -> list[str]:
    """Checks that need no model load: layout, weights format, JSON hygiene, code identity, model card (its
    snippets load ``repo_id`` when given), inference limits (consistent, and not below ``base_limits`` unless
    ``allow_reduced_limits``: :func:`vipyloqwen_tools.release.facts.limit_problems`)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return [f"{folder}: no config.json"]
    problems = []
    local_dirs = sorted({str(Path(d).resolve()) for d in local_dirs} | {str(folder.resolve()), str(REPO_ROOT)})
    files = folder_files(folder)
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    problems += [f"pickle file {f} (only safetensors weights are released)" for f in pickles]

    try:
        config = _read_json(folder / "config.json")
        embed_dim = config.get("embed_dim")
        expected = expected_files(folder, embed_dim)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return [*problems, f"config.json / weight index unreadable: {exc}"]
    problems += [f"missing file {f}" for f in sorted(expected - set(files))]
    extra = set(files) - expected - set(OPTIONAL_FILES)
    problems += [f"unexpected file {f}" for f in sorted(extra) if not f.endswith(PICKLE_SUFFIXES)]

    for rel in files:
        if rel.endswith(".json"):
            try:
                data = _read_json(folder / rel)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problems.append(f"{rel}: invalid JSON: {exc}")
                continue
            problems += _json_problems(rel, data, local_dirs)
        elif rel.endswith((".py", ".md", ".jinja", ".txt")):
            text = (folder / rel).read_text(encoding="utf-8", errors="replace")
            problems += [f"{rel}: mentions local path {d}" for d in local_dirs if d in text]

    for name in HUB_CODE_FILES:
        if (folder / name).is_file() and _sha256(folder / name) != _sha256(REPO_ROOT / name):
            problems.append(f"{name} differs from the repo's {REPO_ROOT / name}")
    if config.get("model_type") != "vipyloqwen":
        problems.append(f"config.json model_type is {config.get('model_type')!r}, want 'vipyloqwen'")
    for rel in ("config.json", "tokenizer_config.json", "processor_config.json"):
        if (folder / rel).is_file():
            auto_map = _read_json(folder / rel).get("auto_map", {})
            for target in auto_map.values():
                module = str(target).split(".")[0] + ".py"
                if not (folder / module).is_file():
                    problems.append(f"{rel}: auto_map points at missing {module}")
    if (folder / "modules.json").is_file():
        for entry in _read_json(folder / "modules.json"):
            module_dir = folder / entry.get("path", "")
            if not module_dir.is_dir() or (entry.get("path") and not (module_dir / "config.json").is_file()):
                name, path = entry.get("name"), entry.get("path")
                problems.append(f"modules.json: module {name} points at missing folder {path!r}")
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        data = _read_json(st_config)
        if data.get("requirements") != SUPPORTED_VERSIONS:
            found = data.get("requirements")
            problems.append(f"config_sentence_transformers.json requirements {found} != {SUPPORTED_VERSIONS}")
        if data.get("prompts") != st_prompts():
            problems.append("config_sentence_transformers.json prompts differ from the task registry")
    if (folder / "README.md").is_file():
        problems += _card_problems((folder / "README.md").read_text(encoding="utf-8"), repo_id)
    if (folder / "processor_config.json").is_file():
        problems += limit_problems(folder, base_limits, allow_reduced_limits)
    for rel in weight_files(folder):
        if rel.endswith(".safetensors") and (folder / rel).is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(folder / rel), framework="pt") as handle:
                    if not list(handle.keys()):
                        problems.append(f"{rel}: no tensors")
            except Exception as exc:  # any parse failure means the file is not loadable
                problems.append(f"{rel}: not a readable safetensors file: {exc}")
    return problems


def verify(
    folder: str | Path,
    reference: str | Path | None = None,
    tolerance: float = 1e-5,
    local_dirs: Iterable[str] = (),
    timeout_s: float = 3600,
    repo_id: str | None = None,
    base_limits: InferenceLimits | None = None,
    allow_reduced_limits: bool = False,
) -> VerificationReport:
    """Verify a release folder: static checks, then a load + encode check in a fresh offline interpreter.

    Args:
        folder: the release folder.
        repo_id: the repo it is released to: the card's snippets must load it (None: not checked).
        base_limits: the base model's inference limits; lower ones are refused unless ``allow_reduced_limits``.
        reference: the checkpoint it was built from; its AutoModel embeddings must match (None: skip).
        tolerance: max abs difference allowed between loading paths (and against ``reference``).
        local_dirs: extra local folders whose paths must not appear in any shipped file.
        timeout_s: limit for the load check.
    """
    folder = Path(folder)
    report = VerificationReport(folder=folder.resolve())
    dirs = [*local_dirs, *([str(reference)] if reference else [])]
    report.problems = static_problems(folder, dirs, repo_id, base_limits, allow_reduced_limits)
    if report.problems:  # do not spend a model load on a folder already refused
        return report
    with tempfile.TemporaryDirectory(prefix="vipyloqwen-verify-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "modules").mkdir()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_MODULES_CACHE=str(tmp_path / "modules"),
            TOKENIZERS_PARALLELISM="false",
        )
        report_path = tmp_path / "report.json"
        command = [
            sys.executable, "-I", str(Path(__file__).with_name("verify_child.py")),
            "--folder", str(folder.resolve()), "--tasks", ",".join(TASKS),
            "--report", str(report_path), "--tolerance", str(tolerance),
        ]  # fmt: skip
        if reference:
            command += ["--reference", str(Path(reference).resolve())]
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            report.problems.append(f"load check did not finish within {timeout_s:.0f} s")
            return report
        report.details["load_check_s"] = round(time.perf_counter() - start, 2)
        if not report_path.is_file():
            tail = (proc.stderr or proc.stdout)[-2000:]
            report.problems.append(f"load check crashed (exit {proc.returncode}): {tail}")
            return report
        child = _read_json(report_path)
    report.problems += child.pop("problems")
    report.details.update(child)
    if not report.problems:
        report.fingerprint = fingerprint(folder)
    return report


# ----------------------------------------------------------------------------------------- step 3
def _configure_http(connect_timeout_s: float = CONNECT_TIMEOUT_S, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
    """Give huggingface_hub's HTTP client short connect/read timeouts (its default waits forever)."""
    import httpx2
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    def factory() -> httpx2.Client:
        timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s, write=None)
        return httpx2.Client(event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=timeout)

    set_client_factory(factory)


def _hub_error(exc: Exception, repo_id: str, endpoint: str, action: str) -> ReleaseError:
    """A clear ReleaseError for an exception raised while talking to the Hub."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return ReleaseError("HF_HUB_OFFLINE=1 is set: unset it to upload (or use --dry-run)")
    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        reason = f"{type(exc).__name__}: {exc}"
        return ReleaseError(f"cannot reach the Hub endpoint {endpoint} while trying to {action}: {reason}")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return ReleaseError(f"the token was rejected by {endpoint} (401) while trying to {action}: log in again")
        if status == 403:
            hint = "use a write token of the repo's owner or an organisation member"
            return ReleaseError(f"no write access to {repo_id} (403) while trying to {action}: {hint}")
        if status == 404:
            return ReleaseError(f"{repo_id} or its namespace not found (404) while trying to {action}")
        return ReleaseError(f"the Hub answered {status} while trying to {action}: {exc}")
    return ReleaseError(f"failed to {action}: {type(exc).__name__}: {exc}")


def _can_write(whoami: dict[str, Any], namespace: str) -> bool:
    """Whether the token described by ``whoami`` may write repos in ``namespace``."""
    token = whoami.get("auth", {}).get("accessToken", {})
    role = token.get("role")
    names = {whoami.get("name")} | {org.get("name") for org in whoami.get("orgs", [])}
    if role == "write":
        return namespace in names
    if role == "fineGrained":
        grants = token.get("fineGrained", {})
        for scope in grants.get("scoped", []):
            entity = scope.get("entity", {})
            if entity.get("name") == namespace and "repo.write" in scope.get("permissions", []):
                return True
        return False
    return False


def preflight(repo_id: str, token: str | None = None, tag: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Fail fast before any work: repo id, offline mode, token, endpoint reachable, write access, free tag.

    Returns ``(HfApi, whoami)``. Raises :class:`ReleaseError` with the fix in the message.
    """
    check_repo_id(repo_id)
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ReleaseError("HF_HUB_OFFLINE=1 is set: unset it to upload (or use --dry-run)")
    token = token or get_token()
    if not token:
        raise ReleaseError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token is needed)")
    _configure_http()
    api = HfApi(token=token)
    try:
        who = api.whoami()
    except Exception as exc:
        raise _hub_error(exc, repo_id, api.endpoint, "check the token (whoami)") from exc
    namespace = repo_id.split("/")[0]
    if not _can_write(who, namespace):
        role = who.get("auth", {}).get("accessToken", {}).get("role")
        raise ReleaseError(f"no write access to {namespace!r} for user {who.get('name')!r} (token role {role!r})")
    if tag:
        try:
            refs = api.list_repo_refs(repo_id) if api.repo_exists(repo_id) else None
        except Exception as exc:
            raise _hub_error(exc, repo_id, api.endpoint, "list the repo's tags") from exc
        if refs is not None and any(t.name == tag for t in refs.tags):
            raise ReleaseError(f"tag {tag!r} already exists on {repo_id}: choose a new version")
    return api, who


def upload(
    report: VerificationReport,
    repo_id: str,
    api: Any,
    tag: str | None = None,
    private: bool | None = None,
    create_pr: bool = False,
    message: str | None = None,
) -> str:
    """Upload a verified folder in one commit (creating the repo if needed), tag it; returns the commit URL.

    Refuses a report with problems and a folder changed since it was verified.
    """
    if not report.ok:
        raise ReleaseError(f"refusing to upload {report.folder}: verification failed: {report.problems}")
    if fingerprint(report.folder) != report.fingerprint:
        raise ReleaseError(f"refusing to upload {report.folder}: it changed after verification; verify again")
    if tag and create_pr:
        raise ReleaseError("--tag with --create-pr: tag the merged commit instead")
    endpoint = api.endpoint
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    except Exception as exc:
        raise _hub_error(exc, repo_id, endpoint, f"create {repo_id}") from exc
    try:
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(report.folder),
            repo_type="model",
            commit_message=message or f"Release {tag or 'viPyloQwen'}",
            create_pr=create_pr,
        )
    except Exception as exc:
        raise _hub_error(exc, repo_id, endpoint, f"upload {report.folder}") from exc
    if tag:
        try:
            api.create_tag(repo_id, tag=tag, revision=commit.oid, tag_message=message or f"viPyloQwen {tag}")
        except Exception as exc:
            raise _hub_error(exc, repo_id, endpoint, f"tag commit {commit.oid} as {tag}") from exc
    return commit.pr_url if create_pr and commit.pr_url else commit.commit_url
