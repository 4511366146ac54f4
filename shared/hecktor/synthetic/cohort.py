"""A synthetic cohort on disk, laid out like the HECKTOR 2025 training data (see :mod:`hecktor.synthetic` for the
layout): :func:`generate_cohort` writes every case's images, the tasks' tables, the true risks and ``cohort.json``."""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.synthetic.case import _check_choice, make_case
from hecktor.synthetic.clinical import CENTRES, MISSING_RATES
from hecktor.synthetic.grids import SIZES
from hecktor.staging import measure_staging, stage_by_rules
from hecktor.synthetic.staging import INVASION_DEPTH_MM, STAGE_NOISE, rules_on_true_masks
from hecktor.synthetic.outcomes import (
    CENSOR_DROPOUT_MEAN_YEARS,
    CENSOR_FOLLOW_UP_YEARS,
    HPV_MODEL,
    HPV_PREVALENCE,
    TRUE_MODEL,
    WEIBULL_MEDIAN_DAYS,
    WEIBULL_SCALE_DAYS,
    WEIBULL_SHAPE,
    oracle_balanced_accuracy,
    oracle_c_index,
)
from hecktor.tasks import CLINICAL_COLUMNS, RECORD_KEYS_2026, STAGE_COLUMNS, get_task

GENERATOR_VERSION = 2  # 2: HPV status depends on the record and the images (Task 3); images as in 1

TASK1_CSV = get_task(1).training_csv
TASK2_CSV = get_task(2).training_csv
TRUE_RISK_CSV = "true_risk.csv"
COHORT_JSON = "cohort.json"
TASK3_FOLDER, TASK3_CSV = get_task(3).training_folder, get_task(3).training_csv
TASK2026_FOLDER, TASK2026_CSV = get_task(2026).training_folder, get_task(2026).training_csv
TASK2026_COLUMNS = ("PatientID", *RECORD_KEYS_2026, "Relapse", "RFS", *STAGE_COLUMNS)
"""The 2026 training table's columns, in the organisers' order."""
_OUTPUT_NAMES = ("Task 1", "Task 2", TASK3_FOLDER, TASK2026_FOLDER, TRUE_RISK_CSV, COHORT_JSON)


@dataclass
class CohortSummary:
    """What :func:`generate_cohort` wrote."""

    out_dir: Path
    cases: int
    seed: int
    size: str
    patient_ids: list[str]
    event_fraction: float
    oracle_c_index: float | None
    seconds: float


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def _write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (the 2026 layout repeats Task 1's images), else a copy."""
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder; pass a folder path to --out")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"{out_dir} is not empty; choose a new folder or pass --overwrite")
        # Only the generator's own outputs are removed, never anything else in the folder.
        for name in _OUTPUT_NAMES:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate_cohort(
    out_dir: str | Path,
    cases: int,
    seed: int,
    size: str = "small",
    *,
    overwrite: bool = False,
    progress: bool = False,
    edition_2026: bool = False,
) -> CohortSummary:
    """Write a synthetic HECKTOR 2025 training folder (the layout: :mod:`hecktor.synthetic`).

    Args:
        out_dir: folder to create or fill; it must be empty unless ``overwrite`` is set.
        cases: number of patients (>= 1).
        seed: cohort seed (>= 0); the same seed gives byte-identical files.
        size: ``"small"`` or ``"realistic"``.
        overwrite: replace an earlier generator output in ``out_dir`` (other files there are left alone).
        progress: show a tqdm progress bar on stderr.
        edition_2026: also write the HECKTOR 2026 training layout, ``Task 2026/`` (images and labels as Task 1,
            hard-linked where the file system allows, and the 2026 table with HPV status and the T and N stages).
    """
    from tqdm import tqdm

    _check_choice("size", size, SIZES)
    if cases < 1:
        raise InputError(f"cases must be at least 1; got {cases}")
    if seed < 0:
        raise InputError(f"seed must be non-negative; got {seed}")
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    started = time.perf_counter()
    task1, task2, task3 = out_dir / "Task 1", out_dir / "Task 2", out_dir / TASK3_FOLDER
    for folder in (task1, task2, task3):
        folder.mkdir()

    task2026 = out_dir / TASK2026_FOLDER
    if edition_2026:
        task2026.mkdir()
    counters: dict[str, int] = {}
    rows1, rows2, risk_rows, hpv_rows, rows2026, staged = [], [], [], [], [], []
    for index in tqdm(range(cases), desc="synthetic cases", unit="case", disable=not progress):
        case = make_case(seed, size, case_index=index)
        counters[case.centre] = counters.get(case.centre, 0) + 1
        pid = f"{case.centre}-{counters[case.centre]:03d}"
        folder1, folder2, folder3 = task1 / pid, task2 / pid, task3 / pid
        for folder in (folder1, folder2, folder3):
            folder.mkdir()
        # gzip through ITK writes mtime 0, so the files are byte-reproducible.
        sitk.WriteImage(case.ct, str(folder1 / f"{pid}__CT.nii.gz"), True)
        sitk.WriteImage(case.pet, str(folder1 / f"{pid}__PT.nii.gz"), True)
        sitk.WriteImage(case.label, str(folder1 / f"{pid}.nii.gz"), True)
        for name in (f"{pid}__CT.nii.gz", f"{pid}__PT.nii.gz"):
            shutil.copyfile(folder1 / name, folder2 / name)
            shutil.copyfile(folder1 / name, folder3 / name)
        if edition_2026:
            (task2026 / pid).mkdir()
            for name in (f"{pid}__CT.nii.gz", f"{pid}__PT.nii.gz", f"{pid}.nii.gz"):
                _link_or_copy(folder1 / name, task2026 / pid / name)
            rows2026.append([pid, *(case.clinical[c] for c in RECORD_KEYS_2026), case.relapse, case.rfs_days,
                             case.t_stage, case.n_stage])
        staged.append((*stage_by_rules(measure_staging(case.label, case.ct)), case.t_stage, case.n_stage,
                       case.true_t_stage, case.true_n_stage))
        row = [pid] + [case.clinical[c] for c in CLINICAL_COLUMNS]
        rows1.append(row)
        rows2.append(row + [case.rfs_days, case.relapse])
        risk_rows.append(
            [pid, case.true_log_hazard, case.features["tumour_volume_ml"], case.features["suv_max"],
             case.features["n_nodes"], case.true_clinical["HPV Status"], case.hpv_probability]
        )
        if case.clinical["HPV Status"] is not None:  # the recorded status: Task 3 trains and scores on these
            hpv_rows.append((case.clinical["HPV Status"], case.hpv_probability))

    header = ["PatientID", *CLINICAL_COLUMNS]
    _write_csv(task1 / TASK1_CSV, header, rows1)
    _write_csv(task2 / TASK2_CSV, header + ["RFS", "Relapse"], rows2)
    _write_csv(task3 / TASK3_CSV, header, rows1)
    if edition_2026:
        _write_csv(task2026 / TASK2026_CSV, TASK2026_COLUMNS, rows2026)
    _write_csv(
        out_dir / TRUE_RISK_CSV,
        ["PatientID", "true_log_hazard", "tumour_volume_ml", "suv_max", "n_nodes", "true_hpv_status",
         "hpv_probability"],
        risk_rows,
    )
    relapse = [r[-1] for r in rows2]
    c_index = oracle_c_index(relapse, [r[-2] for r in rows2], [r[1] for r in risk_rows])
    event_fraction = float(np.mean(relapse))
    description = {
        "generator": "hecktor.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "cases": cases,
        "centres": {name: centre_id for name, centre_id, _ in CENTRES},
        "true_model": {
            "log_hazard": "sum(beta * (x - centre) / scale)",
            "coefficients": TRUE_MODEL,
            "baseline": {
                "distribution": "Weibull",
                "shape": WEIBULL_SHAPE,
                "scale_days": WEIBULL_SCALE_DAYS,
                "median_days_at_log_hazard_0": WEIBULL_MEDIAN_DAYS,
            },
            "censoring": {
                "follow_up_years_uniform": list(CENSOR_FOLLOW_UP_YEARS),
                "dropout_exponential_mean_years": CENSOR_DROPOUT_MEAN_YEARS,
            },
            "covariates_used": "true values, before missing values were blanked",
        },
        "missing_rates": MISSING_RATES,
        "event_fraction": event_fraction,
        "oracle_c_index": c_index,
        "hpv_model": {"logit": "intercept + sum(beta * (x - centre) / scale)", **HPV_MODEL,
                      "population_prevalence": HPV_PREVALENCE},
        "hpv_recorded": len(hpv_rows),
        "oracle_hpv_balanced_accuracy": oracle_balanced_accuracy([s for s, _ in hpv_rows], [p for _, p in hpv_rows]),
        "staging": {
            "rules": "AJCC 7th (hecktor.staging) on the case's own primary and nodes; T4: the primary reaches more "
                     f"than {INVASION_DEPTH_MM:g} mm into the mandible",
            "label_noise": f"each recorded stage one step off with probability {STAGE_NOISE:g}",
            **rules_on_true_masks(staged),
        },
    }
    (out_dir / COHORT_JSON).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return CohortSummary(
        out_dir=out_dir,
        cases=cases,
        seed=seed,
        size=size,
        patient_ids=[r[0] for r in rows1],
        event_fraction=event_fraction,
        oracle_c_index=c_index,
        seconds=time.perf_counter() - started,
    )
