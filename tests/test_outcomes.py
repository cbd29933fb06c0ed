"""The generic composition of any purchase model with any spend model (clvbayes.predict.outcomes).

* the generic futures of every registered purchase model agree with its exact expectations;
* the fused BG/NBD-family x Gamma-Gamma kernel (an optional accelerator) is pinned to the
  generic path in distribution;
* per-customer simulation matches the expectations; extreme inputs stay finite;
* predictive intervals of every family are calibrated on data simulated from that family
  (randomised PIT, 90 +/- 3 %).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clvbayes.math import gamma_gamma
from clvbayes.math.discount import schedule
from clvbayes.models import GammaGammaModel
from clvbayes.models.protocols import purchase_models
from clvbayes.predict import outcomes, score_customers

# parameters inside each family's typical range (CDNOW-like, weekly)
POINTS = {
    "bgnbd": {"r": 0.25, "alpha": 4.4, "a": 0.79, "b": 2.43},
    "mbgnbd": {"r": 0.52, "alpha": 6.18, "a": 0.89, "b": 1.61},
    "pnbd": {"r": 0.55, "alpha": 10.58, "s": 0.61, "beta": 11.67},
    "bgbb": {"alpha": 1.20, "beta": 0.75, "gamma": 0.66, "delta": 2.78},  # donations MLE
}
DISCRETE = {"bgbb"}
GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}
KEYS = {
    "frequency": np.array([0.0, 0.0, 2.0, 7.0, 20.0]),
    "T": np.array([5.0, 38.0, 30.0, 39.0, 39.0]),
}
DISCRETE_KEYS = {
    "frequency": np.array([0.0, 0.0, 2.0, 5.0, 6.0]),
    "periods": np.array([1.0, 6.0, 6.0, 6.0, 10.0]),
}


def _keys(key):
    return DISCRETE_KEYS if key in DISCRETE else KEYS


def _cls(key):
    return purchase_models(grid=None)[key]


def _fixed(cls, values, n=1):
    model = cls()
    draws = {k: np.full((1, n), float(v)) for k, v in values.items()}
    model.draws = lambda: draws
    model.time_unit_ = "weeks"
    return model


def _params(values, s):
    return {k: np.full((s, 1), float(v)) for k, v in values.items()}


def test_steps_merge_runs_of_equal_discount_factors():
    ends, factors = schedule(10.0, 0.0, 1.0)
    assert outcomes.steps(ends, factors) == [(10.0, 1.0)]
    ends, factors = schedule(2.5, 0.1, 1.0)
    got = outcomes.steps(ends, factors)
    np.testing.assert_allclose([g[0] for g in got], [1.0, 1.0, 0.5])
    np.testing.assert_allclose([g[1] for g in got], 1.1 ** -np.arange(1.0, 4.0))
    # factors that underflowed to 0 form one step
    ends, factors = schedule(50.0, 1e300, 1.0)
    assert len(outcomes.steps(ends, factors)) == 2 and outcomes.steps(ends, factors)[1][1] == 0.0


@pytest.mark.parametrize("key", sorted(POINTS))
def test_generic_futures_agree_with_exact_expectations(key):
    """Mean simulated (discounted) purchases and values of active customers vs closed forms."""
    cls = _cls(key)
    s = 20_000
    pm, sm = cls(), GammaGammaModel()
    pp, sp = _params(POINTS[key], s), _params(GG, s)
    ends, factors = schedule(52.0, 0.02, 1.0)
    rng = np.random.default_rng(3)
    keys = _keys(key)
    fut = outcomes.generic_active_futures(rng, pm, sm, pp, sp, keys, ends, factors)
    disc, total = pm._expected_active_arrays(_params(POINTS[key], 1), keys, ends, factors)
    for name, exact in (("purchases", total[0]), ("discounted", None)):
        sim = fut[name]
        if exact is None:  # E[discounted unit value] = E[discounted purchases] x E[g / G]
            unit = GG["p"] / (GG["p"] * keys["frequency"] + GG["q"] - 1.0)
            exact = disc[0] * unit
        se = sim.std(axis=0) / np.sqrt(s)
        assert np.all(np.abs(sim.mean(axis=0) - exact) < 5 * se + 1e-9), (name, sim.mean(0), exact)
    assert (fut["discounted"] <= fut["value"] + 1e-12).all()
    # one transaction's unit value: mean p / (p x + q - 1)
    unit = GG["p"] / (GG["p"] * keys["frequency"] + GG["q"] - 1.0)
    np.testing.assert_allclose(fut["one"].mean(axis=0), unit, rtol=0.05)


@pytest.mark.parametrize("key", ["bgnbd", "mbgnbd"])
def test_fused_kernel_is_pinned_to_the_generic_path(key):
    """The compiled accelerator of the BG/NBD family draws from the same distribution."""
    cls = _cls(key)
    s = 20_000
    pm, sm = cls(), GammaGammaModel()
    pp, sp = _params(POINTS[key], s), _params(GG, s)
    ends, factors = schedule(39.0, 0.01, 1.0)
    assert callable(getattr(pm, "_fused_futures", None))
    fused = outcomes.active_futures(11, pm, sm, pp, sp, KEYS, ends, factors, 1.0)
    generic = outcomes.generic_active_futures(
        np.random.default_rng(12), pm, sm, pp, sp, KEYS, ends, factors
    )
    for name in ("purchases", "one", "value", "discounted"):
        for j in range(KEYS["T"].size):
            a, b = fused[name][:, j], generic[name][:, j]
            se = np.sqrt(a.var() / s + b.var() / s)
            assert abs(a.mean() - b.mean()) < 5 * se + 1e-12, (name, j)
            assert stats.ks_2samp(a, b).pvalue > 1e-4, (name, j)


@pytest.mark.parametrize("key", sorted(POINTS))
def test_per_customer_simulation_matches_expectations(key):
    cls = _cls(key)
    s = 20_000
    pm, sm = cls(), GammaGammaModel()
    pp, sp = _params(POINTS[key], s), _params(GG, s)
    if key in DISCRETE:
        h = {
            "frequency": np.array([0.0, 3.0, 5.0]), "recency": np.array([0.0, 5.0, 6.0]),
            "periods": np.array([6.0, 6.0, 6.0]), "monetary_value": np.array([0.0, 40.0, 25.0]),
        }  # fmt: skip
    else:
        h = {
            "frequency": np.array([0.0, 3.0, 10.0]), "recency": np.array([0.0, 10.0, 37.0]),
            "T": np.array([20.0, 39.0, 39.0]), "monetary_value": np.array([0.0, 40.0, 25.0]),
        }  # fmt: skip
    ends, factors = schedule(26.0, 0.01, 1.0)
    sim = outcomes.simulate_customers(
        np.random.default_rng(5), pm, sm, pp, sp, h, ends, factors, 0.3
    )
    expect, _, _ = outcomes.expectations(
        pm, sm, _params(POINTS[key], 1), _params(GG, 1), h, ends, factors, 0.3
    )
    for q in ("alive", "purchases", "spend", "revenue", "clv"):
        e = expect["p_alive" if q == "alive" else q][0]
        se = sim[q].std(axis=0) / np.sqrt(s)
        assert np.all(np.abs(sim[q].mean(axis=0) - e) < 5 * se + 1e-9), (q, sim[q].mean(0), e)


@pytest.mark.parametrize("key", ["bgnbd", "mbgnbd"])
def test_fused_per_customer_simulation_is_independent_and_pinned_to_generic(key):
    """Customers with the same history get independent futures from the fused kernel (a
    segment total is a sum of independent outcomes), distributed as the generic path's."""
    cls = _cls(key)
    s = 20_000
    pm, sm = cls(), GammaGammaModel()
    pp, sp = _params(POINTS[key], s), _params(GG, s)
    # unsorted, with repeats: customers 0, 2 and 3 share a history
    h = {
        "frequency": np.array([3.0, 0.0, 3.0, 3.0]), "recency": np.array([10.0, 0.0, 10.0, 10.0]),
        "T": np.array([39.0, 20.0, 39.0, 39.0]), "monetary_value": np.array([40.0, 0.0, 40.0, 40.0]),
    }  # fmt: skip
    ends, factors = schedule(26.0, 0.01, 1.0)
    fused = outcomes.simulate_customers(np.random.default_rng(5), pm, sm, pp, sp, h, ends,
                                        factors, 0.3, period=1.0)  # fmt: skip
    generic = outcomes.simulate_customers(np.random.default_rng(6), pm, sm, pp, sp, h, ends,
                                          factors, 0.3)  # fmt: skip
    for q in ("purchases", "revenue", "clv"):
        x = fused[q]
        assert not np.array_equal(x[:, 0], x[:, 2])
        corr = np.corrcoef(x[:, [0, 2, 3]].T)[np.triu_indices(3, 1)]
        assert np.all(np.abs(corr) < 0.05), (q, corr)
        for j in range(4):
            a, b = x[:, j], generic[q][:, j]
            se = np.sqrt(a.var() / s + b.var() / s)
            assert abs(a.mean() - b.mean()) < 5 * se + 1e-12, (q, j)
            assert stats.ks_2samp(a, b).pvalue > 1e-4, (q, j)
        # the variance of a sum of identical customers is the sum of their variances
        same = x[:, [0, 2, 3]]
        assert same.sum(axis=1).var() == pytest.approx(same.var(axis=0).sum(), rel=0.05)


@pytest.mark.parametrize("key", sorted(POINTS))
def test_extreme_histories_horizons_and_parameters_stay_finite(key):
    """Frequency 10,000, a 10,000-period discounted horizon and parameters far from typical."""
    cls = _cls(key)
    names = cls.param_names
    rng = np.random.default_rng(7)
    draws = {k: np.exp(rng.uniform(-5.0, 5.0, (1, 40))) for k in names}
    pm = cls()
    pm.draws = lambda: draws
    pm.time_unit_ = "weeks"
    gg = _fixed(GammaGammaModel, GG, 40)
    if key in DISCRETE:
        rfm = pd.DataFrame(
            {"frequency": [0, 1, 10_000, 500], "recency": [0, 1, 10_000, 600],
             "periods": [1, 100, 10_000, 10_000], "monetary_value": [0.0, 10.0, 1e4, 5.0]},
            index=pd.Index(["a", "b", "c", "d"], name="customer_id"),
        )  # fmt: skip
        rfm.attrs["time_unit"] = "opportunities"
        pm.time_unit_ = "opportunities"
    else:
        rfm = pd.DataFrame(
            {"frequency": [0.0, 1.0, 10_000.0, 500.0], "recency": [0.0, 1.0, 99.9, 50.0],
             "T": [0.5, 100.0, 100.0, 10_000.0], "monetary_value": [0.0, 10.0, 1e4, 5.0]},
            index=pd.Index(["a", "b", "c", "d"], name="customer_id"),
        )  # fmt: skip
        rfm.attrs["time_unit"] = "weeks"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = score_customers(
            rfm, pm, gg, horizon=10_000.0, discount_rate=0.001, seed=1, n_outcome_samples=40
        )
    num = res.customers.select_dtypes("number")
    assert np.isfinite(num.to_numpy()).all(), num.columns[~np.isfinite(num.to_numpy()).all(0)]
    assert np.isfinite(res.segments["all"].select_dtypes("number").to_numpy()).all()


# ---------------------------------------------------------------- calibration per family
def _simulated(key, rng, n=2000, t_cal=52.0, t_hold=39.0):
    cls = _cls(key)
    if key in DISCRETE:
        periods = rng.integers(2, 12, n)
        sim = cls._math.simulate(rng, *POINTS[key].values(), periods=periods, n_holdout=5)
    else:
        T = rng.uniform(t_cal / 3, t_cal, n)
        sim = cls._math.simulate(rng, *POINTS[key].values(), T=T, t_holdout=t_hold)
    grid = {"periods": sim["periods"]} if key in DISCRETE else {"T": sim["T"]}
    spend = gamma_gamma.simulate(rng, *GG.values(), frequency=sim["frequency"])
    rfm = pd.DataFrame(
        {"frequency": sim["frequency"], "recency": sim["recency"], **grid,
         "monetary_value": spend["monetary_value"]},
        index=pd.Index([f"c{i:05d}" for i in range(n)], name="customer_id"),
    )  # fmt: skip
    rfm.attrs["time_unit"] = "opportunities" if key in DISCRETE else "weeks"
    hold = np.asarray(sim["frequency_holdout"]).astype(np.int64)
    values = gamma_gamma.simulate_transaction_values(rng, GG["p"], spend["nu"], hold)
    revenue = np.bincount(np.repeat(np.arange(n), hold), values, minlength=n)
    return cls, rfm, hold, revenue


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(POINTS))
def test_predictive_intervals_are_calibrated_for_every_family(key):
    """Laplace fits (distinct posterior draws) on data simulated from each family."""
    rng = np.random.default_rng(2024 + len(key))
    cls, rfm, hold, revenue = _simulated(key, rng)
    horizon = 5.0 if key in DISCRETE else 39.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = cls().fit(rfm, method="laplace", seed=1)
        gg = GammaGammaModel().fit(rfm, method="laplace", seed=2)
    assert np.unique(pm.draws()[cls.param_names[0]]).size > 100  # distinct draws
    res = score_customers(
        rfm, pm, gg, horizon=horizon, seed=3, observed={"purchases": hold, "revenue": revenue}
    ).customers
    for q in ("purchases", "revenue"):
        pit = res[f"{q}_pit"]
        central = ((pit > 0.05) & (pit < 0.95)).mean()
        print(f"\n{key} {q}: randomised PIT coverage {central:.3f}")
        assert 0.87 <= central <= 0.93, (key, q, central)
