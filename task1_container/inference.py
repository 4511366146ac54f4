"""HECKTOR 2025 Task 1 container: GTVp (1) and GTVn (2) segmentation of one PET/CT case, on the input CT's grid.

Reads ``INPUT/images/ct/<uuid>.{mha,tif,tiff,nii,nii.gz}`` and ``INPUT/images/pet/<uuid>...`` (exactly one image
each; ``ehr.json`` is not used) and writes ``OUTPUT/images/tumor-lymph-node-segmentation/output.mha``: compressed
UInt8, same size, spacing, origin and direction as the CT. Runs as is in the image and from the repository::

    python task1_container/inference.py --input IN --output OUT [--resources BUNDLE] [--device cpu]

Inputs and outcomes. By default (the platform's) a case is answered whenever an answer can be formed, because a case
that exits non-zero or writes nothing is lost and a failed job can stop a submission's evaluation; ``--strict``
(local validation) turns each dropped input into an error. Warnings go to stdout, one line per thing dropped or
repaired.

* any grid, flipped or oblique, any field of view, upper-case suffixes (``.MHA``, ``.NII.GZ``): the mask lies on the
  CT's grid. No brain in the PET (a field of view without the head), or a brain outside the CT (PET and CT
  misregistered, or overlapping by a few slices): the region is placed below the top of the CT, with a warning.
* repaired, with a warning (in both modes): NaN voxels (padding values); a CT stored with a +1024 offset (no
  negative value: 1024 subtracted); a PET in Bq/ml (rescaled so that the body reads about 1 SUV); PET voxels far
  above any real uptake (1e20, float32's maximum: replaced by their neighbours' median); a single-frame 4-D image.
* dropped, with a warning (``--strict``: an error): a PET that is missing, doubled, unreadable, 4-D with several
  frames, all NaN, empty (constant) or not overlapping the CT: the CT is segmented alone (PET channel blank,
  region placed from the CT; all background if even that fails).
* a TIFF CT: read, with a warning that its origin and direction (not stored in TIFF) cannot be trusted.
* flat placeholder images (1×1, 1×1×1; the platform's sanity check): an all-background mask on the CT's grid, with a
  warning, in both modes.
* no output can exist: no input folder, no usable CT (missing, doubled, unreadable, all NaN: no grid to write on), a
  missing or inconsistent bundle, an output folder that cannot be written: one line ``error: ...`` on stderr, exit
  status 2, and no output file (one left by an earlier run is removed; a successful run replaces it atomically).
  Never a traceback.

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
