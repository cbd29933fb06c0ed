"""Checking a report folder against its schema: :func:`validate_report`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from clvbayes import segments as seg
from clvbayes.report.folder import manifest_problems
from clvbayes.report.schema import (
    _BY_NAME,
    OPTIONAL_TABLES,
    PANDAS_DTYPES,
    REPORT_VERSION,
    SCHEMA,
    TABLES,
    ReportError,
    _is_point_fit,
    _is_uncertainty_column,
    column_applies,
    report_kind,
    required_plots,
)
from clvbayes.report.tablefiles import _read_dictionary, read_report_table


def validate_report(out_dir: str | os.PathLike[str]) -> None:
    """Check a report folder against :data:`SCHEMA`; raise :class:`ReportError` if it differs.

    Checks that every file is there; that each table has every required column, no
    column that is neither in the schema nor described as an input column, the schema's
    dtype for every column (read with :func:`read_report_table`), one row per unique
    customer id, probabilities in [0, 1], scores in range; that CSV and Parquet copies are
    equal; and that the data dictionary describes exactly the columns of each table.  The
    columns and plots required follow the report's kind (:func:`~clvbayes.report.schema.
    report_kind`: time grid, spend model or not), and a column of another kind (e.g. ``T``
    in a discrete-time report, CLV without a spend model) is a problem.  A
    ``model_comparison`` table (``--purchase-model compare``) is checked in the same way,
    and its one ``chosen`` row must name the purchase model of the settings.
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
    settings = summary.get("settings") or {}
    grid, spend = report_kind(settings)
    files = ["model_summary.md", "data_dictionary.csv", "data_dictionary.md"]
    files += list(dict.fromkeys([*required_plots(settings), *plots]))
    listed = (summary.get("files") or {}).get("tables") or []
    tables = [*TABLES] + [
        t for t in OPTIONAL_TABLES
        if summary.get(t) is not None or any(n.startswith(f"{t}.") for n in listed)
    ]  # fmt: skip
    files += [f"{t}.{f}" for t in tables for f in formats]
    files += list((summary.get("files") or {}).get("models", {}).values())
    problems += [f"missing file {f}" for f in files if not (folder / f).is_file()]
    if problems:
        raise ReportError(f"{folder}: " + "; ".join(problems))
    problems += manifest_problems(folder, files)
    dictionary = _read_dictionary(folder / "data_dictionary.csv")
    for table in tables:
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
                         for p in _check_table(table, df, described_dtype, point, grid,
                                               spend)]  # fmt: skip
        if len(frames) == 2:
            try:
                pd.testing.assert_frame_equal(frames["csv"], frames["parquet"])
            except AssertionError as err:
                problems.append(f"{table}: CSV and Parquet differ: {str(err).splitlines()[0]}")
        if frames and table == "customers":
            n = len(next(iter(frames.values())))
            if summary.get("n_customers") != n:
                problems.append(f"customers: {n} rows but n_customers={summary.get('n_customers')}")
        if frames and table == "model_comparison":
            problems += _check_choice(next(iter(frames.values())), summary)
    if problems:
        raise ReportError(f"{folder} does not match the report schema: " + "; ".join(problems))


def _check_table(
    table: str,
    df: pd.DataFrame,
    described: Mapping[str, str],
    point: bool = False,
    grid: str = "continuous",
    spend: bool = True,
) -> list[str]:
    """Schema problems of one table; ``point``: a MAP fit, whose sd/ci columns may be empty;
    ``grid`` and ``spend``: the report's kind (which columns it has)."""
    problems = []
    schema = _BY_NAME[table]
    missing = [c.name for c in SCHEMA[table]
               if c.required and column_applies(c, grid, spend) and c.name not in df.columns]  # fmt: skip
    if missing:
        problems.append(f"missing column(s) {missing}")
    kind = f"{grid}-time report {'with' if spend else 'without'} a spend model"
    alien = [c for c in df.columns if c in schema and not column_applies(schema[c], grid, spend)]
    if alien:
        problems.append(f"column(s) {alien} do not belong in a {kind}")
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
    if table == "model_comparison" and "chosen" in df.columns:
        if df["chosen"].sum() != 1:
            problems.append(
                f"model_comparison needs exactly one chosen row, has {df['chosen'].sum()}"
            )
        if "model" in df.columns and df["model"].duplicated().any():
            problems.append("model_comparison has a model twice")
    if table == "segments" and "grouping" in df.columns:
        if (df["grouping"] == "all").sum() != 1:
            problems.append("segments needs exactly one 'all' row")
    return problems


def _check_choice(df: pd.DataFrame, summary: Mapping[str, Any]) -> list[str]:
    """The chosen row of ``model_comparison`` names the model of the settings and summary."""
    if "chosen" not in df.columns or "model" not in df.columns or df["chosen"].sum() != 1:
        return []  # reported by _check_table
    chosen = str(df.loc[df["chosen"], "model"].iloc[0])
    problems = []
    used = (summary.get("settings") or {}).get("purchase_model")
    if used != chosen:
        problems.append(f"model_comparison chooses {chosen!r}, settings use {used!r}")
    stated = (summary.get("model_comparison") or {}).get("chosen")
    if stated != chosen:
        problems.append(f"model_comparison chooses {chosen!r}, model_summary says {stated!r}")
    missing = [m for m in df["model"] if m not in (summary.get("models") or {})]
    if missing:
        problems.append(f"model_comparison rows {missing} have no model in model_summary")
    return problems
