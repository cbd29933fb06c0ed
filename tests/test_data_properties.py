"""Properties of the RFM summary that hold for every transaction log (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clvbayes.data import calibration_holdout_split, compress, summarize_transactions

START = pd.Timestamp("2023-03-20")  # includes a DST change in many zones; naive here
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e", "0007", "007"]),  # customer
        st.integers(0, 40),  # day
        st.integers(0, 24 * 60 - 1),  # minute of the day
        st.integers(0, 10_000),  # cents
    ),
    min_size=1,
    max_size=60,
)


def to_frame(raw) -> pd.DataFrame:
    ids, days, minutes, cents = zip(*raw, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "date": START
            + pd.to_timedelta(np.array(days), unit="D")
            + pd.to_timedelta(np.array(minutes), unit="min"),
            "amount": np.array(cents) / 100,
        }
    )


def summarize(tx: pd.DataFrame, **kw) -> pd.DataFrame:
    kw.setdefault("observation_end", START + pd.Timedelta(days=45))
    return summarize_transactions(tx, monetary_value_col="amount", **kw)


@SETTINGS
@given(rows)
def test_frequency_recency_T_bounds(raw):
    tx = to_frame(raw)
    out = summarize(tx)
    distinct_days = tx.assign(day=tx["date"].dt.normalize()).groupby("customer_id")["day"].nunique()
    distinct_days = distinct_days.reindex(out.index)
    assert (out["frequency"] <= distinct_days - 1).all()
    assert (out["frequency"] == distinct_days - 1).all()  # same-day merge: exactly
    assert (out["recency"] >= 0).all()
    assert (out["recency"] <= out["T"]).all()
    assert ((out["frequency"] == 0) == (out["recency"] == 0)).all()  # days are distinct
    assert ((out["frequency"] > 0) | (out["monetary_value"] == 0)).all()
    assert len(out) == tx["customer_id"].nunique()
    assert out.index.is_monotonic_increasing
    # exact times: still within bounds, never fewer transactions than whole days
    exact = summarize(tx, merge_same_day=False)
    assert (exact["frequency"] >= out["frequency"]).all()
    assert (exact["recency"] <= exact["T"]).all()


@SETTINGS
@given(rows, st.randoms(use_true_random=False))
def test_invariant_to_row_order(raw, random):
    tx = to_frame(raw)
    shuffled = tx.sample(frac=1.0, random_state=random.randint(0, 2**31)).reset_index(drop=True)
    expected = summarize(tx)
    pd.testing.assert_frame_equal(summarize(shuffled), expected, check_exact=False, rtol=1e-12)


@SETTINGS
@given(rows, st.data())
def test_same_day_purchases_are_one_transaction(raw, data):
    """Splitting a purchase into several rows on the same day changes nothing."""
    tx = to_frame(raw)
    k = data.draw(st.integers(0, len(tx) - 1))
    minute = data.draw(st.integers(0, 24 * 60 - 1))
    row = tx.iloc[[k]]
    part = row.assign(
        amount=row["amount"] / 4,
        date=row["date"].dt.normalize() + pd.Timedelta(minutes=minute),
    )
    split = pd.concat([tx.drop(index=k), part, part, row.assign(amount=row["amount"] / 2)])
    a, b = summarize(tx), summarize(split)
    pd.testing.assert_frame_equal(
        b[["frequency", "recency", "T"]], a[["frequency", "recency", "T"]]
    )
    np.testing.assert_allclose(b["monetary_value"], a["monetary_value"], rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:.*first purchase after calibration_end:UserWarning")
@SETTINGS
@given(rows, st.integers(0, 40))
def test_split_is_consistent_with_summaries(raw, cal_day):
    """Calibration part = summary of the calibration rows; holdout counts add up."""
    tx = to_frame(raw)
    cal = (tx["date"].min().normalize() + pd.Timedelta(days=cal_day)).normalize()
    if cal > tx["date"].max().normalize():
        cal = tx["date"].max().normalize()
    end = START + pd.Timedelta(days=45)
    out = calibration_holdout_split(tx, cal, end, monetary_value_col="amount")
    before = tx[tx["date"] < cal + pd.Timedelta(days=1)]
    calib = summarize(before, observation_end=cal)
    pd.testing.assert_frame_equal(out[calib.columns], calib, check_exact=False, rtol=1e-12)
    full = summarize(tx, observation_end=end).loc[out.index]
    # every distinct purchase day of a cohort customer is in exactly one period
    np.testing.assert_array_equal(out["frequency"] + out["frequency_holdout"], full["frequency"])
    n_new = tx["customer_id"].nunique() - before["customer_id"].nunique()
    assert out.attrs["n_customers_first_seen_in_holdout"] == n_new


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=80
    ),
    st.integers(1, 3),
)
def test_compress_expand_round_trip(raw, n_draws):
    f, r, t = (np.array(c) for c in zip(*raw, strict=True))
    rfm = pd.DataFrame({"frequency": f, "recency": r * 0.5, "T": t + r * 0.5})
    c = compress(rfm)
    assert c.counts.sum() == len(rfm)
    assert c.n_unique == len(rfm.drop_duplicates())
    for col in c.columns:  # unique rows map back to every customer's own row
        np.testing.assert_array_equal(c.expand(c[col]), rfm[col].to_numpy())
    keys = list(zip(*(c[col] for col in c.columns), strict=True))
    assert keys == sorted(set(keys))  # unique and sorted
    draws = np.random.default_rng(0).normal(size=(n_draws, c.n_unique))
    expanded = c.expand(draws)
    assert expanded.shape == (n_draws, len(rfm))
    np.testing.assert_allclose((draws * c.counts).sum(axis=1), expanded.sum(axis=1))
