"""How far one 36-patient held-out C-index falls from the model's own: Task 2's ``biomarkers`` model at the demo's
size, trained on random draws of a cohort's patients and scored on the others, and on random 36-patient sets of them.

The demo trains on 96 patients (48 until 2026-12-07) and scores Task 2 on 36 held-out ones (issue 24's target:
C-index >= 0.75). This script shows what that target asks of a model whose ability is known. For each of ``--draws`` random draws of
``--train`` patients of a synthetic cohort with a Task 1 cross-validation's out-of-fold masks (the ``bench_hpv.py``
run behind the 2026 benchmark), it fits the ``biomarkers`` mode's model on them: the encoded record and the
scaled biomarkers, a ridge Cox model whose penalty an inner cross-validation chooses (``DEFAULT_SURVIVAL``). That is
one model on all the draw's patients, where the trainer keeps five, each on four fifths of them. It then scores it
on all the other patients (the model's C-index, little noise) and on ``--sets`` random sets of ``--held-out`` of
them (the demo's noise), beside the true log-hazard on the same sets (the oracle).

Example (the 300-case cohort and Task 1 run of ``docs/how-to/hecktor2026.md``, "Measured")::

    python benchmarks/bench_held_out_noise.py --data DIR300 --segmentation SEG300
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from hecktor.biomarkers import BiomarkerScaler
from hecktor.clinical import ClinicalEncoder
from hecktor.datasets import list_training_cases
from hecktor.metrics import concordance_index
from hecktor.survival_models import build_survival_model
from hecktor.synthetic import TRUE_RISK_CSV
from hecktor.training.biomarker_features import add_segmentation_features, write_validation_masks
from hecktor.training.prognosis_cohort import load_hecktor_cohort
from hecktor.training.prognosis_config import DEFAULT_SURVIVAL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="synthetic HECKTOR folder (Task 2/, true_risk.csv)")
    masks = parser.add_mutually_exclusive_group(required=True)
    masks.add_argument("--segmentation", type=Path, help="Task 1 cross-validation of its patients")
    masks.add_argument("--true-masks", action="store_true", help="the labels stand in for the out-of-fold masks")
    parser.add_argument("--train", type=int, default=96, help="training patients per draw (default 96, the demo's)")
    parser.add_argument("--held-out", type=int, default=36, help="patients of one held-out set (default 36)")
    parser.add_argument("--draws", type=int, default=20, help="random training draws (default 20)")
    parser.add_argument("--sets", type=int, default=50, help="held-out sets per draw (default 50)")
    parser.add_argument("--target", type=float, default=0.75, help="the C-index to reach (default 0.75)")
    return parser.parse_args(argv)


def true_log_hazards(data: Path, patient_ids: list[str]) -> np.ndarray:
    with open(data / TRUE_RISK_CSV, newline="") as handle:
        rows = {row["PatientID"]: float(row["true_log_hazard"]) for row in csv.DictReader(handle)}
    return np.asarray([rows[pid] for pid in patient_ids])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cohort = load_hecktor_cohort(args.data, with_images=False, progress=False)
    if args.true_masks:
        masks = {case.patient_id: case.label_path for case in list_training_cases(args.data, 1)}
    else:
        masks = dict(write_validation_masks(args.segmentation, progress=False))
    add_segmentation_features(cohort, args.data, masks, progress=False)
    oracle = true_log_hazards(args.data, cohort.patient_ids)
    n = len(cohort.patient_ids)
    if n < args.train + args.held_out:
        print(f"error: {n} patients; --train {args.train} and --held-out {args.held_out} need more", file=sys.stderr)
        return 2
    model_c, set_c, oracle_c = [], [], []
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        order = rng.permutation(n)
        train, rest = order[:args.train], order[args.train:]
        encoder = ClinicalEncoder().fit([cohort.rows[i] for i in train])
        scaler = BiomarkerScaler().fit([cohort.biomarkers[i] for i in train])
        features = np.concatenate([encoder.transform(cohort.rows), scaler.transform(cohort.biomarkers)], axis=1)
        model = build_survival_model(DEFAULT_SURVIVAL["biomarkers"]).fit(features[train], cohort.time[train],
                                                                         cohort.event[train])
        risk = model.predict_risk(features)
        model_c.append(concordance_index(cohort.time[rest], cohort.event[rest], risk[rest]))
        for _ in range(args.sets):
            chosen = rng.choice(rest, args.held_out, replace=False)
            set_c.append(concordance_index(cohort.time[chosen], cohort.event[chosen], risk[chosen]))
            oracle_c.append(concordance_index(cohort.time[chosen], cohort.event[chosen], oracle[chosen]))
    model_c, set_c, oracle_c = map(np.asarray, (model_c, set_c, oracle_c))
    print(f"{n} patients, {int(cohort.event.sum())} relapses; {args.draws} draws of {args.train} training patients, "
          f"{args.sets} held-out sets of {args.held_out} per draw; {time.perf_counter() - started:.0f} s\n")
    print(f"| C-index | mean ± SD | 5th-95th percentile | share >= {args.target} |\n| --- | --- | --- | --- |")
    for name, values in ((f"model, on the {n - args.train} patients not drawn", model_c),
                         (f"model, on {args.held_out} of them", set_c),
                         (f"true log-hazard, on the same {args.held_out}", oracle_c)):
        low, high = np.percentile(values, [5, 95])
        print(f"| {name} | {values.mean():.3f} ± {values.std():.3f} | {low:.3f}-{high:.3f} | "
              f"{np.mean(values >= args.target):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
