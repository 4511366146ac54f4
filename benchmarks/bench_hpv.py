"""Benchmark of the Task 3 HPV-status classifier: baselines against fusion next to the oracle, the clinical baseline
on real data, and per-case inference time of the 5-fold ensemble.

Parts (``--parts``, default all three):

* ``a``: on a synthetic cohort whose HPV status is drawn from a known logistic model of the record and the tumour
  (``hecktor.synthetic.HPV_MODEL``), 5-fold cross-validation of the clinical-only (logistic regression),
  imaging-only and fusion models on the same folds, next to the oracle (the true P(HPV+) thresholded at the
  population prevalence, the Bayes rule for balanced accuracy, scored on the same folds). Every balanced accuracy
  is out-of-fold at a threshold chosen without the fold (:mod:`hecktor.training.hpv`). The training budget
  (network, input size, epochs) is an argument and is printed with the table.
* ``b``: ``--mode clinical`` on the real HN1 table (``../shared/data/real/clinical/``; HPV status known for 81 of
  137 patients), over several fold seeds.
* ``c``: wall time of one case through ``HPVPredictor.predict`` (preprocessing included) with a 5-fold ensemble of
  full-size ResNet-18 fusion networks at 96^3 on the CPU with 2 threads, on a ``realistic`` synthetic case read
  from ``.mha`` files; bundle loading and image reading are timed separately. Weights are random: the time does
  not depend on their values.

Usage::

    python benchmarks/bench_hpv.py --parts b c
    python benchmarks/bench_hpv.py --parts a --cases 300 --epochs 20 --input-size 32 --network tiny \\
        --network-config '{"fused_dim": 16, "clinical_dim": 8}'

Prints Markdown tables and writes them to ``--report`` (default ``WORK/bench_hpv.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hecktor.diagnosis import HPVPredictor, LogisticHead, PlattCalibration
from hecktor.fold_ensemble import EnsembleFold
from hecktor.folds import make_folds
from hecktor.metrics import balanced_accuracy, roc_auc
from hecktor.plan import BoxPlan
from hecktor.survival import ensemble_weights
from hecktor.training.hpv import (
    NETWORK_PRESETS,
    HPVTrainingConfig,
    cross_validate_hpv,
    load_hpv_cohort,
    load_hpv_csv_cohort,
)

# _common is a sibling module: benchmarks run as scripts, with their folder first on sys.path.
import _common as common
from _common import mean_sd

# ------------------------------------------------------------------------------------------------------------- (a)
def part_a(args: argparse.Namespace) -> list[str]:
    from hecktor.synthetic import HPV_PREVALENCE

    cohort_dir, description = common.synthetic_cohort(args)
    plan = BoxPlan(input_shape_zyx=(args.input_size,) * 3)
    started = time.perf_counter()
    cohort = load_hpv_cohort(cohort_dir, plan, cache_dir=args.work / "cache", progress=True)
    preprocessing_s = time.perf_counter() - started
    with open(cohort_dir / "true_risk.csv", newline="") as handle:
        truth = {row["PatientID"]: row for row in csv.DictReader(handle)}
    true_p = np.asarray([float(truth[pid]["hpv_probability"]) for pid in cohort.patient_ids])
    labels = cohort.labels
    folds = make_folds(labels, 5, seed=args.seed, groups=cohort.centres)
    oracle_ba = [balanced_accuracy(labels[v], true_p[v] >= HPV_PREVALENCE) for _, v in folds]
    oracle_auc = [roc_auc(labels[v], true_p[v]) for _, v in folds]

    network = {**NETWORK_PRESETS[args.network], **({"conv1_stride": args.conv1_stride} if args.conv1_stride else {}),
               **args.network_config}
    extra = f" ({json.dumps(args.network_config)})" if args.network_config else ""
    budget = (f"{args.network} backbone{extra}, input {args.input_size}³, {args.epochs} epochs, batch {args.batch_size}, "
              f"lr {args.lr:g}, early stopping and Platt calibration on {args.early_stopping_fraction:.0%} of each "
              f"fold's training set, device {args.device or 'auto'}, {torch.get_num_threads()} CPU threads")
    rows = []
    for mode in args.modes:
        if mode == TRUE_FEATURES:
            rows.append(_true_features_row(cohort, truth, folds, args))
            continue
        config = HPVTrainingConfig(mode=mode, n_folds=5, seed=args.seed, epochs=args.epochs,
                                   batch_size=args.batch_size, learning_rate=args.lr,
                                   early_stopping_fraction=args.early_stopping_fraction, network=network,
                                   device=args.device, threads=args.threads, progress=False)
        print(f"training {mode} ...", flush=True)
        result = cross_validate_hpv(cohort, config, args.work / f"run_{mode}_{args.cases}_{args.input_size}{args.tag}",
                                    split=folds, progress=False, overwrite=True,
                                    on_fold=lambda f: print(f"  fold {f.index}: AUC {f.auc:.3f} ({f.seconds:.0f} s)",
                                                            flush=True))
        m = result.metrics()
        rows.append((mode, m["balanced_accuracy_folds"], m["balanced_accuracy_pooled_oof"],
                     m["balanced_accuracy_in_sample_threshold"], m["auc_folds"], m["auc_pooled_oof"],
                     m["train_seconds"]))
        print(f"  {mode}: balanced accuracy {mean_sd(m['balanced_accuracy_folds'])}, AUC {mean_sd(m['auc_folds'])} in "
              f"{m['train_seconds']:.0f} s", flush=True)
    rows.append(("oracle (true P(HPV+) ≥ prevalence)", oracle_ba,
                 balanced_accuracy(labels, true_p >= HPV_PREVALENCE), None, oracle_auc, roc_auc(labels, true_p), None))

    lines = [
        f"### (a) {len(cohort)} synthetic small cases of known HPV status (cohort seed {args.cohort_seed}: "
        f"{args.cases} cases, {cohort.n_unknown} of unknown status left out; {cohort.n_positive} HPV-positive; "
        f"oracle balanced accuracy of the cohort {description['oracle_hpv_balanced_accuracy']:.3f})",
        "",
        f"Training budget: {budget}. Same 5 folds for every row. Preprocessing (once, cached): "
        f"{preprocessing_s:.0f} s.",
        "",
        "| model | OOF balanced accuracy, mean ± SD over folds | pooled | at the in-sample threshold | AUC mean ± SD "
        "| pooled AUC | training time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, ba, pooled, in_sample, auc, pooled_auc, seconds in rows:
        lines.append(f"| {name} | {mean_sd(ba)} | {pooled:.3f} | "
                     f"{'—' if in_sample is None else f'{in_sample:.3f}'} | {mean_sd(auc)} | {pooled_auc:.3f} | "
                     f"{'—' if seconds is None else f'{seconds:.0f}'} |")
    by_mode = {r[0]: np.mean(r[1]) for r in rows}
    oracle_mean = np.mean(oracle_ba)
    if "fusion" in by_mode:
        others = ", ".join(f"fusion − {m}: {by_mode['fusion'] - by_mode[m]:+.3f}" for m in ("clinical", "imaging")
                           if m in by_mode)
        lines += ["", f"Fusion − oracle: {by_mode['fusion'] - oracle_mean:+.3f} (target ≥ −0.05); {others}."]
    if TRUE_FEATURES in by_mode:
        lines += ["", f"'{TRUE_FEATURES}' is the clinical logistic regression given, besides the record, the "
                  "tumour volume and node count the generator drew (what the network has to learn to see): it "
                  "shows what the rest of the pipeline (calibration, ensemble, threshold) reaches with perfect "
                  "image features."]
    lines += ["", "Every model's balanced accuracy is out-of-fold at a threshold chosen on the other folds' "
              "out-of-fold probabilities; 'at the in-sample threshold' thresholds the pooled out-of-fold "
              "probabilities where they score best, as a cross-validation that tunes its threshold on its own "
              "validation patients would report. The oracle uses the true covariates (values blanked as missing "
              "included) and the true probability."]
    return lines


TRUE_FEATURES = "record + true image features (logistic regression)"
_TRUE_COLUMNS = {"true log tumour volume": lambda row: np.log(float(row["tumour_volume_ml"])),
                 "true node count": lambda row: float(row["n_nodes"])}


def _true_features_row(cohort, truth, folds, args) -> tuple:
    """The clinical mode on the record plus the generator's tumour volume and node count, as numeric fields."""
    import dataclasses

    rows = [{**row, **{name: f(truth[pid]) for name, f in _TRUE_COLUMNS.items()}}
            for pid, row in zip(cohort.patient_ids, cohort.rows)]
    augmented = dataclasses.replace(cohort, rows=rows, images=None)
    config = HPVTrainingConfig(mode="clinical", n_folds=5, seed=args.seed, progress=False,
                               clinical_features=[*HPVTrainingConfig().clinical_features, *_TRUE_COLUMNS],
                               numeric_features=["Age", *_TRUE_COLUMNS])
    m = cross_validate_hpv(augmented, config, None, split=folds, progress=False).metrics()
    return (TRUE_FEATURES, m["balanced_accuracy_folds"], m["balanced_accuracy_pooled_oof"],
            m["balanced_accuracy_in_sample_threshold"], m["auc_folds"], m["auc_pooled_oof"], m["train_seconds"])


# ------------------------------------------------------------------------------------------------------------- (b)
def part_b(args: argparse.Namespace) -> list[str]:
    if not args.real_csv.is_file():
        return [f"### (b) Real HN1 table: skipped ({args.real_csv} is absent)"]
    cohort = load_hpv_csv_cohort(args.real_csv)
    lines = [
        f"### (b) `--mode clinical` on the real HN1 table ({len(cohort)} patients of known HPV status, "
        f"{cohort.n_positive} positive, {cohort.n_unknown} unknown left out; 5 folds per fold seed)",
        "",
        "| fold seed | OOF balanced accuracy, mean ± SD over folds | pooled | AUC mean ± SD | pooled AUC |",
        "| --- | --- | --- | --- | --- |",
    ]
    means_ba, means_auc = [], []
    for seed in range(args.real_seeds):
        config = HPVTrainingConfig(mode="clinical", n_folds=5, seed=seed, progress=False)
        m = cross_validate_hpv(cohort, config, None, progress=False).metrics()
        means_ba.append(m["balanced_accuracy_mean"])
        means_auc.append(m["auc_mean"])
        lines.append(f"| {seed} | {mean_sd(m['balanced_accuracy_folds'])} | {m['balanced_accuracy_pooled_oof']:.3f} | "
                     f"{mean_sd(m['auc_folds'])} | {m['auc_pooled_oof']:.3f} |")
    lines += ["", f"Over the {args.real_seeds} fold seeds: balanced accuracy {mean_sd(means_ba)}, "
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
    parser.add_argument("--modes", nargs="+", choices=("clinical", "imaging", "fusion", "true-features"),
                        default=["clinical", "imaging", "fusion", "true-features"],
                        help="(a) rows to train (true-features: the record plus the generator's tumour volume and "
                             "node count, a ceiling for what the network could learn)")
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
    args.modes = [TRUE_FEATURES if m == "true-features" else m for m in args.modes]
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    return common.write_report(args, {"a": part_a, "b": part_b, "c": part_c}, "## Task 3 HPV-status benchmark",
                               "bench_hpv")


if __name__ == "__main__":
    sys.exit(main())
