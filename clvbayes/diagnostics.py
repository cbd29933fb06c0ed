"""Convergence diagnostics of MCMC draws: rank-normalised split r_hat and effective sample size.

The definitions of Vehtari, Gelman, Simpson, Carpenter and Buerkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC", Bayesian
Analysis 16(2), 667-718 (Stan's and ArviZ's diagnostics), on plain arrays of shape
``(chains, draws)``.  clvbayes computes them itself because every NUTS fit checks them and
importing ``arviz_stats`` costs about 0.75 s of a fresh process (it pulls in ``scipy.stats``
through its LOO module), a tenth of a whole CDNOW job; ``tests/test_diagnostics.py`` holds
them to the installed ArviZ's ``rhat`` and ``ess``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

__all__ = ["ess", "rhat"]

ESS_METHODS = ("bulk", "tail", "mean")


def rhat(draws: np.ndarray) -> float:
    """Rank-normalised split r_hat (Vehtari et al. 2021, eq. 4 and section 4.1).

    The larger of the split r_hat of the rank-normalised draws (location) and of the
    rank-normalised split draws folded about their median (scale).

    Parameters
    ----------
    draws : ndarray, shape (chains, draws)
        One scalar quantity: at least 2 chains of at least 4 draws.

    Returns
    -------
    float
        ``nan`` when undefined: one chain, fewer than 4 draws, non-finite or constant draws.
    """
    x = _as_chains(draws)
    if x.shape[0] < 2 or not _valid(x):
        return math.nan
    split = _split(x)
    folded = np.abs(split - np.median(split))
    return max(_basic_rhat(_z_scale(split)), _basic_rhat(_z_scale(folded)))


def ess(draws: np.ndarray, method: str = "bulk") -> float:
    """Effective sample size (Vehtari et al. 2021, section 3.2; Geyer's initial monotone
    sequence estimator over split chains).

    Parameters
    ----------
    draws : ndarray, shape (chains, draws)
        One scalar quantity.
    method : {"bulk", "tail", "mean"}
        ``bulk``: of the rank-normalised split chains; ``tail``: the smaller of the ESS of
        the indicators of the 5 % and 95 % quantiles (pinned here: ArviZ 1.x takes them
        from its ``stats.ci_prob`` setting, 0.11 and 0.89 by default, ArviZ 0.x uses 5 % and
        95 %); ``mean``: of the raw split chains (the ESS of the posterior mean).

    Returns
    -------
    float
        Effective number of draws, at most ``chains * draws * log10(chains * draws)``;
        ``nan`` when undefined (fewer than 4 draws per chain, non-finite or constant draws).
    """
    if method not in ESS_METHODS:
        raise ValueError(f"Unknown ESS method {method!r}; valid: {list(ESS_METHODS)}.")
    x = _as_chains(draws)
    if not _valid(x):
        return math.nan
    if method == "bulk":
        return _ess(_z_scale(_split(x)))
    if method == "mean":
        return _ess(_split(x))
    values = [_ess(_split((x <= np.quantile(x, q)).astype(float))) for q in (0.05, 0.95)]
    return min(values)


def _as_chains(draws) -> np.ndarray:
    x = np.asarray(draws, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {x.shape}.")
    return x


def _valid(x: np.ndarray) -> bool:
    """At least 4 draws per chain, all finite, not all equal."""
    return x.shape[1] >= 4 and bool(np.all(np.isfinite(x))) and not np.all(x == x.flat[0])


def _split(x: np.ndarray) -> np.ndarray:
    """Each chain's first and last halves as two chains (the middle draw of an odd length
    is left out)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]])


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Normal scores of the pooled ranks, ties averaged: ``Phi^-1((r - 3/8) / (S + 1/4))``."""
    flat = x.ravel()
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based, mean over each tie
    ranks = average_rank[inverse.ravel()]
    return ndtri((ranks - 0.375) / (flat.size + 0.25)).reshape(x.shape)


def _basic_rhat(x: np.ndarray) -> float:
    """Gelman-Rubin potential scale reduction of chains ``x`` (chains, n)."""
    n = x.shape[1]
    within = np.mean(np.var(x, axis=1, ddof=1))
    between = n * np.var(np.mean(x, axis=1), ddof=1)
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain at lags 0..n-1, by FFT (zero-padded to >= 2n)."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n


def _ess(x: np.ndarray) -> float:
    """ESS of chains ``x`` (chains, n): autocorrelations combined over chains, summed in
    pairs while the pair sums are positive, made monotone (Geyer 1992), as in Stan."""
    m, n = x.shape
    with np.errstate(divide="ignore", invalid="ignore"):  # constant split chains: nan
        return _geyer(x, m, n)


def _geyer(x: np.ndarray, m: int, n: int) -> float:
    acov = _autocovariance(x)
    mean_acov = acov.mean(axis=0)  # over chains, per lag
    within = mean_acov[0] * n / (n - 1.0)
    var_plus = within * (n - 1.0) / n
    if m > 1:
        var_plus += np.var(x.mean(axis=1), ddof=1)
    rho = 1.0 - (within - mean_acov) / var_plus  # rho[0] == 1
    kept = np.zeros(n)
    kept[0], kept[1] = 1.0, rho[1]
    even, odd = 1.0, rho[1]
    t = 1
    while t < n - 3 and even + odd > 0.0:  # initial positive sequence of pair sums
        even, odd = rho[t + 1], rho[t + 2]
        if even + odd >= 0.0:
            kept[t + 1], kept[t + 2] = even, odd
        t += 2
    last = t - 2
    if even > 0.0:  # the even term of the first non-positive pair still carries information
        kept[last + 1] = even
    t = 1
    while t <= last - 2:  # initial monotone sequence: pair sums may not increase
        if kept[t + 1] + kept[t + 2] > kept[t - 1] + kept[t]:
            kept[t + 1] = kept[t + 2] = (kept[t - 1] + kept[t]) / 2.0
        t += 2
    total = m * n
    tau = -1.0 + 2.0 * float(np.sum(kept[: last + 1])) + float(np.sum(kept[last + 1 : last + 2]))
    return total / max(tau, 1.0 / math.log10(total))
