"""MBG/NBD purchase model (Batislam, Denizel & Filiztekin 2007, IJRM 24(3), 201-209).

Assumptions (non-contractual, continuous time): while active, a customer buys as a Poisson
process with rate ``lambda ~ Gamma(r, alpha)`` (alpha a rate, in the data's time unit); right
after the first purchase and after every repeat purchase the customer drops out for good with
probability ``p ~ Beta(a, b)``.  The one difference from BG/NBD
(:mod:`clvbayes.models.bgnbd`) is the dropout chance at the first purchase, so customers without
repeat purchases may already be gone (BG/NBD counts them as certainly active).  Data columns:
``frequency`` (repeat purchases), ``recency`` (first to last purchase, 0 when
``frequency = 0``) and ``T`` (first purchase to the end of observation), in one time unit
recorded in ``rfm.attrs["time_unit"]``.

The math (likelihood, P(alive), expected purchases, simulation) is in
:mod:`clvbayes.math.mbgnbd`, with the signatures of :mod:`clvbayes.math.bgnbd`; the mapping of
data and posterior draws onto it is BG/NBD's (:class:`clvbayes.models.bgnbd.BetaGeoFamily`), so
this file holds only what differs: the docstring, the priors and the math module.

Default priors: those of BG/NBD, for parameters with the same meaning and, on CDNOW, the same
orders of magnitude (MLE r = 0.525, alpha = 6.18 weeks^-1, a = 0.891, b = 1.614).  Measured on
CDNOW (NUTS, 4 x 1000 draws): posterior means within 0.35 posterior sd of the MLE and posterior
sds within 5% of the MLE's Laplace standard errors.

======  ============================  =====================================
name    default                       note
======  ============================  =====================================
r       HalfNormal(sigma=10)          shape of the purchase-rate distribution
alpha   HalfNormal(sigma=200)         rate (1/time unit) of that distribution
a       HalfCauchy(beta=1)            dropout Beta, first shape
b       HalfCauchy(beta=1)            dropout Beta, second shape
======  ============================  =====================================
"""

from __future__ import annotations

from typing import Any, ClassVar

from clvbayes.math import mbgnbd
from clvbayes.models import bgnbd
from clvbayes.models.bgnbd import BetaGeoFamily
from clvbayes.models.priors import Prior

#: BG/NBD's defaults (table above): the parameters mean the same in both models.
DEFAULT_PRIORS: dict[str, Prior] = dict(bgnbd.DEFAULT_PRIORS)


class ModifiedBetaGeoModel(BetaGeoFamily):
    """Bayesian MBG/NBD model.

    Parameters
    ----------
    priors : dict of str to Prior, optional
        Replace any of the default priors (see the module docstring), e.g.
        ``{"r": Prior("Gamma", alpha=1, beta=1)}``.  Valid names: r, alpha, a, b.

    Examples
    --------
    >>> from clvbayes.datasets import load_cdnow_summary
    >>> model = ModifiedBetaGeoModel().fit(load_cdnow_summary(), method="map")
    >>> model.p_alive().mean(("chain", "draw"))  # doctest: +SKIP
    """

    _math: ClassVar[Any] = mbgnbd
    display_name: ClassVar[str] = "MBG/NBD"
    default_priors: ClassVar[dict[str, Prior]] = DEFAULT_PRIORS
