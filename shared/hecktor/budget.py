"""The containers' per-case time budget, and the reading of a Grand-Challenge input folder that they share.

Grand Challenge stops a case at 10 min (Task 1) or 15 min (Task 2) of wall clock, *start-up and model loading
included*, and a stopped case scores nothing. The guard here measures from the process start
(:func:`process_start_time`), times each stage, and projects the time left:

* after preprocessing: if preprocessing alone has used the budget, only the minimum runs (one fold, no TTA);
* after every network pass (Task 1: one fold, one mirror; Task 2: one fold): if the passes still planned would end
  past the budget (``safety`` × the platform limit, 60 % by default), it drops **test-time augmentation first**,
  **then folds** (Task 1 from the last fold; Task 2 the lightest ensemble weights first), but always keeps one fold.
  The passes are projected at the slowest pass after the first (the first includes the warm-up: after it, work is
  dropped only if not even one more pass fits).

What it dropped is logged (``time budget: dropped ...``) and recorded in the :class:`BudgetReport`. The result is
always a complete prediction from the passes that ran, never a partial output; with nothing dropped it is
bit-identical to :meth:`Segmenter.predict <hecktor.segment.Segmenter.predict>` and
:meth:`RiskPredictor.predict <hecktor.prognosis.RiskPredictor.predict>`.

Degenerate inputs (the platform's sanity check sends flat 1×1 or 1×1×1 placeholder images):
:func:`read_case` reads such images as they are instead of refusing them, and then

* Task 1 (:func:`segment_within_budget`) returns an all-background mask on the CT's exact grid, with a warning;
* Task 2 (:func:`predict_risk_within_budget`) predicts from the clinical record with a blank image (what
  preprocessing makes of a region outside every field of view: CT at the padding HU, PET at the padding SUV), with
  a warning. The risk then carries the clinical record's information only; that is stated in the log.

Every other unusable input (missing, unreadable, two images in a folder, all-NaN, an empty PET, PET and CT that do not
overlap) stays an :class:`~hecktor.errors.InputError` with one line naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import SimpleITK as sitk

from hecktor.errors import InputError
from hecktor.io import CaseInput, is_placeholder
from hecktor.io import read_case as _read_case
from hecktor.plan import BoxPlan
from hecktor.preprocessing import (normalize_ct, normalize_pet, preprocess_region, preprocess_box,
                                   probabilities_to_ct_grid)

if TYPE_CHECKING:  # the containers import this module before torch-heavy ones; keep the import graph light
    from hecktor.prognosis import RiskPredictor
    from hecktor.segment import Segmenter

logger = logging.getLogger(__name__)

PLATFORM_LIMIT_S = {1: 600.0, 2: 900.0}  # TODO registry
"""Grand Challenge's wall-clock limit per case (seconds), start-up and model loading included."""

DEFAULT_SAFETY = 0.6
"""Share of the platform limit that a case may plan to use: the rest absorbs slow disks, a busy GPU and the
projection's error."""

POSTPROCESS_FACTOR = 2.0
"""Task 1: the time to bring probabilities back onto the CT's grid and write the mask, projected as this multiple of
the preprocessing time (both are resamplings between the CT's and the region's grids; going back touches the finer
CT grid with three channels, so it is given twice the time)."""


# ------------------------------------------------------------------------------------------------------ clock


def process_start_time() -> float:
    """Wall-clock time (``time.time()`` scale) at which this process started.

    On Linux it comes from ``/proc/self/stat`` (start, in clock ticks since boot) and ``/proc/uptime``, so the
    interpreter's start-up and every import count; elsewhere, or if ``/proc`` cannot be read, it is "now".
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        # Fields after the command name (which may hold spaces, hence the last ')'); starttime is field 22 overall.
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        running_s = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()
    return time.time() - min(max(running_s, 0.0), 86400.0)


class TimeBudget:
    """A deadline measured from the process start.

    Args:
        limit_s: the platform's limit per case.
        safety: share of ``limit_s`` that may be planned for (ignored when ``budget_s`` is given).
        budget_s: the planning budget in seconds (default ``safety * limit_s``).
        start_time: when the clock started (``time.time()`` scale; default :func:`process_start_time`).
        clock: the time source, ``time.time`` (tests pass a fake one).
    """

    def __init__(
        self,
        limit_s: float,
        safety: float = DEFAULT_SAFETY,
        budget_s: float | None = None,
        start_time: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not limit_s > 0:
            raise InputError(f"the time limit must be positive, got {limit_s} s")
        if budget_s is None:
            if not 0.0 < safety <= 1.0:
                raise InputError(f"the safety share must lie in (0, 1], got {safety}")
            budget_s = safety * limit_s
        if not 0.0 < budget_s <= limit_s:
            raise InputError(f"the time budget must lie in (0, {limit_s:g}] s (the limit), got {budget_s} s")
        self.limit_s = float(limit_s)
        self.budget_s = float(budget_s)
        self.clock = clock
        self.start_time = process_start_time() if start_time is None else float(start_time)

    def elapsed(self) -> float:
        return self.clock() - self.start_time

    def fits(self, more_s: float) -> bool:
        """Whether ``more_s`` seconds of work from now end within the budget."""
        return self.elapsed() + more_s <= self.budget_s


@dataclass
class BudgetReport:
    """What a budgeted prediction ran, dropped and spent.

    Attributes:
        limit_s, budget_s: the platform limit and the planning budget.
        folds: indices of the folds whose passes entered the prediction.
        tta: whether every used fold ran with all test-time mirrors (Task 2 has no TTA: always False).
        passes: network passes run (Task 1: fold × mirror; Task 2: folds).
        dropped: one line per thing dropped, as logged.
        warnings: what reading or preprocessing repaired or assumed.
        placeholder: a flat placeholder image was given; the output is the degenerate-input fallback.
        timings: ``startup_s`` (process start to the call), ``preprocess_s``, ``network_s``, ``postprocess_s`` and
            ``elapsed_s`` (process start to the return).
    """

    limit_s: float
    budget_s: float
    folds: list[int] = field(default_factory=list)
    tta: bool = False
    passes: int = 0
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    placeholder: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what ran, the time per stage, the budget and what was dropped."""
        tta = "with TTA" if self.tta else "without TTA"
        stages = ", ".join(f"{name} {self.timings[key]:.1f} s" for key, name in (
            ("startup_s", "start-up"), ("preprocess_s", "preprocessing"), ("network_s", "networks"),
            ("postprocess_s", "back to the CT grid")) if key in self.timings)
        dropped = f"; dropped {'; '.join(self.dropped)}" if self.dropped else ""
        return (f"folds {self.folds} {tta}, {self.passes} network pass(es); {stages}; "
                f"{self.timings.get('elapsed_s', float('nan')):.1f} s since start of a {self.budget_s:.1f} s budget "
                f"(limit {self.limit_s:.0f} s){dropped}")


def _drop(report: BudgetReport, what: str, why: str) -> None:
    report.dropped.append(what)
    logger.warning("time budget: dropped %s: %s", what, why)


# ----------------------------------------------------------------------------------------------- reading inputs


def read_case(input_dir: str | Path, task: int) -> CaseInput:
    """Read a Grand-Challenge input folder for ``task`` (see :func:`hecktor.io.read_case`)."""
    from hecktor.tasks import get_task

    return _read_case(input_dir, with_ehr=get_task(task).uses_ehr)


# ------------------------------------------------------------------------------------------------------- Task 1


def blank_mask(ct: sitk.Image) -> sitk.Image:
    """An all-background UInt8 mask on ``ct``'s exact grid (any dimension)."""
    mask = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(ct)
    return mask


def _flip(array: np.ndarray, tensor_dims: tuple[int, ...]) -> np.ndarray:
    # TTA_FLIPS name axes of a (B, C, z, y, x) tensor; these arrays have no batch axis.
    if not tensor_dims:
        return array
    return np.ascontiguousarray(np.flip(array, axis=tuple(d - 1 for d in tensor_dims)))


def _pass_estimate(pass_times: list[float]) -> float:
    # The first pass carries the warm-up (CUDA context, kernel loading); once later passes exist, project with the
    # slowest of them.
    return max(max(pass_times[1:]) if len(pass_times) > 1 else pass_times[0], 1e-6)


def _must_shrink(budget: TimeBudget, pass_times: list[float], pending: int, post_s: float) -> bool:
    """Whether the ``pending`` passes, projected at the estimated pass time, end past the budget. After the first pass
    only if a second one would not fit either: the first pass's time includes the warm-up and would drop work that a
    warm second pass shows to fit."""
    if budget.fits(pending * _pass_estimate(pass_times) + post_s):
        return False
    return not (len(pass_times) == 1 and budget.fits(pass_times[0] + post_s))


def segment_within_budget(
    segmenter: "Segmenter",
    ct: sitk.Image,
    pet: sitk.Image,
    *,
    limit_s: float = PLATFORM_LIMIT_S[1],
    safety: float = DEFAULT_SAFETY,
    budget_s: float | None = None,
    start_time: float | None = None,
    folds: Sequence[int] | None = None,
    tta: bool = True,
    overlap: float = 0.5,
    clock: Callable[[], float] = time.time,
) -> tuple[sitk.Image, BudgetReport]:
    """Segment one case within a time budget: a UInt8 label map on ``ct``'s exact grid, and what was run.

    The passes are the ones :meth:`Segmenter.predict` runs (fold-major, mirrors of :data:`hecktor.segment.TTA_FLIPS`
    within a fold), one at a time through :meth:`Segmenter.predict_probabilities`, so the time can be checked
    between them. Folds that ran fewer mirrors than others (TTA dropped midway) count equally: the result is the
    mean over folds of each fold's mean.

    Args:
        segmenter: the loaded fold ensemble.
        ct, pet: the case (flat placeholders give an all-background mask, see the module docstring).
        limit_s, safety, budget_s, start_time, clock: the budget (see :class:`TimeBudget`).
        folds: fold indices in the order to run them (default: all, in bundle order); the first is always kept.
        tta: run the mirrored passes too, as long as the budget allows.
        overlap: sliding-window overlap.
    """
    from hecktor.segment import TTA_FLIPS

    budget = TimeBudget(limit_s, safety, budget_s, start_time, clock)
    report = BudgetReport(budget.limit_s, budget.budget_s, timings={"startup_s": budget.elapsed()})
    order = _fold_order(folds, len(segmenter.networks))
    if is_placeholder(ct) or is_placeholder(pet):
        report.placeholder = True
        report.warnings.append("flat placeholder input: the mask is all background on the CT's grid")
        report.timings["elapsed_s"] = budget.elapsed()
        return blank_mask(ct), report

    started = clock()
    region = preprocess_region(ct, pet, segmenter.plan)
    report.warnings.extend(region.warnings)
    report.timings["preprocess_s"] = preprocess_s = clock() - started
    post_s = POSTPROCESS_FACTOR * preprocess_s
    flips = TTA_FLIPS if tta else ((),)
    pending = [(k, dims) for k in order for dims in flips]  # fold-major, as Segmenter.predict
    if not budget.fits(post_s) and len(pending) > 1:
        why = f"{budget.elapsed():.1f} s used by the end of preprocessing, budget {budget.budget_s:.1f} s"
        if tta:
            _drop(report, "test-time augmentation", why)
        if len(order) > 1:
            _drop(report, f"fold(s) {order[1:]}", why)
        pending = pending[:1]

    # The plain sum of every pass, and the sum of the finished folds' means plus the running fold's sum: the first
    # gives Segmenter.predict's exact arithmetic when every fold ran the same passes, the second weighs folds equally
    # when TTA was dropped midway.
    total = fold_means = fold_sum = None
    counts: dict[int, int] = {}
    pass_times: list[float] = []
    network_started = clock()
    while pending:
        k, dims = pending.pop(0)
        started = clock()
        probabilities = _flip(segmenter.predict_probabilities(_flip(region.image, dims), folds=[k], tta=False,
                                                              overlap=overlap), dims)
        pass_times.append(clock() - started)
        total = probabilities if total is None else total + probabilities
        if k in counts:  # passes of a fold are consecutive
            fold_sum, counts[k] = fold_sum + probabilities, counts[k] + 1
        else:
            if fold_sum is not None:
                fold_means = _add(fold_means, fold_sum / counts[next(reversed(counts))])
            fold_sum, counts[k] = probabilities, 1
        per_pass = _pass_estimate(pass_times)
        if pending and _must_shrink(budget, pass_times, len(pending), post_s):
            why = (f"{budget.elapsed():.1f} s used, {len(pending)} pass(es) of ~{per_pass:.1f} s left, "
                   f"budget {budget.budget_s:.1f} s")
            if any(d for _, d in pending):
                pending = [(j, d) for j, d in pending if not d]
                _drop(report, "test-time augmentation", why)
            fitting = max(0, int((budget.budget_s - budget.elapsed() - post_s) // per_pass))
            if len(pending) > fitting:
                _drop(report, f"fold(s) {[j for j, _ in pending[fitting:]]}", why)
                pending = pending[:fitting]
    report.timings["network_s"] = clock() - network_started
    if len(set(counts.values())) == 1:
        probabilities = total / sum(counts.values())
    else:
        fold_means = _add(fold_means, fold_sum / counts[next(reversed(counts))])
        probabilities = fold_means / len(counts)
    started = clock()
    mask = probabilities_to_ct_grid(probabilities, region.grid, ct)
    report.timings["postprocess_s"] = clock() - started
    report.folds = list(counts)
    report.passes = len(pass_times)
    report.tta = tta and all(c == len(TTA_FLIPS) for c in counts.values())
    report.timings["elapsed_s"] = budget.elapsed()
    return mask, report


def _add(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    return b if a is None else a + b


def _fold_order(folds: Sequence[int] | None, n_folds: int) -> list[int]:
    order = list(range(n_folds)) if folds is None else [int(k) for k in folds]
    if not order or len(set(order)) != len(order) or not all(0 <= k < n_folds for k in order):
        raise ValueError(f"folds {order} must be distinct indices in 0..{n_folds - 1}")
    return order


# ------------------------------------------------------------------------------------------------------- Task 2


def blank_task2_image(plan: BoxPlan) -> np.ndarray:
    """The network input (2, z, y, x) of a region outside every field of view: CT at ``plan.ct_pad_hu`` and PET at
    ``plan.pet_pad_suv``, normalised as preprocessing normalises them."""
    shape = tuple(plan.input_shape_zyx)
    ct = normalize_ct(np.full(shape, plan.ct_pad_hu, dtype=np.float32), plan.ct_window_hu)
    pet = normalize_pet(np.full(shape, plan.pet_pad_suv, dtype=np.float32))
    return np.stack([ct, pet])


def predict_risk_within_budget(
    predictor: "RiskPredictor",
    ct: sitk.Image | None,
    pet: sitk.Image | None,
    ehr: Mapping[str, Any] | None,
    *,
    limit_s: float = PLATFORM_LIMIT_S[2],
    safety: float = DEFAULT_SAFETY,
    budget_s: float | None = None,
    start_time: float | None = None,
    folds: Sequence[int] | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[float, BudgetReport]:
    """Predict one case's risk within a time budget: the risk (higher = earlier relapse) and what was run.

    Folds run from the heaviest ensemble weight to the lightest (:attr:`RiskPredictor.folds_by_weight`), so those
    dropped for time are the least trusted; the weights of the folds kept are renormalised, as
    :meth:`RiskPredictor.predict` does. Task 2 has no test-time augmentation.

    Args:
        predictor: the loaded fold ensemble.
        ct, pet: the case (flat placeholders give a blank image, see the module docstring).
        ehr: the clinical record (``None`` when ``ehr.json`` is absent).
        limit_s, safety, budget_s, start_time, clock: the budget (see :class:`TimeBudget`).
        folds: the folds allowed (default: all); they still run heaviest first.
    """
    from hecktor.survival import ensemble_risk

    budget = TimeBudget(limit_s, safety, budget_s, start_time, clock)
    report = BudgetReport(budget.limit_s, budget.budget_s, timings={"startup_s": budget.elapsed()})
    allowed = set(_fold_order(folds, len(predictor.folds)))
    order = [k for k in predictor.folds_by_weight if k in allowed]

    started = clock()
    image = None
    if predictor.uses_images:
        if ct is None or pet is None:
            raise ValueError(f"mode {predictor.mode!r} needs both CT and PET")
        if is_placeholder(ct) or is_placeholder(pet):
            report.placeholder = True
            report.warnings.append("flat placeholder input: the risk comes from the clinical record with a blank "
                                   "image")
            image = blank_task2_image(predictor.plan)
        else:
            region = preprocess_box(ct, pet, predictor.plan)
            report.warnings.extend(region.warnings)
            image = region.image
    report.timings["preprocess_s"] = clock() - started
    if not budget.fits(0.0) and len(order) > 1:
        _drop(report, f"fold(s) {order[1:]}",
              f"{budget.elapsed():.1f} s used by the end of preprocessing, budget {budget.budget_s:.1f} s")
        order = order[:1]

    risks: dict[int, float] = {}
    fold_times: list[float] = []
    network_started = clock()
    while order:
        k = order.pop(0)
        started = clock()
        risks[k] = float(predictor.fold_risks(image, ehr, [k])[0][0])
        fold_times.append(clock() - started)
        per_fold = _pass_estimate(fold_times)
        if order and _must_shrink(budget, fold_times, len(order), 0.0):
            fitting = max(0, int((budget.budget_s - budget.elapsed()) // per_fold))
            _drop(report, f"fold(s) {order[fitting:]}",
                  f"{budget.elapsed():.1f} s used, {len(order)} fold(s) of ~{per_fold:.1f} s left, "
                  f"budget {budget.budget_s:.1f} s")
            order = order[:fitting]
    report.timings["network_s"] = clock() - network_started
    used = sorted(risks)
    if len(used) == len(predictor.folds):
        weights = predictor.weights
    else:  # renormalised exactly as RiskPredictor.predict(folds=used) does
        weights = predictor.weights[used]
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(used), 1.0 / len(used))
    risk = float(ensemble_risk(np.asarray([risks[k] for k in used])[:, None], weights)[0])
    if not math.isfinite(risk):
        raise InputError(f"the ensemble's risk is not finite ({risk}); the inputs are far outside the training data")
    report.folds, report.passes, report.tta = used, len(fold_times), False
    report.timings["elapsed_s"] = budget.elapsed()
    return risk, report


# ------------------------------------------------------------------------------------------------------- logging


@contextmanager
def console_logging(stream: TextIO | None = None, level: int = logging.INFO) -> Iterator[None]:
    """Send log records (and Python warnings) to ``stream`` (default stdout) for the duration of the block.

    The containers keep stderr for the one ``error: ...`` line of a failed case, so progress and warnings go to
    stdout, which the platform also shows.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
