"""PET biomarkers of a segmentation (hecktor.biomarkers) on phantoms with known values: a sphere of known radius and
uptake (volume, SUVmax, SUVmean, TLG), a quadratic uptake peak (SUVpeak against its closed form), two nodes at known
distances, PET and mask on different grids (flipped, coarser, shifted), the no-tumour values, the feature scaling and
the tumour-centred crop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.biomarkers import (
    BIOMARKER_NAMES,
    LOG_FEATURES,
    NO_TUMOUR_VALUE,
    BiomarkerScaler,
    TumourCrop,
    compute_biomarkers,
    tumour_centre,
    tumour_crop_input,
)
from hecktor.errors import BundleError
from hecktor.geometry import Grid
from hecktor.plan import BoxPlan

PEAK_RADIUS = (3000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # 1 ml sphere: 6.20 mm


def _image(size_xyz, spacing_xyz, origin_xyz=(0.0, 0.0, 0.0), direction=None, pixel=sitk.sitkFloat32):
    image = sitk.Image([int(s) for s in size_xyz], pixel)
    image.SetSpacing([float(s) for s in spacing_xyz])
    image.SetOrigin([float(o) for o in origin_xyz])
    if direction is not None:
        image.SetDirection(direction)
    return image


def _points(image: sitk.Image) -> np.ndarray:
    """Physical (x, y, z) of every voxel centre, array shape (z, y, x, 3)."""
    grid = Grid.from_image(image)
    z, y, x = np.meshgrid(*(np.arange(n) for n in grid.shape_zyx), indexing="ij")
    return grid.index_to_physical(np.stack([x, y, z], axis=-1))


def _fill(image: sitk.Image, function) -> sitk.Image:
    values = function(_points(image)).astype(sitk.GetArrayViewFromImage(image).dtype)
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(image)
    return out


def _spheres_mask(reference: sitk.Image, spheres) -> sitk.Image:
    """Label map on ``reference``'s grid: ``spheres`` is [(centre_xyz, radius_mm, label), ...]."""
    def paint(points):
        labels = np.zeros(points.shape[:-1], dtype=np.uint8)
        for centre, radius, label in spheres:
            labels[np.linalg.norm(points - np.asarray(centre), axis=-1) <= radius] = label
        return labels
    return _fill(_image(reference.GetSize(), reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection(),
                        sitk.sitkUInt8), paint)


CT_GRID = dict(size_xyz=(80, 80, 80), spacing_xyz=(1.0, 1.0, 1.0), origin_xyz=(-40.0, -40.0, -40.0))


def test_uniform_sphere_volume_suv_and_tlg():
    """A 10 mm sphere (4.189 ml) of SUV 8 in a background of SUV 1: the PET's hot sphere is wider (14 mm) so every
    mask voxel reads 8 after interpolation from the PET's own 2 mm grid."""
    reference = _image(**CT_GRID)
    mask = _spheres_mask(reference, [((0.0, 0.0, 0.0), 10.0, 1)])
    pet = _fill(_image((40, 40, 40), (2.0, 2.0, 2.0), (-39.0, -39.0, -39.0)),
                lambda p: np.where(np.linalg.norm(p, axis=-1) <= 14.0, 8.0, 1.0))
    result = compute_biomarkers(mask, pet)
    v = result.values
    true_volume = 4.0 / 3.0 * math.pi * 10.0**3 / 1000.0
    assert v["gtvp_volume_ml"] == pytest.approx(true_volume, rel=0.02)  # voxelised sphere at 1 mm: within 2 %
    assert v["gtvp_suv_max"] == pytest.approx(8.0, abs=1e-5)
    assert v["gtvp_suv_mean"] == pytest.approx(8.0, abs=1e-5)
    assert v["gtvp_suv_peak"] == pytest.approx(8.0, abs=1e-5)  # the 1 ml sphere lies inside the hot sphere
    assert v["gtvp_tlg"] == pytest.approx(8.0 * v["gtvp_volume_ml"], rel=1e-6)
    assert v["gtvp_tlg"] == pytest.approx(8.0 * true_volume, rel=0.02)
    assert result.tumour_found and result.warnings == ()
    assert v["n_nodes"] == 0 and v["gtvn_volume_ml"] == NO_TUMOUR_VALUE and v["node_distance_mm"] == NO_TUMOUR_VALUE


def test_suv_peak_is_the_mean_over_a_1_ml_sphere_at_the_hottest_voxel():
    """SUV = 10 - 0.1 r^2 around the centre: the mean over a ball of radius R is 10 - 0.06 R^2, 7.69 for the 1 ml
    sphere (R = 6.20 mm) and 1.36 for the 12 mm lesion."""
    reference = _image(**CT_GRID)
    mask = _spheres_mask(reference, [((0.0, 0.0, 0.0), 12.0, 1)])
    pet = _fill(_image(**CT_GRID), lambda p: 10.0 - 0.1 * np.sum(p**2, axis=-1))
    v = compute_biomarkers(mask, pet).values
    assert v["gtvp_suv_max"] == pytest.approx(10.0, abs=1e-5)  # the centre is a voxel centre
    assert v["gtvp_suv_peak"] == pytest.approx(10.0 - 0.06 * PEAK_RADIUS**2, abs=0.05)  # voxelised ball at 1 mm
    # SUVmean: exactly the mean over the mask's voxel centres (PET and mask share the grid), near the closed form.
    voxels = _points(reference)[sitk.GetArrayViewFromImage(mask) == 1]
    assert v["gtvp_suv_mean"] == pytest.approx(np.mean(10.0 - 0.1 * np.sum(voxels**2, axis=-1)), abs=1e-4)
    assert v["gtvp_suv_mean"] == pytest.approx(10.0 - 0.06 * 12.0**2, abs=0.1)
    assert v["gtvp_suv_peak"] < v["gtvp_suv_max"]


def test_two_nodes_at_known_distances_and_a_stray_voxel():
    reference = _image(**CT_GRID)
    spheres = [((0.0, 0.0, 0.0), 8.0, 1),          # primary at the origin
               ((30.0, 0.0, 0.0), 5.0, 2),         # node 30 mm away, 0.524 ml
               ((0.0, -20.0, -25.0), 7.0, 2)]      # node sqrt(20^2 + 25^2) = 32.02 mm away, 1.437 ml
    mask = _spheres_mask(reference, spheres)
    array = sitk.GetArrayFromImage(mask)
    array[70, 70, 70] = 2  # one stray GTVn voxel (1 microlitre): not a node
    stray = sitk.GetImageFromArray(array)
    stray.CopyInformation(mask)
    pet = _fill(_image(**CT_GRID), lambda p: np.full(p.shape[:-1], 3.0))
    v = compute_biomarkers(stray, pet).values
    assert v["n_nodes"] == 2
    assert v["node_distance_mm"] == pytest.approx(math.hypot(20.0, 25.0), abs=0.1)
    assert v["largest_node_ml"] == pytest.approx(4 / 3 * math.pi * 7.0**3 / 1000.0, rel=0.03)
    nodes_ml = 4 / 3 * math.pi * (5.0**3 + 7.0**3) / 1000.0
    assert v["gtvn_volume_ml"] == pytest.approx(nodes_ml + 0.001, rel=0.03)  # the stray voxel counts in the volume
    assert v["gtvn_suv_mean"] == pytest.approx(3.0) and v["gtvn_tlg"] == pytest.approx(3.0 * v["gtvn_volume_ml"])
    # Without the filter the stray voxel (at 30, 30, 30) is a third node, 52 mm from the primary: the farthest.
    loose = compute_biomarkers(stray, pet, min_node_ml=0.0).values
    assert loose["n_nodes"] == 3
    assert loose["node_distance_mm"] == pytest.approx(math.sqrt(3) * 30.0, abs=0.01)


def test_grids_do_not_matter_flipped_mask_and_coarse_shifted_pet():
    """The same physical phantom on a flipped, anisotropic CT grid and on a coarse, shifted PET grid gives the same
    biomarkers (within the voxelisation's tolerance)."""
    flipped = _image((60, 60, 40), (1.2, 1.2, 2.0), (35.4, 35.4, -39.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    spheres = [((2.0, -3.0, 1.0), 11.0, 1), ((25.0, 10.0, -15.0), 6.0, 2)]
    mask = _spheres_mask(flipped, spheres)
    pet = _fill(_image((22, 22, 22), (4.0, 4.0, 4.0), (-41.3, -42.1, -40.7)),
                lambda p: np.where(np.linalg.norm(p - np.array([2.0, -3.0, 1.0]), axis=-1) <= 20.0, 6.0, 1.0))
    v = compute_biomarkers(mask, pet).values
    assert v["gtvp_volume_ml"] == pytest.approx(4 / 3 * math.pi * 11.0**3 / 1000.0, rel=0.03)
    assert v["gtvn_volume_ml"] == pytest.approx(4 / 3 * math.pi * 6.0**3 / 1000.0, rel=0.06)
    assert v["gtvp_suv_max"] == pytest.approx(6.0, abs=1e-4) and v["gtvp_suv_mean"] == pytest.approx(6.0, abs=0.01)
    assert v["node_distance_mm"] == pytest.approx(np.linalg.norm([23.0, 13.0, -16.0]), abs=0.5)
    assert v["n_nodes"] == 1


@pytest.mark.parametrize("mask", [None, "empty", "nodes only"])
def test_no_tumour_gives_the_documented_values_with_a_warning(mask, caplog):
    reference = _image(**CT_GRID)
    pet = _fill(_image(**CT_GRID), lambda p: np.full(p.shape[:-1], 2.0))
    if mask == "empty":
        mask = _spheres_mask(reference, [])
    elif mask == "nodes only":
        mask = _spheres_mask(reference, [((10.0, 0.0, 0.0), 6.0, 2)])
    result = compute_biomarkers(mask, pet)
    assert not result.tumour_found and len(result.warnings) == 1 and "no-tumour value" in result.warnings[0]
    assert all(math.isfinite(x) for x in result.vector())
    primary = [name for name in BIOMARKER_NAMES if name.startswith("gtvp_")] + ["node_distance_mm"]
    assert all(result.values[name] == NO_TUMOUR_VALUE for name in primary)
    if mask is not None and result.values["gtvn_volume_ml"] > 0:  # nodes only: the nodes are still measured
        assert result.values["n_nodes"] == 1 and result.values["gtvn_suv_max"] == pytest.approx(2.0)
    else:
        assert np.all(result.vector() == NO_TUMOUR_VALUE)
    # returned, not logged: the caller reports it once (a container printed it twice when it was also logged)
    assert not any("no-tumour value" in record.getMessage() for record in caplog.records)


def test_scaler_logs_heavy_tailed_features_and_round_trips():
    rng = np.random.default_rng(0)
    rows = [{name: float(rng.uniform(0, 50)) for name in BIOMARKER_NAMES} for _ in range(30)]
    rows[0] = {name: NO_TUMOUR_VALUE for name in BIOMARKER_NAMES}
    scaler = BiomarkerScaler().fit(rows)
    X = scaler.transform(rows)
    assert X.shape == (30, len(BIOMARKER_NAMES)) and X.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(X.std(axis=0), 1.0, atol=1e-4)
    column = BIOMARKER_NAMES.index("gtvp_volume_ml")
    raw = np.log1p([r["gtvp_volume_ml"] for r in rows])
    np.testing.assert_allclose(X[:, column], (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-5)
    linear = BIOMARKER_NAMES.index("gtvp_suv_max")
    assert "gtvp_suv_max" not in LOG_FEATURES
    values = np.asarray([r["gtvp_suv_max"] for r in rows])
    np.testing.assert_allclose(X[:, linear], (values - values.mean()) / values.std(), rtol=1e-4, atol=1e-5)
    again = BiomarkerScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.transform(rows), X)
    with pytest.raises(BundleError, match="finite numbers"):
        BiomarkerScaler.from_dict({**scaler.to_dict(), "scale": [0.0] * len(BIOMARKER_NAMES)})
    with pytest.raises(ValueError, match="subset"):
        BiomarkerScaler(names=("tumour_colour",))


def test_tumour_crop_is_centred_on_the_primary_with_the_mask_channel():
    reference = _image(**CT_GRID)
    mask = _spheres_mask(reference, [((5.0, -4.0, 3.0), 6.0, 1), ((-20.0, 10.0, 0.0), 4.0, 2)])
    ct = _fill(_image(**CT_GRID), lambda p: np.full(p.shape[:-1], 40.0))
    pet = _fill(_image(**CT_GRID), lambda p: 1.0 + (np.linalg.norm(p - [5.0, -4.0, 3.0], axis=-1) < 6.0))
    np.testing.assert_allclose(tumour_centre(mask), [5.0, -4.0, 3.0], atol=1e-6)
    crop = TumourCrop(size_mm=64.0, shape_zyx=(32, 32, 32))
    image = tumour_crop_input(ct, pet, mask, crop, BoxPlan())
    assert image.shape == (3, 32, 32, 32) and image.dtype == np.float32
    assert set(np.unique(image[2])) == {0.0, 0.5, 1.0}
    # The primary sits at the cube's centre (2 mm voxels): the centre voxels are primary, the PET is hottest there.
    assert image[2, 15:17, 15:17, 15:17].min() == 1.0
    assert np.unravel_index(np.argmax(image[1]), image[1].shape) == pytest.approx((16, 16, 16), abs=3)
    # No tumour: centred on the fallback, empty mask channel.
    empty = _spheres_mask(reference, [])
    assert tumour_centre(empty) is None
    blank = tumour_crop_input(ct, pet, empty, crop, BoxPlan(), fallback_centre_xyz=(0.0, 0.0, 0.0))
    assert np.all(blank[2] == 0.0)
    assert TumourCrop.from_dict(crop.to_dict()) == crop
