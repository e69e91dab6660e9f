"""Checkpoint checksums: throughput of candidate per-file checksums, and what the completion marker costs.

Writes one file of random bytes (``--mib``, default 1024), reads it once (so it is in the page cache, as a
checkpoint's files are right after the save wrote them), then times every candidate over the whole file in 8 MiB
chunks, interleaved over ``--repeats`` rounds (median): XXH3-128 (what the marker records,
``vipyloqwen_tools/train/checksums.py``), XXH3-64, XXH64, zlib's CRC-32, BLAKE2b, SHA-256, and ``file_checksum``
itself (the same XXH3-128 through the module's own reads). Reports GB/s (10^9 bytes per second) and the time the
24 GB of a 2B checkpoint (weights + AdamW states + the rest, ``--checkpoint-gb``) would take at that rate.

    python bench/checksum_bench.py --out bench/results/checksum.json
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from pathlib import Path

import xxhash

from bench.harness import bench_parser, finish, interleaved, median, results_header, target
from vipyloqwen_tools.train.checksums import CHUNK, file_checksum


def chunks(path: Path):
    """The file's bytes in CHUNK-sized reads into one reused buffer (as file_checksum reads)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            yield view[:count]


def hasher(make):
    def run(path: Path) -> None:
        digest = make()
        for part in chunks(path):
            digest.update(part)
        digest.digest()

    return run


def crc32(path: Path) -> None:
    value = 0
    for part in chunks(path):
        value = zlib.crc32(part, value)


CANDIDATES = {
    "xxh3_128": hasher(xxhash.xxh3_128),
    "xxh3_64": hasher(xxhash.xxh3_64),
    "xxh64": hasher(xxhash.xxh64),
    "crc32 (zlib)": crc32,
    "blake2b": hasher(hashlib.blake2b),
    "sha256": hasher(hashlib.sha256),
    "file_checksum (xxh3_128)": file_checksum,
}


def main(argv: list[str] | None = None) -> dict:
    parser = bench_parser(__doc__, "python bench/checksum_bench.py --out bench/results/checksum.json")
    parser.add_argument("--mib", type=int, default=1024, help="size of the test file in MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--checkpoint-gb", type=float, default=24.0, help="checkpoint size to project (default 24)")
    parser.add_argument("--dir", type=Path, default=None, help="folder for the test file (default: the temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "data.bin"
        with open(path, "wb") as handle:
            for _ in range(args.mib):
                handle.write(os.urandom(1 << 20))
        size = path.stat().st_size
        for _ in chunks(path):  # into the page cache
            pass
        runners = {name: (lambda run=run: run(path)) for name, run in CANDIDATES.items()}
        times = interleaved(runners, args.repeats)
    rates = {name: size / median(values) / 1e9 for name, values in times.items()}
    results = {
        **results_header("checksum"),
        "file_bytes": size,
        "repeats": args.repeats,
        "chunk_bytes": CHUNK,
        "seconds": times,
        "gb_per_s": rates,
        "checkpoint_gb": args.checkpoint_gb,
        "checkpoint_seconds": {name: args.checkpoint_gb / rate for name, rate in rates.items()},
        "targets": [
            target(f"{name} GB/s (page cache, 1 core)", rate, "measured", None) for name, rate in rates.items()
        ]
        + [
            target(
                f"XXH3-128 over a {args.checkpoint_gb:g} GB checkpoint, seconds",
                args.checkpoint_gb / rates["file_checksum (xxh3_128)"],
                "< 60 s: not minutes",
                args.checkpoint_gb / rates["file_checksum (xxh3_128)"] < 60,
            )
        ],
    }
    return finish(results, args.out)


if __name__ == "__main__":
    main()
