"""``hecktor-check-data DATA``: every task folder and table of a HECKTOR training dataset checked in one pass.

Like nnU-Net's dataset integrity check, it names each problem before any training starts, one line per problem with
the patient and the file, errors and warnings apart, and ends with what each task will train on::

    hecktor-check-data data/                 # every "Task N" folder found in data/
    hecktor-check-data data/ --task 2        # one task
    hecktor-check-data ../shared/data/real/petct --task 1   # a folder of case folders, read as that task's folder

Errors are what would train silently wrong or stop a run half-way: a file missing or unreadable, an image that is
not 3-D or holds no finite voxel, a label map off its CT's grid or holding values other than 0, 1 and 2 (a partial
volume 0.5, a 3, a -1), a PET that does not meet its CT, a table without its columns, a patient listed twice, an
outcome that is not a finite number (RFS > 0, Relapse exactly 0 or 1), a case without its table row. Warnings are
what training repairs or drops with a word (a PET that looks like Bq/ml, an empty label map, a row without images,
a missing clinical column). Hidden folders (``.ipynb_checkpoints``) and stray files are passed over with one note.
The exit status is 1 when there is an error, else 0; a folder that does not exist is one ``error:`` line, status 2.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hecktor.datasets import SURVIVAL_COLUMNS, task_folder
from hecktor.errors import InputError
from hecktor.images import read_image
from hecktor.labels import GTVN, GTVP
from hecktor.localization import body_uptake
from hecktor.repair import SUV_MAX_BODY_UPTAKE, no_finite_voxel_problem, overlap_problem
from hecktor.suv_table import SuvTable, as_suv_table, unconverted_bqml_warning
from hecktor.tasks import CLINICAL_COLUMNS, TASKS, TaskSpec, get_task

ERROR, WARNING, NOTE = "error", "warning", "note"
LABEL_VALUES = (0, GTVP, GTVN)


@dataclass(frozen=True)
class Finding:
    """One problem: its level, where (a task, a patient, a file) and what."""

    level: str
    where: str
    message: str

    def line(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


@dataclass
class TaskCounts:
    """What one task will train on."""

    cases: int = 0
    usable: int = 0
    rows: int = 0
    extra: dict[str, int] = field(default_factory=dict)
    empty_labels: int = 0
    unconverted_bqml: list[str] = field(default_factory=list)

    def line(self, spec: TaskSpec) -> str:
        details = "".join(f", {value} {name}" for name, value in self.extra.items())
        table = f", {self.rows} table row(s)" if spec.target_columns or self.rows else ""
        return (f"{spec.training_folder}: {self.usable} of {self.cases} case(s) usable for training{table}"
                f"{details}")


@dataclass
class DataReport:
    """Every finding of a dataset check and each task's counts."""

    findings: list[Finding] = field(default_factory=list)
    counts: dict[int, TaskCounts] = field(default_factory=dict)

    def add(self, level: str, where: str | Path, message: str) -> None:
        self.findings.append(Finding(level, str(where), message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]


# --------------------------------------------------------------------------------------------------------- images
def _same_grid_problem(label: sitk.Image, ct: sitk.Image) -> str | None:
    """Why a label map is not on its CT's exact grid (size, spacing, origin, direction within ITK's tolerances)."""
    if label.GetSize() != ct.GetSize():
        return f"size {_xyz(label.GetSize())} where its CT has {_xyz(ct.GetSize())}"
    spacing = np.asarray(ct.GetSpacing())
    tolerance = sitk.ProcessObject.GetGlobalDefaultCoordinateTolerance() * spacing
    if not np.all(np.abs(np.asarray(label.GetSpacing()) - spacing) <= tolerance):
        return f"spacing {_xyz(label.GetSpacing())} where its CT has {_xyz(ct.GetSpacing())}"
    if not np.all(np.abs(np.asarray(label.GetOrigin()) - np.asarray(ct.GetOrigin())) <= tolerance):
        return f"origin {_xyz(label.GetOrigin())} mm where its CT has {_xyz(ct.GetOrigin())} mm"
    direction_tolerance = sitk.ProcessObject.GetGlobalDefaultDirectionTolerance()
    if not np.allclose(label.GetDirection(), ct.GetDirection(), rtol=0.0, atol=direction_tolerance):
        return "another direction than its CT's"
    return None


def _xyz(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def _label_values_problem(label: sitk.Image) -> tuple[str | None, bool]:
    """Why a label map's values are not integers in {0, 1, 2} (``None`` when they are), and whether it holds a
    tumour."""
    array = sitk.GetArrayViewFromImage(label)
    values = np.unique(array)
    if np.issubdtype(array.dtype, np.floating):
        fractional = values[np.isfinite(values) & (values != np.round(values))]
        if fractional.size or not np.all(np.isfinite(values)):
            shown = ", ".join(f"{v:g}" for v in (fractional if fractional.size else values)[:5])
            return (f"non-integer values ({shown}): a partial-volume or soft label map, which training would truncate; "
                    "threshold it into 0, 1 (GTVp) and 2 (GTVn)"), False
    unexpected = [v for v in values.tolist() if v not in LABEL_VALUES]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:5])
        return f"values {shown} besides 0, 1 (GTVp) and 2 (GTVn)", False
    return None, bool(np.any(values > 0))


def _read(report: DataReport, path: Path, what: str) -> sitk.Image | None:
    if not path.is_file():
        report.add(ERROR, path, f"{what} file missing")
        return None
    try:
        return read_image(path, what)
    except InputError as error:
        report.add(ERROR, path, str(error))
        return None


def check_case(report: DataReport, spec: TaskSpec, case_dir: Path, suv_table: SuvTable | None = None) -> bool:
    """Check one case folder of ``spec``'s task; returns whether it is usable for training. A PET that looks like
    Bq/ml without a factor in ``suv_table`` is counted (:func:`check_task` lists them in one warning); one that the
    table converts is checked to read about 1 in the body once converted."""
    pid = case_dir.name
    errors_before = len(report.errors)
    ct = _read(report, case_dir / f"{pid}__CT.nii.gz", "CT")
    pet = _read(report, case_dir / f"{pid}__PT.nii.gz", "PET")
    for image, what, path in ((ct, "CT", f"{pid}__CT.nii.gz"), (pet, "PET", f"{pid}__PT.nii.gz")):
        problem = no_finite_voxel_problem(image, what) if image is not None else None
        if problem is not None:
            report.add(ERROR, case_dir / path, problem)
    if ct is not None and pet is not None and len(report.errors) == errors_before:
        problem = overlap_problem(ct, pet)
        if problem is not None:
            report.add(ERROR, case_dir / f"{pid}__PT.nii.gz", problem)
        else:
            level = body_uptake(pet, ct)
            factor = suv_table.factor(pid) if suv_table is not None else None
            if factor is None and level > SUV_MAX_BODY_UPTAKE:
                report.counts.setdefault(spec.number, TaskCounts()).unconverted_bqml.append(pid)
            elif factor is not None and not (level > SUV_MAX_BODY_UPTAKE >= level * factor):
                report.add(WARNING, case_dir / f"{pid}__PT.nii.gz",
                           f"{suv_table.path.name} converts it from Bq/ml (factor {factor:.6g}), but the body's median "
                           f"uptake is {level:,.4g} as stored and {level * factor:,.4g} converted (about 1 in SUV): "
                           "check the patient's row (units, weight, dose)")
    if spec.has_label_maps:
        label_path = case_dir / f"{pid}.nii.gz"
        label = _read(report, label_path, "label map")
        if label is not None:
            problem = _same_grid_problem(label, ct) if ct is not None else None
            if problem is not None:
                report.add(ERROR, label_path, f"not on its CT's grid: {problem}; resample it onto the CT's grid "
                                              "(nearest neighbour) or fix its header")
            problem, tumour = _label_values_problem(label)
            if problem is not None:
                report.add(ERROR, label_path, problem)
            elif not tumour:
                report.counts.setdefault(spec.number, TaskCounts()).empty_labels += 1
                report.add(WARNING, label_path, "empty label map (no GTVp or GTVn voxel): trains as a case without "
                                                "tumour")
    return len(report.errors) == errors_before


# --------------------------------------------------------------------------------------------------------- tables
def _finite(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def check_table(report: DataReport, spec: TaskSpec, path: Path, patient_ids: Sequence[str] | None,
                counts: TaskCounts) -> set[str]:
    """Check a task's clinical table against its case folders (``None``: a table without images, such as a trainer's
    ``--csv``, whose rows are the cohort); returns the patients whose row is usable."""
    if not path.is_file():
        if spec.target_columns:
            report.add(ERROR, path, f"the table of {spec.training_folder} is missing (it holds "
                                    f"{', '.join(spec.target_columns)})")
        else:
            report.add(NOTE, path, "no clinical table (segmentation does not need one)")
        return set(patient_ids or ())
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        report.add(ERROR, path, f"cannot read the table: {error}")
        return set()
    needed = ["PatientID", *spec.target_columns]
    missing = [c for c in needed if c not in columns]
    if missing:
        report.add(ERROR, path, f"lacks the column(s) {', '.join(missing)} (columns: {', '.join(columns)})")
        return set()
    absent = [c for c in CLINICAL_COLUMNS if c not in columns and c not in spec.target_columns]
    if absent:
        report.add(WARNING, path, f"no column {', '.join(absent)}: those clinical values are unknown for every "
                                  "patient")
    lines_of: dict[str, list[int]] = {}
    for line, row in rows:
        lines_of.setdefault((row.get("PatientID") or "").strip(), []).append(line)
    seen = Counter({pid: len(lines) for pid, lines in lines_of.items()})
    usable, events, classes = set(), 0, Counter()
    for line, row in rows:
        pid = (row.get("PatientID") or "").strip()
        where = f"{path} line {line}" + (f" ({pid})" if pid else "")
        if not pid:
            report.add(ERROR, where, "empty PatientID")
            continue
        if seen[pid] > 1:
            if line == lines_of[pid][0]:  # one line per patient, naming every row
                listed = ", ".join(str(n) for n in lines_of[pid])
                report.add(ERROR, where, f"patient {pid} is listed {seen[pid]} times (lines {listed}); keep one row")
            continue
        problems = []
        if set(SURVIVAL_COLUMNS) <= set(spec.target_columns):
            rfs, relapse = _finite(row.get("RFS")), _finite(row.get("Relapse"))
            if rfs is None or rfs <= 0:
                problems.append(f"RFS {row.get('RFS')!r} is not a finite number of days > 0")
            if relapse not in (0.0, 1.0):
                problems.append(f"Relapse {row.get('Relapse')!r} is not exactly 0 or 1")
            events += relapse == 1.0
        if "HPV Status" in spec.target_columns:
            cell = (row.get("HPV Status") or "").strip()
            status = _finite(cell)
            if not cell:
                classes["unknown"] += 1  # left out of training, as the Task 3 trainer does, and counted
                continue
            if status not in (0.0, 1.0):
                problems.append(f"HPV Status {cell!r} is not exactly 0 or 1 (leave the cell empty when unknown)")
            else:
                classes[int(status)] += 1
        age = row.get("Age")
        if age not in (None, "") and (_finite(age) is None or not 0 <= float(age) <= 120):
            report.add(WARNING, where, f"Age {age!r} is not a number of years from 0 to 120: read as unknown")
        for problem in problems:
            report.add(ERROR, where, problem)
        if not problems:
            usable.add(pid)
    counts.rows = len(rows)
    present = set(patient_ids) if patient_ids is not None else set(seen) - {""}
    for pid in sorted(present - set(seen)):
        report.add(ERROR, path, f"no row for case {pid}")
    for pid in sorted(set(seen) - present - {""}):
        report.add(WARNING, path, f"row {pid} has no case folder: it is not trained on")
    if set(SURVIVAL_COLUMNS) <= set(spec.target_columns):
        counts.extra["events"] = int(events)
        if usable and not events:  # fewer folds cannot help this: the advice is about the table
            report.add(ERROR, path, f"every patient is censored (Relapse 0 in all {len(usable)} usable rows): a "
                                    "survival model has nothing to learn and no C-index is defined; check that "
                                    "Relapse is 1 where a relapse was observed")
    if "HPV Status" in spec.target_columns:
        counts.extra.update({"HPV-positive": classes[1], "HPV-negative": classes[0],
                             "of unknown status (left out)": classes["unknown"]})
    return usable & present


# --------------------------------------------------------------------------------------------------------- dataset
def case_folders(report: DataReport, folder: Path, spec: TaskSpec) -> list[Path]:
    """The case folders of a task folder; hidden folders and stray files are passed over with one note each."""
    cases = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            report.add(NOTE, path, "hidden, passed over")
        elif path.is_dir():
            cases.append(path)
        elif path.name != spec.training_csv:
            report.add(NOTE, path, "not a case folder, passed over")
    return cases


def check_task(report: DataReport, spec: TaskSpec, folder: Path,
               progress: Callable[[str], None] | None = None, suv_table: SuvTable | None = None) -> None:
    """Check one task folder (its cases and its table) into ``report``; ``suv_table``: the organisers' conversion
    table, whose Bq/ml PETs are converted (:mod:`hecktor.suv_table`)."""
    counts = report.counts.setdefault(spec.number, TaskCounts())
    cases = case_folders(report, folder, spec)
    if not cases:
        report.add(ERROR, folder, "no case folder")
    counts.cases = len(cases)
    usable_images = set()
    for index, case_dir in enumerate(cases, start=1):
        if progress is not None:
            progress(f"{spec.training_folder}: case {index}/{len(cases)} {case_dir.name}")
        if check_case(report, spec, case_dir, suv_table):
            usable_images.add(case_dir.name)
    bqml = unconverted_bqml_warning(counts.unconverted_bqml, suv_table)
    if bqml is not None:  # one line for all of them: a centre's PETs come in Bq/ml together
        report.add(WARNING, folder, bqml)
    usable_rows = check_table(report, spec, folder / spec.training_csv, [c.name for c in cases], counts)
    counts.usable = len(usable_images & usable_rows)
    if spec.has_label_maps and usable_images and counts.empty_labels >= len(usable_images):
        report.add(ERROR, folder, f"every label map is empty (no GTVp or GTVn voxel in {len(usable_images)} case(s)): "
                                  "there is no tumour to learn; check that the label maps are the right files")


def check_dataset(root: str | Path, tasks: Sequence[int] | None = None,
                  progress: Callable[[str], None] | None = None,
                  suv_table: SuvTable | str | Path | None = None) -> DataReport:
    """Check every task folder of ``root`` (or only ``tasks``). ``root`` may also be one task's folder (or any folder
    of case folders, with exactly one task given). ``suv_table``: the organisers' ``suv_conversion_tags.csv``, read
    and checked first (a bad row is an :class:`InputError`)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    suv_table = as_suv_table(suv_table)
    report = DataReport()
    specs = [get_task(t) for t in tasks] if tasks else list(TASKS.values())
    folders = {spec.number: root / spec.training_folder for spec in specs if (root / spec.training_folder).is_dir()}
    if not folders:
        if root.name in {spec.training_folder for spec in specs}:
            folders = {next(s.number for s in specs if s.training_folder == root.name): root}
        elif tasks and len(specs) == 1:
            folders = {specs[0].number: root}
        else:
            names = ", ".join(f"'{spec.training_folder}'" for spec in specs)
            raise InputError(f"no task folder ({names}) in {root}; give the folder holding them, or --task N for a "
                             "folder of case folders")
    for number, folder in sorted(folders.items()):
        check_task(report, get_task(number), folder, progress, suv_table)
    return report


def report_lines(report: DataReport) -> list[str]:
    """The lines of a check, as ``hecktor-check-data`` prints them and the trainers echo them: errors, warnings and
    notes (one line each), then what each task will train on."""
    lines = [f.line() for f in sorted(report.findings, key=lambda f: (f.level != ERROR, f.level != WARNING))]
    return lines + [counts.line(get_task(number)) for number, counts in sorted(report.counts.items())]


def summary_line(report: DataReport) -> str:
    errors, warnings = len(report.errors), len(report.warnings)
    return f"{errors} error(s), {warnings} warning(s)" + (": fix the errors before training" if errors else "")


# ------------------------------------------------------------------------------------------------------- trainers
PROGRESS_EVERY = 50
"""A trainer's check says how far it is every this many cases."""


class DataCheckError(InputError):
    """The data check that a trainer runs first found errors (each one already printed on its line). A wrong input,
    so the trainers' exit status 2, as for every other wrong input (``hecktor-check-data`` itself exits 1)."""


def check_training_data(task: int, data: str | Path | None = None, csv: str | Path | None = None, *,
                        images: bool = True, echo: Callable[[str], None] = print,
                        suv_table: SuvTable | str | Path | None = None) -> DataReport:
    """The check every trainer runs first, on what it will read, before any preprocessing or training: the lines of
    ``hecktor-check-data`` for the task's folder of ``data`` (with ``images=False``, clinical mode, its table and the
    presence of its case files only), or for the table ``csv`` alone (a trainer's ``--csv``). ``suv_table``: the
    trainer's ``--suv-table``; the PETs that look like Bq/ml without a factor there are listed in one warning.

    Every finding is echoed on its line, then what the task will train on. Without errors one line more says so, with
    the check's time; with errors nothing more is done.

    Raises:
        DataCheckError: the check found errors; its message is the summary line.
        InputError: ``data`` holds no folder of the task.
    """
    spec = get_task(task)
    started = time.perf_counter()
    report = DataReport()
    counts = report.counts.setdefault(spec.number, TaskCounts())
    if csv is not None:
        where = Path(csv)
        counts.usable = len(check_table(report, spec, where, None, counts))
        counts.cases = counts.rows
    else:
        where = task_folder(data, task)
        if images:
            seen = iter(range(1, 1 << 62))
            check_task(report, spec, where, lambda line: None if next(seen) % PROGRESS_EVERY else echo(f"  {line}"),
                       as_suv_table(suv_table))
        else:
            cases = case_folders(report, where, spec)
            for case_dir in cases:
                for suffix, what in (("__CT.nii.gz", "CT"), ("__PT.nii.gz", "PET")):
                    if not (case_dir / f"{case_dir.name}{suffix}").is_file():
                        report.add(ERROR, case_dir / f"{case_dir.name}{suffix}", f"{what} file missing")
            counts.cases = len(cases)
            counts.usable = len(check_table(report, spec, where / spec.training_csv, [c.name for c in cases], counts))
    for line in report_lines(report):
        echo(line)
    if report.errors:
        raise DataCheckError(f"{summary_line(report)} (the data check of {where}, before any training)")
    echo(f"data check of {where}: {summary_line(report)} ({time.perf_counter() - started:.1f} s)")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hecktor-check-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the folder holding 'Task 1/', 'Task 2/', ... (or one task's folder)")
    parser.add_argument("--task", type=int, action="append", choices=sorted(TASKS),
                        help="check only this task (repeat for several; default: every task folder found)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--suv-table", type=Path, metavar="CSV",
                        help="the organisers' suv_conversion_tags.csv: the PETs it lists in Bq/ml (units BQML) are "
                             "checked as converted to SUV; the others that look like Bq/ml are listed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    try:
        report = check_dataset(args.data, args.task, progress, args.suv_table)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in report_lines(report):
        print(line)
    print(summary_line(report))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
