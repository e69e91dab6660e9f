"""Benchmark of ``scripts/build_model.py --base`` at real size: peak RSS and time of the build process.

1. Writes a stand-in of Qwen/Qwen2-VL-2B-Instruct (``vipyloqwen_tools/checkpoint/fake_base.py``: the real config.json
   and preprocessor_config.json, the 729 tensors in the published legacy names, random bf16 weights, two shards
   split at 4 GB, the real tokenizer) into ``--workdir`` (default: a folder under the temp dir).
2. Runs ``scripts/build_model.py --base <stand-in> --out <workdir>/out`` in a child process that reports its own
   peak RSS (``VmHWM`` of ``/proc/self/status``: the high-water mark of every page the process had resident: torch,
   tokenizer, buffers) and wall time. Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a child's ru_maxrss
   starts at its parent's RSS at fork (it survives exec), so it is only an upper bound.
3. Checks the output: every base tensor's bytes equal the output's (task rows of the embedding excepted), same
   shard per tensor, dtype, the config's dtype; optionally (``--load``) loads it with
   ``AutoModel.from_pretrained(..., trust_remote_code=True)`` in a second child (peak RSS recorded too).
4. Writes JSON to ``--out`` (required, e.g. ``bench/results/build-2b.json``) and deletes the multi-GB files unless
   ``--keep``.

The limit it checks: peak RSS <= 1.3 x the fp32 size of the model (parameters x 4 bytes).

    flock /tmp/bigmem.lock flock /tmp/bench.lock python bench/build_bench.py --load
    python bench/build_bench.py --shallow          # seconds: the shallow config (CI-sized), same steps
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO_ROOT
from bench.harness import Stopwatch, machine_info, utc_now, write_json

# this process's own peak RSS in bytes (VmHWM: the mm's high-water mark; fresh after exec)
HWM = """
from bench.harness import peak_rss_bytes as hwm
"""
CHILD_BUILD = (
    HWM
    + """
import json, resource, sys, time
started = time.perf_counter()
from scripts.build_model import main
main({argv!r})
print("BENCH " + json.dumps({{"seconds": time.perf_counter() - started,
      "peak_rss_bytes": hwm(), "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""
)
CHILD_LOAD = (
    HWM
    + """
import json, resource, sys, time
started = time.perf_counter()
from transformers import AutoModel
model, info = AutoModel.from_pretrained({out!r}, trust_remote_code=True, output_loading_info=True)
print("BENCH " + json.dumps({{"seconds": time.perf_counter() - started,
      "peak_rss_bytes": hwm(), "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "dtype": str(model.dtype), "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
      "parameters": sum(p.numel() for p in model.parameters())}}))
"""
)


def run_child(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))
    return json.loads(line[len("BENCH ") :]) | {
        "stdout": [x for x in done.stdout.splitlines() if x.startswith("wrote")]
    }


def compare_bytes(base: Path, out: Path) -> dict:
    """Byte-compare every base tensor with its output tensor (chunked; the embedding's task rows excepted)."""
    import torch
    from transformers import AutoConfig

    from vipyloqwen_tools.checkpoint.base import EMBED_KEY, KeyMapper, base_shards
    from vipyloqwen_tools.checkpoint.safetensors_stream import read_header

    mapper = KeyMapper(AutoConfig.from_pretrained(base))
    ours = {}
    for path in out.glob("*.safetensors"):
        ours.update({k: (path.name, v) for k, v in read_header(path).items()})
    identical, differing, checked_bytes = 0, [], 0
    for file_name, tensors in base_shards(base):
        for key, src in tensors.items():
            out_file, mine = ours[mapper(key)]
            if mapper(key) == EMBED_KEY:
                keep = torch.ones(src.shape[0], dtype=torch.bool)
                keep[151657:151662] = False  # the task-token rows are new
                as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[src.dtype.itemsize]
                same = src.load()[keep].view(as_int).equal(mine.load()[keep].view(as_int))
            else:
                same = _same_bytes(src, mine)
            checked_bytes += src.end - src.start
            if same and out_file == file_name and src.dtype == mine.dtype:
                identical += 1
            else:
                differing.append(key)
    return {"tensors_identical": identical, "tensors_differing": differing, "bytes_compared": checked_bytes}


def _same_bytes(a, b, chunk: int = 64 << 20) -> bool:
    if a.end - a.start != b.end - b.start:
        return False
    with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
        fa.seek(a.start)
        fb.seek(b.start)
        left = a.end - a.start
        while left:
            n = min(chunk, left)
            if fa.read(n) != fb.read(n):
                return False
            left -= n
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vipyloqwen-build-bench")
    parser.add_argument("--out", type=Path, required=True, help="JSON result, e.g. bench/results/build-2b.json")
    parser.add_argument("--shallow", action="store_true", help="the shallow CI config instead of the real 2B")
    parser.add_argument("--load", action="store_true", help="also load the output with AutoModel (child process)")
    parser.add_argument("--keep", action="store_true", help="keep the stand-in and the output")
    args = parser.parse_args(argv)

    from vipyloqwen_tools.checkpoint.architectures import QWEN2_VL_2B_CONFIG
    from vipyloqwen_tools.checkpoint.fake_base import REAL_SHARD_BYTES, shallow_config, write_fake_base

    out_json = args.out
    base, out = args.workdir / "base", args.workdir / "out"
    shutil.rmtree(args.workdir, ignore_errors=True)
    config = shallow_config() if args.shallow else QWEN2_VL_2B_CONFIG
    with Stopwatch() as base_clock:
        write_fake_base(base, config, max_shard_bytes=19_700_000 if args.shallow else REAL_SHARD_BYTES)
    build = run_child(CHILD_BUILD.format(argv=["--base", str(base), "--out", str(out)]))

    config_out = json.loads((out / "config.json").read_text())
    index = json.loads((out / "model.safetensors.index.json").read_text())
    from vipyloqwen_tools.checkpoint.safetensors_stream import read_header

    parameters = 0
    for path in out.glob("*.safetensors"):
        for src in read_header(path).values():
            parameters += (src.end - src.start) // src.dtype.itemsize
    fp32_bytes = parameters * 4
    result = {
        "benchmark": "build_model --base",
        "config": "shallow (CI)" if args.shallow else "Qwen2-VL-2B-Instruct stand-in (real config, 729 legacy keys)",
        "command": "flock /tmp/bigmem.lock flock /tmp/bench.lock python bench/build_bench.py"
        + (" --shallow" if args.shallow else "")
        + (" --load" if args.load else ""),
        "date": utc_now(),
        "machine": machine_info(),
        "base": {
            "bytes": sum(p.stat().st_size for p in base.glob("*.safetensors")),
            "shards": len(list(base.glob("*.safetensors"))),
            "write_seconds": round(base_clock.seconds, 1),
        },
        "build": {
            "seconds": round(build["seconds"], 1),
            "peak_rss_bytes": build["peak_rss_bytes"],
            "peak_rss_gb": round(build["peak_rss_bytes"] / 1e9, 2),
            "fp32_model_bytes": fp32_bytes,
            "peak_rss_over_fp32_model": round(build["peak_rss_bytes"] / fp32_bytes, 3),
            "limit_ratio": 1.3,
            "within_limit": build["peak_rss_bytes"] <= 1.3 * fp32_bytes,
            "printed": build["stdout"],
        },
        "output": {
            "parameters": parameters,
            "bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
            "index_total_size": index["metadata"]["total_size"],
            "shards": sorted({v for v in index["weight_map"].values()}),
            "config_dtype": config_out.get("dtype"),
            **compare_bytes(base, out),
        },
    }
    if args.load:
        result["load"] = run_child(CHILD_LOAD.format(out=str(out)))
        result["load"]["peak_rss_gb"] = round(result["load"]["peak_rss_bytes"] / 1e9, 2)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    write_json(out_json, result)
    print(json.dumps({k: result[k] for k in ("build", "output")}, indent=2))
    return result


if __name__ == "__main__":
    main()
