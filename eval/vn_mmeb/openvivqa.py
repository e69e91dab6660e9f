"""OpenViVQA (open-ended Vietnamese VQA, the VLSP 2023 ViVRC shared task), dev split: image + question -> answer
and question -> image. The dev split is the last one with public answers: the card says the test annotations come
"without answers" (scored on Codalab).

Published layout (``uitnlp/OpenViVQA-dataset``; sources: the Hub file listing at commit ``cc85c24c`` (7 commits;
the data files added in ``edc93adc`` "upload the OpenViVQA dataset"), the card (MIT licence, "11,000+ images with
37,000+ question-answer pairs"), and third-party loaders that read it: ``data["images"]`` keyed by image id,
``data["annotations"].values()`` with ``image_id`` / ``question`` / ``answer``):

======================  =====================================================================================
file                    ``vlsp2023_dev_data.json`` (762 kB; also ``_train_`` 6.6 MB, ``_test_`` 2.5 MB)
``images``              object: image id (string) -> file name
``annotations``         object: question id (string) -> ``{"image_id": int, "question": str, "answer": str}``
images                  ``dev-images.zip`` (165 MB; member paths not verified: matched by file name)
======================  =====================================================================================
"""

from __future__ import annotations

from pathlib import Path

from .base import task_metadata, text_only
from .builders import IT2T_SCHEME, ImageQuestionToAnswer, QuestionToImage, VQAItem, VQATask
from .layout import ImageSource, LayoutError, field, read_json

OPENVIVQA_REVISION = "cc85c24c863afb05b5a52f68950f9ba6b69975cf"
OPENVIVQA_LAYOUT = (
    "vlsp2023_{split}_data.json = {images: {image id: file name}, annotations: {question id: {image_id, question, "
    "answer}}}, images in {split}-images.zip (or the extracted {split}-images/ folder)"
)
OPENVIVQA_CITATION = r"""
@article{NGUYEN2023101868,
  author = {Nghia Hieu Nguyen and Duong T.D. Vo and Kiet Van Nguyen and Ngan Luu-Thuy Nguyen},
  journal = {Information Fusion},
  pages = {101868},
  title = {OpenViVQA: Task, dataset, and multimodal fusion models for visual question answering in Vietnamese},
  volume = {100},
  year = {2023},
}
"""


def load_openvivqa(root: Path, split: str) -> list[VQAItem]:
    """The split's questions, checked against the published layout."""
    where = root / f"vlsp2023_{split}_data.json"
    data = read_json(where)
    files = field(data, "images", dict, where)
    images = ImageSource(root, f"{split}-images", f"{split}-images.zip")
    items = []
    for qid, ann in field(data, "annotations", dict, where).items():
        item = f"annotations[{qid!r}]"
        image_id = str(field(ann, "image_id", (int, str), where, item))
        if image_id not in files:
            raise LayoutError(f"{where}: {item}: image_id {image_id} is not in 'images'")
        image = images.get(field(files, image_id, str, where, "images"), f"{where}: {item}")
        question, answer = field(ann, "question", str, where, item), field(ann, "answer", str, where, item)
        items.append(VQAItem(str(qid), image_id, image, question, [answer]))
    return items


_META = dict(
    reference="https://doi.org/10.1016/j.inffus.2023.101868",
    dataset={"path": "uitnlp/OpenViVQA-dataset", "revision": OPENVIVQA_REVISION},
    eval_splits=["dev"],
    date=("2022-01-01", "2023-12-31"),
    domains=["Scene"],
    license="mit",
    bibtex_citation=OPENVIVQA_CITATION,
)


class _OpenViVQA(VQATask):
    hub_files = ["vlsp2023_dev_data.json", "dev-images.zip", "README.md"]
    layout = OPENVIVQA_LAYOUT
    load = staticmethod(load_openvivqa)


class OpenViVQAIT2TRetrieval(_OpenViVQA, ImageQuestionToAnswer):
    """Image + question -> answer, queries with the ``vqa_single`` task prefix."""

    query_task = "vqa_single"
    metadata = task_metadata(
        "OpenViVQAIT2TRetrieval",
        "it2t",
        "OpenViVQA dev split: given an image and a Vietnamese question, rank the answers." + IT2T_SCHEME,
        **_META,
    )


class OpenViVQAT2IRetrieval(_OpenViVQA, QuestionToImage):
    """Question -> the image it was asked about."""

    metadata = task_metadata(
        "OpenViVQAT2IRetrieval",
        "t2i",
        "OpenViVQA dev split: retrieve the image a Vietnamese question was asked about.",
        **_META,
    )


OpenViVQAIT2TRetrievalTextOnly = text_only(OpenViVQAIT2TRetrieval)
