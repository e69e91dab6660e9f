"""The training JSONL row schema: one line of text -> one normalised row, or a ValueError naming the reason.

See :mod:`vipyloqwen_tools.data` for the schema table. Image files are checked by a callable passed in
(``image_check(path) -> reason | None``), so the parallel validator can verify each distinct image once, in
worker processes, and the serial reader can memoise; :func:`verify_image` is the check both use.

Example::

    >>> parse_line('{"task": "text_pair", "query": "a", "positive": "b", "score": 1}', Path("."))["task"]
    'text_pair'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile

from configuration_vipyloqwen import MAX_IMAGES_PER_ITEM, TASKS, resolve_task
from images_vipyloqwen import ImageSizeError, check_image_file, pil_limit_lifted
from vipyloqwen_tools.data.identity import same_input

IMAGE_TASKS = frozenset(name for name, spec in TASKS.items() if "image" in spec.query)
TEXT_ONLY_TASKS = frozenset(TASKS) - IMAGE_TASKS
SIDES = ("query", "positive", "negatives")  # "negatives": a list of sides (the explicit negatives)
ROLES = ("user", "assistant", "system")
ROW_FIELDS = ("task", "query", "positive", "negative", "negatives", "negative_scores", "score", "id")
# Explicit negatives per row, at most. Every row of a task's "+neg" dataset is padded to the widest row's count (one
# column layout per batch), so one row with many negatives makes every batch of that task embed that many.
MAX_NEGATIVES = 32

ImageCheck = Callable[[str], "str | None"]


class DataError(ValueError):
    """A data file that cannot be used, with every bad line in the message."""


def verify_image(path: str) -> str | None:
    """``None`` when the image file at ``path`` decodes completely and the model can take its size, else the reason
    ("missing", "unreadable: ...", "unusable: ...").

    Size first, from the header (:func:`images_vipyloqwen.check_image_file`: every size rule the model's image path
    applies, a zero side, an aspect ratio above 200, the pixel limit of a file, the decode budget): such an image
    reads, but the collator would refuse it at batch time, days into a run. Then the pixels: ``Image.verify``
    alone checks structure (PNG chunk CRCs) but not that the pixel data is complete (it passes a truncated JPEG),
    so the image is also decoded; JPEGs decode at 1/8 scale (``draft``), which still reads every byte of the
    entropy-coded data, so a truncated file fails here and not in the middle of training. Files are opened under
    the image module's own pixel limits (not PIL's lower decompression-bomb limit): what the model accepts, the
    validator accepts.
    """
    if not os.path.isfile(path):
        return "missing"
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images cannot be detected")
    try:
        check_image_file(path, "image")
    except ImageSizeError as error:
        return "unusable: " + str(error).removeprefix("image: ")
    except Exception as error:  # noqa: BLE001 - PIL raises many types for a bad file
        return f"unreadable: {error}"
    try:
        with pil_limit_lifted():
            opened = Image.open(path)
        with opened as image:
            image.verify()
        with pil_limit_lifted():
            opened = Image.open(path)
        with opened as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as error:  # noqa: BLE001 - PIL raises many types for a bad file
        return f"unreadable: {error}"
    return None


# The reason of a score out of range; the report reads the scores back from it (the 0-5 scale hint).
SCORE_RANGE_ERROR = "score {score} outside [0, 1]"
# Where a relative image path is read from: said in every missing-image error (with the path looked at).
IMAGE_PATH_RULE = "a relative image path is read from the JSONL file's folder, or from --image-root DIR"


def image_folder(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> str:
    """The folder the relative image paths of the JSONL file ``path`` are read from: ``image_root`` when given,
    else the file's own folder (absolute)."""
    return os.path.abspath(image_root) if image_root else str(Path(path).resolve().parent)


def _image_error(side: str, image: str, path: str, reason: str) -> ValueError:
    if reason == "missing":
        return ValueError(f"{side}: missing image {image!r}: no file {path} ({IMAGE_PATH_RULE})")
    if reason.startswith("unusable: "):
        return ValueError(f"{side}: image {image!r} ({path}) cannot be used: {reason.removeprefix('unusable: ')}")
    return ValueError(f"{side}: unreadable image {image!r} ({path}): {reason.removeprefix('unreadable: ')}")


def _turns_text(turns: Any, side: str, text: str | None) -> str:
    if side != "query":
        raise ValueError(f"{side}.turns: only the query side has turns")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{side}.turns: expected a non-empty list of {{role, content}} objects")
    rendered = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise ValueError(f'{side}.turns[{index}]: expected {{"role": user|assistant|system, "content": str}}')
        if not turn["content"].strip():
            raise ValueError(f"{side}.turns[{index}]: empty content")
        rendered.append(f"{turn['role']}: {turn['content']}")
    return "\n".join(rendered + ([f"user: {text}"] if text and text.strip() else []))


def parse_side(value: Any, side: str, task: str, root: str, image_check: ImageCheck | None) -> dict[str, Any]:
    """Normalise one side to ``{"text": str | None, "images": [absolute path]}``; raises ValueError."""
    if isinstance(value, str):
        value = {"text": value}
    if not isinstance(value, dict):
        raise ValueError(f"{side}: expected a string or an object, got {type(value).__name__}")
    unknown = set(value) - {"text", "images", "image", "turns"}
    if unknown:
        raise ValueError(f"{side}: unknown field(s) {sorted(unknown)}; valid: text, images (or image), turns")
    if "image" in value:  # Sentence-Transformers' dict key, read as the schema's "images"
        if "images" in value:
            raise ValueError(f"{side}: both 'images' and 'image': give the image paths once, as 'images'")
        value = {**value, "images": value["image"]}
    text = value.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{side}.text: expected a string, got {type(text).__name__}")
    if value.get("turns") is not None:
        text = _turns_text(value["turns"], side, text)
    images = value.get("images") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{side}.images: expected a list of image paths")
    if len(images) > MAX_IMAGES_PER_ITEM:
        raise ValueError(f"{side}: too many images ({len(images)}), at most {MAX_IMAGES_PER_ITEM}")
    if images and task in TEXT_ONLY_TASKS:
        raise ValueError(f"{side}: task {task} takes text only, got {len(images)} image(s)")
    if side == "query" and task in IMAGE_TASKS and not images:
        raise ValueError(f"query: task {task} needs 1-{MAX_IMAGES_PER_ITEM} images")
    resolved = []
    for image in images:
        # normpath, not Path.resolve: no syscall per image (11M rows), same absolute path without symlinks.
        path = os.path.normpath(image if os.path.isabs(image) else os.path.join(root, image))
        if image_check is not None and (reason := image_check(path)) is not None:
            raise _image_error(side, image, path, reason)
        resolved.append(path)
    if (text is None or not text.strip()) and not resolved:
        raise ValueError(f"{side}: empty text and no image")
    return {"text": text if text is not None and text.strip() else None, "images": resolved}


def _parse_negatives(row: dict[str, Any], task: str, root: str, image_check: ImageCheck | None) -> list[dict]:
    """The explicit negatives of a row: the single ``negative`` first, then the ``negatives`` list."""
    negatives = []
    if row.get("negative") is not None:
        negatives.append(parse_side(row["negative"], "negative", task, root, image_check))
    if "negatives" in row:
        value = row["negatives"]
        if not isinstance(value, list):
            raise ValueError(
                f"negatives: expected a list of 1-{MAX_NEGATIVES} documents (each a string or "
                f'{{"text", "images"}}), got {type(value).__name__}'
            )
        if not value:
            raise ValueError(f"negatives: empty list; give 1-{MAX_NEGATIVES} documents or leave the field out")
        for index, side in enumerate(value):
            negatives.append(parse_side(side, f"negatives[{index}]", task, root, image_check))
    if len(negatives) > MAX_NEGATIVES:
        raise ValueError(f"{len(negatives)} explicit negatives (negative + negatives), at most {MAX_NEGATIVES}")
    scores = row.get("negative_scores")
    if scores is not None:
        listed = len(row.get("negatives") or [])
        if not isinstance(scores, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores
        ):
            raise ValueError("negative_scores: expected a list of numbers (one per entry of negatives)")
        if len(scores) != listed:
            raise ValueError(f"negative_scores: {len(scores)} scores for {listed} negatives")
    return negatives


def parse_row(text: str, root: str, image_check: ImageCheck | None = None) -> dict[str, Any]:
    """Validate and normalise one decoded JSONL line; raises ValueError with the reason.

    Returns ``{"task", "query", "positive", "negatives" (a list, maybe empty), "score" (or None), "id" (or None)}``
    with sides normalised to ``{"text", "images"}`` (absolute image paths). ``negatives`` holds the single
    ``negative`` (first) and the ``negatives`` list of the line; ``negative_scores`` (the miner's) is checked and
    not kept. A negative that is the same input as the positive (text after the encode path's normalisation, image
    paths: :func:`~vipyloqwen_tools.data.identity.same_input`) is an error.
    """
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON: {error.msg} at column {error.colno}") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if "task" not in row:
        raise ValueError("missing field 'task'")
    if not isinstance(row["task"], str):
        raise ValueError("'task' must be a string")
    try:
        task = resolve_task(row["task"])
    except ValueError:
        task = None
    if task is None:
        raise ValueError(f"unknown task {row['task']!r}; valid: {', '.join(TASKS)} (or their <prefix> forms)")
    unknown = set(row) - set(ROW_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; valid: {', '.join(ROW_FIELDS)}")
    for side in ("query", "positive"):
        if row.get(side) is None:
            raise ValueError(f"missing field {side!r}")
    score = row.get("score")
    if score is None and task == "text_pair":
        raise ValueError("missing field 'score' (required for text_pair)")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"score must be a number in [0, 1], got {score!r}")
        if not 0.0 <= score <= 1.0:
            raise ValueError(SCORE_RANGE_ERROR.format(score=score))
    query = parse_side(row["query"], "query", task, root, image_check)
    positive = parse_side(row["positive"], "positive", task, root, image_check)
    negatives = _parse_negatives(row, task, root, image_check)
    names = (["negative"] if row.get("negative") is not None else []) + [
        f"negatives[{i}]" for i in range(len(row.get("negatives") or []))
    ]
    for name, negative in zip(names, negatives, strict=True):
        if same_input(negative, positive):
            raise ValueError(f"{name}: the same document as the positive (a correct answer is not a negative)")
    return {
        "task": task,
        "query": query,
        "positive": positive,
        "negatives": negatives,
        "score": float(score) if score is not None else None,
        "id": str(row["id"]) if row.get("id") is not None else None,
    }


def row_sides(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The sides of a normalised row in column order: query, positive, every explicit negative."""
    return [row["query"], row["positive"], *row["negatives"]]


def row_images(row: dict[str, Any]) -> list[str]:
    """Every image path of a normalised row (query, positive, negatives), in order."""
    return [p for side in row_sides(row) for p in side["images"]]


def check_row(text: str, root: str, image_check: ImageCheck | None) -> dict[str, Any]:
    """Parse a line, then check its images; raises ValueError.

    The schema comes first and the images second, for every caller alike: a line with a schema error and a bad
    image always reports the schema error, however the file was split between workers.
    """
    row = parse_row(text, root)
    if image_check is not None and any(image_check(p) is not None for p in row_images(row)):
        row = parse_row(text, root, image_check)  # raises, naming the side and the image as written
    return row


def parse_line(raw: str, root: Path | str, check_images: bool = True) -> dict[str, Any]:
    """Validate and normalise one JSONL line (a str); raises ValueError with the reason.

    Kept for callers of the serial API; the validators use :func:`check_row` with a memoised image check.
    """
    return check_row(raw, str(root), verify_image if check_images else None)


__all__ = [
    "IMAGE_PATH_RULE",
    "SCORE_RANGE_ERROR",
    "IMAGE_TASKS",
    "MAX_NEGATIVES",
    "ROLES",
    "ROW_FIELDS",
    "SIDES",
    "TEXT_ONLY_TASKS",
    "DataError",
    "check_row",
    "image_folder",
    "parse_line",
    "parse_row",
    "parse_side",
    "row_images",
    "row_sides",
    "verify_image",
]
