"""Plan, grids, resampling, localisation and the inverse mapping onto the CT grid."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.geometry import Grid, resample_to_grid, subgrid_covering
from hecktor.localization import CT_MARGIN_MM, MAX_EXTENT_MM, body_uptake, localize_head_and_neck
from hecktor.plan import BoxPlan, RegionPlan, plan_digest
from hecktor.preprocessing import (
    check_case,
    labels_to_ct_grid,
    normalize_ct,
    normalize_pet,
    pet_outlier_limit,
    preprocess_region,
    preprocess_box,
    probabilities_to_ct_grid,
)
from hecktor.repair import repair_case, repair_ct_offset
from helpers.phantoms import DIRECTIONS, blank_image, head_phantom, paint

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


# ----------------------------------------------------------------------------------- hostile values and units


def _like(array: np.ndarray, image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


@pytest.mark.parametrize("pixel", [sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkFloat32])
def test_a_ct_stored_with_a_1024_offset_is_brought_back_to_hu(pixel):
    ct, _, _, _ = head_phantom()
    offset = sitk.Cast(ct + 1024.0, pixel)
    repaired, warning = repair_ct_offset(offset)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(repaired), sitk.GetArrayFromImage(ct))
    assert Grid.from_image(repaired) == Grid.from_image(ct) and "+1024 offset" in warning
    # a CT in HU, one without soft tissue, and one whose "soft tissue" is not at 1024 are left alone
    for untouched in (ct, sitk.Cast(ct * 0 + 3000.0, pixel), sitk.Cast(ct + 2000.0, pixel)):
        assert repair_ct_offset(untouched) == (untouched, None)


def test_a_pet_in_bq_per_ml_is_rescaled_and_localised_as_the_suv_one():
    ct, pet, _, truth = head_phantom()
    bq = pet * 7000.0
    _, repaired, warnings = check_case(ct, bq, SMALL_PLAN)
    assert len(warnings) == 1 and "implausible for SUV" in warnings[0]
    level = body_uptake(pet, ct)
    np.testing.assert_allclose(sitk.GetArrayFromImage(repaired), sitk.GetArrayFromImage(pet) / level, rtol=1e-5)
    assert check_case(ct, pet, SMALL_PLAN)[2] == []  # the SUV PET is not touched
    # the relative threshold does not see the unit at all, even without the repair
    for plan in (SMALL_PLAN, SMALL_PLAN.replace(brain_min_volume_ml=20.0)):
        suv, bqml = localize_head_and_neck(pet, plan, ct), localize_head_and_neck(bq, plan, ct)
        assert suv.found and np.allclose(suv.anchor_xyz, bqml.anchor_xyz, atol=1e-3)
    # whereas the absolute threshold of stored plans takes the whole body for the brain without the repair ...
    absolute = SMALL_PLAN.replace(**RegionPlan.ABSENT_VALUES)
    assert localize_head_and_neck(bq, absolute, ct).brain_volume_ml > 5000
    # ... and finds the brain after it
    assert np.linalg.norm(np.subtract(localize_head_and_neck(repaired, absolute, ct).anchor_xyz, truth["brain"])) < 4
    # the network input is a z-score: the same either way
    region = preprocess_region(ct, bq, SMALL_PLAN)
    np.testing.assert_allclose(region.image, preprocess_region(ct, pet, SMALL_PLAN).image, atol=1e-4)


@pytest.mark.parametrize("value", [1e20, float(np.finfo(np.float32).max), -1e20])
def test_absurd_pet_voxels_are_replaced_by_their_neighbours(value):
    ct, pet, _, truth = head_phantom()
    array = sitk.GetArrayFromImage(pet)
    index = np.round(Grid.from_image(pet).physical_to_index(truth["tumour"][None])[0][::-1]).astype(int)
    spoiled = array.copy()
    spoiled[index[0], index[1], index[2] - 1:index[2] + 1] = value  # two voxels in the tumour
    _, repaired, warnings = check_case(ct, _like(spoiled, pet), SMALL_PLAN)
    assert len(warnings) == 1 and "2 voxel(s) above 1000x the body's median uptake" in warnings[0]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(repaired), array)  # the tumour's neighbours all read 12


def test_pet_outliers_are_clipped_and_left_out_of_the_z_score():
    rng = np.random.default_rng(0)
    suv = rng.gamma(2.0, 0.5, size=(20, 30, 30)).astype(np.float32)
    clean_plain, clean_robust = normalize_pet(suv), normalize_pet(suv, outlier_ceiling=10.0)
    np.testing.assert_array_equal(clean_plain, clean_robust)  # a clean region: exactly the plain z-score
    spoiled = suv.copy()
    spoiled[10, 10, 10:14] = 1e20
    plain, robust = normalize_pet(spoiled), normalize_pet(spoiled, outlier_ceiling=10.0)
    others = np.ones(suv.shape, bool)
    others[10, 10, 10:14] = False
    assert np.ptp(plain[others]) < 1e-3  # the plain z-score collapses: every real voxel reads the same
    np.testing.assert_allclose(robust[others], clean_plain[others], atol=1e-3)
    limit = pet_outlier_limit(spoiled, 10.0)
    assert limit == pytest.approx(10.0 * np.percentile(suv[suv > 0], 99.0), rel=0.01)
    assert robust.max() == pytest.approx((limit - suv.mean()) / suv.std(), rel=0.01)


@pytest.mark.parametrize("scale", [(100.0, 100.0, 1.0), (100.0, 100.0, 100.0)])
def test_localisation_memory_depends_on_the_ct_not_on_a_pet_header(monkeypatch, scale):
    ct, pet, _, _ = head_phantom()
    huge = sitk.Image(pet)
    huge.SetSpacing([k * s for k, s in zip(scale, pet.GetSpacing())])  # 24 m wide: a 4 mm grid of 2e9 voxels
    sizes = []
    original = resample_to_grid

    def recording(image, grid, *args, **kwargs):
        sizes.append(int(np.prod(grid.size_xyz)))
        return original(image, grid, *args, **kwargs)

    monkeypatch.setattr("hecktor.localization.resample_to_grid", recording)
    found = localize_head_and_neck(huge, SMALL_PLAN, reference=ct)
    ct_extent = np.asarray(ct.GetSize()) * np.asarray(ct.GetSpacing())
    margin = max(CT_MARGIN_MM, ct_extent.max())
    bound = np.prod((ct_extent + 2 * margin) / SMALL_PLAN.localization_spacing_mm + 1)
    assert max(sizes, default=0) <= bound < 1e7 and not found.found  # (unbounded: 2e9)
    assert bool(sizes) == (scale[2] == 1.0)  # a PET whose top lies 20 m above the CT is not even resampled
    sizes.clear()
    localize_head_and_neck(huge, SMALL_PLAN)  # without a CT: at most MAX_EXTENT_MM along each axis (16 M voxels)
    assert max(sizes) <= (MAX_EXTENT_MM / SMALL_PLAN.localization_spacing_mm + 1) ** 2 * (
        SMALL_PLAN.brain_search_mm / SMALL_PLAN.localization_spacing_mm + 1)


def test_a_brain_outside_the_ct_is_not_an_anchor():
    ct, pet, _, _ = head_phantom()
    moved = sitk.Image(pet)
    moved.SetOrigin(np.asarray(pet.GetOrigin()) + (0.0, 0.0, 160.0))  # brain at z 280, the CT ends at z 200
    found = localize_head_and_neck(moved, SMALL_PLAN, reference=ct)
    assert not found.found and "lies outside the CT's field of view" in found.reason
    assert found.anchor_xyz == localize_head_and_neck(None, SMALL_PLAN, reference=ct).anchor_xyz
    assert localize_head_and_neck(moved, SMALL_PLAN).found  # by itself the PET does show a brain


def test_either_image_may_be_missing():
    ct, pet, _, _ = head_phantom()
    for plan, preprocess in ((SMALL_PLAN, preprocess_region), (SMALL_BOX_PLAN, preprocess_box)):
        without_pet = preprocess(ct, None, plan)
        assert not without_pet.localization.found and without_pet.warnings == []
        assert np.all(without_pet.image[1] == 0) and without_pet.image[0].max() > 0.5
        if plan is SMALL_BOX_PLAN:
            without_ct = preprocess(None, pet, plan)
            assert without_ct.localization.found and np.all(without_ct.image[0] == 0)
            assert without_ct.grid == preprocess(ct, pet, plan).grid
    with pytest.raises(ValueError, match="needs a CT or a PET"):
        preprocess_box(None, None, SMALL_BOX_PLAN)
