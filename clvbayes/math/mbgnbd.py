"""MBG/NBD purchase model: likelihood, predictions and simulation (plain array math).

Model
-----
Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison of models for
customer base analysis", *International Journal of Research in Marketing* 24(3), 201-209
(BDF below); the CBG/NBD of Hoppe & Wagner (2007, "Customer base analysis: the case for a
central variant of the Betageometric/NBD model") belongs to the same family.  It is the BG/NBD of Fader, Hardie & Lee (2005; :mod:`clvbayes.math.bgnbd`)
with one change: a customer may also drop out right after the *first* purchase, so a customer
with no repeat purchase is not certainly active.  For customer ``i``, with time measured from
the first purchase:

* right after the first purchase and after each repeat purchase the customer drops out for good
  with probability ``p_i`` (``x + 1`` chances to drop out after ``x`` repeat purchases);
* while active, the customer buys as a Poisson process with rate ``lambda_i`` (per time unit);
* across customers ``lambda ~ Gamma(shape=r, rate=alpha)`` and ``p ~ Beta(a, b)``, independent.

Parameters, units and data columns (``frequency`` ``x``, ``recency`` ``t_x``, ``T``) are those of
:mod:`clvbayes.math.bgnbd`: all four parameters positive, ``alpha`` a rate in the data's time
unit (weeks on CDNOW), every time in that same unit (nothing here converts units).

Equations
---------
Write ``k = r + x``, ``bb = b + x + 1`` and ``s = t / (alpha + T)``.  The individual likelihood
is ``(1 - p)^(x + 1) lambda^x e^(-lambda T)`` (survived all ``x + 1`` chances, no purchase since
``t_x``) plus ``p (1 - p)^x lambda^x e^(-lambda t_x)`` (dropped out at the last purchase; for
``x = 0`` the first purchase, ``t_x = 0``).  Mixing over the priors (BDF's likelihood):

* (M1) ``L = B(a, b + x + 1)/B(a, b) * Gamma(r + x) alpha^r / (Gamma(r) (alpha + T)^(r + x))
  + B(a + 1, b + x)/B(a, b) * Gamma(r + x) alpha^r / (Gamma(r) (alpha + t_x)^(r + x))``,
  evaluated as ``log L = log A + softplus(d)`` with ``A`` the first term and
  ``d = log(a / (b + x)) + (r + x) log((alpha + T) / (alpha + t_x))``; both terms for every ``x``.
* (M2) Latent posterior: alive at ``T`` with weight ``A`` (``lambda ~ Gamma(r + x, alpha + T)``,
  ``p ~ Beta(a, b + x + 1)``) or dropped out at ``t_x`` with weight ``A e^d``
  (``lambda ~ Gamma(r + x, alpha + t_x)``, ``p ~ Beta(a + 1, b + x)``), so
  ``P(alive | x, t_x, T) = 1 / (1 + a / (b + x) ((alpha + T)/(alpha + t_x))^(r + x))`` (BDF).
* (M3) An active customer's future is a fresh BG/NBD process (memoryless), hence with
  ``p ~ Beta(a, bb)``: ``P(alive at T + t) = P(alive) E_p[(1 + p s)^-k]`` and
  ``E[Y(t) | x, t_x, T] = P(alive) E_p[(1 - (1 + p s)^-k) / p]``, which is BDF's
  ``(a + b + x)/(a - 1) [1 - ((alpha + T)/(alpha + T + t))^(r + x)
  2F1(r + x, b + x + 1; a + b + x; t / (alpha + T + t))] * P(alive)``.
* (M4) A new customer (just made the first purchase) is the history ``x = 0, t_x = 0, T = 0``:
  active with probability ``b / (a + b)``, so ``E[X(t)] = b/(a - 1) [1 - (alpha/(alpha + t))^r
  2F1(r, b + 1; a + b; t/(alpha + t))]`` (BDF), and with ``q = t / (alpha + t)``::

      P(X(t) = n) = [n = 0] a/(a + b) + B(a, b + n + 1)/B(a, b) NB(n; r, q)
                    + [n > 0] B(a + 1, b + n)/B(a, b) I_q(n, r).

Relation to BG/NBD, used to reuse its numerics.  Write ``BG(b)`` for a BG/NBD quantity.  Since
``B(a, b + 1) / B(a, b) = b / (a + b)``, for every history::

    log L_MBG(r, alpha, a, b) = log L_BG(r, alpha, a, b + 1) - log1p(a / b)
                                + [x = 0] softplus(log(a / b) + r log1p(T / alpha)),

and the alive component (M2)-(M3) of a customer is BG/NBD's with ``b + 1``: repeat buyers have
exactly BG/NBD's predictions at ``b + 1``; only customers with ``x = 0`` differ (through
P(alive)).  The Beta expectations of (M3) are therefore evaluated by BG/NBD's engine
(:func:`clvbayes.math.bgnbd._beta_expectation`: no hypergeometric function, no singularity at
``a = 1``, accuracy and cost as documented there), the count distribution of an active customer
by :func:`clvbayes.math.bgnbd.prob_purchases`, and the simulation of an active customer's future
by BG/NBD's simulators.

All functions broadcast: parameters may be posterior-draw arrays such as shape
``(chain, draw, 1)`` against customer arrays of shape ``(n,)``, giving ``(chain, draw, n)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from clvbayes.math import bgnbd
from clvbayes.math._checks import MAX_SHOWN as _MAX_SHOWN
from clvbayes.math._checks import as_counts as _as_counts

# Shared with BG/NBD (same validation messages, same Beta-expectation engine)
from clvbayes.math._checks import check_history, check_parameters
from clvbayes.math._checks import positions as _positions
from clvbayes.math._checks import scalar_if_0d as _scalar_if_0d
from clvbayes.math._xp import NUMPY, betaln
from clvbayes.math.bgnbd import _PURCHASES, _SURVIVAL, _beta_expectation, _check_horizon

__all__ = [
    "LoglikSumData",
    "conditional_prob_purchases",
    "expected_purchases",
    "expected_purchases_alive",
    "expected_purchases_new",
    "loglik",
    "loglik_frequency_terms",
    "loglik_sum_and_grad",
    "p_alive",
    "p_alive_at",
    "prepare_loglik_sum",
    "prob_purchases",
    "sample_latent",
    "sample_latent_alive",
    "simulate",
    "simulate_active_futures",
    "simulate_purchase_times",
    "simulate_purchases",
]


def _check_parameters(**params: ArrayLike) -> list[np.ndarray]:
    return check_parameters("MBG/NBD", **params)


def _check_history(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD's checks plus ``recency = 0`` where ``frequency = 0``.

    BG/NBD ignores the recency of a customer without repeat purchases; here it would be read as
    the time of a dropout, so a non-zero value is an error rather than silently used.
    """
    x, t_x, T = check_history(frequency, recency, T)
    x_b, t_x_b = np.broadcast_arrays(x, t_x)
    bad = (x_b == 0) & (t_x_b != 0)
    if bad.any():
        raise ValueError(
            f"recency must be 0 where frequency is 0 (a customer without repeat purchases has "
            f"recency 0 by definition); {int(bad.sum())} entries violate it at positions "
            f"{_positions(bad)} (recency {t_x_b[bad][:_MAX_SHOWN].tolist()})."
        )
    return x, t_x, T


# --------------------------------------------------------------------------------------------
# log-likelihood and P(alive)
# --------------------------------------------------------------------------------------------
def loglik_frequency_terms(r, a, b, frequency, xp: SimpleNamespace = NUMPY):
    """The terms of :func:`loglik` that depend on the history only through ``x``.

    ``log Gamma(r + x) - log Gamma(r) + log B(a, b + x + 1) - log B(a, b)``; a caller may evaluate
    them once per distinct frequency and pass them to :func:`loglik` as ``frequency_terms``.
    """
    return (
        xp.gammaln(r + frequency)
        - xp.gammaln(r)
        + betaln(xp, a, b + frequency + 1.0)
        - betaln(xp, a, b)
    )


def loglik(
    r, alpha, a, b, frequency, recency, T, xp: SimpleNamespace = NUMPY, frequency_terms=None
):
    """Per-customer MBG/NBD log-likelihood (M1) in log-sum-exp form.

    ``log L = log A + softplus(d)`` for every history (``x = 0`` included), with::

        log A = log Gamma(r + x) - log Gamma(r) + r log(alpha) - (r + x) log(alpha + T)
                + log B(a, b + x + 1) - log B(a, b)
        d     = log(a) - log(b + x) + (r + x) log1p((T - t_x) / (alpha + t_x))

    using ``B(a + 1, b + x) / B(a, b + x + 1) = a / (b + x)``.

    As for BG/NBD (:func:`clvbayes.math.bgnbd.loglik`) this is the density of the observed purchase
    times (log of 1 / time unit^x), not a probability: it is positive for frequent buyers.  At
    ``r = 0.25, alpha = 4, a = 0.8, b = 2.5, T = 40`` it is -0.41792826 for ``x = 0`` and
    100.7869 for ``x = 200, t_x = 38``; its maximum over the CDNOW summary is -9582.13.

    Parameters
    ----------
    r, alpha, a, b : array_like or tensor
        Positive parameters (``alpha`` in 1 / time unit); e.g. draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like or tensor
        Customer history ``x``, ``t_x``, ``T`` (times in the data's unit), shape ``(n,)``.
    xp : namespace, default :data:`clvbayes.math._xp.NUMPY`
        Array namespace; :func:`clvbayes.math._xp.pytensor_namespace` builds the same expression
        symbolically for PyMC.  With NumPy the inputs are validated first.
    frequency_terms : array or tensor, optional
        :func:`loglik_frequency_terms` already evaluated for each row.

    Returns
    -------
    array or tensor
        Log-likelihood of each history, broadcast shape.

    Raises
    ------
    ValueError
        NumPy namespace only: non-positive parameters, negative frequency or times, or
        ``recency > T``.
    """
    if xp is NUMPY:
        r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
        frequency, recency, T = _check_history(frequency, recency, T)
    x = frequency
    if frequency_terms is None:
        frequency_terms = loglik_frequency_terms(r, a, b, x, xp)
    log_a = frequency_terms + r * xp.log(alpha) - (r + x) * xp.log(alpha + T)
    d = xp.log(a) - xp.log(b + x) + (r + x) * xp.log1p((T - recency) / (alpha + recency))
    # softplus(d) = max(d, 0) + log1p(exp(-|d|)): no overflow for d up to ~1e5 (x = 1e4), in
    # either namespace and without relying on PyTensor's graph rewrites
    out = log_a + xp.maximum(d, 0.0 * d) + xp.log1p(xp.exp(xp.minimum(d, -d)))
    if xp is NUMPY:
        return _scalar_if_0d(out)
    return out


def _log_dead_odds(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """``d`` = log P(dropped out at t_x | history) / P(alive at T | history) (M2)."""
    return np.log(a) - np.log(b + x) + (r + x) * np.log1p((T - t_x) / (alpha + t_x))


def p_alive(r, alpha, a, b, frequency, recency, T) -> np.ndarray | float:
    """Probability that a customer is still active at ``T`` given the history (M2).

    ``P(alive | x, t_x, T) = 1 / (1 + a / (b + x) ((alpha + T)/(alpha + t_x))^(r + x))``, computed as
    ``expit(-d)``.  Unlike BG/NBD, a customer without repeat purchases may have dropped out right
    after the first purchase: for ``x = 0`` it is ``1 / (1 + (a / b) (1 + T / alpha)^r) < 1``.

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters, e.g. posterior draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like
        Customer history ``x``, ``t_x``, ``T`` (data's time unit), shape ``(n,)``.

    Returns
    -------
    float or ndarray
        Probability in ``(0, 1)``, broadcast shape of all inputs.
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    x, t_x, T = _check_history(frequency, recency, T)
    return _scalar_if_0d(special.expit(-_log_dead_odds(r, alpha, a, b, x, t_x, T)))


# --------------------------------------------------------------------------------------------
# weighted total log-likelihood and its gradient (the hot path of NUTS and MAP)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoglikSumData:
    """Weighted histories laid out once for :func:`loglik_sum_and_grad` (picklable).

    Attributes
    ----------
    bgnbd : clvbayes.math.bgnbd.LoglikSumData
        All histories, laid out for :func:`clvbayes.math.bgnbd.loglik_sum_and_grad`.
    zero_T_values, zero_T_weights : ndarray
        Distinct ``T`` (time unit) of the histories with ``x = 0`` and their total weights.
    """

    bgnbd: bgnbd.LoglikSumData
    zero_T_values: np.ndarray
    zero_T_weights: np.ndarray


def prepare_loglik_sum(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike
) -> LoglikSumData:
    """Lay out weighted histories once for :func:`loglik_sum_and_grad`.

    Parameters
    ----------
    frequency, recency, T : array_like, shape (n,)
        Histories ``x``, ``t_x``, ``T`` (times in the data's unit).
    weights : array_like of int, shape (n,)
        Number of customers sharing each history (non-negative whole numbers; 0 = left out).

    Returns
    -------
    LoglikSumData

    Raises
    ------
    ValueError
        As :func:`clvbayes.math.bgnbd.prepare_loglik_sum` (invalid histories or weights).
    """
    _check_history(frequency, recency, T)
    data = bgnbd.prepare_loglik_sum(frequency, recency, T, weights)
    x = np.ravel(np.asarray(frequency, dtype=float))
    T = np.ravel(np.asarray(T, dtype=float))
    w = np.ravel(_as_counts(weights, "weights")).astype(float)
    zero = (x == 0) & (w > 0)
    T_values, index = np.unique(T[zero], return_inverse=True)
    T_weights = np.bincount(index.ravel(), weights=w[zero], minlength=T_values.size)
    return LoglikSumData(bgnbd=data, zero_T_values=T_values, zero_T_weights=T_weights)


def loglik_sum_and_grad(r, alpha, a, b, data: LoglikSumData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood ``sum_i w_i log L_i`` and its exact gradient in ``(r, alpha, a, b)``.

    Equals ``sum(weights * loglik(r, alpha, a, b, x, t_x, T))`` (M1).  By the identity of the
    module docstring, with ``W = sum w`` and, over the distinct ``T_j`` of the histories with
    ``x = 0`` (total weights ``W_j``), ``e_j = log(a / b) + r log1p(T_j / alpha)``::

        total = BG(r, alpha, a, b + 1) - W log1p(a / b) + sum_j W_j softplus(e_j)

    where ``BG`` is :func:`clvbayes.math.bgnbd.loglik_sum_and_grad` on the same histories (its
    gradient in its ``b`` is the gradient in ``b`` here).  With ``s_j = W_j expit(e_j)`` the
    remaining terms add::

        d/dr     += sum_j s_j log1p(T_j / alpha)
        d/dalpha += -r sum_j s_j T_j / (alpha (alpha + T_j))
        d/da     += -W / (a + b) + sum_j s_j / a
        d/db     += W (1 / b - 1 / (a + b)) - sum_j s_j / b

    Parameters
    ----------
    r, alpha, a, b : float
        Positive parameters (``alpha`` in 1 / time unit).  Not validated (called thousands of
        times per fit); parameters at 0 or infinity give non-finite values, not errors.
    data : LoglikSumData
        From :func:`prepare_loglik_sum`.

    Returns
    -------
    total : float
        Weighted log-likelihood.
    gradient : ndarray, shape (4,)
        Its partial derivatives in ``r``, ``alpha`` (time unit), ``a``, ``b``.
    """
    r, alpha, a, b = (np.float64(v) for v in (r, alpha, a, b))
    total, grad = bgnbd.loglik_sum_and_grad(r, alpha, a, b + 1.0, data.bgnbd)
    with np.errstate(all="ignore"):
        W = data.bgnbd.n_customers
        T0, W0 = data.zero_T_values, data.zero_T_weights
        L = np.log1p(T0 / alpha)
        e = np.log(a) - np.log(b) + r * L
        s = W0 * special.expit(e)
        sum_s = s.sum()
        total = total - W * np.log1p(a / b) + W0 @ np.logaddexp(0.0, e)
        grad = grad + np.array(
            [
                s @ L,
                -r * (s @ (T0 / (alpha * (alpha + T0)))),
                -W / (a + b) + sum_s / a,
                W * (1.0 / b - 1.0 / (a + b)) - sum_s / b,
            ]
        )
    return float(total), grad


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------
def p_alive_at(r, alpha, a, b, frequency, recency, T, t) -> np.ndarray | float:
    """Probability that a customer is still active at ``T + t`` given the history (M3).

    ``P(alive at T + t) = P(alive) E_p[(1 + p t / (alpha + T))^-(r + x)]``, ``p ~ Beta(a, b + x + 1)``,
    i.e. ``P(alive) 2F1(r + x, a; a + b + x + 1; -t / (alpha + T))``.

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters, e.g. posterior draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like
        Customer history ``x``, ``t_x``, ``T`` (data's time unit), shape ``(n,)``.
    t : array_like
        Horizon after ``T`` (>= 0, data's time unit); ``t = 0`` gives :func:`p_alive`.

    Returns
    -------
    float or ndarray
        Probability in ``[0, 1]``, broadcast shape of all inputs (about 1e-12 absolute).
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    x, t_x, T = _check_history(frequency, recency, T)
    t = _check_horizon(t)
    alive = special.expit(-_log_dead_odds(r, alpha, a, b, x, t_x, T))
    return _scalar_if_0d(
        alive * _beta_expectation(_SURVIVAL, r + x, a, b + x + 1.0, t / (alpha + T))
    )


def expected_purchases(r, alpha, a, b, frequency, recency, T, t) -> np.ndarray | float:
    """Expected number of purchases in ``(T, T + t]`` given the history (M3, BDF).

    ``E[Y(t) | x, t_x, T] = P(alive) E_p[(1 - (1 + p s)^-(r + x)) / p]``, ``s = t / (alpha + T)``,
    ``p ~ Beta(a, b + x + 1)``; equal to BDF's hypergeometric form (module docstring) but without
    its removable singularity at ``a = 1`` (relative accuracy about 1e-11).

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters, e.g. posterior draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like
        Customer history ``x``, ``t_x``, ``T`` (data's time unit), shape ``(n,)``.
    t : array_like
        Horizon (>= 0, data's time unit).

    Returns
    -------
    float or ndarray
        Expected number of purchases, broadcast shape of all inputs.
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    x, t_x, T = _check_history(frequency, recency, T)
    t = _check_horizon(t)
    alive = special.expit(-_log_dead_odds(r, alpha, a, b, x, t_x, T))
    per_alive = _beta_expectation(_PURCHASES, r + x, a, b + x + 1.0, t / (alpha + T))
    return _scalar_if_0d(alive * per_alive)


def expected_purchases_alive(r, alpha, a, b, frequency, T, t) -> np.ndarray | float:
    """Expected purchases in ``(T, T + t]`` of a customer known to be active at ``T``.

    ``E_p[(1 - (1 + p s)^-(r + x)) / p]``, ``s = t / (alpha + T)``, ``p ~ Beta(a, b + x + 1)``: the
    factor of :func:`expected_purchases` that does not depend on recency (one evaluation per
    distinct ``(frequency, T)``).

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters.
    frequency, T : array_like
        Repeat purchases ``x`` and age ``T`` (data's time unit).
    t : array_like
        Horizon (>= 0, data's time unit).
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    x, _, T = _check_history(frequency, np.zeros_like(np.asarray(T, dtype=float)), T)
    t = _check_horizon(t)
    return _scalar_if_0d(_beta_expectation(_PURCHASES, r + x, a, b + x + 1.0, t / (alpha + T)))


def expected_purchases_new(r, alpha, a, b, t) -> np.ndarray | float:
    """Expected number of repeat purchases ``E[X(t)]`` of a new customer in ``(0, t]`` (M4, BDF).

    ``E[X(t)] = b/(a - 1) [1 - (alpha/(alpha + t))^r 2F1(r, b + 1; a + b; t/(alpha + t))]``: the
    history ``x = 0, t_x = 0, T = 0`` of :func:`expected_purchases` (active with probability
    ``b / (a + b)``), evaluated the same way (no singularity at ``a = 1``).

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters, e.g. draws of shape ``(chain, draw, 1)``.
    t : array_like
        Time since the first purchase (>= 0, data's time unit), e.g. shape ``(n_t,)``.

    Returns
    -------
    float or ndarray
        Expected number of repeat purchases, broadcast shape of the inputs.
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    t = _check_horizon(t)
    active = special.expit(np.log(b) - np.log(a))  # b / (a + b)
    return _scalar_if_0d(active * _beta_expectation(_PURCHASES, r, a, b + 1.0, t / alpha))


def prob_purchases(r, alpha, a, b, t, n) -> np.ndarray | float:
    """Probability ``P(X(t) = n)`` that a new customer makes ``n`` repeat purchases in ``(0, t]`` (M4).

    ``P(X(t) = n) = [n = 0] a/(a + b) + b/(a + b) P_BG(n; r, alpha, a, b + 1)``: dropped out right
    after the first purchase (probability ``E[p] = a / (a + b)``), or active, and then a BG/NBD
    customer with ``p ~ Beta(a, b + 1)`` (:func:`clvbayes.math.bgnbd.prob_purchases`).  Expanded,
    this is BDF's ``B(a, b + n + 1)/B(a, b) NB(n; r, q) + B(a + 1, b + n)/B(a, b) I_q(n, r)`` with
    ``q = t / (alpha + t)`` and ``I_q(0, r) = 1``.

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters, e.g. draws of shape ``(chain, draw, 1)``.
    t : array_like
        Length of the period (>= 0, data's time unit).
    n : array_like of int
        Number of repeat purchases (>= 0), e.g. shape ``(m,)``.

    Returns
    -------
    float or ndarray
        Probabilities, broadcast shape of the inputs; they sum to 1 over ``n = 0, 1, ...``.
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    t = _check_horizon(t)
    n = _as_counts(n, "n")
    log_odds = np.log(a) - np.log(b)
    active = bgnbd.prob_purchases(r, alpha, a, b + 1.0, t, n)
    return _scalar_if_0d(special.expit(-log_odds) * active + (n == 0) * special.expit(log_odds))


def conditional_prob_purchases(r, alpha, a, b, frequency, recency, T, t, n) -> np.ndarray | float:
    """Probability of ``n`` purchases in ``(T, T + t]`` given the history.

    Dead at ``T`` (probability ``1 - P(alive)``): no purchase.  Active: ``lambda`` and ``p`` follow
    the alive component of (M2), and the future is a BG/NBD process started active, so with
    ``q = t / (alpha + T + t)``, ``k = r + x``, ``bb = b + x + 1``::

        P(Y(t) = n | x, t_x, T) = [n = 0] (1 - P(alive))
            + P(alive) [B(a, bb + n)/B(a, bb) NB(n; k, q) + [n > 0] B(a + 1, bb + n - 1)/B(a, bb) I_q(n, k)],

    the bracket being :func:`clvbayes.math.bgnbd.prob_purchases` at ``(k, alpha + T, a, bb)``.

    Parameters
    ----------
    r, alpha, a, b : array_like
        Positive parameters.
    frequency, recency, T : array_like
        Customer history ``x``, ``t_x``, ``T`` (data's time unit).
    t : array_like
        Horizon (>= 0, data's time unit).
    n : array_like of int
        Number of purchases (>= 0); it broadcasts against the other inputs (use e.g.
        ``n[:, None]`` for a table of ``n`` by customer).

    Returns
    -------
    float or ndarray
        Probabilities, broadcast shape of all inputs; they sum to 1 over ``n``.
    """
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    x, t_x, T = _check_history(frequency, recency, T)
    t = _check_horizon(t)
    n = _as_counts(n, "n")
    d = _log_dead_odds(r, alpha, a, b, x, t_x, T)
    active = bgnbd.prob_purchases(r + x, alpha + T, a, b + x + 1.0, t, n)
    return _scalar_if_0d(special.expit(-d) * active + (n == 0) * special.expit(d))


# --------------------------------------------------------------------------------------------
# latent posterior and simulation
# --------------------------------------------------------------------------------------------
def sample_latent(
    rng: np.random.Generator | int | None, r, alpha, a, b, frequency, recency, T
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each customer's latent state ``(alive at T, lambda, p)`` from its exact posterior (M2).

    Both terms of the individual likelihood (module docstring) times the Gamma and Beta priors
    are again Gamma x Beta, so the posterior is a two-component mixture: alive at ``T`` with
    probability :func:`p_alive`, ``lambda ~ Gamma(r + x, rate = alpha + T)``,
    ``p ~ Beta(a, b + x + 1)``; otherwise dropped out at ``t_x`` (for ``x = 0`` right after the
    first purchase), ``lambda ~ Gamma(r + x, rate = alpha + t_x)``, ``p ~ Beta(a + 1, b + x)``.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    r, alpha, a, b : array_like
        Positive parameters, e.g. posterior draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like
        Customer history ``x``, ``t_x``, ``T`` (data's time unit), shape ``(n,)``.

    Returns
    -------
    alive : ndarray of bool
        Whether the customer is still active at ``T``.
    lam : ndarray
        Purchase rate (per time unit); may underflow to 0 for shapes ``r + x`` below ~0.01.
    p : ndarray
        Dropout probability per purchase, in ``[0, 1]``.

    All three have the broadcast shape of all inputs.
    """
    rng = np.random.default_rng(rng)
    r, alpha, a, b = _check_parameters(r=r, alpha=alpha, a=a, b=b)
    x, t_x, T = _check_history(frequency, recency, T)
    prob_alive = special.expit(-_log_dead_odds(r, alpha, a, b, x, t_x, T))
    r, alpha, a, b, x, t_x, T, prob_alive = np.broadcast_arrays(
        r, alpha, a, b, x, t_x, T, prob_alive
    )
    alive = rng.random(prob_alive.shape) < prob_alive
    lam = rng.standard_gamma(r + x) / np.where(alive, alpha + T, alpha + t_x)
    p = rng.beta(np.where(alive, a, a + 1.0), np.where(alive, b + x + 1.0, b + x))
    return alive, lam, p


def sample_latent_alive(
    rng: np.random.Generator | int | None, r, alpha, a, b, frequency, T
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(lambda, p)`` of a customer known to be active at ``T``: the alive component of (M2).

    ``lambda ~ Gamma(r + x, rate = alpha + T)``, ``p ~ Beta(a, b + x + 1)``, which is
    :func:`clvbayes.math.bgnbd.sample_latent_alive` at ``b + 1``.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    r, alpha, a, b : array_like
        Positive parameters, e.g. draws of shape ``(S, 1)``.
    frequency, T : array_like
        Repeat purchases ``x`` and age ``T`` (data's time unit), shape ``(n,)``.

    Returns
    -------
    lam, p : ndarray
        Purchase rate (per time unit) and dropout probability, broadcast shape of all inputs.
    """
    _check_parameters(r=r, alpha=alpha, a=a, b=b)
    return bgnbd.sample_latent_alive(
        rng, r, alpha, a, np.asarray(b, dtype=float) + 1.0, frequency, T
    )


def simulate_active_futures(
    seed: int, r, alpha, a, b, frequency, T, t: float, period: float = 1.0, factors=None,
    mark_shape=None, mark_rate_shape=None, independent: bool = False,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Futures over ``(T, T + t]`` of customers active at ``T``, per draw and (frequency, T).

    The alive posterior of an MBG/NBD customer is BG/NBD's at ``b + 1`` and the future of an
    active customer is the same process, so this is
    :func:`clvbayes.math.bgnbd.simulate_active_futures` with ``b + 1`` (see there for the
    arguments and the returned arrays).
    """
    b1 = np.asarray(b, dtype=float) + 1.0
    return bgnbd.simulate_active_futures(
        seed, r, alpha, a, b1, frequency, T, t, period, factors,
        mark_shape=mark_shape, mark_rate_shape=mark_rate_shape, independent=independent,
    )  # fmt: skip


def simulate_purchases(rng: np.random.Generator | int | None, alive, lam, p, t) -> np.ndarray:
    """Number of purchases in ``(0, t]`` of customers with latent state ``(alive, lam, p)`` at 0.

    After ``T`` an MBG/NBD customer follows the BG/NBD process (buy at rate ``lam`` while active,
    drop out with probability ``p`` after each purchase), so this is
    :func:`clvbayes.math.bgnbd.simulate_purchases`;
    ``simulate_purchases(rng, *sample_latent(rng, ...), t)`` draws from the posterior predictive
    of purchases in ``(T, T + t]``.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    alive : array_like of bool
        Whether each customer is active at the start of the window.
    lam, p : array_like
        Purchase rates (>= 0, per time unit) and dropout probabilities per purchase (in [0, 1]).
    t : array_like
        Window length (>= 0, data's time unit).

    Returns
    -------
    ndarray of int64
        Purchase counts, broadcast shape of the inputs.
    """
    return bgnbd.simulate_purchases(rng, alive, lam, p, t)


def simulate_purchase_times(
    rng: np.random.Generator | int | None, alive, lam, p, t, sort: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Purchase counts and purchase times in ``(0, t]`` (for discounted value).

    :func:`clvbayes.math.bgnbd.simulate_purchase_times` (same process after ``T``; arguments as
    :func:`simulate_purchases`).

    Returns
    -------
    counts : ndarray of int64
        Purchases per customer, broadcast shape of the inputs.
    times : ndarray, shape (counts.sum(),)
        Purchase times in ``(0, t]`` from the start of the window, customers in C order of
        ``counts``, ascending within each customer when ``sort`` is true.
    """
    return bgnbd.simulate_purchase_times(rng, alive, lam, p, t, sort=sort)


def simulate(
    rng: np.random.Generator | int | None, r, alpha, a, b, T, t_holdout=0.0
) -> dict[str, np.ndarray]:
    """Simulate customers from the MBG/NBD population with observation lengths ``T``.

    Each customer gets ``lambda ~ Gamma(r, rate=alpha)`` and ``p ~ Beta(a, b)``, makes a first
    purchase at time 0 and drops out right away with probability ``p``; otherwise the customer
    follows the BG/NBD process from time 0.  Given ``(lambda, p)`` that first coin is independent
    of the rest, so a BG/NBD population (:func:`clvbayes.math.bgnbd.simulate`) in which customers
    who drop out at 0 have their purchases removed is an exact draw.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    r, alpha, a, b : array_like
        Positive parameters (scalars, or broadcastable to ``T``).
    T : array_like
        Calibration length of each customer (>= 0, data's time unit), shape ``(n,)``.
    t_holdout : array_like, default 0
        Holdout length (>= 0, data's time unit).

    Returns
    -------
    dict of ndarray, each of shape ``(n,)``
        ``frequency``, ``recency``, ``T``, ``frequency_holdout``, the true ``lam``, ``p`` and
        ``alive_at_T``, as :func:`clvbayes.math.bgnbd.simulate`, plus ``dropped_at_start`` (bool).
    """
    rng = np.random.default_rng(rng)
    _check_parameters(r=r, alpha=alpha, a=a, b=b)
    T = _check_horizon(T, "T")
    _check_horizon(t_holdout, "t_holdout")
    out = bgnbd.simulate(rng, r, alpha, a, b, T, t_holdout)
    dropped = rng.random(out["p"].shape) < out["p"]
    out["frequency"] = np.where(dropped, 0, out["frequency"])
    out["recency"] = np.where(dropped, 0.0, out["recency"])
    out["frequency_holdout"] = np.where(dropped, 0, out["frequency_holdout"])
    out["alive_at_T"] = out["alive_at_T"] & ~dropped
    out["dropped_at_start"] = dropped
    return out
