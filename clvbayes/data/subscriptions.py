"""Contractual data: subscriptions in, per-subscriber renewal histories out.

The retention models (:mod:`clvbayes.math.sbg`, :mod:`clvbayes.math.bdw`) need, for each
subscriber, the number of renewals completed on a period grid and whether she has cancelled
(``churned = 1``) or is still active at the observation date (``churned = 0``,
right-censored).  Two inputs are accepted:

* :func:`summarize_subscriptions` -- a subscriptions table, one row per subscription spell:
  customer id, start date, end date (empty while active), optionally the plan's billing
  period, a price per period, a plan and a cohort label;
* :func:`subscribers_from_survival` -- aggregate cohort survival counts or percentages per
  period (e.g. Fader & Hardie 2007's "regular" and "high end" cohorts), expanded to one row
  per subscriber.

The period grid is explicit.  ``"month"`` means *calendar* months: the renewals of a
subscription started on 31 January fall due on 28/29 February, 31 March, 30 April, ...
(the start day, clipped to the month's length), never every 4.345 weeks; ``"year"`` is 12
calendar months, ``"week"`` 7 days, ``"day"`` 1 day, and ``"3 months"``, ``"2 weeks"``,
... multiples of them.

Counting rule (documented because everything downstream depends on it): the ``k``-th renewal
of a spell falls due ``k`` periods after its start.  A cancelled spell with end date ``e``
completed the renewals due strictly before ``e`` (a spell that ends exactly on a due date
did not renew there); an active spell completed the renewals due on or before ``as_of``.
So a spell that ends before its first due date has ``periods = 0, churned = 1``.

Imports neither PyMC nor PyTensor.  Errors are :class:`~clvbayes.errors.DataError` with the
column, the number of rows, the first ids and the fix; suspicious but legal input raises a
:class:`~clvbayes.errors.DataWarning`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.data.validation import (
    _check_ids,
    _column,
    _first_ids,
    _first_positions,
    _parse_amounts,
    _parse_dates,
    _quote_list,
    _row_error,
    _rows,
    require_columns,
)
from clvbayes.errors import DataError, DataWarning

__all__ = [
    "PERIOD_UNITS",
    "parse_period",
    "subscribers_from_survival",
    "subscriptions_from_charges",
    "summarize_subscriptions",
    "validate_subscribers",
]

PERIOD_UNITS = ("day", "week", "month", "year")
"""Units of a renewal period; ``month`` and ``year`` are calendar units."""

_PERIOD = re.compile(r"^\s*(\d+)?\s*(day|week|month|year)s?\s*$", re.IGNORECASE)


def parse_period(period: Any) -> tuple[int, str]:
    """``"month"`` -> ``(1, "month")``, ``"3 months"`` -> ``(3, "month")``; DataError otherwise.

    Parameters
    ----------
    period : str
        A renewal period: an optional positive whole number and one of day, week, month,
        year (singular or plural, any case).
    """
    m = _PERIOD.match(period) if isinstance(period, str) else None
    n = int(m.group(1)) if m and m.group(1) else 1
    if m is None or n < 1:
        raise DataError(
            f"Unknown renewal period {period!r}; use one of {_quote_list(list(PERIOD_UNITS))}, "
            "optionally with a count, e.g. 'month', '3 months', '2 weeks', 'year'. Months and "
            "years are calendar units (renewals on the start day of the month, clipped to the "
            "month's length), not a fixed number of days."
        )
    return n, m.group(2).lower()


def _due_dates(start: np.ndarray, k: np.ndarray, n: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The ``k``-th due date of each spell (datetime64[ns]); ``k`` may be 0 (the start)."""
    start = start.astype("datetime64[ns]")
    out = np.empty(start.shape, dtype="datetime64[ns]")
    fixed = (unit == "day") | (unit == "week")
    if fixed.any():
        days = np.where(unit[fixed] == "week", 7, 1) * n[fixed] * k[fixed]
        out[fixed] = start[fixed] + days.astype("timedelta64[D]")
    cal = ~fixed
    if cal.any():
        s = start[cal]
        months = np.where(unit[cal] == "year", 12, 1) * n[cal] * k[cal]
        s_month = s.astype("datetime64[M]")
        s_day0 = s_month.astype("datetime64[D]")
        day = (s.astype("datetime64[D]") - s_day0).astype(np.int64)  # 0-based day of month
        time_of_day = s - s.astype("datetime64[D]")
        target = s_month + months.astype("timedelta64[M]")
        first = target.astype("datetime64[D]")
        length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(
            np.int64
        )
        out[cal] = first + np.minimum(day, length - 1).astype("timedelta64[D]") + time_of_day
    return out


def _due_count(start, date, n, unit, strict: bool) -> np.ndarray:
    """Number of ``k >= 1`` whose due date is ``<= date`` (``< date`` with ``strict``)."""
    start = start.astype("datetime64[ns]")
    date = date.astype("datetime64[ns]")
    fixed = (unit == "day") | (unit == "week")
    k = np.zeros(start.shape, dtype=np.int64)
    if fixed.any():
        length = (
            (np.where(unit[fixed] == "week", 7, 1) * n[fixed]).astype(np.int64) * 86_400 * 10**9
        )
        k[fixed] = (date[fixed] - start[fixed]).astype(np.int64) // length
    cal = ~fixed
    if cal.any():
        months = date[cal].astype("datetime64[M]").astype(np.int64) - start[cal].astype(
            "datetime64[M]"
        ).astype(np.int64)
        k[cal] = months // (np.where(unit[cal] == "year", 12, 1) * n[cal])
    # the estimate can be one too high (calendar units: day of month not reached yet)
    over = _due_dates(start, k, n, unit) > date
    k = k - over
    if strict:
        k = k - ((k >= 1) & (_due_dates(start, k, n, unit) == date))
    return np.maximum(k, 0)


def _parse_optional_dates(values: pd.Series, column: str, ids: pd.Series,
                          datetime_format: str | None) -> pd.Series:  # fmt: skip
    """Dates where given; NaT where missing (NaN, None, NaT or an empty/blank string)."""
    missing = values.isna().to_numpy().copy()
    if pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values.dtype):
        blank = values.map(lambda v: isinstance(v, str) and not v.strip())
        missing |= blank.fillna(False).to_numpy(dtype=bool)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if (~missing).any():
        parsed = _parse_dates(values[~missing], column, ids[~missing], datetime_format)
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            raise DataError(
                f"Column {column!r} holds time-zone-aware timestamps ({parsed.dtype}); renewal "
                "dates are counted on local calendar days. Convert them first, e.g. "
                f"df[{column!r}] = df[{column!r}].dt.tz_convert('<your zone>').dt.tz_localize(None)."
            )
        out[~missing] = parsed.astype("datetime64[ns]").to_numpy()
    return out


def summarize_subscriptions(
    table: pd.DataFrame,
    *,
    as_of: Any,
    period: str = "month",
    customer_id_col: str = "customer_id",
    start_col: str = "start",
    end_col: str = "end",
    period_col: str | None = None,
    price_col: str | None = None,
    plan_col: str | None = None,
    cohort_col: str | None = None,
    datetime_format: str | None = None,
) -> pd.DataFrame:
    """Per-subscriber renewal histories from a subscriptions table.

    Parameters
    ----------
    table : DataFrame
        One row per subscription spell.  A subscriber who cancelled and came back has one
        row per spell, each with its own id (e.g. ``"<customer>-<spell number>"``): the
        retention models treat spells as independent subscribers.
    as_of : date-like
        The observation date: spells without an end date are active (right-censored) on
        it.  Required, never guessed from the data.
    period : str, default "month"
        Renewal period of every spell (see :func:`parse_period`); ignored where
        ``period_col`` is given.
    customer_id_col, start_col, end_col : str
        Columns of the id, the start date and the end date (empty while active).
    period_col : str, optional
        Column with each spell's own billing period (``"month"``, ``"3 months"``, ...).
    price_col, plan_col, cohort_col : str, optional
        Price per period (non-negative), plan and cohort labels, carried through.
    datetime_format : str, optional
        Format of text dates (as :func:`clvbayes.data.read_transactions`).

    Returns
    -------
    DataFrame
        Indexed by id: ``periods`` (renewals completed, int64), ``churned`` (int64, 1 =
        cancelled, 0 = active on ``as_of``), ``start``, ``end`` (NaT while active),
        ``period`` (the billing period, e.g. ``"1 month"``), and ``price``, ``plan``,
        ``cohort`` when given.  ``attrs``: ``as_of``, ``period`` (one string, or
        ``"mixed"``), ``counting_rule``.

    Raises
    ------
    DataError
        Missing columns or ids, duplicated ids, unparseable dates, ends before starts,
        starts or ends after ``as_of``, unknown periods, negative or non-numeric prices.

    Warns
    -----
    DataWarning
        Spells that end on their start date (counted as cancelled before the first
        renewal).
    """
    require_columns(
        table,
        {"customer_id_col": customer_id_col, "start_col": start_col, "end_col": end_col,
         "period_col": period_col, "price_col": price_col, "plan_col": plan_col,
         "cohort_col": cohort_col},
        what="subscriptions table",
    )  # fmt: skip
    try:
        as_of_ts = pd.Timestamp(as_of)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"as_of={as_of!r} is not a date; pass the observation date, e.g. as_of='2024-12-31'."
        ) from exc
    if as_of_ts is pd.NaT or as_of_ts.tzinfo is not None:
        raise DataError(
            f"as_of={as_of!r} must be a date without time zone (the day the data were "
            "extracted), e.g. as_of='2024-12-31'."
        )
    ids = _column(table, customer_id_col)
    _check_ids(ids, customer_id_col)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise _row_error(
            "a repeated subscription id",
            customer_id_col,
            dup,
            ids,
            "Each row is one subscription spell and needs its own id: give a returning "
            "subscriber's spells distinct ids (e.g. id + '-' + spell number), or drop "
            "duplicated rows.",
        )
    start = _parse_optional_dates(_column(table, start_col), start_col, ids, datetime_format)
    no_start = start.isna().to_numpy()
    if no_start.any():
        raise _row_error(
            "a missing start date", start_col, no_start, ids,
            "Every subscription needs its start date: fill or drop these rows.",
        )  # fmt: skip
    end = _parse_optional_dates(_column(table, end_col), end_col, ids, datetime_format)
    s, e = start.to_numpy(), end.to_numpy()
    has_end = ~np.isnat(e)
    before = has_end & (e < s)
    if before.any():
        raise _row_error(
            f"an end date before the start date (column {start_col!r})", end_col, before, ids,
            "Fix the dates or swap the columns (start_col=..., end_col=...).",
        )  # fmt: skip
    late = s > np.datetime64(as_of_ts.to_datetime64())
    if late.any():
        raise _row_error(
            f"a start date after as_of ({as_of_ts.date()})", start_col, late, ids,
            "Pass a later as_of or drop subscriptions that had not started by then.",
        )  # fmt: skip
    late_end = has_end & (e > np.datetime64(as_of_ts.to_datetime64()))
    if late_end.any():
        raise _row_error(
            f"an end date after as_of ({as_of_ts.date()})", end_col, late_end, ids,
            "A cancellation after the observation date is not yet observed: pass an as_of on "
            "or after the latest end date, or blank these ends (active on as_of).",
        )  # fmt: skip
    same = has_end & (e == s)
    if same.any():
        warnings.warn(
            f"Column {end_col!r}: {_rows(int(same.sum()))} end on their start date "
            f"({_first_ids(ids, same)}); counted as cancelled before the first renewal "
            "(periods 0, churned 1). Drop them if they are test or void orders.",
            DataWarning,
            stacklevel=2,
        )
    if period_col is None:
        n1, u1 = parse_period(period)
        n = np.full(len(ids), n1, dtype=np.int64)
        unit = np.full(len(ids), u1, dtype=object)
        labels = np.full(len(ids), f"{n1} {u1}", dtype=object)
    else:
        raw = _column(table, period_col)
        uniq, codes = np.unique(raw.astype(str).to_numpy(), return_inverse=True)
        parsed = []
        for i, value in enumerate(uniq):
            try:
                parsed.append(parse_period(value))
            except DataError:
                raise _row_error(
                    f"an unknown billing period {value!r}", period_col, codes.ravel() == i, ids,
                    "Use 'month', '3 months', '2 weeks', 'year', ... (calendar months and "
                    "years).",
                ) from None  # fmt: skip
        n = np.array([p[0] for p in parsed], dtype=np.int64)[codes.ravel()]
        unit = np.array([p[1] for p in parsed], dtype=object)[codes.ravel()]
        labels = np.array([f"{a} {b}" for a, b in parsed], dtype=object)[codes.ravel()]
    as_of_arr = np.full(s.shape, np.datetime64(as_of_ts.to_datetime64(), "ns"))
    periods = np.where(
        has_end,
        _due_count(s, np.where(has_end, e, s), n, unit, strict=True),
        _due_count(s, as_of_arr, n, unit, strict=False),
    )
    out = pd.DataFrame(
        {"periods": periods.astype(np.int64), "churned": has_end.astype(np.int64),
         "start": start.to_numpy(), "end": e, "period": labels},
        index=pd.Index(ids.to_numpy(), name=customer_id_col),
    )  # fmt: skip
    if price_col is not None:
        price = _parse_amounts(_column(table, price_col), price_col, ids)
        neg = price < 0
        if neg.any():
            raise _row_error(
                "a negative price per period", price_col, neg, ids,
                "A price per period is what a renewal pays: fix these values (refunds belong "
                "in a charge log, not in the subscription's price).",
            )  # fmt: skip
        out["price"] = price
    for name, col in (("plan", plan_col), ("cohort", cohort_col)):
        if col is not None:
            out[name] = _column(table, col).to_numpy()
    out.attrs.update(
        as_of=str(as_of_ts.date()),
        period=labels[0] if len(set(labels)) == 1 else "mixed",
        counting_rule=(
            "renewal k falls due k periods after the start; cancelled spells completed the "
            "renewals due strictly before their end, active ones those due on or before as_of"
        ),
    )
    return out


def subscribers_from_survival(
    table: pd.DataFrame,
    *,
    period_col: str,
    columns: Sequence[str],
    cohort_size: int | None = None,
    calibration_periods: int | None = None,
    period: str = "year",
) -> pd.DataFrame:
    """Expand aggregate cohort survival to one row per subscriber.

    Parameters
    ----------
    table : DataFrame
        One row per period since acquisition, ``0, 1, ..., n`` in ``period_col``, and one
        column per cohort with the subscribers still active (counts, or percentages of the
        period-0 cohort when ``cohort_size`` is given).  E.g. ``fh2007_survival.csv`` with
        ``period_col="year"``, ``columns=["high_end_pct_surviving",
        "regular_pct_surviving"]``, ``cohort_size=1000``.
    columns : sequence of str
        The cohort columns; each becomes a ``cohort`` label.
    cohort_size : int, optional
        Subscribers at period 0; the columns are then percentages (100 at period 0), and
        ``pct * cohort_size / 100`` must be whole numbers (no rounding is done).
    calibration_periods : int, optional
        Use periods ``0..calibration_periods`` only (later rows are holdout actuals);
        default: all rows.
    period : str, default "year"
        Label of the period grid, recorded in ``attrs["period"]``.

    Returns
    -------
    DataFrame
        One row per subscriber, index ``"<cohort>:<i>"``: ``periods``, ``churned``,
        ``cohort``.  Those lost in period ``t`` have ``periods = t - 1, churned = 1``; the
        survivors at the last period ``n`` have ``periods = n, churned = 0``.
    """
    require_columns(table, {"period_col": period_col, **{c: c for c in columns}},
                    what="survival table")  # fmt: skip
    if not columns:
        raise DataError("columns is empty: name at least one cohort column of the survival table.")
    t = pd.to_numeric(_column(table, period_col), errors="coerce").to_numpy(dtype=float)
    expected = np.arange(len(t), dtype=float)
    if not np.array_equal(t, expected):
        bad = ~(t == expected)
        raise DataError(
            f"Column {period_col!r} must count periods 0, 1, 2, ... in order, one row each; "
            f"{_rows(int(bad.sum()))} do not ({_first_positions(bad)[:-1]}). Sort the table "
            f"by {period_col!r} and fill any missing period."
        )
    if calibration_periods is not None:
        if not isinstance(calibration_periods, int | np.integer) or not (
            1 <= calibration_periods < len(t)
        ):
            raise DataError(
                f"calibration_periods={calibration_periods!r} must be a whole number from 1 to "
                f"{len(t) - 1} (the last period in the table)."
            )
        t = t[: calibration_periods + 1]
    last = int(t[-1])
    frames = []
    for col in columns:
        raw = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)[: last + 1]
        if not np.isfinite(raw).all():
            raise DataError(
                f"Column {col!r} has missing or non-numeric values ("
                f"{_first_positions(~np.isfinite(raw))[:-1]}); fill them or drop the column."
            )
        if cohort_size is not None:
            if raw[0] != 100:
                raise DataError(
                    f"Column {col!r} starts at {float(raw[0])!r}, not 100: with cohort_size the "
                    "columns are percentages of the period-0 cohort. Pass counts without "
                    "cohort_size, or fix the first row."
                )
            raw = raw * cohort_size / 100.0
        counts = np.round(raw)
        frac = np.abs(raw - counts) > 1e-6 * np.maximum(1.0, np.abs(raw))
        if frac.any() or (counts < 0).any():
            bad = frac | (counts < 0)
            raise DataError(
                f"Column {col!r} does not give whole non-negative numbers of subscribers "
                f"({_first_positions(bad)[:-1]}, e.g. {float(raw[bad][0])!r}). Pass counts, or the "
                "cohort_size for which the percentages are whole numbers."
            )
        lost = counts[:-1] - counts[1:]
        if (lost < 0).any():
            raise DataError(
                f"Column {col!r} increases between periods ({_first_positions(lost < 0)[:-1]} "
                "and the next): survivors of one cohort can only fall. Check the column."
            )
        periods = np.concatenate([np.repeat(np.arange(last), lost.astype(np.int64)),
                                  np.full(int(counts[-1]), last)])  # fmt: skip
        churned = np.concatenate([np.ones(int(lost.sum()), np.int64),
                                  np.zeros(int(counts[-1]), np.int64)])  # fmt: skip
        ids = [f"{col}:{i}" for i in range(periods.size)]
        frames.append(pd.DataFrame({"periods": periods.astype(np.int64), "churned": churned,
                                    "cohort": col}, index=pd.Index(ids, name="subscriber_id")))  # fmt: skip
    out = pd.concat(frames)
    out.attrs.update(period=period, calibration_periods=last)
    return out


def validate_subscribers(df: pd.DataFrame) -> pd.DataFrame:
    """Check a per-subscriber table for the retention models; return ``periods``/``churned`` as int64.

    Parameters
    ----------
    df : DataFrame
        One row per subscriber (index = ids) with ``periods`` (renewals completed, whole
        numbers >= 0) and ``churned`` (1 cancelled, 0 active; booleans accepted).

    Raises
    ------
    DataError
        Missing columns, missing/negative/fractional periods, churn flags other than 0/1,
        or duplicated ids.
    """
    require_columns(df, {"periods": "periods", "churned": "churned"}, what="subscribers table")
    ids = df.index.to_series(index=pd.RangeIndex(len(df)))
    p = pd.to_numeric(df["periods"], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(p) & (p >= 0) & (p == np.floor(p)))
    if bad.any():
        raise _row_error(
            "periods that are not whole numbers >= 0", "periods", bad, ids,
            "periods counts the renewals a subscriber completed; fix or drop these rows.",
        )  # fmt: skip
    c = pd.to_numeric(df["churned"].astype(object).where(df["churned"].notna()),
                      errors="coerce").to_numpy(dtype=float)  # fmt: skip
    bad = ~np.isin(c, (0.0, 1.0))
    if bad.any():
        raise _row_error(
            "churn flags other than 0/1", "churned", bad, ids,
            "churned is 1 for a subscriber who cancelled and 0 for one still active.",
        )  # fmt: skip
    dup = df.index.duplicated(keep=False)
    if dup.any():
        raise _row_error(
            "a repeated subscriber id (the index)", "index", dup, ids,
            "Give each subscription spell its own id.",
        )  # fmt: skip
    out = df.copy()
    out["periods"] = p.astype(np.int64)
    out["churned"] = c.astype(np.int64)
    return out


def _shortest_days(n: int, unit: str) -> int:
    return {"day": 1, "week": 7, "month": 28, "year": 365}[unit] * n


def subscriptions_from_charges(
    charges: pd.DataFrame,
    *,
    as_of: Any,
    grace_days: int,
    period: str = "month",
    customer_id_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str | None = None,
    plan_col: str | None = None,
    datetime_format: str | None = None,
) -> pd.DataFrame:
    """Subscription spells and renewal histories from a log of recurring charges.

    Each row is one charge (a delivery, an invoice).  For each customer, in date order, the
    first charge starts a spell; each later charge is the next renewal when it falls within
    ``grace_days`` of the next due date (one ``period`` after the previous renewal's charge:
    due dates follow the actual charges, so a late payment moves the schedule).  The spell
    has churned when no charge came by ``due date + grace_days``; its end is that missed
    due date.  A charge after that starts a new spell (a returning subscriber is a new
    spell, with id ``"<customer>#<spell number>"``; the retention models treat spells as
    independent).  A charge more than ``grace_days`` before the next due date is an extra
    charge inside the period (an add-on, a duplicate): not a renewal, counted in
    ``attrs["extra_charges"]`` and reported by a :class:`~clvbayes.errors.DataWarning`.
    Charges on one day are one charge (their amounts added).

    Parameters
    ----------
    charges : DataFrame
        The charge log.
    as_of : date-like
        Observation date (required): a spell whose next due date plus ``grace_days`` is
        after ``as_of`` is active (right-censored).
    grace_days : int
        Days a renewal charge may come before or after its due date; explicit, recorded in
        ``attrs["grace_days"]``.  Must be below half the shortest period (14 days for
        months).
    period : str, default "month"
        Billing period (:func:`parse_period`; calendar months and years).
    customer_id_col, date_col, amount_col, plan_col : str
        Columns; ``amount_col`` gives ``mean_charge`` per spell, ``plan_col`` the plan of
        the spell's first charge.
    datetime_format : str, optional
        Format of text dates.

    Returns
    -------
    DataFrame
        Index ``spell_id``: ``customer_id``, ``spell`` (1, 2, ...), ``start``, ``end`` (the
        missed due date; NaT while active), ``periods``, ``churned``, ``period``,
        ``n_charges``, and ``plan`` and, with ``amount_col``, ``mean_charge`` (all the
        spell's charges), ``repeat_charges`` (``n_charges - 1``) and ``repeat_mean_charge``
        (mean amount of the charges after the first, 0 without any: the ``frequency`` and
        ``monetary_value`` of a spend model).  ``attrs``: ``as_of``, ``period``,
        ``grace_days``, ``extra_charges``, ``returning_spells``, ``amounts_vary`` (some
        spell's charges differ in amount; None without ``amount_col``), ``counting_rule``.
    """
    require_columns(
        charges,
        {"customer_id_col": customer_id_col, "date_col": date_col, "amount_col": amount_col,
         "plan_col": plan_col},
        what="charge log",
    )  # fmt: skip
    n_per, unit = parse_period(period)
    if (
        isinstance(grace_days, bool)
        or not isinstance(grace_days, int | np.integer)
        or (grace_days < 0 or 2 * grace_days >= _shortest_days(n_per, unit))
    ):
        raise DataError(
            f"grace_days={grace_days!r} must be a whole number of days from 0 to below half the "
            f"shortest {n_per} {unit} period ({_shortest_days(n_per, unit)} days), so that a "
            "late renewal cannot be mistaken for the next one; e.g. grace_days=7 for months."
        )
    try:
        as_of_ts = pd.Timestamp(as_of)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"as_of={as_of!r} is not a date; pass the observation date, e.g. as_of='2024-12-31'."
        ) from exc
    ids = _column(charges, customer_id_col)
    _check_ids(ids, customer_id_col)
    dates = _parse_optional_dates(_column(charges, date_col), date_col, ids, datetime_format)
    missing = dates.isna().to_numpy()
    if missing.any():
        raise _row_error("a missing charge date", date_col, missing, ids,
                         "Every charge needs its date: fill or drop these rows.")  # fmt: skip
    day = dates.dt.normalize().to_numpy()
    late = day > np.datetime64(as_of_ts.normalize().to_datetime64())
    if late.any():
        raise _row_error(
            f"a charge after as_of ({as_of_ts.date()})", date_col, late, ids,
            "Pass a later as_of or drop the charges after it.",
        )  # fmt: skip
    amount = None
    if amount_col is not None:
        amount = _parse_amounts(_column(charges, amount_col), amount_col, ids)
    frame = pd.DataFrame({"id": ids.to_numpy(), "day": day})
    if amount is not None:
        frame["amount"] = amount
    if plan_col is not None:
        frame["plan"] = _column(charges, plan_col).to_numpy()
    frame = frame.sort_values(["id", "day"], kind="stable")
    agg = {"amount": ("amount", "sum")} if amount is not None else {}
    if plan_col is not None:
        agg["plan"] = ("plan", "first")
    daily = frame.groupby(["id", "day"], sort=True, as_index=False).agg(
        n=("day", "size"), **agg
    )  # fmt: skip
    grace = np.timedelta64(int(grace_days), "D")
    as_of_day = np.datetime64(as_of_ts.normalize().to_datetime64(), "ns")
    one = np.ones(1, dtype=np.int64)
    units = np.array([unit], dtype=object)
    nn = np.array([n_per], dtype=np.int64)

    def next_due(d):
        return _due_dates(np.array([d], dtype="datetime64[ns]"), one, nn, units)[0]

    rows = []
    extra = 0
    varies = False
    for cid, g in daily.groupby("id", sort=False):
        days = g["day"].to_numpy(dtype="datetime64[ns]")
        amts = g["amount"].to_numpy() if amount is not None else None
        plans = g["plan"].to_numpy() if plan_col is not None else None
        spell, i = 0, 0
        while i < days.size:
            spell += 1
            start, last, n_ch, total = days[i], days[i], 1, amts[i] if amts is not None else 0.0
            first_i = i
            i += 1
            renewals = 0
            while i < days.size:
                due = next_due(last)
                if days[i] < due - grace:
                    extra += 1
                    total += amts[i] if amts is not None else 0.0
                    n_ch += 1
                    i += 1
                elif days[i] <= due + grace:
                    renewals += 1
                    last = days[i]
                    total += amts[i] if amts is not None else 0.0
                    n_ch += 1
                    i += 1
                else:
                    break
            due = next_due(last)
            churned = i < days.size or due + grace < as_of_day
            row = {"spell_id": f"{cid}#{spell}", "customer_id": cid, "spell": spell,
                   "start": start, "end": due if churned else np.datetime64("NaT", "ns"),
                   "periods": renewals, "churned": int(churned), "n_charges": n_ch}  # fmt: skip
            if amts is not None:
                row["mean_charge"] = total / n_ch
                row["repeat_charges"] = n_ch - 1
                row["repeat_mean_charge"] = (
                    (total - amts[first_i]) / (n_ch - 1) if n_ch > 1 else 0.0
                )
                spell_amts = amts[first_i:i]
                varies = varies or bool(np.ptp(spell_amts) > 1e-9 * max(1.0, abs(total / n_ch)))
            if plans is not None:
                row["plan"] = plans[first_i]
            rows.append(row)
    out = pd.DataFrame(rows).set_index("spell_id")
    out.insert(out.columns.get_loc("churned") + 1, "period", f"{n_per} {unit}")
    out["periods"] = out["periods"].astype(np.int64)
    out["churned"] = out["churned"].astype(np.int64)
    returning = int((out["spell"] > 1).sum()) if len(out) else 0
    if extra:
        warnings.warn(
            f"{extra:,} charge(s) came more than grace_days={grace_days} before their due date "
            "and were counted as extra charges inside a period (add-ons or duplicates), not as "
            "renewals (attrs['extra_charges']). If renewals come that early, raise grace_days "
            "or check the billing period.",
            DataWarning,
            stacklevel=2,
        )
    out.attrs.update(
        as_of=str(as_of_ts.date()), period=f"{n_per} {unit}", grace_days=int(grace_days),
        extra_charges=extra, returning_spells=returning,
        amounts_vary=bool(varies) if amount is not None else None,
        counting_rule=(
            "a charge within grace_days of the due date one period after the previous renewal "
            "is the next renewal; no such charge by due date + grace_days ends the spell (end = "
            "the missed due date); a later charge starts a new spell"
        ),
    )  # fmt: skip
    return out
