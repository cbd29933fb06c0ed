"""Tests of the MBG/NBD math layer (clvbayes.math.mbgnbd).

Layers: reference values (the CDNOW MLE and the per-customer stability values of issue 14);
cross-implementation checks against numerical integration and the published hypergeometric
closed forms evaluated in 40-digit arithmetic (mpmath), and against Monte Carlo simulation with
a naive event-by-event simulator written here (independent of the library's simulators);
domain checks, extremes and shapes; and (slow) calibration of predictive intervals.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings

import mpmath as mp
import numpy as np
import pytest
from scipy import optimize

from clvbayes.math import bgnbd, mbgnbd

# MBG/NBD maximum-likelihood estimates on the CDNOW sample (weekly, 39-week calibration)
MLE = (0.5248, 6.1830, 0.8914, 1.6140)
MLE_LOGLIK = -9582.13


# --------------------------------------------------------------------------------------------
# independent references
# --------------------------------------------------------------------------------------------
def mp_likelihood(r, alpha, a, b, x, t_x, T):
    """The individual likelihood integrated over lambda and p by mpmath quadrature (no closed form)."""
    r, alpha, a, b, t_x, T = (mp.mpf(v) for v in (r, alpha, a, b, t_x, T))

    def p_int(n_stay, n_drop):  # E[(1-p)^n_stay p^n_drop], p ~ Beta(a, b)
        f = lambda p: (1 - p) ** (n_stay + b - 1) * p ** (n_drop + a - 1)  # noqa: E731
        return mp.quad(f, [0, mp.mpf(1) / 2, 1]) / mp.beta(a, b)

    def lam_int(end):  # E[lambda^x e^(-lambda end)], lambda ~ Gamma(r, alpha)
        f = lambda lam: lam ** (x + r - 1) * mp.exp(-lam * (alpha + end))  # noqa: E731
        mode = max(r + x - 1, 0) / (alpha + end)
        scale = mp.sqrt(r + x) / (alpha + end)
        pts = [0, mode, mode + 10 * scale, mode + 60 * scale, mp.inf]
        return mp.quad(f, sorted(set(pts))) * alpha**r / mp.gamma(r)

    return p_int(x + 1, 0) * lam_int(T) + p_int(x, 1) * lam_int(t_x)


def mp_p_alive(r, alpha, a, b, x, t_x, T):
    return 1 / (1 + mp.mpf(a) / (b + x) * ((mp.mpf(alpha) + T) / (mp.mpf(alpha) + t_x)) ** (r + x))


def mp_expected(r, alpha, a, b, x, t_x, T, t):
    """BDF's conditional expectation: hypergeometric closed form, 40 digits."""
    r, alpha, a, b, t_x, T, t = (mp.mpf(v) for v in (r, alpha, a, b, t_x, T, t))
    z = t / (alpha + T + t)
    bracket = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * mp.hyp2f1(
        r + x, b + x + 1, a + b + x, z
    )
    return (a + b + x) / (a - 1) * bracket * mp_p_alive(r, alpha, a, b, x, t_x, T)


def mp_alive_at(r, alpha, a, b, x, t_x, T, t):
    r, alpha, a, b, t_x, T, t = (mp.mpf(v) for v in (r, alpha, a, b, t_x, T, t))
    stay = mp.hyp2f1(r + x, a, a + b + x + 1, -t / (alpha + T))
    return stay * mp_p_alive(r, alpha, a, b, x, t_x, T)


def mp_expected_new(r, alpha, a, b, t):
    r, alpha, a, b, t = (mp.mpf(v) for v in (r, alpha, a, b, t))
    f = mp.hyp2f1(r, b + 1, a + b, t / (alpha + t))
    return b / (a - 1) * (1 - (alpha / (alpha + t)) ** r * f)


def mp_prob_active(k, rate, a, bb, t, n):
    """P(n purchases in t | active, lambda ~ Gamma(k, rate), p ~ Beta(a, bb)), finite sums."""
    k, rate, a, bb, t = (mp.mpf(v) for v in (k, rate, a, bb, t))
    q = t / (rate + t)

    def nb(j):
        return mp.gamma(k + j) / (mp.gamma(k) * mp.factorial(j)) * (1 - q) ** k * q**j

    out = mp.beta(a, bb + n) / mp.beta(a, bb) * nb(n)
    if n > 0:
        out += mp.beta(a + 1, bb + n - 1) / mp.beta(a, bb) * (1 - mp.fsum(nb(j) for j in range(n)))
    return out


def mp_prob_new(r, alpha, a, b, t, n):
    """BDF's P(X(t) = n): B(a, b+n+1)/B(a,b) NB + B(a+1, b+n)/B(a,b) (1 - sum_{j<n} NB_j)."""
    r, alpha, a, b, t = (mp.mpf(v) for v in (r, alpha, a, b, t))
    q = t / (alpha + t)

    def nb(j):
        return mp.gamma(r + j) / (mp.gamma(r) * mp.factorial(j)) * (1 - q) ** r * q**j

    tail = 1 - mp.fsum(nb(j) for j in range(n))
    return (
        mp.beta(a, b + n + 1) / mp.beta(a, b) * nb(n) + mp.beta(a + 1, b + n) / mp.beta(a, b) * tail
    )


def naive_simulate(rng, r, alpha, a, b, T, t_holdout):
    """Event-by-event simulation of the MBG/NBD story (independent of the library's simulators).

    Coin at the first purchase; then repeat: wait Exp(lambda), buy, coin.  Returns frequency,
    recency, holdout purchases and whether each customer is active at T.
    """
    n = T.size
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    active = rng.random(n) >= p
    now = np.zeros(n)
    freq = np.zeros(n, dtype=np.int64)
    hold = np.zeros(n, dtype=np.int64)
    rec = np.zeros(n)
    alive_T = active.copy()
    end = T + t_holdout
    idx = np.flatnonzero(active)
    while idx.size:
        now[idx] += rng.exponential(1.0, idx.size) / lam[idx]
        inside = now[idx] <= end[idx]
        idx = idx[inside]  # the others stay active beyond the window
        cal = now[idx] <= T[idx]
        freq[idx[cal]] += 1
        rec[idx[cal]] = now[idx[cal]]
        hold[idx[~cal]] += 1
        drop = rng.random(idx.size) < p[idx]
        alive_T[idx[drop & cal]] = False
        idx = idx[~drop]
    return {"frequency": freq, "recency": rec, "frequency_holdout": hold, "alive_at_T": alive_T}


def _within(sim_mean, sim_sd, n, exact, z=5.0):
    assert abs(sim_mean - exact) <= z * sim_sd / np.sqrt(n) + 1e-12, (sim_mean, exact)


# --------------------------------------------------------------------------------------------
# reference values
# --------------------------------------------------------------------------------------------
def test_loglik_stability_values():
    # r=0.25, alpha=4, a=0.8, b=2.5, T=40 (issue 14).  Positive for x = 200: like BG/NBD's it is
    # the density of the purchase times (log of 1/week^x), not a probability.
    ll = mbgnbd.loglik(0.25, 4.0, 0.8, 2.5, np.array([0, 200]), np.array([0.0, 38.0]), 40.0)
    np.testing.assert_allclose(ll, [-0.41792826, 100.7869], atol=5e-5)
    assert ll[0] == pytest.approx(-0.41792826, abs=5e-9)
    # x = 0: L = b/(a+b) (alpha/(alpha+T))^r + a/(a+b): dropped at the first purchase or no purchase
    assert ll[0] == pytest.approx(np.log(2.5 / 3.3 * (4 / 44) ** 0.25 + 0.8 / 3.3), rel=1e-14)


def test_cdnow_maximum_likelihood(cdnow):
    x, t_x, T = (cdnow[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    data = mbgnbd.prepare_loglik_sum(x, t_x, T, np.ones_like(x))

    def f(theta):
        total, grad = mbgnbd.loglik_sum_and_grad(*np.exp(theta), data)
        return -total, -grad * np.exp(theta)

    res = optimize.minimize(f, np.zeros(4), jac=True, method="BFGS", options={"gtol": 1e-9})
    np.testing.assert_allclose(np.exp(res.x), MLE, rtol=5e-3)
    assert -res.fun == pytest.approx(MLE_LOGLIK, abs=0.01)
    assert np.sum(mbgnbd.loglik(*np.exp(res.x), x, t_x, T)) == pytest.approx(-res.fun, rel=1e-12)


# --------------------------------------------------------------------------------------------
# log-likelihood: numerical integration, identity with BG/NBD, sum and gradient, PyTensor
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "x", "t_x", "T"),
    [
        (MLE, 0, 0.0, 38.86),
        (MLE, 2, 30.43, 38.86),
        (MLE, 7, 12.0, 35.0),
        ((2.0, 0.5, 3.0, 0.4), 1, 0.2, 10.0),
        ((0.05, 30.0, 0.3, 15.0), 4, 50.0, 52.0),
        ((0.25, 4.0, 0.8, 2.5), 40, 38.0, 40.0),
    ],
)
def test_loglik_matches_numerical_integration(params, x, t_x, T):
    with mp.workdps(30):
        expected = float(mp.log(mp_likelihood(*params, x, t_x, T)))
    assert mbgnbd.loglik(*params, x, t_x, T) == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_loglik_is_bgnbd_at_b_plus_one_plus_first_purchase_dropout(rng):
    """The identity the sum/gradient engine and the predictions rest on (module docstring)."""
    x, t_x, T, _ = _histories(rng, 500)
    for r, alpha, a, b in (MLE, (3.0, 0.2, 0.01, 40.0), (0.01, 300.0, 20.0, 0.02)):
        got = mbgnbd.loglik(r, alpha, a, b, x, t_x, T)
        zero = np.where(x == 0, np.logaddexp(0, np.log(a / b) + r * np.log1p(T / alpha)), 0.0)
        ref = bgnbd.loglik(r, alpha, a, b + 1, x, t_x, T) - np.log1p(a / b) + zero
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)


def _histories(rng, n=3000):
    """Random weighted histories: zeros, ordinary and very frequent buyers (x up to 1e4)."""
    share = [0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.04, 0.02, 0.01]
    x = rng.choice([0, 1, 2, 3, 5, 8, 13, 40, 200, 10_000], size=n, p=share).astype(float)
    T = rng.choice(np.arange(1, 400) / 7.0, size=n)
    t_x = np.where(x > 0, np.round(rng.uniform(0, 1, n) * T * 7) / 7, 0.0)
    t_x[::7] = np.where(x[::7] > 0, T[::7], 0.0)
    w = rng.integers(0, 6, size=n)
    return x, t_x, T, w


SUM_POINTS = [MLE, (1e-3, 0.5, 2.0, 3.0), (2.0, 10.0, 1.0, 0.5), (50.0, 1e3, 40.0, 0.05),
              (0.7, 1e-3, 0.3, 1e-3)]  # fmt: skip


@pytest.mark.parametrize("params", SUM_POINTS)
def test_loglik_sum_and_grad_match_loglik_and_finite_differences(params, rng):
    x, t_x, T, w = _histories(rng)
    data = mbgnbd.prepare_loglik_sum(x, t_x, T, w)
    total, grad = mbgnbd.loglik_sum_and_grad(*params, data)

    def f(p):
        return float(np.sum(w * mbgnbd.loglik(*p, x, t_x, T)))

    assert total == pytest.approx(f(params), rel=1e-11)
    fd = np.empty(4)
    for i in range(4):  # central differences in log(parameter), step 1e-5
        up, down = np.array(params), np.array(params)
        up[i] *= np.exp(1e-5)
        down[i] *= np.exp(-1e-5)
        fd[i] = (f(up) - f(down)) / 2e-5 / params[i]
    rounding = 1e-10 * np.abs(total) / np.array(params)  # of the differenced totals
    assert np.all(np.abs(grad - fd) <= 1e-6 * np.abs(fd) + rounding), (grad, fd)


def test_loglik_sum_and_grad_match_symbolic_gradient(rng):
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    x, t_x, T, w = _histories(rng, 400)
    theta = pt.dvector("theta", shape=(4,))
    ll = mbgnbd.loglik(*theta, x, t_x, T, xp=pytensor_namespace())
    total = (w * ll).sum()
    fn = pytensor.function([theta], [total, pytensor.grad(total, theta)], mode="FAST_COMPILE")
    data = mbgnbd.prepare_loglik_sum(x, t_x, T, w)
    for params in SUM_POINTS:
        ref_total, ref_grad = fn(np.array(params))
        got_total, got_grad = mbgnbd.loglik_sum_and_grad(*params, data)
        assert got_total == pytest.approx(ref_total, rel=1e-10)
        np.testing.assert_allclose(got_grad, ref_grad, rtol=1e-7)


def test_loglik_sum_weights_and_special_tables():
    T = np.array([10.0, 20.0, 20.0])
    data = mbgnbd.prepare_loglik_sum(np.zeros(3), np.zeros(3), T, [1, 2, 3])
    total, grad = mbgnbd.loglik_sum_and_grad(*MLE, data)
    assert total == pytest.approx(np.sum([1, 2, 3] * mbgnbd.loglik(*MLE, 0, 0, T)), rel=1e-12)
    np.testing.assert_array_equal(data.zero_T_values, [10.0, 20.0])
    np.testing.assert_array_equal(data.zero_T_weights, [1.0, 5.0])
    empty = mbgnbd.prepare_loglik_sum([], [], [], [])
    total, grad = mbgnbd.loglik_sum_and_grad(*MLE, empty)
    assert total == 0 and np.all(grad == 0)


def test_loglik_sum_at_zero_or_infinite_parameters_is_not_finite_and_silent():
    data = mbgnbd.prepare_loglik_sum([0, 1, 5, 200], [0, 1, 3, 30], [10, 10, 20, 40], [1, 2, 3, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for params in [(np.inf, 0.0, 0.0, np.inf), (0.0, 1.0, 1.0, 1.0), (1.0, np.inf, 1.0, 1.0)]:
            total, grad = mbgnbd.loglik_sum_and_grad(*params, data)
            assert not (np.isfinite(total) and np.all(np.isfinite(grad))), params


def test_pytensor_loglik_matches_numpy_with_finite_gradient():
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    x = np.array([0.0, 1.0, 2.0, 200.0, 10_000.0])
    t_x = np.array([0.0, 5.0, 30.43, 38.0, 39.0])
    T = np.array([38.86, 38.86, 38.86, 40.0, 39.0])
    theta = pt.dvector("theta")
    ll = mbgnbd.loglik(*(theta[i] for i in range(4)), x, t_x, T, xp=pytensor_namespace())
    fn = pytensor.function([theta], [ll, pytensor.grad(ll.sum(), theta)], mode="FAST_COMPILE")
    for params in (MLE, (0.2, 4.0, 0.8, 0.05), (1e-3, 1e3, 1e3, 1e-3)):
        value, grad = fn(np.array(params))
        np.testing.assert_allclose(value, mbgnbd.loglik(*params, x, t_x, T), rtol=1e-12, atol=1e-12)
        assert np.all(np.isfinite(grad))


# --------------------------------------------------------------------------------------------
# predictions against the published closed forms (40 digits)
# --------------------------------------------------------------------------------------------
# (r, alpha, a, b, x, t_x, T, t): a near 1 (removable singularity), long horizons, large x
PREDICTION_GRID = [
    (*MLE, 0, 0.0, 38.86, 39.0),
    (*MLE, 2, 30.43, 38.86, 39.0),
    (*MLE, 0, 0.0, 38.86, 1e4),
    (*MLE, 26, 30.86, 31.0, 52.0),
    (0.2426, 4.4136, 1.0 + 1e-7, 2.4259, 3, 20.0, 38.86, 52.0),
    (0.2426, 4.4136, 1.0 - 1e-4, 0.5, 0, 0.0, 10.0, 300.0),
    (1.0, 1.0, 0.3, 0.4, 0, 0.0, 5.0, 1e3),
    (3.0, 50.0, 2.0, 1e3, 10_000, 100.0, 104.0, 1e4),
    (0.01, 5.0, 0.8, 1e3, 1, 4.0, 40.0, 1e4),
    (5.0, 0.01, 0.02, 30.0, 100, 7.0, 8.0, 1e4),
]


@pytest.mark.parametrize("case", PREDICTION_GRID)
def test_predictions_match_published_closed_forms(case):
    r, alpha, a, b, x, t_x, T, t = case
    with mp.workdps(40):
        e_ref, s_ref = float(mp_expected(*case)), float(mp_alive_at(*case))
        pa_ref = float(mp_p_alive(r, alpha, a, b, x, t_x, T))
    assert mbgnbd.p_alive(r, alpha, a, b, x, t_x, T) == pytest.approx(pa_ref, rel=1e-12)
    assert mbgnbd.expected_purchases(*case) == pytest.approx(e_ref, rel=1e-9)
    assert mbgnbd.p_alive_at(*case) == pytest.approx(s_ref, rel=1e-9, abs=1e-13)
    alive_part = mbgnbd.expected_purchases_alive(r, alpha, a, b, x, T, t)
    assert alive_part * pa_ref == pytest.approx(e_ref, rel=1e-9)


@pytest.mark.parametrize("t", [0.1, 1.0, 39.0, 1e3, 1e4])
@pytest.mark.parametrize("a", [0.05, 1.0 - 1e-5, 1.0 + 1e-7, 4.0])
def test_expected_purchases_new_matches_closed_form(a, t):
    r, alpha, b = 0.4, 3.0, 0.9
    with mp.workdps(40):
        ref = float(mp_expected_new(r, alpha, a, b, t))
    assert mbgnbd.expected_purchases_new(r, alpha, a, b, t) == pytest.approx(ref, rel=1e-9)
    # a new customer is the history x = 0, t_x = 0, T = 0
    assert mbgnbd.expected_purchases(r, alpha, a, b, 0, 0.0, 0.0, t) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(
    ("params", "t"), [(MLE, 39.0), ((1.5, 0.2, 3.0, 0.5), 100.0), ((0.3, 2.0, 0.02, 50.0), 1e3)]
)
def test_prob_purchases_matches_closed_form_and_is_a_distribution(params, t):
    n = np.arange(0, 12)
    with mp.workdps(40):
        ref = [float(mp_prob_new(*params, t, int(k))) for k in n]
    np.testing.assert_allclose(mbgnbd.prob_purchases(*params, t, n), ref, rtol=1e-9, atol=1e-15)
    n = np.arange(0, 30_000)
    probs = mbgnbd.prob_purchases(*params, t, n)
    assert np.all(probs >= 0) and probs.sum() == pytest.approx(1.0, abs=1e-9)
    mean = np.sum(n * probs)
    assert mean == pytest.approx(mbgnbd.expected_purchases_new(*params, t), rel=1e-8)


@pytest.mark.parametrize(
    "case", [(*MLE, 0, 0.0, 38.86, 39.0), (*MLE, 2, 30.43, 38.86, 39.0), (*MLE, 10, 20.0, 39.0, 52.0),
             (2.0, 0.5, 3.0, 0.4, 1, 0.2, 10.0, 5.0)],
)  # fmt: skip
def test_conditional_prob_purchases_matches_closed_form_and_moments(case):
    r, alpha, a, b, x, t_x, T, t = case
    n = np.arange(0, 10)
    with mp.workdps(40):
        pa = mp_p_alive(r, alpha, a, b, x, t_x, T)
        ref = [
            float(
                pa * mp_prob_active(r + x, alpha + T, a, b + x + 1, t, int(k)) + (k == 0) * (1 - pa)
            )
            for k in n
        ]
    got = mbgnbd.conditional_prob_purchases(*case, n)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-15)
    n = np.arange(0, 20_000)
    probs = mbgnbd.conditional_prob_purchases(*case, n)
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.sum(n * probs) == pytest.approx(mbgnbd.expected_purchases(*case), rel=1e-8)


# --------------------------------------------------------------------------------------------
# Monte Carlo: the naive simulator of the model
# --------------------------------------------------------------------------------------------
def test_population_simulation_matches_closed_forms(rng):
    # E[alive at T | history] = p_alive and E[holdout | history] = expected_purchases for every
    # customer: residuals average to zero within any group defined by the history.
    n = 200_000
    T = rng.uniform(20.0, 39.0, n)
    sim = naive_simulate(rng, *MLE, T, 39.0)
    x, t_x = sim["frequency"], sim["recency"]
    pa = mbgnbd.p_alive(*MLE, x, t_x, T)
    ep = mbgnbd.expected_purchases(*MLE, x, t_x, T, 39.0)
    for g in (x == 0, x == 1, (x == 2) & (t_x > 25), (x >= 2) & (t_x <= 15), x >= 5):
        assert g.sum() > 2000
        res = sim["alive_at_T"][g] - pa[g]
        _within(res.mean(), res.std(), g.sum(), 0.0)
        res = sim["frequency_holdout"][g] - ep[g]
        _within(res.mean(), res.std(), g.sum(), 0.0)
    # new-customer count distribution at t = 39 (customers with T = 39 exactly)
    T39 = np.full(n, 39.0)
    counts = naive_simulate(rng, *MLE, T39, 0.0)["frequency"]
    freq = np.bincount(counts, minlength=8)[:8] / n
    probs = mbgnbd.prob_purchases(*MLE, 39.0, np.arange(8))
    np.testing.assert_array_less(np.abs(freq - probs), 5 * np.sqrt(probs * (1 - probs) / n) + 1e-4)
    _within(counts.mean(), counts.std(), n, mbgnbd.expected_purchases_new(*MLE, 39.0))


def test_library_simulator_matches_naive_simulator(rng):
    n = 200_000
    T = rng.uniform(5.0, 39.0, n)
    params = (0.8, 3.0, 1.5, 2.0)
    ours = mbgnbd.simulate(rng, *params, T, t_holdout=20.0)
    ref = naive_simulate(rng, *params, T, 20.0)
    for key in ("frequency", "frequency_holdout", "alive_at_T", "recency"):
        a, b = ours[key].astype(float), ref[key].astype(float)
        sd = np.sqrt((a.var() + b.var()) / n)
        assert abs(a.mean() - b.mean()) <= 5 * sd, key
    for k in range(4):
        pa, pb = np.mean(ours["frequency"] == k), np.mean(ref["frequency"] == k)
        assert abs(pa - pb) <= 5 * np.sqrt(2 * pa * (1 - pa) / n), k
    assert not ours["alive_at_T"][ours["dropped_at_start"]].any()
    assert np.all(ours["frequency"][ours["dropped_at_start"]] == 0)


def test_latent_draws_match_closed_forms(rng):
    n = 200_000
    r, alpha, a, b = MLE
    for x, t_x, T in [(0, 0.0, 38.86), (2, 30.43, 38.86), (5, 10.0, 38.0), (26, 30.857, 31.0)]:
        alive, lam, p = mbgnbd.sample_latent(rng, *MLE, np.full(n, x), t_x, T)
        pa = mbgnbd.p_alive(*MLE, x, t_x, T)
        _within(alive.mean(), np.sqrt(pa * (1 - pa)), n, pa)
        for t in (39.0, 520.0):
            counts = mbgnbd.simulate_purchases(rng, alive, lam, p, t)
            _within(counts.mean(), counts.std(), n, mbgnbd.expected_purchases(*MLE, x, t_x, T, t))
            stay = np.where(alive, np.exp(-lam * p * t), 0.0)
            _within(stay.mean(), stay.std(), n, mbgnbd.p_alive_at(*MLE, x, t_x, T, t))
        freq = np.bincount(counts, minlength=4)[:4] / n  # t = 520
        probs = mbgnbd.conditional_prob_purchases(*MLE, x, t_x, T, 520.0, np.arange(4))
        np.testing.assert_array_less(
            np.abs(freq - probs), 5 * np.sqrt(probs * (1 - probs) / n) + 1e-4
        )
        # both components: E[lambda] and E[p] of the two-part posterior
        e_lam = pa * (r + x) / (alpha + T) + (1 - pa) * (r + x) / (alpha + t_x)
        _within(lam.mean(), lam.std(), n, e_lam)
        e_p = pa * a / (a + b + x + 1) + (1 - pa) * (a + 1) / (a + b + x + 1)
        _within(p.mean(), p.std(), n, e_p)
    lam_a, p_a = mbgnbd.sample_latent_alive(rng, *MLE, np.full(n, 3), 30.0)
    _within(lam_a.mean(), lam_a.std(), n, (r + 3) / (alpha + 30.0))
    _within(p_a.mean(), p_a.std(), n, a / (a + b + 4))


def test_active_futures_match_expected_purchases_alive():
    r, alpha, a, b = (np.full(4000, v) for v in MLE)
    x, T = np.array([0.0, 0.0, 3.0, 3.0]), np.array([20.0, 38.0, 20.0, 38.0])
    out = mbgnbd.simulate_active_futures(7, r, alpha, a, b, x, T, 52.0)["purchases"]
    exact = mbgnbd.expected_purchases_alive(*MLE, x, T, 52.0)
    _within(0.0, out.std(axis=0).max(), out.shape[0], np.max(np.abs(out.mean(axis=0) - exact)))


def test_simulate_purchase_times_delegates_to_bgnbd(rng):
    alive = np.array([True, True, False])
    counts, times = mbgnbd.simulate_purchase_times(rng, alive, np.array([2.0, 0.5, 3.0]), 0.3, 10.0)
    assert counts[2] == 0 and times.size == counts.sum() and np.all((times > 0) & (times <= 10))


# --------------------------------------------------------------------------------------------
# domain, extremes, shapes
# --------------------------------------------------------------------------------------------
def test_finite_over_extreme_parameters_frequencies_and_horizons():
    vals = np.array([1e-3, 1.0, 1e3])
    r, alpha, a, b = (v.reshape(-1, 1) for v in np.meshgrid(vals, vals, vals, vals, indexing="ij"))
    T = np.array([1e-3, 1.0, 40.0, 1e3])
    x = np.array([0.0, 1.0, 30.0, 10_000.0])
    xs, Ts, fr = (v.ravel() for v in np.meshgrid(x, T, [0.0, 0.5, 1.0], indexing="ij"))
    t_x = np.where(xs > 0, fr * Ts, 0.0)
    for fun in (mbgnbd.loglik, mbgnbd.p_alive):
        assert np.all(np.isfinite(fun(r, alpha, a, b, xs, t_x, Ts)))
    pa = mbgnbd.p_alive(r, alpha, a, b, xs, t_x, Ts)
    assert np.all((pa >= 0) & (pa <= 1))
    for t in (0.0, 1.0, 1e4):
        e = mbgnbd.expected_purchases(r, alpha, a, b, xs, t_x, Ts, t)
        s = mbgnbd.p_alive_at(r, alpha, a, b, xs, t_x, Ts, t)
        assert np.all(np.isfinite(e) & (e >= 0))
        assert np.all(np.isfinite(s) & (s >= 0) & (s <= 1))
        assert np.all(np.isfinite(mbgnbd.expected_purchases_new(r, alpha, a, b, t)))
        probs = mbgnbd.prob_purchases(r, alpha, a, b, t, np.array([0, 1, 50, 10_000]))
        assert np.all(np.isfinite(probs) & (probs >= 0) & (probs <= 1 + 1e-12))
        cond = mbgnbd.conditional_prob_purchases(r, alpha, a, b, xs, t_x, Ts, t, 0)
        assert np.all(np.isfinite(cond) & (cond >= 0) & (cond <= 1 + 1e-12))
    data = mbgnbd.prepare_loglik_sum(xs, t_x, Ts, np.ones_like(xs))
    for params in itertools.product(vals, repeat=4):
        total, grad = mbgnbd.loglik_sum_and_grad(*params, data)
        assert np.isfinite(total) and np.all(np.isfinite(grad)), params


def test_finite_for_draws_from_the_default_priors():
    """300 draws of the model's default priors (HalfCauchy shapes reach ~1e3), x up to 1e4."""
    from scipy import stats

    gen = np.random.default_rng(1)
    r, alpha = stats.halfnorm(scale=10).rvs(300, gen), stats.halfnorm(scale=200).rvs(300, gen)
    a, b = stats.halfcauchy().rvs(300, gen), stats.halfcauchy().rvs(300, gen)
    params = [v[:, None] for v in (r, alpha, a, b)]
    x = np.array([0.0, 1.0, 5.0, 100.0, 10_000.0])
    T = np.array([39.0, 39.0, 20.0, 39.0, 39.0])
    t_x = np.array([0.0, 3.0, 19.0, 38.0, 39.0])
    assert np.all(np.isfinite(mbgnbd.loglik(*params, x, t_x, T)))
    for t in (1.0, 52.0, 1e4):
        for fun in (mbgnbd.expected_purchases, mbgnbd.p_alive_at):
            assert np.all(np.isfinite(fun(*params, x, t_x, T, t))), (fun.__name__, t)
        n = np.array([0, 1, 50, 10_000])
        cond = mbgnbd.conditional_prob_purchases(*params, x, t_x, T, t, n[:, None, None])
        assert np.all(np.isfinite(cond) & (cond >= 0) & (cond <= 1 + 1e-12))
        assert np.all(np.isfinite(mbgnbd.prob_purchases(*params, t, n)))
        assert np.all(np.isfinite(mbgnbd.expected_purchases_new(*params, t)))
    data = mbgnbd.prepare_loglik_sum(x, t_x, T, np.ones(5))
    for i in range(0, 300, 10):
        total, grad = mbgnbd.loglik_sum_and_grad(r[i], alpha[i], a[i], b[i], data)
        assert np.isfinite(total) and np.all(np.isfinite(grad))


def test_limits():
    assert mbgnbd.expected_purchases(*MLE, 3, 20.0, 30.0, 0.0) == 0.0
    assert mbgnbd.p_alive_at(*MLE, 3, 20.0, 30.0, 0.0) == pytest.approx(
        mbgnbd.p_alive(*MLE, 3, 20.0, 30.0), rel=1e-14
    )
    probs = mbgnbd.prob_purchases(*MLE, 0.0, np.array([0, 1, 2]))
    assert probs == pytest.approx([1.0, 0.0, 0.0])
    r, alpha, a, b = MLE
    # unlike BG/NBD, x = 0 customers may be gone: dropout right after the first purchase
    assert mbgnbd.p_alive(*MLE, 0, 0.0, 30.0) == pytest.approx(
        1 / (1 + a / b * (1 + 30 / alpha) ** r), rel=1e-14
    )
    assert mbgnbd.p_alive(*MLE, 0, 0.0, 0.0) == pytest.approx(b / (a + b), rel=1e-14)
    # repeat buyers get BG/NBD's predictions at b + 1
    for f, g in ((mbgnbd.expected_purchases, bgnbd.expected_purchases),
                 (mbgnbd.p_alive_at, bgnbd.p_alive_at)):  # fmt: skip
        assert f(*MLE, 3, 20.0, 30.0, 52.0) == pytest.approx(
            g(r, alpha, a, b + 1, 3, 20.0, 30.0, 52.0), rel=1e-13
        )
    t = np.array([1.0, 10.0, 100.0, 1e3, 1e4])
    assert np.all(np.diff(mbgnbd.expected_purchases(*MLE, 3, 20.0, 30.0, t)) > 0)
    assert np.all(np.diff(mbgnbd.p_alive_at(*MLE, 0, 0.0, 30.0, t)) < 0)


def test_broadcasting_draws_against_customers(rng):
    shape = (2, 3, 1)
    r, alpha, a, b = (rng.uniform(0.5, 2.0, shape) for _ in range(4))
    x = np.array([0, 1, 4, 10, 2])
    t_x = np.array([0.0, 3.0, 20.0, 30.0, 35.0])
    T = np.full(5, 38.0)
    for fun, extra in (
        (mbgnbd.loglik, ()),
        (mbgnbd.p_alive, ()),
        (mbgnbd.p_alive_at, (52.0,)),
        (mbgnbd.expected_purchases, (52.0,)),
        (mbgnbd.conditional_prob_purchases, (52.0, 1)),
    ):
        out = fun(r, alpha, a, b, x, t_x, T, *extra)
        assert out.shape == (2, 3, 5)
        single = fun(r[1, 2, 0], alpha[1, 2, 0], a[1, 2, 0], b[1, 2, 0], x[3], t_x[3], T[3], *extra)
        assert out[1, 2, 3] == pytest.approx(single, rel=1e-12)
    assert mbgnbd.expected_purchases_new(r, alpha, a, b, np.array([1.0, 52.0])).shape == (2, 3, 2)
    assert mbgnbd.prob_purchases(r, alpha, a, b, 39.0, np.arange(4)).shape == (2, 3, 4)
    alive, lam, p = mbgnbd.sample_latent(rng, r, alpha, a, b, x, t_x, T)
    assert alive.shape == lam.shape == p.shape == (2, 3, 5) and alive.dtype == bool


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mbgnbd.expected_purchases(*MLE, 2, 30.0, 38.0, -1.0), "t .* must be finite and >= 0"),
        (lambda: mbgnbd.p_alive(*MLE, 2, 40.0, 38.0), "recency must not exceed T"),
        (lambda: mbgnbd.loglik(0.0, 4.0, 0.8, 2.4, 2, 30.0, 38.0), "MBG/NBD parameter r must be positive"),
        (lambda: mbgnbd.p_alive_at(0.2, 4.0, -1.0, 2.4, 2, 30.0, 38.0, 1.0), "MBG/NBD parameter a must be"),
        (lambda: mbgnbd.prob_purchases(0.2, 4.0, 0.8, np.nan, 39.0, 1), "MBG/NBD parameter b must be"),
        (lambda: mbgnbd.simulate(None, 0.2, -4.0, 0.8, 1.0, [1.0]), "MBG/NBD parameter alpha must be"),
        (lambda: mbgnbd.loglik(*MLE, -1, 0.0, 38.0), "frequency must be"),
        (lambda: mbgnbd.p_alive(*MLE, [0, 1], [2.0, 1.0], 38.0),
         r"recency must be 0 where frequency is 0 .* at positions \[0\] \(recency \[2.0\]\)"),
        (lambda: mbgnbd.prepare_loglik_sum([0], [1.0], [3.0], [1]), "recency must be 0 where frequency is 0"),
        (lambda: mbgnbd.prob_purchases(*MLE, 39.0, 1.5), "n must be non-negative whole numbers"),
        (lambda: mbgnbd.conditional_prob_purchases(*MLE, 1, 1.0, 3.0, 1.0, -1), "n must be non-negative"),
        (lambda: mbgnbd.simulate_purchases(None, True, 1.0, 1.5, 1.0), r"p \(dropout probability"),
        (lambda: mbgnbd.simulate(None, *MLE, np.array([1.0, -2.0])), "T .* must be finite and >= 0"),
        (lambda: mbgnbd.prepare_loglik_sum([0, 1], [0, 1], [3, 3], [1, -1]), "non-negative whole"),
    ],
)  # fmt: skip
def test_domain_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_math_layer_imports_without_pymc():
    code = (
        "import sys, clvbayes.math.mbgnbd; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pymc', 'pytensor')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# statistical: predictive intervals calibrated on data simulated from the model
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_predictive_intervals_are_calibrated_on_simulated_data():
    """Randomised PIT of holdout counts at the MLE of simulated data: 90% intervals cover 90 +/- 3%.

    Holdout counts are discrete, so ``u = F(y - 1) + V P(Y = y)`` (``V`` uniform) is used; it is
    uniform when the predictive distribution is right.  Checked for the closed-form conditional
    distribution and for the posterior-predictive draws (latent state, then the future).
    """
    rng = np.random.default_rng(14)
    n = 20_000
    true = (0.6, 5.0, 0.9, 2.0)
    T = rng.uniform(10.0, 39.0, n)
    sim = naive_simulate(rng, *true, T, 39.0)
    x, t_x, y = sim["frequency"].astype(float), sim["recency"], sim["frequency_holdout"]
    data = mbgnbd.prepare_loglik_sum(x, t_x, T, np.ones(n))

    def f(theta):
        total, grad = mbgnbd.loglik_sum_and_grad(*np.exp(theta), data)
        return -total, -grad * np.exp(theta)

    fit = np.exp(optimize.minimize(f, np.zeros(4), jac=True, method="BFGS").x)
    np.testing.assert_allclose(fit, true, rtol=0.25)
    k = np.arange(int(y.max()) + 1)[:, None]
    pmf = mbgnbd.conditional_prob_purchases(*fit, x, t_x, T, 39.0, k)
    cdf = np.cumsum(pmf, axis=0)
    idx = np.arange(n)
    below = np.where(y > 0, cdf[np.maximum(y - 1, 0), idx], 0.0)
    u = below + rng.random(n) * pmf[y, idx]
    covered = np.mean((u > 0.05) & (u < 0.95))
    assert covered == pytest.approx(0.90, abs=0.03)
    assert np.mean(u < 0.5) == pytest.approx(0.5, abs=0.03)
    # posterior-predictive draws: rank of y among 200 draws per customer, ties randomised
    draws = np.stack(
        [mbgnbd.simulate_purchases(rng, *mbgnbd.sample_latent(rng, *fit, x, t_x, T), 39.0)
         for _ in range(200)]
    )  # fmt: skip
    less, equal = (draws < y).mean(axis=0), (draws == y).mean(axis=0)
    u_sim = less + rng.random(n) * equal
    assert np.mean((u_sim > 0.05) & (u_sim < 0.95)) == pytest.approx(0.90, abs=0.03)
