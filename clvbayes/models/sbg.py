"""Shifted-beta-geometric (sBG) retention model (Fader & Hardie 2007, "How to Project Customer Retention").

Assumptions (contractual, discrete time): at every renewal opportunity an active subscriber
cancels with a constant probability ``theta``; across subscribers ``theta ~ Beta(alpha,
beta)``; cancellations are observed.  Data columns (one row per subscriber or subscription
spell, from :func:`clvbayes.data.subscriptions.summarize_subscriptions` or
:func:`~clvbayes.data.subscriptions.subscribers_from_survival`): ``periods`` (renewals
completed) and ``churned`` (1 cancelled, 0 still active, right-censored), on the period grid
recorded in ``attrs["period"]``.  Every horizon and discount rate below is per period of
that grid.

The math (likelihood, survival, hazard, DERL, churn-period draws) is in
:mod:`clvbayes.math.sbg`; this file maps data and posterior draws onto it.  One model is one
cohort (or one pooled population): fit cohorts separately, or wait for the partial-pooling
model.

Default priors (weakly informative; the likelihood dominates with a few hundred
subscribers).  Both shapes are unit-free; their ratio sets the mean churn probability and
their sum how alike subscribers are, which a short history identifies poorly, so the
heavy-tailed HalfCauchy(1) of the BG/NBD dropout Beta is used here as well.

======  ============================  =====================================
name    default                       note
======  ============================  =====================================
alpha   HalfCauchy(beta=1)            churn-probability Beta, first shape
beta    HalfCauchy(beta=1)            churn-probability Beta, second shape
======  ============================  =====================================
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np
import pandas as pd

from clvbayes.data import CompressedRFM, compress
from clvbayes.data.subscriptions import validate_subscribers
from clvbayes.math import sbg
from clvbayes.math._xp import NUMPY
from clvbayes.models.base import CLVModel
from clvbayes.models.priors import Prior

DEFAULT_PRIORS: dict[str, Prior] = {
    "alpha": Prior("HalfCauchy", beta=1),
    "beta": Prior("HalfCauchy", beta=1),
}


class RetentionModel(CLVModel):
    """Shared by the sBG and the BdW: per-subscriber data, compression, prediction plumbing."""

    history_columns: ClassVar[tuple[str, ...]] = ("periods", "churned")
    _math = sbg

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        return compress(validate_subscribers(rfm), columns=self.history_columns)

    def _information_problem(self, data: CompressedRFM) -> str | None:
        if not (data["churned"] == 1).any():
            return f"none of the {data.n_customers:,} subscribers has cancelled (churned 0 for all)"
        return None

    def _loglik_sum_function(self, data: CompressedRFM):
        prepared = self._math.prepare_loglik_sum(
            data["periods"], data["churned"], self._likelihood_weights(data)
        )
        return functools.partial(self._math.loglik_sum_and_grad, data=prepared)

    def _args(self, d):
        return tuple(d[k] for k in self.param_names)

    def _per_subscriber(self, func, table, name: str, **kwargs):
        """``func(*params, periods, **kwargs)`` per distinct history, expanded to subscribers."""
        import xarray as xr

        data = self._resolve_data(table)
        d = {k: v[..., None] for k, v in self.draws().items()}
        values = func(*self._args(d), data["periods"].astype(float), **kwargs)
        return xr.DataArray(
            data.expand(values, axis=-1), dims=("chain", "draw", "customer_id"), name=name,
            coords={"customer_id": data.customer_ids.to_numpy()},
        )  # fmt: skip

    def _active_only(self, table):
        data = self._resolve_data(table)
        if (data["churned"] == 1).any():
            n = int(data.counts[data["churned"] == 1].sum())
            from clvbayes.errors import ModelError

            raise ModelError(
                f"{type(self).__name__}: {n} of the {data.n_customers} subscribers have "
                "cancelled; per-subscriber forecasts are for active subscribers only. Pass "
                "table[table['churned'] == 0]."
            )
        return table

    # ------------------------------------------------------------------ cohort curves
    def survival(self, t):
        """Draws of the share of a new cohort still active after ``t`` renewals; dims (chain, draw, t)."""
        import xarray as xr

        d = {k: v[..., None] for k, v in self.draws().items()}
        t_arr = np.atleast_1d(np.asarray(t, dtype=float))
        return xr.DataArray(self._math.survival(*self._args(d), t_arr),
                            dims=("chain", "draw", "t"), coords={"t": t_arr}, name="survival")  # fmt: skip

    def retention_rate(self, t):
        """Draws of the cohort retention rate ``S(t) / S(t - 1)`` for ``t >= 1``; dims (chain, draw, t)."""
        import xarray as xr

        d = {k: v[..., None] for k, v in self.draws().items()}
        t_arr = np.atleast_1d(np.asarray(t, dtype=float))
        return xr.DataArray(self._math.retention_rate(*self._args(d), t_arr),
                            dims=("chain", "draw", "t"), coords={"t": t_arr},
                            name="retention_rate")  # fmt: skip

    # ------------------------------------------------------------------ per subscriber
    def p_renew(self, k: int = 1, table: pd.DataFrame | None = None):
        """Draws of P(renews at each of the next ``k`` due dates | active), dims (chain, draw, customer_id).

        Parameters
        ----------
        k : int
            Renewals ahead (1: the next due date).
        table : DataFrame, optional
            Active subscribers (default: the training data, which must then hold only
            active ones).
        """
        self._active_only(table)
        return self._per_subscriber(self._math.conditional_survival, table, "p_renew", k=k)

    def churn_hazard(self, table: pd.DataFrame | None = None):
        """Draws of P(cancels at the next due date | active): the churn-risk score."""
        self._active_only(table)
        return self._per_subscriber(self._math.hazard, table, "churn_hazard")

    def derl(self, discount: float, table: pd.DataFrame | None = None):
        """Draws of the discounted expected residual lifetime (renewal payments; FH2010).

        ``discount`` is the rate per period of the data's grid (e.g. 0.1 a year on a yearly
        grid); a renewal due at the next date is counted undiscounted.  Residual value =
        price per period x margin x DERL.
        """
        self._active_only(table)
        return self._per_subscriber(self._math.derl, table, "derl", discount=discount)

    def expected_renewals(self, horizon: int, table: pd.DataFrame | None = None):
        """Draws of the expected number of renewals among the next ``horizon`` due dates."""
        self._active_only(table)
        return self._per_subscriber(self._math.expected_residual_lifetime, table,
                                    "expected_renewals", horizon=horizon)  # fmt: skip

    def residual_value(self, discount: float, table: pd.DataFrame, margin: float = 1.0,
                       price_col: str = "price"):  # fmt: skip
        """Draws of price x margin x DERL per active subscriber (currency of ``price_col``).

        ``table[price_col]`` is the price per period (e.g. from
        :func:`clvbayes.data.subscriptions.summarize_subscriptions` with ``price_col``);
        ``margin`` the share of it kept (1 = revenue).  Dims (chain, draw, customer_id).
        """
        from clvbayes.errors import DataError

        if price_col not in table.columns:
            raise DataError(
                f"residual_value needs the price per period in column {price_col!r}; columns "
                f"present: {list(map(str, table.columns))}. Pass price_col=... or add it."
            )
        price = np.asarray(table[price_col], dtype=float)
        return (self.derl(discount, table) * (price * float(margin))).rename("residual_value")

    def expected_active(self, k: int, table: pd.DataFrame | None = None):
        """Draws of the expected number of these active subscribers still active after ``k`` renewals.

        The credible interval of the expectation; :meth:`simulate_active` gives the
        predictive distribution of the count.  Dims (chain, draw).
        """
        return self.p_renew(k, table).sum("customer_id").rename("expected_active")

    def simulate_active(self, k: int, seed: int | None = None, table: pd.DataFrame | None = None):
        """Predictive draws of how many of these active subscribers renew ``k`` more times.

        One simulated future per posterior draw (exact churn-period draws), so the spread is
        parameter uncertainty plus the binomial-like outcome noise.  Dims (chain, draw).
        """
        data = self._resolve_data(table)
        periods = data.expand(data["periods"].astype(float))
        churn = self.sample_churn_period(seed=seed, table=table)
        return (churn > periods + k).sum("customer_id").rename("simulate_active")

    def sample_churn_period(self, seed: int | None = None, table: pd.DataFrame | None = None):
        """One posterior-predictive churn period per draw and active subscriber (float, > periods).

        Exact: for each posterior draw, ``theta`` from its posterior given survival, then the
        period of cancellation.  Dims (chain, draw, customer_id); period counted from the
        subscriber's start (``periods + 1``: cancels at the next due date).
        """
        import xarray as xr

        self._active_only(table)
        data = self._resolve_data(table)
        rng = np.random.default_rng(seed)
        d = self.draws()
        shape = next(iter(d.values())).shape
        idx = data.inverse
        t = data["periods"].astype(float)[idx]
        params = [np.broadcast_to(v[..., None], (*shape, idx.size)) for v in self._args(d)]
        draws = self._math.sample_churn_period(rng, *params, t)
        return xr.DataArray(draws, dims=("chain", "draw", "customer_id"),
                            coords={"customer_id": data.customer_ids.to_numpy()},
                            name="churn_period")  # fmt: skip


class ShiftedBetaGeometricModel(RetentionModel):
    """Bayesian sBG retention model.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace any of the default priors (module docstring).  Valid names: alpha, beta.

    Examples
    --------
    >>> from clvbayes.data.subscriptions import subscribers_from_survival
    >>> subs = subscribers_from_survival(table, period_col="year", columns=["regular"],
    ...                                  cohort_size=1000, calibration_periods=7)  # doctest: +SKIP
    >>> model = ShiftedBetaGeometricModel().fit(subs, method="mle")  # doctest: +SKIP
    >>> model.survival(range(8, 13)).mean(("chain", "draw"))  # doctest: +SKIP
    """

    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta")
    display_name: ClassVar[str] = "sBG"
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
    _exclusion_reason: ClassVar[str] = "no subscriber carries weight"
    _math = sbg

    def _loglik(self, params, data, xp=NUMPY):
        return sbg.loglik(params["alpha"], params["beta"], data["periods"], data["churned"], xp=xp)

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        w = data.counts
        lost = float(np.sum(w * data["churned"]))
        exposure = float(np.sum(w * (data["periods"] + data["churned"])))
        p = min(max(lost / max(exposure, 1.0), 1e-3), 0.999)  # pooled churn rate per period
        return {"alpha": p, "beta": 1.0 - p}
