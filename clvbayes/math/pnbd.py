"""Pareto/NBD purchase model: likelihood, predictions and simulation (plain array math).

Model
-----
Schmittlein, Morrison & Colombo (1987), "Counting Your Customers: Who Are They and What Will
They Do Next?", *Management Science* 33(1), 1-24 (SMC); the expressions follow Fader & Hardie
(2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions" (FH05, equation
numbers are the note's), Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for
Customer Base Analysis", *JMR* 42(4), 415-430 (FHL05) and Fader & Hardie (2006), "Deriving
the Conditional PMF of the Pareto/NBD Model" (FH06).  For customer ``i``, in continuous time
measured from the first purchase:

* while active, the customer buys as a Poisson process with rate ``lambda_i``;
* the customer stays active for an exponential time ``omega_i`` with rate ``mu_i``
  (dropout can happen at any time, not only at a purchase as in BG/NBD);
* across customers ``lambda ~ Gamma(shape=r, rate=alpha)`` and ``mu ~ Gamma(shape=s,
  rate=beta)``, independent.

``alpha`` and ``beta`` are rates in the data's time unit; ``r`` and ``s`` are unit-free.  Every
time (``recency``, ``T``, horizons ``t``) must be in the unit of the data.  The data columns
are BG/NBD's: ``frequency`` ``x``, ``recency`` ``t_x`` (0 if ``x = 0``) and ``T``.

Equations
---------
Given ``(lambda, mu)`` the history has likelihood (FH05 eq. 3)
``lambda^x [exp(-(lambda + mu) T) + int_{t_x}^T mu exp(-(lambda + mu) w) dw]``: alive at
``T``, or dropped out at ``w`` in ``(t_x, T]``.  Averaging over the Gamma mixing
distributions under the integral gives, with ``k = r + x``,::

    L = Gamma(r + x) alpha^r beta^s / Gamma(r) * [ (alpha + T)^-k (beta + T)^-s
                                                   + s * I ]                          (1)
    I = int_{t_x}^T (alpha + w)^-k (beta + w)^-(s + 1) dw

``I`` equals FH05's hypergeometric term ``A_0 / (r + s + x)`` (eq. 19-20 and their
``alpha >= beta`` / ``alpha < beta`` branches, 2F1(r+s+x, s+1 or r+x; r+s+x+1; z)); here it is
evaluated by quadrature (see Numerics), which needs no branch and is accurate where the
series of ``2F1`` converges slowly (``z`` close to 1).  Then

* ``P(alive at T | history) = (alpha + T)^-k (beta + T)^-s / [...]`` (FH05 eq. 21), and given
  alive ``lambda ~ Gamma(r + x, alpha + T)``, ``mu ~ Gamma(s, beta + T)`` independently: the
  future is a new customer's with updated parameters.
* ``P(alive at T + t) = P(alive) ((beta + T)/(beta + T + t))^s``.
* ``E[Y(t) | history] = P(alive) (r + x)(beta + T) / ((alpha + T)(s - 1))
  [1 - ((beta + T)/(beta + T + t))^(s - 1)]`` (FH05 eq. 22; the limit at ``s = 1`` is
  ``log`` and is taken smoothly).
* New customer: ``E[X(t)] = r beta / (alpha (s - 1)) [1 - (beta/(beta + t))^(s - 1)]``
  (FH05 eq. 17) and (FH06 eq. 8, written as an integral over the dropout time)::

      P(X(t) = n) = NB(n; r, alpha/(alpha + t)) (beta/(beta + t))^s
                    + s beta^s alpha^r Gamma(r + n)/(Gamma(r) n!)
                      int_0^t w^n (alpha + w)^-(r + n) (beta + w)^-(s + 1) dw.

  The conditional version (FH06 eq. 17) is ``(1 - P(alive)) [n = 0] + P(alive)`` times this
  with ``(r + x, alpha + T, s, beta + T)``.
* DERT with continuous discount rate ``delta`` (per time unit; FHL05 eq. 2)::

      DERT = P(alive) (r + x)/(alpha + T) E[1 / (delta + mu)],  mu ~ Gamma(s, beta + T)
           = alpha^r beta^s delta^(s-1) Gamma(r+x+1) U(s, s; delta (beta+T))
             / (Gamma(r) (alpha + T)^(r+x+1) L)

  with ``U`` Tricomi's confluent hypergeometric function; the expectation is computed as
  ``int_0^inf exp(-delta t) (1 + t/(beta + T))^-s dt`` by quadrature.

Numerics
--------
Each integral above is written in a log variable ``u`` in which the log-integrand ``phi(u)`` is
**concave** (a linear term minus terms ``c log(a + e^u)`` or ``z e^u``).  :func:`_concave_quad`
takes the mode (analytic for the likelihood, by bisection otherwise), the points where ``phi``
has dropped by 3 and by 40 below it on each side (Newton's method from the tangent bound for the
likelihood, bisection otherwise: a concave function crosses each level once), and applies
16-point Gauss-Legendre rules on those four panels.  The truncated mass is below ``e^-40`` of the
total, the panels follow both the sharp peaks of large ``x`` or ``s`` (width ``~1/x`` in ``u``)
and the flat stretches of tiny ``s``, and the likelihood's steps use only the operations of
:mod:`clvbayes.math._xp` (plus PyTensor's ``disconnected_grad`` around the panel ends), so the
same code builds the PyTensor graph for nutpie and numpyro.  Against mpmath (the ``2F1`` closed
form at 30-40 digits where mpmath's ``2F1`` is reliable, and scaled tanh-sinh quadrature of the
integral elsewhere; mpmath's ``2F1`` is wrong by 3e4 in log L at ``s = 2.6e5``), on points
spanning parameters 1e-6..1e6, ``x`` up to 1e4 and ``T`` up to 1e4, the log-likelihood agrees to
1e-11 absolute or 1e-12 relative (tests/test_math_pnbd.py).

The gradient of ``log L`` (:func:`loglik_sum_and_grad`) differentiates (1) under the integral
sign: ``d I / d theta = int (d log f / d theta) f dw`` with the same nodes, so it is exact up to
the quadrature error of these smooth integrands (no finite differences, no ``2F1``
derivatives in its parameters).

All functions broadcast: parameters may be draw arrays such as ``(chain, draw, 1)`` against
customer arrays ``(n,)``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from types import SimpleNamespace

import numba
import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from clvbayes.math._checks import as_counts as _as_counts

# BG/NBD and Pareto/NBD share the history columns and their rules: one set of checks.
from clvbayes.math._checks import check_history as _check_history
from clvbayes.math._checks import check_horizon as _check_horizon
from clvbayes.math._checks import check_parameters
from clvbayes.math._checks import scalar_if_0d as _scalar_if_0d
from clvbayes.math._xp import NUMPY

__all__ = [
    "LoglikSumData",
    "dert",
    "expected_purchases",
    "expected_purchases_alive",
    "expected_purchases_new",
    "loglik",
    "loglik_sum_and_grad",
    "p_alive",
    "p_alive_at",
    "prepare_loglik_sum",
    "prob_purchases",
    "prob_purchases_conditional",
    "sample_latent",
    "simulate",
    "simulate_purchase_times",
    "simulate_purchases",
]

_NODES = 16  # Gauss-Legendre nodes per panel
_LEVELS = (3.0, 40.0)  # panel ends: where phi has dropped this far below its maximum
_ITERS = 44  # bisection steps per panel end (relative precision 2^-44 of the bracket)
_NEWTON = 4  # Newton steps per panel end (likelihood)
_TINY = 1e-300


def _check_parameters(**params: ArrayLike) -> list[np.ndarray]:
    return check_parameters("Pareto/NBD", **params)


@functools.lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


# --------------------------------------------------------------------------------------------
# quadrature of log-concave integrands (shared by the likelihood and the predictions)
# --------------------------------------------------------------------------------------------
def _bisect(xp, inside, a, b, iters: int, keep_left: bool):
    """Boundary of ``{u : inside(u)}`` in ``[a, b]``: a bracket end, on the outside side.

    ``inside`` holds on one side of a single crossing: at ``a`` (``keep_left``; returns the
    bracket's right end) or at ``b`` (returns its left end).
    """
    for _ in range(iters):
        m = 0.5 * (a + b)
        c = inside(m)
        if keep_left:
            a, b = xp.where(c, m, a), xp.where(c, b, m)
        else:
            a, b = xp.where(c, a, m), xp.where(c, m, b)
    return b if keep_left else a


def _newton_end(xp, phi, dphi, floor, start, lo, hi, iters: int, right: bool):
    """Where concave ``phi`` crosses ``floor`` on the ``right`` (or left) side of its mode.

    Newton's method on a concave function moves monotonically towards the crossing from the
    outer side and never passes it, so each iterate is a conservative panel end; ``start``
    must lie on the outer side (or at the bracket end ``hi``/``lo``).
    """
    end = hi if right else lo
    u = start
    for _ in range(iters):
        g = phi(u) - floor
        d = dphi(u)
        ok = d < 0 if right else d > 0
        step = xp.where(ok, g / xp.where(ok, d, 1.0), 0.0)
        u = xp.minimum(xp.maximum(u - step, lo), hi)
    # if phi stays above the floor up to the bracket end, the panel ends there
    return xp.where(phi(end) >= floor, end, u)


def _concave_quad(xp, phi, lo, hi, mode, dphi=None, nodes: int | None = None, iters: int = _ITERS):
    """Panels for ``int_lo^hi exp(phi(u)) du`` with ``phi`` concave and maximal at ``mode``.

    Returns ``(phi_star, panels)``: ``phi(mode)`` and a list of ``(u, w)`` node arrays
    (shape ``(..., nodes)``) such that the integral is
    ``exp(phi_star) * sum over panels of sum(w * exp(phi(u) - phi_star))``.  Panel ends are
    where ``phi`` has dropped by each of :data:`_LEVELS` below ``phi_star``: by Newton's method
    when the derivative ``dphi`` is given (started at the tangent bound from the mode), else by
    bisection.  ``lo <= mode <= hi`` must be finite; panels of zero width contribute zero.
    """
    x, wts = _gauss_legendre(nodes or _NODES)
    phi_star = phi(mode)
    right, left = [mode], [mode]
    for level in _LEVELS:
        floor = phi_star - level
        if dphi is None:

            def inside(u, floor=floor):
                return phi(u) > floor

            right.append(_bisect(xp, inside, right[-1], hi, iters, keep_left=True))
            left.append(_bisect(xp, inside, lo, left[-1], iters, keep_left=False))
        else:
            # tangent bound: phi(u) <= phi_star + dphi(mode) (u - mode) past a sloped mode
            d0 = dphi(mode)
            down = d0 < -_TINY
            start_r = xp.where(down, mode + level / xp.where(down, -d0, 1.0), hi)
            up = d0 > _TINY
            start_l = xp.where(up, mode - level / xp.where(up, d0, 1.0), lo)
            start_r = xp.minimum(start_r, hi)
            start_l = xp.maximum(start_l, lo)
            right.append(_newton_end(xp, phi, dphi, floor, start_r, mode, hi, _NEWTON, True))
            left.append(_newton_end(xp, phi, dphi, floor, start_l, lo, mode, _NEWTON, False))
    edges = left[::-1] + right[1:]
    if getattr(xp, "name", "") == "pytensor":
        # Only the integral's own limits carry parameter dependence (Leibniz): express each
        # panel end as a fixed fraction of [lo, hi] so that autodiff skips the Newton steps.
        # The interior ends move the integral by less than exp(-40) of it.
        from pytensor.gradient import disconnected_grad

        width = hi - lo
        pos = width > 0
        safe = xp.where(pos, width, 1.0)
        edges = [lo + disconnected_grad(xp.where(pos, (e - lo) / safe, 0.0)) * width for e in edges]
        phi_star = disconnected_grad(phi_star)  # a shift that cancels in the integral
    panels = []
    for a, b in itertools.pairwise(edges):
        half = 0.5 * (b - a)
        u = (0.5 * (a + b))[..., None] + half[..., None] * x
        panels.append((u, half[..., None] * wts))
    return phi_star, panels


def _quad_sum(xp, phi, phi_star, panels):
    """``sum over panels of sum(w * exp(phi(u) - phi_star))`` (see :func:`_concave_quad`)."""
    total = 0.0
    for u, w in panels:
        total = total + xp.sum(w * xp.exp(phi(u) - phi_star[..., None]), axis=-1)
    return total


# --------------------------------------------------------------------------------------------
# log-likelihood
# --------------------------------------------------------------------------------------------
def _lik_integral_setup(xp, r, alpha, s, beta, x, t_x, T):
    """The dropout integral ``I`` of eq. (1) in ``u = log((m + w)/(m + t_x))``, ``m = min(alpha, beta)``.

    With ``c = m + t_x``, ``a1 = (alpha - m)/c`` and ``a2 = (beta - m)/c`` (one of them 0),
    ``alpha + w = c e^u (1 + a1 e^-u)`` and likewise for beta, so::

        log(f dw/du) = -(k + s)(log c + u) - k log1p(a1 e^-u) - (s + 1) log1p(a2 e^-u)

    is concave in ``u`` on ``[0, U]``, ``U = log((m + T)/c)``.  Its maximum is at 0 unless
    ``k < 1`` and ``beta > alpha``: then at ``log(a2 (1 - k)/(k + s))`` (clipped to ``[0, U]``).
    """
    k = r + x
    m = xp.minimum(alpha, beta)
    log_c = xp.log(m + t_x)
    c = m + t_x
    a1 = (alpha - m) / c
    a2 = (beta - m) / c
    U = xp.log(m + T) - log_c

    def phi(u):
        e = xp.exp(-u)
        return (
            -(k[..., None] + s[..., None]) * (log_c[..., None] + u)
            - k[..., None] * xp.log1p(a1[..., None] * e)
            - (s[..., None] + 1.0) * xp.log1p(a2[..., None] * e)
        )

    def phi0(u):  # phi at parameter-shaped u (no node axis)
        e = xp.exp(-u)
        return -(k + s) * (log_c + u) - k * xp.log1p(a1 * e) - (s + 1.0) * xp.log1p(a2 * e)

    def dphi0(u):
        e = xp.exp(-u)
        return -(k + s) + k * a1 * e / (1.0 + a1 * e) + (s + 1.0) * a2 * e / (1.0 + a2 * e)

    ratio = a2 * (1.0 - k) / (k + s)
    interior = ratio > 1.0
    mode = xp.where(interior, xp.log(xp.where(interior, ratio, 1.0)), 0.0 * U)
    mode = xp.minimum(mode, U)
    phi_star, panels = _concave_quad(xp, phi0, 0.0 * U, U, mode, dphi=dphi0)
    return phi, phi_star, panels, (log_c, a1, a2)


def _broadcast_lik_inputs(xp, r, alpha, s, beta, x, t_x, T):
    if xp is NUMPY:
        return np.broadcast_arrays(
            *(np.asarray(v, dtype=float) for v in (r, alpha, s, beta, x, t_x, T))
        )
    zero = 0.0 * (r + alpha + s + beta + x + t_x + T)
    return [v + zero for v in (r, alpha, s, beta, x, t_x, T)]


def loglik(r, alpha, s, beta, frequency, recency, T, xp: SimpleNamespace = NUMPY):
    """Per-customer Pareto/NBD log-likelihood (eq. 1; FH05 eq. 19-20).

    ``log L = log Gamma(r + x) - log Gamma(r) + r log alpha + s log beta
    + logaddexp(-(r + x) log(alpha + T) - s log(beta + T), log s + log I)`` with the dropout
    integral ``I`` by quadrature (module docstring).  Like BG/NBD's, this is the density of the
    purchase record with respect to the ``x`` purchase times, with every constant, so it
    changes by ``-x log(c)`` when time is rescaled by ``c``.

    Parameters
    ----------
    r, alpha, s, beta : array_like or tensor
        Positive parameters (``alpha``, ``beta`` in 1 / time unit), e.g. draws of shape
        ``(chain, draw, 1)``.
    frequency, recency, T : array_like or tensor
        Customer history ``x``, ``t_x``, ``T`` (data's time unit), shape ``(n,)``.
    xp : namespace, default :data:`clvbayes.math._xp.NUMPY`
        :func:`clvbayes.math._xp.pytensor_namespace` builds the same computation as a PyTensor
        graph (for nutpie and numpyro); with NumPy the inputs are validated first.

    Returns
    -------
    array or tensor
        Log-likelihood per history, broadcast shape.

    Raises
    ------
    ValueError
        NumPy only: non-positive parameters, negative frequency or times, ``recency > T``.
    """
    if xp is NUMPY:
        r, alpha, s, beta = _check_parameters(r=r, alpha=alpha, s=s, beta=beta)
        frequency, recency, T = _check_history(frequency, recency, T)
        with np.errstate(all="ignore"):
            return _scalar_if_0d(_loglik(xp, r, alpha, s, beta, frequency, recency, T)[0])
    return _loglik(xp, r, alpha, s, beta, frequency, recency, T)[0]


def _loglik(xp, r, alpha, s, beta, x, t_x, T):
    """``(log L, log of the alive term, log of the dropout term, quadrature pieces)``."""
    r, alpha, s, beta, x, t_x, T = _broadcast_lik_inputs(xp, r, alpha, s, beta, x, t_x, T)
    phi, phi_star, panels, aux = _lik_integral_setup(xp, r, alpha, s, beta, x, t_x, T)
    total = xp.maximum(_quad_sum(xp, phi, phi_star, panels), _TINY)
    log_dead = xp.log(s) + phi_star + xp.log(total)
    log_alive = -(r + x) * xp.log(alpha + T) - s * xp.log(beta + T)
    front = xp.gammaln(r + x) - xp.gammaln(r) + r * xp.log(alpha) + s * xp.log(beta)
    # log(e^a + e^b) from the larger term: PyTensor's logaddexp is log(exp(a) + exp(b)), whose
    # gradient is 0/0 when both terms underflow (log L of order -1e3 and below)
    hi_, lo_ = xp.maximum(log_alive, log_dead), xp.minimum(log_alive, log_dead)
    out = front + hi_ + xp.log1p(xp.exp(lo_ - hi_))
    return out, log_alive, log_dead, (phi, phi_star, panels, aux)


def p_alive(r, alpha, s, beta, frequency, recency, T) -> np.ndarray | float:
    """Probability that a customer is still active at ``T`` given the history (FH05 eq. 21).

    ``P(alive) = (alpha + T)^-(r+x) (beta + T)^-s / [(alpha + T)^-(r+x) (beta + T)^-s + s I]``,
    computed as ``expit(log_alive - log_dead)``.

    Parameters
    ----------
    r, alpha, s, beta : array_like
        Positive parameters, e.g. draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like
        Customer history (data's time unit), shape ``(n,)``.

    Returns
    -------
    float or ndarray
        Probability in ``(0, 1]``, broadcast shape.
    """
    r, alpha, s, beta = _check_parameters(r=r, alpha=alpha, s=s, beta=beta)
    x, t_x, T = _check_history(frequency, recency, T)
    with np.errstate(all="ignore"):
        _, log_alive, log_dead, _ = _loglik(NUMPY, r, alpha, s, beta, x, t_x, T)
        out = special.expit(log_alive - log_dead)
    return _scalar_if_0d(out)


# --------------------------------------------------------------------------------------------
# weighted total log-likelihood and its exact gradient (the hot path of NUTS and MAP)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LoglikSumData:
    """Distinct weighted histories for :func:`loglik_sum_and_grad` (plain arrays; pickles).

    Attributes
    ----------
    x, recency, T, weights : ndarray
        Histories with positive weight (times in the data's unit) and their weights.
    x_values, x_index : ndarray
        Distinct frequencies and, per history, the index of its frequency.
    """

    x: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    weights: np.ndarray
    x_values: np.ndarray
    x_index: np.ndarray


def prepare_loglik_sum(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike
) -> LoglikSumData:
    """Lay out weighted histories once for :func:`loglik_sum_and_grad`.

    Parameters
    ----------
    frequency, recency, T : array_like, shape (n,)
        Histories, e.g. the distinct rows of a compressed customer table.
    weights : array_like of int, shape (n,)
        Customers sharing each history (non-negative whole numbers; 0 drops the history).

    Raises
    ------
    ValueError
        On invalid histories or weights of another length.
    """
    x, t_x, T = (np.ravel(v) for v in _check_history(frequency, recency, T))
    if not x.size == t_x.size == T.size:
        raise ValueError("frequency, recency and T must have one entry per history.")
    w = _as_counts(weights, "weights").ravel().astype(float)
    if w.size != x.size:
        raise ValueError(f"weights must have one entry per history ({x.size}), got {w.size}.")
    keep = w > 0
    x_values, x_index = np.unique(x[keep], return_inverse=True)
    return LoglikSumData(x[keep], t_x[keep], T[keep], w[keep], x_values, x_index.ravel())


def loglik_sum_and_grad(r, alpha, s, beta, data: LoglikSumData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood ``sum_i w_i log L_i`` and its exact gradient.

    The value equals ``sum(weights * loglik(r, alpha, s, beta, x, t_x, T))``.  With
    ``p_i`` the dropout share ``s I / [(alpha+T)^-k (beta+T)^-s + s I]`` of history ``i`` and
    ``E_q[.]`` the quadrature average over the dropout time ``w`` with weights
    ``f(w) / I``::

        d/dr     = psi(r + x) - psi(r) + log alpha - (1 - p) log(alpha + T) - p E_q[log(alpha + w)]
        d/dalpha = r / alpha - (1 - p) k / (alpha + T) - p k E_q[1 / (alpha + w)]
        d/ds     = log beta - (1 - p) log(beta + T) + p (1/s - E_q[log(beta + w)])
        d/dbeta  = s / beta - (1 - p) s / (beta + T) - p (s + 1) E_q[1 / (beta + w)]

    (``k = r + x``), summed with the weights, in one compiled pass (:func:`_loglik_sum_kernel`).

    Parameters
    ----------
    r, alpha, s, beta : float
        Positive parameters; not validated (called thousands of times by a sampler).
    data : LoglikSumData
        From :func:`prepare_loglik_sum`.

    Returns
    -------
    total : float
    gradient : ndarray, shape (4,)
        Partial derivatives in ``r``, ``alpha``, ``s``, ``beta``.
    """
    r, alpha, s, beta = (float(v) for v in (r, alpha, s, beta))
    with np.errstate(all="ignore"):
        lgr = special.gammaln(r + data.x_values) - special.gammaln(r)
        psi = special.digamma(r + data.x_values) - special.digamma(r)
    gl_x, gl_w = _gauss_legendre(_NODES)
    out = _loglik_sum_kernel(
        r, alpha, s, beta, data.x, data.recency, data.T, data.weights, lgr[data.x_index],
        psi[data.x_index], gl_x, gl_w,
    )  # fmt: skip
    return float(out[0]), out[1:].copy()


@numba.njit(cache=True, nogil=True)
def _phi_and_slope(u, k, s, log_c, a1, a2):  # pragma: no cover - compiled
    """``phi(u)`` of :func:`_lik_integral_setup` and its derivative, for one history."""
    e = np.exp(-u)
    phi = -(k + s) * (log_c + u) - k * np.log1p(a1 * e) - (s + 1.0) * np.log1p(a2 * e)
    d = -(k + s) + k * a1 * e / (1.0 + a1 * e) + (s + 1.0) * a2 * e / (1.0 + a2 * e)
    return phi, d


@numba.njit(cache=True, nogil=True)
def _newton_end_1(floor, start, lo, hi, right, k, s, log_c, a1, a2):  # pragma: no cover
    """Scalar :func:`_newton_end` (same iterations, same conservative end)."""
    u = start
    for _ in range(_NEWTON):
        g, d = _phi_and_slope(u, k, s, log_c, a1, a2)
        g -= floor
        ok = d < 0.0 if right else d > 0.0
        step = g / d if ok else 0.0
        u = min(max(u - step, lo), hi)
    end = hi if right else lo
    if _phi_and_slope(end, k, s, log_c, a1, a2)[0] >= floor:
        return end
    return u


@numba.njit(cache=True, nogil=True)
def _loglik_sum_kernel(r, alpha, s, beta, x, t_x, T, w, lgr, psi, gl_x, gl_w):  # pragma: no cover
    """:func:`loglik_sum_and_grad` in one compiled pass: the panels of :func:`_concave_quad`
    (Newton ends at the levels :data:`_LEVELS` from the tangent bound at the mode, 16-point
    Gauss-Legendre per panel) and the moments of the dropout time under the integrand."""
    out = np.zeros(5)
    m = min(alpha, beta)
    log_alpha, log_beta = np.log(alpha), np.log(beta)
    edges = np.empty(5)
    for i in range(x.size):
        if w[i] == 0.0:
            continue
        k = r + x[i]
        c = m + t_x[i]
        log_c = np.log(c)
        a1 = (alpha - m) / c
        a2 = (beta - m) / c
        U = np.log(m + T[i]) - log_c
        ratio = a2 * (1.0 - k) / (k + s)
        mode = np.log(ratio) if ratio > 1.0 else 0.0
        mode = min(mode, U)
        phi_star, d0 = _phi_and_slope(mode, k, s, log_c, a1, a2)
        edges[2] = mode
        for j in range(2):
            level = _LEVELS[j]
            floor = phi_star - level
            start_r = min(mode + level / -d0 if d0 < -_TINY else U, U)
            start_l = max(mode - level / d0 if d0 > _TINY else 0.0, 0.0)
            edges[3 + j] = _newton_end_1(floor, start_r, mode, U, True, k, s, log_c, a1, a2)
            edges[1 - j] = _newton_end_1(floor, start_l, 0.0, mode, False, k, s, log_c, a1, a2)
        total = e_log_a = e_log_b = e_inv_a = e_inv_b = 0.0
        for pnl in range(4):
            lo, hi = edges[pnl], edges[pnl + 1]
            half = 0.5 * (hi - lo)
            mid = 0.5 * (hi + lo)
            for n in range(gl_x.size):
                u = mid + half * gl_x[n]
                e = np.exp(-u)
                base = log_c + u  # log(m + w)
                # alpha + w = (m + w)(1 + a1 e^-u), likewise beta; one of a1, a2 is 0
                g1, g2 = 1.0 + a1 * e, 1.0 + a2 * e
                log_aw = base + np.log1p(a1 * e) if a1 > 0.0 else base
                log_bw = base + np.log1p(a2 * e) if a2 > 0.0 else base
                q = half * gl_w[n] * np.exp(base - k * log_aw - (s + 1.0) * log_bw - phi_star)
                total += q
                e_log_a += q * log_aw
                e_log_b += q * log_bw
                inv_mw = e / c  # 1 / (m + w)
                e_inv_a += q * inv_mw / g1
                e_inv_b += q * inv_mw / g2
        total = max(total, _TINY)
        e_log_a /= total
        e_log_b /= total
        e_inv_a /= total
        e_inv_b /= total
        log_dead = np.log(s) + phi_star + np.log(total)
        log_aT, log_bT = np.log(alpha + T[i]), np.log(beta + T[i])
        log_alive = -k * log_aT - s * log_bT
        hi_ = max(log_alive, log_dead)
        lse = hi_ + np.log(np.exp(log_alive - hi_) + np.exp(log_dead - hi_))
        p = 1.0 / (1.0 + np.exp(log_alive - log_dead))  # dropout share
        wi = w[i]
        out[0] += wi * (lgr[i] + r * log_alpha + s * log_beta + lse)
        out[1] += wi * (psi[i] + log_alpha - (1.0 - p) * log_aT - p * e_log_a)
        out[2] += wi * (r / alpha - (1.0 - p) * k / (alpha + T[i]) - p * k * e_inv_a)
        out[3] += wi * (log_beta - (1.0 - p) * log_bT + p * (1.0 / s - e_log_b))
        out[4] += wi * (s / beta - (1.0 - p) * s / (beta + T[i]) - p * (s + 1.0) * e_inv_b)
    return out


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------
def _power_sum(s, b, t):
    """``b / (s - 1) [1 - (b / (b + t))^(s - 1)]`` = ``int_0^t (1 + v/b)^-s dv``, smooth at s = 1."""
    L = np.log1p(t / b)
    return b * L * special.exprel(-(s - 1.0) * L)


def p_alive_at(r, alpha, s, beta, frequency, recency, T, t) -> np.ndarray | float:
    """P(still active at ``T + t`` | history) = ``P(alive) ((beta + T)/(beta + T + t))^s``.

    ``t`` (>= 0) is in the data's time unit; shapes broadcast as in :func:`p_alive`.
    """
    t = _check_horizon(t)
    pa = p_alive(r, alpha, s, beta, frequency, recency, T)
    s_ = np.asarray(s, dtype=float)
    b = np.asarray(beta, dtype=float) + np.asarray(T, dtype=float)
    return _scalar_if_0d(pa * np.exp(-s_ * np.log1p(t / b)))


def expected_purchases_alive(r, alpha, s, beta, frequency, T, t) -> np.ndarray | float:
    """E[purchases in ``(T, T + t]`` | alive at ``T``] = ``(r+x)/(alpha+T) * int_0^t (1+v/(beta+T))^-s dv``.

    The factor of :func:`expected_purchases` that depends on the history only through
    ``(x, T)``; ``t`` in the data's time unit.
    """
    r, alpha, s, beta = _check_parameters(r=r, alpha=alpha, s=s, beta=beta)
    x, _, T = _check_history(frequency, np.zeros_like(np.asarray(T, dtype=float)), T)
    t = _check_horizon(t)
    return _scalar_if_0d((r + x) / (alpha + T) * _power_sum(s, beta + T, t))


def expected_purchases(r, alpha, s, beta, frequency, recency, T, t) -> np.ndarray | float:
    """Conditional expected purchases in ``(T, T + t]`` given the history (FH05 eq. 22).

    ``P(alive) (r + x)(beta + T) / ((alpha + T)(s - 1)) [1 - ((beta + T)/(beta + T + t))^(s-1)]``,
    evaluated without cancellation at ``s = 1`` (:func:`scipy.special.exprel`).

    Parameters
    ----------
    r, alpha, s, beta : array_like
        Positive parameters, e.g. draws of shape ``(chain, draw, 1)``.
    frequency, recency, T : array_like
        Customer history (data's time unit), shape ``(n,)``.
    t : array_like
        Horizon (>= 0, data's time unit).

    Returns
    -------
    float or ndarray
        Expected number of purchases, broadcast shape.
    """
    pa = p_alive(r, alpha, s, beta, frequency, recency, T)
    return _scalar_if_0d(pa * expected_purchases_alive(r, alpha, s, beta, frequency, T, t))


def expected_purchases_new(r, alpha, s, beta, t) -> np.ndarray | float:
    """E[X(t)] of a new customer: ``r beta / (alpha (s - 1)) [1 - (beta/(beta + t))^(s-1)]`` (FH05 eq. 17).

    ``t`` (>= 0, data's time unit) broadcasts against the parameters.
    """
    r, alpha, s, beta = _check_parameters(r=r, alpha=alpha, s=s, beta=beta)
    t = _check_horizon(t)
    return _scalar_if_0d(r / alpha * _power_sum(s, beta, t))


def _log_count_integral(r, alpha, s, beta, t, n):
    """``log int_0^t w^n (alpha + w)^-(r+n) (beta + w)^-(s+1) dw`` for ``t > 0`` (by quadrature).

    In ``u = log w`` the log-integrand ``(n+1) u - (r+n) log(alpha+e^u) - (s+1) log(beta+e^u)`` is
    concave.  Its slope exceeds ``(n+1)/2`` below ``u_h`` (where ``e^u ((r+n)/alpha + (s+1)/beta)
    = (n+1)/2``), so it is 50 below its maximum ``100/(n+1)`` to the left of ``min(u_h, log t)``.
    """
    r, alpha, s, beta, t, n = np.broadcast_arrays(r, alpha, s, beta, t, n)
    la, lb = np.log(alpha), np.log(beta)

    def phi(u):
        return (n + 1.0) * u - (r + n) * np.logaddexp(la, u) - (s + 1.0) * np.logaddexp(lb, u)

    def slope(u):
        return (n + 1.0) - (r + n) * special.expit(u - la) - (s + 1.0) * special.expit(u - lb)

    hi = np.log(t)
    u_h = np.log(0.5 * (n + 1.0)) - np.log((r + n) / alpha + (s + 1.0) / beta)
    lo = np.minimum(u_h, hi) - 100.0 / (n + 1.0)
    mode = _bisect(NUMPY, lambda u: slope(u) > 0, lo, hi, 60, keep_left=True)
    mode = np.where(slope(hi) > 0, hi, mode)

    def phi_nodes(u):
        return (
            (n[..., None] + 1.0) * u
            - (r + n)[..., None] * np.logaddexp(la[..., None], u)
            - (s + 1.0)[..., None] * np.logaddexp(lb[..., None], u)
        )

    phi_star, panels = _concave_quad(NUMPY, phi, lo, hi, mode)
    return phi_star + np.log(_quad_sum(NUMPY, phi_nodes, phi_star, panels))


def prob_purchases(r, alpha, s, beta, t, n) -> np.ndarray | float:
    """Probability ``P(X(t) = n)`` that a new customer makes ``n`` repeat purchases in ``(0, t]``.

    FH06 eq. (8) written over the dropout time (module docstring): "alive at ``t`` with ``n``
    purchases" plus "dropped out at ``w <= t`` after ``n`` purchases".

    Parameters
    ----------
    r, alpha, s, beta : array_like
        Positive parameters, e.g. draws of shape ``(chain, draw, 1)``.
    t : array_like
        Length of the period (>= 0, data's time unit).
    n : array_like of int
        Number of purchases (>= 0), e.g. shape ``(m,)``.

    Returns
    -------
    float or ndarray
        Probabilities (sum to 1 over ``n``), broadcast shape.
    """
    r, alpha, s, beta = _check_parameters(r=r, alpha=alpha, s=s, beta=beta)
    t = _check_horizon(t)
    n = _as_counts(n, "n").astype(float)
    return _scalar_if_0d(_prob_purchases(r, alpha, s, beta, t, n))


def _prob_purchases(r, alpha, s, beta, t, n):
    r, alpha, s, beta, t, n = np.broadcast_arrays(r, alpha, s, beta, t, n)
    pos = t > 0
    tt = np.where(pos, t, 1.0)
    with np.errstate(all="ignore"):
        log_nb = (
            special.gammaln(r + n) - special.gammaln(r) - special.gammaln(n + 1.0)
            - r * np.log1p(tt / alpha) - n * np.log1p(alpha / tt)
        )  # fmt: skip
        log_alive = log_nb - s * np.log1p(tt / beta)
        log_dead = (
            np.log(s) + s * np.log(beta) + r * np.log(alpha)
            + special.gammaln(r + n) - special.gammaln(r) - special.gammaln(n + 1.0)
            + _log_count_integral(r, alpha, s, beta, tt, n)
        )  # fmt: skip
        out = np.exp(np.logaddexp(log_alive, log_dead))
    return np.where(pos, np.minimum(out, 1.0), (n == 0).astype(float))


def prob_purchases_conditional(
    r, alpha, s, beta, frequency, recency, T, t, n
) -> np.ndarray | float:
    """P(``n`` purchases in ``(T, T + t]`` | history) (FH06 eq. 17).

    ``(1 - P(alive)) [n = 0] + P(alive) P_new(X(t) = n; r + x, alpha + T, s, beta + T)``: given
    alive at ``T`` the customer is a new customer with updated parameters.

    Parameters
    ----------
    r, alpha, s, beta : array_like
        Positive parameters.
    frequency, recency, T : array_like
        Customer history (data's time unit).
    t : array_like
        Horizon (>= 0, data's time unit).
    n : array_like of int
        Number of future purchases (>= 0).
    """
    pa = np.asarray(p_alive(r, alpha, s, beta, frequency, recency, T))
    t = _check_horizon(t)
    n = _as_counts(n, "n").astype(float)
    x = np.asarray(frequency, dtype=float)
    T = np.asarray(T, dtype=float)
    new = _prob_purchases(
        np.asarray(r, dtype=float) + x, np.asarray(alpha, dtype=float) + T,
        np.asarray(s, dtype=float), np.asarray(beta, dtype=float) + T, t, n,
    )  # fmt: skip
    return _scalar_if_0d((1.0 - pa) * (n == 0) + pa * new)


def _log_discount_integral(s, z):
    """``log int_0^inf exp(-z v) (1 + v)^-s dv`` (``= log(e^z z^(s-1) Gamma(1-s, z))``, z > 0).

    In ``u = log(1 + v)`` the log-integrand ``(1 - s) u - z (e^u - 1)`` is concave with its
    maximum at ``max(0, log((1 - s)/z))``; the right end is found by doubling.
    """
    s, z = np.broadcast_arrays(s, z)

    def phi(u):
        return (1.0 - s) * u - z * np.expm1(u)

    def phi_nodes(u):
        return (1.0 - s)[..., None] * u - z[..., None] * np.expm1(u)

    ratio = (1.0 - s) / z
    mode = np.where(ratio > 1.0, np.log(np.where(ratio > 1.0, ratio, 1.0)), 0.0)
    floor = phi(mode) - 50.0
    step = np.ones_like(mode)
    for _ in range(80):
        short = phi(mode + step) > floor
        if not short.any():
            break
        step = np.where(short, 2.0 * step, step)
    phi_star, panels = _concave_quad(NUMPY, phi, np.zeros_like(mode), mode + step, mode)
    return phi_star + np.log(_quad_sum(NUMPY, phi_nodes, phi_star, panels))


def dert(r, alpha, s, beta, frequency, recency, T, delta) -> np.ndarray | float:
    """Discounted expected residual transactions with continuous discounting (FHL05 eq. 2).

    ``DERT = int_0^inf exp(-delta t) dE[Y(t) | history] = P(alive) (r + x)/(alpha + T)
    E[1/(delta + mu)]`` with ``mu ~ Gamma(s, beta + T)``; equal to FHL05's
    ``alpha^r beta^s delta^(s-1) Gamma(r+x+1) U(s, s; delta(beta+T)) / (Gamma(r) (alpha+T)^(r+x+1) L)``.
    Multiply by the expected value per transaction for discounted residual value.

    Parameters
    ----------
    r, alpha, s, beta : array_like
        Positive parameters.
    frequency, recency, T : array_like
        Customer history (data's time unit).
    delta : array_like
        Continuous discount rate per time unit (> 0), e.g. ``log(1.15) / 52`` per week for
        15% a year.

    Returns
    -------
    float or ndarray
        Discounted number of future purchases, broadcast shape.
    """
    (delta,) = check_parameters("Pareto/NBD DERT", delta=delta)
    pa = p_alive(r, alpha, s, beta, frequency, recency, T)
    x = np.asarray(frequency, dtype=float)
    b = np.asarray(beta, dtype=float) + np.asarray(T, dtype=float)
    a = np.asarray(alpha, dtype=float) + np.asarray(T, dtype=float)
    with np.errstate(all="ignore"):
        log_e = np.log(b) + _log_discount_integral(np.asarray(s, dtype=float), delta * b)
        out = pa * (np.asarray(r, dtype=float) + x) / a * np.exp(log_e)
    return _scalar_if_0d(out)


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------
def sample_latent(rng, r, alpha, s, beta, frequency, recency, T):
    """Draw ``(alive, lambda, mu)`` at ``T`` from their exact posterior given the history.

    ``alive ~ Bernoulli(P(alive))``; for alive customers ``lambda ~ Gamma(r + x, alpha + T)``
    and ``mu ~ Gamma(s, beta + T)`` independently (the future of a dead customer does not
    depend on ``lambda, mu``: their draws are returned but carry no meaning there).

    Returns
    -------
    alive : ndarray of bool
    lam, mu : ndarray
        Rates per time unit, broadcast shape of the inputs.
    """
    rng = np.random.default_rng(rng)
    pa = np.asarray(p_alive(r, alpha, s, beta, frequency, recency, T))
    x = np.asarray(frequency, dtype=float)
    T = np.asarray(T, dtype=float)
    shape = pa.shape
    alive = rng.random(shape) < pa
    lam = rng.gamma(
        np.broadcast_to(np.asarray(r) + x, shape),
        1.0 / np.broadcast_to(np.asarray(alpha) + T, shape),
    )
    mu = rng.gamma(
        np.broadcast_to(np.asarray(s, dtype=float), shape),
        1.0 / np.broadcast_to(np.asarray(beta) + T, shape),
    )
    return alive, lam, mu


def simulate_purchases(rng, alive, lam, mu, t) -> np.ndarray:
    """Purchases in the next ``t`` time units of customers with latent state ``(alive, lam, mu)``.

    An alive customer stays for ``omega ~ Exponential(mu)`` more and buys
    ``Poisson(lam min(omega, t))`` times; a dead one buys nothing.
    """
    rng = np.random.default_rng(rng)
    alive, lam, mu = np.broadcast_arrays(alive, lam, mu)
    t = _check_horizon(t)
    omega = rng.exponential(1.0, alive.shape) / mu
    return rng.poisson(np.where(alive, lam * np.minimum(omega, t), 0.0))


def simulate_purchase_times(
    rng: np.random.Generator | int | None, alive, lam, mu, t, sort: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Purchase counts and times in ``(0, t]`` of customers with latent state ``(alive, lam, mu)``.

    The process of :func:`simulate_purchases`: an alive customer stays for ``omega ~
    Exponential(mu)`` more and buys ``Poisson(lam min(omega, t))`` times; given the count the
    purchase times are independent and uniform on ``(0, min(omega, t)]`` (a Poisson process
    stopped at ``omega``).  A dead customer buys nothing.  Same arguments and returns as
    :func:`clvbayes.math.bgnbd.simulate_purchase_times`, with the dropout rate ``mu`` (per time
    unit) in place of BG/NBD's dropout probability per purchase.

    Parameters
    ----------
    rng : numpy.random.Generator or seed
        Random generator.
    alive : array_like of bool
        Whether each customer is active at the start of the window.
    lam, mu : array_like
        Purchase and dropout rates (>= 0, per time unit).
    t : array_like
        Window length (>= 0, data's time unit).
    sort : bool
        Sort the times within each customer (skip it when only sums are needed).

    Returns
    -------
    counts : ndarray of int64
        Purchases per customer, broadcast shape of the inputs.
    times : ndarray, shape (counts.sum(),)
        Purchase times in ``(0, t]`` (data's time unit, from the start of the window),
        customers in C order of ``counts``, ascending within each customer when ``sort``.
    """
    rng = np.random.default_rng(rng)
    t = _check_horizon(t)
    alive, lam, mu, t = np.broadcast_arrays(np.asarray(alive, dtype=bool), lam, mu, t)
    with np.errstate(divide="ignore"):
        omega = rng.exponential(1.0, alive.shape) / mu
    window = np.where(alive, np.minimum(omega, t), 0.0)
    counts = rng.poisson(lam * window)
    flat = counts.ravel()
    owner = np.repeat(np.arange(flat.size), flat)
    times = (1.0 - rng.random(owner.size)) * window.ravel()[owner]  # uniform on (0, window]
    if sort:
        times = times[np.lexsort((times, owner))]
    return counts, times


def simulate(rng, r, alpha, s, beta, T, t_holdout=0.0) -> dict[str, np.ndarray]:
    """Simulate calibration (and holdout) histories from the generative Pareto/NBD model.

    Each customer gets ``lambda ~ Gamma(r, rate=alpha)``, ``mu ~ Gamma(s, rate=beta)`` and a
    lifetime ``omega ~ Exponential(mu)``, makes a first purchase at time 0 and buys as a
    Poisson process of rate ``lambda`` until ``omega``.  The calibration period is ``(0, T]``
    and the holdout period ``(T, T + t_holdout]``.

    Parameters
    ----------
    rng : numpy Generator, int or None
    r, alpha, s, beta : array_like
        Positive parameters: scalars, or arrays broadcastable against ``T`` (e.g. draws of
        shape ``(S, 1)`` against ``T`` of shape ``(n,)``: one population per draw).
    T : array_like
        Observation length of each customer (data's time unit), shape ``(n,)``.
    t_holdout : array_like, default 0
        Holdout length (>= 0, data's time unit).

    Returns
    -------
    dict
        Arrays of the broadcast shape: ``frequency``, ``recency``, ``T`` (the history
        columns), ``frequency_holdout`` (purchases in the holdout period), and the latent
        ``lam``, ``mu``, ``omega`` (dropout time from the first purchase) and ``alive``
        (``omega > T``).  Counts are floats.
    """
    rng = np.random.default_rng(rng)
    r, alpha, s, beta = _check_parameters(r=r, alpha=alpha, s=s, beta=beta)
    T = _check_horizon(T, "T")
    t_holdout = _check_horizon(t_holdout, "t_holdout")
    r, alpha, s, beta, T, t_holdout = np.broadcast_arrays(r, alpha, s, beta, T, t_holdout)
    lam = rng.gamma(r, 1.0 / alpha)
    mu = rng.gamma(s, 1.0 / beta)
    omega = rng.exponential(1.0, T.shape) / mu
    active = np.minimum(omega, T)
    x = rng.poisson(lam * active)
    # the last of x uniform purchase times on (0, active]
    t_x = np.where(x > 0, active * rng.random(T.shape) ** (1.0 / np.maximum(x, 1)), 0.0)
    x_holdout = rng.poisson(lam * np.clip(np.minimum(omega, T + t_holdout) - T, 0.0, None))
    return {
        "frequency": x.astype(float), "recency": t_x, "T": T.astype(float),
        "frequency_holdout": x_holdout.astype(float),
        "lam": lam, "mu": mu, "omega": omega, "alive": omega > T,
    }  # fmt: skip
