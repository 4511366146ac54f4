"""Export a Task 1 training run as a model bundle (each fold's weights, model.json, plan.json, SHA-256 manifest).

Examples::

    python training/export_segmentation.py runs/hecmamba
    python training/export_segmentation.py runs/demo --out /tmp/bundle --folds 0,1 --checkpoint last

The bundle is what ``hecktor.segment.Segmenter.from_bundle`` and the Task 1 container load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hecktor.errors import HecktorError  # noqa: E402
from seg_trainer import export_bundle  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "task1_container" / "resources" / "bundle"


def _folds(text: str) -> list[int]:
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--folds takes comma-separated fold indices, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="training run folder (the --run-dir of train_segmentation.py)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"bundle folder (default: {DEFAULT_OUT})")
    parser.add_argument("--checkpoint", choices=["best", "last"], default="best")
    parser.add_argument("--folds", type=_folds,
                        help="comma-separated fold indices (default: every fold with a checkpoint)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out, exported = export_bundle(args.run_dir, args.out, checkpoint=args.checkpoint, folds=args.folds)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported fold(s) {', '.join(map(str, exported))} ({args.checkpoint} checkpoints) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
