"""``clvbayes run`` on discrete opportunities (BG/BB): the donations demo end to end (no
amounts, no spend model), a simulated yearly log with amounts (Gamma-Gamma and CLV), a
transaction log on a monthly grid with a holdout period, explicit opportunity dates, and
every refusal of a grid / model / unit mix-up or of value options without amounts (exit 2,
before anything slow runs)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from test_cli import _exit, _small_csv, _write_json

from clvbayes import pipeline, run_options
from clvbayes.report import data_dictionary, read_report_table, validate_report
from clvbayes.report.validate import _check_table
from clvbayes.units import annual_to_period_rate

FAST = ["--method", "laplace", "--draws", "400", "--prediction-draws", "200", "-q"]
#: FHS 2010 (and the issue's reference values): sum over the 11,104 donors of E[transactions
#: in the next 5 opportunities] at the MLE.
FHS_SUM_NEXT_5 = 12_884.16


def _summary(folder):
    return json.loads((folder / "model_summary.json").read_text())


@pytest.fixture(scope="module")
def donations(tmp_path_factory):
    """``clvbayes run --demo donations --horizon 5`` (Laplace): folder, stdout, stderr."""
    from clvbayes import cli

    out = tmp_path_factory.mktemp("donations") / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["run", "--demo", "donations", "--horizon", "5", "-o", str(out), *FAST])
    assert rc == 0
    return out, stdout.getvalue()


@pytest.fixture
def no_slow_steps(monkeypatch):
    """Fail the test if the job gets past its checks (reading the data comes first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the job read the data before refusing the options")

    monkeypatch.setattr(pipeline, "_read_input", refuse)


# ---------------------------------------------------------------- the bundled data
def test_donations_transaction_log_round_trips_to_the_published_summary():
    from clvbayes.data.discrete import summarize_opportunities
    from clvbayes.datasets import load_donations_summary, load_donations_transactions

    tx = load_donations_transactions()
    assert len(tx) == 35_719 and tx["customer_id"].nunique() == 11_104
    assert tx["date"].dt.year.between(1995, 2001).all()
    rfm = summarize_opportunities(tx, "year")
    published = load_donations_summary().sort_index()
    cols = ["frequency", "recency", "periods"]
    pd.testing.assert_frame_equal(rfm[cols], published[cols])
    assert rfm.attrs["calibration_end"] == "2001" and rfm.attrs["n_transactions_merged"] == 0
    # the columns the option checks assume for the bundled logs (no amounts in this one)
    assert tuple(tx.columns) == run_options.DONATIONS_COLUMNS


def test_bundled_cdnow_columns_are_those_the_checks_assume():
    from clvbayes.datasets import load_cdnow_transactions

    assert tuple(load_cdnow_transactions().columns) == run_options.CDNOW_COLUMNS


# ---------------------------------------------------------------- donations end to end
def test_donations_report_is_valid_and_discrete(donations):
    out, stdout = donations
    validate_report(out)
    s = _summary(out)
    st = s["settings"]
    assert st["time_grid"] == "discrete" and st["time_unit"] == "opportunities"
    assert st["opportunity_grid"] == "yearly" and st["opportunities_per_year"] == 1
    assert st["purchase_model"] == "bgbb" and st["spend_model"] is None
    assert st["horizon"] == 5 and st["period"] == 1
    # 10 % a year on yearly opportunities is 10 % per opportunity, and the report says so
    assert st["annual_discount_rate"] == 0.1 and st["discount_rate_per_period"] == 0.1
    assert st["discount_rate_conversion"] == "10 % a year = 0.1 per yearly opportunity"
    assert st["discount_rate_used_for"].startswith("DERT")
    assert st["margin"] is None and st["cac"] is None
    assert set(s["models"]) == {"bgbb"} and s["files"]["models"] == {"bgbb": "bgbb.nc"}
    assert s["data"]["opportunity_grid"] == "yearly" and s["data"]["n_customers"] == 11_104
    assert s["data"]["input"]["sha256"].startswith("82c25f26")
    assert s["data"]["calibration_end"] == "2001"
    plots = s["files"]["plots"]
    assert "p_alive_by_history.png" in plots and "clv_distribution.png" not in plots
    assert (out / "p_alive_by_history.png").stat().st_size > 10_000
    assert not (out / "gamma_gamma.nc").exists() and not (out / "clv_distribution.png").exists()
    assert "Expected transactions in the next 5 opportunities" in stdout
    assert "no CLV" in stdout and "Total CLV" not in stdout


def test_donations_tables_have_no_value_columns_and_sensible_p_alive(donations):
    out, _ = donations
    c = read_report_table(out / "customers.parquet")
    absent = {"T", "monetary_value", "m_score", "clv_decile", "churn_risk", "first_purchase",
              "clv_mean", "spend_mean", "revenue_mean", "clv_to_cac"}  # fmt: skip
    assert not absent & set(c.columns)
    assert {"periods", "first_opportunity", "dert_mean", "dert_ci_upper"} <= set(c.columns)
    assert (c["periods"] == 6).all() and (c["first_opportunity"] == "1995-01-01").all()
    assert c["segment"].isin(["active", "lapsed", "new", "one_time", "others"]).all()
    for col in ("p_alive_mean", "p_alive_ci_lower", "p_alive_ci_upper"):
        assert c[col].between(0, 1).all() and np.isfinite(c[col]).all()
    by = c.groupby(["frequency", "recency"])[["p_alive_mean", "p_alive_ci_lower",
                                               "p_alive_ci_upper", "dert_mean"]].first()  # fmt: skip
    # a transaction at the last opportunity n means active at n: P = 1, no interval
    last = by[by.index.get_level_values("recency") == 6]
    np.testing.assert_allclose(last["p_alive_mean"], 1.0, rtol=0, atol=1e-12)
    # otherwise a real credible interval (Laplace draws), P(alive at n) above the published
    # P(alive at n + 1) (FHS 2010: 0.1081 for (0, 0), 0.5897 for (2, 4)), ordered by history
    inner = by[by.index.get_level_values("recency") < 6]
    assert (inner["p_alive_ci_upper"] - inner["p_alive_ci_lower"] > 1e-3).all()
    assert 0.1081 < by.loc[(0, 0), "p_alive_mean"] < 0.14
    assert 0.5897 < by.loc[(2, 4), "p_alive_mean"] < 0.7
    assert by.loc[(0, 0), "dert_mean"] < by.loc[(2, 4), "dert_mean"] < by.loc[(6, 6), "dert_mean"]
    seg = read_report_table(out / "segments.csv")
    assert set(seg["grouping"]) == {"all", "segment"}
    assert not any(col.startswith(("clv", "revenue")) for col in seg.columns)
    total = seg.query("grouping == 'all'").iloc[0]
    assert total["purchases_total_mean"] == pytest.approx(FHS_SUM_NEXT_5, rel=0.01)
    assert total["purchases_total_ci_lower"] < FHS_SUM_NEXT_5 < total["purchases_total_ci_upper"]


def test_donations_data_dictionary_speaks_of_opportunities(donations):
    out, _ = donations
    d = read_report_table(out / "data_dictionary.csv").set_index("column")
    d = d[d["table"] == "customers"]
    assert "last calibration opportunity" in d.loc["p_alive_mean", "meaning"]
    assert "next 5 opportunities" in d.loc["purchases_mean", "meaning"]
    assert (
        d.loc["recency", "unit"] == "opportunities" and d.loc["periods", "unit"] == "opportunities"
    )
    assert "d = 0.1 per opportunity" in d.loc["dert_mean", "meaning"]
    assert "no spend model" in d.loc["segment", "meaning"]
    md = (out / "model_summary.md").read_text()
    assert "opportunity_grid**: yearly" in md and "alive_total_mean" in md


def test_saved_bgbb_model_reloads(donations):
    from clvbayes.models import CLVModel
    from clvbayes.models.bgbb import BetaGeoBetaBinomModel

    out, _ = donations
    model = CLVModel.load(out / "bgbb.nc")
    assert type(model) is BetaGeoBetaBinomModel and model.time_unit_ == "opportunities"


# ---------------------------------------------------------------- a yearly log with amounts
def _yearly_log(n_customers=400, seed=5):
    """A BG/BB cohort (first transaction in 2015, appeals 2016-2022) with gift amounts.

    Each customer has p ~ Beta(1.2, 0.75) (transaction chance while alive), theta ~ Beta(0.66,
    2.8) (dropout chance per appeal, about FHS 2010's donations estimates) and a mean gift
    from a gamma; a year with a transaction has one gift, sometimes two (merged into one
    opportunity whose value is their sum).
    """
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 0.75, n_customers)
    theta = rng.beta(0.66, 2.8, n_customers)
    scale = rng.gamma(3.0, 12.0, n_customers)
    rows = []
    for i in range(n_customers):
        years = [2015]
        for year in range(2016, 2023):
            if rng.random() < theta[i]:
                break
            if rng.random() < p[i]:
                years.append(year)
        for year in years:
            for _ in range(1 + (rng.random() < 0.15)):
                day = pd.Timestamp(f"{year}-01-01") + pd.Timedelta(days=int(rng.integers(0, 365)))
                rows.append((f"d{i:04d}", day.strftime("%Y-%m-%d"),
                             round(float(rng.gamma(6.0, scale[i] / 6.0)), 2)))  # fmt: skip
    return pd.DataFrame(rows, columns=["customer_id", "date", "amount"])


@pytest.fixture(scope="module")
def yearly(tmp_path_factory):
    """``clvbayes run log.csv --opportunities yearly --margin 0.3 --cac 40`` (Laplace), with a
    holdout of two years: folder, stdout, stderr, the log."""
    from clvbayes import cli

    folder = tmp_path_factory.mktemp("yearly")
    tx = _yearly_log()
    path = folder / "gifts.csv"
    tx.to_csv(path, index=False)
    out = folder / "report"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(["run", str(path), "--opportunities", "yearly", "--calibration-end",
                       "2020-12-31", "--horizon", "5", "--margin", "0.3", "--cac", "40",
                       "-o", str(out), *FAST[:-1]])  # fmt: skip
    assert rc == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue(), tx


def test_yearly_log_with_amounts_has_clv(yearly):
    out, stdout, err, _ = yearly
    validate_report(out)
    assert "fitting the Gamma-Gamma spend model (laplace)" in err
    s = _summary(out)
    st = s["settings"]
    assert st["time_grid"] == "discrete" and st["spend_model"] == "gamma_gamma"
    assert st["margin"] == 0.3 and st["cac"] == 40 and st["horizon"] == 5
    assert st["currency"] == "units of the 'amount' column"
    assert st["discount_rate_used_for"].startswith("CLV (the clv_* columns")
    assert set(s["models"]) == {"bgbb", "gamma_gamma"}
    assert (out / "gamma_gamma.nc").is_file() and s["data"]["columns"]["amount"] == "amount"
    plots = set(s["files"]["plots"])
    assert {"clv_distribution.png", "clv_by_recency_frequency.png", "p_alive_by_history.png",
            "segment_totals.png"} <= plots  # fmt: skip
    assert "Total CLV in the next 5 opportunities" in stdout and "No spend model" not in stdout
    assert "revenue" in s["holdout"] and s["holdout"]["revenue"]["actual_total"] > 0


def test_yearly_customers_have_finite_clv_intervals(yearly):
    out, _, _, tx = yearly
    c = read_report_table(out / "customers.parquet").set_index("customer_id")
    for q in ("spend", "revenue", "clv"):
        cols = [f"{q}_{k}" for k in ("mean", "sd", "ci_lower", "ci_upper", "pi_lower",
                                     "pi_upper")]  # fmt: skip
        assert np.isfinite(c[cols].to_numpy()).all(), q
        assert (c[f"{q}_ci_lower"] <= c[f"{q}_mean"] + 1e-9).all()
        assert (c[f"{q}_mean"] <= c[f"{q}_ci_upper"] + 1e-9).all()
        # (a probably lapsed donor's predictive interval of revenue is [0, 0])
        assert (c[f"{q}_pi_lower"] >= 0).all() and (c[f"{q}_pi_upper"] >= c[f"{q}_pi_lower"]).all()
        assert (c[f"{q}_pi_upper"] > 0).mean() > 0.5
    # Laplace draws: real credible intervals of CLV, and a 30 % margin of discounted revenue
    assert (c["clv_ci_upper"] - c["clv_ci_lower"] > 0).all()
    assert (c["clv_mean"] < 0.3 * c["revenue_mean"]).all()
    np.testing.assert_allclose(c["clv_to_cac"], c["clv_mean"] / 40, rtol=1e-12)
    assert c["clv_decile"].between(1, 10).all() and c["m_score"].between(1, 5).all()
    # monetary_value: mean value of the repeat years (a year's gifts added up), 2016-2020
    tx = tx.assign(year=pd.to_datetime(tx["date"]).dt.year)
    per_year = tx.groupby(["customer_id", "year"])["amount"].sum().reset_index()
    repeat = per_year[(per_year["year"] > 2015) & (per_year["year"] <= 2020)]
    expected = repeat.groupby("customer_id")["amount"].mean().reindex(c.index, fill_value=0.0)
    np.testing.assert_allclose(c["monetary_value"], expected, rtol=1e-12)
    seg = read_report_table(out / "segments.parquet")
    assert set(seg["grouping"]) == {"all", "segment", "clv_decile"}
    total = seg.query("grouping == 'all'").iloc[0]
    assert total["clv_total_ci_lower"] < total["clv_total_mean"] < total["clv_total_ci_upper"]
    assert np.isfinite(
        total[["clv_total_pi_lower", "clv_total_pi_upper", "clv_to_cac"]].astype(float)
    ).all()


def test_yearly_data_dictionary_says_opportunities_and_currency(yearly):
    out, _, _, _ = yearly
    d = read_report_table(out / "data_dictionary.csv")
    d = d[d["table"] == "customers"].set_index("column")
    assert "next 5 opportunities" in d.loc["clv_mean", "meaning"]
    assert "margin x discounted revenue" in d.loc["clv_mean", "meaning"]
    assert "next 5 opportunities" in d.loc["revenue_pi_upper", "meaning"]
    assert (d.loc[["monetary_value", "spend_mean", "revenue_mean", "clv_mean"], "unit"]
            == "currency").all()  # fmt: skip
    assert "repeat transaction opportunities" in d.loc["monetary_value", "meaning"]
    assert "one future transaction opportunity" in d.loc["spend_mean", "meaning"]
    assert "per holdout opportunity" in d.loc["monetary_value_holdout", "meaning"]
    assert d.loc["periods", "unit"] == "opportunities"
    assert "no spend model" not in d.loc["segment", "meaning"]


def test_run_report_on_opportunities_with_amounts(tmp_path):
    """The Python entry point: the headline totals are CLV's."""
    path = tmp_path / "gifts.parquet"
    _yearly_log(n_customers=150, seed=8).to_parquet(path, index=False)
    result = pipeline.run_report(str(path), opportunities="yearly", method="map", margin=0.5,
                                 horizon=3, prediction_draws=50, output=str(tmp_path / "r"),
                                 quiet=True)  # fmt: skip
    assert result.time_grid == "discrete" and result.spend_model == "gamma_gamma"
    assert result.time_unit == "opportunities" and result.horizon == 3
    assert np.isfinite(result.total["clv_total_mean"]) and result.total["clv_total_mean"] > 0
    validate_report(result.path)


# ---------------------------------------------------------------- your own transaction log
def test_monthly_grid_with_a_holdout_period(tmp_path, capsys):
    path, tx = _small_csv(tmp_path, n_customers=60)
    priors = _write_json(tmp_path / "p.json", {"gamma_gamma": {"q": {"dist": "Gamma",
                                                                    "alpha": 20, "beta": 5}}})  # fmt: skip
    out = tmp_path / "r"
    rc, _, err = _exit(["run", str(path), "--opportunities", "monthly", "--calibration-end",
                        "2024-08-31", "--horizon", "3", "--method", "map", "--prediction-draws",
                        "50", "--priors", str(priors), "--format", "csv", "-o", str(out)],
                       capsys)  # fmt: skip
    assert rc == 0, err
    assert "fitting the BG/BB purchase model (map)" in err
    assert "fitting the Gamma-Gamma spend model (map)" in err  # the log has amounts
    validate_report(out)
    s = _summary(out)
    assert s["settings"]["opportunity_grid"] == "monthly"
    # 10 % a year over 12 monthly opportunities, exactly
    assert s["settings"]["discount_rate_per_period"] == pytest.approx(1.1 ** (1 / 12) - 1)
    assert "(1 + 0.1)^(1/12) - 1" in s["settings"]["discount_rate_conversion"]
    assert s["data"]["calibration_end"] == "2024-08"
    assert s["models"]["gamma_gamma"]["priors"]["q"]["alpha"] == 20
    h = s["holdout"]
    assert h["time_unit"] == "opportunities" and h["purchases"]["actual_total"] >= 0
    assert 0 <= h["purchases"]["customer_pi_coverage"] <= 1
    c = read_report_table(out / "customers.csv").set_index("customer_id")
    assert {"frequency_holdout", "periods_holdout"} <= set(c.columns)
    assert (c["frequency_holdout"] <= c["periods_holdout"]).all()
    assert c["p_alive_ci_lower"].isna().all()  # MAP: a point, no credible interval
    # the holdout values are the amounts after the calibration month, per cohort customer
    tx["date"] = pd.to_datetime(tx["date"])
    later = tx[tx["date"] > "2024-08-31"].groupby("customer_id")["amount"].sum()
    later = later.reindex(c.index, fill_value=0.0)
    np.testing.assert_allclose(c["total_value_holdout"], later, rtol=1e-12, atol=1e-9)
    with_tx = c["frequency_holdout"] > 0
    np.testing.assert_allclose(
        c.loc[with_tx, "monetary_value_holdout"],
        later[with_tx] / c.loc[with_tx, "frequency_holdout"], rtol=1e-12,
    )  # fmt: skip
    assert (c.loc[~with_tx, "monetary_value_holdout"] == 0).all()
    assert h["revenue"]["actual_total"] == pytest.approx(later.sum(), rel=1e-12)


def test_explicit_opportunity_dates_from_a_file(tmp_path, capsys):
    path, _ = _small_csv(tmp_path, n_customers=60)
    dates = tmp_path / "campaigns.txt"
    dates.write_text("date\n# campaign starts\n2024-01-01\n2024-03-15\n2024-06-01\n\n"
                     "2024-09-01\n2024-11-15\n")  # fmt: skip
    out = tmp_path / "r"
    rc, _, err = _exit(["run", str(path), "--opportunities", str(dates), "--horizon", "2",
                        "--discount-rate-per-period", "0.05", "--method", "map",
                        "--prediction-draws", "50", "--format", "csv", "-o", str(out)],
                       capsys)  # fmt: skip
    assert rc == 0, err
    validate_report(out)
    st = _summary(out)["settings"]
    assert st["opportunity_grid"] == "explicit" and st["opportunity_dates_file"] == str(dates)
    assert st["opportunity_dates"] == ["2024-01-01", "2024-03-15", "2024-06-01", "2024-09-01",
                                       "2024-11-15"]  # fmt: skip
    assert st["discount_rate_per_period"] == 0.05 and st["annual_discount_rate"] is None
    c = read_report_table(out / "customers.csv")
    assert np.isfinite(c["dert_mean"]).all() and (c["periods"] <= 4).all()


def test_explicit_dates_without_a_rate_have_no_dert(tmp_path, capsys):
    path, _ = _small_csv(tmp_path, n_customers=60)
    out = tmp_path / "r"
    rc, _, err = _exit(["run", str(path), "--opportunities", "2024-01-01,2024-04-01,2024-07-01,"
                        "2024-10-01", "--horizon", "2", "--method", "map", "--prediction-draws",
                        "50", "--format", "csv", "-o", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    st = _summary(out)["settings"]
    assert st["discount_rate_per_period"] is None
    assert "--discount-rate-per-period" in st["discount_rate_used_for"]
    assert "CLV undiscounted" in st["discount_rate_used_for"]  # the log has amounts
    c = read_report_table(out / "customers.csv")
    assert "dert_mean" not in c.columns
    # no discounting: CLV is the margin (1) times the revenue, draw by draw
    np.testing.assert_allclose(c["clv_mean"], c["revenue_mean"], rtol=1e-12)


# ---------------------------------------------------------------- refusals (exit 2)
_DATES = "2024-01-01,2024-04-01,2024-07-01"
DISCRETE_REFUSALS = {
    "bgbb without a grid": (
        ["--purchase-model", "bgbb"],
        "--purchase-model bgbb (BG/BB) models customers who can act only at discrete purchase "
        "opportunities, so it needs the opportunity grid: pass --opportunities "
        "yearly|quarterly|monthly|weekly",
    ),
    "continuous model on a grid": (
        ["--opportunities", "yearly", "--purchase-model", "pnbd"],
        "--purchase-model pnbd (Pareto/NBD) is a continuous-time model, but --opportunities "
        "yearly makes this a discrete-time run",
    ),
    "continuous model on donations": (
        ["--demo", "donations", "--purchase-model", "bgnbd"],
        "but --demo donations makes this a discrete-time run",
    ),
    "compare on a grid": (
        ["--opportunities", "quarterly", "--purchase-model", "compare", "--method", "laplace"],
        "on discrete opportunities clvbayes has only one, BG/BB (bgbb): there is nothing to "
        "compare. Use --purchase-model bgbb",
    ),
    "unknown grid": (
        ["--opportunities", "fortnightly"],
        "--opportunities 'fortnightly' is neither a grid (yearly, quarterly, monthly, weekly) "
        "nor a list of opportunity dates",
    ),
    "missing dates file": (
        ["--opportunities", "dates.txt"],
        "--opportunities dates.txt: file not found",
    ),
    "dates not increasing": (
        ["--opportunities", "2024-05-01,2024-02-01", "--horizon", "2"],
        "must be strictly increasing",
    ),
    "not a date": (["--opportunities", "2024-01-01,soon"], "'soon' is not a date"),
    "one date": (["--opportunities", "2024-01-01,", "--horizon", "2"], "at least two"),
    "fractional horizon": (
        ["--opportunities", "yearly", "--horizon", "2.5"],
        "--horizon 2.5 is not a whole number of opportunities: with --opportunities yearly the "
        "horizon counts the next opportunities to predict",
    ),
    "horizon of 100 years and more": (
        ["--opportunities", "quarterly", "--horizon", "401"],
        "at most 100 years (400)",
    ),
    "annual rate with explicit dates": (
        ["--opportunities", _DATES, "--horizon", "2", "--discount-rate", "0.1"],
        "--discount-rate 0.1 is an annual rate, but --opportunities 2024-01-01,2024-04-01,"
        "2024-07-01 lists the opportunity dates, which have no fixed length in years",
    ),
    "explicit dates without a horizon": (
        ["--opportunities", _DATES],
        "lists the opportunity dates, so there is no default horizon of one year: pass --horizon",
    ),
    "per-opportunity rate read as annual": (
        ["--opportunities", "weekly", "--discount-rate-per-period", "0.1"],
        "--discount-rate-per-period 0.1 compounds to 14,348 % a year",
    ),
    "time unit and grid": (
        ["--opportunities", "yearly", "--time-unit", "days"],
        "--time-unit days and --opportunities yearly both set the time grid",
    ),
    "demo and path": (["tx.csv", "--demo", "donations"], "PATH tx.csv and --demo donations both"),
    "donations on another grid": (
        ["--demo", "donations", "--opportunities", "monthly"],
        "--demo donations has yearly opportunities",
    ),
    "holdout split of the donations log": (
        ["--demo", "donations", "--calibration-end", "1999-12-31"],
        "--calibration-end: --demo donations is the published calibration summary",
    ),
    "cac without amounts": (
        ["--demo", "donations", "--cac", "25"],
        "--cac 25 applies to transaction values and CLV, but the bundled donations data have no "
        "transaction values, so this discrete-time run (--demo donations) has no spend model: "
        "the report gives P(alive), expected transactions and DERT only. Drop --cac.",
    ),
    "margin and negative amounts without amounts": (
        ["--demo", "donations", "--margin", "0.3", "--negative-amounts", "drop"],
        "--margin 0.3 and --negative-amounts drop apply to transaction values and CLV, but the "
        "bundled donations data have no transaction values",
    ),
    "margin above 1 on a grid": (
        ["--opportunities", "yearly", "--margin", "30"],
        "--margin 30 would multiply every customer's revenue by 30",
    ),
}


@pytest.mark.parametrize("case", DISCRETE_REFUSALS)
def test_discrete_refusals_exit_2_before_reading(case, tmp_path, capsys, no_slow_steps):
    argv, message = DISCRETE_REFUSALS[case]
    rc, stdout, err = _exit(["run", *argv, "-o", str(tmp_path / "r")], capsys)
    assert rc == 2, err
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err and stdout == ""
    assert not (tmp_path / "r").exists()


def test_spend_priors_refused_without_amounts(tmp_path, capsys, no_slow_steps):
    priors = _write_json(tmp_path / "p.json", {"gamma_gamma": {"q": {"dist": "HalfNormal",
                                                                    "sigma": 2}}})  # fmt: skip
    rc, _, err = _exit(["run", "--demo", "donations", "--priors", str(priors), "-o",
                        str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2
    assert (f"--priors {priors} (model 'gamma_gamma') applies to transaction values and CLV, "
            "but the bundled donations data have no transaction values") in " ".join(err.split())  # fmt: skip


def test_value_options_refused_for_a_log_without_amounts(tmp_path, capsys, no_slow_steps):
    """The file's header has no --amount-col column: refused before the data are read."""
    path, tx = _small_csv(tmp_path, n_customers=20)
    tx.drop(columns="amount").to_csv(path, index=False)
    rc, stdout, err = _exit(["run", str(path), "--opportunities", "yearly", "--margin", "0.3",
                             "-o", str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2 and stdout == "" and "Traceback" not in err
    assert (f"--margin 0.3 applies to transaction values and CLV, but {path} has no amount "
            "column 'amount' (columns present: 'customer_id', 'date', 'channel'), so this "
            "discrete-time run (--opportunities yearly) has no spend model: the report gives "
            "P(alive), expected transactions and DERT only. Name the column of transaction "
            "values with --amount-col COL, or drop --margin.") in " ".join(err.split())  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_value_options_refused_once_the_data_are_read(tmp_path, capsys):
    """A Parquet dataset (a folder) has no header to check first: the check runs right after
    reading, before the summary and the fits."""
    _, tx = _small_csv(tmp_path, n_customers=20)
    folder = tmp_path / "log"
    folder.mkdir()
    tx.drop(columns="amount").to_parquet(folder / "part-0.parquet", index=False)
    rc, _, err = _exit(["run", str(folder), "--opportunities", "yearly", "--cac", "40", "-o",
                        str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2 and "Traceback" not in err
    text = " ".join(err.split())
    assert f"--cac 40 applies to transaction values and CLV, but {folder} has no amount" in text
    assert "summarising" not in err and not (tmp_path / "r").exists()


def test_a_log_without_amounts_runs_without_a_spend_model(tmp_path, capsys):
    path, tx = _small_csv(tmp_path, n_customers=60)
    tx.drop(columns="amount").to_csv(path, index=False)
    out = tmp_path / "r"
    rc, stdout, err = _exit(["run", str(path), "--opportunities", "quarterly", "--method", "map",
                             "--prediction-draws", "50", "--format", "csv", "-o", str(out)],
                            capsys)  # fmt: skip
    assert rc == 0, err
    assert "no spend model: the transactions have no amount column 'amount'" in err
    assert "No spend model (the transactions have no amounts), so no CLV." in stdout
    validate_report(out)
    assert _summary(out)["settings"]["spend_model"] is None
    assert "clv_mean" not in read_report_table(out / "customers.csv").columns


# ---------------------------------------------------------------- DERT, units, the validator
def test_dert_columns_equal_the_model_dert():
    """The report's DERT (one survival sum per distinct n) is the model's, per customer."""
    from clvbayes.datasets import load_donations_summary
    from clvbayes.models.bgbb import BetaGeoBetaBinomModel

    model = BetaGeoBetaBinomModel().fit(load_donations_summary(), method="laplace", draws=100)
    rfm = pd.DataFrame(
        {"frequency": [0, 1, 3, 2, 0, 4], "recency": [0, 2, 5, 2, 0, 9],
         "periods": [0, 3, 9, 2, 7, 9]}, index=pd.Index(list("abcdef"), name="customer_id"),
    )  # fmt: skip
    rfm.attrs["time_unit"] = "opportunities"
    table = pipeline._dert_table(rfm, model, 0.02, 0.9, None)
    direct = model.dert(0.02, rfm)
    np.testing.assert_allclose(table["dert_mean"], direct.mean(("chain", "draw")), rtol=1e-12)
    np.testing.assert_allclose(table["dert_sd"], direct.std(("chain", "draw"), ddof=1), rtol=1e-9)
    assert (table["dert_ci_lower"] < table["dert_mean"]).all()


# ---------------------------------------------------------------- units and the validator
def test_annual_rate_converts_exactly_per_opportunity():
    from types import SimpleNamespace

    def per(grid, **rates):
        args = SimpleNamespace(path=None, demo=None, time_unit=None, opportunities=grid,
                               discount_rate=rates.get("annual"),
                               discount_rate_per_period=rates.get("per"))  # fmt: skip
        return run_options.discount_per_opportunity(args, run_options.run_grid(args))[0]

    assert per("yearly", annual=0.08) == pytest.approx(0.08, rel=1e-15)
    assert per("quarterly") == pytest.approx(1.1**0.25 - 1, rel=1e-15)  # default 10 % a year
    assert per("monthly", annual=0.2) == pytest.approx(1.2 ** (1 / 12) - 1, rel=1e-15)
    # weekly opportunities are 7-day weeks of the 365.25-day year, as --time-unit weeks
    assert per("weekly") == pytest.approx(annual_to_period_rate(0.1, "weeks"), rel=1e-15)
    assert per("2024-01-01,2024-06-01") is None
    assert per("2024-01-01,2024-06-01", per=0.03) == 0.03


def test_validator_refuses_columns_of_another_kind():
    df = pd.DataFrame({"customer_id": ["a"], "T": [3.0], "clv_mean": [1.0]})
    described = {c: "float64" for c in df.columns} | {"customer_id": "string"}
    problems = " ".join(_check_table("customers", df, described, grid="discrete", spend=False))
    assert (
        "column(s) ['T', 'clv_mean'] do not belong in a discrete-time report without a spend"
        in problems
    )
    dictionary = data_dictionary(
        {"customers": pd.DataFrame(columns=["recency", "p_alive_mean"])},
        {"time_grid": "discrete", "spend_model": None, "time_unit": "opportunities"},
    ).set_index("column")
    assert dictionary.loc["recency", "unit"] == "opportunities"
    assert "opportunity n = periods" in dictionary.loc["p_alive_mean", "meaning"]
