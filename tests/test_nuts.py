"""clvbayes' own NUTS (clvbayes.nuts) against independent references.

The sampler is checked where the answer is known exactly (normal targets, a bounded
target), on its mechanics (seeds, processes, tuning windows, errors), and on the CDNOW
posteriors against PyMC's NUTS, an independent implementation of the same algorithm.
The statistical tests of every model (reference fits, coverage, SBC) also run on it,
because it is the default sampler.
"""

from __future__ import annotations

import numpy as np
import pytest

from clvbayes import compat, nuts, sampling
from clvbayes.models import BetaGeoModel, GammaGammaModel, Prior
from clvbayes.models.priors import AVAILABLE_DISTRIBUTIONS


def _gaussian(mu: np.ndarray, cov: np.ndarray):
    precision = np.linalg.inv(cov)

    def f(x):
        d = np.asarray(x) - mu
        g = -precision @ d
        return 0.5 * float(d @ g), g

    return f


class GaussianDensity:
    """A picklable normal log density (for the child processes)."""

    def __init__(self, mu, cov):
        self.mu, self.precision = np.asarray(mu), np.linalg.inv(cov)

    def __call__(self, x):
        d = np.asarray(x) - self.mu
        g = -self.precision @ d
        return 0.5 * float(d @ g), g


def _target(seed: int = 0):
    """A correlated normal whose sds span four orders of magnitude (as log-parameters of a
    model fitted to a million customers do next to those of a small one)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, 4))
    scales = np.array([1e-3, 1.0, 10.0, 1e-2])
    cov = (a @ a.T + 0.3 * np.eye(4)) * np.outer(scales, scales)
    return np.array([1.0, -2.0, 3.0, 0.5]), cov


def _ess(x: np.ndarray) -> np.ndarray:
    """Bulk ESS of each coordinate of draws (chain, draw, n), by ArviZ's estimator."""
    draws = {f"x{i}": x[:, :, i] for i in range(x.shape[2])}
    post = compat.posterior_from_arrays(draws)
    ess = compat.ess(post, list(draws))
    return np.array([ess[k] for k in draws])


def test_normal_target_mean_and_covariance_within_monte_carlo_error():
    mu, cov = _target()
    rng = np.random.default_rng(1)
    sd = np.sqrt(np.diag(cov))
    starts = mu + sd * rng.standard_normal((2, 4)) * 3
    # start from a deliberately wrong (diagonal, 4x too wide) metric: tuning must fix it
    result = nuts.sample(_gaussian(mu, cov), starts, np.diag(4 * np.diag(cov)), draws=2000,
                         tune=1000, seed=7)  # fmt: skip
    x = result.theta
    ess = _ess(x)
    assert np.all(ess > 1000)
    flat = x.reshape(-1, 4)
    z = (flat.mean(0) - mu) / (sd / np.sqrt(ess))
    assert np.all(np.abs(z) < 4.5), z
    # variance of a normal's sample variance: 2 sigma^4 / ESS (ESS of x^2 is smaller; 25 %)
    var_ratio = flat.var(0) / np.diag(cov)
    assert np.all(np.abs(var_ratio - 1) < 0.15), var_ratio
    corr = np.corrcoef(flat.T)
    true_corr = cov / np.outer(sd, sd)
    assert np.max(np.abs(corr - true_corr)) < 0.08
    assert result.stats["diverging"].sum() == 0
    # the tuned metric is the target's covariance (not the starting one)
    tuned_sd = np.sqrt(np.diagonal(result.inv_mass, axis1=1, axis2=2))
    assert np.all(np.abs(tuned_sd / sd - 1) < 0.35)


def test_standard_normal_in_many_dimensions_has_the_right_marginals():
    n = 25
    result = nuts.sample(_gaussian(np.zeros(n), np.eye(n)), np.zeros((2, n)), np.eye(n),
                         draws=1000, tune=500, seed=3)  # fmt: skip
    flat = result.theta.reshape(-1, n)
    # every marginal is N(0, 1): pooled quantiles of the standardised draws
    q = np.quantile(flat, [0.05, 0.5, 0.95])
    np.testing.assert_allclose(q, [-1.645, 0.0, 1.645], atol=0.08)
    assert 0.6 < result.stats["acceptance_rate"].mean() < 0.98


def test_a_wall_of_minus_infinity_is_reported_as_divergence_and_never_crossed():
    """Half of a normal is cut off (log density -inf beyond 0.5): the draws follow the
    truncated normal, and steps into the wall are flagged as divergent."""

    def f(x):
        if x[0] > 0.5:
            return -np.inf, np.zeros(1)
        return -0.5 * float(x[0] ** 2), -x

    result = nuts.sample(f, [[0.0], [-1.0]], np.eye(1), draws=3000, tune=500, seed=5)
    x = result.theta.ravel()
    assert x.max() <= 0.5
    assert result.stats["diverging"].sum() > 0
    # mean of N(0, 1) truncated above at 0.5: -phi(0.5) / Phi(0.5)
    from scipy import stats

    expected = -stats.norm.pdf(0.5) / stats.norm.cdf(0.5)
    assert abs(x.mean() - expected) < 0.08


def test_same_seed_same_draws_whatever_the_cores_and_other_seeds_differ():
    mu, cov = _target(2)
    f = GaussianDensity(mu, cov)
    starts = np.tile(mu, (3, 1))
    kw = dict(draws=200, tune=200, seed=11)
    one = nuts.sample(f, starts, cov, cores=1, **kw)
    two = nuts.sample(f, starts, cov, cores=2, **kw)
    np.testing.assert_array_equal(one.theta, two.theta)
    for k in nuts.STAT_NAMES:
        np.testing.assert_array_equal(one.stats[k], two.stats[k])
    other = nuts.sample(f, starts, cov, cores=1, draws=200, tune=200, seed=12)
    assert not np.array_equal(one.theta, other.theta)
    # and the chains are different chains
    assert not np.array_equal(one.theta[0], one.theta[1])


def test_workers_end_cleanly_when_stopped():
    nuts.start_workers(1)
    worker = nuts._WORKERS[-1]
    mu, cov = _target(2)
    nuts.sample(GaussianDensity(mu, cov), np.tile(mu, (2, 1)), cov, draws=20, tune=20, seed=1,
                cores=2)  # fmt: skip
    nuts.stop_workers()
    assert worker.proc.returncode == 0 and not nuts._WORKERS


def _fails():
    raise RuntimeError("in the worker")


def test_submit_runs_a_function_in_a_worker_and_says_when_it_could_not():
    import math

    nuts.stop_workers()
    assert nuts.submit(math.hypot, 3.0, 4.0) is None  # no worker running: the caller works
    nuts.start_workers(1)
    try:
        assert nuts.submit(math.hypot, 3.0, 4.0)() == (True, 5.0)
        assert nuts.submit(print, "x")() == (True, None)  # a None value is still a value
        assert nuts.submit(_fails)() == (False, None)  # raised there: the caller redoes it
        assert nuts.submit(lambda: 1) is None  # cannot be pickled
        first, second = nuts.submit(math.sqrt, 4.0), nuts.submit(math.sqrt, 9.0)
        assert (first(), second()) == ((True, 2.0), (True, 3.0))  # in turn, one worker
        assert nuts._WORKERS[0].alive()  # a failed job does not end the worker
    finally:
        nuts.stop_workers()


def test_a_density_that_cannot_be_pickled_runs_its_chains_here():
    mu, cov = _target(3)
    f = _gaussian(mu, cov)  # a closure: no child process can receive it
    starts = np.tile(mu, (2, 1))
    two = nuts.sample(f, starts, cov, draws=100, tune=100, seed=1, cores=2)
    one = nuts.sample(f, starts, cov, draws=100, tune=100, seed=1, cores=1)
    np.testing.assert_array_equal(one.theta, two.theta)


def test_tuning_windows_are_stans():
    assert nuts.tuning_schedule(1000) == [99, 149, 249, 449, 949]
    assert nuts.tuning_schedule(500) == [99, 149, 249, 449]
    # short tuning: 15 % initial buffer, a terminal buffer of at least 20 iterations
    assert nuts.tuning_schedule(100) == [79]
    assert nuts.tuning_schedule(50) == [29]
    # too short for a window of 20: step size only
    assert nuts.tuning_schedule(40) == []
    assert nuts.tuning_schedule(10) == []


@pytest.mark.parametrize("tune", [5, 25, 40, 60])
def test_short_tuning_never_leaves_a_chain_standing_still(tune):
    """A smoke run's 25 tuning steps once ended two steps after a metric update, with a step
    size from two rounds of dual averaging (up to 14x too large): every trajectory diverged,
    every draw was the start, and PSIS-LOO failed on the identical draws."""
    mu, cov = _target()
    result = nuts.sample(GaussianDensity(mu, cov), np.tile(mu, (20, 1)), 1.5 * cov, draws=25,
                         tune=tune, seed=4, cores=1)  # fmt: skip
    distinct = np.array([len(np.unique(chain[:, 0])) for chain in result.theta])
    assert distinct.min() >= 15, distinct
    assert result.stats["diverging"].mean() < 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_accept": 1.0}, "target_accept"),
        ({"draws": 0}, "draws"),
        ({"inv_mass": np.eye(3)}, "inv_mass"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    mu, cov = _target()
    args = {"inv_mass": cov, **kwargs}
    inv_mass = args.pop("inv_mass")
    with pytest.raises(ValueError, match=message):
        nuts.sample(_gaussian(mu, cov), np.tile(mu, (1, 1)), inv_mass, **args)


def test_a_start_outside_the_support_is_refused_with_the_point():
    def f(x):
        return (-np.inf, np.zeros(1)) if x[0] > 0 else (-0.5 * x[0] ** 2, -x)

    with pytest.raises(ValueError, match="not finite at the starting point"):
        nuts.sample(f, [[1.0]], np.eye(1), draws=10, tune=0)


@pytest.mark.parametrize("dist", AVAILABLE_DISTRIBUTIONS)
def test_prior_gradient_matches_differences_of_its_density(dist):
    params = {
        "HalfFlat": {}, "HalfNormal": {"sigma": 2.0}, "HalfCauchy": {"beta": 1.5},
        "HalfStudentT": {"nu": 3.0, "sigma": 2.0}, "Exponential": {"lam": 0.7},
        "Gamma": {"alpha": 2.5, "beta": 1.3}, "LogNormal": {"mu": 0.3, "sigma": 0.8},
        "Weibull": {"alpha": 1.7, "beta": 2.2},
    }[dist]  # fmt: skip
    prior = Prior(dist, **params)
    for x in (0.05, 0.7, 3.0, 40.0):
        h = 1e-6 * x
        numeric = (prior.logpdf(x + h) - prior.logpdf(x - h)) / (2 * h)
        assert prior.logpdf_grad(x) == pytest.approx(float(numeric), rel=1e-6, abs=1e-8)
        # the plain-float density of the hot path is the NumPy one (checked against SciPy)
        assert prior.logpdf_scalar(x) == pytest.approx(float(prior.logpdf(x)), rel=1e-13)
    assert prior.logpdf_scalar(-1.0) == -np.inf
    np.testing.assert_equal(prior.logpdf_scalar(0.0), float(prior.logpdf(0.0)))  # x = 0 too


def test_default_fit_uses_own_nuts_and_records_what_it_did(cdnow):
    m = BetaGeoModel().fit(cdnow, draws=300, tune=300, chains=2, seed=4)
    info = m.fit_info_
    assert info["nuts_sampler"] == "clvbayes" == sampling.default_nuts_sampler()
    assert "nuts_fallback" not in info
    assert info["n_gradients"] > 600 and info["sampling_seconds"] > 0
    assert len(info["step_size"]) == 2
    stats = m.sample_stats_
    assert stats.sizes == {"chain": 2, "draw": 300}
    assert stats["diverging"].dtype == bool and stats["tree_depth"].dtype.kind == "i"
    assert m.draws()["r"].shape == (2, 300)
    # distinct draws (a collapsed sampler would repeat its start)
    assert np.unique(m.draws()["r"]).size > 250
    again = BetaGeoModel().fit(cdnow, draws=300, tune=300, chains=2, seed=4)
    np.testing.assert_array_equal(again.draws()["r"], m.draws()["r"])


def test_pymc_options_are_refused_with_the_way_to_use_them(cdnow):
    with pytest.raises(ValueError, match="nuts_sampler='pymc'"):
        BetaGeoModel().fit(cdnow, draws=10, tune=10, chains=1, init="adapt_diag")


def test_without_a_laplace_start_pymc_samples_and_says_why(cdnow, monkeypatch):
    from clvbayes import inference
    from clvbayes.errors import ModelError

    class Stop(Exception):
        pass

    def no_laplace(*args, **kwargs):
        raise ModelError("flat")

    seen = {}

    def fake_sample(model, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(inference, "laplace_approximation", no_laplace)
    monkeypatch.setattr(compat, "sample_nuts", fake_sample)
    with pytest.raises(Stop):
        BetaGeoModel().fit(cdnow, draws=10, tune=10, chains=1)
    assert seen["nuts_sampler"] == "pymc"


@pytest.mark.slow
@pytest.mark.parametrize("model_cls", [BetaGeoModel, GammaGammaModel])
def test_cdnow_posterior_matches_pymc(cdnow, model_cls):
    """Same model, same data, two independent NUTS implementations: posterior means agree
    within Monte Carlo error and sds within 10 %."""
    ours = model_cls().fit(cdnow, seed=21)
    theirs = model_cls().fit(cdnow, seed=22, nuts_sampler="pymc", progressbar=False)
    assert ours.fit_info_["divergences"] == 0 and ours.fit_info_["max_r_hat"] < 1.01
    ess_o = compat.ess(ours.posterior_, list(ours.param_names))
    ess_t = compat.ess(theirs.posterior_, list(theirs.param_names))
    for k in ours.param_names:
        a, b = ours.draws()[k].ravel(), theirs.draws()[k].ravel()
        se = np.sqrt(a.var() / ess_o[k] + b.var() / ess_t[k])
        assert abs(a.mean() - b.mean()) < 4 * se, (k, a.mean(), b.mean(), se)
        assert a.std() / b.std() == pytest.approx(1.0, abs=0.1), k
        for q in (0.05, 0.95):
            assert abs(np.quantile(a, q) - np.quantile(b, q)) < 0.1 * b.std() + 4 * se, (k, q)
