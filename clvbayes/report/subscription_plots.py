"""The PNG plots of a subscriptions report (drawn with :mod:`clvbayes.plotting.retention`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["subscription_plots"]


def _panels(fig, n: int):
    cols = 1 if n == 1 else 2
    rows = int(np.ceil(n / cols))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


_MAX_PANELS = 6


def subscription_plots(subs: pd.DataFrame, fitted: dict[str, dict[str, Any]], chosen: dict[str, str],
                       groups: list[str], cohorts: pd.DataFrame, holdout: pd.DataFrame | None,
                       opts: SimpleNamespace, raw: pd.DataFrame) -> dict[str, Any]:  # fmt: skip
    """The report's plots: ``{file name: (draw function, figure size)}``.

    ``survival_curves.png`` and ``retention_rates.png`` (one panel per fit group, up to six,
    the largest first: both models' curves with credible bands and the observed values),
    ``renewal_forecast.png`` (the whole base: renewal revenue and subscribers still active
    per future period, both intervals) and, with a holdout, ``holdout_survivors.png``.
    """
    from clvbayes.plotting.retention import (
        plot_holdout_survivors,
        plot_renewal_forecast,
        plot_retention_rates,
        plot_survival_curves,
    )

    shown = sorted(groups, key=lambda g: -int((subs["fit_group"] == g).sum()))[:_MAX_PANELS]
    n = len(shown)
    size = (7.0 if n == 1 else 13.0, 4.6 * int(np.ceil(n / (1 if n == 1 else 2))))
    horizon = opts.horizon

    def label(g: str, key: str) -> str:
        return f"{'sBG' if key == 'sbg' else 'BdW'}" + (" (used)" if chosen[g] == key else "")

    def title(g: str, what: str) -> str:
        return what if g == "all" else f"{what}: {opts.fit_by} {g}"

    def survival(fig) -> None:
        for ax, g in zip(_panels(fig, n), shown, strict=True):
            part = subs[subs["fit_group"] == g]
            models = {label(g, k): m for k, m in fitted[g].items()}
            actual = None
            if opts.kind == "survival" and g in raw.columns:
                actual = raw.set_index(opts.period_col)[g] / 100.0 if opts.cohort_size else None
            t_max = int(part["periods"].max()) + horizon
            plot_survival_curves(models, part, t_max=t_max, prob=opts.prob, actual=actual,
                                 title=title(g, "Survival"), ax=ax)  # fmt: skip

    def retention(fig) -> None:
        for ax, g in zip(_panels(fig, n), shown, strict=True):
            part = subs[subs["fit_group"] == g]
            models = {label(g, k): m for k, m in fitted[g].items()}
            plot_retention_rates(models, part, t_max=int(part["periods"].max()) + horizon,
                                 prob=opts.prob, title=title(g, "Retention rate"), ax=ax)  # fmt: skip

    has_revenue = "revenue_mean" in cohorts

    def forecast(fig) -> None:
        quantities = ["revenue", "active"] if has_revenue else ["active"]
        axes = np.atleast_1d(fig.subplots(1, len(quantities))).ravel()
        for ax, q in zip(axes, quantities, strict=True):
            plot_renewal_forecast(cohorts, q, prob=opts.prob, ax=ax,
                                  currency="" if q != "revenue" else "currency")  # fmt: skip

    plots: dict[str, Any] = {
        "survival_curves.png": (survival, size),
        "retention_rates.png": (retention, size),
        "renewal_forecast.png": (forecast, (13.0 if has_revenue else 7.0, 4.6)),
    }
    if holdout is not None:
        hgroups = list(dict.fromkeys(holdout["fit_group"]))[: _MAX_PANELS + 1]
        hsize = (
            7.0 if len(hgroups) == 1 else 13.0,
            4.6 * int(np.ceil(len(hgroups) / (1 if len(hgroups) == 1 else 2))),
        )
        names = {"sbg": "sBG", "bdw": "BdW"}

        def holdout_plot(fig) -> None:
            table = holdout.assign(model=holdout["model"].map(names))
            for ax, g in zip(_panels(fig, len(hgroups)), hgroups, strict=True):
                plot_holdout_survivors(table, group=g, prob=opts.prob, ax=ax,
                                       title=None if g == "all" else
                                       f"Holdout: projected vs actual ({opts.fit_by} {g})")  # fmt: skip

        plots["holdout_survivors.png"] = (holdout_plot, hsize)
    return plots
