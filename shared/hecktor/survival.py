"""Survival-analysis components of Task 2: Cox loss, event-balanced batches, the fold ensemble.

* :func:`cox_partial_likelihood_loss` trains the network's risk head (Breslow or Efron ties).
* :class:`EventBalancedBatchSampler` makes every batch hold events, without which the Cox loss has no terms.
* :func:`ensemble_weights` and :func:`ensemble_risk` combine the folds' standardised risks.

The downstream survival model of one fold (ridge Cox, gradient-boosted Cox, ...) is in :mod:`hecktor.survival_models`,
the cross-validation folds in :mod:`hecktor.folds`.

Risk convention everywhere: higher risk = earlier relapse (a log hazard ratio).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from hecktor.errors import InputError

__all__ = [
    "ENSEMBLE_RULES",
    "cox_partial_likelihood_loss",
    "EventBalancedBatchSampler",
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
        standardized_risks: ``(K, n)`` -- fold k's :meth:`SurvivalModel.standardized_risk <hecktor.survival_models.SurvivalModel.standardized_risk>` for n patients.
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
