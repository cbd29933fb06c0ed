"""The holdout check of ``clvbayes subscriptions``, and the order of its segment tables.

``clvbayes subscriptions`` fits one sBG and one BdW per fit group (every subscriber, each
plan or cohort, or one pooled model of each family across them) and forecasts each group
with its chosen model through :func:`clvbayes.predict.retention.score_subscribers` given
one model per group: the totals across groups (the whole base, a cohort that spans several
plans) come from the same per-draw sums as one model's, draw ``s`` of each group's (evenly
thinned) draws together making a joint draw.

:func:`holdout_check` refits both models of every fit group on the data as they were at the
holdout start (``holdout_periods`` periods before the end of the data; for survival counts,
the first periods), projects how many of the subscribers active then renew ``k = 1, 2, ...``
more times, and sets the projections against what they did.  A subscriber whose ``k``-th
renewal after the holdout start was not yet due or observed at the end of the data is
``unknown``; periods with unknown outcomes are shown but left out of the errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.run_options import UserError

__all__ = ["Holdout", "holdout_check", "sort_segments"]

_GROUPINGS = ("all", "fit_group", "plan", "cohort")


def _grouping_order(name: str) -> int:
    return _GROUPINGS.index(name) if name in _GROUPINGS else len(_GROUPINGS)


def sort_segments(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of a segment table (``grouping``, ``group``[, ``k``]) in report order: ``all``,
    ``fit_group``, ``plan``, ``cohort``, each group's labels as text, then ``k``."""
    keys = ["grouping", "group", *(["k"] if "k" in table else [])]
    out = table.assign(group=table["group"].astype(str)).sort_values(
        keys, kind="stable",
        key=lambda s: s.map(_grouping_order) if s.name == "grouping" else s,
    )  # fmt: skip
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# the holdout check


def _holdout_start(opts: SimpleNamespace, periods: int) -> pd.Timestamp:
    from clvbayes.data.subscriptions import parse_period

    n, unit = parse_period(opts.period)
    as_of = pd.Timestamp(opts.as_of)
    if unit in ("month", "year"):
        months = n * periods * (12 if unit == "year" else 1)
        return as_of - pd.DateOffset(months=months)
    return as_of - pd.Timedelta(days=n * periods * (7 if unit == "week" else 1))


def _span_periods(subs: pd.DataFrame, opts: SimpleNamespace) -> int:
    """Whole periods of the grid between the earliest start and the observation date."""
    if opts.kind == "survival":
        return int(subs["periods"].max())
    from clvbayes.data.subscriptions import parse_period

    n, unit = parse_period(opts.period)
    first, last = pd.Timestamp(subs["start"].min()), pd.Timestamp(opts.as_of)
    if unit in ("month", "year"):
        months = (last.year - first.year) * 12 + last.month - first.month
        return months // (n * (12 if unit == "year" else 1))
    return (last - first).days // (n * (7 if unit == "week" else 1))


def _truncate(raw: pd.DataFrame, opts: SimpleNamespace, start: pd.Timestamp) -> pd.DataFrame:
    """The input as it was on the holdout start."""
    from clvbayes.data.subscriptions import _parse_optional_dates

    ids = raw[opts.customer_id_col].astype(str)
    day = np.datetime64(start.normalize().to_datetime64(), "ns")
    if opts.kind == "charges":
        dates = _parse_optional_dates(raw[opts.date_col], opts.date_col, ids, opts.date_format)
        return raw[(dates.dt.normalize() <= day).to_numpy()]
    begin = _parse_optional_dates(raw[opts.start_col], opts.start_col, ids, opts.date_format)
    end = _parse_optional_dates(raw[opts.end_col], opts.end_col, ids, opts.date_format)
    keep = (begin <= day).to_numpy()
    out = raw[keep].copy()
    later = (end[keep] > day).to_numpy()
    out[opts.end_col] = out[opts.end_col].astype(object)
    out.loc[out.index[later], opts.end_col] = np.nan  # cancelled after the holdout start
    return out


@dataclass
class Holdout:
    """The holdout check: its table (None without one), settings, notes, the refitted models
    by fit group, the error figures by (fit group, model) and the refits' parameters."""

    table: pd.DataFrame | None
    settings: dict[str, Any]
    notes: list[str]
    models: dict[str, dict[str, Any]]
    metrics: dict[tuple[str, str], dict[str, Any]]
    fits: list[dict[str, Any]] = field(default_factory=list)


def holdout_check(raw: pd.DataFrame, subs: pd.DataFrame, opts: SimpleNamespace, groups: list[str],
                  summarise: Callable[..., pd.DataFrame],
                  fit_groups: Callable[..., tuple[dict[str, dict[str, Any]], list[str]]]
                  ) -> Holdout:  # fmt: skip
    """Refit both models on the data up to the holdout start; project the survivors.

    ``fit_groups(table, groups, opts, seed)`` refits: ``({group: {"sbg": m, "bdw": m}},
    notes)`` (one pair per group, or a pooled fit's group models); a group it leaves out is
    named in the notes.
    """
    from clvbayes.predict.retention import score_subscribers

    span = _span_periods(subs, opts)
    h = opts.holdout_periods
    auto = h is None
    if auto:
        h = min(opts.horizon, span // 4)
    settings: dict[str, Any] = {"holdout_periods": int(h), "chosen_automatically": auto,
                                "span_periods": int(span)}  # fmt: skip
    notes: list[str] = []
    empty = Holdout(None, settings, notes, {}, {})
    if h <= 0:
        notes.append("No holdout check: " + ("--holdout-periods 0." if not auto else
                     f"the data span {span} period(s), too few to hold a quarter out."))  # fmt: skip
        return empty
    if h >= span:
        raise UserError(
            f"--holdout-periods {h} leaves no data to fit on: the data span {span} period(s) of "
            f"{opts.period}. Pass a smaller --holdout-periods (e.g. {max(1, span // 4)}) or 0."
        )
    if opts.kind == "survival":
        cal = int(subs["periods"].max()) - h
        trunc = summarise(raw, opts, calibration_periods=cal)
        settings.update(calibration_periods=cal, compared_periods=f"{cal + 1}..{cal + h}")
    else:
        start = _holdout_start(opts, h)
        settings.update(holdout_start=str(start.date()), as_of=str(pd.Timestamp(opts.as_of).date()))
        with warnings.catch_warnings():  # the same data warnings as the full summary
            warnings.simplefilter("ignore")
            trunc = summarise(_truncate(raw, opts, start), opts, as_of=start)
    rows, metrics = [], {}
    present = [g for g in groups if ((trunc["fit_group"] == g) & (trunc["churned"] == 0)).any()]
    for g in groups:
        if g not in present:
            notes.append(f"fit group {g!r}: no subscriber active at the holdout start; left out.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted, fit_notes = fit_groups(trunc, present, opts, opts.seed + 1)
    notes += fit_notes
    labels = [g for g in present if g in fitted]
    actives = []
    for g in labels:
        active = trunc[(trunc["fit_group"] == g) & (trunc["churned"] == 0)]
        actives.append(active)
        later = subs.reindex(active.index)
        p_h = active["periods"].to_numpy(dtype=float)
        p_full = later["periods"].to_numpy(dtype=float)
        c_full = later["churned"].to_numpy(dtype=float)
        ks = np.arange(1, h + 1)
        survived = p_full[None, :] >= p_h[None, :] + ks[:, None]
        known = survived | (c_full[None, :] == 1)
        known &= np.isfinite(p_full)[None, :]
        rows.append(pd.DataFrame({"fit_group": str(g), "k": ks, "at_risk": len(active),
                                  "actual_active": survived.sum(axis=1),
                                  "unknown": (~known).sum(axis=1)}))  # fmt: skip
    if not rows:
        notes.append("No holdout check: no fit group could be refitted on the earlier data.")
        return Holdout(None, settings, notes, {}, {})
    actual = pd.concat(rows, ignore_index=True)
    if len(labels) > 1:
        tot = actual.groupby("k", as_index=False)[["at_risk", "actual_active", "unknown"]].sum()
        actual = pd.concat([tot.assign(fit_group="all"), actual], ignore_index=True)
    at_start = pd.concat(actives)
    at_start.attrs = dict(trunc.attrs)
    out = []
    for key in ("sbg", "bdw"):
        res = score_subscribers(
            at_start, {g: fitted[g][key] for g in labels}, group_col="fit_group",
            by="fit_group", horizon=h, price_col=None, prob=opts.prob, seed=opts.seed + 3,
        )  # fmt: skip
        seg = res.segments
        seg = seg[(seg["grouping"] == "fit_group") | ((seg["grouping"] == "all")
                                                      & (len(labels) > 1))]  # fmt: skip
        proj = seg.assign(fit_group=seg["group"].astype(str))[
            ["fit_group", "k", "active_mean", "active_ci_lower", "active_ci_upper",
             "active_pi_lower", "active_pi_upper"]]  # fmt: skip
        merged = actual.merge(proj, on=["fit_group", "k"], how="left").assign(model=key)
        out.append(merged)
    table = pd.concat(out, ignore_index=True)
    table["complete"] = table["unknown"] == 0
    table["in_pi"] = (table["active_pi_lower"] <= table["actual_active"]) & (
        table["actual_active"] <= table["active_pi_upper"]
    )
    order = {g: i for i, g in enumerate(["all", *labels])}
    rank = {"fit_group": order, "model": {"sbg": 0, "bdw": 1}}
    table = table.sort_values(["fit_group", "model", "k"], kind="stable",
                              key=lambda s: s.map(rank[s.name]) if s.name in rank else s)  # fmt: skip
    for (g, key), part in table.groupby(["fit_group", "model"], sort=False):
        done = part[part["complete"]]
        err = done["active_mean"] - done["actual_active"]
        metrics[(g, key)] = {
            "holdout_periods": len(done),
            "holdout_mae": float(np.abs(err).mean()) if len(done) else np.nan,
            "holdout_mape": float((np.abs(err) / done["actual_active"].clip(lower=1)).mean())
            if len(done) else np.nan,
            "holdout_pi_coverage": float(done["in_pi"].mean()) if len(done) else np.nan,
        }  # fmt: skip
    incomplete = table.loc[~table["complete"], "k"].unique()
    if len(incomplete):
        notes.append(
            f"periods k = {', '.join(map(str, sorted(incomplete)))} after the holdout start are "
            "left out of the errors: some renewals due in them were not yet observed at the end "
            "of the data (the 'unknown' column)."
        )
    settings["refit_method"] = opts.method
    from clvbayes.report.retention_comparison import MODEL_NAMES, _loglik_at_mean

    fits = []
    for g in labels:
        part = trunc[trunc["fit_group"] == g]
        for key, model in fitted[g].items():
            d = model.draws()
            fits.append({
                "fit_group": str(g), "model": MODEL_NAMES[key], "n_subscribers": len(part),
                "loglik": _loglik_at_mean(model, part),
                **{f"{p}_mean": float(np.mean(d[p])) for p in model.param_names},
            })  # fmt: skip
    if getattr(opts, "pool_by", None):
        settings["refit"] = f"pooled across {opts.pool_by}"
    return Holdout(table.reset_index(drop=True), settings, notes, fitted, metrics, fits)
