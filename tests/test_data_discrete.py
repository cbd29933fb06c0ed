"""Tests of the discrete-time data layer (clvbayes.data.discrete): opportunity grids, holdout,
merging within an opportunity, the compressed form, and every error message."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clvbayes.data.discrete import summarize_opportunities, validate_discrete_rfm
from clvbayes.errors import DataError, DataWarning
from clvbayes.math import bgbb


@pytest.fixture
def tx():
    return pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "a", "c"],
            "date": ["2020-03-01", "2020-06-01", "2022-05-01", "2021-01-05", "2023-02-01",
                     "2023-05-05"],
        }
    )  # fmt: skip


def _cols(df):
    return df[["frequency", "recency", "periods"]].to_numpy().tolist()


def test_yearly_grid(tx):
    df = summarize_opportunities(tx, "year")
    assert _cols(df) == [[2, 3, 3], [0, 0, 2], [0, 0, 0]]
    assert df.index.tolist() == ["a", "b", "c"] and df.index.name == "customer_id"
    assert str(df["first_opportunity"].iloc[0].date()) == "2020-01-01"
    a = df.attrs
    assert a["time_unit"] == "opportunities" and a["opportunity_grid"] == "year"
    assert a["n_transactions"] == 6 and a["n_occasions"] == 5 and a["n_transactions_merged"] == 1
    assert a["calibration_end"] == "2023" and a["n_customers_periods0"] == 1
    assert all(df[c].dtype == np.int64 for c in ("frequency", "recency", "periods"))


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ("quarter", [[3, 12, 13], [0, 0, 9], [0, 0, 0]]),
        ("month", [[3, 35, 38], [0, 0, 28], [0, 0, 0]]),
        ("week", [[3, 153, 166], [0, 0, 121], [0, 0, 0]]),
    ],
)
def test_calendar_grids(tx, grid, expected):
    assert _cols(summarize_opportunities(tx, grid)) == expected


def test_weeks_run_monday_to_sunday():
    t = pd.DataFrame({"customer_id": ["a", "a", "a"],
                      "date": ["2024-01-07", "2024-01-08", "2024-01-14"]})  # fmt: skip
    # Sunday 7th ends week 0; Monday 8th and Sunday 14th are the same next week
    df = summarize_opportunities(t, "week")
    assert _cols(df) == [[1, 1, 1]] and df.attrs["n_transactions_merged"] == 1


def test_explicit_dates(tx):
    df = summarize_opportunities(tx, ["2020-01-01", "2021-01-01", "2022-03-01"])
    assert _cols(df) == [[1, 2, 2], [0, 0, 1], [0, 0, 0]]
    assert df.attrs["opportunity_grid"] == "explicit"
    assert df.attrs["opportunity_dates"] == ["2020-01-01", "2021-01-01", "2022-03-01"]
    assert df.attrs["calibration_end"] == "2022-03-01"


def test_holdout_split(tx):
    with pytest.warns(DataWarning, match="1 customer.*first transaction after the calibration"):
        df = summarize_opportunities(tx, "year", calibration_end="2022-01-01")
    assert _cols(df) == [[1, 2, 2], [0, 0, 1]]
    assert df["frequency_holdout"].tolist() == [1, 0]
    assert df["periods_holdout"].tolist() == [1, 1]
    assert df.attrs["n_customers_first_seen_in_holdout"] == 1
    assert df.attrs["observation_end"] == "2023" and df.attrs["n_periods_holdout"] == 1
    # an explicit, later observation_end lengthens the holdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        df = summarize_opportunities(tx, "year", calibration_end="2022-12-31",
                                     observation_end="2025-06-30")  # fmt: skip
    assert df["periods_holdout"].tolist() == [3, 3]


def test_round_trip_of_simulated_histories():
    rng = np.random.default_rng(0)
    sim = bgbb.simulate(rng, 1.2, 0.75, 0.66, 2.8, np.full(300, 6), n_holdout=3)
    rows = []
    for c in range(300):
        rows.append((f"c{c}", "1995-05-01"))
    # re-simulate the opportunities of each customer consistently with (x, t_x): the last
    # repeat at t_x, the others at distinct earlier opportunities
    for c in range(300):
        x, t_x = int(sim["frequency"][c]), int(sim["recency"][c])
        if x:
            others = rng.choice(np.arange(1, t_x), size=x - 1, replace=False) if x > 1 else []
            for t in [*others, t_x]:
                rows.append((f"c{c}", f"{1995 + int(t)}-03-15"))
                rows.append((f"c{c}", f"{1995 + int(t)}-11-15"))  # a second gift that year
    t = pd.DataFrame(rows, columns=["customer_id", "date"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        df = summarize_opportunities(t, "year", calibration_end="2001-12-31",
                                     observation_end="2004-12-31")  # fmt: skip
    order = np.argsort([f"c{c}" for c in range(300)])
    np.testing.assert_array_equal(df["frequency"], sim["frequency"][order])
    np.testing.assert_array_equal(df["recency"], sim["recency"][order])
    assert (df["periods"] == 6).all() and (df["periods_holdout"] == 3).all()
    assert df.attrs["n_transactions_merged"] == int(sim["frequency"].sum())
    assert validate_discrete_rfm(df).equals(df)


def test_compressed_form():
    comp = pd.DataFrame({"frequency": [0, 2], "recency": [0, 3], "periods": [6, 6],
                         "weights": [2, 1]})  # fmt: skip
    df = validate_discrete_rfm(comp)
    assert df.index.tolist() == ["0-0", "0-1", "1-0"]
    assert _cols(df) == [[0, 0, 6], [0, 0, 6], [2, 3, 6]]
    assert "weights" not in df.columns
    assert df.attrs["time_unit"] == "opportunities" and df.attrs["compressed_rows"] == 2


# ------------------------------------------------------------------ errors
def test_grid_errors(tx):
    with pytest.raises(DataError, match="Unknown opportunity grid 'yearly'; use one of 'year'"):
        summarize_opportunities(tx, "yearly")
    with pytest.raises(DataError, match=r"strictly increasing.*date 1 \(2020-01-01\)"):
        summarize_opportunities(tx, ["2021-01-01", "2020-01-01"])
    with pytest.raises(DataError, match="list of opportunity dates is empty"):
        summarize_opportunities(tx, [])
    with pytest.raises(DataError, match="could not be read as dates"):
        summarize_opportunities(tx, ["not a date"])
    with pytest.raises(DataError, match="calendar dates \\(midnight\\)"):
        summarize_opportunities(tx, ["2020-01-01 12:00"])
    with pytest.raises(DataError, match="timezone-aware"):
        summarize_opportunities(tx, [pd.Timestamp("2020-01-01", tz="UTC")])
    with pytest.raises(
        DataError, match=r"Column 'date' has 2 rows with transactions before the first "
        r"opportunity date 2021-01-01 \(first customer ids: 'a'\).*Rows \(counting from 0\): 0, 1"
    ):  # fmt: skip
        summarize_opportunities(tx, ["2021-01-01"])


def test_end_errors(tx):
    with pytest.raises(DataError, match="observation_end was given without calibration_end"):
        summarize_opportunities(tx, "year", observation_end="2023-12-31")
    with pytest.raises(DataError, match="before the first transaction's \\(2020\\)"):
        summarize_opportunities(tx, "year", calibration_end="2019-06-01")
    with pytest.raises(DataError, match="not before the last transaction opportunity \\(2023\\)"):
        summarize_opportunities(tx, "year", calibration_end="2023-06-01")
    with pytest.raises(DataError, match="transactions after the opportunity of observation_end"):
        summarize_opportunities(tx, "year", calibration_end="2021-06-01",
                                observation_end="2022-06-01")  # fmt: skip
    with pytest.raises(DataError, match="is a word, not a date"):
        summarize_opportunities(tx, "year", calibration_end="today")


def test_validate_errors():
    good = pd.DataFrame({"frequency": [0, 2], "recency": [0, 3], "periods": [6, 6]},
                        index=pd.Index(["a", "b"], name="customer_id"))  # fmt: skip
    with pytest.raises(DataError, match="Missing column\\(s\\) 'periods'"):
        validate_discrete_rfm(good.drop(columns="periods"))
    weeks = good.copy()
    weeks.attrs["time_unit"] = "weeks"
    with pytest.raises(DataError, match="attrs\\['time_unit'\\] is 'weeks'"):
        validate_discrete_rfm(weeks)
    with pytest.raises(DataError, match="empty"):
        validate_discrete_rfm(good.iloc[:0])
    with pytest.raises(DataError, match="duplicated customer id \\(first customer ids: 'a'\\)"):
        validate_discrete_rfm(good.set_axis(["a", "a"]))
    cases = [
        ({"frequency": [0, 1.5]}, "Column 'frequency' has 1 row with values that are not whole"),
        ({"periods": [6, np.nan]}, "Column 'periods' has 1 row with values"),
        ({"recency": [0, -1]}, "Column 'recency' has 1 row with values"),
        ({"recency": [0, 7]}, "Column 'recency' has 1 row with recency > periods \\(first "
                              "customer ids: 'b'\\)"),
        ({"frequency": [0, 4]}, "Column 'frequency' has 1 row with frequency > recency"),
        ({"recency": [2, 3]}, "recency != 0 exactly when frequency == 0"),
    ]  # fmt: skip
    for change, msg in cases:
        with pytest.raises(DataError, match=msg):
            validate_discrete_rfm(good.assign(**change))
    hold = good.assign(frequency_holdout=[0, 3], periods_holdout=[2, 2])
    with pytest.raises(DataError, match="frequency_holdout > periods_holdout"):
        validate_discrete_rfm(hold)
    with pytest.raises(DataError, match="'weights' is 0 in every row"):
        validate_discrete_rfm(good.assign(weights=[0, 0]))
    with pytest.raises(DataError, match="Column 'weights' has 1 row"):
        validate_discrete_rfm(good.assign(weights=[1, -2]))


def test_monetary_value_is_the_mean_of_the_repeat_opportunities():
    """Amounts of one opportunity add up; the first opportunity and the holdout are left out."""
    tx = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "a", "b", "c", "c"],
        "date": ["2020-03-01", "2020-04-01", "2021-06-01", "2021-07-01", "2022-05-01",
                 "2021-01-05", "2020-02-02", "2022-02-02"],
        "amount": [10.0, 5.0, 20.0, 4.0, 7.0, 3.0, 8.0, 9.0],
    })  # fmt: skip
    full = summarize_opportunities(tx, "year", monetary_value_col="amount")
    assert full.loc["a", "frequency"] == 2 and full.loc["a", "monetary_value"] == (24.0 + 7.0) / 2
    assert full.loc["b", "monetary_value"] == 0.0 and full.loc["c", "monetary_value"] == 9.0
    cal = summarize_opportunities(
        tx, "year", monetary_value_col="amount", calibration_end="2021-12-31"
    )
    assert cal.loc["a", "monetary_value"] == 24.0 and cal.loc["c", "monetary_value"] == 0.0
    assert "monetary_value" not in summarize_opportunities(tx, "year").columns
    bad = tx.assign(amount=[10.0, -5.0, 20.0, 4.0, 7.0, 3.0, 8.0, 9.0])
    with pytest.raises(DataError, match="negative"):
        summarize_opportunities(bad, "year", monetary_value_col="amount")
