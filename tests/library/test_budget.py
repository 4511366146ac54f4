"""The time guard (hecktor.budget) as the predictors use it: what Segmenter.predict and RiskPredictor.predict drop and
when, that the prediction from what ran is exact, the degenerate-input fallbacks, and the process clock. Time is a
fake clock advanced by the networks' forward calls, so the decisions are deterministic."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from hecktor.budget import DEFAULT_SAFETY, TimeBudget, process_start_time
from hecktor.clinical import ClinicalEncoder
from hecktor.errors import InputError
from hecktor.geometry import Grid
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan, RegionPlan
from hecktor.preprocessing import blank_network_input, network_input, preprocess_region, probabilities_to_ct_grid
from hecktor.fold_ensemble import EnsembleFold
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.segment import Segmenter, blank_mask, sliding_window_probabilities
from hecktor.tasks import get_task
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from helpers.phantoms import head_phantom

IMPORTED_AT = time.time()
# A 120 mm cube at 4 mm is 30^3 voxels: one 32^3 window, so one forward call per network pass.
PLAN = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), region_mm_xyz=(120.0, 120.0, 120.0), brain_min_volume_ml=50.0,
                  patch_size_zyx=(32, 32, 32))
BOX_PLAN = BoxPlan(brain_min_volume_ml=50.0, input_shape_zyx=(24, 24, 24))
EHR = {"Age": 61, "Gender": 1, "Tobacco Consumption": 1, "Performance Status": 0, "Treatment": 1, "M-stage": "M0"}
CINDICES = (0.72, 0.55, 0.64)  # ensemble weights 0.54, 0.12, 0.34 (margin rule): heaviest first is 0, 2, 1


class FakeClock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TimedNetwork(nn.Module):
    """A random 3x3x3 convolution whose every forward call costs ``costs[i]`` (default ``default``) fake seconds."""

    def __init__(self, seed: int, clock: FakeClock, schedule: dict) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv3d(2, 3, kernel_size=3, padding=1)
        self.clock, self.schedule = clock, schedule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        costs = self.schedule.setdefault("costs", [])
        self.clock.now += costs.pop(0) if costs else self.schedule["default"]
        self.schedule["calls"] = self.schedule.get("calls", 0) + 1
        return self.conv(x)


@pytest.fixture(scope="module")
def phantom():
    ct, pet, _, _ = head_phantom(direction_ct="flipped_xy")
    return ct, pet


def make_segmenter(seconds_per_pass: float = 1.0, costs=()) -> tuple[Segmenter, FakeClock, dict]:
    clock, schedule = FakeClock(), {"default": seconds_per_pass, "costs": list(costs)}
    networks = [TimedNetwork(seed, clock, schedule).eval() for seed in range(3)]
    return Segmenter(networks, PLAN, device="cpu"), clock, schedule


def budget(clock: FakeClock, budget_s: float | None = None, start_time: float | None = None,
           task: int = 1) -> TimeBudget:
    """A budget on the fake clock, started now unless ``start_time`` says otherwise."""
    return TimeBudget(get_task(task).limit_s, budget_s=budget_s,
                      start_time=clock.now if start_time is None else start_time, clock=clock)


def masks_equal(a: sitk.Image, b: sitk.Image) -> bool:
    return np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_time_budget_defaults_and_validation():
    budget = TimeBudget(get_task(1).limit_s, start_time=0.0, clock=lambda: 100.0)
    assert budget.budget_s == pytest.approx(DEFAULT_SAFETY * 600.0) and budget.elapsed() == 100.0
    assert budget.fits(260.0) and not budget.fits(260.5)
    assert TimeBudget(900.0, budget_s=0.5).budget_s == 0.5
    with pytest.raises(InputError, match="time budget"):
        TimeBudget(600.0, budget_s=700.0)
    with pytest.raises(InputError, match="safety"):
        TimeBudget(600.0, safety=0.0)


@pytest.mark.skipif(shutil.which("ps") is None, reason="needs ps (procps) for an independent clock")
def test_process_start_time_matches_the_kernel_and_precedes_this_module():
    start = process_start_time()
    assert start <= IMPORTED_AT
    # ps reports whole seconds since the process started.
    etimes = int(subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True, text=True,
                                check=True).stdout)
    assert abs((time.time() - start) - etimes) < 1.5


def test_generous_budget_runs_everything_and_equals_segmenter_predict(phantom):
    ct, pet = phantom
    segmenter, clock, schedule = make_segmenter(seconds_per_pass=1.0)
    mask = segmenter.predict(ct, pet, budget=budget(clock))
    report = segmenter.last_report
    assert schedule["calls"] == 12 and report.passes == 12
    assert report.folds == [0, 1, 2] and report.tta is True and report.dropped == []
    assert report.timings["elapsed_s"] == pytest.approx(12.0)
    assert masks_equal(mask, segmenter.predict(ct, pet))  # bit-identical to the path without a budget
    # ... and to the arithmetic of sliding_window_probabilities over every network and mirror
    region = preprocess_region(ct, pet, PLAN)
    probabilities = sliding_window_probabilities(segmenter.networks, torch.from_numpy(region.image)[None],
                                                 PLAN.patch_size_zyx, tta=True)
    assert masks_equal(mask, probabilities_to_ct_grid(probabilities, region.grid, ct))


def expected_probabilities(segmenter: Segmenter, ct: sitk.Image, pet: sitk.Image, passes: dict):
    """Probabilities from the given passes ({fold: [mirror dims]}), each fold's passes averaged, then the folds
    averaged, computed independently with hecktor.segment.sliding_window_probabilities; and the region."""
    region = preprocess_region(ct, pet, PLAN)
    image = torch.from_numpy(region.image)[None]
    means = []
    for k, flips in passes.items():
        probabilities = []
        for dims in flips:
            p = sliding_window_probabilities([segmenter.networks[k]], torch.flip(image, dims) if dims else image,
                                             PLAN.patch_size_zyx)
            probabilities.append(torch.flip(p[None], dims)[0] if dims else p)
        means.append(sum(probabilities[1:], probabilities[0]).numpy() / len(flips))
    return sum(means[1:], means[0]) / len(means), region


def expected_mask(segmenter: Segmenter, ct: sitk.Image, pet: sitk.Image, passes: dict) -> sitk.Image:
    probabilities, region = expected_probabilities(segmenter, ct, pet, passes)
    return probabilities_to_ct_grid(probabilities, region.grid, ct)


def test_tta_is_dropped_before_folds(phantom, caplog):
    ct, pet = phantom
    segmenter, clock, _ = make_segmenter(seconds_per_pass=10.0)
    # After two passes (20 s): 10 more (100 s) do not fit in 45 s, the unmirrored passes of folds 1 and 2 (20 s) do.
    with caplog.at_level(logging.WARNING, logger="hecktor.budget"):
        mask = segmenter.predict(ct, pet, budget=budget(clock, 45.0))
    report = segmenter.last_report
    assert report.folds == [0, 1, 2] and report.tta is False and report.passes == 4
    assert report.dropped == ["test-time augmentation"]
    assert ("time budget: dropped test-time augmentation: 20.0 s used, 10 pass(es) of ~10.0 s left, budget 45.0 s"
            in caplog.text)
    assert masks_equal(mask, expected_mask(segmenter, ct, pet, {0: [(), (2,)], 1: [()], 2: [()]}))


def test_then_the_last_folds_are_dropped(phantom, caplog):
    ct, pet = phantom
    segmenter, clock, _ = make_segmenter(seconds_per_pass=10.0)
    with caplog.at_level(logging.WARNING, logger="hecktor.budget"):
        mask = segmenter.predict(ct, pet, budget=budget(clock, 35.0))
    report = segmenter.last_report
    assert report.folds == [0, 1] and report.passes == 3
    assert report.dropped == ["test-time augmentation", "fold(s) [2]"]
    assert "time budget: dropped fold(s) [2]: 20.0 s used" in caplog.text
    assert masks_equal(mask, expected_mask(segmenter, ct, pet, {0: [(), (2,)], 1: [()]}))


def test_a_slow_first_pass_is_taken_for_warm_up(phantom):
    ct, pet = phantom
    # The first pass takes 30 s (warm-up), the others 1 s: 11 more passes at 30 s would not fit in 100 s, but one
    # more does, and the warm passes show that all of them fit.
    segmenter, clock, _ = make_segmenter(seconds_per_pass=1.0, costs=[30.0])
    mask = segmenter.predict(ct, pet, budget=budget(clock, 100.0))
    report = segmenter.last_report
    assert report.dropped == [] and report.passes == 12 and report.tta is True
    assert report.timings["elapsed_s"] == pytest.approx(41.0)
    assert masks_equal(mask, segmenter.predict(ct, pet))
    # When not even a second pass fits, everything but the first fold's first pass goes at once.
    segmenter, clock, _ = make_segmenter(seconds_per_pass=30.0)
    mask = segmenter.predict(ct, pet, budget=budget(clock, 50.0))
    report = segmenter.last_report
    assert report.folds == [0] and report.passes == 1
    assert report.dropped == ["test-time augmentation", "fold(s) [1, 2]"]
    assert masks_equal(mask, segmenter.predict(ct, pet, folds=[0], tta=False))


def test_over_budget_after_preprocessing_keeps_one_fold_without_tta(phantom, caplog):
    ct, pet = phantom
    segmenter, clock, _ = make_segmenter()
    with caplog.at_level(logging.WARNING, logger="hecktor.budget"):
        mask = segmenter.predict(ct, pet, budget=budget(clock, start_time=clock.now - 1000.0))
    report = segmenter.last_report
    assert report.folds == [0] and report.passes == 1 and report.tta is False
    assert report.dropped == ["test-time augmentation", "fold(s) [1, 2]"]
    assert "used by the end of preprocessing" in caplog.text
    assert masks_equal(mask, segmenter.predict(ct, pet, folds=[0], tta=False))
    assert mask.GetSize() == ct.GetSize() and mask.GetDirection() == ct.GetDirection()


def test_tta_dropped_midway_weighs_folds_equally(phantom):
    ct, pet = phantom
    # Passes of fold 0: identity (1 s), mirror z (1 s), mirror y (50 s: the machine slowed down). Then 9 passes of
    # ~50 s do not fit in 200 s, the identity passes of folds 1 and 2 do.
    segmenter, clock, _ = make_segmenter(seconds_per_pass=1.0, costs=[1.0, 1.0, 50.0])
    mask = segmenter.predict(ct, pet, budget=budget(clock, 200.0))
    report = segmenter.last_report
    assert report.folds == [0, 1, 2] and report.passes == 5 and report.tta is False
    assert report.dropped == ["test-time augmentation"]
    passes = {0: [(), (2,), (3,)], 1: [()], 2: [()]}
    assert masks_equal(mask, expected_mask(segmenter, ct, pet, passes))
    # ... which is not what averaging the five passes alike gives
    blended, region = expected_probabilities(segmenter, ct, pet, passes)
    fold0 = expected_probabilities(segmenter, ct, pet, {0: passes[0]})[0]
    others = [segmenter.predict_probabilities(region.image, folds=[k], tta=False) for k in (1, 2)]
    assert np.abs((3 * fold0 + others[0] + others[1]) / 5 - blended).max() > 1e-3


def test_placeholders_give_an_all_background_mask_on_the_ct_grid(phantom):
    ct, pet = phantom
    segmenter, clock, schedule = make_segmenter()
    flat = sitk.Image([1, 1], sitk.sitkFloat32)
    flat.SetOrigin((3.5, -2.0))
    flat.SetSpacing((0.7, 0.9))
    mask = segmenter.predict(flat, pet, budget=budget(clock))
    report = segmenter.last_report
    assert report.placeholder and mask.GetDimension() == 2
    assert (mask.GetSize(), mask.GetOrigin(), mask.GetSpacing()) == ((1, 1), (3.5, -2.0), (0.7, 0.9))
    flat_pet = sitk.Image([1, 1, 1], sitk.sitkFloat32)
    mask = segmenter.predict(ct, flat_pet, budget=budget(clock))
    report = segmenter.last_report
    assert report.placeholder and masks_equal(mask, blank_mask(ct)) and mask.GetDirection() == ct.GetDirection()
    assert "calls" not in schedule  # no network ran
    with pytest.raises(ValueError, match="distinct indices"):
        segmenter.predict(ct, pet, folds=[0, 3], budget=budget(clock))


# ---------------------------------------------------------------------------------------------------------- Task 2


@pytest.fixture(scope="module")
def predictor() -> RiskPredictor:
    rng = np.random.default_rng(0)
    rows = [{"Age": 45 + 2 * i, "Gender": i % 2, "Tobacco Consumption": i % 3 % 2, "Performance Status": i % 3,
             "Treatment": (i // 2) % 2, "M-stage": "M1" if i == 4 else "M0"} for i in range(14)]
    folds = []
    for k, cindex in enumerate(CINDICES):
        encoder = ClinicalEncoder().fit(rows[k:k + 11])
        torch.manual_seed(k)
        network = FusedFeatureExtractor(encoder.n_features, mode="fusion", **TINY_BACKBONE).eval()
        features = rng.normal(size=(40, network.feature_dim))
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(features, rng.uniform(100, 2000, 40),
                                                                       rng.random(40) < 0.5)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=cindex))
    return RiskPredictor(folds, ensemble_weights(CINDICES), BOX_PLAN, "fusion", device="cpu")


def timed(predictor: RiskPredictor, monkeypatch, seconds_per_fold: float) -> tuple[FakeClock, list]:
    clock, calls = FakeClock(), []
    original = predictor._fold_score

    def fold_risk(k, image, record, timings):
        clock.now += seconds_per_fold
        calls.append([k])
        return original(k, image, record, timings)

    monkeypatch.setattr(predictor, "_fold_score", fold_risk)
    return clock, calls


def test_risk_with_generous_budget_equals_predict(predictor, phantom, monkeypatch):
    ct, pet = phantom
    clock, calls = timed(predictor, monkeypatch, 1.0)
    risk = predictor.predict(ct, pet, EHR, budget=budget(clock, task=2))
    report = predictor.last_report
    assert predictor.folds_by_weight == [0, 2, 1] and calls == [[0], [2], [1]]
    assert report.folds == [0, 1, 2] and report.dropped == [] and report.tta is False
    assert risk == predictor.predict(ct, pet, EHR)  # bit-identical


def test_lightest_folds_are_dropped_first(predictor, phantom, monkeypatch, caplog):
    ct, pet = phantom
    clock, calls = timed(predictor, monkeypatch, 10.0)
    with caplog.at_level(logging.WARNING, logger="hecktor.budget"):
        risk = predictor.predict(ct, pet, EHR, budget=budget(clock, 25.0, task=2))
    report = predictor.last_report
    assert calls == [[0], [2]] and report.folds == [0, 2] and report.dropped == ["fold(s) [1]"]
    # (after the first fold one more still fitted, so the second ran before the projection dropped the third)
    assert "time budget: dropped fold(s) [1]: 20.0 s used, 1 pass(es) of ~10.0 s left" in caplog.text
    assert risk == predictor.predict(ct, pet, EHR, folds=[0, 2])
    assert risk != predictor.predict(ct, pet, EHR)

    clock, calls = timed(predictor, monkeypatch, 1.0)
    risk = predictor.predict(ct, pet, EHR, budget=budget(clock, start_time=clock.now - 1e4, task=2))
    report = predictor.last_report
    assert calls == [[0]] and report.folds == [0] and report.dropped == ["fold(s) [2, 1]"]
    assert risk == predictor.predict(ct, pet, EHR, folds=[0])


def test_placeholder_images_predict_from_the_record_with_a_blank_image(predictor, phantom):
    ct, _ = phantom
    flat = sitk.Image([1, 1], sitk.sitkFloat32)
    risk = predictor.predict(flat, flat, EHR)
    assert predictor.last_report.placeholder and math.isfinite(risk)
    blank = blank_network_input(BOX_PLAN.input_shape_zyx, BOX_PLAN)
    # The blank image is what preprocessing makes of a box outside every field of view.
    far_away = Grid.centered((0.0, 0.0, 5000.0), BOX_PLAN.box_mm_xyz, size_xyz=BOX_PLAN.input_shape_zyx[::-1])
    np.testing.assert_array_equal(blank, network_input(ct, ct, far_away, BOX_PLAN))
    assert blank.shape == (2, 24, 24, 24)
    assert risk == pytest.approx(float(predictor.predict_batch(blank[None], [EHR])[0]), abs=1e-12)
    other_record = predictor.predict(flat, flat, {**EHR, "M-stage": "M1", "Age": 80})
    assert other_record != risk  # the clinical record still moves the risk
