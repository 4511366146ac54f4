"""Choose a Task 1 run's postprocessing on its out-of-fold predictions (nnU-Net's way) and record it for export.

Examples::

    python training/choose_postprocessing.py runs/hecmamba
    python training/choose_postprocessing.py runs/hecmamba --data DATA --candidates 0.1,0.5,1

Reads ``RUN_DIR/fold_K/validation/<PID>.nii.gz`` (written by ``train_segmentation.py`` after each fold) and the
labels of the run's data (``--data`` to point elsewhere), tries "keep only the largest GTVp component" and "remove
GTVn components below V ml" for each candidate V, keeps a step only if it improves that label's challenge score
(GTVp mean Dice; GTVn (DSCagg + F1agg) / 2), prints the scores and writes ``RUN_DIR/postprocessing.json``, which
``export_segmentation.py`` puts into the bundle. See ``hecktor.postprocessing`` for the rules.
"""

from __future__ import annotations

import argparse
import sys

from hecktor.postprocessing import GTVN_MIN_VOLUME_CANDIDATES_ML
from hecktor.training import cli
from hecktor.training.segmentation import POSTPROCESSING_JSON, choose_run_postprocessing


def volumes(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated volumes in ml, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"volumes must be positive, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", help="training run folder (the --out of train_segmentation.py)")
    parser.add_argument("--data", default=None, help="HECKTOR folder with the labels (default: the run's data_root)")
    parser.add_argument("--candidates", type=volumes, default=list(GTVN_MIN_VOLUME_CANDIDATES_ML), metavar="V[,V...]",
                        help="GTVn minimum volumes tried, in ml")
    return parser


def _number(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def run(args: argparse.Namespace) -> None:
    record = choose_run_postprocessing(args.run_dir, args.data, args.candidates)
    report = record["report"]
    gtvp, gtvn = report["GTVp"], report["GTVn"]
    print(f"{report['n_cases']} out-of-fold case(s) from fold(s) {', '.join(map(str, record['folds']))}")
    print(f"GTVp mean Dice: raw {_number(gtvp['raw'])}, largest component {_number(gtvp['largest_component'])} -> "
          f"{'keep the largest component' if gtvp['chosen'] else 'no step'}")
    print(f"GTVn (DSCagg + F1agg) / 2: raw {_number(gtvn['raw']['score'])} (DSCagg {_number(gtvn['raw']['dsc_agg'])}, "
          f"F1agg {_number(gtvn['raw']['f1_agg'])})")
    for candidate in gtvn["candidates"]:
        print(f"  remove below {candidate['min_volume_ml']:g} ml: {_number(candidate['score'])} "
              f"(DSCagg {_number(candidate['dsc_agg'])}, F1agg {_number(candidate['f1_agg'])})")
    volume = gtvn["chosen_min_volume_ml"]
    print(f"  -> {f'remove GTVn components below {volume:g} ml' if volume else 'no step'}")
    print(f"written to {args.run_dir}/{POSTPROCESSING_JSON}; export_segmentation.py puts it into the bundle")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
