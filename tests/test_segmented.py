"""Static covariates and partial pooling (clvbayes.models.segmented).

Reference values: CLVTools' apparel data (GPL-3, read from ../shared/data/apparel and
skipped when missing; never bundled), Pareto/NBD with and without covariates and the
Gamma-Gamma model.  Independent checks: the exact per-cell gradient against central
differences of the vectorised likelihood, the log-likelihood at CLVTools' published
estimates, parameter recovery and interval coverage on data simulated from the model, and
pooled vs unpooled segment estimates on simulated small segments.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clvbayes.data import DataError, DataWarning, summarize_transactions
from clvbayes.errors import FitWarning, ModelError
from clvbayes.math import bgnbd, gamma_gamma
from clvbayes.models import (
    BetaGeoModel,
    GammaGammaModel,
    ParetoNBDModel,
    ShiftedBetaGeometricModel,
)
from clvbayes.models.segmented import SegmentedModel
from clvbayes.predict import score_customers

# GPL-3 reference data, never bundled: $CLVBAYES_SHARED_DATA (set by .ci/run where the
# machine has it), else ../shared/data beside the repository
APPAREL = (
    Path(os.environ.get("CLVBAYES_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared"
         / "data") / "apparel"
)  # fmt: skip


@pytest.fixture(scope="module")
def apparel() -> pd.DataFrame:
    """CLVTools' set-up: weeks, estimation end 2006-12-31, same-day transactions merged."""
    if not (APPAREL / "transactions.csv").exists():
        pytest.skip("apparel data (../shared/data/apparel) not available")
    tx = pd.read_csv(APPAREL / "transactions.csv")
    cov = pd.read_csv(APPAREL / "static_covariates.csv").set_index("Id")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        rfm = summarize_transactions(
            tx[tx["Date"] <= "2006-12-31"], customer_id_col="Id", datetime_col="Date",
            monetary_value_col="Price", observation_end="2006-12-31", time_unit="weeks",
            duplicate_rows="keep",
        )  # fmt: skip
    assert int(rfm["frequency"].sum()) == 1866 - 600 and int((rfm["frequency"] == 0).sum()) == 213
    return rfm.join(cov)


def _quiet_fit(model, rfm, method, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(rfm, method=method, **kw)


# ---------------------------------------------------------------- reference values (apparel)
def test_pareto_nbd_without_covariates_reproduces_clvtools(apparel):
    m = _quiet_fit(ParetoNBDModel(), apparel, "mle")
    est = m.summary()["mean"]
    ref = {"r": 1.4490, "alpha": 48.6361, "s": 0.5613, "beta": 46.8844}
    for k, v in ref.items():  # alpha and beta lie on a flat ridge: 0.1%
        assert est[k] == pytest.approx(v, rel=1e-3), k
    assert m.fit_info_["log_likelihood"] == pytest.approx(-5848.10, abs=0.01)


def test_pareto_nbd_with_gender_and_channel_reproduces_clvtools(apparel):
    m = _quiet_fit(ParetoNBDModel(covariates=["Gender", "Channel"]), apparel, "mle")
    assert isinstance(m, SegmentedModel) and isinstance(m, ParetoNBDModel)
    assert m.fit_info_["log_likelihood"] == pytest.approx(-5821.0627, abs=1e-3)
    est = m.summary()["mean"]
    coef = {"dropout:Gender": -0.6430, "dropout:Channel": 0.7907,
            "purchase:Gender": 0.2859, "purchase:Channel": 0.6241}  # fmt: skip
    for k, v in coef.items():
        assert est[k] == pytest.approx(v, abs=3e-3), k
    for k, v in {"r": 1.8378, "alpha": 92.912, "s": 0.5920, "beta": 49.623}.items():
        assert est[k] == pytest.approx(v, rel=5e-3), k
    table = m.coefficients()
    row = table.set_index(["process", "term"]).loc[("purchase", "Channel")]
    assert row["parameter"] == "alpha" and row["rate_ratio"] == pytest.approx(np.exp(0.6241), 3e-3)


def test_loglik_at_clvtools_published_estimates(apparel):
    """Categorical 0/1 coding: internal parameters are the published ones, unstandardised."""
    rfm = apparel.assign(
        Gender=apparel["Gender"].astype(str), Channel=apparel["Channel"].astype(str)
    )
    m = ParetoNBDModel(covariates=["Channel", "Gender"])
    data = m._compress(rfm)
    assert [t.label for t in m.terms_] == ["Channel[1]", "Gender[1]"]
    pub = {"r": 1.8378433, "alpha": 92.9123516, "s": 0.5919985, "beta": 49.6227182,
           "purchase_effect_0": np.exp(0.6241241), "purchase_effect_1": np.exp(0.2858740),
           "dropout_effect_0": np.exp(0.7906790), "dropout_effect_1": np.exp(-0.6429934)}  # fmt: skip
    total = float(np.sum(data.counts * m._loglik(pub, data)))
    assert total == pytest.approx(-5821.0627090922, abs=1e-6)
    value, _ = m._loglik_sum_function(data)(*(pub[k] for k in m.param_names))
    assert value == pytest.approx(total, abs=1e-8)


def test_gamma_gamma_reproduces_clvtools(apparel):
    g = _quiet_fit(GammaGammaModel(), apparel, "mle")
    est = g.summary()["mean"]
    for k, v in {"p": 3.0990, "q": 5.6537, "gamma": 56.504}.items():
        assert est[k] == pytest.approx(v, rel=1e-3), k
    assert g.fit_info_["log_likelihood"] == pytest.approx(-1670.663, abs=1e-3)


def test_bgnbd_dropout_is_diagnosed_as_weak_and_the_prior_tames_it(apparel):
    """CLVTools runs a and b into the thousands here; clvbayes says the data barely identify
    them, and shows that the default priors narrow them."""
    with pytest.warns(FitWarning, match=r"the data barely identify \[.*'b'.*\]"):
        mle = BetaGeoModel(covariates=["Gender", "Channel"]).fit(apparel, method="mle")
    ident = mle.identification()
    assert ident.loc["b", "weak"] and ident.loc["b", "interval_factor"] > 10
    assert not ident.loc["r", "weak"] and ident.loc["r", "interval_factor"] < 2
    lap = _quiet_fit(BetaGeoModel(covariates=["Gender", "Channel"]), apparel, "laplace", seed=1)
    with_prior = lap.identification()
    assert with_prior.loc["b", "interval_factor"] < ident.loc["b", "interval_factor"] / 2
    assert 0 < with_prior.loc["b", "contraction"] < 1  # the prior still holds part of it


# ---------------------------------------------------------------- small simulated data
def _table(n=400, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["ads", "referral", "web"], n)
    score = rng.normal(3.0, 2.0, n).round(0)
    shift = np.where(channel == "referral", 0.6, 0.0) + 0.1 * (score - 3.0)
    sim = bgnbd.simulate(rng, 0.5, 8.0 * np.exp(-shift), 0.8, 3.0, rng.uniform(20, 52, n))
    rfm = pd.DataFrame(
        {"frequency": sim["frequency"], "recency": sim["recency"], "T": sim["T"]},
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"),
    )
    spend = gamma_gamma.simulate(rng, 4.0, 3.0, 20.0 * np.exp(0.3 * (channel == "web")),
                                 sim["frequency"])  # fmt: skip
    rfm["monetary_value"] = spend["monetary_value"]
    rfm["channel"], rfm["score"] = channel, score
    rfm["country"] = rng.choice(["DE", "FR", "JP"], n, p=[0.6, 0.3, 0.1])
    rfm.attrs["time_unit"] = "weeks"
    return rfm


@pytest.mark.parametrize(
    "make",
    [
        lambda: BetaGeoModel(covariates=["channel", "score"]),
        lambda: BetaGeoModel(covariates={"purchase": ["channel"]}, pooled_by="country"),
        lambda: GammaGammaModel(covariates=["channel"], pooled_by="country"),
        lambda: ParetoNBDModel(covariates={"dropout": ["score"]}),
    ],
    ids=["bg-cov", "bg-pooled", "gg-pooled", "pnbd-dropout"],
)
def test_exact_gradient_matches_central_differences(make):
    rfm = _table()
    model = make()
    data = model._compress(rfm)
    f = model._loglik_sum_function(data)
    assert f is not None
    rng = np.random.default_rng(3)
    x = np.array([v * rng.uniform(0.7, 1.3) for v in model._initial_point(data).values()])
    weights = model._likelihood_weights(data)

    def total(v):
        return float(np.sum(weights * model._loglik(dict(zip(model.param_names, v)), data)))

    value, grad = f(*x)
    assert value == pytest.approx(total(x), rel=1e-10)
    for j in range(x.size):
        h = 1e-6 * x[j]
        up, down = x.copy(), x.copy()
        up[j] += h
        down[j] -= h
        fd = (total(up) - total(down)) / (2 * h)
        assert grad[j] == pytest.approx(fd, rel=1e-4, abs=1e-6), model.param_names[j]


def test_summary_reports_coefficients_on_the_original_scale():
    rfm = _table()
    a = _quiet_fit(BetaGeoModel(covariates=["score"]), rfm, "map")
    # the same covariate in other units: coefficient scales, baseline parameters do not move
    b = _quiet_fit(BetaGeoModel(covariates=["score"]), rfm.assign(score=rfm["score"] * 10), "map")
    sa, sb = a.summary()["mean"], b.summary()["mean"]
    assert sb["purchase:score"] == pytest.approx(sa["purchase:score"] / 10, rel=1e-3)
    assert sb["alpha"] == pytest.approx(sa["alpha"], rel=1e-3)
    table = a.coefficients()
    assert list(table["process"]) == ["purchase", "dropout"]
    assert table["reference"].isna().all()  # numeric: no reference level


def test_categorical_reference_level_is_stated_and_can_be_chosen():
    rfm = _table()
    m = _quiet_fit(BetaGeoModel(covariates=["channel"]), rfm, "map")
    assert [t.label for t in m.terms_] == ["channel[referral]", "channel[web]"]
    assert set(m.coefficients()["reference"]) == {"ads"}
    m2 = _quiet_fit(BetaGeoModel(covariates=["channel"], reference={"channel": "web"}), rfm, "mle")
    assert [t.label for t in m2.terms_] == ["channel[ads]", "channel[referral]"]
    m = _quiet_fit(BetaGeoModel(covariates=["channel"]), rfm, "mle")
    # the same model in another coding: the same maximum likelihood
    assert m2.fit_info_["log_likelihood"] == pytest.approx(m.fit_info_["log_likelihood"], abs=1e-4)


def test_predictions_differ_by_profile_and_new_customers_work():
    rfm = _table()
    m = _quiet_fit(BetaGeoModel(covariates=["channel"], pooled_by="country"), rfm, "laplace",
                   draws=200, seed=1)  # fmt: skip
    ads = m.profile(channel="ads", country="DE").expected_purchases_new(52.0)
    ref = m.profile(channel="referral", country="DE").expected_purchases_new(52.0)
    assert float(ref.mean()) > float(ads.mean())  # referral buys more (simulated +0.6)
    with pytest.raises(
        ModelError, match=r"population quantity.*model\.profile\(channel=\.\.\., country=\.\.\.\)"
    ):
        m.expected_purchases_new(52.0)
    new = pd.DataFrame(
        {"frequency": [0, 2], "recency": [0.0, 3.0], "T": [1.0, 5.0], "channel": ["web", "ads"],
         "country": ["DE", "BR"]},
        index=pd.Index(["n1", "n2"], name="customer_id"),
    )  # fmt: skip
    new.attrs["time_unit"] = "weeks"
    with pytest.warns(
        DataWarning, match=r"segment\(s\) \['BR'\] of 'country' were not in the training"
    ):
        res = score_customers(new, m, horizon=26.0, seed=2, n_outcome_samples=200)
    c = res.customers
    assert (
        np.isfinite(c[["purchases_mean", "purchases_ci_lower", "purchases_pi_upper"]]).all().all()
    )
    assert (c["purchases_ci_upper"] > c["purchases_ci_lower"]).all()
    p = m.p_alive(new.iloc[:1])
    assert p.dims[-1] == "customer_id" and list(p["customer_id"].values) == ["n1"]


def test_segment_comparison_puts_raw_beside_pooled():
    """A tiny segment that buys twice as often: its raw ratio is noisy, its pooled one shrinks
    towards the base; big segments barely move."""
    rng = np.random.default_rng(21)
    frames = []
    for seg, n, alpha in (("A", 900, 6.0), ("B", 700, 6.0), ("tiny", 30, 3.0)):
        sim = bgnbd.simulate(rng, 0.6, alpha, 0.8, 2.5, rng.uniform(30, 52, n))
        frames.append(pd.DataFrame({"frequency": sim["frequency"], "recency": sim["recency"],
                                    "T": sim["T"], "country": seg}))  # fmt: skip
    rfm = pd.concat(frames, ignore_index=True)
    rfm.attrs["time_unit"] = "weeks"
    m = _quiet_fit(BetaGeoModel(pooled_by="country"), rfm, "laplace", draws=400, seed=1)
    table = m.segment_comparison(rfm)
    assert list(table.index) == ["A", "B", "tiny"]
    assert table["n_customers"].tolist() == [900, 700, 30]
    raw, pooled = np.log(table["purchase_raw"]), np.log(table["purchase_pooled"])
    assert raw["tiny"] > 0.2 and 0 < pooled["tiny"] < raw["tiny"]  # shrunk, same direction
    assert np.allclose(pooled[["A", "B"]], raw[["A", "B"]], atol=0.05)
    assert (table["purchase_pooled_lower"] < table["purchase_pooled"]).all()
    pd.testing.assert_frame_equal(m.segment_comparison(), table)  # from the training data


def test_per_customer_methods_follow_each_customers_cell():
    rfm = _table()
    m = _quiet_fit(BetaGeoModel(covariates=["channel"]), rfm, "map")
    both = m.expected_purchases(10.0, rfm).values.ravel()
    for level in ("ads", "web"):
        rows = np.flatnonzero(rfm["channel"].to_numpy() == level)
        alone = m.profile(channel=level).expected_purchases(10.0, rfm.iloc[rows]).values.ravel()
        np.testing.assert_allclose(both[rows], alone, rtol=1e-12)
    assert list(m.p_alive(None)["customer_id"].values) == list(rfm.index)


# ---------------------------------------------------------------- errors
def test_missing_covariate_column_lists_the_usable_ones():
    rfm = _table()
    with pytest.raises(
        DataError,
        match=r"lacks the column\(s\) \['chanel'\].*could serve: \['channel', 'score', 'country'\]",
    ):
        BetaGeoModel(covariates=["chanel"]).fit(rfm, method="map")


def test_missing_covariate_values_name_the_customers():
    rfm = _table()
    rfm.loc[["c3", "c7"], "channel"] = None
    with pytest.raises(
        DataError, match=r"'channel' is missing for 2 customer\(s\) \(ids \['c3', 'c7'\]\)"
    ):
        BetaGeoModel(covariates=["channel"]).fit(rfm, method="map")


def test_unseen_level_is_refused_with_the_fitted_levels():
    rfm = _table()
    m = _quiet_fit(BetaGeoModel(covariates=["channel"]), rfm, "map")
    bad = rfm.iloc[:3].assign(channel=["tv", "ads", "web"])
    with pytest.raises(
        DataError, match=r"level\(s\) \['tv'\].*fitted levels: \['ads', 'referral', 'web'\]"
    ):
        m.p_alive(bad)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.assign(score=1.0), r"'score' takes one value \(1\) for every customer"),
        (lambda t: t.assign(channel="web"), r"'channel' has one level \('web'\)"),
        (
            lambda t: t.assign(score=t["score"].where(t.index != "c5", np.inf)),
            r"'score' has 1 non-numeric or infinite value\(s\) \(customer ids \['c5'\]\)",
        ),
    ],
    ids=["constant-numeric", "one-level", "infinite"],
)
def test_uninformative_or_bad_covariates_are_refused(change, message):
    with pytest.raises(DataError, match=message):
        BetaGeoModel(covariates=["channel", "score"]).fit(change(_table()), method="map")


def test_bad_specifications_are_refused():
    with pytest.raises(ValueError, match=r"unknown process\(es\) \['spend'\].*purchase, dropout"):
        BetaGeoModel(covariates={"spend": ["channel"]})
    with pytest.raises(DataError, match=r"Reference level 'tv' of covariate 'channel' is not"):
        BetaGeoModel(covariates=["channel"], reference={"channel": "tv"}).fit(
            _table(), method="map"
        )
    m = _quiet_fit(BetaGeoModel(covariates=["channel"]), _table(), "map")
    with pytest.raises(
        ValueError, match=r"profile\(\) needs exactly the values of \['channel'\]; missing"
    ):
        m.profile()
    with pytest.raises(ValueError, match=r"unknown prior name\(s\) \['gamma'\]"):
        BetaGeoModel(covariates=["channel"], priors={"gamma": GammaGammaModel.default_priors["p"]})


def test_retention_family_takes_covariates():
    rng = np.random.default_rng(5)
    n = 600
    plan = rng.choice(["basic", "premium"], n)
    theta = rng.beta(0.8, 2.5 * np.exp(-0.7 * (plan == "basic")))  # basic churns more
    life = rng.geometric(theta) - 1
    cap = rng.integers(1, 13, n)
    subs = pd.DataFrame({"periods": np.minimum(life, cap), "churned": (life < cap).astype(int),
                         "plan": plan})  # fmt: skip
    m = _quiet_fit(ShiftedBetaGeometricModel(covariates=["plan"], reference={"plan": "premium"}),
                   subs, "laplace", seed=1, draws=300)  # fmt: skip
    coef = m.summary().loc["churn:plan[basic]"]
    assert coef["lower_0.9"] < 0.7 < coef["upper_0.9"] and coef["lower_0.9"] > 0
    hazard = m.churn_hazard(subs[subs["churned"] == 0])
    assert np.isfinite(hazard.values).all()
    from clvbayes.predict.retention import score_subscribers

    active = subs[subs["churned"] == 0]
    res = score_subscribers(subs, m, horizon=6, by="plan", seed=1)
    risk = res.subscribers["churn_risk_mean"]
    np.testing.assert_allclose(risk, hazard.mean(("chain", "draw")).values, rtol=1e-12)
    basic = (active["plan"] == "basic").to_numpy()
    assert risk[basic].mean() > risk[~basic].mean()  # basic churns more, per subscriber
    assert len(res.cohorts["plan"]) > 0


# ---------------------------------------------------------------- statistical checks (slow)
def _simulate_segments(seed, sizes, coef=(0.5, -0.4, 0.3)):
    """BG/NBD + GG with a channel effect on purchase, dropout and spend, per country."""
    rng = np.random.default_rng(seed)
    frames = []
    for country, n in sizes.items():
        channel = rng.choice(["a", "b"], n)
        z = (channel == "b").astype(float)
        T = rng.uniform(30, 52, n)
        sim = bgnbd.simulate(rng, 0.6, 6.0 * np.exp(-coef[0] * z), 0.8,
                             2.5 * np.exp(-coef[1] * z), T, t_holdout=39.0)  # fmt: skip
        spend = gamma_gamma.simulate(rng, 5.0, 4.0, 15.0 * np.exp(coef[2] * z), sim["frequency"])
        frames.append(pd.DataFrame({
            "frequency": sim["frequency"], "recency": sim["recency"], "T": sim["T"],
            "monetary_value": spend["monetary_value"], "channel": channel, "country": country,
            "holdout": sim["frequency_holdout"],
        }))  # fmt: skip
    rfm = pd.concat(frames, ignore_index=True)
    rfm.index = pd.Index([f"c{i}" for i in range(len(rfm))], name="customer_id")
    rfm.attrs["time_unit"] = "weeks"
    return rfm


@pytest.mark.slow
def test_coefficients_are_recovered_on_simulated_data():
    rfm = _simulate_segments(11, {"X": 6000})
    bg = _quiet_fit(BetaGeoModel(covariates=["channel"]), rfm, "laplace", seed=1)
    gg = _quiet_fit(GammaGammaModel(covariates=["channel"]), rfm, "laplace", seed=1)
    s = pd.concat([bg.summary(), gg.summary()])
    for name, true in {"purchase:channel[b]": 0.5, "dropout:channel[b]": -0.4,
                       "spend:channel[b]": 0.3}.items():  # fmt: skip
        lo, hi = s.loc[name, "lower_0.9"], s.loc[name, "upper_0.9"]
        print(f"\n{name}: true {true}, estimate {s.loc[name, 'mean']:.3f} [{lo:.3f}, {hi:.3f}]")
        assert lo - 0.05 < true < hi + 0.05, name
        assert abs(s.loc[name, "mean"] - true) < 0.15, name


@pytest.mark.slow
def test_predictive_intervals_are_calibrated_by_segment():
    rfm = _simulate_segments(12, {"DE": 2500, "FR": 1500})
    bg = _quiet_fit(
        BetaGeoModel(covariates=["channel"], pooled_by="country"), rfm, "laplace", seed=2
    )
    res = score_customers(rfm, bg, horizon=39.0, seed=3, by=["country", "channel"],
                          observed={"purchases": rfm["holdout"].to_numpy()})  # fmt: skip
    pit = res.customers["purchases_pit"]
    for col in ("country", "channel"):
        for level, idx in rfm.groupby(col).groups.items():
            central = float(((pit[idx] > 0.05) & (pit[idx] < 0.95)).mean())
            se = np.sqrt(0.09 / len(idx))
            print(f"\n{col}={level}: randomised-PIT 90% coverage {central:.3f} (n={len(idx)})")
            assert abs(central - 0.90) < 3.5 * se + 0.01, (col, level)


@pytest.mark.slow
def test_pooling_beats_separate_fits_on_small_segments():
    """Segment CLV driver: E[purchases of a new customer in 52 weeks], per segment.

    Twenty segments whose purchase scale differs (log alpha_s ~ N(log 6, 0.3)); four have 400
    customers, sixteen only 20.  Pooled estimates borrow strength from the base; separate
    fits of the small segments scatter."""
    rng = np.random.default_rng(13)
    sizes = [400] * 4 + [20] * 16
    frames, truth = [], []
    for i, n in enumerate(sizes):
        alpha = 6.0 * np.exp(rng.normal(0, 0.3))
        sim = bgnbd.simulate(rng, 0.6, alpha, 0.8, 2.5, rng.uniform(30, 52, n))
        truth.append(float(bgnbd.expected_purchases_new(0.6, alpha, 0.8, 2.5, 52.0)))
        frames.append(pd.DataFrame({"frequency": sim["frequency"], "recency": sim["recency"],
                                    "T": sim["T"], "country": f"s{i:02d}"}))  # fmt: skip
    rfm = pd.concat(frames, ignore_index=True)
    rfm.attrs["time_unit"] = "weeks"
    pooled = _quiet_fit(BetaGeoModel(pooled_by="country"), rfm, "map")
    err_pooled, err_alone = [], []
    for i, true in enumerate(truth):
        seg = f"s{i:02d}"
        est = float(pooled.profile(country=seg).expected_purchases_new(52.0).mean())
        alone = _quiet_fit(BetaGeoModel(), rfm[rfm["country"] == seg], "map")
        err_pooled.append((est - true) ** 2)
        err_alone.append((float(alone.expected_purchases_new(52.0).mean()) - true) ** 2)
    small, large = slice(4, None), slice(0, 4)
    print(f"\nMSE small segments: pooled {np.mean(err_pooled[small]):.3f}, separate "
          f"{np.mean(err_alone[small]):.3f}; large: {np.mean(err_pooled[large]):.3f} vs "
          f"{np.mean(err_alone[large]):.3f}")  # fmt: skip
    assert np.mean(err_pooled[small]) < 0.5 * np.mean(err_alone[small])
    assert np.mean(err_pooled[large]) < 2 * np.mean(err_alone[large]) + 0.01  # barely moved
    table = pooled.segment_table()
    assert list(table.index) == [f"s{i:02d}" for i in range(20)]
    assert (table["purchase_lower"].isna()).all()  # MAP: a point, no interval


def test_symbolic_likelihood_equals_numpy():
    """The PyTensor graph (nutpie/numpyro, and PyMC beyond MAX_EXACT_CELLS) is the same
    likelihood as the NumPy one."""
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    rfm = _table(300)
    m = BetaGeoModel(covariates=["channel", "score"], pooled_by="country")
    data = m._compress(rfm)
    rng = np.random.default_rng(2)
    point = {k: v * rng.uniform(0.8, 1.2) for k, v in m._initial_point(data).items()}
    view = {c: pt.as_tensor(np.asarray(data[c], dtype=float)) for c in data.columns}
    symbolic = m._loglik({k: pt.as_tensor(v) for k, v in point.items()}, view,
                         xp=pytensor_namespace()).eval()  # fmt: skip
    np.testing.assert_allclose(symbolic, m._loglik(point, data), rtol=1e-10)
