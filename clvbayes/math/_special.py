"""Special functions shared by the model math modules, accurate where SciPy's lose digits."""

from __future__ import annotations

import numba
import numpy as np
from scipy import special

_STIRLING = (1.0 / 12, -1.0 / 360, 1.0 / 1260, -1.0 / 1680, 1.0 / 1188)


def _lgamma_correction(x):
    """``log Gamma(x) - [(x - 1/2) log x - x + log(2 pi) / 2]`` for ``x >= 20`` (Stirling)."""
    x2 = 1.0 / (x * x)
    acc = np.zeros_like(x)
    for c in reversed(_STIRLING):
        acc = acc * x2 + c
    return acc / x


def betaln_accurate(a, b):
    """``log B(a, b)`` to ~1e-15 absolute, also when one argument is large.

    :func:`scipy.special.betaln` loses ~1e-11 to cancellation between ``log Gamma(b)`` and
    ``log Gamma(a + b)`` for small ``a`` and ``b ~ 1e4``; here that difference is taken from
    Stirling's series, ``-(b - 1/2) log1p(a / b) - a log(a + b) + a + corr(b) - corr(a + b)``.
    """
    small, big = np.minimum(a, b), np.maximum(a, b)
    safe = np.maximum(big, 20.0)
    diff = (
        -(safe - 0.5) * np.log1p(small / safe)
        - small * np.log(safe + small)
        + small
        + _lgamma_correction(safe)
        - _lgamma_correction(safe + small)
    )
    return np.where(big >= 20.0, special.gammaln(small) + diff, special.betaln(a, b))


@numba.njit(nogil=True, cache=True, error_model="numpy")
def digamma_scalar(x: float) -> float:  # pragma: no cover - compiled
    """psi(x) for x > 0: the recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10, then the
    asymptotic series to x^-12 (truncation error < 3e-14); inf/NaN propagate, -inf and
    x <= 0 give NaN or infinities (no loop without end)."""
    if not x > -1e6:  # -inf, NaN, or so far below 0 that the recurrence would take ages
        return np.nan
    acc = 0.0
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    z = 1.0 / (x * x)
    series = z * (
        1 / 12 - z * (1 / 120 - z * (1 / 252 - z * (1 / 240 - z * (1 / 132 - z * 691 / 32760))))
    )
    return acc + np.log(x) - 0.5 / x - series
