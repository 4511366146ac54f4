"""The hostile-input matrix on the bundle of every mode a user can export.

Task 2: ``fusion``, ``imaging``, ``clinical``, ``biomarkers`` (the default) and ``fusion+biomarkers``; Task 3:
``fusion``, ``imaging`` and ``clinical``. For each, the inputs that once gave a wrong answer without a word (a PET in
Bq/ml, absurd PET voxels, a CT offset) answer as their clean twin, with one warning; the default mode also runs the
whole matrix. A mode added to a predictor without a bundle here fails :func:`test_every_mode_has_its_bundle_here`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hecktor.datasets import write_gc_input
from hecktor.diagnosis import HPVPredictor
from hecktor.networks.fused import MODES as TASK3_MODES
from hecktor.prognosis import BIOMARKER_MODES, PREDICTOR_MODES, RiskPredictor
from hecktor.tasks import get_task
from helpers.containers import bundles, check_failure, files_under, run, synthetic_case
from helpers.hostile_inputs import (BIOMARKER_MODE_OUTCOMES, DEGRADED, EHR, ERROR, MATRIX, REPAIRED, SILENTLY_WRONG,
                                    _spoiled_input, _warning_lines)
from helpers.predictors import build_biomarker_predictor, build_hpv_predictor, build_risk_predictor

__all__ = ["bundles", "synthetic_case"]  # fixtures of helpers.containers, used here

DEFAULT_MODE = "biomarkers"


@pytest.fixture(scope="session")
def mode_bundles(bundles, tmp_path_factory) -> dict[tuple[int, str], Path]:
    """A bundle per (task, mode); the biomarker modes nest the tiny Task 1 bundle of helpers.containers."""
    root = tmp_path_factory.mktemp("mode-bundles")
    made = {}
    for mode in PREDICTOR_MODES:
        if mode in ("biomarkers", "fusion+biomarkers"):
            predictor = build_biomarker_predictor(mode, segmentation=bundles[1])
        else:
            predictor = build_risk_predictor(mode)
        made[2, mode] = predictor.to_bundle(root / f"task2-{mode}")
    for mode in TASK3_MODES:
        made[3, mode] = build_hpv_predictor(mode).to_bundle(root / f"task3-{mode}")
    return made


def answer(task: int, output_dir: Path) -> float | bool:
    """The one output of Task 2 (a finite risk) or Task 3 (a boolean), checked against its contract."""
    (path,) = files_under(output_dir)
    assert path == output_dir / get_task(task).output
    value = json.loads(path.read_text())
    if task == 2:
        assert isinstance(value, float) and math.isfinite(value)
    else:
        assert isinstance(value, bool)
    return value


def test_every_mode_has_its_bundle_here(mode_bundles):
    assert {mode for task, mode in mode_bundles if task == 2} == set(PREDICTOR_MODES)
    assert {mode for task, mode in mode_bundles if task == 3} == set(TASK3_MODES)
    assert RiskPredictor.from_bundle(mode_bundles[2, DEFAULT_MODE], device="cpu").mode == DEFAULT_MODE
    assert HPVPredictor.from_bundle(mode_bundles[3, "clinical"], device="cpu").mode == "clinical"


@pytest.fixture(scope="session")
def clean_answers(mode_bundles, synthetic_case, tmp_path_factory) -> dict[tuple[int, str], tuple[float | bool, str]]:
    """The clean case's answer (and log) through every mode's container."""
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path_factory.mktemp("clean"), EHR, seed=1)
    answers = {}
    for (task, mode), bundle in mode_bundles.items():
        output_dir = tmp_path_factory.mktemp(f"clean-{task}-{mode}")
        status, stdout, stderr = run(task, input_dir, output_dir, bundle)
        assert status == 0 and stderr == "", stderr
        answers[task, mode] = (answer(task, output_dir), stdout)
    return answers


@pytest.mark.parametrize("task, mode", [(2, m) for m in PREDICTOR_MODES] + [(3, m) for m in TASK3_MODES])
@pytest.mark.parametrize("name", SILENTLY_WRONG)
def test_a_silently_wrong_input_answers_as_its_clean_twin_in_every_mode(name, task, mode, mode_bundles,
                                                                        synthetic_case, clean_answers, tmp_path):
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    status, stdout, stderr = run(task, input_dir, tmp_path / "out", mode_bundles[task, mode])
    assert status == 0 and stderr == "", stderr
    text = MATRIX[name][2][1]
    assert len(_warning_lines(stdout, text)) == 1, stdout  # said once, not once per consumer
    clean, _ = clean_answers[task, mode]
    if task == 2:
        # The networks see a z-scored PET, which the unit does not change: the clean risk to 1e-4. The biomarkers are
        # absolute SUVs, and a Bq/ml PET is brought back only approximately (divided by the body's median uptake,
        # which is 1.29 SUV in this phantom, not 1: 0.059 from the clean risk, measured), absurd voxels by their
        # neighbours' median (3e-4): the issue's bar of 0.1 for the biomarker modes.
        tolerance = 0.1 if mode in BIOMARKER_MODES else 1e-4
        assert abs(answer(2, tmp_path / "out") - clean) <= tolerance, (answer(2, tmp_path / "out"), clean)
    else:
        assert answer(3, tmp_path / "out") is clean


@pytest.mark.parametrize("name", list(MATRIX))
def test_the_default_mode_gives_a_valid_answer_or_one_error_line(name, mode_bundles, synthetic_case, tmp_path):
    """The whole matrix on Task 2's default mode, which segments the case and measures its biomarkers."""
    kind, text = BIOMARKER_MODE_OUTCOMES.get(name, MATRIX[name][2])
    input_dir = _spoiled_input(name, synthetic_case, tmp_path)
    status, stdout, stderr = run(2, input_dir, tmp_path / "out", mode_bundles[2, DEFAULT_MODE])
    assert "Traceback" not in stdout + stderr
    if kind == ERROR:
        check_failure(status, stderr, tmp_path / "out", text)
        return
    assert status == 0 and stderr == "", stderr
    answer(2, tmp_path / "out")
    if kind in (REPAIRED, DEGRADED):
        assert len(_warning_lines(stdout, text)) == 1, stdout
    elif text:
        assert text in stdout


def test_features_beyond_the_training_range_are_limited_with_one_warning(mode_bundles, synthetic_case, monkeypatch,
                                                                        tmp_path):
    """Without the repair (as for a PET unit the library does not recognise), the biomarkers of a PET x 7000 reach
    the Cox models thousands of times too large: they are limited to the training range, with one warning naming
    them, and the risk stays of the training risks' order instead of thousands."""
    import hecktor.fold_ensemble

    monkeypatch.setattr(hecktor.fold_ensemble, "repair_case", lambda ct, pet, **_: (ct, pet, []))
    predictor = RiskPredictor.from_bundle(mode_bundles[2, DEFAULT_MODE], device="cpu")
    clean = predictor.predict(synthetic_case.ct, synthetic_case.pet, EHR)
    risk = predictor.predict(synthetic_case.ct, synthetic_case.pet * 7000.0, EHR)
    (line,) = [w for w in predictor.last_report.warnings if "outside its training range" in w]
    assert "biomarker gtvp_suv_max (scaled)" in line and "limited to that range" in line
    # Each fold's standardised risk has mean 0 and SD 1 on its training patients: the limited features keep the
    # ensemble's risk within a few SDs (it was 6,828 before the limits, 2e18 with absurd voxels).
    assert abs(risk) < 10 and abs(clean) < 10, (risk, clean)
    fold_risks = np.asarray(list(predictor.last_fold_risks.values()))
    assert np.all(np.abs(fold_risks) < 10)


@pytest.mark.parametrize("mode", BIOMARKER_MODES)
def test_body_relative_biomarkers_answer_a_bq_per_ml_pet_exactly_as_its_clean_twin(mode, bundles, synthetic_case,
                                                                                 tmp_path):
    """What training exports since 2026-12-07 (suv_reference "body"): the SUV biomarkers are ratios to the body's
    median uptake, so the unit repair's approximation (0.059 above) no longer reaches the risk."""
    predictor = build_biomarker_predictor(mode, segmentation=bundles[1], suv_reference="body")
    bundle = predictor.to_bundle(tmp_path / "bundle")
    assert json.loads((bundle / "model.json").read_text())["segmentation"]["suv_reference"] == "body"
    risks = {}
    for name in ("valid", "pet_in_bq_per_ml"):
        input_dir = _spoiled_input(name, synthetic_case, tmp_path / name)
        status, _, stderr = run(2, input_dir, tmp_path / name / "out", bundle)
        assert status == 0 and stderr == "", stderr
        risks[name] = answer(2, tmp_path / name / "out")
    assert abs(risks["pet_in_bq_per_ml"] - risks["valid"]) <= 1e-4, risks
