"""Export a Task 2 training run as the container's model bundle.

Example::

    python training/export_prognosis.py runs/fusion                      # -> task2_container/resources/bundle
    python training/export_prognosis.py runs/fusion --out /tmp/bundle

The run's fold ensemble (``RUN_DIR/model``) is verified (manifest, SHA-256, plan digest), loaded in full (networks,
encoders, biomarker scalings, Cox models and, in the biomarker modes, the nested Task 1 bundle in ``segmentation/``)
and written again as a fresh bundle, which is then loaded back as the container would load it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hecktor.training import cli
from hecktor.training.prognosis import export_bundle

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "task2_container" / "resources" / "bundle"


def build_parser() -> argparse.ArgumentParser:
    return cli.export_parser(__doc__, "training/train_prognosis.py", DEFAULT_OUT)


def run(args: argparse.Namespace) -> None:
    predictor = export_bundle(args.run_dir, args.out, overwrite=args.overwrite)
    metrics = predictor.info.get("metrics", {})
    weights = ", ".join(f"{w:.3f}" for w in predictor.weights)
    nested = ""
    if predictor.uses_biomarkers:
        nested = f", with the Task 1 model ({len(predictor.segmenter.networks)} folds) in segmentation/"
    print(f"exported {predictor.mode} ensemble of {len(predictor.folds)} folds (weights {weights}; out-of-fold "
          f"C-index {metrics.get('cindex_mean', float('nan')):.3f}{nested}) to {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
