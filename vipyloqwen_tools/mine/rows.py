"""The miner's input: the rows of a training file, their identity keys, and the candidate documents per task.

Rows are read with the training validator's rules (:mod:`vipyloqwen_tools.data`): a bad line is a reject with its line
number and reason, never mined. Every good row keeps its line as written (the output adds two fields to it).

Per task (:class:`TaskRows`): the distinct queries (by identity key, first occurrence first) and the candidate pool,
by default every distinct document of the task in the file (positives and explicit negatives). The correct answers
of a query are the positives of every row with that query (positive pairs only: a text_pair row under the threshold
says its document does *not* answer its query).

``--corpus ITEMS.jsonl`` (the items schema of ``scripts/index.py``): every item that fits the task (its ``task``
empty or that task; images only where the task's documents may have them) is a candidate instead. The file's own
documents are still embedded: the positives' scores are the margin's reference.

Example::

    >>> table = read_rows("train.jsonl", bad_lines={})
    >>> table.tasks["ocr"].rows[0].line, len(table.tasks["ocr"].pool)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from vipyloqwen_tools.data import TEXT_ONLY_TASKS, iter_file
from vipyloqwen_tools.data.identity import side_key


@dataclasses.dataclass
class MineRow:
    """One good row: its line (number, text), query and positive by index into its task's lists, whether it is a
    positive pair, and the keys never to return for it (its own single ``negative``)."""

    line: int
    raw: str
    query: int
    positive: int
    positive_pair: bool
    own_negatives: tuple[int, ...] = ()


@dataclasses.dataclass
class Pool:
    """Candidate documents: sides (for embedding), output values (as the output line writes them), identity keys."""

    sides: list[dict] = dataclasses.field(default_factory=list)
    values: list[Any] = dataclasses.field(default_factory=list)
    keys: list[int] = dataclasses.field(default_factory=list)
    index: dict[int, int] = dataclasses.field(default_factory=dict)

    def add(self, side: dict, value: Any, key: int | None = None) -> int:
        key = side_key(side) if key is None else key
        if key not in self.index:
            self.index[key] = len(self.keys)
            self.sides.append(side)
            self.values.append(value)
            self.keys.append(key)
        return self.index[key]

    def __len__(self) -> int:
        return len(self.keys)


@dataclasses.dataclass
class TaskRows:
    """The rows of one task, its distinct queries, its file documents, the candidate pool, the correct answers."""

    task: str
    rows: list[MineRow] = dataclasses.field(default_factory=list)
    queries: Pool = dataclasses.field(default_factory=Pool)
    documents: Pool = dataclasses.field(default_factory=Pool)  # the file's own (positives, explicit negatives)
    pool: Pool | None = None  # candidates; None: the file's documents
    answers: dict[int, set[int]] = dataclasses.field(default_factory=dict)  # query index -> document keys

    @property
    def candidates(self) -> Pool:
        return self.documents if self.pool is None else self.pool


@dataclasses.dataclass
class RowTable:
    """Every line of the file: good rows per task, rejects ``(line, reason, raw)``, the order of lines."""

    tasks: dict[str, TaskRows] = dataclasses.field(default_factory=dict)
    rejects: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    # the good rows in file order: (line, task, index in the task's rows)
    order: list[tuple[int, str, int]] = dataclasses.field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.order)


def read_rows(path: str | os.PathLike, bad_lines: dict[int, str], score_threshold: float = 0.5) -> RowTable:
    """The rows of a training file; ``bad_lines``: the validator's verdicts (line -> reason), images included."""
    table = RowTable()
    for number, raw, row, error in iter_file(path, check_images=False):
        reason = error or bad_lines.get(number)
        if reason is not None:
            table.rejects.append((number, reason, raw))
            continue
        values = json.loads(raw)
        task = row["task"]
        data = table.tasks.setdefault(task, TaskRows(task))
        query = data.queries.add(row["query"], values["query"])
        positive = data.documents.add(row["positive"], values["positive"])
        listed = list(values.get("negatives") or [])
        single = [values["negative"]] if values.get("negative") is not None else []
        negatives = [
            data.documents.add(side, value) for side, value in zip(row["negatives"], single + listed, strict=True)
        ]
        positive_pair = row["score"] is None or row["score"] >= score_threshold or task != "text_pair"
        own = tuple(data.documents.keys[i] for i in negatives[: len(single)])
        data.rows.append(MineRow(number, raw, query, positive, positive_pair, own))
        if positive_pair:
            data.answers.setdefault(query, set()).add(data.documents.keys[positive])
        table.order.append((number, task, len(data.rows) - 1))
    return table


def corpus_pool(path: str | os.PathLike, task: str, rejects: list[tuple[int, str, str]] | None = None) -> Pool:
    """The candidates of ``task`` from an items file (``scripts/index.py``'s schema); bad lines go to ``rejects``."""
    from vipyloqwen_tools.index.items import read_items

    pool = Pool()
    for line, item, error, _ in read_items(Path(path)):
        if item is None:
            if rejects is not None:
                rejects.append((line, error or "bad item", ""))
            continue
        if item.task not in (None, task) or (item.images and task in TEXT_ONLY_TASKS):
            continue
        side = {"text": item.text if item.text and item.text.strip() else None, "images": list(item.images)}
        pool.add(side, document_value(side))
    return pool


def document_value(side: dict) -> Any:
    """How an output line writes a document that is not from the input file: its text, or ``{"text", "images"}``
    with absolute image paths."""
    if not side.get("images"):
        return side.get("text") or ""
    value: dict[str, Any] = {"images": list(side["images"])}
    if side.get("text"):
        value = {"text": side["text"], **value}
    return value


__all__ = ["MineRow", "Pool", "RowTable", "TaskRows", "corpus_pool", "document_value", "read_rows"]
