"""The RFS time of HECKTOR 2026 (hecktor.rfs_time): the RMST of a Breslow baseline decreases strictly with the risk,
so the time's C-index equals the risk's."""

from __future__ import annotations

import numpy as np
import pytest

from hecktor.errors import BundleError
from hecktor.metrics import concordance_index
from hecktor.rfs_time import BaselineSurvival, ensemble_rfs_time, fit_baseline_survival


def _cohort(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(900.0 * np.exp(-0.8 * risk))
    censor = rng.uniform(200.0, 2500.0, n)
    return risk, np.minimum(time, censor).round(), (time <= censor).astype(int)


def test_rmst_is_strictly_decreasing_and_keeps_the_c_index() -> None:
    risk, time, event = _cohort()
    baseline = fit_baseline_survival(risk, 0.8, time, event)
    assert baseline.horizon_days == time.max()
    grid = np.linspace(-3, 3, 61)
    rmst = baseline.restricted_mean(grid)
    assert np.all(np.diff(rmst) < 0) and np.all((rmst > 0) & (rmst <= time.max()))
    # A case of no risk at all (the curve at 1 up to the first event) lives almost to the horizon.
    assert baseline.restricted_mean([-50.0])[0] == pytest.approx(time.max(), rel=1e-6)
    times = baseline.restricted_mean(risk)
    assert concordance_index(time, event, -times) == concordance_index(time, event, risk)
    assert concordance_index(time, event, risk) > 0.6


def test_ensemble_time_and_round_trip() -> None:
    risk, time, event = _cohort(seed=1)
    folds = [fit_baseline_survival(risk[:40], 0.8, time[:40], event[:40]),
             fit_baseline_survival(risk[20:], 1.2, time[20:], event[20:])]
    times = [ensemble_rfs_time(folds, [0.3, 0.7], r) for r in sorted(risk)]
    assert np.all(np.diff(times) < 0)
    assert ensemble_rfs_time(folds, [1.0, 0.0], 0.5) == pytest.approx(folds[0].restricted_mean([0.5])[0])
    again = BaselineSurvival.from_dict(folds[1].to_dict())
    assert again.restricted_mean([0.2])[0] == folds[1].restricted_mean([0.2])[0]
    with pytest.raises(BundleError, match="fold_1_baseline.json: times, survival"):
        BaselineSurvival.from_dict({**folds[1].to_dict(), "risk_scale": -1.0}, "fold_1_baseline.json")
