"""ShiftedBetaGeometricModel: FH2007 references through fit(), Laplace, the PyTensor graph, predictions."""

from __future__ import annotations

import os
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest

from clvbayes.data.subscriptions import subscribers_from_survival
from clvbayes.errors import DataError, ModelError
from clvbayes.models.priors import Prior
from clvbayes.models.sbg import ShiftedBetaGeometricModel

PATH = str(
    files("clvbayes.datasets").joinpath("files", "fh2007_survival.csv")
)  # bundled copy of ../shared/data/retention


def fh2007(column: str) -> pd.DataFrame:
    if not os.path.exists(PATH):
        pytest.skip("fh2007_survival.csv not found")
    return subscribers_from_survival(pd.read_csv(PATH), period_col="year", columns=[column],
                                     cohort_size=1000, calibration_periods=7)  # fmt: skip


def active_table(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"periods": np.arange(n), "churned": 0},
                        index=pd.Index([f"s{i}" for i in range(n)], name="id"))  # fmt: skip


@pytest.mark.parametrize(
    "column, alpha, beta, ll",
    [
        ("high_end_pct_surviving", 0.668, 3.806, -1611.16),
        ("regular_pct_surviving", 0.704, 1.182, -1680.27),
    ],
)
def test_mle_reproduces_fh2007(column, alpha, beta, ll):
    model = ShiftedBetaGeometricModel().fit(fh2007(column), method="mle")
    d = model.draws()
    assert float(d["alpha"][0, 0]) == pytest.approx(alpha, rel=5e-3)
    assert float(d["beta"][0, 0]) == pytest.approx(beta, rel=5e-3)
    assert float(model.log_likelihood().sum()) == pytest.approx(ll, abs=0.01)
    assert model.data_.n_unique == 8  # one term per (periods, churned) cell


def test_map_and_laplace():
    subs = fh2007("regular_pct_surviving")
    m = ShiftedBetaGeometricModel().fit(subs, method="map")
    assert m.n_draws_ == 1
    lap = ShiftedBetaGeometricModel().fit(subs, method="laplace", draws=400, seed=2)
    a = lap.draws()["alpha"].ravel()
    assert np.unique(a).size == 400
    assert np.mean(a) == pytest.approx(0.704, rel=0.05)
    assert 0.03 < np.std(a) < 0.12  # NUTS on the same data: sd 0.067
    again = ShiftedBetaGeometricModel().fit(subs, method="laplace", draws=400, seed=2)
    np.testing.assert_array_equal(again.draws()["alpha"], lap.draws()["alpha"])


def test_pytensor_graph_equals_numpy():
    subs = fh2007("high_end_pct_surviving")
    model = ShiftedBetaGeometricModel().fit(subs, method="map")
    pm_model = model.build_pymc_model(fast=False)
    logp = pm_model.compile_logp(jacobian=False)
    vals = {"alpha": 0.6, "beta": 2.5}
    expected = np.sum(model.data_.counts * model._loglik(vals, model.data_)) + sum(
        float(model.priors[k].logpdf(v)) for k, v in vals.items()
    )
    assert float(logp({f"{k}_log__": np.log(v) for k, v in vals.items()})) == pytest.approx(
        expected, rel=1e-10
    )


def test_predictions_have_named_dims_and_match_math():
    from clvbayes.math import sbg

    model = ShiftedBetaGeometricModel().fit(fh2007("regular_pct_surviving"), method="laplace",
                                            draws=50, seed=1)  # fmt: skip
    subs = active_table()
    d = model.draws()
    surv = model.survival(range(8, 13))
    assert surv.dims == ("chain", "draw", "t") and surv.shape == (1, 50, 5)
    assert model.retention_rate([1, 2]).shape == (1, 50, 2)
    haz = model.churn_hazard(subs)
    assert haz.dims == ("chain", "draw", "customer_id")
    assert list(haz.customer_id.values) == list(subs.index)
    np.testing.assert_allclose(haz.values, sbg.hazard(d["alpha"][..., None], d["beta"][..., None],
                                                      subs["periods"].to_numpy()))  # fmt: skip
    p2 = model.p_renew(2, subs)
    np.testing.assert_allclose(p2.values, (1 - haz.values) * (1 - model.churn_hazard(
        subs.assign(periods=subs["periods"] + 1)).values), rtol=1e-10)  # fmt: skip
    derl = model.derl(0.1, subs)
    assert np.all(np.isfinite(derl.values)) and np.all(derl.values > 0)
    assert model.expected_renewals(12, subs).shape == (1, 50, 6)
    draws = model.sample_churn_period(seed=3, table=subs)
    assert np.all(draws.values > subs["periods"].to_numpy())


def test_forecasts_refuse_cancelled_subscribers():
    model = ShiftedBetaGeometricModel().fit(fh2007("regular_pct_surviving"), method="map")
    with pytest.raises(
        ModelError, match=r"759 of the 1000 subscribers have cancelled; per-subscriber"
    ):
        model.churn_hazard()


def test_fit_refuses_data_without_cancellations():
    with pytest.raises(ModelError, match=r"none of the 6 subscribers has cancelled"):
        ShiftedBetaGeometricModel().fit(active_table(), method="map")


def test_bad_subscriber_table_and_prior_names():
    bad = active_table().assign(churned=[0, 1, 2, 0, 0, 0])
    with pytest.raises(
        DataError, match=r"Column 'churned' has 1 row with churn flags other than 0/1"
    ):
        ShiftedBetaGeometricModel().fit(bad, method="map")
    with pytest.raises(
        ValueError, match=r"unknown prior name\(s\) \['c'\]. Valid names are: alpha, beta"
    ):
        ShiftedBetaGeometricModel(priors={"c": Prior("HalfNormal", sigma=1)})


def test_save_load_round_trip(tmp_path, monkeypatch):
    import clvbayes.models as registry

    monkeypatch.setattr(registry, "ShiftedBetaGeometricModel", ShiftedBetaGeometricModel,
                        raising=False)  # fmt: skip
    model = ShiftedBetaGeometricModel().fit(fh2007("regular_pct_surviving"), method="laplace",
                                            draws=20, seed=1)  # fmt: skip
    model.save(tmp_path / "m.nc")
    back = ShiftedBetaGeometricModel.load(tmp_path / "m.nc")
    np.testing.assert_array_equal(back.draws()["beta"], model.draws()["beta"])
    assert back.data_.n_unique == model.data_.n_unique


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:NUTS diagnostics")
def test_short_nuts_run():
    model = ShiftedBetaGeometricModel().fit(fh2007("regular_pct_surviving"), method="nuts",
                                            draws=200, tune=200, chains=2, seed=1,
                                            nuts_sampler="pymc", progressbar=False)  # fmt: skip
    a = model.draws()["alpha"]
    assert a.shape == (2, 200)
    assert np.mean(a) == pytest.approx(0.704, abs=0.05)


def test_churn_period_predictive_intervals_are_calibrated():
    """Randomised PIT of the true churn period of the survivors of a simulated cohort: 90 +/- 3 %."""
    from clvbayes.math import sbg

    rng = np.random.default_rng(5)
    a, b, n, horizon = 0.7, 1.5, 6000, 6
    T = sbg.sample_churn_period(rng, np.full(n, a), b, 0)
    subs = pd.DataFrame({"periods": np.minimum(T - 1, horizon).astype(int),
                         "churned": (T - 1 < horizon).astype(int)})  # fmt: skip
    model = ShiftedBetaGeometricModel().fit(subs, method="laplace", draws=400, seed=1)
    active = subs[subs["churned"] == 0]
    truth = T[subs["churned"].to_numpy() == 0]
    draws = model.sample_churn_period(seed=2, table=active).values.reshape(-1, len(active))
    below = np.mean(draws < truth, axis=0)
    at = np.mean(draws == truth, axis=0)
    pit = below + rng.random(truth.size) * at
    inside = np.mean((pit > 0.05) & (pit < 0.95))
    assert inside == pytest.approx(0.90, abs=0.03)


def test_counts_and_residual_value():
    model = ShiftedBetaGeometricModel().fit(fh2007("regular_pct_surviving"), method="laplace",
                                            draws=300, seed=1)  # fmt: skip
    subs = active_table(50).assign(periods=7, price=[10.0] * 25 + [20.0] * 25)
    expected = model.expected_active(3, subs)
    sim = model.simulate_active(3, seed=1, table=subs)
    assert expected.dims == ("chain", "draw") and sim.dims == ("chain", "draw")
    assert float(sim.mean()) == pytest.approx(float(expected.mean()), rel=0.05)
    assert float(sim.std()) > float(expected.std())  # outcome noise on top
    value = model.residual_value(0.1, subs, margin=0.5)
    np.testing.assert_allclose(value.values[..., 30], model.derl(0.1, subs).values[..., 30] * 10.0)
    with pytest.raises(
        DataError, match=r"residual_value needs the price per period in column 'amount'"
    ):
        model.residual_value(0.1, subs, price_col="amount")


def test_loo_with_histories_no_draw_changes():
    """Active subscribers in their first period have likelihood 1 under every draw: their LOO
    term is exactly 0 (no Pareto smoothing, which fails on constant tails in ArviZ 1.x)."""
    rng = np.random.default_rng(0)
    t = pd.DataFrame(
        {"periods": np.r_[np.zeros(50, int), rng.integers(1, 8, 300)],
         "churned": np.r_[np.zeros(50, int), rng.integers(0, 2, 300)]},
        index=pd.Index([f"s{i}" for i in range(350)], name="id"),
    )  # fmt: skip
    model = ShiftedBetaGeometricModel().fit(t, method="laplace", seed=1)
    data, elpd_i, _, k_i = model.loo_terms()
    flat = (data["periods"] == 0) & (data["churned"] == 0)
    assert flat.any() and np.all(elpd_i[flat] == 0.0) and np.all(k_i[flat] == 0.0)
    loo = model.loo()
    assert np.isfinite(loo.elpd) and loo.max_pareto_k < 0.7
