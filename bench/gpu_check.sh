#!/usr/bin/env bash
# GPU check of the full-size 2B (random weights): bf16 encode parity vs fp32 with sdpa and flash-attention 2,
# items/s and peak memory for queries / passages / pages, one training step at the recipe's settings with the
# memory planner's prediction beside the measured peak. One GPU, under 8 minutes (plus the vLLM serving check at
# the end: up to 15 more, bench/serve_bench.py). See bench/gpu_check.py.
#
#   bash bench/gpu_check.sh [OUT_JSON]   # e.g. bench/results/gpu-check.json; default: a new temp folder (printed),
#                                        # so that nothing is written into the repository unless asked
#
# GPU_CHECK_FLASH=0 skips the flash-attn install attempt; PYTHON picks the interpreter (default .venv/bin/python).
# Without CUDA it stops after the CPU-side preparation with exit status 3 and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${1:-$(mktemp -d -t gpu-check.XXXXXX)/gpu-check.json}
echo "gpu_check: report: $OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

has_cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$has_cuda" = 1 ] && [ "${GPU_CHECK_FLASH:-1}" = 1 ] && ! "$PYTHON" -c 'import flash_attn' 2>/dev/null; then
    # flash-attn wheels need a matching torch / CUDA; a source build takes far longer than this check allows
    echo "gpu_check: trying pip install flash-attn (at most 150 s) ..."
    if ! timeout 150 "$PYTHON" -m pip install --quiet --no-build-isolation 'flash-attn>=2.6' >/tmp/gpu_check_flash.log 2>&1; then
        echo "gpu_check: flash-attn did not install (see /tmp/gpu_check_flash.log): sdpa only"
    fi
fi
status=0
timeout 400 "$PYTHON" bench/gpu_check.py --out "$OUT" || status=$?
[ "$status" = 3 ] && exit 3   # no CUDA: said why already

# FSDP2 run (configs/accelerate/fsdp-4gpu.yaml on min(2, GPUs) processes): the tiny model, 4 steps in bf16 with
# checkpoints at steps 2 and 4 and the exported final/, then --resume to step 6 (GPU_CHECK_FSDP=0 skips it).
if [ "${GPU_CHECK_FSDP:-1}" = 1 ]; then
    gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
    procs=$(( gpus >= 2 ? 2 : 1 ))
    run=$(mktemp -d /tmp/gpu-check-fsdp.XXXXXX)
    started=$(date +%s)
    fsdp_rc=0
    for steps in 4 6; do
        resume=$([ "$steps" = 6 ] && echo --resume || true)
        timeout 150 "$PYTHON" -m accelerate.commands.launch --config_file configs/accelerate/fsdp-4gpu.yaml \
            --num_processes "$procs" train_st.py --config configs/tiny-cpu.yaml --output-dir "$run" --precision bf16 \
            --max-steps "$steps" --save-steps 2 --eval-steps 0 $resume >>"$run/log.txt" 2>&1 || fsdp_rc=$?
        [ "$fsdp_rc" = 0 ] || break
    done
    seconds=$(( $(date +%s) - started ))
    "$PYTHON" - "$OUT" "$procs" "$fsdp_rc" "$seconds" "$run" <<'PY'
import json, sys
from pathlib import Path
out, procs, rc, seconds, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
report = json.loads(Path(out).read_text())
log = (run / "log.txt").read_text(errors="replace").splitlines()
report["fsdp_smoke"] = {
    "command": "accelerate launch --config_file configs/accelerate/fsdp-4gpu.yaml --num_processes N train_st.py "
    "--config configs/tiny-cpu.yaml --precision bf16 --max-steps 4 --save-steps 2, then --max-steps 6 --resume",
    "processes": procs, "rc": rc, "seconds": seconds,
    "final_written": (run / "final" / "config.json").is_file(),
    "checkpoints": sorted(p.name for p in run.glob("checkpoint-*")),
    "resumed": any("resuming from" in line for line in log),
    "log_tail": log[-15:],
}
Path(out).write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps({k: v for k, v in report["fsdp_smoke"].items() if k != "log_tail"}))
PY
    [ "$fsdp_rc" = 0 ] || status=1
fi
# vLLM serving at the real 2B size in bf16: the vLLM server vs AutoModel.encode on the GPU, items/s and parity
# (bench/serve_bench.py, into OUT with -serve.json). Needs .venv-serve (`make serve-install`: the official CUDA
# wheel, so the machine needs PyPI); GPU_CHECK_SERVE=0 skips it.
if [ "${GPU_CHECK_SERVE:-1}" = 1 ]; then
    if [ ! -x .venv-serve/bin/vipyloqwen-serve ] && ! timeout 900 bash serving/install.sh >/tmp/gpu_check_serve.log 2>&1; then
        echo "gpu_check: make serve-install failed (see /tmp/gpu_check_serve.log): vLLM serving check skipped"
    elif ! timeout 900 "$PYTHON" bench/serve_bench.py --model 2b --dtype bfloat16 --device cuda \
            --sizes queries=256,passages=128,pages=64 --out "${OUT%.json}-serve.json"; then
        status=1
    fi
fi
exit "$status"
