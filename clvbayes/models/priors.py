"""Prior distributions that work both in PyMC (for NUTS) and in SciPy (for MAP).

A :class:`Prior` names a PyMC distribution and its parameters, e.g.
``Prior("HalfNormal", sigma=10)``.  The same object builds the PyMC random
variable inside a model and evaluates its log density with SciPy, so a MAP fit
needs no PyTensor compilation.  Only distributions on the positive half-line are
offered because every parameter of the CLV models is positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

_LOG_2 = np.log(2.0)
_LOG_2PI = np.log(2.0 * np.pi)


def _positive(x: np.ndarray, logp, at_zero: float | None = None) -> np.ndarray:
    """``logp`` on ``[0, inf)``; ``-inf`` below 0 and at ``inf`` (where the formulas give
    ``inf - inf``), ``at_zero`` at 0 where the formula's limit needs saying (``0 * log 0``)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logp = logp(x) if callable(logp) else logp
        out = np.where((x >= 0) & (x < np.inf), logp, -np.inf)
        if at_zero is not None:
            out = np.where(x == 0, at_zero, out)
        return out


# name -> (required parameter names, log density on [0, inf)).  Written out in NumPy rather
# than through scipy.stats, whose per-call overhead dominated MAP fits; a test checks each
# against scipy.stats.
_SCIPY_LOGPDF = {
    "HalfFlat": ((), lambda x: _positive(x, np.zeros_like(x))),
    "HalfNormal": (
        ("sigma",),
        lambda x, sigma: _positive(
            x, _LOG_2 - 0.5 * _LOG_2PI - np.log(sigma) - 0.5 * (x / sigma) ** 2
        ),
    ),
    "HalfCauchy": (
        ("beta",),
        lambda x, beta: _positive(x, _LOG_2 - np.log(np.pi * beta) - np.log1p((x / beta) ** 2)),
    ),
    "HalfStudentT": (
        ("nu", "sigma"),
        lambda x, nu, sigma: _positive(
            x,
            _LOG_2
            + special.gammaln((nu + 1) / 2)
            - special.gammaln(nu / 2)
            - 0.5 * np.log(nu * np.pi)
            - np.log(sigma)
            - (nu + 1) / 2 * np.log1p((x / sigma) ** 2 / nu),
        ),
    ),
    "Exponential": (("lam",), lambda x, lam: _positive(x, np.log(lam) - lam * x)),
    "Gamma": (
        ("alpha", "beta"),
        lambda x, alpha, beta: _positive(
            x, lambda x: alpha * np.log(beta) - special.gammaln(alpha)
            + special.xlogy(alpha - 1, x) - beta * x
        ),
    ),
    "LogNormal": (
        ("mu", "sigma"),
        lambda x, mu, sigma: _positive(
            x, lambda x: -np.log(x) - np.log(sigma) - 0.5 * _LOG_2PI
            - (np.log(x) - mu) ** 2 / (2 * sigma**2),
            at_zero=-np.inf,  # the density tends to 0 at 0
        ),
    ),
    "Weibull": (
        ("alpha", "beta"),
        lambda x, alpha, beta: _positive(
            x, lambda x: np.log(alpha / beta) + special.xlogy(alpha - 1, x / beta)
            - (x / beta) ** alpha
        ),
    ),
}

AVAILABLE_DISTRIBUTIONS = tuple(_SCIPY_LOGPDF)

# name -> d/dx of the log density at x > 0 (scalar, plain floats: NUTS calls it at every
# leapfrog step); a test holds each to central differences of the log density above
_LOGPDF_GRAD = {
    "HalfFlat": lambda x: 0.0,
    "HalfNormal": lambda x, sigma: -x / sigma**2,
    "HalfCauchy": lambda x, beta: -2.0 * x / (beta**2 + x * x),
    "HalfStudentT": lambda x, nu, sigma: -(nu + 1.0) * x / (nu * sigma**2 + x * x),
    "Exponential": lambda x, lam: -lam,
    "Gamma": lambda x, alpha, beta: (alpha - 1.0) / x - beta,
    "LogNormal": lambda x, mu, sigma: -(1.0 + (math.log(x) - mu) / sigma**2) / x,
    "Weibull": lambda x, alpha, beta: (
        (alpha - 1.0) / x - alpha / beta * (x / beta) ** (alpha - 1.0)
    ),
}


_LOG_PI = math.log(math.pi)
_HALF_NORMAL_C = _LOG_2 - 0.5 * _LOG_2PI


def _s_half_flat(x):
    return 0.0 if x >= 0.0 else -math.inf


def _s_half_normal(x, sigma):
    return _HALF_NORMAL_C - math.log(sigma) - 0.5 * (x / sigma) ** 2 if x >= 0.0 else -math.inf


def _s_half_cauchy(x, beta):
    if x < 0.0:
        return -math.inf
    return _LOG_2 - _LOG_PI - math.log(beta) - math.log1p((x / beta) ** 2)


def _s_half_student_t(x, nu, sigma):
    if x < 0.0:
        return -math.inf
    return (
        _LOG_2
        + math.lgamma((nu + 1) / 2)
        - math.lgamma(nu / 2)
        - 0.5 * math.log(nu * math.pi)
        - math.log(sigma)
        - (nu + 1) / 2 * math.log1p((x / sigma) ** 2 / nu)
    )


def _s_exponential(x, lam):
    return math.log(lam) - lam * x if x >= 0.0 else -math.inf


def _s_gamma(x, alpha, beta):
    if x < 0.0:
        return -math.inf
    return alpha * math.log(beta) - math.lgamma(alpha) + (alpha - 1) * math.log(x) - beta * x


def _s_log_normal(x, mu, sigma):
    if x < 0.0:
        return -math.inf
    log_x = math.log(x)
    return -log_x - math.log(sigma) - 0.5 * _LOG_2PI - (log_x - mu) ** 2 / (2 * sigma**2)


def _s_weibull(x, alpha, beta):
    if x < 0.0:
        return -math.inf
    return math.log(alpha / beta) + (alpha - 1) * math.log(x / beta) - (x / beta) ** alpha


# name -> the log density at a plain float (``math``, positional parameters in the order of
# ``_SCIPY_LOGPDF``; no arrays: NUTS calls it at every leapfrog step, where NumPy's per-call
# overhead cost as much as the likelihood of 1,000 histories); a test holds each to the
# NumPy form above
_LOGPDF_SCALAR = {
    "HalfFlat": _s_half_flat,
    "HalfNormal": _s_half_normal,
    "HalfCauchy": _s_half_cauchy,
    "HalfStudentT": _s_half_student_t,
    "Exponential": _s_exponential,
    "Gamma": _s_gamma,
    "LogNormal": _s_log_normal,
    "Weibull": _s_weibull,
}


@dataclass(frozen=True)
class Prior:
    """A prior on a positive model parameter.

    Parameters
    ----------
    dist : str
        Name of a PyMC distribution on (0, inf); one of ``AVAILABLE_DISTRIBUTIONS``
        (HalfFlat, HalfNormal, HalfCauchy, HalfStudentT, Exponential, Gamma,
        LogNormal, Weibull).  Parameters use PyMC's names (e.g. ``Gamma(alpha, beta)``
        with ``beta`` a rate).
    **params : float
        The distribution's parameters.

    Examples
    --------
    >>> Prior("HalfNormal", sigma=10)
    Prior('HalfNormal', sigma=10)
    """

    dist: str
    params: dict[str, float] = field(default_factory=dict)

    def __init__(self, dist: str, **params: float) -> None:
        if dist not in _SCIPY_LOGPDF:
            raise ValueError(
                f"Unknown prior distribution {dist!r}. Available: {', '.join(AVAILABLE_DISTRIBUTIONS)}."
            )
        required = _SCIPY_LOGPDF[dist][0]
        if set(params) != set(required):
            raise ValueError(
                f"Prior {dist!r} takes parameters {list(required)}, got {sorted(params)}."
            )
        for key, value in params.items():
            if not np.isfinite(value) or (value <= 0 and key != "mu"):
                raise ValueError(f"Prior {dist!r}: parameter {key}={value!r} must be positive.")
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "params", {k: float(v) for k, v in params.items()})
        # the hot path's positional arguments (not a field: equality and repr use params)
        object.__setattr__(self, "_args", tuple(self.params[k] for k in required))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v:g}" for k, v in self.params.items())
        return f"Prior({self.dist!r}{args})"

    def logpdf(self, x: np.ndarray | float) -> np.ndarray:
        """Log density at ``x`` (NumPy/SciPy; used by MAP fitting)."""
        x = np.asarray(x, dtype=float)
        return _SCIPY_LOGPDF[self.dist][1](x, **self.params)

    def logpdf_scalar(self, x: float) -> float:
        """:meth:`logpdf` at one point, with plain floats (the NUTS hot path)."""
        if not x < math.inf:  # inf (or NaN): no density
            return -math.inf
        try:
            return _LOGPDF_SCALAR[self.dist](x, *self._args)
        except (ValueError, OverflowError, ZeroDivisionError):  # x = 0: the NumPy limits
            return float(self.logpdf(x))

    def logpdf_grad(self, x: float) -> float:
        """Derivative of the log density at a point ``x > 0`` (per unit of the parameter)."""
        return float(_LOGPDF_GRAD[self.dist](x, *self._args))

    def to_pymc(self, name: str) -> Any:
        """Create the PyMC random variable ``name`` inside the current model context."""
        import pymc as pm

        return getattr(pm, self.dist)(name, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (used when saving a model)."""
        return {"dist": self.dist, **self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prior:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        return cls(d.pop("dist"), **d)


FLAT = Prior("HalfFlat")
