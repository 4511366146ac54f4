"""Predict a whole folder of cases with an exported bundle: ``hecktor-predict`` (``python -m hecktor.predict``).

Two input layouts are recognised (the first line printed says which):

* **HECKTOR**: the distributed training layout, ``DATA/Task N/<PID>/<PID>__CT.nii.gz, <PID>__PT.nii.gz`` (``DATA``
  or ``DATA/Task N`` may be given; any folder of ``<PID>/<PID>__CT.nii.gz`` case folders works). A task that reads
  the clinical record takes it from the folder's CSV (the task's training table, else the only ``*.csv`` there),
  one row per PatientID, as the platform's ``ehr.json`` would give it (:func:`hecktor.datasets.ehr_from_row`).
  With ``--suv-table`` (the organisers' ``suv_conversion_tags.csv``) the PETs it lists in Bq/ml are read as exact SUV.
* **Grand Challenge**: a folder of case folders ``<case>/images/ct/*.mha``, ``<case>/images/pet/*.mha``,
  ``<case>/ehr.json`` (or one such case folder), read by :func:`hecktor.case.read_case` as the containers read them.

Every case goes through the predictor the containers use (the task's class in :mod:`hecktor.runtime`,
``from_bundle(...)``, then ``predict_case``); what is written follows the task's output kind in the registry
(:mod:`hecktor.tasks`), never its number:

* ``mask``: one label map per case, ``OUT/<PatientID>.nii.gz`` on the case's CT grid, written atomically;
* ``json-number`` / ``json-boolean``: one table ``OUT/predictions.csv`` with ``PatientID,<value column>`` (the
  column named by the registry, e.g. ``risk`` for Task 2, ``hpv_status`` for Task 3), each value written as the
  container's JSON would hold it, then any number the predictor's report offers (``table_values``; Task 3:
  ``probability``, from which ``hecktor-evaluate`` computes the AUC). A new task of either kind needs only its
  registry entry and its predictor class in :mod:`hecktor.runtime`;
* ``hecktor2026``: both, a mask per case and ``OUT/predictions.csv`` with ``PatientID,t_stage,n_stage,rfs_days``
  (and the ``risk`` behind the time), each value checked as the container's writer checks it.

Each case is read as the containers read it (:func:`hecktor.case.read_images`): an unusable CT or PET is dropped with
the containers' warning line and the case answered without it where the task can. A folder that is no case (hidden,
empty, without the layout's images) is one line. A case that fails is reported in one line and the run goes on
(``strict`` stops at the first); the exit status is 2 when any case failed; the summary counts the cases answered
without an input, the failed ones and the folders skipped. Example::

    hecktor-predict --task 1 --bundle task1_container/resources/bundle --input DATA --output preds
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.case import CaseInput, read_case, read_images
from hecktor.clinical import sanitize_ehr
from hecktor.datasets import ehr_from_row, read_clinical_csv
from hecktor.errors import HecktorError, InputError
from hecktor.evaluate2026 import PREDICTION_COLUMNS
from hecktor.outputs import check_hecktor2026_answer, write_mask, write_text_atomic
from hecktor.runtime import output_writer, predictor_class
from hecktor.suv_table import SuvTable, as_suv_table, to_suv
from hecktor.tasks import TaskSpec, get_task, task_numbers

__all__ = ["LAYOUTS", "PREDICTIONS_CSV", "InputFolder", "FolderPrediction", "CliParser", "find_inputs",
           "predict_folder", "prediction_column", "main"]

PREDICTIONS_CSV = "predictions.csv"
MASK_SUFFIX = ".nii.gz"
LAYOUTS = {"hecktor": "HECKTOR", "grand-challenge": "Grand-Challenge"}


def prediction_column(task: int | str | TaskSpec) -> str:
    """The column of ``predictions.csv`` that holds a ``json-*`` task's value: the registry's ``value_column``,
    else the stem of the task's output file (``hpv-status.json`` -> ``hpv_status``)."""
    spec = get_task(task)
    return spec.value_column or spec.output.name.split(".")[0].replace("-", "_")


# --------------------------------------------------------------------------------------------------------- inputs


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_hecktor_case(folder: Path) -> bool:
    # Either image marks a case folder, so that a case missing the other fails as a case instead of vanishing.
    return any((folder / f"{folder.name}__{kind}.nii.gz").is_file() for kind in ("CT", "PT"))


def _is_gc_case(folder: Path) -> bool:
    return (folder / "images").is_dir()


@dataclass
class InputFolder:
    """The cases of an input folder and how to read each.

    Attributes:
        layout: ``"hecktor"`` or ``"grand-challenge"`` (see the module docstring).
        root: the folder that holds the case folders (``DATA/Task N`` for the HECKTOR layout).
        case_dirs: case id -> case folder, in sorted order.
        clinical_table: the CSV the clinical records come from (HECKTOR layout, tasks that read them).
        records: PatientID -> clinical record from that table.
        notes: what was assumed while finding the cases, one line each.
        skipped: folder name -> why it is no case (a hidden folder, one without the layout's images).
        suv_table: the organisers' conversion table (HECKTOR layout): a PET it lists in Bq/ml is read as exact SUV.
    """

    layout: str
    root: Path
    case_dirs: dict[str, Path]
    clinical_table: Path | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    suv_table: SuvTable | None = None

    @property
    def case_ids(self) -> list[str]:
        return list(self.case_dirs)

    def describe(self) -> str:
        """One line: the layout, the folder, the number of cases and where clinical records come from."""
        what = f"layout: {LAYOUTS[self.layout]} ({self.root}, {len(self.case_dirs)} case(s)"
        if self.clinical_table is not None:
            what += f", clinical records from {self.clinical_table.name}"
        return what + ")"

    def read(self, case_id: str, with_ehr: bool) -> CaseInput:
        """Read one case as the containers see it (``with_ehr``: also its clinical record): an unusable CT or PET
        (missing, unreadable, empty, not overlapping) is dropped with the containers' warning line and the case is
        answered without it where the task can (:func:`hecktor.case.read_images`, the reading path of
        :func:`hecktor.case.read_case`)."""
        folder = self.case_dirs[case_id]
        if self.layout == "grand-challenge":
            return read_case(folder, with_ehr=with_ehr)
        factor = self.suv_table.factor(case_id) if self.suv_table is not None else None
        # exact SUV before the screening, whose Bq/ml heuristic then stays idle
        pet_to_suv = None if factor is None else (lambda pet: to_suv(pet, factor))
        case = read_images(folder / f"{case_id}__CT.nii.gz", folder / f"{case_id}__PT.nii.gz", in_folders=False,
                           pet_to_suv=pet_to_suv)
        if with_ehr:
            ehr = self.records.get(case_id)
            if ehr is None:
                source = self.clinical_table if self.clinical_table is not None else "no clinical table"
                case.warnings.append(f"no clinical row for {case_id} ({source}): clinical values are treated as "
                                     "unknown")
            else:  # as read_case does with ehr.json: the predictors take a case's record as sanitised
                checked = sanitize_ehr(ehr, source=f"{self.clinical_table.name} ({case_id})")
                case.ehr = checked.record
                case.warnings.extend(checked.warnings)
        return case


def _clinical_table(folder: Path, spec: TaskSpec) -> Path | None:
    """The task's training table in ``folder``, else the only CSV there (a test set's table has its own name)."""
    named = folder / spec.training_csv
    if named.is_file():
        return named
    tables = sorted(p for p in folder.glob("*.csv") if p.is_file() and p.name != PREDICTIONS_CSV)
    return tables[0] if len(tables) == 1 else None


def _skipped_folders(inputs: InputFolder) -> dict[str, str]:
    """Every folder beside the case folders, and why it is no case (each gets one line; the summary counts them)."""
    skipped = {}
    for folder in sorted(p for p in inputs.root.iterdir() if p.is_dir() and p.name not in inputs.case_dirs):
        if folder.name.startswith("."):
            skipped[folder.name] = "a hidden folder"
        elif not any(folder.iterdir()):
            skipped[folder.name] = "an empty folder"
        elif inputs.layout == "hecktor":
            skipped[folder.name] = f"neither {folder.name}__CT.nii.gz nor {folder.name}__PT.nii.gz in it"
        else:
            skipped[folder.name] = "no images/ folder in it"
    return skipped


def find_inputs(input_dir: str | Path, task: int | str | TaskSpec) -> InputFolder:
    """Find the cases of ``input_dir`` and its layout (see the module docstring).

    Raises:
        InputError: the folder is missing, holds no case, or mixes both layouts.
    """
    spec = get_task(task)
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder not found: {root}")
    if _is_gc_case(root):  # one Grand-Challenge case folder
        inputs = InputFolder("grand-challenge", root, {root.name: root})
    else:
        if (root / spec.training_folder).is_dir():
            root = root / spec.training_folder
        subdirs = _visible_dirs(root)
        hecktor = {d.name: d for d in subdirs if _is_hecktor_case(d)}
        grand_challenge = {d.name: d for d in subdirs if _is_gc_case(d)}
        if hecktor and grand_challenge:
            raise InputError(f"{root} mixes HECKTOR case folders ({next(iter(hecktor))}) and Grand-Challenge ones "
                             f"({next(iter(grand_challenge))}); put each layout in its own folder")
        if not hecktor and not grand_challenge:
            raise InputError(f"no cases in {root}: expected '{spec.training_folder}/<PID>/<PID>__CT.nii.gz' "
                             "(HECKTOR) or '<case>/images/ct/<file>.mha' (Grand Challenge) folders")
        inputs = InputFolder("hecktor" if hecktor else "grand-challenge", root, hecktor or grand_challenge)
        inputs.skipped = _skipped_folders(inputs)
    if inputs.layout == "hecktor" and spec.uses_ehr:
        inputs.clinical_table = _clinical_table(root, spec)
        if inputs.clinical_table is None:
            inputs.notes.append(f"no clinical table ({spec.training_csv}) in {root}: every clinical value is "
                                "treated as unknown")
        else:
            rows = read_clinical_csv(inputs.clinical_table)
            inputs.records = {row["PatientID"]: ehr_from_row(row, spec.number) for row in rows}
    return inputs


# ----------------------------------------------------------------------------------------------------- prediction


@dataclass
class FolderPrediction:
    """What :func:`predict_folder` did.

    Attributes:
        inputs: the cases found.
        values: case id -> the prediction (the mask's path for ``mask`` tasks, the value for ``json-*`` ones).
        failures: case id -> why it failed, one line.
        written: the files written.
        extras: case id -> further numbers the predictor's report offers for the table (its ``table_values``, e.g.
            Task 3's ``probability``), written as extra columns of ``predictions.csv``.
        degraded: case id -> the inputs it was answered without (``"CT"``, ``"PET"``, ``"ehr.json"``: dropped as
            unusable, as the containers drop them).
    """

    inputs: InputFolder
    values: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    extras: dict[str, dict[str, float]] = field(default_factory=dict)
    degraded: dict[str, list[str]] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        return 2 if self.failures else 0

    def summary(self) -> str:
        """The last line printed: how many cases were predicted (and which without an input), which failed, which
        folders were skipped, where the outputs are."""
        total = len(self.inputs.case_dirs)
        line = f"done: {len(self.values)} of {total} case(s) predicted"
        if self.degraded:
            cases = (f"{case_id} without {' and '.join(inputs)}" for case_id, inputs in self.degraded.items())
            line += f" ({len(self.degraded)} without an input: {_names(cases)})"
        if self.failures:
            line += f", {len(self.failures)} failed ({_names(self.failures)})"
        if self.inputs.skipped:
            line += f", {len(self.inputs.skipped)} folder(s) skipped ({_names(self.inputs.skipped)})"
        if self.written:
            place = self.written[0] if len(self.written) == 1 else self.written[0].parent
            line += f"; outputs in {place}"
        return line


def _names(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _json_value(value: Any, spec: TaskSpec) -> str:
    """A ``json-*`` output as the container's JSON file would hold it (shortest round-trip text)."""
    if spec.output_kind == "json-boolean":
        if not isinstance(value, (bool, np.bool_)):
            raise InputError(f"the predictor returned {value!r}, not a boolean")
        return json.dumps(bool(value))
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"the predictor returned a non-finite number ({number})")
    return json.dumps(number)


def _output_paths(spec: TaskSpec, output_dir: Path, case_ids: Sequence[str]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if spec.output_kind in ("mask", "hecktor2026"):  # 2026: a mask per case too, its other answers in the table
        paths = {case_id: output_dir / f"{case_id}{MASK_SUFFIX}" for case_id in case_ids}
    if spec.output_kind != "mask":
        paths[""] = output_dir / PREDICTIONS_CSV
    return paths


def _table_value(value: Any, spec: TaskSpec, targets: dict[str, Path], case_id: str) -> str | tuple[str, ...]:
    """The case's cells of ``predictions.csv``: the ``json-*`` value, or HECKTOR 2026's T stage, N stage and RFS
    time (:data:`hecktor.evaluate2026.PREDICTION_COLUMNS`), each checked as the container's writer checks it, after
    writing the case's mask."""
    if spec.output_kind != "hecktor2026":
        return _json_value(value, spec)
    where = [f"{targets['']} ({column} of case {case_id})" for column in PREDICTION_COLUMNS]
    mask, t_stage, n_stage, days = check_hecktor2026_answer(value, (targets[case_id], *where))
    write_mask(mask, targets[case_id])
    return t_stage, n_stage, json.dumps(days)


def _check_outputs(paths: Sequence[Path], output_dir: Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"output {output_dir} exists and is not a folder; choose a folder for --output")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(f"{existing[0]} already exists{more}; pass --overwrite or choose another --output")


def predict_folder(
    task: int | str | TaskSpec,
    bundle: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    device: str = "auto",
    tta: bool = True,
    overwrite: bool = False,
    strict: bool = False,
    progress: bool | None = None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    suv_table: SuvTable | str | Path | None = None,
) -> FolderPrediction:
    """Predict every case of ``input_dir`` with the bundle and write the task's outputs into ``output_dir``.

    Args:
        task: the task (see :mod:`hecktor.tasks`).
        bundle: the exported bundle (``<task container>/resources/bundle``).
        input_dir: a HECKTOR-layout or Grand-Challenge-layout folder (see the module docstring).
        output_dir: where the outputs go (created if needed).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda`` or ``cuda:N``.
        tta: test-time augmentation, for predictors that have it (Task 1's mirrors).
        overwrite: replace earlier outputs; without it an existing output is an error before any work.
        strict: stop at the first failed case (its error is raised) instead of reporting it and going on.
        progress: a tqdm bar over the cases (``None``: only on a terminal).
        say: where the informative lines go (the layout first, the summary last).
        warn: where per-case warnings and failures go (default: stderr, above the progress bar).
        suv_table: the organisers' ``suv_conversion_tags.csv`` (HECKTOR layout only): the PETs it lists in Bq/ml
            (units BQML) are read as exact SUV (:mod:`hecktor.suv_table`).

    Returns:
        What was predicted, written and what failed (:class:`FolderPrediction`).

    Raises:
        HecktorError: the input folder, output folder or bundle is unusable; with ``strict``, a case failed.
    """
    from tqdm import tqdm

    if warn is None:
        def warn(line: str) -> None:
            tqdm.write(line, file=sys.stderr)

    spec = get_task(task)
    output_dir = Path(output_dir)
    inputs = find_inputs(input_dir, spec)
    inputs.suv_table = as_suv_table(suv_table)
    if inputs.suv_table is not None and inputs.layout != "hecktor":
        raise InputError(f"--suv-table converts the PETs of HECKTOR-layout case folders (named by PatientID); "
                         f"{inputs.root} holds Grand-Challenge case folders, whose PETs are read as the containers "
                         "read them")
    result = FolderPrediction(inputs)
    say(inputs.describe())
    for note in inputs.notes:
        warn(f"warning: {note}")
    for name, why in inputs.skipped.items():
        warn(f"warning: folder {inputs.root / name} skipped: {why}")
    targets = _output_paths(spec, output_dir, inputs.case_ids)
    _check_outputs(list(targets.values()), output_dir, overwrite)

    predictor = predictor_class(spec).from_bundle(bundle, device=device)
    options: dict[str, Any] = {}
    if "tta" in inspect.signature(predictor.predict).parameters:
        options["tta"] = tta
    elif not tta:
        warn(f"warning: Task {spec.number}'s predictor has no test-time augmentation; --no-tta changes nothing")

    bar = tqdm(inputs.case_ids, desc=f"Task {spec.number}", unit="case", file=sys.stderr,
               disable=None if progress is None else not progress)
    for case_id in bar:
        try:
            case = inputs.read(case_id, with_ehr=spec.uses_ehr)
            value = predictor.predict_case(case, **options)
            for line in predictor.last_report.warnings:
                warn(f"warning: case {case_id}: {line}")
            given = {"CT": case.ct, "PET": case.pet, "ehr.json": case.ehr}
            without = [key for key in case.problems if given[key] is None]
            if without:
                result.degraded[case_id] = without
            if spec.output_kind == "mask":
                result.written.append(output_writer(spec)(value, targets[case_id]))
                result.values[case_id] = targets[case_id]
            else:
                result.values[case_id] = _table_value(value, spec, targets, case_id)
                # A report may offer more than the output holds (Task 3: the probability behind the boolean).
                extras = getattr(predictor.last_report, "table_values", None) or {}
                if extras:
                    result.extras[case_id] = {name: float(v) for name, v in extras.items()}
        except HecktorError as error:
            if strict:
                raise type(error)(f"case {case_id}: {error}") from None
            result.failures[case_id] = str(error)
        except Exception as error:  # noqa: BLE001  (a batch goes on past one broken case; --strict shows the trace)
            if strict:
                raise
            result.failures[case_id] = f"{type(error).__name__}: {error}".splitlines()[0]
        if case_id in result.failures:
            warn(f"warning: case {case_id} failed: {result.failures[case_id]}")
            stale = targets.get(case_id)
            if stale is not None and stale.exists():  # --overwrite: no earlier run's mask may pass for this one's
                stale.unlink()

    if spec.output_kind != "mask":  # written even when every case failed: no earlier table may pass for this run's
        columns = PREDICTION_COLUMNS if spec.output_kind == "hecktor2026" else (prediction_column(spec),)
        result.written.append(_write_predictions_table(result.values, targets[""], columns, result.extras))
    return result


def _write_predictions_table(values: dict[str, str | tuple[str, ...]], path: Path, columns: Sequence[str],
                             extras: dict[str, dict[str, float]] | None = None) -> Path:
    extras = extras or {}
    names = sorted({name for row in extras.values() for name in row})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["PatientID", *columns, *names])
    for case_id, value in values.items():
        more = extras.get(case_id, {})
        cells = value if isinstance(value, tuple) else (value,)
        writer.writerow([case_id, *cells, *(json.dumps(more[n]) if n in more else "" for n in names)])
    return write_text_atomic(text.getvalue(), path)


# ------------------------------------------------------------------------------------------------------------ CLI


class CliParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``error: ...`` line and exit status 2, as every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n")


def _outputs_help() -> str:
    """What each task of the registry writes, for ``--help``."""
    parts = []
    for number in task_numbers():
        spec = get_task(number)
        if spec.output_kind == "mask":
            parts.append(f"Task {number} OUT/<PatientID>{MASK_SUFFIX} on each CT grid")
        elif spec.output_kind == "hecktor2026":
            parts.append(f"Task {number} both, OUT/<PatientID>{MASK_SUFFIX} and OUT/{PREDICTIONS_CSV} "
                         f"(PatientID,{','.join(PREDICTION_COLUMNS)},risk)")
        else:
            parts.append(f"Task {number} OUT/{PREDICTIONS_CSV} (PatientID,{prediction_column(spec)})")
    return "; ".join(parts)


def build_parser() -> CliParser:
    parser = CliParser(
        prog="hecktor-predict",
        description="Predict every case of a folder with an exported HECKTOR bundle, through the containers' "
                    "predictor. Input layouts: HECKTOR (DATA/Task N/<PID>/<PID>__CT.nii.gz, __PT.nii.gz and the "
                    "task's CSV for clinical records; DATA or DATA/Task N) or Grand Challenge (<case>/images/ct/*.mha, "
                    f"<case>/images/pet/*.mha, <case>/ehr.json). Outputs: {_outputs_help()}. A CT or PET that "
                    "cannot be used is dropped with one warning and the case answered without it, as the containers "
                    "answer; a folder that is no case is one line. Exit status 2 when a case failed.")
    parser.add_argument("--task", type=int, required=True, choices=task_numbers(),
                        help="task number (required)")
    parser.add_argument("--bundle", type=Path, required=True,
                        help="exported model bundle, e.g. task1_container/resources/bundle (required)")
    parser.add_argument("--input", type=Path, required=True, help="data folder, either layout (required)")
    parser.add_argument("--output", type=Path, required=True, help="output folder, created if needed (required)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA if present), cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--no-tta", dest="tta", action="store_false",
                        help="no test-time augmentation (default: TTA on, where the task's predictor has it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (default: an existing output is an error)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first failed case (default: report it in one line and go on)")
    parser.add_argument("--suv-table", type=Path, metavar="CSV",
                        help="the organisers' suv_conversion_tags.csv (HECKTOR layout): the PETs it lists in Bq/ml "
                             "(units BQML) are read as exact SUV, value x factor (default: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hecktor-predict``: returns the exit status (0; 2 when a case failed or on a user error)."""
    args = build_parser().parse_args(argv)
    with _log_warnings_above_progress():
        try:
            result = predict_folder(args.task, args.bundle, args.input, args.output, device=args.device,
                                    tta=args.tta, overwrite=args.overwrite, strict=args.strict,
                                    suv_table=args.suv_table)
        except HecktorError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(result.summary())
    return result.exit_status


@contextmanager
def _log_warnings_above_progress() -> Iterator[None]:
    """Library log warnings (the scan backend's fallback, a time budget's drop) as ``warning: ...`` lines above the
    progress bar. Localisation's are left out: they reach the case's report, which is printed with the case's name."""
    from tqdm import tqdm

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith("hecktor.localization"):
                tqdm.write(f"warning: {record.getMessage()}", file=sys.stderr)

    logger, handler = logging.getLogger("hecktor"), Handler(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # no second copy through Python's last-resort handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


if __name__ == "__main__":
    sys.exit(main())
