"""The report's PNG plots (drawn on figures outside pyplot's global state)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.schema import DISCRETE_PLOT, PLOTS, report_kind


def _new_axes(size: tuple[float, float] = (7.0, 4.5)):
    """A figure outside pyplot's global state (nothing to close, safe in threads)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    return fig, fig.subplots()


def _simple_hist(ax, values: np.ndarray, title: str, xlabel: str, log: bool = False) -> None:
    v = values[np.isfinite(values)]
    bins: Any = 40
    if log and (v > 0).any():
        v = v[v > 0]
        if v.min() < v.max():
            bins = np.geomspace(v.min(), v.max(), 40)
        ax.set_xscale("log")
    ax.hist(v, bins=bins, color="C0", alpha=0.7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("customers")


def _plot_rf(ax, customers: pd.DataFrame) -> None:
    from clvbayes.segments import rf_table

    grid = rf_table(customers.set_index("customer_id"), values="clv_mean")
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(r) for r in grid.index])
    ax.set_xlabel("F score (5 = most repeat purchases)")
    ax.set_ylabel("R score (5 = most recent)")
    ax.set_title("Mean CLV by recency x frequency score (blank: no customers)")
    ax.figure.colorbar(im, ax=ax, label="mean CLV")


#: Customers up to which the report's plots are drawn in a NUTS worker process while this
#: one writes the tables and model files (above it, pickling the table costs more).
PLOTS_ELSEWHERE_MAX = 200_000


def _import_plotting() -> None:
    """Import what the plots need (matplotlib ~0.9 s): sent to an idle worker in advance."""
    import matplotlib.figure  # noqa: F401

    import clvbayes.plotting  # noqa: F401


def prepare_plots_elsewhere() -> None:
    """Have a running NUTS worker (:func:`clvbayes.nuts.start_workers`) import matplotlib now,
    in the background, so that :func:`draw_plots_soon` finds it ready; no-op without one."""
    from clvbayes import nuts

    nuts.submit(_import_plotting)


def draw_plots_soon(
    draw, folder: Path, customers: pd.DataFrame, segments: pd.DataFrame,
    settings: Mapping[str, Any],
):  # fmt: skip
    """Start ``draw(folder, customers, segments, settings)`` (:func:`_write_plots`); returns
    ``finish(draw_here=True)``, which waits and returns the names of the files written.

    With a running NUTS worker, at most :data:`PLOTS_ELSEWHERE_MAX` customers and a
    module-level ``draw`` the plots are drawn there, concurrently with the caller; otherwise
    (and if the worker fails for any reason) by ``finish`` itself, here, so that an error
    is raised in this process.  ``finish(draw_here=False)`` only waits for the worker (for
    a caller that is failing: nothing is drawn here) and returns ``[]``.
    """
    from clvbayes import nuts

    pending = None
    if len(customers) <= PLOTS_ELSEWHERE_MAX:
        pending = nuts.submit(draw, folder, customers, segments, dict(settings))

    def finish(draw_here: bool = True) -> list[str]:
        if pending is not None:
            done, names = pending()
            if done:
                return names
        return draw(folder, customers, segments, settings) if draw_here else []

    return finish


def _write_plots(
    folder: Path, customers: pd.DataFrame, segments: pd.DataFrame, settings: Mapping[str, Any]
) -> list[str]:
    """Write the PNG plots of the tables; returns their file names.

    Uses :mod:`clvbayes.plotting` where it has the plot, else a plain histogram.  Without a
    spend model (:func:`~clvbayes.report.schema.report_kind`) there is no CLV to plot: the
    P(alive) histogram and the expected purchases by segment only.
    """
    from types import SimpleNamespace

    try:
        from clvbayes import plotting
    except ImportError:  # pragma: no cover - plotting is part of the package
        plotting = None
    named = segments[segments["grouping"] == "segment"].set_index("group")
    scores = SimpleNamespace(
        customers=customers, segments={"segment": named}, settings=dict(settings)
    )
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name)
        written.append(name)

    grid, spend = report_kind(settings)
    at = "the last calibration opportunity" if grid == "discrete" else "the end of calibration"
    simple = {
        "p_alive": (f"P(alive) at {at}", "posterior mean P(alive)", False),
        "clv": ("CLV across customers", "posterior mean CLV (currency, log scale)", True),
    }
    if not spend:
        del simple["clv"]
    for (quantity, (title, xlabel, log)), name in zip(simple.items(), PLOTS, strict=False):
        fig, ax = _new_axes()
        try:
            plotting.plot_clv_distribution(scores, quantity, ax=ax)
        except (AttributeError, TypeError, ValueError, KeyError):  # no or other plot: plain one
            fig, ax = _new_axes()
            _simple_hist(ax, customers[f"{quantity}_mean"].to_numpy(float), title, xlabel, log)
        save(fig, name)
    if spend:
        fig, ax = _new_axes((6.5, 5.0))
        _plot_rf(ax, customers)
        save(fig, PLOTS[2])
    if plotting is not None and hasattr(plotting, "plot_segment_totals") and len(named):
        fig, ax = _new_axes((7.5, 4.5))
        try:
            quantity = "clv" if spend else "purchases"
            plotting.plot_segment_totals(scores, by="segment", quantity=quantity, ax=ax)
            save(fig, "segment_totals.png")
        except (TypeError, ValueError, KeyError):
            pass
    return written


def _write_model_plots(
    folder: Path, models: Mapping[str, Any], settings: Mapping[str, Any]
) -> list[str]:
    """Plots drawn from the fitted purchase model (``models[settings["purchase_model"]]``).

    Discrete-time reports get :data:`~clvbayes.report.schema.DISCRETE_PLOT`, BG/BB's
    P(alive) by (frequency, recency) for the most common ``periods``
    (:func:`clvbayes.plotting.plot_history_grid`).  The model checks of
    :mod:`clvbayes.plotting.checks` evaluate continuous-time formulas and are not drawn
    here.  Continuous-time reports: none (returns ``[]``).
    """
    grid, _ = report_kind(settings)
    model = models.get(settings.get("purchase_model") or "")
    if grid != "discrete" or model is None:
        return []
    from matplotlib.figure import Figure

    from clvbayes.plotting import plot_history_grid

    fig = Figure(figsize=(12.0, 5.5), dpi=100)
    axes = fig.subplots(1, 2)
    plot_history_grid(model, prob=float(settings.get("prob", 0.9)), axes=axes)
    fig.tight_layout()
    fig.savefig(folder / DISCRETE_PLOT)
    return [DISCRETE_PLOT]
