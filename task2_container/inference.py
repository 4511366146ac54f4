"""HECKTOR 2025 Task 2 container: the recurrence-free-survival risk of one case (higher = earlier relapse).

Writes ``OUTPUT/rfs.json``. Runs as is in the image and from the repository:
``python task2_container/inference.py --input IN --output OUT [--device cpu]`` (``--help`` lists every option).
What it answers for every odd input, by default and with ``--strict``: docs/reference/bad-inputs.md.
"""

from __future__ import annotations

import sys

from hecktor import container

TASK = 2


def main(argv: list[str] | None = None, *, start_time: float | None = None) -> int:
    """Run one case (the bundle in ``resources/bundle`` beside this file); ``start_time`` (``time.time()`` scale)
    defaults to this process's start."""
    return container.main(TASK, __file__, argv, start_time=start_time)


if __name__ == "__main__":
    sys.exit(main())
