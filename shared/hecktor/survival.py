"""Survival-analysis components of Task 2: Cox loss, event-balanced batches, per-fold Cox models, ensemble.

* :func:`cox_partial_likelihood_loss` trains the network's risk head (Breslow or Efron ties).
* :class:`EventBalancedBatchSampler` makes every batch hold events, without which the Cox loss has no terms.
* :class:`LinearCoxModel` is the downstream survival model of one fold: a penalised Cox model fitted with
  scikit-survival on standardised features, stored as JSON (coefficients, scaling, config; no pickle).
* :func:`ensemble_weights` and :func:`ensemble_risk` combine the folds' standardised risks.

Risk convention everywhere: higher risk = earlier relapse (a log hazard ratio).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from hecktor.errors import BundleError, InputError

__all__ = [
    "SURVIVAL_MODELS",
    "ENSEMBLE_RULES",
    "cox_partial_likelihood_loss",
    "EventBalancedBatchSampler",
    "LinearCoxModel",
    "ensemble_weights",
    "ensemble_risk",
]


# --------------------------------------------------------------------------------------------------------------
# Cox partial likelihood
# --------------------------------------------------------------------------------------------------------------


def cox_partial_likelihood_loss(
    risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str = "breslow"
) -> torch.Tensor:
    """Negative Cox log partial likelihood of a batch, averaged over its events.

    Written here rather than taken from a library because neither MONAI nor the project's dependencies ship one
    (torchsurv/pycox would add a dependency for 40 lines); it is checked against scikit-survival's implementation
    in the tests. The computation sorts by time once and works in log space (``logcumsumexp``), so it is
    O(n log n) and stable for large risks.

    Args:
        risk: ``(B,)`` predicted log hazard ratios.
        time: ``(B,)`` follow-up times (event or censoring).
        event: ``(B,)`` 1/True where relapse was observed, 0/False when censored.
        ties: ``"breslow"`` (every tied event sees the full risk set) or ``"efron"`` (tied events leave the risk
            set gradually, the better approximation when ties are many).

    Returns:
        A scalar tensor. A batch without events has no partial-likelihood terms: the loss is then 0 (still
        connected to ``risk`` so ``backward`` works, with zero gradient) and a ``RuntimeWarning`` is issued;
        :class:`EventBalancedBatchSampler` prevents such batches.
    """
    if ties not in ("breslow", "efron"):
        raise ValueError(f"ties must be 'breslow' or 'efron', got {ties!r}")
    if risk.ndim != 1 or time.shape != risk.shape or event.shape != risk.shape:
        raise ValueError(
            f"risk, time and event must be 1-D of equal length, got {tuple(risk.shape)}, {tuple(time.shape)}, "
            f"{tuple(event.shape)}"
        )
    if risk.dtype in (torch.float16, torch.bfloat16):
        risk = risk.float()  # under mixed precision, sums of exponentials need float32
    event = event.to(device=risk.device, dtype=risk.dtype)
    n_events = event.sum()
    if n_events.item() == 0:
        warnings.warn("Cox loss on a batch without events: returning 0", RuntimeWarning, stacklevel=2)
        return risk.sum() * 0.0

    # Descending time: the risk set {j: t_j >= t_i} of sample i is a prefix that ends at the last sample tied
    # with t_i, so one cumulative log-sum-exp, read at the end of each tie group, gives every risk set.
    order = torch.argsort(time.to(risk.device), descending=True, stable=True)
    r, t, e = risk[order], time.to(risk.device)[order], event[order]
    _, group, group_size = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    group_end = torch.cumsum(group_size, 0) - 1
    log_risk_set = torch.logcumsumexp(r, 0)[group_end][group]

    if ties == "breslow":
        log_denominator = log_risk_set
    else:
        # Efron: the l-th (0-based) of the d events tied at a time sees
        # sum_{risk set} exp(r) - (l / d) * sum_{tied events} exp(r).
        n_groups = group_size.shape[0]
        events_in_group = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, group, e)
        masked = torch.where(e > 0, r, torch.full_like(r, -torch.inf))
        group_max = torch.full((n_groups,), -torch.inf, dtype=r.dtype, device=r.device)
        group_max = group_max.scatter_reduce(0, group, masked.detach(), reduce="amax", include_self=True)
        group_max = torch.where(torch.isfinite(group_max), group_max, torch.zeros_like(group_max))
        # exp of the masked risks, not e * exp(r): a censored risk far above its group's events would overflow.
        tied_sum = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(
            0, group, torch.exp(masked - group_max[group])
        )
        # Groups without events never contribute; give them a harmless 1 so log() stays finite for autograd.
        log_tied = torch.log(torch.where(events_in_group > 0, tied_sum, torch.ones_like(tied_sum))) + group_max
        events_before = torch.cumsum(e, 0) - e
        group_start = group_end - group_size + 1
        rank_in_group = events_before - events_before[group_start][group]
        # Censored samples get fraction 0: they add no term, and this keeps their log1p argument away from -1.
        fraction = e * rank_in_group / events_in_group[group].clamp_min(1.0)
        # log(S_R - f * S_D) = log S_R + log1p(-f * S_D / S_R); S_D <= S_R and f < 1 keep the argument > -1.
        log_denominator = log_risk_set + torch.log1p(-fraction * torch.exp(log_tied[group] - log_risk_set))

    return -torch.sum(e * (r - log_denominator)) / n_events


# --------------------------------------------------------------------------------------------------------------
# Batches with events
# --------------------------------------------------------------------------------------------------------------


class EventBalancedBatchSampler(Sampler[list[int]]):
    """Batch sampler whose every batch holds at least ``min_events`` events.

    Every batch first receives ``min_events`` distinct events; the remaining samples (other events and all
    censored ones) are shuffled and dealt evenly, so no batch exceeds ``batch_size``. With enough events an epoch
    is ``ceil(n / batch_size)`` batches and uses each sample once. When the cohort has fewer events than
    ``n_batches * min_events``, events are reused across batches (never twice in one batch) so the guarantee holds,
    and the number of batches grows until the censored samples fit beside them; every sample still appears at
    least once per epoch.

    Pass it as ``DataLoader(dataset, batch_sampler=sampler)``. Successive epochs differ; the sequence of epochs
    is fixed by ``seed``.

    Args:
        events: per-sample event indicator (1/True = event observed).
        batch_size: largest batch.
        min_events: events guaranteed in every batch.
        seed: seed of the shuffling.
    """

    def __init__(self, events: Sequence[int] | np.ndarray, batch_size: int, min_events: int = 2, seed: int = 0):
        events = np.asarray(events).astype(bool).ravel()
        if min_events < 1:
            raise ValueError(f"min_events must be at least 1, got {min_events}")
        if batch_size < min_events:
            raise ValueError(f"batch_size ({batch_size}) must be at least min_events ({min_events})")
        self.event_indices = np.flatnonzero(events)
        self.censored_indices = np.flatnonzero(~events)
        if len(self.event_indices) < min_events:
            raise InputError(
                f"the training set has {len(self.event_indices)} events but every batch needs {min_events}; "
                "lower min_events or add patients with events"
            )
        n_events, n_censored = len(self.event_indices), len(self.censored_indices)
        if batch_size == min_events and n_censored > 0:
            raise ValueError(f"batch_size ({batch_size}) must exceed min_events to leave room for censored samples")
        self.batch_size = batch_size
        self.min_events = min_events
        n_batches = -(-(n_events + n_censored) // batch_size)
        # With scarce events every batch holds exactly min_events events; add batches until the censored fit.
        while n_batches * min_events > n_events and min_events + -(-n_censored // n_batches) > batch_size:
            n_batches += 1
        self.n_batches = n_batches
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._rng
        events = rng.permutation(self.event_indices)
        n_guaranteed = self.n_batches * self.min_events
        batches: list[list[int]] = []
        for b in range(self.n_batches):
            chosen = list(events[b * self.min_events : (b + 1) * self.min_events])
            missing = self.min_events - len(chosen)
            if missing > 0:
                candidates = np.setdiff1d(self.event_indices, chosen)
                chosen += list(rng.choice(candidates, size=missing, replace=False))
            batches.append(chosen)
        rest = rng.permutation(np.concatenate([events[n_guaranteed:], self.censored_indices]))
        for b, share in enumerate(np.array_split(rest, self.n_batches)):
            batch = np.asarray(batches[b] + list(share))
            batches[b] = [int(i) for i in rng.permutation(batch)]
        yield from batches


# --------------------------------------------------------------------------------------------------------------
# Downstream linear Cox models
# --------------------------------------------------------------------------------------------------------------


def _fit_coxph(config: Mapping[str, Any], X: np.ndarray, y: np.ndarray) -> tuple[Any, np.ndarray, float]:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    model = CoxPHSurvivalAnalysis(alpha=float(config["alpha"]), ties=str(config["ties"]))
    model.fit(X, y)
    return model, np.asarray(model.coef_, dtype=np.float64), 0.0


def _fit_coxnet(config: Mapping[str, Any], X: np.ndarray, y: np.ndarray) -> tuple[Any, np.ndarray, float]:
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    # One alpha: the stored model is that single solution, and sksurv's predict() without alpha uses it.
    model = CoxnetSurvivalAnalysis(alphas=[float(config["alpha"])], l1_ratio=float(config["l1_ratio"]))
    model.fit(X, y)
    return model, np.asarray(model.coef_[:, -1], dtype=np.float64), float(model.offset_[-1])


SURVIVAL_MODELS: dict[str, tuple[Any, dict[str, Any]]] = {
    "coxph": (_fit_coxph, {"alpha": 100.0, "ties": "breslow"}),
    "coxnet": (_fit_coxnet, {"alpha": 0.05, "l1_ratio": 0.5}),
}
"""Survival models selectable by ``config["kind"]``: fitting function and default parameters.

* ``coxph``: ``sksurv.linear_model.CoxPHSurvivalAnalysis`` -- ridge-penalised Cox, penalty
  ``alpha / 2 * ||w||^2`` on the (summed) log partial likelihood of standardised features. The default
  ``alpha = 100`` is strong on purpose: 128 correlated fused features overfit a weak ridge (simulated cohort of
  200 with 128 correlated features: out-of-fold C-index 0.57 / 0.63 / 0.70 / 0.72 for alpha 1 / 10 / 100 / 1000),
  and on the 6 usable HN1 clinical columns alpha 1 -> 100 goes 0.59 -> 0.61. Fitting time grows with
  ``n_features ** 2`` (about 1-2 s per fold at 128 features); ``coxnet`` is far faster.
* ``coxnet``: ``sksurv.linear_model.CoxnetSurvivalAnalysis`` -- elastic net at one ``alpha`` with ``l1_ratio``.

Both are linear in the features, so a fitted model is fully described by a coefficient vector and an offset.
"""


class LinearCoxModel:
    """A penalised linear Cox model on standardised features, serialisable to JSON.

    ``predict_risk(X) = ((X - feature_mean) / feature_scale) @ coef - offset``, equal to the underlying
    scikit-survival model's ``predict`` on the standardised features. ``standardized_risk`` further rescales by
    the mean and standard deviation of the risk on the fitting (training) set, so that the folds of an ensemble
    produce risks on a common scale.

    Args:
        config: ``{"kind": "coxph" | "coxnet", ...parameters}``; missing parameters take the defaults of
            :data:`SURVIVAL_MODELS` (``{"kind": "coxph", "alpha": 100.0, "ties": "breslow"}`` when None).
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        kind = config.pop("kind", "coxph")
        if kind not in SURVIVAL_MODELS:
            raise ValueError(f"unknown survival model kind {kind!r}; choose one of {sorted(SURVIVAL_MODELS)}")
        defaults = SURVIVAL_MODELS[kind][1]
        unknown = set(config) - set(defaults)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)} for kind {kind!r}; allowed: {sorted(defaults)}")
        self.config: dict[str, Any] = {"kind": kind, **defaults, **config}
        self.coef_: np.ndarray | None = None
        self.offset_: float = 0.0
        self.feature_mean_: np.ndarray | None = None
        self.feature_scale_: np.ndarray | None = None
        self.risk_mean_: float = 0.0
        self.risk_std_: float = 1.0
        self.estimator_: Any = None  # the fitted sksurv model; not serialised

    def fit(
        self, X: np.ndarray, time: Sequence[float] | np.ndarray, event: Sequence[int] | np.ndarray
    ) -> LinearCoxModel:
        """Fit on features ``X (n, p)`` with follow-up ``time`` and ``event`` indicators."""
        from sksurv.util import Surv

        X = np.asarray(X, dtype=np.float64)
        time = np.asarray(time, dtype=np.float64).ravel()
        event = np.asarray(event).astype(bool).ravel()
        if X.ndim != 2 or len(X) != len(time) or len(time) != len(event):
            raise ValueError(
                f"X must be (n, p) with n = len(time) = len(event); got {X.shape}, {len(time)}, {len(event)}"
            )
        if not np.all(np.isfinite(X)):
            raise InputError("survival model features contain NaN or infinity; check the feature extraction")
        if not event.any():
            raise InputError("cannot fit a Cox model: no events in the fitting set")
        self.feature_mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        # Constant features (e.g. a ReLU unit that never fires) keep scale 1 and become all-zero columns.
        self.feature_scale_ = np.where(scale > 1e-12, scale, 1.0)
        Z = (X - self.feature_mean_) / self.feature_scale_
        fit_function = SURVIVAL_MODELS[self.config["kind"]][0]
        self.estimator_, self.coef_, self.offset_ = fit_function(self.config, Z, Surv.from_arrays(event, time))
        risk = Z @ self.coef_ - self.offset_
        self.risk_mean_ = float(risk.mean())
        std = float(risk.std())
        # An all-zero coefficient vector (heavy L1) gives constant risk; scale 1 avoids dividing by zero.
        self.risk_std_ = std if std > 1e-12 else 1.0
        return self

    def _check_fitted(self, X: np.ndarray) -> np.ndarray:
        if self.coef_ is None or self.feature_mean_ is None or self.feature_scale_ is None:
            raise RuntimeError("LinearCoxModel is not fitted; call fit() or from_dict() first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"expected features of shape (n, {self.coef_.shape[0]}), got {X.shape}")
        return X

    def scale_features(self, X: np.ndarray) -> np.ndarray:
        """Features standardised with the fitting set's mean and standard deviation."""
        X = self._check_fitted(X)
        return (X - self.feature_mean_) / self.feature_scale_

    def predict_risk(self, X: np.ndarray) -> np.ndarray:
        """Linear predictor (log hazard ratio) per row of ``X``; higher = earlier relapse."""
        return self.scale_features(X) @ self.coef_ - self.offset_

    def standardized_risk(self, X: np.ndarray) -> np.ndarray:
        """Risk scaled by the fitting set's risk mean and standard deviation (mean 0, std 1 on that set)."""
        return (self.predict_risk(X) - self.risk_mean_) / self.risk_std_

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record: config, feature scaling, coefficients, offset and risk scaling."""
        if self.coef_ is None or self.feature_mean_ is None or self.feature_scale_ is None:
            raise RuntimeError("LinearCoxModel is not fitted; nothing to serialise")
        return {
            "config": dict(self.config),
            "feature_mean": [float(v) for v in self.feature_mean_],
            "feature_scale": [float(v) for v in self.feature_scale_],
            "coef": [float(v) for v in self.coef_],
            "offset": float(self.offset_),
            "risk_mean": float(self.risk_mean_),
            "risk_std": float(self.risk_std_),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> LinearCoxModel:
        """Rebuild a fitted model from :meth:`to_dict`'s record.

        Raises:
            BundleError: a missing key, an unknown kind, or vectors of different lengths.
        """
        keys = ("config", "feature_mean", "feature_scale", "coef", "offset", "risk_mean", "risk_std")
        missing = [k for k in keys if k not in record]
        if missing:
            raise BundleError(f"survival model record lacks {missing}; re-export the model")
        try:
            model = cls(record["config"])
        except ValueError as error:
            raise BundleError(f"survival model record has an invalid config ({error}); re-export the model") from error
        model.feature_mean_ = np.asarray(record["feature_mean"], dtype=np.float64)
        model.feature_scale_ = np.asarray(record["feature_scale"], dtype=np.float64)
        model.coef_ = np.asarray(record["coef"], dtype=np.float64)
        shapes = {model.feature_mean_.shape, model.feature_scale_.shape, model.coef_.shape}
        if len(shapes) != 1 or model.coef_.ndim != 1:
            raise BundleError(f"survival model record has vectors of different shapes {sorted(shapes)}; re-export")
        model.offset_ = float(record["offset"])
        model.risk_mean_ = float(record["risk_mean"])
        model.risk_std_ = float(record["risk_std"])
        return model


# --------------------------------------------------------------------------------------------------------------
# Ensemble
# --------------------------------------------------------------------------------------------------------------

ENSEMBLE_RULES = ("cindex_margin", "uniform")


def ensemble_weights(cindices: Sequence[float], rule: str = "cindex_margin", epsilon: float = 1e-3) -> np.ndarray:
    """Fold weights of the ensemble from the folds' out-of-fold C-indices.

    Rules:

    * ``"cindex_margin"`` (default): ``w_k = max(C_k - 0.5, epsilon) / sum_j max(C_j - 0.5, epsilon)``. A fold
      counts by how much it beats chance; a fold at or below chance keeps the tiny weight ``epsilon`` (so it is
      not discarded outright by a noisy validation set), and if every fold is at or below chance all weights are
      equal. Example: C = (0.70, 0.60, 0.45) -> margins (0.2, 0.1, 0.001) -> weights (0.6645, 0.3322, 0.0033).
    * ``"uniform"``: ``w_k = 1 / K``.

    Args:
        cindices: out-of-fold C-index of each fold, in [0, 1].
        rule: one of :data:`ENSEMBLE_RULES`.
        epsilon: floor of a fold's margin over chance (``cindex_margin`` only).

    Returns:
        ``(K,)`` non-negative weights summing to 1.
    """
    c = np.asarray(cindices, dtype=np.float64).ravel()
    if c.size == 0:
        raise ValueError("ensemble_weights needs at least one fold")
    if not np.all(np.isfinite(c)) or np.any((c < 0) | (c > 1)):
        raise ValueError(f"C-indices must be finite numbers in [0, 1], got {c.tolist()}")
    if rule == "uniform":
        return np.full(c.size, 1.0 / c.size)
    if rule == "cindex_margin":
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        margin = np.maximum(c - 0.5, epsilon)
        return margin / margin.sum()
    raise ValueError(f"unknown ensemble rule {rule!r}; choose one of {ENSEMBLE_RULES}")


def ensemble_risk(standardized_risks: np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weighted average of the folds' standardised risks.

    Args:
        standardized_risks: ``(K, n)`` -- fold k's :meth:`LinearCoxModel.standardized_risk` for n patients.
        weights: ``(K,)`` from :func:`ensemble_weights` (non-negative, summing to 1).

    Returns:
        ``(n,)`` ensemble risk.
    """
    risks = np.asarray(standardized_risks, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).ravel()
    if risks.ndim != 2 or risks.shape[0] != w.size:
        raise ValueError(f"standardized_risks must be (K, n) with K = {w.size} weights, got {risks.shape}")
    if np.any(w < 0) or not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-9):
        raise ValueError(f"weights must be non-negative and sum to 1, got {w.tolist()}")
    return w @ risks
