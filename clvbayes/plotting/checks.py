"""Model checks for any purchase model: does the fitted model reproduce the data?

Every plot puts what was observed (black) next to what the model says (blue), with two
kinds of band:

* the **credible band** (darker): where the *expected* value lies, given the uncertainty
  about the model parameters.  It needs posterior draws: a MAP fit has none, so no
  credible band is drawn for it;
* the **predictive band** (lighter): where an *observed* value would fall if the data were
  generated again by the fitted model -- parameter uncertainty plus the randomness of the
  customers themselves.  Computed by simulating ``n_sims`` data sets, each from one
  posterior draw (cycled), so it exists for MAP fits too.

An observation outside the predictive band is a sign of misfit; one outside only the
credible band is not (single data sets scatter around their expectation).

The plots follow Fader, Hardie & Lee (2005), "Counting your customers the easy way",
Marketing Science 24(2): Figure 2 (repeat-purchase histogram), Figure 3/4 (tracking of
cumulative and weekly repeat transactions) and Figure 5 (conditional expectations by
calibration frequency).  Each evaluates the fitted model's own closed forms and simulation
(its math module, e.g. :mod:`clvbayes.math.pnbd` for ``ParetoNBDModel``), so they work for
every registered purchase model (:func:`clvbayes.models.protocols.purchase_models`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from clvbayes.data import compress, validate_rfm
from clvbayes.plotting._common import (
    MODEL_COLOR,
    N_DRAWS,
    N_SIMS,
    OBSERVED_COLOR,
    band,
    cycle,
    days_per_unit,
    get_ax,
    histories,
    interval,
    n_samples,
    purchase_draws,
    purchase_math,
)
from clvbayes.predict import DEFAULT_PROB
from clvbayes.units import table_time_unit

__all__ = [
    "plot_calibration_holdout",
    "plot_frequency_ppc",
    "plot_pit",
    "plot_tracking",
    "tracking_data",
]

# simulated data sets are generated in chunks of at most this many (data set x customer) cells
_MAX_SIM_ELEMENTS = 2_000_000


def _sim_chunks(n_sims: int, n_customers: int) -> list[tuple[int, int]]:
    step = max(1, _MAX_SIM_ELEMENTS // max(n_customers, 1))
    return [(i, min(i + step, n_sims)) for i in range(0, n_sims, step)]


def _check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _category_labels(k: int) -> list[str]:
    return [str(i) for i in range(k)] + [f"{k}+"]


# ------------------------------------------------------------------------------------------
# repeat-purchase histogram of the calibration period
# ------------------------------------------------------------------------------------------
def plot_frequency_ppc(
    model: Any,
    rfm: pd.DataFrame | None = None,
    *,
    max_frequency: int = 7,
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    n_sims: int = N_SIMS,
    seed: int | None = 0,
    ax=None,
):
    """Posterior predictive check: customers by number of repeat purchases, observed vs model.

    For ``n = 0, 1, ..., max_frequency - 1`` and ``max_frequency+``, the bars show how many
    customers made ``n`` repeat purchases in their calibration period (observed, black) and
    how many the model expects (blue): ``sum_i P(X(T_i) = n)`` over customers, with the
    model's ``P(X(t) = n)`` (its math module's ``prob_purchases``) evaluated per posterior
    draw at each customer's own observation length ``T_i``.  The thick whisker is the
    credible interval of that expectation (several draws only); the thin capped whisker the
    predictive interval of the count, from ``n_sims`` data sets simulated from the model's
    population (its ``simulate``; each customer keeps their ``T_i``).

    Parameters
    ----------
    model : fitted purchase model
        Any registered purchase model (:func:`clvbayes.models.protocols.purchase_models`).
    rfm : DataFrame, optional
        Customer table (``frequency``, ``recency``, ``T``); default the model's training data.
    max_frequency : int
        Last category is "``max_frequency`` or more" (default 7, as FHL Figure 2).
    prob : float
        Probability of both intervals (default 0.9, equal-tailed).
    n_draws : int, optional
        Posterior draws used (evenly spaced; default 200, None for all).
    n_sims : int
        Simulated data sets behind the predictive interval (default 200).
    seed : int, optional
        Seed of the simulation.
    ax : matplotlib Axes, optional
        Where to draw (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
        With ``2 (max_frequency + 1)`` bars (observed, then model), one errorbar for the
        predictive and, for posteriors with several draws, one for the credible interval.
    """
    k = _check_positive_int(max_frequency, "max_frequency")
    n_sims = _check_positive_int(n_sims, "n_sims")
    math = purchase_math(model)
    draws = purchase_draws(model, n_draws)
    data = histories(model, rfm)
    counts = data.counts
    n_customers = int(counts.sum())
    observed = np.bincount(
        np.minimum(data["frequency"], k).astype(np.int64), weights=counts, minlength=k + 1
    )

    # expected number of customers in each category, per draw: (S, k + 1)
    t_unique, t_inverse = np.unique(data["T"], return_inverse=True)
    per_t = np.bincount(t_inverse.ravel(), weights=counts)
    probs = math.prob_purchases(
        *(v[:, :, None] for v in draws.values()),
        t_unique[None, :, None],
        np.arange(k)[None, None, :],
    )
    head = np.einsum("u,suk->sk", per_t, np.atleast_3d(probs))
    expected = np.concatenate([head, n_customers - head.sum(axis=1, keepdims=True)], axis=1)

    # simulated data sets: counts per category, (n_sims, k + 1)
    rng = np.random.default_rng(seed)
    T_customers = np.repeat(data["T"], counts)
    params = cycle(draws, n_sims)
    simulated = np.empty((n_sims, k + 1))
    for i0, i1 in _sim_chunks(n_sims, n_customers):
        sim = math.simulate(rng, *(v[i0:i1] for v in params.values()), T_customers)
        category = np.minimum(sim["frequency"], k).astype(np.int64)
        cat = category + (k + 1) * np.arange(i1 - i0)[:, None]
        simulated[i0:i1] = np.bincount(cat.ravel(), minlength=(i1 - i0) * (k + 1)).reshape(
            i1 - i0, k + 1
        )

    ax = get_ax(ax)
    pos = np.arange(k + 1)
    width = 0.4
    ax.bar(pos - width / 2, observed, width, color=OBSERVED_COLOR, label="observed")
    mean = expected.mean(axis=0)
    ax.bar(pos + width / 2, mean, width, color=MODEL_COLOR, alpha=0.6, label="model (expected)")
    lo, hi = interval(simulated, prob, discrete=True)
    ax.errorbar(
        pos + width / 2, mean, yerr=[np.maximum(mean - lo, 0), np.maximum(hi - mean, 0)],
        fmt="none", ecolor="0.35", elinewidth=1, capsize=4, label=f"{prob:.0%} predictive interval",
    )  # fmt: skip
    if n_samples(draws) > 1:
        lo, hi = interval(expected, prob)
        ax.errorbar(
            pos + width / 2, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor=MODEL_COLOR,
            elinewidth=5, capsize=0, label=f"{prob:.0%} credible interval of the expectation",
        )  # fmt: skip
    ax.set_xticks(pos, _category_labels(k))
    ax.set_xlabel("repeat purchases in the calibration period")
    ax.set_ylabel("customers")
    ax.set_title("Posterior predictive check: repeat purchases")
    ax.legend(frameon=False)
    return ax


# ------------------------------------------------------------------------------------------
# calibration vs holdout
# ------------------------------------------------------------------------------------------
def plot_calibration_holdout(
    model: Any,
    rfm: pd.DataFrame,
    *,
    horizon: float | None = None,
    max_frequency: int = 7,
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    n_sims: int = N_SIMS,
    seed: int | None = 0,
    ax=None,
):
    """Mean holdout purchases by calibration frequency: actual vs the model's prediction.

    Customers are grouped by their number of repeat purchases in the calibration period
    (``0, 1, ..., max_frequency+``).  For each group the plot shows the mean number of
    purchases they actually made in the holdout period and the model's prediction, the
    group mean of ``E[Y(t) | x, t_x, T]`` (the model's ``expected_purchases``, ``t`` = holdout
    length), with the credible band of that mean (several draws) and the predictive band of
    the group's realised mean, simulated from each customer's exact latent posterior (the
    model's ``sample_latent``, then ``simulate_purchases``).

    Parameters
    ----------
    model : fitted purchase model
        Any registered purchase model, fitted on the calibration period.
    rfm : DataFrame
        Table of :func:`clvbayes.data.calibration_holdout_split`: calibration ``frequency``,
        ``recency``, ``T`` and ``frequency_holdout``.
    horizon : float, optional
        Holdout length in the data's time unit; default ``rfm.attrs["holdout_duration"]``.
    max_frequency, prob, n_draws, n_sims, seed, ax
        As in :func:`plot_frequency_ppc`.

    Returns
    -------
    matplotlib.axes.Axes
        Two lines (actual, model), a predictive band and, for several draws, a credible band.
    """
    k = _check_positive_int(max_frequency, "max_frequency")
    n_sims = _check_positive_int(n_sims, "n_sims")
    if "frequency_holdout" not in rfm.columns:
        raise ValueError(
            "The customer table has no 'frequency_holdout' column: build it with "
            "clvbayes.data.calibration_holdout_split(transactions, calibration_end, observation_end)."
        )
    if horizon is None:
        horizon = rfm.attrs.get("holdout_duration")
        if horizon is None:
            raise ValueError(
                "Holdout length unknown: pass horizon= (in the data's time unit) or use the table "
                "returned by calibration_holdout_split, which records attrs['holdout_duration']."
            )
    horizon = float(horizon)
    checked = validate_rfm(rfm)
    data = compress(checked, columns=("frequency", "recency", "T"))
    math = purchase_math(model)
    draws = purchase_draws(model, n_draws)
    x, t_x, T = (np.asarray(data[c], dtype=float) for c in ("frequency", "recency", "T"))
    group_of_history = np.minimum(x, k).astype(np.int64)
    n_group = np.bincount(group_of_history, weights=data.counts, minlength=k + 1)
    keep = n_group > 0

    actual_sum = np.bincount(
        np.minimum(checked["frequency"].to_numpy(), k).astype(np.int64),
        weights=checked["frequency_holdout"].to_numpy(dtype=float),
        minlength=k + 1,
    )
    actual = actual_sum[keep] / n_group[keep]

    expected = math.expected_purchases(*draws.values(), x, t_x, T, horizon)  # (S, u)
    onehot = sparse.csr_matrix(
        (data.counts.astype(float), (np.arange(x.size), group_of_history)), shape=(x.size, k + 1)
    )
    group_mean = np.asarray((onehot.T @ np.atleast_2d(expected).T).T)[:, keep] / n_group[keep]

    rng = np.random.default_rng(seed)
    rep = np.repeat(np.arange(x.size), data.counts)
    group_c = group_of_history[rep]
    params = cycle(draws, n_sims)
    sim_means = np.empty((n_sims, k + 1))
    for i0, i1 in _sim_chunks(n_sims, rep.size):
        state = math.sample_latent(
            rng, *(v[i0:i1] for v in params.values()), x[rep], t_x[rep], T[rep]
        )
        bought = math.simulate_purchases(rng, *state, horizon)
        idx = group_c + (k + 1) * np.arange(i1 - i0)[:, None]
        sums = np.bincount(idx.ravel(), weights=bought.ravel(), minlength=(i1 - i0) * (k + 1))
        sim_means[i0:i1] = sums.reshape(i1 - i0, k + 1)
    sim_means = sim_means[:, keep] / n_group[keep]

    ax = get_ax(ax)
    pos = np.arange(k + 1)[keep]
    band(ax, pos, *interval(sim_means, prob), kind="pi", prob=prob)
    if n_samples(draws) > 1:
        band(ax, pos, *interval(group_mean, prob), kind="ci", prob=prob)
    ax.plot(pos, group_mean.mean(axis=0), "s--", color=MODEL_COLOR, label="model (expected)")
    ax.plot(pos, actual, "o-", color=OBSERVED_COLOR, label="actual")
    labels = [f"{lab}\nn={int(n):,}" for lab, n in zip(_category_labels(k), n_group, strict=True)]
    ax.set_xticks(pos, [labels[i] for i in pos])
    unit = table_time_unit(rfm, model) or "time units"
    ax.set_xlabel("repeat purchases in the calibration period (customers per group)")
    ax.set_ylabel(f"mean purchases in the holdout ({horizon:g} {unit})")
    ax.set_title("Calibration vs holdout")
    ax.legend(frameon=False)
    return ax


# ------------------------------------------------------------------------------------------
# tracking plots
# ------------------------------------------------------------------------------------------
def tracking_data(
    model: Any,
    transactions: pd.DataFrame,
    rfm: pd.DataFrame,
    *,
    period: float = 1.0,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    n_sims: int = 100,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Actual and expected repeat transactions per period, cumulative and incremental.

    The cohort of ``rfm`` (customers with a ``first_purchase``) is followed from its first
    purchase day to ``rfm.attrs["observation_end"]`` in periods of ``period`` time units.
    A repeat transaction is any purchase occasion of a customer after their first (same-day
    transactions count once when ``rfm.attrs["merge_same_day"]``, as in the RFM summary).
    Customer ``i``, who first bought at time ``f_i``, is expected to have made
    ``E[X(tau - f_i)]`` repeat purchases by time ``tau`` (the model's ``expected_purchases_new``,
    per draw); the model totals are sums over customers, per draw (credible interval), and
    over customers simulated from the population (the model's ``sample_latent`` for a new
    customer, then ``simulate_purchase_times``: predictive interval).

    Parameters
    ----------
    model : fitted purchase model
        Any registered purchase model (:func:`clvbayes.models.protocols.purchase_models`).
    transactions : DataFrame
        The transaction log the table was built from.
    rfm : DataFrame
        Customer table with ``first_purchase`` and ``attrs`` ``time_unit`` and
        ``observation_end`` (as returned by :func:`clvbayes.data.calibration_holdout_split`
        or :func:`~clvbayes.data.summarize_transactions`).
    period : float
        Period length in the data's time unit (default 1: weekly on weekly data).
    customer_id_col, datetime_col : str
        Columns of ``transactions``.
    prob, n_draws, n_sims, seed
        As in :func:`plot_frequency_ppc` (``n_sims`` default 100).

    Returns
    -------
    DataFrame
        One row per period, indexed by the period end (time units since the cohort's first
        purchase), with ``actual``, ``expected``, ``ci_lower``, ``ci_upper``, ``pi_lower``,
        ``pi_upper`` for the incremental counts and the same names prefixed ``cum_`` for the
        cumulative ones; ``attrs`` ``start`` (first purchase date of the cohort),
        ``calibration_end`` (in time units, or None), ``time_unit`` and ``n_draws``.
    """
    if period <= 0:
        raise ValueError(f"period must be positive, got {period!r}.")
    n_sims = _check_positive_int(n_sims, "n_sims")
    for col in (customer_id_col, datetime_col):
        if col not in transactions.columns:
            raise ValueError(
                f"transactions has no column {col!r}; columns: {list(transactions.columns)}."
            )
    if "first_purchase" not in rfm.columns or "observation_end" not in rfm.attrs:
        raise ValueError(
            "Tracking needs each customer's first_purchase and attrs['observation_end']: use the "
            "table of clvbayes.data.calibration_holdout_split or summarize_transactions."
        )
    time_unit = table_time_unit(rfm, model)
    day = pd.Timedelta(days=1) * days_per_unit(time_unit)
    first = pd.to_datetime(rfm["first_purchase"]).dt.tz_localize(None).dt.normalize()
    start = first.min()
    end = pd.Timestamp(rfm.attrs["observation_end"]).tz_localize(None)
    horizon = (end - start) / day
    f = ((first - start) / day).to_numpy(dtype=float)
    n_periods = int(np.ceil(horizon / period - 1e-9))
    edges = np.minimum(np.arange(n_periods + 1) * period, horizon)

    # actual repeat transactions per period
    tx = transactions[[customer_id_col, datetime_col]]
    tx = tx[tx[customer_id_col].isin(rfm.index)]
    when = pd.to_datetime(tx[datetime_col]).dt.tz_localize(None)
    if rfm.attrs.get("merge_same_day", True):
        when = when.dt.normalize()
    occ = pd.DataFrame({"c": tx[customer_id_col].to_numpy(), "w": when.to_numpy()})
    if rfm.attrs.get("merge_same_day", True):
        occ = occ.drop_duplicates()
    occ = occ.sort_values(["c", "w"], kind="stable")
    repeat = occ[occ.groupby("c", sort=False).cumcount() > 0]
    u = ((repeat["w"] - start) / day).to_numpy(dtype=float)
    u = u[(u > 0) & (u <= horizon)]
    actual = np.bincount(np.searchsorted(edges, u, side="left") - 1, minlength=n_periods)

    # expected cumulative repeat transactions at each period end, per draw
    math = purchase_math(model)
    draws = purchase_draws(model, n_draws)
    f_unique, f_counts = np.unique(f, return_counts=True)
    t_grid = np.clip(edges[None, 1:] - f_unique[:, None], 0.0, None)  # (n_f, K)
    t_unique, t_index = np.unique(t_grid, return_inverse=True)
    weights = sparse.csr_matrix(
        (
            np.repeat(f_counts, n_periods).astype(float),
            (t_index.ravel(), np.tile(np.arange(n_periods), f_unique.size)),
        ),
        shape=(t_unique.size, n_periods),
    )
    values = np.zeros((n_samples(draws), t_unique.size))
    positive = t_unique > 0
    values[:, positive] = math.expected_purchases_new(*draws.values(), t_unique[positive])
    cum_expected = np.asarray((weights.T @ values.T).T)  # (S, K)
    inc_expected = np.diff(cum_expected, axis=1, prepend=0.0)

    # simulated cohorts: repeat transactions per period, (n_sims, K)
    rng = np.random.default_rng(seed)
    params = cycle(draws, n_sims)
    n = f.size
    window = horizon - f
    zeros = np.zeros(n)
    sim_inc = np.empty((n_sims, n_periods))
    for i0, i1 in _sim_chunks(n_sims, n):
        state = math.sample_latent(rng, *(v[i0:i1] for v in params.values()), zeros, zeros, zeros)
        bought, times = math.simulate_purchase_times(rng, *state, window)
        owner = np.repeat(np.arange(bought.size), bought.ravel())
        calendar = f[owner % n] + times
        k_idx = np.clip(np.searchsorted(edges, calendar, side="left") - 1, 0, n_periods - 1)
        idx = (owner // n) * n_periods + k_idx
        sim_inc[i0:i1] = np.bincount(idx, minlength=(i1 - i0) * n_periods).reshape(
            i1 - i0, n_periods
        )
    sim_cum = np.cumsum(sim_inc, axis=1)

    out = {"actual": actual, "expected": inc_expected.mean(axis=0)}
    out["ci_lower"], out["ci_upper"] = interval(inc_expected, prob)
    out["pi_lower"], out["pi_upper"] = interval(sim_inc, prob, discrete=True)
    out["cum_actual"] = np.cumsum(actual)
    out["cum_expected"] = cum_expected.mean(axis=0)
    out["cum_ci_lower"], out["cum_ci_upper"] = interval(cum_expected, prob)
    out["cum_pi_lower"], out["cum_pi_upper"] = interval(sim_cum, prob, discrete=True)
    table = pd.DataFrame(out, index=pd.Index(edges[1:], name=f"{time_unit} since first purchase"))
    cal = rfm.attrs.get("calibration_end")
    table.attrs.update(
        start=start, time_unit=time_unit, n_draws=n_samples(draws),
        calibration_end=None if cal is None else float((pd.Timestamp(cal).tz_localize(None) - start) / day),
    )  # fmt: skip
    return table


def plot_tracking(
    model: Any,
    transactions: pd.DataFrame,
    rfm: pd.DataFrame,
    *,
    cumulative: bool = True,
    period: float = 1.0,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    prob: float = DEFAULT_PROB,
    n_draws: int | None = N_DRAWS,
    n_sims: int = 100,
    seed: int | None = 0,
    ax=None,
):
    """Tracking plot: repeat transactions per period over calibration + holdout, actual vs model.

    The classic validation of a purchase model (FHL 2005, Figures 3 and 4): the cohort's
    cumulative (``cumulative=True``) or per-period repeat transactions, observed and
    expected, with the credible band of the expectation (several draws) and the predictive band of a cohort
    simulated from the model.  The dashed vertical line marks the end of the calibration
    period: to its right the model predicts data it has not seen.  The numbers behind the
    plot come from :func:`tracking_data` (see there for parameters).

    Returns
    -------
    matplotlib.axes.Axes
        Two data lines (actual, model) plus the calibration-end line when known, a predictive
        band and, for several draws, a credible band.
    """
    table = tracking_data(
        model, transactions, rfm, period=period, customer_id_col=customer_id_col,
        datetime_col=datetime_col, prob=prob, n_draws=n_draws, n_sims=n_sims, seed=seed,
    )  # fmt: skip
    pre = "cum_" if cumulative else ""
    x = table.index.to_numpy()
    ax = get_ax(ax)
    band(ax, x, table[f"{pre}pi_lower"], table[f"{pre}pi_upper"], kind="pi", prob=prob)
    if table.attrs["n_draws"] > 1:
        band(ax, x, table[f"{pre}ci_lower"], table[f"{pre}ci_upper"], kind="ci", prob=prob)
    ax.plot(x, table[f"{pre}expected"], "--", color=MODEL_COLOR, label="model (expected)")
    ax.plot(x, table[f"{pre}actual"], "-", color=OBSERVED_COLOR, label="actual")
    if table.attrs["calibration_end"] is not None:
        ax.axvline(
            table.attrs["calibration_end"], color="0.4", linestyle=":", label="end of calibration"
        )
    ax.set_xlabel(f"{table.attrs['time_unit']} since {table.attrs['start']:%Y-%m-%d}")
    what = (
        "cumulative repeat transactions"
        if cumulative
        else f"repeat transactions per {period:g} {table.attrs['time_unit']}"
    )
    ax.set_ylabel(what)
    ax.set_title("Tracking: " + what)
    ax.legend(frameon=False, loc="upper left" if cumulative else "upper right")
    return ax


# ------------------------------------------------------------------------------------------
# probability integral transform of holdout outcomes
# ------------------------------------------------------------------------------------------
def plot_pit(
    scores: Any,
    quantity: str = "purchases",
    *,
    bins: int = 10,
    prob: float = DEFAULT_PROB,
    ax=None,
):
    """Histogram of the probability integral transform (PIT) of observed outcomes.

    ``score_customers(..., observed={quantity: values})`` gives each customer's randomised
    PIT: where the observation falls in its own predictive distribution.  If the model is
    calibrated, the PIT is uniform on (0, 1) -- a flat histogram.  A U shape means the
    predictive intervals are too narrow (overconfident), a hump that they are too wide, a
    slope that predictions are biased.  The band is the range a histogram of truly uniform
    values would stay in with probability ``prob`` (per bin, binomial).

    Parameters
    ----------
    scores : CustomerScores or DataFrame
        Result of :func:`clvbayes.predict.score_customers` with ``observed``, or its
        ``customers`` table.
    quantity : str
        Outcome with a ``{quantity}_pit`` column (default ``"purchases"``).
    bins : int
        Number of histogram bins.
    prob : float
        Probability of the uniform reference band.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
        ``bins`` bars, the uniform reference line and its band; the title reports the share
        of observations inside their predictive interval.
    """
    table = getattr(scores, "customers", scores)
    col = f"{quantity}_pit"
    if col not in table.columns:
        raise ValueError(
            f"No column {col!r}: call score_customers(..., observed={{{quantity!r}: values}}) first."
        )
    bins = _check_positive_int(bins, "bins")
    pit = table[col].to_numpy(dtype=float)
    n = pit.size
    ax = get_ax(ax)
    ax.hist(
        pit,
        bins=bins,
        range=(0, 1),
        density=True,
        color="0.55",
        edgecolor="white",
        label="observed PIT",
    )
    from scipy import stats  # here, not at import: scipy.stats takes ~0.4 s to import

    lo, hi = stats.binom.interval(prob, n, 1 / bins)
    ax.fill_between([0, 1], lo * bins / n, hi * bins / n, color=MODEL_COLOR, alpha=0.3,
                    linewidth=0, zorder=3, label=f"{prob:.0%} range if calibrated")  # fmt: skip
    ax.axhline(1.0, color=MODEL_COLOR, linestyle="--", zorder=4, label="uniform (calibrated)")
    covered = f"{quantity}_pi_covered"
    title = f"PIT of {quantity}"
    if covered in table.columns:
        title += f": {table[covered].mean():.1%} inside their predictive interval"
    ax.set_title(title)
    ax.set_xlabel("PIT (where the observation falls in its predictive distribution)")
    ax.set_ylabel("density")
    heights = [patch.get_height() for patch in ax.patches]
    ax.set_ylim(0, 1.4 * max(max(heights), hi * bins / n))
    ax.legend(frameon=False, loc="upper center", ncol=3, fontsize="small")
    return ax
