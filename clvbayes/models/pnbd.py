"""Pareto/NBD purchase model (Schmittlein, Morrison & Colombo 1987; Fader, Hardie & Lee 2005).

Assumptions (non-contractual, continuous time): while active, a customer buys as a
Poisson process with rate ``lambda ~ Gamma(r, alpha)``; the customer stays active for an
exponential lifetime with rate ``mu ~ Gamma(s, beta)`` (dropout at any time, unobserved);
``lambda`` and ``mu`` are independent.  ``alpha`` and ``beta`` are rates in the data's time
unit.  Data columns: ``frequency`` (repeat purchases), ``recency`` (first to last purchase)
and ``T`` (first purchase to the end of observation), in one time unit recorded in
``rfm.attrs["time_unit"]``.

The math (likelihood and its exact gradient, P(alive), expected purchases, count
probabilities, DERT, simulation) is in :mod:`clvbayes.math.pnbd`; this file only maps data
and posterior draws onto it.

Default priors (weakly informative).  ``alpha`` and ``beta`` are in the data's time unit:
their priors are wide enough for days and weeks.  The likelihood is nearly flat along a
ridge of roughly constant ``s / beta`` (the mean dropout rate); the HalfNormal(10) prior on
``s`` keeps NUTS off the far end of that ridge without moving the mode noticeably on CDNOW.

======  ============================  =====================================
name    default                       note
======  ============================  =====================================
r       HalfNormal(sigma=10)          shape of the purchase-rate distribution
alpha   HalfNormal(sigma=200)         rate (1/time unit) of that distribution
s       HalfNormal(sigma=10)          shape of the dropout-rate distribution
beta    HalfNormal(sigma=200)         rate (1/time unit) of that distribution
======  ============================  =====================================
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from clvbayes.data import CompressedRFM, compress, validate_rfm
from clvbayes.math import pnbd
from clvbayes.math._random import poisson
from clvbayes.math._xp import NUMPY
from clvbayes.models.base import CLVModel
from clvbayes.models.priors import Prior

DEFAULT_PRIORS: dict[str, Prior] = {
    "r": Prior("HalfNormal", sigma=10),
    "alpha": Prior("HalfNormal", sigma=200),
    "s": Prior("HalfNormal", sigma=10),
    "beta": Prior("HalfNormal", sigma=200),
}


class ParetoNBDModel(CLVModel):
    """Bayesian Pareto/NBD model.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace any of the default priors (see the module docstring), e.g.
        ``{"s": Prior("Gamma", alpha=1, beta=1)}``.  Valid names: r, alpha, s, beta.

    Examples
    --------
    >>> from clvbayes.datasets import load_cdnow_summary
    >>> model = ParetoNBDModel().fit(load_cdnow_summary(), method="map")
    >>> model.expected_purchases(t=39).mean(("chain", "draw"))  # doctest: +SKIP
    """

    _math: ClassVar[Any] = pnbd
    param_names: ClassVar[tuple[str, ...]] = ("r", "alpha", "s", "beta")
    # the (s, beta) ridge has a narrow small-s end: at PyMC's default 0.8 a CDNOW run had
    # 12 divergences there, at 0.95 none (tests/test_models_pnbd.py)
    nuts_defaults: ClassVar[dict[str, Any]] = {"target_accept": 0.95}
    # the default NUTS (clvbayes.nuts) and PyMC's run the exact-gradient NumPy likelihood;
    # nutpie and numpyro would compile the quadrature graph, which takes many minutes
    # (tests/test_models_pnbd.py), so pass them only knowingly
    preferred_nuts_sampler: ClassVar[str | None] = None
    display_name: ClassVar[str] = "Pareto/NBD"
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
    history_columns: ClassVar[tuple[str, ...]] = ("frequency", "recency", "T")
    active_columns: ClassVar[tuple[str, ...]] = ("frequency", "T")

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        return compress(validate_rfm(rfm), columns=self.history_columns)

    def _validate(self, rfm: pd.DataFrame, require_monetary: bool = False) -> pd.DataFrame:
        return validate_rfm(rfm, require_monetary=require_monetary)

    def _loglik(self, params, data, xp=NUMPY):
        return pnbd.loglik(
            params["r"], params["alpha"], params["s"], params["beta"],
            data["frequency"], data["recency"], data["T"], xp=xp,
        )  # fmt: skip

    def _loglik_sum_function(self, data: CompressedRFM):
        prepared = pnbd.prepare_loglik_sum(
            data["frequency"], data["recency"], data["T"], self._likelihood_weights(data)
        )
        return functools.partial(pnbd.loglik_sum_and_grad, data=prepared)

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        w = data.counts / data.counts.sum()
        mean_t = float(np.sum(w * data["T"]))
        mean_x = float(np.sum(w * data["frequency"]))
        # purchase rate ~ (x + 1)/T; mean lifetime ~ the observation length
        return {
            "r": 1.0, "alpha": max(mean_t / (mean_x + 1.0), 1e-3),
            "s": 1.0, "beta": max(mean_t, 1e-3),
        }  # fmt: skip

    # ------------------------------------------------------------------ predictions
    def _per_customer(self, func, rfm, name: str, **kwargs):
        """Evaluate ``func(r, alpha, s, beta, x, t_x, T, **kwargs)`` per distinct history, expand to customers."""
        import xarray as xr

        data = self._resolve_data(rfm)
        d = {k: v[..., None] for k, v in self.draws().items()}
        values = func(
            d["r"], d["alpha"], d["s"], d["beta"],
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
        return self._per_customer(pnbd.p_alive, rfm, "p_alive")

    def p_alive_at(self, t: float, rfm: pd.DataFrame | None = None):
        """Draws of P(still active at T + t), ``t`` in the data's time unit."""
        return self._per_customer(pnbd.p_alive_at, rfm, "p_alive_at", t=t)

    def expected_purchases(self, t: float, rfm: pd.DataFrame | None = None):
        """Draws of E[number of purchases in (T, T + t] | history], ``t`` in the data's time unit."""
        return self._per_customer(pnbd.expected_purchases, rfm, "expected_purchases", t=t)

    def prob_purchases_conditional(self, t: float, n: int, rfm: pd.DataFrame | None = None):
        """Draws of P(n purchases in (T, T + t] | history), ``t`` in the data's time unit."""
        return self._per_customer(
            pnbd.prob_purchases_conditional, rfm, "prob_purchases_conditional", t=t, n=n
        )

    def dert(self, delta: float, rfm: pd.DataFrame | None = None):
        """Draws of the discounted expected residual transactions (continuous rate ``delta``).

        ``delta`` is per time unit of the data (e.g. ``log(1.15) / 52`` per week for 15% a
        year); see :func:`clvbayes.math.pnbd.dert`.
        """
        return self._per_customer(pnbd.dert, rfm, "dert", delta=delta)

    def expected_purchases_new(self, t: float | np.ndarray):
        """Draws of E[X(t)] for a brand-new customer; dims (chain, draw[, t])."""
        import xarray as xr

        d = {k: v[..., None] for k, v in self.draws().items()}
        t_arr = np.atleast_1d(np.asarray(t, dtype=float))
        values = pnbd.expected_purchases_new(d["r"], d["alpha"], d["s"], d["beta"], t_arr)
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
        values = pnbd.prob_purchases(d["r"], d["alpha"], d["s"], d["beta"], t, n_arr)
        return xr.DataArray(
            values, dims=("chain", "draw", "n"), coords={"n": n_arr}, name="prob_purchases"
        )

    # ------------------------------------------------------------------ array interface
    # The PurchaseModel protocol (clvbayes.models.protocols): ``params`` holds arrays of shape
    # (S, 1) (S posterior draws), ``h`` history arrays of shape (n,), ``keys`` (P,).
    def _p_alive_arrays(self, params, h):
        return pnbd.p_alive(*self._args(params), h["frequency"], h["recency"], h["T"])

    def _expected_active_arrays(self, params, keys, ends, factors):
        """Discounted and total expected purchases to ``ends[-1]`` if active at T, (S, P) each.

        The cumulative expectation is analytic in ``t`` off ``(-inf, -(beta + T)]``.
        """
        from clvbayes.math.discount import discounted_increments

        r, alpha, s, beta = (v[..., None] for v in self._args(params))
        x, T = keys["frequency"][:, None], keys["T"][:, None]
        return discounted_increments(
            lambda t: pnbd.expected_purchases_alive(r, alpha, s, beta, x, T, t),
            scale=np.min(beta) + np.min(T), ends=ends, factors=factors, with_total=True,
        )  # fmt: skip

    def _active_state(self, rng, params, keys):
        """Customers active at T: ``lam ~ Gamma(r + x, alpha + T)``, ``mu ~ Gamma(s, beta + T)``."""
        r, alpha, s, beta = self._args(params)
        x, T = keys["frequency"], keys["T"]
        shape = np.broadcast_shapes(np.shape(r), np.shape(x))
        lam = rng.gamma(np.broadcast_to(r + x, shape)) / (alpha + T)
        mu = rng.gamma(np.broadcast_to(s, shape)) / (beta + T)
        return {"lam": lam, "mu": mu}

    def _advance(self, rng, state, dt):
        """Remaining lifetime ``Exp(mu)`` (memoryless); ``Poisson(lam min(lifetime, dt))`` purchases."""
        life = rng.exponential(size=state["mu"].shape) / state["mu"]
        return poisson(rng, state["lam"] * np.minimum(life, dt)), life > dt

    @staticmethod
    def _args(params):
        return params["r"], params["alpha"], params["s"], params["beta"]
