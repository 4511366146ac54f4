"""The containers' per-case time budget: the clock, and the policy that the predictors consult between network passes.

Grand Challenge stops a case at its task's limit (:attr:`hecktor.tasks.TaskSpec.limit_s`), *start-up and model
loading included*, and a stopped case scores nothing. :class:`TimeBudget` measures from the process start
(:func:`process_start_time`). A predictor (:meth:`Segmenter.predict <hecktor.segment.Segmenter.predict>`,
:meth:`RiskPredictor.predict <hecktor.prognosis.RiskPredictor.predict>`) lists its network passes (a
:class:`NetworkPass`: one fold, possibly mirrored) and runs them one at a time; a :class:`BudgetPolicy` is consulted

* after preprocessing: if preprocessing alone has used the budget, only the minimum runs (the first fold, unmirrored);
* after every pass: if the passes still planned would end past the budget (``safety`` × the limit, 60 % by default),
  it drops **mirrored passes (test-time augmentation) first**, **then folds** from the end of the plan, but always
  keeps one pass. The passes are projected at the slowest pass after the first (the first includes the warm-up:
  after it, work is dropped only if not even one more pass fits).

What was dropped is logged (``time budget: dropped ...``) and recorded in the predictor's :class:`PredictionReport`.
Without a budget (``budget=None``) nothing is ever dropped. The result is always a complete prediction from the
passes that ran, never a partial output.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from hecktor.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_SAFETY = 0.6
"""Share of the platform limit that a case may plan to use: the rest absorbs slow disks, a busy GPU and the
projection's error."""


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


# ------------------------------------------------------------------------------------------------------ report


@dataclass
class PredictionReport:
    """What one prediction ran, dropped and spent (a predictor's ``last_report``).

    Attributes:
        limit_s, budget_s: the platform limit and the planning budget (``None`` without a budget).
        folds: indices of the folds whose passes entered the prediction.
        tta: whether every used fold ran with all its mirrored passes (always False for tasks without TTA).
        passes: network passes run.
        dropped: one line per thing dropped, as logged.
        warnings: what reading or preprocessing repaired or assumed.
        placeholder: a flat placeholder image was given; the output is the degenerate-input fallback.
        timings: ``startup_s`` (process start to the call, with a budget), ``preprocess_s``, ``network_s``,
            ``postprocess_s``, ``total_s`` (the call) and ``elapsed_s`` (process start to the return, with a budget).
    """

    limit_s: float | None = None
    budget_s: float | None = None
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
        budget = ""
        if self.budget_s is not None:
            budget = (f"; {self.timings.get('elapsed_s', float('nan')):.1f} s since start of a {self.budget_s:.1f} s "
                      f"budget (limit {self.limit_s:.0f} s)")
        return f"folds {self.folds} {tta}, {self.passes} network pass(es); {stages}{budget}{dropped}"


# ------------------------------------------------------------------------------------------------------ policy


@dataclass(frozen=True)
class NetworkPass:
    """One network pass of an ensemble prediction: fold ``fold``, on the input mirrored along ``mirror`` (tensor
    dimensions of a (B, C, z, y, x) batch; empty for the plain pass)."""

    fold: int
    mirror: tuple[int, ...] = ()


class BudgetPolicy:
    """Decides, between the network passes of one prediction, which of the planned passes still run.

    Args:
        budget: the deadline, or ``None`` to run every planned pass.
        report: where the budget, the drops and the timings are recorded.
    """

    def __init__(self, budget: TimeBudget | None, report: PredictionReport) -> None:
        self.budget = budget
        self.report = report
        self.pass_times: list[float] = []
        self.post_s = 0.0
        if budget is not None:
            report.limit_s, report.budget_s = budget.limit_s, budget.budget_s
            report.timings["startup_s"] = budget.elapsed()

    def now(self) -> float:
        """The time by the budget's clock (so that a fake clock in tests drives the decisions), or
        ``time.perf_counter()`` without a budget; predictors time their stages and passes with it."""
        return self.budget.clock() if self.budget is not None else time.perf_counter()

    def start(self, passes: Sequence[NetworkPass], post_s: float = 0.0) -> list[NetworkPass]:
        """The passes to run, decided after preprocessing; ``post_s`` is the projected time of what follows the
        passes (resampling back, writing)."""
        self.post_s = float(post_s)
        pending = list(passes)
        if self.budget is None or len(pending) < 2 or self.budget.fits(self.post_s):
            return pending
        why = f"{self.budget.elapsed():.1f} s used by the end of preprocessing, budget {self.budget.budget_s:.1f} s"
        self._drop_mirrors(pending, why)
        self._drop_folds(pending[1:], why)
        return [NetworkPass(pending[0].fold)]

    def after_pass(self, seconds: float, pending: Sequence[NetworkPass]) -> list[NetworkPass]:
        """The passes still to run after one that took ``seconds``."""
        self.pass_times.append(float(seconds))
        pending = list(pending)
        if self.budget is None or not pending or not self._must_shrink(len(pending)):
            return pending
        per_pass = self._pass_estimate()
        why = (f"{self.budget.elapsed():.1f} s used, {len(pending)} pass(es) of ~{per_pass:.1f} s left, "
               f"budget {self.budget.budget_s:.1f} s")
        if any(p.mirror for p in pending):
            self._drop_mirrors(pending, why)
            pending = [p for p in pending if not p.mirror]
        fitting = max(0, int((self.budget.budget_s - self.budget.elapsed() - self.post_s) // per_pass))
        if len(pending) > fitting:
            self._drop_folds(pending[fitting:], why)
            pending = pending[:fitting]
        return pending

    # The first pass carries the warm-up (CUDA context, kernel loading); once later passes exist, project with the
    # slowest of them.
    def _pass_estimate(self) -> float:
        times = self.pass_times
        return max(max(times[1:]) if len(times) > 1 else times[0], 1e-6)

    def _must_shrink(self, n_pending: int) -> bool:
        """Whether the pending passes, projected at the estimated pass time, end past the budget. After the first
        pass only if a second one would not fit either: the first pass's time includes the warm-up and would drop
        work that a warm second pass shows to fit."""
        assert self.budget is not None
        if self.budget.fits(n_pending * self._pass_estimate() + self.post_s):
            return False
        return not (len(self.pass_times) == 1 and self.budget.fits(self.pass_times[0] + self.post_s))

    def _drop_mirrors(self, pending: Sequence[NetworkPass], why: str) -> None:
        if any(p.mirror for p in pending):
            self._record("test-time augmentation", why)

    def _drop_folds(self, dropped: Sequence[NetworkPass], why: str) -> None:
        folds = list(dict.fromkeys(p.fold for p in dropped if not p.mirror))
        if folds:
            self._record(f"fold(s) {folds}", why)

    def _record(self, what: str, why: str) -> None:
        self.report.dropped.append(what)
        logger.warning("time budget: dropped %s: %s", what, why)


def fold_order(folds: Sequence[int] | None, n_folds: int) -> list[int]:
    """``folds`` checked against an ensemble of ``n_folds`` (default: all, in order)."""
    order = list(range(n_folds)) if folds is None else [int(k) for k in folds]
    if not order or len(set(order)) != len(order) or not all(0 <= k < n_folds for k in order):
        raise ValueError(f"folds {order} must be distinct indices in 0..{n_folds - 1}")
    return order


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
