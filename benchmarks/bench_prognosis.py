"""Benchmark of the Task 2 risk model: baselines against fusion (seed Table 3 analogue), the clinical baseline on real
data, and per-case inference time of the 5-fold ensemble.

Parts (``--parts``, default all three):

* ``a``: on a synthetic cohort with a known hazard (``hecktor.synthetic``), 5-fold cross-validation of the
  clinical-only, imaging-only and fusion models on the same folds, next to the oracle (the true log-hazard scored on
  the same folds). The training budget (network, input size, epochs) is an argument and is printed with the table.
* ``b``: ``--mode clinical`` on the real HN1 table (``../shared/data/real/clinical/``): the seven seed features,
  and the same plus HPV status (in the training table, absent from the test ``ehr.json``).
* ``c``: wall time of one case through ``RiskPredictor.predict`` (preprocessing included) with a 5-fold ensemble of
  full-size ResNet-18 fusion networks at 96^3 on the CPU with 2 threads, on a ``realistic`` synthetic case read
  from ``.mha`` files; bundle loading and image reading are timed separately. Weights are random: the time does
  not depend on their values.

Usage::

    python benchmarks/bench_prognosis.py --parts b c
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

import numpy as np
import SimpleITK as sitk
import torch

from hecktor.clinical import DEFAULT_FEATURES, ClinicalEncoder
from hecktor.folds import make_folds
from hecktor.io import find_single_image, read_image, write_gc_input
from hecktor.metrics import concordance_index
from hecktor.networks.fused import FusedFeatureExtractor
from hecktor.plan import BoxPlan
from hecktor.prognosis import FoldModel, RiskPredictor
from hecktor.survival import ensemble_weights
from hecktor.survival_models import build_survival_model
from hecktor.training.prognosis import (
    NETWORK_PRESETS,
    TrainingConfig,
    cross_validate,
    load_csv_cohort,
    load_hecktor_cohort,
)

REPO = Path(__file__).resolve().parents[1]

REAL_CSV = REPO.parent / "shared" / "data" / "real" / "clinical" / "tcia_hn1_hecktor2025_columns.csv"


def _fmt(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# ------------------------------------------------------------------------------------------------------------- (a)
def part_a(args: argparse.Namespace) -> list[str]:
    from hecktor.synthetic import generate_cohort

    cohort_dir = args.work / f"synthetic_{args.cases}_{args.cohort_seed}"
    if not (cohort_dir / "cohort.json").is_file():
        print(f"generating {args.cases} small synthetic cases in {cohort_dir} ...", flush=True)
        generate_cohort(cohort_dir, cases=args.cases, seed=args.cohort_seed, size="small", overwrite=True,
                        progress=True)
    description = json.loads((cohort_dir / "cohort.json").read_text())
    plan = BoxPlan(input_shape_zyx=(args.input_size,) * 3)
    started = time.perf_counter()
    cohort = load_hecktor_cohort(cohort_dir, plan, cache_dir=args.work / "cache", progress=True)
    preprocessing_s = time.perf_counter() - started
    with open(cohort_dir / "true_risk.csv", newline="") as handle:
        truth = {row["PatientID"]: float(row["true_log_hazard"]) for row in csv.DictReader(handle)}
    true_risk = np.asarray([truth[pid] for pid in cohort.patient_ids])
    folds = make_folds(cohort.event, 5, seed=args.seed, groups=cohort.centres)
    oracle = [concordance_index(cohort.time[v], cohort.event[v], true_risk[v]) for _, v in folds]

    network = {**NETWORK_PRESETS[args.network], **({"conv1_stride": args.conv1_stride} if args.conv1_stride else {})}
    budget = (f"{args.network} backbone, input {args.input_size}³, {args.epochs} epochs, batch {args.batch_size}, "
              f"lr {args.lr:g}, early stopping on {args.early_stopping_fraction:.0%} of each fold's training set, "
              f"device {args.device or 'auto'}, {torch.get_num_threads()} CPU threads")
    rows = []
    for mode in ("clinical", "imaging", "fusion"):
        config = TrainingConfig(mode=mode, n_folds=5, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
                                learning_rate=args.lr, early_stopping_fraction=args.early_stopping_fraction,
                                network=network, survival={"kind": "coxph", "alpha": args.alpha}, device=args.device,
                                threads=torch.get_num_threads())  # --threads; the trainer's default is all cores
        print(f"training {mode} ...", flush=True)
        result = cross_validate(cohort, config, args.work / f"run_{mode}_{args.cases}", split=folds, progress=True)
        metrics = result.metrics()
        rows.append((mode, metrics["cindex_folds"], metrics["cindex_pooled_oof"], metrics["train_seconds"]))
        print(f"  {mode}: {_fmt(metrics['cindex_folds'])} in {metrics['train_seconds']:.0f} s", flush=True)
    rows.append(("oracle (true log-hazard)", oracle, concordance_index(cohort.time, cohort.event, true_risk), 0.0))

    lines = [
        f"### (a) Seed Table 3 analogue: {len(cohort)} synthetic small cases (cohort seed {args.cohort_seed}, "
        f"{cohort.n_events} relapses, oracle C-index of the whole cohort {description['oracle_c_index']:.3f})",
        "",
        f"Training budget: {budget}. Same 5 folds for every row. Preprocessing (once, cached): "
        f"{preprocessing_s:.0f} s.",
        "",
        "| model | mean OOF C-index ± SD over folds | pooled OOF C-index | per-fold C-index | training time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, per_fold, pooled, seconds in rows:
        per = ", ".join(f"{c:.3f}" for c in per_fold)
        lines.append(f"| {name} | {_fmt(per_fold)} | {pooled:.3f} | {per} | {seconds:.0f} |")
    fusion, oracle_mean = np.mean(rows[2][1]), np.mean(oracle)
    lines += ["", f"Fusion − oracle: {fusion - oracle_mean:+.3f} (target ≥ −0.05); fusion − clinical: "
              f"{fusion - np.mean(rows[0][1]):+.3f}; fusion − imaging: {fusion - np.mean(rows[1][1]):+.3f}.",
              "", "The oracle scores the true log-hazard, built from every true covariate (HPV status and the values "
              "later blanked as missing included); the models see the recorded table, and the default clinical "
              "features leave HPV status out (the test ehr.json does not carry it)."]
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
        lines.append(f"| {name} | ridge Cox, alpha {survival['alpha']:g}{default} | {_fmt(metrics['cindex_folds'])} | "
                     f"{metrics['cindex_pooled_oof']:.3f} | {per} |")
    lines += ["", "Reference: a ridge Cox model on the seven seed features reaches about 0.56 on this table."]
    return lines


# ------------------------------------------------------------------------------------------------------------- (c)
def _random_fusion_ensemble(n_folds: int = 5, seed: int = 0) -> RiskPredictor:
    """A 5-fold full-size ResNet-18 fusion ensemble with random weights (timing does not depend on their values)."""
    rng = np.random.default_rng(seed)
    rows = [{"Age": str(40 + i), "Gender": str(i % 2), "Tobacco Consumption": str(i % 2), "Alcohol Consumption": "0",
             "Performance Status": str(i % 3), "Treatment": str(i % 2), "M-stage": "M0"} for i in range(30)]
    folds = []
    for k in range(n_folds):
        encoder = ClinicalEncoder().fit(rows)
        torch.manual_seed(k)
        network = FusedFeatureExtractor(encoder.n_features, mode="fusion", **NETWORK_PRESETS["resnet18"]).eval()
        survival = build_survival_model({"kind": "coxph", "alpha": 10.0}).fit(
            rng.normal(size=(60, network.feature_dim)), rng.uniform(100, 2000, 60), rng.random(60) < 0.4)
        folds.append(FoldModel(survival=survival, network=network, encoder=encoder, cindex=0.6 + 0.01 * k))
    return RiskPredictor(folds, ensemble_weights([f.cindex for f in folds]), BoxPlan(), "fusion", device="cpu")


def part_c(args: argparse.Namespace) -> list[str]:
    from hecktor.synthetic import make_case

    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("generating one realistic synthetic case and a random 5-fold ResNet-18 bundle ...", flush=True)
        case = make_case(args.seed, "realistic")
        write_gc_input(case.ct, case.pet, tmp / "input", ehr=case.ehr(task=2), seed=args.seed)
        _random_fusion_ensemble().to_bundle(tmp / "bundle")
        bundle_mb = sum(p.stat().st_size for p in (tmp / "bundle").iterdir()) / 2**20

        started = time.perf_counter()
        predictor = RiskPredictor.from_bundle(tmp / "bundle", device="cpu")
        load_s = time.perf_counter() - started
        runs = []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            ct = read_image(find_single_image(tmp / "input" / "images" / "ct"), "CT")
            pet = read_image(find_single_image(tmp / "input" / "images" / "pet"), "PET")
            read_s = time.perf_counter() - started
            cpu_started = time.process_time()
            risk = predictor.predict(ct, pet, case.ehr(task=2))
            cpu_s = time.process_time() - cpu_started
            runs.append({"read_s": read_s, **predictor.last_report.timings, "cpu_s": cpu_s, "risk": risk})
            print(f"  run {repeat + 1}: read {read_s:.2f} s, predict {predictor.last_report.timings['total_s']:.2f} s",
                  flush=True)
    first, rest = runs[0], runs[1:] or runs
    median = {k: statistics.median(r[k] for r in rest) for k in ("read_s", "preprocess_s", "clinical_s", "features_s",
                                                                  "survival_s", "total_s", "cpu_s")}
    ct_size = "×".join(str(s) for s in case.ct.GetSize())
    pet_size = "×".join(str(s) for s in case.pet.GetSize())
    lines = [
        "### (c) Per-case inference time, 5-fold fusion ensemble, full-size ResNet-18 at 96³, CPU, 2 threads",
        "",
        f"One `realistic` synthetic case (CT {ct_size}, PET {pet_size}) read from `.mha`; bundle "
        f"{bundle_mb:.0f} MB, loaded in {load_s:.1f} s (once per container run). {args.repeats} runs; first run "
        "and the median of the later runs.",
        "",
        "| stage | first run (s) | median of later runs (s) |",
        "| --- | --- | --- |",
    ]
    for key, label in (("read_s", "read CT + PET"), ("preprocess_s", "preprocess (localise, box, resample, normalise)"),
                       ("clinical_s", "clinical encoding (5 folds)"), ("features_s", "networks (5 folds)"),
                       ("survival_s", "Cox models + ensemble (5 folds)")):
        lines.append(f"| {label} | {first[key]:.2f} | {median[key]:.2f} |")
    per_case = first["read_s"] + first["total_s"]
    lines.append(f"| **read + predict** | **{per_case:.2f}** | **{median['read_s'] + median['total_s']:.2f}** |")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines += ["", f"Target ≤ 20 s per case; with bundle loading the first case takes {per_case + load_s:.1f} s. "
              f"CPU time of predict (both threads together): first {first['cpu_s']:.1f} s, median "
              f"{median['cpu_s']:.1f} s; on 2 otherwise idle cores the wall time of predict approaches half of it. "
              f"Load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hecktor_bench_prognosis",
                        help="cohort, cache and runs of part (a) (reused between invocations)")
    parser.add_argument("--report", type=Path, default=None, help="Markdown report (default: WORK/bench_prognosis.md)")
    parser.add_argument("--seed", type=int, default=0, help="fold split, training and case seed")
    parser.add_argument("--cases", type=int, default=300, help="(a) synthetic cohort size")
    parser.add_argument("--cohort-seed", type=int, default=1, help="(a) synthetic cohort seed")
    parser.add_argument("--input-size", type=int, default=32,
                        help="(a) side of the Task 2 input cube (the plan's; the product uses 96)")
    parser.add_argument("--network", choices=sorted(NETWORK_PRESETS), default="tiny", help="(a) backbone")
    parser.add_argument("--conv1-stride", type=int, default=None, help="(a) stem stride override")
    parser.add_argument("--epochs", type=int, default=20, help="(a)")
    parser.add_argument("--batch-size", type=int, default=16, help="(a)")
    parser.add_argument("--lr", type=float, default=3e-3, help="(a)")
    parser.add_argument("--alpha", type=float, default=TrainingConfig().survival["alpha"], help="(a) ridge penalty")
    parser.add_argument("--early-stopping-fraction", type=float, default=0.2, help="(a)")
    parser.add_argument("--device", default="auto", help="(a) training device (auto: CUDA when available)")
    parser.add_argument("--threads", type=int, default=2, help="(a) CPU threads for training")
    parser.add_argument("--repeats", type=int, default=3, help="(c) inference runs")
    parser.add_argument("--real-csv", type=Path, default=REAL_CSV, help="(b) the HN1 table")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    sections = {"a": part_a, "b": part_b, "c": part_c}
    report = ["## Task 2 prognosis benchmark", ""]
    for part in sorted(args.parts):
        lines = sections[part](args)
        print("\n" + "\n".join(lines) + "\n", flush=True)
        report += lines + [""]
    args.report = args.report or args.work / "bench_prognosis.md"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(report))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
