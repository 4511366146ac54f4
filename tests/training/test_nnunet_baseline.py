"""The nnU-Net baseline's conversion to nnU-Net's raw layout and its split (no nnunetv2 needed), and, where nnunetv2
is installed, its forced configuration and an end-to-end smoke run."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.model_selection import KFold

from hecktor.datasets import list_training_cases
from hecktor.folds import kfold_split
from hecktor.synthetic import generate_cohort
from helpers.paths import REPO
from helpers.phantoms import DIRECTIONS, blank_image, physical_coordinates


def _load():
    spec = importlib.util.spec_from_file_location("nnunet_baseline", REPO / "benchmarks" / "nnunet_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb = _load()


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_dataset_json_declares_ct_pet_and_the_three_labels():
    assert nb.dataset_json(40) == {
        "name": "Dataset501_HecktorSynthetic",
        "description": nb.dataset_json(40)["description"],
        "channel_names": {"0": "CT", "1": "PET"},  # "CT" selects nnU-Net's CT normalisation, "PET" z-score
        "labels": {"background": 0, "GTVp": 1, "GTVn": 2},
        "numTraining": 40,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
    }


@pytest.mark.parametrize("direction", ["identity", "oblique"])
def test_pet_on_ct_grid_reads_a_linear_pet_exactly_and_zero_outside(direction):
    ct = blank_image((30, 28, 26), (4.0, 4.0, 5.0), (0, 0, 0))
    pet = blank_image((16, 16, 16), (6.0, 6.0, 6.0), (5, -3, 4), DIRECTIONS[direction])
    # PET = 2 + 0.1 x - 0.05 y + 0.2 z (mm): linear interpolation reproduces a linear field exactly.
    xyz = physical_coordinates(pet)
    field = sitk.GetImageFromArray((2 + xyz @ np.array([0.1, -0.05, 0.2])).astype(np.float32))
    field.CopyInformation(pet)

    out = nb.pet_on_ct_grid(ct, field)

    _same_grid(out, ct)
    assert out.GetPixelID() == sitk.sitkFloat32
    values, points = sitk.GetArrayFromImage(out), physical_coordinates(ct)
    index = np.stack([np.asarray(field.TransformPhysicalPointToContinuousIndex(p.tolist()))
                      for p in points.reshape(-1, 3)]).reshape(points.shape)
    inside = np.all((index > 0.01) & (index < np.asarray(pet.GetSize()) - 1.01), axis=-1)
    outside = np.any((index < -1.0) | (index > np.asarray(pet.GetSize())), axis=-1)
    assert inside.sum() > 1000 and outside.sum() > 1000
    expected = 2 + points @ np.array([0.1, -0.05, 0.2])
    np.testing.assert_allclose(values[inside], expected[inside], atol=1e-3)
    assert np.all(values[outside] == 0.0)


def test_pet_on_ct_grid_keeps_a_constant_region_constant():
    ct = blank_image((20, 20, 20), (4.0, 4.0, 4.0), (0, 0, 0), DIRECTIONS["flipped_xy"])
    pet = sitk.Add(blank_image((10, 10, 10), (5.0, 5.0, 5.0), (0, 0, 0)), 7.5)  # PET centres within +-22.5 mm
    values = sitk.GetArrayFromImage(nb.pet_on_ct_grid(ct, pet))
    np.testing.assert_allclose(values[5:15, 5:15, 5:15], 7.5, atol=1e-5)  # CT centres within +-18 mm
    assert np.all(values[:, :, :3] == 0.0) and np.all(values[:, :, -3:] == 0.0)  # |x| >= 30 mm: beyond the PET


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    generate_cohort(root / "train", 6, seed=3, size="small")
    generate_cohort(root / "held_out", 2, seed=1003, size="small")
    folder = nb.convert_to_raw(root / "train", root / "held_out", root / "raw")
    return root, folder


def test_conversion_writes_nnunet_raw_layout_on_the_ct_grid(converted):
    root, folder = converted
    assert folder == root / "raw" / "Dataset501_HecktorSynthetic"
    assert json.loads((folder / "dataset.json").read_text()) == nb.dataset_json(6)
    train = list_training_cases(root / "train", 1)
    held_out = list_training_cases(root / "held_out", 1)
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(
        f"{c.patient_id}_{k:04d}.nii.gz" for c in train for k in (0, 1))
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == sorted(f"{c.patient_id}.nii.gz" for c in train)
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == sorted(
        f"{c.patient_id}_{k:04d}.nii.gz" for c in held_out for k in (0, 1))
    for case, images in [(train[0], "imagesTr"), (held_out[-1], "imagesTs")]:
        ct, pet, label = case.read()
        ct0 = sitk.ReadImage(str(folder / images / f"{case.patient_id}_0000.nii.gz"))
        pet1 = sitk.ReadImage(str(folder / images / f"{case.patient_id}_0001.nii.gz"))
        _same_grid(ct0, ct)
        _same_grid(pet1, ct)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct0), sitk.GetArrayFromImage(ct))
        resampled = sitk.Resample(pet, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        np.testing.assert_allclose(sitk.GetArrayFromImage(pet1), sitk.GetArrayFromImage(resampled), atol=1e-5)
        # The PET is not blank on the CT grid: the synthetic PET covers most of the CT.
        assert (sitk.GetArrayFromImage(pet1) > 0).mean() > 0.5
    ct, _, label = train[0].read()
    written = sitk.ReadImage(str(folder / "labelsTr" / f"{train[0].patient_id}.nii.gz"))
    _same_grid(written, ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(label))
    assert set(np.unique(sitk.GetArrayFromImage(written))) <= {0, 1, 2}


def test_conversion_rejects_a_label_off_the_ct_grid(tmp_path):
    generate_cohort(tmp_path / "train", 1, seed=5, size="small")
    case = list_training_cases(tmp_path / "train", 1)[0]
    label = sitk.ReadImage(str(case.label_path))
    label.SetOrigin([o + 3.0 for o in label.GetOrigin()])
    sitk.WriteImage(label, str(case.label_path))
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    with pytest.raises(nb.InputError, match="not on the CT grid"):
        nb.write_case(case, tmp_path / "img", tmp_path / "lab")


def test_splits_final_is_our_seeded_five_fold_split(tmp_path):
    ids = [f"CASE-{i:03d}" for i in range(40)]
    path = nb.write_splits(tmp_path / "pre", list(reversed(ids)))
    splits = json.loads(path.read_text())
    # Reference: KFold(5, shuffle, seed 0) over the sorted ids, as hecktor.folds.kfold_split and the table use it.
    reference = list(KFold(n_splits=5, shuffle=True, random_state=0).split(np.zeros(40)))
    assert len(splits) == 5
    for fold, (train, val) in zip(splits, reference):
        assert fold["train"] == [ids[i] for i in sorted(train)]
        assert fold["val"] == [ids[i] for i in sorted(val)]
    assert (len(splits[0]["train"]), len(splits[0]["val"])) == (32, 8)
    assert sorted(sum((f["val"] for f in splits), [])) == ids
    train0, val0 = kfold_split(ids, 5, 0)[0]
    assert splits[0] == {"train": [ids[i] for i in train0], "val": [ids[i] for i in val0]}


def test_forced_configuration_uses_our_spacing_and_patch():
    pytest.importorskip("nnunetv2")
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
                            "kernel_sizes": [[3, 3, 3]] * 5, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4,
                            "n_conv_per_stage": [2] * 5, "n_conv_per_stage_decoder": [2] * 4, "conv_bias": True},
            "_kw_requires_import": ["conv_op"]}
    plans = {"configurations": {"3d_fullres": {"spacing": [5.0, 4.0, 4.0], "patch_size": [80, 64, 64],
                                               "batch_size": 2, "architecture": arch}}}
    name = nb.forced_configuration(plans, 4.0, 32)
    assert name == "3d_fullres_4mm_p32"
    config = plans["configurations"][name]
    assert config["inherits_from"] == "3d_fullres"
    assert config["spacing"] == [4.0] * 3 and config["patch_size"] == [32] * 3
    kwargs = config["architecture"]["arch_kwargs"]
    # 32 -> 16 -> 8 -> 4: nnU-Net stops pooling at a 4-voxel feature map.
    assert kwargs["n_stages"] == 4
    assert kwargs["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kwargs["features_per_stage"] == [32, 64, 128, 256]
    assert kwargs["n_conv_per_stage_decoder"] == [2, 2, 2]
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_stages"] == 5  # untouched


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path, capsys):
    pytest.importorskip("nnunetv2")
    assert nb.main(["--work", str(tmp_path), "--smoke", "--force-spacing", "4", "--force-patch", "32"]) == 0
    row = json.loads((tmp_path / "nnunet_row.json").read_text())
    assert row["plan"]["trained"]["patch_size_zyx"] == [32, 32, 32]
    assert row["summary"]["n_cases"] == 2
    assert 0.0 <= row["summary"]["GTVp"]["dice_mean"] <= 1.0
    assert row["parameters"] > 1e6
    assert "| nnU-Net v2 (4 mm, 32³ patches) |" in capsys.readouterr().out
