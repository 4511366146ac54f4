"""Training the HECKTOR 2026 algorithm (:class:`~hecktor.hecktor2026.Hecktor2026Predictor`) from a Task 1
cross-validation's out-of-fold masks.

The sequence (:func:`train`, the ``train_hecktor2026.py train`` call)::

    the 2026 table (Task 2026/HECKTOR_2026_Training.csv: record, HPV status, RFS, relapse, T and N stage)
      -> the Task 1 run's out-of-fold masks (hecktor.training.biomarker_features, as Task 2's biomarker modes;
         patients outside the Task 1 cohort segmented by its bundle of all folds, nested in the 2026 bundle)
      -> per patient: PET biomarkers of its mask, staging measurements of its mask (and of its true label, for the
         ceiling), hecktor.staging
      -> per fold (folds stratified by relapse and centre): clinical encoder (HPV status included) and biomarker
         scaling fitted on the fold's training patients; a Cox model on [record, biomarkers] and its Breslow baseline
         survival (hecktor.rfs_time); the rules' cut-offs fitted to the fold's training masks (hecktor.staging.
         fit_cutoffs); multinomial logistic T and N stagers on the measurements (or [record, biomarkers, them])
      -> out of fold: the risk and the RFS time (C-index); the stages of the rules (AJCC's cut-offs), of the fitted
         cut-offs and of the learned stagers (balanced accuracy); the stager of each stage with the highest
         out-of-fold balanced accuracy is the bundle's (ties: rules, then fitted), with cut-offs fitted on every
         patient
      -> RUN_DIR: metrics.json, config.json, folds.json, oof.csv, measurements.json and the bundle in model/

:func:`export_bundle` copies ``RUN_DIR/model`` as the container's bundle (verified on reading and on writing).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hecktor.biomarkers import BiomarkerScaler
from hecktor.clinical import DEFAULT_NUMERIC, ClinicalEncoder
from hecktor.datasets import list_training_cases, read_training_table
from hecktor.errors import InputError
from hecktor.evaluate2026 import stage_scores
from hecktor.fold_ensemble import EnsembleFold, SegmentationSettings
from hecktor.folds import load_folds
from hecktor.hecktor2026 import STAGING_INPUTS, TASK, Hecktor2026Head, Hecktor2026Predictor
from hecktor.images import read_image
from hecktor.plan import BoxPlan
from hecktor.rfs_time import ensemble_rfs_time, fit_baseline_survival
from hecktor.staging import N_STAGES, STAGERS, T_STAGES, StageClassifier, StagingMeasurements, body_midline_x, \
    fit_cutoffs, measure_staging, parse_n_stage, parse_t_stage, stage_by_rules, staging_features
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.tasks import get_task
from hecktor.training.biomarker_features import attach_biomarkers
from hecktor.training.crossval import export_run, resolve_split, save_run
from hecktor.training.image_level import prepare_run_dir
from hecktor.training.prognosis_cohort import Cohort
from hecktor.training.prognosis_results import safe_cindex

__all__ = ["DEFAULT_FEATURES_2026", "CrossValidation2026", "Hecktor2026Config", "FoldOutcome", "StagingCohort",
           "cross_validate",
           "export_bundle", "load_staging_cohort", "stage_metrics", "train"]

SCRIPT = "training/train_hecktor2026.py train"
DEFAULT_FEATURES_2026 = ("Age", "Gender", "Tobacco Consumption", "Alcohol Consumption", "Performance Status",
                         "Treatment", "HPV Status")
"""The encoded record: the 2026 ``ehr.json`` without the centre (as Task 2) and with HPV status, an input in 2026."""


@dataclass
class Hecktor2026Config:
    """The settings of a 2026 training run (``config.json``).

    Attributes:
        n_folds, seed: the cross-validation (folds stratified by relapse and centre, :func:`hecktor.folds.make_folds`).
        survival: the per-fold Cox model (:func:`hecktor.survival_models.build_survival_model`); Task 2's
            ``biomarkers`` mode's by default (a ridge chosen by an inner cross-validation).
        clinical_features, numeric_features: the encoded record fields.
        stager_c: the inverse L2 strength of the learned stagers' logistic regressions.
        stager_inputs: what the learned stagers take (:data:`~hecktor.hecktor2026.STAGING_INPUTS`): the staging
            measurements (default: on the 300-case benchmark, three fold seeds, they staged T at 0.791, 0.801, 0.792
            balanced accuracy where the measurements joined to the record and the biomarkers gave 0.647, 0.690,
            0.688, 2026-12-07), or ``all``.
        suv_reference: what the biomarkers are measured against (:data:`hecktor.biomarkers.SUV_REFERENCES`).
        budget_share: the share of the case's time left that the nested segmentation may plan to use; the rest
            (staging and the Cox folds) takes well under a second.
        device: where missing out-of-fold masks are segmented.
        segmentation_bundle: the exported Task 1 bundle (set by :func:`train`).
    """

    n_folds: int = 5
    seed: int = 0
    survival: dict[str, Any] = field(default_factory=lambda: {"kind": "coxph", "alpha": "cv",
                                                               "standardize": False})
    clinical_features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES_2026))
    numeric_features: list[str] = field(default_factory=lambda: list(DEFAULT_NUMERIC))
    stager_c: float = 1.0
    stager_inputs: str = "measurements"
    suv_reference: str = "body"
    budget_share: float = 0.9
    device: str = "auto"
    progress: bool = True
    segmentation_bundle: str | None = None

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise InputError(f"--folds must be at least 2, got {self.n_folds}")
        if not self.stager_c > 0:
            raise InputError(f"--stager-c must be positive, got {self.stager_c}")
        if self.stager_inputs not in STAGING_INPUTS:
            raise InputError(f"--stager-inputs must be one of {', '.join(STAGING_INPUTS)}, got {self.stager_inputs!r}")
        build_survival_model(self.survival)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StagingCohort(Cohort):
    """A Task 2-like :class:`~hecktor.training.prognosis_cohort.Cohort` with the 2026 table's stages and each
    patient's staging measurements (of its out-of-fold mask, and of its true label where there is one)."""

    t_stages: list[str | None] = field(default_factory=list)
    n_stages: list[str | None] = field(default_factory=list)
    measurements: list[StagingMeasurements] = field(default_factory=list)
    true_measurements: list[StagingMeasurements] | None = None


def load_staging_cohort(root: str | Path) -> StagingCohort:
    """The patients of the 2026 table (``root/Task 2026``) in PatientID order, with their stages parsed
    (:func:`~hecktor.staging.parse_t_stage`: sub-stages to their stage, unknown to ``None``)."""
    rows = sorted(read_training_table(root, TASK), key=lambda row: str(row["PatientID"]))
    if not rows:
        raise InputError(f"{root}: the 2026 table holds no patients")
    return StagingCohort(
        patient_ids=[str(row["PatientID"]) for row in rows], rows=rows,
        time=np.asarray([float(row["RFS"]) for row in rows]), event=np.asarray([int(row["Relapse"]) for row in rows]),
        centres=[row.get("CenterID") for row in rows], plan=BoxPlan(), source=str(root),
        t_stages=[parse_t_stage(row.get("T-stage")) for row in rows],
        n_stages=[parse_n_stage(row.get("N-stage")) for row in rows])


def measure_cohort(cohort: StagingCohort, root: str | Path, masks: Mapping[str, str | Path], *,
                   progress: bool = True) -> StagingCohort:
    """Each patient's staging measurements of its mask (``masks``) and, where the case has one, of its true label,
    both with the body's midline found once in its CT."""
    cases = {case.patient_id: case for case in list_training_cases(root, TASK, require_label=False)}
    predicted, truth = [], []
    for pid in tqdm(cohort.patient_ids, desc="staging measurements", unit="case", leave=False, disable=not progress):
        case = cases[pid]
        ct = read_image(case.ct_path, "CT")
        midline = body_midline_x(ct)
        predicted.append(measure_staging(read_image(masks[pid], "segmentation"), ct, midline_x=midline))
        if case.label_path is not None:
            truth.append(measure_staging(read_image(case.label_path, "label"), ct, midline_x=midline))
    cohort.measurements = predicted
    cohort.true_measurements = truth if len(truth) == len(predicted) else None
    return cohort


# ------------------------------------------------------------------------------------------------------- folds
@dataclass
class FoldOutcome:
    """One fold: its ensemble fold and its validation patients' out-of-fold answers."""

    index: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    fold: EnsembleFold
    cindex: float
    oof_risk: np.ndarray
    oof_time: np.ndarray
    oof_t: list[str]
    oof_n: list[str]
    oof_fitted: list[tuple[str, str]]
    seconds: float


def _fit_stager(features: np.ndarray, stages: Sequence[str | None], train_idx: np.ndarray, c: float,
                what: str) -> StageClassifier:
    known = [i for i in train_idx if stages[i] is not None]
    if not known:
        raise InputError(f"no training patient of a fold has a known {what}; check the table's {what} column")
    return StageClassifier.fit(features[known], [stages[i] for i in known], c=c)


def run_fold(config: Hecktor2026Config, cohort: StagingCohort, index: int, train_idx: np.ndarray,
             val_idx: np.ndarray) -> FoldOutcome:
    """Fit fold ``index`` on ``train_idx`` and answer ``val_idx``."""
    started = time.perf_counter()
    encoder = ClinicalEncoder(config.clinical_features, config.numeric_features).fit(
        [cohort.rows[i] for i in train_idx])
    scaler = BiomarkerScaler().fit([cohort.biomarkers[i] for i in train_idx])
    features = np.concatenate([encoder.transform(cohort.rows), scaler.transform(cohort.biomarkers)], axis=1)
    survival = build_survival_model(config.survival).fit(features[train_idx], cohort.time[train_idx],
                                                         cohort.event[train_idx])
    baseline = fit_baseline_survival(survival.standardized_risk(features[train_idx]), survival.risk_std_,
                                     cohort.time[train_idx], cohort.event[train_idx])
    staging = np.stack([staging_features(m) for m in cohort.measurements])
    if config.stager_inputs == "all":
        staging = np.concatenate([features, staging], axis=1)
    t_stager = _fit_stager(staging, cohort.t_stages, train_idx, config.stager_c, "T-stage")
    n_stager = _fit_stager(staging, cohort.n_stages, train_idx, config.stager_c, "N-stage")
    risk = survival.standardized_risk(features[val_idx])
    cindex = safe_cindex(cohort.time[val_idx], cohort.event[val_idx], risk)
    head = Hecktor2026Head(survival, baseline, t_stager, n_stager, config.stager_inputs)
    fold = EnsembleFold(head, None, encoder, None if np.isnan(cindex) else cindex, scaler)
    t_prob = t_stager.probabilities_over(staging[val_idx], T_STAGES)
    n_prob = n_stager.probabilities_over(staging[val_idx], N_STAGES)
    cutoffs = fit_cutoffs([cohort.measurements[i] for i in train_idx], [cohort.t_stages[i] for i in train_idx],
                          [cohort.n_stages[i] for i in train_idx])
    return FoldOutcome(index, train_idx, val_idx, fold, cindex, risk, baseline.restricted_mean(risk),
                       [T_STAGES[j] for j in t_prob.argmax(axis=1)], [N_STAGES[j] for j in n_prob.argmax(axis=1)],
                       [stage_by_rules(cohort.measurements[i], cutoffs) for i in val_idx],
                       time.perf_counter() - started)


def stage_metrics(truth: Sequence[str | None], predicted: Sequence[str], stages: Sequence[str]) -> dict[str, Any]:
    """The challenge's stage scores (:func:`hecktor.evaluate2026.stage_scores`: balanced accuracy, recall of each
    stage present in ``truth``, confusion matrix in ``stages`` order) over the patients with a known stage."""
    pairs = [(t, p) for t, p in zip(truth, predicted) if t is not None]
    if not pairs:
        return {"balanced_accuracy": float("nan"), "recall": {},
                "confusion": np.zeros((len(stages), len(stages)), dtype=int).tolist(), "patients": 0}
    scores = stage_scores([t for t, _ in pairs], [p for _, p in pairs], stages)
    return {"balanced_accuracy": scores["balanced_accuracy"],
            "recall": {stage: value for stage, value in scores["recall"].items() if value is not None},
            "confusion": scores["confusion"], "patients": len(pairs)}


@dataclass
class CrossValidation2026:
    """A 2026 cross-validation: the predictor, its metrics, the folds and every patient's out-of-fold answers
    (standardised risk, RFS time, learned T and N stage, the stages of the fold's fitted cut-offs and of the rules on
    the out-of-fold mask)."""

    predictor: Hecktor2026Predictor
    metrics: dict[str, Any]
    folds: list[FoldOutcome]
    risk: np.ndarray
    rfs_time: np.ndarray
    learned: list[tuple[str, str]]
    fitted: list[tuple[str, str]]
    rules: list[tuple[str, str]]


def cross_validate(cohort: StagingCohort, config: Hecktor2026Config, split: Sequence[tuple[np.ndarray, np.ndarray]],
                   *, on_fold: Callable[[FoldOutcome], None] | None = None) -> CrossValidation2026:
    """Every fold, then the ensemble: weights from the folds' C-indices (Task 2's ``cindex_margin``), the stager of
    each stage chosen on the pooled out-of-fold balanced accuracy (ties: in :data:`~hecktor.staging.STAGERS` order,
    the rules first), the fitted cut-offs fitted again on every patient."""
    if cohort.biomarkers is None or len(cohort.measurements) != len(cohort):
        raise InputError("the cohort needs every patient's biomarkers and staging measurements first")
    outcomes = []
    for k, (train_idx, val_idx) in enumerate(split):
        outcomes.append(run_fold(config, cohort, k, np.asarray(train_idx), np.asarray(val_idx)))
        if on_fold is not None:
            on_fold(outcomes[-1])
    n = len(cohort)
    risk, rfs_time = np.full(n, np.nan), np.full(n, np.nan)
    learned_t, learned_n = [""] * n, [""] * n
    fitted: list[tuple[str, str]] = [("", "")] * n
    for outcome in outcomes:
        risk[outcome.val_idx], rfs_time[outcome.val_idx] = outcome.oof_risk, outcome.oof_time
        for j, i in enumerate(outcome.val_idx):
            learned_t[i], learned_n[i], fitted[i] = outcome.oof_t[j], outcome.oof_n[j], outcome.oof_fitted[j]
    rules = [stage_by_rules(m) for m in cohort.measurements]
    staging = {"t_rules_predicted_mask": stage_metrics(cohort.t_stages, [r[0] for r in rules], T_STAGES),
               "t_fitted": stage_metrics(cohort.t_stages, [f[0] for f in fitted], T_STAGES),
               "t_learned": stage_metrics(cohort.t_stages, learned_t, T_STAGES),
               "n_rules_predicted_mask": stage_metrics(cohort.n_stages, [r[1] for r in rules], N_STAGES),
               "n_fitted": stage_metrics(cohort.n_stages, [f[1] for f in fitted], N_STAGES),
               "n_learned": stage_metrics(cohort.n_stages, learned_n, N_STAGES)}
    if cohort.true_measurements is not None:
        truth = [stage_by_rules(m) for m in cohort.true_measurements]
        staging["t_rules_true_mask"] = stage_metrics(cohort.t_stages, [r[0] for r in truth], T_STAGES)
        staging["n_rules_true_mask"] = stage_metrics(cohort.n_stages, [r[1] for r in truth], N_STAGES)
    def oof_accuracy(key: str, stager: str) -> float:
        value = staging[f"{key}_{'rules_predicted_mask' if stager == 'rules' else stager}"]["balanced_accuracy"]
        return -1.0 if np.isnan(value) else value

    # max() keeps the first of equals: a tie goes to the stager earlier in STAGERS (the rules, then fitted).
    stagers = {stage: max(STAGERS, key=lambda stager: oof_accuracy(key, stager))
               for stage, key in (("T", "t"), ("N", "n"))}
    cutoffs = fit_cutoffs(cohort.measurements, cohort.t_stages, cohort.n_stages)
    cindices = [o.cindex for o in outcomes]
    if any(np.isnan(c) for c in cindices):
        raise InputError("a fold's validation patients hold no comparable pair, so it has no C-index to weight it "
                         "by; use fewer folds (--folds) or more patients")
    weights = ensemble_weights(cindices)
    metrics = {
        "patients": n, "relapses": cohort.n_events, "n_folds": len(outcomes),
        "cindex_folds": cindices, "cindex_mean": float(np.mean(cindices)),
        "cindex_pooled_oof_risk": safe_cindex(cohort.time, cohort.event, risk),
        "cindex_pooled_oof_rfs_time": safe_cindex(cohort.time, cohort.event, -rfs_time),
        "cindex_folds_rfs_time": [safe_cindex(cohort.time[o.val_idx], cohort.event[o.val_idx], -o.oof_time)
                                  for o in outcomes],
        # The bundle's own map from risk to days (every fold's RMST, weighted) on every out-of-fold risk: one
        # strictly decreasing function, so the pooled C-index is the risk's (each fold's own map above mixes scales).
        "cindex_pooled_oof_rfs_time_ensemble_map": safe_cindex(cohort.time, cohort.event, -np.asarray(
            [ensemble_rfs_time([o.fold.head.baseline for o in outcomes], weights, r) for r in risk])),
        "ensemble_weights": weights.tolist(), "stagers": stagers, "staging": staging,
        "staging_cutoffs": cutoffs.to_dict(),
        "rfs_time": "restricted mean survival time up to each fold's last training follow-up (hecktor.rfs_time)",
    }
    settings = SegmentationSettings(budget_share=config.budget_share, suv_reference=config.suv_reference)
    predictor = Hecktor2026Predictor([o.fold for o in outcomes], weights, cohort.plan or BoxPlan(), stagers,
                                     device="cpu", info={"metrics": metrics, "config": config.to_dict()},
                                     cutoffs=cutoffs,
                                     segmentation=config.segmentation_bundle, segmentation_settings=settings)
    return CrossValidation2026(predictor, metrics, outcomes, risk, rfs_time, list(zip(learned_t, learned_n)), fitted,
                               rules)


# ------------------------------------------------------------------------------------------------------- train
def train(config: Hecktor2026Config, run_dir: str | Path, *, data: str | Path, segmentation: str | Path,
          split_file: str | Path | None = None, overwrite: bool = False,
          echo: Callable[[str], None] = print) -> tuple[Hecktor2026Predictor, dict[str, Any]]:
    """Load the 2026 table, measure every patient's out-of-fold mask, cross-validate, save the run.

    Args:
        config: the run's settings.
        run_dir: the run folder (``metrics.json``, ``config.json``, ``folds.json``, ``oof.csv``,
            ``measurements.json``, ``segmentation_bundle/`` and the bundle in ``model/``).
        data: a HECKTOR folder holding ``Task 2026/`` (images, labels, the 2026 table).
        segmentation: a Task 1 cross-validation run (``train_segmentation.py --fold all``) over the same patients.
        split_file: the ``folds.json`` of an earlier run, to compare on the same folds.
        overwrite: replace an earlier run in ``run_dir``.
        echo: where the progress lines go.
    """
    started = time.perf_counter()
    prepare_run_dir(run_dir, overwrite)
    cohort = load_staging_cohort(data)
    echo(f"HECKTOR 2026: {len(cohort)} patients, {cohort.n_events} relapses, {config.n_folds} folds ({data})")
    config.segmentation_bundle = str(attach_biomarkers(
        cohort, data, segmentation, run_dir, task=TASK, suv_reference=config.suv_reference, device=config.device,
        progress=config.progress, echo=echo))
    masks = _mask_paths(segmentation, run_dir, cohort.patient_ids)
    measure_cohort(cohort, data, masks, progress=config.progress)
    split = load_folds(split_file, cohort.patient_ids) if split_file is not None else None
    split = resolve_split(split, cohort.event, cohort.centres, config)

    def report(outcome: FoldOutcome) -> None:
        echo(f"fold {outcome.index}: C-index {outcome.cindex:.3f} ({len(outcome.val_idx)} patients, "
             f"{int(cohort.event[outcome.val_idx].sum())} relapses, {outcome.seconds:.1f} s)")

    result = cross_validate(cohort, config, split, on_fold=report)
    predictor, metrics = result.predictor, result.metrics
    metrics["train_seconds"] = time.perf_counter() - started
    truth = [stage_by_rules(m) for m in cohort.true_measurements] if cohort.true_measurements else None

    def oof_row(i: int, pid: str, fold: int) -> str:
        (t_rule, n_rule), (t_fit, n_fit), (t_learned, n_learned) = result.rules[i], result.fitted[i], result.learned[i]
        true_rules = ",".join(truth[i]) if truth is not None else ","
        return (f"{pid},{fold},{result.risk[i]:.6f},{result.rfs_time[i]:.1f},{cohort.t_stages[i] or ''},{t_rule},"
                f"{t_fit},{t_learned},{cohort.n_stages[i] or ''},{n_rule},{n_fit},{n_learned},{true_rules}")

    save_run(run_dir, metrics=metrics, config=config, split=split, patient_ids=cohort.patient_ids,
             oof_header="PatientID,fold,risk,rfs_time_days,T-stage,T_rules,T_fitted,T_learned,N-stage,N_rules,"
                        "N_fitted,N_learned,T_rules_true_mask,N_rules_true_mask",
             oof_row=oof_row, predictor=predictor)
    (Path(run_dir) / "measurements.json").write_text(json.dumps(
        {pid: {"predicted_mask": m.to_dict(),
               **({"true_mask": cohort.true_measurements[i].to_dict()} if cohort.true_measurements else {})}
         for i, (pid, m) in enumerate(zip(cohort.patient_ids, cohort.measurements))}, indent=1) + "\n")
    staging = metrics["staging"]

    def stagers_line(key: str) -> str:
        return ", ".join(f"{name} {staging[f'{key}_{entry}']['balanced_accuracy']:.3f}" for name, entry in
                         (("rules", "rules_predicted_mask"), ("fitted", "fitted"), ("learned", "learned")))

    echo(f"C-index: risk {metrics['cindex_pooled_oof_risk']:.3f}, RFS time {metrics['cindex_pooled_oof_rfs_time']:.3f}"
         f" (pooled out-of-fold); T balanced accuracy: {stagers_line('t')}; N: {stagers_line('n')}; the bundle stages "
         f"T by {metrics['stagers']['T']}, N by {metrics['stagers']['N']}")
    echo(f"wrote {Path(run_dir) / 'metrics.json'} and the bundle in {Path(run_dir) / 'model'}")
    return predictor, metrics


def _mask_paths(segmentation: str | Path, run_dir: str | Path, patient_ids: Sequence[str]) -> dict[str, Path]:
    """Each patient's mask as :func:`~hecktor.training.biomarker_features.attach_biomarkers` left it: the Task 1 run's
    out-of-fold mask, else the one its bundle made in ``RUN_DIR/masks``."""
    from hecktor.training.biomarker_features import write_validation_masks

    masks = dict(write_validation_masks(segmentation, progress=False))
    for pid in patient_ids:
        if pid not in masks:
            masks[pid] = Path(run_dir) / "masks" / f"{pid}.nii.gz"
    return masks


def export_bundle(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Hecktor2026Predictor:
    """The run's bundle (``RUN_DIR/model``) copied to ``out_dir``, verified on reading and on writing."""
    return export_run(run_dir, out_dir, Hecktor2026Predictor, get_task(TASK).label, SCRIPT, overwrite=overwrite)
