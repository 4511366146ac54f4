"""The patients of a Task 3 training run: the table's HPV status (unknown left out), the record without it, and the
network inputs through the preprocessing cache (:mod:`hecktor.training.hpv`, the trainer, reads them here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.clinical import parse_number
from hecktor.datasets import list_training_cases, read_clinical_csv, read_training_table
from hecktor.errors import InputError
from hecktor.plan import BoxPlan
from hecktor.suv_table import SuvTable
from hecktor.tasks import get_task
from hecktor.training import crossval
from hecktor.training.cache import PreprocessingCache
from hecktor.training.image_level import DEFAULT_CACHE, box_entry

__all__ = ["TARGET", "TASK", "HPVCohort", "hpv_status", "hpv_cache", "load_hpv_csv_cohort", "load_hpv_cohort"]

TASK = get_task(3)
TARGET = TASK.target_columns[0]  # "HPV Status"

@dataclass
class HPVCohort:
    """The patients of a Task 3 run whose HPV status is known.

    Attributes:
        patient_ids: sorted (the order of ``folds.json``).
        rows: clinical records (strings as read; the encoder normalises them).
        labels: 1 = HPV-positive.
        centres: CenterID per patient (``None`` where unknown), used to stratify the folds.
        images: ``(n, 2, z, y, x)`` float32 network inputs, or ``None`` (clinical and biomarkers modes).
        plan: the plan that made ``images``.
        biomarkers: biomarkers mode: each patient's biomarkers of its Task 1 mask
            (:func:`~hecktor.training.biomarker_features.attach_biomarkers`).
        source: where the data came from.
        n_unknown: patients left out because their status is unknown.
    """

    patient_ids: list[str]
    rows: list[dict[str, Any]]
    labels: np.ndarray
    centres: list[Any]
    images: np.ndarray | None = None
    plan: BoxPlan | None = None
    source: str = ""
    n_unknown: int = 0
    biomarkers: list[dict[str, float]] | None = None
    crops: np.ndarray | None = None  # filled by add_segmentation_features; Task 3 has no tumour cube (None)

    def __len__(self) -> int:
        return len(self.patient_ids)

    @property
    def n_positive(self) -> int:
        return int(self.labels.sum())

    @property
    def prevalence(self) -> float:
        return float(self.labels.mean())


def hpv_status(value: Any, where: str) -> int | None:
    """An ``HPV Status`` cell as 0/1, ``None`` when empty; anything else is an :class:`InputError`."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    number = parse_number(value)
    if number not in (0.0, 1.0):
        raise InputError(f"{where}: {TARGET} must be 0, 1 or empty, got {value!r}")
    return int(number)


def _cohort_from_rows(rows: Sequence[Mapping[str, Any]], source: str) -> HPVCohort:
    rows = sorted((dict(row) for row in rows), key=lambda row: str(row["PatientID"]))
    if rows and TARGET not in rows[0]:
        raise InputError(f"{source} has no {TARGET!r} column (the Task 3 target)")
    known, unknown = [], 0
    seen: set[str] = set()
    for row in rows:
        pid = str(row["PatientID"])
        if pid in seen:
            raise InputError(f"{source} lists patient {pid} more than once")
        seen.add(pid)
        status = hpv_status(row.get(TARGET), f"{source} ({pid})")
        if status is None:
            unknown += 1
            continue
        known.append((row, status))
    labels = np.asarray([status for _, status in known], dtype=np.int64)
    if len(known) < 2 or labels.all() or not labels.any():
        raise InputError(f"{source}: {len(known)} patients of known {TARGET} ({int(labels.sum())} positive); both "
                         "statuses are needed to train")
    # The record never carries the target: whatever a model sees at training is what ehr.json can give it.
    records = [{k: v for k, v in row.items() if k != TARGET} for row, _ in known]
    return HPVCohort(patient_ids=[str(r["PatientID"]) for r in records], rows=records, labels=labels,
                     centres=[r.get("CenterID") for r in records], source=source, n_unknown=unknown)


def load_hpv_csv_cohort(path: str | Path) -> HPVCohort:
    """A clinical-only cohort from a CSV with the HECKTOR 2025 columns (``PatientID``, clinical fields,
    ``HPV Status``); rows of unknown status are left out."""
    return _cohort_from_rows(read_clinical_csv(path), str(path))


def hpv_cache(root: str | Path | None, plan: BoxPlan) -> PreprocessingCache:
    """The preprocessing cache of Task 3 network inputs: Task 2's box entries, under a folder of their own (the Task 2
    and Task 3 folders hold copies of the same patients' files, whose modification times differ: one shared folder
    would rebuild each entry whenever the other task ran)."""
    return PreprocessingCache(Path(root or DEFAULT_CACHE), plan, box_entry, variant=TASK.name)


def load_hpv_cohort(
    root: str | Path,
    plan: BoxPlan | None = None,
    *,
    with_images: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    suv_table: SuvTable | None = None,
) -> HPVCohort:
    """A cohort from a HECKTOR Task 3 folder (``<root>/Task 3/<PID>/...`` and its CSV); patients of unknown status
    are left out (their images are not preprocessed).

    Args:
        root: the HECKTOR folder (or its ``Task 3`` folder).
        plan: preprocessing plan (default ``BoxPlan()``: 96^3).
        with_images: preprocess the images (fusion and imaging modes) through the cache (:func:`hpv_cache`).
        cache_dir: cache root (default ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``).
        progress: tqdm bar over the cases to preprocess.
        workers: processes preprocessing side by side (0: this process; ``None``: all cores).
        suv_table: the PETs it lists in Bq/ml are read as exact SUV (:mod:`hecktor.suv_table`).
    """
    plan = plan or BoxPlan()
    cohort = _cohort_from_rows(read_training_table(root, TASK.number), str(root))
    cohort.plan = plan
    if not with_images:
        return cohort
    cases = {case.patient_id: case for case in list_training_cases(root, TASK.number, suv_table=suv_table)}
    cohort.images = crossval.load_cached_images(hpv_cache(cache_dir, plan), cases, cohort.patient_ids, plan,
                                                progress=progress, workers=workers)
    return cohort
