"""Building the report tables: ``customers`` (one row per customer) and ``segments``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.schema import (
    OPPORTUNITIES,
    RESERVED_NAMES,
    SCHEMA,
    _as_string,
    _canonical_input,
    _cast,
    column_applies,
)
from clvbayes.segments import (
    LABEL_COLUMNS,
    OTHERS,
    PURCHASE_ONLY_RULES,
    SEGMENT_RULES,
    label_customers,
)


def customer_table(
    rfm: pd.DataFrame,
    predictions: Any,
    *,
    labels: pd.DataFrame | None = None,
    group_cols: Sequence[str] = (),
    cac: float | None = None,
) -> pd.DataFrame:
    """The ``customers`` report table: one row per customer, columns as in :data:`SCHEMA`.

    Parameters
    ----------
    rfm : DataFrame
        The calibration RFM table (index = customer ids), e.g. from
        :func:`clvbayes.data.calibration_holdout_split`; holdout columns are carried over
        when present, and so are the ``group_cols``.  A discrete-time table
        (``attrs["time_unit"] == "opportunities"``, from
        :func:`clvbayes.data.discrete.summarize_opportunities`) gives a discrete-time
        report: ``periods`` and ``first_opportunity`` instead of ``T`` and
        ``first_purchase``.
    predictions : CustomerScores or DataFrame
        :func:`clvbayes.predict.score_customers` output (or its ``customers`` table), in
        the same customer order.  Without ``clv_mean`` (no spend model) the table has no
        value columns (``monetary_value``, ``m_score``, spend, revenue, CLV, CLV decile,
        churn risk): see :mod:`clvbayes.report.schema`.
    labels : DataFrame, optional
        Segment labels (:func:`clvbayes.segments.label_customers`); computed when absent.
    group_cols : sequence of str
        Input columns of ``rfm`` to carry (ints, floats and bools keep their type, other
        values become text).
    cac : float, optional
        Customer acquisition cost (currency); adds ``clv_to_cac``.

    Returns
    -------
    DataFrame
        RangeIndex, columns in schema order, dtypes as in :data:`PANDAS_DTYPES`.
    """
    pred = getattr(predictions, "customers", predictions)
    if len(pred) != len(rfm) or not pred.index.equals(rfm.index):
        pred = pred.reindex(rfm.index)
    grid = "discrete" if rfm.attrs.get("time_unit") == OPPORTUNITIES else "continuous"
    spend = "clv_mean" in pred.columns
    if labels is None:
        if spend:
            labels = label_customers(rfm.join(pred[["p_alive_mean", "clv_mean"]]))
        else:
            labels = label_customers(rfm.join(pred[["p_alive_mean"]]), clv_col=None)
    labels = labels.reindex(rfm.index)
    bad = [c for c in group_cols if c in RESERVED_NAMES]
    if bad:
        raise ValueError(f"group column(s) {bad} clash with report column names; rename them.")
    source = {**{c: rfm[c] for c in rfm.columns},
              **{c: labels[c] for c in LABEL_COLUMNS if c in labels.columns},
              **{c: pred[c] for c in pred.columns}}  # fmt: skip
    if cac is not None:
        if not spend:
            raise ValueError("cac needs CLV (clv_mean), which needs a spend model.")
        if not (np.isfinite(cac) and cac > 0):
            raise ValueError(f"cac must be a positive amount, got {cac!r}.")
        source["clv_to_cac"] = pred["clv_mean"] / float(cac)
    out: dict[str, pd.Series] = {}
    for col in SCHEMA["customers"]:
        if not column_applies(col, grid, spend):
            continue
        if col.name == "customer_id":
            out["customer_id"] = _as_string(rfm.index.to_series(index=rfm.index))
        elif col.name in source:
            out[col.name] = _cast(source[col.name], col.dtype)
        elif col.required:
            raise ValueError(f"customer_table: no data for required column {col.name!r}.")
        if col.name == "segment":
            for g in group_cols:
                out[g] = _canonical_input(rfm[g])
    table = pd.DataFrame({k: v.to_numpy() for k, v in out.items()})
    for k, v in out.items():  # to_numpy() may lose the text dtype
        if table[k].dtype != v.dtype:
            table[k] = table[k].astype(v.dtype)
    return table


def _sorted_labels(index: pd.Index, grouping: str) -> np.ndarray:
    """Row order of one grouping: rule order for named segments, else natural order, NaN last."""
    if grouping == "segment":
        # rule order; "active" (runs without CLV) where "best" and "at_risk" would be
        rules = list(SEGMENT_RULES)
        names = [*rules[:2], *PURCHASE_ONLY_RULES, *rules[2:]]
        rank = {name: i for i, name in enumerate([*dict.fromkeys(names), OTHERS])}
        return np.argsort([rank.get(v, len(rank)) for v in index], kind="stable")
    positions = pd.Series(np.arange(len(index)), index=index)
    try:
        return positions.sort_index(kind="stable", na_position="last").to_numpy()
    except TypeError:  # mixed types: sort as text
        keys = pd.Series([str(v) for v in index], index=np.arange(len(index)))
        keys[index.isna()] = np.nan
        return keys.sort_values(kind="stable", na_position="last").index.to_numpy()


def segment_table(
    segments: Mapping[str, pd.DataFrame], *, cac: float | None = None
) -> pd.DataFrame:
    """The ``segments`` report table: ``score_customers(...).segments`` stacked long.

    Parameters
    ----------
    segments : mapping of str to DataFrame
        ``CustomerScores.segments``: ``"all"`` and one table per grouping column.
    cac : float, optional
        Customer acquisition cost; adds ``clv_to_cac`` (and its interval) per segment.

    Returns
    -------
    DataFrame
        Columns ``grouping``, ``group`` (text), then the segment quantities of
        :data:`SCHEMA`; ``all`` first, then the groupings in the order given.
    """
    parts = []
    for grouping, df in segments.items():
        order = _sorted_labels(df.index, grouping)
        df = df.iloc[order]
        part = df.reset_index(drop=True)
        part.insert(0, "group", _as_string(pd.Series(df.index, dtype=object)))
        part.insert(0, "grouping", grouping)
        parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    spend = "clv_total_mean" in long.columns
    if cac is not None:
        if not spend:
            raise ValueError("cac needs CLV totals (clv_total_mean), which need a spend model.")
        if not (np.isfinite(cac) and cac > 0):
            raise ValueError(f"cac must be a positive amount, got {cac!r}.")
        long["clv_to_cac"] = long["clv_per_customer_mean"] / cac
        long["clv_to_cac_ci_lower"] = long["clv_per_customer_ci_lower"] / cac
        long["clv_to_cac_ci_upper"] = long["clv_per_customer_ci_upper"] / cac
    out = {}
    for col in SCHEMA["segments"]:
        if col.needs == "spend" and not spend:  # no spend model: no revenue or CLV columns
            continue
        if col.name in long.columns:
            out[col.name] = _cast(long[col.name], col.dtype)
        elif col.required:
            raise ValueError(f"segment_table: no data for required column {col.name!r}.")
    table = pd.DataFrame(out)
    return table
