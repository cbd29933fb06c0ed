"""Segmentation on small hand-made tables whose answers are worked out by hand or brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clvbayes import segments as seg
from clvbayes.segments import (
    SEGMENT_RULES,
    SegmentRule,
    churn_risk,
    clv_deciles,
    clv_to_cac,
    label_customers,
    named_segments,
    rf_table,
    rfm_scores,
)


def _rfm(frequency, recency, T, monetary=None, ids=None):
    n = len(frequency)
    df = pd.DataFrame(
        {"frequency": frequency, "recency": recency, "T": T},
        index=pd.Index(ids or [f"c{i:02d}" for i in range(n)], name="customer_id"),
    )
    if monetary is not None:
        df["monetary_value"] = monetary
    return df


def _brute_score(values, q, higher_is_better=True):
    """1 + floor(q * share strictly worse), by an explicit double loop."""
    out = []
    for v in values:
        worse = sum((w < v) if higher_is_better else (w > v) for w in values)
        out.append(min(1 + (q * worse) // len(values), q))
    return out


# ---------------------------------------------------------------- RFM scores
def test_rfm_scores_by_hand():
    rfm = _rfm([0, 1, 2, 5], [0.0, 2, 8, 9], [10.0, 10, 10, 10], monetary=[0.0, 30, 10, 20])
    s = rfm_scores(rfm, q=4)
    # days since last purchase: 10, 8, 2, 1 -> most recent gets the top score
    assert s["time_since_last_purchase"].tolist() == [10, 8, 2, 1]
    assert s["r_score"].tolist() == [1, 2, 3, 4]
    assert s["f_score"].tolist() == [1, 2, 3, 4]
    # M among the three repeat customers (30, 10, 20): 3 strictly below 30 -> 0, 1, 2 of 3
    assert s["m_score"].tolist() == [1, 1 + (4 * 2) // 3, 1, 1 + (4 * 1) // 3]
    assert s["rfm_code"].tolist() == ["111", "223", "331", "442"]
    assert s.attrs["rfm_q"] == 4
    assert s.index.equals(rfm.index)


def test_rfm_scores_ties_share_a_score_and_ignore_row_order():
    freq = [0, 0, 0, 1, 1, 2, 3, 5, 8, 13]
    rfm = _rfm(freq, [0.0] * 3 + [1.0] * 7, [20.0] * 10)
    s = rfm_scores(rfm)
    assert s["f_score"].tolist() == [1, 1, 1, 2, 2, 3, 4, 4, 5, 5]
    assert s["f_score"].tolist() == _brute_score(freq, 5)
    shuffled = rfm.sample(frac=1.0, random_state=3)
    s2 = rfm_scores(shuffled)
    pd.testing.assert_frame_equal(s2.loc[s.index], s)


def test_rfm_scores_against_brute_force_on_random_data(rng):
    n = 57
    freq = rng.integers(0, 6, n)
    T = rng.uniform(10, 40, n).round(1)
    rec = np.where(freq > 0, T * rng.uniform(0, 1, n).round(2), 0.0)
    money = np.where(freq > 0, rng.integers(5, 50, n).astype(float), 0.0)
    s = rfm_scores(_rfm(freq, rec, T, money))
    assert s["r_score"].tolist() == _brute_score(list(T - rec), 5, higher_is_better=False)
    assert s["f_score"].tolist() == _brute_score(list(freq), 5)
    repeat = freq > 0
    expected_m = np.ones(n, dtype=int)
    expected_m[repeat] = _brute_score(list(money[repeat]), 5)
    assert s["m_score"].tolist() == expected_m.tolist()
    assert (s.loc[freq == 0, "f_score"] == 1).all()
    assert s[["r_score", "f_score", "m_score"]].dtypes.eq(np.int64).all()


def test_rfm_scores_without_monetary_and_bad_input():
    s = rfm_scores(_rfm([0, 1], [0.0, 1.0], [2.0, 2.0]))
    assert "m_score" not in s.columns and s["rfm_code"].tolist() == ["11", "33"]
    with pytest.raises(ValueError, match="needs column"):
        rfm_scores(pd.DataFrame({"frequency": [1]}))
    with pytest.raises(ValueError, match="integer >= 2"):
        rfm_scores(_rfm([0], [0.0], [1.0]), q=1)
    with pytest.raises(ValueError, match="missing or infinite"):
        rfm_scores(_rfm([0, 1], [0.0, np.nan], [1.0, 2.0]))


# ---------------------------------------------------------------- recency x frequency grid
def test_rf_table_counts_and_means():
    rfm = _rfm([0, 0, 1, 2, 5, 5], [0.0, 0, 1, 5, 9, 9], [10.0, 4, 10, 10, 10, 10])
    scores = rfm_scores(rfm, q=3)
    counts = rf_table(scores)
    assert counts.shape == (3, 3)
    assert counts.index.tolist() == [3, 2, 1] and counts.columns.tolist() == [1, 2, 3]
    assert counts.to_numpy().sum() == len(rfm)
    brute = pd.crosstab(scores["r_score"], scores["f_score"])
    for r in brute.index:
        for f in brute.columns:
            assert counts.loc[r, f] == brute.loc[r, f]
    assert counts.dtypes.eq(np.int64).all()

    clv = pd.Series([1.0, 2.0, 3.0, 4.0, 10.0, 20.0], index=rfm.index)
    means = rf_table(scores, values=clv)
    for (r, f), grp in scores.assign(v=clv).groupby(["r_score", "f_score"]):
        assert means.loc[r, f] == pytest.approx(grp["v"].mean())
    empty = counts.to_numpy() == 0
    assert np.isnan(means.to_numpy()[empty]).all()
    # an RFM table is scored on the fly; a column name works too
    pd.testing.assert_frame_equal(rf_table(rfm, q=3), counts)
    pd.testing.assert_frame_equal(rf_table(scores.assign(v=clv), values="v"), means)


# ---------------------------------------------------------------- CLV deciles
def test_clv_deciles_top_is_one():
    clv = pd.Series(np.arange(20, dtype=float)[::-1], index=[f"c{i}" for i in range(20)])
    d = clv_deciles(clv)
    # 20 distinct values: two per decile, the largest two in decile 1
    assert d.tolist() == [k for k in range(1, 11) for _ in range(2)]
    assert d.name == "clv_decile" and d.dtype == np.int64


def test_clv_deciles_ties_and_arrays():
    d = clv_deciles(np.array([5.0, 5.0, 5.0, 1.0]), n=4)
    assert d.tolist() == [1, 1, 1, 4]
    assert clv_deciles(pd.Series([3.0, 1.0, 2.0]), n=3).tolist() == [1, 3, 2]
    with pytest.raises(ValueError, match="missing"):
        clv_deciles(pd.Series([1.0, np.nan]))


# ---------------------------------------------------------------- churn risk
def test_churn_risk_by_hand():
    t = pd.DataFrame(
        {
            "frequency": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            "monetary_value": [0.0] + [10.0] * 9,
            "p_alive_mean": [0.1, 0.1, 0.9, 0.2, 0.9, 0.3, 0.6, 0.1, 0.45, 0.55],
        }
    )
    # past value 0, 10, ..., 90; its 0.8 quantile is 72 -> only 80 and 90 are "high"
    assert np.quantile(t["frequency"] * t["monetary_value"], 0.8) == pytest.approx(72)
    flag = churn_risk(t)
    assert flag.tolist() == [False] * 8 + [True, False]  # 80 with P(alive) .45; 90 has .55
    # a looser value bar and a higher P(alive) threshold flag more
    loose = churn_risk(t, value_quantile=0.5, p_alive_threshold=0.6)
    assert loose[loose].index.tolist() == [5, 7, 8, 9]
    assert flag.dtype == bool and flag.name == "churn_risk"
    with pytest.raises(ValueError, match="value_quantile"):
        churn_risk(t, value_quantile=1.0)
    with pytest.raises(ValueError, match="needs column"):
        churn_risk(t.drop(columns="p_alive_mean"))


# ---------------------------------------------------------------- named segments
def _segment_table():
    # one customer per rule, chosen by hand
    return pd.DataFrame(
        {
            "frequency": [5, 6, 3, 0, 0, 2, 4],
            "recency": [9.0, 2, 1, 0, 0, 5, 8],
            "T": [10.0, 10, 10, 1, 10, 10, 10],
            "monetary_value": [50.0, 40, 5, 0, 0, 10, 20],
            "p_alive_mean": [0.9, 0.3, 0.1, 1.0, 1.0, 0.6, 0.4],
            "clv_mean": [100.0, 20, 1, 8, 5, 10, 90],
        },
        index=pd.Index(list("abcdefg"), name="customer_id"),
    )


def test_named_segments_follow_the_rules_in_order():
    t = _segment_table()
    labels = named_segments(t)
    # a: top CLV and active -> best; b: past value 240 above the 0.8 quantile (208) and
    # P(alive) .3 -> at_risk; c: P(alive) .1 -> lapsed; d: no repeat, recent -> new;
    # e: no repeat, old -> one_time; f: nothing special -> others; g: 2nd CLV decile but
    # P(alive) .4, so not best, and past value 80 is not high -> others
    assert labels.tolist() == ["best", "at_risk", "lapsed", "new", "one_time", "others", "others"]
    assert labels.name == "segment"
    assert list(SEGMENT_RULES) == ["best", "at_risk", "lapsed", "new", "one_time"]


def test_named_segments_custom_rules_and_precomputed_columns():
    t = _segment_table()
    rules = {"whales": SegmentRule("CLV over 50", lambda x: x["clv_decile"] == 1)}
    assert named_segments(t, rules=rules).tolist() == ["whales"] + ["others"] * 6
    # given columns are used as they are
    forced = t.assign(churn_risk=False, clv_decile=10)
    assert "at_risk" not in named_segments(forced).tolist()
    with pytest.raises(ValueError, match="needs column"):
        named_segments(t[["frequency"]], rules={"x": SegmentRule("", lambda x: x["nope"] > 0)})


def test_label_customers_is_the_sum_of_the_parts():
    t = _segment_table()
    labels = label_customers(t)
    assert list(labels.columns) == list(seg.LABEL_COLUMNS)
    pd.testing.assert_series_equal(labels["segment"], named_segments(t))
    pd.testing.assert_series_equal(labels["clv_decile"], clv_deciles(t["clv_mean"]))
    pd.testing.assert_series_equal(labels["churn_risk"], churn_risk(t))
    pd.testing.assert_series_equal(labels["r_score"], rfm_scores(t)["r_score"])


def test_label_customers_without_clv_on_discrete_opportunities():
    """No spend model (BG/BB runs): R and F from periods - recency, value-free segments only."""
    t = pd.DataFrame(
        {"frequency": [0, 0, 3, 5, 1], "recency": [0, 0, 4, 6, 2], "periods": [6, 1, 6, 6, 6],
         "p_alive_mean": [0.1, 0.6, 0.3, 0.99, 0.4]},
        index=pd.Index(list("abcde"), name="customer_id"),
    )  # fmt: skip
    labels = label_customers(t, clv_col=None)
    assert list(labels.columns) == [c for c in seg.LABEL_COLUMNS
                                    if c not in ("m_score", "clv_decile", "churn_risk")]  # fmt: skip
    assert labels["time_since_last_purchase"].tolist() == [6, 1, 2, 0, 4]
    assert labels["rfm_code"].str.len().eq(2).all()  # R and F only
    assert labels["segment"].tolist() == ["lapsed", "active", "others", "active", "others"]
    assert set(labels["segment"]) <= {*seg.PURCHASE_ONLY_RULES, seg.OTHERS}


def test_label_customers_with_clv_on_discrete_opportunities():
    """BG/BB with a spend model: periods stands for T, and every label exists."""
    t = pd.DataFrame(
        {"frequency": [0, 0, 3, 5, 1], "recency": [0, 0, 4, 6, 2], "periods": [6, 1, 6, 6, 6],
         "monetary_value": [0.0, 0.0, 40.0, 25.0, 10.0],
         "p_alive_mean": [0.1, 0.6, 0.3, 0.99, 0.4], "clv_mean": [1.0, 8.0, 20.0, 90.0, 5.0]},
        index=pd.Index(list("abcde"), name="customer_id"),
    )  # fmt: skip
    labels = label_customers(t)
    assert list(labels.columns) == list(seg.LABEL_COLUMNS)
    assert labels["time_since_last_purchase"].tolist() == [6, 1, 2, 0, 4]
    assert labels["rfm_code"].str.len().eq(3).all()
    pd.testing.assert_frame_equal(
        labels.drop(columns="time_since_last_purchase"),
        label_customers(t.rename(columns={"periods": "T"})).drop(
            columns="time_since_last_purchase"
        ),
    )


# ---------------------------------------------------------------- CLV / CAC
def test_clv_to_cac_overall_and_per_group():
    t = pd.DataFrame({"clv_mean": [100.0, 30.0, 60.0], "channel": ["web", "shop", "web"]})
    np.testing.assert_array_equal(clv_to_cac(t, 20.0), [5.0, 1.5, 3.0])
    np.testing.assert_array_equal(clv_to_cac(t["clv_mean"], 20.0), [5.0, 1.5, 3.0])
    per = clv_to_cac(t, {"web": 50.0, "shop": 10.0}, by="channel")
    np.testing.assert_array_equal(per, [2.0, 3.0, 1.2])
    assert per.name == "clv_to_cac"
    per_series = clv_to_cac(t["clv_mean"], pd.Series({"web": 50.0, "shop": 10.0}), by=t["channel"])
    pd.testing.assert_series_equal(per_series, per)
    with pytest.raises(ValueError, match="pass by="):
        clv_to_cac(t, {"web": 1.0})
    with pytest.raises(ValueError, match="no CAC given for group"):
        clv_to_cac(t, {"web": 1.0}, by="channel")
    with pytest.raises(ValueError, match="positive"):
        clv_to_cac(t, 0.0)
