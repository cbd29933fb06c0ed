"""Pareto/NBD model layer: CDNOW reference fit, PyMC graphs, short NUTS, API contract."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from conftest import flat_priors

from clvbayes.math import pnbd
from clvbayes.models import NotFittedError, Prior
from clvbayes.models.pnbd import ParetoNBDModel

PNBD_MLE = {"r": 0.5533, "alpha": 10.577, "s": 0.6062, "beta": 11.668}  # CDNOW, weekly


@pytest.fixture(scope="module")
def pnbd_mle(cdnow):
    return ParetoNBDModel().fit(cdnow, method="mle")


# ---------------------------------------------------------------- reference: CDNOW MLE
def test_mle_reproduces_reference(pnbd_mle):
    """LL -9594.98 and r, alpha, s within 0.5% (beta lies on a flat ridge: judged by the LL)."""
    assert pnbd_mle.fit_info_["log_likelihood"] == pytest.approx(-9594.98, abs=0.05)
    est = pnbd_mle.summary()["mean"]
    for k in ("r", "alpha", "s"):
        assert est[k] == pytest.approx(PNBD_MLE[k], rel=0.005), k


def test_map_with_default_priors_is_near_mle(cdnow, pnbd_mle):
    m = ParetoNBDModel().fit(cdnow, method="map")
    assert m.fit_info_["log_likelihood"] == pytest.approx(-9594.98, abs=0.5)
    for k in ("r", "alpha"):
        assert m.summary()["mean"][k] == pytest.approx(pnbd_mle.summary()["mean"][k], rel=0.05)


def test_predictions_at_mle(pnbd_mle, cdnow):
    e = pnbd_mle.expected_purchases(t=39)
    assert e.dims == ("chain", "draw", "customer_id") and e.shape == (1, 1, len(cdnow))
    # measured 1,665.5 holdout purchases expected (BG/NBD at its MLE: 1,653.4; actual 1,882)
    assert float(e.sum()) == pytest.approx(1665.5, abs=0.5)
    pa = pnbd_mle.p_alive()
    assert float(pa.min()) > 0 and float(pa.max()) <= 1
    assert (pnbd_mle.p_alive_at(t=52) <= pa + 1e-12).all()
    new = pnbd_mle.expected_purchases_new(np.array([1.0, 52.0]))
    assert new.dims == ("chain", "draw", "t")
    p = pnbd_mle.prob_purchases(52, np.arange(200))
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)
    d = pnbd_mle.dert(np.log(1.15) / 52)
    assert (d > 0).all() and d.shape == (1, 1, len(cdnow))
    c = pnbd_mle.prob_purchases_conditional(t=39, n=0)
    assert ((c > 0) & (c <= 1)).all()


# ---------------------------------------------------------------- PyMC graphs
def test_fast_pymc_model_logp_and_gradient(cdnow):
    """The NumPy Op (exact gradient) gives the NumPy total, and dlogp matches finite differences."""
    model = ParetoNBDModel(priors=flat_priors(ParetoNBDModel))
    data = model._compress(cdnow)
    pm_model = model.build_pymc_model(data, fast=True)
    logp = pm_model.compile_logp(jacobian=False)
    point = {f"{k}_log__": np.log(v) for k, v in PNBD_MLE.items()}
    expected = np.sum(
        data.counts * pnbd.loglik(*PNBD_MLE.values(), data["frequency"], data["recency"], data["T"])
    )
    assert logp(point) == pytest.approx(expected, rel=1e-12)
    dlogp = pm_model.compile_dlogp(jacobian=False)(point)
    names = [v.name for v in pm_model.value_vars]
    for i, name in enumerate(names):
        h = 1e-6
        up, down = dict(point), dict(point)
        up[name] += h
        down[name] -= h
        assert dlogp[i] == pytest.approx((logp(up) - logp(down)) / (2 * h), rel=1e-5, abs=1e-4)


@pytest.mark.slow
def test_symbolic_pymc_model_equals_fast(cdnow):
    """The PyTensor graph (nutpie, numpyro) equals the NumPy Op, value and gradient.

    On 60 CDNOW customers, run by PyTensor's Python linker: the C compilation of the quadrature
    graph for all 1,016 histories takes over ten minutes and tests nothing more.
    """
    model = ParetoNBDModel()
    small = cdnow.iloc[::40].copy()
    small.attrs = dict(cdnow.attrs)
    data = model._compress(small)
    symbolic, fast = (model.build_pymc_model(data, fast=f) for f in (False, True))
    x = {f"{k}_log__": np.log(v) for k, v in PNBD_MLE.items()}
    from pytensor.compile.mode import Mode

    # Python linker, no rewrites (so no Elemwise fusion, which Python runs only up to 32 operands)
    mode = {"mode": Mode(linker="py", optimizer=None)}
    assert fast.compile_logp(**mode)(x) == pytest.approx(
        symbolic.compile_logp(**mode)(x), rel=1e-10
    )
    np.testing.assert_allclose(
        fast.compile_dlogp(**mode)(x), symbolic.compile_dlogp(**mode)(x), rtol=1e-7
    )


@pytest.mark.slow
def test_short_nuts_has_no_divergences(cdnow):
    """2 chains x 200 draws with PyMC's NUTS on the exact-gradient Op (~165 s on 2 shared cores)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The (s, beta) ridge narrows towards small s: at target_accept 0.8 this run had 12
        # divergences there; the model's nuts_defaults sample at 0.95, from the Laplace start
        m = ParetoNBDModel().fit(
            cdnow, draws=200, tune=200, chains=2, seed=11, nuts_sampler="pymc",
            progressbar=False,
        )  # fmt: skip
    assert ParetoNBDModel.nuts_defaults == {"target_accept": 0.95}
    elapsed = time.perf_counter() - t0
    assert m.fit_info_["divergences"] == 0
    post = m.idata_.posterior
    assert post["r"].shape == (2, 200)
    assert float(post["r"].mean()) == pytest.approx(PNBD_MLE["r"], rel=0.1)
    assert float(post["alpha"].mean()) == pytest.approx(PNBD_MLE["alpha"], rel=0.15)
    print(f"Pareto/NBD NUTS 2x(200+200) on CDNOW: {elapsed:.1f} s")


# ---------------------------------------------------------------- API contract
def test_unknown_prior_name_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown prior name\(s\) \['a'\].*Valid names are: r, alpha, s, beta"
    ):
        ParetoNBDModel(priors={"a": Prior("HalfNormal", sigma=1)})


def test_priors_are_replaceable():
    m = ParetoNBDModel(priors={"s": Prior("Gamma", alpha=1, beta=1)})
    assert m.priors["s"] == Prior("Gamma", alpha=1, beta=1)
    assert m.priors["r"] == Prior("HalfNormal", sigma=10)


def test_predict_before_fit_says_call_fit():
    with pytest.raises(NotFittedError, match="fit"):
        ParetoNBDModel().p_alive()


def test_active_state_and_advance_match_expectations(pnbd_mle):
    """The protocol's simulation of active customers reproduces E[purchases | alive] and P(alive)."""
    from clvbayes.predict import outcomes

    data = pnbd_mle.data_
    params = {k: np.full((4000, 1), v) for k, v in pnbd_mle.summary()["mean"].items()}
    h = {c: data[c] for c in ParetoNBDModel.history_columns}
    ends, factors = np.arange(1.0, 40.0), 0.99 ** np.arange(1, 40)
    keys, _ = outcomes.future_keys(pnbd_mle, None, h)
    discounted, total = pnbd_mle._expected_active_arrays(params, keys, ends, factors)
    assert total.shape == (4000, keys["T"].size) and (discounted < total).all()
    np.testing.assert_allclose(
        total[0],
        pnbd.expected_purchases_alive(*params.values(), keys["frequency"], keys["T"], 39.0)[0],
        rtol=1e-10,
    )
    fut = outcomes.generic_active_futures(
        np.random.default_rng(5), pnbd_mle, None, params, None, keys, ends, factors
    )
    sim = fut["purchases"].mean(axis=0)
    se = fut["purchases"].std(axis=0) / np.sqrt(4000) + 1e-9
    assert np.all(np.abs(sim - total[0]) < 5 * se)
    # survival over the horizon: P(still active at T + 39 | active at T) = ((beta+T)/(beta+T+39))^s
    rng = np.random.default_rng(6)
    state = pnbd_mle._active_state(rng, params, {"frequency": np.zeros(1), "T": np.array([20.0])})
    _, alive = pnbd_mle._advance(rng, {k: v.ravel() for k, v in state.items()}, 39.0)
    s_, beta = float(params["s"][0, 0]), float(params["beta"][0, 0])
    assert alive.mean() == pytest.approx(((beta + 20) / (beta + 59)) ** s_, abs=0.025)
