"""The settings of a Task 2 cross-validation run (:class:`TrainingConfig`, written to ``RUN_DIR/config.json``), the
per-fold survival model of each mode (:data:`DEFAULT_SURVIVAL`) and the mode ``train_prognosis.py`` trains when none
is given (:data:`DEFAULT_MODE`). The trainer that runs them is :mod:`hecktor.training.prognosis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hecktor.biomarkers import TumourCrop
from hecktor.clinical import DEFAULT_FEATURES
from hecktor.errors import InputError
from hecktor.networks.fused import RESNET18_BACKBONE
from hecktor.plan import BoxPlan
from hecktor.prognosis import PREDICTOR_MODES, SegmentationSettings
from hecktor.survival_models import build_survival_model
from hecktor.training.crossval import FoldRunConfig

__all__ = ["DEFAULT_MODE", "DEFAULT_SURVIVAL", "TrainingConfig"]

DEFAULT_MODE = "biomarkers"
"""The mode ``train_prognosis.py`` trains when none is given: the best out-of-fold C-index of the Task 2 benchmark
(docs/results/benchmarks.md, Task 2). :class:`TrainingConfig` itself keeps ``fusion``, which needs no Task 1 run."""

DEFAULT_SURVIVAL: dict[str, dict[str, Any]] = {
    # A strong ridge on standardised features: 128 fused features against a few dozen events per fold. On synthetic
    # cohorts alpha 100 gave higher and steadier out-of-fold C-indices than 10.
    "fusion": {"kind": "coxph", "alpha": 100.0},
    "imaging": {"kind": "coxph", "alpha": 100.0},
    # The encoded record keeps the encoder's scale (one-hot 0/1, age standardised): re-standardising the one-hot
    # columns multiplies a rare level (HN1: Performance Status 3, one patient) by up to 10, so the ridge hardly
    # penalises it and a handful of patients drive the fit. On HN1, 5-fold CV over fold seeds 0-4 (and 0-39):
    # 0.554 (0.561) standardised, 0.599 (0.599) kept (benchmarks/hn1_clinical_study.py).
    "clinical": {"kind": "coxph", "alpha": 100.0, "standardize": False},
    # The encoded record as in clinical mode, then the biomarkers, already z-scored by the fold's BiomarkerScaler
    # (so "standardize": False leaves both scales alone). About 28 features against ~100 events per fold: the ridge
    # penalty is chosen per fold by an inner 3-fold cross-validation on the fold's training patients.
    "biomarkers": {"kind": "coxph", "alpha": "cv", "standardize": False},
    # 128 fused features as in fusion mode, then the biomarkers.
    "fusion+biomarkers": {"kind": "coxph", "alpha": 100.0},
}
"""The per-fold survival model of each mode when none is given."""


@dataclass
class TrainingConfig(FoldRunConfig):
    """Everything that decides a cross-validation run (written to ``RUN_DIR/config.json``).

    Args:
        mode: ``"fusion"``, ``"imaging"``, ``"clinical"``, ``"biomarkers"`` or ``"fusion+biomarkers"``
            (:data:`hecktor.prognosis.PREDICTOR_MODES`).
        n_folds: cross-validation folds of the split (CLI ``--folds``).
        folds: fold indices to train (``None``: all ``n_folds``; CLI ``--fold``). The ensemble holds the trained folds.
        seed: seeds the fold split, the network initialisation, batches and augmentation.
        epochs: training epochs of each fold's network.
        batch_size: patients per batch (each batch holds at least ``min_events`` relapses).
        min_events: relapses guaranteed in every batch (the Cox loss needs events).
        learning_rate: AdamW learning rate (cosine-annealed to 0 over ``epochs``; CLI ``--lr``).
        weight_decay: AdamW weight decay.
        ties: tie handling of the Cox loss (``"breslow"`` or ``"efron"``).
        early_stopping_fraction: share of a fold's training patients held out (stratified by event) to choose the
            epoch with the best held-out C-index; 0 keeps the last epoch.
        augmentation: random left-right mirroring of the training images (the head and neck is near-symmetric, and a
            tumour's side carries no prognosis).
        network: ``FusedFeatureExtractor`` arguments (``n_clinical`` and ``mode`` are set by the trainer); the
            default is the full ResNet-18 backbone.
        survival: config of the per-fold survival model (:func:`hecktor.survival_models.build_survival_model`;
            ``kind`` picks the model); default :data:`DEFAULT_SURVIVAL` of the mode.
        clinical_features: encoded record fields (default: the seven seed features).
        numeric_features: which of them are numeric (default: ``Age`` when present).
        ensemble_rule: see :func:`hecktor.survival.ensemble_weights`.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        feature_batch_size: patients per forward pass when extracting features.
        workers: processes preprocessing the cohort's images into the cache side by side (0: this process;
            ``None``: all cores, :func:`hecktor.training.cache.available_cores`). Training itself needs no
            data-loader workers: the cohort's network inputs are held in memory.
        threads: torch's CPU threads while training (``None``: all cores, or ``$OMP_NUM_THREADS`` where set). Set
            for the run and restored after it, so a caller that runs on one thread (the demo) does not slow the
            training down.
        progress: tqdm progress bars.
        biomarkers: biomarker modes: the biomarkers used (default all of
            :data:`hecktor.biomarkers.BIOMARKER_NAMES`).
        segmentation_bundle: biomarker modes: the Task 1 bundle nested in the exported bundle (``train`` exports it
            from the Task 1 cross-validation run).
        segmentation_budget_share: biomarker modes: share of the Task 2 time budget the segmentation may use.
        segmentation_tta: biomarker modes: mirror test-time augmentation of the nested segmentation. Off by default:
            the training masks are predicted without it, and the same at test time keeps the biomarkers'
            distribution (and the CPU time) as in training.
        crop_mm: ``fusion+biomarkers``: edge of the cube centred on the tumour (sampled at the plan's input shape).
        suv_reference: biomarker modes: ``body`` (default) measures the SUV biomarkers relative to the body's median
            uptake, so that a PET in another unit (Bq/ml) gives the same features; ``absolute`` measures them in the
            PET's SUV as it is (:func:`hecktor.biomarkers.body_relative_pet`).
        suv_table: the organisers' ``suv_conversion_tags.csv`` (CLI ``--suv-table``): PETs listed in Bq/ml are read
            as exact SUV (:mod:`hecktor.suv_table`); ``None``: the Bq/ml heuristic alone.
    """

    mode: str = "fusion"
    n_folds: int = 5
    folds: list[int] | None = None
    seed: int = 0
    epochs: int = 60
    batch_size: int = 16
    min_events: int = 2
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    ties: str = "breslow"
    early_stopping_fraction: float = 0.2
    augmentation: bool = True
    network: dict[str, Any] = field(default_factory=lambda: dict(RESNET18_BACKBONE))
    survival: dict[str, Any] | None = None
    clinical_features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    numeric_features: list[str] | None = None
    ensemble_rule: str = "cindex_margin"
    device: str = "auto"
    feature_batch_size: int = 8
    workers: int | None = None
    threads: int | None = None
    progress: bool = True
    biomarkers: list[str] | None = None
    segmentation_bundle: str | None = None
    segmentation_budget_share: float = 0.7
    segmentation_tta: bool = False
    crop_mm: float = 128.0
    suv_reference: str = "body"
    suv_table: str | None = None

    def __post_init__(self) -> None:
        self.check_common(PREDICTOR_MODES)
        self.fill_clinical_defaults()
        if self.survival is None:
            self.survival = dict(DEFAULT_SURVIVAL[self.mode])
        try:
            build_survival_model(self.survival)  # fail now, not after an hour of training, on a bad survival config
        except ValueError as error:  # an unknown kind or parameter
            raise InputError(f"survival model config {self.survival}: {error}") from None
        self.check_biomarkers()
        try:
            self.segmentation_settings()
        except ValueError as error:
            raise InputError(str(error)) from None

    def tumour_crop(self, plan: BoxPlan) -> TumourCrop | None:
        """The tumour-centred cube of ``fusion+biomarkers`` (the plan's input shape), else ``None``."""
        return TumourCrop(self.crop_mm, plan.input_shape_zyx) if self.mode == "fusion+biomarkers" else None

    def segmentation_settings(self, plan: BoxPlan | None = None) -> SegmentationSettings:
        return SegmentationSettings(self.segmentation_budget_share, self.segmentation_tta,
                                    self.tumour_crop(plan or BoxPlan()), self.suv_reference)
