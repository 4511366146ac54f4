"""Task 3's held-out scoring and the demo's Task 3 (beside :mod:`hecktor.training.hpv`, the trainer): an exported
bundle scored on labelled cases through the container's own call, and the train-export-score sequence of the demo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hecktor.datasets import list_training_cases, read_training_table
from hecktor.diagnosis import HPVPredictor
from hecktor.errors import InputError
from hecktor.plan import BoxPlan
from hecktor.training.crossval import json_safe
from hecktor.training.hpv import NETWORK_PRESETS, HPVTrainingConfig, export_hpv_bundle, safe_auc, \
    safe_balanced_accuracy, train_hpv
from hecktor.training.hpv_cohort import TARGET, TASK, hpv_status

__all__ = ["score_held_out", "demo_hpv"]


def score_held_out(bundle: str | Path, data: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """Score an exported bundle on the labelled cases of a HECKTOR Task 3 folder, every case through
    :meth:`HPVPredictor.predict <hecktor.diagnosis.HPVPredictor.predict>` (the container's path, with the record as
    the platform's ``ehr.json`` would give it, sanitised there as the container's is on reading), and, where the
    folder is a synthetic cohort, the oracle beside it (the true P(HPV+) at the population prevalence,
    :func:`hecktor.synthetic.oracle_balanced_accuracy`).

    Returns:
        ``{"n", "n_positive", "balanced_accuracy", "auc", "threshold", "oracle_balanced_accuracy", "oracle_auc",
        "cases": [{PatientID, status, probability, predicted}], "seconds_per_case"}`` (oracle values ``None``
        without ``true_risk.csv``).
    """
    import csv as csv_module

    from hecktor.datasets import ehr_from_row

    predictor = HPVPredictor.from_bundle(bundle, device=device)
    rows = {row["PatientID"]: row for row in read_training_table(data, TASK.number)}
    cases = []
    started = time.perf_counter()
    for case in list_training_cases(data, TASK.number):
        status = hpv_status(rows[case.patient_id].get(TARGET), case.patient_id)
        if status is None:
            continue
        ct, pet, _ = case.read()
        predicted = predictor.predict(ct, pet, ehr_from_row(rows[case.patient_id], TASK.number))
        cases.append({"PatientID": case.patient_id, "status": status,
                      "probability": predictor.last_report.probability, "predicted": bool(predicted)})
    seconds = time.perf_counter() - started
    if not cases:
        raise InputError(f"{data}: no case of known {TARGET} to score")
    labels = np.asarray([c["status"] for c in cases])
    result: dict[str, Any] = {
        "n": len(cases), "n_positive": int(labels.sum()), "threshold": predictor.threshold,
        "balanced_accuracy": safe_balanced_accuracy(labels, np.asarray([c["predicted"] for c in cases])),
        "auc": safe_auc(labels, np.asarray([c["probability"] for c in cases])),
        "oracle_balanced_accuracy": None, "oracle_auc": None, "cases": cases,
        "seconds_per_case": seconds / len(cases),
    }
    truth_csv = Path(data) / "true_risk.csv"
    if not truth_csv.is_file() and (Path(data).parent / "true_risk.csv").is_file():
        truth_csv = Path(data).parent / "true_risk.csv"  # given the Task 3 folder itself
    if truth_csv.is_file():
        from hecktor.synthetic import oracle_balanced_accuracy

        with truth_csv.open(newline="") as handle:
            truth = {row["PatientID"]: float(row["hpv_probability"]) for row in csv_module.DictReader(handle)}
        oracle = np.asarray([truth[c["PatientID"]] for c in cases])
        result["oracle_balanced_accuracy"] = oracle_balanced_accuracy(labels, oracle)
        result["oracle_auc"] = safe_auc(labels, oracle)
    return result


def demo_hpv(
    train_data: str | Path,
    test_data: str | Path,
    run_dir: str | Path,
    bundle_dir: str | Path,
    config: HPVTrainingConfig | None = None,
    *,
    plan: BoxPlan | None = None,
    cache_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The demo's Task 3: cross-validate on ``train_data``, export the ensemble to ``bundle_dir`` and score the
    held-out cases of ``test_data`` beside the oracle.

    Args:
        train_data: a HECKTOR folder with ``Task 3/`` (e.g. the demo's synthetic training cohort).
        test_data: another one, of held-out cases (with ``true_risk.csv`` for the oracle row).
        run_dir: the training run folder (replaced if it holds a run).
        bundle_dir: where the container's bundle goes (e.g. ``task3_container/resources/bundle``).
        config: training settings (default: fusion, 5 folds, the tiny backbone, 20 epochs, learning rate 3e-3:
            CPU minutes).
        plan: the preprocessing plan (default: ``BoxPlan`` at 48^3, the demo's Task 2 size).
        cache_dir: the preprocessing cache root.
        echo: progress lines.

    Returns:
        ``{"cv": metrics.json's content, "held_out": score_held_out(...)}``.
    """
    config = config or HPVTrainingConfig(mode="fusion", n_folds=5, epochs=20, learning_rate=3e-3,
                                         network=dict(NETWORK_PRESETS["tiny"]), device="cpu", progress=False)
    plan = plan or BoxPlan(input_shape_zyx=(48, 48, 48))
    result = train_hpv(config, run_dir, data=train_data, plan=plan, cache_dir=cache_dir, overwrite=True, echo=echo)
    export_hpv_bundle(run_dir, bundle_dir, overwrite=True)
    held_out = score_held_out(bundle_dir, test_data)
    oracle = held_out["oracle_balanced_accuracy"]
    echo(f"Task 3 on {held_out['n']} held-out case(s) ({held_out['n_positive']} HPV-positive): balanced accuracy "
         f"{held_out['balanced_accuracy']:.3f}, AUC {held_out['auc']:.3f}"
         + (f" (oracle {oracle:.3f} / {held_out['oracle_auc']:.3f})" if oracle is not None else ""))
    return {"cv": json_safe(result.metrics()), "held_out": json_safe(held_out)}
