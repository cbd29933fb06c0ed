"""Every input error of clvbayes.data: its type (DataError) and its message.

A message must say what is wrong, in which column, how many rows, the first offending
customer ids (at most five) and how to fix it; these tests pin those parts.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from clvbayes.data import (
    DataError,
    calibration_holdout_split,
    summarize_transactions,
    validate_rfm,
)


@pytest.fixture
def tx() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "b", "c", "d"],
            "date": pd.to_datetime(
                ["2024-01-01", "2024-01-02", "2024-01-10", "2024-01-05", "2024-01-20"]
            ),
            "amount": [10.0, 20.0, 5.0, 7.0, 3.0],
        }
    )


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------
# transactions


def test_missing_columns_are_named_and_present_ones_listed(tx):
    bad = tx.rename(columns={"date": "when"})
    with pytest.raises(
        DataError,
        match=r"Missing column\(s\) 'date' in the transactions; columns present: "
        r"'customer_id', 'when', 'amount'\. .*pass datetime_col=\.\.\.",
    ):
        summarize_transactions(bad, monetary_value_col="amount")
    with pytest.raises(DataError, match=r"Missing column\(s\) 'value'.*monetary_value_col"):
        summarize_transactions(tx, monetary_value_col="value")


def test_empty_input(tx):
    with pytest.raises(DataError, match=r"transactions table is empty \(0 rows\)"):
        summarize_transactions(tx.iloc[:0])


def test_null_ids(tx):
    tx["customer_id"] = tx["customer_id"].astype(object)
    tx.loc[[1, 3], "customer_id"] = None
    with pytest.raises(
        DataError,
        match=r"Column 'customer_id' has 2 rows with a missing customer id "
        r"\(first row positions: 1, 3; dtype object\).*dropna",
    ):
        summarize_transactions(tx)


def test_null_dates(tx):
    tx.loc[2, "date"] = pd.NaT
    with pytest.raises(
        DataError,
        match=r"Column 'date' has 1 row with missing dates \(first customer ids: 'b'\)\. "
        r"Drop or fill these rows",
    ):
        summarize_transactions(tx)


def test_unparseable_dates(tx):
    tx["date"] = ["2024-01-01", "2024-01-02", "not a date", "2024-13-45", "2024-01-20"]
    with pytest.raises(
        DataError,
        match=r"Column 'date' has 2 rows with unparseable dates \(e\.g\. 'not a date', "
        r"'2024-13-45'\) \(first customer ids: 'b', 'c'\)\. .*datetime_format",
    ):
        summarize_transactions(tx)


def test_unparseable_dates_with_a_format(tx):
    tx["date"] = ["01/01/2024", "02/01/2024", "2024-01-10", "05/01/2024", "20/01/2024"]
    with pytest.raises(DataError, match=r"1 row with unparseable.*the format '%d/%m/%Y'"):
        summarize_transactions(tx, datetime_format="%d/%m/%Y")


def test_numeric_dates_need_a_format(tx):
    tx["date"] = [19970101, 19970102, 19970103, 19970104, 19970105]
    with pytest.raises(DataError, match=r"Column 'date' holds numbers \(int64\), not dates"):
        summarize_transactions(tx)


def test_mixed_time_zones(tx):
    tx["date"] = [
        "2024-01-01T10:00+01:00",
        "2024-01-02T10:00+01:00",
        "2024-01-10T10:00+02:00",
        "2024-01-05T10:00+02:00",
        "2024-01-20T10:00+01:00",
    ]
    with pytest.raises(
        DataError,
        match=r"Column 'date' mixes time zones: .*UTC\+01:00 \(3 rows\), UTC\+02:00 \(2 rows\); "
        r"2 rows differ from the first row's zone 'UTC\+01:00' \(first customer ids: 'b', 'c'\)"
        r"\. Convert all timestamps to one zone first, e\.g\. pd\.to_datetime\(.*utc=True\)",
    ):
        summarize_transactions(tx)


def test_mixed_aware_and_naive_timestamps(tx):
    tx["date"] = [
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2024-01-02", tz="UTC"),
        pd.Timestamp("2024-01-10"),
        pd.Timestamp("2024-01-05", tz="UTC"),
        pd.Timestamp("2024-01-20", tz="UTC"),
    ]
    with pytest.raises(DataError, match=r"mixes time zones: UTC \(4 rows\), naive \(1 row\).*'b'"):
        summarize_transactions(tx)


def test_aware_end_with_naive_data(tx):
    with pytest.raises(
        DataError,
        match=r"observation_end=2024-02-01 00:00:00\+00:00 is timezone-aware but "
        r"column 'date' is naive",
    ):
        summarize_transactions(tx, observation_end=pd.Timestamp("2024-02-01", tz="UTC"))


def test_bad_end_value(tx):
    with pytest.raises(DataError, match=r"observation_end='soon' is not a date"):
        summarize_transactions(tx, observation_end="soon")


def test_non_numeric_amounts(tx):
    tx["amount"] = ["10.0", "$20", "5", "7", "n/a"]
    with pytest.raises(
        DataError,
        match=r"Column 'amount' has 2 rows with non-numeric amounts \(e\.g\. '\$20', 'n/a'\) "
        r"\(first customer ids: 'b', 'd'\)\. Convert the column to numbers",
    ):
        summarize_transactions(tx, monetary_value_col="amount")


def test_nan_and_inf_amounts(tx):
    tx.loc[[0, 4], "amount"] = [np.nan, np.inf]
    with pytest.raises(
        DataError,
        match=r"Column 'amount' has 2 rows with missing \(NaN\) or infinite amounts "
        r"\(first customer ids: 'a', 'd'\)\. Fill or drop",
    ):
        summarize_transactions(tx, monetary_value_col="amount")


def test_negative_amounts_are_refused_with_the_options(tx):
    tx.loc[2, "amount"] = -5.0
    with pytest.raises(
        DataError,
        match=r"Column 'amount' has 1 row with negative amounts \(returns or refunds\?\) "
        r"\(first customer ids: 'b'\)\. .*negative_amounts='drop'.*negative_amounts='keep'",
    ):
        summarize_transactions(tx, monetary_value_col="amount")


def test_all_amounts_negative_with_drop(tx):
    tx["amount"] = -1.0
    with pytest.warns(UserWarning), pytest.raises(DataError, match="Every transaction has"):
        summarize_transactions(tx, monetary_value_col="amount", negative_amounts="drop")


def test_unknown_negative_amounts_option(tx):
    with pytest.raises(DataError, match=r"Unknown negative_amounts='ignore'; use one of"):
        summarize_transactions(tx, monetary_value_col="amount", negative_amounts="ignore")


def test_transactions_after_the_observation_end(tx):
    with pytest.raises(
        DataError,
        match=r"Column 'date' has 2 rows with transactions after observation_end 2024-01-09 "
        r"\(first customer ids: 'b', 'd'\)\. Pass a later observation_end .* "
        r"df\[df\['date'\] < '2024-01-10'\]",
    ):
        summarize_transactions(tx, observation_end="2024-01-09")


def test_unknown_time_unit(tx):
    with pytest.raises(
        DataError, match=r"Unknown time_unit 'months'; use one of 'days', 'weeks'\. Months"
    ):
        summarize_transactions(tx, time_unit="months")


def test_mixed_id_types(tx):
    tx["customer_id"] = pd.Series([1, "b", "b", 3, "d"], dtype=object)
    with pytest.raises(
        DataError,
        match=r"Customer ids in column 'customer_id' mix types .*int \(2 ids\).*str \(2 ids\)"
        r".*df\['customer_id'\] = df\['customer_id'\]\.astype\(str\)",
    ):
        summarize_transactions(tx)


def test_at_most_five_ids_are_shown():
    tx = pd.DataFrame(
        {"customer_id": [f"c{i}" for i in range(8)], "date": ["2024-01-01"] * 7 + ["x"]}
    )
    tx["amount"] = -1.0
    with pytest.raises(DataError) as err:
        summarize_transactions(tx.assign(date="2024-01-01"), monetary_value_col="amount")
    msg = str(err.value)
    assert "8 rows" in msg
    assert "first customer ids: 'c0', 'c1', 'c2', 'c3', 'c4', ..." in msg
    assert "'c5'" not in msg


# ---------------------------------------------------------------------------------------
# calibration_end


def test_calibration_end_before_the_data(tx):
    with pytest.raises(
        DataError,
        match=r"calibration_end 2023-12-01 is before the first transaction \(the data run "
        r"from 2024-01-01 to 2024-01-20\)\. Pick a calibration_end inside that range",
    ):
        calibration_holdout_split(tx, "2023-12-01")


def test_calibration_end_after_the_data(tx):
    with pytest.raises(DataError, match=r"calibration_end 2024-02-01 is after the last"):
        calibration_holdout_split(tx, "2024-02-01", "2024-03-01")


def test_calibration_end_not_before_observation_end(tx):
    with pytest.raises(
        DataError, match=r"calibration_end 2024-01-20 must be before observation_end 2024-01-20"
    ):
        calibration_holdout_split(tx, "2024-01-20")


def test_split_refuses_transactions_after_observation_end(tx):
    with pytest.raises(DataError, match=r"1 row with transactions after observation_end"):
        calibration_holdout_split(tx, "2024-01-05", "2024-01-15")


# ---------------------------------------------------------------------------------------
# validate_rfm


@pytest.fixture
def rfm() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frequency": [0.0, 2.0, 1.0],
            "recency": [0.0, 5.5, 1.0],
            "T": [3.0, 10.0, 1.0],
            "monetary_value": [0.0, 12.5, 3.0],
        },
        index=pd.Index(["x", "y", "z"], name="customer_id"),
    )


def test_valid_rfm_comes_back_with_integer_frequency(rfm):
    out = validate_rfm(rfm, require_monetary=True)
    assert out["frequency"].dtype == np.int64
    assert out["frequency"].tolist() == [0, 2, 1]
    assert rfm["frequency"].dtype == np.float64  # the input is not modified
    pd.testing.assert_frame_equal(out.drop(columns="frequency"), rfm.drop(columns="frequency"))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"recency": [0.0, 11.0, 1.0]},
            r"Column 'recency' has 1 row with recency > T \(first customer ids: 'y'\)\. "
            r"recency .* cannot exceed T",
        ),
        (
            {"frequency": [0.0, 2.5, 1.0]},
            r"Column 'frequency' has 1 row with a non-integer frequency \(first customer ids: "
            r"'y'\)\. .*2\.0 is fine, 2\.5 is not",
        ),
        ({"frequency": [0.0, -2.0, 1.0]}, r"1 row with a negative frequency .*'y'"),
        ({"T": [-1.0, 10.0, 1.0]}, r"Column 'T' has 1 row with T < 0 \(first customer ids: 'x'\)"),
        (
            {"T": [1.0, 10.0, 0.0], "recency": [0.0, 5.5, 0.0]},
            r"Column 'T' has 1 row with T == 0 although frequency > 0 \(first customer ids: 'z'\)",
        ),
        ({"recency": [-1.0, 5.5, 1.0]}, r"Column 'recency' has 1 row with a negative recency"),
        (
            {"recency": [2.0, 5.5, 1.0]},
            r"1 row with recency != 0 although frequency == 0 \(first customer ids: 'x'\)",
        ),
        (
            {"T": [3.0, np.nan, np.inf]},
            r"Column 'T' has 2 rows with missing \(NaN\) or infinite values "
            r"\(first customer ids: 'y', 'z'\)",
        ),
        (
            {"recency": ["0", "5.5", "one"]},
            r"Column 'recency' has 1 row with non-numeric values .*'z'.*pd\.to_numeric",
        ),
    ],
)
def test_rfm_errors(rfm, change, pattern):
    with pytest.raises(DataError, match=pattern):
        validate_rfm(rfm.assign(**change))


def test_rfm_missing_columns(rfm):
    with pytest.raises(
        DataError,
        match=r"Missing column\(s\) 'T' in the RFM table; columns present: 'frequency', "
        r"'recency', 'monetary_value'",
    ):
        validate_rfm(rfm.drop(columns="T"))
    with pytest.raises(DataError, match=r"Missing column\(s\) 'monetary_value'"):
        validate_rfm(rfm.drop(columns="monetary_value"), require_monetary=True)


def test_rfm_duplicated_ids(rfm):
    dup = rfm.set_axis(pd.Index(["x", "y", "x"], name="customer_id"))
    with pytest.raises(DataError, match=r"2 rows with a duplicated customer id .*'x'"):
        validate_rfm(dup)


def test_rfm_non_positive_spend_for_gamma_gamma(rfm):
    bad = rfm.assign(monetary_value=[0.0, 0.0, 3.0])
    assert validate_rfm(bad)["frequency"].tolist() == [0, 2, 1]  # fine without the spend model
    with pytest.raises(
        DataError, match=re.escape("1 row with monetary_value <= 0 for a customer with repeat")
    ):
        validate_rfm(bad, require_monetary=True)


def test_rfm_empty(rfm):
    with pytest.raises(DataError, match=r"The RFM table is empty"):
        validate_rfm(rfm.iloc[:0])


def test_rfm_not_a_dataframe():
    with pytest.raises(DataError, match="as a pandas DataFrame, got dict"):
        validate_rfm({"frequency": [1]})


def test_object_ids_without_text_are_accepted():
    """Found by the hostile-input property test: an object column holding only Python ints."""
    from clvbayes.data import summarize_transactions

    tx = pd.DataFrame({"customer_id": pd.Series([7, 7, 9], dtype=object),
                       "date": ["2024-01-01", "2024-02-01", "2024-01-05"]})  # fmt: skip
    out = summarize_transactions(tx, time_unit="days")
    assert list(out.index) == [7, 9] and out.loc[7, "frequency"] == 1
