"""The ``clvbayes`` command: from a transaction file to a reporting-ready CLV report.

``clvbayes run [PATH]`` reads transactions (CSV or Parquet; without PATH the bundled CDNOW
sample), summarises them per customer, fits a purchase model (``--purchase-model``: BG/NBD by
default, MBG/NBD, or Pareto/NBD once it implements the prediction protocol) and the
Gamma-Gamma spend model, predicts every customer's next ``--horizon`` time units, segments the
customers and writes a report folder (see :mod:`clvbayes.report` for its files and schema).

Fitting methods (``--method``)
------------------------------
* ``nuts`` (default): the full posterior by NUTS; credible intervals carry parameter
  uncertainty.
* ``laplace``: a Gaussian approximation of the posterior at its mode (in the unconstrained
  space), 1,000 draws in the same structure as NUTS: real credible intervals in seconds.
* ``map``: the posterior mode, a point estimate.  Nothing that is a point is called an
  interval: the final line gives the *predictive* interval of total CLV and says that
  parameter uncertainty is not included.

Defaults
--------
* time unit: weeks; horizon: one year, i.e. 52 weeks (or 365 days with ``--time-unit days``);
* discounting: 10 % a year (``--discount-rate``, converted exactly to the time unit), or a
  rate per time unit with ``--discount-rate-per-period``;
* margin 1 (CLV in revenue terms; pass your profit margin, e.g. ``--margin 0.3``);
* purchase model: BG/NBD (``--purchase-model bgnbd``);
* 90 % intervals; seed 0 (the purchase-model fit uses seed, Gamma-Gamma seed + 1,
  predictions seed + 2);
* predictions from 1,000 evenly thinned posterior draws (``--prediction-draws``);
* calibration/observation end: for the bundled CDNOW sample 1997-09-30 / 1998-06-30 (39
  weeks each, as in Fader, Hardie & Lee 2005), so the report includes a holdout check;
  for your own file, no holdout and the last transaction date, unless you pass them.

The contract
------------
``clvbayes run`` exits 0 with a complete, validated report, or non-zero with a
one-paragraph message on stderr and no traceback, whatever the input:

====  =====================================================================================
exit  meaning
====  =====================================================================================
0     success: the report folder is complete
2     input, option or output location the command cannot use, or (``--strict``) a
      warning; the message says what to fix.  Bad option syntax also exits 2 (argparse).
3     unexpected error, i.e. a bug in clvbayes: the message names a log file (in the system
      temp folder) holding the traceback; ``--debug`` re-raises it instead
4     not enough memory (``MemoryError``); the message names the step and how to need less
130   interrupted (Ctrl-C); no report written
143   terminated (SIGTERM); no report written
====  =====================================================================================

* Every option is checked before the slow steps (reading, fitting), and so is the input
  file (exists, readable, has the named columns), so a mistake costs seconds, not a fit.
  Values that look like a unit slip are refused with the fix: ``--margin`` is a fraction
  of revenue in (0, 1] (``--margin 30`` is refused; ``--allow-margin-above-1`` accepts a
  deliberate factor above 1), an annual ``--discount-rate`` lies in [0, 1] (``10`` would
  be 1,000 % a year), the horizon lies between one day and 100 years.
* The only files written are the report folder (built in a hidden folder next to it and
  renamed into place; an existing folder is replaced only if it is a clvbayes report, see
  :func:`clvbayes.report.write_report`) and, after a crash, one ``clvbayes-crash-*.log``
  in the temp folder.  An input file inside the output folder is refused: replacing the
  folder would delete it.
* Warnings about suspicious but legal input (:class:`clvbayes.errors.DataWarning`) or a fit
  to be read with care (:class:`clvbayes.errors.FitWarning`, and the other clvbayes
  warnings) are printed on stderr and recorded in ``model_summary`` under ``"warnings"``;
  ``--strict`` turns DataWarning, FitWarning and the NUTS ConvergenceWarning (divergences,
  r_hat, ESS) into errors (exit 2).
"""

from __future__ import annotations

import argparse
import codecs
import errno
import json
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError, DataWarning, FitWarning, ModelError
from clvbayes.units import DAYS_PER_YEAR, TIME_UNITS, annual_to_period_rate, period_to_annual_rate

__all__ = ["build_parser", "main", "run"]

DEFAULT_HORIZON = {"weeks": 52.0, "days": 365.0}
DEFAULT_ANNUAL_DISCOUNT_RATE = 0.10
DEFAULT_PREDICTION_DRAWS = 1000
CDNOW_CALIBRATION_END = "1997-09-30"
CDNOW_OBSERVATION_END = "1998-06-30"
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_BUG = 3
EXIT_MEMORY = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
MAX_SEED = 2**32 - 3  # the seed + 2 used for predictions must stay a valid 32-bit seed
MIN_HORIZON_DAYS = 1.0
MAX_HORIZON_DAYS = 100 * DAYS_PER_YEAR
METHODS = ("nuts", "laplace", "map")
MAX_POSTERIOR_DRAWS = 1_000_000  # draws x chains
STRICT_CATEGORIES = (DataWarning, FitWarning)
PRIOR_MODELS = {"bgnbd": "BetaGeoModel", "gamma_gamma": "GammaGammaModel"}
#: ``--purchase-model`` choices: the key (also the report's model key and file name) and the
#: name used in progress messages; see :func:`clvbayes.models.protocols.purchase_models`.
PURCHASE_MODELS = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}
DEFAULT_PURCHASE_MODEL = "bgnbd"


class UserError(Exception):
    """A problem with the command's input, options or output location; exit 2, no traceback."""


class StrictWarningError(UserError):
    """A DataWarning, FitWarning or ConvergenceWarning raised under ``--strict``."""


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporary folders are cleaned up."""


# ---------------------------------------------------------------------------------------
# arguments


def _checked(convert, noun: str, ok, requirement: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text!r}")
        return value

    return parse


_finite_float = _checked(float, "a number", math.isfinite, "must be a finite number")
_positive_float = _checked(
    float, "a number", lambda v: math.isfinite(v) and v > 0, "must be a positive number"
)
_probability = _checked(
    float, "a number", lambda v: 0 < v < 1, "must be between 0 and 1 (e.g. 0.9)"
)
_positive_int = _checked(int, "a whole number", lambda v: v >= 1, "must be at least 1")
_count = _checked(int, "a whole number", lambda v: v >= 0, "must be 0 or more")
_seed = _checked(
    int, "a whole number", lambda v: 0 <= v <= MAX_SEED,
    f"must be a whole number from 0 to {MAX_SEED:,}",
)  # fmt: skip
_folder = _checked(
    str, "a folder", lambda v: v.strip() != "", "must name a folder (e.g. -o clvbayes-report)"
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one and the help text does not name it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, [], False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clvbayes`` command."""
    from clvbayes import __version__

    parser = argparse.ArgumentParser(
        prog="clvbayes",
        description="Bayesian customer-lifetime-value models (BG/NBD or MBG/NBD + Gamma-Gamma) "
        "with honest uncertainty intervals.",
    )
    parser.add_argument("--version", action="version", version=f"clvbayes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser(
        "run",
        help="fit, predict and write a report folder",
        description="Transactions -> RFM summary -> purchase model (--purchase-model) + "
        "Gamma-Gamma fit -> per-customer predictions and segments -> report folder (tables, "
        "data dictionary, model summary, plots, saved models). Without PATH it runs on the "
        "bundled CDNOW sample. Exit status: 0 success, 2 unusable input or option, 3 a bug "
        "(see the log it names), 4 out of memory, 130 interrupted.",
        formatter_class=_HelpFormatter,
    )
    run_p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="transactions file (.csv[.gz] or .parquet), one row per transaction; "
        "default: the bundled CDNOW sample",
    )
    g = run_p.add_argument_group("input")
    g.add_argument("--customer-id-col", default="customer_id", help="customer id column")
    g.add_argument("--date-col", default="date", help="transaction date column")
    g.add_argument("--amount-col", default="amount", help="transaction value column")
    g.add_argument("--date-format", default=None,
                   help="strftime format of the dates, e.g. %%Y%%m%%d (default: inferred)")  # fmt: skip
    g.add_argument("--sep", default=None,
                   help="CSV field separator, e.g. ';' ('\\t' or 'tab' for tabs; default ',')")  # fmt: skip
    g.add_argument("--encoding", default=None,
                   help="CSV text encoding, e.g. latin-1 or cp1252 (default utf-8)")  # fmt: skip
    g.add_argument("--negative-amounts", choices=("error", "drop", "keep"), default="error",
                   help="rows with negative amounts (returns): refuse, drop (counted in the "
                   "report), or add into the day's total")  # fmt: skip
    g.add_argument("--duplicate-rows", choices=("warn", "drop", "keep"), default=None,
                   help="exact duplicate rows (e.g. a double export): warn and keep them "
                   "(default), drop the copies (counted in the report), or keep them without a "
                   "warning (default for the bundled CDNOW sample, whose 21 duplicate rows are "
                   "genuine same-day purchases)")  # fmt: skip
    g.add_argument("--outlying-dates", choices=("error", "drop", "keep"), default="error",
                   help="rows dated far outside the bulk of the data (e.g. a mistyped year): "
                   "refuse, drop (counted in the report), or keep them as real")  # fmt: skip
    g.add_argument("--group-by", action="append", default=[], metavar="COL",
                   help="input column to total the predictions by (e.g. channel), taken per "
                   "customer from its first transaction; repeatable")  # fmt: skip
    t = run_p.add_argument_group("time")
    t.add_argument("--time-unit", choices=("weeks", "days"), default="weeks",
                   help="unit of recency, T, the horizon and the per-period discount rate")  # fmt: skip
    t.add_argument("--calibration-end", default=None,
                   help="last day of the calibration period; later transactions form a "
                   "holdout period that the report checks the predictions against "
                   f"(CDNOW sample: {CDNOW_CALIBRATION_END}; your file: none)")  # fmt: skip
    t.add_argument("--observation-end", default=None,
                   help="last day of observation (CDNOW sample: "
                   f"{CDNOW_OBSERVATION_END}; your file: the last transaction date)")  # fmt: skip
    t.add_argument("--horizon", type=_positive_float, default=None,
                   help="prediction horizon in time units, from one day to 100 years "
                   "(default one year: 52 weeks or 365 days)")  # fmt: skip
    v = run_p.add_argument_group("value")
    rates = v.add_mutually_exclusive_group()
    rates.add_argument("--discount-rate", type=_finite_float, default=None,
                       help="annual discount rate as a fraction from 0 to 1 (0.10 = 10 %% a "
                       "year), converted exactly to the time unit "
                       f"(default {DEFAULT_ANNUAL_DISCOUNT_RATE})")  # fmt: skip
    rates.add_argument("--discount-rate-per-period", type=_finite_float, default=None,
                       help="discount rate per time unit instead of an annual one, as a "
                       "fraction (at most 100 %% a year once compounded)")  # fmt: skip
    v.add_argument("--margin", type=_positive_float, default=1.0,
                   help="profit margin as a fraction of revenue, in (0, 1] (0.3 = 30 %%; "
                   "1 = CLV in revenue terms)")  # fmt: skip
    v.add_argument("--allow-margin-above-1", action="store_true",
                   help="accept a --margin above 1 (a deliberate scale factor such as a "
                   "currency conversion)")  # fmt: skip
    v.add_argument("--cac", type=_positive_float, default=None,
                   help="customer acquisition cost (currency): adds CLV-to-CAC ratios")  # fmt: skip
    v.add_argument("--prob", type=_probability, default=0.9,
                   help="probability of every interval (equal-tailed)")  # fmt: skip
    f = run_p.add_argument_group("fitting")
    f.add_argument("--purchase-model", choices=tuple(PURCHASE_MODELS),
                   default=DEFAULT_PURCHASE_MODEL,
                   help="purchase model: bgnbd (BG/NBD, Fader, Hardie & Lee 2005; default), "
                   "mbgnbd (MBG/NBD, Batislam et al. 2007: customers may drop out right after "
                   "their first purchase too) or pnbd (Pareto/NBD, Schmittlein et al. 1987); "
                   "the report names it (model key and file NAME.nc)")  # fmt: skip
    f.add_argument("--method", choices=METHODS, default="nuts",
                   help="nuts: full posterior by NUTS (credible intervals; slowest); "
                   "laplace: Gaussian approximation at the posterior mode, --draws draws "
                   "(real credible intervals in seconds); map: posterior mode only, a point "
                   "estimate (no credible intervals; the result gives the predictive "
                   "interval, which leaves out parameter uncertainty)")  # fmt: skip
    f.add_argument("--priors", default=None, metavar="FILE.json",
                   help='replace default priors, e.g. {"gamma_gamma": {"q": {"dist": '
                   '"Gamma", "alpha": 20, "beta": 5}}}; models: the --purchase-model key '
                   "(bgnbd or mbgnbd: r, alpha, a, b; pnbd: r, alpha, s, beta) and "
                   "gamma_gamma (p, q, gamma)")  # fmt: skip
    f.add_argument("--draws", type=_positive_int, default=1000,
                   help="NUTS draws per chain (laplace: number of draws)")  # fmt: skip
    f.add_argument("--tune", type=_positive_int, default=1000, help="NUTS tuning steps per chain")
    f.add_argument("--chains", type=_positive_int, default=4, help="NUTS chains")
    f.add_argument("--seed", type=_seed, default=0,
                   help="random seed, 0 or more (same seed, same report)")  # fmt: skip
    f.add_argument("--prediction-draws", type=_count, default=DEFAULT_PREDICTION_DRAWS,
                   help="posterior draws used for the predictions, evenly thinned (0 = all); "
                   "1000 give intervals accurate to about a percentile")  # fmt: skip
    o = run_p.add_argument_group("output")
    o.add_argument("--output", "-o", type=_folder, default="clvbayes-report",
                   help="report folder (replaced only if it holds a previous clvbayes "
                   "report)")  # fmt: skip
    o.add_argument("--format", choices=("csv", "parquet", "both"), default="both",
                   help="table file format(s)")  # fmt: skip
    o.add_argument("--strict", action="store_true",
                   help="treat data and fit warnings (DataWarning, FitWarning, "
                   "ConvergenceWarning) as errors")  # fmt: skip
    o.add_argument("--quiet", "-q", action="store_true",
                   help="no progress output (errors, data/fit warnings and "
                   "the one-line result still print)")  # fmt: skip
    o.add_argument("--debug", action="store_true",
                   help="on an unexpected error, show the traceback instead of the bug "
                   "message")  # fmt: skip
    return parser


# ---------------------------------------------------------------------------------------
# checks before the slow steps


def _fraction_text(percent: float) -> str:
    """``10`` -> ``"0.10"``, ``7.5`` -> ``"0.075"``: the fraction meant by a percentage."""
    value = percent / 100
    return f"{value:.2f}" if abs(round(value, 2) - value) < 1e-12 else f"{value:g}"


def _validate_options(args: argparse.Namespace) -> None:
    """Refuse option values that cannot be meant, before anything slow runs."""
    _check_value_options(args)
    _check_time_options(args)
    _check_input_options(args)
    _check_fit_options(args)


def _check_value_options(args: argparse.Namespace) -> None:
    """--margin, --discount-rate, --discount-rate-per-period and --horizon."""
    unit = args.time_unit
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
    rate = args.discount_rate
    if rate is not None:
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


def _check_time_options(args: argparse.Namespace) -> None:
    """--calibration-end, --observation-end (dates, in order) and --date-format."""
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


def _check_input_options(args: argparse.Namespace) -> None:
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
            raise UserError(
                f"{' and '.join(given)} apply to your CSV file, but no PATH was given (the "
                "bundled CDNOW sample is used); pass the file, or drop the option."
            )
    from clvbayes.report import RESERVED_NAMES

    clash = [c for c in dict.fromkeys(args.group_by)
             if c in RESERVED_NAMES or c == args.customer_id_col]  # fmt: skip
    if clash:
        raise UserError(
            f"--group-by column(s) {clash} have the name of a report column; rename them in "
            "the input first."
        )


def _check_fit_options(args: argparse.Namespace) -> None:
    """--purchase-model can be used; draws x chains stay within what memory holds."""
    _purchase_model_class(args)
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


def _purchase_model_key(args: argparse.Namespace) -> str:
    return getattr(args, "purchase_model", None) or DEFAULT_PURCHASE_MODEL


def _purchase_model_class(args: argparse.Namespace) -> type:
    """The class behind ``--purchase-model``; UserError when it cannot drive the predictions."""
    from clvbayes.models.protocols import purchase_model_candidates

    key = _purchase_model_key(args)
    candidates = purchase_model_candidates()
    cls, reason = candidates.get(key, (None, f"{key!r} is not a known purchase model"))
    if reason is not None:
        usable = [k for k, (_, why) in candidates.items() if why is None]
        raise UserError(
            f"--purchase-model {key}: the {PURCHASE_MODELS.get(key, key)} model cannot be used for "
            f"the report yet ({reason}, which the predictions need). Use --purchase-model "
            f"{' or '.join(usable)}."
        )
    return cls


def _load_priors(
    path_text: str, purchase_model: str = DEFAULT_PURCHASE_MODEL
) -> dict[str, dict[str, Any]]:
    """Parse ``--priors FILE.json`` into ``{model: {parameter: Prior}}``, checking every name.

    The models are ``purchase_model`` (the ``--purchase-model`` key) and ``gamma_gamma``; the
    key of another purchase model is refused (it would not be fitted).
    """
    from clvbayes.models import GammaGammaModel
    from clvbayes.models.priors import AVAILABLE_DISTRIBUTIONS, Prior
    from clvbayes.models.protocols import purchase_model_candidates

    candidates = purchase_model_candidates()
    purchase_cls = candidates[purchase_model][0]
    classes = {purchase_model: purchase_cls, "gamma_gamma": GammaGammaModel}
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


def _csv_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k in ("sep", "encoding") if (v := getattr(args, k, None)) is not None}


def _check_input(args: argparse.Namespace) -> None:
    """The input file exists, is readable and has the named columns (reads its header only)."""
    if args.path is None:
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
        args.amount_col: "--amount-col COL",
    }
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


def _check_output(out_dir: Path, input_path: str | None = None) -> None:
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


# ---------------------------------------------------------------------------------------
# progress and warnings


def _is_contract_warning(category: type[Warning]) -> bool:
    """DataWarning and FitWarning (ConvergenceWarning included): what --strict escalates."""
    return issubclass(category, STRICT_CATEGORIES)


def _is_clvbayes_warning(w: warnings.WarningMessage) -> bool:
    """DataWarning/FitWarning wherever raised, other UserWarnings raised by clvbayes code."""
    if issubclass(w.category, STRICT_CATEGORIES):
        return True
    if not issubclass(w.category, UserWarning):
        return False
    return str(w.category.__module__).startswith("clvbayes") or "clvbayes" in str(w.filename)


class _Progress:
    """Step names with timings on stderr; collects clvbayes warnings for the report.

    With ``strict``, a DataWarning, FitWarning or ConvergenceWarning ends the step with
    :class:`StrictWarningError` (exit 2) once the step is done.
    """

    def __init__(self, quiet: bool, strict: bool = False) -> None:
        self.quiet = quiet
        self.strict = strict
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.current: str | None = None
        self._t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"clvbayes: {name} ...")
        self.current = name
        t0 = time.perf_counter()
        escalate: list[str] = []
        failed = True
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
            failed = False
        finally:
            seen = set(self.warnings)
            for w in caught:
                if not _is_clvbayes_warning(w):
                    continue
                text = f"{w.category.__name__}: {_cli_words(str(w.message))}"
                if text in seen:
                    continue
                seen.add(text)
                self.warnings.append(text)
                contract = _is_contract_warning(w.category)
                if self.strict and contract:
                    escalate.append(text)
                elif contract or not self.quiet:  # data/fit warnings print even when --quiet
                    print(f"clvbayes: warning: {text}", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - t0
        self.timings[name] = round(elapsed, 3)
        if escalate and not failed:
            raise StrictWarningError(
                f"--strict turns warnings into errors, and {name} raised "
                f"{len(escalate)}: {' | '.join(escalate)} Fix the input, accept the warning "
                "with the option its message names, or run without --strict (the warning "
                'is then printed and recorded in model_summary.json under "warnings").'
            )
        self.current = None
        self.say(f"clvbayes: {name}: done in {elapsed:.1f} s")

    @property
    def total(self) -> float:
        return time.perf_counter() - self._t0


# ---------------------------------------------------------------------------------------
# the job


def _bundled_file() -> Any:
    return files("clvbayes.datasets").joinpath("files", "CDNOW_sample.txt")


def _read_input(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, Any]]:
    from clvbayes.data import read_transactions
    from clvbayes.report import file_provenance

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


def _ends(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.path is None:
        return (args.calibration_end or CDNOW_CALIBRATION_END,
                args.observation_end or CDNOW_OBSERVATION_END)  # fmt: skip
    return args.calibration_end, args.observation_end


def _summarise(tx: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    from clvbayes.data import calibration_holdout_split, summarize_transactions

    cal, obs = _ends(args)
    common: dict[str, Any] = dict(
        customer_id_col=args.customer_id_col,
        datetime_col=args.date_col,
        monetary_value_col=args.amount_col,
        time_unit=args.time_unit,
        datetime_format=args.date_format,
        negative_amounts=args.negative_amounts,
    )
    if getattr(args, "duplicate_rows", None) is None:
        # the bundled sample's exact duplicates are real purchases (load_cdnow_transactions)
        args.duplicate_rows = "keep" if args.path is None else "warn"
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


def _group_values(
    tx: pd.DataFrame, rfm: pd.DataFrame, args: argparse.Namespace
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each customer's value of the --group-by columns: the one on its first transaction."""
    from clvbayes.report import RESERVED_NAMES

    cols = list(dict.fromkeys(args.group_by))
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


def _holdout_check(rfm, bg, gg, args, common) -> dict[str, Any]:
    from clvbayes.predict import score_customers

    duration = float(rfm.attrs["holdout_duration"])
    observed = {"purchases": rfm["frequency_holdout"].to_numpy(float),
                "revenue": rfm["total_value_holdout"].to_numpy(float)}  # fmt: skip
    # purchases and revenue only: no discounting, one period (the CLV columns are not used)
    settings = {k: v for k, v in common.items() if "discount_rate" not in k}
    settings.update(discount_rate=0.0, period=duration, margin=1.0)
    scores = score_customers(rfm, bg, gg, horizon=duration, observed=observed, **settings)
    c, total = scores.customers, scores.segments["all"].iloc[0]
    out: dict[str, Any] = {
        "calibration_end": rfm.attrs.get("calibration_end"),
        "observation_end": rfm.attrs.get("observation_end"),
        "duration": duration,
        "time_unit": rfm.attrs.get("time_unit"),
        "interval_prob": common["prob"],
    }
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


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.method == "nuts":
        return dict(draws=args.draws, tune=args.tune, chains=args.chains,
                    progressbar=not args.quiet)  # fmt: skip
    if args.method == "laplace":
        return dict(draws=args.draws)
    return {}


def run(args: argparse.Namespace, progress: _Progress | None = None) -> Path:
    """Run the whole job for parsed ``clvbayes run`` arguments; returns the report folder.

    Raises :class:`UserError`, :class:`clvbayes.errors.DataError` or
    :class:`clvbayes.errors.ModelError` for input the job cannot use (``main`` turns them
    into exit status 2); anything else is a bug.
    """
    from clvbayes.report import output_lock

    progress = progress or _Progress(args.quiet, strict=getattr(args, "strict", False))
    out_dir = Path(args.output)
    priors: dict[str, dict[str, Any]] = {}
    with progress.step("checking options and input"):
        _validate_options(args)
        if getattr(args, "priors", None):
            priors = _load_priors(args.priors, _purchase_model_key(args))
        _check_output(out_dir, args.path)
        _check_input(args)
    with ExitStack() as stack:
        try:  # one writer per report folder, from the first check to the published report
            stack.enter_context(output_lock(out_dir))
        except OSError as err:  # ReportBusy, or a lock file that cannot be created
            raise UserError(str(err)) from err
        return _job(args, progress, out_dir, priors)


def _job(
    args: argparse.Namespace, progress: _Progress, out_dir: Path, priors: dict[str, Any]
) -> Path:
    """The slow steps of :func:`run`, once the options, input and output are checked."""
    with progress.step("reading transactions"):
        tx, source = _read_input(args)
    with progress.step("summarising per customer"):
        rfm = _summarise(tx, args)
        groups = list(dict.fromkeys(args.group_by))
        n_multi = {}
        if groups:
            values, n_multi = _group_values(tx, rfm, args)
            attrs = dict(rfm.attrs)
            rfm = rfm.join(values)
            rfm.attrs = attrs  # the time unit and period ends travel in attrs
    n_rows = len(tx)
    del tx

    from clvbayes.models import GammaGammaModel
    from clvbayes.predict import score_customers
    from clvbayes.report import customer_table, segment_table, write_report
    from clvbayes.segments import label_customers

    fit_kw = _fit_options(args)
    key = _purchase_model_key(args)
    purchase_cls = _purchase_model_class(args)
    with progress.step(f"fitting the {PURCHASE_MODELS[key]} purchase model ({args.method})"):
        bg = purchase_cls(priors=priors.get(key)).fit(
            rfm, method=args.method, seed=args.seed, **fit_kw
        )
    with progress.step(f"fitting the Gamma-Gamma spend model ({args.method})"):
        gg = GammaGammaModel(priors=priors.get("gamma_gamma")).fit(
            rfm, method=args.method, seed=args.seed + 1, **fit_kw
        )

    horizon = args.horizon or DEFAULT_HORIZON[args.time_unit]
    common: dict[str, Any] = dict(margin=args.margin, prob=args.prob, seed=args.seed + 2,
                                  progress=not args.quiet,
                                  n_draws=args.prediction_draws or None)  # fmt: skip
    if args.discount_rate_per_period is not None:
        common["discount_rate"] = args.discount_rate_per_period
    else:
        common["annual_discount_rate"] = (
            DEFAULT_ANNUAL_DISCOUNT_RATE if args.discount_rate is None else args.discount_rate
        )
    with progress.step("segmenting customers"):
        # the labels need only expectations (P(alive), E[CLV]): no outcome simulation here
        quick = score_customers(rfm, bg, gg, horizon=horizon, outcomes=False,
                                **{**common, "progress": False})  # fmt: skip
        labels = label_customers(rfm.join(quick.customers[["p_alive_mean", "clv_mean"]]))
    with progress.step("predicting every customer and segment totals"):
        keyed = rfm.assign(segment=labels["segment"], clv_decile=labels["clv_decile"])
        scores = score_customers(keyed, bg, gg, horizon=horizon,
                                 by=["segment", "clv_decile", *groups], **common)  # fmt: skip
        customers = customer_table(rfm, scores, labels=labels, group_cols=groups, cac=args.cac)
        segments = segment_table(scores.segments, cac=args.cac)
    holdout = None
    if "frequency_holdout" in rfm.columns:
        with progress.step("checking predictions against the holdout period"):
            holdout = _holdout_check(rfm, bg, gg, args, common)

    a = rfm.attrs
    provenance = {
        "input": source,
        "columns": {
            "customer_id": args.customer_id_col,
            "date": args.date_col,
            "amount": args.amount_col,
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
            "customers_not_in_spend_fit (frequency 0; still predicted)": gg.fit_info_.get(
                "n_customers_excluded"
            ),
        },
        "group_by": {c: {"customers_with_several_values": n} for c, n in n_multi.items()},
    }
    settings = {
        **scores.settings,
        "by": ["segment", "clv_decile", *groups],
        "method": args.method,
        "purchase_model": key,
        "cac": args.cac,
        "currency": f"units of the {args.amount_col!r} column",
        "priors_file": getattr(args, "priors", None),
        "priors_sha256": _sha256(args.priors) if getattr(args, "priors", None) else None,
        "duplicate_rows": getattr(args, "duplicate_rows", "warn"),
        "outlying_dates": getattr(args, "outlying_dates", "error"),
        "strict": bool(getattr(args, "strict", False)),
    }
    with progress.step(f"writing the report to {out_dir}"):
        try:
            command = "clvbayes " + shlex.join(getattr(args, "argv", ["run"]))
            write_report(
                out_dir,
                customers,
                segments,
                {key: bg, "gamma_gamma": gg},
                provenance,
                fmt=args.format,
                settings=settings,
                holdout=holdout,
                extra={
                    "command": command,
                    "warnings": progress.warnings,
                    "timings_s": progress.timings,
                },
                protect=[args.path] if args.path is not None else [],
            )
        except OSError as err:
            from clvbayes.report import ReportWriteError

            if isinstance(err, ReportWriteError):  # its message says what and how to fix
                raise UserError(str(err)) from err
            raise UserError(f"cannot write the report to {out_dir}: {_os_message(err)}") from err
    progress.report_written = True
    # the result line goes to stdout, also with --quiet (which silences progress only)
    line = _result_line(out_dir, len(customers), progress.total, horizon, args,
                        scores.segments["all"].iloc[0])  # fmt: skip
    try:
        print(line, flush=True)
    except BrokenPipeError:  # e.g. `clvbayes run | head -0`: the report is written all the same
        pass
    return out_dir


def _result_line(out_dir, n_customers, seconds, horizon, args, total) -> str:
    """The one-line result: a credible interval only where the fit gives one."""
    pct = f"{100 * args.prob:g} %"
    if args.method == "map":
        interval = (
            f"{pct} predictive interval {total['clv_total_pi_lower']:,.0f} to "
            f"{total['clv_total_pi_upper']:,.0f}; --method map is a point estimate: parameter "
            "uncertainty not included"
        )
    else:
        how = " (Laplace approximation)" if args.method == "laplace" else ""
        interval = (
            f"{pct} credible interval{how} {total['clv_total_ci_lower']:,.0f} to "
            f"{total['clv_total_ci_upper']:,.0f}"
        )
    return (
        f"clvbayes: report written to {out_dir} ({n_customers:,} customers, {seconds:.1f} s). "
        f"Total CLV over {horizon:g} {args.time_unit}: {total['clv_total_mean']:,.0f} "
        f"({interval})."
    )


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


# ---------------------------------------------------------------------------------------
# entry point

# The data layer's messages name Python arguments; on the command line they are flags.
_FLAG_WORDS = (
    ("customer_id_col=...", "--customer-id-col COL"),
    ("datetime_col=...", "--date-col COL"),
    ("monetary_value_col=...", "--amount-col COL"),
    ("datetime_format=", "--date-format "),
    ("datetime_format", "--date-format"),
    ("negative_amounts=", "--negative-amounts "),
    ("duplicate_rows=", "--duplicate-rows "),
    ("outlying_dates=", "--outlying-dates "),
    ("observation_end=", "--observation-end "),
    ("calibration_end=", "--calibration-end "),
)


_CHOICE_ARGUMENT = re.compile(
    r"\b(negative_amounts|duplicate_rows|outlying_dates|encoding)='([\w.-]+)'"
)
_SEP_ARGUMENT = re.compile(r"\bsep=('[^']*'|\.\.\.)")
_BARE_NAME = re.compile(r"(?<![\w'\"-])(calibration_end|observation_end)(?![\w'\"])")


def _cli_words(message: str) -> str:
    """The data layer's Python argument names (``duplicate_rows='drop'``) as CLI flags."""
    message = _CHOICE_ARGUMENT.sub(lambda m: f"--{m[1].replace('_', '-')} {m[2]}", message)
    message = _SEP_ARGUMENT.sub(lambda m: f"--sep {m[1]}", message)
    for python, flag in _FLAG_WORDS:
        message = message.replace(python, flag)
    return _BARE_NAME.sub(lambda m: "--" + m[1].replace("_", "-"), message)


def _error(text: str) -> None:
    print(f"clvbayes: error: {text}", file=sys.stderr, flush=True)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception while the job runs, so temporary folders are removed."""

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.signal(signal.SIGTERM, handler)
        except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _disk_full(err: BaseException) -> BaseException | None:
    """The 'no space left' error in ``err``'s chain, if any."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return e
        if "No space left on device" in str(e):
            return e
        e = e.__cause__ or e.__context__
    return None


def _write_crash_log(err: BaseException, argv: Sequence[str]) -> Path | None:
    """The traceback and the command in a new file in the temp folder (None if impossible)."""
    try:
        from clvbayes import __version__
    except Exception:  # pragma: no cover
        __version__ = "unknown"
    try:
        fd, name = tempfile.mkstemp(prefix="clvbayes-crash-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"clvbayes {__version__}, Python {sys.version.split()[0]}, {sys.platform}\n")
            fh.write(f"command: clvbayes {shlex.join(list(argv))}\n")
            fh.write(f"time (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}\n\n")
            traceback.print_exception(type(err), err, err.__traceback__, file=fh)
        return Path(name)
    except OSError:
        return None


def _report_state(progress: _Progress | None, out: str | None) -> str:
    if progress is not None and getattr(progress, "report_written", False):
        return f"the report in {out} was written completely before it"
    return "no report was written" + (
        f" and any earlier report in {out} is unchanged" if out is not None else ""
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clvbayes`` console script; returns the exit status.

    See the module docstring for the exit statuses.  ``--debug`` re-raises unexpected
    errors (and out-of-memory errors) with their traceback instead of the bug message.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    progress: _Progress | None = None
    out: str | None = None
    with _sigterm_raises():
        try:
            parser = build_parser()
            args = parser.parse_args(argv)  # exits with status 2 on bad arguments
            if args.command is None:
                parser.print_help(sys.stderr)
                return EXIT_USER_ERROR
            args.argv = argv
            debug, out = args.debug, args.output
            progress = _Progress(args.quiet, strict=args.strict)
            run(args, progress)
        except (UserError, DataError, ModelError) as err:
            _error(_cli_words(str(err)))
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print(f"clvbayes: interrupted; {_report_state(progress, out)}.", file=sys.stderr,
                  flush=True)  # fmt: skip
            return EXIT_INTERRUPTED
        except _Terminated:
            print(f"clvbayes: terminated (SIGTERM); {_report_state(progress, out)}.",
                  file=sys.stderr, flush=True)  # fmt: skip
            return EXIT_TERMINATED
        except MemoryError:
            if debug:
                raise
            step = progress.current if progress is not None and progress.current else "the job"
            _error(
                f"not enough memory while {step}; {_report_state(progress, out)}. Ask for less: "
                "fewer --prediction-draws (e.g. 200), a shorter --horizon, --method laplace or "
                "map instead of nuts, or a sample of the customers; or use a machine with more "
                "memory (clvbayes.distributed scores customers in partitions)."
            )
            return EXIT_MEMORY
        except Exception as err:
            if debug:
                raise
            full = _disk_full(err)
            if full is not None:
                _error(
                    f"no space left on the disk ({full}); {_report_state(progress, out)}. "
                    "Free some space or choose an --output on another disk."
                )
                return EXIT_USER_ERROR
            log = _write_crash_log(err, argv)
            where = (f"The full traceback is in {log}" if log is not None
                     else "No log could be written")  # fmt: skip
            summary = " ".join(f"{type(err).__name__}: {err}".split())
            if len(summary) > 400:
                summary = summary[:400] + " ..."
            _error(
                f"unexpected internal error ({summary}). This is a bug in clvbayes, not a "
                f"problem with your input or options; {_report_state(progress, out)}. {where}; "
                "run the same command with --debug to see it in the terminal, and please "
                "report it together with that log."
            )
            return EXIT_BUG
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
