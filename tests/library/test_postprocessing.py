"""Postprocessing chosen by cross-validation (hecktor.postprocessing): the component steps in physical units, the
choice on out-of-fold predictions (kept when it helps, refused when it hurts), and Segmenter applying a bundle's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hecktor.bundle import write_bundle
from hecktor.errors import BundleError
from hecktor.metrics import dice
from hecktor.plan import RegionPlan
from hecktor.postprocessing import (Postprocessing, choose_postprocessing, keep_largest_component,
                                    remove_small_components)
from hecktor.segment import Segmenter
from helpers.phantoms import head_phantom

SPACING_XYZ = (2.0, 2.0, 2.5)  # 10 mm^3 = 0.01 ml per voxel


def image(array: np.ndarray) -> sitk.Image:
    result = sitk.GetImageFromArray(array.astype(np.uint8))
    result.SetSpacing(SPACING_XYZ)
    result.SetOrigin((-20.0, 5.0, 100.0))
    return result


def cube(array: np.ndarray, corner: tuple[int, int, int], side: int, value: int) -> None:
    z, y, x = corner
    array[z:z + side, y:y + side, x:x + side] = value


def case(seed: int, spurious_gtvp: bool, spurious_gtvn: bool, small_true_nodes: bool = False):
    """(prediction, truth) on a 40^3 grid: a 10-voxel GTVp cube and two GTVn cubes, predicted one voxel off; the
    prediction may carry a far-away 3^3 GTVp speck (0.27 ml) and a 2^3 GTVn speck (0.08 ml)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((40, 40, 40), np.uint8)
    shift = int(rng.integers(0, 2))
    node = 2 if small_true_nodes else 5  # 0.08 ml or 1.25 ml
    cube(truth, (5, 5, 5), 10, 1)
    cube(truth, (25, 5, 25), node, 2)
    cube(truth, (25, 25, 5), node, 2)
    prediction = np.zeros_like(truth)
    cube(prediction, (5 + shift, 5, 5), 10, 1)
    cube(prediction, (25, 5, 25 + shift), node, 2)
    cube(prediction, (25, 25, 5), node, 2)
    if spurious_gtvp:
        cube(prediction, (34, 34, 34), 3, 1)
    if spurious_gtvn:
        cube(prediction, (5, 30, 30), 2, 2)
    return image(prediction), image(truth)


def test_component_steps_work_in_physical_units():
    labels = np.zeros((20, 20, 20), np.uint8)
    cube(labels, (0, 0, 0), 4, 1)  # 64 voxels
    cube(labels, (10, 10, 10), 2, 1)  # 8 voxels
    cube(labels, (0, 10, 0), 3, 2)  # 27 voxels = 0.27 ml at 0.01 ml per voxel
    cube(labels, (15, 0, 15), 2, 2)  # 8 voxels = 0.08 ml
    labels[19, 19, 19] = 2  # a corner neighbour of nothing: its own component
    kept = keep_largest_component(labels, 1)
    assert np.count_nonzero(kept == 1) == 64 and np.array_equal(kept == 2, labels == 2)
    spacing = SPACING_XYZ[::-1]
    cleaned = remove_small_components(labels, 2, 0.1, spacing)
    assert np.count_nonzero(cleaned == 2) == 27 and np.array_equal(cleaned == 1, labels == 1)
    assert np.count_nonzero(remove_small_components(labels, 2, 0.08, spacing) == 2) == 27 + 8  # exactly V stays
    # 26-connectivity: two voxels touching at a corner are one component.
    diagonal = np.zeros((4, 4, 4), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 2
    assert np.count_nonzero(remove_small_components(diagonal, 2, 0.015, (2.0, 2.0, 2.5)) == 2) == 2
    assert np.array_equal(keep_largest_component(np.zeros((3, 3, 3), np.uint8), 1), np.zeros((3, 3, 3)))


def test_spurious_far_away_components_are_removed_by_the_chosen_steps():
    cases = [case(seed, spurious_gtvp=seed % 2 == 0, spurious_gtvn=seed % 3 != 2) for seed in range(6)]
    chosen, report = choose_postprocessing(cases, candidates_ml=(0.05, 0.1, 1.0, 2.0))
    assert chosen.gtvp_largest_component is True
    assert report["GTVp"]["largest_component"] > report["GTVp"]["raw"]
    # 0.05 ml keeps the 0.08 ml specks, 0.1 removes them and keeps the 1.25 ml nodes, 2.0 removes the nodes too.
    assert chosen.gtvn_min_volume_ml == 0.1
    scores = {c["min_volume_ml"]: c for c in report["GTVn"]["candidates"]}
    assert scores[0.1]["f1_agg"] == 1.0 and report["GTVn"]["raw"]["f1_agg"] < 1.0
    assert scores[2.0]["dsc_agg"] == 0.0 and scores[0.05]["score"] == report["GTVn"]["raw"]["score"]

    prediction, truth = case(7, spurious_gtvp=True, spurious_gtvn=True)
    cleaned = chosen.apply(prediction)
    before, after = sitk.GetArrayFromImage(prediction), sitk.GetArrayFromImage(cleaned)
    assert after[34:, 34:, 34:].max() == 0 and after[5:7, 30:32, 30:32].max() == 0  # the specks are gone
    assert np.array_equal(after[before != after], np.zeros(27 + 8))  # and nothing else changed
    assert dice(after, sitk.GetArrayFromImage(truth), 1) > dice(before, sitk.GetArrayFromImage(truth), 1)
    assert cleaned.GetSpacing() == prediction.GetSpacing() and cleaned.GetOrigin() == prediction.GetOrigin()


def test_steps_that_would_hurt_are_not_chosen():
    # The true GTVp has two parts, both predicted, and the true nodes are small (0.08 ml): removal can only hurt.
    cases = []
    for seed in range(4):
        prediction, truth = case(seed, spurious_gtvp=False, spurious_gtvn=False, small_true_nodes=True)
        p, t = sitk.GetArrayFromImage(prediction), sitk.GetArrayFromImage(truth)
        cube(p, (30, 30, 30), 4, 1)
        cube(t, (30, 30, 30), 4, 1)
        cases.append((image(p), image(t), f"case{seed}"))
    chosen, report = choose_postprocessing(cases, candidates_ml=(0.05, 0.1, 0.5))
    assert chosen == Postprocessing() and chosen.is_identity
    assert report["GTVp"]["largest_component"] < report["GTVp"]["raw"] and report["GTVp"]["chosen"] is False
    assert report["GTVn"]["chosen_min_volume_ml"] == 0.0
    assert all(c["score"] < report["GTVn"]["raw"]["score"] for c in report["GTVn"]["candidates"][1:])
    # No GTVn anywhere: nothing to choose from, the raw predictions stay.
    empty = [(image(np.zeros((8, 8, 8))), image(np.zeros((8, 8, 8))))]
    assert choose_postprocessing(empty)[0] == Postprocessing()


def test_postprocessing_round_trips_and_bad_records_are_refused():
    step = Postprocessing(gtvp_largest_component=True, gtvn_min_volume_ml=0.5)
    assert Postprocessing.from_dict(json.loads(json.dumps(step.to_dict()))) == step
    assert Postprocessing.from_dict(None) == Postprocessing()
    with pytest.raises(BundleError, match="model.json: unknown postprocessing setting"):
        Postprocessing.from_dict({"largest": True}, source="model.json")
    with pytest.raises(BundleError, match=">= 0"):
        Postprocessing.from_dict({"gtvn_min_volume_ml": -1})


class TwoBlobNetwork(torch.nn.Module):
    """GTVp wherever the CT is the phantom's tumour (60 HU) or brain (30 HU): two components, the brain larger."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x[:, :1] * 2000.0 - 1000.0  # the plan's [-1000, 1000] HU window back to HU
        blob = ((hu - 60.0).abs() < 8.0) | ((hu - 30.0).abs() < 4.0)
        gtvp = torch.where(blob, 10.0, -10.0)
        return torch.cat([torch.zeros_like(gtvp), gtvp, torch.full_like(gtvp, -100.0)], dim=1)


def test_segmenter_applies_the_bundles_postprocessing(tmp_path):
    plan = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), region_mm_xyz=(120.0, 120.0, 160.0), brain_min_volume_ml=50.0,
                      patch_size_zyx=(32, 32, 32))
    network = TwoBlobNetwork()
    step = Postprocessing(gtvp_largest_component=True, gtvn_min_volume_ml=2.0)
    model = {"network": "unet", "network_config": {}, "folds": ["fold_0.pt"], "postprocessing": step.to_dict()}
    ct, pet, _, _ = head_phantom()
    raw = Segmenter([network], plan, device="cpu").predict(ct, pet, tta=False)
    processed = Segmenter([network], plan, device="cpu", postprocessing=step).predict(ct, pet, tta=False)
    raw_array, processed_array = sitk.GetArrayFromImage(raw), sitk.GetArrayFromImage(processed)
    assert np.array_equal(processed_array, sitk.GetArrayFromImage(step.apply(raw)))
    # Of the two GTVp blobs, the largest (the brain) stays and the tumour goes.
    assert np.count_nonzero(processed_array == 1) < np.count_nonzero(raw_array == 1)
    assert np.count_nonzero(processed_array == 1) > 0.5 * np.count_nonzero(raw_array == 1)
    # From a bundle: model.json's postprocessing is what the Segmenter applies.
    from hecktor.networks import build_network

    unet = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
    torch.manual_seed(0)
    weights = build_network("unet", unet).state_dict()
    model["network_config"] = unet
    path = write_bundle(tmp_path / "bundle", task=1, plan=plan, model=model, state_dicts={"fold_0.pt": weights})
    assert Segmenter.from_bundle(path, device="cpu").postprocessing == step
    model["postprocessing"] = {"gtvn_min_volume": 1}
    path = write_bundle(tmp_path / "bad", task=1, plan=plan, model=model, state_dicts={"fold_0.pt": weights})
    with pytest.raises(BundleError, match="unknown postprocessing setting"):
        Segmenter.from_bundle(path, device="cpu")
