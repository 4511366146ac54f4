"""The two containers' ``inference.py``, run as the platform runs them (in-process through ``main(argv)``, and a few
as real subprocesses): the bad-input matrix, the geometry oracle, determinism, the time guard, and the real PET/CT
cases. The bundles are tiny untrained networks written in the exact bundle formats that the containers load."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import REPO, blank_image, head_phantom, paint
from hecktor.bundle import write_bundle
from hecktor.clinical import ClinicalEncoder
from hecktor.io import write_gc_input
from hecktor.tasks import get_task

MASK_OUTPUT, RFS_OUTPUT = get_task(1).output, get_task(2).output
from hecktor.networks import build_network
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan, RegionPlan
from hecktor.prognosis import FoldModel, RiskPredictor
from hecktor.segment import Segmenter
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.synthetic import make_case

PLAN1 = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), region_mm_xyz=(120.0, 120.0, 160.0), brain_min_volume_ml=50.0,
             patch_size_zyx=(32, 32, 32))
PLAN2 = BoxPlan(input_shape_zyx=(24, 24, 24), brain_min_volume_ml=50.0)
TINY_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
EHR = {"CenterID": 5, "Age": 56, "Gender": 1, "Tobacco Consumption": 0, "Alcohol Consumption": 1,
       "Performance Status": 0, "Treatment": 0, "M-stage": "M0"}


def _load_inference(task: int):
    path = REPO / f"task{task}_container" / "inference.py"
    spec = importlib.util.spec_from_file_location(f"task{task}_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INFERENCE = {1: _load_inference(1), 2: _load_inference(2)}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[int, Path]:
    """Task 1: two folds of a tiny U-Net. Task 2: a three-fold fusion ensemble with unequal weights."""
    root = tmp_path_factory.mktemp("bundles")
    networks = []
    for k in range(2):
        torch.manual_seed(k)
        networks.append(build_network("unet", TINY_UNET))
    model = {"network": "unet", "network_config": TINY_UNET, "folds": ["fold_0.pt", "fold_1.pt"]}
    task1 = write_bundle(root / "task1", task=1, plan=PLAN1, model=model,
                         state_dicts={f"fold_{k}.pt": n.state_dict() for k, n in enumerate(networks)})
    rng = np.random.default_rng(0)
    rows = [make_case(7, case_index=i).clinical for i in range(14)]
    folds, cindices = [], (0.70, 0.58, 0.64)
    for k, cindex in enumerate(cindices):
        encoder = ClinicalEncoder().fit(rows[k:k + 11])
        torch.manual_seed(10 + k)
        network = FusedFeatureExtractor(encoder.n_features, mode="fusion", **TINY_BACKBONE).eval()
        features = rng.normal(size=(40, network.feature_dim))
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(features, rng.uniform(100, 2000, 40),
                                                                       rng.random(40) < 0.5)
        folds.append(FoldModel(survival=survival, network=network, encoder=encoder, cindex=cindex))
    task2 = RiskPredictor(folds, ensemble_weights(cindices), PLAN2, "fusion", device="cpu").to_bundle(root / "task2")
    return {1: task1, 2: task2}


@pytest.fixture(scope="session")
def synthetic_case():
    return make_case(3, "small", case_index=1, ct_orientation="identity", pet_orientation="identity")


def run(task: int, input_dir: Path, output_dir: Path, bundle: Path, *extra: str, started_s_ago: float = 0.0):
    """``inference.py``'s ``main`` as the container calls it; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["--input", str(input_dir), "--output", str(output_dir), "--resources", str(bundle), "--device", "cpu",
            *extra]
    with redirect_stdout(out), redirect_stderr(err):
        status = INFERENCE[task].main(argv, start_time=time.time() - started_s_ago)
    return status, out.getvalue(), err.getvalue()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def input_ct(input_dir: Path) -> sitk.Image:
    (path,) = (input_dir / "images" / "ct").iterdir()
    return sitk.ReadImage(str(path))


def check_mask(output_dir: Path, ct: sitk.Image) -> np.ndarray:
    """The Task 1 output contract: the only file, UInt8, labels in {0, 1, 2}, exactly the CT's grid."""
    assert files_under(output_dir) == [output_dir / MASK_OUTPUT]
    mask = sitk.ReadImage(str(output_dir / MASK_OUTPUT))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert (mask.GetSize(), mask.GetSpacing(), mask.GetOrigin(), mask.GetDirection()) == (
        ct.GetSize(), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    array = sitk.GetArrayFromImage(mask)
    assert set(np.unique(array).tolist()) <= {0, 1, 2}
    return array


def check_risk(output_dir: Path) -> float:
    """The Task 2 output contract: the only file, one bare finite JSON number."""
    assert files_under(output_dir) == [output_dir / RFS_OUTPUT]
    value = json.loads((output_dir / RFS_OUTPUT).read_text())
    assert isinstance(value, float) and math.isfinite(value)
    return value


def check_failure(status: int, stderr: str, output_dir: Path, message: str) -> None:
    """A failed case: exit status 2, exactly one line on stderr naming the problem, nothing in the output folder."""
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert files_under(output_dir) == []


# ----------------------------------------------------------------------------------------------- bad-input matrix


def _replace_image(input_dir: Path, modality: str, image: sitk.Image) -> None:
    (path,) = (input_dir / "images" / modality).iterdir()
    sitk.WriteImage(image, str(path), True)


def _with_nan(image: sitk.Image, everywhere: bool = False) -> sitk.Image:
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    if everywhere:
        array[:] = np.nan
    else:
        array[:3, :5, :5] = np.nan
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _flat(size) -> sitk.Image:
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetOrigin([12.5] * len(size))
    return image


def _small_fov(ct: sitk.Image) -> sitk.Image:
    # 12 x 12 x 6 voxels (about 12 x 12 x 18 mm), far smaller than the 120 x 120 x 160 mm region
    centre = [s // 2 for s in ct.GetSize()]
    return ct[centre[0] - 6:centre[0] + 6, centre[1] - 6:centre[1] + 6, centre[2] - 3:centre[2] + 3]


@functools.lru_cache(maxsize=1)
def _whole_body() -> tuple[sitk.Image, sitk.Image]:
    # 1.6 m of body: brain at the top, a hot tumour in the neck, a hot bladder 1.3 m below it.
    body = [((0, 0, z), 200, 40.0) for z in range(-1300, 200, 100)]
    ct = paint(blank_image((30, 30, 160), (10.0, 10.0, 10.0), (0, 0, -600)),
               body + [((0, 10, 120), 60, 30.0), ((5, -5, 30), 15, 60.0)], background=-1000.0)
    pet = paint(blank_image((25, 25, 120), (12.0, 12.0, 13.0), (0, 0, -600)),
                [(c, r, 1.0) for c, r, _ in body] + [((0, 10, 120), 60, 9.0), ((5, -5, 30), 15, 12.0),
                                                     ((0, 0, -1250), 50, 15.0)], background=0.0)
    return ct, pet


def _edit_ehr(edit):
    def apply(input_dir: Path, case) -> None:
        path = input_dir / "ehr.json"
        result = edit(dict(EHR))
        if result is None:
            path.unlink()
        elif isinstance(result, str):
            path.write_text(result)
        else:
            path.write_text(json.dumps(result))
    return apply


def _images(ct=None, pet=None):
    def apply(input_dir: Path, case) -> None:
        if ct is not None:
            _replace_image(input_dir, "ct", ct(case))
        if pet is not None:
            _replace_image(input_dir, "pet", pet(case))
    return apply


def _remove(modality: str, folder: bool = False):
    def apply(input_dir: Path, case) -> None:
        target = input_dir / "images" / modality
        for path in target.iterdir():
            path.unlink()
        if folder:
            target.rmdir()
    return apply


def _second_image(input_dir: Path, case) -> None:
    sitk.WriteImage(case.ct, str(input_dir / "images" / "ct" / "another.nii.gz"))


def _unreadable(input_dir: Path, case) -> None:
    (path,) = (input_dir / "images" / "ct").iterdir()
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nthis is not an image\n")


def _shifted_pet(case) -> sitk.Image:
    pet = sitk.Image(case.pet)
    pet.SetOrigin(np.asarray(pet.GetOrigin()) + (0.0, 0.0, 3000.0))
    return pet


OK = "ok"
# name: (how to spoil the input, Task 1 outcome, Task 2 outcome); an outcome is OK or the error message expected.
MATRIX = {
    "valid": (lambda d, c: None, OK, OK),
    "ct_missing": (_remove("ct"), "no image", "no image"),
    "pet_folder_missing": (_remove("pet", folder=True), "input folder not found", "input folder not found"),
    "two_ct_images": (_second_image, "expected exactly one image", "expected exactly one image"),
    "ct_unreadable": (_unreadable, "cannot read CT", "cannot read CT"),
    "placeholders_2d": (_images(lambda c: _flat((1, 1)), lambda c: _flat((1, 1))), OK, OK),
    "placeholders_3d": (_images(lambda c: _flat((1, 1, 1)), lambda c: _flat((1, 1, 1))), OK, OK),
    "pet_placeholder": (_images(pet=lambda c: _flat((1, 1))), OK, OK),
    "nan_voxels": (_images(lambda c: _with_nan(c.ct), lambda c: _with_nan(c.pet)), OK, OK),
    "pet_all_nan": (_images(pet=lambda c: _with_nan(c.pet, everywhere=True)), "PET holds no finite voxel",
                    "PET holds no finite voxel"),
    "pet_all_zero": (_images(pet=lambda c: c.pet * 0), "PET is empty", "PET is empty"),
    "no_overlap": (_images(pet=_shifted_pet), "do not overlap", "do not overlap"),
    "fov_smaller_than_box": (_images(ct=lambda c: _small_fov(c.ct)), OK, OK),
    "whole_body": (_images(lambda c: _whole_body()[0], lambda c: _whole_body()[1]), OK, OK),
    "no_head": (_images(lambda c: head_phantom(brain=False)[0], lambda c: head_phantom(brain=False)[1]), OK, OK),
    "ehr_missing": (_edit_ehr(lambda e: None), OK, OK),
    "ehr_malformed": (_edit_ehr(lambda e: '{"Age": 56, "Gender": '), OK, "is not valid JSON"),
    "ehr_not_an_object": (_edit_ehr(lambda e: "[56, 1]"), OK, "must hold a JSON object"),
    "ehr_missing_keys": (_edit_ehr(lambda e: {"Age": 56}), OK, OK),
    "ehr_nulls": (_edit_ehr(lambda e: {k: None for k in e}), OK, OK),
    "ehr_strings_for_numbers": (_edit_ehr(lambda e: {k: str(v) for k, v in e.items()}), OK, OK),
    "ehr_unknown_categories": (_edit_ehr(lambda e: {**e, "M-stage": "M7", "Gender": "other"}), OK, OK),
    "ehr_extra_keys": (_edit_ehr(lambda e: {**e, "HPV Status": 1, "Weight": 80, "note": [1, 2]}), OK, OK),
}


@pytest.mark.parametrize("task", [1, 2])
@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_gives_a_valid_output_or_one_error_line(name, task, bundles, synthetic_case, tmp_path):
    spoil, *outcomes = MATRIX[name]
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR, seed=1)
    spoil(input_dir, synthetic_case)
    output_dir = tmp_path / "out"
    status, stdout, stderr = run(task, input_dir, output_dir, bundles[task], *(["--no-tta"] if task == 1 else []))
    if outcomes[task - 1] != OK:
        check_failure(status, stderr, output_dir, outcomes[task - 1])
        return
    assert status == 0 and stderr == "", stderr
    if task == 1:
        labels = check_mask(output_dir, input_ct(input_dir))
        if "placeholder" in name:
            assert not labels.any() and "flat placeholder" in stdout
    else:
        check_risk(output_dir)
        if "placeholder" in name:
            assert "the risk comes from the clinical record with a blank image" in stdout
    if name == "nan_voxels":
        assert "non-finite voxel(s) replaced" in stdout
    if name in ("valid", "whole_body"):  # the brain was found: no fallback
        assert "localisation" not in stdout
    if name == "no_head":
        assert "head-and-neck localisation: " in stdout and "using the superior centre of the field of view" in stdout


def test_missing_bundle_and_input_folder_are_one_line_errors(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    for task in (1, 2):
        status, _, stderr = run(task, input_dir, tmp_path / "out", tmp_path / "no-bundle")
        check_failure(status, stderr, tmp_path / "out", "no model bundle at")
        status, _, stderr = run(task, tmp_path / "nowhere", tmp_path / "out", bundles[task])
        check_failure(status, stderr, tmp_path / "out", "input folder not found")
    status, _, stderr = run(1, input_dir, tmp_path / "out", bundles[2])
    check_failure(status, stderr, tmp_path / "out", "is a Task 2 bundle, but Task 1 was asked for")


def test_odd_clinical_records_encode_as_unknown(bundles, synthetic_case, tmp_path):
    def risk(name: str, ehr) -> float:
        input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / name, ehr)
        assert run(2, input_dir, tmp_path / f"{name}-out", bundles[2])[0] == 0
        return check_risk(tmp_path / f"{name}-out")

    base = risk("base", EHR)
    assert risk("strings", {k: f" {v} " for k, v in EHR.items()}) == base
    assert risk("extra", {**EHR, "HPV Status": 1, "Weight": 80.5}) == base
    unknown = risk("unknown", {**EHR, "M-stage": "M7", "Gender": "other"})
    assert unknown == risk("nulls", {**EHR, "M-stage": None, "Gender": None}) != base
    no_record = risk("absent", None)
    assert no_record == risk("empty", {}) == risk("all-null", {k: None for k in EHR}) != base


# ---------------------------------------------------------------------------------------------- geometry oracle


def _same_voxels_stored_flipped(image: sitk.Image, axes_xyz: tuple[bool, bool, bool]) -> sitk.Image:
    """The same physical image, its voxels stored in reverse order along ``axes_xyz`` (origin and direction
    adjusted so that every voxel keeps its physical centre and value)."""
    array = sitk.GetArrayFromImage(image)[tuple(slice(None, None, -1) if f else slice(None) for f in axes_xyz[::-1])]
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.SetSpacing(image.GetSpacing())
    last = [n - 1 if f else 0 for n, f in zip(image.GetSize(), axes_xyz)]
    out.SetOrigin(image.TransformIndexToPhysicalPoint(last))
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.where(axes_xyz, -1.0, 1.0)
    out.SetDirection(direction.ravel().tolist())
    return out


@pytest.mark.parametrize("orientation", ["flip", "oblique"])
def test_mask_lies_on_the_input_ct_grid(orientation, bundles, tmp_path):
    case = make_case(3, "small", case_index=2, ct_orientation=orientation, pet_orientation=orientation)
    input_dir = write_gc_input(case.ct, case.pet, tmp_path / "in", case.ehr(task=1))
    assert run(1, input_dir, tmp_path / "out", bundles[1])[0] == 0
    labels = check_mask(tmp_path / "out", input_ct(input_dir))
    # against the in-memory CT, before the .mha round trip (MetaIO writes geometry as decimal text)
    mask = sitk.ReadImage(str(tmp_path / "out" / MASK_OUTPUT))
    assert mask.GetSize() == case.ct.GetSize()
    for got, expected in ((mask.GetSpacing(), case.ct.GetSpacing()), (mask.GetOrigin(), case.ct.GetOrigin()),
                          (mask.GetDirection(), case.ct.GetDirection())):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # the container's mask is the library's prediction, nothing lost or moved on the way
    expected = Segmenter.from_bundle(bundles[1], device="cpu").predict(input_ct(input_dir), sitk.ReadImage(
        str(next((input_dir / "images" / "pet").iterdir()))))
    np.testing.assert_array_equal(labels, sitk.GetArrayFromImage(expected))


def test_a_ct_stored_flipped_gives_the_same_mask_flipped(bundles, synthetic_case, tmp_path):
    """Storing the same CT with reversed axes must not change the segmentation, only the order of its voxels."""
    masks = {}
    for name, axes in (("plain", (False, False, False)), ("flipped", (True, False, True))):
        ct = _same_voxels_stored_flipped(synthetic_case.ct, axes)
        input_dir = write_gc_input(ct, synthetic_case.pet, tmp_path / name, EHR)
        assert run(1, input_dir, tmp_path / f"{name}-out", bundles[1], "--no-tta")[0] == 0
        masks[name] = check_mask(tmp_path / f"{name}-out", input_ct(input_dir))
    assert masks["plain"].any()
    disagree = np.count_nonzero(masks["plain"] != masks["flipped"][::-1, :, ::-1])
    assert disagree <= 1e-4 * masks["plain"].size, disagree


# -------------------------------------------------------------------------------------- determinism, time guard


def test_same_input_gives_bit_identical_outputs(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    outputs = {}
    for task, name in ((1, MASK_OUTPUT), (2, RFS_OUTPUT)):
        for attempt in (1, 2):
            out = tmp_path / f"out-{task}-{attempt}"
            assert run(task, input_dir, out, bundles[task])[0] == 0
            outputs[task, attempt] = (out / name).read_bytes()
        assert outputs[task, 1] == outputs[task, 2]


def test_time_guard_drops_tta_then_folds_and_still_writes_a_valid_output(bundles, synthetic_case, tmp_path):
    input_dir = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "in", EHR)
    # As if the process had started 10 s ago (container start-up) with a budget of half a second.
    status, stdout, _ = run(1, input_dir, tmp_path / "out1", bundles[1], "--time-budget", "0.5", started_s_ago=10)
    assert status == 0
    check_mask(tmp_path / "out1", input_ct(input_dir))
    assert "time budget: dropped test-time augmentation: " in stdout
    assert "time budget: dropped fold(s) [1]: " in stdout and "folds [0] without TTA, 1 network pass(es)" in stdout
    status, stdout, _ = run(2, input_dir, tmp_path / "out2", bundles[2], "--time-budget", "0.5", started_s_ago=10)
    assert status == 0
    check_risk(tmp_path / "out2")
    assert "time budget: dropped fold(s) [2, 1]: " in stdout  # fold 0 has the largest ensemble weight
    status, _, stderr = run(1, input_dir, tmp_path / "out3", bundles[1], "--time-budget", "700")
    check_failure(status, stderr, tmp_path / "out3", "the time budget must lie in (0, 600] s")


def test_inference_scripts_run_as_processes(bundles, synthetic_case, tmp_path):
    """The real entry points, as the container's ENTRYPOINT runs them: exit status, streams and files."""
    good = write_gc_input(synthetic_case.ct, synthetic_case.pet, tmp_path / "good", EHR)
    bad = write_gc_input(synthetic_case.ct, _shifted_pet(synthetic_case), tmp_path / "bad", EHR)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes side by side on two cores
    commands = {
        "task1": [1, good, "--time-budget", "0.5"],
        "task2_bad": [2, bad],
    }
    processes = {
        name: subprocess.Popen([sys.executable, str(REPO / f"task{task}_container" / "inference.py"), "--input",
                                str(folder), "--output", str(tmp_path / f"{name}-out"), "--resources",
                                str(bundles[task]), "--device", "cpu", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name, (task, folder, *extra) in commands.items()
    }
    results = {name: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for name, p in processes.items()}
    status, stdout, stderr = results["task1"]
    assert status == 0 and stderr == "", stderr
    check_mask(tmp_path / "task1-out", input_ct(good))
    # Interpreter start-up and imports alone take longer than half a second: the guard measures from process start.
    assert "time budget: dropped test-time augmentation" in stdout and "folds [0] without TTA" in stdout
    status, stdout, stderr = results["task2_bad"]
    check_failure(status, stderr, tmp_path / "task2_bad-out", "PET and CT do not overlap in physical space")
    assert "Traceback" not in stdout + stderr


# ------------------------------------------------------------------------------------------------ real PET/CT


@pytest.mark.parametrize("patient", ["STS_002", "STS_003"])
def test_real_pet_ct_cases(patient, real_data, bundles, tmp_path):
    folder = real_data / "petct" / patient
    ct = sitk.ReadImage(str(folder / f"{patient}__CT.nii.gz"))
    pet = sitk.ReadImage(str(folder / f"{patient}__PT.nii.gz"))
    input_dir = write_gc_input(ct, pet, tmp_path / "in", EHR)
    status, stdout, stderr = run(1, input_dir, tmp_path / "out1", bundles[1])
    assert status == 0 and stderr == "", stderr
    check_mask(tmp_path / "out1", input_ct(input_dir))
    assert input_ct(input_dir).GetSize() == ct.GetSize()
    status, _, stderr = run(2, input_dir, tmp_path / "out2", bundles[2])
    assert status == 0 and stderr == "", stderr
    check_risk(tmp_path / "out2")


# ------------------------------------------------------------------------------------------------------------ demo


def test_demo_measures_each_container_run_on_its_own(tmp_path):
    """The demo's per-case memory is the run's own: not inflated by the demo process, which holds the training data
    (a child's ru_maxrss otherwise starts from its parent's size at fork)."""
    import demo

    ballast = np.ones(300 * 2**20 // 8)  # 300 MB resident in this (the parent) process
    child = "import numpy, time; a = numpy.ones(150 * 2**20 // 8); time.sleep(0.2)"
    record = demo.measure([sys.executable, "-c", child], tmp_path / "child.log")
    assert record["status"] == 0 and record["wall_s"] >= 0.2
    assert 150 < record["peak_rss_mb"] < 280, record
    assert ballast.sum() > 0
    failed = demo.measure([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "failed.log")
    assert failed["status"] == 3
