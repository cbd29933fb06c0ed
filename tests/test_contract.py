"""Contract battery: the same checks over every registered model (one row of ``MODELS`` each).

A new model gets the battery by adding one :class:`Row`: its class, a factory of tiny data,
the prediction hooks it exposes (none for a model without them) and whether it is a
continuous-time purchase model (then also ``score_customers`` with Gamma-Gamma).  Every
check runs on MAP fits or fake posteriors (``model.posterior_ = posterior_from_arrays``), so
the battery takes seconds; the short NUTS fits are marked slow.

Membership of the registry is checked at run time
(:func:`clvbayes.models.protocols.purchase_model_candidates`): a purchase row whose model lacks
a protocol member is skipped with the reason shown by ``pytest -rs`` (and fails
``test_every_registered_purchase_model_has_a_row``).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

import clvbayes.models
from clvbayes.compat import posterior_from_arrays
from clvbayes.models import (
    BetaGeoBetaBinomModel,
    BetaGeoModel,
    GammaGammaModel,
    ModifiedBetaGeoModel,
    NotFittedError,
)
from clvbayes.models.bdw import BetaDiscreteWeibullModel
from clvbayes.models.pooled import PooledBetaDiscreteWeibullModel, PooledShiftedBetaGeometricModel
from clvbayes.models.priors import Prior
from clvbayes.models.protocols import (
    PURCHASE_METHODS,
    PurchaseModel,
    SpendModel,
    check_implements,
    missing_methods,
    purchase_model_candidates,
    purchase_models,
)
from clvbayes.models.sbg import ShiftedBetaGeometricModel
from clvbayes.predict import score_customers
from clvbayes.predict.retention import score_subscribers

N_TINY = 150  # customers in the tiny tables
GG_POINT = {"p": 6.2488, "q": 3.7446, "gamma": 15.4478}  # Fader & Hardie's CDNOW MLE


# ---------------------------------------------------------------- tiny data
def _tiny_continuous() -> pd.DataFrame:
    """A simulated weekly table (frequency, recency, T, monetary_value) of N_TINY customers."""
    rng = np.random.default_rng(14)
    T = rng.uniform(20.0, 39.0, N_TINY).round(2)
    frequency = rng.poisson(rng.gamma(0.5, 1.5, N_TINY)).astype(float)
    recency = np.where(frequency > 0, (T * rng.uniform(0.1, 1.0, N_TINY)).round(2), 0.0)
    monetary = np.where(frequency > 0, rng.gamma(6.0, 6.0, N_TINY).round(2), 0.0)
    rfm = pd.DataFrame(
        {"frequency": frequency, "recency": recency, "T": T, "monetary_value": monetary},
        index=pd.Index(np.arange(1, N_TINY + 1), name="customer_id"),
    )
    rfm.attrs["time_unit"] = "weeks"
    return _with_attributes(rfm, 14)


def _tiny_discrete() -> pd.DataFrame:
    """A discrete-time table (frequency, recency, periods) of N_TINY customers, 6 opportunities."""
    rng = np.random.default_rng(15)
    n = 6
    frequency = rng.binomial(n, rng.beta(1.2, 0.75, N_TINY) * (rng.random(N_TINY) < 0.7))
    recency = np.where(frequency > 0, np.maximum(frequency, rng.integers(1, n + 1, N_TINY)), 0)
    monetary = np.where(frequency > 0, rng.gamma(6.0, 6.0, N_TINY).round(2), 0.0)
    rfm = pd.DataFrame(
        {"frequency": frequency, "recency": recency, "periods": np.full(N_TINY, n),
         "monetary_value": monetary},
        index=pd.Index(np.arange(1, N_TINY + 1), name="customer_id"),
    )  # fmt: skip
    rfm.attrs["time_unit"] = "opportunities"
    return _with_attributes(rfm, 15)


def _tiny_subscriptions() -> pd.DataFrame:
    """N_TINY subscribers of two cohorts: renewals completed, churned 0/1, price per period."""
    rng = np.random.default_rng(16)
    theta = rng.beta(0.7, 2.0, N_TINY)
    tenure_cap = rng.integers(1, 12, N_TINY)  # periods observed since the start
    life = rng.geometric(theta) - 1  # renewals before cancelling
    rfm = pd.DataFrame(
        {"periods": np.minimum(life, tenure_cap), "churned": (life < tenure_cap).astype(int),
         "cohort": rng.choice(["2024", "2025"], N_TINY), "price": 20.0},
        index=pd.Index([f"s{i}" for i in range(N_TINY)], name="subscriber_id"),
    )  # fmt: skip
    rfm.attrs["period"] = "month"
    return _with_attributes(rfm, 16)


def _with_attributes(rfm: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Customer attributes for the covariate and pooling rows: a categorical ``channel``, a
    numeric ``score`` (four values) and a segment column ``region``."""
    rng = np.random.default_rng(seed + 100)
    rfm["channel"] = rng.choice(["web", "store", "referral"], len(rfm))
    rfm["score"] = rng.integers(0, 4, len(rfm)).astype(float)
    rfm["region"] = rng.choice(["north", "south"], len(rfm))
    return rfm


# ---------------------------------------------------------------- prediction hooks
def _purchase_predictions(model, rfm):
    return {
        "p_alive": model.p_alive(rfm),
        "expected_purchases": model.expected_purchases(10.0, rfm),
    }


def _discrete_predictions(model, rfm):
    return {"p_alive": model.p_alive(rfm), "expected_purchases": model.expected_purchases(5, rfm)}


def _spend_predictions(model, rfm):
    return {"expected_spend": model.expected_spend(rfm)}


@dataclass
class Row:
    """One model of the contract table."""

    cls: type
    data: Callable[[], pd.DataFrame]
    predict: Callable | None = None  # model, rfm -> {name: DataArray (chain, draw, customer_id)}
    purchase: bool = False  # a purchase model: also score_customers
    retention: bool = False  # a contractual model: also score_subscribers
    skip: str | None = None
    marks: list = field(default_factory=list)
    init: dict = field(default_factory=dict)  # covariates / pooled_by (models.segmented)

    @property
    def name(self) -> str:
        base = "ParetoNBDModel" if self.cls is object else self.cls.__name__
        extra = "+".join(f"{k}" for k in self.init)
        return f"{base}[{extra}]" if extra else base

    def make(self):
        return self.cls(**self.init)

    def fake(self, fitted, point_shape):
        """A model with ``fitted``'s coding and fake draws of shape ``point_shape``."""
        model = copy.copy(fitted) if self.init else self.cls()
        model.posterior_ = posterior_from_arrays(_fake_draws(_point(fitted), *point_shape))
        return model


COVARIATES = {"covariates": ["channel", "score"]}
POOLED = {"covariates": ["channel"], "pooled_by": "region"}


def _rows() -> list[Row]:
    rows = [
        Row(BetaGeoModel, _tiny_continuous, _purchase_predictions, purchase=True),
        Row(ModifiedBetaGeoModel, _tiny_continuous, _purchase_predictions, purchase=True),
        Row(GammaGammaModel, _tiny_continuous, _spend_predictions),
        Row(BetaGeoBetaBinomModel, _tiny_discrete, _discrete_predictions, purchase=True),
    ]
    rows += [
        Row(ShiftedBetaGeometricModel, _tiny_subscriptions, retention=True),
        Row(BetaDiscreteWeibullModel, _tiny_subscriptions, retention=True),
        Row(PooledShiftedBetaGeometricModel, _tiny_subscriptions),  # per group: group_model()
        Row(PooledBetaDiscreteWeibullModel, _tiny_subscriptions),
    ]
    # the same families with covariates and with partial pooling (clvbayes.models.segmented)
    rows += [
        Row(BetaGeoModel, _tiny_continuous, _purchase_predictions, purchase=True, init=COVARIATES),
        Row(BetaGeoModel, _tiny_continuous, _purchase_predictions, purchase=True, init=POOLED),
        Row(ModifiedBetaGeoModel, _tiny_continuous, _purchase_predictions, purchase=True,
            init=COVARIATES),
        Row(GammaGammaModel, _tiny_continuous, _spend_predictions, init=COVARIATES),
        Row(GammaGammaModel, _tiny_continuous, _spend_predictions, init=POOLED),
        Row(BetaGeoBetaBinomModel, _tiny_discrete, _discrete_predictions, purchase=True,
            init=COVARIATES),
        Row(ShiftedBetaGeometricModel, _tiny_subscriptions, retention=True, init=COVARIATES),
        Row(BetaDiscreteWeibullModel, _tiny_subscriptions, retention=True, init=POOLED),
    ]  # fmt: skip
    cls, reason = purchase_model_candidates()["pnbd"]
    for init in ({}, COVARIATES):
        rows.append(
            Row(cls or object, _tiny_continuous, _purchase_predictions, purchase=True, init=init,
                skip=None if reason is None else f"ParetoNBDModel does not meet the contract: {reason}")
        )  # fmt: skip
    return rows


MODELS = _rows()


def _params(predicate=lambda row: True):
    out = []
    for row in MODELS:
        if not predicate(row):
            continue
        marks = [pytest.mark.skip(reason=row.skip)] if row.skip else []
        out.append(pytest.param(row, id=row.name, marks=marks))
    return out


ALL = _params()
WITH_PREDICTIONS = _params(lambda r: r.predict is not None)
PURCHASE = _params(lambda r: r.purchase)
RETENTION = _params(lambda r: r.retention)


def _fit(row: Row, method: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-customer FitWarnings and the like: not tested here
        return row.make().fit(row.data(), method=method, seed=1, **kw)


def _point(model) -> dict[str, float]:
    return {k: float(v.ravel()[0]) for k, v in model.draws().items()}


def _fake_draws(point: dict[str, float], chains: int, draws: int) -> dict[str, np.ndarray]:
    """Distinct positive draws around ``point``, each of shape (chains, draws)."""
    n = chains * draws
    scale = np.linspace(0.8, 1.2, n).reshape(chains, draws) if n > 1 else np.ones((1, 1))
    return {k: v * scale for k, v in point.items()}


@pytest.fixture(scope="module")
def map_fits():
    """MAP fit of every runnable row, by class name (fitted once for the module)."""
    return {row.name: _fit(row, "map") for row in MODELS if row.skip is None}


# ---------------------------------------------------------------- fitting
@pytest.mark.parametrize("row", ALL)
def test_map_posterior_is_one_chain_one_draw(row, map_fits):
    model = map_fits[row.name]
    draws = model.draws()
    assert set(draws) == set(model.param_names)
    if "pooled_by" not in row.init:
        assert set(model.param_names) >= set(row.cls.param_names)
    for k, v in draws.items():
        assert v.shape == (1, 1), k
        assert np.isfinite(v).all() and (v > 0).all(), k
    assert model.n_draws_ == 1
    assert dict(model.posterior_.sizes) == {"chain": 1, "draw": 1}
    assert model.fit_info_["method"] == "map"


@pytest.mark.parametrize("row", ALL)
def test_laplace_posterior_is_one_chain_of_s_draws(row):
    model = _fit(row, "laplace", draws=30)
    for k, v in model.draws().items():
        assert v.shape == (1, 30), k
        assert np.isfinite(v).all() and (v > 0).all(), k
        assert np.unique(v).size > 1, f"{k}: Laplace draws should differ"
    assert dict(model.posterior_.sizes) == {"chain": 1, "draw": 30}


@pytest.mark.slow
@pytest.mark.parametrize("row", ALL)
def test_short_nuts_posterior_shape(row):
    t0 = time.perf_counter()
    model = _fit(row, "nuts", chains=1, draws=20, tune=20, progressbar=False)
    seconds = time.perf_counter() - t0
    print(f"\n{row.cls.__name__}: NUTS 1 x 20 (tune 20) on {N_TINY} customers in {seconds:.1f} s")
    for k, v in model.draws().items():
        assert v.shape == (1, 20), k
        assert np.isfinite(v).all(), k
    assert dict(model.posterior_.sizes) == {"chain": 1, "draw": 20}


# ---------------------------------------------------------------- predictions on fake posteriors
@pytest.mark.parametrize("shape", [(1, 1), (2, 5)], ids=["1x1", "2x5"])
@pytest.mark.parametrize("row", WITH_PREDICTIONS)
def test_predictions_on_fake_posteriors(row, shape, map_fits):
    fake = row.fake(map_fits[row.name], shape)
    rfm = row.data().iloc[:7]
    preds = row.predict(fake, rfm)
    assert preds
    for name, da in preds.items():
        assert da.dims == ("chain", "draw", "customer_id"), name
        assert da.shape == (*shape, 7), name
        assert np.isfinite(da.values).all(), name
        assert list(da["customer_id"].values) == list(rfm.index), name
        if shape != (1, 1):  # distinct draws give distinct predictions
            flat = da.values.reshape(-1, 7)
            assert np.ptp(flat, axis=0).max() > 0, name


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("row", ALL)
def test_save_load_round_trip(row, map_fits, tmp_path, monkeypatch):
    # CLVModel.load looks classes up in clvbayes.models: make sure this row's class is there
    monkeypatch.setattr(clvbayes.models, row.cls.__name__, row.cls, raising=False)
    model = map_fits[row.name]
    path = tmp_path / f"{row.cls.__name__}.nc"
    model.save(path)
    loaded = row.cls.load(path)
    assert type(loaded) is type(model)
    assert loaded.priors == model.priors
    assert loaded.time_unit_ == model.time_unit_
    for k, v in model.draws().items():
        np.testing.assert_array_equal(loaded.draws()[k], v)
    if row.predict is not None:
        rfm = row.data()
        a, b = row.predict(model, rfm), row.predict(loaded, rfm)
        for name in a:
            np.testing.assert_array_equal(a[name].values, b[name].values)
        # the training data travel with the file
        np.testing.assert_array_equal(
            row.predict(loaded, None)[next(iter(a))].values, a[next(iter(a))].values
        )


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("row", ALL)
def test_before_fit_says_call_fit(row):
    model = row.make()
    with pytest.raises(NotFittedError, match=rf"This {row.cls.__name__} is not fitted yet: call "):
        model.draws()
    if row.predict is not None:
        with pytest.raises(NotFittedError, match=r"call \.fit\(rfm\) first"):
            row.predict(model, row.data())


@pytest.mark.parametrize("row", ALL)
def test_unknown_prior_name_lists_valid_ones(row):
    valid = ", ".join(row.make().param_names)
    with pytest.raises(
        ValueError, match=rf"unknown prior name\(s\) \['nope'\]\. Valid names are: {valid}\."
    ):
        row.cls(priors={"nope": Prior("HalfNormal", sigma=1)}, **row.init)


# ---------------------------------------------------------------- score_customers
@pytest.mark.parametrize("row", PURCHASE)
def test_score_customers_with_gamma_gamma_on_2x5(row, map_fits):
    bg = row.fake(map_fits[row.name], (2, 5))
    gg = GammaGammaModel()
    gg.posterior_ = posterior_from_arrays(_fake_draws(GG_POINT, 2, 5))
    if row.init:  # with a spend model that has covariates too
        gg = copy.copy(map_fits[f"GammaGammaModel[{'+'.join(row.init)}]"])
        point = {k: float(v.ravel()[0]) for k, v in gg.draws().items()}
        gg.posterior_ = posterior_from_arrays(_fake_draws({**point, **GG_POINT}, 2, 5))
    rfm = row.data()
    res = score_customers(rfm, bg, gg, horizon=26.0, n_outcome_samples=200, seed=3)
    assert res.settings["time_unit"] == rfm.attrs["time_unit"]
    c = res.customers
    assert len(c) == N_TINY and list(c.index) == list(rfm.index)
    assert np.isfinite(c.to_numpy(dtype=float)).all()
    assert res.settings["n_draws"] == 10 and res.settings["parameter_uncertainty"]
    for q in ("p_alive", "purchases", "spend", "revenue", "clv"):
        assert c[f"{q}_ci_lower"].notna().all() and (c[f"{q}_ci_upper"] >= c[f"{q}_ci_lower"]).all()
    total = res.segments["all"].iloc[0]
    assert np.isfinite(res.segments["all"].to_numpy(dtype=float)).all()
    for q in ("purchases", "revenue", "clv"):
        ci = total[f"{q}_total_ci_upper"] - total[f"{q}_total_ci_lower"]
        pi = total[f"{q}_total_pi_upper"] - total[f"{q}_total_pi_lower"]
        assert ci > 0 and pi >= ci, q


@pytest.mark.parametrize("shape", [(1, 1), (2, 5)], ids=["1x1", "2x5"])
@pytest.mark.parametrize("row", RETENTION)
def test_score_subscribers_on_fake_posteriors(row, shape, map_fits):
    model = row.fake(map_fits[row.name], shape)
    table = row.data()
    res = score_subscribers(table, model, horizon=6, discount_rate=0.01, by="cohort", seed=2)
    active = table[table["churned"] == 0]
    s = res.subscribers
    assert list(s.index) == list(active.index)
    assert res.settings["n_cancelled_excluded"] == int(table["churned"].sum())
    for q in ("p_renew", "churn_risk", "renewals", "disc_renewals", "value", "derl"):
        assert np.isfinite(s[f"{q}_mean"]).all(), q
        if shape == (1, 1):  # a point: no credible interval
            assert s[f"{q}_ci_lower"].isna().all(), q
        else:
            assert (s[f"{q}_ci_upper"] > s[f"{q}_ci_lower"]).all(), q
    assert (s["renewals_pi_lower"] <= s["renewals_pi_upper"]).all()
    for g in ("all", "cohort"):
        c = res.cohorts[g]
        assert np.isfinite(c[["active_mean", "active_pi_lower", "revenue_mean"]].to_numpy()).all()
        assert (c["active_pi_lower"] <= c["active_mean"] + 1e-9).all()
    total = res.cohorts["all"]["active_mean"].to_numpy()
    assert np.all(np.diff(total) <= 1e-9)  # fewer still active the further out


# ---------------------------------------------------------------- the protocols themselves
def test_every_registered_purchase_model_has_a_row():
    rows = {row.cls for row in MODELS if row.purchase and row.skip is None}
    assert set(purchase_models(grid=None).values()) <= rows
    assert set(purchase_models(grid="discrete")) == {"bgbb"}


def test_registry_lists_the_continuous_purchase_models():
    models = purchase_models()
    assert models["bgnbd"] is BetaGeoModel and models["mbgnbd"] is ModifiedBetaGeoModel
    candidates = purchase_model_candidates()
    assert set(candidates) == {"bgnbd", "mbgnbd", "pnbd"}
    _cls, reason = candidates["pnbd"]
    assert ("pnbd" in models) == (reason is None)
    if reason is not None:  # the reason names the methods Pareto/NBD still lacks
        assert reason.startswith("ParetoNBDModel lacks the PurchaseModel method(s) ")


def test_protocol_members_are_the_methods_predict_calls():
    assert PURCHASE_METHODS == (
        "history_columns", "active_columns", "draws", "_validate", "_p_alive_arrays",
        "_expected_active_arrays",
        "_active_state", "_advance",
    )  # fmt: skip
    for cls in purchase_models().values():
        assert missing_methods(cls, PurchaseModel) == []
    assert set(purchase_models()) == {"bgnbd", "mbgnbd", "pnbd"}
    assert missing_methods(GammaGammaModel, SpendModel) == []
    assert missing_methods(BetaGeoBetaBinomModel, PurchaseModel) == []


def test_score_customers_refuses_a_model_without_the_protocol(map_fits):
    rfm = _tiny_continuous()
    gg = map_fits["GammaGammaModel"]
    with pytest.raises(
        TypeError,
        match=r"purchase_model: GammaGammaModel does not implement the PurchaseModel interface "
        r"that score_customers needs \(missing active_columns, _validate, _p_alive_arrays, "
        r"_expected_active_arrays, _active_state, _advance\): pass a fitted purchase model "
        r"\(BetaGeoModel, ModifiedBetaGeoModel, ParetoNBDModel, BetaGeoBetaBinomModel\)",
    ):
        score_customers(rfm, gg, horizon=10.0)
    bg = map_fits["BetaGeoModel"]
    with pytest.raises(
        TypeError,
        match=r"spend_model: BetaGeoModel does not implement the SpendModel interface .*missing "
        r"key_columns, _expected_spend_arrays, .*pass a fitted spend model such as GammaGammaModel\.",
    ):
        score_customers(rfm, bg, bg, horizon=10.0)


def test_check_implements_accepts_conforming_models(map_fits):
    check_implements(map_fits["BetaGeoModel"], PurchaseModel, "purchase_model")
    check_implements(map_fits["GammaGammaModel"], SpendModel, "spend_model")
    assert isinstance(map_fits["ModifiedBetaGeoModel"], PurchaseModel)  # runtime_checkable


def test_plots_use_each_purchase_models_own_formulas(map_fits):
    """Each registered purchase model's plots evaluate its own math module (MBG/NBD has BG/NBD's
    parameter names but other formulas), and a model that is not one is refused."""
    from clvbayes import plotting
    from clvbayes.plotting._common import purchase_math

    for cls in purchase_models().values():
        if cls.__name__ in map_fits:
            assert purchase_math(map_fits[cls.__name__]) is cls._math
    plotting.plot_frequency_ppc(map_fits["ModifiedBetaGeoModel"], n_sims=5)
    with pytest.raises(
        TypeError,
        match=r"needs a fitted continuous-time purchase model: one of BetaGeoModel \(bgnbd\), "
        r"ModifiedBetaGeoModel \(mbgnbd\), ParetoNBDModel \(pnbd\); got GammaGammaModel\.",
    ):
        plotting.plot_frequency_ppc(map_fits["GammaGammaModel"])
