"""HECKTOR 2025 Task 1 container: GTVp (1) and GTVn (2) segmentation of one PET/CT case, on the input CT's grid.

Reads ``INPUT/images/ct/<uuid>.{mha,tif,tiff,nii,nii.gz}`` and ``INPUT/images/pet/<uuid>...`` (exactly one image
each; ``ehr.json`` is not used) and writes ``OUTPUT/images/tumor-lymph-node-segmentation/output.mha``: compressed
UInt8, same size, spacing, origin and direction as the CT. Runs as is in the image and from the repository::

    python task1_container/inference.py --input IN --output OUT [--resources BUNDLE] [--device cpu]

Inputs and outcomes:

* any grid, flipped or oblique, any field of view: the mask lies on the CT's grid. No brain in the PET (a field of
  view without the head): the region is placed below the top of the CT instead, with a warning.
* NaN voxels: replaced by the padding values, with a warning.
* flat placeholder images (1×1, 1×1×1; the platform's sanity check): an all-background mask on the CT's grid, with a
  warning.
* a missing folder or image, two images in a folder, an unreadable file, an all-NaN image, an empty PET, PET and CT
  that do not overlap, a missing or inconsistent bundle: one line ``error: ...`` on stderr, exit status 2, and
  nothing written to OUTPUT.

Time budget: the platform stops a case at 10 min (``--time-limit``), start-up included. When the projected time
passes ``--time-budget`` (default 60 % of the limit) test-time augmentation is dropped, then folds, with a log line
``time budget: dropped ...``. Progress and warnings go to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hecktor.budget import (DEFAULT_SAFETY, PLATFORM_LIMIT_S, console_logging, process_start_time, read_case,
                            segment_within_budget)
from hecktor.errors import HecktorError
from hecktor.io import write_mask
from hecktor.tasks import get_task
from hecktor.segment import Segmenter

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "resources" / "bundle"
logger = logging.getLogger("task1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HECKTOR 2025 Task 1: segment GTVp and GTVn on the CT's grid.")
    parser.add_argument("--input", type=Path, default=Path("/input"), help="case folder (default /input)")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder (default /output)")
    parser.add_argument("--resources", type=Path, default=DEFAULT_BUNDLE, help="model bundle (default: the image's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--time-limit", type=float, default=PLATFORM_LIMIT_S[1], help="platform limit per case (s)")
    parser.add_argument("--time-budget", type=float,
                        help=f"seconds to plan for, start-up included (default {DEFAULT_SAFETY:.0%} of the limit)")
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="no mirror test-time augmentation")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case; ``start_time`` (``time.time()`` scale) defaults to this process's start."""
    start_time = process_start_time() if start_time is None else start_time
    args = parse_args(argv)
    with console_logging():
        try:
            segmenter = Segmenter.from_bundle(args.resources, device=args.device)
            case = read_case(args.input, task=1)
            mask, report = segment_within_budget(segmenter, case.ct, case.pet, limit_s=args.time_limit,
                                                 budget_s=args.time_budget, start_time=start_time, tta=args.tta,
                                                 overlap=args.overlap)
            for line in case.warnings + report.warnings:
                logger.warning("%s", line)
            path = write_mask(mask, args.output / get_task(1).output)
        except HecktorError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        logger.info("wrote %s: %s", path, report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
