"""The organisers' SUV conversion table (hecktor.suv_table): the factor of each row, the exact conversion of a training
PET when it is read, and one error naming the line and the patient for each bad row."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.datasets import TrainingCase, list_training_cases
from hecktor.errors import InputError
from hecktor.repair import repair_case
from hecktor.suv_table import read_suv_table, unconverted_bqml_warning

COLUMNS = ["pid", "units", "patient_weight_kg", "radiopharmaceutical", "radionuclide_total_dose_bq",
           "radionuclide_half_life_sec", "elapsed_seconds_injection_to_scan", "decay_corrected_dose_at_scan_bq",
           "dose_for_suv_bq", "bqml_to_suvbw_factor"]


def row(pid: str, units: str = "BQML", weight: str | float = 72.5, dose: str | float = 2.9e8,
        factor: str | float | None = None) -> dict[str, str]:
    """A row as the organisers write it: the factor is weight x 1000 / dose unless given."""
    if factor is None:
        factor = float(weight) * 1000.0 / float(dose) if weight != "" and dose != "" else ""
    return {"pid": pid, "units": units, "patient_weight_kg": str(weight), "radiopharmaceutical": "Fluorodeoxyglucose",
            "radionuclide_total_dose_bq": "3.7e8", "radionuclide_half_life_sec": "6586.2",
            "elapsed_seconds_injection_to_scan": "3900", "decay_corrected_dose_at_scan_bq": str(dose),
            "dose_for_suv_bq": str(dose), "bqml_to_suvbw_factor": factor if isinstance(factor, str) else repr(factor)}


def write_table(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def pet_image(values: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-20.0, 10.0, -40.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def test_each_row_gives_weight_over_dose_or_the_tables_factor(tmp_path):
    table = read_suv_table(write_table(tmp_path / "suv.csv", [
        row("CHUP-014", weight=81.0, dose=3.12e8),
        row("MDA-300", weight="", dose="", factor=2.4e-4),  # weight and dose missing: the table's factor
        row("CHUM-001", units="GML", weight="", dose="", factor=""),  # already SUV: left as it is
        row("HGJ-007", units="cnts", weight="", dose="", factor=""),  # counts: no factor
    ]))
    assert len(table) == 4 and "CHUP-014" in table and "CHUP-999" not in table
    assert table.factor("CHUP-014") == 81.0 * 1000.0 / 3.12e8
    assert table.factor("MDA-300") == 2.4e-4
    assert table.factor("CHUM-001") is None and table.factor("HGJ-007") is None and table.factor("CHUP-999") is None
    assert table.rows["HGJ-007"].units == "CNTS" and table.rows["MDA-300"].line == 3
    rounded = read_suv_table(write_table(tmp_path / "rounded.csv", [row("A-1", factor=0.00025 * (1 + 5e-6))]))
    assert rounded.factor("A-1") == 72.5 * 1000.0 / 2.9e8  # within the tolerance: weight and dose decide


def test_a_listed_pet_is_read_as_value_times_factor_and_the_heuristic_stays_idle(tmp_path):
    rng = np.random.default_rng(3)
    bqml = rng.uniform(2000.0, 9000.0, size=(12, 14, 16))
    factor = 72.5 * 1000.0 / 2.9e8
    pet = pet_image(bqml)
    ct = pet_image(np.zeros_like(bqml))  # soft tissue everywhere: the body is the whole field of view
    for name, image in (("CT", ct), ("PT", pet)):
        sitk.WriteImage(image, str(tmp_path / f"P1__{name}.nii.gz"))
    case = TrainingCase("P1", tmp_path / "P1__CT.nii.gz", tmp_path / "P1__PT.nii.gz", None, factor)
    _, read, _ = case.read()
    assert read.GetSize() == pet.GetSize() and read.GetSpacing() == pet.GetSpacing()
    assert read.GetOrigin() == pet.GetOrigin() and read.GetDirection() == pet.GetDirection()
    np.testing.assert_allclose(sitk.GetArrayFromImage(read), bqml * factor, rtol=1e-6)
    _, repaired, warnings = repair_case(*case.read()[:2])
    assert warnings == []  # in SUV already (body about 1.3): nothing for the Bq/ml heuristic to divide
    np.testing.assert_allclose(sitk.GetArrayFromImage(repaired), bqml * factor, rtol=1e-6)
    unlisted = TrainingCase("P1", case.ct_path, case.pet_path, None)
    assert any("read as Bq/ml" in line for line in repair_case(*unlisted.read()[:2])[2])


def test_list_training_cases_gives_the_listed_bqml_patients_their_factor(tmp_path):
    folder = tmp_path / "DATA" / "Task 2"
    for pid in ("A-1", "B-2", "C-3"):
        (folder / pid).mkdir(parents=True)
        for kind in ("CT", "PT"):
            (folder / pid / f"{pid}__{kind}.nii.gz").write_bytes(b"")
    table = write_table(tmp_path / "suv.csv", [row("A-1", weight=60.0, dose=2.0e8),
                                               row("B-2", units="GML", weight="", dose="", factor="")])
    cases = list_training_cases(tmp_path / "DATA", 2, suv_table=table)
    assert [(c.patient_id, c.suv_factor) for c in cases] == [("A-1", 3.0e-4), ("B-2", None), ("C-3", None)]
    assert all(c.suv_factor is None for c in list_training_cases(tmp_path / "DATA", 2))


# name: (the rows or the columns of the table, the text of its one error after "line N (PID): ")
BAD_TABLES = {
    "factor_disagrees": ([row("A-1"), row("MDA-301", factor=72.5 * 1000.0 / 2.9e8 * (1 + 2e-5))], 3, "MDA-301",
                         "bqml_to_suvbw_factor 0.000250005 disagrees with patient_weight_kg x 1000 / dose_for_suv_bq = "
                         "0.00025 (relative difference above 1e-05)"),
    "listed_twice": ([row("A-1"), row("B-2"), row("A-1", weight=90.0)], 4, "A-1",
                     "patient A-1 is listed twice (lines 2 and 4); keep one row"),
    "no_factor": ([row("MDA-302", weight="", dose="", factor="")], 2, "MDA-302", "units BQML without a factor"),
    "factor_nan": ([row("MDA-303", weight="", dose="", factor="nan")], 2, "MDA-303",
                   "bqml_to_suvbw_factor nan is not a finite number > 0"),
    "factor_negative": ([row("MDA-304", weight="", dose="", factor=-2.4e-4)], 2, "MDA-304",
                        "bqml_to_suvbw_factor -0.00024 is not a finite number > 0"),
    "dose_zero": ([row("MDA-305", weight=70.0, dose=0.0, factor="")], 2, "MDA-305",
                  "patient_weight_kg 70 and dose_for_suv_bq 0 must be finite and > 0"),
    "weight_text": ([row("MDA-306", weight="seventy", factor=2.4e-4)], 2, "MDA-306", "patient_weight_kg 'seventy' is not a number"),
    "units_empty": ([row("MDA-307", units="")], 2, "MDA-307", "empty units"),
}


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_each_bad_row_is_one_error_naming_the_line_and_the_patient(name, tmp_path):
    rows, line, pid, text = BAD_TABLES[name]
    path = write_table(tmp_path / "suv.csv", rows)
    with pytest.raises(InputError) as caught:
        read_suv_table(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line {line} ({pid}): ") and text in message and "\n" not in message, message


def test_a_table_without_a_column_it_needs_or_a_pid_is_refused(tmp_path):
    path = write_table(tmp_path / "suv.csv", [row("A-1")], [c for c in COLUMNS if c != "dose_for_suv_bq"])
    with pytest.raises(InputError, match=r"suv.csv lacks the column\(s\) dose_for_suv_bq of the organisers'"):
        read_suv_table(path)
    with pytest.raises(InputError, match=r"suv.csv line 3: empty pid"):
        read_suv_table(write_table(tmp_path / "suv.csv", [row("A-1"), row("")]))
    with pytest.raises(InputError, match="SUV conversion table not found"):
        read_suv_table(tmp_path / "absent.csv")


def test_the_warning_lists_the_unconverted_pets_with_the_option_that_fixes_them(tmp_path):
    assert unconverted_bqml_warning([]) is None
    line = unconverted_bqml_warning(["CHUP-014", "MDA-300"])
    assert line.startswith("2 training PET(s) look like Bq/ml and have no factor (no conversion table given): "
                           "CHUP-014, MDA-300; ") and line.endswith("--suv-table suv_conversion_tags.csv")
    many = unconverted_bqml_warning([f"MDA-{300 + k}" for k in range(51)])
    assert "MDA-319, ... (51 in all)" in many and "MDA-320" not in many
