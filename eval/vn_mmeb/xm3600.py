"""XM3600 (Crossmodal-3600), Vietnamese split: image -> caption, beside mteb's own caption -> image task.

Published layout (``floschne/xm3600``): one parquet split per language, ``data/vi-*.parquet``, columns
``image_id`` (string), ``image_locale``, ``captions`` (list of strings), ``captions_tokenized``,
``captions_tokenized_lowercase``, ``image`` (struct ``{bytes, path}``).
"""

from __future__ import annotations

from pathlib import Path

from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from .base import COMMON, VNMMEBTask, image_rows, text_rows
from .layout import LayoutError, image_from_struct, parquet_rows, shards, unique

XM3600_CITATION = r"""
@inproceedings{thapliyal2022crossmodal,
  author = {Thapliyal, Ashish V and Tuset, Jordi Pont and Chen, Xi and Soricut, Radu},
  booktitle = {Proceedings of the 2022 Conference on Empirical Methods in Natural Language Processing},
  pages = {715--729},
  title = {Crossmodal-3600: A Massively Multilingual Multimodal Evaluation Dataset},
  year = {2022},
}
"""


class VnXM3600I2TRetrieval(VNMMEBTask):
    """Each Vietnamese-captioned XM3600 image is a query; its own captions (about 2 per image) are relevant."""

    hub_files = ["data/vi-*", "README.md"]
    metadata = TaskMetadata(
        name="VnXM3600I2TRetrieval",
        description=(
            "Crossmodal-3600, Vietnamese captions: retrieve the captions of an image among all Vietnamese captions. "
            "The image -> caption direction beside mteb's caption -> image XM3600T2IRetrieval (vi)."
        ),
        reference="https://aclanthology.org/2022.emnlp-main.45/",
        dataset={"path": "floschne/xm3600", "revision": "main"},
        type="Any2AnyRetrieval",
        category="i2t",
        modalities=["image", "text"],
        eval_splits=["test"],
        main_score="ndcg_at_10",
        date=("2022-01-01", "2022-12-31"),
        domains=["Encyclopaedic", "Written"],
        task_subtypes=["Image Text Retrieval"],
        # The floschne/xm3600 card says cc-by-4.0 (Google's XM3600 annotations licence); mteb's own XM3600 tasks
        # record cc-by-sa-4.0 for their copy.
        license="cc-by-4.0",
        annotations_creators="human-annotated",
        bibtex_citation=XM3600_CITATION,
        **COMMON,
    )

    def build(self, root: Path, split: str) -> RetrievalSplitData:
        files = shards(root, "data/vi-*.parquet")
        rows = parquet_rows(files, {"image_id": "string", "captions": "list", "image": "struct"}, where=root / "data")
        unique((r["image_id"] for r in rows), str(root / "data"), "image_id")
        query_ids, images, doc_ids, captions, qrels = [], [], [], [], {}
        for i, row in enumerate(rows):
            where = f"{files[0].parent}/vi-*.parquet: row {i} (image_id {row['image_id']!r})"
            caps = [c for c in row["captions"] if isinstance(c, str) and c.strip()]
            if not caps:
                raise LayoutError(f"{where}: field 'captions' has no non-empty caption")
            qid = f"q-{row['image_id']}"
            query_ids.append(qid)
            images.append(image_from_struct(row["image"], where))
            qrels[qid] = {}
            for j, caption in enumerate(caps):
                doc = f"d-{row['image_id']}-{j}"
                doc_ids.append(doc)
                captions.append(caption)
                qrels[qid][doc] = 1
        return RetrievalSplitData(
            queries=image_rows(query_ids, images),
            corpus=text_rows(doc_ids, captions),
            relevant_docs=qrels,
            top_ranked=None,
        )
