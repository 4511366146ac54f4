"""Export a Task 3 training run as the container's model bundle.

Example::

    python training/export_hpv.py runs/hpv-fusion                  # -> task3_container/resources/bundle
    python training/export_hpv.py runs/hpv-fusion --out /tmp/bundle

The run's fold ensemble (``RUN_DIR/model``: networks, encoders, calibrated logistic heads as JSON, the decision
threshold) is verified (manifest, SHA-256, plan digest), loaded in full and written again as a fresh bundle, which is
then loaded back as the container would load it. No pickle anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hecktor.training import cli
from hecktor.training.hpv import export_hpv_bundle

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "task3_container" / "resources" / "bundle"


def build_parser() -> argparse.ArgumentParser:
    return cli.export_parser(__doc__, "training/train_hpv.py", DEFAULT_OUT)


def run(args: argparse.Namespace) -> None:
    predictor = export_hpv_bundle(args.run_dir, args.out, overwrite=args.overwrite)
    metrics = predictor.info.get("metrics", {})
    weights = ", ".join(f"{w:.3f}" for w in predictor.weights)
    print(f"exported {predictor.mode} ensemble of {len(predictor.folds)} folds (weights {weights}; threshold "
          f"{predictor.threshold:.3f}; out-of-fold balanced accuracy "
          f"{metrics.get('balanced_accuracy_mean', float('nan')):.3f}, AUC {metrics.get('auc_mean', float('nan')):.3f}) "
          f"to {args.out}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
