"""Release: a --dry-run folder loads and reproduces the checkpoint; verification refuses broken folders;
the upload step fails fast and clearly; ST's own push_to_hub is compared with the release folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_image

from vipyloqwen_tools.release import assemble as release
from vipyloqwen_tools.release.assemble import (
    ReleaseError,
    VerificationReport,
    check_repo_id,
    static_problems,
    upload,
    verify,
)

ROOT = Path(__file__).resolve().parent.parent


class FakeApi:
    """Stands in for HfApi: records calls, keeps a copy of the uploaded folder, answers like the Hub."""

    endpoint = "https://hub.invalid"

    def __init__(self, capture: Path | None = None):
        self.calls: list[str] = []
        self.capture = capture

    def create_repo(self, repo_id, **kwargs):
        self.calls.append("create_repo")
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        self.calls.append("upload_folder")
        if self.capture is not None:
            shutil.copytree(folder_path, self.capture)
        url = f"{self.endpoint}/{repo_id}/commit/abc123"
        return type("CommitInfo", (), {"oid": "abc123", "commit_url": url, "pr_url": None})()

    def create_tag(self, repo_id, *, tag, revision, **kwargs):
        self.calls.append(f"create_tag:{tag}@{revision}")


@pytest.fixture(scope="module")
def dry_run(tiny_checkpoint, tmp_path_factory):
    """The CLI's --dry-run output folder for the session's tiny checkpoint, what it printed, its report file."""
    base = tmp_path_factory.mktemp("release")
    out, report = base / "out", base / "verification.json"
    proc = subprocess.run(
        [sys.executable, "scripts/release.py", "--checkpoint", str(tiny_checkpoint),
         "--repo-id", "erax-ai/viPyloQwen", "--dry-run", str(out), "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout, report


@pytest.fixture(scope="module")
def assembled(tiny_checkpoint, tmp_path_factory) -> Path:
    """The folder the dry run assembles before verifying it, assembled in this process (no child interpreters): the
    static refusals read it."""
    out = tmp_path_factory.mktemp("assembled") / "out"
    return release.assemble(tiny_checkpoint, out, repo_id="erax-ai/viPyloQwen")


@pytest.fixture(scope="module")
def verified(dry_run) -> VerificationReport:
    """The CLI's own verification of the dry-run folder (written by --report)."""
    report = VerificationReport.load(dry_run[2])
    assert report.ok and report.folder == dry_run[0].resolve(), report.problems
    return report


@pytest.fixture(scope="module")
def release_st(dry_run):
    """The dry-run folder loaded with SentenceTransformer in this process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(dry_run[0]), trust_remote_code=True, device="cpu")


def broken_copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(folder, copy)
    return copy


@pytest.mark.slow
def test_dry_run_folder_loads_and_gives_checkpoint_embeddings(dry_run, verified, tiny_parts, release_st):
    out, stdout, _ = dry_run
    assert "dry run" in stdout and "verification passed" in stdout
    assert "model card: repository (the repository's README.md, for erax-ai/viPyloQwen)" in stdout
    # a build_model checkpoint has no training record: no base limits to compare with, and the output says so
    assert "inference limits: no training record with the base model's limits; compared with nothing" in stdout
    names = {item["name"] for item in verified.details["items"]}
    assert {f"task:{t}" for t in release.TASKS} <= names
    assert {"modality:text", "modality:image", "modality:text+image", "modality:multi-image"} <= names
    assert verified.details["max_abs_diff"] <= 1e-5
    assert verified.details["reference_max_abs_diff"] <= 1e-5
    for name in release.HUB_CODE_FILES:  # byte-identical code
        assert (out / name).read_bytes() == (ROOT / name).read_bytes()
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert st_config["requirements"] == release.SUPPORTED_VERSIONS
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "trust_remote_code=True" in card
    linked = release.card_files(card)  # the plot and docs pages the card links to ship with it
    assert "docs/performance.png" in linked and "docs/performance.md" in linked
    for rel in linked:
        assert (out / rel).read_bytes() == (ROOT / rel).read_bytes(), rel

    # Independent of the verifier: the released folder, loaded here, matches the in-memory checkpoint model.
    model, processor = tiny_parts
    model.processor = processor
    st = release_st
    image = make_image(seed=3)
    inputs = [("Xin chào Việt Nam", None, "text_pair"), ({"image": image, "text": "Biển số?"}, image, "ocr")]
    for st_input, img, task in inputs:
        text = st_input if isinstance(st_input, str) else st_input["text"]
        got = st.encode([st_input], prompt_name=task, convert_to_tensor=True).cpu()
        want = model.encode(text=[text], images=[img], task=task)
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_card_files_are_repo_relative_links_only():
    card = (
        "![plot](docs/p.png) [a](docs/a.md#part) [b](<docs/b c.md>) [anchor](#usage) [web](https://x.org/y.md) "
        '[mail](mailto:a@b.c) ![t](img/t.png "title") [abs](/root.md)'
    )
    assert release.card_files(card) == ["docs/a.md", "docs/b c.md", "docs/p.png", "img/t.png"]
    with pytest.raises(release.ReleaseError, match=r"links \.\./secret.png: a released card may only link"):
        release.card_files("![x](../secret.png)")


def test_refuses_card_image_missing_from_folder(assembled, tmp_path):
    copy = broken_copy(assembled, tmp_path)
    (copy / "docs" / "performance.png").unlink()
    assert "missing file docs/performance.png" in release.static_problems(copy)


def test_verify_reports_card_link_out_of_the_repo(assembled, tmp_path):
    copy = broken_copy(assembled, tmp_path)
    card = copy / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\n[up](../outside.md)\n", encoding="utf-8")
    problems = release.static_problems(copy)
    assert any("links ../outside.md: a released card may only link files inside the repo" in p for p in problems)


def test_card_naming_repo_tools_must_link_the_source_repository_on_its_first_screen(assembled, tmp_path):
    """The shipped card is complete on its own: it names scripts/, train_st.py, eval/ ... and says where they are."""
    card = (assembled / "README.md").read_text(encoding="utf-8")
    assert f"]({release.SOURCE_REPOSITORY})" in card and not release._source_link_problems(card.split("\n---\n", 1)[1])
    copy = broken_copy(assembled, tmp_path)
    moved = card.replace(f"]({release.SOURCE_REPOSITORY})", "](#citation)")  # the link gone from the first screen
    (copy / "README.md").write_text(moved, encoding="utf-8")
    problems = [p for p in release.static_problems(copy) if "source repository" in p]
    assert len(problems) == 1 and "scripts/" in problems[0] and "train_st.py" in problems[0], problems
    assert release._source_link_problems("\nNothing but the model.\n") == []  # a card naming no tool needs no link


def test_assemble_refuses_card_linking_a_missing_file(tiny_checkpoint, tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for rel in release.card_files(text):  # linked files resolve beside the README given
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, tmp_path / rel)
    readme = tmp_path / "README.md"
    readme.write_text(text + "\n![gone](docs/gone.png)\n", encoding="utf-8")
    with pytest.raises(release.ReleaseError, match="links docs/gone.png, which is not a file"):
        release.assemble(tiny_checkpoint, tmp_path / "out", readme=readme)


def test_refuses_missing_code_file(assembled, tmp_path):
    folder = broken_copy(assembled, tmp_path)
    (folder / "images_vipyloqwen.py").unlink()
    report = verify(folder)
    assert not report.ok
    assert "missing file images_vipyloqwen.py" in report.problems
    api = FakeApi()
    with pytest.raises(ReleaseError, match="verification failed"):
        upload(report, "erax-ai/viPyloQwen", api)
    assert api.calls == []


def test_refuses_modules_json_entry_without_folder(assembled, tmp_path):
    folder = broken_copy(assembled, tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.base.modules.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    report = verify(folder)
    assert any("modules.json: module 3 points at missing folder '3_Dense'" in p for p in report.problems)
    assert not report.ok


def test_refuses_pickle_weights(assembled, tmp_path):
    folder = broken_copy(assembled, tmp_path)
    torch.save({"w": torch.zeros(2)}, folder / "pytorch_model.bin")
    report = verify(folder)
    assert "pickle file pytorch_model.bin (only safetensors weights are released)" in report.problems
    assert not report.ok


def test_refuses_machine_local_tokenizer_config(assembled, tmp_path):
    folder = broken_copy(assembled, tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(is_local=True, local_files_only=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    report = verify(folder)
    assert "tokenizer_config.json: machine-local key 'is_local'" in report.problems
    assert "tokenizer_config.json: machine-local key 'local_files_only'" in report.problems
    assert not report.ok


def test_refuses_absolute_path_in_json(assembled, tmp_path):
    folder = broken_copy(assembled, tmp_path)
    config = json.loads((folder / "processor_config.json").read_text())
    config["image_processor"]["source"] = "/home/someone/ckpt"
    (folder / "processor_config.json").write_text(json.dumps(config))
    problems = static_problems(folder)
    assert any("processor_config.json: local path '/home/someone/ckpt'" in p for p in problems)


def test_upload_refuses_folder_changed_after_verification(assembled, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(assembled, folder)  # copy2 keeps sizes and mtimes: same fingerprint
    report = VerificationReport(folder=folder, fingerprint=release.fingerprint(assembled))  # as verify() pins it
    (folder / "README.md").write_text((folder / "README.md").read_text() + "\nedited\n")
    api = FakeApi()
    with pytest.raises(ReleaseError, match="changed after verification"):
        upload(report, "erax-ai/viPyloQwen", api)
    assert api.calls == []


@pytest.mark.slow
def test_upload_verified_folder_one_commit_then_tag(verified, tmp_path):
    api = FakeApi(capture=tmp_path / "uploaded")
    url = upload(verified, "erax-ai/viPyloQwen", api, tag="v0.1")
    assert url == "https://hub.invalid/erax-ai/viPyloQwen/commit/abc123"
    assert api.calls == ["create_repo", "upload_folder", "create_tag:v0.1@abc123"]
    assert release.folder_files(tmp_path / "uploaded") == release.folder_files(verified.folder)


@pytest.mark.parametrize("repo_id", ["viPyloQwen", "a/b/c", "bad id/x", "-org/name", "org/name.git", "org/..", ""])
def test_malformed_repo_id_rejected(repo_id):
    with pytest.raises(ReleaseError, match="malformed repo id"):
        check_repo_id(repo_id)


def test_valid_repo_id_accepted():
    assert check_repo_id("erax-ai/viPyloQwen") == "erax-ai/viPyloQwen"


@pytest.mark.slow
def test_unreachable_endpoint_fails_fast(tiny_checkpoint):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN="hf_not_a_real_token")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "scripts/release.py", "--checkpoint", str(tiny_checkpoint), "--repo-id", "erax-ai/viPyloQwen"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot reach the Hub endpoint http://127.0.0.1:{port}" in proc.stderr
    assert "assembled" not in proc.stdout  # failed before any work
    assert elapsed < 30, elapsed  # includes interpreter + torch import


def test_no_token_and_read_only_token_fail_fast(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ReleaseError, match="no Hugging Face token"):
        release.preflight("erax-ai/viPyloQwen")
    who = {"name": "someone", "orgs": [{"name": "erax-ai"}], "auth": {"accessToken": {"role": "read"}}}
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, *a, **k: who)
    with pytest.raises(ReleaseError, match="no write access to 'erax-ai'"):
        release.preflight("erax-ai/viPyloQwen", token="hf_x")
    who["auth"]["accessToken"]["role"] = "write"
    with pytest.raises(ReleaseError, match="no write access to 'other-org'"):
        release.preflight("other-org/model", token="hf_x")


def test_offline_mode_refuses_upload(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ReleaseError, match="HF_HUB_OFFLINE=1 is set"):
        release.preflight("erax-ai/viPyloQwen", token="hf_x")


@pytest.mark.slow
def test_sentence_transformers_push_to_hub_compared(dry_run, release_st, monkeypatch, tmp_path):
    """ST's push_to_hub re-saves the loaded model: the verifier flags what differs. With local_model_path
    it uploads the verified folder unchanged, i.e. the same release as scripts/release.py."""
    import sentence_transformers.base.model as st_base

    out, st = dry_run[0], release_st
    pushes: list[FakeApi] = []

    def fake_api(token=None):
        pushes.append(FakeApi(capture=tmp_path / f"push{len(pushes) + 1}"))
        return pushes[-1]

    monkeypatch.setattr(st_base, "HfApi", fake_api)
    monkeypatch.setattr(st_base, "load_file_path", lambda *a, **k: None)  # the Hub repo has no README yet
    st.push_to_hub("erax-ai/viPyloQwen", exist_ok=True)
    resaved = tmp_path / "push1"
    problems = static_problems(resaved)
    assert "tokenizer_config.json: machine-local key 'is_local'" in problems
    assert any(p.startswith("config_sentence_transformers.json requirements None") for p in problems)
    # Same layout, different content; ST writes its own card, which lacks our docs pages and plot.
    linked = set(release.card_files((out / "README.md").read_text(encoding="utf-8")))
    assert set(release.folder_files(resaved)) == set(release.folder_files(out)) - linked

    st.push_to_hub("erax-ai/viPyloQwen", exist_ok=True, local_model_path=str(out))
    pushed = tmp_path / "push2"
    assert release.folder_files(pushed) == release.folder_files(out)
    for rel in release.folder_files(out):
        assert (pushed / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert static_problems(pushed) == []


def test_wrong_checkpoint_is_one_line_before_the_token_check(tmp_path, capsys, monkeypatch):
    from scripts import release as cli

    monkeypatch.setattr(cli, "preflight", lambda *a, **k: pytest.fail("the token was checked first"))
    (tmp_path / "empty").mkdir()
    for checkpoint, says in (
        (tmp_path / "nothere", "no such folder; give a checkpoint folder written by scripts/build_model.py"),
        (tmp_path / "empty", "not a checkpoint (no config.json in the folder)"),
        ("erax-ai/viPyloQwen", "no such folder"),  # a Hub id is not a checkpoint to release
    ):
        assert cli.main(["--checkpoint", str(checkpoint), "--repo-id", "erax-ai/viPyloQwen"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"release error: --checkpoint {checkpoint}: {says}") and err.count("\n") == 1, err
