"""``clvbayes run`` on discrete opportunities (BG/BB): the donations demo end to end, a
transaction log on a monthly grid with a holdout period, explicit opportunity dates, and
every refusal of a grid / model / unit mix-up (exit 2, before anything slow runs)."""

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


# ---------------------------------------------------------------- your own transaction log
def test_monthly_grid_with_a_holdout_period(tmp_path, capsys):
    path, _ = _small_csv(tmp_path, n_customers=60)
    out = tmp_path / "r"
    rc, _, err = _exit(["run", str(path), "--opportunities", "monthly", "--calibration-end",
                        "2024-08-31", "--horizon", "3", "--method", "map", "--prediction-draws",
                        "50", "--format", "csv", "-o", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    assert "fitting the BG/BB purchase model (map)" in err and "Gamma-Gamma" not in err
    validate_report(out)
    s = _summary(out)
    assert s["settings"]["opportunity_grid"] == "monthly"
    # 10 % a year over 12 monthly opportunities, exactly
    assert s["settings"]["discount_rate_per_period"] == pytest.approx(1.1 ** (1 / 12) - 1)
    assert "(1 + 0.1)^(1/12) - 1" in s["settings"]["discount_rate_conversion"]
    assert s["data"]["calibration_end"] == "2024-08"
    h = s["holdout"]
    assert h["time_unit"] == "opportunities" and "revenue" not in h
    assert h["purchases"]["actual_total"] >= 0 and 0 <= h["purchases"]["customer_pi_coverage"] <= 1
    c = read_report_table(out / "customers.csv")
    assert {"frequency_holdout", "periods_holdout"} <= set(c.columns)
    assert (c["frequency_holdout"] <= c["periods_holdout"]).all()
    assert c["p_alive_ci_lower"].isna().all()  # MAP: a point, no credible interval


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
    assert "dert_mean" not in read_report_table(out / "customers.csv").columns


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
    "cac without spend": (
        ["--demo", "donations", "--cac", "25"],
        "--cac 25 applies to transaction values and CLV, but a discrete-time run",
    ),
    "margin without spend": (["--demo", "donations", "--margin", "0.3"], "has no spend model"),
}


@pytest.mark.parametrize("case", DISCRETE_REFUSALS)
def test_discrete_refusals_exit_2_before_reading(case, tmp_path, capsys, no_slow_steps):
    argv, message = DISCRETE_REFUSALS[case]
    rc, stdout, err = _exit(["run", *argv, "-o", str(tmp_path / "r")], capsys)
    assert rc == 2, err
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err and stdout == ""
    assert not (tmp_path / "r").exists()


def test_spend_priors_refused_on_a_grid(tmp_path, capsys, no_slow_steps):
    priors = _write_json(tmp_path / "p.json", {"gamma_gamma": {"q": {"dist": "HalfNormal",
                                                                    "sigma": 2}}})  # fmt: skip
    rc, _, err = _exit(["run", "--demo", "donations", "--priors", str(priors), "-o",
                        str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2 and "model 'gamma_gamma' is not fitted in this run" in err
    assert "valid models: 'bgbb' (parameters alpha, beta, gamma, delta)" in " ".join(err.split())


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
