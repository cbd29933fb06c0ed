"""Rules of thumb for customer value, to hold against the models in a backtest.

Every business that has no model uses one of these; :mod:`clvbayes.backtest` runs them
through the same calibration/holdout windows as the models, so a report can say, on the
user's own history, how far each rule was from what the customers then did.  Each rule
predicts, per customer, the **repeat purchases and their value in the next ``horizon``**
(the holdout) from data up to the calibration end only.  None of them has an interval:
they are point forecasts, which is much of their trouble.

Inputs are the data layer's summaries, so the rules see the same cleaned, same-day merged
transactions as the models:

* ``current``: the calibration summary at the calibration end ``c``
  (:func:`clvbayes.data.calibration_holdout_split`: ``frequency``, ``recency``, ``T``,
  ``monetary_value``, in the table's time unit);
* ``previous``: the split at ``c - horizon`` with holdout ``(c - horizon, c]``, i.e. the
  *last calibration period* of the holdout's length played as a holdout: its
  ``frequency_holdout`` and ``total_value_holdout`` are what each customer (first seen by
  ``c - horizon``) did in it.  ``None`` when the calibration is not longer than
  ``horizon``; the rules that need it are then NaN and :func:`baseline_notes` says why.

The rules (``h`` = ``horizon``, ``x`` = repeat purchases, ``T`` = time since the first
purchase, ``m`` = mean repeat-purchase value):

``aov_frequency``
    "Average order value x purchase frequency x years": each customer keeps buying at the
    rate of their own past, ``x / T`` repeat purchases per time unit (0 when ``T = 0``),
    each worth their average order value ``m``: purchases ``h x / T``, value ``h x m / T``.
``historical``
    "Historical value": the next period repeats the last one; each customer's repeat
    purchases and value in ``(c - h, c]``.
``rfm_cell``
    RFM-cell averages: customers are scored into RFM quintile cells
    (:func:`clvbayes.segments.rfm_scores`) at ``c - h``; the average of what each cell then
    did in ``(c - h, c]`` is the forecast for every customer in that cell at ``c``
    (customers in a cell not seen at ``c - h`` get the overall average).
``churn_rate``
    The churn-rate lifetime formula, ``value = m_p / churn`` for an infinite horizon, i.e.
    ``m_p sum_t r^t`` with retention ``r = 1 - churn`` per period of length ``h``:
    ``r`` is the share of customers active (any transaction) in ``(c - 2h, c - h]`` who
    were active again in ``(c - h, c]``; ``m_p`` is the average repeat purchases (value)
    per period of a customer active in the last period.  Over one period (the holdout),
    each customer active in ``(c - h, c]`` is predicted ``r m_p``, everyone else 0.  The
    rule takes a customer with no transaction in the last period for lost, so where
    customers buy sporadically (CDNOW) it under-predicts: many holdout buyers were quiet in
    the last period.

References: Gupta & Lehmann (2003), "Customers as assets", J. Interactive Marketing 17(1)
(the ``m r / (1 + d - r)`` retention formula); Fader, Hardie & Lee (2005), "RFM and CLV",
J. Marketing Research 42(4), 415-430 (RFM cells against a model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["RULES", "RULE_NAMES", "baseline_notes", "baseline_predictions"]

#: Rule keys, in report order.
RULES = ("aov_frequency", "historical", "rfm_cell", "churn_rate")
#: How the report names them.
RULE_NAMES = {
    "aov_frequency": "average order value x purchase frequency x time",
    "historical": "historical value (the last period repeated)",
    "rfm_cell": "RFM-cell averages",
    "churn_rate": "churn-rate lifetime formula (m r per period, m / churn in the limit)",
}


def _aov_frequency(current: pd.DataFrame, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    x = current["frequency"].to_numpy(float)
    T = current["T"].to_numpy(float)
    rate = np.divide(x, T, out=np.zeros_like(x), where=T > 0)
    purchases = rate * horizon
    return purchases, purchases * _repeat_value(current)


def _repeat_value(table: pd.DataFrame) -> np.ndarray:
    if "monetary_value" not in table.columns:
        return np.full(len(table), np.nan)
    return table["monetary_value"].to_numpy(float)


def _last_period(current: pd.DataFrame, previous: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Repeat purchases and their value in (c - h, c] of every customer of ``current``.

    Customers first seen by ``c - h`` have them in ``previous``'s holdout columns; those
    first seen later made all their repeat purchases in it (``current``'s own)."""
    prev = previous.reindex(current.index)
    seen = prev["frequency"].notna().to_numpy()
    x = current["frequency"].to_numpy(float)
    value = x * np.nan_to_num(_repeat_value(current))
    purchases = np.where(seen, prev["frequency_holdout"].to_numpy(float), x)
    if "total_value_holdout" in prev.columns:
        values = np.where(seen, prev["total_value_holdout"].to_numpy(float), value)
    else:
        values = np.full(len(current), np.nan)
    return purchases, values


def _rfm_cell(current: pd.DataFrame, previous: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from clvbayes.segments import rfm_scores

    train = rfm_scores(previous)["rfm_code"]
    target = pd.DataFrame(
        {"purchases": previous["frequency_holdout"].to_numpy(float),
         "revenue": (previous["total_value_holdout"].to_numpy(float)
                     if "total_value_holdout" in previous.columns else np.nan)},
        index=previous.index,
    )  # fmt: skip
    means = target.groupby(train.to_numpy()).mean()
    overall = target.mean()
    cells = rfm_scores(current)["rfm_code"].to_numpy()
    out = means.reindex(cells)
    return (
        out["purchases"].fillna(overall["purchases"]).to_numpy(float),
        out["revenue"].fillna(overall["revenue"]).to_numpy(float),
    )


def churn_retention(previous: pd.DataFrame, period: float) -> dict[str, float]:
    """Retention per period and the per-period value of an active customer (``churn_rate``).

    Active in ``(c - 2p, c - p]``: the last transaction before ``c - p`` lies less than
    ``p`` before it (``T - recency < p`` in ``previous``' calibration summary, whose
    calibration ends at ``c - p``).  Active again in ``(c - p, c]``: a holdout purchase.
    """
    gap = previous["T"].to_numpy(float) - previous["recency"].to_numpy(float)
    before = gap < period
    again = previous["frequency_holdout"].to_numpy() > 0
    n_before = int(before.sum())
    retention = float((before & again).sum() / n_before) if n_before else float("nan")
    per_period = previous.loc[again]
    value = (float(per_period["total_value_holdout"].mean())
             if "total_value_holdout" in previous.columns and len(per_period) else float("nan"))  # fmt: skip
    return {
        "retention": retention,
        "churn": 1.0 - retention,
        "n_active_before": n_before,
        "purchases_per_active_period": float(per_period["frequency_holdout"].mean())
        if len(per_period)
        else float("nan"),
        "value_per_active_period": value,
    }


def _churn_rate(
    current: pd.DataFrame, previous: pd.DataFrame, horizon: float
) -> tuple[np.ndarray, np.ndarray]:
    r = churn_retention(previous, horizon)
    active = (current["T"].to_numpy(float) - current["recency"].to_numpy(float)) < horizon
    # m_p sum_{t=1}^{n} r^t with n = horizon / period = 1 period
    factor = r["retention"]
    return (
        np.where(active, factor * r["purchases_per_active_period"], 0.0),
        np.where(active, factor * r["value_per_active_period"], 0.0),
    )


def baseline_predictions(
    current: pd.DataFrame, previous: pd.DataFrame | None, horizon: float
) -> pd.DataFrame:
    """Every rule's forecast of each customer's repeat purchases and value in the next ``horizon``.

    Parameters
    ----------
    current : DataFrame
        Calibration summary at the calibration end (``frequency``, ``recency``, ``T`` and
        ``monetary_value``; time unit of the table), one row per customer.
    previous : DataFrame or None
        The split at ``calibration end - horizon`` whose holdout ends at the calibration end
        (see the module docstring), or None when the calibration is too short for one.
    horizon : float
        Length of the forecast period (the holdout), in the tables' time unit.

    Returns
    -------
    DataFrame
        ``current``'s index; columns ``{rule}_purchases`` and ``{rule}_revenue`` for every
        rule of :data:`RULES` (float64; NaN where the rule cannot be computed: ``rfm_cell``
        and ``churn_rate`` without ``previous``, revenue without amounts).
    """
    if not horizon > 0:
        raise ValueError(f"horizon must be positive, got {horizon!r}.")
    n = len(current)
    nan = np.full(n, np.nan)
    out: dict[str, np.ndarray] = {}
    out["aov_frequency_purchases"], out["aov_frequency_revenue"] = _aov_frequency(current, horizon)
    if previous is not None and len(previous):
        out["historical_purchases"], out["historical_revenue"] = _last_period(current, previous)
        out["rfm_cell_purchases"], out["rfm_cell_revenue"] = _rfm_cell(current, previous)
        out["churn_rate_purchases"], out["churn_rate_revenue"] = _churn_rate(
            current, previous, horizon
        )
    else:
        for rule in RULES[1:]:
            out[f"{rule}_purchases"], out[f"{rule}_revenue"] = nan.copy(), nan.copy()
    return pd.DataFrame(out, index=current.index)


def baseline_notes(previous: pd.DataFrame | None, horizon: float, unit: str) -> list[str]:
    """Why some rules are missing, in words (empty when all could be computed)."""
    if previous is not None and len(previous):
        return []
    return [
        f"rules historical, rfm_cell and churn_rate need a calibration period longer than the "
        f"holdout ({horizon:g} {unit}), to play its last {horizon:g} {unit} as a holdout; "
        "this window's is not, so they are empty"
    ]
