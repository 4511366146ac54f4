"""Tests of hecktor.survival: Cox loss, event-balanced batches, linear Cox models, ensemble arithmetic."""

import json
import warnings

import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.linear_model.coxph import CoxPHOptimizer
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from hecktor.errors import BundleError, InputError
from hecktor.folds import make_folds
from hecktor.survival import EventBalancedBatchSampler, cox_partial_likelihood_loss, ensemble_risk, ensemble_weights
from hecktor.survival_models import LinearCoxModel


def _tied_cohort(n: int = 40, p: int = 3, seed: int = 0):
    """Small cohort with many tied times (integer times 1..7), some ties mixing events and censoring."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    time = rng.integers(1, 8, size=n).astype(np.float64)
    event = rng.random(n) < 0.6
    return X, time, event


def _reference_nll(risk: np.ndarray, time: np.ndarray, event: np.ndarray, ties: str) -> float:
    """Textbook double loop over distinct event times: negative log partial likelihood, mean over events."""
    total = 0.0
    for t in np.unique(time[event]):
        at_risk = time >= t
        tied = (time == t) & event
        d = tied.sum()
        risk_set_sum = np.exp(risk[at_risk]).sum()
        tied_sum = np.exp(risk[tied]).sum()
        total += risk[tied].sum()
        for rank in range(d):
            fraction = rank / d if ties == "efron" else 0.0
            total -= np.log(risk_set_sum - fraction * tied_sum)
    return -total / event.sum()


def _loss(risk, time, event, ties="breslow"):
    return cox_partial_likelihood_loss(torch.as_tensor(risk), torch.as_tensor(time), torch.as_tensor(event), ties)


# ------------------------------------------------------------------------------------------------ Cox loss


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_matches_textbook_and_sksurv_with_ties(ties):
    X, time, event = _tied_cohort()
    assert len(np.unique(time[event])) < event.sum()  # the cohort really has tied events
    w = np.array([0.8, -0.5, 0.3])
    risk = X @ w
    loss = _loss(risk, time, event, ties).item()
    assert loss == pytest.approx(_reference_nll(risk, time, event, ties), rel=1e-12)
    # scikit-survival's optimiser averages over all samples instead of events.
    sksurv_nll = CoxPHOptimizer(X, event, time, np.zeros(3), ties).nlog_likelihood(w)
    assert loss * event.sum() / len(event) == pytest.approx(sksurv_nll, rel=1e-12)


def test_efron_differs_from_breslow_only_with_tied_events():
    X, time, event = _tied_cohort()
    risk = X @ np.array([0.8, -0.5, 0.3])
    assert _loss(risk, time, event, "efron").item() < _loss(risk, time, event, "breslow").item() - 1e-3
    distinct = time + np.arange(len(time)) * 1e-3
    assert _loss(risk, distinct, event, "efron").item() == pytest.approx(
        _loss(risk, distinct, event, "breslow").item(), rel=1e-12
    )


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_is_shift_invariant_and_stable_for_large_risks(ties):
    X, time, event = _tied_cohort()
    risk = torch.tensor(X @ np.array([0.8, -0.5, 0.3]), requires_grad=True)
    shifted = (risk + 1000.0).detach().requires_grad_(True)
    loss, loss_shifted = _loss(risk, time, event, ties), _loss(shifted, time, event, ties)
    assert loss_shifted.item() == pytest.approx(loss.item(), rel=1e-10)
    loss.backward()
    loss_shifted.backward()
    assert torch.allclose(risk.grad, shifted.grad, atol=1e-10)
    # The gradient of a partial likelihood sums to zero (it only depends on risk differences).
    assert abs(risk.grad.sum().item()) < 1e-10


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_is_finite_for_extreme_risks_in_float32(ties):
    # A censored patient tied with events but with a far higher risk: exp(100) overflows float32.
    risk_np = np.array([-100.0, 100.0, 0.0, 5.0, -3.0])
    time, event = np.array([1.0, 1.0, 1.0, 2.0, 3.0]), np.array([True, False, True, True, False])
    risk = torch.tensor(risk_np, dtype=torch.float32, requires_grad=True)
    loss = _loss(risk, time, event, ties)
    loss.backward()
    assert torch.isfinite(risk.grad).all()
    assert loss.item() == pytest.approx(_reference_nll(risk_np, time, event, ties), rel=1e-5)
    half = _loss(risk.detach().to(torch.bfloat16), time, event, ties)
    assert half.dtype == torch.float32 and half.item() == pytest.approx(loss.item(), rel=1e-2)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_optimising_cox_loss_reproduces_sksurv_fit(ties):
    rng = np.random.default_rng(1)
    n = 150
    X = rng.normal(size=(n, 3))
    true_risk = X @ np.array([1.0, -0.7, 0.0])
    time = np.ceil(rng.exponential(np.exp(-true_risk)) * 4)  # coarse times -> many ties
    event = rng.random(n) < 0.7
    reference = CoxPHSurvivalAnalysis(alpha=0.0, ties=ties).fit(X, Surv.from_arrays(event, time))

    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    Xt, tt, et = torch.tensor(X), torch.tensor(time), torch.tensor(event)
    optimizer = torch.optim.LBFGS(
        [w], max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = cox_partial_likelihood_loss(Xt @ w, tt, et, ties)
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    np.testing.assert_allclose(w.detach().numpy(), reference.coef_, atol=1e-5)
    ours = concordance_index_censored(event, time, X @ w.detach().numpy())[0]
    theirs = concordance_index_censored(event, time, reference.predict(X))[0]
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours > 0.7


def test_cox_loss_without_events_warns_and_returns_zero():
    risk = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    with pytest.warns(RuntimeWarning, match="without events"):
        loss = cox_partial_likelihood_loss(risk, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(risk.grad, torch.zeros(3))


def test_cox_loss_rejects_bad_shapes_and_ties():
    with pytest.raises(ValueError, match="1-D"):
        cox_partial_likelihood_loss(torch.zeros(3, 1), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="ties"):
        cox_partial_likelihood_loss(torch.zeros(3), torch.ones(3), torch.ones(3), ties="exact")


# ------------------------------------------------------------------------------------------------ sampler


def test_sampler_every_batch_has_events_when_events_are_scarce():
    events = np.zeros(100, dtype=int)
    events[[3, 17, 29, 41, 58, 60, 77, 81, 90, 99]] = 1
    sampler = EventBalancedBatchSampler(events, batch_size=8, min_events=2, seed=0)
    # 13 batches of 8 cannot hold 13 x 2 events (reused) + 90 censored; 15 batches can.
    assert len(sampler) == 15
    for _ in range(3):
        batches = list(sampler)
        assert len(batches) == 15
        seen = np.concatenate(batches)
        assert set(seen) == set(range(100))  # nobody is left out of an epoch
        for batch in batches:
            assert len(batch) <= 8
            assert len(set(batch)) == len(batch)  # no sample twice in a batch
            assert events[batch].sum() >= 2


def test_sampler_uses_each_sample_once_when_events_suffice():
    rng = np.random.default_rng(3)
    events = (rng.random(50) < 0.5).astype(int)
    batches = list(EventBalancedBatchSampler(events, batch_size=16, min_events=3, seed=5))
    assert len(batches) == 4
    assert sorted(np.concatenate(batches).tolist()) == list(range(50))
    assert all(events[b].sum() >= 3 and len(b) <= 16 for b in batches)


def test_sampler_is_deterministic_per_seed_and_epochs_differ():
    events = (np.arange(60) % 3 == 0).astype(int)
    a = EventBalancedBatchSampler(events, batch_size=10, seed=7)
    b = EventBalancedBatchSampler(events, batch_size=10, seed=7)
    epoch1_a, epoch1_b = list(a), list(b)
    assert epoch1_a == epoch1_b
    assert list(a) == list(b)
    assert list(a) != epoch1_a


def test_sampler_rejects_too_few_events():
    with pytest.raises(InputError, match="1 events"):
        EventBalancedBatchSampler([0, 0, 1, 0], batch_size=2, min_events=2)


# ------------------------------------------------------------------------------------------------ LinearCoxModel


def _linear_cohort(n: int = 120, p: int = 6, seed: int = 2):
    rng = np.random.default_rng(seed)
    # Features on very different scales and offsets: the model must standardise them.
    X = rng.normal(size=(n, p)) * np.array([1.0, 10.0, 0.1, 5.0, 1.0, 100.0]) + np.arange(p) * 7.0
    X[:, 4] = 3.0  # a constant column (a dead feature)
    true_risk = 1.2 * X[:, 0] - 0.08 * X[:, 1] + 4.0 * X[:, 2]
    time = rng.exponential(np.exp(-(true_risk - true_risk.mean())))
    event = rng.random(n) < 0.7
    return X, time, event


@pytest.mark.parametrize(
    "config",
    [None, {"kind": "coxph", "alpha": 10.0, "ties": "efron"}, {"kind": "coxnet", "alpha": 0.02, "l1_ratio": 0.5}],
)
def test_linear_cox_model_json_round_trip_gives_identical_risks(config):
    X, time, event = _linear_cohort()
    model = LinearCoxModel(config).fit(X, time, event)
    # The fitted scikit-survival model and our linear formula agree.
    np.testing.assert_allclose(model.predict_risk(X), model.estimator_.predict(model.scale_features(X)), atol=1e-6)
    record = json.loads(json.dumps(model.to_dict()))
    loaded = LinearCoxModel.from_dict(record)
    assert np.array_equal(loaded.predict_risk(X), model.predict_risk(X))
    assert np.array_equal(loaded.standardized_risk(X), model.standardized_risk(X))
    np.testing.assert_allclose(loaded.predict_risk(X), model.estimator_.predict(model.scale_features(X)), atol=1e-6)
    assert loaded.config == model.config
    assert concordance_index_censored(event, time, loaded.predict_risk(X))[0] > 0.75


def test_linear_cox_model_standardises_features_and_risk():
    X, time, event = _linear_cohort()
    model = LinearCoxModel().fit(X, time, event)
    assert model.config == {"kind": "coxph", "alpha": 100.0, "ties": "breslow"}
    Z = model.scale_features(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(Z.std(axis=0)[[0, 1, 2, 3, 5]], 1.0, atol=1e-10)
    assert model.coef_[4] == pytest.approx(0.0, abs=1e-10)  # the constant column carries nothing
    s = model.standardized_risk(X)
    assert s.mean() == pytest.approx(0.0, abs=1e-10) and s.std() == pytest.approx(1.0, abs=1e-10)
    # Ranking is unchanged by the standardisation.
    assert np.array_equal(np.argsort(s), np.argsort(model.predict_risk(X)))


def test_linear_cox_model_rejects_bad_config_and_records():
    with pytest.raises(ValueError, match="unknown survival model kind"):
        LinearCoxModel({"kind": "random_forest"})
    with pytest.raises(ValueError, match="l1_ratio"):
        LinearCoxModel({"kind": "coxph", "l1_ratio": 0.5})
    X, time, event = _linear_cohort()
    record = LinearCoxModel().fit(X, time, event).to_dict()
    with pytest.raises(BundleError, match="coef"):
        LinearCoxModel.from_dict({k: v for k, v in record.items() if k != "coef"})
    with pytest.raises(BundleError, match="shapes"):
        LinearCoxModel.from_dict({**record, "coef": record["coef"][:-1]})
    with pytest.raises(InputError, match="no events"):
        LinearCoxModel().fit(X, time, np.zeros(len(time)))


# ------------------------------------------------------------------------------------------------ ensemble


def test_ensemble_weights_by_cindex_margin():
    w = ensemble_weights([0.70, 0.60, 0.45])
    # margins (0.2, 0.1, 0.001), total 0.301
    np.testing.assert_allclose(w, [0.2 / 0.301, 0.1 / 0.301, 0.001 / 0.301], rtol=1e-12)
    np.testing.assert_allclose(ensemble_weights([0.65, 0.65, 0.55, 0.55]), [0.375, 0.375, 0.125, 0.125])
    np.testing.assert_allclose(ensemble_weights([0.5, 0.4, 0.3]), [1 / 3] * 3)  # all at chance -> equal
    np.testing.assert_allclose(ensemble_weights([0.9, 0.6], rule="uniform"), [0.5, 0.5])
    with pytest.raises(ValueError, match="finite"):
        ensemble_weights([0.6, float("nan")])
    with pytest.raises(ValueError, match="unknown ensemble rule"):
        ensemble_weights([0.6], rule="best")


def test_ensemble_risk_is_the_weighted_average():
    risks = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(ensemble_risk(risks, [0.5, 0.25, 0.25]), [2.5, 3.5])
    np.testing.assert_allclose(ensemble_risk(risks, ensemble_weights([0.5, 0.5, 0.5])), [3.0, 4.0])
    with pytest.raises(ValueError, match="sum to 1"):
        ensemble_risk(risks, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="K = 2"):
        ensemble_risk(risks, [0.5, 0.5])


def test_no_warnings_on_a_normal_pipeline():
    """Folds + per-fold models + ensemble on one cohort, as the training CLI will chain them, emit no warnings."""
    X, time, event = _linear_cohort()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = make_folds(event, 5, seed=0)
        risks, cindices = [], []
        for train, val in folds:
            model = LinearCoxModel().fit(X[train], time[train], event[train])
            cindices.append(concordance_index_censored(event[val], time[val], model.predict_risk(X[val]))[0])
            risks.append(model.standardized_risk(X))
        ensemble = ensemble_risk(np.stack(risks), ensemble_weights(cindices))
    assert min(cindices) > 0.6
    assert concordance_index_censored(event, time, ensemble)[0] > 0.75
