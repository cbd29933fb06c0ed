"""Tests of the BG/NBD math layer (clvbayes.math.bgnbd).

Layers: published reference values (FHL 2005 and the CDNOW summary); cross-implementation
checks against numerical integration (scipy.integrate.quad) and Monte Carlo simulation of the
model; domain checks and shapes.  Parameters "at the MLE" are FHL's CDNOW estimates
r = 0.2426, alpha = 4.4136, a = 0.7929, b = 2.4259 (weeks).
"""

from __future__ import annotations

import itertools
import warnings
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special, stats

from clvbayes.math import _special, bgnbd
from clvbayes.math.discount import discounted_increments, schedule

MLE = (0.2426, 4.4136, 0.7929, 2.4259)


@pytest.fixture(scope="module")
def cdnow_summary():
    """The published CDNOW calibration summary (ID, x, t_x, T, zbar; weeks)."""
    path = resources.files("clvbayes") / "datasets" / "files" / "cdnow_summary.csv"
    with resources.as_file(path) as p:
        return pd.read_csv(p)


# --------------------------------------------------------------------------------------------
# independent reference computations by adaptive quadrature
# --------------------------------------------------------------------------------------------
_EDGES = (0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 1.0)


def beta_mean_quad(g, a, b):
    """E[g(p)] for p ~ Beta(a, b) by scipy.integrate.quad, normalised numerically.

    The interval is cut at fixed points; the end pieces integrate the singular factors
    p^(a-1) and (1-p)^(b-1) with quad's algebraic weights, the others the density scaled by
    its largest value on a grid (so nothing under- or overflows).
    """
    grid = np.concatenate([np.geomspace(1e-12, 0.5, 400), 1 - np.geomspace(1e-12, 0.5, 400)])
    log_w = (a - 1) * np.log(grid) + (b - 1) * np.log1p(-grid)
    shift = log_w.max()

    def piece(fun, lo, hi):
        kw = {"epsabs": 0.0, "epsrel": 1e-13, "limit": 400}
        if lo == 0.0 and a < 1:  # integrable singularity p^(a-1): algebraic weight
            f = lambda p: fun(p) * np.exp((b - 1) * np.log1p(-p) - shift)  # noqa: E731
            return integrate.quad(f, lo, hi, weight="alg", wvar=(a - 1, 0.0), **kw)[0]
        if hi == 1.0 and b < 1:  # (1-p)^(b-1)
            f = lambda p: fun(p) * np.exp((a - 1) * np.log(p) - shift)  # noqa: E731
            return integrate.quad(f, lo, hi, weight="alg", wvar=(0.0, b - 1), **kw)[0]

        def f(p):
            if p <= 0.0 or p >= 1.0:
                return 0.0  # only reached where the density vanishes (a > 1 or b > 1)
            return fun(p) * np.exp((a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - shift)

        return integrate.quad(f, lo, hi, **kw)[0]

    pieces = list(itertools.pairwise(_EDGES))
    num = sum(piece(g, lo, hi) for lo, hi in pieces)
    den = sum(piece(lambda p: 1.0, lo, hi) for lo, hi in pieces)
    return num / den


def quad_purchases(r, alpha, a, b, x, t_x, T, t):
    """E[purchases in (T, T+t]] = P(alive) E_p[(1 - (1 + p s)^-(r+x)) / p], p ~ Beta(a, b+x)."""
    k, s = r + x, t / (alpha + T)
    h = lambda p: -np.expm1(-k * np.log1p(p * s)) / p if p > 0 else k * s  # noqa: E731
    return bgnbd.p_alive(r, alpha, a, b, x, t_x, T) * beta_mean_quad(h, a, b + x)


def quad_alive_at(r, alpha, a, b, x, t_x, T, t):
    """P(alive at T+t) = P(alive) E_p[(1 + p s)^-(r+x)], p ~ Beta(a, b+x)."""
    k, s = r + x, t / (alpha + T)
    return bgnbd.p_alive(r, alpha, a, b, x, t_x, T) * beta_mean_quad(
        lambda p: np.exp(-k * np.log1p(p * s)), a, b + x
    )


def quad_likelihood(r, alpha, a, b, x, t_x, T):
    """FHL eq. (6) by integrating the individual likelihood over lambda and p numerically."""
    log_gamma_norm = r * np.log(alpha) - special.gammaln(r)

    def lam_integral(end):  # int lambda^x e^(-lambda end) Gamma(lambda; r, alpha) d lambda
        f = lambda lam: np.exp(  # noqa: E731
            (r + x - 1) * np.log(lam) - lam * (alpha + end) + log_gamma_norm
        )
        mode = max(r + x - 1, 0.0) / (alpha + end)
        scale = np.sqrt(r + x) / (alpha + end)
        return sum(
            integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
            for lo, hi in ((0, mode), (mode, mode + 50 * scale), (mode + 50 * scale, np.inf))
        )

    def p_integral(n_stay, n_drop):  # int (1-p)^n_stay p^n_drop Beta(p; a, b) dp
        return beta_mean_quad(lambda p: (1 - p) ** n_stay * p**n_drop, a, b)

    total = p_integral(x, 0) * lam_integral(T)
    if x > 0:
        total += p_integral(x - 1, 1) * lam_integral(t_x)
    return total


# --------------------------------------------------------------------------------------------
# published reference values
# --------------------------------------------------------------------------------------------
def test_fhl_customer_predictions():
    # FHL 2005 / Hardie's notes: CDNOW customer 1 (x=2, t_x=30.43, T=38.86) over 39 weeks, and
    # the high-frequency customer (x=26, t_x=30.857, T=31) over 52 weeks.
    assert bgnbd.expected_purchases(*MLE, 2, 30.43, 38.86, 39) == pytest.approx(1.2259, abs=5e-5)
    assert bgnbd.p_alive(*MLE, 2, 30.43, 38.86) == pytest.approx(0.7266, abs=5e-5)
    # published as 25.757; eq. (10) at these parameters is 25.75752 (30 digits), at the unrounded
    # MLE 25.75768, so the last digit of the published value is truncated
    assert bgnbd.expected_purchases(*MLE, 26, 30.857, 31, 52) == pytest.approx(25.757, abs=1e-3)
    assert bgnbd.p_alive(*MLE, 26, 30.857, 31) == pytest.approx(0.96885, abs=5e-6)


def test_fhl_new_customer_and_count_distribution():
    # FHL eq. 7: 1.4440 (unrounded MLE: 1.44402; the rounded MLE used here gives 1.44406)
    assert bgnbd.expected_purchases_new(*MLE, 52) == pytest.approx(1.4440, abs=1e-4)
    p0 = bgnbd.prob_purchases(0.243, 4.414, 0.793, 2.426, 39, 0)  # FHL eq. 8
    assert p0 == pytest.approx(0.57379, abs=5e-6)


def test_conditional_expectation_by_frequency():
    # t_x = 20, T = 39, t = 52.  `published` are the values in the issue; `digits30` are FHL
    # eq. (10) evaluated independently with 30-digit arithmetic (mpmath.hyp2f1) at the same
    # parameters.  The published ones are ~1e-4 lower for every x, consistent with parameters or
    # t rounded differently when they were produced, so they are checked at 2e-4.
    x = np.array([10, 15, 20, 25])
    published = np.array([0.34746, 0.042834, 0.0041590, 0.00035837])
    digits30 = np.array([0.3474944016558012, 0.04283837398050075, 0.004159406773774878, 0.0003584052356631632])  # fmt: skip
    got = bgnbd.expected_purchases(*MLE, x, 20.0, 39.0, 52.0)
    np.testing.assert_allclose(got, published, rtol=2e-4)
    np.testing.assert_allclose(got, digits30, rtol=1e-9)


def test_cdnow_holdout_total(cdnow_summary):
    # FHL: expected repeat purchases of the 2,357 sampled customers in the 39-week holdout
    d = cdnow_summary
    total = bgnbd.expected_purchases(*MLE, d["x"], d["t_x"], d["T"], 39.0).sum()
    assert total == pytest.approx(1653.4, abs=0.1)


def test_cdnow_maximum_likelihood(cdnow_summary):
    x, t_x, T = (cdnow_summary[c].to_numpy(float) for c in ("x", "t_x", "T"))

    def nll(theta):
        return -np.sum(bgnbd.loglik(*np.exp(theta), x, t_x, T))

    res = optimize.minimize(nll, np.zeros(4), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 5000})  # fmt: skip
    assert res.success
    np.testing.assert_allclose(np.exp(res.x), MLE, rtol=5e-3)
    assert -res.fun == pytest.approx(-9582.43, abs=0.05)


def test_loglik_stability_values():
    # r=0.25, alpha=4, a=0.8, b=2.5, T=40.  Both values pin FHL eq. (6) with all constants, i.e.
    # the density of the purchase times (so the second, a frequent buyer, is positive).
    ll = bgnbd.loglik(0.25, 4.0, 0.8, 2.5, np.array([0, 200]), np.array([0.0, 38.0]), 40.0)
    np.testing.assert_allclose(ll, [-0.5994738, 100.79569], atol=5e-7)
    assert ll[0] == pytest.approx(0.25 * np.log(4 / 44), rel=1e-14)  # (alpha/(alpha+T))^r


# --------------------------------------------------------------------------------------------
# cross-implementation: numerical integration
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "x", "t_x", "T"),
    [
        (MLE, 0, 0.0, 38.86),
        (MLE, 2, 30.43, 38.86),
        (MLE, 7, 12.0, 35.0),
        ((2.0, 0.5, 3.0, 0.4), 1, 0.2, 10.0),
        ((0.05, 30.0, 0.3, 15.0), 4, 50.0, 52.0),
    ],
)
def test_loglik_matches_double_integral(params, x, t_x, T):
    expected = np.log(quad_likelihood(*params, x, t_x, T))
    assert bgnbd.loglik(*params, x, t_x, T) == pytest.approx(expected, rel=1e-9, abs=1e-9)


# (r, alpha, a, b, x, t_x, T, t): a = 1 exactly and nearby, long horizons, large x, extremes
PREDICTION_GRID = [
    (*MLE, 2, 30.43, 38.86, 39.0),
    (*MLE, 0, 0.0, 38.86, 1e4),
    (0.2426, 4.4136, 1.0, 2.4259, 2, 30.43, 38.86, 39.0),
    (0.2426, 4.4136, 1.0, 2.4259, 0, 0.0, 38.86, 1e4),
    (0.2426, 4.4136, 1.0 + 1e-9, 2.4259, 3, 20.0, 38.86, 52.0),
    (0.2426, 4.4136, 1.0 - 1e-9, 2.4259, 3, 20.0, 38.86, 520.0),
    (0.2426, 4.4136, 1.0 + 1e-4, 2.4259, 0, 0.0, 10.0, 1e4),
    (0.2426, 4.4136, 1.0 - 1e-4, 0.5, 0, 0.0, 10.0, 300.0),
    (0.7, 2.0, 1.0, 0.001, 0, 0.0, 5.0, 50.0),  # a + b - 1 ~ 0: pole of the closed form
    (1.0, 1.0, 0.3, 0.4, 0, 0.0, 5.0, 1e3),  # a + b < 1
    (3.0, 50.0, 1.0, 1e3, 10_000, 100.0, 104.0, 1e4),
    (0.001, 0.001, 0.001, 0.001, 0, 0.0, 0.001, 1e4),
    (1e3, 1e3, 1e3, 1e3, 10_000, 9.0, 10.0, 1e4),
    (1e3, 0.001, 0.5, 1e3, 50, 1.0, 3.0, 10.0),
    (0.001, 1e3, 1e3, 0.001, 10_000, 40.0, 40.0, 1.0),
    (5.0, 0.01, 0.02, 30.0, 100, 7.0, 8.0, 1e4),
    (0.25, 4.0, 3.0, 2.4, 0, 0.0, 0.0, 1e4),  # a = r + x + ... integer c - a - b cases
    (3.0, 4.0, 3.0, 2.4, 0, 0.0, 0.0, 1e3),
    (1e3, 10.0, 1.0, 1e3, 1, 5.0, 10.0, 100.0),
    (0.01, 5.0, 0.8, 1e3, 1, 4.0, 40.0, 1e4),
]


@pytest.mark.parametrize("case", PREDICTION_GRID)
def test_predictions_match_quadrature(case):
    r, alpha, a, b, x, t_x, T, t = case
    got = bgnbd.expected_purchases(r, alpha, a, b, x, t_x, T, t)
    assert got == pytest.approx(quad_purchases(*case), rel=1e-9)
    got = bgnbd.p_alive_at(r, alpha, a, b, x, t_x, T, t)
    assert got == pytest.approx(quad_alive_at(*case), rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("t", [0.1, 1.0, 30.0, 1e3, 1e4])
@pytest.mark.parametrize("a", [0.05, 1.0 - 1e-4, 1.0, 1.0 + 1e-9, 4.0])
def test_expected_purchases_new_matches_quadrature(a, t):
    r, alpha, b = 0.4, 3.0, 0.9
    expected = quad_purchases(r, alpha, a, b, 0, 0.0, 0.0, t)
    assert bgnbd.expected_purchases_new(r, alpha, a, b, t) == pytest.approx(expected, rel=1e-9)


def test_expected_purchases_smooth_across_a_equal_one():
    # the closed form has a removable singularity at a = 1; ours is smooth through it: values
    # near 1 lie on the parabola through a = 1 - 1e-3, 1, 1 + 1e-3
    h = np.array([-1e-3, -1e-6, -1e-12, 0.0, 1e-12, 1e-6, 1e-3])
    for t in (39.0, 1e4):
        e = bgnbd.expected_purchases(0.24, 4.4, 1.0 + h, 2.4, 3, 20.0, 38.0, t)
        c = np.polyfit(h[[0, 3, 6]], e[[0, 3, 6]], 2)
        np.testing.assert_allclose(e, np.polyval(c, h), rtol=1e-10)


@pytest.mark.slow
def test_predictions_match_quadrature_random_grid():
    gen = np.random.default_rng(3)
    for _ in range(300):
        r, alpha, a, b = np.exp(gen.uniform(np.log(1e-3), np.log(1e3), 4))
        if gen.random() < 0.3:
            a = 1.0 + gen.choice([-1, 1]) * 10 ** gen.uniform(-12, -2)
        x = int(gen.choice([0, 1, 3, 30, 1000, 10_000]))
        T = float(np.exp(gen.uniform(np.log(0.01), np.log(500))))
        t_x = 0.0 if x == 0 else T * gen.random()
        t = float(np.exp(gen.uniform(np.log(0.01), np.log(1e4))))
        case = (r, alpha, a, b, x, t_x, T, t)
        got = bgnbd.expected_purchases(r, alpha, a, b, x, t_x, T, t)
        assert got == pytest.approx(quad_purchases(*case), rel=1e-8), case
        got = bgnbd.p_alive_at(r, alpha, a, b, x, t_x, T, t)
        assert got == pytest.approx(quad_alive_at(*case), rel=1e-8, abs=1e-12), case


# --------------------------------------------------------------------------------------------
# cross-implementation: simulation of the model
# --------------------------------------------------------------------------------------------
def _within(sim_mean, sim_sd, n, exact, z=5.0):
    assert abs(sim_mean - exact) <= z * sim_sd / np.sqrt(n) + 1e-12, (sim_mean, exact)


def test_simulated_population_matches_p_alive_and_holdout(rng):
    # E[alive at T | history] = p_alive(history) and E[holdout purchases | history] =
    # expected_purchases(history) hold exactly for every customer, so the residuals average to
    # zero within any group defined by the history.
    n = 300_000
    T = rng.uniform(20.0, 39.0, n)
    sim = bgnbd.simulate(rng, *MLE, T, t_holdout=39.0)
    x, t_x = sim["frequency"], sim["recency"]
    pa = bgnbd.p_alive(*MLE, x, t_x, T)
    ep = bgnbd.expected_purchases(*MLE, x, t_x, T, 39.0)
    groups = [x == 0, x == 1, (x == 2) & (t_x > 25), (x >= 2) & (t_x <= 15), x >= 5]
    for g in groups:
        assert g.sum() > 2000
        res = sim["alive_at_T"][g] - pa[g]
        _within(res.mean(), res.std(), g.sum(), 0.0)
        res = sim["frequency_holdout"][g] - ep[g]
        _within(res.mean(), res.std(), g.sum(), 0.0)


def test_latent_draws_match_closed_forms(rng):
    n = 200_000
    customers = [(0, 0.0, 38.86), (2, 30.43, 38.86), (5, 10.0, 38.0), (26, 30.857, 31.0)]
    for x, t_x, T in customers:
        alive, lam, p = bgnbd.sample_latent(rng, *MLE, np.full(n, x), t_x, T)
        pa = bgnbd.p_alive(*MLE, x, t_x, T)
        _within(alive.mean(), np.sqrt(pa * (1 - pa)), n, pa)
        for t in (39.0, 520.0):
            counts = bgnbd.simulate_purchases(rng, alive, lam, p, t)
            _within(counts.mean(), counts.std(), n, bgnbd.expected_purchases(*MLE, x, t_x, T, t))
            stay = np.where(alive, np.exp(-lam * p * t), 0.0)  # P(no dropout in (T, T+t])
            _within(stay.mean(), stay.std(), n, bgnbd.p_alive_at(*MLE, x, t_x, T, t))
        # the alive component of the posterior: lambda ~ Gamma(r+x, alpha+T), p ~ Beta(a, b+x)
        r, alpha, a, b = MLE
        _within(lam[alive].mean(), lam[alive].std(), alive.sum(), (r + x) / (alpha + T))
        _within(p[alive].mean(), p[alive].std(), alive.sum(), a / (a + b + x))


def test_prob_purchases_is_a_distribution_with_the_right_mean():
    n = np.arange(0, 20_000)
    for params, t in ((MLE, 39.0), ((1.5, 0.2, 3.0, 0.5), 100.0), ((0.3, 2.0, 0.02, 50.0), 1e3)):
        probs = bgnbd.prob_purchases(*params, t, n)
        assert np.all(probs >= 0)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        mean = np.sum(n * probs)
        assert mean == pytest.approx(bgnbd.expected_purchases_new(*params, t), rel=1e-8)


def test_prob_purchases_matches_simulation(rng):
    n = 200_000
    sim = bgnbd.simulate(rng, *MLE, np.full(n, 39.0))
    counts = np.bincount(sim["frequency"], minlength=8)[:8] / n
    probs = bgnbd.prob_purchases(*MLE, 39.0, np.arange(8))
    np.testing.assert_array_less(
        np.abs(counts - probs), 5 * np.sqrt(probs * (1 - probs) / n) + 1e-4
    )
    _within(
        sim["frequency"].mean(), sim["frequency"].std(), n, bgnbd.expected_purchases_new(*MLE, 39.0)
    )


def test_simulate_purchase_times(rng):
    n = 100_000
    alive = rng.random(n) < 0.8
    lam = rng.gamma(2.0, 0.5, n)
    p = rng.beta(1.0, 4.0, n)
    counts, times = bgnbd.simulate_purchase_times(np.random.default_rng(5), alive, lam, p, 10.0)
    assert counts.dtype == np.int64 and times.shape == (counts.sum(),)
    assert np.all((times > 0) & (times <= 10.0))
    owner = np.repeat(np.arange(n), counts)
    assert np.all(np.diff(times)[owner[1:] == owner[:-1]] >= 0)  # ascending per customer
    assert np.all(counts[~alive] == 0)
    # same seed, same counts as simulate_purchases; mean count (1 - exp(-lam p t)) / p
    np.testing.assert_array_equal(
        counts, bgnbd.simulate_purchases(np.random.default_rng(5), alive, lam, p, 10.0)
    )
    exact = np.where(alive, -np.expm1(-lam * p * 10.0) / p, 0.0)
    res = counts - exact
    _within(res.mean(), res.std(), n, 0.0)
    # without dropout the purchase times are uniform on (0, t]
    c0, t0 = bgnbd.simulate_purchase_times(rng, np.ones(n, bool), 0.3, 0.0, 10.0)
    _within(c0.mean(), np.sqrt(3.0), n, 3.0)
    _within(t0.mean(), 10 / np.sqrt(12), t0.size, 5.0)


# --------------------------------------------------------------------------------------------
# domain, extremes, shapes
# --------------------------------------------------------------------------------------------
def test_finite_over_the_whole_prior_range():
    vals = np.array([1e-3, 1.0, 1e3])
    r, alpha, a, b = (v.reshape(-1, 1) for v in np.meshgrid(vals, vals, vals, vals, indexing="ij"))
    T = np.array([1e-3, 1.0, 40.0, 1e3])
    x = np.array([0.0, 1.0, 30.0, 10_000.0])
    xs, Ts, fr = (v.ravel() for v in np.meshgrid(x, T, [0.0, 0.5, 1.0], indexing="ij"))
    t_x = np.where(xs > 0, fr * Ts, 0.0)
    for fun in (bgnbd.loglik, bgnbd.p_alive):
        assert np.all(np.isfinite(fun(r, alpha, a, b, xs, t_x, Ts)))
    for t in (0.0, 1.0, 1e4):
        e = bgnbd.expected_purchases(r, alpha, a, b, xs, t_x, Ts, t)
        s = bgnbd.p_alive_at(r, alpha, a, b, xs, t_x, Ts, t)
        assert np.all(np.isfinite(e) & (e >= 0))
        assert np.all(np.isfinite(s) & (s >= 0) & (s <= 1))
        assert np.all(np.isfinite(bgnbd.expected_purchases_new(r, alpha, a, b, t)))
        probs = bgnbd.prob_purchases(r, alpha, a, b, t, np.array([0, 1, 50, 10_000]))
        assert np.all(np.isfinite(probs) & (probs >= 0) & (probs <= 1))


def test_limits():
    # t = 0: nothing happens yet
    assert bgnbd.expected_purchases(*MLE, 3, 20.0, 30.0, 0.0) == 0.0
    assert bgnbd.p_alive_at(*MLE, 3, 20.0, 30.0, 0.0) == pytest.approx(
        bgnbd.p_alive(*MLE, 3, 20.0, 30.0), rel=1e-14
    )
    assert bgnbd.prob_purchases(*MLE, 0.0, np.array([0, 1, 2])) == pytest.approx([1.0, 0.0, 0.0])
    # x = 0 customers are alive for sure; expected purchases increase with t; P(alive) decreases
    assert bgnbd.p_alive(*MLE, 0, 0.0, 30.0) == 1.0
    t = np.array([1.0, 10.0, 100.0, 1e3, 1e4])
    assert np.all(np.diff(bgnbd.expected_purchases(*MLE, 3, 20.0, 30.0, t)) > 0)
    assert np.all(np.diff(bgnbd.p_alive_at(*MLE, 3, 20.0, 30.0, t)) < 0)


def test_broadcasting_draws_against_customers(rng):
    shape = (2, 3, 1)
    r, alpha, a, b = (rng.uniform(0.5, 2.0, shape) for _ in range(4))
    x = np.array([0, 1, 4, 10, 2])
    t_x = np.array([0.0, 3.0, 20.0, 30.0, 35.0])
    T = np.full(5, 38.0)
    for fun, extra in (
        (bgnbd.loglik, ()),
        (bgnbd.p_alive, ()),
        (bgnbd.p_alive_at, (52.0,)),
        (bgnbd.expected_purchases, (52.0,)),
    ):
        out = fun(r, alpha, a, b, x, t_x, T, *extra)
        assert out.shape == (2, 3, 5)
        single = fun(r[1, 2, 0], alpha[1, 2, 0], a[1, 2, 0], b[1, 2, 0], x[3], t_x[3], T[3], *extra)
        assert out[1, 2, 3] == pytest.approx(single, rel=1e-12)
    assert bgnbd.expected_purchases_new(r, alpha, a, b, np.array([1.0, 52.0])).shape == (2, 3, 2)
    assert bgnbd.prob_purchases(r, alpha, a, b, 39.0, np.arange(4)).shape == (2, 3, 4)
    alive, lam, p = bgnbd.sample_latent(rng, r, alpha, a, b, x, t_x, T)
    assert alive.shape == lam.shape == p.shape == (2, 3, 5) and alive.dtype == bool


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: bgnbd.expected_purchases(*MLE, 2, 30.0, 38.0, -1.0),
            "t .* must be finite and >= 0",
        ),
        (lambda: bgnbd.p_alive(*MLE, 2, 40.0, 38.0), "recency must not exceed T"),
        (lambda: bgnbd.loglik(0.0, 4.0, 0.8, 2.4, 2, 30.0, 38.0), "parameter r must be positive"),
        (
            lambda: bgnbd.p_alive_at(0.2, 4.0, -1.0, 2.4, 2, 30.0, 38.0, 1.0),
            "parameter a must be positive",
        ),
        (
            lambda: bgnbd.expected_purchases(0.2, 4.0, 0.8, np.nan, 2, 30.0, 38.0, 1.0),
            "parameter b must be positive",
        ),
        (lambda: bgnbd.loglik(*MLE, -1, 0.0, 38.0), "frequency must be"),
        (lambda: bgnbd.p_alive(*MLE, 1, -0.5, 38.0), "recency must be"),
        (lambda: bgnbd.prob_purchases(*MLE, 39.0, 1.5), "n must be non-negative whole numbers"),
        (lambda: bgnbd.simulate_purchases(None, True, 1.0, 1.5, 1.0), r"p \(dropout probability"),
        (lambda: bgnbd.simulate(None, *MLE, np.array([1.0, -2.0])), "T .* must be finite and >= 0"),
    ],
)
def test_domain_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pytensor_loglik_matches_numpy():
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    x = np.array([0.0, 1.0, 2.0, 200.0])
    t_x = np.array([0.0, 5.0, 30.43, 38.0])
    T = np.array([38.86, 38.86, 38.86, 40.0])
    theta = pt.dvector("theta")
    ll = bgnbd.loglik(theta[0], theta[1], theta[2], theta[3], x, t_x, T, xp=pytensor_namespace())
    fn = pytensor.function([theta], [ll, pytensor.grad(ll.sum(), theta)], mode="FAST_COMPILE")
    value, grad = fn(np.array(MLE))
    np.testing.assert_allclose(value, bgnbd.loglik(*MLE, x, t_x, T), rtol=1e-12)
    assert np.all(np.isfinite(grad))
    # b < 1 with x = 0 customers: the unused branch must not poison the gradient
    _, grad = fn(np.array([0.2, 4.0, 0.8, 0.5]))
    assert np.all(np.isfinite(grad))


def test_math_layer_imports_without_pymc():
    import subprocess
    import sys

    code = (
        "import sys, clvbayes.math.bgnbd; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pymc', 'pytensor')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# weighted total log-likelihood and its gradient (the NUTS kernel)
# --------------------------------------------------------------------------------------------
SUM_POINTS = [
    MLE,
    (1e-3, 0.5, 2.0, 3.0),  # tiny r
    (2.0, 10.0, 1.0 + 1e-9, 0.5),  # a near 1, b < 1
    (50.0, 1e3, 40.0, 0.05),  # large r, alpha, a; small b
    (0.7, 1e-3, 0.3, 1e-3),  # tiny alpha and b: d far above the softplus cap
]


def _sum_histories(rng, n=3000):
    """Random weighted histories: zeros, ordinary and very frequent buyers (x up to 1e4)."""
    share = [0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.04, 0.02, 0.01]
    x = rng.choice([0, 1, 2, 3, 5, 8, 13, 40, 200, 10_000], size=n, p=share).astype(float)
    T = rng.choice(np.arange(1, 400) / 7.0, size=n)
    t_x = np.where(x > 0, np.round(rng.uniform(0, 1, n) * T * 7) / 7, 0.0)
    t_x[::7] = np.where(x[::7] > 0, T[::7], 0.0)  # last purchase at the end: D = 0
    w = rng.integers(0, 6, size=n)  # weight 0 histories are dropped
    return x, t_x, T, w


@pytest.fixture(
    params=[(8192, 2048, {"mixed"}, True), (8192, 2048, {"mixed"}, False),
            (64, 100, {"mixed", "one x"}, False), (7, 1, {"one x"}, False)],
    ids=["loop", "default", "small", "tiny"],
)  # fmt: skip
def sum_chunking(request, monkeypatch):
    """Chunk size, single-frequency threshold and the chunk kinds they give on the test data;
    the test data (~2,000 histories with x > 0) take the compiled loop unless it is turned
    off, so that the NumPy passes of large data are checked on the same histories."""
    chunk, block_min, kinds, loop = request.param
    monkeypatch.setattr(bgnbd, "_SUM_CHUNK", chunk)
    monkeypatch.setattr(bgnbd, "_SUM_BLOCK_MIN", block_min)
    monkeypatch.setattr(bgnbd, "_SUM_LOOP_MAX", bgnbd._SUM_LOOP_MAX if loop else 0)
    return kinds


@pytest.fixture(scope="module")
def symbolic_sum_and_grad():
    """``sum(w * loglik)`` and its PyTensor gradient, from the symbolic graph PyMC uses."""
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    theta = pt.dvector("theta", shape=(4,))
    x, t_x, T, w = (pt.dvector(n) for n in ("x", "t_x", "T", "w"))
    total = (w * bgnbd.loglik(*theta, x, t_x, T, xp=pytensor_namespace())).sum()
    fn = pytensor.function([theta, x, t_x, T, w], [total, pytensor.grad(total, theta)])
    return lambda params, x, t_x, T, w: fn(
        np.asarray(params, float), x, t_x, T, np.asarray(w, float)
    )


@pytest.mark.parametrize("params", SUM_POINTS)
def test_loglik_sum_and_grad_match_symbolic_gradient(
    params, sum_chunking, symbolic_sum_and_grad, rng
):
    x, t_x, T, w = _sum_histories(rng)
    data = bgnbd.prepare_loglik_sum(x, t_x, T, w)
    assert {"one x" if c[2] is None else "mixed" for c in data.chunks} == sum_chunking
    total, grad = bgnbd.loglik_sum_and_grad(*params, data)
    assert total == pytest.approx(np.sum(w * bgnbd.loglik(*params, x, t_x, T)), rel=1e-10)
    ref_total, ref_grad = symbolic_sum_and_grad(params, x, t_x, T, w)
    assert total == pytest.approx(ref_total, rel=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-7)


def test_compiled_digamma_matches_scipy():
    """The digamma of the compiled small-data kernel (recurrence + asymptotic series)."""
    from scipy import special

    x = np.r_[np.logspace(-6, 6, 400), 9.999999, 10.0, 10.000001, 1.0, 2.0, 0.5]
    got = np.array([_special.digamma_scalar(v) for v in x])
    np.testing.assert_allclose(got, special.digamma(x), rtol=2e-14, atol=2e-14)
    assert _special.digamma_scalar(np.inf) == np.inf
    assert np.isnan(_special.digamma_scalar(np.nan)) and np.isnan(_special.digamma_scalar(-np.inf))


def test_loglik_sum_gradient_matches_finite_differences(cdnow_summary):
    x, t_x, T = (cdnow_summary[c].to_numpy(float) for c in ("x", "t_x", "T"))
    w = np.ones_like(x)
    data = bgnbd.prepare_loglik_sum(x, t_x, T, w)
    for params in ((0.5, 3.0, 0.6, 4.0), (0.2426, 4.4136, 0.7929, 2.4259)):
        _, grad = bgnbd.loglik_sum_and_grad(*params, data)
        fd = np.empty(4)
        for i in range(4):  # central differences in log(parameter): step 1e-5 relative
            up, down = np.array(params), np.array(params)
            up[i] *= np.exp(1e-5)
            down[i] *= np.exp(-1e-5)
            diff = bgnbd.loglik(*up, x, t_x, T).sum() - bgnbd.loglik(*down, x, t_x, T).sum()
            fd[i] = diff / 2e-5 / params[i]
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


def test_loglik_sum_weights_equal_repeated_histories(rng):
    x, t_x, T, w = _sum_histories(rng, n=200)
    weighted = bgnbd.prepare_loglik_sum(x, t_x, T, w)
    rep = [np.repeat(v, w) for v in (x, t_x, T)]
    repeated = bgnbd.prepare_loglik_sum(*rep, np.ones(int(w.sum())))
    a, ga = bgnbd.loglik_sum_and_grad(*MLE, weighted)
    b, gb = bgnbd.loglik_sum_and_grad(*MLE, repeated)
    assert a == pytest.approx(b, rel=1e-12)
    np.testing.assert_allclose(ga, gb, rtol=1e-10)


def test_loglik_sum_without_repeat_buyers_and_empty():
    T = np.array([10.0, 20.0, 20.0])
    data = bgnbd.prepare_loglik_sum(np.zeros(3), np.zeros(3), T, [1, 2, 3])
    total, grad = bgnbd.loglik_sum_and_grad(*MLE, data)
    assert total == pytest.approx(np.sum([1, 2, 3] * bgnbd.loglik(*MLE, 0, 0, T)), rel=1e-12)
    assert grad.shape == (4,) and grad[2] == 0 and grad[3] == 0
    empty = bgnbd.prepare_loglik_sum([], [], [], [])
    total, grad = bgnbd.loglik_sum_and_grad(*MLE, empty)
    assert total == 0 and np.all(grad == 0)


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1, 2], "one entry per history"), ([1, -1, 2], "non-negative whole"),
     ([1, 0.5, 2], "non-negative whole"), ([1, np.nan, 2], "non-negative whole")],
)  # fmt: skip
def test_prepare_loglik_sum_rejects_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        bgnbd.prepare_loglik_sum([0, 1, 2], [0, 1, 2], [3, 3, 3], weights)


def test_prepare_loglik_sum_validates_histories():
    with pytest.raises(ValueError, match="recency must not exceed T"):
        bgnbd.prepare_loglik_sum([1], [5.0], [3.0], [1])


def test_loglik_sum_at_zero_or_infinite_parameters_is_not_finite_and_silent():
    """NUTS may probe overflowed or underflowed parameters: non-finite output, no exception."""
    data = bgnbd.prepare_loglik_sum([0, 1, 5, 200], [0, 1, 3, 30], [10, 10, 20, 40], [1, 2, 3, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for params in [(np.inf, 0.0, 0.0, np.inf), (0.0, 1.0, 1.0, 1.0), (1.0, np.inf, 1.0, 1.0)]:
            total, grad = bgnbd.loglik_sum_and_grad(*params, data)
            assert not (np.isfinite(total) and np.all(np.isfinite(grad))), params


# ---------------------------------------------------------------- scoring engines
def test_several_horizons_in_one_pass_equal_one_at_a_time():
    """The node axis (shared Beta factors) gives the same values as separate evaluations,
    for series and quadrature elements alike."""
    rng = np.random.default_rng(5)
    k = rng.uniform(0.05, 60, size=(40, 1))
    a = rng.uniform(0.1, 3, size=(40, 1))
    bb = rng.uniform(0.5, 80, size=(40, 1))
    s = np.sort(rng.uniform(0.01, 20, size=(40, 6)), axis=1)  # long horizons -> quadrature
    together = bgnbd._beta_expectation(bgnbd._PURCHASES, k, a, bb, s)
    apart = np.stack(
        [bgnbd._beta_expectation(bgnbd._PURCHASES, k[:, 0], a[:, 0], bb[:, 0], s[:, j]) for j in range(6)],
        axis=1,
    )  # fmt: skip
    np.testing.assert_allclose(together, apart, rtol=1e-13)
    for j in range(6):  # and against the independent quadrature
        i = 7
        want = _expected_by_quadrature_alive(k[i, 0], a[i, 0], bb[i, 0], s[i, j])
        assert together[i, j] == pytest.approx(want, rel=1e-9)


def _expected_by_quadrature_alive(k, a, bb, s):
    def f(p):
        return stats.beta.pdf(p, a, bb) * -np.expm1(-k * np.log1p(p * s)) / p

    return integrate.quad(f, 0, 1, limit=400, epsabs=1e-14, epsrel=1e-12)[0]


def test_active_futures_match_exact_expectations_and_reference_simulation():
    """The shared-arrival simulator is an exact draw for every (frequency, T): its means match
    the closed forms and its count distribution matches the plain per-customer simulator."""
    r, alpha, a, b = 0.7, 4.0, 0.8, 3.0
    p_val, q_val = 3.0, 5.0
    n_draws = 40_000
    x = np.array([0.0, 0.0, 3.0, 3.0, 3.0, 12.0])
    T = np.array([10.0, 60.0, 5.0, 20.0, 80.0, 30.0])
    horizon, period = 26.0, 1.0
    ends, factors = schedule(horizon, 0.01, period)
    fut = bgnbd.simulate_active_futures(
        11, *(np.full(n_draws, v) for v in (r, alpha, a, b)), x, T, horizon, period, factors,
        mark_shape=np.full(n_draws, p_val), mark_rate_shape=p_val * x + q_val + np.zeros((n_draws, 6)),
    )  # fmt: skip
    exact_n = bgnbd.expected_purchases_alive(r, alpha, a, b, x, T, horizon)
    exact_disc = discounted_increments(
        lambda t: bgnbd.expected_purchases_alive(r, alpha, a, b, x[:, None], T[:, None], t),
        scale=alpha + T.min(), ends=ends, factors=factors,
    )  # fmt: skip
    n = fut["purchases"]
    se = n.std(axis=0) / np.sqrt(n_draws)
    assert np.all(np.abs(n.mean(axis=0) - exact_n) < 4 * se)
    # values: E[sum g_j / G] = E[n] p / (p x + q - 1) (n, g and G independent)
    unit = p_val / (p_val * x + q_val - 1.0)
    for key, mean in (("value", exact_n * unit), ("discounted", exact_disc * unit), ("one", unit)):
        v = fut[key]
        assert np.all(np.abs(v.mean(axis=0) - mean) < 4.5 * v.std(axis=0) / np.sqrt(n_draws)), key
    # reference: per-customer latent draw + the plain process simulator
    rng = np.random.default_rng(3)
    lam, p = bgnbd.sample_latent_alive(rng, r, alpha, a, b, np.repeat(x[None], n_draws, 0), T)
    ref = bgnbd.simulate_purchases(rng, np.ones(lam.shape, dtype=bool), lam, p, horizon)
    for j in range(x.size):
        top = int(max(n[:, j].max(), ref[:, j].max())) + 1
        obs = np.stack([np.bincount(n[:, j].astype(int), minlength=top),
                        np.bincount(ref[:, j], minlength=top)])  # fmt: skip
        keep = obs.sum(axis=0) >= 20
        table = np.column_stack([obs[:, keep], obs[:, ~keep].sum(axis=1)])
        table = table[:, table.sum(axis=0) > 0]
        assert stats.chi2_contingency(table).pvalue > 1e-3, j
    with pytest.raises(ValueError, match="sorted by frequency"):
        bgnbd.simulate_active_futures(1, [r], [alpha], [a], [b], [3.0, 1.0], [5.0, 5.0], 10.0)


# --------------------------------------------------------------------------------------------
# extreme parameters: finite everywhere, and equal to high-precision values (issue 12 #6)
# --------------------------------------------------------------------------------------------
def _mp_beta_expectation(kind, k, a, bb, s, dps=30):
    """``E_p[(1 + p s)^-k]`` or ``E_p[(1 - (1 + p s)^-k) / p]``, ``p ~ Beta(a, bb)``, by mpmath.

    Independent of the implementation: tanh-sinh quadrature at ``dps`` digits, each side of
    the Beta mean ``m`` handled separately -- for a shape below 1 by the substitution
    ``u = (p / m)^a`` (``v = ((1 - p) / (1 - m))^bb`` on the right), which removes the
    endpoint singularity even at ``a = 1e-15`` (mass at ``p < 1e-1000``), otherwise in ``p``
    with breakpoints at the mean +/- 0.5 ... 64 sd (narrow peaks at ``a, bb ~ 1e6``).
    """
    mp = pytest.importorskip("mpmath")
    with mp.workdps(dps):
        k, a, bb, s = (mp.mpf(float(v)) for v in (k, a, bb, s))

        def f(p):
            log_f = -k * mp.log1p(p * s)
            return mp.exp(log_f) if kind == "survival" else -mp.expm1(log_f) / p

        m = a / (a + bb)
        log_b = mp.log(mp.beta(a, bb))
        sd = mp.sqrt(a * bb / ((a + bb) ** 2 * (a + bb + 1)))
        steps = [sd * j for j in (0.5, 1, 2, 4, 8, 16, 32, 64)]
        cuts = [0, 0.5, 0.9, 0.99, 0.999, 1]

        def dens(p):
            return f(p) * mp.exp((a - 1) * mp.log(p) + (bb - 1) * mp.log1p(-p) - log_b)

        if a < 1:
            left = mp.quad(
                lambda u: f(m * u ** (1 / a)) * mp.exp((bb - 1) * mp.log1p(-m * u ** (1 / a))), cuts
            )
            left *= mp.exp(a * mp.log(m) - mp.log(a) - log_b)
        else:
            left = mp.quad(dens, sorted({mp.mpf(0), m} | {m - d for d in steps if m - d > 0}))
        if bb < 1:

            def right_int(v):
                q = (1 - m) * v ** (1 / bb)
                return f(1 - q) * mp.exp((a - 1) * mp.log1p(-q))

            right = mp.quad(right_int, cuts) * mp.exp(bb * mp.log1p(-m) - mp.log(bb) - log_b)
        else:
            right = mp.quad(dens, sorted({mp.mpf(1), m} | {m + d for d in steps if m + d < 1}))
        return float(left + right)


def _mp_predictions(r, alpha, a, b, x, t_x, T, t):
    """(P(alive), E[purchases in (T, T+t]], P(alive at T+t)) at 30 digits."""
    import mpmath as mp

    with mp.workdps(30):
        r_, al, a_, b_, x_, tx, T_ = (mp.mpf(float(v)) for v in (r, alpha, a, b, x, t_x, T))
        odds = a_ / (b_ + x_ - 1) * ((al + T_) / (al + tx)) ** (r_ + x_) if x > 0 else 0
        alive = float(1 / (1 + odds))
        s = float(mp.mpf(float(t)) / (al + T_))
    if t == 0:
        return alive, 0.0, alive
    k, bb = float(mp.mpf(float(r)) + x), float(mp.mpf(float(b)) + x)
    return (
        alive,
        alive * _mp_beta_expectation("purchases", k, a, bb, s),
        alive * _mp_beta_expectation("survival", k, a, bb, s),
    )


def _extreme_points(seed: int, n: int):
    """Random points spanning r, alpha, a, b in [1e-15, 1e6] (log-uniform), x up to 10,000,
    horizons up to 10,000, recency 0, T / 2 or T."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        r, alpha, a, b = 10 ** rng.uniform(-15, 6, 4)
        x = float(rng.choice([0, 1, 2, 10, 300, 10_000]))
        T = float(rng.choice([1e-3, 1.0, 40.0, 1e4]))
        t_x = 0.0 if x == 0 else T * float(rng.choice([0.0, 0.5, 1.0]))
        t = float(rng.choice([0.0, 1e-6, 0.5, 52.0, 1e4]))
        yield r, alpha, a, b, x, t_x, T, t


def _check_against_mpmath(points):
    for point in points:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow / invalid-value warnings either
            got = (
                bgnbd.p_alive(*point[:-1]),
                bgnbd.expected_purchases(*point),
                bgnbd.p_alive_at(*point),
            )
        want = _mp_predictions(*point)
        for name, g, w in zip(
            ("p_alive", "expected_purchases", "p_alive_at"), got, want, strict=True
        ):
            assert np.isfinite(g), (name, point, g)
            # relative 1e-8; probabilities also to 1e-12 absolute (values below ~1e-40 are
            # only accurate in that sense: module docstring)
            atol = 0.0 if name == "expected_purchases" else 1e-12
            assert abs(g - w) <= 1e-8 * abs(w) + atol, (name, point, g, w)


ISSUE_POINT = (6.3, 1.41, 1e-15, 2.4, 21, 4.71, 4.71, 52)


def test_predictions_as_a_goes_to_zero_are_finite_and_exact():
    """Issue 12 #6: expected_purchases(6.3, 1.41, 1e-15, 2.4, 21, 4.71, 4.71, 52) was NaN.

    A 60-digit evaluation of FHL's eq. (10) (mpmath hyp2f1) gives 231.960784313725094616...;
    the limit a -> 0 is (r + x) t / (alpha + T) = 231.9607843137255 (p concentrates at 0: no
    dropout).
    """
    want = 231.960784313725094616902780397613888901941803051660329636279
    for a in (1e-300, 1e-100, 1e-15, 1e-12):
        point = (*ISSUE_POINT[:2], a, *ISSUE_POINT[3:])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            e = bgnbd.expected_purchases(*point)
            pa = bgnbd.p_alive_at(*point)
        assert e == pytest.approx(want, rel=1e-11 + 10 * a), a
        assert 1.0 - 1e-10 <= pa <= 1.0 + 1e-12, a
    _check_against_mpmath([ISSUE_POINT])


def test_tiny_b_and_tiny_r_keep_full_precision():
    """Siblings: b + x - 1 and k + m - 1 once rounded away a tiny b (or k) at x = 1 (5% error in
    P(alive) at b = 2e-15) and lost 2e-5 of E[purchases] at r + x = 1e-12."""
    _check_against_mpmath(
        [
            (0.0238, 4.6e-10, 7.25e-15, 2.22e-15, 1.0, 5000.0, 1e4, 1e4),
            (2.98e-15, 7.36e-08, 8.66e-06, 3.52e-11, 1.0, 0.5, 1.0, 1e-06),
            (7.9e-10, 2.21, 8.55e-4, 7922.5, 0.0, 0.0, 1e4, 0.5),
            (1e-12, 1.0, 0.5, 3.0, 0.0, 0.0, 10.0, 1.0),
        ]
    )


def test_predictions_match_mpmath_over_extreme_grid_fast():
    _check_against_mpmath(_extreme_points(0, 6))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_predictions_match_mpmath_over_extreme_grid(seed):
    """150 points per seed (600 in all; ~1 min per seed): no NaN/inf, 1e-8 relative."""
    _check_against_mpmath(_extreme_points(seed, 150))


def test_boundary_histories_and_horizons():
    """Siblings: t_x = T, x = 0 with huge alpha, huge T, horizon below one period, t = 0."""
    r, alpha, a, b = MLE
    cases = [
        (r, alpha, a, b, 5.0, 30.0, 30.0, 52.0),  # t_x = T
        (r, 1e6, a, b, 0.0, 0.0, 40.0, 52.0),  # x = 0, huge alpha
        (r, 1e-15, a, b, 0.0, 0.0, 40.0, 52.0),  # x = 0, tiny alpha
        (r, alpha, a, b, 3.0, 1e5, 1e6, 52.0),  # huge T
        (r, alpha, a, b, 3.0, 20.0, 30.0, 1e-13),  # horizon far below one period
        (r, alpha, a, b, 3.0, 20.0, 30.0, 0.0),  # t = 0
    ]
    _check_against_mpmath(cases)


@pytest.mark.slow
def test_all_parameters_huge():
    _check_against_mpmath([(1e6, 1e6, 1e6, 1e6, 10_000.0, 5.0, 10.0, 1e4)])


def test_domain_errors_name_the_parameter():
    from clvbayes.errors import ModelError

    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(
            ModelError, match=r"BG/NBD parameter a must be positive and finite.*a = "
        ):
            bgnbd.expected_purchases(0.2, 4.0, bad, 2.0, 1, 1, 2, 10)
    with pytest.raises(ModelError, match=r"parameter alpha .*1 of 3 values.*positions \[1\]"):
        bgnbd.p_alive_at(0.2, np.array([4.0, np.inf, 3.0]), 0.8, 2.0, 1, 1, 2, 10)
    with pytest.raises(ValueError, match=r"t \(a time horizon"):
        bgnbd.expected_purchases(0.2, 4.0, 0.8, 2.0, 1, 1, 2, np.inf)


# --------------------------------------------------------------------------------------------
# bounded-memory simulation (issue 12 #5)
# --------------------------------------------------------------------------------------------
def _exact_sums(lam, p, t, ends, factors):
    """E[purchases], E[discounted purchases] of an active customer with known (lam, p)."""
    F = -np.expm1(-lam * p * np.asarray(ends)) / p if p > 0 else lam * np.asarray(ends)
    return F[-1], float(np.diff(F, prepend=0.0) @ factors)


@pytest.mark.parametrize(
    "lam, p, horizon",
    [(2.0, 0.01, 100.0), (3.0, 0.0, 52.0), (1e5, 1e-7, 100.0), (1e9, 0.0, 1e4)],
    ids=["by-purchase", "no-dropout", "by-period", "huge-rate"],
)
def test_simulate_value_sums_matches_closed_forms(lam, p, horizon):
    """Both paths (purchase by purchase, period by period) are exact in law: means of counts,
    values and discounted values match the closed forms within 4.5 standard errors."""
    n = 4000 if lam < 1e4 else 400
    period = horizon / 10
    ends, factors = schedule(horizon, 0.02, period)
    shape, rate = 3.0, np.full(n, 0.5)
    sums = bgnbd.simulate_value_sums(
        3, np.ones(n, bool), np.full(n, lam), np.full(n, p), horizon, period, factors, shape, rate
    )
    e_n, e_disc = _exact_sums(lam, p, horizon, ends, factors)
    for key, want in (
        ("purchases", e_n),
        ("value", e_n * shape / 0.5),
        ("discounted", e_disc * shape / 0.5),
    ):
        v = sums[key]
        se = max(v.std() / np.sqrt(n), 1e-9 * want)
        assert abs(v.mean() - want) < 4.5 * se, (key, v.mean(), want)
    dead = bgnbd.simulate_value_sums(3, np.zeros(3, bool), np.full(3, lam), 0.1, horizon)
    assert np.all(dead["purchases"] == 0)


def test_simulate_value_sums_memory_does_not_grow_with_purchases():
    """1e13 expected purchases per customer: a few KiB, not one float per purchase."""
    import tracemalloc

    args = (
        np.ones(50, bool),
        np.full(50, 1e9),
        np.zeros(50),
        1e4,
        1.0,
        0.999 ** np.arange(1, 10_001),
        2.0,
        np.ones(50),
    )
    bgnbd.simulate_value_sums(1, *args)  # compile outside the measurement
    tracemalloc.start()
    out = bgnbd.simulate_value_sums(1, *args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak  # one float per purchase: 4e6 GB
    assert np.all(np.abs(out["purchases"] / 1e13 - 1) < 1e-5)


def test_heavy_active_futures_match_expectations_at_long_horizons():
    """Extreme-but-valid draws (dropout ~ 0, ~100 purchases per week) at horizon 10,000: the
    futures kernel switches to period-by-period simulation (before: one stored time per
    arrival, > 24 GB); means still match the closed forms."""
    import tracemalloc

    r, alpha, a, b = 400.0, 4.0, 1e-6, 3.0
    n_draws = 300
    x = np.array([2.0, 2.0, 50.0])
    T = np.array([10.0, 30.0, 20.0])
    horizon, period = 1e4, 100.0
    ends, factors = schedule(horizon, 0.01, period)
    params = [np.full(n_draws, v) for v in (r, alpha, a, b)]
    kw = dict(mark_shape=np.full(n_draws, 2.0), mark_rate_shape=np.full((n_draws, 3), 5.0))
    # compile (and load the cache) outside the measurement, with the same argument types
    bgnbd.simulate_active_futures(1, *params, x, T, 1.0, period, factors[:1], **kw)
    tracemalloc.start()
    fut = bgnbd.simulate_active_futures(9, *params, x, T, horizon, period, factors, **kw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak  # one float per purchase would be ~2 GB
    n = fut["purchases"]
    exact = bgnbd.expected_purchases_alive(r, alpha, a, b, x, T, horizon)
    assert np.all(np.abs(n.mean(axis=0) - exact) < 4.5 * n.std(axis=0) / np.sqrt(n_draws))
    exact_disc = discounted_increments(
        lambda t: bgnbd.expected_purchases_alive(r, alpha, a, b, x[:, None], T[:, None], t),
        scale=alpha + T.min(), ends=ends, factors=factors,
    )  # fmt: skip
    unit = 2.0 / (5.0 - 1.0)  # E[g / G] per purchase: shape E[1 / G], G ~ Gamma(5)
    d = fut["discounted"] / unit
    assert np.all(np.abs(d.mean(axis=0) - exact_disc) < 5 * d.std(axis=0) / np.sqrt(n_draws))


def _mp_loglik(r, alpha, a, b, x, t_x, T):
    import mpmath as mp

    with mp.workdps(40):
        r, al, a, b, x, tx, T = (mp.mpf(float(v)) for v in (r, alpha, a, b, x, t_x, T))
        common = mp.gamma(r + x) * al**r / (mp.gamma(r) * mp.beta(a, b))
        alive = mp.beta(a, b + x) * common / (al + T) ** (r + x)
        dead = mp.beta(a + 1, b + x - 1) * common / (al + tx) ** (r + x) if x > 0 else 0
        return float(mp.log(alive + dead))


def _mp_prob_purchases(r, alpha, a, b, t, n):
    import mpmath as mp

    with mp.workdps(40):
        r, al, a, b, t = (mp.mpf(float(v)) for v in (r, alpha, a, b, t))
        q = t / (al + t)
        nb = mp.gamma(r + n) / (mp.gamma(r) * mp.factorial(n)) * (1 - q) ** r * q**n
        out = mp.beta(a, b + n) / mp.beta(a, b) * nb
        if n > 0:
            tail = mp.betainc(n, r, 0, q, regularized=True)
            out += mp.beta(a + 1, b + n - 1) / mp.beta(a, b) * tail
        return float(out)


def test_loglik_and_prob_purchases_match_mpmath_over_extreme_grid():
    """FHL eqs. (6) and (8) at 40 digits over r, alpha, a, b in [1e-15, 1e6], x to 10,000.

    Siblings of the a -> 0 defect found by this grid and fixed: ``I_q(n, r)`` rounded to 1 when
    alpha << t (q = t / (alpha + t) rounds to 1; now the complement ``1 - I_(1-q)(r, n)`` with
    ``1 - q = alpha / (alpha + t)``), which made P(X(t) = 1) exceed 1; and ``b + n - 1`` lost a
    tiny b.
    """
    pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    for _ in range(120):
        r, alpha, a, b = 10 ** rng.uniform(-15, 6, 4)
        x = float(rng.choice([0, 1, 2, 10, 300, 10_000]))
        T = float(rng.choice([1e-3, 1.0, 40.0, 1e4]))
        t_x = 0.0 if x == 0 else T * float(rng.choice([0.0, 0.5, 1.0]))
        t = float(rng.choice([1e-6, 0.5, 52.0, 1e4]))
        n = int(rng.choice([0, 1, 3, 50]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ll = bgnbd.loglik(r, alpha, a, b, x, t_x, T)
            pp = bgnbd.prob_purchases(r, alpha, a, b, t, n)
        want = _mp_loglik(r, alpha, a, b, x, t_x, T)
        assert abs(ll - want) <= 1e-8 * max(1.0, abs(want)), (r, alpha, a, b, x, t_x, T)
        want = _mp_prob_purchases(r, alpha, a, b, t, n)
        assert abs(pp - want) <= 1e-8 * want + 1e-14, (r, alpha, a, b, t, n, pp, want)
