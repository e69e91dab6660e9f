"""Reading a dataset's published files and checking their layout.

Every adapter goes through these helpers, so a file that is missing, a field that is absent or of the wrong type,
or an image that does not open stops the load with a :class:`LayoutError` naming the file and the field (and the
record), never a silently empty or shortened task.

Example::

    records = read_json(root / "vlsp2023_dev_data.json")
    images = field(records, "images", dict, where=root / "vlsp2023_dev_data.json")
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image


class LayoutError(ValueError):
    """The dataset's files do not have the published layout (the message names the file and the field)."""


def _type_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def field(record: Any, name: str, kind: type | tuple[type, ...], where: str | Path, item: str = "") -> Any:
    """``record[name]``, checked to be present and of ``kind``; an empty string or container counts as missing.

    Args:
        record: a JSON object (dict) or a datasets row.
        name: the field.
        kind: the expected Python type(s); a bool never counts as an int.
        where: the file the record comes from (for the message).
        item: which record (e.g. ``"annotations['12']"``), for the message.
    """
    at = f"{where}: {item + ': ' if item else ''}"
    if not isinstance(record, dict):
        raise LayoutError(f"{at}expected an object with field {name!r}, got {type(record).__name__}")
    if name not in record or record[name] is None:
        raise LayoutError(f"{at}missing field {name!r} (fields present: {', '.join(map(str, record)) or 'none'})")
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise LayoutError(f"{at}field {name!r} must be {_type_names(kind)}, got {type(value).__name__}: {value!r:.80}")
    if isinstance(value, (str, list, dict)) and not value:
        raise LayoutError(f"{at}field {name!r} is empty")
    return value


def read_json(path: str | Path) -> Any:
    """The parsed JSON file; a missing file or bad JSON is a LayoutError naming the file."""
    path = Path(path)
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        hint = f"; JSON files there: {', '.join(present)}" if present else ""
        raise LayoutError(f"{path}: file not found (expected by the dataset's published layout){hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LayoutError(f"{path}: not valid JSON: {err}") from err


def parquet_rows(
    files: Sequence[Path],
    columns: dict[str, str],
    where: str | Path,
    keep: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of the parquet files, after checking that each has ``columns`` (name -> arrow type family).

    Type families: "string", "integer", "list", "struct" (an image column stored as ``{bytes, path}``).
    ``keep=(column, value)`` keeps only the rows whose string column equals ``value`` ignoring case (filtered in
    Arrow, before any row becomes a Python object: MTVQA's test shards hold every language's images). Each row
    also carries ``__file__`` (the file name) and ``__row__`` (its index in that file), for error messages.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.types as pat

    checks = {"string": pat.is_string, "integer": pat.is_integer, "list": pat.is_list, "struct": pat.is_struct}
    if not files:
        raise LayoutError(f"{where}: no parquet files found")
    rows: list[dict[str, Any]] = []
    for file in files:
        schema = pq.read_schema(file)
        for name, family in columns.items():
            if name not in schema.names:
                raise LayoutError(f"{file}: missing column {name!r} (columns present: {', '.join(schema.names)})")
            arrow_type = schema.field(name).type
            if not (checks[family](arrow_type) or family == "string" and pat.is_large_string(arrow_type)):
                raise LayoutError(f"{file}: column {name!r} must be {family}, got {arrow_type}")
        table = pq.read_table(file, columns=list(columns))
        # Where each row comes from, for messages: the file and the row index in it (before any filtering).
        table = table.append_column("__row__", pa.array(range(len(table)), pa.int64()))
        table = table.append_column("__file__", pa.array([file.name] * len(table), pa.string()))
        if keep is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(table[keep[0]])), keep[1].lower()))
        rows.extend(table.to_pylist())
    return rows


def parquet_values(files: Sequence[Path], column: str) -> list[Any]:
    """All values of one column over the parquet files (e.g. the languages present, for an error message)."""
    import pyarrow.parquet as pq

    return [v for file in files for v in pq.read_table(file, columns=[column]).column(column).to_pylist()]


def shards(root: Path, pattern: str) -> list[Path]:
    """The files matching ``pattern`` under ``root``, sorted (parquet shards)."""
    files = sorted(root.glob(pattern))
    if not files:
        raise LayoutError(f"{root}: no file matches {pattern!r} (expected by the dataset's published layout)")
    return files


class ImageSource:
    """Images of a dataset, from a folder or, when only the published archive is there, from inside the zip.

    ``get(name, where)`` returns the decoded RGB image; a name that is in neither is a LayoutError naming the
    record that refers to it.
    """

    def __init__(self, root: Path, folder: str, archive: str | None = None) -> None:
        self.dir = root / folder
        self.zip_path = root / archive if archive else None
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if not self.dir.is_dir():
            if self.zip_path is None or not self.zip_path.is_file():
                expected = f"{self.dir}/" + (f" or {self.zip_path}" if self.zip_path else "")
                raise LayoutError(f"{root}: image folder not found: {expected}")
            self._zip = zipfile.ZipFile(self.zip_path)
            # Archives hold "<folder>/<name>" or "<name>": index by the file name.
            for member in self._zip.namelist():
                if not member.endswith("/"):
                    self._members.setdefault(member.rsplit("/", 1)[-1], member)

    def get(self, name: str, where: str) -> str | dict[str, Any]:
        """The image ``name`` (a file name or a path relative to the folder), checked to open: a file path, or
        ``{"bytes", "path"}`` read from the archive (both are what ``datasets.Image`` stores)."""
        if self._zip is None:
            path = self.dir / name
            if not path.is_file():
                raise LayoutError(f"{where}: image {name!r} not found in {self.dir}")
            _check_image(path.read_bytes(), f"{where}: image {path}")
            return str(path)
        member = self._members.get(os.path.basename(name))
        if member is None:
            raise LayoutError(f"{where}: image {name!r} not found in {self.zip_path}")
        data = self._zip.read(member)
        _check_image(data, f"{where}: image {member!r} in {self.zip_path}")
        return {"bytes": data, "path": member}


def _check_image(data: bytes, what: str) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as err:  # noqa: BLE001 - any decoding failure: name the image
        raise LayoutError(f"{what} does not open: {type(err).__name__}: {err}") from err


def image_from_struct(value: Any, where: str) -> dict[str, Any]:
    """A parquet image cell (``{"bytes": ..., "path": ...}``), checked to open."""
    if not isinstance(value, dict) or not value.get("bytes"):
        raise LayoutError(f"{where}: field 'image' must be an image struct with bytes, got {type(value).__name__}")
    _check_image(value["bytes"], f"{where}: image")
    return {"bytes": value["bytes"], "path": value.get("path")}


def unique(ids: Iterable[str], where: str, what: str) -> None:
    """Raise when an id repeats (two records with the same id would silently overwrite each other)."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise LayoutError(f"{where}: duplicate {what} {i!r}")
        seen.add(i)


def coco_images(data: dict, where: Path) -> dict[int | str, str]:
    """``images`` of a COCO-style file: id -> file name (``filename``, the field KTVIC and ViTextVQA publish)."""
    out: dict[int | str, str] = {}
    for i, img in enumerate(field(data, "images", list, where)):
        item = f"images[{i}]"
        image_id = field(img, "id", (int, str), where, item)
        if image_id in out:
            raise LayoutError(f"{where}: {item}: duplicate image id {image_id!r}")
        out[image_id] = field(img, "filename", str, where, item)
    return out


def coco_annotations(data: dict, where: Path, images: dict[int | str, str]) -> list[tuple[str, dict]]:
    """``annotations`` of a COCO-style file as ``(record label, annotation)``, each checked to be an object with a
    unique ``id`` and an ``image_id`` listed in ``images``."""
    out = []
    seen: set[str] = set()
    for i, ann in enumerate(field(data, "annotations", list, where)):
        item = f"annotations[{i}]"
        ann_id = str(field(ann, "id", (int, str), where, item))
        if ann_id in seen:
            raise LayoutError(f"{where}: {item}: duplicate annotation id {ann_id!r}")
        seen.add(ann_id)
        image_id = field(ann, "image_id", (int, str), where, item)
        if image_id not in images:
            raise LayoutError(f"{where}: {item}: image_id {image_id!r} is not in 'images'")
        out.append((item, ann))
    return out
