"""The report folder: reporting-ready tables with a documented schema, plots, saved models.

A report folder holds (see :data:`SCHEMA` for every column):

==========================  ===========================================================
file                        content
==========================  ===========================================================
customers.csv / .parquet    one row per customer: RFM summary, segment labels, P(alive),
                            purchases, spend, revenue, CLV (mean, sd, both intervals)
segments.csv / .parquet     per segment (named segments, CLV deciles, ``--group-by``
                            columns, and ``all``): counts, totals and per-customer means
                            with intervals computed from per-draw sums
model_summary.json / .md    parameter tables (mean, sd, interval, r_hat, ESS),
                            divergences, fit and prediction settings, data provenance
                            (input sha256, row counts, excluded rows), holdout check
data_dictionary.csv / .md   every column of every table: type, unit, meaning
*.png                       P(alive) and CLV distributions, CLV by recency x frequency,
                            CLV totals by named segment with both intervals
bgnbd.nc, gamma_gamma.nc    the fitted models (``CLVModel.load(path)``); the purchase
                            model's file and key are its ``--purchase-model`` name
                            (``bgnbd.nc``, ``mbgnbd.nc``, ...)
.clvbayes-manifest.json     name, size and SHA-256 of every file above
==========================  ===========================================================

What clvbayes writes and what it never touches: :func:`write_report` writes the whole
folder in a staging folder next to it and swaps it into place in one step, so the
folder is always either the old report or the new one.  It replaces an existing folder
only when every entry in it is a file its manifest lists, unchanged; a folder with
anything else (a copied input file, notes, a subfolder, an edited table, a report from a
clvbayes that wrote no manifest) is refused with the entries named.  One run writes a
folder at a time (a lock file ``.<name>.<hash>.lock`` beside it).  What a killed run
leaves beside the folder (``.<name>.<hash>.partial-*``, ``.<name>.<hash>.old-*``) is
removed by the next run only as far as the manifest or the staging journal proves it
clvbayes' own.  Free space is checked before anything is written.

MAP reports (``method="map"``, a point estimate of the parameters): the sd and
credible-interval columns of expectations are empty, and the data dictionary and
``model_summary`` say why; ``model_summary`` shows the Laplace sd of each parameter but
no interval.  Predictive intervals remain (the customers' own randomness only).

One schema definition (:data:`SCHEMA`) generates the data dictionary and is what
:func:`validate_report` checks the files against.  Tables round-trip exactly through
:func:`read_report_table` (CSV floats are written in their shortest exact form; Parquet
keeps types) and through SQL with :func:`export_sql` / :func:`read_sql_table`.

CSV conventions: comma separated, UTF-8, header row, ``.`` as decimal point, dates as
ISO ``YYYY-MM-DD[ HH:MM:SS]``, booleans ``True``/``False``, missing values as empty
fields (so an empty text value reads back as missing).  Text cells (ids, segment and
group values, input column names) that a spreadsheet would run as a formula -- starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return -- are written with a leading
``'`` (and text already starting with ``'`` gets one more); plain numbers such as ``-5``
and numeric columns are left alone.  :func:`read_report_table` removes the ``'``, so values
round-trip exactly; Parquet and SQL hold the values unchanged.  When some text holds a
carriage return, every field of that file is quoted.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes import segments as seg
from clvbayes.segments import LABEL_COLUMNS, OTHERS, SEGMENT_RULES, label_customers

__all__ = [
    "MANIFEST",
    "REPORT_VERSION",
    "SCHEMA",
    "Column",
    "OutputFolderRefused",
    "ReportBusy",
    "ReportError",
    "ReportWarning",
    "ReportWriteError",
    "check_output_folder",
    "check_sql_table_name",
    "customer_table",
    "data_dictionary",
    "export_sql",
    "file_provenance",
    "output_lock",
    "read_report_table",
    "read_sql_table",
    "replace_refusal",
    "segment_table",
    "validate_report",
    "write_report",
]

#: Version of the report layout; bumped when a column or file changes incompatibly.
REPORT_VERSION = 1

TABLES = ("customers", "segments")
FORMATS = ("csv", "parquet")
#: Plots every report has; ``segment_totals.png`` (CLV by named segment) comes in addition.
PLOTS = ("p_alive_distribution.png", "clv_distribution.png", "clv_by_recency_frequency.png")


_PANDAS_MAJOR = int(pd.__version__.split(".")[0])


class ReportError(ValueError):
    """A report folder that does not match its documented schema."""


# ---------------------------------------------------------------------------------------
# the schema: one definition for the data dictionary, the writers, readers and validation

#: Logical column types and their pandas dtypes (``str``: pandas' text dtype).
PANDAS_DTYPES = {
    "string": "str",
    "int64": "int64",
    "float64": "float64",
    "bool": "bool",
    "datetime": "datetime64[us]",
}


@dataclass(frozen=True)
class Column:
    """One column of a report table.

    ``unit`` and ``meaning`` may hold ``{time_unit}``, ``{horizon}`` and ``{prob}``,
    filled in from the run's settings in the data dictionary.  ``required=False``
    columns appear only in some runs (holdout, CAC).
    """

    name: str
    dtype: str
    unit: str
    meaning: str
    required: bool = True


_STATS = {
    "mean": ("posterior mean of {what}", "ci"),
    "sd": ("posterior standard deviation of {what}", "ci"),
    "ci_lower": (
        "lower end of the {prob} credible interval of {what} (parameter uncertainty)",
        "ci",
    ),
    "ci_upper": (
        "upper end of the {prob} credible interval of {what} (parameter uncertainty)",
        "ci",
    ),
    "pi_lower": (
        "lower end of the {prob} predictive interval of {outcome} (parameter uncertainty "
        "plus the customer's own randomness)",
        "pi",
    ),
    "pi_upper": (
        "upper end of the {prob} predictive interval of {outcome} (parameter uncertainty "
        "plus the customer's own randomness)",
        "pi",
    ),
}

# quantity -> (unit, expectation described, outcome described or None)
_QUANTITIES = {
    "p_alive": ("probability", "P(the customer is still active at the end of calibration)", None),
    "purchases": (
        "transactions",
        "the expected number of purchases in the next {horizon} {time_unit}",
        "the number of purchases in the next {horizon} {time_unit}",
    ),
    "spend": (
        "currency",
        "the expected value of one future transaction",
        "the value of one future transaction",
    ),
    "revenue": (
        "currency",
        "the expected revenue (undiscounted) in the next {horizon} {time_unit}",
        "the revenue (undiscounted) in the next {horizon} {time_unit}",
    ),
    "clv": (
        "currency",
        "the expected CLV: margin x discounted revenue in the next {horizon} {time_unit}",
        "the realised CLV: margin x discounted revenue in the next {horizon} {time_unit}",
    ),
}


def _prediction_columns() -> list[Column]:
    cols = []
    for q, (unit, what, outcome) in _QUANTITIES.items():
        for stat, (text, kind) in _STATS.items():
            if kind == "pi" and outcome is None:
                continue
            cols.append(
                Column(f"{q}_{stat}", "float64", unit, text.format(what=what, outcome=outcome,
                                                                   prob="{prob}"))
            )  # fmt: skip
    return cols


_SEGMENT_QUANTITIES = {
    "alive": ("customers", "customers still active", "customers still active"),
    "purchases": (
        "transactions",
        "expected purchases in the next {horizon} {time_unit}",
        "purchases made in the next {horizon} {time_unit}",
    ),
    "revenue": (
        "currency",
        "expected revenue (undiscounted) in the next {horizon} {time_unit}",
        "revenue (undiscounted) in the next {horizon} {time_unit}",
    ),
    "clv": (
        "currency",
        "expected CLV (margin x discounted revenue, next {horizon} {time_unit})",
        "realised CLV (margin x discounted revenue, next {horizon} {time_unit})",
    ),
}


def _segment_quantity_columns() -> list[Column]:
    cols = []
    for q, (unit, expected, outcome) in _SEGMENT_QUANTITIES.items():
        cols += [
            Column(f"{q}_total_mean", "float64", unit,
                   f"posterior mean of the segment total of {expected}"),
            Column(f"{q}_total_ci_lower", "float64", unit,
                   f"lower end of the {{prob}} credible interval of the total of {expected}, "
                   "from per-draw sums"),
            Column(f"{q}_total_ci_upper", "float64", unit,
                   f"upper end of the {{prob}} credible interval of the total of {expected}, "
                   "from per-draw sums"),
            Column(f"{q}_total_pi_lower", "float64", unit,
                   f"lower end of the {{prob}} predictive interval of the total of {outcome} "
                   "(simulated outcomes summed per draw)"),
            Column(f"{q}_total_pi_upper", "float64", unit,
                   f"upper end of the {{prob}} predictive interval of the total of {outcome} "
                   "(simulated outcomes summed per draw)"),
            Column(f"{q}_per_customer_mean", "float64", unit,
                   f"{q}_total_mean / n_customers"),
            Column(f"{q}_per_customer_ci_lower", "float64", unit,
                   f"{q}_total_ci_lower / n_customers"),
            Column(f"{q}_per_customer_ci_upper", "float64", unit,
                   f"{q}_total_ci_upper / n_customers"),
        ]  # fmt: skip
    return cols


_SCORE_UNIT = f"score 1-{seg.RFM_QUANTILES}"
_RULES_TEXT = "; ".join(f"{k}: {r.description}" for k, r in SEGMENT_RULES.items())

#: Every column of every report table, in file order.  Columns from the input
#: (``--group-by``) come right after ``segment`` in ``customers`` and are described in the
#: data dictionary with source ``input``.
SCHEMA: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("customer_id", "string", "", "customer id, as text (leading zeros kept)"),
        Column("first_purchase", "datetime", "date", "date of the first purchase"),
        Column("frequency", "int64", "transactions",
               "repeat purchases in the calibration period (purchase days after the first)"),
        Column("recency", "float64", "{time_unit}", "time from the first to the last purchase"),
        Column("T", "float64", "{time_unit}",
               "time from the first purchase to the end of the calibration period"),
        Column("monetary_value", "float64", "currency",
               "mean value of the repeat purchases (0 when frequency is 0)"),
        Column("time_since_last_purchase", "float64", "{time_unit}", "T - recency"),
        Column("r_score", "int64", _SCORE_UNIT,
               f"recency score, {seg.RFM_QUANTILES} = most recent last purchase (quantile groups; "
               "ties share a score)"),
        Column("f_score", "int64", _SCORE_UNIT,
               f"frequency score, {seg.RFM_QUANTILES} = most repeat purchases; frequency 0 scores 1"),
        Column("m_score", "int64", _SCORE_UNIT,
               f"monetary score among repeat customers, {seg.RFM_QUANTILES} = highest mean "
               "repeat spend; frequency 0 scores 1"),
        Column("rfm_code", "string", "", "R, F and M scores written together, e.g. '545'"),
        Column("clv_decile", "int64", f"group 1-{seg.CLV_QUANTILES}",
               f"CLV group by clv_mean (1 = top {100 / seg.CLV_QUANTILES:g} %)"),
        Column("churn_risk", "bool", "",
               f"high past value (repeat spend frequency x monetary_value above its "
               f"{seg.CHURN_VALUE_QUANTILE:g} quantile) and P(alive) < "
               f"{seg.CHURN_P_ALIVE_THRESHOLD:g}"),
        Column("segment", "string", "", f"named segment, first matching rule: {_RULES_TEXT}; "
               f"else {OTHERS}"),
        *_prediction_columns(),
        Column("clv_to_cac", "float64", "ratio", "clv_mean / customer acquisition cost (--cac)",
               required=False),
        Column("frequency_holdout", "int64", "transactions",
               "actual purchases in the holdout period (calibration end, observation end]",
               required=False),
        Column("monetary_value_holdout", "float64", "currency",
               "actual mean transaction value in the holdout period (0 if none)", required=False),
        Column("total_value_holdout", "float64", "currency",
               "actual total transaction value in the holdout period", required=False),
    ),
    "segments": (
        Column("grouping", "string", "",
               "what the rows group by: all, segment, clv_decile or an input column"),
        Column("group", "string", "", "the group's value (as text)"),
        Column("n_customers", "int64", "customers", "customers in the group"),
        *_segment_quantity_columns(),
        Column("clv_to_cac", "float64", "ratio", "clv_per_customer_mean / CAC", required=False),
        Column("clv_to_cac_ci_lower", "float64", "ratio", "clv_per_customer_ci_lower / CAC",
               required=False),
        Column("clv_to_cac_ci_upper", "float64", "ratio", "clv_per_customer_ci_upper / CAC",
               required=False),
    ),
}  # fmt: skip

_BY_NAME = {t: {c.name: c for c in cols} for t, cols in SCHEMA.items()}
#: Names an input grouping column may not take (they are report columns already).
RESERVED_NAMES = frozenset(
    {"all", "grouping", "group"} | {c.name for cols in SCHEMA.values() for c in cols}
)


def _logical_dtype(s: pd.Series) -> str:
    """Logical type of an input (grouping) column after :func:`_canonical_input`."""
    kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else "O"
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int64"
    if kind == "f":
        return "float64"
    if kind == "M":
        return "datetime"
    return "string"


def _as_string(s: pd.Series) -> pd.Series:
    """Text values with missing values kept missing (NaN), in pandas' text dtype."""
    obj = s.astype(object)
    obj = obj.where(s.notna(), np.nan)
    obj = obj.map(lambda v: v if isinstance(v, str) else (np.nan if pd.isna(v) else str(v)))
    return obj.astype(PANDAS_DTYPES["string"]) if _PANDAS_MAJOR >= 3 else obj


def _canonical_input(s: pd.Series) -> pd.Series:
    """An input column in one of the report's types (ints, floats, bools or text)."""
    kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else "O"
    if kind in "biuf":
        return s.astype({"b": "bool", "i": "int64", "u": "int64", "f": "float64"}[kind])
    if kind == "M":
        return s.astype(PANDAS_DTYPES["datetime"])
    return _as_string(s)


_BOOL_TEXT = {1: True, 0: False, "1": True, "0": False, "True": True, "False": False,
              "true": True, "false": False}  # fmt: skip


def _cast(s: pd.Series, logical: str) -> pd.Series:
    if logical == "string":
        return _as_string(s)
    if logical == "datetime":
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_localize(None)
        if s.dtype.kind != "M":
            s = pd.to_datetime(s, format="ISO8601")  # text from CSV or SQL
        return s.astype(PANDAS_DTYPES["datetime"])
    if logical == "bool" and s.dtype.kind != "b":
        mapped = s.map(_BOOL_TEXT)
        if mapped.isna().any():
            bad = pd.unique(s[mapped.isna()])[:3].tolist()
            raise ValueError(f"column {s.name!r}: values {bad} are not booleans.")
        return mapped.astype(bool)
    return s.astype(PANDAS_DTYPES[logical])


# ---------------------------------------------------------------------------------------
# building the tables


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
        when present, and so are the ``group_cols``.
    predictions : CustomerScores or DataFrame
        :func:`clvbayes.predict.score_customers` output (or its ``customers`` table), in
        the same customer order.
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
    if labels is None:
        labels = label_customers(rfm.join(pred[["p_alive_mean", "clv_mean"]]))
    labels = labels.reindex(rfm.index)
    bad = [c for c in group_cols if c in RESERVED_NAMES]
    if bad:
        raise ValueError(f"group column(s) {bad} clash with report column names; rename them.")
    source = {**{c: rfm[c] for c in rfm.columns}, **{c: labels[c] for c in LABEL_COLUMNS},
              **{c: pred[c] for c in pred.columns}}  # fmt: skip
    if cac is not None:
        if not (np.isfinite(cac) and cac > 0):
            raise ValueError(f"cac must be a positive amount, got {cac!r}.")
        source["clv_to_cac"] = pred["clv_mean"] / float(cac)
    out: dict[str, pd.Series] = {}
    for col in SCHEMA["customers"]:
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
        rank = {name: i for i, name in enumerate([*SEGMENT_RULES, OTHERS])}
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
    if cac is not None:
        if not (np.isfinite(cac) and cac > 0):
            raise ValueError(f"cac must be a positive amount, got {cac!r}.")
        long["clv_to_cac"] = long["clv_per_customer_mean"] / cac
        long["clv_to_cac_ci_lower"] = long["clv_per_customer_ci_lower"] / cac
        long["clv_to_cac_ci_upper"] = long["clv_per_customer_ci_upper"] / cac
    out = {}
    for col in SCHEMA["segments"]:
        if col.name in long.columns:
            out[col.name] = _cast(long[col.name], col.dtype)
        elif col.required:
            raise ValueError(f"segment_table: no data for required column {col.name!r}.")
    table = pd.DataFrame(out)
    return table


def data_dictionary(
    tables: Mapping[str, pd.DataFrame], context: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Describe every column of the given report tables, from :data:`SCHEMA`.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        Report tables by name (``customers``, ``segments``).
    context : mapping, optional
        ``time_unit``, ``horizon`` and ``prob`` of the run, filled into units and meanings.

    Returns
    -------
    DataFrame
        Columns ``table``, ``column``, ``dtype`` (logical: string, int64, float64, bool,
        datetime), ``unit``, ``meaning`` and ``source`` (``clvbayes`` or ``input``), one row
        per column in file order.
    """
    ctx = {"time_unit": "time units", "horizon": "?", "prob": "90 %"}
    point = _is_point_fit((context or {}).get("method"))
    for k, v in (context or {}).items():
        if v is None:
            continue
        if k == "prob":
            v = f"{100 * float(v):g} %"
        elif k == "horizon":
            v = f"{float(v):g}"
        ctx[k] = v
    rows = []
    for name, df in tables.items():
        for c in df.columns:
            spec = _BY_NAME[name].get(c)
            if spec is None:
                rows.append((name, c, _logical_dtype(df[c]), "", "input column (--group-by), "
                             "one value per customer: its value on the first transaction", "input"))  # fmt: skip
            else:
                meaning = spec.meaning.format(**ctx)
                if point and _is_uncertainty_column(c):
                    meaning += _POINT_EMPTY if df[c].isna().all() else _POINT_FILLED
                rows.append((name, c, spec.dtype, spec.unit.format(**ctx), meaning,
                             "clvbayes"))  # fmt: skip
    return pd.DataFrame(rows, columns=["table", "column", "dtype", "unit", "meaning", "source"])


#: Fit methods that give a point estimate of the parameters (no parameter uncertainty).
POINT_METHODS = ("map", "mle")

_POINT_EMPTY = (
    ". EMPTY in this report: the models were fitted by MAP, a point estimate of the "
    "parameters, which carries no parameter uncertainty, so there is no credible interval "
    "or posterior sd to show (refit with --method laplace or nuts for them)"
)
_POINT_FILLED = (
    ". CAUTION: the models were fitted by MAP (a point estimate), so this is computed from "
    "one parameter value and does not show parameter uncertainty"
)
_POINT_FIT_NOTE = (
    "**This report comes from a MAP fit** (a point estimate of the parameters). A single "
    "parameter value carries no parameter uncertainty, so the sd and credible-interval "
    "(`*_sd`, `*_ci_lower`, `*_ci_upper`) columns of expectations are empty. The "
    "predictive-interval (`*_pi_*`) columns still show each customer's own randomness, "
    "without parameter uncertainty. Refit with `--method laplace` (fast) or `--method nuts` "
    "for credible intervals."
)


def _is_point_fit(method: Any) -> bool:
    return isinstance(method, str) and method.lower() in POINT_METHODS


def _is_uncertainty_column(name: str) -> bool:
    """sd and credible-interval columns: what a point fit cannot give."""
    return name.endswith(("_sd", "_ci_lower", "_ci_upper"))


# ---------------------------------------------------------------------------------------
# reading tables back


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


def _schema_dtypes(table: str | None) -> dict[str, str]:
    if table in SCHEMA:
        return {c.name: c.dtype for c in SCHEMA[table]}
    out: dict[str, str] = {}
    for cols in SCHEMA.values():
        for c in cols:
            out.setdefault(c.name, c.dtype)
    return out


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


# ---------------------------------------------------------------------------------------
# provenance and model summaries


def file_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size (bytes) and SHA-256 of an input file (read in 1 MiB blocks)."""
    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": str(p.resolve()), "size_bytes": p.stat().st_size, "sha256": h.hexdigest()}


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN/inf become null, numpy scalars Python numbers, dates ISO text."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


_INTERVAL_KIND = {
    "nuts": "posterior credible interval (NUTS draws)",
    "laplace": "approximate credible interval (draws from the Laplace approximation at the mode)",
}


def _model_summary(name: str, model: Any, prob: float) -> dict[str, Any]:
    table = model.summary(prob)
    table = table.rename(
        columns={f"lower_{prob:g}": "lower", f"upper_{prob:g}": "upper"}
    ).reset_index(names="parameter")
    info = dict(getattr(model, "fit_info_", {}))
    method = info.get("method")
    n_draws = getattr(model, "n_draws_", None)
    point = _is_point_fit(method) or n_draws == 1
    if point:
        # one parameter value: its "interval" would have zero width; show none
        table = table.drop(columns=[c for c in ("lower", "upper") if c in table.columns])
        interval = None
        sd_kind = (
            "Laplace approximation at the mode (from the curvature of the log posterior), "
            "not from posterior draws"
            if "laplace_sd" in info
            else None
        )
    else:
        interval = _INTERVAL_KIND.get(method, "credible interval from the posterior draws")
        sd_kind = "posterior standard deviation of the draws"
    return {
        "class": type(model).__name__,
        "file": f"{name}.nc",
        "time_unit": getattr(model, "time_unit_", None),
        "method": method,
        "interval_prob": None if point else prob,
        "interval": interval,
        "sd": sd_kind,
        "note": (
            f"{method or 'point'} fit: a point estimate of the parameters, so no credible "
            "interval is shown"
            if point
            else None
        ),
        "parameters": table.to_dict(orient="records"),
        "divergences": info.get("divergences"),
        "fit": info,
        "priors": {k: p.to_dict() for k, p in model.priors.items()},
    }


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else floatfmt.format(v)
        return "" if v is None else str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def _md_items(mapping: Mapping[str, Any], indent: int = 0) -> list[str]:
    """Nested bullet list of a mapping (empty values skipped)."""
    lines = []
    pad = "  " * indent
    for k, v in mapping.items():
        if v is None or (isinstance(v, Mapping | list) and not v):
            continue
        if isinstance(v, Mapping):
            lines.append(f"{pad}- **{k}**:")
            lines += _md_items(v, indent + 1)
        else:
            if isinstance(v, float):
                v = f"{v:.6g}"
            elif isinstance(v, list):
                v = ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
            lines.append(f"{pad}- **{k}**: {v}")
    return lines


def _summary_markdown(summary: Mapping[str, Any], segments: pd.DataFrame) -> str:
    lines = ["# clvbayes report: model summary", ""]
    if summary.get("command"):
        lines += [f"Command: `{summary['command']}`", ""]
    lines += ["## Data", "", *_md_items(summary.get("data", {}))]
    lines += ["", "## Prediction settings", "", *_md_items(summary.get("settings", {}))]
    for name, m in summary.get("models", {}).items():
        lines += ["", f"## Model `{name}` ({m['class']}, file `{m['file']}`)", ""]
        lines.append(_md_table(pd.DataFrame(m["parameters"]).astype(object)))
        if m.get("note"):
            lines += ["", f"- {m['note']}; sd: {m.get('sd') or 'not available'}"]
        elif m.get("interval"):
            lines += ["", f"- lower/upper: {100 * m['interval_prob']:g} % {m['interval']}"]
        fit = m.get("fit", {})
        lines += ["", f"- method: {fit.get('method')}, seed: {fit.get('seed')}, "
                  f"divergences: {m.get('divergences')}, customers fitted: "
                  f"{fit.get('n_customers_fitted')} of {fit.get('n_customers')}"]  # fmt: skip
        lines.append(
            "- priors: " + ", ".join(f"{k} ~ {v['dist']}" for k, v in m.get("priors", {}).items())
        )
    holdout = summary.get("holdout")
    if holdout:
        lines += ["", "## Holdout check (predicted vs actual, holdout period)", ""]
        lines += _md_items(holdout)
    if summary.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in summary["warnings"]]
    all_row = segments[segments["grouping"] == "all"]
    if len(all_row):
        lines += ["", "## Whole customer base", ""]
        cols = ["n_customers"] + [c for c in segments.columns if c.startswith("clv_total")
                                  or c.startswith("purchases_total")]  # fmt: skip
        cols = [c for c in cols if not all_row[c].isna().all()]  # no empty interval columns
        if _is_point_fit((summary.get("settings") or {}).get("method")):
            lines += ["MAP fit: totals without parameter uncertainty; the predictive interval "
                      "(pi) shows the customers' own randomness only.", ""]  # fmt: skip
        lines.append(_md_table(all_row[cols].astype(object)))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# plots


def _new_axes(size: tuple[float, float] = (7.0, 4.5)):
    """A figure outside pyplot's global state (nothing to close, safe in threads)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    return fig, fig.subplots()


def _simple_hist(ax, values: np.ndarray, title: str, xlabel: str, log: bool = False) -> None:
    v = values[np.isfinite(values)]
    bins: Any = 40
    if log and (v > 0).any():
        v = v[v > 0]
        if v.min() < v.max():
            bins = np.geomspace(v.min(), v.max(), 40)
        ax.set_xscale("log")
    ax.hist(v, bins=bins, color="C0", alpha=0.7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("customers")


def _plot_rf(ax, customers: pd.DataFrame) -> None:
    from clvbayes.segments import rf_table

    grid = rf_table(customers.set_index("customer_id"), values="clv_mean")
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel("F score (5 = most repeat purchases)")
    ax.set_ylabel("R score (5 = most recent)")
    ax.set_title("Mean CLV by recency x frequency score (blank: no customers)")
    ax.figure.colorbar(im, ax=ax, label="mean CLV")


def _write_plots(
    folder: Path, customers: pd.DataFrame, segments: pd.DataFrame, settings: Mapping[str, Any]
) -> list[str]:
    """Write the PNG plots; returns their file names.

    Uses :mod:`clvbayes.plotting` where it has the plot, else a plain histogram.
    """
    from types import SimpleNamespace

    try:
        from clvbayes import plotting
    except ImportError:  # pragma: no cover - plotting is part of the package
        plotting = None
    named = segments[segments["grouping"] == "segment"].set_index("group")
    scores = SimpleNamespace(
        customers=customers, segments={"segment": named}, settings=dict(settings)
    )
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name)
        written.append(name)

    simple = {
        "p_alive": ("P(alive) at the end of calibration", "posterior mean P(alive)", False),
        "clv": ("CLV across customers", "posterior mean CLV (currency, log scale)", True),
    }
    for (quantity, (title, xlabel, log)), name in zip(simple.items(), PLOTS[:2], strict=True):
        fig, ax = _new_axes()
        try:
            plotting.plot_clv_distribution(scores, quantity, ax=ax)
        except (AttributeError, TypeError, ValueError, KeyError):  # no or other plot: plain one
            fig, ax = _new_axes()
            _simple_hist(ax, customers[f"{quantity}_mean"].to_numpy(float), title, xlabel, log)
        save(fig, name)
    fig, ax = _new_axes((6.5, 5.0))
    _plot_rf(ax, customers)
    save(fig, PLOTS[2])
    if plotting is not None and hasattr(plotting, "plot_segment_totals") and len(named):
        fig, ax = _new_axes((7.5, 4.5))
        try:
            plotting.plot_segment_totals(scores, by="segment", quantity="clv", ax=ax)
            save(fig, "segment_totals.png")
        except (TypeError, ValueError, KeyError):
            pass
    return written


# ---------------------------------------------------------------------------------------
# writing


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


# ---------------------------------------------------------------------------------------
# the output folder: what may be replaced, the manifest, the lock, staging and publishing
#
# The contract: clvbayes never deletes or modifies a file it did not write.  Every report
# folder carries a manifest (name, size and SHA-256 of each file in it); a folder is
# replaced only if every entry in it is a file the manifest lists, unchanged.  Sibling
# folders clvbayes leaves behind after a kill (``.<name>.<hash>.partial-*`` while writing,
# ``.<name>.<hash>.old-*`` while swapping) are removed by the next run only as far as their
# content is provably clvbayes' own (the manifest, or the staging journal that lists every
# file before it is written).

#: Name of the manifest file in every report folder.
MANIFEST = ".clvbayes-manifest.json"
#: Name of the journal in a folder being written (absent from a published report).
STAGING_JOURNAL = ".clvbayes-staging.json"
_MANIFEST_VERSION = 1
_SHOW = 5  # unexpected entries named in a refusal


class ReportWriteError(OSError):
    """A report folder that could not be written; the message says why and what to do.

    Raised for a full disk, a folder clvbayes will not replace, another run writing the
    same folder, an unwritable location.  The previous report, if any, is unchanged.
    An ``OSError``, so ``clvbayes run`` reports it without a traceback (exit status 2).
    """


class OutputFolderRefused(ReportWriteError, FileExistsError):
    """The output path exists and is not a folder clvbayes may replace."""


class ReportBusy(ReportWriteError):
    """Another clvbayes process is writing the same report folder."""


class ReportWarning(UserWarning):
    """Something about the report folder the user should know (e.g. leftovers kept)."""


def _output_path(out_dir: str | os.PathLike[str]) -> Path:
    """Absolute output path (symlinks not resolved), refusing paths that name no folder."""
    raw = os.fspath(out_dir)
    if not str(raw).strip():
        raise OutputFolderRefused(
            "the output folder name is empty; give a folder name, e.g. --output clvbayes-report."
        )
    out = Path(os.path.abspath(raw))
    if out.name in ("", ".", "..") or out == out.parent:
        raise OutputFolderRefused(
            f"{raw!r} names the file-system root, not a folder clvbayes can replace; give a "
            "new folder name, e.g. --output clvbayes-report."
        )
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise OutputFolderRefused(
            f"{raw!r} is the current folder (or holds it); a report replaces its output folder, "
            "so give a new folder name, e.g. --output clvbayes-report."
        )
    return out


def _sibling_prefix(out: Path) -> str:
    """Prefix of the sibling lock/staging names: readable, bounded in length, unique per name."""
    digest = hashlib.sha256(out.name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f".{out.name[:40]}.{digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _manifest_files(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's ``{name: {"size", "sha256"}}``, or None without a readable manifest."""
    m = _read_json(folder / MANIFEST)
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        return None
    files = m["files"]
    ok = all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    )
    return files if ok else None


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _unexpected(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Entries of ``folder`` that are not unchanged manifest files, described."""
    found = []
    for e in _entries(folder):
        if e.name == MANIFEST:
            continue
        spec = files.get(e.name)
        if e.is_symlink():
            found.append(f"{e.name} (a link)")
        elif e.is_dir():
            found.append(f"{e.name}/ (a folder)")
        elif not e.is_file():
            found.append(f"{e.name} (not a regular file)")
        elif spec is None:
            found.append(f"{e.name} (not written by clvbayes)")
        elif e.stat().st_size != spec["size"] or _sha256(Path(e.path)) != spec["sha256"]:
            found.append(f"{e.name} (changed since clvbayes wrote it)")
    return found


def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def replace_refusal(
    out_dir: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str]] = ()
) -> str | None:
    """Why ``out_dir`` may not be (re)placed by a report, or None when it may.

    A path may be written when it does not exist, is an empty folder, or is a report
    folder whose every entry is listed, unchanged, in its manifest (:data:`MANIFEST`).
    Anything else is refused: a file, a link, a folder with other content (the reason
    names the first entries), a report from a clvbayes that wrote no manifest.

    Parameters
    ----------
    out_dir : path
        The report folder.
    protect : paths
        Files the run reads (its inputs): refused when one of them is ``out_dir`` or lies
        inside it.

    Returns
    -------
    str or None
        A one-paragraph message (what, where, the fix), or None.
    """
    out = _output_path(out_dir)
    fix = "choose another --output (a new folder name), or move away what you want to keep"
    for p in protect:
        p = Path(os.path.abspath(os.fspath(p)))
        if p == out or out in p.parents:
            return (
                f"output folder {out} holds the input file {p}; a report replaces its folder, so "
                "write it elsewhere: choose another --output outside the input's folder."
            )
    if not os.path.lexists(out):
        return None
    if out.is_symlink():
        return (
            f"output {out} is a symbolic link (to {os.readlink(out)}); clvbayes replaces "
            "report folders, not links: give the link's target folder as --output, or a new "
            "folder name."
        )
    if not out.is_dir():
        return (
            f"output {out} is a file, not a folder; clvbayes writes a report folder and does "
            "not overwrite files: give a new folder name as --output."
        )
    try:
        entries = _entries(out)
    except OSError as err:
        return f"output folder {out} cannot be listed ({_os_text(err)}); {fix}."
    if not entries:
        return None
    files = _manifest_files(out)
    if files is None:
        names = [e.name + ("/" if e.is_dir() else "") for e in entries]
        summary = _read_json(out / "model_summary.json")
        if isinstance(summary, dict) and "clvbayes_report" in summary:
            return (
                f"output folder {out} holds a report written by an older clvbayes, without the "
                f"manifest ({MANIFEST}) that proves which files clvbayes wrote, so it is not "
                f"replaced (it holds {_listing(names)}); remove the folder yourself once "
                f"nothing in it is yours to keep, or {fix}."
            )
        return (
            f"output folder {out} exists and is not a clvbayes report folder (it holds "
            f"{_listing(names)}); clvbayes replaces only folders it wrote: {fix}."
        )
    try:
        extra = _unexpected(out, files)
    except OSError as err:
        return f"output folder {out} cannot be checked ({_os_text(err)}); {fix}."
    if extra:
        return (
            f"output folder {out} is a clvbayes report but also holds {len(extra)} entr"
            f"{'y' if len(extra) == 1 else 'ies'} clvbayes did not write or that changed: "
            f"{_listing(extra)}; replacing the folder would delete "
            f"{'it' if len(extra) == 1 else 'them'}: {fix}."
        )
    return None


def check_output_folder(
    out_dir: str | os.PathLike[str], protect: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Raise :class:`OutputFolderRefused` when :func:`replace_refusal` gives a reason."""
    reason = replace_refusal(out_dir, protect)
    if reason is not None:
        raise OutputFolderRefused(reason)


def _is_replaceable(out: Path) -> bool:
    """True when a report may be written to ``out`` (see :func:`replace_refusal`)."""
    try:
        return replace_refusal(out) is None
    except OutputFolderRefused:
        return False


def _os_text(err: OSError) -> str:
    text = err.strerror or str(err)
    return f"{text}: {err.filename}" if err.filename else text


# --- the lock: one writer per report folder ---------------------------------------------

_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth), this process's locks
try:
    import fcntl as _fcntl  # noqa: F401

    _HAVE_FLOCK = True
except ImportError:  # pragma: no cover - Windows
    _HAVE_FLOCK = False


def _lock_path(out: Path) -> Path:
    return out.parent / f"{_sibling_prefix(out)}.lock"


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike[str]):
    """Hold the report folder's lock: a second writer of the same folder is refused.

    The lock is an exclusive ``flock`` on a sibling file (``.<name>.<hash>.lock``), taken
    without waiting; it is released by the kernel when the process dies (also by kill -9),
    and the file is removed on release.  Re-entrant within one process, so ``clvbayes run``
    can hold it from its first check to the end of :func:`write_report`.

    Raises
    ------
    ReportBusy
        Another process holds the lock (the message names its pid and start time).
    ReportWriteError
        The lock file cannot be created (e.g. a read-only parent folder).
    """
    out = _output_path(out_dir)
    path = _lock_path(out)
    key = str(path)
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield out
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = _acquire(path, out)
    _HELD[key] = (fd, 1)
    try:
        yield out
    finally:
        del _HELD[key]
        if _HAVE_FLOCK:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still holding it: no one else can hold this inode
            os.close(fd)
        else:  # the file is the lock: close, then remove (Windows cannot remove open files)
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)


def _acquire(path: Path, out: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportWriteError(
            f"cannot write the report to {out}: cannot create its parent folder "
            f"({_os_text(err)}); choose another --output."
        ) from err
    if _HAVE_FLOCK:
        import fcntl
    else:  # not POSIX (Windows): an exclusively created file is the lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ReportBusy(
                f"another clvbayes run is writing the report {out} (lock file {path}); wait for "
                "it to finish or choose another --output.  If no clvbayes run is active, the "
                "lock was left by a crash: delete the lock file."
            ) from None
        except OSError as err:
            raise ReportWriteError(
                f"cannot write the report to {out}: cannot create a file in {out.parent} "
                f"({_os_text(err)}); choose an --output in a folder you can write to."
            ) from err
        return fd
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise ReportWriteError(
                f"cannot write the report to {out}: cannot create a file in {out.parent} "
                f"({_os_text(err)}); choose an --output in a folder you can write to."
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_json(path) or {}
            os.close(fd)
            raise ReportBusy(
                f"another clvbayes run (pid {holder.get('pid', '?')}, started "
                f"{holder.get('started_utc', '?')}) is writing the report {out}; wait for it to "
                "finish, or choose another --output.  (Lock file: "
                f"{path}.)"
            ) from None
        # the file we locked may have been unlinked by its previous holder: retry then
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            info = {"pid": os.getpid(), "started_utc": datetime.now(UTC).isoformat("T", "seconds"),
                    "output": str(out)}  # fmt: skip
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            return fd
        os.close(fd)
    raise ReportBusy(f"cannot take the lock {path} for {out}; retry.")


# --- staging, leftovers and publishing ---------------------------------------------------


class _Stage:
    """The folder a report is written into before it is published.

    Every file name is recorded in the journal (:data:`STAGING_JOURNAL`) before the file
    is written, so a later run can prove that everything in a leftover staging folder is
    clvbayes' own.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = Path(
            tempfile.mkdtemp(prefix=f"{_sibling_prefix(out)}.partial-", dir=out.parent)
        )
        umask = os.umask(0)
        os.umask(umask)
        self.path.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report folder is not
        self.names: list[str] = []
        try:
            self._journal()
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)  # created a moment ago, empty
            raise

    def _journal(self) -> None:
        data = {"clvbayes_staging": 1, "pid": os.getpid(), "output": str(self.out),
                "files": self.names}  # fmt: skip
        (self.path / STAGING_JOURNAL).write_text(json.dumps(data), encoding="utf-8")

    def expect(self, *names: str) -> None:
        new = [n for n in names if n not in self.names]
        if new:
            self.names += new
            self._journal()

    def seal(self) -> dict[str, dict[str, Any]]:
        """Write the manifest of every file and drop the journal; returns the manifest files."""
        from clvbayes import __version__

        files = {}
        for e in _entries(self.path):
            if e.name in (STAGING_JOURNAL, MANIFEST):
                continue
            p = Path(e.path)
            files[e.name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
            _fsync_file(p)
        manifest = {
            "clvbayes_manifest": _MANIFEST_VERSION,
            "clvbayes_version": __version__,
            "note": "Every file clvbayes wrote in this folder.  clvbayes replaces this folder "
            "only while it holds nothing else and nothing here has changed.",
            "files": files,
        }
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        _fsync_file(self.path / MANIFEST)
        (self.path / STAGING_JOURNAL).unlink()
        _fsync_dir(self.path)
        return files

    def discard(self) -> None:
        _remove_proven(self.path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/file system syncs folders
        _fsync_file(path)


def _remove_proven(folder: Path) -> list[str]:
    """Delete what provably clvbayes wrote in ``folder`` (then the folder if empty).

    Proof is the manifest (file listed, same size and SHA-256) or the staging journal (file
    listed before it was written).  Returns the entries left in place.
    """
    if not folder.is_dir() or folder.is_symlink():
        return [folder.name]
    files = _manifest_files(folder) or {}
    journal = _read_json(folder / STAGING_JOURNAL)
    journaled = set()
    if isinstance(journal, dict) and isinstance(journal.get("files"), list):
        journaled = {n for n in journal["files"] if isinstance(n, str)}
    kept = []
    for e in _entries(folder):
        if e.name in (MANIFEST, STAGING_JOURNAL) or e.is_symlink() or not e.is_file():
            if not (e.name in (MANIFEST, STAGING_JOURNAL) and e.is_file()):
                kept.append(e.name)
            continue
        p = Path(e.path)
        spec = files.get(e.name)
        ours = e.name in journaled or (
            spec is not None and p.stat().st_size == spec["size"] and _sha256(p) == spec["sha256"]
        )
        if ours:
            p.unlink()
        else:
            kept.append(e.name)
    if kept:
        return kept
    for name in (MANIFEST, STAGING_JOURNAL):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    try:
        folder.rmdir()
    except OSError:
        return [e.name for e in _entries(folder)]
    return []


def _leftovers(out: Path) -> list[Path]:
    prefix = _sibling_prefix(out)
    try:
        entries = _entries(out.parent)
    except OSError:
        return []
    return [
        Path(e.path)
        for e in entries
        if e.name.startswith((f"{prefix}.partial-", f"{prefix}.old-"))
        and e.is_dir(follow_symlinks=False)
    ]


def _recover(out: Path) -> None:
    """Tidy what an interrupted earlier run left next to ``out`` (hold the lock first).

    A previous report moved aside and not put back (a crash between the two renames of the
    fallback publish) is restored when ``out`` is missing; staging folders and old reports
    are then removed as far as their content is provably clvbayes' own; anything else is
    kept and named in a :class:`ReportWarning`.
    """
    found = _leftovers(out)
    if not os.path.lexists(out):
        old = [p for p in found if ".old-" in p.name and _manifest_files(p) is not None
               and not _unexpected(p, _manifest_files(p) or {})]  # fmt: skip
        if old:
            newest = max(old, key=lambda p: p.stat().st_mtime)
            os.rename(newest, out)
            found.remove(newest)
            warnings.warn(
                f"restored the previous report {out} from {newest.name}, left by an interrupted "
                "clvbayes run.",
                ReportWarning,
                stacklevel=3,
            )
    for p in found:
        try:
            kept = _remove_proven(p)
        except OSError:
            kept = ["?"]
        if kept:
            warnings.warn(
                f"{p} was left by an interrupted clvbayes run but holds entries clvbayes cannot "
                f"prove it wrote ({_listing(kept)}); it was kept: delete it yourself when "
                "nothing in it is yours.",
                ReportWarning,
                stacklevel=3,
            )


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place, replacing an old report (hold the lock).

    With ``renameat2(RENAME_EXCHANGE)`` the swap is one atomic step: at every moment
    ``out`` is either the old report or the new one.  Elsewhere the old report is first
    renamed aside (``.<name>.<hash>.old-*``); a crash before the second rename leaves it
    there, and the next run puts it back (:func:`_recover`).  The old report's files are
    then removed as far as the manifest proves them clvbayes' own.
    """
    if not os.path.lexists(out):
        os.rename(tmp, out)
        _fsync_dir(out.parent)
        return
    if _exchange(tmp, out):
        _fsync_dir(out.parent)
        old = tmp
    else:
        old = Path(tempfile.mkdtemp(prefix=f"{_sibling_prefix(out)}.old-", dir=out.parent))
        old.rmdir()
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        _fsync_dir(out.parent)
    try:  # the new report is in place: a failure from here on is only a leftover
        kept = _remove_proven(old)
    except OSError as err:
        kept = [f"? ({_os_text(err)})"]
    if kept:
        warnings.warn(
            f"the previous report, moved to {old}, gained entries while this report was written "
            f"({_listing(kept)}); they were kept there.",
            ReportWarning,
            stacklevel=3,
        )


# --- disk space ---------------------------------------------------------------------------

_CSV_BYTES = {"f": 23, "i": 21, "u": 21, "b": 6, "M": 27}  # widest text of one value, bytes


def _table_bytes(df: pd.DataFrame, formats: Sequence[str]) -> int:
    n = 0
    for c in df.columns:
        s = df[c]
        kind = s.dtype.kind if isinstance(s.dtype, np.dtype) else "O"
        if kind in _CSV_BYTES:
            n += _CSV_BYTES[kind] * len(s)
        else:
            n += int(s.astype(object).map(lambda v: len(str(v)) + 3).sum())
    return int(n * len(formats))


def _model_bytes(model: Any) -> int:
    """Generous estimate of a saved model's size: posterior, data and ids, twice over."""
    draws = getattr(model, "draws", None)
    n = sum(int(np.asarray(v).nbytes) for v in draws().values()) if callable(draws) else 0
    stats = getattr(model, "sample_stats_", None)
    if stats is not None:
        n += int(stats.nbytes)
    data = getattr(model, "data_", None)
    if data is not None:
        for attr in ("counts", "inverse"):
            n += int(np.asarray(getattr(data, attr, [])).nbytes)
        with contextlib.suppress(Exception):
            n += sum(int(np.asarray(data[c]).nbytes) for c in data.columns)
        ids = getattr(data, "customer_ids", None)
        if ids is not None:
            n += int(pd.Series(ids).astype(str).str.len().sum()) + 24 * len(ids)
    return 2 * n + (1 << 20)


def _check_space(out: Path, need: int) -> None:
    """Refuse before writing anything when the file system has clearly too little room."""
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return
    if free < need:
        err = ReportWriteError(
            f"not enough free space to write the report to {out}: it needs about "
            f"{need / 1e6:,.1f} MB and the file system holding {out.parent} has "
            f"{free / 1e6:,.1f} MB free.  Free some space or choose an --output on another disk; "
            "nothing was written and any previous report there is unchanged."
        )
        err.errno = errno.ENOSPC
        raise err


def _write_failed(out: Path, what: str, err: BaseException) -> ReportWriteError:
    text = _os_text(err) if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
    code = getattr(err, "errno", None)
    if code is None and ("errno = 28" in str(err) or "No space left" in str(err)):
        code = errno.ENOSPC
    hint = (
        "the disk is full: free some space or choose an --output on another disk"
        if code in (errno.ENOSPC, errno.EDQUOT)
        else "check the disk and permissions, or choose another --output"
    )
    new = ReportWriteError(
        f"cannot write the report to {out}: writing {what} failed ({text.splitlines()[0]}); "
        f"{hint}.  Nothing was published; any previous report there is unchanged."
    )
    new.errno = code
    return new


def write_report(
    out_dir: str | os.PathLike[str],
    customers_table: pd.DataFrame,
    segments_tables: pd.DataFrame | Mapping[str, pd.DataFrame],
    models: Mapping[str, Any],
    provenance: Mapping[str, Any],
    fmt: str | Iterable[str] = FORMATS,
    *,
    settings: Mapping[str, Any] | None = None,
    holdout: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write a complete report folder, atomically, never deleting a file clvbayes did not write.

    Everything is written to a staging folder next to ``out_dir``, listed in a manifest
    (:data:`MANIFEST`: name, size, SHA-256 of every file), checked with
    :func:`validate_report` and then swapped into place, so a failure never leaves a
    partial report and never loses the previous one.  An existing ``out_dir`` is replaced
    only if it is empty or holds nothing but the unchanged files of its manifest; anything
    else is refused (:class:`OutputFolderRefused`, a ``FileExistsError``) with the first
    unexpected entries named.  One writer per folder: a second concurrent run is refused
    (:class:`ReportBusy`).  Leftovers of an interrupted earlier run are tidied first (see
    :func:`output_lock` and the module notes).

    Parameters
    ----------
    out_dir : path
        The report folder (its parent is created when missing).
    customers_table : DataFrame
        From :func:`customer_table`.
    segments_tables : DataFrame or mapping
        From :func:`segment_table`, or ``CustomerScores.segments`` (stacked here).
    models : mapping of str to fitted model
        Saved as ``{name}.nc`` with their data (e.g. ``{"bgnbd": bg, "gamma_gamma": gg}``).
    provenance : mapping
        Data provenance for ``model_summary`` (input file, sha256, row counts, exclusions).
    fmt : "csv", "parquet", "both" or a sequence of them
        Table formats (default both).
    settings : mapping, optional
        Prediction settings (``CustomerScores.settings``): horizon, time unit, discount,
        margin, interval probability, seed, and ``method`` (``nuts``, ``laplace``, ``map``).
    holdout : mapping, optional
        Holdout check figures for ``model_summary``.
    extra : mapping, optional
        More entries for ``model_summary.json`` (command line, timings, warnings).
    protect : paths, optional
        The run's input files: refused as (or inside) the output folder.

    Returns
    -------
    Path
        The report folder (absolute).

    Raises
    ------
    ReportWriteError
        (an ``OSError``) the folder cannot be written: refused folder, another writer, too
        little free space (checked before writing: about the tables' text size plus twice
        the models' arrays), a failed write.  The previous report is unchanged.
    """
    formats = _normalise_formats(fmt)
    out = _output_path(out_dir)
    segments = (
        segments_tables
        if isinstance(segments_tables, pd.DataFrame)
        else segment_table(segments_tables)
    )
    settings = dict(settings or {})
    if not settings.get("method"):
        methods = {getattr(m, "fit_info_", {}).get("method") for m in models.values()} - {None}
        if len(methods) == 1:
            settings["method"] = methods.pop()
    with output_lock(out):
        _recover(out)
        check_output_folder(out, protect)
        need = (
            _table_bytes(customers_table, formats)
            + _table_bytes(segments, formats)
            + sum(_model_bytes(m) for m in models.values())
            + (4 << 20)  # plots, dictionary, summaries
        )
        _check_space(out, need)
        try:
            stage = _Stage(out)
        except OSError as err:
            raise _write_failed(out, f"a staging folder in {out.parent}", err) from err
        try:
            _fill(stage, customers_table, segments, models, provenance, formats, settings,
                  holdout, extra)  # fmt: skip
            stage.seal()
            validate_report(stage.path)
            check_output_folder(out, protect)  # again: nothing may have appeared meanwhile
            try:
                _publish(stage.path, out)
            except OSError as err:
                raise _write_failed(out, "the finished report into place", err) from err
        except BaseException:
            with contextlib.suppress(OSError):
                stage.discard()
            raise
    return out


def _fill(
    stage: _Stage,
    customers_table: pd.DataFrame,
    segments: pd.DataFrame,
    models: Mapping[str, Any],
    provenance: Mapping[str, Any],
    formats: Sequence[str],
    settings: dict[str, Any],
    holdout: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
) -> None:
    """Write every report file into the staging folder (each named in the journal first)."""
    tmp, out = stage.path, stage.out

    @contextlib.contextmanager
    def writing(*names: str):
        stage.expect(*names)
        try:
            yield
        except ReportWriteError:
            raise
        except OSError as err:
            raise _write_failed(out, ", ".join(names), err) from err

    with writing(*[f"{t}.{f}" for t in TABLES for f in formats]):
        _write_table(customers_table, tmp, "customers", formats)
        _write_table(segments, tmp, "segments", formats)
    dictionary = data_dictionary(
        {"customers": customers_table, "segments": segments}, context=settings
    )
    with writing("data_dictionary.csv", "data_dictionary.md"):
        _to_csv(_csv_safe(dictionary), tmp / "data_dictionary.csv")
        md = ["# clvbayes report: data dictionary", ""]
        if _is_point_fit(settings.get("method")):
            md += [_POINT_FIT_NOTE, ""]
        for name in TABLES:
            md += [f"## {name}", "", _md_table(dictionary[dictionary["table"] == name]
                                               .drop(columns="table")), ""]  # fmt: skip
        (tmp / "data_dictionary.md").write_text("\n".join(md), encoding="utf-8")
    prob = float(settings.get("prob", 0.9))
    model_files = {}
    model_summaries = {}
    for name, model in models.items():
        file = f"{name}.nc"
        stage.expect(file)
        try:
            _save_model(model, tmp / file)
        except ReportWriteError:
            raise
        except Exception as err:  # h5py raises RuntimeError as well as OSError on write errors
            raise _write_failed(out, f"the model file {file}", err) from err
        model_files[name] = file
        model_summaries[name] = _model_summary(name, model, prob)
    with writing(*PLOTS, "segment_totals.png"):
        plots = _write_plots(tmp, customers_table, segments, settings)
    from clvbayes import __version__

    summary = {
        "clvbayes_report": REPORT_VERSION,
        "clvbayes_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "formats": list(formats),
        "files": {
            "tables": [f"{t}.{f}" for t in TABLES for f in formats],
            "models": model_files,
            "plots": plots,
            "manifest": MANIFEST,
        },
        "n_customers": len(customers_table),
        "data": dict(provenance),
        "settings": settings,
        "models": model_summaries,
        "holdout": dict(holdout) if holdout else None,
        **dict(extra or {}),
    }
    summary = _jsonable(summary)
    with writing("model_summary.json", "model_summary.md"):
        (tmp / "model_summary.json").write_text(
            json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (tmp / "model_summary.md").write_text(_summary_markdown(summary, segments), "utf-8")


def _save_model(model: Any, path: Path) -> None:
    """Save one model file.

    A model that can serialise itself to bytes (``to_bytes()``) is written with plain
    Python I/O, so a full disk is an ordinary ``OSError``.  Otherwise ``model.save(path)``
    (netCDF through h5netcdf); HDF5 can crash the process after a failed write, which is
    why :func:`write_report` checks the free space first.
    """
    to_bytes = getattr(model, "to_bytes", None)
    if callable(to_bytes):
        data = to_bytes(include_data=True)
        with path.open("wb") as fh:
            fh.write(data)
        return
    model.save(path, include_data=True)


# ---------------------------------------------------------------------------------------
# validation


def validate_report(out_dir: str | os.PathLike[str]) -> None:
    """Check a report folder against :data:`SCHEMA`; raise :class:`ReportError` if it differs.

    Checks that every file is there; that each table has every required column, no
    column that is neither in the schema nor described as an input column, the schema's
    dtype for every column (read with :func:`read_report_table`), one row per unique
    customer id, probabilities in [0, 1], scores in range; that CSV and Parquet copies are
    equal; and that the data dictionary describes exactly the columns of each table.
    """
    folder = Path(out_dir)
    problems: list[str] = []
    try:
        summary = json.loads((folder / "model_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{folder}: cannot read model_summary.json ({err}).") from err
    if summary.get("clvbayes_report") != REPORT_VERSION:
        problems.append(
            f"report version {summary.get('clvbayes_report')!r}, expected {REPORT_VERSION}"
        )
    formats = summary.get("formats") or []
    methods = {
        (m or {}).get("fit", {}).get("method") for m in (summary.get("models") or {}).values()
    }
    point = _is_point_fit((summary.get("settings") or {}).get("method")) or any(
        _is_point_fit(m) for m in methods
    )
    plots = (summary.get("files") or {}).get("plots") or []
    files = ["model_summary.md", "data_dictionary.csv", "data_dictionary.md"]
    files += list(dict.fromkeys([*PLOTS, *plots]))
    files += [f"{t}.{f}" for t in TABLES for f in formats]
    files += list((summary.get("files") or {}).get("models", {}).values())
    problems += [f"missing file {f}" for f in files if not (folder / f).is_file()]
    if problems:
        raise ReportError(f"{folder}: " + "; ".join(problems))
    manifest = _manifest_files(folder)
    if manifest is not None:  # reports from clvbayes versions without a manifest have none
        problems += [f"{f} is not in the manifest" for f in files if f not in manifest]
        for name, spec in manifest.items():
            p = folder / name
            if p.is_file() and (p.stat().st_size != spec["size"] or _sha256(p) != spec["sha256"]):
                problems.append(f"{name} changed since clvbayes wrote it (manifest: {MANIFEST})")
    dictionary = _read_dictionary(folder / "data_dictionary.csv")
    for table in TABLES:
        frames = {}
        for f in formats:
            try:
                frames[f] = read_report_table(folder / f"{table}.{f}")
            except Exception as err:  # any read failure is a report problem
                problems.append(f"{table}.{f} cannot be read: {err}")
        described = dictionary[dictionary["table"] == table]
        described_dtype = dict(zip(described["column"], described["dtype"], strict=True))
        for f, df in frames.items():
            problems += [f"{table}.{f}: {p}"
                         for p in _check_table(table, df, described_dtype, point)]  # fmt: skip
        if len(frames) == 2:
            try:
                pd.testing.assert_frame_equal(frames["csv"], frames["parquet"])
            except AssertionError as err:
                problems.append(f"{table}: CSV and Parquet differ: {str(err).splitlines()[0]}")
        if frames and table == "customers":
            n = len(next(iter(frames.values())))
            if summary.get("n_customers") != n:
                problems.append(f"customers: {n} rows but n_customers={summary.get('n_customers')}")
    if problems:
        raise ReportError(f"{folder} does not match the report schema: " + "; ".join(problems))


def _check_table(
    table: str, df: pd.DataFrame, described: Mapping[str, str], point: bool = False
) -> list[str]:
    """Schema problems of one table; ``point``: a MAP fit, whose sd/ci columns may be empty."""
    problems = []
    schema = _BY_NAME[table]
    missing = [c.name for c in SCHEMA[table] if c.required and c.name not in df.columns]
    if missing:
        problems.append(f"missing column(s) {missing}")
    for c in df.columns:
        if c not in schema and described.get(c) is None:
            problems.append(f"column {c!r} is neither in the schema nor in the data dictionary")
        if c not in described:
            problems.append(f"column {c!r} is not in the data dictionary")
        logical = schema[c].dtype if c in schema else described.get(c)
        if c in schema and described.get(c) not in (None, logical):
            problems.append(f"column {c!r}: dictionary says {described.get(c)}, schema {logical}")
        if logical in PANDAS_DTYPES:
            expected = pd.Series([], dtype=PANDAS_DTYPES[logical]).dtype
            if df[c].dtype != expected:
                problems.append(f"column {c!r} has dtype {df[c].dtype}, expected {expected}")
    problems += [f"column {c!r} described but absent" for c in described if c not in df.columns]
    order = [c.name for c in SCHEMA[table] if c.name in df.columns]
    if [c for c in df.columns if c in schema] != order:
        problems.append("columns are not in schema order")
    if table == "customers" and "customer_id" in df.columns:
        ids = df["customer_id"]
        if ids.isna().any() or ids.duplicated().any():
            problems.append("customer_id has missing or duplicated values")
        for c in ("p_alive_mean", "p_alive_ci_lower", "p_alive_ci_upper"):
            if c not in df.columns:
                continue
            values = df[c].dropna() if point and _is_uncertainty_column(c) else df[c]
            if values.isna().any():
                problems.append(f"{c} has missing values")
            elif not values.between(0, 1).all():
                problems.append(f"{c} outside [0, 1]")
        for c in ("r_score", "f_score", "m_score"):
            if c in df.columns and not df[c].between(1, seg.RFM_QUANTILES).all():
                problems.append(f"{c} outside 1..{seg.RFM_QUANTILES}")
        if "clv_decile" in df.columns and not df["clv_decile"].between(1, seg.CLV_QUANTILES).all():
            problems.append(f"clv_decile outside 1..{seg.CLV_QUANTILES}")
    if table == "segments" and "grouping" in df.columns:
        if (df["grouping"] == "all").sum() != 1:
            problems.append("segments needs exactly one 'all' row")
    return problems


# ---------------------------------------------------------------------------------------
# SQL


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
