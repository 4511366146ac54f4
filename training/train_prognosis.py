"""Cross-validated training of the Task 2 risk model and its baselines (seed Table 3).

Examples::

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
``hecktor.training.prognosis.TrainingConfig`` (shown below). Exit status 2 with one ``error:`` line for a wrong
input or option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hecktor.errors import InputError
from hecktor.networks.fused import MODES
from hecktor.plan import BoxPlan
from hecktor.survival import ENSEMBLE_RULES
from hecktor.survival_models import SURVIVAL_MODELS
from hecktor.training import cli
from hecktor.training.prognosis import DEFAULT_CACHE, NETWORK_PRESETS, TrainingConfig, train


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, required=True,
                        help="fusion (PET/CT + clinical), imaging (PET/CT only) or clinical (record only, no network)")
    cli.add_data_arguments(parser, "HECKTOR folder holding 'Task 2/' (images and its CSV)",
                           data_default="none; give --data or --csv")
    parser.add_argument("--csv", type=Path, help="clinical mode only, instead of --data: a CSV with the HECKTOR 2025 "
                                                 "columns (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    cli.add_training_arguments(parser, workers_help="processes preprocessing the images into the cache (0: this "
                                                    "process)")
    task = parser.add_argument_group("Task 2")
    task.add_argument("--folds-file", type=Path,
                      help="reuse the split of an earlier run (its folds.json) so modes compare on the same folds")
    task.add_argument("--min-events", type=int, default=argparse.SUPPRESS, help="relapses in every batch")
    task.add_argument("--ties", choices=("breslow", "efron"), default=argparse.SUPPRESS, help="Cox-loss tie handling")
    task.add_argument("--early-stopping-fraction", type=float, default=argparse.SUPPRESS,
                      help="share of each fold's training patients held out to pick the best epoch (0: last epoch)")
    task.add_argument("--network", dest="network_preset", choices=sorted(NETWORK_PRESETS), default="resnet18",
                      help="backbone preset (tiny: a few thousand parameters, for tests and smoke runs)")
    task.add_argument("--network-config", type=cli.json_object, default={},
                      help="extra FusedFeatureExtractor arguments as JSON (inline or file), e.g. '{\"dropout\": 0.1}'")
    task.add_argument("--survival", type=cli.json_object, default=argparse.SUPPRESS,
                      help="per-fold survival model as JSON, e.g. '{\"kind\": \"coxnet\", \"alpha\": 0.05, "
                           "\"l1_ratio\": 0.5}'")
    # The choices are read from the registry when the parser is built, so that a new kind appears without an edit.
    task.add_argument("--survival-model", choices=sorted(SURVIVAL_MODELS), metavar="KIND",
                      help=f"shortcut for --survival '{{\"kind\": KIND}}' (that kind's default parameters); kinds: "
                           f"{', '.join(sorted(SURVIVAL_MODELS))}")
    task.add_argument("--features", dest="clinical_features", type=cli.comma_list, default=argparse.SUPPRESS,
                      help="comma-separated clinical fields to encode")
    task.add_argument("--numeric-features", type=cli.comma_list, default=argparse.SUPPRESS,
                      help="comma-separated numeric fields among --features (default: Age when present)")
    task.add_argument("--ensemble-rule", choices=ENSEMBLE_RULES, default=argparse.SUPPRESS,
                      help="fold weights of the ensemble (hecktor.survival.ensemble_weights)")
    task.add_argument("--plan", type=Path, help="preprocessing plan JSON (default: the library's BoxPlan(), 96^3)")
    task.add_argument("--cache-dir", "--cache", type=Path, default=DEFAULT_CACHE,
                      help="cache of preprocessed inputs (keyed by the plan's digest); env HECKTOR_CACHE")
    task.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                      help="torch's CPU threads while training (all cores: the cores this process may run on, or "
                           "$OMP_NUM_THREADS where set)")
    task.add_argument("--repeats", type=int, default=1,
                      help="cross-validate with this many fold seeds (--seed, --seed + 1, ...) and report the mean "
                           "and spread; the exported model is the first repeat's")
    defaults = cli.config_defaults(TrainingConfig)
    defaults.pop("numeric_features")  # its help says what the default is
    cli.show_defaults(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The run's config: TrainingConfig defaults, then the options given."""
    values = cli.config_values(args, TrainingConfig)
    values["network"] = {**NETWORK_PRESETS[args.network_preset], **args.network_config}
    if args.survival_model is not None:
        kind = values.get("survival", {}).get("kind", args.survival_model)
        if kind != args.survival_model:
            raise InputError(f"--survival-model {args.survival_model} and --survival of kind {kind!r} disagree; "
                             "give the kind once")
        values["survival"] = {**values.get("survival", {}), "kind": args.survival_model}
    return TrainingConfig(**values)


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    if "run_dir" not in args:
        raise InputError("--out is required: the run folder to write")
    train(config, args.run_dir, data=getattr(args, "data_root", None), csv=args.csv,
          plan=BoxPlan.load(args.plan) if args.plan is not None else None, cache_dir=args.cache_dir,
          split_file=args.folds_file, overwrite=args.overwrite, echo=lambda line: print(line, flush=True),
          repeats=args.repeats)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
