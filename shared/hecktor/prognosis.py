"""Task 2 inference: CT, PET and the clinical record in, one recurrence-free-survival risk out (higher = earlier
relapse).

The path is the one cross-validation scored::

    preprocess_box (localise, 200x200x310 mm box, one trilinear resampling to 96^3, CT window, PET z-score)
      -> per fold: ClinicalEncoder.transform(ehr) -> FusedFeatureExtractor.extract_features -> 128-d features
      -> per fold: SurvivalModel.standardized_risk (the fold's risk, scaled by its training set's risk mean / std)
      -> weighted average of the folds' standardised risks (weights from the folds' out-of-fold C-index)

The arms of the baseline comparison share this class through ``mode`` (:data:`PREDICTOR_MODES`):

* ``"fusion"``: image + clinical record through the network;
* ``"imaging"``: image only (the record is ignored; the bundle holds no encoder);
* ``"clinical"``: no network and no image: the encoded record goes straight into the fold's Cox model;
* ``"biomarkers"``: the Task 1 model inside the bundle segments the case (:class:`~hecktor.segment.Segmenter`, its
  own share of the time budget), PET biomarkers of the predicted mask (:mod:`hecktor.biomarkers`: volumes, SUVs,
  TLG, nodes) are scaled by the fold's :class:`~hecktor.biomarkers.BiomarkerScaler` and joined to the encoded record;
  no Task 2 network;
* ``"fusion+biomarkers"``: the same biomarkers joined to the fused features of a network that sees a cube centred on
  the predicted tumour with the mask as a third channel (:func:`~hecktor.biomarkers.tumour_crop_input`).

In the biomarker modes the Task 2 bundle holds the Task 1 bundle in ``segmentation/`` (listed in its manifest and
verified on loading, as a bundle of its own). The segmentation runs before the folds within a sub-budget: it may use
``segmentation.budget_share`` (model.json, 0.7 by default) of the time left in the Task 2 budget, and its own
:class:`~hecktor.budget.BudgetPolicy` drops its test-time augmentation, then its folds, to stay within it.

Every number comes from the bundle (``plan.json``, ``model.json``, the fitted encoders and Cox models), never from
code defaults. :meth:`RiskPredictor.predict` is the one code path that predicts a case (the container, the demo, the
benchmarks and the tests call it); given a :class:`~hecktor.budget.TimeBudget` it runs the folds from the heaviest
ensemble weight to the lightest and lets a :class:`~hecktor.budget.BudgetPolicy` drop the lightest when time runs
short; the weights of the folds kept are renormalised to sum to 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.biomarkers import Biomarkers, BiomarkerScaler, TumourCrop, compute_biomarkers, no_tumour_biomarkers, \
    tumour_centre, tumour_crop_input
from hecktor.budget import BudgetPolicy, NetworkPass, PredictionReport, TimeBudget, fold_order
from hecktor.bundle import Bundle, load_bundle, write_bundle
from hecktor.case import CaseInput
from hecktor.clinical import ClinicalEncoder, normalize_ehr, sanitize_ehr, unseen_values
from hecktor.ensemble import NETWORK_CLASS, check_clinical_width, check_fold_files, check_fold_records, \
    check_format, check_network_record, check_weights, load_fold_encoder, load_fold_network, \
    network_and_encoder_files
from hecktor.errors import BundleError, InputError
from hecktor.feature_range import OutOfRange, out_of_range_warning
from hecktor.localization import localize_head_and_neck
from hecktor.networks.fused import MODES, FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.preprocessing import blank_network_input, box_grid, check_case, image_level_input
from hecktor.repair import is_placeholder, repair_case
from hecktor.segment import Segmenter, resolve_device
from hecktor.survival import ENSEMBLE_RULES, ensemble_risk
from hecktor.survival_models import SurvivalModel, survival_model_from_dict

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "PREDICTOR_MODES", "BIOMARKER_MODES", "SEGMENTATION_FOLDER",
           "FoldModel", "RiskPredictor", "SegmentationSettings", "fold_file_names", "network_mode", "tumour_cube"]

MODEL_FORMAT = "hecktor-task2-risk"
MODEL_FORMAT_VERSION = 1
_FIX = "re-export the bundle with training/export_prognosis.py"

BIOMARKER_MODES = ("biomarkers", "fusion+biomarkers")
"""The modes that segment the case with the nested Task 1 model and use its biomarkers."""
PREDICTOR_MODES = (*MODES, *BIOMARKER_MODES)
"""Every Task 2 mode: the network's (:data:`hecktor.networks.fused.MODES`) and the biomarker modes."""
SEGMENTATION_FOLDER = "segmentation"
"""Where a Task 2 bundle holds its nested Task 1 bundle."""


def network_mode(mode: str) -> str | None:
    """The :class:`FusedFeatureExtractor` mode of a Task 2 mode (``None``: no network)."""
    if mode not in PREDICTOR_MODES:
        raise ValueError(f"mode must be one of {PREDICTOR_MODES}, got {mode!r}")
    return {"clinical": None, "biomarkers": None, "fusion+biomarkers": "fusion"}.get(mode, mode)


@dataclass(frozen=True)
class SegmentationSettings:
    """How the biomarker modes run the nested Task 1 model (``model.json``'s ``segmentation`` record).

    Attributes:
        budget_share: share of the Task 2 budget left when the segmentation starts that it may plan to use; its
            policy drops test-time augmentation, then folds, beyond that. The rest is for the Task 2 folds.
        tta: mirror test-time augmentation when the budget allows. Off by default: the training masks (out-of-fold
            predictions) are made without it, and the biomarkers should be measured on masks alike.
        crop: the tumour-centred cube of ``fusion+biomarkers`` (``None`` in ``biomarkers`` mode).
    """

    budget_share: float = 0.7
    tta: bool = False
    crop: TumourCrop | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.budget_share <= 1.0:
            raise ValueError(f"segmentation budget_share must lie in (0, 1], got {self.budget_share}")

    def to_dict(self) -> dict[str, Any]:
        return {"folder": SEGMENTATION_FOLDER, "budget_share": float(self.budget_share), "tta": bool(self.tta),
                "crop": None if self.crop is None else self.crop.to_dict()}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "SegmentationSettings":
        crop = record.get("crop")
        return cls(float(record.get("budget_share", 0.7)), bool(record.get("tta", False)),
                   TumourCrop.from_dict(crop) if crop is not None else None)


def fold_file_names(index: int) -> dict[str, str]:
    """Bundle file names of fold ``index``: network weights, fitted clinical encoder, biomarker scaling, Cox model."""
    return {
        "network": f"fold_{index}_network.pt",
        "encoder": f"fold_{index}_encoder.json",
        "biomarkers": f"fold_{index}_biomarkers.json",
        "survival": f"fold_{index}_survival.json",
    }


@dataclass
class FoldModel:
    """One cross-validation fold of the ensemble.

    Attributes:
        survival: the fold's Cox model, fitted on its training patients' features (with their risk scaling).
        network: the fold's feature extractor (``None`` in clinical mode).
        encoder: the clinical encoder fitted on the fold's training rows (``None`` in imaging mode).
        cindex: the fold's out-of-fold C-index (what its ensemble weight was computed from).
        biomarkers: the biomarker scaling fitted on the fold's training patients (biomarker modes only).

    The survival model's features are, in this order: the network's fused features (or, without a network, the
    encoded record), then the scaled biomarkers.
    """

    survival: SurvivalModel
    network: FusedFeatureExtractor | None = None
    encoder: ClinicalEncoder | None = None
    cindex: float | None = None
    biomarkers: BiomarkerScaler | None = None

    def feature_names(self) -> list[str]:
        """The names of the survival model's features, in order (for warnings)."""
        names = ([f"network feature {j}" for j in range(self.network.feature_dim)] if self.network is not None
                 else list(self.encoder.feature_names) if self.encoder is not None else [])
        if self.biomarkers is not None:
            names += [f"biomarker {name} (scaled)" for name in self.biomarkers.names]
        return names

    def features(self, network_features: np.ndarray | None, clinical: np.ndarray | None,
                 markers: Sequence[Biomarkers | Mapping[str, float]] | None) -> np.ndarray:
        """The survival model's input ``(n, p)``: fused features (or the encoded record), then scaled biomarkers."""
        parts = [network_features if self.network is not None else clinical]
        if self.biomarkers is not None:
            if markers is None:
                raise ValueError("this fold needs the case's biomarkers")
            parts.append(self.biomarkers.transform(markers))
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1) if len(parts) > 1 \
            else parts[0]


class RiskPredictor:
    """A weighted fold ensemble of Task 2 models and the plan they were trained with.

    Build it with :meth:`from_bundle` (the container) or directly from in-memory folds (training, tests).

    Args:
        folds: one :class:`FoldModel` per fold.
        weights: ensemble weight of each fold (non-negative, summing to 1).
        plan: the preprocessing plan of the training run.
        mode: one of :data:`PREDICTOR_MODES`.
        ensemble_rule: how ``weights`` were derived (recorded in the bundle; see
            :func:`hecktor.survival.ensemble_weights`).
        device: where the networks run; ``None`` picks CUDA when available.
        info: free-form training record copied into ``model.json`` on export (metrics, config).
        segmentation: biomarker modes: the Task 1 bundle that segments the cases (nested in the exported bundle).
        segmenter: biomarker modes: that bundle already loaded (default: loaded from ``segmentation`` when first
            needed).
        segmentation_settings: biomarker modes: the segmentation's budget share, TTA and (``fusion+biomarkers``)
            the tumour-centred cube; default :class:`SegmentationSettings` with a 128 mm cube of the plan's input
            shape.

    Attributes:
        last_report: what the last :meth:`predict` call ran, dropped, repaired and spent
            (:class:`~hecktor.budget.PredictionReport`; its timings also split the folds' time ``network_s`` into
            ``clinical_s`` (encoding the record), ``features_s`` (the networks) and ``survival_s``).
        last_fold_risks: each used fold's standardised risk in the last call, by fold index.
        last_biomarkers: the biomarkers of the last call (biomarker modes; else ``None``).
        last_segmentation_report: the nested segmentation's report of the last call (biomarker modes).
    """

    def __init__(
        self,
        folds: Sequence[FoldModel],
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
        if mode not in PREDICTOR_MODES:
            raise ValueError(f"mode must be one of {PREDICTOR_MODES}, got {mode!r}")
        if not folds:
            raise ValueError("a RiskPredictor needs at least one fold")
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.size != len(folds):
            raise ValueError(f"{weights.size} ensemble weights for {len(folds)} folds")
        if np.any(~np.isfinite(weights)) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, atol=1e-9):
            raise ValueError(f"ensemble weights must be non-negative and sum to 1, got {weights.tolist()}")
        for k, fold in enumerate(folds):
            needs_network, needs_encoder = network_mode(mode) is not None, mode != "imaging"
            needs_biomarkers = mode in BIOMARKER_MODES
            if (fold.network is not None) != needs_network or (fold.encoder is not None) != needs_encoder or (
                    fold.biomarkers is not None) != needs_biomarkers:
                raise ValueError(f"fold {k} does not fit mode {mode!r}: network, encoder and biomarker scaling "
                                 "presence must match it")
        self.device = resolve_device(device)
        self.folds = list(folds)
        for fold in self.folds:
            if fold.network is not None:
                fold.network.to(self.device).eval()
        self.weights = weights
        self.plan = plan
        self.mode = mode
        self.ensemble_rule = ensemble_rule
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
        self.last_fold_risks: dict[int, float] = {}
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
                raise ValueError(f"mode {self.mode!r} needs the Task 1 model: give the RiskPredictor a segmentation "
                                 "bundle")
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

    @torch.inference_mode()
    def _fold_risk(self, k: int, image: torch.Tensor | None, record: Mapping[str, Any],
                   timings: dict[str, float]) -> float:
        """Standardised risk of fold ``k`` for one case (image (1, C, z, y, x) on the device, normalised record; in
        the biomarker modes, the case's biomarkers measured by :meth:`predict`, :attr:`last_biomarkers`)."""
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
        for item in fold.survival.features_out_of_range(features):
            names = names or fold.feature_names()
            self._out_of_range.setdefault(names[item.index], item)
        risk = float(fold.survival.standardized_risk(features)[0])  # out-of-range features limited (the head does)
        timings["clinical_s"] += encoded - start
        timings["features_s"] += extracted - encoded
        timings["survival_s"] += time.perf_counter() - extracted
        return risk

    @torch.inference_mode()
    def predict_batch(
        self,
        images: np.ndarray | None,
        records: Sequence[Mapping[str, Any] | None],
        *,
        biomarkers: Sequence[Biomarkers | Mapping[str, float]] | None = None,
        batch_size: int = 8,
    ) -> np.ndarray:
        """Ensemble risk of ``n`` cases already preprocessed by :func:`~hecktor.preprocessing.preprocess_box`
        (training's out-of-fold scoring and benchmarks): the same folds, weights and arithmetic as :meth:`predict`.

        Args:
            images: ``(n, C, z, y, x)`` network inputs (``None`` without a network; ``fusion+biomarkers``: the
                tumour-centred cubes of :func:`~hecktor.biomarkers.tumour_crop_input`).
            records: the ``n`` clinical records (``None`` entries: every value unknown).
            biomarkers: the ``n`` cases' biomarkers (biomarker modes).
            batch_size: cases per forward pass.

        Returns:
            ``(n,)`` risks (higher = earlier relapse).
        """
        n = len(records)
        if self.uses_network and (images is None or len(images) != n):
            raise ValueError(f"mode {self.mode!r} needs one preprocessed image per record ({n})")
        if self.uses_biomarkers and (biomarkers is None or len(biomarkers) != n):
            raise ValueError(f"mode {self.mode!r} needs the biomarkers of every case ({n})")
        normalised = [normalize_ehr(dict(r)) if r is not None else {} for r in records]
        risks = np.empty((len(self.folds), n), dtype=np.float64)
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
            risks[k] = fold.survival.standardized_risk(fold.features(network_features, clinical, biomarkers))
        return ensemble_risk(risks, self.weights)

    def predict_case(self, case: CaseInput, *, budget: TimeBudget | None = None, **options: Any) -> float:
        """:meth:`predict` on a case read by :func:`hecktor.io.read_case` (the container's call): a CT or PET that
        reading dropped (``None``) is predicted without, a dropped ``ehr.json`` as an absent record."""
        risk = self.predict(case.ct, case.pet, case.ehr, budget=budget, **options)
        self.last_report.warnings[:0] = case.warnings
        return risk

    def predict(
        self,
        ct: sitk.Image | None,
        pet: sitk.Image | None,
        ehr: Mapping[str, Any] | None,
        *,
        folds: Sequence[int] | None = None,
        budget: TimeBudget | None = None,
    ) -> float:
        """Recurrence-free-survival risk of one case: higher means earlier relapse.

        Args:
            ct: CT in HU, any grid, or ``None`` (its channel is then blank; unused in clinical mode).
            pet: PET in SUV, its own grid, or ``None`` (its channel is then blank and the box is placed from the
                CT). A flat placeholder CT or PET (the platform's sanity check), or neither image, gives the risk of
                the clinical record with a blank image (what preprocessing makes of a region outside every field of
                view), with a warning in :attr:`last_report`.
            ehr: the clinical record (``ehr.json``). ``None``, missing keys, nulls and unseen values all encode as
                the fitted encoder's ``Unknown``; extra keys are ignored; keys are matched whatever their case and
                implausible values (an age outside 0-120 years) are dropped, with warnings
                (:func:`hecktor.clinical.sanitize_ehr`); a non-object is an :class:`InputError`.
            folds: the folds allowed (default: all); they run heaviest weight first and their weights are
                renormalised.
            budget: the case's deadline; ``None`` runs every fold.
        """
        allowed = set(fold_order(folds, len(self.folds)))
        report = self.last_report = PredictionReport()
        policy = BudgetPolicy(budget, report)
        clock = policy.now
        started = clock()
        # A non-object ehr.json (a list, a number) is an InputError; None (no ehr.json) means "all unknown".
        record = normalize_ehr(dict(ehr) if isinstance(ehr, Mapping) else ehr) if ehr is not None else {}
        encoders = [fold.encoder for fold in self.folds if fold.encoder is not None]
        if encoders:
            checked = sanitize_ehr(record)
            record = checked.record
            report.warnings.extend(checked.warnings + unseen_values(encoders, record))
        if self.uses_images:
            # Once, before anything reads the images: the segmentation, the biomarkers of its mask, the tumour cube
            # and the networks see the same repaired PET (a case read by read_case is repaired already: no-op).
            ct, pet, repairs = repair_case(ct, pet, ct_pad_hu=self.plan.ct_pad_hu, pet_pad_suv=self.plan.pet_pad_suv)
            report.warnings.extend(repairs)
        mask = None
        self.last_biomarkers = self.last_segmentation_report = None
        if self.uses_biomarkers:
            self.last_biomarkers, mask = self._segment(ct, pet, budget, report, clock)
        preprocess_started = clock()
        tensor = None
        if self.uses_network:
            if self.mode == "fusion+biomarkers":
                image = self._cube_input(ct, pet, mask)
            else:
                image, warnings, report.placeholder = image_level_input(ct, pet, self.plan)
                report.warnings.extend(warnings)
            tensor = torch.as_tensor(image, dtype=torch.float32).to(self.device)[None]
        report.timings["preprocess_s"] = clock() - preprocess_started

        pending = policy.start([NetworkPass(k) for k in self.folds_by_weight if k in allowed])
        self._out_of_range = {}
        stages = {"clinical_s": 0.0, "features_s": 0.0, "survival_s": 0.0}
        risks: dict[int, float] = {}
        network_started = clock()
        while pending:
            step, pending = pending[0], pending[1:]
            pass_started = clock()
            risks[step.fold] = self._fold_risk(step.fold, tensor, record, stages)
            pending = policy.after_pass(clock() - pass_started, pending)
        used = sorted(risks)
        warning = out_of_range_warning(self._out_of_range)
        if warning is not None:
            report.warnings.append(warning)
        risk = float(ensemble_risk(np.asarray([risks[k] for k in used])[:, None], self._weights_of(used))[0])
        if not math.isfinite(risk):
            raise InputError(f"the ensemble's risk is not finite ({risk}); the inputs are far outside the training "
                             "data")
        report.timings.update(network_s=clock() - network_started, total_s=clock() - started,
                              **stages)
        if budget is not None:
            report.timings["elapsed_s"] = budget.elapsed()
        report.folds, report.passes, report.tta = used, len(policy.pass_times), False
        self.last_fold_risks = {k: risks[k] for k in used}
        return risk

    # ------------------------------------------------------------------------------------- biomarker modes
    def segmentation_budget(self, budget: TimeBudget | None) -> TimeBudget | None:
        """The nested segmentation's deadline: ``budget_share`` of what is left of ``budget`` now (same clock, same
        start, same limit), so that the Task 2 folds keep the rest."""
        if budget is None:
            return None
        elapsed = budget.elapsed()
        end = elapsed + self.segmentation_settings.budget_share * max(budget.budget_s - elapsed, 0.0)
        # Already past the budget: a deadline of "now" (the policy then runs the minimum, one unmirrored pass).
        end = min(max(end, elapsed, 1e-3), budget.limit_s)
        return TimeBudget(budget.limit_s, budget_s=end, start_time=budget.start_time, clock=budget.clock)

    def _segment(self, ct: sitk.Image | None, pet: sitk.Image | None, budget: TimeBudget | None,
                 report: PredictionReport, clock) -> tuple[Biomarkers, sitk.Image | None]:
        """Segment the case with the nested Task 1 model within its share of the budget, and measure the
        biomarkers of the predicted mask (no-tumour values, with a warning, for a placeholder or an empty mask)."""
        started = clock()
        mask = None
        if (ct is not None and is_placeholder(ct)) or (pet is not None and is_placeholder(pet)):
            report.placeholder = True
            markers = no_tumour_biomarkers("flat placeholder input, nothing to segment")
        elif ct is None or pet is None:  # the biomarkers are measured in the PET on the CT's grid: both are needed
            markers = no_tumour_biomarkers(f"no usable {'CT' if ct is None else 'PET'}, nothing to segment")
        else:
            segmenter = self.segmenter
            mask = segmenter.predict(ct, pet, tta=self.segmentation_settings.tta,
                                     budget=self.segmentation_budget(budget))
            self.last_segmentation_report = segmenter.last_report
            report.warnings.extend(f"segmentation: {line}" for line in segmenter.last_report.warnings)
            report.dropped.extend(f"segmentation {line}" for line in segmenter.last_report.dropped)
            segmented = clock()
            report.timings["segmentation_s"] = segmented - started
            markers = compute_biomarkers(mask, pet)
            report.timings["biomarkers_s"] = clock() - segmented
        report.warnings.extend(markers.warnings)
        return markers, mask

    def _blank_input(self) -> np.ndarray:
        """The network input of a placeholder case: a blank box, or a blank cube with an empty mask channel."""
        if self.mode != "fusion+biomarkers":
            return blank_network_input(self.plan.input_shape_zyx, self.plan)
        shape = self.segmentation_settings.crop.shape_zyx
        return np.concatenate([blank_network_input(shape, self.plan), np.zeros((1, *shape), dtype=np.float32)])

    def _cube_input(self, ct: sitk.Image | None, pet: sitk.Image | None, mask: sitk.Image | None) -> np.ndarray:
        """The ``fusion+biomarkers`` network input: the cube centred on the predicted tumour with the mask channel
        (without a tumour, centred on the box's centre); blank when a placeholder or a missing image left nothing to
        segment (:meth:`_segment` has warned)."""
        if ct is None or pet is None or is_placeholder(ct) or is_placeholder(pet):
            return self._blank_input()
        return tumour_cube(ct, pet, mask, self.segmentation_settings.crop, self.plan)

    # --------------------------------------------------------------------------------------------------- bundles
    def model_record(self) -> dict[str, Any]:
        """The content of ``model.json``: mode, network config, ensemble weights and each fold's files."""
        network_config = None
        first_network = self.folds[0].network
        if first_network is not None:
            network_config = first_network.config
        folds = []
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            folds.append({
                "network": names["network"] if fold.network is not None else None,
                "encoder": names["encoder"] if fold.encoder is not None else None,
                "biomarkers": names["biomarkers"] if fold.biomarkers is not None else None,
                "survival": names["survival"],
                "cindex": None if fold.cindex is None else float(fold.cindex),
                # Each fold's encoder is fitted on its own training rows, so a rare level (M1, PS 4) can give one
                # fold more clinical columns than another: the network's input width is recorded per fold.
                "n_clinical": None if fold.network is None else int(fold.network.config["n_clinical"]),
            })
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "mode": self.mode,
            "network": None if network_config is None else {"class": NETWORK_CLASS, "config": network_config},
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
        nested = {}
        if self.uses_biomarkers:
            if self.segmentation_bundle is None:
                raise ValueError(f"mode {self.mode!r} exports the Task 1 bundle with it; this predictor has none")
            load_bundle(self.segmentation_bundle, task=1)  # never nest a bundle that would not load
            nested[SEGMENTATION_FOLDER] = self.segmentation_bundle
        state_dicts, json_files = {}, {}
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            network_and_encoder_files(k, fold.network, fold.encoder, names, (record["network"] or {}).get("config"),
                                      state_dicts, json_files)
            if fold.biomarkers is not None:
                json_files[names["biomarkers"]] = fold.biomarkers.to_dict()
            json_files[names["survival"]] = fold.survival.to_dict()
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
            segmentation, settings = _segmentation_description(bundle, mode)
        folds = []
        for k, record in enumerate(fold_records):
            encoder = load_fold_encoder(bundle, record)
            survival = survival_model_from_dict(bundle.load_json(record["survival"]))
            scaler = None
            if record.get("biomarkers") is not None:
                scaler = BiomarkerScaler.from_dict(bundle.load_json(record["biomarkers"]),
                                                   source=str(bundle.file(record["biomarkers"])))
            network = load_fold_network(bundle, record, network_config, _FIX)
            n_inputs = network.feature_dim if network is not None else encoder.n_features
            n_inputs += scaler.n_features if scaler is not None else 0
            if survival.n_features != n_inputs:
                raise BundleError(f"{bundle.file(record['survival'])} expects {survival.n_features} features but "
                                  f"fold {k} produces {n_inputs}; {_FIX}")
            check_clinical_width(bundle, record, network, encoder, _FIX)
            folds.append(FoldModel(survival=survival, network=network, encoder=encoder, cindex=record.get("cindex"),
                                   biomarkers=scaler))
        segmenter = None
        if segmentation is not None:
            segmenter = Segmenter.from_bundle(segmentation, device=device)  # verified again, as a Task 1 bundle
        return cls(folds, weights, bundle.plan, mode, ensemble_rule=rule, device=device,
                   info=bundle.model.get("training", {}), segmentation=segmentation, segmenter=segmenter,
                   segmentation_settings=settings)


def tumour_cube(ct: sitk.Image, pet: sitk.Image, mask: sitk.Image | None, crop: TumourCrop,
                plan: BoxPlan) -> np.ndarray:
    """The ``fusion+biomarkers`` network input of a case, (3, z, y, x): :func:`~hecktor.biomarkers.tumour_crop_input`
    around the segmented tumour, or, when the mask holds no tumour, around the centre of the plan's box (localised as
    :func:`~hecktor.preprocessing.preprocess_box` does). Training (on out-of-fold masks) and
    :meth:`RiskPredictor.predict` both call it. NaN voxels are repaired as preprocessing repairs them."""
    ct, pet, _ = check_case(ct, pet, plan)
    fallback = None
    if tumour_centre(mask) is None:
        fallback = box_grid(localize_head_and_neck(pet, plan, reference=ct), plan).center()
    return tumour_crop_input(ct, pet, mask, crop, plan, fallback)


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


def _segmentation_description(bundle: Bundle, mode: str) -> tuple[Path, SegmentationSettings]:
    """The nested Task 1 bundle's folder and the segmentation settings of a biomarker-mode ``model.json``."""
    where = bundle.file("model.json")
    record = bundle.model.get("segmentation")
    if not isinstance(record, dict) or record.get("folder") != SEGMENTATION_FOLDER:
        raise BundleError(f"{where}: mode {mode!r} needs a 'segmentation' record naming the nested Task 1 bundle "
                          f"folder {SEGMENTATION_FOLDER!r}; {_FIX}")
    bundle.file(f"{SEGMENTATION_FOLDER}/manifest.json")  # the nested bundle must be listed in the outer manifest
    try:
        settings = SegmentationSettings.from_dict(record)
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{where}: bad 'segmentation' record ({error}); {_FIX}") from None
    if (mode == "fusion+biomarkers") != (settings.crop is not None):
        raise BundleError(f"{where}: mode {mode!r} {'needs' if settings.crop is None else 'has no'} tumour-centred "
                          f"cube ('segmentation.crop'); {_FIX}")
    return bundle.path / SEGMENTATION_FOLDER, settings
