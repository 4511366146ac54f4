"""Benchmark of the Task 2 risk model: baselines, fusion and the biomarker modes (seed Table 3 analogue), the clinical
baseline on real data, and per-case inference time of the 5-fold ensembles.

Parts (``--parts``, default all four):

* ``a``: on a synthetic cohort with a known hazard (``hecktor.synthetic``), 5-fold cross-validation of every mode on
  the same folds (clinical, imaging, fusion, biomarkers with a ridge and a gradient-boosted Cox model,
  fusion+biomarkers), next to a ridge Cox model given the TRUE image covariates ("true features") and the oracle
  (the true log-hazard scored on the same folds), repeated over ``--fold-seeds``. The biomarker rows use the
  out-of-fold masks of a CPU-sized Task 1 cross-validation trained once here (the demo's HecMamba, 4 mm; cached in
  ``WORK/seg_cv_<cases>``, finished folds are not retrained). The training budget (network, input size, epochs) is an
  argument and is printed with the table.
* ``b``: ``--mode clinical`` on the real HN1 table (``../shared/data/real/clinical/``): the seven seed features,
  and the same plus HPV status (in the training table, absent from the test ``ehr.json``).
* ``c``: wall time of one case through ``RiskPredictor.predict`` (preprocessing included) with a 5-fold ensemble of
  full-size ResNet-18 fusion networks at 96^3 on the CPU with 2 threads, on a ``realistic`` synthetic case read
  from ``.mha`` files; bundle loading and image reading are timed separately. Weights are random: the time does
  not depend on their values.
* ``d``: the same case through the biomarker modes: the nested 5-fold Task 1 model (part (a)'s when it exists)
  segments it within its share of a fresh Task 2 time budget, then biomarkers, (fusion+biomarkers) the tumour cube
  and 5 ResNet-18s, and the Cox models.

Usage::

    python benchmarks/bench_prognosis.py --parts b c d
    python benchmarks/bench_prognosis.py --parts a --cases 300 --epochs 20 --input-size 32 --network tiny

Prints Markdown tables and writes them to ``--report`` (default ``WORK/bench_prognosis.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Many short OpenMP regions (the selective scan) on a shared CPU: spinning threads waste it (docs/results/benchmarks.md, Selective scan). Set
# before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from hecktor.clinical import DEFAULT_FEATURES, ClinicalEncoder
from hecktor.datasets import write_gc_input
from hecktor.fold_ensemble import EnsembleFold
from hecktor.folds import make_folds
from hecktor.images import find_single_image, read_image
from hecktor.metrics import concordance_index
from hecktor.networks.fused import FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.prognosis import RiskHead, RiskPredictor
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.training.image_level import NETWORK_PRESETS
from hecktor.training.prognosis import cross_validate
from hecktor.training.prognosis_cohort import load_csv_cohort, load_hecktor_cohort
from hecktor.training.prognosis_config import TrainingConfig

# _common is a sibling module: benchmarks run as scripts, with their folder first on sys.path.
import _common as common
from _common import mean_sd

# ------------------------------------------------------------------------------------------------------------- (a)
TASK1_ITERATIONS_PER_EPOCH = 25


def task1_config(cohort_dir: Path, run_dir: Path, args: argparse.Namespace) -> dict:
    """The CPU-sized Task 1 cross-validation behind the biomarker rows: the former demo HecMamba (demo.json's plan
    and sizes with widths 8-64, 1.4 M parameters, 4 mm voxels, no deep supervision) on 32^3 patches, batch Dice
    with the background (the Dice loss as it was when the table was measured; at that width Dice+CE never predicts a
    node: docs/results/benchmarks.md, Task 1), ``--seg-iterations`` iterations of batch 2 per fold, validated once at the end (so
    the best checkpoint, which makes the out-of-fold masks, is the last: no model selection on the patients it then
    segments)."""
    from hecktor.training.segmentation import load_config_file

    config = load_config_file(common.REPO / "training" / "configs" / "demo.json")
    config["plan"]["patch_size_zyx"] = [args.seg_patch] * 3
    # The Task 2 table (docs/results/benchmarks.md) was measured with demo.json's former HecMamba (widths 8-64, no deep supervision) and the
    # Dice loss as it was then (MONAI's, over the batch, background included: today's batch_dice with the
    # background); demo.json now holds the node-aware recipe. Kept as it was so that this command reproduces the table.
    if getattr(args, "seg_recipe", "former") == "demo":
        # ``bench_hpv.py --seg-recipe demo``: the demo's own recipe (demo.json: Dice + CE with deep supervision) with
        # the demo's 16-channel full-resolution decoder, the one whose masks find the nodes.
        config["network_config"] = {**config["network_config"], "full_resolution_width": 16}
        loss = config.get("loss", "dicece")
    else:
        config["network_config"] = {**config["network_config"], "widths": [8, 16, 32, 64],
                                     "full_resolution_width": None}
        config.update({"deep_supervision": False, "dice_include_background": True})
        loss = "batch_dice"
    epochs = max(1, args.seg_iterations // TASK1_ITERATIONS_PER_EPOCH)
    config.update({"data_root": str(cohort_dir), "run_dir": str(run_dir),
                   "cache_dir": str(run_dir.parent / "cache_seg"),
                   "folds": None, "n_folds": getattr(args, "seg_folds", 5), "epochs": epochs, "iterations_per_epoch": TASK1_ITERATIONS_PER_EPOCH,
                   "loss": loss, "val_every": epochs, "workers": 0, "device": "cpu", "progress": False, "seed": 0})
    return config


def _train_task1_fold(config: dict, fold: int) -> dict:
    """One Task 1 fold in a spawned process on one thread (the parent prepared the run)."""
    from hecktor.folds import load_folds
    from hecktor.training.segmentation import FOLDS_JSON, SegmentationTrainer, TrainingConfig as SegConfig

    torch.set_num_threads(1)
    trainer = SegmentationTrainer(SegConfig.from_dict({**config, "folds": [fold]}), resume=True)
    try:
        trainer.folds = load_folds(Path(config["run_dir"]) / FOLDS_JSON, case_ids=trainer.patient_ids)
        started = time.perf_counter()
        summary = trainer.train_fold(fold)
        summary["seconds"] = time.perf_counter() - started
        return summary
    finally:
        trainer.close()


def task1_cross_validation(cohort_dir: Path, run_dir: Path, args: argparse.Namespace) -> float:
    """Train the 5 Task 1 folds (``--seg-jobs`` processes of one thread; finished folds are skipped) and return the
    seconds spent."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from hecktor.training.segmentation import SegmentationTrainer, TrainingConfig as SegConfig

    config = task1_config(cohort_dir, run_dir, args)
    n_folds = config["n_folds"]  # 5 here; bench_hpv.py's cheaper run has 2
    done = [k for k in range(n_folds) if (run_dir / f"fold_{k}" / "checkpoint_last.pt").is_file()
            and json.loads((run_dir / f"fold_{k}" / "metrics.json").read_text())[-1]["epoch"] >= config["epochs"]]
    if len(done) == n_folds:
        return 0.0
    started = time.perf_counter()
    trainer = SegmentationTrainer(SegConfig.from_dict(config), resume=True)
    try:
        trainer.prepare()
    finally:
        trainer.close()
    print(f"Task 1 cross-validation: {config['epochs'] * TASK1_ITERATIONS_PER_EPOCH} iterations per fold, "
          f"{args.seg_jobs} fold(s) at a time ...", flush=True)
    with ProcessPoolExecutor(max_workers=args.seg_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_train_task1_fold, [config] * n_folds, range(n_folds)))
    return time.perf_counter() - started


def _masks_of_folds(seg_run: Path, folds: list[int]) -> dict:
    from hecktor.training.biomarker_features import write_validation_masks

    torch.set_num_threads(1)
    return write_validation_masks(seg_run, folds=folds, device="cpu", progress=False, echo=print)


def out_of_fold_masks(seg_run: Path, jobs: int, n_folds: int = 5) -> dict:
    """Every fold of the ``n_folds`` segments its validation patients (masks already written are kept), ``jobs``
    processes of one thread."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    groups = [list(range(n_folds))[j::jobs] for j in range(jobs)]
    masks = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for part in pool.map(_masks_of_folds, [seg_run] * jobs, groups):
            masks.update(part)
    return masks


def task1_oof_quality(cohort_dir: Path, masks: dict[str, Path]) -> dict[str, float]:
    """GTVp mean Dice, GTVn DSCagg and F1agg of the out-of-fold masks against the labels, and the share of masks
    without a primary (hecktor.metrics, as the leaderboard scores)."""
    from hecktor.datasets import list_training_cases
    from hecktor.metrics import evaluate_segmentation, summarize_segmentation

    records = [evaluate_segmentation(sitk.ReadImage(str(masks[case.patient_id])), sitk.ReadImage(str(case.label_path)),
                                     case_id=case.patient_id) for case in list_training_cases(cohort_dir, 1)]
    summary = summarize_segmentation(records)
    return {"gtvp_dice_mean": summary["GTVp"]["dice_mean"], "gtvn_dsc_agg": summary["GTVn"]["dsc_agg"],
            "gtvn_f1_agg": summary["GTVn"]["f1_agg"]}


def _true_feature_rows(cohort_dir: Path, patient_ids: list[str]) -> list[dict[str, float]]:
    """The true image covariates of the survival model as biomarker rows (true_risk.csv): volume, SUVmax, nodes."""
    with open(cohort_dir / "true_risk.csv", newline="") as handle:
        truth = {row["PatientID"]: row for row in csv.DictReader(handle)}
    return [{"gtvp_volume_ml": float(truth[pid]["tumour_volume_ml"]), "gtvp_suv_max": float(truth[pid]["suv_max"]),
             "n_nodes": float(truth[pid]["n_nodes"])} for pid in patient_ids]


TRUE_FEATURES = ["gtvp_volume_ml", "gtvp_suv_max", "n_nodes"]


def table_rows(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(row name, TrainingConfig changes) of the table; the biomarker rows use the modes' default survival models."""
    network_rows = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
                    "early_stopping_fraction": args.early_stopping_fraction,
                    "survival": {"kind": "coxph", "alpha": args.alpha}}
    return [
        ("clinical", {"mode": "clinical"}),
        ("imaging (PET/CT box)", {"mode": "imaging", **network_rows}),
        ("fusion (PET/CT box + record; the seed's)", {"mode": "fusion", **network_rows}),
        ("biomarkers (record + 13 biomarkers of the predicted mask; ridge Cox)", {"mode": "biomarkers"}),
        ("biomarkers, 3 of them (volume, SUVmax, nodes of the predicted mask; ridge Cox)",
         {"mode": "biomarkers", "biomarkers": TRUE_FEATURES}),
        ("biomarkers (gradient-boosted Cox, gbsa)", {"mode": "biomarkers", "survival": {"kind": "gbsa"}}),
        ("fusion+biomarkers (tumour-centred crop + mask channel, record, biomarkers)",
         {"mode": "fusion+biomarkers", **network_rows}),
        ("true features (TRUE volume, SUVmax, nodes + record; ridge Cox)",
         {"mode": "biomarkers", "biomarkers": TRUE_FEATURES, "true": True}),
    ]


def part_a(args: argparse.Namespace) -> list[str]:
    import dataclasses

    from hecktor.biomarkers import TumourCrop
    from hecktor.training.biomarker_features import add_segmentation_features, export_segmentation_bundle

    cohort_dir, description = common.synthetic_cohort(args)

    # Task 1 cross-validation, once: its out-of-fold masks give every Task 2 row with biomarkers its features.
    seg_run = args.work / f"seg_cv_{args.cases}"
    task1_s = task1_cross_validation(cohort_dir, seg_run, args)
    started = time.perf_counter()
    masks = out_of_fold_masks(seg_run, args.seg_jobs)
    masks_s = time.perf_counter() - started
    seg_bundle = export_segmentation_bundle(seg_run, args.work / f"task2_{args.cases}")
    quality = task1_oof_quality(cohort_dir, masks)
    seg_seconds = sum(row.get("train_seconds", 0.0) for k in range(5)
                      for row in json.loads((seg_run / f"fold_{k}" / "metrics.json").read_text()))

    plan = BoxPlan(input_shape_zyx=(args.input_size,) * 3)
    started = time.perf_counter()
    cohort = load_hecktor_cohort(cohort_dir, plan, cache_dir=args.work / "cache", progress=True)
    add_segmentation_features(cohort, cohort_dir, masks, crop=TumourCrop(args.crop_mm, plan.input_shape_zyx))
    preprocessing_s = time.perf_counter() - started
    no_primary = sum(m["gtvp_volume_ml"] == 0 for m in cohort.biomarkers)
    truth_cohort = dataclasses.replace(cohort, biomarkers=_true_feature_rows(cohort_dir, cohort.patient_ids))
    with open(cohort_dir / "true_risk.csv", newline="") as handle:
        truth = {row["PatientID"]: float(row["true_log_hazard"]) for row in csv.DictReader(handle)}
    true_risk = np.asarray([truth[pid] for pid in cohort.patient_ids])

    network = {**NETWORK_PRESETS[args.network], **({"conv1_stride": args.conv1_stride} if args.conv1_stride else {})}
    budget = (f"{args.network} backbone, input {args.input_size}³ (fusion+biomarkers: a {args.crop_mm:g} mm cube "
              f"around the predicted tumour at {args.input_size}³), {args.epochs} epochs, batch {args.batch_size}, "
              f"lr {args.lr:g}, early stopping on {args.early_stopping_fraction:.0%} of each fold's training set, "
              f"device {args.device or 'auto'}, {torch.get_num_threads()} CPU threads")
    specs = [spec for spec in table_rows(args) if not args.only or any(o in spec[0] for o in args.only)]
    results: dict[str, dict[int, dict]] = {name: {} for name, _ in specs}
    results["oracle (true log-hazard)"] = {}
    slugs = {name: f"row{i}" for i, (name, _) in enumerate(specs)}
    results_path = args.work / f"task2_{args.cases}" / "results.json"
    splits = {seed: make_folds(cohort.event, 5, seed=seed, groups=cohort.centres) for seed in args.fold_seeds}
    for seed, folds in splits.items():
        oracle = [concordance_index(cohort.time[v], cohort.event[v], true_risk[v]) for _, v in folds]
        results["oracle (true log-hazard)"][seed] = {
            "folds": oracle, "pooled": concordance_index(cohort.time, cohort.event, true_risk), "seconds": 0.0}
    # The rows without a network first (seconds each), for every fold seed; then the network rows, seed by seed.
    cheap = [spec for spec in specs if spec[1]["mode"] in ("clinical", "biomarkers")]
    ordered = [(seed, spec) for seed in args.fold_seeds for spec in cheap]
    ordered += [(seed, spec) for seed in args.fold_seeds for spec in specs if spec not in cheap]
    for seed, (name, changes) in ordered:
        changes = dict(changes)
        uses_truth = changes.pop("true", False)
        config = TrainingConfig(n_folds=5, seed=seed, network=network, device=args.device,
                                segmentation_bundle=str(seg_bundle), crop_mm=args.crop_mm, progress=False,
                                # --threads (the trainer's default is all cores)
                                threads=torch.get_num_threads(), **changes)
        print(f"fold seed {seed}: {name} ...", flush=True)
        run_dir = args.work / f"task2_{args.cases}" / f"{slugs[name]}_seed{seed}"
        result = cross_validate(truth_cohort if uses_truth else cohort, config, run_dir, split=splits[seed],
                                progress=False, overwrite=True)
        metrics = result.metrics()
        results[name][seed] = {"folds": metrics["cindex_folds"], "pooled": metrics["cindex_pooled_oof"],
                               "seconds": metrics["train_seconds"]}
        results_path.write_text(json.dumps(results, indent=2))  # a long run keeps what it measured
        print(f"  {name}: {mean_sd(metrics['cindex_folds'])} in {metrics['train_seconds']:.0f} s", flush=True)

    first = args.fold_seeds[0]
    lines = [
        f"### (a) Seed Table 3 analogue: {len(cohort)} synthetic small cases (generator "
        f"v{description.get('generator_version', '?')}, cohort seed {args.cohort_seed}, {cohort.n_events} relapses, "
        f"oracle C-index of the whole cohort "
        f"{description['oracle_c_index']:.3f})",
        "",
        f"Training budget of the network rows: {budget}. Every row is trained on the same folds: fold seed "
        f"{first} for the first columns; the last column repeats the 5-fold cross-validation with fold seeds "
        f"{', '.join(map(str, args.fold_seeds))} (mean ± SD of their mean OOF C-indices). Preprocessing and "
        f"biomarkers (once, cached): {preprocessing_s:.0f} s.",
        "",
        f"Task 1 model behind the biomarker rows: a 5-fold cross-validation of the demo's HecMamba (1.4 M parameters, "
        f"4 mm voxels, {args.seg_patch}³ patches, Dice loss, {args.seg_iterations} iterations of batch 2 per fold, "
        f"CPU, one thread per fold, two folds at a time; {seg_seconds:.0f} s of training in all"
        f"{'' if task1_s else ', reused from an earlier run'}); each fold "
        f"segmented its validation patients through Segmenter.predict ({masks_s:.0f} s). Out-of-fold masks: GTVp "
        f"mean Dice {quality.get('gtvp_dice_mean', float('nan')):.3f}, GTVn DSCagg "
        f"{quality.get('gtvn_dsc_agg', float('nan')):.3f}, GTVn F1agg {quality.get('gtvn_f1_agg', float('nan')):.3f}; "
        f"{no_primary} of {len(cohort)} without a primary (no-tumour biomarkers). The biomarker rows never see a "
        "ground-truth mask.",
        "",
        f"| model | mean OOF C-index ± SD over folds (seed {first}) | pooled OOF (seed {first}) | per-fold C-index | "
        f"training time (s) | mean OOF C-index over fold seeds {', '.join(map(str, args.fold_seeds))} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, by_seed in results.items():
        if first not in by_seed:
            continue
        row = by_seed[first]
        means = [np.mean(by_seed[s]["folds"]) for s in args.fold_seeds if s in by_seed]
        per = ", ".join(f"{c:.3f}" for c in row["folds"])
        seconds = f"{row['seconds']:.0f}" if row["seconds"] else "—"
        repeated = f"{np.mean(means):.3f} ± {np.std(means):.3f}" + (
            f" ({len(means)} seeds)" if len(means) != len(args.fold_seeds) else "")
        lines.append(f"| {name} | {mean_sd(row['folds'])} | {row['pooled']:.3f} | {per} | {seconds} | {repeated} |")
    results_path.write_text(json.dumps(results, indent=2))
    lines += ["", "The oracle scores the true log-hazard, built from every true covariate (HPV status and the values "
              "later blanked as missing included); the models see the recorded table, and the default clinical "
              "features leave HPV status out (the test ehr.json does not carry it). \"True features\" gives a "
              "ridge Cox model the true tumour volume, SUVmax and node count (true_risk.csv) with the record: the "
              "best a segmentation-based model can hope for without HPV status."]
    return lines


# ------------------------------------------------------------------------------------------------------------- (b)
def part_b(args: argparse.Namespace) -> list[str]:
    if not args.real_csv.is_file():
        return [f"### (b) Real HN1 table: skipped ({args.real_csv} is absent)"]
    cohort = load_csv_cohort(args.real_csv)
    folds = make_folds(cohort.event, 5, seed=args.seed, groups=cohort.centres)
    lines = [
        f"### (b) `--mode clinical` on the real HN1 table ({len(cohort)} patients, {cohort.n_events} relapses, "
        "5 folds)",
        "",
        "| features | survival model | mean OOF C-index ± SD | pooled OOF | per-fold C-index |",
        "| --- | --- | --- | --- | --- |",
    ]
    settings = [(list(DEFAULT_FEATURES), {"kind": "coxph", "alpha": alpha}) for alpha in (1.0, 10.0, 100.0)]
    settings.append((list(DEFAULT_FEATURES) + ["HPV Status"], dict(TrainingConfig().survival)))
    for features, survival in settings:
        config = TrainingConfig(mode="clinical", n_folds=5, seed=args.seed, clinical_features=features,
                                survival=survival)
        metrics = cross_validate(cohort, config, None, split=folds, progress=False).metrics()
        name = "seven seed features" + (" + HPV Status" if "HPV Status" in features else "")
        default = " (default)" if survival == TrainingConfig().survival and "HPV Status" not in features else ""
        per = ", ".join(f"{c:.3f}" for c in metrics["cindex_folds"])
        lines.append(f"| {name} | ridge Cox, alpha {survival['alpha']:g}{default} | "
                     f"{mean_sd(metrics['cindex_folds'])} | "
                     f"{metrics['cindex_pooled_oof']:.3f} | {per} |")
    lines += ["", "Reference: a ridge Cox model on the seven seed features reaches about 0.56 on this table."]
    return lines


# ------------------------------------------------------------------------------------------------------------- (c)
def _random_fusion_ensemble(n_folds: int = 5, seed: int = 0) -> RiskPredictor:
    """A 5-fold full-size ResNet-18 fusion ensemble with random weights (timing does not depend on their values)."""
    rng = np.random.default_rng(seed)
    folds = []
    for k, encoder, network in common.random_fusion_folds(n_folds):
        survival = build_survival_model({"kind": "coxph", "alpha": 10.0}).fit(
            rng.normal(size=(60, network.feature_dim)), rng.uniform(100, 2000, 60), rng.random(60) < 0.4)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=0.6 + 0.01 * k))
    return RiskPredictor(folds, ensemble_weights([f.validation_score for f in folds]), BoxPlan(), "fusion",
                         device="cpu")


def part_c(args: argparse.Namespace) -> list[str]:
    """(c) Per-case inference time of a random 5-fold full-size fusion ensemble."""
    return common.time_inference(_random_fusion_ensemble(), RiskPredictor, 2, args, "Cox models + ensemble (5 folds)",
                                 "; on 2 otherwise idle cores the wall time of predict approaches half of it")


# ------------------------------------------------------------------------------------------------------------- (d)
def _random_task1_bundle(path: Path, network_config: dict, plan, n_folds: int = 5) -> Path:
    """A Task 1 bundle of ``n_folds`` HecMamba networks with random weights."""
    from hecktor.bundle import write_bundle
    from hecktor.networks import build_network

    states = {}
    for k in range(n_folds):
        torch.manual_seed(k)
        states[f"fold_{k}.pt"] = build_network("hecmamba", network_config).state_dict()
    model = {"network": "hecmamba", "network_config": network_config, "folds": list(states)}
    return write_bundle(path, task=1, plan=plan, model=model, state_dicts=states)


def _random_biomarker_ensemble(mode: str, segmentation: Path, n_folds: int = 5, seed: int = 0) -> RiskPredictor:
    """A 5-fold biomarker-mode ensemble with random Cox models (and, fusion+biomarkers, full-size ResNet-18s on
    96^3 tumour cubes) around the Task 1 bundle ``segmentation``."""
    from hecktor.biomarkers import BIOMARKER_NAMES, BiomarkerScaler

    rng = np.random.default_rng(seed)
    rows = [{"Age": str(40 + i), "Gender": str(i % 2), "Tobacco Consumption": str(i % 2), "Alcohol Consumption": "0",
             "Performance Status": str(i % 3), "Treatment": str(i % 2), "M-stage": "M0"} for i in range(30)]
    markers = [{name: float(rng.uniform(0, 30)) for name in BIOMARKER_NAMES} for _ in range(30)]
    folds = []
    for k in range(n_folds):
        encoder, scaler = ClinicalEncoder().fit(rows), BiomarkerScaler().fit(markers)
        network = None
        if mode == "fusion+biomarkers":
            torch.manual_seed(k)
            network = FusedFeatureExtractor(encoder.n_features, mode="fusion", image_channels=3,
                                            **NETWORK_PRESETS["resnet18"]).eval()
        width = (network.feature_dim if network is not None else encoder.n_features) + scaler.n_features
        survival = build_survival_model({"kind": "coxph", "alpha": 10.0}).fit(
            rng.normal(size=(60, width)), rng.uniform(100, 2000, 60), rng.random(60) < 0.4)
        folds.append(EnsembleFold(RiskHead(survival), network, encoder, validation_score=0.6 + 0.01 * k,
                                  biomarkers=scaler))
    return RiskPredictor(folds, ensemble_weights([f.validation_score for f in folds]), BoxPlan(), mode, device="cpu",
                         segmentation=segmentation)


def part_d(args: argparse.Namespace) -> list[str]:
    """Per-case Task 2 inference with the Task 1 model inside (biomarker modes), CPU, 2 threads."""
    from hecktor.budget import TimeBudget
    from hecktor.plan import RegionPlan
    from hecktor.synthetic import make_case
    from hecktor.tasks import get_task
    from hecktor.training.segmentation import load_config_file

    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    trained = args.work / f"task2_{args.cases}" / "segmentation_bundle"
    lines = ["### (d) Per-case inference with the Task 1 model inside (biomarker modes), CPU, 2 threads", ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = make_case(args.seed, "realistic")
        write_gc_input(case.ct, case.pet, tmp / "input", ehr=case.ehr(task=2), seed=args.seed)
        if (trained / "manifest.json").is_file():
            segmentation, what = trained, "the 5 folds of part (a)'s Task 1 cross-validation (trained weights)"
        else:
            demo = load_config_file(common.REPO / "training" / "configs" / "demo.json")
            plan = RegionPlan.from_dict({**demo["plan"], "patch_size_zyx": [args.seg_patch] * 3})
            segmentation = _random_task1_bundle(tmp / "task1", demo["network_config"], plan)
            what = "5 demo-sized HecMamba folds with random weights (part (a) not run)"
        lines += [f"One `realistic` synthetic case (CT {'×'.join(map(str, case.ct.GetSize()))}, PET "
                  f"{'×'.join(map(str, case.pet.GetSize()))}) read from `.mha`. Nested Task 1 model: demo-sized "
                  f"HecMamba (1.4 M parameters, 4 mm, {args.seg_patch}³ windows), {what}; no TTA (the training "
                  "masks have none). Each run gets a fresh Task 2 time budget (15 min limit, 60 % planned). "
                  f"{args.repeats} runs; first run and the median of the later runs.", "",
                  "| mode | stage | first run (s) | median of later runs (s) |", "| --- | --- | --- | --- |"]
        for mode in ("biomarkers", "fusion+biomarkers"):
            _random_biomarker_ensemble(mode, segmentation).to_bundle(tmp / mode)
            started = time.perf_counter()
            predictor = RiskPredictor.from_bundle(tmp / mode, device="cpu")
            load_s = time.perf_counter() - started
            runs = []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                budget = TimeBudget(get_task(2).limit_s, start_time=time.time())
                ct = read_image(find_single_image(tmp / "input" / "images" / "ct"), "CT")
                pet = read_image(find_single_image(tmp / "input" / "images" / "pet"), "PET")
                read_s = time.perf_counter() - started
                risk = predictor.predict(ct, pet, case.ehr(task=2), budget=budget)
                report = predictor.last_report
                runs.append({"read_s": read_s, **report.timings, "risk": risk,
                             "segmentation_folds": predictor.last_segmentation_report.folds})
                print(f"  {mode} run {repeat + 1}: read {read_s:.2f} s, predict {report.timings['total_s']:.2f} s "
                      f"(segmentation {report.timings['segmentation_s']:.2f} s)", flush=True)
            first, rest = runs[0], runs[1:] or runs
            for key, label in (("read_s", "read CT + PET"), ("segmentation_s", "segmentation (5 folds, 4 mm)"),
                               ("biomarkers_s", "biomarkers"), ("preprocess_s", "network input (cube)"),
                               ("features_s", "Task 2 networks (5 folds)"), ("total_s", "predict, in all")):
                if key == "preprocess_s" and mode == "biomarkers" or key == "features_s" and mode == "biomarkers":
                    continue
                median = statistics.median(r[key] for r in rest)
                lines.append(f"| {mode} | {label} | {first[key]:.2f} | {median:.2f} |")
            total_first = first["read_s"] + first["total_s"]
            total_median = statistics.median(r["read_s"] + r["total_s"] for r in rest)
            lines.append(f"| {mode} | **read + predict** (bundle loading {load_s:.1f} s, once) | "
                         f"**{total_first:.2f}** | **{total_median:.2f}** |")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines += ["", f"Target ≤ 60 s per case on the CPU. Load average at the end (1, 5, 15 min): {load} on "
              f"{os.cpu_count()} cores. The full-size default HecMamba (72 M parameters, 1 mm, 128³ windows) is not "
              "run here: one 128³ window alone takes about a minute on 2 CPU threads, and a 1 mm region needs 27 per "
              "pass (docs/results/benchmarks.md)."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_arguments(parser, "bench_prognosis", ("a", "b", "c", "d"))
    parser.add_argument("--cases", type=int, default=300, help="(a) synthetic cohort size")
    parser.add_argument("--cohort-seed", type=int, default=1, help="(a) synthetic cohort seed")
    parser.add_argument("--input-size", type=int, default=32,
                        help="(a) side of the Task 2 input cube (the plan's; the product uses 96)")
    common.add_network_arguments(parser, NETWORK_PRESETS)
    common.add_training_arguments(parser)
    parser.add_argument("--alpha", type=float, default=TrainingConfig().survival["alpha"], help="(a) ridge penalty")
    common.add_device_arguments(parser)
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="(a) seeds of the repeated 5-fold splits (the first gives the per-fold columns)")
    parser.add_argument("--only", nargs="+", help="(a) rows whose name contains one of these (default: all)")
    parser.add_argument("--crop-mm", type=float, default=128.0, help="(a) fusion+biomarkers tumour cube edge")
    parser.add_argument("--seg-iterations", type=int, default=1000, help="(a) Task 1 iterations per fold")
    parser.add_argument("--seg-patch", type=int, default=32, help="(a) Task 1 patch side (voxels of 4 mm)")
    parser.add_argument("--seg-jobs", type=int, default=2, help="(a) Task 1 folds trained at a time")
    parser.add_argument("--repeats", type=int, default=3, help="(c) inference runs")
    parser.add_argument("--real-csv", type=Path, default=common.REAL_CSV, help="(b) the HN1 table")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    return common.write_report(args, {"a": part_a, "b": part_b, "c": part_c, "d": part_d},
                               "## Task 2 prognosis benchmark", "bench_prognosis")


if __name__ == "__main__":
    sys.exit(main())
