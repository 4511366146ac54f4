"""Every user of a trained model runs a case through the same predictor method: the containers' inference.py,
hecktor-predict, the demo and the benchmarks all reach Segmenter.predict (Task 1) and RiskPredictor.predict (Task 2).

A spy wraps each predict method (keeping its behaviour) and counts the calls; each caller is run on a tiny case
with the committed fixture bundles (tests/fixtures/bundles)."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest

from conftest import REPO, head_phantom
from hecktor.io import write_gc_input
from hecktor.prognosis import RiskPredictor
from hecktor.segment import Segmenter
from hecktor.tasks import get_task

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bundles"
EHR = {"Age": 61, "Gender": 1, "Tobacco Consumption": 1, "Performance Status": 0, "Treatment": 1, "M-stage": "M0"}
PREDICTORS = {1: Segmenter, 2: RiskPredictor}


@pytest.fixture
def spies(monkeypatch):
    """Calls of Segmenter.predict and RiskPredictor.predict, by task."""
    calls = {1: 0, 2: 0}
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


@pytest.mark.parametrize("task", [1, 2])
def test_container_inference_py_calls_the_predictor(task, spies, case_folder, tmp_path):
    spec = get_task(task)
    inference = _load(REPO / spec.container / "inference.py", f"inference_{task}")
    status = inference.main(["--input", str(case_folder), "--output", str(tmp_path), "--resources",
                             str(FIXTURES / f"task{task}"), "--device", "cpu"])
    assert status == 0 and (tmp_path / spec.output).is_file()
    assert spies == {task: 1, 3 - task: 0}


@pytest.mark.parametrize("task", [1, 2])
def test_container_run_as_a_script_calls_the_predictor(task, spies, case_folder, tmp_path, monkeypatch):
    """As the image runs it (python inference.py), here in-process so the spy sees the call."""
    spec = get_task(task)
    monkeypatch.setattr(sys, "argv", ["inference.py", "--input", str(case_folder), "--output", str(tmp_path),
                                      "--resources", str(FIXTURES / f"task{task}"), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / spec.container / "inference.py"), run_name="__main__")
    assert exit_info.value.code == 0 and spies[task] == 1


@pytest.mark.parametrize("task", [1, 2])
def test_hecktor_predict_calls_the_predictor(task, spies, case_folder, tmp_path):
    from hecktor.predict import predict_folder

    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "case-1").symlink_to(case_folder, target_is_directory=True)
    result = predict_folder(task, FIXTURES / f"task{task}", cases, tmp_path / "out", device="cpu", progress=False,
                            say=lambda line: None)
    assert result.exit_status == 0 and spies[task] == 1


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
