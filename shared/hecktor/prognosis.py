"""Task 2 inference: CT, PET and the clinical record in, one recurrence-free-survival risk out (higher = earlier
relapse).

:class:`RiskPredictor` is a :class:`~hecktor.fold_ensemble.FoldEnsemble` (the path, the modes, the nested
segmentation of the biomarker modes and the time budget are described there) whose per-fold head is a
:class:`RiskHead`: the fold's Cox model, scoring a case by its standardised risk (the fold's risk scaled by its
training set's risk mean and standard deviation). The ensemble's risk is the weighted average of the folds'
standardised risks, with weights from the folds' out-of-fold C-index.

In the biomarker modes the Task 2 bundle holds the Task 1 bundle in ``segmentation/`` (listed in its manifest and
verified on loading, as a bundle of its own). The segmentation runs before the folds within a sub-budget: it may use
``segmentation.budget_share`` (model.json, 0.7 by default) of the time left in the Task 2 budget, and its own
:class:`~hecktor.budget.BudgetPolicy` drops its test-time augmentation, then its folds, to stay within it.

Every number comes from the bundle (``plan.json``, ``model.json``, the fitted encoders and Cox models), never from
code defaults. :meth:`RiskPredictor.predict` is the one code path that predicts a case (the container, the demo, the
benchmarks and the tests call it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.budget import TimeBudget
from hecktor.bundle import Bundle, load_bundle, write_bundle
from hecktor.clinical import CheckedRecord
from hecktor.ensemble import NETWORK_CLASS, check_clinical_width, check_fold_files, check_fold_records, \
    check_format, check_network_record, check_weights, fold_record, load_fold_encoder, load_fold_network, \
    load_fold_scaler, nested_segmentation, network_and_encoder_files, segmentation_description
from hecktor.errors import BundleError
from hecktor.feature_range import OutOfRange
from hecktor.fold_ensemble import BIOMARKER_MODES, PREDICTOR_MODES, SEGMENTATION_FOLDER, EnsembleFold, \
    FoldEnsemble, SegmentationSettings, network_mode, tumour_cube
from hecktor.plan import BoxPlan
from hecktor.segment import Segmenter
from hecktor.survival import ENSEMBLE_RULES
from hecktor.survival_models import SurvivalModel, survival_model_from_dict

# The modes, the segmentation settings and the tumour cube are the fold ensemble's; Task 2 is where users meet them.
__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "PREDICTOR_MODES", "BIOMARKER_MODES", "SEGMENTATION_FOLDER",
           "RiskHead", "RiskPredictor", "SegmentationSettings", "fold_file_names", "network_mode", "tumour_cube"]

MODEL_FORMAT = "hecktor-task2-risk"
MODEL_FORMAT_VERSION = 1
_FIX = "re-export the bundle with training/export_prognosis.py"


def fold_file_names(index: int) -> dict[str, str]:
    """Bundle file names of fold ``index``: network weights, fitted clinical encoder, biomarker scaling, Cox model."""
    return {
        "network": f"fold_{index}_network.pt",
        "encoder": f"fold_{index}_encoder.json",
        "biomarkers": f"fold_{index}_biomarkers.json",
        "survival": f"fold_{index}_survival.json",
    }


@dataclass(frozen=True)
class RiskHead:
    """A Task 2 fold's head: its survival model (a Cox model, fitted on the fold's training patients' features),
    scoring a case by the model's standardised risk (:meth:`SurvivalModel.standardized_risk
    <hecktor.survival_models.SurvivalModel.standardized_risk>`: mean 0 and SD 1 on the fold's training patients, so
    that the folds' risks can be averaged).

    Attributes:
        survival: the fitted survival model (``fold_K_survival.json`` in the bundle).
    """

    survival: SurvivalModel

    @property
    def n_features(self) -> int:
        return self.survival.n_features

    def score(self, features: np.ndarray) -> np.ndarray:
        """Standardised risks ``(n,)`` (higher = earlier relapse); features beyond the training range are limited."""
        return self.survival.standardized_risk(features)

    def features_out_of_range(self, features: np.ndarray) -> list[OutOfRange]:
        return self.survival.features_out_of_range(features)

    def to_dict(self) -> dict[str, Any]:
        return self.survival.to_dict()


class RiskPredictor(FoldEnsemble):
    """A weighted fold ensemble of Task 2 models (one :class:`~hecktor.fold_ensemble.EnsembleFold` per fold, its head
    a :class:`RiskHead` and its validation score the out-of-fold C-index) and the plan they were trained with.

    Build it with :meth:`from_bundle` (the container) or directly from in-memory folds (training, tests).

    Args:
        folds: one :class:`~hecktor.fold_ensemble.EnsembleFold` per fold, with a :class:`RiskHead`.
        weights: ensemble weight of each fold (non-negative, summing to 1).
        plan: the preprocessing plan of the training run.
        mode: one of :data:`PREDICTOR_MODES`.
        ensemble_rule: how ``weights`` were derived (recorded in the bundle; see
            :func:`hecktor.survival.ensemble_weights`).
        device, info, segmentation, segmenter, segmentation_settings: as
            :class:`~hecktor.fold_ensemble.FoldEnsemble`'s.

    Attributes:
        last_report: what the last :meth:`predict` call ran, dropped, repaired and spent
            (:class:`~hecktor.budget.PredictionReport`).
        last_fold_risks: each used fold's standardised risk in the last call, by fold index.
    """

    score_name = "risk"

    def __init__(
        self,
        folds: Sequence[EnsembleFold],
        weights: Sequence[float],
        plan: BoxPlan,
        mode: str,
        ensemble_rule: str = "cindex_margin",
        device: str | torch.device | None = None,
        info: Mapping[str, Any] | None = None,
        *,
        segmentation: str | Path | None = None,
        segmenter: Segmenter | None = None,
        segmentation_settings: SegmentationSettings | None = None,
    ) -> None:
        super().__init__(folds, weights, plan, mode, device, info, modes=PREDICTOR_MODES, segmentation=segmentation,
                         segmenter=segmenter, segmentation_settings=segmentation_settings)
        self.ensemble_rule = ensemble_rule

    @property
    def last_fold_risks(self) -> dict[int, float]:
        """Each used fold's standardised risk in the last call, by fold index."""
        return self.last_fold_scores

    def predict(self, ct: sitk.Image | None, pet: sitk.Image | None, ehr: Mapping[str, Any] | CheckedRecord | None,
                *, folds: Sequence[int] | None = None, budget: TimeBudget | None = None,
                segmentation: sitk.Image | None = None) -> float:
        """Recurrence-free-survival risk of one case: higher means earlier relapse. The arguments (``segmentation``:
        the nested model's mask made already), and what odd images and records give, are
        :meth:`~hecktor.fold_ensemble.FoldEnsemble.predict_score`'s."""
        return self.predict_score(ct, pet, ehr, folds=folds, budget=budget, segmentation=segmentation)

    # --------------------------------------------------------------------------------------------------- bundles
    def model_record(self) -> dict[str, Any]:
        """The content of ``model.json``: mode, network config, ensemble weights and each fold's files."""
        first_network = self.folds[0].network
        folds = []
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            folds.append(fold_record(fold.network, fold.encoder, names, {
                "biomarkers": names["biomarkers"] if fold.biomarkers is not None else None,
                "survival": names["survival"],
                "cindex": None if fold.validation_score is None else float(fold.validation_score),
            }))
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "mode": self.mode,
            "network": None if first_network is None else {"class": NETWORK_CLASS, "config": first_network.config},
            "ensemble": {"rule": self.ensemble_rule, "weights": [float(w) for w in self.weights]},
            "folds": folds,
            "segmentation": self.segmentation_settings.to_dict() if self.uses_biomarkers else None,
            "training": self.info,
        }

    def to_bundle(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write a verified Task 2 bundle (see :mod:`hecktor.bundle`): plan, ``model.json`` and, per fold, the
        network's state dict, the fitted clinical encoder, the biomarker scaling and the Cox model as JSON (no
        pickle); in the biomarker modes the Task 1 bundle, verified, in ``segmentation/``. ``out_dir`` must be absent,
        empty, or (with ``overwrite``) an earlier bundle (:func:`hecktor.bundle.check_bundle_destination`)."""
        record = self.model_record()
        nested = nested_segmentation(self)
        state_dicts, json_files = {}, {}
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            network_and_encoder_files(k, fold.network, fold.encoder, names, (record["network"] or {}).get("config"),
                                      state_dicts, json_files)
            if fold.biomarkers is not None:
                json_files[names["biomarkers"]] = fold.biomarkers.to_dict()
            json_files[names["survival"]] = fold.head.to_dict()
        return write_bundle(out_dir, task=2, plan=self.plan, model=record, state_dicts=state_dicts,
                            json_files=json_files, bundles=nested, overwrite=overwrite)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str | torch.device | None = None) -> "RiskPredictor":
        """Load a verified Task 2 bundle; weights load with ``weights_only=True``. A bundle whose ``model.json``,
        weights, encoders or Cox models do not fit together is a :class:`BundleError`."""
        bundle = load_bundle(path, task=2)
        mode, network_config, rule, weights, fold_records = _model_description(bundle)
        segmentation, settings = None, None
        if mode in BIOMARKER_MODES:
            segmentation, settings = segmentation_description(bundle, mode, _FIX)
        folds = []
        for k, record in enumerate(fold_records):
            encoder = load_fold_encoder(bundle, record)
            survival = survival_model_from_dict(bundle.load_json(record["survival"]))
            fold = EnsembleFold(RiskHead(survival), load_fold_network(bundle, record, network_config, _FIX), encoder,
                                record.get("cindex"), load_fold_scaler(bundle, record))
            if survival.n_features != fold.n_features:
                raise BundleError(f"{bundle.file(record['survival'])} expects {survival.n_features} features but "
                                  f"fold {k} produces {fold.n_features}; {_FIX}")
            check_clinical_width(bundle, record, fold.network, encoder, _FIX)
            folds.append(fold)
        segmenter = None
        if segmentation is not None:
            segmenter = Segmenter.from_bundle(segmentation, device=device)  # verified again, as a Task 1 bundle
        return cls(folds, weights, bundle.plan, mode, ensemble_rule=rule, device=device,
                   info=bundle.model.get("training", {}), segmentation=segmentation, segmenter=segmenter,
                   segmentation_settings=settings)


def _model_description(bundle: Bundle) -> tuple[str, dict[str, Any] | None, str, np.ndarray, list[dict[str, Any]]]:
    """Mode, network config, ensemble rule and weights, fold records from ``model.json``, checked."""
    model = bundle.model
    where = bundle.file("model.json")
    check_format(bundle, MODEL_FORMAT, MODEL_FORMAT_VERSION, _FIX)
    mode = model.get("mode")
    if mode not in PREDICTOR_MODES:
        raise BundleError(f"{where}: mode must be one of {PREDICTOR_MODES}, got {mode!r}; {_FIX}")
    config = check_network_record(bundle, mode, network_mode(mode), _FIX)
    ensemble = model.get("ensemble")
    folds = check_fold_records(bundle, _FIX)
    if not isinstance(ensemble, dict) or ensemble.get("rule") not in ENSEMBLE_RULES:
        raise BundleError(f"{where}: ensemble rule must be one of {ENSEMBLE_RULES}; {_FIX}")
    try:
        weights = np.asarray(ensemble.get("weights"), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise BundleError(f"{where}: ensemble weights must be numbers; {_FIX}") from None
    check_weights(bundle, weights, len(folds), _FIX)
    check_fold_files(bundle, folds, mode, fold_file_names,
                     {"network": network_mode(mode) is not None, "encoder": mode != "imaging",
                      "biomarkers": mode in BIOMARKER_MODES, "survival": True}, _FIX)
    return mode, config, ensemble["rule"], weights, folds
