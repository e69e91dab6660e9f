"""eval/vn_mmeb adapters on the stand-ins (tests/fixtures/vn_mmeb, each dataset's published layout): what they read,
and the layout errors (missing file / field, wrong type, missing or broken image) naming the file and the field."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from eval import vn_mmeb
from eval.vn_mmeb.candidates import answer_candidates, normalize_answer
from eval.vn_mmeb.layout import LayoutError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vn_mmeb"


def _load(cls: type, root: Path = FIXTURES) -> dict:
    """The one split of a task class loaded from ``root``."""
    task = cls()
    vn_mmeb.localize([task], root)
    task.load_data()
    (split,) = task.eval_splits
    return task.dataset["default"][split]


@pytest.fixture()
def copy(tmp_path):
    """A fresh copy of the stand-ins to break."""
    shutil.copytree(FIXTURES, tmp_path / "fx")
    return tmp_path / "fx"


def test_fixtures_are_small():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 1_000_000


def test_every_adapter_reads_its_stand_in():
    shapes = {cls.metadata.name: cls for cls in vn_mmeb.TASK_CLASSES}
    expected = {  # (queries, documents) from the fixture files
        "VnXM3600I2TRetrieval": (4, 8),
        "KTVICT2IRetrieval": (8, 4),
        "KTVICI2TRetrieval": (4, 8),
        "OpenViVQAIT2TRetrieval": (8, 6),  # 8 questions, 6 distinct answers ("2" and "có" twice each)
        "OpenViVQAT2IRetrieval": (8, 4),
        "ViTextVQAT2IRetrieval": (6, 4),
        "ViTextVQAIT2TRetrieval": (6, 8),
        "ViInfographicVQAT2IRetrieval": (5, 5),
        "ViInfographicVQAMultiT2IRetrieval": (3, 5),
        "MTVQAViT2IRetrieval": (5, 3),  # the German row is left out: vi only
        "MTVQAViIT2TRetrieval": (5, 5),
    }
    assert set(shapes) == set(expected)
    for name, (n_q, n_d) in expected.items():
        data = _load(shapes[name])
        assert (len(data["queries"]), len(data["corpus"])) == (n_q, n_d), name
        category = shapes[name].metadata.category
        query_cols = {"t2i": {"text"}, "i2t": {"image"}, "it2t": {"image", "text"}}[category]
        assert set(data["queries"].column_names) - {"id"} == query_cols, name
        assert (data["top_ranked"] is not None) == (category == "it2t"), name


def test_qrels_follow_the_files():
    ktvic = json.loads((FIXTURES / "KTVIC/test_data.json").read_text(encoding="utf-8"))
    data = _load(vn_mmeb.benchmark.KTVICI2TRetrieval)
    for img in ktvic["images"]:
        caps = {f"d-{a['id']}" for a in ktvic["annotations"] if a["image_id"] == img["id"]}
        assert set(data["relevant_docs"][f"q-{img['id']}"]) == caps
    multi = json.loads((FIXTURES / "duytranus/ViInfographicVQA/data/multi_test.json").read_text(encoding="utf-8"))
    data = _load(vn_mmeb.benchmark.ViInfographicVQAMultiT2IRetrieval)
    for rec in multi:  # several relevant pages per query
        assert set(data["relevant_docs"][f"q-{rec['question_id']}"]) == {f"d-{i}" for i in rec["image_ids"]}
    assert max(len(r) for r in data["relevant_docs"].values()) == 3


def test_it2t_candidates_hold_the_gold_answers_and_no_equal_string():
    data = _load(vn_mmeb.benchmark.OpenViVQAIT2TRetrieval)
    texts = dict(zip(data["corpus"]["id"], data["corpus"]["text"], strict=True))
    raw = json.loads((FIXTURES / "uitnlp/OpenViVQA-dataset/vlsp2023_dev_data.json").read_text(encoding="utf-8"))
    for qid, ann in raw["annotations"].items():
        (gold,) = data["relevant_docs"][f"q-{qid}"]
        assert normalize_answer(texts[gold]) == normalize_answer(ann["answer"])
        cands = data["top_ranked"][f"q-{qid}"]
        assert gold in cands and len(cands) == len(set(cands)) == len(texts)  # 6 answers < 99 distractors: all
    # the two questions answered "2" share one document
    twos = [q for q, a in raw["annotations"].items() if a["answer"] == "2"]
    assert len(twos) == 2 and data["relevant_docs"][f"q-{twos[0]}"] == data["relevant_docs"][f"q-{twos[1]}"]


def test_candidate_lists_are_seeded_and_skip_collisions():
    gold = {f"q{i}": [str(i % 7)] for i in range(40)} | {"qa": ["Có."], "qb": ["có"]}
    corpus, qrels, top = answer_candidates(gold, n_distractors=3)
    assert len(corpus) == 8 and qrels["qa"] == qrels["qb"]  # "Có." and "có" are one answer
    again = answer_candidates(gold, n_distractors=3)[2]
    assert top == again
    for qid, cands in top.items():
        assert len(cands) == 4 and set(qrels[qid]) <= set(cands)
    with pytest.raises(ValueError, match="'qz' has no non-empty gold answer"):
        answer_candidates({"qz": ["  ", "..."]})


def test_missing_field_names_file_and_field(copy):
    path = copy / "uitnlp/OpenViVQA-dataset/vlsp2023_dev_data.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["annotations"]["1003"]["question"]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(LayoutError, match=r"vlsp2023_dev_data\.json: annotations\['1003'\]: missing field 'question'"):
        _load(vn_mmeb.benchmark.OpenViVQAT2IRetrieval, copy)


def test_wrong_type_names_file_and_field(copy):
    path = copy / "nhonhoccode/ViTextVQA/test.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["annotations"][2]["answers"] = "29A-123.45"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(LayoutError, match=r"test\.json: annotations\[2\]: field 'answers' must be array, got str"):
        _load(vn_mmeb.benchmark.ViTextVQAIT2TRetrieval, copy)
    path = copy / "KTVIC/test_data.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["images"][1]["id"] = [1]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(LayoutError, match=r"test_data\.json: images\[1\]: field 'id' must be integer or string"):
        _load(vn_mmeb.benchmark.KTVICT2IRetrieval, copy)


def test_missing_file_and_missing_image(copy):
    (copy / "duytranus/ViInfographicVQA/data/multi_test.json").rename(copy / "duytranus/ViInfographicVQA/data/m.json")
    with pytest.raises(LayoutError, match=r"multi_test\.json: file not found .*JSON files there: m\.json"):
        _load(vn_mmeb.benchmark.ViInfographicVQAMultiT2IRetrieval, copy)
    (copy / "duytranus/ViInfographicVQA/images/3433.jpg").unlink()
    with pytest.raises(LayoutError, match=r"single_test\.json: \[0\]: image '3433\.jpg' not found"):
        _load(vn_mmeb.benchmark.ViInfographicVQAT2IRetrieval, copy)
    archive = copy / "uitnlp/OpenViVQA-dataset/dev-images.zip"
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(archive, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b if not n.endswith("000000000001.jpg") else b"not a jpeg")
    with pytest.raises(
        LayoutError,
        match=r"annotations\['1002'\]: image 'dev-images/000000000001\.jpg' in .*dev-images\.zip does not open",
    ):
        _load(vn_mmeb.benchmark.OpenViVQAT2IRetrieval, copy)


def test_parquet_column_checks(copy):
    path = copy / "ByteDance/MTVQA/data/test-00000-of-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["qa_pairs"]), path)
    with pytest.raises(LayoutError, match=r"test-00000-of-00001\.parquet: missing column 'qa_pairs'"):
        _load(vn_mmeb.benchmark.MTVQAViT2IRetrieval, copy)
    pq.write_table(table.set_column(2, "lang", [["DE"] * len(table)]), path)
    with pytest.raises(LayoutError, match=r"no row with lang 'vi' \(languages present: DE\)"):
        _load(vn_mmeb.benchmark.MTVQAViT2IRetrieval, copy)
    xm = copy / "floschne/xm3600/data/vi-00000-of-00001.parquet"
    t = pq.read_table(xm)
    pq.write_table(t.set_column(t.schema.get_field_index("captions"), "captions", [["a caption"] * len(t)]), xm)
    with pytest.raises(LayoutError, match=r"vi-00000-of-00001\.parquet: column 'captions' must be list, got string"):
        _load(vn_mmeb.benchmark.VnXM3600I2TRetrieval, copy)


def test_dataset_not_available_offline_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(LayoutError, match=r"uitnlp/OpenViVQA-dataset: could not get the dataset \(offline"):
        vn_mmeb.benchmark.OpenViVQAT2IRetrieval().load_data()
    with pytest.raises(LayoutError, match=r"KTVIC: not on the Hugging Face Hub; download it from .* --data-root"):
        vn_mmeb.benchmark.KTVICT2IRetrieval().load_data()


def test_hub_path_reads_a_cached_snapshot_offline(tmp_path, monkeypatch):
    """The real code path (Hub id -> snapshot_download), offline, with the stand-in as a cached snapshot."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "datasets--uitnlp--OpenViVQA-dataset"
    commit = "0" * 40
    shutil.copytree(FIXTURES / "uitnlp/OpenViVQA-dataset", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    task = vn_mmeb.benchmark.OpenViVQAT2IRetrieval()
    assert task.metadata.dataset == {"path": "uitnlp/OpenViVQA-dataset", "revision": "main"}
    task.load_data()
    assert len(task.dataset["default"]["dev"]["queries"]) == 8
