"""Shifted-beta-geometric (sBG) retention model: likelihood, predictions, simulation.

Model
-----
Fader & Hardie (2007), "How to Project Customer Retention", *Journal of Interactive
Marketing* 21(1), 76-90 (FH2007 below), for a contractual setting with discrete renewal
opportunities (one per period: a month, a year, a plan's billing period):

* at the end of every period an active subscriber cancels with probability ``theta``
  (constant over her tenure), otherwise renews; a cancellation is observed and final;
* across subscribers ``theta ~ Beta(alpha, beta)``.

``T`` is the period in which a subscriber churns (``T = 1``: she never renewed).  With
``B`` the beta function (FH2007 eqs. 3-4, 7)::

    P(T = t)  = B(alpha + 1, beta + t - 1) / B(alpha, beta),      t = 1, 2, ...
    S(t)      = P(T > t) = B(alpha, beta + t) / B(alpha, beta),   t = 0, 1, ...
    r(t)      = S(t) / S(t - 1) = (beta + t - 1) / (alpha + beta + t - 1)   (retention rate)

Data (one row per subscriber)
-----------------------------
``periods``
    ``t``, renewals completed (periods survived), a whole number >= 0.
``churned``
    1 if the subscriber cancelled at the next renewal opportunity (``T = t + 1``), 0 if she
    is still active (right-censored: ``T > t``).

So a history contributes ``log P(T = t + 1)`` when churned and ``log S(t)`` when active.
FH2007's cohort data map onto it as: the customers lost in year ``t`` have ``periods =
t - 1, churned = 1``; the survivors at the last calibration year ``n`` have ``periods = n,
churned = 0``.

Conditional on survival
-----------------------
Given ``T > t`` the posterior of ``theta`` is ``Beta(alpha, beta + t)``, so every prediction
for a subscriber who survived ``t`` periods is the new-subscriber formula with ``beta``
replaced by ``beta + t``: P(survives ``k`` more periods) ``= S(t + k) / S(t)``, hazard of
cancelling at the next renewal ``alpha / (alpha + beta + t)``, and, with discount factor
``q = 1 / (1 + d)`` per period (Fader & Hardie 2010, "Customer-Base Valuation in a
Contractual Setting: The Perils of Ignoring Heterogeneity", *Marketing Science* 29(1),
85-93, eq. 6, FH2010 below)::

    DERL(d | t) = sum_{k >= 1} S(t + k) / S(t) q^(k - 1)
                = (beta + t) / (alpha + beta + t) * 2F1(1, beta + t + 1; alpha + beta + t + 1; q)

the expected discounted number of future renewal payments of a subscriber who has made
``t`` renewals (``n = t + 1`` payments), evaluated just before her next renewal decision, a
payment at that decision counted undiscounted.  The undiscounted residual lifetime ``E[T -
t - 1 | T > t] = (beta + t) / (alpha - 1)`` is infinite for ``alpha <= 1``.

Everything is computed in log space; survival, hazard and DERL are finite for tenures of
10,000 periods and more and for parameters from 1e-8 to 1e8.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from clvbayes.math._checks import as_counts, as_float, check_parameters, positions, scalar_if_0d
from clvbayes.math._xp import NUMPY, betaln

__all__ = [
    "LoglikSumData",
    "churn_pmf",
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

DERL_TOL = 1e-14
"""Relative size of the last series term kept in :func:`derl`."""


def _params(**params: ArrayLike) -> list[np.ndarray]:
    return check_parameters("sBG", **params)


def check_history(periods: ArrayLike, churned: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``periods`` (whole numbers >= 0) and ``churned`` (0/1) as arrays; ValueError otherwise."""
    t = as_counts(periods, "periods")
    d = as_float("churned", churned)
    bad = ~np.isin(d, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"churned must be 0 (still active) or 1 (cancelled); {int(bad.sum())} entries are "
            f"not, at positions {positions(bad)}."
        )
    return t, d


def _periods(t: ArrayLike, name: str = "t", minimum: int = 0) -> np.ndarray:
    arr = as_float(name, t)
    bad = ~(np.isfinite(arr) & (arr >= minimum) & (arr == np.floor(arr)))
    if bad.any():
        raise ValueError(
            f"{name} must be whole numbers of periods >= {minimum}; {int(bad.sum())} entries "
            f"are not, at positions {positions(bad)}."
        )
    return arr


# ---------------------------------------------------------------------------------------
# likelihood


def loglik(alpha, beta, periods, churned, xp: SimpleNamespace = NUMPY):
    """Log-likelihood of each (periods, churned) history (FH2007 eqs. 3-4).

    Parameters
    ----------
    alpha, beta : float or array
        Positive shapes of the churn-probability Beta (unit-free).
    periods : array of int
        Renewals completed ``t`` (periods survived).
    churned : array of {0, 1}
        1: cancelled at renewal ``t + 1`` (``log P(T = t + 1)``); 0: still active
        (``log S(t)``).
    xp : namespace
        :data:`clvbayes.math._xp.NUMPY` or the PyTensor namespace.

    Returns
    -------
    array
        ``log L`` per history (nats), broadcast over parameters and histories.
    """
    if xp is NUMPY:
        alpha, beta = _params(alpha=alpha, beta=beta)
        periods, churned = check_history(periods, churned)
    bl = special.betaln if xp is NUMPY else lambda a, b: betaln(xp, a, b)
    norm = bl(alpha, beta)
    lost = bl(alpha + 1.0, beta + periods) - norm
    active = bl(alpha, beta + periods) - norm
    return xp.where(churned > 0.5, lost, active)


@dataclass(frozen=True)
class LoglikSumData:
    """Weighted histories laid out once for :func:`loglik_sum_and_grad`.

    ``periods_lost``/``w_lost``: distinct ``t`` of churned histories and the subscribers with
    each; ``periods_active``/``w_active`` the same for the right-censored ones.
    """

    periods_lost: np.ndarray
    w_lost: np.ndarray
    periods_active: np.ndarray
    w_active: np.ndarray

    @property
    def n_subscribers(self) -> float:
        return float(self.w_lost.sum() + self.w_active.sum())


def _group(t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = w > 0
    uniq, inv = np.unique(t[keep], return_inverse=True)
    return uniq.astype(float), np.bincount(inv.ravel(), weights=w[keep], minlength=uniq.size)


def prepare_loglik_sum(periods: ArrayLike, churned: ArrayLike, weights: ArrayLike) -> LoglikSumData:
    """Group weighted histories by (periods, churned) for :func:`loglik_sum_and_grad`.

    Parameters
    ----------
    periods, churned : array_like, shape (n,)
        Histories as in :func:`loglik`.
    weights : array_like of int, shape (n,)
        Subscribers sharing each history (weight 0: left out).
    """
    t, d = (np.ravel(v) for v in check_history(periods, churned))
    w = np.ravel(as_counts(weights, "weights")).astype(float)
    if not t.size == d.size == w.size:
        raise ValueError("periods, churned and weights must have one entry per history.")
    lost, w_lost = _group(t[d == 1], w[d == 1])
    active, w_active = _group(t[d == 0], w[d == 0])
    return LoglikSumData(lost, w_lost, active, w_active)


def loglik_sum_and_grad(alpha, beta, data: LoglikSumData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood and its exact gradient in ``(alpha, beta)``.

    With ``psi`` the digamma function and ``W`` the total weight::

        total = sum_lost w [lnB(alpha+1, beta+t) ] + sum_active w [lnB(alpha, beta+t)]
                - W lnB(alpha, beta)
        d/dalpha lnB(alpha + a0, beta + b0) = psi(alpha + a0) - psi(alpha + beta + a0 + b0)
        d/dbeta  lnB(alpha + a0, beta + b0) = psi(beta + b0) - psi(alpha + beta + a0 + b0)

    Not validated (called thousands of times per fit); parameters at 0 or infinity give
    non-finite values, not errors.

    Returns
    -------
    total : float
        ``sum_i w_i loglik_i`` (nats).
    gradient : ndarray, shape (2,)
        Partial derivatives in ``alpha`` and ``beta``.
    """
    a, b = np.float64(alpha), np.float64(beta)
    with np.errstate(all="ignore"):
        W = data.n_subscribers
        tl, wl, ta, wa = data.periods_lost, data.w_lost, data.periods_active, data.w_active
        total = (
            np.sum(wl * special.betaln(a + 1.0, b + tl))
            + np.sum(wa * special.betaln(a, b + ta))
            - W * special.betaln(a, b)
        )
        psi_ab = special.digamma(a + b)
        psl = special.digamma(a + b + 1.0 + tl)
        psa = special.digamma(a + b + ta)
        d_alpha = (
            np.sum(wl) * special.digamma(a + 1.0) - np.sum(wl * psl)
            + np.sum(wa) * special.digamma(a) - np.sum(wa * psa)
            - W * (special.digamma(a) - psi_ab)
        )  # fmt: skip
        d_beta = (
            np.sum(wl * (special.digamma(b + tl) - psl))
            + np.sum(wa * (special.digamma(b + ta) - psa))
            - W * (special.digamma(b) - psi_ab)
        )
    return float(total), np.array([d_alpha, d_beta])


# ---------------------------------------------------------------------------------------
# curves


def log_survival(alpha, beta, t, xp: SimpleNamespace = NUMPY):
    """``log S(t) = log P(T > t)`` for a new subscriber, ``t`` whole periods >= 0."""
    if xp is NUMPY:
        alpha, beta = _params(alpha=alpha, beta=beta)
        return special.betaln(alpha, beta + _periods(t)) - special.betaln(alpha, beta)
    return betaln(xp, alpha, beta + t) - betaln(xp, alpha, beta)


def survival(alpha, beta, t) -> np.ndarray | float:
    """``S(t)``: share of a new cohort still active after ``t`` renewals (FH2007 eq. 4)."""
    return scalar_if_0d(np.exp(log_survival(alpha, beta, t)))


def churn_pmf(alpha, beta, t) -> np.ndarray | float:
    """``P(T = t)``, ``t >= 1``: share of a new cohort lost at renewal ``t`` (FH2007 eq. 3)."""
    alpha, beta = _params(alpha=alpha, beta=beta)
    t = _periods(t, minimum=1)
    return scalar_if_0d(np.exp(special.betaln(alpha + 1.0, beta + t - 1.0)
                               - special.betaln(alpha, beta)))  # fmt: skip


def retention_rate(alpha, beta, t) -> np.ndarray | float:
    """Cohort retention rate ``r(t) = S(t) / S(t-1) = (beta + t - 1) / (alpha + beta + t - 1)``, t >= 1.

    Increasing in ``t``: the subscribers prone to cancel leave first (FH2007 eq. 7).
    """
    alpha, beta = _params(alpha=alpha, beta=beta)
    t = _periods(t, minimum=1)
    return scalar_if_0d((beta + t - 1.0) / (alpha + beta + t - 1.0))


def conditional_survival(alpha, beta, t, k) -> np.ndarray | float:
    """P(still active after ``k`` more renewals | survived ``t``) ``= S(t + k) / S(t)``.

    Parameters
    ----------
    t, k : array of int
        Renewals completed and renewals ahead (``k = 1``: renews at the next due date).
    """
    alpha, beta = _params(alpha=alpha, beta=beta)
    t, k = _periods(t), _periods(k, "k")
    return scalar_if_0d(
        np.exp(special.betaln(alpha, beta + t + k) - special.betaln(alpha, beta + t))
    )


def hazard(alpha, beta, t) -> np.ndarray | float:
    """P(cancels at the next renewal | survived ``t``) ``= alpha / (alpha + beta + t)``."""
    alpha, beta = _params(alpha=alpha, beta=beta)
    t = _periods(t)
    return scalar_if_0d(alpha / (alpha + beta + t))


def expected_residual_lifetime(alpha, beta, t, horizon: int | None = None) -> np.ndarray | float:
    """Expected number of further renewals of a subscriber who survived ``t`` periods.

    ``horizon=None``: ``E[T - t - 1 | T > t] = (beta + t) / (alpha - 1)``, infinite
    (``inf``) for ``alpha <= 1`` (the Beta puts so much mass near ``theta = 0`` that the mean
    lifetime diverges).  ``horizon=K``: renewals among the next ``K``,
    ``sum_{k=1..K} S(t + k) / S(t)`` (finite for every parameter), in periods.
    """
    alpha, beta = _params(alpha=alpha, beta=beta)
    t = _periods(t)
    if horizon is None:
        with np.errstate(divide="ignore"):
            out = np.where(
                alpha > 1.0, (beta + t) / np.where(alpha > 1.0, alpha - 1.0, 1.0), np.inf
            )
        return scalar_if_0d(out)
    K = int(_periods(horizon, "horizon"))
    a, b = np.broadcast_arrays(alpha, beta + t)
    total = np.zeros(a.shape)
    term = np.ones(a.shape)
    for j in range(K):
        term = term * (b + j) / (a + b + j)
        total = total + term
    return scalar_if_0d(total)


def derl(alpha, beta, t, discount: float) -> np.ndarray | float:
    """Discounted expected residual lifetime (FH2010 eq. 6), in renewal payments.

    ``DERL = sum_{k >= 1} S(t + k) / S(t) (1 + d)^-(k - 1)`` for a subscriber who has made
    ``t`` renewals (``t + 1`` payments), evaluated just before her next renewal decision; a
    renewal then is counted undiscounted.  Residual value = price per period x margin x DERL.

    Summed as the series of the hypergeometric form ``(beta + t)/(alpha + beta + t) *
    2F1(1, beta + t + 1; alpha + beta + t + 1; q)``, ``q = 1 / (1 + d)``, whose term ratio is
    below ``q``: stopped when the last term is below ``1e-14`` of the sum (363 terms at
    ``d = 0.1``).  Finite for any positive parameters and tenure.

    Parameters
    ----------
    discount : float
        ``d``, discount rate per period (> 0), e.g. 0.1 for 10 % a year on a yearly grid.
    """
    alpha, beta = _params(alpha=alpha, beta=beta)
    t = _periods(t)
    d = float(discount)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"discount must be a positive rate per period, got {discount!r}.")
    q = 1.0 / (1.0 + d)
    a, b = np.broadcast_arrays(alpha, beta + t)
    term = b / (a + b)  # S(t+1)/S(t)
    total = term.copy()
    j = 1
    while True:
        term = term * q * (b + j) / (a + b + j)
        total = total + term
        j += 1
        if np.all(term <= DERL_TOL * total):
            break
    return scalar_if_0d(total)


# ---------------------------------------------------------------------------------------
# simulation


def sample_churn_period(rng: np.random.Generator, alpha, beta, t) -> np.ndarray:
    """Exact posterior-predictive draws of the churn period of a subscriber who survived ``t``.

    ``theta | T > t ~ Beta(alpha, beta + t)``, then ``T - t ~ Geometric(theta)`` on 1, 2, ...
    drawn by inversion, ``T - t = max(1, ceil(log U / log(1 - theta)))``.  Returned as float
    (a draw with ``theta`` near 0 can exceed the int64 range; it is then a large finite float
    or ``inf`` when ``theta`` underflows to 0).

    Returns
    -------
    ndarray
        ``T``, the period (counted from the start) in which the subscriber cancels; > ``t``.
    """
    alpha, beta = _params(alpha=alpha, beta=beta)
    t = _periods(t)
    a, b = np.broadcast_arrays(alpha, beta + t)
    theta = rng.beta(a, b)
    u = rng.random(a.shape)
    with np.errstate(divide="ignore"):
        extra = np.ceil(np.log1p(-u) / np.log1p(-theta))
    extra = np.where(theta >= 1.0, 1.0, np.maximum(extra, 1.0))
    extra = np.where(np.isnan(extra), np.inf, extra)  # theta == 0 and u == 0 (never cancels)
    return t + extra
