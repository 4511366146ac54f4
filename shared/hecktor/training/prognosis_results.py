"""The outcome of a Task 2 cross-validation: each fold's fitted parts and scores (:class:`FoldResult`), the run's
metrics, fold ensemble and run folder (:class:`CrossValidationResult`), and the summary of repeated
cross-validations over fold seeds (:func:`summarize_repeats`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hecktor.errors import InputError
from hecktor.fold_ensemble import EnsembleFold
from hecktor.metrics import concordance_index
from hecktor.plan import BoxPlan
from hecktor.prognosis import RiskPredictor
from hecktor.training.crossval import json_safe, pool_oof, save_run
from hecktor.training.prognosis_cohort import Cohort
from hecktor.training.prognosis_config import TrainingConfig

__all__ = ["FoldResult", "CrossValidationResult", "safe_cindex", "summarize_repeats"]


@dataclass
class FoldResult:
    """One fold's fitted parts and scores."""

    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    model: EnsembleFold
    cindex: float
    oof_risk: np.ndarray
    head_cindex: float | None = None
    best_epoch: int | None = None
    seconds: float = 0.0


@dataclass
class CrossValidationResult:
    """The trained folds of a run, the ensemble weights and the run's metrics.

    Attributes:
        folds: the trained folds (all of the split's, or those of ``config.folds``), in fold order.
        split: the whole split, trained folds or not (what ``folds.json`` records).
    """

    config: TrainingConfig
    cohort: Cohort
    plan: BoxPlan
    folds: list[FoldResult]
    weights: np.ndarray
    seconds: float
    split: list[tuple[np.ndarray, np.ndarray]]

    @property
    def cindex_folds(self) -> list[float]:
        return [f.cindex for f in self.folds]

    @property
    def cindex_mean(self) -> float:
        return float(np.mean(self.cindex_folds))

    def oof_risk(self) -> np.ndarray:
        """Every patient's standardised risk from the fold that did not train on it (NaN in folds not trained)."""
        return pool_oof(len(self.cohort), self.folds, "oof_risk")

    def metrics(self) -> dict[str, Any]:
        oof = self.oof_risk()
        scored = np.isfinite(oof)
        heads = [f.head_cindex for f in self.folds]
        return {
            "cindex_mean": self.cindex_mean,
            "cindex_folds": self.cindex_folds,
            "cindex_std": float(np.std(self.cindex_folds)),
            # All OOF risks pooled: possible because each fold's risk is standardised on its own training set.
            "cindex_pooled_oof": safe_cindex(self.cohort.time[scored], self.cohort.event[scored], oof[scored]),
            "folds_trained": [f.index for f in self.folds],
            "n_folds": len(self.split),
            "network_head_cindex_folds": heads if any(h is not None for h in heads) else None,
            "best_epochs": [f.best_epoch for f in self.folds],
            "ensemble_rule": self.config.ensemble_rule,
            "ensemble_weights": [float(w) for w in self.weights],
            "mode": self.config.mode,
            "n_patients": len(self.cohort),
            "n_events": self.cohort.n_events,
            "fold_seconds": [round(f.seconds, 2) for f in self.folds],
            "train_seconds": round(self.seconds, 2),
        }

    def predictor(self, device: str | torch.device | None = None) -> RiskPredictor:
        """The weighted fold ensemble as the container will run it."""
        return RiskPredictor(
            [f.model for f in self.folds], self.weights, self.plan, self.config.mode,
            ensemble_rule=self.config.ensemble_rule, device=device,
            info=json_safe({"metrics": self.metrics(), "config": self.config.to_dict(), "source": self.cohort.source}),
            segmentation=self.config.segmentation_bundle if self.config.uses_biomarkers else None,
            segmentation_settings=self.config.segmentation_settings(self.plan),
        )

    def save(self, run_dir: str | Path) -> Path:
        """Write the run: ``metrics.json``, ``config.json``, ``folds.json``, ``oof.csv`` and the fold models as a
        bundle in ``RUN_DIR/model`` (what ``export_prognosis.py`` copies)."""
        oof = self.oof_risk()

        def row(i: int, pid: str, fold: int) -> str:  # an empty oof_risk: that fold was not trained
            return (f"{pid},{fold},{self.cohort.time[i]:g},{self.cohort.event[i]},"
                    + (f"{oof[i]:.6f}" if math.isfinite(oof[i]) else ""))

        return save_run(run_dir, metrics=self.metrics(), config=self.config, split=self.split,
                        patient_ids=self.cohort.patient_ids, oof_header="PatientID,fold,RFS,Relapse,oof_risk",
                        oof_row=row, predictor=self.predictor(device="cpu"))


def safe_cindex(time_: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """C-index, or NaN when there is no comparable pair (e.g. a tiny held-out set without events)."""
    try:
        return concordance_index(time_, event, risk)
    except InputError:
        return math.nan


def summarize_repeats(per_repeat: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean and spread of repeated cross-validations (one :meth:`CrossValidationResult.metrics` per fold seed).

    Returns:
        ``repeat_seeds``; ``cindex_mean_over_repeats`` (the mean over repeats of each repeat's mean fold C-index);
        ``cindex_sd_over_repeats`` (their sample SD, ``None`` for one repeat: how much the split moves the
        estimate); ``cindex_fold_sd_mean`` (the mean over repeats of each split's SD over its folds, ``cindex_std``);
        ``cindex_pooled_oof_mean_over_repeats``; and ``repeats``, every repeat's metrics with its ``seed``.
    """
    means = np.asarray([m["cindex_mean"] for m in per_repeat], dtype=np.float64)
    pooled = np.asarray([m["cindex_pooled_oof"] for m in per_repeat], dtype=np.float64)
    return {
        "repeat_seeds": [int(s) for s in seeds],
        "cindex_mean_over_repeats": float(np.mean(means)),
        "cindex_sd_over_repeats": float(np.std(means, ddof=1)) if len(means) > 1 else None,
        "cindex_fold_sd_mean": float(np.mean([m["cindex_std"] for m in per_repeat])),
        "cindex_pooled_oof_mean_over_repeats": float(np.nanmean(pooled)) if np.isfinite(pooled).any() else None,
        "repeats": [{"seed": int(seed), **m} for seed, m in zip(seeds, per_repeat)],
    }
