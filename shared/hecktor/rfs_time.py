"""The recurrence-free-survival time of HECKTOR 2026: a Cox fold's Breslow baseline survival turned into days.

The 2026 challenge scores an RFS *time* (longer = later relapse) by its C-index. Each fold keeps its Cox model's
Breslow baseline survival ``S0(t)`` (scikit-survival's :class:`~sksurv.linear_model.coxph.BreslowEstimator`, fitted
on the fold's training patients' centred linear predictors), so a case of standardised risk ``r`` has the survival
curve ``S(t | r) = S0(t) ** exp(s * r)`` (``s``: the fold's risk standard deviation, undoing the standardisation).

The case's time is the **restricted mean survival time** up to the fold's last training follow-up ``tau``,
``RMST(r) = integral_0^tau S(t | r) dt``: the area under the predicted curve, in days. Why this summary: it is finite
for every case (a median survival time is infinite whenever the curve stays above 0.5, which most curves of a cohort
with 30 % relapses do), it is in days on the scale of the observed RFS, and it decreases strictly with the risk as
long as one training relapse happened before ``tau``; so ranking the cases by time is ranking them by risk, and the
time's C-index equals the risk's. The ensemble's time is the weighted mean of the folds' RMSTs evaluated at the
ensemble's standardised risk (not at each fold's own), which keeps it a strictly decreasing function of the one risk
the ensemble answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hecktor.errors import BundleError

__all__ = ["BaselineSurvival", "fit_baseline_survival", "ensemble_rfs_time"]

_FIX = "re-export the bundle with training/train_hecktor2026.py"


@dataclass(frozen=True)
class BaselineSurvival:
    """A fold's Breslow baseline survival at centred linear predictor 0.

    Attributes:
        times: the step function's times (days, increasing).
        survival: ``S0`` at each time (non-increasing, in (0, 1]).
        risk_scale: ``s``: a standardised risk ``r`` is the linear predictor ``s * r`` (the Cox model's risk SD).
        horizon_days: ``tau``, the restriction of the mean: the fold's last training follow-up.
    """

    times: np.ndarray
    survival: np.ndarray
    risk_scale: float
    horizon_days: float

    def curve(self, standardized_risk: float) -> np.ndarray:
        """``S(t | r)`` at :attr:`times`."""
        return self.survival ** np.exp(self.risk_scale * float(standardized_risk))

    def restricted_mean(self, standardized_risks: Sequence[float] | np.ndarray) -> np.ndarray:
        """RMST up to :attr:`horizon_days` (days) of each standardised risk; strictly decreasing in the risk."""
        risks = np.atleast_1d(np.asarray(standardized_risks, dtype=np.float64))
        # Step function: S = 1 before the first time, survival[j] on [times[j], times[j+1]).
        edges = np.concatenate([[0.0], np.minimum(self.times, self.horizon_days), [self.horizon_days]])
        widths = np.diff(np.maximum.accumulate(edges))
        levels = np.concatenate([[1.0], self.survival])
        exponents = np.exp(self.risk_scale * risks)[:, None]
        return (levels[None, :] ** exponents) @ widths

    def to_dict(self) -> dict[str, Any]:
        return {"times": self.times.tolist(), "survival": self.survival.tolist(), "risk_scale": self.risk_scale,
                "horizon_days": self.horizon_days, "summary": "restricted mean survival time up to horizon_days"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "baseline survival") -> "BaselineSurvival":
        try:
            times = np.asarray(data["times"], dtype=np.float64).ravel()
            survival = np.asarray(data["survival"], dtype=np.float64).ravel()
            scale, horizon = float(data["risk_scale"]), float(data["horizon_days"])
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{source} is malformed ({type(error).__name__}: {error}); {_FIX}") from None
        if times.size == 0 or times.shape != survival.shape or np.any(np.diff(times) < 0) or \
                np.any(np.diff(survival) > 1e-12) or np.any(survival <= 0) or np.any(survival > 1) or \
                not (scale > 0 and np.isfinite(scale)) or not (horizon > 0 and np.isfinite(horizon)):
            raise BundleError(f"{source}: times, survival, risk scale and horizon do not make a baseline survival "
                              f"curve; {_FIX}")
        return cls(times, survival, scale, horizon)


def fit_baseline_survival(standardized_risks: np.ndarray, risk_scale: float, time: np.ndarray,
                          event: np.ndarray) -> BaselineSurvival:
    """The Breslow baseline survival of a fold's training patients (their standardised risks, the model's risk SD,
    follow-up and relapse), restricted to their last follow-up. Survival values of exactly 0 (every patient at risk
    relapsed at the last time) are floored at 1e-12 so the curve stays a power of a positive number."""
    from sksurv.linear_model.coxph import BreslowEstimator  # training-time only

    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    estimator = BreslowEstimator().fit(risk_scale * np.asarray(standardized_risks, dtype=np.float64), event, time)
    step = estimator.baseline_survival_
    survival = np.clip(np.asarray(step.y, dtype=np.float64), 1e-12, 1.0)
    return BaselineSurvival(np.asarray(step.x, dtype=np.float64), survival, float(risk_scale), float(time.max()))


def ensemble_rfs_time(baselines: Sequence[BaselineSurvival], weights: Sequence[float],
                      standardized_risk: float) -> float:
    """The ensemble's RFS time (days): the weighted mean of the folds' RMSTs at the ensemble's standardised risk."""
    weights = np.asarray(weights, dtype=np.float64)
    times = np.asarray([b.restricted_mean([standardized_risk])[0] for b in baselines])
    return float(times @ weights / weights.sum())
