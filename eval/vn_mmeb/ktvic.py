"""KTVIC (Vietnamese image captioning, daily life; 4,327 images / 21,635 captions): caption <-> image, test split.

Published layout (the authors' release, COCO captions style; not on the Hugging Face Hub): ``test_data.json`` with
``images`` = [{``id`` (int), ``filename`` (string)}] and ``annotations`` = [{``id``, ``image_id`` (int),
``caption`` (string), ``segment_caption``}], images in ``public-test-images/``. COCO's ``file_name`` is accepted
for ``filename``.
"""

from __future__ import annotations

from pathlib import Path

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from .base import COMMON, VNMMEBTask, image_rows, text_rows
from .layout import ImageSource, LayoutError, field, read_json, unique

KTVIC_SOURCE = "https://arxiv.org/abs/2401.08100 (the authors' release)"
KTVIC_CITATION = r"""
@article{pham2024ktvic,
  author = {Pham, Anh-Cuong and Nguyen, Van-Quang and Vuong, Thi-Hong and Ha, Quang-Thuy},
  journal = {arXiv preprint arXiv:2401.08100},
  title = {KTVIC: A Vietnamese Image Captioning Dataset on the Life Domain},
  year = {2024},
}
"""


def read_coco_images(data: dict, where: Path) -> dict[int, str]:
    """``images`` of a COCO-style file: id -> file name (``filename``, or COCO's ``file_name``)."""
    out: dict[int, str] = {}
    for i, img in enumerate(field(data, "images", list, where)):
        item = f"images[{i}]"
        key = "filename" if isinstance(img, dict) and "filename" in img else "file_name"
        image_id = field(img, "id", (int, str), where, item)
        if image_id in out:
            raise LayoutError(f"{where}: {item}: duplicate image id {image_id!r}")
        out[image_id] = field(img, key, str, where, item)
    return out


def load_ktvic(root: Path) -> tuple[dict[int, str], dict[int, list[tuple[str, str]]], ImageSource, Path]:
    """(image id -> file, image id -> [(annotation id, caption)], images, annotation file)."""
    where = root / "test_data.json"
    data = read_json(where)
    files = read_coco_images(data, where)
    captions: dict[int, list[tuple[str, str]]] = {}
    annotations = field(data, "annotations", list, where)
    unique((str(a.get("id")) for a in annotations if isinstance(a, dict)), str(where), "annotation id")
    for i, ann in enumerate(annotations):
        item = f"annotations[{i}]"
        image_id = field(ann, "image_id", (int, str), where, item)
        if image_id not in files:
            raise LayoutError(f"{where}: {item}: image_id {image_id!r} is not in 'images'")
        captions.setdefault(image_id, []).append(
            (str(field(ann, "id", (int, str), where, item)), field(ann, "caption", str, where, item))
        )
    for image_id in files:
        if image_id not in captions:
            raise LayoutError(f"{where}: image {image_id!r} has no caption in 'annotations'")
    return files, captions, ImageSource(root, "public-test-images"), where


_KTVIC_META = dict(
    reference="https://arxiv.org/abs/2401.08100",
    dataset={"path": "KTVIC", "revision": "test_data.json"},
    type="Any2AnyRetrieval",
    modalities=["image", "text"],
    eval_splits=["test"],
    main_score="ndcg_at_10",
    date=("2023-01-01", "2023-12-31"),
    domains=["Written"],
    task_subtypes=["Image Text Retrieval"],
    license="not specified",
    annotations_creators="human-annotated",
    bibtex_citation=KTVIC_CITATION,
    **COMMON,
)


class KTVICT2IRetrieval(VNMMEBTask):
    """Each caption is a query; its image is the one relevant document among the test images."""

    source = KTVIC_SOURCE
    metadata = TaskMetadata(
        name="KTVICT2IRetrieval",
        description="KTVIC test split (Vietnamese daily-life photos): retrieve the image a caption describes.",
        category="t2i",
        **_KTVIC_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        files, captions, images, where = load_ktvic(root)
        used = list(files)
        corpus = image_rows([f"d-{i}" for i in used], [images.get(files[i], f"{where}: image {i}") for i in used])
        qids, texts, qrels = [], [], {}
        for image_id in used:
            for ann_id, caption in captions[image_id]:
                qid = f"q-{ann_id}"
                qids.append(qid)
                texts.append(caption)
                qrels[qid] = {f"d-{image_id}": 1}
        return RetrievalSplitData(queries=text_rows(qids, texts), corpus=corpus, relevant_docs=qrels, top_ranked=None)


class KTVICI2TRetrieval(VNMMEBTask):
    """Each image is a query; its (five) captions are relevant among all test captions."""

    source = KTVIC_SOURCE
    metadata = TaskMetadata(
        name="KTVICI2TRetrieval",
        description="KTVIC test split (Vietnamese daily-life photos): retrieve the captions of an image.",
        category="i2t",
        **_KTVIC_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        files, captions, images, where = load_ktvic(root)
        used = list(files)
        queries = image_rows([f"q-{i}" for i in used], [images.get(files[i], f"{where}: image {i}") for i in used])
        dids, texts, qrels = [], [], {}
        for image_id in used:
            qrels[f"q-{image_id}"] = {}
            for ann_id, caption in captions[image_id]:
                dids.append(f"d-{ann_id}")
                texts.append(caption)
                qrels[f"q-{image_id}"][f"d-{ann_id}"] = 1
        return RetrievalSplitData(queries=queries, corpus=text_rows(dids, texts), relevant_docs=qrels, top_ranked=None)
