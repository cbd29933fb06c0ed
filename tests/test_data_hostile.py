"""The data layer attacked as a careless user would (issue 12: defects 2, 4, 8, 9, 11, 15, 19
and their siblings).  Every input here used to give a wrong summary without a word, or a
traceback; each test pins the refusal or warning that replaced it.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from clvbayes.data import (
    DataError,
    DataWarning,
    calibration_holdout_split,
    read_transactions,
    summarize_transactions,
    validate_rfm,
)
from clvbayes.data.validation import outlying_day_bounds
from clvbayes.datasets import load_cdnow_transactions


@pytest.fixture(scope="module")
def cdnow_tx() -> pd.DataFrame:
    return load_cdnow_transactions()


def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "c", "b"],
            "date": ["2024-01-01", "2024-01-02", "2024-01-10", "2024-01-05", "2024-01-20"],
            "amount": [10.0, 20.0, 5.0, 7.0, 3.0],
        }
    )


def quiet_summary(tx: pd.DataFrame, **kw) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return summarize_transactions(tx, **kw)


# ---------------------------------------------------------------------------------------
# defect 2: <NA> ids in nullable dtypes were credited to the last customer


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        ("Int64", [1, 2, None, 2]),
        ("UInt8", [1, 2, None, 2]),
        ("int64[pyarrow]", [1, 2, None, 2]),
        ("boolean", [True, False, None, False]),
        ("Float64", [1.0, 2.0, None, 2.0]),
        ("string[python]", ["a", "b", None, "b"]),
        ("string[pyarrow]", ["a", "b", None, "b"]),
        ("category", ["a", "b", None, "b"]),
        ("float64", [1.0, 2.0, np.nan, 2.0]),
    ],
)
def test_missing_ids_in_every_nullable_dtype_are_refused(dtype, values):
    tx = pd.DataFrame(
        {
            "customer_id": pd.Series(values, dtype=dtype),
            "date": ["2024-01-01", "2024-01-05", "2024-01-09", "2024-01-12"],
        }
    )
    with pytest.raises(
        DataError,
        match=r"Column 'customer_id' has 1 row with a missing customer id \(first row "
        r"positions: 2; dtype .*\)\. .*must not be credited to another one.*dropna",
    ):
        summarize_transactions(tx)


def test_missing_int64_ids_from_a_parquet_file_are_refused(tmp_path):
    path = tmp_path / "tx.parquet"
    pd.DataFrame(
        {
            "customer_id": pd.array([7, None, 7], dtype="Int64"),
            "date": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
        }
    ).to_parquet(path)
    tx = read_transactions(path)
    assert str(tx["customer_id"].dtype) == "Int64"
    with pytest.raises(
        DataError, match=r"1 row with a missing customer id \(first row positions: 1"
    ):
        summarize_transactions(tx)


def test_nullable_ids_without_missing_values_summarise_like_plain_ones():
    dates = ["2024-01-01", "2024-01-05", "2024-01-09", "2024-01-12"]
    plain = summarize_transactions(pd.DataFrame({"customer_id": [1, 2, 1, 2], "date": dates}))
    for dtype in ("Int64", "UInt8", "int64[pyarrow]"):
        tx = pd.DataFrame({"customer_id": pd.array([1, 2, 1, 2], dtype=dtype), "date": dates})
        out = summarize_transactions(tx)
        assert out["frequency"].tolist() == plain["frequency"].tolist()
        assert out.index.tolist() == [1, 2]


@pytest.mark.parametrize("values", [[1, 1.0, 2], [1, True, 2], [0.0, False, 2]])
def test_ids_mixing_kinds_of_numbers_are_refused(values):
    tx = pd.DataFrame(
        {"customer_id": pd.Series(values, dtype=object),
         "date": ["2024-01-01", "2024-01-05", "2024-01-09"]}
    )  # fmt: skip
    with pytest.raises(DataError, match=r"mix kinds of numbers: .*1, 1\.0 and True count as one"):
        summarize_transactions(tx)


def test_categorical_ids_summarise_like_text_ids():
    tx = small()
    text = quiet_summary(tx)
    cat = quiet_summary(tx.assign(customer_id=tx["customer_id"].astype("category")))
    assert list(cat.index) == list(text.index)
    np.testing.assert_array_equal(cat["frequency"], text["frequency"])
    np.testing.assert_array_equal(cat["T"], text["T"])


# ---------------------------------------------------------------------------------------
# defect 11 and siblings: empty, blank and padded ids


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_or_blank_ids_from_parquet_are_refused(tmp_path, blank):
    path = tmp_path / "tx.parquet"
    pd.DataFrame(
        {"customer_id": ["a", blank, "b", blank], "date": pd.to_datetime(["2024-01-01"] * 4)}
    ).to_parquet(path)
    with pytest.raises(
        DataError,
        match=r"Column 'customer_id' has 2 rows with an empty or blank customer id "
        rf"\('{blank}'\)\. An empty id is a missing id.*Rows \(counting from 0\): 1, 3\.",
    ):
        summarize_transactions(read_transactions(path))


def test_ids_that_differ_only_in_white_space_are_warned_about():
    tx = small()
    tx.loc[4, "customer_id"] = "b "
    with pytest.warns(
        DataWarning, match=r"differ only in leading/trailing white space \('b', 'b '\).*str\.strip"
    ):
        out = summarize_transactions(tx, duplicate_rows="keep")
    assert len(out) == 4  # kept apart: nothing is merged behind the user's back


def test_float_ids_beyond_exact_integers_are_warned_about():
    tx = pd.DataFrame({"customer_id": [2.0**53 + 2, 3.0], "date": ["2024-01-01", "2024-01-02"]})
    with pytest.warns(DataWarning, match=r"floating-point numbers above 2\*\*53"):
        summarize_transactions(tx)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        summarize_transactions(tx.assign(customer_id=[1.0, 2.5]))


def test_padded_ids_that_clash_with_nothing_are_fine():
    tx = small()
    tx["customer_id"] = tx["customer_id"] + " "
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert len(summarize_transactions(tx)) == 3


# ---------------------------------------------------------------------------------------
# defect 19: reader gaps


def test_ids_that_look_like_missing_markers_survive_a_csv(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text(
        "customer_id,date,amount\n"
        "NA,2024-01-01,1\nnull,2024-01-02,2\nNone,2024-01-03,3\nnan,2024-01-04,4\n"
        "NA,2024-01-09,5\n"
    )
    tx = read_transactions(path)
    assert tx["customer_id"].tolist() == ["NA", "null", "None", "nan", "NA"]
    with pytest.warns(
        DataWarning, match=r"include text that often marks a missing id: 'NA' \(2 rows\)"
    ):
        out = summarize_transactions(tx, monetary_value_col="amount")
    assert sorted(out.index) == ["NA", "None", "nan", "null"]
    assert out.loc["NA", "frequency"] == 1


def test_an_empty_id_field_in_a_csv_is_still_missing(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,date,amount\na,2024-01-01,1\n,2024-01-02,NA\n")
    tx = read_transactions(path)
    assert tx["customer_id"].isna().tolist() == [False, True]
    assert np.isnan(tx["amount"].iloc[1])  # other columns keep pandas' missing markers
    with pytest.raises(DataError, match="1 row with a missing customer id"):
        summarize_transactions(tx)


def test_semicolon_csv_is_refused_with_the_separator_to_pass(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id;date;amount\na;2024-01-01;1,5\nb;2024-01-02;2,25\n")
    with pytest.raises(DataError, match=r"seems to be separated by ';', not commas\. Pass sep=';'"):
        read_transactions(path)
    tx = read_transactions(path, sep=";", decimal=",")
    assert tx["amount"].tolist() == [1.5, 2.25]
    assert tx["customer_id"].tolist() == ["a", "b"]


def test_decimal_commas_get_a_hint(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id;date;amount\na;2024-01-01;1,50\nb;2024-01-02;2,25\n")
    with pytest.raises(
        DataError, match=r"decimal comma: read the file with read_transactions\(path, decimal=','\)"
    ):
        summarize_transactions(read_transactions(path, sep=";"), monetary_value_col="amount")


def test_thousands_separators_get_a_hint():
    tx = small().assign(amount=["1,234.50", "20", "5", "7", "3"])
    with pytest.raises(DataError, match=r"thousands separator: read the file with thousands=','"):
        summarize_transactions(tx, monetary_value_col="amount")


def test_separator_none_means_comma_and_the_hint_also_reaches_require_columns():
    tx = pd.DataFrame({"customer_id;date": ["a;2024-01-01"]})
    with pytest.raises(DataError, match=r"seems to be separated by ';'.*sep=';'"):
        summarize_transactions(tx)


def test_latin1_csv_is_refused_with_encodings_to_try(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_bytes("customer_id,date\nJosé,2024-01-01\nJürgen,2024-01-02\n".encode("latin-1"))
    with pytest.raises(
        DataError,
        match=r"Cannot read .*tx\.csv' as text in the encoding 'utf-8'.*encoding='latin-1'",
    ):
        read_transactions(path)
    assert read_transactions(path, encoding="latin-1")["customer_id"].tolist() == ["José", "Jürgen"]


def test_utf8_bom_and_tsv_defaults(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffcustomer_id,date\n007,2024-01-01\n".encode())
    assert read_transactions(bom).columns.tolist() == ["customer_id", "date"]
    tsv = tmp_path / "tx.tsv"
    tsv.write_text("customer_id\tdate\n007\t2024-01-01\n")
    assert read_transactions(tsv)["customer_id"].tolist() == ["007"]


def test_parquet_ignores_sep_and_encoding(tmp_path):
    path = tmp_path / "tx.parquet"
    small().to_parquet(path)
    pd.testing.assert_frame_equal(read_transactions(path, sep=";", encoding="latin-1"), small())


def test_empty_and_broken_files_name_the_file(tmp_path):
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv' is empty"):
        read_transactions(empty_csv)
    empty_pq = tmp_path / "empty.parquet"
    empty_pq.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.parquet' is empty \(0 bytes\)"):
        read_transactions(empty_pq)
    whole = tmp_path / "whole.parquet"
    small().to_parquet(whole)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"Cannot read .*cut\.parquet' as Parquet"):
        read_transactions(cut)
    with pytest.raises(
        DataError,
        match=r"Missing column\(s\) 'nope' in .*whole\.parquet'; columns present: 'customer_id'",
    ):
        read_transactions(whole, columns=["customer_id", "nope"])


def test_missing_csv_columns_name_the_file(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,date\na,2024-01-01\n")
    with pytest.raises(
        DataError,
        match=r"Missing column\(s\) 'amount' in .*tx\.csv'; columns present: 'customer_id', 'date'",
    ):
        read_transactions(path, columns=["customer_id", "date", "amount"])


def test_a_user_dtype_for_another_column_keeps_ids_as_text(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text("customer_id,date,amount\n00042,2024-01-01,3\n")
    tx = read_transactions(path, dtype={"amount": "float32"})
    assert tx["customer_id"].tolist() == ["00042"]
    assert tx["amount"].dtype == np.float32


def test_duplicated_column_names_are_refused():
    tx = small()
    tx = pd.concat([tx, tx[["date"]]], axis=1)
    assert list(tx.columns).count("date") == 2
    with pytest.raises(
        DataError, match=r"more than one column named 'date' \(2 times\).*columns\.duplicated"
    ):
        summarize_transactions(tx)


# ---------------------------------------------------------------------------------------
# defect 8: dates misparsed silently


def test_ambiguous_day_month_order_is_refused_with_both_candidates():
    tx = small().assign(date=["01/02/2024", "03/02/2024", "05/02/2024", "02/03/2024", "12/11/2024"])
    with pytest.raises(
        DataError,
        match=re.escape(
            "every value reads both as '%m/%d/%Y' ('01/02/2024' = 2024-01-02) and as "
            "'%d/%m/%Y' ('01/02/2024' = 2024-02-01), because no day is above 12. Pass the "
            "format: datetime_format='%m/%d/%Y' or datetime_format='%d/%m/%Y'."
        ),
    ):
        summarize_transactions(tx)
    out = quiet_summary(tx, datetime_format="%d/%m/%Y")
    assert out.loc["a", "first_purchase"] == pd.Timestamp("2024-02-01")


def test_day_first_dates_are_read_day_first_when_the_data_say_so():
    # the first value looks month-first, but 25/01 can only be day-first
    tx = small().assign(date=["01/02/2024", "03/02/2024", "05/02/2024", "25/01/2024", "12/11/2024"])
    out = quiet_summary(tx)
    assert out.loc["a", "first_purchase"] == pd.Timestamp("2024-02-01")
    assert out.loc["c", "first_purchase"] == pd.Timestamp("2024-01-25")


@pytest.mark.parametrize("values", [[5, "2024-01-01"], ["2024-01-01", 5], ["2024-01-01", 3.5]])
def test_numbers_among_text_dates_are_refused(values):
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": pd.Series(values, dtype=object)})
    with pytest.raises(DataError, match=r"1 row with numbers among the dates .*1970-01-01"):
        summarize_transactions(tx)


def test_two_digit_years_are_refused_unless_the_format_says_so():
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": ["01/02/69", "01/03/70"]})
    with pytest.raises(
        DataError,
        match=r"two-digit years \(first value '01/02/69'\): '69' could be 1969 or 2069.*"
        r"datetime_format='%m/%d/%y' or datetime_format='%d/%m/%y'",
    ):
        summarize_transactions(tx)
    out = summarize_transactions(tx, datetime_format="%m/%d/%y")
    assert out.loc["a", "first_purchase"] == pd.Timestamp("1969-01-02")


def test_text_nat_and_words_such_as_now_are_refused():
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": ["2024-01-01", "NaT"]})
    with pytest.raises(DataError, match=r"1 row with missing dates \(text such as 'NaT'\)"):
        summarize_transactions(tx)
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": ["2024-01-01", "now"]})
    with pytest.raises(DataError, match=r"1 row with words instead of dates \(e\.g\. 'now'"):
        summarize_transactions(tx)
    with pytest.raises(DataError, match=r"observation_end='today' is a word, not a date"):
        summarize_transactions(small(), observation_end="today")


def test_a_format_pandas_cannot_infer_is_refused_not_guessed_per_value():
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": ["Tuesday 2 January 2024 at noon", "x"]})
    with pytest.raises(DataError, match=r"cannot infer a date format from the first value"):
        summarize_transactions(tx)


def test_tz_aware_timestamps_mixed_with_naive_ones_are_refused():
    dates = pd.Series(
        [pd.Timestamp("2024-01-01", tz="Europe/Paris"), pd.Timestamp("2024-01-02")], dtype=object
    )
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": dates})
    with pytest.raises(DataError, match=r"mixes time zones"):
        summarize_transactions(tx)


def test_nat_in_a_datetime_column_and_boolean_dates_are_refused():
    tx = pd.DataFrame({"customer_id": ["a", "b"], "date": pd.to_datetime(["2024-01-01", None])})
    with pytest.raises(DataError, match=r"Column 'date' has 1 row with missing dates"):
        summarize_transactions(tx)
    with pytest.raises(DataError, match=r"holds booleans \(bool\), not dates"):
        summarize_transactions(pd.DataFrame({"customer_id": ["a"], "date": [True]}))


def test_periods_and_ends_beyond_the_resolution_are_refused():
    tx = pd.DataFrame(
        {"customer_id": ["a", "b"], "date": pd.period_range("2024-01", periods=2, freq="M")}
    )
    with pytest.raises(DataError, match=r"holds periods \(period\[M\]\), not dates.*to_timestamp"):
        summarize_transactions(tx)
    ns = pd.DataFrame(
        {"customer_id": ["a", "b"],
         "date": pd.to_datetime(["2024-01-01", "2024-01-05"]).astype("datetime64[ns]")}
    )  # fmt: skip
    with pytest.raises(DataError, match=r"observation_end='2500-01-01' is outside the range"):
        summarize_transactions(ns, observation_end="2500-01-01")


def test_iso_dates_are_never_read_year_day_month():
    tx = small().assign(date=["2024-01-02", "2024-01-03", "2024-02-01", "2024-03-01", "2024-04-01"])
    out = quiet_summary(tx)
    assert out.loc["a", "first_purchase"] == pd.Timestamp("2024-01-02")


# ---------------------------------------------------------------------------------------
# defect 4: one mistyped date moved every customer's T


@pytest.mark.parametrize("typo", ["2099-01-01", "1500-01-01", "1970-01-01", "1900-01-01"])
def test_one_mistyped_date_is_refused(cdnow_tx, typo):
    tx = cdnow_tx.copy()
    tx.loc[100, "date"] = pd.Timestamp(typo)
    with pytest.raises(
        DataError,
        match=rf"Column 'date' has 1 row with dates far outside the bulk of the data \(e\.g\. "
        rf"'{typo}'; the other 6,918 rows run from 1997-01-01 to 1998-06-30.*"
        rf"first customer ids: '{tx.loc[100, 'customer_id']}'.*outlying_dates='drop'.*"
        r"outlying_dates='keep'.*Row \(counting from 0\): 100\.",
    ):
        summarize_transactions(tx, monetary_value_col="amount")


def test_outlying_dates_drop_and_keep(cdnow_tx):
    tx = cdnow_tx.copy()
    tx.loc[100, "date"] = pd.Timestamp("2099-01-01")
    with pytest.warns(DataWarning, match=r"Dropped 1 row in column 'date' with dates far outside"):
        dropped = summarize_transactions(tx, outlying_dates="drop", duplicate_rows="keep")
    assert dropped.attrs["n_outlying_date_rows_dropped"] == 1
    assert dropped.attrs["observation_end"] == "1998-06-30"
    kept = summarize_transactions(tx, outlying_dates="keep", duplicate_rows="keep")
    assert kept.attrs["n_outlying_date_rows"] == 1
    assert kept.attrs["n_outlying_date_rows_dropped"] == 0
    assert kept.attrs["observation_end"] == "2099-01-01"  # the user said it is real


def test_real_data_shapes_are_not_outlying(cdnow_tx):
    clean = summarize_transactions(cdnow_tx, duplicate_rows="keep")
    assert clean.attrs["n_outlying_date_rows"] == 0
    # a slow start: a handful of rows months before a busy year
    rng = np.random.default_rng(1)
    days = np.concatenate([[0, 30, 200], rng.integers(300, 700, 500)])
    tx = pd.DataFrame(
        {"customer_id": rng.integers(0, 50, days.size),
         "date": pd.Timestamp("2020-01-01") + pd.to_timedelta(days, unit="D")}
    )  # fmt: skip
    assert summarize_transactions(tx).attrs["n_outlying_date_rows"] == 0


def test_outlying_day_bounds():
    days = np.array([10_000, 10_001, 10_200, 10_400, 47_000])
    counts = np.array([30, 40, 50, 30, 1])
    assert outlying_day_bounds(days, counts) == (10_000, 10_400)
    # both ends, and two typos at the far end
    days = np.array([-200_000, 10_000, 10_001, 10_400, 47_000, 47_300])
    counts = np.array([1, 300, 400, 300, 1, 1])
    assert outlying_day_bounds(days, counts) == (10_000, 10_400)
    # a gap shorter than the rest's span, or a group too large, is not outlying
    assert outlying_day_bounds(np.array([0, 300, 1000, 1600]), np.array([50, 50, 50, 50])) is None
    assert outlying_day_bounds(np.array([0, 100, 5000]), np.array([50, 50, 40])) is None
    assert outlying_day_bounds(np.array([0]), np.array([5])) is None


def test_observation_end_far_after_the_data_is_refused(cdnow_tx):
    with pytest.raises(
        DataError,
        match=r"observation_end=2099-06-30 is 36,890 days after the last transaction "
        r"\(1998-06-30\), while the data span 545 days.*outlying_dates='keep'",
    ):
        summarize_transactions(cdnow_tx, observation_end="2099-06-30")
    with pytest.raises(DataError, match=r"observation_end=2099-06-30 is 36,890 days after"):
        calibration_holdout_split(cdnow_tx, "1997-09-30", "2099-06-30")
    out = summarize_transactions(
        cdnow_tx, observation_end="2099-06-30", outlying_dates="keep", duplicate_rows="keep"
    )
    assert out.attrs["observation_end"] == "2099-06-30"
    with pytest.warns(DataWarning, match=r"observation_end=1999-06-30 is 365 days after"):
        summarize_transactions(cdnow_tx, observation_end="1999-06-30", duplicate_rows="keep")


def test_unknown_options_are_refused():
    with pytest.raises(
        DataError, match=r"Unknown outlying_dates='ignore'; use one of 'error', 'drop', 'keep'"
    ):
        summarize_transactions(small(), outlying_dates="ignore")
    with pytest.raises(
        DataError, match=r"Unknown duplicate_rows='remove'; use one of 'warn', 'drop', 'keep'"
    ):
        summarize_transactions(small(), duplicate_rows="remove")


# ---------------------------------------------------------------------------------------
# defect 9: exact duplicate rows (a double export) doubled spend


def test_a_double_export_is_warned_about_and_can_be_dropped(cdnow_tx):
    once = summarize_transactions(cdnow_tx, monetary_value_col="amount", duplicate_rows="keep")
    assert once.attrs["n_duplicate_rows"] == 21  # the sample's own same-day, same-price rows
    twice = pd.concat([cdnow_tx, cdnow_tx], ignore_index=True)
    with pytest.warns(
        DataWarning,
        match=r"6,940 rows \(50\.2% of 13,838\) are exact copies of an earlier row, equal in "
        r"every column \(first customer ids: .*duplicate_rows='drop'.*duplicate_rows='keep'.*"
        r"Rows \(counting from 0\): ",
    ):
        doubled = summarize_transactions(twice, monetary_value_col="amount")
    assert doubled.attrs["n_duplicate_rows"] == 6940
    assert doubled["monetary_value"].sum() == pytest.approx(2 * once["monetary_value"].sum())
    with pytest.warns(DataWarning, match=r"Dropped 6,940 rows \(50\.2%\) that are exact copies"):
        dropped = summarize_transactions(twice, monetary_value_col="amount", duplicate_rows="drop")
    assert dropped.attrs["n_duplicate_rows_dropped"] == 6940
    dedup = summarize_transactions(
        cdnow_tx.drop_duplicates(), monetary_value_col="amount", duplicate_rows="keep"
    )
    pd.testing.assert_frame_equal(
        dropped.drop(columns="first_purchase"), dedup.drop(columns="first_purchase")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        kept = summarize_transactions(twice, monetary_value_col="amount", duplicate_rows="keep")
    assert kept.attrs["n_duplicate_rows"] == 6940
    assert kept.attrs["n_duplicate_rows_dropped"] == 0


def test_duplicates_in_the_split(cdnow_tx):
    twice = pd.concat([cdnow_tx, cdnow_tx], ignore_index=True)
    with pytest.warns(DataWarning, match=r"exact copies of an earlier row"):
        split = calibration_holdout_split(twice, "1997-09-30", monetary_value_col="amount")
    assert split.attrs["n_duplicate_rows"] == 6940
    with pytest.warns(DataWarning, match=r"Dropped 6,940 rows"):
        dropped = calibration_holdout_split(
            twice, "1997-09-30", monetary_value_col="amount", duplicate_rows="drop"
        )
    ref = calibration_holdout_split(
        cdnow_tx.drop_duplicates(), "1997-09-30", monetary_value_col="amount", duplicate_rows="keep"
    )
    np.testing.assert_allclose(dropped["total_value_holdout"], ref["total_value_holdout"])


def test_rows_that_differ_in_another_column_are_not_duplicates():
    tx = small()
    tx = pd.concat([tx, tx], ignore_index=True).assign(order_id=range(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        out = summarize_transactions(tx, monetary_value_col="amount")
    assert out.attrs["n_duplicate_rows"] == 0


def test_duplicates_without_amounts_are_counted_but_change_nothing():
    tx = small()
    twice = pd.concat([tx, tx], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        out = summarize_transactions(twice)
    assert out.attrs["n_duplicate_rows"] == 5
    np.testing.assert_array_equal(out["frequency"], summarize_transactions(tx)["frequency"])


def test_row_positions_in_messages_count_dropped_rows():
    tx = small()
    tx.loc[1, "amount"] = -1.0  # dropped first
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"Row \(counting from 0\): 4\."):
        summarize_transactions(
            tx, monetary_value_col="amount", negative_amounts="drop", observation_end="2024-01-15"
        )


# ---------------------------------------------------------------------------------------
# defect 15: a customer acquired on the last day (T = 0) made the default end fail


def test_a_customer_acquired_on_the_last_day_has_T_zero_and_is_valid(cdnow_tx):
    tx = cdnow_tx.copy()
    tx.loc[len(tx)] = ["99999", pd.Timestamp("1998-06-30"), 1, 20.0]
    rfm = summarize_transactions(tx, monetary_value_col="amount", duplicate_rows="keep")
    assert rfm.loc["99999", ["frequency", "recency", "T"]].tolist() == [0, 0.0, 0.0]
    assert rfm.attrs["n_customers_T0"] >= 1
    checked = validate_rfm(rfm, require_monetary=True)
    assert len(checked) == len(rfm)
    # such a customer adds exactly nothing to the BG/NBD likelihood
    from clvbayes.math import bgnbd

    assert bgnbd.loglik(0.24, 4.4, 0.79, 2.4, 0, 0.0, 0.0) == pytest.approx(0.0, abs=1e-15)


def test_an_rfm_table_with_missing_ids_is_refused():
    rfm = pd.DataFrame(
        {"frequency": [1, 0], "recency": [2.0, 0.0], "T": [5.0, 3.0]},
        index=pd.Index(pd.array([1, None], dtype="Int64"), name="customer_id"),
    )
    with pytest.raises(
        DataError,
        match=r"1 row\(s\) with a missing customer id in its index \(dtype Int64; Row "
        r"\(counting from 0\): 1\).*df\.index\.notna",
    ):
        validate_rfm(rfm)


def test_T_zero_at_the_calibration_end():
    tx = small()
    tx.loc[len(tx)] = ["d", "2024-01-10", 4.0]
    split = calibration_holdout_split(tx, "2024-01-10", monetary_value_col="amount")
    assert split.loc["d", "T"] == 0.0
    assert split.attrs["n_customers_T0"] == 1
    validate_rfm(split)


# ---------------------------------------------------------------------------------------
# amounts


def test_boolean_amounts_and_overflowing_sums_are_refused():
    with pytest.raises(DataError, match=r"holds booleans \(bool\), not amounts"):
        summarize_transactions(small().assign(amount=True), monetary_value_col="amount")
    huge = pd.DataFrame(
        {"customer_id": ["a", "a", "a"], "date": ["2024-01-01", "2024-01-10", "2024-01-10"],
         "amount": [1.0, 1e308, 9e307]}
    )  # fmt: skip
    with pytest.raises(DataError, match=r"add up beyond the range of floating-point numbers"):
        summarize_transactions(huge, monetary_value_col="amount")


def test_purchases_dated_after_today_are_warned_about():
    tx = small()
    tx.loc[4, "date"] = (pd.Timestamp.now() + pd.Timedelta(days=30)).strftime("%Y-%m-%d")
    with pytest.warns(
        DataWarning,
        match=r"1 row dated after today .*first customer ids: 'b'.*Row \(counting from 0\): 4\.",
    ):
        summarize_transactions(tx)


def test_numeric_dates_get_epoch_and_excel_hints():
    tx = pd.DataFrame({"customer_id": ["a"], "date": [45292]})
    with pytest.raises(
        DataError, match=r"holds numbers \(int64\), not dates.*unit='s'.*origin='1899-12-30'"
    ):
        summarize_transactions(tx)


# ---------------------------------------------------------------------------------------
# the contract, driven by generated hostile input: a DataError or a valid summary

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_IDS = ["a", "b", "007", "7", " a", "", "  ", "NA", "null", None, np.nan, pd.NA, 7, 7.0, True]
_DATES = [
    "2024-01-01", "2024-01-05", "2024-02-29", "01/02/2024", "13/02/2024", "02/13/2024",
    "2024-01-03 10:00", "2024-01-04T00:00+01:00", "2099-01-01", "1500-06-01", "01/02/69",
    "NaT", "now", "", "garbage", 5, 20240101, pd.Timestamp("2024-01-02"), None,
    pd.Timestamp("2024-01-02", tz="UTC"), 3.5,
]  # fmt: skip
_AMOUNTS = [10.0, 0.0, -5.0, 1e308, np.nan, np.inf, "12", "1,50", "$3", None, True, 7]
_ID_DTYPES = [None, "object", "str", "category"]


@st.composite
def hostile_frames(draw):
    n = draw(st.integers(1, 12))
    ids = draw(st.lists(st.sampled_from(_IDS), min_size=n, max_size=n))
    dates = draw(st.lists(st.sampled_from(_DATES), min_size=n, max_size=n))
    amounts = draw(st.lists(st.sampled_from(_AMOUNTS), min_size=n, max_size=n))
    id_dtype = draw(st.sampled_from(_ID_DTYPES))
    try:
        id_col = pd.Series(ids, dtype=id_dtype)
    except (TypeError, ValueError):
        id_col = pd.Series(ids, dtype=object)
    frame = pd.DataFrame(
        {"customer_id": id_col, "date": pd.Series(dates, dtype=object), "amount": amounts}
    )
    if draw(st.booleans()):
        frame = pd.concat([frame, frame.iloc[: draw(st.integers(0, n))]], ignore_index=True)
    options = {
        "monetary_value_col": draw(st.sampled_from([None, "amount"])),
        "negative_amounts": draw(st.sampled_from(["error", "drop", "keep"])),
        "duplicate_rows": draw(st.sampled_from(["warn", "drop", "keep"])),
        "outlying_dates": draw(st.sampled_from(["error", "drop", "keep"])),
        "merge_same_day": draw(st.booleans()),
        "time_unit": draw(st.sampled_from(["days", "weeks"])),
    }
    return frame, options


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_frames())
def test_hostile_input_gives_a_data_error_or_a_valid_summary(case):
    frame, options = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = summarize_transactions(frame, **options)
        except DataError as err:
            assert str(err)  # a message, never an empty error
            return
    checked = validate_rfm(out)
    numbers = checked[["frequency", "recency", "T"]].to_numpy(dtype=float)
    assert np.isfinite(numbers).all()
    if "monetary_value" in out:
        assert np.isfinite(out["monetary_value"].to_numpy(dtype=float)).all()
    assert out.index.notna().all()
    assert len(out) <= frame["customer_id"].nunique(dropna=False)
    assert out.attrs["n_transactions"] == len(frame)
