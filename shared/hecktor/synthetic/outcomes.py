"""The known truth of the outcomes: the models that relapse-free survival (Task 2) and HPV status (Task 3) are drawn
from, the survival draw, and the oracles that score the truth on a cohort (the best any model can reach).

Survival follows a proportional-hazards model with a Weibull baseline; times are drawn from the true (not the
missing-masked) covariates. HPV status is drawn from a logistic model of the true record and tumour; HPV-negative
status raises the hazard. Both models are written to ``cohort.json``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from hecktor.synthetic.clinical import _P_TOBACCO, _PS_PROBS
from hecktor.synthetic.phantom import _LOG_VOL_HI, _LOG_VOL_LO, _NODE_PROBS, _SUV_HI, _SUV_LO

_NODE_MEAN = sum(n * p for n, p in enumerate(_NODE_PROBS))
_NODE_SD = math.sqrt(sum(n * n * p for n, p in enumerate(_NODE_PROBS)) - _NODE_MEAN**2)

# HPV status (Task 3's target): logit P(HPV+) = intercept + sum(beta * (x - centre) / scale), the covariates being
# true values. HPV-positive patients are more often non-smokers and younger, with smaller primaries and more nodal
# disease (as in oropharyngeal cancer). The imaging covariates carry most of the variance of the logit (about 1.6 of
# 2.2). Population prevalence and the Bayes rule's balanced accuracy (predict positive where P(HPV+) >= prevalence):
# 0.56 and 0.73 over 4,000 simulated patients.
HPV_MODEL: dict[str, Any] = {
    "intercept": 0.3,
    "covariates": {
        "tobacco": {"beta": -1.2, "centre": _P_TOBACCO, "scale": 1.0},
        "age_years": {"beta": -0.5, "centre": 62.0, "scale": 9.5},
        "log_tumour_volume_ml": {"beta": -0.9, "centre": (_LOG_VOL_LO + _LOG_VOL_HI) / 2,
                                 "scale": (_LOG_VOL_HI - _LOG_VOL_LO) / math.sqrt(12)},
        "n_nodes": {"beta": 0.9, "centre": _NODE_MEAN, "scale": _NODE_SD},
    },
}
HPV_PREVALENCE = 0.56
_P_HPV_NEG = 1.0 - HPV_PREVALENCE

# True proportional-hazards model: log_hazard = sum(beta * (x - centre) / scale) over these covariates.
# Centres and scales are the population moments of the generating distributions (not of one cohort), so a case's
# log-hazard depends on that case alone. Imaging carries most of the variance of the linear predictor
# (about 1.4 of 1.8), clinical covariates the rest.
TRUE_MODEL: dict[str, dict[str, float]] = {
    "log_tumour_volume_ml": {
        "beta": 0.9,
        "centre": (_LOG_VOL_LO + _LOG_VOL_HI) / 2,
        "scale": (_LOG_VOL_HI - _LOG_VOL_LO) / math.sqrt(12),
    },
    "suv_max": {"beta": 0.6, "centre": (_SUV_LO + _SUV_HI) / 2, "scale": (_SUV_HI - _SUV_LO) / math.sqrt(12)},
    "n_nodes": {"beta": 0.5, "centre": _NODE_MEAN, "scale": _NODE_SD},
    "hpv_negative": {"beta": 0.8, "centre": _P_HPV_NEG, "scale": 1.0},
    "age_years": {"beta": 0.25, "centre": 62.0, "scale": 9.5},
    "performance_status": {"beta": 0.3, "centre": sum(i * p for i, p in enumerate(_PS_PROBS)), "scale": 1.0},
    "m1": {"beta": 1.2, "centre": 0.03, "scale": 1.0},
    "tobacco": {"beta": 0.3, "centre": _P_TOBACCO, "scale": 1.0},
    "chemoradiotherapy": {"beta": -0.2, "centre": 0.70, "scale": 1.0},
}

# Weibull baseline: S0(t) = exp(-(t / scale)^shape), median RFS of an average patient (log-hazard 0) 4 years.
# With the censoring below about 39 % of patients relapse during follow-up (4,000 simulated cases: 39.3 %).
WEIBULL_SHAPE = 1.3
WEIBULL_MEDIAN_DAYS = 4.0 * 365.25
WEIBULL_SCALE_DAYS = WEIBULL_MEDIAN_DAYS / math.log(2.0) ** (1.0 / WEIBULL_SHAPE)
# Independent censoring: end of follow-up uniform in [1, 5] years (staggered accrual), plus loss to follow-up.
CENSOR_FOLLOW_UP_YEARS = (1.0, 5.0)
CENSOR_DROPOUT_MEAN_YEARS = 15.0


def _covariates(true_clinical: dict[str, Any], volume_ml: float, suv_max: float, n_nodes: int) -> dict[str, float]:
    return {
        "log_tumour_volume_ml": math.log(volume_ml),
        "suv_max": suv_max,
        "n_nodes": float(n_nodes),
        "hpv_negative": float(true_clinical["HPV Status"] == 0),
        "age_years": float(true_clinical["Age"]),
        "performance_status": float(true_clinical["Performance Status"]),
        "m1": float(true_clinical["M-stage"] == "M1"),
        "tobacco": float(true_clinical["Tobacco Consumption"]),
        "chemoradiotherapy": float(true_clinical["Treatment"]),
    }


def hpv_probability(true_clinical: dict[str, Any], volume_ml: float, n_nodes: int) -> float:
    """P(HPV+) of :data:`HPV_MODEL` for a patient's true record and tumour."""
    values = {"tobacco": float(true_clinical["Tobacco Consumption"]), "age_years": float(true_clinical["Age"]),
              "log_tumour_volume_ml": math.log(volume_ml), "n_nodes": float(n_nodes)}
    logit = HPV_MODEL["intercept"] + sum(m["beta"] * (values[k] - m["centre"]) / m["scale"]
                                         for k, m in HPV_MODEL["covariates"].items())
    return 1.0 / (1.0 + math.exp(-logit))


def true_log_hazard(covariates: dict[str, float]) -> float:
    """The generating model's log-hazard (relative to an average patient) for a dict of :data:`TRUE_MODEL` keys."""
    return float(sum(m["beta"] * (covariates[k] - m["centre"]) / m["scale"] for k, m in TRUE_MODEL.items()))


def _draw_survival(rng: np.random.Generator, log_hazard: float) -> tuple[float, int]:
    event_time = WEIBULL_SCALE_DAYS * (rng.exponential() / math.exp(log_hazard)) ** (1.0 / WEIBULL_SHAPE)
    follow_up = rng.uniform(*CENSOR_FOLLOW_UP_YEARS) * 365.25
    dropout = rng.exponential(CENSOR_DROPOUT_MEAN_YEARS * 365.25)
    censor_time = min(follow_up, dropout)
    relapse = int(event_time <= censor_time)
    # Whole days, as in the training table; at least one day so every time is positive.
    return float(max(1.0, round(min(event_time, censor_time)))), relapse


def oracle_c_index(
    relapse: Sequence[int], rfs_days: Sequence[float], log_hazard: Sequence[float]
) -> float | None:
    """Harrell's C of the true log-hazard against observed (RFS, Relapse), via scikit-survival.

    None where it is undefined: fewer than two patients, no relapse, or no comparable pair (tiny cohorts).
    """
    # Imported here: scikit-survival takes ~2 s to import and --help needs none of it.
    from sksurv.exceptions import NoComparablePairException
    from sksurv.metrics import concordance_index_censored

    events = np.asarray(relapse, dtype=bool)
    if events.size < 2 or not events.any():
        return None
    times = np.asarray(rfs_days, dtype=float)
    try:
        return float(concordance_index_censored(events, times, np.asarray(log_hazard, dtype=float))[0])
    except NoComparablePairException:
        return None


def oracle_balanced_accuracy(status: Sequence[int], probability: Sequence[float]) -> float | None:
    """Balanced accuracy of the Bayes rule for balanced accuracy, "HPV+ where P(HPV+) >= the population prevalence",
    on patients with known ``status``; None where a class is absent."""
    status = np.asarray(status, dtype=bool)
    if status.all() or not status.any():
        return None
    predicted = np.asarray(probability, dtype=float) >= HPV_PREVALENCE
    return float(0.5 * (predicted[status].mean() + (~predicted[~status]).mean()))
