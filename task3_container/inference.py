"""HECKTOR 2025 Task 3 container: the HPV status of one case (``true`` = HPV-positive).

Reads ``INPUT/images/ct/<uuid>.*``, ``INPUT/images/pet/<uuid>.*`` (exactly one image each) and ``INPUT/ehr.json``
(Age, Gender, Tobacco Consumption, Alcohol Consumption, Performance Status, Treatment, M-stage; HPV status is what is
predicted, never an input). Writes ``OUTPUT/hpv-status.json``: one bare JSON boolean, ``true`` or ``false``. Runs as is
in the image and from the repository::

    python task3_container/inference.py --input IN --output OUT [--resources BUNDLE] [--device cpu]

Inputs and outcomes are Task 2's (the same fold ensemble handles them, :mod:`hecktor.diagnosis`):

* ``ehr.json`` absent, keys missing, nulls, numbers written as strings, unknown categories, extra keys: a status, with
  each odd value encoded as the fitted encoder's ``Unknown`` (extra keys ignored). A file that is not valid JSON, or
  not a JSON object: an error (below).
* any grid, flipped or oblique, any field of view; no brain in the PET: the box is placed below the top of the CT,
  with a warning. NaN voxels: replaced by the padding values, with a warning.
* flat placeholder images (1×1, 1×1×1; the platform's sanity check): the status is predicted from the clinical record
  with a blank image, with a warning.
* a missing folder or image, two images in a folder, an unreadable file, an all-NaN image, an empty PET, PET and CT
  that do not overlap, a malformed ``ehr.json``, a missing or inconsistent bundle: one line ``error: ...`` on
  stderr, exit status 2, and nothing written to OUTPUT.

Time budget: the platform stops a case at 10 min (``--time-limit``), start-up included. When the projected time
passes ``--time-budget`` (default 60 % of the limit), the folds of lowest ensemble weight are dropped (at least one
is kept), with a log line ``time budget: dropped ...``. The log's last line gives the probability and the threshold.
Everything here is :func:`hecktor.container.run` over :meth:`hecktor.diagnosis.HPVPredictor.predict`.
"""

from __future__ import annotations

import sys

from hecktor.container import main as run_case


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case (:func:`hecktor.container.main`, the bundle in ``resources/bundle`` beside this file);
    ``start_time`` (``time.time()`` scale) defaults to this process's start."""
    return run_case(3, __file__, argv, start_time=start_time)


if __name__ == "__main__":
    sys.exit(main())
