"""Customers on discrete opportunities (BG/BB): P(alive) by history, with its credible interval.

A BG/BB customer observed for ``n`` opportunities is summarised by ``(x, t_x)``: ``x`` repeat
transactions, the last at opportunity ``t_x`` (Fader, Hardie & Shang 2010, Marketing Science
29(6)).  For a fixed ``n`` every possible history is a cell of a small triangle
(``x = t_x = 0``, or ``1 <= x <= t_x <= n``), and P(alive) over that triangle is the
model's natural table (FHS 2010, Table 3; there for ``n = 6``): a customer who transacted
often but stopped long ago is probably gone, one with a recent last transaction probably
is not.

* :func:`history_grid`: the table -- for each cell the posterior mean of P(alive) (or of
  the expected transactions in the next ``n_star`` opportunities), the equal-tailed
  credible interval over the posterior draws, its width, and how many customers of the
  training data have that history;
* :func:`plot_history_grid`: the table as two heat maps side by side, the posterior mean
  (cells annotated ``"0.59 [0.55, 0.63]"`` when the grid is small enough to read) and the
  width of the credible interval, so the uncertainty is shown as bands, not points.

These evaluate the fitted model's own formulas (:mod:`clvbayes.math.bgbb`) over its posterior
draws; the continuous-time plots of :mod:`clvbayes.plotting.customers` and
:mod:`clvbayes.plotting.checks` refuse discrete-time models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clvbayes.plotting._common import N_DRAWS, check_fitted, get_ax, interval
from clvbayes.predict import DEFAULT_PROB, joint_draws

__all__ = ["history_grid", "plot_history_grid"]

#: Largest ``n`` drawn (a grid of about n^2 / 2 cells, each over every draw).
MAX_PERIODS = 260
#: Grids up to this ``n`` are annotated with the values by default.
ANNOTATE_MAX_PERIODS = 8
_QUANTITIES = ("p_alive", "expected_purchases")


def _discrete_model(model: Any):
    """The math module of a fitted discrete-time purchase model (BG/BB); TypeError otherwise."""
    from clvbayes.models.protocols import purchase_model_candidates, time_grid

    check_fitted(model)
    if time_grid(model) != "discrete":
        known = purchase_model_candidates("discrete")
        names = ", ".join(f"{cls.__name__} ({k})" for k, (cls, _) in known.items() if cls)
        raise TypeError(
            "This plot evaluates a discrete-time purchase model's formulas over "
            f"opportunities and needs a fitted {names or 'BG/BB model'}; got "
            f"{type(model).__name__}. For continuous-time models use plot_p_alive_matrix."
        )
    return model._math


def _default_periods(model: Any) -> int:
    """The most common ``periods`` of the training data (weighted by customers)."""
    data = getattr(model, "data_", None)
    if data is None or "periods" not in getattr(data, "columns", ()):
        raise ValueError("Pass n: the model carries no training data to take periods from.")
    counts = pd.Series(data.counts).groupby(np.asarray(data["periods"])).sum()
    return int(counts.idxmax())


def history_grid(
    model: Any,
    n: int | None = None,
    *,
    quantity: str = "p_alive",
    s: int = 0,
    n_star: int | None = None,
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
) -> pd.DataFrame:
    """Every possible history ``(x, t_x)`` of customers observed for ``n`` opportunities.

    Parameters
    ----------
    model : BetaGeoBetaBinomModel
        Fitted (any method; a MAP fit has one draw and no interval).
    n : int, optional
        Opportunities observed since the first transaction (``periods``); default the most
        common ``periods`` of the training data (6 for the donations data).  At most
        :data:`MAX_PERIODS`.
    quantity : {"p_alive", "expected_purchases"}
        ``"p_alive"``: P(alive at opportunity ``n + s``); ``"expected_purchases"``: the
        expected transactions at opportunities ``n + 1 .. n + n_star`` (FHS eq. 13).
    s : int
        For ``"p_alive"``: opportunities ahead.  0 (default) is P(active at the last
        observed opportunity ``n``), the ``p_alive`` of :func:`clvbayes.predict.
        score_customers` and of the report; 1 is P(alive at the next opportunity, ``n + 1``),
        FHS eq. (11) and lifetimes' ``conditional_probability_alive``.
    n_star : int, optional
        For ``"expected_purchases"``: the horizon in opportunities (required there).
    prob : float
        Probability of the equal-tailed credible interval.
    n_draws : int, optional
        Posterior draws used (evenly spaced; None for all).

    Returns
    -------
    DataFrame
        One row per cell, ordered by ``recency`` then ``frequency``: ``frequency`` (``x``),
        ``recency`` (``t_x``), ``periods`` (``n``), ``mean`` (posterior mean), ``lower``,
        ``upper`` and ``width`` (``upper - lower``; NaN for a fit with one draw), and
        ``n_customers`` (training customers with exactly this history, 0 when the model
        carries no data).  ``attrs``: ``quantity``, ``s``, ``n_star``, ``prob``,
        ``n_draws``, ``label`` (a description for titles).
    """
    math = _discrete_model(model)
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {_QUANTITIES}, got {quantity!r}.")
    n = _default_periods(model) if n is None else n
    for name, value, low in (("n", n, 1), ("s", s, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}.")
    if n > MAX_PERIODS:
        raise ValueError(
            f"n = {n:,} opportunities gives about {n * n // 2:,} cells, too many to draw; pass "
            f"n <= {MAX_PERIODS} (e.g. a shorter period of the data)."
        )
    if quantity == "expected_purchases":
        if n_star is None or isinstance(n_star, bool) or int(n_star) != n_star or n_star < 1:
            raise ValueError(
                "quantity='expected_purchases' needs n_star, the horizon as a whole number "
                f"of opportunities >= 1 (e.g. n_star=5); got {n_star!r}."
            )
        n_star = int(n_star)
    draws = joint_draws(model, None, n_draws)[0]
    params = [draws[p] for p in model.param_names]  # each (S, 1)
    t_x, x = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    valid = ((x == 0) & (t_x == 0)) | ((x >= 1) & (x <= t_x))
    t_x, x = t_x[valid], x[valid]
    periods = np.full(x.shape, n)
    if quantity == "p_alive":
        values = math.p_alive_at(*params, x, t_x, periods, s)
        what = "P(active at opportunity n)" if s == 0 else f"P(alive at opportunity n + {s})"
    else:
        values = math.expected_purchases(*params, x, t_x, periods, n_star)
        what = f"E[transactions in the next {n_star} opportunities]"
    values = np.atleast_2d(values)
    n_samples = values.shape[0]
    mean = values.mean(axis=0)
    if n_samples > 1:
        lower, upper = interval(values, prob)
    else:
        lower = upper = np.full(mean.shape, np.nan)
    table = pd.DataFrame(
        {"frequency": x, "recency": t_x, "periods": periods, "mean": mean, "lower": lower,
         "upper": upper, "width": upper - lower, "n_customers": _counts(model, x, t_x, n)}
    )  # fmt: skip
    table.attrs.update(quantity=quantity, s=s, n_star=n_star, prob=prob, n_draws=n_samples,
                       label=what)  # fmt: skip
    return table


def _counts(model: Any, x: np.ndarray, t_x: np.ndarray, n: int) -> np.ndarray:
    """Training customers with each history ``(x, t_x, n)``; zeros without training data."""
    data = getattr(model, "data_", None)
    if data is None or not {"frequency", "recency", "periods"} <= set(data.columns):
        return np.zeros(x.shape, dtype=np.int64)
    seen = pd.Series(data.counts, index=pd.MultiIndex.from_arrays(
        [np.asarray(data[c]).astype(np.int64) for c in ("frequency", "recency", "periods")]
    ))  # fmt: skip
    seen = seen.groupby(level=[0, 1, 2]).sum()
    keys = pd.MultiIndex.from_arrays([x, t_x, np.full(x.shape, n)])
    return seen.reindex(keys, fill_value=0).to_numpy(dtype=np.int64)


def plot_history_grid(
    model: Any,
    n: int | None = None,
    *,
    quantity: str = "p_alive",
    s: int = 0,
    n_star: int | None = None,
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    annotate: bool | None = None,
    axes=None,
):
    """Heat maps of :func:`history_grid`: the posterior mean and the credible-interval width.

    Rows are the repeat transactions ``x`` (0 at the bottom), columns the opportunity of the
    last one ``t_x``; impossible cells (``x > t_x``, or ``x = 0`` with ``t_x > 0``) are
    blank.  The left panel shows the posterior mean, the right one the width of the
    ``prob`` credible interval (parameter uncertainty): the band, not just the point.
    With ``annotate`` every cell of the left panel reads ``"mean [lower, upper]"`` and cells
    holding no training customer are marked ``"(none)"``.  A fit with one draw (MAP) has no
    interval: the right panel says so instead.

    Parameters
    ----------
    model, n, quantity, s, n_star, prob, n_draws
        As in :func:`history_grid`.
    annotate : bool, optional
        Write the values into the cells; default when ``n`` is at most
        :data:`ANNOTATE_MAX_PERIODS`.
    axes : sequence of two matplotlib Axes, optional
        Where to draw (default: a new figure with two panels).

    Returns
    -------
    ndarray of matplotlib.axes.Axes
        The two panels (each with one image and a colour bar beside it).
    """
    table = history_grid(model, n, quantity=quantity, s=s, n_star=n_star, prob=prob,
                         n_draws=n_draws)  # fmt: skip
    n = int(table["periods"].iloc[0])
    if annotate is None:
        annotate = n <= ANNOTATE_MAX_PERIODS
    if axes is None:
        import matplotlib.pyplot as plt

        axes = plt.subplots(1, 2, figsize=(12, 5.5))[1]
    axes = np.asarray(axes, dtype=object).ravel()
    if axes.size != 2:
        raise ValueError(f"axes must hold two Axes (mean, interval width), got {axes.size}.")

    def grid(column: str) -> np.ndarray:
        out = np.full((n + 1, n + 1), np.nan)  # rows x, columns t_x
        out[table["frequency"].to_numpy(), table["recency"].to_numpy()] = table[column]
        return out

    label = table.attrs["label"]
    point = table.attrs["n_draws"] == 1
    vmax = 1.0 if quantity == "p_alive" else None
    panels = (("mean", f"posterior mean of {label}", "viridis", 0.0, vmax),
              ("width", f"width of the {prob:.0%} credible interval", "magma", 0.0, None))  # fmt: skip
    for ax, (column, bar, cmap, vmin, top) in zip(axes, panels, strict=True):
        ax = get_ax(ax)
        if column == "width" and point:
            ax.text(0.5, 0.5, "a point estimate (one posterior draw, e.g. MAP):\nno credible "
                    "interval to show;\nfit with method='laplace' or 'nuts'", ha="center",
                    va="center", transform=ax.transAxes)  # fmt: skip
            ax.set_axis_off()
            continue
        image = ax.imshow(grid(column), origin="lower", cmap=cmap, vmin=vmin, vmax=top,
                          interpolation="nearest", aspect="auto")  # fmt: skip
        ax.figure.colorbar(image, ax=ax, label=bar)
        ticks = np.arange(n + 1) if n <= 20 else np.unique(np.linspace(0, n, 11).round())
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("recency t_x: opportunity of the last repeat transaction")
        ax.set_ylabel("frequency x: repeat transactions")
        ax.set_title(f"{bar}\ncustomers observed for n = {n} opportunities")
    if annotate:
        _annotate(axes[0], table, point)
    if annotate and not point:
        top = float(np.nanmax(table["width"]))
        for row in table.itertuples(index=False):
            axes[1].text(row.recency, row.frequency, f"{row.width:.2g}", ha="center",
                         va="center", fontsize=7, color=_ink(row.width, top))  # fmt: skip
    return axes


def _ink(value: float, top: float) -> str:
    """Text colour readable on a viridis/magma cell (both light at the top of the scale)."""
    return "black" if top > 0 and value > 0.6 * top else "white"


def _annotate(ax, table: pd.DataFrame, point: bool) -> None:
    """``"mean [lower, upper]"`` in each cell of the mean panel (``"mean"`` for a point fit)."""
    fmt = "{:.2f}" if table.attrs["quantity"] == "p_alive" else "{:.3g}"
    has_data = table["n_customers"].sum() > 0
    for row in table.itertuples(index=False):
        text = fmt.format(row.mean)
        if not point:
            text += f"\n[{fmt.format(row.lower)}, {fmt.format(row.upper)}]"
        if has_data and row.n_customers == 0:
            text += "\n(none)"
        top = 1.0 if table.attrs["quantity"] == "p_alive" else float(np.nanmax(table["mean"]))
        ax.text(row.recency, row.frequency, text, ha="center", va="center", fontsize=6.5,
                color=_ink(row.mean, top))  # fmt: skip
