"""The job behind ``clvbayes subscriptions``: subscriptions in, a retention report folder out.

:func:`run_subscriptions` reads a subscriptions table (one row per spell: id, start, end or
empty while active, optional plan, price per period and cohort), or with ``charges=True`` a
log of recurring charges (a subscriber has cancelled when no charge came within
``grace_days`` of a due date), or with ``survival=True`` cohort survival counts; summarises
every subscriber on an explicit period grid (:mod:`clvbayes.data.subscriptions`); fits the
sBG and the BdW (:mod:`clvbayes.models.sbg`, :mod:`clvbayes.models.bdw`) on each fit group
(``fit_by``: everyone, or each plan or cohort separately), or with ``pool_by`` one partially
pooled model of each family across the cohorts or plans (:mod:`clvbayes.models.pooled`);
compares them by PSIS-LOO and by a
holdout of the last periods (each model refitted on the data up to the holdout start, its
projected survivors against the actual ones); uses one per fit group by the rule
:data:`clvbayes.report.retention_comparison.CHOICE_RULE`; forecasts every active subscriber
and each segment (:func:`clvbayes.predict.retention.score_subscribers` with one model per
fit group: per-draw totals across groups) and writes the report folder
(:mod:`clvbayes.report.subscriptions`).  ``clvbayes subscriptions`` parses its arguments and
calls it; from Python::

    from clvbayes.subscriptions_job import run_subscriptions

    result = run_subscriptions(demo="fh2007", output="fh2007-report", quiet=True)

Units: ``horizon`` and ``holdout_periods`` count periods of the grid (``period``: calendar
months, years, weeks or days, or a multiple such as ``"3 months"``); ``discount_rate`` is
per year and converted exactly to the grid (a month is 1/12 year; weeks and days use the
365.25-day year of :mod:`clvbayes.units`), ``discount_rate_per_period`` is per period;
money is in the currency of the price column.  Totals over several groups pair the groups'
posterior draws one to one (independent fits, or one pooled posterior).

Value per renewal: the price per period (a subscriptions table's price column, or a charge
log's mean charge when every spell's charges are equal); when the charge amounts of a spell
vary (``attrs["amounts_vary"]`` of the charge-log summary), a
:class:`~clvbayes.models.GammaGammaModel` fitted on every spell's repeat charges
(``frequency`` = charges - 1, ``monetary_value`` = their mean amount, as the purchase job
does with repeat purchases) gives each subscriber's amount per charge, draw by draw
(:data:`VALUE_RULES` states which, in the report).

Errors: :class:`~clvbayes.run_options.UserError` (options, input file, output location;
exit 2), :class:`~clvbayes.errors.DataError` and :class:`~clvbayes.errors.ModelError`
(data the models cannot use; exit 2); every check runs before reading the data in full.
"""

from __future__ import annotations

import inspect
import re
import shlex
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError, ModelError
from clvbayes.progress import Progress
from clvbayes.run_options import UserError
from clvbayes.subscriptions_options import (
    DEFAULT_AT_RISK_TOP,
    DEFAULT_METHOD,
    DEFAULT_OUTPUT,
    DEMOS,
    _csv_kwargs,
    _words,
    check_subscriptions,
)

__all__ = [
    "VALUE_RULES",
    "SubscriptionsResult",
    "censor_pending_renewals",
    "run_command",
    "run_subscriptions",
]

#: How a renewal is valued, as ``model_summary`` states it (``settings["value_rule"]``).
VALUE_RULES = {
    "price": "Constant amounts: each renewal is worth its price per period x margin (a "
    "subscriptions table's price column, or a charge log's mean charge of the spell); value "
    "and residual value are price x margin x discounted renewals.",
    "spend_model": "Varying amounts: the charge amounts of some spells differ, so a Gamma-Gamma "
    "spend model (clvbayes.models.GammaGammaModel, file gamma_gamma.nc) was fitted on every "
    "spell's repeat charges (frequency = charges - 1, monetary_value = mean amount of the "
    "charges after the first); each subscriber's amount per charge is its conditional "
    "expectation under each posterior draw, and value and residual value are margin x that "
    "amount x discounted renewals, draw by draw (the spend and retention posteriors are "
    "independent, draw s of each paired), so their credible intervals carry both "
    "uncertainties; the predictive intervals of value and revenue simulate every future "
    "charge's amount.",
}


@dataclass(frozen=True)
class SubscriptionsResult:
    """What :func:`run_subscriptions` made.

    Attributes
    ----------
    path : Path
        The report folder (absolute).
    n_subscribers, n_active : int
        Subscribers (spells) in the data, and those active at the end of it (forecast).
    seconds : float
        Wall time of the job.
    horizon : int
        Forecast horizon, in periods of ``period``.
    period : str
        The period grid, e.g. ``"1 month"``.
    method : str
        Fit method.
    prob : float
        Probability of every interval.
    chosen : dict of str to str
        Model (``sbg`` or ``bdw``) used for each fit group.
    total : dict
        The ``all`` row of the ``totals`` table (renewals, revenue, value over the horizon).
    comparison : DataFrame
        The ``model_comparison`` table.
    """

    path: Path
    n_subscribers: int
    n_active: int
    seconds: float
    horizon: int
    period: str
    method: str
    prob: float
    chosen: dict[str, str]
    total: dict[str, Any]
    comparison: pd.DataFrame = field(repr=False)


def run_subscriptions(
    path: str | None = None,
    *,
    demo: str | None = None,
    output: str = DEFAULT_OUTPUT,
    charges: bool = False,
    survival: bool = False,
    grace_days: int | None = None,
    as_of: str | None = None,
    period: str | None = None,
    customer_id_col: str = "customer_id",
    start_col: str = "start",
    end_col: str = "end",
    date_col: str = "date",
    amount_col: str | None = None,
    price_col: str | None = None,
    plan_col: str | None = None,
    cohort_col: str | None = None,
    period_col: str = "period",
    cohort_size: int | None = None,
    date_format: str | None = None,
    sep: str | None = None,
    encoding: str | None = None,
    fit_by: str | None = None,
    pool_by: str | None = None,
    horizon: int | None = None,
    discount_rate: float | None = None,
    discount_rate_per_period: float | None = None,
    margin: float = 1.0,
    allow_margin_above_1: bool = False,
    prob: float = 0.9,
    holdout_periods: int | None = None,
    method: str = DEFAULT_METHOD,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    at_risk_top: int = DEFAULT_AT_RISK_TOP,
    format: str = "both",
    strict: bool = False,
    quiet: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
) -> SubscriptionsResult:
    """Subscriptions -> renewal histories -> sBG and BdW fits, compared -> forecasts -> report.

    The job of ``clvbayes subscriptions``; each parameter is the option of the same name
    (``clvbayes subscriptions --help``).

    Parameters
    ----------
    path : str, optional
        Input file (``.csv[.gz]``, ``.txt``, ``.tsv`` or ``.parquet``); or ``demo``.
    demo : {"fh2007", "box"}, optional
        A bundled example (:data:`DEMOS`) instead of ``path``.
    output : str
        Report folder (replaced only if it holds nothing but a previous clvbayes report).
    charges : bool
        ``path`` is a charge log (one row per recurring charge: ``customer_id_col``,
        ``date_col``, optionally ``amount_col`` and ``plan_col``); needs ``grace_days``.
    survival : bool
        ``path`` holds cohort survival: ``period_col`` counts periods 0, 1, ... and every
        other column is a cohort's subscribers still active (percentages with
        ``cohort_size``).
    grace_days : int, optional
        Charge log: days a renewal charge may come before or after its due date.
    as_of : str, optional
        Observation date of a subscriptions table or charge log (required for them).
    period : str
        Period grid: ``month``, ``year``, ``week``, ``day`` or a multiple (``"3 months"``);
        months and years are calendar units.  Required for a file.
    customer_id_col, start_col, end_col, date_col : str
        Columns: id, start and end (subscriptions table), charge date (charge log).
    amount_col, price_col : str, optional
        Charge amount (charge log; the spell's mean charge is its price per period) and the
        price per period (subscriptions table); default the column ``amount`` / ``price``
        when present.  Without a price the value and revenue columns are left out.
    plan_col, cohort_col : str, optional
        Plan and cohort columns (default ``plan`` when present; the cohort is otherwise the
        start's calendar month, its year on a yearly grid).
    period_col, cohort_size : optional
        Survival input: the period column and the cohort size behind percentages.
    date_format, sep, encoding : str, optional
        Reading options of a CSV file.
    fit_by : {"none", "plan", "cohort"}, optional
        Fit one pair of models per plan or cohort (default ``none``; ``cohort`` for survival
        input, whose cohorts are separate populations).
    pool_by : {"cohort", "plan"}, optional
        Partial pooling instead: one :class:`~clvbayes.models.pooled.
        PooledShiftedBetaGeometricModel` and one :class:`~clvbayes.models.pooled.
        PooledBetaDiscreteWeibullModel` across the groups of this column (or the input
        column behind it); each group is forecast by its pooled group model, compared by
        the pooled fit's LOO terms on its subscribers, and the ``pooling`` table sets its
        raw (fitted alone) against its pooled estimates.
    horizon : int, optional
        Forecast horizon in periods (default one year of periods, at least 5).
    discount_rate, discount_rate_per_period : float, optional
        Annual discount rate (default 0.10), converted exactly to the grid, or the rate per
        period.
    margin : float
        Share of the price kept, in (0, 1] (1: revenue).
    allow_margin_above_1 : bool
        Accept a margin above 1.
    prob : float
        Probability of every interval.
    holdout_periods : int, optional
        Periods at the end of the data held out for the holdout check (0: none; default a
        quarter of the observed span, at most the horizon).
    method : {"laplace", "nuts", "map"}
        Fit method (default laplace).
    draws, tune, chains : int
        NUTS settings (laplace: ``draws`` draws).
    seed : int
        Random seed (fits use ``seed``, the forecasts ``seed + 2``).
    at_risk_top : int
        Rows of the at-risk list (0: every active subscriber).
    format : {"csv", "parquet", "both"}
    strict : bool
        Treat DataWarning and FitWarning as errors.
    quiet : bool
        No progress output.
    command : str, optional
        The command line recorded in the report.
    progress : Progress, optional

    Returns
    -------
    SubscriptionsResult

    Raises
    ------
    UserError, clvbayes.errors.DataError, clvbayes.errors.ModelError
        Input, options or output the job cannot use (exit 2 on the command line).
    """
    given = dict(locals())
    opts = SimpleNamespace(**{k: v for k, v in given.items() if k != "progress"})
    if command is None:
        defaults = {
            k: p.default for k, p in inspect.signature(run_subscriptions).parameters.items()
        }
        shown = [f"{k}={v!r}" for k, v in given.items()
                 if k not in ("command", "progress") and v != defaults[k]]  # fmt: skip
        opts.command = f"clvbayes.subscriptions_job.run_subscriptions({', '.join(shown)})"
    progress = progress or Progress(quiet, strict=strict)
    from clvbayes.report import output_lock

    defaults = {k: p.default for k, p in inspect.signature(run_subscriptions).parameters.items()}
    with progress.step("checking options and input"):
        check_subscriptions(opts, defaults)
    out_dir = Path(opts.output)
    with ExitStack() as stack:
        try:
            stack.enter_context(output_lock(out_dir))
        except OSError as err:
            raise UserError(str(err)) from err
        return _job(opts, progress, out_dir)


# ---------------------------------------------------------------------------------------
# reading and summarising


def _read(opts: SimpleNamespace) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The raw input table and its provenance."""
    from clvbayes.report import file_provenance

    if opts.demo == "fh2007":
        from clvbayes.datasets.subscriptions import load_fh2007_survival

        raw = load_fh2007_survival()
        return raw, {"source": f"bundled example --demo fh2007: {DEMOS['fh2007']['what']}",
                     "citation": raw.attrs["source"]}  # fmt: skip
    if opts.demo == "box":
        from clvbayes.datasets.subscriptions import load_subscription_box_charges

        raw = load_subscription_box_charges()
        return raw, {"source": f"bundled example --demo box: {DEMOS['box']['what']}",
                     "simulation": raw.attrs["source"]}  # fmt: skip
    path = Path(opts.path)
    try:
        if opts.input_format == "parquet":
            raw = pd.read_parquet(path)
        elif opts.kind == "survival":
            raw = pd.read_csv(path, **_csv_kwargs(opts, path))
        else:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                              **_csv_kwargs(opts, path))  # fmt: skip
    except UnicodeDecodeError as err:
        raise UserError(f"cannot read {path} as text ({err.reason}); pass its encoding, e.g. "
                        "--encoding latin-1.") from err  # fmt: skip
    except (ValueError, OSError, EOFError, ImportError) as err:
        raise UserError(f"cannot read {path} as a table: {err}") from err
    return raw, {"source": "file", **file_provenance(path)}


def _summarise(raw: pd.DataFrame, opts: SimpleNamespace, as_of: Any = None,
               calibration_periods: int | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per subscriber: ``periods``, ``churned``, ``cohort``, ``fit_group`` and
    (where the input has them) ``customer_id``, ``plan``, ``start``, ``price``."""
    from clvbayes.data.subscriptions import (
        subscribers_from_survival,
        subscriptions_from_charges,
        summarize_subscriptions,
    )

    as_of = opts.as_of if as_of is None else as_of
    if opts.kind == "survival":
        subs = subscribers_from_survival(
            raw, period_col=opts.period_col, columns=opts.survival_columns,
            cohort_size=opts.cohort_size, calibration_periods=calibration_periods,
            period=opts.period,
        )  # fmt: skip
        subs.attrs["as_of"] = None
    elif opts.kind == "charges":
        spells = subscriptions_from_charges(
            raw, as_of=as_of, grace_days=opts.grace_days, period=opts.period,
            customer_id_col=opts.customer_id_col, date_col=opts.date_col,
            amount_col=opts.amount_col, plan_col=opts.plan_col, datetime_format=opts.date_format,
        )  # fmt: skip
        spells = censor_pending_renewals(
            spells, raw, as_of=as_of, grace_days=opts.grace_days, period=opts.period,
            customer_id_col=opts.customer_id_col, date_col=opts.date_col,
            datetime_format=opts.date_format,
        )  # fmt: skip
        subs = spells.drop(columns=["spell", "n_charges", "end", "period"])
        if "mean_charge" in subs:
            subs = subs.rename(columns={"mean_charge": "price", "repeat_charges": "frequency",
                                        "repeat_mean_charge": "monetary_value"})  # fmt: skip
        subs.attrs = dict(spells.attrs)
    else:
        subs = summarize_subscriptions(
            raw, as_of=as_of, period=opts.period, customer_id_col=opts.customer_id_col,
            start_col=opts.start_col, end_col=opts.end_col, price_col=opts.price_col,
            plan_col=opts.plan_col, cohort_col=opts.cohort_col, datetime_format=opts.date_format,
        )  # fmt: skip
        attrs = dict(subs.attrs)
        subs = subs.drop(columns=["end", "period"])
        subs.attrs = attrs
    attrs = dict(subs.attrs)
    subs = subs.copy()
    subs.index = subs.index.astype(str).rename("subscriber_id")
    if "cohort" not in subs:
        fmt = "%Y" if opts.period.endswith("year") else "%Y-%m"
        subs["cohort"] = pd.to_datetime(subs["start"]).dt.strftime(fmt)
    for col in ("cohort", "plan", "customer_id"):
        if col in subs:
            subs[col] = subs[col].astype(object).where(subs[col].notna(), "(missing)").astype(str)
    subs["fit_group"] = "all" if opts.fit_by == "none" else subs[opts.fit_by]
    subs.attrs = attrs
    return subs


def censor_pending_renewals(
    spells: pd.DataFrame,
    charges: pd.DataFrame,
    *,
    as_of: Any,
    grace_days: int,
    period: str = "month",
    customer_id_col: str = "customer_id",
    date_col: str = "date",
    datetime_format: str | None = None,
) -> pd.DataFrame:
    """Do not count a renewal whose outcome was not fully observed on ``as_of`` yet.

    ``spells`` is the result of :func:`clvbayes.data.subscriptions.subscriptions_from_charges`
    on ``charges`` with the same ``as_of``, ``grace_days``, ``period`` and columns; returns a
    copy with ``periods`` corrected (``clvbayes subscriptions`` applies it to every charge log).

    In a charge log a payment is seen at once, a missed renewal only ``grace_days`` after its
    due date.  So among the spells whose last due date ``d`` lies within ``grace_days`` before
    ``as_of`` (``d + grace_days > as_of``), those who paid have counted the renewal already and
    those who have not are still active -- the subscribers about to cancel are kept, the ones
    who renewed moved on: informative censoring, which makes the next-period forecast (and a
    holdout refit) too optimistic.  Here every active spell whose last counted renewal fell
    due on or after ``as_of - grace_days`` is set back to the renewals due before it (paid or not,
    all such renewals are treated alike, as unresolved).  The number of spells set back is
    ``attrs["pending_renewals_not_counted"]``.
    """
    import datetime as dt

    from clvbayes.data.subscriptions import _parse_optional_dates, parse_period
    from clvbayes.datasets.subscriptions import _add_months

    n_per, unit = parse_period(period)
    grace = dt.timedelta(days=int(grace_days))
    cut = pd.Timestamp(as_of).normalize().date() - grace
    active = spells[(spells["churned"] == 0) & (spells["periods"] >= 1)]
    out = spells.copy()
    out.attrs = dict(spells.attrs)
    if active.empty:
        out.attrs["pending_renewals_not_counted"] = 0
        return out
    ids = charges[customer_id_col].astype(str)
    days = _parse_optional_dates(charges[date_col], date_col, ids, datetime_format)
    log = pd.DataFrame({"id": ids.to_numpy(), "day": days.dt.normalize().dt.date.to_numpy()})
    log = log[log["id"].isin(set(active["customer_id"].astype(str)))].drop_duplicates()
    by_id = {k: sorted(g["day"]) for k, g in log.groupby("id")}
    months = n_per * (12 if unit == "year" else 1) if unit in ("month", "year") else 0
    step = dt.timedelta(days=n_per * (7 if unit == "week" else 1))

    def next_due(day: dt.date) -> dt.date:  # the rule of subscriptions_from_charges
        return _add_months(day, months) if months else day + step

    back = []
    for sid, customer, start, periods in zip(
        active.index, active["customer_id"].astype(str), active["start"], active["periods"],
        strict=True,
    ):  # fmt: skip
        start = pd.Timestamp(start).date()
        last, due_dates = start, []
        for day in by_id.get(customer, []):
            if day <= start:
                continue
            due = next_due(last)
            if day < due - grace:
                continue  # an extra charge inside the period
            if day > due + grace:
                break
            due_dates.append(due)
            last = day
        if len(due_dates) == int(periods) and due_dates[-1] >= cut:
            back.append(sid)
    out.loc[back, "periods"] = out.loc[back, "periods"] - 1
    out.attrs["pending_renewals_not_counted"] = len(back)
    return out


def _fit_groups(subs: pd.DataFrame) -> list[str]:
    groups = sorted(pd.unique(subs["fit_group"]).tolist(), key=str)
    if len(groups) > 1 and "all" in groups:
        raise DataError(
            "A plan or cohort is named 'all', which the report uses for the whole base; rename "
            "it in the input."
        )
    return groups


def _check_summary(subs: pd.DataFrame, opts: SimpleNamespace) -> None:
    """What the summary must allow before anything is fitted: someone to forecast, a holdout
    that leaves data to fit on."""
    from clvbayes.retention_forecast import _span_periods

    if not (subs["churned"] == 0).any():
        raise DataError(f"None of the {len(subs):,} subscribers is active at the end of the data "
                        "(every one has cancelled): there is nobody to forecast.")  # fmt: skip
    if opts.pool_by and subs["fit_group"].nunique() < 2:
        raise DataError(
            f"--pool-by {opts.pool_by}: every subscriber is in one {opts.pool_by} "
            f"({subs['fit_group'].iloc[0]!r}), so there is nothing to pool across; drop "
            "--pool-by."
        )
    span = _span_periods(subs, opts)
    h = opts.holdout_periods
    if h is not None and h > 0 and h >= span:
        raise UserError(
            f"--holdout-periods {h} leaves no data to fit on: the data span {span} period(s) of "
            f"{opts.period}. Pass a smaller --holdout-periods (e.g. {max(1, span // 4)}) or 0."
        )


# ---------------------------------------------------------------------------------------
# fitting


def _fit_options(opts: SimpleNamespace) -> dict[str, Any]:
    if opts.method == "nuts":
        return dict(draws=opts.draws, tune=opts.tune, chains=opts.chains,
                    progressbar=not opts.quiet)  # fmt: skip
    if opts.method == "laplace":
        return dict(draws=opts.draws)
    return {}


def _fit_pair(table: pd.DataFrame, group: str, opts: SimpleNamespace, seed: int) -> dict[str, Any]:
    from clvbayes.models.bdw import BetaDiscreteWeibullModel
    from clvbayes.models.sbg import ShiftedBetaGeometricModel

    fitted = {}
    for key, cls in (("sbg", ShiftedBetaGeometricModel), ("bdw", BetaDiscreteWeibullModel)):
        try:
            fitted[key] = cls().fit(table, method=opts.method, seed=seed, **_fit_options(opts))
        except ModelError as err:
            where = "" if group == "all" else f" (fit group {group!r}, --fit-by {opts.fit_by})"
            raise ModelError(f"{err}{where}") from err
    return fitted


def _fit_pooled(table: pd.DataFrame, opts: SimpleNamespace, seed: int):
    """The pooled sBG and BdW across ``opts.pool_by`` and their group models by group."""
    from clvbayes.models.pooled import (
        PooledBetaDiscreteWeibullModel,
        PooledShiftedBetaGeometricModel,
    )

    pooled = {}
    for key, cls in (("sbg", PooledShiftedBetaGeometricModel),
                     ("bdw", PooledBetaDiscreteWeibullModel)):  # fmt: skip
        try:
            pooled[key] = cls(opts.pool_by).fit(table, method=opts.method, seed=seed,
                                                **_fit_options(opts))  # fmt: skip
        except ModelError as err:
            raise ModelError(f"{err} (--pool-by {opts.pool_by})") from err
    fitted = {g: {k: m.group_model(g) for k, m in pooled.items()} for g in pooled["sbg"].groups_}
    return pooled, fitted


def _holdout_fits(table: pd.DataFrame, groups: list[str], opts: SimpleNamespace, seed: int):
    """Refits on the data up to the holdout start: ``({group: {"sbg", "bdw"}}, notes)``."""
    if opts.pool_by:
        try:
            return _fit_pooled(table, opts, seed)[1], []
        except ModelError as err:
            return {}, [f"the pooled refit on the data up to the holdout start is not possible "
                        f"({err}); no holdout check."]  # fmt: skip
    fitted, notes = {}, []
    for g in groups:
        part = table[table["fit_group"] == g]
        if part.empty:
            continue
        try:
            fitted[g] = _fit_pair(part, g, opts, seed)
        except ModelError as err:
            notes.append(f"fit group {g!r}: the refit on the data up to the holdout start is not "
                         f"possible ({err}); left out.")  # fmt: skip
    return fitted, notes


def _fit_spend(subs: pd.DataFrame, opts: SimpleNamespace):
    """The Gamma-Gamma model of the charge amounts when they vary within spells, else None."""
    if opts.kind != "charges" or not subs.attrs.get("amounts_vary") or "frequency" not in subs:
        return None
    from clvbayes.models import GammaGammaModel

    try:
        return GammaGammaModel().fit(subs[["frequency", "monetary_value"]], method=opts.method,
                                     seed=opts.seed, **_fit_options(opts))  # fmt: skip
    except ModelError as err:
        raise ModelError(f"{err} (the spend model of the varying charge amounts, column "
                         f"{opts.amount_col!r})") from err  # fmt: skip


def _param_row(group, key, estimate, n, draws, prob, note=None) -> dict[str, Any]:
    from clvbayes.predict.summary import draw_stats

    values = {p: np.asarray(draws[p], dtype=float).ravel() for p in ("alpha", "beta")}
    values["c"] = np.asarray(draws["c"], dtype=float).ravel() if "c" in draws else None
    values["mean_churn"] = values["alpha"] / (values["alpha"] + values["beta"])
    row: dict[str, Any] = {"fit_group": str(group), "model": key, "estimate": estimate,
                           "n_subscribers": int(n), "note": note}  # fmt: skip
    for p, v in values.items():
        if v is None:
            row.update({f"{p}_mean": np.nan, f"{p}_ci_lower": np.nan, f"{p}_ci_upper": np.nan})
            continue
        st = draw_stats(v, prob)
        row.update({f"{p}_mean": float(st["mean"]), f"{p}_ci_lower": float(st["lower"]),
                    f"{p}_ci_upper": float(st["upper"])})  # fmt: skip
    return row


def _pooling_table(subs, groups, fitted, opts) -> pd.DataFrame:
    """Each group's parameters fitted alone (raw) and in the pooled fit, both families."""
    import warnings

    from clvbayes.models.bdw import BetaDiscreteWeibullModel
    from clvbayes.models.sbg import ShiftedBetaGeometricModel

    rows = []
    for g in groups:
        part = subs[subs["fit_group"] == g]
        for key, cls in (("sbg", ShiftedBetaGeometricModel), ("bdw", BetaDiscreteWeibullModel)):
            try:
                with warnings.catch_warnings():  # a raw fit is shown, never used to forecast
                    warnings.simplefilter("ignore")
                    raw = cls().fit(part, method=opts.method, seed=opts.seed, **_fit_options(opts))
                rows.append(_param_row(g, key, "raw", len(part), raw.draws(), opts.prob))
            except ModelError as err:
                rows.append({"fit_group": str(g), "model": key, "estimate": "raw",
                             "n_subscribers": len(part), "note": str(err)})  # fmt: skip
            rows.append(_param_row(g, key, "pooled", len(part), fitted[g][key].draws(), opts.prob))
    from clvbayes.report.subscriptions import subscription_table

    return subscription_table("pooling", pd.DataFrame(rows))


# ---------------------------------------------------------------------------------------
# the job


def _job(opts: SimpleNamespace, progress: Progress, out_dir: Path) -> SubscriptionsResult:
    from clvbayes.predict.retention import score_subscribers
    from clvbayes.report.retention_comparison import MODEL_NAMES, compare_retention_models
    from clvbayes.report.subscription_plots import subscription_plots
    from clvbayes.retention_forecast import Holdout, holdout_check, sort_segments

    with progress.step("reading the input"):
        raw, source = _read(opts)
    with progress.step(f"summarising every subscriber on the {opts.period} grid"):
        subs = _summarise(raw, opts)
        groups = _fit_groups(subs)
        _check_summary(subs, opts)
    fitted: dict[str, dict[str, Any]] = {}
    pooled = None
    if opts.pool_by:
        with progress.step(f"fitting the pooled sBG and BdW across {len(groups)} "
                           f"{opts.pool_by} groups ({opts.method}, {len(subs):,} subscribers)"):  # fmt: skip
            pooled, fitted = _fit_pooled(subs, opts, seed=opts.seed)
        with progress.step(f"fitting each {opts.pool_by} alone too (the raw estimates)"):
            pooling = _pooling_table(subs, groups, fitted, opts)
    else:
        pooling = None
        for g in groups:
            part = subs[subs["fit_group"] == g]
            where = "" if g == "all" else f" for {opts.fit_by} {g!r}"
            with progress.step(
                f"fitting sBG and BdW{where} ({opts.method}, {len(part):,} subscribers)"
            ):
                fitted[g] = _fit_pair(part, g, opts, seed=opts.seed)
    spend = None
    if opts.kind == "charges" and subs.attrs.get("amounts_vary"):
        with progress.step("fitting the spend model of the varying charge amounts (Gamma-Gamma)"):
            spend = _fit_spend(subs, opts)
    with progress.step("comparing sBG and BdW (PSIS-LOO)"):
        comparison = compare_retention_models(fitted, pooled=pooled)
    holdout = Holdout(None, {}, [], {}, {})
    with progress.step("holdout check: refitting on the data up to the holdout start"):
        holdout = holdout_check(raw, subs, opts, groups, summarise=_summarise,
                                fit_groups=_holdout_fits)  # fmt: skip
    chosen = comparison.chosen
    progress.say("clvbayes: forecasts use " + ", ".join(
        f"{MODEL_NAMES[k]}" + ("" if g == "all" else f" for {g}") for g, k in chosen.items()
    ) + (f" (pooled across {opts.pool_by})" if pooled else "")
      + " (model_summary.md says why)")  # fmt: skip

    has_price = "price" in subs.columns
    active = subs[subs["churned"] == 0]
    value_source = "spend_model" if spend is not None else "price" if has_price else None
    with progress.step(f"forecasting {len(active):,} active subscribers, "
                       f"{opts.horizon} periods ahead"):  # fmt: skip
        table = active.copy()
        table.attrs = dict(subs.attrs)
        models = {g: fitted[g][chosen[g]] for g in pd.unique(active["fit_group"])}
        scores = score_subscribers(
            table, models, group_col="fit_group", by=[c for c in ("cohort", "plan") if c in table],
            horizon=opts.horizon, discount_rate=opts.rate_per_period,
            price_col="price" if has_price else None, spend_model=spend, margin=opts.margin,
            prob=opts.prob, seed=opts.seed + 2,
        )  # fmt: skip
        scored = active.join(scores.subscribers).assign(model=active["fit_group"].map(chosen))
        cohorts, totals = sort_segments(scores.segments), sort_segments(scores.totals)
    tables = _tables(scored, cohorts, totals, comparison, holdout, opts)
    if pooling is not None:
        tables["pooling"] = pooling
    models_out, files_by_group = _model_files(fitted, groups, pooled, spend)
    summary = _summary(opts, source, subs, groups, comparison, holdout, files_by_group, progress,
                       value_source)  # fmt: skip
    context = {"period": opts.period, "horizon": opts.horizon, "prob": opts.prob,
               "currency": _currency(opts, has_price), "discount": opts.rate_per_period,
               "method": opts.method,
               "amount": "the expected charge amount (Gamma-Gamma spend model, per draw)"
               if spend is not None else "price"}  # fmt: skip
    plots = subscription_plots(subs, fitted, chosen, groups, cohorts, holdout.table, opts, raw)
    _write(opts, progress, out_dir, tables, models_out, summary, plots, context)
    total = totals[totals["grouping"] == "all"].iloc[0]
    return SubscriptionsResult(
        path=out_dir.resolve(), n_subscribers=len(subs), n_active=len(scored),
        seconds=progress.total, horizon=opts.horizon, period=opts.period, method=opts.method,
        prob=opts.prob, chosen=dict(chosen), total={str(k): v for k, v in total.items()},
        comparison=tables["model_comparison"],
    )  # fmt: skip


def _currency(opts: SimpleNamespace, has_price: bool) -> str:
    if not has_price:
        return "no price column: value and revenue columns are left out"
    if opts.kind == "charges":
        return f"units of the {opts.amount_col!r} column"
    return f"units of the {opts.price_col!r} column"


def _tables(scored, cohorts, totals, comparison, holdout, opts) -> dict[str, pd.DataFrame]:
    from clvbayes.report.subscriptions import subscription_table

    subscribers = scored.reset_index()
    if "start" in subscribers:
        subscribers["start"] = pd.to_datetime(subscribers["start"])
    sort = ["churn_risk_mean"] + (["residual_value_mean"] if "residual_value_mean" in subscribers
                                  else ["value_mean"] if "value_mean" in subscribers else [])  # fmt: skip
    ranked = subscribers.sort_values([*sort, "subscriber_id"], ascending=[False] * len(sort) + [True],
                                     kind="stable")  # fmt: skip
    if opts.at_risk_top:
        ranked = ranked.head(opts.at_risk_top)
    ranked = ranked.assign(rank=np.arange(1, len(ranked) + 1))
    if "price" in ranked:
        ranked["revenue_at_risk_mean"] = ranked["price"] * opts.margin * ranked["churn_risk_mean"]
    mc = comparison.table.copy()
    if holdout.metrics:
        for col in ("holdout_periods", "holdout_mae", "holdout_mape", "holdout_pi_coverage"):
            mc[col] = [holdout.metrics.get((g, k), {}).get(col, np.nan)
                       for g, k in zip(mc["fit_group"], mc["model"], strict=True)]  # fmt: skip
        mc["holdout_periods"] = mc["holdout_periods"].fillna(0).astype(np.int64)
    out = {
        "subscribers": subscription_table("subscribers", subscribers),
        "at_risk": subscription_table("at_risk", ranked),
        "cohorts": subscription_table("cohorts", cohorts),
        "totals": subscription_table("totals", totals),
        "model_comparison": subscription_table("model_comparison", mc),
    }
    if holdout.table is not None:
        out["holdout"] = subscription_table("holdout", holdout.table)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("._")[:40] or "group"


def _model_files(fitted: dict[str, dict[str, Any]], groups: list[str], pooled=None, spend=None):
    """The models by file key (``sbg``, ``bdw``, ``sbg-<group>`` ..., ``sbg-pooled``,
    ``gamma_gamma``) and the files per group."""
    models: dict[str, Any] = {}
    files: dict[str, dict[str, str]] = {}
    if spend is not None:
        models["gamma_gamma"] = spend
    if pooled is not None:
        for k, m in pooled.items():
            models[f"{k}-pooled"] = m
        return models, {str(g): {k: f"{k}-pooled.nc" for k in pooled} for g in groups}
    for i, g in enumerate(groups, start=1):
        for k, m in fitted[g].items():
            name = k if groups == ["all"] else f"{k}-{_slug(g)}"
            if name in models:
                name = f"{k}-{i}-{_slug(g)}"
            models[name] = m
            files.setdefault(str(g), {})[k] = f"{name}.nc"
    return models, files


def _summary(
    opts, source, subs, groups, comparison, holdout, files_by_group, progress, value_source
) -> dict[str, Any]:
    a = subs.attrs
    counts = subs.groupby("fit_group")["churned"].agg(["size", "sum"])
    data = {
        "input": source,
        "kind": opts.kind,
        "columns": _columns_used(opts),
        "period": opts.period,
        "as_of": a.get("as_of"),
        "counting_rule": a.get("counting_rule"),
        "grace_days": a.get("grace_days"),
        "calibration_periods": a.get("calibration_periods"),
        "n_subscribers": len(subs),
        "n_active": int((subs["churned"] == 0).sum()),
        "n_cancelled": int((subs["churned"] == 1).sum()),
        "returning_spells": a.get("returning_spells"),
        "pending_renewals_not_counted": a.get("pending_renewals_not_counted"),
        "extra_charges": a.get("extra_charges"),
        "amounts_vary": a.get("amounts_vary"),
        "fit_groups": {str(g): {"subscribers": int(counts.at[g, "size"]),
                                "cancelled": int(counts.at[g, "sum"])} for g in groups},
    }  # fmt: skip
    settings = {
        "period": opts.period,
        "horizon": opts.horizon,
        "horizon_unit": f"periods of {opts.period} (due dates)",
        "discount_rate_per_period": opts.rate_per_period,
        "annual_discount_rate": opts.annual_rate,
        "margin": opts.margin,
        "prob": opts.prob,
        "method": opts.method,
        "draws": opts.draws if opts.method != "map" else None,
        "chains": opts.chains if opts.method == "nuts" else None,
        "tune": opts.tune if opts.method == "nuts" else None,
        "seed": opts.seed,
        "fit_by": opts.fit_by,
        "pool_by": opts.pool_by,
        "fit_groups": [str(g) for g in groups],
        "value_source": value_source,
        "value_rule": VALUE_RULES.get(value_source),
        "model_files": files_by_group,
        "at_risk_top": opts.at_risk_top,
        "currency": _currency(opts, "price" in subs),
        "strict": bool(opts.strict),
    }
    return {
        "command": opts.command,
        "data": data,
        "settings": settings,
        "model_comparison": comparison.to_summary(),
        "holdout": {"settings": holdout.settings, "notes": holdout.notes, "fits": holdout.fits},
        "warnings": progress.warnings,
        "timings_s": progress.timings,
    }


def _columns_used(opts: SimpleNamespace) -> dict[str, Any]:
    if opts.kind == "survival":
        return {"period": opts.period_col, "cohorts": getattr(opts, "survival_columns", None),
                "cohort_size": opts.cohort_size}  # fmt: skip
    if opts.kind == "charges":
        return {"customer_id": opts.customer_id_col, "date": opts.date_col,
                "amount": opts.amount_col, "plan": opts.plan_col}  # fmt: skip
    return {"customer_id": opts.customer_id_col, "start": opts.start_col, "end": opts.end_col,
            "price": opts.price_col, "plan": opts.plan_col, "cohort": opts.cohort_col}  # fmt: skip


def _write(opts, progress, out_dir, tables, models, summary, plots, context) -> None:
    from clvbayes.report import ReportWriteError
    from clvbayes.report.subscriptions import write_subscriptions_report

    with progress.step(f"writing the report to {out_dir}"):
        summary["warnings"] = progress.warnings
        try:
            write_subscriptions_report(
                out_dir, tables, models, summary, fmt=opts.format, plots=plots,
                context=context, protect=[opts.path] if opts.path is not None else [],
            )  # fmt: skip
        except OSError as err:
            if isinstance(err, ReportWriteError):
                raise UserError(str(err)) from err
            raise UserError(f"cannot write the report to {out_dir}: {err}") from err
    progress.report_written = True


# ---------------------------------------------------------------------------------------
# the command line


def run_command(args: Any, progress: Progress | None = None) -> Path:
    """Run ``clvbayes subscriptions`` for parsed arguments; print the result line; return the folder."""
    names = [k for k in inspect.signature(run_subscriptions).parameters
             if k not in ("command", "progress")]  # fmt: skip
    options = {k: getattr(args, k) for k in names if hasattr(args, k)}
    command = "clvbayes " + shlex.join(getattr(args, "argv", ["subscriptions"]))
    try:
        result = run_subscriptions(**options, command=command, progress=progress)
    except DataError as err:
        raise DataError(_words(str(err))) from err
    try:
        print(_result_line(result), flush=True)
    except BrokenPipeError:
        pass
    return result.path


def _result_line(result: SubscriptionsResult) -> str:
    t = result.total
    pct = f"{100 * result.prob:g} %"
    used = ", ".join(("sBG" if k == "sbg" else "BdW") + ("" if g == "all" else f" ({g})")
                     for g, k in result.chosen.items())  # fmt: skip
    if "revenue_total_mean" in t:
        what, q = "renewal revenue x margin", "revenue_total"
    else:
        what, q = "renewal payments", "renewals_total"
    if result.method == "map":
        interval = (f"{pct} predictive interval {t[f'{q}_pi_lower']:,.0f} to "
                    f"{t[f'{q}_pi_upper']:,.0f}; MAP is a point estimate: parameter uncertainty "
                    "not included")  # fmt: skip
    else:
        interval = (f"{pct} credible interval {t[f'{q}_ci_lower']:,.0f} to "
                    f"{t[f'{q}_ci_upper']:,.0f}, predictive {t[f'{q}_pi_lower']:,.0f} to "
                    f"{t[f'{q}_pi_upper']:,.0f}")  # fmt: skip
    return (
        f"clvbayes: subscriptions report written to {result.path} ({result.n_active:,} active of "
        f"{result.n_subscribers:,} subscribers, {result.seconds:.1f} s). Models: {used} (see "
        f"model_summary.md). Expected {what} over the next {result.horizon} due dates (periods "
        f"of {result.period}): {t[f'{q}_mean']:,.0f} ({interval})."
    )
