"""Every exception and warning class clvbayes raises, in one place.

Errors
------
* :class:`DataError` -- input data clvbayes cannot use as given (the message names the
  column, the rows, the first customer ids and the fix).
* :class:`ModelError` -- a model cannot be fitted or used as asked (a parameter outside
  a formula's domain, a degenerate fit, a saved-model file that fails verification).

Warnings
--------
* :class:`DataWarning` -- suspicious but legal input (duplicated rows, outlying dates, ...);
  ``clvbayes run`` prints it, records it in ``model_summary`` and, with ``--strict``,
  turns it into an error.
* :class:`FitWarning` -- a fit that ran but should not be trusted as is (parameters at the
  boundary of their support, too little information); :class:`ConvergenceWarning`, its
  subclass, when sampler or optimiser diagnostics fail.
* :class:`ExcludedCustomersWarning` -- customers a model cannot learn from (e.g. no repeat
  purchase, for the spend model); they still get predictions.

This module imports nothing but the standard library, so every layer can use it.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "ExcludedCustomersWarning",
    "FitWarning",
    "ModelError",
    "NotFittedError",
]


class DataError(ValueError):
    """Input data that clvbayes cannot use as given; the message says how to fix it."""


class ModelError(ValueError):
    """A model cannot be fitted or used as asked; the message says why and what to do."""


class DataWarning(UserWarning):
    """Suspicious but legal input; printed, recorded in the report, an error with --strict."""


class FitWarning(UserWarning):
    """A fit that completed but sits at the edge of what the data can tell."""


class ConvergenceWarning(FitWarning):
    """Sampler or optimiser diagnostics (divergences, r_hat, ESS) say the posterior is unreliable."""


class ExcludedCustomersWarning(UserWarning):
    """Some customers carry no information for a model and are left out of its fit."""


class NotFittedError(RuntimeError):
    """A prediction was requested from a model that has not been fitted."""
