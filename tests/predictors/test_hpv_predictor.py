"""Task 3 inference (hecktor.diagnosis.HPVPredictor) on hand-built tiny ensembles (helpers.predictors), and the parts
it answers with: the boolean output, the metrics, the Platt calibration and the threshold; the calibrated fold
ensemble's arithmetic, its bundle, refusal of inconsistent bundles, and tolerance of odd records.

The container run, the training and hecktor-predict/-evaluate of Task 3 are in tests/containers/test_hpv_container.py,
tests/training/test_hpv_training.py and tests/containers/test_hpv_predict_evaluate.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hecktor.bundle import write_bundle
from hecktor.diagnosis import DiagnosisReport, HPVPredictor, PlattCalibration
from hecktor.errors import BundleError, InputError
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.outputs import write_json_boolean
from hecktor.preprocessing import preprocess_box
from hecktor.survival import ensemble_weights
from hecktor.training.calibration import best_threshold, fit_platt
from helpers.paths import FIXTURE_BUNDLES
from helpers.phantoms import head_phantom
from helpers.predictors import AUCS, build_hpv_predictor
from helpers.predictors import HPV_PLAN as PLAN

EHR = {"Age": 56, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1, "Performance Status": 0,
       "Treatment": 0, "M-stage": "M0"}


@pytest.fixture(scope="module")
def phantom():
    ct, pet, _, _ = head_phantom()
    return ct, pet


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory) -> Path:
    return build_hpv_predictor("fusion").to_bundle(tmp_path_factory.mktemp("bundle") / "task3")


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
    predictor = build_hpv_predictor("fusion", threshold=0.5)
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
    predictor = build_hpv_predictor(mode, threshold=0.42)
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
    bundle = build_hpv_predictor("clinical").to_bundle(tmp_path / "bundle")
    head = json.loads((bundle / "fold_0_head.json").read_text())
    head["coef"] = head["coef"][:-1]
    model = json.loads((bundle / "model.json").read_text())
    files = {p.name: json.loads(p.read_text()) for p in bundle.glob("fold_*.json")}
    files["fold_0_head.json"] = head
    write_bundle(bundle, task=3, plan=PLAN, model=model, json_files=files, overwrite=True)
    with pytest.raises(BundleError, match="fold_0_head.json takes .* features but fold 0 produces"):
        HPVPredictor.from_bundle(bundle, device="cpu")
    with pytest.raises(BundleError, match="is a Task 2 bundle, but Task 3 was asked for"):
        HPVPredictor.from_bundle(FIXTURE_BUNDLES / "task2", device="cpu")


def test_odd_clinical_records_encode_as_unknown(phantom):
    predictor = build_hpv_predictor("clinical")
    p = lambda ehr: predictor.predict_probability(None, None, ehr)  # noqa: E731
    base = p(EHR)
    assert p({k: f" {v} " for k, v in EHR.items()}) == base
    assert p({**EHR, "HPV Status": 1, "Weight": 80.5}) == base  # the target is never an input
    assert p({**EHR, "M-stage": "M7", "Gender": "other"}) == p({**EHR, "M-stage": None, "Gender": None}) != base
    assert p(None) == p({}) == p({k: None for k in EHR}) != base


# ------------------------------------------------------------------------------------------------ biomarkers mode
def test_biomarkers_bundle_nests_task1_and_takes_a_segmentation_made_already(phantom, tmp_path):
    """Task 3's biomarkers mode: the bundle nests the Task 1 bundle (verified again on loading) and answers as the
    in-memory ensemble; a mask passed as ``segmentation`` (one segmentation shared by Tasks 2 and 3) replaces the
    nested model's run and gives the same answer when it is that model's mask, another when it is another mask."""
    import SimpleITK as sitk

    from hecktor.biomarkers import body_relative_pet, compute_biomarkers
    from hecktor.prognosis import RiskPredictor
    from hecktor.segment import Segmenter
    from helpers.predictors import build_biomarker_predictor, build_hpv_biomarker_predictor

    task1 = FIXTURE_BUNDLES / "task1"
    ct, pet = phantom
    predictor = build_hpv_biomarker_predictor(segmentation=task1, threshold=0.4, seed=3)
    bundle = predictor.to_bundle(tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "segmentation/manifest.json" in manifest["files"] and "fold_2_biomarkers.json" in manifest["files"]
    model = json.loads((bundle / "model.json").read_text())
    assert model["mode"] == "biomarkers" and model["network"] is None
    assert model["segmentation"]["suv_reference"] == "body" and model["decision"]["fallback"] is None
    loaded = HPVPredictor.from_bundle(bundle, device="cpu")
    assert loaded.mode == "biomarkers" and loaded.segmentation_bundle == bundle / "segmentation"
    probability = loaded.predict_probability(ct, pet, EHR)
    assert probability == pytest.approx(predictor.predict_probability(ct, pet, EHR), abs=1e-12)
    assert loaded.last_report.timings["segmentation_s"] > 0 and loaded.last_segmentation_report is not None
    mask = Segmenter.from_bundle(task1, device="cpu").predict(ct, pet, tta=False)
    expected = compute_biomarkers(mask, body_relative_pet(pet, ct))
    assert loaded.last_biomarkers.values == expected.values
    # The same mask, given: the nested model does not run, the answer is the same.
    assert loaded.predict_probability(ct, pet, EHR, segmentation=mask) == pytest.approx(probability, abs=1e-12)
    assert loaded.last_report.timings["segmentation_s"] == 0.0 and loaded.last_segmentation_report is None
    assert loaded.predict(ct, pet, EHR, segmentation=mask) == (probability >= 0.4)
    # Another mask (nothing segmented) gives the no-tumour biomarkers and another probability.
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    other = loaded.predict_probability(ct, pet, EHR, segmentation=empty)
    assert not loaded.last_biomarkers.tumour_found and other != pytest.approx(probability, abs=1e-6)
    # Task 2's biomarker ensemble takes the same keyword, through predict_case as the demo calls it.
    from hecktor.case import CaseInput

    risk_predictor = build_biomarker_predictor("biomarkers", segmentation=task1, suv_reference="body")
    case = CaseInput(ct=ct, pet=pet, ehr=dict(EHR), ct_path=None, pet_path=None)
    risk = risk_predictor.predict_case(case)
    assert risk_predictor.predict_case(case, segmentation=mask) == pytest.approx(risk, abs=1e-12)
    assert isinstance(risk_predictor, RiskPredictor) and risk_predictor.last_segmentation_report is None
    # The demo's one segmentation per extra held-out case is that mask, for both tasks' ensembles.
    import demo

    shared = demo.shared_segmentation(case, [risk_predictor, loaded])
    assert np.array_equal(sitk.GetArrayFromImage(shared), sitk.GetArrayFromImage(mask))
    assert demo.shared_segmentation(case, [build_hpv_predictor("clinical")]) is None
    with pytest.raises(InputError, match="not on the CT's grid"):
        loaded.predict(ct, pet, EHR, segmentation=sitk.Image([3, 3, 3], sitk.sitkUInt8))
