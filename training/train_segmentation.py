"""Train Task 1 segmentation networks (5-fold cross-validation) on data in the HECKTOR layout.

Examples::

    python training/train_segmentation.py --data DATA --out runs/hecmamba --config training/configs/demo.json
    python training/train_segmentation.py --data DATA --out runs/unet --network unet --fold 0 --epochs 50
    torchrun --nproc_per_node 4 training/train_segmentation.py --data DATA --out runs/hecmamba --fold all
    python training/train_segmentation.py --data DATA --out runs/hecmamba --resume
    python training/train_segmentation.py --data DATA --out runs/dynunet --network dynunet --loss batch_dicece

Settings come from the defaults of ``hecktor.training.segmentation.TrainingConfig`` (shown below), then the
``--config`` file, then the options given. Exit status 2 with one ``error:`` line for a wrong input or option.

Before anything else the trainer checks the Task 1 folder as ``hecktor-check-data`` does (the same lines; an error
stops it there, exit status 2), and at the end of preprocessing it shows what was repaired (kept in
``RUN_DIR/data_repairs.json``).

A killed run continues with ``--resume`` from each fold's last complete checkpoint (a damaged one is moved aside
with a warning and the one before it used). Settings not given are the run's ``config.json``'s; a setting given
otherwise is refused with the list of differences, except those that may change on ``--resume`` (the folders, the
folds, --epochs, validation, device, workers, progress), recorded in ``RUN_DIR/config_changes.json`` with the
iteration they apply from. Under ``torchrun``, when a rank dies the others stop with one
``error:`` line and exit status 1; a rank that hangs is given up after ``$HECKTOR_DIST_TIMEOUT_S`` seconds
(default 1800).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hecktor.errors import InputError
from hecktor.plan import RegionPlan
from hecktor.training import cli
from hecktor.training.segmentation import (LOSS_SPECS, LOSSES, MAY_CHANGE_ON_RESUME, VALIDATION_DIR, TrainingConfig,
                                          load_config_file, read_run_config, train)

NETWORKS = ("hecmamba", "unet", "vnet", "unetr", "segresnet", "dynunet")


def class_weights(text: str) -> list[float]:
    """``--ce-class-weights 1,1,2``: three numbers (background, GTVp, GTVn)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    cli.add_data_arguments(parser, "folder holding 'Task 1/' (HECKTOR layout)",
                           data_default="the --config file's data_root; required",
                           out_default="the --config file's run_dir; required")
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="JSON training config, see training/configs/ (default: none)")
    parser.add_argument("--plan", default=argparse.SUPPRESS,
                        help="preprocessing plan JSON (default: the config's plan, else RegionPlan())")
    cli.add_training_arguments(parser, workers_help="processes per rank that build the preprocessing cache and load "
                                                    "patches (all cores: shared among the ranks on this machine)")
    task = parser.add_argument_group("Task 1")
    task.add_argument("--network", choices=NETWORKS, default=argparse.SUPPRESS, help="segmentation network")
    task.add_argument("--network-config", type=cli.json_object, default=argparse.SUPPRESS,
                      help="JSON object (or file) overriding network sizes (default: the network's defaults)")
    task.add_argument("--iterations-per-epoch", type=int, default=argparse.SUPPRESS,
                      help="batches per epoch and process")
    task.add_argument("--loss", choices=LOSSES, default=argparse.SUPPRESS,
                      help="; ".join(f"{name}: {spec.description}" for name, spec in LOSS_SPECS.items()))
    task.add_argument("--dice-include-background", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                      help="background class in the Dice term (default: the loss's convention)")
    task.add_argument("--ce-class-weights", type=class_weights, default=argparse.SUPPRESS, metavar="B,P,N",
                      help="cross-entropy weights of background, GTVp, GTVn")
    task.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                      help="train the coarser decoder outputs too (default: on for hecmamba and dynunet)")
    task.add_argument("--predict-validation", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                      help="after each fold, segment its validation cases into RUN_DIR/fold_K/validation/")
    task.add_argument("--positive-fraction", type=float, default=argparse.SUPPRESS,
                      help="share of patches centred on tumour (GTVp and GTVn equally often)")
    task.add_argument("--val-every", type=int, default=argparse.SUPPRESS,
                      help="validate every N epochs and after the last (0: never; the last epoch is the best)")
    task.add_argument("--val-overlap", type=float, default=argparse.SUPPRESS, help="sliding-window overlap")
    task.add_argument("--around", choices=["region", "mask"], default=argparse.SUPPRESS, help="cached training region")
    task.add_argument("--cache-dir", default=argparse.SUPPRESS,
                      help="preprocessing cache (default: RUN_DIR/../cache)")
    task.add_argument("--amp", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                      help="mixed precision on CUDA")
    task.add_argument("--resume", action="store_true",
                      help="continue from the last checkpoints; settings not given are the run's config.json's, and "
                           f"only these may differ: {', '.join(MAY_CHANGE_ON_RESUME)}")
    defaults = cli.config_defaults(TrainingConfig)
    defaults.pop("cache_dir")  # its help says where the default lies
    cli.show_defaults(parser, defaults)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    """The run's config: TrainingConfig defaults (with ``--resume``, the run's ``config.json`` instead), then the
    ``--config`` file, then the options given."""
    values = load_config_file(args.config) if "config" in args else {}
    flags = cli.config_values(args, TrainingConfig)
    run_dir = flags.get("run_dir", values.get("run_dir"))
    if args.resume and run_dir is not None:  # a setting not given is the recorded one, not the default
        values = {**read_run_config(run_dir), **values}
    if "network" in flags and flags["network"] != values.get("network", flags["network"]):
        values.pop("network_config", None)  # the config file's sizes belong to its own network
    values.update(flags)
    if "plan" in args:
        values["plan"] = RegionPlan.load(args.plan).to_dict()
    for required, option in (("data_root", "--data"), ("run_dir", "--out")):
        if required not in values:
            raise InputError(f"{option} is required (or set {required!r} in the config)")
    return TrainingConfig.from_dict(values)


def run(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    summaries = train(config, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":
        return
    for summary in summaries:
        best = summary["best"]
        if "val_dice_mean" in best:
            print(f"fold {summary['fold']}: best epoch {best.get('epoch')} val_dice_mean {best['val_dice_mean']:.4f}")
        else:
            print(f"fold {summary['fold']}: epoch {best.get('epoch')} kept, not validated (--val-every 0)")
    if any((Path(config.run_dir) / f"fold_{s['fold']}" / VALIDATION_DIR).is_dir() for s in summaries):
        print(f"out-of-fold predictions in {config.run_dir}/fold_K/{VALIDATION_DIR}/; next: "
              f"python training/choose_postprocessing.py {config.run_dir}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
