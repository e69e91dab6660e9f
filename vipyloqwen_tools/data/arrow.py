"""Per-task Arrow datasets written directly by the validating workers, read back memory-mapped.

Each worker writes, for its byte range, one Arrow stream file per dataset name (``<range>/<name>.arrow``) in
batches of :data:`BATCH_ROWS` rows, so no process ever holds a Python list of every row. A dataset name is the
registry task, or ``<task>+neg`` for the rows of a task that carry explicit negatives (one column layout per
batch). :func:`open_task_datasets` memory-maps the files (``datasets.Dataset.from_file``) and concatenates the
ranges in file order: a task's rows keep their order in the JSONL file, however many workers wrote them.

Stored columns: ``anchor, positive[, negatives][, score], _keys`` (``score`` only for text_pair), sides stored as
``{"text", "images"}`` structs (image paths, opened only at batch time by :func:`st_transform`); ``negatives`` is a
list of such structs (1-:data:`~vipyloqwen_tools.data.schema.MAX_NEGATIVES` per row; a task's rows without any join
its ``+neg`` dataset when it is opened, :func:`open_task_datasets`); ``_keys`` the identity key of
every side (:mod:`~vipyloqwen_tools.data.identity`: query, positive, negatives), computed here by the workers so
that training masks false negatives from the data, not from the embeddings. At batch time :func:`st_transform` turns
``negatives`` into the columns ``negative, negative2, ... negativeK`` (K = the dataset's widest row; a shorter row
is padded with its first negative, whose key is then :data:`~vipyloqwen_tools.data.identity.NO_DOCUMENT`, so the
loss never counts the copy). Beside each
``<name>.arrow``, ``<name>.lines.npy`` holds every row's line number in its range and byte offset in the file, and
``ranges.json`` the first line of every range: :func:`row_source` finds the JSONL line of a dataset row from them
(training names it when the row's image turns out unreadable at batch time).
"""

from __future__ import annotations

import functools
import json
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.data.identity import NO_DOCUMENT, row_keys

BATCH_ROWS = 4096
SIDE = pa.struct([("text", pa.string()), ("images", pa.list_(pa.string()))])
TASK_ORDER = {name: index for index, name in enumerate(TASKS)}
KEYS_COLUMN = "_keys"  # identity keys of a row's sides (query, positive, negatives); popped before tokenising


def dataset_name(row: dict[str, Any]) -> str:
    return f"{row['task']}+neg" if row["negatives"] else row["task"]


def negative_column(index: int) -> str:
    """The batch column of a row's ``index``-th explicit negative (from 0): ``negative``, ``negative2``, ...

    Not ``negative_2``: Sentence-Transformers gathers a column's features by the prefix ``<column>_``, so
    ``negative_2_input_ids`` would be read as part of ``negative``."""
    return "negative" if index == 0 else f"negative{index + 1}"


def task_of(name: str) -> str:
    return name.split("+")[0]


def sort_names(names) -> list[str]:
    """Dataset names in registry order, ``<task>`` before ``<task>+neg``."""
    return sorted(names, key=lambda n: (TASK_ORDER[task_of(n)], n))


def schema_for(name: str) -> pa.Schema:
    fields = [("anchor", SIDE), ("positive", SIDE)]
    if name.endswith("+neg"):
        fields.append(("negatives", pa.list_(SIDE)))
    if task_of(name) == "text_pair":
        fields.append(("score", pa.float32()))
    fields.append((KEYS_COLUMN, pa.list_(pa.int64())))
    return pa.schema(fields)


class RangeWriter:
    """Writes the good rows of one byte range into ``folder/<name>.arrow`` stream files, batch by batch."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.buffers: dict[str, dict[str, list]] = {}
        self.writers: dict[str, tuple[Any, Any]] = {}
        self.rows: dict[str, int] = {}
        self.sources: dict[str, tuple[array, array]] = {}  # per dataset: line in the range, byte offset in the file

    def add(self, row: dict[str, Any], line: int = 0, offset: int = 0) -> None:
        """Add one good row; ``line`` is its number in the range (from 1), ``offset`` its first byte in the file."""
        name = dataset_name(row)
        lines, offsets = self.sources.setdefault(name, (array("I"), array("Q")))
        lines.append(line)
        offsets.append(offset)
        buffer = self.buffers.get(name)
        if buffer is None:
            # One list per leaf column (side.text, side.images, score): building struct arrays from columns is
            # about twice as fast as converting a list of dicts.
            columns = schema_for(name).names
            buffer = self.buffers[name] = {
                f"{c}.{leaf}" if c in ("anchor", "positive") else c: []
                for c in columns
                for leaf in (("text", "images") if c in ("anchor", "positive") else ("",))
            }
        for column, side in (("anchor", "query"), ("positive", "positive")):
            buffer[f"{column}.text"].append(row[side]["text"])
            buffer[f"{column}.images"].append(row[side]["images"])
        if "negatives" in buffer:
            buffer["negatives"].append(row["negatives"])
        if "score" in buffer:
            buffer["score"].append(row["score"])
        buffer[KEYS_COLUMN].append(row_keys(row))
        if len(buffer["anchor.text"]) >= BATCH_ROWS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        buffer = self.buffers[name]
        if not buffer["anchor.text"]:
            return
        schema = schema_for(name)
        if name not in self.writers:
            sink = pa.OSFile(str(self.folder / f"{name}.arrow"), "wb")
            self.writers[name] = (sink, pa.ipc.new_stream(sink, schema))
        arrays = []
        for field in schema:
            if field.name in ("score", "negatives", KEYS_COLUMN):
                arrays.append(pa.array(buffer[field.name], field.type))
            else:
                text = pa.array(buffer[f"{field.name}.text"], pa.string())
                images = pa.array(buffer[f"{field.name}.images"], pa.list_(pa.string()))
                arrays.append(pa.StructArray.from_arrays([text, images], fields=list(SIDE)))
        batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        self.writers[name][1].write_batch(batch)
        self.rows[name] = self.rows.get(name, 0) + batch.num_rows
        for values in buffer.values():
            values.clear()

    def close(self) -> dict[str, int]:
        """Flush and close every file; returns rows written per dataset name."""
        for name in list(self.buffers):
            self._flush(name)
        for sink, writer in self.writers.values():
            writer.close()
            sink.close()
        for name, (lines, offsets) in self.sources.items():
            np.save(self.folder / f"{name}.lines.npy", np.stack([np.asarray(lines, "<u8"), np.asarray(offsets, "<u8")]))
        return dict(self.rows)


def write_range_lines(folder: Path, first_lines: list[int]) -> None:
    """Record the first line number of every range folder ``r<index>`` under ``folder`` (for :func:`row_source`)."""
    (folder / "ranges.json").write_text(json.dumps({"first_lines": first_lines}), encoding="utf-8")


def _members(folder: Path, name: str) -> list[str]:
    """The stored datasets that make up dataset ``name``, in order: a task's rows without explicit negatives join its
    ``+neg`` dataset when it has one (:func:`open_task_datasets`)."""
    task = task_of(name)
    if name.endswith("+neg") and any(folder.glob(f"r*/{task}.arrow")):
        return [name, task]
    return [name]


def row_source(folder: Path, name: str, index: int) -> tuple[int, int]:
    """``(line number, byte offset)`` in the JSONL file of row ``index`` of dataset ``name`` under ``folder``."""
    first_lines = json.loads((folder / "ranges.json").read_text(encoding="utf-8"))["first_lines"]
    remaining = index
    for member in _members(folder, name):
        for part in sorted(p for p in folder.iterdir() if p.is_dir()):
            file = part / f"{member}.lines.npy"
            if not file.is_file():
                continue
            sources = np.load(file, mmap_mode="r")
            if remaining < sources.shape[1]:
                return first_lines[int(part.name[1:])] + int(sources[0, remaining]) - 1, int(sources[1, remaining])
            remaining -= sources.shape[1]
    raise IndexError(f"dataset {name!r} has no row {index} in {folder}")


def read_line_at(path: str | Path, offset: int) -> str:
    """The line of a text file that starts at byte ``offset``, without its line ending (bad bytes escaped)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.readline()
    return data.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", errors="backslashreplace")


def negatives_per_row(dataset) -> int:
    """The explicit negative columns a batch of ``dataset`` gets: its widest row's count (0 without negatives)."""
    if "negatives" not in dataset.column_names:
        return 0
    widest = pc.max(pc.list_value_length(dataset.data.column("negatives"))).as_py()
    return int(widest or 0)


def _without_negatives_joined(with_negatives, without):
    """``with_negatives`` followed by the rows of ``without`` (given an empty ``negatives`` list each)."""
    from datasets import concatenate_datasets

    empty = pa.ListArray.from_arrays(pa.array(np.zeros(len(without) + 1, dtype=np.int32)), pa.array([], SIDE))
    without = without.add_column("negatives", empty, feature=with_negatives.features["negatives"])
    return concatenate_datasets([with_negatives, without.select_columns(with_negatives.column_names)])


def open_task_datasets(folder: Path, transform: bool = True):
    """The per-task ``DatasetDict`` from the range folders under ``folder`` (memory-mapped, file order).

    A task whose rows carry explicit negatives is one dataset, ``<task>+neg``: its rows with negatives first (file
    order), then its rows without (an empty ``negatives`` list: every slot of theirs is padding, masked by the loss).
    So the few rows a miner found no candidate for train with the others, instead of forming a dataset too small
    for one task-grouped step; a task without any negatives stays ``<task>`` (no negative columns at all).
    """
    from datasets import Dataset, DatasetDict, concatenate_datasets

    ranges = sorted(p for p in folder.iterdir() if p.is_dir())
    stored = sort_names({path.stem for part in ranges for path in part.glob("*.arrow")})

    def load(name: str):
        files = [part / f"{name}.arrow" for part in ranges if (part / f"{name}.arrow").is_file()]
        parts = [Dataset.from_file(str(file)) for file in files]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)

    out = DatasetDict()
    for name in stored:
        if not name.endswith("+neg") and f"{name}+neg" in stored:
            continue  # joins its task's +neg dataset
        members = _members(folder, name)
        dataset = load(name) if len(members) == 1 else _without_negatives_joined(load(name), load(members[1]))
        if transform:
            dataset.set_transform(functools.partial(st_transform, negatives=negatives_per_row(dataset)))
        out[name] = dataset
    return out


class ImageReadError(ValueError):
    """An image that cannot be used when its batch is built: deleted, truncated or changed after validation
    (``unusable``: it reads, but its size breaks a rule of the model's image path, e.g. an aspect ratio of 250)."""

    def __init__(self, path: str, reason: str, unusable: bool = False) -> None:
        super().__init__(f"cannot {'use' if unusable else 'read'} image {path!r}: {reason}")
        self.path, self.reason, self.unusable = path, reason, unusable


def open_image(path: str) -> Image.Image:
    """One stored image path opened for a batch, by the model's own image rules (``images_vipyloqwen``: its pixel
    limits, frame 0, then the size rules: a zero side, an aspect ratio above 200); raises :class:`ImageReadError`."""
    from images_vipyloqwen import ImageSizeError, check_size, load_image

    try:
        image = load_image(path, "image")
        check_size(image.size, "image")
    except ImageSizeError as error:
        raise ImageReadError(path, str(error).removeprefix("image: "), unusable=True) from None
    except (OSError, ValueError) as error:
        reason = str(error).removeprefix("image: ").removeprefix(f"cannot read image file {path!r}: ")
        raise ImageReadError(path, "missing" if reason.startswith("image file not found") else reason) from None
    return image


def to_st_input(side: dict[str, Any] | None) -> str | dict[str, Any]:
    """One stored side -> a Sentence-Transformers input; images are opened here (batch time), lazily.

    An image that cannot be read or used raises :class:`ImageReadError` (training's batch-time guard catches it per
    row)."""
    text = side.get("text")
    images = side.get("images") or []
    if not images:
        return text
    opened = [open_image(path) for path in images]
    item: dict[str, Any] = {}
    if text:
        item["text"] = text
    item["image"] = opened
    return item


def st_transform(batch: dict[str, list], negatives: int | None = None) -> dict[str, list]:
    """Dataset transform: stored sides -> ST inputs (text, or {"text", "image": [PIL]}); scores pass through.

    The ``negatives`` list becomes the columns :func:`negative_column` 0..``negatives``-1 (default: the batch's
    widest row; :func:`open_task_datasets` fixes it per dataset, so every batch of a dataset has the same columns);
    a row with fewer is padded with its first negative (none: its positive), and its ``_keys`` with
    :data:`~vipyloqwen_tools.data.identity.NO_DOCUMENT`: the loss never counts a padded slot.
    """
    if negatives is None:
        negatives = max((len(row) for row in batch.get("negatives") or []), default=0)
    out: dict[str, list] = {}
    for column, values in batch.items():
        if column in ("anchor", "positive"):
            out[column] = [to_st_input(value) for value in values]
        elif column == "negatives":
            fillers = [row[0] if row else positive for row, positive in zip(values, batch["positive"], strict=True)]
            for index in range(negatives):
                out[negative_column(index)] = [
                    to_st_input(row[index] if index < len(row) else filler)
                    for row, filler in zip(values, fillers, strict=True)
                ]
        elif column == KEYS_COLUMN:
            width = 2 + negatives
            out[column] = [list(keys) + [NO_DOCUMENT] * (width - len(keys)) for keys in values]
        else:
            out[column] = values
    return out


__all__ = [
    "BATCH_ROWS",
    "KEYS_COLUMN",
    "ImageReadError",
    "open_image",
    "RangeWriter",
    "dataset_name",
    "negative_column",
    "negatives_per_row",
    "open_task_datasets",
    "read_line_at",
    "row_source",
    "schema_for",
    "sort_names",
    "st_transform",
    "task_of",
    "write_range_lines",
]
