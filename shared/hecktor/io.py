"""Reading HECKTOR training data and Grand-Challenge inputs; writing the containers' outputs atomically.

Layouts (see ``HECKTOR2025_INTERFACE.md``):

* training: ``<root>/Task 1/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz, <PID>.nii.gz`` and
  ``<root>/Task 1/HECKTOR_2025_Training_Task_1.csv``; Task 2 alike without labels, with RFS columns in its CSV.
* Grand Challenge: ``<input>/images/ct/<uuid>.mha``, ``<input>/images/pet/<uuid>.mha``, ``<input>/ehr.json``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError

IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".nii", ".nii.gz")
TASK_FOLDERS = {1: "Task 1", 2: "Task 2"}
TASK_CSVS = {1: "HECKTOR_2025_Training_Task_1.csv", 2: "HECKTOR_2025_Training_Task_2.csv"}
CLINICAL_COLUMNS = (
    "CenterID",
    "Age",
    "Gender",
    "Tobacco Consumption",
    "Alcohol Consumption",
    "Performance Status",
    "Treatment",
    "M-stage",
    "HPV Status",
)
SURVIVAL_COLUMNS = ("RFS", "Relapse")
MASK_OUTPUT = Path("images/tumor-lymph-node-segmentation/output.mha")
RFS_OUTPUT = Path("rfs.json")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def read_image(path: str | Path, what: str = "image") -> sitk.Image:
    """Read a 3-D scalar image, or raise :class:`InputError` naming the file.

    Rejects missing and unreadable files, vector images, and images that are not 3-D or are flat (a size of 1 along
    an axis: the platform's sanity check uses 1×1 placeholders).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"cannot read {what} {path}: {detail[:200]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"{what} {path} is not a 3-D volume (size {size}); expected a 3-D scan")
    return image


def find_single_image(folder: str | Path) -> Path:
    """The one image file in ``folder`` (.mha, .tif, .tiff, .nii, .nii.gz), or an :class:`InputError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"input folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if _is_image_file(p))
    if not images:
        others = sorted(p.name for p in folder.iterdir())
        seen = f" (found: {', '.join(others[:5])})" if others else " (it is empty)"
        raise InputError(f"no image ({', '.join(IMAGE_SUFFIXES)}) in {folder}{seen}")
    if len(images) > 1:
        names = ", ".join(p.name for p in images[:5])
        raise InputError(f"expected exactly one image in {folder}, found {len(images)}: {names}")
    return images[0]


def read_ehr(path: str | Path) -> dict[str, Any]:
    """Parse ``ehr.json`` into a dict; a missing file, invalid JSON or a non-object is an :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clinical record not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


@dataclass
class CaseInput:
    """One case as the containers see it: CT and PET images and the clinical record."""

    ct: sitk.Image
    pet: sitk.Image
    ehr: dict[str, Any] | None
    ct_path: Path
    pet_path: Path
    warnings: list[str] = field(default_factory=list)


def read_gc_input(input_dir: str | Path, require_ehr: bool = False) -> CaseInput:
    """Read a Grand-Challenge input folder (``images/ct``, ``images/pet``, optional ``ehr.json``).

    A missing ``ehr.json`` is allowed unless ``require_ehr`` (the interface says keys may be missing; the clinical
    encoder then treats every value as unknown); a present but malformed one is an error.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    ct_path = find_single_image(input_dir / "images" / "ct")
    pet_path = find_single_image(input_dir / "images" / "pet")
    ct = read_image(ct_path, "CT")
    pet = read_image(pet_path, "PET")
    ehr_path = input_dir / "ehr.json"
    warnings: list[str] = []
    if ehr_path.exists():
        ehr = read_ehr(ehr_path)
    elif require_ehr:
        raise InputError(f"clinical record not found: {ehr_path}")
    else:
        ehr = None
        warnings.append(f"{ehr_path} is absent: clinical values are treated as unknown")
    return CaseInput(ct=ct, pet=pet, ehr=ehr, ct_path=ct_path, pet_path=pet_path, warnings=warnings)


def _atomic_target(path: Path) -> tuple[Path, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is an atomic rename on one file system; keep the suffix so that
    # SimpleITK picks the right writer.
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    return path, Path(tmp_name)


def write_mask(mask: sitk.Image, path: str | Path) -> Path:
    """Write a label map as compressed UInt8 ``.mha``: to a temporary file first, then renamed, so a crash never
    leaves a partial output behind."""
    path, tmp = _atomic_target(Path(path))
    try:
        sitk.WriteImage(sitk.Cast(mask, sitk.sitkUInt8), str(tmp), True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_rfs(risk: float, path: str | Path) -> Path:
    """Write one bare JSON number (the Task 2 risk score) atomically; a non-finite value is refused."""
    value = float(risk)
    if not math.isfinite(value):
        raise ValueError(f"refusing to write a non-finite risk score ({value}) to {path}")
    path, tmp = _atomic_target(Path(path))
    try:
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------------------------------- training data


@dataclass
class TrainingCase:
    """One HECKTOR training case on disk."""

    patient_id: str
    ct_path: Path
    pet_path: Path
    label_path: Path | None

    def read(self) -> tuple[sitk.Image, sitk.Image, sitk.Image | None]:
        ct = read_image(self.ct_path, "CT")
        pet = read_image(self.pet_path, "PET")
        label = read_image(self.label_path, "label") if self.label_path is not None else None
        return ct, pet, label


def task_folder(root: str | Path, task: int) -> Path:
    """``<root>/Task N``; ``root`` may also be that folder itself."""
    root = Path(root)
    if task not in TASK_FOLDERS:
        raise InputError(f"task must be 1 or 2, got {task}")
    folder = root if root.name == TASK_FOLDERS[task] else root / TASK_FOLDERS[task]
    if not folder.is_dir():
        raise InputError(f"HECKTOR folder not found: {folder} (expected '{TASK_FOLDERS[task]}' inside {root})")
    return folder


def _parse_number(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_clinical_csv(path: str | Path, require_survival: bool = False) -> list[dict[str, Any]]:
    """Rows of a HECKTOR clinical CSV as dicts. Empty cells become ``None``; other values stay strings for the
    clinical encoder, except ``RFS`` (float) and ``Relapse`` (int) which are parsed and, with
    ``require_survival``, required in every row."""
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
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = {k: (v.strip() if isinstance(v, str) and v.strip() != "" else None) for k, v in raw.items()}
            if not row.get("PatientID"):
                raise InputError(f"{path} line {line}: empty PatientID")
            if "RFS" in row:
                row["RFS"] = _parse_number(row["RFS"])
            if "Relapse" in row:
                relapse = _parse_number(row["Relapse"])
                row["Relapse"] = None if relapse is None else int(relapse)
            if require_survival:
                if row["RFS"] is None or row["Relapse"] not in (0, 1) or row["RFS"] < 0:
                    raise InputError(
                        f"{path} line {line} ({row['PatientID']}): RFS must be a number >= 0 and Relapse 0 or 1"
                    )
            rows.append(row)
    return rows


def list_training_cases(root: str | Path, task: int, require_label: bool | None = None) -> list[TrainingCase]:
    """The cases of ``<root>/Task N`` in sorted PatientID order. Task 1 cases need their label file."""
    folder = task_folder(root, task)
    require_label = (task == 1) if require_label is None else require_label
    cases = []
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        pid = case_dir.name
        ct = case_dir / f"{pid}__CT.nii.gz"
        pet = case_dir / f"{pid}__PT.nii.gz"
        label = case_dir / f"{pid}.nii.gz"
        for path, what in ((ct, "CT"), (pet, "PET")):
            if not path.is_file():
                raise InputError(f"case {pid}: {what} file missing: {path}")
        if require_label and not label.is_file():
            raise InputError(f"case {pid}: label file missing: {label}")
        cases.append(TrainingCase(pid, ct, pet, label if label.is_file() else None))
    if not cases:
        raise InputError(f"no case folders in {folder}")
    return cases


def read_training_table(root: str | Path, task: int) -> list[dict[str, Any]]:
    """The task's clinical CSV, restricted to (and checked against) the case folders present."""
    folder = task_folder(root, task)
    rows = read_clinical_csv(folder / TASK_CSVS[task], require_survival=(task == 2))
    present = {case.patient_id for case in list_training_cases(root, task)}
    by_id = {row["PatientID"]: row for row in rows}
    missing = sorted(present - set(by_id))
    if missing:
        raise InputError(f"{folder / TASK_CSVS[task]} has no row for case(s) {', '.join(missing[:5])}")
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


def ehr_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ehr.json`` the platform would give for a training-table row: the clinical columns that the test
    record carries (no HPV Status, no survival), numbers as numbers, missing values as null."""
    ehr: dict[str, Any] = {}
    for column in CLINICAL_COLUMNS:
        if column == "HPV Status" or column not in row:
            continue
        value = row[column]
        if isinstance(value, str):
            number = _parse_number(value)
            value = value if number is None else (int(number) if number.is_integer() else number)
        elif isinstance(value, float) and np.isnan(value):
            value = None
        ehr[column] = value
    return ehr


def training_case_to_gc_input(case: TrainingCase, row: Mapping[str, Any] | None, out_dir: str | Path, seed: int = 0) -> Path:
    """Convert a HECKTOR training case (and its CSV row) into a Grand-Challenge input folder."""
    ct, pet, _ = case.read()
    return write_gc_input(ct, pet, out_dir, ehr_from_row(row) if row is not None else None, seed=seed)
