"""Gamma-Gamma model of the monetary value of transactions (plain array math).

Model
-----
Colombo & Jiang (1999), "A stochastic RFM model", *Journal of Interactive Marketing* 13(3),
and the note by Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value"
(http://brucehardie.com/notes/025/).  For customer ``i``:

* each transaction value is ``z_ij ~ Gamma(shape=p, rate=nu_i)``, so the mean value of one
  transaction of that customer is ``p / nu_i``;
* the spend rate varies across customers as ``nu_i ~ Gamma(shape=q, rate=gamma)``.

Assumptions: transaction values of a customer are i.i.d. given ``nu_i``; the coefficient of
variation of a customer's values, ``1 / sqrt(p)``, is common to all customers; spend is
independent of the purchase process (frequency, recency, T), which is why the spend model can be
combined with BG/NBD.

Data columns (one row per customer, all in currency units of the data)
-----------------------------------------------------------------------
``frequency``
    ``x``, number of repeat transactions in the calibration period (>= 0).  Only customers
    with ``x >= 1`` carry information about spend; a row with ``x = 0`` contributes a
    log-likelihood of exactly 0.
``monetary_value``
    ``z-bar``, mean value of those ``x`` repeat transactions (> 0 where ``x >= 1``; ignored
    where ``x = 0``).

Equations
---------
Because a sum of ``x`` i.i.d. ``Gamma(p, nu)`` values is ``Gamma(p x, nu)``, the mean is
``z-bar | nu, x ~ Gamma(shape=p x, rate=x nu)``.  Mixing over ``nu ~ Gamma(q, gamma)`` gives the
density of the observed mean (Fader & Hardie 2013, marginal distribution of z-bar)::

    f(z-bar | p, q, gamma; x) = Gamma(p x + q) / (Gamma(p x) Gamma(q))
                                * gamma^q * x^(p x) * z-bar^(p x - 1) / (gamma + x z-bar)^(p x + q)

and, since the gamma prior is conjugate, ``nu | x, z-bar ~ Gamma(p x + q, rate = gamma + x z-bar)``,
whence the conditional expected value of a customer's next transaction (Fader & Hardie 2013)::

    E[Z | p, q, gamma; x, z-bar] = p (gamma + x z-bar) / (p x + q - 1)
                                 = w * p gamma / (q - 1) + (1 - w) * z-bar,
    w = (q - 1) / (p x + q - 1),

a weighted mean of the population mean ``E[Z] = p gamma / (q - 1)`` (finite only for ``q > 1``)
and the customer's observed mean.

Which log-likelihood, and why
-----------------------------
:func:`loglik` is the log of ``f(z-bar | p, q, gamma; x)`` above *with every constant included*,
i.e. a proper density of the observed data (it integrates to 1 over ``z-bar``), so pointwise
values can be used for ArviZ LOO/WAIC.  It reproduces the published CDNOW fit: maximising its
sum over the 946 customers with ``x >= 1`` of the CDNOW summary gives ``p = 6.2488``,
``q = 3.7446``, ``gamma = 15.4478`` and a log-likelihood of -4055.92 (Fader & Hardie 2013).
Two other forms do *not* reproduce it: dropping the ``x^(p x)`` Jacobian term (which depends on
``p``, so it is not a constant) moves the maximum to a different, wrong place
(log-likelihood -5428.41); and the likelihood of the individual transaction values would need
each value, not only their mean, since it depends on ``sum(log z_ij)``.

All functions broadcast: parameters may be posterior-draw arrays such as shape
``(chain, draw, 1)`` against customer arrays of shape ``(n,)``, giving ``(chain, draw, n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from clvbayes.errors import ModelError
from clvbayes.math._checks import MAX_SHOWN as _MAX_SHOWN
from clvbayes.math._checks import as_counts as _as_counts
from clvbayes.math._checks import as_float as _as_float
from clvbayes.math._checks import check_parameters
from clvbayes.math._checks import positions as _positions
from clvbayes.math._checks import scalar_if_0d as _scalar_if_0d
from clvbayes.math._special import digamma_scalar as _digamma
from clvbayes.math._xp import NUMPY, betaln

__all__ = [
    "LoglikSumData",
    "expected_spend",
    "loglik",
    "loglik_sum_and_grad",
    "population_mean_spend",
    "prepare_loglik_sum",
    "sample_spend_rate",
    "simulate",
    "simulate_transaction_values",
]


#: A NumPy array-like or a PyTensor tensor (``loglik`` accepts both).
ArrayOrTensor = Any


# --------------------------------------------------------------------------------------------
# input checks (NumPy inputs only; the PyTensor path receives data checked by the caller)
# --------------------------------------------------------------------------------------------
def _check_parameters(**params: ArrayLike) -> list[np.ndarray]:
    return check_parameters("Gamma-Gamma", **params)


def _check_data(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate the customer columns; return them as float arrays."""
    x = _as_float("frequency", frequency)
    m = _as_float("monetary_value", monetary_value)
    bad_x = ~(np.isfinite(x) & (x >= 0))
    if bad_x.any():
        raise ValueError(
            f"frequency must be a finite, non-negative number of repeat transactions; "
            f"{int(bad_x.sum())} customers violate it at positions {_positions(bad_x)} "
            f"(values {x.ravel()[bad_x.ravel()][:_MAX_SHOWN].tolist()})."
        )
    try:
        x_b, m_b = np.broadcast_arrays(x, m)
    except ValueError as exc:
        raise ValueError(
            f"frequency (shape {x.shape}) and monetary_value (shape {m.shape}) "
            "must have the same length, one entry per customer."
        ) from exc
    bad_m = (x_b > 0) & ~(np.isfinite(m_b) & (m_b > 0))
    if bad_m.any():
        raise ValueError(
            "monetary_value must be a positive, finite mean transaction value where "
            f"frequency >= 1; {int(bad_m.sum())} customers violate it at positions "
            f"{_positions(bad_m)} (values {m_b[bad_m][:_MAX_SHOWN].tolist()}). "
            "Drop those customers or fix their transaction values (non-positive values such as "
            "returns cannot come from a Gamma distribution)."
        )
    return x, m


def _count_bad_draws(bad: np.ndarray, param_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Count parameter draws (elements of the broadcast parameter array) with any violation.

    Returns ``(number of bad draws, number of draws, flat index of the first bad element of bad)``.
    """
    n_draws = int(np.prod(param_shape, dtype=np.int64))
    draw_id = np.broadcast_to(np.arange(n_draws).reshape(param_shape), bad.shape)
    n_bad = int(np.unique(draw_id[bad]).size)
    return n_bad, n_draws, int(np.flatnonzero(bad)[0])


# --------------------------------------------------------------------------------------------
# log-likelihood
# --------------------------------------------------------------------------------------------
def loglik(
    p: ArrayOrTensor,
    q: ArrayOrTensor,
    gamma: ArrayOrTensor,
    frequency: ArrayOrTensor,
    monetary_value: ArrayOrTensor,
    xp: SimpleNamespace = NUMPY,
    frequency_terms: ArrayOrTensor | None = None,
) -> ArrayOrTensor:
    """Per-customer log density of the mean transaction value z-bar given x.

    ``log f(z-bar | p, q, gamma; x)`` of Fader & Hardie (2013), constants included (see the
    module docstring), written in the numerically stable form::

        -log B(p x, q) - p x log1p(gamma / (x z-bar)) - q log1p(x z-bar / gamma) - log z-bar

    which equals the note's expression term by term.

    Parameters
    ----------
    p, q, gamma : array_like or tensor
        Positive model parameters: transaction-value shape ``p``, spend-rate shape ``q`` and
        spend-rate rate ``gamma`` (currency units).  Broadcast against the data.
    frequency : array_like
        Number of repeat transactions ``x`` (>= 0).  Rows with ``x = 0`` return exactly 0.
    monetary_value : array_like
        Mean value ``z-bar`` of those transactions (currency units; > 0 where ``x >= 1``).
    xp : namespace, default :data:`clvbayes.math._xp.NUMPY`
        Array namespace; pass :func:`clvbayes.math._xp.pytensor_namespace` to build the same
        expression symbolically for PyMC.  With NumPy the inputs are validated first.
    frequency_terms : array or tensor, optional
        :func:`loglik_frequency_terms` already evaluated per row (e.g. gathered from the
        distinct frequencies, as the PyMC model does for speed).

    Returns
    -------
    array or tensor
        Log density (log of 1 / currency unit), broadcast shape of all inputs.

    Raises
    ------
    ValueError
        NumPy namespace only: non-positive parameters, negative frequency, or non-positive
        monetary value where ``frequency >= 1``.
    """
    if xp is NUMPY:
        p, q, gamma = _check_parameters(p=p, q=q, gamma=gamma)
        frequency, monetary_value = _check_data(frequency, monetary_value)
    has_spend = frequency > 0
    x = xp.where(has_spend, frequency, 1.0)  # rows with x = 0 get stand-ins, masked below
    m = xp.where(has_spend, monetary_value, 1.0)
    px = p * x
    xm = x * m
    if frequency_terms is None:
        frequency_terms = loglik_frequency_terms(p, q, x, xp)
    ll = frequency_terms - px * xp.log1p(gamma / xm) - q * xp.log1p(xm / gamma) - xp.log(m)
    return xp.where(has_spend, ll, 0.0)


def loglik_frequency_terms(p, q, frequency, xp: SimpleNamespace = NUMPY):
    """``-log B(p x, q)``: the costly term of :func:`loglik` that depends only on ``x`` (>= 1).

    With NumPy ``log B`` is taken from Stirling's series when one argument is large
    (:func:`clvbayes.math._special.betaln_accurate`): ``gammaln(p x) - gammaln(p x + q)`` would lose
    ~1e-5 absolute to cancellation at ``p x ~ 1e10``.
    """
    if xp is NUMPY:
        from clvbayes.math._special import betaln_accurate as _betaln

        return -_betaln(np.asarray(p * frequency, dtype=float), np.asarray(q, dtype=float))
    return -betaln(xp, p * frequency, q)


# --------------------------------------------------------------------------------------------
# weighted total log-likelihood and its gradient (the hot path of NUTS)
# --------------------------------------------------------------------------------------------
#: Up to this many histories the sum is one compiled loop: NumPy's per-call overhead
#: dominates small data (see clvbayes.math.bgnbd); beyond it, the NumPy passes below.
_SUM_LOOP_MAX = 16384
# Histories per pass: the work arrays (64 KiB each) stay in cache, and the dot products stay
# at or below 10,000 elements, above which OpenBLAS runs them multi-threaded (10-100x slower
# when the other cores are busy, e.g. with the other chains).
_SUM_CHUNK = 8192


@dataclass(frozen=True, eq=False)
class LoglikSumData:
    """Weighted spend histories laid out once for :func:`loglik_sum_and_grad`.

    Built by :func:`prepare_loglik_sum`; plain arrays, so it pickles to sampler processes.
    Only histories with ``x >= 1`` and positive weight are kept.

    Attributes
    ----------
    n_customers : float
        Total weight ``W = sum_i w_i``.
    x_values, x_weights : ndarray
        Distinct frequencies and the total weight of each.
    spend : ndarray
        ``x z-bar`` per history (total repeat spend, currency units).
    weights_x_and_w : ndarray, shape (2, n)
        Rows ``w x`` and ``w``.
    sum_wx_log_spend, sum_w_log_zbar : float
        The sufficient statistics ``sum w x log(x z-bar)`` and ``sum w log(z-bar)``.
    """

    n_customers: float
    x_values: np.ndarray
    x_weights: np.ndarray
    spend: np.ndarray
    weights_x_and_w: np.ndarray
    sum_wx_log_spend: float
    sum_w_log_zbar: float


def prepare_loglik_sum(
    frequency: ArrayLike, monetary_value: ArrayLike, weights: ArrayLike
) -> LoglikSumData:
    """Lay out weighted spend histories once for :func:`loglik_sum_and_grad`.

    Histories with ``x = 0`` (no spend information, log-likelihood 0) or weight 0 are dropped.

    Parameters
    ----------
    frequency : array_like, shape (n,)
        Repeat transactions ``x`` (>= 0).
    monetary_value : array_like, shape (n,)
        Mean value ``z-bar`` of those transactions (currency units; > 0 where ``x >= 1``).
    weights : array_like of int, shape (n,)
        Number of customers sharing each history (non-negative whole numbers).

    Returns
    -------
    LoglikSumData

    Raises
    ------
    ValueError
        On invalid data (as :func:`loglik`), or weights of another length or not
        non-negative whole numbers.
    """
    x, z = (np.ravel(v) for v in _check_data(frequency, monetary_value))
    w = _as_counts(weights, "weights").ravel().astype(float)
    if not x.size == z.size == w.size:
        raise ValueError(
            f"frequency, monetary_value and weights must have one entry per history; got "
            f"lengths {x.size}, {z.size} and {w.size}."
        )
    keep = (x > 0) & (w > 0)
    x, z, w = x[keep], z[keep], w[keep]
    x_values, x_index = np.unique(x, return_inverse=True)
    spend = x * z
    return LoglikSumData(
        n_customers=float(np.sum(w)),
        x_values=x_values,
        x_weights=np.bincount(x_index, weights=w, minlength=x_values.size),
        spend=spend,
        weights_x_and_w=np.stack([w * x, w]),
        sum_wx_log_spend=float((w * x) @ np.log(spend)),
        sum_w_log_zbar=float(w @ np.log(z)),
    )


def loglik_sum_and_grad(p, q, gamma, data: LoglikSumData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood ``sum_i w_i log f_i`` and its gradient in ``(p, q, gamma)``.

    The value equals ``sum(weights * loglik(p, q, gamma, x, z-bar))`` (:func:`loglik`); the
    gradient is exact.  With ``y_i = gamma + x_i z-bar_i``, ``W = sum w`` and ``W_x`` the
    weight of each distinct ``x``, the log-likelihood of a history is
    ``-log B(p x, q) + q log(gamma) - (p x + q) log(y) + p x log(x z-bar) - log(z-bar)``, so::

        total = -sum_x W_x log B(p x, q) + q W log(gamma) - p S_xL - q S_L
                + p sum w x log(x z-bar) - sum w log(z-bar)
        d/dp     = -sum_x W_x x [psi(p x) - psi(p x + q)] - S_xL + sum w x log(x z-bar)
        d/dq     = -sum_x W_x [psi(q) - psi(p x + q)] + W log(gamma) - S_L
        d/dgamma = q W / gamma - p sum w x / y - q sum w / y

    with ``S_xL = sum w x log(y)``, ``S_L = sum w log(y)`` and ``psi`` the digamma function.
    The last two sums of ``total`` are constants computed by :func:`prepare_loglik_sum`; per
    history it costs one ``log``, one division and one small matrix product in chunks, about
    3 ns (2 ms for 544,782 histories, one core).  The terms are large and partly cancel, so
    the result is accurate to about 1e-15 of ``sum w |log f|`` rather than of the total.

    Parameters
    ----------
    p, q, gamma : float
        Positive parameters (``gamma`` in currency units).  Not validated (called thousands
        of times per fit with values from a sampler).
    data : LoglikSumData
        From :func:`prepare_loglik_sum`.

    Returns
    -------
    total : float
        Weighted log-likelihood (log of 1 / currency unit, summed).
    gradient : ndarray, shape (3,)
        Its partial derivatives in ``p``, ``q`` and ``gamma`` (1 / currency unit).  Parameters
        at 0 or infinity (which a sampler may probe) give non-finite values, not errors.
    """
    with np.errstate(all="ignore"):
        return _loglik_sum_and_grad(*(np.float64(v) for v in (p, q, gamma)), data)


def _loglik_sum_and_grad(p, q, gamma, data: LoglikSumData) -> tuple[float, np.ndarray]:
    W = data.n_customers
    if data.spend.size <= _SUM_LOOP_MAX:  # small data: one compiled call, no NumPy passes
        out = _loglik_sum_and_grad_loop(
            p, q, gamma, W, data.x_values, data.x_weights, data.spend, data.weights_x_and_w,
            data.sum_wx_log_spend, data.sum_w_log_zbar,
        )  # fmt: skip
        return float(out[0]), out[1:]
    xv, wx = data.x_values, data.x_weights
    px = p * xv
    psi_pxq = special.digamma(px + q)
    log_b = special.gammaln(px) + special.gammaln(q) - special.gammaln(px + q)
    # sums[i, j]: row i of weights_x_and_w (w x, w) against log(y) (j = 0) and 1 / y (j = 1)
    sums = np.zeros((2, 2))
    work = np.empty((2, min(_SUM_CHUNK, data.spend.size)))
    for start in range(0, data.spend.size, _SUM_CHUNK):
        stop = min(start + _SUM_CHUNK, data.spend.size)
        log_y, inv_y = work[:, : stop - start]
        np.add(data.spend[start:stop], gamma, out=log_y)
        np.divide(1.0, log_y, out=inv_y)
        np.log(log_y, out=log_y)
        sums += data.weights_x_and_w[:, start:stop] @ work[:, : stop - start].T
    (s_xl, s_xi), (s_l, s_i) = sums
    log_gamma = np.log(gamma)
    total = (
        -(wx @ log_b) + q * W * log_gamma - p * s_xl - q * s_l
        + p * data.sum_wx_log_spend - data.sum_w_log_zbar
    )  # fmt: skip
    grad = np.array([
        -(wx @ (xv * (special.digamma(px) - psi_pxq))) - s_xl + data.sum_wx_log_spend,
        -(wx @ (special.digamma(q) - psi_pxq)) + W * log_gamma - s_l,
        q * W / gamma - p * s_xi - q * s_i,
    ])  # fmt: skip
    return float(total), grad


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _loglik_sum_and_grad_loop(p, q, gamma, W, xv, wx, spend, wxw, sum_wx_log_spend,
                              sum_w_log_zbar):  # fmt: skip  # pragma: no cover - compiled
    """:func:`_loglik_sum_and_grad` in one compiled call (the same sums);
    returns ``[total, d/dp, d/dq, d/dgamma]``."""
    s_xl = s_xi = s_l = s_i = 0.0
    for i in range(spend.size):  # log(y) and 1 / y against the rows (w x, w)
        y = spend[i] + gamma
        log_y, inv_y = np.log(y), 1.0 / y
        s_xl += wxw[0, i] * log_y
        s_xi += wxw[0, i] * inv_y
        s_l += wxw[1, i] * log_y
        s_i += wxw[1, i] * inv_y
    lg_q, psi_q = math.lgamma(q), _digamma(q)
    w_log_b = g_p = g_q = 0.0
    for k in range(xv.size):  # log B(p x, q) and its derivatives, once per frequency
        px = p * xv[k]
        psi_pxq = _digamma(px + q)
        w_log_b += wx[k] * (math.lgamma(px) + lg_q - math.lgamma(px + q))
        g_p += wx[k] * xv[k] * (_digamma(px) - psi_pxq)
        g_q += wx[k] * (psi_q - psi_pxq)
    log_gamma = np.log(gamma)
    out = np.empty(4)
    out[0] = (-w_log_b + q * W * log_gamma - p * s_xl - q * s_l + p * sum_wx_log_spend
              - sum_w_log_zbar)  # fmt: skip
    out[1] = -g_p - s_xl + sum_wx_log_spend
    out[2] = -g_q + W * log_gamma - s_l
    out[3] = q * W / gamma - p * s_xi - q * s_i
    return out


HEAVY_TAIL_FIX = (
    "q <= 1 means the fitted population of spend rates is so heavy-tailed (a few customers "
    "with very large transaction values) that the mean transaction value of the population "
    "does not exist, so a customer with few or no repeat purchases has an infinite expected "
    "spend. Fixes: (1) give q a prior that keeps it above 1; it must be strong, since the "
    "data alone put q below 1, and it then sets the spend predicted for those customers: "
    'clvbayes run --priors FILE.json with {"gamma_gamma": {"q": {"dist": "Gamma", '
    '"alpha": 400, "beta": 100}}} (q about 4 +/- 0.2; in Python GammaGammaModel(priors='
    '{"q": Prior("Gamma", alpha=400, beta=100)})); (2) cap extreme transaction values before '
    "summarising; or (3) predict purchases without the spend model."
)
"""The explanation and the fix attached to every "q <= 1" error and warning."""


def heavy_tail_message(bad: np.ndarray, param_shape: tuple[int, ...], p, q, x) -> str:
    """The :class:`~clvbayes.errors.ModelError` text for ``p x + q <= 1`` (no finite mean).

    ``bad`` marks the (draw, customer) elements where ``p x + q <= 1`` (broadcast shape);
    the message counts the draws and customers, shows the first customers' positions and
    frequencies and one offending draw, explains and gives the fix (:data:`HEAVY_TAIL_FIX`).
    """
    n_bad, n_draws, first = _count_bad_draws(bad, param_shape)
    p_b, q_b, x_b = (np.broadcast_to(v, bad.shape).ravel() for v in (p, q, x))
    cust = bad.reshape(-1, bad.shape[-1]).any(axis=0) if bad.ndim else np.asarray([True])
    return (
        "expected_spend needs p * x + q > 1 for every customer: the Gamma-Gamma conditional "
        "mean p (gamma + x zbar) / (p x + q - 1) is infinite otherwise; "
        f"{n_bad} of {n_draws} parameter draws violate it, for {int(cust.sum())} customer(s) "
        f"(positions {_positions(cust)}; e.g. p = {p_b[first]:.6g}, q = {q_b[first]:.6g} at "
        f"frequency x = {x_b[first]:.6g}; x = 0 needs q > 1). {HEAVY_TAIL_FIX}"
    )


# --------------------------------------------------------------------------------------------
# expectations
# --------------------------------------------------------------------------------------------
def population_mean_spend(p: ArrayLike, q: ArrayLike, gamma: ArrayLike) -> np.ndarray | float:
    """Population mean transaction value ``E[Z] = p gamma / (q - 1)``.

    The mean of ``p / nu`` with ``nu ~ Gamma(q, gamma)`` (Fader & Hardie 2013); it is infinite
    unless ``q > 1``.

    Parameters
    ----------
    p, q, gamma : array_like
        Positive parameters (possibly arrays of posterior draws); ``q > 1`` required.

    Returns
    -------
    float or ndarray
        Mean value of one transaction (currency units), broadcast shape of the parameters.

    Raises
    ------
    ModelError
        If any parameter is non-positive, or ``q <= 1`` for any draw (message gives how many
        and the fix).
    """
    p, q, gamma = _check_parameters(p=p, q=q, gamma=gamma)
    p, q, gamma = np.broadcast_arrays(p, q, gamma)
    bad = q <= 1
    if bad.any():
        n_bad, n_draws, first = _count_bad_draws(bad, q.shape)
        raise ModelError(
            "population_mean_spend needs q > 1: the mean transaction value p * gamma / (q - 1) "
            f"is infinite otherwise (E[1/nu] diverges); {n_bad} of {n_draws} parameter draws "
            f"have q <= 1 (e.g. q = {q.ravel()[first]:.6g}). {HEAVY_TAIL_FIX}"
        )
    return _scalar_if_0d(p * gamma / (q - 1.0))


def expected_spend(
    p: ArrayLike,
    q: ArrayLike,
    gamma: ArrayLike,
    frequency: ArrayLike,
    monetary_value: ArrayLike,
) -> np.ndarray | float:
    """Conditional expected value of a customer's next transaction.

    ``E[Z | p, q, gamma; x, z-bar] = p (gamma + x z-bar) / (p x + q - 1)`` (Fader & Hardie
    2013), the posterior mean of ``p / nu``.  For ``x = 0`` it reduces to the population mean
    ``p gamma / (q - 1)`` (``monetary_value`` is ignored there).

    Parameters
    ----------
    p, q, gamma : array_like
        Positive parameters, e.g. posterior draws of shape ``(chain, draw, 1)``.
    frequency : array_like
        Repeat transactions ``x`` (>= 0), one per customer, shape ``(n,)``.
    monetary_value : array_like
        Mean repeat-transaction value ``z-bar`` (currency units; > 0 where ``x >= 1``).

    Returns
    -------
    float or ndarray
        Expected value of one transaction (currency units), broadcast shape of all inputs.

    Raises
    ------
    ModelError
        If ``p x + q <= 1`` for some customer and draw: the expectation is infinite there.
        The message (:func:`heavy_tail_message`) names the customers and draws, explains
        and gives the fix.  (A subclass of ValueError.)
    ValueError
        On invalid parameters or data.
    """
    p, q, gamma = _check_parameters(p=p, q=q, gamma=gamma)
    x, m = _check_data(frequency, monetary_value)
    param_shape = np.broadcast_shapes(p.shape, q.shape, gamma.shape)
    denom = p * x + (q - 1.0)  # q - 1 first: exact for q near 1, where it matters
    bad = np.broadcast_to(denom <= 0, np.broadcast_shapes(denom.shape, m.shape))
    if bad.any():
        raise ModelError(heavy_tail_message(bad, param_shape, p, q, x))
    xm = x * np.where(x > 0, m, 0.0)
    return _scalar_if_0d(p * (gamma + xm) / denom)


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------
def sample_spend_rate(
    rng: np.random.Generator | int | None,
    p: ArrayLike,
    q: ArrayLike,
    gamma: ArrayLike,
    frequency: ArrayLike,
    monetary_value: ArrayLike,
) -> np.ndarray:
    """Draw each customer's spend rate from its exact posterior.

    ``nu | x, z-bar ~ Gamma(shape = p x + q, rate = gamma + x z-bar)`` (gamma-gamma
    conjugacy); for ``x = 0`` this is the prior ``Gamma(q, gamma)``.  ``p / nu`` is then a draw
    of the customer's mean transaction value, whose expectation is :func:`expected_spend`.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator (a seed is passed to :func:`numpy.random.default_rng`).
    p, q, gamma : array_like
        Positive parameters (e.g. posterior draws of shape ``(chain, draw, 1)``).
    frequency, monetary_value : array_like
        Customer data as in :func:`expected_spend`.

    Returns
    -------
    ndarray
        One draw of ``nu`` (1 / currency unit) per element of the broadcast shape of all inputs.
        For shapes ``p x + q`` below about 0.01 some draws underflow to 0.
    """
    rng = np.random.default_rng(rng)
    shape, rate = spend_rate_posterior(p, q, gamma, frequency, monetary_value)
    return rng.standard_gamma(shape) / rate


def spend_rate_posterior(
    p: ArrayLike,
    q: ArrayLike,
    gamma: ArrayLike,
    frequency: ArrayLike,
    monetary_value: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Shape and rate of each customer's spend-rate posterior (see :func:`sample_spend_rate`).

    Returns
    -------
    shape : ndarray
        ``p x + q`` (unit-free).
    rate : ndarray
        ``gamma + x z-bar`` (currency units); ``gamma`` for ``x = 0``.

    Both have the broadcast shape of all inputs.  A draw ``nu = G / rate`` with
    ``G ~ Gamma(shape, 1)``: customers sharing ``(x, parameters)`` can share ``G`` and differ
    only in the scale ``rate``.
    """
    p, q, gamma = _check_parameters(p=p, q=q, gamma=gamma)
    x, m = _check_data(frequency, monetary_value)
    xm = x * np.where(x > 0, m, 0.0)
    shape, rate = np.broadcast_arrays(p * x + q, gamma + xm)
    return shape, rate


def simulate_transaction_values(
    rng: np.random.Generator | int | None,
    p: ArrayLike,
    nu: ArrayLike,
    counts: ArrayLike,
) -> np.ndarray:
    """Simulate individual transaction values ``z ~ Gamma(shape=p, rate=nu)``.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    p : array_like
        Positive shape, a scalar or one value per customer.
    nu : array_like, shape (n,)
        Positive spend rate of each customer (1 / currency unit).
    counts : array_like of int, shape (n,)
        Number of transactions to draw for each customer (>= 0).

    Returns
    -------
    ndarray, shape (sum(counts),)
        Transaction values (currency units), customers in order: the first ``counts[0]``
        values belong to customer 0, and so on.
    """
    rng = np.random.default_rng(rng)
    (p,) = _check_parameters(p=p)
    nu = _as_float("nu", nu).ravel()
    if not np.all(np.isfinite(nu) & (nu > 0)):
        raise ValueError("nu (spend rate) must be positive and finite for every customer.")
    counts = _as_counts(counts, "counts")
    if counts.size != nu.size:
        raise ValueError(
            f"counts has {counts.size} entries but nu has {nu.size}; one per customer."
        )
    p = np.broadcast_to(p, nu.shape)
    return rng.standard_gamma(np.repeat(p, counts)) / np.repeat(nu, counts)


def simulate(
    rng: np.random.Generator | int | None,
    p: ArrayLike,
    q: ArrayLike,
    gamma: ArrayLike,
    frequency: ArrayLike,
) -> dict[str, np.ndarray]:
    """Simulate spend data from the Gamma-Gamma model.

    Draws ``nu_i ~ Gamma(q, gamma)`` for each customer, then ``frequency[i]`` transaction values
    ``Gamma(p, nu_i)`` (via :func:`simulate_transaction_values`) and averages them.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    p, q, gamma : array_like
        Positive parameters: scalars, or one value per customer.
    frequency : array_like of int, shape (n,)
        Number of repeat transactions of each customer (>= 0).

    Returns
    -------
    dict
        ``"nu"``: spend rate of each customer (1 / currency unit), shape ``(n,)``;
        ``"frequency"``: the frequencies as int64; ``"monetary_value"``: the mean of each
        customer's simulated values (currency units), 0 where ``frequency == 0``.
    """
    rng = np.random.default_rng(rng)
    p, q, gamma = _check_parameters(p=p, q=q, gamma=gamma)
    x = _as_counts(frequency, "frequency")
    q, gamma = (np.broadcast_to(a, x.shape) for a in (q, gamma))
    nu = rng.standard_gamma(q) / gamma
    values = simulate_transaction_values(rng, np.broadcast_to(p, x.shape), nu, x)
    totals = np.bincount(np.repeat(np.arange(x.size), x), weights=values, minlength=x.size)
    monetary_value = np.divide(totals, x, out=np.zeros(x.size), where=x > 0)
    return {"nu": nu, "frequency": x, "monetary_value": monetary_value}
