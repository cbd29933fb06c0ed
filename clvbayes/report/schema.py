"""The report schema: one definition for the data dictionary, the writers, readers and validation.

:data:`SCHEMA` lists every column of the ``customers`` and ``segments`` tables, and of the
``model_comparison`` table of ``--purchase-model compare`` runs (name, logical type, unit,
meaning); :func:`data_dictionary` describes a run's tables from it, with the run's
time unit, horizon and interval probability filled in; the casting helpers put values into the
schema's pandas types on the way out (writing) and back in (CSV, SQL).

Two things decide which columns a report has (:func:`report_kind`, from the run's settings):

* the **time grid**: continuous time (``recency`` and ``T`` in days or weeks) or discrete
  opportunities (BG/BB: ``recency`` and ``periods`` count opportunities, ``p_alive`` is
  P(active at the last calibration opportunity), horizons count opportunities);
* whether there is a **spend model**: without one (discrete-time runs on a log without
  transaction values, such as the bundled donations data) there are no ``monetary_value``,
  ``spend``, ``revenue``, ``clv`` columns, no CLV deciles and no churn flag -- never columns
  filled with stand-in values.  Discrete-time runs with values have them all: values are
  per opportunity there (an opportunity's transactions added up, as BG/BB counts it once).

A column's ``needs`` says which kind of report has it; :func:`column_applies` decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from clvbayes import segments as seg
from clvbayes.segments import OTHERS, SEGMENT_RULES

#: Version of the report layout; bumped when a column or file changes incompatibly.
REPORT_VERSION = 1

TABLES = ("customers", "segments")
FORMATS = ("csv", "parquet")
#: Plots every report with a spend model has; ``segment_totals.png`` (CLV by named segment)
#: comes in addition.  A report's own list: :func:`required_plots`.
PLOTS = ("p_alive_distribution.png", "clv_distribution.png", "clv_by_recency_frequency.png")
#: The BG/BB plot of discrete-time reports: P(alive) by (frequency, recency) for the most
#: common ``periods``, posterior mean and credible-interval width
#: (:func:`clvbayes.plotting.plot_history_grid`).
DISCRETE_PLOT = "p_alive_by_history.png"
#: Time grids of a report (see :func:`report_kind`).
TIME_GRIDS = ("continuous", "discrete")
#: The data's time unit on discrete opportunities.
OPPORTUNITIES = "opportunities"


_PANDAS_MAJOR = int(pd.__version__.split(".")[0])


class ReportError(ValueError):
    """A report folder that does not match its documented schema."""


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

    ``unit`` and ``meaning`` may hold ``{time_unit}``, ``{horizon}``, ``{prob}``,
    ``{alive_at}`` and ``{rate}``, filled in from the run's settings in the data dictionary.
    ``required=False`` columns appear only in some runs (holdout, CAC).  ``needs``: the kind
    of report that has the column at all -- ``"spend"`` (a spend model), ``"continuous"``
    or ``"discrete"`` (the time grid); None for every report.  ``discrete_meaning`` and
    ``purchase_only_meaning`` replace ``meaning`` on discrete grids and without a spend model.
    """

    name: str
    dtype: str
    unit: str
    meaning: str
    required: bool = True
    needs: str | None = None
    discrete_meaning: str | None = None
    purchase_only_meaning: str | None = None


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
    "p_alive": ("probability", "P(the customer is still active at {alive_at})", None),
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


#: Quantities that need a spend model.
_SPEND_QUANTITIES = ("spend", "revenue", "clv")


#: On discrete opportunities a transaction is an opportunity with a transaction: one value
#: is the amounts of that opportunity added up (as ``monetary_value``).
_DISCRETE_QUANTITIES = {
    "spend": (
        "the expected value of one future transaction opportunity (the amounts of its "
        "transactions added up)",
        "the value of one future transaction opportunity (the amounts of its transactions "
        "added up)",
    ),
}


def _prediction_columns() -> list[Column]:
    cols = []
    for q, (unit, what, outcome) in _QUANTITIES.items():
        for stat, (text, kind) in _STATS.items():
            if kind == "pi" and outcome is None:
                continue
            discrete = None
            if q in _DISCRETE_QUANTITIES:
                d_what, d_outcome = _DISCRETE_QUANTITIES[q]
                discrete = text.format(what=d_what, outcome=d_outcome, prob="{prob}")
            cols.append(
                Column(f"{q}_{stat}", "float64", unit, text.format(what=what, outcome=outcome,
                                                                   prob="{prob}"),
                       needs="spend" if q in _SPEND_QUANTITIES else None,
                       discrete_meaning=discrete)
            )  # fmt: skip
    return cols


_DERT = (
    "DERT, the discounted expected residual transactions: the expected transactions at every "
    "future opportunity n + t (t = 1, 2, ..., not only the horizon), each discounted by "
    "(1 + d)^-t with d = {rate} per opportunity (Fader, Hardie & Shang 2010, eq. 14; times "
    "the value of a transaction, the customer's residual value)"
)


def _dert_columns() -> list[Column]:
    """BG/BB's DERT per customer: discrete runs with a positive discount rate."""
    return [
        Column(f"dert_{stat}", "float64", "transactions (discounted)",
               text.format(what=_DERT, prob="{prob}"), required=False, needs="discrete")
        for stat, (text, kind) in _STATS.items() if kind == "ci"
    ]  # fmt: skip


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
        needs = "spend" if q in _SPEND_QUANTITIES else None
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
        if needs is not None:
            cols[-8:] = [replace(c, needs=needs) for c in cols[-8:]]
    return cols


#: The quantities that ``--purchase-model compare`` also gives model-averaged (the spend of
#: one transaction does not depend on the purchase model, so it is not averaged).
AVERAGED_QUANTITIES = ("p_alive", "purchases", "revenue", "clv")
#: Prefix of the model-averaged columns of ``customers`` and ``segments``.
AVERAGED_PREFIX = "averaged_"
_AVERAGED_MEANING = (
    " -- MODEL-AVERAGED (--purchase-model compare only): under the stacking mixture of the "
    "purchase models compared, whose posterior draws are mixed in the proportions of "
    "model_comparison.stacking_weight (Yao et al. 2018), so the interval includes the "
    "disagreement between the models; the column without the averaged_ prefix is the "
    "chosen model's"
)


def _averaged(columns: list[Column], names: list[str]) -> list[Column]:
    """Model-averaged copies (prefix :data:`AVERAGED_PREFIX`, not required) of ``names``."""
    by_name = {c.name: c for c in columns}
    return [
        replace(by_name[n], name=AVERAGED_PREFIX + n, required=False,
                meaning=by_name[n].meaning + _AVERAGED_MEANING, discrete_meaning=None)
        for n in names
    ]  # fmt: skip


def _averaged_customer_columns() -> list[Column]:
    stats = [s for s in _STATS if s.startswith(("mean", "sd", "ci_"))] + ["pi_lower", "pi_upper"]
    names = [f"{q}_{s}" for q in AVERAGED_QUANTITIES for s in stats
             if not (q == "p_alive" and s.startswith("pi_"))]  # fmt: skip
    return _averaged(_prediction_columns(), names)


def _averaged_segment_columns() -> list[Column]:
    stats = ("mean", "ci_lower", "ci_upper", "pi_lower", "pi_upper")
    names = [f"{q}_total_{s}" for q in _SEGMENT_QUANTITIES for s in stats]
    return _averaged(_segment_quantity_columns(), names)


_SCORE_UNIT = f"score 1-{seg.RFM_QUANTILES}"
_RULES_TEXT = "; ".join(f"{k}: {r.description}" for k, r in SEGMENT_RULES.items())
_PURCHASE_ONLY_RULES_TEXT = "; ".join(
    f"{k}: {r.description}" for k, r in seg.PURCHASE_ONLY_RULES.items()
)
_NO_SPEND = " (this run has no spend model, so no CLV: only the rules that need no value)"

#: Every column of every report table, in file order.  Columns from the input
#: (``--group-by``) come right after ``segment`` in ``customers`` and are described in the
#: data dictionary with source ``input``.
SCHEMA: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("customer_id", "string", "", "customer id, as text (leading zeros kept)"),
        Column("first_purchase", "datetime", "date", "date of the first purchase",
               needs="continuous"),
        Column("first_opportunity", "datetime", "date",
               "start of the opportunity of the first transaction (its cohort)",
               needs="discrete"),
        Column("frequency", "int64", "transactions",
               "repeat purchases in the calibration period (purchase days after the first)",
               discrete_meaning="repeat transactions x: calibration opportunities after the "
               "first transaction's with a transaction (several in one opportunity count once)"),
        Column("recency", "float64", "{time_unit}", "time from the first to the last purchase",
               discrete_meaning="t_x: the opportunity of the last repeat transaction, counted "
               "from the first transaction's (0 when frequency is 0; a whole number)"),
        Column("T", "float64", "{time_unit}",
               "time from the first purchase to the end of the calibration period",
               needs="continuous"),
        Column("periods", "int64", "{time_unit}",
               "n: opportunities from the first transaction's to the last calibration "
               "opportunity (the customer's observed opportunities)", needs="discrete"),
        Column("monetary_value", "float64", "currency",
               "mean value of the repeat purchases (0 when frequency is 0)", needs="spend",
               discrete_meaning="mean value of the repeat transaction opportunities: the "
               "amounts of each calibration opportunity after the first transaction's added "
               "up, averaged over the frequency opportunities (0 when frequency is 0)"),
        Column("time_since_last_purchase", "float64", "{time_unit}", "T - recency",
               discrete_meaning="periods - recency: opportunities since the last transaction"),
        Column("r_score", "int64", _SCORE_UNIT,
               f"recency score, {seg.RFM_QUANTILES} = most recent last purchase (quantile groups; "
               "ties share a score)"),
        Column("f_score", "int64", _SCORE_UNIT,
               f"frequency score, {seg.RFM_QUANTILES} = most repeat purchases; frequency 0 scores 1"),
        Column("m_score", "int64", _SCORE_UNIT,
               f"monetary score among repeat customers, {seg.RFM_QUANTILES} = highest mean "
               "repeat spend; frequency 0 scores 1", needs="spend"),
        Column("rfm_code", "string", "", "R, F and M scores written together, e.g. '545'",
               purchase_only_meaning="R and F scores written together, e.g. '54' (no M score: "
               "no transaction values)"),
        Column("clv_decile", "int64", f"group 1-{seg.CLV_QUANTILES}",
               f"CLV group by clv_mean (1 = top {100 / seg.CLV_QUANTILES:g} %)", needs="spend"),
        Column("churn_risk", "bool", "",
               f"high past value (repeat spend frequency x monetary_value above its "
               f"{seg.CHURN_VALUE_QUANTILE:g} quantile) and P(alive) < "
               f"{seg.CHURN_P_ALIVE_THRESHOLD:g}", needs="spend"),
        Column("segment", "string", "", f"named segment, first matching rule: {_RULES_TEXT}; "
               f"else {OTHERS}",
               purchase_only_meaning=f"named segment, first matching rule: "
               f"{_PURCHASE_ONLY_RULES_TEXT}; else {OTHERS}{_NO_SPEND}"),
        *_prediction_columns(),
        *_averaged_customer_columns(),
        *_dert_columns(),
        Column("clv_to_cac", "float64", "ratio", "clv_mean / customer acquisition cost (--cac)",
               required=False, needs="spend"),
        Column("frequency_holdout", "int64", "transactions",
               "actual purchases in the holdout period (calibration end, observation end]",
               required=False,
               discrete_meaning="actual holdout opportunities with a transaction (after the "
               "last calibration opportunity, up to the last observed one)"),
        Column("periods_holdout", "int64", "{time_unit}",
               "opportunities in the holdout period (the same for every customer)",
               required=False, needs="discrete"),
        Column("monetary_value_holdout", "float64", "currency",
               "actual mean transaction value in the holdout period (0 if none)", required=False,
               needs="spend",
               discrete_meaning="actual mean value per holdout opportunity with a transaction "
               "(its amounts added up; 0 if none)"),
        Column("total_value_holdout", "float64", "currency",
               "actual total transaction value in the holdout period", required=False,
               needs="spend",
               discrete_meaning="actual total transaction value in the holdout opportunities"),
    ),
    "segments": (
        Column("grouping", "string", "",
               "what the rows group by: all, segment, clv_decile or an input column",
               purchase_only_meaning="what the rows group by: all, segment or an input column"),
        Column("group", "string", "", "the group's value (as text)"),
        Column("n_customers", "int64", "customers", "customers in the group"),
        *_segment_quantity_columns(),
        *_averaged_segment_columns(),
        Column("clv_to_cac", "float64", "ratio", "clv_per_customer_mean / CAC", required=False,
               needs="spend"),
        Column("clv_to_cac_ci_lower", "float64", "ratio", "clv_per_customer_ci_lower / CAC",
               required=False, needs="spend"),
        Column("clv_to_cac_ci_upper", "float64", "ratio", "clv_per_customer_ci_upper / CAC",
               required=False, needs="spend"),
    ),
}  # fmt: skip

_HOLDOUT = "in the holdout period (calibration end, observation end]"
#: ``model_comparison``, written by ``--purchase-model compare`` only
#: (:mod:`clvbayes.report.comparison`): one row per purchase model, best PSIS-LOO elpd first.
SCHEMA["model_comparison"] = (
    Column("model", "string", "", "purchase-model key (--purchase-model; file KEY.nc)"),
    Column("model_name", "string", "", "purchase model, e.g. BG/NBD"),
    Column("model_class", "string", "", "clvbayes class of the model"),
    Column("chosen", "bool", "", "True for the model the customers and segments tables use"),
    Column("stacking_weight", "float64", "fraction",
           "weight of the model in the model average (stacking of the PSIS-LOO predictive "
           "distributions per customer, Yao et al. 2018; the weights add up to 1): the "
           "averaged_* columns of customers and segments mix the models' posterior draws in "
           "these proportions", required=False),
    Column("elpd_loo", "float64", "nats",
           "PSIS-LOO expected log predictive density of the customers' calibration histories "
           "(higher is better), computed per distinct history and weighted by its customers"),
    Column("elpd_loo_se", "float64", "nats", "standard error of elpd_loo"),
    Column("p_loo", "float64", "parameters", "effective number of parameters (PSIS-LOO)"),
    Column("elpd_diff", "float64", "nats",
           "elpd_loo of the best model minus this model's (0 for the best)"),
    Column("elpd_diff_se", "float64", "nats",
           "standard error of elpd_diff, from the paired per-history values"),
    Column("max_pareto_k", "float64", "",
           "largest Pareto k of the PSIS weights; above 0.7 the LOO estimate is unreliable"),
    Column("n_customers", "int64", "customers", "customers in the LOO computation"),
    Column("n_histories", "int64", "histories",
           "distinct (frequency, recency, T) histories the LOO computation ran on"),
    Column("purchases_total_mean", "float64", "transactions",
           "posterior mean of the total purchases of all customers in the next {horizon} "
           "{time_unit} (the prediction horizon) under this model", required=False),
    Column("purchases_total_pi_lower", "float64", "transactions",
           "lower end of the {prob} predictive interval of those total purchases",
           required=False),
    Column("purchases_total_pi_upper", "float64", "transactions",
           "upper end of the {prob} predictive interval of those total purchases",
           required=False),
    Column("clv_total_mean", "float64", "currency",
           "posterior mean of the total CLV of all customers (margin x discounted revenue, "
           "next {horizon} {time_unit}) under this model and the spend model", required=False,
           needs="spend"),
    Column("clv_total_ci_lower", "float64", "currency",
           "lower end of the {prob} credible interval of the expected total CLV",
           required=False, needs="spend"),
    Column("clv_total_ci_upper", "float64", "currency",
           "upper end of the {prob} credible interval of the expected total CLV",
           required=False, needs="spend"),
    Column("clv_total_pi_lower", "float64", "currency",
           "lower end of the {prob} predictive interval of the realised total CLV",
           required=False, needs="spend"),
    Column("clv_total_pi_upper", "float64", "currency",
           "upper end of the {prob} predictive interval of the realised total CLV",
           required=False, needs="spend"),
    Column("holdout_purchases_actual_total", "int64", "transactions",
           f"actual purchases of all customers {_HOLDOUT}", required=False),
    Column("holdout_purchases_predicted_total", "float64", "transactions",
           f"posterior mean of the total purchases {_HOLDOUT}", required=False),
    Column("holdout_purchases_total_pi_lower", "float64", "transactions",
           f"lower end of the {{prob}} predictive interval of the total purchases {_HOLDOUT}",
           required=False),
    Column("holdout_purchases_total_pi_upper", "float64", "transactions",
           f"upper end of the {{prob}} predictive interval of the total purchases {_HOLDOUT}",
           required=False),
    Column("holdout_purchases_mae", "float64", "transactions per customer",
           f"mean over customers of |actual - expected purchases| {_HOLDOUT}", required=False),
    Column("holdout_purchases_rmse", "float64", "transactions per customer",
           f"root mean squared (actual - expected purchases) {_HOLDOUT}", required=False),
    Column("holdout_purchases_pi_coverage", "float64", "fraction of customers",
           f"customers whose purchases {_HOLDOUT} lie in their {{prob}} predictive interval "
           "(about {prob} when the intervals are calibrated)", required=False),
    Column("holdout_purchases_mean_pit", "float64", "probability",
           f"mean randomised PIT of the purchases {_HOLDOUT} (0.5 when calibrated)",
           required=False),
)  # fmt: skip
#: Tables only some runs write (``model_comparison``: ``--purchase-model compare``).
OPTIONAL_TABLES = ("model_comparison",)

_BY_NAME = {t: {c.name: c for c in cols} for t, cols in SCHEMA.items()}
#: Names an input grouping column may not take (they are columns of the tables it joins).
RESERVED_NAMES = frozenset(
    {"all", "grouping", "group"} | {c.name for t in TABLES for c in SCHEMA[t]}
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


def _schema_dtypes(table: str | None) -> dict[str, str]:
    if table in SCHEMA:
        return {c.name: c.dtype for c in SCHEMA[table]}
    out: dict[str, str] = {}
    for name in TABLES:
        for c in SCHEMA[name]:
            out.setdefault(c.name, c.dtype)
    return out


def data_dictionary(
    tables: Mapping[str, pd.DataFrame], context: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Describe every column of the given report tables, from :data:`SCHEMA`.

    Parameters
    ----------
    tables : mapping of str to DataFrame
        Report tables by name (``customers``, ``segments``).
    context : mapping, optional
        The run's settings: ``time_unit``, ``horizon``, ``prob`` and
        ``discount_rate_per_period`` are filled into units and meanings; ``time_grid`` and
        ``spend_model`` choose the wording (:func:`report_kind`).

    Returns
    -------
    DataFrame
        Columns ``table``, ``column``, ``dtype`` (logical: string, int64, float64, bool,
        datetime), ``unit``, ``meaning`` and ``source`` (``clvbayes`` or ``input``), one row
        per column in file order.
    """
    grid, spend = report_kind(context)
    ctx = {"time_unit": "time units", "horizon": "?", "prob": "90 %", "rate": "?",
           "alive_at": _ALIVE_AT[grid]}  # fmt: skip
    point = _is_point_fit((context or {}).get("method"))
    for k, v in (context or {}).items():
        if v is None:
            continue
        if k == "prob":
            v = f"{100 * float(v):g} %"
        elif k == "horizon":
            v = f"{float(v):g}"
        elif k == "discount_rate_per_period":
            ctx["rate"] = f"{float(v):.6g}"
        ctx[k] = v
    rows = []
    for name, df in tables.items():
        for c in df.columns:
            spec = _BY_NAME[name].get(c)
            if spec is None:
                rows.append((name, c, _logical_dtype(df[c]), "", "input column (--group-by), "
                             "one value per customer: its value on the first transaction", "input"))  # fmt: skip
            else:
                meaning = spec.meaning
                if grid == "discrete" and spec.discrete_meaning:
                    meaning = spec.discrete_meaning
                if not spend and spec.purchase_only_meaning:
                    meaning = spec.purchase_only_meaning
                meaning = meaning.format(**ctx)
                if point and _is_uncertainty_column(c):
                    meaning += _POINT_EMPTY if df[c].isna().all() else _POINT_FILLED
                rows.append((name, c, spec.dtype, spec.unit.format(**ctx), meaning,
                             "clvbayes"))  # fmt: skip
    return pd.DataFrame(rows, columns=["table", "column", "dtype", "unit", "meaning", "source"])


_ALIVE_AT = {
    "continuous": "the end of calibration",
    "discrete": "the last calibration opportunity, opportunity n = periods (the next "
    "opportunity's dropout chance is part of the future)",
}


def report_kind(settings: Mapping[str, Any] | None) -> tuple[str, bool]:
    """``(time grid, has a spend model)`` of a report, from its settings.

    ``settings["time_grid"]`` (``"continuous"`` or ``"discrete"``; without it, discrete when
    ``time_unit`` is ``"opportunities"``) and ``settings["spend_model"]`` (the spend model's
    key, None for none; without the key, a spend model: reports before discrete runs always
    had one).
    """
    settings = settings or {}
    grid = settings.get("time_grid")
    if grid not in TIME_GRIDS:
        grid = "discrete" if settings.get("time_unit") == OPPORTUNITIES else "continuous"
    spend = settings.get("spend_model", "gamma_gamma") is not None
    return grid, spend


def column_applies(column: Column, grid: str, spend: bool) -> bool:
    """Whether a report on ``grid`` (with a spend model or not) has ``column`` at all."""
    if column.needs is None:
        return True
    if column.needs == "spend":
        return spend
    return column.needs == grid


def required_plots(settings: Mapping[str, Any] | None) -> list[str]:
    """The plots a report must have: P(alive) always, the CLV plots with a spend model and,
    on discrete grids, :data:`DISCRETE_PLOT` (drawn from the fitted BG/BB model)."""
    grid, spend = report_kind(settings)
    plots = [PLOTS[0]] + (list(PLOTS[1:]) if spend else [])
    if grid == "discrete" and (settings or {}).get("purchase_model"):
        plots.append(DISCRETE_PLOT)
    return plots


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
