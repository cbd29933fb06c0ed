"""Per-customer and per-segment predictions with both interval kinds, in bounded memory.

:func:`score_customers` combines a fitted purchase model (any
:class:`~clvbayes.models.protocols.PurchaseModel`: BG/NBD, MBG/NBD, Pareto/NBD) and,
optionally, a fitted spend model (:class:`~clvbayes.models.protocols.SpendModel`:
Gamma-Gamma) **draw by draw**: posterior draw ``s`` of one model is
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

How it scales: everything is computed per *distinct* history (customers with identical
(frequency, recency, T, monetary_value) share it), in chunks of histories processed in
parallel threads, reducing to summaries as it goes, so memory is bounded by
``max_chunk_elements`` and never holds customers x draws x periods.

* Expectations (:func:`clvbayes.predict.outcomes.expectations`): P(alive) per history and
  draw; the expected (discounted) purchases of an *active* customer depend only on the
  model's ``active_columns`` (frequency, T), so they are computed once per distinct key.
* Outcomes: for outcome sample ``m`` (parameter draw ``m``) each history is alive with its
  own probability; the future of an active customer -- purchases, and transaction values in
  units of the spend model's scale -- is drawn from the exact latent posterior given the key
  and the draw, once per distinct key (:func:`clvbayes.predict.outcomes.active_futures`),
  and shared by that key's histories.  Each history's samples are therefore exact,
  independent draws from its own predictive distribution (predictive intervals: their
  quantiles).
* Segment totals are computed per draw (sums over customers within each draw), never by
  adding up per-customer intervals.  Expected totals are exact.  Outcome totals of a
  segment with at least ``EXACT_SEGMENT_MIN`` customers are, given each draw, a sum of that
  many independent outcomes: drawn as normal with the exact conditional mean and the
  summed conditional variances (each customer's estimated without bias from its outcome
  samples).  Smaller segments are simulated customer by customer and summed.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd
from scipy import sparse

from clvbayes.data import compress
from clvbayes.math.discount import schedule
from clvbayes.models.protocols import PurchaseModel, SpendModel, check_implements
from clvbayes.predict import outcomes as outcomes_lib
from clvbayes.predict.summary import DEFAULT_PROB, draw_stats, tail_probs
from clvbayes.units import annual_to_period_rate, table_time_unit

OUTCOMES = ("purchases", "spend", "revenue", "clv")
SEGMENT_QUANTITIES = ("alive", "purchases", "revenue", "clv")
EXACT_SEGMENT_MIN = 1000  # segments at least this large get normal totals given each draw
MIN_CHUNKS, MIN_CHUNK_ITEMS = 4, 128  # small jobs still split for the threads (see _chunks)


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
        Horizon, discount, margin, interval probability, draws used, seed, time unit, and
        ``parameter_uncertainty``: False when the posterior is a single draw (MAP/MLE fits),
        in which case every credible-interval (``*_ci_lower/upper``) and ``*_sd`` column of
        the expectations is NaN (a point is not an interval); the predictive intervals
        (``*_pi_*``, the customer's own randomness) are still given.
    """

    customers: pd.DataFrame
    segments: dict[str, pd.DataFrame] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def joint_draws(
    purchase_model: PurchaseModel, spend_model: SpendModel | None = None, n_draws: int | None = None
):
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
    purchase_model: PurchaseModel,
    spend_model: SpendModel | None = None,
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
    n_jobs: int | None = None,
) -> CustomerScores:
    """Predict every customer's future with credible and predictive intervals.

    Parameters
    ----------
    rfm : pandas.DataFrame
        Customer table (``frequency``, ``recency``, ``T`` and, with a spend model,
        ``monetary_value``), in the time unit the models were fitted in, plus any
        grouping columns named in ``by``.
    purchase_model : PurchaseModel
        Fitted continuous-time purchase model (BetaGeoModel, ModifiedBetaGeoModel: any model
        implementing :class:`clvbayes.models.protocols.PurchaseModel`).
    spend_model : SpendModel, optional
        Fitted spend model (GammaGammaModel: :class:`clvbayes.models.protocols.SpendModel`);
        without it only ``p_alive`` and ``purchases`` are computed.
    horizon : float
        Length of the future window, in the data's time unit (weeks on CDNOW).
    discount_rate : float
        Discount rate per ``period`` (default 0: no discounting).
    annual_discount_rate : float, optional
        Alternative to ``discount_rate``: a rate per year, converted exactly with
        :func:`clvbayes.units.annual_to_period_rate` (365.25-day year, 7-day week).
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
        Work size per chunk (draws x distinct histories); bounds peak memory (~200 bytes
        each, per thread).
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
    n_jobs : int, optional
        Threads working on chunks in parallel (default: all cores).  Results do not
        depend on it: every chunk has its own seed.

    Returns
    -------
    CustomerScores

    Raises
    ------
    TypeError
        When a model does not implement its protocol (the message names the missing methods).
    """
    check_implements(purchase_model, PurchaseModel, "purchase_model")
    if spend_model is not None:
        check_implements(spend_model, SpendModel, "spend_model")
    tail_probs(prob)
    time_unit = table_time_unit(rfm, purchase_model)
    discount_rate = _rate_per_period(discount_rate, annual_discount_rate, time_unit, period)
    ends, factors = schedule(horizon, discount_rate, period)
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in rfm.columns]
    if missing:
        raise ValueError(
            f"Grouping column(s) {missing} not in the customer table; columns: {list(rfm.columns)}."
        )
    job = _prepare(
        rfm, purchase_model, spend_model, n_draws=n_draws, n_outcome_samples=n_outcome_samples,
        ends=ends, factors=factors, margin=margin, period=period, prob=prob, by=by,
        outcomes=outcomes, observed=observed,
    )  # fmt: skip
    data, n_s = job.data, job.n_draws
    chunks = _chunks(data.n_unique, max(n_s, job.sample_draw.size), max_chunk_elements)
    seeds = np.random.SeedSequence(seed).spawn(len(chunks) + 1)
    per_hist, totals_e, resid_var, pit = _run_chunks(job, chunks, seeds, n_jobs, progress)

    customers = _customer_table(per_hist, data, rfm.index)
    for q, vals in pit.items():
        obs = np.empty(data.n_customers)
        obs[job.order] = job.observed[q]
        customers[f"{q}_pi_covered"] = (customers[f"{q}_pi_lower"] <= obs) & (
            obs <= customers[f"{q}_pi_upper"]
        )
        customers[f"{q}_pit"] = np.empty(data.n_customers)
        customers.iloc[job.order, customers.columns.get_loc(f"{q}_pit")] = vals
    totals_r = (
        _segment_outcome_totals(job, seeds[-1], totals_e, resid_var, max_chunk_elements, n_jobs)
        if outcomes else {}
    )  # fmt: skip
    segments = {
        g: _segment_table(totals_e[g], totals_r.get(g), job.labels[g], job.hist_group[g], prob)
        for g in job.groupings
    }
    settings = {
        "horizon": float(horizon), "time_unit": time_unit, "discount_rate_per_period": float(discount_rate),
        "annual_discount_rate": annual_discount_rate, "period": float(period), "margin": float(margin),
        "prob": float(prob), "n_draws": int(n_s), "n_outcome_samples": int(job.sample_draw.size),
        "seed": seed, "by": by, "n_customers": int(data.n_customers),
        "n_histories": int(data.n_unique), "parameter_uncertainty": bool(n_s > 1),
    }  # fmt: skip
    return CustomerScores(customers=customers, segments=segments, settings=settings)


@dataclass
class _Job:
    """Everything the chunks of one :func:`score_customers` call share (read-only)."""

    purchase_model: Any
    spend_model: Any
    data: Any  # CompressedRFM of the distinct histories, ordered by (frequency, T, ...)
    columns: tuple[str, ...]
    pparams: dict[str, np.ndarray]  # paired posterior draws, (S, 1) each
    sparams: dict[str, np.ndarray] | None
    sample_draw: np.ndarray  # outcome sample m uses posterior draw sample_draw[m]
    sim_pparams: dict[str, np.ndarray]
    sim_sparams: dict[str, np.ndarray] | None
    ends: np.ndarray
    factors: np.ndarray
    margin: float
    period: float
    prob: float
    quantities: list[str]
    seg_quants: list[str]
    groupings: dict[str, np.ndarray]  # segment code of each customer, per grouping
    labels: dict[str, pd.Index]
    hist_group: dict[str, Any]  # sparse (history x segment) customer counts, per grouping
    outcomes: bool
    observed: dict[str, np.ndarray]  # in history order (see ``order``)
    order: np.ndarray  # customers sorted by history
    starts: np.ndarray  # first customer (in ``order``) of each history

    @property
    def n_draws(self) -> int:
        return next(iter(self.pparams.values())).shape[0]


def _rate_per_period(discount_rate, annual_discount_rate, time_unit, period) -> float:
    if annual_discount_rate is None:
        return discount_rate
    if discount_rate:
        raise ValueError(
            "Give either discount_rate (per period) or annual_discount_rate, not both."
        )
    if not time_unit:
        raise ValueError(
            "annual_discount_rate needs the data's time unit (rfm.attrs['time_unit'])."
        )
    return annual_to_period_rate(annual_discount_rate, time_unit, period)


def _prepare(rfm, purchase_model, spend_model, *, n_draws, n_outcome_samples, ends, factors,
             margin, period, prob, by, outcomes, observed) -> _Job:  # fmt: skip
    """Validate and compress the table, pair the draws, index the segments and observations."""
    has_spend = spend_model is not None
    checked = purchase_model._validate(rfm, require_monetary=has_spend)
    columns = tuple(purchase_model.history_columns)
    if has_spend:
        # a spend model with covariates or segments adds its own codes (models.segmented)
        annotate = getattr(spend_model, "_annotate", None)
        checked = annotate(checked, source=rfm) if annotate is not None else checked
        columns += tuple(c for c in spend_model.history_columns if c not in columns)
    data = _by_active_key(compress(checked, columns=columns), purchase_model.active_columns)
    pparams, sparams = joint_draws(purchase_model, spend_model, n_draws)
    if has_spend:
        _check_spend_exists(sparams, checked)
    n_s = next(iter(pparams.values())).shape[0]
    reps = int(np.ceil(max(n_outcome_samples, 1) / n_s))
    sample_draw = np.arange(n_s * reps) % n_s
    order = np.argsort(data.inverse, kind="stable")
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
    seg_quants = [q for q in SEGMENT_QUANTITIES if has_spend or q in ("alive", "purchases")]
    observed = _check_observed(observed, quantities, data.n_customers, outcomes, order)
    return _Job(
        purchase_model=purchase_model, spend_model=spend_model, data=data, columns=columns,
        pparams=pparams, sparams=sparams, sample_draw=sample_draw,
        sim_pparams={k: v[sample_draw] for k, v in pparams.items()},
        sim_sparams={k: v[sample_draw] for k, v in sparams.items()} if has_spend else None,
        ends=ends, factors=factors, margin=float(margin), period=float(period), prob=prob,
        quantities=quantities, seg_quants=seg_quants, groupings=groupings, labels=labels,
        hist_group=hist_group, outcomes=outcomes, observed=observed, order=order,
        starts=np.concatenate([[0], np.cumsum(data.counts)]),
    )  # fmt: skip


def _check_observed(observed, quantities, n_customers, outcomes, order) -> dict[str, np.ndarray]:
    observed = {q: np.asarray(v, dtype=float) for q, v in (observed or {}).items()}
    valid = [q for q in quantities if q in OUTCOMES]
    unknown = sorted(set(observed) - set(valid))
    if unknown:
        raise ValueError(f"observed has unknown outcome(s) {unknown}; valid: {valid}.")
    for q, v in observed.items():
        if v.shape != (n_customers,):
            raise ValueError(
                f"observed[{q!r}] needs one value per customer ({n_customers}), got shape {v.shape}."
            )
    if observed and not outcomes:
        raise ValueError("observed outcomes need outcomes=True (the predictive distribution).")
    return {q: v[order] for q, v in observed.items()}


def _run_chunks(job: _Job, chunks, seeds, n_jobs, progress):
    """Score every chunk of histories (in parallel threads) and reduce the results."""
    data, n_s = job.data, job.n_draws
    per_hist = {q: {} for q in job.quantities}
    totals_e = {
        g: {q: np.zeros((n_s, len(job.labels[g]))) for q in job.seg_quants} for g in job.groupings
    }
    resid_var = {
        g: {q: np.zeros(len(job.labels[g])) for q in job.seg_quants} for g in job.groupings
    }
    pit = {q: np.empty(data.n_customers) for q in job.observed}
    t_start = time.perf_counter()
    n_workers = max(1, min(n_jobs or os.cpu_count() or 1, len(chunks)))
    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
    mapper = pool.map if pool else map  # numpy and the compiled kernels release the GIL
    try:
        results = mapper(lambda i: _score_chunk(job, chunks[i], seeds[i]), range(len(chunks)))
        for i_chunk, res in enumerate(results):
            h0, h1 = chunks[i_chunk]
            for q, stats in res["per_hist"].items():
                for key, val in stats.items():
                    per_hist[q].setdefault(key, []).append(val)
            for g in job.groupings:
                for q in job.seg_quants:
                    totals_e[g][q] += res["totals_e"][g][q]
                    if job.outcomes:
                        resid_var[g][q] += res["resid_var"][g][q]
            for q, vals in res["pit"].items():
                pit[q][job.starts[h0] : job.starts[h1]] = vals
            if progress:
                _report(i_chunk + 1, len(chunks), job.starts[h1], data.n_customers, t_start)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return per_hist, totals_e, resid_var, pit


def _check_spend_exists(sparams, rfm: pd.DataFrame) -> None:
    """ModelError, before any work, if some customer's expected spend is infinite in some draw.

    Gamma-Gamma's conditional mean exists only where ``p x + q > 1`` (heavy-tailed spend
    with ``q <= 1`` leaves customers with few or no repeat purchases without one): refuse
    with the customers' ids, the explanation and the fix rather than return inf or NaN.
    """
    if not {"p", "q"} <= set(sparams):
        return
    from clvbayes.errors import ModelError
    from clvbayes.math.gamma_gamma import HEAVY_TAIL_FIX

    p, q = np.ravel(sparams["p"]), np.ravel(sparams["q"])
    if np.all(q > 1.0):
        return
    x = rfm["frequency"].to_numpy(dtype=float)
    # customer i fails in some draw iff x_i <= max_s (1 - q_s) / p_s over draws with q_s <= 1
    limit = np.max(np.where(q <= 1.0, (1.0 - q) / p, -np.inf))
    bad = x <= limit
    if not bad.any():
        return
    n_draws = int(np.sum(q <= 1.0))
    ids = rfm.index[bad][:5].tolist()
    raise ModelError(
        f"Expected spend and CLV are infinite for {int(bad.sum()):,} of {x.size:,} customers "
        f"(first ids {ids}, frequency {x[bad][:5].tolist()}): {n_draws} of {q.size} draws of "
        f"the spend model have q <= 1 (q = {float(np.median(q)):.3g} median), and the "
        "Gamma-Gamma conditional mean p (gamma + x zbar) / (p x + q - 1) exists only where "
        f"p x + q > 1. {HEAVY_TAIL_FIX}"
    )


def _score_chunk(job: _Job, bounds, seed_seq) -> dict:
    """Expectations, outcome samples and their reductions for the distinct histories in ``bounds``."""
    h0, h1 = bounds
    data = job.data
    rng = np.random.default_rng(seed_seq)
    h = {c: np.asarray(data[c])[h0:h1] for c in job.columns}
    expect, keys, inverse = outcomes_lib.expectations(
        job.purchase_model, job.spend_model, job.pparams, job.sparams, h,
        job.ends, job.factors, job.margin,
    )  # fmt: skip
    # (history, draw) layout: each history's draws are contiguous for the summaries
    expect = {q: np.ascontiguousarray(v.T) for q, v in expect.items()}
    expect["alive"] = expect["p_alive"]
    out = {"per_hist": {}, "totals_e": {}, "resid_var": {}, "pit": {}}
    for q in job.quantities:
        stats = draw_stats(expect[q], job.prob, axis=1, kind="ci")
        out["per_hist"][q] = {f"ci_{k}": v for k, v in stats.items()}
    for g, m in job.hist_group.items():
        m_hist = m[h0:h1].T
        out["totals_e"][g] = {q: (m_hist @ expect[q]).T for q in job.seg_quants}
    if not job.outcomes:
        return out
    outcome, var = _history_outcomes(rng, job, h, expect, keys, inverse)
    for q in OUTCOMES:
        if q in outcome:
            stats = draw_stats(outcome[q], job.prob, axis=1, kind="pi")
            out["per_hist"][q]["pi_lower"], out["per_hist"][q]["pi_upper"] = (
                stats["lower"],
                stats["upper"],
            )
    for g, m in job.hist_group.items():
        out["resid_var"][g] = {q: m[h0:h1].T @ var[q] for q in job.seg_quants}
    starts = job.starts
    for q, obs in job.observed.items():
        hist_of_customer = np.repeat(np.arange(h1 - h0), data.counts[h0:h1])
        out["pit"][q] = _pit(rng, outcome[q], hist_of_customer, obs[starts[h0] : starts[h1]])
    return out


def _history_outcomes(rng, job: _Job, h, expect, keys, inverse):
    """Simulated outcomes, one per (distinct history, outcome sample): arrays (u, n_sim).

    Each sample ``m`` uses parameter draw ``sample_draw[m]``.  A history is alive with its own
    probability; given alive, its future (purchases, transaction values in units of the
    spend model's scale) depends only on its key (:func:`outcomes.future_keys`) and the draw,
    so one future per (sample, distinct key) is simulated and shared by the histories with
    that key.  Every history's samples are exact, independent draws from its predictive
    distribution.

    Also returns, per segment quantity, each history's mean squared deviation of the
    outcome from its conditional expectation given the draw, ``(u,)``: an unbiased estimate
    of the posterior mean of ``Var(outcome | parameters)`` (for the segment totals).
    """
    sample_draw = job.sample_draw
    spend_model = job.spend_model
    has_spend = spend_model is not None
    future = outcomes_lib.active_futures(
        int(rng.integers(2**32)), job.purchase_model, spend_model, job.sim_pparams,
        job.sim_sparams, keys, job.ends, job.factors, job.period,
    )  # fmt: skip
    n_sim, u = sample_draw.size, inverse.size
    names = ("purchases", "one", "value", "discounted") if has_spend else ("purchases",)
    fut = np.stack([future[k].T for k in names])
    if has_spend:
        scale = np.ascontiguousarray(spend_model._value_scale_arrays(job.sim_sparams, h).T)
        e_rev, e_clv = expect["revenue"], expect["clv"]
    else:
        scale = np.zeros((u, 1))
        e_rev = e_clv = expect["purchases"]
    n_q = 5 if has_spend else 2
    samples = np.empty((n_q, u, n_sim))
    resid = np.empty((4, u))
    _outcome_kernel(
        rng.random((u, n_sim)), expect["p_alive"], sample_draw, inverse, fut, has_spend,
        scale, float(job.margin), expect["purchases"], e_rev, e_clv, samples, resid,
    )  # fmt: skip
    names = ("alive", "purchases", "spend", "revenue", "clv")[:n_q]
    outcome = dict(zip(names, samples, strict=True))
    var = dict(zip(("alive", "purchases", "revenue", "clv"), resid, strict=True))
    return outcome, var


@numba.njit(nogil=True, cache=True)
def _outcome_kernel(uniform, p_alive, sample_draw, pair, fut, has_spend, scale, margin,
                    e_purch, e_rev, e_clv, out, resid):  # pragma: no cover - compiled  # fmt: skip
    """Compose each history's outcome samples from its alive draws and its key's futures."""
    n_hist, n_sim = uniform.shape
    for i in range(n_hist):
        k = pair[i]
        acc0 = acc1 = acc2 = acc3 = 0.0
        for m in range(n_sim):
            d = sample_draw[m]
            pa = p_alive[i, d]
            alive = uniform[i, m] < pa
            n = fut[0, k, m] if alive else 0.0
            out[0, i, m] = 1.0 if alive else 0.0
            out[1, i, m] = n
            acc0 += ((1.0 if alive else 0.0) - pa) ** 2
            acc1 += (n - e_purch[i, d]) ** 2
            if has_spend:
                sc = scale[i, m]
                rev = sc * fut[2, k, m] if alive else 0.0
                clv = margin * sc * fut[3, k, m] if alive else 0.0
                out[2, i, m] = sc * fut[1, k, m]
                out[3, i, m] = rev
                out[4, i, m] = clv
                acc2 += (rev - e_rev[i, d]) ** 2
                acc3 += (clv - e_clv[i, d]) ** 2
        resid[0, i] = acc0 / n_sim
        resid[1, i] = acc1 / n_sim
        resid[2, i] = acc2 / n_sim
        resid[3, i] = acc3 / n_sim


def _segment_outcome_totals(job: _Job, seed_seq, tot_e, resid_var, max_elements, n_jobs):
    """Simulated outcome totals per segment of every grouping: ``{grouping: {quantity:
    array (n_sim, n_groups)}}``.

    Segments of at least ``EXACT_SEGMENT_MIN`` customers: given the parameters, the total is
    a sum of that many independent outcomes, so it is drawn as normal with the exact
    conditional mean (per draw) and the summed conditional variances of its customers
    (estimated without bias from the outcome samples).  Smaller segments: every customer's
    outcome is simulated independently (as a full posterior-predictive draw) and summed.
    A customer in small segments of several groupings is simulated once and counted in
    each of them, so the groupings' totals come from one simulated future.  Chunks of
    customers run in ``n_jobs`` threads, each with its own seed: the totals do not depend
    on ``n_jobs``.
    """
    seeds = seed_seq.spawn(2)
    rng = np.random.default_rng(seeds[0])
    sample_draw = job.sample_draw
    n_sim = sample_draw.size
    out, in_small = {}, {}
    for g, codes in job.groupings.items():
        n_groups = len(job.labels[g])
        small = np.bincount(codes, minlength=n_groups) < EXACT_SEGMENT_MIN
        out[g] = {}
        for q, e in tot_e[g].items():
            noise = rng.standard_normal((n_sim, n_groups)) * np.sqrt(resid_var[g][q])
            out[g][q] = np.where(small, 0.0, e[sample_draw] + noise)
        if small.any():
            in_small[g] = small[codes]
    if not in_small:
        return out
    members = np.flatnonzero(np.logical_or.reduce(list(in_small.values())))
    data = job.data
    chunks = _chunks(members.size, n_sim, max_elements)
    chunk_seeds = seeds[1].spawn(len(chunks))

    def simulate(i: int) -> dict:
        sl = slice(*chunks[i])
        hist = data.inverse[members[sl]]
        hc = {c: np.asarray(data[c])[hist] for c in job.columns}
        sim = outcomes_lib.simulate_customers(
            np.random.default_rng(chunk_seeds[i]), job.purchase_model, job.spend_model,
            job.sim_pparams, job.sim_sparams, hc, job.ends, job.factors, job.margin, job.period,
        )  # fmt: skip
        sums = {}
        for g, flags in in_small.items():
            rows = np.flatnonzero(flags[members[sl]])
            onehot = sparse.csr_matrix(
                (np.ones(rows.size), (rows, job.groupings[g][members[sl]][rows])),
                shape=(hist.size, len(job.labels[g])),
            )
            sums[g] = {q: (onehot.T @ sim[q].T).T for q in out[g]}
        return sums

    n_workers = max(1, min(n_jobs or os.cpu_count() or 1, len(chunks)))
    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
    try:  # summed in chunk order whatever the threads: reproducible
        for sums in (pool.map if pool else map)(simulate, range(len(chunks))):
            for g, by_q in sums.items():
                for q, v in by_q.items():
                    out[g][q] += v
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return out


def _by_active_key(data, active_columns):
    """Reorder distinct histories by their active key (e.g. (frequency, T)), then the rest,
    so that chunks share keys: the futures of active customers are simulated once per key."""
    from clvbayes.data import CompressedRFM

    rest = [data[c] for c in reversed(data.columns) if c not in active_columns]
    perm = np.lexsort([*rest, *(data[c] for c in reversed(active_columns))])
    rank = np.empty_like(perm)
    rank[perm] = np.arange(perm.size)
    return CompressedRFM(
        values={c: np.asarray(data[c])[perm] for c in data.columns}, counts=data.counts[perm],
        inverse=rank[data.inverse], customer_ids=data.customer_ids, columns=data.columns,
    )  # fmt: skip


def _chunks(n_items: int, per_item: int, max_elements: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges of items with at most ``max_elements`` items x
    ``per_item`` (draws or samples) each (at least one item per range)."""
    step = max(1, max_elements // max(per_item, 1))
    # at least MIN_CHUNKS ranges of MIN_CHUNK_ITEMS or more, so that small jobs use every
    # core too; a function of the sizes only, so results never depend on the thread count
    step = min(step, max(MIN_CHUNK_ITEMS, -(-n_items // MIN_CHUNKS)))
    return [(i, min(i + step, n_items)) for i in range(0, n_items, step)]


def _pit(rng, samples, hist_of_customer, obs) -> np.ndarray:
    """Randomised PIT of each customer's observation under its history's outcome samples (u, n)."""
    block = samples[hist_of_customer]
    below = (block < obs[:, None]).mean(axis=1)
    at_or_below = (block <= obs[:, None]).mean(axis=1)
    return below + rng.uniform(size=obs.size) * (at_or_below - below)


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
