"""Postprocessing of a Task 1 run, chosen on its out-of-fold predictions (``fold_K/validation/``) and written to
``RUN_DIR/postprocessing.json``, where :func:`hecktor.training.segmentation.export.export_bundle` finds it."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hecktor.datasets import list_training_cases
from hecktor.errors import InputError
from hecktor.outputs import write_text_atomic
from hecktor.training.segmentation.config import CONFIG_JSON, POSTPROCESSING_JSON, VALIDATION_DIR, read_run_config

def choose_run_postprocessing(run_dir: str | Path, data_root: str | Path | None = None,
                              candidates_ml: Sequence[float] | None = None) -> dict[str, Any]:
    """Choose a run's postprocessing on its out-of-fold predictions (``fold_K/validation/``) and write it to
    ``RUN_DIR/postprocessing.json`` (:func:`~hecktor.training.segmentation.export.export_bundle` puts it into the
    bundle).

    Args:
        run_dir: a training run whose folds predicted their validation cases (``predict_validation``).
        data_root: the HECKTOR folder holding the labels (default: the run's ``data_root``).
        candidates_ml: GTVn thresholds to try (default :data:`hecktor.postprocessing.GTVN_MIN_VOLUME_CANDIDATES_ML`).

    Returns:
        what was written: ``{"postprocessing": {...}, "report": {...}, "folds": [...], "cases": [...]}``.
    """
    from hecktor.images import read_image
    from hecktor.postprocessing import GTVN_MIN_VOLUME_CANDIDATES_ML, choose_postprocessing

    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_JSON
    if not config_path.is_file():
        raise InputError(f"{run_dir} is not a training run ({CONFIG_JSON} missing); pass the --out folder of "
                         "train_segmentation.py")
    run_config = read_run_config(run_dir)  # refuses a run written by an older version
    data_root = data_root or run_config.get("data_root")
    labels = {case.patient_id: case.label_path for case in list_training_cases(data_root, task=1, require_label=True)}
    predictions: dict[str, Path] = {}
    folds = []
    for folder in sorted(run_dir.glob(f"fold_*/{VALIDATION_DIR}")):
        found = sorted(folder.glob("*.nii.gz"))
        if found:
            folds.append(int(folder.parent.name.split("_")[1]))
        predictions.update({path.name[: -len(".nii.gz")]: path for path in found})
    if not predictions:
        raise InputError(f"no out-of-fold predictions in {run_dir}/fold_*/{VALIDATION_DIR}; train with "
                         "predict_validation on (the default)")
    unknown = sorted(set(predictions) - set(labels))
    if unknown:
        raise InputError(f"out-of-fold prediction(s) {unknown[:5]} have no label in {data_root}; pass --data")
    cases = ((read_image(predictions[pid], "prediction"), read_image(labels[pid], "label"), pid)
             for pid in sorted(predictions))
    chosen, report = choose_postprocessing(
        cases, GTVN_MIN_VOLUME_CANDIDATES_ML if candidates_ml is None else candidates_ml)
    record = _finite_or_none({"postprocessing": chosen.to_dict(), "report": report, "folds": folds,
                              "cases": sorted(predictions)})
    write_text_atomic(json.dumps(record, indent=2) + "\n", run_dir / POSTPROCESSING_JSON)
    return record


def _finite_or_none(value: Any) -> Any:
    """NaN (a score no case defines) as None: standard JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
