"""Pooled retention models (sBG, BdW): the joint density, the graph, recovery and shrinkage, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clvbayes.compat import posterior_from_arrays
from clvbayes.errors import DataError
from clvbayes.math import sbg
from clvbayes.models.pooled import PooledBetaDiscreteWeibullModel, PooledShiftedBetaGeometricModel
from clvbayes.models.priors import Prior
from clvbayes.models.sbg import ShiftedBetaGeometricModel

TRUTH = {"alpha_mean": 0.8, "alpha_shape": 25.0, "beta_mean": 2.5, "beta_shape": 25.0}


def _simulated_cohorts(seed=3, n_cohorts=8):
    """Cohorts acquired one period apart: the youngest observed for 1 period, the oldest for 8."""
    rng = np.random.default_rng(seed)
    a = rng.gamma(TRUTH["alpha_shape"], TRUTH["alpha_mean"] / TRUTH["alpha_shape"], n_cohorts)
    b = rng.gamma(TRUTH["beta_shape"], TRUTH["beta_mean"] / TRUTH["beta_shape"], n_cohorts)
    frames = []
    for c in range(n_cohorts):
        n = 400
        theta = rng.beta(a[c], b[c], n)
        life = rng.geometric(theta) - 1
        observed = n_cohorts - c
        frames.append(pd.DataFrame({
            "periods": np.minimum(life, observed), "churned": (life < observed).astype(int),
            "cohort": f"c{c}",
        }))  # fmt: skip
    table = pd.concat(frames, ignore_index=True)
    table.index = pd.Index([f"s{i}" for i in range(len(table))], name="id")
    return table, a, b


@pytest.fixture(scope="module")
def cohorts():
    return _simulated_cohorts()


@pytest.fixture(scope="module")
def laplace(cohorts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PooledShiftedBetaGeometricModel("cohort").fit(cohorts[0], method="laplace", seed=1)


def test_joint_log_prior_is_the_hierarchy():
    model = PooledShiftedBetaGeometricModel()
    model._set_groups(["x", "y"])
    params = {"alpha_mean": 0.7, "alpha_shape": 4.0, "beta_mean": 2.0, "beta_shape": 9.0,
              "alpha_0": 0.5, "alpha_1": 0.9, "beta_0": 1.5, "beta_1": 3.0}  # fmt: skip
    expected = sum(float(model.priors[k].logpdf(params[k])) for k in
                   ("alpha_mean", "alpha_shape", "beta_mean", "beta_shape"))  # fmt: skip
    for p, k, m in (("alpha", 4.0, 0.7), ("beta", 9.0, 2.0)):
        for i in range(2):
            expected += stats.gamma.logpdf(params[f"{p}_{i}"], k, scale=m / k)
    assert model._log_prior(params) == pytest.approx(expected, rel=1e-12)


def test_likelihood_is_the_sum_of_the_cohorts_sbg_and_gradient_is_exact(cohorts):
    table = cohorts[0]
    model = PooledShiftedBetaGeometricModel()
    data = model._compress(table)
    values = np.array([1.0, 5.0, 1.0, 5.0, *np.linspace(0.5, 1.2, 8), *np.linspace(1.5, 3.5, 8)])
    total, grad = model._loglik_sum_function(data)(*values)
    expected = 0.0
    for i, g in enumerate(model.groups_):
        one = table[table["cohort"] == g]
        expected += float(
            np.sum(sbg.loglik(values[4 + i], values[12 + i], one["periods"], one["churned"]))
        )
    assert total == pytest.approx(expected, rel=1e-12)
    assert np.all(grad[:4] == 0.0)
    h = 1e-6
    for j in (4, 7, 12, 19):
        up, dn = values.copy(), values.copy()
        up[j] += h
        dn[j] -= h
        fd = (
            model._loglik_sum_function(data)(*up)[0] - model._loglik_sum_function(data)(*dn)[0]
        ) / (2 * h)
        assert grad[j] == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_pymc_graph_equals_the_numpy_density(cohorts):
    table = cohorts[0].iloc[::4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PooledShiftedBetaGeometricModel().fit(table, method="map")
    point = {k: float(v.ravel()[0]) for k, v in model.draws().items()}
    data = model.data_
    expected = float(np.sum(data.counts * model._loglik(point, data))) + model._log_prior(point)
    for fast in (False, True):
        logp = model.build_pymc_model(fast=fast).compile_logp(jacobian=False)
        got = float(logp({f"{k}_log__": np.log(v) for k, v in point.items()}))
        assert got == pytest.approx(expected, rel=1e-9), fast


def test_recovers_the_cohorts_and_shrinks_the_young_ones(cohorts, laplace):
    table, a, b = cohorts
    summary = laplace.group_summary(prob=0.9)
    truth = a / (a + b)
    inside = (summary["mean_churn_lower"].to_numpy() <= truth) & (
        truth <= summary["mean_churn_upper"].to_numpy()
    )
    assert inside.sum() >= 6, (summary, truth)
    # the youngest cohort (one period observed) tells its mean churn but not how it decays:
    # pooling narrows its projected 4-period survival and brings it closer to the truth
    young = table[table["cohort"] == "c7"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = ShiftedBetaGeometricModel().fit(young, method="laplace", seed=1)
    d, pooled = alone.draws(), laplace.group_model("c7").draws()
    s_alone = sbg.survival(d["alpha"].ravel(), d["beta"].ravel(), 4.0)
    s_pooled = sbg.survival(pooled["alpha"].ravel(), pooled["beta"].ravel(), 4.0)
    true_surv = float(sbg.survival(a[7], b[7], 4.0))
    print(f"\nS(4) of the youngest cohort: truth {true_surv:.3f}; pooled {s_pooled.mean():.3f} "
          f"(sd {s_pooled.std():.3f}); alone {s_alone.mean():.3f} (sd {s_alone.std():.3f})")  # fmt: skip
    assert np.std(s_pooled) < 0.7 * np.std(s_alone)
    assert abs(s_pooled.mean() - true_surv) < abs(s_alone.mean() - true_surv) + 0.01


def test_cohort_model_feeds_score_subscribers(laplace, cohorts):
    from clvbayes.predict import score_subscribers

    table = cohorts[0]
    one = table[table["cohort"] == "c0"]
    res = score_subscribers(one, laplace.group_model("c0"), horizon=3, seed=1, price_col=None)
    assert (res.subscribers["p_renew_ci_upper"] > res.subscribers["p_renew_ci_lower"]).all()


def test_save_load_round_trip(laplace, tmp_path):
    path = tmp_path / "pooled.nc"
    laplace.save(path)
    loaded = PooledShiftedBetaGeometricModel.load(path)
    assert loaded.groups_ == laplace.groups_ and loaded.pooled_by == "cohort"
    for k, v in laplace.draws().items():
        np.testing.assert_array_equal(loaded.draws()[k], v)
    pd.testing.assert_frame_equal(loaded.group_summary(), laplace.group_summary())


def test_errors_name_the_problem(cohorts, laplace):
    table = cohorts[0]
    with pytest.raises(
        DataError, match=r"pools by column 'plan', which the subscribers table lacks"
    ):
        PooledShiftedBetaGeometricModel("plan").fit(table, method="map")
    other = table.assign(cohort="new")
    with pytest.raises(DataError, match=r"groups the model was not fitted on: \['new'\]"):
        laplace._compress(other)
    with pytest.raises(DataError, match="Unknown group 'zz'"):
        laplace.group_model("zz")
    with pytest.raises(ValueError, match=r"unknown prior name\(s\) \['alpha'\]"):
        PooledShiftedBetaGeometricModel(priors={"alpha": Prior("HalfNormal", sigma=1)})


@pytest.mark.parametrize("cls", [PooledShiftedBetaGeometricModel, PooledBetaDiscreteWeibullModel])
def test_each_family_pools_its_own_likelihood_with_an_exact_gradient(cls, cohorts):
    """The pooled likelihood is the base model's per group; gradient and PyMC graph agree."""
    table = cohorts[0].iloc[::3]
    model = cls()
    data = model._compress(table)
    base = cls._base
    expected_names = {f"{p}_{k}" for p in base.param_names for k in ("mean", "shape")}
    expected_names |= {f"{p}_{i}" for p in base.param_names for i in range(8)}
    assert set(model.param_names) == expected_names
    rng = np.random.default_rng(0)
    typical = {"alpha": 0.8, "beta": 2.5, "c": 1.1}
    point = {f"{p}_mean": typical[p] for p in base.param_names}
    point.update({f"{p}_shape": 10.0 for p in base.param_names})
    point.update(
        {f"{p}_{i}": typical[p] * rng.uniform(0.7, 1.3) for p in base.param_names for i in range(8)}
    )
    model.posterior_ = posterior_from_arrays({k: np.full((1, 1), v) for k, v in point.items()})
    f = model._loglik_sum_function(data)
    values = np.array([point[k] for k in model.param_names])
    total, grad = f(*values)
    expected = 0.0
    for i, g in enumerate(model.groups_):
        one = base()._compress(table[table["cohort"] == g])
        params = {p: point[f"{p}_{i}"] for p in base.param_names}
        expected += float(np.sum(one.counts * base()._loglik(params, one)))
    assert total == pytest.approx(expected, rel=1e-10)
    for j in range(len(values)):
        h = 1e-6 * values[j]
        up, dn = values.copy(), values.copy()
        up[j] += h
        dn[j] -= h
        fd = (f(*up)[0] - f(*dn)[0]) / (2 * h)
        assert grad[j] == pytest.approx(fd, rel=1e-5, abs=1e-5), model.param_names[j]
    dens = float(np.sum(data.counts * model._loglik(point, data))) + model._log_prior(point)
    logp = model.build_pymc_model(data, fast=False).compile_logp(jacobian=False)
    got = float(logp({f"{k}_log__": np.log(v) for k, v in point.items()}))
    assert got == pytest.approx(dens, rel=1e-9)
    assert isinstance(model.group_model(model.groups_[0]), base)
    summary = model.group_summary()
    assert list(summary.index) == model.groups_ and "mean_churn_mean" in summary


def _weak_cohorts(seed=0, n=60, n_cohorts=5):
    """Five small sBG cohorts (alpha 0.8, beta 2.5, so c = 1), observed 1..5 periods: on these
    the joint mode on the parameter scale ran to alpha, beta -> 0.005, c -> 55."""
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(n_cohorts):
        life = rng.geometric(rng.beta(0.8, 2.5, n)) - 1
        observed = n_cohorts - c
        frames.append(pd.DataFrame({"periods": np.minimum(life, observed),
                                    "churned": (life < observed).astype(int),
                                    "cohort": f"c{c}"}))  # fmt: skip
    table = pd.concat(frames, ignore_index=True)
    table.index = pd.Index([f"s{i}" for i in range(len(table))], name="id")
    return table


@pytest.mark.parametrize("seed", [0, 1])
def test_pooled_bdw_map_on_weak_data_stays_near_the_truth(seed):
    import time

    table = _weak_cohorts(seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PooledBetaDiscreteWeibullModel("cohort").fit(table, method="map")
    seconds = time.perf_counter() - t0
    d = {k: float(v.ravel()[0]) for k, v in model.draws().items()}
    print(f"\npooled BdW MAP on 300 weak subscribers: {seconds:.2f} s, "
          f"alpha_mean {d['alpha_mean']:.3f}, beta_mean {d['beta_mean']:.3f}, "
          f"c {[round(d[f'c_{i}'], 3) for i in range(5)]}")  # fmt: skip
    assert 0.4 < d["alpha_mean"] < 1.6 and 1.2 < d["beta_mean"] < 5.0
    assert all(0.5 < d[f"c_{i}"] < 2.0 for i in range(5))
    assert seconds < 60
    # MAP is the mode in log parameters; its log-likelihood is the data's at that point
    data = model.data_
    ll = float(np.sum(data.counts * model._loglik({k: np.asarray(v) for k, v in d.items()}, data)))
    assert model.fit_info_["log_likelihood"] == pytest.approx(ll, rel=1e-8)


def test_degenerate_pooled_fit_is_refused():
    from clvbayes.errors import ModelError

    model = PooledBetaDiscreteWeibullModel("cohort")
    model._set_groups(["a", "b"])
    point = {k: 1.0 for k in model.param_names} | {"alpha_0": 0.0004, "c_1": 240.0}
    model.posterior_ = posterior_from_arrays({k: np.full((1, 1), v) for k, v in point.items()})
    with pytest.raises(ModelError, match=r"degenerate fit: alpha = 0.0004 for cohort 'a'; "
                                         r"c = 240 for cohort 'b'"):  # fmt: skip
        model._refuse_degenerate("map")


def test_pooled_bdw_hyperpriors_keep_c_in_practice():
    c_mean = PooledBetaDiscreteWeibullModel.default_priors["c_mean"]
    assert c_mean.to_dict() == {"dist": "LogNormal", "mu": 0, "sigma": 0.6}
    x = np.exp(np.linspace(np.log(0.01), np.log(100), 20001))
    dens = np.exp(c_mean.logpdf(x))
    inside = np.trapezoid(dens * ((x > 0.2) & (x < 5)), x)
    assert inside > 0.99
    assert "c_mean" not in PooledShiftedBetaGeometricModel.default_priors
