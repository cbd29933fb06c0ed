"""clvbayes.plotting.discrete: BG/BB's P(alive) by (frequency, recency), with real bands.

Laplace fits give distinct posterior draws, so a collapsed interval (pymc-marketing's BG/BB
issue #2919: right means, zero-width intervals) would show here as zero widths.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure

from clvbayes import plotting
from clvbayes.datasets import load_donations_summary
from clvbayes.models.bgbb import BetaGeoBetaBinomModel

#: FHS 2010 (the issue's reference values): P(alive at the next opportunity, n + 1 = 7) at
#: the MLE for (x, t_x) = (0, 0), (2, 4), (6, 6).
FHS_P_ALIVE_NEXT = {(0, 0): 0.1081, (2, 4): 0.5897, (6, 6): 0.9304}


@pytest.fixture(scope="module")
def laplace():
    return BetaGeoBetaBinomModel().fit(load_donations_summary(), method="laplace", draws=400,
                                       seed=1)  # fmt: skip


@pytest.fixture(scope="module")
def laplace_tenth():
    """The same model on a tenth of the donors (every history's weight / 10)."""
    table = load_donations_summary(compressed=True)
    table["weights"] = np.maximum(table["weights"] // 10, 1)
    from clvbayes.data.discrete import validate_discrete_rfm

    return BetaGeoBetaBinomModel().fit(validate_discrete_rfm(table), method="laplace", draws=400,
                                       seed=1)  # fmt: skip


def _axes(ncols=2):
    return Figure(figsize=(10, 4)).subplots(1, ncols)


def test_history_grid_covers_every_history_with_finite_bands(laplace):
    draws = laplace.draws()
    assert all(np.unique(v).size > 100 for v in draws.values())  # distinct draws
    t = plotting.history_grid(laplace)
    assert len(t) == 22 and (t["periods"] == 6).all()  # (0, 0) and 1 <= x <= t_x <= 6
    assert ((t["frequency"] <= t["recency"]) & ((t["frequency"] == 0) == (t["recency"] == 0))).all()
    assert t["n_customers"].sum() == 11_104 and (t["n_customers"] > 0).all()
    for c in ("mean", "lower", "upper", "width"):
        assert np.isfinite(t[c]).all(), c
    assert ((t["lower"] <= t["mean"]) & (t["mean"] <= t["upper"])).all()
    inner = t[t["recency"] < 6]
    assert (inner["width"] > 1e-3).all()  # a band, not a point
    # active at n for sure when the last transaction is at n
    np.testing.assert_allclose(t.loc[t["recency"] == 6, "mean"], 1.0, atol=1e-12)
    assert t.attrs["n_draws"] == 200 and t.attrs["quantity"] == "p_alive"


def test_next_opportunity_matches_the_published_table(laplace):
    t = plotting.history_grid(laplace, s=1).set_index(["frequency", "recency"])
    for cell, published in FHS_P_ALIVE_NEXT.items():
        assert t.loc[cell, "mean"] == pytest.approx(published, rel=0.03), cell
        assert t.loc[cell, "lower"] < published < t.loc[cell, "upper"] or cell == (6, 6)


def test_bands_widen_with_the_posterior_sd(laplace, laplace_tenth):
    """Ten times fewer donors: wider posterior, wider credible intervals in every cell."""
    full = plotting.history_grid(laplace, n_draws=None).set_index(["frequency", "recency"])
    tenth = plotting.history_grid(laplace_tenth, n_draws=None).set_index(["frequency", "recency"])
    inner = full.index.get_level_values("recency") < 6
    assert (tenth.loc[inner, "width"] > 1.5 * full.loc[inner, "width"]).all()


def test_expected_purchases_grid(laplace):
    t = plotting.history_grid(laplace, quantity="expected_purchases", n_star=10)
    direct = laplace._math.expected_purchases(
        *(laplace.draws()[p].ravel()[:, None] for p in laplace.param_names), 4, 5, 6, 10
    )
    row = t.set_index(["frequency", "recency"]).loc[(4, 5)]
    assert row["lower"] < np.mean(direct) < row["upper"]
    assert (t["mean"] >= 0).all() and (t["mean"] <= 10).all()
    with pytest.raises(ValueError, match="needs n_star"):
        plotting.history_grid(laplace, quantity="expected_purchases")


def test_plot_draws_mean_and_width_panels(laplace):
    axes = plotting.plot_history_grid(laplace, axes=_axes())
    assert axes.shape == (2,)
    mean, width = (ax.images[0].get_array() for ax in axes)
    assert mean.shape == (7, 7) and width.shape == (7, 7)
    cells = ~np.ma.getmaskarray(np.ma.masked_invalid(mean))
    assert cells.sum() == 22 and np.isfinite(np.asarray(width)[cells]).all()
    assert (np.asarray(width)[cells] >= 0).all() and np.nanmax(width) > 0.01
    texts = [t.get_text() for t in axes[0].texts]
    assert len(texts) == 22 and all("[" in t for t in texts)  # "mean [lower, upper]"
    assert "credible interval" in axes[1].get_title()


def test_map_fit_shows_no_interval():
    model = BetaGeoBetaBinomModel().fit(load_donations_summary(), method="map")
    t = plotting.history_grid(model)
    assert t["width"].isna().all() and np.isfinite(t["mean"]).all()
    axes = plotting.plot_history_grid(model, axes=_axes())
    assert not axes[1].images and "no credible" in axes[1].texts[0].get_text()
    assert all("[" not in t.get_text() for t in axes[0].texts)


def test_refusals(laplace, bgnbd_mle):
    with pytest.raises(TypeError, match=r"needs a fitted BetaGeoBetaBinomModel \(bgbb\)"):
        plotting.history_grid(bgnbd_mle)
    with pytest.raises(TypeError, match="plot_history_grid"):
        plotting.plot_p_alive_matrix(laplace)  # the continuous-time plot points here
    with pytest.raises(ValueError, match="n = 1,000 opportunities"):
        plotting.history_grid(laplace, n=1000)
    with pytest.raises(ValueError, match="axes must hold two"):
        plotting.plot_history_grid(laplace, axes=_axes(3))
