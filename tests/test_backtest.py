"""Rolling-origin backtests (clvbayes.backtest): windows, calibrated totals, the report folder,
and the coverage of the 90 % intervals of totals on data simulated from BG/NBD + Gamma-Gamma."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from clvbayes.backtest import (
    BacktestResult,
    backtest_section,
    calibrate_totals,
    calibrated_interval,
    rolling_windows,
    run_backtest,
)
from clvbayes.errors import DataError

START = pd.Timestamp("2021-01-04")


def simulate_log(seed: int, n: int = 2000, weeks: int = 78, acquisition_weeks: int = 12,
                 r=0.6, alpha=5.0, a=0.8, b=3.0, p=6.0, q=4.0, gamma=15.0) -> pd.DataFrame:  # fmt: skip
    """A transaction log from BG/NBD (purchases) and Gamma-Gamma (every transaction's value).

    First purchases on a uniform day of the first ``acquisition_weeks``; later purchases from
    :func:`clvbayes.math.bgnbd.simulate_purchase_times` up to ``weeks``, on whole days (two on
    one day are merged by the summary, rare at these rates).
    """
    from clvbayes.math import bgnbd

    rng = np.random.default_rng(seed)
    first_day = rng.integers(0, 7 * acquisition_weeks, n)
    lam = rng.standard_gamma(r, n) / alpha
    drop = rng.beta(a, b, n)
    length = (7 * weeks - first_day) / 7.0
    counts, times = bgnbd.simulate_purchase_times(rng, np.ones(n, bool), lam, drop, length)
    owner = np.repeat(np.arange(n), counts)
    day = np.concatenate([first_day, first_day[owner] + np.floor(times * 7).astype(int)])
    who = np.concatenate([np.arange(n), owner])
    day = np.minimum(day, 7 * weeks - 1)
    nu = rng.standard_gamma(q, n) / gamma
    amount = rng.standard_gamma(p, who.size) / nu[who]
    return pd.DataFrame({
        "customer_id": [f"c{i:05d}" for i in who],
        "date": START + pd.to_timedelta(day, unit="D"),
        "amount": np.round(amount, 2) + 0.01,
        "channel": np.where(who % 3 == 0, "web", "store"),
    })  # fmt: skip


# ---------------------------------------------------------------------------------------
# windows


def test_windows_tile_the_end_of_the_log_latest_first():
    w, notes = rolling_windows("2020-01-01", "2020-12-30", n_windows=3, holdout=13)
    assert notes == []
    assert [x.window for x in w] == [1, 2, 3]
    assert [str(x.observation_end.date()) for x in w] == ["2020-12-30", "2020-09-30", "2020-07-01"]
    assert [str(x.calibration_end.date()) for x in w] == ["2020-09-30", "2020-07-01", "2020-04-01"]
    assert all(x.holdout == 13 for x in w)
    assert w[2].calibration_length == pytest.approx(13.0)


def test_windows_the_data_are_too_short_for_are_named_not_run():
    w, notes = rolling_windows("2020-01-01", "2020-12-30", n_windows=5, holdout=13)
    assert len(w) == 3
    assert len(notes) == 2
    assert notes[0].startswith("window 4 (calibration end 2020-01-01")
    assert "0 weeks, shorter than the minimum 13 weeks" in notes[0]
    assert "too short" in notes[1] and notes[1].startswith("window 5")


def test_windows_step_and_minimum_calibration():
    w, notes = rolling_windows("2020-01-01", "2020-12-30", n_windows=4, holdout=8, step=4,
                               min_calibration=30)  # fmt: skip
    ends = [x.observation_end for x in w]
    assert all((a - b).days == 28 for a, b in itertools.pairwise(ends))
    assert all(x.calibration_length >= 30 for x in w) and not notes
    d, _ = rolling_windows("2020-01-01", "2020-03-01", n_windows=2, holdout=10, time_unit="days")
    assert [str(x.calibration_end.date()) for x in d] == ["2020-02-20", "2020-02-10"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holdout": 1.5}, "not a whole number of days"),
        ({"holdout": 0.1}, "shorter than one day"),
        ({"n_windows": 0}, "whole number >= 1"),
        ({"time_unit": "months"}, "time_unit must be one of"),
    ],
)
def test_window_options_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rolling_windows("2020-01-01", "2020-12-30", **kwargs)


def test_no_window_possible_is_a_data_error_before_any_fit():
    tx = simulate_log(1, n=50, weeks=20)
    with pytest.raises(DataError, match="too short for any window"):
        run_backtest(tx, n_windows=2, holdout=13)


# ---------------------------------------------------------------------------------------
# calibrated totals


def _totals(z_by_window: dict[int, list[float]], sd: float = 10.0) -> pd.DataFrame:
    rows = []
    for w, zs in z_by_window.items():
        for i, z in enumerate(zs):
            mean = 100.0
            h = 1.6448536269514722 * sd
            rows.append({"window": w, "forecast": "model", "grouping": "segment",
                         "group": str(i), "quantity": "purchases", "actual": mean + z * sd,
                         "predicted_mean": mean, "pi_lower": mean - h, "pi_upper": mean + h,
                         "z": z})  # fmt: skip
    return pd.DataFrame(rows)


def test_calibration_factor_is_the_rms_standardised_error_floored_at_one():
    t = _totals({1: [2.0, -2.0], 2: [2.0, -2.0]})
    c = calibrate_totals(t, 0.9)
    assert c["factors"]["model"]["purchases"] == pytest.approx(2.0)
    table = c["table"]
    np.testing.assert_allclose(table["calibrated_pi_upper"] - 100, 2 * 16.448536269514722)
    assert table["in_calibrated_pi"].all()
    small = calibrate_totals(_totals({1: [0.1, -0.1], 2: [0.2, 0.0]}), 0.9)
    assert small["factors"]["model"]["purchases"] == 1.0  # never below 1x
    assert small["factors_raw"]["model"]["purchases"] < 1.0
    np.testing.assert_allclose(small["table"]["calibrated_pi_upper"], small["table"]["pi_upper"])


def test_calibrated_coverage_is_measured_leaving_the_window_out():
    # window 2's big errors make window 1's factor large, but not its own
    t = _totals({1: [0.5, -0.5], 2: [4.0, -4.0]})
    c = calibrate_totals(t, 0.9)["table"]
    lowo = c.set_index(["window", "group"])["in_calibrated_pi_lowo"]
    assert lowo.loc[(1, "0")] and lowo.loc[(1, "1")]
    assert not lowo.loc[(2, "0")] and not lowo.loc[(2, "1")]  # k from window 1 alone is 1
    single = calibrate_totals(_totals({1: [1.0]}), 0.9)["table"]
    assert single["in_calibrated_pi_lowo"].isna().all()


def test_calibrated_interval_keeps_the_mean_and_is_never_narrower():
    lo, hi = calibrated_interval([10.0], [8.0], [15.0], 2.0)
    assert lo[0] == 6.0 and hi[0] == 20.0
    lo, hi = calibrated_interval([10.0], [8.0], [15.0], 0.5)
    assert lo[0] == 8.0 and hi[0] == 15.0
    lo, _ = calibrated_interval([1.0], [0.0], [3.0], 5.0)
    assert lo[0] == 0.0  # totals of counts and money stay >= 0


# ---------------------------------------------------------------------------------------
# a small backtest end to end


@pytest.fixture(scope="module")
def small_result() -> BacktestResult:
    tx = simulate_log(7, n=600)
    return run_backtest(tx, n_windows=3, holdout=13, by="channel", draws=300,
                        prediction_draws=300, seed=3)  # fmt: skip


def test_result_tables_have_every_grouping_window_and_quantity(small_result):
    r = small_result
    assert r.windows["window"].tolist() == [1, 2, 3]
    assert set(r.totals["grouping"]) == {"all", "segment", "clv_decile", "channel"}
    assert set(r.totals["quantity"]) == {"purchases", "revenue"}
    whole = r.totals[r.totals["grouping"] == "all"]
    assert len(whole) == 6
    for w, row in r.windows.set_index("window").iterrows():
        part = whole[(whole["window"] == w) & (whole["quantity"] == "purchases")]
        assert part["actual"].iloc[0] == row["actual_purchases"]
    # the groups of one grouping partition the base
    seg = r.totals[(r.totals["grouping"] == "channel") & (r.totals["quantity"] == "revenue")]
    np.testing.assert_allclose(seg.groupby("window")["actual"].sum().to_numpy(),
                               r.windows["actual_revenue"].to_numpy())  # fmt: skip
    assert (r.totals["pi_lower"] <= r.totals["predicted_mean"]).all()
    assert (r.totals["calibrated_pi_lower"] <= r.totals["pi_lower"] + 1e-9).all()
    assert (
        r.pit.groupby(["window", "quantity"])["count"]
        .sum()
        .eq(r.windows["n_customers"].iloc[0])
        .all()
    )
    assert set(r.baselines["rule"]) == {"model", "aov_frequency", "historical", "rfm_cell",
                                        "churn_rate"}  # fmt: skip
    assert r.models.empty  # one family: nothing to choose


def test_backtest_is_seeded(small_result):
    tx = simulate_log(7, n=600)
    again = run_backtest(tx, n_windows=3, holdout=13, by="channel", draws=300,
                         prediction_draws=300, seed=3)  # fmt: skip
    pd.testing.assert_frame_equal(again.totals, small_result.totals)
    pd.testing.assert_frame_equal(again.baselines, small_result.baselines)


def test_backtest_section_is_short_markdown(small_result):
    text = backtest_section(small_result)
    assert text.startswith("## How often did our intervals hold on your history")
    assert "3 earlier calibration end(s)" in text
    assert "| purchases |" in text and "| revenue |" in text
    assert "Calibrated totals (opt-in)" in text
    assert "RFM-cell averages" in text
    assert len(text.splitlines()) < 40


def test_report_folder_is_written_and_never_over_a_foreign_folder(small_result, tmp_path):
    from clvbayes.report import ReportWriteError
    from clvbayes.report.backtest import validate_backtest_report, write_backtest_report

    out = write_backtest_report(tmp_path / "bt", small_result, plots=False)
    names = {p.name for p in out.iterdir()}
    assert {"totals.csv", "windows.csv", "baselines.csv", "backtest_summary.md",
            "calibration.json", ".clvbayes-manifest.json"} <= names  # fmt: skip
    validate_backtest_report(out)
    summary = json.loads((out / "backtest_summary.json").read_text())
    assert summary["report_kind"] == "backtest"
    totals = pd.read_csv(out / "totals.csv")
    assert len(totals) == len(small_result.totals)
    write_backtest_report(out, small_result, plots=False)  # its own folder: replaced
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(ReportWriteError, match=r"mine\.txt"):
        write_backtest_report(out, small_result, plots=False)
    assert (out / "mine.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------
# statistical: on data from the model, the 90 % intervals of totals hold 90 % of the time


@pytest.mark.slow
def test_coverage_of_totals_on_data_simulated_from_the_model():
    """Windows x (whole base, named segments, CLV deciles) x (purchases, revenue) totals of a
    BG/NBD + Gamma-Gamma log: the share inside their 90 % predictive intervals is 0.9 within
    3 binomial standard errors for that many totals (the totals of one window share its
    parameter draws, so the binomial se is a lower bound: 3 se, not 2)."""
    covered = []
    for seed in (11, 12):
        tx = simulate_log(seed, n=3000)
        r = run_backtest(tx, n_windows=4, holdout=13, seed=seed, draws=500, prediction_draws=500)
        t = r.totals[r.totals["n_customers"] >= 50]  # tiny segments: few purchases, discrete
        covered += t["in_pi"].astype(bool).tolist()
        assert r.calibration["factors"]["model"]["purchases"] < 1.6
    n = len(covered)
    share = float(np.mean(covered))
    se = math.sqrt(0.9 * 0.1 / n)
    assert abs(share - 0.9) <= 3 * se, (share, n, se)


def test_calibrated_segment_totals_sit_beside_the_models_own():
    from clvbayes.backtest import calibrated_segment_totals

    seg = pd.DataFrame({"purchases_total_mean": [100.0], "purchases_total_pi_lower": [90.0],
                        "purchases_total_pi_upper": [112.0], "clv_total_mean": [50.0],
                        "clv_total_pi_lower": [40.0], "clv_total_pi_upper": [70.0]},
                       index=["all"])  # fmt: skip
    cal = {"factors": {"model": {"purchases": 2.0, "revenue": 3.0}}}
    out = calibrated_segment_totals(seg, cal)
    assert out["purchases_total_pi_lower"].iloc[0] == 90.0  # the model's own, unchanged
    assert out["purchases_total_pi_calibrated_lower"].iloc[0] == 80.0
    assert out["purchases_total_pi_calibrated_upper"].iloc[0] == 124.0
    assert out["clv_total_pi_calibrated_lower"].iloc[0] == 20.0  # revenue's factor
    assert out["clv_total_pi_calibrated_upper"].iloc[0] == 110.0
