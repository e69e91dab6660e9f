"""MTVQA (multilingual text-centric VQA), Vietnamese test images: question -> image and image + question -> answer.

Published layout (``ByteDance/MTVQA``; sources: the Hub tree of ``data/`` at commit ``01fa460b`` "Upload dataset":
``test-0000{0,1,2}-of-00003.parquet`` (336 / 317 / 356 MB) and ``train-0000{0..6}-of-00007.parquet``; the card:
cc-by-nc-4.0, viewer test 2.12k rows / train 6.68k rows; a copy's card by an MTVQA author (JinghuiLuAstronaut/MTVQA)
with the features ``image`` (image), ``qa_pairs`` (string), ``lang`` (string), ``id`` (int64), test 2,116 rows;
third-party loaders: ``lang`` upper case (``"VI"``), ``qa_pairs`` a Python-literal list of ``{"question",
"answer"}`` (single quotes, apostrophes inside: read with ``ast.literal_eval``, JSON also accepted)):

=====================  ========================================================================================
files                  ``data/test-*.parquet``
``image``              struct ``{bytes, path}`` (the ``datasets`` Image feature)
``id``                 integer
``qa_pairs``           string holding a list of ``{"question": str, "answer": str}``
``lang``               language code, ``VI`` for Vietnamese (compared case-insensitively)
=====================  ========================================================================================

How many of the 2,116 test images are Vietnamese is not verified here (an author's ``MTVQA_VI`` copy has 250 test
rows). Licence cc-by-nc-4.0: non-commercial.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from .base import task_metadata, text_only
from .builders import IT2T_SCHEME, ImageQuestionToAnswer, QuestionToImage, VQAItem, VQATask
from .layout import LayoutError, field, image_from_struct, parquet_rows, parquet_values, shards, unique

MTVQA_CITATION = r"""
@article{tang2024mtvqa,
  author = {Tang, Jingqun and Liu, Qi and Ye, Yongjie and Lu, Jinghui and Wei, Shu and Lin, Chunhui
    and Li, Wanqing and others},
  journal = {arXiv preprint arXiv:2405.11985},
  title = {MTVQA: Benchmarking Multilingual Text-Centric Visual Question Answering},
  year = {2024},
}
"""
LANG = "vi"
MTVQA_REVISION = "01fa460b1cf7cde584ec95ff84f5991635cb8e54"
MTVQA_LAYOUT = (
    "data/{split}-*.parquet with columns image (struct {bytes, path}), id (integer), qa_pairs (string: a list of "
    "{question, answer}), lang (string, VI for Vietnamese)"
)


def parse_qa_pairs(text: str, where: str) -> list[dict]:
    """``qa_pairs``: JSON, or the Python-literal spelling some rows use (single quotes)."""
    try:
        pairs = json.loads(text)
    except json.JSONDecodeError:
        try:
            pairs = ast.literal_eval(text)
        except (ValueError, SyntaxError) as err:
            raise LayoutError(f"{where}: field 'qa_pairs' is not a JSON list: {err}") from err
    if not isinstance(pairs, list) or not pairs:
        raise LayoutError(f"{where}: field 'qa_pairs' must hold a non-empty list, got {type(pairs).__name__}")
    return pairs


def load_mtvqa(root: Path, split: str) -> list[VQAItem]:
    """The Vietnamese questions of the split, checked against the published layout."""
    files = shards(root, f"data/{split}-*.parquet")
    cols = {"image": "struct", "id": "integer", "qa_pairs": "string", "lang": "string"}
    vi = parquet_rows(files, cols, where=root / "data", keep=("lang", LANG))
    if not vi:
        langs = sorted({str(x) for x in parquet_values(files, "lang")})
        raise LayoutError(f"{root / 'data'}: no row with lang {LANG!r} (languages present: {', '.join(langs)})")
    unique((str(r["id"]) for r in vi), str(root / "data"), f"id among the {LANG!r} rows")
    items = []
    for row in vi:
        where = f"{root / 'data' / row['__file__']}: row {row['__row__']} (id {row['id']})"
        image = image_from_struct(row["image"], where)
        for j, pair in enumerate(parse_qa_pairs(row["qa_pairs"], where)):
            item = f"qa_pairs[{j}]"
            question, answer = field(pair, "question", str, where, item), field(pair, "answer", str, where, item)
            items.append(VQAItem(f"{row['id']}-{j}", str(row["id"]), image, question, [answer]))
    return items


_META = dict(
    reference="https://arxiv.org/abs/2405.11985",
    dataset={"path": "ByteDance/MTVQA", "revision": MTVQA_REVISION},
    date=("2024-01-01", "2024-12-31"),
    domains=["Scene", "Web"],
    license="cc-by-nc-4.0",
    bibtex_citation=MTVQA_CITATION,
)


class _MTVQA(VQATask):
    hub_files = ["data/test-*", "README.md"]
    layout = MTVQA_LAYOUT
    load = staticmethod(load_mtvqa)


class MTVQAViIT2TRetrieval(_MTVQA, ImageQuestionToAnswer):
    """Image + question -> answer (text-centric images), queries with the ``ocr`` task prefix."""

    query_task = "ocr"
    metadata = task_metadata(
        "MTVQAViIT2TRetrieval",
        "it2t",
        "MTVQA test split, Vietnamese: given a text-rich image and a question, rank the answers. Non-commercial "
        "licence (cc-by-nc-4.0)." + IT2T_SCHEME,
        **_META,
    )


class MTVQAViT2IRetrieval(_MTVQA, QuestionToImage):
    """Question -> the text-rich image it was asked about."""

    metadata = task_metadata(
        "MTVQAViT2IRetrieval",
        "t2i",
        "MTVQA test split, Vietnamese: retrieve the image a question was asked about. Non-commercial licence "
        "(cc-by-nc-4.0).",
        **_META,
    )


MTVQAViIT2TRetrievalTextOnly = text_only(MTVQAViIT2TRetrieval)
