"""What every Grand-Challenge container does, whatever its task: read the case, predict within the time budget, write
the output atomically, and turn a user-facing failure into one ``error: ...`` line and exit status 2.

Each container's ``inference.py`` is one call to :func:`main` (``main(TASK, __file__, argv, start_time=...)``);
:func:`build_parser` (the options of every task, plus the task's own from :data:`TASK_OPTIONS`) and :func:`run` are
its two halves.

What each task answers for every odd input, by default and with ``--strict``: docs/reference/bad-inputs.md.

The task (its output path and kind, its platform limit, whether it reads ``ehr.json``) comes from the registry
:mod:`hecktor.tasks`, its predictor class and output writer from :mod:`hecktor.runtime`; the prediction is the
predictor's ``predict_case`` (for Task 1 :meth:`Segmenter.predict <hecktor.segment.Segmenter.predict>`, for Task 2
:meth:`RiskPredictor.predict <hecktor.prognosis.RiskPredictor.predict>`), the same method the demo, the benchmarks
and the tests call.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hecktor.budget import DEFAULT_SAFETY, TimeBudget, console_logging, process_start_time
from hecktor.case import read_case
from hecktor.errors import HecktorError, InputError
from hecktor.runtime import predictor_class, remove_outputs, write_outputs
from hecktor.tasks import TaskSpec, get_task

__all__ = ["TASK_OPTIONS", "MODEL_DIR_VARIABLE", "PLATFORM_MODEL_DIR", "build_parser", "locate_bundle", "run", "main"]

PLATFORM_MODEL_DIR = Path("/opt/ml/model")
"""Where Grand Challenge extracts an algorithm's model tarball (``model.tar.gz``, uploaded apart from the image)."""
MODEL_DIR_VARIABLE = "HECKTOR_MODEL_DIR"
"""Stands in for :data:`PLATFORM_MODEL_DIR` when set (the tests point it at a temporary folder)."""

BAD_INPUTS_PAGE = "docs/reference/bad-inputs.md"

# A task's options beyond the common ones, as (flags, add_argument keywords); each reaches the predictor's
# ``predict_case`` as a keyword under its ``dest``. Task 1: Segmenter.predict's test-time augmentation and overlap.
TASK_OPTIONS: dict[int, tuple[tuple[tuple[str, ...], dict[str, Any]], ...]] = {
    1: ((("--no-tta",), {"dest": "tta", "action": "store_false", "help": "no mirror test-time augmentation"}),
        (("--overlap",), {"dest": "overlap", "type": float, "default": 0.5, "help": "sliding-window overlap"})),
}


def build_parser(task: int | str | TaskSpec, default_resources: Path,
                 description: str | None = None) -> argparse.ArgumentParser:
    """The options every container takes, and the task's own (:data:`TASK_OPTIONS`).

    Args:
        task: the task (see :mod:`hecktor.tasks`).
        default_resources: the bundle beside ``inference.py`` (``resources/bundle``: in the image and in the
            repository alike).
        description: ``--help``'s first line (default: from the registry).
    """
    spec = get_task(task)
    epilog = ("Default (the platform's): answer whenever an answer can be formed; an input that cannot be used is "
              "dropped with one warning line, and --strict makes that an error. A case that cannot be answered prints "
              "one line 'error: ...' on stderr, exits with status 2 and leaves no output file. Every odd input, task "
              f"by task: {BAD_INPUTS_PAGE}")
    parser = argparse.ArgumentParser(
        description=description or f"{spec.label}: {spec.title} of one case.",
        epilog=epilog, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("/input"), help="case folder")
    parser.add_argument("--output", type=Path, default=Path("/output"), help="output folder")
    parser.add_argument("--resources", type=Path, default=None,
                        help=f"model bundle (default: the platform's {PLATFORM_MODEL_DIR} when it holds one, else "
                             f"{default_resources})")
    parser.set_defaults(baked_resources=default_resources)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--time-limit", type=float, default=spec.limit_s, help="platform limit per case (s)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help=f"seconds to plan for, start-up included (default: {DEFAULT_SAFETY * 100:.0f}%% of the "
                             "limit)")
    parser.add_argument("--strict", action="store_true",
                        help=f"local validation: an input that the default drops with a warning is an error (exit 2, "
                             f"nothing written); repairs stay warnings ({BAD_INPUTS_PAGE})")
    for flags, keywords in TASK_OPTIONS.get(spec.number, ()):
        parser.add_argument(*flags, **keywords)
    return parser


def run(task: int | str | TaskSpec, args: argparse.Namespace, *, start_time: float | None = None,
        **predict_options: Any) -> int:
    """Run one case as the platform does; returns the exit status (0, or 2 with one ``error: ...`` line on stderr
    and no output file: one left by an earlier run is removed).

    Args:
        task: the task (see :mod:`hecktor.tasks`).
        args: parsed :func:`build_parser` options; the task's own (:data:`TASK_OPTIONS`, e.g. Task 1's ``tta`` and
            ``overlap``) are passed to the predictor's ``predict_case``.
        start_time: when the case's clock started (``time.time()`` scale; default: this process's start).
        predict_options: further ``predict_case`` keywords; they override those taken from ``args``.
    """
    spec = get_task(task)
    predict_options = {**{keywords["dest"]: getattr(args, keywords["dest"])
                          for _, keywords in TASK_OPTIONS.get(spec.number, ()) if hasattr(args, keywords["dest"])},
                       **predict_options}
    start_time = process_start_time() if start_time is None else start_time
    logger = logging.getLogger(spec.container)
    with console_logging():
        try:
            budget = TimeBudget(args.time_limit, budget_s=args.time_budget, start_time=start_time)
            bundle, where = locate_bundle(spec, args.resources, getattr(args, "baked_resources", None))
            logger.info("model bundle: %s (%s)", bundle, where)
            predictor = predictor_class(spec).from_bundle(bundle, device=args.device)
            case = read_case(args.input, with_ehr=spec.uses_ehr, strict=getattr(args, "strict", False))
            output = predictor.predict_case(case, budget=budget, **predict_options)
            report = predictor.last_report
            for line in report.warnings:
                logger.warning("%s", line)
            path = write_outputs(spec, output, args.output)
        except HecktorError as error:
            return _fail(str(error), spec, args.output)
        except Exception as error:  # noqa: BLE001 - the platform must get one line, never a traceback
            detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else "no message"
            return _fail(f"unexpected {type(error).__name__} ({detail}); please report this input", spec, args.output)
        shown = f" = {output:.6g}" if spec.output_kind == "json-number" else ""
        logger.info("wrote %s%s: %s", path, shown, report.summary())
    return 0


def locate_bundle(task: int | str | TaskSpec, explicit: Path | None, baked: Path | None) -> tuple[Path, str]:
    """The bundle a container loads, and where it was found: ``--resources`` when given; else the platform's model
    folder (:data:`PLATFORM_MODEL_DIR`, or :data:`MODEL_DIR_VARIABLE`) when it holds a bundle's manifest (the model
    tarball's files at its root); else the bundle baked into the image beside ``inference.py``. Neither is one
    :class:`InputError` naming both places and the command that makes a bundle."""
    spec = get_task(task)
    if explicit is not None:
        return Path(explicit), "--resources"
    model_dir = Path(os.environ.get(MODEL_DIR_VARIABLE) or PLATFORM_MODEL_DIR)
    if (model_dir / "manifest.json").is_file():
        return model_dir, "the platform's model folder, from the model tarball"
    if baked is not None and (Path(baked) / "manifest.json").is_file():
        return Path(baked), "baked into the image"
    raise InputError(f"no model bundle: none in {model_dir} (the platform's model tarball) nor in {baked} (baked "
                     f"into the image); make one with {spec.export_command}")


def main(task: int | str | TaskSpec, script: str | Path, argv: list[str] | None = None, *,
         start_time: float | None = None) -> int:
    """The whole ``inference.py`` of every task: :func:`build_parser` with the bundle in ``resources/bundle`` beside
    ``script`` (the ``inference.py``), then :func:`run`; returns the exit status.

    Args:
        task: the task (see :mod:`hecktor.tasks`).
        script: the calling ``inference.py`` (its ``__file__``).
        argv: the command line (default ``sys.argv[1:]``).
        start_time: when the case's clock started (``time.time()`` scale; default: this process's start).
    """
    args = build_parser(task, Path(script).resolve().parent / "resources" / "bundle").parse_args(argv)
    return run(task, args, start_time=start_time)


def _fail(message: str, spec: TaskSpec, output_dir: Path) -> int:
    """Print the one error line, remove the outputs left by an earlier run, and return the failure status."""
    remove_outputs(spec, output_dir)
    print(f"error: {message}", file=sys.stderr)
    return 2
