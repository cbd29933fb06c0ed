"""From a transaction log to the RFM summary the BG/NBD and Gamma-Gamma models use.

For each customer the summary holds (Fader, Hardie & Lee 2005, "Counting your customers
the easy way", Marketing Science 24(2), section 2):

- ``frequency`` x: the number of *repeat* transactions (the first purchase is not counted);
- ``recency`` t_x: the time from the first to the last purchase (0 when x = 0);
- ``T``: the time from the first purchase to the end of observation;
- ``monetary_value`` zbar: the mean value of the repeat transactions (0 when x = 0),
  as in the Gamma-Gamma model (Fader, Hardie & Lee 2005, "RFM and CLV", JMR 42(4)).

Times are in days or weeks (days / 7, fractional, never rounded).  By default dates are
floored to the calendar day and a customer's purchases on one day are one transaction
(their amounts added), which is how the published CDNOW summary is built.

The core is written with NumPy for speed on tens of millions of rows: ids are factorized
to integer codes, times become integer ticks, one sort of the combined
(customer, time) key finds the distinct purchase occasions, and ``bincount`` adds up the
amounts.  No per-customer Python loop, no pandas groupby.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.data.validation import (
    DUPLICATE_ROW_OPTIONS,
    NA_MARKERS,
    CheckedTransactions,
    DataError,
    check_end_gap,
    check_id_values,
    check_none_after,
    check_option,
    check_time_unit,
    handle_duplicate_rows,
    mixed_id_types_error,
    resolve_end,
    validate_transactions,
)

__all__ = ["read_transactions", "summarize_transactions"]

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt", ".tsv")


def _csv_error(path: Path, err: Exception, sep: str | None, encoding: str | None) -> DataError:
    """A :class:`DataError` naming the file for a pandas/codec failure while reading a CSV."""
    if isinstance(err, UnicodeDecodeError):
        return DataError(
            f"Cannot read {str(path)!r} as text in the encoding {encoding or 'utf-8'!r} "
            f"(byte {err.object[err.start : err.start + 1]!r} at position {err.start:,} does not "
            "decode). Pass the file's encoding, e.g. encoding='latin-1', encoding='cp1252' or "
            "encoding='utf-16'."
        )
    if isinstance(err, pd.errors.EmptyDataError):
        return DataError(
            f"{str(path)!r} is empty (no header line and no rows): there is nothing to read."
        )
    hint = "" if sep is not None else " If it is not comma-separated, pass sep=..., e.g. sep=';'."
    return DataError(f"Cannot read {str(path)!r} as CSV: {err}.{hint}")


def _read_csv(
    path: Path,
    customer_id_col: str,
    columns: list[str] | None,
    sep: str | None,
    encoding: str | None,
    read_kwargs: dict[str, Any],
) -> pd.DataFrame:
    name = path.name.lower()
    if sep is None and name.endswith(".tsv"):
        sep = "\t"
    base = {"sep": "," if sep is None else sep, "encoding": encoding}
    for key in ("compression", "header", "skiprows", "comment", "quotechar", "engine"):
        if key in read_kwargs:
            base[key] = read_kwargs[key]
    try:
        header = pd.read_csv(path, nrows=0, **base).columns
    except (ValueError, UnicodeDecodeError) as err:
        raise _csv_error(path, err, sep, encoding) from err
    header_names = [str(c) for c in header]
    if sep is None and len(header_names) == 1 and customer_id_col not in header_names:
        for candidate in (";", "\t", "|"):
            if candidate in header_names[0]:
                raise DataError(
                    f"{str(path)!r} reads as a single column {header_names[0]!r}: it seems to "
                    f"be separated by {candidate!r}, not commas. Pass sep={candidate!r}."
                )
    if columns is not None:
        missing = [c for c in columns if c not in header_names]
        if missing:
            raise DataError(
                f"Missing column(s) {', '.join(map(repr, missing))} in {str(path)!r}; columns "
                f"present: {', '.join(map(repr, header_names))}. Rename the columns or name "
                "the ones that hold these values."
            )
    dtype = read_kwargs.pop("dtype", None)
    if dtype is None:
        dtype = {customer_id_col: str}
    elif isinstance(dtype, dict):
        dtype = {customer_id_col: str, **dtype}
    if "na_values" not in read_kwargs and "keep_default_na" not in read_kwargs:
        # 'NA', 'null', 'None', 'nan' are ids, not missing values; only an empty field is
        read_kwargs["keep_default_na"] = False
        read_kwargs["na_values"] = {
            c: ([""] if c == customer_id_col else list(NA_MARKERS)) for c in header_names
        }
    read_kwargs = {**read_kwargs, **base}
    try:
        return pd.read_csv(path, usecols=columns, dtype=dtype, **read_kwargs)
    except (ValueError, UnicodeDecodeError) as err:
        raise _csv_error(path, err, sep, encoding) from err


def _parquet_columns(path: Path) -> list[str] | None:
    """Column names of a Parquet file or directory, or None when its schema cannot be read."""
    try:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path) if path.is_file() else pq.ParquetDataset(path).schema
    except Exception:
        return None
    return [n for n in schema.names if not n.startswith("__")]


def read_transactions(
    path_or_df: str | os.PathLike[str] | pd.DataFrame,
    *,
    customer_id_col: str = "customer_id",
    columns: list[str] | None = None,
    sep: str | None = None,
    encoding: str | None = None,
    **read_kwargs: Any,
) -> pd.DataFrame:
    """Read a transaction log from a CSV or Parquet file; a DataFrame passes through.

    Parameters
    ----------
    path_or_df : str, path or DataFrame
        A ``.csv`` (optionally compressed) or ``.parquet`` file, a directory of Parquet
        files, or a DataFrame, which is returned unchanged (not copied).
    customer_id_col : str
        In CSV files this column is read as text, so ids such as ``"00042"`` keep their
        leading zeros (pass ``dtype=...`` to override), and only an empty field is a
        missing id: ids such as ``"NA"``, ``"null"``, ``"None"`` or ``"nan"`` are kept as
        ids (:func:`summarize_transactions` warns about them).  Other columns use
        pandas' usual missing-value markers.
    columns : list of str, optional
        Read only these columns.
    sep : str, optional
        CSV only: the column separator; default ``","`` (tab for ``.tsv``).  A file that
        reads as one column whose name contains ``;``, a tab or ``|`` is refused with the
        separator to pass.
    encoding : str, optional
        CSV only: the text encoding; default UTF-8 (a byte-order mark is skipped).  A
        file that does not decode is refused with encodings to try.
    **read_kwargs
        Passed to :func:`pandas.read_csv` (e.g. ``decimal=","``) or
        :func:`pandas.read_parquet`.

    Returns
    -------
    DataFrame
        One row per transaction, columns as in the file.

    Raises
    ------
    DataError
        For a file whose format the name does not tell, an empty or undecodable file, a
        wrong separator, requested columns that are missing, and files pandas/pyarrow
        cannot parse (the message names the file).
    """
    if isinstance(path_or_df, pd.DataFrame):
        return path_or_df
    path = Path(os.fspath(path_or_df))
    name = path.name.lower()
    if path.is_dir() or name.endswith(_PARQUET_SUFFIXES):
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"{str(path)!r} is empty (0 bytes): it is not a Parquet file.")
        try:
            return pd.read_parquet(path, columns=columns, **read_kwargs)
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, OSError) as err:
            present = _parquet_columns(path)
            missing = [c for c in columns or [] if present is not None and c not in present]
            if missing:
                raise DataError(
                    f"Missing column(s) {', '.join(map(repr, missing))} in {str(path)!r}; "
                    f"columns present: {', '.join(map(repr, present))}. Rename the columns "
                    "or name the ones that hold these values."
                ) from err
            first_line = (
                str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            )
            raise DataError(
                f"Cannot read {str(path)!r} as Parquet ({first_line}). Check that the file "
                "is complete (not truncated by an interrupted copy) and is a Parquet file."
            ) from err
    if name.endswith(_CSV_SUFFIXES):
        return _read_csv(path, customer_id_col, columns, sep, encoding, dict(read_kwargs))
    raise DataError(
        f"Cannot tell the format of {str(path)!r} from its name; supported are "
        f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}. Read it yourself with pandas and "
        "pass the DataFrame instead."
    )


# ---------------------------------------------------------------------------------------
# ids -> integer codes 0..n_customers-1, in sorted id order


def _codes_from_uniques(
    codes: np.ndarray, uniques: pd.Index, column: str
) -> tuple[np.ndarray, pd.Index]:
    """Relabel factorize codes so that code order is sorted id order."""
    try:
        order = uniques.argsort()
    except TypeError as err:
        raise mixed_id_types_error(uniques, column) from err
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order), dtype=np.intp)
    return rank[codes], uniques.take(order)


def _dense_int_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes for integer ids in a compact range, without hashing (O(n) + O(range))."""
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span > 2 * values.size + 65_536:
        return None
    offsets = values.astype(np.int64, copy=False) - lo
    present = np.zeros(span, dtype=bool)
    present[offsets] = True
    rank = np.cumsum(present, dtype=np.intp)
    rank -= 1
    return rank[offsets], (np.flatnonzero(present) + lo).astype(values.dtype)


def _arrow_string_chunks(ids: pd.Series) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(offsets from 0, UTF-8 bytes) of each chunk of Arrow-backed string ids, or None."""
    dtype = ids.dtype
    arrow_backed = isinstance(dtype, pd.ArrowDtype) or (
        isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    )
    if not arrow_backed or len(ids) == 0:
        return None
    import pyarrow as pa

    chunked = ids.array.__arrow_array__()
    if not (pa.types.is_string(chunked.type) or pa.types.is_large_string(chunked.type)):
        return None
    if chunked.null_count:
        return None
    offset_type = np.int32 if pa.types.is_string(chunked.type) else np.int64
    out = []
    for chunk in chunked.chunks:
        if len(chunk):
            _, offsets_buf, data_buf = chunk.buffers()
            offsets = np.frombuffer(offsets_buf, dtype=offset_type)
            offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
            data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
            out.append((offsets - offsets[0], data))
    return out


def _short_string_codes(ids: pd.Series) -> tuple[np.ndarray, pd.Index] | None:
    """Fast path for Arrow-backed string ids that differ only in their last 8 bytes.

    That is ids of at most 8 bytes ("C0012345", "42"), or longer ids whose extra leading
    bytes are common to all ("customer-0000012345" for fewer than 10**8 customers).
    After that common prefix, byte j of every id is replaced by its rank among the byte
    values seen at position j (the zero padding of shorter ids ranks first), and the ranks
    are read as one mixed-radix integer.  Its numeric order is the strings' byte order
    (= code point order for UTF-8).  Digit ids give a dense integer range that needs no
    hashing at all; otherwise the integers are hashed, still several times faster than
    hashing strings.  Ids with NUL bytes (ambiguous padding) do not qualify; returns None
    when the ids do not qualify.
    """
    chunks = _arrow_string_chunks(ids)
    if chunks is None:
        return None
    lengths = [np.diff(offsets) for offsets, _ in chunks]
    shortest = min(int(n.min()) for n in lengths)
    longest = max(int(n.max()) for n in lengths)
    if not all(data.all() for _, data in chunks):  # NUL bytes
        return None
    skip = max(longest - 8, 0)  # bytes that must be a common prefix
    if skip > shortest:
        return None
    prefix = chunks[0][1][:skip]
    for j in range(skip):
        for offsets, data in chunks:
            if not np.all(data[offsets[:-1] + j] == prefix[j]):
                return None
    width = longest - skip
    columns = np.zeros((width, len(ids)), dtype=np.uint8)  # byte j of each id, 0 = padding
    row = 0
    for (offsets, data), length in zip(chunks, lengths, strict=True):
        k = length.size
        if int(length.min()) == longest:  # one width: a reshape
            columns[:, row : row + k] = data.reshape(k, longest)[:, skip:].T
        else:
            starts = offsets[:-1] + skip
            for j in range(width):
                rows = np.flatnonzero(length > skip + j)
                columns[j, row + rows] = data[starts[rows] + j]
        row += k
    alphabets, radix = [], 1
    key = np.zeros(len(ids), dtype=np.int64)
    for j in range(width):
        present = np.zeros(256, dtype=bool)
        present[columns[j]] = True
        alphabet = np.flatnonzero(present)
        radix *= alphabet.size
        if radix >= 2**63:
            return None
        rank_of_byte = np.zeros(256, dtype=np.int64)
        rank_of_byte[alphabet] = np.arange(alphabet.size)
        key *= alphabet.size
        key += rank_of_byte[columns[j]]
        alphabets.append(alphabet.astype(np.uint8))
    del columns
    dense = _dense_int_codes(key)
    if dense is not None:
        codes, unique_keys = dense
    else:
        codes, unique_keys = pd.factorize(key, sort=False)
        order = np.argsort(unique_keys)
        rank = np.empty(order.size, dtype=np.intp)
        rank[order] = np.arange(order.size, dtype=np.intp)
        codes, unique_keys = rank[codes], unique_keys[order]
    # the sorted unique ids back to strings: prefix + bytes without the zero padding
    n_unique = unique_keys.size
    text = np.empty((n_unique, skip + width), dtype=np.uint8)
    text[:, :skip] = prefix
    rest = unique_keys.copy()
    for j in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, alphabets[j].size)
        text[:, skip + j] = alphabets[j][digit]
    nonzero = text != 0
    offsets = np.zeros(n_unique + 1, dtype=np.int64)
    np.cumsum(nonzero.sum(axis=1), out=offsets[1:])
    import pyarrow as pa

    strings = pa.LargeStringArray.from_buffers(
        n_unique, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(text[nonzero]))
    )
    return codes, pd.Index(pd.array(strings, dtype=ids.dtype), name=ids.name)


def _factorize_ids(ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (intp, 0..n-1, in sorted id order) and the sorted unique ids."""
    name = ids.name
    if isinstance(ids.dtype, np.dtype) and ids.dtype.kind in "iu":
        values = ids.to_numpy()
        if ids.dtype.kind == "i" or ids.dtype.itemsize < 8:
            dense = _dense_int_codes(values)
            if dense is not None:
                return dense[0], pd.Index(dense[1], name=name)
    short = _short_string_codes(ids)
    if short is not None:
        return short
    codes, uniques = pd.factorize(ids, sort=False)
    codes, index = _codes_from_uniques(
        codes.astype(np.intp, copy=False), pd.Index(uniques), str(name)
    )
    return codes, index.rename(name)


# ---------------------------------------------------------------------------------------
# distinct purchase occasions and per-customer reductions


@dataclass
class _Prepared:
    """Transactions as integer arrays: customer codes and times (days or ticks)."""

    tx: CheckedTransactions
    codes: np.ndarray  # intp, per row
    index: pd.Index  # sorted customer ids; code k is index[k]
    times: np.ndarray  # int64 per row: days (merge_same_day) or ticks
    time_scale: float  # times per time unit
    merge_same_day: bool
    n_duplicate_rows: int = 0
    n_duplicate_rows_dropped: int = 0

    @property
    def n_customers(self) -> int:
        return len(self.index)

    def to_times(self, ticks: int) -> int:
        """A tick count in the units of ``times`` (floored to the day when merging)."""
        return ticks // self.tx.ticks_per_day if self.merge_same_day else ticks

    def label(self, t: int) -> str:
        """A time in the units of ``times`` as an ISO date (day) or timestamp (exact)."""
        ts = self.timestamp(t)
        return ts.date().isoformat() if self.merge_same_day else ts.isoformat()

    def timestamp(self, t: int) -> pd.Timestamp:
        ticks = t * self.tx.ticks_per_day if self.merge_same_day else t
        ts = pd.Timestamp(np.datetime64(int(ticks), self.tx.unit))
        if self.tx.tz is not None:
            if self.merge_same_day:  # wall-clock midnight; may not exist on a DST day
                ts = ts.tz_localize(self.tx.tz, ambiguous=False, nonexistent="shift_forward")
            else:
                ts = ts.tz_localize("UTC").tz_convert(self.tx.tz)
        return ts

    def datetimes(self, t: np.ndarray) -> pd.DatetimeIndex:
        ticks = t * self.tx.ticks_per_day if self.merge_same_day else t
        out = pd.DatetimeIndex(ticks.astype(f"datetime64[{self.tx.unit}]"))
        if self.tx.tz is not None:
            if self.merge_same_day:
                out = out.tz_localize(
                    self.tx.tz, ambiguous=np.zeros(len(out), bool), nonexistent="shift_forward"
                )
            else:
                out = out.tz_localize("UTC").tz_convert(self.tx.tz)
        return out


def _prepare(
    transactions: pd.DataFrame,
    *,
    customer_id_col: str,
    datetime_col: str,
    monetary_value_col: str | None,
    time_unit: str,
    datetime_format: str | None,
    merge_same_day: bool,
    negative_amounts: str,
    duplicate_rows: str = "warn",
    outlying_dates: str = "error",
) -> _Prepared:
    days_per_unit = check_time_unit(time_unit)
    check_option("duplicate_rows", duplicate_rows, DUPLICATE_ROW_OPTIONS)
    tx = validate_transactions(
        transactions,
        customer_id_col=customer_id_col,
        datetime_col=datetime_col,
        monetary_value_col=monetary_value_col,
        datetime_format=datetime_format,
        negative_amounts=negative_amounts,
        merge_same_day=merge_same_day,
        outlying_dates=outlying_dates,
    )
    codes, index = _factorize_ids(tx.ids)
    check_id_values(index, codes, tx, customer_id_col)
    if merge_same_day:
        times = tx.ticks // tx.ticks_per_day  # floor: also right before 1970
        scale = days_per_unit
    else:
        times = tx.ticks
        scale = days_per_unit * tx.ticks_per_day
    return _Prepared(tx, codes, index, times, scale, merge_same_day)


def _handle_duplicates(
    p: _Prepared, transactions: pd.DataFrame, n_occasions: int, option: str
) -> None:
    """Count (and with "drop" remove) exact duplicate rows, after the occasions are known.

    Copies share their original's occasion, so when every row is its own occasion there
    is none, and dropping copies changes no occasion (only the amounts added up).
    """
    if n_occasions == p.codes.size:
        return
    keep, p.n_duplicate_rows = handle_duplicate_rows(transactions, p.codes, p.tx, option)
    if keep is not None:  # duplicate_rows="drop": a copy stays, so no customer is lost
        p.tx.filter(keep)
        p.codes, p.times = p.codes[keep], p.times[keep]
        p.n_duplicate_rows_dropped = p.n_duplicate_rows


def _occasions(p: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (customer code, time) pairs, sorted by customer then time."""
    codes, times, n = p.codes, p.times, p.n_customers
    tmin = int(times.min())
    span = int(times.max()) - tmin + 1
    if n * span <= 2**32:  # a 32-bit key sorts about twice as fast as a 64-bit one
        key = np.empty(times.size, dtype=np.uint32)
        np.multiply(codes, span, out=key, casting="unsafe")
        key += np.subtract(times, tmin).astype(np.uint32)
    elif n * span < 2**62:
        key = np.multiply(codes, span, dtype=np.int64)
        key += times
        key -= tmin
    else:  # pragma: no cover - needs ~1e6 customers x decades at ns resolution
        order = np.lexsort((times, codes))
        c, t = codes[order], times[order]
        new = np.ones(c.size, dtype=bool)
        new[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
        return c[new], t[new]
    key.sort()
    new = np.empty(key.size, dtype=bool)
    new[0] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    code, offset = np.divmod(key[new], key.dtype.type(span))
    occ_code = code.astype(np.intp)
    occ_time = np.add(offset, tmin, dtype=np.int64)
    return occ_code, occ_time


def _count_first_last(
    occ_code: np.ndarray, occ_time: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: number of occasions, first and last time (0 where there is none)."""
    count = np.bincount(occ_code, minlength=n)
    end = np.cumsum(count)
    has = count > 0
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    first[has] = occ_time[(end - count)[has]]
    last[has] = occ_time[end[has] - 1]
    return count, first, last


def _sum_by_customer(p: _Prepared, mask: np.ndarray | None = None) -> np.ndarray:
    """Sum of the amounts of the rows in ``mask`` (all rows if None), per customer."""
    amounts = p.tx.amounts
    weights = amounts if mask is None else np.where(mask, amounts, 0.0)
    return np.bincount(p.codes, weights=weights, minlength=p.n_customers)


def _resolve_end(p: _Prepared, observation_end: Any, name: str) -> int:
    """``observation_end`` in the units of ``p.times``; default: the last transaction."""
    if observation_end is None:
        return int(p.times.max())
    _, ticks = resolve_end(observation_end, p.tx, name)
    end = p.to_times(ticks)
    keep = f"< '{p.label(end + 1)}'" if p.merge_same_day else f"<= '{p.label(end)}'"
    check_none_after(p.times, end, p.label(end), keep, p.tx, name)
    days = p.tx.days()
    check_end_gap(int(days.min()), int(days.max()), ticks // p.tx.ticks_per_day, name,
                  p.tx.outlying_dates)  # fmt: skip
    return end


def _summary_frame(
    p: _Prepared,
    keep: np.ndarray | slice,
    count: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    end: int,
    repeat_value: np.ndarray | None,
) -> pd.DataFrame:
    """The RFM table for the customers selected by ``keep``."""
    count, first, last = count[keep], first[keep], last[keep]
    frequency = (count - 1).astype(np.int64)
    data: dict[str, Any] = {
        "frequency": frequency,
        "recency": (last - first) / p.time_scale,
        "T": (end - first) / p.time_scale,
    }
    if repeat_value is not None:
        repeat_value = repeat_value[keep]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            data["monetary_value"] = np.where(
                frequency > 0, repeat_value / np.maximum(frequency, 1), 0.0
            )
        bad = ~np.isfinite(data["monetary_value"])
        if bad.any():
            raise DataError(
                f"Column {p.tx.monetary_value_col!r}: the amounts of {int(bad.sum()):,} "
                f"customer(s) add up beyond the range of floating-point numbers (first ids: "
                f"{', '.join(map(repr, list(p.index[keep][bad][:5])))}). Check the amounts "
                "for corrupt values, or rescale them (e.g. to thousands)."
            )
    data["first_purchase"] = p.datetimes(first)
    index = p.index[keep]
    index.name = p.tx.customer_id_col
    return pd.DataFrame(data, index=index)


def _attrs(p: _Prepared, time_unit: str, end: int, n_occasions: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "time_unit": time_unit,
        "observation_end": p.label(end),
        "merge_same_day": p.merge_same_day,
        "n_transactions": p.tx.n_input_rows,
        "n_transactions_merged": n_occasions,
        "n_customers": p.n_customers,
    }
    attrs["n_duplicate_rows"] = p.n_duplicate_rows
    attrs["n_duplicate_rows_dropped"] = p.n_duplicate_rows_dropped
    attrs["n_outlying_date_rows"] = p.tx.n_outlying_date_rows
    attrs["n_outlying_date_rows_dropped"] = p.tx.n_outlying_date_rows_dropped
    if p.tx.monetary_value_col is not None:
        attrs["n_negative_amount_rows"] = p.tx.n_negative_rows
        attrs["n_negative_amount_rows_dropped"] = p.tx.n_negative_rows_dropped
        attrs["n_customers_dropped_negative_amounts"] = p.tx.n_customers_dropped
    return attrs


def summarize_transactions(
    transactions: pd.DataFrame,
    *,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    monetary_value_col: str | None = None,
    observation_end: Any = None,
    time_unit: str = "weeks",
    datetime_format: str | None = None,
    merge_same_day: bool = True,
    negative_amounts: str = "error",
    duplicate_rows: str = "warn",
    outlying_dates: str = "error",
) -> pd.DataFrame:
    """Summarise a transaction log into one RFM row per customer.

    Parameters
    ----------
    transactions : DataFrame
        One row per transaction (see :func:`read_transactions` for files).
    customer_id_col, datetime_col : str
        Columns with the customer id and the purchase date/time.  The id may also be the
        index (name it ``customer_id_col``).
    monetary_value_col : str, optional
        Column with the transaction value; adds ``monetary_value``.
    observation_end : date-like, optional
        End of the observation period; defaults to the last transaction date.  With
        ``merge_same_day`` only its date counts, and transactions on that date are in.
        A naive value with tz-aware data is read in the data's zone.  Customers whose
        first purchase is on the end have ``T = 0``: they are kept (they add nothing to
        the BG/NBD likelihood and are scored as new customers) and counted in
        ``attrs["n_customers_T0"]``.  An end far after the last transaction (longer than
        the data's span and than a year) is refused, one longer than half the span and
        than 90 days is warned about; ``outlying_dates="keep"`` accepts either.
    time_unit : {"days", "weeks"}
        Unit of ``recency`` and ``T``; weeks are days / 7 (not rounded).
    datetime_format : str, optional
        ``strftime`` format to parse text (or integer, e.g. 19970101) dates.  Without
        it, the format is inferred from the first value and every row must match it;
        dates whose day/month order the data cannot tell (``01/02/2024`` with no day
        above 12), two-digit years, numbers among text dates and words such as "now" are
        refused rather than guessed.  Year-first dates are read as year-month-day.
    merge_same_day : bool
        Floor times to the calendar day (local time for tz-aware data) and count a
        customer's purchases on one day as one transaction, adding their amounts.
        Otherwise exact times are used (fractional days; tz-aware times as elapsed UTC
        time), only rows with identical timestamps are merged, and ``observation_end`` is
        an instant ("2024-01-31" is midnight at the start of that day).
    negative_amounts : {"error", "drop", "keep"}
        Returns/refunds: refuse (default); drop those rows (counted in ``attrs`` and
        warned about); or keep them, added into the day's total.
    duplicate_rows : {"warn", "drop", "keep"}
        Rows equal in every column to an earlier row (a double export doubles spend):
        keep them with a :class:`~clvbayes.errors.DataWarning` giving the count, the first
        rows and ids (default; without ``monetary_value_col`` copies merge into one
        occasion and change nothing, so there is no warning); drop the copies (warned,
        counted in ``attrs["n_duplicate_rows_dropped"]``); or keep them silently (they
        are real repeated purchases).  ``attrs["n_duplicate_rows"]`` always has the count.
    outlying_dates : {"error", "drop", "keep"}
        Dates far outside the bulk of the data (a group of at most 1% of the rows, cut
        off from the others by a gap longer than a year and than the others' span, e.g. a
        2099-01-01 or 1500-01-01 typo among 1997-1998): refuse (default); drop those rows
        (warned, counted in ``attrs["n_outlying_date_rows_dropped"]``); or keep them (they
        are real).  Also governs the check of an explicit ``observation_end`` far after
        the last transaction ("keep" accepts it).

    Returns
    -------
    DataFrame
        Index: customer ids (named ``customer_id_col``, dtype as in the input), sorted.
        Columns: ``frequency`` (int64) x, ``recency`` (float64) t_x, ``T`` (float64),
        ``monetary_value`` (float64, mean repeat-transaction value, 0 when x = 0; only
        with ``monetary_value_col``) and ``first_purchase`` (datetime64).
        ``attrs``: ``time_unit``, ``observation_end``, ``merge_same_day``,
        ``n_transactions`` (input rows), ``n_transactions_merged``, ``n_customers``,
        ``n_customers_T0``, ``n_duplicate_rows`` (and ``_dropped``),
        ``n_outlying_date_rows`` (and ``_dropped``), and with amounts the counts of
        negative-amount rows and of rows/customers dropped.

    Warns
    -----
    DataWarning
        For exact duplicate rows (``duplicate_rows="warn"``), dropped rows, an
        ``observation_end`` well after the last transaction, customer ids that differ
        only in white space or read like a missing-value marker ("NA", "null", ...).

    Raises
    ------
    DataError
        For any invalid input; the message names the column, the number of rows, the
        first customer ids and the fix.

    Examples
    --------
    >>> tx = pd.DataFrame({"customer_id": ["a", "a", "a", "b"],
    ...                    "date": ["2024-01-01", "2024-01-01", "2024-01-15", "2024-01-08"],
    ...                    "amount": [10.0, 5.0, 20.0, 7.0]})
    >>> summarize_transactions(tx, monetary_value_col="amount", time_unit="days")  # doctest: +NORMALIZE_WHITESPACE
                 frequency  recency     T  monetary_value first_purchase
    customer_id
    a                    1     14.0  14.0            20.0     2024-01-01
    b                    0      0.0   7.0             0.0     2024-01-08
    """
    p = _prepare(
        transactions,
        customer_id_col=customer_id_col,
        datetime_col=datetime_col,
        monetary_value_col=monetary_value_col,
        time_unit=time_unit,
        datetime_format=datetime_format,
        merge_same_day=merge_same_day,
        negative_amounts=negative_amounts,
        duplicate_rows=duplicate_rows,
        outlying_dates=outlying_dates,
    )
    end = _resolve_end(p, observation_end, "observation_end")
    occ_code, occ_time = _occasions(p)
    _handle_duplicates(p, transactions, occ_code.size, duplicate_rows)
    count, first, last = _count_first_last(occ_code, occ_time, p.n_customers)
    repeat_value = None
    if monetary_value_col is not None:
        # zbar: (all value - value on the first purchase day) / number of repeat purchases
        first_day = p.times == first[p.codes]
        repeat_value = _sum_by_customer(p, ~first_day)
    df = _summary_frame(p, slice(None), count, first, last, end, repeat_value)
    df.attrs.update(_attrs(p, time_unit, end, occ_code.size))
    df.attrs["n_customers_T0"] = int(np.count_nonzero(df["T"].to_numpy() == 0))
    return df
