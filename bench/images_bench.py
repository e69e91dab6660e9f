"""Huge page images: time and peak memory of ``prepare_image`` on files above PIL's decompression-bomb limit.

Each case writes one file (a 20,000 x 20,000 page by default: 400 M pixels, which PIL alone refuses), then
measures, in this process, the peak RSS above the RSS before the call (:class:`bench.common.PeakRSS`) and the
wall time of ``prepare_image(file, max_pixels=<budget of 1024 image tokens>)``: what the processor runs for
each image before the exact resize into the budget.

    flock /tmp/bench.lock flock /tmp/bigmem.lock python bench/images_bench.py --out bench/results/images-huge.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PIL import Image

from bench.harness import PeakRSS, Stopwatch, bench_parser, machine_info, release_memory, write_json
from configuration_vipyloqwen import DEFAULT_MAX_IMAGE_TOKENS
from images_vipyloqwen import MAX_DECODE_PIXELS, MAX_IMAGE_PIXELS, PATCH, prepare_image

CASES = {
    "jpeg-grey": ("L", "JPEG", {"quality": 60}),
    "jpeg-rgb": ("RGB", "JPEG", {"quality": 60}),
    "png-grey": ("L", "PNG", {"compress_level": 1}),
}


def page(mode: str, side: int) -> Image.Image:
    """A page-like image: light background with dark text-like bars (so the codecs have real content)."""
    image = Image.new(mode, (side, side), 245 if mode == "L" else (245, 243, 240))
    bar = Image.new(mode, (side * 3 // 4, max(1, side // 400)), 30 if mode == "L" else (30, 30, 40))
    for y in range(side // 20, side - side // 20, max(2, side // 100)):
        image.paste(bar, (side // 10, y))
    return image


def run_case(name: str, side: int, folder: Path) -> dict:
    mode, fmt, options = CASES[name]
    path = folder / f"{name}.{fmt.lower()}"
    page(mode, side).save(path, fmt, **options)
    release_memory()
    budget = DEFAULT_MAX_IMAGE_TOKENS * PATCH * PATCH
    with PeakRSS() as peak, Stopwatch() as clock:
        out = prepare_image(path, "bench", max_pixels=budget)
    seconds = clock.seconds
    result = {
        "case": name,
        "file": {"format": fmt, "mode": mode, "size": [side, side], "bytes": path.stat().st_size},
        "pixels": side * side,
        "pil_refuses_it": side * side > 2 * Image.MAX_IMAGE_PIXELS,
        "budget_pixels": budget,
        "output_size": list(out.size),
        "seconds": round(seconds, 3),
        "peak_rss_delta_mb": round(peak.delta_mb, 1),
        "full_decode_rgb_mb": round(side * side * 4 / 2**20, 1),  # what an RGB decode at full size would hold
    }
    path.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--side", type=int, default=20_000, help="page side in pixels (default 20000)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, required=True, help="the results JSON, e.g. bench/results/images-huge.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(name, args.side, Path(tmp)) for name in args.cases]
    for row in results:
        print(json.dumps(row))
    report = {
        "benchmark": "images-huge",
        "command": "python bench/images_bench.py " + " ".join(f"--{k} {v}" for k, v in (("side", args.side),)),
        "limits": {"MAX_IMAGE_PIXELS": MAX_IMAGE_PIXELS, "MAX_DECODE_PIXELS": MAX_DECODE_PIXELS},
        "machine": machine_info(),
        "results": results,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
