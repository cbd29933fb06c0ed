"""MAP with the exact gradient, the Laplace fast path, and fits the data cannot support."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import BGNBD_MLE, GG_MLE, flat_priors

from clvbayes import inference
from clvbayes.errors import FitWarning, ModelError
from clvbayes.models import BetaGeoModel, GammaGammaModel


def test_log_density_gradient_matches_finite_differences(cdnow):
    """The exact gradient (likelihood, priors, Jacobian) against central differences."""
    model = BetaGeoModel()
    data = model._compress(cdnow)
    for jacobian in (False, True):
        f = inference.log_density(model, data, use_priors=True, jacobian=jacobian)
        theta = np.log([0.3, 5.0, 0.7, 2.0])
        _, grad = f(theta)
        fd = inference._central_gradient(lambda t: f(t)[0], theta, h=1e-6)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-4)


def test_mle_with_exact_gradient_reproduces_published_estimates(cdnow):
    bg = BetaGeoModel(priors=flat_priors(BetaGeoModel)).fit(cdnow, method="mle")
    for k, v in BGNBD_MLE.items():
        assert bg.draws()[k].item() == pytest.approx(v, rel=2e-3), k
    assert bg.fit_info_["log_likelihood"] == pytest.approx(-9582.4, abs=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gg = GammaGammaModel(priors=flat_priors(GammaGammaModel)).fit(cdnow, method="mle")
    for k, v in GG_MLE.items():
        assert gg.draws()[k].item() == pytest.approx(v, rel=2e-3), k


def test_laplace_gives_distinct_reproducible_draws_in_the_nuts_structure(cdnow):
    a = BetaGeoModel().fit(cdnow, method="laplace", seed=1)
    b = BetaGeoModel().fit(cdnow, method="laplace", seed=1)
    c = BetaGeoModel().fit(cdnow, method="laplace", seed=2, draws=200)
    assert a.posterior_.sizes == {"chain": 1, "draw": 1000}
    assert c.posterior_.sizes == {"chain": 1, "draw": 200}
    for k in a.param_names:
        np.testing.assert_array_equal(a.draws()[k], b.draws()[k])
        v = a.draws()[k].ravel()
        assert np.unique(v).size == v.size and v.std() > 0  # a real spread, not a point
    assert not np.array_equal(a.draws()["r"][:, :200], c.draws()["r"])
    # its sd matches the curvature of the log-likelihood at the mode (published SEs)
    s = a.summary()
    assert s.loc["r", "sd"] == pytest.approx(0.0126, rel=0.2)
    assert s.loc["alpha", "sd"] == pytest.approx(0.378, rel=0.2)
    assert np.isfinite(s["lower_0.9"]).all() and (s["upper_0.9"] > s["lower_0.9"]).all()


def test_map_summary_shows_no_interval(bgnbd_mle):
    s = bgnbd_mle.summary()
    assert s["lower_0.9"].isna().all() and s["upper_0.9"].isna().all()
    assert (s["sd"] > 0).all()  # the delta-method sd is reported, labelled as such in the docs


@pytest.mark.parametrize("bad", [-3, 1.5, True, "1"])
def test_bad_seed_is_refused_before_fitting(cdnow, bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        BetaGeoModel().fit(cdnow, method="laplace", seed=bad)


def _rfm(x, t_x, T, z=None):
    df = pd.DataFrame(
        {"frequency": x, "recency": t_x, "T": T},
        index=pd.Index([f"c{i}" for i in range(len(x))], name="customer_id"),
    )
    if z is not None:
        df["monetary_value"] = z
    df.attrs["time_unit"] = "weeks"
    return df


def test_no_repeat_purchases_is_refused():
    rfm = _rfm([0] * 50, [0.0] * 50, np.linspace(5, 30, 50), z=[0.0] * 50)
    with pytest.raises(ModelError, match=r"none of the 50 customers made a repeat purchase"):
        BetaGeoModel().fit(rfm, method="map")
    with pytest.raises(ModelError, match=r"none of the 50 customers can be used"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GammaGammaModel().fit(rfm, method="map")


def test_one_customer_fit_warns_about_information():
    rfm = _rfm([3], [20.0], [30.0])
    with pytest.warns(FitWarning, match=r"fitted on 1 customer\(s\)"):
        m = BetaGeoModel().fit(rfm, method="map")
    assert any("fitted on 1 customer" in w for w in m.fit_info_["warnings"])


def test_parameter_at_the_boundary_is_reported():
    """MLE on one customer drives the dropout parameter a to 0 (the support boundary)."""
    rfm = _rfm([3], [20.0], [30.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = BetaGeoModel(priors=flat_priors(BetaGeoModel)).fit(rfm, method="mle")
    msgs = [str(w.message) for w in caught if issubclass(w.category, FitWarning)]
    assert any("at the boundary of its support" in s for s in msgs), msgs
    assert any("at the boundary" in s for s in m.fit_info_["warnings"])


def test_laplace_refuses_when_the_approximation_does_not_exist():
    """Flat priors and a single customer: the posterior is not curved in every direction."""
    rfm = _rfm([0], [0.0], [10.0])
    rfm2 = pd.concat([rfm, _rfm([2], [5.0], [10.0]).rename(index={"c0": "c1"})])
    rfm2.attrs["time_unit"] = "weeks"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelError, match=r"(Laplace approximation does not exist|not finite)"):
            BetaGeoModel(priors=flat_priors(BetaGeoModel)).fit(rfm2, method="laplace")


@pytest.mark.slow
def test_laplace_agrees_with_nuts_on_cdnow(cdnow):
    """The agreement stated in :func:`clvbayes.inference.fit_laplace`, on CDNOW."""
    from clvbayes.predict import score_customers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {}
        for method in ("nuts", "laplace"):
            bg = BetaGeoModel().fit(cdnow, method=method, seed=7, progressbar=False)
            gg = GammaGammaModel().fit(cdnow, method=method, seed=8, progressbar=False)
            fits[method] = (bg, gg)
    report = {}
    for i, name in enumerate(("bgnbd", "gg")):
        sn, sl = fits["nuts"][i].summary(), fits["laplace"][i].summary()
        z = ((sl["mean"] - sn["mean"]) / sn["sd"]).abs()
        sd_ratio = sl["sd"] / sn["sd"]
        report[name] = (z.round(3).to_dict(), sd_ratio.round(3).to_dict())
        assert (z <= 0.25).all(), (name, z)
        assert ((sd_ratio > 0.85) & (sd_ratio < 1.15)).all(), (name, sd_ratio)
    scores = {m: score_customers(cdnow, *fits[m], horizon=52, annual_discount_rate=0.1,
                                 outcomes=False, seed=3) for m in fits}  # fmt: skip
    for q in ("p_alive", "clv"):
        width = {
            m: (s.customers[f"{q}_ci_upper"] - s.customers[f"{q}_ci_lower"])
            for m, s in scores.items()
        }
        # customers with no repeat purchase have P(alive) = 1 exactly (width 0): left out
        ratio = float(np.nanmedian(width["laplace"] / width["nuts"].where(width["nuts"] > 0)))
        report[q] = ratio
        assert 0.85 <= ratio <= 1.15, (q, ratio)
    tn, tl = scores["nuts"].segments["all"].iloc[0], scores["laplace"].segments["all"].iloc[0]
    w = tn["clv_total_ci_upper"] - tn["clv_total_ci_lower"]
    for end in ("clv_total_ci_lower", "clv_total_ci_upper"):
        assert abs(tl[end] - tn[end]) <= 0.10 * w, (end, tl[end], tn[end])
    print("\nLaplace vs NUTS on CDNOW:", report)


def test_nuts_step_options_reach_the_laplace_started_step(cdnow, monkeypatch):
    """target_accept given to fit (or a model's nuts_defaults) is applied to the NUTS step."""
    import pymc as pm

    seen = {}
    real = pm.NUTS

    def spy(*args, **kwargs):
        step = real(*args, **kwargs)
        seen["target_accept"] = step.target_accept
        return step

    monkeypatch.setattr(pm, "NUTS", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        BetaGeoModel().fit(cdnow, draws=10, tune=10, chains=1, seed=1, nuts_sampler="pymc",
                           progressbar=False, target_accept=0.93)  # fmt: skip
    assert seen["target_accept"] == pytest.approx(0.93)


# ------------------------------------------------------------------ every family: exact gradient, Hessian
def _family_params():
    from test_contract import MODELS

    return [
        pytest.param(row, id=row.cls.__name__)
        for row in MODELS
        if row.skip is None and row.cls is not object
    ]


def _family_density(row, jacobian: bool):
    model = row.cls()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = model._compress(row.data())
    return model, data, inference.log_density(model, data, use_priors=True, jacobian=jacobian)


@pytest.mark.parametrize("row", _family_params())
def test_every_family_fits_with_its_exact_gradient(row, monkeypatch):
    """MAP and Laplace of every family run on the model's exact gradient: the likelihood is
    never differenced; the prior neither where its terms are independent (analytic
    ``Prior.logpdf_grad``), only a joint prior (pooled models) is, with h = 1e-6."""
    model, data, _ = _family_density(row, jacobian=False)
    assert model._loglik_sum_function(data) is not None
    calls = []
    real = inference._central_gradient
    monkeypatch.setattr(inference, "_central_gradient",
                        lambda f, x, h=1e-6: calls.append(h) or real(f, x, h))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row.cls().fit(row.data(), method="map", seed=1)
    point = model._initial_point(data)
    if model._log_prior_and_grad(point) is None:
        assert calls and set(calls) == {1e-6}  # the joint prior's differences only
    else:
        assert calls == []
    # ... and that gradient is the derivative of the log density (values only)
    for jacobian in (False, True):
        _, _, f = _family_density(row, jacobian)
        theta = np.log([model._initial_point(data)[k] for k in model.param_names]) + 0.05
        value, grad = f(theta)
        fd = inference._central_gradient(lambda t: f(t)[0], theta, h=1e-5)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, abs(value)) ** 0.5)


def _second_differences(f, x: np.ndarray, h: float) -> np.ndarray:
    """Hessian from log density *values* only: Richardson-extrapolated central second differences."""

    def at(h):
        n = x.size
        out = np.empty((n, n))
        f0 = f(x)[0]
        for i in range(n):
            for j in range(i, n):
                ei, ej = np.eye(n)[i] * h, np.eye(n)[j] * h
                if i == j:
                    out[i, i] = (f(x + ei)[0] - 2 * f0 + f(x - ei)[0]) / h**2
                else:
                    out[i, j] = out[j, i] = (
                        f(x + ei + ej)[0]
                        - f(x + ei - ej)[0]
                        - f(x - ei + ej)[0]
                        + f(x - ei - ej)[0]
                    ) / (4 * h**2)
        return out

    return (4 * at(h / 2) - at(h)) / 3


@pytest.mark.parametrize("row", _family_params())
def test_laplace_hessian_matches_second_derivative_of_the_log_density(row):
    """The Hessian behind the Laplace covariance (differences of the exact gradient) against a
    second derivative computed from log-density values alone, at the mode and away from it."""
    model, data, f = _family_density(row, jacobian=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        approx = inference.laplace_approximation(model, data)
    for theta in (approx.mode, approx.mode + 0.1):
        hess = inference._hessian(f, theta)
        ref = _second_differences(f, theta, h=2e-3)
        np.testing.assert_allclose(hess, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    neg_hess = -inference._hessian(f, approx.mode)
    np.testing.assert_allclose(np.linalg.inv(approx.cov), neg_hess, rtol=1e-8,
                               atol=1e-10 * np.abs(neg_hess).max())  # fmt: skip


def test_large_fit_starts_from_the_mode_of_a_sample(monkeypatch):
    """Beyond 2 x SUBSAMPLE_HISTORIES distinct histories the search starts at a sample's mode,
    which ends at the same mode as a search from the initial point, in fewer full steps."""
    from clvbayes.math import bgnbd

    rng = np.random.default_rng(5)
    n = 3_000
    T = rng.uniform(13, 104, n).round(3)
    sim = bgnbd.simulate(rng, 0.9, 3.0, 0.6, 6.0, T)
    rfm = _rfm(sim["frequency"], sim["recency"], T)
    model = BetaGeoModel()
    data = model._compress(rfm)
    monkeypatch.setattr(inference, "SUBSAMPLE_HISTORIES", 500)
    f = inference.log_density(model, data, use_priors=True, jacobian=False)
    start = inference._start(model, data, f, use_priors=True, jacobian=False)
    generic = np.log([model._initial_point(data)[k] for k in model.param_names])
    assert not np.allclose(start, generic) and f(start)[0] > f(generic)[0]
    from_sample = inference._maximise(f, start, {}, "x")
    from_generic = inference._maximise(f, generic, {}, "x")
    np.testing.assert_allclose(from_sample[0], from_generic[0], atol=1e-6)
    assert from_sample[2] < from_generic[2]
