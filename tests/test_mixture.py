"""MixturePurchaseModel: model averaging by draws, through score_customers unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clvbayes.models import (
    BetaGeoModel,
    GammaGammaModel,
    MixturePurchaseModel,
    ModifiedBetaGeoModel,
    ParetoNBDModel,
)
from clvbayes.models.mixture import allocate_draws
from clvbayes.predict import score_customers


@pytest.fixture(scope="module")
def fits(cdnow):
    """Laplace fits (200 draws) of BG/NBD, Pareto/NBD and Gamma-Gamma on the CDNOW sample."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "bgnbd": BetaGeoModel().fit(cdnow, method="laplace", draws=200, seed=1),
            "pnbd": ParetoNBDModel().fit(cdnow, method="laplace", draws=200, seed=2),
            "gg": GammaGammaModel().fit(cdnow, method="laplace", draws=200, seed=3),
        }


def _score(rfm, model, gg, **kw):
    return score_customers(rfm, model, gg, horizon=39, n_outcome_samples=400, seed=11, **kw)


@pytest.mark.parametrize("key", ["bgnbd", "pnbd"])  # compiled futures / the generic path
def test_weight_one_reproduces_that_model_exactly(cdnow, fits, key):
    mix = MixturePurchaseModel({"bgnbd": fits["bgnbd"], "pnbd": fits["pnbd"]},
                               {"bgnbd": float(key == "bgnbd"), "pnbd": float(key == "pnbd")})  # fmt: skip
    assert mix.n_per_component[key] == 200
    np.testing.assert_array_equal(mix.draws()[f"{key}:r"].ravel(), fits[key].draws()["r"].ravel())
    rfm = cdnow.iloc[:600]
    alone = _score(rfm, fits[key], fits["gg"], by="frequency")
    mixed = _score(rfm, mix, fits["gg"], by="frequency")
    pd.testing.assert_frame_equal(alone.customers, mixed.customers)
    for g in alone.segments:
        pd.testing.assert_frame_equal(alone.segments[g], mixed.segments[g])


def test_mixture_intervals_lie_between_and_span_the_components(cdnow, fits):
    a, b = fits["bgnbd"], fits["pnbd"]
    mix = MixturePurchaseModel({"bgnbd": a, "pnbd": b}, [0.5, 0.5])
    assert mix.n_per_component.tolist() == [500, 500]  # MIN_DRAWS: each repeats its 200
    tot = {k: _score(cdnow, m, fits["gg"], outcomes=True).segments["all"].iloc[0]
           for k, m in (("a", a), ("b", b), ("mix", mix))}  # fmt: skip
    for q in ("purchases", "clv"):
        means = sorted([tot["a"][f"{q}_total_mean"], tot["b"][f"{q}_total_mean"]])
        # the mixture's mean is the weighted mean of the two (draws split 500/500)
        assert tot["mix"][f"{q}_total_mean"] == pytest.approx(np.mean(means), rel=0.01)
        for kind in ("ci", "pi"):
            lo = [tot[k][f"{q}_total_{kind}_lower"] for k in ("a", "b")]
            hi = [tot[k][f"{q}_total_{kind}_upper"] for k in ("a", "b")]
            m_lo, m_hi = (
                tot["mix"][f"{q}_total_{kind}_lower"],
                tot["mix"][f"{q}_total_{kind}_upper"],
            )
            slack = 0.01 * np.mean(hi)
            assert min(lo) - slack <= m_lo <= max(lo) + slack, (q, kind)
            assert min(hi) - slack <= m_hi <= max(hi) + slack, (q, kind)
            # the mixture is at least as wide as the narrower component: disagreement adds
            assert m_hi - m_lo >= min(h - low for h, low in zip(hi, lo, strict=True)) - slack


def test_per_customer_predictions_are_the_weighted_means(cdnow, fits):
    rfm = cdnow.iloc[:300]
    mix = MixturePurchaseModel({"bgnbd": fits["bgnbd"], "pnbd": fits["pnbd"]}, [0.25, 0.75],
                               n_draws=200)  # fmt: skip
    assert mix.n_per_component.tolist() == [50, 150]
    got = _score(rfm, mix, None, outcomes=False).customers
    want = sum(w * _score(rfm, fits[k], None, outcomes=False, n_draws=None).customers
               for k, w in (("bgnbd", 0.25), ("pnbd", 0.75)))  # fmt: skip
    # each component's draws are evenly thinned, so the means agree to Monte Carlo error
    for c in ("p_alive_mean", "purchases_mean"):
        np.testing.assert_allclose(got[c], want[c], rtol=0.03, atol=1e-3)


def test_allocation_is_deterministic_in_blocks(fits):
    assert allocate_draws([0.5, 0.3, 0.2], 7).tolist() == [4, 2, 1]
    assert allocate_draws([1 / 3] * 3, 10).tolist() == [4, 3, 3]
    assert allocate_draws([0.0, 1.0], 5).tolist() == [0, 5]
    mix = MixturePurchaseModel([fits["bgnbd"], fits["pnbd"]], [0.3, 0.7], n_draws=1000)
    comp = mix.draws()["component"].ravel()
    assert comp.shape == (1000,) and mix.keys == ["0", "1"]
    assert comp.tolist() == [0.0] * 300 + [1.0] * 700
    # any evenly thinned subset keeps the weights (score_customers' n_draws)
    for n in (10, 37, 100):
        idx = np.linspace(0, 999, n).round().astype(int)
        assert abs(np.sum(comp[idx] == 0) - 0.3 * n) <= 1
    # MAP fits (one draw each) still mix in proportion
    point = MixturePurchaseModel([_point(fits["bgnbd"]), _point(fits["pnbd"])], [0.3, 0.7])
    assert point.n_per_component.tolist() == [300, 700]
    # a component with fewer draws than its share repeats its own draws evenly
    r = mix.draws()["1:r"].ravel()[comp == 1]
    assert set(r) <= set(fits["pnbd"].draws()["r"].ravel())


def _point(model):
    """A copy of ``model`` with its first draw only (as a MAP fit)."""
    import copy

    out = copy.copy(model)
    out._draws = {k: v.reshape(-1)[:1].reshape(1, 1) for k, v in model.draws().items()}
    out._posterior = None
    return out


def test_models_on_different_time_grids_are_refused(fits):
    from clvbayes.datasets import load_donations_summary
    from clvbayes.models import BetaGeoBetaBinomModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bb = BetaGeoBetaBinomModel().fit(load_donations_summary(), method="map")
    with pytest.raises(ValueError) as err:
        MixturePurchaseModel({"bgnbd": fits["bgnbd"], "bgbb": bb}, [0.5, 0.5])
    assert str(err.value) == (
        "MixturePurchaseModel: the models are not on one time grid (bgnbd (BetaGeoModel: "
        "continuous time), bgbb (BetaGeoBetaBinomModel: discrete opportunities)). A mixture "
        "needs one customer table for all of them: mix continuous-time models (bgnbd, mbgnbd, "
        "pnbd) or discrete-time ones (bgbb), not both."
    )


def test_bad_weights_and_models_say_what_is_wrong(fits):
    models = {"bgnbd": fits["bgnbd"], "pnbd": fits["pnbd"]}
    with pytest.raises(ValueError, match=r"weights needs one value per model \(2: \['bgnbd', "):
        MixturePurchaseModel(models, [1.0])
    with pytest.raises(ValueError, match="weights must be non-negative and finite"):
        MixturePurchaseModel(models, [1.0, -0.5])
    with pytest.raises(ValueError, match=r"weights name model\(s\) \['mbgnbd'\]"):
        MixturePurchaseModel(models, {"mbgnbd": 1.0})
    with pytest.raises(TypeError, match=r"models\['gg'\]: GammaGammaModel does not implement"):
        MixturePurchaseModel({"bgnbd": fits["bgnbd"], "gg": fits["gg"]}, [0.5, 0.5])


# ---------------------------------------------------------------- statistical
@pytest.mark.slow
@pytest.mark.parametrize("family", ["bgnbd", "pnbd"])
def test_the_family_that_simulated_the_data_gets_most_weight(family):
    """2,000 customers simulated from one family, observed 10-78 weeks: its stacking weight
    (BG/NBD, MBG/NBD, Pareto/NBD fitted by Laplace) is the largest and above 0.5."""
    from clvbayes.math import bgnbd, pnbd
    from clvbayes.predict.averaging import stacking_weights

    rng = np.random.default_rng(1)
    T = np.round(rng.uniform(10, 78, 2000))
    if family == "pnbd":
        sim = pnbd.simulate(rng, 0.6, 5.0, 0.8, 20.0, T)
    else:
        sim = bgnbd.simulate(rng, 0.6, 5.0, 1.2, 2.0, T)
    rfm = pd.DataFrame({k: sim[k] for k in ("frequency", "recency", "T")})
    rfm["recency"] = rfm["recency"].round(1)
    rfm.attrs["time_unit"] = "weeks"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {k: cls().fit(rfm, method="laplace", draws=300, seed=1) for k, cls in
                  (("bgnbd", BetaGeoModel), ("mbgnbd", ModifiedBetaGeoModel),
                   ("pnbd", ParetoNBDModel))}  # fmt: skip
    w = stacking_weights(models, rfm)
    assert w.idxmax() == family and w[family] > 0.5, w.to_dict()


def test_compiled_and_generic_futures_of_a_mixture_agree(cdnow, fits, monkeypatch):
    """BG/NBD + MBG/NBD both have compiled futures: the mixture dispatches them row by row
    (each component its own stream); the generic protocol path gives the same law."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mbg = ModifiedBetaGeoModel().fit(cdnow, method="laplace", draws=200, seed=4)
    mix = MixturePurchaseModel({"bgnbd": fits["bgnbd"], "mbgnbd": mbg}, [0.5, 0.5])
    assert mix._fused_futures is not None
    fused = _score(cdnow, mix, fits["gg"]).segments["all"].iloc[0]
    monkeypatch.setattr(MixturePurchaseModel, "_fused_futures", property(lambda self: None))
    generic = _score(cdnow, mix, fits["gg"]).segments["all"].iloc[0]
    assert fused["purchases_total_mean"] == generic["purchases_total_mean"]  # expectations
    for c in ("purchases_total_pi_lower", "purchases_total_pi_upper", "clv_total_pi_upper"):
        assert fused[c] == pytest.approx(generic[c], rel=0.03), c
