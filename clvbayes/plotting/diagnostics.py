"""Parameter posteriors and sampler diagnostics of any fitted clvbayes model.

* :func:`plot_trace`: a trace plot (per-chain densities and traces, divergent
  transitions marked as ticks), for NUTS fits.  Chains that disagree, drift or get stuck
  show up here before they mislead any prediction.
* :func:`plot_posteriors`: one panel per parameter with the posterior density, its mean
  and the equal-tailed credible interval clvbayes uses everywhere (ArviZ's own
  ``plot_posterior`` shows highest-density intervals, a different convention).  For a
  MAP fit the panel shows the Laplace (normal) approximation around the mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clvbayes.plotting._common import (
    MODEL_COLOR,
    OBSERVED_COLOR,
    check_fitted,
    interval,
)
from clvbayes.predict import DEFAULT_PROB

__all__ = ["plot_posteriors", "plot_trace"]


def _n_draws(model: Any) -> int:
    post = model.posterior_
    return int(post.sizes["chain"] * post.sizes["draw"])


def plot_trace(
    model: Any, *, axes=None, bins: int = 40, figsize: tuple[float, float] | None = None
):
    """Trace plot of the model's parameters: per-chain densities and draws (NUTS fits).

    Drawn with matplotlib alone (the same figure whichever ArviZ is installed; for ArviZ's
    own, pass ``model.idata_`` to ``arviz.plot_trace``).  Divergent transitions, where the
    sampler recorded them, are marked as ticks under each trace.

    Parameters
    ----------
    model : fitted clvbayes model
        Fitted with ``method="nuts"`` (or ``"laplace"``: one chain of independent draws).
    axes : array of matplotlib Axes, optional
        Shape ``(n_parameters, 2)``; default a new figure.
    bins : int
        Histogram bins of the density panels.
    figsize : (float, float), optional
        Size of a new figure in inches (default 9 x 1.9 per parameter).

    Returns
    -------
    ndarray of matplotlib.axes.Axes
        Shape ``(n_parameters, 2)``: density per chain (left), draws per chain (right).

    Raises
    ------
    ValueError
        For a MAP/MLE fit, which has a single draw and nothing to trace.
    """
    check_fitted(model)
    if _n_draws(model) < 2:
        raise ValueError(
            "A trace plot needs posterior draws: this model was fitted with a single draw "
            "(MAP/MLE). Fit with method='nuts', or use plot_posteriors for the Laplace approximation."
        )
    names = list(model.param_names)
    if axes is None:
        import matplotlib.pyplot as plt

        size = figsize or (9, 1.9 * len(names))
        axes = plt.subplots(len(names), 2, figsize=size, squeeze=False)[1]
    axes = np.asarray(axes, dtype=object).reshape(len(names), 2)
    stats_ds = getattr(model, "sample_stats_", None)
    diverging = None
    if stats_ds is not None and "diverging" in stats_ds:
        diverging = np.asarray(stats_ds["diverging"].values, dtype=bool)
    draws = model.draws()
    for row, name in enumerate(names):
        v = np.asarray(draws[name], dtype=float)
        edges = np.histogram_bin_edges(v, bins=bins)
        for chain in range(v.shape[0]):
            axes[row, 0].hist(v[chain], bins=edges, histtype="step", density=True)
            axes[row, 1].plot(np.arange(v.shape[1]), v[chain], linewidth=0.5)
        if diverging is not None and diverging.any():
            steps = np.flatnonzero(diverging.any(axis=0))
            low = float(v.min())
            axes[row, 1].plot(steps, np.full(steps.size, low), "|", color="black",
                              label="divergent")  # fmt: skip
        axes[row, 0].set_ylabel(name)
        axes[row, 0].set_yticks([])
    axes[0, 0].set_title("posterior density, per chain")
    axes[0, 1].set_title("draws, per chain")
    axes[-1, 1].set_xlabel("draw")
    axes[0, 0].figure.tight_layout()
    return axes


def plot_posteriors(
    model: Any,
    *,
    prob: float = DEFAULT_PROB,
    reference: dict[str, float] | None = None,
    axes=None,
):
    """Posterior density of each parameter with its mean and equal-tailed credible interval.

    Parameters
    ----------
    model : fitted clvbayes model
        NUTS fits show a kernel density estimate of the draws; MAP fits the normal
        approximation with the Laplace standard deviations of ``model.fit_info_``.
    prob : float
        Probability of the shaded interval (default 0.9).
    reference : dict of str to float, optional
        Values to mark per parameter, e.g. published estimates (dotted lines).
    axes : sequence of matplotlib Axes, optional
        One per parameter; default a new row of panels.

    Returns
    -------
    ndarray of matplotlib.axes.Axes
        One per parameter, each with the density line, the mean line, the shaded interval
        and, when given, the reference line.
    """
    check_fitted(model)
    names = list(model.param_names)
    created = axes is None
    if created:
        import matplotlib.pyplot as plt

        axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)[1][0]
    axes = np.asarray(axes, dtype=object).ravel()
    if axes.size != len(names):
        raise ValueError(f"Need {len(names)} axes (one per parameter {names}), got {axes.size}.")
    from scipy import stats  # here, not at import: scipy.stats takes ~0.4 s to import

    draws = model.draws()
    laplace = (getattr(model, "fit_info_", None) or {}).get("laplace_sd", {})
    single = _n_draws(model) < 2
    for ax, name in zip(axes, names, strict=True):
        v = np.asarray(draws[name], dtype=float).ravel()
        if single:
            centre, sd = float(v[0]), float(laplace.get(name, np.nan))
            if not np.isfinite(sd) or sd <= 0:
                ax.axvline(centre, color=MODEL_COLOR, label="MAP")
                ax.set_title(f"{name} (MAP, no uncertainty available)")
                continue
            grid = np.linspace(centre - 4 * sd, centre + 4 * sd, 200)
            dens = stats.norm.pdf(grid, centre, sd)
            z = stats.norm.ppf(0.5 + prob / 2)
            lo, hi = centre - z * sd, centre + z * sd
            title = f"{name} (MAP, Laplace approx.)"
            mean = centre
        else:
            lo, hi = interval(v, prob)
            pad = 0.1 * (v.max() - v.min() or 1.0)
            grid = np.linspace(v.min() - pad, v.max() + pad, 200)
            dens = stats.gaussian_kde(v)(grid) if np.ptp(v) > 0 else np.zeros_like(grid)
            mean = float(v.mean())
            title = name
        ax.plot(grid, dens, color=MODEL_COLOR, label="posterior")
        inside = (grid >= lo) & (grid <= hi)
        ax.fill_between(grid[inside], 0, dens[inside], color=MODEL_COLOR, alpha=0.3,
                        linewidth=0, label=f"{prob:.0%} credible interval")  # fmt: skip
        ax.axvline(mean, color=MODEL_COLOR, linestyle="--", label=f"mean {mean:.3g}")
        if reference and name in reference:
            ax.axvline(
                reference[name],
                color=OBSERVED_COLOR,
                linestyle=":",
                label=f"reference {reference[name]:.3g}",
            )
        ax.set_title(f"{title}\n{prob:.0%}: [{lo:.3g}, {hi:.3g}]")
        ax.set_yticks([])
        ax.set_ylim(bottom=0)
    axes[0].legend(frameon=False, fontsize="small")
    if created:
        axes[0].figure.tight_layout()
    return axes
