"""The ``clvbayes`` command: from a transaction file to a reporting-ready CLV report.

``clvbayes run [PATH]`` reads transactions (CSV or Parquet; without PATH the bundled CDNOW
sample), summarises them per customer, fits a purchase model (``--purchase-model``: BG/NBD by
default, MBG/NBD or Pareto/NBD; ``compare`` fits them all and uses the best by PSIS-LOO) and
the Gamma-Gamma spend model, predicts every customer's next ``--horizon`` time units, segments
the customers and writes a report folder (see :mod:`clvbayes.report` for its files and
schema).

Discrete opportunities: with ``--opportunities`` (``yearly``, ``quarterly``, ``monthly``,
``weekly``, or the opportunity dates) the transactions are summarised on that grid and fitted
by BG/BB (``--purchase-model bgbb``, the default there); the horizon counts opportunities
(``--horizon 5``: the next five), the discount rate is per opportunity (an annual
``--discount-rate`` is converted exactly on the calendar grids; explicit dates need
``--discount-rate-per-period``).  With an amount column (``--amount-col``) Gamma-Gamma is
fitted on the value of each repeat opportunity (its amounts added up) and the report has CLV;
without one (e.g. the donations demo) there is no spend model: the report gives P(alive),
expected transactions and DERT, and ``--margin``, ``--cac`` and ``--negative-amounts`` are
refused.  ``--purchase-model compare`` is refused there (one discrete-time model, nothing to
compare); continuous-time models and ``--time-unit`` are refused with ``--opportunities``, and
``bgbb`` without it.  ``clvbayes run --demo donations`` runs on the bundled donations data of
the BG/BB paper (11,104 donors, yearly appeals 1996-2001).

This module parses the arguments, runs the job and turns its outcome into an exit status
and a message.  The job itself is :func:`clvbayes.pipeline.run_report` (callable from Python
with the same options as plain arguments); the checks made before its slow steps are in
:mod:`clvbayes.run_options`.

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
* purchase model: BG/NBD (``--purchase-model bgnbd``); with ``--purchase-model compare``
  every registered purchase model is fitted and the report's ``model_comparison`` table and
  summary say which one the tables use and why (:data:`clvbayes.report.CHOICE_RULE`);
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
import errno
import inspect
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clvbayes.errors import DataError, ModelError
from clvbayes.pipeline import RunResult, run_report
from clvbayes.progress import Progress
from clvbayes.run_options import (
    CDNOW_CALIBRATION_END,
    CDNOW_OBSERVATION_END,
    COMPARE,
    DEFAULT_ANNUAL_DISCOUNT_RATE,
    DEFAULT_PREDICTION_DRAWS,
    DEMOS,
    MAX_SEED,
    METHODS,
    OPPORTUNITY_GRIDS,
    PURCHASE_MODELS,
    UserError,
)

__all__ = ["build_parser", "main", "run"]

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_BUG = 3
EXIT_MEMORY = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


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
        description="Bayesian customer-lifetime-value models (BG/NBD, MBG/NBD or Pareto/NBD + "
        "Gamma-Gamma; BG/BB on discrete opportunities) with honest uncertainty intervals.",
    )
    parser.add_argument("--version", action="version", version=f"clvbayes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser(
        "run",
        help="fit, predict and write a report folder",
        description="Transactions -> RFM summary -> purchase model (--purchase-model) + "
        "Gamma-Gamma fit -> per-customer predictions and segments -> report folder (tables, "
        "data dictionary, model summary, plots, saved models). Without PATH it runs on the "
        "bundled CDNOW sample (--demo donations: the bundled donations data, discrete "
        "opportunities and BG/BB). Exit status: 0 success, 2 unusable input or option, 3 a bug "
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
    g.add_argument("--demo", choices=DEMOS, default=None,
                   help="run on a bundled data set instead of PATH: cdnow (the CDNOW sample, "
                   "the default without PATH) or donations (the donations of Fader, Hardie & "
                   "Shang 2010: 11,104 donors, yearly opportunities 1996-2001, no amounts; "
                   "fitted by BG/BB)")  # fmt: skip
    g.add_argument("--customer-id-col", default="customer_id", help="customer id column")
    g.add_argument("--date-col", default="date", help="transaction date column")
    g.add_argument("--amount-col", default="amount",
                   help="transaction value column (optional with --opportunities: without "
                   "it, no spend model and no CLV)")  # fmt: skip
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
    c = run_p.add_argument_group("who the customer is: covariates and partial pooling")
    c.add_argument("--covariates-file", default=None, metavar="PATH",
                   help="CSV or Parquet file with one row per customer (the --customer-id-col "
                   "column plus attributes); without it --covariate and --pool-by columns are "
                   "taken from the transactions, per customer from its first transaction")  # fmt: skip
    c.add_argument("--covariate", dest="covariates", action="append", default=[], metavar="COL",
                   help="static covariate of every model (numeric: standardised; text: one-hot "
                   "against the first level in sorted order); repeatable")  # fmt: skip
    c.add_argument("--pool-by", default=None, metavar="COL",
                   help="segment column (country, channel, cohort) whose segments get partially "
                   "pooled rates: small segments borrow strength from the whole base; the "
                   "report shows raw vs pooled segment estimates")  # fmt: skip
    t = run_p.add_argument_group("time")
    t.add_argument("--time-unit", choices=("weeks", "days"), default=None,
                   help="unit of recency, T, the horizon and the per-period discount rate in "
                   "continuous time (default weeks; not with --opportunities)")  # fmt: skip
    t.add_argument("--opportunities", default=None, metavar="GRID",
                   help="discrete time: customers act only at purchase opportunities on this "
                   f"grid, {', '.join(OPPORTUNITY_GRIDS)} (calendar periods; weeks run Monday "
                   "to Sunday), or the opportunity start dates as a comma-separated list "
                   "(2020-03-01,2021-03-01,...) or a file with one date per line; several "
                   "transactions in one opportunity count once. The model is BG/BB, the "
                   "horizon and --discount-rate-per-period count opportunities")  # fmt: skip
    t.add_argument("--calibration-end", default=None,
                   help="last day of the calibration period; later transactions form a "
                   "holdout period that the report checks the predictions against "
                   f"(CDNOW sample: {CDNOW_CALIBRATION_END}; your file: none)")  # fmt: skip
    t.add_argument("--observation-end", default=None,
                   help="last day of observation (CDNOW sample: "
                   f"{CDNOW_OBSERVATION_END}; your file: the last transaction date)")  # fmt: skip
    t.add_argument("--horizon", type=_positive_float, default=None,
                   help="prediction horizon in time units, from one day to 100 years "
                   "(default one year: 52 weeks or 365 days); with --opportunities a whole "
                   "number of opportunities (default one year's: 1, 4, 12 or 52; required "
                   "with opportunity dates)")  # fmt: skip
    v = run_p.add_argument_group("value")
    rates = v.add_mutually_exclusive_group()
    rates.add_argument("--discount-rate", type=_finite_float, default=None,
                       help="annual discount rate as a fraction from 0 to 1 (0.10 = 10 %% a "
                       "year), converted exactly to the time unit, or to a rate per "
                       "opportunity on a calendar --opportunities grid "
                       f"(default {DEFAULT_ANNUAL_DISCOUNT_RATE})")  # fmt: skip
    rates.add_argument("--discount-rate-per-period", type=_finite_float, default=None,
                       help="discount rate per time unit (with --opportunities: per "
                       "opportunity) instead of an annual one, as a fraction (at most 100 %% "
                       "a year once compounded)")  # fmt: skip
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
    f.add_argument("--backtest", type=int, default=0, metavar="K",
                   help="also rerun the fit at K earlier calibration ends (rolling origin, "
                   "the default holdout of clvbayes backtest) "
                   "and add 'how often did our intervals hold on your history' to "
                   "model_summary; continuous time only")  # fmt: skip
    f.add_argument("--purchase-model", choices=(*PURCHASE_MODELS, COMPARE), default=None,
                   help="purchase model: bgnbd (BG/NBD, Fader, Hardie & Lee 2005; default), "
                   "mbgnbd (MBG/NBD, Batislam et al. 2007: customers may drop out right after "
                   "their first purchase too) or pnbd (Pareto/NBD, Schmittlein et al. 1987); "
                   "on discrete opportunities (--opportunities) bgbb (BG/BB, Fader, Hardie & "
                   "Shang 2010; the default there, and the only one: compare is refused); "
                   "the report names it (model key and file NAME.nc). compare: fit all of them, "
                   "write model_comparison.csv (PSIS-LOO; with a holdout period, holdout "
                   "accuracy and interval coverage) and use the model with the highest LOO "
                   "elpd, or BG/NBD (then MBG/NBD) when the best is within 2 standard errors "
                   "of the difference; needs --method laplace or nuts")  # fmt: skip
    f.add_argument("--method", choices=METHODS, default="nuts",
                   help="nuts: full posterior by NUTS (credible intervals; slowest); "
                   "laplace: Gaussian approximation at the posterior mode, --draws draws "
                   "(real credible intervals in seconds); map: posterior mode only, a point "
                   "estimate (no credible intervals; the result gives the predictive "
                   "interval, which leaves out parameter uncertainty)")  # fmt: skip
    f.add_argument("--priors", default=None, metavar="FILE.json",
                   help='replace default priors, e.g. {"gamma_gamma": {"q": {"dist": '
                   '"Gamma", "alpha": 20, "beta": 5}}}; models: the --purchase-model key '
                   "(bgnbd or mbgnbd: r, alpha, a, b; pnbd: r, alpha, s, beta; bgbb: alpha, "
                   "beta, gamma, delta; with compare, any of them) and gamma_gamma (p, q, "
                   "gamma; with --opportunities only when there is an amount column)")  # fmt: skip
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
    from clvbayes.subscriptions_options import add_subscriptions_parser

    add_subscriptions_parser(sub, _HelpFormatter)  # clvbayes subscriptions: retention report
    _add_backtest_parser(sub)  # clvbayes backtest: how often the intervals held on the history
    return parser


def _add_backtest_parser(sub: Any) -> argparse.ArgumentParser:
    """``clvbayes backtest``: rolling-origin backtests (:func:`clvbayes.backtest.backtest_job`)."""
    from clvbayes.backtest import BACKTEST_DEMOS, DEFAULT_WINDOWS

    p = sub.add_parser(
        "backtest",
        help="rerun the fit at earlier calibration ends: how often did the intervals hold?",
        description="Rolling-origin backtest: the fit and prediction of clvbayes run, rerun at "
        "--windows earlier calibration ends, each followed by a --holdout of the same length; "
        "predicted vs actual purchases and revenue (whole base, named segments, CLV deciles, "
        "--by groups) with credible and predictive intervals, per-customer coverage and PIT, "
        "the purchase family PSIS-LOO would have chosen (--purchase-model compare, with the "
        "stacking average), opt-in calibrated totals and the rules of thumb (average order "
        "value x frequency, historical value, RFM cells, churn-rate lifetime), written to a "
        "report folder. Without PATH it runs on the bundled CDNOW sample. Exit status: 0 "
        "success, 2 unusable input or option, or data too short for any window, 3 a bug, 4 out "
        "of memory, 130 interrupted.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="transactions file (.csv[.gz] or .parquet), one row per transaction; "
                   "default: the bundled CDNOW sample")  # fmt: skip
    b = p.add_argument_group("windows")
    b.add_argument("--windows", type=_positive_int, default=DEFAULT_WINDOWS,
                   help="number of calibration ends (rolling origins), latest first")  # fmt: skip
    b.add_argument("--holdout", type=_positive_float, default=None,
                   help="holdout length of every window, in time units, a whole number of days "
                   "(default a quarter: 13 weeks or 91 days)")  # fmt: skip
    b.add_argument("--step", type=_positive_float, default=None,
                   help="time between consecutive calibration ends (default: the holdout, so the "
                   "holdouts do not overlap)")  # fmt: skip
    b.add_argument("--min-calibration", type=_positive_float, default=None,
                   help="shortest calibration period a window may have (default: the holdout); "
                   "windows the data are too short for are listed in the report, not run")  # fmt: skip
    b.add_argument("--by", default=None, metavar="COL",
                   help="input column to total by as well (e.g. channel), each customer's value "
                   "on their first transaction")  # fmt: skip
    g = p.add_argument_group("input")
    g.add_argument("--demo", choices=(*BACKTEST_DEMOS, "donations"), default=None,
                   help="a bundled data set instead of PATH: cdnow (the CDNOW sample, the default "
                   "without PATH) or cdnow-master (the whole CDNOW cohort, 23,570 customers, "
                   "less one whose repeat purchases are all worth 0); donations is refused (a "
                   "published summary, no dates to backtest)")  # fmt: skip
    g.add_argument("--customer-id-col", default="customer_id", help="customer id column")
    g.add_argument("--date-col", default="date", help="transaction date column")
    g.add_argument("--amount-col", default="amount", help="transaction value column")
    g.add_argument("--date-format", default=None,
                   help="strftime format of the dates, e.g. %%Y%%m%%d (default: inferred)")  # fmt: skip
    g.add_argument("--sep", default=None, help="CSV field separator (default ',')")
    g.add_argument("--encoding", default=None, help="CSV text encoding (default utf-8)")
    g.add_argument("--negative-amounts", choices=("error", "drop", "keep"), default="error",
                   help="rows with negative amounts (returns), as in clvbayes run")  # fmt: skip
    g.add_argument("--duplicate-rows", choices=("warn", "drop", "keep"), default=None,
                   help="exact duplicate rows, as in clvbayes run (default warn; keep for the "
                   "bundled CDNOW data)")  # fmt: skip
    g.add_argument("--outlying-dates", choices=("error", "drop", "keep"), default="error",
                   help="rows dated far outside the bulk of the data, as in clvbayes run")  # fmt: skip
    g.add_argument("--time-unit", choices=("weeks", "days"), default=None,
                   help="unit of recency, T, --holdout, --step and --min-calibration (default "
                   "weeks)")  # fmt: skip
    g.add_argument("--observation-end", default=None,
                   help="last observed day (default: the last transaction date); window 1's "
                   "holdout ends on it")  # fmt: skip
    f = p.add_argument_group("fitting")
    f.add_argument("--purchase-model", choices=(*("bgnbd", "mbgnbd", "pnbd"), COMPARE),
                   default=None,
                   help="purchase model (default bgnbd); compare fits every family in every "
                   "window, uses the one PSIS-LOO chooses, records how each did on the holdout "
                   "and backtests their stacking average too")  # fmt: skip
    f.add_argument("--method", choices=METHODS, default="laplace",
                   help="laplace (seconds per window), nuts (minutes per window) or map (no "
                   "parameter uncertainty)")  # fmt: skip
    f.add_argument("--priors", default=None, metavar="FILE.json", help="priors, as clvbayes run")
    f.add_argument("--draws", type=_positive_int, default=1000,
                   help="NUTS draws per chain (laplace: number of draws)")  # fmt: skip
    f.add_argument("--tune", type=_positive_int, default=1000, help="NUTS tuning steps per chain")
    f.add_argument("--chains", type=_positive_int, default=4, help="NUTS chains")
    f.add_argument("--prob", type=_probability, default=0.9,
                   help="probability of every interval")  # fmt: skip
    f.add_argument("--seed", type=_seed, default=0,
                   help="random seed (window k fits with seed + 1000 k)")  # fmt: skip
    f.add_argument("--prediction-draws", type=_count, default=DEFAULT_PREDICTION_DRAWS,
                   help="posterior draws used for the predictions (0 = all)")  # fmt: skip
    o = p.add_argument_group("output")
    o.add_argument("--out", "--output", "-o", dest="output", type=_folder,
                   default="clvbayes-backtest",
                   help="report folder (replaced only if it holds a previous clvbayes report)")  # fmt: skip
    o.add_argument("--no-plots", dest="plots", action="store_false", help="write no plots")
    o.add_argument("--strict", action="store_true",
                   help="treat data and fit warnings as errors")  # fmt: skip
    o.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    o.add_argument("--debug", action="store_true",
                   help="on an unexpected error, show the traceback")  # fmt: skip
    return p


# ---------------------------------------------------------------------------------------
# the job


class _Progress(Progress):
    """:class:`~clvbayes.progress.Progress` that writes the data layer's argument names in
    warnings as command-line flags (``duplicate_rows='drop'`` -> ``--duplicate-rows drop``)."""

    def __init__(self, quiet: bool, strict: bool = False) -> None:
        super().__init__(quiet, strict=strict, words=_cli_words)


def run(args: argparse.Namespace, progress: Progress | None = None) -> Path:
    """Run the whole job for parsed ``clvbayes run`` arguments; returns the report folder.

    Calls :func:`clvbayes.pipeline.run_report` with the arguments of the same names, then
    prints the one-line result on stdout.  Raises :class:`UserError`,
    :class:`clvbayes.errors.DataError` or :class:`clvbayes.errors.ModelError` for input the
    job cannot use (``main`` turns them into exit status 2); anything else is a bug.
    """
    progress = progress or _Progress(args.quiet, strict=getattr(args, "strict", False))
    names = [k for k in inspect.signature(run_report).parameters if k not in _NOT_OPTIONS]
    options = {k: getattr(args, k) for k in names if hasattr(args, k)}
    command = "clvbayes " + shlex.join(getattr(args, "argv", ["run"]))
    result = run_report(**options, command=command, progress=progress)
    # the result line goes to stdout, also with --quiet (which silences progress only)
    try:
        print(_result_line(result), flush=True)
    except BrokenPipeError:  # e.g. `clvbayes run | head -0`: the report is written all the same
        pass
    return result.path


#: Parameters of :func:`~clvbayes.pipeline.run_report` that are not ``clvbayes run`` options.
_NOT_OPTIONS = ("command", "progress")


def _result_line(result: RunResult) -> str:
    """The one-line result: a credible interval only where the fit gives one.

    The total CLV; without a spend model (discrete-time runs without amounts) the total
    expected transactions and the expected number of customers still active instead.
    """
    total = result.total
    pct = f"{100 * result.prob:g} %"
    q = "clv" if "clv_total_mean" in total else "purchases"
    if result.method == "map":
        interval = (
            f"{pct} predictive interval {total[f'{q}_total_pi_lower']:,.0f} to "
            f"{total[f'{q}_total_pi_upper']:,.0f}; --method map is a point estimate: parameter "
            "uncertainty not included"
        )
    else:
        how = " (Laplace approximation)" if result.method == "laplace" else ""
        interval = (
            f"{pct} credible interval{how} {total[f'{q}_total_ci_lower']:,.0f} to "
            f"{total[f'{q}_total_ci_upper']:,.0f}"
        )
    what = "Total CLV" if q == "clv" else "Expected transactions"
    over = f"over {result.horizon:g} {result.time_unit}"
    if result.time_unit == "opportunities":
        over = ("in the next opportunity" if result.horizon == 1
                else f"in the next {result.horizon:g} opportunities")  # fmt: skip
    line = (
        f"clvbayes: report written to {result.path} ({result.n_customers:,} customers, "
        f"{result.seconds:.1f} s). {what} {over}: "
        f"{total[f'{q}_total_mean']:,.0f} ({interval})."
    )
    if q == "purchases":
        line += (
            f" Customers still active: {total['alive_total_mean']:,.0f} expected. No spend "
            "model (the transactions have no amounts), so no CLV."
        )
    if result.comparison is not None:
        names = [PURCHASE_MODELS.get(k, k) for k in result.comparison.table["model"]]
        line += (
            f" Purchase model: {PURCHASE_MODELS.get(result.purchase_model)}, chosen by PSIS-LOO "
            f"among {', '.join(names)} (see model_comparison.csv and model_summary.md)."
        )
    return line


# ---------------------------------------------------------------------------------------
# entry point
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
            if args.command == "subscriptions":
                from clvbayes.subscriptions_job import run_command

                run_command(args, progress)
            elif args.command == "backtest":
                from clvbayes.backtest import run_command as run_backtest_command

                run_backtest_command(args, progress)
            else:
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


def console_main() -> int:
    """The ``clvbayes`` console script and ``python -m clvbayes``: :func:`main`, then a quick exit.

    Before the interpreter shuts down, every object is moved out of the garbage collector's
    reach (:func:`gc.freeze`): the process is about to end, and its last collection over the
    ~260,000 objects of a job's imports and results took ~1 s of a 10 s CDNOW job.  Files,
    atexit handlers and worker shutdown are unaffected.  In-process callers use :func:`main`.
    """
    import gc

    status = main()
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(console_main())
