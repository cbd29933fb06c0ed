"""Forecast totals over independently fitted retention models, and the holdout check.

``clvbayes subscriptions`` fits one sBG and one BdW per fit group (every subscriber, or
each plan or cohort) and forecasts each group with its chosen model.
:func:`clvbayes.predict.retention.score_subscribers` gives every subscriber's forecasts and
one model's segment totals; the report also needs totals *across* fit groups (the whole
base, or a cohort that spans several plans), which :func:`forecast_totals` computes the same
way, from per-draw sums: the groups' posteriors are independent, so draw ``s`` of each
group's (evenly thinned) draws together are a joint draw, and each subscriber's future is an
exact posterior-predictive churn period of her group's model.

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

from clvbayes.errors import ModelError
from clvbayes.run_options import UserError

__all__ = ["Holdout", "forecast_totals", "holdout_check", "segment_codes"]


def _thin(model: Any, n: int) -> tuple[np.ndarray, ...]:
    draws = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in model.draws().items()}
    size = next(iter(draws.values())).size
    idx = np.linspace(0, size - 1, n).round().astype(int)
    return tuple(draws[k][idx][:, None] for k in model.param_names)


def forecast_totals(
    parts: list[tuple[Any, np.ndarray, np.ndarray | None]],
    groupings: dict[str, tuple[np.ndarray, list[str]]],
    *,
    horizon: int,
    prob: float,
    discount_rate: float = 0.0,
    seed: int | None = 0,
    n_outcome_samples: int = 1000,
    max_chunk_elements: int = 2_000_000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segment forecasts over several independently fitted models, from per-draw totals.

    Parameters
    ----------
    parts : list of (model, tenure, pay)
        Each fit group's fitted retention model, its active subscribers' ``periods`` and
        their price x margin per period (None without prices; all or none).
    groupings : dict of str to (codes, labels)
        For each grouping (``all``, ``fit_group``, ``cohort``, ``plan``), every subscriber's
        segment code (over the parts' subscribers in order) and the segment labels.
    horizon, prob, discount_rate, seed, n_outcome_samples, max_chunk_elements
        As :func:`clvbayes.predict.retention.score_subscribers`.

    Returns
    -------
    cohorts, totals : DataFrame
        ``cohorts``: one row per (grouping, group, k) with ``subscribers``, ``active_*`` and
        ``revenue_*``; ``totals``: one row per (grouping, group) with ``renewals_total_*``,
        ``revenue_total_*`` and ``value_total_*`` over the horizon.  Means and credible
        intervals come from the expectations per posterior draw, predictive intervals from
        exact churn-period draws (one simulated future per draw and outcome sample), both
        summed over the subscribers within a draw.  The fit groups' posteriors are
        independent, so draw ``s`` of each group's (evenly thinned) draws make a joint draw.
    """
    from clvbayes.predict.summary import draw_stats

    n_s = min(int(next(iter(m.draws().values())).size) for m, _, _ in parts)
    reps = int(np.ceil(max(n_outcome_samples, 1) / n_s))
    n_sim = n_s * reps
    with_pay = parts[0][2] is not None
    q = 1.0 / (1.0 + discount_rate)
    K = int(horizon)
    rng = np.random.default_rng(seed)
    sizes = {name: len(labels) for name, (_, labels) in groupings.items()}
    exp = {name: {"active": np.zeros((K, n_s, g)), "revenue": np.zeros((K, n_s, g))}
           for name, g in sizes.items()}  # fmt: skip
    hist = {name: {"count": np.zeros((n_sim, g, K + 1)), "pay": np.zeros((n_sim, g, K + 1))}
            for name, g in sizes.items()}  # fmt: skip
    sim: dict[str, dict[str, np.ndarray]] = {name: {} for name in sizes}
    offset = 0
    for model, tenure, pay in parts:
        tenure = np.asarray(tenure, dtype=float)
        n = tenure.size
        args = _thin(model, n_s)
        m = model._math
        uniq, inverse = np.unique(tenure, return_inverse=True)
        surv = np.stack([m.conditional_survival(*args, uniq, j) for j in range(1, K + 1)])
        sim_idx = np.arange(n_sim) % n_s
        sim_args = tuple(a[sim_idx] for a in args)
        for name, (codes, labels) in groupings.items():
            c = codes[offset : offset + n]
            count = np.zeros((uniq.size, len(labels)))
            np.add.at(count, (inverse, c), 1.0)
            exp[name]["active"] += surv @ count
            if with_pay:
                money = np.zeros((uniq.size, len(labels)))
                np.add.at(money, (inverse, c), pay)
                exp[name]["revenue"] += surv @ money
        step = max(1, int(max_chunk_elements) // n_sim)
        rows = np.arange(n_sim)[:, None]
        for c0 in range(0, n, step):
            t = tenure[c0 : c0 + step]
            left = m.sample_churn_period(rng, *sim_args, t) - t  # due dates survived + 1
            # renewals among the next K due dates; still active after k more <=> renew >= k
            renew = np.clip(left - 1.0, 0.0, K).astype(np.int64)
            for name, (codes, labels) in groupings.items():
                g = len(labels)
                cell = (rows * g + codes[offset + c0 : offset + c0 + t.size]) * (K + 1) + renew
                size = n_sim * g * (K + 1)
                hist[name]["count"] += np.bincount(cell.ravel(), minlength=size).reshape(
                    n_sim, g, K + 1
                )
                if with_pay:
                    w = np.broadcast_to(pay[c0 : c0 + t.size], cell.shape).ravel()
                    hist[name]["pay"] += np.bincount(cell.ravel(), weights=w, minlength=size
                                                     ).reshape(n_sim, g, K + 1)  # fmt: skip
        offset += n
    r = np.arange(K + 1, dtype=float)
    disc_r = (1.0 - q**r) / (1.0 - q) if q < 1.0 else r
    for name in groupings:
        h = hist[name]
        at_least = h["count"][..., ::-1].cumsum(axis=-1)[..., ::-1]  # renew >= k
        sim[name]["active"] = np.moveaxis(at_least[..., 1:], -1, 0)
        sim[name]["renewals_total"] = h["count"] @ r
        if with_pay:
            paid = h["pay"][..., ::-1].cumsum(axis=-1)[..., ::-1]
            sim[name]["revenue"] = np.moveaxis(paid[..., 1:], -1, 0)
            sim[name]["revenue_total"] = h["pay"] @ r
            sim[name]["value_total"] = h["pay"] @ disc_r
    weights = q ** np.arange(K)
    cohort_rows, total_rows = [], []
    quantities = ("active", "revenue") if with_pay else ("active",)
    for name, (codes, labels) in groupings.items():
        n_now = np.bincount(codes, minlength=len(labels))
        for j in range(K):
            row: dict[str, Any] = {"grouping": name, "group": labels, "k": j + 1,
                                   "subscribers": n_now}  # fmt: skip
            for qn in quantities:
                e = draw_stats(exp[name][qn][j], prob, axis=0, kind="ci")
                r = draw_stats(sim[name][qn][j], prob, axis=0, kind="pi")
                row.update({f"{qn}_mean": e["mean"], f"{qn}_ci_lower": e["lower"],
                            f"{qn}_ci_upper": e["upper"], f"{qn}_pi_lower": r["lower"],
                            f"{qn}_pi_upper": r["upper"]})  # fmt: skip
            cohort_rows.append(pd.DataFrame(row))
        expected_totals = {"renewals_total": exp[name]["active"].sum(axis=0)}
        if with_pay:
            expected_totals["revenue_total"] = exp[name]["revenue"].sum(axis=0)
            expected_totals["value_total"] = np.tensordot(weights, exp[name]["revenue"], axes=1)
        row = {"grouping": name, "group": labels, "subscribers": n_now}
        for qn, values in expected_totals.items():
            e = draw_stats(values, prob, axis=0, kind="ci")
            r = draw_stats(sim[name][qn], prob, axis=0, kind="pi")
            row.update({f"{qn}_mean": e["mean"], f"{qn}_ci_lower": e["lower"],
                        f"{qn}_ci_upper": e["upper"], f"{qn}_pi_lower": r["lower"],
                        f"{qn}_pi_upper": r["upper"]})  # fmt: skip
        total_rows.append(pd.DataFrame(row))
    cohorts = pd.concat(cohort_rows, ignore_index=True)
    cohorts = cohorts.sort_values(["grouping", "group", "k"], kind="stable",
                                  key=lambda s: s.map(_grouping_order) if s.name == "grouping"
                                  else s)  # fmt: skip
    totals = pd.concat(total_rows, ignore_index=True)
    return cohorts.reset_index(drop=True), totals


_GROUPINGS = ("all", "fit_group", "plan", "cohort")


def _grouping_order(name: str) -> int:
    return _GROUPINGS.index(name) if name in _GROUPINGS else len(_GROUPINGS)


def segment_codes(table: pd.DataFrame) -> dict[str, tuple[np.ndarray, list[str]]]:
    """The report's groupings of ``table``'s rows: ``all``, ``cohort`` and ``plan`` (where
    present; a fit group is a plan or a cohort, so it is one of them)."""
    out = {"all": (np.zeros(len(table), dtype=np.int64), ["all"])}
    for col in ("cohort", "plan"):
        if col not in table:
            continue
        labels = sorted(pd.unique(table[col]).tolist(), key=str)
        codes = pd.Categorical(table[col], categories=labels).codes.astype(np.int64)
        out[col] = (codes, [str(v) for v in labels])
    return out


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
                  fit_pair: Callable[..., dict[str, Any]]) -> Holdout:  # fmt: skip
    """Refit both models on the data up to the holdout start; project the survivors."""
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
    rows, fitted, metrics = [], {}, {}
    parts: dict[str, list] = {"sbg": [], "bdw": []}
    labels, codes = [], []
    for g in groups:
        part = trunc[trunc["fit_group"] == g]
        active = part[part["churned"] == 0]
        if part.empty or active.empty:
            notes.append(f"fit group {g!r}: no subscriber active at the holdout start; left out.")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fitted[g] = fit_pair(part, g, opts, seed=opts.seed + 1)
        except ModelError as err:
            notes.append(f"fit group {g!r}: the refit on the data up to the holdout start is not "
                         f"possible ({err}); left out.")  # fmt: skip
            continue
        later = subs.reindex(active.index)
        p_h = active["periods"].to_numpy(dtype=float)
        p_full = later["periods"].to_numpy(dtype=float)
        c_full = later["churned"].to_numpy(dtype=float)
        for key in parts:
            parts[key].append((fitted[g][key], p_h, None))
        labels.append(str(g))
        codes.append(np.full(len(active), len(labels) - 1))
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
    code_all = np.concatenate(codes)
    groupings = {"fit_group": (code_all, labels)}
    if len(labels) > 1:
        groupings = {"all": (np.zeros(code_all.size, dtype=np.int64), ["all"]), **groupings}
        tot = actual.groupby("k", as_index=False)[["at_risk", "actual_active", "unknown"]].sum()
        actual = pd.concat([tot.assign(fit_group="all"), actual], ignore_index=True)
    out = []
    for key, p in parts.items():
        cohorts, _ = forecast_totals(p, groupings, horizon=h, prob=opts.prob, seed=opts.seed + 3)
        proj = cohorts.assign(fit_group=cohorts["group"])[
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
    for g, pair in fitted.items():
        for key, model in pair.items():
            d = model.draws()
            fits.append({
                "fit_group": str(g), "model": MODEL_NAMES[key],
                "n_subscribers": int(model.fit_info_.get("n_customers", 0)),
                "loglik": _loglik_at_mean(model),
                **{f"{p}_mean": float(np.mean(d[p])) for p in model.param_names},
            })  # fmt: skip
    return Holdout(table.reset_index(drop=True), settings, notes, fitted, metrics, fits)
