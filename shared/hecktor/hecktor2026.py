"""HECKTOR 2026: CT, PET and the clinical record in; the GTVp/GTVn mask, the T and N stage and the RFS time out.

:class:`Hecktor2026Predictor` is a :class:`~hecktor.fold_ensemble.FoldEnsemble` in ``biomarkers`` mode (Task 2's
path, described there): the nested Task 1 model segments the case within its share of the budget, the PET biomarkers
of the predicted mask and the encoded record (``HPV Status`` included: an input in 2026) feed each fold. Each fold's
head, :class:`Hecktor2026Head`, holds

* the fold's Cox model (its standardised risk is the fold's score, averaged over the folds as Task 2 does) and its
  Breslow baseline survival (:class:`~hecktor.rfs_time.BaselineSurvival`): the ensemble's risk becomes the RFS time,
  the restricted mean survival time (:func:`~hecktor.rfs_time.ensemble_rfs_time`, why: :mod:`hecktor.rfs_time`);
* the fold's learned T and N stagers (:class:`~hecktor.staging.StageClassifier`) on the staging measurements of the
  mask (:func:`~hecktor.staging.staging_features`; with ``staging_inputs`` ``all``, joined after the fold's features:
  the encoded record and the scaled biomarkers).

Which stager answers each stage (``rules``: AJCC's cut-offs; ``fitted``: the rules with the cut-offs fitted to the
training patients' out-of-fold masks, ``model.json``'s ``staging_cutoffs``; ``learned``) is the bundle's choice, made
by cross-validation (``model.json``'s ``staging``). The learned stage is the argmax of the folds' weighted mean
probabilities.

The bundle (task ``2026`` in :mod:`hecktor.tasks`, its plan a :class:`~hecktor.plan.BoxPlan` as Task 2's) nests the Task 1 bundle in ``segmentation/`` as Task 2's biomarker
bundles do. Every number comes from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.biomarkers import Biomarkers, no_tumour_biomarkers
from hecktor.budget import PredictionReport, TimeBudget
from hecktor.bundle import Bundle, load_bundle, write_bundle
from hecktor.case import CaseInput
from hecktor.clinical import CheckedRecord
from hecktor.ensemble import check_fold_records, check_format, check_weights, load_fold_encoder, load_fold_scaler, \
    nested_segmentation, segmentation_description
from hecktor.errors import BundleError, HecktorError, InputError
from hecktor.fold_ensemble import EnsembleFold, FoldEnsemble, SegmentationSettings
from hecktor.plan import BoxPlan
from hecktor.rfs_time import BaselineSurvival, ensemble_rfs_time
from hecktor.segment import Segmenter, blank_mask
from hecktor.staging import AJCC_CUTOFFS, FEATURE_VERSIONS, N_STAGES, STAGERS, T_STAGES, StageClassifier, \
    StagingCutoffs, StagingMeasurements, measure_staging, stage_by_rules, staging_features
from hecktor.prognosis import RiskHead
from hecktor.survival_models import survival_model_from_dict

__all__ = ["TASK", "MODEL_FORMAT", "Hecktor2026Answer", "Hecktor2026Head", "Hecktor2026Predictor",
           "Hecktor2026Report", "fold_file_names"]

TASK = 2026
MODEL_FORMAT = "hecktor-2026"
MODEL_FORMAT_VERSION = 1
MODE = "biomarkers"
STAGING_INPUTS = ("measurements", "all")
"""What the learned stagers take: the staging measurements, or the fold's features (record, biomarkers) and them."""
_FIX = "re-export the bundle with training/train_hecktor2026.py"


def fold_file_names(index: int) -> dict[str, str]:
    """Bundle file names of fold ``index``."""
    return {"encoder": f"fold_{index}_encoder.json", "biomarkers": f"fold_{index}_biomarkers.json",
            "survival": f"fold_{index}_survival.json", "baseline": f"fold_{index}_baseline.json",
            "t_stage": f"fold_{index}_t_stage.json", "n_stage": f"fold_{index}_n_stage.json"}


@dataclass
class Hecktor2026Answer:
    """Everything the 2026 container writes for a case.

    Attributes:
        mask: uint8 label map on the CT's exact grid (0 background, 1 GTVp, 2 GTVn).
        t_stage: ``"T1"`` .. ``"T4"``.
        n_stage: ``"N0"`` .. ``"N3"``.
        rfs_days: the predicted recurrence-free-survival time in days (longer = later relapse).
    """

    mask: sitk.Image
    t_stage: str
    n_stage: str
    rfs_days: float


@dataclass
class Hecktor2026Report(PredictionReport):
    """:class:`~hecktor.budget.PredictionReport` of one 2026 prediction, with what decided the answers.

    Attributes:
        risk: the ensemble's standardised risk (the RFS time is a decreasing function of it).
        rfs_days: the answered RFS time.
        measurements: the staging measurements of the mask.
        stagers: which stager answered each stage (``{"T": "learned", "N": "rules"}``).
        t_stage, n_stage: the answered stages.
    """

    risk: float | None = None
    rfs_days: float | None = None
    measurements: dict[str, Any] | None = None
    stagers: dict[str, str] | None = None
    t_stage: str | None = None
    n_stage: str | None = None

    @property
    def table_values(self) -> dict[str, float]:
        """Extra columns for ``hecktor-predict``'s table: the risk behind the time."""
        return {} if self.risk is None else {"risk": self.risk}

    def summary(self) -> str:
        if self.t_stage is None:
            return super().summary()
        return (f"{self.t_stage} ({self.stagers['T']}), {self.n_stage} ({self.stagers['N']}), RFS "
                f"{self.rfs_days:.0f} days (risk {self.risk:+.3f}); {super().summary()}")


@dataclass(frozen=True)
class Hecktor2026Head(RiskHead):
    """One fold's heads: Task 2's :class:`~hecktor.prognosis.RiskHead` (the Cox model) with its baseline survival,
    and the learned T and N stagers.

    The fold ensemble scores the fold by the Cox model's standardised risk (:meth:`score`); the stagers take the
    staging measurements, after the fold's features when ``staging_inputs`` is ``all``
    (:meth:`stage_probabilities`).
    """

    baseline: BaselineSurvival
    t_stage: StageClassifier
    n_stage: StageClassifier
    staging_inputs: str = "measurements"

    def __post_init__(self) -> None:
        if self.staging_inputs not in STAGING_INPUTS:
            raise ValueError(f"staging_inputs must be one of {STAGING_INPUTS}, got {self.staging_inputs!r}")
        if self.t_stage.features_version != self.n_stage.features_version:
            raise ValueError("the T and N stagers of a fold must take the same staging features version")

    def staging_width(self, n_fold_features: int) -> int:
        """The width of the stagers' input for a fold making ``n_fold_features`` features."""
        return len(FEATURE_VERSIONS[self.t_stage.features_version]) + \
            (n_fold_features if self.staging_inputs == "all" else 0)

    def stage_probabilities(self, features: np.ndarray, measurements: StagingMeasurements) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
        """P(T1..T4) and P(N0..N3) of one case's fold features ``(1, p)`` and measurements (in the staging features'
        version the stagers were trained on: a bundle exported before version 2 stages as it did)."""
        joined = staging_features(measurements, self.t_stage.features_version)[None, :]
        if self.staging_inputs == "all":
            joined = np.concatenate([features, joined], axis=1)
        return (self.t_stage.probabilities_over(joined, T_STAGES)[0],
                self.n_stage.probabilities_over(joined, N_STAGES)[0])


class Hecktor2026Predictor(FoldEnsemble):
    """The HECKTOR 2026 algorithm: a ``biomarkers``-mode fold ensemble whose folds hold a :class:`Hecktor2026Head`.

    Args:
        folds: one :class:`~hecktor.fold_ensemble.EnsembleFold` per fold (encoder, biomarker scaling, a
            :class:`Hecktor2026Head`).
        weights: ensemble weight of each fold.
        plan: the plan of the training run (its padding values are used to repair odd images).
        stagers: ``{"T": "rules"|"fitted"|"learned", "N": ...}``, what cross-validation preferred.
        cutoffs: the ``fitted`` stager's cut-offs (:func:`hecktor.staging.fit_cutoffs` on every training patient's
            out-of-fold mask); AJCC's by default.
        segmentation, segmenter, segmentation_settings, device, info: as
            :class:`~hecktor.fold_ensemble.FoldEnsemble`'s.

    Attributes:
        last_report: :class:`Hecktor2026Report` of the last :meth:`predict_case`.
    """

    score_name = "risk"

    def __init__(self, folds: Sequence[EnsembleFold], weights: Sequence[float], plan: BoxPlan,
                 stagers: Mapping[str, str], device: str | torch.device | None = None,
                 info: Mapping[str, Any] | None = None, *, cutoffs: StagingCutoffs = AJCC_CUTOFFS,
                 segmentation: str | Path | None = None,
                 segmenter: Segmenter | None = None,
                 segmentation_settings: SegmentationSettings | None = None) -> None:
        super().__init__(folds, weights, plan, MODE, device, info, modes=(MODE,), segmentation=segmentation,
                         segmenter=segmenter, segmentation_settings=segmentation_settings)
        if set(stagers) != {"T", "N"} or any(v not in STAGERS for v in stagers.values()):
            raise ValueError(f"stagers must map 'T' and 'N' to one of {STAGERS}, got {dict(stagers)}")
        self.stagers = dict(stagers)
        self.cutoffs = cutoffs
        self.last_mask: sitk.Image | None = None
        self.last_report = Hecktor2026Report()
        self._strict = False  # the case being predicted was read strictly: a failed segmentation is an error

    # ------------------------------------------------------------------------------------------------ prediction
    def predict_case(self, case: CaseInput, *, budget: TimeBudget | None = None,
                     segmentation: sitk.Image | None = None, **options: Any) -> Hecktor2026Answer:
        """The four answers of a case read by :func:`hecktor.case.read_case` (the container's call); ``segmentation``
        is the case's mask made already by this bundle's nested Task 1 model (as in
        :meth:`~hecktor.fold_ensemble.FoldEnsemble.predict_score`), which then does not run.

        Without a usable CT there is no grid for the mask: the CT's problem is raised as an :class:`InputError`. A
        flat placeholder image gives a blank mask, the stages of an empty mask and the RFS time of the record
        alone; a dropped PET is segmented from the CT alone (as Task 1 does), its biomarkers taking their
        no-tumour values.
        """
        if case.ct is None:
            raise InputError(case.problems.get("CT", "no usable CT in the case"))
        self._strict = case.strict
        record = CheckedRecord(case.ehr) if case.ehr is not None else None
        risk = self.predict_score(case.ct, case.pet, record, budget=budget, segmentation=segmentation)
        base = self.last_report
        started = time.perf_counter()
        mask = self.last_mask if self.last_mask is not None else blank_mask(case.ct)
        measurements = measure_staging(mask, case.ct)
        t_stage, n_stage = self._stages(record, measurements)
        used = sorted(self.last_fold_scores)
        weights = self._weights_of(used)
        rfs_days = ensemble_rfs_time([self.folds[k].head.baseline for k in used], weights, risk)
        report = self.last_report = Hecktor2026Report(
            **{f: getattr(base, f) for f in PredictionReport.__dataclass_fields__}, risk=risk, rfs_days=rfs_days,
            measurements=measurements.to_dict(), stagers=dict(self.stagers), t_stage=t_stage, n_stage=n_stage)
        report.warnings[:0] = case.warnings
        report.timings["staging_s"] = time.perf_counter() - started
        return Hecktor2026Answer(mask, t_stage, n_stage, rfs_days)

    def predict(self, ct: sitk.Image | None, pet: sitk.Image | None, ehr: Mapping[str, Any] | CheckedRecord | None,
                *, folds: Sequence[int] | None = None, budget: TimeBudget | None = None) -> float:
        """The ensemble's standardised risk of one case (:meth:`predict_case` gives the four answers)."""
        return self.predict_score(ct, pet, ehr, folds=folds, budget=budget)

    def _stages(self, record: CheckedRecord | None, measurements: StagingMeasurements) -> tuple[str, str]:
        """The T and N stage: the rules' (AJCC's or the fitted cut-offs), or the folds' weighted mean probabilities'
        argmax, as the bundle chose."""
        by_rules = {"rules": stage_by_rules(measurements), "fitted": stage_by_rules(measurements, self.cutoffs)}
        if "learned" not in self.stagers.values():
            return by_rules[self.stagers["T"]][0], by_rules[self.stagers["N"]][1]
        values = record.record if record is not None else {}
        markers = self.last_biomarkers
        used = sorted(self.last_fold_scores)
        weights = self._weights_of(used)
        t_prob, n_prob = np.zeros(len(T_STAGES)), np.zeros(len(N_STAGES))
        for weight, k in zip(weights, used):
            fold = self.folds[k]
            features = fold.features(None, fold.encoder.transform([values]), [markers])
            t, n = fold.head.stage_probabilities(features, measurements)
            t_prob += weight * t
            n_prob += weight * n
        t_stage = T_STAGES[int(np.argmax(t_prob))] if self.stagers["T"] == "learned" else by_rules[self.stagers["T"]][0]
        n_stage = N_STAGES[int(np.argmax(n_prob))] if self.stagers["N"] == "learned" else by_rules[self.stagers["N"]][1]
        return t_stage, n_stage

    def _segment(self, ct: sitk.Image | None, pet: sitk.Image | None, placeholder: bool, budget: TimeBudget | None,
                 report: PredictionReport, clock, *given: Any) -> tuple[Biomarkers, sitk.Image | None]:
        """As :meth:`FoldEnsemble._segment <hecktor.fold_ensemble.FoldEnsemble._segment>`, keeping the mask
        (:attr:`last_mask`) and segmenting a case without a usable PET from its CT alone, as Task 1 does."""
        self.last_mask = None
        if placeholder or ct is None or pet is not None:
            markers, mask = super()._segment(ct, pet, placeholder, budget, report, clock, *given)
            self.last_mask = mask
            return markers, mask
        started = clock()
        try:
            if given and given[0] is not None:
                mask = given[0]  # made already by this nested model (predict_case's ``segmentation``)
            else:
                mask = self.segmenter.predict(ct, None, tta=self.segmentation_settings.tta,
                                              budget=self.segmentation_budget(budget))
                self.last_segmentation_report = self.segmenter.last_report
                report.warnings.extend(f"segmentation: {line}" for line in self.segmenter.last_report.warnings)
        except (HecktorError, RuntimeError, MemoryError) as error:
            if getattr(self, "_strict", False):
                raise
            detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            report.warnings.append(f"segmentation from the CT alone failed ({detail}): the mask is all background")
            mask = None
        report.timings["segmentation_s"] = clock() - started
        self.last_mask = mask
        markers = no_tumour_biomarkers("no usable PET, the biomarkers cannot be measured")
        report.warnings.extend(markers.warnings)
        return markers, mask

    # --------------------------------------------------------------------------------------------------- bundles
    def model_record(self) -> dict[str, Any]:
        """The content of ``model.json``."""
        folds = []
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            folds.append({**names, "cindex": None if fold.validation_score is None else float(fold.validation_score)})
        return {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "mode": MODE,
                "ensemble": {"rule": "cindex_margin", "weights": [float(w) for w in self.weights]},
                "staging": dict(self.stagers), "staging_inputs": self.folds[0].head.staging_inputs,
                "staging_cutoffs": self.cutoffs.to_dict(),
                "rfs_time": "restricted mean survival time (hecktor.rfs_time)",
                "folds": folds, "segmentation": self.segmentation_settings.to_dict(), "training": self.info}

    def to_bundle(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write a verified 2026 bundle: plan, ``model.json``, per fold the encoder, the biomarker scaling, the Cox
        model, its baseline survival and the two stage classifiers (JSON, no pickle), and the Task 1 bundle in
        ``segmentation/``. ``out_dir`` must be absent, empty or (with ``overwrite``) an earlier bundle."""
        nested = nested_segmentation(self)
        json_files = {}
        for k, fold in enumerate(self.folds):
            names = fold_file_names(k)
            json_files[names["encoder"]] = fold.encoder.to_dict()
            json_files[names["biomarkers"]] = fold.biomarkers.to_dict()
            json_files[names["survival"]] = fold.head.survival.to_dict()
            json_files[names["baseline"]] = fold.head.baseline.to_dict()
            json_files[names["t_stage"]] = fold.head.t_stage.to_dict()
            json_files[names["n_stage"]] = fold.head.n_stage.to_dict()
        return write_bundle(out_dir, task=TASK, plan=self.plan, model=self.model_record(), json_files=json_files,
                            bundles=nested, overwrite=overwrite)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str | torch.device | None = None) -> "Hecktor2026Predictor":
        """Load a verified 2026 bundle; anything that does not fit together is a :class:`BundleError`."""
        bundle = load_bundle(path, task=TASK)
        weights, records, stagers, segmentation, settings = _model_description(bundle)
        inputs = bundle.model.get("staging_inputs", "measurements")
        if inputs not in STAGING_INPUTS:
            raise BundleError(f"{bundle.file('model.json')}: staging_inputs must be one of {STAGING_INPUTS}; {_FIX}")
        folds = []
        for k, record in enumerate(records):
            encoder = load_fold_encoder(bundle, record)
            scaler = load_fold_scaler(bundle, record)
            survival = survival_model_from_dict(bundle.load_json(record["survival"]))
            baseline = BaselineSurvival.from_dict(bundle.load_json(record["baseline"]),
                                                  source=str(bundle.file(record["baseline"])))
            t_stage, n_stage = (StageClassifier.from_dict(bundle.load_json(record[key]), str(bundle.file(record[key])))
                                for key in ("t_stage", "n_stage"))
            if t_stage.features_version != n_stage.features_version:
                raise BundleError(f"{bundle.file(record['t_stage'])}: fold {k}'s T and N stagers take different "
                                  f"staging features versions; {_FIX}")
            head = Hecktor2026Head(survival, baseline, t_stage, n_stage, inputs)
            fold = EnsembleFold(head, None, encoder, record.get("cindex"), scaler)
            width = head.staging_width(fold.n_features)
            if survival.n_features != fold.n_features or t_stage.n_features != width or n_stage.n_features != width:
                raise BundleError(f"{bundle.file(record['survival'])}: fold {k}'s Cox model and stagers do not take "
                                  f"the {fold.n_features} features its encoder and biomarkers make; {_FIX}")
            folds.append(fold)
        segmenter = Segmenter.from_bundle(segmentation, device=device)
        # A bundle written before the fitted stager existed stages by AJCC's cut-offs.
        cutoffs = StagingCutoffs.from_dict(bundle.model["staging_cutoffs"], f"{bundle.file('model.json')} "
                                           "staging_cutoffs") if "staging_cutoffs" in bundle.model else AJCC_CUTOFFS
        return cls(folds, weights, bundle.plan, stagers, device=device, info=bundle.model.get("training", {}),
                   cutoffs=cutoffs, segmentation=segmentation, segmenter=segmenter, segmentation_settings=settings)


def _model_description(bundle: Bundle) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, str], Path,
                                                 SegmentationSettings]:
    """Ensemble weights, fold records, stager choice, the nested Task 1 bundle and the segmentation settings from
    ``model.json``, checked."""
    model = bundle.model
    where = bundle.file("model.json")
    check_format(bundle, MODEL_FORMAT, MODEL_FORMAT_VERSION, _FIX)
    folds = check_fold_records(bundle, _FIX)
    try:
        weights = np.asarray((model.get("ensemble") or {}).get("weights"), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise BundleError(f"{where}: ensemble weights must be numbers; {_FIX}") from None
    check_weights(bundle, weights, len(folds), _FIX)
    stagers = model.get("staging")
    if not isinstance(stagers, dict) or set(stagers) != {"T", "N"} or any(v not in STAGERS for v in stagers.values()):
        raise BundleError(f"{where}: 'staging' must map T and N to one of {STAGERS}; {_FIX}")
    for k, record in enumerate(folds):
        for key, name in fold_file_names(k).items():
            if record.get(key) != name:
                raise BundleError(f"{where}: fold {k} must name {key} file {name!r}; {_FIX}")
            bundle.file(name)
    segmentation, settings = segmentation_description(bundle, MODE, _FIX)
    return weights, folds, dict(stagers), segmentation, settings
