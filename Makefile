# Commands for a fresh machine:
#   make demo     - builds the tiny offline model and runs the product end to end:
#                   encode + multimodal search, then train on the sample data and show before/after
#   make test     - the quick tier of the test suite: tests not marked slow (offline, CPU)
#   make test-all - the whole test suite (offline, CPU; what CI runs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The caller's own HF_HUB_OFFLINE (before the line below forces it on): `make serve` passes only that one on.
CALLER_HF_HUB_OFFLINE := $(HF_HUB_OFFLINE)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: takes the CPU build from this machine's disk instead of a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,train,eval,index,clients]"
	touch $@

.PHONY: install demo train-demo test test-all lint serve-install serve test-serve
install: $(VENV)/.installed

demo: install
	$(PY) scripts/demo.py --out build/tiny
	$(PY) scripts/train_demo.py --out runs/train-demo

train-demo: install
	$(PY) scripts/train_demo.py --out runs/train-demo

# The quick tier (<= 5 min on 2 cores): everything not marked slow. test-all: the whole suite (what CI runs).
test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# vLLM serving (docs/serving.md): vLLM gets its own venv, .venv-serve (its transformers pin differs from ours).
SERVE_VENV := .venv-serve
PORT ?= 8000

serve-install:
	PYTHON=$(PYTHON) bash serving/install.sh

# A Hub id is downloaded when the Hub is reachable: no forced HF_HUB_OFFLINE here (set it yourself to use the cache).
serve:
	@test -n "$(MODEL)" || { echo "give the checkpoint: make serve MODEL=<folder or Hub id> PORT=<port>"; exit 2; }
	@test -x $(SERVE_VENV)/bin/vipyloqwen-serve || { echo "no $(SERVE_VENV): run make serve-install first"; exit 2; }
	@env -u HF_HUB_OFFLINE $(if $(CALLER_HF_HUB_OFFLINE),HF_HUB_OFFLINE=$(CALLER_HF_HUB_OFFLINE)) \
		$(SERVE_VENV)/bin/vipyloqwen-serve $(MODEL) --port $(PORT)

# The server parity test alone (skipped in `make test` when .venv-serve is missing).
test-serve: install
	$(PY) -m pytest -q tests/test_serving_vllm.py
