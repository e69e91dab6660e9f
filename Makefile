# Two commands for a fresh machine:
#   make demo   - builds the tiny offline model and runs the product end to end:
#                 encode + multimodal search, then train on the sample data and show before/after
#   make test   - runs the test suite (offline, CPU)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: takes the CPU build from this machine's disk instead of a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,train,eval,index,clients]"
	touch $@

.PHONY: install demo train-demo test lint
install: $(VENV)/.installed

demo: install
	$(PY) scripts/demo.py --out build/tiny
	$(PY) scripts/train_demo.py --out runs/train-demo

train-demo: install
	$(PY) scripts/train_demo.py --out runs/train-demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
