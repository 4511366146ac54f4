"""The range of features a fitted head saw in training, and the limits that keep a prediction within its order.

A Cox model or a logistic head extrapolates linearly: a feature thousands of times outside what its training
patients spanned (SUVmax of a PET read in the wrong unit, a node count of a corrupt mask) gives a risk of thousands
or a probability of exactly 0 or 1. Every head therefore keeps the per-feature minimum and maximum of its training
features, and at prediction a feature is limited to that range widened by :data:`FEATURE_RANGE_MARGIN` of its width
on each side. Within the widened range nothing changes (the margin leaves room for the patients a fold did not train
on); beyond it the head answers as for the nearest value it may trust, and the predictor warns, naming the feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hecktor.errors import BundleError

FEATURE_RANGE_MARGIN = 0.25
"""How far beyond its training range a feature may go before it is limited, as a share of that range's width (a
quarter on each side: the out-of-fold patients of a fold rarely pass it, a unit error always does)."""


@dataclass(frozen=True)
class OutOfRange:
    """One feature of one case beyond its widened training range."""

    index: int
    value: float
    low: float
    high: float

    def describe(self, name: str) -> str:
        return f"{name} = {self.value:.4g} lies outside its training range widened to [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class FeatureRange:
    """Per-feature minimum and maximum over a head's training features.

    Attributes:
        low, high: one float per feature, ``low <= high`` (tuples, so that heads holding a range compare by value).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", tuple(float(v) for v in np.asarray(self.low, dtype=np.float64).ravel()))
        object.__setattr__(self, "high", tuple(float(v) for v in np.asarray(self.high, dtype=np.float64).ravel()))
        if len(self.low) != len(self.high):
            raise ValueError(f"{len(self.low)} lower and {len(self.high)} upper bounds")

    @classmethod
    def fit(cls, features: np.ndarray) -> "FeatureRange":
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"a feature range is fitted on (n, p) features with n >= 1, got {features.shape}")
        return cls(features.min(axis=0), features.max(axis=0))

    @property
    def n_features(self) -> int:
        return len(self.low)

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The widened range: ``low - m * width`` to ``high + m * width`` with ``m`` = :data:`FEATURE_RANGE_MARGIN`."""
        low, high = np.asarray(self.low), np.asarray(self.high)
        margin = FEATURE_RANGE_MARGIN * (high - low)
        return low - margin, high + margin

    def limit(self, features: np.ndarray) -> np.ndarray:
        """``features`` ``(n, p)`` clipped to the widened range (a new array; NaN stays NaN)."""
        low, high = self.limits()
        return np.clip(np.asarray(features, dtype=np.float64), low, high)

    def outside(self, features: np.ndarray) -> list[OutOfRange]:
        """The features of the first row of ``features`` that :meth:`limit` would change."""
        row = np.asarray(features, dtype=np.float64).reshape(-1, self.n_features)[0]
        low, high = self.limits()
        return [OutOfRange(int(j), float(row[j]), float(low[j]), float(high[j]))
                for j in np.flatnonzero((row < low) | (row > high))]

    def to_dict(self) -> dict[str, list[float]]:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, record: Any, n_features: int, source: str, fix: str) -> "FeatureRange":
        """Read :meth:`to_dict`'s record; one that does not fit ``n_features`` is a :class:`BundleError`."""
        try:
            if not isinstance(record, Mapping):
                raise TypeError("not an object")
            low, high = (np.asarray(record[key], dtype=np.float64) for key in ("low", "high"))
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{source}: malformed feature range ({error}); {fix}") from None
        if low.shape != (n_features,) or high.shape != (n_features,) or not (
                np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
            raise BundleError(f"{source}: the feature range must hold {n_features} finite (low <= high) pairs; {fix}")
        return cls(low, high)


def out_of_range_warning(outside: Mapping[str, OutOfRange]) -> str | None:
    """One warning line for a case's features beyond a head's training range, by feature name (``None`` when none)."""
    if not outside:
        return None
    shown = "; ".join(item.describe(name) for name, item in list(outside.items())[:5])
    more = f" (and {len(outside) - 5} more)" if len(outside) > 5 else ""
    return (f"{shown}{more}: limited to that range, as the case lies far outside the training patients (check its "
            "images and record)")
