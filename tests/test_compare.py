"""``clvbayes run --purchase-model compare``: every purchase model side by side, one chosen."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from test_cli import _exit, _small_csv, _write_json, no_slow_steps  # noqa: F401  (a fixture)

from clvbayes import cli
from clvbayes.models import CLVModel
from clvbayes.models.protocols import purchase_models
from clvbayes.report import (
    CHOICE_RULE,
    ReportError,
    choose_model,
    read_report_table,
    validate_report,
)

#: Laplace with 200 draws: real posterior draws for LOO, seconds per model (Pareto/NBD's
#: likelihood is the slow one); the bundled CDNOW sample has a 39-week holdout.
FAST = ["--method", "laplace", "--draws", "200", "--prediction-draws", "200", "--quiet"]
PRIORS = {
    "bgnbd": {"r": {"dist": "HalfNormal", "sigma": 5}},
    "mbgnbd": {"a": {"dist": "HalfNormal", "sigma": 2}},
    "pnbd": {"s": {"dist": "HalfNormal", "sigma": 5}},
    "gamma_gamma": {"q": {"dist": "Gamma", "alpha": 20, "beta": 5}},
}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The bundled sample with every purchase model compared (priors for each of them)."""
    tmp = tmp_path_factory.mktemp("compare")
    priors = _write_json(tmp / "priors.json", PRIORS)
    out = tmp / "report"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["run", "--purchase-model", "compare", *FAST, "--priors", str(priors),
                       "-o", str(out)])  # fmt: skip
    assert rc == 0
    (tmp / "stdout.txt").write_text(stdout.getvalue())
    return out


def _summary(folder):
    return json.loads((folder / "model_summary.json").read_text())


def test_comparison_table_has_one_row_per_model_with_sensible_values(compared):
    validate_report(compared)
    table = read_report_table(compared / "model_comparison.csv")
    pd.testing.assert_frame_equal(table, read_report_table(compared / "model_comparison.parquet"))
    assert sorted(table["model"]) == sorted(purchase_models())
    assert table["chosen"].sum() == 1
    assert table["elpd_loo"].is_monotonic_decreasing  # best first
    assert np.isfinite(table.select_dtypes("number")).all().all()
    assert (table["elpd_loo"] < 0).all() and (table["elpd_loo_se"] > 0).all()
    assert table["p_loo"].between(0.5, 20).all()  # four parameters each
    assert table["elpd_diff"].iloc[0] == 0 and (table["elpd_diff"] >= 0).all()
    assert (table["max_pareto_k"] < 0.7).all()
    assert (table["n_customers"] == 2357).all() and (table["n_histories"] < 2357).all()
    # the CDNOW holdout: 1,882 actual purchases in 39 weeks
    assert (table["holdout_purchases_actual_total"] == 1882).all()
    assert table["holdout_purchases_predicted_total"].between(1200, 2500).all()
    assert (
        table["holdout_purchases_total_pi_lower"] < table["holdout_purchases_total_pi_upper"]
    ).all()
    assert table["holdout_purchases_pi_coverage"].between(0.85, 1).all()
    assert table["holdout_purchases_mean_pit"].between(0.4, 0.6).all()
    assert (table["holdout_purchases_mae"] > 0).all()
    assert (table["holdout_purchases_rmse"] >= table["holdout_purchases_mae"]).all()


def test_the_report_states_the_chosen_model_and_why(compared):
    s = _summary(compared)
    table = read_report_table(compared / "model_comparison.csv")
    chosen = table.loc[table["chosen"], "model"].item()
    name = table.loc[table["chosen"], "model_name"].item()
    assert s["model_comparison"]["chosen"] == chosen == s["settings"]["purchase_model"]
    assert s["settings"]["purchase_models_compared"] == list(purchase_models())
    assert s["model_comparison"]["rule"] == CHOICE_RULE
    assert (chosen, s["model_comparison"]["reason"]) == choose_model(table)
    names = ", ".join(table["model_name"])
    line = (compared.parent / "stdout.txt").read_text()
    assert f"Purchase model: {name}, chosen by PSIS-LOO among {names}" in line
    md = (compared / "model_summary.md").read_text()
    assert f"**The main tables use {name} (`{chosen}`).**" in md
    assert (
        "has the highest PSIS-LOO elpd" in md and "Holdout period (not used for the choice)" in md
    )
    assert f"## Model `{chosen}` " in md and "-- used for the tables" in md
    # every compared model is saved, with its own priors from --priors
    for key in purchase_models():
        assert s["files"]["models"][key] == f"{key}.nc" and (compared / f"{key}.nc").is_file()
    assert s["models"]["bgnbd"]["priors"]["r"] == PRIORS["bgnbd"]["r"]
    assert s["models"]["mbgnbd"]["priors"]["a"] == PRIORS["mbgnbd"]["a"]
    assert s["models"]["pnbd"]["priors"]["s"] == PRIORS["pnbd"]["s"]
    # the data dictionary and the manifest know the new table
    dictionary = pd.read_csv(compared / "data_dictionary.csv", dtype=str)
    described = dictionary.loc[dictionary["table"] == "model_comparison", "column"].tolist()
    assert described == table.columns.tolist()
    assert "## model_comparison" in (compared / "data_dictionary.md").read_text()
    manifest = json.loads((compared / ".clvbayes-manifest.json").read_text())["files"]
    assert {"model_comparison.csv", "model_comparison.parquet"} <= set(manifest)


def test_loo_of_the_comparison_is_the_models_own(compared):
    """Cross-check: the paired per-history LOO terms add up to CLVModel.loo() of each model."""
    table = read_report_table(compared / "model_comparison.csv").set_index("model")
    for key in table.index:
        loo = CLVModel.load(compared / f"{key}.nc").loo()
        assert table.at[key, "elpd_loo"] == pytest.approx(loo.elpd, rel=1e-10)
        assert table.at[key, "elpd_loo_se"] == pytest.approx(loo.se, rel=1e-8)
        assert table.at[key, "p_loo"] == pytest.approx(loo.p_eff, rel=1e-8)
        assert table.at[key, "max_pareto_k"] == pytest.approx(loo.max_pareto_k, rel=1e-8)
        assert table.at[key, "n_histories"] == loo.n_histories


def test_main_tables_are_those_of_the_chosen_model(compared, tmp_path, capsys):
    """The customers and segments tables equal a run with --purchase-model CHOSEN."""
    chosen = _summary(compared)["model_comparison"]["chosen"]
    priors = _write_json(tmp_path / "p.json", {k: PRIORS[k] for k in (chosen, "gamma_gamma")})
    out = tmp_path / "single"
    rc, stdout, err = _exit(["run", "--purchase-model", chosen, *FAST, "--priors", str(priors),
                             "-o", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    assert "chosen by PSIS-LOO" not in stdout
    for name in ("customers.csv", "segments.csv"):
        single, both = read_report_table(out / name), read_report_table(compared / name)
        averaged = [c for c in both.columns if c.startswith("averaged_")]
        assert averaged and not any(c.startswith("averaged_") for c in single.columns)
        pd.testing.assert_frame_equal(single, both.drop(columns=averaged), check_exact=True)
    assert not (out / "model_comparison.csv").exists()


def test_the_report_has_the_model_average(compared):
    """Stacking weights, every model's totals and the mixture's, averaged_* columns that the
    data dictionary names as model-averaged, and the mixture's own predictions in them."""
    from clvbayes.models import GammaGammaModel, MixturePurchaseModel
    from clvbayes.predict import score_customers
    from clvbayes.report.comparison import AVERAGED_NAME, TOTAL_COLUMNS

    table = read_report_table(compared / "model_comparison.csv")
    w = table.set_index("model")["stacking_weight"]
    assert w.sum() == pytest.approx(1.0) and w.between(0, 1).all()
    assert np.isfinite(table[list(TOTAL_COLUMNS)]).all().all()
    avg = _summary(compared)["model_comparison"]["model_averaging"]
    assert avg["method"] == "stacking" and avg["weights"] == pytest.approx(w.to_dict())
    assert sum(avg["n_draws"].values()) == 1000  # the models' 200 draws, repeated evenly
    # the mixture's totals and its holdout check
    for c in ("purchases_total_mean", "clv_total_mean"):
        assert table[c].min() <= avg["totals"][c] <= table[c].max()
    lo, hi = avg["holdout_check"]["purchases"]["predicted_total_pi"]
    assert avg["holdout_check"]["purchases"]["actual_total"] == 1882 and lo < hi
    assert avg["holdout"]["holdout_purchases_actual_total"] == 1882
    md = (compared / "model_summary.md").read_text()
    assert "### Model average (stacking)" in md and f"| {AVERAGED_NAME} |" in md
    assert "Holdout check of the model average: purchases: actual 1,882" in md
    # averaged columns: in both tables, described as model-averaged, and only they
    customers = read_report_table(compared / "customers.csv")
    segments = read_report_table(compared / "segments.csv")
    dictionary = pd.read_csv(compared / "data_dictionary.csv", dtype=str)
    flagged = dictionary.loc[dictionary["meaning"].str.contains("MODEL-AVERAGED"), "column"]
    named = [c for c in [*customers.columns, *segments.columns] if c.startswith("averaged_")]
    assert sorted(flagged) == sorted(named)
    assert {"averaged_clv_mean", "averaged_purchases_pi_upper"} <= set(customers.columns)
    assert {"averaged_clv_total_pi_lower", "averaged_purchases_total_mean"} <= set(segments)
    everyone = segments[segments["grouping"] == "all"].iloc[0]
    assert everyone["averaged_clv_total_mean"] == pytest.approx(avg["totals"]["clv_total_mean"])
    # the expectations are those of the mixture rebuilt from the saved models (no randomness)
    models = {k: CLVModel.load(compared / f"{k}.nc") for k in table["model"]}
    mix = MixturePurchaseModel(models, avg["weights"])
    gg = GammaGammaModel.load(compared / "gamma_gamma.nc")
    rfm = customers.set_index("customer_id")[["frequency", "recency", "T", "monetary_value"]]
    rfm.attrs["time_unit"] = "weeks"
    again = score_customers(rfm, mix, gg, horizon=52, annual_discount_rate=0.1, seed=2,
                            n_draws=200, outcomes=False).customers  # fmt: skip
    for q in ("p_alive", "purchases", "clv"):
        np.testing.assert_allclose(customers[f"averaged_{q}_mean"], again[f"{q}_mean"],
                                   rtol=1e-9)  # fmt: skip


def test_without_a_holdout_the_comparison_has_loo_only(tmp_path, capsys):
    path, _ = _small_csv(tmp_path, n_customers=60)
    out = tmp_path / "r"
    rc, stdout, err = _exit(["run", str(path), "--purchase-model", "compare", *FAST, "--format",
                             "csv", "-o", str(out)], capsys)  # fmt: skip
    assert rc == 0, err
    validate_report(out)
    table = read_report_table(out / "model_comparison.csv")
    assert len(table) == len(purchase_models()) and table["chosen"].sum() == 1
    assert not any(c.startswith("holdout_") for c in table.columns)
    assert table["stacking_weight"].sum() == pytest.approx(1.0)
    md = (out / "model_summary.md").read_text()
    assert "Holdout period" not in md and "Holdout check of the model average" not in md
    assert "### Model average (stacking)" in md
    assert "chosen by PSIS-LOO" in stdout


# ---------------------------------------------------------------- refused before the slow steps
def test_compare_with_map_is_refused(tmp_path, capsys, no_slow_steps):  # noqa: F811
    rc, _, err = _exit(["run", "--purchase-model", "compare", "--method", "map", "-q", "-o",
                        str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2 and "Traceback" not in err
    assert (
        "--purchase-model compare ranks the purchase models by PSIS-LOO, which needs posterior "
        "draws, but --method map gives a single point; use --method laplace (seconds) or "
        "--method nuts, or pick one model with --purchase-model bgnbd or mbgnbd"
    ) in err.replace("\n", " ")
    assert not (tmp_path / "r").exists()


def test_compare_needs_two_usable_models(tmp_path, capsys, no_slow_steps, monkeypatch):  # noqa: F811
    from clvbayes.models import BetaGeoModel, protocols

    fake = {
        "bgnbd": (BetaGeoModel, None),
        "mbgnbd": (object, "ModifiedBetaGeoModel lacks the PurchaseModel method(s) _x"),
        "pnbd": (None, "clvbayes.models.pnbd.ParetoNBDModel cannot be imported (E: e)"),
    }
    monkeypatch.setattr(protocols, "purchase_model_candidates", lambda: fake)
    rc, _, err = _exit(["run", "--purchase-model", "compare", "--method", "laplace", "-q", "-o",
                        str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2, err
    assert (
        "--purchase-model compare needs at least two purchase models that can drive the "
        "predictions, and only bgnbd can (mbgnbd: ModifiedBetaGeoModel lacks the PurchaseModel "
        "method(s) _x; pnbd: clvbayes.models.pnbd.ParetoNBDModel cannot be imported (E: e)). "
        "Use --purchase-model bgnbd."
    ) in err.replace("\n", " ")


def test_compare_priors_name_every_fitted_model(tmp_path, capsys, no_slow_steps):  # noqa: F811
    priors = _write_json(tmp_path / "p.json", {"pareto": {"r": {"dist": "HalfNormal"}}})
    rc, _, err = _exit(["run", "--purchase-model", "compare", "--method", "laplace", "--priors",
                        str(priors), "-q", "-o", str(tmp_path / "r")], capsys)  # fmt: skip
    assert rc == 2, err
    text = err.replace("\n", " ")
    assert f"--priors {priors}: unknown model 'pareto'; valid models:" in text
    for key, cls in purchase_models().items():
        assert f"{key!r} (parameters {', '.join(cls.param_names)})" in text


# ---------------------------------------------------------------- the rule
def _table(rows):
    keys = ["model", "elpd_loo", "elpd_diff", "elpd_diff_se", "max_pareto_k"]
    names = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pnbd": "Pareto/NBD"}
    df = pd.DataFrame(rows, columns=keys)
    return df.assign(model_name=df["model"].map(names))


def test_a_clear_winner_is_chosen():
    key, reason = choose_model(_table([("pnbd", -100.0, 0.0, 0.0, 0.2),
                                       ("bgnbd", -130.0, 30.0, 5.0, 0.3),
                                       ("mbgnbd", -131.0, 31.0, 6.0, 0.3)]))  # fmt: skip
    assert key == "pnbd"
    assert reason.startswith("Pareto/NBD has the highest PSIS-LOO elpd (-100.0 nats); the "
                             "runner-up, BG/NBD (30.0 nats lower, se of the difference 5.0), "
                             "is more than 2 se behind")  # fmt: skip


def test_a_tie_goes_to_the_first_in_the_order_of_preference():
    key, reason = choose_model(_table([("pnbd", -100.0, 0.0, 0.0, 0.2),
                                       ("mbgnbd", -104.0, 4.0, 3.0, 0.3),
                                       ("bgnbd", -140.0, 40.0, 5.0, 0.3)]))  # fmt: skip
    assert key == "mbgnbd"  # tied with the best; BG/NBD is clearly worse
    assert "but MBG/NBD (4.0 nats lower, se of the difference 3.0) is within 2 se of it" in reason
    assert "MBG/NBD is the first of them in the order of preference" in reason
    key, _ = choose_model(_table([("mbgnbd", -100.0, 0.0, 0.0, 0.2),
                                  ("bgnbd", -100.5, 0.5, 1.0, 0.3)]))  # fmt: skip
    assert key == "bgnbd"


def test_unreliable_loo_is_said():
    _, reason = choose_model(_table([("bgnbd", -100.0, 0.0, 0.0, 0.9),
                                     ("mbgnbd", -150.0, 50.0, 5.0, 0.3)]))  # fmt: skip
    assert "Caution: the LOO estimate of BG/NBD (max Pareto k 0.90) is unreliable" in reason


def test_validation_refuses_a_choice_the_settings_do_not_use(compared, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(compared, folder)
    (folder / ".clvbayes-manifest.json").unlink()  # as a report of an older clvbayes
    s = _summary(folder)
    other = next(k for k in purchase_models() if k != s["settings"]["purchase_model"])
    s["settings"]["purchase_model"] = other
    (folder / "model_summary.json").write_text(json.dumps(s))
    with pytest.raises(
        ReportError, match=rf"model_comparison chooses '\w+', settings use '{other}'"
    ):
        validate_report(folder)
