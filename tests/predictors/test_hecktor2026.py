"""HECKTOR 2026 (hecktor.hecktor2026, hecktor.training.hecktor2026): a tiny cross-validation in memory, its bundle
(the Task 1 fixture nested), the export command, and predict_case's four answers on a phantom."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.biomarkers import BIOMARKER_NAMES
from hecktor.case import CaseInput
from hecktor.errors import InputError
from hecktor.folds import make_folds
from hecktor.hecktor2026 import Hecktor2026Predictor
from hecktor.metrics import concordance_index
from hecktor.plan import BoxPlan
from hecktor.rfs_time import ensemble_rfs_time
from hecktor.segment import Segmenter
from hecktor.staging import FEATURE_VERSIONS, N_STAGES, STAGERS, T_STAGES, StageClassifier, StagingCutoffs, \
    StagingMeasurements, measure_staging, stage_by_rules, staging_features
from hecktor.training.hecktor2026 import Hecktor2026Config, StagingCohort, cross_validate, stage_metrics
from helpers.paths import FIXTURE_BUNDLES
from helpers.phantoms import head_phantom
from train_hecktor2026 import main as script_main

TASK1_FIXTURE = FIXTURE_BUNDLES / "task1"
EHR = {"CenterID": 5, "Age": 56, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1,
       "Performance Status": 0, "Treatment": 0, "HPV Status": 1}


def _cohort(n: int = 30, seed: int = 0) -> StagingCohort:
    """Patients whose stages follow their measurements (the rules, one step off for every seventh) and whose
    relapse follows the primary's volume."""
    rng = np.random.default_rng(seed)
    diameters = rng.uniform(12.0, 60.0, n)
    nodes = rng.integers(0, 3, n)
    measurements = [StagingMeasurements(float(d), tuple(float(v) for v in rng.uniform(8, 35, k)),
                                        tuple("ipsilateral" if rng.random() < 0.8 else "contralateral" for _ in
                                              range(k))) for d, k in zip(diameters, nodes)]
    stages = [stage_by_rules(m) for m in measurements]
    t_stages = [t if i % 7 else T_STAGES[min(T_STAGES.index(t) + 1, 3)] for i, (t, _) in enumerate(stages)]
    markers = [{name: float(rng.uniform(0.5, 20.0)) for name in BIOMARKER_NAMES} for _ in range(n)]
    for m, d in zip(markers, diameters):
        m["gtvp_volume_ml"] = float(d ** 3 / 4000.0)
    hazard = np.exp(diameters / 20.0)
    time = rng.exponential(2000.0 / hazard)
    censor = rng.uniform(300.0, 2500.0, n)
    rows = [{"PatientID": f"P{i:02d}", "CenterID": str(1 + i % 3), "Age": str(40 + i), "Gender": str(i % 2),
             "Tobacco Consumption": str(i % 2), "Alcohol Consumption": None, "Performance Status": "0",
             "Treatment": str(i % 2), "HPV Status": ["0", "1", None][i % 3]} for i in range(n)]
    return StagingCohort(
        patient_ids=[r["PatientID"] for r in rows], rows=rows, time=np.minimum(time, censor).round(),
        event=(time <= censor).astype(int), centres=[r["CenterID"] for r in rows], plan=BoxPlan(),
        biomarkers=markers, t_stages=t_stages, n_stages=[None if i == 3 else s[1] for i, s in enumerate(stages)],
        measurements=measurements)


@pytest.fixture(scope="module")
def trained():
    cohort = _cohort()
    config = Hecktor2026Config(n_folds=3, survival={"kind": "coxph", "alpha": 5.0}, progress=False,
                               segmentation_bundle=str(TASK1_FIXTURE))
    split = make_folds(cohort.event, 3, seed=0)
    return cohort, cross_validate(cohort, config, split)


def test_cross_validation_scores_the_time_as_the_risk_and_chooses_a_stager_per_stage(trained) -> None:
    cohort, result = trained
    metrics = result.metrics
    # Each fold's RFS times decrease strictly with its risks: the same C-index, exactly.
    assert metrics["cindex_folds_rfs_time"] == metrics["cindex_folds"]
    for fold in result.folds:
        assert concordance_index(cohort.time[fold.val_idx], cohort.event[fold.val_idx], -fold.oof_time) == \
            fold.cindex
    assert metrics["cindex_pooled_oof_risk"] > 0.6
    assert metrics["cindex_pooled_oof_rfs_time_ensemble_map"] == metrics["cindex_pooled_oof_risk"]
    staging = metrics["staging"]
    # The rules on these measurements miss only the relabelled patients (every seventh T stage).
    assert staging["t_rules_predicted_mask"]["patients"] == 30 and staging["n_rules_predicted_mask"]["patients"] == 29
    assert staging["n_rules_predicted_mask"]["balanced_accuracy"] == 1.0
    assert sum(np.diag(staging["t_rules_predicted_mask"]["confusion"])) == 30 - 5
    # Stages drawn by AJCC's rules: the cut-offs fitted to them stage N as the rules do.
    assert staging["n_fitted"]["balanced_accuracy"] == 1.0
    assert metrics["staging_cutoffs"]["n1_max_mm"] == 30.0
    for stage, key in (("T", "t"), ("N", "n")):
        scores = {"rules": staging[f"{key}_rules_predicted_mask"]["balanced_accuracy"],
                  "fitted": staging[f"{key}_fitted"]["balanced_accuracy"],
                  "learned": staging[f"{key}_learned"]["balanced_accuracy"]}
        assert metrics["stagers"][stage] == max(STAGERS, key=scores.get)  # ties: the rules, then fitted


def test_stage_metrics_are_balanced_accuracy_recall_and_confusion() -> None:
    result = stage_metrics(["N0", "N0", "N1", "N2", None], ["N0", "N1", "N1", "N0", "N3"], N_STAGES)
    assert result["recall"] == {"N0": 0.5, "N1": 1.0, "N2": 0.0}
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    assert result["confusion"][0] == [1, 1, 0, 0] and result["patients"] == 4


def test_bundle_round_trip_and_predict_case(trained, tmp_path) -> None:
    _, result = trained
    predictor = result.predictor
    predictor.stagers = {"T": "learned", "N": "rules"}  # both kinds of answer on one case
    bundle = predictor.to_bundle(tmp_path / "bundle")
    with pytest.raises(InputError, match="already holds a bundle; pass --overwrite"):
        predictor.to_bundle(tmp_path / "bundle")
    model = json.loads((bundle / "model.json").read_text())
    assert model["staging"] == {"T": "learned", "N": "rules"} and model["staging_inputs"] == "measurements"
    loaded = Hecktor2026Predictor.from_bundle(bundle, device="cpu")
    ct, pet, _, _ = head_phantom()
    answer = loaded.predict_case(CaseInput(ct, pet, dict(EHR), None, None))
    expected = Segmenter.from_bundle(TASK1_FIXTURE, device="cpu").predict(ct, pet, tta=False)
    assert answer.mask.GetSize() == ct.GetSize() and answer.mask.GetOrigin() == ct.GetOrigin()
    assert answer.mask.GetDirection() == ct.GetDirection() and answer.mask.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(answer.mask), sitk.GetArrayFromImage(expected))
    measurements = measure_staging(expected, ct)
    assert answer.n_stage == stage_by_rules(measurements)[1]
    assert answer.t_stage in T_STAGES and loaded.last_report.stagers == {"T": "learned", "N": "rules"}
    risk = loaded.last_report.risk
    assert risk == pytest.approx(predictor.predict(ct, pet, dict(EHR)), abs=1e-9)
    assert answer.rfs_days == pytest.approx(ensemble_rfs_time([f.head.baseline for f in loaded.folds],
                                                              loaded.weights, risk))
    assert math.isfinite(answer.rfs_days) and 0 < answer.rfs_days <= max(f.head.baseline.horizon_days
                                                                          for f in loaded.folds)
    # The same mask given (the demo's one segmentation per case): the nested model does not run, the answers are
    # the same; on a case without PET, the given mask is used too.
    given = loaded.predict_case(CaseInput(ct, pet, dict(EHR), None, None), segmentation=expected)
    assert loaded.last_report.timings["segmentation_s"] == 0.0 and loaded.last_segmentation_report is None
    assert (given.t_stage, given.n_stage, given.rfs_days) == (answer.t_stage, answer.n_stage, answer.rfs_days)
    assert np.array_equal(sitk.GetArrayFromImage(given.mask), sitk.GetArrayFromImage(expected))
    no_pet = loaded.predict_case(CaseInput(ct, None, dict(EHR), None, None), segmentation=expected)
    assert loaded.last_segmentation_report is None and no_pet.n_stage == answer.n_stage
    # A higher risk (an older smoker without HPV) is a shorter time.
    worse = loaded.predict_case(CaseInput(ct, pet, {**EHR, "HPV Status": 0, "Age": 80}, None, None))
    assert (worse.rfs_days < answer.rfs_days) == (loaded.last_report.risk > risk)
    with pytest.raises(InputError, match="no usable CT"):
        loaded.predict_case(CaseInput(None, pet, dict(EHR), None, None))


def test_fitted_cutoffs_travel_in_the_bundle_and_stage_the_case(trained, tmp_path) -> None:
    """The ``fitted`` stager: the bundle keeps the cut-offs (model.json ``staging_cutoffs``) and stages by them."""
    _, result = trained
    ct, pet, _, _ = head_phantom()
    mask = Segmenter.from_bundle(TASK1_FIXTURE, device="cpu").predict(ct, pet, tta=False)
    measurements = measure_staging(mask, ct)
    diameter = measurements.primary_diameter_mm
    assert diameter > 0
    # Cut-offs under which this primary is T1 (AJCC's call it T3 at the fixture's size).
    cutoffs = StagingCutoffs(diameter * 1.2, diameter * 2.0, 1e6, 30.0, 60.0)
    assert stage_by_rules(measurements)[0] == "T3" and stage_by_rules(measurements, cutoffs)[0] == "T1"
    predictor = Hecktor2026Predictor([f.fold for f in result.folds], result.predictor.weights, BoxPlan(),
                                     {"T": "fitted", "N": "rules"}, device="cpu", cutoffs=cutoffs,
                                     segmentation=str(TASK1_FIXTURE))
    bundle = predictor.to_bundle(tmp_path / "bundle")
    assert json.loads((bundle / "model.json").read_text())["staging_cutoffs"]["t2_max_mm"] == pytest.approx(
        diameter * 2.0)
    loaded = Hecktor2026Predictor.from_bundle(bundle, device="cpu")
    assert loaded.cutoffs == cutoffs
    answer = loaded.predict_case(CaseInput(ct, pet, dict(EHR), None, None), segmentation=mask)
    assert (answer.t_stage, answer.n_stage) == ("T1", stage_by_rules(measurements)[1])
    assert loaded.last_report.stagers == {"T": "fitted", "N": "rules"}


def test_a_bundle_of_the_first_staging_features_stages_as_it_did(trained, tmp_path, monkeypatch) -> None:
    """Bundles exported before the bone joined the learned stager's inputs hold stage classifiers of 6 features
    (features version 1, no ``features_version`` in their JSON): they keep loading and stage on those features."""
    cohort, result = trained
    old = np.stack([staging_features(m, 1) for m in cohort.measurements])
    folds = []
    for outcome in result.folds:
        train = [i for i in outcome.train_idx if cohort.n_stages[i] is not None]
        t_stage = dataclasses.replace(StageClassifier.fit(old[outcome.train_idx], [cohort.t_stages[i] for i in
                                                                                   outcome.train_idx]),
                                      features_version=1)
        n_stage = dataclasses.replace(StageClassifier.fit(old[train], [cohort.n_stages[i] for i in train]),
                                      features_version=1)
        head = dataclasses.replace(outcome.fold.head, t_stage=t_stage, n_stage=n_stage)
        folds.append(dataclasses.replace(outcome.fold, head=head))
    predictor = Hecktor2026Predictor(folds, result.predictor.weights, BoxPlan(), {"T": "learned", "N": "learned"},
                                     device="cpu", segmentation=str(TASK1_FIXTURE))
    written = StageClassifier.to_dict
    monkeypatch.setattr(StageClassifier, "to_dict", lambda self: {k: v for k, v in written(self).items()
                                                                  if k != "features_version"})
    bundle = predictor.to_bundle(tmp_path / "bundle")
    assert "features_version" not in json.loads(next(bundle.glob("*t_stage*.json")).read_text())
    loaded = Hecktor2026Predictor.from_bundle(bundle, device="cpu")
    assert {f.head.t_stage.features_version for f in loaded.folds} == {1}
    assert loaded.folds[0].head.t_stage.n_features == len(FEATURE_VERSIONS[1]) == 6
    ct, pet, _, _ = head_phantom()
    mask = Segmenter.from_bundle(TASK1_FIXTURE, device="cpu").predict(ct, pet, tta=False)
    answer = loaded.predict_case(CaseInput(ct, pet, dict(EHR), None, None), segmentation=mask)
    features = staging_features(measure_staging(mask, ct), 1)[None, :]
    used = sorted(loaded.last_fold_scores)
    weights = loaded._weights_of(used)
    t_prob = sum(w * folds[k].head.t_stage.probabilities_over(features, T_STAGES)[0] for w, k in zip(weights, used))
    n_prob = sum(w * folds[k].head.n_stage.probabilities_over(features, N_STAGES)[0] for w, k in zip(weights, used))
    assert (answer.t_stage, answer.n_stage) == (T_STAGES[int(np.argmax(t_prob))], N_STAGES[int(np.argmax(n_prob))])


def test_export_command_copies_the_run_bundle_and_refuses_to_overwrite(trained, tmp_path, capsys) -> None:
    _, result = trained
    run = tmp_path / "run"
    result.predictor.to_bundle(run / "model")
    out = tmp_path / "exported"
    assert script_main(["export", str(run), "--out", str(out)]) == 0
    assert "exported the HECKTOR 2026 ensemble of 3 folds" in capsys.readouterr().out
    assert Hecktor2026Predictor.from_bundle(out, device="cpu").stagers == result.predictor.stagers
    assert script_main(["export", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already holds a bundle; pass --overwrite" in err and "\n" not in err
    assert script_main(["export", str(run), "--out", str(out), "--overwrite"]) == 0
    assert script_main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "b2")]) == 2
    assert "is not a finished HECKTOR 2026 run" in capsys.readouterr().err


def test_train_command_errors_are_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script_main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "error: the following arguments are required: --segmentation" in capsys.readouterr().err
    assert script_main(["train", "--data", str(tmp_path), "--segmentation", str(tmp_path), "--out",
                        str(tmp_path / "run"), "--folds", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --folds must be at least 2, got 1"
    assert script_main(["train", "--data", str(tmp_path), "--segmentation", str(tmp_path), "--out",
                        str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Task 2026" in err and "\n" not in err
