"""What runs each task: its predictor class, by task number, and the writer of each output kind.

The registry :mod:`hecktor.tasks` is data only (a leaf that imports no predictor); this module wires it to the code,
as one explicit table each, for the two places that run a bundle on cases: the containers (:mod:`hecktor.container`)
and ``hecktor-predict`` (:mod:`hecktor.predict`). It sits above the predictors and imports them (torch, MONAI and
SimpleITK with them).

A predictor class has ``from_bundle(bundle, device=...)``, ``predict_case(case, budget=..., **options)`` and
``last_report``; a writer is ``writer(value, *paths) -> path``, one path per file of the task's
:attr:`~hecktor.tasks.TaskSpec.outputs` (one for every kind but ``hecktor2026``'s four), and writes atomically (all
files or none). :func:`write_outputs` and :func:`remove_outputs` do both for a task's output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hecktor.diagnosis import HPVPredictor
from hecktor.hecktor2026 import Hecktor2026Predictor
from hecktor.outputs import remove_output, write_hecktor2026, write_json_boolean, write_json_number, write_mask
from hecktor.prognosis import RiskPredictor
from hecktor.segment import Segmenter
from hecktor.tasks import TaskSpec, get_task

__all__ = ["PREDICTORS", "WRITERS", "predictor_class", "output_writer", "write_outputs", "remove_outputs"]

PREDICTORS: dict[int, type] = {
    1: Segmenter,
    2: RiskPredictor,
    3: HPVPredictor,
    2026: Hecktor2026Predictor,
}
"""The predictor class of each task, by task number."""

WRITERS: dict[str, Callable[..., Path]] = {
    "mask": write_mask,
    "json-number": write_json_number,
    "json-boolean": write_json_boolean,
    "hecktor2026": write_hecktor2026,
}
"""The writer of each output kind (:data:`hecktor.tasks.OUTPUT_KINDS`)."""


def predictor_class(task: int | str | TaskSpec) -> type:
    """The class that predicts ``task`` (see :mod:`hecktor.tasks`) from its bundle.

    Raises:
        ValueError: no such task, or a registered task without a predictor here.
    """
    spec = get_task(task)
    if spec.number not in PREDICTORS:
        raise ValueError(f"Task {spec.number} ({spec.name}) has no predictor in hecktor.runtime.PREDICTORS")
    return PREDICTORS[spec.number]


def output_writer(task: int | str | TaskSpec) -> Callable[..., Path]:
    """``writer(value, *paths)``: writes ``task``'s outputs (its registry ``output_kind``) atomically."""
    return WRITERS[get_task(task).output_kind]


def write_outputs(task: int | str | TaskSpec, value: Any, output_dir: str | Path) -> Path:
    """Write a case's answer as the platform reads it: every file of the task's
    :attr:`~hecktor.tasks.TaskSpec.outputs` under ``output_dir``, all or none; returns the first (the only one for
    every kind but ``hecktor2026``)."""
    spec = get_task(task)
    return output_writer(spec)(value, *(Path(output_dir) / path for path in spec.outputs))


def remove_outputs(task: int | str | TaskSpec, output_dir: str | Path) -> list[Path]:
    """Remove the task's output files that an earlier run left under ``output_dir`` (a failed case leaves none);
    returns those removed. Never raises."""
    paths = [Path(output_dir) / path for path in get_task(task).outputs]
    return [path for path in paths if remove_output(path)]
