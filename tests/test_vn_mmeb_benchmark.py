"""The VN-MMEB benchmark end to end, offline, on the stand-ins through eval/run_mteb.py: MTEB results layout,
the it2t prompt routing, the text-only baseline rows (results, summary, compare.py), pinned dataset revisions,
and scores equal to nDCG computed here with numpy from the model's own embeddings."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from configuration_vipyloqwen import TASKS, st_prompts
from eval import compare, run_mteb, vn_mmeb
from eval.vn_mmeb.base import COMMIT, NOT_ON_HUB
from eval.vn_mmeb.benchmark import UNPINNED
from eval.vn_mmeb.candidates import normalize_answer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vn_mmeb"
BENCH = "VN-MMEB (vie, v1)"


@pytest.fixture(scope="module")
def bench_run(tiny_checkpoint, tmp_path_factory) -> tuple[int, Path, Path]:
    """One CLI run of the whole benchmark on the stand-ins; (exit status, output, revision folder)."""
    out = tmp_path_factory.mktemp("vn_mmeb_out")
    argv = ["--model", str(tiny_checkpoint), "--benchmark", BENCH, "--data-root", str(FIXTURES)]
    rc = run_mteb.main([*argv, "--output", str(out), "--no-progress", "--batch-size", "8"])
    # filed under the checkpoint folder's name (run_mteb --name's default), not the official id
    name = run_mteb.folder_name(tiny_checkpoint).replace("/", "__")
    folder = out / "results" / name / run_mteb.content_hash(tiny_checkpoint)
    return rc, out, folder


def _score(folder: Path, task: str) -> dict:
    result = json.loads((folder / f"{task}.json").read_text(encoding="utf-8"))
    (split,) = result["scores"]
    (entry,) = result["scores"][split]
    return entry


def ndcg(scores: np.ndarray, candidates: list[str], relevant: set[str], k: int) -> float:
    """nDCG@k with binary gains, candidates ranked by descending score."""
    order = [candidates[i] for i in np.argsort(-scores, kind="stable")]
    dcg = sum(1 / math.log2(r + 2) for r, doc in enumerate(order[:k]) if doc in relevant)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / idcg


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_benchmark_runs_offline_in_mteb_results_layout(bench_run, tiny_checkpoint):
    rc, out, folder = bench_run
    assert rc == 0
    names = [t.metadata.name for t in vn_mmeb.get_benchmark(BENCH).tasks]
    mteb_own = {"XM3600T2IRetrieval", "XM3600I2TRetrieval", "WITT2IRetrieval", "WITI2TRetrieval"}
    assert len(names) == 17 and mteb_own <= set(names) and set(vn_mmeb.TEXT_ONLY_BASELINES) <= set(names)
    assert "VnXM3600I2TRetrieval" not in names  # mteb's XM3600I2TRetrieval replaces it
    for name in names:
        result = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert result["task_name"] == name and result["dataset_revision"] == "local"
    meta = json.loads((folder / "model_meta.json").read_text(encoding="utf-8"))
    assert meta["name"] == run_mteb.folder_name(tiny_checkpoint) and set(meta["modalities"]) >= {"text", "image"}
    assert _score(folder, "ViInfographicVQAMultiT2IRetrieval")["main_score"] == pytest.approx(
        _score(folder, "ViInfographicVQAMultiT2IRetrieval")["ndcg_at_5"]
    )
    assert _score(folder, "XM3600I2TRetrieval")["hf_subset"] == "vi" and _score(folder, "WITI2TRetrieval")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped_missing_data"] == [] and len(summary["tasks"]) == 17
    assert summary["text_only_baselines"] == vn_mmeb.TEXT_ONLY_BASELINES
    scores = {t["task"]: t["main_score"] for t in summary["tasks"]}
    main = [v for k, v in scores.items() if k not in vn_mmeb.TEXT_ONLY_BASELINES]
    assert summary["mean"] == pytest.approx(np.mean(main))  # the baselines are not tasks of the mean


def test_text_only_baseline_rows(bench_run):
    """Each it2t task has its text-only row (same model, images removed from the queries) in the results, in the
    run summary and in compare.py's table, with the difference the image makes."""
    _, out, folder = bench_run
    md = (out / "summary.md").read_text(encoding="utf-8")
    table = compare.compare([out], benchmark=BENCH)
    for baseline, task in vn_mmeb.TEXT_ONLY_BASELINES.items():
        full, text = _score(folder, task)["main_score"], _score(folder, baseline)["main_score"]
        # every score here ran on the local stand-ins: marked (*)
        assert f"| {task} | {full * 100:.2f}* | {text * 100:.2f}* | {(full - text) * 100:.2f} |" in md
        assert f"| {task} | it2t | {full * 100:.2f}* | {text * 100:.2f}* | {(full - text) * 100:.2f} |" in table
        assert f"| {baseline} |" not in table.split("Text-only baseline")[0]  # not a task of its own in the means
    assert "| KTVICT2IRetrieval | t2i | " in table and "same (text queries)" in table
    assert "| XM3600I2TRetrieval | i2t | " in table and "n/a (image-only queries)" in table
    assert "| it2t | 3 | " in table and "| t2t |" not in table


def test_one_mean_in_the_run_summary_compare_and_the_release_card(bench_run, tiny_checkpoint):
    """The same results, the same overall mean (text-only baselines out of it) and the stand-in caveat, wherever
    they are shown."""
    from vipyloqwen_tools.release.card import fine_tune_card
    from vipyloqwen_tools.release.facts import checkpoint_facts
    from vipyloqwen_tools.release.results import STAND_IN_NOTE

    _, out, _ = bench_run
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    expected = f"| All (mean over tasks) | 14 | {summary['mean'] * 100:.2f} |"
    card = fine_tune_card(checkpoint_facts(tiny_checkpoint, base_model="a/b"), "me/mine", out)
    for text in ((out / "summary.md").read_text(encoding="utf-8"), compare.compare([out]), card):
        assert [line for line in text.splitlines() if line.startswith("| All (mean")] == [expected]
        assert STAND_IN_NOTE in text  # every task ran on the local stand-ins


def test_hub_datasets_are_pinned_to_commits():
    """Every Hub dataset is pinned to a 40-hex commit, or listed as unpinned with its reason in the dataset table."""
    table = vn_mmeb.dataset_table()
    for task in vn_mmeb.get_tasks():
        path, revision = task.metadata.dataset["path"], task.metadata.dataset["revision"]
        if revision == NOT_ON_HUB:
            assert task.source and "release not verified" in table, task.metadata.name
        elif path in UNPINNED:
            assert revision == "main" and f"**unpinned** ({UNPINNED[path]})" in table, task.metadata.name
        else:
            assert COMMIT.fullmatch(revision), (task.metadata.name, revision)
            assert f"`{revision[:12]}`" in table
    assert "test_data.json" not in [t.metadata.dataset["revision"] for t in vn_mmeb.get_tasks()]


def test_it2t_queries_routed_to_registry_prefixes(bench_run):
    _, out, _ = bench_run
    prompts = json.loads((out / "summary.json").read_text(encoding="utf-8"))["prompts"]
    assert prompts["OpenViVQAIT2TRetrieval-query"] == TASKS["vqa_single"].prefix
    assert prompts["ViTextVQAIT2TRetrieval-query"] == TASKS["ocr"].prefix
    assert prompts["MTVQAViIT2TRetrieval-query"] == TASKS["ocr"].prefix
    assert prompts["OpenViVQAIT2TRetrievalTextOnly-query"] == TASKS["vqa_single"].prefix  # only the image removed
    assert prompts["Any2AnyRetrieval-query"] == "" and prompts["DocumentUnderstanding-query"] == ""
    # mteb's own prompt validation keeps the task-named keys (the tasks are in its registry)
    from mteb.models.abs_encoder import AbsEncoder

    kept, invalid = AbsEncoder.validate_task_to_prompt_name(prompts, raise_for_invalid_keys=False)
    assert "OpenViVQAIT2TRetrieval-query" in kept and not invalid


def test_caption_to_image_score_equals_numpy(bench_run, st_model):
    _, _, folder = bench_run
    data = json.loads((FIXTURES / "KTVIC/test_data.json").read_text(encoding="utf-8"))
    files = {i["id"]: i["filename"] for i in data["images"]}
    ids = list(files)
    images = [Image.open(FIXTURES / "KTVIC/public-test-images" / files[i]).convert("RGB") for i in ids]
    d = st_model.encode([{"image": im} for im in images], normalize_embeddings=True)
    q = st_model.encode([a["caption"] for a in data["annotations"]], normalize_embeddings=True)
    values = [ndcg(q[n] @ d.T, ids, {a["image_id"]}, 10) for n, a in enumerate(data["annotations"])]
    assert _score(folder, "KTVICT2IRetrieval")["ndcg_at_10"] == pytest.approx(np.mean(values), abs=1e-5)


def zip_images(archive: Path, members: dict) -> dict:
    """``{key: RGB image}`` of ``{key: member name}`` in a zip archive."""
    with zipfile.ZipFile(archive) as zf:
        return {key: Image.open(io.BytesIO(zf.read(name))).convert("RGB") for key, name in members.items()}


def it2t_ndcg10(st_model, anns: list[dict], images: dict, task: str, image_of, gold_of) -> float:
    """Mean nDCG@10 of image+question queries (``task``'s prompt) ranked among all distinct normalised answers; a
    candidate is encoded in its first raw spelling. ``image_of(a)`` keys ``images``, ``gold_of(a)`` lists the gold
    answers of annotation ``a``."""
    first: dict[str, str] = {}
    for a in anns:
        for answer in gold_of(a):
            first.setdefault(normalize_answer(answer), answer)
    answers = list(first)
    d = st_model.encode([first[x] for x in answers], normalize_embeddings=True)
    q = st_model.encode(
        [{"text": a["question"], "image": images[image_of(a)]} for a in anns],
        prompt=st_prompts()[task],
        normalize_embeddings=True,
    )
    gold = [{normalize_answer(x) for x in gold_of(a)} for a in anns]
    return float(np.mean([ndcg(q[n] @ d.T, answers, gold[n], 10) for n in range(len(anns))]))


def test_image_question_to_answer_score_equals_numpy(bench_run, st_model):
    """OpenViVQA it2t: <vqa_single> queries, each ranked among all distinct answers (its candidate list here)."""
    _, _, folder = bench_run
    root = FIXTURES / "uitnlp/OpenViVQA-dataset"
    data = json.loads((root / "vlsp2023_dev_data.json").read_text(encoding="utf-8"))
    img = zip_images(root / "dev-images.zip", {k: f"dev-images/{v}" for k, v in data["images"].items()})
    anns = list(data["annotations"].values())
    expected = it2t_ndcg10(st_model, anns, img, "vqa_single", lambda a: str(a["image_id"]), lambda a: [a["answer"]])
    assert _score(folder, "OpenViVQAIT2TRetrieval")["ndcg_at_10"] == pytest.approx(expected, abs=1e-5)


def test_multi_answer_it2t_score_equals_numpy(bench_run, st_model):
    """ViTextVQA it2t: <ocr> queries, several gold answers per question."""
    _, _, folder = bench_run
    root = FIXTURES / "minhquan6203/ViTextVQA"
    data = json.loads((root / "ViTextVQA_test_gt.json").read_text(encoding="utf-8"))
    img = zip_images(root / "ViTextVQA_images.zip", {i["id"]: f"st_images/{i['filename']}" for i in data["images"]})
    anns = data["annotations"]
    expected = it2t_ndcg10(st_model, anns, img, "ocr", lambda a: a["image_id"], lambda a: a["answers"])
    assert _score(folder, "ViTextVQAIT2TRetrieval")["ndcg_at_10"] == pytest.approx(expected, abs=1e-5)


def test_multi_page_retrieval_ndcg5_equals_numpy(bench_run, st_model):
    _, _, folder = bench_run
    root = FIXTURES / "duytranus/ViInfographicVQA"
    multi = json.loads((root / "data/multi_test.json").read_text(encoding="utf-8"))
    pages = list(dict.fromkeys(p for r in multi for p in r["image_paths"]))
    d = st_model.encode([{"image": Image.open(root / p).convert("RGB")} for p in pages], normalize_embeddings=True)
    q = st_model.encode([r["question"] for r in multi], normalize_embeddings=True)
    values = [ndcg(q[n] @ d.T, pages, set(r["image_paths"]), 5) for n, r in enumerate(multi)]
    assert _score(folder, "ViInfographicVQAMultiT2IRetrieval")["ndcg_at_5"] == pytest.approx(np.mean(values), abs=1e-5)


def test_image_to_caption_from_parquet_equals_numpy(bench_run, st_model):
    _, _, folder = bench_run
    rows = pq.read_table(FIXTURES / "mteb/xm3600/data/vi-00000-of-00001.parquet").to_pylist()
    q = st_model.encode(
        [{"image": Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")} for r in rows], normalize_embeddings=True
    )
    caps = [(r["image_id"], c) for r in rows for c in r["captions"]]
    d = st_model.encode([c for _, c in caps], normalize_embeddings=True)
    ids = [f"{i}-{n}" for n, (i, _) in enumerate(caps)]
    values = [
        ndcg(q[n] @ d.T, ids, {ids[m] for m, (i, _) in enumerate(caps) if i == r["image_id"]}, 10)
        for n, r in enumerate(rows)
    ]
    assert _score(folder, "XM3600I2TRetrieval")["ndcg_at_10"] == pytest.approx(np.mean(values), abs=1e-5)


def test_benchmark_by_name_errors(tiny_checkpoint, capsys):
    assert run_mteb.main(["--model", str(tiny_checkpoint), "--benchmark", "VN-MMEB vie"]) == 2
    assert "VN-MMEB (vie, v1)" in capsys.readouterr().err
    # without local copies, offline: the datasets are named up front, nothing is silently empty
    assert (
        run_mteb.main(["--model", str(tiny_checkpoint), "--tasks", "KTVICT2IRetrieval", "OpenViVQAT2IRetrieval"]) == 2
    )
    err = capsys.readouterr().err
    assert "KTVICT2IRetrieval" in err and "OpenViVQAT2IRetrieval" in err and "offline" in err
    assert run_mteb.main(["--model", str(tiny_checkpoint), "--benchmark", BENCH, "--data-root", "/no/such/dir"]) == 2
    assert "/no/such/dir is not a folder" in capsys.readouterr().err


def test_benchmark_metadata_and_docs_table():
    bench = vn_mmeb.get_benchmark(BENCH)
    by_name = {t.metadata.name: t for t in bench.tasks}
    assert by_name["XM3600T2IRetrieval"].hf_subsets == ["vi"] and by_name["WITT2IRetrieval"].hf_subsets == ["vi"]
    cats = {t.metadata.category for t in bench.tasks}
    assert cats == {"t2i", "i2t", "it2t", "t2t"}  # t2t: the text-only baselines
    assert {t.metadata.name for t in bench.tasks if t.metadata.category == "t2t"} == set(vn_mmeb.TEXT_ONLY_BASELINES)
    assert all(t.metadata.license for t in bench.tasks)
    assert by_name["MTVQAViIT2TRetrieval"].metadata.license == "cc-by-nc-4.0"
    assert by_name["ViTextVQAIT2TRetrieval"].metadata.license == "cc-by-nc-3.0"
    for t in bench.tasks:
        if t.metadata.category in ("it2t", "t2t"):
            assert "top_ranked" in t.metadata.description and t.query_task in TASKS
    table = vn_mmeb.dataset_table()
    assert "cc-by-nc-4.0 **non-commercial** (card)" in table and "cc-by-nc-3.0 **non-commercial**" in table
    assert "KTVIC" in table and "**release not verified**" in table
    repo = Path(__file__).resolve().parent.parent
    for doc in (repo / "docs" / "evaluation.md", repo / "eval" / "vn_mmeb" / "README.md"):
        assert table in doc.read_text(encoding="utf-8"), (
            f"{doc}: dataset table is stale: python -m eval.vn_mmeb --write"
        )


def test_one_results_folder_one_table(bench_run):
    """eval/run_peers.py with no peers rebuilds the table from the results folder (our column, category means)."""
    from eval import run_peers

    _, out, folder = bench_run
    assert run_peers.main(["--peers", "--output", str(out)]) == 0
    text = (out / "compare.md").read_text(encoding="utf-8")
    ko = _score(folder, "KTVICT2IRetrieval")["main_score"]
    assert f"| KTVICT2IRetrieval | Any2AnyRetrieval | {ko * 100:.2f}* |" in text  # * stand-in data
    it2t = np.mean(
        [
            _score(folder, t)["main_score"]
            for t in ("OpenViVQAIT2TRetrieval", "ViTextVQAIT2TRetrieval", "MTVQAViIT2TRetrieval")
        ]
    )
    assert f"| it2t | 3 | {it2t * 100:.2f} |" in text
