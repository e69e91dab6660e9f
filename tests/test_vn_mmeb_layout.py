"""eval/vn_mmeb adapters on the stand-ins (tests/fixtures/vn_mmeb, each dataset's published layout): what they read,
and the layout errors (missing file / field, wrong type, another layout, missing or broken image) naming the file,
the record and the field, and the published layout expected."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from eval import vn_mmeb
from eval.vn_mmeb import benchmark as bm
from eval.vn_mmeb.candidates import normalize_answer
from eval.vn_mmeb.layout import LayoutError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vn_mmeb"
INFO = "duytranus/ViInfographicVQA"
VITEXT = "minhquan6203/ViTextVQA"


def _load(cls: type, root: Path = FIXTURES) -> dict:
    """The one split of a task class loaded from ``root``."""
    task = cls()
    vn_mmeb.localize([task], root)
    task.load_data()
    (split,) = task.eval_splits
    return task.dataset["default"][split]


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


@pytest.fixture()
def copy(tmp_path):
    """A fresh copy of the stand-ins to break."""
    shutil.copytree(FIXTURES, tmp_path / "fx")
    return tmp_path / "fx"


def test_fixtures_are_small_and_in_the_published_file_names():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 1_000_000
    for path in (
        f"{VITEXT}/ViTextVQA_test_gt.json",
        f"{VITEXT}/ViTextVQA_test.json",
        f"{VITEXT}/ViTextVQA_images.zip",
        f"{INFO}/data/single_test.json",
        f"{INFO}/data/multi_test.json",
        "uitnlp/OpenViVQA-dataset/vlsp2023_dev_data.json",
        "uitnlp/OpenViVQA-dataset/dev-images.zip",
        "ByteDance/MTVQA/data/test-00000-of-00002.parquet",
        "KTVIC/test_data.json",
        "mteb/xm3600/data/vi-00000-of-00001.parquet",
        "mteb/wit/data/vi-00000-of-00001.parquet",
    ):
        assert (FIXTURES / path).is_file(), path
    # VnXM3600I2TRetrieval is gone: mteb's XM3600I2TRetrieval reads mteb/xm3600
    assert not (FIXTURES / "floschne").exists()


def test_every_adapter_reads_its_stand_in():
    expected = {  # (queries, documents) from the fixture files
        "KTVICT2IRetrieval": (8, 4),
        "KTVICI2TRetrieval": (4, 8),
        "OpenViVQAIT2TRetrieval": (10, 8),  # 10 questions, 8 distinct answers ("2" and "có" twice each)
        "OpenViVQAT2IRetrieval": (10, 4),
        "ViTextVQAT2IRetrieval": (7, 4),
        "ViTextVQAIT2TRetrieval": (7, 9),
        "ViInfographicVQAT2IRetrieval": (5, 5),
        "ViInfographicVQAMultiT2IRetrieval": (3, 5),
        "MTVQAViT2IRetrieval": (5, 3),  # the DE and FR rows are left out: vi only
        "MTVQAViIT2TRetrieval": (5, 5),
        "OpenViVQAIT2TRetrievalTextOnly": (10, 8),
        "ViTextVQAIT2TRetrievalTextOnly": (7, 9),
        "MTVQAViIT2TRetrievalTextOnly": (5, 5),
    }
    classes = {cls.metadata.name: cls for cls in vn_mmeb.TASK_CLASSES}
    assert set(classes) == set(expected)
    for name, (n_q, n_d) in expected.items():
        data = _load(classes[name])
        assert (len(data["queries"]), len(data["corpus"])) == (n_q, n_d), name
        category = classes[name].metadata.category
        query_cols = {"t2i": {"text"}, "i2t": {"image"}, "it2t": {"image", "text"}, "t2t": {"text"}}[category]
        assert set(data["queries"].column_names) - {"id"} == query_cols, name
        assert (data["top_ranked"] is not None) == (category in ("it2t", "t2t")), name


def test_qrels_follow_the_files():
    ktvic = json.loads((FIXTURES / "KTVIC/test_data.json").read_text(encoding="utf-8"))
    data = _load(bm.KTVICI2TRetrieval)
    for img in ktvic["images"]:
        caps = {f"d-{a['id']}" for a in ktvic["annotations"] if a["image_id"] == img["id"]}
        assert set(data["relevant_docs"][f"q-{img['id']}"]) == caps
    single = json.loads((FIXTURES / INFO / "data/single_test.json").read_text(encoding="utf-8"))
    data = _load(bm.ViInfographicVQAT2IRetrieval)
    for rec in single:  # the Hub release's image_path ("images/<n>.jpg") is the page key
        assert data["relevant_docs"][f"q-{rec['question_id']}"] == {f"d-{rec['image_path']}": 1}
    multi = json.loads((FIXTURES / INFO / "data/multi_test.json").read_text(encoding="utf-8"))
    data = _load(bm.ViInfographicVQAMultiT2IRetrieval)
    for rec in multi:  # every listed page relevant, context pages included
        assert set(data["relevant_docs"][f"q-{rec['question_id']}"]) == {f"d-{p}" for p in rec["image_paths"]}
    assert max(len(r) for r in data["relevant_docs"].values()) == 3


def test_it2t_gold_answers_collide_into_one_document():
    data = _load(bm.OpenViVQAIT2TRetrieval)
    texts = dict(zip(data["corpus"]["id"], data["corpus"]["text"], strict=True))
    raw = json.loads((FIXTURES / "uitnlp/OpenViVQA-dataset/vlsp2023_dev_data.json").read_text(encoding="utf-8"))
    for qid, ann in raw["annotations"].items():
        (gold,) = data["relevant_docs"][f"q-{qid}"]
        assert normalize_answer(texts[gold]) == normalize_answer(ann["answer"])
        assert gold in data["top_ranked"][f"q-{qid}"]
    twos = [q for q, a in raw["annotations"].items() if a["answer"] == "2"]
    assert len(twos) == 2 and data["relevant_docs"][f"q-{twos[0]}"] == data["relevant_docs"][f"q-{twos[1]}"]


def test_text_only_baseline_is_the_task_without_images():
    full, text = _load(bm.ViTextVQAIT2TRetrieval), _load(bm.ViTextVQAIT2TRetrievalTextOnly)
    assert "image" in full["queries"].column_names and "image" not in text["queries"].column_names
    assert full["queries"]["text"] == text["queries"]["text"] and full["queries"]["id"] == text["queries"]["id"]
    assert full["relevant_docs"] == text["relevant_docs"] and full["top_ranked"] == text["top_ranked"]
    assert full["corpus"]["text"] == text["corpus"]["text"]
    assert vn_mmeb.TEXT_ONLY_BASELINES["ViTextVQAIT2TRetrievalTextOnly"] == "ViTextVQAIT2TRetrieval"
    assert bm.ViTextVQAIT2TRetrievalTextOnly.query_task == "ocr"  # same prefix: only the image is removed


def test_missing_field_names_file_record_field_and_layout(copy):
    path = copy / "uitnlp/OpenViVQA-dataset/vlsp2023_dev_data.json"
    _rewrite(path, lambda d: d["annotations"]["1003"].pop("question"))
    with pytest.raises(LayoutError) as err:
        _load(bm.OpenViVQAT2IRetrieval, copy)
    msg = str(err.value)
    assert re.search(r"vlsp2023_dev_data\.json: annotations\['1003'\]: missing field 'question'", msg)
    assert "expected the published layout: vlsp2023_{split}_data.json = {images: {image id: file name}" in msg


def test_wrong_type_names_file_and_field(copy):
    path = copy / VITEXT / "ViTextVQA_test_gt.json"
    _rewrite(path, lambda d: d["annotations"][3].update(answers="29A-123.45"))
    with pytest.raises(LayoutError, match=r"ViTextVQA_test_gt\.json: annotations\[3\]: field 'answers' must be array"):
        _load(bm.ViTextVQAIT2TRetrieval, copy)
    path = copy / "KTVIC/test_data.json"
    _rewrite(path, lambda d: d["images"][1].update(id=[1]))
    with pytest.raises(LayoutError, match=r"test_data\.json: images\[1\]: field 'id' must be integer or string"):
        _load(bm.KTVICT2IRetrieval, copy)


def test_infographic_github_schema_is_named(copy):
    """The authors' GitHub data/test.json has image_id, the Hub release image_path: say which layout is expected."""
    path = copy / INFO / "data/single_test.json"
    _rewrite(path, lambda d: d[2].update(image_id=d[2].pop("image_path")[7:-4]))
    with pytest.raises(LayoutError) as err:
        _load(bm.ViInfographicVQAT2IRetrieval, copy)
    msg = str(err.value)
    assert "single_test.json: [2]: missing field 'image_path'" in msg and "authors' GitHub data/test.json" in msg
    assert "expected the published layout: data/single_{split}.json = [{question_id, image_path: 'images/" in msg
    path = copy / INFO / "data/multi_test.json"
    _rewrite(path, lambda d: d[0].update(image_ids=d[0].pop("image_paths")))
    with pytest.raises(LayoutError, match=r"multi_test\.json: \[0\]: missing field 'image_paths'"):
        _load(bm.ViInfographicVQAMultiT2IRetrieval, copy)


def test_vitextvqa_submission_template_is_never_scored(copy):
    root = copy / VITEXT
    (root / "ViTextVQA_test_gt.json").unlink()
    with pytest.raises(LayoutError, match=r"neither ViTextVQA_test_gt\.json .* ViTextVQA_test\.json is the submission"):
        _load(bm.ViTextVQAIT2TRetrieval, copy)
    (root / "ViTextVQA_test.json").rename(root / "ViTextVQA_test_gt.json")  # the template under the answers' name
    with pytest.raises(LayoutError, match=r"annotations\[0\]: answers\[0\] is the placeholder 'your answer'"):
        _load(bm.ViTextVQAIT2TRetrieval, copy)


def test_vitextvqa_mirror_is_read_only_when_alone(copy, caplog):
    """The unofficial mirror (nhonhoccode/ViTextVQA: test.json + images.zip) is the documented fallback."""
    official, mirror = copy / VITEXT, copy / "nhonhoccode/ViTextVQA"
    mirror.mkdir(parents=True)
    shutil.copy(official / "ViTextVQA_test_gt.json", mirror / "test.json")
    with zipfile.ZipFile(official / "ViTextVQA_images.zip") as src, zipfile.ZipFile(mirror / "images.zip", "w") as dst:
        for name in src.namelist():
            dst.writestr(name.replace("st_images/", "images/"), src.read(name))
    task = bm.ViTextVQAT2IRetrieval()
    vn_mmeb.localize([task], copy)
    assert task.metadata.dataset["path"] == str(official.resolve())  # the official release first
    shutil.rmtree(official)
    task = bm.ViTextVQAIT2TRetrieval()
    vn_mmeb.localize([task], copy)
    assert task.metadata.dataset["path"] == str(mirror.resolve()) and "fallback copy" in caplog.text
    task.load_data()
    assert len(task.dataset["default"]["test"]["queries"]) == 7


def test_missing_file_and_missing_image(copy):
    (copy / INFO / "data/multi_test.json").rename(copy / INFO / "data/m.json")
    with pytest.raises(LayoutError, match=r"multi_test\.json: file not found .*JSON files there: m\.json"):
        _load(bm.ViInfographicVQAMultiT2IRetrieval, copy)
    (copy / INFO / "images/3433.jpg").unlink()
    with pytest.raises(LayoutError, match=r"single_test\.json: \[0\]: image 'images/3433\.jpg' not found"):
        _load(bm.ViInfographicVQAT2IRetrieval, copy)
    archive = copy / "uitnlp/OpenViVQA-dataset/dev-images.zip"
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(archive, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b if not n.endswith("000000000001.jpg") else b"not a jpeg")
    with pytest.raises(
        LayoutError,
        match=r"annotations\['1003'\]: image 'dev-images/000000000001\.jpg' in .*dev-images\.zip does not open",
    ):
        _load(bm.OpenViVQAT2IRetrieval, copy)


def test_parquet_checks_name_file_and_row(copy):
    path = copy / "ByteDance/MTVQA/data/test-00000-of-00002.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["qa_pairs"]), path)
    with pytest.raises(LayoutError, match=r"test-00000-of-00002\.parquet: missing column 'qa_pairs'"):
        _load(bm.MTVQAViT2IRetrieval, copy)
    pairs = table.column("qa_pairs").to_pylist()
    pairs[2] = '[{"question": "Vé xe đi đâu?"}]'
    pq.write_table(table.set_column(table.schema.get_field_index("qa_pairs"), "qa_pairs", [pairs]), path)
    with pytest.raises(
        LayoutError, match=r"test-00000-of-00002\.parquet: row 2 \(id 7002\): qa_pairs\[0\]: missing field 'answer'"
    ):
        _load(bm.MTVQAViT2IRetrieval, copy)
    for p in (copy / "ByteDance/MTVQA/data").glob("*.parquet"):
        t = pq.read_table(p)
        pq.write_table(t.set_column(t.schema.get_field_index("lang"), "lang", [["DE"] * len(t)]), p)
    with pytest.raises(LayoutError, match=r"no row with lang 'vi' \(languages present: DE\)"):
        _load(bm.MTVQAViT2IRetrieval, copy)


def test_mtvqa_reads_both_spellings_of_qa_pairs():
    data = _load(bm.MTVQAViIT2TRetrieval)  # row 1 is a Python literal, the others JSON
    assert len(data["queries"]) == 5 and "Cửa hàng mở cửa lúc mấy giờ?" in data["queries"]["text"]


def test_dataset_not_available_offline_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(LayoutError, match=r"uitnlp/OpenViVQA-dataset: could not get the dataset \(offline"):
        bm.OpenViVQAT2IRetrieval().load_data()
    with pytest.raises(LayoutError, match=r"minhquan6203/ViTextVQA: could not get .* is gated: accept its conditions"):
        bm.ViTextVQAT2IRetrieval().load_data()
    with pytest.raises(LayoutError, match=r"KTVIC: not on the Hugging Face Hub; .* --data-root"):
        bm.KTVICT2IRetrieval().load_data()


def _cache(tmp_path: Path, repo: str, commit: str, ref: str | None = "main") -> None:
    """The stand-in of ``repo`` as a cached Hub snapshot at ``commit`` (what snapshot_download reads offline)."""
    folder = tmp_path / "hub" / f"datasets--{repo.replace('/', '--')}"
    shutil.copytree(FIXTURES / repo, folder / "snapshots" / commit)
    if ref:
        (folder / "refs").mkdir()
        (folder / "refs" / ref).write_text(commit)


def test_hub_path_reads_the_pinned_snapshot_offline(tmp_path, monkeypatch):
    """The real code path (Hub id -> snapshot_download at the pinned commit), offline, from a cached snapshot."""
    from huggingface_hub import constants

    revision = bm.OpenViVQAT2IRetrieval.metadata.dataset["revision"]
    _cache(tmp_path, "uitnlp/OpenViVQA-dataset", revision, ref=None)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    task = bm.OpenViVQAT2IRetrieval()
    task.load_data()
    assert len(task.dataset["default"]["dev"]["queries"]) == 10


def test_unpinned_hub_dataset_records_the_commit_it_read(tmp_path, monkeypatch):
    """ViInfographicVQA has no verified commit: the commit the download resolved to goes into the results."""
    from huggingface_hub import constants

    commit = "1" * 40
    _cache(tmp_path, INFO, commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    task = bm.ViInfographicVQAMultiT2IRetrieval()
    assert task.metadata.dataset["revision"] == "main"
    task.load_data()
    assert task.metadata.dataset["revision"] == commit and len(task.dataset["default"]["test"]["queries"]) == 3
