"""ViTextVQA (Vietnamese scene-text VQA), test split: question -> image and image + question -> answer.

**Official release** (read first): ``minhquan6203/ViTextVQA`` on the Hub, **gated** (its page: "You need to agree
to share your contact information to access this dataset"; 16,762 images, 50,342 questions; the card states no
licence). Accept the conditions on https://huggingface.co/datasets/minhquan6203/ViTextVQA, then either log in
(``huggingface-cli login``: the task downloads it itself) or download it and give its parent folder as
``--data-root`` (``<data-root>/minhquan6203/ViTextVQA/``). Layout (from a third-party preparation script written
against the official files; not verified here):

==========================  ===================================================================================
``ViTextVQA_test_gt.json``  the test answers: COCO-like ``{"images": [{"id", "filename"}], "annotations":
                            [{"id", "image_id", "question", "answers": [str, ...]}]}`` (10,028 questions /
                            3,353 images; train 35,159 / 11,733, dev 5,155 / 1,676)
``ViTextVQA_test.json``     the Kaggle **submission template**: every answer is "your answer". Never scored:
                            reading it is an error.
``ViTextVQA_images.zip``    all 16,762 images (~5.6 GB), matched by file name (or an extracted ``st_images/``)
==========================  ===================================================================================

Licence: CC BY-NC 3.0 as recorded by that third party (non-commercial); the paper says "publicly available for
research purposes"; the card states none.

**Fallback**: the unofficial re-upload ``nhonhoccode/ViTextVQA`` (README: "reorganized annotation format";
``images.zip``, COCO-like ``test.json``; no licence tag; commit ``4d6a49a``). It is read only when it alone is
under ``--data-root`` (``<data-root>/nhonhoccode/ViTextVQA/``), never silently instead of the official files.
"""

from __future__ import annotations

from pathlib import Path

from .base import task_metadata, text_only
from .builders import IT2T_SCHEME, ImageQuestionToAnswer, QuestionToImage, VQAItem, VQATask
from .layout import ImageSource, LayoutError, coco_annotations, coco_images, field, read_json

OFFICIAL = "minhquan6203/ViTextVQA"
MIRROR = "nhonhoccode/ViTextVQA"
#: The answer every question has in the submission template ViTextVQA_test.json.
PLACEHOLDER = "your answer"
VITEXTVQA_LAYOUT = (
    f"{OFFICIAL}: ViTextVQA_{{split}}_gt.json = {{images: [{{id, filename}}], annotations: [{{id, image_id, "
    f"question, answers: [str]}}]}} + ViTextVQA_images.zip (or st_images/); fallback {MIRROR}: {{split}}.json (same "
    "fields) + images.zip"
)
HOW_TO_GET = (
    f"{OFFICIAL} is gated: accept its conditions on https://huggingface.co/datasets/{OFFICIAL} and log in "
    f"(huggingface-cli login), or download it and pass its parent folder as --data-root "
    f"(<data-root>/{OFFICIAL}/); the unofficial mirror is read from <data-root>/{MIRROR}/"
)
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


def _annotation_file(root: Path, split: str) -> tuple[Path, ImageSource]:
    """The file holding the split's answers and the images: official first, then the mirror's layout."""
    official = root / f"ViTextVQA_{split}_gt.json"
    if official.is_file():
        return official, ImageSource(root, "st_images", "ViTextVQA_images.zip")
    mirror = root / f"{split}.json"
    if mirror.is_file():
        return mirror, ImageSource(root, "images", "images.zip")
    template = root / f"ViTextVQA_{split}.json"
    hint = (
        f"; {template.name} is the submission template (answers '{PLACEHOLDER}'), not the answers"
        if (template.is_file())
        else ""
    )
    raise LayoutError(f"{root}: neither {official.name} (official release) nor {mirror.name} (mirror) found{hint}")


def load_vitextvqa(root: Path, split: str) -> list[VQAItem]:
    """The split's questions with their answers, checked against the published layout."""
    where, images = _annotation_file(root, split)
    data = read_json(where)
    files = coco_images(data, where)
    items = []
    for item, ann in coco_annotations(data, where, files):
        answers = field(ann, "answers", list, where, item)
        for j, answer in enumerate(answers):
            if not isinstance(answer, str):
                raise LayoutError(f"{where}: {item}: answers[{j}] must be a string, got {type(answer).__name__}")
            if answer.strip().lower() == PLACEHOLDER:
                raise LayoutError(
                    f"{where}: {item}: answers[{j}] is the placeholder {PLACEHOLDER!r}: this is the submission "
                    f"template (ViTextVQA_test.json), not the answers (ViTextVQA_test_gt.json)"
                )
        image = images.get(files[ann["image_id"]], f"{where}: {item}")
        question = field(ann, "question", str, where, item)
        items.append(VQAItem(str(ann["id"]), str(ann["image_id"]), image, question, answers))
    return items


_META = dict(
    reference="https://arxiv.org/abs/2404.10652",
    # Gated: no revision could be read offline (see the dataset table); the commit a download resolves to is
    # recorded in the results.
    dataset={"path": OFFICIAL, "revision": "main"},
    date=("2023-01-01", "2024-12-31"),
    domains=["Scene"],
    license="cc-by-nc-3.0",
    bibtex_citation=VITEXTVQA_CITATION,
)


class _ViTextVQA(VQATask):
    hub_files = ["ViTextVQA_test_gt.json", "ViTextVQA_images.zip", "README.md"]
    layout = VITEXTVQA_LAYOUT
    how_to_get = HOW_TO_GET
    fallback = {"path": MIRROR, "revision": "main"}
    load = staticmethod(load_vitextvqa)


class ViTextVQAIT2TRetrieval(_ViTextVQA, ImageQuestionToAnswer):
    """Image + question -> answer (scene text), queries with the ``ocr`` task prefix."""

    query_task = "ocr"
    metadata = task_metadata(
        "ViTextVQAIT2TRetrieval",
        "it2t",
        "ViTextVQA test split (scene text; official release, answers from ViTextVQA_test_gt.json): given an image "
        "and a question, rank the answers. Non-commercial (CC BY-NC 3.0)." + IT2T_SCHEME,
        **_META,
    )


class ViTextVQAT2IRetrieval(_ViTextVQA, QuestionToImage):
    """Question -> the scene-text image it was asked about."""

    metadata = task_metadata(
        "ViTextVQAT2IRetrieval",
        "t2i",
        "ViTextVQA test split (scene text; official release): retrieve the image a question was asked about. "
        "Non-commercial (CC BY-NC 3.0).",
        **_META,
    )


ViTextVQAIT2TRetrievalTextOnly = text_only(ViTextVQAIT2TRetrieval)
