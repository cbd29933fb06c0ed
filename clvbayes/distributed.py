"""The two embarrassingly parallel steps on a Dask cluster, for logs that do not fit one machine.

Install with ``pip install "clvbayes[dask]"`` (``dask[dataframe]`` and ``distributed``).
Dask is imported inside the functions, so ``import clvbayes.distributed`` works without it.

The job splits into three steps; only the first and the last touch every row:

1. :func:`summarize_transactions_dask` -- transactions -> RFM summary.  The log is read as
   partitions (Parquet row groups or whole files, CSV files, or your own dask DataFrame),
   shuffled so that all rows of a customer land in one partition, and each partition is
   summarised by the in-memory :func:`clvbayes.data.summarize_transactions` (the same
   code, no second implementation).  Because a customer's rows are all in one partition,
   the per-partition summaries together are exactly the in-memory summary.
2. The model fit runs in memory, on the client: collect the summary
   (``rfm = rfm_ddf.compute()``, about 50 bytes per customer) and fit
   :class:`~clvbayes.models.BetaGeoModel` and :class:`~clvbayes.models.GammaGammaModel`
   as usual.  The fit only sees the *distinct* histories (:func:`clvbayes.data.compress`),
   so its cost does not grow with the number of rows.
3. :func:`score_customers_dask` -- every customer scored by the in-memory
   :func:`clvbayes.predict.score_customers`, one partition at a time.  The fitted models
   (posterior draws only, a few hundred kB) are sent to each worker once; the per-customer
   table is written as partitioned Parquet.

Identical results.  The summary equals the in-memory one (row order aside: sort by
customer id), up to the order in which a customer's same-day amounts are added, which
can change ``monetary_value`` in the last bit.  Scores: ``p_alive``, expected purchases
and spend are computed per customer history and are identical; expected CLV sums a
discount schedule with an interpolation whose nodes depend on the histories scored
together, and agrees to about 1e-12 (relative).  Predictive intervals come from
simulation: partition ``i`` is scored with the seed :func:`partition_seed` (``seed``,
``i``), so the same input partitions and seed reproduce the whole table exactly; they
differ from an in-memory run, which draws its simulations in another order.

Segment totals are **not** produced here.  An interval for a total (a segment, the whole
base) needs the per-draw sums over all its customers, across partitions;
:func:`~clvbayes.predict.score_customers` reduces them to interval summaries inside each
call, and summaries of partitions cannot be added up.  Compute segment totals in memory
with :func:`~clvbayes.predict.score_customers` (``by=...``) on the summary, which holds
one row per customer and fits on one machine long after the transaction log does.

Bad input.  Every input partition is checked first (the same checks and the same
:class:`~clvbayes.data.DataError` messages as in memory, prefixed with the file and row
range or the partition), before anything is shuffled or written.  The partitions are
also compared with each other, as one table in memory would be: a column stored as
different kinds in different files (ids as text here and integers there) is refused,
and so is a missing id of any dtype; the warnings of the partitions reach the caller.
The scores are written to a temporary folder that is renamed into place only when every
partition succeeded and no customer id is in two rows; an existing ``out_path`` is
replaced only if it is a table that ``score_customers_dask`` wrote (its files are listed
in ``_clvbayes.json``), and nothing else is ever deleted.  A previous table left in
``.{name}.old-*`` by a crash during a replacement is put back on the next call;
incomplete ``.{name}.partial-*`` folders of interrupted runs are named in a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clvbayes.data import DataError, read_transactions, summarize_transactions
from clvbayes.data.validation import (
    DUPLICATE_ROW_OPTIONS,
    NEGATIVE_AMOUNT_OPTIONS,
    OUTLYING_DATE_OPTIONS,
    check_end_gap,
    check_option,
    check_time_unit,
    outlying_day_bounds,
    require_columns,
    validate_transactions,
)
from clvbayes.errors import DataWarning

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd

__all__ = ["OutputBusy", "partition_seed", "score_customers_dask", "summarize_transactions_dask"]

_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt", ".tsv")
#: Name of the settings file written next to the Parquet parts of the scores.
SETTINGS_FILE = "_clvbayes.json"


def _require_dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as err:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "clvbayes.distributed needs Dask: pip install 'clvbayes[dask]' "
            "(dask[dataframe] and distributed)."
        ) from err
    return dask, dd


# ---------------------------------------------------------------------------------------
# input partitions


@dataclass(frozen=True)
class _Piece:
    """One input partition: a file, or some row groups of a Parquet file."""

    path: str
    row_groups: tuple[int, ...] | None  # None: the whole file
    first_row: int
    n_rows: int | None  # None: unknown (CSV)

    @property
    def label(self) -> str:
        if self.n_rows is None or self.row_groups is None:
            return f"file {self.path!r}"
        last = self.first_row + self.n_rows - 1
        return f"file {self.path!r}, rows {self.first_row:,}-{last:,} (counting from 0)"


def _hidden(relative: str) -> bool:
    """Whether a path below the searched folder has a part starting with ``_`` or ``.``."""
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def _examples(names: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" and {len(names) - n:,} more" if len(names) > n else "")


def _list_files(source: str | os.PathLike[str] | list) -> list[str]:
    """Files of a path, a directory (recursively), a glob or a list of those.

    Raises :class:`DataError` for a path that does not exist, a pattern that matches
    nothing and a folder without CSV or Parquet files; warns (:class:`DataWarning`) about
    files in a searched folder whose names have no supported ending, as they are not read.
    """
    import fsspec

    sources = source if isinstance(source, list | tuple) else [source]
    if not sources:
        raise DataError("No input files: the list of paths is empty.")
    endings = ", ".join(_PARQUET + _CSV)
    files: list[str] = []
    for item in sources:
        text = os.fspath(item)
        fs, _, paths = fsspec.core.get_fs_token_paths(text)
        if not paths or not fs.exists(paths[0]):
            what = "The pattern" if fsspec.core.has_magic(text) else "The path"
            raise DataError(
                f"{what} {text!r} matches no file or folder. Check the spelling and the "
                "current folder (relative paths start from it), or pass the files as a list."
            )
        for path in paths:
            if fs.isdir(path):
                found, skipped = [], []
                for p in sorted(fs.find(path)):
                    if _hidden(p[len(path.rstrip("/")) :]):
                        continue  # _SUCCESS, .crc, _metadata ...: not data
                    (found if p.lower().endswith(_PARQUET + _CSV) else skipped).append(p)
                if skipped:
                    warnings.warn(
                        f"Skipped {len(skipped):,} file(s) in folder {text!r} whose names do not "
                        f"end in {endings} (e.g. {_examples(skipped, 3)}): they are not read. "
                        "Rename them if they hold transactions, or move them out of the folder.",
                        DataWarning,
                        stacklevel=3,
                    )
                if not found:
                    raise DataError(
                        f"The folder {text!r} holds no CSV or Parquet files (supported endings: "
                        f"{endings}; names starting with '_' or '.' are skipped)."
                    )
                files += [fs.unstrip_protocol(p) if "://" in text else p for p in found]
            else:
                files.append(fs.unstrip_protocol(path) if "://" in text else path)
    return files


_FIX_UNREADABLE = (
    "The file may be empty, truncated (an interrupted copy or export), still being written, "
    "or not in the format its name says: write it again, or leave it out of the input."
)


def _unreadable(label: str, path: str, err: BaseException) -> DataError:
    """The error for a file that cannot be read at all, naming the file and the fix."""
    import fsspec

    reason = f"{type(err).__name__}: {str(err).strip().rstrip('.')}"
    with contextlib.suppress(Exception):
        fs, _, (local,) = fsspec.core.get_fs_token_paths(path)
        if fs.size(local) == 0:
            reason = "the file is empty (0 bytes)"
    return DataError(f"Cannot read {label}: {reason}. {_FIX_UNREADABLE}")


def _read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of the readers that mean "this file cannot be read" (not a bug)."""
    import pyarrow as pa

    return (OSError, ValueError, EOFError, KeyError, pa.ArrowException, pd.errors.EmptyDataError)


def _parquet_pieces(
    path: str, rows_per_partition: int, required: dict[str, str | None]
) -> tuple[list[_Piece], Any]:
    """Consecutive row groups of one Parquet file (about ``rows_per_partition`` rows each)
    and the file's Arrow schema; checks that the file is readable and has the columns."""
    import fsspec
    import pyarrow.parquet as pq

    label = f"file {path!r}"
    try:
        with fsspec.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            meta, schema = pf.metadata, pf.schema_arrow
    except _read_errors() as err:
        raise _unreadable(label, path, err) from None
    try:
        require_columns(schema.empty_table().to_pandas(), required)
    except DataError as err:
        raise _located(err, label) from None
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    if sum(sizes) <= rows_per_partition or len(sizes) <= 1:
        return [_Piece(path, None, 0, sum(sizes))], schema
    pieces, groups, first, n = [], [], 0, 0
    for i, size in enumerate(sizes):
        if groups and n + size > rows_per_partition:
            pieces.append(_Piece(path, tuple(groups), first, n))
            groups, first, n = [], first + n, 0
        groups.append(i)
        n += size
    pieces.append(_Piece(path, tuple(groups), first, n))
    return pieces, schema


def _read_piece(piece: _Piece, required: dict[str, str | None], read_kwargs: dict):
    """Read one input partition with the reader of the in-memory path.

    Any failure to read raises :class:`DataError` naming the file (and rows): a file
    without the needed columns gets the in-memory message, anything else (empty,
    truncated, corrupt) the reader's message and the fix.
    """
    import fsspec
    import pyarrow.parquet as pq

    columns = [c for c in required.values() if c is not None]
    customer_id_col = required["customer_id_col"]
    try:
        if piece.row_groups is None:
            return read_transactions(
                piece.path, customer_id_col=customer_id_col, columns=columns, **read_kwargs
            )
        with fsspec.open(piece.path, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_groups(list(piece.row_groups), columns=columns)
        return table.to_pandas()
    except DataError as err:
        raise _located(err, piece.label) from None
    except _read_errors() as err:
        failure = _unreadable(piece.label, piece.path, err)
    # a missing column (each file is checked against its own header) or a broken file
    header = None
    if not piece.path.lower().endswith(_PARQUET):
        with contextlib.suppress(*_read_errors()):
            header = read_transactions(
                piece.path, customer_id_col=customer_id_col, nrows=0, **read_kwargs
            )
    if header is not None:
        try:
            require_columns(header, required)
        except DataError as err:
            raise _located(err, piece.label) from None
    raise failure


def _identical_files(files: list[str]) -> list[list[str]]:
    """Groups of input files with identical content (one export copied twice?).

    Only files of equal size are read (and hashed), so the usual input costs one size
    look-up per file.
    """
    import hashlib

    import fsspec

    by_size: dict[int, list[str]] = {}
    for path in files:
        fs, _, (local,) = fsspec.core.get_fs_token_paths(path)
        by_size.setdefault(int(fs.size(local)), []).append(path)
    groups = []
    for size, paths in by_size.items():
        if len(paths) < 2 or size == 0:
            continue
        by_hash: dict[str, list[str]] = {}
        for path in paths:
            digest = hashlib.sha256()
            with fsspec.open(path, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
            by_hash.setdefault(digest.hexdigest(), []).append(path)
        groups += [g for g in by_hash.values() if len(g) > 1]
    return groups


def _warn_identical_files(files: list[str], duplicate_rows: str) -> None:
    """Warn (``duplicate_rows="warn"``) about input files with identical content."""
    if duplicate_rows != "warn" or len(files) < 2:
        return
    groups = _identical_files(files)
    if groups:
        shown = "; ".join(" = ".join(repr(p) for p in g) for g in groups[:3])
        more = f" and {len(groups) - 3:,} more groups" if len(groups) > 3 else ""
        warnings.warn(
            f"{sum(len(g) for g in groups):,} input files have identical content ({shown}"
            f"{more}): a copy of one export? Their rows are all counted, which multiplies "
            "those customers' purchases and spend. Leave the copies out, pass "
            "duplicate_rows='drop' to drop rows equal in every column (across files too), "
            "or duplicate_rows='keep' if the files are meant to repeat.",
            DataWarning,
            stacklevel=3,
        )


def _input_frame(
    source,
    required: dict[str, str | None],
    rows_per_partition: int,
    read_kwargs: dict,
    duplicate_rows: str = "warn",
):
    """The input as a dask DataFrame, a label per partition and the id dtype in pandas.

    The id dtype is the one :func:`~clvbayes.data.read_transactions` gives in memory
    (Dask may convert text columns to its own string dtype on the way).
    """
    _, dd = _require_dask()
    columns = [c for c in required.values() if c is not None]
    customer_id_col = required["customer_id_col"]
    if isinstance(source, dd.DataFrame):
        require_columns(pd.DataFrame(columns=list(source.columns)), required)
        source = source[columns]
        n = source.npartitions
        labels = [f"partition {i} of {n} of the input dask DataFrame" for i in range(n)]
        id_dtype = source.dtypes.get(customer_id_col)
        return source, labels, id_dtype
    if isinstance(source, pd.DataFrame):
        raise TypeError(
            "summarize_transactions_dask needs files or a dask DataFrame; for a pandas "
            "DataFrame use clvbayes.data.summarize_transactions."
        )
    pieces: list[_Piece] = []
    meta = None
    files = _list_files(source)
    _warn_identical_files(files, duplicate_rows)
    for path in files:
        if path.lower().endswith(_PARQUET):
            found, schema = _parquet_pieces(path, rows_per_partition, required)
            pieces += found
            if meta is None:
                meta = schema.empty_table().to_pandas()
        else:
            piece = _Piece(path, None, 0, None)
            pieces.append(piece)
            if meta is None:
                try:
                    meta = read_transactions(
                        path, customer_id_col=customer_id_col, nrows=20, **read_kwargs
                    ).iloc[:0]
                except DataError as err:
                    raise _located(err, piece.label) from None
                except _read_errors() as err:
                    raise _unreadable(piece.label, path, err) from None
                try:
                    require_columns(meta, required)
                except DataError as err:
                    raise _located(err, piece.label) from None
    meta = meta[columns]
    ddf = dd.from_map(
        _read_piece,
        pieces,
        required=required,
        read_kwargs=read_kwargs,
        meta=meta,
        enforce_metadata=False,
        label="clvbayes-read",
    )
    return ddf, [p.label for p in pieces], meta.dtypes.get(customer_id_col)


# ---------------------------------------------------------------------------------------
# transactions -> RFM


def _located(err: DataError, where: str) -> DataError:
    return DataError(f"In {where}: {err}")


def _col(part: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of a partition, or its index level of that name."""
    if name in part.columns:
        return part[name]
    return part.index.get_level_values(name).to_series(index=part.index)


def _storage(values: pd.Series | pd.Index) -> str:
    """How a column is stored, coarsely, for comparing partitions.

    One of ``"text"``, ``"integer"``, ``"floating"``, ``"boolean"``, ``"datetime (no time
    zone)"``, ``"datetime (<zone>)"`` or pandas' inferred type (e.g. ``"mixed"``).  Widths
    and nullable/Arrow variants of a kind (int32, Int64, int64[pyarrow]) are one kind.
    """
    dtype = values.dtype
    api = pd.api.types
    if api.is_datetime64_any_dtype(dtype):
        tz = getattr(dtype, "tz", None)
        if tz is None and isinstance(dtype, pd.ArrowDtype):
            tz = getattr(dtype.pyarrow_dtype, "tz", None)
        return f"datetime ({tz})" if tz is not None else "datetime (no time zone)"
    if api.is_bool_dtype(dtype):
        return "boolean"
    if api.is_integer_dtype(dtype):
        return "integer"
    if api.is_float_dtype(dtype):
        return "floating"
    if not api.is_object_dtype(dtype) and api.is_string_dtype(dtype):
        return "text"
    inferred = api.infer_dtype(values, skipna=True)
    return {"string": "text", "mixed-integer-float": "floating"}.get(inferred, inferred)


def _is_drop_notice(w: warnings.WarningMessage) -> bool:
    """The per-partition notice of negative_amounts='drop' (warned once, with totals)."""
    text = str(w.message)
    return text.startswith("Dropped") and "negative_amounts='drop'" in text


def _days(part: pd.DataFrame, kwargs: dict) -> np.ndarray:
    """The calendar day (days since 1970-01-01; local days when merging same-day
    purchases) of every row of a partition, parsed as the in-memory path parses them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # summarize_transactions warned already
        tx = validate_transactions(
            part,
            customer_id_col=kwargs["customer_id_col"],
            datetime_col=kwargs["datetime_col"],
            monetary_value_col=None,
            datetime_format=kwargs["datetime_format"],
            negative_amounts="keep",
            merge_same_day=kwargs["merge_same_day"],
            outlying_dates="keep",
        )
    return tx.days()


def _check_partition(part: pd.DataFrame, label: str, kwargs: dict) -> dict[str, Any]:
    """Validate and summarise one input partition; return what the client needs.

    The in-memory checks run through :func:`~clvbayes.data.summarize_transactions`
    (except the outlying-date checks, which need every partition and run on the client
    on the partitions' day histograms).  Also reported: how each column is stored, the
    histogram of purchase days, and the warnings raised, so that the client can compare
    partitions.
    """
    if len(part) == 0:  # an empty file or row group is no error while others have rows
        return {"empty": True, "label": label}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = summarize_transactions(part, **(kwargs | {"outlying_dates": "keep"}))
        days, counts = np.unique(_days(part, kwargs), return_counts=True)
    except DataError as err:
        raise _located(err, label) from None
    columns = {
        arg: kwargs[arg]
        for arg in ("customer_id_col", "datetime_col", "monetary_value_col")
        if kwargs[arg] is not None
    }
    info: dict[str, Any] = {
        "label": label,
        "n_rows": len(part),
        "storage": {arg: _storage(_col(part, col)) for arg, col in columns.items()},
        "dtypes": {arg: str(_col(part, col).dtype) for arg, col in columns.items()},
    }
    if info["storage"]["customer_id_col"] == "integer":
        ids = _col(part, kwargs["customer_id_col"])
        info["id_range"] = (int(ids.min()), int(ids.max()))
    attrs = summary.attrs
    info.update(
        {
            "observation_end": attrs["observation_end"],
            "days": days,
            "day_counts": counts,
            "n_transactions": attrs["n_transactions"],
            "n_negative_amount_rows": attrs.get("n_negative_amount_rows", 0),
            "n_negative_amount_rows_dropped": attrs.get("n_negative_amount_rows_dropped", 0),
            "warnings": [(w.category, str(w.message)) for w in caught if not _is_drop_notice(w)],
            "meta": summary.iloc[:0],
        }
    )
    return info


def _where(labels: list[str], n: int = 3) -> str:
    """The first ``n`` partition labels, and how many more."""
    shown = ", ".join(labels[:n])
    return shown + (f" and {len(labels) - n:,} more" if len(labels) > n else "")


_KIND_WORDS = {
    "integer": "integers",
    "floating": "floating-point numbers",
    "boolean": "booleans",
}


_DIFFERENT_STORAGE = {
    "customer_id_col": (
        "Read as one table these ids would not compare equal (the in-memory path refuses "
        "them), and across partitions one customer would be counted as several (text '42' "
        "and integer 42 are different ids).",
        "Store the ids of every file with one type before writing them, e.g. "
        "df[{col!r}] = df[{col!r}].astype(str), or read the files yourself, convert the "
        "column and pass a dask DataFrame.",
    ),
    "datetime_col": (
        "A customer's rows from different partitions are summarised together, so their "
        "dates must be stored alike (and tz-aware times in one zone).",
        "Store the dates of every file one way before writing them, e.g. "
        "df[{col!r}] = pd.to_datetime(df[{col!r}]) (with time zones: "
        "pd.to_datetime(df[{col!r}], utc=True).dt.tz_convert('<zone>')), or read the files "
        "yourself, convert the column and pass a dask DataFrame.",
    ),
    "monetary_value_col": (
        "A customer's rows from different partitions are summarised together, so their "
        "amounts must be stored alike.",
        "Store the amounts of every file as numbers, e.g. "
        "df[{col!r}] = pd.to_numeric(df[{col!r}]), or read the files yourself, convert the "
        "column and pass a dask DataFrame.",
    ),
}


def _common_dtypes(results: list[dict], kwargs: dict, meta: pd.DataFrame) -> dict[str, Any]:
    """Check that the partitions store each column alike; return the casts that make their
    dtypes equal before the shuffle (e.g. int32 and Int64 ids -> int64).

    Raises :class:`DataError` naming the partitions where one column is stored as
    different kinds (text ids in one file, integers in another; naive and tz-aware dates;
    amounts as text and as numbers).
    """
    casts: dict[str, Any] = {}
    for arg, (why, fix) in _DIFFERENT_STORAGE.items():
        col = kwargs[arg]
        if col is None:
            continue
        groups: dict[str, list[str]] = {}
        for r in results:
            kind = r["storage"][arg]
            if arg == "monetary_value_col" and kind in ("integer", "floating"):
                kind = "numbers"
            groups.setdefault(kind, []).append(r["label"])
        if len(groups) > 1:
            listing = "; ".join(
                f"as {_KIND_WORDS.get(kind, kind)} in {_where(labels)}"
                for kind, labels in sorted(groups.items(), key=lambda kv: -len(kv[1]))
            )
            raise DataError(
                f"Column {col!r} is stored differently in the input partitions: {listing}. "
                f"{why} {fix.format(col=col)}"
            )
        dtypes = {r["dtypes"][arg] for r in results}
        if len(dtypes) == 1 and str(meta[col].dtype) in dtypes:
            continue
        kind = next(iter(groups))
        if kind == "integer":
            low = min(r["id_range"][0] for r in results)
            high = max(r["id_range"][1] for r in results)
            if low >= -(2**63) and high < 2**63:
                casts[col] = "int64"
            elif low >= 0:
                casts[col] = "uint64"
            else:
                raise DataError(
                    f"Column {col!r} holds integer ids from {low} to {high}, beyond what one "
                    "64-bit integer type holds. Store the ids as text in every file."
                )
        elif kind == "text":
            casts[col] = meta[col].dtype if _storage(meta[col]) == "text" else "str"
        elif kind in ("floating", "numbers"):
            casts[col] = "float64"
        elif kind == "boolean":
            casts[col] = "bool"
    return casts


def _cast(part: pd.DataFrame, casts: dict[str, Any]) -> pd.DataFrame:
    """One partition with the common dtypes (so that equal ids hash alike in the shuffle)."""
    return part.astype({c: t for c, t in casts.items() if c in part.columns})


def _day(d: int) -> str:
    return str(np.datetime64(int(d), "D"))


def _outlying_days(results: list[dict], option: str, datetime_col: str) -> tuple[int, int] | None:
    """The in-memory outlying-date rule (:func:`clvbayes.data.validation.outlying_day_bounds`)
    applied once to the day histogram of all partitions together.

    Returns the bounds of the bulk when rows lie outside it and ``option`` is "drop";
    raises :class:`DataError` naming the partitions for "error"; None otherwise.
    """
    days = np.concatenate([r["days"] for r in results])
    counts = np.concatenate([r["day_counts"] for r in results])
    unique, inverse = np.unique(days, return_inverse=True)
    bounds = outlying_day_bounds(unique, np.bincount(inverse, weights=counts).astype(np.int64))
    if bounds is None or option == "keep":
        return None
    first, last = bounds
    hits = []
    for r in results:
        out = (r["days"] < first) | (r["days"] > last)
        if out.any():
            hits.append((r["label"], int(r["day_counts"][out].sum()), r["days"][out]))
    n = sum(h[1] for h in hits)
    examples = ", ".join(repr(_day(d)) for d in np.unique(np.concatenate([h[2] for h in hits]))[:3])
    where = "; ".join(f"{k:,} row(s) in {label}" for label, k, _ in hits[:3])
    where += f"; and {len(hits) - 3:,} more partitions" if len(hits) > 3 else ""
    what = (
        f"Column {datetime_col!r} has {n:,} row(s) with dates far outside the bulk of the "
        f"data (e.g. {examples}; the other {int(counts.sum()) - n:,} rows run from "
        f"{_day(first)} to {_day(last)}, and a gap longer than that separates them): {where}."
    )
    if option == "error":
        raise DataError(
            f"{what} A typo in one year (2099 for 2019, 1500 for 2015) would become everyone's "
            "observation end or a first purchase. Fix these dates; or pass "
            "outlying_dates='drop' to drop these rows, or outlying_dates='keep' if they are "
            "real."
        )
    warnings.warn(f"Dropped these rows (outlying_dates='drop'): {what}", DataWarning, stacklevel=3)
    return bounds


def _drop_days(part: pd.DataFrame, bounds: tuple[int, int], kwargs: dict) -> pd.DataFrame:
    """The rows of a partition dated within ``bounds`` (day numbers, inclusive)."""
    if len(part) == 0:
        return part
    days = _days(part, kwargs)
    return part[(days >= bounds[0]) & (days <= bounds[1])]


def _check_date_gaps(results: list[dict], observation_end: Any, datetime_col: str) -> None:
    """Warn when whole partitions' dates lie far from all the others (a mistyped year?).

    The in-memory rule looks for a few outlying rows (at most 1% of them); this looks at
    whole partitions: they are merged into runs of overlapping date ranges, and a gap
    between runs that is longer than a year and than the data on either side of it is
    suspicious.  The partitions on its smaller side (fewer rows) are named.
    """
    spans = sorted(
        (int(r["days"][0]), int(r["days"][-1]), r["n_rows"], r["label"]) for r in results
    )
    runs: list[list] = []  # [first, last, rows, labels]
    for first, last, n, label in spans:
        if runs and first <= runs[-1][1]:
            run = runs[-1]
            run[1], run[2] = max(run[1], last), run[2] + n
            run[3].append(label)
        else:
            runs.append([first, last, n, [label]])
    start, end = runs[0][0], max(r[1] for r in runs)
    for i in range(1, len(runs)):
        gap = runs[i][0] - runs[i - 1][1]
        before, after = runs[i - 1][1] - start, end - runs[i][0]
        if gap <= max(before, after, 365):
            continue
        late = sum(r[2] for r in runs[i:]) < sum(r[2] for r in runs[:i])
        odd, rest = (runs[i:], runs[:i]) if late else (runs[:i], runs[i:])
        labels = [lab for r in odd for lab in r[3]]
        effect = (
            f"they set the observation end ({_day(end)}), so every customer's T runs to it"
            if late and observation_end is None
            else "their customers' purchases lie far from everyone else's"
        )
        warnings.warn(
            f"The dates in column {datetime_col!r} of {_where(labels)} ({_day(odd[0][0])} to "
            f"{_day(max(r[1] for r in odd))}) are {gap:,} days away from those of the other "
            f"partitions ({_day(rest[0][0])} to {_day(max(r[1] for r in rest))}): {effect}. "
            "Check those files' dates (a mistyped year?); leave them out, fix them, or pass "
            "observation_end.",
            DataWarning,
            stacklevel=3,
        )
        return


def _reemit(results: list[dict], limit: int = 20) -> None:
    """Warn on the client, prefixed with the partition, what the partitions warned about."""
    seen: dict[tuple[type, str], list[str]] = {}
    for r in results:
        for category, message in r.get("warnings", ()):
            seen.setdefault((category, message), []).append(r["label"])
    for n, ((category, message), labels) in enumerate(seen.items()):
        if n == limit:
            warnings.warn(
                f"{len(seen) - limit:,} more warnings from the input partitions are not shown.",
                DataWarning,
                stacklevel=3,
            )
            break
        warnings.warn(f"In {_where(labels)}: {message}", category, stacklevel=3)


def _summarize_group(
    part: pd.DataFrame, kwargs: dict, meta: pd.DataFrame, attrs: dict, partition_info=None
) -> pd.DataFrame:
    """Summarise one customer-grouped partition (all rows of its customers are in it)."""
    if len(part) == 0:
        out = meta.copy()
    else:
        ids = kwargs["customer_id_col"]
        if part[ids].dtype != meta.index.dtype:  # undo Dask's string conversion
            part = part.assign(**{ids: part[ids].astype(meta.index.dtype)})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = summarize_transactions(part, **kwargs)
        except DataError as err:
            number = partition_info["number"] if partition_info else "?"
            where = f"partition {number} of the transactions grouped by customer"
            raise _located(err, where) from None
    out.attrs = dict(attrs)
    return out


def _latest(labels: list[str]) -> str:
    """The latest of the partitions' end labels (ISO dates or timestamps)."""
    try:
        return max(labels, key=pd.Timestamp)
    except TypeError as err:
        raise DataError(
            "The partitions mix timezone-aware and naive purchase times, so their last "
            f"transactions cannot be compared (e.g. {', '.join(sorted(set(labels))[:4])}). "
            "Store the times of every file in one way, or pass observation_end."
        ) from err


def _check_options(
    time_unit: str,
    negative_amounts: str,
    duplicate_rows: str,
    outlying_dates: str,
    npartitions: Any,
    rows_per_partition: Any,
    shuffle_method: Any,
) -> None:
    """Refuse unknown options on the client, before any file is read (an option error is
    no partition's fault)."""
    check_time_unit(time_unit)
    check_option("negative_amounts", negative_amounts, NEGATIVE_AMOUNT_OPTIONS)
    check_option("duplicate_rows", duplicate_rows, DUPLICATE_ROW_OPTIONS)
    check_option("outlying_dates", outlying_dates, OUTLYING_DATE_OPTIONS)
    for name, value, optional in (
        ("npartitions", npartitions, True),
        ("rows_per_partition", rows_per_partition, False),
    ):
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
    if shuffle_method not in (None, "tasks", "p2p", "disk"):
        raise ValueError(
            f"Unknown shuffle_method={shuffle_method!r}; use 'tasks', 'p2p', 'disk' or None "
            "(Dask's choice)."
        )


def _check_seed(seed: Any) -> None:
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ValueError(f"seed must be a whole number >= 0 or None (fresh entropy), got {seed!r}.")


def summarize_transactions_dask(
    source: str | os.PathLike[str] | list[str | os.PathLike[str]] | dd.DataFrame,
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
    npartitions: int | None = None,
    rows_per_partition: int = 5_000_000,
    shuffle_method: str | None = None,
    **read_kwargs: Any,
) -> dd.DataFrame:
    """Summarise a partitioned transaction log into one RFM row per customer, with Dask.

    Runs on the current Dask scheduler (a ``distributed.Client`` if one is active).  Two
    passes over the input:

    1. *check* (computed now): every input partition is summarised on its own by
       :func:`clvbayes.data.summarize_transactions`, which validates it and reports its
       last transaction; a :class:`~clvbayes.data.DataError` names the file and rows (or
       the partition) and stops the job before anything is shuffled or written.  Unless
       ``observation_end`` is given, the summary ends at the latest transaction of all
       partitions, as in memory.
    2. *summary* (lazy): the rows are shuffled by customer id so that each customer's rows
       are in one partition, and each partition is summarised by the same function with
       the global ``observation_end``.

    Parameters
    ----------
    source : path, glob, list of paths, or dask.dataframe.DataFrame
        Parquet or CSV files (local or any fsspec URL such as ``s3://bucket/tx/``), a
        folder of them (searched recursively; names starting with ``_`` or ``.`` are
        skipped), or a dask DataFrame you built yourself (e.g. ``dd.read_csv(...,
        blocksize="64MB")`` to split one huge CSV).  Files are read with
        :func:`clvbayes.data.read_transactions`, one partition per CSV file and per
        ``rows_per_partition`` rows of Parquet row groups.
    customer_id_col, datetime_col, monetary_value_col, observation_end, time_unit, \
datetime_format, merge_same_day, negative_amounts, duplicate_rows, outlying_dates
        As in :func:`clvbayes.data.summarize_transactions`.  The outlying-date rule and
        the check of an ``observation_end`` far after the last transaction are applied
        once to all partitions together (a partition-local rule would see a quiet file as
        an outlier).  ``duplicate_rows="drop"`` drops every copy, across files too (all
        rows of a customer meet in one partition); ``"warn"`` warns about copies within a
        partition and about input files with identical content, but copied rows in two
        different files are not counted.  ``outlying_dates="drop"``
        with ``merge_same_day=False`` needs ``observation_end``.
    npartitions : int, optional
        Partitions of the summary (default: as many as the input).
    rows_per_partition : int
        Target rows per input partition when splitting Parquet files by row groups.
    shuffle_method : {"tasks", "p2p", "disk"}, optional
        Passed to :meth:`dask.dataframe.DataFrame.shuffle` (default: Dask's choice).
    **read_kwargs
        Passed to :func:`pandas.read_csv` for CSV files.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy; index: customer ids, columns as in
        :func:`~clvbayes.data.summarize_transactions`, customers grouped by a hash of their
        id (``.compute().sort_index()`` gives the in-memory row order).  Each partition's
        ``attrs`` (kept by ``.compute()``) hold ``time_unit``, ``observation_end``,
        ``merge_same_day`` and the input totals ``n_transactions`` (and, with amounts,
        ``n_negative_amount_rows`` and ``n_negative_amount_rows_dropped``).  Call
        ``.persist()`` to keep it in cluster memory for fitting and scoring.

    Raises
    ------
    DataError
        For any invalid input: the in-memory message prefixed with ``"In file '...',
        rows a-b: "`` (Parquet row groups), ``"In file '...': "`` (whole files) or
        ``"In partition i of n of the input dask DataFrame: "``.  Also, naming the files:
        a file that cannot be read (empty, truncated, not the format its name says); a
        missing customer id in any dtype (``<NA>`` in ``Int64``, ``int64[pyarrow]``,
        ``boolean``); a column stored as different kinds in different partitions (ids as
        text in one file and as integers in another, naive and tz-aware or text and
        timestamp dates, amounts as text and as numbers), which would split customers or
        mix values in memory; a path or pattern that matches nothing; a folder without
        CSV or Parquet files.

    Warns
    -----
    DataWarning
        What a partition warned about (prefixed with the partition); files in a searched
        folder that are skipped because of their ending; partitions whose dates lie far
        from all the others' (more than a year, and more than the data on either side:
        a mistyped year that would move the observation end).
    """
    dask, _ = _require_dask()
    _check_options(
        time_unit, negative_amounts, duplicate_rows, outlying_dates, npartitions,
        rows_per_partition, shuffle_method,
    )  # fmt: skip
    required = {
        "customer_id_col": customer_id_col,
        "datetime_col": datetime_col,
        "monetary_value_col": monetary_value_col,
    }
    ddf, labels, id_dtype = _input_frame(
        source, required, rows_per_partition, read_kwargs, duplicate_rows
    )
    kwargs = {
        "customer_id_col": customer_id_col,
        "datetime_col": datetime_col,
        "monetary_value_col": monetary_value_col,
        "time_unit": time_unit,
        "datetime_format": datetime_format,
        "merge_same_day": merge_same_day,
        "negative_amounts": negative_amounts,
        "duplicate_rows": duplicate_rows,
        "outlying_dates": outlying_dates,
    }
    # pass 1: check every input partition where it can still be named
    check = dask.delayed(_check_partition, pure=True)
    parts = ddf.to_delayed()
    results = dask.compute(
        *[
            check(part, label, kwargs | {"observation_end": observation_end})
            for part, label in zip(parts, labels, strict=True)
        ]
    )
    results = [r for r in results if not r.get("empty")]
    if not results:
        raise DataError(
            "The transactions table is empty (0 rows): there is nothing to summarise. "
            "Check the files or the filter that produced them."
        )
    casts = _common_dtypes(results, kwargs, ddf._meta)
    if casts:  # equal ids must hash alike in the shuffle, whatever their file's dtype
        ddf = ddf.map_partitions(_cast, casts, meta=_cast(ddf._meta, casts))
        if casts.get(customer_id_col) in ("int64", "uint64", "float64", "bool"):
            id_dtype = np.dtype(casts[customer_id_col])  # text keeps the in-memory dtype
    _reemit(results)
    # outlying dates: the in-memory rule, once on the day histogram of all partitions
    bounds = _outlying_days(results, outlying_dates, datetime_col)
    if bounds is None:
        _check_date_gaps(results, observation_end, datetime_col)
    else:
        if not merge_same_day and observation_end is None:
            raise DataError(
                "outlying_dates='drop' with merge_same_day=False needs observation_end on "
                "the Dask path (the last exact time left after dropping is not known "
                "before the shuffle); pass observation_end, or fix the dates."
            )
        ddf = ddf.map_partitions(_drop_days, bounds, kwargs, meta=ddf._meta)
    first_day = bounds[0] if bounds else min(int(r["days"][0]) for r in results)
    last_day = bounds[1] if bounds else max(int(r["days"][-1]) for r in results)
    end = observation_end
    if end is None:
        end = _day(last_day) if bounds else _latest([r["observation_end"] for r in results])
    else:  # an end far after the last transaction, judged on all partitions
        given = pd.Timestamp(end)
        given = given.tz_localize(None) if given.tz is not None else given
        end_day = int(given.to_datetime64().astype("datetime64[D]").astype(np.int64))
        check_end_gap(first_day, last_day, end_day, "observation_end", outlying_dates)
    n_dropped = sum(r["n_negative_amount_rows_dropped"] for r in results)
    if n_dropped:
        warnings.warn(
            f"Dropped {n_dropped:,} rows with negative amounts in column "
            f"{monetary_value_col!r} (negative_amounts='drop'); customers with no other "
            "transaction are not in the summary. The counts are in the partitions' attrs.",
            UserWarning,
            stacklevel=2,
        )
    meta = results[0]["meta"]
    attrs: dict[str, Any] = {"time_unit": time_unit, "merge_same_day": merge_same_day}
    attrs["n_transactions"] = sum(r["n_transactions"] for r in results)
    if monetary_value_col is not None:
        attrs["n_negative_amount_rows"] = sum(r["n_negative_amount_rows"] for r in results)
        attrs["n_negative_amount_rows_dropped"] = n_dropped
    # pass 2: group each customer's rows into one partition, summarise with the global end
    grouped = ddf.shuffle(
        on=customer_id_col,
        npartitions=npartitions or ddf.npartitions,
        shuffle_method=shuffle_method,
    )
    summary_kwargs = kwargs | {"observation_end": end, "outlying_dates": "keep"}
    # the end as summarize_transactions labels it (every partition reports a given end alike)
    attrs["observation_end"] = end if observation_end is None else results[0]["observation_end"]
    meta = meta.copy()
    if id_dtype is not None:
        meta.index = meta.index.astype(id_dtype)
    meta.attrs = dict(attrs)
    return grouped.map_partitions(
        _summarize_group, summary_kwargs, meta, attrs, meta=meta, enforce_metadata=False
    )


# ---------------------------------------------------------------------------------------
# scoring


def partition_seed(seed: int, partition: int) -> int:
    """The simulation seed of partition ``partition`` in :func:`score_customers_dask`.

    ``numpy.random.SeedSequence(seed, spawn_key=(partition,))``, the ``partition``-th child
    of ``SeedSequence(seed)``, reduced to one 64-bit integer: independent streams for
    different partitions, reproducible from ``seed`` alone.

    Parameters
    ----------
    seed : int
        The user's seed (>= 0).
    partition : int
        Partition number, from 0.

    Returns
    -------
    int
        The seed passed to :func:`clvbayes.predict.score_customers` for that partition.
    """
    state = np.random.SeedSequence(seed, spawn_key=(partition,)).generate_state(1, np.uint64)
    return int(state[0])


def _score_partition(
    part: pd.DataFrame, models, seed: int, kwargs: dict, meta, partition_info=None
):
    from clvbayes.predict import score_customers

    if len(part) == 0:
        return meta.copy()
    number = partition_info["number"] if partition_info else 0
    where = f"partition {number} of the customer table"
    missing = part.index.isna()
    if missing.any():
        positions = np.flatnonzero(missing)
        shown = ", ".join(f"{p:,}" for p in positions[:5]) + (", ..." if len(positions) > 5 else "")
        raise DataError(
            f"In {where}: {int(missing.sum()):,} customer(s) have a missing id (<NA>/NaN in "
            f"the index, dtype {part.index.dtype}; rows counting from 0 in this partition: "
            f"{shown}), so their scores could not be joined back to a customer. Drop them "
            "(rfm = rfm[rfm.index.notna()]) or fix their ids."
        )
    expected, stored = _storage(meta.index), _storage(part.index)
    if expected not in ("empty", "mixed") and stored != expected:
        raise DataError(
            f"In {where}: the customer ids (the index) are stored as "
            f"{_KIND_WORDS.get(stored, stored)} ({part.index.dtype}), but the table's index "
            f"is {_KIND_WORDS.get(expected, expected)} ({meta.index.dtype}) as its other "
            "partitions should be; one customer could then appear under two ids (text '42' "
            "and integer 42). Give the index one type in every partition, e.g. "
            "rfm.index.astype(str) before building the dask DataFrame."
        )
    purchase_model, spend_model = models
    try:
        # one thread per task: Dask already runs partitions in parallel
        kwargs = {"n_jobs": 1, **kwargs}
        scores = score_customers(
            part, purchase_model, spend_model, seed=partition_seed(seed, number), **kwargs
        )
    except DataError as err:
        raise _located(err, where) from None
    return scores.customers


# ---------------------------------------------------------------------------------------
# checks of the written scores: one row per customer, across partitions


def _written_ids(path: str, number: int) -> pd.DataFrame:
    """The customer ids of one written part (its index only), as text keys."""
    index = pd.read_parquet(path, columns=[]).index
    return pd.DataFrame(
        {
            "key": index.astype(str).to_numpy(dtype=object),
            "partition": np.full(len(index), number, dtype=np.int64),
            "storage": _storage(index) if len(index) else "empty",
        }
    )


def _duplicates(part: pd.DataFrame, limit: int = 5) -> dict[str, Any]:
    """Ids in more than one row of a key-grouped partition (their count, and a few with
    the partitions that hold them), and the (storage, partition) pairs seen."""
    stored = part[["storage", "partition"]].drop_duplicates()
    dup = part[part["key"].duplicated(keep=False)]
    if dup.empty:
        return {"n": 0, "examples": [], "stored": stored}
    where = dup.groupby("key", sort=True)["partition"].agg(lambda p: sorted(set(p)))
    return {"n": len(where), "examples": list(where.head(limit).items()), "stored": stored}


def _check_one_row_per_customer(tmp: Path, n_partitions: int) -> None:
    """Raise :class:`DataError` when the written table has a customer id in more than one
    row (a customer in two partitions), or ids stored as different kinds."""
    dask, dd = _require_dask()
    parts = sorted(
        (int(p.name.split(".")[1]), str(p)) for p in tmp.iterdir() if _PART.fullmatch(p.name)
    )
    if n_partitions < 2 or len(parts) < 2:
        return  # one partition: score_customers itself refuses duplicated ids
    meta = pd.DataFrame(
        {"key": pd.Series([], dtype=object), "partition": pd.Series([], dtype="int64"),
         "storage": pd.Series([], dtype=object)}
    )  # fmt: skip
    ids = dd.from_map(
        _written_ids, [p for _, p in parts], [n for n, _ in parts], meta=meta,
        enforce_metadata=False, label="clvbayes-ids",
    )  # fmt: skip
    grouped = ids.shuffle(on="key", npartitions=len(parts))
    (found,) = dask.compute([dask.delayed(_duplicates)(p) for p in grouped.to_delayed()])
    stored = pd.concat([f["stored"] for f in found]).drop_duplicates()
    stored = stored[stored["storage"] != "empty"]
    if stored["storage"].nunique() > 1:
        listing = "; ".join(
            f"as {_KIND_WORDS.get(kind, kind)} in partition(s) "
            + _where([f"{n}" for n in sorted(g["partition"])], 5)
            for kind, g in stored.groupby("storage")
        )
        raise DataError(
            f"The customer ids (the index) of the customer table are stored differently in "
            f"its partitions: {listing}. One customer could then appear under two ids (text "
            "'42' and integer 42). Give the index one type in every partition, e.g. "
            "rfm.index.astype(str) before building the dask DataFrame."
        )
    n = sum(f["n"] for f in found)
    if n:
        examples = sorted(e for f in found for e in f["examples"])[:5]
        shown = ", ".join(
            f"{key!r} (partitions {' and '.join(map(str, where))})"
            if len(where) > 1
            else f"{key!r} (twice in partition {where[0]})"
            for key, where in examples
        )
        raise DataError(
            f"The customer table has {n:,} customer id(s) in more than one row ({shown}"
            f"{', ...' if n > len(examples) else ''}): each copy would be scored as a "
            "separate customer from part of the history, and two rows would be written. "
            "Rows of one customer cannot be combined after summarising; give each customer "
            "one row: summarise the transactions with summarize_transactions_dask (which "
            "groups all rows of a customer), or find the copies and keep the right one."
        )


# ---------------------------------------------------------------------------------------
# publishing: replace only what score_customers_dask wrote

_PART = re.compile(r"part\.(\d+)\.parquet")
_WRITER = "clvbayes.distributed.score_customers_dask"


def _ours(folder: Path) -> tuple[list[str], list[str]]:
    """(entries score_customers_dask wrote, entries it did not) of an existing folder.

    A folder is ours when its ``_clvbayes.json`` says so and lists its files (tables
    written before the list existed: ``part.N.parquet`` files with N < n_partitions).
    """
    entries = sorted(os.listdir(folder))
    try:
        settings = json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return [], entries
    if not isinstance(settings, dict):
        return [], entries
    if settings.get("written_by") == _WRITER and isinstance(settings.get("files"), list):
        listed = set(settings["files"])
    elif "seeds" in settings and isinstance(settings.get("n_partitions"), int):
        n = settings["n_partitions"]
        listed = {e for e in entries if (m := _PART.fullmatch(e)) and int(m[1]) < n}
    else:
        return [], entries
    listed.add(SETTINGS_FILE)
    mine = [e for e in entries if e in listed and (folder / e).is_file()]
    return mine, [e for e in entries if e not in mine]


class OutputBusy(OSError):
    """Another process is writing the same ``out_path`` of :func:`score_customers_dask`."""


@contextlib.contextmanager
def _out_lock(out: Path):
    """Hold ``.{name}.lock`` next to ``out`` (an exclusive ``flock``, taken without waiting,
    released by the kernel if the process dies), so that two runs cannot publish into one
    folder at once.  No lock where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = out.with_name(f".{out.name}.lock")
    out.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputBusy(
                f"Another run of score_customers_dask is writing {str(out)!r} (it holds "
                f"{str(path)!r}); wait for it to finish, or pass another out_path."
            ) from None
        try:  # the file may have been removed by its previous holder: then take the new one
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover - twenty holders in a row
        raise OutputBusy(f"Cannot take the lock {str(path)!r} for {str(out)!r}; try again.")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it
        os.close(fd)


def _siblings(out: Path, kind: str) -> list[Path]:
    """The ``.{name}.{kind}-*`` folders next to ``out`` (kind: "partial" or "old")."""
    import glob

    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.glob(f".{glob.escape(out.name)}.{kind}-*") if p.is_dir())


def _recover(out: Path) -> None:
    """Tidy what an interrupted :func:`score_customers_dask` left next to ``out``.

    A crash between the two renames of a replacement leaves the previous table only in
    ``.{name}.old-*``: it is put back when ``out`` is missing (one such folder, verified
    to be a table this function wrote), or removed when ``out`` holds the new table.
    Leftover ``.partial-*`` folders are named in a warning, never deleted (another run
    may still be writing one).  Anything else is left alone.
    """
    olds = [(p, _ours(p)) for p in _siblings(out, "old")]
    olds = [(p, mine) for p, (mine, foreign) in olds if mine and not foreign]
    if olds and not out.exists() and not out.is_symlink():
        if len(olds) == 1:
            os.rename(olds[0][0], out)
            warnings.warn(
                f"Put back the previous table of scores at {str(out)!r} from "
                f"{str(olds[0][0])!r}, where an interrupted run had left it.",
                DataWarning,
                stacklevel=3,
            )
        olds = []
    for folder, mine in olds:
        for name in mine:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()
    partials = _siblings(out, "partial")
    if partials:
        warnings.warn(
            f"{len(partials):,} folder(s) next to {str(out)!r} were left by interrupted runs "
            f"of score_customers_dask ({_examples([str(p) for p in partials], 3)}); they "
            "hold incomplete tables: delete them once no run is writing to this out_path.",
            DataWarning,
            stacklevel=3,
        )


def _check_out_path(out: Path, overwrite: bool) -> list[str]:
    """Refuse an ``out_path`` that holds anything score_customers_dask did not write.

    Returns the entries of a previous table that may be replaced ([] when ``out`` does
    not exist or is an empty folder).
    """
    if not out.exists() and not out.is_symlink():
        return []
    if out.is_symlink() or not out.is_dir():
        raise FileExistsError(
            f"{str(out)!r} is a file or a link, not a folder of scores; score_customers_dask "
            "writes a folder and never replaces what it did not write. Pass a new out_path."
        )
    mine, foreign = _ours(out)
    if foreign:
        raise FileExistsError(
            f"{str(out)!r} holds {len(foreign):,} entr{'y' if len(foreign) == 1 else 'ies'} "
            f"that score_customers_dask did not write ({_examples(foreign)}); clvbayes never "
            "deletes or replaces files it did not write, even with overwrite=True. Pass a "
            "new (or empty) folder as out_path, or move those files away yourself."
        )
    if mine and not overwrite:
        raise FileExistsError(
            f"{str(out)!r} holds a table of scores written before; pass overwrite=True to "
            "replace it (only its own files are removed), or pass a new out_path."
        )
    return mine


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the complete table ``tmp`` to ``out``, replacing only a previous table."""
    old_files = _check_out_path(out, overwrite)  # again: the folder may have changed
    if not old_files:
        if out.is_dir():
            os.rmdir(out)  # empty (fails, and nothing is lost, if a file appeared since)
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    for name in old_files:
        with contextlib.suppress(FileNotFoundError):
            (old / name).unlink()
    try:
        old.rmdir()
    except OSError:
        warnings.warn(
            f"Kept {str(old)!r}: files appeared in the previous table while it was being "
            "replaced, and clvbayes does not delete files it did not write.",
            DataWarning,
            stacklevel=3,
        )


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _compute(task, progress: bool) -> None:
    client = _client()
    if client is not None:
        future = client.compute(task)
        if progress:
            from distributed import progress as show

            show(future)
        future.result()
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar() if progress else contextlib.nullcontext():
        task.compute()


def score_customers_dask(
    rfm: dd.DataFrame,
    purchase_model,
    spend_model,
    out_path: str | os.PathLike[str],
    *,
    seed: int | None = 0,
    overwrite: bool = False,
    progress: bool = False,
    **score_kwargs: Any,
) -> str:
    """Score every customer of a partitioned customer table; write the scores as Parquet.

    Each partition is scored by :func:`clvbayes.predict.score_customers` with the same
    settings, the posterior draws of both models (sent to every worker once) and the seed
    :func:`partition_seed` (``seed``, partition number).  The table is written to a
    temporary folder next to ``out_path`` and renamed to ``out_path`` only when every
    partition has been written: a failed job leaves no partial output.

    Parameters
    ----------
    rfm : dask.dataframe.DataFrame
        One row per customer, in the models' time unit: ``frequency``, ``recency``, ``T``
        and, with a spend model, ``monetary_value`` (e.g. from
        :func:`summarize_transactions_dask`).  Each customer in one partition only.
    purchase_model : BetaGeoModel
        Fitted purchase model.
    spend_model : GammaGammaModel or None
        Fitted spend model; ``None`` scores only ``p_alive`` and ``purchases``.
    out_path : str or path
        Folder to create, on a filesystem every worker can write to (local disk for a
        ``LocalCluster``; a shared filesystem for a real cluster).
    seed : int, optional
        Base seed of the outcome simulation (default 0); ``None`` draws fresh entropy.
    overwrite : bool
        Replace a table of scores written before at ``out_path`` (only after the new table
        is complete).  Only a folder that ``score_customers_dask`` wrote is replaced, and
        only the files its ``_clvbayes.json`` lists are removed: a folder holding anything
        else is refused, with or without ``overwrite``.  An empty folder is used as is.
    progress : bool
        Show Dask's progress bar while scoring.
    **score_kwargs
        Passed to :func:`~clvbayes.predict.score_customers`: ``horizon`` (required),
        ``discount_rate`` or ``annual_discount_rate``, ``period``, ``margin``, ``prob``,
        ``n_draws``, ``n_outcome_samples``, ``max_chunk_elements``, ``n_jobs`` (threads per
        partition; default 1, as Dask runs partitions in parallel).  Not supported: ``by``
        (segment totals need per-draw sums across partitions; see the module docstring)
        and ``observed``.

    Returns
    -------
    str
        ``out_path``: a folder of ``part.*.parquet`` files (index: customer id; columns as
        :attr:`CustomerScores.customers <clvbayes.predict.CustomerScores>`) and
        ``_clvbayes.json`` with the settings, the seeds and the list of files written.
        Read it with ``pandas.read_parquet(out_path)`` or
        ``dask.dataframe.read_parquet(out_path)``.

    Raises
    ------
    DataError
        A partition that ``score_customers`` refuses (its message, prefixed with the
        partition), missing customer ids, ids stored as different types in different
        partitions, and a customer id in more than one row (across partitions too:
        checked on the written table before it is published).
    FileExistsError
        ``out_path`` is a file, holds files that ``score_customers_dask`` did not write, or
        holds a previous table and ``overwrite`` is false.
    OutputBusy
        Another process is writing the same ``out_path`` (a lock file ``.{name}.lock``
        next to it is held from the first check to the publication).
    """
    dask, _ = _require_dask()
    from clvbayes.predict import score_customers

    for name, why in (
        ("by", "segment totals need per-draw sums across partitions, which are not collected"),
        ("observed", "pass observed outcomes as columns in memory instead"),
        ("progress", "use progress=True of score_customers_dask"),
    ):
        if name in score_kwargs:
            raise TypeError(f"score_customers_dask does not take {name}= ({why}).")
    if "horizon" not in score_kwargs:
        raise TypeError("score_customers_dask needs horizon= (in the data's time unit).")
    columns = ("frequency", "recency", "T") + (("monetary_value",) if spend_model else ())
    require_columns(
        pd.DataFrame(columns=list(rfm.columns)), {c: c for c in columns}, what="RFM table"
    )
    _check_seed(seed)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    if not os.fspath(out_path):
        raise ValueError("out_path is empty; pass the folder to write the scores to.")
    out = Path(os.path.abspath(os.fspath(out_path)))
    with _out_lock(out):
        _recover(out)
        _check_out_path(out, overwrite)
        from clvbayes.models.base import draws_only

        models = (draws_only(purchase_model), draws_only(spend_model))

        # the output's columns and dtypes: score one made-up customer on the client
        probe = pd.DataFrame(
            {"frequency": [1], "recency": [1.0], "T": [2.0], "monetary_value": [1.0]},
            index=pd.Index([0], name=rfm.index.name),
        )
        probe_scores = score_customers(probe, *models, seed=0, **score_kwargs)
        meta = probe_scores.customers.iloc[:0]
        meta.index = pd.Index([], dtype=rfm.index.dtype, name=rfm.index.name)

        shipped = dask.delayed(models, pure=True)  # one task: each worker fetches it once
        scored = rfm.map_partitions(
            _score_partition, shipped, seed, score_kwargs, meta, meta=meta, enforce_metadata=False
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            _compute(scored.to_parquet(str(tmp), write_index=True, compute=False), progress)
            _check_one_row_per_customer(tmp, rfm.npartitions)
            settings = {
                k: v
                for k, v in probe_scores.settings.items()
                if k not in ("n_customers", "n_histories", "seed")
            }
            settings |= {
                "seed": seed,
                "seeds": "partition i is scored with clvbayes.distributed.partition_seed(seed, i)",
                "n_partitions": rfm.npartitions,
                "written_by": _WRITER,
                "files": sorted(os.listdir(tmp)),
            }
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, default=str))
            _publish(tmp, out, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return str(out_path)
