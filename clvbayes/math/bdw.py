"""Beta-discrete-Weibull (BdW) retention model: likelihood, predictions, simulation.

Model
-----
Fader, Hardie, Liu, Davin & Steenburgh (2018), "'How to Project Customer Retention'
Revisited: The Role of Duration Dependence", *Journal of Interactive Marketing* 43, 1-16
(FHLDS2018 below).  As the sBG (:mod:`clvbayes.math.sbg`), with one renewal opportunity per
period and a churn propensity ``theta ~ Beta(alpha, beta)`` across subscribers, but the
individual survival function is discrete Weibull (Nakagawa & Osaki 1975)::

    S(t | theta, c) = (1 - theta)^(t^c),      t = 0, 1, 2, ...

so the individual hazard ``1 - (1 - theta)^(t^c - (t-1)^c)`` rises with tenure for
``c > 1``, falls for ``c < 1`` and is constant (the sBG) for ``c = 1``.  Integrating over
``theta``::

    S(t)     = B(alpha, beta + t^c) / B(alpha, beta)
    P(T = t) = S(t - 1) - S(t),                                          t = 1, 2, ...

Given ``T > t`` the posterior of ``theta`` is ``Beta(alpha, beta + t^c)``, whence
P(survives ``k`` more | ``T > t``) ``= S(t + k) / S(t)``, the next-renewal hazard
``1 - S(t + 1) / S(t)`` and the discounted expected residual lifetime
``DERL = sum_{k >= 1} S(t + k) / S(t) q^(k - 1)``, ``q = 1 / (1 + d)`` (the definition of
Fader & Hardie 2010 used by :func:`clvbayes.math.sbg.derl`; no closed form for ``c != 1``:
summed).  The published FHLDS2018 estimates were not available to this module's author, so
its tests check the formulas against the sBG at ``c = 1``, direct numerical integration over
``theta`` and simulation, not against the paper's tables.

Data (one row per subscriber), as the sBG: ``periods`` (renewals completed, ``t >= 0``) and
``churned`` (1: cancelled at renewal ``t + 1``, contributing ``log P(T = t + 1)``; 0: still
active, ``log S(t)``).

Parameters: ``alpha, beta > 0`` (unit-free), ``c > 0`` (unit-free, but tied to the period
grid: the same data on a monthly and a yearly grid give different ``c``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from clvbayes.math._checks import as_counts, check_parameters, scalar_if_0d
from clvbayes.math._xp import NUMPY
from clvbayes.math._xp import betaln as xp_betaln
from clvbayes.math.sbg import DERL_TOL, _periods, check_history

__all__ = [
    "LoglikSumData",
    "conditional_survival",
    "derl",
    "expected_residual_lifetime",
    "hazard",
    "log_survival",
    "loglik",
    "loglik_sum_and_grad",
    "prepare_loglik_sum",
    "retention_rate",
    "sample_churn_period",
    "survival",
]


def _params(**params: ArrayLike) -> list[np.ndarray]:
    return check_parameters("BdW", **params)


def _betaln(xp, a, b):
    # SciPy's betaln keeps its accuracy for huge arguments (t^c up to 1e300); the gammaln
    # form of the PyTensor path loses digits beyond ~1e12
    return special.betaln(a, b) if xp is NUMPY else xp_betaln(xp, a, b)


def _tpow(xp, t, c):
    """``t^c`` with ``0^c = 0``, written so its gradient in ``c`` is finite at ``t = 0``."""
    positive = t > 0
    safe = xp.where(positive, t, 1.0)
    return xp.where(positive, xp.exp(c * xp.log(safe)), 0.0)


def _log1mexp(xp, x):
    """``log(1 - exp(x))`` for ``x < 0``."""
    return xp.where(x > -0.693, xp.log(-xp.expm1(x)), xp.log1p(-xp.exp(x)))


def loglik(alpha, beta, c, periods, churned, xp: SimpleNamespace = NUMPY):
    """Log-likelihood of each (periods, churned) history.

    ``churned = 1``: ``log P(T = t + 1) = log S(t) + log(1 - S(t + 1) / S(t))``;
    ``churned = 0``: ``log S(t)``, with ``S(t) = B(alpha, beta + t^c) / B(alpha, beta)``.

    Parameters
    ----------
    alpha, beta, c : float or array
        Positive parameters (unit-free).
    periods, churned : array
        Renewals completed and the churn flag, as :func:`clvbayes.math.sbg.loglik`.
    xp : namespace
        NumPy or PyTensor (:mod:`clvbayes.math._xp`).
    """
    if xp is NUMPY:
        alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
        periods, churned = check_history(periods, churned)
    with np.errstate(divide="ignore", invalid="ignore"):  # the branch not taken by where
        norm = _betaln(xp, alpha, beta)
        log_s0 = _betaln(xp, alpha, beta + _tpow(xp, periods, c)) - norm
        log_s1 = _betaln(xp, alpha, beta + _tpow(xp, periods + 1.0, c)) - norm
        lost = log_s0 + _log1mexp(xp, xp.minimum(log_s1 - log_s0, -1e-300))
        return xp.where(churned > 0.5, lost, log_s0)


@dataclass(frozen=True)
class LoglikSumData:
    """Weighted histories grouped by (periods, churned) for :func:`loglik_sum_and_grad`."""

    periods_lost: np.ndarray
    w_lost: np.ndarray
    periods_active: np.ndarray
    w_active: np.ndarray

    @property
    def n_subscribers(self) -> float:
        return float(self.w_lost.sum() + self.w_active.sum())


def prepare_loglik_sum(periods: ArrayLike, churned: ArrayLike, weights: ArrayLike) -> LoglikSumData:
    """Group weighted histories for :func:`loglik_sum_and_grad` (see the sBG version)."""
    from clvbayes.math import sbg

    s = sbg.prepare_loglik_sum(periods, churned, as_counts(weights, "weights"))
    return LoglikSumData(s.periods_lost, s.w_lost, s.periods_active, s.w_active)


def _digamma_diff(y, a):
    """``psi(y) - psi(y + a)`` without cancellation for large ``y`` (asymptotic series)."""
    with np.errstate(all="ignore"):
        direct = special.digamma(y) - special.digamma(y + a)
        ya = y + a
        asym = (-np.log1p(a / y) - 0.5 / y + 0.5 / ya - 1.0 / (12.0 * y * y)
                + 1.0 / (12.0 * ya * ya))  # fmt: skip
    return np.where(y > 1e6, asym, direct)


def _log_s_and_grad(a, b, c, t, norm, d_norm):
    """``log S(t)`` and its gradient (3, n) in ``(alpha, beta, c)``."""
    x = np.where(t > 0, np.exp(c * np.log(np.where(t > 0, t, 1.0))), 0.0)
    ls = special.betaln(a, b + x) - norm
    dx = _digamma_diff(b + x, a)  # psi(b + x) - psi(a + b + x)
    g_a = special.digamma(a + b) - special.digamma(a + b + x)
    g_b = dx - d_norm
    g_c = np.where(t > 0, dx * x * np.log(np.where(t > 0, t, 1.0)), 0.0)
    return ls, np.stack([g_a, g_b, g_c])


def loglik_sum_and_grad(alpha, beta, c, data: LoglikSumData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood and its exact gradient in ``(alpha, beta, c)``.

    With ``x = t^c``, ``D(y, a) = psi(y) - psi(y + a)``::

        d/dalpha log S(t) = psi(alpha + beta) - psi(alpha + beta + x)
        d/dbeta  log S(t) = D(beta + x, alpha) - D(beta, alpha)
        d/dc     log S(t) = D(beta + x, alpha) x log t

    and for a cancellation ``L = A + log(1 - exp(B - A))`` (``A = log S(t)``,
    ``B = log S(t + 1)``): ``dL = dA - (dB - dA) / expm1(A - B)``.  Not validated (called by
    optimisers and samplers); non-finite parameters give non-finite values.

    Returns
    -------
    total : float
    gradient : ndarray, shape (3,)
    """
    a, b, c = (np.float64(v) for v in (alpha, beta, c))
    with np.errstate(all="ignore"):
        W = data.n_subscribers
        norm = special.betaln(a, b)
        d_norm = _digamma_diff(b, a)
        tl, wl = data.periods_lost, data.w_lost
        ta, wa = data.periods_active, data.w_active
        ls_a, g_a = _log_s_and_grad(a, b, c, ta, norm, d_norm)
        ls0, g0 = _log_s_and_grad(a, b, c, tl, norm, d_norm)
        ls1, g1 = _log_s_and_grad(a, b, c, tl + 1.0, norm, d_norm)
        delta = np.minimum(ls1 - ls0, -1e-300)
        lost = ls0 + np.where(delta > -0.693, np.log(-np.expm1(delta)), np.log1p(-np.exp(delta)))
        g_lost = g0 - (g1 - g0) / np.expm1(-delta)
        total = np.sum(wa * ls_a) + np.sum(wl * lost)
        grad = g_a @ wa + g_lost @ wl
    del W
    return float(total), np.asarray(grad, dtype=float)


# ---------------------------------------------------------------------------------------
# curves


def _log_s(alpha, beta, c, t):
    x = np.where(t > 0, np.power(np.where(t > 0, t, 1.0), c), 0.0)
    return special.betaln(alpha, beta + x) - special.betaln(alpha, beta)


def log_survival(alpha, beta, c, t, xp: SimpleNamespace = NUMPY):
    """``log S(t)``, ``t`` whole periods >= 0."""
    if xp is NUMPY:
        alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
        return _log_s(alpha, beta, c, _periods(t))
    return _betaln(xp, alpha, beta + _tpow(xp, t, c)) - _betaln(xp, alpha, beta)


def survival(alpha, beta, c, t) -> np.ndarray | float:
    """``S(t)``: share of a new cohort still active after ``t`` renewals."""
    return scalar_if_0d(np.exp(log_survival(alpha, beta, c, t)))


def retention_rate(alpha, beta, c, t) -> np.ndarray | float:
    """Cohort retention rate ``S(t) / S(t - 1)``, ``t >= 1``."""
    alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
    t = _periods(t, minimum=1)
    return scalar_if_0d(np.exp(_log_s(alpha, beta, c, t) - _log_s(alpha, beta, c, t - 1.0)))


def conditional_survival(alpha, beta, c, t, k) -> np.ndarray | float:
    """P(still active after ``k`` more renewals | survived ``t``) ``= S(t + k) / S(t)``."""
    alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
    t, k = _periods(t), _periods(k, "k")
    return scalar_if_0d(np.exp(_log_s(alpha, beta, c, t + k) - _log_s(alpha, beta, c, t)))


def hazard(alpha, beta, c, t) -> np.ndarray | float:
    """P(cancels at the next renewal | survived ``t``) ``= 1 - S(t + 1) / S(t)``."""
    alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
    t = _periods(t)
    return scalar_if_0d(-np.expm1(_log_s(alpha, beta, c, t + 1.0) - _log_s(alpha, beta, c, t)))


def expected_residual_lifetime(alpha, beta, c, t, horizon: int) -> np.ndarray | float:
    """Expected renewals among the next ``horizon``: ``sum_{k=1..K} S(t + k) / S(t)``.

    ``horizon`` is required: the untruncated mean is finite only for ``alpha * c > 1`` and
    has no closed form.
    """
    alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
    t = _periods(t)
    K = int(_periods(horizon, "horizon"))
    base = _log_s(alpha, beta, c, t)
    total = np.zeros(np.broadcast(base, alpha, beta, c).shape)
    for k in range(1, K + 1):
        total = total + np.exp(_log_s(alpha, beta, c, t + k) - base)
    return scalar_if_0d(total)


def derl(alpha, beta, c, t, discount: float) -> np.ndarray | float:
    """Discounted expected residual lifetime ``sum_{k >= 1} S(t + k) / S(t) q^(k - 1)``.

    Same timing as :func:`clvbayes.math.sbg.derl` (equal to it at ``c = 1``).  Summed term by
    term; every term ratio is below ``q = 1 / (1 + d)``, so the tail after a term is below
    ``term * q / (1 - q)``: stopped when that is below ``1e-14`` of the sum.
    """
    alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
    t = _periods(t)
    d = float(discount)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"discount must be a positive rate per period, got {discount!r}.")
    q = 1.0 / (1.0 + d)
    base = _log_s(alpha, beta, c, t)
    total = np.zeros(np.broadcast(base, alpha, beta, c).shape)
    k = 1
    while True:
        term = np.exp(_log_s(alpha, beta, c, t + k) - base + (k - 1) * np.log(q))
        total = total + term
        if np.all(term * q / (1.0 - q) <= DERL_TOL * total):
            break
        k += 1
    return scalar_if_0d(total)


def sample_churn_period(rng: np.random.Generator, alpha, beta, c, t) -> np.ndarray:
    """Exact posterior-predictive draws of the churn period ``T`` of a subscriber with ``T > t``.

    ``theta | T > t ~ Beta(alpha, beta + t^c)``; given ``theta``,
    ``P(T > s | T > t) = (1 - theta)^(s^c - t^c)``, so with ``E`` exponential of rate
    ``-log(1 - theta)``, ``T = floor((t^c + E)^(1/c)) + 1``.  Float output (see the sBG).
    """
    alpha, beta, c = _params(alpha=alpha, beta=beta, c=c)
    t = _periods(t)
    a, b, cc, tt = np.broadcast_arrays(alpha, beta, c, t)
    x = np.where(tt > 0, np.power(np.where(tt > 0, tt, 1.0), cc), 0.0)
    theta = rng.beta(a, b + x)
    u = 1.0 - rng.random(a.shape)  # in (0, 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.log(u) / np.log1p(-theta)  # >= 0; inf when theta underflows to 0
        e = np.where(np.isnan(e), np.inf, e)
        s = np.where(
            tt > 0,
            tt * np.exp(np.log1p(e / np.where(x > 0, x, 1.0)) / cc),
            np.power(e, 1.0 / cc),
        )
    return np.floor(s) + 1.0
