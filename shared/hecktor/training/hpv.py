"""Cross-validated training of the Task 3 HPV-status classifier (library behind ``train_hpv.py``).

Patients whose HPV status is unknown (an empty ``HPV Status`` cell) are left out of training and scoring. Per fold
``k`` of a split stratified by status and centre (:func:`hecktor.folds.make_folds`):

1. the :class:`~hecktor.clinical.ClinicalEncoder` is fitted on the fold's training rows only;
2. fusion / imaging: Task 2's :class:`~hecktor.networks.fused.FusedFeatureExtractor` (ResNet-18 image branch +
   clinical MLP -> fused features) is trained on the fold's training patients with the class-weighted binary
   cross-entropy of its linear head (each class weighs half, as scikit-learn's ``class_weight="balanced"``); a
   stratified part of them (``early_stopping_fraction``) is held out to pick the epoch of best held-out AUC;
   clinical: a logistic regression (scikit-learn, L2, balanced class weights) on the encoded record;
   biomarkers: the same logistic regression on the encoded record and the PET biomarkers of each patient's Task 1
   mask, an **out-of-fold prediction of a Task 1 cross-validation** (never the ground truth), scaled by a
   :class:`~hecktor.biomarkers.BiomarkerScaler` fitted on the fold's training patients: Task 2's ``biomarkers`` mode
   and its code (:func:`hecktor.training.biomarker_features.attach_biomarkers`); the Task 1 bundle of all the
   cross-validation's folds is nested in the Task 3 bundle and segments the test cases first;
3. **calibration**: Platt scaling of the fold's logit, fitted on predictions the fold's model made for training
   patients it did not fit: the inner hold-out of step 2 (networks), or inner 5-fold cross-validated logits
   (clinical); never on the fold's validation patients (:mod:`hecktor.training.calibration`);
4. the fold's validation patients get their out-of-fold (OOF) calibrated probability and the fold its OOF AUC.

The ensemble averages the folds' calibrated probabilities with weights ``max(AUC_k - 0.5, 0.001)`` (normalised).
The **decision threshold** stored in the bundle is, by default (``threshold_rule`` ``prevalence``), the training
prevalence: the Bayes threshold of balanced accuracy for calibrated probabilities, chosen on no out-of-fold
probability, and each fold is scored at its own training prevalence. On the 300-case synthetic benchmark it scored
0.690 ± 0.013 over three fold seeds against 0.667 ± 0.023 for the other rule, and not lower on its other rows
(docs/results/benchmarks.md, Task 3). The other rule (``balanced``) maximises balanced accuracy on the pooled OOF
probabilities; each fold is then scored at the threshold chosen on the other folds only (cross-fitting), the
in-sample figure beside it (:mod:`hecktor.training.calibration`); when the pooled OOF probabilities do not separate
the classes (AUC below :data:`~hecktor.training.calibration.MIN_SEPARATION_AUC`), training warns once and that
threshold falls back to the training prevalence, recorded in ``metrics.json`` and the bundle
(``threshold_fallback``). ``metrics.json`` gives the balanced accuracy at each fold's prevalence whichever rule ran.

Images are preprocessed once per case by :func:`hecktor.preprocessing.preprocess_box` (Task 2's box, the
container's exact path) and kept in the trainers' preprocessing cache. The network, its batches and the early
stopping split are Task 2's (:mod:`hecktor.training.prognosis`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hecktor.diagnosis import ENSEMBLE_RULE, HPV_MODES, HPVPredictor, LogisticHead, PlattCalibration
from hecktor.errors import InputError
from hecktor.feature_range import FeatureRange
from hecktor.fold_ensemble import EnsembleFold, SegmentationSettings
from hecktor.folds import load_folds
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.networks.fused import RESNET18_BACKBONE, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.survival import ensemble_weights
from hecktor.suv_table import as_suv_table
from hecktor.tasks import RECORD_KEYS
from hecktor.training import crossval  # what the Task 2 and Task 3 trainers share
from hecktor.training.biomarker_features import attach_biomarkers
from hecktor.training.calibration import THRESHOLD_RULES, best_threshold, decision_thresholds, fit_platt
from hecktor.training.crossval import json_safe as _json_safe
from hecktor.training.hpv_cohort import TARGET, TASK, HPVCohort, hpv_cache, load_hpv_cohort, load_hpv_csv_cohort
from hecktor.training.image_level import DEFAULT_CACHE, NETWORK_PRESETS, prepare_run_dir
from hecktor.training.run_log import RunLog

__all__ = ["HPVTrainingConfig", "HPVFoldResult", "HPVCrossValidationResult", "cross_validate_hpv", "train_hpv",
           "export_hpv_bundle", "NETWORK_PRESETS", "DEFAULT_CACHE"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------- config
@dataclass
class HPVTrainingConfig(crossval.FoldRunConfig):
    """Everything that decides a Task 3 cross-validation run (written to ``RUN_DIR/config.json``).

    Args:
        mode: ``"fusion"``, ``"imaging"``, ``"clinical"`` (logistic regression on the record) or ``"biomarkers"``
            (logistic regression on the record and the PET biomarkers of Task 1's out-of-fold masks).
        n_folds: cross-validation folds of the split (CLI ``--folds``).
        folds: fold indices to train (``None``: all; CLI ``--fold``). The ensemble holds the trained folds.
        seed: seeds the split, the initialisation, the hold-out, batches and augmentation.
        epochs: training epochs of each fold's network.
        batch_size: patients per batch.
        learning_rate: AdamW learning rate (cosine-annealed to 0 over ``epochs``; CLI ``--lr``).
        weight_decay: AdamW weight decay.
        early_stopping_fraction: share of a fold's training patients held out (stratified by status) to pick the
            epoch of best held-out AUC and to fit the Platt calibration; 0: the last epoch, and the calibration
            falls back to shifting the balanced logit to the training prevalence.
        augmentation: random left-right mirroring of the training images.
        class_weighted: weigh each class half in the loss (``class_weight="balanced"``); otherwise every patient
            counts once.
        network: ``FusedFeatureExtractor`` arguments (``n_clinical`` and ``mode`` are set by the trainer).
        logistic_c: clinical and biomarkers modes: inverse L2 strength of the logistic regression (scikit-learn's
            ``C``).
        calibration_folds: clinical and biomarkers modes: inner folds whose out-of-sample logits fit the Platt
            calibration.
        clinical_features: encoded record fields (default: the seven of the platform's ``ehr.json``).
        numeric_features: which of them are numeric (default: ``Age`` when present).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        feature_batch_size: patients per forward pass when scoring.
        workers: processes preprocessing the cohort's images into the cache (0: this process; ``None``: all cores).
        threads: torch's CPU threads while training (``None``: all cores, or ``$OMP_NUM_THREADS`` where set), set for
            the run and restored after it (Task 2's rule).
        progress: tqdm progress bars.
        suv_table: the organisers' ``suv_conversion_tags.csv`` (CLI ``--suv-table``): PETs listed in Bq/ml are read
            as exact SUV (:mod:`hecktor.suv_table`); ``None``: the Bq/ml heuristic alone.
        biomarkers: biomarkers mode: the biomarkers used (default all of :data:`hecktor.biomarkers.BIOMARKER_NAMES`).
        segmentation_bundle: biomarkers mode: the Task 1 bundle nested in the exported bundle (``train_hpv`` exports
            it from the Task 1 cross-validation).
        segmentation_budget_share: biomarkers mode: share of the Task 3 time budget the nested segmentation may use.
        suv_reference: biomarkers mode: ``body`` (default: SUVs relative to the body's median uptake, the same in any
            PET unit) or ``absolute`` (Task 2's setting of the same name).
        threshold_rule: the decision threshold: ``prevalence`` (default: the training prevalence) or ``balanced``
            (best balanced accuracy on out-of-fold probabilities, cross-fitted; see the module docstring).
    """

    mode: str = "fusion"
    n_folds: int = 5
    folds: list[int] | None = None
    seed: int = 0
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    early_stopping_fraction: float = 0.2
    augmentation: bool = True
    class_weighted: bool = True
    network: dict[str, Any] = field(default_factory=lambda: dict(RESNET18_BACKBONE))
    # C = 0.1 rather than scikit-learn's 1: one-hot columns of a record (each with its Unknown level) against a few
    # hundred patients; over C in 0.03-1 it gave the best out-of-fold AUC on the synthetic benchmark cohort (0.560 vs
    # 0.534 at C = 1) and on HN1 (0.599 vs 0.582, 5 fold seeds): a choice made on the data it is reported on.
    logistic_c: float = 0.1
    calibration_folds: int = 5
    clinical_features: list[str] = field(default_factory=lambda: list(RECORD_KEYS))
    numeric_features: list[str] | None = None
    device: str = "auto"
    feature_batch_size: int = 8
    workers: int | None = None
    threads: int | None = None
    progress: bool = True
    suv_table: str | None = None
    biomarkers: list[str] | None = None
    segmentation_bundle: str | None = None
    segmentation_budget_share: float = 0.7
    suv_reference: str = "body"
    threshold_rule: str = "prevalence"

    def __post_init__(self) -> None:
        self.check_common(HPV_MODES)
        self.check_biomarkers()
        if self.threshold_rule not in THRESHOLD_RULES:
            raise InputError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)} "
                             f"(got {self.threshold_rule!r})")
        try:
            self.segmentation_settings()
        except ValueError as error:
            raise InputError(str(error)) from None
        if not self.logistic_c > 0 or self.calibration_folds < 2:
            raise InputError(f"logistic_c must be > 0 and calibration_folds >= 2 (got {self.logistic_c}, "
                             f"{self.calibration_folds})")
        if TARGET in self.clinical_features:
            raise InputError(f"{TARGET!r} is what Task 3 predicts; it cannot be a clinical feature")
        self.fill_clinical_defaults()

    def segmentation_settings(self) -> SegmentationSettings:
        """How the bundle runs its nested Task 1 model (biomarkers mode): no TTA, as the out-of-fold masks."""
        return SegmentationSettings(self.segmentation_budget_share, False, None, self.suv_reference)


# ---------------------------------------------------------------------------------------------------------- scores
def safe_auc(labels: np.ndarray, score: np.ndarray) -> float:
    try:
        return roc_auc(labels, score)
    except InputError:
        return math.nan


def safe_balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    try:
        return balanced_accuracy(labels, predicted)
    except InputError:
        return math.nan


# ---------------------------------------------------------------------------------------------------------- results
@dataclass
class HPVFoldResult:
    """One fold's fitted parts and out-of-fold predictions."""

    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    model: EnsembleFold
    auc: float
    oof_probability: np.ndarray
    best_epoch: int | None = None
    calibration_patients: int = 0
    seconds: float = 0.0


@dataclass
class HPVCrossValidationResult:
    """The trained folds of a Task 3 run, the ensemble weights, the decision threshold and the run's metrics.

    Attributes:
        folds: the trained folds, in fold order.
        split: the whole split, trained folds or not (what ``folds.json`` records).
        threshold: the bundle's decision threshold (best balanced accuracy on the pooled OOF probabilities).
        cross_fitted_thresholds: per trained fold, the threshold chosen on the other trained folds' OOF
            probabilities (the training prevalence when no other fold was trained): what scores the fold honestly.
        threshold_fallback: why ``threshold`` is the training prevalence (the pooled OOF probabilities did not
            separate the classes), or ``None``.
    """

    config: HPVTrainingConfig
    cohort: HPVCohort
    plan: BoxPlan
    folds: list[HPVFoldResult]
    weights: np.ndarray
    threshold: float
    cross_fitted_thresholds: list[float]
    seconds: float
    split: list[tuple[np.ndarray, np.ndarray]]
    threshold_fallback: str | None = None

    def oof_probability(self) -> np.ndarray:
        """Every patient's calibrated probability from the fold that did not train on it (NaN: fold not trained)."""
        return crossval.pool_oof(len(self.cohort), self.folds, "oof_probability")

    def oof_prediction(self) -> np.ndarray:
        """Every patient's OOF status at its fold's cross-fitted threshold (-1: fold not trained)."""
        predicted = np.full(len(self.cohort), -1, dtype=np.int64)
        for fold, threshold in zip(self.folds, self.cross_fitted_thresholds):
            predicted[fold.val_idx] = fold.oof_probability >= threshold
        return predicted

    @property
    def balanced_accuracy_folds(self) -> list[float]:
        labels = self.cohort.labels
        return [safe_balanced_accuracy(labels[f.val_idx], f.oof_probability >= t)
                for f, t in zip(self.folds, self.cross_fitted_thresholds)]

    def metrics(self) -> dict[str, Any]:
        labels = self.cohort.labels
        probability, predicted = self.oof_probability(), self.oof_prediction()
        scored = np.isfinite(probability)
        ba = self.balanced_accuracy_folds
        aucs = [f.auc for f in self.folds]
        tuned = [best_threshold(f.oof_probability, labels[f.val_idx]) for f in self.folds]
        # Each fold at its own training prevalence (the Bayes threshold of balanced accuracy for calibrated
        # probabilities): the other rule, beside whichever the run used.
        at_prevalence = [safe_balanced_accuracy(labels[f.val_idx], f.oof_probability >= labels[f.train_idx].mean())
                         for f in self.folds]
        return {
            # Honest: each fold thresholded where the other folds' OOF probabilities put the threshold.
            "balanced_accuracy_mean": float(np.nanmean(ba)) if np.isfinite(ba).any() else math.nan,
            "balanced_accuracy_folds": ba,
            "balanced_accuracy_std": float(np.nanstd(ba)) if np.isfinite(ba).any() else math.nan,
            "balanced_accuracy_pooled_oof": safe_balanced_accuracy(labels[scored], predicted[scored] == 1),
            # Optimistic, for comparison: the bundle's threshold was chosen on these very patients.
            "balanced_accuracy_in_sample_threshold": safe_balanced_accuracy(
                labels[scored], probability[scored] >= self.threshold),
            "auc_mean": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan,
            "auc_folds": aucs,
            "auc_std": float(np.nanstd(aucs)) if np.isfinite(aucs).any() else math.nan,
            "auc_pooled_oof": safe_auc(labels[scored], probability[scored]),
            "balanced_accuracy_folds_at_prevalence": at_prevalence,
            "balanced_accuracy_mean_at_prevalence": float(np.nanmean(at_prevalence))
            if np.isfinite(at_prevalence).any() else math.nan,
            "threshold": self.threshold,
            "threshold_rule": self.config.threshold_rule,
            "threshold_fallback": self.threshold_fallback,
            "thresholds_cross_fitted": list(self.cross_fitted_thresholds),
            "thresholds_fold_tuned": tuned,
            "prevalence": self.cohort.prevalence,
            "mean_oof_probability": float(np.mean(probability[scored])) if scored.any() else math.nan,
            "brier_pooled_oof": float(np.mean((probability[scored] - labels[scored]) ** 2)) if scored.any()
            else math.nan,
            "calibration": [dataclasses.asdict(f.model.head.calibration) for f in self.folds],
            "calibration_patients": [f.calibration_patients for f in self.folds],
            "folds_trained": [f.index for f in self.folds],
            "n_folds": len(self.split),
            "best_epochs": [f.best_epoch for f in self.folds],
            "ensemble_rule": ENSEMBLE_RULE,
            "ensemble_weights": [float(w) for w in self.weights],
            "mode": self.config.mode,
            "n_patients": len(self.cohort),
            "n_positive": self.cohort.n_positive,
            "n_unknown_excluded": self.cohort.n_unknown,
            "fold_seconds": [round(f.seconds, 2) for f in self.folds],
            "train_seconds": round(self.seconds, 2),
        }

    def predictor(self, device: str | torch.device | None = None) -> HPVPredictor:
        """The weighted fold ensemble and its threshold, as the container will run them."""
        biomarkers = self.config.uses_biomarkers
        return HPVPredictor(
            [f.model for f in self.folds], self.weights, self.plan, self.config.mode, self.threshold, device=device,
            info=_json_safe({"metrics": self.metrics(), "config": self.config.to_dict(), "source": self.cohort.source}),
            threshold_fallback=self.threshold_fallback,
            segmentation=self.config.segmentation_bundle if biomarkers else None,
            segmentation_settings=self.config.segmentation_settings() if biomarkers else None)

    def save(self, run_dir: str | Path) -> Path:
        """Write the run: ``metrics.json``, ``config.json``, ``folds.json``, ``oof.csv`` and the fold models as a
        bundle in ``RUN_DIR/model`` (what ``export_hpv.py`` copies)."""
        probability, predicted = self.oof_probability(), self.oof_prediction()

        def row(i: int, pid: str, fold: int) -> str:  # empty: that fold was not trained
            return (f"{pid},{fold},{self.cohort.labels[i]},"
                    + (f"{probability[i]:.6f},{predicted[i]}" if math.isfinite(probability[i]) else ","))

        return crossval.save_run(run_dir, metrics=self.metrics(), config=self.config, split=self.split,
                                 patient_ids=self.cohort.patient_ids,
                                 oof_header="PatientID,fold,hpv_status,oof_probability,oof_prediction", oof_row=row,
                                 predictor=self.predictor(device="cpu"))


# ---------------------------------------------------------------------------------------------------------- training
def _shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Positions ``0..n-1`` shuffled into ``ceil(n / batch_size)`` batches of near-equal size (never a batch of one:
    the MLPs' batch normalisation cannot train on it)."""
    if n < 2:
        raise InputError(f"{n} training patient(s) in a fold: at least 2 are needed to train a network")
    return np.array_split(rng.permutation(n), -(-n // batch_size))


def train_classifier(
    config: HPVTrainingConfig,
    data: crossval.Batches,
    n_clinical: int,
    train_idx: np.ndarray,
    labels: np.ndarray,
    seed: int,
    log: RunLog | None = None,
    progress: bool = True,
    description: str = "fold",
) -> tuple[FusedFeatureExtractor, int | None, np.ndarray | None]:
    """Train one fold's fused network with the (class-weighted) binary cross-entropy of its linear head.

    Args:
        data: tensors of the whole cohort (indexed by ``train_idx``).
        train_idx: the fold's training patients (indices into the cohort).
        labels: HPV status of the whole cohort.
        seed: seeds initialisation, hold-out, batches and augmentation.

    Returns:
        the network in eval mode (best held-out epoch, or the last one without a hold-out), that epoch, and the
        held-out patients (cohort indices; ``None`` without a hold-out) on which to calibrate.
    """
    device = data.device
    torch.manual_seed(seed)
    network = FusedFeatureExtractor(n_clinical=n_clinical, mode=config.mode, **config.network).to(device)
    inner, held = crossval.split_for_early_stopping(labels[train_idx], config.early_stopping_fraction, seed)
    fit_idx = train_idx[inner]
    held_idx = train_idx[held] if held is not None else None
    fit_labels = labels[fit_idx].astype(np.float64)
    n_pos = fit_labels.sum()
    if n_pos == 0 or n_pos == fit_labels.size:
        raise InputError(f"{description}: the training patients hold one HPV status only; use fewer folds")
    # Each class weighs half of the loss (sklearn's "balanced": n / (2 n_class)), or every patient counts once.
    class_weight = (fit_labels.size / (2.0 * np.array([fit_labels.size - n_pos, n_pos])) if config.class_weighted
                    else np.ones(2))
    weight_t = torch.as_tensor(class_weight[labels.astype(np.int64)], dtype=torch.float32)
    label_t = torch.as_tensor(labels, dtype=torch.float32)

    def loss(logit: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        weight = weight_t[idx].to(device)
        return (torch.nn.functional.binary_cross_entropy_with_logits(
            logit, label_t[idx].to(device), reduction="none") * weight).sum() / weight.sum()

    network, best_epoch = crossval.fit_epochs(
        network, config, data, fit_idx, held_idx, seed=seed,
        batches=lambda rng: _shuffled_batches(len(fit_idx), config.batch_size, rng), loss=loss,
        held_out=lambda held_logit: {"heldout_auc": safe_auc(labels[held_idx], held_logit)},
        score_key="heldout_auc", shown_key="heldout_auc", log=log, progress=progress, description=description)
    return network, best_epoch, held_idx


def _clinical_head(config: HPVTrainingConfig, x_train: np.ndarray, y_train: np.ndarray,
                   seed: int) -> tuple[LogisticHead, int]:
    """Logistic regression on the encoded record, Platt-calibrated on inner cross-validated logits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    def model() -> LogisticRegression:
        return LogisticRegression(C=config.logistic_c, class_weight="balanced" if config.class_weighted else None,
                                  max_iter=2000)

    fitted = model().fit(x_train, y_train)
    inner = min(config.calibration_folds, int(np.bincount(y_train, minlength=2).min()))
    if inner >= 2:
        splitter = StratifiedKFold(n_splits=inner, shuffle=True, random_state=seed)
        logits = cross_val_predict(model(), x_train, y_train, cv=splitter, method="decision_function")
        calibration, patients = fit_platt(logits, y_train), len(y_train)
    else:
        calibration, patients = PlattCalibration.prior_shift(float(y_train.mean())), 0
    return LogisticHead(tuple(fitted.coef_[0]), float(fitted.intercept_[0]), calibration,
                        FeatureRange.fit(x_train)), patients


def run_fold(
    config: HPVTrainingConfig,
    cohort: HPVCohort,
    index: int,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    device: torch.device,
    log_dir: Path | None = None,
    progress: bool = True,
) -> HPVFoldResult:
    """Fit one fold (encoder, network or logistic regression, calibration) and score it on its validation
    patients."""
    started = time.perf_counter()
    labels = cohort.labels
    seed = config.seed * 1000 + index
    encoder, clinical = crossval.fit_encoder(config, cohort.rows, train_idx)
    network, best_epoch, scaler = None, None, None
    if config.mode in ("clinical", "biomarkers"):
        features = clinical.astype(np.float64)
        if config.uses_biomarkers:  # the record, then the biomarkers scaled on the fold's training patients
            if cohort.biomarkers is None:
                raise InputError(f"mode {config.mode!r} needs the patients' biomarkers; add them with "
                                 "attach_biomarkers")
            scaler = config.new_scaler().fit([cohort.biomarkers[i] for i in train_idx])
            features = np.concatenate([features, scaler.transform(cohort.biomarkers).astype(np.float64)], axis=1)
        head, calibration_patients = _clinical_head(config, features[train_idx], labels[train_idx], seed)
        oof = head.probability(features[val_idx])
    else:
        if cohort.images is None:
            raise InputError(f"mode {config.mode!r} needs images; load the cohort with with_images=True")
        data = crossval.Batches(cohort.images, clinical, device)
        log = RunLog(log_dir, name="training_log") if log_dir is not None else None
        network, best_epoch, held_idx = train_classifier(
            config, data, encoder.n_features if encoder is not None else 0, train_idx, labels, seed=seed, log=log,
            progress=progress, description=f"fold {index}")
        weight = network.risk_head.weight.detach().cpu().double().numpy().ravel()
        bias = float(network.risk_head.bias.detach().cpu().double().numpy()[0])
        if held_idx is not None:
            _, held_logit = crossval.forward_all(network, data, held_idx, config.feature_batch_size)
            calibration, calibration_patients = fit_platt(held_logit, labels[held_idx]), len(held_idx)
        else:
            calibration = PlattCalibration.prior_shift(float(labels[train_idx].mean()))
            calibration_patients = 0
        trained_features, _ = crossval.forward_all(network, data, train_idx, config.feature_batch_size)
        head = LogisticHead(tuple(weight), bias, calibration, FeatureRange.fit(trained_features))
        features, _ = crossval.forward_all(network, data, val_idx, config.feature_batch_size)
        oof = head.probability(features)
        network.cpu()
    model = EnsembleFold(head, network, encoder, validation_score=safe_auc(labels[val_idx], oof), biomarkers=scaler)
    return HPVFoldResult(index, train_idx, val_idx, model, model.validation_score, oof, best_epoch,
                         calibration_patients, time.perf_counter() - started)


def cross_validate_hpv(
    cohort: HPVCohort,
    config: HPVTrainingConfig,
    run_dir: str | Path | None = None,
    *,
    split: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: bool | None = None,
    on_fold: Callable[[HPVFoldResult], None] | None = None,
    overwrite: bool = False,
) -> HPVCrossValidationResult:
    """Train and score the folds of ``config.folds`` (default all); weight the ensemble by the folds' OOF AUC and
    choose the decision threshold on the pooled OOF probabilities.

    Args:
        cohort: patients of known status (with images for the fusion and imaging modes).
        config: the run's settings.
        run_dir: where per-fold training logs go (``fold_<k>/training_log.*``) and, at the end, the run
            (:meth:`HPVCrossValidationResult.save`); ``None`` keeps everything in memory.
        split: a given split of ``config.n_folds`` folds (default :func:`hecktor.folds.make_folds` with the
            config's seed, stratified by status and centre).
        progress: progress bars (default ``config.progress``).
        on_fold: called after each fold.
        overwrite: replace an earlier run in ``run_dir``.
    """
    started = time.perf_counter()
    progress = config.progress if progress is None else progress
    if run_dir is not None and config.uses_biomarkers and config.segmentation_bundle is None:
        raise InputError(f"mode {config.mode!r} saves its Task 1 model with the run: set segmentation_bundle "
                         "(train_hpv exports it from the Task 1 cross-validation)")
    if run_dir is not None:
        prepare_run_dir(Path(run_dir), overwrite)
    split = crossval.resolve_split(split, cohort.labels, cohort.centres, config)
    results = crossval.run_folds(config, cohort, split, run_dir, run_fold, progress=progress, on_fold=on_fold)
    aucs = [r.auc if math.isfinite(r.auc) else 0.5 for r in results]  # an undefined AUC counts as chance
    weights = ensemble_weights(aucs)
    threshold, cross_fitted, fallback = decision_thresholds(cohort.labels, [r.val_idx for r in results],
                                                            [r.oof_probability for r in results],
                                                            [r.train_idx for r in results], cohort.prevalence,
                                                            rule=config.threshold_rule)
    if fallback is not None:
        logger.warning("Task 3 %s: %s: the threshold is the training prevalence %.3f", config.mode, fallback, threshold)
    outcome = HPVCrossValidationResult(config, cohort, cohort.plan or BoxPlan(), results, weights, threshold,
                                       cross_fitted, time.perf_counter() - started, split, fallback)
    if run_dir is not None:
        outcome.save(run_dir)
    return outcome


def train_hpv(
    config: HPVTrainingConfig,
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    csv: str | Path | None = None,
    plan: BoxPlan | None = None,
    cache_dir: str | Path | None = None,
    split_file: str | Path | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    segmentation: str | Path | None = None,
) -> HPVCrossValidationResult:
    """Load a cohort, cross-validate, save the run and report on the way (the ``train_hpv.py`` call).

    Args:
        config: the run's settings.
        run_dir: the run folder (:meth:`HPVCrossValidationResult.save`).
        data: a HECKTOR folder holding ``Task 3/`` (images and its CSV); or
        csv: clinical mode only: a CSV with the HECKTOR 2025 columns and ``HPV Status``.
        plan: the preprocessing plan of the images (default ``BoxPlan()``).
        cache_dir: the preprocessing cache root.
        split_file: the ``folds.json`` of an earlier run, so that modes compare on the same folds.
        overwrite: replace an earlier run in ``run_dir``.
        echo: where the progress lines go (one per fold, and a summary).
        segmentation: biomarkers mode: a Task 1 cross-validation run (``train_segmentation.py --fold all``), as
            Task 2's: its out-of-fold masks give the training patients' biomarkers and its folds are nested in the
            bundle (:func:`~hecktor.training.biomarker_features.attach_biomarkers`).
    """
    if config.uses_biomarkers and segmentation is None:
        raise InputError(f"mode {config.mode!r} needs --segmentation RUN_DIR, a Task 1 cross-validation run "
                         "(training/train_segmentation.py --fold all) whose out-of-fold masks train it")
    if segmentation is not None and not config.uses_biomarkers:
        raise InputError(f"--segmentation is for the biomarkers mode, not {config.mode!r}")
    suv_table = as_suv_table(config.suv_table)  # a bad row stops the run before anything is read
    crossval.check_data_source(config.mode, data, csv, TASK.training_folder, echo=echo, suv_table=suv_table)
    crossval.restart_unfinished_run(run_dir, echo)
    prepare_run_dir(run_dir, overwrite)
    if csv is not None:
        cohort = load_hpv_csv_cohort(csv)
    else:
        cohort = load_hpv_cohort(data, plan or BoxPlan(), with_images=config.mode in ("fusion", "imaging"),
                                 cache_dir=cache_dir, progress=config.progress, workers=config.workers,
                                 suv_table=suv_table)
        if cohort.images is not None:  # what preprocessing repaired, shown once and kept in the run folder
            crossval.report_repairs(hpv_cache(cache_dir, cohort.plan), cohort.patient_ids, run_dir, echo)
        if config.uses_biomarkers:
            config.segmentation_bundle = str(attach_biomarkers(
                cohort, data, segmentation, run_dir, task=TASK.number, suv_reference=config.suv_reference,
                device=config.device, progress=config.progress, suv_table=suv_table, echo=echo))
    split = load_folds(split_file, cohort.patient_ids) if split_file is not None else None
    chosen = "" if config.folds is None else f", training fold(s) {', '.join(map(str, config.folds))}"
    echo(f"{config.mode}: {len(cohort)} patients of known HPV status ({cohort.n_positive} positive; "
         f"{cohort.n_unknown} of unknown status left out), {config.n_folds} folds{chosen} ({cohort.source})")

    def report(fold: HPVFoldResult) -> None:
        epoch = f", epoch {fold.best_epoch}" if fold.best_epoch is not None else ""
        echo(f"fold {fold.index}: AUC {fold.auc:.3f} ({len(fold.val_idx)} patients, "
             f"{int(cohort.labels[fold.val_idx].sum())} positive{epoch}, {fold.seconds:.1f} s)")

    result = cross_validate_hpv(cohort, config, run_dir, split=split, on_fold=report, overwrite=overwrite)
    m = result.metrics()
    scored_at = ("its training prevalence" if config.threshold_rule == "prevalence"
                 else "the threshold chosen on the other folds")
    echo(f"mean out-of-fold balanced accuracy {m['balanced_accuracy_mean']:.3f} ± {m['balanced_accuracy_std']:.3f} "
         f"(folds {', '.join(f'{v:.3f}' for v in m['balanced_accuracy_folds'])}; each at {scored_at}), AUC {m['auc_mean']:.3f} (pooled OOF {m['auc_pooled_oof']:.3f})")
    why = f" ({result.threshold_fallback})" if result.threshold_fallback else ""
    fallback = f" = the training prevalence{why}" if why or config.threshold_rule == "prevalence" else ""
    echo(f"decision threshold {m['threshold']:.3f}{fallback} (pooled OOF balanced accuracy at it, in-sample: "
         f"{m['balanced_accuracy_in_sample_threshold']:.3f}); ensemble weights "
         f"{', '.join(f'{w:.3f}' for w in m['ensemble_weights'])}; {m['train_seconds']:.0f} s")
    echo(f"wrote {Path(run_dir) / 'metrics.json'} and the fold ensemble in {Path(run_dir) / 'model'}")
    return result


# ----------------------------------------------------------------------------------------------------------- export
def export_hpv_bundle(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> HPVPredictor:
    """Copy a run's verified fold ensemble (``RUN_DIR/model``) to ``out_dir`` as a Task 3 bundle and return it as
    loaded from there (manifest, SHA-256 and plan digest checked on reading the run and on reading the copy).

    Raises:
        InputError: ``run_dir`` is not a finished Task 3 run, or ``out_dir`` is the run's own model folder.
    """
    return crossval.export_run(run_dir, out_dir, HPVPredictor, "Task 3", "training/train_hpv.py",
                               overwrite=overwrite)
