"""Plan, grids, resampling, localisation and the inverse mapping onto the CT grid."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DIRECTIONS, blank_image, head_phantom, paint
from hecktor.errors import InputError
from hecktor.geometry import Grid, resample_to_grid, subgrid_covering
from hecktor.localization import localize_head_and_neck
from hecktor.plan import BoxPlan, RegionPlan, plan_digest
from hecktor.preprocessing import (
    check_case,
    labels_to_ct_grid,
    normalize_ct,
    normalize_pet,
    preprocess_region,
    preprocess_box,
    probabilities_to_ct_grid,
)

def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    a, b = a == label, b == label
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


SMALL_PLAN = RegionPlan(spacing_mm_xyz=(2.0, 2.0, 2.0), region_mm_xyz=(120.0, 120.0, 160.0),
                        brain_min_volume_ml=50.0)
SMALL_BOX_PLAN = BoxPlan(brain_min_volume_ml=50.0, input_shape_zyx=(24, 24, 24))


def test_plan_json_round_trip_and_digest():
    plan = SMALL_PLAN.replace(ct_window_hu=(-200.0, 300.0))
    again = RegionPlan.from_json(plan.to_json())
    assert again == plan
    assert again.digest() == plan.digest() != RegionPlan().digest()
    with pytest.raises(InputError, match="unknown RegionPlan field"):
        RegionPlan.from_dict({**plan.to_dict(), "spacing": 1})
    with pytest.raises(InputError, match="ct_window_hu"):
        RegionPlan(ct_window_hu=(10.0, -10.0))


def test_plans_are_per_task_with_kind_and_schema_version():
    region, box = RegionPlan(), BoxPlan()
    assert region.to_dict()["kind"] == "region" and box.to_dict()["kind"] == "box"
    assert region.to_dict()["schema_version"] == box.to_dict()["schema_version"] == 2
    # Each task's digest covers its own settings only: a Task 2 box change leaves Task 1 caches valid.
    assert BoxPlan(input_shape_zyx=(48, 48, 48)).digest() != box.digest()
    assert "input_shape_zyx" not in region.to_dict() and "patch_size_zyx" not in box.to_dict()
    # The digest is of the stored dict: the same text gives the same digest, whatever a plan class would add.
    stored = json.loads(box.to_json())
    assert plan_digest(stored) == box.digest()
    with pytest.raises(InputError, match="'box' plan, but a 'region' plan"):
        RegionPlan.from_dict(box.to_dict())
    with pytest.raises(InputError, match="schema_version 3 is not readable"):
        BoxPlan.from_dict({**box.to_dict(), "schema_version": 3})
    # Schema 1 (hecktor 0.1: one Plan for both tasks) reads as each task's plan, renamed fields included.
    legacy = {"spacing_mm_xyz": [2.0, 2.0, 2.0], "task1_region_mm_xyz": [100.0, 100.0, 120.0],
              "task2_box_mm_xyz": [150.0, 150.0, 200.0], "task2_input_shape_zyx": [32, 32, 32],
              "brain_suv_threshold": 2.5}
    # (it predates the fields of ABSENT_VALUES, so it keeps the behaviour from before them)
    assert RegionPlan.from_dict(legacy) == RegionPlan(spacing_mm_xyz=(2.0, 2.0, 2.0),
                                                      region_mm_xyz=(100.0, 100.0, 120.0), brain_suv_threshold=2.5,
                                                      **RegionPlan.ABSENT_VALUES)
    assert BoxPlan.from_dict(legacy) == BoxPlan(box_mm_xyz=(150.0, 150.0, 200.0), input_shape_zyx=(32, 32, 32),
                                                brain_suv_threshold=2.5, **BoxPlan.ABSENT_VALUES)


@pytest.mark.parametrize("plan_class", [RegionPlan, BoxPlan])
def test_fields_added_later_keep_the_old_behaviour_for_stored_plans_and_the_new_for_new_plans(plan_class):
    new = plan_class()
    assert (new.brain_relative_threshold, new.pet_outlier_ceiling) == (0.5, 10.0)
    assert plan_class.ABSENT_VALUES == {"brain_relative_threshold": None, "pet_outlier_ceiling": None}
    # a plan stored before the fields existed: the behaviour from before
    stored = {k: v for k, v in new.to_dict().items() if k not in plan_class.ABSENT_VALUES}
    old = plan_class.from_dict(stored)
    assert (old.brain_relative_threshold, old.pet_outlier_ceiling) == (None, None)
    assert old == new.replace(**plan_class.ABSENT_VALUES)
    # a plan stored with them (new exports, and old behaviour written out explicitly) round-trips exactly
    assert plan_class.from_json(new.to_json()) == new
    assert plan_class.from_json(old.to_json()) == old and "null" in old.to_json()
    with pytest.raises(InputError, match="brain_relative_threshold must be a number in"):
        plan_class(brain_relative_threshold=3.0)
    with pytest.raises(InputError, match="pet_outlier_ceiling must be a number above 1"):
        plan_class(pet_outlier_ceiling=0.5)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_grid_matches_simpleitk_geometry(direction):
    image = blank_image((7, 9, 11), (0.7, 1.3, 2.9), (10, -20, 30), DIRECTIONS[direction])
    grid = Grid.from_image(image)
    index = np.array([[0.0, 0.0, 0.0], [6.0, 8.0, 10.0], [1.5, 2.25, 7.75]])
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(list(i)) for i in index])
    np.testing.assert_allclose(grid.index_to_physical(index), expected, atol=1e-9)
    np.testing.assert_allclose(grid.physical_to_index(expected), index, atol=1e-9)
    np.testing.assert_allclose(grid.center(), (10, -20, 30), atol=1e-9)
    assert Grid.from_dict(grid.to_dict()) == grid


def test_centered_grid_by_size_samples_like_a_resize():
    grid = Grid.centered((0, 0, 0), (200, 200, 310), size_xyz=(96, 96, 96))
    assert grid.shape_zyx == (96, 96, 96)
    np.testing.assert_allclose(grid.spacing_xyz, (200 / 96, 200 / 96, 310 / 96))
    low, high = grid.physical_bounds()
    np.testing.assert_allclose(low, (-100, -100, -155))
    np.testing.assert_allclose(high, (100, 100, 155))


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_sphere_survives_forward_and_inverse_at_anisotropic_spacing(direction):
    ct = blank_image((64, 64, 30), (0.98, 0.98, 3.0), (0, 0, 0), DIRECTIONS[direction])
    label = paint(ct, [((3.0, -2.0, 4.0), 16.0, 1)], pixel=sitk.sitkUInt8)
    region = Grid.centered((1.0, 1.0, 1.0), (50, 50, 70), spacing_xyz=(1.0, 1.0, 1.0))
    forward = sitk.GetArrayFromImage(resample_to_grid(label, region, "nearest", 0, sitk.sitkUInt8))
    back = labels_to_ct_grid(forward, region, ct)
    assert Grid.from_image(back).same_as(Grid.from_image(ct), tolerance=0.0)
    assert back.GetPixelID() == sitk.sitkUInt8
    score = dice(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label), 1)
    assert score >= 0.98, score


def test_probabilities_outside_region_are_background_and_argmax_inside():
    ct = blank_image((20, 20, 10), (2.0, 2.0, 4.0), (0, 0, 0), DIRECTIONS["flipped_xy"])
    region = Grid.centered((0, 0, 0), (12, 12, 12), spacing_xyz=(1.0, 1.0, 1.0))
    probabilities = np.zeros((3,) + region.shape_zyx, np.float32)
    probabilities[2] = 0.9
    probabilities[0] = 0.1
    mask = sitk.GetArrayFromImage(probabilities_to_ct_grid(probabilities, region, ct))
    assert set(np.unique(mask)) == {0, 2}
    centre = Grid.from_image(ct).physical_to_index(np.zeros((1, 3)))[0]
    assert mask[tuple(np.round(centre[::-1]).astype(int))] == 2
    # the region is 12 mm wide; the CT voxels it covers are about (12/2)^2*(12/4) = 108
    assert 40 < int((mask == 2).sum()) < 200


def test_subgrid_covering_disjoint_is_none():
    ct = Grid.from_image(blank_image((10, 10, 10), (1, 1, 1), (0, 0, 0)))
    far = Grid.centered((500, 0, 0), (10, 10, 10), spacing_xyz=(1, 1, 1))
    assert subgrid_covering(ct, far) is None


@pytest.mark.parametrize("direction", ["identity", "flipped_z", "oblique"])
def test_localisation_finds_brain_whatever_the_direction(direction):
    _, pet, _, truth = head_phantom(direction_pet=direction)
    found = localize_head_and_neck(pet, SMALL_PLAN)
    assert found.found
    assert np.linalg.norm(np.asarray(found.anchor_xyz) - truth["brain"]) < 4.0
    assert 500 < found.brain_volume_ml < 1100  # a 60 mm sphere holds 905 ml


def test_localisation_falls_back_without_brain(caplog):
    ct, pet, _, _ = head_phantom(brain=False)
    with caplog.at_level(logging.INFO):  # the caller reports the fallback as a warning (one line per case)
        found = localize_head_and_neck(pet, SMALL_PLAN, reference=ct)
    assert not found.found and "fell back" in caplog.text and "expected of a brain" in found.reason
    low, high = Grid.from_image(ct).physical_bounds()
    np.testing.assert_allclose(found.anchor_xyz[2], high[2] - SMALL_PLAN.fallback_brain_depth_mm)


def test_task1_region_holds_tumour_and_is_normalised():
    ct, pet, label, truth = head_phantom(direction_ct="oblique", direction_pet="flipped_xy")
    region = preprocess_region(ct, pet, SMALL_PLAN)
    assert region.image.shape == (2,) + region.grid.shape_zyx == (2, 80, 60, 60)
    assert region.image.dtype == np.float32
    assert 0.0 <= region.image[0].min() and region.image[0].max() <= 1.0
    np.testing.assert_allclose([region.image[1].mean(), region.image[1].std()], [0.0, 1.0], atol=1e-4)
    low, high = region.grid.physical_bounds()
    assert np.all(truth["tumour"] > low) and np.all(truth["tumour"] < high)


def test_task2_box_shape_and_padding_outside_field_of_view():
    ct, pet, _, _ = head_phantom()
    region = preprocess_box(ct, pet, SMALL_BOX_PLAN)
    assert region.image.shape == (2, 24, 24, 24)
    # the 200 mm box is wider than the 240 mm CT only along z (310 mm > 240 mm): the padded CT reads 0 (-1000 HU)
    assert region.image[0, 0].max() == 0.0 and region.image[0, -1].max() == 0.0


def test_normalisation_values():
    np.testing.assert_allclose(normalize_ct(np.array([-2000.0, -1000.0, 0.0, 1000.0, 3000.0]), (-1000, 1000)),
                               [0, 0, 0.5, 1, 1])
    z = normalize_pet(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_allclose([z.mean(), z.std()], [0, 1], atol=1e-6)
    np.testing.assert_allclose(normalize_pet(np.full(5, 3.0)), 0.0)


def test_check_case_rejects_and_repairs():
    ct, pet, _, _ = head_phantom()
    empty = sitk.Image(pet.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(pet)
    with pytest.raises(InputError, match="PET is empty"):
        check_case(ct, empty, SMALL_PLAN)
    far = sitk.Image(pet)
    far.SetOrigin((5000.0, 0.0, 0.0))
    with pytest.raises(InputError, match="do not overlap"):
        check_case(ct, far, SMALL_PLAN)
    array = sitk.GetArrayFromImage(pet)
    array[0, 0, :5] = np.nan
    nan_pet = sitk.GetImageFromArray(array)
    nan_pet.CopyInformation(pet)
    _, repaired, warnings = check_case(ct, nan_pet, SMALL_PLAN)
    assert np.isfinite(sitk.GetArrayViewFromImage(repaired)).all()
    assert warnings == ["PET: 5 non-finite voxel(s) replaced by 0"]
    all_nan = sitk.GetImageFromArray(np.full_like(array, np.nan))
    all_nan.CopyInformation(pet)
    with pytest.raises(InputError, match="no finite voxel"):
        check_case(ct, all_nan, SMALL_PLAN)


def test_real_pet_resampled_onto_ct_keeps_suv_range(real_data):
    case = real_data / "petct" / "STS_002"
    ct = sitk.ReadImage(str(case / "STS_002__CT.nii.gz"))
    pet = sitk.ReadImage(str(case / "STS_002__PT.nii.gz"))
    on_ct = sitk.GetArrayFromImage(resample_to_grid(pet, Grid.from_image(ct), "linear", 0.0))
    original = sitk.GetArrayFromImage(pet)
    assert on_ct.min() >= original.min() - 1e-4
    assert on_ct.max() <= original.max() + 1e-4
    assert on_ct.max() >= 0.8 * original.max()  # the 1 mm CT grid samples the hot spot, not just its tails


def test_real_abdominal_ct_and_sarcoma_fall_back_with_warning(real_data, caplog):
    ct = sitk.ReadImage(str(real_data / "ct" / "abdomen_ct_small.nii.gz"))
    with caplog.at_level(logging.INFO):
        found = localize_head_and_neck(None, RegionPlan(), reference=ct)
    assert not found.found and "no PET" in found.reason
    case = real_data / "petct" / "STS_003"
    ct = sitk.ReadImage(str(case / "STS_003__CT.nii.gz"))
    pet = sitk.ReadImage(str(case / "STS_003__PT.nii.gz"))
    region = preprocess_box(ct, pet, BoxPlan())
    assert not region.localization.found
    assert region.image.shape == (2, 96, 96, 96) and np.isfinite(region.image).all()
