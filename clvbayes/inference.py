"""Inference for every clvbayes model: MAP, the Laplace approximation, NUTS set-up, diagnostics.

A model (see :mod:`clvbayes.models.base`) supplies its parameter names, priors and a
log-likelihood; the functions here turn that into posterior draws.  All of them work on
the log scale of the (positive) parameters, ``theta = log(params)``, which is also PyMC's
unconstrained space for every clvbayes prior.

* :func:`fit_map` -- the posterior mode (``use_priors=False``: the MLE) on the parameter
  scale, by damped Newton steps on the model's exact gradient (every family supplies one:
  ``_loglik_sum_function``); beyond 40,000 distinct histories the search starts from the
  mode of a random sample of 20,000 of them, so the full data take 3-6 steps.
* :func:`fit_laplace` -- the Laplace approximation: a normal distribution for ``theta`` at
  the mode of the log posterior density of ``theta`` (Jacobian included), with the inverse
  Hessian as covariance, and ``draws`` independent draws from it.
* :func:`nuts_start` -- the same approximation as PyMC's NUTS start: a dense mass matrix and
  one starting point per chain.
* :func:`check_convergence` -- divergences, r_hat and ESS, with a warning when they fail.

Why our own Laplace rather than ``pymc_extras.fit_laplace``: ours evaluates the model's
NumPy log-likelihood and exact gradient on the compressed histories (about a millisecond
per gradient on CDNOW), so the whole fast path needs neither PyTensor compilation nor an
import of PyMC -- measured in ``benchmarks/speed.py`` -- while ``fit_laplace`` compiles the
PyMC model first (seconds) and adds a dependency.  The approximation is the same.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clvbayes.errors import ConvergenceWarning, ModelError

__all__ = [
    "ConvergenceWarning",
    "LaplaceApproximation",
    "LogDensity",
    "check_convergence",
    "fit_laplace",
    "fit_map",
    "log_density",
    "nuts_start",
]

LAPLACE_DRAWS = 1000
"""Default number of draws of the Laplace approximation."""


@dataclass(frozen=True)
class LaplaceApproximation:
    """Normal approximation ``theta ~ N(mode, cov)`` of the posterior of ``theta = log(params)``."""

    names: tuple[str, ...]
    mode: np.ndarray
    cov: np.ndarray
    log_density_at_mode: float

    def sample(self, draws: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``draws`` independent draws of each parameter (parameter scale), shape (1, draws)."""
        chol = np.linalg.cholesky(self.cov)
        theta = self.mode[:, None] + chol @ rng.standard_normal((self.mode.size, draws))
        return {k: np.exp(theta[i])[None, :] for i, k in enumerate(self.names)}

    @property
    def sd(self) -> dict[str, float]:
        """Delta-method posterior sd of each parameter at the mode (parameter scale)."""
        sd_theta = np.sqrt(np.diag(self.cov))
        return {k: float(np.exp(self.mode[i]) * sd_theta[i]) for i, k in enumerate(self.names)}


def log_density(model, data, *, use_priors: bool = True, jacobian: bool = False) -> LogDensity:
    """``f(theta) -> (log density, gradient)`` of a model on ``theta = log(params)``.

    Parameters
    ----------
    model : CLVModel
        Supplies ``param_names``, ``priors``, ``_loglik`` and, where it has one, the exact
        weighted log-likelihood with gradient ``_loglik_sum_function`` (else central
        differences of ``_loglik`` are used).
    data : CompressedRFM
        Distinct histories with counts.
    use_priors : bool
        Add the log prior densities (False: the log-likelihood only, for the MLE).
    jacobian : bool
        Add ``sum(theta)``, the log Jacobian of ``params = exp(theta)``: True gives the
        density of ``theta`` (Laplace, NUTS), False the density on the parameter scale (MAP).

    Returns
    -------
    LogDensity
        A picklable callable (NUTS sends it to one process per core).  Non-finite values
        are returned as ``-inf`` with a zero gradient.
    """
    return LogDensity(model, data, use_priors=use_priors, jacobian=jacobian)


class LogDensity:
    """The callable of :func:`log_density`: prepared once, evaluated at every step.

    The prior's gradient is analytic (:meth:`clvbayes.models.priors.Prior.logpdf_grad`)
    for independent priors; a model with a joint prior density (pooled, segmented) has it
    differenced (``h = 1e-6``).  The likelihood's gradient is the model's exact one.
    """

    def __init__(self, model, data, *, use_priors: bool, jacobian: bool) -> None:
        self.model, self.data = model, data
        self.names = tuple(model.param_names)
        self.use_priors, self.jacobian = use_priors, jacobian
        self.weights = model._likelihood_weights(data)
        self.exact = model._loglik_sum_function(data)

    def __getstate__(self) -> dict:
        """What a NUTS worker process needs: with an exact gradient neither the data (the
        prepared function holds its arrays) nor the model's fitted state (data, draws)."""
        state = dict(self.__dict__)
        if self.exact is not None:
            import copy

            state["data"] = None
            model = copy.copy(self.model)
            for name in ("data_", "_draws", "_posterior", "sample_stats_", "fit_info_"):
                model.__dict__.pop(name, None)
            state["model"] = model
        return state

    def _loglik(self, p: np.ndarray) -> float:
        params = dict(zip(self.names, p, strict=True))
        return float(np.sum(self.weights * self.model._loglik(params, self.data)))

    def _log_prior(self, theta: np.ndarray) -> float:
        return self.model._log_prior(dict(zip(self.names, np.exp(theta), strict=True)))

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        theta = np.asarray(theta, dtype=float)
        p = np.exp(theta)
        values = p.tolist()  # plain floats: the hot path of NUTS makes few NumPy calls
        params = dict(zip(self.names, values, strict=True))
        # independent priors: value and gradient in p; None for a joint prior
        prior = self.model._log_prior_and_grad(params) if self.use_priors else None
        if self.exact is not None:
            value, grad_p = self.exact(*values)
            value = float(value)
            if prior is not None:
                value += prior[0]
                grad_p = grad_p + prior[1]
            grad = grad_p * p  # chain rule: d/dtheta = p d/dp
        else:
            with np.errstate(all="ignore"):
                value = self._loglik(p)
                grad = _central_gradient(lambda t: self._loglik(np.exp(t)), theta)
            if prior is not None:
                value += prior[0]
                grad = grad + prior[1] * p
        if self.use_priors and prior is None:  # a joint (e.g. hierarchical) prior: differenced
            with np.errstate(all="ignore"):
                value += self.model._log_prior(params)
                grad = grad + _central_gradient(self._log_prior, theta, h=1e-6)
        if self.jacobian:
            value += math.fsum(theta.tolist())
            grad = grad + 1.0
        if not (math.isfinite(value) and np.isfinite(grad).all()):
            return -np.inf, np.zeros_like(theta)
        return value, grad


def _maximise(
    f, start: np.ndarray, options: dict[str, Any], what: str
) -> tuple[np.ndarray, float, int]:
    """Maximise ``f(theta) -> (value, gradient)``: damped Newton steps (Levenberg-Marquardt).

    The Hessian of each step is taken from forward differences of the exact gradient (``n``
    gradient calls, the gradient at ``theta`` reused); with 3-4 parameters that converges in
    a handful of iterations from a good start (:func:`_start`) and needs no import of
    :mod:`scipy.optimize` (a second of a fresh process).  Options: ``maxiter`` (default 200)
    and ``gtol`` (largest gradient component at convergence, default 1e-6).
    """
    unknown = sorted(set(options) - {"maxiter", "gtol", "progressbar"})  # progressbar: no-op
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {unknown}; valid: maxiter, gtol.")
    maxiter, gtol = int(options.get("maxiter", 200)), float(options.get("gtol", 1e-6))
    theta = np.asarray(start, dtype=float).copy()
    value, grad = f(theta)
    if not np.isfinite(value):
        raise ModelError(
            f"{what}: the log posterior is not finite at the starting point {np.exp(theta)}. "
            "Check the data, or give informative priors."
        )
    damping, it, converged = 1e-3, 0, False
    for it in range(1, maxiter + 1):  # noqa: B007 - the count is reported
        if np.max(np.abs(grad)) <= gtol:
            converged = True
            break
        neg_hess = -_fd_hessian(lambda t: f(t)[1], theta, 1e-5, grad_at_x=grad)
        scale = np.maximum(np.abs(np.diag(neg_hess)), 1e-12)
        improved = False
        while damping < 1e16:
            try:
                step = np.linalg.solve(neg_hess + damping * np.diag(scale), grad)
            except np.linalg.LinAlgError:
                damping *= 10
                continue
            longest = np.max(np.abs(step))
            if longest > 5.0:  # at most a factor e^5 per parameter and step
                step *= 5.0 / longest
            new_value, new_grad = f(theta + step)
            if np.isfinite(new_value) and new_value >= value:
                improved = new_value > value or np.max(np.abs(new_grad)) < np.max(np.abs(grad))
                theta, value, grad = theta + step, new_value, new_grad
                damping = max(damping / 10, 1e-12)
                break
            damping *= 10
        if not improved:
            converged = np.max(np.abs(grad)) <= max(gtol, 1e-3)
            break
    if not converged:
        warnings.warn(
            f"{what} did not converge in {it} iterations (largest gradient "
            f"{np.max(np.abs(grad)):.2g}). Try other priors or method='nuts'.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return theta, float(value), it


SUBSAMPLE_HISTORIES = 20_000
"""Distinct histories in the sample on which a large fit first looks for its mode (:func:`_start`)."""


def _start(model, data, f, *, use_priors: bool, jacobian: bool) -> np.ndarray:
    """Starting point of the mode search on ``data``: ``theta`` of the model's initial point or,
    with more than ``2 * SUBSAMPLE_HISTORIES`` distinct histories, the mode on a random sample
    of ``SUBSAMPLE_HISTORIES`` of them (each with its count, so every customer is in the
    sample with the same chance), where it is the better point for ``f``.

    From the generic initial point the damped Newton search may take 20-30 steps (on the
    BG/NBD ridge ``a, b -> infinity`` first); on the sample those cost ~1/40 of a full step
    each at a million customers, and from the sample's mode the full data need 2-3 steps.
    Anything that fails on the sample (a model whose data cannot be sliced this way) leaves
    the initial point.
    """
    names = tuple(model.param_names)
    start = np.log([model._initial_point(data)[k] for k in names])
    if data.n_unique <= 2 * SUBSAMPLE_HISTORIES:
        return start
    try:
        import dataclasses

        import pandas as pd

        rng = np.random.default_rng(20_240_601)
        keep = np.sort(rng.choice(data.n_unique, SUBSAMPLE_HISTORIES, replace=False))
        counts = data.counts[keep]
        sub = dataclasses.replace(
            data,
            values={k: np.asarray(v)[keep] for k, v in data.values.items()},
            counts=counts,
            inverse=np.repeat(np.arange(keep.size), counts),
            customer_ids=pd.RangeIndex(int(counts.sum())),
        )
        g = log_density(model, sub, use_priors=use_priors, jacobian=jacobian)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sub_theta = _maximise(g, start, {}, "mode search on a sample")[0]
    except Exception:  # the sample only speeds things up
        return start
    v_sub, v_start = f(sub_theta)[0], f(start)[0]
    return sub_theta if np.isfinite(v_sub) and v_sub >= v_start else start


def _mode_and_hessian(model, data, f, options, what: str, *, use_priors: bool, jacobian: bool):
    """``(theta at the mode, value there, iterations, Hessian there)`` of ``f`` on ``data``."""
    start = _start(model, data, f, use_priors=use_priors, jacobian=jacobian)
    theta, value, nit = _maximise(f, start, options or {}, what)
    return theta, value, nit, _hessian(f, theta)


def _hessian(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Hessian of ``f(theta) -> (value, exact gradient)`` at ``theta``: central differences of
    the exact gradient (``2 n`` gradient calls), symmetrised.

    In ``theta = log(params)`` the curvature is of order the number of customers and varies
    smoothly, so ``h = 1e-4`` leaves a truncation error of order ``h^2 = 1e-8`` (relative)
    and a rounding error of order ``1e-16 |log density| / h``; a test holds it to a
    numerical second derivative of the log density itself (values only) at ``rtol=1e-5``.
    An analytic Hessian would save those ``2 n`` calls (8 for BG/NBD, ~0.1 s at a million
    customers) but needs second derivatives in every model's math; not worth it here.
    """
    return _fd_hessian(lambda t: f(t)[1], np.asarray(theta, dtype=float), h)


def fit_map(model, data, *, use_priors: bool = True, options: dict[str, Any] | None = None):
    """Posterior mode (or MLE) on the parameter scale; returns ``(values, info)``.

    ``values`` maps each parameter to its mode; ``info`` holds the log-likelihood, the log
    posterior, the delta-method sd from the Hessian at the mode (``laplace_sd``) and the
    optimiser's iterations.
    """
    names = tuple(model.param_names)
    f = log_density(model, data, use_priors=use_priors, jacobian=False)
    theta, value, nit, hess = _mode_and_hessian(
        model, data, f, options, "MAP optimisation", use_priors=use_priors, jacobian=False
    )
    sd = dict.fromkeys(names, float("nan"))
    try:
        var = np.diag(np.linalg.inv(-hess))
        sd = {k: float(np.exp(theta[i]) * np.sqrt(var[i])) if var[i] > 0 else float("nan")
              for i, k in enumerate(names)}  # fmt: skip
    except np.linalg.LinAlgError:
        pass
    params = dict(zip(names, np.exp(theta), strict=True))
    # the log-likelihood is the log posterior less the log prior (no second data preparation)
    loglik = value - model._log_prior(params) if use_priors else value
    info = {
        "log_likelihood": float(loglik),
        "log_posterior": float(value),
        "laplace_sd": sd,
        "optimizer_iterations": nit,
    }
    return params, info


def laplace_approximation(
    model, data, *, options: dict[str, Any] | None = None
) -> LaplaceApproximation:
    """The Laplace approximation of the posterior of ``theta = log(params)``.

    Raises
    ------
    ModelError
        When the Hessian at the mode is not negative definite (a flat or improper
        posterior): the approximation does not exist; use NUTS or informative priors.
    """
    names = tuple(model.param_names)
    f = log_density(model, data, use_priors=True, jacobian=True)
    theta, value, _, hess = _mode_and_hessian(
        model, data, f, options, "Laplace mode search", use_priors=True, jacobian=True
    )
    try:
        cov = np.linalg.inv(-hess)
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        cov = None
    if cov is None or not np.all(np.isfinite(cov)):
        raise ModelError(
            f"{type(model).__name__}: the Laplace approximation does not exist here: the log "
            "posterior is not curved downwards in every direction at its mode "
            f"({dict(zip(names, np.round(np.exp(theta), 6), strict=True))}), so the data do not "
            "pin down every parameter. Use method='nuts', or informative priors."
        )
    return LaplaceApproximation(names=names, mode=theta, cov=cov, log_density_at_mode=value)


def fit_laplace(model, data, *, draws: int = LAPLACE_DRAWS, seed: int | None = None,
                options: dict[str, Any] | None = None):  # fmt: skip
    """``draws`` draws of the Laplace approximation; returns ``(draws dict, info)``.

    Accuracy guaranteed by ``tests/test_inference.py::test_laplace_agrees_with_nuts_on_cdnow``
    (CDNOW sample, default priors, against NUTS 4 x 1000): parameter means within 0.25
    posterior sd of NUTS' and sds within 15 %; median per-customer credible-interval width
    of P(alive) and of E[CLV] within 15 %; both ends of the interval of total CLV within
    10 % of NUTS' interval width.  Measured (3.11 stack): means 0.06-0.15 sd apart
    (Gamma-Gamma p the largest), sd ratios 0.91-1.03, width ratios 0.98 (P(alive)) and 0.94
    (E[CLV]).  Where it breaks down: small data (tens of customers), where the posterior of
    ``log a`` / ``log b`` is skewed (the Laplace intervals are then too narrow on one side);
    parameters pushed to the edge of their support (a -> 0: no dropout), where the mode is
    not interior and the approximation may not exist (a :class:`ModelError` says so);
    and heavy-tailed spend (Gamma-Gamma q near 1), where the spend expectation depends on
    the far tail of q that a normal in ``log q`` does not capture.
    """
    approx = laplace_approximation(model, data, options=options)
    rng = np.random.default_rng(seed)
    out = approx.sample(int(draws), rng)
    info = {
        "laplace_mode": dict(zip(approx.names, np.exp(approx.mode).tolist(), strict=True)),
        "laplace_sd": approx.sd,
        "log_density_at_mode": approx.log_density_at_mode,
        "draws": int(draws),
    }
    return out, info


def nuts_start(model, data, pymc_model, chains: int, seed: int | None, **nuts_kwargs):
    """A NUTS step with the Laplace covariance as its initial dense mass matrix, and starts.

    ``nuts_kwargs`` (e.g. ``target_accept``, ``max_treedepth``) go to :class:`pymc.NUTS`.

    Returns ``(step, initvals)`` or None when the approximation does not exist or the PyMC
    model's value variables are not ``<name>_log__`` in parameter order.

    PyMC's default adaptation starts from the identity matrix; with many customers the
    posterior sd in log space is ~1e-3, so early tuning builds maximal trees (1023 leapfrog
    steps) until the matrix has adapted.  Starting from the Laplace covariance and from one
    draw of the approximation per chain avoids that; adaptation then refines the matrix.
    The mode and Hessian come from the NumPy gradient, so no PyTensor function is compiled.
    """
    import pymc as pm
    from pymc.step_methods.hmc.quadpotential import QuadPotentialFullAdapt

    expected = [f"{k}_log__" for k in model.param_names]
    if [v.name for v in pymc_model.value_vars] != expected:
        return None
    try:
        approx = laplace_approximation(model, data)
    except ModelError:
        return None
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(chains):
        draw = approx.sample(1, rng)
        starts.append({k: np.asarray(v[0, 0]) for k, v in draw.items()})
    potential = QuadPotentialFullAdapt(
        approx.mode.size, approx.mode.copy(), approx.cov.copy(), initial_weight=10, rng=rng
    )
    with pymc_model:
        step = pm.NUTS(potential=potential, **nuts_kwargs)
    return step, starts


def check_convergence(
    posterior, sample_stats, var_names: Sequence[str], max_rhat: float = 1.01,
    min_ess_per_chain: int = 100,
) -> dict[str, float]:  # fmt: skip
    """Warn (:class:`ConvergenceWarning`) on divergences, r_hat above ``max_rhat`` or low ESS.

    Parameters
    ----------
    posterior, sample_stats : xarray.Dataset
        Draws with dims (chain, draw); ``sample_stats`` may be None.

    Returns
    -------
    dict
        ``divergences``, ``max_r_hat``, ``min_ess_bulk``, ``min_ess_tail``.
    """
    from clvbayes import compat

    chains = posterior.sizes["chain"]
    n_div = 0
    if sample_stats is not None and "diverging" in sample_stats:
        n_div = int(sample_stats["diverging"].sum())
    rhats = compat.rhat(posterior, var_names) if chains > 1 else {}
    bulk = compat.ess(posterior, var_names, "bulk")
    tail = compat.ess(posterior, var_names, "tail")
    rhat = max(rhats.values(), default=np.nan)
    ess_bulk, ess_tail = min(bulk.values()), min(tail.values())
    # undefined diagnostics (a parameter that never moved, non-finite draws) are a problem too
    undefined = [k for k in var_names if not (np.isfinite(bulk[k]) and np.isfinite(tail[k])
                                               and np.isfinite(rhats.get(k, 0.0)))]  # fmt: skip
    if undefined:
        rhat = np.inf if chains > 1 else np.nan
        ess_bulk = ess_tail = 0.0
    problems = []
    if undefined:
        problems.append(f"diagnostics undefined for {undefined} (constant or non-finite draws)")
    if n_div:
        problems.append(f"{n_div} divergent transitions")
    if chains > 1 and rhat > max_rhat and not undefined:
        problems.append(f"max r_hat {rhat:.3f} > {max_rhat}")
    if min(ess_bulk, ess_tail) < min_ess_per_chain * chains and not undefined:
        problems.append(
            f"low effective sample size (bulk {ess_bulk:.0f}, tail {ess_tail:.0f}; "
            f"want >= {min_ess_per_chain * chains})"
        )
    if problems:
        warnings.warn(
            "NUTS diagnostics: " + "; ".join(problems) + ". Intervals may be unreliable: "
            "increase tune/draws, raise target_accept, or review the priors.",
            ConvergenceWarning,
            stacklevel=4,
        )
    return {
        "divergences": n_div,
        "max_r_hat": float(rhat),
        "min_ess_bulk": float(ess_bulk),
        "min_ess_tail": float(ess_tail),
    }


def _central_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _fd_hessian(
    grad: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: float,
    grad_at_x: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Symmetrised Hessian from differences of the gradient function ``grad``: central
    (``2 n`` calls), or forward when the gradient at ``x`` is given (``n`` calls)."""
    n = x.size
    hess = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h
        if grad_at_x is None:
            hess[i] = (grad(x + e) - grad(x - e)) / (2 * h)
        else:
            hess[i] = (grad(x + e) - grad_at_x) / h
    return (hess + hess.T) / 2
