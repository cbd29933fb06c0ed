"""BG/NBD model layer: published estimates, compression, PyMC/NumPy agreement, NUTS, API contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import BGNBD_MLE, BGNBD_MLE_SE, flat_priors
from scipy import stats

from clvbayes.data import compress
from clvbayes.math import bgnbd
from clvbayes.math._xp import pytensor_namespace
from clvbayes.models import (
    BetaGeoModel,
    ConvergenceWarning,
    NotFittedError,
    Prior,
)


# ---------------------------------------------------------------- reference: Fader, Hardie & Lee (2005)
def test_mle_reproduces_published_estimates(bgnbd_mle):
    est = bgnbd_mle.summary()["mean"]
    for k, v in BGNBD_MLE.items():
        assert est[k] == pytest.approx(v, rel=0.005), k
    assert bgnbd_mle.fit_info_["log_likelihood"] == pytest.approx(-9582.43, abs=0.05)


def test_mle_standard_errors_match_published(bgnbd_mle):
    sd = bgnbd_mle.fit_info_["laplace_sd"]
    for k, v in BGNBD_MLE_SE.items():
        assert sd[k] == pytest.approx(v, rel=0.03), k


def test_map_with_flat_priors_equals_mle(cdnow, bgnbd_mle):
    m = BetaGeoModel(priors=flat_priors(BetaGeoModel)).fit(cdnow, method="map")
    for k in BGNBD_MLE:
        assert m.summary()["mean"][k] == pytest.approx(bgnbd_mle.summary()["mean"][k], rel=1e-4)


def test_holdout_expected_purchases_at_mle(cdnow, bgnbd_mle):
    total = bgnbd_mle.expected_purchases(t=39).sum().item()
    assert total == pytest.approx(1653.4, abs=0.5)
    assert int(cdnow["frequency_holdout"].sum()) == 1882


# ---------------------------------------------------------------- compression and cross-implementation
def test_compressed_loglik_equals_per_customer(cdnow):
    data = compress(cdnow, columns=("frequency", "recency", "T"))
    assert data.n_unique < data.n_customers
    params = dict(r=0.25, alpha=4.0, a=0.8, b=2.5)
    full = bgnbd.loglik(**params, frequency=cdnow["frequency"].to_numpy(),
                        recency=cdnow["recency"].to_numpy(), T=cdnow["T"].to_numpy())  # fmt: skip
    uniq = bgnbd.loglik(**params, frequency=data["frequency"], recency=data["recency"], T=data["T"])
    assert np.sum(data.counts * uniq) == pytest.approx(np.sum(full), abs=1e-9)
    np.testing.assert_allclose(data.expand(uniq), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "params", [(0.2426, 4.41, 0.79, 2.43), (5.0, 0.5, 1.0, 1.0), (0.01, 300.0, 40.0, 0.05)]
)
def test_pytensor_loglik_equals_numpy(params):
    import pytensor
    import pytensor.tensor as pt

    x = np.array([0, 1, 2, 26, 200, 10_000], dtype=float)
    tx = np.array([0.0, 1.5, 30.43, 30.857, 38.0, 39.0])
    T = np.array([40.0, 38.86, 38.86, 31.0, 40.0, 39.0])
    syms = [pt.dscalar(n) for n in ("r", "alpha", "a", "b")]
    out = bgnbd.loglik(
        *syms, pt.as_tensor(x), pt.as_tensor(tx), pt.as_tensor(T), xp=pytensor_namespace()
    )
    f = pytensor.function(syms, out)
    np.testing.assert_allclose(f(*params), bgnbd.loglik(*params, x, tx, T), rtol=1e-10)


def test_pymc_model_logp_matches_numpy_total(cdnow):

    model = BetaGeoModel(priors=flat_priors(BetaGeoModel))
    data = model._compress(cdnow)
    pm_model = model.build_pymc_model(data)
    point = {f"{k}_log__": np.log(v) for k, v in BGNBD_MLE.items()}
    logp = pm_model.compile_logp(jacobian=False)(point)
    expected = np.sum(
        data.counts
        * bgnbd.loglik(*BGNBD_MLE.values(), data["frequency"], data["recency"], data["T"])
    )
    assert logp == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    "point",
    [BGNBD_MLE, {"r": 1e-3, "alpha": 0.5, "a": 1.0 + 1e-9, "b": 0.05},
     {"r": 30.0, "alpha": 900.0, "a": 20.0, "b": 0.01}],
)  # fmt: skip
def test_fast_pymc_model_equals_symbolic(cdnow, point):
    """The NumPy Op gives the symbolic graph's log posterior and gradient (priors included)."""
    model = BetaGeoModel()
    data = model._compress(cdnow)
    symbolic, fast = (model.build_pymc_model(data, fast=f) for f in (False, True))
    assert "counts" not in fast.named_vars and "counts" in symbolic.named_vars
    x = {f"{k}_log__": np.log(v) for k, v in point.items()}
    assert fast.compile_logp()(x) == pytest.approx(symbolic.compile_logp()(x), rel=1e-10)
    np.testing.assert_allclose(fast.compile_dlogp()(x), symbolic.compile_dlogp()(x), rtol=1e-7)


def test_fast_pymc_model_pickles(cdnow):
    import pickle

    model = BetaGeoModel()
    pm_model = model.build_pymc_model(model._compress(cdnow), fast=True)
    f = pm_model.compile_dlogp()
    x = {f"{k}_log__": np.log(v) for k, v in BGNBD_MLE.items()}
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(f))(x), f(x))


@pytest.mark.parametrize(("sampler", "fast"), [("pymc", True), ("numpyro", False)])
def test_nuts_sampler_gets_fast_or_symbolic_graph(cdnow, monkeypatch, sampler, fast):
    """PyMC's NUTS runs the NumPy Op; numpyro (and nutpie) need the symbolic graph."""
    import pymc as pm

    class Stop(Exception):
        pass

    def fake_sample(**kwargs):
        seen.append("counts" not in pm.modelcontext(None).named_vars)
        raise Stop

    seen = []
    monkeypatch.setattr(pm, "sample", fake_sample)
    with pytest.raises(Stop):
        BetaGeoModel().fit(cdnow, nuts_sampler=sampler)
    assert seen == [fast]


# ---------------------------------------------------------------- API contract
def test_unknown_prior_name_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown prior name\(s\) \['beta'\].*Valid names are: r, alpha, a, b"
    ):
        BetaGeoModel(priors={"beta": Prior("HalfNormal", sigma=1)})


def test_unknown_prior_distribution_lists_available():
    with pytest.raises(
        ValueError, match=r"Unknown prior distribution 'Normal'\. Available: HalfFlat"
    ):
        Prior("Normal", sigma=1)


def test_priors_are_replaceable_and_shown(cdnow):
    m = BetaGeoModel(priors={"r": Prior("Gamma", alpha=2, beta=4)})
    assert m.priors["r"] == Prior("Gamma", alpha=2, beta=4)
    assert m.priors["a"] == BetaGeoModel.default_priors["a"]
    import clvbayes.models.bgnbd as module

    assert "HalfCauchy(beta=1)" in module.__doc__ and "HalfNormal(sigma=200)" in module.__doc__


def test_predict_before_fit_says_call_fit():
    with pytest.raises(NotFittedError, match=r"call \.fit\(rfm\) first"):
        BetaGeoModel().p_alive()


def test_map_has_same_posterior_structure(bgnbd_mle):
    post = bgnbd_mle.idata_.posterior
    assert dict(post.sizes) == {"chain": 1, "draw": 1}
    pa = bgnbd_mle.p_alive()
    assert pa.dims == ("chain", "draw", "customer_id") and pa.shape == (1, 1, 2357)


def test_short_nuts_structure_and_predictions(bgnbd_nuts_small, cdnow):
    post = bgnbd_nuts_small.idata_.posterior
    assert post.sizes["chain"] == 2 and post.sizes["draw"] == 100
    assert set(post.data_vars) == {"r", "alpha", "a", "b"}
    e = bgnbd_nuts_small.expected_purchases(t=10, rfm=cdnow.iloc[:5])
    assert e.shape == (2, 100, 5)
    assert list(e["customer_id"].values) == list(cdnow.index[:5])
    assert np.all(np.isfinite(e.values))


def test_short_nuts_near_mle(bgnbd_nuts_small):
    s = bgnbd_nuts_small.summary()
    assert bgnbd_nuts_small.fit_info_["nuts_sampler"] == "pymc"
    for k, v in BGNBD_MLE.items():
        assert abs(s.loc[k, "mean"] - v) < 4 * BGNBD_MLE_SE[k], k


def test_nuts_is_reproducible_with_seed(cdnow):
    kw = dict(draws=20, tune=30, chains=1, seed=11, progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = BetaGeoModel().fit(cdnow.iloc[:300], **kw).draws()["r"]
        b = BetaGeoModel().fit(cdnow.iloc[:300], **kw).draws()["r"]
    np.testing.assert_array_equal(a, b)


def test_convergence_warning_on_short_chains(cdnow):
    with pytest.warns(ConvergenceWarning, match="low effective sample size"):
        BetaGeoModel().fit(cdnow, draws=30, tune=30, chains=2, seed=1, progressbar=False)


def test_new_customer_and_unconditional_predictions(bgnbd_mle):
    e = bgnbd_mle.expected_purchases_new(t=[26.0, 52.0])
    assert e.dims == ("chain", "draw", "t")
    assert e.sel(t=52.0).item() == pytest.approx(1.4440, abs=2e-3)
    probs = bgnbd_mle.prob_purchases(t=39, n=np.arange(200))
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert probs.sel(n=0).item() == pytest.approx(0.57379, abs=2e-3)


# ---------------------------------------------------------------- model comparison
def test_loo_per_history_equals_arviz_per_customer(bgnbd_nuts_small):
    """Our per-history LOO with counts equals the installed ArviZ's per-customer LOO."""
    import arviz as az

    from clvbayes import compat

    ours = bgnbd_nuts_small.loo()
    ll = bgnbd_nuts_small.log_likelihood(per="customer")
    container = compat.to_arviz(
        {"posterior": bgnbd_nuts_small.posterior_, "log_likelihood": ll.to_dataset(name="x")}
    )
    ref = az.loo(container)
    # ArviZ 0.x names them elpd_loo / p_loo, ArviZ 1.x elpd / p
    ref_elpd = getattr(ref, "elpd_loo", None) or ref.elpd
    ref_p = getattr(ref, "p_loo", None) or ref.p
    assert ours.n_customers == 2357 and ours.n_histories < 2357
    assert ours.elpd == pytest.approx(ref_elpd, rel=1e-9)
    # se: sqrt(n) x sd of the pointwise values with n - 1 (loo R package, ArviZ 1.x);
    # ArviZ 0.x divides by n
    n = ours.n_customers
    ref_se = ref.se if compat.ARVIZ_MAJOR >= 1 else ref.se * np.sqrt(n / (n - 1))
    assert ours.se == pytest.approx(ref_se, rel=1e-6)
    assert ours.p_eff == pytest.approx(ref_p, rel=1e-6)


def test_waic_per_history_equals_per_customer_formula(bgnbd_nuts_small):
    """WAIC (Watanabe 2010) from the per-customer matrix, computed independently in NumPy."""
    from scipy.special import logsumexp

    s = bgnbd_nuts_small.log_likelihood(per="customer")
    s = s.stack(sample=("chain", "draw")).transpose("sample", "customer").values
    lppd = logsumexp(s, axis=0) - np.log(s.shape[0])
    expected = float(np.sum(lppd - np.var(s, axis=0)))
    waic = bgnbd_nuts_small.waic()
    assert waic.elpd == pytest.approx(expected, rel=1e-9)
    assert waic.n_customers == 2357


# ---------------------------------------------------------------- save / load
def test_save_load_roundtrip_identical_predictions(bgnbd_nuts_small, tmp_path):
    path = tmp_path / "bgnbd.nc"
    bgnbd_nuts_small.save(path)
    loaded = BetaGeoModel.load(path)
    np.testing.assert_array_equal(loaded.p_alive().values, bgnbd_nuts_small.p_alive().values)
    np.testing.assert_array_equal(loaded.data_.inverse, bgnbd_nuts_small.data_.inverse)
    assert loaded.priors == bgnbd_nuts_small.priors
    assert loaded.time_unit_ == "weeks"
    assert list(loaded.p_alive()["customer_id"].values) == list(
        bgnbd_nuts_small.p_alive()["customer_id"].values
    )


def test_save_without_data_needs_table(bgnbd_mle, cdnow, tmp_path):
    path = tmp_path / "nodata.nc"
    bgnbd_mle.save(path, include_data=False)
    loaded = BetaGeoModel.load(path)
    with pytest.raises(
        ValueError, match="saved without its training data: pass the customer table"
    ):
        loaded.p_alive()
    np.testing.assert_array_equal(loaded.p_alive(cdnow).values, bgnbd_mle.p_alive().values)


def test_load_incompatible_version_fails_clearly(bgnbd_mle, tmp_path):
    from clvbayes import compat

    path = tmp_path / "old.nc"
    bgnbd_mle.save(path)
    groups, attrs = compat.read_groups(path)
    attrs["clvbayes_format"] = 0
    compat.write_groups(tmp_path / "old2.nc", groups, attrs)
    with pytest.raises(
        ValueError, match=r"saved-model format 0 .* cannot be read by this clvbayes"
    ):
        BetaGeoModel.load(tmp_path / "old2.nc")


# ---------------------------------------------------------------- full NUTS reference (slow)
@pytest.mark.slow
def test_nuts_default_priors_match_mle(cdnow):
    m = BetaGeoModel().fit(cdnow, seed=2026, progressbar=False)
    s = m.summary()
    print("\nBG/NBD NUTS on CDNOW:", m.fit_info_)
    print(s)
    for k in BGNBD_MLE:
        assert abs(s.loc[k, "mean"] - BGNBD_MLE[k]) <= 0.5 * s.loc[k, "sd"], k
        assert s.loc[k, "sd"] == pytest.approx(BGNBD_MLE_SE[k], rel=0.2), k
        assert s.loc[k, "r_hat"] <= 1.01, k
    assert m.fit_info_["divergences"] == 0


PRIORS_VS_SCIPY = [
    (Prior("HalfNormal", sigma=3), stats.halfnorm(scale=3)),
    (Prior("HalfCauchy", beta=2), stats.halfcauchy(scale=2)),
    (Prior("Exponential", lam=0.5), stats.expon(scale=2)),
    (Prior("Gamma", alpha=2.5, beta=4), stats.gamma(2.5, scale=0.25)),
    (Prior("LogNormal", mu=0.3, sigma=1.2), stats.lognorm(1.2, scale=np.exp(0.3))),
    (Prior("Weibull", alpha=1.5, beta=2), stats.weibull_min(1.5, scale=2)),
]


@pytest.mark.parametrize("prior, frozen", PRIORS_VS_SCIPY)
def test_prior_log_densities_match_scipy(prior, frozen):
    x = np.array([1e-3, 0.1, 0.7, 2.0, 15.0])
    np.testing.assert_allclose(prior.logpdf(x), frozen.logpdf(x), rtol=1e-12)


@pytest.mark.parametrize(
    "prior, frozen",
    [
        *PRIORS_VS_SCIPY,  # and the shapes whose formula has 0 * log 0 or inf at 0:
        (Prior("Gamma", alpha=1.0, beta=4), stats.gamma(1.0, scale=0.25)),
        (Prior("Gamma", alpha=0.5, beta=4), stats.gamma(0.5, scale=0.25)),
        (Prior("Weibull", alpha=1.0, beta=2), stats.weibull_min(1.0, scale=2)),
    ],
)
def test_prior_log_densities_at_the_edges_are_their_limits(prior, frozen):
    """At 0 the limit of the density (0 * log 0 is 0, the log-normal's density tends to 0),
    at inf and below 0 no density: never NaN, in the NumPy form and the NUTS scalar form."""
    x = np.array([0.0, np.inf, -1.0, 1e-300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = prior.logpdf(x)
        scalar = [prior.logpdf_scalar(float(v)) for v in x]
    with np.errstate(all="ignore"):
        want = frozen.logpdf(x)
    want[1] = -np.inf  # scipy: nan or -inf at inf, depending on the family
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(scalar, want, rtol=1e-12)
    assert Prior("HalfFlat").logpdf(-1.0) == -np.inf and Prior("HalfFlat").logpdf(3.0) == 0.0


def test_half_student_t_prior_matches_scipy():
    x = np.array([0.01, 1.0, 8.0])
    ref = stats.t.logpdf(x, df=3, scale=2) + np.log(2)
    np.testing.assert_allclose(Prior("HalfStudentT", nu=3, sigma=2).logpdf(x), ref, rtol=1e-12)
