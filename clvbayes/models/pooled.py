"""Retention models with partial pooling across cohorts (or plans): sBG and BdW.

Group ``g`` (a cohort or a plan) has its own retention model -- the sBG of
:mod:`clvbayes.models.sbg` with ``(alpha_g, beta_g)``, or the BdW of :mod:`clvbayes.models.bdw`
with ``(alpha_g, beta_g, c_g)`` -- and each of those parameters is drawn from a population
shared by the groups::

    theta_g ~ Gamma(shape = theta_shape, rate = theta_shape / theta_mean)

so ``theta_mean`` is the population mean of parameter ``theta`` and ``theta_shape`` how alike
the groups are (coefficient of variation ``1 / sqrt(theta_shape)``: a large shape pulls every
group to the mean, a small one lets each speak for itself).  A young cohort, with few renewals
observed, borrows strength from the older ones; a large old cohort is barely moved.

Data: the base model's subscribers table plus the grouping column ``pooled_by`` (default
``"cohort"``); the likelihood is the base model's on one term per (group, periods, churned)
cell with a count, with its exact gradient.  Every fit method works (MAP and Laplace on the
joint density of the hyperparameters and the group parameters, NUTS on the same model in
PyMC).

Hyperpriors: ``theta_mean`` gets the base model's default prior on ``theta`` and
``theta_shape`` Gamma(alpha=2, beta=0.2) (mean 10: moderate pooling, a long right tail towards
complete pooling); the BdW's ``c`` is held closer: ``c_mean`` LogNormal(0, 0.6) (99 % in
0.21..4.7, centred on the sBG) and ``c_shape`` Gamma(4, 0.4) (groups alike unless the data
say otherwise), since weak data otherwise let ``c`` run off with ``alpha, beta -> 0``.
MAP is the mode in log parameters (:meth:`PooledRetentionModel.fit` says why) and a
degenerate fit is refused with a :class:`~clvbayes.errors.ModelError`.  Names: ``alpha_mean``, ``alpha_shape``, ``beta_mean``, ``beta_shape`` and,
for the BdW, ``c_mean``, ``c_shape``; the group parameters are ``alpha_0``, ``alpha_1``, ...
in the sorted order of the groups (``groups_``).

:meth:`PooledRetentionModel.group_model` returns the base model holding one group's pooled
draws, for :func:`clvbayes.predict.score_subscribers` and the base model's methods.
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
from clvbayes.math._xp import NUMPY
from clvbayes.models.bdw import BetaDiscreteWeibullModel
from clvbayes.models.priors import Prior
from clvbayes.models.sbg import RetentionModel, ShiftedBetaGeometricModel

SHAPE_PRIOR = Prior("Gamma", alpha=2, beta=0.2)
#: The BdW's ``c`` across groups: its population mean near 1 (the sBG), 99 % of the mass in
#: 0.21..4.7 (``c`` in 0.2..5 covers the duration dependence seen in practice), and groups
#: alike unless the data say otherwise (shape mean 10, little mass below 3).
C_MEAN_PRIOR = Prior("LogNormal", mu=0, sigma=0.6)
C_SHAPE_PRIOR = Prior("Gamma", alpha=4, beta=0.4)
#: A fitted group's ``c`` outside this range, or ``alpha``/``beta`` below ``SHAPE_FLOOR``, is a
#: degenerate fit (every subscriber's churn probability near 0 or 1): refused.
C_RANGE = (0.05, 20.0)
SHAPE_FLOOR = 1e-3


def _hyper(base: type) -> tuple[str, ...]:
    return tuple(f"{p}_{kind}" for p in base.param_names for kind in ("mean", "shape"))


class PooledRetentionModel(RetentionModel):
    """A retention model (``_base``) with a hierarchical prior across the groups of ``pooled_by``.

    Parameters
    ----------
    pooled_by : str
        Column of the subscribers table naming each subscriber's cohort (or plan).
    priors : dict of str to Prior, optional
        Replace hyperpriors (names ``<parameter>_mean`` and ``<parameter>_shape``).

    Examples
    --------
    >>> model = PooledShiftedBetaGeometricModel("cohort").fit(subs, method="laplace")  # doctest: +SKIP
    >>> model.group_model("2024-01").p_renew(1, active)  # doctest: +SKIP
    """

    _base: ClassVar[type] = ShiftedBetaGeometricModel
    history_columns: ClassVar[tuple[str, ...]] = ("group", "periods", "churned")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        base = cls._base
        cls.param_names = _hyper(base)  # + <parameter>_<i> per group, once fitted
        cls.default_priors = {
            f"{p}_{kind}": base.default_priors[p] if kind == "mean" else SHAPE_PRIOR
            for p in base.param_names for kind in ("mean", "shape")
        }  # fmt: skip
        if "c" in base.param_names:
            cls.default_priors.update(c_mean=C_MEAN_PRIOR, c_shape=C_SHAPE_PRIOR)
        cls._math = base._math
        cls.nuts_defaults = dict(base.nuts_defaults)

    def __init__(self, pooled_by: str = "cohort", priors: dict[str, Prior] | None = None) -> None:
        super().__init__(priors)
        self.pooled_by = pooled_by
        self.groups_: list[str] = []

    def fit(self, rfm: pd.DataFrame, method: str = "nuts", **kwargs: Any):
        """Fit on ``rfm`` (see :meth:`CLVModel.fit`); the groups are those of ``rfm``.

        ``method="map"`` is the mode of the posterior density of the *log* parameters (the
        centre of the Laplace approximation), not of the parameters themselves: the joint
        mode of a hierarchical model on the parameter scale is degenerate (the density of
        the group parameters grows as the population mean and the groups shrink together
        towards 0; on weak data the BdW then runs to ``alpha, beta -> 0``, ``c -> 50`` and
        beyond), while in log parameters the Jacobian removes that pull.

        Raises
        ------
        ModelError
            When the fit is degenerate all the same (a group's ``c`` outside
            :data:`C_RANGE` or ``alpha``/``beta`` below :data:`SHAPE_FLOOR`), with the fix.
        """
        self.groups_ = []
        self._log_scale_mode = method == "map"
        try:
            super().fit(rfm, method, **kwargs)
        finally:
            self._log_scale_mode = False
        self._refuse_degenerate(method)
        return self

    def _refuse_degenerate(self, method: str) -> None:
        from clvbayes.errors import ModelError

        d = self.draws()
        bad = []
        for i, g in enumerate(self.groups_):
            for p in self._base.param_names:
                v = float(np.median(d[f"{p}_{i}"]))
                if (p == "c" and not C_RANGE[0] <= v <= C_RANGE[1]) or (
                    p != "c" and v < SHAPE_FLOOR
                ):
                    bad.append(f"{p} = {v:.3g} for {self.pooled_by} {g!r}")
        if bad:
            raise ModelError(
                f"{type(self).__name__} ({method}) gave a degenerate fit: {'; '.join(bad[:4])} "
                f"(c must lie in {C_RANGE[0]:g}..{C_RANGE[1]:g}, alpha and beta above "
                f"{SHAPE_FLOOR:g}): the data do not pin down every group's duration dependence. "
                "Pool the sBG instead (PooledShiftedBetaGeometricModel), fit with "
                "method='nuts', or give c_mean and c_shape more informative priors."
            )

    # ------------------------------------------------------------------ data and parameters
    def _set_groups(self, groups: list[str]) -> None:
        self.groups_ = list(groups)
        n = len(groups)
        self.param_names = _hyper(self._base) + tuple(
            f"{p}_{i}" for p in self._base.param_names for i in range(n)
        )

    def _compress(self, rfm: pd.DataFrame) -> CompressedRFM:
        if self.pooled_by not in rfm.columns:
            raise DataError(
                f"{type(self).__name__} pools by column {self.pooled_by!r}, which the "
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
        base_point = self._base()._initial_point(data)
        point = {}
        for p in self._base.param_names:
            point[f"{p}_mean"], point[f"{p}_shape"] = float(base_point[p]), 10.0
            point.update({f"{p}_{i}": float(base_point[p]) for i in range(len(self.groups_))})
        return point

    def _row_params(self, params, group, xp=NUMPY):
        """Each row's group parameters from the per-group ones (any array namespace)."""
        rows = {}
        for p in self._base.param_names:
            value = 0.0
            for i in range(len(self.groups_)):
                value = value + params[f"{p}_{i}"] * xp.where(xp.eq(group, i), 1.0, 0.0)
            rows[p] = value
        return rows

    def _loglik(self, params, data, xp=NUMPY):
        group = data["group"]
        if xp is NUMPY:
            group = np.asarray(group)
        return self._base()._loglik(self._row_params(params, group, xp), data, xp=xp)

    def _loglik_sum_function(self, data: CompressedRFM):
        weights = self._likelihood_weights(data)
        group = np.asarray(data["group"]).astype(int)
        math = self._base._math
        parts = [
            math.prepare_loglik_sum(
                data["periods"][group == i], data["churned"][group == i], weights[group == i]
            )
            for i in range(len(self.groups_))
        ]
        index = {name: j for j, name in enumerate(self.param_names)}
        slots = [[index[f"{p}_{i}"] for p in self._base.param_names] for i in range(len(parts))]

        def total_and_grad(*values):
            grad = np.zeros(len(values))
            total = 0.0
            for part, slot in zip(parts, slots, strict=True):
                value, g = math.loglik_sum_and_grad(*(values[j] for j in slot), part)
                total += float(value)
                grad[slot] = g
            return total, grad

        return total_and_grad

    def _log_prior(self, params: dict[str, float]) -> float:
        out = float(sum(float(self.priors[k].logpdf(params[k])) for k in _hyper(self._base)))
        if getattr(self, "_log_scale_mode", False):  # MAP: the density of the log parameters
            out += float(sum(np.log(params[k]) for k in self.param_names))
        for prefix in self._base.param_names:
            k = params[f"{prefix}_shape"]
            rate = k / params[f"{prefix}_mean"]
            x = np.array([params[f"{prefix}_{i}"] for i in range(len(self.groups_))])
            out += float(
                np.sum(k * np.log(rate) - special.gammaln(k) + (k - 1) * np.log(x) - rate * x)
            )
        return out

    def _pymc_params(self) -> dict[str, Any]:
        import pymc as pm

        rvs = {k: self.priors[k].to_pymc(k) for k in _hyper(self._base)}
        for prefix in self._base.param_names:
            k, m = rvs[f"{prefix}_shape"], rvs[f"{prefix}_mean"]
            for i in range(len(self.groups_)):
                rvs[f"{prefix}_{i}"] = pm.Gamma(f"{prefix}_{i}", alpha=k, beta=k / m)
        return rvs

    # ------------------------------------------------------------------ per group
    def group_model(self, group: str) -> RetentionModel:
        """The base model holding one group's pooled posterior draws (predictions, plots)."""
        from clvbayes.compat import posterior_from_arrays

        if group not in self.groups_:
            raise DataError(f"Unknown group {group!r}; fitted groups: {self.groups_[:10]}.")
        i = self.groups_.index(group)
        d = self.draws()
        model = self._base()
        model.posterior_ = posterior_from_arrays({p: d[f"{p}_{i}"] for p in self._base.param_names})
        model.time_unit_ = getattr(self, "time_unit_", None)
        return model

    def group_summary(self, prob: float = 0.9) -> pd.DataFrame:
        """Pooled posterior of each group's parameters and mean churn propensity alpha/(alpha+beta)."""
        from clvbayes.predict.summary import draw_stats

        d = self.draws()
        rows = {}
        for i, g in enumerate(self.groups_):
            values = {p: d[f"{p}_{i}"].ravel() for p in self._base.param_names}
            values["mean_churn"] = values["alpha"] / (values["alpha"] + values["beta"])
            row = {}
            for name, v in values.items():
                st = draw_stats(v, prob)
                row.update({f"{name}_mean": float(st["mean"]), f"{name}_lower": float(st["lower"]),
                            f"{name}_upper": float(st["upper"])})  # fmt: skip
            rows[g] = row
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis(self.pooled_by)


class PooledShiftedBetaGeometricModel(PooledRetentionModel):
    """sBG with partial pooling across the groups of ``pooled_by`` (see the module docstring)."""

    _base: ClassVar[type] = ShiftedBetaGeometricModel
    display_name: ClassVar[str] = "pooled sBG"


class PooledBetaDiscreteWeibullModel(PooledRetentionModel):
    """BdW with partial pooling across the groups of ``pooled_by`` (see the module docstring)."""

    _base: ClassVar[type] = BetaDiscreteWeibullModel
    display_name: ClassVar[str] = "pooled BdW"
