"""Task 2 inference (hecktor.prognosis.RiskPredictor) on hand-built tiny ensembles: the arithmetic of the weighted
fold ensemble, bundle round trips in every mode, refusal of inconsistent bundles, and tolerance of odd ehr.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hecktor.biomarkers import compute_biomarkers, no_tumour_biomarkers
from hecktor.budget import PredictionReport, TimeBudget
from hecktor.bundle import sha256_of
from hecktor.clinical import ClinicalEncoder, normalize_ehr
from hecktor.errors import BundleError, InputError
from hecktor.networks.fused import FusedFeatureExtractor
from hecktor.plan import RegionPlan
from hecktor.preprocessing import preprocess_box
from hecktor.fold_ensemble import EnsembleFold, SegmentationSettings, tumour_cube
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.segment import Segmenter, blank_mask
from hecktor.survival_models import build_survival_model
from helpers.paths import FIXTURE_BUNDLES
from helpers.phantoms import head_phantom
from helpers.predictors import CINDICES, NETWORK, ROWS, build_biomarker_predictor, build_risk_predictor
from helpers.predictors import RISK_PLAN as PLAN

EHR = {"CenterID": 5, "Age": 56, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1,
       "Performance Status": 0, "Treatment": 0, "M-stage": "M0"}


@pytest.fixture(scope="module")
def phantom():
    ct, pet, _, _ = head_phantom()
    return ct, pet


@pytest.fixture(scope="module")
def fusion_predictor():
    return build_risk_predictor("fusion")


@pytest.fixture
def fusion_bundle(fusion_predictor, tmp_path):
    return fusion_predictor.to_bundle(tmp_path / "bundle")


def test_predict_is_the_weighted_average_of_standardised_fold_risks(fusion_predictor, phantom):
    ct, pet = phantom
    risk = fusion_predictor.predict(ct, pet, EHR)
    # Independent computation: the shared preprocessing, then each fold by hand.
    image = torch.from_numpy(preprocess_box(ct, pet, PLAN).image)[None]
    fold_risks = []
    with torch.no_grad():
        for fold in fusion_predictor.folds:
            clinical = torch.from_numpy(fold.encoder.transform([EHR]))
            features = fold.network.extract_features(image, clinical).numpy().astype(np.float64)
            cox = fold.head.survival
            raw = ((features - cox.feature_mean_) / cox.feature_scale_) @ cox.coef_ - cox.offset_
            fold_risks.append(float((raw[0] - cox.risk_mean_) / cox.risk_std_))
    margins = np.maximum(np.asarray(CINDICES) - 0.5, 1e-3)
    assert risk == pytest.approx(float(np.dot(margins / margins.sum(), fold_risks)), abs=1e-9)
    assert [fusion_predictor.last_fold_risks[k] for k in range(3)] == pytest.approx(fold_risks, abs=1e-9)
    report = fusion_predictor.last_report
    assert report.folds == [0, 1, 2] and report.passes == 3 and report.dropped == []
    timings = report.timings
    assert timings["total_s"] >= timings["preprocess_s"] + timings["network_s"] > 0
    assert timings["network_s"] >= timings["clinical_s"] + timings["features_s"] + timings["survival_s"]


def test_fold_selection_renormalises_weights(fusion_predictor, phantom):
    ct, pet = phantom
    fusion_predictor.predict(ct, pet, EHR)
    every = np.asarray([fusion_predictor.last_fold_risks[k] for k in range(3)])
    assert fusion_predictor.predict(ct, pet, EHR, folds=[1]) == pytest.approx(every[1], abs=1e-12)
    w = fusion_predictor.weights[[0, 2]]
    assert fusion_predictor.predict(ct, pet, EHR, folds=[2, 0]) == pytest.approx(
        (w[0] * every[0] + w[1] * every[2]) / w.sum(), abs=1e-12)
    assert fusion_predictor.folds_by_weight == [0, 2, 1]  # C-index 0.72, 0.64, 0.55
    for bad in ([], [3], [0, 0]):
        with pytest.raises(ValueError):
            fusion_predictor.predict(ct, pet, EHR, folds=bad)


@pytest.mark.parametrize("mode", ["fusion", "imaging", "clinical"])
def test_bundle_round_trip_gives_identical_risk(mode, phantom, tmp_path):
    ct, pet = phantom
    predictor = build_risk_predictor(mode, seed=1)
    loaded = RiskPredictor.from_bundle(predictor.to_bundle(tmp_path / mode), device="cpu")
    assert loaded.mode == mode and loaded.info == {"note": "test"}
    assert np.array_equal(loaded.weights, predictor.weights)
    files = sorted(p.name for p in (tmp_path / mode).iterdir())
    assert ("fold_0_network.pt" in files) == (mode != "clinical")
    assert ("fold_0_encoder.json" in files) == (mode != "imaging")
    for ehr in (EHR, None, {"Age": 80, "M-stage": "M1"}):
        assert loaded.predict(ct, pet, ehr) == pytest.approx(predictor.predict(ct, pet, ehr), abs=1e-6)
    if mode == "clinical":
        assert loaded.predict(None, None, EHR) == pytest.approx(predictor.predict(ct, pet, EHR), abs=1e-12)
        assert loaded.last_report.timings["preprocess_s"] < 0.01  # no image is touched
    if mode == "imaging":  # the record is ignored
        assert loaded.predict(ct, pet, EHR) == loaded.predict(ct, pet, {"Age": 99, "M-stage": "M1"})


def test_odd_ehr_gives_finite_risk_and_unknowns_agree(phantom):
    ct, pet = phantom
    predictor = build_risk_predictor("clinical")
    all_unknown = predictor.predict(ct, pet, None)
    assert predictor.predict(ct, pet, {}) == all_unknown
    assert predictor.predict(ct, pet, {name: None for name in EHR}) == all_unknown
    # Unparsable age = missing age; unseen category = unknown; strings in numeric spelling = numbers.
    assert predictor.predict(ct, pet, {**EHR, "Age": "abc"}) == predictor.predict(ct, pet, {k: v for k, v in EHR.items()
                                                                                          if k != "Age"})
    assert predictor.predict(ct, pet, {**EHR, "M-stage": "M9"}) == predictor.predict(ct, pet, {**EHR, "M-stage": None})
    assert predictor.predict(ct, pet, {**EHR, "Age": "56", "Gender": "1"}) == predictor.predict(ct, pet, EHR)
    odd = [{"Age": 56}, {"Gender": "male", "Age": None}, {**EHR, "HPV Status": 1, "extra": [1, 2], "Notes": "x"},
           {"Age": float("nan"), "Performance Status": 7, "M-stage": ""}]
    for ehr in odd:
        assert math.isfinite(predictor.predict(ct, pet, ehr))
    assert predictor.predict(ct, pet, {**EHR, "extra": {"a": 1}}) == predictor.predict(ct, pet, EHR)
    fusion = build_risk_predictor("fusion")
    assert all(math.isfinite(fusion.predict(ct, pet, ehr)) for ehr in [None, *odd])
    with pytest.raises(InputError, match="must hold a JSON object, got list"):
        predictor.predict(ct, pet, [EHR])


def _rewrite(bundle, name, edit):
    """Edit a bundle file and re-sign the manifest, as a careless hand edit would: only our own checks remain."""
    path = bundle / name
    if name.endswith(".json"):
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    else:
        edit(path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = sha256_of(path)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _swap_weights(path):
    state = torch.load(path, weights_only=True)
    state = {k: (v[:1] if k == "risk_head.weight" else v) for k, v in state.items()}
    state["fusion.0.weight"] = torch.zeros(3, 3)
    torch.save(state, path)


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("model.json", lambda m: m["ensemble"].update(weights=[0.5, 0.5, 0.5]), "summing to 1"),
        ("model.json", lambda m: m["ensemble"].update(weights=[0.5, 0.5]), "need 3 non-negative"),
        ("model.json", lambda m: m.update(mode="imaging"), "network's mode 'fusion' is not the model's 'imaging'"),
        ("model.json", lambda m: m["folds"][1].update(encoder=None), "fold 1 must list encoder"),
        ("model.json", lambda m: m.update(format_version=99), "not a hecktor-task2-risk v1"),
        ("model.json", lambda m: m["network"]["config"].update(fused_dim=8), "does not fit the network"),
        ("fold_2_survival.json", lambda s: s.update(coef=s["coef"][:-1], feature_mean=s["feature_mean"][:-1],
                                                    feature_scale=s["feature_scale"][:-1],
                                                    feature_range={k: v[:-1] for k, v in s["feature_range"].items()}),
         "expects 15 features"),
        ("fold_2_survival.json", lambda s: s.update(feature_range={"low": [0.0], "high": [1.0]}),
         "the feature range must hold 16 finite"),
        ("fold_0_encoder.json", lambda e: e.update(format="pickle"), "not a saved ClinicalEncoder"),
        ("fold_1_network.pt", _swap_weights, "does not fit the network"),
    ],
)
def test_inconsistent_bundle_is_refused(fusion_bundle, name, edit, message):
    _rewrite(fusion_bundle, name, edit)
    with pytest.raises(BundleError, match=message):
        RiskPredictor.from_bundle(fusion_bundle, device="cpu")


def test_tampered_bundle_is_refused(fusion_bundle):
    survival = fusion_bundle / "fold_0_survival.json"
    record = json.loads(survival.read_text())
    record["coef"][0] += 1.0
    survival.write_text(json.dumps(record))
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        RiskPredictor.from_bundle(fusion_bundle, device="cpu")
    (fusion_bundle / "fold_0_survival.json").unlink()
    with pytest.raises(BundleError, match="bundle file missing"):
        RiskPredictor.from_bundle(fusion_bundle, device="cpu")


def test_constructor_checks_folds_against_mode():
    fold = build_risk_predictor("clinical").folds[0]
    with pytest.raises(ValueError, match="does not fit mode 'fusion'"):
        RiskPredictor([fold], [1.0], PLAN, "fusion", device="cpu")
    with pytest.raises(ValueError, match="sum to 1"):
        RiskPredictor([fold, fold], [0.7, 0.7], PLAN, "clinical", device="cpu")


def test_folds_whose_encoders_differ_in_width_export_and_reload(phantom, tmp_path):
    """A rare level (M1) seen by some folds' training rows only gives those folds a wider clinical input."""
    ct, pet = phantom
    rng = np.random.default_rng(3)
    folds = []
    for rows in (ROWS[0:12], ROWS[6:16]):  # only the first holds the M1 patient (row 5)
        encoder = ClinicalEncoder().fit(rows)
        network = FusedFeatureExtractor(encoder.n_features, mode="fusion", **NETWORK).eval()
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(
            rng.normal(size=(40, network.feature_dim)), rng.uniform(100, 2000, 40), rng.random(40) < 0.5)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=0.6))
    assert folds[0].encoder.n_features == folds[1].encoder.n_features + 1
    predictor = RiskPredictor(folds, [0.5, 0.5], PLAN, "fusion", device="cpu")
    loaded = RiskPredictor.from_bundle(predictor.to_bundle(tmp_path / "bundle"), device="cpu")
    assert loaded.predict(ct, pet, EHR) == pytest.approx(predictor.predict(ct, pet, EHR), abs=1e-6)


# ------------------------------------------------------------------------------------------------ biomarker modes
TASK1_FIXTURE = FIXTURE_BUNDLES / "task1"


class StubSegmenter:
    """Stands in for the nested Task 1 model: returns a fixed mask (the phantom's label) and records its calls."""

    def __init__(self, mask):
        self.mask, self.calls = mask, []
        self.last_report = PredictionReport()

    def predict(self, ct, pet, *, tta=True, budget=None, **_):
        self.calls.append({"tta": tta, "budget": budget})
        self.last_report = PredictionReport(warnings=["segmented by the stub"])
        return self.mask


@pytest.fixture(scope="module")
def labelled_phantom():
    ct, pet, label, _ = head_phantom()
    return ct, pet, label


def _by_hand(predictor: RiskPredictor, image, markers) -> float:
    """The ensemble risk computed without predict(): each fold's features, its Cox model, the weighted mean."""
    risks = []
    with torch.no_grad():
        for fold in predictor.folds:
            clinical = fold.encoder.transform([normalize_ehr(dict(EHR))])
            parts = [clinical]
            if fold.network is not None:
                parts = [fold.network.extract_features(torch.from_numpy(image)[None], torch.from_numpy(clinical))
                         .numpy()]
            parts.append(fold.biomarkers.transform([markers]))
            risks.append(fold.head.survival.standardized_risk(np.concatenate(parts, axis=1).astype(np.float64))[0])
    return float(np.dot(predictor.weights, risks))


@pytest.mark.parametrize("mode", ["biomarkers", "fusion+biomarkers"])
def test_biomarker_modes_join_the_record_network_and_biomarkers_of_the_predicted_mask(mode, labelled_phantom):
    ct, pet, label = labelled_phantom
    stub = StubSegmenter(label)
    predictor = build_biomarker_predictor(mode, segmenter=stub)
    risk = predictor.predict(ct, pet, EHR)
    markers = compute_biomarkers(label, pet)
    assert predictor.last_biomarkers.values == markers.values and markers.tumour_found
    # The phantom's tumour: a 15 mm sphere (14.1 ml) of SUV 12 on 5 x 5 x 6 mm voxels.
    assert markers.values["gtvp_volume_ml"] == pytest.approx(4 / 3 * math.pi * 15**3 / 1000, rel=0.1)
    image = None
    if mode == "fusion+biomarkers":
        image = tumour_cube(ct, pet, label, predictor.segmentation_settings.crop, PLAN)
        assert image.shape == (3, 24, 24, 24) and image[2].max() == 1.0
    assert risk == pytest.approx(_by_hand(predictor, image, markers), abs=1e-6)
    assert stub.calls == [{"tta": False, "budget": None}]
    assert "segmentation: segmented by the stub" in predictor.last_report.warnings
    assert {"segmentation_s", "biomarkers_s", "network_s", "total_s"} <= set(predictor.last_report.timings)
    # The biomarkers move the risk: a smaller tumour gives another risk.
    stub.mask = sitk.Cast(sitk.BinaryErode(label, [1, 1, 1]), sitk.sitkUInt8)
    assert predictor.predict(ct, pet, EHR) != risk


@pytest.mark.parametrize("mode", ["biomarkers", "fusion+biomarkers"])
def test_no_tumour_found_still_gives_a_finite_risk_with_a_warning(mode, labelled_phantom):
    ct, pet, label = labelled_phantom
    predictor = build_biomarker_predictor(mode, segmenter=StubSegmenter(blank_mask(ct)))
    risk = predictor.predict(ct, pet, EHR)
    assert math.isfinite(risk) and not predictor.last_biomarkers.tumour_found
    assert any("no-tumour value" in line for line in predictor.last_report.warnings)
    image = None
    if mode == "fusion+biomarkers":  # centred on the box's centre, empty mask channel
        image = tumour_cube(ct, pet, None, predictor.segmentation_settings.crop, PLAN)
        assert not image[2].any()
    assert risk == pytest.approx(_by_hand(predictor, image, no_tumour_biomarkers("test")), abs=1e-6)
    # A flat placeholder (the platform's sanity check) is not segmented at all.
    flat = sitk.Image([1, 1], sitk.sitkFloat32)
    assert math.isfinite(predictor.predict(flat, flat, EHR)) and predictor.last_report.placeholder
    assert predictor.last_biomarkers.values == no_tumour_biomarkers("test").values
    # Nor is a case whose PET (or CT) a container dropped as unusable: no-tumour biomarkers, a warning, a risk.
    for images in ((ct, None), (None, pet)):
        assert math.isfinite(predictor.predict(*images, EHR))
        assert any("nothing to segment" in line for line in predictor.last_report.warnings)
        assert not predictor.last_biomarkers.tumour_found


@pytest.mark.parametrize("mode", ["biomarkers", "fusion+biomarkers"])
def test_biomarker_bundle_nests_the_task1_bundle(mode, phantom, tmp_path):
    ct, pet = phantom
    predictor = build_biomarker_predictor(mode, segmentation=TASK1_FIXTURE, seed=2)
    bundle = predictor.to_bundle(tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    nested = json.loads((TASK1_FIXTURE / "manifest.json").read_text())
    assert {f"segmentation/{name}" for name in nested["files"]} | {"segmentation/manifest.json"} <= set(
        manifest["files"])
    assert "fold_0_biomarkers.json" in manifest["files"]
    loaded = RiskPredictor.from_bundle(bundle, device="cpu")
    assert loaded.mode == mode and loaded.segmentation_settings == predictor.segmentation_settings
    assert len(loaded.segmenter.networks) == 1 and loaded.segmentation_bundle == bundle / "segmentation"
    risk = loaded.predict(ct, pet, EHR)
    assert risk == pytest.approx(predictor.predict(ct, pet, EHR), abs=1e-6) and math.isfinite(risk)
    # The nested mask is the Task 1 bundle's own prediction.
    expected = Segmenter.from_bundle(TASK1_FIXTURE, device="cpu").predict(ct, pet, tta=False)
    assert loaded.last_biomarkers.values == compute_biomarkers(expected, pet).values
    # Exported again from the loaded bundle: the nested bundle travels along.
    again = RiskPredictor.from_bundle(loaded.to_bundle(tmp_path / "again"), device="cpu")
    assert again.predict(ct, pet, EHR) == pytest.approx(risk, abs=1e-12)


def test_biomarker_bundle_refuses_a_changed_or_missing_task1_model(tmp_path):
    predictor = build_biomarker_predictor("biomarkers", segmentation=TASK1_FIXTURE)
    bundle = predictor.to_bundle(tmp_path / "bundle")
    with open(bundle / "segmentation" / "fold_0.pt", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="SHA-256 mismatch.*segmentation/fold_0.pt"):
        RiskPredictor.from_bundle(bundle, device="cpu")
    bundle = predictor.to_bundle(tmp_path / "bundle2")
    _rewrite(bundle, "model.json", lambda m: m.update(segmentation=None))
    with pytest.raises(BundleError, match="needs a 'segmentation' record"):
        RiskPredictor.from_bundle(bundle, device="cpu")
    bundle = predictor.to_bundle(tmp_path / "bundle3")
    (bundle / "segmentation" / "stray.txt").write_text("x")
    with pytest.raises(BundleError, match="not in its manifest: segmentation/stray.txt"):
        RiskPredictor.from_bundle(bundle, device="cpu")
    with pytest.raises(ValueError, match="needs the Task 1 model"):
        build_biomarker_predictor("biomarkers").predict(*head_phantom()[:2], EHR)
    with pytest.raises(ValueError, match="exports the Task 1 bundle"):
        build_biomarker_predictor("biomarkers").to_bundle(tmp_path / "bundle4")


class _TimedNetwork(torch.nn.Module):
    """A random convolution whose every forward call costs ``seconds`` on a fake clock."""

    def __init__(self, clock: list, seconds: float) -> None:
        super().__init__()
        self.conv, self.clock, self.seconds = torch.nn.Conv3d(2, 3, 3, padding=1), clock, seconds

    def forward(self, x):
        self.clock[0] += self.seconds
        return self.conv(x)


def test_the_segmentation_gets_its_share_of_the_budget_and_drops_tta_then_folds(phantom):
    """Task 2 budget 100 s (fake clock); the segmentation may plan 0.5 of it. Five 20 s folds x 4 mirrors would take
    400 s: its policy drops TTA, then folds, and the Task 2 folds still all run."""
    ct, pet = phantom
    clock = [1000.0]
    plan = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), region_mm_xyz=(120.0, 120.0, 120.0), brain_min_volume_ml=50.0,
                      patch_size_zyx=(32, 32, 32))  # one 32^3 window: one forward call per pass
    segmenter = Segmenter([_TimedNetwork(clock, 20.0) for _ in range(5)], plan, device="cpu")
    predictor = build_biomarker_predictor("biomarkers", segmenter=segmenter)
    predictor.segmentation_settings = SegmentationSettings(budget_share=0.5, tta=True)
    budget = TimeBudget(900.0, budget_s=100.0, start_time=clock[0], clock=lambda: clock[0])
    share = predictor.segmentation_budget(budget)
    assert share.budget_s == pytest.approx(50.0) and share.start_time == budget.start_time
    risk = predictor.predict(ct, pet, EHR, budget=budget)
    inner = predictor.last_segmentation_report
    # Fold 0's plain pass (20 s), then its first mirror (a second pass still fitted); at 40 s of 50 no pass fits.
    assert inner.budget_s == pytest.approx(50.0) and not inner.tta and inner.folds == [0] and inner.passes == 2
    assert predictor.last_report.dropped == ["segmentation test-time augmentation",
                                             "segmentation fold(s) [1, 2, 3, 4]"]
    assert predictor.last_report.folds == [0, 1, 2] and math.isfinite(risk)  # the Task 2 folds keep the rest
    assert clock[0] - 1000.0 == pytest.approx(40.0)
    # Past the budget already: the segmentation runs its minimum (one pass) and Task 2 its heaviest fold.
    budget = TimeBudget(900.0, budget_s=100.0, start_time=clock[0] - 200.0, clock=lambda: clock[0])
    assert predictor.segmentation_budget(budget).budget_s == pytest.approx(200.0)
    predictor.predict(ct, pet, EHR, budget=budget)
    assert predictor.last_segmentation_report.passes == 1 and predictor.last_report.folds == [0]
