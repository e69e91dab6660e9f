"""Training data: the JSONL schema, the validator and Arrow-backed per-task datasets.

Schema: one JSON object per line.

.. code-block:: text

    task      required  registry key or its prefix: text_pair | instr | ocr | vqa_multi | vqa_single
                        (or "<text_pair>", "<ocr>", ...)
    query     required  the anchor side: a string, or {"text": str, "images": [path, ...], "turns": [...]}
                        ("image", the key of Sentence-Transformers' dicts, is read as "images")
    positive  required  the document side: a string, or {"text": str, "images": [path, ...]}
    negative  optional  an explicit hard negative, same shape as positive
    negatives optional  a list of 1-32 explicit negatives, each the shape of positive (what scripts/mine.py
                        writes); with "negative" too, that one comes first. A negative that is the same
                        document as the positive (same text after the encode path's normalisation, same image
                        paths) is an error
    negative_scores     optional  one number per entry of "negatives" (the miner's scores; checked, not used)
    score     number in [0, 1]; required for text_pair (graded similarity), optional elsewhere
    id        optional  any string, kept in reports

    "turns" (instr, vqa_multi): the earlier turns, [{"role": "user" | "assistant", "content": str}, ...],
    serialised before "text" as "user: ...\\nassistant: ...\\n" lines (a multi-turn instruction or the
    dialogue history of a multi-turn VQA). Images: 1-5 per side, paths relative to the JSONL file's
    folder (or absolute; ``image_root`` / ``--image-root`` reads relative paths from another folder).
    ocr / vqa_single / vqa_multi need at least one query image; text_pair and instr take text only.

Example lines::

    {"task": "text_pair", "query": "con mèo đỏ", "positive": "the red cat", "score": 0.95}
    {"task": "<ocr>", "query": {"text": "Chữ trong ảnh là gì?", "images": ["img/ocr_001.png"]},
     "positive": "đỏ", "negative": "xanh"}

Reading is lossless: lines are read as bytes and decoded one by one, so a bad byte costs one line (reported with
its exact number and its raw bytes escaped) and never the rest of the file; ``lines read = good + bad + blank``
is checked at the end of every validation. Reading scales: :func:`validate_file` and :func:`load_task_datasets`
split the file into byte ranges for ``num_proc`` worker processes (default: the machine's cores), which validate,
verify each distinct image once and write the good rows straight into per-task Arrow files (memory-mapped on
disk; flat memory). One dataset per task, keyed by the registry name (``<task>+neg`` for the rows of a task that
carry explicit negatives, so every batch has one column layout), with the identity key of every side
(:mod:`~vipyloqwen_tools.data.identity`: what training's false-negative masking compares). Images are stored as
paths and opened only when a batch is built. With a ``cache_dir`` the report and the datasets are cached under the
file's fingerprint (validate once: a second run reuses them).

Modules: :mod:`~vipyloqwen_tools.data.lines` (lossless lines, byte ranges), :mod:`~vipyloqwen_tools.data.schema`
(one row), :mod:`~vipyloqwen_tools.data.report` (the report, the invariant), :mod:`~vipyloqwen_tools.data.scan`
(parallel validation), :mod:`~vipyloqwen_tools.data.arrow` (Arrow files), :mod:`~vipyloqwen_tools.data.cache`
(validate once), :mod:`~vipyloqwen_tools.data.identity` (document identity keys). This module is the entry point:
the room's public names are imported from here.

May import: the Hub files (the task registry), pyarrow, PIL. Nothing else of this package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vipyloqwen_tools.data.arrow import st_transform, to_st_input
from vipyloqwen_tools.data.cache import prepare_task_datasets
from vipyloqwen_tools.data.lines import decode_line, escape_bytes, iter_raw_lines
from vipyloqwen_tools.data.report import BadLine, Duplicates, ValidationReport, write_rejects
from vipyloqwen_tools.data.scan import scan_file
from vipyloqwen_tools.data.schema import (
    IMAGE_PATH_RULE,
    IMAGE_TASKS,
    ROLES,
    SIDES,
    TEXT_ONLY_TASKS,
    DataError,
    check_row,
    image_folder,
    parse_line,
    verify_image,
)


def default_cache_dir() -> Path:
    """Where :func:`load_task_datasets` caches without a ``cache_dir``: ``$HF_DATASETS_CACHE/vipyloqwen-jsonl``."""
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "vipyloqwen-jsonl"


def iter_file(
    path: str | os.PathLike, check_images: bool = True, image_root: str | os.PathLike | None = None
) -> Iterator[tuple[int, str, dict[str, Any] | None, str | None]]:
    """Yield ``(line_number, raw, row, error)`` for every non-blank line, in order; exactly one of row/error is set.

    Relative image paths are read from ``image_root`` (default: the file's folder).

    Serial and lossless (see :mod:`vipyloqwen_tools.data.lines`): a line that is not UTF-8 comes back as an error
    with its raw bytes escaped, and the reading goes on. Each distinct image is verified once per call.
    """
    path = Path(path)
    root = image_folder(path, image_root)
    verdicts: dict[str, str | None] = {}

    def image_check(image: str) -> str | None:
        if image not in verdicts:
            verdicts[image] = verify_image(image)
        return verdicts[image]

    for number, data in iter_raw_lines(path):
        text, error, _ = decode_line(data)
        if error is not None:
            yield number, escape_bytes(data.removesuffix(b"\n").removesuffix(b"\r")), None, error
            continue
        if not text.strip():
            continue
        try:
            yield number, text, check_row(text, root, image_check if check_images else None), None
        except ValueError as reason:
            yield number, text, None, str(reason)


def validate_file(
    path: str | os.PathLike,
    check_images: bool = True,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> ValidationReport:
    """Check every line of a JSONL file; returns per-task counts, every bad line (number + reason), duplicates.

    Relative image paths are read from ``image_root`` (default: the file's folder); a missing image's error names
    the path looked at.

    ``num_proc`` worker processes (default: the machine's cores; small files are read in this process). With a
    ``cache_dir`` the per-task Arrow datasets are built in the same pass and the report and datasets are cached
    under the file's fingerprint, so a training run on the same file reuses them (``report.cached``).

    Example::

        >>> report = validate_file("data/sample/train.jsonl")
        >>> print(report.summary())
    """
    if cache_dir is not None:
        return prepare_task_datasets(
            path, cache_dir, num_proc=num_proc, check_images=check_images, image_root=image_root
        )[1]
    return scan_file(path, num_proc=num_proc, check_images=check_images, image_root=image_root)[0]


def load_task_datasets(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    report: ValidationReport | None = None,
    num_proc: int | None = None,
):
    """Arrow-backed per-task datasets from a JSONL file: a ``DatasetDict`` keyed by registry task.

    Each dataset has the columns ``anchor, positive[, negatives][, score], _keys`` (``score`` only for text_pair),
    stored as ``{"text", "images"}`` structs and turned into ST inputs by a transform at batch time (``negatives``
    into ``negative, negative2, ...``). Rows of a task that carry explicit negatives form the dataset ``<task>+neg``.
    Bad lines are never loaded: without a ``report`` any bad line is a :class:`DataError`; with the file's
    :func:`validate_file` report they are skipped (training refuses them, or writes them to a rejects file first).
    Built by ``num_proc`` workers and cached in ``cache_dir`` (default :func:`default_cache_dir`) under the file's
    fingerprint.

    Example::

        >>> datasets = load_task_datasets("data/sample/train.jsonl")
        >>> sorted(datasets)
        ['instr', 'ocr', 'text_pair', 'vqa_multi', 'vqa_single']
    """
    check_images = report.check_images if report is not None else True
    datasets, built = prepare_task_datasets(
        path, cache_dir if cache_dir is not None else default_cache_dir(), num_proc, check_images
    )
    if report is None and built.bad:
        raise DataError(f"{Path(path).resolve()} has bad lines:\n{built.summary(max_bad=50)}")
    if report is not None and [b.line for b in report.bad] != [b.line for b in built.bad]:
        raise DataError(f"{path}: the report given does not match the file (it changed since?); validate it again")
    return datasets


def load_eval_rows(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The rows of an eval JSONL file grouped by task (normalised; raises DataError listing bad lines)."""
    report = validate_file(path, num_proc=1, image_root=image_root)
    if report.bad:
        raise DataError(f"eval file has bad lines:\n{report.summary()}")
    rows: dict[str, list[dict[str, Any]]] = {}
    for _, _, row, _ in iter_file(path, check_images=False, image_root=image_root):
        rows.setdefault(row["task"], []).append(row)
    return rows


__all__ = [
    "IMAGE_PATH_RULE",
    "IMAGE_TASKS",
    "ROLES",
    "SIDES",
    "TEXT_ONLY_TASKS",
    "BadLine",
    "DataError",
    "Duplicates",
    "ValidationReport",
    "default_cache_dir",
    "image_folder",
    "iter_file",
    "load_eval_rows",
    "load_task_datasets",
    "parse_line",
    "prepare_task_datasets",
    "st_transform",
    "to_st_input",
    "validate_file",
    "write_rejects",
]
