"""Every user of a trained model runs a case through the same predictor method: the containers' inference.py,
hecktor-predict, the demo (which runs the containers' inference.py) and the benchmarks' timing of a case (the GPU
bench's, and part (c) of bench_prognosis and bench_hpv) all reach Segmenter.predict (Task 1), RiskPredictor.predict
(Task 2) and HPVPredictor.predict (Task 3). bench_segmentation scores with Segmenter.predict too; it trains a model
per row, too long for a test.

A spy wraps each predict method (keeping its behaviour) and counts the calls; each caller is run on a tiny case
with the committed fixture bundles (tests/fixtures/bundles)."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from types import SimpleNamespace
from pathlib import Path

import pytest

from hecktor.datasets import write_gc_input
from hecktor.diagnosis import HPVPredictor
from hecktor.hecktor2026 import Hecktor2026Predictor
from hecktor.prognosis import RiskPredictor
from hecktor.runtime import WRITERS, output_writer, predictor_class
from hecktor.segment import Segmenter
from hecktor.tasks import OUTPUT_KINDS, get_task, task_numbers
from helpers.paths import FIXTURE_BUNDLES, REPO
from helpers.phantoms import head_phantom

FIXTURES = FIXTURE_BUNDLES
EHR = {"Age": 61, "Gender": 1, "Tobacco Consumption": 1, "Performance Status": 0, "Treatment": 1, "M-stage": "M0"}
PREDICTORS = {1: Segmenter, 2: RiskPredictor, 3: HPVPredictor, 2026: Hecktor2026Predictor}
CALLS = {1: {1: 1, 2: 0, 3: 0, 2026: 0}, 2: {1: 0, 2: 1, 3: 0, 2026: 0}, 3: {1: 0, 2: 0, 3: 1, 2026: 0}}
"""predict calls per task's case: each task's predictor, once (Tasks 2 and 3 share hecktor.fold_ensemble.FoldEnsemble,
not each other)."""


def test_every_registered_task_is_covered_here():
    assert sorted(PREDICTORS) == task_numbers()
    assert all(predictor_class(task) is cls for task, cls in PREDICTORS.items())
    assert set(WRITERS) == set(OUTPUT_KINDS)
    assert all(output_writer(task) is WRITERS[get_task(task).output_kind] for task in task_numbers())


@pytest.fixture
def spies(monkeypatch):
    """Calls of each task's predictor's predict, by task."""
    calls = {task: 0 for task in PREDICTORS}
    for task, cls in PREDICTORS.items():
        original = cls.predict

        def predict(self, *args, _original=original, _task=task, **kwargs):
            calls[_task] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "predict", predict)
    return calls


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    ct, pet, _, _ = head_phantom()
    return write_gc_input(ct, pet, tmp_path_factory.mktemp("case") / "input", ehr=EHR, seed=1)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", [1, 2, 3])
def test_container_inference_py_calls_the_predictor(task, spies, case_folder, tmp_path):
    spec = get_task(task)
    inference = _load(REPO / spec.container / "inference.py", f"inference_{task}")
    status = inference.main(["--input", str(case_folder), "--output", str(tmp_path), "--resources",
                             str(FIXTURES / f"task{task}"), "--device", "cpu"])
    assert status == 0 and (tmp_path / spec.output).is_file()
    assert spies == CALLS[task]


@pytest.mark.parametrize("task", [1, 2, 3])
def test_container_run_as_a_script_calls_the_predictor(task, spies, case_folder, tmp_path, monkeypatch):
    """As the image runs it (python inference.py), here in-process so the spy sees the call."""
    spec = get_task(task)
    monkeypatch.setattr(sys, "argv", ["inference.py", "--input", str(case_folder), "--output", str(tmp_path),
                                      "--resources", str(FIXTURES / f"task{task}"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / spec.container / "inference.py"), run_name="__main__")
    assert exit_info.value.code == 0 and spies == CALLS[task]


@pytest.mark.parametrize("task", [1, 2, 3])
def test_hecktor_predict_calls_the_predictor(task, spies, case_folder, tmp_path):
    from hecktor.predict import predict_folder

    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "case-1").symlink_to(case_folder, target_is_directory=True)
    result = predict_folder(task, FIXTURES / f"task{task}", cases, tmp_path / "out", device="cpu", progress=False,
                            say=lambda line: None)
    assert result.exit_status == 0 and spies == CALLS[task]


def test_gpu_benchmark_times_segmenter_predict(spies, monkeypatch):
    """bench_gpu_segmentation's inference part (run here on the CPU with a tiny network and a small case)."""
    from hecktor.plan import RegionPlan

    bench = _load(REPO / "benchmarks" / "bench_gpu_segmentation.py", "bench_gpu_segmentation")
    import torch

    tiny = {"widths": [4, 8, 16, 32], "depths": [1, 1, 1, 1], "hidden_size": 16, "d_state": 4, "expand": 1,
            "mlp_ratio": 1.0}
    result = bench.time_inference(tiny, RegionPlan(spacing_mm_xyz=(8.0, 8.0, 8.0), patch_size_zyx=(32, 32, 32)), 1,
                                  "small", torch.device("cpu"))
    assert spies[1] == len(result["rows"]) == 3


def test_task2_default_mode_segments_through_the_nested_segmenter(spies, case_folder, tmp_path):
    """Task 2's biomarkers mode reaches Segmenter.predict (its nested Task 1 model) from inside RiskPredictor.predict."""
    inference = _load(REPO / get_task(2).container / "inference.py", "inference_2_biomarkers")
    status = inference.main(["--input", str(case_folder), "--output", str(tmp_path), "--resources",
                             str(FIXTURES / "task2-biomarkers"), "--device", "cpu"])
    assert status == 0 and spies == {1: 1, 2: 1, 3: 0, 2026: 0}


@pytest.mark.parametrize("task", task_numbers())
def test_demo_runs_each_registered_container_inference_py(task, monkeypatch, tmp_path):
    """The demo scores what the containers write: it runs each task's inference.py (as a subprocess, so the spy
    cannot see inside; the command is checked instead)."""
    demo = _load(REPO / "training" / "demo.py", "demo")
    commands = []
    monkeypatch.setattr(demo, "measure", lambda command, log_path, env=None: commands.append(command) or {})
    demo.run_inference(task, tmp_path / "in", tmp_path / "out", tmp_path / "log.txt")
    assert Path(commands[0][1]) == REPO / get_task(task).container / "inference.py"
    assert commands[0][2:4] == ["--input", str(tmp_path / "in")]


@pytest.mark.parametrize("task", [2, 3])
def test_task2_and_task3_benchmarks_time_the_predictor(task, spies, monkeypatch):
    """bench_prognosis's and bench_hpv's part (c) (their shared benchmarks/_common.time_inference), on a small case
    with the fixture bundle instead of a random full-size ensemble."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    common = _load(REPO / "benchmarks" / "_common.py", "_common")
    cls = PREDICTORS[task]
    ensemble = cls.from_bundle(FIXTURES / f"task{task}", device="cpu")
    lines = common.time_inference(ensemble, cls, task, SimpleNamespace(seed=0, repeats=2), "last stage",
                                  case_size="small")
    assert spies[task] == 2 and any("read + predict" in line for line in lines)
