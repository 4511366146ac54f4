"""HECKTOR 2025 Task 2 container: the recurrence-free-survival risk of one case (higher = earlier relapse).

Reads ``INPUT/images/ct/<uuid>.*``, ``INPUT/images/pet/<uuid>.*`` (exactly one image each) and ``INPUT/ehr.json``;
``images/ct-planning`` and ``images/rt-dose`` are not used. Writes ``OUTPUT/rfs.json``: one bare JSON number. Runs
as is in the image and from the repository::

    python task2_container/inference.py --input IN --output OUT [--resources BUNDLE] [--device cpu]

Inputs and outcomes:

* ``ehr.json`` absent, keys missing, nulls, numbers written as strings, unknown categories, extra keys: a risk, with
  each odd value encoded as the fitted encoder's ``Unknown`` (extra keys ignored). A file that is not valid JSON, or
  not a JSON object: an error (below).
* any grid, flipped or oblique, any field of view; no brain in the PET: the box is placed below the top of the CT,
  with a warning. NaN voxels: replaced by the padding values, with a warning.
* flat placeholder images (1×1, 1×1×1; the platform's sanity check): the risk is predicted from the clinical record
  with a blank image (a region outside every field of view), with a warning that it carries no imaging information.
* a missing folder or image, two images in a folder, an unreadable file, an all-NaN image, an empty PET, PET and CT
  that do not overlap, a malformed ``ehr.json``, a missing or inconsistent bundle: one line ``error: ...`` on
  stderr, exit status 2, and nothing written to OUTPUT.

Time budget: the platform stops a case at 15 min (``--time-limit``), start-up included. When the projected time
passes ``--time-budget`` (default 60 % of the limit), the folds of lowest ensemble weight are dropped (at least one
is kept), with a log line ``time budget: dropped ...``. Progress and warnings go to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hecktor.budget import (DEFAULT_SAFETY, PLATFORM_LIMIT_S, console_logging, predict_risk_within_budget,
                            process_start_time, read_case)
from hecktor.errors import HecktorError
from hecktor.io import write_json_number
from hecktor.tasks import get_task
from hecktor.prognosis import RiskPredictor

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "resources" / "bundle"
logger = logging.getLogger("task2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HECKTOR 2025 Task 2: recurrence-free-survival risk of one case.")
    parser.add_argument("--input", type=Path, default=Path("/input"), help="case folder (default /input)")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder (default /output)")
    parser.add_argument("--resources", type=Path, default=DEFAULT_BUNDLE, help="model bundle (default: the image's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--time-limit", type=float, default=PLATFORM_LIMIT_S[2], help="platform limit per case (s)")
    parser.add_argument("--time-budget", type=float,
                        help=f"seconds to plan for, start-up included (default {DEFAULT_SAFETY:.0%} of the limit)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case; ``start_time`` (``time.time()`` scale) defaults to this process's start."""
    start_time = process_start_time() if start_time is None else start_time
    args = parse_args(argv)
    with console_logging():
        try:
            predictor = RiskPredictor.from_bundle(args.resources, device=args.device)
            case = read_case(args.input, task=2)
            risk, report = predict_risk_within_budget(predictor, case.ct, case.pet, case.ehr, limit_s=args.time_limit,
                                                      budget_s=args.time_budget, start_time=start_time)
            for line in case.warnings + report.warnings:
                logger.warning("%s", line)
            path = write_json_number(risk, args.output / get_task(2).output)
        except HecktorError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        logger.info("wrote %s = %.6g: %s", path, risk, report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
