"""Discrete-time summaries: a transaction log on an explicit grid of purchase opportunities.

Some customers can act only at discrete opportunities: an annual fund-raising appeal, a yearly
conference, a weekly draw.  The BG/BB model (Fader, Hardie & Shang 2010, Marketing Science
29(6)) describes each customer by three whole numbers, counted on the opportunity grid:

``frequency``
    ``x``, repeat transactions: opportunities after the first one with a transaction;
``recency``
    ``t_x``, the opportunity of the last of them, counted from the first transaction's
    opportunity (0 if ``x = 0``);
``periods``
    ``n``, opportunities from the first transaction's to the last calibration opportunity.

so ``0 <= x <= t_x <= n``.  The grid is always given explicitly (nothing here guesses it): a
calendar grid (``"year"``, ``"quarter"``, ``"month"``, ``"week"``: weeks run Monday to
Sunday) or a list of opportunity dates (e.g. campaign dates; opportunity ``k`` runs from
date ``k`` up to the day before date ``k + 1``, the last one open-ended).  Several
transactions of a customer in one opportunity count as one; how many were merged is in
``attrs``.

- :func:`summarize_opportunities` builds the table (with a holdout split on the same grid);
- :func:`validate_discrete_rfm` checks a table that did not come from us, and accepts the
  compressed form (one row per distinct history with a ``weights`` column), which it
  expands to one row per customer.

Imports neither PyMC nor PyTensor.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.data.rfm import _count_first_last, _handle_duplicates, _occasions, _prepare
from clvbayes.data.validation import (
    _first_ids,
    _first_positions,
    _quote_list,
    _row_error,
    require_columns,
    resolve_end,
)
from clvbayes.errors import DataError, DataWarning

__all__ = ["GRIDS", "summarize_opportunities", "validate_discrete_rfm"]

GRIDS: dict[str, str] = {"year": "Y", "quarter": "Q", "month": "M", "week": "W-SUN"}
"""Calendar opportunity grids and their pandas period frequencies (weeks end on Sunday)."""

TIME_UNIT = "opportunities"
HISTORY_COLUMNS = ("frequency", "recency", "periods")


# ---------------------------------------------------------------------------------------
# the opportunity grid
def _explicit_grid(grid: Sequence[Any]) -> pd.DatetimeIndex:
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(list(grid)))
    except (ValueError, TypeError) as err:
        raise DataError(
            f"The opportunity dates could not be read as dates ({err}); pass dates such as "
            "['2020-03-01', '2021-03-01'] or a calendar grid name "
            f"({_quote_list(list(GRIDS))})."
        ) from err
    if len(dates) == 0:
        raise DataError("The list of opportunity dates is empty; pass at least one date.")
    if dates.isna().any():
        bad = np.flatnonzero(np.asarray(dates.isna()))
        raise DataError(
            f"The opportunity dates have missing values at positions {bad[:5].tolist()}; drop them."
        )
    if dates.tz is not None:
        raise DataError(
            "The opportunity dates are timezone-aware; pass calendar dates without a zone "
            "(opportunities start at midnight of the data's wall clock)."
        )
    if dates.normalize().equals(dates) is False:
        raise DataError(
            "The opportunity dates must be calendar dates (midnight), not times of day; "
            f"got e.g. {dates[~(dates == dates.normalize())][0]}."
        )
    steps = np.diff(dates.asi8)
    if (steps <= 0).any():
        k = int(np.flatnonzero(steps <= 0)[0])
        raise DataError(
            "The opportunity dates must be strictly increasing (each one starts an "
            f"opportunity that runs until the next); date {k + 1} ({dates[k + 1].date()}) "
            f"is not after date {k} ({dates[k].date()}). Sort them and drop repeats."
        )
    return dates


def _opportunity_of(days: np.ndarray, grid: str | Sequence[Any], explicit) -> np.ndarray:
    """Opportunity number (int64) of each day (days since 1970-01-01, wall clock)."""
    if explicit is None:
        dt = pd.DatetimeIndex(days.astype("datetime64[D]"))
        return np.asarray(dt.to_period(GRIDS[grid]).asi8, dtype=np.int64)
    starts = explicit.asi8 // 86_400_000_000_000 if explicit.unit == "ns" else (
        explicit.as_unit("ns").asi8 // 86_400_000_000_000
    )  # fmt: skip
    return np.searchsorted(starts, days, side="right").astype(np.int64) - 1


def _label(opp: int, grid: str | Sequence[Any], explicit) -> str:
    if explicit is None:
        return str(pd.Period(ordinal=int(opp), freq=GRIDS[grid]))
    return str(explicit[int(opp)].date())


def _start(opp: np.ndarray, grid: str | Sequence[Any], explicit) -> pd.DatetimeIndex:
    if explicit is None:
        return pd.PeriodIndex.from_ordinals(opp, freq=GRIDS[grid]).to_timestamp(how="start")
    return pd.DatetimeIndex(explicit[opp])


def _end_opportunity(value: Any, name: str, p, grid, explicit) -> int:
    _, ticks = resolve_end(value, p.tx, name)
    day = np.array([ticks // p.tx.ticks_per_day], dtype=np.int64)
    return int(_opportunity_of(day, grid, explicit)[0])


# ---------------------------------------------------------------------------------------
# transaction log -> discrete summary
def summarize_opportunities(
    transactions: pd.DataFrame,
    grid: str | Sequence[Any],
    *,
    calibration_end: Any = None,
    observation_end: Any = None,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    datetime_format: str | None = None,
    duplicate_rows: str = "warn",
    outlying_dates: str = "error",
    monetary_value_col: str | None = None,
    negative_amounts: str = "error",
) -> pd.DataFrame:
    """Summarise a transaction log into one discrete-time (BG/BB) row per customer.

    Parameters
    ----------
    transactions : DataFrame
        One row per transaction (see :func:`~clvbayes.data.read_transactions` for files).
        Validated exactly as by :func:`~clvbayes.data.summarize_transactions` (ids, dates,
        duplicate rows, outlying dates); times of day are ignored (a transaction belongs to
        the opportunity of its calendar day, wall clock for tz-aware data).
    grid : {"year", "quarter", "month", "week"} or sequence of dates
        The opportunity grid: calendar periods (weeks Monday to Sunday), or the start dates
        of the opportunities, strictly increasing (opportunity ``k`` runs from date ``k``
        to the day before date ``k + 1``; the last one is open-ended).
    calibration_end : date-like, optional
        A date in the last calibration opportunity (default: the opportunity of the last
        transaction, and no holdout).
    observation_end : date-like, optional
        A date in the last holdout opportunity (default: the last transaction's); only
        with ``calibration_end``.  Transactions after that opportunity are refused.
    customer_id_col, datetime_col, datetime_format, duplicate_rows, outlying_dates
        As in :func:`~clvbayes.data.summarize_transactions`.
    monetary_value_col : str, optional
        Column with the transaction value; adds ``monetary_value``: the mean value of the
        repeat *opportunities* in the calibration period (the amounts of an opportunity's
        transactions added up, the first opportunity left out; 0 when ``frequency`` is 0),
        as the Gamma-Gamma spend model expects.
    negative_amounts : {"error", "drop", "keep"}
        As in :func:`~clvbayes.data.summarize_transactions` (with ``monetary_value_col``).

    Returns
    -------
    DataFrame
        Index: customer ids (named ``customer_id_col``), sorted; customers whose first
        transaction is after the calibration period are left out (counted in ``attrs``).
        Columns ``frequency``, ``recency``, ``periods`` (int64, in opportunities, see the
        module docstring), ``first_opportunity`` (datetime64, start of the first
        transaction's opportunity) and, with a holdout, ``frequency_holdout`` (int64,
        opportunities with a transaction after the calibration period) and
        ``periods_holdout`` (int64, the holdout opportunities, the same for everyone).
        ``attrs``: ``time_unit = "opportunities"``, ``opportunity_grid`` (the name, or
        ``"explicit"`` with ``opportunity_dates``), ``calibration_end`` and
        ``observation_end`` (labels of the last calibration and holdout opportunities),
        ``n_transactions`` (input rows), ``n_occasions`` (distinct customer-opportunity
        pairs), ``n_transactions_merged`` (rows merged into an opportunity that already
        had one: ``n_transactions - n_occasions``), ``n_customers``,
        ``n_customers_first_seen_in_holdout``, ``n_customers_periods0`` (first transaction
        in the last calibration opportunity, ``n = 0``), ``n_duplicate_rows`` (and
        ``_dropped``), ``n_outlying_date_rows`` (and ``_dropped``).

    Warns
    -----
    DataWarning
        When customers make their first transaction in the holdout period (they are not in
        the calibration cohort and are left out), and as in ``summarize_transactions``.

    Raises
    ------
    DataError
        For invalid transactions, an unknown grid or unusable opportunity dates,
        transactions before the first opportunity date or after ``observation_end``'s
        opportunity, a ``calibration_end`` before the first transaction's opportunity, an
        ``observation_end`` not after it, or ``observation_end`` without
        ``calibration_end``.

    Examples
    --------
    >>> tx = pd.DataFrame({"customer_id": ["a", "a", "a", "b"],
    ...                    "date": ["2020-03-01", "2020-06-01", "2022-05-01", "2021-01-05"]})
    >>> summarize_opportunities(tx, "year")[["frequency", "recency", "periods"]]  # doctest: +NORMALIZE_WHITESPACE
                 frequency  recency  periods
    customer_id
    a                    1        2        2
    b                    0        0        1
    """
    explicit = None
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise DataError(
                f"Unknown opportunity grid {grid!r}; use one of {_quote_list(list(GRIDS))} "
                "or pass the opportunity start dates as a list (e.g. campaign dates)."
            )
    else:
        explicit = _explicit_grid(grid)
    if observation_end is not None and calibration_end is None:
        raise DataError(
            "observation_end was given without calibration_end; a holdout period needs both "
            "(pass calibration_end, a date in the last calibration opportunity)."
        )
    p = _prepare(
        transactions, customer_id_col=customer_id_col, datetime_col=datetime_col,
        monetary_value_col=monetary_value_col, time_unit="days", datetime_format=datetime_format,
        merge_same_day=True, negative_amounts=negative_amounts, duplicate_rows=duplicate_rows,
        outlying_dates=outlying_dates,
    )  # fmt: skip
    opp = _opportunity_of(p.times, grid, explicit)
    if explicit is not None and (opp < 0).any():
        raise _row_error(
            f"transactions before the first opportunity date {explicit[0].date()}",
            datetime_col, opp < 0, p.tx.ids,
            "Add an earlier opportunity date, or drop those rows first.", p.tx.rows,
        )  # fmt: skip
    first_opp, last_opp = int(opp.min()), int(opp.max())
    end = last_opp
    if observation_end is not None:
        end = _end_opportunity(observation_end, "observation_end", p, grid, explicit)
        after = opp > end
        if after.any():
            raise _row_error(
                f"transactions after the opportunity of observation_end "
                f"({_label(end, grid, explicit)})", datetime_col, after, p.tx.ids,
                "Pass a later observation_end (it defaults to the last transaction's "
                "opportunity), or drop those rows first.", p.tx.rows,
            )  # fmt: skip
    cal = end
    if calibration_end is not None:
        cal = _end_opportunity(calibration_end, "calibration_end", p, grid, explicit)
        if cal < first_opp:
            raise DataError(
                f"calibration_end {calibration_end!r} falls in opportunity "
                f"{_label(cal, grid, explicit)}, before the first transaction's "
                f"({_label(first_opp, grid, explicit)}); pick a later calibration_end."
            )
        if observation_end is None:
            end = max(last_opp, cal)
        if cal >= end:
            raise DataError(
                f"calibration_end {calibration_end!r} falls in opportunity "
                f"{_label(cal, grid, explicit)}, which is not before the last "
                f"{'observation_end' if observation_end is not None else 'transaction'}"
                f" opportunity ({_label(end, grid, explicit)}): the holdout period is "
                "empty. Pick an earlier calibration_end, or leave it out for no holdout."
            )

    q = dataclasses.replace(p, times=opp)
    occ_code, occ_opp = _occasions(q)
    _handle_duplicates(q, transactions, occ_code.size, duplicate_rows)
    in_cal = occ_opp <= cal
    count, first, last = _count_first_last(occ_code[in_cal], occ_opp[in_cal], p.n_customers)
    cohort = count > 0
    n_new = int(p.n_customers - np.count_nonzero(cohort))
    index = p.index[cohort]
    index.name = customer_id_col
    first_c = first[cohort]
    df = pd.DataFrame(
        {
            "frequency": (count[cohort] - 1).astype(np.int64),
            "recency": (last[cohort] - first_c).astype(np.int64),
            "periods": (cal - first_c).astype(np.int64),
            "first_opportunity": np.asarray(_start(first_c, grid, explicit)),
        },
        index=index,
    )
    if monetary_value_col is not None:
        # repeat value: amounts in calibration opportunities after the first one
        repeat = (opp > first[p.codes]) & (opp <= cal)
        value = np.bincount(p.codes, weights=np.where(repeat, p.tx.amounts, 0.0),
                            minlength=p.n_customers)[cohort]  # fmt: skip
        x = df["frequency"].to_numpy()
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            df["monetary_value"] = np.where(x > 0, value / np.maximum(x, 1), 0.0)
        if not np.isfinite(df["monetary_value"]).all():
            raise DataError(
                f"Column {monetary_value_col!r}: some customers' amounts add up beyond the "
                "range of floating-point numbers; check the amounts for corrupt values, or "
                "rescale them (e.g. to thousands)."
            )
    holdout = calibration_end is not None
    if holdout:
        hold = np.bincount(occ_code[~in_cal], minlength=p.n_customers)[cohort]
        df["frequency_holdout"] = hold.astype(np.int64)
        df["periods_holdout"] = np.full(len(df), end - cal, dtype=np.int64)
    df.attrs.update(
        time_unit=TIME_UNIT,
        opportunity_grid=grid if explicit is None else "explicit",
        calibration_end=_label(cal, grid, explicit),
        observation_end=_label(end, grid, explicit),
        n_transactions=p.tx.n_input_rows,
        n_occasions=int(occ_code.size),
        n_transactions_merged=int(q.codes.size - occ_code.size),
        n_customers=int(np.count_nonzero(cohort)),
        n_customers_first_seen_in_holdout=n_new,
        n_customers_periods0=int(np.count_nonzero(df["periods"].to_numpy() == 0)),
        n_duplicate_rows=q.n_duplicate_rows,
        n_duplicate_rows_dropped=q.n_duplicate_rows_dropped,
        n_outlying_date_rows=p.tx.n_outlying_date_rows,
        n_outlying_date_rows_dropped=p.tx.n_outlying_date_rows_dropped,
    )
    if explicit is not None:
        df.attrs["opportunity_dates"] = [str(d.date()) for d in explicit]
    if holdout:
        df.attrs["n_periods_holdout"] = int(end - cal)
    if n_new:
        warnings.warn(
            f"{n_new:,} customer(s) made their first transaction after the calibration "
            f"period (last calibration opportunity {_label(cal, grid, explicit)}); they are "
            "not in the calibration cohort and are left out (count in "
            "attrs['n_customers_first_seen_in_holdout']).",
            DataWarning,
            stacklevel=2,
        )
    return df


# ---------------------------------------------------------------------------------------
# user-supplied tables
def validate_discrete_rfm(df: pd.DataFrame, *, weights_col: str = "weights") -> pd.DataFrame:
    """Check a discrete-time customer table; expand the compressed form to one row per customer.

    Parameters
    ----------
    df : DataFrame
        One row per customer (index = ids) with whole-number columns ``frequency``,
        ``recency`` and ``periods`` (opportunities; ``0 <= frequency <= recency <= periods``
        and ``recency = 0`` exactly when ``frequency = 0``), optionally ``frequency_holdout``
        and ``periods_holdout`` (``0 <= frequency_holdout <= periods_holdout``).  Or the
        compressed form: one row per distinct history with a ``weights_col`` column
        (customers sharing it, whole numbers >= 0), as in the published donations table.
    weights_col : str
        Name of the weights column of the compressed form.

    Returns
    -------
    DataFrame
        A copy with the columns as int64 and ``attrs["time_unit"] = "opportunities"``.  The
        compressed form is expanded: row ``r`` with weight ``w`` becomes ``w`` customers with
        ids ``"<r>-0" .. "<r>-<w-1>"`` (``r`` the row's index label); ``attrs`` records
        ``compressed_rows``.

    Raises
    ------
    DataError
        Missing, non-numeric, non-integer, negative or missing values, the inequalities
        above violated, duplicated ids, an empty table, or a ``time_unit`` in ``attrs``
        other than "opportunities" (continuous times are not opportunity counts).
    """
    columns = list(HISTORY_COLUMNS)
    require_columns(df, {c: c for c in columns}, what="discrete-time customer table")
    unit = df.attrs.get("time_unit")
    if unit not in (None, TIME_UNIT):
        raise DataError(
            f"The table's attrs['time_unit'] is {unit!r}, but a discrete-time (BG/BB) table "
            "counts opportunities, not continuous time. Build it with "
            "summarize_opportunities(transactions, grid) (e.g. grid='year'), or set "
            "df.attrs['time_unit'] = 'opportunities' if its columns already count "
            "opportunities."
        )
    if len(df) == 0:
        raise DataError("The discrete-time customer table is empty (0 customers).")
    extra = [c for c in ("frequency_holdout", "periods_holdout") if c in df.columns]
    weighted = weights_col in df.columns
    ids = df.index
    if ids.has_duplicates:
        dup = ids.duplicated(keep=False)
        raise DataError(
            f"The discrete-time customer table has {int(dup.sum()):,} rows with a duplicated "
            f"customer id ({_first_ids(ids, dup)}); it needs one row per customer (or one "
            f"per distinct history with a {weights_col!r} column)."
        )
    values: dict[str, np.ndarray] = {}
    for col in columns + extra + ([weights_col] if weighted else []):
        s = df[col]
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if s.dtype.kind == "b":
            num = np.full(len(s), np.nan)
        bad = ~(np.isfinite(num) & (num >= 0) & (num == np.floor(num)))
        if bad.any():
            raise _row_error(
                "values that are not whole numbers >= 0 (missing, negative, fractional or "
                "not numeric)", col, bad, ids,
                "Each must count opportunities (or customers, for weights); build the table "
                "with summarize_opportunities().",
            )  # fmt: skip
        values[col] = num.astype(np.int64)
    x, t_x, n = values["frequency"], values["recency"], values["periods"]
    checks = [
        (t_x > n, "recency", "recency > periods",
         "recency is the last repeat transaction's opportunity, at most periods."),
        (x > t_x, "frequency", "frequency > recency",
         "x repeat transactions need at least x opportunities after the first."),
        ((x == 0) != (t_x == 0), "recency", "recency != 0 exactly when frequency == 0 fails",
         "recency is 0 for customers without repeat transactions and >= 1 otherwise."),
    ]  # fmt: skip
    if len(extra) == 2:
        checks.append((values["frequency_holdout"] > values["periods_holdout"],
                       "frequency_holdout", "frequency_holdout > periods_holdout",
                       "at most one transaction counts per holdout opportunity."))  # fmt: skip
    for bad, col, what, fix in checks:
        if bad.any():
            raise _row_error(what, col, bad, ids, fix)
    out = df.copy()
    for col, v in values.items():
        out[col] = v
    out.attrs = dict(df.attrs)
    out.attrs["time_unit"] = TIME_UNIT
    if weighted:
        w = values[weights_col]
        if w.sum() == 0:
            raise DataError(
                f"Column {weights_col!r} is 0 in every row: the compressed table describes no "
                f"customer. {_first_positions(w == 0)}"
            )
        rows = np.repeat(np.arange(len(df)), w)
        k = np.arange(rows.size) - np.repeat(np.cumsum(w) - w, w)
        labels = np.asarray(df.index.astype(str))
        new_ids = pd.Index([f"{labels[r]}-{j}" for r, j in zip(rows, k, strict=True)],
                           name=df.index.name or "customer_id")  # fmt: skip
        expanded = out.drop(columns=[weights_col]).iloc[rows].set_axis(new_ids)
        expanded.attrs = dict(out.attrs, compressed_rows=len(df))
        return expanded
    return out
