#!/usr/bin/env bash
# GPU check of the full-size 2B (random weights): bf16 encode parity vs fp32 with sdpa and flash-attention 2,
# items/s and peak memory for queries / passages / pages, one training step at the recipe's settings with the
# memory planner's prediction beside the measured peak. One GPU, under 8 minutes. See bench/gpu_check.py.
#
#   bash bench/gpu_check.sh [OUT_JSON]          # default bench/results/gpu-check.json
#
# GPU_CHECK_FLASH=0 skips the flash-attn install attempt; PYTHON picks the interpreter (default .venv/bin/python).
# Without CUDA it stops after the CPU-side preparation with exit status 3 and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${1:-bench/results/gpu-check.json}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

has_cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$has_cuda" = 1 ] && [ "${GPU_CHECK_FLASH:-1}" = 1 ] && ! "$PYTHON" -c 'import flash_attn' 2>/dev/null; then
    # flash-attn wheels need a matching torch / CUDA; a source build takes far longer than this check allows
    echo "gpu_check: trying pip install flash-attn (at most 150 s) ..."
    if ! timeout 150 "$PYTHON" -m pip install --quiet --no-build-isolation 'flash-attn>=2.6' >/tmp/gpu_check_flash.log 2>&1; then
        echo "gpu_check: flash-attn did not install (see /tmp/gpu_check_flash.log): sdpa only"
    fi
fi
exec timeout 450 "$PYTHON" bench/gpu_check.py --out "$OUT"
