"""BG/NBD purchase model (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way").

Assumptions (non-contractual, continuous time): while active, a customer buys as a
Poisson process with rate ``lambda ~ Gamma(r, alpha)`` (alpha a rate, in the data's
time unit); after every purchase the customer drops out for good with probability
``p ~ Beta(a, b)``.  Data columns: ``frequency`` (repeat purchases), ``recency``
(first to last purchase) and ``T`` (first purchase to the end of observation), in
one time unit recorded in ``rfm.attrs["time_unit"]``.

The math (likelihood, P(alive), expected purchases, simulation) is in
:mod:`clvbayes.math.bgnbd`; this file only maps data and posterior draws onto it.

Default priors (weakly informative; the likelihood dominates with a few hundred
customers).  ``alpha`` is in the data's time unit: its prior is wide enough for
both days and weeks.  The dropout shapes ``a`` and ``b`` are only weakly identified
together (their sum, the concentration of the dropout Beta, has a long right tail
in the likelihood); heavy-tailed HalfCauchy(1) priors allow large values but keep
that tail from dominating the posterior mean.  Measured on CDNOW: posterior means
within 0.2 posterior sd of the MLE and posterior sd within 10% of the MLE standard
errors, where nearly flat HalfNormal(10) priors on ``a, b`` give means 0.6 sd
above the MLE and sds 50-60% wider.

======  ============================  =====================================
name    default                       note
======  ============================  =====================================
r       HalfNormal(sigma=10)          shape of the purchase-rate distribution
alpha   HalfNormal(sigma=200)         rate (1/time unit) of that distribution
a       HalfCauchy(beta=1)            dropout Beta, first shape
b       HalfCauchy(beta=1)            dropout Beta, second shape
======  ============================  =====================================
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from clvbayes import sampling
from clvbayes.data import CompressedRFM, compress, validate_rfm
from clvbayes.math import bgnbd
from clvbayes.math._random import geometric, poisson
from clvbayes.math._xp import NUMPY
from clvbayes.models.base import CLVModel
from clvbayes.models.priors import Prior

DEFAULT_PRIORS: dict[str, Prior] = {
    "r": Prior("HalfNormal", sigma=10),
    "alpha": Prior("HalfNormal", sigma=200),
    "a": Prior("HalfCauchy", beta=1),
    "b": Prior("HalfCauchy", beta=1),
}


class BetaGeoFamily(CLVModel):
    """Shared implementation of the beta-geometric purchase models (BG/NBD, MBG/NBD).

    The members differ only in their math module (``_math``: likelihood, P(alive),
    expectations, latent posterior and simulation with the same signatures) and their
    docstrings and default priors; everything here maps data and draws onto ``_math``.
    """

    _math: ClassVar[Any] = bgnbd
    param_names: ClassVar[tuple[str, ...]] = ("r", "alpha", "a", "b")
    history_columns: ClassVar[tuple[str, ...]] = ("frequency", "recency", "T")
    active_columns: ClassVar[tuple[str, ...]] = ("frequency", "T")

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        return compress(validate_rfm(rfm), columns=self.history_columns)

    def _validate(self, rfm: pd.DataFrame, require_monetary: bool = False) -> pd.DataFrame:
        return validate_rfm(rfm, require_monetary=require_monetary)

    def _loglik(self, params, data, xp=NUMPY):
        terms = None
        if getattr(data, "terms", None) is not None:  # PyMC graph: once per distinct frequency
            unique, index = data.terms
            terms = self._math.loglik_frequency_terms(
                params["r"], params["a"], params["b"], unique, xp=xp
            )[index]
        return self._math.loglik(
            params["r"], params["alpha"], params["a"], params["b"],
            data["frequency"], data["recency"], data["T"], xp=xp, frequency_terms=terms,
        )  # fmt: skip

    def _symbolic_terms(self, data: CompressedRFM, pm):
        return sampling.distinct_values(data, "frequency", pm)

    def _loglik_sum_function(self, data: CompressedRFM):
        prepared = self._math.prepare_loglik_sum(
            data["frequency"], data["recency"], data["T"], self._likelihood_weights(data)
        )
        return functools.partial(self._math.loglik_sum_and_grad, data=prepared)

    def _information_problem(self, data: CompressedRFM) -> str | None:
        if not (data["frequency"] > 0).any():
            return (
                f"none of the {data.n_customers:,} customers made a repeat purchase (frequency 0 "
                "for all)"
            )
        return None

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        w = data.counts / data.counts.sum()
        mean_t = float(np.sum(w * data["T"]))
        mean_x = float(np.sum(w * data["frequency"]))
        return {"r": 1.0, "alpha": max(mean_t / (mean_x + 1.0), 1e-3), "a": 1.0, "b": 1.0}

    # ------------------------------------------------------------------ predictions
    def _per_customer(self, func, rfm, name: str, **kwargs):
        """Evaluate ``func(r, alpha, a, b, x, t_x, T, **kwargs)`` per distinct history, expand to customers."""
        import xarray as xr

        data = self._resolve_data(rfm)
        d = {k: v[..., None] for k, v in self.draws().items()}
        values = func(
            d["r"], d["alpha"], d["a"], d["b"],
            data["frequency"], data["recency"], data["T"], **kwargs,
        )  # fmt: skip
        return xr.DataArray(
            data.expand(values, axis=-1), dims=("chain", "draw", "customer_id"), name=name,
            coords={"customer_id": data.customer_ids.to_numpy()},
        )  # fmt: skip

    def p_alive(self, rfm: pd.DataFrame | None = None):
        """Posterior draws of P(customer is still active at T), dims (chain, draw, customer_id).

        Parameters
        ----------
        rfm : pandas.DataFrame, optional
            Customer table (default: the training data).
        """
        return self._per_customer(self._math.p_alive, rfm, "p_alive")

    def p_alive_at(self, t: float, rfm: pd.DataFrame | None = None):
        """Draws of P(still active at T + t), ``t`` in the data's time unit."""
        return self._per_customer(self._math.p_alive_at, rfm, "p_alive_at", t=t)

    def expected_purchases(self, t: float, rfm: pd.DataFrame | None = None):
        """Draws of E[number of purchases in (T, T + t] | history], ``t`` in the data's time unit."""
        return self._per_customer(self._math.expected_purchases, rfm, "expected_purchases", t=t)

    def expected_purchases_new(self, t: float | np.ndarray):
        """Draws of E[X(t)] for a brand-new customer; dims (chain, draw[, t])."""
        import xarray as xr

        d = {k: v[..., None] for k, v in self.draws().items()}
        t_arr = np.atleast_1d(np.asarray(t, dtype=float))
        values = self._math.expected_purchases_new(d["r"], d["alpha"], d["a"], d["b"], t_arr)
        if np.ndim(t) == 0:
            return xr.DataArray(
                values[..., 0], dims=("chain", "draw"), name="expected_purchases_new"
            )
        return xr.DataArray(
            values, dims=("chain", "draw", "t"), coords={"t": t_arr}, name="expected_purchases_new"
        )

    def prob_purchases(self, t: float, n: int | np.ndarray):
        """Draws of the unconditional P(X(t) = n) for a new customer; dims (chain, draw, n)."""
        import xarray as xr

        d = {k: v[..., None] for k, v in self.draws().items()}
        n_arr = np.atleast_1d(np.asarray(n))
        values = self._math.prob_purchases(d["r"], d["alpha"], d["a"], d["b"], t, n_arr)
        return xr.DataArray(
            values, dims=("chain", "draw", "n"), coords={"n": n_arr}, name="prob_purchases"
        )

    # ------------------------------------------------------------------ array interface
    # The PurchaseModel protocol (clvbayes.models.protocols): ``params`` holds arrays of shape
    # (S, 1) (S posterior draws), ``h`` history arrays of shape (n,), ``keys`` (P,).
    def _p_alive_arrays(self, params, h):
        return self._math.p_alive(*self._args(params), h["frequency"], h["recency"], h["T"])

    def _expected_active_arrays(self, params, keys, ends, factors):
        """Discounted and total expected purchases to ``ends[-1]`` if active at T, (S, P) each."""
        from clvbayes.math.discount import discounted_increments

        r, alpha, a, b = (v[..., None] for v in self._args(params))
        x, T = keys["frequency"][:, None], keys["T"][:, None]
        return discounted_increments(
            lambda t: self._math.expected_purchases_alive(r, alpha, a, b, x, T, t),
            scale=np.min(alpha) + np.min(T), ends=ends, factors=factors, with_total=True,
        )  # fmt: skip

    def _active_state(self, rng, params, keys):
        """``lam`` and ``p`` of customers active at T (:func:`sample_latent_alive`), (S, P) each."""
        lam, p = self._math.sample_latent_alive(
            rng, *self._args(params), keys["frequency"], keys["T"]
        )
        return {"lam": lam, "p": p}

    def _advance(self, rng, state, dt):
        """``Poisson(lam dt)`` purchase opportunities; each purchase ends activity with prob. p.

        After every purchase the customer drops out with probability ``p`` (in every member
        of the family, once active at T), so the purchases in the step are ``min(N, G)`` with
        ``N ~ Poisson(lam dt)`` and ``G ~ Geometric(p)`` the purchase that ends activity;
        the customer is still active iff ``G > N`` (memoryless: a fresh ``G`` each step).
        """
        n = poisson(rng, state["lam"] * dt)
        g = np.full(n.shape, np.iinfo(np.int64).max)
        buy = n > 0
        g[buy] = geometric(rng, state["p"][buy])
        return np.minimum(n, g), g > n

    def _fused_futures(self, seed, params, keys, horizon, period, factors, marks=None,
                       independent=False):  # fmt: skip
        """The futures of :func:`clvbayes.predict.outcomes.generic_active_futures` in one
        compiled pass (:func:`clvbayes.math.bgnbd.simulate_active_futures`); ``marks`` from
        :meth:`GammaGammaModel._fused_marks` adds the unit-scale values; ``independent``
        gives every key its own future (keys are then customers, in any order)."""
        r, alpha, a, b = (np.ravel(v) for v in self._args(params))
        shape, rate_shape = marks if marks is not None else (None, None)
        return self._math.simulate_active_futures(
            seed, r, alpha, a, b, keys["frequency"], keys["T"], horizon, period, factors,
            mark_shape=shape, mark_rate_shape=rate_shape, independent=independent,
        )  # fmt: skip

    @staticmethod
    def _args(params):
        return params["r"], params["alpha"], params["a"], params["b"]


class BetaGeoModel(BetaGeoFamily):
    """Bayesian BG/NBD model.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace any of the default priors (see the module docstring), e.g.
        ``{"r": Prior("Gamma", alpha=1, beta=1)}``.  Valid names: r, alpha, a, b.

    Examples
    --------
    >>> from clvbayes.datasets import load_cdnow_summary
    >>> model = BetaGeoModel().fit(load_cdnow_summary(), method="map")
    >>> model.expected_purchases(t=39).mean(("chain", "draw"))  # doctest: +SKIP
    """

    display_name: ClassVar[str] = "BG/NBD"
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
