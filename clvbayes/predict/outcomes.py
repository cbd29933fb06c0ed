"""Any purchase model x any spend model x discounting: expectations and simulated futures.

This is the one place where a purchase model (:class:`~clvbayes.models.protocols.PurchaseModel`)
and a spend model (:class:`~clvbayes.models.protocols.SpendModel`) are combined.  It needs
nothing of a family but its protocol methods, so a new family runs here from day one.

* **Expectations** per distinct history and draw: ``E[purchases] = P(alive) x E[purchases |
  active at T]``; the second factor depends only on the model's ``active_columns`` (for the
  continuous-time families ``(frequency, T)``), so it is computed once per distinct key.
  With a spend model, ``E[revenue] = E[spend] x E[purchases]`` and ``E[clv] = margin x
  E[spend] x E[discounted purchases]`` (the spend and purchase processes are independent
  given the parameters).
* **Simulated futures** of customers active at ``T``: their latent state is drawn from its
  exact posterior (``_active_state``), then advanced period by period (``_advance``; the
  models are Markov in their state), the purchases of each period get spend marks
  (``_unit_value_sums``: the sum of ``n`` unit values) and the period's discount factor.
  Consecutive periods with the same factor (all of them when nothing is discounted) are one
  step.  Only customers still active are carried to the next step, so memory is a few flat
  arrays of (draws x keys) -- bounded by the caller's chunk size whatever the purchase
  rates, the horizon or the number of periods -- and time falls as customers drop out.
* **Optional accelerators**: a purchase model with ``_fused_futures`` and, with spend, a
  spend model with ``_fused_marks`` get the same futures from one compiled pass (the BG/NBD
  family x Gamma-Gamma).  ``tests/test_outcomes.py`` pins them to the generic path.

Units: times, horizons and periods in the customer table's time unit, money in the currency
of ``monetary_value`` (simulated values are in units of the spend model's scale until
multiplied by :meth:`~clvbayes.models.protocols.SpendModel._value_scale_arrays`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "active_futures",
    "expectations",
    "future_keys",
    "generic_active_futures",
    "simulate_customers",
    "steps",
]


def future_keys(purchase_model: Any, spend_model: Any, h: dict[str, np.ndarray]):
    """Distinct keys of the futures of active customers, and each history's key.

    Parameters
    ----------
    purchase_model, spend_model : PurchaseModel, SpendModel or None
    h : dict of str to ndarray
        Distinct histories, each ``(n,)``.

    Returns
    -------
    keys : dict of str to ndarray
        The purchase model's ``active_columns`` then the spend model's other ``key_columns``,
        each ``(P,)``, sorted lexicographically in that column order.
    inverse : ndarray of int, ``(n,)``
        Index of each history's key.
    """
    columns = list(purchase_model.active_columns)
    if spend_model is not None:
        columns += [c for c in spend_model.key_columns if c not in columns]
    stacked = np.stack([np.asarray(h[c], dtype=float) for c in columns])
    uniq, inverse = np.unique(stacked, axis=1, return_inverse=True)
    return dict(zip(columns, uniq, strict=True)), inverse.ravel()


def expectations(purchase_model, spend_model, pparams, sparams, h, ends, factors, margin):
    """Posterior draws of each expected quantity for distinct histories ``h``.

    Parameters
    ----------
    purchase_model, spend_model : PurchaseModel, SpendModel or None
    pparams, sparams : dict of str to ndarray
        Paired draws, each ``(S, 1)`` (``sparams`` None without a spend model).
    h : dict of str to ndarray
        Distinct histories, each ``(n,)``.
    ends, factors : ndarray
        Discount schedule (:func:`clvbayes.math.discount.schedule`), each ``(K,)``.
    margin : float
        Share of revenue that is profit (clv = margin x discounted revenue).

    Returns
    -------
    expect : dict of str to ndarray
        ``p_alive``, ``purchases`` and, with a spend model, ``spend`` (currency per
        transaction), ``revenue`` and ``clv`` (currency), each ``(S, n)``.
    keys, inverse
        From :func:`future_keys` (for the simulation of the same histories).
    """
    keys, inverse = future_keys(purchase_model, spend_model, h)
    p_alive = purchase_model._p_alive_arrays(pparams, h)
    discounted, total = purchase_model._expected_active_arrays(pparams, keys, ends, factors)
    expect = {"p_alive": p_alive, "purchases": p_alive * total[:, inverse]}
    if spend_model is not None:
        expect["spend"] = spend_model._expected_spend_arrays(sparams, h)
        expect["revenue"] = expect["spend"] * expect["purchases"]
        expect["clv"] = margin * expect["spend"] * p_alive * discounted[:, inverse]
    return expect, keys, inverse


def steps(ends: np.ndarray, factors: np.ndarray) -> list[tuple[float, float]]:
    """``(length, factor)`` of the simulation steps: runs of periods with one discount factor.

    With no discounting every factor is 1 and the horizon is one step.
    """
    ends = np.asarray(ends, dtype=float)
    factors = np.asarray(factors, dtype=float)
    last = np.flatnonzero(np.append(factors[1:] != factors[:-1], True))  # end of each run
    stops = ends[last]
    starts = np.concatenate([[0.0], stops[:-1]])
    return [(float(b - a), float(f)) for a, b, f in zip(starts, stops, factors[last], strict=True)]


def generic_active_futures(rng, purchase_model, spend_model, pparams, sparams, keys, ends,
                           factors, active=None) -> dict[str, np.ndarray]:  # fmt: skip
    """Simulated futures of customers active at ``T``, one per (draw, key), protocol only.

    Parameters
    ----------
    rng : numpy.random.Generator
    purchase_model, spend_model : PurchaseModel, SpendModel or None
    pparams, sparams : dict of str to ndarray
        Draws, each ``(S, 1)``: one simulated future per row and key.
    keys : dict of str to ndarray
        Each ``(P,)``.
    ends, factors : ndarray
        Discount schedule, each ``(K,)``.
    active : ndarray of bool, ``(S, P)``, optional
        Which cells are active at ``T`` (default all); the others have no future.

    Returns
    -------
    dict of str to ndarray, each ``(S, P)``
        ``purchases`` and, with a spend model, ``one`` (the unit value of one transaction,
        drawn for every cell), ``value`` (sum of the unit values of the purchases) and
        ``discounted`` (the same, each weighted by its period's factor).
    """
    state = purchase_model._active_state(rng, pparams, keys)
    shape = next(iter(state.values())).shape
    m = int(np.prod(shape))
    st = {k: np.ascontiguousarray(np.broadcast_to(v, shape)).ravel() for k, v in state.items()}
    idx = np.arange(m) if active is None else np.flatnonzero(np.ravel(active))
    st = {k: v[idx] for k, v in st.items()} if active is not None else st
    purchases = np.zeros(m)
    out = {"purchases": purchases}
    if spend_model is not None:
        unit = spend_model._unit_state(rng, sparams, keys)
        unit = {k: np.ascontiguousarray(np.broadcast_to(v, shape)).ravel() for k, v in unit.items()}
        out["one"] = spend_model._unit_value_sums(rng, unit, np.ones(m, dtype=np.int64))
        out["value"] = np.zeros(m)
        out["discounted"] = np.zeros(m)
    for dt, factor in steps(ends, factors):
        if idx.size == 0:
            break
        counts, alive = purchase_model._advance(rng, st, dt)
        purchases[idx] += counts
        if spend_model is not None:
            buy = np.flatnonzero(counts > 0)
            if buy.size:
                who = idx[buy]
                v = spend_model._unit_value_sums(
                    rng, {k: u[who] for k, u in unit.items()}, counts[buy]
                )
                out["value"][who] += v
                out["discounted"][who] += factor * v
        idx = idx[alive]
        st = {k: v[alive] for k, v in st.items()}
    return {k: v.reshape(shape) for k, v in out.items()}


def _has_fused(purchase_model, spend_model) -> bool:
    """Whether the models' fused kernel (one compiled pass for futures and values) applies."""
    if getattr(purchase_model, "_fused_futures", None) is None:
        return False
    return spend_model is None or getattr(spend_model, "_fused_marks", None) is not None


def active_futures(seed, purchase_model, spend_model, pparams, sparams, keys, ends, factors,
                   period, independent: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """:func:`generic_active_futures`, or the models' fused accelerator when both have one.

    ``seed`` is a non-negative 32-bit integer; ``period`` the discount period (time unit),
    needed by the fused kernels, which place each purchase in period ``ceil(t / period)``.
    The fused kernels share random streams between sorted keys with equal ``x`` (each
    entry exact, entries dependent); ``independent=True`` gives every key its own, for keys
    that are customers to be summed.  The generic path is independent in any case.
    """
    if _has_fused(purchase_model, spend_model):
        marks_of = getattr(spend_model, "_fused_marks", None)
        marks = marks_of(sparams, keys) if marks_of is not None else None
        return purchase_model._fused_futures(seed, pparams, keys, float(ends[-1]), period,
                                             factors, marks, independent=independent)  # fmt: skip
    rng = np.random.default_rng(seed)
    return generic_active_futures(
        rng, purchase_model, spend_model, pparams, sparams, keys, ends, factors
    )


def simulate_customers(rng, purchase_model, spend_model, pparams, sparams, hc, ends, factors,
                       margin, period: float | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """One simulated outcome per (draw, customer), customers independent: arrays ``(S, c)``.

    Each customer is active at ``T`` with its own P(alive); an active customer's future is
    :func:`active_futures` on its own history (no sharing), so every entry is an exact,
    independent draw from the customer's posterior predictive distribution.  Where the
    models have a fused kernel it simulates every cell's active future in one compiled pass
    and the inactive cells' are dropped (zero purchases and value; their unit value, which
    does not depend on activity, is kept); otherwise only the active cells are simulated.
    Memory: a few arrays of ``(S, c)``.

    Returns
    -------
    dict of str to ndarray
        ``alive`` (0/1), ``purchases`` and, with a spend model, ``spend`` (value of one
        transaction), ``revenue`` (value of the purchases) and ``clv`` (margin x discounted
        value), currency.
    """
    p_alive = purchase_model._p_alive_arrays(pparams, hc)
    alive = rng.random(p_alive.shape) < p_alive
    if _has_fused(purchase_model, spend_model) and period is not None:
        seed = int(rng.integers(2**32))
        fut = active_futures(seed, purchase_model, spend_model, pparams, sparams, hc, ends,
                             factors, period, independent=True)  # fmt: skip
        fut = {k: v if k == "one" else np.where(alive, v, 0.0) for k, v in fut.items()}
    else:
        fut = generic_active_futures(
            rng, purchase_model, spend_model, pparams, sparams, hc, ends, factors, active=alive
        )
    outcome = {"alive": alive.astype(float), "purchases": fut["purchases"]}
    if spend_model is None:
        return outcome
    scale = spend_model._value_scale_arrays(sparams, hc)
    outcome["spend"] = scale * fut["one"]
    outcome["revenue"] = scale * fut["value"]
    outcome["clv"] = margin * scale * fut["discounted"]
    return outcome
