"""Bundles exported by an earlier version keep loading and predicting the same (tests/fixtures/make_bundles.py wrote
the fixtures and what they predicted on the test phantom). A failure here means users' exported models would break
or change: fix the code, or, if the change is deliberate, say so in the release notes and regenerate the fixtures."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.bundle import load_bundle
from hecktor.diagnosis import HPVPredictor
from hecktor.metrics import dice
from hecktor.plan import RegionPlan
from hecktor.prognosis import RiskPredictor
from hecktor.segment import Segmenter
from helpers.paths import FIXTURE_BUNDLES
from helpers.phantoms import head_phantom

FIXTURES = FIXTURE_BUNDLES
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture(scope="module")
def phantom():
    ct, pet, _, _ = head_phantom()
    return ct, pet


@pytest.mark.parametrize("name", ["task1", "task1-schema1"])
def test_task1_fixture_predicts_what_it_predicted_at_export(name, phantom):
    ct, pet = phantom
    mask = Segmenter.from_bundle(FIXTURES / name, device="cpu").predict(ct, pet, tta=True)
    expected = sitk.ReadImage(str(FIXTURES / "expected_task1_mask.mha"))
    assert mask.GetSize() == ct.GetSize() and mask.GetDirection() == ct.GetDirection()
    got, want = sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(expected)
    assert [int((got == v).sum()) for v in range(3)] == pytest.approx(EXPECTED["task1_label_voxels"], rel=0.005)
    for label in (1, 2):
        assert dice(got, want, label) > 0.99


def test_schema1_plan_reads_as_the_region_plan_it_was(phantom):
    old, new = load_bundle(FIXTURES / "task1-schema1", task=1), load_bundle(FIXTURES / "task1", task=1)
    assert old.plan == new.plan and isinstance(old.plan, RegionPlan)
    assert "task1_region_mm_xyz" in json.loads((FIXTURES / "task1-schema1" / "plan.json").read_text())


def test_task2_fixture_predicts_what_it_predicted_at_export(phantom):
    ct, pet = phantom
    risk = RiskPredictor.from_bundle(FIXTURES / "task2", device="cpu").predict(ct, pet, EXPECTED["ehr"])
    assert risk == pytest.approx(EXPECTED["task2_risk"], abs=1e-6)


def test_task2_biomarkers_fixture_segments_measures_and_predicts_what_it_did_at_export(phantom):
    """The default Task 2 mode: the nested Task 1 bundle segments, the biomarkers are measured, the Cox folds score."""
    ct, pet = phantom
    predictor = RiskPredictor.from_bundle(FIXTURES / "task2-biomarkers", device="cpu")
    risk = predictor.predict(ct, pet, EXPECTED["ehr"])
    assert predictor.last_biomarkers.values == pytest.approx(EXPECTED["task2_biomarkers"], rel=1e-4)
    assert risk == pytest.approx(EXPECTED["task2_biomarkers_risk"], abs=1e-5)


def test_task3_fixture_predicts_what_it_predicted_at_export(phantom):
    ct, pet = phantom
    predictor = HPVPredictor.from_bundle(FIXTURES / "task3", device="cpu")
    assert bool(predictor.predict(ct, pet, EXPECTED["ehr"])) is EXPECTED["task3_status"]
    assert predictor.last_report.probability == pytest.approx(EXPECTED["task3_probability"], abs=1e-6)


def test_a_plan_field_added_later_does_not_invalidate_a_bundle(tmp_path, monkeypatch, phantom):
    """A future RegionPlan with one more field (with a default) still loads the stored plan: the digest is of the
    stored text, and the missing field takes its default."""
    @dataclass(frozen=True)
    class FutureRegionPlan(RegionPlan):
        future_setting: float = 1.5

    monkeypatch.setattr("hecktor.tasks.TASKS", {**__import__("hecktor.tasks").tasks.TASKS})
    from hecktor import tasks

    monkeypatch.setitem(tasks.TASKS, 1, dataclasses.replace(tasks.TASKS[1], plan_class=FutureRegionPlan))
    bundle = shutil.copytree(FIXTURES / "task1", tmp_path / "task1")
    loaded = load_bundle(bundle, task=1)
    assert isinstance(loaded.plan, FutureRegionPlan) and loaded.plan.future_setting == 1.5
    assert loaded.plan.patch_size_zyx == (32, 32, 32)
    ct, pet = phantom
    assert Segmenter.from_bundle(bundle, device="cpu").predict(ct, pet).GetSize() == ct.GetSize()
    # whereas a changed stored plan is refused
    plan_path = bundle / "plan.json"
    plan_path.write_text(plan_path.read_text().replace("32", "33", 1))
    with pytest.raises(Exception, match="SHA-256|digest"):
        load_bundle(bundle, task=1)
