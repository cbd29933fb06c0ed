"""Beta-discrete-Weibull (BdW) retention model (Fader, Hardie, Liu, Davin & Steenburgh 2018).

Assumptions: as the sBG (:mod:`clvbayes.models.sbg`), ``theta ~ Beta(alpha, beta)`` across
subscribers, but the individual survival is discrete Weibull, ``S(t | theta) = (1 -
theta)^(t^c)``: with ``c > 1`` a subscriber grows more likely to cancel with tenure, with
``c < 1`` less (duration dependence, on top of the sorting effect of heterogeneity).
``c = 1`` is the sBG.  Data columns: ``periods`` and ``churned`` as the sBG.  ``c`` is tied to
the period grid of the data.

The math is in :mod:`clvbayes.math.bdw`.

Default priors.  ``alpha`` and ``beta`` as the sBG.  ``c`` gets a LogNormal(0, 1) centred on
the sBG (``c = 1``; 95 % of its mass in 0.14..7.1), which keeps it away from 0 and from very
large values that no cohort of realistic length can tell apart.

======  ============================  =====================================
name    default                       note
======  ============================  =====================================
alpha   HalfCauchy(beta=1)            churn-propensity Beta, first shape
beta    HalfCauchy(beta=1)            churn-propensity Beta, second shape
c       LogNormal(mu=0, sigma=1)      Weibull shape (duration dependence)
======  ============================  =====================================
"""

from __future__ import annotations

from typing import Any, ClassVar

from clvbayes.data import CompressedRFM
from clvbayes.math import bdw
from clvbayes.math._xp import NUMPY
from clvbayes.models.priors import Prior
from clvbayes.models.sbg import RetentionModel, ShiftedBetaGeometricModel

DEFAULT_PRIORS: dict[str, Prior] = {
    "alpha": Prior("HalfCauchy", beta=1),
    "beta": Prior("HalfCauchy", beta=1),
    "c": Prior("LogNormal", mu=0, sigma=1),
}


class BetaDiscreteWeibullModel(RetentionModel):
    """Bayesian BdW retention model.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace any of the default priors (module docstring).  Valid names: alpha, beta, c.
    """

    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "c")
    display_name: ClassVar[str] = "BdW"
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
    _exclusion_reason: ClassVar[str] = "no subscriber carries weight"
    #: The posterior of (alpha, beta, c) is a curved ridge (a larger c trades against a
    #: smaller alpha/beta): at PyMC's default target_accept 0.8, NUTS (4 x 1000 after 1000
    #: tuning steps) diverged 3 times on FH2007 Regular (calibration years 1-7) and once on
    #: High End; at 0.95 none diverged on either, seeds 0, 1 and 2 (r_hat <= 1.006, bulk
    #: ESS >= 1,100), in about the same wall time.
    nuts_defaults: ClassVar[dict[str, Any]] = {"target_accept": 0.95}
    _math = bdw

    def _loglik(self, params, data, xp=NUMPY):
        return bdw.loglik(params["alpha"], params["beta"], params["c"], data["periods"],
                          data["churned"], xp=xp)  # fmt: skip

    def _information_problem(self, data: CompressedRFM) -> str | None:
        problem = super()._information_problem(data)
        if problem is None and data["periods"].max() < 1:
            return "every subscriber is in her first period, so duration dependence (c) is not identified"
        return problem

    def _initial_point(self, data: CompressedRFM) -> dict[str, float]:
        return {**ShiftedBetaGeometricModel._initial_point(self, data), "c": 1.0}
