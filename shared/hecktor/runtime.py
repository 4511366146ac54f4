"""What runs each task: its predictor class, by task number, and the writer of each output kind.

The registry :mod:`hecktor.tasks` is data only (a leaf that imports no predictor); this module wires it to the code,
as one explicit table each, for the two places that run a bundle on cases: the containers (:mod:`hecktor.container`)
and ``hecktor-predict`` (:mod:`hecktor.predict`). It sits above the predictors and imports them (torch, MONAI and
SimpleITK with them).

A predictor class has ``from_bundle(bundle, device=...)``, ``predict_case(case, budget=..., **options)`` and
``last_report``; a writer is ``writer(value, path) -> path`` and writes atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hecktor.diagnosis import HPVPredictor
from hecktor.outputs import write_json_boolean, write_json_number, write_mask
from hecktor.prognosis import RiskPredictor
from hecktor.segment import Segmenter
from hecktor.tasks import TaskSpec, get_task

__all__ = ["PREDICTORS", "WRITERS", "predictor_class", "output_writer"]

PREDICTORS: dict[int, type] = {
    1: Segmenter,
    2: RiskPredictor,
    3: HPVPredictor,
}
"""The predictor class of each task, by task number."""

WRITERS: dict[str, Callable[[Any, Path], Path]] = {
    "mask": write_mask,
    "json-number": write_json_number,
    "json-boolean": write_json_boolean,
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


def output_writer(task: int | str | TaskSpec) -> Callable[[Any, Path], Path]:
    """``writer(value, path)``: writes ``task``'s output (its registry ``output_kind``) atomically."""
    return WRITERS[get_task(task).output_kind]
