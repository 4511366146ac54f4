"""``python -m hecktor.synthetic``: argument parsing and one call to :func:`hecktor.synthetic.generate_cohort`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hecktor.errors import HecktorError
from hecktor.synthetic.cohort import generate_cohort
from hecktor.synthetic.grids import SIZES


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hecktor.synthetic",
        description="Write a synthetic HECKTOR 2025-like training cohort (PET/CT, GTVp/GTVn labels, clinical "
        "table, recurrence-free survival drawn from a known model).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    parser.add_argument("--cases", required=True, type=_positive_int, help="number of patients")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size",
        choices=SIZES,
        default="small",
        help="small: ~56x56x64 CT / 40x40x60 PET (tests, demos); realistic: 512x512x200 CT / 200^3 PET",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier output in --out")
    parser.add_argument("--edition-2026", action="store_true",
                        help="also write the HECKTOR 2026 training layout (Task 2026/: Task 1's images and labels, "
                        "the 2026 table with HPV status and the T and N stages)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = generate_cohort(args.out, args.cases, args.seed, args.size, overwrite=args.overwrite, progress=True,
                                  edition_2026=args.edition_2026)
    except HecktorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    c_index = "undefined" if summary.oracle_c_index is None else f"{summary.oracle_c_index:.3f}"
    print(
        f"Wrote {summary.cases} {summary.size} cases to {summary.out_dir} in {summary.seconds:.1f} s "
        f"({summary.cases / summary.seconds:.1f} cases/s); events {summary.event_fraction:.0%}, "
        f"oracle C-index {c_index}"
    )
    return 0

