"""Reading HECKTOR training data and Grand-Challenge inputs; writing the containers' outputs atomically.

Layouts (see ``HECKTOR2025_INTERFACE.md``):

* training: ``<root>/Task 1/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz, <PID>.nii.gz`` and
  ``<root>/Task 1/HECKTOR_2025_Training_Task_1.csv``; Task 2 alike without labels, with RFS columns in its CSV.
* Grand Challenge: ``<input>/images/ct/<uuid>.mha``, ``<input>/images/pet/<uuid>.mha``, ``<input>/ehr.json``.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import os
import random
import shutil
import sys
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
from hecktor.repair import empty_pet_problem, is_placeholder, no_finite_voxel_problem, overlap_problem, repair_case
from hecktor.tasks import CLINICAL_COLUMNS as _CLINICAL_COLUMNS
from hecktor.tasks import get_task

IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".nii", ".nii.gz")
"""Image file suffixes read, in any letter case (``.MHA``, ``.NII.GZ``)."""
TIFF_SUFFIXES = (".tif", ".tiff")
CLINICAL_COLUMNS = _CLINICAL_COLUMNS  # declared once, in hecktor.tasks
SURVIVAL_COLUMNS = ("RFS", "Relapse")


def _image_suffix(name: str) -> str | None:
    """The image suffix of a file name as written (any case), or ``None``."""
    lowered = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix):
            return name[len(name) - len(suffix):]
    return None


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and _image_suffix(path.name) is not None


@contextmanager
def _quiet_stderr() -> Iterator[list[str]]:
    """Capture what C libraries write straight to file descriptor 2 during the block (NIfTI and ITK print there):
    a container's stderr must hold nothing but its one ``error: ...`` line. Yields a list that receives the captured
    lines when the block ends."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            captured.extend(line.strip() for line in text.splitlines() if line.strip())


def _read_itk(path: Path) -> tuple[sitk.Image, list[str]]:
    """``sitk.ReadImage`` of ``path`` whatever the case of its suffix (ITK picks readers by lower-case suffix, so an
    ``.MHA`` or ``.NII.GZ`` file is read through a lower-case link in a temporary folder), with what the C libraries
    printed captured rather than sent to stderr. Raises RuntimeError as ``sitk.ReadImage`` does."""
    suffix = _image_suffix(path.name)
    failure: RuntimeError | None = None
    with tempfile.TemporaryDirectory(prefix="hecktor-read-") as folder:
        source = path
        if suffix is not None and suffix != suffix.lower():
            source = Path(folder) / f"image{suffix.lower()}"
            try:
                source.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, source)
        with _quiet_stderr() as printed:
            try:
                image = sitk.ReadImage(str(source))
            except RuntimeError as error:
                failure = error
    if failure is not None:
        raise RuntimeError(f"{failure}\n{printed[-1] if printed else ''}".strip())
    return image, printed


def read_image(path: str | Path, what: str = "image", warnings: list[str] | None = None) -> sitk.Image:
    """Read a 3-D scalar image, or raise :class:`InputError` naming the file.

    Rejects missing and unreadable files, vector images, and images that are not 3-D or are flat (a size of 1 along
    an axis: the platform's sanity check uses 1×1 placeholders). A 4-D image with a single frame is read as its 3-D
    volume. Suffixes are matched in any case (``.MHA``, ``.NII.GZ``).

    Args:
        warnings: receives one line per thing noticed on the way (a single-frame 4-D image, a TIFF's missing
            geometry, what the reader printed).
    """
    path = Path(path)
    notes = warnings if warnings is not None else []
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        image, printed = _read_itk(path)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"cannot read {what} {path}: {detail[:200]}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1 and min(image.GetSize()[:3]) >= 2:
        image = image[:, :, :, 0]
        notes.append(f"{what} {path.name} is 4-D with a single frame: read as its 3-D volume")
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(f"{what} {path} is not a 3-D volume (size {size}); expected a 3-D scan")
    if printed:
        notes.append(f"{what} {path.name}: the reader said: {printed[-1][:200]}")
    if path.name.lower().endswith(TIFF_SUFFIXES):
        origin = ", ".join(f"{v:g}" for v in image.GetOrigin())
        notes.append(f"{what} {path.name} is a TIFF file, which stores no origin or direction (read as origin "
                     f"({origin}) mm, identity direction): its position relative to the other image cannot be "
                     "trusted")
    return image


def find_single_image(folder: str | Path) -> Path:
    """The one image file in ``folder`` (.mha, .tif, .tiff, .nii, .nii.gz, any case), or an :class:`InputError`."""
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


# --------------------------------------------------------------------------------------------------- ehr.json


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),  # before UTF-16: its byte-order mark starts with UTF-16's
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 with a byte-order mark"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


def decode_json_bytes(data: bytes) -> tuple[str, str | None]:
    """The text of a JSON file and, when it was not plain UTF-8, the encoding it was decoded from.

    Tries, in order: a byte-order mark (UTF-8, UTF-16, UTF-32), UTF-16/32 without a mark (recognised by the zero
    bytes of ASCII text, RFC 4627), UTF-8, then Latin-1 (which decodes any bytes). Raises UnicodeDecodeError only when
    a byte-order mark lies about the rest.
    """
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            return data.decode(codec), name
    # JSON text never holds a zero byte, but UTF-16/32 text of ASCII characters does (NUL is valid UTF-8, so this
    # comes first)
    head = data[:4]
    codec = None
    if len(head) == 4:
        if head[:3] == b"\x00\x00\x00":
            codec, name = "utf-32-be", "UTF-32 (big-endian, no byte-order mark)"
        elif head[1:] == b"\x00\x00\x00":
            codec, name = "utf-32-le", "UTF-32 (little-endian, no byte-order mark)"
        elif head[0] == 0:
            codec, name = "utf-16-be", "UTF-16 (big-endian, no byte-order mark)"
        elif head[1] == 0:
            codec, name = "utf-16-le", "UTF-16 (little-endian, no byte-order mark)"
    if codec is not None:
        try:
            return data.decode(codec), name
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    return data.decode("latin-1"), "Latin-1"


def read_ehr(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Parse ``ehr.json`` into a dict, and one warning per oddity that was got past (an encoding other than UTF-8).

    A missing or unreadable file, text that is not JSON (including JSON nested too deeply to parse, and integers of
    thousands of digits) and JSON that is not an object (a list, a number, ``null``) are an :class:`InputError`.
    Values are not checked here: see :func:`hecktor.clinical.sanitize_ehr`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"clinical record not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    warnings: list[str] = []
    try:
        text, encoding = decode_json_bytes(data)
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
    if encoding is not None:
        warnings.append(f"{path.name} is {encoding} text, not UTF-8: decoded as such")
    try:
        record = json.loads(text)
    except RecursionError:
        raise InputError(f"{path} is not valid JSON: nested too deeply to parse") from None
    except ValueError as error:  # JSONDecodeError, and integers longer than Python converts
        raise InputError(f"{path} is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(record, dict):
        kind = "null" if record is None else type(record).__name__
        raise InputError(f"{path} must hold a JSON object, got {kind}")
    return record, warnings


# ------------------------------------------------------------------------------------------ screening the images


def read_image_or_placeholder(path: str | Path, what: str = "image",
                              warnings: list[str] | None = None) -> tuple[sitk.Image, bool]:
    """As :func:`read_image`, but a flat placeholder (:func:`is_placeholder`) is returned as it is, flagged ``True``,
    instead of refused: the platform's sanity check must get a valid output."""
    path = Path(path)
    try:
        return read_image(path, what, warnings), False
    except InputError as refused:
        try:
            image, _ = _read_itk(path)
        except RuntimeError:
            raise refused from None
        if image.GetNumberOfComponentsPerPixel() != 1 or not is_placeholder(image):
            raise refused from None
        return image, True


# ------------------------------------------------------------------------------------------------ one case


@dataclass
class CaseInput:
    """One case as a container sees it: CT and PET images and the clinical record.

    Attributes:
        ct, pet: the images as read and repaired (:func:`hecktor.repair.repair_case`; a flat placeholder is kept
            as it is, see ``placeholder``), or ``None`` when the image is unusable (see ``problems``).
        ehr: the clinical record with implausible values removed (:func:`hecktor.clinical.sanitize_ehr`), or
            ``None`` when absent, malformed or not read.
        ct_path, pet_path: the files read (``None`` when there was none to read).
        warnings: what reading repaired, assumed or dropped, one line each.
        placeholder: CT or PET is a flat placeholder image, not a scan.
        problems: why each dropped input (``"CT"``, ``"PET"``, ``"ehr.json"``) was dropped: the error line that a
            strict read gives (a predictor that cannot do without that input raises it).
        strict: read with ``strict=True``: nothing was dropped (predictors then raise rather than fall back).
    """

    ct: sitk.Image | None
    pet: sitk.Image | None
    ehr: dict[str, Any] | None
    ct_path: Path | None
    pet_path: Path | None
    warnings: list[str] = field(default_factory=list)
    placeholder: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    strict: bool = False


REMEDIES = {
    "CT": "predicting without the CT (CT channel blank)",
    "PET": "predicting without the PET (PET channel blank, head and neck placed from the CT)",
    "ehr.json": "clinical values are treated as unknown",
}
"""What a non-strict :func:`read_case` does about each input it drops (the second half of its warning line)."""


def read_case(input_dir: str | Path, *, with_ehr: bool = True, strict: bool = False) -> CaseInput:
    """Read a Grand-Challenge input folder: ``images/ct/<uuid>.*``, ``images/pet/<uuid>.*`` and ``ehr.json``.

    By default a case is answered whenever an answer can be formed, so an unusable input is *dropped* with one
    warning line naming what and why, instead of failing the case (on Grand Challenge a failed case scores nothing
    and can stop a submission's evaluation):

    * CT or PET unusable (folder or file missing, two images, unreadable, not a 3-D scalar volume, no finite voxel;
      PET empty (constant) or not overlapping the CT): that image is ``None``, its error line in ``problems``;
    * ``ehr.json`` malformed (not JSON, not an object, ``null``): ``ehr`` is ``None`` (every value unknown);
    * implausible clinical values (an age outside 0-120 years, a list where a value belongs): that value is
      removed (unknown); keys are matched whatever their case (``age`` is read as ``Age``), with a warning.

    The images kept are repaired here, once (:func:`hecktor.repair.repair_case`: non-finite voxels, a CT offset, a
    PET in Bq/ml, absurd PET voxels; one warning each, in both modes), so that every consumer sees the same images.

    With ``strict`` each of these raises its :class:`InputError` instead (local validation). A missing ``ehr.json``
    is never an error (clinical values unknown, with a warning), nor is a flat placeholder image (the platform's
    sanity check: read as it is, with a warning, ``placeholder`` set). Without ``with_ehr``, ``ehr.json`` is not
    read at all (segmentation does not use it, so it must not fail a case). A missing ``input_dir`` is always an
    error.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}")
    warnings: list[str] = []
    problems: dict[str, str] = {}

    def drop(key: str, message: str) -> None:
        if strict:
            raise InputError(message)
        problems[key] = message
        warnings.append(f"{key} unusable ({message}): {REMEDIES[key]}")

    images: dict[str, sitk.Image | None] = {}
    paths: dict[str, Path | None] = {}
    placeholder = False
    for what in ("CT", "PET"):
        images[what], paths[what] = None, None
        try:
            paths[what] = find_single_image(input_dir / "images" / what.lower())
            image, flat = read_image_or_placeholder(paths[what], what, warnings)
        except InputError as error:
            drop(what, str(error))
            continue
        if flat:
            size = "x".join(str(s) for s in image.GetSize())
            warnings.append(f"{what} {paths[what].name} is a flat placeholder (size {size}), not a scan")
            placeholder = True
        else:
            problem = no_finite_voxel_problem(image, what) if what == "CT" else empty_pet_problem(image)
            if problem is not None:
                drop(what, problem)
                continue
        images[what] = image
    ct, pet = images["CT"], images["PET"]
    if ct is not None and pet is not None and not is_placeholder(ct) and not is_placeholder(pet):
        problem = overlap_problem(ct, pet)
        if problem is not None:
            drop("PET", problem)
            pet = None
    # Once per case, here: every consumer (segmentation, biomarkers, networks) then sees the same repaired images.
    ct, pet, repairs = repair_case(ct, pet)
    warnings.extend(repairs)

    ehr = None
    if with_ehr:
        ehr_path = input_dir / "ehr.json"
        if not ehr_path.exists():
            warnings.append(f"{ehr_path} is absent: clinical values are treated as unknown")
        else:
            from hecktor.clinical import sanitize_ehr  # clinical imports this module

            try:
                raw, notes = read_ehr(ehr_path)
            except InputError as error:
                drop("ehr.json", str(error))
            else:
                warnings.extend(notes)
                checked = sanitize_ehr(raw, source=ehr_path.name)
                if strict and checked.problems:
                    raise InputError(checked.problems[0])
                if checked.problems:
                    problems["ehr.json"] = checked.problems[0]
                warnings.extend(checked.warnings)
                ehr = checked.record
    return CaseInput(ct=ct, pet=pet, ehr=ehr, ct_path=paths["CT"], pet_path=paths["PET"], warnings=warnings,
                     placeholder=placeholder, problems=problems, strict=strict)


# ---------------------------------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write to; renamed onto ``path`` when the block ends without an error,
    removed otherwise. Every file the toolkit writes goes through here, so a crash never leaves a partial file.

    The temporary name keeps ``path``'s suffix (SimpleITK and NumPy pick their writer from it) and lies in the same
    folder (``os.replace`` is then an atomic rename), so an output left by an earlier run is replaced in one step.
    The result is readable by others (:data:`READABLE_MODE` at least, more if the umask allows): the platform may
    read ``/output`` as another user than the container's. A folder that cannot be created or written (read-only,
    or a file in its place) is an :class:`InputError` naming the path.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(handle)
    except OSError as error:
        raise InputError(f"cannot write {path}: {_os_reason(error)}; the output folder must be a writable "
                         "folder") from None
    tmp = Path(name)
    try:
        yield tmp
        try:
            os.chmod(tmp, READABLE_MODE | (0o666 & ~_umask()))
            os.replace(tmp, path)
        except OSError as error:
            raise InputError(f"cannot write {path}: {_os_reason(error)}") from None
    finally:
        tmp.unlink(missing_ok=True)


READABLE_MODE = 0o644
"""Outputs are at least readable by everyone (owner read-write), whatever the process's umask: the platform may read
``/output`` as another user than the container's."""


def _os_reason(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_output(path: str | Path) -> bool:
    """Remove a file left at ``path`` (an output of an earlier run) so that a failed run leaves no stale output
    beside its error; returns whether one was removed. Never raises."""
    try:
        Path(path).unlink()
        return True
    except OSError:
        return False


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
