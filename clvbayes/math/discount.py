"""Discounting: the period schedule and discounted sums of expected purchases.

Conventions (used everywhere in clvbayes):

* The horizon ``H`` and the discount ``period`` are in the data's time unit (days or
  weeks, see ``rfm.attrs["time_unit"]``).  The horizon is cut into ``K = ceil(H / period)``
  periods ``((k-1) period, k period]``, the last one ending at ``H``.
* A purchase in period ``k`` is discounted by ``(1 + d) ** -k`` where ``d`` is the
  discount rate per period (end-of-period discounting).
* An annual rate converts exactly with :func:`clvbayes.units.annual_to_period_rate`
  (365.25-day year, 7-day week).  Nothing else is assumed: to discount by calendar months
  on weekly data, pass ``period = 365.25 / 12 / 7`` weeks explicitly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def schedule(horizon: float, discount_rate: float = 0.0, period: float = 1.0):
    """Period end times ``t_k`` and discount factors ``(1 + d) ** -k``, k = 1..K.

    Parameters
    ----------
    horizon : float
        Length of the future window, in the data's time unit (> 0).
    discount_rate : float
        Discount rate per period (>= 0 typical; must be finite and > -1, and a negative one
        must not make a factor overflow).  Huge rates give factors that underflow to 0.
    period : float
        Length of one discount period in the data's time unit (> 0).  A horizon shorter
        than one period is one partial period ending at the horizon.
    """
    if not (np.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a positive number of time units, got {horizon!r}.")
    if not (np.isfinite(period) and period > 0):
        raise ValueError(f"discount period must be positive, got {period!r}.")
    if not (np.isfinite(discount_rate) and discount_rate > -1):
        raise ValueError(
            f"discount rate per period must be a finite number > -1, got {discount_rate!r}."
        )
    # at least one period: a horizon shorter than one period (or within rounding of a whole
    # number of periods) is a single, partial period ending at the horizon
    n = max(1, int(np.ceil(horizon / period - 1e-12)))
    ends = np.minimum(np.arange(1, n + 1) * period, horizon)
    ends[-1] = horizon
    # (1 + d)^-k in log space: underflows quietly to 0 for huge rates
    with np.errstate(over="ignore"):
        factors = np.exp(-np.log1p(discount_rate) * np.arange(1, n + 1, dtype=float))
    if not np.all(np.isfinite(factors)):
        raise ValueError(
            f"discount rate per period {discount_rate!r} over {n} periods gives infinite "
            f"discount factors ((1 + d)^-k overflows at k = {int(np.argmin(np.isfinite(factors))) + 1}): "
            "a negative rate makes later purchases worth more than earlier ones. Use a rate >= 0."
        )
    return ends, factors


def discounted_increments(
    cumulative: Callable[[np.ndarray], np.ndarray],
    scale: np.ndarray,
    ends: np.ndarray,
    factors: np.ndarray,
    tol: float = 1e-12,
    with_total: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``sum_k factors[k] * (F(ends[k]) - F(ends[k-1]))`` with ``F(0) = 0``, cheaply and exactly.

    ``F`` is an expected cumulative number of purchases.  For the purchase models here
    ``F`` is analytic in ``t`` except on ``(-inf, -scale]`` (``scale`` = alpha + T), so in
    ``v = log1p(t / c)`` with ``c = min(scale)`` every element's ``F`` is analytic in the
    strip ``|Im v| < pi`` (the cut maps to ``Im v = pi``).  Chebyshev interpolation in
    ``v`` on ``[0, log1p(H / c)]`` therefore converges geometrically, at a rate that
    degrades only logarithmically with the horizon, with the SAME nodes for every
    element.  ``F`` is evaluated exactly at the horizon and at ``n`` nodes, ``n`` chosen
    so the interpolation error bound is below ``tol`` (relative); the sum is rearranged
    (summation by parts) so interpolated values enter only with the small weights
    ``factors[k] - factors[k+1]``.  With no more periods than nodes, ``F`` is evaluated
    exactly at every period end instead.

    Parameters
    ----------
    cumulative : callable
        ``cumulative(t)`` returns F at times ``t`` (1-D, shape ``(m,)``) for every element,
        as an array of shape ``(..., m)``.
    scale : ndarray
        Positive time scale of each element (alpha + T); only its minimum is used.
    ends, factors : ndarray
        From :func:`schedule`.
    with_total : bool
        Also return ``F(ends[-1])`` (undiscounted total at the horizon), which is
        evaluated anyway.
    """
    k = ends.size
    c = float(np.min(scale))
    v_max = np.log1p(ends[-1] / c)
    b = np.pi / max(v_max / 2.0, 1e-300)
    rho = b + np.sqrt(b * b + 1.0)
    n = int(np.clip(np.ceil(-np.log(tol) / np.log(rho)) + 2, 4, 64))
    if k <= n:
        values = cumulative(ends)
        discounted = np.diff(values, axis=-1, prepend=0.0) @ factors
        return (discounted, values[..., -1]) if with_total else discounted
    # Chebyshev points of the second kind on [0, v_max]: node 0 is t = 0 (F = 0), node n-1 is t = H.
    j = np.arange(n)
    x = (1.0 - np.cos(np.pi * j / (n - 1))) / 2.0
    t_nodes = c * np.expm1(v_max * x)
    t_nodes[-1] = ends[-1]
    bary = np.where(j % 2 == 0, 1.0, -1.0)
    bary[[0, -1]] *= 0.5
    # summation by parts: sum_k f_k (F_k - F_{k-1}) = f_K F_K + sum_{k<K} (f_k - f_{k+1}) F_k,
    # with F_k (k < K) interpolated: weights[j] = sum_k (f_k - f_{k+1}) L_j(x_k)
    x_ends = np.log1p(ends[:-1] / c) / v_max
    diff = x_ends[:, None] - x[None, :]
    exact = np.abs(diff) < 1e-15
    terms = bary / np.where(exact, 1.0, diff)
    basis = terms / terms.sum(axis=1, keepdims=True)
    rows = exact.any(axis=1)
    basis[rows] = exact[rows].astype(float)
    weights = (factors[:-1] - factors[1:]) @ basis
    weights[-1] += factors[-1]
    values = cumulative(t_nodes[1:])
    discounted = values @ weights[1:]
    return (discounted, values[..., -1]) if with_total else discounted
