"""HECKTOR 2026 benchmark (issue 26's targets): T and N staging and the RFS time on a cohort's Task 1 out-of-fold
masks, every row on the same folds.

Example (the demo's 48-case Task 1 run, 2 folds, its cohort written again with the 2026 layout)::

    python -m hecktor.synthetic --out /tmp/demo48 --cases 48 --seed 0 --edition-2026
    python benchmarks/bench_hecktor2026.py --data /tmp/demo48 --segmentation demo_output/runs/segmentation \\
        --folds 3 --out /tmp/bench_hecktor2026.json

The Task 1 run must have segmented the same patients (its ``config.json``'s data root holds them in ``Task 1/``; the
2026 layout's ``Task 2026/`` repeats them); ``--true-masks`` lets the labels stand in for them instead (an upper
bound, without a Task 1 run). Rows: the out-of-fold masks' Dice (GTVp, GTVn, their mean, as the
challenge scores), the rules on the true masks (the ceiling of a stager that measures masks), the rules on the
out-of-fold masks, the rules with cut-offs fitted to each fold's training masks (the ``fitted`` stager), the learned
stagers (both input sets), and the C-index of the risk and of the RFS time, per fold
(equal by construction) and pooled. Prints a Markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hecktor.datasets import list_training_cases
from hecktor.images import read_image
from hecktor.metrics import dice
from hecktor.training.biomarker_features import add_segmentation_features, write_validation_masks
from hecktor.training.crossval import resolve_split
from hecktor.training.hecktor2026 import Hecktor2026Config, cross_validate, load_staging_cohort, measure_cohort


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="HECKTOR folder holding 'Task 2026/'")
    masks = parser.add_mutually_exclusive_group(required=True)
    masks.add_argument("--segmentation", type=Path, help="Task 1 cross-validation run")
    masks.add_argument("--true-masks", action="store_true",
                       help="the labels stand in for the out-of-fold masks: an upper bound (a perfect segmenter)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the 2026 cross-validation (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    parser.add_argument("--out", type=Path, help="JSON of the numbers (default: none)")
    return parser.parse_args(argv)


def oof_dice(cohort, data: Path, masks) -> dict[str, float]:
    """Mean Dice of GTVp and of GTVn of the out-of-fold masks against the labels, and their mean."""
    cases = {case.patient_id: case for case in list_training_cases(data, 2026)}
    scores = {1: [], 2: []}
    for pid in cohort.patient_ids:
        label = read_image(cases[pid].label_path, "label")
        predicted = read_image(masks[pid], "segmentation")
        for value in scores:
            scores[value].append(dice(sitk.GetArrayFromImage(predicted), sitk.GetArrayFromImage(label), value))
    gtvp, gtvn = float(np.nanmean(scores[1])), float(np.nanmean(scores[2]))
    return {"gtvp": gtvp, "gtvn": gtvn, "mean": (gtvp + gtvn) / 2}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cohort = load_staging_cohort(args.data)
    if args.true_masks:
        masks = {case.patient_id: case.label_path for case in list_training_cases(args.data, 2026)}
    else:
        masks = dict(write_validation_masks(args.segmentation, progress=False))
    missing = [pid for pid in cohort.patient_ids if pid not in masks]
    if missing:
        print(f"error: {len(missing)} patient(s) of {args.data} have no out-of-fold mask in {args.segmentation} "
              f"({', '.join(missing[:3])})", file=sys.stderr)
        return 2
    add_segmentation_features(cohort, args.data, masks, progress=False, task=2026)
    measure_cohort(cohort, args.data, masks, progress=False)
    segmentation = oof_dice(cohort, args.data, masks)
    rows = {}
    for inputs in ("measurements", "all"):
        config = Hecktor2026Config(n_folds=args.folds, seed=args.seed, stager_inputs=inputs, progress=False)
        split = resolve_split(None, cohort.event, cohort.centres, config)  # the same folds for every row
        rows[inputs] = cross_validate(cohort, config, split).metrics
    metrics = rows["measurements"]
    staging = metrics["staging"]
    result = {
        "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python benchmarks/bench_hecktor2026.py",
                                                                 *(argv or sys.argv[1:])]),
        "patients": metrics["patients"], "relapses": metrics["relapses"], "folds": args.folds,
        "oof_dice": segmentation,
        "t_balanced_accuracy": {"rules_true_mask": staging["t_rules_true_mask"]["balanced_accuracy"],
                                "rules_predicted_mask": staging["t_rules_predicted_mask"]["balanced_accuracy"],
                                "fitted": staging["t_fitted"]["balanced_accuracy"],
                                "learned_measurements": staging["t_learned"]["balanced_accuracy"],
                                "learned_all": rows["all"]["staging"]["t_learned"]["balanced_accuracy"]},
        "n_balanced_accuracy": {"rules_true_mask": staging["n_rules_true_mask"]["balanced_accuracy"],
                                "rules_predicted_mask": staging["n_rules_predicted_mask"]["balanced_accuracy"],
                                "fitted": staging["n_fitted"]["balanced_accuracy"],
                                "learned_measurements": staging["n_learned"]["balanced_accuracy"],
                                "learned_all": rows["all"]["staging"]["n_learned"]["balanced_accuracy"]},
        "recall": {key: staging[key]["recall"] for key in staging},
        "cindex": {"risk_folds": metrics["cindex_folds"], "rfs_time_folds": metrics["cindex_folds_rfs_time"],
                   "risk_pooled": metrics["cindex_pooled_oof_risk"],
                   "rfs_time_pooled": metrics["cindex_pooled_oof_rfs_time"],
                   "rfs_time_pooled_ensemble_map": metrics["cindex_pooled_oof_rfs_time_ensemble_map"]},
        "stagers": metrics["stagers"], "staging_cutoffs": metrics["staging_cutoffs"], "config": dataclasses.asdict(Hecktor2026Config(n_folds=args.folds)),
        "seconds": time.perf_counter() - started,
    }
    t, n, c = result["t_balanced_accuracy"], result["n_balanced_accuracy"], result["cindex"]
    print(f"{result['patients']} patients, {result['relapses']} relapses, {args.folds} folds; out-of-fold Dice GTVp "
          f"{segmentation['gtvp']:.3f}, GTVn {segmentation['gtvn']:.3f} (mean {segmentation['mean']:.3f})\n")
    print("| row | T balanced accuracy | N balanced accuracy |\n| --- | --- | --- |")
    for key, name in (("rules_true_mask", "rules on the true masks (ceiling)"),
                      ("rules_predicted_mask", "rules on the out-of-fold masks"),
                      ("fitted", "rules with cut-offs fitted per fold (fitted)"),
                      ("learned_measurements", "learned, measurements"), ("learned_all", "learned, all features")):
        print(f"| {name} | {t[key]:.3f} | {n[key]:.3f} |")
    print(f"\nC-index per fold: risk {', '.join(f'{v:.3f}' for v in c['risk_folds'])}; RFS time "
          f"{', '.join(f'{v:.3f}' for v in c['rfs_time_folds'])}; pooled out of fold: risk {c['risk_pooled']:.3f}, "
          f"RFS time {c['rfs_time_pooled']:.3f} (each fold's map), {c['rfs_time_pooled_ensemble_map']:.3f} (the "
          f"bundle's map); bundle stagers {result['stagers']}, cut-offs fitted on every patient "
          f"{result['staging_cutoffs']}; {result['seconds']:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
