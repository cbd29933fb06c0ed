"""Subscriber and cohort forecasts of a fitted retention model, with both interval kinds.

:func:`score_subscribers` takes a fitted contractual model (:class:`~clvbayes.models.sbg.
ShiftedBetaGeometricModel`, :class:`~clvbayes.models.bdw.BetaDiscreteWeibullModel`: any
model with ``_math`` functions ``conditional_survival``, ``hazard``, ``derl`` and
``sample_churn_period`` taking its parameters first) and a subscribers table (``periods``
renewals completed, ``churned`` 0/1, optional price and grouping columns) and forecasts the
next ``horizon`` due dates of every **active** subscriber:

==================  ==================================================================  ======
quantity            meaning                                                             kinds
==================  ==================================================================  ======
p_renew             P(renews at the next due date)                                      ci
churn_risk          P(cancels at the next due date) = 1 - p_renew (rank by it)          ci
renewals            renewals among the next ``horizon`` due dates                       ci, pi
disc_renewals       the same, the j-th due date weighted by ``(1 + d)^-(j - 1)``        ci, pi
value               price x margin x disc_renewals (currency; with a price column)      ci, pi
derl                discounted expected residual lifetime, no horizon (FH2010)          ci
residual_value      price x margin x derl (currency; with a price column)              ci
==================  ==================================================================  ======

and per segment (``"all"`` and each ``by`` column) and future period ``k = 1..horizon``: the
number of these subscribers still active after ``k`` more renewals and the renewal revenue
of period ``k`` (price x margin of those who pay), each with a credible interval of the
expectation and a predictive interval of the count, computed from per-draw sums over
subscribers (never by adding intervals).

Time: every horizon, period and discount rate is per period of the table's grid
(``attrs["period"]``, e.g. one month).  The first future due date counts undiscounted, as in
FH2010's DERL.

How it scales: expectations are computed per distinct tenure (``periods``) and draw;
outcomes come from exact posterior-predictive churn periods (``theta`` from its posterior
given survival, then the period of cancellation), drawn per subscriber in chunks, so memory
is bounded by ``max_chunk_elements`` (draws x subscribers) and the horizon adds only
``(draws x segments x horizon)`` accumulators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from clvbayes.predict.summary import DEFAULT_PROB, draw_stats, tail_probs

__all__ = ["SubscriberScores", "score_subscribers"]


@dataclass
class SubscriberScores:
    """Result of :func:`score_subscribers`.

    Attributes
    ----------
    subscribers : pandas.DataFrame
        One row per active subscriber (input order): ``{q}_mean``, ``{q}_sd``,
        ``{q}_ci_lower/upper`` and, for outcomes, ``{q}_pi_lower/upper``.
    cohorts : dict of str to pandas.DataFrame
        ``"all"`` and one table per ``by`` column, indexed by (segment, period ``k``):
        ``subscribers`` (active now), ``active_*`` (still active after ``k`` more renewals)
        and, with a price, ``revenue_*`` (renewal revenue of period ``k``), each ``_mean``,
        ``_ci_lower/upper``, ``_pi_lower/upper``.
    settings : dict
        Horizon, discount rate, margin, interval probability, draws, seed, period grid,
        counts of active and excluded (cancelled) subscribers, ``parameter_uncertainty``.
    """

    subscribers: pd.DataFrame
    cohorts: dict[str, pd.DataFrame] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def score_subscribers(
    table: pd.DataFrame,
    model: Any,
    *,
    horizon: int,
    discount_rate: float = 0.0,
    price_col: str | None = "price",
    margin: float = 1.0,
    prob: float = DEFAULT_PROB,
    by: str | list[str] | None = None,
    seed: int | None = 0,
    n_draws: int | None = None,
    n_outcome_samples: int = 1000,
    max_chunk_elements: int = 2_000_000,
    observed: dict[str, Any] | None = None,
) -> SubscriberScores:
    """Forecast every active subscriber and each segment's renewals, with ci and pi.

    Parameters
    ----------
    table : pandas.DataFrame
        Subscribers (``periods``, ``churned``; from
        :func:`clvbayes.data.subscriptions.summarize_subscriptions`); cancelled ones are
        excluded from the forecasts (counted in ``settings``).
    model : RetentionModel
        Fitted sBG or BdW model (on the same period grid).
    horizon : int
        Future due dates to forecast (periods of the grid, >= 1).
    discount_rate : float
        Discount rate per period (>= 0) for ``disc_renewals``, ``value`` and ``derl``
        (``derl`` needs > 0; with 0 its columns are omitted).
    price_col : str or None
        Column with the price per period (currency).  Without it (missing column or None)
        the value and revenue quantities are omitted.
    margin : float
        Share of the price kept (1 = revenue).
    prob : float
        Probability of every interval (equal-tailed, default 0.9).
    by : str or list of str, optional
        Grouping columns for the cohort tables (cohort, plan, ...).
    seed : int, optional
        Seed of the outcome simulation.
    n_draws : int, optional
        Use at most this many evenly spaced posterior draws.
    n_outcome_samples : int
        Minimum simulated futures per subscriber behind each predictive interval.
    max_chunk_elements : int
        Draws x subscribers per simulation chunk (bounds memory).
    observed : dict, optional
        Observed outcomes over the same horizon, one value per *active* subscriber in table
        order: ``{"renewals": ...}`` (and/or ``"disc_renewals"``).  Adds ``{q}_pi_covered``
        and ``{q}_pit`` (randomised PIT: uniform when the model is calibrated).

    Returns
    -------
    SubscriberScores
    """
    from clvbayes.data.subscriptions import validate_subscribers
    from clvbayes.errors import DataError

    tail_probs(prob)
    horizon = _whole(horizon, "horizon", minimum=1)
    if not (np.isfinite(discount_rate) and discount_rate >= 0):
        raise ValueError(
            f"discount_rate must be a finite rate >= 0 per period, got {discount_rate!r}."
        )
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite share >= 0, got {margin!r}.")
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in table.columns]
    if missing:
        raise DataError(
            f"Grouping column(s) {missing} not in the subscribers table; columns: "
            f"{list(map(str, table.columns))}."
        )
    checked = validate_subscribers(table)
    fitted = getattr(model, "period_", None) or getattr(model, "time_unit_", None)
    grid = table.attrs.get("period") or table.attrs.get("time_unit")
    if fitted and grid and str(fitted) != str(grid):
        raise DataError(
            f"The subscribers table is on a {grid!r} grid but the model was fitted on {fitted!r}: "
            "summarise the subscriptions on the model's grid."
        )
    active = checked[checked["churned"] == 0]
    if active.empty:
        raise DataError(
            "No active subscriber (churned 0) to forecast: every subscriber has cancelled."
        )
    price = None
    if price_col is not None and price_col in active.columns:
        price = pd.to_numeric(active[price_col], errors="coerce").to_numpy(dtype=float) * margin
        bad = ~(np.isfinite(price) & (price >= 0))
        if bad.any():
            ids = active.index[bad][:5].tolist()
            raise DataError(
                f"Column {price_col!r} has {int(bad.sum())} active subscribers with a missing, "
                f"negative or non-numeric price per period (first ids {ids}); fix them or pass "
                "price_col=None."
            )

    params = _flat_draws(model, n_draws)
    n_s = next(iter(params.values())).shape[0]
    args = tuple(params[k] for k in model.param_names)
    math = model._math
    tenure = active["periods"].to_numpy(dtype=float)
    uniq, inverse = np.unique(tenure, return_inverse=True)
    q = 1.0 / (1.0 + discount_rate)

    # expectations per (draw, distinct tenure): survival to each future due date
    surv = np.stack([math.conditional_survival(*args, uniq, j) for j in range(1, horizon + 1)])
    expect = {
        "p_renew": surv[0],
        "churn_risk": 1.0 - surv[0],
        "renewals": surv.sum(axis=0),
        "disc_renewals": np.tensordot(q ** np.arange(horizon), surv, axes=1),
    }
    if discount_rate > 0:
        expect["derl"] = math.derl(*args, uniq, discount=discount_rate)
    per_hist = {k: draw_stats(v, prob, axis=0, kind="ci") for k, v in expect.items()}
    cols = {}
    for name, st in per_hist.items():
        for stat in ("mean", "sd", "lower", "upper"):
            key = {"lower": "ci_lower", "upper": "ci_upper"}.get(stat, stat)
            cols[f"{name}_{key}"] = st[stat][inverse]
    # outcomes per distinct tenure (exact predictive draws) -> predictive intervals
    rng = np.random.default_rng(seed)
    reps = int(np.ceil(max(n_outcome_samples, 1) / n_s))
    sample_draw = np.arange(n_s * reps) % n_s
    sim_args = tuple(a[sample_draw] for a in args)
    churn = math.sample_churn_period(rng, *sim_args, uniq)  # (n_sim, U)
    renew = np.clip(churn - uniq - 1.0, 0.0, horizon)
    disc = (1.0 - q**renew) / (1.0 - q) if q < 1.0 else renew
    sims = {"renewals": renew, "disc_renewals": disc}
    for name, sim in sims.items():
        st = draw_stats(sim, prob, axis=0, kind="pi")
        cols[f"{name}_pi_lower"] = st["lower"][inverse]
        cols[f"{name}_pi_upper"] = st["upper"][inverse]
    suffixes = ("mean", "sd", "ci_lower", "ci_upper", "pi_lower", "pi_upper")
    order = [f"{q}_{k}" for q in expect for k in suffixes if f"{q}_{k}" in cols]
    subscribers = pd.DataFrame({k: cols[k] for k in order}, index=active.index)
    for name, obs in (observed or {}).items():
        if name not in sims:
            raise ValueError(f"observed has unknown outcome {name!r}; valid: {sorted(sims)}.")
        obs = np.asarray(obs, dtype=float)
        if obs.shape != (len(active),):
            raise ValueError(
                f"observed[{name!r}] needs one value per active subscriber ({len(active)}), "
                f"got shape {obs.shape}."
            )
        block = sims[name][:, inverse]  # (n_sim, n_active)
        below = (block < obs).mean(axis=0)
        at_or_below = (block <= obs).mean(axis=0)
        subscribers[f"{name}_pi_covered"] = (subscribers[f"{name}_pi_lower"] <= obs) & (
            obs <= subscribers[f"{name}_pi_upper"]
        )
        subscribers[f"{name}_pit"] = below + rng.uniform(size=obs.size) * (at_or_below - below)
    if price is not None:
        for src, dst in (("disc_renewals", "value"), ("derl", "residual_value")):
            for suffix in ("mean", "sd", "ci_lower", "ci_upper", "pi_lower", "pi_upper"):
                if f"{src}_{suffix}" in subscribers:
                    subscribers[f"{dst}_{suffix}"] = subscribers[f"{src}_{suffix}"] * price

    # cohort tables: per-draw sums (ci) and simulated sums over subscribers (pi)
    groupings = {"all": (np.zeros(len(active), dtype=np.int64), pd.Index(["all"], name="segment"))}
    for col in by:
        codes, labels = pd.factorize(active[col], use_na_sentinel=False)
        groupings[col] = (codes.astype(np.int64), pd.Index(labels, name=col))
    cohorts = {}
    for g, (codes, labels) in groupings.items():
        onehot = sparse.csr_matrix(
            (np.ones(len(active)), (inverse, codes)), shape=(uniq.size, len(labels))
        )
        weights = {"active": onehot}
        if price is not None:
            weights["revenue"] = sparse.csr_matrix(
                (price, (inverse, codes)), shape=(uniq.size, len(labels))
            )
        exp_tot = {
            k: np.stack([(m.T @ surv[j].T).T for j in range(horizon)]) for k, m in weights.items()
        }
        sim_tot = _simulated_totals(
            rng, math, sim_args, tenure, codes, len(labels), price, horizon, max_chunk_elements
        )
        cohorts[g] = _cohort_table(
            exp_tot, sim_tot, labels, np.bincount(codes, minlength=len(labels)), prob
        )
    settings = {
        "horizon": horizon, "discount_rate_per_period": float(discount_rate), "margin": float(margin),
        "prob": float(prob), "n_draws": int(n_s), "n_outcome_samples": int(sample_draw.size),
        "seed": seed, "by": by, "period": grid, "price_col": price_col if price is not None else None,
        "n_active": len(active), "n_cancelled_excluded": int(len(checked) - len(active)),
        "parameter_uncertainty": bool(n_s > 1),
    }  # fmt: skip
    return SubscriberScores(subscribers=subscribers, cohorts=cohorts, settings=settings)


def _whole(value, name: str, minimum: int = 0) -> int:
    v = float(value)
    if not (np.isfinite(v) and v == np.floor(v) and v >= minimum):
        raise ValueError(f"{name} must be a whole number of periods >= {minimum}, got {value!r}.")
    return int(v)


def _flat_draws(model, n_draws):
    draws = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in model.draws().items()}
    size = next(iter(draws.values())).size
    n = size if n_draws is None else min(size, int(n_draws))
    idx = np.linspace(0, size - 1, n).round().astype(int)
    return {k: v[idx][:, None] for k, v in draws.items()}


def _simulated_totals(rng, math, sim_args, tenure, codes, n_groups, price, horizon, max_elements):
    """Per outcome sample and segment: subscribers active after k more renewals, and revenue.

    Each subscriber's churn period is an independent exact predictive draw; arrays
    ``(horizon, n_sim, n_groups)``.
    """
    n_sim = sim_args[0].shape[0]
    out = {"active": np.zeros((horizon, n_sim, n_groups))}
    if price is not None:
        out["revenue"] = np.zeros((horizon, n_sim, n_groups))
    step = max(1, max_elements // max(n_sim, 1))
    ks = np.arange(1, horizon + 1)
    for c0 in range(0, tenure.size, step):
        t = tenure[c0 : c0 + step]
        churn = math.sample_churn_period(rng, *sim_args, t)  # (n_sim, c)
        left = churn - t  # due dates survived + 1
        onehot = sparse.csr_matrix(
            (np.ones(t.size), (np.arange(t.size), codes[c0 : c0 + step])), shape=(t.size, n_groups)
        )
        pay = onehot if price is None else sparse.csr_matrix(
            (price[c0 : c0 + step], (np.arange(t.size), codes[c0 : c0 + step])),
            shape=(t.size, n_groups),
        )  # fmt: skip
        for j, k in enumerate(ks):
            alive = (left > k).astype(float)  # still active after k more renewals
            out["active"][j] += (onehot.T @ alive.T).T
            if price is not None:
                out["revenue"][j] += (pay.T @ alive.T).T
    return out


def _cohort_table(exp_tot, sim_tot, labels, n_now, prob) -> pd.DataFrame:
    horizon = next(iter(exp_tot.values())).shape[0]
    rows = []
    for j in range(horizon):
        row = {"subscribers": np.asarray(n_now, dtype=np.int64)}
        for name in exp_tot:
            e = draw_stats(exp_tot[name][j], prob, axis=0, kind="ci")
            r = draw_stats(sim_tot[name][j], prob, axis=0, kind="pi")
            row[f"{name}_mean"] = e["mean"]
            row[f"{name}_ci_lower"], row[f"{name}_ci_upper"] = e["lower"], e["upper"]
            row[f"{name}_pi_lower"], row[f"{name}_pi_upper"] = r["lower"], r["upper"]
        frame = pd.DataFrame(row, index=labels)
        frame.insert(0, "k", j + 1)
        rows.append(frame)
    out = pd.concat(rows).reset_index().set_index([labels.name, "k"]).sort_index()
    return out
