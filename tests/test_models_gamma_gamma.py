"""Gamma-Gamma model layer: published estimates, exclusions, errors, save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import GG_MLE, flat_priors

from clvbayes.data import DataError
from clvbayes.models import ExcludedCustomersWarning, GammaGammaModel, Prior


def test_mle_reproduces_published_estimates(gg_mle):
    est = gg_mle.summary()["mean"]
    for k, v in GG_MLE.items():
        assert est[k] == pytest.approx(v, rel=0.005), k
    assert gg_mle.fit_info_["log_likelihood"] == pytest.approx(-4055.92, abs=0.05)


def test_map_flat_priors_equals_published(cdnow):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedCustomersWarning)
        m = GammaGammaModel(priors=flat_priors(GammaGammaModel)).fit(cdnow, method="map")
    for k, v in GG_MLE.items():
        assert m.summary()["mean"][k] == pytest.approx(v, rel=0.005), k


def test_zero_frequency_customers_excluded_with_reported_count(cdnow):
    with pytest.warns(
        ExcludedCustomersWarning, match="1411 of 2357 customers are excluded from the fit"
    ):
        m = GammaGammaModel().fit(cdnow, method="mle")
    assert m.fit_info_["n_customers_fitted"] == 946
    assert m.fit_info_["n_customers_excluded"] == 1411


def test_expected_spend_first_ten_published_customers(gg_mle):
    published = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    from importlib.resources import files

    import pandas as pd

    raw = pd.read_csv(files("clvbayes.datasets") / "files" / "cdnow_summary.csv").iloc[:10]
    first = pd.DataFrame(
        {"frequency": raw["x"], "recency": raw["t_x"], "T": raw["T"], "monetary_value": raw["zbar"]}
    ).set_index(raw["ID"].rename("customer_id"))
    e = gg_mle.expected_spend(first).mean(("chain", "draw")).values
    np.testing.assert_allclose(e, published, atol=0.02)


def test_zero_frequency_customers_get_population_mean(gg_mle, cdnow):
    e = gg_mle.expected_spend().mean(("chain", "draw")).values
    pop = gg_mle.population_mean_spend().mean().item()
    zero = (cdnow["frequency"] == 0).to_numpy()
    np.testing.assert_allclose(e[zero], pop)
    d = gg_mle.draws()
    assert pop == pytest.approx(d["p"][0, 0] * d["gamma"][0, 0] / (d["q"][0, 0] - 1))


def test_non_positive_monetary_value_is_a_clear_error(cdnow):
    bad = cdnow.copy()
    bad.iloc[0, bad.columns.get_loc("monetary_value")] = -5.0
    with pytest.raises(DataError, match="monetary_value"):
        GammaGammaModel().fit(bad, method="map")


def test_unknown_prior_name():
    with pytest.raises(ValueError, match="Valid names are: p, q, gamma"):
        GammaGammaModel(priors={"v": Prior("HalfFlat")})


def test_loglik_counts_only_repeat_customers(gg_nuts_small):
    ll = gg_nuts_small.log_likelihood(per="customer")
    assert ll.sizes["customer"] == 946
    assert np.isfinite(ll.values).all()
    assert gg_nuts_small.loo().n_customers == 946


def test_save_load_roundtrip(gg_nuts_small, tmp_path):
    path = tmp_path / "gg.nc"
    gg_nuts_small.save(path)
    loaded = GammaGammaModel.load(path)
    np.testing.assert_array_equal(
        loaded.expected_spend().values, gg_nuts_small.expected_spend().values
    )


def test_load_wrong_model_class_fails(gg_mle, tmp_path):
    from clvbayes.models import BetaGeoModel

    path = tmp_path / "gg.nc"
    gg_mle.save(path)
    with pytest.raises(ValueError, match="holds a GammaGammaModel, not a BetaGeoModel"):
        BetaGeoModel.load(path)


@pytest.mark.parametrize(
    "point",
    [GG_MLE, {"p": 1e-3, "q": 1.0 + 1e-9, "gamma": 1e-3}, {"p": 300.0, "q": 0.05, "gamma": 1e5}],
)
def test_fast_pymc_model_equals_symbolic(cdnow, point):
    """The NumPy Op gives the symbolic graph's log posterior and gradient (priors included)."""
    model = GammaGammaModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedCustomersWarning)
        data = model._compress(cdnow)
    symbolic, fast = (model.build_pymc_model(data, fast=f) for f in (False, True))
    x = {f"{k}_log__": np.log(v) for k, v in point.items()}
    assert fast.compile_logp()(x) == pytest.approx(symbolic.compile_logp()(x), rel=1e-10)
    # atol: at the MLE the gradient (~1) is what is left of per-customer terms summing to ~1e4
    np.testing.assert_allclose(
        fast.compile_dlogp()(x), symbolic.compile_dlogp()(x), rtol=1e-7, atol=1e-6
    )


def test_short_nuts_near_mle(gg_nuts_small):
    s = gg_nuts_small.summary()
    assert gg_nuts_small.fit_info_["nuts_sampler"] == "pymc"
    assert s["r_hat"].max() < 1.1
    mle_mean_spend = GG_MLE["p"] * GG_MLE["gamma"] / (GG_MLE["q"] - 1)  # 35.2
    assert float(gg_nuts_small.population_mean_spend().mean()) == pytest.approx(
        mle_mean_spend, rel=0.1
    )


# ---------------------------------------------------------------- heavy-tailed spend (issue 12 #3)
def _lognormal_spend(cdnow, sigma=2.0, seed=12):
    """The CDNOW customers with each customer's mean spend lognormal (median 15, sigma 2)."""
    x = cdnow["frequency"].to_numpy()
    mv = np.exp(np.log(15.0) + sigma * np.random.default_rng(seed).standard_normal(len(cdnow)))
    return cdnow.assign(monetary_value=np.where(x > 0, mv, 0.0))


def test_heavy_tailed_spend_gives_a_fit_warning_and_a_clear_error_not_a_traceback(cdnow):
    """q <= 1 (no finite population mean spend): the fit warns (recorded in fit_info_), and
    every expectation that would be infinite raises a ModelError with the fix."""
    from clvbayes.errors import FitWarning, ModelError
    from clvbayes.models import BetaGeoModel
    from clvbayes.predict import score_customers

    rfm = _lognormal_spend(cdnow)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedCustomersWarning)
        with pytest.warns(FitWarning, match=r"fitted value of q \(median 0\.54\d\) is <= 1"):
            gg = GammaGammaModel().fit(rfm, method="map")
        bg = BetaGeoModel().fit(rfm, method="map")
    assert float(gg.draws()["q"].ravel()[0]) < 1.0
    assert any("--priors FILE.json" in m for m in gg.fit_info_["warnings"])
    with pytest.raises(ModelError, match=r"expected_spend needs p \* x \+ q > 1.*Fixes: \(1\)"):
        gg.expected_spend()
    with pytest.raises(ModelError, match=r"population_mean_spend needs q > 1"):
        gg.population_mean_spend()
    with pytest.raises(ModelError, match=r"infinite for 1,411 of 2,357 customers"):
        score_customers(rfm, bg, gg, horizon=52, outcomes=False)
    # the advertised fix works: a strong prior keeps q above 1 and every number is finite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedCustomersWarning)
        fixed = GammaGammaModel(priors={"q": Prior("Gamma", alpha=400, beta=100)}).fit(
            rfm, method="map"
        )
    assert float(fixed.draws()["q"].ravel()[0]) > 1.0
    assert not any("q (median" in m for m in fixed.fit_info_["warnings"])
    res = score_customers(rfm, bg, fixed, horizon=52, n_outcome_samples=100)
    assert np.isfinite(res.customers.filter(regex="_(mean|pi_lower|pi_upper)$").to_numpy()).all()


def test_fit_warning_counts_the_draws_with_q_below_one():
    import xarray as xr

    from clvbayes.errors import FitWarning
    from clvbayes.math import gamma_gamma

    m = GammaGammaModel()
    dims = ("chain", "draw")
    m.posterior_ = xr.Dataset(
        {"p": (dims, np.full((1, 4), 6.0)), "gamma": (dims, np.full((1, 4), 15.0)),
         "q": (dims, np.array([[0.8, 1.5, 2.0, 0.9]]))}
    )  # fmt: skip
    with pytest.warns(FitWarning, match=r"2 of 4 posterior draws of q \(median 1\.2\) is <= 1"):
        msgs = m._check_information(n_fitted=5000)
    assert msgs[-1].endswith(gamma_gamma.HEAVY_TAIL_FIX)
