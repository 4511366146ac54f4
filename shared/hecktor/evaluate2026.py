"""Scoring HECKTOR 2026's answers as the challenge does: T and N stage balanced accuracy (with each stage's recall and
the confusion matrix) and the C-index of the RFS time, beside the segmentation's scores.

``hecktor-evaluate --task 2026`` (:mod:`hecktor.evaluate`) scores the masks with
:func:`~hecktor.evaluate.evaluate_masks` and hands that report here with the predictions table; the demo scores its
held-out cases with :func:`stage_scores` and :func:`rfs_time_cindex`, the same functions.

* **Segmentation**: the Dice of GTVp and the Dice of GTVn, each the mean over patients (empty-mask conventions:
  :func:`hecktor.metrics.evaluate_segmentation`), averaged (``dice_mean``); the 2025 leaderboard's GTVn DSCagg and
  F1agg beside.
* **T and N stage**: balanced accuracy, the mean recall over the stages present in the ground truth
  (scikit-learn's ``balanced_accuracy_score``); a patient whose stage is unknown (``Tx``, an empty cell; parsed by
  :mod:`hecktor.staging`) is not scored for that stage.
* **Prognosis**: Harrell's C-index of the predicted RFS time against the observed RFS and relapse, a longer time
  meaning a lower risk (:func:`hecktor.metrics.concordance_index` of the negated time); patients without RFS or
  relapse are not scored.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.datasets import read_clinical_csv
from hecktor.errors import InputError
from hecktor.labels import FOREGROUND, GTVN, GTVP
from hecktor.metrics import concordance_index
from hecktor.staging import N_STAGES, T_STAGES, parse_n_stage, parse_t_stage
from hecktor.tasks import STAGE_COLUMNS

__all__ = ["PREDICTION_COLUMNS", "STAGES", "stage_scores", "rfs_time_cindex", "read_hecktor2026_predictions",
           "score_hecktor2026", "hecktor2026_markdown"]

PREDICTION_COLUMNS = ("t_stage", "n_stage", "rfs_days")
"""The columns of ``hecktor-predict``'s ``predictions.csv`` for 2026 (the answer's fields, one row per case)."""
STAGES = {"t_stage": (STAGE_COLUMNS[0], T_STAGES, parse_t_stage),
          "n_stage": (STAGE_COLUMNS[1], N_STAGES, parse_n_stage)}
"""Per predicted stage column: the training table's column, the stages, the parser of its cells."""


def stage_scores(truth: Sequence[str], predicted: Sequence[str], stages: Sequence[str]) -> dict[str, Any]:
    """Balanced accuracy, recall per stage and the confusion matrix of predicted stages.

    Args:
        truth: the patients' stages (each one of ``stages``).
        predicted: the predicted stages, in the same order.
        stages: every stage, in order (:data:`hecktor.staging.T_STAGES` or ``N_STAGES``).

    Returns:
        ``{"balanced_accuracy", "recall": {stage: recall or None when absent from the truth}, "confusion"
        (rows: true stage, columns: predicted, both in ``stages`` order), "stages", "n"}``.

    Raises:
        InputError: no patient, unequal lengths, or a stage outside ``stages``.
    """
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix  # scikit-learn: only when scoring stages

    truth, predicted = list(truth), list(predicted)
    if not truth or len(truth) != len(predicted):
        raise InputError(f"stage scores need as many predictions as patients (at least one), got {len(predicted)} "
                         f"for {len(truth)}")
    unknown = sorted({s for s in truth + predicted if s not in stages})
    if unknown:
        raise InputError(f"stages {unknown} are not among {', '.join(stages)}")
    confusion = confusion_matrix(truth, predicted, labels=list(stages))
    counts = confusion.sum(axis=1)
    recall = {s: float(confusion[i, i] / counts[i]) if counts[i] else None for i, s in enumerate(stages)}
    with warnings.catch_warnings():  # a predicted stage that no patient has is a wrong answer, scored as such
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        balanced = float(balanced_accuracy_score(truth, predicted))
    return {"balanced_accuracy": balanced, "recall": recall, "confusion": confusion.tolist(), "stages": list(stages),
            "n": len(truth)}


def rfs_time_cindex(time: Sequence[float], event: Sequence[bool | int], rfs_days: Sequence[float]) -> float:
    """Harrell's C-index of predicted RFS times: a longer predicted time must mean a later relapse (the risk is the
    negated time; :func:`hecktor.metrics.concordance_index`)."""
    return concordance_index(time, event, -np.asarray(rfs_days, dtype=np.float64))


def read_hecktor2026_predictions(path: str | Path, case_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """PatientID -> ``{"t_stage", "n_stage", "rfs_days"}`` of a 2026 ``predictions.csv``, for exactly ``case_ids``.

    Raises:
        InputError: a missing table or column, a case missing or extra, a stage that is not exactly one of the
            challenge's, or an RFS time that is not a finite number of days above 0 (each naming the case).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no predictions table {path} (hecktor-predict --task 2026 writes it beside the masks)")
    rows = read_clinical_csv(path)
    missing_columns = [c for c in PREDICTION_COLUMNS if rows and c not in rows[0]]
    if missing_columns:
        raise InputError(f"{path} has no '{missing_columns[0]}' column (columns: {', '.join(rows[0])})")
    predictions: dict[str, dict[str, Any]] = {}
    for row in rows:
        case_id = row["PatientID"]
        for column, (_, stages, _) in STAGES.items():
            if row[column] not in stages:
                raise InputError(f"{path}: case {case_id} has {column} {row[column]!r}; expected one of "
                                 f"{', '.join(stages)}")
        try:
            days = float(row["rfs_days"])
        except (TypeError, ValueError):
            days = math.nan
        if not (math.isfinite(days) and days > 0):
            raise InputError(f"{path}: case {case_id} has rfs_days {row['rfs_days']!r}; expected a finite number of "
                             "days above 0")
        predictions[case_id] = {"t_stage": row["t_stage"], "n_stage": row["n_stage"], "rfs_days": days}
    absent, extra = sorted(set(case_ids) - set(predictions)), sorted(set(predictions) - set(case_ids))
    if absent:
        raise InputError(f"{path} has no row for case {', '.join(absent[:5])}; predict every case of the labels")
    if extra:
        raise InputError(f"{path} has a row for case {', '.join(extra[:5])}, which has no mask and no ground truth")
    return predictions


def score_hecktor2026(segmentation: Mapping[str, Any], predictions_csv: str | Path,
                      table: str | Path) -> dict[str, Any]:
    """The challenge's scores of a 2026 run.

    Args:
        segmentation: :func:`hecktor.evaluate.evaluate_masks`'s report of the run's masks.
        predictions_csv: the run's ``predictions.csv`` (:data:`PREDICTION_COLUMNS`), a row per scored case.
        table: the 2026 training table (``T-stage``, ``N-stage``, ``RFS``, ``Relapse``) of those cases.

    Returns:
        ``{"task", "kind": "hecktor2026", "n_cases", "dice_gtvp_mean", "dice_gtvn_mean", "dice_mean",
        "segmentation" (the masks' report), "t_stage" and "n_stage" (:func:`stage_scores`, with
        ``n_unknown_ignored``), "rfs" ({"cindex", "n", "events", "n_unknown_ignored"}), "cases": [per case]}``.
        A score with no patient to score is ``None`` (a stage unknown for every patient, no relapse).
    """
    case_ids = [c["case_id"] for c in segmentation["cases"]]
    predictions = read_hecktor2026_predictions(predictions_csv, case_ids)
    truth = {row["PatientID"]: row for row in read_clinical_csv(table)}
    absent = [pid for pid in case_ids if pid not in truth]
    if absent:
        raise InputError(f"{table} has no row for case {', '.join(absent[:5])}")
    report: dict[str, Any] = {"task": segmentation["task"], "kind": "hecktor2026", "n_cases": len(case_ids)}
    name_of = {value: name for name, value in FOREGROUND.items()}
    gtvp, gtvn = (segmentation["labels"][name_of[label]]["dice_mean"] for label in (GTVP, GTVN))
    report.update(dice_gtvp_mean=gtvp, dice_gtvn_mean=gtvn, dice_mean=float(np.mean([gtvp, gtvn])))
    cases = [{"PatientID": pid, **predictions[pid]} for pid in case_ids]
    for column, (table_column, stages, parse) in STAGES.items():
        known = [(pid, parse(truth[pid].get(table_column))) for pid in case_ids]
        known = [(pid, stage) for pid, stage in known if stage is not None]
        for case in cases:
            case[table_column] = parse(truth[case["PatientID"]].get(table_column))
        report[column] = stage_scores([s for _, s in known], [predictions[pid][column] for pid, _ in known],
                                      stages) if known else None
        report[f"{column}_n_unknown_ignored"] = len(case_ids) - len(known)
    scored = [pid for pid in case_ids if truth[pid].get("RFS") is not None and truth[pid].get("Relapse") is not None]
    time, event = [truth[pid]["RFS"] for pid in scored], [truth[pid]["Relapse"] for pid in scored]
    for case in cases:
        case.update(RFS=truth[case["PatientID"]].get("RFS"), Relapse=truth[case["PatientID"]].get("Relapse"))
    report["rfs"] = {"cindex": rfs_time_cindex(time, event, [predictions[pid]["rfs_days"] for pid in scored])
                     if any(event) else None, "n": len(scored), "events": int(sum(event)),
                     "n_unknown_ignored": len(case_ids) - len(scored)}
    report["segmentation"] = dict(segmentation)
    report["cases"] = cases
    return report


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _stage_lines(name: str, scores: Mapping[str, Any] | None, unknown: int) -> list[str]:
    if scores is None:
        return [f"{name}: no patient of known stage, not scored", ""]
    stages = scores["stages"]
    lines = [f"{name}: balanced accuracy {_number(scores['balanced_accuracy'])} over {scores['n']} patient(s)"
             + (f" ({unknown} of unknown stage not scored)" if unknown else ""), "",
             "| true \\ predicted | " + " | ".join(stages) + " | recall |", "|" + " --- |" * (len(stages) + 2)]
    for stage, row in zip(stages, scores["confusion"]):
        lines.append(f"| {stage} | " + " | ".join(str(v) for v in row) + f" | {_number(scores['recall'][stage])} |")
    return lines + [""]


def hecktor2026_markdown(report: Mapping[str, Any], segmentation_markdown: str) -> str:
    """The Markdown report of :func:`score_hecktor2026`'s result, the segmentation's own report after it."""
    rfs = report["rfs"]
    lines = [
        f"## HECKTOR 2026, {report['n_cases']} case(s)",
        "",
        "| challenge score | value |",
        "| --- | --- |",
        f"| Dice, GTVp and GTVn averaged | {_number(report['dice_mean'])} |",
        f"| Dice GTVp / GTVn (mean per patient) | {_number(report['dice_gtvp_mean'])} / "
        f"{_number(report['dice_gtvn_mean'])} |",
        f"| T stage balanced accuracy | {_number((report['t_stage'] or {}).get('balanced_accuracy'))} |",
        f"| N stage balanced accuracy | {_number((report['n_stage'] or {}).get('balanced_accuracy'))} |",
        f"| C-index of the RFS time ({rfs['n']} patients, {rfs['events']} relapses) | {_number(rfs['cindex'])} |",
        "",
    ]
    lines += _stage_lines("T stage", report["t_stage"], report["t_stage_n_unknown_ignored"])
    lines += _stage_lines("N stage", report["n_stage"], report["n_stage_n_unknown_ignored"])
    return "\n".join(lines) + "\n" + segmentation_markdown
