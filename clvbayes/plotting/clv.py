"""CLV across customers and segments, and the two kinds of interval side by side.

These plots take the result of :func:`clvbayes.predict.score_customers` (a
:class:`~clvbayes.predict.CustomerScores`), which already holds, per customer and per
segment, the mean, the credible interval of the expectation (``ci``) and the predictive
interval of the outcome (``pi``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clvbayes.plotting._common import MODEL_COLOR, OBSERVED_COLOR, get_ax

__all__ = ["plot_clv_distribution", "plot_interval_kinds", "plot_segment_totals"]

_NAMES = {
    "clv": "CLV",
    "revenue": "revenue",
    "purchases": "purchases",
    "spend": "spend per transaction",
    "p_alive": "P(alive)",
    "alive": "customers alive",
}


def _customers(scores: Any) -> pd.DataFrame:
    table = getattr(scores, "customers", scores)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"Expected CustomerScores or a DataFrame, got {type(scores).__name__}.")
    return table


def _require(table: pd.DataFrame, columns: list[str], hint: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"Columns {missing} not found; {hint}. Available: {list(table.columns)}.")


def _has_draws(scores: Any) -> bool:
    settings = getattr(scores, "settings", None) or {}
    return int(settings.get("n_draws", 2)) > 1


def _horizon_text(scores: Any) -> str:
    settings = getattr(scores, "settings", None) or {}
    if "horizon" not in settings:
        return ""
    return f" over {settings['horizon']:g} {settings.get('time_unit') or 'time units'}"


def plot_clv_distribution(
    scores: Any,
    quantity: str = "clv",
    *,
    groups: pd.Series | np.ndarray | str | None = None,
    bins: int = 40,
    upper_quantile: float = 0.99,
    ax=None,
):
    """Histogram of the customers' expected CLV (or another quantity), optionally per segment.

    Each customer contributes the posterior mean of their expected value, ``{quantity}_mean``.
    CLV is heavily skewed (most customers are worth little, a few a lot), so the x axis
    stops at the ``upper_quantile`` of the values; the number of customers beyond it is
    given in the legend.  For the uncertainty of the individual values see
    :func:`plot_interval_kinds`; for segment totals with intervals see
    :func:`plot_segment_totals`.

    Parameters
    ----------
    scores : CustomerScores or DataFrame
        Result of :func:`clvbayes.predict.score_customers`, or its ``customers`` table.
    quantity : str
        ``"clv"`` (default), ``"revenue"``, ``"purchases"``, ``"spend"`` or ``"p_alive"``.
    groups : Series, array or str, optional
        Segment of each customer (aligned with the table's index, or in its order), or the
        name of a column of the table: one outlined histogram per segment.
    bins : int
        Number of bins.
    upper_quantile : float
        Right end of the x axis as a quantile of the values (1 shows all).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One filled histogram (all customers) or one outlined histogram per segment, and a
        vertical line at the mean.
    """
    table = _customers(scores)
    col = f"{quantity}_mean"
    _require(table, [col], "pass the quantity of a score_customers table")
    if not 0 < upper_quantile <= 1:
        raise ValueError(f"upper_quantile must be in (0, 1], got {upper_quantile!r}.")
    values = table[col].to_numpy(dtype=float)
    top = float(np.quantile(values, upper_quantile))
    low = min(0.0, float(values.min()))
    if top <= low:
        top = low + 1.0
    n_above = int(np.count_nonzero(values > top))
    name = _NAMES.get(quantity, quantity)
    ax = get_ax(ax)
    if groups is None:
        ax.hist(
            values, bins=bins, range=(low, top), color=MODEL_COLOR, alpha=0.7, label="customers"
        )
    else:
        if isinstance(groups, str):
            _require(table, [groups], "groups names a column of the table")
            labels = table[groups]
        elif isinstance(groups, pd.Series):
            labels = groups.reindex(table.index)
        else:
            labels = pd.Series(np.asarray(groups), index=table.index)
        if len(labels) != len(table):
            raise ValueError(f"groups has {len(labels)} labels for {len(table)} customers.")
        for label, idx in labels.groupby(labels, sort=True, observed=True).groups.items():
            v = table.loc[idx, col].to_numpy(dtype=float)
            ax.hist(
                v,
                bins=bins,
                range=(low, top),
                histtype="step",
                linewidth=1.5,
                label=f"{label} (n={v.size:,})",
            )
    mean = float(values.mean())
    ax.axvline(mean, color=OBSERVED_COLOR, linestyle="--", label=f"mean {mean:,.2f}")
    if n_above:
        ax.plot([], [], " ", label=f"{n_above:,} customers above {top:,.0f} not shown")
    ax.set_xlim(low, top)
    ax.set_xlabel(f"expected {name}{_horizon_text(scores)} (posterior mean per customer)")
    ax.set_ylabel("customers")
    ax.set_title(f"Distribution of expected {name} across customers")
    ax.legend(frameon=False)
    return ax


def plot_segment_totals(
    scores: Any,
    by: str = "all",
    quantity: str = "clv",
    *,
    per_customer: bool = False,
    ax=None,
):
    """Segment totals with the credible interval of the expected total and the predictive interval.

    Totals come from ``scores.segments[by]``: they were computed draw by draw (sum over the
    segment's customers within each posterior draw, then the interval), which is the only
    correct way -- adding up per-customer interval bounds would give far too wide an
    interval, because customers' individual randomness largely cancels in a sum.

    Parameters
    ----------
    scores : CustomerScores
        Result of :func:`clvbayes.predict.score_customers` (with ``by=`` for segments).
    by : str
        ``"all"`` or a grouping column passed to ``score_customers(by=...)``.
    quantity : str
        ``"clv"``, ``"revenue"``, ``"purchases"`` or ``"alive"`` (expected customers alive).
    per_customer : bool
        Plot the per-customer mean of each segment (credible interval only) instead of totals.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One horizontal bar per segment, an errorbar for the predictive interval (totals only)
        and, for posteriors with several draws, one for the credible interval.
    """
    segments = getattr(scores, "segments", None)
    if not segments or by not in segments:
        available = list(segments or {})
        raise ValueError(
            f"No segment table {by!r}; available: {available} (use score_customers(by=...))."
        )
    table = segments[by]
    what = "per_customer" if per_customer else "total"
    cols = [f"{quantity}_{what}_mean", f"{quantity}_{what}_ci_lower", f"{quantity}_{what}_ci_upper"]
    if not per_customer:
        cols += [f"{quantity}_{what}_pi_lower", f"{quantity}_{what}_pi_upper"]
    _require(table, cols, "quantity must be one of the segment quantities")
    prob = (getattr(scores, "settings", None) or {}).get("prob", 0.9)
    y = np.arange(len(table))
    mean = table[cols[0]].to_numpy(dtype=float)
    ax = get_ax(ax)
    ax.barh(y, mean, color=MODEL_COLOR, alpha=0.5, label="expected")
    if not per_customer:
        lo, hi = table[cols[3]].to_numpy(dtype=float), table[cols[4]].to_numpy(dtype=float)
        ax.errorbar(
            mean, y, xerr=[np.maximum(mean - lo, 0), np.maximum(hi - mean, 0)], fmt="none",
            ecolor="0.35", elinewidth=1, capsize=5, label=f"{prob:.0%} predictive interval",
        )  # fmt: skip
    if _has_draws(scores):
        lo, hi = table[cols[1]].to_numpy(dtype=float), table[cols[2]].to_numpy(dtype=float)
        ax.errorbar(
            mean, y, xerr=[np.maximum(mean - lo, 0), np.maximum(hi - mean, 0)], fmt="none",
            ecolor=MODEL_COLOR, elinewidth=5, capsize=0, label=f"{prob:.0%} credible interval",
        )  # fmt: skip
    n = table["n_customers"].to_numpy() if "n_customers" in table.columns else None
    labels = [
        f"{lab}" + (f" (n={int(k):,})" if n is not None else "")
        for lab, k in zip(table.index, n if n is not None else y, strict=True)
    ]
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    name = _NAMES.get(quantity, quantity)
    ax.set_xlabel(
        f"{'mean ' + name + ' per customer' if per_customer else 'total ' + name}{_horizon_text(scores)}"
    )
    ax.set_title(f"{name} by {by}" if by != "all" else f"{name}: whole customer base")
    ax.legend(frameon=False, loc="best")
    return ax


def plot_interval_kinds(
    scores: Any,
    quantity: str = "clv",
    *,
    customers: list | None = None,
    n: int = 8,
    ax=None,
):
    """The credible interval of the expectation next to the predictive interval, for a few customers.

    For each customer: the dot is the posterior mean of the expected value, the thick bar the
    credible interval of that expectation (how sure we are about the *average* this customer
    would produce), the thin capped bar the predictive interval of the outcome (what the
    customer may actually do).  The predictive interval is much wider: even with the model
    parameters known exactly, whether one customer buys again is largely chance.

    Parameters
    ----------
    scores : CustomerScores or DataFrame
        Result of :func:`clvbayes.predict.score_customers`, or its ``customers`` table.
    quantity : str
        An outcome: ``"clv"`` (default), ``"revenue"``, ``"purchases"`` or ``"spend"``.
    customers : list, optional
        Customer ids to show; default ``n`` customers at evenly spaced ranks of the expected
        value from the median to the 99th percentile (the lower half is mostly near zero).
    n : int
        Number of customers when ``customers`` is not given.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        One point set (means), an errorbar for the predictive intervals and, for posteriors
        with several draws, one for the credible intervals.
    """
    table = _customers(scores)
    cols = [f"{quantity}_{s}" for s in ("mean", "ci_lower", "ci_upper", "pi_lower", "pi_upper")]
    _require(
        table,
        cols,
        "quantity must be an outcome of score_customers (purchases, spend, revenue, clv)",
    )
    if customers is None:
        ranked = table[cols[0]].sort_values(kind="stable")
        levels = np.linspace(0.5, 0.99, max(1, min(n, len(ranked))))
        pick = np.unique((levels * (len(ranked) - 1)).round().astype(int))
        customers = list(ranked.index[pick])
    missing = [c for c in customers if c not in table.index]
    if missing:
        raise ValueError(f"Customers {missing[:5]} not in the table.")
    rows = table.loc[customers]
    y = np.arange(len(rows))
    mean = rows[cols[0]].to_numpy(dtype=float)
    prob = (getattr(scores, "settings", None) or {}).get("prob", 0.9)
    ax = get_ax(ax)
    lo, hi = rows[cols[3]].to_numpy(dtype=float), rows[cols[4]].to_numpy(dtype=float)
    ax.errorbar(
        mean, y, xerr=[np.maximum(mean - lo, 0), np.maximum(hi - mean, 0)], fmt="none", ecolor="0.35",
        elinewidth=1, capsize=5, label=f"{prob:.0%} predictive interval of the outcome",
    )  # fmt: skip
    if _has_draws(scores):
        lo, hi = rows[cols[1]].to_numpy(dtype=float), rows[cols[2]].to_numpy(dtype=float)
        ax.errorbar(
            mean, y, xerr=[np.maximum(mean - lo, 0), np.maximum(hi - mean, 0)], fmt="none",
            ecolor=MODEL_COLOR, elinewidth=6, capsize=0,
            label=f"{prob:.0%} credible interval of the expectation",
        )  # fmt: skip
    ax.plot(mean, y, "o", color=OBSERVED_COLOR, label="expected value (posterior mean)")
    ax.set_yticks(y, [str(c) for c in customers])
    ax.invert_yaxis()
    name = _NAMES.get(quantity, quantity)
    ax.set_xlabel(f"{name}{_horizon_text(scores)}")
    ax.set_ylabel("customer")
    ax.set_title(f"Two kinds of interval: {name}")
    ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize="small")
    return ax
