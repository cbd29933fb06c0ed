"""Stacking and pseudo-BMA weights (clvbayes.predict.averaging) against ArviZ, and the optimiser."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clvbayes.predict.averaging import (
    METHODS,
    averaged_model,
    pointwise_elpd,
    stacking_check,
    stacking_weights,
    weights_from_elpd,
)


@pytest.fixture(scope="module")
def pair():
    """BG/NBD and MBG/NBD (Laplace, 300 draws) on the first 500 CDNOW customers: ArviZ gets
    one log-likelihood column per customer (counts 1), clvbayes one per distinct history."""
    from clvbayes.datasets import load_cdnow_summary
    from clvbayes.models import BetaGeoModel, ModifiedBetaGeoModel

    rfm = load_cdnow_summary().iloc[:500]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "bgnbd": BetaGeoModel().fit(rfm, method="laplace", draws=300, seed=1),
            "mbgnbd": ModifiedBetaGeoModel().fit(rfm, method="laplace", draws=300, seed=1),
        }
    return rfm, models


def _arviz_weights(models, method):
    """ArviZ's weights on the per-customer (expanded) problem: 0.x ``az.compare``, 1.x
    ``arviz_stats.compare`` (unrounded)."""
    import arviz as az

    trees = {k: m.to_arviz(log_likelihood=True) for k, m in models.items()}
    az_method = {"stacking": "stacking", "pseudo_bma": "pseudo-BMA"}[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if az.__version__.startswith("0."):
            table = az.compare(trees, method=az_method)
        else:
            from arviz_stats import compare

            table = compare(trees, method=az_method, round_to="none")
    return table["weight"].reindex(list(models)).to_numpy(float)


def _arviz_pointwise(models) -> np.ndarray:
    import arviz as az

    cols = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in models.values():
            tree = m.to_arviz(log_likelihood=True)
            if az.__version__.startswith("0."):
                cols.append(np.asarray(az.loo(tree, pointwise=True).loo_i, dtype=float))
            else:
                from arviz_stats import loo

                cols.append(np.asarray(loo(tree, pointwise=True).elpd_i, dtype=float))
    return np.column_stack(cols)


def test_stacking_weights_agree_with_arviz(pair):
    """Distinct histories with counts (clvbayes) vs every customer on its own (ArviZ)."""
    rfm, models = pair
    w = stacking_weights(models, rfm)
    assert w.attrs["n_histories"] < w.attrs["n_customers"] == 500  # counts > 1 do occur
    expected = _arviz_weights(models, "stacking")
    assert 0.05 < expected.min()  # an interior optimum: a real test of the optimiser
    # the PSIS terms differ only by the relative efficiency (ArviZ: 1 for one chain)
    np.testing.assert_allclose(w.to_numpy(), expected, atol=2e-3)
    assert w.sum() == pytest.approx(1.0) and list(w.index) == list(models)
    assert w.attrs["kkt_gap"] < 1e-6


def test_optimiser_on_arviz_pointwise_values_and_counts(pair):
    """On ArviZ's own pointwise elpd the weights are ArviZ's, to ArviZ's optimiser tolerance
    (its SLSQP stops at a KKT gap of about 2e-6 here, where the log score is flat: the
    weights differ by 2e-4, the log scores by 1e-7 nats, ours the higher); grouping equal
    rows with counts gives the weights of the expanded rows."""
    _, models = pair
    elpd = _arviz_pointwise(models)
    w = weights_from_elpd(elpd)
    theirs = _arviz_weights(models, "stacking")
    np.testing.assert_allclose(w, theirs, atol=1e-3)

    def score(v):
        return np.sum(np.log(np.exp(elpd) @ v))

    assert score(w) >= score(theirs) - 1e-9
    assert stacking_check(elpd, np.ones(len(elpd)), w) < 1e-8
    rows, counts = np.unique(elpd, axis=0, return_counts=True)
    assert rows.shape[0] < elpd.shape[0]
    np.testing.assert_allclose(weights_from_elpd(rows, counts), w, atol=1e-8)


def test_pseudo_bma_agrees_with_arviz(pair):
    rfm, models = pair
    w = stacking_weights(models, rfm, method="pseudo_bma")
    np.testing.assert_allclose(w.to_numpy(), _arviz_weights(models, "pseudo_bma"), atol=2e-3)
    elpd, counts, keys = pointwise_elpd(models, rfm)
    total = counts @ elpd
    assert keys == list(models)
    assert w.iloc[0] == pytest.approx(1 / (1 + np.exp(total[1] - total[0])), rel=1e-10)


def test_pseudo_bma_plus_is_seeded_and_between_the_extremes(pair):
    rfm, models = pair
    a = stacking_weights(models, rfm, method="pseudo_bma_plus", seed=1, n_bootstrap=200)
    b = stacking_weights(models, rfm, method="pseudo_bma_plus", seed=1, n_bootstrap=200)
    pd.testing.assert_series_equal(a, b)
    assert a.sum() == pytest.approx(1.0) and (a > 0).all()
    # the bootstrap spreads the weights: never more extreme than plain pseudo-BMA
    plain = stacking_weights(models, rfm, method="pseudo_bma")
    assert a.max() <= plain.max() + 1e-9


def test_averaged_model_carries_the_weights(pair):
    rfm, models = pair
    mix = averaged_model(models, rfm)
    w = stacking_weights(models, rfm)
    pd.testing.assert_series_equal(mix.weights, w, check_names=False)
    assert mix.weights.attrs["method"] == "stacking"
    assert mix.n_per_component.sum() == 1000  # MIN_DRAWS: the 300 draws repeat evenly
    assert mix.n_per_component.tolist() == np.round(w.to_numpy() * 1000).astype(int).tolist()


# ---------------------------------------------------------------- the optimiser alone
def test_complementary_models_share_and_useless_ones_get_nothing():
    a = np.array([-0.1, -0.1, -3.0, -3.0])
    b = a[::-1]
    np.testing.assert_allclose(weights_from_elpd(np.column_stack([a, b])), [0.5, 0.5], atol=1e-8)
    # a third model worse everywhere adds nothing
    elpd = np.column_stack([a, b, np.full(4, -5.0)])
    w = weights_from_elpd(elpd)
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0], atol=1e-7)
    assert stacking_check(elpd, np.ones(4), w) < 1e-6
    assert weights_from_elpd(a[:, None]).tolist() == [1.0]


def test_counts_weigh_rows_like_repeated_rows(rng):
    elpd = rng.normal(-2, 1, size=(40, 3))
    counts = rng.integers(1, 5, size=40)
    expanded = np.repeat(elpd, counts, axis=0)
    np.testing.assert_allclose(weights_from_elpd(elpd, counts), weights_from_elpd(expanded),
                               atol=1e-8)  # fmt: skip
    # rows with a NaN (a model that does not learn from the history) are left out
    with_nan = np.vstack([elpd, [np.nan, -1.0, -1.0]])
    np.testing.assert_allclose(
        weights_from_elpd(with_nan, np.append(counts, 3)), weights_from_elpd(elpd, counts)
    )


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match=f"method must be one of {', '.join(METHODS)}; got 'bma'"):
        weights_from_elpd(np.zeros((3, 2)), method="bma")
    with pytest.raises(ValueError, match=r"elpd must be \(n, K\) with n, K >= 1, got shape \(3,\)"):
        weights_from_elpd(np.zeros(3))
    with pytest.raises(ValueError, match="counts must be 3 non-negative numbers"):
        weights_from_elpd(np.zeros((3, 2)), counts=[1, 2])
    with pytest.raises(ValueError, match="averaged_model needs rfm"):
        averaged_model({"a": object()})
