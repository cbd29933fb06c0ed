"""clvbayes' own r_hat and ESS (clvbayes.diagnostics): held to the installed ArviZ, to the
AR(1) process' known effective sample size, and to their edge cases."""

import warnings

import numpy as np
import pytest

from clvbayes import compat, diagnostics
from clvbayes.errors import ConvergenceWarning
from clvbayes.inference import check_convergence


def _ar1(rng, phi, chains, n):
    x = np.zeros((chains, n))
    e = rng.normal(size=(chains, n))
    x[:, 0] = e[:, 0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def _cases():
    rng = np.random.default_rng(11)
    return {
        "iid": rng.normal(size=(4, 1000)),
        "ar1": _ar1(rng, 0.9, 4, 1000),
        "odd length, skewed": rng.gamma(2.0, size=(3, 301)),
        "ties": rng.integers(0, 5, size=(4, 200)).astype(float),
        "one chain stuck elsewhere": np.r_[
            rng.normal(size=(3, 400)), rng.normal(2.0, 0.1, size=(1, 400))
        ],
        "short": rng.normal(size=(2, 5)),
    }


def _arviz(x, method):
    """The installed ArviZ's value, with the 5 % / 95 % tail quantiles pinned on 1.x."""
    post = compat.posterior_from_arrays({"x": x})
    if compat.ARVIZ_MAJOR >= 1:
        import arviz_stats

        if method == "rhat":
            return float(arviz_stats.rhat(post)["x"])
        kw = {"prob": (0.05, 0.95)} if method == "tail" else {}
        return float(arviz_stats.ess(post, method=method, **kw)["x"])
    import arviz as az

    if method == "rhat":
        return float(az.rhat(post)["x"])
    return float(az.ess(post, method=method)["x"])


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("method", ["rhat", "bulk", "tail", "mean"])
def test_agrees_with_arviz(name, method):
    x = _cases()[name]
    ours = diagnostics.rhat(x) if method == "rhat" else diagnostics.ess(x, method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = _arviz(x, method)
    assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-12)


def test_ess_of_an_ar1_process_matches_its_integrated_autocorrelation_time():
    """ESS of the mean of AR(1) draws is n (1 - phi) / (1 + phi); r_hat of well-mixed
    chains is ~1 and that of a chain stuck elsewhere is well above 1.01."""
    rng = np.random.default_rng(3)
    for phi in (0.0, 0.5, 0.9):
        x = _ar1(rng, phi, 4, 5000)
        want = x.size * (1 - phi) / (1 + phi)
        assert diagnostics.ess(x, "mean") == pytest.approx(want, rel=0.12)
        assert diagnostics.ess(x, "bulk") == pytest.approx(want, rel=0.12)
        assert diagnostics.rhat(x) == pytest.approx(1.0, abs=0.01)
    stuck = np.r_[rng.normal(size=(3, 500)), rng.normal(1.0, 1.0, size=(1, 500))]
    assert diagnostics.rhat(stuck) > 1.05


def test_undefined_cases_are_nan_and_bad_arguments_raise():
    rng = np.random.default_rng(0)
    assert np.isnan(diagnostics.rhat(rng.normal(size=(1, 100))))  # one chain
    assert np.isnan(diagnostics.rhat(np.ones((4, 100))))  # constant
    assert np.isnan(diagnostics.ess(np.ones((4, 100))))
    assert np.isnan(diagnostics.ess(rng.normal(size=(4, 3))))  # fewer than 4 draws
    bad = rng.normal(size=(2, 50))
    bad[1, 7] = np.nan
    assert np.isnan(diagnostics.ess(bad)) and np.isnan(diagnostics.rhat(bad))
    with pytest.raises(ValueError, match="valid: \\['bulk', 'tail', 'mean'\\]"):
        diagnostics.ess(bad, "median")
    with pytest.raises(ValueError, match="shape \\(chains, draws\\)"):
        diagnostics.rhat(np.ones(10))


def test_a_parameter_that_never_moved_is_reported_not_passed():
    """check_convergence warns when a parameter's diagnostics are undefined (constant
    draws), rather than comparing NaN and passing it silently."""
    rng = np.random.default_rng(1)
    post = compat.posterior_from_arrays(
        {"r": rng.normal(size=(4, 300)), "a": np.full((4, 300), 0.5)}
    )
    with pytest.warns(ConvergenceWarning, match=r"undefined for \['a'\]"):
        out = check_convergence(post, None, ["r", "a"])
    assert out["min_ess_bulk"] == 0.0 and out["max_r_hat"] == np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        check_convergence(post, None, ["r"])  # the moving parameter alone is fine
