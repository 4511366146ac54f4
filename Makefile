# One entry point for set-up, tests, demo and benchmarks. Everything runs inside ./.venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-all demo bench-preprocessing bench-scan bench-segmentation bench-nnunet bench-gpu clean

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

## The demo: a synthetic cohort, the small models of Tasks 1-3 and HECKTOR 2026, every container's inference.py on 4
## held-out cases and 32 more through predict_case in-process, scores and demo_output/report.md (13.7 min on 2 cores
## from a fresh clone, set-up included, measured 2026-12-07: docs/results/benchmarks.md#the-demo).
demo: setup
	$(BIN)/python training/demo.py --out demo_output

bench-preprocessing: setup
	$(BIN)/python benchmarks/bench_preprocessing.py

## OMP_WAIT_POLICY=PASSIVE: the scan enters thousands of short OpenMP regions; spinning threads waste a shared CPU.
bench-scan: setup
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/bench_scan.py

## Seed Tables 1-2 analogues on held-out synthetic cases: HecMamba (current and seed recipes, ablations), MONAI
## U-Net, V-Net, UNETR, DynUNet and, when installed (make bench-nnunet), nnU-Net v2; two one-thread jobs side by
## side (77 minutes on 2 cores with nnU-Net v2, measured 2026-12-01). The numbers in docs/results/benchmarks.md come from this exact
## command (through make bench-nnunet).
bench-segmentation: setup
	$(BIN)/python benchmarks/bench_segmentation.py --work runs/bench_segmentation --patch 32 --epochs 40 \
		--iterations 25 --jobs 2 --threads 1

## nnU-Net v2 (benchmark-only) into the venv, then the table with its row. torchvision comes out again: see the
## header of benchmarks/requirements-nnunet.txt (the package index's CUDA build cannot load beside the CPU torch).
bench-nnunet: setup
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements-nnunet.txt
	$(BIN)/python -m pip uninstall --quiet -y torchvision
	$(MAKE) bench-segmentation

## On a CUDA machine: full HecMamba training step and 5-fold TTA inference of a realistic case.
bench-gpu: setup
	$(BIN)/python benchmarks/bench_gpu_segmentation.py

clean:
	rm -rf $(VENV) .pytest_cache
