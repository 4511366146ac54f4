"""Task 3 (HPV status): the boolean output, the metrics, the calibrated fold ensemble (hecktor.diagnosis) and its
bundle, the container run as the platform runs it (Task 2's bad-input matrix, by the registry), cross-validated
training (hecktor.training.hpv, train_hpv.py, export_hpv.py), held-out scoring and hecktor-predict/-evaluate.

The bundles are tiny untrained networks in the exact bundle format the container loads."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

import export_hpv
import train_hpv
from conftest import REPO, head_phantom
from hecktor import evaluate as evaluate_cli
from hecktor import predict as predict_cli
from hecktor.bundle import write_bundle
from hecktor.clinical import ClinicalEncoder
from hecktor.case import read_case
from hecktor.datasets import ehr_from_row, list_training_cases, read_training_table, write_gc_input
from hecktor.diagnosis import DiagnosisReport, HPVPredictor, LogisticHead, PlattCalibration
from hecktor.errors import BundleError, InputError
from hecktor.fold_ensemble import EnsembleFold
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.outputs import write_json_boolean
from hecktor.plan import BoxPlan
from hecktor.preprocessing import preprocess_box
from hecktor.survival import ensemble_weights
from hecktor.synthetic import generate_cohort, make_case
from hecktor.tasks import RECORD_KEYS, get_task
from hecktor.training.calibration import best_threshold, fit_platt
from hecktor.training.hpv import (
    HPVTrainingConfig,
    cross_validate_hpv,
    demo_hpv,
    load_hpv_cohort,
    load_hpv_csv_cohort,
    score_held_out,
)
from hostile_inputs import DEGRADED, ERROR, MATRIX, REPAIRED, STRICT_ERRORS, _spoiled_input, _warning_lines
from test_containers import check_failure, files_under

SPEC = get_task(3)
PLAN = BoxPlan(input_shape_zyx=(24, 24, 24), brain_min_volume_ml=50.0)
NETWORK = {**TINY_BACKBONE, "clinical_dim": 8, "fused_dim": 16}
AUCS = (0.74, 0.56, 0.66)
ROWS = [{"Age": str(45 + 3 * i), "Gender": str(i % 2), "Tobacco Consumption": ["0", "1", None][i % 3],
         "Alcohol Consumption": str((i // 2) % 2), "Performance Status": str(i % 3), "Treatment": str((i // 3) % 2),
         "M-stage": "M1" if i == 5 else "M0"} for i in range(16)]
EHR = {"Age": 56, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1, "Performance Status": 0,
       "Treatment": 0, "M-stage": "M0"}


def build_predictor(mode: str = "fusion", threshold: float = 0.5, seed: int = 0) -> HPVPredictor:
    """Three folds: random networks, encoders fitted on different rows, random heads with Platt calibrations."""
    rng = np.random.default_rng(seed)
    folds = []
    for k, auc in enumerate(AUCS):
        encoder = ClinicalEncoder().fit(ROWS[k:k + 12]) if mode != "imaging" else None
        network = None
        if mode != "clinical":
            torch.manual_seed(seed * 10 + k)
            network = FusedFeatureExtractor(encoder.n_features if encoder else 0, mode=mode, **NETWORK).eval()
        width = network.feature_dim if network is not None else encoder.n_features
        head = LogisticHead(tuple(rng.normal(size=width)), float(rng.normal()),
                            PlattCalibration(float(rng.uniform(0.5, 2.0)), float(rng.normal(scale=0.3))))
        folds.append(EnsembleFold(head, network, encoder, validation_score=auc))
    return HPVPredictor(folds, ensemble_weights(AUCS), PLAN, mode, threshold, device="cpu", info={"note": "test"})


@pytest.fixture(scope="module")
def phantom():
    ct, pet, _, _ = head_phantom()
    return ct, pet


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory) -> Path:
    return build_predictor("fusion").to_bundle(tmp_path_factory.mktemp("bundle") / "task3")


# ------------------------------------------------------------------------------------------------ output, metrics


def test_write_json_boolean_is_exactly_true_or_false(tmp_path):
    assert write_json_boolean(True, tmp_path / "a.json").read_bytes() == b"true"
    assert write_json_boolean(np.bool_(False), tmp_path / "b.json").read_bytes() == b"false"
    for value in (1, 0, "true", None, 0.7):
        with pytest.raises(ValueError, match="expected a boolean"):
            write_json_boolean(value, tmp_path / "c.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporary, no partial file


def test_balanced_accuracy_and_auc_by_hand_and_against_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    # Positives score 0.9 and 0.4, negatives 0.4 and 0.1: pairs won 1, 1, 1 and one tie (1/2) -> 3.5 / 4.
    assert roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert balanced_accuracy([1, 1, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.5 * (1 / 3 + 1))
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = rng.random(25) < 0.4
        y[:2] = True, False
        score, guess = np.round(rng.normal(size=25), 1), rng.random(25) < 0.5
        assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
        assert balanced_accuracy(y, guess) == pytest.approx(balanced_accuracy_score(y, guess), abs=1e-12)
    with pytest.raises(InputError, match="needs both classes"):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(InputError, match="finite scores"):
        roc_auc([1, 0], [0.2, float("nan")])


def test_best_threshold_maximises_balanced_accuracy_and_breaks_ties_towards_the_prior():
    p = [0.1, 0.2, 0.3, 0.4, 0.6, 0.7]
    y = [0, 0, 1, 0, 1, 1]
    # Midpoints 0.15 .. 0.65; 0.25 (sensitivity 1, specificity 2/3) and 0.5 (2/3, 1) both give 5/6.
    assert best_threshold(p, y) == pytest.approx(0.5)  # prevalence 0.5
    assert best_threshold(p, y, prior=0.2) == pytest.approx(0.25)
    assert best_threshold([0.3, 0.3, 0.3], [0, 1, 1], prior=0.4) == pytest.approx(0.4)  # no split: the prior


def test_platt_fit_is_scikit_learns_sigmoid_calibration_and_never_reverses_a_ranking():
    calibration = pytest.importorskip("sklearn.calibration")
    rng = np.random.default_rng(1)
    for scale in (0.01, 1.0, 30.0):  # the fit does not depend on the logits' scale
        logits = rng.normal(size=40) * scale
        labels = (rng.random(40) < 1 / (1 + np.exp(-1.5 * logits / scale + 0.3))).astype(int)
        a, b = calibration._sigmoid_calibration(logits, labels)  # sklearn: p = 1 / (1 + exp(a f + b))
        fitted = fit_platt(logits, labels)
        assert (fitted.slope, fitted.intercept, fitted.method) == (pytest.approx(-a, rel=1e-4),
                                                                   pytest.approx(-b, rel=1e-4, abs=1e-6), "platt")
    reversed_ = fit_platt(np.arange(10.0), np.r_[np.ones(5), np.zeros(5)])  # the hold-out ranks against the model
    assert reversed_ == PlattCalibration.prior_shift(0.5) and reversed_.method == "prior_shift"
    one_class = fit_platt(np.arange(4.0), np.ones(4))
    assert one_class.slope == 1.0 and one_class.intercept == pytest.approx(math.log(0.999 / 0.001))
    # prior shift: a balanced-prior probability of 1/2 becomes the prevalence
    assert PlattCalibration.prior_shift(0.3)(0.0) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------------------ predictor


def test_predict_is_the_weighted_mean_of_calibrated_fold_probabilities(phantom):
    predictor = build_predictor("fusion", threshold=0.5)
    ct, pet = phantom
    probability = predictor.predict_probability(ct, pet, EHR)
    image = torch.from_numpy(preprocess_box(ct, pet, PLAN).image)[None]
    by_hand = []
    with torch.no_grad():
        for fold in predictor.folds:
            clinical = torch.from_numpy(fold.encoder.transform([EHR]))
            features = fold.network.extract_features(image, clinical).double().numpy()
            logit = features @ np.asarray(fold.head.coef) + fold.head.intercept
            by_hand.append(1 / (1 + np.exp(-(fold.head.calibration.slope * logit[0] + fold.head.calibration.intercept))))
    weights = ensemble_weights(AUCS)
    assert probability == pytest.approx(float(np.dot(weights, by_hand)), abs=1e-6)
    report = predictor.last_report
    assert isinstance(report, DiagnosisReport) and report.probability == probability and report.threshold == 0.5
    assert report.folds == [0, 1, 2] and report.fold_probabilities[0] == pytest.approx(by_hand[0], abs=1e-6)
    assert report.summary().startswith(f"P(HPV+) {probability:.3f}, threshold 0.500: HPV-")
    assert report.table_values == {"probability": probability}
    for threshold in (probability - 1e-3, probability + 1e-3):  # the bundle's threshold decides
        predictor.threshold = threshold
        assert predictor.predict(ct, pet, EHR) is (probability >= threshold)


@pytest.mark.parametrize("mode", ["fusion", "imaging", "clinical"])
def test_bundle_round_trip_gives_identical_probabilities_and_holds_no_pickle(mode, phantom, tmp_path):
    predictor = build_predictor(mode, threshold=0.42)
    ct, pet = phantom
    expected = predictor.predict_probability(ct, pet, EHR)
    bundle = predictor.to_bundle(tmp_path / "bundle")
    loaded = HPVPredictor.from_bundle(bundle, device="cpu")
    assert (loaded.mode, loaded.threshold) == (mode, 0.42)
    np.testing.assert_allclose(loaded.weights, ensemble_weights(AUCS))
    assert loaded.predict_probability(ct, pet, EHR) == pytest.approx(expected, abs=1e-7)
    assert loaded.predict(ct, pet, EHR) is (expected >= 0.42)
    suffixes = {p.suffix for p in bundle.iterdir()}
    assert suffixes <= {".json", ".pt"} and (".pt" in suffixes) == (mode != "clinical")
    head = json.loads((bundle / "fold_1_head.json").read_text())
    assert head["coef"] == pytest.approx(list(predictor.folds[1].head.coef))
    assert head["calibration"]["method"] == "platt"


def _edit_model(bundle: Path, edit) -> None:
    model = json.loads((bundle / "model.json").read_text())
    edit(model)
    files = {p.name: json.loads(p.read_text()) for p in bundle.glob("fold_*.json")}
    state = {p.name: torch.load(p, weights_only=True) for p in bundle.glob("*.pt")}
    write_bundle(bundle, task=3, plan=PLAN, model=model, state_dicts=state, json_files=files, overwrite=True)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["decision"].update(threshold=1.5), "threshold must lie in (0, 1)"),
    (lambda m: m["ensemble"].update(rule="cindex_margin"), "ensemble rule must be 'auc_margin'"),
    (lambda m: m["ensemble"].update(weights=[0.5, 0.5, 0.5]), "weights summing to 1"),
    (lambda m: m.update(format="hecktor-task2-risk"), "is not a hecktor-task3-hpv v1 description"),
    (lambda m: m["folds"][1].update(head=None), "fold 1 must list head = 'fold_1_head.json'"),
])
def test_inconsistent_bundle_is_refused(fusion_bundle, tmp_path, edit, message):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(fusion_bundle, bundle)
    _edit_model(bundle, edit)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HPVPredictor.from_bundle(bundle, device="cpu")


def test_a_head_of_the_wrong_width_and_a_task2_bundle_are_refused(tmp_path):
    bundle = build_predictor("clinical").to_bundle(tmp_path / "bundle")
    head = json.loads((bundle / "fold_0_head.json").read_text())
    head["coef"] = head["coef"][:-1]
    model = json.loads((bundle / "model.json").read_text())
    files = {p.name: json.loads(p.read_text()) for p in bundle.glob("fold_*.json")}
    files["fold_0_head.json"] = head
    write_bundle(bundle, task=3, plan=PLAN, model=model, json_files=files, overwrite=True)
    with pytest.raises(BundleError, match="fold_0_head.json takes .* features but fold 0 produces"):
        HPVPredictor.from_bundle(bundle, device="cpu")
    with pytest.raises(BundleError, match="is a Task 2 bundle, but Task 3 was asked for"):
        HPVPredictor.from_bundle(REPO / "tests" / "fixtures" / "bundles" / "task2", device="cpu")


def test_odd_clinical_records_encode_as_unknown(phantom):
    predictor = build_predictor("clinical")
    p = lambda ehr: predictor.predict_probability(None, None, ehr)  # noqa: E731
    base = p(EHR)
    assert p({k: f" {v} " for k, v in EHR.items()}) == base
    assert p({**EHR, "HPV Status": 1, "Weight": 80.5}) == base  # the target is never an input
    assert p({**EHR, "M-stage": "M7", "Gender": "other"}) == p({**EHR, "M-stage": None, "Gender": None}) != base
    assert p(None) == p({}) == p({k: None for k in EHR}) != base


# ------------------------------------------------------------------------------------------------------ container


def _load_inference():
    spec = importlib.util.spec_from_file_location("task3_inference", REPO / SPEC.container / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INFERENCE = _load_inference()


def run(input_dir: Path, output_dir: Path, bundle: Path, *extra: str, started_s_ago: float = 0.0):
    """``task3_container/inference.py``'s ``main`` as the container calls it; returns (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["--input", str(input_dir), "--output", str(output_dir), "--resources", str(bundle), "--device", "cpu",
            *extra]
    with redirect_stdout(out), redirect_stderr(err):
        status = INFERENCE.main(argv, start_time=time.time() - started_s_ago)
    return status, out.getvalue(), err.getvalue()


def check_status(output_dir: Path) -> bool:
    """The Task 3 output contract: the only file, exactly ``true`` or ``false``."""
    assert files_under(output_dir) == [output_dir / SPEC.output]
    text = (output_dir / SPEC.output).read_text()
    assert text in ("true", "false"), text
    return text == "true"


# Task 3 reads what Task 2 reads (CT, PET, ehr.json) and answers through the same fold ensemble, so its expected
# outcome of each hostile input is Task 2's column of the matrix.
TASK2 = 2


@pytest.fixture(scope="module")
def synthetic_case():
    return make_case(3, "small", case_index=1, ct_orientation="identity", pet_orientation="identity")


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


# ------------------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("cohort") / "DATA", cases=30, seed=0, size="small").out_dir


def _write_table(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["PatientID", "CenterID", *RECORD_KEYS, "HPV Status"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_clinical_mode_learns_a_status_the_record_decides(tmp_path, capsys):
    """HPV-positive exactly when the patient never smoked: every fold's balanced accuracy and AUC are 1."""
    rng = np.random.default_rng(0)
    rows = [{"PatientID": f"P{i:03d}", "CenterID": 1 + i % 3, "Age": int(rng.integers(40, 80)), "Gender": i % 2,
             "Tobacco Consumption": int(t), "Alcohol Consumption": "", "Performance Status": i % 2, "Treatment": 1,
             "M-stage": "M0", "HPV Status": int(not t) if i % 7 else ""}
            for i, t in enumerate(rng.random(70) < 0.5)]
    table = _write_table(tmp_path / "table.csv", rows)
    out = tmp_path / "run"
    assert train_hpv.main(["--mode", "clinical", "--csv", str(table), "--folds", "5", "--out", str(out),
                           "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "60 patients of known HPV status" in printed and "10 of unknown status left out" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["balanced_accuracy_folds"] == [1.0] * 5 and metrics["auc_folds"] == [1.0] * 5
    assert metrics["balanced_accuracy_mean"] == 1.0 and metrics["auc_mean"] == 1.0
    assert metrics["n_patients"] == 60 and metrics["n_unknown_excluded"] == 10
    # the calibrated probabilities are on the right sides of the threshold, and near the truth
    oof = list(csv.DictReader((out / "oof.csv").open()))
    for row in oof:
        assert (float(row["oof_probability"]) >= metrics["threshold"]) == (row["hpv_status"] == "1")
    predictor = HPVPredictor.from_bundle(out / "model", device="cpu")
    assert predictor.predict(None, None, {"Tobacco Consumption": 0}) is True
    assert predictor.predict(None, None, {"Tobacco Consumption": 1, "HPV Status": 1}) is False


def test_reported_fold_scores_use_thresholds_chosen_without_the_fold(cohort_dir, tmp_path):
    out = tmp_path / "clinical"
    assert train_hpv.main(["--mode", "clinical", "--data", str(cohort_dir), "--folds", "3", "--out", str(out),
                           "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    oof = list(csv.DictReader((out / "oof.csv").open()))
    assert len(oof) == metrics["n_patients"] == 30 - metrics["n_unknown_excluded"]
    fold = np.asarray([int(r["fold"]) for r in oof])
    y = np.asarray([int(r["hpv_status"]) for r in oof])
    p = np.asarray([float(r["oof_probability"]) for r in oof])
    for k in range(3):
        others = fold != k
        threshold = best_threshold(p[others], y[others], prior=y[others].mean())
        assert metrics["thresholds_cross_fitted"][k] == pytest.approx(threshold)
        assert metrics["balanced_accuracy_folds"][k] == pytest.approx(balanced_accuracy(y[~others], p[~others] >= threshold))
        assert metrics["auc_folds"][k] == pytest.approx(roc_auc(y[~others], p[~others]))
        assert [int(r["oof_prediction"]) for r in oof if int(r["fold"]) == k] == (p[~others] >= threshold).tolist()
    assert metrics["threshold"] == pytest.approx(best_threshold(p, y))
    assert metrics["balanced_accuracy_in_sample_threshold"] == pytest.approx(balanced_accuracy(y, p >= metrics["threshold"]))
    assert metrics["balanced_accuracy_mean"] == pytest.approx(np.mean(metrics["balanced_accuracy_folds"]))
    assert metrics["ensemble_weights"] == pytest.approx(ensemble_weights(metrics["auc_folds"]).tolist())


def test_fusion_folds_in_the_bundle_give_exactly_the_out_of_fold_probabilities(cohort_dir, tmp_path):
    cohort = load_hpv_cohort(cohort_dir, PLAN, cache_dir=tmp_path / "cache", progress=False)
    assert "HPV Status" not in cohort.rows[0] and len(cohort) == len(cohort.images)
    config = HPVTrainingConfig(mode="fusion", n_folds=2, epochs=1, batch_size=8, learning_rate=3e-3,
                               early_stopping_fraction=0.25, network=dict(NETWORK), device="cpu", threads=1,
                               progress=False)
    result = cross_validate_hpv(cohort, config, tmp_path / "run")
    assert (tmp_path / "run" / "fold_0" / "training_log.csv").is_file()
    assert export_hpv.main([str(tmp_path / "run"), "--out", str(tmp_path / "bundle")]) == 0
    bundle = HPVPredictor.from_bundle(tmp_path / "bundle", device="cpu")
    assert bundle.threshold == pytest.approx(result.threshold) and bundle.mode == "fusion"
    for k, fold in enumerate(result.folds):
        alone = HPVPredictor([bundle.folds[k]], [1.0], bundle.plan, "fusion", bundle.threshold, device="cpu")
        val = fold.val_idx
        np.testing.assert_allclose(alone.predict_batch(cohort.images[val], [cohort.rows[i] for i in val]),
                                   fold.oof_probability, atol=1e-6)
        # 11 training patients make no hold-out (4 at least): the balanced logit is moved to the prevalence
        assert fold.calibration_patients == 0 and fold.model.head.calibration == PlattCalibration.prior_shift(
            cohort.labels[fold.train_idx].mean())
    # the container's path on one training case gives the ensemble's probability of its preprocessed input
    case = next(c for c in list_training_cases(cohort_dir, 3) if c.patient_id == cohort.patient_ids[0])
    ct, pet, _ = case.read()
    assert bundle.predict_probability(ct, pet, cohort.rows[0]) == pytest.approx(
        float(bundle.predict_batch(cohort.images[:1], cohort.rows[:1])[0]), abs=1e-6)


def test_cohort_leaves_out_unknown_status_and_refuses_bad_values(tmp_path, capsys):
    rows = [{"PatientID": f"P{i}", "Age": 50 + i, "HPV Status": s} for i, s in enumerate(["1", "0", "", "1.0", "0"])]
    cohort = load_hpv_csv_cohort(_write_table(tmp_path / "t.csv", rows))
    assert cohort.patient_ids == ["P0", "P1", "P3", "P4"] and cohort.labels.tolist() == [1, 0, 1, 0]
    assert cohort.n_unknown == 1 and all("HPV Status" not in r for r in cohort.rows)
    rows[2]["HPV Status"] = "2"
    bad = _write_table(tmp_path / "bad.csv", rows)
    assert train_hpv.main(["--mode", "clinical", "--csv", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip().endswith("HPV Status must be 0, 1 or empty, got '2'")
    assert train_hpv.main(["--mode", "fusion", "--csv", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "mode 'fusion' needs --data with a 'Task 3' folder" in capsys.readouterr().err
    assert export_hpv.main([str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "is not a finished Task 3 run" in capsys.readouterr().err
    with pytest.raises(InputError, match="cannot be a clinical feature"):
        HPVTrainingConfig(clinical_features=["Age", "HPV Status"])


def test_clinical_mode_on_the_real_hn1_table(real_data, tmp_path):
    table = real_data / "clinical" / "tcia_hn1_hecktor2025_columns.csv"
    if not table.is_file():
        pytest.skip(f"{table} is absent")
    cohort = load_hpv_csv_cohort(table)
    assert (len(cohort), cohort.n_positive, cohort.n_unknown) == (81, 23, 56)
    metrics = cross_validate_hpv(cohort, HPVTrainingConfig(mode="clinical", progress=False)).metrics()
    assert len(metrics["balanced_accuracy_folds"]) == 5
    assert all(0.0 <= v <= 1.0 for v in metrics["balanced_accuracy_folds"] + metrics["auc_folds"])


def test_demo_function_trains_exports_and_scores_held_out_cases_beside_the_oracle(cohort_dir, tmp_path):
    held_out = generate_cohort(tmp_path / "held_out", cases=8, seed=5, size="small").out_dir
    config = HPVTrainingConfig(mode="fusion", n_folds=2, epochs=1, batch_size=8, network=dict(NETWORK),
                               device="cpu", threads=1, progress=False)
    lines = []
    result = demo_hpv(cohort_dir, held_out, tmp_path / "run", tmp_path / "bundle", config, plan=PLAN,
                      cache_dir=tmp_path / "cache", echo=lines.append)
    scores = result["held_out"]
    truth = {r["PatientID"]: r["HPV Status"] for r in read_training_table(held_out, 3)}
    assert scores["n"] == sum(v is not None for v in truth.values())
    assert all(c["status"] == int(truth[c["PatientID"]]) for c in scores["cases"])
    assert all(c["predicted"] == (c["probability"] >= scores["threshold"]) for c in scores["cases"])
    assert scores["oracle_balanced_accuracy"] is not None and lines[-1].startswith("Task 3 on ")
    assert result["cv"]["n_folds"] == 2 and HPVPredictor.from_bundle(tmp_path / "bundle").mode == "fusion"
    assert score_held_out(tmp_path / "bundle", held_out)["balanced_accuracy"] == scores["balanced_accuracy"]


# --------------------------------------------------------------------------------------- hecktor-predict/-evaluate


def test_predict_and_evaluate_task3(fusion_bundle, cohort_dir, tmp_path, capsys):
    status = predict_cli.main(["--task", "3", "--bundle", str(fusion_bundle), "--input", str(cohort_dir),
                               "--output", str(tmp_path / "preds"), "--device", "cpu"])
    assert status == 0
    rows = list(csv.DictReader((tmp_path / "preds" / "predictions.csv").open()))
    assert list(rows[0]) == ["PatientID", "hpv_status", "probability"] and len(rows) == 30
    predictor = HPVPredictor.from_bundle(fusion_bundle, device="cpu")
    first = next(c for c in list_training_cases(cohort_dir, 3) if c.patient_id == rows[0]["PatientID"])
    ct, pet, _ = first.read()
    record = {r["PatientID"]: r for r in read_training_table(cohort_dir, 3)}[first.patient_id]
    assert float(rows[0]["probability"]) == pytest.approx(predictor.predict_probability(ct, pet, ehr_from_row(
        record, 3)), abs=1e-9)
    assert all(r["hpv_status"] == ("true" if float(r["probability"]) >= predictor.threshold else "false")
               for r in rows)

    capsys.readouterr()
    assert evaluate_cli.main(["--task", "3", "--pred", str(tmp_path / "preds" / "predictions.csv"), "--labels",
                              str(cohort_dir), "--json", str(tmp_path / "s.json")]) == 0
    report = json.loads((tmp_path / "s.json").read_text())
    truth = {r["PatientID"]: r["HPV Status"] for r in read_training_table(cohort_dir, 3)}
    known = sorted(pid for pid, v in truth.items() if v is not None)
    y = [int(truth[pid]) for pid in known]
    by_id = {r["PatientID"]: r for r in rows}
    assert report["balanced_accuracy"] == pytest.approx(
        balanced_accuracy(y, [by_id[pid]["hpv_status"] == "true" for pid in known]))
    assert report["auc"] == pytest.approx(roc_auc(y, [float(by_id[pid]["probability"]) for pid in known]))
    assert report["n"] == len(known) and report["n_unknown_ignored"] == 30 - len(known)
    assert "| balanced accuracy (hpv_status) |" in capsys.readouterr().out


def test_evaluate_task3_by_hand_and_its_errors(tmp_path, capsys):
    labels = tmp_path / "DATA" / "Task 3" / SPEC.training_csv
    labels.parent.mkdir(parents=True)
    labels.write_text("PatientID,HPV Status\nP1,1\nP2,1\nP3,0\nP4,0\nP5,\n")
    pred = tmp_path / "predictions.csv"
    pred.write_text("PatientID,hpv_status\nP1,true\nP2,false\nP3,false\nP4,false\nP5,true\n")
    # sensitivity 1/2, specificity 2/2 -> 0.75; P5's status is unknown: not scored; no probability: no AUC
    report = evaluate_cli.evaluate(3, pred, tmp_path / "DATA")
    assert (report["balanced_accuracy"], report["auc"], report["n"], report["n_unknown_ignored"]) == (0.75, None, 4, 1)
    assert (report["tp"], report["fn"], report["tn"], report["fp"]) == (1, 1, 2, 0)
    pred.write_text("PatientID,hpv_status,probability\nP1,true,0.9\nP2,false,0.3\nP3,false,0.3\nP4,false,0.1\n")
    assert evaluate_cli.evaluate(3, pred, labels)["auc"] == pytest.approx(0.875)
    for text, message in (("PatientID,hpv_status\nP1,true\nP2,false\nP3,false\n", "no prediction for case P4"),
                          ("PatientID,hpv_status\nP1,true\nP2,1\nP3,0\nP4,yes\n", "has hpv_status 'yes'"),
                          ("PatientID,hpv_status\nP1,true\nP2,true\nP3,false\nP4,false\nP9,true\n",
                           "prediction for case P9")):
        pred.write_text(text)
        capsys.readouterr()
        assert evaluate_cli.main(["--task", "3", "--pred", str(pred), "--labels", str(labels)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
