"""Cross-validated training of the Task 2 risk model (library behind ``train_prognosis.py``).

Per fold ``k`` of a split stratified by event and centre (:func:`hecktor.folds.make_folds`):

1. the :class:`~hecktor.clinical.ClinicalEncoder` is fitted on the fold's training rows only;
2. (fusion / imaging) a :class:`~hecktor.networks.fused.FusedFeatureExtractor` is trained on the fold's training
   patients with the Cox partial likelihood on event-balanced batches; a stratified part of them is held out to pick
   the epoch with the best held-out C-index (early stopping);
3. the 128-d fused features (clinical mode: the encoded record itself) of the fold's training patients fit a
   :class:`~hecktor.survival_models.SurvivalModel` (by default a ridge Cox model, scikit-survival), which also records the mean and
   standard deviation of its risk on those patients;
4. the fold's validation patients get their out-of-fold (OOF) risk, standardised with that training-set scaling, and
   the fold's C-index.

The ensemble weights come from the per-fold OOF C-indices (:func:`hecktor.survival.ensemble_weights`). The result is
a :class:`~hecktor.prognosis.RiskPredictor`, the same class the container loads from the exported bundle.

**Biomarker modes** (``biomarkers``, ``fusion+biomarkers``; :mod:`hecktor.biomarkers`). The survival model also sees
PET biomarkers of a Task 1 segmentation, and in ``fusion+biomarkers`` the network sees a cube centred on the
segmented tumour with the mask as a third channel. The training patients' masks are the **out-of-fold predictions
of a Task 1 cross-validation** (fold *k*'s network segments fold *k*'s validation patients, through
:meth:`Segmenter.predict <hecktor.segment.Segmenter.predict>`), never the ground truth: at test time there is only a
predicted mask, and the survival model must learn from masks of that quality. Per fold the
:class:`~hecktor.biomarkers.BiomarkerScaler` is fitted on the fold's training patients. The Task 1 bundle of all the
cross-validation's folds is nested in the Task 2 bundle and segments the test cases.

Images are preprocessed once per case with :func:`hecktor.preprocessing.preprocess_box` (the container's exact
path) and kept in the trainers' preprocessing cache (:mod:`hecktor.training.cache`) under a folder keyed by the
plan's digest, so changing any preprocessing number invalidates the cache and re-running a mode or a seed costs no
preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hecktor.biomarkers import BIOMARKER_NAMES, BiomarkerScaler, TumourCrop, compute_biomarkers
from hecktor.clinical import DEFAULT_FEATURES
from hecktor.datasets import TrainingCase, list_training_cases, read_clinical_csv, read_training_table
from hecktor.errors import InputError
from hecktor.folds import load_folds
from hecktor.images import read_image
from hecktor.metrics import concordance_index
from hecktor.networks.fused import MODES, RESNET18_BACKBONE, TINY_BACKBONE, FusedFeatureExtractor  # noqa: F401
from hecktor.outputs import write_mask, write_text_atomic
from hecktor.plan import BoxPlan
from hecktor.preprocessing import preprocess_box
from hecktor.fold_ensemble import EnsembleFold
from hecktor.prognosis import BIOMARKER_MODES, PREDICTOR_MODES, RiskHead, RiskPredictor, SegmentationSettings, \
    network_mode
from hecktor.repair import repair_case
from hecktor.survival import EventBalancedBatchSampler, cox_partial_likelihood_loss, ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.tasks import get_task
from hecktor.training.cache import PreprocessingCache
from hecktor.training.crossval import (  # noqa: F401  (default_threads, torch_threads: importable from here too)
    Batches,
    FoldRunConfig,
    check_data_source,
    default_threads,
    export_run,
    fit_encoder,
    fit_epochs,
    forward_all,
    load_cached_images,
    pool_oof,
    resolve_split,
    run_folds,
    save_run,
    split_for_early_stopping,
    torch_threads,
)
from hecktor.training.crossval import json_safe as _json_safe
from hecktor.training.run_log import RunLog

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("HECKTOR_CACHE", Path.home() / ".cache" / "hecktor"))
NETWORK_PRESETS: dict[str, dict[str, Any]] = {"resnet18": dict(RESNET18_BACKBONE), "tiny": dict(TINY_BACKBONE)}


DEFAULT_MODE = "biomarkers"
"""The mode ``train_prognosis.py`` trains when none is given: the best out-of-fold C-index of the Task 2 benchmark
(README, Task 2 table). :class:`TrainingConfig` itself keeps ``fusion``, which needs no Task 1 run."""

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


# ---------------------------------------------------------------------------------------------------------- config
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

    def __post_init__(self) -> None:
        self.check_common(PREDICTOR_MODES)
        self.fill_clinical_defaults()
        if self.survival is None:
            self.survival = dict(DEFAULT_SURVIVAL[self.mode])
        try:
            build_survival_model(self.survival)  # fail now, not after an hour of training, on a bad survival config
        except ValueError as error:  # an unknown kind or parameter
            raise InputError(f"survival model config {self.survival}: {error}") from None
        if self.biomarkers is not None:
            self.biomarkers = list(self.biomarkers)
            unknown = sorted(set(self.biomarkers) - set(BIOMARKER_NAMES))
            if unknown or not self.biomarkers:
                raise InputError(f"unknown biomarker(s) {unknown or '(none given)'}; choose among "
                                 f"{', '.join(BIOMARKER_NAMES)}")
        try:
            self.segmentation_settings()
        except ValueError as error:
            raise InputError(str(error)) from None

    @property
    def uses_biomarkers(self) -> bool:
        return self.mode in BIOMARKER_MODES

    def new_scaler(self) -> BiomarkerScaler:
        """An unfitted biomarker scaling of the configured biomarkers (log of the heavy-tailed ones kept)."""
        names = tuple(self.biomarkers or BIOMARKER_NAMES)
        return BiomarkerScaler(names, tuple(n for n in BiomarkerScaler().log_names if n in names))

    def tumour_crop(self, plan: BoxPlan) -> TumourCrop | None:
        """The tumour-centred cube of ``fusion+biomarkers`` (the plan's input shape), else ``None``."""
        return TumourCrop(self.crop_mm, plan.input_shape_zyx) if self.mode == "fusion+biomarkers" else None

    def segmentation_settings(self, plan: BoxPlan | None = None) -> SegmentationSettings:
        return SegmentationSettings(self.segmentation_budget_share, self.segmentation_tta,
                                    self.tumour_crop(plan or BoxPlan()))


# ---------------------------------------------------------------------------------------------------------- cohorts
@dataclass
class Cohort:
    """Patients of a training run: clinical rows, survival, centres and (for the image modes) the network inputs.

    Attributes:
        patient_ids: in a fixed order (the order of ``folds.json``).
        rows: clinical records (strings as read from the CSV; the encoder normalises them).
        time: RFS in days.
        event: 1 = relapse observed.
        centres: CenterID per patient (``None`` where unknown), used to stratify the folds.
        images: ``(n, 2, z, y, x)`` float32 network inputs, or ``None`` (clinical mode).
        plan: the plan that made ``images``.
        source: where the data came from (for the run record).
        biomarkers: per patient, the biomarkers of its (out-of-fold) segmentation (biomarker modes;
            :func:`add_segmentation_features`).
        crops: ``(n, 3, z, y, x)`` float32 tumour-centred cubes with the mask channel (``fusion+biomarkers``).
    """

    patient_ids: list[str]
    rows: list[dict[str, Any]]
    time: np.ndarray
    event: np.ndarray
    centres: list[Any]
    images: np.ndarray | None = None
    plan: BoxPlan | None = None
    source: str = ""
    biomarkers: list[dict[str, float]] | None = None
    crops: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.patient_ids)

    @property
    def n_events(self) -> int:
        return int(self.event.sum())


def _cohort_from_rows(rows: Sequence[Mapping[str, Any]], source: str) -> Cohort:
    # Sorted by PatientID, like read_training_table: a CSV and a Task 2 folder of the same patients give the same
    # order, so a folds.json of one fits the other.
    rows = sorted((dict(row) for row in rows), key=lambda row: str(row["PatientID"]))
    if not rows:
        raise InputError(f"{source} holds no patients")
    duplicates = sorted(pid for pid, n in Counter(str(r["PatientID"]) for r in rows).items() if n > 1)
    if duplicates:
        raise InputError(f"{source} lists patient(s) {', '.join(duplicates[:5])} more than once")
    return Cohort(
        patient_ids=[str(row["PatientID"]) for row in rows],
        rows=rows,
        time=np.asarray([float(row["RFS"]) for row in rows], dtype=np.float64),
        event=np.asarray([int(row["Relapse"]) for row in rows], dtype=np.int64),
        centres=[row.get("CenterID") for row in rows],
        source=source,
    )


def load_csv_cohort(path: str | Path) -> Cohort:
    """A clinical-only cohort from a CSV with the HECKTOR 2025 columns (``PatientID``, clinical fields, ``RFS``,
    ``Relapse``)."""
    return _cohort_from_rows(read_clinical_csv(path, require_survival=True), str(path))


def box_entry(case: TrainingCase, plan: BoxPlan) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The cache entry of one case (:class:`~hecktor.training.cache.PreprocessingCache`'s ``preprocess``): the
    network input by :func:`hecktor.preprocessing.preprocess_box`, float32 (2, z, y, x)."""
    ct, pet, _ = case.read()
    region = preprocess_box(ct, pet, plan)
    return {"image": np.asarray(region.image, dtype=np.float32)}, {}


def box_cache(root: str | Path | None, plan: BoxPlan) -> PreprocessingCache:
    """The preprocessing cache of Task 2 network inputs (default root ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``)."""
    return PreprocessingCache(Path(root or DEFAULT_CACHE), plan, box_entry)


def load_hecktor_cohort(
    root: str | Path,
    plan: BoxPlan | None = None,
    *,
    with_images: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Cohort:
    """A cohort from a HECKTOR Task 2 folder (``<root>/Task 2/<PID>/...`` and its CSV).

    With ``with_images`` every case is preprocessed by :func:`hecktor.preprocessing.preprocess_box` once and kept in
    the preprocessing cache (:func:`box_cache`); an entry is reused while the case's files keep their size and
    modification time.

    Args:
        root: the HECKTOR folder (or its ``Task 2`` folder).
        plan: preprocessing plan (default ``BoxPlan()``: 96^3).
        with_images: preprocess the images (fusion and imaging modes).
        cache_dir: cache root (default ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``).
        progress: tqdm bar over the cases to preprocess.
        workers: processes preprocessing side by side (0: this process; ``None``: all cores).
    """
    plan = plan or BoxPlan()
    cohort = _cohort_from_rows(read_training_table(root, 2), str(root))
    cohort.plan = plan
    if not with_images:
        return cohort
    cases = {case.patient_id: case for case in list_training_cases(root, 2)}
    cohort.images = load_cached_images(box_cache(cache_dir, plan), cases, cohort.patient_ids, plan,
                                       progress=progress, workers=workers)
    return cohort


# ---------------------------------------------------------------------------------------- Task 1 masks, biomarkers
def validation_mask_path(segmentation_run: str | Path, fold: int, patient_id: str) -> Path:
    """Where the Task 1 trainer writes fold ``fold``'s out-of-fold mask of ``patient_id``."""
    from hecktor.training.segmentation import VALIDATION_DIR

    return Path(segmentation_run) / f"fold_{fold}" / VALIDATION_DIR / f"{patient_id}.nii.gz"


def write_validation_masks(
    segmentation_run: str | Path,
    *,
    folds: Sequence[int] | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Out-of-fold masks of a Task 1 cross-validation run, in ``RUN_DIR/fold_k/validation/<PID>.nii.gz`` (UInt8 on the
    CT's grid). The Task 1 trainer writes them after each fold (``predict_validation``, on by default, with the best
    checkpoint); masks already there are used as they are, and only the validation patients of a fold without them
    (a run trained with ``predict_validation`` off, or before it existed) are segmented here, by the same function
    and settings (:func:`hecktor.training.segmentation.predict_validation_cases`).

    Args:
        segmentation_run: a ``train_segmentation.py --out`` folder (``config.json``, ``plan.json``, ``folds.json``,
            ``fold_k/checkpoint_<checkpoint>.pt``).
        folds: the folds whose validation patients to segment (default all; e.g. one per process).
        checkpoint: the checkpoint that segments missing masks: ``best`` (default, as the trainer) or ``last``.

    Returns:
        the mask path of every validation patient of ``folds``, by patient ID.

    Raises:
        InputError: not a finished cross-validation (a fold without masks or a checkpoint to make them).
    """
    from hecktor.folds import load_folds as load_split
    from hecktor.plan import RegionPlan
    from hecktor.training.segmentation import CONFIG_JSON, FOLDS_JSON, PLAN_JSON, predict_validation_cases

    run = Path(segmentation_run)
    for name in (CONFIG_JSON, PLAN_JSON, FOLDS_JSON):
        if not (run / name).is_file():
            raise InputError(f"{run} is not a Task 1 training run ({name} missing); train it with "
                             "training/train_segmentation.py --fold all")
    config = json.loads((run / CONFIG_JSON).read_text())
    cases = {case.patient_id: case for case in list_training_cases(config["data_root"], 1)}
    ids = sorted(cases)
    split = load_split(run / FOLDS_JSON, case_ids=ids)
    masks: dict[str, Path] = {}
    todo: dict[int, list[str]] = {}
    for k, (_, val_idx) in enumerate(split):
        if folds is not None and k not in folds:
            continue
        for i in val_idx:
            masks[ids[i]] = validation_mask_path(run, k, ids[i])
        missing = [ids[i] for i in val_idx if not masks[ids[i]].is_file()]
        if missing:
            todo[k] = missing
    absent = [k for k in todo if not (run / f"fold_{k}" / f"checkpoint_{checkpoint}.pt").is_file()]
    if absent:
        raise InputError(f"{run}: fold(s) {absent} have neither out-of-fold masks nor checkpoint_{checkpoint}.pt; "
                         "biomarkers need every fold (train_segmentation.py --fold all)")
    plan = RegionPlan.load(run / PLAN_JSON) if todo else None
    for k, pids in todo.items():
        if echo is not None:
            echo(f"Task 1 fold {k}: segmenting {len(pids)} validation patient(s) into "
                 f"{validation_mask_path(run, k, pids[0]).parent}")
        predict_validation_cases(run / f"fold_{k}" / f"checkpoint_{checkpoint}.pt", plan, [cases[p] for p in pids],
                                 run / f"fold_{k}", device=device, tta=bool(config.get("validation_tta", False)),
                                 overlap=float(config.get("val_overlap", 0.5)),
                                 sw_batch_size=int(config.get("sw_batch_size", 2)), progress=progress)
    return masks


def segmentation_features(
    case: TrainingCase, mask_path: str | Path | None, crop: TumourCrop | None, plan: BoxPlan
) -> tuple[dict[str, float], np.ndarray | None, tuple[str, ...]]:
    """One patient's biomarkers (and, with ``crop``, its tumour-centred cube) from its mask file, as
    :meth:`RiskPredictor.predict <hecktor.prognosis.RiskPredictor.predict>` measures them from a predicted mask."""
    from hecktor.prognosis import tumour_cube

    ct, pet, repairs = repair_case(*case.read()[:2], ct_pad_hu=plan.ct_pad_hu, pet_pad_suv=plan.pet_pad_suv)
    mask = read_image(mask_path, "segmentation") if mask_path is not None else None
    markers = compute_biomarkers(mask, pet)  # in the repaired PET, as the container measures them
    cube = tumour_cube(ct, pet, mask, crop, plan) if crop is not None else None
    for line in repairs:  # the training PETs in Bq/ml of some centres: their biomarkers are measured in SUV
        logger.warning("%s: %s", case.patient_id, line)
    return markers.values, cube, markers.warnings


def add_segmentation_features(
    cohort: Cohort,
    root: str | Path,
    masks: Mapping[str, str | Path],
    *,
    crop: TumourCrop | None = None,
    progress: bool = True,
) -> Cohort:
    """Fill ``cohort.biomarkers`` (and, with ``crop``, ``cohort.crops``) from each patient's mask (the out-of-fold
    Task 1 predictions of :func:`write_validation_masks`) and its Task 2 PET (and CT).

    Raises:
        InputError: a patient without a mask.
    """
    absent = [pid for pid in cohort.patient_ids if pid not in masks]
    if absent:
        raise InputError(f"no segmentation for {len(absent)} patient(s) ({', '.join(absent[:5])}); predict them "
                         "with the Task 1 model first")
    cases = {case.patient_id: case for case in list_training_cases(root, 2)}
    plan = cohort.plan or BoxPlan()
    markers, cubes, empty = [], [], 0
    for pid in tqdm(cohort.patient_ids, desc="biomarkers", unit="case", leave=False, disable=not progress):
        values, cube, warnings = segmentation_features(cases[pid], masks[pid], crop, plan)
        markers.append(values)
        cubes.append(cube)
        empty += bool(warnings)
    cohort.biomarkers = markers
    cohort.crops = np.stack(cubes).astype(np.float32) if crop is not None else None
    if empty:
        logger.warning("%d of %d segmentation(s) hold no primary tumour: their biomarkers take the no-tumour value",
                       empty, len(cohort))
    return cohort


# ---------------------------------------------------------------------------------------------------------- results
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
            "cindex_pooled_oof": _safe_cindex(self.cohort.time[scored], self.cohort.event[scored], oof[scored]),
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
            info=_json_safe({"metrics": self.metrics(), "config": self.config.to_dict(), "source": self.cohort.source}),
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


def _safe_cindex(time_: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """C-index, or NaN when there is no comparable pair (e.g. a tiny held-out set without events)."""
    try:
        return concordance_index(time_, event, risk)
    except InputError:
        return math.nan


# ---------------------------------------------------------------------------------------------------------- training
def train_network(
    config: TrainingConfig,
    data: Batches,
    n_clinical: int,
    train_idx: np.ndarray,
    time_: np.ndarray,
    event: np.ndarray,
    seed: int,
    log: RunLog | None = None,
    progress: bool = True,
    description: str = "fold",
) -> tuple[FusedFeatureExtractor, int | None]:
    """Train one fold's feature extractor with the Cox partial likelihood.

    Args:
        data: tensors of the whole cohort (indexed by ``train_idx``).
        train_idx: the fold's training patients (indices into the cohort).
        time_, event: survival of the whole cohort.
        seed: seeds initialisation, hold-out, batches and augmentation.

    Returns:
        the network (best held-out epoch, or the last one without a hold-out) in eval mode, and that epoch.
    """
    device = data.device
    torch.manual_seed(seed)
    # fusion+biomarkers trains a fusion network on the 3-channel tumour cubes (CT, PET, mask).
    channels = {"image_channels": int(data.images.shape[1])} if data.images is not None else {}
    network = FusedFeatureExtractor(n_clinical=n_clinical, mode=network_mode(config.mode),
                                    **{**config.network, **channels}).to(device)
    inner, held = split_for_early_stopping(event[train_idx], config.early_stopping_fraction, seed)
    fit_idx = train_idx[inner]
    held_idx = train_idx[held] if held is not None else None
    sampler = EventBalancedBatchSampler(event[fit_idx], config.batch_size, config.min_events, seed=seed)
    time_t = torch.as_tensor(time_, dtype=torch.float32)
    event_t = torch.as_tensor(event, dtype=torch.float32)

    def loss(risk: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return cox_partial_likelihood_loss(risk, time_t[idx].to(device), event_t[idx].to(device), ties=config.ties)

    def held_out(held_risk: np.ndarray) -> dict[str, float]:
        score = _safe_cindex(time_[held_idx], event[held_idx], held_risk)
        with torch.no_grad():
            held_loss = float(cox_partial_likelihood_loss(
                torch.from_numpy(held_risk), time_t[held_idx], event_t[held_idx], ties=config.ties))
        return {"heldout_loss": held_loss, "heldout_cindex": score}

    return fit_epochs(network, config, data, fit_idx, held_idx, seed=seed, batches=lambda rng: sampler, loss=loss,
                      held_out=held_out, score_key="heldout_cindex", shown_key="heldout_c", log=log,
                      progress=progress, description=description)


def run_fold(
    config: TrainingConfig,
    cohort: Cohort,
    index: int,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    device: torch.device,
    log_dir: Path | None = None,
    progress: bool = True,
) -> FoldResult:
    """Fit one fold (encoder, network, Cox model) and score it on its validation patients."""
    started = time.perf_counter()
    encoder, clinical = fit_encoder(config, cohort.rows, train_idx)
    scaler = None
    if config.uses_biomarkers:
        if cohort.biomarkers is None:
            raise InputError(f"mode {config.mode!r} needs the patients' biomarkers; add them with "
                             "add_segmentation_features")
        scaler = config.new_scaler().fit([cohort.biomarkers[i] for i in train_idx])
    network = None
    head_cindex = None
    best_epoch = None
    if network_mode(config.mode) is None:
        features = clinical.astype(np.float64)
    else:
        images = cohort.crops if config.mode == "fusion+biomarkers" else cohort.images
        if images is None:
            what = "tumour cubes (add_segmentation_features with a crop)" if config.mode == "fusion+biomarkers" \
                else "images; load the cohort with with_images=True"
            raise InputError(f"mode {config.mode!r} needs {what}")
        data = Batches(images, clinical, device)
        log = RunLog(log_dir, name="training_log") if log_dir is not None else None
        network, best_epoch = train_network(
            config, data, encoder.n_features if encoder is not None else 0, train_idx, cohort.time, cohort.event,
            seed=config.seed * 1000 + index, log=log, progress=progress, description=f"fold {index}",
        )
        everyone = np.concatenate([train_idx, val_idx])
        extracted, head = forward_all(network, data, everyone, config.feature_batch_size)
        features = np.empty((len(cohort), extracted.shape[1]), dtype=np.float64)
        features[everyone] = extracted
        head_risk = np.empty(len(cohort))
        head_risk[everyone] = head
        head_cindex = _safe_cindex(cohort.time[val_idx], cohort.event[val_idx], head_risk[val_idx])
        network.cpu()
    if scaler is not None:  # the fold's survival features: fused features or the record, then the biomarkers
        features = np.concatenate([features, scaler.transform(cohort.biomarkers).astype(np.float64)], axis=1)
    survival = build_survival_model(config.survival).fit(features[train_idx], cohort.time[train_idx], cohort.event[train_idx])
    oof = survival.standardized_risk(features[val_idx])
    cindex = _safe_cindex(cohort.time[val_idx], cohort.event[val_idx], oof)
    if math.isnan(cindex):  # the ensemble weight needs it
        raise InputError(f"fold {index}: its {len(val_idx)} validation patients ({int(cohort.event[val_idx].sum())} "
                         "relapses) hold no comparable pair, so the fold has no C-index to weight it by; use fewer "
                         "folds (--folds) or more patients")
    model = EnsembleFold(RiskHead(survival), network, encoder, validation_score=cindex, biomarkers=scaler)
    return FoldResult(index, train_idx, val_idx, model, cindex, oof, head_cindex, best_epoch,
                      time.perf_counter() - started)


def cross_validate(
    cohort: Cohort,
    config: TrainingConfig,
    run_dir: str | Path | None = None,
    *,
    split: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: bool | None = None,
    on_fold: Callable[[FoldResult], None] | None = None,
    overwrite: bool = False,
) -> CrossValidationResult:
    """Train and score the folds of ``config.folds`` (default all), then weight the ensemble by their OOF C-indices.

    Args:
        cohort: patients (with images for the fusion and imaging modes).
        config: the run's settings.
        run_dir: where per-fold training logs go (``fold_<k>/training_log.*``) and, at the end, the run
            (:meth:`CrossValidationResult.save`); ``None`` keeps everything in memory.
        split: a given split of ``config.n_folds`` folds (default :func:`hecktor.folds.make_folds` with the
            config's seed, by event and centre).
        progress: progress bars (default ``config.progress``).
        on_fold: called after each fold (e.g. to print its C-index).
        overwrite: replace an earlier run in ``run_dir`` (otherwise that is an error: its training logs would mix
            with this run's).
    """
    started = time.perf_counter()
    progress = config.progress if progress is None else progress
    if run_dir is not None and config.uses_biomarkers and config.segmentation_bundle is None:
        raise InputError(f"mode {config.mode!r} saves its Task 1 model with the run: set segmentation_bundle (train() "
                         "exports it from the Task 1 cross-validation)")
    if run_dir is not None:
        prepare_run_dir(Path(run_dir), overwrite)
    split = resolve_split(split, cohort.event, cohort.centres, config)
    results = run_folds(config, cohort, split, run_dir, run_fold, progress=progress, on_fold=on_fold)
    weights = ensemble_weights([r.cindex for r in results], rule=config.ensemble_rule)
    plan = cohort.plan or BoxPlan()
    outcome = CrossValidationResult(config, cohort, plan, results, weights, time.perf_counter() - started, split)
    if run_dir is not None:
        outcome.save(run_dir)
    return outcome


def train(
    config: TrainingConfig,
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
    repeats: int = 1,
) -> CrossValidationResult:
    """Load a cohort, cross-validate, save the run and report on the way (the ``train_prognosis.py`` call).

    With ``repeats`` R > 1 the cross-validation is repeated with the fold seeds ``seed, seed + 1, ...,
    seed + R - 1`` (each a new split and new network initialisations), since one split of a small cohort gives a
    noisy C-index; ``metrics.json`` then adds the mean and spread over the repeats (:func:`summarize_repeats`).
    The run folder (folds, OOF risks, training logs, the fold ensemble in ``model/``) is the first repeat's; the
    others are kept in memory and only their metrics are written.

    Args:
        config: the run's settings.
        run_dir: the run folder (:meth:`CrossValidationResult.save`).
        data: a HECKTOR folder holding ``Task 2/`` (images and its CSV); or
        csv: clinical mode only: a CSV with the HECKTOR 2025 columns.
        plan: the preprocessing plan of the images (default ``BoxPlan()``).
        cache_dir: the preprocessing cache root (default ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``).
        split_file: the ``folds.json`` of an earlier run, so that modes compare on the same folds.
        overwrite: replace an earlier run in ``run_dir``.
        echo: where the progress lines go (one per fold, and a summary).
        repeats: cross-validations with successive fold seeds (see above).
        segmentation: biomarker modes: a Task 1 cross-validation run (``train_segmentation.py --fold all``). Its
            out-of-fold masks (written by :func:`write_validation_masks` where absent) give the training patients'
            biomarkers; its folds (best checkpoints) are exported to ``RUN_DIR/segmentation_bundle`` and nested in
            the Task 2 bundle. Task 2 patients outside the Task 1 cohort are segmented by that bundle.

    Returns:
        the first repeat's result.
    """
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    if repeats > 1 and split_file is not None:
        raise InputError("--repeats draws a new split for every seed, --folds-file fixes one split; give only one")
    check_data_source(config.mode, data, csv, get_task(2).training_folder)
    if config.uses_biomarkers and segmentation is None:
        raise InputError(f"mode {config.mode!r} needs --segmentation RUN_DIR, a Task 1 cross-validation run "
                         "(training/train_segmentation.py --fold all) whose out-of-fold masks train it")
    if segmentation is not None and not config.uses_biomarkers:
        raise InputError(f"--segmentation is for the biomarker modes ({', '.join(BIOMARKER_MODES)}), not "
                         f"{config.mode!r}")
    prepare_run_dir(run_dir, overwrite)  # before hours of preprocessing, not after
    if csv is not None:
        cohort = load_csv_cohort(csv)
    else:
        cohort = load_hecktor_cohort(data, plan or BoxPlan(), with_images=config.mode in ("fusion", "imaging"),
                                     cache_dir=cache_dir, progress=config.progress, workers=config.workers)
    if config.uses_biomarkers:
        masks = dict(write_validation_masks(segmentation, device=config.device, progress=config.progress, echo=echo))
        config.segmentation_bundle = str(export_segmentation_bundle(segmentation, run_dir))
        outside = [pid for pid in cohort.patient_ids if pid not in masks]
        if outside:
            echo(f"{len(outside)} Task 2 patient(s) are not in the Task 1 cohort: segmented by all Task 1 folds")
            masks.update(segment_cases(config.segmentation_bundle, data, outside, Path(run_dir) / "masks",
                                       device=config.device, progress=config.progress))
        add_segmentation_features(cohort, data, masks, crop=config.tumour_crop(cohort.plan or BoxPlan()),
                                  progress=config.progress)
    split = load_folds(split_file, cohort.patient_ids) if split_file is not None else None
    chosen = "" if config.folds is None else f", training fold(s) {', '.join(map(str, config.folds))}"
    echo(f"{config.mode}: {len(cohort)} patients, {cohort.n_events} relapses, {config.n_folds} folds{chosen} "
         f"({cohort.source})")

    def report(fold: FoldResult) -> None:
        extra = f", network head {fold.head_cindex:.3f}" if fold.head_cindex is not None else ""
        epoch = f", epoch {fold.best_epoch}" if fold.best_epoch is not None else ""
        echo(f"fold {fold.index}: C-index {fold.cindex:.3f} ({len(fold.val_idx)} patients, "
             f"{int(cohort.event[fold.val_idx].sum())} relapses{extra}{epoch}, {fold.seconds:.1f} s)")

    result = cross_validate(cohort, config, run_dir, split=split, on_fold=report, overwrite=overwrite)
    metrics = result.metrics()
    echo(f"mean out-of-fold C-index {metrics['cindex_mean']:.3f} ± {metrics['cindex_std']:.3f} "
         f"(pooled OOF {metrics['cindex_pooled_oof']:.3f}); ensemble weights "
         f"{', '.join(f'{w:.3f}' for w in metrics['ensemble_weights'])}; {metrics['train_seconds']:.0f} s")
    per_repeat = [metrics]
    for r in range(1, repeats):
        repeat = cross_validate(cohort, dataclasses.replace(config, seed=config.seed + r), None).metrics()
        per_repeat.append(repeat)
        echo(f"repeat {r + 1}/{repeats} (seed {config.seed + r}): mean out-of-fold C-index "
             f"{repeat['cindex_mean']:.3f} ± {repeat['cindex_std']:.3f} (pooled OOF {repeat['cindex_pooled_oof']:.3f}); "
             f"{repeat['train_seconds']:.0f} s")
    summary = summarize_repeats(per_repeat, [config.seed + r for r in range(repeats)])
    write_text_atomic(json.dumps(_json_safe({**metrics, **summary}), indent=2) + "\n", Path(run_dir) / "metrics.json")
    if repeats > 1:
        echo(f"over {repeats} repeats (fold seeds {config.seed}-{config.seed + repeats - 1}): mean C-index "
             f"{summary['cindex_mean_over_repeats']:.3f}, SD over repeats {summary['cindex_sd_over_repeats']:.3f}, "
             f"mean SD over folds {summary['cindex_fold_sd_mean']:.3f}; the exported model is the first repeat's")
    echo(f"wrote {Path(run_dir) / 'metrics.json'} and the fold ensemble in {Path(run_dir) / 'model'}")
    return result


SEGMENTATION_BUNDLE = "segmentation_bundle"
"""``RUN_DIR/segmentation_bundle``: the Task 1 bundle a biomarker-mode run nests in its Task 2 bundle."""


def export_segmentation_bundle(segmentation_run: str | Path, run_dir: str | Path) -> Path:
    """The Task 1 bundle of every fold of ``segmentation_run`` (best checkpoints: the networks of the out-of-fold
    masks, and of the Task 1 container's bundle) in ``RUN_DIR/segmentation_bundle``."""
    from hecktor.training.segmentation import export_bundle as export_task1

    out, _ = export_task1(segmentation_run, Path(run_dir) / SEGMENTATION_BUNDLE, checkpoint="best")
    return out


def segment_cases(bundle: str | Path, root: str | Path, patient_ids: Sequence[str], out_dir: str | Path, *,
                  device: str = "auto", progress: bool = True) -> dict[str, Path]:
    """Masks of Task 2 patients that no Task 1 fold trained on, by the Task 1 bundle (every fold, no TTA), into
    ``out_dir/<PID>.nii.gz``."""
    from hecktor.segment import Segmenter

    segmenter = Segmenter.from_bundle(bundle, device=device)
    cases = {case.patient_id: case for case in list_training_cases(root, 2)}
    masks = {}
    for pid in tqdm(patient_ids, desc="Task 1 masks", unit="case", leave=False, disable=not progress):
        ct, pet, _ = cases[pid].read()
        masks[pid] = write_mask(segmenter.predict(ct, pet, tta=False), Path(out_dir) / f"{pid}.nii.gz")
    return masks


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


def prepare_run_dir(run_dir: str | Path, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) a folder that already holds a run."""
    run_dir = Path(run_dir)
    earlier = [p for p in (run_dir / "metrics.json", run_dir / "model", *run_dir.glob("fold_*")) if p.exists()]
    if not earlier:
        return
    if not overwrite:
        raise InputError(f"{run_dir} already holds a training run; choose another --out or pass --overwrite")
    # What a biomarker-mode run wrote before its folds goes too.
    earlier += [p for p in (run_dir / SEGMENTATION_BUNDLE, run_dir / "masks") if p.exists()]
    for path in earlier:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# ----------------------------------------------------------------------------------------------------------- export
def export_bundle(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> RiskPredictor:
    """Copy a run's verified fold ensemble (``RUN_DIR/model``) to ``out_dir`` as a Task 2 bundle and return it as
    loaded from there (manifest, SHA-256 and plan digest checked twice: on reading the run and on reading the copy).

    Raises:
        InputError: ``run_dir`` is not a finished run, or ``out_dir`` is the run's own model folder.
    """
    return export_run(run_dir, out_dir, RiskPredictor, "Task 2", "training/train_prognosis.py", overwrite=overwrite)
