"""Training regions and positive/negative patch sampling."""

from __future__ import annotations

import numpy as np
import pytest

from hecktor.patches import mask_physical_bounds, preprocess_training_case, sample_patches
from hecktor.plan import RegionPlan
from helpers.phantoms import head_phantom

PLAN = RegionPlan(spacing_mm_xyz=(2.0, 2.0, 2.0), region_mm_xyz=(120.0, 120.0, 160.0), brain_min_volume_ml=50.0,
            patch_size_zyx=(32, 32, 32))


def test_mask_bounds_are_physical():
    _, _, label, truth = head_phantom(direction_ct="flipped_z")
    low, high = mask_physical_bounds(label)
    np.testing.assert_allclose((low + high) / 2, truth["tumour"], atol=6.0)
    assert np.all(high - low > 25) and np.all(high - low < 45)  # a 30 mm sphere on a 5-6 mm grid


@pytest.mark.parametrize("around", ["region", "mask"])
def test_training_region_holds_the_whole_mask(around):
    ct, pet, label, _ = head_phantom(direction_ct="oblique")
    case = preprocess_training_case(ct, pet, label, PLAN, around=around)
    assert case.image.shape[1:] == case.label.shape == case.grid.shape_zyx
    assert all(s >= p for s, p in zip(case.label.shape, PLAN.patch_size_zyx))
    # the 15 mm-radius sphere is 14.1 ml; nearest-neighbour resampling at 2 mm keeps it within a few percent
    volume_ml = case.label.astype(bool).sum() * 8 / 1000
    assert volume_ml == pytest.approx(4 / 3 * np.pi * 15**3 / 1000, rel=0.1)
    if around == "mask":
        assert case.label.shape == (32, 32, 32)


def test_sample_patches_positive_and_negative():
    image = np.random.default_rng(0).normal(size=(2, 40, 50, 60)).astype(np.float32)
    label = np.zeros((40, 50, 60), np.uint8)
    label[30:34, 40:44, 50:54] = 1
    image[0] = label  # image and label patches must come from the same place
    patches = sample_patches(image, label, (16, 16, 16), num_samples=20, positive_fraction=1.0, seed=1)
    assert len(patches) == 20
    assert all(img.shape == (2, 16, 16, 16) and lab.shape == (1, 16, 16, 16) for img, lab in patches)
    assert all(lab.sum() > 0 for _, lab in patches)
    assert all(np.array_equal(img[0], lab[0]) for img, lab in patches)
    negatives = sample_patches(image, label, (16, 16, 16), num_samples=50, positive_fraction=0.0, seed=1)
    assert sum(int(lab.sum() > 0) for _, lab in negatives) < 10
    again = sample_patches(image, label, (16, 16, 16), num_samples=20, positive_fraction=1.0, seed=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(patches, again))
    with pytest.raises(ValueError, match="smaller than the patch"):
        sample_patches(image, label, (64, 16, 16), 1, 0.5)


def test_precomputed_indices_give_the_same_patches():
    image = np.random.default_rng(1).normal(size=(2, 30, 30, 30)).astype(np.float32)
    label = np.zeros((30, 30, 30), np.uint8)
    label[5:9, 20:25, 10:14] = 2
    from hecktor.patches import sampling_indices

    background, gtvp, gtvn = sampling_indices(label)
    assert (len(background), len(gtvp), len(gtvn)) == (30**3 - 80, 0, 4 * 5 * 4)
    plain = sample_patches(image, label, (8, 8, 8), 6, 0.5, seed=3)
    cached = sample_patches(image, label, (8, 8, 8), 6, 0.5, seed=3, indices=(background, gtvp, gtvn))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plain, cached))


def test_positive_patches_share_out_the_foreground_labels_equally():
    """A large GTVp and a small GTVn far apart: a class-blind draw would centre 99 % of positives on the GTVp."""
    from hecktor.patches import class_ratios, sampling_indices

    label = np.zeros((20, 60, 60), np.uint8)
    label[5:15, 5:25, 5:25] = 1  # 4,000 voxels
    label[9:11, 50:52, 50:52] = 2  # 8 voxels
    image = label[None].astype(np.float32)
    patches = sample_patches(image, label, (8, 8, 8), num_samples=400, positive_fraction=1.0, seed=0)
    with_node = sum(int((lab == 2).any()) for _, lab in patches)
    assert 160 <= with_node <= 240  # expected 200 of 400
    assert all(((lab == 1) | (lab == 2)).any() for _, lab in patches)
    assert class_ratios(sampling_indices(label), 0.6) == pytest.approx([0.4, 0.3, 0.3])
    no_nodes = np.where(label == 2, 0, label)
    assert class_ratios(sampling_indices(no_nodes), 0.6) == pytest.approx([0.4, 0.6, 0.0])
    assert class_ratios(sampling_indices(np.zeros_like(label)), 0.6) == pytest.approx([1.0, 0.0, 0.0])
