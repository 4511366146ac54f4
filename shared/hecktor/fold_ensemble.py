"""The fold ensemble of Tasks 2 and 3: CT, PET and the clinical record of one case in, one score out.

Both tasks answer a case with the folds of their cross-validation (one :class:`EnsembleFold` each), on the path that
cross-validation scored::

    repair_case (once per case: the documented repairs of odd images, hecktor.repair)
      -> biomarker modes: the nested Task 1 model segments the case; PET biomarkers of the predicted mask
      -> preprocess_box (localise, 200x200x310 mm box, one trilinear resampling to 96^3, CT window, PET z-score);
         fusion+biomarkers: a cube centred on the predicted tumour with the mask as a third channel
      -> per fold: ClinicalEncoder.transform(record) -> FusedFeatureExtractor.extract_features -> fused features
         (without a network: the encoded record), then the scaled biomarkers
      -> per fold: head.score(features)
      -> weighted mean of the folds' scores (weights from the folds' validation scores)

Only the head is the task's: Task 2's :class:`~hecktor.prognosis.RiskHead` scores a case by the standardised risk of
its Cox model, Task 3's :class:`~hecktor.diagnosis.LogisticHead` by its calibrated P(HPV+). :class:`FoldEnsemble`
owns everything else (the folds and their weights, the clinical encoders, the networks, the biomarker scaling, the
nested segmentation and the time budget); :class:`~hecktor.prognosis.RiskPredictor` and
:class:`~hecktor.diagnosis.HPVPredictor` are fold ensembles that add their bundle format and their answer.

The modes (:data:`PREDICTOR_MODES`; Task 3 has the first three):

* ``"fusion"``: image + clinical record through the network;
* ``"imaging"``: image only (the record is ignored; the folds hold no encoder);
* ``"clinical"``: no network and no image: the encoded record goes straight into the fold's head;
* ``"biomarkers"``: the nested Task 1 model (:class:`~hecktor.segment.Segmenter`, its own share of the time budget)
  segments the case, PET biomarkers of the predicted mask (:mod:`hecktor.biomarkers`: volumes, SUVs, TLG, nodes) are
  scaled by the fold's :class:`~hecktor.biomarkers.BiomarkerScaler` and joined to the encoded record; no network;
* ``"fusion+biomarkers"``: the same biomarkers joined to the fused features of a network that sees a cube centred
  on the predicted tumour with the mask as a third channel (:func:`~hecktor.biomarkers.tumour_crop_input`).

Each input is checked once per case. The clinical record is sanitised once (:func:`hecktor.clinical.sanitize_ehr`):
here for a raw record, by :func:`hecktor.case.read_case` for a case read from disk (:meth:`FoldEnsemble.predict_case`
passes its record on as a :class:`~hecktor.clinical.CheckedRecord`). The images are repaired once, at the top of
:meth:`FoldEnsemble.predict_score` (:func:`hecktor.repair.repair_case`: the empty-PET and overlap checks included; a
case read by ``read_case`` passes through unchanged), so that the segmentation, the biomarkers of its mask, the
tumour cube and the networks all see the same images.

With a :class:`~hecktor.budget.TimeBudget` the folds run from the heaviest ensemble weight to the lightest and a
:class:`~hecktor.budget.BudgetPolicy` drops the lightest when time runs short; the weights of the folds kept are
renormalised to sum to 1. In the biomarker modes the segmentation runs first within a sub-budget
(:meth:`FoldEnsemble.segmentation_budget`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.biomarkers import SUV_REFERENCES, Biomarkers, BiomarkerScaler, TumourCrop, body_relative_pet, \
    compute_biomarkers, no_tumour_biomarkers, tumour_centre, tumour_crop_input
from hecktor.budget import BudgetPolicy, NetworkPass, PredictionReport, TimeBudget, fold_order
from hecktor.case import CaseInput
from hecktor.clinical import CheckedRecord, ClinicalEncoder, normalize_ehr, sanitize_ehr, unseen_values
from hecktor.errors import InputError
from hecktor.feature_range import OutOfRange, out_of_range_warning
from hecktor.localization import localize_head_and_neck
from hecktor.networks.fused import MODES, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.preprocessing import blank_network_input, box_grid, image_level_input
from hecktor.repair import is_placeholder, repair_case
from hecktor.segment import Segmenter, resolve_device
from hecktor.survival import ensemble_risk

__all__ = ["BIOMARKER_MODES", "PREDICTOR_MODES", "SEGMENTATION_FOLDER", "FoldHead", "EnsembleFold",
           "FoldEnsemble", "SegmentationSettings", "network_mode", "tumour_cube"]

BIOMARKER_MODES = ("biomarkers", "fusion+biomarkers")
"""The modes that segment the case with the nested Task 1 model and use its biomarkers."""
PREDICTOR_MODES = (*MODES, *BIOMARKER_MODES)
"""Every mode of a fold ensemble: the network's (:data:`hecktor.networks.fused.MODES`) and the biomarker modes."""
SEGMENTATION_FOLDER = "segmentation"
"""Where a bundle of a biomarker mode holds its nested Task 1 bundle."""


def network_mode(mode: str) -> str | None:
    """The :class:`FusedFeatureExtractor` mode of an ensemble mode (``None``: no network)."""
    if mode not in PREDICTOR_MODES:
        raise ValueError(f"mode must be one of {PREDICTOR_MODES}, got {mode!r}")
    return {"clinical": None, "biomarkers": None, "fusion+biomarkers": "fusion"}.get(mode, mode)


@dataclass(frozen=True)
class SegmentationSettings:
    """How the biomarker modes run the nested Task 1 model (``model.json``'s ``segmentation`` record).

    Attributes:
        budget_share: share of the budget left when the segmentation starts that it may plan to use; its policy
            drops test-time augmentation, then folds, beyond that. The rest is for the ensemble's folds.
        tta: mirror test-time augmentation when the budget allows. Off by default: the training masks (out-of-fold
            predictions) are made without it, and the biomarkers should be measured on masks alike.
        crop: the tumour-centred cube of ``fusion+biomarkers`` (``None`` in ``biomarkers`` mode).
        suv_reference: what the SUV biomarkers are measured against (:data:`~hecktor.biomarkers.SUV_REFERENCES`):
            ``absolute``, or ``body`` (relative to the body's median uptake, the same in any PET unit; what
            training chooses since 2026-12-07). A bundle written before the setting existed reads ``absolute``.
    """

    budget_share: float = 0.7
    tta: bool = False
    crop: TumourCrop | None = None
    suv_reference: str = "absolute"

    def __post_init__(self) -> None:
        if not 0.0 < self.budget_share <= 1.0:
            raise ValueError(f"segmentation budget_share must lie in (0, 1], got {self.budget_share}")
        if self.suv_reference not in SUV_REFERENCES:
            raise ValueError(f"segmentation suv_reference must be one of {SUV_REFERENCES}, got {self.suv_reference!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"folder": SEGMENTATION_FOLDER, "budget_share": float(self.budget_share), "tta": bool(self.tta),
                "crop": None if self.crop is None else self.crop.to_dict(), "suv_reference": self.suv_reference}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "SegmentationSettings":
        crop = record.get("crop")
        return cls(float(record.get("budget_share", 0.7)), bool(record.get("tta", False)),
                   TumourCrop.from_dict(crop) if crop is not None else None,
                   str(record.get("suv_reference", "absolute")))

    def biomarker_pet(self, pet: sitk.Image, ct: sitk.Image | None) -> sitk.Image:
        """The PET the biomarkers are measured in: as it is, or relative to the body (:attr:`suv_reference`)."""
        return body_relative_pet(pet, ct) if self.suv_reference == "body" else pet


class FoldHead(Protocol):
    """What a fold ensemble asks of a fold's last stage (Task 2: :class:`~hecktor.prognosis.RiskHead`, Task 3:
    :class:`~hecktor.diagnosis.LogisticHead`)."""

    @property
    def n_features(self) -> int:
        """The width of the features it takes."""

    def score(self, features: np.ndarray) -> np.ndarray:
        """The scores ``(n,)`` of ``(n, n_features)`` features (features beyond the training range limited)."""

    def features_out_of_range(self, features: np.ndarray) -> list[OutOfRange]:
        """The features of the first row beyond the training range (those :meth:`score` limits)."""

    def to_dict(self) -> dict[str, Any]:
        """The head as JSON (its bundle file)."""


@dataclass
class EnsembleFold:
    """One cross-validation fold of a fold ensemble.

    Attributes:
        head: the fold's last stage, fitted on its training patients' features.
        network: the fold's feature extractor (``None`` in the modes without a network).
        encoder: the clinical encoder fitted on the fold's training rows (``None`` in imaging mode).
        validation_score: the fold's score on its validation patients (Task 2: the C-index, Task 3: the AUC), what
            its ensemble weight was computed from.
        biomarkers: the biomarker scaling fitted on the fold's training patients (biomarker modes only).

    The head's features are, in this order: the network's fused features (or, without a network, the encoded
    record), then the scaled biomarkers.
    """

    head: FoldHead
    network: FusedFeatureExtractor | None = None
    encoder: ClinicalEncoder | None = None
    validation_score: float | None = None
    biomarkers: BiomarkerScaler | None = None

    @property
    def n_features(self) -> int:
        """The width of the features the fold makes (what its head must take)."""
        width = self.network.feature_dim if self.network is not None else (
            self.encoder.n_features if self.encoder is not None else 0)
        return width + (self.biomarkers.n_features if self.biomarkers is not None else 0)

    def feature_names(self) -> list[str]:
        """The names of the head's features, in order (for warnings)."""
        names = ([f"network feature {j}" for j in range(self.network.feature_dim)] if self.network is not None
                 else list(self.encoder.feature_names) if self.encoder is not None else [])
        if self.biomarkers is not None:
            names += [f"biomarker {name} (scaled)" for name in self.biomarkers.names]
        return names

    def features(self, network_features: np.ndarray | None, clinical: np.ndarray | None,
                 markers: Sequence[Biomarkers | Mapping[str, float]] | None) -> np.ndarray:
        """The head's input ``(n, p)``: fused features (or the encoded record), then scaled biomarkers."""
        parts = [network_features if self.network is not None else clinical]
        if self.biomarkers is not None:
            if markers is None:
                raise ValueError("this fold needs the case's biomarkers")
            parts.append(self.biomarkers.transform(markers))
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1) if len(parts) > 1 \
            else parts[0]


class FoldEnsemble:
    """A weighted ensemble of :class:`EnsembleFold` and the plan they were trained with; the task's predictor adds
    its bundle format and its answer (:meth:`predict`).

    Args:
        folds: one :class:`EnsembleFold` per fold.
        weights: ensemble weight of each fold (non-negative, summing to 1).
        plan: the preprocessing plan of the training run.
        mode: one of ``modes``.
        device: where the networks run; ``None`` picks CUDA when available.
        info: free-form training record copied into ``model.json`` on export (metrics, config).
        modes: the modes the task has (default :data:`PREDICTOR_MODES`).
        segmentation: biomarker modes: the Task 1 bundle that segments the cases (nested in the exported bundle).
        segmenter: biomarker modes: that bundle already loaded (default: loaded from ``segmentation`` when first
            needed).
        segmentation_settings: biomarker modes: the segmentation's budget share, TTA and (``fusion+biomarkers``)
            the tumour-centred cube; default :class:`SegmentationSettings` with a 128 mm cube of the plan's input
            shape.

    Attributes:
        last_report: what the last :meth:`predict_score` call ran, dropped, repaired and spent
            (:class:`~hecktor.budget.PredictionReport`; its timings also split the folds' time ``network_s`` into
            ``clinical_s`` (encoding the record), ``features_s`` (the networks) and ``survival_s`` (the heads)).
        last_fold_scores: each used fold's score in the last call, by fold index.
        last_biomarkers: the biomarkers of the last call (biomarker modes; else ``None``).
        last_segmentation_report: the nested segmentation's report of the last call (biomarker modes).
    """

    score_name = "score"
    """What the ensemble's score is called in messages (the task's predictor names it)."""

    def __init__(self, folds: Sequence[EnsembleFold], weights: Sequence[float], plan: BoxPlan, mode: str,
                 device: str | torch.device | None = None, info: Mapping[str, Any] | None = None, *,
                 modes: Sequence[str] = PREDICTOR_MODES, segmentation: str | Path | None = None,
                 segmenter: Segmenter | None = None,
                 segmentation_settings: SegmentationSettings | None = None) -> None:
        if mode not in modes:
            raise ValueError(f"mode must be one of {tuple(modes)}, got {mode!r}")
        if not folds:
            raise ValueError(f"a {type(self).__name__} needs at least one fold")
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.size != len(folds):
            raise ValueError(f"{weights.size} ensemble weights for {len(folds)} folds")
        if np.any(~np.isfinite(weights)) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, atol=1e-9):
            raise ValueError(f"ensemble weights must be non-negative and sum to 1, got {weights.tolist()}")
        needs_network, needs_encoder = network_mode(mode) is not None, mode != "imaging"
        for k, fold in enumerate(folds):
            if (fold.network is not None) != needs_network or (fold.encoder is not None) != needs_encoder or (
                    fold.biomarkers is not None) != (mode in BIOMARKER_MODES):
                raise ValueError(f"fold {k} does not fit mode {mode!r}: network, encoder and biomarker scaling "
                                 "presence must match it")
            if fold.head.n_features != fold.n_features:
                raise ValueError(f"fold {k}'s head takes {fold.head.n_features} features but the fold makes "
                                 f"{fold.n_features}")
        self.device = resolve_device(device)
        self.folds = list(folds)
        for fold in self.folds:
            if fold.network is not None:
                fold.network.to(self.device).eval()
        self.weights = weights
        self.plan = plan
        self.mode = mode
        self.info = dict(info or {})
        self.segmentation_bundle = Path(segmentation) if segmentation is not None else None
        self._segmenter = segmenter
        if segmentation_settings is None:
            crop = TumourCrop(shape_zyx=plan.input_shape_zyx) if mode == "fusion+biomarkers" else None
            segmentation_settings = SegmentationSettings(crop=crop)
        if mode == "fusion+biomarkers" and segmentation_settings.crop is None:
            raise ValueError("mode 'fusion+biomarkers' needs the tumour-centred cube (segmentation_settings.crop)")
        self.segmentation_settings = segmentation_settings
        self.last_report = PredictionReport()
        self.last_fold_scores: dict[int, float] = {}
        self.last_biomarkers: Biomarkers | None = None
        self.last_segmentation_report: PredictionReport | None = None
        self._out_of_range: dict[str, OutOfRange] = {}  # of the case being predicted, by feature name

    @property
    def uses_images(self) -> bool:
        """Whether a case needs its CT and PET (every mode but ``clinical``)."""
        return self.mode != "clinical"

    @property
    def uses_network(self) -> bool:
        """Whether the folds hold a feature network (``fusion``, ``imaging``, ``fusion+biomarkers``)."""
        return network_mode(self.mode) is not None

    @property
    def uses_biomarkers(self) -> bool:
        """Whether the case is segmented by the nested Task 1 model (:data:`BIOMARKER_MODES`)."""
        return self.mode in BIOMARKER_MODES

    @property
    def segmenter(self) -> Segmenter:
        """The nested Task 1 model (biomarker modes), loaded from :attr:`segmentation_bundle` when first needed."""
        if self._segmenter is None:
            if self.segmentation_bundle is None:
                raise ValueError(f"mode {self.mode!r} needs the Task 1 model: give the {type(self).__name__} a "
                                 "segmentation bundle")
            self._segmenter = Segmenter.from_bundle(self.segmentation_bundle, device=self.device)
        return self._segmenter

    @property
    def folds_by_weight(self) -> list[int]:
        """Fold indices from the heaviest to the lightest: drop from the end when time runs short."""
        return [int(k) for k in np.argsort(-self.weights, kind="stable")]

    def _weights_of(self, used: Sequence[int]) -> np.ndarray:
        """Ensemble weights of the folds ``used``, renormalised to sum 1 (all equal if only zero-weight folds)."""
        if len(used) == len(self.folds):
            return self.weights
        weights = self.weights[list(used)]
        return weights / weights.sum() if weights.sum() > 0 else np.full(len(used), 1.0 / len(used))

    # ------------------------------------------------------------------------------------------------ prediction
    def predict_case(self, case: CaseInput, *, budget: TimeBudget | None = None, **options: Any) -> Any:
        """The task's :meth:`predict` on a case read by :func:`hecktor.case.read_case` (the container's call): its
        record was sanitised when it was read and is not checked again; a CT or PET that reading dropped (``None``)
        is predicted without, a dropped ``ehr.json`` as an absent record."""
        record = CheckedRecord(case.ehr) if case.ehr is not None else None
        answer = self.predict(case.ct, case.pet, record, budget=budget, **options)
        self.last_report.warnings[:0] = case.warnings
        return answer

    def predict(self, ct: sitk.Image | None, pet: sitk.Image | None, ehr: Mapping[str, Any] | CheckedRecord | None,
                *, folds: Sequence[int] | None = None, budget: TimeBudget | None = None) -> Any:
        """The task's answer of one case, from :meth:`predict_score` (Task 2: the risk, Task 3: the status)."""
        raise NotImplementedError(f"{type(self).__name__} gives no answer of its own")

    def predict_score(
        self,
        ct: sitk.Image | None,
        pet: sitk.Image | None,
        ehr: Mapping[str, Any] | CheckedRecord | None,
        *,
        folds: Sequence[int] | None = None,
        budget: TimeBudget | None = None,
        segmentation: sitk.Image | None = None,
    ) -> float:
        """The ensemble's score of one case: the weighted mean of its folds' ``head.score``.

        Args:
            ct: CT in HU, any grid, or ``None`` (its channel is then blank; unused in clinical mode).
            pet: PET in SUV, its own grid, or ``None`` (its channel is then blank and the box is placed from the
                CT). A flat placeholder CT or PET (the platform's sanity check), or neither image, gives the score
                of the clinical record with a blank image (what preprocessing makes of a region outside every field
                of view), with a warning in :attr:`last_report`.
            ehr: the clinical record (``ehr.json``). ``None``, missing keys, nulls and unseen values all encode as
                the fitted encoder's ``Unknown``; extra keys are ignored; keys are matched whatever their case and
                implausible values (an age outside 0-120 years) are dropped, with warnings
                (:func:`hecktor.clinical.sanitize_ehr`); a non-object is an :class:`InputError`. A
                :class:`~hecktor.clinical.CheckedRecord` is sanitised already and used as it is.
            folds: the folds allowed (default: all); they run heaviest weight first and their weights are
                renormalised.
            budget: the case's deadline; ``None`` runs every fold.
            segmentation: biomarker modes: the case's Task 1 mask (labels on the CT's grid) made already by this
                ensemble's nested model (:attr:`segmenter`, with :attr:`segmentation_settings`' TTA), so that one
                segmentation serves several tasks' ensembles; the nested model then does not run. Ignored in the
                other modes.
        """
        allowed = set(fold_order(folds, len(self.folds)))
        report = self.last_report = PredictionReport()
        policy = BudgetPolicy(budget, report)
        clock = policy.now
        started = clock()
        record = self._checked_record(ehr, report)
        if self.uses_images:
            # Once, before anything reads the images: the segmentation, the biomarkers of its mask, the tumour cube
            # and the networks see the same repaired PET (a case read by read_case is repaired already: no-op).
            ct, pet, repairs = repair_case(ct, pet, ct_pad_hu=self.plan.ct_pad_hu, pet_pad_suv=self.plan.pet_pad_suv)
            report.warnings.extend(repairs)
        mask, placeholder = None, False
        self.last_biomarkers = self.last_segmentation_report = None
        if self.uses_biomarkers:
            placeholder = any(image is not None and is_placeholder(image) for image in (ct, pet))
            self.last_biomarkers, mask = self._segment(ct, pet, placeholder, budget, report, clock, segmentation)
        preprocess_started = clock()
        tensor = None
        if self.uses_network:
            image = self._network_input(ct, pet, mask, placeholder, report)
            tensor = torch.as_tensor(image, dtype=torch.float32).to(self.device)[None]
        report.timings["preprocess_s"] = clock() - preprocess_started

        pending = policy.start([NetworkPass(k) for k in self.folds_by_weight if k in allowed])
        self._out_of_range = {}
        stages = {"clinical_s": 0.0, "features_s": 0.0, "survival_s": 0.0}
        scores: dict[int, float] = {}
        network_started = clock()
        while pending:
            step, pending = pending[0], pending[1:]
            pass_started = clock()
            scores[step.fold] = self._fold_score(step.fold, tensor, record, stages)
            pending = policy.after_pass(clock() - pass_started, pending)
        used = sorted(scores)
        warning = out_of_range_warning(self._out_of_range)
        if warning is not None:
            report.warnings.append(warning)
        score = float(ensemble_risk(np.asarray([scores[k] for k in used])[:, None], self._weights_of(used))[0])
        if not math.isfinite(score):
            raise InputError(f"the ensemble's {self.score_name} is not finite ({score}); the inputs are far outside "
                             "the training data")
        report.timings.update(network_s=clock() - network_started, total_s=clock() - started, **stages)
        if budget is not None:
            report.timings["elapsed_s"] = budget.elapsed()
        report.folds, report.passes, report.tta = used, len(policy.pass_times), False
        self.last_fold_scores = {k: scores[k] for k in used}
        return score

    def _checked_record(self, ehr: Mapping[str, Any] | CheckedRecord | None,
                        report: PredictionReport) -> dict[str, Any]:
        """The record to encode, sanitised once (a :class:`CheckedRecord` already is), with the warnings of its
        sanitising and of the values no encoder knows."""
        encoders = [fold.encoder for fold in self.folds if fold.encoder is not None]
        if isinstance(ehr, CheckedRecord):
            checked = ehr
        else:
            # A non-object ehr.json (a list, a number) is an InputError; None (no ehr.json) means "all unknown".
            record = normalize_ehr(dict(ehr) if isinstance(ehr, Mapping) else ehr) if ehr is not None else {}
            if not encoders:  # imaging mode: the record is not used
                return record
            checked = sanitize_ehr(record)
        if encoders:
            report.warnings.extend(checked.warnings + unseen_values(encoders, checked.record))
        return checked.record

    def _network_input(self, ct: sitk.Image | None, pet: sitk.Image | None, mask: sitk.Image | None,
                       placeholder: bool, report: PredictionReport) -> np.ndarray:
        """The networks' input of the case: the box (:func:`~hecktor.preprocessing.image_level_input`), or in
        ``fusion+biomarkers`` the cube around the predicted tumour (blank when a placeholder or a missing image left
        nothing to segment: :meth:`_segment` has warned)."""
        if self.mode != "fusion+biomarkers":
            image, warnings, report.placeholder = image_level_input(ct, pet, self.plan)
            report.warnings.extend(warnings)
            return image
        if placeholder or ct is None or pet is None:
            shape = self.segmentation_settings.crop.shape_zyx
            return np.concatenate([blank_network_input(shape, self.plan), np.zeros((1, *shape), dtype=np.float32)])
        return tumour_cube(ct, pet, mask, self.segmentation_settings.crop, self.plan)

    @torch.inference_mode()
    def _fold_score(self, k: int, image: torch.Tensor | None, record: Mapping[str, Any],
                    timings: dict[str, float]) -> float:
        """The score of fold ``k`` for one case (image (1, C, z, y, x) on the device, sanitised record; in the
        biomarker modes, the case's biomarkers measured by :meth:`predict_score`, :attr:`last_biomarkers`)."""
        markers = self.last_biomarkers if self.uses_biomarkers else None
        fold = self.folds[k]
        start = time.perf_counter()
        clinical = fold.encoder.transform([record]) if fold.encoder is not None else None
        encoded = time.perf_counter()
        network_features = None
        if fold.network is not None:
            clinical_tensor = torch.from_numpy(clinical).to(self.device) if clinical is not None else None
            network_features = fold.network.extract_features(image, clinical_tensor).float().cpu().numpy()
        features = fold.features(network_features, clinical, [markers] if markers is not None else None)
        extracted = time.perf_counter()
        names = None
        for item in fold.head.features_out_of_range(features):
            names = names or fold.feature_names()
            self._out_of_range.setdefault(names[item.index], item)
        score = float(fold.head.score(features)[0])  # out-of-range features limited (the head does)
        timings["clinical_s"] += encoded - start
        timings["features_s"] += extracted - encoded
        timings["survival_s"] += time.perf_counter() - extracted
        return score

    @torch.inference_mode()
    def predict_batch(
        self,
        images: np.ndarray | None,
        records: Sequence[Mapping[str, Any] | None],
        *,
        biomarkers: Sequence[Biomarkers | Mapping[str, float]] | None = None,
        batch_size: int = 8,
    ) -> np.ndarray:
        """Ensemble scores ``(n,)`` of ``n`` cases already preprocessed by
        :func:`~hecktor.preprocessing.preprocess_box` (training's out-of-fold scoring and benchmarks): the same
        folds, weights and arithmetic as :meth:`predict_score`.

        Args:
            images: ``(n, C, z, y, x)`` network inputs (``None`` without a network; ``fusion+biomarkers``: the
                tumour-centred cubes of :func:`~hecktor.biomarkers.tumour_crop_input`).
            records: the ``n`` clinical records (``None`` entries: every value unknown).
            biomarkers: the ``n`` cases' biomarkers (biomarker modes).
            batch_size: cases per forward pass.
        """
        n = len(records)
        if self.uses_network and (images is None or len(images) != n):
            raise ValueError(f"mode {self.mode!r} needs one preprocessed image per record ({n})")
        if self.uses_biomarkers and (biomarkers is None or len(biomarkers) != n):
            raise ValueError(f"mode {self.mode!r} needs the biomarkers of every case ({n})")
        normalised = [normalize_ehr(dict(r)) if r is not None else {} for r in records]
        scores = np.empty((len(self.folds), n), dtype=np.float64)
        for k, fold in enumerate(self.folds):
            clinical = fold.encoder.transform(normalised) if fold.encoder is not None else None
            network_features = None
            if fold.network is not None:
                parts = []
                for start in range(0, n, batch_size):
                    stop = min(n, start + batch_size)
                    image = torch.as_tensor(np.asarray(images[start:stop]), dtype=torch.float32).to(self.device)
                    record = torch.from_numpy(clinical[start:stop]).to(self.device) if clinical is not None else None
                    parts.append(fold.network.extract_features(image, record).float().cpu().numpy())
                network_features = np.concatenate(parts)
            scores[k] = fold.head.score(fold.features(network_features, clinical, biomarkers))
        return ensemble_risk(scores, self.weights)

    # ------------------------------------------------------------------------------------- biomarker modes
    def segmentation_budget(self, budget: TimeBudget | None) -> TimeBudget | None:
        """The nested segmentation's deadline: ``budget_share`` of what is left of ``budget`` now (same clock, same
        start, same limit), so that the folds keep the rest."""
        if budget is None:
            return None
        elapsed = budget.elapsed()
        end = elapsed + self.segmentation_settings.budget_share * max(budget.budget_s - elapsed, 0.0)
        # Already past the budget: a deadline of "now" (the policy then runs the minimum, one unmirrored pass).
        end = min(max(end, elapsed, 1e-3), budget.limit_s)
        return TimeBudget(budget.limit_s, budget_s=end, start_time=budget.start_time, clock=budget.clock)

    def _segment(self, ct: sitk.Image | None, pet: sitk.Image | None, placeholder: bool, budget: TimeBudget | None,
                 report: PredictionReport, clock,
                 given: sitk.Image | None = None) -> tuple[Biomarkers, sitk.Image | None]:
        """Segment the case with the nested Task 1 model within its share of the budget (or take the ``given``
        mask of that model), and measure the biomarkers of the mask (no-tumour values, with a warning, for a
        placeholder or an empty mask)."""
        started = clock()
        mask = None
        if placeholder:
            report.placeholder = True
            markers = no_tumour_biomarkers("flat placeholder input, nothing to segment")
        elif ct is None or pet is None:  # the biomarkers are measured in the PET on the CT's grid: both are needed
            markers = no_tumour_biomarkers(f"no usable {'CT' if ct is None else 'PET'}, nothing to segment")
        elif given is not None:
            if given.GetSize() != ct.GetSize():
                raise InputError(f"the given segmentation ({given.GetSize()}) is not on the CT's grid "
                                 f"({ct.GetSize()})")
            mask, segmented = given, clock()
            report.timings["segmentation_s"] = 0.0
            markers = compute_biomarkers(mask, self.segmentation_settings.biomarker_pet(pet, ct))
            report.timings["biomarkers_s"] = clock() - segmented
        else:
            segmenter = self.segmenter
            mask = segmenter.predict(ct, pet, tta=self.segmentation_settings.tta,
                                     budget=self.segmentation_budget(budget))
            self.last_segmentation_report = segmenter.last_report
            report.warnings.extend(f"segmentation: {line}" for line in segmenter.last_report.warnings)
            report.dropped.extend(f"segmentation {line}" for line in segmenter.last_report.dropped)
            segmented = clock()
            report.timings["segmentation_s"] = segmented - started
            markers = compute_biomarkers(mask, self.segmentation_settings.biomarker_pet(pet, ct))
            report.timings["biomarkers_s"] = clock() - segmented
        report.warnings.extend(markers.warnings)
        return markers, mask


def tumour_cube(ct: sitk.Image, pet: sitk.Image, mask: sitk.Image | None, crop: TumourCrop,
                plan: BoxPlan) -> np.ndarray:
    """The ``fusion+biomarkers`` network input of a case, (3, z, y, x): :func:`~hecktor.biomarkers.tumour_crop_input`
    around the segmented tumour, or, when the mask holds no tumour, around the centre of the plan's box (localised as
    :func:`~hecktor.preprocessing.preprocess_box` does). Training (on out-of-fold masks) and
    :meth:`FoldEnsemble.predict_score` both call it, on images repaired already (:func:`hecktor.repair.repair_case`
    with the plan's padding values)."""
    fallback = None
    if tumour_centre(mask) is None:
        fallback = box_grid(localize_head_and_neck(pet, plan, reference=ct), plan).center()
    return tumour_crop_input(ct, pet, mask, crop, plan, fallback)
