"""``hecktor-check-data``: a hostile training-data matrix. A clean synthetic cohort, then one thing broken at a time;
each problem is one line naming the patient's file (or the table's line), at its level, with the exit status the
command gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import SimpleITK as sitk

from hecktor.training.check_data import check_dataset, main
from helpers.broken_cohorts import clean_cohort, cohort  # noqa: F401 (fixtures)
from helpers.broken_cohorts import case_dir as _case
from helpers.broken_cohorts import edit_table as _edit_table
from helpers.broken_cohorts import header_lost as _header_lost
from helpers.broken_cohorts import label_value as _value
from helpers.broken_cohorts import partial_volume as _partial_volume
from helpers.broken_cohorts import rewrite_image as _rewrite_image
from helpers.broken_cohorts import set_cell as _set
from helpers.broken_cohorts import shifted_2_m as _shifted

PID = "CHUM-001"


def _label(cohort: Path) -> Path:
    case = _case(cohort)
    return case / f"{case.name}.nii.gz"


def _pet(cohort: Path, task: int = 1) -> Path:
    case = _case(cohort, task)
    return case / f"{case.name}__PT.nii.gz"


# name: (how to break the cohort, level, the file the line names (a suffix), text the line holds)
MATRIX = {
    "label_header_lost": (lambda c: _rewrite_image(_label(c), _header_lost), "error", ".nii.gz",
                          "not on its CT's grid: size"),
    "label_moved_2_m": (lambda c: _rewrite_image(_label(c), _shifted), "error", ".nii.gz",
                        "not on its CT's grid: origin"),
    "label_partial_volume": (lambda c: _rewrite_image(_label(c), _partial_volume), "error", ".nii.gz",
                             "non-integer values (0.5)"),
    "label_value_3": (lambda c: _rewrite_image(_label(c), _value(3, sitk.sitkUInt8)), "error", ".nii.gz",
                      "values 3 besides 0, 1 (GTVp) and 2 (GTVn)"),
    "label_value_minus_1": (lambda c: _rewrite_image(_label(c), _value(-1, sitk.sitkInt8)), "error", ".nii.gz",
                            "values -1 besides"),
    "label_empty": (lambda c: _rewrite_image(_label(c), lambda i: i * 0), "warning", ".nii.gz", "empty label map"),
    "label_missing": (lambda c: _label(c).unlink(), "error", ".nii.gz", "label map file missing"),
    "ct_missing": (lambda c: (_case(c) / f"{_case(c).name}__CT.nii.gz").unlink(), "error", "__CT.nii.gz",
                   "CT file missing"),
    "pet_unreadable": (lambda c: _pet(c).write_bytes(b"not an image"), "error", "__PT.nii.gz", "cannot read PET"),
    "pet_far_away": (lambda c: _rewrite_image(_pet(c), _shifted), "error", "__PT.nii.gz", "do not overlap"),
    "pet_in_bq_per_ml": (lambda c: _rewrite_image(_pet(c, 2), lambda i: sitk.Cast(i, sitk.sitkFloat32) * 7000.0),
                         "warning", "Task 2", "look like Bq/ml"),
    "rfs_nan": (_set("RFS", "nan"), "error", ")", "RFS 'nan' is not a finite number of days > 0"),
    "rfs_inf": (_set("RFS", "inf"), "error", ")", "RFS 'inf' is not a finite number"),
    "rfs_zero": (_set("RFS", "0"), "error", ")", "RFS '0' is not a finite number of days > 0"),
    "relapse_half": (_set("Relapse", "0.5"), "error", ")", "Relapse '0.5' is not exactly 0 or 1"),
    "relapse_empty": (_set("Relapse", ""), "error", ")", "Relapse '' is not exactly 0 or 1"),
    "hpv_2": (_set("HPV Status", "2", task=3), "error", ")", "HPV Status '2' is not exactly 0 or 1"),
    "patient_twice": (_edit_table(2, lambda rows: rows + [dict(rows[0])]), "error", ")", "is listed 2 times"),
    "row_missing": (_edit_table(2, lambda rows: rows[1:]), "error", ".csv", "no row for case"),
    "row_without_images": (_edit_table(2, lambda rows: rows + [{**rows[0], "PatientID": "GHOST-001"}]), "warning",
                           ".csv", "row GHOST-001 has no case folder"),
    "no_relapse_column": (_edit_table(2, lambda rows: [{k: v for k, v in r.items() if k != "Relapse"}
                                                       for r in rows]), "error", ".csv", "lacks the column(s) Relapse"),
    "age_in_days": (_set("Age", "22630"), "warning", ")", "Age '22630' is not a number of years"),
}


def test_a_clean_cohort_has_no_error_and_counts_what_each_task_trains_on(clean_cohort, capsys):
    assert main([str(clean_cohort), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "0 error(s), 0 warning(s)"
    assert "Task 1: 4 of 4 case(s) usable for training, 4 table row(s)" in out
    assert any(line.startswith("Task 2: 4 of 4 case(s) usable") and "events" in line for line in out)
    assert check_dataset(clean_cohort).findings == []
    assert any(line.startswith("Task 3:") and "HPV-positive" in line for line in out)


@pytest.mark.parametrize("name", list(MATRIX))
def test_each_problem_is_one_line_naming_the_file_at_its_level(name, cohort, capsys):
    breaking, level, suffix, text = MATRIX[name]
    breaking(cohort)
    status = main([str(cohort), "--quiet"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if text in line]
    assert len(lines) == 1, out
    where = lines[0].split(": ")[1]
    assert lines[0].startswith(f"{level}: ") and where.endswith(suffix), lines[0]
    assert "Traceback" not in out
    assert status == (1 if level == "error" else 0)
    assert out.count("error: ") == (1 if level == "error" else 0), out  # nothing else is blamed


def test_the_file_named_is_the_patients(cohort, capsys):
    _rewrite_image(_label(cohort), _partial_volume)
    main([str(cohort), "--quiet"])
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error: ")]
    assert f"Task 1/{_case(cohort).name}/{_case(cohort).name}.nii.gz" in line


def test_hidden_and_stray_entries_are_passed_over_with_a_note(cohort, capsys):
    (cohort / "Task 1" / ".ipynb_checkpoints").mkdir()
    (cohort / "Task 1" / "notes.txt").write_text("x")
    assert main([str(cohort), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "note: " in out and ".ipynb_checkpoints: hidden, passed over" in out
    assert "notes.txt: not a case folder, passed over" in out


def test_a_folder_of_case_folders_is_read_as_the_task_given(clean_cohort, capsys):
    assert main([str(clean_cohort / "Task 1"), "--quiet"]) == 0  # named "Task 1": that task
    assert main([str(clean_cohort / "Task 2"), "--task", "1", "--quiet"]) == 1  # no label maps there
    assert "label map file missing" in capsys.readouterr().out
    assert main([str(clean_cohort / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: data folder not found")


def test_the_real_pet_ct_cases(real_data, capsys):
    """Two real sarcoma PET/CT cases laid out as Task 1 cases: read, on their CT's grid, labels 0/1, PET in SUV."""
    assert main([str(real_data / "petct"), "--task", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Task 1: 2 of 2 case(s) usable for training" in out and "0 error(s), 0 warning(s)" in out

