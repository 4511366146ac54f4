"""HECKTOR 2025 Task 2 container: the recurrence-free-survival risk of one case (higher = earlier relapse).

Reads ``INPUT/images/ct/<uuid>.*``, ``INPUT/images/pet/<uuid>.*`` (exactly one image each) and ``INPUT/ehr.json``;
``images/ct-planning`` and ``images/rt-dose`` are not used. Writes ``OUTPUT/rfs.json``: one bare JSON number. Runs
as is in the image and from the repository::

    python task2_container/inference.py --input IN --output OUT [--resources BUNDLE] [--device cpu]

Inputs and outcomes. By default (the platform's) a case is answered whenever an answer can be formed, because a case
that exits non-zero or writes nothing is lost and a failed job can stop a submission's evaluation; ``--strict``
(local validation) turns each dropped input into an error. Warnings go to stdout, one line per thing dropped or
repaired.

* ``ehr.json`` absent, keys missing, nulls, numbers written as strings, unknown categories (a warning), extra keys:
  a risk, with each odd value encoded as the fitted encoder's ``Unknown`` (extra keys ignored). Keys are matched
  whatever their case (``age`` is read as ``Age``, with a warning); a UTF-8 byte-order mark, UTF-16/32 or Latin-1
  text is decoded, with a warning.
* dropped, with a warning (``--strict``: an error): an ``ehr.json`` that is not JSON, not a JSON object (a list, a
  number, ``null``) or nested too deeply: every clinical value unknown; an implausible value (an age outside 0-120
  years: in days, negative, 1e308, 400 digits; a list where a value belongs): that value unknown; an unusable PET
  (missing, doubled, unreadable, 4-D with several frames, all NaN, empty, not overlapping the CT): the risk comes
  from the CT and the record (PET channel blank); an unusable CT likewise (CT channel blank); neither: from the record
  with a blank image.
* any grid, flipped or oblique, any field of view, upper-case suffixes; no brain in the PET, or one outside the CT
  (misregistration): the box is placed below the top of the CT, with a warning. Repaired, with a warning: NaN voxels,
  a CT stored with a +1024 offset, a PET in Bq/ml, absurd PET voxels (1e20), a single-frame 4-D image. A TIFF CT:
  a warning that its geometry cannot be trusted.
* flat placeholder images (1×1, 1×1×1; the platform's sanity check): the risk is predicted from the clinical record
  with a blank image (a region outside every field of view), with a warning that it carries no imaging information.
* no output can exist: no input folder, a missing or inconsistent bundle, an output folder that cannot be written, a
  non-finite risk: one line ``error: ...`` on stderr, exit status 2, and no output file (one left by an earlier run
  is removed). Never a traceback.

Time budget: the platform stops a case at 15 min (``--time-limit``), start-up included. When the projected time
passes ``--time-budget`` (default 60 % of the limit), the folds of lowest ensemble weight are dropped (at least one
is kept), with a log line ``time budget: dropped ...``. Progress and warnings go to stdout. Everything here is
:func:`hecktor.container.run` over :meth:`hecktor.prognosis.RiskPredictor.predict`.
"""

from __future__ import annotations

import sys

from hecktor.container import main as run_case


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case (:func:`hecktor.container.main`, the bundle in ``resources/bundle`` beside this file);
    ``start_time`` (``time.time()`` scale) defaults to this process's start."""
    return run_case(2, __file__, argv, start_time=start_time)


if __name__ == "__main__":
    sys.exit(main())
