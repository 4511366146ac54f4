"""Exact SUV from the organisers' conversion table (``suv_conversion_tags.csv``) for PETs stored in Bq/ml.

Some training PETs come in Bq/ml. The organisers publish, per patient, what a body-weight SUV needs (columns ``pid,
units, patient_weight_kg, radiopharmaceutical, radionuclide_total_dose_bq, radionuclide_half_life_sec,
elapsed_seconds_injection_to_scan, decay_corrected_dose_at_scan_bq, dose_for_suv_bq, bqml_to_suvbw_factor``)::

    SUVbw = value x factor,   factor = patient_weight_kg x 1000 / dose_for_suv_bq

(``dose_for_suv_bq``: the injected dose decay-corrected to the scan time; the table's own ``bqml_to_suvbw_factor``
where weight or dose is missing). :func:`read_suv_table` reads and checks such a table;
:class:`~hecktor.datasets.TrainingCase` multiplies a listed patient's PET by its factor when the PET is read
(:func:`to_suv`), before the library's screening (:func:`hecktor.repair.repair_case`), whose Bq/ml heuristic (divide
by the body's median uptake) then has nothing to do. Rows whose ``units`` are not ``BQML`` (``CNTS``: counts,
``GML``: already SUV) give no factor: their PETs are read as they are, and the heuristic still screens them.

:func:`unconverted_bqml_warning` lists the PETs that look like Bq/ml (the library's test) without a factor in one
warning line with the option that fixes them (``--suv-table``): ``hecktor-check-data`` and the data check that every
trainer runs first (:mod:`hecktor.training.check_data`) print it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from hecktor.errors import InputError

BQML = "BQML"
"""The ``units`` of a PET stored in Bq/ml: the only rows that are converted."""

REQUIRED_COLUMNS = ("pid", "units", "patient_weight_kg", "dose_for_suv_bq", "bqml_to_suvbw_factor")
"""The columns used (the table's other columns document how the dose was decay-corrected and are not read)."""

FACTOR_TOLERANCE = 1e-5
"""Largest relative difference allowed between the table's factor and weight x 1000 / dose of the same row."""

SUV_TABLE_OPTION = "--suv-table"
"""The option of every command that reads a conversion table (named in warnings)."""


@dataclass(frozen=True)
class SuvConversion:
    """One patient's row: its units, its factor (``None`` unless ``units`` is ``BQML``) and where it was read."""

    patient_id: str
    units: str
    factor: float | None
    line: int


class SuvTable:
    """The rows of a conversion table by patient ID (:func:`read_suv_table`)."""

    def __init__(self, path: str | Path, rows: dict[str, SuvConversion]) -> None:
        self.path = Path(path)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self.rows

    def factor(self, patient_id: str) -> float | None:
        """The Bq/ml -> SUVbw factor of a patient listed with units ``BQML``, else ``None`` (not listed, or in other
        units: read as it is)."""
        row = self.rows.get(patient_id)
        return None if row is None else row.factor


def _number(cell: str | None, where: str, column: str) -> float | None:
    """A cell as a float (``None`` when empty), or an :class:`InputError` naming the row."""
    if cell is None or cell.strip() == "":
        return None
    try:
        return float(cell)
    except ValueError:
        raise InputError(f"{where}: {column} {cell.strip()!r} is not a number") from None


def _factor(row: dict[str, str | None], where: str) -> float:
    """The factor of a ``BQML`` row: weight x 1000 / dose, checked against the table's own factor; the table's factor
    where weight or dose is missing."""
    weight = _number(row.get("patient_weight_kg"), where, "patient_weight_kg")
    dose = _number(row.get("dose_for_suv_bq"), where, "dose_for_suv_bq")
    given = _number(row.get("bqml_to_suvbw_factor"), where, "bqml_to_suvbw_factor")
    computed = None
    if weight is not None and dose is not None:
        if not (math.isfinite(weight) and weight > 0 and math.isfinite(dose) and dose > 0):
            raise InputError(f"{where}: patient_weight_kg {weight:g} and dose_for_suv_bq {dose:g} must be finite and "
                             "> 0")
        computed = weight * 1000.0 / dose
    if computed is not None and given is not None:
        if not math.isfinite(given) or abs(given - computed) > FACTOR_TOLERANCE * computed:
            raise InputError(f"{where}: bqml_to_suvbw_factor {given:.9g} disagrees with patient_weight_kg x 1000 / "
                             f"dose_for_suv_bq = {computed:.9g} (relative difference above {FACTOR_TOLERANCE:g}); "
                             "correct the row")
    factor = computed if computed is not None else given
    if factor is None:
        raise InputError(f"{where}: units BQML without a factor (neither patient_weight_kg and dose_for_suv_bq nor "
                         "bqml_to_suvbw_factor)")
    if not (math.isfinite(factor) and factor > 0):
        raise InputError(f"{where}: bqml_to_suvbw_factor {factor:g} is not a finite number > 0")
    return factor


def read_suv_table(path: str | Path) -> SuvTable:
    """Read and check the organisers' ``suv_conversion_tags.csv`` (see the module docstring).

    Each problem is one :class:`InputError` naming the table's line and the patient: a missing column (of
    :data:`REQUIRED_COLUMNS`), an empty ``pid`` or ``units``, a patient listed twice, and for a ``BQML`` row a factor
    that is missing, not finite or not positive, or that disagrees with ``patient_weight_kg x 1000 /
    dose_for_suv_bq`` by more than :data:`FACTOR_TOLERANCE` (relative). Rows in other units are kept without a factor.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"SUV conversion table not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(missing)} of the organisers' "
                             f"suv_conversion_tags.csv (columns: {', '.join(columns)})")
        rows: dict[str, SuvConversion] = {}
        for line, row in enumerate(reader, start=2):
            pid = (row.get("pid") or "").strip()
            if not pid:
                raise InputError(f"{path} line {line}: empty pid")
            where = f"{path} line {line} ({pid})"
            if pid in rows:
                raise InputError(f"{where}: patient {pid} is listed twice (lines {rows[pid].line} and {line}); keep "
                                 "one row")
            units = (row.get("units") or "").strip().upper()
            if not units:
                raise InputError(f"{where}: empty units (BQML for a PET in Bq/ml)")
            factor = _factor(row, where) if units == BQML else None
            rows[pid] = SuvConversion(pid, units, factor, line)
    return SuvTable(path, rows)


def as_suv_table(table: SuvTable | str | Path | None) -> SuvTable | None:
    """A table given as itself or by its path (read and checked here), or ``None``."""
    return table if table is None or isinstance(table, SuvTable) else read_suv_table(table)


def to_suv(pet: sitk.Image, factor: float) -> sitk.Image:
    """A PET in Bq/ml as body-weight SUV: every voxel times ``factor`` (float32; the geometry is the PET's)."""
    return sitk.Cast(pet, sitk.sitkFloat32) * float(factor)


def unconverted_bqml_warning(patient_ids: list[str], table: SuvTable | None = None) -> str | None:
    """One warning line listing the PETs that look like Bq/ml without a factor, with the option that fixes them."""
    if not patient_ids:
        return None
    names = ", ".join(patient_ids[:20]) + (f", ... ({len(patient_ids)} in all)" if len(patient_ids) > 20 else "")
    where = f"with units BQML in {table.path}" if table is not None else "(no conversion table given)"
    return (f"{len(patient_ids)} training PET(s) look like Bq/ml and have no factor {where}: {names}; training "
            "divides each by its body's median uptake (an approximate SUV). For exact SUV give the organisers' table: "
            f"{SUV_TABLE_OPTION} suv_conversion_tags.csv")
