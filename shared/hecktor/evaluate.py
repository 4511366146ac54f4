"""Score predictions as the HECKTOR leaderboards do: ``hecktor-evaluate`` (``python -m hecktor.evaluate``).

* Task 1 (output kind ``mask``): ``--pred`` holds one mask per case, ``<PatientID>.nii.gz`` or ``<PatientID>.mha``
  (what ``hecktor-predict`` writes), each on its ground truth's grid; ``--labels`` is a HECKTOR ``Task 1`` folder
  (or its parent). The leaderboard's scores are the GTVp mean per-patient Dice and the GTVn aggregated Dice (DSCagg)
  and aggregated detection F1 (F1agg, lesions paired at IoU > 0.3); HD95 and surface Dice per label are diagnostics.
  Every number comes from :func:`hecktor.metrics.evaluate_segmentation` and
  :func:`hecktor.metrics.summarize_segmentation` (definitions and empty-mask conventions there).
* Task 2 (``json-number`` against ``RFS`` and ``Relapse``): ``--pred`` is ``predictions.csv``
  (``PatientID,risk``), ``--labels`` the Task 2 training table or its folder; the score is Harrell's C-index
  (:func:`hecktor.metrics.concordance_index`).
* Task 3 (``json-boolean`` against ``HPV Status``): ``--pred`` is ``predictions.csv`` (``PatientID,hpv_status`` with
  ``true``/``false``, and ``probability`` when ``hecktor-predict`` wrote it), ``--labels`` the Task 3 training table
  or its folder; the score is the balanced accuracy, with the AUC of the probability (patients of unknown status,
  an empty cell, are not scored; when those scored are all of one class, the AUC is undefined, ``null``/``n/a``,
  with one warning). Both tables are read by :func:`hecktor.datasets.read_clinical_csv`, the trainers' reader.
* HECKTOR 2026 (``hecktor2026``: mask, T and N stage, RFS time): ``--pred`` is the folder ``hecktor-predict --task
  2026`` writes (the masks and ``predictions.csv``), ``--labels`` the ``Task 2026`` folder or its parent; the masks are
  scored as Task 1's, the rest by :mod:`hecktor.evaluate2026` (the challenge's Dice of GTVp and GTVn averaged, T and N
  balanced accuracy with recall and confusion matrix, the C-index of the RFS time).

Every prediction must match one ground-truth case and every case must have a prediction: a missing, extra or
off-grid prediction is one error naming the case. A Markdown report goes to stdout and, with ``--json``, the numbers
(per case included) to a JSON file, where ``null`` stands for an undefined (NaN) or infinite value (HD95 when only
one mask holds the label; ``hd95_n_inf`` counts those). Example::

    hecktor-evaluate --task 1 --pred preds --labels DATA --json scores.json
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from hecktor.datasets import SURVIVAL_COLUMNS, list_training_cases, read_clinical_csv, task_folder
from hecktor.errors import HecktorError, InputError
from hecktor.evaluate2026 import hecktor2026_markdown, score_hecktor2026
from hecktor.images import read_image
from hecktor.labels import FOREGROUND, GTVN, GTVP
from hecktor.metrics import (DEFAULT_IOU_THRESHOLD, DEFAULT_TOLERANCE_MM, _check_labels, balanced_accuracy,
                             concordance_index, evaluate_segmentation, roc_auc, summarize_segmentation)
from hecktor.outputs import write_text_atomic
from hecktor.predict import PREDICTIONS_CSV, CliParser, prediction_column
from hecktor.tasks import TaskSpec, get_task, task_numbers

__all__ = ["MASK_SUFFIXES", "find_masks", "evaluate_masks", "evaluate_risks", "evaluate_statuses",
           "evaluate_hecktor2026", "evaluate", "to_markdown",
           "write_json", "main"]

MASK_SUFFIXES = (".nii.gz", ".mha")
_GTVP = next(name for name, value in FOREGROUND.items() if value == GTVP)
_GTVN = next(name for name, value in FOREGROUND.items() if value == GTVN)


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def find_masks(pred_dir: str | Path) -> dict[str, Path]:
    """Case id -> mask file of a predictions folder (``<id>.nii.gz`` or ``<id>.mha``; other files are ignored).

    Raises:
        InputError: the folder is missing, or a case has two masks.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"predictions folder not found: {pred_dir}")
    masks: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        suffix = next((s for s in MASK_SUFFIXES if path.name.endswith(s)), None)
        if suffix is None or path.name.startswith(".") or not path.is_file():
            continue
        case_id = path.name[: -len(suffix)]
        if case_id in masks:
            raise InputError(f"case {case_id} has two predictions in {pred_dir}: {masks[case_id].name} and "
                             f"{path.name}; keep one")
        masks[case_id] = path
    return masks


def _match(predicted: Sequence[str], expected: Sequence[str], pred_where: Path, labels_where: Path,
           what: str) -> None:
    """Every expected case has a prediction and every prediction an expected case, or one error naming them
    (``what``: the expected prediction, ``{}`` standing for the case id)."""
    missing = sorted(set(expected) - set(predicted))
    extra = sorted(set(predicted) - set(expected))
    if missing:
        raise InputError(f"no prediction for case {_listing(missing)} in {pred_where} (expected "
                         f"{what.replace('{}', missing[0])}); predict every case of the labels")
    if extra:
        raise InputError(f"prediction for case {_listing(extra)} in {pred_where} has no ground truth in "
                         f"{labels_where}; remove it or point --labels at the folder that holds the case")


def evaluate_masks(
    pred_dir: str | Path,
    labels: str | Path,
    task: int | str | TaskSpec = 1,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Score a folder of predicted masks against a HECKTOR training folder's label maps.

    Args:
        pred_dir: one mask per case, ``<PatientID>.nii.gz`` or ``.mha``, on the ground truth's grid.
        labels: the task's HECKTOR folder (``DATA/Task 1``) or its parent.
        task: a task with label maps.
        tolerance_mm: surface-Dice tolerance.
        iou_threshold: lesion detection threshold (IoU strictly above it; the challenge's 0.3).
        progress: a tqdm bar over the cases (``None``: only on a terminal).

    Returns:
        ``{"task", "kind": "segmentation", "n_cases", "gtvp_dice_mean", "gtvn_dsc_agg", "gtvn_f1_agg",
        "tolerance_mm", "iou_threshold", "labels": {name: summary}, "cases": [per-case results]}``: the summaries
        are :func:`~hecktor.metrics.summarize_segmentation`'s, the cases :func:`~hecktor.metrics.evaluate_segmentation`'s.

    Raises:
        InputError: a missing, extra, unreadable or off-grid prediction (naming the case), or bad labels.
    """
    from tqdm import tqdm

    spec = get_task(task)
    cases = list_training_cases(labels, spec.number, require_label=True)
    masks = find_masks(pred_dir)
    _match(list(masks), [c.patient_id for c in cases], Path(pred_dir), task_folder(labels, spec.number),
           " or ".join(f"{{}}{s}" for s in MASK_SUFFIXES))
    per_case = []
    for case in tqdm(cases, desc="scoring", unit="case", file=sys.stderr,
                     disable=None if progress is None else not progress):
        pred_path = masks[case.patient_id]
        # Each error names the file at fault: the label map's own (unreadable, values besides the labels), the
        # prediction's own, and the prediction for what lies between them (another grid, values besides the labels).
        try:
            gt = read_image(case.label_path, "label map")
            # The ground truth's values first, where the label map can be named (evaluate_segmentation names neither).
            _check_labels(sitk.GetArrayViewFromImage(gt), tuple(FOREGROUND.values()), f"label map {case.label_path}",
                          "")
        except InputError as error:
            raise InputError(f"case {case.patient_id}: {error}; fix the ground truth") from None
        try:
            pred = read_image(pred_path, "prediction")
            result = evaluate_segmentation(pred, gt, tolerance_mm=tolerance_mm, labels=FOREGROUND,
                                           iou_threshold=iou_threshold)
        except InputError as error:
            raise InputError(f"case {case.patient_id}: {error} ({pred_path})") from None
        result["case_id"] = case.patient_id
        per_case.append(result)
    summary = summarize_segmentation(per_case)
    return {
        "task": spec.number,
        "kind": "segmentation",
        "n_cases": summary["n_cases"],
        "gtvp_dice_mean": summary[_GTVP]["dice_mean"],
        "gtvn_dsc_agg": summary[_GTVN]["dsc_agg"],
        "gtvn_f1_agg": summary[_GTVN]["f1_agg"],
        "tolerance_mm": float(tolerance_mm),
        "iou_threshold": float(iou_threshold),
        "labels": {name: summary[name] for name in FOREGROUND},
        "cases": per_case,
    }


def _survival_table(labels: Path, spec: TaskSpec) -> Path:
    if labels.is_file():
        return labels
    if (labels / spec.training_csv).is_file():
        return labels / spec.training_csv
    return task_folder(labels, spec.number) / spec.training_csv


def read_predictions_table(path: str | Path, column: str) -> dict[str, float]:
    """PatientID -> value of a ``predictions.csv``; a missing column, duplicate patient or non-finite value is an
    :class:`InputError` naming it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; --pred takes the predictions table (e.g. {path / 'predictions.csv'})")
    rows = read_clinical_csv(path)
    if rows and column not in rows[0]:
        raise InputError(f"{path} has no '{column}' column (columns: {', '.join(rows[0])})")
    values: dict[str, float] = {}
    for row in rows:  # a patient listed twice is refused by read_clinical_csv, naming both lines
        case_id = row["PatientID"]
        try:
            value = float(row[column])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise InputError(f"{path}: case {case_id} has no finite {column} ({row[column]!r})")
        values[case_id] = value
    return values


def evaluate_risks(pred_csv: str | Path, labels: str | Path, task: int | str | TaskSpec = 2) -> dict[str, Any]:
    """Harrell's C-index of a predictions table against a HECKTOR survival table.

    Args:
        pred_csv: ``PatientID,<value column>`` (``predictions.csv`` of ``hecktor-predict``).
        labels: the task's training table with ``RFS`` and ``Relapse``, its folder, or that folder's parent.
        task: a survival task (Task 2).

    Returns:
        ``{"task", "kind": "survival", "cindex", "n", "events", "value_column", "cases": [{PatientID, value, RFS,
        Relapse}]}``.

    Raises:
        InputError: a missing or extra patient (naming it), a malformed table, or no comparable pair.
    """
    spec = get_task(task)
    column = prediction_column(spec)
    table = _survival_table(Path(labels), spec)
    truth = {row["PatientID"]: row for row in read_clinical_csv(table, require_survival=True)}
    risks = read_predictions_table(pred_csv, column)
    _match(list(risks), list(truth), Path(pred_csv), table, f"a row '{{}},<{column}>'")
    ids = sorted(truth)
    time, event = [truth[i]["RFS"] for i in ids], [truth[i]["Relapse"] for i in ids]
    return {
        "task": spec.number,
        "kind": "survival",
        "cindex": concordance_index(time, event, [risks[i] for i in ids]),
        "n": len(ids),
        "events": int(sum(event)),
        "value_column": column,
        "cases": [{"PatientID": i, column: risks[i], "RFS": truth[i]["RFS"], "Relapse": truth[i]["Relapse"]}
                  for i in ids],
    }


_TRUE, _FALSE = frozenset({"true", "1", "1.0"}), frozenset({"false", "0", "0.0"})


def _status_of(value: Any) -> bool | None:
    """``true``/``false`` (or 1/0) as a boolean; ``None`` for anything else."""
    text = str(value).strip().lower() if value is not None else ""
    return True if text in _TRUE else False if text in _FALSE else None


def evaluate_statuses(pred_csv: str | Path, labels: str | Path, task: int | str | TaskSpec = 3) -> dict[str, Any]:
    """Balanced accuracy (and AUC, where the table has a ``probability`` column) of predicted binary statuses
    against the task's training table; patients whose status is unknown (an empty cell) are not scored. When every
    scored patient is of one class, the AUC and the other class's rate are undefined (``None``) and the balanced
    accuracy is the present class's recall (as scikit-learn's), with one line in ``warnings``.

    Args:
        pred_csv: ``PatientID,<value column>[,probability]`` (``predictions.csv`` of ``hecktor-predict``; values
            ``true``/``false``).
        labels: the task's training table (its target column, e.g. ``HPV Status``: 0, 1 or empty), its folder, or
            that folder's parent.
        task: a binary task (Task 3).

    Returns:
        ``{"task", "kind": "classification", "balanced_accuracy", "auc" (``None`` without probabilities or with
        one class), "auc_note" (why it is ``None``), "warnings", "sensitivity", "specificity" (``None`` for an absent
        class), "n", "positives", "tp", "fn", "tn", "fp", "n_unknown_ignored", "value_column", "target",
        "cases": [{PatientID, value, probability, target}]}``.

    Raises:
        InputError: a missing prediction for a patient of known status, a prediction for a patient absent from the
            table, a malformed value (naming it), a patient listed twice, or no patient of known status.
    """
    spec = get_task(task)
    column, target = prediction_column(spec), spec.target_columns[0]
    table = _survival_table(Path(labels), spec)
    rows = read_clinical_csv(table)
    if rows and target not in rows[0]:
        raise InputError(f"{table} has no '{target}' column (columns: {', '.join(rows[0])})")
    truth: dict[str, bool | None] = {}
    for row in rows:
        cell = row.get(target)
        status = None if cell is None else _status_of(cell)
        if cell is not None and status is None:
            raise InputError(f"{table}: case {row['PatientID']} has {target} {cell!r}; expected 0, 1 or empty")
        truth[row["PatientID"]] = status
    pred_csv = Path(pred_csv)
    if pred_csv.is_dir():
        raise InputError(f"{pred_csv} is a folder; --pred takes the predictions table (e.g. "
                         f"{pred_csv / 'predictions.csv'})")
    predicted_rows = read_clinical_csv(pred_csv)
    if predicted_rows and column not in predicted_rows[0]:
        raise InputError(f"{pred_csv} has no '{column}' column (columns: {', '.join(predicted_rows[0])})")
    with_probability = bool(predicted_rows) and "probability" in predicted_rows[0]
    predictions: dict[str, tuple[bool, float | None]] = {}
    for row in predicted_rows:  # a patient listed twice is refused by read_clinical_csv, naming both lines
        case_id = row["PatientID"]
        value = _status_of(row[column])
        if value is None:
            raise InputError(f"{pred_csv}: case {case_id} has {column} {row[column]!r}; expected true or false")
        probability = None
        if with_probability:
            try:
                probability = float(row["probability"])
            except (TypeError, ValueError):
                probability = math.nan
            if not 0.0 <= probability <= 1.0:
                raise InputError(f"{pred_csv}: case {case_id} has no probability in [0, 1] ({row['probability']!r})")
        predictions[case_id] = (value, probability)
    known = sorted(pid for pid, status in truth.items() if status is not None)
    missing = [pid for pid in known if pid not in predictions]
    extra = sorted(pid for pid in predictions if pid not in truth)
    if missing:
        raise InputError(f"no prediction for case {_listing(missing)} in {pred_csv} (expected a row "
                         f"'{missing[0]},<{column}>'); predict every case of known {target}")
    if extra:
        raise InputError(f"prediction for case {_listing(extra)} in {pred_csv} has no row in {table}; remove it or "
                         "point --labels at the table that holds the case")
    if not known:
        raise InputError(f"{table}: no patient of known {target} (every cell is empty); nothing to score")
    y = np.asarray([truth[pid] for pid in known], dtype=bool)
    guess = np.asarray([predictions[pid][0] for pid in known], dtype=bool)
    tp, fn = int((guess & y).sum()), int((~guess & y).sum())
    tn, fp = int((~guess & ~y).sum()), int((guess & ~y).sum())
    warnings, auc_note = [], None if with_probability else "the table has no probability column"
    if y.all() or not y.any():
        # One class: the AUC (and the other class's rate) is undefined. The balanced accuracy is then the recall of
        # the class present, as scikit-learn's balanced_accuracy_score averages the recalls of the classes present.
        present, rate = ("positive", "sensitivity") if y.all() else ("negative", "specificity")
        auc_note = f"all {len(known)} patients of known {target} are {present}"
        warnings.append(f"{auc_note} in {table}: the AUC is undefined (n/a) and the balanced accuracy is the {rate} "
                        "alone")
        balanced, auc = float((guess == y).mean()), None
    else:
        balanced = balanced_accuracy(y, guess)
        auc = roc_auc(y, [predictions[pid][1] for pid in known]) if with_probability else None
    return {
        "task": spec.number,
        "kind": "classification",
        "balanced_accuracy": balanced,
        "auc": auc,
        "auc_note": auc_note,
        "warnings": warnings,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "n": len(known),
        "positives": int(y.sum()),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "n_unknown_ignored": sum(1 for pid in predictions if truth.get(pid, False) is None),
        "value_column": column,
        "target": target,
        "cases": [{"PatientID": pid, column: predictions[pid][0], "probability": predictions[pid][1],
                   target: int(truth[pid])} for pid in known],
    }


def evaluate_hecktor2026(pred_dir: str | Path, labels: str | Path, task: int | str | TaskSpec = 2026,
                         **options: Any) -> dict[str, Any]:
    """HECKTOR 2026's scores of what ``hecktor-predict --task 2026`` wrote: the masks as :func:`evaluate_masks`
    scores them, the T and N stage and the RFS time of ``predictions.csv`` beside them
    (:func:`hecktor.evaluate2026.score_hecktor2026`).

    Args:
        pred_dir: one mask per case (``<PatientID>.nii.gz`` or ``.mha``) and ``predictions.csv``
            (``PatientID,t_stage,n_stage,rfs_days``).
        labels: the 2026 training folder (label maps and the table with T-stage, N-stage, RFS, Relapse) or its
            parent.
        options: :func:`evaluate_masks`'s.
    """
    spec = get_task(task)
    segmentation = evaluate_masks(pred_dir, labels, spec, **options)
    return score_hecktor2026(segmentation, Path(pred_dir) / PREDICTIONS_CSV, _survival_table(Path(labels), spec))


def evaluate(task: int | str | TaskSpec, pred: str | Path, labels: str | Path, **options: Any) -> dict[str, Any]:
    """Score a task's predictions by the kind of its output in the registry (:mod:`hecktor.tasks`)."""
    spec = get_task(task)
    if spec.output_kind == "mask" and spec.has_label_maps:
        return evaluate_masks(pred, labels, spec, **options)
    if spec.output_kind == "json-number" and set(SURVIVAL_COLUMNS) <= set(spec.target_columns):
        return evaluate_risks(pred, labels, spec, **options)
    if spec.output_kind == "json-boolean" and len(spec.target_columns) == 1:
        return evaluate_statuses(pred, labels, spec, **options)
    if spec.output_kind == "hecktor2026":
        return evaluate_hecktor2026(pred, labels, spec, **options)
    raise InputError(f"hecktor-evaluate cannot score Task {spec.number} ({spec.output_kind} output) yet")


# -------------------------------------------------------------------------------------------------------- reports


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _hd95(value: float) -> str:
    return _number(value, 1)


def _segmentation_markdown(report: Mapping[str, Any]) -> str:
    labels = report["labels"]
    lines = [
        f"## Task {report['task']}: {get_task(report['task']).title}, {report['n_cases']} case(s)",
        "",
        "| leaderboard score | value |",
        "| --- | --- |",
        f"| {_GTVP} mean Dice (per patient) | {_number(report['gtvp_dice_mean'])} |",
        f"| {_GTVN} DSCagg | {_number(report['gtvn_dsc_agg'])} |",
        f"| {_GTVN} F1agg (IoU > {report['iou_threshold']:g}) | {_number(report['gtvn_f1_agg'])} |",
        "",
        f"| label | mean Dice | DSCagg | F1agg (lesions TP / FP / FN) | HD95 mean / median (mm) | "
        f"surface Dice ({report['tolerance_mm']:g} mm) | volume predicted / true |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in labels.items():
        inf = f" ({s['hd95_n_inf']} inf)" if s["hd95_n_inf"] else ""
        lines.append(f"| {name} | {_number(s['dice_mean'])} | {_number(s['dsc_agg'])} | {_number(s['f1_agg'])} "
                     f"({s['lesion_tp']} / {s['lesion_fp']} / {s['lesion_fn']}) | {_hd95(s['hd95_mean'])} / "
                     f"{_hd95(s['hd95_median'])}{inf} | {_number(s['surface_dice_mean'])} | "
                     f"{_number(s['volume_ratio'])} |")
    header = ["case"] + [f"{name} {what}" for name in labels for what in ("Dice", "HD95 (mm)", "lesions TP/FP/FN")]
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for case in report["cases"]:
        cells = [str(case["case_id"])]
        for name in labels:
            r = case[name]
            cells += [_number(r["dice"]), _hd95(r["hd95"]), f"{r['lesion_tp']}/{r['lesion_fp']}/{r['lesion_fn']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _survival_markdown(report: Mapping[str, Any]) -> str:
    return "\n".join([
        f"## Task {report['task']}: {get_task(report['task']).title}, {report['n']} patient(s)",
        "",
        "| score | value |",
        "| --- | --- |",
        f"| Harrell's C-index ({report['value_column']}) | {_number(report['cindex'])} |",
        f"| patients | {report['n']} |",
        f"| events (relapses) | {report['events']} |",
    ]) + "\n"


def _classification_markdown(report: Mapping[str, Any]) -> str:
    auc = (f"| AUC (probability) | {_number(report['auc'])} |" if report["auc"] is not None else
           f"| AUC | n/a ({report['auc_note']}) |")
    lines = [
        f"## Task {report['task']}: {get_task(report['task']).title}, {report['n']} patient(s) of known status",
        "",
        "| score | value |",
        "| --- | --- |",
        f"| balanced accuracy ({report['value_column']}) | {_number(report['balanced_accuracy'])} |",
        auc,
        f"| sensitivity / specificity | {_number(report['sensitivity'])} / {_number(report['specificity'])} |",
        f"| TP / FN / TN / FP | {report['tp']} / {report['fn']} / {report['tn']} / {report['fp']} |",
        f"| positives | {report['positives']} |",
    ]
    if report["n_unknown_ignored"]:
        lines.append(f"| predictions of unknown {report['target']} (not scored) | {report['n_unknown_ignored']} |")
    return "\n".join(lines) + "\n"


def to_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown report of :func:`evaluate`'s result."""
    kinds = {"segmentation": _segmentation_markdown, "survival": _survival_markdown,
             "classification": _classification_markdown,
             "hecktor2026": lambda r: hecktor2026_markdown(r, _segmentation_markdown(r["segmentation"]))}
    return kinds[report["kind"]](report)


def _strict_json(value: Any) -> Any:
    """NaN and inf become ``null`` (strict JSON; the report's counts say which were infinite); numpy scalars plain."""
    if isinstance(value, Mapping):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write :func:`evaluate`'s result as strict JSON, atomically."""
    return write_text_atomic(json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n", path)


# ------------------------------------------------------------------------------------------------------------ CLI


def build_parser() -> CliParser:
    parser = CliParser(
        prog="hecktor-evaluate",
        description="Score predictions as the HECKTOR 2025 and 2026 leaderboards do. Task 1: GTVp mean per-patient "
                    "Dice, "
                    f"GTVn DSCagg and F1agg (lesions at IoU > {DEFAULT_IOU_THRESHOLD:g}), with HD95 and surface Dice "
                    f"({DEFAULT_TOLERANCE_MM:g} mm) per label. Task 2: Harrell's C-index. Task 3: balanced accuracy "
                    "and, with a probability column, AUC. HECKTOR 2026 (--task 2026): the Dice of GTVp and GTVn "
                    "averaged (the Task 1 scores beside), T and N stage balanced accuracy with recall and confusion "
                    "matrix, C-index of the RFS time. Markdown on stdout; "
                    "a missing, extra or off-grid prediction is an error naming the case (exit status 2).")
    parser.add_argument("--task", type=int, required=True, choices=task_numbers(), help="task number (required)")
    parser.add_argument("--pred", type=Path, required=True,
                        help="Task 1: folder of <PatientID>.nii.gz or .mha masks; Task 2: predictions.csv "
                             "(PatientID,risk); Task 3: predictions.csv (PatientID,hpv_status[,probability]); "
                             "2026: the folder of masks and predictions.csv (PatientID,t_stage,n_stage,rfs_days) "
                             "that hecktor-predict --task 2026 writes (required)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="Task 1: HECKTOR 'Task 1' folder or its parent; Task 2: the training table with RFS "
                             "and Relapse, its 'Task 2' folder or that folder's parent; Task 3: the table with HPV "
                             "Status, its 'Task 3' folder or that folder's parent; 2026: the 'Task 2026' folder "
                             "(label maps and the table with T-stage, N-stage, RFS, Relapse) or its parent "
                             "(required)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every number (per case included) to this JSON file (default: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hecktor-evaluate``: returns the exit status (0; 2 on a user error)."""
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(args.task, args.pred, args.labels)
        if args.json is not None:
            write_json(report, args.json)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in report.get("warnings", ()):
        print(f"warning: {line}", file=sys.stderr)
    print(to_markdown(report), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
