"""HECKTOR 2026 container: the GTVp/GTVn mask, the T and N stage and the recurrence-free-survival time of one case.

Writes ``OUTPUT/images/head-neck-tumor-segmentation/output.mha``, ``t-stage.json``, ``n-stage.json``, ``rfs.json``.
Runs as is: ``python hecktor2026_container/inference.py --input IN --output OUT [--device cpu]`` (``--help``: options).
What it answers for every odd input, by default and with ``--strict``: docs/reference/bad-inputs.md.
"""

from __future__ import annotations

import sys

from hecktor import container

TASK = 2026


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case (the bundle in ``resources/bundle`` beside this file); ``start_time`` (``time.time()`` scale)
    defaults to this process's start."""
    return container.main(TASK, __file__, argv, start_time=start_time)


if __name__ == "__main__":
    sys.exit(main())
