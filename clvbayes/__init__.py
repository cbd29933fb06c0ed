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
