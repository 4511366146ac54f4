"""Export a Task 2 training run as the container's model bundle.

Example::

    python training/export_prognosis.py runs/fusion                      # -> task2_container/resources/bundle
    python training/export_prognosis.py runs/fusion --out /tmp/bundle

The run's fold ensemble (``RUN_DIR/model``) is verified (manifest, SHA-256, plan digest), loaded in full (networks,
encoders, Cox models) and written again as a fresh bundle, which is then loaded back as the container would load it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hecktor.errors import HecktorError, InputError
from hecktor.prognosis import RiskPredictor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "task2_container" / "resources" / "bundle"


def export_run(run_dir: str | Path, out_dir: str | Path = DEFAULT_OUT) -> RiskPredictor:
    """Copy a run's verified fold ensemble to ``out_dir`` as a Task 2 bundle and return it as loaded from there."""
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (model_dir / "manifest.json").is_file():
        raise InputError(f"{run_dir} is not a finished Task 2 run (no {model_dir / 'manifest.json'}); "
                         "train it with training/train_prognosis.py")
    if Path(out_dir).resolve() == model_dir.resolve():
        raise InputError(f"--out {out_dir} is the run's own model folder; choose another folder")
    RiskPredictor.from_bundle(model_dir, device="cpu").to_bundle(out_dir)
    return RiskPredictor.from_bundle(out_dir, device="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a Task 2 training run as the container's model bundle.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="folder written by training/train_prognosis.py --out")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle folder (replaced if it exists)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        predictor = export_run(args.run_dir, args.out)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    metrics = predictor.info.get("metrics", {})
    weights = ", ".join(f"{w:.3f}" for w in predictor.weights)
    print(f"exported {predictor.mode} ensemble of {len(predictor.folds)} folds (weights {weights}; out-of-fold "
          f"C-index {metrics.get('cindex_mean', float('nan')):.3f}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
