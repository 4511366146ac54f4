"""The HECKTOR 2026 container (hecktor2026_container/inference.py) on the hostile-input matrix, by default and with
``--strict``: four valid outputs whenever an answer can be formed (helpers.hostile_inputs.hecktor2026_outcome),
otherwise one error line and none of the four; its answer is the library's; scripts/check_outputs.py checks the four
files. The bundle is helpers.containers' tiny 2026 bundle (untrained networks, hand-fitted heads)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.case import read_case
from hecktor.datasets import write_gc_input
from hecktor.hecktor2026 import Hecktor2026Predictor
from hecktor.tasks import get_task
from helpers.containers import (bundles, check_failure, check_hecktor2026, files_under, input_ct, run,
                                synthetic_case)
from helpers.hostile_inputs import (DEGRADED, EHR_2026, ERROR, MATRIX, REPAIRED, SILENTLY_WRONG, STRICT_ERRORS,
                                    _spoiled_input, _warning_lines, hecktor2026_outcome)
from helpers.paths import REPO

__all__ = ["bundles", "synthetic_case"]  # fixtures of helpers.containers, used here

TASK = 2026
SPEC = get_task(TASK)
QUIET = ("valid", "whole_body", "upper_case_mha", "upper_case_nii_gz", "stray_files")
"""Rows that must answer without a single warning."""


def _check_outputs_script():
    spec = importlib.util.spec_from_file_location("check_outputs", REPO / "scripts" / "check_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(MATRIX))
def test_every_row_gives_four_valid_outputs_or_one_error_line(name, bundles, synthetic_case, tmp_path):
    kind, text = hecktor2026_outcome(name)
    input_dir = _spoiled_input(name, synthetic_case, tmp_path, EHR_2026)
    output_dir = tmp_path / "out"
    status, stdout, stderr = run(TASK, input_dir, output_dir, bundles[TASK])
    assert "Traceback" not in stdout + stderr
    if kind == ERROR:
        check_failure(status, stderr, output_dir, text)  # none of the four
        return
    assert status == 0 and stderr == "", stderr
    labels, *_ = check_hecktor2026(output_dir, input_ct(input_dir))
    if "placeholder" in name:
        assert not labels.any()
    if kind in (REPAIRED, DEGRADED):
        assert len(_warning_lines(stdout, text)) == 1, stdout
    elif text:
        assert text in stdout
    if name in QUIET:
        assert "WARNING" not in stdout, stdout


@pytest.mark.parametrize("name", [n for n in MATRIX if hecktor2026_outcome(n)[0] in (DEGRADED, REPAIRED)])
def test_strict_refuses_each_dropped_input_and_keeps_the_repairs(name, bundles, synthetic_case, tmp_path):
    kind, text = hecktor2026_outcome(name)
    input_dir = _spoiled_input(name, synthetic_case, tmp_path, EHR_2026)
    status, stdout, stderr = run(TASK, input_dir, tmp_path / "out", bundles[TASK], "--strict")
    assert "Traceback" not in stdout + stderr
    if kind == DEGRADED:
        check_failure(status, stderr, tmp_path / "out", STRICT_ERRORS.get(name, text))
    else:
        assert status == 0 and stderr == "" and len(_warning_lines(stdout, text)) == 1, stdout + stderr
        check_hecktor2026(tmp_path / "out", input_ct(input_dir))


@pytest.fixture(scope="module")
def clean(bundles, synthetic_case, tmp_path_factory):
    """The clean case's input folder and the container's four answers."""
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path_factory.mktemp("clean"), EHR_2026,
                               seed=1)
    output_dir = tmp_path_factory.mktemp("clean-out")
    status, stdout, stderr = run(TASK, input_dir, output_dir, bundles[TASK])
    assert status == 0 and stderr == "", stderr
    return input_dir, output_dir, check_hecktor2026(output_dir, input_ct(input_dir)), stdout


def test_the_container_answers_what_the_library_predicts(bundles, clean):
    input_dir, _, (labels, t_stage, n_stage, days), stdout = clean
    predictor = Hecktor2026Predictor.from_bundle(bundles[TASK], device="cpu")
    answer = predictor.predict_case(read_case(input_dir, with_ehr=True))
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(answer.mask))
    assert (labels == 1).any() and (labels == 2).any()  # something to stage
    assert (t_stage, n_stage) == (answer.t_stage, answer.n_stage)
    assert days == answer.rfs_days  # the JSON number is the float itself (shortest round-trip text)
    report = predictor.last_report
    assert f"{t_stage} ({report.stagers['T']}), {n_stage} ({report.stagers['N']}), RFS {days:.0f} days" in stdout


@pytest.mark.parametrize("name", SILENTLY_WRONG)
def test_a_silently_wrong_input_answers_as_its_clean_twin(name, bundles, synthetic_case, clean, tmp_path):
    _, _, (clean_labels, t_stage, n_stage, days), _ = clean
    input_dir = _spoiled_input(name, synthetic_case, tmp_path, EHR_2026)
    status, stdout, stderr = run(TASK, input_dir, tmp_path / "out", bundles[TASK])
    assert status == 0 and stderr == "" and len(_warning_lines(stdout, hecktor2026_outcome(name)[1])) == 1, stdout
    labels, t_twin, n_twin, days_twin = check_hecktor2026(tmp_path / "out", input_ct(input_dir))
    assert (t_twin, n_twin) == (t_stage, n_stage)
    for label in (1, 2):
        a, b = labels == label, clean_labels == label
        assert 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)) >= 0.9, (name, label)
    assert abs(days_twin - days) <= 0.01 * days, (days_twin, days)


def test_a_stale_answer_is_replaced_whole_or_removed_whole(bundles, synthetic_case, clean, tmp_path):
    input_dir, _, (labels, *answers), _ = clean
    out = tmp_path / "out"
    for path in SPEC.outputs:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text("stale output of an earlier run")
    assert run(TASK, input_dir, out, bundles[TASK])[0] == 0
    again = check_hecktor2026(out, input_ct(input_dir))  # all four replaced, no temporary left
    np.testing.assert_array_equal(again[0], labels)
    assert list(again[1:]) == answers
    bad = _spoiled_input("ct_missing", synthetic_case, tmp_path / "bad", EHR_2026)
    status, _, stderr = run(TASK, bad, out, bundles[TASK])
    check_failure(status, stderr, out, "no image")  # and none of the earlier four is left


def test_check_outputs_accepts_the_container_and_names_each_defect(clean, tmp_path):
    input_dir, output_dir, _, _ = clean
    script = _check_outputs_script()
    assert script.check_hecktor2026(input_dir, output_dir, SPEC.outputs) == []
    assert script.main(["--task", "2026", "--input", str(input_dir), "--output", str(output_dir)]) == 0
    defects = {
        "t-stage.json": ('"T4a"', 't-stage.json must hold one JSON string, one of T1, T2, T3, T4; got \'"T4a"\''),
        "n-stage.json": ("2", "n-stage.json must hold one JSON string, one of N0, N1, N2, N3; got '2'"),
        "rfs.json": ("-3.5", "rfs.json must hold an RFS time in days above 0, got '-3.5'"),
    }
    for file, (text, problem) in defects.items():
        folder = tmp_path / file
        for path in SPEC.outputs:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes((output_dir / path).read_bytes())
        (folder / file).write_text(text)
        (problem_line,) = script.check_hecktor2026(input_dir, folder, SPEC.outputs)
        assert problem_line.endswith(problem), problem_line
    (folder / "rfs.json").unlink()
    (folder / "notes.txt").write_text("stray")
    assert script.check_hecktor2026(input_dir, folder, SPEC.outputs) == [
        f"unexpected file(s) in {folder}: notes.txt", f"output file missing: {folder / 'rfs.json'}"]
    assert files_under(output_dir) == sorted(output_dir / p for p in SPEC.outputs)  # the clean run left untouched


def test_the_time_guard_drops_folds_and_still_writes_the_four_outputs(bundles, clean, tmp_path):
    """One budget for the whole case (25 minutes on the platform): past it, the ensemble keeps its heaviest fold and
    the four answers are still written; a budget beyond the limit is refused in one line."""
    input_dir = clean[0]
    status, stdout, _ = run(TASK, input_dir, tmp_path / "late", bundles[TASK], "--time-budget", "0.5",
                            started_s_ago=10)
    assert status == 0 and "time budget: dropped fold(s) [1]: " in stdout, stdout
    check_hecktor2026(tmp_path / "late", input_ct(input_dir))
    status, _, stderr = run(TASK, input_dir, tmp_path / "over", bundles[TASK], "--time-budget", "1600")
    check_failure(status, stderr, tmp_path / "over", "the time budget must lie in (0, 1500] s")
