"""The options of ``clvbayes subscriptions``: defaults, bundled examples, checks, parser.

:func:`clvbayes.subscriptions_job.run_subscriptions` calls :func:`check_subscriptions` before
it reads the data in full, so a mistake costs seconds, not a fit: every option value, the
output location (the rules of :func:`clvbayes.run_options.check_output`) and the input
file's header (the named columns).  Each refusal is a :class:`~clvbayes.run_options.UserError`
naming the command-line flag, what is wrong and how to fix it.

Units: ``--horizon`` and ``--holdout-periods`` count periods of ``--period``;
``--discount-rate`` is per year and converted exactly to the grid by
:func:`annual_to_grid_rate`; ``--margin`` is a fraction of the price.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError
from clvbayes.run_options import MAX_POSTERIOR_DRAWS, MAX_SEED, UserError, check_output
from clvbayes.units import DAYS_PER_YEAR

__all__ = [
    "DEFAULT_METHOD",
    "DEMOS",
    "FIT_BY",
    "METHODS",
    "YEARS_PER_UNIT",
    "add_subscriptions_parser",
    "annual_to_grid_rate",
    "check_subscriptions",
]

#: Fit method of ``clvbayes subscriptions``: a Laplace posterior gives credible intervals and
#: LOO in seconds (``nuts`` for the full posterior, ``map`` for a point estimate).
DEFAULT_METHOD = "laplace"
METHODS = ("laplace", "nuts", "map")
DEFAULT_ANNUAL_DISCOUNT_RATE = 0.10
DEFAULT_OUTPUT = "clvbayes-subscriptions"
FIT_BY = ("none", "plan", "cohort")
MAX_HORIZON_YEARS = 100
DEFAULT_AT_RISK_TOP = 1000
#: Years per unit of the period grid: a calendar month is exactly 1/12 year.
YEARS_PER_UNIT = {"year": 1.0, "month": 1.0 / 12.0, "week": 7.0 / DAYS_PER_YEAR,
                  "day": 1.0 / DAYS_PER_YEAR}  # fmt: skip


#: The bundled examples (``--demo``): what they read and the settings they run with.
DEMOS: dict[str, dict[str, Any]] = {
    "fh2007": {
        "what": "Fader & Hardie (2007) High End and Regular cohorts, 1,000 customers each, "
        "years 0-12 (clvbayes.datasets.subscriptions.load_fh2007_survival); one pair of "
        "models per cohort; the holdout refits on years 1-7 and projects years 8-12, the "
        "paper's test",
        "options": {"survival": True, "period": "year", "period_col": "year",
                    "cohort_size": 1000, "fit_by": "cohort", "holdout_periods": 5},
    },
    "box": {
        "what": "a simulated monthly subscription box (three plans, 2023-2024) as a charge log "
        "(clvbayes.datasets.subscriptions.load_subscription_box_charges), grace period 7 days; "
        "one pair of models per plan; holdout of the last 6 months",
        "options": {"charges": True, "period": "month", "grace_days": 7,
                    "as_of": "2024-12-31", "amount_col": "amount", "plan_col": "plan",
                    "fit_by": "plan", "holdout_periods": 6},
    },
}  # fmt: skip


_INPUT_OPTIONS = ("charges", "survival", "grace_days", "as_of", "period", "customer_id_col",
                  "start_col", "end_col", "date_col", "amount_col", "price_col", "plan_col",
                  "cohort_col", "period_col", "cohort_size", "date_format", "sep", "encoding")  # fmt: skip


def annual_to_grid_rate(annual_rate: float, period: str) -> float:
    """An annual discount rate as the rate per period of the grid, exactly.

    ``(1 + annual_rate) ** years_per_period - 1``: a calendar month is 1/12 year, a year 1,
    a week 7/365.25 and a day 1/365.25 of a year (the Julian year of :mod:`clvbayes.units`);
    ``"3 months"`` is 3/12.  E.g. 10 % a year is 0.797 % a month.
    """
    from clvbayes.data.subscriptions import parse_period

    n, unit = parse_period(period)
    return float(np.expm1(np.log1p(annual_rate) * n * YEARS_PER_UNIT[unit]))


def _years_per_period(period: str) -> float:
    from clvbayes.data.subscriptions import parse_period

    n, unit = parse_period(period)
    return n * YEARS_PER_UNIT[unit]


# ---------------------------------------------------------------------------------------
# checks before the slow steps


def check_subscriptions(opts: SimpleNamespace, defaults: dict[str, Any]) -> None:
    """Every check before reading the data in full; fills in the demo's settings.

    ``opts`` holds the parameters of :func:`~clvbayes.subscriptions_job.run_subscriptions`
    and ``defaults`` their defaults (a demo refuses input options that differ from them).
    Raises :class:`UserError` naming the option.
    """
    from clvbayes.data.subscriptions import _shortest_days, parse_period

    if opts.demo is not None:
        if opts.demo not in DEMOS:
            raise UserError(f"--demo {opts.demo!r} is not a bundled example; use one of "
                            f"{', '.join(DEMOS)}.")  # fmt: skip
        if opts.path is not None:
            raise UserError(f"give either PATH or --demo {opts.demo}, not both.")
        clash = [k for k in _INPUT_OPTIONS if getattr(opts, k) != defaults[k]]
        if clash:
            flags = ", ".join("--" + k.replace("_", "-") for k in clash)
            raise UserError(
                f"{flags}: options for your own input file, but --demo {opts.demo} reads a bundled "
                "example with its own settings; drop them, or pass your file as PATH."
            )
        for k, v in DEMOS[opts.demo]["options"].items():
            if k in ("fit_by", "holdout_periods") and getattr(opts, k) is not None:
                continue  # the user's choice wins
            if k == "fit_by" and getattr(opts, "pool_by", None) is not None:
                continue  # pooling replaces the demo's separate fits
            setattr(opts, k, v)
    elif opts.path is None:
        raise UserError(
            "no input: give the subscriptions file as PATH (with --charges for a charge log, "
            f"--survival for cohort survival counts), or run a bundled example with --demo "
            f"{' or --demo '.join(DEMOS)}."
        )
    if opts.charges and opts.survival:
        raise UserError("--charges and --survival are two kinds of input: pass one of them.")
    opts.kind = "charges" if opts.charges else "survival" if opts.survival else "subscriptions"
    if opts.period is None:
        raise UserError(
            "--period is required: the renewal period of the subscriptions, e.g. --period month "
            "(calendar months), --period year, --period week or --period '3 months'. Horizons "
            "and holdouts are counted in it, and the discount rate is converted to it."
        )
    try:
        n, unit = parse_period(opts.period)
    except DataError as err:
        raise UserError(f"--period {opts.period!r}: {err}") from None
    opts.period = f"{n} {unit}"
    if opts.kind == "charges":
        if opts.grace_days is None:
            raise UserError(
                "--charges needs --grace-days N: the days a renewal charge may come before or "
                "after its due date before the subscriber counts as cancelled (e.g. "
                "--grace-days 7 for monthly billing). It is reported with the results."
            )
        if not 0 <= opts.grace_days or 2 * opts.grace_days >= _shortest_days(n, unit):
            raise UserError(
                f"--grace-days {opts.grace_days} must be from 0 to below half the shortest "
                f"{opts.period} period ({_shortest_days(n, unit)} days), so that a late renewal "
                "cannot be taken for the next one; e.g. --grace-days 7 for months."
            )
    elif opts.grace_days is not None:
        raise UserError("--grace-days applies to a charge log only: add --charges, or drop it.")
    if opts.kind == "survival":
        if opts.as_of is not None:
            raise UserError("--as-of does not apply to survival counts (their rows are periods "
                            "since acquisition); drop it.")  # fmt: skip
        if opts.cohort_size is not None and opts.cohort_size < 1:
            raise UserError(f"--cohort-size {opts.cohort_size} must be a whole number >= 1.")
    else:
        if opts.cohort_size is not None:
            raise UserError("--cohort-size applies to --survival input only; drop it.")
        if opts.as_of is None:
            raise UserError(
                "--as-of DATE is required: the day the data were extracted, when every "
                "subscription without an end (or charge log customer not yet overdue) was "
                "still active, e.g. --as-of 2024-12-31. It is never guessed from the data."
            )
        try:
            ts = pd.Timestamp(opts.as_of)
        except (TypeError, ValueError):
            ts = None
        if ts is None or ts is pd.NaT or ts.tzinfo is not None:
            raise UserError(f"--as-of {opts.as_of!r} is not a date; pass e.g. --as-of 2024-12-31.")
    pool_by = getattr(opts, "pool_by", None)
    if pool_by is not None and opts.fit_by not in (None, "none"):
        raise UserError(
            f"--fit-by {opts.fit_by} and --pool-by {pool_by}: --pool-by fits one partially "
            "pooled model across the groups instead of one model per group; drop --fit-by."
        )
    fit_by = opts.fit_by or ("cohort" if opts.kind == "survival" and pool_by is None else "none")
    if fit_by not in FIT_BY:
        raise UserError(f"--fit-by {fit_by!r}: use one of {', '.join(FIT_BY)}.")
    opts.fit_by = fit_by
    if fit_by == "plan" and opts.kind == "survival":
        raise UserError("--fit-by plan: survival counts have no plan; use --fit-by cohort.")
    if opts.method not in METHODS:
        raise UserError(f"--method {opts.method!r}: use one of {', '.join(METHODS)}.")
    for name in ("draws", "tune", "chains"):
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"--{name} {value!r} must be a whole number >= 1.")
    n_draws = opts.draws * (opts.chains if opts.method == "nuts" else 1)
    if opts.method != "map" and n_draws > MAX_POSTERIOR_DRAWS:
        raise UserError(f"--draws x --chains asks for {n_draws:,} posterior draws; at most "
                        f"{MAX_POSTERIOR_DRAWS:,} are kept.")  # fmt: skip
    if (
        isinstance(opts.seed, bool)
        or not isinstance(opts.seed, int)
        or not 0 <= opts.seed <= MAX_SEED
    ):
        raise UserError(f"--seed {opts.seed!r} must be a whole number from 0 to {MAX_SEED:,}.")
    if not 0 < opts.prob < 1:
        raise UserError(f"--prob {opts.prob!r} must be between 0 and 1 (e.g. 0.9).")
    _check_value_options(opts)
    if opts.at_risk_top < 0:
        raise UserError(f"--at-risk-top {opts.at_risk_top} must be 0 (every active subscriber) "
                        "or more.")  # fmt: skip
    if opts.holdout_periods is not None and opts.holdout_periods < 0:
        raise UserError(f"--holdout-periods {opts.holdout_periods} must be 0 (no holdout) or "
                        "more.")  # fmt: skip
    if opts.sep in ("\\t", "tab", "TAB"):
        opts.sep = "\t"
    check_output(Path(opts.output), opts.path)
    _check_input(opts)
    if pool_by is not None:
        opts.pool_by = opts.fit_by = _resolve_pool_by(opts, pool_by)
    else:
        opts.pool_by = None


def _resolve_pool_by(opts: SimpleNamespace, name: str) -> str:
    """``--pool-by``: ``cohort`` or ``plan`` (or the input column behind either)."""
    valid = {"cohort": "cohort"}
    where = {"cohort": "the acquisition cohort" + (
        f" (input column {opts.cohort_col!r})" if getattr(opts, "cohort_col", None)
        else ": the survival table's cohort columns" if opts.kind == "survival"
        else ": the start's calendar month, its year on a yearly grid")}  # fmt: skip
    if opts.kind == "subscriptions" and opts.cohort_col:
        valid[opts.cohort_col] = "cohort"
    if opts.kind != "survival" and opts.plan_col:
        valid["plan"] = valid[opts.plan_col] = "plan"
        where["plan"] = f"the plan (input column {opts.plan_col!r})"
    if name in valid:
        return valid[name]
    present = getattr(opts, "input_columns", None)
    listed = f" Columns of the input: {', '.join(map(repr, present))}." if present else ""
    hint = (" To pool by another column of a subscriptions table, name it with --cohort-col COL "
            "and pass --pool-by cohort." if opts.kind == "subscriptions" else "")  # fmt: skip
    raise UserError(
        f"--pool-by {name!r}: the subscribers have no such grouping column. Pool by one of: "
        + "; ".join(f"{k!r} ({w})" for k, w in where.items())
        + f".{listed}{hint}"
    )


def _check_value_options(opts: SimpleNamespace) -> None:
    """--horizon, --margin and the discount rates, in the units of the grid."""
    years = _years_per_period(opts.period)
    per_year = 1.0 / years
    if opts.horizon is None:
        opts.horizon = max(5, round(per_year))
    if isinstance(opts.horizon, bool) or not isinstance(opts.horizon, int) or opts.horizon < 1:
        raise UserError(f"--horizon {opts.horizon!r} must be a whole number of periods >= 1.")
    if opts.horizon * years > MAX_HORIZON_YEARS:
        raise UserError(
            f"--horizon {opts.horizon} periods of {opts.period} is {opts.horizon * years:,.0f} "
            f"years, beyond the {MAX_HORIZON_YEARS} years clvbayes forecasts; the horizon counts "
            f"periods of the grid (--period), e.g. --horizon {max(5, round(per_year))} for "
            "one year."
        )
    if not (math.isfinite(opts.margin) and opts.margin > 0):
        raise UserError(f"--margin {opts.margin!r} must be a positive fraction of the price.")
    if opts.margin > 1 and not opts.allow_margin_above_1:
        raise UserError(
            f"--margin {opts.margin:g} would multiply every price by {opts.margin:g}; the margin "
            f"is a fraction of the price between 0 and 1 (--margin {opts.margin / 100:g} for "
            f"{opts.margin:g} %). If a factor above 1 is meant, add --allow-margin-above-1."
        )
    if opts.discount_rate is not None and opts.discount_rate_per_period is not None:
        raise UserError("pass --discount-rate (annual) or --discount-rate-per-period, not both.")
    if opts.discount_rate_per_period is not None:
        d = opts.discount_rate_per_period
        if not (math.isfinite(d) and d >= 0):
            raise UserError(f"--discount-rate-per-period {d!r} must be a rate of 0 or more.")
        with np.errstate(over="ignore"):
            annual = float(np.expm1(np.log1p(d) * per_year))
        if annual > 1:
            raise UserError(
                f"--discount-rate-per-period {d:g} per {opts.period} compounds to more than 100 % "
                f"a year; 10 % a year is --discount-rate-per-period "
                f"{annual_to_grid_rate(0.10, opts.period):.4g}, or pass --discount-rate 0.10."
            )
        opts.rate_per_period, opts.annual_rate = float(d), annual
    else:
        annual = DEFAULT_ANNUAL_DISCOUNT_RATE if opts.discount_rate is None else opts.discount_rate
        if not (math.isfinite(annual) and 0 <= annual <= 1):
            raise UserError(
                f"--discount-rate {annual!r} is an annual rate as a fraction from 0 to 1 (0.10 = "
                "10 % a year); it is converted to the period grid exactly."
            )
        opts.rate_per_period, opts.annual_rate = annual_to_grid_rate(annual, opts.period), annual


def _input_columns(opts: SimpleNamespace, columns: list[str]) -> None:
    """The named columns are in the input; resolve the default price, amount and plan columns."""
    if opts.kind == "survival":
        if opts.period_col not in columns:
            raise UserError(
                f"Missing column {opts.period_col!r} (the periods 0, 1, ... since acquisition) in "
                f"{opts.path}; columns present: {', '.join(map(repr, columns))}. Pass "
                "--period-col COL."
            )
        opts.survival_columns = [c for c in columns if c != opts.period_col]
        if not opts.survival_columns:
            raise UserError(f"{opts.path} has no cohort column besides {opts.period_col!r}.")
        return
    if opts.kind == "charges":
        needed = {opts.customer_id_col: "--customer-id-col", opts.date_col: "--date-col"}
        optional = {"amount_col": ("amount", "--amount-col"), "plan_col": ("plan", "--plan-col")}
    else:
        needed = {opts.customer_id_col: "--customer-id-col", opts.start_col: "--start-col",
                  opts.end_col: "--end-col"}  # fmt: skip
        optional = {"price_col": ("price", "--price-col"), "plan_col": ("plan", "--plan-col"),
                    "cohort_col": (None, "--cohort-col")}  # fmt: skip
    for attr, (default, flag) in optional.items():
        value = getattr(opts, attr)
        if value is None:
            setattr(opts, attr, default if default in columns else None)
        else:
            needed[value] = flag
    missing = {c: f for c, f in needed.items() if c not in columns}
    if missing:
        what = "charge log" if opts.kind == "charges" else "subscriptions table"
        flags = ", ".join(f"{f} COL" for f in dict.fromkeys(missing.values()))
        raise UserError(
            f"Missing column(s) {', '.join(map(repr, missing))} in the {what} {opts.path}; "
            f"columns present: {', '.join(map(repr, columns))}. Rename your columns or pass "
            f"{flags} to name the column(s) that hold these values."
        )
    if opts.fit_by == "plan" and opts.plan_col is None:
        raise UserError(
            "--fit-by plan needs a plan column: the input has no 'plan' column; pass --plan-col COL."
        )


def _check_input(opts: SimpleNamespace) -> None:
    """The input exists, is readable and has the named columns (its header only)."""
    from clvbayes.run_options import _input_kind

    if opts.demo is not None:
        if opts.demo == "fh2007":
            opts.survival_columns = ["high_end", "regular"]
        return
    path = Path(opts.path)
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if not path.is_file():
        raise UserError(f"input path is not a file: {path}")
    kind = _input_kind(path)
    if kind is None:
        raise UserError(f"cannot read {path}: use a .csv, .csv.gz, .txt, .tsv or .parquet file.")
    if kind == "parquet":
        if opts.sep is not None or opts.encoding is not None:
            raise UserError(f"--sep and --encoding apply to CSV files; {path} is Parquet.")
        import pyarrow.parquet as pq

        try:
            columns = list(pq.read_schema(path).names)
        except Exception as err:  # pyarrow has its own error types
            raise UserError(f"cannot read {path} as a table (Parquet): {err}") from None
    else:
        try:
            header = pd.read_csv(path, nrows=0, **_csv_kwargs(opts, path))
        except UnicodeDecodeError as err:
            raise UserError(f"cannot read {path} as text ({err.reason}); pass its encoding, "
                            "e.g. --encoding latin-1.") from None  # fmt: skip
        except pd.errors.EmptyDataError:
            raise UserError(f"cannot read {path} as a table: it is empty.") from None
        except (ValueError, OSError, EOFError) as err:
            raise UserError(f"cannot read {path} as a table: {err}") from None
        columns = [str(c) for c in header.columns]
        if len(columns) == 1 and any(s in columns[0] for s in (";", "\t", "|")):
            sep = next(s for s in (";", "\t", "|") if s in columns[0])
            raise UserError(
                f"{path} has a single column {columns[0]!r}: the separator looks like "
                f"{sep!r}; pass --sep {sep!r}."
            )
    opts.input_format = kind
    opts.input_columns = columns
    _input_columns(opts, columns)


def _csv_kwargs(opts: SimpleNamespace, path: Path) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if opts.sep is not None:
        kw["sep"] = opts.sep
    elif path.name.lower().endswith(".tsv"):
        kw["sep"] = "\t"
    if opts.encoding is not None:
        kw["encoding"] = opts.encoding
    return kw


# ---------------------------------------------------------------------------------------
# the command line


def add_subscriptions_parser(sub: Any, formatter: Any) -> Any:
    """Add ``clvbayes subscriptions`` to the ``clvbayes`` parser's subcommands."""
    from clvbayes.cli import _checked, _finite_float, _folder, _positive_float, _probability

    count = _checked(int, "a whole number", lambda v: v >= 0, "must be 0 or more")
    positive = _checked(int, "a whole number", lambda v: v >= 1, "must be at least 1")
    seed = _checked(int, "a whole number", lambda v: 0 <= v <= MAX_SEED,
                    f"must be a whole number from 0 to {MAX_SEED:,}")  # fmt: skip
    p = sub.add_parser(
        "subscriptions",
        help="retention report for subscriptions (sBG and BdW, compared)",
        description="Subscriptions (or a charge log, or cohort survival counts) -> renewal "
        "histories on a period grid -> sBG and BdW fits, compared by PSIS-LOO and a holdout "
        "of the last periods -> per-subscriber churn risk, renewals, DERL and value, and "
        "cohort/plan survivors and renewal revenue per future period, with credible and "
        "predictive intervals -> report folder. Exit status: 0 success, 2 unusable input or "
        "option, 3 a bug (see the log it names), 4 out of memory, 130 interrupted.",
        formatter_class=formatter,
    )
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="subscriptions table, one row per subscription spell (id, start, end "
                   "empty while active; optional plan, price per period, cohort); with "
                   "--charges a charge log; with --survival cohort survival counts "
                   "(.csv[.gz] or .parquet)")  # fmt: skip
    p.add_argument("--demo", choices=tuple(DEMOS), default=None,
                   help="run a bundled example instead of PATH: fh2007 (Fader & Hardie 2007 "
                   "cohorts; the holdout projects years 8-12 from years 1-7) or box (a "
                   "simulated monthly subscription-box charge log)")  # fmt: skip
    g = p.add_argument_group("input")
    kinds = g.add_mutually_exclusive_group()
    kinds.add_argument("--charges", action="store_true",
                       help="PATH is a log of recurring charges (one row per charge); needs "
                       "--grace-days")  # fmt: skip
    kinds.add_argument("--survival", action="store_true",
                       help="PATH holds cohort survival: --period-col counts 0, 1, 2, ... and "
                       "every other column is a cohort's subscribers still active")  # fmt: skip
    g.add_argument("--grace-days", type=count, default=None,
                   help="charge log: days a renewal may come before or after its due date; "
                   "no charge by then = cancelled (reported with the results)")  # fmt: skip
    g.add_argument("--as-of", default=None, metavar="DATE",
                   help="observation date: subscriptions without an end are active on it "
                   "(required for a subscriptions table or charge log)")  # fmt: skip
    g.add_argument("--period", default=None,
                   help="renewal period grid: month, year, week, day or a multiple such as "
                   "'3 months' (calendar months and years); required for a file")  # fmt: skip
    g.add_argument("--customer-id-col", default="customer_id", help="id column")
    g.add_argument("--start-col", default="start", help="start date column (subscriptions table)")
    g.add_argument("--end-col", default="end", help="end date column, empty while active")
    g.add_argument("--date-col", default="date", help="charge date column (charge log)")
    g.add_argument("--amount-col", default=None,
                   help="charge amount column (charge log; default 'amount' if present): the "
                   "spell's mean charge is its price per period")  # fmt: skip
    g.add_argument("--price-col", default=None,
                   help="price per period column (default 'price' if present); without a "
                   "price, value and revenue are left out")  # fmt: skip
    g.add_argument("--plan-col", default=None, help="plan column (default 'plan' if present)")
    g.add_argument("--cohort-col", default=None,
                   help="cohort column (default: the start's calendar month; its year on a "
                   "yearly grid)")  # fmt: skip
    g.add_argument(
        "--period-col",
        default="period",
        help="survival input: the column counting periods since acquisition",
    )
    g.add_argument("--cohort-size", type=positive, default=None,
                   help="survival input: subscribers at period 0 when the columns are "
                   "percentages")  # fmt: skip
    g.add_argument(
        "--date-format",
        default=None,
        help="strftime format of the dates, e.g. %%Y-%%m-%%d (default: inferred)",
    )
    g.add_argument("--sep", default=None, help="CSV field separator (default ',')")
    g.add_argument("--encoding", default=None, help="CSV text encoding (default utf-8)")
    m = p.add_argument_group("models")
    m.add_argument("--fit-by", choices=FIT_BY, default=None,
                   help="fit one sBG and one BdW per plan or cohort (no pooling across them) "
                   "or one pair for everyone (none; default, cohort for --survival)")  # fmt: skip
    m.add_argument("--pool-by", default=None, metavar="COLUMN",
                   help="partial pooling: fit one sBG and one BdW across the groups of COLUMN "
                   "(cohort or plan) with a hierarchical prior on the groups' parameters, so a "
                   "small or young group borrows strength from the others; the report sets each "
                   "group's raw (fitted alone) against its pooled estimates (pooling.csv)")  # fmt: skip
    m.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="laplace: Gaussian approximation at the posterior mode, --draws "
                   "draws (credible intervals and LOO in seconds; default); nuts: full "
                   "posterior; map: posterior mode only (no credible intervals; the models "
                   "are then compared by a likelihood-ratio test)")  # fmt: skip
    m.add_argument("--draws", type=positive, default=1000,
                   help="NUTS draws per chain (laplace: number of draws)")  # fmt: skip
    m.add_argument("--tune", type=positive, default=1000, help="NUTS tuning steps per chain")
    m.add_argument("--chains", type=positive, default=4, help="NUTS chains")
    m.add_argument("--seed", type=seed, default=0, help="random seed (same seed, same report)")
    f = p.add_argument_group("forecast")
    f.add_argument("--horizon", type=positive, default=None,
                   help="due dates to forecast, in periods of --period (default one year of "
                   "periods, at least 5)")  # fmt: skip
    f.add_argument("--holdout-periods", type=count, default=None,
                   help="hold out the last N periods: both models are refitted on the data up "
                   "to then and their projected survivors compared with the actual ones (0: "
                   "none; default a quarter of the data's span, at most --horizon)")  # fmt: skip
    rates = f.add_mutually_exclusive_group()
    rates.add_argument("--discount-rate", type=_finite_float, default=None,
                       help="annual discount rate as a fraction (0.10 = 10 %% a year; default), "
                       "converted exactly to the period grid")  # fmt: skip
    rates.add_argument(
        "--discount-rate-per-period",
        type=_finite_float,
        default=None,
        help="discount rate per period of the grid instead",
    )
    f.add_argument(
        "--margin",
        type=_positive_float,
        default=1.0,
        help="share of the price kept, in (0, 1] (1 = revenue)",
    )
    f.add_argument(
        "--allow-margin-above-1",
        action="store_true",
        help="accept a --margin above 1 (a deliberate scale factor)",
    )
    f.add_argument(
        "--prob",
        type=_probability,
        default=0.9,
        help="probability of every interval (equal-tailed)",
    )
    f.add_argument(
        "--at-risk-top",
        type=count,
        default=DEFAULT_AT_RISK_TOP,
        help="rows of the at-risk list (0: every active subscriber)",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--output",
        "-o",
        type=_folder,
        default=DEFAULT_OUTPUT,
        help="report folder (replaced only if it holds a previous clvbayes report)",
    )
    o.add_argument("--format", choices=("csv", "parquet", "both"), default="both",
                   help="table file format(s)")  # fmt: skip
    o.add_argument("--strict", action="store_true", help="treat data and fit warnings as errors")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    o.add_argument(
        "--debug", action="store_true", help="on an unexpected error, show the traceback"
    )
    return p


#: Data-layer argument names as ``clvbayes subscriptions`` flags, in messages.
_FLAG_WORDS = (
    ("start_col=...", "--start-col COL"),
    ("end_col=...", "--end-col COL"),
    ("price_col=None", "no --price-col"),
    ("price_col=...", "--price-col COL"),
    ("plan_col=...", "--plan-col COL"),
    ("cohort_col=...", "--cohort-col COL"),
    ("date_col=...", "--date-col COL"),
    ("amount_col=...", "--amount-col COL"),
    ("period_col=...", "--period-col COL"),
    ("grace_days=", "--grace-days "),
    ("as_of=", "--as-of "),
    ("a later as_of", "a later --as-of"),
    ("cohort_size", "--cohort-size"),
)


def _words(message: str) -> str:
    for python, flag in _FLAG_WORDS:
        message = message.replace(python, flag)
    return message
