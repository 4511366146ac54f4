"""``hecktor-predict`` and ``hecktor-evaluate`` (hecktor.predict, hecktor.evaluate): both input layouts against the
predictors called directly, failures and exit codes, a json-boolean task through the registry alone, and the
scores of hand-made masks and rankings whose numbers are worked out by hand below.

The bundles are tiny untrained networks in the exact formats the containers load (as helpers.containers builds)."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hecktor import evaluate as evaluate_cli
from hecktor import predict as predict_cli
from hecktor import runtime
from hecktor.budget import PredictionReport
from hecktor.bundle import write_bundle
from hecktor.clinical import ClinicalEncoder
from hecktor.datasets import ehr_from_row, list_training_cases, read_training_table, training_case_to_gc_input
from hecktor.metrics import dice
from hecktor.networks import build_network
from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan, RegionPlan
from hecktor.fold_ensemble import EnsembleFold
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.segment import Segmenter
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.synthetic import generate_cohort
from hecktor.tasks import TASKS, get_task
from helpers.containers import check_risk
from helpers.containers import run as run_container
from helpers.paths import REPO

PLAN1 = RegionPlan(spacing_mm_xyz=(4.0, 4.0, 4.0), region_mm_xyz=(120.0, 120.0, 160.0), brain_min_volume_ml=50.0,
                   patch_size_zyx=(32, 32, 32))
PLAN2 = BoxPlan(input_shape_zyx=(24, 24, 24), brain_min_volume_ml=50.0)
TINY_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
ROWS = [{"Age": 45 + 2 * i, "Gender": i % 2, "Tobacco Consumption": i % 3 % 2, "Performance Status": i % 3,
         "Treatment": (i // 2) % 2, "M-stage": "M1" if i == 4 else "M0"} for i in range(14)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[int, Path]:
    """Task 1: one fold of a tiny U-Net. Task 2: a two-fold fusion ensemble with unequal weights."""
    root = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    network = build_network("unet", TINY_UNET)
    task1 = write_bundle(root / "task1", task=1, plan=PLAN1,
                         model={"network": "unet", "network_config": TINY_UNET, "folds": ["fold_0.pt"]},
                         state_dicts={"fold_0.pt": network.state_dict()})
    rng = np.random.default_rng(0)
    folds = []
    for k, cindex in enumerate((0.7, 0.6)):
        encoder = ClinicalEncoder().fit(ROWS[k:k + 12])
        torch.manual_seed(k)
        extractor = FusedFeatureExtractor(encoder.n_features, mode="fusion", **TINY_BACKBONE).eval()
        survival = build_survival_model({"kind": "coxph", "alpha": 5.0}).fit(
            rng.normal(size=(40, extractor.feature_dim)), rng.uniform(100, 2000, 40), rng.random(40) < 0.5)
        folds.append(EnsembleFold(RiskHead(survival), extractor, encoder, validation_score=cindex))
    task2 = RiskPredictor(folds, ensemble_weights([0.7, 0.6]), PLAN2, "fusion", device="cpu").to_bundle(root / "task2")
    return {1: task1, 2: task2}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three small synthetic cases in the HECKTOR layout (Task 1 with labels, Task 2 with its CSV)."""
    return generate_cohort(tmp_path_factory.mktemp("cohort") / "DATA", cases=3, seed=0, size="small").out_dir


@pytest.fixture(scope="module")
def gc_folder(cohort, tmp_path_factory) -> Path:
    """The same three cases as Grand-Challenge case folders (UUID-named .mha images, ehr.json from the CSV row)."""
    out = tmp_path_factory.mktemp("gc")
    rows = {row["PatientID"]: row for row in read_training_table(cohort, 2)}
    for seed, case in enumerate(list_training_cases(cohort, 2)):
        training_case_to_gc_input(case, rows[case.patient_id], out / case.patient_id, seed=seed)
    return out


@pytest.fixture
def cli(capsys):
    """Call ``module.main(argv)`` and return (exit status, stdout lines, stderr lines)."""
    def call(module, *argv):
        capsys.readouterr()
        try:
            status = module.main([str(a) for a in argv])
        except SystemExit as stop:
            status = stop.code
        out, err = capsys.readouterr()
        return status, out.splitlines(), err.splitlines()
    return call


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (
        b.GetSize(), b.GetSpacing(), b.GetOrigin(), b.GetDirection())


def read_predictions(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


# --------------------------------------------------------------------------------------------------------- predict


def test_predict_task1_both_layouts_equal_segmenter(cli, bundles, cohort, gc_folder, tmp_path):
    segmenter = Segmenter.from_bundle(bundles[1], device="cpu")
    cases = list_training_cases(cohort, 1)
    outputs = {}
    for name, folder, layout in (("hecktor", cohort, "HECKTOR"), ("gc", gc_folder, "Grand-Challenge")):
        out = tmp_path / name
        status, stdout, stderr = cli(predict_cli, "--task", 1, "--bundle", bundles[1], "--input", folder,
                                     "--output", out, "--device", "cpu", "--no-tta")
        assert status == 0, stderr
        assert stdout[0].startswith(f"layout: {layout} (") and "3 case(s)" in stdout[0]
        assert stdout[-1].startswith("done: 3 of 3 case(s) predicted")
        assert sorted(p.name for p in out.iterdir()) == sorted(f"{c.patient_id}.nii.gz" for c in cases)
        outputs[name] = out
    for case in cases:
        ct, pet, _ = case.read()
        expected = sitk.GetArrayFromImage(segmenter.predict(ct, pet, tta=False))
        for out in outputs.values():
            mask = sitk.ReadImage(str(out / f"{case.patient_id}.nii.gz"))
            assert mask.GetPixelID() == sitk.sitkUInt8 and same_grid(mask, ct)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected)
    assert expected.any()  # the untrained network labels something: the comparison is not of empty masks

    # The predictions score through hecktor-evaluate against the cohort's labels, case by case.
    status, stdout, stderr = cli(evaluate_cli, "--task", 1, "--pred", outputs["gc"], "--labels", cohort / "Task 1",
                                 "--json", tmp_path / "scores.json")
    assert status == 0, stderr
    report = json.loads((tmp_path / "scores.json").read_text())
    assert [c["case_id"] for c in report["cases"]] == [c.patient_id for c in cases]
    for case, scored in zip(cases, report["cases"]):
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label_path)))
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs["gc"] / f"{case.patient_id}.nii.gz")))
        assert scored["GTVp"]["dice"] == pytest.approx(dice(pred, gt, 1), abs=1e-12)


def test_predict_one_grand_challenge_case_with_tta(cli, bundles, gc_folder, tmp_path):
    """One case folder is a layout of its own; without --no-tta the mirrors run, as in Segmenter.predict."""
    case_dir = sorted(gc_folder.iterdir())[0]
    status, stdout, _ = cli(predict_cli, "--task", 1, "--bundle", bundles[1], "--input", case_dir, "--output",
                            tmp_path, "--device", "cpu")
    assert status == 0 and stdout[0].startswith("layout: Grand-Challenge") and "1 case(s)" in stdout[0]
    ct = sitk.ReadImage(str(next((case_dir / "images" / "ct").iterdir())))
    pet = sitk.ReadImage(str(next((case_dir / "images" / "pet").iterdir())))
    expected = Segmenter.from_bundle(bundles[1], device="cpu").predict(ct, pet, tta=True)
    mask = sitk.ReadImage(str(tmp_path / f"{case_dir.name}.nii.gz"))
    assert same_grid(mask, ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(expected))


def test_predict_task2_both_layouts_equal_risk_predictor(cli, bundles, cohort, gc_folder, tmp_path):
    predictor = RiskPredictor.from_bundle(bundles[2], device="cpu")
    rows = {row["PatientID"]: row for row in read_training_table(cohort, 2)}
    expected = {}
    for case in list_training_cases(cohort, 2):
        ct, pet, _ = case.read()
        expected[case.patient_id] = predictor.predict(ct, pet, ehr_from_row(rows[case.patient_id]))
    assert len(set(expected.values())) == 3
    for name, folder in (("hecktor", cohort), ("gc", gc_folder)):
        status, stdout, stderr = cli(predict_cli, "--task", 2, "--bundle", bundles[2], "--input", folder,
                                     "--output", tmp_path / name, "--device", "cpu")
        assert status == 0, stderr
        if name == "hecktor":
            assert stdout[0].endswith("clinical records from HECKTOR_2025_Training_Task_2.csv)")
        table = read_predictions(tmp_path / name / "predictions.csv")
        assert table[0] == ["PatientID", "risk"]
        assert {pid: float(value) for pid, value in table[1:]} == expected  # exact: the same float, written exactly


def test_an_implausible_table_value_is_unknown_as_in_ehr_json(cli, bundles, cohort, tmp_path):
    """A HECKTOR table's record goes through the same sanitising as a container's ehr.json: an age in days is
    dropped (unknown) with a warning, and the risk is that of the record without it."""
    data = shutil.copytree(cohort / "Task 2", tmp_path / "Task 2")
    table = data / "HECKTOR_2025_Training_Task_2.csv"
    rows = list(csv.DictReader(table.open(newline="")))
    first = rows[0]["PatientID"]
    rows[0]["Age"] = "22630"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    status, _, stderr = cli(predict_cli, "--task", 2, "--bundle", bundles[2], "--input", data, "--output",
                            tmp_path / "out", "--device", "cpu")
    warned = [line for line in stderr if "is outside 0-120 years" in line]
    assert status == 0 and len(warned) == 1 and warned[0].startswith(f"warning: case {first}: "), stderr
    case = next(c for c in list_training_cases(tmp_path, 2) if c.patient_id == first)
    ct, pet, _ = case.read()
    without_age = {k: v for k, v in ehr_from_row(rows[0]).items() if k != "Age"}
    expected = RiskPredictor.from_bundle(bundles[2], device="cpu").predict(ct, pet, without_age)
    table_out = dict(read_predictions(tmp_path / "out" / "predictions.csv")[1:])
    assert float(table_out[first]) == expected


def test_failed_case_is_reported_and_the_run_goes_on(cli, bundles, cohort, tmp_path):
    data = shutil.copytree(cohort / "Task 1", tmp_path / "Task 1")
    out = tmp_path / "out"
    base = ["--task", 1, "--bundle", bundles[1], "--input", data, "--output", out, "--device", "cpu", "--no-tta"]
    assert cli(predict_cli, *base)[0] == 0
    first, broken, last = sorted(p.name for p in data.iterdir() if p.is_dir())

    status, _, stderr = cli(predict_cli, *base)  # outputs exist: refused before any work
    assert status == 2 and len(stderr) == 1 and stderr[0].startswith("error: ") and "--overwrite" in stderr[0]

    # An unreadable CT fails a Task 1 case, as in the container (there is no grid to write on; an unreadable PET
    # is dropped and the case segmented from the CT alone, test_a_case_without_its_pet_...).
    (data / broken / f"{broken}__CT.nii.gz").write_bytes(b"not an image")
    status, stdout, stderr = cli(predict_cli, *base, "--overwrite")
    assert status == 2
    assert len(stderr) == 1 and stderr[0].startswith(f"warning: case {broken} failed: cannot read CT"), stderr
    assert stdout[-1].startswith(f"done: 2 of 3 case(s) predicted, 1 failed ({broken})")
    # The failed case's mask from the first run is gone: no earlier output passes for this run's.
    assert sorted(p.name for p in out.iterdir()) == [f"{first}.nii.gz", f"{last}.nii.gz"]

    shutil.rmtree(out)
    status, stdout, stderr = cli(predict_cli, *base, "--strict")
    assert status == 2 and len(stderr) == 1 and stderr[0].startswith(f"error: case {broken}: cannot read CT")
    assert sorted(p.name for p in out.iterdir()) == [f"{first}.nii.gz"]  # stopped at the failure


def test_a_case_without_its_pet_is_answered_as_the_container_answers_and_skipped_folders_are_named(
        cli, bundles, cohort, gc_folder, tmp_path):
    """Task 2, HECKTOR layout, one case's PET missing: the container's degraded answer (from the CT and the record,
    the same warning), not a failed case; folders that are no case get one line each and the summary counts them."""
    data = shutil.copytree(cohort / "Task 2", tmp_path / "Task 2")
    first, without_pet, last = sorted(p.name for p in data.iterdir() if p.is_dir())
    (data / without_pet / f"{without_pet}__PT.nii.gz").unlink()
    (data / ".ipynb_checkpoints").mkdir()
    (data / "empty").mkdir()
    (data / "notes").mkdir()
    (data / "notes" / "readme.txt").write_text("not a case")
    status, stdout, stderr = cli(predict_cli, "--task", 2, "--bundle", bundles[2], "--input", data, "--output",
                                 tmp_path / "out", "--device", "cpu")
    remedy = "predicting without the PET (PET channel blank, head and neck placed from the CT)"
    assert status == 0, stderr
    assert stderr == [f"warning: folder {data / '.ipynb_checkpoints'} skipped: a hidden folder",
                      f"warning: folder {data / 'empty'} skipped: an empty folder",
                      f"warning: folder {data / 'notes'} skipped: neither notes__CT.nii.gz nor notes__PT.nii.gz in it",
                      f"warning: case {without_pet}: PET unusable (PET not found: "
                      f"{data / without_pet / f'{without_pet}__PT.nii.gz'}): {remedy}"]
    assert stdout[0].startswith(f"layout: HECKTOR ({data}, 3 case(s)")
    assert stdout[-1] == (f"done: 3 of 3 case(s) predicted (1 without an input: {without_pet} without PET), 3 "
                          f"folder(s) skipped (.ipynb_checkpoints, empty, notes); outputs in "
                          f"{tmp_path / 'out' / 'predictions.csv'}")
    risks = {pid: float(value) for pid, value in read_predictions(tmp_path / "out" / "predictions.csv")[1:]}

    # The container on the same case, its PET folder gone: the same warning's remedy, exactly the same risk.
    case_dir = shutil.copytree(gc_folder / without_pet, tmp_path / "gc" / without_pet)
    shutil.rmtree(case_dir / "images" / "pet")
    status, container_out, _ = run_container(2, case_dir, tmp_path / "container", bundles[2])
    assert status == 0 and f"PET unusable (input folder not found: {case_dir / 'images' / 'pet'}): {remedy}" in \
        container_out
    assert risks[without_pet] == check_risk(tmp_path / "container")
    predictor = RiskPredictor.from_bundle(bundles[2], device="cpu")
    rows = {row["PatientID"]: row for row in read_training_table(cohort, 2)}
    ct = sitk.ReadImage(str(data / without_pet / f"{without_pet}__CT.nii.gz"))
    assert risks[without_pet] == predictor.predict(ct, None, ehr_from_row(rows[without_pet]))
    assert risks[without_pet] != predictor.predict(ct, sitk.ReadImage(str(cohort / "Task 2" / without_pet /
                                                                          f"{without_pet}__PT.nii.gz")),
                                                   ehr_from_row(rows[without_pet]))


def test_user_errors_are_one_line(cli, bundles, cohort, tmp_path):
    common = ["--output", tmp_path / "out", "--device", "cpu"]
    one_case = next(p for p in (cohort / "Task 1").iterdir() if p.is_dir())  # a case folder holds no case folders
    cases = [
        (["--task", 2, "--bundle", bundles[1], "--input", cohort, *common], "bundle"),     # Task 1 bundle for Task 2
        (["--task", 1, "--bundle", bundles[1], "--input", tmp_path / "nowhere", *common], "input folder not found"),
        (["--task", 1, "--bundle", bundles[1], "--input", one_case, *common], "no cases in"),
        (["--task", 7, "--bundle", bundles[1], "--input", cohort, *common], "invalid choice"),
        (["--bundle", bundles[1], "--input", cohort, *common], "required: --task"),
    ]
    for argv, message in cases:
        status, _, stderr = cli(predict_cli, *argv)
        assert status == 2 and len(stderr) == 1, stderr
        assert stderr[0].startswith("error: ") and message in stderr[0], stderr[0]
    assert not (tmp_path / "out").exists()


def test_a_json_boolean_task_needs_only_its_registry_entry(cli, monkeypatch, cohort, tmp_path):
    """A Task 3 (HPV status) added to the registry: predictions.csv with its column, true/false values."""

    class HPVPredictor:
        def __init__(self) -> None:
            self.last_report = PredictionReport()

        @classmethod
        def from_bundle(cls, path, device=None):
            return cls()

        def predict(self, ct, pet, ehr):
            return ehr["Age"] > 60

        def predict_case(self, case, **options):
            return self.predict(case.ct, case.pet, case.ehr)

    spec = dataclasses.replace(get_task(2), number=3, name="hpv", title="HPV status", target_columns=("HPV Status",),
                               output=Path("hpv-status.json"), output_kind="json-boolean", value_column="")
    monkeypatch.setitem(TASKS, 3, spec)
    monkeypatch.setitem(runtime.PREDICTORS, 3, HPVPredictor)
    status, _, stderr = cli(predict_cli, "--task", 3, "--bundle", tmp_path, "--input", cohort, "--output", tmp_path)
    assert status == 0 and stderr == []
    rows = read_predictions(tmp_path / "predictions.csv")
    ages = {row["PatientID"]: row["Age"] for row in read_training_table(cohort, 2)}
    assert rows[0] == ["PatientID", "hpv_status"]
    assert rows[1:] == [[pid, "true" if float(ages[pid]) > 60 else "false"] for pid in sorted(ages)]

    # hecktor-evaluate scores a json-boolean task by its kind and target column too: balanced accuracy over the
    # patients of known status (USZ-001's is unknown; MDA-001, 44 years, HPV-negative, predicted false: right;
    # MDA-002, 55 years, HPV-positive, predicted false: wrong), no AUC without a probability column.
    status, stdout, stderr = cli(evaluate_cli, "--task", 3, "--pred", tmp_path / "predictions.csv", "--labels", cohort,
                                 "--json", tmp_path / "s.json")
    assert status == 0 and stderr == []
    report = json.loads((tmp_path / "s.json").read_text())
    known = {pid: row["HPV Status"] for pid, row in ((r["PatientID"], r) for r in read_training_table(cohort, 2))
             if row["HPV Status"] is not None}
    assert known == {"MDA-001": "0", "MDA-002": "1"}
    assert (report["balanced_accuracy"], report["auc"], report["n"], report["n_unknown_ignored"]) == (0.5, None, 2, 1)
    assert "| balanced accuracy (hpv_status) | 0.500 |" in stdout


# -------------------------------------------------------------------------------------------------------- evaluate

# Three hand-made cases of 10^3 voxels; (z, y, x) arrays. Case B's voxels are 1 x 1 x 2 mm (2 mm^3), so DSCagg,
# which sums physical volumes, weighs its voxels twice.
SPACING_XYZ = {"A": (1.0, 1.0, 1.0), "B": (1.0, 1.0, 2.0), "C": (1.0, 1.0, 1.0)}


def _labels(case: str, perturbed: bool) -> np.ndarray:
    a = np.zeros((10, 10, 10), np.uint8)
    if case == "A":
        a[2:5 if perturbed else 6, 2:6, 2:6] = 1     # GTVp 64 voxels; perturbed: one slab less (48, all inside)
        a[7:9, 7:9, 7:9] = 2                          # one GTVn lesion of 8, found exactly
    elif case == "B":
        a[2:5, 2:5, 2:5] = 1                          # GTVp 27, found exactly
        a[0:2, 0:2, 7:9] = 2                          # GTVn lesion 1 (8), found exactly
        if perturbed:
            a[5, 8, 5] = 2                            # a false-positive lesion of one voxel ...
        else:
            a[7:9, 0:2, 0:2] = 2                      # ... and GTVn lesion 2 (8) missed
    else:
        a[4:6, 4:6, 4:6] = 1                          # GTVp 8, found exactly; no GTVn at all (Dice undefined)
    return a


def _image(array: np.ndarray, case: str, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ[case])
    image.SetOrigin(origin)
    return image


@pytest.fixture
def labelled(tmp_path) -> Path:
    """A HECKTOR Task 1 folder of the three cases (CT and PET are stand-ins: scoring reads only the labels)."""
    root = tmp_path / "DATA"
    for case in SPACING_XYZ:
        folder = root / "Task 1" / case
        folder.mkdir(parents=True)
        label = _image(_labels(case, perturbed=False), case)
        sitk.WriteImage(label, str(folder / f"{case}.nii.gz"))
        for kind in ("CT", "PT"):
            sitk.WriteImage(sitk.Cast(label, sitk.sitkFloat32), str(folder / f"{case}__{kind}.nii.gz"))
    return root


def _write_predictions(folder: Path, perturbed: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case in SPACING_XYZ:
        suffix = ".mha" if case == "B" else ".nii.gz"  # both names are read
        sitk.WriteImage(_image(_labels(case, perturbed), case), str(folder / f"{case}{suffix}"))
    return folder


def test_evaluate_perfect_prediction(cli, labelled, tmp_path):
    pred = _write_predictions(tmp_path / "pred", perturbed=False)
    status, stdout, stderr = cli(evaluate_cli, "--task", 1, "--pred", pred, "--labels", labelled,
                                 "--json", tmp_path / "s.json")
    assert status == 0, stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert (report["gtvp_dice_mean"], report["gtvn_dsc_agg"], report["gtvn_f1_agg"]) == (1.0, 1.0, 1.0)
    assert report["labels"]["GTVp"]["hd95_mean"] == 0.0 and report["labels"]["GTVp"]["surface_dice_mean"] == 1.0
    assert "| GTVp mean Dice (per patient) | 1.000 |" in stdout


def test_evaluate_perturbed_prediction_gives_hand_computed_scores(cli, labelled, tmp_path):
    pred = _write_predictions(tmp_path / "pred", perturbed=True)
    status, stdout, _ = cli(evaluate_cli, "--task", 1, "--pred", pred, "--labels", labelled / "Task 1",
                            "--json", tmp_path / "s.json")
    assert status == 0
    # Strict JSON: no NaN or Infinity tokens (case C's undefined GTVn Dice is null).
    report = json.loads((tmp_path / "s.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))
    # GTVp Dice: A 2*48/(64+48) = 6/7, B 1, C 1 -> mean 20/21.
    assert report["gtvp_dice_mean"] == pytest.approx(20 / 21, abs=1e-12)
    # GTVn DSCagg in mm^3: A tp 8, |G| 8, |P| 8 (1 mm^3); B tp 16, |G| 32, |P| 18 (2 mm^3) -> 2*24 / 66 = 8/11.
    assert report["gtvn_dsc_agg"] == pytest.approx(8 / 11, abs=1e-12)
    # GTVn lesions: TP 2 (A's, B's first), FN 1 (B's second), FP 1 (B's speck) -> F1agg 2*2/(4+1+1) = 2/3.
    assert report["gtvn_f1_agg"] == pytest.approx(2 / 3, abs=1e-12)
    gtvn = report["labels"]["GTVn"]
    assert (gtvn["lesion_tp"], gtvn["lesion_fp"], gtvn["lesion_fn"]) == (2, 1, 1)
    # Predicted / true GTVn volume: (8 + 18) / (8 + 32) mm^3: B's second node is missed.
    assert gtvn["volume_ratio"] == pytest.approx(26 / 40) and gtvn["recall_agg"] == pytest.approx(24 / 40)
    cases = {c["case_id"]: c for c in report["cases"]}
    assert list(cases) == ["A", "B", "C"]
    # Case A's GTVp: the 4 voxels of the predicted top face inside the truth lie 1 mm from its surface, and the
    # truth's uncovered top face lies 1 mm from the prediction: both directed 95th percentiles are 1 mm.
    assert cases["A"]["GTVp"]["dice"] == pytest.approx(6 / 7) and cases["A"]["GTVp"]["hd95"] == 1.0
    assert cases["B"]["GTVn"]["dice"] == pytest.approx(16 / 25)  # 2*8 / (16 + 9) voxels
    assert cases["C"]["GTVn"]["dice"] is None and cases["C"]["GTVn"]["hd95"] is None
    assert "| GTVp mean Dice (per patient) | 0.952 |" in stdout
    assert "| GTVn DSCagg | 0.727 |" in stdout and "| GTVn F1agg (IoU > 0.3) | 0.667 |" in stdout
    assert "| C | 1.000 | 0.0 | 1/0/0 | n/a | n/a | 0/0/0 |" in stdout
    assert "| GTVn | 0.820 | 0.727 | 0.667 (2 / 1 / 1) | 5.4 / 5.4 | 0.820 | 0.650 |" in stdout


@pytest.mark.parametrize("fault, message", [
    ("missing", "no prediction for case B in"),
    ("extra", "prediction for case D in"),
    ("off-grid", "case C: prediction and ground truth differ in origin"),
    ("two files", "case A has two predictions"),
])
def test_evaluate_refuses_a_missing_extra_or_off_grid_mask(cli, labelled, tmp_path, fault, message):
    pred = _write_predictions(tmp_path / "pred", perturbed=False)
    if fault == "missing":
        (pred / "B.mha").unlink()
    elif fault == "extra":
        shutil.copy(pred / "A.nii.gz", pred / "D.nii.gz")
    elif fault == "off-grid":
        sitk.WriteImage(_image(_labels("C", False), "C", origin=(0.0, 0.0, 5.0)), str(pred / "C.nii.gz"))
    else:
        shutil.copy(pred / "A.nii.gz", pred / "A.mha")
    status, stdout, stderr = cli(evaluate_cli, "--task", 1, "--pred", pred, "--labels", labelled,
                                 "--json", tmp_path / "s.json")
    assert status == 2 and stdout == [] and len(stderr) == 1, stderr
    assert stderr[0].startswith("error: ") and message in stderr[0], stderr[0]
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("value, pixel", [(3, sitk.sitkUInt8), (-1, sitk.sitkInt16)])
def test_evaluate_names_the_label_map_that_holds_a_value_besides_the_labels(cli, labelled, tmp_path, value, pixel):
    """A ground truth holding 3 (or -1, not read as 255) is the label map's fault: the error names that file and
    the patient, not the prediction's file."""
    pred = _write_predictions(tmp_path / "pred", perturbed=False)
    label_path = labelled / "Task 1" / "B" / "B.nii.gz"
    array = _labels("B", perturbed=False).astype(np.int16)
    array[9, 9, 9] = value
    sitk.WriteImage(sitk.Cast(_image(array, "B"), pixel), str(label_path))
    status, stdout, stderr = cli(evaluate_cli, "--task", 1, "--pred", pred, "--labels", labelled)
    assert status == 2 and stdout == []
    assert stderr == [f"error: case B: label map {label_path} holds values other than the labels (0, 1, 2): "
                      f"[{value}]; fix the ground truth"]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


SURVIVAL = [["P1", 100, 1], ["P2", 200, 1], ["P3", 300, 0], ["P4", 400, 1]]


def test_evaluate_task2_cindex_of_a_known_ranking(cli, tmp_path):
    labels = _write_csv(tmp_path / "DATA" / "Task 2" / get_task(2).training_csv, ["PatientID", "RFS", "Relapse"],
                        SURVIVAL)
    pred = _write_csv(tmp_path / "predictions.csv", ["PatientID", "risk"], [["P4", 1], ["P3", 3], ["P2", 2],
                                                                           ["P1", 4]])
    # Comparable pairs (an event before a later time): P1 with P2, P3, P4 (risk 4 > 2, 3, 1: all concordant) and
    # P2 with P3 (2 < 3: discordant), P4 (2 > 1: concordant) -> C = 4/5.
    for where in (labels, labels.parent, tmp_path / "DATA"):
        status, stdout, stderr = cli(evaluate_cli, "--task", 2, "--pred", pred, "--labels", where,
                                     "--json", tmp_path / "c.json")
        assert status == 0, stderr
        report = json.loads((tmp_path / "c.json").read_text())
        assert (report["cindex"], report["n"], report["events"]) == (pytest.approx(0.8), 4, 3)
        assert "| Harrell's C-index (risk) | 0.800 |" in stdout

    _write_csv(pred, ["PatientID", "risk"], [["P1", 4], ["P2", 2], ["P3", 3]])
    status, _, stderr = cli(evaluate_cli, "--task", 2, "--pred", pred, "--labels", labels)
    assert status == 2 and stderr[0].startswith("error: no prediction for case P4 in")
    _write_csv(pred, ["PatientID", "risk"], [["P1", 4], ["P2", 2], ["P3", 3], ["P4", 1], ["P9", 0]])
    status, _, stderr = cli(evaluate_cli, "--task", 2, "--pred", pred, "--labels", labels)
    assert status == 2 and stderr[0].startswith("error: prediction for case P9 in")
    _write_csv(pred, ["PatientID", "score"], [["P1", 4]])
    status, _, stderr = cli(evaluate_cli, "--task", 2, "--pred", pred, "--labels", labels)
    assert status == 2 and "has no 'risk' column" in stderr[0] and len(stderr) == 1


@pytest.mark.parametrize("rows, message", [
    ([*SURVIVAL, ["P2", 250, 0]], " line 6: patient P2 is listed twice (lines 3 and 6); keep one row"),
    ([["P1", "nan", 1], *SURVIVAL[1:]], " line 2 (P1): RFS 'nan' is not a finite number of days > 0"),
    ([*SURVIVAL[:3], ["P4", 400, "inf"]], " line 5 (P4): Relapse 'inf' is not exactly 0 or 1"),
    ([*SURVIVAL[:3], ["P4", 400, 0.5]], " line 5 (P4): Relapse '0.5' is not exactly 0 or 1"),
])
def test_evaluate_task2_outcomes_go_through_the_one_table_reader(cli, tmp_path, rows, message):
    """hecktor-evaluate reads the outcomes with datasets.read_clinical_csv, as the trainers do: a patient listed
    twice (the last row used to win) or a non-finite or fractional outcome is one line naming the line and patient."""
    labels = _write_csv(tmp_path / get_task(2).training_csv, ["PatientID", "RFS", "Relapse"], rows)
    pred = _write_csv(tmp_path / "predictions.csv", ["PatientID", "risk"], [["P1", 4], ["P2", 2], ["P3", 3],
                                                                           ["P4", 1]])
    status, stdout, stderr = cli(evaluate_cli, "--task", 2, "--pred", pred, "--labels", labels)
    assert (status, stdout, stderr) == (2, [], [f"error: {labels}{message}"])
    _write_csv(labels, ["PatientID", "RFS", "Relapse"], SURVIVAL)
    _write_csv(pred, ["PatientID", "risk"], [["P1", 4], ["P2", 2], ["P3", 3], ["P4", 1], ["P1", 5]])
    status, _, stderr = cli(evaluate_cli, "--task", 2, "--pred", pred, "--labels", labels)
    assert (status, stderr) == (2, [f"error: {pred} line 6: patient P1 is listed twice (lines 2 and 6); keep one "
                                    "row"])


# -------------------------------------------------------------------------------------------------- command lines


@pytest.mark.parametrize("module, options", [
    (predict_cli, ["--task", "--bundle", "--input", "--output", "--device", "--no-tta", "--overwrite", "--strict"]),
    (evaluate_cli, ["--task", "--pred", "--labels", "--json"]),
])
def test_help_lists_every_option_and_its_default(cli, module, options):
    status, stdout, _ = cli(module, "--help")
    text = " ".join(" ".join(stdout).split())
    assert status == 0
    for option in options:
        assert option in text
    assert text.count("(default: ") + text.count("(required)") >= len(options)


def test_modules_and_console_scripts(tmp_path):
    """``python -m`` runs each command (a user error: one line, exit 2, no traceback); pyproject installs both."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "shared")}
    for module, argv in (("hecktor.predict", ["--task", "1", "--bundle", str(tmp_path), "--input", str(tmp_path),
                                              "--output", str(tmp_path / "o")]),
                         ("hecktor.evaluate", ["--task", "1", "--pred", str(tmp_path), "--labels", str(tmp_path)])):
        done = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    scripts = tomllib.loads((REPO / "shared" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"hecktor-predict": "hecktor.predict:main", "hecktor-evaluate": "hecktor.evaluate:main",
                       "hecktor-check-data": "hecktor.training.check_data:main"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))
