"""BetaDiscreteWeibullModel: FH2007 fits through fit(), nesting of the sBG, graph, predictions."""

from __future__ import annotations

import numpy as np
import pytest

from clvbayes.errors import ModelError
from clvbayes.models.bdw import BetaDiscreteWeibullModel
from clvbayes.models.sbg import ShiftedBetaGeometricModel
from tests.test_models_sbg import active_table, fh2007


@pytest.mark.parametrize(
    "column, ref",
    [
        # computed here (not checked against FHLDS2018, which was not available): see
        # tests/test_math_bdw.py::test_fh2007_mle_nests_the_sbg
        ("high_end_pct_surviving", (0.2143, 1.4266, 1.7236, -1605.314)),
        ("regular_pct_surviving", (0.4556, 0.7793, 1.2835, -1679.603)),
    ],
)
def test_mle_on_fh2007(column, ref):
    subs = fh2007(column)
    model = BetaDiscreteWeibullModel().fit(subs, method="mle")
    d = model.draws()
    np.testing.assert_allclose(
        [float(d[k][0, 0]) for k in ("alpha", "beta", "c")], ref[:3], rtol=2e-3
    )
    ll = float(model.log_likelihood().sum())
    assert ll == pytest.approx(ref[3], abs=0.01)
    sbg_ll = float(ShiftedBetaGeometricModel().fit(subs, method="mle").log_likelihood().sum())
    assert ll > sbg_ll


def test_laplace_gives_distinct_draws():
    lap = BetaDiscreteWeibullModel().fit(fh2007("regular_pct_surviving"), method="laplace",
                                         draws=300, seed=4)  # fmt: skip
    c = lap.draws()["c"].ravel()
    assert np.unique(c).size == 300
    assert 1.0 < np.mean(c) < 1.6


def test_pytensor_graph_equals_numpy():
    model = BetaDiscreteWeibullModel().fit(fh2007("high_end_pct_surviving"), method="map")
    logp = model.build_pymc_model(fast=False).compile_logp(jacobian=False)
    vals = {"alpha": 0.3, "beta": 1.5, "c": 1.4}
    expected = np.sum(model.data_.counts * model._loglik(vals, model.data_)) + sum(
        float(model.priors[k].logpdf(v)) for k, v in vals.items()
    )
    got = float(logp({f"{k}_log__": np.log(v) for k, v in vals.items()}))
    assert got == pytest.approx(expected, rel=1e-10)


def test_predictions():
    model = BetaDiscreteWeibullModel().fit(fh2007("regular_pct_surviving"), method="laplace",
                                           draws=40, seed=1)  # fmt: skip
    subs = active_table()
    assert model.survival([0, 5, 10_000]).shape == (1, 40, 3)
    haz = model.churn_hazard(subs)
    assert haz.dims == ("chain", "draw", "customer_id")
    assert np.all((haz.values > 0) & (haz.values < 1))
    assert np.all(np.isfinite(model.derl(0.1, subs).values))
    assert model.p_renew(3, subs).shape == (1, 40, 6)
    assert np.all(model.sample_churn_period(seed=1, table=subs).values > subs["periods"].to_numpy())


def test_refuses_first_period_only_data():
    subs = active_table(3).assign(periods=0, churned=[1, 0, 0])
    with pytest.raises(ModelError, match=r"every subscriber is in her first period"):
        BetaDiscreteWeibullModel().fit(subs, method="map")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:NUTS diagnostics")
def test_short_nuts_run():
    model = BetaDiscreteWeibullModel().fit(fh2007("regular_pct_surviving"), method="nuts",
                                           draws=200, tune=200, chains=2, seed=1,
                                           nuts_sampler="pymc", progressbar=False)  # fmt: skip
    assert model.draws()["c"].shape == (2, 200)
    assert 1.0 < float(np.mean(model.draws()["c"])) < 1.7


def test_graph_gradient_finite_for_long_tenures_and_extreme_parameters():
    import pandas as pd

    subs = pd.DataFrame({"periods": [0, 0, 1, 100, 10_000, 10_000], "churned": [1, 0, 1, 1, 1, 0]})
    model = BetaDiscreteWeibullModel()
    model.data_ = model._compress(subs)
    pm_model = model.build_pymc_model(model.data_, fast=False)
    logp = pm_model.compile_logp(jacobian=False)
    dlogp = pm_model.compile_dlogp(jacobian=False)
    for a, b, c in [(1e-6, 1e-6, 0.05), (1e6, 1e6, 3.0), (0.5, 0.5, 1.0), (1e-6, 1e6, 0.2)]:
        point = {"alpha_log__": np.log(a), "beta_log__": np.log(b), "c_log__": np.log(c)}
        assert np.isfinite(logp(point)), (a, b, c)
        assert np.all(np.isfinite(dlogp(point))), (a, b, c)


@pytest.mark.parametrize("c_true", [0.7, 1.0, 1.6])
def test_parameter_recovery_on_simulated_cohorts(c_true):
    """MLE on 20,000 simulated subscribers observed for 12 periods recovers (alpha, beta, c)."""
    import pandas as pd

    from clvbayes.math import bdw

    rng = np.random.default_rng(11)
    a, b, n, horizon = 0.8, 2.5, 20_000, 12
    T = bdw.sample_churn_period(rng, np.full(n, a), b, c_true, 0)
    subs = pd.DataFrame({"periods": np.minimum(T - 1, horizon).astype(int),
                         "churned": (T - 1 < horizon).astype(int)})  # fmt: skip
    model = BetaDiscreteWeibullModel().fit(subs, method="laplace", draws=500, seed=1)
    d = model.draws()
    for name, true in (("alpha", a), ("beta", b), ("c", c_true)):
        draws = d[name].ravel()
        lo, hi = np.quantile(draws, [0.001, 0.999])
        assert lo < true < hi, (name, true, lo, hi)


def test_nuts_defaults_ask_for_small_steps():
    """BdW samples with target_accept 0.95 (its posterior is a curved ridge), and so does the
    pooled BdW; a caller's own value still wins (CLVModel.nuts_defaults)."""
    from clvbayes.models.pooled import PooledBetaDiscreteWeibullModel

    assert BetaDiscreteWeibullModel.nuts_defaults == {"target_accept": 0.95}
    assert PooledBetaDiscreteWeibullModel.nuts_defaults == {"target_accept": 0.95}


@pytest.mark.slow
def test_nuts_on_fh2007_regular_has_no_divergences_at_the_defaults():
    """At PyMC's default target_accept 0.8 this fit diverged 3 times (seed 0)."""
    from clvbayes.datasets.subscriptions import load_fh2007_subscribers

    subs = load_fh2007_subscribers()
    regular = subs[subs["cohort"] == "regular"]
    model = BetaDiscreteWeibullModel().fit(regular, method="nuts", seed=0, progressbar=False)
    assert int(np.asarray(model.sample_stats_["diverging"]).sum()) == 0
    assert float(model.summary()["r_hat"].max()) < 1.01
