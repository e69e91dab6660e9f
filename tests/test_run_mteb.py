"""eval/run_mteb.py: local STS / text retrieval / image->text retrieval tasks through mteb, MTEB results layout,
scores equal to an independent computation from the same embeddings, and the bad-input paths."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import pearsonr, spearmanr

from configuration_vipyloqwen import MTEB_PROMPTS, TASKS, mteb_prompts, st_prompts
from eval import run_mteb
from tests.conftest import make_image

# The task module the tests write beside their data: mteb task classes that load local files.
TASKS_MODULE = """
import json
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

DATA = Path(__file__).resolve().parent / "data"
COMMON = dict(
    description="Local test task.", reference="https://example.org",
    dataset={"path": str(DATA), "revision": "local"}, eval_splits=["test"], eval_langs=["vie-Latn"],
    date=("2024-01-01", "2024-12-31"), dialect=[], domains=[], task_subtypes=[], license="cc-by-4.0",
    annotations_creators="derived", sample_creation="found", bibtex_citation="",
)


class LocalSTS(AbsTaskSTS):
    metadata = TaskMetadata(name="LocalSTS", type="STS", category="t2t", modalities=["text"],
                            main_score="cosine_spearman", **COMMON)
    min_score = 0
    max_score = 1

    def load_data(self, num_proc=None, **kwargs):
        lines = (DATA / "sts.jsonl").read_text(encoding="utf-8").splitlines()
        self.dataset = DatasetDict({"test": Dataset.from_list([json.loads(x) for x in lines])})
        self.data_loaded = True


class LocalTextRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(name="LocalTextRetrieval", type="Retrieval", category="t2t", modalities=["text"],
                            main_score="ndcg_at_10", **COMMON)

    def load_data(self, num_proc=None, **kwargs):
        d = json.loads((DATA / "retrieval.json").read_text(encoding="utf-8"))
        self.dataset = {"default": {"test": RetrievalSplitData(
            queries=Dataset.from_list(d["queries"]), corpus=Dataset.from_list(d["corpus"]),
            relevant_docs=d["qrels"], top_ranked=None)}}
        self.data_loaded = True


class LocalI2TRetrieval(AbsTaskRetrieval):
    metadata = TaskMetadata(name="LocalI2TRetrieval", type="Any2AnyRetrieval", category="i2t",
                            modalities=["image", "text"], main_score="ndcg_at_10", **COMMON)

    def load_data(self, num_proc=None, **kwargs):
        d = json.loads((DATA / "i2t.json").read_text(encoding="utf-8"))
        queries = Dataset.from_dict(
            {"id": [q["id"] for q in d["queries"]], "image": [str(DATA / q["image"]) for q in d["queries"]]},
            features=Features({"id": Value("string"), "image": Image()}),
        )
        self.dataset = {"default": {"test": RetrievalSplitData(
            queries=queries, corpus=Dataset.from_list(d["corpus"]), relevant_docs=d["qrels"], top_ranked=None)}}
        self.data_loaded = True
"""

STS = [
    ("Hà Nội là thủ đô của Việt Nam.", "Thủ đô của Việt Nam là Hà Nội.", 1.0),
    ("Con mèo ngủ trên ghế.", "Một con mèo đang ngủ trên chiếc ghế.", 0.9),
    ("Trời hôm nay mưa to.", "Hôm nay nắng đẹp.", 0.2),
    ("Tôi thích ăn phở.", "Giá vàng tăng mạnh.", 0.0),
    ("Xe buýt đến trễ.", "Chuyến xe buýt bị muộn.", 0.8),
    ("Học sinh đang làm bài kiểm tra.", "The students are taking a test.", 0.7),
    ("Cô ấy hát rất hay.", "Bóng đá là môn thể thao vua.", 0.1),
]
QUERIES = ["thủ đô Việt Nam", "món ăn nổi tiếng", "thời tiết hôm nay", "giá vàng"]
CORPUS = ["Hà Nội là thủ đô.", "Phở là món ăn nổi tiếng.", "Trời mưa.", "Giá vàng tăng.", "Bóng đá.", "Sông Hồng."]
CAPTIONS = ["màu đỏ", "màu xanh lá", "màu xanh dương", "màu vàng", "màu tím"]
N_IMAGES = 4
NAME = "me/mine"  # the results are filed under the name given (--name)


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory) -> Path:
    """The task module file, with its data folder beside it."""
    root = tmp_path_factory.mktemp("local_tasks")
    data = root / "data"
    data.mkdir()
    with (data / "sts.jsonl").open("w", encoding="utf-8") as fh:
        for a, b, s in STS:
            fh.write(json.dumps({"sentence1": a, "sentence2": b, "score": s}, ensure_ascii=False) + "\n")
    retrieval = {
        "queries": [{"id": f"q{i}", "text": t} for i, t in enumerate(QUERIES)],
        "corpus": [{"id": f"d{i}", "text": t} for i, t in enumerate(CORPUS)],
        "qrels": {f"q{i}": {f"d{i}": 1} for i in range(len(QUERIES))},
    }
    (data / "retrieval.json").write_text(json.dumps(retrieval, ensure_ascii=False), encoding="utf-8")
    for i in range(N_IMAGES):
        make_image(64, 48, seed=i + 1).save(data / f"img{i}.png")
    i2t = {
        "queries": [{"id": f"q{i}", "image": f"img{i}.png"} for i in range(N_IMAGES)],
        "corpus": [{"id": f"d{i}", "text": t} for i, t in enumerate(CAPTIONS)],
        "qrels": {f"q{i}": {f"d{i}": 1} for i in range(N_IMAGES)},
    }
    (data / "i2t.json").write_text(json.dumps(i2t, ensure_ascii=False), encoding="utf-8")
    module = root / "local_tasks.py"
    module.write_text(TASKS_MODULE, encoding="utf-8")
    return module


@pytest.fixture(scope="module")
def mteb_run(tiny_checkpoint, local_tasks, tmp_path_factory) -> tuple[int, Path]:
    """One CLI run over the three local tasks."""
    out = tmp_path_factory.mktemp("mteb_out")
    argv = ["--model", str(tiny_checkpoint), "--custom-tasks", str(local_tasks), "--output", str(out), "--no-progress"]
    argv += ["--name", NAME]
    rc = run_mteb.main([*argv, "--tasks", "LocalSTS", "LocalTextRetrieval", "LocalI2TRetrieval", "--batch-size", "3"])
    return rc, out


def _ndcg_mrr_recall(sim: np.ndarray, positives: list[int]) -> tuple[float, float, float]:
    """nDCG@10, MRR@10 and Recall@1 with one relevant document per query (ranks by descending score)."""
    ndcg, mrr, r1 = [], [], []
    for row, pos in zip(sim, positives, strict=True):
        rank = 1 + int((row > row[pos]).sum())
        ndcg.append(1 / math.log2(rank + 1) if rank <= 10 else 0.0)
        mrr.append(1 / rank if rank <= 10 else 0.0)
        r1.append(float(rank == 1))
    return float(np.mean(ndcg)), float(np.mean(mrr)), float(np.mean(r1))


def _scores(out: Path, checkpoint: Path, task: str) -> dict:
    folder = out / "results" / NAME.replace("/", "__") / run_mteb.content_hash(checkpoint)
    return json.loads((folder / f"{task}.json").read_text(encoding="utf-8"))["scores"]["test"][0]


def test_results_in_mteb_layout_with_model_meta(mteb_run, tiny_checkpoint):
    rc, out = mteb_run
    assert rc == 0
    revision = run_mteb.content_hash(tiny_checkpoint)
    folder = out / "results" / NAME.replace("/", "__") / revision
    for task in ("LocalSTS", "LocalTextRetrieval", "LocalI2TRetrieval"):
        result = json.loads((folder / f"{task}.json").read_text(encoding="utf-8"))
        assert result["task_name"] == task
    meta = json.loads((folder / "model_meta.json").read_text(encoding="utf-8"))
    assert meta["name"] == NAME and meta["revision"] == revision
    assert set(meta["modalities"]) == {"text", "image"}
    assert meta["embed_dim"] == 32 and meta["license"] == "apache-2.0"
    assert 9_000_000 < meta["n_parameters"] < 11_000_000
    assert len(meta["release_date"]) == 10
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    by_task = {row["task"]: row for row in summary["tasks"]}
    assert by_task["LocalI2TRetrieval"]["type"] == "Any2AnyRetrieval"
    for task, row in by_task.items():
        assert row["main_score"] == pytest.approx(_scores(out, tiny_checkpoint, task)["main_score"], abs=1e-6)
    expected_mean = np.mean([row["main_score"] for row in summary["tasks"]])
    assert summary["mean"] == pytest.approx(expected_mean)


def test_results_load_back_through_the_model_meta(mteb_run, tiny_checkpoint, st_model):
    """model_meta.json names the loader and the training datasets; mteb reads the results back with them."""
    import torch
    from mteb.cache import ResultCache
    from mteb.models import ModelMeta

    from eval.vipyloqwen_models import vipyloqwen, vipyloqwen_loader

    _, out = mteb_run
    folder = out / "results" / NAME.replace("/", "__") / run_mteb.content_hash(tiny_checkpoint)
    raw = (folder / "model_meta.json").read_text(encoding="utf-8")
    assert json.loads(raw)["loader"] == "vipyloqwen_loader" and json.loads(raw)["training_datasets"] == []
    meta = ModelMeta.model_validate_json_resolved(raw)  # resolves the loader name through mteb's registry
    assert meta.loader is vipyloqwen_loader and meta.training_datasets == vipyloqwen.training_datasets == set()
    assert meta.n_embedding_parameters == 151_936 * 64  # the tiny checkpoint's own, measured at the run
    results = ResultCache(cache_path=str(out)).load_results(models=[meta], include_remote=False)
    [model_results] = results.model_results
    assert model_results.model_name == NAME and model_results.model_revision == meta.revision
    assert {r.task_name for r in model_results.task_results} == {"LocalSTS", "LocalTextRetrieval", "LocalI2TRetrieval"}
    encoder = meta.loader(meta.name, revision=meta.revision, device="cpu", model_name_or_path=str(tiny_checkpoint))
    text = ["Hà Nội là thủ đô."]
    assert torch.allclose(torch.as_tensor(encoder.model.encode(text)), torch.as_tensor(st_model.encode(text)))


def test_sts_score_equals_independent_computation(mteb_run, tiny_checkpoint, st_model):
    rc, out = mteb_run
    prefix = st_prompts()[MTEB_PROMPTS["STS"]]
    assert prefix == TASKS["text_pair"].prefix
    e1 = st_model.encode([a for a, _, _ in STS], prompt=prefix, normalize_embeddings=True)
    e2 = st_model.encode([b for _, b, _ in STS], prompt=prefix, normalize_embeddings=True)
    cos = (e1 * e2).sum(axis=1)
    gold = [s for _, _, s in STS]
    scores = _scores(out, tiny_checkpoint, "LocalSTS")
    assert scores["cosine_spearman"] == pytest.approx(spearmanr(cos, gold).statistic, abs=1e-5)
    assert scores["cosine_pearson"] == pytest.approx(pearsonr(cos, gold).statistic, abs=1e-5)


def test_text_retrieval_score_equals_independent_computation(mteb_run, tiny_checkpoint, st_model):
    rc, out = mteb_run
    assert mteb_prompts()["Retrieval-query"] == "" and mteb_prompts()["Retrieval-document"] == ""
    q = st_model.encode(QUERIES, normalize_embeddings=True)
    d = st_model.encode(CORPUS, normalize_embeddings=True)
    ndcg, mrr, r1 = _ndcg_mrr_recall(q @ d.T, list(range(len(QUERIES))))
    scores = _scores(out, tiny_checkpoint, "LocalTextRetrieval")
    assert scores["ndcg_at_10"] == pytest.approx(ndcg, abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(mrr, abs=1e-5)
    assert scores["recall_at_1"] == pytest.approx(r1, abs=1e-5)


def test_image_to_text_retrieval_score_equals_independent_computation(mteb_run, tiny_checkpoint, local_tasks, st_model):
    rc, out = mteb_run
    data = local_tasks.parent / "data"
    images = [Image.open(data / f"img{i}.png") for i in range(N_IMAGES)]
    q = st_model.encode([{"image": img} for img in images], normalize_embeddings=True)
    d = st_model.encode(CAPTIONS, normalize_embeddings=True)
    ndcg, mrr, _ = _ndcg_mrr_recall(q @ d.T, list(range(N_IMAGES)))
    scores = _scores(out, tiny_checkpoint, "LocalI2TRetrieval")
    assert scores["ndcg_at_10"] == pytest.approx(ndcg, abs=1e-5)
    assert scores["mrr_at_10"] == pytest.approx(mrr, abs=1e-5)


def test_mapping_keys_are_valid_mteb_prompt_keys():
    from mteb.models.abs_encoder import AbsEncoder

    assert AbsEncoder.validate_task_to_prompt_name(mteb_prompts()) == mteb_prompts()
    assert set(MTEB_PROMPTS.values()) <= set(st_prompts())


def test_unknown_task_lists_close_matches(tiny_checkpoint, capsys):
    rc = run_mteb.main(["--model", str(tiny_checkpoint), "--tasks", "STSBenchmark-VM"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown task 'STSBenchmark-VM'" in err and "STSBenchmark-VN" in err
    rc = run_mteb.main(["--model", str(tiny_checkpoint), "--benchmark", "VN-MTEB vie"])
    assert rc == 2 and "VN-MTEB (vie, v1)" in capsys.readouterr().err


def test_model_that_fails_to_load_gives_clear_error(local_tasks, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    argv = ["--custom-tasks", str(local_tasks), "--tasks", "LocalSTS", "--output", str(tmp_path / "out")]
    assert run_mteb.main(["--model", str(broken), *argv]) == 2
    err = capsys.readouterr().err
    assert "could not load model" in err and str(broken) in err
    assert run_mteb.main(["--model", "erax-ai/no-such-model-here", *argv]) == 2
    err = capsys.readouterr().err
    assert "--model erax-ai/no-such-model-here: no such folder, and not a Hub model in the local cache" in err


@pytest.mark.parametrize("kind", ["missing", "relative", "empty folder", "file"])
def test_wrong_model_path_is_one_line_before_any_task_loads(tmp_path, capsys, kind):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.bin").write_bytes(b"x")
    model = {"missing": str(tmp_path / "nothere"), "relative": "./nothere", "empty folder": str(tmp_path / "empty"),
             "file": str(tmp_path / "file.bin")}[kind]  # fmt: skip
    assert run_mteb.main(["--model", model, "--tasks", "NoSuchTaskEither"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model {model}: ") and err.count("\n") == 1, err


def test_missing_dataset_offline_fails_fast_naming_the_task(
    tiny_checkpoint, local_tasks, tmp_path, monkeypatch, capsys
):
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    start = time.perf_counter()
    rc = run_mteb.main(["--model", str(tiny_checkpoint), "--tasks", "SciFact-VN", "--output", str(tmp_path / "o")])
    assert rc == 2 and time.perf_counter() - start < 15
    err = capsys.readouterr().err
    assert "SciFact-VN" in err and "offline" in err
    # A missing task beside an available one: named up front, the available one still runs, exit status 1.
    out = tmp_path / "mixed"
    argv = ["--model", str(tiny_checkpoint), "--custom-tasks", str(local_tasks), "--output", str(out), "--no-progress"]
    rc = run_mteb.main([*argv, "--tasks", "SciFact-VN", "LocalSTS"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "SciFact-VN" in captured.err and "[1/1] LocalSTS" in captured.out
    assert json.loads((out / "summary.json").read_text())["skipped_missing_data"] == ["SciFact-VN"]


def test_cached_dataset_is_not_reported_missing(tmp_path, monkeypatch):
    import datasets.config
    import mteb
    from huggingface_hub import constants

    task = mteb.get_task("SciFact-VN")
    repo, revision = task.metadata.dataset["path"], task.metadata.dataset["revision"]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    assert run_mteb.missing_offline([task]) == ["SciFact-VN"]
    (tmp_path / "hub" / f"datasets--{repo.replace('/', '--')}" / "snapshots" / revision).mkdir(parents=True)
    assert run_mteb.missing_offline([task]) == []


def test_content_hash_tracks_weights_not_model_card(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    first = run_mteb.content_hash(tmp_path)
    (tmp_path / "README.md").write_text("card")
    assert run_mteb.content_hash(tmp_path) == first and len(first) == 40
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert run_mteb.content_hash(tmp_path) != first


def test_prompt_override():
    prompts = run_mteb.parse_prompt_overrides(["Retrieval-query=instr"])
    assert prompts["Retrieval-query"] == TASKS["instr"].prefix
    with pytest.raises(run_mteb.EvalError, match="expected KEY=TASK"):
        run_mteb.parse_prompt_overrides(["Retrieval-query=nope"])


def test_results_are_filed_under_the_name_given_never_the_official_id(tmp_path):
    """Default: a Hub id names itself; a folder is named <parent>/<folder>, never erax-ai/viPyloQwen."""
    (tmp_path / "runs" / "my run" / "final").mkdir(parents=True)
    assert run_mteb.folder_name(tmp_path / "runs" / "my run" / "final") == "my-run/final"
    assert run_mteb.folder_name(tmp_path / "runs" / "my run" / "final") != run_mteb.DEFAULT_NAME
    parser = run_mteb.build_parser()
    for flag in ("--name", "--model-name"):  # --model-name is the old name
        assert parser.parse_args(["--model", "m", flag, "me/mine"]).name == "me/mine"
