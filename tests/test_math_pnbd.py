"""Pareto/NBD math layer: reference values, closed forms against independent computations.

Reference values: lifetimes 0.11.3 at its MLE on the 2-decimal CDNOW summary (issue 14), and
the CDNOW maximum-likelihood estimates (Fader, Hardie & Lee 2005; BTYD walkthrough).  Independent
computations: mpmath's Gauss hypergeometric closed form of the likelihood (Fader & Hardie 2005
note, eq. 19-20, both branches), mpmath quadrature of the dropout integral, two-dimensional
numerical integration over (lambda, mu), and Monte Carlo simulation of the generative model.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize, special, stats

from clvbayes.data import compress
from clvbayes.math import pnbd

mp = pytest.importorskip("mpmath")

LT = (0.553263, 10.577485, 0.606223, 11.668021)  # lifetimes 0.11.3 MLE (r, alpha, s, beta)


# ---------------------------------------------------------------- reference values (issue 14)
def test_new_customer_expected_purchases_reference():
    assert pnbd.expected_purchases_new(*LT, 52) == pytest.approx(1.47342, rel=1e-4)
    ref = [0.051006, 0.099626, 0.146133, 0.190756, 0.233684, 0.275078, 0.315074, 0.353791,
           0.391333]  # fmt: skip
    np.testing.assert_allclose(pnbd.expected_purchases_new(*LT, np.arange(1, 10)), ref, rtol=1e-4)


def test_customer_predictions_reference():
    assert pnbd.expected_purchases(*LT, 26, 30.86, 31, 52) == pytest.approx(25.4565, rel=1e-4)
    assert pnbd.p_alive(*LT, 26, 30.86, 31) == pytest.approx(0.997918, rel=1e-4)
    got = pnbd.expected_purchases(*LT, np.array([10, 15, 20, 25]), 20, 39, 52)
    np.testing.assert_allclose(got, [0.705890, 0.144149, 0.0224896, 0.00308996], rtol=1e-4)


def test_conditional_expectations_by_frequency_reference(cdnow):
    """BTYD walkthrough: holdout (39 weeks) expected purchases by calibration frequency 0..6, 7+.

    BTYD prints these at its own, slightly different estimates: agreement to 0.002.
    """
    x = cdnow["frequency"].to_numpy()
    e = pnbd.expected_purchases(*LT, x, cdnow["recency"].to_numpy(), cdnow["T"].to_numpy(), 39)
    means = [e[np.minimum(x, 7) == k].mean() for k in range(8)]
    ref = [0.138, 0.600, 1.196, 1.714, 2.399, 2.907, 3.819, 6.403]
    np.testing.assert_allclose(means, ref, atol=2e-3)


@pytest.fixture(scope="module")
def cdnow_data(cdnow):
    data = compress(cdnow, columns=("frequency", "recency", "T"))
    return data, pnbd.prepare_loglik_sum(data["frequency"], data["recency"], data["T"], data.counts)


def test_cdnow_maximum_likelihood(cdnow_data):
    """MLE with the exact gradient: r = 0.5533, alpha = 10.577, s = 0.6062, LL = -9594.98."""
    _, prepared = cdnow_data

    def f(theta):
        total, grad = pnbd.loglik_sum_and_grad(*np.exp(theta), prepared)
        return -total, -grad * np.exp(theta)

    res = optimize.minimize(f, np.log([1.0, 5.0, 1.0, 30.0]), jac=True, method="BFGS",
                            options={"gtol": 1e-7})  # fmt: skip
    r, alpha, s, beta = np.exp(res.x)
    assert -res.fun == pytest.approx(-9594.98, abs=0.05)
    assert r == pytest.approx(0.5533, rel=0.005)
    assert alpha == pytest.approx(10.577, rel=0.005)
    assert s == pytest.approx(0.6062, rel=0.005)
    assert 5 < beta < 30  # a flat ridge in beta (published 11.668)


# ---------------------------------------------------------------- likelihood vs mpmath
def _loglik_hyp2f1(r, a, s, b, x, tx, T):
    """Fader & Hardie (2005) eq. 19-20 with mpmath's 2F1 (the alpha >= beta / alpha < beta branches)."""
    r, a, s, b, x, tx, T = map(mp.mpf, (r, a, s, b, x, tx, T))
    k, rsx = r + x, r + s + x
    if a >= b:

        def term(t):
            return mp.hyp2f1(rsx, s + 1, rsx + 1, (a - b) / (a + t)) / (a + t) ** rsx
    else:

        def term(t):
            return mp.hyp2f1(rsx, r + x, rsx + 1, (b - a) / (b + t)) / (b + t) ** rsx

    A0 = term(tx) - term(T)
    L = mp.gamma(k) * a**r * b**s / mp.gamma(r) * ((a + T) ** -k * (b + T) ** -s + s / rsx * A0)
    return float(mp.re(mp.log(L)))


def _loglik_mpquad(r, a, s, b, x, tx, T):
    """Eq. (1) with the dropout integral by mpmath quadrature (scaled by its value at t_x and
    broken at multiples of its width, so that tanh-sinh sees an O(1) integrand)."""
    r, a, s, b, x, tx, T = map(mp.mpf, (r, a, s, b, x, tx, T))
    k = r + x
    width = 1 / (k / (a + tx) + (s + 1) / (b + tx))
    pts = [tx] + [tx + width * mp.mpf(10) ** j for j in range(-3, 12) if tx + width * 10**j < T]

    def scaled(w):
        return mp.exp(-k * mp.log((a + w) / (a + tx)) - (s + 1) * mp.log((b + w) / (b + tx)))

    log_f0 = -k * mp.log(a + tx) - (s + 1) * mp.log(b + tx)
    log_int = log_f0 + mp.log(mp.quad(scaled, [*pts, T]))
    log_alive = -k * mp.log(a + T) - s * mp.log(b + T)
    top = max(log_alive, mp.log(s) + log_int)
    bracket = mp.exp(log_alive - top) + mp.exp(mp.log(s) + log_int - top)
    return float(
        mp.loggamma(k) - mp.loggamma(r) + r * mp.log(a) + s * mp.log(b) + top + mp.log(bracket)
    )


HISTORIES = [
    (0, 0, 39),
    (1, 0.5, 39),
    (2, 30.43, 38.86),
    (26, 30.86, 31),
    (10, 20, 39),
    (200, 38, 40),
]


@pytest.mark.parametrize(
    "params", [LT, (0.5, 2.0, 3.0, 40.0), (2.0, 50.0, 0.1, 0.5), (0.3, 4.0, 1.0, 4.0)]
)
@pytest.mark.parametrize("history", HISTORIES)
def test_loglik_matches_hypergeometric_closed_form(params, history):
    with mp.workdps(30):
        ref = _loglik_hyp2f1(*params, *history)
    assert pnbd.loglik(*params, *history) == pytest.approx(ref, rel=1e-12, abs=1e-10)


EXTREME = [
    (0.0035078, 65.049, 263370.45, 6.95245e-05, 1.0, 73.284, 244.281),  # mpmath's 2F1 is off here
    (8559.16, 0.081356, 3.93663, 2.14146e-06, 10000.0, 44.1529, 49.0588),
    (0.000276, 0.001405, 1010.13, 0.002317, 5.0, 2403.3, 8010.99),
    (70.247, 7.9279, 1.46187, 0.128105, 1000.0, 0.0, 7073.38),
    (45288.1, 1.07926, 8.47e-06, 159333.1, 0.0, 0.0, 26.9657),
    (1e-6, 1e-6, 1e-6, 1e6, 0.0, 0.0, 1e4),  # x = 0, r < 1, beta > alpha: interior maximum
    (0.2, 1e6, 1e-6, 1e-6, 0.0, 0.0, 1e4),
    (1e3, 1e-3, 1e3, 1e-3, 10000.0, 9999.0, 1e4),
]


@pytest.mark.parametrize("case", EXTREME)
def test_loglik_matches_mpmath_quadrature_at_extremes(case):
    with mp.workdps(30):
        ref = _loglik_mpquad(*case)
    assert pnbd.loglik(*case) == pytest.approx(ref, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("params", [(0.7, 8.0, 0.9, 14.0), (2.0, 50.0, 0.1, 0.5)])  # both branches
def test_loglik_gradient_matches_mpmath_derivatives(params):
    """The quadrature gradient against mpmath's derivative of the 2F1 closed form (30 digits)."""
    history = (5, 20.0, 39.0)
    data = pnbd.prepare_loglik_sum(*([v] for v in history), [1])
    _, grad = pnbd.loglik_sum_and_grad(*params, data)
    with mp.workdps(30):
        for i in range(4):

            def log_l(v, i=i):
                p = [mp.mpf(q) for q in params]
                p[i] = v
                r, a, s, b = p
                x, tx, T = map(mp.mpf, history)
                k, rsx = r + x, r + s + x

                def term(t):
                    if a >= b:
                        return mp.hyp2f1(rsx, s + 1, rsx + 1, (a - b) / (a + t)) / (a + t) ** rsx
                    return mp.hyp2f1(rsx, k, rsx + 1, (b - a) / (b + t)) / (b + t) ** rsx

                bracket = (a + T) ** -k * (b + T) ** -s + s / rsx * (term(tx) - term(T))
                return mp.log(mp.gamma(k) * a**r * b**s / mp.gamma(r) * bracket)

            ref = float(mp.diff(log_l, mp.mpf(params[i])))
            assert grad[i] == pytest.approx(ref, rel=1e-9), i


# ---------------------------------------------------------------- the weighted sum and its gradient
@pytest.mark.parametrize("params", [LT, (2.0, 50.0, 0.1, 0.5), (0.05, 0.3, 8.0, 200.0)])
def test_loglik_sum_and_gradient(cdnow_data, params):
    data, prepared = cdnow_data
    total, grad = pnbd.loglik_sum_and_grad(*params, prepared)
    per = pnbd.loglik(*params, data["frequency"], data["recency"], data["T"])
    assert total == pytest.approx(float(np.sum(data.counts * per)), rel=1e-13)
    for i in range(4):
        h = np.zeros(4)
        h[i] = 1e-5 * params[i]
        up = pnbd.loglik_sum_and_grad(*(np.array(params) + h), prepared)[0]
        down = pnbd.loglik_sum_and_grad(*(np.array(params) - h), prepared)[0]
        assert grad[i] == pytest.approx((up - down) / (2 * h[i]), rel=1e-5, abs=1e-4), i


def test_loglik_sum_weights_equal_repeated_histories(rng):
    x = rng.integers(0, 5, 30).astype(float)
    T = rng.uniform(5, 40, 30)
    t_x = np.where(x > 0, T * rng.uniform(0, 1, 30), 0.0)
    w = rng.integers(0, 4, 30)
    a = pnbd.loglik_sum_and_grad(*LT, pnbd.prepare_loglik_sum(x, t_x, T, w))
    rep = np.repeat(np.arange(30), w)
    b = pnbd.loglik_sum_and_grad(
        *LT, pnbd.prepare_loglik_sum(x[rep], t_x[rep], T[rep], np.ones(rep.size))
    )
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-10)


def test_prepare_loglik_sum_rejects_bad_weights():
    with pytest.raises(ValueError, match=r"weights must have one entry per history \(2\), got 3"):
        pnbd.prepare_loglik_sum([1, 2], [1, 2], [3, 3], [1, 1, 1])
    with pytest.raises(ValueError, match="weights must be non-negative whole numbers"):
        pnbd.prepare_loglik_sum([1, 2], [1, 2], [3, 3], [1, 0.5])


# ---------------------------------------------------------------- predictions vs integration over (lambda, mu)
def _posterior_grid(params, history, n=400):
    """Posterior weights of (lambda, mu) on a log grid: prior densities x L(lambda, mu | history)."""
    r, alpha, s, beta = params
    x, tx, T = history
    lam = np.exp(
        np.linspace(
            np.log(stats.gamma.ppf(1e-12, r + x, scale=1 / (alpha + T))),
            np.log(stats.gamma.ppf(1 - 1e-12, r + x, scale=1 / (alpha + tx))),
            n,
        )
    )
    mu = np.exp(np.linspace(np.log(stats.gamma.ppf(1e-12, s, scale=1 / beta)),
                            np.log(stats.gamma.ppf(1 - 1e-12, s + 1, scale=1 / (beta + tx))), n))  # fmt: skip
    L, M = np.meshgrid(lam, mu, indexing="ij")
    alive = x * np.log(L) - (L + M) * T
    dead = (
        x * np.log(L) + np.log(M / (L + M)) - (L + M) * tx + np.log(-np.expm1(-(L + M) * (T - tx)))
    )
    log_post = (
        stats.gamma.logpdf(L, r, scale=1 / alpha)
        + stats.gamma.logpdf(M, s, scale=1 / beta)
        + np.logaddexp(alive, dead)
        + np.log(L)
        + np.log(M)
    )  # fmt: skip  (log-grid Jacobian)
    w = np.exp(log_post - log_post.max())
    return L, M, w / w.sum(), special.expit(alive - dead)


CASES = [(LT, (0, 0.0, 39.0)), (LT, (26, 30.86, 31.0)), (LT, (10, 20.0, 39.0)),
         ((2.0, 50.0, 0.1, 0.5), (3, 10.0, 39.0)), ((0.5, 2.0, 3.0, 40.0), (7, 5.0, 30.0))]  # fmt: skip


@pytest.mark.parametrize(("params", "history"), CASES)
def test_predictions_match_integration_over_latent_rates(params, history):
    L, M, w, pa_given = _posterior_grid(params, history)
    t, delta = 52.0, 0.01
    pa = np.sum(w * pa_given)
    assert pnbd.p_alive(*params, *history) == pytest.approx(pa, rel=1e-6, abs=1e-9)
    e_y = np.sum(w * pa_given * L / M * -np.expm1(-M * t))
    assert pnbd.expected_purchases(*params, *history, t) == pytest.approx(e_y, rel=1e-6)
    alive_t = np.sum(w * pa_given * np.exp(-M * t))
    assert pnbd.p_alive_at(*params, *history, t) == pytest.approx(alive_t, rel=1e-6)
    dert = np.sum(w * pa_given * L / (M + delta))
    assert pnbd.dert(*params, *history, delta) == pytest.approx(dert, rel=1e-6)


@pytest.mark.parametrize(("params", "history"), CASES[1:3])
def test_conditional_pmf_matches_integration_over_latent_rates(params, history):
    """P(Y = n): alive customers keep buying at rate lambda until an Exp(mu) dropout."""
    L, M, w, pa_given = _posterior_grid(params, history, n=120)
    t = 52.0
    grid = np.linspace(0, t, 401)[None, None, :]
    pmf = pnbd.prob_purchases_conditional(*params, *history, t, np.arange(3))
    pa = np.sum(w * pa_given)
    for j in range(3):
        dens = (
            M[..., None] * np.exp(-M[..., None] * grid) * stats.poisson.pmf(j, L[..., None] * grid)
        )
        cond = np.trapezoid(dens, grid, axis=-1) + np.exp(-M * t) * stats.poisson.pmf(j, L * t)
        ref = np.sum(w * pa_given * cond) + (1 - pa) * (j == 0)
        assert pmf[j] == pytest.approx(ref, rel=2e-3, abs=1e-5), j


def test_dert_matches_tricomi_closed_form():
    """FHL (2005) eq. 2 with mpmath's confluent hypergeometric U."""
    params, (x, tx, T), delta = LT, (26, 30.86, 31.0), np.log(1.15) / 52
    r, alpha, s, beta = params
    ll = pnbd.loglik(*params, x, tx, T)
    with mp.workdps(30):
        ref = (mp.mpf(alpha) ** r * mp.mpf(beta) ** s * mp.mpf(delta) ** (s - 1) * mp.gamma(r + x + 1)
               * mp.hyperu(s, s, delta * (beta + T))
               / (mp.gamma(r) * mp.mpf(alpha + T) ** (r + x + 1) * mp.e ** mp.mpf(ll)))  # fmt: skip
    assert pnbd.dert(*params, x, tx, T, delta) == pytest.approx(float(ref), rel=1e-9)


# ---------------------------------------------------------------- predictions vs simulation
def test_new_customer_predictions_match_simulation(rng):
    n_sim, t = 400_000, 30.0
    lam = rng.gamma(LT[0], 1 / LT[1], n_sim)
    mu = rng.gamma(LT[2], 1 / LT[3], n_sim)
    counts = pnbd.simulate_purchases(rng, np.ones(n_sim, bool), lam, mu, t)
    se = counts.std() / np.sqrt(n_sim)
    assert abs(counts.mean() - pnbd.expected_purchases_new(*LT, t)) < 4 * se
    freq = np.bincount(counts, minlength=6)[:6] / n_sim
    np.testing.assert_allclose(pnbd.prob_purchases(*LT, t, np.arange(6)), freq, atol=3e-3)


def test_prob_purchases_is_a_distribution_with_the_right_mean():
    n = np.arange(3000)
    for t in (1.0, 52.0, 500.0):
        p = pnbd.prob_purchases(*LT, t, n)
        assert p.sum() == pytest.approx(1.0, abs=1e-7)
        assert np.sum(n * p) == pytest.approx(pnbd.expected_purchases_new(*LT, t), rel=1e-6)
    assert pnbd.prob_purchases(*LT, 0.0, [0, 1]).tolist() == [1.0, 0.0]


def test_simulated_population_matches_p_alive_and_future(rng):
    """Histories from the generative model: P(alive) and E[future purchases] are calibrated."""
    params = (0.8, 6.0, 0.7, 15.0)
    sim = pnbd.simulate(rng, *params, np.full(200_000, 39.0))
    pa = pnbd.p_alive(*params, sim["frequency"], sim["recency"], sim["T"])
    assert pa.mean() == pytest.approx(sim["alive"].mean(), abs=0.004)
    for lo, hi in [(0, 0), (1, 2), (3, 6), (7, 10_000)]:
        sel = (sim["frequency"] >= lo) & (sim["frequency"] <= hi)
        assert pa[sel].mean() == pytest.approx(sim["alive"][sel].mean(), abs=0.01)
    # the true futures: buy at lambda until the (memoryless) dropout after T
    t = 26.0
    rest = np.where(sim["alive"], np.minimum(sim["omega"] - 39.0, t), 0.0)
    future = rng.poisson(sim["lam"] * rest)
    e = pnbd.expected_purchases(*params, sim["frequency"], sim["recency"], sim["T"], t)
    assert e.mean() == pytest.approx(future.mean(), rel=0.02)


def test_latent_draws_match_closed_forms(rng):
    n = 400_000
    hist = (np.full(n, 5.0), np.full(n, 20.0), np.full(n, 39.0))
    alive, lam, mu = pnbd.sample_latent(rng, *LT, *hist)
    assert alive.mean() == pytest.approx(pnbd.p_alive(*LT, 5, 20.0, 39.0), abs=0.003)
    counts = pnbd.simulate_purchases(rng, alive, lam, mu, 52.0)
    ref = pnbd.expected_purchases(*LT, 5, 20.0, 39.0, 52.0)
    assert counts.mean() == pytest.approx(ref, abs=4 * counts.std() / np.sqrt(n))
    assert lam[alive].mean() == pytest.approx((LT[0] + 5) / (LT[1] + 39), rel=0.01)


def test_purchase_times_follow_the_stopped_poisson_process(rng):
    """Fixed (lambda, mu): E[purchases in (0, u]] = lambda (1 - exp(-mu u)) / mu for u <= t.

    Derived by hand (a Poisson process of rate lambda, stopped at an Exp(mu) time), not with
    the module's formulas.
    """
    n, lam, mu, t = 200_000, 0.8, 0.05, 30.0
    alive = np.arange(n) % 4 != 0  # a quarter dead: they never buy
    counts, times = pnbd.simulate_purchase_times(rng, alive, lam, mu, t)
    assert counts.shape == (n,) and times.size == counts.sum()
    assert counts[~alive].sum() == 0
    assert ((times > 0) & (times <= t)).all()
    owner = np.repeat(np.arange(n), counts)
    assert (np.diff(times)[np.diff(owner) == 0] >= 0).all()  # ascending within each customer
    n_alive = alive.sum()
    for u in (1.0, 10.0, 30.0):
        got = np.count_nonzero(times <= u) / n_alive
        assert got == pytest.approx(lam * -np.expm1(-mu * u) / mu, rel=0.01), u
    # the counts are simulate_purchases' distribution: same mean and P(0)
    other = pnbd.simulate_purchases(rng, alive, lam, mu, t)
    se = counts[alive].std() / np.sqrt(n_alive)
    assert abs(counts[alive].mean() - other[alive].mean()) < 5 * se
    assert np.mean(counts[alive] == 0) == pytest.approx(np.mean(other[alive] == 0), abs=0.005)
    # unsorted: the same multiset per customer count
    counts_u, times_u = pnbd.simulate_purchase_times(1, alive[:50], lam, mu, t, sort=False)
    counts_s, times_s = pnbd.simulate_purchase_times(1, alive[:50], lam, mu, t)
    np.testing.assert_array_equal(counts_u, counts_s)
    np.testing.assert_allclose(np.sort(times_u), np.sort(times_s))


def test_posterior_predictive_purchase_times_match_closed_forms(rng):
    """sample_latent + simulate_purchase_times vs FH05 eq. 22 and the conditional pmf (FH06)."""
    n = 300_000
    hist = (np.full(n, 5.0), np.full(n, 20.0), np.full(n, 39.0))
    counts, times = pnbd.simulate_purchase_times(rng, *pnbd.sample_latent(rng, *LT, *hist), 52.0)
    for u in (10.0, 52.0):
        got = np.count_nonzero(times <= u) / n
        ref = pnbd.expected_purchases(*LT, 5, 20.0, 39.0, u)
        assert got == pytest.approx(ref, rel=0.02), u
    pmf = pnbd.prob_purchases_conditional(*LT, 5, 20.0, 39.0, 52.0, np.arange(4))
    np.testing.assert_allclose(np.bincount(counts, minlength=4)[:4] / n, pmf, atol=3e-3)


def test_simulate_broadcasts_draws_against_customers(rng):
    """One population per parameter row; each row's mean count is FH05 eq. 17 at its T."""
    draws = np.array([LT, (2.0, 5.0, 0.3, 20.0)])[:, :, None]  # (2 draws, 4 params, 1)
    T = np.tile([10.0, 39.0], 100_000)
    sim = pnbd.simulate(rng, *draws.transpose(1, 0, 2), T)
    assert sim["frequency"].shape == (2, T.size)
    for row in range(2):
        for T_ in (10.0, 39.0):
            got = sim["frequency"][row, T == T_].mean()
            ref = pnbd.expected_purchases_new(*draws[row, :, 0], T_)
            assert got == pytest.approx(ref, rel=0.02), (row, T_)
    # scalar parameters give the same stream as a single row
    one = pnbd.simulate(3, *LT, T[:100])
    row = pnbd.simulate(3, *(np.full((1, 1), v) for v in LT), T[:100])
    np.testing.assert_array_equal(one["frequency"], row["frequency"][0])


def test_simulated_holdout_matches_new_and_conditional_expectations(rng):
    """frequency_holdout: E[X(T + t)] - E[X(T)] overall and E[Y(t) | history] by frequency."""
    n, T, t = 300_000, 39.0, 39.0
    sim = pnbd.simulate(rng, *LT, np.full(n, T), t_holdout=t)
    ref = pnbd.expected_purchases_new(*LT, T + t) - pnbd.expected_purchases_new(*LT, T)
    assert sim["frequency_holdout"].mean() == pytest.approx(ref, rel=0.02)
    e = pnbd.expected_purchases(*LT, sim["frequency"], sim["recency"], sim["T"], t)
    for lo, hi in [(0, 0), (1, 2), (3, 10_000)]:
        sel = (sim["frequency"] >= lo) & (sim["frequency"] <= hi)
        assert sim["frequency_holdout"][sel].mean() == pytest.approx(e[sel].mean(), rel=0.03)
    assert pnbd.simulate(rng, *LT, np.full(5, T))["frequency_holdout"].tolist() == [0.0] * 5


# ---------------------------------------------------------------- limits and numerics
def test_limits_and_smoothness():
    assert pnbd.p_alive_at(*LT, 26, 30.86, 31, 0.0) == pytest.approx(
        pnbd.p_alive(*LT, 26, 30.86, 31)
    )
    assert pnbd.expected_purchases(*LT, 3, 10.0, 39.0, 0.0) == 0.0
    # s = 1: the (s - 1) denominators have a finite limit, (beta+T) log(1 + t/(beta+T))
    e = [pnbd.expected_purchases_new(1.0, 2.0, s, 3.0, 10.0) for s in (1 - 1e-9, 1.0, 1 + 1e-9)]
    assert e[1] == pytest.approx(0.5 * 3.0 * np.log1p(10 / 3), rel=1e-12)
    np.testing.assert_allclose(e, e[1], rtol=1e-8)
    # P(alive) is 1 without time since the last purchase
    assert pnbd.p_alive(*LT, 4, 30.0, 30.0) == pytest.approx(1.0)


def test_finite_over_extreme_inputs():
    grid = np.array([1e-6, 1e-2, 1.0, 1e2, 1e6])
    r, alpha, s, beta = (v.ravel()[:, None] for v in np.meshgrid(grid, grid, grid, grid))
    x = np.array([0.0, 1.0, 50.0, 10_000.0])
    T = np.array([1e4, 1e4, 100.0, 1e4])
    t_x = np.array([0.0, 1e4, 0.5, 9_000.0])
    outs = {
        "loglik": pnbd.loglik(r, alpha, s, beta, x, t_x, T),
        "p_alive": pnbd.p_alive(r, alpha, s, beta, x, t_x, T),
        "expected": pnbd.expected_purchases(r, alpha, s, beta, x, t_x, T, 1e4),
        "alive_at": pnbd.p_alive_at(r, alpha, s, beta, x, t_x, T, 1e4),
        "new": pnbd.expected_purchases_new(r, alpha, s, beta, np.array([0.0, 1.0, 1e4])),
        "dert": pnbd.dert(r, alpha, s, beta, x, t_x, T, 1e-3),
        "pmf": pnbd.prob_purchases(r, alpha, s, beta, 1e4, np.array([0, 1, 10_000])),
        "cond_pmf": pnbd.prob_purchases_conditional(r, alpha, s, beta, x, t_x, T, 1e4, 0),
    }
    for name, v in outs.items():
        assert np.isfinite(v).all(), name
    for name in ("p_alive", "alive_at", "pmf", "cond_pmf"):
        assert ((outs[name] >= 0) & (outs[name] <= 1 + 1e-12)).all(), name
    data = pnbd.prepare_loglik_sum(x, t_x, T, np.ones(4))
    for p in zip(
        r.ravel()[::7], alpha.ravel()[::7], s.ravel()[::7], beta.ravel()[::7], strict=True
    ):
        total, grad = pnbd.loglik_sum_and_grad(*p, data)
        assert np.isfinite(total) and np.isfinite(grad).all(), p


def test_broadcasting_draws_against_customers(rng):
    draws = {k: v * rng.uniform(0.9, 1.1, (2, 3, 1)) for k, v in zip("rasb", LT, strict=True)}
    x, tx, T = np.array([0.0, 2, 26]), np.array([0.0, 10, 30.86]), np.array([39.0, 39, 31])
    out = pnbd.expected_purchases(draws["r"], draws["a"], draws["s"], draws["b"], x, tx, T, 52)
    assert out.shape == (2, 3, 3)
    one = pnbd.expected_purchases(draws["r"][1, 2, 0], draws["a"][1, 2, 0], draws["s"][1, 2, 0],
                                  draws["b"][1, 2, 0], 2, 10.0, 39.0, 52)  # fmt: skip
    assert out[1, 2, 1] == pytest.approx(one, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pnbd.loglik(1, 1, -1, 1, 1, 1, 2), r"Pareto/NBD parameter s must be positive and finite"),
        (lambda: pnbd.p_alive(1, 1, 1, 0, 1, 1, 2), r"Pareto/NBD parameter beta must be positive"),
        (lambda: pnbd.p_alive(1, 1, 1, 1, [1, 2], [3, 1], [2, 2]),
         r"recency must not exceed T; 1 customers have recency > T at positions \[0\]"),
        (lambda: pnbd.expected_purchases(1, 1, 1, 1, 1, 1, 2, -1), r"t \(a time horizon"),
        (lambda: pnbd.prob_purchases(1, 1, 1, 1, 5, 1.5), r"n must be non-negative whole numbers"),
        (lambda: pnbd.dert(1, 1, 1, 1, 1, 1, 2, 0.0), r"Pareto/NBD DERT parameter delta must be positive"),
        (lambda: pnbd.loglik(1, 1, 1, 1, -1, 0, 2), r"frequency must be a finite, non-negative"),
    ],
)  # fmt: skip
def test_domain_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_math_module_imports_without_pymc():
    code = (
        "import sys, clvbayes.math.pnbd; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pymc', 'pytensor')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_pytensor_loglik_and_gradient_match_numpy():
    """The same quadrature as a PyTensor graph (nutpie, numpyro), value and gradient."""
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    x = np.array([0, 1, 2, 26, 200, 10_000], dtype=float)
    tx = np.array([0.0, 1.5, 30.43, 30.857, 38.0, 39.0])
    T = np.array([40.0, 38.86, 38.86, 31.0, 40.0, 39.0])
    theta = pt.dvector("theta")
    ll = pnbd.loglik(theta[0], theta[1], theta[2], theta[3], x, tx, T, xp=pytensor_namespace())
    # Python linker without graph rewrites: compiling this graph to C or numba takes minutes
    # and tests nothing more
    from pytensor.compile.mode import Mode

    fn = pytensor.function(
        [theta], [ll, pytensor.grad(ll.sum(), theta)], mode=Mode(linker="py", optimizer=None)
    )
    data = pnbd.prepare_loglik_sum(x, tx, T, np.ones(6))
    for p in (LT, (0.5, 20.0, 0.3, 1.0), (1e-3, 1e3, 50.0, 0.01)):
        val, grad = fn(np.array(p))
        np.testing.assert_allclose(val, pnbd.loglik(*p, x, tx, T), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(grad, pnbd.loglik_sum_and_grad(*p, data)[1], rtol=1e-9)
