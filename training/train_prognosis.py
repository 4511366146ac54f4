"""Cross-validated training of the Task 2 risk model and its baselines (seed Table 3).

Examples::

    python training/train_segmentation.py --data /data/hecktor2025 --out runs/seg --fold all   # Task 1 CV first
    python training/train_prognosis.py --mode biomarkers --segmentation runs/seg --data DATA --out runs/bio
    python training/train_prognosis.py --mode fusion+biomarkers --segmentation runs/seg --data DATA --out runs/fusbio
    python training/train_prognosis.py --mode fusion   --folds 5 --data /data/hecktor2025 --out runs/fusion
    python training/train_prognosis.py --mode imaging  --folds 5 --data /data/hecktor2025 --out runs/imaging
    python training/train_prognosis.py --mode clinical --folds 5 --csv  table.csv          --out runs/clinical
    python training/train_prognosis.py --mode clinical --survival-model coxnet --data DATA --out runs/coxnet
    python training/train_prognosis.py --mode clinical --folds 5 --repeats 5 --csv table.csv --out runs/clinical5

Prints the per-fold and mean out-of-fold C-index and writes ``RUN_DIR/metrics.json``
(``{"cindex_mean": ..., "cindex_folds": [...], ...}``), ``config.json``, ``folds.json``, ``oof.csv``, per-fold
training logs and the fold ensemble in ``RUN_DIR/model`` (export it with ``export_prognosis.py``). With
``--repeats R`` the cross-validation runs again with the fold seeds ``--seed`` + 1 ... + R - 1 and metrics.json adds
``cindex_mean_over_repeats``, ``cindex_sd_over_repeats`` (SD of the repeats' mean C-index), ``cindex_fold_sd_mean``
(mean of the per-split SDs) and ``repeats`` (each repeat's metrics); everything else in RUN_DIR, the exported
model included, is the first repeat's (seed ``--seed``). Settings not given take the defaults of
``hecktor.training.prognosis_config.TrainingConfig`` (shown below). Exit status 2 with one ``error:`` line for a wrong
input or option.

The biomarker modes (``biomarkers``, the default, and ``fusion+biomarkers``) need ``--segmentation``: a Task 1
cross-validation run whose out-of-fold masks give the training patients' biomarkers (written into
``RUN_DIR/fold_k/validation/`` of that run where absent) and whose folds are nested in the Task 2 bundle.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hecktor.errors import InputError
from hecktor.prognosis import PREDICTOR_MODES
from hecktor.survival import ENSEMBLE_RULES
from hecktor.survival_models import SURVIVAL_MODELS
from hecktor.training import cli
from hecktor.training.image_level import DEFAULT_CACHE, NETWORK_PRESETS
from hecktor.training.prognosis import train
from hecktor.training.prognosis_config import DEFAULT_MODE, TrainingConfig


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=PREDICTOR_MODES, default=DEFAULT_MODE,
                        help="biomarkers (record + PET biomarkers of the Task 1 segmentation; the best out-of-fold "
                             "C-index on the synthetic benchmark), fusion+biomarkers (the same + a network on a "
                             "tumour-centred crop with the mask), fusion (PET/CT box + record), imaging (PET/CT box "
                             "only) or clinical (record only, no network)")
    cli.add_cohort_arguments(parser, "Task 2")
    task = parser.add_argument_group("Task 2")
    cli.add_folds_file_argument(task)
    task.add_argument("--min-events", type=int, default=argparse.SUPPRESS, help="relapses in every batch")
    task.add_argument("--ties", choices=("breslow", "efron"), default=argparse.SUPPRESS, help="Cox-loss tie handling")
    task.add_argument("--early-stopping-fraction", type=float, default=argparse.SUPPRESS,
                      help="share of each fold's training patients held out to pick the best epoch (0: last epoch)")
    cli.add_network_arguments(task, NETWORK_PRESETS)
    task.add_argument("--survival", type=cli.json_object, default=argparse.SUPPRESS,
                      help="per-fold survival model as JSON, e.g. '{\"kind\": \"coxnet\", \"alpha\": 0.05, "
                           "\"l1_ratio\": 0.5}'")
    # The choices are read from the registry when the parser is built, so that a new kind appears without an edit.
    task.add_argument("--survival-model", choices=sorted(SURVIVAL_MODELS), metavar="KIND",
                      help=f"shortcut for --survival '{{\"kind\": KIND}}' (that kind's default parameters); kinds: "
                           f"{', '.join(sorted(SURVIVAL_MODELS))}")
    cli.add_feature_arguments(task)
    task.add_argument("--ensemble-rule", choices=ENSEMBLE_RULES, default=argparse.SUPPRESS,
                      help="fold weights of the ensemble (hecktor.survival.ensemble_weights)")
    cli.add_box_arguments(task, DEFAULT_CACHE)
    task.add_argument("--repeats", type=int, default=1,
                      help="cross-validate with this many fold seeds (--seed, --seed + 1, ...) and report the mean "
                           "and spread; the exported model is the first repeat's")
    seg = cli.add_segmentation_arguments(parser, "Task 2")
    seg.add_argument("--segmentation-tta", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                     help="mirror TTA of the nested segmentation at test time (the training masks are without)")
    seg.add_argument("--crop-mm", type=float, default=argparse.SUPPRESS,
                     help="fusion+biomarkers: edge of the tumour-centred cube (mm)")
    defaults = cli.config_defaults(TrainingConfig)
    defaults.pop("numeric_features")  # its help says what the default is
    defaults.pop("biomarkers")
    defaults.pop("mode")  # the command's default (DEFAULT_MODE) is shown by argparse
    cli.show_defaults(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The run's config: TrainingConfig defaults, then the options given."""
    values = cli.config_values(args, TrainingConfig)
    values["network"] = cli.network_from_args(args, NETWORK_PRESETS)
    if args.survival_model is not None:
        kind = values.get("survival", {}).get("kind", args.survival_model)
        if kind != args.survival_model:
            raise InputError(f"--survival-model {args.survival_model} and --survival of kind {kind!r} disagree; "
                             "give the kind once")
        values["survival"] = {**values.get("survival", {}), "kind": args.survival_model}
    return TrainingConfig(**values)


def run(args: argparse.Namespace) -> None:
    train(config_from_args(args), **cli.cohort_inputs(args), segmentation=args.segmentation, repeats=args.repeats)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
