"""Downstream survival models of Task 2 behind one interface, each stored as JSON (no pickle).

A fold of the Task 2 ensemble turns features (the network's fused features, or in clinical mode the encoded
record) into a risk with a :class:`SurvivalModel`. Every kind shares what the ensemble relies on:

* features standardised with the fitting set's mean and standard deviation (constant features keep scale 1);
* ``predict_risk(X)``: one number per patient, higher = earlier relapse;
* ``standardized_risk(X)``: that risk scaled by the fitting set's risk mean and standard deviation, so the folds
  of an ensemble average risks on a common scale;
* ``to_dict()`` / ``from_dict()``: a JSON record whose ``"config"`` carries ``"kind"``.

Kinds (:data:`SURVIVAL_MODELS`):

* ``"coxph"`` and ``"coxnet"``: :class:`LinearCoxModel`, a penalised linear Cox model (scikit-survival). The ridge
  penalty can be chosen by an inner cross-validation on the fitting set (``"alpha": "cv"``).
* ``"gbsa"``: :class:`GradientBoostedCoxModel`, gradient-boosted regression trees on the Cox partial likelihood
  (scikit-survival's ``GradientBoostingSurvivalAnalysis``), a non-linear model.

Build one from a config with :func:`build_survival_model` and read a stored record with
:func:`survival_model_from_dict`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from hecktor.errors import BundleError, InputError
from hecktor.feature_range import FeatureRange, OutOfRange
from hecktor.metrics import concordance_index

__all__ = [
    "SURVIVAL_MODELS",
    "DEFAULT_SURVIVAL_CONFIG",
    "SurvivalModel",
    "LinearCoxModel",
    "GradientBoostedCoxModel",
    "build_survival_model",
    "survival_model_from_dict",
]

DEFAULT_SURVIVAL_CONFIG: dict[str, Any] = {"kind": "coxph", "alpha": 100.0, "ties": "breslow"}
"""What ``build_survival_model(None)`` builds: the ridge Cox model the trainer has always used."""

_RE_EXPORT = "re-export the model"


def _as_float_vector(record: Mapping[str, Any], key: str) -> np.ndarray:
    """A 1-D float vector of a stored record, or a :class:`BundleError`."""
    try:
        vector = np.asarray(record[key], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BundleError(f"survival model record: {key!r} is not a list of numbers ({error}); {_RE_EXPORT}") from None
    if vector.ndim != 1 or not np.all(np.isfinite(vector)):
        raise BundleError(f"survival model record: {key!r} must be a flat list of finite numbers; {_RE_EXPORT}")
    return vector


def _as_float(record: Mapping[str, Any], key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise BundleError(f"survival model record: {key!r} must be a finite number, got {value!r}; {_RE_EXPORT}")
    return float(value)


class SurvivalModel(ABC):
    """A survival model on standardised features, serialisable to JSON.

    Subclasses declare the kinds they implement in :attr:`KINDS` (kind -> default parameters) and implement
    :meth:`_fit_standardized`, :meth:`_predict_standardized`, :meth:`_state_to_dict` and :meth:`_load_state`;
    validation of the inputs, the feature standardisation and the risk scaling are done here, once for all kinds.

    Common config options (any kind; kept in :attr:`config` only when given):

    * ``"standardize"`` (default ``True``): scale every feature to unit standard deviation on the fitting set.
      ``False`` only centres the features: for inputs already on a deliberate common scale, such as
      :class:`hecktor.clinical.ClinicalEncoder`'s output (z-scored age, 0/1 indicators), where rescaling an
      indicator seen in 1 of 110 patients would multiply it by about 10 and let the penalty ignore it.

    Args:
        config: ``{"kind": ..., ...parameters}``; missing parameters take the kind's defaults, a missing kind
            the class's first kind.

    Raises:
        ValueError: a kind this class does not implement, or an unknown parameter.
    """

    KINDS: ClassVar[dict[str, dict[str, Any]]] = {}
    COMMON_OPTIONS: ClassVar[dict[str, Any]] = {"standardize": True}

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        config = dict(config or {})
        kind = config.pop("kind", next(iter(self.KINDS)))
        if kind not in self.KINDS:
            if kind in SURVIVAL_MODELS:
                raise ValueError(f"survival model kind {kind!r} is a {SURVIVAL_MODELS[kind].__name__}, not a "
                                 f"{type(self).__name__}; build it with build_survival_model")
            raise ValueError(f"unknown survival model kind {kind!r}; choose one of {sorted(SURVIVAL_MODELS)}")
        allowed = {**self.KINDS[kind], **self.COMMON_OPTIONS, **self._optional_parameters(kind, config)}
        unknown = set(config) - set(allowed)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)} for kind {kind!r}; allowed: {sorted(allowed)}")
        if not isinstance(config.get("standardize", True), bool):
            raise ValueError(f"'standardize' must be true or false, got {config['standardize']!r}")
        self.config: dict[str, Any] = {"kind": kind, **self.KINDS[kind], **config}
        self._check_config()
        self.feature_mean_: np.ndarray | None = None
        self.feature_scale_: np.ndarray | None = None
        self.feature_range_: FeatureRange | None = None  # None: a model stored before ranges were kept
        self.risk_mean_: float = 0.0
        self.risk_std_: float = 1.0

    # ------------------------------------------------------------------------------------------------ per kind
    def _optional_parameters(self, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters a kind accepts only in some configurations (e.g. ``alphas`` with ``alpha = "cv"``)."""
        return {}

    def _check_config(self) -> None:
        """Reject parameter values that would only fail at fit time (override per kind)."""

    @abstractmethod
    def _fit_standardized(self, Z: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        """Fit on standardised features ``Z``."""

    @abstractmethod
    def _predict_standardized(self, Z: np.ndarray) -> np.ndarray:
        """Risk of standardised features ``Z`` (n, p) as ``(n,)`` float64."""

    @abstractmethod
    def _state_to_dict(self) -> dict[str, Any]:
        """The fitted parameters as JSON-serialisable values (merged into :meth:`to_dict`)."""

    @abstractmethod
    def _load_state(self, record: Mapping[str, Any], n_features: int) -> None:
        """Restore the fitted parameters from a record; raise :class:`BundleError` when they do not fit."""

    _STATE_KEYS: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------------------------------------ common
    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    @property
    def is_fitted(self) -> bool:
        return self.feature_mean_ is not None

    @property
    def n_features(self) -> int:
        """Number of input features the fitted model expects."""
        self._require_fitted()
        return int(self.feature_mean_.shape[0])

    def _require_fitted(self) -> None:
        if self.feature_mean_ is None or self.feature_scale_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or from_dict() first")

    def fit(
        self, X: np.ndarray, time: Sequence[float] | np.ndarray, event: Sequence[int] | np.ndarray
    ) -> SurvivalModel:
        """Fit on features ``X (n, p)`` with follow-up ``time`` and ``event`` indicators.

        Raises:
            ValueError: inconsistent shapes.
            InputError: non-finite features, or no event to fit on.
        """
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
        self.feature_range_ = FeatureRange.fit(X)
        if self.config.get("standardize", True):
            scale = X.std(axis=0)
            # Constant features (e.g. a ReLU unit that never fires) keep scale 1 and become all-zero columns.
            self.feature_scale_ = np.where(scale > 1e-12, scale, 1.0)
        else:
            self.feature_scale_ = np.ones(X.shape[1])
        Z = (X - self.feature_mean_) / self.feature_scale_
        self._fit_standardized(Z, time, event)
        risk = self._predict_standardized(Z)
        self.risk_mean_ = float(risk.mean())
        std = float(risk.std())
        # A constant risk (all-zero coefficients under heavy L1, a single-leaf tree) would divide by zero.
        self.risk_std_ = std if std > 1e-12 else 1.0
        return self

    def _check_features(self, X: np.ndarray) -> np.ndarray:
        self._require_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected features of shape (n, {self.n_features}), got {X.shape}")
        return X

    def scale_features(self, X: np.ndarray) -> np.ndarray:
        """Features limited to the fitting set's widened range (:mod:`hecktor.feature_range`), then standardised
        with its mean and standard deviation."""
        X = self._check_features(X)
        if self.feature_range_ is not None:
            X = self.feature_range_.limit(X)
        return (X - self.feature_mean_) / self.feature_scale_

    def features_out_of_range(self, X: np.ndarray) -> list[OutOfRange]:
        """The features of ``X``'s first row that lie beyond the fitting set's widened range (and are limited)."""
        X = self._check_features(X)
        return self.feature_range_.outside(X) if self.feature_range_ is not None else []

    def predict_risk(self, X: np.ndarray) -> np.ndarray:
        """Risk per row of ``X`` (``(n, p)`` or one ``(p,)`` row) as ``(n,)``; higher = earlier relapse."""
        return self._predict_standardized(self.scale_features(X))

    def standardized_risk(self, X: np.ndarray) -> np.ndarray:
        """Risk scaled by the fitting set's risk mean and standard deviation (mean 0, std 1 on that set)."""
        return (self.predict_risk(X) - self.risk_mean_) / self.risk_std_

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record: config, feature scaling, risk scaling and the kind's fitted parameters."""
        self._require_fitted()
        return {
            "config": dict(self.config),
            "feature_mean": [float(v) for v in self.feature_mean_],
            "feature_scale": [float(v) for v in self.feature_scale_],
            **({"feature_range": self.feature_range_.to_dict()} if self.feature_range_ is not None else {}),
            **self._state_to_dict(),
            "risk_mean": float(self.risk_mean_),
            "risk_std": float(self.risk_std_),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SurvivalModel:
        """Rebuild a fitted model from :meth:`to_dict`'s record. Called on :class:`SurvivalModel` (as
        :func:`survival_model_from_dict` does) it reads any kind; called on a subclass, only that subclass's kinds.

        Raises:
            BundleError: not a mapping, a missing key, an unknown kind, or arrays that do not fit together.
        """
        if not isinstance(record, Mapping):
            raise BundleError(f"survival model record must be a JSON object, got {type(record).__name__}; "
                              f"{_RE_EXPORT}")
        config = record.get("config")
        if not isinstance(config, Mapping) or "kind" not in config:
            raise BundleError(f"survival model record lacks a config with a kind; {_RE_EXPORT}")
        kind = config["kind"]
        target = SURVIVAL_MODELS.get(kind) if isinstance(kind, str) else None
        if target is None:
            raise BundleError(f"survival model record has unknown kind {kind!r} (this library knows "
                              f"{sorted(SURVIVAL_MODELS)}); {_RE_EXPORT} with this library")
        if not issubclass(target, cls):
            raise BundleError(f"survival model record holds a {target.__name__} (kind {kind!r}), not a "
                              f"{cls.__name__}; read it with survival_model_from_dict")
        keys = ("feature_mean", "feature_scale", *target._STATE_KEYS, "risk_mean", "risk_std")
        missing = [k for k in keys if k not in record]
        if missing:
            raise BundleError(f"survival model record lacks {missing}; {_RE_EXPORT}")
        try:
            model = target(config)
        except (TypeError, ValueError) as error:
            raise BundleError(f"survival model record has an invalid config ({error}); {_RE_EXPORT}") from None
        mean, scale = _as_float_vector(record, "feature_mean"), _as_float_vector(record, "feature_scale")
        if mean.shape != scale.shape:
            shapes = sorted({mean.shape, scale.shape})
            raise BundleError(f"survival model record has vectors of different shapes {shapes}; {_RE_EXPORT}")
        if np.any(scale <= 0):
            raise BundleError(f"survival model record has a non-positive feature scale; {_RE_EXPORT}")
        model._load_state(record, mean.shape[0])
        model.feature_mean_, model.feature_scale_ = mean, scale
        if "feature_range" in record:
            model.feature_range_ = FeatureRange.from_dict(record["feature_range"], mean.shape[0], "survival model record",
                                                          _RE_EXPORT)
        model.risk_mean_ = _as_float(record, "risk_mean")
        model.risk_std_ = _as_float(record, "risk_std")
        if model.risk_std_ <= 0:
            raise BundleError(f"survival model record has a non-positive risk_std; {_RE_EXPORT}")
        return model

    def __repr__(self) -> str:
        state = f"n_features={self.n_features}" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({self.config!r}, {state})"


# --------------------------------------------------------------------------------------------------------------
# Linear Cox models
# --------------------------------------------------------------------------------------------------------------

CV_DEFAULTS: dict[str, Any] = {"alphas": [0.1, 1.0, 10.0, 100.0, 1000.0], "inner_folds": 3, "inner_seed": 0}
"""Parameters of the inner cross-validation that ``"alpha": "cv"`` adds to a linear model's config."""


class LinearCoxModel(SurvivalModel):
    """A penalised linear Cox model on standardised features (kinds ``"coxph"`` and ``"coxnet"``).

    ``predict_risk(X) = ((X - feature_mean) / feature_scale) @ coef - offset``, equal to the underlying
    scikit-survival model's ``predict`` on the standardised features.

    * ``coxph``: ``sksurv.linear_model.CoxPHSurvivalAnalysis`` -- ridge-penalised Cox, penalty
      ``alpha / 2 * ||w||^2`` on the (summed) log partial likelihood. The default ``alpha = 100`` is strong on
      purpose: 128 correlated fused features overfit a weak ridge (simulated cohort of 200 with 128 correlated
      features: out-of-fold C-index 0.57 / 0.63 / 0.70 / 0.72 for alpha 1 / 10 / 100 / 1000). Fitting time grows
      with ``n_features ** 2`` (about 1-2 s per fold at 128 features); ``coxnet`` is far faster.
    * ``coxnet``: ``sksurv.linear_model.CoxnetSurvivalAnalysis`` -- elastic net at one ``alpha`` with
      ``l1_ratio``.

    ``"alpha": "cv"`` chooses alpha among ``alphas`` by an ``inner_folds``-fold cross-validation on the fitting
    set (scikit-learn ``StratifiedKFold`` on the event, shuffled with ``inner_seed``): the alpha with the highest
    mean inner-validation C-index wins, ties going to the larger alpha (the simpler model); the model is then
    refitted on the whole fitting set. The choice and every alpha's score are stored (``alpha_selection``).

    Args:
        config: ``{"kind": "coxph" | "coxnet", ...parameters}``; missing parameters take the kind's defaults
            (``{"kind": "coxph", "alpha": 100.0, "ties": "breslow"}`` when None).
    """

    KINDS: ClassVar[dict[str, dict[str, Any]]] = {
        "coxph": {"alpha": 100.0, "ties": "breslow"},
        "coxnet": {"alpha": 0.05, "l1_ratio": 0.5},
    }
    _STATE_KEYS: ClassVar[tuple[str, ...]] = ("coef", "offset")

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        if self.config["alpha"] == "cv":
            self.config = {**self.config, **{k: v for k, v in CV_DEFAULTS.items() if k not in self.config}}
            self.config["alphas"] = [float(a) for a in self.config["alphas"]]
        self.coef_: np.ndarray | None = None
        self.offset_: float = 0.0
        self.alpha_: float | None = None  # the alpha of the fitted model (the chosen one under "cv")
        self.alpha_selection_: dict[str, Any] | None = None
        self.estimator_: Any = None  # the fitted sksurv model; not serialised

    def _optional_parameters(self, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return dict(CV_DEFAULTS) if config.get("alpha") == "cv" else {}

    def _check_config(self) -> None:
        alpha = self.config["alpha"]
        if alpha == "cv":
            alphas, folds = self.config.get("alphas", CV_DEFAULTS["alphas"]), self.config.get("inner_folds", 3)
            if (not isinstance(alphas, Sequence) or isinstance(alphas, str) or not alphas
                    or not all(isinstance(a, numbers.Real) and not isinstance(a, bool) and a >= 0 for a in alphas)):
                raise ValueError(f"'alphas' must be a non-empty list of non-negative numbers, got {alphas!r}")
            if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
                raise ValueError(f"'inner_folds' must be an integer >= 2, got {folds!r}")
            if not isinstance(self.config.get("inner_seed", 0), int):
                raise ValueError(f"'inner_seed' must be an integer, got {self.config['inner_seed']!r}")
        elif isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or alpha < 0:
            raise ValueError(f"'alpha' must be a non-negative number or \"cv\", got {alpha!r}")
        if self.kind == "coxph" and self.config["ties"] not in ("breslow", "efron"):
            raise ValueError(f"'ties' must be \"breslow\" or \"efron\", got {self.config['ties']!r}")
        l1_ratio = self.config.get("l1_ratio", 1.0)
        if self.kind == "coxnet" and (isinstance(l1_ratio, bool) or not isinstance(l1_ratio, numbers.Real)
                                      or not 0 < l1_ratio <= 1):
            raise ValueError(f"'l1_ratio' must be a number in (0, 1], got {l1_ratio!r}")

    # --------------------------------------------------------------------------------------------- fitting
    def _fit_alpha(self, alpha: float, Z: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[Any, np.ndarray,
                                                                                                      float]:
        """Fit at one alpha: the sksurv estimator, its coefficients and its offset."""
        from sksurv.util import Surv

        y = Surv.from_arrays(event, time)
        if self.kind == "coxph":
            from sksurv.linear_model import CoxPHSurvivalAnalysis

            model = CoxPHSurvivalAnalysis(alpha=alpha, ties=str(self.config["ties"]))
            model.fit(Z, y)
            return model, np.asarray(model.coef_, dtype=np.float64), 0.0
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        # One alpha: the stored model is that single solution, and sksurv's predict() without alpha uses it.
        model = CoxnetSurvivalAnalysis(alphas=[alpha], l1_ratio=float(self.config["l1_ratio"]))
        model.fit(Z, y)
        return model, np.asarray(model.coef_[:, -1], dtype=np.float64), float(model.offset_[-1])

    def _select_alpha(self, Z: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
        """Inner cross-validation on the fitting set: the alpha with the best mean validation C-index."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import StratifiedKFold

        n_folds = int(self.config["inner_folds"])
        if event.sum() < n_folds or (~event).sum() < n_folds:
            raise InputError(f"alpha \"cv\" with {n_folds} inner folds needs at least {n_folds} events and "
                             f"{n_folds} censored patients in the fitting set (got {int(event.sum())} and "
                             f"{int((~event).sum())}); give a fixed alpha or fewer inner_folds")
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(self.config["inner_seed"]))
        splits = list(splitter.split(Z, event))
        alphas = [float(a) for a in self.config["alphas"]]
        scores = []
        for alpha in alphas:
            fold_scores = []
            for train, val in splits:
                with warnings.catch_warnings():
                    # A weak penalty on a level held by one patient lets a candidate diverge: sksurv's Newton steps
                    # then overflow (and are halved) or stop at the iteration limit. Such a candidate scores badly
                    # or not at all below; its warnings would only bury the final fit's.
                    warnings.simplefilter("ignore", RuntimeWarning)
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    try:
                        _, coef, offset = self._fit_alpha(alpha, Z[train], time[train], event[train])
                    except (ValueError, np.linalg.LinAlgError):  # sksurv: "search direction contains NaN ..."
                        fold_scores = []
                        break
                risk = Z[val] @ coef - offset
                if not np.all(np.isfinite(risk)):
                    fold_scores = []
                    break
                try:
                    fold_scores.append(concordance_index(time[val], event[val], risk))
                except InputError:  # no comparable pair in this inner validation set: it cannot score
                    continue
            # An alpha whose fit failed in any inner fold, or that no fold could score, is not eligible.
            scores.append(float(np.mean(fold_scores)) if fold_scores else math.nan)
        finite = [s for s in scores if math.isfinite(s)]
        if not finite:
            raise InputError("alpha \"cv\": no inner validation fold could be scored; give a fixed alpha")
        best = max(finite)
        # Ties (within rounding) go to the largest alpha: the most penalised of the equally good models.
        chosen = max(a for a, s in zip(alphas, scores) if math.isfinite(s) and s >= best - 1e-12)
        self.alpha_selection_ = {"alpha": chosen, "alphas": alphas, "cindex": scores}
        return chosen

    def _fit_standardized(self, Z: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        if self.config["alpha"] == "cv":
            alpha = self._select_alpha(Z, time, event)
        else:
            alpha, self.alpha_selection_ = float(self.config["alpha"]), None
        self.estimator_, self.coef_, self.offset_ = self._fit_alpha(alpha, Z, time, event)
        self.alpha_ = alpha

    def _predict_standardized(self, Z: np.ndarray) -> np.ndarray:
        return Z @ self.coef_ - self.offset_

    # --------------------------------------------------------------------------------------------- storage
    def _state_to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"coef": [float(v) for v in self.coef_], "offset": float(self.offset_)}
        if self.alpha_selection_ is not None:
            state["alpha_selection"] = {
                "alpha": float(self.alpha_selection_["alpha"]),
                "alphas": [float(a) for a in self.alpha_selection_["alphas"]],
                # An unscorable alpha (NaN) is written as null: JSON has no NaN.
                "cindex": [None if not math.isfinite(s) else float(s) for s in self.alpha_selection_["cindex"]],
            }
        return state

    def _load_state(self, record: Mapping[str, Any], n_features: int) -> None:
        coef = _as_float_vector(record, "coef")
        if coef.shape != (n_features,):
            raise BundleError(f"survival model record has vectors of different shapes "
                              f"{sorted({coef.shape, (n_features,)})}; {_RE_EXPORT}")
        self.coef_, self.offset_ = coef, _as_float(record, "offset")
        if self.config["alpha"] == "cv":
            selection = record.get("alpha_selection")
            if not isinstance(selection, Mapping) or not isinstance(selection.get("alpha"), numbers.Real):
                raise BundleError(f"survival model record with alpha \"cv\" lacks alpha_selection; {_RE_EXPORT}")
            self.alpha_selection_ = dict(selection)
            self.alpha_ = float(selection["alpha"])
        else:
            self.alpha_ = float(self.config["alpha"])


# --------------------------------------------------------------------------------------------------------------
# Gradient-boosted Cox model
# --------------------------------------------------------------------------------------------------------------

_TREE_ARRAYS = ("children_left", "children_right", "feature", "threshold", "value")


class GradientBoostedCoxModel(SurvivalModel):
    """Gradient-boosted regression trees on the Cox partial likelihood (kind ``"gbsa"``), a non-linear model.

    Fitted with scikit-survival's ``GradientBoostingSurvivalAnalysis(loss="coxph")`` on the standardised
    features. Its risk (a log hazard ratio) is, as in scikit-learn's ``BaseGradientBoosting._raw_predict`` with
    ``init="zero"`` (scikit-survival's fixed choice) and no dropout::

        risk(x) = init + sum_t learning_rate * value_t[leaf_t(float32(x))]

    where ``leaf_t`` descends tree ``t`` going left when ``x[feature] <= threshold`` (the features cast to float32
    first, as scikit-learn's trees do). The fitted trees are stored as their arrays (``children_left``,
    ``children_right``, ``feature``, ``threshold``, ``value``) and predicted here with a vectorised traversal,
    rather than pickled: a pickle ties a bundle to one scikit-learn version and can run code when loaded.

    Defaults suit about 100-700 patients: 100 shallow trees (depth 2) with shrinkage 0.05, leaves of at least
    10 patients and 80 % subsampling (stochastic gradient boosting), which keeps the model from memorising a
    few dozen events.

    Args:
        config: ``{"kind": "gbsa", "n_estimators", "learning_rate", "max_depth", "min_samples_leaf",
            "subsample", "random_state"}``; missing parameters take the defaults.
    """

    KINDS: ClassVar[dict[str, dict[str, Any]]] = {
        "gbsa": {
            "n_estimators": 100,
            "learning_rate": 0.05,
            "max_depth": 2,
            "min_samples_leaf": 10,
            "subsample": 0.8,
            "random_state": 0,
        }
    }
    _STATE_KEYS: ClassVar[tuple[str, ...]] = ("init", "trees")

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.init_: float = 0.0
        self.trees_: list[dict[str, np.ndarray]] | None = None
        self.estimator_: Any = None  # the fitted sksurv model; not serialised
        self._packed: tuple[np.ndarray, ...] | None = None

    def _check_config(self) -> None:
        c = self.config
        for name in ("n_estimators", "max_depth", "min_samples_leaf"):
            if not isinstance(c[name], int) or isinstance(c[name], bool) or c[name] < 1:
                raise ValueError(f"'{name}' must be an integer >= 1, got {c[name]!r}")
        for name, low, high in (("learning_rate", 0.0, math.inf), ("subsample", 0.0, 1.0)):
            value = c[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low < value <= high:
                raise ValueError(f"'{name}' must be a number in ({low}, {high}], got {value!r}")
        if c["random_state"] is not None and (not isinstance(c["random_state"], int)
                                              or isinstance(c["random_state"], bool)):
            raise ValueError(f"'random_state' must be an integer or null, got {c['random_state']!r}")

    def _fit_standardized(self, Z: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        from sksurv.ensemble import GradientBoostingSurvivalAnalysis
        from sksurv.util import Surv

        c = self.config
        model = GradientBoostingSurvivalAnalysis(
            loss="coxph",
            n_estimators=int(c["n_estimators"]),
            learning_rate=float(c["learning_rate"]),
            max_depth=int(c["max_depth"]),
            min_samples_leaf=int(c["min_samples_leaf"]),
            subsample=float(c["subsample"]),
            random_state=c["random_state"],
        )
        model.fit(Z, Surv.from_arrays(event, time))
        # The formula of _predict_standardized holds for a zero init and no dropout scaling; check rather than trust.
        if getattr(model, "init_", None) != "zero" or hasattr(model, "_scale"):
            raise RuntimeError("GradientBoostingSurvivalAnalysis no longer uses a zero init without dropout; the "
                               "stored-tree prediction of GradientBoostedCoxModel must be revised")
        self.estimator_ = model
        self.init_ = 0.0
        trees = []
        for (estimator,) in model.estimators_:
            tree = estimator.tree_
            trees.append({
                "children_left": np.asarray(tree.children_left, dtype=np.int64),
                "children_right": np.asarray(tree.children_right, dtype=np.int64),
                "feature": np.asarray(tree.feature, dtype=np.int64),
                "threshold": np.asarray(tree.threshold, dtype=np.float64),
                "value": np.asarray(tree.value, dtype=np.float64).reshape(tree.node_count),
            })
        self.trees_ = trees
        self._packed = None

    def _pack(self) -> tuple[np.ndarray, ...]:
        """The trees padded to one ``(n_trees, max_nodes)`` array per field, leaves pointing at themselves so a
        fixed number of descent steps (the deepest tree's depth) lands every sample in its leaf."""
        if self._packed is None:
            n_trees = len(self.trees_)
            width = max(len(t["value"]) for t in self.trees_)
            left = np.tile(np.arange(width), (n_trees, 1))
            right, feature = left.copy(), np.zeros((n_trees, width), dtype=np.intp)
            threshold, value = np.zeros((n_trees, width)), np.zeros((n_trees, width))
            depth = 0
            for t, tree in enumerate(self.trees_):
                n = len(tree["value"])
                internal = tree["children_left"] != -1
                left[t, :n] = np.where(internal, tree["children_left"], np.arange(n))
                right[t, :n] = np.where(internal, tree["children_right"], np.arange(n))
                feature[t, :n] = np.where(internal, tree["feature"], 0)
                threshold[t, :n] = tree["threshold"]
                value[t, :n] = tree["value"]
                node_depth = np.zeros(n, dtype=np.int64)
                for node in np.flatnonzero(internal):  # children always follow their parent in sklearn's arrays
                    node_depth[[tree["children_left"][node], tree["children_right"][node]]] = node_depth[node] + 1
                depth = max(depth, int(node_depth.max()))
            self._packed = (left, right, feature, threshold, value, depth)
        return self._packed

    def _predict_standardized(self, Z: np.ndarray) -> np.ndarray:
        left, right, feature, threshold, value, depth = self._pack()
        # scikit-learn's trees compare float32 features with float64 thresholds.
        Zf = np.ascontiguousarray(Z, dtype=np.float32).astype(np.float64)
        n_trees, n = left.shape[0], Zf.shape[0]
        trees = np.arange(n_trees)[:, None]
        samples = np.arange(n)[None, :]
        node = np.zeros((n_trees, n), dtype=np.intp)
        for _ in range(depth):
            go_left = Zf[samples, feature[trees, node]] <= threshold[trees, node]
            node = np.where(go_left, left[trees, node], right[trees, node])
        leaf_values = value[trees, node]
        risk = np.full(n, self.init_, dtype=np.float64)
        learning_rate = float(self.config["learning_rate"])
        for t in range(n_trees):  # tree by tree, in scikit-learn's order, so the float sums agree to the last bit
            risk += learning_rate * leaf_values[t]
        return risk

    def _state_to_dict(self) -> dict[str, Any]:
        return {
            "init": float(self.init_),
            "trees": [
                {key: [int(v) for v in tree[key]] if key in ("children_left", "children_right", "feature")
                 else [float(v) for v in tree[key]] for key in _TREE_ARRAYS}
                for tree in self.trees_
            ],
        }

    def _load_state(self, record: Mapping[str, Any], n_features: int) -> None:
        self.init_ = _as_float(record, "init")
        stored = record["trees"]
        if not isinstance(stored, list) or not stored:
            raise BundleError(f"survival model record: 'trees' must be a non-empty list; {_RE_EXPORT}")
        trees = []
        for index, tree in enumerate(stored):
            where = f"survival model record: tree {index}"
            if not isinstance(tree, Mapping) or any(key not in tree for key in _TREE_ARRAYS):
                raise BundleError(f"{where} lacks one of {list(_TREE_ARRAYS)}; {_RE_EXPORT}")
            try:
                arrays = {key: np.asarray(tree[key], dtype=np.float64) for key in _TREE_ARRAYS}
            except (TypeError, ValueError):
                raise BundleError(f"{where} holds non-numeric arrays; {_RE_EXPORT}") from None
            n = arrays["value"].shape
            if any(a.ndim != 1 or a.shape != n for a in arrays.values()) or n[0] == 0:
                raise BundleError(f"{where} has arrays of different shapes; {_RE_EXPORT}")
            if not all(np.all(np.isfinite(a)) for a in arrays.values()):
                raise BundleError(f"{where} holds non-finite numbers; {_RE_EXPORT}")
            left, right, feature = (arrays[k].astype(np.int64) for k in ("children_left", "children_right", "feature"))
            nodes = np.arange(n[0])
            internal = left != -1
            # Children after their parent and inside the tree: the descent cannot loop or leave the arrays.
            if (np.any(internal != (right != -1)) or np.any((left <= nodes)[internal])
                    or np.any((right <= nodes)[internal]) or np.any(left[internal] >= n[0])
                    or np.any(right[internal] >= n[0])):
                raise BundleError(f"{where} has inconsistent children; {_RE_EXPORT}")
            if np.any((feature < 0)[internal]) or np.any((feature >= n_features)[internal]):
                raise BundleError(f"{where} splits on a feature outside 0..{n_features - 1}; {_RE_EXPORT}")
            trees.append({"children_left": left, "children_right": right, "feature": feature,
                          "threshold": arrays["threshold"], "value": arrays["value"]})
        if len(trees) != int(self.config["n_estimators"]):
            raise BundleError(f"survival model record holds {len(trees)} trees but its config says "
                              f"n_estimators = {self.config['n_estimators']}; {_RE_EXPORT}")
        self.trees_, self._packed = trees, None


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------

SURVIVAL_MODELS: dict[str, type[SurvivalModel]] = {
    kind: model_class for model_class in (LinearCoxModel, GradientBoostedCoxModel) for kind in model_class.KINDS
}
"""Survival-model classes by ``config["kind"]``: ``coxph``, ``coxnet`` (:class:`LinearCoxModel`) and ``gbsa``
(:class:`GradientBoostedCoxModel`)."""


def build_survival_model(config: Mapping[str, Any] | None = None) -> SurvivalModel:
    """An unfitted survival model of ``config["kind"]``.

    Args:
        config: ``{"kind": ..., ...parameters}``; None (or no kind) gives :data:`DEFAULT_SURVIVAL_CONFIG`'s ridge
            Cox model, ``{"kind": "coxph", "alpha": 100.0, "ties": "breslow"}``.

    Raises:
        ValueError: an unknown kind or parameter.
    """
    config = dict(config or {})
    kind = config.setdefault("kind", DEFAULT_SURVIVAL_CONFIG["kind"])
    if kind not in SURVIVAL_MODELS:
        raise ValueError(f"unknown survival model kind {kind!r}; choose one of {sorted(SURVIVAL_MODELS)}")
    return SURVIVAL_MODELS[kind](config)


def survival_model_from_dict(record: Mapping[str, Any]) -> SurvivalModel:
    """A fitted survival model from a stored record of any kind (including records written by the earlier
    ``hecktor.survival.LinearCoxModel``).

    Raises:
        BundleError: one line naming what is wrong (unknown kind, missing key, arrays that do not fit together).
    """
    return SurvivalModel.from_dict(record)

