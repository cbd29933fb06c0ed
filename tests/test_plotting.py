"""clvbayes.plotting: every plot runs on a MAP and a NUTS fit and draws what it claims.

No image snapshots: each test counts the artists a plot promises (bars, lines, bands,
errorbars, images) and checks the plotted numbers against an independent computation
(pandas on the raw data, the model's own prediction methods, or simulation).  The detailed
tests use BG/NBD (MAP and a short NUTS run); every registered purchase model then runs each
model plot on a MAP and a Laplace fit (``test_*_every_purchase_model``).
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.image import AxesImage

from clvbayes import plotting
from clvbayes.models.protocols import purchase_model_candidates

K = 7  # categories 0..6 and 7+


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def transactions():
    from clvbayes.datasets import load_cdnow_transactions

    return load_cdnow_transactions()


@pytest.fixture(scope="module")
def bg_map(cdnow):
    from clvbayes.models import BetaGeoModel

    return BetaGeoModel().fit(cdnow, method="map")


@pytest.fixture(scope="module")
def gg_map(cdnow):
    from clvbayes.models import GammaGammaModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GammaGammaModel().fit(cdnow, method="map")


PURCHASE_KEYS = tuple(purchase_model_candidates())


def _fit(key, cdnow, method):
    cls = purchase_model_candidates()[key][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls().fit(cdnow, method=method, seed=2)


@pytest.fixture(scope="module", params=PURCHASE_KEYS)
def purchase_map(request, cdnow):
    """Each registered purchase model, fitted by MAP."""
    return _fit(request.param, cdnow, "map")


@pytest.fixture(scope="module", params=[(k, m) for k in PURCHASE_KEYS for m in ("map", "laplace")],
                ids=lambda p: "-".join(p))  # fmt: skip
def purchase_fit(request, cdnow):
    """(method, model): each registered purchase model by MAP and by Laplace."""
    key, method = request.param
    return method, _fit(key, cdnow, method)


@pytest.fixture(scope="module", params=["map", "nuts"])
def fitted(request, bg_map, gg_map):
    """(method, BG/NBD model, Gamma-Gamma model); NUTS: the short shared session fits."""
    if request.param == "map":
        return "map", bg_map, gg_map
    return (
        "nuts",
        request.getfixturevalue("bgnbd_nuts_small"),
        request.getfixturevalue("gg_nuts_small"),
    )


@pytest.fixture(scope="module")
def scores(fitted, cdnow):
    from clvbayes.predict import score_customers

    method, bg, gg = fitted
    table = cdnow.assign(group=np.where(cdnow["frequency"] > 0, "repeat", "one-off"))
    return method, score_customers(
        table, bg, gg, horizon=39, annual_discount_rate=0.1, margin=0.3, by="group", seed=1,
        n_draws=20, observed={"purchases": cdnow["frequency_holdout"].to_numpy()},
    )  # fmt: skip


def polys(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def n_bands(method):
    """Predictive band always; credible band only with several posterior draws."""
    return 1 if method == "map" else 2


# ------------------------------------------------------------------------------------------
# model checks
# ------------------------------------------------------------------------------------------
def test_frequency_ppc_draws_observed_and_model_bars(fitted, cdnow):
    method, bg, _ = fitted
    ax = plotting.plot_frequency_ppc(bg, max_frequency=K, n_draws=50, n_sims=50, seed=1)
    bars = ax.patches
    assert len(bars) == 2 * (K + 1)
    observed = np.array([p.get_height() for p in bars[: K + 1]])
    model = np.array([p.get_height() for p in bars[K + 1 :]])
    expected_obs = (
        cdnow["frequency"].clip(upper=K).value_counts().reindex(range(K + 1), fill_value=0)
    )
    np.testing.assert_array_equal(observed, expected_obs.to_numpy())
    assert model.sum() == pytest.approx(len(cdnow), rel=1e-9)
    assert len(errorbars(ax)) == n_bands(method)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == f"{K}+"


def test_frequency_ppc_expected_counts_match_simulation(purchase_map, cdnow):
    """Closed-form expected histogram (the model's P(X(t) = n)) vs. the mean of many data sets
    simulated from the model's population."""
    ax = plotting.plot_frequency_ppc(purchase_map, max_frequency=3, n_sims=2)
    model = np.array([p.get_height() for p in ax.patches[4:]])
    params = [float(purchase_map.draws()[k].ravel()[0]) for k in purchase_map.param_names]
    sim = purchase_map._math.simulate(7, *params, np.tile(cdnow["T"].to_numpy(), 100))
    simulated = np.bincount(np.minimum(sim["frequency"], 3).astype(int), minlength=4) / 100
    np.testing.assert_allclose(model, simulated, rtol=0.03, atol=3)


def test_calibration_holdout_lines_and_bands(fitted, cdnow):
    method, bg, _ = fitted
    ax = plotting.plot_calibration_holdout(bg, cdnow, max_frequency=K, n_draws=50, n_sims=50)
    model_line, actual_line = ax.lines
    group = cdnow["frequency"].clip(upper=K)
    actual = cdnow.groupby(group)["frequency_holdout"].mean()
    np.testing.assert_allclose(actual_line.get_ydata(), actual.to_numpy())
    predicted = bg.expected_purchases(39.0, cdnow).mean(("chain", "draw")).to_numpy()
    np.testing.assert_allclose(
        model_line.get_ydata(),
        pd.Series(predicted).groupby(group.to_numpy()).mean().to_numpy(),
        rtol=0.02,
    )
    assert len(polys(ax)) == n_bands(method)
    # the predictive band of the group means contains the model line
    band = polys(ax)[0].get_paths()[0].vertices
    assert band[:, 1].min() <= model_line.get_ydata().min()
    assert band[:, 1].max() >= model_line.get_ydata().max()


def test_calibration_holdout_needs_holdout_column(bg_map, cdnow):
    with pytest.raises(ValueError, match="calibration_holdout_split"):
        plotting.plot_calibration_holdout(bg_map, cdnow.drop(columns="frequency_holdout"))


def test_tracking_data_counts_every_repeat_transaction(bg_map, cdnow, transactions):
    table = plotting.tracking_data(bg_map, transactions, cdnow, n_sims=30)
    # 78 weeks from 1997-01-01 to 1998-06-30; every repeat occasion of the cohort is counted once
    assert len(table) == 78
    assert table["cum_actual"].iloc[-1] == (cdnow["frequency"] + cdnow["frequency_holdout"]).sum()
    assert table["actual"].sum() == table["cum_actual"].iloc[-1]
    cal = table.attrs["calibration_end"]
    assert cal == pytest.approx(272 / 7)
    # calibration repeats: all counted by the end of week 39 (the calibration ends on day 272)
    assert table.loc[table.index < cal, "cum_actual"].iloc[-1] <= cdnow["frequency"].sum()
    assert table.loc[table.index >= cal, "cum_actual"].iloc[0] >= cdnow["frequency"].sum()
    # model total at the end: sum over customers of E[X(t_i)], t_i = time from first purchase to the end
    end = (pd.Timestamp("1998-06-30") - cdnow["first_purchase"]).dt.days.to_numpy() / 7
    t_u, counts = np.unique(end, return_counts=True)
    total = float(np.sum(counts * bg_map.expected_purchases_new(t_u).values[0, 0]))
    assert table["cum_expected"].iloc[-1] == pytest.approx(total, rel=1e-9)
    assert (table["cum_pi_lower"] <= table["cum_expected"]).all()
    assert (table["cum_expected"] <= table["cum_pi_upper"]).all()
    np.testing.assert_allclose(table["expected"].cumsum(), table["cum_expected"], rtol=1e-9)


def test_tracking_is_reproducible_with_a_seed(bg_map, cdnow, transactions):
    a = plotting.tracking_data(bg_map, transactions, cdnow, n_sims=10, seed=5)
    b = plotting.tracking_data(bg_map, transactions, cdnow, n_sims=10, seed=5)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("cumulative", [True, False])
def test_tracking_plot_lines_and_bands(fitted, cdnow, transactions, cumulative):
    method, bg, _ = fitted
    ax = plotting.plot_tracking(
        bg, transactions, cdnow, cumulative=cumulative, n_draws=20, n_sims=20
    )
    assert len(ax.lines) == 3  # model, actual, end of calibration
    assert len(polys(ax)) == n_bands(method)
    actual = ax.lines[1].get_ydata()
    assert len(actual) == 78
    if cumulative:
        assert np.all(np.diff(actual) >= 0)


def test_pit_histogram(scores):
    _method, sc = scores
    ax = plotting.plot_pit(sc, bins=10)
    assert len([p for p in ax.patches if p.get_height() > 0]) == 10
    heights = np.array([p.get_height() for p in ax.patches])
    assert np.mean(heights) == pytest.approx(1.0)  # a density over (0, 1)
    assert "inside their predictive interval" in ax.get_title()
    with pytest.raises(ValueError, match="observed"):
        plotting.plot_pit(sc, "clv")


# ------------------------------------------------------------------------------------------
# customers
# ------------------------------------------------------------------------------------------
def test_p_alive_matrix(fitted):
    _method, bg, _ = fitted
    ax = plotting.plot_p_alive_matrix(bg, T=39, max_frequency=10, n_recency=14)
    (image,) = [a for a in ax.get_images() if isinstance(a, AxesImage)]
    grid = np.ma.filled(image.get_array(), np.nan)
    assert grid.shape == (11, 14)
    assert grid[0, 0] == pytest.approx(1.0)  # no repeat purchase: certainly alive
    assert np.isnan(grid[0, 1:]).all()  # impossible cells are blank
    assert np.all(np.diff(grid[1:], axis=1) > 0)  # more recent purchase: more likely alive
    # one cell against the model's own per-customer method
    one = pd.DataFrame({"frequency": [4], "recency": [3.0 * 39 / 13], "T": [39.0]}, index=["c"])
    assert grid[4, 3] == pytest.approx(float(bg.p_alive(one).mean()), rel=1e-9)


def test_p_alive_matrix_interval_stats(fitted):
    method, bg, _ = fitted
    if method == "map":
        with pytest.raises(ValueError, match="nuts"):
            plotting.plot_p_alive_matrix(bg, stat="width")
        return
    ax = plotting.plot_p_alive_matrix(bg, stat="width", max_frequency=5, n_recency=5)
    grid = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
    assert np.nanmin(grid) >= 0 and np.nanmax(grid) > 0


def test_expected_purchases_matrix(fitted):
    _method, bg, _ = fitted
    ax = plotting.plot_expected_purchases_matrix(bg, 10, T=39, max_frequency=6, n_recency=7)
    grid = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
    one = pd.DataFrame({"frequency": [6], "recency": [39.0], "T": [39.0]}, index=["c"])
    assert grid[6, 6] == pytest.approx(float(bg.expected_purchases(10, one).mean()), rel=1e-9)
    assert np.all(np.diff(grid[1:, -1]) > 0)  # recent buyers: more past purchases, more future ones


def test_customer_history(fitted, cdnow, transactions):
    method, bg, _ = fitted
    cid = cdnow.index[cdnow["frequency"] == 5][0]
    ax = plotting.plot_customer_history(
        bg,
        transactions,
        cid,
        observation_end="1997-09-30",
        calibration_end="1997-09-30",
        n_draws=None,
    )
    (purchases,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(purchases.get_segments()) == 1 + 5  # first purchase and five repeats
    assert len(polys(ax)) == (0 if method == "map" else 1)
    line = ax.lines[0].get_ydata()
    assert np.all((line >= 0) & (line <= 1))
    # at the end of calibration the line equals the customer's P(alive) from the RFM table
    assert line[-1] == pytest.approx(float(bg.p_alive(cdnow.loc[[cid]]).mean()), rel=1e-6)


# ------------------------------------------------------------------------------------------
# CLV
# ------------------------------------------------------------------------------------------
def test_clv_distribution(scores):
    _method, sc = scores
    ax = plotting.plot_clv_distribution(sc, bins=25)
    assert len(ax.patches) == 25
    total = sum(p.get_height() for p in ax.patches)
    above = (sc.customers["clv_mean"] > ax.get_xlim()[1]).sum()
    assert total + above == len(sc.customers)
    assert ax.lines[0].get_xdata()[0] == pytest.approx(sc.customers["clv_mean"].mean())


def test_clv_distribution_by_group(scores, cdnow):
    _method, sc = scores
    groups = pd.Series(np.where(cdnow["frequency"] > 0, "repeat", "one-off"), index=cdnow.index)
    ax = plotting.plot_clv_distribution(sc, groups=groups)
    assert len(ax.patches) == 2  # one outlined histogram per group


def test_segment_totals(scores):
    method, sc = scores
    ax = plotting.plot_segment_totals(sc, "group")
    table = sc.segments["group"]
    assert [p.get_width() for p in ax.patches] == pytest.approx(table["clv_total_mean"].tolist())
    assert len(errorbars(ax)) == n_bands(method)
    ax = plotting.plot_segment_totals(sc, "group", per_customer=True)
    assert len(errorbars(ax)) == (0 if method == "map" else 1)
    with pytest.raises(ValueError, match="available"):
        plotting.plot_segment_totals(sc, "channel")


def test_interval_kinds_shows_wider_predictive_intervals(scores):
    method, sc = scores
    ax = plotting.plot_interval_kinds(sc, "purchases", n=6)
    bars = errorbars(ax)
    assert len(bars) == n_bands(method)
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert len(shown) == 6
    rows = sc.customers.loc[shown]
    # the outcome's range is at least as wide as the expectation's, and wider for someone
    pi = rows["purchases_pi_upper"] - rows["purchases_pi_lower"]
    ci = rows["purchases_ci_upper"] - rows["purchases_ci_lower"]
    if method == "map":  # a point estimate has no credible interval to show
        assert ci.isna().all() and (pi > 0).any()
        return
    assert (pi >= ci - 1e-6).all() and (pi > ci).any()


# ------------------------------------------------------------------------------------------
# parameters and sampler
# ------------------------------------------------------------------------------------------
def test_posteriors(fitted):
    method, bg, _ = fitted
    axes = plotting.plot_posteriors(bg, reference={"r": 0.2426})
    assert len(axes) == 4
    for ax in axes:
        assert len(polys(ax)) == 1
    assert len(axes[0].lines) == 3  # density, mean, reference
    if method == "map":
        # Laplace interval: mode +- 1.645 sd
        r = float(bg.draws()["r"].ravel()[0])
        sd = bg.fit_info_["laplace_sd"]["r"]
        band = polys(axes[0])[0].get_paths()[0].vertices[:, 0]
        assert band.min() == pytest.approx(r - 1.645 * sd, abs=8 * sd / 200 + 1e-3 * sd)


def test_trace(fitted):
    method, bg, _ = fitted
    if method == "map":
        with pytest.raises(ValueError, match="method='nuts'"):
            plotting.plot_trace(bg)
        return
    axes = plotting.plot_trace(bg)
    assert axes.shape == (4, 2)
    assert len(axes[0, 1].lines) >= 2  # one trace per chain


def test_plots_refuse_wrong_or_unfitted_models(gg_map):
    from clvbayes.models import NotFittedError, ParetoNBDModel

    for plot in (plotting.plot_frequency_ppc, plotting.plot_p_alive_matrix):
        with pytest.raises(
            TypeError,
            match=r"needs a fitted continuous-time purchase model: one of BetaGeoModel \(bgnbd\), "
            r"ModifiedBetaGeoModel \(mbgnbd\), ParetoNBDModel \(pnbd\); got GammaGammaModel\. "
            r"For any model, plot the output of clvbayes.predict.score_customers",
        ):
            plot(gg_map)
    with pytest.raises(NotFittedError, match="fit"):
        plotting.plot_p_alive_matrix(ParetoNBDModel())


# ------------------------------------------------------------------------------------------
# every registered purchase model: each model plot draws finite numbers from the model's own
# formulas (MAP: checked against the model's prediction methods; Laplace: bands drawn)
# ------------------------------------------------------------------------------------------
def test_every_registered_purchase_model_is_covered():
    """The parametrisation below is the registry: a new purchase model gets these tests."""
    assert set(PURCHASE_KEYS) >= {"bgnbd", "mbgnbd", "pnbd"}
    for key, (cls, _reason) in purchase_model_candidates().items():
        assert cls is not None, f"purchase model {key} does not import"
        assert cls._math is not None and len(cls.param_names) > 0


def test_frequency_ppc_every_purchase_model(purchase_fit, cdnow):
    method, model = purchase_fit
    ax = plotting.plot_frequency_ppc(model, max_frequency=K, n_draws=10, n_sims=20)
    heights = np.array([p.get_height() for p in ax.patches])
    assert len(heights) == 2 * (K + 1) and np.isfinite(heights).all()
    assert heights[K + 1 :].sum() == pytest.approx(len(cdnow), rel=1e-9)
    assert len(errorbars(ax)) == n_bands(method)


def test_calibration_holdout_every_purchase_model(purchase_fit, cdnow):
    method, model = purchase_fit
    ax = plotting.plot_calibration_holdout(model, cdnow, max_frequency=K, n_draws=10, n_sims=20)
    model_line, _actual = ax.lines
    assert np.isfinite(model_line.get_ydata()).all() and len(model_line.get_ydata()) == K + 1
    assert len(polys(ax)) == n_bands(method)
    if method == "map":  # the plotted means are the model's own predictions
        group = cdnow["frequency"].clip(upper=K).to_numpy()
        predicted = model.expected_purchases(39.0, cdnow).mean(("chain", "draw")).to_numpy()
        by_group = pd.Series(predicted).groupby(group).mean().to_numpy()
        np.testing.assert_allclose(model_line.get_ydata(), by_group, rtol=1e-9)


def test_tracking_every_purchase_model(purchase_fit, cdnow, transactions):
    method, model = purchase_fit
    table = plotting.tracking_data(model, transactions, cdnow, n_draws=10, n_sims=10)
    assert len(table) == 78 and np.isfinite(table.to_numpy(dtype=float)).all()
    assert (table["cum_pi_lower"] <= table["cum_pi_upper"]).all()
    if method == "map":  # model total at the end: sum over customers of E[X(t_i)]
        end = (pd.Timestamp("1998-06-30") - cdnow["first_purchase"]).dt.days.to_numpy() / 7
        t_u, counts = np.unique(end, return_counts=True)
        total = float(np.sum(counts * model.expected_purchases_new(t_u).values[0, 0]))
        assert table["cum_expected"].iloc[-1] == pytest.approx(total, rel=1e-9)
        # the simulated cohort scatters around the expectation
        assert table["cum_pi_lower"].iloc[-1] < total < table["cum_pi_upper"].iloc[-1]
    ax = plotting.plot_tracking(model, transactions, cdnow, n_draws=10, n_sims=10)
    assert len(ax.lines) == 3 and len(polys(ax)) == n_bands(method)


def test_customer_matrices_every_purchase_model(purchase_fit):
    method, model = purchase_fit
    stat = "mean" if method == "map" else "width"
    ax = plotting.plot_p_alive_matrix(
        model, T=39, max_frequency=6, n_recency=5, stat=stat, n_draws=10
    )
    grid = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
    valid = np.isfinite(grid)
    assert valid[1:].all() and valid[0, 0] and not valid[0, 1:].any()
    assert ((grid[valid] >= 0) & (grid[valid] <= 1)).all()
    if method == "map":
        one = pd.DataFrame({"frequency": [4], "recency": [39.0 / 2], "T": [39.0]}, index=["c"])
        assert grid[4, 2] == pytest.approx(float(model.p_alive(one).mean()), rel=1e-9)
    ax = plotting.plot_expected_purchases_matrix(
        model, 10, T=39, max_frequency=6, n_recency=5, n_draws=10
    )
    grid = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
    assert (grid[np.isfinite(grid)] >= 0).all() and np.isfinite(grid[1:]).all()
    assert np.all(np.diff(grid[1:, -1]) > 0)  # recent buyers: more past purchases, more future


def test_customer_history_every_purchase_model(purchase_fit, cdnow, transactions):
    method, model = purchase_fit
    cid = cdnow.index[cdnow["frequency"] == 5][0]
    ax = plotting.plot_customer_history(
        model, transactions, cid, observation_end="1997-09-30", n_draws=10, n_points=50
    )
    line = ax.lines[0].get_ydata()
    assert np.all((line >= 0) & (line <= 1)) and len(polys(ax)) == n_bands(method) - 1
    if method == "map":
        assert line[-1] == pytest.approx(float(model.p_alive(cdnow.loc[[cid]]).mean()), rel=1e-6)


def test_parameter_plots_every_purchase_model(purchase_fit):
    method, model = purchase_fit
    axes = plotting.plot_posteriors(model)
    assert [ax.get_title().split()[0] for ax in axes] == list(model.param_names)
    for ax in axes:
        assert len(polys(ax)) == 1 and np.isfinite(ax.lines[0].get_ydata()).all()
    if method == "laplace":
        assert plotting.plot_trace(model).shape == (len(model.param_names), 2)
