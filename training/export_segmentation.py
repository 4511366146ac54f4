"""Export a Task 1 training run as a model bundle (each fold's weights, model.json, plan.json, SHA-256 manifest).

Examples::

    python training/export_segmentation.py runs/hecmamba
    python training/export_segmentation.py runs/demo --out /tmp/bundle --fold 0,1 --checkpoint last

Deep-supervision heads are left out of the bundle; the postprocessing chosen by ``training/choose_postprocessing.py``
(``RUN_DIR/postprocessing.json``) goes in unless ``--no-postprocessing``. The bundle is what ``hecktor.segment.Segmenter.from_bundle`` and the Task 1 container load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hecktor.training import cli
from hecktor.training.segmentation import CHECKPOINTS, export_bundle

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "task1_container" / "resources" / "bundle"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", help="training run folder (the --out of train_segmentation.py)")
    cli.add_bundle_out_arguments(parser, DEFAULT_OUT)
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    parser.add_argument("--fold", "--folds", dest="folds", type=cli.fold_selection, default=None,
                        metavar="K[,K...]|all", help="folds to export (default: every fold with that checkpoint)")
    parser.add_argument("--postprocessing", action=argparse.BooleanOptionalAction, default=True,
                        help="include the postprocessing chosen by training/choose_postprocessing.py "
                             "(RUN_DIR/postprocessing.json), if there is one")
    return parser


def run(args: argparse.Namespace) -> None:
    out, exported = export_bundle(args.run_dir, args.out, checkpoint=args.checkpoint, folds=args.folds,
                                  postprocessing=args.postprocessing, overwrite=args.overwrite)
    print(f"exported fold(s) {', '.join(map(str, exported))} ({args.checkpoint} checkpoints) to {out}")
    chosen = json.loads((out / "model.json").read_text()).get("postprocessing")
    print(f"postprocessing: {chosen if chosen else 'none'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
