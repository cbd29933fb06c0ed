"""Predictions: CLV against brute force, discounting, both interval kinds, aggregates, coverage."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from clvbayes.math import bgnbd
from clvbayes.math.discount import discounted_increments, schedule
from clvbayes.predict import score_customers, summarize_draws
from clvbayes.units import annual_to_period_rate as rate_per_period


def _one_customer(x, tx, T, z):
    df = pd.DataFrame(
        {"frequency": [x], "recency": [tx], "T": [T], "monetary_value": [z]},
        index=pd.Index(["c1"], name="customer_id"),
    )
    df.attrs["time_unit"] = "weeks"
    return df


def _expected_by_quadrature(r, alpha, a, b, x, tx, T, t):
    """E[purchases in (T, T+t]] by integrating over the dropout probability (independent of hyp2f1)."""
    beta_ = alpha + T
    m = r + x
    pa = float(bgnbd.p_alive(r, alpha, a, b, x, tx, T))

    def integrand(p):
        return stats.beta.pdf(p, a, b + x) * -np.expm1(-m * np.log1p(p * t / beta_)) / p

    val, _ = integrate.quad(integrand, 0, 1, limit=200, epsabs=1e-13, epsrel=1e-12)
    return pa * val


# ---------------------------------------------------------------- discounting
def test_annual_rate_converts_exactly():
    assert rate_per_period(0.10, "weeks") == pytest.approx(1.10 ** (7 / 365.25) - 1, rel=1e-14)
    assert rate_per_period(0.10, "days", period=365.25) == pytest.approx(0.10, rel=1e-14)
    with pytest.raises(ValueError, match=r"Unknown time_unit .months."):
        rate_per_period(0.1, "months")


def test_schedule_handles_partial_last_period():
    ends, factors = schedule(10.5, 0.01, period=2.0)
    np.testing.assert_allclose(ends, [2, 4, 6, 8, 10, 10.5])
    np.testing.assert_allclose(factors, 1.01 ** -np.arange(1, 7))
    with pytest.raises(ValueError, match="horizon must be a positive"):
        schedule(0, 0.1)


@pytest.mark.parametrize("horizon", [52.0, 520.0, 5000.0])
@pytest.mark.parametrize(
    "params", [(0.2426, 4.4136, 0.7929, 2.4259), (2.0, 50.0, 1.0, 3.0), (0.5, 1.0, 3.0, 0.5)]
)
def test_discounted_sum_equals_exact_period_sum(horizon, params):
    r, alpha, a, b = params
    x = np.array([0.0, 2.0, 26.0, 300.0])
    tx = np.array([0.0, 30.43, 30.857, 38.0])
    T = np.array([38.86, 38.86, 31.0, 39.0])
    ends, factors = schedule(horizon, 0.002)
    exact = np.array(
        [np.sum(factors * np.diff(bgnbd.expected_purchases(r, alpha, a, b, xi, ti, Ti, ends), prepend=0.0))
         for xi, ti, Ti in zip(x, tx, T, strict=True)]
    )  # fmt: skip
    got = discounted_increments(
        lambda t: bgnbd.expected_purchases(r, alpha, a, b, x[:, None], tx[:, None], T[:, None], t),
        scale=alpha + T, ends=ends, factors=factors,
    )  # fmt: skip
    np.testing.assert_allclose(got, exact, rtol=1e-9)


def test_clv_at_mle_equals_brute_force_sum(bgnbd_mle, gg_mle):
    """CLV of one customer = margin x E[spend] x sum_k d^k E[purchases in week k], each term by quadrature."""
    x, tx, T, z = 2, 30.43, 38.86, 22.35
    horizon, weekly_rate, margin = 52, 0.0015, 0.3
    res = score_customers(
        _one_customer(x, tx, T, z), bgnbd_mle, gg_mle,
        horizon=horizon, discount_rate=weekly_rate, margin=margin,
    )  # fmt: skip
    bg = {k: float(v) for k, v in bgnbd_mle.summary()["mean"].items()}
    gg = {k: float(v) for k, v in gg_mle.summary()["mean"].items()}
    spend = gg["p"] * (gg["gamma"] + x * z) / (gg["p"] * x + gg["q"] - 1)
    cum = [0.0] + [
        _expected_by_quadrature(*bg.values(), x, tx, T, k) for k in range(1, horizon + 1)
    ]
    brute = (
        margin
        * spend
        * sum((cum[k] - cum[k - 1]) / (1 + weekly_rate) ** k for k in range(1, horizon + 1))
    )
    assert res.customers["clv_mean"].iloc[0] == pytest.approx(brute, rel=1e-8)
    assert res.customers["purchases_mean"].iloc[0] == pytest.approx(cum[-1], rel=1e-8)
    assert res.customers["spend_mean"].iloc[0] == pytest.approx(spend, rel=1e-12)


# ---------------------------------------------------------------- tables and intervals
def test_summarize_draws_tidy_table(bgnbd_nuts_small, cdnow):
    table = summarize_draws(bgnbd_nuts_small.p_alive(cdnow.iloc[:4]), prob=0.8)
    assert list(table.columns) == ["mean", "sd", "lower", "upper"]
    assert list(table.index) == list(cdnow.index[:4])
    v = bgnbd_nuts_small.p_alive(cdnow.iloc[:4]).values.reshape(-1, 4)
    np.testing.assert_allclose(table["lower"], np.quantile(v, 0.1, axis=0))
    np.testing.assert_allclose(table["upper"], np.quantile(v, 0.9, axis=0))


@pytest.fixture(scope="module")
def scored(cdnow, bgnbd_nuts_small, gg_nuts_small):
    table = cdnow.copy()
    table["segment"] = np.where(table["frequency"] > 2, "frequent", "occasional")
    return score_customers(
        table, bgnbd_nuts_small, gg_nuts_small, horizon=39, annual_discount_rate=0.1,
        margin=0.3, by="segment", seed=5,
        observed={"purchases": table["frequency_holdout"], "revenue": table["total_value_holdout"]},
    )  # fmt: skip


def test_customer_table_columns_and_consistency(scored, cdnow, bgnbd_nuts_small):
    c = scored.customers
    assert list(c.index) == list(cdnow.index)
    for q in ("purchases", "spend", "revenue", "clv"):
        for suffix in ("mean", "sd", "ci_lower", "ci_upper", "pi_lower", "pi_upper"):
            assert f"{q}_{suffix}" in c.columns
    assert "p_alive_ci_lower" in c.columns and "p_alive_pi_lower" not in c.columns
    np.testing.assert_allclose(
        c["p_alive_mean"], bgnbd_nuts_small.p_alive().mean(("chain", "draw")).values, rtol=1e-12
    )
    assert (c["purchases_ci_lower"] <= c["purchases_mean"]).all()
    assert (c["purchases_mean"] <= c["purchases_ci_upper"]).all()
    # the predictive interval of the outcome contains the credible interval of its expectation
    assert (c["purchases_pi_upper"] >= c["purchases_ci_upper"] - 1e-9).mean() > 0.99
    assert np.all(np.mod(c["purchases_pi_upper"], 1) == 0)
    assert scored.settings["discount_rate_per_period"] == pytest.approx(
        rate_per_period(0.1, "weeks")
    )


def test_identical_histories_get_identical_rows(scored, cdnow):
    keys = ["frequency", "recency", "T", "monetary_value"]
    dup = cdnow.duplicated(keys, keep=False)
    grouped = scored.customers[dup].groupby([cdnow.loc[dup, k] for k in keys])
    assert grouped["clv_pi_upper"].nunique().max() == 1


def test_segment_totals_come_from_per_draw_sums(scored):
    c = scored.customers
    total = scored.segments["all"].loc["all"]
    assert total["n_customers"] == len(c)
    assert total["purchases_total_mean"] == pytest.approx(c["purchases_mean"].sum(), rel=1e-9)
    # adding up customers' interval bounds is wrong: the expectations of different customers are
    # not perfectly correlated, so the summed bounds are too wide (here by ~30%) ...
    assert c["purchases_ci_upper"].sum() - c["purchases_ci_lower"].sum() > 1.15 * (
        total["purchases_total_ci_upper"] - total["purchases_total_ci_lower"]
    )
    # ... and for outcomes, which are nearly independent across customers, grossly too wide
    assert c["purchases_pi_upper"].sum() > total["purchases_total_pi_upper"] * 1.5
    seg = scored.segments["segment"]
    assert seg["n_customers"].sum() == len(c)
    assert seg["clv_total_mean"].sum() == pytest.approx(total["clv_total_mean"], rel=1e-9)
    assert (seg["clv_total_pi_lower"] <= seg["clv_total_mean"]).all()


def test_simulated_outcomes_agree_with_expectations(scored):
    """The mean of the predictive total (simulation) matches the expected total (closed form)."""
    total = scored.segments["all"].loc["all"]
    for q in ("purchases", "revenue", "clv", "alive"):
        assert (
            total[f"{q}_total_pi_lower"] < total[f"{q}_total_mean"] < total[f"{q}_total_pi_upper"]
        )


def test_same_seed_same_table_and_chunking_does_not_change_expectations(cdnow, bgnbd_mle, gg_mle):
    kw = dict(horizon=26, discount_rate=0.001, seed=9)
    a = score_customers(cdnow, bgnbd_mle, gg_mle, **kw).customers
    b = score_customers(cdnow, bgnbd_mle, gg_mle, **kw).customers
    pd.testing.assert_frame_equal(a, b)
    c = score_customers(cdnow, bgnbd_mle, gg_mle, max_chunk_elements=50, **kw).customers
    ci = [col for col in a.columns if "_pi_" not in col]
    pd.testing.assert_frame_equal(a[ci], c[ci], rtol=1e-12)


def test_time_unit_mismatch_is_an_error(cdnow, bgnbd_mle):
    days = cdnow.copy()
    days.attrs = {**cdnow.attrs, "time_unit": "days"}
    with pytest.raises(
        ValueError, match="customer table is in days but the model was fitted in weeks"
    ):
        score_customers(days, bgnbd_mle, horizon=10)


def test_cdnow_holdout_coverage_report(scored, cdnow):
    """Reported (not asserted tightly): coverage on the real holdout and the total next to 1,882."""
    c = scored.customers
    total = scored.segments["all"].loc["all"]
    cover = c["purchases_pi_covered"].mean()
    pit = c["purchases_pit"]
    central = ((pit > 0.05) & (pit < 0.95)).mean()
    print(
        f"\nCDNOW holdout (39 weeks): 90% predictive interval covers {cover:.1%} of customers "
        f"(randomised-PIT coverage {central:.1%}); total purchases predicted "
        f"{total['purchases_total_mean']:.0f} [90% PI {total['purchases_total_pi_lower']:.0f}, "
        f"{total['purchases_total_pi_upper']:.0f}] vs actual {cdnow['frequency_holdout'].sum()}"
    )
    assert cover > 0.85


# ---------------------------------------------------------------- statistical acceptance (slow)
def _simulate_dataset(rng, params_bg, params_gg, n=2000, t_cal=52.0, t_hold=39.0):
    from clvbayes.math import gamma_gamma

    T = rng.uniform(t_cal / 3, t_cal, size=n)
    sim = bgnbd.simulate(rng, *params_bg, T=T, t_holdout=t_hold)
    spend = gamma_gamma.simulate(rng, *params_gg, frequency=sim["frequency"])
    rfm = pd.DataFrame(
        {"frequency": sim["frequency"], "recency": sim["recency"], "T": sim["T"],
         "monetary_value": spend["monetary_value"]},
        index=pd.Index([f"c{i:05d}" for i in range(n)], name="customer_id"),
    )  # fmt: skip
    rfm.attrs["time_unit"] = "weeks"
    # holdout outcomes drawn from the same customers' latent state
    hold_n = sim["frequency_holdout"]
    values = gamma_gamma.simulate_transaction_values(rng, params_gg[0], spend["nu"], hold_n)
    owner = np.repeat(np.arange(n), hold_n)
    revenue = np.bincount(owner, values, minlength=n)
    return rfm, hold_n, revenue


@pytest.mark.slow
@pytest.mark.parametrize(
    "params_bg, params_gg",
    [((0.25, 4.0, 0.8, 2.5), (6.0, 4.0, 15.0)), ((1.0, 10.0, 0.5, 5.0), (2.0, 3.0, 50.0)),
     ((0.5, 2.0, 2.0, 1.0), (10.0, 5.0, 8.0))],
)  # fmt: skip
def test_predictive_intervals_are_calibrated_on_simulated_data(params_bg, params_gg):
    from clvbayes.models import BetaGeoModel, GammaGammaModel

    rng = np.random.default_rng(int(sum(params_bg) * 1000))
    rfm, hold_n, revenue = _simulate_dataset(rng, params_bg, params_gg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoModel().fit(rfm, draws=500, tune=500, chains=2, seed=1, progressbar=False)
        gg = GammaGammaModel().fit(rfm, draws=500, tune=500, chains=2, seed=2, progressbar=False)
    res = score_customers(
        rfm, bg, gg, horizon=39, seed=3, observed={"purchases": hold_n, "revenue": revenue}
    ).customers
    for q in ("purchases", "revenue"):
        pit = res[f"{q}_pit"]
        central = ((pit > 0.05) & (pit < 0.95)).mean()
        covered = res[f"{q}_pi_covered"].mean()
        print(
            f"\n{params_bg} {params_gg} {q}: randomised coverage {central:.3f}, interval coverage {covered:.3f}"
        )
        assert 0.87 <= central <= 0.93, q
        assert covered >= 0.87, q


@pytest.mark.slow
def test_parameter_credible_intervals_cover_truth_at_nominal_rate():
    """Small simulation-based calibration study: 90% intervals of r, alpha, a, b, p, q, gamma."""
    from clvbayes.models import BetaGeoModel, GammaGammaModel

    truth_bg = {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}
    truth_gg = {"p": 6.0, "q": 4.0, "gamma": 15.0}
    hits = []
    for rep in range(20):
        rng = np.random.default_rng(1000 + rep)
        rfm, _, _ = _simulate_dataset(
            rng, tuple(truth_bg.values()), tuple(truth_gg.values()), n=1000
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bg = BetaGeoModel().fit(rfm, draws=400, tune=400, chains=2, seed=rep, progressbar=False)
            gg = GammaGammaModel().fit(
                rfm, draws=400, tune=400, chains=2, seed=rep, progressbar=False
            )
        for model, truth in ((bg, truth_bg), (gg, truth_gg)):
            s = model.summary(prob=0.9)
            hits += [s.loc[k, "lower_0.9"] <= v <= s.loc[k, "upper_0.9"] for k, v in truth.items()]
    rate = float(np.mean(hits))
    print(
        f"\nSBC: 90% credible intervals cover the true parameter in {rate:.1%} of {len(hits)} cases"
    )
    assert 0.82 <= rate <= 0.97


def test_expectations_only_pass_matches_full_pass(cdnow, bgnbd_mle, gg_mle):
    kw = dict(horizon=26, discount_rate=0.001, seed=9, by=None)
    full = score_customers(cdnow, bgnbd_mle, gg_mle, **kw)
    quick = score_customers(cdnow, bgnbd_mle, gg_mle, outcomes=False, **kw)
    assert not any("_pi_" in c for c in quick.customers.columns)
    pd.testing.assert_frame_equal(quick.customers, full.customers[quick.customers.columns])
    assert "clv_total_pi_lower" not in quick.segments["all"].columns
    with pytest.raises(ValueError, match="observed outcomes need outcomes=True"):
        score_customers(
            cdnow,
            bgnbd_mle,
            outcomes=False,
            observed={"purchases": cdnow["frequency_holdout"]},
            **kw,
        )


# ---------------------------------------------------------------- engine at scale
@pytest.mark.parametrize("kind", ["ci", "pi"])
@pytest.mark.parametrize("prob", [0.9, 0.5, 0.98, 0.1])
def test_fast_draw_summaries_equal_numpy_quantiles(kind, prob):
    """The compiled tail selection returns numpy's quantiles exactly, also with ties, a mass
    at zero (outcomes), skew, non-finite values and few draws."""
    from clvbayes.predict import draw_stats

    rng = np.random.default_rng(int(prob * 100))
    cases = {
        "normal": rng.standard_normal((1000, 300)),
        "counts": rng.poisson(0.7, (1000, 300)).astype(float),
        "zero_mass": np.where(rng.random((1000, 300)) < 0.6, 0.0, rng.lognormal(3, 2, (1000, 300))),
        "skewed": rng.lognormal(0, 3, (700, 400)),
        "few_draws": rng.standard_normal((70, 2000)),
    }
    cases["non_finite"] = cases["normal"].copy()
    cases["non_finite"][3, 5] = np.nan
    cases["non_finite"][:, 7] = np.inf
    method = "linear" if kind == "ci" else "inverted_cdf"
    lo, hi = (1 - prob) / 2, (1 + prob) / 2
    for name, x in cases.items():
        with np.errstate(invalid="ignore"):  # inf - inf in numpy's interpolation
            got = draw_stats(x, prob, axis=0, kind=kind)
            want = np.quantile(x, [lo, hi], axis=0, method=method)
            np.testing.assert_allclose(got["lower"], want[0], rtol=1e-15, err_msg=name)
            np.testing.assert_allclose(got["upper"], want[1], rtol=1e-15, err_msg=name)
            np.testing.assert_allclose(got["mean"], x.mean(axis=0), rtol=1e-12, err_msg=name)
            np.testing.assert_allclose(got["sd"], x.std(axis=0, ddof=1), rtol=1e-10, err_msg=name)


def test_order_statistics_equal_a_sort_on_awkward_rows():
    """The compiled selection behind the intervals (no np.partition / np.sort, which are slow
    to compile) returns a sort's order statistics on ties, sorted, reversed and constant
    rows, infinities, and rows that defeat the threshold shortcut (the full-selection path)."""
    from clvbayes.predict import draw_stats
    from clvbayes.predict.summary import _select_many

    rng = np.random.default_rng(7)
    n = 1000
    rows = {
        "ties": rng.integers(0, 3, n).astype(float),
        "sorted": np.arange(n, dtype=float),
        "reversed": np.arange(n, dtype=float)[::-1].copy(),
        "constant": np.full(n, 2.5),
        "infinities": np.r_[np.full(10, -np.inf), rng.standard_normal(n - 20), np.full(10, np.inf)],
        "two_points": np.r_[np.zeros(n // 2), np.full(n // 2, 1e9)],
    }
    for name, row in rows.items():
        for ks in ([0], [n - 1], [49, 50], [949, 950], [3, 4, 500, 998, 999]):
            ks = np.array(ks, dtype=np.int64)
            out = np.empty(ks.size)
            _select_many(rng.permutation(row), ks, 0, out)
            np.testing.assert_array_equal(out, np.sort(row)[ks], err_msg=f"{name} {ks}")
    two_points = np.tile(rows["two_points"], (80, 1)).T  # 1000 draws x 80 columns
    two_points = rng.permuted(two_points, axis=0)
    for kind, method in (("ci", "linear"), ("pi", "inverted_cdf")):
        got = draw_stats(two_points, 0.9, axis=0, kind=kind)
        want = np.quantile(two_points, [0.05, 0.95], axis=0, method=method)
        np.testing.assert_array_equal(got["lower"], want[0])
        np.testing.assert_array_equal(got["upper"], want[1])


def test_results_do_not_depend_on_threads(cdnow, bgnbd_mle, gg_mle):
    kw = dict(horizon=26, annual_discount_rate=0.1, seed=4, n_outcome_samples=300, by="segment")
    cdnow = cdnow.assign(segment=np.where(cdnow["frequency"] > 2, "loyal", "other"))
    a = score_customers(cdnow, bgnbd_mle, gg_mle, n_jobs=1, max_chunk_elements=60_000, **kw)
    b = score_customers(cdnow, bgnbd_mle, gg_mle, n_jobs=2, max_chunk_elements=60_000, **kw)
    pd.testing.assert_frame_equal(a.customers, b.customers)
    for g in a.segments:
        pd.testing.assert_frame_equal(a.segments[g], b.segments[g])


def test_groupings_share_one_simulated_future(cdnow, bgnbd_mle, gg_mle):
    """Small segments' totals of every grouping come from the same simulated outcomes: the
    same partition under two names gets identical predictive intervals."""
    kw = dict(horizon=26, seed=9, n_outcome_samples=200, max_chunk_elements=50_000)
    cdnow = cdnow.iloc[:900]  # segments below EXACT_SEGMENT_MIN: simulated customer by customer
    tier = np.where(cdnow["frequency"] > 2, "loyal", "other")
    cdnow = cdnow.assign(tier=tier, tier_copy=tier)
    res = score_customers(cdnow, bgnbd_mle, gg_mle, by=["tier", "tier_copy"], **kw)
    a, b = res.segments["tier"], res.segments["tier_copy"]
    assert a.filter(like="_pi_").shape[1] > 0
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_names=False)  # fmt: skip


def test_large_segment_totals_agree_with_customer_by_customer_simulation(monkeypatch):
    """Totals of large segments (normal given each draw, conditional variances estimated from
    the samples) match the exact per-customer simulation of the same segments."""
    from clvbayes.models import BetaGeoModel, GammaGammaModel
    from clvbayes.predict import clv

    rng = np.random.default_rng(21)
    rfm, _, _ = _simulate_dataset(rng, (0.5, 3.0, 0.7, 3.0), (5.0, 4.0, 20.0), n=6000)
    rfm["group"] = np.where(rng.random(len(rfm)) < 0.3, "small share", "large share")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoModel().fit(rfm, method="map")
        gg = GammaGammaModel().fit(rfm, method="map")
    kw = dict(horizon=39, annual_discount_rate=0.1, seed=5, n_outcome_samples=4000, by="group")  # 4,000: the 6 % is ~4 Monte Carlo sd
    monkeypatch.setattr(clv, "EXACT_SEGMENT_MIN", 0)
    normal = score_customers(rfm, bg, gg, **kw).segments
    monkeypatch.setattr(clv, "EXACT_SEGMENT_MIN", 10**9)
    exact = score_customers(rfm, bg, gg, **kw).segments
    for g in ("all", "group"):
        for q in ("alive", "purchases", "revenue", "clv"):
            for side in ("lower", "upper"):
                col = f"{q}_total_pi_{side}"
                width = exact[g][f"{q}_total_pi_upper"] - exact[g][f"{q}_total_pi_lower"]
                gap = (normal[g][col] - exact[g][col]).abs()
                # counts: the exact interval is of whole numbers, the normal one is rounded out
                slack = 2.0 if q in ("alive", "purchases") else 0.0
                assert (gap <= 0.06 * width + slack).all(), (g, col, gap / width)


# ---------------------------------------------------------------- issue 12 / 13 regressions
def _fixed(cls, **values):
    """A fitted-looking model whose posterior is the given draws (arrays (chain, draw))."""
    model = cls()
    arrays = np.broadcast_arrays(*(np.atleast_2d(np.asarray(v, float)) for v in values.values()))
    draws = {k: np.array(v) for k, v in zip(values, arrays, strict=True)}
    model.draws = lambda: draws
    model.time_unit_ = "weeks"
    return model


def _bg(**kw):
    from clvbayes.models import BetaGeoModel

    return _fixed(BetaGeoModel, **{**dict(r=0.24, alpha=4.4, a=0.79, b=2.4), **kw})


def _gg(**kw):
    from clvbayes.models import GammaGammaModel

    return _fixed(GammaGammaModel, **{**dict(p=6.25, q=3.74, gamma=15.4), **kw})


def test_single_draw_posterior_reports_no_credible_intervals(cdnow):
    """Issue 13: a MAP posterior (one chain, one draw) is a point: ci and sd columns of the
    expectations are NaN, settings say there is no parameter uncertainty; predictive
    intervals (the customer's own randomness) stay."""
    rfm = cdnow.assign(segment=np.where(cdnow["frequency"] > 2, "loyal", "other"))
    res = score_customers(rfm, _bg(), _gg(), horizon=26, n_outcome_samples=200, by="segment")
    assert res.settings["parameter_uncertainty"] is False
    cust = res.customers
    for q in ("p_alive", "purchases", "spend", "revenue", "clv"):
        assert cust[f"{q}_mean"].notna().all(), q
        for col in (f"{q}_sd", f"{q}_ci_lower", f"{q}_ci_upper"):
            assert cust[col].isna().all(), col
    for q in ("purchases", "spend", "revenue", "clv"):
        assert np.isfinite(cust[[f"{q}_pi_lower", f"{q}_pi_upper"]].to_numpy()).all(), q
    for table in res.segments.values():
        ci = table.filter(like="_ci_")
        assert ci.shape[1] > 0 and ci.isna().all().all()
        assert np.isfinite(table.filter(like="_pi_").to_numpy()).all()
        assert np.isfinite(table.filter(like="_mean").to_numpy()).all()
    # several draws: real intervals, and the setting says so
    jitter = np.exp(0.05 * np.random.default_rng(1).standard_normal(8))
    multi = score_customers(
        rfm.iloc[:200], _bg(r=0.24 * jitter), _gg(), horizon=26, n_outcome_samples=200
    )
    assert multi.settings["parameter_uncertainty"] is True
    assert np.isfinite(multi.customers["clv_ci_lower"]).all()
    assert (multi.customers["clv_sd"] > 0).all()


def test_summarize_draws_of_one_draw_is_not_an_interval():
    table = summarize_draws(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(table["mean"], [1.0, 2.0, 3.0])
    assert table[["sd", "lower", "upper"]].isna().all().all()
    two = summarize_draws(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert np.isfinite(two.to_numpy()).all()


def test_heavy_tailed_spend_is_refused_with_the_fix_before_any_work(cdnow):
    """Issue 12 #3: q <= 1 leaves customers without repeat purchases with no finite expected
    spend: a ModelError naming them and the --priors fix, not a traceback deep in scoring."""
    from clvbayes.errors import ModelError

    with pytest.raises(ModelError, match=r"infinite for 1,411 of 2,357 customers \(first ids \['0"):
        score_customers(cdnow, _bg(), _gg(p=0.7, q=0.59, gamma=6.0), horizon=52)
    with pytest.raises(ModelError, match=r'--priors FILE.json with \{"gamma_gamma": \{"q"'):
        score_customers(cdnow, _bg(), _gg(p=0.7, q=0.59, gamma=6.0), horizon=52, outcomes=False)
    # only customers with p x + q > 1 in every draw: their expectations exist, and are scored
    buyers = cdnow[cdnow["frequency"] >= 1]
    res = score_customers(buyers, _bg(), _gg(p=0.7, q=[[0.59, 0.8]], gamma=6.0), horizon=52,
                          n_outcome_samples=200)  # fmt: skip
    assert np.isfinite(res.customers["clv_mean"]).all()


def test_draws_outside_the_domain_are_a_model_error(cdnow):
    from clvbayes.errors import ModelError

    with pytest.raises(ModelError, match=r"BG/NBD parameter a must be positive and finite"):
        score_customers(cdnow, _bg(a=[[0.79, np.inf]]), horizon=52, outcomes=False)


@pytest.mark.parametrize(
    "kw",
    [dict(horizon=1e-13), dict(horizon=52, discount_rate=1e300), dict(horizon=0.5, period=1.0),
     dict(horizon=52, discount_rate=0.0)],
    ids=["horizon-1e-13", "huge-rate", "below-one-period", "rate-0"],
)  # fmt: skip
def test_extreme_horizons_and_discounting_give_finite_tables(cdnow, kw):
    """Siblings: a horizon far below one period (was an empty schedule), a discount rate that
    makes every factor underflow, no discounting."""
    res = score_customers(cdnow.iloc[:300], _bg(), _gg(), n_outcome_samples=100, **kw)
    cols = res.customers.filter(regex="_(mean|pi_lower|pi_upper)$")
    assert np.isfinite(cols.to_numpy()).all()
    if kw.get("discount_rate") == 1e300:
        assert (res.customers["clv_mean"] < 1e-290).all()


def test_schedule_refuses_non_finite_rates_and_overflowing_factors():
    for bad in (np.inf, np.nan, -1.0):
        with pytest.raises(
            ValueError, match="discount rate per period must be a finite number > -1"
        ):
            schedule(52, bad)
    with pytest.raises(ValueError, match=r"gives infinite discount factors.*Use a rate >= 0"):
        schedule(5000, -0.9)
    ends, _ = schedule(1e-13, 0.01)
    np.testing.assert_array_equal(ends, [1e-13])
