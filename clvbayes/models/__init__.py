"""PyMC models, one file per model; shared fitting machinery in :mod:`clvbayes.models.base`."""

from clvbayes.models.base import (
    ELPD,
    METHODS,
    CLVModel,
    ConvergenceWarning,
    ExcludedCustomersWarning,
    NotFittedError,
    check_convergence,
    default_nuts_sampler,
)
from clvbayes.models.bdw import BetaDiscreteWeibullModel
from clvbayes.models.bgbb import BetaGeoBetaBinomModel
from clvbayes.models.bgnbd import BetaGeoModel
from clvbayes.models.gamma_gamma import GammaGammaModel
from clvbayes.models.mbgnbd import ModifiedBetaGeoModel
from clvbayes.models.mixture import MixturePurchaseModel
from clvbayes.models.pnbd import ParetoNBDModel
from clvbayes.models.pooled import PooledBetaDiscreteWeibullModel, PooledShiftedBetaGeometricModel
from clvbayes.models.priors import AVAILABLE_DISTRIBUTIONS, Prior
from clvbayes.models.protocols import PurchaseModel, SpendModel, purchase_models
from clvbayes.models.sbg import ShiftedBetaGeometricModel

__all__ = [
    "AVAILABLE_DISTRIBUTIONS",
    "ELPD",
    "METHODS",
    "BetaDiscreteWeibullModel",
    "BetaGeoBetaBinomModel",
    "BetaGeoModel",
    "CLVModel",
    "ConvergenceWarning",
    "ExcludedCustomersWarning",
    "GammaGammaModel",
    "MixturePurchaseModel",
    "ModifiedBetaGeoModel",
    "NotFittedError",
    "ParetoNBDModel",
    "PooledBetaDiscreteWeibullModel",
    "PooledShiftedBetaGeometricModel",
    "Prior",
    "PurchaseModel",
    "ShiftedBetaGeometricModel",
    "SpendModel",
    "check_convergence",
    "default_nuts_sampler",
    "purchase_models",
]
