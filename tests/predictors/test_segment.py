"""Task 1 inference (hecktor.segment): geometry of the output, fold and TTA averaging, bundle loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from hecktor.bundle import write_bundle
from hecktor.errors import BundleError
from hecktor.networks import build_network
from hecktor.plan import BoxPlan, RegionPlan
from hecktor.preprocessing import preprocess_region
from hecktor.segment import TTA_FLIPS, Segmenter, sliding_window_probabilities
from helpers.phantoms import head_phantom, physical_coordinates

# 4 mm voxels: the region is 30 x 30 x 40 voxels, smaller than the window along x and y (MONAI pads and crops back).
PLAN = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), region_mm_xyz=(120.0, 120.0, 160.0), brain_min_volume_ml=50.0,
            patch_size_zyx=(32, 32, 32))
TINY_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


class CtThresholdNetwork(nn.Module):
    """An oracle: GTVp wherever the normalised CT lies above 50 HU (the phantom's tumour is 60 HU, the body 40 HU,
    the brain 30 HU), so the predicted mask must reproduce the painted tumour in physical space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threshold = (50.0 + 1000.0) / 2000.0  # 50 HU in the plan's [-1000, 1000] window
        tumour = 2000.0 * (x[:, :1] - threshold)
        return torch.cat([torch.zeros_like(tumour), tumour, torch.full_like(tumour, -100.0)], dim=1)


def random_conv(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv3d(2, 3, kernel_size=3, padding=1).eval()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("direction", ["flipped_z", "flipped_xy", "oblique"])
def test_mask_lies_on_the_ct_grid_and_in_the_right_place(direction):
    ct, pet, label, truth = head_phantom(direction_ct=direction, direction_pet="identity")
    segmenter = Segmenter([CtThresholdNetwork()], PLAN, device="cpu")
    mask = segmenter.predict(ct, pet, tta=False)
    assert mask.GetSize() == ct.GetSize()
    assert mask.GetSpacing() == ct.GetSpacing()
    assert mask.GetOrigin() == ct.GetOrigin()
    assert mask.GetDirection() == ct.GetDirection()
    assert mask.GetPixelID() == sitk.sitkUInt8
    predicted = sitk.GetArrayFromImage(mask)
    assert set(np.unique(predicted)) == {0, 1}
    # The painted tumour sphere comes back (through 4 mm resampling there and back); its centre is where it was.
    assert dice(predicted == 1, sitk.GetArrayFromImage(label) == 1) > 0.8
    centre = physical_coordinates(ct)[predicted == 1].mean(axis=0)
    np.testing.assert_allclose(centre, truth["tumour"], atol=3.0)
    report = segmenter.last_report
    assert report.folds == [0] and report.tta is False and report.passes == 1 and report.dropped == []
    timings = report.timings
    assert all(timings[k] >= 0 for k in ("preprocess_s", "network_s", "postprocess_s"))
    assert timings["total_s"] == pytest.approx(
        timings["preprocess_s"] + timings["network_s"] + timings["postprocess_s"], abs=0.05)


def test_folds_and_flips_are_averaged_softmax():
    ct, pet, _, _ = head_phantom()
    region = preprocess_region(ct, pet, PLAN)
    networks = [random_conv(1), random_conv(2)]
    segmenter = Segmenter(networks, PLAN, device="cpu")
    both = segmenter.predict_probabilities(region.image, tta=False)
    first = segmenter.predict_probabilities(region.image, folds=[0], tta=False)
    second = segmenter.predict_probabilities(region.image, folds=[1], tta=False)
    assert both.shape == (3, *region.grid.shape_zyx) and both.dtype == np.float32
    np.testing.assert_allclose(both, (first + second) / 2, atol=1e-6)
    np.testing.assert_allclose(both.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(first - second).max() > 0.05  # the two folds really differ

    # Flip TTA: each mirrored pass is mirrored back before averaging.
    image = torch.from_numpy(region.image)[None]
    expected = torch.zeros_like(torch.as_tensor(first))
    for dims in TTA_FLIPS:
        flipped = torch.flip(image, dims) if dims else image
        p = sliding_window_probabilities([networks[0]], flipped, PLAN.patch_size_zyx, overlap=0.5)
        expected += torch.flip(p[None], dims)[0] if dims else p
    with_tta = segmenter.predict_probabilities(region.image, folds=[0], tta=True)
    np.testing.assert_allclose(with_tta, (expected / len(TTA_FLIPS)).numpy(), atol=1e-6)
    assert np.abs(with_tta - first).max() > 1e-3  # a conv net is not mirror-symmetric: TTA changes the result

    with pytest.raises(ValueError, match="distinct indices in 0..1"):
        segmenter.predict_probabilities(region.image, folds=[2])


def tiny_bundle(tmp_path, n_folds=2):
    networks = []
    for k in range(n_folds):
        torch.manual_seed(k)
        networks.append(build_network("unet", TINY_UNET))
    model = {"network": "unet", "network_config": TINY_UNET, "folds": [f"fold_{k}.pt" for k in range(n_folds)]}
    path = write_bundle(tmp_path / "bundle", task=1, plan=PLAN, model=model,
                        state_dicts={f"fold_{k}.pt": n.state_dict() for k, n in enumerate(networks)})
    return path, networks


def test_bundle_round_trip_gives_identical_predictions(tmp_path):
    path, networks = tiny_bundle(tmp_path)
    loaded = Segmenter.from_bundle(path, device="cpu")
    in_memory = Segmenter(networks, PLAN, device="cpu")
    assert loaded.plan == PLAN and loaded.fold_names == ["fold_0.pt", "fold_1.pt"]
    ct, pet, _, _ = head_phantom(direction_ct="oblique")
    a = loaded.predict(ct, pet, tta=True, overlap=0.25)
    b = in_memory.predict(ct, pet, tta=True, overlap=0.25)
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    region = preprocess_region(ct, pet, PLAN)
    np.testing.assert_array_equal(loaded.predict_probabilities(region.image),
                                  in_memory.predict_probabilities(region.image))


def test_tampered_or_inconsistent_bundles_are_refused(tmp_path):
    path, networks = tiny_bundle(tmp_path / "a")
    weights = path / "fold_1.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        Segmenter.from_bundle(path)

    # A correctly signed bundle whose model.json describes another network than its weights.
    wider = {**TINY_UNET, "channels": [8, 16, 32]}
    model = {"network": "unet", "network_config": wider, "folds": ["fold_0.pt"]}
    path = write_bundle(tmp_path / "b", task=1, plan=PLAN, model=model,
                        state_dicts={"fold_0.pt": networks[0].state_dict()})
    with pytest.raises(BundleError, match="fold_0.pt does not fit network 'unet'"):
        Segmenter.from_bundle(path)

    path = write_bundle(tmp_path / "c", task=1, plan=PLAN, model={"network": "unet", "network_config": TINY_UNET,
                                                                  "folds": []})
    with pytest.raises(BundleError, match="lists no fold weight files"):
        Segmenter.from_bundle(path)

    path = write_bundle(tmp_path / "d", task=2, plan=BoxPlan(), model={"network": "unet"})
    with pytest.raises(BundleError, match="Task 2 bundle, but Task 1"):
        Segmenter.from_bundle(path)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["task"] == 2
