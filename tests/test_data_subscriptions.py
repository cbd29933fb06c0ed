"""Subscriptions data layer: calendar-period renewal counting, survival tables, every refusal."""

from __future__ import annotations

import os
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest

from clvbayes.data.subscriptions import (
    parse_period,
    subscribers_from_survival,
    summarize_subscriptions,
    validate_subscribers,
)
from clvbayes.errors import DataError, DataWarning


def table(**cols):
    base = {"customer_id": ["a", "b", "c"], "start": ["2024-01-31", "2024-01-15", "2024-03-01"],
            "end": ["2024-03-30", None, "2024-04-15"]}  # fmt: skip
    base.update(cols)
    return pd.DataFrame(base)


def summarize(df, **kw):
    kw.setdefault("as_of", "2024-06-30")
    return summarize_subscriptions(df, **kw)


def test_calendar_months_clip_to_month_length():
    df = pd.DataFrame({
        "customer_id": list("abcdefg"),
        "start": ["2024-01-31"] * 5 + ["2024-01-15", "2024-01-15"],
        # dues of a: 2024-02-29, 03-31, 04-30, 05-31, 06-30
        "end": ["2024-02-28", "2024-02-29", "2024-03-01", "2024-03-31", None, "2024-04-14", "2024-04-16"],
    })  # fmt: skip
    out = summarize(df, as_of="2024-06-29")
    assert out["periods"].tolist() == [0, 0, 1, 1, 4, 2, 3]
    assert out["churned"].tolist() == [1, 1, 1, 1, 0, 1, 1]
    # on the due date itself the active subscriber has renewed
    assert summarize(df, as_of="2024-06-30")["periods"].iloc[4] == 5
    assert out.attrs["period"] == "1 month" and out.attrs["as_of"] == "2024-06-29"


def test_weeks_years_multiples_and_plan_periods():
    df = pd.DataFrame({"customer_id": [1, 2, 3, 4], "start": ["2020-02-29"] * 4,
                       "end": [None, "2021-02-28", "2020-03-14", None],
                       "plan_period": ["year", "year", "2 weeks", "3 months"]})  # fmt: skip
    out = summarize(df, as_of="2024-03-01", period_col="plan_period")
    # yearly dues 2021-02-28, 2022-02-28, 2023-02-28, 2024-02-29; 2 weeks: 2020-03-14 (not renewed)
    assert out["periods"].tolist() == [4, 0, 0, 16]
    assert out["period"].tolist() == ["1 year", "1 year", "2 week", "3 month"]
    assert out.attrs["period"] == "mixed"
    weekly = summarize(df.drop(columns="plan_period").iloc[[0]], as_of="2020-03-21", period="week")
    assert weekly["periods"].tolist()[0] == 3


def test_optional_columns_carried_through():
    out = summarize(table(price=[9.9, 19.9, 5], plan=["s", "m", "s"], cohort=["q1"] * 3),
                    price_col="price", plan_col="plan", cohort_col="cohort")  # fmt: skip
    assert out["price"].tolist() == [9.9, 19.9, 5.0]
    assert out["plan"].tolist() == ["s", "m", "s"]
    assert out.index.name == "customer_id"


def test_end_on_start_warns():
    with pytest.warns(
        DataWarning,
        match=r"Column 'end': 1 row end on their start date \(first customer ids: 'c'\)",
    ):
        out = summarize(table(end=["2024-03-30", None, "2024-03-01"]))
    assert out.loc["c", "periods"] == 0 and out.loc["c", "churned"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"customer_id": ["a", "a", "c"]},
            r"Column 'customer_id' has 2 rows with a repeated subscription id \(first customer ids: 'a'\)",
        ),
        (
            {"end": ["2023-12-01", None, None]},
            r"Column 'end' has 1 row with an end date before the start date \(column 'start'\)",
        ),
        (
            {"start": ["2024-01-31", "2024-07-15", "2024-03-01"]},
            r"Column 'start' has 1 row with a start date after as_of \(2024-06-30\)",
        ),
        (
            {"end": ["2024-08-01", None, None]},
            r"Column 'end' has 1 row with an end date after as_of \(2024-06-30\).*not yet observed",
        ),
        (
            {"start": ["2024-01-31", None, "2024-03-01"]},
            r"Column 'start' has 1 row with a missing start date",
        ),
        (
            {"start": ["2024-01-31", "soon", "2024-03-01"]},
            r"Column 'start' has 1 row with unparseable dates",
        ),
    ],
)
def test_table_refusals(kwargs, message):
    with pytest.raises(DataError, match=message):
        summarize(table(**kwargs))


def test_option_refusals():
    with pytest.raises(DataError, match=r"Missing column\(s\) 'ends' in the subscriptions table"):
        summarize(table(), end_col="ends")
    with pytest.raises(
        DataError, match=r"Unknown renewal period 'fortnight'; use one of 'day', 'week'"
    ):
        summarize(table(), period="fortnight")
    with pytest.raises(
        DataError, match=r"Column 'p' has 1 row with an unknown billing period 'monthly'"
    ):
        summarize(table(p=["month", "monthly", "month"]), period_col="p")
    with pytest.raises(DataError, match=r"as_of='later' is not a date"):
        summarize(table(), as_of="later")
    with pytest.raises(
        DataError, match=r"Column 'price' has 1 row with a negative price per period"
    ):
        summarize(table(price=[1, -2, 3]), price_col="price")
    tz = table(start=pd.to_datetime(["2024-01-31", "2024-01-15", "2024-03-01"]).tz_localize("UTC"))
    with pytest.raises(DataError, match=r"time-zone-aware timestamps"):
        summarize(tz)
    assert parse_period("3 Months") == (3, "month")


def test_blank_end_strings_are_active():
    out = summarize(table(end=["", "  ", None]))
    assert out["churned"].tolist() == [0, 0, 0]


PATH = str(
    files("clvbayes.datasets").joinpath("files", "fh2007_survival.csv")
)  # bundled copy of ../shared/data/retention


def test_fh2007_survival_expansion():
    if not os.path.exists(PATH):
        pytest.skip("fh2007_survival.csv not found")
    df = pd.read_csv(PATH)
    subs = subscribers_from_survival(df, period_col="year", cohort_size=1000, calibration_periods=7,
                                     columns=["high_end_pct_surviving", "regular_pct_surviving"])  # fmt: skip
    reg = subs[subs["cohort"] == "regular_pct_surviving"]
    assert len(reg) == 1000
    assert int((reg["churned"] == 0).sum()) == 241 and set(
        reg.loc[reg["churned"] == 0, "periods"]
    ) == {7}
    assert int(((reg["periods"] == 0) & (reg["churned"] == 1)).sum()) == 369
    assert subs.attrs == {"period": "year", "calibration_periods": 7}
    assert len(subscribers_from_survival(df, period_col="year", columns=["regular_pct_surviving"],
                                         cohort_size=1000)) == 1000  # fmt: skip


@pytest.mark.parametrize(
    "frame, kwargs, message",
    [
        (
            {"y": [0, 1, 2], "n": [100, 60.5, 40]},
            {"cohort_size": 100},
            r"Column 'n' does not give whole non-negative numbers",
        ),
        ({"y": [0, 1, 2], "n": [100, 60, 70]}, {}, r"Column 'n' increases between periods"),
        (
            {"y": [0, 1, 2], "n": [90, 60, 40]},
            {"cohort_size": 100},
            r"Column 'n' starts at 90.0, not 100",
        ),
        (
            {"y": [0, 2, 1], "n": [100, 60, 40]},
            {},
            r"Column 'y' must count periods 0, 1, 2, \.\.\. in order",
        ),
        (
            {"y": [0, 1, 2], "n": [100, 60, 40]},
            {"calibration_periods": 5},
            r"calibration_periods=5 must be a whole number from 1 to 2",
        ),
        (
            {"y": [0, 1, 2], "n": [100, None, 40]},
            {},
            r"Column 'n' has missing or non-numeric values",
        ),
    ],
)
def test_survival_refusals(frame, kwargs, message):
    with pytest.raises(DataError, match=message):
        subscribers_from_survival(pd.DataFrame(frame), period_col="y", columns=["n"], **kwargs)


def test_validate_subscribers():
    ok = validate_subscribers(pd.DataFrame({"periods": [0.0, 3.0], "churned": [True, False]}))
    assert ok["periods"].dtype == np.int64 and ok["churned"].tolist() == [1, 0]
    with pytest.raises(
        DataError, match=r"Column 'periods' has 1 row with periods that are not whole numbers >= 0"
    ):
        validate_subscribers(pd.DataFrame({"periods": [0, -1], "churned": [0, 0]}))
    with pytest.raises(DataError, match=r"Missing column\(s\) 'churned' in the subscribers table"):
        validate_subscribers(pd.DataFrame({"periods": [0]}))
    with pytest.raises(DataError, match=r"repeated subscriber id"):
        validate_subscribers(pd.DataFrame({"periods": [0, 1], "churned": [0, 0]}, index=["x", "x"]))


# ------------------------------------------------------------------ charge log


def charges():
    return pd.DataFrame({
        "customer_id": ["a"] * 4 + ["b"] * 3 + ["c"] * 2,
        # a: Feb 29 is the (clipped) due date; Apr 2 is 4 days after the Mar 29 due date;
        # Apr 10 is an extra charge; May 2 is missed. b: Mar 12 missed, returns May 20.
        "date": ["2024-01-31", "2024-02-29", "2024-04-02", "2024-04-10",
                 "2024-01-10", "2024-02-12", "2024-05-20", "2024-06-01", "2024-06-01"],
        "amount": [10.0] * 9, "plan": ["box"] * 9,
    })  # fmt: skip


def test_charge_log_spells_grace_and_returning_subscribers():
    from clvbayes.data.subscriptions import subscriptions_from_charges

    with pytest.warns(
        DataWarning, match=r"1 charge\(s\) came more than grace_days=7 before their due"
    ):
        out = subscriptions_from_charges(charges(), as_of="2024-06-20", grace_days=7,
                                         amount_col="amount", plan_col="plan")  # fmt: skip
    assert out.index.tolist() == ["a#1", "b#1", "b#2", "c#1"]
    assert out["periods"].tolist() == [2, 1, 0, 0]
    assert out["churned"].tolist() == [1, 1, 0, 0]
    assert out["end"].tolist()[:2] == [pd.Timestamp("2024-05-02"), pd.Timestamp("2024-03-12")]
    assert out.loc["c#1", "mean_charge"] == 20.0  # same-day charges are one charge
    assert out.attrs["grace_days"] == 7 and out.attrs["returning_spells"] == 1
    assert out.attrs["extra_charges"] == 1
    # the spells feed the models' validation unchanged
    assert validate_subscribers(out)["periods"].tolist() == [2, 1, 0, 0]
    # with 3 days of grace a's 4-day-late charge no longer renews: a new spell starts on Apr 2
    with pytest.warns(DataWarning):
        tight = subscriptions_from_charges(charges(), as_of="2024-06-20", grace_days=3)
    assert tight.loc["a#1", "periods"] == 1 and "a#2" in tight.index


def test_charge_log_active_within_grace():
    from clvbayes.data.subscriptions import subscriptions_from_charges

    df = charges().iloc[4:6]  # b: due 2024-03-12
    assert subscriptions_from_charges(df, as_of="2024-03-19", grace_days=7)["churned"].tolist() == [
        0
    ]
    assert subscriptions_from_charges(df, as_of="2024-03-20", grace_days=7)["churned"].tolist() == [
        1
    ]


def test_charge_log_refusals():
    from clvbayes.data.subscriptions import subscriptions_from_charges

    with pytest.raises(
        DataError, match=r"grace_days=14 must be a whole number of days from 0 to below half"
    ):
        subscriptions_from_charges(charges(), as_of="2024-06-20", grace_days=14)
    with pytest.raises(
        DataError, match=r"Column 'date' has 1 row with a charge after as_of \(2024-05-10\)"
    ):
        subscriptions_from_charges(charges().iloc[:7], as_of="2024-05-10", grace_days=7)
    with pytest.raises(DataError, match=r"Missing column\(s\) 'when' in the charge log"):
        subscriptions_from_charges(charges(), as_of="2024-06-20", grace_days=7, date_col="when")
