"""ViTextVQA (Vietnamese scene-text VQA), test split: question -> image and image + question -> answer.

Published layout (``nhonhoccode/ViTextVQA``, the Hub release of the ViTextVQA paper's data): COCO-like
``{split}.json`` with ``images`` = [{``id``, ``filename`` (or COCO's ``file_name``)}] and ``annotations`` =
[{``id``, ``image_id``, ``question`` (string), ``answers`` (list of strings)}]; images in ``images.zip`` (or the
extracted ``images/`` folder). For research use only.
"""

from __future__ import annotations

from pathlib import Path

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from .base import COMMON, VNMMEBTask
from .ktvic import read_coco_images
from .layout import ImageSource, LayoutError, field, read_json, unique
from .vqa import IT2T_SCHEME, VQAItem, image_question_to_answer, question_to_image

VITEXTVQA_CITATION = r"""
@article{nguyen2024vitextvqa,
  author = {Nguyen, Quan Van and Tran, Dan Quang and Pham, Huy Quang and Nguyen, Thang Kien-Bao
    and Nguyen, Nghia Hieu and Nguyen, Kiet Van and Nguyen, Ngan Luu-Thuy},
  journal = {arXiv preprint arXiv:2404.10652},
  title = {ViTextVQA: A Large-Scale Visual Question Answering Dataset for Evaluating Vietnamese Text
    Comprehension in Images},
  year = {2024},
}
"""


def load_vitextvqa(root: Path, split: str) -> list[VQAItem]:
    """The split's questions, checked against the published layout."""
    where = root / f"{split}.json"
    data = read_json(where)
    files = read_coco_images(data, where)
    images = ImageSource(root, "images", "images.zip")
    annotations = field(data, "annotations", list, where)
    unique((str(a.get("id")) for a in annotations if isinstance(a, dict)), str(where), "annotation id")
    items = []
    for i, ann in enumerate(annotations):
        item = f"annotations[{i}]"
        image_id = field(ann, "image_id", (int, str), where, item)
        if image_id not in files:
            raise LayoutError(f"{where}: {item}: image_id {image_id!r} is not in 'images'")
        answers = field(ann, "answers", list, where, item)
        for j, answer in enumerate(answers):
            if not isinstance(answer, str):
                raise LayoutError(f"{where}: {item}: answers[{j}] must be a string, got {type(answer).__name__}")
        items.append(
            VQAItem(
                qid=str(field(ann, "id", (int, str), where, item)),
                image_key=str(image_id),
                image=images.get(files[image_id], f"{where}: {item}"),
                question=field(ann, "question", str, where, item),
                answers=answers,
            )
        )
    return items


_META = dict(
    reference="https://arxiv.org/abs/2404.10652",
    dataset={"path": "nhonhoccode/ViTextVQA", "revision": "main"},
    modalities=["image", "text"],
    eval_splits=["test"],
    main_score="ndcg_at_10",
    date=("2023-01-01", "2024-12-31"),
    domains=["Web"],
    license="not specified",
    annotations_creators="human-annotated",
    bibtex_citation=VITEXTVQA_CITATION,
    **COMMON,
)


class ViTextVQAIT2TRetrieval(VNMMEBTask):
    """Image + question -> answer (scene text), queries with the ``ocr`` task prefix."""

    query_task = "ocr"
    hub_files = ["test.json", "images.zip"]
    metadata = TaskMetadata(
        name="ViTextVQAIT2TRetrieval",
        description="ViTextVQA test split (scene text): given an image and a question, rank the answers. Research "
        "use only." + IT2T_SCHEME,
        type="Any2AnyRetrieval",
        category="it2t",
        task_subtypes=["Question answering"],
        **_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return image_question_to_answer(load_vitextvqa(root, split))


class ViTextVQAT2IRetrieval(VNMMEBTask):
    """Question -> the scene-text image it was asked about."""

    hub_files = ["test.json", "images.zip"]
    metadata = TaskMetadata(
        name="ViTextVQAT2IRetrieval",
        description="ViTextVQA test split (scene text): retrieve the image a question was asked about. Research use "
        "only.",
        type="Any2AnyRetrieval",
        category="t2i",
        task_subtypes=["Image Text Retrieval"],
        **_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        return question_to_image(load_vitextvqa(root, split))
