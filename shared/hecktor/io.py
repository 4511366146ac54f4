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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.tasks import CLINICAL_COLUMNS as _CLINICAL_COLUMNS
from hecktor.tasks import get_task

IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".nii", ".nii.gz")
CLINICAL_COLUMNS = _CLINICAL_COLUMNS  # declared once, in hecktor.tasks
SURVIVAL_COLUMNS = ("RFS", "Relapse")


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


def is_placeholder(image: sitk.Image) -> bool:
    """A flat stand-in rather than a scan: a 2-D image, or a 3-D one with a size of 1 along some axis (the platform's
    sanity check sends 1x1 and 1x1x1 images)."""
    return image.GetDimension() == 2 or (image.GetDimension() == 3 and min(image.GetSize()) < 2)


def read_image_or_placeholder(path: str | Path, what: str = "image") -> tuple[sitk.Image, bool]:
    """As :func:`read_image`, but a flat placeholder (:func:`is_placeholder`) is returned as it is, flagged ``True``,
    instead of refused: the platform's sanity check must get a valid output."""
    path = Path(path)
    try:
        return read_image(path, what), False
    except InputError as refused:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise refused from None
        if image.GetNumberOfComponentsPerPixel() != 1 or not is_placeholder(image):
            raise refused from None
        return image, True


@dataclass
class CaseInput:
    """One case as a container sees it: CT and PET images and the clinical record.

    Attributes:
        ct, pet: the images as read (a flat placeholder is kept as it is; see ``placeholder``).
        ehr: the clinical record, or ``None`` when absent or not read.
        ct_path, pet_path: the files read.
        warnings: what reading repaired or assumed, one line each.
        placeholder: CT or PET is a flat placeholder image, not a scan.
    """

    ct: sitk.Image
    pet: sitk.Image
    ehr: dict[str, Any] | None
    ct_path: Path
    pet_path: Path
    warnings: list[str] = field(default_factory=list)
    placeholder: bool = False


def read_case(input_dir: str | Path, *, with_ehr: bool = True) -> CaseInput:
    """Read a Grand-Challenge input folder: ``images/ct/<uuid>.*``, ``images/pet/<uuid>.*`` and ``ehr.json``.

    A flat placeholder image is read as it is, with a warning (``CaseInput.placeholder``). With ``with_ehr`` a
    missing ``ehr.json`` means every clinical value is unknown (with a warning) and a malformed one is an
    :class:`InputError`; without it ``ehr.json`` is not read at all (segmentation does not use it, so it must not
    fail a case).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    ct_path = find_single_image(input_dir / "images" / "ct")
    pet_path = find_single_image(input_dir / "images" / "pet")
    warnings: list[str] = []
    images, placeholder = [], False
    for path, what in ((ct_path, "CT"), (pet_path, "PET")):
        image, flat = read_image_or_placeholder(path, what)
        if flat:
            size = "x".join(str(s) for s in image.GetSize())
            warnings.append(f"{what} {path.name} is a flat placeholder (size {size}), not a scan")
            placeholder = True
        images.append(image)
    ehr = None
    if with_ehr:
        ehr_path = input_dir / "ehr.json"
        if ehr_path.exists():
            ehr = read_ehr(ehr_path)
        else:
            warnings.append(f"{ehr_path} is absent: clinical values are treated as unknown")
    return CaseInput(ct=images[0], pet=images[1], ehr=ehr, ct_path=ct_path, pet_path=pet_path, warnings=warnings,
                     placeholder=placeholder)


# ---------------------------------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to; renamed onto ``path`` when the block ends without an error,
    removed otherwise. Every file the toolkit writes goes through here, so a crash never leaves a partial file.

    The temporary name keeps ``path``'s suffix (SimpleITK and NumPy pick their writer from it) and lies in the same
    folder (``os.replace`` is then an atomic rename). The result is readable by others (mode 0666 less the umask, as
    ``open`` would make it): the platform may read ``/output`` as another user than the container's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_mask(mask: sitk.Image, path: str | Path) -> Path:
    """Write a label map as compressed UInt8 (``.mha`` for the platform), atomically."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.Cast(mask, sitk.sitkUInt8), str(tmp), True)
    return Path(path)


def write_json_number(value: float, path: str | Path) -> Path:
    """Write one bare JSON number (e.g. the Task 2 risk score) atomically; a non-finite value is refused."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"refusing to write a non-finite number ({number}) to {path}")
    return write_text_atomic(json.dumps(number), path)


def write_json_boolean(value: bool, path: str | Path) -> Path:
    """Write one bare JSON boolean, exactly ``true`` or ``false`` (e.g. the Task 3 HPV status), atomically.

    Only a real boolean (``bool`` or ``numpy.bool_``) is accepted: a number or a string is refused rather than
    guessed at, so a predictor bug cannot reach the platform as a wrong answer."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"refusing to write {value!r} ({type(value).__name__}) to {path}: expected a boolean")
    return write_text_atomic("true" if value else "false", path)


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


def list_training_cases(root: str | Path, task: int | str, require_label: bool | None = None) -> list[TrainingCase]:
    """The cases of ``<root>/Task N`` in sorted PatientID order. Cases of a task with label maps need theirs."""
    folder = task_folder(root, task)
    require_label = get_task(task).has_label_maps if require_label is None else require_label
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


def training_case_to_gc_input(case: TrainingCase, row: Mapping[str, Any] | None, out_dir: str | Path, seed: int = 0) -> Path:
    """Convert a HECKTOR training case (and its CSV row) into a Grand-Challenge input folder."""
    ct, pet, _ = case.read()
    return write_gc_input(ct, pet, out_dir, ehr_from_row(row) if row is not None else None, seed=seed)
