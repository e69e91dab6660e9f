"""eval/compare.py and eval/make_readme_table.py on hand-written result folders in the MTEB results layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import compare, make_readme_table
from vipyloqwen_tools.release.results import load_revision_folder, main_score

# (task, type in mteb's registry): two STS and one Retrieval task of VN-MTEB.
SCORES = {
    "ours": {"STSBenchmark-VN": 0.80, "SICK-R-VN": 0.70, "SciFact-VN": 0.50},
    "base": {"STSBenchmark-VN": 0.60, "SICK-R-VN": 0.90, "SciFact-VN": 0.40, "BIOSSES-VN": 0.30},
}


def _write_model(root: Path, name: str, revision: str, scores: dict[str, float]) -> Path:
    folder = root / "results" / name.replace("/", "__") / revision
    folder.mkdir(parents=True)
    (folder / "model_meta.json").write_text(json.dumps({"name": name, "revision": revision}))
    for task, score in scores.items():
        # Two subsets: main score is their mean (score +- 0.1).
        entries = [
            {"main_score": score + d, "hf_subset": s, "languages": ["vie-Latn"]} for d, s in ((0.1, "a"), (-0.1, "b"))
        ]
        (folder / f"{task}.json").write_text(json.dumps({"task_name": task, "scores": {"test": entries}}))
    return folder


@pytest.fixture()
def folders(tmp_path):
    ours = _write_model(tmp_path / "ours", "erax-ai/viPyloQwen", "abc123", SCORES["ours"])
    base = _write_model(tmp_path / "base", "org/baseline", "def456", SCORES["base"])
    return ours, base


def test_main_score_is_mean_over_splits_and_subsets():
    result = {"scores": {"dev": [{"main_score": 0.2}], "test": [{"main_score": 0.4}, {"main_score": 0.9}]}}
    assert main_score(result) == pytest.approx(0.5)


def test_folder_reading_and_types(folders):
    ours, _ = folders
    scores = load_revision_folder(ours)
    assert scores.name == "erax-ai/viPyloQwen" and scores.revision == "abc123"
    assert scores.scores == pytest.approx(SCORES["ours"])
    assert scores.task_types == {"STSBenchmark-VN": "STS", "SICK-R-VN": "STS", "SciFact-VN": "Retrieval"}


def test_comparison_table_per_task_and_per_type(folders, tmp_path):
    ours, base = folders
    text = compare.compare([tmp_path / "ours", tmp_path / "base"])
    assert "| STSBenchmark-VN | STS | 80.00 | 60.00 |" in text
    assert "| BIOSSES-VN | STS | - | 30.00 |" in text  # only the baseline has it
    # Type means over the tasks both models have: STS (80+70)/2 vs (60+90)/2, Retrieval 50 vs 40.
    assert "| STS | 2 | 75.00 | 75.00 |" in text
    assert "| Retrieval | 1 | 50.00 | 40.00 |" in text
    assert "| All (mean over tasks) | 3 | 66.67 | 63.33 |" in text
    only_ours = compare.compare([tmp_path / "ours", base], tasks_from=ours)
    assert "BIOSSES-VN" not in only_ours


def test_compare_cli_errors_on_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert compare.main([str(tmp_path / "empty")]) == 2
    assert "no MTEB result files" in capsys.readouterr().err


def test_readme_section_regenerated_from_result_files(folders, tmp_path):
    ours, base = folders
    jsonl = tmp_path / "jsonl_eval.json"
    jsonl.write_text(json.dumps({"data": "eval.jsonl", "tasks": {"ocr": {"queries": 4, "candidates": 5, "r@1": 0.25}}}))
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\n<!-- eval:start -->\nold numbers 99.99\n<!-- eval:end -->\n\nTail.\n")
    argv = [str(readme), "--mteb", str(tmp_path / "ours"), "--baseline", str(tmp_path / "base"), "--jsonl", str(jsonl)]
    assert make_readme_table.main([*argv, "--check"]) == 1
    assert make_readme_table.main(argv) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n<!-- eval:start -->\n") and text.endswith("<!-- eval:end -->\n\nTail.\n")
    assert "99.99" not in text and "| STSBenchmark-VN | STS | 80.00 | 60.00 |" in text
    assert "| ocr | 4 | 5 | 25.00 | - |" in text
    assert make_readme_table.main([*argv, "--check"]) == 0  # idempotent


def test_readme_without_markers_is_an_error(folders, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert make_readme_table.main([str(readme), "--mteb", str(tmp_path / "ours")]) == 2
    assert "markers" in capsys.readouterr().err


def test_text_only_baselines_in_their_own_table(tmp_path):
    """VN-MMEB's <Task>TextOnly rows sit beside their task with the difference the image makes, out of the means."""
    scores = {
        "OpenViVQAIT2TRetrieval": 0.60,
        "OpenViVQAIT2TRetrievalTextOnly": 0.45,
        "KTVICT2IRetrieval": 0.70,
        "KTVICI2TRetrieval": 0.50,
    }
    _write_model(tmp_path / "ours", "erax-ai/viPyloQwen", "abc123", scores)
    _write_model(tmp_path / "peer", "org/peer", "def456", {"OpenViVQAIT2TRetrieval": 0.50, "KTVICT2IRetrieval": 0.9})
    text = compare.compare([tmp_path / "ours", tmp_path / "peer"], benchmark="VN-MMEB (vie, v1)")
    main, baselines = text.split("Text-only baseline")
    assert "OpenViVQAIT2TRetrievalTextOnly" not in main
    assert "| All (mean over tasks) | 2 | 65.00 | 70.00 |" in main  # the baseline is not a task of the means
    assert "| OpenViVQAIT2TRetrieval | it2t | 60.00 | 45.00 | 15.00 | 50.00 | - | - |" in baselines
    same = "same (text queries)"
    assert f"| KTVICT2IRetrieval | t2i | 70.00 | {same} | - | 90.00 | {same} | - |" in baselines
    assert "| KTVICI2TRetrieval | i2t | 50.00 | n/a (image-only queries) | - |" in baselines
    assert "OpenViVQAIT2TRetrievalTextOnly |" not in baselines


def test_one_mean_on_card_run_mteb_summary_and_compare(tmp_path, tiny_checkpoint):
    """The same results give the same mean everywhere: text-only baselines out of it, stand-in data marked."""
    from eval.run_mteb import TaskOutcome, summary_markdown
    from vipyloqwen_tools.release.card import build_card, fine_tune_card
    from vipyloqwen_tools.release.facts import checkpoint_facts
    from vipyloqwen_tools.release.results import STAND_IN_NOTE

    scores = {"OpenViVQAIT2TRetrieval": 0.5999, "OpenViVQAIT2TRetrievalTextOnly": 0.3527}
    scores["KTVICT2IRetrieval"] = 0.4001
    folder = _write_model(tmp_path / "mine", "me/mine", "abc123", scores)
    for path in folder.glob("*Retrieval*.json"):  # run on local copies of the data: stand-ins
        result = json.loads(path.read_text())
        path.write_text(json.dumps({**result, "dataset_revision": "local"}))
    expected = "| All (mean over tasks) | 2 | 50.00 |"  # (59.99 + 40.01) / 2; with the baseline it would be 45.09
    outcomes = [TaskOutcome(task, "Any2AnyRetrieval", score, 1.0, stand_in=True) for task, score in scores.items()]
    summary = summary_markdown(outcomes)
    compared = compare.compare([tmp_path / "mine"])
    repository = build_card("<!-- tasks:start -->\n<!-- tasks:end -->\n", tmp_path / "mine")
    written = fine_tune_card(checkpoint_facts(tiny_checkpoint, base_model="a/b"), "me/mine", tmp_path / "mine")
    for text in (summary, compared, repository, written):
        assert [line for line in text.splitlines() if line.startswith("| All (mean")] == [expected], text
        assert STAND_IN_NOTE in text and "59.99*" in text
    assert "MTEB main scores (x100) of `me/mine`, as filed by `eval/run_mteb.py`:" in written
    assert "| OpenViVQAIT2TRetrieval | 59.99* | 35.27* | 24.72 |" in summary  # the baseline beside its task
