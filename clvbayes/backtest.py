"""Rolling-origin backtests on the user's own transaction log: how often did the intervals hold?

The models' intervals are calibrated on data simulated from the models; on real data the
model is never exactly right, and the error shows first in totals.  A backtest measures it on
the user's history: the whole job (summary, fit, prediction) is rerun at ``K`` earlier
calibration ends, each followed by a holdout of the same length, and every prediction is
set against what the customers then did.

Windows (:func:`rolling_windows`)
    The last observed day is ``L`` (the last transaction, or ``observation_end``).  Window
    ``k = 1..K`` has observation end ``L - (k - 1) step`` and calibration end ``holdout``
    before it (``step`` defaults to ``holdout``: the holdouts tile the end of the log without
    overlapping).  Every window's calibration starts with the first transaction and must be
    at least ``min_calibration`` long (default: the holdout's length); a window for which the
    data are too short is not run, and the result's ``notes`` (and the report) say so.

Per window (:func:`run_backtest`)
    The calibration summary (:func:`clvbayes.data.calibration_holdout_split`: customers
    first seen in the holdout are not in the cohort, and are counted), the purchase model(s)
    and Gamma-Gamma fitted (``method="laplace"`` by default, for speed), customers labelled
    (named segments and CLV deciles, ranked by the expected value over the holdout, as the
    run ranks by CLV), then :func:`clvbayes.predict.score_customers` over the holdout length
    (no discounting, margin 1) with the actual holdout purchases and revenue as ``observed``.

What is reported (:class:`BacktestResult`)
    ``totals``: predicted (mean, credible and 90 % predictive interval) against actual
    purchases and revenue of the whole base, the named segments, the CLV deciles and the
    ``by`` column's groups; whether each actual lies in its intervals, and its standardised
    error ``z = (actual - mean) / sd`` with ``sd`` the predictive spread of the total.
    ``customers``: per-customer predictive coverage and the mean randomised PIT;
    ``pit``: the PIT histogram (10 bins: flat when calibrated).  ``models``: with several
    purchase families, what PSIS-LOO chose and how every family did on the holdout.
    ``baselines``: the rules of thumb (:mod:`clvbayes.baselines`) on the same groups.

Calibrated totals (opt-in, :func:`calibrate_totals`)
    From the backtests, a widening factor per quantity: ``k = max(1, sqrt(mean(z^2)))`` over
    every window and group, where ``sd = (pi_upper - pi_lower) / (2 z_{(1+p)/2})`` (the
    normal-equivalent spread of the predictive interval).  ``k^2`` is the variance of the
    standardised errors: 1 when the intervals hold as they claim.  The calibrated interval
    keeps the model's mean and scales both of its half-widths by ``k``, so it is never
    narrower than the model's own (a factor below 1 is not used: a few windows cannot prove
    the model too cautious).  It is shown beside the model's interval (``calibrated_pi_*``
    columns), never instead of it.  Its own coverage is measured out of sample: each window's
    totals against the factor of the other windows (leave one window out).  Group totals of
    one window share its parameter draws and partition the base, so they are not independent:
    with few windows the factor is rough, and the report says on how many windows it rests.

Everything is seeded: window ``k`` fits with ``seed + 1000 k`` (Gamma-Gamma ``+ 1``) and
predicts with ``+ 2``.  :func:`backtest_job` is the ``clvbayes backtest`` command (checks,
reading, :func:`run_backtest`, the report folder); :func:`backtest_section` is the short
"how often did our intervals hold on your history" section for a run's report.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.errors import DataError, ModelError

__all__ = [
    "BacktestResult",
    "Window",
    "backtest_job",
    "backtest_section",
    "calibrate_totals",
    "calibrated_interval",
    "calibrated_segment_totals",
    "rolling_windows",
    "run_backtest",
]

DEFAULT_WINDOWS = 4
#: Default holdout: a quarter of a year in the time unit.
DEFAULT_HOLDOUT = {"weeks": 13.0, "days": 91.0}
UNIT_DAYS = {"weeks": 7.0, "days": 1.0}
QUANTITIES = ("purchases", "revenue")
#: The model forecasts of a backtest: the purchase family used (LOO's choice with several)
#: and, with several families, their stacking mixture.
FORECAST_NAMES = {"model": "the model (mean)", "averaged": "the model average (stacking)"}
PIT_BINS = 10
#: Seed offset between windows.
WINDOW_SEED_STEP = 1000


# ---------------------------------------------------------------------------------------
# windows


@dataclass(frozen=True)
class Window:
    """One calibration/holdout split of a backtest (dates are days; lengths in ``time_unit``)."""

    window: int
    calibration_end: pd.Timestamp
    observation_end: pd.Timestamp
    holdout: float
    calibration_length: float
    time_unit: str


def _days(length: float, unit: str, flag: str) -> int:
    days = length * UNIT_DAYS[unit]
    if not (math.isfinite(days) and days >= 1):
        raise ValueError(f"{flag} {length:g} {unit} is shorter than one day.")
    if abs(days - round(days)) > 1e-9:
        raise ValueError(
            f"{flag} {length:g} {unit} is not a whole number of days ({days:g}); windows end on "
            f"days, so pass a length of whole days, e.g. {flag} {max(1, math.floor(length)):g}, "
            "or count in days with --time-unit days."
        )
    return round(days)


def rolling_windows(
    first: Any,
    last: Any,
    *,
    n_windows: int = DEFAULT_WINDOWS,
    holdout: float | None = None,
    step: float | None = None,
    min_calibration: float | None = None,
    time_unit: str = "weeks",
) -> tuple[list[Window], list[str]]:
    """The backtest windows on data from ``first`` to ``last`` (days), latest first.

    Parameters
    ----------
    first, last : date-like
        First transaction day and last observed day.
    n_windows : int
        Windows wanted (``K``).
    holdout : float, optional
        Holdout length in ``time_unit`` (default :data:`DEFAULT_HOLDOUT`), a whole number of days.
    step : float, optional
        Distance between consecutive calibration ends (default ``holdout``).
    min_calibration : float, optional
        Shortest calibration period a window may have (default ``holdout``).
    time_unit : {"weeks", "days"}

    Returns
    -------
    windows : list of Window
        Those the data allow, window 1 ending at ``last``.
    notes : list of str
        One plain sentence per window that was asked for and cannot be run.

    Raises
    ------
    ValueError
        For lengths that are not positive whole numbers of days, or ``n_windows < 1``.
    """
    if time_unit not in UNIT_DAYS:
        raise ValueError(f"time_unit must be one of {list(UNIT_DAYS)}, got {time_unit!r}.")
    if int(n_windows) != n_windows or n_windows < 1:
        raise ValueError(f"the number of windows must be a whole number >= 1, got {n_windows!r}.")
    holdout = DEFAULT_HOLDOUT[time_unit] if holdout is None else float(holdout)
    h = _days(holdout, time_unit, "--holdout")
    s = _days(holdout if step is None else float(step), time_unit, "--step")
    m = _days(holdout if min_calibration is None else float(min_calibration), time_unit,
              "--min-calibration")  # fmt: skip
    first, last = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize()
    per = UNIT_DAYS[time_unit]
    windows, notes = [], []
    for k in range(1, int(n_windows) + 1):
        obs = last - pd.Timedelta(days=(k - 1) * s)
        cal = obs - pd.Timedelta(days=h)
        length = (cal - first).days
        if length < m:
            notes.append(
                f"window {k} (calibration end {cal.date()}, holdout to {obs.date()}) is not run: "
                f"the data start on {first.date()}, so its calibration period would be "
                f"{max(length, 0) / per:g} {time_unit}, shorter than the minimum "
                f"{m / per:g} {time_unit} (--min-calibration); the data are too short for it"
            )
            continue
        windows.append(Window(k, cal, obs, h / per, length / per, time_unit))
    return windows, notes


# ---------------------------------------------------------------------------------------
# the result


@dataclass
class BacktestResult:
    """What :func:`run_backtest` measured.

    Attributes
    ----------
    windows : DataFrame
        One row per window run: dates, lengths, customers, the purchase model used, seconds.
    totals : DataFrame
        One row per window x grouping (``all``, ``segment``, ``clv_decile``, the ``by``
        column) x group x quantity (``purchases``, ``revenue``): customers, actual total,
        predicted mean, credible (``ci_*``) and predictive (``pi_*``) interval, whether the
        actual lies in them, the standardised error ``z``, and the calibrated interval
        (``calibrated_pi_*``; :func:`calibrate_totals`).
    customers : DataFrame
        Per window and quantity: per-customer predictive coverage and mean PIT.
    pit : DataFrame
        Per window and quantity: the randomised-PIT histogram (``PIT_BINS`` bins).
    models : DataFrame
        With several purchase families: per window and family, PSIS-LOO, which one LOO chose
        and its holdout accuracy.  Empty otherwise.
    baselines : DataFrame
        Per window, grouping, group and quantity: each rule of thumb's prediction (and the
        model's mean, ``rule = "model"``) against the actual, error and relative error.
    calibration : dict
        The widening factors and how they were found (:func:`calibrate_totals`).
    summary : dict
        Overall figures (coverage of totals and customers, binomial standard errors).
    notes : list of str
        Windows that could not be run and why; rules that could not be computed.
    settings : dict
        The options the backtest ran with.
    seconds : float
        Wall time of the backtest (fits and predictions of every window).
    """

    windows: pd.DataFrame
    totals: pd.DataFrame
    customers: pd.DataFrame
    pit: pd.DataFrame
    models: pd.DataFrame
    baselines: pd.DataFrame
    calibration: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------
# the backtest


def _days_of(tx: pd.DataFrame, date_col: str, date_format: str | None) -> np.ndarray:
    """The transaction days (datetime64[D]) to cut the log at each window's observation end."""
    dates = tx[date_col]
    if dates.dtype.kind in "iu":
        dates = dates.astype(str)
    try:
        d = pd.to_datetime(dates, format=date_format)
    except (ValueError, TypeError) as err:
        raise DataError(f"cannot read the dates of column {date_col!r} ({err}).") from None
    if getattr(d.dt, "tz", None) is not None:
        d = d.dt.tz_localize(None)
    return d.dt.normalize().to_numpy()


def _split(tx, days, cal, obs, common) -> tuple[pd.DataFrame, list[str]]:
    """The calibration/holdout split of the log cut at ``obs`` (later rows are not seen)."""
    from clvbayes.data import calibration_holdout_split

    keep = days <= np.datetime64(obs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rfm = calibration_holdout_split(
            tx[keep], cal.strftime("%Y-%m-%d"), obs.strftime("%Y-%m-%d"), **common
        )
    return rfm, [str(w.message) for w in caught]


def _group_values(tx: pd.DataFrame, index: pd.Index, by: str, id_col: str, date_col: str,
                  date_format: str | None) -> pd.Series:  # fmt: skip
    """Each customer's ``by`` value: the one on their first transaction (as ``clvbayes run``)."""
    dates = tx[date_col]
    if dates.dtype.kind in "iu":
        dates = dates.astype(str)
    try:
        t = pd.to_datetime(dates, format=date_format, utc=True).to_numpy()
    except (ValueError, TypeError):
        t = np.arange(len(tx))
    order = pd.DataFrame({"id": tx[id_col].astype(str).to_numpy(), "t": t,
                          "v": tx[by].to_numpy()})  # fmt: skip
    order = order.sort_values(["id", "t"], kind="stable").drop_duplicates("id", keep="first")
    values = pd.Series(order["v"].to_numpy(), index=order["id"].to_numpy())
    out = values.reindex(index.astype(str)).to_numpy()
    return pd.Series(out, index=index, name=by).astype(str)


def _fit_kw(method: str, draws: int, tune: int, chains: int, progressbar: bool) -> dict[str, Any]:
    if method == "nuts":
        return dict(draws=draws, tune=tune, chains=chains, progressbar=progressbar)
    if method == "laplace":
        return dict(draws=draws)
    return {}


def _norm_quantile(prob: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + prob / 2))


def _averaged(fitted: dict[str, Any], rfm: pd.DataFrame, n_draws: int | None) -> Any:
    """The stacking mixture of the fitted families (None where clvbayes has no averaging)."""
    try:
        from clvbayes.predict.averaging import averaged_model
    except ImportError:  # pragma: no cover - model averaging not available
        return None
    return averaged_model(fitted, rfm, n_draws=n_draws)


def _total_rows(w: Window, scores, keyed: pd.DataFrame, groupings: list[str], prob: float,
                forecast: str = "model"):  # fmt: skip
    zq = _norm_quantile(prob)
    actual_cols = {"purchases": "frequency_holdout", "revenue": "total_value_holdout"}
    rows = []
    for g in groupings:
        seg = scores.segments[g]
        if g == "all":
            actual = keyed[list(actual_cols.values())].sum().to_frame("all").T
        else:
            actual = keyed.groupby(g, observed=True)[list(actual_cols.values())].sum()
        for label, r in seg.iterrows():
            for q, col in actual_cols.items():
                a = float(actual.loc[label, col])
                mean = float(r[f"{q}_total_mean"])
                lo, hi = float(r[f"{q}_total_pi_lower"]), float(r[f"{q}_total_pi_upper"])
                clo, chi = float(r[f"{q}_total_ci_lower"]), float(r[f"{q}_total_ci_upper"])
                sd = (hi - lo) / (2 * zq)
                rows.append({
                    "window": w.window, "forecast": forecast, "grouping": g, "group": str(label),
                    "quantity": q, "n_customers": int(r["n_customers"]), "actual": a,
                    "predicted_mean": mean, "ci_lower": clo, "ci_upper": chi,
                    "pi_lower": lo, "pi_upper": hi,
                    "in_ci": bool(clo <= a <= chi) if math.isfinite(clo) else None,
                    "in_pi": bool(lo <= a <= hi),
                    "pi_sd": sd, "z": (a - mean) / sd if sd > 0 else float("nan"),
                    "relative_error": (mean - a) / a if a else float("nan"),
                })  # fmt: skip
    return rows


def _baseline_rows(w: Window, keyed, base: pd.DataFrame, groupings: list[str], totals):
    from clvbayes.baselines import RULES

    actual_cols = {"purchases": "frequency_holdout", "revenue": "total_value_holdout"}
    frame = keyed[[*[g for g in groupings if g != "all"], *actual_cols.values()]].join(base)
    frame["all"] = "all"
    model: dict[tuple, dict[str, float]] = {}
    for t in totals:
        model.setdefault((t["grouping"], t["group"], t["quantity"]), {})[t["forecast"]] = t[
            "predicted_mean"
        ]
    rows = []
    for g in groupings:
        sums = frame.groupby(g, observed=True).sum(numeric_only=True, min_count=1)
        for label, r in sums.iterrows():
            for q, col in actual_cols.items():
                a = float(r[col])
                preds = {**model[(g, str(label), q)],
                         **{rule: float(r[f"{rule}_{q}"]) for rule in RULES}}  # fmt: skip
                for rule, p in preds.items():
                    rows.append({
                        "window": w.window, "grouping": g, "group": str(label), "quantity": q,
                        "rule": rule, "predicted": p, "actual": a, "error": p - a,
                        "relative_error": (p - a) / a if a else float("nan"),
                    })  # fmt: skip
    return rows


def run_backtest(
    transactions: pd.DataFrame,
    *,
    n_windows: int = DEFAULT_WINDOWS,
    holdout: float | None = None,
    step: float | None = None,
    min_calibration: float | None = None,
    time_unit: str = "weeks",
    observation_end: Any = None,
    customer_id_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str = "amount",
    date_format: str | None = None,
    negative_amounts: str = "error",
    duplicate_rows: str = "warn",
    outlying_dates: str = "error",
    by: str | None = None,
    purchase_model: str = "bgnbd",
    method: str = "laplace",
    priors: Mapping[str, Any] | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    prob: float = 0.9,
    seed: int = 0,
    prediction_draws: int | None = 1000,
    average: bool = True,
    progress: Any = None,
) -> BacktestResult:
    """Rolling-origin backtest of the models (and the rules of thumb) on a transaction log.

    Parameters
    ----------
    transactions : DataFrame
        One row per transaction (customer id, date, amount; optionally the ``by`` column).
    n_windows, holdout, step, min_calibration, time_unit
        The windows (:func:`rolling_windows`); lengths in ``time_unit``.
    observation_end : date-like, optional
        Last observed day (default: the last transaction).
    customer_id_col, date_col, amount_col, date_format, negative_amounts, duplicate_rows, \
outlying_dates
        As in :func:`clvbayes.data.calibration_holdout_split`.
    by : str, optional
        A column of ``transactions`` to total by (each customer's value on their first
        transaction).
    purchase_model : {"bgnbd", "mbgnbd", "pnbd", "compare"}
        The purchase model; ``"compare"`` fits every family, uses the one PSIS-LOO chooses
        (:func:`clvbayes.report.compare_purchase_models`) and records how each did.
    method : {"laplace", "nuts", "map"}
        Fit method (default ``"laplace"``: seconds per window).
    priors : mapping, optional
        Priors by model key, as ``clvbayes run --priors``.
    draws, tune, chains : int
        Sampler settings (Laplace: ``draws`` draws).
    prob : float
        Interval probability (default 0.9).
    seed : int
        Base seed (see the module docstring).
    prediction_draws : int, optional
        Posterior draws used for the predictions (None: all).
    average : bool
        With several families (``purchase_model="compare"``), also backtest their stacking
        mixture (:func:`clvbayes.predict.averaging.averaged_model`): ``forecast`` is
        ``"model"`` (the family LOO chose) or ``"averaged"`` in every table.
    progress : clvbayes.progress.Progress, optional
        Step reporter (default: quiet).

    Returns
    -------
    BacktestResult

    Raises
    ------
    DataError
        When no window can be run (the message says how long the data are and what a window
        needs), or the transactions are unusable.
    """
    from clvbayes.baselines import baseline_notes, baseline_predictions
    from clvbayes.data import summarize_transactions
    from clvbayes.models import GammaGammaModel
    from clvbayes.predict import score_customers
    from clvbayes.progress import Progress
    from clvbayes.report import compare_purchase_models
    from clvbayes.run_options import PURCHASE_MODELS, purchase_model_classes
    from clvbayes.segments import label_customers

    progress = progress or Progress(quiet=True)
    t_start = time.perf_counter()
    common: dict[str, Any] = dict(
        customer_id_col=customer_id_col, datetime_col=date_col, monetary_value_col=amount_col,
        time_unit=time_unit, datetime_format=date_format, negative_amounts=negative_amounts,
        duplicate_rows=duplicate_rows, outlying_dates=outlying_dates,
    )  # fmt: skip
    with progress.step("checking and summarising the whole log"):
        whole = summarize_transactions(transactions, observation_end=observation_end, **common)
    days = _days_of(transactions, date_col, date_format)
    first = pd.Timestamp(whole["first_purchase"].min())
    last = pd.Timestamp(whole.attrs["observation_end"])
    windows, notes = rolling_windows(first, last, n_windows=n_windows, holdout=holdout, step=step,
                                     min_calibration=min_calibration, time_unit=time_unit)  # fmt: skip
    if not windows:
        span = (last.normalize() - first.normalize()).days / UNIT_DAYS[time_unit]
        h = DEFAULT_HOLDOUT[time_unit] if holdout is None else holdout
        m = h if min_calibration is None else min_calibration
        raise DataError(
            f"the transactions run from {first.date()} to {last.date()}, {span:g} {time_unit}, "
            f"but one backtest window needs a calibration period of at least {m:g} {time_unit} "
            f"(--min-calibration) followed by a {h:g}-{time_unit[:-1]} holdout (--holdout), "
            f"{m + h:g} {time_unit} in all: the data are too short for any window. Pass a "
            "shorter --holdout or --min-calibration, or use a longer history."
        )
    for n in notes:
        progress.say(f"clvbayes: {n}")
    fit_kw = _fit_kw(method, draws, tune, chains, progressbar=not progress.quiet)
    classes = purchase_model_classes(purchase_model)
    priors = dict(priors or {})
    groupings = ["all", "segment", "clv_decile", *([by] if by else [])]
    window_rows, totals, customers, pit, models, base_rows = [], [], [], [], [], []
    weights: list[dict[str, Any]] = []
    for w in windows:
        t0 = time.perf_counter()
        label = f"window {w.window}/{len(windows)} (calibration to {w.calibration_end.date()})"
        try:
            with progress.step(f"{label}: summarising"):
                rfm, _ = _split(transactions, days, w.calibration_end, w.observation_end, common)
                previous = None
                before = w.calibration_end - pd.Timedelta(
                    days=round(w.holdout * UNIT_DAYS[time_unit])
                )
                if before > first:
                    previous, _ = _split(transactions, days, before, w.calibration_end, common)
                if not (rfm["frequency"] > 0).any():
                    raise DataError(
                        f"no customer made a repeat purchase by {w.calibration_end.date()}"
                    )
            base_seed = seed + WINDOW_SEED_STEP * w.window
            fitted = {}
            for key, cls in classes.items():
                with progress.step(f"{label}: fitting {PURCHASE_MODELS.get(key, key)} ({method})"):
                    fitted[key] = cls(priors=priors.get(key)).fit(rfm, method=method, seed=base_seed,
                                                                  **fit_kw)  # fmt: skip
            with progress.step(f"{label}: fitting Gamma-Gamma ({method})"):
                gg = GammaGammaModel(priors=priors.get("gamma_gamma")).fit(
                    rfm, method=method, seed=base_seed + 1, **fit_kw
                )
        except (DataError, ModelError) as err:
            notes.append(f"window {w.window} (calibration end {w.calibration_end.date()}) could "
                         f"not be fitted and is left out: {err}")  # fmt: skip
            progress.say(f"clvbayes: {notes[-1]}")
            continue
        chosen = purchase_model
        if len(fitted) > 1:
            with progress.step(f"{label}: comparing the purchase models (PSIS-LOO, holdout)"):
                comparison = compare_purchase_models(
                    rfm, fitted, prob=prob, seed=base_seed + 2, n_draws=prediction_draws,
                    names=PURCHASE_MODELS,
                )  # fmt: skip
            chosen = comparison.chosen
            table = comparison.table.assign(window=w.window)
            best = table.loc[table["holdout_purchases_mae"].idxmin(), "model"]
            table["best_on_holdout_mae"] = table["model"] == best
            models.append(table)
        bg = fitted[chosen]
        duration = float(rfm.attrs["holdout_duration"])
        settings = dict(horizon=duration, period=duration, discount_rate=0.0, margin=1.0,
                        prob=prob, n_draws=prediction_draws)  # fmt: skip
        with progress.step(f"{label}: predicting the holdout"):
            quick = score_customers(rfm, bg, gg, outcomes=False, seed=base_seed + 2, **settings)
            labels = label_customers(rfm.join(quick.customers[["p_alive_mean", "clv_mean"]]))
            keyed = rfm.assign(segment=labels["segment"].astype(str),
                               clv_decile=labels["clv_decile"].astype(str))  # fmt: skip
            if by:
                keyed[by] = _group_values(transactions, rfm.index, by, customer_id_col, date_col,
                                          date_format)  # fmt: skip
            observed = {"purchases": rfm["frequency_holdout"].to_numpy(float),
                        "revenue": rfm["total_value_holdout"].to_numpy(float)}  # fmt: skip
            forecasts: dict[str, Any] = {"model": bg}
            if len(fitted) > 1 and average:
                mix = _averaged(fitted, rfm, prediction_draws)
                if mix is not None:
                    forecasts["averaged"] = mix
                    weights.append({"window": w.window, **{f"weight_{k}": float(v)
                                                           for k, v in mix.weights.items()}})  # fmt: skip
            rows = []
            for name, purchase in forecasts.items():
                scores = score_customers(keyed, purchase, gg, by=groupings[1:], seed=base_seed + 2,
                                         observed=observed, **settings)  # fmt: skip
                rows += _total_rows(w, scores, keyed, groupings, prob, forecast=name)
                c = scores.customers
                for q in QUANTITIES:
                    customers.append({
                        "window": w.window, "forecast": name, "quantity": q,
                        "n_customers": len(c), "pi_coverage": float(c[f"{q}_pi_covered"].mean()),
                        "mean_pit": float(c[f"{q}_pit"].mean()),
                        "mean_abs_error": float(np.mean(np.abs(observed[q] - c[f"{q}_mean"]))),
                    })  # fmt: skip
                    counts, edges = np.histogram(c[f"{q}_pit"].to_numpy(float), bins=PIT_BINS,
                                                 range=(0, 1))  # fmt: skip
                    pit += [{"window": w.window, "forecast": name, "quantity": q,
                             "bin_lower": edges[i], "bin_upper": edges[i + 1],
                             "count": int(counts[i]), "share": counts[i] / max(len(c), 1)}
                            for i in range(PIT_BINS)]  # fmt: skip
        totals += rows
        base = baseline_predictions(rfm, previous, duration)
        for n in baseline_notes(previous, duration, time_unit):
            notes.append(f"window {w.window}: {n}")
        base_rows += _baseline_rows(w, keyed, base, groupings, rows)
        window_rows.append({
            "window": w.window, "calibration_end": str(w.calibration_end.date()),
            "observation_end": str(w.observation_end.date()), "holdout": w.holdout,
            "calibration_length": w.calibration_length, "time_unit": time_unit,
            "n_customers": len(rfm),
            "n_customers_first_seen_in_holdout": int(rfm.attrs.get("n_customers_first_seen_in_holdout", 0)),
            "purchase_model": chosen, "method": method, "seed": base_seed,
            "actual_purchases": float(observed["purchases"].sum()),
            "actual_revenue": float(observed["revenue"].sum()),
            "seconds": round(time.perf_counter() - t0, 2),
        })  # fmt: skip
    if not window_rows:
        failed = [n for n in notes if "could not be fitted" in n]
        first_error = failed[0].split(" and is left out: ", 1)[-1] if failed else "; ".join(notes)
        raise DataError(
            f"no backtest window could be fitted ({len(failed)} of {len(windows)} failed); the "
            f"first: {first_error}"
        )
    models_df = pd.concat(models, ignore_index=True) if models else pd.DataFrame()
    if weights and len(models_df):
        long = pd.DataFrame(weights).melt("window", var_name="model", value_name="stacking_weight")
        long["model"] = long["model"].str.removeprefix("weight_")
        models_df = models_df.merge(long, on=["window", "model"], how="left")
    totals_df = pd.DataFrame(totals)
    calibration = calibrate_totals(totals_df, prob)
    totals_df = calibration.pop("table")
    result = BacktestResult(
        windows=pd.DataFrame(window_rows), totals=totals_df, customers=pd.DataFrame(customers),
        pit=pd.DataFrame(pit), models=models_df,
        baselines=pd.DataFrame(base_rows), calibration=calibration, notes=notes,
        settings=dict(n_windows=n_windows, holdout=windows[0].holdout, time_unit=time_unit,
                      step=step, min_calibration=min_calibration, by=by,
                      purchase_model=purchase_model, method=method, draws=draws, prob=prob,
                      seed=seed, prediction_draws=prediction_draws,
                      observation_end=str(last.date()), first_transaction=str(first.date())),
        seconds=round(time.perf_counter() - t_start, 2),
    )  # fmt: skip
    result.summary = summarise(result)
    return result


# ---------------------------------------------------------------------------------------
# calibrated totals


def calibrated_interval(mean, lower, upper, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The model's interval widened by ``factor`` about its mean: both half-widths scaled.

    ``factor`` below 1 is raised to 1: the calibrated interval is never narrower than the
    model's own.  Count totals stay non-negative (the lower end is clipped at 0).
    """
    k = max(1.0, float(factor))
    mean, lower, upper = (np.asarray(v, dtype=float) for v in (mean, lower, upper))
    return np.maximum(mean - k * (mean - lower), 0.0), mean + k * (upper - mean)


def _factor(z: np.ndarray) -> float:
    z = z[np.isfinite(z)]
    return float(max(1.0, math.sqrt(np.mean(z**2)))) if z.size else 1.0


def calibrate_totals(totals: pd.DataFrame, prob: float = 0.9) -> dict[str, Any]:
    """Empirical widening of the totals' predictive intervals from backtest errors.

    Per forecast and quantity, ``k = max(1, sqrt(mean(z^2)))`` over every window and group of
    ``totals``
    (the rows of :attr:`BacktestResult.totals`, with ``z = (actual - mean) / sd``, ``sd`` the
    normal-equivalent spread of the predictive interval).  Adds ``calibrated_pi_lower`` /
    ``_upper`` (:func:`calibrated_interval` with ``k``), ``in_calibrated_pi``, and the
    out-of-sample check ``in_calibrated_pi_lowo``: each window's rows against the factor of
    the other windows (NaN with a single window).

    Returns
    -------
    dict
        ``factors`` (forecast -> quantity -> k; forecast ``"model"``, and ``"averaged"`` for
        the model average), ``factors_raw`` (the RMS z before flooring at 1),
        ``factors_by_grouping``, ``n_windows``, ``n_totals``, ``method`` (in words), ``prob``
        and ``table`` (``totals`` with the added columns).
    """
    out = totals.copy()
    factors, raw, by_grouping = {}, {}, {}
    out["calibrated_pi_lower"] = np.nan
    out["calibrated_pi_upper"] = np.nan
    out["in_calibrated_pi_lowo"] = pd.Series(np.nan, index=out.index, dtype=object)
    n_windows = int(out["window"].nunique()) if len(out) else 0
    if "forecast" not in out.columns:
        out["forecast"] = "model"
    for (fc, q), part in out.groupby(["forecast", "quantity"], sort=False):
        z = part["z"].to_numpy(float)
        zf = z[np.isfinite(z)]
        raw.setdefault(fc, {})[q] = float(math.sqrt(np.mean(zf**2))) if zf.size else float("nan")
        factors.setdefault(fc, {})[q] = _factor(z)
        by_grouping.setdefault(fc, {})[q] = {
            g: _factor(p["z"].to_numpy(float)) for g, p in part.groupby("grouping")
        }
        lo, hi = calibrated_interval(part["predicted_mean"], part["pi_lower"], part["pi_upper"],
                                     factors[fc][q])  # fmt: skip
        out.loc[part.index, "calibrated_pi_lower"] = lo
        out.loc[part.index, "calibrated_pi_upper"] = hi
        if n_windows > 1:
            for w, rows in part.groupby("window"):
                k = _factor(part.loc[part["window"] != w, "z"].to_numpy(float))
                lo, hi = calibrated_interval(rows["predicted_mean"], rows["pi_lower"],
                                             rows["pi_upper"], k)  # fmt: skip
                a = rows["actual"].to_numpy(float)
                out.loc[rows.index, "in_calibrated_pi_lowo"] = list((lo <= a) & (a <= hi))
    out["in_calibrated_pi"] = (out["calibrated_pi_lower"] <= out["actual"]) & (
        out["actual"] <= out["calibrated_pi_upper"]
    )
    method = (
        f"per quantity, k = max(1, sqrt(mean(z^2))) over {len(out):,} totals (every window, "
        f"grouping and group) of {n_windows} window(s), z = (actual - mean) / sd with sd = "
        f"(pi_upper - pi_lower) / (2 x {_norm_quantile(prob):.4f}), the normal-equivalent "
        f"spread of the {prob:.0%} predictive interval; the calibrated interval scales both "
        "half-widths of the model's interval about its mean by k (never below 1x). The "
        "coverage of the calibrated intervals is measured leaving each window out of its own "
        "factor."
    )
    return {"factors": factors, "factors_raw": raw, "factors_by_grouping": by_grouping,
            "n_windows": n_windows, "n_totals": len(out), "prob": prob, "method": method,
            "table": out}  # fmt: skip


def calibrated_segment_totals(
    segments: pd.DataFrame, calibration: Mapping[str, Any], forecast: str = "model"
) -> pd.DataFrame:
    """A run's segment totals with the backtest's calibrated intervals beside the model's.

    For the report of ``clvbayes run`` after a backtest (opt-in): ``segments`` is a table of
    :func:`clvbayes.predict.score_customers` ``.segments[...]`` (or the report's
    ``segments`` table) with ``{q}_total_mean`` and ``{q}_total_pi_lower/upper``; for
    ``purchases`` and ``revenue`` it adds ``{q}_total_pi_calibrated_lower/upper``
    (:func:`calibrated_interval` with the backtest's factor), and for ``clv`` the revenue
    factor (CLV is margin x discounted revenue; the backtest checks undiscounted revenue
    over its holdout, so this is an extrapolation the report should state, as it should the
    horizon: the factor was measured over the backtest's holdout length).  The model's own
    columns are left as they are.
    """
    factors = dict(calibration.get("factors", {}).get(forecast, {}))
    if "revenue" in factors:
        factors.setdefault("clv", factors["revenue"])
    out = segments.copy()
    for q, k in factors.items():
        cols = [f"{q}_total_mean", f"{q}_total_pi_lower", f"{q}_total_pi_upper"]
        if not all(c in out.columns for c in cols):
            continue
        lo, hi = calibrated_interval(*(out[c] for c in cols), k)
        if q == "clv":  # CLV may be negative (margins, costs): no clipping at 0
            k = max(1.0, float(k))
            mean = out[cols[0]].to_numpy(float)
            lo = mean - k * (mean - out[cols[1]].to_numpy(float))
        out[f"{q}_total_pi_calibrated_lower"] = lo
        out[f"{q}_total_pi_calibrated_upper"] = hi
    return out


# ---------------------------------------------------------------------------------------
# summary


def _share(values) -> dict[str, float | int]:
    v = pd.Series(values).dropna().astype(bool)
    n = len(v)
    p = float(v.mean()) if n else float("nan")
    return {"share": p, "n": n, "se": float(math.sqrt(p * (1 - p) / n)) if n else float("nan")}


def summarise(result: BacktestResult) -> dict[str, Any]:
    """Overall figures: coverage of totals (by quantity and grouping) and of customers."""
    t = result.totals
    prob = result.calibration.get("prob", 0.9)
    out: dict[str, Any] = {"prob": prob, "n_windows": len(result.windows)}
    cover: dict[str, Any] = {}
    for (fc, q), part in t.groupby(["forecast", "quantity"], sort=False):
        all_rows = part["grouping"] == "all"
        cover.setdefault(fc, {})[q] = {
            "whole_base_in_pi": _share(part.loc[all_rows, "in_pi"]),
            "all_totals_in_pi": _share(part["in_pi"]),
            "all_totals_in_ci": _share(part["in_ci"]),
            "all_totals_in_calibrated_pi": _share(part["in_calibrated_pi"]),
            "all_totals_in_calibrated_pi_lowo": _share(part["in_calibrated_pi_lowo"]),
            "whole_base_in_calibrated_pi_lowo": _share(part.loc[all_rows, "in_calibrated_pi_lowo"]),
            "by_grouping_in_pi": {g: _share(p["in_pi"]) for g, p in part.groupby("grouping")},
            "whole_base_relative_error": [float(x) for x in part.loc[all_rows, "relative_error"]],
        }
    out["totals"] = cover
    c = result.customers
    out["customers"] = {}
    for (fc, q), p in c.groupby(["forecast", "quantity"], sort=False):
        out["customers"].setdefault(fc, {})[q] = {
            "pi_coverage": float(np.average(p["pi_coverage"], weights=p["n_customers"])),
            "mean_pit": float(np.average(p["mean_pit"], weights=p["n_customers"])),
        }
    b = result.baselines
    if len(b):
        whole = b[b["grouping"] == "all"]
        out["whole_base_mean_abs_relative_error"] = {
            q: {rule: float(p["relative_error"].abs().mean()) for rule, p in part.groupby("rule")}
            for q, part in whole.groupby("quantity")
        }
    if len(result.models):
        m = result.models
        chosen = m[m["chosen"]]
        out["model_choice"] = {
            "chosen_by_loo": {int(r["window"]): r["model"] for _, r in chosen.iterrows()},
            "loo_choice_best_on_holdout_mae": int(chosen["best_on_holdout_mae"].sum()),
        }
    return out


# ---------------------------------------------------------------------------------------
# report text


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.0f} %"


def backtest_section(result: BacktestResult, *, level: int = 2) -> str:
    """A short markdown section "How often did our intervals hold on your history".

    For the report of ``clvbayes run`` (and the backtest's own summary): the windows, the
    share of totals inside their predictive intervals (whole base, all groups) against the
    nominal probability with its binomial standard error, per-customer coverage, the
    calibration factors and the rules of thumb's errors on the whole base.
    """
    s = result.summary or summarise(result)
    prob = s["prob"]
    h = "#" * level
    w = result.windows
    unit = result.settings.get("time_unit", "weeks")
    lines = [f"{h} How often did our intervals hold on your history", ""]
    lines.append(
        f"A backtest reran the fit at {len(w)} earlier calibration end(s) "
        f"({', '.join(w['calibration_end'])}), each followed by a "
        f"{result.settings.get('holdout', float('nan')):g}-{unit[:-1]} holdout, and set the "
        f"{prob:.0%} predictive intervals against what the customers then did "
        f"({result.settings.get('method')} fits, {result.seconds:.0f} s in all)."
    )
    lines.append("")
    several = len(s["totals"]) > 1
    lines.append(("| forecast " if several else "") + "| quantity | whole base in PI | every total "
                 "in PI (segments, deciles, groups) | calibrated, out of sample | customers in PI |")  # fmt: skip
    lines.append(("|---" if several else "") + "|---|---|---|---|---|")
    for fc, per_q in s["totals"].items():
        for q, e in per_q.items():
            wb, at = e["whole_base_in_pi"], e["all_totals_in_pi"]
            lowo = e["all_totals_in_calibrated_pi_lowo"]
            cust = s["customers"].get(fc, {}).get(q, {}).get("pi_coverage", float("nan"))
            lines.append(
                (f"| {FORECAST_NAMES.get(fc, fc)} " if several else "")
                + f"| {q} | {round(wb['share'] * wb['n'])} of {wb['n']} | {_pct(at['share'])} of "
                f"{at['n']} (se {_pct(at['se'])}) | {_pct(lowo['share'])} | {_pct(cust)} |"
            )
    lines.append("")
    for fc, f in result.calibration.get("factors", {}).items():
        who = f" ({FORECAST_NAMES.get(fc, fc)})" if several else ""
        lines.append(
            f"Calibrated totals (opt-in){who}: widen the model's predictive interval of a total "
            "by "
            + ", ".join(f"{k:.2f}x for {q}" for q, k in f.items())
            + f" about its mean (from {result.calibration.get('n_windows')} window(s); "
            "1.00x: the intervals held as claimed). The model's own intervals stay in the "
            "tables; the calibrated ones are shown beside them."
        )
        lines.append("")
    err = s.get("whole_base_mean_abs_relative_error")
    if err:
        from clvbayes.baselines import RULE_NAMES

        lines.append("Mean absolute error of the whole-base holdout total, relative to the actual:")
        lines.append("")
        lines.append("| forecast | purchases | revenue |")
        lines.append("|---|---|---|")
        for rule in [*s["totals"], *RULE_NAMES]:
            p = err.get("purchases", {}).get(rule, float("nan"))
            r = err.get("revenue", {}).get(rule, float("nan"))
            name = FORECAST_NAMES.get(rule) or RULE_NAMES[rule]
            lines.append(f"| {name} | {_pct(p)} | {_pct(r)} |")
        lines.append("")
    if result.notes:
        lines.append("Notes: " + " ".join(f"{n}." for n in result.notes))
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# the command


#: ``clvbayes backtest --demo`` data sets.
BACKTEST_DEMOS = ("cdnow", "cdnow-master")


def _options(**given: Any) -> SimpleNamespace:
    """The options as ``clvbayes run``'s checks expect them (its defaults for the rest)."""
    import inspect

    from clvbayes.pipeline import run_report

    defaults = {k: p.default for k, p in inspect.signature(run_report).parameters.items()}
    opts = SimpleNamespace(**{**defaults, **given})
    opts.group_by = [given["by"]] if given.get("by") else []
    opts.calibration_end = None
    opts.opportunities = None
    return opts


def check_backtest(opts: SimpleNamespace) -> dict[str, Any]:
    """Every check before the slow steps; returns the priors. Raises UserError."""
    from clvbayes.run_options import (
        UserError,
        check_input,
        check_options,
        check_output,
        load_priors,
    )

    if opts.demo == "donations":
        raise UserError(
            "--demo donations cannot be backtested: it is the published calibration summary of "
            "a 1995 cohort (appeals 1996-2001) written as a transaction log, so which earlier "
            "years a donor gave in is not in it, and a backtest would test made-up dates. Use "
            "--demo cdnow or cdnow-master, or your own transactions file."
        )
    if opts.demo is not None and opts.path is not None:
        raise UserError(f"--demo {opts.demo} and PATH {opts.path}: give one of them.")
    if opts.demo is not None and opts.demo not in BACKTEST_DEMOS:
        raise UserError(f"--demo {opts.demo!r}: choose one of {', '.join(BACKTEST_DEMOS)}.")
    if opts.windows < 1:
        raise UserError(f"--windows {opts.windows}: a backtest needs at least one window.")
    unit = opts.time_unit or "weeks"
    for flag, value in (("--holdout", opts.holdout), ("--step", opts.step),
                        ("--min-calibration", opts.min_calibration)):  # fmt: skip
        if value is None:
            continue
        try:
            _days(value, unit, flag)
        except ValueError as err:
            raise UserError(str(err)) from None
    demo = opts.demo
    opts.demo = None if demo == "cdnow-master" else demo  # run's checks know cdnow only
    try:
        check_options(opts)
        priors = {}
        if opts.priors:
            priors = load_priors(opts.priors, opts.purchase_model or "bgnbd")
        check_output(Path(opts.output), opts.path)
        check_input(opts, priors=priors)
    finally:
        opts.demo = demo
    return priors


def _read(opts: SimpleNamespace) -> tuple[pd.DataFrame, str]:
    from clvbayes.pipeline import _read_input

    if opts.demo == "cdnow-master":
        from clvbayes.datasets import load_cdnow_master_transactions

        tx = load_cdnow_master_transactions()
        # one customer's only repeat purchase is worth 0: Gamma-Gamma cannot use it (clvbayes
        # run refuses the table); left out, as benchmarks/compare_models.py does
        repeat = tx.duplicated("customer_id", keep="first")
        value = tx.loc[repeat].groupby("customer_id")["amount"].sum()
        zero = value.index[value <= 0]
        return tx[~tx["customer_id"].isin(zero)].reset_index(drop=True), (
            f"bundled CDNOW master cohort (23,570 customers; {len(zero)} left out whose repeat "
            f"purchases are all worth 0: {', '.join(map(str, zero))})"
        )
    tx, prov = _read_input(opts)
    return tx, str(prov.get("source") if opts.path is None else opts.path)


def backtest_job(
    path: str | None = None,
    *,
    demo: str | None = None,
    output: str = "clvbayes-backtest",
    windows: int = DEFAULT_WINDOWS,
    holdout: float | None = None,
    step: float | None = None,
    min_calibration: float | None = None,
    by: str | None = None,
    customer_id_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str = "amount",
    date_format: str | None = None,
    sep: str | None = None,
    encoding: str | None = None,
    negative_amounts: str = "error",
    duplicate_rows: str | None = None,
    outlying_dates: str = "error",
    time_unit: str | None = None,
    observation_end: str | None = None,
    purchase_model: str | None = None,
    method: str = "laplace",
    priors: str | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    prob: float = 0.9,
    seed: int = 0,
    prediction_draws: int = 1000,
    plots: bool = True,
    strict: bool = False,
    quiet: bool = False,
    command: str | None = None,
    progress: Any = None,
) -> tuple[BacktestResult, Path]:
    """``clvbayes backtest``: check the options, read the log, backtest it, write the report.

    Each parameter is the option of the same name (``clvbayes backtest --help``).  Without
    ``path`` or ``demo`` it runs on the bundled CDNOW sample (``demo="cdnow-master"``: the
    whole CDNOW cohort).  Returns the result and the report folder.

    Raises
    ------
    UserError, DataError, ModelError
        As :func:`clvbayes.pipeline.run_report` (``clvbayes backtest`` exits 2).
    """
    from clvbayes.progress import Progress
    from clvbayes.report import ReportWriteError
    from clvbayes.report.backtest import write_backtest_report
    from clvbayes.run_options import UserError

    given = dict(locals())
    opts = _options(**{k: v for k, v in given.items() if k not in ("progress", "plots")})
    progress = progress or Progress(quiet, strict=strict)
    with progress.step("checking options and input"):
        loaded = check_backtest(opts)
    with progress.step("reading transactions"):
        tx, source = _read(opts)
    if by and by not in tx.columns:
        raise UserError(
            f"--by column {by!r} is not in the transactions; columns present: "
            f"{', '.join(map(repr, map(str, tx.columns)))}."
        )
    bundled = opts.path is None
    result = run_backtest(
        tx, n_windows=windows, holdout=holdout, step=step, min_calibration=min_calibration,
        time_unit=time_unit or "weeks", observation_end=observation_end,
        customer_id_col=customer_id_col, date_col=date_col, amount_col=amount_col,
        date_format=date_format, negative_amounts=negative_amounts,
        duplicate_rows=duplicate_rows or ("keep" if bundled else "warn"),
        outlying_dates=outlying_dates, by=by, purchase_model=purchase_model or "bgnbd",
        method=method, priors=loaded, draws=draws, tune=tune, chains=chains, prob=prob,
        seed=seed, prediction_draws=prediction_draws or None, progress=progress,
    )  # fmt: skip
    result.settings.update(input=source, command=command, warnings=list(progress.warnings))
    with progress.step(f"writing the backtest report to {output}"):
        try:
            out = write_backtest_report(output, result, protect=[path] if path else [],
                                        plots=plots)  # fmt: skip
        except ReportWriteError as err:
            raise UserError(str(err)) from err
    progress.report_written = True
    return result, out


def result_line(result: BacktestResult, out: Path) -> str:
    """The one-line outcome ``clvbayes backtest`` prints."""
    s = result.summary["totals"]
    prob = result.summary["prob"]
    parts = []
    for fc, per_q in s.items():
        for q, e in per_q.items():
            wb, at = e["whole_base_in_pi"], e["all_totals_in_pi"]
            who = "" if fc == "model" else "averaged "
            parts.append(f"{who}{q}: whole base {round(wb['share'] * wb['n'])}/{wb['n']}, all "
                         f"totals {_pct(at['share'])} of {at['n']}")  # fmt: skip
    f = result.calibration.get("factors", {}).get("model", {})
    cal = ", ".join(f"{q} {k:.2f}x" for q, k in f.items())
    return (
        f"clvbayes: backtest written to {out} ({len(result.windows)} window(s), "
        f"{result.seconds:.1f} s). Totals inside their {prob:.0%} predictive intervals: "
        f"{'; '.join(parts)}. Calibration factors: {cal} (backtest_summary.md)."
    )


def run_command(args: Any, progress: Any = None) -> Path:
    """Run ``clvbayes backtest`` for parsed arguments; print the result line; return the folder."""
    import inspect
    import shlex

    names = [k for k in inspect.signature(backtest_job).parameters
             if k not in ("command", "progress")]  # fmt: skip
    options = {k: getattr(args, k) for k in names if hasattr(args, k)}
    command = "clvbayes " + shlex.join(getattr(args, "argv", ["backtest"]))
    result, out = backtest_job(**options, command=command, progress=progress)
    try:
        print(result_line(result, out), flush=True)
    except BrokenPipeError:
        pass
    return out
