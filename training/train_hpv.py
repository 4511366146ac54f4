"""Cross-validated training of the Task 3 HPV-status classifier and its baselines.

Examples::

    python training/train_segmentation.py --data /data/hecktor2025 --out runs/seg --fold all   # Task 1 CV first
    python training/train_hpv.py --segmentation runs/seg --data /data/hecktor2025 --out runs/hpv-bio  # biomarkers
    python training/train_hpv.py --mode fusion   --folds 5 --data /data/hecktor2025 --out runs/hpv-fusion
    python training/train_hpv.py --mode imaging  --folds 5 --data /data/hecktor2025 --out runs/hpv-imaging \\
        --folds-file runs/hpv-fusion/folds.json
    python training/train_hpv.py --mode clinical --folds 5 --csv  table.csv          --out runs/hpv-clinical

Patients of unknown HPV status (an empty ``HPV Status`` cell) are left out. Prints each fold's out-of-fold AUC, then
the mean out-of-fold balanced accuracy (each fold at the threshold chosen on the other folds' out-of-fold
probabilities) and AUC, and writes ``RUN_DIR/metrics.json`` (``{"balanced_accuracy_mean": ...,
"balanced_accuracy_folds": [...], "auc_mean": ..., ...}``), ``config.json``, ``folds.json``, ``oof.csv``, per-fold
training logs and the fold ensemble in ``RUN_DIR/model`` (export it with ``export_hpv.py``). Settings not given take
the defaults of ``hecktor.training.hpv.HPVTrainingConfig`` (shown below). Exit status 2 with one ``error:`` line for
a wrong input or option.

``--mode biomarkers`` (the default when ``--segmentation`` is given; otherwise ``--mode`` is required) is Task 2's
biomarkers mode for Task 3: a logistic regression on the record and the PET biomarkers of the Task 1
cross-validation's out-of-fold masks; its Task 1 folds are nested in the bundle, which segments each case first.
When the pooled out-of-fold probabilities do not separate the classes (AUC < 0.55) the decision threshold is the
training prevalence, with one warning; the summary line and ``metrics.json`` (``threshold_fallback``) say so.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hecktor.diagnosis import HPV_MODES
from hecktor.errors import InputError
from hecktor.training import cli
from hecktor.training.calibration import THRESHOLD_RULES
from hecktor.training.hpv import DEFAULT_CACHE, NETWORK_PRESETS, HPVTrainingConfig, train_hpv


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=HPV_MODES, default=None,
                        help="biomarkers (logistic regression on the record + PET biomarkers of the Task 1 "
                             "segmentation; the default with --segmentation), fusion (PET/CT + clinical), imaging "
                             "(PET/CT only) or clinical (logistic regression on the record, no network); required "
                             "without --segmentation")
    cli.add_cohort_arguments(parser, "Task 3", " and HPV Status")
    task = parser.add_argument_group("Task 3")
    cli.add_folds_file_argument(task)
    task.add_argument("--early-stopping-fraction", type=float, default=argparse.SUPPRESS,
                      help="share of each fold's training patients held out to pick the best epoch and fit the "
                           "Platt calibration (0: last epoch, prevalence-shift calibration)")
    task.add_argument("--class-weighted", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                      help="each class weighs half of the loss (class_weight='balanced')")
    cli.add_network_arguments(task, NETWORK_PRESETS)
    task.add_argument("--logistic-c", type=float, default=argparse.SUPPRESS,
                      help="clinical mode: inverse L2 strength of the logistic regression")
    task.add_argument("--calibration-folds", type=int, default=argparse.SUPPRESS,
                      help="clinical mode: inner folds whose out-of-sample logits fit the Platt calibration")
    task.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default=argparse.SUPPRESS,
                      help="decision threshold: balanced (best balanced accuracy on the out-of-fold probabilities, "
                           "cross-fitted) or prevalence (the training prevalence: the Bayes threshold of calibrated "
                           "probabilities)")
    cli.add_feature_arguments(task)
    cli.add_box_arguments(task, DEFAULT_CACHE)
    seg = cli.add_segmentation_arguments(parser, "Task 3")
    seg.add_argument("--suv-reference", choices=("body", "absolute"), default=argparse.SUPPRESS,
                     help="SUV biomarkers relative to the body's median uptake (body) or as the PET gives them")
    defaults = cli.config_defaults(HPVTrainingConfig)
    defaults.pop("numeric_features")  # its help says what the default is
    for name in ("mode", "biomarkers", "segmentation_bundle"):  # the options' help says these
        defaults.pop(name)
    cli.show_defaults(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace) -> HPVTrainingConfig:
    """The run's config: HPVTrainingConfig defaults, then the options given."""
    values = cli.config_values(args, HPVTrainingConfig)
    values["network"] = cli.network_from_args(args, NETWORK_PRESETS)
    if args.mode is None:
        if args.segmentation is None:
            raise InputError("give --mode (fusion, imaging, clinical), or --segmentation TASK1_RUN for the biomarkers "
                             "mode")
        values["mode"] = "biomarkers"
    return HPVTrainingConfig(**values)


def run(args: argparse.Namespace) -> None:
    train_hpv(config_from_args(args), **cli.cohort_inputs(args), segmentation=args.segmentation)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
