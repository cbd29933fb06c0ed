"""What a purchase model says about individual customers.

* :func:`plot_p_alive_matrix` and :func:`plot_expected_purchases_matrix`: heatmaps over
  (frequency, recency) for customers observed for ``T`` time units.  They show the model's
  central insight: a customer who bought often but long ago is probably gone, one who
  bought rarely but recently probably is not (FHL 2005, section 5; Fader, Hardie & Lee
  2005, "RFM and CLV: using iso-value curves").
* :func:`plot_customer_history`: one customer's purchases and their P(alive) through time,
  each point computed from the history known at that moment.

Every plot evaluates the fitted model's own formulas (its math module, e.g.
:mod:`clvbayes.math.pnbd` for ``ParetoNBDModel``), so they work for every registered purchase
model (:func:`clvbayes.models.protocols.purchase_models`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from clvbayes.plotting._common import (
    MODEL_COLOR,
    N_DRAWS,
    OBSERVED_COLOR,
    band,
    days_per_unit,
    get_ax,
    interval,
    n_samples,
    purchase_draws,
    purchase_math,
)
from clvbayes.predict import DEFAULT_PROB

__all__ = ["plot_customer_history", "plot_expected_purchases_matrix", "plot_p_alive_matrix"]

_STATS = ("mean", "lower", "upper", "width")


def _rf_matrix(
    model, func, name, *, T, max_frequency, n_recency, stat, prob, n_draws, ax, cmap, vmin, vmax
):
    """Heatmap of ``func(*parameters, frequency, recency, T)`` (a function of the model's math
    module, parameters in the order of ``model.param_names``) over frequency and recency."""
    if stat not in _STATS:
        raise ValueError(f"stat must be one of {_STATS}, got {stat!r}.")
    draws = purchase_draws(model, n_draws)
    if stat != "mean" and n_samples(draws) == 1:
        raise ValueError(
            f"stat={stat!r} is an interval statistic: it needs posterior draws (fit with method='nuts'); "
            "a MAP fit has a single draw."
        )
    data = getattr(model, "data_", None)
    if T is None:
        if data is None:
            raise ValueError(
                "Pass T: the model carries no training data to take the longest T from."
            )
        T = float(np.max(data["T"]))
    if max_frequency is None:
        max_frequency = int(np.max(data["frequency"])) if data is not None else 20
    if T <= 0 or max_frequency < 1 or n_recency < 2:
        raise ValueError("Need T > 0, max_frequency >= 1 and n_recency >= 2.")
    freq = np.arange(max_frequency + 1, dtype=float)
    rec = np.linspace(0.0, T, n_recency)
    x, t_x = np.meshgrid(freq, rec, indexing="ij")
    valid = (x > 0) | (t_x == 0)  # no repeat purchase means recency 0
    xv, tv = x[valid], t_x[valid]
    values = func(*draws.values(), xv, tv, np.full(xv.shape, T))
    values = np.atleast_2d(values)
    if stat == "mean":
        cell = values.mean(axis=0)
    else:
        lo, hi = interval(values, prob)
        cell = {"lower": lo, "upper": hi, "width": hi - lo}[stat]
    grid = np.full(x.shape, np.nan)
    grid[valid] = cell

    ax = get_ax(ax)
    step = rec[1] - rec[0]
    image = ax.imshow(
        grid, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
        extent=(-step / 2, T + step / 2, -0.5, max_frequency + 0.5),
    )  # fmt: skip
    label = {"mean": name, "lower": f"{name}, lower {prob:.0%} bound",
             "upper": f"{name}, upper {prob:.0%} bound",
             "width": f"width of the {prob:.0%} credible interval of {name}"}[stat]  # fmt: skip
    ax.figure.colorbar(image, ax=ax, label=label)
    unit = getattr(model, "time_unit_", None) or "time units"
    ax.set_xlabel(f"recency: time of the last repeat purchase ({unit} after the first)")
    ax.set_ylabel("frequency: repeat purchases")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{label}\nfor customers observed for T = {T:g} {unit}")
    return ax


def plot_p_alive_matrix(
    model: Any,
    *,
    T: float | None = None,
    max_frequency: int | None = None,
    n_recency: int = 40,
    stat: str = "mean",
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    ax=None,
):
    """Heatmap of P(alive at T) over frequency (rows) and recency (columns).

    The model's ``P(alive | x, t_x, T)`` (its math module's ``p_alive``), averaged over
    posterior draws (``stat="mean"``) or the bounds or width of its credible interval
    (``"lower"``, ``"upper"``, ``"width"``; fits with several draws only).  Cells with no
    repeat purchase and positive recency are impossible and left blank.

    Parameters
    ----------
    model : fitted purchase model
        Any registered purchase model (:func:`clvbayes.models.protocols.purchase_models`).
    T : float, optional
        Observation length of the customers shown (data's time unit); default the longest
        ``T`` of the training data.
    max_frequency : int, optional
        Largest frequency shown; default the largest in the training data.
    n_recency : int
        Number of recency values from 0 to ``T``.
    stat : {"mean", "lower", "upper", "width"}
        What each cell shows.
    prob : float
        Credible-interval probability for the interval statistics.
    n_draws : int, optional
        Posterior draws used (evenly spaced; None for all).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        With one image (and a colour bar beside it).
    """
    return _rf_matrix(
        model, purchase_math(model).p_alive, "P(alive)", T=T, max_frequency=max_frequency, n_recency=n_recency,
        stat=stat, prob=prob, n_draws=n_draws, ax=ax, cmap="viridis", vmin=0.0,
        vmax=1.0 if stat != "width" else None,
    )  # fmt: skip


def plot_expected_purchases_matrix(
    model: Any,
    t: float = 1.0,
    *,
    T: float | None = None,
    max_frequency: int | None = None,
    n_recency: int = 40,
    stat: str = "mean",
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    ax=None,
):
    """Heatmap of the expected purchases in the next ``t`` time units over frequency and recency.

    ``E[Y(t) | x, t_x, T]`` (the model's ``expected_purchases``); parameters as in
    :func:`plot_p_alive_matrix`, with ``t`` the horizon in the data's time unit (default 1).

    Returns
    -------
    matplotlib.axes.Axes
        With one image (and a colour bar beside it).
    """
    if t <= 0:
        raise ValueError(f"t (horizon) must be positive, got {t!r}.")

    math = purchase_math(model)

    def func(*args):  # parameters, frequency, recency, T
        return math.expected_purchases(*args, t)

    unit = getattr(model, "time_unit_", None) or "time units"
    return _rf_matrix(
        model, func, f"E[purchases in the next {t:g} {unit}]", T=T, max_frequency=max_frequency,
        n_recency=n_recency, stat=stat, prob=prob, n_draws=n_draws, ax=ax, cmap="magma",
        vmin=0.0, vmax=None,
    )  # fmt: skip


def customer_timeline(
    transactions: pd.DataFrame,
    customer_id: Any,
    *,
    time_unit: str,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    merge_same_day: bool = True,
) -> tuple[pd.Timestamp, np.ndarray]:
    """A customer's first purchase date and repeat purchase times (time units after the first)."""
    rows = transactions[transactions[customer_id_col] == customer_id]
    if rows.empty:
        raise ValueError(
            f"No transactions for customer {customer_id!r} in column {customer_id_col!r}."
        )
    when = pd.to_datetime(rows[datetime_col]).dt.tz_localize(None)
    if merge_same_day:
        when = when.dt.normalize()
    when = np.sort(when.unique() if merge_same_day else when.to_numpy())
    first = pd.Timestamp(when[0])
    unit = pd.Timedelta(days=1) * days_per_unit(time_unit)
    times = ((pd.DatetimeIndex(when[1:]) - first) / unit).to_numpy(dtype=float)
    return first, times


def plot_customer_history(
    model: Any,
    transactions: pd.DataFrame,
    customer_id: Any,
    *,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    observation_end: Any = None,
    calibration_end: Any = None,
    time_unit: str | None = None,
    merge_same_day: bool = True,
    n_points: int = 300,
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    ax=None,
):
    """One customer's purchases and P(alive) over time.

    At every time ``tau`` after the first purchase the customer's history so far is
    ``x(tau)`` repeat purchases, the last at ``t_x(tau)``, observed for ``T = tau``; the line is
    ``P(alive | x(tau), t_x(tau), tau)`` (the model's ``p_alive``, posterior mean) with its
    credible band (fits with several draws).  P(alive) jumps up at each purchase (to 1 where
    the model lets nobody drop out at the moment of a purchase) and decays while the customer
    is silent, the faster the more often they used to buy.

    Parameters
    ----------
    model : fitted purchase model
        Any registered purchase model (:func:`clvbayes.models.protocols.purchase_models`).
    transactions : DataFrame
        Transaction log.
    customer_id : object
        The customer, as in ``transactions[customer_id_col]``.
    customer_id_col, datetime_col : str
        Columns of ``transactions``.
    observation_end : date-like, optional
        End of the time axis; default the last date in ``transactions``.
    calibration_end : date-like, optional
        Marked with a dotted vertical line (e.g. the end of the model's training period).
    time_unit : str, optional
        Time unit of the model (default ``model.time_unit_``).
    merge_same_day : bool
        Count same-day transactions once, as the RFM summary does by default.
    n_points : int
        Evaluation points (purchase times are added).
    prob, n_draws, ax
        Credible-interval probability, posterior draws used, Axes.

    Returns
    -------
    matplotlib.axes.Axes
        The P(alive) line, one vertical line collection of purchases (first purchase
        included), the calibration-end line when given, and, for several draws, a band.
    """
    time_unit = time_unit or getattr(model, "time_unit_", None)
    math = purchase_math(model)
    draws = purchase_draws(model, n_draws)
    first, times = customer_timeline(
        transactions, customer_id, time_unit=time_unit, customer_id_col=customer_id_col,
        datetime_col=datetime_col, merge_same_day=merge_same_day,
    )  # fmt: skip
    unit = pd.Timedelta(days=1) * days_per_unit(time_unit)
    end_date = (
        pd.to_datetime(transactions[datetime_col]).max()
        if observation_end is None
        else observation_end
    )
    end = float((pd.Timestamp(end_date).tz_localize(None) - first) / unit)
    times = times[times <= end]
    if end <= 0:
        raise ValueError(
            f"observation_end {end_date} is not after the customer's first purchase {first:%Y-%m-%d}."
        )
    eps = 1e-9 * max(end, 1.0)
    tau = np.unique(
        np.concatenate([np.linspace(0.0, end, n_points), times, np.maximum(times - eps, 0.0)])
    )
    x = np.searchsorted(times, tau, side="right")
    t_x = np.where(x > 0, times[np.maximum(x - 1, 0)], 0.0)
    values = np.atleast_2d(math.p_alive(*draws.values(), x, t_x, tau))

    ax = get_ax(ax)
    if n_samples(draws) > 1:
        band(
            ax,
            tau,
            *interval(values, prob),
            kind="ci",
            prob=prob,
            label=f"{prob:.0%} credible interval",
        )
    ax.plot(tau, values.mean(axis=0), color=MODEL_COLOR, label="P(alive)")
    ax.vlines(
        np.concatenate([[0.0], times]),
        0,
        1,
        colors=OBSERVED_COLOR,
        linewidth=1,
        alpha=0.8,
        label="purchases",
    )
    if calibration_end is not None:
        cal = float((pd.Timestamp(calibration_end).tz_localize(None) - first) / unit)
        ax.axvline(cal, color="0.4", linestyle=":", label="end of calibration")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(-0.01 * end, end * 1.01)
    ax.set_xlabel(f"{time_unit} since the first purchase ({first:%Y-%m-%d})")
    ax.set_ylabel("P(alive)")
    ax.set_title(f"Customer {customer_id}: {times.size} repeat purchase(s)")
    ax.legend(frameon=False, loc="lower left")
    return ax
