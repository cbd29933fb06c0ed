"""Tests of the BG/BB model class (clvbayes.models.bgbb) on the donations data and simulations.

Reference: Fader, Hardie & Shang (2010) donations MLE alpha = 1.2035, beta = 0.7497,
gamma = 0.6567, delta = 2.7834, LL = -33,225.58 (also lifetimes' and the BTYD walkthrough's).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from clvbayes.datasets.donations import load_donations_summary
from clvbayes.errors import DataError, ModelError
from clvbayes.math import bgbb
from clvbayes.models.bgbb import BetaGeoBetaBinomModel
from clvbayes.models.priors import Prior

MLE = {"alpha": 1.2035, "beta": 0.7497, "gamma": 0.6567, "delta": 2.7834}


@pytest.fixture(scope="module")
def donations():
    return load_donations_summary()


@pytest.fixture(scope="module")
def laplace(donations):
    return BetaGeoBetaBinomModel().fit(donations, method="laplace", draws=400, seed=7)


def _point(model):
    return {k: float(v.ravel()[0]) for k, v in model.draws().items()}


def test_loader(donations):
    assert len(donations) == 11_104
    assert donations.attrs["time_unit"] == "opportunities"
    assert int(donations["frequency"].sum()) == 24_615
    comp = load_donations_summary(compressed=True)
    assert len(comp) == 22 and int(comp["weights"].sum()) == 11_104
    assert (donations["periods"] == 6).all()


def test_mle_reproduces_reference(donations):
    model = BetaGeoBetaBinomModel().fit(donations, method="mle")
    for k, v in _point(model).items():
        assert v == pytest.approx(MLE[k], rel=5e-3)
    assert model.fit_info_["log_likelihood"] == pytest.approx(-33225.58, abs=0.1)
    # the compressed table gives the same fit
    comp = BetaGeoBetaBinomModel().fit(load_donations_summary(compressed=True), method="mle")
    for k, v in _point(comp).items():
        assert v == pytest.approx(MLE[k], rel=5e-3)


def test_map_close_to_mle(donations):
    model = BetaGeoBetaBinomModel().fit(donations, method="map")
    for k, v in _point(model).items():
        assert v == pytest.approx(MLE[k], rel=5e-3)
    pa = model.p_alive().isel(chain=0, draw=0)
    assert pa.dims == ("customer_id",) and pa.size == 11_104


def test_predictions_at_the_fit(laplace, donations):
    assert laplace.posterior_["alpha"].shape == (1, 400)
    draws = laplace.draws()["delta"]
    assert np.unique(draws).size == draws.size  # distinct draws
    e5 = laplace.expected_purchases(5)
    assert e5.dims == ("chain", "draw", "customer_id")
    assert float(e5.mean(("chain", "draw")).sum()) == pytest.approx(12_884.16, rel=2e-3)
    pmf = laplace.prob_purchases(5, np.arange(6))
    assert pmf.dims == ("chain", "draw", "customer_id", "k")
    np.testing.assert_allclose(pmf.sum("k"), 1.0, atol=1e-10)
    np.testing.assert_allclose((pmf * pmf["k"]).sum("k").values, e5.values, rtol=1e-9)
    new = laplace.expected_purchases_new(np.array([1, 6]))
    assert new.dims == ("chain", "draw", "n")
    assert laplace.prob_purchases_new(6, np.arange(7)).sum("k").values == pytest.approx(1.0)
    assert laplace.p_alive_at(0).min() >= laplace.p_alive().max() * 0  # defined, finite
    dert = laplace.dert(0.1)
    assert np.all(np.isfinite(dert.values)) and float(dert.min()) >= 0
    sims = laplace.sample_purchases(5, seed=3)
    assert sims.dims == ("chain", "draw", "customer_id") and sims.dtype.kind == "i"
    assert float(sims.mean()) * 11_104 == pytest.approx(12_884.16, rel=0.02)


def test_score_customers_reproduces_the_reference_total(donations):
    """The generic predictions (clvbayes.predict) at the MLE: sum of E[X*(5)] = 12,884.16, and
    P(alive at n + 1) = 0.1081, 0.5897, 0.9304 for (x, t_x) = (0, 0), (2, 4), (6, 6)."""
    from clvbayes.predict import score_customers

    mle = BetaGeoBetaBinomModel().fit(donations, method="mle")
    res = score_customers(donations, mle, horizon=5, seed=1, n_outcome_samples=200)
    c = res.customers
    assert float(c["purchases_mean"].sum()) == pytest.approx(12_884.16, rel=1e-3)
    assert res.settings["time_unit"] == "opportunities"
    # p_alive in the table is P(active at n); the published P(alive at n + 1) multiplies it by
    # the survival of one more opportunity, E[1 - theta | alive at n] = (delta + n)/(gamma + delta + n)
    p = _point(mle)
    surv = (p["delta"] + 6) / (p["gamma"] + p["delta"] + 6)
    for (x, t_x), ref in zip([(0, 0), (2, 4), (6, 6)], [0.1081, 0.5897, 0.9304], strict=True):
        row = donations[(donations["frequency"] == x) & (donations["recency"] == t_x)].index[0]
        assert float(c.loc[row, "p_alive_mean"]) * surv == pytest.approx(ref, abs=2e-4)
    assert (c["purchases_pi_upper"] >= c["purchases_pi_lower"]).all()
    assert c["purchases_ci_lower"].isna().all()  # an MLE is a point: no credible interval


def test_intervals_widen_with_posterior_sd(donations):
    """Credible intervals are not collapsed: fewer customers, wider posterior, wider intervals."""
    small = donations.iloc[::10]
    fits = [BetaGeoBetaBinomModel().fit(d, method="laplace", draws=400, seed=1)
            for d in (donations, small)]  # fmt: skip
    hist = pd.DataFrame({"frequency": [0, 2, 6], "recency": [0, 4, 6], "periods": [6, 6, 6]},
                        index=pd.Index(["a", "b", "c"], name="customer_id"))  # fmt: skip
    hist.attrs["time_unit"] = "opportunities"
    sd_par = [float(np.std(f.draws()["delta"])) for f in fits]
    assert sd_par[1] > 2 * sd_par[0]
    for method in ("expected_purchases", "p_alive"):
        args = (10,) if method == "expected_purchases" else ()
        widths = []
        for f in fits:
            d = getattr(f, method)(*args, rfm=hist).values[0]
            assert np.all(np.std(d, axis=0) > 0)
            widths.append(np.quantile(d, 0.95, axis=0) - np.quantile(d, 0.05, axis=0))
        assert np.all(widths[1] > 1.5 * widths[0]), (method, widths)


def test_errors(donations):
    weeks = donations.copy()
    weeks.attrs["time_unit"] = "weeks"
    with pytest.raises(DataError, match="counts opportunities, not continuous time"):
        BetaGeoBetaBinomModel().fit(weeks, method="map")
    with pytest.raises(ValueError, match="Valid names are: alpha, beta, gamma, delta"):
        BetaGeoBetaBinomModel({"r": Prior("HalfNormal", sigma=1)})
    none = donations.iloc[:5].assign(frequency=0, recency=0, periods=0)
    with pytest.raises(ModelError, match=r"periods 0 for all"):
        BetaGeoBetaBinomModel().fit(none, method="map")
    with pytest.raises(RuntimeError, match="fit"):
        BetaGeoBetaBinomModel().p_alive()


@pytest.mark.slow
def test_pytensor_graph_matches_numpy(donations):
    pytest.importorskip("pymc")
    model = BetaGeoBetaBinomModel().fit(load_donations_summary(compressed=True), method="mle")
    pm_model = model.build_pymc_model(model.data_)
    logp = pm_model.compile_logp(jacobian=False, sum=False)
    point = {f"{k}_log__": np.log(v) for k, v in MLE.items()}
    terms = logp(point)
    comp = load_donations_summary(compressed=True)
    ll = float(
        bgbb.loglik(*MLE.values(), comp.frequency, comp.recency, comp.periods) @ comp.weights
    )
    # the Potential holds the likelihood; the other terms are the priors
    assert any(np.isclose(float(np.sum(t)), ll, atol=1e-6) for t in terms), (terms, ll)


def test_short_nuts_fit(donations):
    pytest.importorskip("pymc")
    t0 = time.perf_counter()
    model = BetaGeoBetaBinomModel().fit(
        load_donations_summary(compressed=True), method="nuts", draws=200, tune=200, chains=2,
        seed=5, nuts_sampler="pymc", progressbar=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    post = model.posterior_
    assert post["alpha"].shape == (2, 200)
    for k, v in MLE.items():
        assert float(post[k].mean()) == pytest.approx(v, rel=0.05)
    assert elapsed < 300


@pytest.mark.slow
def test_predictive_intervals_calibrated_on_simulated_data():
    """Randomised PIT of holdout counts under the posterior predictive: 90 % interval covers 90 +/- 3 %."""
    rng = np.random.default_rng(2026)
    truth = (1.2, 0.75, 0.66, 2.8)
    m = 3000
    sim = bgbb.simulate(rng, *truth, np.full(m, 6), n_holdout=5)
    rfm = pd.DataFrame(
        {k: sim[k] for k in ("frequency", "recency", "periods")},
        index=pd.Index([f"c{i}" for i in range(m)], name="customer_id"),
    )
    rfm.attrs["time_unit"] = "opportunities"
    model = BetaGeoBetaBinomModel().fit(rfm, method="laplace", draws=500, seed=3)
    draws = model.sample_purchases(5, seed=4).values.reshape(-1, m)  # (S, m)
    y = sim["frequency_holdout"]
    below = (draws < y).mean(axis=0)
    at = (draws == y).mean(axis=0)
    pit = below + rng.random(m) * at
    coverage = np.mean((pit > 0.05) & (pit < 0.95))
    assert coverage == pytest.approx(0.90, abs=0.03)
    # and the PIT is roughly uniform
    hist = np.histogram(pit, bins=10, range=(0, 1))[0] / m
    assert np.all(np.abs(hist - 0.1) < 0.03)
