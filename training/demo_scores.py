"""How the demo scores its held-out patients (:data:`demo.SCORERS`, one rule per task): the container outputs of the
``held_out`` patients and the in-process answers of the ``held_out_extra`` ones, together (the keys of
``demo_output/results.json``'s ``scores``) and apart (``<key>_containers``, ``<key>_in_process``), each score beside
the synthetic cohort's oracle where it has one, and the scores of Tasks 2, 3 and 2026 on all the held-out patients
with their bootstrap 95 % interval (``<key>_ci95``): on three dozen patients one patient moves a C-index or a balanced
accuracy by several points, and the interval says how far (docs/results/benchmarks.md, "What a 36-patient held-out
score can say")."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.metrics import balanced_accuracy, concordance_index, evaluate_segmentation, roc_auc, \
    summarize_segmentation
from hecktor.synthetic import oracle_balanced_accuracy, oracle_c_index
from hecktor.tasks import get_task


def output_path(out: Path, task: int, pid: str) -> Path:
    return out / "outputs" / f"task{task}" / pid / get_task(task).output


def in_process_mask(out: Path, folder: str, pid: str) -> Path:
    """Where :func:`demo.predict_in_process` keeps an extra held-out case's shared segmentation."""
    return out / folder / "segmentations" / f"{pid}.nii.gz"


def score_segmentation(out: Path, held_out: list[dict[str, Any]],
                       extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Task 1: the challenge's metrics of the Task 1 container's masks (mirror TTA) against the labels
    (``segmentation``, ``per_case``), and of the ``extra`` patients' shared in-process segmentations (the nested
    Task 1 model as Tasks 2, 3 and 2026 run it: no TTA; ``segmentation_in_process``; a case without a mask counts
    as an empty one; a run from before the demo kept them, rescored, has none)."""
    def scored(cases: list[dict[str, Any]], folder: str, prediction_of) -> list[dict[str, Any]]:
        per_case = []
        for case in cases:
            pid = case["patient_id"]
            truth = sitk.ReadImage(str(out / folder / "labels" / f"{pid}.nii.gz"))
            path = prediction_of(pid)
            if path.is_file():
                prediction = sitk.ReadImage(str(path))
            else:
                prediction = sitk.Image(truth.GetSize(), sitk.sitkUInt8)
                prediction.CopyInformation(truth)
            per_case.append(evaluate_segmentation(prediction, truth, case_id=pid))
        return per_case

    per_case = scored(held_out, "held_out", lambda pid: output_path(out, 1, pid))
    scores = {"segmentation": summarize_segmentation(per_case), "per_case": per_case}
    if extra and in_process_mask(out, "held_out_extra", "").parent.is_dir():  # runs before it kept none
        scores["segmentation_in_process"] = summarize_segmentation(
            scored(extra, "held_out_extra", lambda pid: in_process_mask(out, "held_out_extra", pid)))
    return scores


def _cindex(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Harrell's C of the cases' risks and of their true log-hazards (NaN without a comparable pair)."""
    times = [c["rfs_days"] for c in cases]
    events = [c["relapse"] for c in cases]
    return {"cindex": _or_nan(concordance_index, times, events, [c["risk"] for c in cases]),
            "oracle_cindex": _or_nan(oracle_c_index, events, times, [c["true_log_hazard"] for c in cases]),
            "cindex_n": len(cases)}


def _or_nan(score, *args: Any) -> float:
    """A score that is undefined on these patients (no comparable pair, one class only) as NaN."""
    try:
        return score(*args)
    except InputError:
        return float("nan")


INTERVAL_KEYS = ("cindex", "hpv_balanced_accuracy", "hpv_auc", "t_stage_balanced_accuracy",
                 "n_stage_balanced_accuracy", "rfs_time_cindex")
"""The held-out scores given with a bootstrap 95 % interval (``<key>_ci95``)."""
BOOTSTRAP_RESAMPLES = 1000


def interval95(scores_of, cases: list[dict[str, Any]], keys: Sequence[str], *,
               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, list[float]]:
    """The percentile bootstrap's 95 % interval of each score of ``keys``: ``scores_of`` on ``resamples`` sets of
    the patients drawn with replacement (a draw where a score is undefined, one class only, does not count),
    ``{"<key>_ci95": [low, high]}``; NaN where no draw defines it.

    Written here rather than with ``scipy.stats.bootstrap``: that one gives a NaN interval as soon as one draw is
    undefined (a draw of one HPV status only, or without a comparable pair), which draws of a few dozen patients
    meet."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {key: [] for key in keys}
    for _ in range(resamples):
        # A draw may hold no comparable pair (a division by zero: undefined, left out) or a single stage
        # (scikit-learn warns); the scores on the patients themselves, computed apart, keep their warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = scores_of([cases[i] for i in rng.integers(0, len(cases), len(cases))])
        for key in keys:
            value = scores.get(key)
            if value is not None and math.isfinite(value):
                draws[key].append(float(value))
    return {f"{key}_ci95": [float(v) for v in np.percentile(values, [2.5, 97.5])] if values
            else [float("nan"), float("nan")] for key, values in draws.items()}


def _apart(scores_of, containers: list[dict[str, Any]], extra: list[dict[str, Any]]) -> dict[str, Any]:
    """Scores of all the held-out patients (the keys as they are) with the bootstrap interval of those of
    :data:`INTERVAL_KEYS` (:func:`interval95`), and of the container runs and the in-process patients apart
    (``<key>_containers``, ``<key>_in_process``)."""
    cases = containers + extra
    scores = scores_of(cases)
    scores.update(interval95(scores_of, cases, [key for key in INTERVAL_KEYS if key in scores]))
    for suffix, part in (("containers", containers), ("in_process", extra)):
        if part:
            scores.update({f"{key}_{suffix}": value for key, value in scores_of(part).items()})
    return scores


def score_prognosis(out: Path, held_out: list[dict[str, Any]],
                    extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Task 2: Harrell's C of the risks, beside the true log-hazard's, on the container runs and the ``extra``
    patients predicted in-process (:func:`predict_in_process`), together (``cindex``, ``cindex_n``) and apart."""
    for case in held_out:
        case["risk"] = json.loads(output_path(out, 2, case["patient_id"]).read_text())
    return _apart(_cindex, held_out, list(extra or []))


HPV_LOG_LINE = re.compile(r"P\(HPV\+\) ([0-9.]+), threshold")
"""The Task 3 container's last log line gives the probability behind the boolean it writes (the AUC needs it)."""


def score_hpv(out: Path, held_out: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Task 3: balanced accuracy of the predicted statuses (the challenge's metric) and the AUC of the probabilities
    the containers logged (the ``extra`` patients: that :func:`predict_in_process` recorded), on the patients whose
    status is recorded, each beside the oracle's (the true P(HPV+): the Bayes rule,
    :func:`hecktor.synthetic.oracle_balanced_accuracy`, and its AUC); together and apart, as Task 2's."""
    for case in held_out:
        pid = case["patient_id"]
        case["hpv_predicted"] = json.loads(output_path(out, 3, pid).read_text())
        found = HPV_LOG_LINE.findall((out / "outputs" / "task3" / f"{pid}.log").read_text())
        case["hpv_probability_predicted"] = float(found[-1]) if found else float("nan")
    return _apart(_hpv_scores, held_out, list(extra or []))


def _hpv_scores(cases: list[dict[str, Any]]) -> dict[str, Any]:
    known = [c for c in cases if c["hpv_status"] is not None]
    labels = [int(c["hpv_status"]) for c in known]
    both_classes = 0 < sum(labels) < len(labels)
    predicted = [c["hpv_probability_predicted"] for c in known]
    return {"hpv_n": len(known), "hpv_n_positive": sum(labels),
            "hpv_balanced_accuracy": balanced_accuracy(labels, [bool(c["hpv_predicted"]) for c in known])
            if both_classes else float("nan"),
            "hpv_auc": roc_auc(labels, predicted) if both_classes and all(map(math.isfinite, predicted))
            else float("nan"),
            "hpv_oracle_balanced_accuracy": oracle_balanced_accuracy(labels, [c["hpv_probability"] for c in known]),
            "hpv_oracle_auc": roc_auc(labels, [c["hpv_probability"] for c in known]) if both_classes
            else float("nan")}


def score_hecktor2026(out: Path, held_out: list[dict[str, Any]],
                      extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """HECKTOR 2026: the T and N stage balanced accuracy against the recorded stages, with recall per stage and the
    confusion matrix (:func:`hecktor.evaluate2026.stage_scores`), and the C-index of the RFS time (a longer time, a
    later relapse: :func:`hecktor.evaluate2026.rfs_time_cindex`), from the container's four outputs of each held-out
    case and the ``extra`` patients' in-process answers (:func:`predict_in_process`), together and apart as Task 2's;
    the challenge's Dice of GTVp and GTVn averaged, on the container runs."""
    from hecktor.evaluate2026 import STAGES

    spec, per_case = get_task(2026), []
    for case in held_out:
        folder = out / "outputs" / f"task{spec.number}" / case["patient_id"]
        for column, path in zip(STAGES, spec.extra_outputs):
            case[f"{column}_predicted"] = json.loads((folder / path).read_text())
        case["rfs_days_predicted"] = json.loads((folder / spec.extra_outputs[-1]).read_text())
        truth = sitk.ReadImage(str(out / "held_out" / "labels" / f"{case['patient_id']}.nii.gz"))
        per_case.append(evaluate_segmentation(sitk.ReadImage(str(folder / spec.output)), truth))
    summary = summarize_segmentation(per_case)
    return {"hecktor2026_dice_n": len(held_out), "hecktor2026_dice_mean": float(
        (summary["GTVp"]["dice_mean"] + summary["GTVn"]["dice_mean"]) / 2),
        **_apart(_hecktor2026_scores, held_out, list(extra or []))}


def _hecktor2026_scores(cases: list[dict[str, Any]]) -> dict[str, Any]:
    from hecktor.evaluate2026 import STAGES, rfs_time_cindex, stage_scores

    scores: dict[str, Any] = {"hecktor2026_n": len(cases)}
    for column, (_, stages, _) in STAGES.items():
        known = [c for c in cases if c.get(column) is not None]  # a recorded stage (Tx: not scored)
        result = (stage_scores([c[column] for c in known], [c[f"{column}_predicted"] for c in known], stages)
                  if known else {"balanced_accuracy": float("nan"), "recall": None, "confusion": None})
        scores.update({f"{column}_balanced_accuracy": result["balanced_accuracy"], f"{column}_recall": result["recall"],
                       f"{column}_confusion": result["confusion"], f"{column}_n": len(known)})
    scores["rfs_time_cindex"] = _or_nan(rfs_time_cindex, [c["rfs_days"] for c in cases],
                                        [c["relapse"] for c in cases], [c["rfs_days_predicted"] for c in cases])
    return scores
