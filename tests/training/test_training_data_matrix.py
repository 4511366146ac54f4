"""The hostile training-data matrix (issue 23): each problem of "silently wrong training data" put into a tiny synthetic
cohort, one at a time, and run through the real trainer entry points (``train_segmentation.py``, ``train_prognosis.py``,
``train_hpv.py``). Every error stops the trainer at its data check, before any preprocessing or training: one line
naming the patient and the file, exit status 2 (a wrong input), no traceback, no run folder content. What the library
repairs while caching (a PET in Bq/ml, a PET of 8 slices, an empty label map) is shown in one summary block at the end
of preprocessing and kept in ``RUN_DIR/data_repairs.json``.

The containers' matrix is ``tests/helpers/hostile_inputs.py``; ``tests/training/test_check_data.py`` runs the same
problems through ``hecktor-check-data`` itself.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import SimpleITK as sitk

import train_hpv
import train_prognosis
import train_segmentation
from hecktor.datasets import list_training_cases
from hecktor.training.cache import REPAIRS_JSON
from hecktor.training.segmentation import SegmentationTrainer, TrainingConfig, load_config_file
from helpers.broken_cohorts import clean_cohort, cohort  # noqa: F401 (fixtures)
from helpers.broken_cohorts import (case_dir, edit_table, header_lost, label_value, partial_volume, rewrite_image,
                                    set_cell, shifted_2_m, table_path)
from helpers.paths import REPO

TINY = load_config_file(REPO / "training" / "configs" / "tiny.json")


def _file(kind: str, task: int = 1):
    """The first patient's label map (``""``), CT (``"__CT"``) or PET (``"__PT"``) of ``task``."""
    def path(cohort: Path) -> Path:
        case = case_dir(cohort, task)
        return case / f"{case.name}{kind}.nii.gz"
    return path


def _rewrite(which, edit):
    return lambda cohort: rewrite_image(which(cohort), edit)


def _all_labels_empty(cohort: Path) -> None:
    for case in (cohort / "Task 1").iterdir():
        if case.is_dir():
            rewrite_image(case / f"{case.name}.nii.gz", lambda image: image * 0)


def _segmentation(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--config", str(REPO / "training" / "configs" / "tiny.json"),
            "--device", "cpu", "--workers", "0", "--no-progress"]


def _prognosis(data: Path, out: Path) -> list[str]:
    return ["--mode", "clinical", "--data", str(data), "--out", str(out), "--folds", "2", "--no-progress"]


def _hpv(data: Path, out: Path) -> list[str]:
    return ["--mode", "clinical", "--data", str(data), "--out", str(out), "--folds", "2", "--no-progress"]


TRAINERS = {1: (train_segmentation.main, _segmentation), 2: (train_prognosis.main, _prognosis),
            3: (train_hpv.main, _hpv)}

# name: (how to break the cohort, the trainer (task) that reads it, the end of the path the line names, its text)
MATRIX = {
    "label_header_lost": (_rewrite(_file(""), header_lost), 1, ".nii.gz", "not on its CT's grid: size"),
    "label_shifted_2_m": (_rewrite(_file(""), shifted_2_m), 1, ".nii.gz", "not on its CT's grid: origin"),
    "label_float_0_5": (_rewrite(_file(""), partial_volume), 1, ".nii.gz", "non-integer values (0.5)"),
    "label_3": (_rewrite(_file(""), label_value(3, sitk.sitkUInt8)), 1, ".nii.gz", "values 3 besides 0, 1"),
    "label_minus_1": (_rewrite(_file(""), label_value(-1, sitk.sitkInt8)), 1, ".nii.gz", "values -1 besides 0, 1"),
    "pet_not_overlapping_ct": (_rewrite(_file("__PT"), shifted_2_m), 1, "__PT.nii.gz", "do not overlap"),
    "all_labels_empty": (_all_labels_empty, 1, "Task 1", "every label map is empty"),
    "rfs_nan": (set_cell("RFS", "nan"), 2, ")", "RFS 'nan' is not a finite number of days > 0"),
    "rfs_inf": (set_cell("RFS", "inf"), 2, ")", "RFS 'inf' is not a finite number of days > 0"),
    "relapse_0_5": (set_cell("Relapse", "0.5"), 2, ")", "Relapse '0.5' is not exactly 0 or 1"),
    "patient_twice": (edit_table(2, lambda rows: rows + [dict(rows[0])]), 2, ")", "is listed 2 times"),
    "all_censored": (edit_table(2, lambda rows: [{**r, "Relapse": "0"} for r in rows]), 2, ".csv",
                     "every patient is censored"),
    "hpv_status_2": (set_cell("HPV Status", "2", task=3), 3, ")", "HPV Status '2' is not exactly 0 or 1"),
}


def _first_row(cohort: Path, task: int) -> str:
    with table_path(cohort, task).open(newline="") as handle:
        return next(csv.DictReader(handle))["PatientID"]


def _run(task: int, cohort: Path, out: Path, capsys) -> tuple[int, str, str]:
    main, arguments = TRAINERS[task]
    status = main(arguments(cohort, out))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("name", list(MATRIX))
def test_each_problem_stops_its_trainer_before_training_with_one_line_naming_the_file(name, cohort, tmp_path,
                                                                                       capsys):
    breaking, task, suffix, text = MATRIX[name]
    patient = _first_row(cohort, task) if suffix == ")" else case_dir(cohort, task).name
    breaking(cohort)
    out_dir = tmp_path / "run"
    status, out, err = _run(task, cohort, out_dir, capsys)
    lines = [line for line in out.splitlines() if text in line]
    assert len(lines) == 1, out
    level, where, _ = lines[0].split(": ", 2)
    assert level == "error" and where.endswith(suffix), lines[0]
    if suffix in (")", ".nii.gz", "__PT.nii.gz"):  # the broken patient's, by name
        assert patient in where, lines[0]
    assert status == 2
    assert [line for line in out.splitlines() if line.startswith("error: ")] == lines  # nothing else is blamed
    assert err.startswith("error: 1 error(s)") and err.count("\n") == 1, err  # the summary, one line
    assert "Traceback" not in out + err
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing preprocessed, trained or written


def test_a_hidden_folder_is_passed_over_by_the_check_and_by_the_trainer(cohort, tmp_path, capsys):
    (cohort / "Task 1" / ".ipynb_checkpoints").mkdir()
    _rewrite(_file(""), partial_volume)(cohort)  # so that the trainer stops at its check
    status, out, err = _run(1, cohort, tmp_path / "run", capsys)
    assert status == 2
    assert [line for line in out.splitlines() if ".ipynb_checkpoints" in line] == [
        f"note: {cohort / 'Task 1' / '.ipynb_checkpoints'}: hidden, passed over"]
    assert "CT file missing" not in out + err
    assert [case.patient_id for case in list_training_cases(cohort, 1)] == sorted(
        p.name for p in (cohort / "Task 1").iterdir() if p.is_dir() and not p.name.startswith("."))


def test_the_csv_of_clinical_mode_is_checked_too(cohort, tmp_path, capsys):
    set_cell("Relapse", "0.5")(cohort)
    table = table_path(cohort, 2)
    status = train_prognosis.main(["--mode", "clinical", "--csv", str(table), "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert status == 2 and "Traceback" not in out + err
    (line,) = [line for line in out.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {table} line 2 (") and "Relapse '0.5' is not exactly 0 or 1" in line


# ------------------------------------------------------------------------------------------------- repairs summary
def _bq_per_ml(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(image, sitk.sitkFloat32) * 7000.0


def _eight_slices(image: sitk.Image) -> sitk.Image:
    return image[:, :, :8]  # the lowest 8 slices: the head (brain) is out of the PET's field of view


def test_repairs_are_shown_once_at_the_end_of_preprocessing_and_kept_in_the_run(cohort, tmp_path, capsys):
    cases = sorted(p.name for p in (cohort / "Task 1").iterdir() if p.is_dir())
    rewrite_image(cohort / "Task 1" / cases[0] / f"{cases[0]}__PT.nii.gz", _bq_per_ml)
    rewrite_image(cohort / "Task 1" / cases[1] / f"{cases[1]}__PT.nii.gz", _eight_slices)
    rewrite_image(cohort / "Task 1" / cases[2] / f"{cases[2]}.nii.gz", lambda image: image * 0)
    run_dir = tmp_path / "run"
    config = TrainingConfig.from_dict({**TINY, "data_root": str(cohort), "run_dir": str(run_dir),
                                       "cache_dir": str(tmp_path / "cache"), "workers": 0, "progress": False})
    SegmentationTrainer(config).prepare()  # the trainer's preprocessing, without its training
    out = capsys.readouterr().out.splitlines()
    start = [i for i, line in enumerate(out) if line.startswith("data repairs:")]
    assert len(start) == 1, out  # one block
    assert out[start[0]] == (f"data repairs: preprocessing repaired or dropped something in 3 of 4 case(s); every "
                             f"line in {run_dir / REPAIRS_JSON}")
    block = out[start[0] + 1:]
    assert f"  PET read as Bq/ml and divided by the body's median uptake (an approximate SUV): 1 case(s) ({cases[0]})" \
        in block
    assert any(line.startswith("  head and neck not found in the PET") and f"({cases[1]})" in line for line in block)
    assert f"  empty label map: trained as a case without tumour: 1 case(s) ({cases[2]})" in block
    record = json.loads((run_dir / REPAIRS_JSON).read_text())
    assert record["cases"] == 4 and record["repaired"] == 3 and sorted(record["by_case"]) == cases[:3]
    assert "read as Bq/ml and divided by" in record["by_case"][cases[0]][0]
    # Reused entries report the same: nothing is lost when the cache is warm.
    SegmentationTrainer(config).prepare()
    again = capsys.readouterr().out
    assert "in 3 of 4 case(s)" in again
    assert json.loads((run_dir / REPAIRS_JSON).read_text()) == record
