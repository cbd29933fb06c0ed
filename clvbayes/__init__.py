"""clvbayes: Bayesian customer-lifetime-value models with honest uncertainty.

Layout (imports flow one way, top to bottom):

- ``clvbayes.data``      transactions -> per-customer RFM summary, validation, compression (no PyMC)
- ``clvbayes.datasets``  bundled CDNOW data
- ``clvbayes.math``      closed forms per model: likelihood, predictions, simulation (no PyMC)
- ``clvbayes.models``    PyMC wrappers, one per model; shared fitting machinery in ``models.base``
- ``clvbayes.predict``   posterior draws -> per-customer and per-segment tables, CLV, intervals
- ``clvbayes.segments``, ``clvbayes.report``, ``clvbayes.plotting``, ``clvbayes.cli``
"""

__version__ = "0.1.0"

_EXPORTS = {
    "BetaGeoModel": "clvbayes.models",
    "GammaGammaModel": "clvbayes.models",
    "ModifiedBetaGeoModel": "clvbayes.models",
    "ParetoNBDModel": "clvbayes.models",
    "BetaGeoBetaBinomModel": "clvbayes.models",
    "ShiftedBetaGeometricModel": "clvbayes.models",
    "BetaDiscreteWeibullModel": "clvbayes.models",
    "Prior": "clvbayes.models",
    "score_customers": "clvbayes.predict",
    "summarize_draws": "clvbayes.predict",
    "summarize_transactions": "clvbayes.data",
    "calibration_holdout_split": "clvbayes.data",
    "DataError": "clvbayes.errors",
    "ModelError": "clvbayes.errors",
    "DataWarning": "clvbayes.errors",
    "FitWarning": "clvbayes.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Lazy top-level shortcuts (``clvbayes.BetaGeoModel``) that keep ``import clvbayes`` light."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clvbayes' has no attribute {name!r}")
