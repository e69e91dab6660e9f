"""vipyloqwen_tools.checkpoint.user_errors: one-line model-path errors naming the fix; one process reports."""

from __future__ import annotations

import pytest

from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source, launch_rank, report


def test_checkpoint_folder_and_cached_or_online_hub_id_pass(tiny_checkpoint, monkeypatch):
    assert check_model_source(tiny_checkpoint) == str(tiny_checkpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: a well-formed id is left to the Hub (nothing fetched here)
    assert check_model_source("erax-ai/viPyloQwen") == "erax-ai/viPyloQwen"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda tmp: tmp / "nothere", "no such folder (and not a Hub id org/name)"),
        (lambda tmp: "./build/nothere", "no such folder (and not a Hub id org/name)"),
        (lambda tmp: "a/b/c", "no such folder (and not a Hub id org/name)"),
        (lambda tmp: "build/nothere", "no such folder, and not a Hub model in the local cache (HF_HUB_OFFLINE=1)"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "not a checkpoint (no config.json in the folder)"),
        (lambda tmp: (tmp / "f.bin").write_bytes(b"x") and tmp / "f.bin", "a file, not a checkpoint folder"),
    ],
)
def test_wrong_source_is_one_line_with_the_fix(tmp_path, monkeypatch, make, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = make(tmp_path)
    with pytest.raises(ModelSourceError) as error:
        check_model_source(source, "--model")
    message = str(error.value)
    assert message.startswith(f"--model {source}: {says}") and "\n" not in message
    assert "scripts/build_model.py" in message or "config.json" in message


def test_local_only_refuses_a_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(ModelSourceError, match=r"^--checkpoint erax-ai/viPyloQwen: no such folder; give a checkpoint"):
        check_model_source("erax-ai/viPyloQwen", "--checkpoint", local=True)


@pytest.mark.parametrize(("variable", "rank"), [("RANK", 1), ("PMI_RANK", 3), ("OMPI_COMM_WORLD_RANK", 2)])
def test_only_the_first_process_reports(monkeypatch, capsys, variable, rank):
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launch_rank() == 0 and report("boom") == 2 and capsys.readouterr().err == "error: boom\n"
    monkeypatch.setenv(variable, str(rank))
    assert launch_rank() == rank and report("boom") == 2 and capsys.readouterr().err == ""
