"""Gamma-Gamma spend model (Fader & Hardie 2013 note; Colombo & Jiang 1999).

Assumptions: each transaction value of a customer is ``Gamma(p, nu)`` (``nu`` a rate,
in 1/currency unit); ``nu ~ Gamma(q, gamma)`` across customers; spend is independent
of the purchase process.  Data columns: ``frequency`` (repeat purchases) and
``monetary_value`` (mean value of those repeat purchases, currency units).

Only customers with ``frequency >= 1`` carry information about spend: the others
are excluded from the fit (the count is reported in ``fit_info_`` and by an
:class:`~clvbayes.models.base.ExcludedCustomersWarning`) and are predicted the
population mean spend, draw by draw.

Heavy-tailed spend (``q <= 1``).  The population mean transaction value
``p gamma / (q - 1)`` exists only for ``q > 1``, and a customer's conditional expected spend
``p (gamma + x z-bar) / (p x + q - 1)`` only where ``p x + q > 1``.  Very long-tailed spend
(e.g. lognormal order values with sigma 2) can drive the fit to ``q <= 1``.  clvbayes then
never returns a number for an expectation that does not exist: the fit records a
:class:`~clvbayes.errors.FitWarning` (in ``fit_info_["warnings"]``, hence in the report)
saying which share of the draws has ``q <= 1``, and every expectation that would be
infinite (:meth:`GammaGammaModel.expected_spend`, :meth:`population_mean_spend`,
:func:`clvbayes.predict.score_customers`) raises a :class:`~clvbayes.errors.ModelError`
that names the customers and gives the fix: a prior that keeps ``q`` above 1 (``clvbayes run
--priors FILE.json`` with ``{"gamma_gamma": {"q": {"dist": "Gamma", "alpha": 400, "beta":
100}}}``: it must be strong, as the data alone put ``q`` below 1, and it then sets the spend
predicted for customers without repeat purchases), capping extreme values, or predicting
purchases without the spend model.  On the CDNOW customers with lognormal spend (sigma 2)
the MAP is ``q = 0.54``; ``Gamma(20, 5)`` still gives 0.58 and ``Gamma(400, 100)`` gives 2.99.

The math is in :mod:`clvbayes.math.gamma_gamma`; this file maps data and draws onto it.

Default priors (weakly informative; ``gamma`` is in currency units, so its prior is
wide enough for typical order values from cents to thousands):

======  ============================
name    default
======  ============================
p       HalfNormal(sigma=10)
q       HalfNormal(sigma=10)
gamma   HalfNormal(sigma=1000)
======  ============================
"""

from __future__ import annotations

import functools
import warnings
from typing import ClassVar

import numpy as np
import pandas as pd

from clvbayes import sampling
from clvbayes.data import CompressedRFM, compress, validate_spend
from clvbayes.errors import FitWarning
from clvbayes.math import gamma_gamma
from clvbayes.math._xp import NUMPY
from clvbayes.models.base import CLVModel
from clvbayes.models.priors import Prior

DEFAULT_PRIORS: dict[str, Prior] = {
    "p": Prior("HalfNormal", sigma=10),
    "q": Prior("HalfNormal", sigma=10),
    "gamma": Prior("HalfNormal", sigma=1000),
}


class GammaGammaModel(CLVModel):
    """Bayesian Gamma-Gamma model of the average transaction value.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace any default prior (module docstring). Valid names: p, q, gamma.
    """

    param_names: ClassVar[tuple[str, ...]] = ("p", "q", "gamma")
    display_name: ClassVar[str] = "Gamma-Gamma"
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
    history_columns: ClassVar[tuple[str, ...]] = ("frequency", "monetary_value")
    key_columns: ClassVar[tuple[str, ...]] = ("frequency",)
    _exclusion_reason: ClassVar[str] = "frequency 0: no repeat transaction to learn spend from"

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        return compress(validate_spend(rfm), columns=self.history_columns)

    def _likelihood_weights(self, data: CompressedRFM) -> np.ndarray:
        return np.where(data["frequency"] > 0, data.counts, 0)

    def _loglik(self, params, data, xp=NUMPY):
        x = data["frequency"]
        # rows with frequency 0 get weight 0; give them harmless values so no NaN reaches gradients
        x_safe = xp.maximum(x, 1)
        z_safe = xp.where(x > 0, data["monetary_value"], 1.0)
        terms = None
        if getattr(data, "terms", None) is not None:  # PyMC graph: once per distinct frequency
            unique, index = data.terms
            terms = gamma_gamma.loglik_frequency_terms(
                params["p"], params["q"], xp.maximum(unique, 1), xp=xp
            )[index]
        return gamma_gamma.loglik(
            params["p"], params["q"], params["gamma"], x_safe, z_safe, xp=xp, frequency_terms=terms
        )

    def _symbolic_terms(self, data: CompressedRFM, pm):
        return sampling.distinct_values(data, "frequency", pm)

    def _loglik_sum_function(self, data: CompressedRFM):
        prepared = gamma_gamma.prepare_loglik_sum(
            data["frequency"], data["monetary_value"], self._likelihood_weights(data)
        )
        return functools.partial(gamma_gamma.loglik_sum_and_grad, data=prepared)

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        w = self._likelihood_weights(data)
        mean_z = float(np.sum(w * data["monetary_value"]) / max(w.sum(), 1))
        return {"p": 2.0, "q": 3.0, "gamma": max(mean_z, 1e-3)}

    def _check_information(self, n_fitted: int) -> list[str]:
        """The base checks plus a FitWarning when draws have ``q <= 1`` (no finite mean spend)."""
        messages = super()._check_information(n_fitted)
        q = np.asarray(self.draws()["q"], dtype=float).ravel()
        n_bad = int(np.sum(q <= 1.0))
        if n_bad:
            share = "the fitted value" if q.size == 1 else f"{n_bad} of {q.size} posterior draws"
            msg = (
                f"GammaGammaModel: {share} of q (median {np.median(q):.3g}) is <= 1: the "
                "population mean transaction value p gamma / (q - 1) does not exist, so spend "
                "and CLV cannot be predicted for customers without repeat purchases (scoring "
                f"raises an error). {gamma_gamma.HEAVY_TAIL_FIX}"
            )
            warnings.warn(msg, FitWarning, stacklevel=3)
            messages.append(msg)
        return messages

    # ------------------------------------------------------------------ predictions
    def expected_spend(self, rfm: pd.DataFrame | None = None):
        """Draws of E[value of a future transaction | frequency, monetary_value], currency units.

        Customers with frequency 0 get the population mean spend of the same draw.
        Dims (chain, draw, customer_id).

        Raises
        ------
        ModelError
            Where the expectation is infinite (``p x + q <= 1``, heavy-tailed spend: module
            docstring), with the customers and the fix.
        """
        import xarray as xr

        data = self._resolve_data(rfm)
        d = {k: v[..., None] for k, v in self.draws().items()}
        values = gamma_gamma.expected_spend(
            d["p"], d["q"], d["gamma"], data["frequency"], data["monetary_value"]
        )
        return xr.DataArray(
            data.expand(values, axis=-1), dims=("chain", "draw", "customer_id"), name="expected_spend",
            coords={"customer_id": data.customer_ids.to_numpy()},
        )  # fmt: skip

    def population_mean_spend(self):
        """Draws of the population mean transaction value p * gamma / (q - 1); dims (chain, draw)."""
        import xarray as xr

        d = self.draws()
        values = gamma_gamma.population_mean_spend(d["p"], d["q"], d["gamma"])
        return xr.DataArray(values, dims=("chain", "draw"), name="population_mean_spend")

    # ------------------------------------------------------------------ array interface
    # The SpendModel protocol (clvbayes.models.protocols): ``params`` arrays of shape (S, 1);
    # ``h`` history arrays (n,), ``keys`` (P,).
    def _expected_spend_arrays(self, params, h):
        return gamma_gamma.expected_spend(
            params["p"], params["q"], params["gamma"], h["frequency"], h["monetary_value"]
        )

    def _value_scale_arrays(self, params, h):
        """Scale ``gamma + x z-bar`` (currency) of each history's values, (S, n)."""
        x = np.asarray(h["frequency"], dtype=float)
        xz = x * np.where(x > 0, h["monetary_value"], 0.0)
        return np.asarray(params["gamma"]) + xz

    def _unit_state(self, rng, params, keys):
        """Value shape ``p`` and unit spend rate ``G ~ Gamma(p x + q, 1)`` per (draw, key)."""
        p, q = np.asarray(params["p"]), np.asarray(params["q"])
        rate_shape = p * keys["frequency"] + q
        return {"shape": np.broadcast_to(p, rate_shape.shape), "rate": rng.gamma(rate_shape)}

    def _unit_value_sums(self, rng, state, counts):
        """Sum of ``counts`` unit values ``g / G``, ``g ~ Gamma(p)``: ``Gamma(counts p) / G``."""
        counts = np.asarray(counts)
        out = np.zeros(counts.shape)
        some = counts > 0
        out[some] = rng.gamma(counts[some] * state["shape"][some]) / state["rate"][some]
        return out

    def _fused_marks(self, params, keys):
        """(value shape p (S,), spend-rate posterior shape p x + q (S, P)) for the fused kernel."""
        p, q = np.asarray(params["p"]), np.asarray(params["q"])
        return np.ravel(p), p * keys["frequency"] + q
