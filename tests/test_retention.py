"""score_subscribers: FH2007 projections, expectations vs simulation, calibration, errors."""

from __future__ import annotations

import os
import warnings
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest

from clvbayes.compat import posterior_from_arrays
from clvbayes.data.subscriptions import subscribers_from_survival
from clvbayes.errors import DataError
from clvbayes.math import sbg
from clvbayes.models.bdw import BetaDiscreteWeibullModel
from clvbayes.models.sbg import ShiftedBetaGeometricModel
from clvbayes.predict.retention import score_subscribers

PATH = str(
    files("clvbayes.datasets").joinpath("files", "fh2007_survival.csv")
)  # bundled copy of ../shared/data/retention
COHORTS = ("high_end_pct_surviving", "regular_pct_surviving")


def _fh2007() -> tuple[pd.DataFrame, pd.DataFrame]:
    if not os.path.exists(PATH):
        pytest.skip("fh2007_survival.csv not found")
    raw = pd.read_csv(PATH)
    subs = subscribers_from_survival(raw, period_col="year", columns=list(COHORTS),
                                     cohort_size=1000, calibration_periods=7)  # fmt: skip
    return raw, subs


def _fixed(cls, values, n=1):
    model = cls()
    model.posterior_ = posterior_from_arrays({k: np.full((1, n), v) for k, v in values.items()})
    return model


@pytest.mark.parametrize("cls", [ShiftedBetaGeometricModel, BetaDiscreteWeibullModel])
def test_fh2007_years_8_to_12_projection(cls):
    """Fit years 1..7 per cohort, project the survivors of years 8..12 (FH2007's test)."""
    raw, subs = _fh2007()
    errors = []
    for col in COHORTS:
        one = subs[subs["cohort"] == col]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls().fit(one, method="laplace", seed=1)
        res = score_subscribers(one, model, horizon=5, seed=2)
        proj = res.cohorts["all"]
        actual = raw[col].to_numpy()[8:13] * 10  # survivors of 1,000
        err = (proj["active_mean"].to_numpy() - actual) / actual
        errors.append(np.abs(err).mean())
        print(
            f"\n{cls.__name__} {col}: mean abs error {np.abs(err).mean():.1%}, by year {np.round(err, 3)}"
        )
        inside = (proj["active_pi_lower"].to_numpy() <= actual) & (
            actual <= proj["active_pi_upper"].to_numpy()
        )
        assert inside.all(), (col, proj, actual)
    assert max(errors) < 0.05


def test_expectations_agree_with_the_simulated_outcomes():
    """Per-subscriber expected renewals and cohort counts vs the predictive draws' means."""
    model = _fixed(ShiftedBetaGeometricModel, {"alpha": 0.7, "beta": 1.2})
    table = pd.DataFrame(
        {"periods": np.repeat([0, 3, 10], 2000), "churned": 0, "price": 10.0},
        index=pd.Index([f"s{i}" for i in range(6000)], name="id"),
    )
    res = score_subscribers(table, model, horizon=6, discount_rate=0.05, seed=4,
                            n_outcome_samples=20_000)  # fmt: skip
    s = res.subscribers.iloc[[0, 2000, 4000]]
    # renewals among the next 6: sum_k S(t + k) / S(t)
    for t, row in zip((0, 3, 10), s.itertuples(), strict=True):
        exact = sum(float(sbg.conditional_survival(0.7, 1.2, t, k)) for k in range(1, 7))
        assert row.renewals_mean == pytest.approx(exact, rel=1e-10)
        assert row.p_renew_mean == pytest.approx(1 - 0.7 / (0.7 + 1.2 + t), rel=1e-10)
    c = res.cohorts["all"]
    # per-draw expectation vs the simulated totals: within a few standard errors
    sims_mean = (c["active_pi_lower"] + c["active_pi_upper"]) / 2
    assert np.all(np.abs(sims_mean - c["active_mean"]) < 0.05 * c["active_mean"] + 20)
    np.testing.assert_allclose(c["revenue_mean"], 10.0 * c["active_mean"], rtol=1e-12)


def test_predictive_intervals_are_calibrated_on_simulated_subscriptions():
    """Simulate a cohort from sBG, fit by Laplace (distinct draws), forecast 6 renewals."""
    rng = np.random.default_rng(11)
    n = 3000
    theta = rng.beta(0.8, 2.5, n)
    observed_for = rng.integers(1, 15, n)  # periods observed so far
    life = rng.geometric(theta) - 1  # renewals completed before cancelling
    periods = np.minimum(life, observed_for)
    churned = (life < observed_for).astype(int)
    table = pd.DataFrame({"periods": periods, "churned": churned},
                         index=pd.Index([f"s{i}" for i in range(n)], name="id"))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ShiftedBetaGeometricModel().fit(table, method="laplace", seed=3)
    assert np.unique(model.draws()["alpha"]).size > 100
    active = churned == 0
    future = np.clip(life[active] - periods[active], 0, 6)  # renewals among the next 6
    res = score_subscribers(table, model, horizon=6, seed=5, observed={"renewals": future})
    pit = res.subscribers["renewals_pit"]
    central = float(((pit > 0.05) & (pit < 0.95)).mean())
    print(f"\nrandomised PIT coverage {central:.3f} over {active.sum()} active subscribers")
    assert 0.87 <= central <= 0.93
    assert res.subscribers["renewals_pi_covered"].mean() >= 0.87
    # the credible intervals are not collapsed: they have width and contain the truth's mean
    s = res.subscribers
    assert (s["p_renew_ci_upper"] - s["p_renew_ci_lower"] > 0).all()


def test_map_fit_gives_no_credible_interval_but_a_predictive_one():
    model = _fixed(BetaDiscreteWeibullModel, {"alpha": 0.7, "beta": 1.2, "c": 0.8})
    table = pd.DataFrame({"periods": [0, 5], "churned": [0, 0]},
                         index=pd.Index(["a", "b"], name="id"))  # fmt: skip
    res = score_subscribers(table, model, horizon=3, discount_rate=0.1, price_col=None)
    s = res.subscribers
    assert s["renewals_ci_lower"].isna().all() and s["renewals_pi_upper"].notna().all()
    assert "value_mean" not in s and not res.settings["parameter_uncertainty"]
    assert "revenue_mean" not in res.cohorts["all"]


@pytest.mark.parametrize(
    "kwargs, table_change, error, match",
    [
        ({"horizon": 0}, None, ValueError, "horizon must be a whole number of periods >= 1"),
        ({"horizon": 2.5}, None, ValueError, "horizon must be a whole number"),
        ({"horizon": 3, "discount_rate": -0.1}, None, ValueError, "discount_rate must be"),
        ({"horizon": 3, "by": "plan"}, None, DataError, r"Grouping column\(s\) \['plan'\]"),
        ({"horizon": 3}, {"churned": 1}, DataError, "No active subscriber"),
        ({"horizon": 3}, {"price": -1.0}, DataError, "'price' has 2 active subscribers"),
        ({"horizon": 3}, {"periods": 1.5}, DataError, "periods"),
    ],
)
def test_errors_name_the_problem(kwargs, table_change, error, match):
    model = _fixed(ShiftedBetaGeometricModel, {"alpha": 0.7, "beta": 1.2})
    table = pd.DataFrame({"periods": [0, 5], "churned": [0, 0], "price": [10.0, 12.0]},
                         index=pd.Index(["a", "b"], name="id"))  # fmt: skip
    for col, value in (table_change or {}).items():
        table[col] = value
    with pytest.raises(error, match=match):
        score_subscribers(table, model, **kwargs)


def test_same_seed_same_table_and_chunking_does_not_change_the_law():
    model = _fixed(ShiftedBetaGeometricModel, {"alpha": 0.7, "beta": 1.2}, n=50)
    table = pd.DataFrame({"periods": np.arange(400) % 9, "churned": 0},
                         index=pd.Index([f"s{i}" for i in range(400)], name="id"))  # fmt: skip
    a = score_subscribers(table, model, horizon=4, seed=1)
    b = score_subscribers(table, model, horizon=4, seed=1)
    pd.testing.assert_frame_equal(a.subscribers, b.subscribers)
    small = score_subscribers(table, model, horizon=4, seed=1, max_chunk_elements=2000)
    pd.testing.assert_frame_equal(a.subscribers, small.subscribers)  # per-history part
    ca, cs = a.cohorts["all"], small.cohorts["all"]
    np.testing.assert_allclose(ca["active_pi_lower"], cs["active_pi_lower"], atol=12)


@pytest.mark.parametrize("cls", [ShiftedBetaGeometricModel, BetaDiscreteWeibullModel])
def test_long_tenures_and_extreme_parameters_stay_finite(cls):
    """Tenures up to 10,000 periods, a 120-period horizon, parameters e^-4..e^4."""
    rng = np.random.default_rng(9)
    draws = {k: np.exp(rng.uniform(-4.0, 4.0, (1, 30))) for k in cls.param_names}
    if "c" in draws:
        draws["c"] = np.exp(rng.uniform(-1.5, 1.5, (1, 30)))
    model = cls()
    model.posterior_ = posterior_from_arrays(draws)
    table = pd.DataFrame({"periods": [0, 1, 100, 10_000], "churned": 0, "price": 9.99},
                         index=pd.Index(list("abcd"), name="id"))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = score_subscribers(table, model, horizon=120, discount_rate=0.01, seed=1,
                                n_outcome_samples=60)  # fmt: skip
    num = res.subscribers.select_dtypes("number").to_numpy()
    assert np.isfinite(num).all()
    assert np.isfinite(res.cohorts["all"].select_dtypes("number").to_numpy()).all()
