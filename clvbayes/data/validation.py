"""Every input check of :mod:`clvbayes.data`, in one place.

Each check raises :class:`DataError` with a message that says what is wrong, in which
column, how many rows, the first few offending customer ids and how to fix it.  The
checks are vectorised: they run inside the timed path of
:func:`~clvbayes.data.summarize_transactions` on tens of millions of rows.

Nothing is dropped silently: the only row exclusion (``negative_amounts="drop"``) is
an explicit option, reported in ``DataFrame.attrs`` and by a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError, DataWarning  # noqa: F401  (re-exported by clvbayes.data)

__all__ = [
    "NEGATIVE_AMOUNT_OPTIONS",
    "TIME_UNITS",
    "DataError",
    "validate_rfm",
]

#: Length of one time unit in days.  ``weeks`` are days / 7, never rounded.
TIME_UNITS: dict[str, float] = {"days": 1.0, "weeks": 7.0}

#: What to do with rows whose amount is negative (returns, refunds).
NEGATIVE_AMOUNT_OPTIONS = ("error", "drop", "keep")

_MAX_IDS_SHOWN = 5
_TICKS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_NAT = np.iinfo(np.int64).min


# ---------------------------------------------------------------------------------------
# message helpers


def _quote_list(values: Sequence[Any]) -> str:
    return ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values)


def _first_ids(ids: pd.Series | pd.Index, mask: np.ndarray) -> str:
    """``"first customer ids: 'a', 'b'"`` for the rows where ``mask`` is true."""
    positions = np.flatnonzero(mask)
    # a few thousand rows are enough to find five distinct ids
    head = pd.unique(np.asarray(ids.take(positions[:5000]), dtype=object))
    shown = _quote_list(list(head[:_MAX_IDS_SHOWN]))
    more = ", ..." if len(head) > _MAX_IDS_SHOWN or positions.size > 5000 else ""
    return f"first customer ids: {shown}{more}"


def _first_positions(mask: np.ndarray) -> str:
    """``"Rows (counting from 0): 3, 17."`` -- positions in the table as given."""
    positions = np.flatnonzero(mask)
    shown = ", ".join(f"{p:,}" for p in positions[:_MAX_IDS_SHOWN])
    more = ", ..." if positions.size > _MAX_IDS_SHOWN else ""
    return f"Row{'s' if positions.size > 1 else ''} (counting from 0): {shown}{more}."


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def _row_error(
    problem: str, column: str, mask: np.ndarray, ids: pd.Series | pd.Index, fix: str
) -> DataError:
    """A :class:`DataError` for the rows selected by ``mask``."""
    n = int(np.count_nonzero(mask))
    return DataError(
        f"Column {column!r} has {_rows(n)} with {problem} ({_first_ids(ids, mask)}). {fix} "
        f"{_first_positions(mask)}"
    )


# ---------------------------------------------------------------------------------------
# options


def check_time_unit(time_unit: str) -> float:
    """Return the length of ``time_unit`` in days, or raise :class:`DataError`."""
    if time_unit not in TIME_UNITS:
        raise DataError(
            f"Unknown time_unit {time_unit!r}; use one of {_quote_list(list(TIME_UNITS))}. "
            "Months are not offered because they have no fixed length: convert a horizon "
            "in months to weeks explicitly (e.g. 3 months ~ 13 weeks)."
        )
    return TIME_UNITS[time_unit]


def check_negative_amounts_option(negative_amounts: str) -> None:
    """Raise :class:`DataError` unless ``negative_amounts`` is a known option."""
    if negative_amounts not in NEGATIVE_AMOUNT_OPTIONS:
        raise DataError(
            f"Unknown negative_amounts={negative_amounts!r}; use one of "
            f"{_quote_list(NEGATIVE_AMOUNT_OPTIONS)}."
        )


def require_columns(
    df: pd.DataFrame, required: Mapping[str, str | None], what: str = "transactions"
) -> None:
    """Raise :class:`DataError` naming every missing column and listing those present.

    Parameters
    ----------
    df : DataFrame
        The table to check.  A column may also be the (named) index.
    required : mapping
        ``{argument name: column name}``, e.g. ``{"datetime_col": "date"}``; ``None``
        column names are skipped.
    what : str
        What the table is, for the message.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"Expected the {what} as a pandas DataFrame, got {type(df).__name__}.")
    present = set(map(str, df.columns)) | {str(n) for n in df.index.names if n is not None}
    missing = {arg: col for arg, col in required.items() if col is not None and col not in present}
    if missing:
        names = _quote_list(list(missing.values()))
        hint = ", ".join(f"{arg}=..." for arg in missing)
        raise DataError(
            f"Missing column(s) {names} in the {what}; columns present: "
            f"{_quote_list([str(c) for c in df.columns])}. Rename your columns or pass "
            f"{hint} to name the column(s) that hold these values."
        )


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    """The column ``name``, or the index level of that name, as a Series with a range index."""
    if name in df.columns:
        return df[name].reset_index(drop=True)
    return df.index.get_level_values(name).to_series(index=pd.RangeIndex(len(df)))


# ---------------------------------------------------------------------------------------
# transactions


@dataclass
class CheckedTransactions:
    """Validated transaction columns as arrays (internal to :mod:`clvbayes.data`).

    ``ticks`` are int64 multiples of ``unit`` ("s", "ms", "us" or "ns") since the epoch:
    local wall-clock time when ``wall_time`` is true (calendar days), UTC otherwise.
    """

    ids: pd.Series
    ticks: np.ndarray
    unit: str
    tz: tzinfo | None
    wall_time: bool
    amounts: np.ndarray | None
    customer_id_col: str
    datetime_col: str
    monetary_value_col: str | None
    n_input_rows: int
    n_negative_rows: int = 0
    n_negative_rows_dropped: int = 0
    n_customers_dropped: int = 0

    @property
    def ticks_per_day(self) -> int:
        return _TICKS_PER_DAY[self.unit]


def _check_ids(ids: pd.Series, column: str) -> None:
    if ids.dtype.kind in "iub":
        return  # plain numpy integers cannot be missing
    mask = ids.isna().to_numpy()
    if mask.any():
        positions = np.flatnonzero(mask)[:_MAX_IDS_SHOWN]
        raise DataError(
            f"Column {column!r} has {_rows(int(mask.sum()))} with a missing customer id "
            f"(first row positions: {_quote_list(list(positions))}). Every transaction needs "
            f"a customer: drop these rows (df.dropna(subset=[{column!r}])) or fill them."
        )


def mixed_id_types_error(uniques: pd.Index, column: str) -> DataError:
    """The error for customer ids that cannot be sorted because their types differ."""
    types = pd.Series([type(v).__name__ for v in uniques]).value_counts()
    listing = ", ".join(f"{t} ({n:,} ids)" for t, n in types.items())
    return DataError(
        f"Customer ids in column {column!r} mix types that cannot be compared: {listing}. "
        f"Give every id one type, e.g. df[{column!r}] = df[{column!r}].astype(str)."
    )


def _timezone_labels(values: np.ndarray, datetime_format: str | None) -> pd.Series:
    """Per-row timezone label ("naive", a zone name, or None when unparseable)."""
    uniques = pd.unique(values)
    labels = []
    for v in uniques:
        try:
            ts = (
                pd.Timestamp(v)
                if datetime_format is None
                else pd.to_datetime(v, format=datetime_format)
            )
        except (ValueError, TypeError):
            labels.append(None)
            continue
        labels.append("naive" if ts.tz is None else str(ts.tz))
    return pd.Series(values).map(dict(zip(uniques, labels, strict=True)))


def _parse_dates(
    dates: pd.Series, column: str, ids: pd.Series, datetime_format: str | None
) -> pd.Series:
    """Parse ``dates`` to a datetime64 Series (tz-aware allowed) or raise DataError."""
    if dates.dtype.kind == "M" or isinstance(dates.dtype, pd.DatetimeTZDtype):
        return dates
    if dates.dtype.kind in "iuf":
        if datetime_format is None or dates.dtype.kind == "f":
            raise DataError(
                f"Column {column!r} holds numbers ({dates.dtype}), not dates. Pass "
                "datetime_format (e.g. datetime_format='%Y%m%d' for integers like 19970101) "
                "or convert first, e.g. pd.to_datetime(df[col], unit='s') for epoch seconds."
            )
        dates = dates.astype(str)
    try:
        parsed = pd.to_datetime(dates, format=datetime_format)
    except (ValueError, TypeError, OverflowError):
        parsed = None
    if parsed is not None and (
        parsed.dtype.kind == "M" or isinstance(parsed.dtype, pd.DatetimeTZDtype)
    ):
        return parsed
    # diagnose: mixed time zones, or values that do not parse
    values = np.asarray(dates, dtype=object)
    labels = _timezone_labels(values, datetime_format)
    zones = labels.dropna()
    if zones.nunique() > 1:
        reference = zones.iloc[0]
        mask = (labels.notna() & (labels != reference)).to_numpy()
        counts = ", ".join(f"{z} ({_rows(n)})" for z, n in zones.value_counts().items())
        raise DataError(
            f"Column {column!r} mixes time zones: {counts}; {_rows(int(mask.sum()))} differ "
            f"from the first row's zone {reference!r} ({_first_ids(ids, mask)}). Convert all "
            f"timestamps to one zone first, e.g. pd.to_datetime(df[{column!r}], utc=True), "
            "then .dt.tz_convert('<your zone>') if purchase days should follow local time."
        )
    mask = labels.isna().to_numpy()
    if not mask.any():  # pragma: no cover - defensive: to_datetime failed for another reason
        mask = pd.to_datetime(dates, format=datetime_format, errors="coerce").isna().to_numpy()
    examples = _quote_list(list(pd.unique(values[mask])[:3]))
    fix = (
        f"change datetime_format (now the format {datetime_format!r}) so that it matches every row"
        if datetime_format
        else "pass a datetime_format that matches every row (e.g. '%Y-%m-%d', or 'ISO8601' "
        "for ISO dates of mixed precision)"
    )
    raise _row_error(
        f"unparseable dates (e.g. {examples})",
        column,
        mask,
        ids,
        f"Fix these values, drop the rows, or {fix}.",
    )


def _date_ticks(dates: pd.Series, wall_time: bool) -> tuple[np.ndarray, str, tzinfo | None]:
    """int64 ticks of a datetime64 Series, their unit and the time zone (or None)."""
    tz = None
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        tz = dates.dtype.tz
        dates = dates.dt.tz_localize(None) if wall_time else dates.dt.tz_convert(None)
    arr = dates.to_numpy()
    unit, _ = np.datetime_data(arr.dtype)
    if unit not in _TICKS_PER_DAY:  # e.g. datetime64[D] or [m]: express in seconds
        arr, unit = arr.astype("datetime64[s]"), "s"
    return arr.view(np.int64), unit, tz


def _parse_amounts(amounts: pd.Series, column: str, ids: pd.Series) -> np.ndarray:
    if amounts.dtype.kind in "iuf":
        values = amounts.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(amounts, errors="coerce")
        bad = (coerced.isna() & amounts.notna()).to_numpy()
        if bad.any():
            examples = _quote_list(list(pd.unique(np.asarray(amounts[bad], dtype=object))[:3]))
            raise _row_error(
                f"non-numeric amounts (e.g. {examples})",
                column,
                bad,
                ids,
                "Convert the column to numbers first, e.g. "
                f"pd.to_numeric(df[{column!r}].str.replace('$', ''))"
                ", and fix or drop the rows that do not convert.",
            )
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        raise _row_error(
            "missing (NaN) or infinite amounts",
            column,
            ~finite,
            ids,
            f"Fill or drop these rows first, e.g. df.dropna(subset=[{column!r}]).",
        )
    return values


def validate_transactions(
    transactions: pd.DataFrame,
    *,
    customer_id_col: str,
    datetime_col: str,
    monetary_value_col: str | None,
    datetime_format: str | None,
    negative_amounts: str,
    merge_same_day: bool,
) -> CheckedTransactions:
    """Check a transaction log and return its columns as arrays.

    Raises :class:`DataError` for missing columns, an empty table, missing ids or dates,
    unparseable dates, mixed time zones, non-numeric / NaN / infinite amounts and
    (with ``negative_amounts="error"``) negative amounts.
    """
    check_negative_amounts_option(negative_amounts)
    require_columns(
        transactions,
        {
            "customer_id_col": customer_id_col,
            "datetime_col": datetime_col,
            "monetary_value_col": monetary_value_col,
        },
    )
    n_rows = len(transactions)
    if n_rows == 0:
        raise DataError(
            "The transactions table is empty (0 rows): there is nothing to summarise. "
            "Check the file or the filter that produced it."
        )
    ids = _column(transactions, customer_id_col)
    _check_ids(ids, customer_id_col)
    dates = _column(transactions, datetime_col)
    missing = dates.isna().to_numpy()
    if missing.any():
        raise _row_error(
            "missing dates",
            datetime_col,
            missing,
            ids,
            f"Drop or fill these rows first, e.g. df.dropna(subset=[{datetime_col!r}]).",
        )
    dates = _parse_dates(dates, datetime_col, ids, datetime_format)
    ticks, unit, tz = _date_ticks(dates, wall_time=merge_same_day)

    amounts = None
    n_negative = n_dropped = n_customers_dropped = 0
    if monetary_value_col is not None:
        amounts = _parse_amounts(_column(transactions, monetary_value_col), monetary_value_col, ids)
        negative = amounts < 0
        n_negative = int(np.count_nonzero(negative))
        if n_negative and negative_amounts == "error":
            raise _row_error(
                "negative amounts (returns or refunds?)",
                monetary_value_col,
                negative,
                ids,
                "A purchase model needs purchases: net each refund against its purchase "
                "yourself, or pass negative_amounts='drop' to drop these rows (the count is "
                "reported), or negative_amounts='keep' to add them into the day's total.",
            )
        if n_negative and negative_amounts == "drop":
            keep = ~negative
            n_before = ids.nunique()
            ids = ids[keep].reset_index(drop=True)
            ticks, amounts = ticks[keep], amounts[keep]
            n_dropped = n_negative
            n_customers_dropped = n_before - ids.nunique()
            warnings.warn(
                f"Dropped {_rows(n_negative)} with negative amounts in column "
                f"{monetary_value_col!r} (negative_amounts='drop'); {n_customers_dropped:,} "
                "customer(s) had no other transaction and are not in the summary. The counts "
                "are in DataFrame.attrs.",
                UserWarning,
                stacklevel=3,
            )
            if len(ids) == 0:
                raise DataError(
                    "Every transaction has a negative amount, so none is left after "
                    "negative_amounts='drop'. Check the sign convention of column "
                    f"{monetary_value_col!r}."
                )
    return CheckedTransactions(
        ids=ids,
        ticks=ticks,
        unit=unit,
        tz=tz,
        wall_time=merge_same_day,
        amounts=amounts,
        customer_id_col=customer_id_col,
        datetime_col=datetime_col,
        monetary_value_col=monetary_value_col,
        n_input_rows=n_rows,
        n_negative_rows=n_negative,
        n_negative_rows_dropped=n_dropped,
        n_customers_dropped=n_customers_dropped,
    )


def resolve_end(value: Any, tx: CheckedTransactions, name: str) -> tuple[pd.Timestamp, int]:
    """Parse an end date (``observation_end``, ``calibration_end``) into the data's ticks.

    A naive end with tz-aware data is read as wall-clock time in the data's zone; an aware
    end with naive data is refused.  Returns the timestamp as the user meant it (naive,
    in the data's clock) and its ticks.
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise DataError(f"{name}={value!r} is not a date; pass e.g. {name}='1997-09-30'.") from err
    if ts is pd.NaT:
        raise DataError(f"{name} is missing (NaT); pass a date, e.g. {name}='1997-09-30'.")
    if ts.tz is not None and tx.tz is None:
        raise DataError(
            f"{name}={ts} is timezone-aware but column {tx.datetime_col!r} is naive, so the "
            f"two cannot be compared. Pass a naive {name} (e.g. {name}='{ts.date()}') or "
            "localize the column with .dt.tz_localize(...)."
        )
    if tx.tz is not None:
        ts = (
            ts.tz_localize(tx.tz, ambiguous=False, nonexistent="shift_forward")
            if ts.tz is None
            else ts.tz_convert(tx.tz)
        )
        ts = ts.tz_localize(None) if tx.wall_time else ts.tz_convert(None)
    ticks = int(np.datetime64(ts.as_unit(tx.unit).asm8, tx.unit).view(np.int64))
    return ts, ticks


def check_none_after(
    times: np.ndarray,
    end: int,
    end_label: str,
    keep_before: str,
    tx: CheckedTransactions,
    name: str,
) -> None:
    """Raise :class:`DataError` if any transaction time is after ``end`` (same units).

    ``keep_before`` is the pandas condition that keeps the rows up to ``end``, for the
    message (e.g. ``< '1997-10-01'`` when whole days count).
    """
    if times.size and times.max() > end:
        mask = times > end
        col = tx.datetime_col
        raise _row_error(
            f"transactions after {name} {end_label}",
            col,
            mask,
            tx.ids,
            f"Pass a later {name} (it defaults to the last transaction date), or drop "
            f"those rows first, e.g. df[df[{col!r}] {keep_before}].",
        )


def check_calibration_end(
    cal: int, first: int, last: int, end: int, labels: Mapping[str, str]
) -> None:
    """Raise :class:`DataError` unless ``first <= cal <= last`` and ``cal < end``."""
    if cal < first or cal > last:
        side = "before the first" if cal < first else "after the last"
        raise DataError(
            f"calibration_end {labels['cal']} is {side} transaction (the data run from "
            f"{labels['first']} to {labels['last']}). Pick a calibration_end inside that "
            "range, so that the calibration period holds transactions and the holdout "
            "period can be compared with them."
        )
    if cal >= end:
        raise DataError(
            f"calibration_end {labels['cal']} must be before observation_end "
            f"{labels['end']}; the holdout period (calibration_end, observation_end] is empty."
        )


# ---------------------------------------------------------------------------------------
# RFM tables


def validate_rfm(df: pd.DataFrame, *, require_monetary: bool = False) -> pd.DataFrame:
    """Check a user-supplied RFM summary and return it with ``frequency`` as int64.

    Parameters
    ----------
    df : DataFrame
        One row per customer (index = customer ids) with columns ``frequency`` (number of
        repeat transactions), ``recency`` (time from first to last purchase) and ``T``
        (time from first purchase to the end of observation), all in one time unit;
        optionally ``monetary_value`` (mean value of the repeat transactions).
    require_monetary : bool
        Require ``monetary_value`` and that it is positive for every customer with
        ``frequency > 0`` (the Gamma-Gamma spend model needs positive spend).

    Returns
    -------
    DataFrame
        A copy of ``df`` (attrs kept) whose ``frequency`` column is int64.

    Raises
    ------
    DataError
        For missing or non-numeric columns, NaN/inf values, non-integer or negative
        frequency, ``T <= 0``, ``recency < 0``, ``recency > T``, ``recency != 0`` when
        ``frequency == 0``, duplicated customer ids, and (with ``require_monetary``)
        non-positive ``monetary_value`` for repeat customers.
    """
    columns = ["frequency", "recency", "T"] + (["monetary_value"] if require_monetary else [])
    require_columns(df, {c: c for c in columns}, what="RFM table")
    if len(df) == 0:
        raise DataError("The RFM table is empty (0 customers).")
    if "monetary_value" in df.columns and "monetary_value" not in columns:
        columns.append("monetary_value")
    ids = df.index
    if ids.has_duplicates:
        dup = ids.duplicated(keep=False)
        raise DataError(
            f"The RFM table has {int(dup.sum()):,} rows with a duplicated customer id "
            f"({_first_ids(ids, dup)}); it needs one row per customer. Summarise the "
            "transactions with summarize_transactions() or de-duplicate the index."
        )
    values: dict[str, np.ndarray] = {}
    for col in columns:
        s = df[col]
        if s.dtype.kind not in "iuf":
            if s.dtype.kind == "b":
                bad = np.ones(len(s), dtype=bool)
            else:
                bad = (pd.to_numeric(s, errors="coerce").isna() & s.notna()).to_numpy()
            if bad.any():
                raise _row_error(
                    f"non-numeric values (dtype {s.dtype})",
                    col,
                    bad,
                    ids,
                    f"Convert it with pd.to_numeric(df[{col!r}]).",
                )
        v = pd.to_numeric(s).to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(v)
        if not finite.all():
            raise _row_error(
                "missing (NaN) or infinite values",
                col,
                ~finite,
                ids,
                "Every customer needs finite frequency, recency and T; fix or drop them.",
            )
        values[col] = v
    f, r, t = values["frequency"], values["recency"], values["T"]
    checks = [
        (f != np.floor(f), "frequency", "a non-integer frequency",
         "frequency counts repeat transactions, so it must be a whole number (2.0 is "
         "fine, 2.5 is not); check that the column holds counts, not averages."),
        (f < 0, "frequency", "a negative frequency",
         "frequency is the number of repeat transactions (>= 0)."),
        (t <= 0, "T", "T <= 0",
         "T is the time from the first purchase to the end of observation and must be "
         "positive; customers who first bought on the last day have T = 0 and cannot be "
         "modelled: end observation later or drop them."),
        (r < 0, "recency", "a negative recency",
         "recency is the time from the first to the last purchase (>= 0)."),
        (r > t, "recency", "recency > T",
         "recency (first to last purchase) cannot exceed T (first purchase to end of "
         "observation); check that both use the same time unit and origin."),
        ((f == 0) & (r != 0), "recency", "recency != 0 although frequency == 0",
         "a customer without repeat purchases has recency 0 by definition."),
    ]  # fmt: skip
    for mask, col, problem, fix in checks:
        if mask.any():
            raise _row_error(problem, col, mask, ids, fix)
    if require_monetary:
        m = values["monetary_value"]
        bad = (f > 0) & (m <= 0)
        if bad.any():
            raise _row_error(
                "monetary_value <= 0 for a customer with repeat purchases",
                "monetary_value",
                bad,
                ids,
                "The Gamma-Gamma spend model needs a positive mean spend per repeat "
                "customer; drop or fix these customers (refunds netted to <= 0?).",
            )
    out = df.copy()
    out["frequency"] = f.astype(np.int64)
    return out
