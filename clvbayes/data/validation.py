"""Every input check of :mod:`clvbayes.data`, in one place.

Each check raises :class:`DataError` with a message that says what is wrong, in which
column, how many rows, the first few offending customer ids and how to fix it.  The
checks are vectorised: they run inside the timed path of
:func:`~clvbayes.data.summarize_transactions` on tens of millions of rows.

Nothing is dropped silently: the only row exclusion (``negative_amounts="drop"``) is
an explicit option, reported in ``DataFrame.attrs`` and by a warning.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError, DataWarning  # DataError is re-exported by clvbayes.data
from clvbayes.units import TIME_UNITS, days_per_unit

__all__ = [
    "DUPLICATE_ROW_OPTIONS",
    "NEGATIVE_AMOUNT_OPTIONS",
    "OUTLYING_DATE_OPTIONS",
    "TIME_UNITS",
    "DataError",
    "validate_monetary",
    "validate_rfm",
    "validate_spend",
]

#: Length of one time unit in days.  ``weeks`` are days / 7, never rounded.

#: What to do with rows whose amount is negative (returns, refunds).
NEGATIVE_AMOUNT_OPTIONS = ("error", "drop", "keep")

#: What to do with rows that are exact copies of an earlier row (a double export?).
DUPLICATE_ROW_OPTIONS = ("warn", "drop", "keep")

#: What to do with dates far outside the bulk of the data (typos such as 2099 or 1500)
#: and with an ``observation_end`` far after the last transaction.
OUTLYING_DATE_OPTIONS = ("error", "drop", "keep")

#: An isolated group of dates is outlying when the gap that separates it from the other
#: dates is longer than this many days *and* longer than the span of the other dates.
OUTLIER_MIN_GAP_DAYS = 365
#: ... and it holds at most this share of the rows (at least one row) ...
OUTLIER_MAX_SHARE = 0.01
#: ... and the other rows outnumber it at least this many times.
OUTLIER_MIN_BULK_RATIO = 10

#: Text that pandas reads as "missing" by default; as customer ids these are kept (they
#: may be real ids) but warned about (they may be placeholders for a missing id).
NA_MARKERS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
    "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip

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


def _first_positions(mask: np.ndarray, rows: np.ndarray | None = None) -> str:
    """``"Rows (counting from 0): 3, 17."`` -- positions in the table as given.

    ``rows`` maps positions in ``mask`` to positions in the input table (when rows were
    dropped before the check); None when they are the same.
    """
    positions = np.flatnonzero(mask)
    if rows is not None:
        positions = rows[positions]
    shown = ", ".join(f"{p:,}" for p in positions[:_MAX_IDS_SHOWN])
    more = ", ..." if positions.size > _MAX_IDS_SHOWN else ""
    return f"Row{'s' if positions.size > 1 else ''} (counting from 0): {shown}{more}."


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def _row_error(
    problem: str,
    column: str,
    mask: np.ndarray,
    ids: pd.Series | pd.Index,
    fix: str,
    rows: np.ndarray | None = None,
) -> DataError:
    """A :class:`DataError` for the rows selected by ``mask`` (``rows``: see _first_positions)."""
    n = int(np.count_nonzero(mask))
    return DataError(
        f"Column {column!r} has {_rows(n)} with {problem} ({_first_ids(ids, mask)}). {fix} "
        f"{_first_positions(mask, rows)}"
    )


# ---------------------------------------------------------------------------------------
# options


def check_time_unit(time_unit: str) -> float:
    """Return the length of ``time_unit`` in days, or raise :class:`DataError`."""
    return days_per_unit(time_unit)


def check_option(name: str, value: Any, options: Sequence[str]) -> None:
    """Raise :class:`DataError` unless ``value`` is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise DataError(f"Unknown {name}={value!r}; use one of {_quote_list(list(options))}.")


def check_negative_amounts_option(negative_amounts: str) -> None:
    """Raise :class:`DataError` unless ``negative_amounts`` is a known option."""
    check_option("negative_amounts", negative_amounts, NEGATIVE_AMOUNT_OPTIONS)


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
        present_cols = [str(c) for c in df.columns]
        sep_hint = ""
        if len(present_cols) == 1:
            seps = [c for c in (";", "\t", "|") if c in present_cols[0]]
            if seps:
                sep_hint = (
                    f" The table has one column whose name contains {seps[0]!r}: the file "
                    f"seems to be separated by {seps[0]!r}, not commas; read it with "
                    f"read_transactions(path, sep={seps[0]!r})."
                )
        raise DataError(
            f"Missing column(s) {names} in the {what}; columns present: "
            f"{_quote_list(present_cols)}.{sep_hint} Rename your columns or pass "
            f"{hint} to name the column(s) that hold these values."
        )
    wanted = [col for col in required.values() if col is not None]
    duplicated = [col for col in dict.fromkeys(wanted) if int((df.columns == col).sum()) > 1]
    if duplicated:
        counts = ", ".join(f"{c!r} ({int((df.columns == c).sum())} times)" for c in duplicated)
        raise DataError(
            f"The {what} has more than one column named {counts}, so it is not clear which "
            "one holds the values. Rename or drop the extra column(s), e.g. "
            "df = df.loc[:, ~df.columns.duplicated()] to keep the first of each name."
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
    ``rows`` holds, for each kept row, its position in the input table (None when no row
    was dropped), so that messages name positions in the table as given.
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
    n_outlying_date_rows: int = 0
    n_outlying_date_rows_dropped: int = 0
    rows: np.ndarray | None = None
    outlying_dates: str = "error"

    @property
    def ticks_per_day(self) -> int:
        return _TICKS_PER_DAY[self.unit]

    def days(self) -> np.ndarray:
        """Calendar day number (days since 1970-01-01, floored) of each row."""
        return self.ticks // self.ticks_per_day

    def day_label(self, day: int) -> str:
        return str(np.datetime64(int(day), "D"))

    def filter(self, keep: np.ndarray) -> None:
        """Keep only the rows where ``keep`` is true (in place; ``rows`` tracks positions)."""
        positions = np.flatnonzero(keep)
        self.rows = positions if self.rows is None else self.rows[positions]
        self.ids = self.ids.take(positions).reset_index(drop=True)
        self.ticks = self.ticks[positions]
        if self.amounts is not None:
            self.amounts = self.amounts[positions]


def _is_text_dtype(dtype: Any) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return True
    if isinstance(dtype, pd.ArrowDtype):
        import pyarrow as pa

        return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(
            dtype.pyarrow_dtype
        )
    return isinstance(dtype, np.dtype) and dtype.kind == "O"


_NUMBER_TYPE_NAMES = {
    "bool", "bool_", "int", "float", "int8", "int16", "int32", "int64", "uint8", "uint16",
    "uint32", "uint64", "float16", "float32", "float64", "Decimal",
}  # fmt: skip


def _check_ids(ids: pd.Series, column: str) -> None:
    """Refuse missing ids: NaN/None, and ``<NA>`` of nullable dtypes (Int64, boolean, ...)."""
    if isinstance(ids.dtype, np.dtype) and ids.dtype.kind in "iub":
        return  # plain numpy integers and booleans cannot be missing
    mask = ids.isna().to_numpy(dtype=bool)
    if not mask.any() and ids.dtype == object:
        kind = pd.api.types.infer_dtype(ids, skipna=True)
        if kind in ("mixed-integer", "mixed-integer-float", "mixed"):
            # True == 1 == 1.0 hash alike: such ids would be one customer without a word
            types = ids.map(lambda v: type(v).__name__).value_counts()
            numeric = [t for t in types.index if t in _NUMBER_TYPE_NAMES]
            if len(numeric) > 1:
                listing = ", ".join(f"{t} ({_rows(int(types[t]))})" for t in numeric)
                raise DataError(
                    f"Customer ids in column {column!r} mix kinds of numbers: {listing}; "
                    "1, 1.0 and True count as one value, so different ids could become one "
                    f"customer. Give every id one type, e.g. df[{column!r}] = "
                    f"df[{column!r}].astype(str) after fixing them."
                )
    if mask.any():
        positions = np.flatnonzero(mask)[:_MAX_IDS_SHOWN]
        raise DataError(
            f"Column {column!r} has {_rows(int(mask.sum()))} with a missing customer id "
            f"(first row positions: {_quote_list(list(positions))}; dtype {ids.dtype}). "
            "Every transaction needs a customer, and a missing id must not be credited to "
            f"another one: drop these rows (df.dropna(subset=[{column!r}])) or fill them."
        )


def check_id_values(
    index: pd.Index, codes: np.ndarray, tx: CheckedTransactions, column: str
) -> None:
    """Checks on the distinct customer ids (after factorisation, so they are cheap).

    Raises :class:`DataError` for empty or blank text ids; warns (:class:`DataWarning`)
    about ids that differ only in leading/trailing white space (one customer split in
    two?) and about ids that read like a missing-value marker ("NA", "null", ...).
    """
    if len(index) and index.dtype.kind == "f":
        big = np.abs(index.to_numpy(dtype=np.float64)) > 2.0**53
        if big.any():
            warnings.warn(
                f"Customer ids in column {column!r} are floating-point numbers above 2**53 "
                f"(e.g. {index[big][0]!r}), where distinct integers share one float: some "
                "customers may have been merged before clvbayes saw them. Read the ids as "
                "text or integers (read_transactions reads CSV ids as text).",
                DataWarning,
                stacklevel=4,
            )
        return
    if not len(index) or not (_is_text_dtype(index.dtype)):
        return
    values = pd.Series(index.array)  # string dtypes keep their vectorised (Arrow) methods
    if values.dtype == object and not values.map(lambda v: isinstance(v, str)).any():
        return  # object ids without any text (e.g. Python ints): nothing to strip
    text = values
    stripped = text.str.strip()  # NaN for values that are not text
    if stripped.isna().all():
        return
    blank = (stripped == "").to_numpy(dtype=bool)
    if blank.any():
        mask = np.isin(codes, np.flatnonzero(blank))
        shown = _quote_list(list(values[blank][:_MAX_IDS_SHOWN]))
        raise DataError(
            f"Column {column!r} has {_rows(int(mask.sum()))} with an empty or blank customer "
            f"id ({shown}). An empty id is a missing id, and all such rows would be one "
            f"customer: drop them (df = df[df[{column!r}].str.strip() != '']) or fill them. "
            f"{_first_positions(mask, tx.rows)}"
        )
    padded = (stripped.notna() & (stripped != text)).to_numpy(dtype=bool)
    if padded.any():
        clash = stripped.duplicated(keep=False).to_numpy(dtype=bool) & (
            stripped.isin(stripped[padded]).to_numpy(dtype=bool)
        )
        if clash.any():
            groups = stripped[clash].drop_duplicates()[:3]
            examples = "; ".join(
                _quote_list(list(values[clash & (stripped == g).to_numpy()])) for g in groups
            )
            warnings.warn(
                f"Customer ids in column {column!r} differ only in leading/trailing white "
                f"space ({examples}{'; ...' if stripped[clash].nunique() > 3 else ''}): "
                f"{int(clash.sum()):,} ids that are kept as different customers. If they are "
                f"one customer, strip them first: df[{column!r}] = df[{column!r}].str.strip().",
                DataWarning,
                stacklevel=4,
            )
    markers = text.isin(NA_MARKERS).to_numpy(dtype=bool)
    if markers.any():
        counts = np.bincount(codes, minlength=len(index))
        listing = ", ".join(
            f"{v!r} ({_rows(int(counts[k]))})"
            for k, v in zip(np.flatnonzero(markers)[:_MAX_IDS_SHOWN], values[markers], strict=False)
        )
        warnings.warn(
            f"Customer ids in column {column!r} include text that often marks a missing id: "
            f"{listing}. They are kept as real customer ids; if they are placeholders, drop "
            f"those rows first (e.g. df = df[~df[{column!r}].isin(['NA', 'null'])]), or "
            "every such row is credited to one customer.",
            DataWarning,
            stacklevel=4,
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
        labels.append("naive" if ts is pd.NaT or ts.tz is None else str(ts.tz))
    return pd.Series(values).map(dict(zip(uniques, labels, strict=True)))


_TWO_DIGIT_YEAR = re.compile(r"^\s*(\d{1,2})([/.\-])(\d{1,2})\2(\d{2})(\s.*)?$")
_SPECIAL_DATE_WORDS = ("now", "today", "tomorrow", "yesterday")


def _check_date_types(dates: pd.Series, column: str, ids: pd.Series) -> None:
    """Refuse numbers or booleans among text/datetime values (5 would become 1970-01-01)."""
    if dates.dtype != object:
        return
    kind = pd.api.types.infer_dtype(dates, skipna=True)
    if kind in ("string", "datetime", "datetime64", "date", "empty"):
        return
    numeric = dates.map(lambda v: isinstance(v, (bool, int, float, np.bool_, np.number))).to_numpy(
        dtype=bool
    )
    if numeric.any():
        examples = _quote_list(list(pd.unique(np.asarray(dates[numeric], dtype=object))[:3]))
        raise _row_error(
            f"numbers among the dates (e.g. {examples})",
            column,
            numeric,
            ids,
            "A number in a date column is not a date (pandas would read 5 as "
            "1970-01-01 00:00:00.000000005): fix these values, or convert the whole column "
            "yourself, e.g. pd.to_datetime(df[col].astype(str), format='%Y%m%d').",
        )


def _date_format_candidates(first: str) -> list[str]:
    """The formats the first text date can have: one, or month-first and day-first."""
    from pandas.tseries.api import guess_datetime_format

    month_first = guess_datetime_format(first, dayfirst=False)
    with warnings.catch_warnings():  # pandas warns that ISO dates ignore dayfirst: we know
        warnings.simplefilter("ignore", UserWarning)
        day_first = guess_datetime_format(first, dayfirst=True)
    found = [f for f in dict.fromkeys([month_first, day_first]) if f is not None]
    if len(found) == 2 and found[0].startswith("%Y"):
        return found[:1]  # year first: year-month-day (ISO 8601); year-day-month is not a thing
    return found


def _infer_and_parse(
    dates: pd.Series, column: str, ids: pd.Series
) -> tuple[pd.Series | None, str | None]:
    """Parse text dates without a format, refusing every guess pandas would make.

    Returns the parsed Series (or None when parsing failed) and the format used.
    """
    first = dates.iloc[0]
    if not isinstance(first, str):  # datetime objects (maybe mixed with text): no format
        try:
            return pd.to_datetime(dates), None
        except (ValueError, TypeError, OverflowError):
            return None, None
    candidates = _date_format_candidates(first.strip())
    if any("%y" in c for c in candidates) or (not candidates and _TWO_DIGIT_YEAR.match(first)):
        m = _TWO_DIGIT_YEAR.match(first)
        sep = m.group(2) if m else "/"
        options = [f"%m{sep}%d{sep}%y", f"%d{sep}%m{sep}%y"] if m else candidates
        raise DataError(
            f"Column {column!r} has two-digit years (first value {first!r}): '69' could be "
            "1969 or 2069, and pandas would guess. Write four-digit years, or pass the format "
            f"explicitly, e.g. datetime_format={options[0]!r}"
            + (f" or datetime_format={options[1]!r}" if len(options) > 1 else "")
            + " (Python then reads 69-99 as 1969-1999 and 00-68 as 2000-2068)."
        )
    if not candidates:
        try:
            return pd.to_datetime(dates, format="ISO8601"), "ISO8601"
        except (ValueError, TypeError, OverflowError):
            raise DataError(
                f"Column {column!r}: cannot infer a date format from the first value "
                f"{first!r}, and guessing each value separately can misread dates silently. "
                "Pass the format, e.g. datetime_format='%d %B %Y' (see Python's strftime "
                "codes), or datetime_format='ISO8601' for ISO 8601 dates."
            ) from None
    if len(candidates) == 1:
        try:
            return pd.to_datetime(dates, format=candidates[0]), candidates[0]
        except (ValueError, TypeError, OverflowError):
            return None, candidates[0]
    parsed = {}
    failures = {}
    for fmt in candidates:
        try:
            out = pd.to_datetime(dates, format=fmt, errors="coerce")
        except (ValueError, TypeError, OverflowError):  # e.g. mixed time zones
            failures[fmt] = len(dates)
            continue
        parsed[fmt] = out
        failures[fmt] = int(out.isna().sum())
    ok = [fmt for fmt in candidates if failures[fmt] == 0]
    if len(ok) == 2:
        a, b = ok
        raise DataError(
            f"Column {column!r} has dates whose order of day and month is ambiguous: every "
            f"value reads both as {a!r} ({first!r} = {parsed[a].iloc[0].date()}) and as "
            f"{b!r} ({first!r} = {parsed[b].iloc[0].date()}), because no day is above 12. "
            f"Pass the format: datetime_format={a!r} or datetime_format={b!r}."
        )
    if len(ok) == 1:
        return parsed[ok[0]], ok[0]
    return None, min(candidates, key=failures.get)


def _parse_dates(
    dates: pd.Series, column: str, ids: pd.Series, datetime_format: str | None
) -> pd.Series:
    """Parse ``dates`` to a datetime64 Series (tz-aware allowed) or raise DataError."""
    if dates.dtype.kind == "M" or isinstance(dates.dtype, pd.DatetimeTZDtype):
        return dates
    if dates.dtype.kind == "b" or isinstance(dates.dtype, pd.BooleanDtype):
        raise DataError(
            f"Column {column!r} holds booleans ({dates.dtype}), not dates; pass the column "
            "that holds the purchase dates as datetime_col=..."
        )
    if isinstance(dates.dtype, pd.PeriodDtype):
        raise DataError(
            f"Column {column!r} holds periods ({dates.dtype}), not dates: a period has no "
            f"purchase day. Convert it, e.g. df[{column!r}] = df[{column!r}].dt.to_timestamp(), "
            "if the start of each period is meant."
        )
    if dates.dtype.kind in "iuf":
        if datetime_format is None or dates.dtype.kind == "f":
            raise DataError(
                f"Column {column!r} holds numbers ({dates.dtype}), not dates. Pass "
                "datetime_format (e.g. datetime_format='%Y%m%d' for integers like 19970101) "
                "or convert first, e.g. pd.to_datetime(df[col], unit='s') for epoch seconds "
                "or pd.to_datetime(df[col], unit='D', origin='1899-12-30') for Excel day "
                "numbers."
            )
        dates = dates.astype(str)
    _check_date_types(dates, column, ids)
    used = datetime_format
    if datetime_format is None:
        parsed, used = _infer_and_parse(dates, column, ids)
    else:
        try:
            parsed = pd.to_datetime(dates, format=datetime_format)
        except (ValueError, TypeError, OverflowError):
            parsed = None
    if parsed is not None and (
        parsed.dtype.kind == "M" or isinstance(parsed.dtype, pd.DatetimeTZDtype)
    ):
        _check_parsed(parsed, dates, column, ids)
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
    try:
        mask = pd.to_datetime(dates, format=used, errors="coerce").isna().to_numpy()
    except (ValueError, TypeError, OverflowError):
        mask = np.zeros(len(values), dtype=bool)
    if not mask.any():
        mask = labels.isna().to_numpy()
    if not mask.any():  # pragma: no cover - defensive: to_datetime failed for another reason
        mask = np.ones(len(values), dtype=bool)
    examples = _quote_list(list(pd.unique(values[mask])[:3]))
    if datetime_format:
        fix = (
            f"change datetime_format (now the format {datetime_format!r}) so that it "
            "matches every row"
        )
    else:
        inferred = f" (the first value reads as {used!r})" if used else ""
        fix = (
            f"pass a datetime_format that matches every row{inferred}, e.g. '%Y-%m-%d', or "
            "'ISO8601' for ISO dates of mixed precision"
        )
    raise _row_error(
        f"unparseable dates (e.g. {examples})",
        column,
        mask,
        ids,
        f"Fix these values, drop the rows, or {fix}.",
    )


def _check_parsed(parsed: pd.Series, dates: pd.Series, column: str, ids: pd.Series) -> None:
    """After parsing text: refuse 'NaT' text (missing) and words such as 'now' or 'today'."""
    missing = parsed.isna().to_numpy(dtype=bool)
    if missing.any():
        examples = _quote_list(list(pd.unique(np.asarray(dates[missing], dtype=object))[:3]))
        raise _row_error(
            f"missing dates (text such as {examples})",
            column,
            missing,
            ids,
            f"Drop or fill these rows first, e.g. df = df[df[{column!r}] != 'NaT'].",
        )
    # pandas reads 'now' / 'today' as the current time: look at rows dated today or later
    naive = parsed.dt.tz_localize(None) if isinstance(parsed.dtype, pd.DatetimeTZDtype) else parsed
    recent = (naive >= pd.Timestamp.now().normalize() - pd.Timedelta(days=2)).to_numpy(dtype=bool)
    if recent.any():
        text = pd.Series(np.asarray(dates, dtype=object)[recent])
        words = text.map(
            lambda v: isinstance(v, str) and v.strip().lower() in _SPECIAL_DATE_WORDS
        ).to_numpy(dtype=bool)
        if words.any():
            mask = np.zeros(len(parsed), dtype=bool)
            mask[np.flatnonzero(recent)[words]] = True
            examples = _quote_list(list(pd.unique(text[words])[:3]))
            raise _row_error(
                f"words instead of dates (e.g. {examples}; pandas would read them as the "
                "current time)",
                column,
                mask,
                ids,
                "Replace them with the actual purchase dates, or drop these rows.",
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


_DECIMAL_COMMA = re.compile(r"^\s*-?\d+,\d{1,2}\s*$")
_THOUSANDS_COMMA = re.compile(r"^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$")


def _parse_amounts(amounts: pd.Series, column: str, ids: pd.Series) -> np.ndarray:
    if amounts.dtype.kind == "b" or isinstance(amounts.dtype, pd.BooleanDtype):
        raise DataError(
            f"Column {column!r} holds booleans ({amounts.dtype}), not amounts; pass the "
            "column that holds the transaction values as monetary_value_col=..."
        )
    if amounts.dtype.kind in "iuf":
        values = amounts.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(amounts, errors="coerce")
        bad = (coerced.isna() & amounts.notna()).to_numpy()
        if bad.any():
            bad_values = pd.unique(np.asarray(amounts[bad], dtype=object))
            examples = _quote_list(list(bad_values[:3]))
            text = [v for v in bad_values[:20] if isinstance(v, str)]
            if text and all(_DECIMAL_COMMA.match(v) for v in text):
                hint = (
                    "They use a decimal comma: read the file with "
                    "read_transactions(path, decimal=',') (and sep=';' if the columns are "
                    "separated by semicolons)."
                )
            elif text and all(_THOUSANDS_COMMA.match(v) for v in text):
                hint = "They use a thousands separator: read the file with thousands=','."
            else:
                hint = (
                    "Convert the column to numbers first, e.g. "
                    f"pd.to_numeric(df[{column!r}].str.replace('$', ''))"
                    ", and fix or drop the rows that do not convert."
                )
            raise _row_error(f"non-numeric amounts (e.g. {examples})", column, bad, ids, hint)
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


# ---------------------------------------------------------------------------------------
# outlying dates


def outlying_day_bounds(days: np.ndarray, counts: np.ndarray) -> tuple[int, int] | None:
    """The range of days that holds the bulk of the data, or None when nothing is outlying.

    An isolated group of dates at either end is *outlying* when the gap between it and
    the other dates is longer than :data:`OUTLIER_MIN_GAP_DAYS` and longer than the span
    of the other dates, while it holds at most :data:`OUTLIER_MAX_SHARE` of the rows (at
    least one) and the other rows outnumber it :data:`OUTLIER_MIN_BULK_RATIO` times.  A
    2099-01-01 typo among two years of data is; a quiet month, a slow start or a growing
    business is not.

    Parameters
    ----------
    days : ndarray of int
        Distinct day numbers (days since 1970-01-01), sorted ascending.
    counts : ndarray of int
        Rows on each day (same length).  Partitioned data can add up the
        ``(day, count)`` histograms of its parts and call this once.

    Returns
    -------
    (first, last) or None
        Rows dated before day ``first`` or after day ``last`` are outlying.
    """
    days = np.asarray(days, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if days.size < 2:
        return None
    max_rows = max(1, int(OUTLIER_MAX_SHARE * n))

    def ok(group: np.ndarray, rest: np.ndarray, gap: np.ndarray, span: np.ndarray) -> np.ndarray:
        return (
            (group <= max_rows)
            & (rest >= OUTLIER_MIN_BULK_RATIO * group)
            & (gap > np.maximum(OUTLIER_MIN_GAP_DAYS, span))
        )

    def cut_high(lo: int, hi: int) -> int:
        """New last index: drop the largest outlying group days[j:hi+1]."""
        d, c = days[lo : hi + 1], counts[lo : hi + 1]
        if d.size < 2:
            return hi
        group = np.cumsum(c[::-1])[::-1][1:]  # rows on d[j:], j = 1..m-1
        good = np.flatnonzero(ok(group, c.sum() - group, np.diff(d), d[:-1] - d[0]))
        return hi if good.size == 0 else lo + int(good[0])

    def cut_low(lo: int, hi: int) -> int:
        """New first index: drop the largest outlying group days[lo:j+1]."""
        d, c = days[lo : hi + 1], counts[lo : hi + 1]
        if d.size < 2:
            return lo
        group = np.cumsum(c)[:-1]  # rows on d[:j+1], j = 0..m-2
        good = np.flatnonzero(ok(group, c.sum() - group, np.diff(d), d[-1] - d[1:]))
        return lo if good.size == 0 else lo + int(good[-1]) + 1

    lo, hi = 0, days.size - 1
    hi = cut_high(lo, hi)
    lo = cut_low(lo, hi)
    hi = cut_high(lo, hi)
    if lo == 0 and hi == days.size - 1:
        return None
    return int(days[lo]), int(days[hi])


def _day_histogram(day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = int(day.min()), int(day.max())
    if hi - lo < 50_000_000:
        counts = np.bincount(day - lo)
        present = np.flatnonzero(counts)
        return present + lo, counts[present]
    return np.unique(day, return_counts=True)  # pragma: no cover - spans beyond 100,000 years


def _handle_outlying_dates(tx: CheckedTransactions, option: str) -> None:
    """Find rows dated far outside the bulk of the data; refuse, drop or keep them."""
    day = tx.days()
    bounds = outlying_day_bounds(*_day_histogram(day))
    if bounds is None:
        return
    first, last = bounds
    mask = (day < first) | (day > last)
    n = int(np.count_nonzero(mask))
    tx.n_outlying_date_rows = n
    if option == "keep":
        return
    examples = _quote_list([tx.day_label(d) for d in pd.unique(day[mask])[:3]])
    what = (
        f"dates far outside the bulk of the data (e.g. {examples}; the other "
        f"{_rows(len(day) - n)} run from {tx.day_label(first)} to {tx.day_label(last)}, and a "
        "gap longer than that separates them)"
    )
    if option == "error":
        raise _row_error(
            what,
            tx.datetime_col,
            mask,
            tx.ids,
            "A typo in one year (2099 for 2019, 1500 for 2015) would become everyone's "
            "observation end or a first purchase. Fix these dates; or pass "
            "outlying_dates='drop' to drop these rows (the count is recorded), or "
            "outlying_dates='keep' if they are real.",
            tx.rows,
        )
    n_before = tx.ids.nunique()
    positions = _first_positions(mask, tx.rows)
    tx.filter(~mask)
    tx.n_outlying_date_rows_dropped = n
    n_lost = n_before - tx.ids.nunique()
    warnings.warn(
        f"Dropped {_rows(n)} in column {tx.datetime_col!r} with {what} "
        f"(outlying_dates='drop'); {n_lost:,} customer(s) had no other transaction and are "
        f"not in the summary. {positions} The count is in attrs['n_outlying_date_rows_dropped'].",
        DataWarning,
        stacklevel=4,
    )


def _warn_future_dates(tx: CheckedTransactions) -> None:
    """Warn about purchases dated after today (a clock, a two-digit year or a typo?)."""
    day = tx.days()
    tomorrow = int(np.datetime64(pd.Timestamp.now().date(), "D").astype(np.int64)) + 1
    future = day > tomorrow
    if future.any():
        n = int(np.count_nonzero(future))
        warnings.warn(
            f"Column {tx.datetime_col!r} has {_rows(n)} dated after today (latest "
            f"{tx.day_label(int(day.max()))}; {_first_ids(tx.ids, future)}): purchases "
            "cannot have happened yet. Check the dates (two-digit years, a wrong clock, a "
            f"typo) and drop or fix these rows. {_first_positions(future, tx.rows)}",
            DataWarning,
            stacklevel=4,
        )


def check_end_gap(first_day: int, last_day: int, end_day: int, name: str, option: str) -> None:
    """Refuse or warn when ``end_day`` (an explicit end) is far after the last transaction.

    Every customer's T runs to the end, so an end long after the data makes every customer
    look lapsed.  An error when the gap is longer than the whole history and than
    :data:`OUTLIER_MIN_GAP_DAYS`; a :class:`DataWarning` when it is longer than half the
    history and than 90 days.  ``option="keep"`` (``outlying_dates``) accepts it silently.
    """
    gap, span = end_day - last_day, last_day - first_day
    if gap <= 0 or option == "keep":
        return

    def label(d: int) -> str:
        return str(np.datetime64(int(d), "D"))

    text = (
        f"{name}={label(end_day)} is {gap:,} days after the last transaction "
        f"({label(last_day)}), while the data span {span:,} days ({label(first_day)} to "
        f"{label(last_day)}): every customer's T runs to {name}, so every customer would look "
        "lapsed."
    )
    if gap > max(span, OUTLIER_MIN_GAP_DAYS):
        raise DataError(
            f"{text} Check {name} for a typo (e.g. 2099 for 1999), or leave it out to end at "
            f"the last transaction; pass outlying_dates='keep' if the period really ended "
            "then."
        )
    if gap > max(span / 2, 90):
        warnings.warn(
            f"{text} Check {name}; pass outlying_dates='keep' if this is intended.",
            DataWarning,
            stacklevel=4,
        )


# ---------------------------------------------------------------------------------------
# exact duplicate rows


def _row_hash32(codes: np.ndarray, tx: CheckedTransactions) -> np.ndarray:
    """A 32-bit hash of (customer code, time, amount) per row (multiply-xorshift)."""
    with np.errstate(over="ignore"):
        h = codes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h += tx.ticks.view(np.uint64)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        if tx.amounts is not None:
            h ^= (tx.amounts + 0.0).view(np.uint64) * np.uint64(0x94D049BB133111EB)  # -0.0 == 0.0
        h ^= h >> np.uint64(32)
    return h.astype(np.uint32)


def find_duplicate_rows(
    transactions: pd.DataFrame, codes: np.ndarray, tx: CheckedTransactions
) -> np.ndarray:
    """Mask (over the kept rows) of rows that are exact copies of an earlier row.

    "Exact" means equal in every column of the table as given (extra columns such as an
    order id count too).  A 32-bit hash of customer code, time and amount is sorted to
    find the rows that may repeat (about 1 s per 10 million rows); only those are
    compared column by column with pandas.
    """
    n = codes.size
    if n < 2:
        return np.zeros(n, dtype=bool)
    h = _row_hash32(codes, tx)
    s = np.sort(h)
    repeated = np.unique(s[1:][s[1:] == s[:-1]])
    if repeated.size == 0:
        return np.zeros(n, dtype=bool)
    slot = np.minimum(np.searchsorted(repeated, h), repeated.size - 1)
    positions = np.flatnonzero(repeated[slot] == h)  # (np.isin sorts all rows again)
    rows = positions if tx.rows is None else tx.rows[positions]
    subset = transactions.iloc[rows]
    if isinstance(subset.index, pd.MultiIndex) or subset.index.name is not None:
        subset = subset.reset_index()
    try:
        dup = subset.duplicated(keep="first").to_numpy(dtype=bool)
    except TypeError:  # unhashable cells (lists): compare their text
        dup = subset.astype(str).duplicated(keep="first").to_numpy(dtype=bool)
    out = np.zeros(n, dtype=bool)
    out[positions[dup]] = True
    return out


def handle_duplicate_rows(
    transactions: pd.DataFrame, codes: np.ndarray, tx: CheckedTransactions, option: str
) -> tuple[np.ndarray | None, int]:
    """Count exact duplicate rows; warn, or return the mask of rows to keep ("drop").

    Returns ``(keep mask or None, number of duplicate rows)``.
    """
    dup = find_duplicate_rows(transactions, codes, tx)
    n = int(np.count_nonzero(dup))
    if n == 0 or option == "keep":
        return None, n
    share = n / max(len(dup), 1)
    ids, rows = _first_ids(tx.ids, dup), _first_positions(dup, tx.rows)
    if option == "drop":
        warnings.warn(
            f"Dropped {_rows(n)} ({share:.1%}) that are exact copies of an earlier row "
            f"(duplicate_rows='drop'; {ids}). The count is in "
            f"attrs['n_duplicate_rows_dropped']. {rows}",
            DataWarning,
            stacklevel=4,
        )
        return ~dup, n
    if tx.amounts is not None:  # without amounts, copies merge into one occasion: no effect
        warnings.warn(
            f"{_rows(n)} ({share:.1%} of {len(dup):,}) are exact copies of an earlier row, "
            f"equal in every column ({ids}). They are kept and add to the spend, as a double "
            "export would: pass duplicate_rows='drop' to drop the copies, or "
            f"duplicate_rows='keep' if they are real repeated purchases. {rows}",
            DataWarning,
            stacklevel=4,
        )
    return None, n


def validate_transactions(
    transactions: pd.DataFrame,
    *,
    customer_id_col: str,
    datetime_col: str,
    monetary_value_col: str | None,
    datetime_format: str | None,
    negative_amounts: str,
    merge_same_day: bool,
    outlying_dates: str = "error",
) -> CheckedTransactions:
    """Check a transaction log and return its columns as arrays.

    Raises :class:`DataError` for missing or duplicated columns, an empty table, missing
    ids (also ``<NA>`` in nullable dtypes) or dates, unparseable, ambiguous (day/month
    order, two-digit years) or outlying dates, mixed time zones, non-numeric / NaN /
    infinite amounts and (with ``negative_amounts="error"``) negative amounts.
    """
    check_negative_amounts_option(negative_amounts)
    check_option("outlying_dates", outlying_dates, OUTLYING_DATE_OPTIONS)
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
    missing = dates.isna().to_numpy(dtype=bool)
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
    if monetary_value_col is not None:
        amounts = _parse_amounts(_column(transactions, monetary_value_col), monetary_value_col, ids)
    tx = CheckedTransactions(
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
        outlying_dates=outlying_dates,
    )
    _handle_outlying_dates(tx, outlying_dates)
    _warn_future_dates(tx)
    if tx.amounts is not None:
        negative = tx.amounts < 0
        n_negative = int(np.count_nonzero(negative))
        tx.n_negative_rows = n_negative
        if n_negative and negative_amounts == "error":
            raise _row_error(
                "negative amounts (returns or refunds?)",
                monetary_value_col,
                negative,
                tx.ids,
                "A purchase model needs purchases: net each refund against its purchase "
                "yourself, or pass negative_amounts='drop' to drop these rows (the count is "
                "reported), or negative_amounts='keep' to add them into the day's total.",
                tx.rows,
            )
        if n_negative and negative_amounts == "drop":
            n_before = tx.ids.nunique()
            tx.filter(~negative)
            tx.n_negative_rows_dropped = n_negative
            tx.n_customers_dropped = n_before - tx.ids.nunique()
            warnings.warn(
                f"Dropped {_rows(n_negative)} with negative amounts in column "
                f"{monetary_value_col!r} (negative_amounts='drop'); {tx.n_customers_dropped:,} "
                "customer(s) had no other transaction and are not in the summary. The counts "
                "are in DataFrame.attrs.",
                UserWarning,
                stacklevel=3,
            )
    if len(tx.ids) == 0:
        if tx.n_negative_rows_dropped:
            raise DataError(
                "Every transaction has a negative amount, so none is left after "
                "negative_amounts='drop'. Check the sign convention of column "
                f"{monetary_value_col!r}."
            )
        raise DataError(  # pragma: no cover - an outlying group is never all rows
            "No transaction is left after outlying_dates='drop'; check the dates."
        )
    return tx


def resolve_end(value: Any, tx: CheckedTransactions, name: str) -> tuple[pd.Timestamp, int]:
    """Parse an end date (``observation_end``, ``calibration_end``) into the data's ticks.

    A naive end with tz-aware data is read as wall-clock time in the data's zone; an aware
    end with naive data is refused.  Returns the timestamp as the user meant it (naive,
    in the data's clock) and its ticks.
    """
    if isinstance(value, str) and value.strip().lower() in _SPECIAL_DATE_WORDS:
        raise DataError(
            f"{name}={value!r} is a word, not a date (pandas would read it as the current "
            f"time); pass the date, e.g. {name}='1997-09-30'."
        )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as err:
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
    try:
        ticks = int(np.datetime64(ts.as_unit(tx.unit).asm8, tx.unit).view(np.int64))
    except (ValueError, OverflowError) as err:
        raise DataError(
            f"{name}={value!r} is outside the range of dates the data's resolution "
            f"({tx.unit}) can hold; check it for a typo."
        ) from err
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
            tx.rows,
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
        ``T = 0`` is allowed for a customer without repeat purchases (acquired at the end
        of observation: it adds nothing to the BG/NBD likelihood and is scored as a new
        customer, P(alive) = 1);
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
        frequency, ``T < 0`` (or ``T == 0`` with repeat purchases), ``recency < 0``,
        ``recency > T``, ``recency != 0`` when ``frequency == 0``, duplicated customer ids, and (with ``require_monetary``)
        non-positive ``monetary_value`` for repeat customers.
    """
    columns = ["frequency", "recency", "T"] + (["monetary_value"] if require_monetary else [])
    require_columns(df, {c: c for c in columns}, what="RFM table")
    if len(df) == 0:
        raise DataError("The RFM table is empty (0 customers).")
    if "monetary_value" in df.columns and "monetary_value" not in columns:
        columns.append("monetary_value")
    ids = df.index
    missing_ids = np.asarray(ids.isna(), dtype=bool)
    if missing_ids.any():
        raise DataError(
            f"The RFM table has {int(missing_ids.sum()):,} row(s) with a missing customer id "
            f"in its index (dtype {ids.dtype}; {_first_positions(missing_ids)[:-1]}); every "
            "row must belong to one customer. Drop them, e.g. df = df[df.index.notna()]."
        )
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
        (t < 0, "T", "T < 0",
         "T is the time from the first purchase to the end of observation (>= 0); check "
         "that the end of observation is after every first purchase."),
        ((t == 0) & (f > 0), "T", "T == 0 although frequency > 0",
         "only a customer without repeat purchases can have T = 0 (first purchase at the "
         "end of observation)."),
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
        _check_positive_monetary(f, values["monetary_value"], ids)
    out = df.copy()
    out["frequency"] = f.astype(np.int64)
    return out


def _check_positive_monetary(f: np.ndarray, m: np.ndarray, ids) -> None:
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


def validate_spend(df: pd.DataFrame) -> pd.DataFrame:
    """Check the columns a spend model needs, on any time grid: ``frequency`` and ``monetary_value``.

    ``frequency`` (repeat transactions) must be a finite whole number >= 0, ``monetary_value``
    as in :func:`validate_monetary`.  Ids must be unique.  Returns a copy with ``frequency``
    as int64.
    """
    require_columns(df, {"frequency": "frequency", "monetary_value": "monetary_value"},
                    what="customer table")  # fmt: skip
    if len(df) == 0:
        raise DataError("The customer table is empty (0 customers).")
    ids = df.index
    if ids.has_duplicates:
        dup = ids.duplicated(keep=False)
        raise DataError(
            f"The customer table has {int(dup.sum()):,} rows with a duplicated customer id "
            f"({_first_ids(ids, dup)}); it needs one row per customer."
        )
    f = pd.to_numeric(df["frequency"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(f) | (f < 0) | (f != np.floor(f))
    if bad.any():
        raise _row_error(
            "a missing, non-numeric, negative or non-integer frequency", "frequency", bad, ids,
            "frequency counts repeat transactions: a whole number >= 0.",
        )  # fmt: skip
    validate_monetary(df)
    out = df.copy()
    out["frequency"] = f.astype(np.int64)
    return out


def validate_monetary(df: pd.DataFrame) -> None:
    """Check ``monetary_value`` of an already validated customer table (any time grid).

    Every customer needs a finite, numeric ``monetary_value`` (mean value of the repeat
    transactions, currency), positive for customers with ``frequency > 0``.

    Raises
    ------
    DataError
        Naming the column, the first offending customer ids and the fix.
    """
    require_columns(df, {"monetary_value": "monetary_value"}, what="customer table")
    s = df["monetary_value"]
    ids = df.index
    if s.dtype.kind not in "iuf":
        bad = (pd.to_numeric(s, errors="coerce").isna() & s.notna()).to_numpy() | (
            s.dtype.kind == "b"
        )
        if bad.any():
            raise _row_error(
                f"non-numeric values (dtype {s.dtype})", "monetary_value", bad, ids,
                "Convert it with pd.to_numeric(df['monetary_value']).",
            )  # fmt: skip
    m = pd.to_numeric(s).to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(m).all():
        raise _row_error(
            "missing (NaN) or infinite values", "monetary_value", ~np.isfinite(m), ids,
            "Every customer needs a finite monetary_value (0 without repeat purchases).",
        )  # fmt: skip
    _check_positive_monetary(df["frequency"].to_numpy(dtype=float), m, ids)
