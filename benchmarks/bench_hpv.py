"""Benchmark of the Task 3 HPV-status classifier: baselines against fusion next to the oracle, the clinical baseline
on real data, and per-case inference time of the 5-fold ensemble.

Parts (``--parts``, default all three):

* ``a``: on a synthetic cohort whose HPV status is drawn from a known logistic model of the record and the tumour
  (``hecktor.synthetic.HPV_MODEL``), 5-fold cross-validation of the clinical-only (logistic regression), biomarkers
  (the record + the PET biomarkers of Task 1's out-of-fold masks: all 13, and volume + node count only),
  biomarkers given the generator's TRUE tumour volume and node count (the ceiling of the mode), imaging-only and
  fusion models on the same folds, repeated over ``--fold-seeds``, next to the oracle (the true P(HPV+)
  thresholded at the population prevalence, the Bayes rule for balanced accuracy, scored on the same folds). Every
  balanced accuracy is out-of-fold at a threshold chosen without the fold (``--threshold-rule``; the other rule is
  reported beside, on the same probabilities: :mod:`hecktor.training.hpv`). The biomarker rows use the out-of-fold
  masks of a CPU-sized Task 1 cross-validation trained once here (``--seg-recipe former``: ``bench_prognosis.py``'s
  former demo HecMamba, which finds no node at this budget; ``--seg-recipe demo``: the demo's recipe; 4 mm, with
  ``--seg-folds`` folds of ``--seg-iterations`` iterations; cached in ``WORK/seg_cv_<cases>[_demo]``, finished folds
  are not retrained), after the postprocessing chosen for that run if any (``choose_postprocessing.py RUN``). The
  training budgets are arguments and are printed with the table.
* ``b``: ``--mode clinical`` on the real HN1 table (``../shared/data/real/clinical/``; HPV status known for 81 of
  137 patients), over several fold seeds.
* ``c``: wall time of one case through ``HPVPredictor.predict`` (preprocessing included) with a 5-fold ensemble of
  full-size ResNet-18 fusion networks at 96^3 on the CPU with 2 threads, on a ``realistic`` synthetic case read
  from ``.mha`` files; bundle loading and image reading are timed separately. Weights are random: the time does
  not depend on their values.

Usage::

    python benchmarks/bench_hpv.py --parts b c
    python benchmarks/bench_hpv.py --parts a --modes clinical biomarkers true-features   # no network: minutes
    python benchmarks/bench_hpv.py --parts a --modes biomarkers true-features --seg-recipe demo --seg-iterations 600
    python benchmarks/bench_hpv.py --parts a --cases 300 --epochs 20 --input-size 32 --network tiny \\
        --network-config '{"fused_dim": 16, "clinical_dim": 8}'

Prints Markdown tables and writes them to ``--report`` (default ``WORK/bench_hpv.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Many short OpenMP regions on a shared CPU (the Task 1 cross-validation): spinning threads waste it. Set before torch
# starts its thread pool, as bench_prognosis.py does.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hecktor.diagnosis import HPVPredictor, LogisticHead, PlattCalibration
from hecktor.fold_ensemble import EnsembleFold
from hecktor.folds import make_folds
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.plan import BoxPlan
from hecktor.survival import ensemble_weights
from hecktor.training.calibration import THRESHOLD_RULES
from hecktor.training.hpv import NETWORK_PRESETS, HPVTrainingConfig, cross_validate_hpv
from hecktor.training.hpv_cohort import load_hpv_cohort, load_hpv_csv_cohort

# _common is a sibling module: benchmarks run as scripts, with their folder first on sys.path.
import _common as common
from _common import mean_sd

# ------------------------------------------------------------------------------------------------------------- (a)
BIOMARKERS = "biomarkers"
BIOMARKERS_TWO = "biomarkers, 2 of them (volume and node count of the predicted mask)"
TRUE_FEATURES = "biomarkers, the TRUE volume and node count (the generator's)"
TWO = ["gtvp_volume_ml", "n_nodes"]


def task1_masks(cohort_dir: Path, args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, Any]]:
    """The out-of-fold masks of part (a)'s Task 1 cross-validation, trained once in ``WORK/seg_cv_<cases>`` (finished
    folds are not retrained) as ``bench_prognosis.py`` part (a) trains its own, but with ``--seg-folds`` folds and
    ``--seg-iterations`` iterations: the CPU budget of this machine. Returns the masks and what the run cost and
    scored."""
    import bench_prognosis

    seg_run = args.work / (f"seg_cv_{args.cases}" + ("_demo" if args.seg_recipe == "demo" else ""))
    train_s = bench_prognosis.task1_cross_validation(cohort_dir, seg_run, args)
    started = time.perf_counter()
    masks = bench_prognosis.out_of_fold_masks(seg_run, args.seg_jobs, args.seg_folds)
    quality = bench_prognosis.task1_oof_quality(cohort_dir, masks)
    seconds = sum(row.get("train_seconds", 0.0) for k in range(args.seg_folds)
                  for row in json.loads((seg_run / f"fold_{k}" / "metrics.json").read_text()))
    return masks, {**quality, "train_seconds": seconds, "reused": not train_s,
                   "masks_seconds": time.perf_counter() - started}


def _rows_for(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """(row name, cohort: "record" / "predicted" / "true" / "images", config changes) of the table's rows."""
    rows = {"clinical": [("clinical", "record", {"mode": "clinical"})],
            "biomarkers": [(BIOMARKERS, "predicted", {"mode": "biomarkers"}),
                           (BIOMARKERS_TWO, "predicted", {"mode": "biomarkers", "biomarkers": TWO})],
            "true-features": [(TRUE_FEATURES, "true", {"mode": "biomarkers", "biomarkers": TWO})]}
    for mode in ("imaging", "fusion"):
        rows[mode] = [(mode, "images", {"mode": mode})]
    return [row for mode in args.modes for row in rows[mode]]


def part_a(args: argparse.Namespace) -> list[str]:
    import dataclasses

    from hecktor.synthetic import HPV_PREVALENCE
    from hecktor.training.biomarker_features import add_segmentation_features

    cohort_dir, description = common.synthetic_cohort(args)
    plan = BoxPlan(input_shape_zyx=(args.input_size,) * 3)
    specs = _rows_for(args)
    started = time.perf_counter()
    needs_images = any(kind == "images" for _, kind, _ in specs)
    cohort = load_hpv_cohort(cohort_dir, plan, with_images=needs_images, cache_dir=args.work / "cache",
                             progress=True)
    with open(cohort_dir / "true_risk.csv", newline="") as handle:
        truth = {row["PatientID"]: row for row in csv.DictReader(handle)}
    cohorts = {"record": cohort, "images": cohort}
    seg = None
    if any(kind == "predicted" for _, kind, _ in specs):
        masks, seg = task1_masks(cohort_dir, args)
        cohorts["predicted"] = add_segmentation_features(dataclasses.replace(cohort), cohort_dir, masks, task=3,
                                                         progress=False)
    if any(kind == "true" for _, kind, _ in specs):
        cohorts["true"] = dataclasses.replace(cohort, biomarkers=[
            {"gtvp_volume_ml": float(truth[pid]["tumour_volume_ml"]), "n_nodes": float(truth[pid]["n_nodes"])}
            for pid in cohort.patient_ids])
    preprocessing_s = time.perf_counter() - started
    true_p = np.asarray([float(truth[pid]["hpv_probability"]) for pid in cohort.patient_ids])
    labels = cohort.labels
    splits = {seed: make_folds(labels, 5, seed=seed, groups=cohort.centres) for seed in args.fold_seeds}

    network = {**NETWORK_PRESETS[args.network], **({"conv1_stride": args.conv1_stride} if args.conv1_stride else {}),
               **args.network_config}
    extra = f" ({json.dumps(args.network_config)})" if args.network_config else ""
    budget = (f"{args.network} backbone{extra}, input {args.input_size}³, {args.epochs} epochs, batch {args.batch_size}, "
              f"lr {args.lr:g}, early stopping and Platt calibration on {args.early_stopping_fraction:.0%} of each "
              f"fold's training set, device {args.device or 'auto'}, {torch.get_num_threads()} CPU threads")
    results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name, _, _ in specs}
    oracle = "oracle (true P(HPV+) ≥ prevalence)"
    results[oracle] = {seed: {"balanced_accuracy_folds": [balanced_accuracy(labels[v], true_p[v] >= HPV_PREVALENCE)
                                                          for _, v in folds],
                              "balanced_accuracy_pooled_oof": balanced_accuracy(labels, true_p >= HPV_PREVALENCE),
                              "balanced_accuracy_in_sample_threshold": None,
                              "auc_folds": [roc_auc(labels[v], true_p[v]) for _, v in folds],
                              "auc_pooled_oof": roc_auc(labels, true_p), "train_seconds": None}
                       for seed, folds in splits.items()}
    # The rows without a network first, for every fold seed (seconds each); then the network rows.
    ordered = [(seed, spec) for seed in args.fold_seeds for spec in specs if spec[1] != "images"]
    ordered += [(seed, spec) for seed in args.fold_seeds for spec in specs if spec[1] == "images"]
    for seed, (name, kind, changes) in ordered:
        config = HPVTrainingConfig(n_folds=5, seed=seed, epochs=args.epochs, batch_size=args.batch_size,
                                   learning_rate=args.lr, early_stopping_fraction=args.early_stopping_fraction,
                                   network=network, device=args.device, threads=args.threads, progress=False,
                                   threshold_rule=args.threshold_rule, **changes)
        print(f"fold seed {seed}: training {name} ...", flush=True)
        result = cross_validate_hpv(cohorts[kind], config, None, split=splits[seed], progress=False)
        results[name][seed] = m = result.metrics()
        print(f"  {name}: balanced accuracy {mean_sd(m['balanced_accuracy_folds'])}, AUC {mean_sd(m['auc_folds'])}"
              f"{' (threshold: prevalence)' if m['threshold_fallback'] else ''} in {m['train_seconds']:.0f} s",
              flush=True)
    (args.work / f"bench_hpv_{args.cases}{args.tag}.json").write_text(json.dumps(
        {name: {str(seed): {k: v for k, v in m.items() if k not in ("calibration",)} for seed, m in by_seed.items()}
         for name, by_seed in results.items()}, indent=2, default=float))

    first = args.fold_seeds[0]
    seeds = ", ".join(map(str, args.fold_seeds))
    lines = [
        f"### (a) {len(cohort)} synthetic small cases of known HPV status (cohort seed {args.cohort_seed}: "
        f"{args.cases} cases, {cohort.n_unknown} of unknown status left out; {cohort.n_positive} HPV-positive; "
        f"oracle balanced accuracy of the cohort {description['oracle_hpv_balanced_accuracy']:.3f})",
        "",
        f"Network rows: {budget}. Every row on the same 5 folds: fold seed {first} for the per-fold columns, and "
        f"again with fold seeds {seeds} (the last three columns: mean ± SD of the seeds' means). Threshold rule: "
        f"{args.threshold_rule}. Preprocessing and "
        f"biomarkers (once): {preprocessing_s:.0f} s.",
        "",
    ]
    if seg is not None:
        recipe = ("the demo's HecMamba (16-channel full-resolution decoder, 4 mm voxels, "
                  f"{args.seg_patch}³ patches, Dice + CE with deep supervision, " if args.seg_recipe == "demo" else
                  f"the former demo HecMamba (1.4 M parameters, 4 mm voxels, {args.seg_patch}³ patches, batch Dice, ")
        lines += [f"Task 1 model behind the biomarker rows: a {args.seg_folds}-fold cross-validation of {recipe}"
                  f"{args.seg_iterations} iterations of batch 2 per fold, CPU, one thread per fold, "
                  f"{args.seg_jobs} folds at a time; {seg['train_seconds']:.0f} s of training in all"
                  f"{', reused from an earlier run' if seg['reused'] else ''}). Out-of-fold masks of all "
                  f"{args.cases} patients: GTVp mean Dice {seg['gtvp_dice_mean']:.3f}, GTVn DSCagg "
                  f"{seg['gtvn_dsc_agg']:.3f}, GTVn F1agg {seg['gtvn_f1_agg']:.3f}. No biomarker row sees a "
                  "ground-truth mask.", ""]
    lines += [
        f"| model | balanced accuracy, mean ± SD over folds (fold seed {first}) | pooled | at the in-sample "
        f"threshold | AUC mean ± SD | pooled AUC | training (s) | balanced accuracy, fold seeds {seeds} | "
        f"AUC, fold seeds {seeds} | balanced accuracy at each fold's training prevalence, fold seeds {seeds} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    means: dict[str, float] = {}
    for name, by_seed in results.items():
        if first not in by_seed:
            continue
        m = by_seed[first]
        ba = [float(np.mean(by_seed[s]["balanced_accuracy_folds"])) for s in args.fold_seeds if s in by_seed]
        auc = [float(np.mean(by_seed[s]["auc_folds"])) for s in args.fold_seeds if s in by_seed]
        at_prevalence = [float(np.mean(by_seed[s]["balanced_accuracy_folds_at_prevalence"]))
                         for s in args.fold_seeds if "balanced_accuracy_folds_at_prevalence" in by_seed.get(s, {})]
        means[name] = float(np.mean(ba))
        in_sample, seconds = m["balanced_accuracy_in_sample_threshold"], m["train_seconds"]
        lines.append(f"| {name} | {mean_sd(m['balanced_accuracy_folds'])} | {m['balanced_accuracy_pooled_oof']:.3f} | "
                     f"{'—' if in_sample is None else f'{in_sample:.3f}'} | {mean_sd(m['auc_folds'])} | "
                     f"{m['auc_pooled_oof']:.3f} | {'—' if seconds is None else f'{seconds:.0f}'} | "
                     f"{mean_sd(ba)} | {mean_sd(auc)} | {mean_sd(at_prevalence) if at_prevalence else '—'} |")
    fallbacks = [f"{name} (fold seed {seed})" for name, by_seed in results.items() for seed, m in by_seed.items()
                 if m.get("threshold_fallback")]
    if fallbacks:
        lines += ["", f"Threshold at the training prevalence (pooled OOF AUC < 0.55): {', '.join(fallbacks)}."]
    if BIOMARKERS in means:
        others = ", ".join(f"{BIOMARKERS} − {name}: {means[BIOMARKERS] - means[name]:+.3f}" for name in means
                           if name not in (BIOMARKERS,))
        lines += ["", f"Over fold seeds {seeds}: {others} (target: biomarkers ≥ 0.68, ≥ 0.05 above fusion)."]
    lines += ["", "Every model's balanced accuracy is out-of-fold at the threshold its rule (`threshold_rule`, "
              "printed with the table) chose without the fold; the last column thresholds the same out-of-fold "
              "probabilities at each fold's training prevalence (the other rule); 'at the in-sample threshold' thresholds the pooled out-of-fold "
              "probabilities where they score best, as a cross-validation that tunes its threshold on its own "
              "validation patients would report. The oracle uses the true covariates (values blanked as missing "
              "included) and the true probability. The biomarker rows are the logistic regression of "
              "`--mode biomarkers` on the record and the body-relative PET biomarkers of each patient's "
              "out-of-fold Task 1 mask; the TRUE row hands it the tumour volume and node count the generator drew."]
    return lines


# ------------------------------------------------------------------------------------------------------------- (b)
def part_b(args: argparse.Namespace) -> list[str]:
    if not args.real_csv.is_file():
        return [f"### (b) Real HN1 table: skipped ({args.real_csv} is absent)"]
    cohort = load_hpv_csv_cohort(args.real_csv)
    lines = [
        f"### (b) `--mode clinical` on the real HN1 table ({len(cohort)} patients of known HPV status, "
        f"{cohort.n_positive} positive, {cohort.n_unknown} unknown left out; 5 folds per fold seed)",
        "",
        "| fold seed | OOF balanced accuracy, mean ± SD over folds | pooled | AUC mean ± SD | pooled AUC | "
        "balanced accuracy at each fold's training prevalence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    means_ba, means_auc, means_prevalence = [], [], []
    for seed in range(args.real_seeds):
        config = HPVTrainingConfig(mode="clinical", n_folds=5, seed=seed, progress=False,
                                   threshold_rule=args.threshold_rule)
        m = cross_validate_hpv(cohort, config, None, progress=False).metrics()
        means_ba.append(m["balanced_accuracy_mean"])
        means_auc.append(m["auc_mean"])
        means_prevalence.append(m["balanced_accuracy_mean_at_prevalence"])
        lines.append(f"| {seed} | {mean_sd(m['balanced_accuracy_folds'])} | {m['balanced_accuracy_pooled_oof']:.3f} | "
                     f"{mean_sd(m['auc_folds'])} | {m['auc_pooled_oof']:.3f} | "
                     f"{mean_sd(m['balanced_accuracy_folds_at_prevalence'])} |")
    lines += ["", f"Over the {args.real_seeds} fold seeds (threshold rule {args.threshold_rule}): balanced "
              f"accuracy {mean_sd(means_ba)}, at the training prevalence {mean_sd(means_prevalence)}, "
              f"AUC {mean_sd(means_auc)} "
              "(mean ± SD of the seeds' means). Features: Age, Gender, Performance Status, Treatment, M-stage (HN1 "
              "records no tobacco or alcohol)."]
    return lines


# ------------------------------------------------------------------------------------------------------------- (c)
def random_fusion_ensemble(n_folds: int = 5, seed: int = 0) -> HPVPredictor:
    """A 5-fold full-size ResNet-18 fusion ensemble with random weights (timing does not depend on their values)."""
    rng = np.random.default_rng(seed)
    folds = []
    for k, encoder, network in common.random_fusion_folds(n_folds):
        head = LogisticHead(tuple(rng.normal(size=network.feature_dim) * 0.1), 0.0, PlattCalibration(0.8, 0.2))
        folds.append(EnsembleFold(head, network, encoder, validation_score=0.6 + 0.01 * k))
    return HPVPredictor(folds, ensemble_weights([f.validation_score for f in folds]), BoxPlan(), "fusion", 0.55,
                        device="cpu")


def part_c(args: argparse.Namespace) -> list[str]:
    """(c) Per-case inference time of a random 5-fold full-size fusion ensemble."""
    return common.time_inference(random_fusion_ensemble(), HPVPredictor, 3, args,
                                 "logistic heads + calibration (5 folds)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_arguments(parser, "bench_hpv", ("a", "b", "c"))
    parser.add_argument("--cases", type=int, default=300, help="(a) synthetic cohort size (before unknown status)")
    parser.add_argument("--cohort-seed", type=int, default=1, help="(a) synthetic cohort seed")
    parser.add_argument("--modes", nargs="+",
                        choices=("clinical", "biomarkers", "true-features", "imaging", "fusion"),
                        default=["clinical", "biomarkers", "true-features", "imaging", "fusion"],
                        help="(a) rows to train (biomarkers: the record + the PET biomarkers of Task 1's out-of-fold "
                             "masks, all 13 and volume + node count only; true-features: the biomarkers mode given "
                             "the generator's tumour volume and node count, its ceiling)")
    parser.add_argument("--fold-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="(a) seeds of the repeated 5-fold splits (the first gives the per-fold columns)")
    parser.add_argument("--seg-iterations", type=int, default=200, help="(a) Task 1 iterations per fold")
    parser.add_argument("--seg-folds", type=int, default=2, help="(a) Task 1 cross-validation folds")
    parser.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default=HPVTrainingConfig.threshold_rule,
                        help="(a, b) the models' decision threshold rule (the other is reported beside)")
    parser.add_argument("--seg-recipe", choices=("former", "demo"), default="former",
                        help="(a) Task 1 recipe: 'former' (the Task 2 table's HecMamba, widths 8-64, batch Dice: "
                             "finds no node at this budget) or 'demo' (the demo's: Dice + CE, deep supervision, "
                             "16-channel full-resolution decoder; run folder WORK/seg_cv_<cases>_demo)")
    parser.add_argument("--seg-patch", type=int, default=32, help="(a) Task 1 patch side (voxels of 4 mm)")
    parser.add_argument("--seg-jobs", type=int, default=2, help="(a) Task 1 folds trained at a time")
    parser.add_argument("--input-size", type=int, default=32,
                        help="(a) side of the input cube (the plan's; the product uses 96)")
    common.add_network_arguments(parser, NETWORK_PRESETS)
    parser.add_argument("--network-config", type=json.loads, default={},
                        help="(a) further FusedFeatureExtractor arguments as JSON, e.g. '{\"fused_dim\": 16}'")
    parser.add_argument("--tag", default="", help="(a) suffix of the run folders (to keep runs of other settings)")
    common.add_training_arguments(parser)
    common.add_device_arguments(parser)
    parser.add_argument("--real-seeds", type=int, default=5, help="(b) fold seeds")
    parser.add_argument("--repeats", type=int, default=3, help="(c) inference runs")
    parser.add_argument("--real-csv", type=Path, default=common.REAL_CSV, help="(b) the HN1 table")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    return common.write_report(args, {"a": part_a, "b": part_b, "c": part_c}, "## Task 3 HPV-status benchmark",
                               "bench_hpv")


if __name__ == "__main__":
    sys.exit(main())
