"""The job behind ``clvbayes run``: transactions in, a validated report folder out.

:func:`run_report` reads and checks the transactions, summarises them per customer, fits
the purchase model(s) and the Gamma-Gamma spend model, predicts every customer, segments
them and writes the report folder (:mod:`clvbayes.report`).

On discrete opportunities (``opportunities="yearly"`` or a list of dates; ``demo=
"donations"``) the summary is :func:`clvbayes.data.discrete.summarize_opportunities` and the
purchase model BG/BB; horizons and discount periods count opportunities.  The report has
P(alive), expected transactions and, with a positive discount rate per opportunity, BG/BB's
DERT (discounted expected residual transactions).  When the transactions have the amount
column (``amount_col``) the Gamma-Gamma spend model is fitted on the mean value of the repeat
opportunities (an opportunity's amounts added up) and the report has spend, revenue and CLV
as in continuous time; without it (the bundled donations log) there is no spend model and no
CLV, and the value options (``margin``, ``cac``, ``negative_amounts``) are refused.
``clvbayes run`` parses its arguments and calls it; Python code can call it directly with
the same options as plain arguments (flag ``--time-unit`` is parameter ``time_unit``, and
so on)::

    from clvbayes.pipeline import run_report

    result = run_report(method="laplace", output="clvbayes-report", quiet=True)
    result.path, result.total["clv_total_mean"]

Every check runs before the slow steps (:func:`clvbayes.run_options.check_run`); messages
name the options by their command-line flags.  Errors: :class:`UserError` (input, option or
output location; ``clvbayes run`` exits 2), :class:`clvbayes.errors.DataError` and
:class:`clvbayes.errors.ModelError` (data the models cannot use; exit 2); anything else is a
bug.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.resources import as_file
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError
from clvbayes.progress import Progress
from clvbayes.run_options import (
    COMPARE,
    DEFAULT_ANNUAL_DISCOUNT_RATE,
    DEFAULT_PREDICTION_DRAWS,
    PURCHASE_MODELS,
    StrictWarningError,
    TimeGrid,
    UserError,
    _bundled_file,
    _csv_options,
    _ends,
    _is_cdnow,
    check_discrete_amounts,
    check_run,
    customer_attribute_columns,
    default_horizon,
    discount_per_opportunity,
    purchase_model_classes,
    purchase_model_key,
    read_customer_attributes,
    run_grid,
)

if TYPE_CHECKING:
    from clvbayes.report import ModelComparison
    from clvbayes.run_options import Options

__all__ = ["Progress", "RunResult", "StrictWarningError", "UserError", "run_report"]

# ---------------------------------------------------------------------------------------
# the entry point


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_report` made.

    Attributes
    ----------
    path : Path
        The report folder (absolute).
    n_customers : int
        Customers in the report.
    seconds : float
        Wall time of the whole job, seconds.
    horizon : float
        Prediction horizon, in ``time_unit``.
    time_unit : str
        ``"weeks"`` or ``"days"``; ``"opportunities"`` on discrete opportunities.
    method : str
        How the models were fitted (``nuts``, ``laplace``, ``map``).
    prob : float
        Probability of every interval.
    purchase_model : str
        Key of the purchase model the tables use (``bgnbd``, ``mbgnbd``, ``pnbd``; ``bgbb``).
    total : dict
        The report's ``all`` row of ``segments``: totals over every customer with their
        intervals (e.g. ``clv_total_mean``, ``clv_total_ci_lower``; currency, over the
        horizon).  Without a spend model (discrete-time runs without amounts) no
        ``revenue``/``clv`` keys: ``purchases_total_mean`` and ``alive_total_mean`` are the
        headline figures.
    comparison : ModelComparison or None
        With ``purchase_model="compare"``: the models side by side and the reason for the
        choice.
    time_grid : str
        ``"continuous"`` or ``"discrete"`` (opportunities).
    spend_model : str or None
        Key of the spend model (``gamma_gamma``), None without one.
    averaged_total : dict or None
        With ``purchase_model="compare"``: the ``all`` row of the model-averaged predictions
        (the stacking mixture of the models, the report's ``averaged_*`` columns), keys as
        ``total``.
    """

    path: Path
    n_customers: int
    seconds: float
    horizon: float
    time_unit: str
    method: str
    prob: float
    purchase_model: str
    total: dict[str, Any]
    comparison: ModelComparison | None = None
    time_grid: str = "continuous"
    spend_model: str | None = "gamma_gamma"
    averaged_total: dict[str, Any] | None = None


def run_report(
    path: str | None = None,
    *,
    demo: str | None = None,
    output: str = "clvbayes-report",
    customer_id_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str = "amount",
    date_format: str | None = None,
    sep: str | None = None,
    encoding: str | None = None,
    negative_amounts: str = "error",
    duplicate_rows: str | None = None,
    outlying_dates: str = "error",
    group_by: Sequence[str] = (),
    backtest: int = 0,
    covariates_file: str | None = None,
    covariates: Sequence[str] = (),
    pool_by: str | None = None,
    time_unit: str | None = None,
    opportunities: str | None = None,
    calibration_end: str | None = None,
    observation_end: str | None = None,
    horizon: float | None = None,
    discount_rate: float | None = None,
    discount_rate_per_period: float | None = None,
    margin: float = 1.0,
    allow_margin_above_1: bool = False,
    cac: float | None = None,
    prob: float = 0.9,
    purchase_model: str | None = None,
    method: str = "nuts",
    priors: str | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    prediction_draws: int = DEFAULT_PREDICTION_DRAWS,
    format: str = "both",
    strict: bool = False,
    quiet: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Transactions -> RFM summary -> fitted models -> predictions and segments -> report folder.

    The job of ``clvbayes run``; each parameter is the option of the same name (``python -m
    clvbayes run --help`` explains them all), checked before anything slow runs.

    Parameters
    ----------
    path : str, optional
        Transactions file (``.csv[.gz]``, ``.txt``, ``.tsv`` or ``.parquet``), one row per
        transaction.  None: the bundled CDNOW sample (Fader, Hardie & Lee 2005), with a
        39-week calibration (to 1997-09-30) and a 39-week holdout (to 1998-06-30).
    demo : {"cdnow", "donations"}, optional
        Instead of ``path``, a bundled data set: the CDNOW sample (as ``path=None``) or the
        donations of Fader, Hardie & Shang (2010) as a transaction log
        (:func:`clvbayes.datasets.load_donations_transactions`: 11,104 donors, yearly
        opportunities 1996-2001, no amounts: BG/BB without a spend model).
    output : str
        Report folder, replaced only if it holds nothing but a previous clvbayes report.
    customer_id_col, date_col, amount_col : str
        Columns of the customer id, the transaction date and its value (currency).  On
        ``opportunities`` the amount column is optional: without it, no spend model.
    date_format : str, optional
        ``strftime`` format of the dates (default: inferred).
    sep, encoding : str, optional
        CSV field separator (``"\\t"`` or ``"tab"`` for tabs) and text encoding.
    negative_amounts : {"error", "drop", "keep"}
        Rows with negative amounts (returns).
    duplicate_rows : {"warn", "drop", "keep"}, optional
        Exact duplicate rows; default ``"warn"``, ``"keep"`` for the bundled sample.
    outlying_dates : {"error", "drop", "keep"}
        Rows dated far outside the bulk of the data.
    group_by : sequence of str
        Input columns to total the predictions by (each customer's value on its first
        transaction).
    backtest : int
        Also rerun the fit at this many earlier calibration ends
        (:func:`clvbayes.backtest.run_backtest`, holdout as long as the horizon where the
        data allow) and add its section to ``model_summary`` (0: no backtest).
    covariates_file : str, optional
        CSV/Parquet file of customer attributes, one row per customer (``customer_id_col``
        plus columns); without it the attribute columns come from the transactions.
    covariates : sequence of str
        Static covariates of every model (:mod:`clvbayes.models.segmented`).
    pool_by : str, optional
        Segment column whose segments get partially pooled rates.
    time_unit : {"weeks", "days"}, optional
        Unit of recency, T, ``horizon`` and ``discount_rate_per_period`` in continuous time
        (default weeks); not with ``opportunities``.
    opportunities : str, optional
        Discrete time: the opportunity grid, ``"yearly"``, ``"quarterly"``, ``"monthly"``,
        ``"weekly"``, or the opportunity start dates (comma-separated, or a file with one
        per line); see :func:`clvbayes.run_options.run_grid`.  Then ``horizon`` is a whole
        number of opportunities (default one year's on a calendar grid, required with
        dates), ``discount_rate_per_period`` is per opportunity and an annual
        ``discount_rate`` is converted exactly (calendar grids only); the purchase model is
        BG/BB, and Gamma-Gamma when the transactions have ``amount_col`` (else no spend
        model, and ``margin``, ``cac``, ``negative_amounts`` are refused).
    calibration_end, observation_end : str, optional
        Last day of the calibration period (later transactions form the holdout period the
        report checks the predictions against) and of observation (dates, e.g.
        ``"1997-09-30"``).
    horizon : float, optional
        Prediction horizon in ``time_unit``, from one day to 100 years (default one year:
        52 weeks or 365 days); on opportunities, the number of future opportunities.
    discount_rate : float, optional
        Annual discount rate, a fraction in [0, 1] (default 0.10 = 10 % a year), converted
        exactly to ``time_unit``.
    discount_rate_per_period : float, optional
        Instead of ``discount_rate``: the rate per ``time_unit`` (a fraction).
    margin : float
        Profit margin, a fraction of revenue in (0, 1] (1: CLV in revenue terms).
    allow_margin_above_1 : bool
        Accept a ``margin`` above 1 (a deliberate scale factor such as a currency rate).
    cac : float, optional
        Customer acquisition cost (currency): adds CLV-to-CAC ratios.
    prob : float
        Probability of every interval (equal-tailed), in (0, 1).
    purchase_model : {"bgnbd", "mbgnbd", "pnbd", "bgbb", "compare"}, optional
        The purchase model (default ``"bgnbd"``; ``"bgbb"``, the only discrete-time one, with
        ``opportunities``); ``"compare"`` fits every registered continuous-time one, writes
        ``model_comparison`` (PSIS-LOO; with a holdout period, holdout accuracy and interval
        coverage) and uses the model :data:`clvbayes.report.CHOICE_RULE` picks.  Needs
        ``method`` ``"nuts"`` or ``"laplace"`` (LOO needs posterior draws).
    method : {"nuts", "laplace", "map"}
        Full posterior by NUTS; Gaussian (Laplace) approximation at the mode with ``draws``
        draws; or the posterior mode only (a point estimate: no credible intervals).
    priors : str, optional
        JSON file of priors by model key (the purchase model key(s) and ``gamma_gamma``),
        e.g. ``{"gamma_gamma": {"q": {"dist": "Gamma", "alpha": 20, "beta": 5}}}``.
    draws, tune, chains : int
        NUTS draws per chain, tuning steps per chain and chains (Laplace: ``draws`` draws).
    seed : int
        Random seed, 0 to 2**32 - 3: the purchase-model fit uses ``seed``, Gamma-Gamma
        ``seed + 1``, the predictions ``seed + 2``.
    prediction_draws : int
        Posterior draws used for the predictions, evenly thinned (0: all).
    format : {"csv", "parquet", "both"}
        Table file format(s).
    strict : bool
        Treat DataWarning, FitWarning and ConvergenceWarning as errors.
    quiet : bool
        No progress output on stderr (data and fit warnings still print).
    command : str, optional
        The command line recorded in ``model_summary`` (default: this call, written out).
    progress : Progress, optional
        Progress reporter (default: ``Progress(quiet, strict)``).

    Returns
    -------
    RunResult
        The report folder and the headline figures.

    Raises
    ------
    UserError
        Unusable option, input file or output location (the message names the flag).
    clvbayes.errors.DataError, clvbayes.errors.ModelError
        Data the models cannot use.
    """
    given = dict(locals())
    opts = SimpleNamespace(**{k: v for k, v in given.items() if k != "progress"})
    opts.group_by = list(group_by)
    opts.covariates = list(covariates)
    if command is None:  # this call, with the arguments that differ from the defaults
        defaults = {k: p.default for k, p in inspect.signature(run_report).parameters.items()}
        shown = [f"{k}={v!r}" for k, v in given.items()
                 if k not in ("command", "progress") and v != defaults[k]]  # fmt: skip
        opts.command = f"clvbayes.pipeline.run_report({', '.join(shown)})"
    progress = progress or Progress(quiet, strict=strict)
    from clvbayes.report import output_lock

    out_dir = Path(output)
    with progress.step("checking options and input"):
        loaded_priors = check_run(opts)
    with ExitStack() as stack:
        try:  # one writer per report folder, from the first check to the published report
            stack.enter_context(output_lock(out_dir))
        except OSError as err:  # ReportBusy, or a lock file that cannot be created
            raise UserError(str(err)) from err
        return _job(opts, progress, out_dir, loaded_priors)


# ---------------------------------------------------------------------------------------
# the steps


def _read_input(args: Options) -> tuple[pd.DataFrame, dict[str, Any]]:
    from clvbayes.data import read_transactions
    from clvbayes.report import file_provenance

    if getattr(args, "demo", None) == "donations":
        from clvbayes.datasets import load_donations_transactions

        with as_file(_bundled_file("donations")) as p:
            prov = {"source": "bundled donations data (Fader, Hardie & Shang 2010), as the "
                    "transaction log load_donations_transactions() builds from the published "
                    "summary in this file", **file_provenance(p)}  # fmt: skip
        return load_donations_transactions(), prov
    if args.path is None:
        from clvbayes.datasets import load_cdnow_transactions

        with as_file(_bundled_file()) as p:
            prov = {"source": "bundled CDNOW sample (Fader, Hardie & Lee 2005)",
                    **file_provenance(p)}  # fmt: skip
        return load_cdnow_transactions(), prov
    path = Path(args.path)
    opts = _csv_options(args)
    try:
        tx = read_transactions(path, customer_id_col=args.customer_id_col, **opts)
    except DataError:
        raise
    except UnicodeDecodeError as err:
        raise UserError(
            f"cannot read {path} as text in {opts.get('encoding', 'utf-8')} ({err.reason}). "
            "Pass the file's encoding, e.g. --encoding latin-1 or --encoding cp1252."
        ) from err
    except (ValueError, OSError, ImportError, EOFError) as err:
        # pandas/pyarrow parse errors (ValueError subclasses), unreadable files
        raise UserError(f"cannot read {path} as a table: {err}") from err
    prov = {"source": "file", **(file_provenance(path) if path.is_file() else {"path": str(path)})}
    if opts:
        prov["csv_options"] = opts
    return tx, prov


def _summarise(tx: pd.DataFrame, args: Options, grid: TimeGrid) -> pd.DataFrame:
    from clvbayes.data import calibration_holdout_split, summarize_transactions

    cal, obs = _ends(args)
    if getattr(args, "duplicate_rows", None) is None:
        # the bundled sample's exact duplicates are real purchases (load_cdnow_transactions)
        args.duplicate_rows = "keep" if _is_cdnow(args) else "warn"
    if grid.discrete:
        from clvbayes.data.discrete import summarize_opportunities

        kw: dict[str, Any] = dict(
            customer_id_col=args.customer_id_col, datetime_col=args.date_col,
            datetime_format=args.date_format, duplicate_rows=args.duplicate_rows,
            outlying_dates=args.outlying_dates,
        )  # fmt: skip
        if args.amount_col in tx.columns:  # values for the spend model
            kw.update(monetary_value_col=args.amount_col, negative_amounts=args.negative_amounts)
        on = list(grid.grid) if isinstance(grid.grid, tuple) else grid.grid
        rfm = summarize_opportunities(tx, on, calibration_end=cal, observation_end=obs, **kw)
        if "monetary_value" in rfm.columns and "frequency_holdout" in rfm.columns:
            rfm = _holdout_values(tx, rfm, on, kw)
        if not (rfm["frequency"] > 0).any():
            raise DataError(
                f"None of the {len(rfm):,} customers made a repeat transaction at a later "
                f"opportunity of the calibration period ({grid.flag}), so the model cannot "
                "learn anything. Use a longer calibration period (--calibration-end), a finer "
                "grid or more data."
            )
        return rfm
    common: dict[str, Any] = dict(
        customer_id_col=args.customer_id_col,
        datetime_col=args.date_col,
        monetary_value_col=args.amount_col,
        time_unit=grid.unit,
        datetime_format=args.date_format,
        negative_amounts=args.negative_amounts,
    )
    common.update(duplicate_rows=args.duplicate_rows, outlying_dates=args.outlying_dates)
    if cal is not None:
        rfm = calibration_holdout_split(tx, cal, obs, **common)
    else:
        rfm = summarize_transactions(tx, observation_end=obs, **common)
    if not (rfm["frequency"] > 0).any():
        raise DataError(
            f"None of the {len(rfm):,} customers made a repeat purchase in the calibration "
            "period, so neither model can learn anything. Use a longer calibration period "
            "(--calibration-end) or more data."
        )
    return rfm


def _holdout_values(tx: pd.DataFrame, rfm: pd.DataFrame, grid, kw) -> pd.DataFrame:
    """Add the actual holdout values to a discrete-time summary with a holdout period.

    ``total_value_holdout``: the amounts of each customer's holdout transactions added up;
    ``monetary_value_holdout``: that per holdout opportunity with a transaction (0 if
    none), as ``monetary_value`` is per repeat opportunity.  The opportunity summary gives
    the calibration repeat value only, so the holdout value is the repeat value over the
    whole log (the same summary without the split, warnings already given by the first)
    minus the calibration one: every holdout opportunity comes after the customer's first.
    """
    import warnings

    from clvbayes.data.discrete import summarize_opportunities

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = summarize_opportunities(tx, grid, **kw).reindex(rfm.index)
    total = (whole["monetary_value"] * whole["frequency"]).to_numpy(float) - (
        rfm["monetary_value"] * rfm["frequency"]
    ).to_numpy(float)
    n = rfm["frequency_holdout"].to_numpy()
    total = np.where(n > 0, total, 0.0)
    attrs = dict(rfm.attrs)
    rfm = rfm.assign(monetary_value_holdout=total / np.maximum(n, 1), total_value_holdout=total)
    rfm.attrs = attrs
    return rfm


def _group_values(
    tx: pd.DataFrame, rfm: pd.DataFrame, args: Options, columns: list[str] | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each customer's value of the --group-by columns (or ``columns``): the one on its first
    transaction."""
    from clvbayes.report import RESERVED_NAMES

    cols = list(dict.fromkeys(args.group_by if columns is None else columns))
    missing = [c for c in cols if c not in tx.columns]
    if missing:
        raise DataError(
            f"--group-by column(s) {missing} not in the transactions; columns present: "
            f"{list(map(str, tx.columns))}."
        )
    clash = [c for c in cols if c in RESERVED_NAMES or c == args.customer_id_col]
    if clash:
        raise DataError(
            f"--group-by column(s) {clash} have the name of a report column; rename them in "
            "the input first."
        )
    dates = tx[args.date_col]
    if dates.dtype.kind in "iu":
        dates = dates.astype(str)
    try:  # the data layer has validated the dates already; this only orders them
        t = pd.to_datetime(dates, format=args.date_format, utc=True).to_numpy()
    except (ValueError, TypeError):
        t = np.arange(len(tx))  # file order
    order = pd.DataFrame({"id": tx[args.customer_id_col].to_numpy(), "t": t})
    order = order.sort_values(["id", "t"], kind="stable")
    first = order.drop_duplicates("id", keep="first").index.to_numpy()
    per_customer = tx[cols].iloc[first].set_axis(order.loc[first, "id"].to_numpy())
    out = per_customer.reindex(rfm.index)
    n_multi = {
        c: int((tx.groupby(args.customer_id_col, sort=False)[c].nunique(dropna=False) > 1).sum())
        for c in cols
    }
    return out, n_multi


def _backtest(tx, args: Options, grid: TimeGrid, groups, priors, progress) -> str:
    """The backtest of ``clvbayes run --backtest K``: its section of ``model_summary``."""
    from clvbayes.backtest import backtest_section, run_backtest

    _, obs = _ends(args)
    with progress.step(f"backtesting at {args.backtest} earlier calibration end(s)"):
        result = run_backtest(
            tx, n_windows=args.backtest, time_unit=grid.unit,
            observation_end=obs, customer_id_col=args.customer_id_col, date_col=args.date_col,
            amount_col=args.amount_col, date_format=args.date_format,
            negative_amounts=args.negative_amounts, duplicate_rows=args.duplicate_rows,
            outlying_dates=args.outlying_dates, by=groups[0] if groups else None,
            purchase_model=purchase_model_key(args), method=args.method, priors=priors,
            draws=args.draws, tune=args.tune, chains=args.chains, prob=args.prob,
            seed=args.seed, prediction_draws=args.prediction_draws or None,
        )  # fmt: skip
    return backtest_section(result)


def _join_attributes(rfm: pd.DataFrame, tx: pd.DataFrame, args: Options,
                     columns: list[str]) -> pd.DataFrame:  # fmt: skip
    """``rfm`` with each customer's attributes, from --covariates-file or the transactions."""
    if getattr(args, "covariates_file", None):
        values = getattr(args, "attribute_table", None)  # read and checked by check_input
        if values is None:
            values = read_customer_attributes(args, columns)
        keys = rfm.index.astype(str)
        missing = ~keys.isin(values.index)
        if missing.any():
            ids = list(rfm.index[missing][:5])
            raise DataError(
                f"{int(missing.sum()):,} of {len(rfm):,} customers have no row in "
                f"--covariates-file {args.covariates_file} (first ids {ids}); add them (an "
                "'unknown' level for a categorical attribute), or drop their transactions."
            )
        joined = values.reindex(keys).set_axis(rfm.index)
    else:
        joined, _ = _group_values(tx, rfm, args, columns)
    attrs = dict(rfm.attrs)
    out = rfm.join(joined[[c for c in columns if c not in rfm.columns]])
    out.attrs = attrs
    return out


def _holdout_check(rfm, bg, gg, common) -> dict[str, Any]:
    """Predicted vs actual purchases (and revenue, with a spend model) in the holdout period.

    On discrete opportunities the holdout is ``attrs["n_periods_holdout"]`` opportunities and
    the actual purchases are the holdout opportunities with a transaction.
    """
    from clvbayes.predict import score_customers

    discrete = "n_periods_holdout" in rfm.attrs
    duration = float(rfm.attrs["n_periods_holdout" if discrete else "holdout_duration"])
    observed = {"purchases": rfm["frequency_holdout"].to_numpy(float)}
    if gg is not None:
        observed["revenue"] = rfm["total_value_holdout"].to_numpy(float)
    # purchases and revenue only: no discounting, one period (the CLV columns are not used);
    # on opportunities, one period of one opportunity (the horizon is whole opportunities)
    settings = {k: v for k, v in common.items() if "discount_rate" not in k}
    settings.update(discount_rate=0.0, period=1.0 if discrete else duration, margin=1.0)
    scores = score_customers(rfm, bg, gg, horizon=duration, observed=observed, **settings)
    c, total = scores.customers, scores.segments["all"].iloc[0]
    out: dict[str, Any] = {
        "calibration_end": rfm.attrs.get("calibration_end"),
        "observation_end": rfm.attrs.get("observation_end"),
        "duration": duration,
        "time_unit": rfm.attrs.get("time_unit"),
        "interval_prob": common["prob"],
    }
    if discrete:
        out["note"] = (
            "calibration_end and observation_end are the last calibration and the last "
            "holdout opportunity; purchases count holdout opportunities with a transaction"
        )
    for q, actual in observed.items():
        lo, hi = total[f"{q}_total_pi_lower"], total[f"{q}_total_pi_upper"]
        out[q] = {
            "actual_total": float(actual.sum()),
            "predicted_total_mean": float(total[f"{q}_total_mean"]),
            "predicted_total_ci": [
                float(total[f"{q}_total_ci_lower"]),
                float(total[f"{q}_total_ci_upper"]),
            ],
            "predicted_total_pi": [float(lo), float(hi)],
            "actual_total_in_pi": bool(lo <= actual.sum() <= hi),
            "customer_pi_coverage": float(c[f"{q}_pi_covered"].mean()),
            "mean_pit": float(c[f"{q}_pit"].mean()),
            "mean_abs_error_per_customer": float(np.mean(np.abs(actual - c[f"{q}_mean"]))),
        }
    return out


def _fit_options(args: Options) -> dict[str, Any]:
    if args.method == "nuts":
        return dict(draws=args.draws, tune=args.tune, chains=args.chains,
                    progressbar=not args.quiet)  # fmt: skip
    if args.method == "laplace":
        return dict(draws=args.draws)
    return {}


#: Customers the warm-up scores: few enough that their intervals take numpy's quantiles
#: (the interval kernel, compiled here for the segment labels, is left out) and it reaches
#: the outcome kernels within a second.
WARM_UP_CUSTOMERS = 8


def warm_up_scoring(rfm: pd.DataFrame, bg, gg, horizon: float, common: dict[str, Any]) -> None:
    """Score a few customers and throw the result away: on a first run (numba's cache empty)
    this compiles the outcome kernels into the cache in a worker process while this one
    computes the segment labels, so that the predictions load them instead of compiling
    (:func:`clvbayes.nuts.submit`).  The same code path and argument types as the
    predictions, hence the same compiled signatures."""
    from clvbayes.predict import score_customers

    score_customers(rfm, bg, gg, horizon=horizon, **{**common, "progress": False})


def _job(args: Options, progress: Progress, out_dir: Path, priors: dict[str, Any]) -> RunResult:
    """The slow steps of :func:`run_report`, once the options, input and output are checked."""
    grid = run_grid(args)
    from clvbayes import kernel_cache

    notice = kernel_cache.first_run_notice()
    if notice:
        progress.say(f"clvbayes: {notice}")
    from clvbayes import nuts

    if args.method == "nuts":  # NUTS' worker processes start while the data are read
        nuts.start_workers(min(args.chains, os.cpu_count() or 1) - 1)
    elif notice and (os.cpu_count() or 1) > 1:  # one to compile kernels on the other core
        nuts.start_workers(1)
    with progress.step("reading transactions"):
        tx, source = _read_input(args)
    if grid.discrete:  # the value options need amounts (the file's header was checked)
        check_discrete_amounts(args, tx.columns, priors=priors)
    where = f" on the opportunity grid ({grid.flag})" if grid.discrete else ""
    with progress.step(f"summarising per customer{where}"):
        rfm = _summarise(tx, args, grid)
        groups = list(dict.fromkeys(args.group_by))
        n_multi = {}
        if groups:
            values, n_multi = _group_values(tx, rfm, args)
            attrs = dict(rfm.attrs)
            rfm = rfm.join(values)
            rfm.attrs = attrs  # the time unit and period ends travel in attrs
    attributes = customer_attribute_columns(args)
    if attributes:
        with progress.step("joining customer attributes (" + ", ".join(attributes) + ")"):
            rfm = _join_attributes(rfm, tx, args, attributes)
        segmented = {"covariates": list(args.covariates) or None, "pooled_by": args.pool_by}
        # segment totals by the pooling column and every non-numeric covariate
        groups += [c for c in attributes if c not in groups and (
            c == args.pool_by or not pd.api.types.is_numeric_dtype(rfm[c]))]  # fmt: skip
    else:
        segmented = {}
    backtest_md = _backtest(tx, args, grid, groups, priors, progress) if args.backtest else None
    n_rows = len(tx)
    del tx

    from clvbayes.models import GammaGammaModel
    from clvbayes.predict import score_customers
    from clvbayes.report import compare_purchase_models, customer_table, segment_table
    from clvbayes.segments import label_customers

    fit_kw = _fit_options(args)
    key = purchase_model_key(args)
    fitted = {}
    for k, cls in purchase_model_classes(key, grid.kind).items():
        with progress.step(
            f"fitting the {PURCHASE_MODELS.get(k, k)} purchase model ({args.method})"
        ):
            fitted[k] = cls(priors=priors.get(k), **segmented).fit(
                rfm, method=args.method, seed=args.seed, **fit_kw
            )
    # a spend model needs transaction values: a discrete-time log may have none
    gg = None
    if "monetary_value" in rfm.columns:
        with progress.step(f"fitting the Gamma-Gamma spend model ({args.method})"):
            gg = GammaGammaModel(priors=priors.get("gamma_gamma"), **segmented).fit(
                rfm, method=args.method, seed=args.seed + 1, **fit_kw
            )
    else:
        what = ("the bundled donations data have no transaction values"
                if getattr(args, "demo", None) == "donations" else
                f"the transactions have no amount column {args.amount_col!r} (--amount-col)")  # fmt: skip
        progress.say(
            f"clvbayes: no spend model: {what}, so the report gives P(alive), expected "
            "transactions and DERT, no CLV"
        )
    horizon = args.horizon or default_horizon(grid)
    common: dict[str, Any] = dict(margin=args.margin, prob=args.prob, seed=args.seed + 2,
                                  progress=not args.quiet,
                                  n_draws=args.prediction_draws or None)  # fmt: skip
    per_opportunity, discount_how = None, None
    if grid.discrete:
        per_opportunity, discount_how = discount_per_opportunity(args, grid)
        common["discount_rate"] = per_opportunity or 0.0
    elif args.discount_rate_per_period is not None:
        common["discount_rate"] = args.discount_rate_per_period
    else:
        common["annual_discount_rate"] = (
            DEFAULT_ANNUAL_DISCOUNT_RATE if args.discount_rate is None else args.discount_rate
        )
    warmed = None
    if notice and len(fitted) == 1:  # a first run: the worker compiles the outcome kernels
        from clvbayes.models.base import draws_only

        warmed = nuts.submit(warm_up_scoring, rfm.head(WARM_UP_CUSTOMERS),
                             draws_only(next(iter(fitted.values()))), draws_only(gg), horizon,
                             common)  # fmt: skip
    if args.method == "nuts":  # the fits are done: NUTS' worker prepares the report's plots
        from clvbayes.report.plots import prepare_plots_elsewhere

        prepare_plots_elsewhere()

    comparison = None
    if key == COMPARE:
        names = ", ".join(PURCHASE_MODELS.get(k, k) for k in fitted)
        what = "PSIS-LOO" + (", holdout" if "frequency_holdout" in rfm.columns else "")
        with progress.step(f"comparing the purchase models ({names}: {what})"):
            comparison = compare_purchase_models(
                rfm, fitted, prob=args.prob, seed=args.seed + 2, n_draws=common["n_draws"],
                names=PURCHASE_MODELS, average=True,
            )  # fmt: skip
        progress.say(
            f"clvbayes: the tables use {PURCHASE_MODELS.get(comparison.chosen)} "
            "(model_summary.md says why); the averaged_* columns, their stacking mixture ("
            + ", ".join(f"{PURCHASE_MODELS.get(k, k)} {w:.2f}"
                        for k, w in comparison.averaging["weights"].items())
            + ")"
        )  # fmt: skip
    chosen = comparison.chosen if comparison is not None else key
    bg = fitted[chosen]
    value = "clv_mean" if gg is not None else None
    with progress.step("segmenting customers"):
        # the labels need only expectations (P(alive), E[CLV]): no outcome simulation here
        quick = score_customers(rfm, bg, gg, horizon=horizon, outcomes=False,
                                **{**common, "progress": False})  # fmt: skip
        wanted = ["p_alive_mean", *([value] if value else [])]
        labels = label_customers(rfm.join(quick.customers[wanted]), clv_col=value)
    by = ["segment", *(["clv_decile"] if gg is not None else []), *groups]
    with progress.step("predicting every customer and segment totals"):
        if warmed is not None:  # compiling them here too would only share the cores
            warmed()
        keyed = rfm.assign(segment=labels["segment"])
        if gg is not None:
            keyed["clv_decile"] = labels["clv_decile"]
        scores = score_customers(keyed, bg, gg, horizon=horizon, by=by, **common)
        predictions = scores.customers
        if grid.discrete and per_opportunity:
            dert = _dert_table(rfm, bg, per_opportunity, args.prob, common["n_draws"])
            predictions = predictions.join(dert)
    seg_tables = scores.segments
    averaged = None
    if comparison is not None:
        with progress.step("model-averaged predictions (the stacking mixture of the models)"):
            averaged = score_customers(keyed, comparison.mixture, gg, horizon=horizon, by=by,
                                       **common)  # fmt: skip
            predictions, seg_tables = _with_averaged(predictions, seg_tables, averaged)
            quiet = {**common, "progress": False}
            totals = {k: (scores if k == chosen else
                          score_customers(rfm, m, gg, horizon=horizon, **quiet)).segments["all"]
                      .iloc[0] for k, m in fitted.items()}  # fmt: skip
    customers = customer_table(rfm, predictions, labels=labels, group_cols=groups, cac=args.cac)
    segments = segment_table(seg_tables, cac=args.cac)
    holdout = None
    averaged_holdout = None
    if "frequency_holdout" in rfm.columns:
        with progress.step("checking predictions against the holdout period"):
            holdout = _holdout_check(rfm, bg, gg, common)
            if comparison is not None:
                averaged_holdout = _holdout_check(rfm, comparison.mixture, gg, common)
    if comparison is not None:
        comparison = comparison.with_totals(
            totals, averaged.segments["all"].iloc[0], averaged_holdout
        )

    provenance = _provenance(args, source, rfm, gg, n_rows, n_multi, grid)
    settings = {
        **scores.settings,
        "by": by,
        "method": args.method,
        "purchase_model": chosen,
        "spend_model": "gamma_gamma" if gg is not None else None,
        "margin": args.margin if gg is not None else None,  # no CLV without a spend model
        "time_grid": grid.kind,
        "cac": args.cac,
        "currency": f"units of the {args.amount_col!r} column" if gg is not None else None,
        "priors_file": getattr(args, "priors", None),
        "priors_sha256": _sha256(args.priors) if getattr(args, "priors", None) else None,
        "duplicate_rows": getattr(args, "duplicate_rows", "warn"),
        "outlying_dates": getattr(args, "outlying_dates", "error"),
        "strict": bool(getattr(args, "strict", False)),
    }
    if grid.discrete:
        settings.update(
            _discrete_settings(args, grid, horizon, per_opportunity, discount_how, gg is not None)
        )
    if comparison is not None:
        settings["purchase_models_compared"] = list(fitted)
        settings["model_averaging"] = "stacking"
    models = {**fitted, **({"gamma_gamma": gg} if gg is not None else {})}
    _write(args, progress, out_dir, customers, segments, models, provenance, settings, holdout,
           comparison, backtest_md)  # fmt: skip
    total = scores.segments["all"].iloc[0]
    averaged_total = None
    if averaged is not None:
        averaged_total = {str(k): v for k, v in averaged.segments["all"].iloc[0].items()}
    return RunResult(
        path=out_dir, n_customers=len(customers), seconds=progress.total, horizon=horizon,
        time_unit=grid.unit, method=args.method, prob=args.prob, purchase_model=chosen,
        total={str(k): v for k, v in total.items()}, comparison=comparison,
        time_grid=grid.kind, spend_model=settings["spend_model"], averaged_total=averaged_total,
    )  # fmt: skip


def _with_averaged(predictions: pd.DataFrame, segments: dict[str, pd.DataFrame], averaged):
    """The chosen model's predictions and segment tables with the mixture's beside them.

    ``averaged`` is :func:`~clvbayes.predict.score_customers` of the stacking mixture on the
    same customers and groupings; its :data:`~clvbayes.report.schema.AVERAGED_QUANTITIES`
    columns join with the prefix :data:`~clvbayes.report.schema.AVERAGED_PREFIX`.
    """
    from clvbayes.report.schema import AVERAGED_PREFIX, AVERAGED_QUANTITIES

    cols = [c for c in averaged.customers.columns
            if any(c.startswith(f"{q}_") for q in AVERAGED_QUANTITIES)]  # fmt: skip
    extra = averaged.customers[cols].add_prefix(AVERAGED_PREFIX)
    merged = {}
    for g, df in segments.items():
        other = averaged.segments[g]
        if not other.index.equals(df.index):
            raise AssertionError(f"segments {g!r}: the mixture's groups differ from the model's")
        keep = [c for c in other.columns if "_total_" in c]
        merged[g] = pd.concat([df, other[keep].add_prefix(AVERAGED_PREFIX)], axis=1)
    return predictions.join(extra), merged


def _discrete_settings(
    args, grid: TimeGrid, horizon, per_opportunity, how, spend: bool
) -> dict[str, Any]:
    """The ``settings`` entries of a discrete-time run: the grid and what the rate is used for."""
    clv = "CLV undiscounted (clv_* = margin x revenue over the horizon); " if spend else ""
    if per_opportunity is None:
        use = f"nothing ({clv}no DERT): {how}"
    elif per_opportunity == 0:
        use = (f"nothing ({clv}no DERT: it sums over every future opportunity and needs a "
               "rate > 0)")  # fmt: skip
    elif spend:
        use = ("CLV (the clv_* columns: revenue at future opportunity t discounted by "
               "(1 + d)^-t) and DERT (the dert_* columns)")  # fmt: skip
    else:
        use = "DERT (the dert_* columns); no CLV without a spend model"
    annual = None
    if grid.per_year is not None and args.discount_rate_per_period is None:
        annual = DEFAULT_ANNUAL_DISCOUNT_RATE if args.discount_rate is None else args.discount_rate
    return {
        "opportunity_grid": grid.name,
        "opportunity_dates": list(grid.grid) if isinstance(grid.grid, tuple) else None,
        "opportunity_dates_file": grid.source,
        "opportunities_per_year": grid.per_year,
        "horizon_note": f"the next {horizon:g} opportunities after the last calibration one",
        "discount_rate_per_period": per_opportunity,
        "annual_discount_rate": annual,
        "discount_rate_conversion": how,
        "discount_rate_used_for": use,
        "p_alive_note": "P(active at the last calibration opportunity n = periods), before the "
        "dropout chance of the next opportunity (FHS 2010 eq. 11 is P(alive at n + 1))",
    }


def _dert_table(rfm, model, rate: float, prob: float, n_draws: int | None) -> pd.DataFrame:
    """BG/BB's DERT (FHS 2010 eq. 14) per customer: mean, sd and credible interval.

    Over the same evenly thinned posterior draws as the predictions (``n_draws``), ``rate``
    per opportunity.  DERT factors as ``P(active at n) x E[p | x, n] x R(n)`` where only the
    discounted survival sum ``R(n) = sum_t (1 + d)^-t B(gamma, delta + n + t) / B(gamma,
    delta + n)`` is costly (thousands of terms at a weekly grid's rate), and it depends on
    the history only through ``n``: it is taken from :func:`clvbayes.math.bgbb.dert` once per
    distinct ``n``, at the history ``x = t_x = n`` (active at ``n`` for sure, so DERT is
    ``E[p | n, n] R(n)`` there), and combined with each history's P(alive) and ``E[p]``.
    """
    from clvbayes.data import compress
    from clvbayes.predict import draw_stats, joint_draws

    math = model._math
    data = compress(rfm, columns=model.history_columns)
    d = joint_draws(model, None, n_draws)[0]
    alpha, beta, gamma, delta = (d[p] for p in ("alpha", "beta", "gamma", "delta"))
    x, t_x, n = (np.asarray(data[c], dtype=float) for c in model.history_columns)
    ns, which = np.unique(n, return_inverse=True)
    at_n = math.dert(alpha, beta, gamma, delta, ns, ns, ns, rate)  # (S, distinct n)
    survival_sum = at_n * (alpha + beta + ns) / (alpha + ns)  # R(n)
    p_alive = math.p_alive_at(alpha, beta, gamma, delta, x, t_x, n, 0)
    values = p_alive * (alpha + x) / (alpha + beta + n) * survival_sum[:, which.ravel()]
    stats = draw_stats(np.atleast_2d(values), prob)
    columns = {"mean": "dert_mean", "sd": "dert_sd", "lower": "dert_ci_lower",
               "upper": "dert_ci_upper"}  # fmt: skip
    return pd.DataFrame(
        {name: data.expand(np.asarray(stats[k], dtype=float)) for k, name in columns.items()},
        index=rfm.index,
    )


def _provenance(args, source, rfm, gg, n_rows, n_multi, grid: TimeGrid) -> dict[str, Any]:
    """The ``data`` entry of ``model_summary``: input, columns, periods, counts, exclusions."""
    a = rfm.attrs
    out = {
        "input": source,
        "columns": {
            "customer_id": args.customer_id_col,
            "date": args.date_col,
            "amount": args.amount_col if gg is not None else None,
        },
        "date_format": args.date_format,
        "time_unit": a.get("time_unit"),
        "calibration_end": a.get("calibration_end", a.get("observation_end")),
        "observation_end": a.get("observation_end"),
        "n_rows": n_rows,
        "n_transactions_after_same_day_merge": a.get("n_transactions_merged"),
        "n_customers": len(rfm),
        "n_repeat_customers": int((rfm["frequency"] > 0).sum()),
        "excluded": {
            "negative_amount_rows": a.get("n_negative_amount_rows"),
            "negative_amount_rows_dropped": a.get("n_negative_amount_rows_dropped"),
            "customers_dropped_negative_amounts": a.get("n_customers_dropped_negative_amounts"),
            "duplicate_rows": a.get("n_duplicate_rows"),
            "duplicate_rows_dropped": a.get("n_duplicate_rows_dropped"),
            "outlying_date_rows": a.get("n_outlying_date_rows"),
            "outlying_date_rows_dropped": a.get("n_outlying_date_rows_dropped"),
            "customers_first_seen_in_holdout": a.get("n_customers_first_seen_in_holdout", 0),
            "customers_not_in_spend_fit (frequency 0; still predicted)": (
                gg.fit_info_.get("n_customers_excluded") if gg is not None else None
            ),
        },
        "group_by": {c: {"customers_with_several_values": n} for c, n in n_multi.items()},
    }
    if grid.discrete:
        del out["n_transactions_after_same_day_merge"]
        out.update(
            opportunity_grid=grid.name,
            opportunity_labels="calibration_end and observation_end name the last calibration "
            "and the last observed opportunity",
            n_customer_opportunities_with_a_transaction=a.get("n_occasions"),
            n_transactions_merged_within_an_opportunity=a.get("n_transactions_merged"),
            n_customers_periods0=a.get("n_customers_periods0"),
        )
    return out


def _write(args, progress, out_dir, customers, segments, models, provenance, settings, holdout,
           comparison, backtest_md=None) -> None:  # fmt: skip
    """Write the report folder; a folder that cannot be written is a UserError."""
    from clvbayes.report import ReportWriteError, write_report

    with progress.step(f"writing the report to {out_dir}"):
        try:
            write_report(
                out_dir,
                customers,
                segments,
                models,
                provenance,
                fmt=args.format,
                settings=settings,
                holdout=holdout,
                extra={
                    **({"backtest": backtest_md} if backtest_md else {}),  # --backtest
                    "command": args.command,
                    "warnings": progress.warnings,
                    "timings_s": progress.timings,
                },
                protect=[args.path] if args.path is not None else [],
                comparison=comparison,
            )
        except OSError as err:
            if isinstance(err, ReportWriteError):  # its message says what and how to fix
                raise UserError(str(err)) from err
            raise UserError(f"cannot write the report to {out_dir}: {_os_message(err)}") from err
    progress.report_written = True


def _sha256(path: str) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _os_message(err: OSError) -> str:
    if err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return str(err)
