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
from pathlib import Path
from typing import Sequence

from hecktor.errors import InputError
from hecktor.networks.fused import MODES
from hecktor.plan import BoxPlan
from hecktor.training import cli
from hecktor.training.hpv import DEFAULT_CACHE, NETWORK_PRESETS, HPVTrainingConfig, train_hpv


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True,
                        help="fusion (PET/CT + clinical), imaging (PET/CT only) or clinical (logistic regression on "
                             "the record, no network)")
    cli.add_data_arguments(parser, "HECKTOR folder holding 'Task 3/' (images and its CSV)",
                           data_default="none; give --data or --csv")
    parser.add_argument("--csv", type=Path, help="clinical mode only, instead of --data: a CSV with the HECKTOR 2025 "
                                                 "columns and HPV Status (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    cli.add_training_arguments(parser, workers_help="processes preprocessing the images into the cache (0: this "
                                                    "process)")
    task = parser.add_argument_group("Task 3")
    task.add_argument("--folds-file", type=Path,
                      help="reuse the split of an earlier run (its folds.json) so modes compare on the same folds")
    task.add_argument("--early-stopping-fraction", type=float, default=argparse.SUPPRESS,
                      help="share of each fold's training patients held out to pick the best epoch and fit the "
                           "Platt calibration (0: last epoch, prevalence-shift calibration)")
    task.add_argument("--class-weighted", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                      help="each class weighs half of the loss (class_weight='balanced')")
    task.add_argument("--network", dest="network_preset", choices=sorted(NETWORK_PRESETS), default="resnet18",
                      help="backbone preset (tiny: a few thousand parameters, for tests and smoke runs)")
    task.add_argument("--network-config", type=cli.json_object, default={},
                      help="extra FusedFeatureExtractor arguments as JSON (inline or file), e.g. '{\"dropout\": 0.1}'")
    task.add_argument("--logistic-c", type=float, default=argparse.SUPPRESS,
                      help="clinical mode: inverse L2 strength of the logistic regression")
    task.add_argument("--calibration-folds", type=int, default=argparse.SUPPRESS,
                      help="clinical mode: inner folds whose out-of-sample logits fit the Platt calibration")
    task.add_argument("--features", dest="clinical_features", type=cli.comma_list, default=argparse.SUPPRESS,
                      help="comma-separated clinical fields to encode")
    task.add_argument("--numeric-features", type=cli.comma_list, default=argparse.SUPPRESS,
                      help="comma-separated numeric fields among --features (default: Age when present)")
    task.add_argument("--plan", type=Path, help="preprocessing plan JSON (default: the library's BoxPlan(), 96^3)")
    task.add_argument("--cache-dir", "--cache", type=Path, default=DEFAULT_CACHE,
                      help="cache of preprocessed inputs (keyed by the plan's digest); env HECKTOR_CACHE")
    task.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                      help="torch's CPU threads while training (all cores: the cores this process may run on, or "
                           "$OMP_NUM_THREADS where set)")
    defaults = cli.config_defaults(HPVTrainingConfig)
    defaults.pop("numeric_features")  # its help says what the default is
    cli.show_defaults(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace) -> HPVTrainingConfig:
    """The run's config: HPVTrainingConfig defaults, then the options given."""
    values = cli.config_values(args, HPVTrainingConfig)
    values["network"] = {**NETWORK_PRESETS[args.network_preset], **args.network_config}
    return HPVTrainingConfig(**values)


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    if "run_dir" not in args:
        raise InputError("--out is required: the run folder to write")
    train_hpv(config, args.run_dir, data=getattr(args, "data_root", None), csv=args.csv,
              plan=BoxPlan.load(args.plan) if args.plan is not None else None, cache_dir=args.cache_dir,
              split_file=args.folds_file, overwrite=args.overwrite, echo=lambda line: print(line, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
