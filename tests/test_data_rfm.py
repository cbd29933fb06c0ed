"""summarize_transactions, calibration_holdout_split, read_transactions and compress.

Hand-worked examples pin the definitions (repeat transactions, same-day merge, T to the
observation end's date, mean repeat value); a plain-Python reference implementation
(one loop per customer, dictionaries, datetime arithmetic) checks the NumPy core on
random logs for every id path (dense ints, sparse ints, short/long/prefixed text ids,
object and Python-string dtypes).
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from clvbayes.data import (
    CompressedRFM,
    DataError,
    calibration_holdout_split,
    compress,
    read_transactions,
    summarize_transactions,
)

# ---------------------------------------------------------------------------------------
# an independent reference: plain Python, one customer at a time


def reference_summary(ids, dates, amounts, end, *, unit_days=7.0, cal=None):
    """RFM by loops over dicts of calendar days (the definition, written out)."""
    days = defaultdict(lambda: defaultdict(float))
    for cid, when, amount in zip(ids, dates, amounts, strict=True):
        days[cid][pd.Timestamp(when).normalize()] += amount
    end = pd.Timestamp(end).normalize()
    cal = None if cal is None else pd.Timestamp(cal).normalize()
    out = {}
    for cid, per_day in days.items():
        in_cal = sorted(d for d in per_day if cal is None or d <= cal)
        if not in_cal:
            continue
        first, last = in_cal[0], in_cal[-1]
        x = len(in_cal) - 1
        stop = end if cal is None else cal
        row = {
            "frequency": x,
            "recency": (last - first).days / unit_days,
            "T": (stop - first).days / unit_days,
            "monetary_value": sum(per_day[d] for d in in_cal[1:]) / x if x else 0.0,
            "first_purchase": first,
        }
        if cal is not None:
            hold = [d for d in per_day if d > cal]
            row["frequency_holdout"] = len(hold)
            row["total_value_holdout"] = sum(per_day[d] for d in hold)
        out[cid] = row
    return pd.DataFrame.from_dict(out, orient="index").sort_index()


def random_log(rng, n_rows, n_customers, id_kind):
    who = rng.integers(0, n_customers, n_rows)
    if id_kind == "int":
        ids = pd.Series(who * 3 + 5)  # dense range
    elif id_kind == "sparse_int":
        ids = pd.Series(who.astype(np.int64) * 10**12 - 7)  # hashed, negative ids too
    elif id_kind == "str":
        ids = pd.Series([f"C{i:05d}" for i in who], dtype="str")
    elif id_kind == "varstr":
        ids = pd.Series([str(i) for i in who], dtype="str")
    elif id_kind == "prefixed":
        ids = pd.Series([f"customer-{i:012d}" for i in who], dtype="str")
    elif id_kind == "long":
        ids = pd.Series([f"{i:03d}-{'x' * (i % 11)}-tail" for i in who], dtype="str")
    elif id_kind == "object":
        ids = pd.Series([f"id{i}" for i in who], dtype=object)
    elif id_kind == "python_string":
        ids = pd.Series([f"id{i}" for i in who], dtype=pd.StringDtype("python"))
    else:
        raise AssertionError(id_kind)
    start = np.datetime64("2023-01-01T00:00:00", "s")
    seconds = rng.integers(0, 90 * 86_400, n_rows)
    dates = start + seconds.astype("timedelta64[s]")
    amounts = np.round(rng.gamma(2.0, 10.0, n_rows), 2)
    return pd.DataFrame({"customer_id": ids, "date": dates, "amount": amounts})


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


ID_KINDS = ["int", "sparse_int", "str", "varstr", "prefixed", "long", "object", "python_string"]


@pytest.mark.parametrize("id_kind", ID_KINDS)
def test_summary_matches_reference_for_every_id_path(rng, id_kind):
    tx = random_log(rng, 3000, 400, id_kind)
    end = "2023-04-15"
    ours = summarize_transactions(tx, monetary_value_col="amount", observation_end=end)
    ref = reference_summary(tx["customer_id"], tx["date"], tx["amount"], end)
    assert ours.index.tolist() == ref.index.tolist()  # sorted ids, nothing lost
    assert ours.index.dtype == tx["customer_id"].dtype  # id dtype preserved
    np.testing.assert_array_equal(ours["frequency"], ref["frequency"])
    for col in ("recency", "T", "monetary_value"):
        np.testing.assert_allclose(ours[col], ref[col].astype(float), rtol=1e-12, atol=1e-9)
    assert (ours["first_purchase"].to_numpy() == ref["first_purchase"].to_numpy()).all()


@pytest.mark.parametrize("id_kind", ["int", "str", "object"])
def test_split_matches_reference(rng, id_kind):
    tx = random_log(rng, 3000, 400, id_kind)
    cal, end = "2023-02-20", "2023-04-15"
    with pytest.warns(UserWarning, match="first purchase after calibration_end"):
        ours = calibration_holdout_split(tx, cal, end, monetary_value_col="amount")
    ref = reference_summary(tx["customer_id"], tx["date"], tx["amount"], end, cal=cal)
    assert ours.index.tolist() == ref.index.tolist()
    for col in ("frequency", "frequency_holdout"):
        np.testing.assert_array_equal(ours[col], ref[col])
    for col in ("recency", "T", "monetary_value", "total_value_holdout"):
        np.testing.assert_allclose(ours[col], ref[col].astype(float), rtol=1e-12, atol=1e-9)
    n_new = tx["customer_id"].nunique() - len(ref)
    assert n_new > 0
    assert ours.attrs["n_customers_first_seen_in_holdout"] == n_new
    assert ours.attrs["n_customers"] == len(ref)


# ---------------------------------------------------------------------------------------
# hand-worked examples


@pytest.fixture
def small():
    return pd.DataFrame(
        {
            "customer_id": ["b", "a", "a", "a", "a", "c"],
            "date": pd.to_datetime(
                [
                    "2024-01-08 12:00",
                    "2024-01-01 09:00",
                    "2024-01-01 17:30",  # same day as the row above: merged
                    "2024-01-15 10:00",
                    "2024-01-29 08:00",
                    "2024-01-29 20:00",
                ],
                format="ISO8601",
            ),
            "amount": [7.0, 10.0, 5.0, 20.0, 30.0, 4.0],
        }
    )


def test_hand_example_in_days(small):
    out = summarize_transactions(small, monetary_value_col="amount", time_unit="days")
    assert out.index.tolist() == ["a", "b", "c"]
    assert out.index.name == "customer_id"
    assert out["frequency"].tolist() == [2, 0, 0]
    assert out["recency"].tolist() == [28.0, 0.0, 0.0]
    assert out["T"].tolist() == [28.0, 21.0, 0.0]  # default end: last date, 2024-01-29
    assert out["monetary_value"].tolist() == [25.0, 0.0, 0.0]  # (20 + 30) / 2
    assert out["first_purchase"].tolist() == list(
        pd.to_datetime(["2024-01-01", "2024-01-08", "2024-01-29"])
    )
    assert out["frequency"].dtype == np.int64
    assert out["recency"].dtype == np.float64 and out["T"].dtype == np.float64
    assert out.attrs["observation_end"] == "2024-01-29"
    assert out.attrs["n_transactions"] == 6
    assert out.attrs["n_transactions_merged"] == 5
    assert out.attrs["n_customers"] == 3
    assert out.attrs["time_unit"] == "days"


def test_weeks_are_days_over_seven_never_rounded(small):
    days = summarize_transactions(small, observation_end="2024-02-03", time_unit="days")
    weeks = summarize_transactions(small, observation_end="2024-02-03")
    np.testing.assert_array_equal(weeks["T"], days["T"] / 7)
    assert weeks.loc["b", "T"] == 26 / 7
    assert "monetary_value" not in weeks.columns  # only with monetary_value_col


def test_T_runs_to_the_observation_end_date():
    tx = pd.DataFrame({"customer_id": ["x"], "date": pd.to_datetime(["1997-01-01 15:00"])})
    for end in ("1997-09-30", "1997-09-30 23:59", pd.Timestamp("1997-09-30 08:00")):
        out = summarize_transactions(tx, observation_end=end)
        assert out.loc["x", "T"] == 272 / 7
        assert out.attrs["observation_end"] == "1997-09-30"


def test_exact_times_without_same_day_merge(small):
    out = summarize_transactions(
        small,
        monetary_value_col="amount",
        merge_same_day=False,
        time_unit="days",
        observation_end="2024-01-29 20:00",
    )
    a = out.loc["a"]
    assert a["frequency"] == 3  # 09:00 and 17:30 on 2024-01-01 are two transactions now
    assert a["recency"] == pytest.approx(28 - 1 / 24)  # 2024-01-01 09:00 -> 01-29 08:00
    assert a["T"] == pytest.approx(28 + 11 / 24)
    assert a["monetary_value"] == pytest.approx((5 + 20 + 30) / 3)
    assert out.loc["c", "T"] == 0.0
    # identical timestamps of one customer are one transaction
    dup = pd.concat([small, small.iloc[[1]]])
    again = summarize_transactions(dup, merge_same_day=False, time_unit="days")
    assert again.loc["a", "frequency"] == 3


def test_leading_zero_string_ids_stay_strings():
    tx = pd.DataFrame(
        {
            "customer_id": ["007", "010", "007", "0100"],
            "date": ["2024-01-01"] * 2 + ["2024-01-05"] * 2,
        }
    )
    out = summarize_transactions(tx)
    assert out.index.tolist() == ["007", "010", "0100"]
    assert out.loc["007", "frequency"] == 1


def test_integer_ids_keep_their_dtype_and_order():
    tx = pd.DataFrame(
        {"customer_id": np.array([30, 4, 1000, 4], dtype=np.int32), "date": ["2024-01-01"] * 4}
    )
    out = summarize_transactions(tx)
    assert out.index.tolist() == [4, 30, 1000]
    assert out.index.dtype == np.int32


def test_customer_id_may_be_the_index(small):
    indexed = small.set_index("customer_id")
    pd.testing.assert_frame_equal(
        summarize_transactions(indexed, monetary_value_col="amount"),
        summarize_transactions(small, monetary_value_col="amount"),
    )


def test_other_column_names(small):
    renamed = small.rename(columns={"customer_id": "cust", "date": "ts", "amount": "value"})
    out = summarize_transactions(
        renamed, customer_id_col="cust", datetime_col="ts", monetary_value_col="value"
    )
    assert out.index.name == "cust"
    assert out.loc["a", "monetary_value"] == 25.0


def test_text_and_integer_dates():
    text = pd.DataFrame({"customer_id": [1, 1], "date": ["01/02/2024", "15/02/2024"]})
    out = summarize_transactions(text, datetime_format="%d/%m/%Y", time_unit="days")
    assert out.loc[1, "recency"] == 14.0
    ints = pd.DataFrame({"customer_id": [1, 1], "date": [19970101, 19970108]})
    out = summarize_transactions(ints, datetime_format="%Y%m%d")
    assert out.loc[1, "recency"] == 1.0


def test_timezone_aware_days_follow_local_time():
    dates = pd.to_datetime(["2024-01-01 23:30", "2024-01-02 00:30"]).tz_localize("Europe/Paris")
    tx = pd.DataFrame({"customer_id": ["a", "a"], "date": dates})
    # in UTC both are on 2024-01-01; in Paris they are two calendar days
    out = summarize_transactions(tx, time_unit="days")
    assert out.loc["a", "frequency"] == 1
    assert out["first_purchase"].dt.tz is not None
    # exact mode measures elapsed time: 2024-03-30 12:00 -> 03-31 12:00 is 23 h (DST)
    dst = pd.to_datetime(["2024-03-30 12:00", "2024-03-31 12:00"]).tz_localize("Europe/Paris")
    tx = pd.DataFrame({"customer_id": ["a", "a"], "date": dst})
    out = summarize_transactions(tx, time_unit="days", merge_same_day=False)
    assert out.loc["a", "recency"] == pytest.approx(23 / 24)
    # a naive end is read in the data's zone
    out = summarize_transactions(tx, time_unit="days", observation_end="2024-04-01")
    assert out.loc["a", "T"] == 2.0
    # America/Santiago skipped midnight on 2023-09-03 (00:00 -> 01:00): still one day
    chile = pd.to_datetime(["2023-09-02 12:00", "2023-09-03 12:00", "2023-09-05 10:00"])
    tx = pd.DataFrame(
        {"customer_id": ["a", "b", "b"], "date": chile.tz_localize("America/Santiago")}
    )
    out = summarize_transactions(tx, time_unit="days", observation_end="2023-09-06")
    assert out["T"].tolist() == [4.0, 3.0] and out.loc["b", "recency"] == 2.0
    assert out.loc["b", "first_purchase"] == pd.Timestamp("2023-09-03 01:00", tz="America/Santiago")


def test_negative_amounts_drop_is_reported(small):
    tx = small.copy()
    tx.loc[len(tx)] = ["a", pd.Timestamp("2024-01-20"), -20.0]  # a refund
    tx.loc[len(tx)] = ["z", pd.Timestamp("2024-01-21"), -3.0]  # only a refund
    with pytest.warns(UserWarning, match="Dropped 2 rows with negative amounts"):
        out = summarize_transactions(tx, monetary_value_col="amount", negative_amounts="drop")
    expected = summarize_transactions(small, monetary_value_col="amount")
    pd.testing.assert_frame_equal(out.drop(columns=[]), expected, check_like=True, check_exact=True)
    assert out.attrs["n_negative_amount_rows_dropped"] == 2
    assert out.attrs["n_customers_dropped_negative_amounts"] == 1
    assert out.attrs["n_transactions"] == 8


def test_negative_amounts_keep_nets_the_day(small):
    tx = small.copy()
    tx.loc[len(tx)] = ["a", pd.Timestamp("2024-01-15 18:00"), -5.0]  # partial refund, same day
    out = summarize_transactions(tx, monetary_value_col="amount", negative_amounts="keep")
    assert out.loc["a", "monetary_value"] == (15.0 + 30.0) / 2
    assert out.attrs["n_negative_amount_rows"] == 1


def test_split_hand_example():
    tx = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "a", "b", "c"],
            "date": pd.to_datetime(
                [
                    "2024-01-01",
                    "2024-01-10 23:00",  # on calibration_end: calibration
                    "2024-01-11 01:00",  # holdout
                    "2024-01-11 09:00",  # same holdout day: merged
                    "2024-01-20",
                    "2024-01-05",
                    "2024-01-12",  # first seen in holdout
                ],
                format="ISO8601",
            ),
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    with pytest.warns(UserWarning, match="1 customer"):
        out = calibration_holdout_split(
            tx, "2024-01-10", "2024-01-24", monetary_value_col="amount", time_unit="days"
        )
    assert out.index.tolist() == ["a", "b"]
    assert out["frequency"].tolist() == [1, 0]
    assert out["recency"].tolist() == [9.0, 0.0]
    assert out["T"].tolist() == [9.0, 5.0]
    assert out["monetary_value"].tolist() == [2.0, 0.0]
    assert out["frequency_holdout"].tolist() == [2, 0]
    assert out["frequency_holdout"].dtype == np.int64
    assert out["total_value_holdout"].tolist() == [12.0, 0.0]
    assert out["monetary_value_holdout"].tolist() == [6.0, 0.0]
    assert out.attrs["holdout_duration"] == 14.0
    assert out.attrs["calibration_end"] == "2024-01-10"
    assert out.attrs["observation_end"] == "2024-01-24"
    assert out.attrs["n_customers_first_seen_in_holdout"] == 1


def test_attrs_survive_parquet(tmp_path, small):
    out = summarize_transactions(small, monetary_value_col="amount")
    out.to_parquet(tmp_path / "rfm.parquet")  # attrs must be JSON-serialisable
    back = pd.read_parquet(tmp_path / "rfm.parquet")
    assert back.attrs["observation_end"] == "2024-01-29"


# ---------------------------------------------------------------------------------------
# read_transactions


def test_read_transactions_files(tmp_path, small):
    tx = small.assign(customer_id=["007", "010", "010", "010", "010", "1"])
    csv = tmp_path / "tx.csv"
    tx.to_csv(csv, index=False)
    from_csv = read_transactions(csv)
    assert from_csv["customer_id"].tolist() == tx["customer_id"].tolist()  # zeros kept
    parquet = tmp_path / "tx.parquet"
    tx.to_parquet(parquet)
    from_parquet = read_transactions(parquet)
    a = summarize_transactions(from_csv, monetary_value_col="amount")
    b = summarize_transactions(from_parquet, monetary_value_col="amount")
    pd.testing.assert_frame_equal(a, b, check_index_type=False, check_dtype=False)
    assert read_transactions(tx) is tx  # DataFrames pass through
    with pytest.raises(DataError, match=r"Cannot tell the format of .*tx\.xlsx"):
        read_transactions(tmp_path / "tx.xlsx")


# ---------------------------------------------------------------------------------------
# compress


def test_compress_hand_example():
    rfm = pd.DataFrame(
        {"frequency": [0, 2, 0, 2, 1], "recency": [0.0, 3.0, 0.0, 3.0, 1.0], "T": [5.0] * 5},
        index=pd.Index(list("vwxyz"), name="customer_id"),
    )
    c = compress(rfm)
    assert isinstance(c, CompressedRFM)
    assert c.n_customers == 5 and c.n_unique == 3
    assert c["frequency"].tolist() == [0, 1, 2]  # sorted unique rows
    assert c.values["recency"].tolist() == [0.0, 1.0, 3.0]
    assert c.counts.tolist() == [2, 1, 2]
    assert c.inverse.tolist() == [0, 2, 0, 2, 1]
    assert c.counts.dtype == np.int64 and c.inverse.dtype == np.int64
    assert c.customer_ids.equals(rfm.index)
    assert c.columns == ("frequency", "recency", "T")
    draws = np.arange(6.0).reshape(2, 3)  # 2 draws x 3 unique rows
    np.testing.assert_array_equal(c.expand(draws), [[0, 2, 0, 2, 1], [3, 5, 3, 5, 4]])
    np.testing.assert_array_equal(c.expand(draws.T, axis=0), c.expand(draws).T)
    with pytest.raises(ValueError, match="needs length 3"):
        c.expand(np.zeros(4))
    with pytest.raises(AttributeError):
        c.counts = None  # frozen


def test_compress_weighted_sum_equals_full_sum(rng):
    """sum_i f(row_i) == sum_k counts_k f(unique_k), the use in likelihoods."""
    n = 20_000
    rfm = pd.DataFrame(
        {
            "frequency": rng.integers(0, 5, n),
            "monetary_value": np.round(rng.gamma(2, 5, n), 0),
        }
    )
    c = compress(rfm, columns=("frequency", "monetary_value"))
    assert c.n_unique < n
    f = rfm["frequency"].to_numpy() * np.log1p(rfm["monetary_value"].to_numpy())
    fu = c["frequency"] * np.log1p(c["monetary_value"])
    assert np.sum(c.counts * fu) == pytest.approx(f.sum(), rel=1e-12)
    np.testing.assert_array_equal(c.expand(fu), f)


def test_compress_missing_column():
    with pytest.raises(DataError, match=r"Missing column\(s\) 'T' in the RFM table"):
        compress(pd.DataFrame({"frequency": [1], "recency": [1.0]}))


# ---------------------------------------------------------------------------------------
# layering


def test_data_layer_imports_without_pymc():
    code = (
        "import sys, clvbayes.data, clvbayes.datasets\n"
        "bad = [m for m in ('pymc', 'pytensor') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dates_before_1970():
    dates = pd.to_datetime(["1960-01-01 10:00", "1969-12-31 23:00", "1970-01-02 00:00"])
    tx = pd.DataFrame({"customer_id": [1, 1, 2], "date": dates})
    out = summarize_transactions(tx, time_unit="days")
    assert out["recency"].tolist() == [3652.0, 0.0]
    assert out["T"].tolist() == [3654.0, 0.0]
    exact = summarize_transactions(tx, time_unit="days", merge_same_day=False)
    assert exact.loc[1, "recency"] == pytest.approx(3652 + 13 / 24)
