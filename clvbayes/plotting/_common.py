"""Helpers shared by the plotting modules: axes, thinned draws, interval bands, histories."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clvbayes import units
from clvbayes.data import CompressedRFM, compress, validate_rfm
from clvbayes.predict import joint_draws, tail_probs
from clvbayes.units import TIME_UNITS

#: Default number of posterior draws used by a plot (evenly spaced; all if fewer).
N_DRAWS = 200
#: Default number of simulated data sets behind a predictive band.
N_SIMS = 200

# Colours: observed data in black/grey, the model in one blue; ci darker than pi.
OBSERVED_COLOR = "0.15"
MODEL_COLOR = "C0"
CI_ALPHA = 0.45
PI_ALPHA = 0.18


def get_ax(ax=None):
    """The given Axes, or a new figure's Axes."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def check_fitted(model: Any) -> None:
    """Raise the model's own "call fit first" error when it is not fitted."""
    check = getattr(model, "_check_fitted", None)
    if check is not None:
        check()
    elif not hasattr(model, "posterior_"):
        raise TypeError(f"Expected a fitted clvbayes model, got {type(model).__name__}.")


def purchase_math(model: Any):
    """The math module of a fitted continuous-time purchase model (its ``_math``), for the plots.

    The model plots evaluate the model's own closed forms and simulation (for
    ``ParetoNBDModel``, :mod:`clvbayes.math.pnbd`).  Every purchase model's math module has the
    functions the plots call, with the parameters first, positionally in the order of
    ``model.param_names``, then the same history, horizon and latent-state arguments.

    Raises
    ------
    TypeError
        For a model that is not one of the purchase models registered in
        :mod:`clvbayes.models.protocols` (the message names them).
    """
    from clvbayes.models.protocols import purchase_model_candidates

    check_fitted(model)
    # every known purchase model, whether or not it yet has all the methods score_customers
    # needs: the plots use only its math module
    known = {k: cls for k, (cls, _) in purchase_model_candidates().items() if cls is not None}
    if not isinstance(model, tuple(known.values())):
        names = ", ".join(f"{cls.__name__} ({key})" for key, cls in known.items())
        raise TypeError(
            "This plot evaluates a purchase model's own formulas and needs a fitted "
            f"continuous-time purchase model: one of {names}; got {type(model).__name__}. "
            "For any model, plot the output of clvbayes.predict.score_customers instead "
            "(plot_clv_distribution, plot_segment_totals); for BG/BB (discrete "
            "opportunities), plot_history_grid."
        )
    return model._math


def purchase_draws(model: Any, n_draws: int | None = N_DRAWS) -> dict[str, np.ndarray]:
    """Evenly thinned posterior draws of a fitted purchase model, each of shape (S, 1).

    Keyed and ordered by ``model.param_names``, so ``math.f(*draws.values(), ...)`` with
    ``math = purchase_math(model)`` evaluates the model's own formula ``f``.  A MAP/MLE fit
    gives S = 1.

    Raises
    ------
    TypeError
        For a model that is not a registered purchase model (see :func:`purchase_math`).
    """
    purchase_math(model)
    draws = joint_draws(model, None, n_draws)[0]
    return {p: draws[p] for p in model.param_names}


def n_samples(draws: dict[str, np.ndarray]) -> int:
    """Number of posterior draws S in a dict of (S, 1) arrays."""
    return int(next(iter(draws.values())).shape[0])


def cycle(draws: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """``n`` rows of the draws, cycling through them (one parameter draw per simulated data set)."""
    idx = np.arange(n) % n_samples(draws)
    return {k: v[idx] for k, v in draws.items()}


def interval(values: np.ndarray, prob: float, axis: int = 0, discrete: bool = False):
    """Equal-tailed interval of ``values`` along ``axis``, as (lower, upper).

    Linear interpolation for expectations; the inverted empirical CDF for outcomes
    (``discrete=True``), as in :mod:`clvbayes.predict.summary`.
    """
    lo, hi = tail_probs(prob)
    method = "inverted_cdf" if discrete else "linear"
    q = np.quantile(values, [lo, hi], axis=axis, method=method)
    return q[0], q[1]


def band(ax, x, lower, upper, *, kind: str, prob: float, label: str | None = None, step=None):
    """Shade a credible (``kind="ci"``) or predictive (``kind="pi"``) band; return the collection."""
    alpha = CI_ALPHA if kind == "ci" else PI_ALPHA
    if label is None:
        what = "credible interval of the expectation" if kind == "ci" else "predictive interval"
        label = f"model, {prob:.0%} {what}"
    return ax.fill_between(
        x, lower, upper, color=MODEL_COLOR, alpha=alpha, linewidth=0, label=label, step=step
    )


def histories(
    model: Any, rfm: pd.DataFrame | None, columns=("frequency", "recency", "T")
) -> CompressedRFM:
    """Distinct customer histories: of ``rfm``, or the model's training data when ``rfm`` is None."""
    check_fitted(model)
    if rfm is None:
        data = getattr(model, "data_", None)
        if data is None or any(c not in data.columns for c in columns):
            raise ValueError(
                "This model carries no training data for this plot: pass the customer table."
            )
        return data
    return compress(validate_rfm(rfm), columns=columns)


def days_per_unit(time_unit: str | None) -> float:
    """Length of one time unit in days (weeks: 7), with an error naming the valid units."""
    if time_unit is None:
        raise ValueError(
            "Missing time unit: the customer table's attrs['time_unit'] (or time_unit=) must "
            f"be one of {list(TIME_UNITS)}."
        )
    return units.days_per_unit(time_unit)
