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
bgnbd.nc, gamma_gamma.nc    the fitted models (``CLVModel.load(path)``)
==========================  ===========================================================

One schema definition (:data:`SCHEMA`) generates the data dictionary and is what
:func:`validate_report` checks the files against.  Tables round-trip exactly through
:func:`read_report_table` (CSV floats are written in their shortest exact form; Parquet
keeps types) and through SQL with :func:`export_sql` / :func:`read_sql_table`.

CSV conventions: comma separated, UTF-8, header row, ``.`` as decimal point, dates as
ISO ``YYYY-MM-DD[ HH:MM:SS]``, booleans ``True``/``False``, missing values as empty
fields (so an empty text value reads back as missing).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
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
    "REPORT_VERSION",
    "SCHEMA",
    "Column",
    "ReportError",
    "customer_table",
    "data_dictionary",
    "export_sql",
    "file_provenance",
    "read_report_table",
    "read_sql_table",
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
                rows.append((name, c, spec.dtype, spec.unit.format(**ctx),
                             spec.meaning.format(**ctx), "clvbayes"))  # fmt: skip
    return pd.DataFrame(rows, columns=["table", "column", "dtype", "unit", "meaning", "source"])


# ---------------------------------------------------------------------------------------
# reading tables back


def _dictionary_dtypes(folder: Path, table: str) -> dict[str, str]:
    path = folder / "data_dictionary.csv"
    if not path.exists():
        return {}
    d = pd.read_csv(path, dtype=str, keep_default_na=False)
    d = d[d["table"] == table]
    return dict(zip(d["column"], d["dtype"], strict=True))


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
    header = pd.read_csv(p, nrows=0).columns
    known = {c: dtypes[c] for c in header if c in dtypes}
    read_as = {c: ("str" if t in ("string", "datetime") else PANDAS_DTYPES[t])
               for c, t in known.items() if t != "bool"}  # fmt: skip
    df = pd.read_csv(p, dtype=read_as, keep_default_na=False, na_values=[""], encoding="utf-8")
    for c, t in known.items():
        if t in ("datetime", "bool", "string"):
            df[c] = _cast(df[c], t)
    return df


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


def _model_summary(name: str, model: Any, prob: float) -> dict[str, Any]:
    table = model.summary(prob)
    table = table.rename(
        columns={f"lower_{prob:g}": "lower", f"upper_{prob:g}": "upper"}
    ).reset_index(names="parameter")
    info = dict(getattr(model, "fit_info_", {}))
    return {
        "class": type(model).__name__,
        "file": f"{name}.nc",
        "time_unit": getattr(model, "time_unit_", None),
        "interval_prob": prob,
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


def _write_table(df: pd.DataFrame, folder: Path, name: str, formats: Sequence[str]) -> None:
    df = df.copy()
    df.attrs = {}
    if "csv" in formats:
        # pandas writes floats in their shortest exact decimal form (round-trip safe)
        df.to_csv(folder / f"{name}.csv", index=False, encoding="utf-8", lineterminator="\n")
    if "parquet" in formats:
        df.to_parquet(folder / f"{name}.parquet", index=False)


def _is_replaceable(out: Path) -> bool:
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        summary = json.loads((out / "model_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "clvbayes_report" in summary


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
) -> Path:
    """Write a complete report folder, atomically.

    Everything is written to a temporary folder next to ``out_dir``, checked with
    :func:`validate_report` and then renamed into place, so a failure never leaves a
    partial report.  An existing ``out_dir`` is replaced only if it is empty or a
    clvbayes report; anything else is refused (``FileExistsError``).

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
        margin, interval probability, seed.
    holdout : mapping, optional
        Holdout check figures for ``model_summary``.
    extra : mapping, optional
        More entries for ``model_summary.json`` (command line, timings, warnings).

    Returns
    -------
    Path
        The report folder.
    """
    formats = _normalise_formats(fmt)
    out = Path(out_dir)
    segments = (
        segments_tables
        if isinstance(segments_tables, pd.DataFrame)
        else segment_table(segments_tables)
    )
    settings = dict(settings or {})
    if not _is_replaceable(out):
        raise FileExistsError(
            f"{out} exists and is not a clvbayes report folder; choose another output folder "
            "or remove it first."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report folder is not
        _write_table(customers_table, tmp, "customers", formats)
        _write_table(segments, tmp, "segments", formats)
        dictionary = data_dictionary(
            {"customers": customers_table, "segments": segments}, context=settings
        )
        dictionary.to_csv(tmp / "data_dictionary.csv", index=False, lineterminator="\n")
        md = ["# clvbayes report: data dictionary", ""]
        for name in TABLES:
            md += [f"## {name}", "", _md_table(dictionary[dictionary["table"] == name]
                                               .drop(columns="table")), ""]  # fmt: skip
        (tmp / "data_dictionary.md").write_text("\n".join(md), encoding="utf-8")
        prob = float(settings.get("prob", 0.9))
        model_files = {}
        model_summaries = {}
        for name, model in models.items():
            model.save(tmp / f"{name}.nc", include_data=True)
            model_files[name] = f"{name}.nc"
            model_summaries[name] = _model_summary(name, model, prob)
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
            },
            "n_customers": len(customers_table),
            "data": dict(provenance),
            "settings": settings,
            "models": model_summaries,
            "holdout": dict(holdout) if holdout else None,
            **dict(extra or {}),
        }
        summary = _jsonable(summary)
        (tmp / "model_summary.json").write_text(
            json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (tmp / "model_summary.md").write_text(_summary_markdown(summary, segments), "utf-8")
        validate_report(tmp)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place, replacing an old report."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    plots = (summary.get("files") or {}).get("plots") or []
    files = ["model_summary.md", "data_dictionary.csv", "data_dictionary.md"]
    files += list(dict.fromkeys([*PLOTS, *plots]))
    files += [f"{t}.{f}" for t in TABLES for f in formats]
    files += list((summary.get("files") or {}).get("models", {}).values())
    problems += [f"missing file {f}" for f in files if not (folder / f).is_file()]
    if problems:
        raise ReportError(f"{folder}: " + "; ".join(problems))
    dictionary = pd.read_csv(folder / "data_dictionary.csv", dtype=str, keep_default_na=False)
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
            problems += [f"{table}.{f}: {p}" for p in _check_table(table, df, described_dtype)]
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


def _check_table(table: str, df: pd.DataFrame, described: Mapping[str, str]) -> list[str]:
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
            if c in df.columns and not df[c].between(0, 1).all():
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
    df = customers_table.copy()
    df.attrs = {}
    if isinstance(con_or_url, str | os.PathLike):
        import sqlalchemy as sa

        engine = sa.create_engine(str(con_or_url))
        try:
            with engine.begin() as con:
                df.to_sql(table_name, con, if_exists=if_exists, index=False,
                          dtype=_sqlalchemy_types(df), chunksize=chunksize)  # fmt: skip
        finally:
            engine.dispose()
    elif _is_sqlalchemy(con_or_url):
        df.to_sql(table_name, con_or_url, if_exists=if_exists, index=False,
                  dtype=_sqlalchemy_types(df), chunksize=chunksize)  # fmt: skip
        commit = getattr(con_or_url, "commit", None)
        if callable(commit) and getattr(con_or_url, "in_transaction", lambda: False)():
            commit()
    else:
        df.to_sql(table_name, con_or_url, if_exists=if_exists, index=False, chunksize=chunksize)
        con_or_url.commit()
    return len(df)


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
    if '"' in table_name:
        raise ValueError(f"table name {table_name!r} may not contain double quotes.")
    query = f'SELECT * FROM "{table_name}"'
    if isinstance(con_or_url, str | os.PathLike):
        import sqlalchemy as sa

        engine = sa.create_engine(str(con_or_url))
        try:
            with engine.connect() as con:
                df = pd.read_sql_query(sa.text(query), con)
        finally:
            engine.dispose()
    elif _is_sqlalchemy(con_or_url):
        import sqlalchemy as sa

        df = pd.read_sql_query(sa.text(query), con_or_url)
    else:
        df = pd.read_sql_query(query, con_or_url)
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
