"""BdW math: c = 1 is the sBG, survival vs numerical integration, gradient, DERL, simulation.

The published FHLDS2018 estimates for the FH2007 cohorts could not be checked here (the paper
was not available); the MLE below is pinned as computed, with the sBG-nesting check.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, special

from clvbayes.errors import ModelError
from clvbayes.math import bdw, sbg
from tests.test_math_sbg import _fh2007, _mle

T = np.array([0, 1, 2, 5, 9, 0, 3, 40])
D = np.array([1, 1, 1, 1, 1, 0, 0, 0])
W = np.array([5, 3, 2, 1, 1, 4, 2, 7])


def test_c_equal_one_is_the_sbg():
    for a, b in [(0.7, 1.2), (0.05, 30.0), (12.0, 0.3)]:
        np.testing.assert_allclose(bdw.loglik(a, b, 1.0, T, D), sbg.loglik(a, b, T, D), rtol=1e-10)
        np.testing.assert_allclose(bdw.survival(a, b, 1.0, T), sbg.survival(a, b, T), rtol=1e-12)
        np.testing.assert_allclose(bdw.hazard(a, b, 1.0, T), sbg.hazard(a, b, T), rtol=1e-10)
        np.testing.assert_allclose(bdw.derl(a, b, 1.0, T, 0.1), sbg.derl(a, b, T, 0.1), rtol=1e-10)
        v1, g1 = bdw.loglik_sum_and_grad(a, b, 1.0, bdw.prepare_loglik_sum(T, D, W))
        v0, g0 = sbg.loglik_sum_and_grad(a, b, sbg.prepare_loglik_sum(T, D, W))
        assert v1 == pytest.approx(v0, rel=1e-10)
        np.testing.assert_allclose(g1[:2], g0, rtol=1e-8)


@pytest.mark.parametrize("a, b, c", [(0.5, 1.5, 0.6), (2.0, 3.0, 1.7), (0.2, 0.9, 3.0)])
def test_survival_against_numerical_integration(a, b, c):
    for t in (1, 2, 7, 25):
        # x = u^(1/a) removes the x^(a-1) singularity at 0; break points follow the decay
        f = lambda u: (1 - u ** (1 / a)) ** (t**c + b - 1) / a  # noqa: E731
        pts = [p for p in (1e-12, 1e-9, 1e-6, 1e-3) if p < 1]
        val = integrate.quad(f, 0, 1, points=pts, limit=500, epsabs=0, epsrel=1e-11)[0]
        assert bdw.survival(a, b, c, t) == pytest.approx(val / special.beta(a, b), rel=1e-6)
    k = np.arange(1, 40)
    pmf = np.exp(np.array([bdw.loglik(a, b, c, j - 1, 1) for j in k]))
    np.testing.assert_allclose(1 - np.cumsum(pmf), bdw.survival(a, b, c, k), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("a, b, c", [(0.7, 1.2, 1.3), (0.05, 30.0, 0.4), (12.0, 0.3, 2.5)])
def test_gradient_matches_finite_differences(a, b, c):
    data = bdw.prepare_loglik_sum(T, D, W)
    value, grad = bdw.loglik_sum_and_grad(a, b, c, data)
    assert value == pytest.approx(np.sum(W * bdw.loglik(a, b, c, T, D)), rel=1e-12)
    x = np.array([a, b, c])
    for i in range(3):
        h = 1e-6 * x[i]
        up, dn = x.copy(), x.copy()
        up[i] += h
        dn[i] -= h
        fd = (bdw.loglik_sum_and_grad(*up, data)[0] - bdw.loglik_sum_and_grad(*dn, data)[0]) / (
            2 * h
        )
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_derl_and_residual_lifetime_against_direct_sums():
    a, b, c, t, d = 0.6, 1.4, 0.7, 4, 0.05
    k = np.arange(1, 5000)
    direct = np.sum(bdw.conditional_survival(a, b, c, t, k) * (1 + d) ** -(k - 1.0))
    assert bdw.derl(a, b, c, t, d) == pytest.approx(direct, rel=1e-10)
    assert bdw.expected_residual_lifetime(a, b, c, t, horizon=30) == pytest.approx(
        np.sum(bdw.conditional_survival(a, b, c, t, np.arange(1, 31))), rel=1e-12
    )
    np.testing.assert_allclose(
        bdw.retention_rate(a, b, c, k[:20]),
        bdw.survival(a, b, c, k[:20]) / bdw.survival(a, b, c, k[:20] - 1),
        rtol=1e-12,
    )


@pytest.mark.parametrize("c", [0.5, 1.0, 2.2])
def test_churn_period_draws_match_conditional_survival(c):
    rng = np.random.default_rng(3)
    a, b, t = 0.8, 2.0, 3
    draws = bdw.sample_churn_period(rng, np.full(200_000, a), b, c, t)
    assert draws.min() == t + 1
    for k in (1, 2, 5, 20):
        emp = np.mean(draws > t + k)
        exact = bdw.conditional_survival(a, b, c, t, k)
        assert emp == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / draws.size) + 1e-4)


def test_fh2007_mle_nests_the_sbg():
    """BdW MLE on FH2007 years 1..7 (computed here, not checked against FHLDS2018's table)."""
    for column, ref, ll_sbg in [
        ("high_end_pct_surviving", (0.2143, 1.4266, 1.7236, -1605.314), -1611.16),
        ("regular_pct_surviving", (0.4556, 0.7793, 1.2835, -1679.603), -1680.27),
    ]:
        t, d, w, _ = _fh2007(column)
        x, value = _mle(bdw.prepare_loglik_sum(t, d, w), 3, bdw.loglik_sum_and_grad)
        np.testing.assert_allclose(x, ref[:3], rtol=2e-3)
        assert value == pytest.approx(ref[3], abs=0.01)
        assert value > ll_sbg  # one more parameter, nested model


def test_extremes_are_finite():
    t = np.array([0, 1, 100, 10_000])
    for a, b, c in [(1e-8, 1e-8, 1e-3), (1e8, 1e8, 5.0), (1e-8, 1e8, 1.0), (1e8, 1e-8, 0.1),
                    (0.5, 0.5, 10.0)]:  # fmt: skip
        for arr in (
            bdw.loglik(a, b, c, t, np.array([1, 0, 1, 0])),
            bdw.log_survival(a, b, c, t),
            bdw.hazard(a, b, c, t),
            bdw.derl(a, b, c, t, 0.1),
            bdw.expected_residual_lifetime(a, b, c, t, horizon=20),
        ):
            assert np.all(np.isfinite(arr)), (a, b, c)
        data = bdw.prepare_loglik_sum(t, [1, 0, 1, 0], [1, 1, 1, 1])
        v, g = bdw.loglik_sum_and_grad(a, b, c, data)
        assert np.isfinite(v) and np.all(np.isfinite(g)), (a, b, c)
        assert np.all(bdw.sample_churn_period(np.random.default_rng(1), a, b, c, t) > t)


def test_errors_name_the_problem():
    with pytest.raises(ModelError, match=r"BdW parameter c must be positive and finite"):
        bdw.survival(1.0, 1.0, 0.0, 3)
    with pytest.raises(ValueError, match=r"horizon must be whole numbers of periods"):
        bdw.expected_residual_lifetime(1.0, 1.0, 1.0, 2, horizon=-1)


def test_retention_math_and_data_import_without_pymc_or_pytensor():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, clvbayes.math.sbg, clvbayes.math.bdw, clvbayes.data.subscriptions; "
        "bad = [m for m in ('pymc', 'pytensor') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert res.returncode == 0, res.stderr
