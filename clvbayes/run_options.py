"""The options of a ``clvbayes run``: their defaults, and every check made before the slow steps.

:func:`clvbayes.pipeline.run_report` (the job behind ``clvbayes run``) calls
:func:`check_run` first, so a mistake costs seconds, not a fit: option values that cannot be
meant (:func:`check_options`), the ``--priors`` file (:func:`load_priors`), the output location
(:func:`check_output`) and the input file's header (:func:`check_input`).  Each refusal is a
:class:`UserError` whose message names the command-line option (``--margin``; in Python the
parameter ``margin``), says what is wrong and how to fix it.

Units: ``horizon`` and ``discount_rate_per_period`` are in the ``time_unit`` of the run
(weeks or days); ``discount_rate`` is a fraction per year (365.25 days); ``margin`` a fraction
of revenue; money is in the currency of the amount column.

Discrete opportunities (``--opportunities``, :func:`run_grid`): the data are summarised on a
grid of purchase opportunities (:func:`clvbayes.data.discrete.summarize_opportunities`) and
fitted by a discrete-time purchase model (BG/BB).  Then ``horizon`` is a whole number of
opportunities, ``discount_rate_per_period`` is per opportunity, and an annual
``discount_rate`` is converted exactly for the calendar grids (:func:`discount_per_opportunity`;
an explicit list of opportunity dates has no fixed length in years, so it needs a rate per
opportunity).  Continuous-time models and ``--time-unit`` are refused there, as BG/BB is on
continuous time.  The spend model (Gamma-Gamma) is fitted when the transactions have the
amount column (``--amount-col``): then the report has CLV as in continuous time.  Without
it, the value options (``--margin``, ``--cac``, ``--negative-amounts`` and ``gamma_gamma``
priors) are refused (:func:`check_discrete_amounts`) rather than silently unused.
"""

from __future__ import annotations

import codecs
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clvbayes.units import DAYS_PER_YEAR, TIME_UNITS, annual_to_period_rate, period_to_annual_rate

if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace

    #: The options of a run as attributes named like the ``clvbayes run`` flags.
    Options = argparse.Namespace | SimpleNamespace

DEFAULT_HORIZON = {"weeks": 52.0, "days": 365.0}
DEFAULT_ANNUAL_DISCOUNT_RATE = 0.10
DEFAULT_PREDICTION_DRAWS = 1000
CDNOW_CALIBRATION_END = "1997-09-30"
CDNOW_OBSERVATION_END = "1998-06-30"
MAX_SEED = 2**32 - 3  # the seed + 2 used for predictions must stay a valid 32-bit seed
MIN_HORIZON_DAYS = 1.0
MAX_HORIZON_DAYS = 100 * DAYS_PER_YEAR
METHODS = ("nuts", "laplace", "map")
MAX_POSTERIOR_DRAWS = 1_000_000  # draws x chains
#: Continuous-time ``--purchase-model`` choices: the key (also the report's model key and file
#: name) and the name used in progress messages; see
#: :func:`clvbayes.models.protocols.purchase_models`.
CONTINUOUS_PURCHASE_MODELS = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}
#: Discrete-time ``--purchase-model`` choices (``--opportunities`` runs).
DISCRETE_PURCHASE_MODELS = {"bgbb": "BG/BB"}
#: Every ``--purchase-model`` choice but ``compare``.
PURCHASE_MODELS = {**CONTINUOUS_PURCHASE_MODELS, **DISCRETE_PURCHASE_MODELS}
#: The purchase model of a run without ``--purchase-model``, by time grid.
DEFAULT_PURCHASE_MODELS = {"continuous": "bgnbd", "discrete": "bgbb"}
DEFAULT_PURCHASE_MODEL = DEFAULT_PURCHASE_MODELS["continuous"]
DEFAULT_TIME_UNIT = "weeks"
#: ``--opportunities`` calendar grids: the data layer's grid name
#: (:data:`clvbayes.data.discrete.GRIDS`) and opportunities per year (weeks: of the
#: 365.25-day year, as :mod:`clvbayes.units` converts rates for ``--time-unit weeks``).
OPPORTUNITY_GRIDS: dict[str, tuple[str, float]] = {
    "yearly": ("year", 1.0),
    "quarterly": ("quarter", 4.0),
    "monthly": ("month", 12.0),
    "weekly": ("week", DAYS_PER_YEAR / 7.0),
}
#: The data layer's names are accepted too (``--opportunities year``).
_GRID_ALIASES = {data: name for name, (data, _) in OPPORTUNITY_GRIDS.items()}
#: Longest horizon on an explicit list of opportunity dates (they have no length in years).
MAX_HORIZON_OPPORTUNITIES = 10_000
#: ``--demo`` data sets: the bundled CDNOW sample (continuous time, with a holdout period)
#: and the donations data of the BG/BB paper (yearly opportunities, no transaction values).
DEMOS = ("cdnow", "donations")
#: ``--purchase-model compare``: fit every registered purchase model, report them side by side
#: and use the one :func:`clvbayes.report.comparison.choose_model` picks.
COMPARE = "compare"


class UserError(Exception):
    """A problem with the job's input, options or output location; exit 2, no traceback."""


class StrictWarningError(UserError):
    """A DataWarning, FitWarning or ConvergenceWarning raised under ``--strict``."""


def _fraction_text(percent: float) -> str:
    """``10`` -> ``"0.10"``, ``7.5`` -> ``"0.075"``: the fraction meant by a percentage."""
    value = percent / 100
    return f"{value:.2f}" if abs(round(value, 2) - value) < 1e-12 else f"{value:g}"


def check_run(args: Options) -> dict[str, dict[str, Any]]:
    """Every check made before the slow steps; returns the parsed priors (``{}`` without).

    In order: the option values (:func:`check_options`), the ``--priors`` file
    (:func:`load_priors`), the output location (:func:`check_output`) and the input file
    (:func:`check_input`, which reads its header, and any --covariates-file).  Raises :class:`UserError`.
    """
    check_options(args)
    grid = run_grid(args)
    priors = {}
    if getattr(args, "priors", None):
        priors = load_priors(args.priors, purchase_model_key(args), grid=grid.kind)
    check_output(Path(args.output), args.path)
    check_input(args, priors=priors)
    return priors


def check_options(args: Options) -> None:
    """Refuse option values that cannot be meant, before anything slow runs."""
    grid = run_grid(args)
    if grid.discrete:
        _check_discrete_options(args, grid)
    else:
        _check_value_options(args)
    _check_time_options(args)
    _check_input_options(args)
    _check_attribute_options(args)
    _check_fit_options(args)


# ---------------------------------------------------------------------------------------
# the time grid: continuous time or discrete opportunities


@dataclass(frozen=True)
class TimeGrid:
    """The time grid of a run (:func:`run_grid`).

    Attributes
    ----------
    kind : {"continuous", "discrete"}
    name : str
        Continuous: the time unit (``"weeks"``, ``"days"``).  Discrete: the
        ``--opportunities`` grid (``"yearly"``, ``"quarterly"``, ``"monthly"``,
        ``"weekly"``) or ``"explicit"`` for a list of opportunity dates.
    grid : str or tuple of str, optional
        Discrete: what :func:`clvbayes.data.discrete.summarize_opportunities` takes, the data
        layer's grid name (``"year"``, ...) or the opportunity start dates (ISO text).
    per_year : float, optional
        Opportunities per year of a calendar grid (None for explicit dates).
    flag : str
        How the command line chose the grid, for messages (``--opportunities yearly``).
    source : str, optional
        The file the opportunity dates were read from.
    """

    kind: str
    name: str
    grid: str | tuple[str, ...] | None = None
    per_year: float | None = None
    flag: str = ""
    source: str | None = None

    @property
    def discrete(self) -> bool:
        return self.kind == "discrete"

    @property
    def unit(self) -> str:
        """The time unit of the customer table: ``"opportunities"``, weeks or days."""
        return "opportunities" if self.discrete else self.name

    @property
    def one(self) -> str:
        """One time unit in words (``"week"``, ``"quarterly opportunity"``)."""
        if not self.discrete:
            return self.name[:-1]
        return "opportunity" if self.per_year is None else f"{self.name} opportunity"


def run_grid(args: Options) -> TimeGrid:
    """The run's time grid: ``--opportunities`` (or ``--demo donations``: yearly) or continuous
    time in ``--time-unit`` (default weeks).

    ``--opportunities`` takes a calendar grid (``yearly``, ``quarterly``, ``monthly``,
    ``weekly``; weeks run Monday to Sunday), a comma-separated list of opportunity start
    dates (``2020-03-01,2021-03-01,...``) or a text file with one date per line (blank lines
    and ``#`` comments skipped, a first line that is no date taken as a header).  Raises
    :class:`UserError` for a grid it cannot use, ``--time-unit`` with it, or a bad
    ``--demo`` combination.
    """
    text = getattr(args, "opportunities", None)
    demo = getattr(args, "demo", None)
    if demo is not None and args.path is not None:
        raise UserError(
            f"PATH {args.path} and --demo {demo} both name the data; pass your transactions "
            "file or a bundled data set (--demo), not both."
        )
    if demo == "donations":
        if text is not None and text.strip().lower() not in ("yearly", "year"):
            raise UserError(
                f"--demo donations has yearly opportunities (annual appeals 1996-2001), so "
                f"--opportunities {text} cannot apply; drop it (or pass --opportunities yearly)."
            )
        text = "yearly"
    if text is None:
        unit = getattr(args, "time_unit", None) or DEFAULT_TIME_UNIT
        return TimeGrid("continuous", unit, flag=f"--time-unit {unit}")
    flag = "--demo donations" if demo == "donations" else f"--opportunities {text}"
    if getattr(args, "time_unit", None) is not None:
        raise UserError(
            f"--time-unit {args.time_unit} and {flag} both set the time grid: --time-unit is for "
            "continuous time (recency and T in days or weeks), --opportunities for discrete "
            "purchase opportunities (recency and periods count opportunities). Drop one."
        )
    key = text.strip().lower()
    key = _GRID_ALIASES.get(key, key)
    if key in OPPORTUNITY_GRIDS:
        data_grid, per_year = OPPORTUNITY_GRIDS[key]
        return TimeGrid("discrete", key, data_grid, per_year, flag)
    dates, source = _opportunity_dates(text)
    return TimeGrid("discrete", "explicit", dates, None, flag, source)


def _opportunity_dates(text: str) -> tuple[tuple[str, ...], str | None]:
    """The dates of ``--opportunities`` as ISO text, from a file or a comma-separated list."""
    from clvbayes.data.discrete import _explicit_grid
    from clvbayes.errors import DataError

    names = ", ".join(OPPORTUNITY_GRIDS)
    path = Path(text)
    source = None
    if path.is_file():
        source = str(path)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"--opportunities {text}: cannot read the file ({err}).") from None
        items = [ln.split(",")[0].strip() for ln in lines]
        items = [v for v in items if v and not v.startswith("#")]
        if items and _as_date(items[0]) is None:
            items = items[1:]  # a header line
        where = f"--opportunities {text} (a file of dates)"
    else:
        items = [v.strip() for v in text.split(",") if v.strip()]
        where = f"--opportunities {text!r}"
        if len(items) == 1 and _as_date(items[0]) is None:
            looks_like_file = any(c in text for c in "/\\") or "." in text
            if looks_like_file:
                raise UserError(f"--opportunities {text}: file not found.")
            raise UserError(
                f"--opportunities {text!r} is neither a grid ({names}) nor a list of "
                "opportunity dates (e.g. --opportunities 2020-03-01,2021-03-01,2022-03-01) nor "
                "a file of dates (one per line)."
            )
    bad = [v for v in items if _as_date(v) is None]
    if bad:
        raise UserError(
            f"{where}: {', '.join(map(repr, bad[:3]))} "
            f"{'is not a date' if len(bad) == 1 else 'are not dates'}; write the opportunity "
            "start dates like 2020-03-01."
        )
    if len(items) < 2:
        raise UserError(
            f"{where} gives {len(items)} opportunity date(s); a discrete-time model needs at "
            "least two (the first transaction's opportunity and a later one)."
        )
    try:
        dates = _explicit_grid(items)
    except DataError as err:
        raise UserError(f"{where}: {err}") from None
    return tuple(str(d.date()) for d in dates), source


def _as_date(text: str) -> pd.Timestamp | None:
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if ts is pd.NaT else ts


def default_horizon(grid: TimeGrid) -> float | None:
    """One year: 52 weeks, 365 days, or the calendar grid's opportunities in a year (1, 4, 12,
    52); None for explicit opportunity dates (``--horizon`` is required there)."""
    if not grid.discrete:
        return DEFAULT_HORIZON[grid.name]
    return None if grid.per_year is None else float(math.floor(grid.per_year))


def discount_per_opportunity(args: Options, grid: TimeGrid) -> tuple[float | None, str]:
    """The discount rate per opportunity of a discrete-time run, and how it was obtained.

    ``--discount-rate-per-period`` as given; else the annual ``--discount-rate`` (default
    10 % a year) converted exactly on a calendar grid: ``(1 + r) ** (1 / k) - 1`` with
    ``k`` = 1, 4, 12 or 365.25 / 7 opportunities a year.  On explicit opportunity dates
    without ``--discount-rate-per-period``: ``None`` (no rate, so no DERT).
    """
    per = args.discount_rate_per_period
    if per is not None:
        return float(per), f"{per:g} per opportunity (--discount-rate-per-period)"
    if grid.per_year is None:
        return None, (
            "none: the opportunities are explicit dates, which have no fixed length in years, "
            "so pass a rate per opportunity with --discount-rate-per-period (needed for DERT)"
        )
    annual = DEFAULT_ANNUAL_DISCOUNT_RATE if args.discount_rate is None else args.discount_rate
    rate = float(np.expm1(np.log1p(annual) / grid.per_year))
    k = f"{grid.per_year:g}" if grid.per_year != DAYS_PER_YEAR / 7 else "(365.25 / 7)"
    how = "" if grid.per_year == 1 else f" = (1 + {annual:g})^(1/{k}) - 1"
    return rate, f"{100 * annual:g} % a year{how} = {rate:.6g} per {grid.one}"


def _check_discrete_options(args: Options, grid: TimeGrid) -> None:
    """--horizon, the discount rates and the value options of a discrete-time run."""
    if args.horizon is not None:
        h = args.horizon
        top = MAX_HORIZON_OPPORTUNITIES if grid.per_year is None else round(100 * grid.per_year)
        cap = "10,000 opportunities" if grid.per_year is None else f"100 years ({top:,})"
        if h != math.floor(h) or h < 1:
            raise UserError(
                f"--horizon {h:g} is not a whole number of opportunities: with {grid.flag} the "
                "horizon counts the next opportunities to predict (a whole number, at least 1), "
                f"e.g. --horizon {max(1, round(h)) if h >= 1 else 5} for the next "
                f"{max(1, round(h)) if h >= 1 else 5}."
            )
        if h > top:
            raise UserError(
                f"--horizon {h:g} opportunities is more than clvbayes predicts over on this grid "
                f"({grid.flag}): at most {cap}. Pass a shorter horizon."
            )
    elif grid.per_year is None:
        raise UserError(
            f"{grid.flag} lists the opportunity dates, so there is no default horizon of one "
            "year: pass --horizon, the number of future opportunities to predict (e.g. "
            "--horizon 5)."
        )
    _check_margin(args)  # the value options need amounts: check_discrete_amounts
    rate, per = args.discount_rate, args.discount_rate_per_period
    if rate is not None and grid.per_year is None:
        raise UserError(
            f"--discount-rate {rate:g} is an annual rate, but {grid.flag} lists the opportunity "
            "dates, which have no fixed length in years, so it cannot be converted to a rate "
            "per opportunity. Pass the rate per opportunity with --discount-rate-per-period "
            "(e.g. 0.1 when the opportunities are a year apart)."
        )
    if rate is not None:
        _check_annual_rate(rate)
    if per is not None:
        if per < 0:
            raise UserError(
                f"--discount-rate-per-period {per:g} is negative, which would make future "
                "transactions worth more than those today. Pass a rate per opportunity of 0 or "
                "more."
            )
        annual = per if grid.per_year is None else float(
            np.expm1(np.log1p(per) * grid.per_year) if per < 1e6 else np.inf
        )  # fmt: skip
        if annual > 1:
            what = (f"compounds to {100 * annual:,.0f} % a year" if np.isfinite(annual)
                    and annual < 1e6 else "compounds to more than 10^6 % a year")  # fmt: skip
            if grid.per_year is None:
                what = f"is {100 * per:,.0f} % per opportunity"
            example = ("" if grid.per_year is None else
                       f"; 10 % a year is --discount-rate-per-period "
                       f"{float(np.expm1(np.log1p(0.1) / grid.per_year)):.3g} per {grid.one}")  # fmt: skip
            raise UserError(
                f"--discount-rate-per-period {per:g} {what}. The rate is per opportunity and a "
                f"fraction{example}. Rates above 100 % a year (or per opportunity) are refused."
            )


def _check_annual_rate(rate: float) -> None:
    if rate < 0:
        raise UserError(
            f"--discount-rate {rate:g} is negative, which would make money in the future "
            "worth more than money today. Pass an annual rate from 0 to 1, e.g. "
            "--discount-rate 0.10 for 10 % a year (0 for no discounting)."
        )
    if rate > 1:
        raise UserError(
            f"--discount-rate {rate:g} reads as {100 * rate:,.0f} % a year: the rate is a "
            f"fraction, so pass --discount-rate {_fraction_text(rate)} for {rate:g} % a year. "
            "Rates above 1 (100 % a year) are refused."
        )


def _check_value_options(args: Options) -> None:
    """--margin, --discount-rate, --discount-rate-per-period and --horizon."""
    unit = getattr(args, "time_unit", None) or DEFAULT_TIME_UNIT
    per_day = TIME_UNITS[unit]
    one = unit[:-1]  # "week" / "day"
    if args.horizon is not None:
        days = args.horizon * per_day
        if not MIN_HORIZON_DAYS <= days <= MAX_HORIZON_DAYS:
            raise UserError(
                f"--horizon {args.horizon:g} ({unit}, the --time-unit) is outside the range "
                f"clvbayes predicts over: from one day ({MIN_HORIZON_DAYS / per_day:.4g} {unit}) "
                f"to 100 years ({MAX_HORIZON_DAYS / per_day:,.0f} {unit}). Pass the horizon in "
                f"{unit}, e.g. --horizon {DEFAULT_HORIZON[unit]:g} for one year."
            )
    _check_margin(args)
    rate = args.discount_rate
    if rate is not None:
        _check_annual_rate(rate)
    per = args.discount_rate_per_period
    if per is not None:
        if per < 0:
            raise UserError(
                f"--discount-rate-per-period {per:g} is negative, which would make money in the "
                f"future worth more than money today. Pass a rate per {one} of 0 or more, or an "
                "annual rate with --discount-rate 0.10 (10 % a year)."
            )
        annual = period_to_annual_rate(per, unit)
        if annual > 1:
            example = annual_to_period_rate(0.10, unit)
            raise UserError(
                f"--discount-rate-per-period {per:g} per {one} compounds to "
                f"{'more than 10^6' if not annual < 1e6 else f'{100 * annual:,.0f}'} % a year. "
                f"The rate is per {one} (--time-unit {unit}) and a fraction: 10 % a year is "
                f"--discount-rate-per-period {example:.3g}, or pass the annual rate with "
                "--discount-rate 0.10. Rates above 100 % a year are refused."
            )


def _check_margin(args: Options) -> None:
    if args.margin > 1 and not getattr(args, "allow_margin_above_1", False):
        hint = (
            f"pass --margin {_fraction_text(args.margin)} for a {args.margin:g} % margin"
            if args.margin <= 100
            else "pass the margin as a fraction, e.g. --margin 0.3 for 30 %"
        )
        raise UserError(
            f"--margin {args.margin:g} would multiply every customer's revenue by "
            f"{args.margin:g}; the margin is a fraction of revenue between 0 and 1, so {hint}. "
            "If a factor above 1 is what you mean (e.g. a currency conversion), add "
            "--allow-margin-above-1."
        )


def check_discrete_amounts(
    args: Options,
    columns: Sequence[str],
    *,
    priors: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> bool:
    """Whether a discrete-time run fits the spend model: the transactions have the amount
    column (``--amount-col``).

    Without it the run has no spend model (P(alive), expected transactions and DERT, no
    CLV), so the options that act on transaction values are refused (:class:`UserError`)
    rather than silently unused: ``--margin``, ``--cac``, ``--negative-amounts`` and
    ``gamma_gamma`` priors (``priors``, as :func:`load_priors` returns them).  ``columns``:
    the columns of the transactions (the file's header, or the table read); ``where``: the
    input in words, for the message.
    """
    columns = [str(c) for c in columns]
    if args.amount_col in columns:
        return True
    given = [f"--margin {args.margin:g}" if args.margin != 1.0 else None,
             f"--cac {args.cac:g}" if args.cac is not None else None,
             f"--negative-amounts {args.negative_amounts}"
             if args.negative_amounts != "error" else None,
             f"--priors {args.priors} (model 'gamma_gamma')"
             if "gamma_gamma" in (priors or {}) else None]  # fmt: skip
    given = [g for g in given if g is not None]
    if not given:
        return False
    grid = run_grid(args)
    if getattr(args, "demo", None) == "donations":
        what = "the bundled donations data have no transaction values"
        fix = f"Drop {_and(g.split()[0] for g in given)}."
    else:
        shown = ", ".join(map(repr, columns[:12])) + (", ..." if len(columns) > 12 else "")
        what = (f"{where or args.path} has no amount column {args.amount_col!r} (columns "
                f"present: {shown})")  # fmt: skip
        fix = (f"Name the column of transaction values with --amount-col COL, or drop "
               f"{_and(g.split()[0] for g in given)}.")  # fmt: skip
    verb = "applies" if len(given) == 1 else "apply"
    raise UserError(
        f"{_and(given)} {verb} to transaction values and CLV, but {what}, so this "
        f"discrete-time run ({grid.flag}) has no spend model: the report gives P(alive), "
        f"expected transactions and DERT only. {fix}"
    )


def _and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _check_time_options(args: Options) -> None:
    """--calibration-end, --observation-end (dates, in order) and --date-format."""
    if getattr(args, "demo", None) == "donations":
        given = [f for f, v in (("--calibration-end", args.calibration_end),
                                ("--observation-end", args.observation_end)) if v is not None]  # fmt: skip
        if given:
            raise UserError(
                f"{' and '.join(given)}: --demo donations is the published calibration summary "
                "(1995 cohort, appeals 1996-2001) written as a transaction log; which earlier "
                "years a donor gave in is not in it, so a holdout split would test made-up "
                "dates (and the paper's holdout years are not bundled). Drop the option."
            )
    cal_text, obs_text = _ends(args)  # with the bundled sample's defaults
    ends = {}
    for flag, value in (("--calibration-end", cal_text), ("--observation-end", obs_text)):
        if value is None:
            continue
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError):
            ts = None
        if ts is None or ts is pd.NaT:
            raise UserError(f"{flag} {value!r} is not a date; pass e.g. {flag} '1997-09-30'.")
        ends[flag] = ts
    if len(ends) == 2:
        cal, obs = ends["--calibration-end"], ends["--observation-end"]
        if (cal.tz is None) == (obs.tz is None) and not cal < obs:
            default = {"--calibration-end": args.calibration_end is None,
                       "--observation-end": args.observation_end is None}  # fmt: skip
            named = {f: f"{f} {v}" + (" (the bundled sample's default)" if default[f] else "")
                     for f, v in (("--calibration-end", cal_text),
                                  ("--observation-end", obs_text))}  # fmt: skip
            raise UserError(
                f"{named['--calibration-end']} is not before {named['--observation-end']}; the "
                "holdout period runs from the first to the second. Pass an earlier "
                "--calibration-end or a later --observation-end."
            )
    fmt = args.date_format
    if fmt is not None and "%" not in fmt:
        raise UserError(
            f"--date-format {fmt!r} has no %-directive, so no date could match it; pass a "
            "strftime format such as --date-format '%Y-%m-%d' or '%d/%m/%Y'."
        )


def _check_input_options(args: Options) -> None:
    """Column names, --sep, --encoding, the data layer's choices and --group-by."""
    columns = {"--customer-id-col": args.customer_id_col, "--date-col": args.date_col,
               "--amount-col": args.amount_col}  # fmt: skip
    if len(set(columns.values())) < len(columns):
        named = ", ".join(f"{flag} {col!r}" for flag, col in columns.items())
        raise UserError(
            f"{named}: the customer id, date and amount must be three different columns."
        )
    sep = getattr(args, "sep", None)
    if sep is not None:
        if sep in ("\\t", "tab", "TAB"):
            args.sep = sep = "\t"
        if sep == "":
            raise UserError("--sep '' is empty; pass the CSV field separator, e.g. --sep ';'.")
    encoding = getattr(args, "encoding", None)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise UserError(
                f"--encoding {encoding!r} is not an encoding Python knows; pass e.g. "
                "--encoding latin-1, --encoding cp1252 or --encoding utf-8-sig."
            ) from None
    if args.path is None:
        given = [f for f, v in (("--sep", sep), ("--encoding", encoding)) if v is not None]
        if given:
            bundled = ("the bundled donations data are used" if getattr(args, "demo", None)
                       == "donations" else "the bundled CDNOW sample is used")  # fmt: skip
            raise UserError(
                f"{' and '.join(given)} apply to your CSV file, but no PATH was given ({bundled}"
                "); pass the file, or drop the option."
            )
    from clvbayes.report import RESERVED_NAMES

    clash = [c for c in dict.fromkeys(args.group_by)
             if c in RESERVED_NAMES or c == args.customer_id_col]  # fmt: skip
    if clash:
        raise UserError(
            f"--group-by column(s) {clash} have the name of a report column; rename them in "
            "the input first."
        )


def customer_attribute_columns(args: Options) -> list[str]:
    """The --covariate and --pool-by columns, in order, without repeats."""
    pool = getattr(args, "pool_by", None)
    return list(
        dict.fromkeys([*(getattr(args, "covariates", None) or []), *([pool] if pool else [])])
    )


def _check_attribute_options(args: Options) -> None:
    """--covariate, --pool-by and --covariates-file name usable, distinct columns."""
    from clvbayes.report import RESERVED_NAMES

    covariates = list(getattr(args, "covariates", None) or [])
    pool = getattr(args, "pool_by", None)
    dup = sorted({c for c in covariates if covariates.count(c) > 1})
    if dup:
        raise UserError(f"--covariate {dup} given more than once; name each column once.")
    if pool is not None and pool in covariates:
        raise UserError(
            f"--pool-by {pool!r} is also a --covariate: a segment column is either a fixed "
            "covariate or pooled, not both; drop one."
        )
    columns = customer_attribute_columns(args)
    clash = [c for c in columns if c in RESERVED_NAMES or c in (
        args.customer_id_col, args.date_col, args.amount_col)]  # fmt: skip
    if clash:
        raise UserError(
            f"--covariate/--pool-by column(s) {clash} have the name of a report or input "
            "column; rename them in the input first."
        )
    if getattr(args, "covariates_file", None) and not columns:
        raise UserError(
            f"--covariates-file {args.covariates_file} is given, but no --covariate or "
            "--pool-by names a column of it to use; add them, or drop the file."
        )


def read_customer_attributes(args: Options, columns: list[str] | None = None) -> pd.DataFrame:
    """The --covariates-file table: one row per customer, indexed by the id as text.

    Raises :class:`UserError` when the file cannot be read, lacks the id column or a named
    column, or repeats an id.
    """
    path = Path(args.covariates_file)
    columns = customer_attribute_columns(args) if columns is None else columns
    if not path.is_file():
        raise UserError(f"--covariates-file {path}: no such file.")
    try:
        if _input_kind(path) == "parquet":
            table = pd.read_parquet(path)
        else:
            opts = {k: v for k, v in _csv_options(args).items() if k in ("sep", "encoding")}
            # ids as text, as the transactions are read (leading zeros kept)
            table = pd.read_csv(path, dtype={args.customer_id_col: str}, **opts)
    except UnicodeDecodeError as err:
        raise UserError(
            f"cannot read --covariates-file {path} as text ({err.reason}); pass --encoding."
        ) from None
    except (ValueError, OSError, ImportError, EOFError, pd.errors.EmptyDataError) as err:
        raise UserError(f"cannot read --covariates-file {path} as a table: {err}") from None
    present = [str(c) for c in table.columns]
    table.columns = present
    if args.customer_id_col not in present:
        raise UserError(
            f"--covariates-file {path} has no customer id column {args.customer_id_col!r} "
            f"(--customer-id-col); columns present: {present}."
        )
    missing = [c for c in columns if c not in present]
    if missing:
        usable = [c for c in present if c != args.customer_id_col]
        raise UserError(
            f"--covariate/--pool-by column(s) {missing} not in --covariates-file {path}; its "
            f"columns: {usable}."
        )
    ids = table[args.customer_id_col].astype(str)
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        raise UserError(
            f"--covariates-file {path} has {repeated.nunique():,} customer id(s) on more than "
            f"one row (first: {list(repeated.unique()[:5])}); it needs one row per customer."
        )
    return table.set_index(ids)[columns]


def _check_fit_options(args: Options) -> None:
    """--purchase-model can be used on the run's time grid (with compare: by PSIS-LOO, which
    needs posterior draws); draws x chains stay within what memory holds."""
    key = purchase_model_key(args)
    grid = run_grid(args)
    backtest = getattr(args, "backtest", 0) or 0
    if isinstance(backtest, bool) or not isinstance(backtest, int) or backtest < 0:
        raise UserError(f"--backtest {backtest!r}: pass a whole number of windows >= 1 (0: none).")
    if backtest and grid.discrete:
        raise UserError(
            f"--backtest runs in continuous time only; {grid.flag} makes this a discrete-time "
            "run. Drop --backtest, or run without the opportunity grid."
        )
    if backtest and args.path is None and getattr(args, "demo", None) == "donations":
        raise UserError(
            "--backtest needs a real transaction log; the bundled donations log is rebuilt from "
            "a published summary, so earlier calibration ends would test made-up dates."
        )
    if grid.discrete and key in CONTINUOUS_PURCHASE_MODELS:
        raise UserError(
            f"--purchase-model {key} ({PURCHASE_MODELS[key]}) is a continuous-time model, but "
            f"{grid.flag} makes this a discrete-time run (recency and periods count "
            "opportunities, not weeks or days). Use --purchase-model bgbb (BG/BB, the default "
            f"with --opportunities), or drop {grid.flag.split()[0]} for continuous time."
        )
    if not grid.discrete and key in DISCRETE_PURCHASE_MODELS:
        raise UserError(
            f"--purchase-model {key} ({PURCHASE_MODELS[key]}) models customers who can act only "
            "at discrete purchase opportunities, so it needs the opportunity grid: pass "
            f"--opportunities {'|'.join(OPPORTUNITY_GRIDS)} or a list of opportunity dates "
            "(e.g. --opportunities 2020-03-01,2021-03-01,2022-03-01), or run the bundled "
            "example with --demo donations."
        )
    usable = purchase_model_classes(key, grid.kind)
    if key == COMPARE and args.method == "map":
        raise UserError(
            "--purchase-model compare ranks the purchase models by PSIS-LOO, which needs "
            "posterior draws, but --method map gives a single point; use --method laplace "
            "(seconds) or --method nuts, or pick one model with --purchase-model "
            f"{' or '.join(usable)}."
        )
    if args.method in ("nuts", "laplace"):
        n = args.draws * (args.chains if args.method == "nuts" else 1)
        if n > MAX_POSTERIOR_DRAWS:
            what = f"--draws {args.draws:,}"
            if args.method == "nuts":
                what += f" x --chains {args.chains}"
            raise UserError(
                f"{what} asks for {n:,} posterior draws, more than any interval needs and than "
                f"clvbayes keeps in memory (at most {MAX_POSTERIOR_DRAWS:,}); the defaults "
                "(4 chains x 1,000 draws) give intervals accurate to about a percentile."
            )


def purchase_model_key(args: Options) -> str:
    """The ``--purchase-model`` value (a model key, or ``compare``); without one, the default of
    the run's time grid (:data:`DEFAULT_PURCHASE_MODELS`: BG/NBD, or BG/BB on opportunities)."""
    key = getattr(args, "purchase_model", None)
    return key or DEFAULT_PURCHASE_MODELS[run_grid(args).kind]


def purchase_model_classes(key: str, grid: str = "continuous") -> dict[str, type]:
    """The purchase model(s) a run on ``grid`` fits: ``{key: class}``, every usable one for
    ``compare``.

    Raises :class:`UserError` when the model cannot drive the predictions (it lacks the
    :class:`~clvbayes.models.protocols.PurchaseModel` methods), or when fewer than two can
    be compared.  On discrete opportunities clvbayes has one purchase model (BG/BB), so
    ``compare`` is refused there: nothing to compare.
    """
    from clvbayes.models.protocols import purchase_model_candidates

    if grid == "discrete":
        candidates = purchase_model_candidates("discrete")
        usable = {k: cls for k, (cls, why) in candidates.items() if why is None}
        if key == COMPARE:
            # compare_purchase_models ranks continuous-time models; with one discrete-time
            # model there is nothing to rank, so the choice is the user's, said plainly
            names = ", ".join(f"{DISCRETE_PURCHASE_MODELS.get(k, k)} ({k})" for k in candidates)
            raise UserError(
                "--purchase-model compare fits every purchase model of the run's time grid and "
                "compares them, but on discrete opportunities clvbayes has only one, "
                f"{names}: there is nothing to compare. Use --purchase-model bgbb (the default "
                "with --opportunities)."
            )
    else:
        candidates = purchase_model_candidates()
        usable = {k: cls for k, (cls, why) in candidates.items() if why is None}
    if key == COMPARE:
        if len(usable) < 2:
            why = "; ".join(f"{k}: {r}" for k, (_, r) in candidates.items() if r is not None)
            raise UserError(
                "--purchase-model compare needs at least two purchase models that can drive "
                f"the predictions, and only {', '.join(usable) or 'none'} can ({why}). Use "
                f"--purchase-model {' or '.join(usable) or DEFAULT_PURCHASE_MODEL}."
            )
        return usable
    cls, reason = candidates.get(key, (None, f"{key!r} is not a known purchase model"))
    if reason is not None:
        raise UserError(
            f"--purchase-model {key}: the {PURCHASE_MODELS.get(key, key)} model cannot be used for "
            f"the report yet ({reason}, which the predictions need). Use --purchase-model "
            f"{' or '.join(usable)}."
        )
    return {key: cls}


def load_priors(
    path_text: str, purchase_model: str = DEFAULT_PURCHASE_MODEL, *, grid: str = "continuous"
) -> dict[str, dict[str, Any]]:
    """Parse ``--priors FILE.json`` into ``{model: {parameter: Prior}}``, checking every name.

    The models are the purchase model(s) of the run (``purchase_model``: a model key, or
    ``compare`` for every usable one) and ``gamma_gamma``; the key of a model the run does
    not fit is refused (its priors would be silently unused).  On discrete opportunities
    (``grid``) the spend model is fitted only when the transactions have amounts, which
    :func:`check_discrete_amounts` checks once the columns are known.
    """
    from clvbayes.models import GammaGammaModel
    from clvbayes.models.priors import AVAILABLE_DISTRIBUTIONS, Prior

    classes = dict(purchase_model_classes(purchase_model, grid))
    classes["gamma_gamma"] = GammaGammaModel
    valid = "; ".join(f"{m!r} (parameters {', '.join(c.param_names)})" for m, c in classes.items())
    example = '{"gamma_gamma": {"q": {"dist": "Gamma", "alpha": 20, "beta": 5}}}'
    dists = ", ".join(AVAILABLE_DISTRIBUTIONS)
    where = f"--priors {path_text}"
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"{where}: file not found" + (" (it is a folder)" if path.exists() else "")
                        + f"; pass a JSON file such as {example}.")  # fmt: skip

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise UserError(f"{where}: key(s) {dup} appear twice in one object; keep one of each.")
        return dict(pairs)

    try:
        spec = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{where} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}. "
            f"Expected e.g. {example}."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {where}: {err}") from None
    if not isinstance(spec, dict):
        raise UserError(
            f"{where} must hold a JSON object such as {example}, not a {type(spec).__name__}."
        )
    out: dict[str, dict[str, Any]] = {}
    for model, params in spec.items():
        if grid == "discrete" and model in CONTINUOUS_PURCHASE_MODELS:
            raise UserError(
                f"{where}: model {model!r} is a continuous-time model, not fitted in a "
                f"discrete-time run (--purchase-model {purchase_model}); valid models: {valid}."
            )
        if model in PURCHASE_MODELS and model not in classes and purchase_model == COMPARE:
            raise UserError(
                f"{where}: model {model!r} is not fitted in this run: --purchase-model compare "
                f"fits only the models that can drive the predictions; valid models: {valid}."
            )
        if model in PURCHASE_MODELS and model not in classes:
            raise UserError(
                f"{where}: model {model!r} is not fitted in this run (--purchase-model "
                f"{purchase_model}): give its priors under {purchase_model!r}, or pass "
                f"--purchase-model {model}; valid models: {valid}."
            )
        if model not in classes:
            raise UserError(f"{where}: unknown model {model!r}; valid models: {valid}.")
        if not isinstance(params, dict):
            raise UserError(
                f"{where}: {model!r} must map parameter names to priors, e.g. {example}."
            )
        names = classes[model].param_names
        out[model] = {}
        for name, prior in params.items():
            label = f"{where}: {model}.{name}"
            if name not in names:
                raise UserError(
                    f"{where}: model {model!r} has no parameter {name!r}; valid parameters: "
                    f"{', '.join(names)}."
                )
            if not isinstance(prior, dict) or "dist" not in prior:
                raise UserError(
                    f'{label} must be an object with "dist" and its parameters, e.g. '
                    f'{{"dist": "HalfNormal", "sigma": 10}}; distributions: {dists}.'
                )
            for key, value in prior.items():
                if key == "dist":
                    if not isinstance(value, str):
                        raise UserError(f'{label}: "dist" must be a name, one of {dists}.')
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise UserError(f"{label}: parameter {key!r} must be a number, got {value!r}.")
            try:
                out[model][name] = Prior.from_dict(prior)
            except (ValueError, TypeError) as err:
                raise UserError(f"{label}: {err}") from None
    return out


def _input_kind(path: Path) -> str | None:
    """The input format, "csv" or "parquet"; None for a name the data layer refuses."""
    try:
        from clvbayes.data.rfm import _CSV_SUFFIXES, _PARQUET_SUFFIXES
    except ImportError:  # pragma: no cover - the data layer renamed them
        _CSV_SUFFIXES, _PARQUET_SUFFIXES = (".csv", ".txt", ".tsv"), (".parquet", ".pq")
    name = path.name.lower()
    if path.is_dir() or name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    return None


def _csv_options(args: Options) -> dict[str, Any]:
    return {k: v for k in ("sep", "encoding") if (v := getattr(args, k, None)) is not None}


#: Columns of the bundled transaction logs: ``--demo donations`` has no amounts.
DONATIONS_COLUMNS = ("customer_id", "date")
CDNOW_COLUMNS = ("customer_id", "date", "quantity", "amount")


def check_input(args: Options, *, priors: Mapping[str, Any] | None = None) -> None:
    """The input file exists, is readable and has the named columns (reads its header only).

    A ``--covariates-file`` is read whole and checked (:func:`read_customer_attributes`); the
    table is kept as ``args.attribute_table`` so the job does not read it again.

    On discrete opportunities the amount column is optional, but the value options need it
    (:func:`check_discrete_amounts`; ``priors`` as :func:`load_priors` returns them).
    """
    discrete = run_grid(args).discrete
    attributes = customer_attribute_columns(args)
    if getattr(args, "covariates_file", None):
        args.attribute_table = read_customer_attributes(args, attributes)
        attributes = []  # found in the file, not in the transactions
    if args.path is None:
        if attributes:
            raise UserError(
                f"--covariate/--pool-by column(s) {attributes} need customer attributes, which "
                "the bundled data do not have: pass --covariates-file with one row per customer."
            )
        if discrete:
            bundled = (
                DONATIONS_COLUMNS if getattr(args, "demo", None) == "donations" else CDNOW_COLUMNS
            )
            check_discrete_amounts(args, bundled, priors=priors)
        return
    path = Path(args.path)
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if not path.is_file() and not path.is_dir():
        raise UserError(f"input path is not a file: {path}")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise UserError(f"cannot read {path}: permission denied.")
    kind = _input_kind(path)
    given = [f"--{k}" for k in _csv_options(args)]
    if kind == "parquet" and given:
        raise UserError(
            f"{' and '.join(given)} apply to CSV files, but {path} is read as Parquet; drop "
            "the option."
        )
    if kind is None or path.is_dir():
        return  # the data layer names the supported formats / reads the dataset's schema
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            columns = list(pq.read_schema(path).names)
        except Exception as err:  # pyarrow raises its own error types for broken files
            raise UserError(f"cannot read {path} as a table (Parquet): {err}") from None
    else:
        if path.stat().st_size == 0:
            raise UserError(f"cannot read {path} as a table: the file is empty (0 bytes).")
        opts = _csv_options(args)
        if "sep" not in opts and path.name.lower().endswith(".tsv"):
            opts["sep"] = "\t"  # as the data layer reads .tsv files
        try:
            header = pd.read_csv(path, nrows=0, dtype=str, **opts)
        except UnicodeDecodeError as err:
            raise UserError(
                f"cannot read {path} as text in {opts.get('encoding', 'utf-8')} ({err.reason}). "
                f"Pass the file's encoding, e.g. --encoding latin-1 or "
                "--encoding cp1252."
            ) from None
        except pd.errors.EmptyDataError:
            raise UserError(f"cannot read {path} as a table: it has no header line.") from None
        except (ValueError, OSError, EOFError) as err:
            raise UserError(f"cannot read {path} as a table: {err}") from None
        columns = [str(c) for c in header.columns]
    needed = {
        args.customer_id_col: "--customer-id-col COL",
        args.date_col: "--date-col COL",
    }
    if not discrete:  # on discrete opportunities the amounts are optional
        needed[args.amount_col] = "--amount-col COL"
    missing = {c: flag for c, flag in needed.items() if c not in columns}
    if missing:
        hint = ""
        if kind == "csv" and len(columns) == 1:
            for sep, name in ((";", "';'"), ("\t", "'\\t'"), ("|", "'|'")):
                if sep in columns[0]:
                    hint = (f" The header has a single column {columns[0]!r}: the separator "
                            f"looks like {name}, so pass --sep {name}.")  # fmt: skip
                    break
        raise UserError(
            f"Missing column(s) {', '.join(map(repr, missing))} in {path}; columns present: "
            f"{', '.join(map(repr, columns))}. Rename your columns or pass "
            f"{', '.join(dict.fromkeys(missing.values()))} to name the column(s) that hold "
            f"these values.{hint}"
        )
    absent = [c for c in dict.fromkeys(args.group_by) if c not in columns]
    if absent:
        raise UserError(
            f"--group-by column(s) {absent} not in the transactions; columns present: {columns}."
        )
    absent = [c for c in attributes if c not in columns]
    if absent:
        raise UserError(
            f"--covariate/--pool-by column(s) {absent} not in the transactions; columns "
            f"present: {columns}. Pass --covariates-file for attributes kept in another file."
        )
    if discrete:
        check_discrete_amounts(args, columns, priors=priors, where=str(path))


def check_output(out_dir: Path, input_path: str | None = None) -> None:
    """Fail early (before the slow steps) when the report cannot or must not be written.

    The rules are :func:`clvbayes.report.replace_refusal`'s (only a folder holding nothing
    but a previous clvbayes report is replaced; never the current folder, a file, or a
    folder holding the input); here they run before reading anything.
    """
    from clvbayes.report import replace_refusal

    try:
        reason = replace_refusal(out_dir, [input_path] if input_path is not None else [])
    except OSError as err:  # OutputFolderRefused for names that are no folder
        reason = str(err)
    if reason:
        raise UserError(reason)
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write the report to {out_dir}: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the report to {out_dir}: permission denied on {parent}.")


def _bundled_file(demo: str | None = None) -> Any:
    name = "donations_calibration.csv" if demo == "donations" else "CDNOW_sample.txt"
    return files("clvbayes.datasets").joinpath("files", name)


def _is_cdnow(args: Options) -> bool:
    """The run is on the bundled CDNOW sample (no PATH, no other --demo)."""
    return args.path is None and getattr(args, "demo", None) in (None, "cdnow")


def _ends(args: Options) -> tuple[str | None, str | None]:
    if _is_cdnow(args):
        return (args.calibration_end or CDNOW_CALIBRATION_END,
                args.observation_end or CDNOW_OBSERVATION_END)  # fmt: skip
    return args.calibration_end, args.observation_end
