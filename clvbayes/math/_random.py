"""Random draws that stay finite and exact-enough at any parameter value."""

from __future__ import annotations

import numpy as np

# NumPy's Poisson sampler refuses means above ~9.2e18; far below that a Poisson count is
# normal to within its rounding (relative sd 1e-6 at 1e12).
_NORMAL_FROM = 1e12


def poisson(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """Poisson counts (int64) with the given means (>= 0, any size), normal beyond 1e12."""
    mean = np.asarray(mean, dtype=float)
    big = mean > _NORMAL_FROM
    if not big.any():
        return rng.poisson(mean)
    out = rng.poisson(np.where(big, 0.0, mean))
    m = np.minimum(mean[big], 9e18)
    out[big] = np.round(m + np.sqrt(m) * rng.standard_normal(m.size)).astype(np.int64)
    return out


def geometric(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Trials up to and including the first success (1, 2, ...), success probability ``p``.

    ``p`` is clipped to ``[1e-300, 1]``: a dropout probability that underflowed to 0 gives a
    count beyond any simulated number of purchases instead of an error.
    """
    p = np.clip(np.asarray(p, dtype=float), 1e-300, 1.0)
    # inverse CDF: ceil(log U / log(1 - p)), with log1p for small p; int64-safe
    u = rng.random(p.shape)
    trials = np.ceil(np.log(u) / np.log1p(-np.minimum(p, 1.0 - 1e-16)))
    return np.clip(np.nan_to_num(trials, nan=1.0, posinf=9e18), 1, 9e18).astype(np.int64)
