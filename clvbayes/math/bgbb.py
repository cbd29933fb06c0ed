"""BG/BB purchase model for discrete purchase opportunities (plain array math).

Model
-----
Fader, Hardie & Shang (2010), "Customer-Base Analysis in a Discrete-Time Noncontractual
Setting", *Marketing Science* 29(6), 1086-1108 (FHS below; equation numbers are the paper's).
Time is a grid of purchase opportunities (an annual appeal, a weekly draw).  Opportunity 0 is
the customer's first transaction; for customer ``i`` at the opportunities ``t = 1, 2, ...``:

* a customer alive at ``t - 1`` is still alive at ``t`` with probability ``1 - theta_i``
  (dropout happens at the start of an opportunity, for good);
* a customer alive at ``t`` transacts there with probability ``p_i`` (at most once);
* across customers ``p ~ Beta(alpha, beta)`` and ``theta ~ Beta(gamma, delta)``, independent.

All four parameters are positive and unit-free; every horizon is a count of opportunities.

Data columns (one row per customer)
-----------------------------------
``frequency``
    ``x``, repeat transactions at opportunities ``1 .. n`` (``0 <= x <= n``).
``recency``
    ``t_x``, the opportunity of the last of them (0 if ``x = 0``; ``x <= t_x <= n``).
``periods``
    ``n``, the opportunities observed after the first transaction.

Equations
---------
Write ``B`` for the beta function and ``m = n - t_x``.

* Likelihood (FHS eq. 5)::

      L = B(alpha + x, beta + n - x) / B(alpha, beta) * B(gamma, delta + n) / B(gamma, delta)
          + sum_{i=0}^{m-1} B(alpha + x, beta + t_x - x + i) / B(alpha, beta)
                            * B(gamma + 1, delta + t_x + i) / B(gamma, delta).

  The first term (``A``) is "alive at ``n``"; term ``i`` of the sum (``D_i``) is "alive at
  ``t_x + i``, dead from ``t_x + i + 1``".  Both factors of ``D_i`` decrease in ``i``, so
  ``max(A, D_0)`` is a safe log-sum-exp reference.
* Latent posterior.  Given the history, the customer is alive at ``n`` with probability
  ``A / L``, and then ``p ~ Beta(alpha + x, beta + n - x)``, ``theta ~ Beta(gamma, delta + n)``
  independently; or dead from ``t_x + i + 1`` with probability ``D_i / L``, and then
  ``p ~ Beta(alpha + x, beta + t_x - x + i)``, ``theta ~ Beta(gamma + 1, delta + t_x + i)``.
* ``P(alive at n + s) = A / L * B(gamma, delta + n + s) / B(gamma, delta + n)``; ``s = 1`` is
  FHS eq. (11).
* Expected transactions in ``n + 1 .. n + n*`` (FHS eq. 13)::

      E[X*] = A / L * (alpha + x) / (alpha + beta + n) * S(delta + n, n*),
      S(d, k) = sum_{t=1}^{k} B(gamma, d + t) / B(gamma, d)
              = Gamma(d + 1) Gamma(gamma + d) / Gamma(d) ... (closed form below)
              = (d / (gamma - 1)) * [1 - exp(lnG(d + k + 1) - lnG(d + 1)
                                            - lnG(gamma + d + k) + lnG(gamma + d))] ...

  evaluated with a Taylor expansion around the removable singularity ``gamma = 1``.
* New customers (``x = t_x = n = 0``): E[X(n)] (FHS eq. 8) and P(X(n) = x) (FHS eq. 7).
* DERT (FHS eq. 14), discount rate ``d`` per opportunity, ``q = 1 / (1 + d)``::

      DERT = A / L * (alpha + x) / (alpha + beta + n) * sum_{t>=1} q^t B(gamma, delta+n+t)/B(gamma, delta+n)

  (the sum is ``q B(gamma, delta+n+1)/B(gamma, delta+n) 2F1(1, delta+n+1; gamma+delta+n+1; q)``;
  summed term by term until the terms fall below 1e-17 of the sum).

All functions broadcast: parameters may be posterior-draw arrays such as ``(chain, draw, 1)``
against customer arrays of shape ``(n,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from clvbayes.math._checks import MAX_SHOWN as _MAX_SHOWN
from clvbayes.math._checks import as_counts as _as_counts
from clvbayes.math._checks import as_float as _as_float
from clvbayes.math._checks import check_parameters
from clvbayes.math._checks import positions as _positions
from clvbayes.math._checks import scalar_if_0d as _scalar_if_0d
from clvbayes.math._xp import NUMPY, betaln

__all__ = [
    "LoglikSumData",
    "dert",
    "expected_purchases",
    "expected_purchases_new",
    "loglik",
    "loglik_sum_and_grad",
    "p_alive",
    "p_alive_at",
    "prepare_loglik_sum",
    "prob_purchases",
    "prob_purchases_new",
    "sample_latent",
    "simulate",
    "simulate_purchases",
]

_NAMES = ("alpha", "beta", "gamma", "delta")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_parameters(alpha, beta, gamma, delta) -> list[np.ndarray]:
    return check_parameters("BG/BB", alpha=alpha, beta=beta, gamma=gamma, delta=delta)


def _check_history(frequency: ArrayLike, recency: ArrayLike, periods: ArrayLike):
    """Validate (frequency, recency, periods): whole numbers with 0 <= x <= t_x <= n, x = 0 iff t_x = 0."""
    x = _as_float("frequency", frequency)
    t_x = _as_float("recency", recency)
    n = _as_float("periods", periods)
    for name, arr in (("frequency", x), ("recency", t_x), ("periods", n)):
        bad = ~(np.isfinite(arr) & (arr >= 0) & (arr == np.floor(arr)))
        if bad.any():
            raise ValueError(
                f"{name} must be a non-negative whole number of opportunities; {int(bad.sum())} "
                f"entries are not, at positions {_positions(bad)} "
                f"(values {arr.ravel()[bad.ravel()][:_MAX_SHOWN].tolist()})."
            )
    try:
        x, t_x, n = np.broadcast_arrays(x, t_x, n)
    except ValueError as exc:
        raise ValueError(
            f"frequency (shape {np.shape(x)}), recency (shape {np.shape(t_x)}) and periods "
            f"(shape {np.shape(n)}) must have the same length, one entry per customer."
        ) from exc
    for bad, what in (
        (t_x > n, "recency must not exceed periods"),
        (x > t_x, "frequency must not exceed recency (x transactions need x opportunities)"),
        ((x == 0) != (t_x == 0), "recency must be 0 exactly when frequency is 0"),
    ):
        if bad.any():
            raise ValueError(
                f"{what}; {int(bad.sum())} customers violate it at positions {_positions(bad)} "
                f"(frequency {x[bad][:_MAX_SHOWN].tolist()}, recency "
                f"{t_x[bad][:_MAX_SHOWN].tolist()}, periods {n[bad][:_MAX_SHOWN].tolist()}).  "
                "recency is the opportunity of the last repeat transaction, counted from the "
                "first transaction's opportunity, and periods the opportunities observed since."
            )
    return x, t_x, n


def _check_count(value, name: str) -> np.ndarray:
    arr = _as_float(name, value)
    bad = ~(np.isfinite(arr) & (arr >= 0) & (arr == np.floor(arr)))
    if bad.any():
        raise ValueError(
            f"{name} (a number of opportunities) must be a non-negative whole number; got "
            f"{arr.ravel()[bad.ravel()][:_MAX_SHOWN].tolist()}."
        )
    return arr


# --------------------------------------------------------------------------------------------
# log-likelihood
# --------------------------------------------------------------------------------------------
def loglik(
    alpha, beta, gamma, delta, frequency, recency, periods, xp: SimpleNamespace = NUMPY,
    max_terms: int | None = None,
):  # fmt: skip
    """Per-customer BG/BB log-likelihood (FHS eq. 5), log-sum-exp over its ``n - t_x + 1`` terms.

    Parameters
    ----------
    alpha, beta, gamma, delta : array_like or tensor
        Positive parameters (scalars or draws of shape ``(chain, draw, 1)``).
    frequency, recency, periods : array_like or tensor, shape (m,)
        ``x``, ``t_x``, ``n`` in opportunities.
    xp : namespace
        :data:`clvbayes.math._xp.NUMPY` (inputs validated) or the PyTensor namespace.
    max_terms : int, optional
        ``max(n - t_x)`` over the rows; required with PyTensor (the sum is laid out as a
        ``(rows, max_terms)`` matrix with the unused entries masked).

    Returns
    -------
    array or tensor
        ``log P(history)`` (a probability: always <= 0), broadcast shape.
    """
    if xp is NUMPY:
        alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
        frequency, recency, periods = _check_history(frequency, recency, periods)
        max_terms = int(np.max(periods - recency, initial=0))
    elif max_terms is None:
        raise ValueError("loglik needs max_terms (the largest n - t_x) with PyTensor.")
    x, t_x, n = frequency, recency, periods
    common = -betaln(xp, alpha, beta) - betaln(xp, gamma, delta)
    log_a = betaln(xp, alpha + x, beta + n - x) + betaln(xp, gamma, delta + n) + common
    if max_terms <= 0:
        out = log_a
    else:
        i = np.arange(max_terms, dtype=float)
        ex = lambda v: v[..., None]  # noqa: E731
        log_d = (
            betaln(xp, ex(alpha + x), ex(beta + t_x - x) + i)
            + betaln(xp, ex(gamma + 1.0), ex(delta + t_x) + i)
            + ex(common)
        )
        used = i < ex(n - t_x)
        log_d0 = log_d[..., 0]
        ref = xp.maximum(log_a, log_d0)
        terms = xp.where(used, xp.exp(log_d - ex(ref)), 0.0 * log_d)
        out = ref + xp.log(xp.exp(log_a - ref) + xp.sum(terms, axis=-1))
    if xp is NUMPY:
        return _scalar_if_0d(out)
    return out


@dataclass(frozen=True)
class LoglikSumData:
    """Weighted histories flattened to one row per likelihood term (see :func:`prepare_loglik_sum`).

    ``x, t_x, n, w``: the histories (weight > 0); ``owner``: for each dead-branch term its
    history, ``i``: its index ``0 .. n - t_x - 1``.
    """

    x: np.ndarray
    t_x: np.ndarray
    n: np.ndarray
    w: np.ndarray
    owner: np.ndarray
    i: np.ndarray


def prepare_loglik_sum(frequency, recency, periods, weights) -> LoglikSumData:
    """Lay out weighted histories once for :func:`loglik_sum_and_grad` (weight-0 rows dropped)."""
    x, t_x, n = (np.ravel(v) for v in _check_history(frequency, recency, periods))
    w = _as_counts(weights, "weights").ravel().astype(float)
    if w.size != x.size:
        raise ValueError(f"weights must have one entry per history ({x.size}), got {w.size}.")
    keep = w > 0
    x, t_x, n, w = x[keep], t_x[keep], n[keep], w[keep]
    m = (n - t_x).astype(np.int64)
    owner = np.repeat(np.arange(x.size), m)
    i = (np.arange(owner.size) - np.repeat(np.cumsum(m) - m, m)).astype(float)
    return LoglikSumData(x=x, t_x=t_x, n=n, w=w, owner=owner, i=i)


def loglik_sum_and_grad(alpha, beta, gamma, delta, data: LoglikSumData) -> tuple[float, np.ndarray]:
    """Weighted total log-likelihood ``sum_i w_i log L_i`` (FHS eq. 5) and its exact gradient.

    Each ``log L`` is a log-sum-exp of terms ``log T_k``; its gradient is the average of the
    terms' gradients under the weights ``T_k / L``.  With ``psi`` the digamma function and
    ``dB(a, b)/da = psi(a) - psi(a + b)`` for ``log B``, every term's gradient is a sum of
    digamma differences.  Parameters are not validated (called by optimisers and samplers);
    values at 0 or infinity give non-finite results, not errors.

    Returns
    -------
    total : float
    gradient : ndarray, shape (4,)
        In ``(alpha, beta, gamma, delta)``.
    """
    with np.errstate(all="ignore"):
        return _loglik_sum_and_grad(*(np.float64(v) for v in (alpha, beta, gamma, delta)), data)


def _loglik_sum_and_grad(al, be, ga, de, data: LoglikSumData):
    psi = special.digamma
    lnb = special.betaln
    x, t_x, n, w = data.x, data.t_x, data.n, data.w
    common = -lnb(al, be) - lnb(ga, de)
    g_common = np.array(
        [psi(al + be) - psi(al), psi(al + be) - psi(be), psi(ga + de) - psi(ga),
         psi(ga + de) - psi(de)]
    )  # fmt: skip
    log_a = lnb(al + x, be + n - x) + lnb(ga, de + n) + common
    g_a = np.stack([
        psi(al + x) - psi(al + be + n), psi(be + n - x) - psi(al + be + n),
        psi(ga) - psi(ga + de + n), psi(de + n) - psi(ga + de + n),
    ])  # fmt: skip
    o, i = data.owner, data.i
    xo, to = x[o], t_x[o]
    b_i, e_i = be + to - xo + i, de + to + i
    log_d = lnb(al + xo, b_i) + lnb(ga + 1.0, e_i) + common
    g_d = np.stack([
        psi(al + xo) - psi(al + b_i + xo), psi(b_i) - psi(al + b_i + xo),
        psi(ga + 1.0) - psi(ga + 1.0 + e_i), psi(e_i) - psi(ga + 1.0 + e_i),
    ])  # fmt: skip
    ref = log_a.copy()
    np.maximum.at(ref, o, log_d)
    s_a = np.exp(log_a - ref)
    s_d = np.exp(log_d - ref[o])
    tot = s_a + np.bincount(o, weights=s_d, minlength=x.size)
    log_l = ref + np.log(tot)
    total = float(w @ log_l)
    wa = w * s_a / tot
    wd = (w / tot)[o] * s_d
    grad = g_a @ wa + g_d @ wd + g_common * w.sum()
    return total, grad


# --------------------------------------------------------------------------------------------
# latent posterior, P(alive), expectations
# --------------------------------------------------------------------------------------------
def _block(*arrays) -> int:
    """How many dead-branch terms to evaluate together: <= 256, and <= 4e6 values at once."""
    size = np.broadcast_shapes(*(np.shape(a) for a in arrays))
    return int(np.clip(4_000_000 // max(int(np.prod(size)), 1), 1, 256))


def _log_dead_terms(alpha, beta, gamma, delta, x, t_x, n, i0, block):
    """``log D_i``, ``i = i0 .. i0 + block - 1``, along a new last axis (-inf where ``i >= n - t_x``)."""
    i = np.arange(i0, i0 + block, dtype=float)
    e = lambda v: np.asarray(v, dtype=float)[..., None]  # noqa: E731
    log_d = (
        special.betaln(e(alpha + x), e(beta + t_x - x) + i)
        + special.betaln(e(gamma + 1.0), e(delta + t_x) + i)
        - e(special.betaln(alpha, beta) + special.betaln(gamma, delta))
    )
    return np.where(i < e(n - t_x), log_d, -np.inf)


def _log_terms(alpha, beta, gamma, delta, x, t_x, n):
    """``log A`` and ``log L`` per history (NumPy, broadcast; the sum in blocks of terms)."""
    common = -special.betaln(alpha, beta) - special.betaln(gamma, delta)
    log_a = special.betaln(alpha + x, beta + n - x) + special.betaln(gamma, delta + n) + common
    log_l = np.array(log_a, dtype=float, copy=True)
    max_m = int(np.max(n - t_x, initial=0))
    blk = min(_block(alpha, beta, gamma, delta, x, t_x, n), max(max_m, 1))
    for i0 in range(0, max_m, blk):
        block = _log_dead_terms(alpha, beta, gamma, delta, x, t_x, n, i0, blk)
        log_l = np.logaddexp(log_l, special.logsumexp(block, axis=-1))
    return log_a, log_l


def _prob_alive_now(alpha, beta, gamma, delta, x, t_x, n):
    log_a, log_l = _log_terms(alpha, beta, gamma, delta, x, t_x, n)
    return np.exp(np.minimum(log_a - log_l, 0.0))


def _survival(gamma, d, s):
    """``E[(1 - theta)^s]`` for ``theta ~ Beta(gamma, d)``: ``B(gamma, d + s) / B(gamma, d)``."""
    return np.exp(special.betaln(gamma, d + s) - special.betaln(gamma, d))


def _sum_survival(gamma, d, k):
    """``S(d, k) = sum_{t=1}^{k} B(gamma, d + t) / B(gamma, d)`` in closed form.

    ``Gamma(d + t) / Gamma(gamma + d + t) = [g(t) - g(t + 1)] / (gamma - 1)`` with
    ``g(t) = Gamma(d + t) / Gamma(gamma + d + t - 1)``, so the sum telescopes to
    ``S = d (1 - exp(u)) / (gamma - 1)``, ``u = log g(k + 1) - log g(1)
    = h(d + 1) - h(gamma + d)``, ``h(c) = log Gamma(c + k) - log Gamma(c)``.  For
    ``|gamma - 1| < 1e-3`` ``u / (gamma - 1)`` comes from the Taylor series of ``h`` to third
    order (digamma and polygamma differences; error below 1e-12 relative), which removes the
    0/0 at ``gamma = 1``.
    """
    gamma, d, k = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (gamma, d, k)))
    e = gamma - 1.0
    small = np.abs(e) < 1e-3
    c = d + 1.0
    h1 = special.polygamma(0, c + k) - special.polygamma(0, c)
    h2 = special.polygamma(1, c + k) - special.polygamma(1, c)
    h3 = special.polygamma(2, c + k) - special.polygamma(2, c)
    v_taylor = -(h1 + e / 2.0 * h2 + e**2 / 6.0 * h3)  # u / e
    u_direct = (special.gammaln(d + k + 1.0) - special.gammaln(c)) - (
        special.gammaln(gamma + d + k) - special.gammaln(gamma + d)
    )
    u = np.where(small, e * v_taylor, u_direct)
    safe_e = np.where(small, 1.0, e)
    ratio = np.where(small, -special.exprel(u) * v_taylor, -np.expm1(u) / safe_e)
    return np.where(k > 0, d * ratio, 0.0)


def p_alive(alpha, beta, gamma, delta, frequency, recency, periods) -> np.ndarray | float:
    """P(alive at the next opportunity ``n + 1`` | history): FHS eq. (11).

    ``B(alpha + x, beta + n - x) / B(alpha, beta) * B(gamma, delta + n + 1) / B(gamma, delta) / L``,
    the published quantity (lifetimes' ``conditional_probability_alive``).  For
    ``P(alive at n)`` (no further dropout chance) use :func:`p_alive_at` with ``s = 0``.

    Returns
    -------
    float or ndarray
        Probability in ``[0, 1]``, broadcast shape.
    """
    return p_alive_at(alpha, beta, gamma, delta, frequency, recency, periods, 1)


def p_alive_at(alpha, beta, gamma, delta, frequency, recency, periods, s) -> np.ndarray | float:
    """P(alive at opportunity ``n + s`` | history), ``s >= 0`` opportunities ahead.

    ``P(alive at n) * B(gamma, delta + n + s) / B(gamma, delta + n)``.
    """
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    x, t_x, n = _check_history(frequency, recency, periods)
    s = _check_count(s, "s")
    alive = _prob_alive_now(alpha, beta, gamma, delta, x, t_x, n)
    return _scalar_if_0d(alive * _survival(gamma, delta + n, s))


def expected_purchases(
    alpha, beta, gamma, delta, frequency, recency, periods, n_star
) -> np.ndarray | float:
    """E[transactions at opportunities ``n + 1 .. n + n*`` | history]: FHS eq. (13).

    Parameters
    ----------
    n_star : array_like
        Horizon in opportunities (whole number >= 0).

    Returns
    -------
    float or ndarray
        Expected number of transactions (>= 0, at most ``n*``).
    """
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    x, t_x, n = _check_history(frequency, recency, periods)
    n_star = _check_count(n_star, "n_star")
    alive = _prob_alive_now(alpha, beta, gamma, delta, x, t_x, n)
    mean_p = (alpha + x) / (alpha + beta + n)
    return _scalar_if_0d(alive * mean_p * _sum_survival(gamma, delta + n, n_star))


def expected_purchases_new(alpha, beta, gamma, delta, n) -> np.ndarray | float:
    """E[X(n)], repeat transactions in the first ``n`` opportunities of a new customer (FHS eq. 8)."""
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    n = _check_count(n, "n")
    return _scalar_if_0d(alpha / (alpha + beta) * _sum_survival(gamma, delta, n))


def prob_purchases(
    alpha, beta, gamma, delta, frequency, recency, periods, n_star, k
) -> np.ndarray | float:
    """P(X* = k | history): transactions at opportunities ``n + 1 .. n + n*``.

    Given alive at ``n`` (probability ``A / L``) the customer survives ``l`` more opportunities
    (``l = 0 .. n*``; ``P(l) = B(gamma + 1, delta + n + l) / B(gamma, delta + n)`` for ``l < n*``,
    ``B(gamma, delta + n + n*) / B(gamma, delta + n)`` for ``l = n*``) and transacts at each
    with probability ``p ~ Beta(alpha + x, beta + n - x)``: a beta-binomial count.  A dead
    customer has ``X* = 0``.  The sum over ``l`` costs ``n*`` passes.

    Parameters
    ----------
    n_star : int
        Horizon in opportunities (scalar).
    k : array_like
        Counts (broadcast against the other arguments, e.g. shape ``(K, 1)``).
    """
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    x, t_x, n = _check_history(frequency, recency, periods)
    n_star = int(_check_count(n_star, "n_star"))
    k = _check_count(k, "k")
    alive = _prob_alive_now(alpha, beta, gamma, delta, x, t_x, n)
    a_p, b_p = alpha + x, beta + n - x
    d = delta + n
    out = np.zeros(np.broadcast_shapes(np.shape(alive), np.shape(k)))
    for l_ in range(n_star + 1):
        if l_ < n_star:
            w_l = np.exp(special.betaln(gamma + 1.0, d + l_) - special.betaln(gamma, d))
        else:
            w_l = _survival(gamma, d, n_star)
        with np.errstate(invalid="ignore"):
            log_bb = (
                special.gammaln(l_ + 1.0) - special.gammaln(k + 1.0)
                - special.gammaln(np.maximum(l_ - k, 0.0) + 1.0)
                + special.betaln(k + a_p, np.maximum(l_ - k, 0.0) + b_p) - special.betaln(a_p, b_p)
            )  # fmt: skip
        out = out + w_l * np.where(k <= l_, np.exp(log_bb), 0.0)
    out = alive * out + (1.0 - alive) * (k == 0)
    return _scalar_if_0d(out)


def prob_purchases_new(alpha, beta, gamma, delta, n, k) -> np.ndarray | float:
    """P(X(n) = k) for a new customer (FHS eq. 7): :func:`prob_purchases` of the history (0, 0, 0)."""
    return prob_purchases(alpha, beta, gamma, delta, 0, 0, 0, n, k)


def dert(
    alpha, beta, gamma, delta, frequency, recency, periods, discount_rate
) -> np.ndarray | float:
    """Discounted expected residual transactions (FHS eq. 14).

    ``sum_{t>=1} E[transaction at n + t | history] / (1 + d)^t``, ``d`` the discount rate per
    opportunity (e.g. 0.1 for 10 % a year with annual opportunities).  Multiply by the
    expected value per transaction for the residual value.

    Parameters
    ----------
    discount_rate : float
        ``d > 0`` per opportunity (scalar; with ``d = 0`` the sum diverges for ``gamma <= 1``).
    """
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    x, t_x, n = _check_history(frequency, recency, periods)
    d_rate = float(discount_rate)
    if not (np.isfinite(d_rate) and d_rate > 0):
        raise ValueError(
            f"discount_rate (per opportunity) must be positive and finite, got {discount_rate!r}."
        )
    q = 1.0 / (1.0 + d_rate)
    alive = _prob_alive_now(alpha, beta, gamma, delta, x, t_x, n)
    mean_p = (alpha + x) / (alpha + beta + n)
    b = delta + n
    # term_t = q^t B(gamma, b + t) / B(gamma, b); ratio term_{t+1}/term_t = q (b + t)/(gamma + b + t)
    term = q * b / (gamma + b) * np.ones(np.broadcast_shapes(np.shape(gamma), np.shape(b)))
    total = term.copy()
    t = 1
    while True:
        term = term * q * (b + t) / (gamma + b + t)
        total += term
        t += 1
        if np.all(term <= 1e-17 * total) or t > 10_000_000:
            break
    return _scalar_if_0d(alive * mean_p * total)


# --------------------------------------------------------------------------------------------
# exact posterior draws and simulation
# --------------------------------------------------------------------------------------------
def _branch_cdf(alpha, beta, gamma, delta, x, t_x, n, max_m):
    """Cumulative branch probabilities, last axis: [alive, dead from t_x + 1, ..., t_x + max_m]."""
    log_a, log_l = _log_terms(alpha, beta, gamma, delta, x, t_x, n)
    parts = [np.exp(np.minimum(log_a - log_l, 0.0))[..., None]]
    blk = min(_block(alpha, beta, gamma, delta, x, t_x, n), max(max_m, 1))
    for i0 in range(0, max_m, blk):
        log_d = _log_dead_terms(alpha, beta, gamma, delta, x, t_x, n, i0, blk)
        parts.append(np.exp(log_d - log_l[..., None]))
    return np.cumsum(np.concatenate(parts, axis=-1)[..., : max_m + 1], axis=-1)


def sample_latent(
    rng, alpha, beta, gamma, delta, frequency, recency, periods, inverse=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(alive at n, p, theta)`` from each customer's exact latent posterior.

    The posterior is the mixture of beta terms in the module docstring: pick the branch
    ("alive at n" or "dead from t_x + i + 1") with probability ``A / L`` or ``D_i / L``, then
    draw ``p`` and ``theta`` from that branch's independent betas.

    Parameters
    ----------
    alpha, beta, gamma, delta : array_like
        Parameters, e.g. draws of shape ``(S, 1)``.
    frequency, recency, periods : array_like, shape (U,)
        Histories.
    inverse : array_like of int, shape (N,), optional
        When given, the histories are distinct rows and one draw is made for each of ``N``
        customers, customer ``j`` having history ``inverse[j]`` (the branch probabilities
        are computed once per distinct history).

    Returns
    -------
    alive : ndarray of bool
    p, theta : ndarray
        Transaction and dropout probabilities; broadcast shape of the inputs (with
        ``inverse``: the parameters' shape with the last axis of length ``N``).
    """
    rng = np.random.default_rng(rng)
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    x, t_x, n = _check_history(frequency, recency, periods)
    m = n - t_x
    max_m = int(np.max(m, initial=0))
    if inverse is None:
        alpha, beta, gamma, delta, x, t_x, n, m = np.broadcast_arrays(
            alpha, beta, gamma, delta, x, t_x, n, m
        )
        cdf = _branch_cdf(alpha, beta, gamma, delta, x, t_x, n, max_m)
        u = rng.random(x.shape)
        branch = np.sum(u[..., None] >= cdf, axis=-1) - 1
    else:
        inverse = np.asarray(inverse, dtype=np.int64).ravel()
        cdf = _branch_cdf(alpha, beta, gamma, delta, x, t_x, n, max_m)  # (..., U, max_m + 1)
        shape = (*cdf.shape[:-2], inverse.size)
        branch = np.empty(shape, dtype=np.int64)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(x.size + 1))
        for h in range(x.size):
            idx = order[bounds[h] : bounds[h + 1]]
            if idx.size:
                u = rng.random((*shape[:-1], idx.size))
                branch[..., idx] = np.sum(u[..., None] >= cdf[..., h, None, :], axis=-1) - 1
        x, t_x, n, m = x[inverse], t_x[inverse], n[inverse], m[inverse]
        alpha, beta, gamma, delta, x, t_x, n, m = np.broadcast_arrays(
            alpha, beta, gamma, delta, x, t_x, n, m
        )
    # rounding can leave u above the last cumulative probability: take the last branch
    branch = np.minimum(branch, m - 1)
    alive = branch < 0
    i = np.maximum(branch, 0)
    p = rng.beta(alpha + x, np.where(alive, beta + n - x, beta + t_x - x + i))
    theta = rng.beta(
        np.where(alive, gamma, gamma + 1.0), np.where(alive, delta + n, delta + t_x + i)
    )
    return alive, p, theta


def simulate_purchases(rng, alive, p, theta, n_star) -> np.ndarray:
    """Transactions at the next ``n_star`` opportunities of customers with latent state ``(alive, p, theta)``.

    A customer alive now survives ``K ~ Geometric`` further opportunities
    (``P(K >= l) = (1 - theta)^l``), and transacts at each of the first ``min(K, n*)`` with
    probability ``p``.
    """
    rng = np.random.default_rng(rng)
    alive, p, theta = np.broadcast_arrays(np.asarray(alive, bool), np.asarray(p, float),
                                          np.asarray(theta, float))  # fmt: skip
    n_star = int(_check_count(n_star, "n_star"))
    with np.errstate(divide="ignore"):
        lives = rng.geometric(np.clip(theta, 1e-300, 1.0)) - 1  # survived opportunities
    lives = np.where(alive, np.minimum(lives, n_star), 0)
    return rng.binomial(lives, p)


def simulate(rng, alpha, beta, gamma, delta, periods, n_holdout=0) -> dict[str, np.ndarray]:
    """Simulate customers of the BG/BB population, opportunity by opportunity.

    Each customer draws ``p ~ Beta(alpha, beta)``, ``theta ~ Beta(gamma, delta)``, transacts
    at opportunity 0 and then follows the process of the module docstring over
    ``periods`` calibration and ``n_holdout`` holdout opportunities.

    Returns
    -------
    dict of ndarray
        ``frequency``, ``recency``, ``periods``, ``frequency_holdout`` (int64), the true
        ``p``, ``theta`` and ``alive`` (bool, alive at the last calibration opportunity).
    """
    rng = np.random.default_rng(rng)
    alpha, beta, gamma, delta = _check_parameters(alpha, beta, gamma, delta)
    n = _check_count(periods, "periods").astype(np.int64)
    n_hold = int(_check_count(n_holdout, "n_holdout"))
    alpha, beta, gamma, delta, n = np.broadcast_arrays(alpha, beta, gamma, delta, n)
    p = rng.beta(alpha, beta)
    theta = rng.beta(gamma, delta)
    lives = rng.geometric(theta) - 1  # last opportunity alive, counted from 0
    x = np.zeros(n.shape, np.int64)
    t_x = np.zeros(n.shape, np.int64)
    hold = np.zeros(n.shape, np.int64)
    for t in range(1, int(np.max(n, initial=0)) + n_hold + 1):
        buy = (t <= lives) & (rng.random(n.shape) < p)
        cal = buy & (t <= n)
        x += cal
        t_x = np.where(cal, t, t_x)
        hold += buy & (t > n) & (t <= n + n_hold)
    return {
        "frequency": x, "recency": t_x, "periods": n, "frequency_holdout": hold,
        "p": p, "theta": theta, "alive": lives >= n,
    }  # fmt: skip
