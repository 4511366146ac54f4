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

This module holds the fold training and the run; the rest of the trainer is beside it: the settings
(:mod:`hecktor.training.prognosis_config`), the patients (:mod:`hecktor.training.prognosis_cohort`), the biomarker
modes' Task 1 masks and features (:mod:`hecktor.training.biomarker_features`), the folds' results, the run's metrics
and the summary over repeats (:mod:`hecktor.training.prognosis_results`), and what Task 3's trainer shares with this
one (:mod:`hecktor.training.image_level`, :mod:`hecktor.training.crossval`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from hecktor.errors import InputError
from hecktor.fold_ensemble import EnsembleFold
from hecktor.folds import load_folds
from hecktor.networks.fused import FusedFeatureExtractor
from hecktor.outputs import write_text_atomic
from hecktor.plan import BoxPlan
from hecktor.prognosis import BIOMARKER_MODES, RiskHead, RiskPredictor, network_mode
from hecktor.survival import EventBalancedBatchSampler, cox_partial_likelihood_loss, ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.suv_table import as_suv_table
from hecktor.tasks import get_task
from hecktor.training.biomarker_features import attach_biomarkers
from hecktor.training.crossval import (
    Batches,
    check_data_source,
    export_run,
    fit_encoder,
    fit_epochs,
    forward_all,
    report_repairs,
    restart_unfinished_run,
    resolve_split,
    run_folds,
    split_for_early_stopping,
)
from hecktor.training.crossval import json_safe as _json_safe
from hecktor.training.image_level import box_cache, prepare_run_dir
from hecktor.training.prognosis_cohort import Cohort, load_csv_cohort, load_hecktor_cohort
from hecktor.training.prognosis_config import TrainingConfig
from hecktor.training.prognosis_results import CrossValidationResult, FoldResult, safe_cindex, summarize_repeats
from hecktor.training.run_log import RunLog


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
        score = safe_cindex(time_[held_idx], event[held_idx], held_risk)
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
        head_cindex = safe_cindex(cohort.time[val_idx], cohort.event[val_idx], head_risk[val_idx])
        network.cpu()
    if scaler is not None:  # the fold's survival features: fused features or the record, then the biomarkers
        features = np.concatenate([features, scaler.transform(cohort.biomarkers).astype(np.float64)], axis=1)
    survival = build_survival_model(config.survival).fit(features[train_idx], cohort.time[train_idx], cohort.event[train_idx])
    oof = survival.standardized_risk(features[val_idx])
    cindex = safe_cindex(cohort.time[val_idx], cohort.event[val_idx], oof)
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
            (:meth:`~hecktor.training.prognosis_results.CrossValidationResult.save`); ``None`` keeps everything in
            memory.
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
    noisy C-index; ``metrics.json`` then adds the mean and spread over the repeats
    (:func:`~hecktor.training.prognosis_results.summarize_repeats`). The run folder (folds, OOF risks, training logs,
    the fold ensemble in ``model/``) is the first repeat's; the others are kept in memory and only their metrics are
    written.

    Args:
        config: the run's settings.
        run_dir: the run folder (:meth:`~hecktor.training.prognosis_results.CrossValidationResult.save`).
        data: a HECKTOR folder holding ``Task 2/`` (images and its CSV); or
        csv: clinical mode only: a CSV with the HECKTOR 2025 columns.
        plan: the preprocessing plan of the images (default ``BoxPlan()``).
        cache_dir: the preprocessing cache root (default ``$HECKTOR_CACHE`` or ``~/.cache/hecktor``).
        split_file: the ``folds.json`` of an earlier run, so that modes compare on the same folds.
        overwrite: replace an earlier run in ``run_dir``.
        echo: where the progress lines go (one per fold, and a summary).
        repeats: cross-validations with successive fold seeds (see above).
        segmentation: biomarker modes: a Task 1 cross-validation run (``train_segmentation.py --fold all``). Its
            out-of-fold masks (written by :func:`~hecktor.training.biomarker_features.write_validation_masks` where
            absent) give the training patients' biomarkers; its folds (best checkpoints) are exported to
            ``RUN_DIR/segmentation_bundle`` and nested in the Task 2 bundle. Task 2 patients outside the Task 1 cohort
            are segmented by that bundle.

    Returns:
        the first repeat's result.
    """
    if repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {repeats}")
    if repeats > 1 and split_file is not None:
        raise InputError("--repeats draws a new split for every seed, --folds-file fixes one split; give only one")
    if config.uses_biomarkers and segmentation is None:
        raise InputError(f"mode {config.mode!r} needs --segmentation RUN_DIR, a Task 1 cross-validation run "
                         "(training/train_segmentation.py --fold all) whose out-of-fold masks train it")
    if segmentation is not None and not config.uses_biomarkers:
        raise InputError(f"--segmentation is for the biomarker modes ({', '.join(BIOMARKER_MODES)}), not "
                         f"{config.mode!r}")
    suv_table = as_suv_table(config.suv_table)  # a bad row stops the run before anything is read
    check_data_source(config.mode, data, csv, get_task(2).training_folder, echo=echo,  # the data check first
                      suv_table=suv_table)
    restart_unfinished_run(run_dir, echo)  # a killed run's fold folders do not block its re-run
    prepare_run_dir(run_dir, overwrite)  # before hours of preprocessing, not after
    if csv is not None:
        cohort = load_csv_cohort(csv)
    else:
        cohort = load_hecktor_cohort(data, plan or BoxPlan(), with_images=config.mode in ("fusion", "imaging"),
                                     cache_dir=cache_dir, progress=config.progress, workers=config.workers,
                                     suv_table=suv_table)
        if cohort.images is not None:  # what preprocessing repaired, shown once and kept in the run folder
            report_repairs(box_cache(cache_dir, cohort.plan), cohort.patient_ids, run_dir, echo)
    if config.uses_biomarkers:  # the sequence Task 3's biomarkers mode runs too
        config.segmentation_bundle = str(attach_biomarkers(
            cohort, data, segmentation, run_dir, task=2, crop=config.tumour_crop(cohort.plan or BoxPlan()),
            suv_reference=config.suv_reference, device=config.device, progress=config.progress, suv_table=suv_table,
            echo=echo))
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


# ----------------------------------------------------------------------------------------------------------- export
def export_bundle(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> RiskPredictor:
    """Copy a run's verified fold ensemble (``RUN_DIR/model``) to ``out_dir`` as a Task 2 bundle and return it as
    loaded from there (manifest, SHA-256 and plan digest checked twice: on reading the run and on reading the copy).

    Raises:
        InputError: ``run_dir`` is not a finished run, or ``out_dir`` is the run's own model folder.
    """
    return export_run(run_dir, out_dir, RiskPredictor, "Task 2", "training/train_prognosis.py", overwrite=overwrite)
