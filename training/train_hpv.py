"""Cross-validated training of the Task 3 HPV-status classifier and its baselines.

Examples::

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
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hecktor.networks.fused import MODES
from hecktor.training import cli
from hecktor.training.hpv import DEFAULT_CACHE, NETWORK_PRESETS, HPVTrainingConfig, train_hpv


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True,
                        help="fusion (PET/CT + clinical), imaging (PET/CT only) or clinical (logistic regression on "
                             "the record, no network)")
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
    cli.add_feature_arguments(task)
    cli.add_box_arguments(task, DEFAULT_CACHE)
    defaults = cli.config_defaults(HPVTrainingConfig)
    defaults.pop("numeric_features")  # its help says what the default is
    cli.show_defaults(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace) -> HPVTrainingConfig:
    """The run's config: HPVTrainingConfig defaults, then the options given."""
    values = cli.config_values(args, HPVTrainingConfig)
    values["network"] = cli.network_from_args(args, NETWORK_PRESETS)
    return HPVTrainingConfig(**values)


def run(args: argparse.Namespace) -> None:
    train_hpv(config_from_args(args), **cli.cohort_inputs(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
