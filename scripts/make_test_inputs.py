"""Grand-Challenge input folders made from synthetic cases, for ``test_container.sh``.

Each case is laid out exactly as the platform mounts it at ``/input`` (UUID-named ``.mha`` files in ``images/ct`` and
``images/pet``, plus ``ehr.json``), one folder per case. Beside the folders, ``expected.json`` records what the
outputs must match, taken from the in-memory images before they were written (an oracle independent of the
container's own reading of the files): the CT grid (size, spacing, origin, direction) of every case.

The CT directions cycle through identity, axis-flipped and oblique so that a mask written off the CT grid is caught.

Example::

    python scripts/make_test_inputs.py --task 1 --out /tmp/inputs --cases 3
    # -> /tmp/inputs/case-000-identity/{images/ct/<uuid>.mha, images/pet/<uuid>.mha, ehr.json}, ..., expected.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import SimpleITK as sitk

from hecktor.datasets import write_gc_input
from hecktor.errors import HecktorError, InputError
from hecktor.synthetic import ORIENTATIONS, SIZES, make_case
from hecktor.tasks import get_task, task_numbers

EXPECTED_JSON = "expected.json"


def image_geometry(image: sitk.Image) -> dict[str, list[float] | list[int]]:
    """Size, spacing, origin and direction of an image as JSON-ready lists (x, y, z order, as SimpleITK)."""
    return {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }


def make_test_inputs(
    out_dir: str | Path, task: int, cases: int = 3, seed: int = 0, size: str = "small"
) -> dict[str, Any]:
    """Write ``cases`` input folders into ``out_dir`` and return the content of its ``expected.json``.

    Args:
        out_dir: folder to create; it must not hold anything yet.
        task: a task of the registry (:mod:`hecktor.tasks`); the ``ehr.json`` of Task 1 has no ``CenterID``, as on
            the platform.
        cases: number of cases; case ``k`` has CT direction ``ORIENTATIONS[k % 3]``.
        seed: synthetic-cohort seed (the same seed gives the same files).
        size: ``"small"`` (about 56x56x64 CT, seconds per case) or ``"realistic"`` (512x512x200 CT).
    """
    try:
        spec = get_task(task)
    except ValueError as error:
        raise InputError(str(error)) from None
    if cases < 1:
        raise InputError(f"cases must be at least 1, got {cases}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} is not empty; choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {"task": spec.number, "seed": seed, "size": size, "cases": {}}
    for index in range(cases):
        orientation = ORIENTATIONS[index % len(ORIENTATIONS)]
        case = make_case(seed, size, case_index=index, ct_orientation=orientation)
        name = f"case-{index:03d}-{orientation}"
        write_gc_input(case.ct, case.pet, out_dir / name, ehr=case.ehr(task), seed=seed * 1000 + index)
        expected["cases"][name] = {
            "ct": image_geometry(case.ct),
            "ct_orientation": case.ct_orientation,
            "pet_orientation": case.pet_orientation,
        }
    (out_dir / EXPECTED_JSON).write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Make Grand-Challenge input folders from synthetic cases.")
    parser.add_argument("--out", required=True, type=Path, help="folder to create (must be empty or absent)")
    parser.add_argument("--task", required=True, type=int, choices=task_numbers())
    parser.add_argument("--cases", type=int, default=3, help="number of cases (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-cohort seed (default 0)")
    parser.add_argument("--size", choices=SIZES, default="small", help="case size (default small)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        expected = make_test_inputs(args.out, args.task, args.cases, args.seed, args.size)
    except HecktorError as error:
        print(f"make_test_inputs.py: error: {error}", file=sys.stderr)
        return 1
    # One case folder name per line on stdout, for the calling script.
    for name in expected["cases"]:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
