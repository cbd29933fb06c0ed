"""A tiny array namespace so each log-likelihood is written once.

The closed-form log-likelihoods in :mod:`clvbayes.math` are written against the
handful of functions below instead of calling NumPy or PyTensor directly.  The
NumPy namespace is used for MAP fitting, pointwise log-likelihoods and tests;
the PyTensor namespace (built lazily, so this package imports without PyMC) is
used inside the PyMC models for NUTS.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import special

NUMPY = SimpleNamespace(
    name="numpy",
    gammaln=special.gammaln,
    log=np.log,
    log1p=np.log1p,
    exp=np.exp,
    expm1=np.expm1,
    logaddexp=np.logaddexp,
    where=np.where,
    eq=np.equal,
    maximum=np.maximum,
    minimum=np.minimum,
    sum=np.sum,
)


def pytensor_namespace() -> SimpleNamespace:
    """Return the same functions implemented with PyTensor (imports PyTensor)."""
    import pytensor.tensor as pt

    return SimpleNamespace(
        name="pytensor",
        gammaln=pt.gammaln,
        log=pt.log,
        log1p=pt.log1p,
        exp=pt.exp,
        expm1=pt.expm1,
        logaddexp=pt.logaddexp,
        where=pt.switch,
        eq=pt.eq,
        maximum=pt.maximum,
        minimum=pt.minimum,
        sum=pt.sum,
    )


def betaln(xp: SimpleNamespace, a, b):
    """log B(a, b) written with ``xp.gammaln`` (works for both namespaces)."""
    return xp.gammaln(a) + xp.gammaln(b) - xp.gammaln(a + b)
