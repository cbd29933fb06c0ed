"""Diagnostic plots for clvbayes models (matplotlib).

Every function draws on an optional ``ax`` (a new figure by default) and returns the Axes
(or an array of Axes for multi-panel plots).  Wherever the model gives an interval the plot
shows it, in two kinds that mean different things:

* **credible** (darker band, thick whisker): uncertainty about an *expected* value because
  the model parameters are not known exactly -- it needs posterior draws, so a MAP fit
  has none;
* **predictive** (lighter band, thin capped whisker): the range of what will actually be
  *observed*, which adds the customers' own randomness.

The model checks and customer plots evaluate the fitted model's own formulas (its math
module), so they work for every registered purchase model
(:func:`clvbayes.models.protocols.purchase_models`); the CLV plots take the output of
:func:`clvbayes.predict.score_customers`, and the parameter plots any fitted model.

Model checks (:mod:`clvbayes.plotting.checks`)
    :func:`plot_frequency_ppc`, :func:`plot_calibration_holdout`, :func:`plot_tracking`
    (numbers in :func:`tracking_data`), :func:`plot_pit`.
Customers (:mod:`clvbayes.plotting.customers`)
    :func:`plot_p_alive_matrix`, :func:`plot_expected_purchases_matrix`,
    :func:`plot_customer_history`.
Discrete opportunities, BG/BB (:mod:`clvbayes.plotting.discrete`)
    :func:`plot_history_grid` (numbers in :func:`history_grid`): P(alive) or the expected
    transactions by (frequency, recency) for a fixed number of opportunities, posterior mean
    and credible-interval width.  The model checks and customer plots above evaluate
    continuous-time formulas and refuse BG/BB.
CLV (:mod:`clvbayes.plotting.clv`)
    :func:`plot_clv_distribution`, :func:`plot_segment_totals`, :func:`plot_interval_kinds`.
Parameters and sampler (:mod:`clvbayes.plotting.diagnostics`)
    :func:`plot_posteriors`, :func:`plot_trace`.
Retention, sBG and BdW (:mod:`clvbayes.plotting.retention`)
    :func:`plot_survival_curves` and :func:`plot_retention_rates` (the models' curves with
    credible bands against the observed ones, :func:`empirical_survival`),
    :func:`plot_renewal_forecast` (renewal revenue or survivors per future period, both
    intervals), :func:`plot_holdout_survivors` (projected vs actual in a holdout).

Simulation-based bands take a ``seed``: the same seed gives the same picture.
"""

from clvbayes.plotting.checks import (
    plot_calibration_holdout,
    plot_frequency_ppc,
    plot_pit,
    plot_tracking,
    tracking_data,
)
from clvbayes.plotting.clv import plot_clv_distribution, plot_interval_kinds, plot_segment_totals
from clvbayes.plotting.customers import (
    plot_customer_history,
    plot_expected_purchases_matrix,
    plot_p_alive_matrix,
)
from clvbayes.plotting.diagnostics import plot_posteriors, plot_trace
from clvbayes.plotting.discrete import history_grid, plot_history_grid
from clvbayes.plotting.retention import (
    empirical_survival,
    plot_holdout_survivors,
    plot_renewal_forecast,
    plot_retention_rates,
    plot_survival_curves,
)

__all__ = [
    "empirical_survival",
    "history_grid",
    "plot_calibration_holdout",
    "plot_clv_distribution",
    "plot_customer_history",
    "plot_expected_purchases_matrix",
    "plot_frequency_ppc",
    "plot_history_grid",
    "plot_holdout_survivors",
    "plot_interval_kinds",
    "plot_p_alive_matrix",
    "plot_pit",
    "plot_posteriors",
    "plot_renewal_forecast",
    "plot_retention_rates",
    "plot_segment_totals",
    "plot_survival_curves",
    "plot_trace",
    "plot_tracking",
    "tracking_data",
]
