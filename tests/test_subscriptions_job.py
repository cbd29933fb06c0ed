"""``clvbayes subscriptions``: both bundled examples end to end through the CLI entry point,
a subscriptions table from a file (MAP, the likelihood-ratio choice), partial pooling
(--pool-by), score_subscribers with a model per group against each group alone, the charge-log censoring rule, and every refusal (exit 2 with a
message, no traceback, before anything slow runs)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from clvbayes import cli, subscriptions_job
from clvbayes.errors import DataError
from clvbayes.report import read_report_table
from clvbayes.report.subscriptions import (
    SUBSCRIPTION_SCHEMA,
    SUBSCRIPTION_TABLES,
    validate_subscriptions_report,
)
from clvbayes.subscriptions_options import annual_to_grid_rate

PLOTS = ("survival_curves.png", "retention_rates.png", "renewal_forecast.png")
FAST = ["--draws", "400", "-q"]  # Laplace draws: enough for LOO and the intervals checked here


def _exit(argv, capsys):
    """``cli.main(argv)`` in-process: (exit status, stdout, stderr); argparse's exits included."""
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def _summary(folder):
    return json.loads((folder / "model_summary.json").read_text())


def _run(argv):
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = cli.main(argv)
    return rc, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def fh2007(tmp_path_factory):
    out = tmp_path_factory.mktemp("fh2007") / "report"
    rc, stdout, stderr = _run(["subscriptions", "--demo", "fh2007", "-o", str(out), *FAST])
    assert rc == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    out = tmp_path_factory.mktemp("box") / "report"
    rc, stdout, stderr = _run(["subscriptions", "--demo", "box", "-o", str(out), *FAST])
    assert rc == 0, stderr
    return out, stdout


def _check_folder(folder, holdout=True, point=False):
    validate_subscriptions_report(folder)
    s = _summary(folder)
    names = [*SUBSCRIPTION_TABLES, *(["holdout"] if holdout else [])]
    names += ["pooling"] if s["settings"].get("pool_by") else []
    for t in names:
        for f in ("csv", "parquet"):
            assert (folder / f"{t}.{f}").is_file()
    assert (folder / ".clvbayes-manifest.json").is_file()
    assert (folder / "data_dictionary.csv").is_file() and (folder / "model_summary.md").is_file()
    plots = [*PLOTS, *(["holdout_survivors.png"] if holdout else [])]
    assert sorted(s["files"]["plots"]) == sorted(plots)
    for p in plots:
        assert (folder / p).stat().st_size > 10_000
    tables = {t: read_report_table(folder / f"{t}.parquet") for t in names}
    for t, df in tables.items():
        assert list(df.columns) == [c.name for c in SUBSCRIPTION_SCHEMA[t] if c.name in df]
    stats = ("_mean", "_pi_lower", "_pi_upper", *(() if point else ("_ci_lower", "_ci_upper")))
    for c in tables["subscribers"].columns:
        if c.endswith(stats):
            assert np.isfinite(tables["subscribers"][c]).all(), c
    for c in tables["cohorts"].columns:
        if c.startswith(("active_", "revenue_")) and c.endswith(stats):
            assert np.isfinite(tables["cohorts"][c]).all(), c
    return s, tables


# ---------------------------------------------------------------- the bundled examples
def test_fh2007_demo_end_to_end(fh2007):
    folder, stdout = fh2007
    assert "subscriptions report written to" in stdout and "2,000 subscribers" in stdout
    s, t = _check_folder(folder)
    assert s["report_kind"] == "subscriptions" and s["settings"]["fit_by"] == "cohort"
    assert set(s["model_comparison"]["chosen"]) == {"high_end", "regular"}
    # the holdout is the paper's test: refit on years 1..7, project years 8..12
    hold = s["holdout"]
    assert hold["settings"]["calibration_periods"] == 7
    assert hold["settings"]["compared_periods"] == "8..12"
    fits = {(f["fit_group"], f["model"]): f for f in hold["fits"]}
    # FH2007's sBG maximum likelihood on years 1..7: LL -1611.16 and -1680.27 (the posterior
    # mean of the Laplace fit is within a hair of the maximum)
    assert fits[("high_end", "sBG")]["loglik"] == pytest.approx(-1611.16, abs=0.2)
    assert fits[("regular", "sBG")]["loglik"] == pytest.approx(-1680.27, abs=0.2)
    assert fits[("high_end", "sBG")]["alpha_mean"] == pytest.approx(0.668, rel=0.05)
    assert fits[("regular", "sBG")]["beta_mean"] == pytest.approx(1.182, rel=0.05)
    h = t["holdout"]
    high = h[(h["fit_group"] == "high_end") & (h["model"] == "sbg")].sort_values("k")
    # actual survivors of the 1,000 in years 8..12 (the data file)
    assert high["actual_active"].tolist() == [468, 445, 427, 409, 394]
    assert high["at_risk"].unique().tolist() == [491]
    err = (high["active_mean"] - high["actual_active"]).abs() / high["actual_active"]
    assert err.max() < 0.05 and high["in_pi"].all()
    assert h["complete"].all()
    mc = t["model_comparison"]
    assert set(mc["fit_group"]) == {"high_end", "regular", "all"}
    assert (mc["holdout_periods"] == 5).all()
    assert mc["elpd_loo"].notna().all() and (mc["max_pareto_k"] < 0.7).all()
    # no price in survival counts: no revenue or value columns
    assert "revenue_mean" not in t["cohorts"] and "value_mean" not in t["subscribers"]
    assert len(t["subscribers"]) == 394 + 173  # survivors at year 12


def test_box_demo_end_to_end(box):
    folder, stdout = box
    assert "Expected renewal revenue x margin over the next 12 due dates" in stdout
    s, t = _check_folder(folder)
    d = s["data"]
    assert d["kind"] == "charges" and d["grace_days"] == 7 and d["returning_spells"] > 0
    assert d["pending_renewals_not_counted"] > 0
    assert s["settings"]["discount_rate_per_period"] == pytest.approx(1.1 ** (1 / 12) - 1)
    # every spell's charges are equal: the constant-price path, and the report says so
    assert d["amounts_vary"] is False and s["settings"]["value_source"] == "price"
    assert "gamma_gamma" not in s["files"]["models"]
    # the simulated premium plan has an increasing hazard (c = 1.4): BdW is chosen there
    chosen = s["model_comparison"]["chosen"]
    assert chosen["premium"] == "bdw" and chosen["basic"] == "sbg"
    subs = t["subscribers"]
    assert set(subs.loc[subs["plan"] == "premium", "model"]) == {"bdw"}
    assert (subs["churn_risk_ci_lower"] <= subs["churn_risk_mean"]).all()
    assert (subs["value_pi_lower"] <= subs["value_pi_upper"]).all()
    risk = t["at_risk"]
    assert risk["rank"].tolist() == list(range(1, len(risk) + 1))
    assert risk["churn_risk_mean"].is_monotonic_decreasing
    # totals: 'all' equals the sum over the plans' expectations (per-draw sums, same draws)
    tot = t["totals"].set_index(["grouping", "group"])
    assert tot.loc[("all", "all"), "revenue_total_mean"] == pytest.approx(
        subs["renewals_mean"].mul(subs["price"]).sum(), rel=1e-9
    )
    plans = tot.loc["plan"]
    assert plans.index.tolist() == ["basic", "plus", "premium"]
    assert plans["revenue_total_mean"].sum() == pytest.approx(
        tot.loc[("all", "all"), "revenue_total_mean"]
    )
    assert plans["subscribers"].sum() == len(subs)
    coh = t["cohorts"]
    assert set(coh["grouping"]) == {"all", "plan", "cohort"}
    first = coh[(coh["grouping"] == "all") & (coh["k"] == 1)].iloc[0]
    assert first["active_pi_lower"] <= first["active_mean"] <= first["active_pi_upper"]
    h = t["holdout"]
    assert set(h["fit_group"]) == {"all", "basic", "plus", "premium"}
    assert s["holdout"]["settings"]["holdout_start"] == "2024-06-30"
    # the next-period projection is not biased by renewals still inside their grace period
    k1 = h[(h["k"] == 1) & (h["fit_group"] == "all")]
    assert k1["in_pi"].all()


def test_demo_rerun_replaces_its_own_folder_and_refuses_a_foreign_one(box, tmp_path, capsys):
    folder, _ = box
    before = _summary(folder)["created_utc"]
    rc, _out, err = _exit(["subscriptions", "--demo", "fh2007", "-o", str(folder), "-q",
                          "--holdout-periods", "0"], capsys)  # fmt: skip
    assert rc == 0, err
    assert _summary(folder)["data"]["kind"] == "survival" and before
    assert not (folder / "holdout.csv").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    rc, _out, err = _exit(["subscriptions", "--demo", "fh2007", "-o", str(foreign), "-q"], capsys)
    assert rc == 2
    assert "not a clvbayes report folder" in err and "Traceback" not in err
    assert (foreign / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------- a file of your own
def _table(tmp_path, n=400, seed=7):
    """A monthly subscriptions table: sBG churn, two plans, prices, as of 2024-12-31."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    theta = rng.beta(1.0, 4.0, n)
    churn = rng.geometric(theta)  # T: cancels at its T-th due date
    end = [s + pd.DateOffset(months=int(t)) for s, t in zip(start, churn, strict=True)]
    end = [e if e <= pd.Timestamp("2024-12-31") else None for e in end]
    plan = rng.choice(["=basic", "plus"], n)  # '=basic' checks the CSV formula escaping
    frame = pd.DataFrame({
        "id": [f"S{i:04d}" for i in range(n)], "start": start.strftime("%Y-%m-%d"),
        "end": [e.strftime("%Y-%m-%d") if e is not None else "" for e in end],
        "plan": plan, "price": np.where(plan == "plus", 30.0, 15.0),
    })  # fmt: skip
    path = tmp_path / "subscriptions.csv"
    frame.to_csv(path, index=False)
    return path


def test_subscriptions_file_with_map_uses_the_likelihood_ratio_rule(tmp_path, capsys):
    path = _table(tmp_path)
    out = tmp_path / "report"
    rc, stdout, err = _exit(
        ["subscriptions", str(path), "--period", "month", "--as-of", "2024-12-31",
         "--customer-id-col", "id", "--method", "map", "--fit-by", "plan", "--horizon", "6",
         "--holdout-periods", "4", "--margin", "0.5", "-o", str(out), "-q"], capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert "MAP is a point estimate" in stdout
    s, t = _check_folder(out, point=True)
    assert "likelihood-ratio" in " ".join(s["model_comparison"]["reasons"].values())
    assert t["subscribers"]["p_renew_ci_lower"].isna().all()  # a point: no credible interval
    assert set(t["subscribers"]["plan"]) == {"=basic", "plus"}
    assert "'=basic" in (out / "subscribers.csv").read_text()  # escaped for spreadsheets
    assert read_report_table(out / "subscribers.csv")["plan"].isin(["=basic", "plus"]).all()
    mc = t["model_comparison"]
    assert mc["elpd_loo"].isna().all() and mc["loglik"].notna().all()
    sub = t["subscribers"]
    assert sub["value_mean"].to_numpy() == pytest.approx(
        (sub["disc_renewals_mean"] * sub["price"] * 0.5).to_numpy()
    )
    dictionary = pd.read_csv(out / "data_dictionary.csv")
    unit = dictionary.set_index(["table", "column"]).loc[("subscribers", "periods"), "unit"]
    assert unit == "periods (1 month)"


def test_python_api_returns_the_headline_figures(tmp_path):
    path = _table(tmp_path, n=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = subscriptions_job.run_subscriptions(
            str(path), period="month", as_of="2024-12-31", customer_id_col="id",
            output=str(tmp_path / "r"), quiet=True, holdout_periods=0, draws=300,
        )  # fmt: skip
    assert result.chosen.keys() == {"all"} and result.horizon == 12
    assert result.total["revenue_total_ci_lower"] < result.total["revenue_total_mean"]
    assert result.path == (tmp_path / "r").resolve()


# ---------------------------------------------------------------- pieces of the job
def test_annual_rate_converted_exactly_per_grid():
    assert annual_to_grid_rate(0.10, "1 year") == pytest.approx(0.10)
    assert (1 + annual_to_grid_rate(0.10, "1 month")) ** 12 == pytest.approx(1.10, rel=1e-14)
    assert (1 + annual_to_grid_rate(0.10, "3 month")) ** 4 == pytest.approx(1.10, rel=1e-14)
    assert (1 + annual_to_grid_rate(0.10, "1 week")) ** (365.25 / 7) == pytest.approx(1.10)
    assert annual_to_grid_rate(0.0, "1 day") == 0.0


def test_score_subscribers_with_a_model_per_group_matches_each_group_alone(rng):
    """One code path: a {group: model} mapping gives each group what that model alone gives,
    and the totals over groups are per-draw sums of the groups' (paired) draws."""
    from clvbayes.compat import posterior_from_arrays
    from clvbayes.models.bdw import BetaDiscreteWeibullModel
    from clvbayes.models.sbg import ShiftedBetaGeometricModel
    from clvbayes.predict.retention import score_subscribers

    sbg = ShiftedBetaGeometricModel()
    sbg.posterior_ = posterior_from_arrays({"alpha": rng.gamma(50, 0.7 / 50, (1, 200)),
                                            "beta": rng.gamma(50, 1.2 / 50, (1, 200))})  # fmt: skip
    bdw = BetaDiscreteWeibullModel()
    bdw.posterior_ = posterior_from_arrays({"alpha": rng.gamma(50, 0.5 / 50, (1, 200)),
                                            "beta": rng.gamma(50, 2.0 / 50, (1, 200)),
                                            "c": rng.gamma(50, 1.3 / 50, (1, 200))})  # fmt: skip
    n = 2000
    table = pd.DataFrame({"periods": rng.integers(0, 15, n), "churned": 0,
                          "price": rng.choice([10.0, 20.0], n),
                          "fit_group": rng.choice(["a", "b"], n)},
                         index=[f"s{i}" for i in range(n)])  # fmt: skip
    both = score_subscribers(table, {"a": sbg, "b": bdw}, group_col="fit_group", by="fit_group",
                             horizon=6, discount_rate=0.01, seed=3)  # fmt: skip
    seg = both.segments.set_index(["grouping", "group", "k"]).sort_index()
    for g, model in (("a", sbg), ("b", bdw)):
        part = table[table["fit_group"] == g]
        alone = score_subscribers(part, model, horizon=6, discount_rate=0.01, seed=5)
        ref = alone.cohorts["all"].reset_index()
        mine = seg.loc[("fit_group", g)]
        for col in ("active_mean", "active_ci_lower", "active_ci_upper", "revenue_mean"):
            assert mine[col].to_numpy() == pytest.approx(ref[col].to_numpy(), rel=1e-10), col
        for col in ("active_pi_lower", "active_pi_upper"):  # simulation noise only
            assert mine[col].to_numpy() == pytest.approx(ref[col].to_numpy(), rel=0.05), col
        cols = ["p_renew_mean", "renewals_ci_upper", "value_mean", "derl_mean"]
        pd.testing.assert_frame_equal(
            both.subscribers.loc[part.index, cols], alone.subscribers[cols]
        )
    tot = both.totals.set_index(["grouping", "group"])
    sub = both.subscribers
    assert tot.at[("all", "all"), "renewals_total_mean"] == pytest.approx(
        sub["renewals_mean"].sum()
    )
    assert tot.at[("all", "all"), "value_total_mean"] == pytest.approx(sub["value_mean"].sum())
    assert tot.loc["fit_group", "value_total_mean"].sum() == pytest.approx(
        tot.at[("all", "all"), "value_total_mean"]
    )
    assert (
        tot.at[("all", "all"), "value_total_pi_lower"] < tot.at[("all", "all"), "value_total_mean"]
    )
    with pytest.raises(DataError, match=r"group\(s\) \['b'\] without a model"):
        score_subscribers(table, {"a": sbg}, horizon=3)


def test_comparison_uses_the_models_loo_terms():
    """The comparison's elpd is CLVModel.loo's; constant histories carry Pareto k 0."""
    from clvbayes.datasets.subscriptions import load_fh2007_subscribers
    from clvbayes.models.bdw import BetaDiscreteWeibullModel
    from clvbayes.models.sbg import ShiftedBetaGeometricModel
    from clvbayes.report.retention_comparison import compare_retention_models

    subs = load_fh2007_subscribers()
    regular = subs[subs["cohort"] == "regular"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {"regular": {
            "sbg": ShiftedBetaGeometricModel().fit(regular, method="laplace", draws=400, seed=1),
            "bdw": BetaDiscreteWeibullModel().fit(regular, method="laplace", draws=400, seed=1),
        }}  # fmt: skip
    table = compare_retention_models(fits).table.set_index("model")
    for key, model in fits["regular"].items():
        loo = model.loo()
        assert table.at[key, "elpd_loo"] == pytest.approx(loo.elpd, rel=1e-12)
        assert table.at[key, "max_pareto_k"] == pytest.approx(loo.max_pareto_k)
    # active subscribers in their first period: log S(0) = 0 under every draw
    new = pd.DataFrame({"periods": [0, 0, 1, 2], "churned": [0, 1, 1, 0]}, index=list("abcd"))
    _, elpd, p, k = fits["regular"]["sbg"].loo_terms(new)
    assert elpd[0] == 0.0 and p[0] == 0.0 and k[0] == 0.0
    assert np.isfinite(k).all() and (elpd[1:] < 0).all()


# ---------------------------------------------------------------- partial pooling
def test_pool_by_plan_fits_pooled_models_and_reports_raw_against_pooled(tmp_path, capsys):
    path = _table(tmp_path, n=500)
    out = tmp_path / "pooled"
    rc, _stdout, err = _exit(
        ["subscriptions", str(path), "--period", "month", "--as-of", "2024-12-31",
         "--customer-id-col", "id", "--pool-by", "plan", "--horizon", "6",
         "--holdout-periods", "4", "-o", str(out), *FAST], capsys,
    )  # fmt: skip
    assert rc == 0, err
    s, t = _check_folder(out)
    assert s["settings"]["pool_by"] == "plan" and s["settings"]["fit_by"] == "plan"
    assert set(s["files"]["models"]) == {"sbg-pooled", "bdw-pooled"}
    pool = t["pooling"]
    assert set(zip(pool["fit_group"], pool["model"], pool["estimate"], strict=True)) == {
        (g, m, e) for g in ("=basic", "plus") for m in ("sbg", "bdw") for e in ("raw", "pooled")
    }
    assert pool.loc[pool["model"] == "sbg", "c_mean"].isna().all()
    ok = pool["note"].isna()
    assert ok.all() and (pool["alpha_ci_lower"] < pool["alpha_ci_upper"]).all()
    # the simulated truth is one population, sBG(1, 4): mean churn 0.2 in every group
    sbg = pool[pool["model"] == "sbg"]
    assert np.all((sbg["mean_churn_ci_lower"] < 0.2) & (0.2 < sbg["mean_churn_ci_upper"]))
    # LOO per group from the pooled fit; the 'all' rows add them up
    mc = t["model_comparison"].set_index(["fit_group", "model"])
    for k in ("sbg", "bdw"):
        parts = mc.loc[[("=basic", k), ("plus", k)], "elpd_loo"].sum()
        assert mc.at[("all", k), "elpd_loo"] == pytest.approx(parts)
        assert np.isfinite(mc.at[("all", k), "fit_seconds"])
    assert "Partial pooling" in (out / "model_summary.md").read_text()
    assert s["holdout"]["settings"]["refit"] == "pooled across plan"


def test_pool_by_a_missing_column_lists_the_valid_ones(tmp_path, capsys, no_slow_steps):
    path = _table(tmp_path, n=20)
    rc, _out, err = _exit(["subscriptions", str(path), "--period", "month", "--as-of",
                          "2024-12-31", "--customer-id-col", "id", "--pool-by", "region", "-o",
                          str(tmp_path / "o")], capsys)  # fmt: skip
    assert rc == 2 and "--pool-by 'region': the subscribers have no such grouping column" in err
    assert "'cohort'" in err and "'plan'" in err and "Columns of the input: 'id'" in err
    rc, _out, err = _exit(["subscriptions", "--demo", "fh2007", "--pool-by", "plan", "-o",
                          str(tmp_path / "o")], capsys)  # fmt: skip
    assert rc == 2 and "Pool by one of: 'cohort'" in err
    rc, _out, err = _exit(["subscriptions", "--demo", "box", "--pool-by", "plan", "--fit-by",
                          "plan", "-o", str(tmp_path / "o")], capsys)  # fmt: skip
    assert rc == 2 and "drop --fit-by" in err


def test_charge_log_renewal_inside_the_grace_period_is_not_counted_yet():
    """Paid or not, a renewal due within grace_days of as_of is unresolved for everyone."""
    from clvbayes.data.subscriptions import subscriptions_from_charges
    from clvbayes.subscriptions_job import censor_pending_renewals

    charges = pd.DataFrame({
        "customer_id": ["paid", "paid", "paid", "late", "late", "old", "old", "old"],
        "date": ["2024-10-28", "2024-11-28", "2024-12-28", "2024-10-28", "2024-11-28",
                 "2024-10-10", "2024-11-10", "2024-12-10"],
    })  # fmt: skip
    spells = subscriptions_from_charges(charges, as_of="2024-12-31", grace_days=7)
    assert spells["periods"].to_dict() == {"late#1": 1, "old#1": 2, "paid#1": 2}
    fixed = censor_pending_renewals(spells, charges, as_of="2024-12-31", grace_days=7)
    # 'paid' renewed on its 12-28 due date, 'late' has not paid it yet: both now at 1 renewal
    assert fixed["periods"].to_dict() == {"late#1": 1, "old#1": 2, "paid#1": 1}
    assert fixed["churned"].tolist() == [0, 0, 0]
    assert fixed.attrs["pending_renewals_not_counted"] == 1


# ---------------------------------------------------------------- refusals (exit 2)
@pytest.fixture
def no_slow_steps(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the job read the data before refusing the options")

    monkeypatch.setattr(subscriptions_job, "_read", refuse)


REFUSALS = {
    "no input": ([], "no input: give the subscriptions file as PATH"),
    "period missing": (["{path}", "--as-of", "2024-12-31"], "--period is required"),
    "bad period": (["{path}", "--period", "fortnight", "--as-of", "2024-12-31"],
                   "--period 'fortnight'"),
    "no as_of": (["{path}", "--period", "month"], "--as-of DATE is required"),
    "charges without grace": (["{path}", "--charges", "--period", "month", "--as-of",
                               "2024-12-31"], "--charges needs --grace-days"),
    "grace too long": (["{path}", "--charges", "--grace-days", "15", "--period", "month",
                        "--as-of", "2024-12-31"], "below half the shortest"),
    "path and demo": (["{path}", "--demo", "box"], "either PATH or --demo box"),
    "demo with input flags": (["--demo", "box", "--period", "week"],
                              "--period: options for your own input file"),
    "missing column": (["{path}", "--period", "month", "--as-of", "2024-12-31"],
                       "Missing column(s) 'customer_id'"),
    "margin as percent": (["--demo", "box", "--margin", "30"], "--margin 0.3"),
    "annual rate as percent": (["--demo", "box", "--discount-rate", "10"], "--discount-rate 10"),
    "horizon too long": (["--demo", "fh2007", "--horizon", "200"], "beyond the 100 years"),
    "fit by plan, no plan": (["--demo", "fh2007", "--fit-by", "plan"], "no plan"),
    "input missing": (["missing.csv", "--period", "month", "--as-of", "2024-12-31"],
                      "input file not found"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_exit_2_before_reading(case, tmp_path, capsys, no_slow_steps):
    argv, message = REFUSALS[case]
    path = _table(tmp_path, n=20)
    argv = [a.replace("{path}", str(path)) for a in argv]
    rc, _out, err = _exit(["subscriptions", *argv, "-o", str(tmp_path / "out"), "-q"], capsys)
    assert rc == 2, (case, err)
    assert message in err, (case, err)
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_missing_end_column_names_the_flag(tmp_path, capsys, no_slow_steps):
    path = _table(tmp_path, n=20)
    pd.read_csv(path).drop(columns="end").to_csv(path, index=False)
    rc, _out, err = _exit(["subscriptions", str(path), "--period", "month", "--as-of",
                          "2024-12-31", "--customer-id-col", "id", "-o",
                          str(tmp_path / "o")], capsys)  # fmt: skip
    assert rc == 2 and "Missing column(s) 'end'" in err and "--end-col COL" in err


def test_holdout_longer_than_the_data_is_refused_before_fitting(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fitted before refusing the holdout")

    monkeypatch.setattr(subscriptions_job, "_fit_pair", refuse)
    rc, _out, err = _exit(["subscriptions", "--demo", "fh2007", "--holdout-periods", "12", "-o",
                           str(tmp_path / "o"), "-q"], capsys)  # fmt: skip
    assert rc == 2 and "--holdout-periods 12 leaves no data to fit on" in err


def test_data_errors_exit_2_with_the_data_layer_message(tmp_path, capsys):
    path = _table(tmp_path, n=50)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[3, "end"] = "2023-01-01"
    frame.loc[3, "start"] = "2024-06-01"  # ends before it starts
    frame.to_csv(path, index=False)
    rc, _out, err = _exit(["subscriptions", str(path), "--period", "month", "--as-of",
                          "2024-12-31", "--customer-id-col", "id", "-q", "-o",
                          str(tmp_path / "o")], capsys)  # fmt: skip
    assert rc == 2 and "end date before the start date" in err and "S0003" in err
    assert "Traceback" not in err
