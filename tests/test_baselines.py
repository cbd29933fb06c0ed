"""The rules of thumb (clvbayes.baselines) against hand computations on a three-customer log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clvbayes.baselines import RULES, baseline_notes, baseline_predictions, churn_retention
from clvbayes.data import calibration_holdout_split

START = pd.Timestamp("2020-01-01")


def _log() -> pd.DataFrame:
    # day of purchase, amount; c3 buys once, on day 35
    rows = [("c1", 0, 10.0), ("c1", 14, 20.0), ("c1", 28, 30.0), ("c1", 56, 40.0),
            ("c2", 0, 5.0), ("c2", 70, 15.0), ("c3", 35, 8.0)]  # fmt: skip
    return pd.DataFrame(
        {"customer_id": [r[0] for r in rows],
         "date": [START + pd.Timedelta(days=r[1]) for r in rows],
         "amount": [r[2] for r in rows]}
    )  # fmt: skip


def _split(cal_day: int, obs_day: int) -> pd.DataFrame:
    return calibration_holdout_split(
        _log(), START + pd.Timedelta(days=cal_day), START + pd.Timedelta(days=obs_day),
        monetary_value_col="amount",
    )  # fmt: skip


@pytest.fixture
def tables():
    # calibration ends on day 70, the forecast is the next 4 weeks; previous = (42, 70]
    current = _cut(70)
    previous = _split(42, 70)
    return current, previous


def _cut(day: int) -> pd.DataFrame:
    from clvbayes.data import summarize_transactions

    return summarize_transactions(
        _log(), observation_end=START + pd.Timedelta(days=day), monetary_value_col="amount"
    )


def test_summaries_are_what_the_hand_computation_assumes(tables):
    current, previous = tables
    assert current.loc["c1", ["frequency", "recency", "T", "monetary_value"]].tolist() == [
        3,
        8,
        10,
        30,
    ]
    assert current.loc["c2", ["frequency", "recency", "T", "monetary_value"]].tolist() == [
        1,
        10,
        10,
        15,
    ]
    assert current.loc["c3", ["frequency", "recency", "T"]].tolist() == [0, 0, 5]
    assert previous["frequency_holdout"].to_dict() == {"c1": 1, "c2": 1, "c3": 0}
    assert previous["total_value_holdout"].to_dict() == {"c1": 40.0, "c2": 15.0, "c3": 0.0}


def test_aov_frequency_is_own_rate_times_horizon_times_order_value(tables):
    current, previous = tables
    b = baseline_predictions(current, previous, horizon=4.0)
    # c1: 3 repeat purchases in 10 weeks -> 1.2 in 4 weeks, worth 30 each
    np.testing.assert_allclose(b["aov_frequency_purchases"], [1.2, 0.4, 0.0])
    np.testing.assert_allclose(b["aov_frequency_revenue"], [36.0, 6.0, 0.0])


def test_historical_repeats_the_last_period(tables):
    current, previous = tables
    b = baseline_predictions(current, previous, horizon=4.0)
    np.testing.assert_allclose(b["historical_purchases"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(b["historical_revenue"], [40.0, 15.0, 0.0])


@pytest.mark.filterwarnings("ignore:1 customer")
def test_historical_counts_all_repeats_of_customers_new_in_the_last_period():
    current, previous = _cut(70), _split(30, 70)  # c3 (first on day 35) is new after day 30
    assert "c3" not in previous.index
    b = baseline_predictions(current, previous, horizon=40 / 7)
    assert b.loc["c3", "historical_purchases"] == 0.0  # its only purchase is its first


def test_churn_rate_retention_and_value(tables):
    current, previous = tables
    r = churn_retention(previous, 4.0)
    # active in (14, 42]: c1 (day 28) and c3 (first purchase, day 35); again in (42, 70]: c1
    assert r["n_active_before"] == 2
    assert r["retention"] == pytest.approx(0.5)
    assert r["churn"] == pytest.approx(0.5)
    # per active period (c1 and c2 bought in (42, 70]): 1 purchase, (40 + 15) / 2
    assert r["purchases_per_active_period"] == pytest.approx(1.0)
    assert r["value_per_active_period"] == pytest.approx(27.5)
    b = baseline_predictions(current, previous, horizon=4.0)
    # active in the last period: c1 (day 56), c2 (day 70); c3 last bought on day 35
    np.testing.assert_allclose(b["churn_rate_purchases"], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(b["churn_rate_revenue"], [13.75, 13.75, 0.0])


def test_rfm_cells_predict_the_cell_average_of_the_previous_period(tables):
    from clvbayes.segments import rfm_scores

    current, previous = tables
    b = baseline_predictions(current, previous, horizon=4.0)
    train = rfm_scores(previous)["rfm_code"]
    cell_mean = previous.groupby(train.to_numpy())["frequency_holdout"].mean()
    overall = previous["frequency_holdout"].mean()
    expected = [cell_mean.get(c, overall) for c in rfm_scores(current)["rfm_code"]]
    np.testing.assert_allclose(b["rfm_cell_purchases"], expected)


def test_rules_without_a_previous_period_are_empty_and_said_so(tables):
    current, _ = tables
    b = baseline_predictions(current, None, horizon=4.0)
    assert list(b.columns) == [f"{r}_{q}" for r in RULES for q in ("purchases", "revenue")]
    assert b["aov_frequency_purchases"].notna().all()
    for rule in RULES[1:]:
        assert b[f"{rule}_purchases"].isna().all()
    (note,) = baseline_notes(None, 4.0, "weeks")
    assert "longer than the holdout (4 weeks)" in note
    assert baseline_notes(tables[1], 4.0, "weeks") == []


def test_horizon_must_be_positive(tables):
    with pytest.raises(ValueError, match="horizon must be positive"):
        baseline_predictions(tables[0], tables[1], horizon=0.0)
