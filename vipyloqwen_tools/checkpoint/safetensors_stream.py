"""Read safetensors headers and write safetensors files one tensor at a time.

``safetensors.torch.save_file`` needs every tensor of a file in memory at once and serialises each to a
second buffer, so writing a 4 GB shard costs about 8 GB. :func:`write_file` instead writes the header first
(names, dtypes, shapes and offsets are known up front) and then each tensor in turn: tensors taken from
another safetensors file are copied byte for byte in 64 MB chunks (bit-identical by construction, never
decoded), new tensors are produced one at a time by a callable. Peak memory is one new tensor.

Example::

    >>> sources = read_header("base/model-00001-of-00002.safetensors")
    >>> entries = [Entry(name, src.dtype, src.shape, src) for name, src in sources.items()]
    >>> write_file("out/model.safetensors", entries, metadata={"format": "pt"})
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

# The safetensors dtype names (https://github.com/huggingface/safetensors, format spec).
DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "U16": torch.uint16,
    "I32": torch.int32,
    "U32": torch.uint32,
    "I64": torch.int64,
    "U64": torch.uint64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
CHUNK = 64 << 20


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor's bytes lie in a safetensors file (absolute byte offsets)."""

    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    def load(self) -> torch.Tensor:
        """The tensor, read into a fresh buffer (the file is not kept open or mapped)."""
        with open(self.path, "rb") as f:
            f.seek(self.start)
            data = bytearray(f.read(self.end - self.start))
        if len(data) != self.end - self.start:
            raise ValueError(f"{self.path}: truncated tensor data at bytes {self.start}-{self.end}")
        if not data:
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.frombuffer(data, dtype=self.dtype).reshape(self.shape)


@dataclass(frozen=True)
class Entry:
    """One tensor of a file to write: its bytes come from a :class:`TensorSource`, a tensor, or a callable
    that returns the tensor when its turn comes (so only one new tensor is in memory at a time)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    data: TensorSource | torch.Tensor | Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def read_header(path: str | Path) -> dict[str, TensorSource]:
    """The tensors of a safetensors file, in file order: name -> :class:`TensorSource`.

    Raises:
        ValueError: the file is not a safetensors file or names an unknown dtype.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a safetensors file ({error})") from error
    base = 8 + size
    sources = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']!r}; known: {sorted(DTYPES)}")
        begin, end = info["data_offsets"]
        sources[name] = TensorSource(path, DTYPES[info["dtype"]], tuple(info["shape"]), base + begin, base + end)
    return dict(sorted(sources.items(), key=lambda item: item[1].start))


def _header_bytes(entries: list[Entry], metadata: dict[str, str] | None) -> bytes:
    header: dict[str, dict] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for entry in entries:
        if entry.name in header:
            raise ValueError(f"tensor {entry.name!r} is listed twice")
        header[entry.name] = {
            "dtype": DTYPE_NAMES[entry.dtype],
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data buffer starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(encoded)) + encoded


def _copy_range(source: TensorSource, out, buffer: bytearray) -> None:
    with open(source.path, "rb") as f:
        f.seek(source.start)
        left = source.end - source.start
        view = memoryview(buffer)
        while left:
            got = f.readinto(view[: min(left, len(buffer))])
            if not got:
                raise ValueError(f"{source.path}: truncated tensor data at byte {source.end - left}")
            out.write(view[:got])
            left -= got


def write_file(path: str | Path, entries: list[Entry], metadata: dict[str, str] | None = None) -> int:
    """Write ``entries`` as one safetensors file, one tensor at a time; returns the bytes of tensor data.

    Raises:
        ValueError: a produced tensor's dtype or shape differs from its entry, or a name repeats.
    """
    path = Path(path)
    header = _header_bytes(entries, metadata)
    buffer = bytearray(CHUNK)
    with open(path, "wb") as out:
        out.write(header)
        for entry in entries:
            if isinstance(entry.data, TensorSource):
                if (entry.data.dtype, entry.data.shape) != (entry.dtype, entry.shape):
                    raise ValueError(f"{entry.name}: source is {entry.data.dtype} {entry.data.shape}")
                _copy_range(entry.data, out, buffer)
                continue
            tensor = entry.data if isinstance(entry.data, torch.Tensor) else entry.data()
            if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                raise ValueError(
                    f"{entry.name}: produced {tensor.dtype} {tuple(tensor.shape)}, declared {entry.dtype} {entry.shape}"
                )
            if tensor.numel():
                out.write(memoryview(tensor.detach().cpu().contiguous().view(torch.uint8).numpy()))
            del tensor
    return sum(entry.nbytes for entry in entries)
