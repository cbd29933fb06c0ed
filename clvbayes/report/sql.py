"""SQL export and import of report tables, with explicit column types and safe table names."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.folder import _SHOW
from clvbayes.report.schema import PANDAS_DTYPES, RESERVED_NAMES, _cast, _schema_dtypes


def _sqlalchemy_types(df: pd.DataFrame) -> dict[str, Any]:
    import sqlalchemy as sa

    out = {}
    for c in df.columns:
        dt = df[c].dtype
        kind = dt.kind if isinstance(dt, np.dtype) else "O"
        if kind == "b" or str(dt) == "boolean":
            out[c] = sa.Boolean()
        elif kind in "iu" or str(dt) in ("Int64", "Int32", "Int16", "Int8"):
            out[c] = sa.BigInteger()
        elif kind == "f" or str(dt) in ("Float64", "Float32"):
            out[c] = sa.Double()
        elif kind == "M" or isinstance(dt, pd.DatetimeTZDtype):
            out[c] = sa.DateTime(timezone=isinstance(dt, pd.DatetimeTZDtype))
        elif pd.api.types.is_string_dtype(dt):
            out[c] = sa.Text()
    return out


def _is_sqlalchemy(con: Any) -> bool:
    module = type(con).__module__
    return module.startswith("sqlalchemy")


#: Longest table name accepted (PostgreSQL silently truncates names past 63 bytes).
MAX_SQL_NAME_BYTES = 63
_DBAPI_NAME = re.compile(r"[^\W\d]\w*")


def check_sql_table_name(name: Any, *, sqlalchemy: bool = True) -> None:
    """Refuse a table name :func:`export_sql` could write but not read back as the same table.

    Every name: text, not empty, no NUL or other control character, no leading or
    trailing space, at most :data:`MAX_SQL_NAME_BYTES` bytes in UTF-8 (PostgreSQL cuts
    longer names, so two long names could land in one table).  Through SQLAlchemy the
    dialect quotes the name, so quotes and other punctuation are fine.  Through a plain
    DBAPI connection (``sqlite3``) only letters, digits and ``_`` are accepted, not
    starting with a digit.

    Raises
    ------
    ValueError
        With the name, the rule it breaks and a name that works.
    """
    how = "a name such as 'clvbayes_customers'"
    if not isinstance(name, str) or not name:
        raise ValueError(f"table name must be non-empty text, got {name!r}; use {how}.")
    bad = [c for c in name if ord(c) < 32 or ord(c) == 127]
    if bad:
        raise ValueError(
            f"table name {name!r} contains control character(s) {sorted(set(bad))!r}; use {how}."
        )
    if name != name.strip():
        raise ValueError(f"table name {name!r} starts or ends with a space; use {how}.")
    size = len(name.encode("utf-8"))
    if size > MAX_SQL_NAME_BYTES:
        raise ValueError(
            f"table name {name[:20]!r}... is {size} bytes long; at most {MAX_SQL_NAME_BYTES} "
            "are accepted (PostgreSQL truncates longer names); use a shorter name."
        )
    if not sqlalchemy and not _DBAPI_NAME.fullmatch(name):
        raise ValueError(
            f"table name {name!r}: with a plain DBAPI connection only letters, digits and '_' "
            f"are accepted (not starting with a digit); use {how}, or pass a SQLAlchemy URL or "
            "Engine, whose dialect quotes any name."
        )


def export_sql(
    customers_table: pd.DataFrame,
    con_or_url: Any,
    table_name: str = "clvbayes_customers",
    if_exists: str = "replace",
    *,
    chunksize: int | None = 10_000,
) -> int:
    """Write a report table to a SQL database.

    Parameters
    ----------
    customers_table : DataFrame
        Usually the ``customers`` table (any report table works).
    con_or_url : str, SQLAlchemy Engine/Connection, or DBAPI connection
        A SQLAlchemy URL (``"postgresql+psycopg://user@host/db"``, ``"sqlite:///x.db"``),
        an Engine or Connection (needs SQLAlchemy, ``pip install sqlalchemy``), or a
        ``sqlite3`` connection.
    table_name : str
        Target table.
    if_exists : {"replace", "append", "fail"}
        What to do when the table exists.
    chunksize : int, optional
        Rows per insert batch.

    Returns
    -------
    int
        Rows written.

    Notes
    -----
    Column types are explicit: text -> TEXT, int64 -> BIGINT, float64 -> DOUBLE,
    bool -> BOOLEAN, datetime -> TIMESTAMP.  Customer ids are text, so leading zeros
    survive; missing values become NULL.  Read back with :func:`read_sql_table` to get the
    report's pandas types again.
    """
    if if_exists not in ("replace", "append", "fail"):
        raise ValueError(f"if_exists must be 'replace', 'append' or 'fail', got {if_exists!r}.")
    check_sql_table_name(table_name, sqlalchemy=_is_sqlalchemy(con_or_url)
                         or isinstance(con_or_url, str | os.PathLike))  # fmt: skip
    df = customers_table.copy()
    df.attrs = {}
    if isinstance(con_or_url, str | os.PathLike):
        import sqlalchemy as sa

        engine = sa.create_engine(str(con_or_url))
        try:
            with engine.begin() as con:
                if if_exists == "replace":
                    _check_replaceable_table(con, table_name, df)
                df.to_sql(table_name, con, if_exists=if_exists, index=False,
                          dtype=_sqlalchemy_types(df), chunksize=chunksize)  # fmt: skip
        finally:
            engine.dispose()
    elif _is_sqlalchemy(con_or_url):
        if if_exists == "replace":
            _check_replaceable_table(con_or_url, table_name, df)
        df.to_sql(table_name, con_or_url, if_exists=if_exists, index=False,
                  dtype=_sqlalchemy_types(df), chunksize=chunksize)  # fmt: skip
        commit = getattr(con_or_url, "commit", None)
        if callable(commit) and getattr(con_or_url, "in_transaction", lambda: False)():
            commit()
    else:
        if if_exists == "replace":
            _check_replaceable_table(con_or_url, table_name, df)
        df.to_sql(table_name, con_or_url, if_exists=if_exists, index=False, chunksize=chunksize)
        con_or_url.commit()
    return len(df)


def _existing_columns(con: Any, table_name: str) -> list[str] | None:
    """Columns of an existing table, or None when there is no such table."""
    if _is_sqlalchemy(con):
        import sqlalchemy as sa

        insp = sa.inspect(con)
        if not insp.has_table(table_name):
            return None
        return [c["name"] for c in insp.get_columns(table_name)]
    rows = con.execute(f'PRAGMA table_info("{table_name}")').fetchall()  # name checked strictly
    return [r[1] for r in rows] or None


def _check_replaceable_table(con: Any, table_name: str, df: pd.DataFrame) -> None:
    """Refuse to drop a table that is not a report table (clvbayes never deletes others' data).

    A table counts as a report table when it has ``customer_id`` (customers) or
    ``grouping`` and ``group`` (segments) and every other column is a report column or a
    column of the table being written (input columns).
    """
    cols = _existing_columns(con, table_name)
    if cols is None:
        return
    known = set(RESERVED_NAMES) | set(df.columns)
    keyed = "customer_id" in cols or {"grouping", "group"} <= set(cols)
    foreign = [c for c in cols if c not in known]
    if keyed and not foreign:
        return
    why = f"columns {foreign[:_SHOW]} are not report columns" if foreign else "no customer_id"
    raise ValueError(
        f"table {table_name!r} exists and is not a clvbayes report table ({why}); "
        "export_sql replaces only report tables.  Pass another table_name, "
        "if_exists='append' to add rows, or drop the table yourself if it can go."
    )


def read_sql_table(
    con_or_url: Any,
    table_name: str = "clvbayes_customers",
    dtypes: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read a table written by :func:`export_sql` back with the report's pandas types.

    Parameters
    ----------
    con_or_url : str, SQLAlchemy Engine/Connection, or sqlite3 connection
        As in :func:`export_sql`.
    table_name : str
        The table.
    dtypes : mapping, optional
        Logical types (``string``, ``int64``, ``float64``, ``bool``, ``datetime``) or pandas
        dtypes (e.g. ``"Int64"``) of columns that are not report columns (input columns);
        report columns are typed from :data:`SCHEMA`.

    Returns
    -------
    DataFrame
        RangeIndex, columns in table order.
    """
    via_sqlalchemy = _is_sqlalchemy(con_or_url) or isinstance(con_or_url, str | os.PathLike)
    check_sql_table_name(table_name, sqlalchemy=via_sqlalchemy)
    if via_sqlalchemy:
        import sqlalchemy as sa

        # the dialect's identifier preparer quotes (and escapes) the name exactly as
        # pandas' to_sql did when it created the table
        query = sa.select(sa.literal_column("*")).select_from(sa.table(table_name))
        if isinstance(con_or_url, str | os.PathLike):
            engine = sa.create_engine(str(con_or_url))
            try:
                with engine.connect() as con:
                    df = pd.read_sql_query(query, con)
            finally:
                engine.dispose()
        else:
            df = pd.read_sql_query(query, con_or_url)
    else:
        # a DBAPI (sqlite3) connection: the name was checked strictly, so quoting is plain
        df = pd.read_sql_query(f'SELECT * FROM "{table_name}"', con_or_url)
    types = {**_schema_dtypes(None), **dict(dtypes or {})}
    for c in df.columns:
        t = types.get(c)
        if t is None:
            continue
        if t in PANDAS_DTYPES:
            df[c] = _cast(df[c], t)
        elif t == "boolean":
            df[c] = df[c].map({1: True, 0: False}).astype("boolean")
        else:
            df[c] = df[c].astype(t)
    return df
