"""The patients of a Task 2 training run (:class:`Cohort`): clinical records, RFS and relapse, centres and, for the
image modes, the cached network inputs; read from a HECKTOR Task 2 folder or, clinical mode only, from a CSV.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.datasets import list_training_cases, read_clinical_csv, read_training_table
from hecktor.errors import InputError
from hecktor.plan import BoxPlan
from hecktor.suv_table import SuvTable
from hecktor.training.crossval import load_cached_images
from hecktor.training.image_level import box_cache

__all__ = ["Cohort", "load_csv_cohort", "load_hecktor_cohort"]


@dataclass
class Cohort:
    """Patients of a training run: clinical rows, survival, centres and (for the image modes) the network inputs.

    Attributes:
        patient_ids: in a fixed order (the order of ``folds.json``).
        rows: clinical records (strings as read from the CSV; the encoder normalises them).
        time: RFS in days.
        event: 1 = relapse observed.
        centres: CenterID per patient (``None`` where unknown), used to stratify the folds.
        images: ``(n, 2, z, y, x)`` float32 network inputs, or ``None`` (clinical mode).
        plan: the plan that made ``images``.
        source: where the data came from (for the run record).
        biomarkers: per patient, the biomarkers of its (out-of-fold) segmentation (biomarker modes;
            :func:`hecktor.training.biomarker_features.add_segmentation_features`).
        crops: ``(n, 3, z, y, x)`` float32 tumour-centred cubes with the mask channel (``fusion+biomarkers``).
    """

    patient_ids: list[str]
    rows: list[dict[str, Any]]
    time: np.ndarray
    event: np.ndarray
    centres: list[Any]
    images: np.ndarray | None = None
    plan: BoxPlan | None = None
    source: str = ""
    biomarkers: list[dict[str, float]] | None = None
    crops: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.patient_ids)

    @property
    def n_events(self) -> int:
        return int(self.event.sum())


def _cohort_from_rows(rows: Sequence[Mapping[str, Any]], source: str) -> Cohort:
    # Sorted by PatientID, like read_training_table: a CSV and a Task 2 folder of the same patients give the same
    # order, so a folds.json of one fits the other.
    rows = sorted((dict(row) for row in rows), key=lambda row: str(row["PatientID"]))
    if not rows:
        raise InputError(f"{source} holds no patients")
    duplicates = sorted(pid for pid, n in Counter(str(r["PatientID"]) for r in rows).items() if n > 1)
    if duplicates:
        raise InputError(f"{source} lists patient(s) {', '.join(duplicates[:5])} more than once")
    return Cohort(
        patient_ids=[str(row["PatientID"]) for row in rows],
        rows=rows,
        time=np.asarray([float(row["RFS"]) for row in rows], dtype=np.float64),
        event=np.asarray([int(row["Relapse"]) for row in rows], dtype=np.int64),
        centres=[row.get("CenterID") for row in rows],
        source=source,
    )


def load_csv_cohort(path: str | Path) -> Cohort:
    """A clinical-only cohort from a CSV with the HECKTOR 2025 columns (``PatientID``, clinical fields, ``RFS``,
    ``Relapse``)."""
    return _cohort_from_rows(read_clinical_csv(path, require_survival=True), str(path))


def load_hecktor_cohort(
    root: str | Path,
    plan: BoxPlan | None = None,
    *,
    with_images: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    suv_table: SuvTable | None = None,
) -> Cohort:
    """A cohort from a HECKTOR Task 2 folder (``<root>/Task 2/<PID>/...`` and its CSV).

    With ``with_images`` every case is preprocessed by :func:`hecktor.preprocessing.preprocess_box` once and kept in
    the preprocessing cache (:func:`~hecktor.training.image_level.box_cache`); an entry is reused while the case's
    files keep their size and modification time.

    Args:
        root: the HECKTOR folder (or its ``Task 2`` folder).
        plan: preprocessing plan (default ``BoxPlan()``: 96^3).
        with_images: preprocess the images (fusion and imaging modes).
        cache_dir: cache root (default ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``).
        progress: tqdm bar over the cases to preprocess.
        workers: processes preprocessing side by side (0: this process; ``None``: all cores).
        suv_table: the PETs it lists in Bq/ml are read as exact SUV (:mod:`hecktor.suv_table`).
    """
    plan = plan or BoxPlan()
    cohort = _cohort_from_rows(read_training_table(root, 2), str(root))
    cohort.plan = plan
    if not with_images:
        return cohort
    cases = {case.patient_id: case for case in list_training_cases(root, 2, suv_table=suv_table)}
    cohort.images = load_cached_images(box_cache(cache_dir, plan), cases, cohort.patient_ids, plan,
                                       progress=progress, workers=workers)
    return cohort

