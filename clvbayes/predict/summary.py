"""Turn posterior or predictive draws into tidy tables (one place for interval conventions).

clvbayes reports two kinds of interval and names them everywhere:

* ``ci`` -- **credible interval of the expectation**: the spread of an expected value
  (E[purchases], P(alive), E[spend], E[CLV]) that comes from not knowing the model
  parameters.  Computed from posterior draws of the expectation.
* ``pi`` -- **predictive interval of the outcome**: the range of what the customer will
  actually do (purchases made, money spent, realised discounted value), which adds the
  customer's own randomness to the parameter uncertainty.  Computed from simulated
  outcomes, one or more per posterior draw.

Intervals are equal-tailed with probability ``prob`` (default 0.9): the
``(1 - prob) / 2`` and ``(1 + prob) / 2`` quantiles.  Credible intervals interpolate
linearly between draws; predictive intervals use the inverted empirical CDF, so
intervals of counts are whole numbers and contain *at least* ``prob`` of the
predictive mass (exactly ``prob`` is impossible for a discrete outcome).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_PROB = 0.9
SAMPLE_DIMS = ("chain", "draw")


def tail_probs(prob: float) -> tuple[float, float]:
    """Lower and upper quantile levels of an equal-tailed interval of probability ``prob``."""
    if not 0 < prob < 1:
        raise ValueError(f"interval probability must be in (0, 1), got {prob!r}.")
    return (1.0 - prob) / 2.0, (1.0 + prob) / 2.0


def draw_stats(
    values: np.ndarray, prob: float = DEFAULT_PROB, axis: int = 0, kind: str = "ci"
) -> dict[str, np.ndarray]:
    """Mean, sd and equal-tailed interval of draws along ``axis``.

    Parameters
    ----------
    values : ndarray
        Draws; ``axis`` indexes the draws.
    prob : float
        Interval probability.
    kind : {"ci", "pi"}
        ``"ci"`` interpolates quantiles linearly (continuous expectations); ``"pi"`` uses
        the inverted CDF (outcomes, possibly discrete).
    """
    lo, hi = tail_probs(prob)
    method = "linear" if kind == "ci" else "inverted_cdf"
    q = np.quantile(values, [lo, hi], axis=axis, method=method)
    n = values.shape[axis]
    return {
        "mean": np.mean(values, axis=axis),
        "sd": np.std(values, axis=axis, ddof=1) if n > 1 else np.zeros(q.shape[1:]),
        "lower": q[0],
        "upper": q[1],
    }


def summarize_draws(draws, prob: float = DEFAULT_PROB, kind: str = "ci") -> pd.DataFrame:
    """Reduce draws to a tidy table with columns ``mean, sd, lower, upper``.

    Parameters
    ----------
    draws : xarray.DataArray or ndarray
        A DataArray with ``chain`` and ``draw`` dimensions (e.g. the output of
        ``BetaGeoModel.p_alive()``) and at most one other dimension, which becomes the
        table's index; or an array of shape (n_draws,) or (n_draws, n).
    prob : float
        Probability of the equal-tailed interval (default 0.9).
    kind : {"ci", "pi"}
        Credible interval of an expectation, or predictive interval of an outcome
        (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per element of the non-sample dimension.
    """
    if hasattr(draws, "dims"):
        other = [d for d in draws.dims if d not in SAMPLE_DIMS]
        if len(other) > 1:
            raise ValueError(
                f"summarize_draws takes at most one non-sample dimension, got {other}."
            )
        stacked = draws.stack(__sample__=[d for d in SAMPLE_DIMS if d in draws.dims])
        values = stacked.transpose("__sample__", *other).values
        index = pd.Index(draws[other[0]].values, name=other[0]) if other else pd.RangeIndex(1)
    else:
        values = np.asarray(draws, dtype=float)
        index = pd.RangeIndex(values.shape[1] if values.ndim > 1 else 1)
    values = values.reshape(values.shape[0], -1)
    stats = draw_stats(values, prob=prob, axis=0, kind=kind)
    return pd.DataFrame(stats, index=index)
