"""Reference layer: the bundled CDNOW data and the published calibration summary.

The published summary (``cdnow_summary.csv``: ID, x, t_x, T, zbar for the 2,357 sample
customers) is the one used by Fader, Hardie & Lee (2005), "Counting your customers the
easy way", Marketing Science 24(2): weeks, 39-week calibration 1997-01-01 .. 1997-09-30,
same-day purchases merged, t_x / T / zbar rounded to 2 decimals.  Our summary of the
bundled transaction log must reproduce it, and the 39-week holdout (to 1998-06-30) holds
1,882 repeat transactions (the holdout total in Fader, Hardie & Lee's BG/NBD notes).
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd
import pytest

from clvbayes.data import DataWarning, calibration_holdout_split, summarize_transactions
from clvbayes.datasets import (
    load_cdnow_master_transactions,
    load_cdnow_summary,
    load_cdnow_transactions,
)

CAL_END, OBS_END = "1997-09-30", "1998-06-30"


@pytest.fixture(scope="module")
def tx() -> pd.DataFrame:
    return load_cdnow_transactions()


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return load_cdnow_summary()


@pytest.fixture(scope="module")
def split(tx) -> pd.DataFrame:
    return calibration_holdout_split(
        tx, CAL_END, OBS_END, monetary_value_col="amount", duplicate_rows="keep"
    )


def _raw_sample() -> pd.DataFrame:
    """The sample file read independently of the loader."""
    text = files("clvbayes.datasets").joinpath("files", "CDNOW_sample.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=["master_id", "sample_id", "date", "cds", "value"])


def test_sample_loader_columns_and_types(tx):
    assert list(tx.columns) == ["customer_id", "date", "quantity", "amount"]
    assert len(tx) == 6919
    assert tx["customer_id"].nunique() == 2357
    assert pd.api.types.is_string_dtype(tx["customer_id"])
    assert tx["customer_id"].iloc[0] == "00004"  # zero-padded master id kept as text
    assert tx["customer_id"].str.len().eq(5).all()
    assert pd.api.types.is_datetime64_dtype(tx["date"])
    assert tx["quantity"].dtype == np.int64
    assert tx["amount"].dtype == np.float64
    assert tx["date"].min() == pd.Timestamp("1997-01-01")
    assert tx["date"].max() == pd.Timestamp(OBS_END)
    assert tx["amount"].iloc[0] == pytest.approx(29.33)


def test_master_loader():
    master = load_cdnow_master_transactions()
    assert list(master.columns) == ["customer_id", "date", "quantity", "amount"]
    assert len(master) == 69_659
    assert master["customer_id"].nunique() == 23_570
    assert master["customer_id"].iloc[0] == "00001"
    assert pd.api.types.is_datetime64_dtype(master["date"])
    assert master["quantity"].dtype == np.int64 and master["amount"].dtype == np.float64
    # the sample is a subset of the master file
    sample = load_cdnow_transactions()
    assert set(sample["customer_id"]) <= set(master["customer_id"])


def test_published_id_is_the_sample_id_ordered_by_first_purchase_then_master_id():
    raw = _raw_sample()
    assert raw.groupby("sample_id")["master_id"].nunique().eq(1).all()  # 1:1 mapping
    first = raw.sort_values("date").drop_duplicates("sample_id")
    by_rule = first.sort_values(["date", "master_id"])["sample_id"].astype(int).to_numpy()
    np.testing.assert_array_equal(by_rule, np.arange(1, 2358))
    # and the loader's index is that mapping: published ID k -> master id of sample id k
    file = files("clvbayes.datasets").joinpath("files", "cdnow_summary.csv")
    with file.open("r") as fh:
        raw_pub = pd.read_csv(fh)
    master_of = dict(zip(raw["sample_id"].astype(int), raw["master_id"], strict=False))
    loaded = load_cdnow_summary()
    for _, row in raw_pub.iloc[[0, 1, 17, 18, 2356]].iterrows():
        mid = master_of[int(row["ID"])]
        assert loaded.loc[mid, "frequency"] == row["x"]
        assert loaded.loc[mid, "T"] == pytest.approx(row["T"])


def test_summary_loader(published):
    assert len(published) == 2357
    assert published.index.name == "customer_id"
    assert published.index.is_monotonic_increasing
    assert list(published.columns) == ["frequency", "recency", "T", "monetary_value"]
    assert published["frequency"].dtype == np.int64
    assert published.attrs["time_unit"] == "weeks"
    # 1,411 of the 2,357 made no repeat purchase in calibration; 2,457 repeat
    # transactions in all
    assert (published["frequency"] == 0).sum() == 1411
    assert published["frequency"].sum() == 2457


def _assert_matches_published(ours: pd.DataFrame, published: pd.DataFrame) -> None:
    assert len(ours) == 2357
    assert ours.index.equals(published.index)
    np.testing.assert_array_equal(ours["frequency"], published["frequency"])
    np.testing.assert_allclose(ours["recency"].round(2), published["recency"], atol=1e-9)
    np.testing.assert_allclose(ours["T"].round(2), published["T"], atol=1e-9)
    np.testing.assert_allclose(ours["monetary_value"], published["monetary_value"], atol=0.01)


def test_split_reproduces_published_calibration_summary(split, published):
    _assert_matches_published(split, published)
    assert split.attrs["n_customers_first_seen_in_holdout"] == 0
    assert split.attrs["calibration_end"] == CAL_END
    assert split.attrs["observation_end"] == OBS_END
    assert split.attrs["holdout_duration"] == pytest.approx(39.0)  # 273 days / 7
    assert split.attrs["time_unit"] == "weeks"


def test_summarize_of_calibration_rows_reproduces_published_summary(tx, published):
    calibration = tx[tx["date"] <= CAL_END]
    ours = summarize_transactions(
        calibration, monetary_value_col="amount", observation_end=CAL_END, duplicate_rows="keep"
    )
    _assert_matches_published(ours, published)
    # T of a first purchase on 1997-01-01 is (1997-09-30 - 1997-01-01) / 7 = 272 / 7 weeks
    assert ours.loc["00004", "T"] == 272 / 7


def test_holdout_has_1882_repeat_transactions(split):
    assert split["frequency_holdout"].dtype == np.int64
    assert split["frequency_holdout"].sum() == 1882
    # holdout value columns are consistent with each other
    hold = split[split["frequency_holdout"] > 0]
    np.testing.assert_allclose(
        hold["monetary_value_holdout"] * hold["frequency_holdout"], hold["total_value_holdout"]
    )
    assert (split.loc[split["frequency_holdout"] == 0, "monetary_value_holdout"] == 0).all()


def test_holdout_counts_match_an_independent_count(tx, split):
    """Distinct purchase days after calibration_end, counted with plain pandas."""
    days = tx.assign(day=tx["date"].dt.normalize()).drop_duplicates(["customer_id", "day"])
    expected = (
        days[days["day"] > CAL_END].groupby("customer_id").size().reindex(split.index).fillna(0)
    )
    np.testing.assert_array_equal(split["frequency_holdout"], expected.astype(int))


def test_master_file_summary():
    master = load_cdnow_master_transactions()
    rfm = calibration_holdout_split(
        master, CAL_END, OBS_END, monetary_value_col="amount", duplicate_rows="keep"
    )
    assert rfm.attrs["n_duplicate_rows"] == 255
    assert len(rfm) == 23_570  # the whole cohort bought in the first quarter of 1997
    assert rfm.index.is_monotonic_increasing
    assert rfm["first_purchase"].max() <= pd.Timestamp("1997-03-31")


def test_the_sample_has_21_genuine_exact_duplicate_rows(tx, published):
    """Same customer, day, quantity and price: real purchases the published zbar counts."""
    assert int(tx.duplicated().sum()) == 21
    with pytest.warns(DataWarning, match=r"21 rows \(0\.3% of 6,919\) are exact copies"):
        warned = calibration_holdout_split(tx, CAL_END, OBS_END, monetary_value_col="amount")
    assert warned.attrs["n_duplicate_rows"] == 21
    _assert_matches_published(warned, published)  # kept by default: the numbers stand
    with pytest.warns(DataWarning, match="Dropped 21 rows"):
        dropped = calibration_holdout_split(
            tx, CAL_END, OBS_END, monetary_value_col="amount", duplicate_rows="drop"
        )
    changed = ~np.isclose(dropped["monetary_value"], published["monetary_value"], atol=0.006)
    assert changed.any()  # dropping them would move the published spend
