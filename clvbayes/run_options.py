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
"""

from __future__ import annotations

import codecs
import json
import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
#: ``--purchase-model`` choices: the key (also the report's model key and file name) and the
#: name used in progress messages; see :func:`clvbayes.models.protocols.purchase_models`.
PURCHASE_MODELS = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}
DEFAULT_PURCHASE_MODEL = "bgnbd"
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
    (:func:`check_input`, which reads its header only).  Raises :class:`UserError`.
    """
    check_options(args)
    priors = {}
    if getattr(args, "priors", None):
        priors = load_priors(args.priors, purchase_model_key(args))
    check_output(Path(args.output), args.path)
    check_input(args)
    return priors


def check_options(args: Options) -> None:
    """Refuse option values that cannot be meant, before anything slow runs."""
    _check_value_options(args)
    _check_time_options(args)
    _check_input_options(args)
    _check_fit_options(args)


def _check_value_options(args: Options) -> None:
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


def _check_time_options(args: Options) -> None:
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


def _check_fit_options(args: Options) -> None:
    """--purchase-model can be used (with compare: by PSIS-LOO, which needs posterior draws);
    draws x chains stay within what memory holds."""
    key = purchase_model_key(args)
    usable = purchase_model_classes(key)
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
    """The ``--purchase-model`` value (a model key, or ``compare``)."""
    return getattr(args, "purchase_model", None) or DEFAULT_PURCHASE_MODEL


def purchase_model_classes(key: str) -> dict[str, type]:
    """The purchase model(s) a run fits: ``{key: class}``, every usable one for ``compare``.

    Raises :class:`UserError` when the model cannot drive the predictions (it lacks the
    :class:`~clvbayes.models.protocols.PurchaseModel` methods), or when fewer than two can
    be compared.
    """
    from clvbayes.models.protocols import purchase_model_candidates

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
    path_text: str, purchase_model: str = DEFAULT_PURCHASE_MODEL
) -> dict[str, dict[str, Any]]:
    """Parse ``--priors FILE.json`` into ``{model: {parameter: Prior}}``, checking every name.

    The models are the purchase model(s) of the run (``purchase_model``: a model key, or
    ``compare`` for every usable one) and ``gamma_gamma``; the key of a purchase model the run
    does not fit is refused (its priors would be silently unused).
    """
    from clvbayes.models import GammaGammaModel
    from clvbayes.models.priors import AVAILABLE_DISTRIBUTIONS, Prior

    classes = {**purchase_model_classes(purchase_model), "gamma_gamma": GammaGammaModel}
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


def check_input(args: Options) -> None:
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


def _bundled_file() -> Any:
    return files("clvbayes.datasets").joinpath("files", "CDNOW_sample.txt")


def _ends(args: Options) -> tuple[str | None, str | None]:
    if args.path is None:
        return (args.calibration_end or CDNOW_CALIBRATION_END,
                args.observation_end or CDNOW_OBSERVATION_END)  # fmt: skip
    return args.calibration_end, args.observation_end
