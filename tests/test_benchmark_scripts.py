"""The benchmark scripts that a later session runs on hardware this machine lacks must at least start and run here."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_smoke_training_step_runs_on_cpu(capsys):
    bench = _load("bench_gpu_segmentation")
    assert bench.main(["--smoke", "--parts", "train", "--steps", "1"]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| torch |"))
    seconds = float(row.split("|")[3])
    assert 0.0 < seconds < 60.0
    assert "the CUDA scan backend was not timed" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_gpu_benchmark_without_cuda_says_so():
    bench = _load("bench_gpu_segmentation")
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--parts", "train"])
    assert exit_info.value.code == 2
