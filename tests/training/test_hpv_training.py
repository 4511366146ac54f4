"""Cross-validated Task 3 training (hecktor.training.hpv, train_hpv.py, export_hpv.py) on synthetic cohorts and
hand-made tables: thresholds chosen without the fold they score, out-of-fold probabilities that the exported bundle
reproduces, unknown statuses left out, the clinical mode on the real HN1 table, and the demo's held-out scoring."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import export_hpv
import train_hpv
from hecktor.datasets import list_training_cases, read_training_table
from hecktor.diagnosis import HPVPredictor, PlattCalibration
from hecktor.errors import InputError
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.survival import ensemble_weights
from hecktor.synthetic import generate_cohort
from hecktor.tasks import RECORD_KEYS
from hecktor.training.calibration import best_threshold, chosen_threshold
from hecktor.training.hpv import HPVTrainingConfig, cross_validate_hpv
from hecktor.training.hpv_cohort import load_hpv_cohort, load_hpv_csv_cohort
from hecktor.training.hpv_held_out import demo_hpv, score_held_out
from helpers.predictors import NETWORK
from helpers.predictors import HPV_PLAN as PLAN


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


def test_reported_fold_scores_use_thresholds_chosen_without_the_fold(cohort_dir, tmp_path, capsys, caplog):
    out = tmp_path / "clinical"
    assert train_hpv.main(["--mode", "clinical", "--data", str(cohort_dir), "--folds", "3", "--out", str(out),
                           "--no-progress", "--threshold-rule", "balanced"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    oof = list(csv.DictReader((out / "oof.csv").open()))
    assert len(oof) == metrics["n_patients"] == 30 - metrics["n_unknown_excluded"]
    fold = np.asarray([int(r["fold"]) for r in oof])
    y = np.asarray([int(r["hpv_status"]) for r in oof])
    p = np.asarray([float(r["oof_probability"]) for r in oof])
    for k in range(3):
        others = fold != k
        threshold = chosen_threshold(p[others], y[others], y[others].mean())[0]
        assert metrics["thresholds_cross_fitted"][k] == pytest.approx(threshold)
        assert metrics["balanced_accuracy_folds"][k] == pytest.approx(balanced_accuracy(y[~others], p[~others] >= threshold))
        assert metrics["auc_folds"][k] == pytest.approx(roc_auc(y[~others], p[~others]))
        assert [int(r["oof_prediction"]) for r in oof if int(r["fold"]) == k] == (p[~others] >= threshold).tolist()
    # This record does not predict the status here (pooled OOF AUC 0.214): the threshold is the training prevalence
    # (13 of 22), which splits the probabilities, not the in-sample optimum (best_threshold).
    assert metrics["auc_pooled_oof"] == pytest.approx(0.214, abs=5e-4)
    assert metrics["threshold"] == pytest.approx(13 / 22) == chosen_threshold(p, y, y.mean())[0]
    assert metrics["threshold_fallback"] == "the out-of-fold probabilities do not separate the classes (AUC 0.214 < 0.55)"
    assert 0 < int((p >= metrics["threshold"]).sum()) < len(p)
    assert best_threshold(p, y) != pytest.approx(metrics["threshold"])
    model = json.loads((out / "model" / "model.json").read_text())
    assert model["decision"]["fallback"] == metrics["threshold_fallback"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "prevalence" in r.getMessage()] == [
        f"Task 3 clinical: {metrics['threshold_fallback']}: the threshold is the training prevalence 0.591"]
    assert f"decision threshold 0.591 = the training prevalence ({metrics['threshold_fallback']})" in \
        capsys.readouterr().out
    predictor = HPVPredictor.from_bundle(out / "model", device="cpu")
    predictor.predict(None, None, {"Age": 60})
    assert "threshold 0.591 (training prevalence: the out-of-fold probabilities do not separate the classes (AUC " \
        "0.214 < 0.55)" in predictor.last_report.summary()
    assert metrics["balanced_accuracy_in_sample_threshold"] == pytest.approx(balanced_accuracy(y, p >= metrics["threshold"]))
    assert metrics["balanced_accuracy_mean"] == pytest.approx(np.mean(metrics["balanced_accuracy_folds"]))
    assert metrics["ensemble_weights"] == pytest.approx(ensemble_weights(metrics["auc_folds"]).tolist())


def test_the_prevalence_threshold_rule(cohort_dir, tmp_path):
    # --threshold-rule prevalence: every fold is scored at its own training prevalence, the bundle's threshold is the
    # cohort's; the balanced rule's run reports the same figures beside its own.
    runs = {}
    for rule in ("prevalence", "balanced"):
        out = tmp_path / rule
        assert train_hpv.main(["--mode", "clinical", "--data", str(cohort_dir), "--folds", "3", "--out", str(out),
                               "--no-progress", "--threshold-rule", rule]) == 0
        runs[rule] = json.loads((out / "metrics.json").read_text())
    metrics = runs["prevalence"]
    oof = list(csv.DictReader((tmp_path / "prevalence" / "oof.csv").open()))
    fold = np.asarray([int(r["fold"]) for r in oof])
    y = np.asarray([int(r["hpv_status"]) for r in oof])
    p = np.asarray([float(r["oof_probability"]) for r in oof])
    for k in range(3):
        prior = y[fold != k].mean()
        assert metrics["thresholds_cross_fitted"][k] == pytest.approx(prior)
        assert metrics["balanced_accuracy_folds"][k] == pytest.approx(
            balanced_accuracy(y[fold == k], p[fold == k] >= prior))
    assert metrics["threshold"] == pytest.approx(y.mean()) and metrics["threshold_rule"] == "prevalence"
    # These probabilities do not separate the classes (pooled OOF AUC 0.214): said and recorded under either rule.
    assert metrics["threshold_fallback"] == runs["balanced"]["threshold_fallback"] == \
        "the out-of-fold probabilities do not separate the classes (AUC 0.214 < 0.55)"
    assert metrics["balanced_accuracy_folds_at_prevalence"] == pytest.approx(metrics["balanced_accuracy_folds"])
    assert runs["balanced"]["balanced_accuracy_folds_at_prevalence"] == pytest.approx(metrics["balanced_accuracy_folds"])
    model = json.loads((tmp_path / "prevalence" / "model" / "model.json").read_text())
    assert model["decision"]["threshold"] == pytest.approx(y.mean())


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
    out = capsys.readouterr().out  # the data check's line, before any training
    assert f"error: {bad} line 4 (P2): HPV Status '2' is not exactly 0 or 1 (leave the cell empty when unknown)" in out
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


def test_biomarkers_mode_learns_the_status_from_the_masks_biomarkers():
    """HPV-positive exactly when the measured primary is small (the record says nothing): the biomarkers mode's
    logistic regression ranks every fold nearly perfectly (AUC >= 0.95), the clinical mode on the same patients does
    not, and each fold's in-memory ensemble gives exactly its out-of-fold probabilities from the record and the
    biomarkers."""
    from hecktor.biomarkers import BIOMARKER_NAMES
    from hecktor.training.hpv_cohort import HPVCohort

    rng = np.random.default_rng(4)
    n = 60
    volume = rng.uniform(2.0, 40.0, n)
    labels = (volume < 15.0).astype(np.int64)
    rows = [{"PatientID": f"P{i:03d}", "Age": str(int(rng.integers(40, 80))), "Gender": str(i % 2)} for i in range(n)]
    markers = [{name: float(rng.uniform(1.0, 10.0)) for name in BIOMARKER_NAMES} | {"gtvp_volume_ml": float(v)}
               for v in volume]
    cohort = HPVCohort([r["PatientID"] for r in rows], rows, labels, [1 + i % 3 for i in range(n)],
                       biomarkers=markers)
    config = HPVTrainingConfig(mode="biomarkers", n_folds=3, seed=0, logistic_c=10.0, progress=False)
    result = cross_validate_hpv(cohort, config, None, progress=False)
    metrics = result.metrics()
    assert min(metrics["auc_folds"]) >= 0.95 and metrics["threshold_fallback"] is None
    # Each fold at its training prevalence (the default rule): 0.875; at the threshold the other folds choose: 0.844.
    assert metrics["balanced_accuracy_mean"] == metrics["balanced_accuracy_mean_at_prevalence"] == pytest.approx(0.875)
    other = cross_validate_hpv(cohort, dataclasses.replace(config, threshold_rule="balanced"), None,
                               progress=False).metrics()
    assert other["balanced_accuracy_mean"] == pytest.approx(0.84375)
    clinical = cross_validate_hpv(cohort, HPVTrainingConfig(mode="clinical", n_folds=3, seed=0, progress=False),
                                  None, progress=False).metrics()
    assert clinical["auc_pooled_oof"] < 0.75
    for fold in result.folds:
        assert fold.model.biomarkers is not None and fold.model.head.n_features == (
            fold.model.encoder.n_features + len(BIOMARKER_NAMES))
        alone = HPVPredictor([fold.model], [1.0], result.plan, "biomarkers", 0.5, device="cpu")
        got = alone.predict_batch(None, [rows[i] for i in fold.val_idx],
                                  biomarkers=[markers[i] for i in fold.val_idx])
        assert got == pytest.approx(fold.oof_probability, abs=1e-12)
    with pytest.raises(InputError, match="saves its Task 1 model with the run"):
        cross_validate_hpv(cohort, config, Path("/nonexistent/run"), progress=False)
    with pytest.raises(InputError, match="unknown biomarker"):
        HPVTrainingConfig(mode="biomarkers", biomarkers=["tumour_colour"])
