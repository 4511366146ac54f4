"""Calibration and decision thresholds of the Task 3 classifier (the library of :mod:`hecktor.training.hpv`):
fitting a fold's Platt scaling, choosing the bundle's threshold, and choosing it again without each fold to score
the folds honestly.

**Calibration** (:func:`fit_platt`): Platt scaling of a fold's logit, fitted on predictions the fold's model made for
training patients it did not fit: the inner hold-out of the network's early stopping, or inner 5-fold
cross-validated logits (clinical mode; scikit-learn's ``CalibratedClassifierCV(method="sigmoid", ensemble=False)``
does the same). Not on the fold's validation patients: those score the fold, and a calibration fitted on them would
make every out-of-fold number an in-sample one. Platt (two parameters), not isotonic regression: the hold-out is a
few dozen patients, on which isotonic steps would follow the noise. The result is a
:class:`~hecktor.diagnosis.PlattCalibration`, which the bundle stores and the container applies.

**Threshold** (:func:`decision_thresholds`): the bundle's maximises balanced accuracy on the pooled out-of-fold (OOF)
probabilities of all folds (:func:`best_threshold`; ties: the one nearest the prevalence, the Bayes threshold for
calibrated probabilities). Because that threshold has seen every OOF patient, the balanced accuracy reported per
fold uses the threshold chosen the same way on the *other* folds' OOF probabilities only (cross-fitting), and the
in-sample figure is reported beside it, so the gap shows how much threshold tuning alone flatters a
cross-validation.

**When the probabilities do not separate the classes** (:func:`chosen_threshold`: their AUC below
:data:`MIN_SEPARATION_AUC`, or undefined), the balanced-accuracy optimum is noise, and it often lies above or below
every probability, so that the model answers one class for every patient (the demo of 2026-12-06: threshold 0.713,
every held-out patient HPV-negative). The threshold is then the training prevalence (the Bayes threshold of
calibrated probabilities, which splits them), and the reason is returned so that training warns and the bundle
records it. The cross-fitted thresholds follow the same rule on the other folds' probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hecktor.diagnosis import PlattCalibration
from hecktor.errors import InputError
from hecktor.metrics import roc_auc

__all__ = ["MIN_SEPARATION_AUC", "THRESHOLD_RULES", "fit_platt", "best_threshold", "chosen_threshold", "decision_thresholds"]

MIN_SEPARATION_AUC = 0.55
"""Below this AUC of the pooled out-of-fold probabilities the threshold falls back to the training prevalence."""


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> PlattCalibration:
    """Platt scaling fitted on out-of-sample ``logits`` and their ``labels``: the slope and intercept of
    ``sigmoid(slope * logit + intercept)`` of least log-loss against Platt's smoothed targets
    ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` (Platt 1999; Lin, Lin & Weng 2007). The smoothing keeps the fit
    finite when a few dozen patients are separable, and unlike an L2 penalty it does not depend on the logits' scale.
    (scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` fits the same model.)

    Without both classes, or when the fit would reverse the model's ranking (slope <= 0: the hold-out disagrees
    with everything the fold learnt, which a few dozen patients cannot establish), the logit is only moved to the
    prevalence of ``labels`` (:meth:`PlattCalibration.prior_shift`)."""
    from scipy.optimize import minimize

    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    prevalence = float(labels.mean()) if labels.size else 0.5
    if labels.size < 2 or labels.all() or not labels.any() or np.ptp(logits) == 0:
        return PlattCalibration.prior_shift(prevalence)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    target = np.where(labels, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    scale = float(np.std(logits)) or 1.0  # optimise on standardised logits, then undo: a well-conditioned problem
    z = (logits - logits.mean()) / scale

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        f = params[0] * z + params[1]
        p = 1.0 / (1.0 + np.exp(-f))
        # log-loss written with logaddexp so that large |f| cannot overflow
        value = float(np.sum(np.logaddexp(0.0, f) - target * f))
        residual = p - target
        return value, np.array([np.dot(residual, z), residual.sum()])

    fitted = minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS")
    a, b = (float(v) for v in fitted.x)
    slope, intercept = a / scale, float(b - a * logits.mean() / scale)
    if not (slope > 0 and math.isfinite(slope) and math.isfinite(intercept)):
        return PlattCalibration.prior_shift(prevalence)
    return PlattCalibration(slope, intercept, "platt")


def best_threshold(probability: np.ndarray, labels: np.ndarray, prior: float | None = None) -> float:
    """The threshold ``t`` (positive when ``probability >= t``) of highest balanced accuracy on these patients.

    Candidates are the midpoints between consecutive distinct probabilities; among equally good ones the nearest to
    ``prior`` wins (default: the prevalence of ``labels``, the balanced-accuracy Bayes threshold of calibrated
    probabilities). Without both classes the answer is ``prior`` itself.
    """
    p = np.asarray(probability, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    prior = float(y.mean()) if prior is None else float(prior)
    if y.all() or not y.any() or p.size < 2:
        return min(max(prior, 1e-6), 1 - 1e-6)
    values = np.unique(p)
    if values.size == 1:
        return min(max(prior, 1e-6), 1 - 1e-6)
    candidates = (values[:-1] + values[1:]) / 2.0
    # Positives at or above each candidate: counts from the sorted probabilities, O(n log n).
    pos, neg = np.sort(p[y]), np.sort(p[~y])
    sensitivity = 1.0 - np.searchsorted(pos, candidates, side="left") / pos.size
    specificity = np.searchsorted(neg, candidates, side="left") / neg.size
    score = 0.5 * (sensitivity + specificity)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - prior))]])


THRESHOLD_RULES = ("balanced", "prevalence")
"""How :func:`decision_thresholds` places a Task 3 threshold: ``balanced``, the best balanced accuracy on the
out-of-fold probabilities of the folds it is not used on; ``prevalence``, the training prevalence."""


def chosen_threshold(probability: np.ndarray, labels: np.ndarray, prior: float,
                     min_auc: float = MIN_SEPARATION_AUC) -> tuple[float, str | None]:
    """:func:`best_threshold` of these probabilities, or, when their AUC is below ``min_auc`` (or undefined), ``prior``
    and the reason (``None`` when the threshold was chosen on the probabilities)."""
    p = np.asarray(probability, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    try:
        auc = roc_auc(y, p)
    except InputError:  # one class only: best_threshold answers the prior itself
        auc = math.nan
    if math.isfinite(auc) and auc >= min_auc:
        return best_threshold(p, y, prior=prior), None
    measured = f"AUC {auc:.3f}" if math.isfinite(auc) else "no AUC (one class)"
    return min(max(float(prior), 1e-6), 1 - 1e-6), \
        f"the out-of-fold probabilities do not separate the classes ({measured} < {min_auc:g})"


def decision_thresholds(labels: np.ndarray, val_idx: Sequence[np.ndarray], probabilities: Sequence[np.ndarray],
                        train_idx: Sequence[np.ndarray], prevalence: float,
                        min_auc: float = MIN_SEPARATION_AUC,
                        rule: str = "balanced") -> tuple[float, list[float], str | None]:
    """The bundle's threshold and, per fold, its cross-fitted one, each by :func:`chosen_threshold` (``rule``
    ``"balanced"``) or each the training prevalence (``rule`` ``"prevalence"``: the Bayes threshold of balanced
    accuracy for calibrated probabilities, chosen on no out-of-fold probability).

    Args:
        labels: the cohort's statuses (1 = HPV-positive).
        val_idx: per trained fold, its validation patients (indices into ``labels``).
        probabilities: per trained fold, its validation patients' OOF calibrated probabilities.
        train_idx: per trained fold, its training patients.
        prevalence: the cohort's, the tie-break of the bundle's threshold.

        min_auc: below this pooled OOF AUC, the threshold is the prevalence (:func:`chosen_threshold`).
        rule: ``"balanced"`` or ``"prevalence"`` (:data:`THRESHOLD_RULES`).

    Returns:
        the threshold of :func:`chosen_threshold` on the pooled OOF probabilities; per fold the one chosen the same
        way on the other folds' OOF probabilities only (ties, and the fallback, towards the fold's training
        prevalence; with one fold trained, that prevalence itself: the Bayes threshold of calibrated probabilities);
        and why the bundle's threshold fell back to the prevalence (``None``: it did not). With ``rule``
        ``"prevalence"``: the prevalence, each fold's training prevalence, and the same reason when the pooled OOF
        probabilities do not separate the classes (the threshold is the prevalence either way; the reason is said).
    """
    if rule not in THRESHOLD_RULES:
        raise InputError(f"unknown threshold rule {rule!r} (choose from {', '.join(THRESHOLD_RULES)})")
    labels = np.asarray(labels)
    if rule == "prevalence":
        # The prevalence whatever the probabilities; still said (and recorded) when they do not separate the classes.
        _, unseparated = chosen_threshold(np.concatenate(probabilities), labels[np.concatenate(val_idx)],
                                          prevalence, min_auc)
        return (min(max(float(prevalence), 1e-6), 1 - 1e-6),
                [min(max(float(labels[trained].mean()), 1e-6), 1 - 1e-6) for trained in train_idx], unseparated)
    threshold, fallback = chosen_threshold(np.concatenate(probabilities), labels[np.concatenate(val_idx)],
                                           prevalence, min_auc)
    cross_fitted = []
    for k, trained in enumerate(train_idx):
        prior = float(labels[trained].mean())
        others = [j for j in range(len(val_idx)) if j != k]
        if not others:
            cross_fitted.append(prior)
            continue
        idx = np.concatenate([val_idx[j] for j in others])
        cross_fitted.append(chosen_threshold(np.concatenate([probabilities[j] for j in others]), labels[idx], prior,
                                             min_auc)[0])
    return threshold, cross_fitted, fallback
