"""Tests of hecktor.survival_models: the survival-model interface, its linear Cox and gradient-boosted kinds, their
JSON records, and the inner cross-validation of the ridge penalty."""

import json
import warnings

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.util import Surv

from hecktor.errors import BundleError, InputError
from hecktor.metrics import concordance_index
from hecktor.survival_models import (
    DEFAULT_SURVIVAL_CONFIG,
    SURVIVAL_MODELS,
    GradientBoostedCoxModel,
    LinearCoxModel,
    SurvivalModel,
    build_survival_model,
    survival_model_from_dict,
)


def _linear_cohort(n: int = 120, p: int = 6, seed: int = 2):
    rng = np.random.default_rng(seed)
    # Features on very different scales and offsets, one constant: the models must standardise them.
    X = rng.normal(size=(n, p)) * np.array([1.0, 10.0, 0.1, 5.0, 1.0, 100.0]) + np.arange(p) * 7.0
    X[:, 4] = 3.0
    true_risk = 1.2 * X[:, 0] - 0.08 * X[:, 1] + 4.0 * X[:, 2]
    time = rng.exponential(np.exp(-(true_risk - true_risk.mean())))
    event = rng.random(n) < 0.7
    return X, time, event


def _nonlinear_cohort(n: int, seed: int):
    """Risk from a threshold on |x0| and the sign of x1 * x2: no linear function of x ranks it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    risk = 1.5 * (np.abs(X[:, 0]) > 1.0) - 1.2 * (X[:, 1] * X[:, 2] > 0)
    relapse = rng.exponential(np.exp(-risk))
    censoring = rng.exponential(2.0, size=n)
    return X, np.minimum(relapse, censoring), relapse <= censoring


def _standardised(X):
    scale = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(scale > 1e-12, scale, 1.0)


# ------------------------------------------------------------------------------------------------ registry


def test_registry_builds_each_kind_and_defaults_to_the_ridge_cox():
    assert set(SURVIVAL_MODELS) == {"coxph", "coxnet", "gbsa"}
    assert SURVIVAL_MODELS["coxph"] is LinearCoxModel and SURVIVAL_MODELS["gbsa"] is GradientBoostedCoxModel
    default = build_survival_model(None)
    assert isinstance(default, LinearCoxModel)
    assert default.config == DEFAULT_SURVIVAL_CONFIG == {"kind": "coxph", "alpha": 100.0, "ties": "breslow"}
    assert build_survival_model({"alpha": 5.0}).config == {"kind": "coxph", "alpha": 5.0, "ties": "breslow"}
    gbsa = build_survival_model({"kind": "gbsa", "n_estimators": 20})
    assert isinstance(gbsa, GradientBoostedCoxModel) and gbsa.config["n_estimators"] == 20
    with pytest.raises(ValueError, match="unknown survival model kind 'forest'"):
        build_survival_model({"kind": "forest"})
    with pytest.raises(ValueError, match="GradientBoostedCoxModel"):
        LinearCoxModel({"kind": "gbsa"})
    with pytest.raises(ValueError, match="learning_rate"):
        build_survival_model({"kind": "gbsa", "learning_rate": 0})
    with pytest.raises(ValueError, match="alphas"):
        build_survival_model({"kind": "coxph", "alphas": [1.0]})  # only with alpha "cv"
    with pytest.raises(ValueError, match="ties"):
        build_survival_model({"kind": "coxph", "ties": "exact"})
    with pytest.raises(ValueError, match="l1_ratio"):
        build_survival_model({"kind": "coxnet", "l1_ratio": 0})
    with pytest.raises(TypeError):
        SurvivalModel()  # the interface itself is abstract


# ------------------------------------------------------------------------------------------------ linear kinds


@pytest.mark.parametrize(
    "config",
    [{"kind": "coxph", "alpha": 100.0, "ties": "breslow"}, {"kind": "coxph", "alpha": 10.0, "ties": "efron"},
     {"kind": "coxnet", "alpha": 0.02, "l1_ratio": 0.5}],
)
def test_linear_kinds_are_bit_identical_to_scikit_survival_on_standardised_features(config):
    X, time, event = _linear_cohort()
    model = build_survival_model(config).fit(X, time, event)
    Z = _standardised(X)
    y = Surv.from_arrays(event, time)
    if config["kind"] == "coxph":
        reference = CoxPHSurvivalAnalysis(alpha=config["alpha"], ties=config["ties"]).fit(Z, y)
        coef, offset = reference.coef_, 0.0
    else:
        reference = CoxnetSurvivalAnalysis(alphas=[config["alpha"]], l1_ratio=config["l1_ratio"]).fit(Z, y)
        coef, offset = reference.coef_[:, -1], reference.offset_[-1]
    assert np.array_equal(model.coef_, coef) and model.offset_ == offset
    assert np.array_equal(model.predict_risk(X), Z @ coef - offset)
    assert model.n_features == 6 and model.alpha_ == config["alpha"]
    loaded = survival_model_from_dict(json.loads(json.dumps(model.to_dict())))
    assert isinstance(loaded, LinearCoxModel) and loaded.config == model.config
    assert np.array_equal(loaded.standardized_risk(X), model.standardized_risk(X))


# Records written by hecktor.survival.LinearCoxModel.to_dict() before the interface existed (commit cf8d207), with
# the risks that model predicted for QUERY; existing bundles hold such records.
EARLIER_RECORDS = [
    (
        {"config": {"kind": "coxph", "alpha": 10.0, "ties": "breslow"},
         "feature_mean": [-0.38733333333333336, 51.857, 1.858666666666667],
         "feature_scale": [0.6925842106840792, 8.972765887209288, 0.4323095598706505],
         "coef": [-0.11307504342259807, -0.11399597177559259, -0.06915563169507095], "offset": 0.0,
         "risk_mean": 1.572815951552305e-17, "risk_std": 0.18224072090335522},
        [-0.12035571304261085, 0.053948333934215074],
        [-0.6604216250134193, 0.296027878219515],
    ),
    (
        {"config": {"kind": "coxnet", "alpha": 0.05, "l1_ratio": 0.5},
         "feature_mean": [-0.38733333333333336, 51.857, 1.858666666666667],
         "feature_scale": [0.6925842106840792, 8.972765887209288, 0.4323095598706505],
         "coef": [-0.12181808456409288, -0.12867243766759343, -0.05952534049618571],
         "offset": 1.5845864589234145e-17, "risk_mean": 2.7755575615628915e-18, "risk_std": 0.19564958672222935},
        [-0.11162396254491702, 0.04037347371429594],
        [-0.5705300195874858, 0.20635603882780287],
    ),
]
QUERY = np.array([[0.5, 45.0, 2.25], [-1.0, 60.0, 1.5]])


@pytest.mark.parametrize("record, risk, standardized", EARLIER_RECORDS)
def test_records_of_the_earlier_linear_cox_model_still_load(record, risk, standardized):
    model = survival_model_from_dict(record)
    assert isinstance(model, LinearCoxModel) and model.n_features == 3
    np.testing.assert_allclose(model.predict_risk(QUERY), risk, rtol=0, atol=1e-15)
    np.testing.assert_allclose(model.standardized_risk(QUERY), standardized, rtol=0, atol=1e-14)
    assert model.to_dict() == record  # written back unchanged: the record format is the same


def test_standardize_false_centres_without_scaling():
    X, time, event = _linear_cohort()
    model = build_survival_model({"kind": "coxph", "alpha": 10.0, "standardize": False}).fit(X, time, event)
    assert np.array_equal(model.feature_scale_, np.ones(6))
    centred = X - X.mean(axis=0)
    reference = CoxPHSurvivalAnalysis(alpha=10.0).fit(centred, Surv.from_arrays(event, time))
    assert np.array_equal(model.coef_, reference.coef_)
    loaded = survival_model_from_dict(json.loads(json.dumps(model.to_dict())))
    assert loaded.config["standardize"] is False
    assert np.array_equal(loaded.predict_risk(X), model.predict_risk(X))
    with pytest.raises(ValueError, match="standardize"):
        build_survival_model({"standardize": "yes"})


# ------------------------------------------------------------------------------------------------ alpha "cv"


def test_alpha_cv_picks_the_best_inner_cindex_and_records_it():
    rng = np.random.default_rng(5)
    X, time, event = _linear_cohort(n=90)
    X = np.hstack([X, rng.normal(size=(90, 20))])  # 20 noise features: a weak ridge overfits
    config = {"kind": "coxph", "alpha": "cv", "alphas": [0.01, 1, 100, 10000], "inner_folds": 3}
    model = build_survival_model(config).fit(X, time, event)
    assert model.config == {"kind": "coxph", "alpha": "cv", "ties": "breslow", "alphas": [0.01, 1.0, 100.0, 10000.0],
                            "inner_folds": 3, "inner_seed": 0}
    # The inner scores, recomputed by hand: StratifiedKFold on the event, mean validation C-index per alpha.
    Z, y = _standardised(X), Surv.from_arrays(event, time)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=0).split(Z, event))
    expected = []
    for alpha in config["alphas"]:
        fits = [(va, CoxPHSurvivalAnalysis(alpha=alpha).fit(Z[tr], y[tr])) for tr, va in splits]
        expected.append(np.mean([concordance_index(time[va], event[va], Z[va] @ fit.coef_) for va, fit in fits]))
    selection = model.to_dict()["alpha_selection"]
    np.testing.assert_allclose(selection["cindex"], expected, rtol=0, atol=1e-12)
    assert selection["alpha"] == model.alpha_ == config["alphas"][int(np.argmax(expected))]
    assert model.alpha_ > 0.01  # the near-unpenalised fit on 26 features and ~60 events must lose
    # The refit on the whole fitting set is the fixed-alpha model at the chosen alpha.
    fixed = build_survival_model({"kind": "coxph", "alpha": model.alpha_}).fit(X, time, event)
    assert np.array_equal(model.coef_, fixed.coef_)
    loaded = survival_model_from_dict(json.loads(json.dumps(model.to_dict())))
    assert loaded.alpha_ == model.alpha_ and np.array_equal(loaded.predict_risk(X), model.predict_risk(X))
    record = model.to_dict()
    del record["alpha_selection"]
    with pytest.raises(BundleError, match="alpha_selection"):
        survival_model_from_dict(record)


def test_alpha_cv_rejects_bad_settings_and_tiny_fitting_sets():
    with pytest.raises(ValueError, match="alphas"):
        build_survival_model({"alpha": "cv", "alphas": []})
    with pytest.raises(ValueError, match="inner_folds"):
        build_survival_model({"alpha": "cv", "inner_folds": 1})
    with pytest.raises(ValueError, match="alpha"):
        build_survival_model({"alpha": "best"})
    X, time, event = _linear_cohort(n=20)
    event = np.zeros(20, dtype=bool)
    event[:2] = True
    with pytest.raises(InputError, match="at least 3 events"):
        build_survival_model({"alpha": "cv"}).fit(X, time, event)


def test_alpha_cv_silences_and_skips_diverging_candidates():
    # One patient, the earliest relapse, holds a level of their own: unpenalised, its coefficient runs off to
    # infinity and scipy warns of an ill-conditioned Newton system (an error under -W error).
    rng = np.random.default_rng(0)
    X, time, event = rng.normal(size=(60, 3)), rng.exponential(size=60), rng.random(60) < 0.5
    X[:, 0] = 0.0
    X[np.argmin(np.where(event, time, np.inf)), 0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_survival_model({"alpha": "cv", "alphas": [0.0, 100.0]}).fit(X, time, event)
    assert model.alpha_ == 100.0 and np.all(np.isfinite(model.coef_))


# ------------------------------------------------------------------------------------------------ gbsa


def test_gbsa_from_json_predicts_exactly_what_scikit_survival_predicts():
    rng = np.random.default_rng(3)
    n = 150
    X = rng.normal(size=(n, 5)) * [1.0, 30.0, 0.01, 1.0, 1.0] + [0.0, 60.0, 1.0, 0.0, 0.0]
    X[:, 3] = rng.integers(0, 3, size=n)  # a discrete feature: many samples sit exactly on split boundaries
    X[:, 4] = 2.0  # constant
    time, event = rng.exponential(size=n), rng.random(n) < 0.5
    model = build_survival_model({"kind": "gbsa", "n_estimators": 30, "max_depth": 3}).fit(X, time, event)
    record = json.loads(json.dumps(model.to_dict()))
    assert len(record["trees"]) == 30 and record["init"] == 0.0 and model.n_features == 5
    loaded = survival_model_from_dict(record)
    assert isinstance(loaded, GradientBoostedCoxModel) and loaded.estimator_ is None
    # Rows a hair (1e-9 relative) on either side of every split threshold: float64 puts them on one side and the
    # float32 features that scikit-learn's trees compare on the other, so these catch a traversal in float64.
    Z = model.scale_features(X)
    near = []
    for (tree,) in model.estimator_.estimators_:
        for f, t in zip(tree.tree_.feature, tree.tree_.threshold):
            if f >= 0:
                for side in (-1.0, 1.0):
                    row = Z[rng.integers(n)].copy()
                    row[f] = t + side * 1e-9 * max(abs(t), 1.0)
                    near.append(row)
    near = np.asarray(near) * model.feature_scale_ + model.feature_mean_
    query = np.vstack([X, near, rng.normal(size=(200, 5)) * [2.0, 50.0, 0.02, 1.0, 1.0] + [0.0, 60.0, 1.0, 1.0, 2.0]])
    reference = model.estimator_.predict(model.scale_features(query))
    np.testing.assert_allclose(loaded.predict_risk(query), reference, rtol=0, atol=1e-10)
    assert np.array_equal(loaded.standardized_risk(X), model.standardized_risk(X))
    assert loaded.predict_risk(query[0]).shape == (1,)
    s = model.standardized_risk(X)
    assert s.mean() == pytest.approx(0.0, abs=1e-10) and s.std() == pytest.approx(1.0, abs=1e-10)


def test_gbsa_ranks_a_nonlinear_risk_that_a_linear_cox_cannot():
    X, time, event = _nonlinear_cohort(300, seed=1)
    X_val, time_val, event_val = _nonlinear_cohort(300, seed=2)
    gbsa = build_survival_model({"kind": "gbsa"}).fit(X, time, event)
    linear = build_survival_model({"kind": "coxph", "alpha": 1.0}).fit(X, time, event)
    gbsa_c = concordance_index(time_val, event_val, gbsa.predict_risk(X_val))
    linear_c = concordance_index(time_val, event_val, linear.predict_risk(X_val))
    assert gbsa_c > 0.6  # measured 0.66
    assert linear_c < 0.55 and gbsa_c > linear_c + 0.1  # measured 0.49


# ------------------------------------------------------------------------------------------------ bad records


def test_bad_records_raise_one_line_bundle_errors():
    X, time, event = _linear_cohort(n=60)
    linear = build_survival_model().fit(X, time, event).to_dict()
    gbsa = build_survival_model({"kind": "gbsa", "n_estimators": 3}).fit(X, time, event).to_dict()
    cases = [
        ([1, 2], "JSON object"),
        ({**linear, "config": {"alpha": 1.0}}, "kind"),
        ({**linear, "config": {"kind": "forest"}}, "unknown kind 'forest'"),
        ({k: v for k, v in linear.items() if k != "risk_std"}, "risk_std"),
        ({**linear, "coef": linear["coef"][:-1]}, "shapes"),
        ({**linear, "feature_scale": linear["feature_scale"][:-1]}, "shapes"),
        ({**linear, "config": {"kind": "coxph", "penalty": 2}}, "invalid config"),
        ({**linear, "coef": ["a"] * 6}, "coef"),
        ({k: v for k, v in gbsa.items() if k != "trees"}, "trees"),
        ({**gbsa, "trees": gbsa["trees"][:2]}, "n_estimators"),
        ({**gbsa, "trees": [{**gbsa["trees"][0], "feature": [6] * len(gbsa["trees"][0]["feature"])}] * 3},
         "feature outside"),
        ({**gbsa, "trees": [{**gbsa["trees"][0], "children_left": [0] * len(gbsa["trees"][0]["value"])}] * 3},
         "children"),
        ({**gbsa, "trees": [{**gbsa["trees"][0], "value": [1.0]}] * 3}, "shapes"),
    ]
    for record, match in cases:
        with pytest.raises(BundleError, match=match) as caught:
            survival_model_from_dict(record)
        assert "\n" not in str(caught.value)
    with pytest.raises(BundleError, match="not a LinearCoxModel"):
        LinearCoxModel.from_dict(gbsa)


def test_fitting_rejects_nan_and_event_free_sets_for_every_kind():
    X, time, event = _linear_cohort(n=40)
    for kind in SURVIVAL_MODELS:
        with pytest.raises(InputError, match="no events"):
            build_survival_model({"kind": kind}).fit(X, time, np.zeros(40))
        bad = X.copy()
        bad[0, 0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            build_survival_model({"kind": kind}).fit(bad, time, event)
        with pytest.raises(RuntimeError, match="not fitted"):
            build_survival_model({"kind": kind}).predict_risk(X)
