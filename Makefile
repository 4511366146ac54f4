# One entry point for set-up, tests, demo and benchmarks. Everything runs inside ./.venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-all demo bench-preprocessing bench-scan clean

setup: $(STAMP)

$(STAMP): requirements-dev.txt shared/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## The test suite (what CI runs). pytest exits 5 when it collects nothing, which fails make as it should.
test: setup
	$(BIN)/python -m pytest

## Also the slow tests (multi-process training, longer runs).
test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

bench-preprocessing: setup
	$(BIN)/python benchmarks/bench_preprocessing.py

bench-scan: setup
	$(BIN)/python benchmarks/bench_scan.py

clean:
	rm -rf $(VENV) .pytest_cache
