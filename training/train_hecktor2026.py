"""Train and export the HECKTOR 2026 algorithm: the GTVp/GTVn mask, the T and N stage and the RFS time of a case.

Examples::

    python -m hecktor.synthetic --out /data/syn --cases 300 --edition-2026      # or the organisers' 2026 data
    python training/train_segmentation.py --data /data/syn --out runs/seg --fold all   # Task 1 CV first
    python training/train_hecktor2026.py train --data /data/syn --segmentation runs/seg --out runs/h26
    python training/train_hecktor2026.py export runs/h26           # -> hecktor2026_container/resources/bundle

``train`` reads ``DATA/Task 2026`` (images, labels and HECKTOR_2026_Training.csv), measures every patient's Task 1
out-of-fold mask (PET biomarkers and the staging measurements: the primary's greatest diameter, the nodes, their
side), and cross-validates per fold a Cox model with its Breslow baseline survival (the RFS time is the restricted
mean survival time) and multinomial logistic T and N stagers. The bundle stages each of T and N by the rules (AJCC's
cut-offs), by the rules with cut-offs fitted to the training masks, or by the learned stager, whichever had the
highest out-of-fold balanced accuracy. It prints one line per fold and a summary, and writes
``RUN_DIR/metrics.json``, ``config.json``, ``folds.json``, ``oof.csv``, ``measurements.json`` and the bundle in
``RUN_DIR/model`` (the Task 1 bundle of every fold nested in it). ``export`` copies that bundle, verified, to the
container's folder (or ``--out``). Exit status 2 with one ``error:`` line for a wrong input or
option. How-to: docs/how-to/hecktor2026.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hecktor.tasks import get_task
from hecktor.training import cli
from hecktor.training.hecktor2026 import Hecktor2026Config, export_bundle, train

DEFAULT_OUT = Path(__file__).resolve().parents[1] / get_task(2026).bundle_dir


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,export}")
    trainer = commands.add_parser("train", help="cross-validate and write a run folder", description=__doc__,
                                  formatter_class=cli.HelpFormatter)
    trainer.error = parser.error  # one error line, exit status 2, as the parent parser
    trainer.add_argument("--data", type=Path, required=True, help="HECKTOR folder holding 'Task 2026/'")
    trainer.add_argument("--segmentation", type=Path, required=True, metavar="TASK1_RUN",
                         help="Task 1 cross-validation run (train_segmentation.py --fold all) of the same patients")
    trainer.add_argument("--out", dest="run_dir", type=Path, required=True, help="run folder to write")
    trainer.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    trainer.add_argument("--folds", dest="n_folds", type=int, default=argparse.SUPPRESS, help="folds")
    trainer.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="seed of the folds")
    cli.add_folds_file_argument(trainer)
    trainer.add_argument("--stager-c", type=float, default=argparse.SUPPRESS,
                         help="inverse L2 strength of the learned stagers")
    trainer.add_argument("--stager-inputs", choices=("measurements", "all"), default=argparse.SUPPRESS,
                         help="what the learned stagers take: the staging measurements, or the record and the "
                              "biomarkers too")
    trainer.add_argument("--segmentation-budget-share", dest="budget_share", type=float, default=argparse.SUPPRESS,
                         help="share of the case's time left that the nested segmentation may plan to use")
    trainer.add_argument("--device", default=argparse.SUPPRESS, help="where missing out-of-fold masks are segmented")
    trainer.add_argument("--progress", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                         help="progress bars")
    cli.show_defaults(trainer, cli.config_defaults(Hecktor2026Config))
    exporter = commands.add_parser("export", help="copy a run's bundle for the container", description=__doc__,
                                   formatter_class=cli.HelpFormatter)
    exporter.error = parser.error
    exporter.add_argument("run_dir", type=Path, help="folder written by train --out")
    cli.add_bundle_out_arguments(exporter, DEFAULT_OUT)
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "export":
        predictor = export_bundle(args.run_dir, args.out, overwrite=args.overwrite)
        metrics = predictor.info.get("metrics", {})
        print(f"exported the HECKTOR 2026 ensemble of {len(predictor.folds)} folds (T by {predictor.stagers['T']}, "
              f"N by {predictor.stagers['N']}; out-of-fold C-index {metrics.get('cindex_mean', float('nan')):.3f}), "
              f"with the Task 1 model ({len(predictor.segmenter.networks)} folds) in segmentation/, to {args.out}")
        return
    config = Hecktor2026Config(**cli.config_values(args, Hecktor2026Config))
    train(config, args.run_dir, data=args.data, segmentation=args.segmentation, split_file=args.folds_file,
          overwrite=args.overwrite, echo=lambda line: print(line, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
