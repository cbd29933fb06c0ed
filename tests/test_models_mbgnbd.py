"""MBG/NBD model layer: CDNOW reference fit, PyMC/NumPy agreement, predictions, NUTS, API contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import flat_priors

from clvbayes.math import mbgnbd
from clvbayes.models import NotFittedError, Prior, default_nuts_sampler
from clvbayes.models.mbgnbd import ModifiedBetaGeoModel

# MBG/NBD MLE on the CDNOW sample (weekly, 39-week calibration); issue 14
MBGNBD_MLE = {"r": 0.5248, "alpha": 6.1830, "a": 0.8914, "b": 1.6140}
MBGNBD_LOGLIK = -9582.13


@pytest.fixture(scope="module")
def mbgnbd_mle(cdnow):
    return ModifiedBetaGeoModel().fit(cdnow, method="mle")


@pytest.fixture
def registered(monkeypatch):
    """``CLVModel.load`` finds classes in clvbayes.models; register the model there for a test."""
    import clvbayes.models

    monkeypatch.setattr(
        clvbayes.models, "ModifiedBetaGeoModel", ModifiedBetaGeoModel, raising=False
    )


# ---------------------------------------------------------------- reference
def test_mle_reproduces_reference(mbgnbd_mle):
    est = mbgnbd_mle.summary()["mean"]
    for k, v in MBGNBD_MLE.items():
        assert est[k] == pytest.approx(v, rel=0.005), k
    assert mbgnbd_mle.fit_info_["log_likelihood"] == pytest.approx(MBGNBD_LOGLIK, abs=0.01)
    assert all(np.isfinite(v) and v > 0 for v in mbgnbd_mle.fit_info_["laplace_sd"].values())


def test_map_with_flat_priors_equals_mle(cdnow, mbgnbd_mle):
    m = ModifiedBetaGeoModel(priors=flat_priors(ModifiedBetaGeoModel)).fit(cdnow, method="map")
    for k in MBGNBD_MLE:
        assert m.summary()["mean"][k] == pytest.approx(mbgnbd_mle.summary()["mean"][k], rel=1e-4)


def test_map_with_default_priors_is_near_mle(cdnow, mbgnbd_mle):
    """The default priors move the mode by less than one Laplace sd of the MLE."""
    m = ModifiedBetaGeoModel().fit(cdnow, method="map")
    sd = mbgnbd_mle.fit_info_["laplace_sd"]
    for k, v in MBGNBD_MLE.items():
        assert abs(m.summary()["mean"][k] - v) < sd[k], k


# ---------------------------------------------------------------- PyMC graph and NumPy agree
def test_pymc_model_logp_matches_numpy_total(cdnow):
    model = ModifiedBetaGeoModel(priors=flat_priors(ModifiedBetaGeoModel))
    data = model._compress(cdnow)
    pm_model = model.build_pymc_model(data)
    point = {f"{k}_log__": np.log(v) for k, v in MBGNBD_MLE.items()}
    logp = pm_model.compile_logp(jacobian=False)(point)
    expected = np.sum(
        data.counts
        * mbgnbd.loglik(*MBGNBD_MLE.values(), data["frequency"], data["recency"], data["T"])
    )
    assert logp == pytest.approx(expected, rel=1e-10)


POINTS = [MBGNBD_MLE, {"r": 1e-3, "alpha": 0.5, "a": 1.0, "b": 0.05},
          {"r": 30.0, "alpha": 900.0, "a": 20.0, "b": 0.01}]  # fmt: skip


def test_fast_pymc_model_equals_symbolic(cdnow):
    """The NumPy Op (exact hand-derived gradient) gives the symbolic graph's log posterior and
    gradient, priors included, at the MLE and at extreme points."""
    model = ModifiedBetaGeoModel()
    data = model._compress(cdnow)
    symbolic, fast = (model.build_pymc_model(data, fast=f) for f in (False, True))
    assert "counts" not in fast.named_vars and "counts" in symbolic.named_vars
    fns = [(m.compile_logp(), m.compile_dlogp()) for m in (symbolic, fast)]
    for point in POINTS:
        x = {f"{k}_log__": np.log(v) for k, v in point.items()}
        (lp_s, dlp_s), (lp_f, dlp_f) = ((lp(x), dlp(x)) for lp, dlp in fns)
        assert lp_f == pytest.approx(lp_s, rel=1e-10)
        # near the mode the likelihood part of the gradient cancels to ~0: compare absolutely too
        np.testing.assert_allclose(dlp_f, dlp_s, rtol=1e-7, atol=1e-6)


def test_fast_pymc_model_pickles(cdnow):
    import pickle

    model = ModifiedBetaGeoModel()
    f = model.build_pymc_model(model._compress(cdnow), fast=True).compile_dlogp()
    x = {f"{k}_log__": np.log(v) for k, v in MBGNBD_MLE.items()}
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(f))(x), f(x))


# ---------------------------------------------------------------- predictions
def test_predictions_map_draws_onto_the_math(mbgnbd_mle, cdnow):
    d = {k: float(v) for k, v in mbgnbd_mle.summary()["mean"].items()}
    args = (d["r"], d["alpha"], d["a"], d["b"])
    x, t_x, T = (cdnow[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    pa = mbgnbd_mle.p_alive()
    assert pa.dims == ("chain", "draw", "customer_id") and pa.shape == (1, 1, 2357)
    np.testing.assert_allclose(pa.values[0, 0], mbgnbd.p_alive(*args, x, t_x, T), rtol=1e-12)
    e = mbgnbd_mle.expected_purchases(t=39)
    np.testing.assert_allclose(
        e.values[0, 0], mbgnbd.expected_purchases(*args, x, t_x, T, 39.0), rtol=1e-12
    )
    s = mbgnbd_mle.p_alive_at(t=39, rfm=cdnow.iloc[:5])
    assert list(s["customer_id"].values) == list(cdnow.index[:5])
    assert np.all(s.values <= pa.values[..., :5])
    # customers without repeat purchases are not certainly alive (unlike BG/NBD)
    zero = cdnow["frequency"].to_numpy() == 0
    assert np.all(pa.values[0, 0, zero] < 1)


def test_holdout_total_at_mle(mbgnbd_mle, cdnow):
    """Expected CDNOW holdout purchases at the MLE (computed here; the formula is checked against
    BDF's closed form and simulation in test_math_mbgnbd).  BG/NBD gives 1,653.4, actual 1,882."""
    total = mbgnbd_mle.expected_purchases(t=39).sum().item()
    assert total == pytest.approx(1576.7, abs=0.5)
    assert int(cdnow["frequency_holdout"].sum()) == 1882


def test_new_customer_and_unconditional_predictions(mbgnbd_mle):
    e = mbgnbd_mle.expected_purchases_new(t=[26.0, 52.0])
    assert e.dims == ("chain", "draw", "t")
    assert mbgnbd_mle.expected_purchases_new(t=52.0).dims == ("chain", "draw")
    probs = mbgnbd_mle.prob_purchases(t=39, n=np.arange(400))
    assert probs.dims == ("chain", "draw", "n")
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    mean = (probs * probs["n"]).sum().item()
    assert mean == pytest.approx(mbgnbd_mle.expected_purchases_new(t=39.0).item(), rel=1e-4)


def test_score_customers_runs_on_the_model(mbgnbd_mle, cdnow):
    """The array interface clvbayes.predict drives today (same contract as BetaGeoModel's)."""
    from clvbayes.predict import score_customers

    scores = score_customers(cdnow.iloc[:200], mbgnbd_mle, horizon=39.0, n_outcome_samples=200)
    table = scores.customers
    assert len(table) == 200
    np.testing.assert_allclose(
        table["purchases_mean"].to_numpy(),
        mbgnbd_mle.expected_purchases(t=39, rfm=cdnow.iloc[:200]).values[0, 0],
        rtol=1e-9,
    )


# ---------------------------------------------------------------- API contract
def test_unknown_prior_name_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown prior name\(s\) \['s'\].*Valid names are: r, alpha, a, b"
    ):
        ModifiedBetaGeoModel(priors={"s": Prior("HalfNormal", sigma=1)})


def test_priors_are_replaceable_and_shown():
    m = ModifiedBetaGeoModel(priors={"r": Prior("Gamma", alpha=2, beta=4)})
    assert m.priors["r"] == Prior("Gamma", alpha=2, beta=4)
    assert m.priors["a"] == ModifiedBetaGeoModel.default_priors["a"]
    import clvbayes.models.mbgnbd as module

    for text in ("HalfNormal(sigma=10)", "HalfNormal(sigma=200)", "HalfCauchy(beta=1)"):
        assert text in module.__doc__
    assert module.DEFAULT_PRIORS == {
        "r": Prior("HalfNormal", sigma=10), "alpha": Prior("HalfNormal", sigma=200),
        "a": Prior("HalfCauchy", beta=1), "b": Prior("HalfCauchy", beta=1),
    }  # fmt: skip


def test_predict_before_fit_says_call_fit():
    with pytest.raises(NotFittedError, match=r"call \.fit\(rfm\) first"):
        ModifiedBetaGeoModel().p_alive()


def test_bad_table_is_rejected_with_the_column_named(cdnow):
    bad = cdnow.copy()
    bad.iloc[3, bad.columns.get_loc("recency")] = bad["T"].iloc[3] + 1.0
    with pytest.raises(ValueError, match="recency"):
        ModifiedBetaGeoModel().fit(bad, method="map")


@pytest.mark.skipif(
    not hasattr(ModifiedBetaGeoModel, "_information_problem")
    or "_information_problem" not in ModifiedBetaGeoModel.fit.__code__.co_names,
    reason="the base class does not check information before fitting",
)
def test_no_repeat_buyers_is_refused_clearly(cdnow):
    from clvbayes.errors import ModelError

    none = cdnow[cdnow["frequency"] == 0]
    with pytest.raises(ModelError, match="ModifiedBetaGeoModel cannot be fitted: none of the"):
        ModifiedBetaGeoModel().fit(none, method="map")


def test_save_load_roundtrip_identical_predictions(mbgnbd_mle, tmp_path, registered):
    path = tmp_path / "mbgnbd.nc"
    mbgnbd_mle.save(path)
    loaded = ModifiedBetaGeoModel.load(path)
    assert type(loaded) is ModifiedBetaGeoModel and loaded.priors == mbgnbd_mle.priors
    np.testing.assert_array_equal(loaded.p_alive().values, mbgnbd_mle.p_alive().values)
    assert loaded.time_unit_ == "weeks"


# ---------------------------------------------------------------- NUTS (slow: ~30-60 s here)
@pytest.mark.slow
def test_short_nuts_fit_runs_near_mle(cdnow):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ModifiedBetaGeoModel().fit(
            cdnow, draws=200, tune=300, chains=2, seed=5, progressbar=False
        )
    post = m.idata_.posterior
    assert post.sizes["chain"] == 2 and post.sizes["draw"] == 200
    assert set(post.data_vars) == {"r", "alpha", "a", "b"}
    assert m.fit_info_["nuts_sampler"] == default_nuts_sampler()
    s = m.summary()
    print("\nMBG/NBD short NUTS on CDNOW:", m.fit_info_)
    print(s)
    for k, v in MBGNBD_MLE.items():
        assert abs(s.loc[k, "mean"] - v) < 4 * s.loc[k, "sd"], k
    e = m.expected_purchases(t=10, rfm=cdnow.iloc[:5])
    assert e.shape == (2, 200, 5) and np.all(np.isfinite(e.values))
    assert m.loo().n_customers == 2357


@pytest.mark.slow
def test_nuts_default_priors_match_mle(cdnow, mbgnbd_mle):
    """Full NUTS (4 x 1000) with the default priors: posterior near the MLE, sds near Laplace's.

    Measured (2-core shared machine): fit 93 s incl. compilation, 0 divergences, max r_hat 1.001,
    min bulk ESS 3,755; means within 0.35 sd of the MLE, sds within 5% of the Laplace sds.
    """
    m = ModifiedBetaGeoModel().fit(cdnow, seed=2026, progressbar=False)
    s = m.summary()
    print("\nMBG/NBD NUTS on CDNOW:", m.fit_info_)
    print(s)
    laplace = mbgnbd_mle.fit_info_["laplace_sd"]
    for k, v in MBGNBD_MLE.items():
        assert abs(s.loc[k, "mean"] - v) <= 0.5 * s.loc[k, "sd"], k
        assert s.loc[k, "sd"] == pytest.approx(laplace[k], rel=0.2), k
        assert s.loc[k, "r_hat"] <= 1.01, k
    assert m.fit_info_["divergences"] == 0
