"""Tests of the BG/BB math layer (clvbayes.math.bgbb).

Layers: published reference values (donations, Fader, Hardie & Shang 2010 and the BTYD
walkthrough); cross-implementation checks (direct summation over the latent lifetime,
numerical integration over (p, theta), Monte Carlo simulation of the BG/BB process, finite
differences of the gradient, PyTensor vs NumPy); domain checks, error messages and extreme
inputs.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special

from clvbayes.errors import ModelError
from clvbayes.math import bgbb

MLE = (1.2035, 0.7497, 0.6567, 2.7834)
WALK = (1.203507, 0.7497667, 0.6567568, 2.783887)  # the BTYD walkthrough's estimates


@pytest.fixture(scope="module")
def donations():
    path = resources.files("clvbayes") / "datasets" / "files" / "donations_calibration.csv"
    with resources.as_file(path) as p:
        return pd.read_csv(p)


def _mle(df):
    data = bgbb.prepare_loglik_sum(df.frequency, df.recency, df.periods, df.weights)

    def f(th):
        v, g = bgbb.loglik_sum_and_grad(*np.exp(th), data)
        return -v, -g * np.exp(th)

    res = optimize.minimize(f, np.zeros(4), jac=True, method="BFGS", options={"gtol": 1e-9})
    return np.exp(res.x), -res.fun


# ------------------------------------------------------------------ references
def test_mle_on_donations(donations):
    params, ll = _mle(donations)
    np.testing.assert_allclose(params, MLE, rtol=5e-4)
    assert ll == pytest.approx(-33225.58, abs=0.05)
    per = bgbb.loglik(*params, donations.frequency, donations.recency, donations.periods)
    assert float(per @ donations.weights) == pytest.approx(ll, abs=1e-8)


def test_p_alive_reference():
    # P(alive at the next opportunity) at the MLE, n = 6
    np.testing.assert_allclose(
        bgbb.p_alive(*MLE, [0, 2, 6], [0, 4, 6], 6), [0.1081, 0.5897, 0.9304], atol=6e-5
    )


def test_expected_purchases_reference(donations):
    params, _ = _mle(donations)
    e = bgbb.expected_purchases(
        *params, donations.frequency, donations.recency, donations.periods, 5
    )
    assert float(e @ donations.weights) == pytest.approx(12884.16, abs=0.01)
    np.testing.assert_allclose(
        bgbb.expected_purchases(*WALK, [0, 4], [0, 5], 6, 10), [0.130234, 3.627943], atol=5e-7
    )


# ------------------------------------------------------------------ likelihood
def _loglik_direct(al, be, ga, de, x, t_x, n):
    """Eq. 5 summed term by term in plain floats (an independent implementation)."""
    B = lambda a, b: np.exp(special.betaln(a, b))  # noqa: E731
    tot = B(al + x, be + n - x) / B(al, be) * B(ga, de + n) / B(ga, de)
    for i in range(n - t_x):
        tot += B(al + x, be + t_x - x + i) / B(al, be) * B(ga + 1, de + t_x + i) / B(ga, de)
    return np.log(tot)


def test_loglik_matches_direct_sum_and_sums_to_one():
    params = (0.7, 1.9, 1.3, 0.4)
    n = 5
    total = 0.0
    for x in range(n + 1):
        for t_x in range(x, n + 1):
            if (x == 0) != (t_x == 0):
                continue
            ll = bgbb.loglik(*params, x, t_x, n)
            assert ll == pytest.approx(_loglik_direct(*params, x, t_x, n), rel=1e-12)
            # the histories with (x, t_x) group C(t_x - 1, x - 1) sequences
            mult = special.comb(t_x - 1, x - 1) if x > 0 else 1.0
            total += mult * np.exp(ll)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_gradient_matches_finite_differences(donations):
    data = bgbb.prepare_loglik_sum(
        donations.frequency, donations.recency, donations.periods, donations.weights
    )
    for th in ([1.1, 0.8, 0.7, 2.5], [0.05, 30.0, 4.0, 0.2], [8.0, 0.3, 0.01, 50.0]):
        th = np.array(th)
        _, g = bgbb.loglik_sum_and_grad(*th, data)
        h = 1e-6 * th
        fd = [
            (bgbb.loglik_sum_and_grad(*(th + e), data)[0]
             - bgbb.loglik_sum_and_grad(*(th - e), data)[0]) / (2 * e.sum())
            for e in np.diag(h)
        ]  # fmt: skip
        np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_loglik_sum_equals_weighted_loglik():
    rng = np.random.default_rng(3)
    sim = bgbb.simulate(rng, 0.9, 1.4, 0.5, 3.0, rng.integers(0, 30, 400))
    w = rng.integers(0, 4, 400)
    data = bgbb.prepare_loglik_sum(sim["frequency"], sim["recency"], sim["periods"], w)
    tot, _ = bgbb.loglik_sum_and_grad(0.9, 1.4, 0.5, 3.0, data)
    per = bgbb.loglik(0.9, 1.4, 0.5, 3.0, sim["frequency"], sim["recency"], sim["periods"])
    assert tot == pytest.approx(float(per @ w), rel=1e-12)


@pytest.mark.slow
def test_pytensor_loglik_matches_numpy():
    pytensor = pytest.importorskip("pytensor")
    import pytensor.tensor as pt

    from clvbayes.math._xp import pytensor_namespace

    x = np.array([0, 1, 3, 5, 2.0])
    t_x = np.array([0, 1, 4, 5, 7.0])
    n = np.array([6, 6, 6, 9, 7.0])
    p = pt.dvector("p")
    ll = bgbb.loglik(p[0], p[1], p[2], p[3], x, t_x, n, xp=pytensor_namespace(), max_terms=6)
    f = pytensor.function([p], [ll, pytensor.grad(ll.sum(), p)])
    for params in ([1.2, 0.75, 0.66, 2.8], [0.01, 50.0, 20.0, 0.01]):
        val, grad = f(np.array(params))
        np.testing.assert_allclose(val, bgbb.loglik(*params, x, t_x, n), rtol=1e-12, atol=1e-12)
        assert np.all(np.isfinite(grad))


def test_no_nan_for_long_histories_and_extreme_parameters():
    x = np.array([0, 1, 5000, 10_000, 1, 9_999])
    t_x = np.array([0, 10_000, 9_000, 10_000, 1, 10_000])
    n = np.full(6, 10_000)
    for params in (
        [1e-3, 1e3, 1e-3, 1e3],
        [1e3, 1e-3, 1e3, 1e-3],
        [1.0, 1.0, 1.0, 1.0],
        [1e-3, 1e-3, 1e-3, 1e-3],
        [1e3, 1e3, 1e3, 1e3],
        [2.0, 3.0, 1.0 + 1e-9, 4.0],
    ):
        ll = bgbb.loglik(*params, x, t_x, n)
        assert np.all(np.isfinite(ll)) and np.all(ll <= 1e-12)
        data = bgbb.prepare_loglik_sum(x, t_x, n, np.ones(6))
        tot, g = bgbb.loglik_sum_and_grad(*params, data)
        assert np.isfinite(tot) and np.all(np.isfinite(g))
        assert tot == pytest.approx(float(ll.sum()), rel=1e-10)
        for out in (bgbb.p_alive(*params, x, t_x, n),
                    bgbb.p_alive_at(*params, x, t_x, n, 10_000),
                    bgbb.expected_purchases(*params, x, t_x, n, 10_000),
                    bgbb.dert(*params, x, t_x, n, 0.05)):  # fmt: skip
            assert np.all(np.isfinite(out)) and np.all(out >= 0)
        assert np.all(bgbb.p_alive(*params, x, t_x, n) <= 1.0)


# ------------------------------------------------------------------ closed forms vs direct computation
def _post(params, x, t_x, n):
    """Latent posterior as explicit branches: list of (weight, a_p, b_p, a_th, b_th, alive)."""
    al, be, ga, de = params
    lb = special.betaln
    common = -lb(al, be) - lb(ga, de)
    br = [(lb(al + x, be + n - x) + lb(ga, de + n) + common, al + x, be + n - x, ga, de + n, 1)]
    for i in range(n - t_x):
        br.append((lb(al + x, be + t_x - x + i) + lb(ga + 1, de + t_x + i) + common,
                   al + x, be + t_x - x + i, ga + 1, de + t_x + i, 0))  # fmt: skip
    logw = np.array([b[0] for b in br])
    w = np.exp(logw - special.logsumexp(logw))
    return [(wi, *b[1:]) for wi, b in zip(w, br, strict=True)]


@pytest.mark.parametrize("gamma", [0.6567, 1.0, 1.0 + 1e-7, 1.0005, 3.2])
def test_expected_purchases_matches_direct_summation(gamma):
    params = (1.2, 0.75, gamma, 2.8)
    for x, t_x, n, n_star in ((0, 0, 6, 10), (4, 5, 6, 10), (2, 3, 3, 1), (1, 7, 20, 200)):
        (w, a_p, b_p, a_th, b_th, _), *_ = _post(params, x, t_x, n)
        direct = (
            w
            * a_p
            / (a_p + b_p)
            * sum(
                np.exp(special.betaln(a_th, b_th + t) - special.betaln(a_th, b_th))
                for t in range(1, n_star + 1)
            )
        )
        assert bgbb.expected_purchases(*params, x, t_x, n, n_star) == pytest.approx(
            direct, rel=1e-10
        )


def test_new_customer_forms():
    params = (1.2, 0.75, 0.66, 2.8)
    for n in (1, 6, 30):
        pmf = bgbb.prob_purchases_new(*params, n, np.arange(n + 1))
        assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
        assert pmf @ np.arange(n + 1) == pytest.approx(
            bgbb.expected_purchases_new(*params, n), rel=1e-10
        )
    # FHS eq. 8 closed form (gamma != 1)
    al, be, ga, de = params
    n = 6
    eq8 = al / (al + be) * de / (ga - 1) * (
        1 - np.exp(special.gammaln(ga + de) + special.gammaln(1 + de + n)
                   - special.gammaln(ga + de + n) - special.gammaln(1 + de))
    )  # fmt: skip
    assert bgbb.expected_purchases_new(*params, n) == pytest.approx(eq8, rel=1e-12)
    # FHS eq. 7 at k = 2, n = 6, by its sum over the lifetime
    B = lambda a, b: np.exp(special.betaln(a, b))  # noqa: E731
    k = 2
    eq7 = special.comb(n, k) * B(al + k, be + n - k) / B(al, be) * B(ga, de + n) / B(ga, de)
    for i in range(k, n):
        eq7 += (
            special.comb(i, k) * B(al + k, be + i - k) / B(al, be) * B(ga + 1, de + i) / B(ga, de)
        )
    assert bgbb.prob_purchases_new(*params, n, k) == pytest.approx(eq7, rel=1e-12)


def test_conditional_pmf_sums_to_one_and_matches_mean():
    params = (1.2, 0.75, 0.66, 2.8)
    k = np.arange(11)[:, None]
    x, t_x, n = np.array([0, 4, 6]), np.array([0, 5, 6]), 6
    pmf = bgbb.prob_purchases(*params, x, t_x, n, 10, k)
    np.testing.assert_allclose(pmf.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(
        (pmf * k).sum(axis=0), bgbb.expected_purchases(*params, x, t_x, n, 10), rtol=1e-10
    )


def test_p_alive_at_matches_latent_posterior():
    params = (1.2, 0.75, 0.66, 2.8)
    (w, *_), *_ = _post(params, 2, 4, 6)
    assert bgbb.p_alive_at(*params, 2, 4, 6, 0) == pytest.approx(w, rel=1e-12)
    assert bgbb.p_alive_at(*params, 2, 4, 6, 3) == pytest.approx(
        w * np.exp(special.betaln(0.66, 2.8 + 9) - special.betaln(0.66, 2.8 + 6)), rel=1e-12
    )


def test_dert_against_integration_and_truncated_sum():
    al, be, ga, de = (1.2, 0.75, 0.66, 2.8)
    x, t_x, n, d = 4, 5, 6, 0.1
    value = bgbb.dert(al, be, ga, de, x, t_x, n, d)
    # FHS eq. 14 via the series of 2F1 (scipy), an independent evaluation
    lb = special.betaln
    (w, *_), *_ = _post((al, be, ga, de), x, t_x, n)
    eq14 = (w * (al + x) / (al + be + n) * np.exp(lb(ga, de + n + 1) - lb(ga, de + n)) / (1 + d)
            * special.hyp2f1(1, de + n + 1, ga + de + n + 1, 1 / (1 + d)))  # fmt: skip
    assert value == pytest.approx(eq14, rel=1e-10)
    # truncated sum of discounted per-opportunity expectations
    e = bgbb.expected_purchases(al, be, ga, de, x, t_x, n, np.arange(0, 3001))
    trunc = np.sum(np.diff(e) / (1 + d) ** np.arange(1, 3001))
    assert value == pytest.approx(trunc, rel=1e-10)

    # direct numerical integration over (p, theta) of the alive branch
    def integrand(theta, p):
        dens = np.exp((al + x - 1) * np.log(p) + (be + n - x - 1) * np.log1p(-p) - lb(al + x, be + n - x)
                      + (ga - 1) * np.log(theta) + (de + n - 1) * np.log1p(-theta) - lb(ga, de + n))  # fmt: skip
        s = (1 - theta) / (1 + d)
        return dens * p * s / (1 - s)

    val, _ = integrate.dblquad(integrand, 0, 1, 0, 1, epsabs=1e-11, epsrel=1e-10)
    assert value == pytest.approx(w * val, rel=1e-6)


# ------------------------------------------------------------------ Monte Carlo
def test_closed_forms_match_simulation():
    rng = np.random.default_rng(11)
    params = (1.2, 0.75, 0.66, 2.8)
    m = 400_000
    sim = bgbb.simulate(rng, *params, np.full(m, 6), n_holdout=5)
    hold = sim["frequency_holdout"]
    # new-customer expectation over the 6 calibration opportunities
    assert sim["frequency"].mean() == pytest.approx(
        bgbb.expected_purchases_new(*params, 6), abs=4 * sim["frequency"].std() / np.sqrt(m)
    )
    for x, t_x in ((0, 0), (2, 4), (6, 6)):
        sel = (sim["frequency"] == x) & (sim["recency"] == t_x)
        assert sel.sum() > 2000
        se = hold[sel].std() / np.sqrt(sel.sum())
        assert hold[sel].mean() == pytest.approx(
            bgbb.expected_purchases(*params, x, t_x, 6, 5), abs=4 * se
        )
        pa = sim["alive"][sel].mean()
        assert pa == pytest.approx(
            bgbb.p_alive_at(*params, x, t_x, 6, 0), abs=4 * np.sqrt(pa * (1 - pa) / sel.sum())
        )
        # exact latent draws reproduce the same conditional future
        alive, p, theta = bgbb.sample_latent(rng, *params, np.full(50_000, x), t_x, 6)
        fut = bgbb.simulate_purchases(rng, alive, p, theta, 5)
        assert fut.mean() == pytest.approx(
            bgbb.expected_purchases(*params, x, t_x, 6, 5), abs=4 * fut.std() / np.sqrt(fut.size)
        )
        pmf = bgbb.prob_purchases(*params, x, t_x, 6, 5, np.arange(6))
        np.testing.assert_allclose(np.bincount(hold[sel], minlength=6) / sel.sum(), pmf, atol=0.02)


# ------------------------------------------------------------------ errors
def test_error_messages():
    with pytest.raises(ModelError, match="BG/BB parameter gamma must be positive and finite"):
        bgbb.p_alive(1, 1, -1, 1, 0, 0, 6)
    with pytest.raises(ValueError, match=r"recency must not exceed periods; 1 customers .* \[1\]"):
        bgbb.loglik(1, 1, 1, 1, [0, 2], [0, 7], [6, 6])
    with pytest.raises(ValueError, match="frequency must not exceed recency"):
        bgbb.loglik(1, 1, 1, 1, 3, 2, 6)
    with pytest.raises(ValueError, match="recency must be 0 exactly when frequency is 0"):
        bgbb.loglik(1, 1, 1, 1, 0, 2, 6)
    with pytest.raises(ValueError, match="periods must be a non-negative whole number"):
        bgbb.loglik(1, 1, 1, 1, 0, 0, 2.5)
    with pytest.raises(ValueError, match=r"n_star \(a number of opportunities\)"):
        bgbb.expected_purchases(1, 1, 1, 1, 0, 0, 6, -1)
    with pytest.raises(ValueError, match=r"discount_rate .* must be positive"):
        bgbb.dert(1, 1, 1, 1, 0, 0, 6, 0.0)
    with pytest.raises(ValueError, match="needs max_terms"):
        pytest.importorskip("pytensor")
        from clvbayes.math._xp import pytensor_namespace

        bgbb.loglik(1, 1, 1, 1, np.zeros(2), np.zeros(2), np.ones(2), xp=pytensor_namespace())
    with pytest.raises(ValueError, match="weights must have one entry per history"):
        bgbb.prepare_loglik_sum([0], [0], [6], [1, 2])


def test_sample_latent_with_inverse_matches_posterior():
    rng = np.random.default_rng(5)
    params = [np.array([[1.2], [1.0]]), 0.75, 0.66, 2.8]  # two "draws"
    x, t_x, n = np.array([0, 2, 6]), np.array([0, 4, 6]), np.array([6, 6, 6])
    inverse = np.repeat([0, 1, 2, 1], 40_000)
    alive, p, theta = bgbb.sample_latent(rng, *params, x, t_x, n, inverse=inverse)
    assert alive.shape == (2, inverse.size)
    fut = bgbb.simulate_purchases(rng, alive, p, theta, 5)
    for h in range(3):
        sel = inverse == h
        for s in range(2):
            exp = bgbb.expected_purchases(params[0][s, 0], *params[1:], x[h], t_x[h], n[h], 5)
            f = fut[s, sel]
            assert f.mean() == pytest.approx(exp, abs=4 * f.std() / np.sqrt(f.size) + 1e-12)
            pa = bgbb.p_alive_at(params[0][s, 0], *params[1:], x[h], t_x[h], n[h], 0)
            a = alive[s, sel].mean()
            assert a == pytest.approx(pa, abs=4 * np.sqrt(pa * (1 - pa) / sel.sum()) + 1e-12)
