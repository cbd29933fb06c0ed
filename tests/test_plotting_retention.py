"""Retention plots: the empirical survival (Kaplan-Meier) against FH2007's published curve,
and every plot drawing its bands (credible darker, predictive lighter; none for MAP)."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from clvbayes import plotting
from clvbayes.datasets.subscriptions import load_fh2007_subscribers, load_fh2007_survival
from clvbayes.models.bdw import BetaDiscreteWeibullModel
from clvbayes.models.sbg import ShiftedBetaGeometricModel
from clvbayes.predict.retention import score_subscribers


@pytest.fixture(scope="module")
def regular():
    subs = load_fh2007_subscribers()
    return subs[subs["cohort"] == "regular"]


@pytest.fixture(scope="module")
def fits(regular):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "sBG": ShiftedBetaGeometricModel().fit(regular, method="laplace", draws=300, seed=1),
            "BdW": BetaDiscreteWeibullModel().fit(regular, method="laplace", draws=300, seed=2),
        }


def _ax():
    return Figure().subplots()


def _bands(ax) -> int:
    return sum(isinstance(c, PolyCollection) for c in ax.collections)


def test_empirical_survival_is_the_published_curve():
    table = load_fh2007_survival()
    subs = load_fh2007_subscribers(calibration_periods=None)
    for cohort in ("high_end", "regular"):
        emp = plotting.empirical_survival(subs[subs["cohort"] == cohort])
        assert emp.index.tolist() == list(range(13))
        assert emp["survival"].to_numpy() == pytest.approx(table[cohort].to_numpy() / 100)
        assert emp.at[0, "at_risk"] == 1000 and np.isnan(emp.at[0, "retention"])


def test_empirical_survival_counts_censored_subscribers_while_observed():
    # 2 cancel at their first due date, 1 active with 0 renewals (not yet at risk), 2 renewed
    # once and are active, 1 renewed once and cancelled at the second due date
    t = pd.DataFrame({"periods": [0, 0, 0, 1, 1, 1], "churned": [1, 1, 0, 0, 0, 1]},
                     index=list("abcdef"))  # fmt: skip
    emp = plotting.empirical_survival(t)
    assert emp["at_risk"].tolist() == [6, 5, 1]
    assert emp["lost"].tolist() == [0, 2, 1]
    assert emp["survival"].to_numpy() == pytest.approx([1.0, 3 / 5, 0.0])


def test_survival_curves_draw_a_band_per_model_and_the_actuals(fits, regular):
    ax = plotting.plot_survival_curves(fits, regular, t_max=12, ax=_ax())
    assert _bands(ax) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("credible interval" in s for s in labels) and any("actual" in s for s in labels)
    actual = load_fh2007_survival().set_index("year")["regular"] / 100
    ax = plotting.plot_survival_curves(fits["sBG"], actual=actual, calibration_end=7, ax=_ax())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("after the calibration data" in s for s in labels)


def test_map_fit_has_no_band(regular):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        point = ShiftedBetaGeometricModel().fit(regular, method="map")
    ax = plotting.plot_survival_curves({"sBG": point}, regular, ax=_ax())
    assert _bands(ax) == 0
    assert any("MAP" in t.get_text() for t in ax.get_legend().get_texts())


def test_retention_rates_draw_bands_and_observed_rates(fits, regular):
    ax = plotting.plot_retention_rates(fits, regular, ax=_ax())
    assert _bands(ax) == 2
    dots = [c for c in ax.collections if not isinstance(c, PolyCollection)]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == 7  # years 1..7 observed


def test_renewal_forecast_from_scores_and_from_a_table(fits):
    table = pd.DataFrame({"periods": np.repeat([1, 4, 7], 50), "churned": 0, "price": 10.0,
                          "plan": np.repeat(["a", "b", "c"], 50)},
                         index=[f"s{i}" for i in range(150)])  # fmt: skip
    scores = score_subscribers(table, fits["sBG"], horizon=6, by=["plan"], seed=1)
    ax = plotting.plot_renewal_forecast(scores, ax=_ax())
    assert _bands(ax) == 2  # predictive and credible
    ax = plotting.plot_renewal_forecast(scores, "active", grouping="plan", segment="b", ax=_ax())
    assert _bands(ax) == 2 and "plan b" in ax.get_title()
    long = scores.cohorts["plan"].reset_index().rename(columns={"plan": "group"})
    long.insert(0, "grouping", "plan")
    ax = plotting.plot_renewal_forecast(long, grouping="plan", segment="a", ax=_ax())
    assert len(ax.lines[0].get_xdata()) == 6
    no_price = score_subscribers(table.drop(columns="price"), fits["sBG"], horizon=3)
    with pytest.raises(ValueError, match="no price column"):
        plotting.plot_renewal_forecast(no_price, ax=_ax())


def test_holdout_survivors_plot():
    rows = []
    for model, shift in (("sBG", -5.0), ("BdW", 2.0)):
        for k in (1, 2, 3):
            mean = 100 - 10 * k + shift
            rows.append({"model": model, "k": k, "actual_active": 100 - 10 * k,
                         "active_mean": mean, "active_ci_lower": mean - 2,
                         "active_ci_upper": mean + 2, "active_pi_lower": mean - 6,
                         "active_pi_upper": mean + 6, "complete": k < 3})  # fmt: skip
    ax = plotting.plot_holdout_survivors(pd.DataFrame(rows), ax=_ax())
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "actual" in labels and any("not yet due" in s for s in labels)
    assert sum("predictive interval" in s for s in labels) == 2
