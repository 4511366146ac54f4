"""Task 3's container (``task3_container/inference.py``) run as the platform runs it: the whole hostile-input matrix
(Task 2's column, by the registry), ``--strict``, the predictor's decision, the time guard, and a real process.

The bundle is a tiny untrained ensemble (helpers.predictors) in the exact bundle format the container loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hecktor.case import read_case
from hecktor.datasets import write_gc_input
from hecktor.diagnosis import HPVPredictor
from hecktor.tasks import get_task
from helpers.containers import check_failure, check_status, synthetic_case
from helpers.containers import run as run_container
from helpers.hostile_inputs import DEGRADED, ERROR, MATRIX, REPAIRED, STRICT_ERRORS, _spoiled_input, _warning_lines
from helpers.paths import REPO
from helpers.predictors import build_hpv_predictor

__all__ = ["synthetic_case"]  # a fixture of helpers.containers, used here

SPEC = get_task(3)


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory) -> Path:
    return build_hpv_predictor("fusion").to_bundle(tmp_path_factory.mktemp("bundle") / "task3")


def run(input_dir: Path, output_dir: Path, bundle: Path, *extra: str, started_s_ago: float = 0.0):
    """``task3_container/inference.py``'s ``main`` as the container calls it; returns (status, stdout, stderr)."""
    return run_container(3, input_dir, output_dir, bundle, *extra, started_s_ago=started_s_ago)


# Task 3 reads what Task 2 reads (CT, PET, ehr.json) and answers through the same fold ensemble, so its expected
# outcome of each hostile input is Task 2's column of the matrix.
TASK2 = 2


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_gives_true_or_false_or_one_error_line(name, fusion_bundle, synthetic_case, tmp_path):
    kind, text = MATRIX[name][TASK2]
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    output_dir = tmp_path / "out"
    status, stdout, stderr = run(input_dir, output_dir, fusion_bundle)
    assert "Traceback" not in stdout + stderr
    if kind == ERROR:
        check_failure(status, stderr, output_dir, text)
        return
    assert status == 0 and stderr == "", stderr
    check_status(output_dir)
    assert "P(HPV+) " in stdout
    if kind in (REPAIRED, DEGRADED):
        assert len(_warning_lines(stdout, text)) == 1, stdout  # one warning line names what was done
    elif text:
        assert text in stdout


@pytest.mark.parametrize("name", [n for n, entry in MATRIX.items() if entry[TASK2][0] == DEGRADED])
def test_strict_turns_each_degraded_case_into_one_error_line(name, fusion_bundle, synthetic_case, tmp_path):
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    status, stdout, stderr = run(input_dir, tmp_path / "out", fusion_bundle, "--strict")
    assert "Traceback" not in stdout + stderr
    check_failure(status, stderr, tmp_path / "out", STRICT_ERRORS.get(name, MATRIX[name][TASK2][1]))


def test_container_writes_the_predictors_decision_and_drops_folds_under_the_time_guard(fusion_bundle, synthetic_case,
                                                                                         tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", synthetic_case.ehr(task=3))
    predictor = HPVPredictor.from_bundle(fusion_bundle, device="cpu")
    expected = predictor.predict_case(read_case(input_dir))
    status, stdout, _ = run(input_dir, tmp_path / "out", fusion_bundle)
    assert status == 0 and check_status(tmp_path / "out") is expected
    assert f"P(HPV+) {predictor.last_report.probability:.3f}" in stdout
    # As if the process had started 10 s ago with a budget of half a second: the two lightest folds go.
    status, stdout, _ = run(input_dir, tmp_path / "out2", fusion_bundle, "--time-budget", "0.5", started_s_ago=10)
    assert status == 0 and "time budget: dropped fold(s) [2, 1]: " in stdout
    check_status(tmp_path / "out2")
    assert run(input_dir, tmp_path / "out3", fusion_bundle)[0] == 0  # the same input gives the same bytes
    assert (tmp_path / "out3" / SPEC.output).read_bytes() == (tmp_path / "out" / SPEC.output).read_bytes()
    status, _, stderr = run(input_dir, tmp_path / "out4", fusion_bundle, "--time-budget", "700")
    check_failure(status, stderr, tmp_path / "out4", "the time budget must lie in (0, 600] s")


def test_inference_script_runs_as_a_process(fusion_bundle, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", synthetic_case.ehr(task=3))
    done = subprocess.run([sys.executable, str(REPO / SPEC.container / "inference.py"), "--input", str(input_dir),
                           "--output", str(tmp_path / "out"), "--resources", str(fusion_bundle), "--device", "cpu"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    check_status(tmp_path / "out")
    status, _, stderr = run(input_dir, tmp_path / "out2", tmp_path / "none")
    check_failure(status, stderr, tmp_path / "out2", "no model bundle at")
