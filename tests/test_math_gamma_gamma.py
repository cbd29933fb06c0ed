"""Tests for clvbayes.math.gamma_gamma.

Layers: reference (published CDNOW fit of Fader & Hardie 2013), cross-implementation
(numerical integration with scipy, Monte Carlo simulation, the PyTensor build of the same
log-likelihood), numerical stability and pinned error messages.
"""

import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special, stats

from clvbayes.math import gamma_gamma as gg

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "clvbayes" / "datasets" / "files" / "cdnow_summary.csv"

# Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value", CDNOW sample, 946 repeat buyers.
CDNOW_P, CDNOW_Q, CDNOW_GAMMA, CDNOW_LL = 6.2488, 3.7446, 15.4478, -4055.92


@pytest.fixture
def rng():
    return np.random.default_rng(20130101)


@pytest.fixture(scope="module")
def cdnow():
    return pd.read_csv(DATA)


# --------------------------------------------------------------------------------------------
# reference: the published CDNOW numbers
# --------------------------------------------------------------------------------------------
def test_cdnow_maximum_likelihood_matches_published_fit(cdnow):
    repeat = cdnow[cdnow["x"] >= 1]
    assert len(repeat) == 946
    x, m = repeat["x"].to_numpy(), repeat["zbar"].to_numpy()

    def neg_ll(log_params):
        p, q, g = np.exp(log_params)
        return -np.sum(gg.loglik(p, q, g, x, m))

    res = optimize.minimize(
        neg_ll,
        np.zeros(3),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-9, "maxiter": 10_000},
    )
    p, q, g = np.exp(res.x)
    assert p == pytest.approx(CDNOW_P, rel=5e-3)
    assert q == pytest.approx(CDNOW_Q, rel=5e-3)
    assert g == pytest.approx(CDNOW_GAMMA, rel=5e-3)
    assert -res.fun == pytest.approx(CDNOW_LL, abs=0.05)


def test_cdnow_conditional_expected_spend_first_ten_customers(cdnow):
    first = cdnow.head(10)
    got = gg.expected_spend(CDNOW_P, CDNOW_Q, CDNOW_GAMMA, first["x"], first["zbar"])
    published = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    np.testing.assert_allclose(got, published, atol=0.01)
    # customers without repeat purchases get the population mean
    pop = gg.population_mean_spend(CDNOW_P, CDNOW_Q, CDNOW_GAMMA)
    np.testing.assert_allclose(got[first["x"].to_numpy() == 0], pop)


# --------------------------------------------------------------------------------------------
# the density: numerical integration
# --------------------------------------------------------------------------------------------
DENSITY_CASES = [
    # p, q, gamma, x
    (6.2488, 3.7446, 15.4478, 1),
    (6.2488, 3.7446, 15.4478, 20),
    (0.5, 0.8, 2.0, 3),
    (50.0, 2.0, 100.0, 200),
    (0.05, 30.0, 0.3, 7),
]


@pytest.mark.parametrize(("p", "q", "g", "x"), DENSITY_CASES)
def test_loglik_integrates_to_one_over_monetary_value(p, q, g, x):
    # integrate in u = log(zbar), centred on a typical value p * gamma / q
    u0 = np.log(p * g / q)

    def integrand(u):
        return np.exp(gg.loglik(p, q, g, x, np.exp(u)) + u)

    total, _ = integrate.quad(
        integrand, u0 - 80, u0 + 80, points=[u0], limit=500, epsabs=1e-12, epsrel=1e-10
    )
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("p", "q", "g", "x"), DENSITY_CASES)
@pytest.mark.parametrize("m_scale", [0.2, 1.0, 5.0])
def test_loglik_equals_gamma_mixture_over_spend_rate(p, q, g, x, m_scale):
    # f(zbar) = ∫ Gamma(zbar; p x, rate x nu) Gamma(nu; q, rate gamma) d nu, done by quad in
    # t = log(nu) with scipy.stats densities; divided by exp(loglik) the integral must be 1.
    m = m_scale * p * g / q
    ll = gg.loglik(p, q, g, x, m)
    # nu | zbar ~ Gamma(p x + q, gamma + x zbar): centre on its mode, window of 40 sd of log(nu)
    t0 = np.log((p * x + q) / (g + x * m))
    width = 40 * np.sqrt(special.polygamma(1, p * x + q))

    def integrand(t):
        nu = np.exp(t)
        log_f = (
            stats.gamma.logpdf(m, a=p * x, scale=1 / (x * nu))
            + stats.gamma.logpdf(nu, a=q, scale=1 / g)
            + t
        )
        return np.exp(log_f - ll)

    total, _ = integrate.quad(
        integrand, t0 - width, t0 + width, points=[t0], limit=500, epsabs=1e-12, epsrel=1e-10
    )
    assert total == pytest.approx(1.0, abs=1e-6)


def test_zbar_of_simulated_transactions_follows_loglik(rng):
    # Simulate individual transactions (not the Gamma(p x, x nu) shortcut), then compare the
    # share of customers whose mean falls in each bin with the integral of exp(loglik) there.
    p, q, g, x, n = 2.0, 4.0, 30.0, 3, 200_000
    sim = gg.simulate(rng, p, q, g, np.full(n, x))
    edges = np.quantile(sim["monetary_value"], [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    edges[0], edges[-1] = 0.0, np.inf
    observed = np.histogram(sim["monetary_value"], edges)[0] / n
    expected = np.array(
        [
            integrate.quad(lambda z: np.exp(gg.loglik(p, q, g, x, z)), lo, hi)[0]
            for lo, hi in itertools.pairwise(edges)
        ]
    )
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(observed - expected) < 4 * se)


def test_loglik_is_zero_for_customers_without_repeat_transactions():
    out = gg.loglik(2.0, 3.0, 10.0, np.array([0, 0, 2]), np.array([0.0, 7.0, 12.0]))
    assert out[0] == 0.0 and out[1] == 0.0 and np.isfinite(out[2]) and out[2] < 0


def test_loglik_broadcasts_posterior_draws_against_customers(rng):
    p = rng.uniform(1, 5, size=(2, 3, 1))
    x, m = np.array([1, 4, 9, 0]), np.array([10.0, 20.0, 5.0, 0.0])
    out = gg.loglik(p, 3.0, 10.0, x, m)
    assert out.shape == (2, 3, 4) and out.dtype == np.float64
    np.testing.assert_allclose(out[1, 2], gg.loglik(p[1, 2, 0], 3.0, 10.0, x, m))


def test_pytensor_build_of_loglik_matches_numpy():
    pt = pytest.importorskip("pytensor.tensor")
    import pytensor

    from clvbayes.math._xp import pytensor_namespace

    x = np.array([0, 1, 2, 5, 40, 10_000], dtype=float)
    m = np.array([0.0, 1e-3, 3.0, 25.0, 400.0, 1e6])
    sp, sq, sg = pt.dscalar("p"), pt.dscalar("q"), pt.dscalar("gamma")
    f = pytensor.function([sp, sq, sg], gg.loglik(sp, sq, sg, x, m, xp=pytensor_namespace()))
    for p, q, g in [(6.2488, 3.7446, 15.4478), (1e-3, 1e3, 1e-3), (1e3, 1e-3, 1e3), (0.7, 1.3, 2)]:
        # the NumPy path takes log B from Stirling's series where an argument is large; the
        # symbolic one from gammaln differences, ~1e-8 off at p x = 1e7 (9.6e-9 vs mpmath)
        np.testing.assert_allclose(f(p, q, g), gg.loglik(p, q, g, x, m), rtol=1e-10, atol=3e-8)


# --------------------------------------------------------------------------------------------
# expectations: Monte Carlo
# --------------------------------------------------------------------------------------------
MC_P, MC_Q, MC_GAMMA = 3.0, 6.0, 20.0


def test_population_mean_spend_matches_simulation(rng):
    n = 400_000
    sim = gg.simulate(rng, MC_P, MC_Q, MC_GAMMA, np.ones(n, dtype=int))
    z = sim["monetary_value"]
    closed = gg.population_mean_spend(MC_P, MC_Q, MC_GAMMA)
    assert isinstance(closed, float)
    assert abs(z.mean() - closed) < 4 * z.std() / np.sqrt(n)


@pytest.mark.parametrize("x", [1, 4])
def test_expected_spend_matches_next_transaction_in_simulation(rng, x):
    # Customers with the same x and a z-bar in a bin: the mean of their NEXT transaction value
    # (simulated independently) must equal the mean of expected_spend over the bin.
    n = 400_000
    sim = gg.simulate(rng, MC_P, MC_Q, MC_GAMMA, np.full(n, x))
    nxt = gg.simulate_transaction_values(rng, MC_P, sim["nu"], np.ones(n, dtype=int))
    zbar = sim["monetary_value"]
    for lo, hi in [(0.10, 0.15), (0.50, 0.55), (0.90, 0.95)]:
        in_bin = (zbar >= np.quantile(zbar, lo)) & (zbar < np.quantile(zbar, hi))
        predicted = gg.expected_spend(MC_P, MC_Q, MC_GAMMA, x, zbar[in_bin]).mean()
        se = nxt[in_bin].std() / np.sqrt(in_bin.sum())
        assert abs(nxt[in_bin].mean() - predicted) < 4 * se


@pytest.mark.parametrize(("x", "m"), [(0, 0.0), (1, 10.0), (5, 30.0), (100, 2.0)])
def test_sample_spend_rate_posterior_mean_equals_expected_spend(rng, x, m):
    n = 200_000
    nu = gg.sample_spend_rate(rng, MC_P, MC_Q, MC_GAMMA, np.full(n, x), np.full(n, m))
    mean_value = MC_P / nu
    closed = gg.expected_spend(MC_P, MC_Q, MC_GAMMA, x, m)
    assert abs(mean_value.mean() - closed) < 4 * mean_value.std() / np.sqrt(n)


def test_sample_spend_rate_broadcasts_draws_against_customers(rng):
    p = np.full((2, 3, 1), 2.0)
    out = gg.sample_spend_rate(rng, p, 3.0, 10.0, np.array([0, 1, 5, 9]), np.array([0, 1, 2, 3]))
    assert out.shape == (2, 3, 4) and np.all(out > 0)


def test_expected_spend_zero_frequency_gives_population_mean_and_ignores_value():
    out = gg.expected_spend(2.0, 3.0, 10.0, [0, 0], [0.0, 123.0])
    np.testing.assert_allclose(out, 2.0 * 10.0 / 2.0)


def test_expected_spend_is_credibility_weighted_mean(rng):
    p = rng.uniform(1, 5, size=(2, 3, 1))
    x, m = np.array([1, 4, 0]), np.array([10.0, 20.0, 0.0])
    out = gg.expected_spend(p, 3.0, 10.0, x, m)
    assert out.shape == (2, 3, 3)
    # weight (q - 1) / (p x + q - 1) on the population mean p gamma / (q - 1), the rest on z-bar
    w = 2.0 / (p * x + 2.0)
    np.testing.assert_allclose(out, w * p * 10.0 / 2.0 + (1 - w) * m)


# --------------------------------------------------------------------------------------------
# simulation helpers
# --------------------------------------------------------------------------------------------
def test_simulate_transaction_values_keeps_customers_in_order(rng):
    nu = np.array([1e-3, 1.0, 1e3])
    values = gg.simulate_transaction_values(rng, 50.0, nu, [2, 0, 3])
    assert values.shape == (5,)
    # shape 50 => each value within 50% of its customer's mean p / nu
    np.testing.assert_allclose(values, [5e4, 5e4, 0.05, 0.05, 0.05], rtol=0.5)


def test_simulate_returns_zero_monetary_value_without_transactions(rng):
    sim = gg.simulate(rng, 2.0, 3.0, 10.0, [0, 3, 0, 1])
    assert set(sim) == {"nu", "frequency", "monetary_value"}
    assert sim["monetary_value"][0] == 0.0 and sim["monetary_value"][2] == 0.0
    assert np.all(sim["monetary_value"][[1, 3]] > 0) and np.all(sim["nu"] > 0)


# --------------------------------------------------------------------------------------------
# numerical stability
# --------------------------------------------------------------------------------------------
GRID = np.array([1e-3, 1.0, 1e3])


def test_no_nan_or_inf_over_parameter_and_data_grid(rng):
    # 27 parameter sets (shape (27, 1)) against 9 customers (every (x, m) pair)
    p, q, g = (a.reshape(-1, 1) for a in np.meshgrid(GRID, GRID, GRID, indexing="ij"))
    x, m = (a.ravel() for a in np.meshgrid([1.0, 10.0, 1e4], [1e-3, 1.0, 1e6], indexing="ij"))
    ll = gg.loglik(p, q, g, x, m)
    assert ll.shape == (27, 9) and np.all(np.isfinite(ll))
    nu = gg.sample_spend_rate(rng, p, q, g, x, m)
    assert np.all(np.isfinite(nu)) and np.all(nu >= 0)
    ok = (p + q > 1).ravel()  # the smallest x in the grid is 1
    es = gg.expected_spend(p[ok], q[ok], g[ok], x, m)
    assert np.all(np.isfinite(es)) and np.all(es > 0)
    with pytest.raises(ValueError, match=r"p \* x \+ q > 1"):
        gg.expected_spend(p[~ok], q[~ok], g[~ok], x, m)
    big_q = q.ravel() > 1
    pm = gg.population_mean_spend(p.ravel()[big_q], q.ravel()[big_q], g.ravel()[big_q])
    assert np.all(np.isfinite(pm))


# --------------------------------------------------------------------------------------------
# domain errors (messages pinned)
# --------------------------------------------------------------------------------------------
def test_population_mean_spend_needs_q_above_one():
    with pytest.raises(ValueError, match=r"needs q > 1.*2 of 3 parameter draws have q <= 1"):
        gg.population_mean_spend(1.0, [0.5, 2.0, 1.0], 1.0)


def test_expected_spend_reports_how_many_draws_violate_domain():
    p = np.array([0.1, 0.1, 2.0, 0.3]).reshape(2, 2, 1)
    x, m = np.array([1, 5]), np.array([3.0, 4.0])
    with pytest.raises(ValueError, match=r"p \* x \+ q > 1.*3 of 4 parameter draws violate it"):
        gg.expected_spend(p, 0.5, 1.0, x, m)


def test_expected_spend_zero_frequency_needs_q_above_one():
    with pytest.raises(ValueError, match=r"1 of 1 parameter draws.*frequency x = 0"):
        gg.expected_spend(5.0, 0.9, 1.0, [3, 0], [2.0, 0.0])


@pytest.mark.parametrize("func", ["loglik", "expected_spend", "sample_spend_rate"])
def test_non_positive_monetary_value_with_transactions_is_an_error(func, rng):
    args = (2.0, 3.0, 10.0, np.array([1, 0, 2]), np.array([5.0, 0.0, -1.0]))
    call = getattr(gg, func)
    pattern = r"monetary_value must be a positive.*1 customers violate it at positions \[2\]"
    with pytest.raises(ValueError, match=pattern):
        call(rng, *args) if func == "sample_spend_rate" else call(*args)


def test_negative_frequency_is_an_error():
    pattern = r"frequency must be a finite, non-negative.*positions \[1\]"
    with pytest.raises(ValueError, match=pattern):
        gg.expected_spend(2.0, 3.0, 10.0, [1, -1], [5.0, 5.0])


def test_non_positive_parameter_is_an_error():
    with pytest.raises(ValueError, match=r"parameter gamma must be positive and finite; 1 of 2"):
        gg.loglik(2.0, 3.0, np.array([1.0, 0.0]), [1], [5.0])


def test_simulate_needs_whole_frequencies(rng):
    with pytest.raises(ValueError, match="frequency must be non-negative whole numbers"):
        gg.simulate(rng, 2.0, 3.0, 10.0, [1, 2.5])


def test_math_layer_imports_without_pymc_or_pytensor():
    code = (
        "import sys, clvbayes.math.gamma_gamma; "
        "bad = [m for m in ('pymc', 'pytensor') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------------------------
# weighted total log-likelihood and its gradient (the NUTS kernel)
# --------------------------------------------------------------------------------------------
SUM_POINTS = [
    (CDNOW_P, CDNOW_Q, CDNOW_GAMMA),
    (1e-3, 0.5, 2.0),  # tiny p
    (0.7, 1.0 + 1e-9, 1e-3),  # q near 1, tiny gamma
    (1e3, 1e-3, 1e3),
    (50.0, 200.0, 1e5),
]


def _spend_histories(rng, n=3000):
    x = rng.choice([0, 1, 2, 3, 5, 13, 40, 200, 10_000], size=n).astype(float)
    m = np.where(x > 0, np.exp(rng.normal(3, 2, n)), 0.0)
    w = rng.integers(0, 6, size=n)
    return x, m, w


@pytest.fixture(scope="module")
def symbolic_sum_and_grad():
    pytensor = pytest.importorskip("pytensor")
    pt = pytest.importorskip("pytensor.tensor")
    from clvbayes.math._xp import pytensor_namespace

    theta = pt.dvector("theta", shape=(3,))
    x, m, w = (pt.dvector(n) for n in ("x", "m", "w"))
    ll = gg.loglik(*theta, pt.maximum(x, 1.0), pt.switch(x > 0, m, 1.0), xp=pytensor_namespace())
    total = (pt.switch(x > 0, w, 0.0) * ll).sum()
    fn = pytensor.function([theta, x, m, w], [total, pytensor.grad(total, theta)])
    return lambda params, x, m, w: fn(np.asarray(params, float), x, m, np.asarray(w, float))


@pytest.mark.parametrize("chunk", [None, 8192, 100, 7])  # None: the compiled small-data loop
@pytest.mark.parametrize("params", SUM_POINTS)
def test_loglik_sum_and_grad_match_symbolic_gradient(
    params, chunk, symbolic_sum_and_grad, rng, monkeypatch
):
    if chunk is not None:  # the NumPy passes of large data, on the same histories
        monkeypatch.setattr(gg, "_SUM_CHUNK", chunk)
        monkeypatch.setattr(gg, "_SUM_LOOP_MAX", 0)
    x, m, w = _spend_histories(rng)
    data = gg.prepare_loglik_sum(x, m, w)
    total, grad = gg.loglik_sum_and_grad(*params, data)
    assert total == pytest.approx(np.sum(w * gg.loglik(*params, x, m)), rel=1e-10)
    ref_total, ref_grad = symbolic_sum_and_grad(params, x, m, w)
    assert total == pytest.approx(ref_total, rel=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-7)


def test_loglik_sum_gradient_matches_finite_differences(cdnow):
    x, m = cdnow["x"].to_numpy(float), cdnow["zbar"].to_numpy(float)
    data = gg.prepare_loglik_sum(x, m, np.ones_like(x))
    for params in ((2.0, 3.0, 20.0), (CDNOW_P, CDNOW_Q, CDNOW_GAMMA)):
        total, grad = gg.loglik_sum_and_grad(*params, data)
        assert total == pytest.approx(gg.loglik(*params, x, m).sum(), rel=1e-12)
        fd = np.empty(3)
        for i in range(3):  # central differences in log(parameter)
            up, down = np.array(params), np.array(params)
            up[i] *= np.exp(1e-5)
            down[i] *= np.exp(-1e-5)
            fd[i] = (gg.loglik(*up, x, m).sum() - gg.loglik(*down, x, m).sum()) / 2e-5 / params[i]
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-5)


def test_loglik_sum_of_published_fit(cdnow):
    x, m = cdnow["x"].to_numpy(float), cdnow["zbar"].to_numpy(float)
    data = gg.prepare_loglik_sum(x, m, np.ones_like(x))
    assert data.n_customers == 946  # the customers with x = 0 carry no spend information
    total, _ = gg.loglik_sum_and_grad(CDNOW_P, CDNOW_Q, CDNOW_GAMMA, data)
    assert total == pytest.approx(CDNOW_LL, abs=0.01)


def test_loglik_sum_empty_and_bad_weights():
    total, grad = gg.loglik_sum_and_grad(
        1.0, 2.0, 3.0, gg.prepare_loglik_sum([0, 0], [0, 0], [1, 2])
    )
    assert total == 0 and np.all(grad == 0) and grad.shape == (3,)
    with pytest.raises(ValueError, match="one entry per history"):
        gg.prepare_loglik_sum([1, 2], [3.0, 4.0], [1])
    with pytest.raises(ValueError, match="non-negative whole"):
        gg.prepare_loglik_sum([1, 2], [3.0, 4.0], [1, -2])


def test_loglik_sum_at_zero_or_infinite_parameters_is_not_finite_and_silent():
    """NUTS may probe overflowed or underflowed parameters: non-finite output, no exception."""
    data = gg.prepare_loglik_sum([0, 1, 5, 200], [0.0, 1.0, 3.0, 30.0], [1, 2, 3, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for params in [(np.inf, 0.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, np.inf)]:
            total, grad = gg.loglik_sum_and_grad(*params, data)
            assert not (np.isfinite(total) and np.all(np.isfinite(grad))), params


def test_loglik_and_expected_spend_match_mpmath_over_extreme_grid():
    """Fader & Hardie (2013) density and conditional mean at 40 digits, p, q, gamma in
    [1e-15, 1e6], z-bar in [1e-3, 1e6], x to 10,000: finite, 1e-8 relative."""
    mp = pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    for _ in range(150):
        p, q, g = 10 ** rng.uniform(-15, 6, 3)
        m = 10 ** rng.uniform(-3, 6)
        x = float(rng.choice([1, 2, 10, 300, 10_000]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ll = gg.loglik(p, q, g, x, m)
            es = gg.expected_spend(p, q, g, x, m) if p * x + q > 1 else None
        with mp.workdps(40):
            P, Q, G, X, M = (mp.mpf(float(v)) for v in (p, q, g, x, m))
            want = float(
                -mp.log(mp.beta(P * X, Q)) + Q * mp.log(G) + P * X * mp.log(X)
                + (P * X - 1) * mp.log(M) - (P * X + Q) * mp.log(G + X * M)
            )  # fmt: skip
            want_es = float(P * (G + X * M) / (P * X + Q - 1))
        assert np.isfinite(ll) and abs(ll - want) <= 1e-8 * max(1.0, abs(want)), (p, q, g, x, m)
        if es is not None:
            assert np.isfinite(es) and abs(es - want_es) <= 1e-8 * want_es, (p, q, g, x, m)


def test_expected_spend_keeps_q_just_above_one():
    """p x + (q - 1), not (p x + q) - 1: at x = 0 and q = 1 + 1e-12 the mean is p gamma / 1e-12."""
    got = gg.expected_spend(2.0, 1.0 + 1e-12, 3.0, 0, 0.0)
    assert got == pytest.approx(6.0 / ((1.0 + 1e-12) - 1.0), rel=1e-15)
    got = gg.expected_spend(1e-17, 1.0 + 2**-40, 3.0, 1, 5.0)
    assert got == pytest.approx(1e-17 * 8.0 / (1e-17 + 2**-40), rel=1e-12)
