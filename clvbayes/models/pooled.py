"""sBG with partial pooling across cohorts (or plans): a hierarchical prior on each cohort's shapes.

Cohort ``c`` has its own churn-probability Beta, ``theta ~ Beta(alpha_c, beta_c)`` (the sBG of
:mod:`clvbayes.models.sbg` within the cohort), and the cohorts' shapes share a population::

    alpha_c ~ Gamma(shape = alpha_shape, rate = alpha_shape / alpha_mean)
    beta_c  ~ Gamma(shape = beta_shape,  rate = beta_shape / beta_mean)

so ``alpha_mean`` is the population mean of ``alpha_c`` and ``alpha_shape`` how alike the
cohorts are (coefficient of variation ``1 / sqrt(alpha_shape)``; a large shape pulls every
cohort to the mean, a small one lets each speak for itself).  A young cohort, with few
renewals observed, borrows strength from the older ones; a large old cohort is barely moved.

Data: the subscribers table of the sBG plus the grouping column ``pooled_by`` (default
``"cohort"``); the likelihood is the sBG's on one term per (cohort, periods, churned) cell
with a count.  Every fit method works (MAP and Laplace on the joint density of the
hyperparameters and the cohort shapes, NUTS on the same model in PyMC).

Priors (hyperparameters; names ``alpha_mean``, ``alpha_shape``, ``beta_mean``, ``beta_shape``):

===========  ============================  ==========================================
name         default                       note
===========  ============================  ==========================================
alpha_mean   HalfCauchy(beta=1)            as the sBG's prior on alpha
alpha_shape  Gamma(alpha=2, beta=0.2)      mean 10: moderate pooling, long right tail
beta_mean    HalfCauchy(beta=1)            as the sBG's prior on beta
beta_shape   Gamma(alpha=2, beta=0.2)
===========  ============================  ==========================================

:meth:`cohort_model` returns a :class:`~clvbayes.models.sbg.ShiftedBetaGeometricModel` with one
cohort's pooled draws, for :func:`clvbayes.predict.score_subscribers` and the sBG's methods.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import special

from clvbayes.data import CompressedRFM, compress
from clvbayes.data.subscriptions import validate_subscribers
from clvbayes.errors import DataError
from clvbayes.math import sbg
from clvbayes.math._xp import NUMPY
from clvbayes.models.priors import Prior
from clvbayes.models.sbg import RetentionModel, ShiftedBetaGeometricModel

HYPER = ("alpha_mean", "alpha_shape", "beta_mean", "beta_shape")
DEFAULT_PRIORS: dict[str, Prior] = {
    "alpha_mean": Prior("HalfCauchy", beta=1),
    "alpha_shape": Prior("Gamma", alpha=2, beta=0.2),
    "beta_mean": Prior("HalfCauchy", beta=1),
    "beta_shape": Prior("Gamma", alpha=2, beta=0.2),
}


class PooledShiftedBetaGeometricModel(RetentionModel):
    """Bayesian sBG with a hierarchical prior across the groups of ``pooled_by``.

    Parameters
    ----------
    pooled_by : str
        Column of the subscribers table naming each subscriber's cohort (or plan).
    priors : dict of str to Prior, optional
        Replace hyperpriors; valid names: alpha_mean, alpha_shape, beta_mean, beta_shape.

    Examples
    --------
    >>> model = PooledShiftedBetaGeometricModel("cohort").fit(subs, method="laplace")  # doctest: +SKIP
    >>> model.cohort_model("2024-01").p_renew(1, active)  # doctest: +SKIP
    """

    display_name: ClassVar[str] = "pooled sBG"
    param_names: ClassVar[tuple[str, ...]] = HYPER  # + alpha_<i>, beta_<i> once fitted
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
    history_columns: ClassVar[tuple[str, ...]] = ("group", "periods", "churned")
    _math = sbg

    def __init__(self, pooled_by: str = "cohort", priors: dict[str, Prior] | None = None) -> None:
        super().__init__(priors)
        self.pooled_by = pooled_by
        self.groups_: list[str] = []

    def fit(self, rfm: pd.DataFrame, method: str = "nuts", **kwargs: Any):
        """Fit on ``rfm`` (see :meth:`CLVModel.fit`); the groups are those of ``rfm``."""
        self.groups_ = []
        return super().fit(rfm, method, **kwargs)

    # ------------------------------------------------------------------ data and parameters
    def _set_groups(self, groups: list[str]) -> None:
        self.groups_ = list(groups)
        n = len(groups)
        self.param_names = (
            HYPER + tuple(f"alpha_{i}" for i in range(n)) + tuple(f"beta_{i}" for i in range(n))
        )

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        if self.pooled_by not in rfm.columns:
            raise DataError(
                f"PooledShiftedBetaGeometricModel pools by column {self.pooled_by!r}, which the "
                f"subscribers table lacks (columns: {list(map(str, rfm.columns))}); pass "
                "pooled_by=... naming the cohort or plan column."
            )
        checked = validate_subscribers(rfm)
        labels = checked[self.pooled_by].astype(str)
        if not self.groups_:  # fitting: the groups of the training data, in sorted order
            self._set_groups(sorted(labels.unique()))
        unknown = sorted(set(labels) - set(self.groups_))
        if unknown:
            raise DataError(
                f"Column {self.pooled_by!r} has groups the model was not fitted on: {unknown[:5]}; "
                f"fitted groups: {self.groups_[:10]}. Score them with a model fitted on them."
            )
        table = checked.assign(group=labels.map({g: i for i, g in enumerate(self.groups_)}))
        return compress(table, columns=self.history_columns)

    def _restore(self, attrs: dict[str, Any]) -> None:
        self.pooled_by = str(attrs.get("pooled_by", "cohort"))
        self._set_groups(json.loads(attrs.get("groups", "[]")))

    def _attrs(self) -> dict[str, Any]:
        return {
            **super()._attrs(), "pooled_by": self.pooled_by,
            "groups": json.dumps(self.groups_),
        }  # fmt: skip

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        point = {"alpha_mean": 1.0, "alpha_shape": 5.0, "beta_mean": 1.0, "beta_shape": 5.0}
        point.update(dict.fromkeys(self.param_names[len(HYPER) :], 1.0))
        return point

    def _shapes(self, params, group, xp=NUMPY):
        """Each row's cohort shapes from the per-cohort parameters (any array namespace)."""
        alpha = beta = 0.0
        for i in range(len(self.groups_)):
            member = xp.where(xp.eq(group, i), 1.0, 0.0)
            alpha = alpha + params[f"alpha_{i}"] * member
            beta = beta + params[f"beta_{i}"] * member
        return alpha, beta

    def _loglik(self, params, data, xp=NUMPY):
        group = data["group"]
        if xp is NUMPY:
            group = np.asarray(group)
        alpha, beta = self._shapes(params, group, xp)
        return sbg.loglik(alpha, beta, data["periods"], data["churned"], xp=xp)

    def _loglik_sum_function(self, data: CompressedRFM):
        weights = self._likelihood_weights(data)
        group = np.asarray(data["group"]).astype(int)
        parts = [
            sbg.prepare_loglik_sum(
                data["periods"][group == i], data["churned"][group == i], weights[group == i]
            )
            for i in range(len(self.groups_))
        ]
        n_groups, n_hyper = len(self.groups_), len(HYPER)

        def total_and_grad(*values):
            grad = np.zeros(len(values))
            total = 0.0
            for i, part in enumerate(parts):
                a, b = values[n_hyper + i], values[n_hyper + n_groups + i]
                value, g = sbg.loglik_sum_and_grad(a, b, part)
                total += float(value)
                grad[n_hyper + i], grad[n_hyper + n_groups + i] = g
            return total, grad

        return total_and_grad

    def _log_prior(self, params: dict[str, float]) -> float:
        out = float(sum(float(self.priors[k].logpdf(params[k])) for k in HYPER))
        for shape_name, mean_name, prefix in (
            ("alpha_shape", "alpha_mean", "alpha"), ("beta_shape", "beta_mean", "beta"),
        ):  # fmt: skip
            k = params[shape_name]
            rate = k / params[mean_name]
            x = np.array([params[f"{prefix}_{i}"] for i in range(len(self.groups_))])
            out += float(
                np.sum(k * np.log(rate) - special.gammaln(k) + (k - 1) * np.log(x) - rate * x)
            )
        return out

    def _pymc_params(self) -> dict[str, Any]:
        import pymc as pm

        rvs = {k: self.priors[k].to_pymc(k) for k in HYPER}
        for prefix in ("alpha", "beta"):
            k, m = rvs[f"{prefix}_shape"], rvs[f"{prefix}_mean"]
            for i in range(len(self.groups_)):
                rvs[f"{prefix}_{i}"] = pm.Gamma(f"{prefix}_{i}", alpha=k, beta=k / m)
        return rvs

    # ------------------------------------------------------------------ per cohort
    def cohort_model(self, group: str) -> ShiftedBetaGeometricModel:
        """An sBG holding one group's pooled posterior draws (for predictions and plots)."""
        from clvbayes.compat import posterior_from_arrays

        if group not in self.groups_:
            raise DataError(f"Unknown group {group!r}; fitted groups: {self.groups_[:10]}.")
        i = self.groups_.index(group)
        d = self.draws()
        model = ShiftedBetaGeometricModel()
        model.posterior_ = posterior_from_arrays({"alpha": d[f"alpha_{i}"], "beta": d[f"beta_{i}"]})
        model.time_unit_ = getattr(self, "time_unit_", None)
        return model

    def cohort_summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Pooled posterior of each group's shapes and mean churn probability alpha/(alpha+beta)."""
        from clvbayes.predict.summary import draw_stats

        d = self.draws()
        rows = {}
        for i, g in enumerate(self.groups_):
            a, b = d[f"alpha_{i}"].ravel(), d[f"beta_{i}"].ravel()
            row = {}
            for name, v in (("alpha", a), ("beta", b), ("mean_churn", a / (a + b))):
                st = draw_stats(v, prob)
                row.update({f"{name}_mean": float(st["mean"]), f"{name}_lower": float(st["lower"]),
                            f"{name}_upper": float(st["upper"])})  # fmt: skip
            rows[g] = row
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis(self.pooled_by)
