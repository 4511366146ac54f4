"""Train Task 1 segmentation networks (5-fold cross-validation) on data in the HECKTOR layout.

Examples::

    python training/train_segmentation.py --data-root DATA --run-dir runs/hecmamba --config training/configs/demo.json
    python training/train_segmentation.py --data-root DATA --run-dir runs/unet --network unet --fold 0 --epochs 50
    torchrun --nproc_per_node 4 training/train_segmentation.py --data-root DATA --run-dir runs/hecmamba --fold all
    python training/train_segmentation.py --data-root DATA --run-dir runs/hecmamba --resume

Settings come from the defaults of ``seg_trainer.TrainingConfig``, then the ``--config`` file, then the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run_log / seg_trainer live next to this script

from hecktor.errors import HecktorError, InputError  # noqa: E402
from hecktor.plan import RegionPlan  # noqa: E402
from seg_trainer import TrainingConfig, load_config_file, train  # noqa: E402


def _json_object(text: str) -> dict:
    """A JSON object given inline or as the path of a JSON file."""
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or JSON file: {text!r} ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _fold(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fold takes a fold index, a comma-separated list, or 'all'; got {text!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--data-root", help="folder holding 'Task 1/' (HECKTOR layout)")
    parser.add_argument("--run-dir", help="output folder of the run (checkpoints, metrics, folds.json)")
    parser.add_argument("--config", help="JSON training config (see training/configs/)")
    parser.add_argument("--plan", help="preprocessing plan JSON (default: the config's plan, else RegionPlan())")
    parser.add_argument("--network", choices=["hecmamba", "unet", "vnet", "unetr", "segresnet"])
    parser.add_argument("--network-config", type=_json_object, help="JSON object (or file) overriding network sizes")
    parser.add_argument("--fold", type=_fold, dest="folds", help="fold index, comma-separated indices, or 'all'")
    parser.add_argument("--n-folds", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--loss", choices=["dicece", "dice"])
    parser.add_argument("--no-augmentation", dest="augmentation", action="store_false")
    parser.add_argument("--positive-fraction", type=float, help="share of patches centred on tumour (GTVp and GTVn equally often)")
    parser.add_argument("--val-every", type=int, help="validate every N epochs")
    parser.add_argument("--val-overlap", type=float)
    parser.add_argument("--around", choices=["region", "mask"], help="cached training region")
    parser.add_argument("--cache-dir", help="preprocessing cache (default: RUN_DIR/../cache)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, help="data-loader workers per process")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, help="tqdm progress bars (rank 0)")
    parser.add_argument("--resume", action="store_true", default=False, help="continue from the last checkpoints")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    values = load_config_file(args.config) if "config" in args else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "plan", "resume")}
    if "network" in flags and flags["network"] != values.get("network", flags["network"]):
        values.pop("network_config", None)  # the config file's sizes belong to its own network
    values.update(flags)
    if "plan" in args:
        values["plan"] = RegionPlan.load(args.plan).to_dict()
    for required in ("data_root", "run_dir"):
        if required not in values:
            raise InputError(f"--{required.replace('_', '-')} is required (or set {required!r} in the config)")
    return TrainingConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summaries = train(config_from_args(args), resume=args.resume)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") != "0":
        return 0
    for summary in summaries:
        best = summary["best"]
        score = best.get("val_dice_mean", float("nan"))
        print(f"fold {summary['fold']}: best epoch {best.get('epoch')} val_dice_mean {score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
