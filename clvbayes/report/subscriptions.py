"""The subscriptions report folder (``clvbayes subscriptions``): schema, writer, validation.

A subscriptions report folder holds (every column in :data:`SUBSCRIPTION_SCHEMA`):

==========================  ===========================================================
file                        content
==========================  ===========================================================
subscribers.csv / .parquet  one row per *active* subscriber: history (tenure, plan,
                            cohort, price) and forecasts (P(renew), churn risk, renewals
                            and value over the horizon, DERL, residual value), mean, sd,
                            credible and predictive intervals
at_risk.csv / .parquet      the active subscribers ranked by churn risk at the next due
                            date (rank 1 = most likely to cancel), with intervals
cohorts.csv / .parquet      per segment (``all``, each fit group, cohort and plan) and
                            future period k: subscribers still active and renewal revenue,
                            credible and predictive intervals from per-draw sums
totals.csv / .parquet       the same segments over the whole horizon: renewals, revenue,
                            discounted value
model_comparison.csv /      sBG vs BdW per fit group (and overall): PSIS-LOO, log-
.parquet                    likelihood, parameters, holdout error; ``chosen`` marks the
                            model the forecasts use
holdout.csv / .parquet      with a holdout: each model refitted on the data up to the
                            holdout start, its projected survivors against the actual ones
pooling.csv / .parquet      with --pool-by: each group's parameters fitted alone (raw) and
                            in the partially pooled fit (alpha, beta, c, mean churn, with
                            credible intervals)
model_summary.json / .md    data provenance, settings, the comparison and the rule behind
                            the choice, parameter tables, holdout check, warnings
data_dictionary.csv / .md   every column: type, unit (periods of the grid, currency), meaning
*.png                       survival curves with bands and the actuals, retention rate by
                            tenure, renewal forecast with bands, holdout survivors
sbg*.nc, bdw*.nc            the fitted models (``CLVModel.load``; with --pool-by the pooled
                            models, and gamma_gamma.nc with a spend model)
.clvbayes-manifest.json     name, size and SHA-256 of every file above
==========================  ===========================================================

The folder follows the rules of every clvbayes report (:mod:`clvbayes.report`): written in a
staging folder and swapped into place atomically, never replacing a folder clvbayes did not
write (the manifest proves what it wrote), one writer at a time, free space checked first,
CSV text cells that a spreadsheet would run as a formula escaped with a leading ``'``.
Tables read back with their exact types through :func:`clvbayes.report.read_report_table`
(its dtypes come from this folder's ``data_dictionary.csv``).

Units: ``periods`` is the renewal period of the grid (``settings["period"]``, e.g. ``1
month``: calendar months); money is in the currency of the price column (price per period);
discount rates are per period.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.folder import (
    MANIFEST,
    ReportWriteError,
    _model_bytes,
    _output_path,
    _table_bytes,
    _write_failed,
    manifest_problems,
    staged_writing,
)
from clvbayes.report.lock import publish_staged
from clvbayes.report.schema import (
    PANDAS_DTYPES,
    REPORT_VERSION,
    Column,
    ReportError,
    _cast,
    _is_point_fit,
    _is_uncertainty_column,
)
from clvbayes.report.summary import _jsonable, _md_items, _md_table
from clvbayes.report.tablefiles import (
    _csv_safe,
    _normalise_formats,
    _read_dictionary,
    _to_csv,
    _write_table,
    read_report_table,
)

__all__ = [
    "REPORT_KIND",
    "SUBSCRIPTION_SCHEMA",
    "SUBSCRIPTION_TABLES",
    "subscription_data_dictionary",
    "subscription_table",
    "validate_subscriptions_report",
    "write_subscriptions_report",
]

#: ``model_summary.json["report_kind"]`` of a subscriptions report.
REPORT_KIND = "subscriptions"
#: Tables every subscriptions report has; ``holdout`` comes with a holdout check.
SUBSCRIPTION_TABLES = ("subscribers", "at_risk", "cohorts", "totals", "model_comparison")
OPTIONAL_TABLES = ("holdout", "pooling")

_STATS = {
    "mean": "posterior mean of {what}",
    "sd": "posterior standard deviation of {what}",
    "ci_lower": "lower end of the {prob} credible interval of {what} (parameter uncertainty)",
    "ci_upper": "upper end of the {prob} credible interval of {what} (parameter uncertainty)",
    "pi_lower": "lower end of the {prob} predictive interval of {outcome} (parameter "
    "uncertainty plus the subscriber's own randomness)",
    "pi_upper": "upper end of the {prob} predictive interval of {outcome} (parameter "
    "uncertainty plus the subscriber's own randomness)",
}
_DUE = "the next {horizon} due dates"
# quantity -> (unit, expectation, outcome or None, required)
_SUBSCRIBER_QUANTITIES = {
    "p_renew": ("probability", "P(renews at the next due date)", None, True),
    "churn_risk": ("probability",
                   "P(cancels at the next due date) = 1 - p_renew, the churn-risk score", None,
                   True),
    "renewals": ("renewals", f"the expected renewals among {_DUE}",
                 f"the renewals among {_DUE}", True),
    "disc_renewals": ("renewals (discounted)",
                      f"the expected discounted renewals among {_DUE} (the j-th weighted by "
                      "(1 + {discount})^-(j-1))",
                      f"the discounted renewals among {_DUE}", True),
    "derl": ("renewals (discounted)",
             "the discounted expected residual lifetime (DERL, Fader & Hardie 2010): expected "
             "future renewal payments, no horizon, discounted at {discount} per period", None,
             False),
    "value": ("currency", f"the expected value of {_DUE}: {{amount}} x margin x disc_renewals",
              f"the realised value of {_DUE}", False),
    "residual_value": ("currency", "the residual value: {amount} x margin x derl", None, False),
}  # fmt: skip


def _stat_columns(prefix: str, unit: str, what: str, outcome: str | None, required: bool,
                  stats: Sequence[str] = tuple(_STATS)) -> list[Column]:  # fmt: skip
    cols = []
    for stat in stats:
        if stat.startswith("pi") and outcome is None:
            continue
        text = _STATS[stat].format(what=what, outcome=outcome, prob="{prob}")
        cols.append(Column(f"{prefix}_{stat}", "float64", unit, text, required))
    return cols


def _subscriber_predictions() -> list[Column]:
    cols = []
    for q, (unit, what, outcome, required) in _SUBSCRIBER_QUANTITIES.items():
        cols += _stat_columns(q, unit, what, outcome, required)
    return cols


_ID = Column("subscriber_id", "string", "",
             "subscriber (subscription spell) id: the input id; from a charge log "
             "'<customer>#<spell number>', from survival counts '<cohort>:<i>'")  # fmt: skip
_FIT_GROUP = Column("fit_group", "string", "",
                    "the subscribers one pair of models was fitted on (--fit-by; 'all' when "
                    "one model fits every subscriber)")  # fmt: skip
_MODEL = Column(
    "model",
    "string",
    "",
    "retention model of the forecasts: sbg (shifted-beta-"
    "geometric) or bdw (beta-discrete-Weibull); model_comparison says why",
)
_HISTORY = (
    Column("customer_id", "string", "", "customer id (charge log input)", required=False),
    _FIT_GROUP,
    _MODEL,
    Column(
        "cohort",
        "string",
        "",
        "acquisition cohort: the input's cohort column, else the start's calendar month "
        "(year on a yearly grid), or the survival table's cohort",
    ),
    Column("plan", "string", "", "plan (input column)", required=False),
    Column("start", "datetime", "date", "start of the subscription spell", required=False),
    Column(
        "periods",
        "int64",
        "periods ({period})",
        "renewals completed so far (tenure): due dates passed with a payment",
    ),
    Column(
        "price",
        "float64",
        "currency per period ({currency})",
        "price per period; from a charge log the spell's mean charge",
        required=False,
    ),
)
_SEGMENT = (
    Column("grouping", "string", "", "what the rows group by: all, plan or cohort"),
    Column("group", "string", "", "the group's value (as text)"),
)
_K = (
    "the k-th next due date of each subscriber (about k periods of {period} after the "
    "observation date)"
)
_COHORT_QUANTITIES = {
    "active": (
        "subscribers",
        "the expected number of these subscribers still active after k "
        "more renewals (they renew at " + _K + ")",
        "the number still active after k more renewals",
        True,
    ),
    "revenue": (
        "currency ({currency})",
        "the expected renewal revenue x margin of period k: "
        "price x margin of the subscribers who renew at " + _K,
        "the renewal revenue x margin of period k",
        False,
    ),
}
_TOTAL_QUANTITIES = {
    "renewals_total": ("renewals", "the expected renewal payments of the segment over the next "
                       "{horizon} due dates", "the renewal payments over the horizon", True),
    "revenue_total": ("currency ({currency})", "the expected renewal revenue x margin over the "
                      "next {horizon} due dates (undiscounted)",
                      "the renewal revenue x margin over the horizon", False),
    "value_total": ("currency ({currency})", "the expected value: renewal revenue x margin "
                    "over the next {horizon} due dates, the j-th discounted by (1 + "
                    "{discount})^-(j-1)", "the realised discounted value", False),
}  # fmt: skip


def _total_columns(quantities) -> list[Column]:
    cols = []
    for q, (unit, what, outcome, required) in quantities.items():
        cols += _stat_columns(q, unit, what, outcome, required,
                              stats=("mean", "ci_lower", "ci_upper", "pi_lower", "pi_upper"))  # fmt: skip
    return cols


_HOLD = "in the holdout (the refit on the data up to the holdout start)"
#: Every column of every subscriptions-report table, in file order.
SUBSCRIPTION_SCHEMA: dict[str, tuple[Column, ...]] = {
    "subscribers": (_ID, *_HISTORY, *_subscriber_predictions()),
    "at_risk": (
        Column("rank", "int64", "rank",
               "1 = the highest churn risk at the next due date; ties (same tenure and fit "
               "group under the same model) broken by the larger residual value, then the id"),
        _ID, *_HISTORY,
        *_stat_columns("churn_risk", "probability", "P(cancels at the next due date)", None,
                       True, stats=("mean", "ci_lower", "ci_upper")),
        Column("revenue_at_risk_mean", "float64", "currency ({currency})",
               "price x margin x churn_risk_mean: the expected renewal revenue lost at the next "
               "due date", required=False),
        *_stat_columns("residual_value", "currency ({currency})",
                       "the residual value ({amount} x margin x DERL)", None, False,
                       stats=("mean", "ci_lower", "ci_upper")),
    ),
    "cohorts": (
        *_SEGMENT,
        Column("k", "int64", "periods ({period})", "future period: " + _K),
        Column("subscribers", "int64", "subscribers", "active subscribers of the group now"),
        *_total_columns(_COHORT_QUANTITIES),
    ),
    "totals": (
        *_SEGMENT,
        Column("subscribers", "int64", "subscribers", "active subscribers of the group now"),
        *_total_columns(_TOTAL_QUANTITIES),
    ),
    "model_comparison": (
        _FIT_GROUP,
        Column("model", "string", "", "sbg or bdw (file <model>[-<fit group>].nc)"),
        Column("model_name", "string", "", "sBG (Fader & Hardie 2007) or BdW (Fader et al. 2018)"),
        Column("chosen", "bool", "",
               "True for the model the forecasts of this fit group use (for 'all': of every "
               "fit group)"),
        Column("n_subscribers", "int64", "subscribers", "subscribers the model was fitted on"),
        Column("n_histories", "int64", "histories", "distinct (periods, churned) histories"),
        Column("loglik", "float64", "nats",
               "log-likelihood at the posterior mean of the parameters (MAP: at the mode)"),
        Column("elpd_loo", "float64", "nats",
               "PSIS-LOO expected log predictive density (higher is better); empty for MAP"),
        Column("elpd_loo_se", "float64", "nats", "standard error of elpd_loo"),
        Column("p_loo", "float64", "parameters", "effective number of parameters (PSIS-LOO)"),
        Column("max_pareto_k", "float64", "",
               "largest Pareto k over histories whose likelihood varies across draws (above "
               "0.7 the LOO estimate is unreliable)"),
        Column("elpd_diff", "float64", "nats",
               "elpd_loo of this model minus the sBG's, on the same subscribers (0 for the sBG; "
               "positive: BdW predicts better)"),
        Column("elpd_diff_se", "float64", "nats",
               "standard error of elpd_diff from the paired per-history values"),
        Column("alpha_mean", "float64", "", "posterior mean of alpha (churn-propensity Beta)"),
        Column("beta_mean", "float64", "", "posterior mean of beta (churn-propensity Beta)"),
        Column("c_mean", "float64", "",
               "posterior mean of the BdW shape c (1 = the sBG; < 1 hazard falls with "
               "tenure, > 1 rises); empty for the sBG"),
        Column("fit_seconds", "float64", "seconds", "wall time of the fit"),
        Column("holdout_periods", "int64", "periods ({period})",
               f"periods k = 1.. compared {_HOLD} (those whose outcomes are all observed)",
               required=False),
        Column("holdout_mae", "float64", "subscribers",
               f"mean over k of |projected - actual survivors| {_HOLD}", required=False),
        Column("holdout_mape", "float64", "fraction",
               f"mean over k of |projected - actual| / actual survivors {_HOLD}",
               required=False),
        Column("holdout_pi_coverage", "float64", "fraction of periods",
               f"share of the periods k whose actual survivors lie in the {{prob}} predictive "
               f"interval {_HOLD}", required=False),
    ),
    "pooling": (
        Column("fit_group", "string", "", "the group (a value of the --pool-by column)"),
        Column("model", "string", "", "sbg or bdw"),
        Column("estimate", "string", "",
               "raw: the model fitted on this group alone (no pooling); pooled: the group's "
               "parameters in the partially pooled fit across every group (a hierarchical prior "
               "shared by the groups, so small groups borrow strength from the others)"),
        Column("n_subscribers", "int64", "subscribers", "subscribers of the group"),
        *[col for p, what in (("alpha", "alpha (churn-propensity Beta, first shape)"),
                              ("beta", "beta (churn-propensity Beta, second shape)"),
                              ("c", "the BdW shape c (1 = sBG; empty for the sBG)"),
                              ("mean_churn", "the group's mean churn propensity alpha / "
                               "(alpha + beta)"))
          for col in _stat_columns(p, "probability" if p == "mean_churn" else "", what, None,
                                   True, stats=("mean", "ci_lower", "ci_upper"))],
        Column("note", "string", "",
               "why a raw estimate is missing (its fit was refused); empty otherwise"),
    ),
    "holdout": (
        _FIT_GROUP,
        Column("model", "string", "", "sbg or bdw, refitted on the data up to the holdout start"),
        Column("k", "int64", "periods ({period})",
               "renewals after the holdout start: the k-th due date after it"),
        Column("at_risk", "int64", "subscribers", "subscribers active at the holdout start"),
        Column("actual_active", "int64", "subscribers",
               "of them, those who renewed at least k more times (observed)"),
        Column("unknown", "int64", "subscribers",
               "of them, those whose k-th renewal was not yet due or observed at the end of the "
               "data (counted as not renewed in actual_active)"),
        Column("complete", "bool", "", "True when unknown is 0: the period enters the errors"),
        *_stat_columns("active", "subscribers",
                       "the projected survivors after k more renewals",
                       "the survivors after k more renewals", True,
                       stats=("mean", "ci_lower", "ci_upper", "pi_lower", "pi_upper")),
        Column("in_pi", "bool", "", "actual_active lies in the predictive interval"),
    ),
}  # fmt: skip

_BY_NAME = {t: {c.name: c for c in cols} for t, cols in SUBSCRIPTION_SCHEMA.items()}


def subscription_table(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s schema columns of table ``name``, in schema order and schema types.

    Raises ``ValueError`` naming any required column that is missing.
    """
    spec = SUBSCRIPTION_SCHEMA[name]
    missing = [c.name for c in spec if c.required and c.name not in frame.columns]
    if missing:
        raise ValueError(f"table {name!r} misses required column(s) {missing}.")
    cols = [c for c in spec if c.name in frame.columns]
    out = pd.DataFrame({c.name: _cast(frame[c.name].reset_index(drop=True), c.dtype)
                        for c in cols})  # fmt: skip
    return out


def subscription_data_dictionary(
    tables: Mapping[str, pd.DataFrame], context: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Describe every column of the given subscriptions-report tables.

    Parameters
    ----------
    tables : mapping of str to DataFrame
    context : mapping, optional
        ``period`` (e.g. ``"1 month"``), ``horizon`` (periods), ``prob``, ``currency`` (text),
        ``discount`` (rate per period), ``method`` and ``amount`` (what a renewal is worth:
        ``"price"`` or the spend model's charge amount), filled into units and meanings.

    Returns
    -------
    DataFrame
        ``table``, ``column``, ``dtype``, ``unit``, ``meaning``, ``source``, one row per column.
    """
    ctx = {"period": "renewal periods", "horizon": "?", "prob": "90 %", "currency": "currency",
           "discount": "the discount rate", "amount": "price"}  # fmt: skip
    c = dict(context or {})
    if c.get("prob") is not None:
        ctx["prob"] = f"{100 * float(c['prob']):g} %"
    if c.get("horizon") is not None:
        ctx["horizon"] = f"{int(c['horizon'])}"
    if c.get("discount") is not None:
        ctx["discount"] = f"{float(c['discount']):.6g}"
    for k in ("period", "currency", "amount"):
        if c.get(k):
            ctx[k] = str(c[k])
    point = _is_point_fit(c.get("method"))
    rows = []
    for name, df in tables.items():
        for col in df.columns:
            spec = _BY_NAME[name].get(col)
            if spec is None:
                raise ValueError(f"column {col!r} of table {name!r} is not in the schema.")
            meaning = spec.meaning.format(**ctx)
            if point and _is_uncertainty_column(col):
                meaning += (". EMPTY in this report: the models were fitted by MAP, a point "
                            "estimate, so there is no credible interval (refit with --method "
                            "laplace or nuts)") if df[col].isna().all() else ""  # fmt: skip
            rows.append((name, col, spec.dtype, spec.unit.format(**ctx), meaning, "clvbayes"))
    return pd.DataFrame(rows, columns=["table", "column", "dtype", "unit", "meaning", "source"])


# ---------------------------------------------------------------------------------------
# writing

#: Draws one plot: ``(figure) -> None``, on a figure of the given size (inches).
PlotSpec = tuple[Callable[[Any], None], tuple[float, float]]


def write_subscriptions_report(
    out_dir: str | os.PathLike[str],
    tables: Mapping[str, pd.DataFrame],
    models: Mapping[str, Any],
    summary: Mapping[str, Any],
    *,
    fmt: str | Iterable[str] = "both",
    plots: Mapping[str, PlotSpec] | None = None,
    context: Mapping[str, Any] | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write a complete subscriptions report folder, atomically, as :func:`write_report` does.

    Parameters
    ----------
    out_dir : path
        The report folder: replaced only when it is empty or holds nothing but the
        unchanged files of a previous clvbayes report (its manifest).
    tables : mapping of str to DataFrame
        The tables of :data:`SUBSCRIPTION_SCHEMA` by name (built by :func:`subscription_table`).
    models : mapping of str to fitted model
        Saved as ``{name}.nc`` with their data.
    summary : mapping
        Entries of ``model_summary.json`` (data, settings, model_comparison, holdout, totals,
        command, warnings, timings); the file list, version and the models' parameter
        tables are added here.
    fmt : "csv", "parquet" or "both"
    plots : mapping of file name to (draw function, figure size), optional
        Each draw function gets a matplotlib Figure (outside pyplot) and draws on it; a plot
        that fails with ValueError/TypeError is left out and named in ``warnings``.
    context : mapping, optional
        Units and settings for the data dictionary (:func:`subscription_data_dictionary`).
    protect : paths
        The run's input files: refused as (or inside) the output folder.

    Returns
    -------
    Path
        The report folder (absolute).

    Raises
    ------
    ReportWriteError
        The folder cannot or must not be written; the previous report is unchanged.
    """
    formats = _normalise_formats(fmt)
    out = _output_path(out_dir)
    need = (sum(_table_bytes(df, formats) for df in tables.values())
            + sum(_model_bytes(m) for m in models.values()) + (8 << 20))  # fmt: skip

    def fill(stage) -> None:
        _fill(stage, tables, models, dict(summary), formats, dict(plots or {}), dict(context or {}))

    return publish_staged(out, protect, need, fill, validate_subscriptions_report)


def _fill(stage, tables, models, summary, formats, plots, context) -> None:
    from clvbayes import __version__
    from clvbayes.report.summary import _model_summary
    from clvbayes.report.writer import _save_model

    tmp, out = stage.path, stage.out
    table_files = [f"{t}.{f}" for t in tables for f in formats]

    writing = staged_writing(stage)

    with writing(*table_files):
        for name, df in tables.items():
            _write_table(df, tmp, name, formats)
    dictionary = subscription_data_dictionary(tables, context)
    with writing("data_dictionary.csv", "data_dictionary.md"):
        _to_csv(_csv_safe(dictionary), tmp / "data_dictionary.csv")
        md = ["# clvbayes subscriptions report: data dictionary", ""]
        md += [f"Units: periods are renewal periods of the grid ({context.get('period')}); "
               f"money is in {context.get('currency')}; discount rate "
               f"{context.get('discount')} per period.", ""]  # fmt: skip
        for name in tables:
            part = dictionary[dictionary["table"] == name].drop(columns="table")
            md += [f"## {name}", "", _md_table(part), ""]
        (tmp / "data_dictionary.md").write_text("\n".join(md), encoding="utf-8")
    prob = float(context.get("prob", 0.9))
    model_files, model_summaries = {}, {}
    for name, model in models.items():
        file = f"{name}.nc"
        stage.expect(file)
        try:
            _save_model(model, tmp / file)
        except ReportWriteError:
            raise
        except Exception as err:  # h5py raises RuntimeError as well as OSError
            raise _write_failed(out, f"the model file {file}", err) from err
        model_files[name] = file
        model_summaries[name] = _model_summary(name, model, prob)
    written = []
    warnings_list = list(summary.get("warnings") or [])
    if plots:
        from matplotlib.figure import Figure

        with writing(*plots):
            for name, (draw, size) in plots.items():
                fig = Figure(figsize=size, dpi=100)
                try:
                    draw(fig)
                except (ValueError, TypeError, KeyError) as err:
                    warnings_list.append(f"ReportWarning: plot {name} left out ({err})")
                    continue
                fig.tight_layout()
                fig.savefig(tmp / name)
                written.append(name)
    full = {
        "clvbayes_report": REPORT_VERSION,
        "report_kind": REPORT_KIND,
        "clvbayes_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "formats": list(formats),
        "files": {
            "tables": table_files,
            "models": model_files,
            "plots": written,
            "manifest": MANIFEST,
        },
        "n_subscribers": len(tables["subscribers"]),
        **summary,
        "models": {**model_summaries, **(summary.get("models") or {})},
        "warnings": warnings_list,
    }
    full = _jsonable(full)
    with writing("model_summary.json", "model_summary.md"):
        (tmp / "model_summary.json").write_text(
            json.dumps(full, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (tmp / "model_summary.md").write_text(summary_markdown(full, tables), encoding="utf-8")


# ---------------------------------------------------------------------------------------
# model_summary.md


def summary_markdown(summary: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> str:
    """``model_summary.md`` of a subscriptions report."""
    s = summary.get("settings") or {}
    lines = ["# clvbayes subscriptions report: model summary", ""]
    if summary.get("command"):
        lines += [f"Command: `{summary['command']}`", ""]
    comp = summary.get("model_comparison") or {}
    if comp:
        lines += ["## Which model the forecasts use, and why", ""]
        for group, key in (comp.get("chosen") or {}).items():
            reason = (comp.get("reasons") or {}).get(group, "")
            lines.append(f"- **{group}: {_NAME.get(key, key)}** ({key}). {reason}")
        lines += ["", f"Rule: {comp.get('rule')}", ""]
        mc = tables.get("model_comparison")
        if mc is not None and len(mc):
            show = ["fit_group", "model_name", "chosen", "loglik", "elpd_loo", "elpd_loo_se",
                    "elpd_diff", "elpd_diff_se", "max_pareto_k", "alpha_mean", "beta_mean",
                    "c_mean"]  # fmt: skip
            lines += [_md_table(mc[[c for c in show if c in mc]].astype(object), "{:,.3f}"), ""]
            hold = [c for c in mc.columns if c.startswith("holdout_")]
            if hold:
                lines += ["Holdout (each model refitted on the data up to the holdout start; "
                          "not used for the choice):", ""]  # fmt: skip
                lines += [_md_table(mc[["fit_group", "model_name", *hold]].astype(object),
                                    "{:,.3f}"), ""]  # fmt: skip
        for note in comp.get("notes") or []:
            lines += [f"- {note}", ""]
    pool = tables.get("pooling")
    if pool is not None and len(pool):
        lines += ["## Partial pooling: each group alone (raw) and pooled", "",
                  f"Pooled by {s.get('pool_by')!r}: the pooled fit puts a hierarchical prior on "
                  "the groups' parameters, so a group with little data is pulled towards the "
                  "others; the forecasts use the pooled group models. Posterior means and "
                  f"{100 * float(s.get('prob') or 0.9):g} % credible intervals:", ""]  # fmt: skip
        show = ["fit_group", "model", "estimate", "n_subscribers", "alpha_mean",
                "alpha_ci_lower", "alpha_ci_upper", "beta_mean", "beta_ci_lower",
                "beta_ci_upper", "c_mean", "c_ci_lower", "c_ci_upper", "mean_churn_mean",
                "mean_churn_ci_lower", "mean_churn_ci_upper", "note"]  # fmt: skip
        lines += [_md_table(pool[[c for c in show if c in pool]].astype(object), "{:,.3f}"), ""]
    if s.get("value_source"):
        lines += ["## Value per renewal", "", str(s.get("value_rule") or s["value_source"]), ""]
    holdout = summary.get("holdout")
    if holdout:
        lines += ["## Holdout check", "", *_md_items(holdout.get("settings") or {}), ""]
        if holdout.get("fits"):
            lines += ["The refits on the data up to the holdout start (posterior means; "
                      "log-likelihood at them):", ""]  # fmt: skip
            lines += [_md_table(pd.DataFrame(holdout["fits"]).astype(object), "{:,.4f}"), ""]
        h = tables.get("holdout")
        if h is not None and len(h):
            show = ["fit_group", "model", "k", "at_risk", "actual_active", "unknown",
                    "active_mean", "active_pi_lower", "active_pi_upper", "in_pi"]  # fmt: skip
            lines += [_md_table(h[show].astype(object), "{:,.1f}"), ""]
        for note in holdout.get("notes") or []:
            lines.append(f"- {note}")
        lines.append("")
    totals = tables.get("totals")
    if totals is not None and len(totals):
        lines += [f"## Forecast totals over the next {s.get('horizon')} due dates", ""]
        if _is_point_fit(s.get("method")):
            lines += ["MAP fit: no credible intervals (a point estimate); the predictive "
                      "intervals show the subscribers' own randomness only.", ""]  # fmt: skip
        cols = [c for c in totals.columns if not totals[c].isna().all()]
        lines += [_md_table(totals[cols].astype(object), "{:,.1f}"), ""]
    lines += ["## Data", "", *_md_items(summary.get("data") or {}), ""]
    lines += ["## Settings", "", *_md_items(s), ""]
    for name, m in (summary.get("models") or {}).items():
        if not isinstance(m, Mapping) or "parameters" not in m:
            continue
        lines += [f"## Model `{name}` ({m.get('class')}, file `{m.get('file')}`)", ""]
        lines.append(_md_table(pd.DataFrame(m["parameters"]).astype(object)))
        fit = m.get("fit") or {}
        lines += ["", f"- method: {fit.get('method')}, seed: {fit.get('seed')}, subscribers "
                  f"fitted: {fit.get('n_customers_fitted')}, fit time "
                  f"{(fit.get('fit_seconds') or 0):.2f} s", ""]  # fmt: skip
    if summary.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    return "\n".join(lines)


_NAME = {"sbg": "sBG", "bdw": "BdW"}


# ---------------------------------------------------------------------------------------
# validation


def validate_subscriptions_report(out_dir: str | os.PathLike[str]) -> None:
    """Check a subscriptions report folder against :data:`SUBSCRIPTION_SCHEMA`.

    Every listed file is there and in the manifest, unchanged; each table has its required
    columns in schema order with the schema's types, and every column is described in the
    data dictionary; CSV and Parquet copies are equal; subscriber ids are unique;
    probabilities lie in [0, 1]; the mean and predictive-interval columns of the forecasts
    are finite (sd and credible intervals may be empty only for a MAP fit); each fit group
    has exactly one chosen model and it is the one the subscribers carry.

    Raises
    ------
    ReportError
        Naming every problem found.
    """
    folder = Path(out_dir)
    try:
        summary = json.loads((folder / "model_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{folder}: cannot read model_summary.json ({err}).") from err
    problems: list[str] = []
    if summary.get("report_kind") != REPORT_KIND:
        problems.append(f"report_kind {summary.get('report_kind')!r}, expected {REPORT_KIND!r}")
    formats = summary.get("formats") or []
    files = summary.get("files") or {}
    listed = list(files.get("tables") or [])
    names = [*SUBSCRIPTION_TABLES] + [
        t for t in OPTIONAL_TABLES if any(n.startswith(f"{t}.") for n in listed)
    ]
    expected = ["model_summary.md", "data_dictionary.csv", "data_dictionary.md",
                *[f"{t}.{f}" for t in names for f in formats],
                *(files.get("models") or {}).values(), *(files.get("plots") or [])]  # fmt: skip
    problems += [f"missing file {f}" for f in expected if not (folder / f).is_file()]
    if problems:
        raise ReportError(f"{folder}: " + "; ".join(problems))
    problems += manifest_problems(folder, expected)
    point = _is_point_fit((summary.get("settings") or {}).get("method"))
    dictionary = _read_dictionary(folder / "data_dictionary.csv")
    frames: dict[str, pd.DataFrame] = {}
    for table in names:
        copies = {}
        for f in formats:
            try:
                copies[f] = read_report_table(folder / f"{table}.{f}")
            except Exception as err:  # any read failure is a report problem
                problems.append(f"{table}.{f} cannot be read: {err}")
        described = dictionary[dictionary["table"] == table]
        dtypes = dict(zip(described["column"], described["dtype"], strict=True))
        for f, df in copies.items():
            problems += [f"{table}.{f}: {p}" for p in _check_table(table, df, dtypes, point)]
        if len(copies) == 2:
            try:
                pd.testing.assert_frame_equal(copies["csv"], copies["parquet"])
            except AssertionError as err:
                problems.append(f"{table}: CSV and Parquet differ: {str(err).splitlines()[0]}")
        if copies:
            frames[table] = next(iter(copies.values()))
    if "subscribers" in frames and summary.get("n_subscribers") != len(frames["subscribers"]):
        problems.append(f"subscribers has {len(frames['subscribers'])} rows, summary says "
                        f"{summary.get('n_subscribers')}")  # fmt: skip
    problems += _check_choice(frames, summary)
    if problems:
        raise ReportError(f"{folder} does not match the subscriptions report schema: "
                          + "; ".join(problems))  # fmt: skip


_PROBABILITIES = ("p_renew_", "churn_risk_")


def _check_table(table: str, df: pd.DataFrame, described: Mapping[str, str], point: bool):
    problems = []
    schema = _BY_NAME[table]
    missing = [c.name for c in SUBSCRIPTION_SCHEMA[table] if c.required and c.name not in df]
    if missing:
        problems.append(f"missing column(s) {missing}")
    for c in df.columns:
        if c not in schema:
            problems.append(f"column {c!r} is not in the schema")
            continue
        if described.get(c) != schema[c].dtype:
            problems.append(f"column {c!r}: dictionary says {described.get(c)}, schema "
                            f"{schema[c].dtype}")  # fmt: skip
        want = pd.Series([], dtype=PANDAS_DTYPES[schema[c].dtype]).dtype
        if df[c].dtype != want:
            problems.append(f"column {c!r} has dtype {df[c].dtype}, expected {want}")
        if schema[c].dtype == "float64" and c.endswith(("_mean", "_pi_lower", "_pi_upper")):
            values = df[c].to_numpy(dtype=float)
            if table in ("subscribers", "at_risk", "cohorts", "totals", "holdout") and not (
                np.isfinite(values).all()
            ):
                problems.append(f"column {c!r} has missing or infinite values")
        if point and _is_uncertainty_column(c):
            pass
        elif schema[c].dtype == "float64" and c.endswith(("_sd", "_ci_lower", "_ci_upper")):
            if (
                table not in ("model_comparison", "pooling")
                and not np.isfinite(df[c].to_numpy(float)).all()
            ):
                problems.append(f"column {c!r} has missing or infinite values")
        if c.startswith(_PROBABILITIES) and df[c].dtype.kind == "f":
            v = df[c].dropna()
            if not v.between(0, 1).all():
                problems.append(f"column {c!r} outside [0, 1]")
    problems += [f"column {c!r} described but absent" for c in described if c not in df.columns]
    order = [c.name for c in SUBSCRIPTION_SCHEMA[table] if c.name in df.columns]
    if [c for c in df.columns if c in schema] != order:
        problems.append("columns are not in schema order")
    if table in ("subscribers", "at_risk") and "subscriber_id" in df:
        ids = df["subscriber_id"]
        if ids.isna().any() or ids.duplicated().any():
            problems.append("subscriber_id has missing or duplicated values")
    return problems


def _check_choice(frames: Mapping[str, pd.DataFrame], summary: Mapping[str, Any]) -> list[str]:
    mc, subs = frames.get("model_comparison"), frames.get("subscribers")
    if mc is None:
        return []
    problems = []
    stated = (summary.get("model_comparison") or {}).get("chosen") or {}
    for g, key in stated.items():
        rows = mc[mc["fit_group"] == g]
        n = int(rows["chosen"].sum())
        if n != 1:
            problems.append(f"model_comparison: fit group {g!r} has {n} chosen rows, expected 1")
            continue
        chosen = str(rows.loc[rows["chosen"], "model"].iloc[0])
        if key != chosen:
            problems.append(f"model_comparison chooses {chosen!r} for {g!r}, model_summary says "
                            f"{key!r}")  # fmt: skip
        if subs is not None and len(subs):
            used = set(subs.loc[subs["fit_group"] == g, "model"])
            if used and used != {chosen}:
                problems.append(f"subscribers of fit group {g!r} use {sorted(used)}, "
                                f"model_comparison chooses {chosen!r}")  # fmt: skip
    return problems
