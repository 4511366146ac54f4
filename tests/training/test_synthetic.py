"""Tests of the synthetic HECKTOR-like cohort generator (hecktor.synthetic)."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from sksurv.metrics import concordance_index_censored

from hecktor import synthetic
from hecktor.errors import InputError
from hecktor.synthetic.grids import _coordinates, _index_box

SEED = 2025
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
EXPECTED_HEADER = [
    "PatientID",
    "CenterID",
    "Age",
    "Gender",
    "Tobacco Consumption",
    "Alcohol Consumption",
    "Performance Status",
    "Treatment",
    "M-stage",
    "HPV Status",
]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _grid(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _inferior_end_z(image: sitk.Image) -> float:
    """Physical z where the FOV's central slice axis leaves the image inferiorly (robust to tilted grids)."""
    nx, ny, nz = image.GetSize()
    ends = [image.TransformContinuousIndexToPhysicalPoint(((nx - 1) / 2, (ny - 1) / 2, k)) for k in (-0.5, nz - 0.5)]
    return min(end[2] for end in ends)


@pytest.fixture(scope="module")
def cohort40(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synthetic.CohortSummary]:
    out = tmp_path_factory.mktemp("cohort40") / "data"
    return out, synthetic.generate_cohort(out, 40, SEED, "small")


def test_same_seed_gives_identical_bytes_and_smaller_cohorts_are_prefixes(tmp_path: Path) -> None:
    first = synthetic.generate_cohort(tmp_path / "a", 3, 7)
    synthetic.generate_cohort(tmp_path / "b", 3, 7)
    longer = synthetic.generate_cohort(tmp_path / "c", 5, 7)
    other_seed = synthetic.generate_cohort(tmp_path / "d", 3, 8)

    files_a, files_b, files_c = (_all_files(tmp_path / n) for n in "abc")
    assert len(files_a) == 3 * 7 + 5  # 3 patients x (3 + 2 + 2) images, 3 task CSVs, true_risk.csv, cohort.json
    assert files_a == files_b  # NIfTI gzip, CSVs and JSON are byte-reproducible

    # The 3-case cohort is the start of the 5-case one: same patients, same image bytes, same rows.
    assert longer.patient_ids[:3] == first.patient_ids
    for name, content in files_a.items():
        if name.endswith(".nii.gz"):
            assert files_c[name] == content, name
    for table in ("Task 2/HECKTOR_2025_Training_Task_2.csv", "true_risk.csv"):
        rows_a = files_a[table].decode().splitlines()
        rows_c = files_c[table].decode().splitlines()
        assert rows_c[: len(rows_a)] == rows_a

    ct_name = f"Task 1/{other_seed.patient_ids[0]}/{other_seed.patient_ids[0]}__CT.nii.gz"
    assert _all_files(tmp_path / "d").get(ct_name) != files_a.get(ct_name)


def test_layout_and_csv_columns_follow_hecktor_2025(cohort40) -> None:
    out, summary = cohort40
    assert sorted(p.name for p in out.iterdir()) == ["Task 1", "Task 2", "Task 3", "cohort.json", "true_risk.csv"]
    header1, rows1 = _read_csv(out / "Task 1" / "HECKTOR_2025_Training_Task_1.csv")
    header2, rows2 = _read_csv(out / "Task 2" / "HECKTOR_2025_Training_Task_2.csv")
    assert header1 == EXPECTED_HEADER
    assert header2 == EXPECTED_HEADER + ["RFS", "Relapse"]
    pids = [r["PatientID"] for r in rows1]
    assert pids == summary.patient_ids == [r["PatientID"] for r in rows2]
    assert len(set(pids)) == 40
    assert all(re.fullmatch(r"(CHUM|CHUP|CHUS|HGJ|MDA|USZ)-\d{3}", p) for p in pids)
    assert len({p.split("-")[0] for p in pids}) >= 4  # several centres in 40 patients

    centre_ids = {name: cid for name, cid, _ in synthetic.CENTRES}
    for row in rows2:
        pid = row["PatientID"]
        assert int(row["CenterID"]) == centre_ids[pid.split("-")[0]]
        assert sorted(p.name for p in (out / "Task 1" / pid).iterdir()) == [
            f"{pid}.nii.gz",
            f"{pid}__CT.nii.gz",
            f"{pid}__PT.nii.gz",
        ]
        for task in ("Task 2", "Task 3"):
            assert sorted(p.name for p in (out / task / pid).iterdir()) == [f"{pid}__CT.nii.gz", f"{pid}__PT.nii.gz"]
            for name in (f"{pid}__CT.nii.gz", f"{pid}__PT.nii.gz"):
                assert (out / task / pid / name).read_bytes() == (out / "Task 1" / pid / name).read_bytes()
        assert row["Gender"] in {"0", "1"} and row["Treatment"] in {"0", "1"}
        assert row["M-stage"] in {"M0", "M1", "Mx"}
        assert row["Tobacco Consumption"] in {"", "0", "1"} and row["Alcohol Consumption"] in {"", "0", "1"}
        assert row["HPV Status"] in {"", "0", "1"}
        assert row["Performance Status"] in {"", "0", "1", "2", "3", "4"}
        assert row["Age"] == "" or 30 <= int(row["Age"]) <= 90
        assert float(row["RFS"]) >= 1.0 and row["Relapse"] in {"0", "1"}

    header3, rows3 = _read_csv(out / "Task 3" / "HECKTOR_2025_Training_Task_3.csv")
    assert header3 == EXPECTED_HEADER and rows3 == rows1  # the HPV Status column is Task 3's target

    # Missing values are empty cells, at roughly the documented rates (binomial bounds for 40 patients).
    missing = {c: sum(r[c] == "" for r in rows1) / 40 for c in EXPECTED_HEADER}
    assert 0.15 <= missing["Tobacco Consumption"] <= 0.6
    assert 0.15 <= missing["Alcohol Consumption"] <= 0.6
    assert 0.08 <= missing["HPV Status"] <= 0.45
    assert missing["Age"] <= 0.1 and missing["Performance Status"] <= 0.3
    assert missing["PatientID"] == missing["CenterID"] == missing["Gender"] == missing["M-stage"] == 0


def test_labels_lie_on_the_ct_grid_and_match_the_true_tumour(cohort40) -> None:
    out, summary = cohort40
    _, risk_rows = _read_csv(out / "true_risk.csv")
    truth = {r["PatientID"]: r for r in risk_rows}
    for pid in summary.patient_ids[:12]:
        folder = out / "Task 1" / pid
        ct = sitk.ReadImage(str(folder / f"{pid}__CT.nii.gz"))
        pet = sitk.ReadImage(str(folder / f"{pid}__PT.nii.gz"))
        label = sitk.ReadImage(str(folder / f"{pid}.nii.gz"))
        assert ct.GetPixelID() == sitk.sitkInt16 and pet.GetPixelID() == sitk.sitkFloat32
        assert label.GetPixelID() == sitk.sitkUInt8
        assert _grid(label) == _grid(ct)
        assert pet.GetSpacing() != ct.GetSpacing() and pet.GetSize() != ct.GetSize()
        assert max(ct.GetSize()) <= 70 and np.prod(ct.GetSize()) <= 64**3
        assert np.prod(pet.GetSize()) <= 64**3
        # PET reaches further inferiorly than the CT, as whole-body PET fields do.
        assert _inferior_end_z(pet) < _inferior_end_z(ct) - 10.0

        array = sitk.GetArrayFromImage(label)
        assert set(np.unique(array)) <= {0, 1, 2}
        voxel_ml = float(np.prod(label.GetSpacing())) / 1000.0
        true_volume = float(truth[pid]["tumour_volume_ml"])
        assert 5.0 <= true_volume <= 60.0
        assert (array == 1).sum() * voxel_ml == pytest.approx(true_volume, rel=0.15)
        assert ndimage.label(array == 1, FULL_CONNECTIVITY)[1] == 1
        assert ndimage.label(array == 2, FULL_CONNECTIVITY)[1] == int(truth[pid]["n_nodes"])

        ct_array = sitk.GetArrayFromImage(ct)
        assert ct_array.min() <= -990 and ct_array.max() >= 700  # air outside, bone inside
        assert 20.0 <= float(np.median(ct_array[array == 1])) <= 90.0  # tumour is soft tissue


@pytest.mark.parametrize("orientation", synthetic.ORIENTATIONS)
def test_brain_is_the_largest_hot_structure_above_the_tumour(orientation: str) -> None:
    for index in range(3):
        case = synthetic.make_case(SEED, case_index=index, pet_orientation=orientation)
        assert case.pet_orientation == orientation
        pet = sitk.GetArrayFromImage(case.pet)
        components, count = ndimage.label(pet > 4.0, FULL_CONNECTIVITY)
        sizes = ndimage.sum_labels(np.ones_like(pet), components, np.arange(1, count + 1))
        largest = int(np.argmax(sizes)) + 1
        voxel_ml = float(np.prod(case.pet.GetSpacing())) / 1000.0
        brain_index = case.pet.TransformPhysicalPointToIndex(tuple(case.landmarks["brain_centre"]))[::-1]
        tumour_index = case.pet.TransformPhysicalPointToIndex(tuple(case.landmarks["tumour_centre"]))[::-1]
        assert components[brain_index] == largest
        assert sizes[largest - 1] * voxel_ml > 500.0  # ~1 l of brain, far above any tumour (<= 60 ml)
        assert 6.0 <= float(np.median(pet[components == largest])) <= 13.0
        assert components[tumour_index] != largest and pet[tumour_index] > 4.0
        assert case.landmarks["brain_centre"][2] > case.landmarks["tumour_box"][1][2] + 40.0


def test_anatomy_stays_put_when_grid_directions_flip_or_tilt() -> None:
    centroids = {}
    for orientation in synthetic.ORIENTATIONS:
        case = synthetic.make_case(3, case_index=1, ct_orientation=orientation)
        direction = np.array(case.ct.GetDirection()).reshape(3, 3)
        if orientation == "identity":
            assert np.allclose(direction, np.eye(3))
        elif orientation == "flip":
            assert np.allclose(np.abs(direction), np.eye(3)) and not np.allclose(direction, np.eye(3))
        else:
            angle = math.degrees(math.acos(np.clip((np.trace(direction) - 1.0) / 2.0, -1.0, 1.0)))
            assert 5.0 - 1e-6 <= angle <= 15.0 + 1e-6
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(case.label)
        centroids[orientation] = np.array(stats.GetCentroid(1))
        assert case.features == synthetic.make_case(3, case_index=1).features  # forcing changes nothing else
    assert np.linalg.norm(centroids["flip"] - centroids["identity"]) < 1.0
    assert np.linalg.norm(centroids["oblique"] - centroids["identity"]) < 2.0  # less than half a voxel


@pytest.mark.parametrize("orientation", synthetic.ORIENTATIONS)
def test_phantoms_are_painted_on_the_library_grid(orientation: str) -> None:
    # The renderer's voxel-centre coordinates and index boxes agree with hecktor.geometry.Grid's mapping.
    from hecktor.geometry import Grid

    case = synthetic.make_case(4, ct_orientation=orientation)
    grid = Grid.from_image(case.ct)
    box = (slice(3, 6), slice(10, 14), slice(20, 22))  # (z, y, x)
    x, y, z = _coordinates(grid, box, np.zeros(3))
    painted = np.stack(np.broadcast_arrays(x, y, z), axis=-1)
    k, j, i = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
    expected = grid.index_to_physical(np.stack([i, j, k], axis=-1))
    np.testing.assert_allclose(painted, expected, atol=1e-3)
    # The index box of the physical bounding box of those centres holds them all.
    found = _index_box(grid, expected.reshape(-1, 3).min(0), expected.reshape(-1, 3).max(0))
    assert all(f.start <= b.start and b.stop <= f.stop for f, b in zip(found, box))


def test_orientations_vary_across_cases() -> None:
    rng_kinds = [synthetic.make_case(SEED, case_index=i) for i in range(25)]
    kinds = {(c.ct_orientation, c.pet_orientation) for c in rng_kinds}
    assert {k[0] for k in kinds} == set(synthetic.ORIENTATIONS)
    assert {k[1] for k in kinds} == set(synthetic.ORIENTATIONS)
    assert len({c.ct.GetSpacing() for c in rng_kinds}) == 25  # spacing jitter


def test_survival_truth_matches_cohort_json_and_tables(cohort40) -> None:
    out, summary = cohort40
    description = json.loads((out / "cohort.json").read_text())
    assert (description["seed"], description["size"], description["cases"]) == (SEED, "small", 40)
    assert description["true_model"]["coefficients"] == synthetic.TRUE_MODEL

    _, rows2 = _read_csv(out / "Task 2" / "HECKTOR_2025_Training_Task_2.csv")
    _, risk_rows = _read_csv(out / "true_risk.csv")
    risk = {r["PatientID"]: r for r in risk_rows}
    assert set(risk) == {r["PatientID"] for r in rows2}
    time_days = np.array([float(r["RFS"]) for r in rows2])
    relapse = np.array([r["Relapse"] == "1" for r in rows2])
    log_hazard = np.array([float(risk[r["PatientID"]]["true_log_hazard"]) for r in rows2])

    assert 0.2 <= relapse.mean() <= 0.6
    assert description["event_fraction"] == pytest.approx(relapse.mean())
    recomputed = concordance_index_censored(relapse, time_days, log_hazard)[0]
    assert description["oracle_c_index"] == pytest.approx(recomputed, abs=1e-12)
    assert summary.oracle_c_index == pytest.approx(recomputed, abs=1e-12)
    assert recomputed > 0.7

    # Where nothing is missing, the documented model rebuilds the true log-hazard from the table and features.
    complete = [r for r in rows2 if all(r[c] != "" for c in EXPECTED_HEADER)]
    assert len(complete) >= 5
    for row in complete:
        features = risk[row["PatientID"]]
        covariates = {
            "log_tumour_volume_ml": math.log(float(features["tumour_volume_ml"])),
            "suv_max": float(features["suv_max"]),
            "n_nodes": float(features["n_nodes"]),
            "hpv_negative": float(row["HPV Status"] == "0"),
            "age_years": float(row["Age"]),
            "performance_status": float(row["Performance Status"]),
            "m1": float(row["M-stage"] == "M1"),
            "tobacco": float(row["Tobacco Consumption"]),
            "chemoradiotherapy": float(row["Treatment"]),
        }
        expected = sum(m["beta"] * (covariates[k] - m["centre"]) / m["scale"] for k, m in synthetic.TRUE_MODEL.items())
        assert float(features["true_log_hazard"]) == pytest.approx(expected, abs=1e-9)


def test_make_case_equals_the_written_case(cohort40) -> None:
    out, summary = cohort40
    index = 4
    pid = summary.patient_ids[index]
    case = synthetic.make_case(SEED, "small", case_index=index)
    ct = sitk.ReadImage(str(out / "Task 1" / pid / f"{pid}__CT.nii.gz"))
    label = sitk.ReadImage(str(out / "Task 1" / pid / f"{pid}.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(case.ct))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(case.label))
    np.testing.assert_allclose(ct.GetOrigin(), case.ct.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ct.GetDirection(), case.ct.GetDirection(), atol=1e-6)
    assert pid.startswith(case.centre + "-")
    _, rows2 = _read_csv(out / "Task 2" / "HECKTOR_2025_Training_Task_2.csv")
    assert float(rows2[index]["RFS"]) == case.rfs_days and int(rows2[index]["Relapse"]) == case.relapse
    assert set(case.ehr(task=2)) == set(synthetic.CLINICAL_COLUMNS) - {"HPV Status"}
    assert "CenterID" not in case.ehr(task=1)


def test_generator_with_a_numpy_generator_is_reproducible() -> None:
    a = synthetic.make_case(np.random.default_rng(123))
    b = synthetic.make_case(np.random.default_rng(123))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.pet), sitk.GetArrayFromImage(b.pet))
    assert a.true_log_hazard == b.true_log_hazard


def test_bad_arguments_raise_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="size must be one of small, realistic"):
        synthetic.make_case(0, "huge")
    with pytest.raises(InputError, match="ct_orientation"):
        synthetic.make_case(0, ct_orientation="sideways")
    with pytest.raises(InputError, match="cases must be at least 1"):
        synthetic.generate_cohort(tmp_path / "x", 0, 0)

    with pytest.raises(SystemExit) as exit_info:
        synthetic.main(["--out", str(tmp_path / "y"), "--cases", "zero"])
    assert exit_info.value.code == 2
    assert "argument --cases: expected a whole number, got 'zero'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic.main(["--out", str(tmp_path / "y"), "--cases", "2", "--seed", "-1"])
    assert "argument --seed: must be 0 or more" in capsys.readouterr().err

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    assert synthetic.main(["--out", str(occupied), "--cases", "1"]) == 2
    assert f"{occupied} is not empty; choose a new folder or pass --overwrite" in capsys.readouterr().err
    assert synthetic.main(["--out", str(occupied), "--cases", "1", "--overwrite"]) == 0
    assert (occupied / "notes.txt").read_text() == "keep me"  # --overwrite touches only generator outputs
    assert "Wrote 1 small cases" in capsys.readouterr().out


def test_module_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hecktor.synthetic", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--size {small,realistic}" in result.stdout and "--cases" in result.stdout


def test_hpv_status_depends_on_the_record_and_the_images_as_documented() -> None:
    """Version 2 of the generator draws HPV status from HPV_MODEL (record and tumour), with the images of version 1."""
    cases = [synthetic.make_case(5, "small", case_index=i) for i in range(60)]
    for case in cases[:3]:
        assert case.hpv_probability == pytest.approx(synthetic.hpv_probability(
            case.true_clinical, case.features["tumour_volume_ml"], case.features["n_nodes"]))
    status = np.array([c.true_clinical["HPV Status"] for c in cases])
    p = np.array([c.hpv_probability for c in cases])
    # Positive patients had the higher probabilities: the status was drawn from them.
    assert p[status == 1].mean() > p[status == 0].mean() + 0.1
    # Smaller primaries and more nodes raise P(HPV+), smoking lowers it (the model's signs).
    base = {"Tobacco Consumption": 0, "Age": 62}
    assert synthetic.hpv_probability(base, 8.0, 2) > synthetic.hpv_probability(base, 40.0, 2)
    assert synthetic.hpv_probability(base, 20.0, 3) > synthetic.hpv_probability(base, 20.0, 0)
    assert synthetic.hpv_probability({**base, "Tobacco Consumption": 1}, 20.0, 1) < \
        synthetic.hpv_probability(base, 20.0, 1)
    # The oracle's balanced accuracy, recorded in cohort.json, is the Bayes rule's on the recorded statuses.
    assert synthetic.oracle_balanced_accuracy(status, p) > 0.6
    assert synthetic.oracle_balanced_accuracy([1, 1], [0.2, 0.9]) is None
    assert synthetic.oracle_balanced_accuracy([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8]) == 0.5
