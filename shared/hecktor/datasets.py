"""Reading HECKTOR training data, and laying a training case out as a Grand-Challenge input folder.

The training layout (the distributed data; docs/reference/platform-interface.md):
``<root>/Task 1/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz, <PID>.nii.gz`` and
``<root>/Task 1/HECKTOR_2025_Training_Task_1.csv``; Task 2 and Task 3 alike without label maps, with their targets
in their CSV (folders and tables per task: :mod:`hecktor.tasks`). :func:`write_gc_input` and
:func:`training_case_to_gc_input` write a case as the platform gives it to a container (``images/ct/<uuid>.mha``,
``images/pet/<uuid>.mha``, ``ehr.json``), for tests, benchmarks and the demo.
"""

from __future__ import annotations

import csv
import json
import math
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.images import read_image
from hecktor.suv_table import SuvTable, as_suv_table, to_suv
from hecktor.tasks import CLINICAL_COLUMNS, get_task

__all__ = ["SURVIVAL_COLUMNS", "TrainingCase", "task_folder", "read_clinical_csv", "list_training_cases",
           "read_training_table", "write_gc_input", "ehr_from_row", "training_case_to_gc_input"]

SURVIVAL_COLUMNS = ("RFS", "Relapse")


@dataclass
class TrainingCase:
    """One HECKTOR training case on disk. ``suv_factor``: its PET is in Bq/ml and is read as SUV, every voxel times
    this factor (the organisers' conversion table, :mod:`hecktor.suv_table`), before any screening or repair."""

    patient_id: str
    ct_path: Path
    pet_path: Path
    label_path: Path | None
    suv_factor: float | None = None

    def read(self) -> tuple[sitk.Image, sitk.Image, sitk.Image | None]:
        ct = read_image(self.ct_path, "CT")
        pet = read_image(self.pet_path, "PET")
        if self.suv_factor is not None:
            pet = to_suv(pet, self.suv_factor)
        label = read_image(self.label_path, "label") if self.label_path is not None else None
        return ct, pet, label


def task_folder(root: str | Path, task: int | str) -> Path:
    """``<root>/Task N`` (the task's training folder in the registry); ``root`` may also be that folder itself."""
    root = Path(root)
    try:
        name = get_task(task).training_folder
    except ValueError as error:
        raise InputError(str(error)) from None
    folder = root if root.name == name else root / name
    if not folder.is_dir():
        raise InputError(f"HECKTOR folder not found: {folder} (expected '{name}' inside {root})")
    return folder


def _parse_number(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_clinical_csv(path: str | Path, require_survival: bool = False) -> list[dict[str, Any]]:
    """Rows of a HECKTOR clinical CSV (or a predictions table) as dicts: the one parser of outcomes, for the trainers
    and ``hecktor-evaluate`` alike.

    Empty cells become ``None``; other values stay strings for the clinical encoder, except ``RFS`` (float) and
    ``Relapse`` (int). A filled ``RFS`` must be a finite number of days > 0 and a filled ``Relapse`` exactly 0 or 1
    (a 0.5 is refused, never truncated); with ``require_survival`` both are required in every row. A patient listed
    twice is refused, naming the patient and both lines. Each refusal is an :class:`InputError` naming the table's
    line and the patient.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clinical table not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "PatientID" not in columns:
            raise InputError(f"{path} has no PatientID column (columns: {', '.join(columns)})")
        needed = SURVIVAL_COLUMNS if require_survival else ()
        missing = [c for c in needed if c not in columns]
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(missing)}")
        rows, line_of = [], {}
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = {k: (v.strip() if isinstance(v, str) and v.strip() != "" else None)
                                   for k, v in raw.items()}
            pid = row.get("PatientID")
            if not pid:
                raise InputError(f"{path} line {line}: empty PatientID")
            if pid in line_of:
                raise InputError(f"{path} line {line}: patient {pid} is listed twice (lines {line_of[pid]} and "
                                 f"{line}); keep one row")
            line_of[pid] = line
            where = f"{path} line {line} ({pid})"
            if "RFS" in row:
                row["RFS"] = _outcome(row["RFS"], where, "RFS", "a finite number of days > 0",
                                      lambda v: math.isfinite(v) and v > 0)
            if "Relapse" in row:
                relapse = _outcome(row["Relapse"], where, "Relapse", "exactly 0 or 1", lambda v: v in (0.0, 1.0))
                row["Relapse"] = None if relapse is None else int(relapse)
            if require_survival and (row["RFS"] is None or row["Relapse"] is None):
                raise InputError(f"{where}: RFS and Relapse are required (RFS a number of days > 0, Relapse 0 or 1)")
            rows.append(row)
    return rows


def _outcome(cell: str | None, where: str, column: str, expected: str, valid) -> float | None:
    """An outcome cell as a float (``None`` when empty), or an :class:`InputError` naming the line."""
    if cell is None:
        return None
    try:
        value = float(cell)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise InputError(f"{where}: {column} {cell!r} is not {expected}")
    return value


def list_training_cases(root: str | Path, task: int | str, require_label: bool | None = None,
                        suv_table: SuvTable | str | Path | None = None) -> list[TrainingCase]:
    """The cases of ``<root>/Task N`` in sorted PatientID order. Cases of a task with label maps need theirs. A
    patient listed in ``suv_table`` (:func:`hecktor.suv_table.read_suv_table`) with units BQML gets its factor."""
    folder = task_folder(root, task)
    suv_table = as_suv_table(suv_table)
    require_label = get_task(task).has_label_maps if require_label is None else require_label
    cases = []
    # A hidden folder (.ipynb_checkpoints) is no case: hecktor-check-data notes it and passes it over.
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pid = case_dir.name
        ct = case_dir / f"{pid}__CT.nii.gz"
        pet = case_dir / f"{pid}__PT.nii.gz"
        label = case_dir / f"{pid}.nii.gz"
        for path, what in ((ct, "CT"), (pet, "PET")):
            if not path.is_file():
                raise InputError(f"case {pid}: {what} file missing: {path}")
        if require_label and not label.is_file():
            raise InputError(f"case {pid}: label file missing: {label}")
        factor = suv_table.factor(pid) if suv_table is not None else None
        cases.append(TrainingCase(pid, ct, pet, label if label.is_file() else None, factor))
    if not cases:
        raise InputError(f"no case folders in {folder}")
    return cases


def read_training_table(root: str | Path, task: int | str) -> list[dict[str, Any]]:
    """The task's clinical CSV, restricted to (and checked against) the case folders present."""
    folder = task_folder(root, task)
    spec = get_task(task)
    table = folder / spec.training_csv
    rows = read_clinical_csv(table, require_survival=set(SURVIVAL_COLUMNS) <= set(spec.target_columns))
    present = {case.patient_id for case in list_training_cases(root, task)}
    by_id = {row["PatientID"]: row for row in rows}
    missing = sorted(present - set(by_id))
    if missing:
        raise InputError(f"{table} has no row for case(s) {', '.join(missing[:5])}")
    return [by_id[pid] for pid in sorted(present)]


# ------------------------------------------------------------------------------------- Grand-Challenge input folders


def write_gc_input(
    ct: sitk.Image,
    pet: sitk.Image,
    out_dir: str | Path,
    ehr: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Lay out one case as the platform does: UUID-named ``.mha`` files in ``images/ct`` and ``images/pet`` plus
    ``ehr.json``. The UUIDs come from ``seed`` so the folder is reproducible."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    for image, modality in ((ct, "ct"), (pet, "pet")):
        folder = out_dir / "images" / modality
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.UUID(int=rng.getrandbits(128), version=4)
        sitk.WriteImage(image, str(folder / f"{name}.mha"), True)
    if ehr is not None:
        (out_dir / "ehr.json").write_text(json.dumps(dict(ehr), indent=2))
    return out_dir


def ehr_from_row(row: Mapping[str, Any], task: int | str = 2) -> dict[str, Any]:
    """The ``ehr.json`` the platform would give ``task`` for a training-table row: the task's record keys
    (:attr:`hecktor.tasks.TaskSpec.ehr_keys`: no HPV Status, no survival), numbers as numbers, missing values as
    null."""
    keys = get_task(task).ehr_keys
    ehr: dict[str, Any] = {}
    for column in CLINICAL_COLUMNS:
        if column not in keys or column not in row:
            continue
        value = row[column]
        if isinstance(value, str):
            number = _parse_number(value)
            value = value if number is None else (int(number) if number.is_integer() else number)
        elif isinstance(value, float) and np.isnan(value):
            value = None
        ehr[column] = value
    return ehr


def training_case_to_gc_input(case: TrainingCase, row: Mapping[str, Any] | None, out_dir: str | Path,
                              seed: int = 0) -> Path:
    """Convert a HECKTOR training case (and its CSV row) into a Grand-Challenge input folder."""
    ct, pet, _ = case.read()
    return write_gc_input(ct, pet, out_dir, ehr_from_row(row) if row is not None else None, seed=seed)
