"""How the training-data tests break a copy of a clean synthetic cohort (HECKTOR layout), one thing at a time: an
image rewritten (a label map that lost its header or moved 2 m, partial-volume or out-of-range values), a table cell
or row changed. Used by ``tests/training/test_check_data.py`` (``hecktor-check-data``) and
``tests/training/test_training_data_matrix.py`` (the trainers' own check)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hecktor.synthetic import generate_cohort



@pytest.fixture(scope="module")
def clean_cohort(tmp_path_factory) -> Path:
    """Four clean synthetic cases, built once per test module; every test breaks a copy (:func:`cohort`)."""
    return generate_cohort(tmp_path_factory.mktemp("cohort") / "DATA", cases=4, seed=11, size="small").out_dir


@pytest.fixture
def cohort(clean_cohort, tmp_path) -> Path:
    return Path(shutil.copytree(clean_cohort, tmp_path / "DATA"))


def case_dir(cohort: Path, task: int = 1) -> Path:
    """The first case folder of the task (hidden folders are no cases)."""
    return sorted(p for p in (cohort / f"Task {task}").iterdir() if p.is_dir() and not p.name.startswith("."))[0]


def table_path(cohort: Path, task: int) -> Path:
    return cohort / f"Task {task}" / f"HECKTOR_2025_Training_Task_{task}.csv"


def rewrite_image(path: Path, edit) -> None:
    """``path`` rewritten as ``edit(image)``."""
    sitk.WriteImage(edit(sitk.ReadImage(str(path))), str(path), True)


def with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def header_lost(image: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayFromImage(image)[::2, ::2, ::2]
    return sitk.GetImageFromArray(array)  # spacing 1, origin 0: what a tool that drops the header writes


def shifted_2_m(image: sitk.Image) -> sitk.Image:
    image.SetOrigin(tuple(np.asarray(image.GetOrigin()) + (0.0, 0.0, 2000.0)))
    return image


def partial_volume(image: sitk.Image) -> sitk.Image:
    """GTVp voxels at 0.5, as a soft or partial-volume label map holds them."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return with_array(image, np.where(array == 1, np.float32(0.5), array))


def label_value(value: int, pixel):
    """An edit giving the GTVn voxels ``value``, stored as ``pixel``."""
    def edit(image: sitk.Image) -> sitk.Image:
        array = sitk.GetArrayFromImage(sitk.Cast(image, pixel))
        array[array == 2] = value
        return with_array(image, array)
    return edit


def edit_table(task: int, edit):
    """A breaking step: the task's table rewritten as ``edit(rows)``."""
    def apply(cohort: Path) -> None:
        path = table_path(cohort, task)
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        rows = edit(rows)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return apply


def set_cell(column: str, value: str, task: int = 2):
    """A breaking step: the first row's ``column`` set to ``value``."""
    def edit(rows):
        rows[0][column] = value
        return rows
    return edit_table(task, edit)
