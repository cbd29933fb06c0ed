"""The ``clvbayes`` command: from a transaction file to a reporting-ready CLV report.

``clvbayes run [PATH]`` reads transactions (CSV or Parquet; without PATH the bundled CDNOW
sample), summarises them per customer, fits the BG/NBD purchase model and the Gamma-Gamma
spend model (NUTS by default, ``--method map`` for a quick run), predicts every customer's
next ``--horizon`` time units, segments the customers and writes a report folder (see
:mod:`clvbayes.report` for its files and schema).

Defaults
--------
* time unit: weeks; horizon: one year, i.e. 52 weeks (or 365 days with ``--time-unit days``);
* discounting: 10 % a year (``--discount-rate``, converted exactly to the time unit), or a
  rate per time unit with ``--discount-rate-per-period``;
* margin 1 (CLV in revenue terms; pass your profit margin, e.g. ``--margin 0.3``);
* 90 % intervals; seed 0 (BG/NBD fit uses seed, Gamma-Gamma seed + 1, predictions seed + 2);
* predictions from 1,000 evenly thinned posterior draws (``--prediction-draws``);
* calibration/observation end: for the bundled CDNOW sample 1997-09-30 / 1998-06-30 (39
  weeks each, as in Fader, Hardie & Lee 2005), so the report includes a holdout check;
  for your own file, no holdout and the last transaction date, unless you pass them.

Exit status: 0 on success, 2 for input the command cannot use (the message says what to
fix; no traceback), 130 when interrupted.  A report folder is written completely or not
at all.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.data import DataError

__all__ = ["build_parser", "main", "run"]

DEFAULT_HORIZON = {"weeks": 52.0, "days": 365.0}
DEFAULT_ANNUAL_DISCOUNT_RATE = 0.10
DEFAULT_PREDICTION_DRAWS = 1000
CDNOW_CALIBRATION_END = "1997-09-30"
CDNOW_OBSERVATION_END = "1998-06-30"
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the command's input or output location; reported without traceback."""


# ---------------------------------------------------------------------------------------
# arguments


def _checked(convert, noun: str, ok, requirement: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {text!r}")
        return value

    return parse


_positive_float = _checked(
    float, "a number", lambda v: np.isfinite(v) and v > 0, "must be a positive number"
)
_rate = _checked(
    float, "a number", lambda v: np.isfinite(v) and v > -1, "a discount rate must be > -1"
)
_probability = _checked(
    float, "a number", lambda v: 0 < v < 1, "must be between 0 and 1 (e.g. 0.9)"
)
_positive_int = _checked(int, "a whole number", lambda v: v >= 1, "must be at least 1")
_count = _checked(int, "a whole number", lambda v: v >= 0, "must be 0 or more")


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
        description="Bayesian customer-lifetime-value models (BG/NBD + Gamma-Gamma) with "
        "honest uncertainty intervals.",
    )
    parser.add_argument("--version", action="version", version=f"clvbayes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser(
        "run",
        help="fit, predict and write a report folder",
        description="Transactions -> RFM summary -> BG/NBD + Gamma-Gamma fit -> per-customer "
        "predictions and segments -> report folder (tables, data dictionary, model summary, "
        "plots, saved models). Without PATH it runs on the bundled CDNOW sample.",
        formatter_class=_HelpFormatter,
    )
    run_p.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="transactions file (.csv[.gz] or .parquet), one row per transaction; "
        "default: the bundled CDNOW sample",
    )
    g = run_p.add_argument_group("input columns")
    g.add_argument("--customer-id-col", default="customer_id", help="customer id column")
    g.add_argument("--date-col", default="date", help="transaction date column")
    g.add_argument("--amount-col", default="amount", help="transaction value column")
    g.add_argument("--date-format", default=None,
                   help="strftime format of the dates, e.g. %%Y%%m%%d (default: inferred)")  # fmt: skip
    g.add_argument("--negative-amounts", choices=("error", "drop", "keep"), default="error",
                   help="rows with negative amounts (returns): refuse, drop (counted in the "
                   "report), or add into the day's total")  # fmt: skip
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
                   help="prediction horizon in time units (default one year: 52 weeks or "
                   "365 days)")  # fmt: skip
    v = run_p.add_argument_group("value")
    rates = v.add_mutually_exclusive_group()
    rates.add_argument("--discount-rate", type=_rate, default=None,
                       help="annual discount rate, converted exactly to the time unit "
                       f"(default {DEFAULT_ANNUAL_DISCOUNT_RATE})")  # fmt: skip
    rates.add_argument("--discount-rate-per-period", type=_rate, default=None,
                       help="discount rate per time unit instead of an annual one")  # fmt: skip
    v.add_argument("--margin", type=_positive_float, default=1.0,
                   help="profit margin applied to revenue in the CLV (1 = revenue)")  # fmt: skip
    v.add_argument("--cac", type=_positive_float, default=None,
                   help="customer acquisition cost (currency): adds CLV-to-CAC ratios")  # fmt: skip
    v.add_argument("--prob", type=_probability, default=0.9,
                   help="probability of every interval (equal-tailed)")  # fmt: skip
    f = run_p.add_argument_group("fitting")
    f.add_argument("--method", choices=("nuts", "map"), default="nuts",
                   help="nuts: full posterior (minutes); map: posterior mode (seconds; "
                   "credible intervals collapse to a point)")  # fmt: skip
    f.add_argument("--draws", type=_positive_int, default=1000, help="NUTS draws per chain")
    f.add_argument("--tune", type=_positive_int, default=1000, help="NUTS tuning steps per chain")
    f.add_argument("--chains", type=_positive_int, default=4, help="NUTS chains")
    f.add_argument("--seed", type=int, default=0, help="random seed (same seed, same report)")
    f.add_argument("--prediction-draws", type=_count, default=DEFAULT_PREDICTION_DRAWS,
                   help="posterior draws used for the predictions, evenly thinned (0 = all); "
                   "1000 give intervals accurate to about a percentile")  # fmt: skip
    o = run_p.add_argument_group("output")
    o.add_argument("--output", "-o", default="clvbayes-report",
                   help="report folder (replaced if it holds an older clvbayes report)")  # fmt: skip
    o.add_argument("--format", choices=("csv", "parquet", "both"), default="both",
                   help="table file format(s)")  # fmt: skip
    o.add_argument("--quiet", "-q", action="store_true",
                   help="no progress output (errors and the one-line result still print)")  # fmt: skip
    return parser


# ---------------------------------------------------------------------------------------
# progress


class _Progress:
    """Step names with timings on stderr; collects clvbayes warnings for the report."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self._t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"clvbayes: {name} ...")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        elapsed = time.perf_counter() - t0
        self.timings[name] = round(elapsed, 3)
        seen = set()
        for w in caught:
            if not issubclass(w.category, UserWarning) or "clvbayes" not in str(w.filename):
                continue
            msg = str(w.message)
            if msg in seen:
                continue
            seen.add(msg)
            self.warnings.append(msg)
            self.say(f"clvbayes: warning: {msg}")
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
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if not path.is_file() and not path.is_dir():
        raise UserError(f"input path is not a file: {path}")
    try:
        tx = read_transactions(path, customer_id_col=args.customer_id_col)
    except DataError:
        raise
    except (ValueError, OSError, ImportError) as err:
        # pandas/pyarrow parse errors (ValueError subclasses), unreadable files
        raise UserError(f"cannot read {path} as a table: {err}") from err
    prov = {"source": "file", **(file_provenance(path) if path.is_file() else {"path": str(path)})}
    return tx, prov


def _ends(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.path is None:
        return (args.calibration_end or CDNOW_CALIBRATION_END,
                args.observation_end or CDNOW_OBSERVATION_END)  # fmt: skip
    return args.calibration_end, args.observation_end


def _summarise(tx: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    from clvbayes.data import calibration_holdout_split, summarize_transactions

    cal, obs = _ends(args)
    common = dict(
        customer_id_col=args.customer_id_col,
        datetime_col=args.date_col,
        monetary_value_col=args.amount_col,
        time_unit=args.time_unit,
        datetime_format=args.date_format,
        negative_amounts=args.negative_amounts,
    )
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


def run(args: argparse.Namespace) -> Path:
    """Run the whole job for parsed ``clvbayes run`` arguments; returns the report folder."""
    progress = _Progress(args.quiet)
    out_dir = Path(args.output)
    _check_output(out_dir)

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

    from clvbayes.models import BetaGeoModel, GammaGammaModel
    from clvbayes.predict import score_customers
    from clvbayes.report import customer_table, segment_table, write_report
    from clvbayes.segments import label_customers

    fit_kw: dict[str, Any] = {}
    if args.method == "nuts":
        fit_kw = dict(draws=args.draws, tune=args.tune, chains=args.chains,
                      progressbar=not args.quiet)  # fmt: skip
    with progress.step(f"fitting the BG/NBD purchase model ({args.method})"):
        bg = BetaGeoModel().fit(rfm, method=args.method, seed=args.seed, **fit_kw)
    with progress.step(f"fitting the Gamma-Gamma spend model ({args.method})"):
        gg = GammaGammaModel().fit(rfm, method=args.method, seed=args.seed + 1, **fit_kw)

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
        "cac": args.cac,
        "currency": f"units of the {args.amount_col!r} column",
    }
    with progress.step(f"writing the report to {out_dir}"):
        try:
            command = "clvbayes " + shlex.join(getattr(args, "argv", ["run"]))
            write_report(
                out_dir,
                customers,
                segments,
                {"bgnbd": bg, "gamma_gamma": gg},
                provenance,
                fmt=args.format,
                settings=settings,
                holdout=holdout,
                extra={
                    "command": command,
                    "warnings": progress.warnings,
                    "timings_s": progress.timings,
                },
            )
        except OSError as err:
            raise UserError(f"cannot write the report to {out_dir}: {_os_message(err)}") from err
    # the result line goes to stdout, also with --quiet (which silences progress only)
    total = scores.segments["all"].iloc[0]
    print(
        f"clvbayes: report written to {out_dir} ({len(customers):,} customers, "
        f"{progress.total:.1f} s). Total CLV over {horizon:g} {args.time_unit}: "
        f"{total['clv_total_mean']:,.0f} ({100 * args.prob:g} % credible interval "
        f"{total['clv_total_ci_lower']:,.0f} to {total['clv_total_ci_upper']:,.0f}).",
        flush=True,
    )
    return out_dir


def _os_message(err: OSError) -> str:
    if err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return str(err)


def _check_output(out_dir: Path) -> None:
    """Fail early (before the slow steps) when the report cannot be written."""
    import os

    from clvbayes.report import _is_replaceable

    if not _is_replaceable(out_dir):
        raise UserError(
            f"output folder {out_dir} exists and is not a clvbayes report; choose another "
            "--output or remove it first."
        )
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write the report to {out_dir}: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the report to {out_dir}: permission denied on {parent}.")


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
    ("observation_end=", "--observation-end "),
    ("calibration_end=", "--calibration-end "),
)


def _cli_words(message: str) -> str:
    for python, flag in _FLAG_WORDS:
        message = message.replace(python, flag)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clvbayes`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on bad arguments
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    args.argv = argv
    try:
        run(args)
    except (UserError, DataError) as err:
        print(f"clvbayes: error: {_cli_words(str(err))}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("clvbayes: interrupted; no report written.", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
