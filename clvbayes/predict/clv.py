"""Per-customer and per-segment predictions with both interval kinds, in bounded memory.

:func:`score_customers` combines a fitted purchase model (BG/NBD) and, optionally, a
fitted spend model (Gamma-Gamma) **draw by draw**: posterior draw ``s`` of one model is
paired with draw ``s`` of the other (the two posteriors are independent, so the pairs
are draws from the joint posterior), and every expectation is computed per draw.

For each customer it reports (``{q}_mean``, ``{q}_sd``, ``{q}_ci_lower/upper`` and, for
outcomes, ``{q}_pi_lower/upper``; see :mod:`clvbayes.predict.summary` for ci vs pi):

=========  ===========================================================  ======
quantity   meaning                                                      kinds
=========  ===========================================================  ======
p_alive    probability the customer is still active at T                ci
purchases  number of purchases in (T, T + horizon]                      ci, pi
spend      value of one future transaction (currency)                   ci, pi
revenue    total value of purchases in the horizon (undiscounted)        ci, pi
clv        margin x discounted value of purchases in the horizon        ci, pi
=========  ===========================================================  ======

How it scales: expectations are computed once per *distinct* history (customers with
identical (frequency, recency, T, monetary_value) share them); outcomes are simulated
for every customer (independently, so segment totals are right) from the exact
customer-level posterior given each parameter draw -- alive or not, purchase rate,
dropout probability, spend rate -- no per-customer MCMC.  Work proceeds in chunks of
histories, reducing to summaries as it goes, so memory is bounded by
``max_chunk_elements`` and never holds customers x draws x periods.  Segment totals
are accumulated per draw (sums over customers within each draw), never by adding up
per-customer intervals.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from clvbayes.data import compress, validate_rfm
from clvbayes.math.discount import rate_per_period, schedule
from clvbayes.predict.summary import DEFAULT_PROB, draw_stats, tail_probs

OUTCOMES = ("purchases", "spend", "revenue", "clv")
SEGMENT_QUANTITIES = ("alive", "purchases", "revenue", "clv")


@dataclass
class CustomerScores:
    """Result of :func:`score_customers`.

    Attributes
    ----------
    customers : pandas.DataFrame
        One row per customer (same index and order as the input table).
    segments : dict of str to pandas.DataFrame
        ``"all"`` (the whole base) and one table per grouping column: customers,
        totals and per-customer means of each quantity with credible (``ci``) and
        predictive (``pi``) intervals computed from per-draw sums.
    settings : dict
        Horizon, discount, margin, interval probability, draws used, seed, time unit.
    """

    customers: pd.DataFrame
    segments: dict[str, pd.DataFrame] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def joint_draws(purchase_model, spend_model=None, n_draws: int | None = None):
    """Flattened, paired posterior draws of both models: dicts of arrays shaped (S, 1).

    A model with a single draw (MAP/MLE) is paired with every draw of the other.  When
    both have several draws and their numbers differ, or ``n_draws`` is smaller, each is
    thinned to the same number of evenly spaced draws.
    """
    models = [m for m in (purchase_model, spend_model) if m is not None]
    flat = [{k: v.reshape(-1) for k, v in m.draws().items()} for m in models]
    sizes = [next(iter(f.values())).size for f in flat]
    multi = [s for s in sizes if s > 1]
    n = min(multi) if multi else 1
    if n_draws is not None:
        if n_draws < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
        n = min(n, n_draws)
    out = []
    for f, size in zip(flat, sizes, strict=True):
        idx = (
            np.zeros(n, dtype=int) if size == 1 else np.linspace(0, size - 1, n).round().astype(int)
        )
        out.append({k: v[idx][:, None] for k, v in f.items()})
    return out[0], (out[1] if spend_model is not None else None)


def score_customers(
    rfm: pd.DataFrame,
    purchase_model,
    spend_model=None,
    *,
    horizon: float,
    discount_rate: float = 0.0,
    annual_discount_rate: float | None = None,
    period: float = 1.0,
    margin: float = 1.0,
    prob: float = DEFAULT_PROB,
    by: str | list[str] | None = None,
    seed: int | None = 0,
    n_draws: int | None = None,
    n_outcome_samples: int = 1000,
    max_chunk_elements: int = 2_000_000,
    progress: bool = False,
    observed: dict[str, Any] | None = None,
    outcomes: bool = True,
) -> CustomerScores:
    """Predict every customer's future with credible and predictive intervals.

    Parameters
    ----------
    rfm : pandas.DataFrame
        Customer table (``frequency``, ``recency``, ``T`` and, with a spend model,
        ``monetary_value``), in the time unit the models were fitted in, plus any
        grouping columns named in ``by``.
    purchase_model : BetaGeoModel
        Fitted purchase model.
    spend_model : GammaGammaModel, optional
        Fitted spend model; without it only ``p_alive`` and ``purchases`` are computed.
    horizon : float
        Length of the future window, in the data's time unit (weeks on CDNOW).
    discount_rate : float
        Discount rate per ``period`` (default 0: no discounting).
    annual_discount_rate : float, optional
        Alternative to ``discount_rate``: a rate per year, converted exactly with
        :func:`clvbayes.math.discount.rate_per_period` (365.25-day year, 7-day week).
    period : float
        Discount period in the data's time unit (default 1: weekly on weekly data).
    margin : float
        Profit margin applied to revenue in ``clv`` (1 = revenue).
    prob : float
        Probability of every interval (default 0.9, equal-tailed).
    by : str or list of str, optional
        Columns of ``rfm`` to aggregate by (segment, channel, cohort, ...).
    seed : int, optional
        Seed for the outcome simulation; the same seed gives the same table.
    n_draws : int, optional
        Use at most this many (evenly spaced) posterior draws.
    n_outcome_samples : int
        Minimum number of simulated outcomes per customer behind each predictive
        interval: with fewer posterior draws (e.g. a MAP fit, one draw) each draw is
        simulated several times.
    max_chunk_elements : int
        Work size per chunk (draws x customers); bounds peak memory (~100 bytes each).
    progress : bool
        Print progress to stderr.
    observed : dict of str to array-like, optional
        Observed outcomes over the same horizon (e.g. holdout purchases), keyed by
        outcome name (``purchases``, ``spend``, ``revenue``, ``clv``), one value per
        customer in table order.  Adds ``{q}_pi_covered`` (does the predictive interval
        contain the observation) and ``{q}_pit`` (randomised probability integral
        transform: uniform on (0, 1) when the model is calibrated, also for counts).
    outcomes : bool
        Simulate outcomes (default).  ``False`` computes only the expectations and their
        credible intervals (no ``pi`` columns): several times faster, e.g. to rank
        customers before a full run.

    Returns
    -------
    CustomerScores
    """
    tail_probs(prob)
    time_unit = rfm.attrs.get("time_unit") or getattr(purchase_model, "time_unit_", None)
    fitted_unit = getattr(purchase_model, "time_unit_", None)
    if fitted_unit and rfm.attrs.get("time_unit") and rfm.attrs["time_unit"] != fitted_unit:
        raise ValueError(
            f"The customer table is in {rfm.attrs['time_unit']} but the purchase model was fitted in "
            f"{fitted_unit}: summarise the transactions with time_unit={fitted_unit!r}."
        )
    if annual_discount_rate is not None:
        if discount_rate:
            raise ValueError(
                "Give either discount_rate (per period) or annual_discount_rate, not both."
            )
        if not time_unit:
            raise ValueError(
                "annual_discount_rate needs the data's time unit (rfm.attrs['time_unit'])."
            )
        discount_rate = rate_per_period(annual_discount_rate, time_unit, period)
    ends, factors = schedule(horizon, discount_rate, period)
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in rfm.columns]
    if missing:
        raise ValueError(
            f"Grouping column(s) {missing} not in the customer table; columns: {list(rfm.columns)}."
        )

    has_spend = spend_model is not None
    checked = validate_rfm(rfm, require_monetary=has_spend)
    columns = ("frequency", "recency", "T") + (("monetary_value",) if has_spend else ())
    data = _by_frequency_and_age(compress(checked, columns=columns))
    pparams, sparams = joint_draws(purchase_model, spend_model, n_draws)
    n_s = next(iter(pparams.values())).shape[0]
    reps = int(np.ceil(max(n_outcome_samples, 1) / n_s))
    sim_pparams = {k: np.tile(v, (reps, 1)) for k, v in pparams.items()}
    sim_sparams = {k: np.tile(v, (reps, 1)) for k, v in sparams.items()} if has_spend else None
    n_sim = n_s * reps
    rng = np.random.default_rng(seed)

    # customers ordered by history, so each history's customers are contiguous
    order = np.argsort(data.inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(data.counts)])
    groupings = {"all": np.zeros(data.n_customers, dtype=np.int64)}
    labels = {"all": pd.Index(["all"], name="segment")}
    for col in by:
        codes, uniques = pd.factorize(rfm[col], use_na_sentinel=False)
        groupings[col] = codes.astype(np.int64)
        labels[col] = pd.Index(uniques, name=col)
    hist_group = {
        g: sparse.csr_matrix(
            (np.ones(data.n_customers), (data.inverse, codes)),
            shape=(data.n_unique, len(labels[g])),
        )
        for g, codes in groupings.items()
    }
    quantities = ["p_alive", "purchases"] + (["spend", "revenue", "clv"] if has_spend else [])
    per_hist = {q: {} for q in quantities}
    seg_quants = [q for q in SEGMENT_QUANTITIES if has_spend or q in ("alive", "purchases")]
    totals_e = {g: {q: np.zeros((n_s, len(labels[g]))) for q in seg_quants} for g in groupings}
    totals_r = {g: {q: np.zeros((n_sim, len(labels[g]))) for q in seg_quants} for g in groupings}

    observed = {q: np.asarray(v, dtype=float)[order] for q, v in (observed or {}).items()}
    valid = [q for q in quantities if q in OUTCOMES]
    unknown = sorted(set(observed) - set(valid))
    if unknown:
        raise ValueError(f"observed has unknown outcome(s) {unknown}; valid: {valid}.")
    for q, v in observed.items():
        if v.shape != (data.n_customers,):
            raise ValueError(
                f"observed[{q!r}] needs one value per customer ({data.n_customers}), got shape {v.shape}."
            )
    if observed and not outcomes:
        raise ValueError("observed outcomes need outcomes=True (the predictive distribution).")
    pit = {q: np.empty(data.n_customers) for q in observed}
    per_elem = max(1, n_sim)
    chunks = _chunks(data.counts, per_elem, max_chunk_elements)
    t_start = time.perf_counter()
    for i_chunk, (h0, h1) in enumerate(chunks):
        h = {c: np.asarray(data[c])[h0:h1] for c in columns}
        cnt = data.counts[h0:h1]
        expect = _expectations(
            purchase_model, spend_model, pparams, sparams, h, ends, factors, margin
        )
        if outcomes:  # simulated for every customer of these histories: (S', c)
            hc = {c: v[np.repeat(np.arange(h1 - h0), cnt)] for c, v in h.items()}
            outcome = _simulate_outcomes(
                rng, purchase_model, spend_model, sim_pparams, sim_sparams, hc,
                float(ends[-1]), period, factors, margin,
            )  # fmt: skip
        # ---- reduce: per-history summaries
        for q in quantities:
            for key, val in draw_stats(expect[q], prob, axis=0, kind="ci").items():
                per_hist[q].setdefault(f"ci_{key}", []).append(val)
            if outcomes and q in OUTCOMES:
                pooled = _pooled_quantiles(outcome[q], cnt, prob)
                per_hist[q].setdefault("pi_lower", []).append(pooled[0])
                per_hist[q].setdefault("pi_upper", []).append(pooled[1])
        for q, obs in observed.items():
            pit[q][starts[h0] : starts[h1]] = _pooled_pit(
                outcome[q], cnt, obs[starts[h0] : starts[h1]], rng
            )
        # ---- reduce: per-draw segment totals
        cust = order[starts[h0] : starts[h1]]
        expect_seg = {
            "alive": expect["p_alive"],
            **{q: expect[q] for q in seg_quants if q != "alive"},
        }
        for g, codes in groupings.items():
            m_hist = hist_group[g][h0:h1]
            onehot = sparse.csr_matrix(
                (np.ones(cust.size), (np.arange(cust.size), codes[cust])),
                shape=(cust.size, len(labels[g])),
            )
            for q in seg_quants:
                totals_e[g][q] += (m_hist.T @ expect_seg[q].T).T
                if outcomes:
                    totals_r[g][q] += (onehot.T @ outcome[q].T).T
        if progress:
            _report(i_chunk + 1, len(chunks), starts[h1], data.n_customers, t_start)

    customers = _customer_table(per_hist, data, rfm.index)
    for q, vals in pit.items():
        obs = np.empty(data.n_customers)
        obs[order] = observed[q]
        customers[f"{q}_pi_covered"] = (customers[f"{q}_pi_lower"] <= obs) & (
            obs <= customers[f"{q}_pi_upper"]
        )
        customers[f"{q}_pit"] = np.empty(data.n_customers)
        customers.iloc[order, customers.columns.get_loc(f"{q}_pit")] = vals
    segments = {
        g: _segment_table(
            totals_e[g], totals_r[g] if outcomes else None, labels[g], hist_group[g], prob
        )
        for g in groupings
    }
    settings = {
        "horizon": float(horizon), "time_unit": time_unit, "discount_rate_per_period": float(discount_rate),
        "annual_discount_rate": annual_discount_rate, "period": float(period), "margin": float(margin),
        "prob": float(prob), "n_draws": int(n_s), "n_outcome_samples": int(n_sim), "seed": seed, "by": by,
        "n_customers": int(data.n_customers), "n_histories": int(data.n_unique),
    }  # fmt: skip
    return CustomerScores(customers=customers, segments=segments, settings=settings)


def _expectations(purchase_model, spend_model, pparams, sparams, h, ends, factors, margin):
    """Posterior draws of each expected quantity for distinct histories ``h``: arrays (S, u)."""
    expect = {"p_alive": purchase_model._p_alive_arrays(pparams, h)}
    if spend_model is None:
        expect["purchases"] = purchase_model._expected_purchases_arrays(pparams, h, float(ends[-1]))
        return expect
    disc, expect["purchases"] = purchase_model._discounted_purchases_arrays(
        pparams, h, ends, factors, with_total=True
    )
    expect["spend"] = spend_model._expected_spend_arrays(sparams, h)
    expect["revenue"] = expect["spend"] * expect["purchases"]
    expect["clv"] = margin * expect["spend"] * disc
    return expect


def _simulate_outcomes(rng, purchase_model, spend_model, pparams, sparams, hc, horizon, period,
                       factors, margin):  # fmt: skip
    """One simulated outcome per (draw, customer) for customers ``hc``: arrays (S, c).

    Each customer's latent state is drawn from its exact posterior given the draw's
    parameters, then the future is simulated: purchase times, each purchase's value, and
    the discounted sum (a purchase in period k is discounted by ``factors[k - 1]``).
    """
    alive, n_buy, times = purchase_model._simulate_arrays(rng, pparams, hc, horizon)
    outcome = {"alive": alive.astype(float), "purchases": n_buy.astype(float)}
    if spend_model is None:
        return outcome
    nu = spend_model._sample_rate_arrays(rng, sparams, hc)
    values = spend_model._simulate_values_arrays(rng, sparams, nu, n_buy)
    owner = np.repeat(np.arange(n_buy.size), n_buy.ravel())
    k = np.clip(np.ceil(times / period - 1e-12).astype(np.int64), 1, factors.size)
    outcome["revenue"] = np.bincount(owner, values, minlength=n_buy.size).reshape(n_buy.shape)
    discounted = np.bincount(owner, values * factors[k - 1], minlength=n_buy.size)
    outcome["clv"] = margin * discounted.reshape(n_buy.shape)
    one_each = np.ones(nu.shape, dtype=np.int64)
    outcome["spend"] = spend_model._simulate_values_arrays(rng, sparams, nu, one_each).reshape(
        nu.shape
    )
    return outcome


def _by_frequency_and_age(data):
    """Reorder distinct histories by (frequency, T, ...) so that chunks share (frequency, T) pairs.

    The purchase model evaluates its costly factor once per distinct (frequency, T) in a chunk.
    """
    from clvbayes.data import CompressedRFM

    keys = [data[c] for c in reversed(data.columns) if c not in ("frequency", "T")]
    perm = np.lexsort([*keys, data["T"], data["frequency"]])
    rank = np.empty_like(perm)
    rank[perm] = np.arange(perm.size)
    return CompressedRFM(
        values={c: np.asarray(data[c])[perm] for c in data.columns}, counts=data.counts[perm],
        inverse=rank[data.inverse], customer_ids=data.customer_ids, columns=data.columns,
    )  # fmt: skip


def _chunks(counts: np.ndarray, n_draws: int, max_elements: int) -> list[tuple[int, int]]:
    """Split histories into consecutive chunks with at most ``max_elements`` draws x customers."""
    budget = max(1, max_elements // n_draws)
    out, start, acc = [], 0, 0
    for i, c in enumerate(counts):
        if acc and acc + c > budget:
            out.append((start, i))
            start, acc = i, 0
        acc += c
    out.append((start, counts.size))
    return out


def _pooled_quantiles(samples: np.ndarray, counts: np.ndarray, prob: float) -> np.ndarray:
    """Predictive interval per history from all its customers' simulated outcomes pooled.

    ``samples`` is (S, c) with the customers of each history in consecutive columns.
    Returns an array (2, n_histories) of lower and upper bounds.
    """
    lo, hi = tail_probs(prob)
    out = np.empty((2, counts.size))
    if np.all(counts == 1):
        return np.quantile(samples, [lo, hi], axis=0, method="inverted_cdf")
    edges = np.concatenate([[0], np.cumsum(counts)])
    for j in range(counts.size):
        block = samples[:, edges[j] : edges[j + 1]]
        out[:, j] = np.quantile(block, [lo, hi], method="inverted_cdf")
    return out


def _pooled_pit(samples, counts, obs, rng) -> np.ndarray:
    """Randomised PIT of each customer's observation under its history's pooled predictive samples."""
    edges = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty(obs.size)
    for j in range(counts.size):
        block = np.sort(samples[:, edges[j] : edges[j + 1]].ravel())
        y = obs[edges[j] : edges[j + 1]]
        below = np.searchsorted(block, y, side="left") / block.size
        at_or_below = np.searchsorted(block, y, side="right") / block.size
        out[edges[j] : edges[j + 1]] = below + rng.uniform(size=y.size) * (at_or_below - below)
    return out


def _customer_table(per_hist, data, index) -> pd.DataFrame:
    cols = {}
    for q, stats in per_hist.items():
        merged = {k: np.concatenate(v) for k, v in stats.items()}
        cols[f"{q}_mean"] = merged["ci_mean"]
        cols[f"{q}_sd"] = merged["ci_sd"]
        cols[f"{q}_ci_lower"] = merged["ci_lower"]
        cols[f"{q}_ci_upper"] = merged["ci_upper"]
        if "pi_lower" in merged:
            cols[f"{q}_pi_lower"] = merged["pi_lower"]
            cols[f"{q}_pi_upper"] = merged["pi_upper"]
    table = pd.DataFrame({k: v[data.inverse] for k, v in cols.items()}, index=index)
    return table


def _segment_table(tot_e, tot_r, labels, hist_group, prob) -> pd.DataFrame:
    n = np.asarray(hist_group.sum(axis=0)).ravel()
    cols: dict[str, np.ndarray] = {"n_customers": n.astype(np.int64)}
    for q in tot_e:
        e = draw_stats(tot_e[q], prob, axis=0, kind="ci")
        cols[f"{q}_total_mean"] = e["mean"]
        cols[f"{q}_total_ci_lower"] = e["lower"]
        cols[f"{q}_total_ci_upper"] = e["upper"]
        if tot_r is not None:
            r = draw_stats(tot_r[q], prob, axis=0, kind="pi")
            cols[f"{q}_total_pi_lower"] = r["lower"]
            cols[f"{q}_total_pi_upper"] = r["upper"]
        cols[f"{q}_per_customer_mean"] = e["mean"] / n
        cols[f"{q}_per_customer_ci_lower"] = e["lower"] / n
        cols[f"{q}_per_customer_ci_upper"] = e["upper"] / n
    return pd.DataFrame(cols, index=labels)


def _report(done, total, customers_done, n_customers, t_start) -> None:
    elapsed = time.perf_counter() - t_start
    print(
        f"\rscoring customers: {customers_done:,}/{n_customers:,} ({done}/{total} chunks, {elapsed:.1f} s)",
        end="\n" if done == total else "",
        file=sys.stderr,
        flush=True,
    )
