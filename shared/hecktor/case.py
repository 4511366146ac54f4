"""Screening one Grand-Challenge case as the containers read it: ``images/ct/<uuid>.*``, ``images/pet/<uuid>.*`` and
``ehr.json`` (the layout: docs/reference/platform-interface.md) into a :class:`CaseInput`.

By default an unusable input is dropped with one warning line (:data:`REMEDIES` says what happens instead), and
``strict`` makes it an error; every odd input, task by task: docs/reference/bad-inputs.md. The image checks and
repairs themselves are in :mod:`hecktor.repair`; reading one image is :mod:`hecktor.images`, reading ``ehr.json``
:mod:`hecktor.records`, checking its values :mod:`hecktor.clinical`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from hecktor.clinical import sanitize_ehr
from hecktor.errors import InputError
from hecktor.images import find_single_image, read_image_or_placeholder
from hecktor.records import read_ehr
from hecktor.repair import empty_pet_problem, is_placeholder, no_finite_voxel_problem, overlap_problem, repair_case

__all__ = ["CaseInput", "REMEDIES", "read_case", "read_images"]

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


MANIFEST = "inputs.json"
"""The platform's socket manifest beside the inputs."""
SOCKETS = {"ct-image": "CT", "pet-image": "PET", "electronic-health-record": "ehr.json"}
"""The sockets read, by slug; the manifest's other sockets are ignored."""
DEFAULT_LOCATIONS = {"CT": Path("images/ct"), "PET": Path("images/pet"), "ehr.json": Path("ehr.json")}
"""Where each input lies without a manifest (the folder layout)."""


def input_locations(input_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Where each input of ``input_dir`` lies: the socket manifest's ``relative_path`` of each socket it knows
    (:data:`SOCKETS`), else the folder layout (:data:`DEFAULT_LOCATIONS`). A manifest that is not a list of sockets, or
    names a path that is not there, is one warning and the folder layout is used."""
    locations = {key: input_dir / relative for key, relative in DEFAULT_LOCATIONS.items()}
    path = input_dir / MANIFEST
    if not path.is_file():
        return locations, []
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"))
        if not isinstance(items, list):
            raise ValueError(f"a list of sockets is expected, got {type(items).__name__}")
        found = {}
        for item in items:
            socket = item.get("socket") if isinstance(item, dict) else None
            if not isinstance(socket, dict) or not isinstance(socket.get("slug"), str):
                raise ValueError("an item without a socket slug")
            key = SOCKETS.get(socket["slug"])
            relative = socket.get("relative_path")
            if key is None:
                continue
            if (not isinstance(relative, str) or not relative or Path(relative).is_absolute()
                    or ".." in Path(relative).parts):
                raise ValueError(f"socket {socket['slug']!r} has no usable relative_path ({relative!r})")
            if not (input_dir / relative).exists():
                raise ValueError(f"socket {socket['slug']!r} names {relative}, which is not there")
            found[key] = input_dir / relative
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        return locations, [f"{MANIFEST} is not usable ({str(error)[:200]}): the inputs are read from the folder layout"]
    return {**locations, **found}, []


def read_case(input_dir: str | Path, *, with_ehr: bool = True, strict: bool = False) -> CaseInput:
    """Read a Grand-Challenge input folder: ``images/ct/<uuid>.*``, ``images/pet/<uuid>.*`` and ``ehr.json``, or where
    the platform's socket manifest ``inputs.json`` says they are (:func:`input_locations`).

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
    locations, warnings = input_locations(input_dir)
    case = read_images(locations["CT"], locations["PET"], strict=strict, warnings=warnings)
    if with_ehr:
        ehr_path = locations["ehr.json"]
        if not ehr_path.exists():
            case.warnings.append(f"{ehr_path} is absent: clinical values are treated as unknown")
        else:
            try:
                raw, notes = read_ehr(ehr_path)
            except InputError as error:
                _drop(case, "ehr.json", str(error))
            else:
                case.warnings.extend(notes)
                checked = sanitize_ehr(raw, source=ehr_path.name)
                if strict and checked.problems:
                    raise InputError(checked.problems[0])
                if checked.problems:
                    case.problems["ehr.json"] = checked.problems[0]
                case.warnings.extend(checked.warnings)
                case.ehr = checked.record
    return case


def read_images(ct: str | Path, pet: str | Path, *, in_folders: bool = True, strict: bool = False,
                warnings: list[str] | None = None,
                pet_to_suv: Callable[[sitk.Image], sitk.Image] | None = None) -> CaseInput:
    """The CT and PET of a case, screened and repaired as :func:`read_case` does (the record is not read: ``ehr`` is
    ``None``): an unusable image is dropped with one warning line (with ``strict``, raised), the images kept are
    repaired once. ``hecktor-predict`` reads the HECKTOR layout's files through it, so that a case answers there as
    in the containers.

    Args:
        ct, pet: with ``in_folders``, the folder that holds each image (the platform's ``images/ct``); else the image
            files themselves (``<PID>__CT.nii.gz``).
        warnings: lines noticed before; the case's ``warnings`` goes on from them.
        pet_to_suv: applied to the PET as read, before it is screened and repaired (an exact SUV conversion, e.g.
            the organisers' factor of :mod:`hecktor.suv_table`, which leaves the Bq/ml heuristic idle).
    """
    case = CaseInput(ct=None, pet=None, ehr=None, ct_path=None, pet_path=None,
                     warnings=[] if warnings is None else warnings, strict=strict)
    images: dict[str, sitk.Image | None] = {}
    paths: dict[str, Path | None] = {}
    for what, source in (("CT", Path(ct)), ("PET", Path(pet))):
        images[what], paths[what] = None, None
        try:
            paths[what] = find_single_image(source) if in_folders else source
            image, flat = read_image_or_placeholder(paths[what], what, case.warnings)
        except InputError as error:
            _drop(case, what, str(error))
            continue
        if what == "PET" and pet_to_suv is not None:
            image = pet_to_suv(image)
        if flat:
            size = "x".join(str(s) for s in image.GetSize())
            case.warnings.append(f"{what} {paths[what].name} is a flat placeholder (size {size}), not a scan")
            case.placeholder = True
        else:
            problem = no_finite_voxel_problem(image, what) if what == "CT" else empty_pet_problem(image)
            if problem is not None:
                _drop(case, what, problem)
                continue
        images[what] = image
    ct_image, pet_image = images["CT"], images["PET"]
    if (ct_image is not None and pet_image is not None and not is_placeholder(ct_image)
            and not is_placeholder(pet_image)):
        problem = overlap_problem(ct_image, pet_image)
        if problem is not None:
            _drop(case, "PET", problem)
            pet_image = None
    # Once per case, here: every consumer (segmentation, biomarkers, networks) then sees the same repaired images.
    case.ct, case.pet, repairs = repair_case(ct_image, pet_image)
    case.warnings.extend(repairs)
    case.ct_path, case.pet_path = paths["CT"], paths["PET"]
    return case


def _drop(case: CaseInput, key: str, message: str) -> None:
    """Drop an unusable input (``"CT"``, ``"PET"``, ``"ehr.json"``) with one warning line, or raise it when the case
    is read strictly."""
    if case.strict:
        raise InputError(message)
    case.problems[key] = message
    case.warnings.append(f"{key} unusable ({message}): {REMEDIES[key]}")
