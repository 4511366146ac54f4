"""What every Grand-Challenge container does, whatever its task: read the case, predict within the time budget, write
the output atomically, and turn a user-facing failure into one ``error: ...`` line and exit status 2.

Each container's ``inference.py`` is a few lines over this module::

    parser = build_parser(TASK)                     # --input, --output, --resources, --device, --time-limit, ...
    parser.add_argument(...)                        # the task's own options, if any
    args = parser.parse_args(argv)
    return run(TASK, args, start_time=start_time, **the task's predictor options)

The task (its output path and writer, its platform limit, whether it reads ``ehr.json``, its predictor class) comes
from the registry :mod:`hecktor.tasks`; the prediction is the predictor's ``predict_case`` (for Task 1
:meth:`Segmenter.predict <hecktor.segment.Segmenter.predict>`, for Task 2
:meth:`RiskPredictor.predict <hecktor.prognosis.RiskPredictor.predict>`), the same method the demo, the benchmarks
and the tests call.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from hecktor.budget import DEFAULT_SAFETY, TimeBudget, console_logging, process_start_time
from hecktor.errors import HecktorError
from hecktor.io import read_case
from hecktor.tasks import TaskSpec, get_task

__all__ = ["build_parser", "run"]


def build_parser(task: int | str | TaskSpec, default_resources: Path,
                 description: str | None = None) -> argparse.ArgumentParser:
    """The options every container takes; add the task's own before parsing.

    Args:
        task: the task (see :mod:`hecktor.tasks`).
        default_resources: the bundle beside ``inference.py`` (``resources/bundle``: in the image and in the
            repository alike).
        description: ``--help``'s first line (default: from the registry).
    """
    spec = get_task(task)
    parser = argparse.ArgumentParser(
        description=description or f"HECKTOR 2025 Task {spec.number}: {spec.title} of one case.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("/input"), help="case folder")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder")
    parser.add_argument("--resources", type=Path, default=default_resources, help="model bundle")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--time-limit", type=float, default=spec.limit_s, help="platform limit per case (s)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help=f"seconds to plan for, start-up included (default: {DEFAULT_SAFETY:.0%} of the limit)")
    return parser


def run(task: int | str | TaskSpec, args: argparse.Namespace, *, start_time: float | None = None,
        **predict_options: Any) -> int:
    """Run one case as the platform does; returns the exit status (0, or 2 with one ``error: ...`` line on stderr
    and nothing written).

    Args:
        task: the task (see :mod:`hecktor.tasks`).
        args: parsed :func:`build_parser` options.
        start_time: when the case's clock started (``time.time()`` scale; default: this process's start).
        predict_options: passed to the predictor's ``predict_case`` (e.g. Task 1's ``tta`` and ``overlap``).
    """
    spec = get_task(task)
    start_time = process_start_time() if start_time is None else start_time
    logger = logging.getLogger(spec.container)
    with console_logging():
        try:
            budget = TimeBudget(args.time_limit, budget_s=args.time_budget, start_time=start_time)
            predictor = spec.predictor().from_bundle(args.resources, device=args.device)
            case = read_case(args.input, with_ehr=spec.uses_ehr)
            output = predictor.predict_case(case, budget=budget, **predict_options)
            report = predictor.last_report
            for line in report.warnings:
                logger.warning("%s", line)
            path = spec.writer(output, args.output / spec.output)
        except HecktorError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        shown = f" = {output:.6g}" if spec.output_kind == "json-number" else ""
        logger.info("wrote %s%s: %s", path, shown, report.summary())
    return 0
