"""Retention (contractual) plots: survival and retention-rate curves, renewal forecasts, holdout.

The curves evaluate a fitted sBG or BdW model's own closed forms
(:meth:`~clvbayes.models.sbg.RetentionModel.survival`, ``retention_rate``) on its posterior
draws and put them next to what the data show: the empirical survival of a subscribers
table (:func:`empirical_survival`, a discrete-time Kaplan-Meier estimate, so subscribers
still active count as at risk only as long as they have been observed).  The forecast
plots take the per-period tables of :func:`clvbayes.predict.retention.score_subscribers`
(``SubscriberScores.cohorts``) or of the ``clvbayes subscriptions`` report.

Both interval kinds are drawn as in the rest of :mod:`clvbayes.plotting`: the credible
interval of the expectation darker, the predictive interval of the outcome lighter.  A MAP
fit is a point: its curves carry no credible band (the legend says so).  Times are
renewal periods of the data's grid (``attrs["period"]``, e.g. one month).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.plotting._common import CI_ALPHA, OBSERVED_COLOR, PI_ALPHA, check_fitted, get_ax

__all__ = [
    "empirical_survival",
    "plot_holdout_survivors",
    "plot_renewal_forecast",
    "plot_retention_rates",
    "plot_survival_curves",
]

#: Colours of the models of one plot, in order (sBG first, then BdW, ...).
MODEL_COLORS = ("C0", "C1", "C2", "C3")
#: Default number of posterior draws behind a curve's band (evenly spaced; all if fewer).
N_CURVE_DRAWS = 400
_NAMES = {"ShiftedBetaGeometricModel": "sBG", "BetaDiscreteWeibullModel": "BdW"}


def empirical_survival(table: pd.DataFrame) -> pd.DataFrame:
    """Observed survival by tenure of a subscribers table (discrete-time Kaplan-Meier).

    A subscriber with ``periods = p`` renewed at the due dates ``1..p``; with ``churned = 1``
    she cancelled at due date ``p + 1``, with ``churned = 0`` that date has not come yet
    (right-censored).  So at due date ``t`` the subscribers at risk are those with ``p >=
    t`` plus those who cancelled there (``churned = 1, p = t - 1``).

    Parameters
    ----------
    table : DataFrame
        ``periods`` and ``churned`` per subscriber (e.g. from
        :func:`clvbayes.data.subscriptions.summarize_subscriptions`).

    Returns
    -------
    DataFrame
        Index ``t`` = 0, 1, ..., the largest tenure observed: ``at_risk`` (subscribers whose
        due date ``t`` has come), ``lost`` (cancelled at it), ``retention`` (``1 - lost /
        at_risk``, NaN at ``t = 0``) and ``survival`` (the product of the retention rates up
        to ``t``, 1 at ``t = 0``).
    """
    from clvbayes.data.subscriptions import validate_subscribers

    checked = validate_subscribers(table)
    p = checked["periods"].to_numpy(dtype=np.int64)
    c = checked["churned"].to_numpy(dtype=np.int64)
    t_max = int(p.max()) + int(c[p == p.max()].max()) if p.size else 0
    n = t_max + 1
    reached = np.bincount(p, minlength=n + 1)[: n + 1]  # subscribers whose tenure is exactly p
    lost_at = np.bincount(p[c == 1] + 1, minlength=n + 1)[: n + 1]  # cancelled at due date p+1
    survived_to = reached[::-1].cumsum()[::-1]  # p >= t
    at_risk = survived_to + lost_at
    t = np.arange(n)
    at_risk, lost = at_risk[:n].astype(np.int64), lost_at[:n].astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        retention = np.where(at_risk > 0, 1.0 - lost / np.maximum(at_risk, 1), np.nan)
    retention[0] = np.nan
    survival = np.concatenate([[1.0], np.cumprod(np.nan_to_num(retention[1:], nan=1.0))])
    out = pd.DataFrame(
        {"at_risk": at_risk, "lost": lost, "retention": retention, "survival": survival},
        index=pd.Index(t, name="t"),
    )
    return out[out["at_risk"] > 0].copy() if n > 1 else out


def _as_models(models: Any) -> dict[str, Any]:
    if isinstance(models, Mapping):
        out = dict(models)
    else:
        out = {_NAMES.get(type(models).__name__, type(models).__name__): models}
    if not out:
        raise ValueError("Pass at least one fitted retention model.")
    for label, m in out.items():
        check_fitted(m)
        if not (hasattr(m, "survival") and hasattr(m, "retention_rate")):
            raise TypeError(
                f"{label}: expected a fitted retention model (ShiftedBetaGeometricModel or "
                f"BetaDiscreteWeibullModel), got {type(m).__name__}."
            )
    return out


def _thinned(values: np.ndarray, n_draws: int | None) -> np.ndarray:
    """Rows of (chain, draw, t) draws flattened to (S, t), evenly thinned to ``n_draws``."""
    flat = values.reshape(-1, values.shape[-1])
    if n_draws is not None and flat.shape[0] > n_draws:
        idx = np.linspace(0, flat.shape[0] - 1, n_draws).round().astype(int)
        flat = flat[idx]
    return flat


def _curve(ax, x, draws: np.ndarray, *, color: str, label: str, prob: float, style="-"):
    """Posterior-mean line and, with several draws, the credible band; returns the line."""
    mean = draws.mean(axis=0)
    if draws.shape[0] > 1:
        lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=CI_ALPHA, linewidth=0,
                        label=f"{label}: {prob:.0%} credible interval")  # fmt: skip
        text = f"{label}: posterior mean"
    else:
        text = f"{label}: point estimate (MAP, no credible interval)"
    return ax.plot(x, mean, style, color=color, linewidth=1.8, label=text)[0]


def _period_text(period: Any) -> str:
    return f"periods of {period}" if period else "renewal periods"


def plot_survival_curves(
    models: Any,
    table: pd.DataFrame | None = None,
    *,
    t_max: int | None = None,
    prob: float = 0.9,
    n_draws: int | None = N_CURVE_DRAWS,
    calibration_end: int | None = None,
    actual: pd.Series | None = None,
    title: str | None = None,
    ax=None,
):
    """Survival curves ``S(t)`` of fitted retention models with credible bands, and the data.

    Parameters
    ----------
    models : fitted model or mapping of label to fitted model
        sBG and/or BdW (e.g. ``{"sBG": sbg, "BdW": bdw}``), each drawn in its own colour.
    table : DataFrame, optional
        The subscribers (``periods``, ``churned``): their empirical survival
        (:func:`empirical_survival`) is drawn as black dots.
    t_max : int, optional
        Last tenure on the x axis (default: the largest observed tenure + 5, at least 10).
    prob : float
        Probability of the credible band.
    n_draws : int, optional
        Posterior draws behind each band (evenly thinned; None: all).
    calibration_end : int, optional
        Tenure where the data the models were fitted on end (a dotted vertical line):
        beyond it the curves are projections.
    actual : Series, optional
        Observed survival by tenure (index ``t``), e.g. a cohort's published curve; drawn
        instead of the table's empirical survival (as open circles beyond
        ``calibration_end``).
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    fitted = _as_models(models)
    emp = empirical_survival(table) if table is not None else None
    if t_max is None:
        top = 0
        if emp is not None:
            top = int(emp.index.max())
        if actual is not None:
            top = max(top, int(pd.Index(actual.index).max()))
        t_max = max(10, top + 5)
    t = np.arange(int(t_max) + 1, dtype=float)
    ax = get_ax(ax)
    for i, (label, m) in enumerate(fitted.items()):
        draws = _thinned(np.asarray(m.survival(t).values), n_draws)
        _curve(ax, t, draws, color=MODEL_COLORS[i % len(MODEL_COLORS)], label=label, prob=prob)
    if actual is not None:
        a = pd.Series(actual, dtype=float)
        inside = a.index <= (calibration_end if calibration_end is not None else np.inf)
        ax.plot(a.index[inside], a[inside], "o", color=OBSERVED_COLOR, markersize=4,
                label="actual")  # fmt: skip
        if (~inside).any():
            ax.plot(a.index[~inside], a[~inside], "o", mfc="none", color=OBSERVED_COLOR,
                    markersize=5, label="actual, after the calibration data")  # fmt: skip
    elif emp is not None:
        ax.plot(emp.index, emp["survival"], "o", color=OBSERVED_COLOR, markersize=3.5,
                label="actual (Kaplan-Meier on the subscribers)")  # fmt: skip
    if calibration_end is not None:
        ax.axvline(calibration_end, color="0.5", linestyle=":", linewidth=1,
                   label="end of the fitted data")  # fmt: skip
    period = (table.attrs.get("period") if table is not None else None) or None
    ax.set_xlabel(f"tenure t ({_period_text(period)})")
    ax.set_ylabel("share still subscribed S(t)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, t_max)
    ax.set_title(title or "Survival: share of a new cohort still subscribed")
    ax.legend(frameon=False, fontsize="small")
    return ax


def plot_retention_rates(
    models: Any,
    table: pd.DataFrame | None = None,
    *,
    t_max: int | None = None,
    prob: float = 0.9,
    n_draws: int | None = N_CURVE_DRAWS,
    min_at_risk: int = 10,
    title: str | None = None,
    ax=None,
):
    """Retention rate by tenure ``r(t) = S(t) / S(t - 1)`` with credible bands, and the data.

    Under the sBG the rate rises with tenure only through sorting (the subscribers likely to
    cancel leave first); under the BdW with ``c < 1`` it rises faster, with ``c > 1`` slower
    or it falls.  The observed rates (``1 - lost / at_risk`` at each due date) are drawn as
    dots sized by the subscribers at risk, where at least ``min_at_risk`` were.

    Parameters
    ----------
    models, table, t_max, prob, n_draws, title, ax
        As :func:`plot_survival_curves`.
    min_at_risk : int
        Observed rates on fewer subscribers at risk are not drawn.

    Returns
    -------
    matplotlib.axes.Axes
    """
    fitted = _as_models(models)
    emp = empirical_survival(table) if table is not None else None
    if t_max is None:
        t_max = max(10, int(emp.index.max()) + 5) if emp is not None else 20
    t = np.arange(1, int(t_max) + 1, dtype=float)
    ax = get_ax(ax)
    for i, (label, m) in enumerate(fitted.items()):
        draws = _thinned(np.asarray(m.retention_rate(t).values), n_draws)
        _curve(ax, t, draws, color=MODEL_COLORS[i % len(MODEL_COLORS)], label=label, prob=prob)
    if emp is not None:
        shown = emp[(emp.index >= 1) & (emp["at_risk"] >= min_at_risk)]
        if len(shown):
            size = 8 + 40 * np.sqrt(shown["at_risk"] / shown["at_risk"].max())
            ax.scatter(shown.index, shown["retention"], s=size, color=OBSERVED_COLOR, zorder=3,
                       label=f"actual (dot size: subscribers at risk, >= {min_at_risk})")  # fmt: skip
    period = (table.attrs.get("period") if table is not None else None) or None
    ax.set_xlabel(f"tenure t, the due date of the t-th renewal ({_period_text(period)})")
    ax.set_ylabel("retention rate r(t)")
    ax.set_xlim(0.5, t_max + 0.5)
    ax.set_title(title or "Retention rate by tenure")
    ax.legend(frameon=False, fontsize="small")
    return ax


def _segment_rows(forecast: Any, grouping: str, segment: Any) -> pd.DataFrame:
    """The rows ``k = 1..K`` of one segment from SubscriberScores or a cohorts table."""
    cohorts = getattr(forecast, "cohorts", None)
    if cohorts is not None:
        if grouping not in cohorts:
            raise ValueError(f"No cohort table {grouping!r}; available: {list(cohorts)}.")
        table = cohorts[grouping]
        seg = table.index.get_level_values(0)
        if segment not in set(seg):
            raise ValueError(
                f"No segment {segment!r} in {grouping!r}; have {list(dict.fromkeys(seg))}."
            )
        return table.xs(segment, level=0).reset_index()
    if not isinstance(forecast, pd.DataFrame):
        raise TypeError(f"Expected SubscriberScores or a DataFrame, got {type(forecast).__name__}.")
    table = forecast
    if {"grouping", "group"} <= set(table.columns):
        table = table[
            (table["grouping"] == grouping) & (table["group"].astype(str) == str(segment))
        ]
        if table.empty:
            raise ValueError(f"No rows for grouping {grouping!r}, group {segment!r}.")
    if "k" not in table.columns:
        table = table.reset_index()
    return table.sort_values("k")


def plot_renewal_forecast(
    forecast: Any,
    quantity: str = "revenue",
    *,
    grouping: str = "all",
    segment: Any = "all",
    prob: float | None = None,
    currency: str = "",
    title: str | None = None,
    ax=None,
):
    """Renewal revenue (or subscribers still active) per future period, with both intervals.

    Parameters
    ----------
    forecast : SubscriberScores or DataFrame
        :func:`clvbayes.predict.retention.score_subscribers`'s result (its ``cohorts``), or
        a table with ``k`` and ``{quantity}_mean/_ci_lower/_ci_upper/_pi_lower/_pi_upper``
        (the report's ``cohorts`` table, filtered by ``grouping`` and ``group`` columns when
        it has them).
    quantity : {"revenue", "active"}
        Renewal revenue of period ``k`` (price x margin of the subscribers who renew at
        their ``k``-th next due date) or the subscribers still active after ``k`` renewals.
    grouping, segment : str
        Which table and row: ``"all"``/``"all"`` (the whole base) or e.g. ``"plan"``/``"basic"``.
    prob : float, optional
        The intervals' probability for the legend (default: the forecast's settings, else 0.9).
    currency : str
        Unit text for the y axis (e.g. ``"EUR"``).
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    if quantity not in ("revenue", "active"):
        raise ValueError(f"quantity must be 'revenue' or 'active', got {quantity!r}.")
    rows = _segment_rows(forecast, grouping, segment)
    cols = [f"{quantity}_{s}" for s in ("mean", "ci_lower", "ci_upper", "pi_lower", "pi_upper")]
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        hint = (
            " (no price column: revenue needs a price per period)" if quantity == "revenue" else ""
        )
        raise ValueError(f"Columns {missing} not in the forecast{hint}.")
    if prob is None:
        prob = float((getattr(forecast, "settings", None) or {}).get("prob", 0.9))
    k = rows["k"].to_numpy(dtype=float)
    mean, cl, cu, pl, pu = (rows[c].to_numpy(dtype=float) for c in cols)
    ax = get_ax(ax)
    ax.fill_between(k, pl, pu, color="C0", alpha=PI_ALPHA, linewidth=0, step="mid",
                    label=f"{prob:.0%} predictive interval (what will be observed)")  # fmt: skip
    if np.isfinite(cl).any():
        ax.fill_between(k, cl, cu, color="C0", alpha=CI_ALPHA, linewidth=0, step="mid",
                        label=f"{prob:.0%} credible interval of the expectation")  # fmt: skip
    ax.plot(k, mean, "o-", color="C0", markersize=3.5, label="expected")
    what = "renewal revenue" if quantity == "revenue" else "subscribers still active"
    unit = f" ({currency})" if currency and quantity == "revenue" else ""
    ax.set_xlabel("future period k (the k-th next due date of each subscriber)")
    ax.set_ylabel(f"{what}{unit}")
    where = "" if segment == "all" else f": {grouping} {segment}"
    ax.set_title(title or f"Forecast {what} per period{where}")
    ax.legend(frameon=False, fontsize="small")
    return ax


def plot_holdout_survivors(
    holdout: pd.DataFrame,
    *,
    group: str = "all",
    prob: float = 0.9,
    title: str | None = None,
    ax=None,
):
    """Projected against actual survivors in a holdout: each model's refit on the earlier data.

    Parameters
    ----------
    holdout : DataFrame
        One row per (model, k) -- the ``holdout`` table of a ``clvbayes subscriptions``
        report: ``model`` (label), ``k`` (periods after the holdout start), ``actual_active``
        (subscribers active at the holdout start who renewed ``k`` more times),
        ``active_mean``, ``active_ci_lower/upper``, ``active_pi_lower/upper`` and, with
        several fit groups, ``fit_group`` (``group`` selects one; ``"all"`` the total).
        Rows with ``complete`` False (some outcomes not yet observed) are drawn hollow.
    group : str
        The ``fit_group`` to draw.
    prob : float
        Probability of the intervals (legend).
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    table = holdout
    if "fit_group" in table.columns:
        table = table[table["fit_group"].astype(str) == str(group)]
        if table.empty:
            raise ValueError(f"No holdout rows for fit_group {group!r}.")
    ax = get_ax(ax)
    width = 0.35
    models = list(dict.fromkeys(table["model"]))
    for i, (label, rows) in enumerate(table.groupby("model", sort=False)):
        rows = rows.sort_values("k")
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        x = rows["k"].to_numpy(dtype=float) + (i - (len(models) - 1) / 2) * width / 2
        mean = rows["active_mean"].to_numpy(dtype=float)
        pl, pu = rows["active_pi_lower"].to_numpy(float), rows["active_pi_upper"].to_numpy(float)
        ax.errorbar(x, mean, yerr=[np.maximum(mean - pl, 0), np.maximum(pu - mean, 0)], fmt="none",
                    ecolor=color, elinewidth=1, capsize=4, alpha=0.8,
                    label=f"{label}: {prob:.0%} predictive interval")  # fmt: skip
        cl, cu = rows["active_ci_lower"].to_numpy(float), rows["active_ci_upper"].to_numpy(float)
        if np.isfinite(cl).any():
            ax.errorbar(x, mean, yerr=[np.maximum(mean - cl, 0), np.maximum(cu - mean, 0)],
                        fmt="none", ecolor=color, elinewidth=4, alpha=0.6,
                        label=f"{label}: {prob:.0%} credible interval")  # fmt: skip
        ax.plot(x, mean, "s", color=color, markersize=4, label=f"{label}: projected")
    first = table.drop_duplicates("k").sort_values("k")
    complete = (
        first["complete"].to_numpy(bool) if "complete" in first else np.ones(len(first), bool)
    )
    k = first["k"].to_numpy(dtype=float)
    actual = first["actual_active"].to_numpy(dtype=float)
    ax.plot(k[complete], actual[complete], "o", color=OBSERVED_COLOR, markersize=6, label="actual")
    if (~complete).any():
        ax.plot(k[~complete], actual[~complete], "o", mfc="none", color=OBSERVED_COLOR,
                markersize=6, label="actual so far (some renewals not yet due)")  # fmt: skip
    ax.set_xticks(k)
    ax.set_xlabel("periods after the holdout start (k)")
    ax.set_ylabel("subscribers still active")
    where = "" if group == "all" else f" ({group})"
    ax.set_title(title or f"Holdout: projected vs actual survivors{where}")
    ax.legend(frameon=False, fontsize="small")
    return ax
