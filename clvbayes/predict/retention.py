"""Subscriber and cohort forecasts of fitted retention models, with both interval kinds.

:func:`score_subscribers` takes a fitted contractual model (:class:`~clvbayes.models.sbg.
ShiftedBetaGeometricModel`, :class:`~clvbayes.models.bdw.BetaDiscreteWeibullModel`: any
model with ``_math`` functions ``conditional_survival``, ``hazard``, ``derl`` and
``sample_churn_period`` taking its parameters first) -- or one such model per group of
subscribers (``{group: model}`` with ``group_col``: the fit groups of ``clvbayes
subscriptions``, or the group models of a pooled fit) -- and a subscribers table
(``periods`` renewals completed, ``churned`` 0/1, optional price and grouping columns) and
forecasts the next ``horizon`` due dates of every **active** subscriber:

==================  ==================================================================  ======
quantity            meaning                                                             kinds
==================  ==================================================================  ======
p_renew             P(renews at the next due date)                                      ci
churn_risk          P(cancels at the next due date) = 1 - p_renew (rank by it)          ci
renewals            renewals among the next ``horizon`` due dates                       ci, pi
disc_renewals       the same, the j-th due date weighted by ``(1 + d)^-(j - 1)``        ci, pi
value               amount x margin x disc_renewals (currency; with a price column)     ci, pi
derl                discounted expected residual lifetime, no horizon (FH2010)          ci
residual_value      amount x margin x derl (currency; with a price column)             ci
==================  ==================================================================  ======

The amount per renewal is the price per period (``price_col``, constant), or, with
``spend_model`` (a fitted :class:`~clvbayes.models.GammaGammaModel`, for charges whose
amount varies from delivery to delivery), each subscriber's expected charge per posterior
draw, ``E[z | x, z-bar]`` from her ``frequency`` (repeat charges) and ``monetary_value``
(their mean amount) columns: then ``value`` and ``residual_value`` are the per-draw
products of the spend and the retention draws (independent posteriors, draw ``s`` of each
paired), and the predictive interval of ``value`` and of the renewal revenue simulates every
future charge's amount (``z ~ Gamma(p, nu)``, ``nu`` from the subscriber's spend-rate
posterior).

Per segment (``"all"`` and each ``by`` column) and future period ``k = 1..horizon``: the
number of these subscribers still active after ``k`` more renewals and the renewal revenue
of period ``k`` (amount x margin of those who pay), and over the whole horizon the renewal
payments, revenue and discounted value, each with a credible interval of the expectation
and a predictive interval of the outcome, computed from per-draw sums over subscribers
(never by adding intervals).  With one model per group, draw ``s`` of each group's (evenly
thinned) draws together make a joint draw: the groups' posteriors are independent (separate
fits), or draw ``s`` of one joint posterior (a pooled fit's group models).

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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from clvbayes.predict.summary import DEFAULT_PROB, draw_stats, tail_probs

__all__ = ["SubscriberScores", "score_subscribers", "segment_forecasts"]

_SUFFIXES = ("mean", "sd", "ci_lower", "ci_upper", "pi_lower", "pi_upper")


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
        counts of active and excluded (cancelled) subscribers, ``parameter_uncertainty``,
        ``value_source`` (``"price"``, ``"spend_model"`` or None).
    segments : pandas.DataFrame
        The cohort tables in one long table: ``grouping``, ``group`` (text), ``k``,
        ``subscribers``, ``active_*``, ``revenue_*``.
    totals : pandas.DataFrame
        One row per (grouping, group) over the horizon: ``renewals_total_*`` and, with a
        price, ``revenue_total_*`` (undiscounted) and ``value_total_*`` (discounted), each
        ``_mean``, ``_ci_lower/upper``, ``_pi_lower/upper``.
    """

    subscribers: pd.DataFrame
    cohorts: dict[str, pd.DataFrame] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    segments: pd.DataFrame | None = None
    totals: pd.DataFrame | None = None


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
    group_col: str | None = None,
    spend_model: Any = None,
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
    model : RetentionModel or mapping of group to RetentionModel
        Fitted sBG or BdW model (on the same period grid; with covariates or pooling, see
        :mod:`clvbayes.models.segmented`, each subscriber in its own cell), or one per group of
        ``group_col`` (e.g. ``{g: pooled.group_model(g) for g in pooled.groups_}``).
    horizon : int
        Future due dates to forecast (periods of the grid, >= 1).
    discount_rate : float
        Discount rate per period (>= 0) for ``disc_renewals``, ``value`` and ``derl``
        (``derl`` needs > 0; with 0 its columns are omitted).
    price_col : str or None
        Column with the price per period (currency).  Without it (missing column or None)
        and without ``spend_model`` the value and revenue quantities are omitted.
    margin : float
        Share of the amount kept (1 = revenue).
    prob : float
        Probability of every interval (equal-tailed, default 0.9).
    by : str or list of str, optional
        Grouping columns for the cohort tables (cohort, plan, ...).
    group_col : str, optional
        With a mapping of models: the column naming each subscriber's group (default
        ``"fit_group"``).
    spend_model : GammaGammaModel, optional
        Fitted spend model of the amount per charge; the table then needs ``frequency``
        (repeat charges of the spell, charges - 1) and ``monetary_value`` (their mean
        amount) and ``price_col`` is not used.
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
    grid = table.attrs.get("period") or table.attrs.get("time_unit")
    active = checked[checked["churned"] == 0]
    if active.empty:
        raise DataError(
            "No active subscriber (churned 0) to forecast: every subscriber has cancelled."
        )
    parts = _parts(model, active, group_col)
    for _, m, _ in parts:
        fitted = getattr(m, "period_", None) or getattr(m, "time_unit_", None)
        if fitted and grid and str(fitted) != str(grid):
            raise DataError(
                f"The subscribers table is on a {grid!r} grid but the model was fitted on "
                f"{fitted!r}: summarise the subscriptions on the model's grid."
            )
    n_s = min(_n_draws(m) for _, m, _ in parts)
    if spend_model is not None:
        n_s = min(n_s, _n_draws(spend_model))
    n_s = n_s if n_draws is None else min(n_s, int(n_draws))

    price, spend = None, None
    if spend_model is not None:
        spend = _spend_state(spend_model, active, n_s, margin)
    elif price_col is not None and price_col in active.columns:
        price = pd.to_numeric(active[price_col], errors="coerce").to_numpy(dtype=float) * margin
        bad = ~(np.isfinite(price) & (price >= 0))
        if bad.any():
            ids = active.index[bad][:5].tolist()
            raise DataError(
                f"Column {price_col!r} has {int(bad.sum())} active subscribers with a missing, "
                f"negative or non-numeric price per period (first ids {ids}); fix them or pass "
                "price_col=None."
            )

    rng = np.random.default_rng(seed)
    q = 1.0 / (1.0 + discount_rate)
    reps = int(np.ceil(max(n_outcome_samples, 1) / n_s))
    n_sim = n_s * reps
    blocks, part_sims = [], []
    for _, m, rows in parts:
        args = _thin(m, n_s)
        block, sims = _per_subscriber(
            m._math, args, active["periods"].to_numpy(dtype=float)[rows], horizon, q,
            discount_rate, prob, rng, reps,
            None if price is None else price[rows],
            None if spend is None else {k: v[:, rows] for k, v in spend["expected"].items()},
        )  # fmt: skip
        block.index = active.index[rows]
        blocks.append(block)
        part_sims.append(sims)
    subscribers = pd.concat(blocks).reindex(active.index)
    for name, obs in (observed or {}).items():
        if name not in ("renewals", "disc_renewals"):
            raise ValueError(
                f"observed has unknown outcome {name!r}; valid: ['disc_renewals', 'renewals']."
            )
        obs = np.asarray(obs, dtype=float)
        if obs.shape != (len(active),):
            raise ValueError(
                f"observed[{name!r}] needs one value per active subscriber ({len(active)}), "
                f"got shape {obs.shape}."
            )
        below, at_or_below = np.zeros(len(active)), np.zeros(len(active))
        for (_, _, rows), sims in zip(parts, part_sims, strict=True):
            block = sims[name]  # (n_sim, n_part)
            below[rows] = (block < obs[rows]).mean(axis=0)
            at_or_below[rows] = (block <= obs[rows]).mean(axis=0)
        subscribers[f"{name}_pi_covered"] = (subscribers[f"{name}_pi_lower"] <= obs) & (
            obs <= subscribers[f"{name}_pi_upper"]
        )
        subscribers[f"{name}_pit"] = below + rng.uniform(size=obs.size) * (at_or_below - below)

    groupings = {"all": (np.zeros(len(active), dtype=np.int64), pd.Index(["all"], name="segment"))}
    for col in by:
        codes, labels = pd.factorize(active[col], use_na_sentinel=False)
        groupings[col] = (codes.astype(np.int64), pd.Index(labels, name=col))
    segments, totals, value_pi = segment_forecasts(
        [(m, rows) for _, m, rows in parts], active["periods"].to_numpy(dtype=float),
        {k: (c, [str(v) for v in labels]) for k, (c, labels) in groupings.items()},
        horizon=horizon, prob=prob, discount_rate=discount_rate, rng=rng, n_draws=n_s,
        n_outcome_samples=n_sim, max_chunk_elements=max_chunk_elements, pay=price,
        spend=spend,
    )  # fmt: skip
    if value_pi is not None:
        subscribers["value_pi_lower"], subscribers["value_pi_upper"] = value_pi
        order = [c for c in subscribers.columns if not c.startswith(("value_", "residual_value_"))]
        order += [f"value_{s}" for s in _SUFFIXES]
        order += [c for c in subscribers.columns if c.startswith("residual_value_")]
        subscribers = subscribers[order]
    cohorts = {}
    for name, (_, labels) in groupings.items():
        part = segments[segments["grouping"] == name].drop(columns="grouping")
        back = dict(zip([str(v) for v in labels], labels, strict=True))
        part = part.assign(group=part["group"].map(back)).rename(columns={"group": labels.name})
        cohorts[name] = part.set_index([labels.name, "k"]).sort_index()
    settings = {
        "horizon": horizon, "discount_rate_per_period": float(discount_rate), "margin": float(margin),
        "prob": float(prob), "n_draws": int(n_s), "n_outcome_samples": int(n_sim),
        "seed": seed, "by": by, "period": grid, "price_col": price_col if price is not None else None,
        "n_active": len(active), "n_cancelled_excluded": int(len(checked) - len(active)),
        "parameter_uncertainty": bool(n_s > 1),
        "value_source": "spend_model" if spend is not None else "price" if price is not None
        else None,
        "groups": [str(g) for g, _, _ in parts] if len(parts) > 1 or parts[0][0] is not None
        else None,
    }  # fmt: skip
    return SubscriberScores(subscribers=subscribers, cohorts=cohorts, settings=settings,
                            segments=segments, totals=totals)  # fmt: skip


def _parts(model: Any, active: pd.DataFrame, group_col: str | None):
    """``[(group label or None, model, row positions)]`` over the active subscribers."""
    from clvbayes.errors import DataError

    if not isinstance(model, Mapping):
        if group_col is not None:
            raise ValueError(
                "group_col applies to a mapping {group: model}; pass one model or both."
            )
        cells_of = getattr(model, "_cells_of_table", None)
        if cells_of is not None:  # covariates / pooling: the family model of each cell
            return [(None, m, rows) for m, rows in cells_of(active)]
        return [(None, model, np.arange(len(active)))]
    col = group_col or "fit_group"
    if col not in active.columns:
        raise DataError(
            f"A model per group needs the group column {col!r}, which the subscribers table "
            f"lacks (columns: {list(map(str, active.columns))}); pass group_col=..."
        )
    labels = active[col].astype(str).to_numpy()
    models = {str(k): v for k, v in model.items()}
    unknown = sorted(set(labels) - set(models))
    if unknown:
        raise DataError(
            f"Column {col!r} has active subscribers in group(s) {unknown[:5]} without a model; "
            f"models are given for {sorted(models)[:10]}."
        )
    return [(g, models[g], np.flatnonzero(labels == g)) for g in sorted(set(labels))]


def _n_draws(model: Any) -> int:
    return int(next(iter(model.draws().values())).size)


def _thin(model: Any, n: int) -> tuple[np.ndarray, ...]:
    """``n`` evenly spaced draws of each parameter, as (n, 1) columns in ``param_names`` order."""
    draws = {k: np.asarray(v, dtype=float).reshape(-1) for k, v in model.draws().items()}
    size = next(iter(draws.values())).size
    idx = np.linspace(0, size - 1, n).round().astype(int)
    return tuple(draws[k][idx][:, None] for k in model.param_names)


def _spend_state(spend_model: Any, active: pd.DataFrame, n_s: int, margin: float) -> dict:
    """Each active subscriber's amount per charge under ``spend_model``, per paired draw."""
    from clvbayes.data import validate_spend
    from clvbayes.errors import DataError
    from clvbayes.math import gamma_gamma

    need = [c for c in ("frequency", "monetary_value") if c not in active.columns]
    if need:
        raise DataError(
            f"spend_model needs each subscriber's repeat charges in columns 'frequency' (charges "
            f"- 1) and 'monetary_value' (their mean amount); missing {need}. Columns: "
            f"{list(map(str, active.columns))}."
        )
    checked = validate_spend(active[["frequency", "monetary_value"]])
    x = checked["frequency"].to_numpy(dtype=float)
    z = checked["monetary_value"].to_numpy(dtype=float)
    p, qq, gam = _thin(spend_model, n_s)
    expected = margin * np.asarray(gamma_gamma.expected_spend(p, qq, gam, x, z), dtype=float)
    shape, rate = gamma_gamma.spend_rate_posterior(p, qq, gam, x, z)
    return {"expected": {"amount": expected}, "p": p, "shape": shape, "rate": rate,
            "margin": float(margin)}  # fmt: skip


def _per_subscriber(math, args, tenure, horizon, q, discount_rate, prob, rng, reps, price, spend):
    """Expectations (ci) and per-tenure outcome draws (pi) of one model's subscribers."""
    uniq, inverse = np.unique(tenure, return_inverse=True)
    surv = np.stack([math.conditional_survival(*args, uniq, j) for j in range(1, horizon + 1)])
    disc = np.tensordot(q ** np.arange(horizon), surv, axes=1)
    expect = {
        "p_renew": surv[0],
        "churn_risk": 1.0 - surv[0],
        "renewals": surv.sum(axis=0),
        "disc_renewals": disc,
    }
    if discount_rate > 0:
        expect["derl"] = math.derl(*args, uniq, discount=discount_rate)
    cols = {}
    for name, v in expect.items():
        st = draw_stats(v, prob, axis=0, kind="ci")
        for stat in ("mean", "sd", "lower", "upper"):
            key = {"lower": "ci_lower", "upper": "ci_upper"}.get(stat, stat)
            cols[f"{name}_{key}"] = st[stat][inverse]
    # outcomes per distinct tenure (exact predictive draws) -> predictive intervals
    n_s = args[0].shape[0]
    sample_draw = np.arange(n_s * reps) % n_s
    churn = math.sample_churn_period(rng, *(a[sample_draw] for a in args), uniq)  # (n_sim, U)
    renew = np.clip(churn - uniq - 1.0, 0.0, horizon)
    disc_sim = (1.0 - q**renew) / (1.0 - q) if q < 1.0 else renew
    sims = {"renewals": renew, "disc_renewals": disc_sim}
    for name, sim in sims.items():
        st = draw_stats(sim, prob, axis=0, kind="pi")
        cols[f"{name}_pi_lower"] = st["lower"][inverse]
        cols[f"{name}_pi_upper"] = st["upper"][inverse]
    order = [f"{n}_{k}" for n in expect for k in _SUFFIXES if f"{n}_{k}" in cols]
    block = pd.DataFrame({k: cols[k] for k in order})
    if price is not None:
        for src, dst in (("disc_renewals", "value"), ("derl", "residual_value")):
            for suffix in _SUFFIXES:
                if f"{src}_{suffix}" in block:
                    block[f"{dst}_{suffix}"] = block[f"{src}_{suffix}"] * price
    elif spend is not None:  # per-draw products with the spend draws (pi of value: simulated)
        amount = spend["amount"]  # (draws, n) amount x margin per charge
        step = max(1, 2_000_000 // max(n_s, 1))
        for src, dst in (("disc_renewals", "value"), ("derl", "residual_value")):
            if src not in expect:
                continue
            out = {k: np.empty(tenure.size) for k in ("mean", "sd", "lower", "upper")}
            for c0 in range(0, tenure.size, step):
                sl = slice(c0, c0 + step)
                st = draw_stats(expect[src][:, inverse[sl]] * amount[:, sl], prob, axis=0,
                                kind="ci")  # fmt: skip
                for k in out:
                    out[k][sl] = st[k]
            for stat, v in out.items():
                key = {"lower": "ci_lower", "upper": "ci_upper"}.get(stat, stat)
                block[f"{dst}_{key}"] = v
    return block, {k: v[:, inverse] for k, v in sims.items()}


def segment_forecasts(
    parts: list[tuple[Any, np.ndarray]],
    tenure: np.ndarray,
    groupings: dict[str, tuple[np.ndarray, list[str]]],
    *,
    horizon: int,
    prob: float,
    discount_rate: float = 0.0,
    rng: np.random.Generator | None = None,
    n_draws: int | None = None,
    n_outcome_samples: int = 1000,
    max_chunk_elements: int = 2_000_000,
    pay: np.ndarray | None = None,
    spend: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[np.ndarray, np.ndarray] | None]:
    """Segment forecasts from per-draw sums over subscribers scored by one or more models.

    Parameters
    ----------
    parts : list of (model, rows)
        Each fitted retention model and the positions (into ``tenure``) of its subscribers.
    tenure : ndarray, shape (n,)
        Every active subscriber's ``periods``.
    groupings : dict of str to (codes, labels)
        For each grouping (``all``, ``cohort``, ``plan``, ...), every subscriber's segment
        code and the segment labels (text).
    horizon, prob, discount_rate
        As :func:`score_subscribers` (the discount rate per period).
    rng : numpy.random.Generator
    n_draws : int, optional
        Draws used of each model (evenly thinned; default the smallest number any has).
    n_outcome_samples : int
        Simulated futures (at least; a multiple of the draws).
    max_chunk_elements : int
        Simulated futures x subscribers per chunk.
    pay : ndarray, shape (n,), optional
        Price x margin per renewal of each subscriber (constant amounts).
    spend : dict, optional
        Varying amounts (from ``_spend_state``): ``expected["amount"]`` (draws, n) and the
        spend-rate posterior, so each future charge's amount is simulated.

    Returns
    -------
    segments, totals : DataFrame
        ``segments``: one row per (grouping, group, k) with ``subscribers``, ``active_*`` and
        ``revenue_*``; ``totals``: one row per (grouping, group) with ``renewals_total_*``,
        ``revenue_total_*`` and ``value_total_*`` over the horizon.  Means and credible
        intervals come from the expectations per posterior draw, predictive intervals from
        exact churn-period draws (one simulated future per draw and outcome sample), both
        summed over the subscribers within a draw.
    value_pi : (lower, upper) or None
        With ``spend``: each subscriber's predictive interval of ``value`` (the discounted
        amounts of her renewals over the horizon), from the same simulation.
    """
    rng = np.random.default_rng(rng)
    n_s = n_draws or min(_n_draws(m) for m, _ in parts)
    reps = int(np.ceil(max(n_outcome_samples, 1) / n_s))
    n_sim = n_s * reps
    with_pay = pay is not None or spend is not None
    q = 1.0 / (1.0 + discount_rate)
    K = int(horizon)
    tenure = np.asarray(tenure, dtype=float)
    sizes = {name: len(labels) for name, (_, labels) in groupings.items()}
    exp = {name: {"active": np.zeros((K, n_s, g)), "revenue": np.zeros((K, n_s, g))}
           for name, g in sizes.items()}  # fmt: skip
    sim = {name: {"active": np.zeros((K, n_sim, g)), "revenue": np.zeros((K, n_sim, g)),
                  "renewals_total": np.zeros((n_sim, g))}
           for name, g in sizes.items()}  # fmt: skip
    value_pi = None
    if spend is not None:
        value_pi = (np.zeros(tenure.size), np.zeros(tenure.size))
    sim_idx = np.arange(n_sim) % n_s
    for model, rows in parts:
        rows = np.asarray(rows)
        t_all = tenure[rows]
        args = _thin(model, n_s)
        m = model._math
        uniq, inverse = np.unique(t_all, return_inverse=True)
        surv = np.stack([m.conditional_survival(*args, uniq, j) for j in range(1, K + 1)])
        for name, (codes, labels) in groupings.items():
            c = codes[rows]
            onehot = sparse.csr_matrix((np.ones(rows.size), (inverse, c)),
                                       shape=(uniq.size, len(labels)))  # fmt: skip
            for j in range(K):
                exp[name]["active"][j] += np.asarray(onehot.T @ surv[j].T).T
            if pay is not None:
                money = sparse.csr_matrix((pay[rows], (inverse, c)), shape=(uniq.size, len(labels)))
                for j in range(K):
                    exp[name]["revenue"][j] += np.asarray(money.T @ surv[j].T).T
            elif spend is not None:
                member = sparse.csr_matrix((np.ones(rows.size), (np.arange(rows.size), c)),
                                           shape=(rows.size, len(labels)))  # fmt: skip
                amount = spend["expected"]["amount"][:, rows]
                for j in range(K):
                    exp[name]["revenue"][j] += np.asarray(
                        member.T @ (surv[j][:, inverse] * amount).T
                    ).T
        sim_args = tuple(a[sim_idx] for a in args)
        per = n_sim * (K if spend is not None else 1)
        step = max(1, int(max_chunk_elements) // per)
        sim_rows = np.arange(n_sim)[:, None]
        for c0 in range(0, rows.size, step):
            sl = rows[c0 : c0 + step]
            t = tenure[sl]
            left = m.sample_churn_period(rng, *sim_args, t) - t  # due dates survived + 1
            renew = np.clip(left - 1.0, 0.0, K)  # renewals among the next K due dates
            if spend is not None:
                p = spend["p"][sim_idx]
                nu = (
                    rng.standard_gamma(spend["shape"][sim_idx][:, sl])
                    / spend["rate"][sim_idx][:, sl]
                )
                nu = np.maximum(nu, np.finfo(float).tiny)
                value = np.zeros(renew.shape)
            for name, (codes, labels) in groupings.items():
                g = len(labels)
                cell = (sim_rows * g + codes[sl]).ravel()
                sim[name]["renewals_total"] += np.bincount(
                    cell, weights=renew.ravel(), minlength=n_sim * g
                ).reshape(n_sim, g)
            for j in range(K):
                alive = renew > j  # renews at the (j + 1)-th due date: active after j + 1 more
                if spend is not None:
                    amount = spend["margin"] * rng.standard_gamma(
                        np.broadcast_to(p, alive.shape)) / nu  # fmt: skip
                    paid = np.where(alive, amount, 0.0)
                    value += q**j * paid
                elif pay is not None:
                    paid = alive * pay[sl]
                for name, (codes, labels) in groupings.items():
                    g = len(labels)
                    cell = (sim_rows * g + codes[sl]).ravel()
                    sim[name]["active"][j] += np.bincount(
                        cell, weights=alive.ravel().astype(float), minlength=n_sim * g
                    ).reshape(n_sim, g)
                    if with_pay:
                        sim[name]["revenue"][j] += np.bincount(
                            cell, weights=paid.ravel(), minlength=n_sim * g
                        ).reshape(n_sim, g)
            if spend is not None:
                st = draw_stats(value, prob, axis=0, kind="pi")
                value_pi[0][sl], value_pi[1][sl] = st["lower"], st["upper"]
    weights = q ** np.arange(K)
    seg_rows, total_rows = [], []
    quantities = ("active", "revenue") if with_pay else ("active",)
    for name, (codes, labels) in groupings.items():
        n_now = np.bincount(codes, minlength=len(labels))
        for j in range(K):
            row: dict[str, Any] = {"grouping": name, "group": labels, "k": j + 1,
                                   "subscribers": n_now}  # fmt: skip
            for qn in quantities:
                row.update(_stats(qn, exp[name][qn][j], sim[name][qn][j], prob))
            seg_rows.append(pd.DataFrame(row))
        row = {"grouping": name, "group": labels, "subscribers": n_now}
        row.update(_stats("renewals_total", exp[name]["active"].sum(axis=0),
                          sim[name]["renewals_total"], prob))  # fmt: skip
        if with_pay:
            row.update(_stats("revenue_total", exp[name]["revenue"].sum(axis=0),
                              sim[name]["revenue"].sum(axis=0), prob))  # fmt: skip
            row.update(_stats("value_total", np.tensordot(weights, exp[name]["revenue"], axes=1),
                              np.tensordot(weights, sim[name]["revenue"], axes=1), prob))  # fmt: skip
        total_rows.append(pd.DataFrame(row))
    segments = pd.concat(seg_rows, ignore_index=True)
    totals = pd.concat(total_rows, ignore_index=True)
    return segments, totals, value_pi


def _stats(name: str, expected: np.ndarray, simulated: np.ndarray, prob: float) -> dict:
    e = draw_stats(expected, prob, axis=0, kind="ci")
    r = draw_stats(simulated, prob, axis=0, kind="pi")
    return {f"{name}_mean": e["mean"], f"{name}_ci_lower": e["lower"],
            f"{name}_ci_upper": e["upper"], f"{name}_pi_lower": r["lower"],
            f"{name}_pi_upper": r["upper"]}  # fmt: skip


def _whole(value, name: str, minimum: int = 0) -> int:
    v = float(value)
    if not (np.isfinite(v) and v == np.floor(v) and v >= minimum):
        raise ValueError(f"{name} must be a whole number of periods >= {minimum}, got {value!r}.")
    return int(v)
