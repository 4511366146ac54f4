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
``time budget: dropped ...``. Progress and warnings go to stdout. Everything here is
:func:`hecktor.container.run` over :meth:`hecktor.segment.Segmenter.predict`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hecktor.container import build_parser, run

TASK = 1
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "resources" / "bundle"


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case; ``start_time`` (``time.time()`` scale) defaults to this process's start."""
    parser = build_parser(TASK, DEFAULT_BUNDLE)
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="no mirror test-time augmentation")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap")
    args = parser.parse_args(argv)
    return run(TASK, args, start_time=start_time, tta=args.tta, overlap=args.overlap)


if __name__ == "__main__":
    sys.exit(main())
