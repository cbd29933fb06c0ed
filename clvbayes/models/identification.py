"""How much the data, rather than the prior, tell about each parameter.

For every parameter of a fitted model :func:`identification` compares the spread of the
posterior with the spread of the prior, both for the logarithm of the parameter (all
parameters are positive; a coefficient's multiplier ``exp(gamma)`` has ``log = gamma``):

* ``posterior_log_sd``: sd of ``log(theta)`` over the posterior draws (Laplace or NUTS); for
  a MAP/MLE point, the delta-method value ``sd / mean`` from the Hessian at the mode;
* ``prior_log_sd``: sd of ``log(theta)`` under the prior, by numerical integration of the
  prior density in log space (NaN for an improper prior such as HalfFlat);
* ``contraction = 1 - posterior variance / prior variance`` (Schad, Betancourt & Vasishth
  2021): near 1 the data speak, near 0 the prior does;
* ``interval_factor``: ``upper / lower`` of the 90% interval (``exp(2 x 1.645 x log sd)``
  for a point): how many-fold the data leave the parameter open.

A parameter is flagged ``weak`` when its 90% interval spans more than a factor
:data:`WEAK_FACTOR` and the prior still holds more than a quarter of the spread
(``contraction < 0.75``), or the fit ran it to the boundary.  BG/NBD's dropout parameters
``a`` and ``b`` on the apparel data are the textbook case: without a prior (MLE) the
likelihood is nearly flat along ``a / (a + b)`` fixed; CLVTools runs them into the
thousands.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from clvbayes.models.priors import Prior

__all__ = ["WEAK_FACTOR", "identification", "prior_log_sd"]

WEAK_FACTOR = 10.0
"""A parameter whose 90% interval spans more than this factor (and whose prior still matters)
is reported as weakly identified."""

_Z90 = 1.6448536269514722


@functools.cache
def _prior_log_sd(dist: str, items: tuple[tuple[str, float], ...]) -> float:
    prior = Prior(dist, **dict(items))
    if dist == "HalfFlat":
        return float("nan")
    u = np.linspace(-60.0, 60.0, 240_001)
    with np.errstate(all="ignore"):
        log_q = prior.logpdf(np.exp(u)) + u  # density of u = log(theta)
    log_q = np.where(np.isfinite(log_q), log_q, -np.inf)
    q = np.exp(log_q - log_q.max())
    q /= q.sum()
    mean = float(np.sum(q * u))
    return float(np.sqrt(np.sum(q * (u - mean) ** 2)))


def prior_log_sd(prior: Prior) -> float:
    """sd of ``log(theta)`` under ``prior`` (NaN for an improper prior)."""
    return _prior_log_sd(prior.dist, tuple(sorted(prior.params.items())))


def identification(model, prob: float = 0.9) -> pd.DataFrame:
    """Prior-vs-posterior spread of every parameter of a fitted model (module docstring).

    Parameters
    ----------
    model : CLVModel
        A fitted model (any method; a point fit uses the Hessian's delta-method sd).
    prob : float
        Interval probability for ``interval_factor``.

    Returns
    -------
    pandas.DataFrame
        One row per parameter: ``median``, ``posterior_log_sd``, ``prior_log_sd``,
        ``contraction``, ``interval_factor``, ``weak`` (bool).
    """
    model._check_fitted()
    draws = model.draws()
    point_sd = getattr(model, "fit_info_", {}).get("laplace_sd", {}) or {}
    prior_of = getattr(model, "_prior_of", lambda k: model.priors[k])
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = {}
    for k in model.param_names:
        v = np.asarray(draws[k], dtype=float).ravel()
        median = float(np.median(v))
        if v.size > 1:
            log_v = np.log(v)
            post_sd = float(np.std(log_v, ddof=1))
            factor = float(np.exp(np.quantile(log_v, hi) - np.quantile(log_v, lo)))
        else:
            sd = point_sd.get(k)
            post_sd = float(sd) / median if sd is not None and median > 0 else float("nan")
            factor = float(np.exp(2 * _Z90 * post_sd)) if np.isfinite(post_sd) else float("nan")
        try:
            prior_sd = prior_log_sd(prior_of(k))
        except KeyError:  # a hierarchical parameter: its prior is the segments' population
            prior_sd = float("nan")
        contraction = 1.0 - (post_sd / prior_sd) ** 2 if np.isfinite(prior_sd) else float("nan")
        boundary = median > 0 and abs(np.log10(median)) > 6
        weak = bool(
            boundary
            or (np.isfinite(factor) and factor > WEAK_FACTOR and not (contraction >= 0.75))
        )
        rows[k] = {
            "median": median, "posterior_log_sd": post_sd, "prior_log_sd": prior_sd,
            "contraction": contraction, "interval_factor": factor, "weak": weak,
        }  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index")
