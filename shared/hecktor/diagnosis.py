"""Task 3 inference: CT, PET and the clinical record in, the HPV status (``True`` = HPV-positive) out.

The path is the one cross-validation scored::

    preprocess_box (as Task 2: localise, 200x200x310 mm box, one trilinear resampling to 96^3, CT window, PET z-score)
      -> per fold: ClinicalEncoder.transform(ehr) -> FusedFeatureExtractor.extract_features -> 128-d features
      -> per fold: LogisticHead: logit = w . features + b (the network's own binary head), then Platt calibration
         P(HPV+) = sigmoid(slope * logit + intercept), fitted on the fold's inner hold-out
      -> weighted mean of the folds' calibrated probabilities (weights from the folds' out-of-fold AUC)
      -> HPV-positive when that probability reaches the bundle's threshold

The three arms of the baseline comparison share this class through ``mode`` (as Task 2's):

* ``"fusion"``: image + clinical record through the network;
* ``"imaging"``: image only (the record is ignored; the bundle holds no encoder);
* ``"clinical"``: no network and no image: a logistic regression on the encoded record (scikit-learn at training,
  its coefficients stored as JSON);
* ``"biomarkers"``: the nested Task 1 model segments the case first (its share of the time budget, as Task 2's
  ``biomarkers`` mode), and the logistic regression sees the encoded record and the scaled PET biomarkers of the
  predicted mask (:mod:`hecktor.biomarkers`); the bundle nests the Task 1 bundle in ``segmentation/``.

When the training's pooled out-of-fold probabilities did not separate the classes, the bundle's threshold is the
training prevalence and ``model.json``'s ``decision.fallback`` says why (:mod:`hecktor.training.calibration`); the
report's summary line, which the container logs, repeats it.

:class:`HPVPredictor` is a :class:`~hecktor.fold_ensemble.FoldEnsemble` whose per-fold head is a
:class:`LogisticHead`: the ensemble (preprocessing, the clinical record sanitised once, folds run heaviest weight
first under the :class:`~hecktor.budget.BudgetPolicy`, flat placeholder images answered from the record with a blank
image, and every other odd input) is the one Task 2's :class:`~hecktor.prognosis.RiskPredictor` runs, so Task 3
answers every input as Task 2 does; its score is here the weighted mean of the folds' calibrated probabilities.

Every number comes from the bundle (``plan.json``, ``model.json``, the fitted encoders, heads and the threshold),
never from code defaults. Nothing here imports scikit-learn: the heads are closed-form.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.budget import PredictionReport, TimeBudget
from hecktor.bundle import Bundle, load_bundle, write_bundle
from hecktor.clinical import CheckedRecord
from hecktor.ensemble import NETWORK_CLASS, check_clinical_width, check_fold_files, check_fold_records, \
    check_format, check_network_record, check_weights, fold_record, load_fold_encoder, load_fold_network, \
    load_fold_scaler, nested_segmentation, network_and_encoder_files, segmentation_description
from hecktor.errors import BundleError
from hecktor.feature_range import FeatureRange, OutOfRange
from hecktor.fold_ensemble import EnsembleFold, FoldEnsemble, SegmentationSettings, network_mode
from hecktor.networks.fused import MODES
from hecktor.plan import BoxPlan
from hecktor.segment import Segmenter

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "ENSEMBLE_RULE", "HPV_MODES", "PlattCalibration", "LogisticHead",
           "DiagnosisReport", "HPVPredictor", "fold_file_names", "sigmoid"]

TASK = 3
MODEL_FORMAT = "hecktor-task3-hpv"
MODEL_FORMAT_VERSION = 1
HEAD_FORMAT = "hecktor.LogisticHead"
HEAD_FORMAT_VERSION = 1
ENSEMBLE_RULE = "auc_margin"
"""Fold weights ``max(AUC_k - 0.5, 0.001)``, normalised: Task 2's ``cindex_margin`` rule on the out-of-fold AUC (the
C-index of a binary outcome); all equal if no fold beats chance."""
HPV_MODES = (*MODES, "biomarkers")
"""Task 3's modes: the network's three (:data:`hecktor.networks.fused.MODES`) and ``biomarkers``."""
_FIX = "re-export the bundle with training/export_hpv.py"


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """The logistic function, without overflow warnings for large ``|x|``."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def fold_file_names(index: int) -> dict[str, str]:
    """Bundle file names of fold ``index``: network weights, fitted clinical encoder, biomarker scaling, logistic
    head."""
    return {"network": f"fold_{index}_network.pt", "encoder": f"fold_{index}_encoder.json",
            "biomarkers": f"fold_{index}_biomarkers.json", "head": f"fold_{index}_head.json"}


# ----------------------------------------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class PlattCalibration:
    """Platt scaling of a logit: ``P(HPV+) = sigmoid(slope * logit + intercept)``.

    A fold's logit comes from a model trained with class weights (or a logistic regression with balanced class
    weights), so its raw probability is that of a population with equal classes; the calibration maps it back to the
    prevalence of the data it was fitted on, so that the folds' probabilities can be averaged and one threshold
    applies to all of them. Fitting happens at training time (:func:`hecktor.training.calibration.fit_platt`).

    Attributes:
        slope: multiplies the logit (> 0: calibration never reverses a fold's ranking).
        intercept: shifts it.
        method: how it was fitted, for the record (``platt`` or ``prior_shift``, the fallback without a hold-out:
            slope 1 and the log prior odds of the training patients).
    """

    slope: float = 1.0
    intercept: float = 0.0
    method: str = "platt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "slope", float(self.slope))
        object.__setattr__(self, "intercept", float(self.intercept))
        if not (math.isfinite(self.slope) and math.isfinite(self.intercept)) or self.slope < 0:
            raise ValueError(f"Platt calibration needs a finite slope >= 0 and a finite intercept, got "
                             f"{self.slope}, {self.intercept}")

    def __call__(self, logit: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * np.asarray(logit, dtype=np.float64) + self.intercept)

    @classmethod
    def prior_shift(cls, prevalence: float) -> "PlattCalibration":
        """Balanced-prior logits moved to ``prevalence`` (Bayes: posterior odds times the prior odds ratio)."""
        prevalence = min(max(float(prevalence), 1e-3), 1 - 1e-3)
        return cls(1.0, math.log(prevalence / (1.0 - prevalence)), "prior_shift")


@dataclass(frozen=True)
class LogisticHead:
    """One fold's classifier on its features: ``logit = features @ coef + intercept``, then :class:`PlattCalibration`.

    In the network modes the linear part is the network's own binary head (``risk_head``, trained with the
    class-weighted cross-entropy on the fused features); in clinical mode it is a logistic regression on the encoded
    record.

    Attributes:
        coef: ``(n_features,)`` weights.
        intercept: bias of the logit.
        calibration: the logit's Platt scaling.
        feature_range: the training features' range; features beyond it (widened) are limited
            (:mod:`hecktor.feature_range`). ``None`` in a bundle written before ranges were kept.
    """

    coef: tuple[float, ...]
    intercept: float
    calibration: PlattCalibration = PlattCalibration()
    feature_range: FeatureRange | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "coef", tuple(float(c) for c in np.asarray(self.coef, dtype=np.float64).ravel()))
        object.__setattr__(self, "intercept", float(self.intercept))
        if not self.coef or not all(math.isfinite(c) for c in self.coef) or not math.isfinite(self.intercept):
            raise ValueError("a LogisticHead needs finite coefficients and intercept")
        if self.feature_range is not None and self.feature_range.n_features != len(self.coef):
            raise ValueError(f"the feature range holds {self.feature_range.n_features} features, the head "
                             f"{len(self.coef)}")

    @property
    def n_features(self) -> int:
        return len(self.coef)

    def logit(self, features: np.ndarray) -> np.ndarray:
        """Uncalibrated logits ``(n,)`` of ``(n, n_features)`` features."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"the head takes (n, {self.n_features}) features, got {features.shape}")
        if self.feature_range is not None:
            features = self.feature_range.limit(features)
        return features @ np.asarray(self.coef) + float(self.intercept)

    def features_out_of_range(self, features: np.ndarray) -> list[OutOfRange]:
        """The features of the first row beyond the training range (limited by :meth:`logit`)."""
        return self.feature_range.outside(features) if self.feature_range is not None else []

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Calibrated P(HPV+) ``(n,)``."""
        return self.calibration(self.logit(features))

    def score(self, features: np.ndarray) -> np.ndarray:
        """The fold's score in the ensemble (:class:`~hecktor.fold_ensemble.FoldHead`): the calibrated P(HPV+)."""
        return self.probability(features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "format_version": HEAD_FORMAT_VERSION,
            "coef": list(self.coef),
            "intercept": float(self.intercept),
            "calibration": dataclasses.asdict(self.calibration),
            **({"feature_range": self.feature_range.to_dict()} if self.feature_range is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "logistic head") -> "LogisticHead":
        """Rebuild a head from :meth:`to_dict`; a malformed dict is a :class:`BundleError` naming ``source``."""
        if not isinstance(data, Mapping) or data.get("format") != HEAD_FORMAT:
            raise BundleError(f"{source} is not a saved LogisticHead (expected \"format\": \"{HEAD_FORMAT}\"); {_FIX}")
        if data.get("format_version") != HEAD_FORMAT_VERSION:
            raise BundleError(f"{source} has format_version {data.get('format_version')!r}, this library reads "
                              f"{HEAD_FORMAT_VERSION}; {_FIX}")
        try:
            calibration = PlattCalibration(**{k: data["calibration"][k] for k in ("slope", "intercept", "method")})
            feature_range = None
            if "feature_range" in data:
                feature_range = FeatureRange.from_dict(data["feature_range"], len(data["coef"]), source, _FIX)
            return cls(tuple(data["coef"]), float(data["intercept"]), calibration, feature_range)
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{source} is incomplete or malformed ({type(error).__name__}: {error}); {_FIX}") \
                from None


@dataclass
class DiagnosisReport(PredictionReport):
    """:class:`~hecktor.budget.PredictionReport` of one Task 3 prediction, with what decided it.

    Attributes:
        probability: the ensemble's calibrated P(HPV+).
        threshold: the bundle's decision threshold (HPV-positive when ``probability >= threshold``).
        fold_probabilities: each used fold's calibrated probability, by fold index.
        threshold_fallback: why the threshold is the training prevalence (``model.json``'s ``decision.fallback``),
            or ``None`` when it was chosen on the out-of-fold probabilities.
    """

    probability: float | None = None
    threshold: float | None = None
    fold_probabilities: dict[int, float] = dataclasses.field(default_factory=dict)
    threshold_fallback: str | None = None

    @property
    def table_values(self) -> dict[str, float]:
        """Extra columns for ``hecktor-predict``'s ``predictions.csv``: the probability (``hecktor-evaluate``
        computes the AUC from it)."""
        return {} if self.probability is None else {"probability": self.probability}

    def summary(self) -> str:
        if self.probability is None or self.threshold is None:
            return super().summary()
        verdict = "HPV-positive" if self.probability >= self.threshold else "HPV-negative"
        fallback = f" (training prevalence: {self.threshold_fallback})" if self.threshold_fallback else ""
        return (f"P(HPV+) {self.probability:.3f}, threshold {self.threshold:.3f}{fallback}: {verdict}; "
                f"{super().summary()}")

    @classmethod
    def extend(cls, report: PredictionReport, **values: Any) -> "DiagnosisReport":
        """The ensemble's report with the Task 3 values added."""
        return cls(**{f.name: getattr(report, f.name) for f in dataclasses.fields(PredictionReport)}, **values)


# ------------------------------------------------------------------------------------------------------- predictor
class HPVPredictor(FoldEnsemble):
    """A weighted fold ensemble of Task 3 classifiers (one :class:`~hecktor.fold_ensemble.EnsembleFold` per fold, its
    head a :class:`LogisticHead` and its validation score the out-of-fold AUC), their decision threshold and the plan
    they were trained with.

    Build it with :meth:`from_bundle` (the container) or from in-memory folds (training, tests).

    Args:
        folds: one :class:`~hecktor.fold_ensemble.EnsembleFold` per fold, with a :class:`LogisticHead`.
        weights: ensemble weight of each fold (non-negative, summing to 1).
        plan: the preprocessing plan of the training run.
        mode: one of :data:`HPV_MODES`.
        threshold: HPV-positive when the ensemble's calibrated probability is at least this, in (0, 1).
        device: where the networks run; ``None`` picks CUDA when available.
        info: free-form training record copied into ``model.json`` on export (metrics, config).
        threshold_fallback: why ``threshold`` is the training prevalence rather than the out-of-fold choice
            (``None``: it is the out-of-fold choice).
        segmentation, segmenter, segmentation_settings: ``biomarkers`` mode, as
            :class:`~hecktor.fold_ensemble.FoldEnsemble`'s.

    Attributes:
        last_report: what the last :meth:`predict` call ran, dropped, repaired, spent and decided
            (:class:`DiagnosisReport`, with the probability and the threshold).
    """

    score_name = "probability"

    def __init__(
        self,
        folds: Sequence[EnsembleFold],
        weights: Sequence[float],
        plan: BoxPlan,
        mode: str,
        threshold: float,
        device: str | torch.device | None = None,
        info: Mapping[str, Any] | None = None,
        *,
        threshold_fallback: str | None = None,
        segmentation: str | Path | None = None,
        segmenter: Segmenter | None = None,
        segmentation_settings: SegmentationSettings | None = None,
    ) -> None:
        threshold = float(threshold)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the decision threshold must lie in (0, 1), got {threshold}")
        super().__init__(folds, weights, plan, mode, device, info, modes=HPV_MODES, segmentation=segmentation,
                         segmenter=segmenter, segmentation_settings=segmentation_settings)
        self.threshold = threshold
        self.threshold_fallback = threshold_fallback
        self.last_report = DiagnosisReport()

    # ------------------------------------------------------------------------------------------------ prediction
    def predict_probability(self, ct: sitk.Image | None, pet: sitk.Image | None,
                            ehr: Mapping[str, Any] | CheckedRecord | None, *, folds: Sequence[int] | None = None,
                            budget: TimeBudget | None = None, segmentation: sitk.Image | None = None) -> float:
        """The ensemble's calibrated P(HPV+) of one case (arguments as :meth:`predict`)."""
        probability = self.predict_score(ct, pet, ehr, folds=folds, budget=budget, segmentation=segmentation)
        self.last_report = DiagnosisReport.extend(self.last_report, probability=probability,
                                                  threshold=self.threshold,
                                                  fold_probabilities=dict(self.last_fold_scores),
                                                  threshold_fallback=self.threshold_fallback)
        return probability

    def predict(self, ct: sitk.Image | None, pet: sitk.Image | None, ehr: Mapping[str, Any] | CheckedRecord | None,
                *, folds: Sequence[int] | None = None, budget: TimeBudget | None = None,
                segmentation: sitk.Image | None = None) -> bool:
        """HPV status of one case: ``True`` when HPV-positive.

        Args:
            ct: CT in HU, any grid (unused in clinical mode). Missing, flat placeholder or odd images are handled as
                :meth:`FoldEnsemble.predict_score <hecktor.fold_ensemble.FoldEnsemble.predict_score>` handles them.
            pet: PET in SUV, its own grid (likewise).
            ehr: the clinical record (``ehr.json``: Age, Gender, Tobacco Consumption, Alcohol Consumption,
                Performance Status, Treatment, M-stage). ``None``, missing keys, nulls, strings for numbers and
                unseen values all encode as the fitted encoder's ``Unknown`` (or the training median for a number);
                extra keys, ``HPV Status`` included, are ignored; a non-object is an :class:`InputError`.
            folds: the folds allowed (default: all); they run heaviest weight first and their weights are
                renormalised.
            budget: the case's deadline; ``None`` runs every fold.
            segmentation: ``biomarkers`` mode: the nested Task 1 model's mask of the case, made already (one
                segmentation shared by Tasks 2 and 3); the nested model then does not run
                (:meth:`~hecktor.fold_ensemble.FoldEnsemble.predict_score`).
        """
        probability = self.predict_probability(ct, pet, ehr, folds=folds, budget=budget, segmentation=segmentation)
        return probability >= self.threshold

    # --------------------------------------------------------------------------------------------------- bundles
    def model_record(self) -> dict[str, Any]:
        """The content of ``model.json``: mode, network config, ensemble weights, threshold and each fold's files."""
        first_network = self.folds[0].network
        folds = []
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            auc = fold.validation_score
            folds.append(fold_record(fold.network, fold.encoder, names, {
                "biomarkers": names["biomarkers"] if fold.biomarkers is not None else None,
                "head": names["head"], "auc": None if auc is None or not math.isfinite(auc) else float(auc)}))
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "mode": self.mode,
            "network": None if first_network is None else {"class": NETWORK_CLASS, "config": first_network.config},
            "ensemble": {"rule": ENSEMBLE_RULE, "weights": [float(w) for w in self.weights],
                         "combination": "weighted mean of the folds' calibrated probabilities"},
            "decision": {"threshold": self.threshold, "positive": "probability >= threshold",
                         "fallback": self.threshold_fallback},
            "folds": folds,
            "segmentation": self.segmentation_settings.to_dict() if self.uses_biomarkers else None,
            "training": self.info,
        }

    def to_bundle(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write a verified Task 3 bundle (see :mod:`hecktor.bundle`): plan, ``model.json`` and, per fold, the
        network's state dict, the fitted clinical encoder, the biomarker scaling and the logistic head as JSON (no
        pickle); in ``biomarkers`` mode the Task 1 bundle, verified, in ``segmentation/``. ``out_dir`` must be absent,
        empty, or (with ``overwrite``) an earlier bundle."""
        record = self.model_record()
        nested = nested_segmentation(self)
        state_dicts, json_files = {}, {}
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            network_and_encoder_files(k, fold.network, fold.encoder, names, (record["network"] or {}).get("config"),
                                      state_dicts, json_files)
            if fold.biomarkers is not None:
                json_files[names["biomarkers"]] = fold.biomarkers.to_dict()
            json_files[names["head"]] = fold.head.to_dict()
        return write_bundle(out_dir, task=TASK, plan=self.plan, model=record, state_dicts=state_dicts,
                            json_files=json_files, bundles=nested, overwrite=overwrite)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str | torch.device | None = None) -> "HPVPredictor":
        """Load a verified Task 3 bundle; weights load with ``weights_only=True``. A bundle whose ``model.json``,
        weights, encoders or heads do not fit together is a :class:`BundleError`."""
        bundle = load_bundle(path, task=TASK)
        mode, network_config, weights, threshold, fold_records = _model_description(bundle)
        segmentation, settings = None, None
        if mode == "biomarkers":
            segmentation, settings = segmentation_description(bundle, mode, _FIX)
        folds = []
        for k, record in enumerate(fold_records):
            encoder = load_fold_encoder(bundle, record)
            head = LogisticHead.from_dict(bundle.load_json(record["head"]), source=str(bundle.file(record["head"])))
            fold = EnsembleFold(head, load_fold_network(bundle, record, network_config, _FIX), encoder,
                                record.get("auc"), load_fold_scaler(bundle, record))
            if head.n_features != fold.n_features:
                raise BundleError(f"{bundle.file(record['head'])} takes {head.n_features} features but fold {k} "
                                  f"produces {fold.n_features}; {_FIX}")
            check_clinical_width(bundle, record, fold.network, encoder, _FIX)
            folds.append(fold)
        fallback = (bundle.model.get("decision") or {}).get("fallback")
        segmenter = Segmenter.from_bundle(segmentation, device=device) if segmentation is not None else None
        return cls(folds, weights, bundle.plan, mode, threshold, device=device, info=bundle.model.get("training", {}),
                   threshold_fallback=str(fallback) if fallback else None, segmentation=segmentation,
                   segmenter=segmenter, segmentation_settings=settings)


def _model_description(bundle: Bundle) -> tuple[str, dict[str, Any] | None, np.ndarray, float, list[dict[str, Any]]]:
    """Mode, network config, ensemble weights, threshold and fold records from ``model.json``, checked."""
    model = bundle.model
    where = bundle.file("model.json")
    check_format(bundle, MODEL_FORMAT, MODEL_FORMAT_VERSION, _FIX)
    mode = model.get("mode")
    if mode not in HPV_MODES:
        raise BundleError(f"{where}: mode must be one of {HPV_MODES}, got {mode!r}; {_FIX}")
    config = check_network_record(bundle, mode, network_mode(mode), _FIX)
    folds = check_fold_records(bundle, _FIX)
    ensemble = model.get("ensemble")
    if not isinstance(ensemble, dict) or ensemble.get("rule") != ENSEMBLE_RULE:
        raise BundleError(f"{where}: the ensemble rule must be {ENSEMBLE_RULE!r}; {_FIX}")
    try:
        weights = np.asarray(ensemble.get("weights"), dtype=np.float64).ravel()
        threshold = float((model.get("decision") or {}).get("threshold"))
    except (TypeError, ValueError):
        raise BundleError(f"{where}: ensemble weights and the decision threshold must be numbers; {_FIX}") from None
    check_weights(bundle, weights, len(folds), _FIX)
    if not 0.0 < threshold < 1.0:
        raise BundleError(f"{where}: the decision threshold must lie in (0, 1), got {threshold}; {_FIX}")
    check_fold_files(bundle, folds, mode, fold_file_names,
                     {"network": network_mode(mode) is not None, "encoder": mode != "imaging",
                      "biomarkers": mode == "biomarkers", "head": True}, _FIX)
    return mode, config, weights, threshold, folds
