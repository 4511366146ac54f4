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


def test_segmentation_benchmark_settings_name_rows_and_folders():
    bench = _load("bench_segmentation")
    settings = dict([bench.parse_setting("learning_rate=0.004"), bench.parse_setting("ce_class_weights=[1,1,2]"),
                     bench.parse_setting("loss=batch_dicece")])
    assert settings == {"learning_rate": 0.004, "ce_class_weights": [1, 1, 2], "loss": "batch_dicece"}
    assert bench.setting_suffix({}) == ""
    assert bench.setting_suffix({"learning_rate": 0.004}) == ' [learning_rate=0.004]'
    with pytest.raises(Exception, match="KEY=VALUE"):
        bench.parse_setting("learning_rate")
    # Long row names keep distinct folders: a tuned row never reuses the untuned row's checkpoints.
    name = bench.CONFIGURATIONS[0][0]
    plain, tuned = bench.slug(name), bench.slug(name + bench.setting_suffix(settings))
    assert plain == "hecmamba__current_recipe" and tuned != plain and len(tuned) <= 60
    assert bench.slug(name + ' [learning_rate=0.004]') != bench.slug(name + ' [learning_rate=0.006]')
