"""KTVIC (Vietnamese image captioning, daily life): caption -> image and image -> captions on its test split.

Status: **release not verified.** The paper (arXiv 2401.08100: 4,327 images, 21,635 captions, five captions per
image; its images come from UIT-EVJVQA, as a review of the paper reports) names no download location we could
read, and no repository of the authors was found; the dataset is not on the Hugging Face Hub under the authors'
names (third-party re-uploads exist, e.g. ``ThucPD/KTVIC`` with ``ktvic-test_data.json`` /
``ktvic-test-images.zip``). The test split size and the licence are not stated in any source we could read.

Layout read (``<data-root>/KTVIC/``), as every third-party loader of the release we found reads it (several public
training scripts: ``{split}_data.json`` with ``images[].filename`` / ``annotations[].caption``, images in
``public-test-images/`` for the test split and ``train-images/`` for train; the folder names are UIT-EVJVQA's):

====================  =======================================================================================
file                  ``test_data.json`` (a JSON object)
``images``            list of ``{"id": int, "filename": str}``
``annotations``       list of ``{"id": int, "image_id": int, "caption": str, ...}`` (other fields are ignored)
images                ``public-test-images/<filename>``
====================  =======================================================================================
"""

from __future__ import annotations

from pathlib import Path

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

from .base import NOT_ON_HUB, VNMMEBTask, task_metadata
from .builders import image_to_texts, text_to_images
from .layout import ImageSource, LayoutError, coco_annotations, coco_images, field, read_json

KTVIC_SOURCE = "the authors of arXiv 2401.08100 (no public download location verified)"
KTVIC_LAYOUT = (
    "KTVIC/test_data.json = {images: [{id, filename}], annotations: [{id, image_id, caption}]}, images in "
    "KTVIC/public-test-images/<filename>"
)
KTVIC_CITATION = r"""
@article{pham2024ktvic,
  author = {Pham, Anh-Cuong and Nguyen, Van-Quang and Vuong, Thi-Hong and Ha, Quang-Thuy},
  journal = {arXiv preprint arXiv:2401.08100},
  title = {KTVIC: A Vietnamese Image Captioning Dataset on the Life Domain},
  year = {2024},
}
"""


def load_ktvic(root: Path, split: str) -> tuple[dict[str, object], dict[str, list[tuple[str, str]]]]:
    """(image key -> image, image key -> [(annotation id, caption)]), every image with at least one caption."""
    where = root / f"{split}_data.json"
    data = read_json(where)
    files = coco_images(data, where)
    folder = ImageSource(root, "public-test-images" if split == "test" else f"{split}-images")
    captions: dict[str, list[tuple[str, str]]] = {str(i): [] for i in files}
    for item, ann in coco_annotations(data, where, files):
        captions[str(ann["image_id"])].append((str(ann["id"]), field(ann, "caption", str, where, item)))
    for key, caps in captions.items():
        if not caps:
            raise LayoutError(f"{where}: image {key!r} has no caption in 'annotations'")
    images = {str(i): folder.get(name, f"{where}: image {i!r}") for i, name in files.items()}
    return images, captions


_META = dict(
    reference="https://arxiv.org/abs/2401.08100",
    dataset={"path": "KTVIC", "revision": NOT_ON_HUB},
    date=("2023-01-01", "2023-12-31"),
    domains=["Scene"],
    license="not specified",
    bibtex_citation=KTVIC_CITATION,
)


class KTVICT2IRetrieval(VNMMEBTask):
    """Each caption is a query; its image is the one relevant document among the test images."""

    source = KTVIC_SOURCE
    layout = KTVIC_LAYOUT
    metadata = task_metadata(
        "KTVICT2IRetrieval",
        "t2i",
        "KTVIC test split (Vietnamese daily-life photos): retrieve the image a caption describes. "
        "Release not verified (see the dataset table).",
        **_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        images, captions = load_ktvic(root, split)
        queries = [(f"q-{ann}", text, [key]) for key, caps in captions.items() for ann, text in caps]
        return text_to_images(queries, images)


class KTVICI2TRetrieval(VNMMEBTask):
    """Each image is a query; its (five) captions are relevant among all test captions."""

    source = KTVIC_SOURCE
    layout = KTVIC_LAYOUT
    metadata = task_metadata(
        "KTVICI2TRetrieval",
        "i2t",
        "KTVIC test split (Vietnamese daily-life photos): retrieve the captions of an image. Release "
        "not verified (see the dataset table).",
        **_META,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        images, captions = load_ktvic(root, split)
        return image_to_texts(
            [(f"q-{key}", images[key], [(f"d-{ann}", text) for ann, text in captions[key]]) for key in images]
        )
