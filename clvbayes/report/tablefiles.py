"""Table files: CSV (safe to open in a spreadsheet) and Parquet, written and read back exactly.

CSV floats are written in their shortest exact form; text cells a spreadsheet would run as a
formula get a leading ``'`` that :func:`read_report_table` removes again (see the notes of
:mod:`clvbayes.report`); Parquet keeps the values and types as they are.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clvbayes.report.schema import FORMATS, PANDAS_DTYPES, SCHEMA, _cast, _schema_dtypes


def _normalise_formats(fmt: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(fmt, str):
        fmt = FORMATS if fmt == "both" else (fmt,)
    out = tuple(dict.fromkeys(fmt))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise ValueError(f"format must be 'csv', 'parquet' or 'both', got {fmt!r}.")
    return out


#: First characters that make a spreadsheet read a text cell as a formula (``=``, ``+``,
#: ``-``, ``@``, tab, carriage return), and the escape character ``'`` itself.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _csv_escape(v: Any) -> Any:
    """``'`` + v for text a spreadsheet would run as a formula (or that starts with ``'``)."""
    if isinstance(v, str) and v.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(v):
        return "'" + v
    return v


def _csv_unescape(s: pd.Series) -> pd.Series:
    """Undo :func:`_csv_escape` on a text column read from a report CSV."""
    quoted = s.str.startswith("'", na=False)
    if not quoted.any():
        return s
    out = s.copy()
    out[quoted] = s[quoted].str[1:]
    return out


def _is_text(s: pd.Series) -> bool:
    return s.dtype == object or pd.api.types.is_string_dtype(s.dtype)


def _csv_safe(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and header are safe to open in a spreadsheet.

    Text that starts with a formula character (:data:`FORMULA_START`) gets a leading
    ``'`` (the spreadsheet convention for "this is text"), except plain numbers such as
    ``-5``; :func:`read_report_table` removes it again, so values round-trip exactly.
    Numeric columns are never touched (a negative amount is not a formula).
    """
    df = df.copy()
    df.attrs = {}
    for c in columns if columns is not None else df.columns:
        if _is_text(df[c]):
            df[c] = df[c].map(_csv_escape, na_action="ignore").astype(df[c].dtype)
    df.columns = [_csv_escape(c) for c in df.columns]
    return df


def _to_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a report CSV (LF line ends); every field quoted when some text holds a CR.

    Python's csv writer quotes a field holding the line terminator (LF) but not a bare
    carriage return, which a reader then takes for a line break.
    """
    texts = [df[c] for c in df.columns if _is_text(df[c])] + [pd.Series(df.columns, dtype=object)]
    has_cr = any(
        s.astype(object).map(lambda v: isinstance(v, str) and "\r" in v).any() for s in texts
    )
    df.to_csv(path, index=False, encoding="utf-8", lineterminator="\n",
              quoting=csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL)  # fmt: skip


def _write_table(df: pd.DataFrame, folder: Path, name: str, formats: Sequence[str]) -> None:
    df = df.copy()
    df.attrs = {}
    if "csv" in formats:
        # pandas writes floats in their shortest exact decimal form (round-trip safe); text
        # that a spreadsheet would run as a formula is escaped (see _csv_safe)
        _to_csv(_csv_safe(df), folder / f"{name}.csv")
    if "parquet" in formats:
        df.to_parquet(folder / f"{name}.parquet", index=False)


def _dictionary_dtypes(folder: Path, table: str) -> dict[str, str]:
    path = folder / "data_dictionary.csv"
    if not path.exists():
        return {}
    d = _read_dictionary(path)
    d = d[d["table"] == table]
    return dict(zip(d["column"], d["dtype"], strict=True))


def _read_dictionary(path: Path) -> pd.DataFrame:
    """``data_dictionary.csv`` as text, formula escapes removed."""
    d = pd.read_csv(path, dtype=str, keep_default_na=False)
    return d.apply(_csv_unescape)


def read_report_table(path: str | os.PathLike[str], table: str | None = None) -> pd.DataFrame:
    """Read a report table back with its exact types (the documented reader).

    Parameters
    ----------
    path : path
        A table file (``customers.csv``, ``segments.parquet``, ...) or a report folder.
    table : {"customers", "segments"}, optional
        With a folder: which table (Parquet is read when present, else CSV).  With a file:
        default from the file name.

    Returns
    -------
    DataFrame
        RangeIndex; dtypes from :data:`SCHEMA` and, for input columns, from the folder's
        ``data_dictionary.csv``.  Equal (``pandas.testing.assert_frame_equal``) to the
        table that was written.
    """
    p = Path(path)
    if p.is_dir():
        if table not in SCHEMA:
            raise ValueError(f"table must be one of {list(SCHEMA)} when reading a folder.")
        p = p / f"{table}.parquet" if (p / f"{table}.parquet").exists() else p / f"{table}.csv"
    table = table or p.name.split(".")[0]
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
        df.attrs = {}
        return df
    dtypes = {**_schema_dtypes(table), **_dictionary_dtypes(p.parent, table)}
    raw = pd.read_csv(p, nrows=0, dtype=str).columns
    names = dict(zip(raw, _csv_unescape(pd.Series(raw, dtype=object)), strict=True))
    known = {r: dtypes[n] for r, n in names.items() if n in dtypes}
    read_as = {c: ("str" if t in ("string", "datetime") else PANDAS_DTYPES[t])
               for c, t in known.items() if t != "bool"}  # fmt: skip
    df = pd.read_csv(p, dtype=read_as, keep_default_na=False, na_values=[""], encoding="utf-8")
    for c in df.columns:
        t = known.get(c)
        if t in ("datetime", "bool", "string"):
            df[c] = _cast(df[c], t)
        if (t is None or t == "string") and _is_text(df[c]):
            df[c] = _csv_unescape(df[c])
    return df.rename(columns=names)
