"""Benchmark: holdout accuracy of clvbayes models vs the rules of thumb marketing teams use.

Every model is fitted on a 39-week calibration period and scored on what the same customers
did in the following 39 weeks (the holdout), as in Fader, Hardie & Lee (2005, Marketing
Science 24(2), section 4):

- ``cdnow_sample``: the CDNOW 1/10 sample, 2,357 customers;
- ``cdnow_master``: the whole CDNOW cohort, 23,570 customers;
- ``simulated``: customers simulated from BG/NBD + Gamma-Gamma with known parameters (the
  CDNOW estimates), with the same calendar (first purchases in the first 12 weeks of 1997,
  calibration end 1997-09-30, observation end 1998-06-30), run through the same
  transaction-log -> split code path as the real data.  Its table adds a row for the
  predictions at the *true* parameters (the floor no fitted model can beat on average) and
  a parameter-recovery table.

Models (the registry :data:`MODELS`; a new entry joins every table and plot):

- every purchase model of :mod:`clvbayes.models` (found automatically: a ``CLVModel`` with
  the prediction interface of :func:`clvbayes.predict.score_customers`), paired with the
  spend model (Gamma-Gamma), fitted with NUTS and with MAP (``--methods``: also Laplace);
- the model average: the stacking mixture of every purchase family's fit
  (:func:`clvbayes.predict.averaging.averaged_model`), for each method with posterior draws;
- baselines, see :data:`BASELINES` and ``benchmarks/README.md`` for the formulas:
  (a) historical value, (b) historical value with a retention rate, (c) RFM score ranking
  (rank metrics only), (d) last-period repeats.

Metrics per model: per-customer MAE and RMSE of holdout purchases and holdout spend, the
error of the totals, rank quality of the predicted value against holdout spend (Spearman,
share of holdout spend captured by the top 10% / 20% of customers, normalised Gini),
coverage and mean width of the 90% predictive intervals (per customer, and whether the
interval of the total contains the actual total), ELPD-LOO and WAIC of the NUTS fits.

Usage::

    python benchmarks/compare_models.py                         # CDNOW sample, 4 x 1000 draws
    python benchmarks/compare_models.py --dataset all
    python benchmarks/compare_models.py --smoke --dataset simulated --out /tmp/x
    python benchmarks/compare_models.py --methods laplace --out /tmp/x   # seconds per model

Writes ``compare_models_<dataset>.md`` / ``.csv`` and ``compare_models_<dataset>_tracking.png``
(plus ``compare_models_simulated_params.csv``) to ``--out`` (default ``benchmarks/results``;
a temporary folder for ``--smoke``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import (
    ROOT,
    info_block,
    load_average,
    machine_info,
    markdown_table,
    resolve_out,
    write_csv,
)

sys.path.insert(0, str(ROOT))

from clvbayes.data import calibration_holdout_split
from clvbayes.datasets import (
    CALIBRATION_END,
    OBSERVATION_END,
    load_cdnow_master_transactions,
    load_cdnow_transactions,
)

DATASETS = ("cdnow_sample", "cdnow_master", "simulated")
PROB = 0.9
QUARTER_WEEKS = 13.0
"""Period length (weeks) of the retention and last-period baselines: one quarter."""

#: True parameters of the simulated data set: the BG/NBD maximum-likelihood estimates on the
#: CDNOW sample (FHL 2005, section 4) and the Gamma-Gamma estimates of Fader & Hardie (2013,
#: "The Gamma-Gamma model of monetary value", CDNOW sample).
TRUE_PARAMS = {
    "r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426,
    "p": 6.25, "q": 3.74, "gamma": 15.44,
}  # fmt: skip


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """A calibration/holdout split and the transaction log it came from.

    ``rfm`` is the table of :func:`clvbayes.data.calibration_holdout_split` (weeks);
    ``horizon`` the holdout length in weeks; ``truth`` the true parameters (simulated only).
    """

    name: str
    description: str
    transactions: pd.DataFrame
    rfm: pd.DataFrame
    truth: dict[str, float] | None = None
    _occasions: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def horizon(self) -> float:
        return float(self.rfm.attrs["holdout_duration"])

    @property
    def holdout_purchases(self) -> np.ndarray:
        return self.rfm["frequency_holdout"].to_numpy(dtype=float)

    @property
    def holdout_spend(self) -> np.ndarray:
        return self.rfm["total_value_holdout"].to_numpy(dtype=float)

    def occasions(self) -> pd.DataFrame:
        """Purchase occasions of the cohort (same-day transactions merged, as in the split).

        Columns ``customer_id``, ``day``, ``amount`` and ``repeat`` (False for each
        customer's first purchase).
        """
        if self._occasions is None:
            tx = self.transactions
            occ = (
                tx.assign(day=pd.to_datetime(tx["date"]).dt.normalize())
                .groupby(["customer_id", "day"], as_index=False, sort=True)["amount"]
                .sum()
            )
            occ = occ[occ["customer_id"].isin(self.rfm.index)]
            occ["repeat"] = occ.groupby("customer_id").cumcount().to_numpy() > 0
            self._occasions = occ
        return self._occasions


def _split(tx: pd.DataFrame) -> pd.DataFrame:
    return calibration_holdout_split(
        tx, CALIBRATION_END, OBSERVATION_END, monetary_value_col="amount", time_unit="weeks"
    )


def _subsample(tx: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None:
        return tx
    ids = np.sort(tx["customer_id"].unique())
    if n >= ids.size:
        return tx
    keep = np.random.default_rng(seed).choice(ids, size=n, replace=False)
    return tx[tx["customer_id"].isin(keep)].reset_index(drop=True)


def load_dataset(name: str, n_customers: int | None = None, seed: int = 0) -> Dataset:
    """Load one of :data:`DATASETS`; ``n_customers`` subsamples (or sizes the simulation)."""
    if name == "cdnow_sample":
        tx = _subsample(load_cdnow_transactions(), n_customers, seed)
        desc = "CDNOW 1/10 sample (Fader, Hardie & Lee 2005)"
    elif name == "cdnow_master":
        tx = _subsample(load_cdnow_master_transactions(), n_customers, seed)
        desc = "CDNOW master: the whole 1997-Q1 cohort"
    elif name == "simulated":
        tx = simulate_transactions(n_customers or 5000, seed)
        return Dataset(
            name, "simulated from BG/NBD + Gamma-Gamma at known parameters", tx, _split(tx),
            truth=dict(TRUE_PARAMS),
        )  # fmt: skip
    else:
        raise ValueError(f"Unknown dataset {name!r}; choose from {DATASETS} or 'all'.")
    if n_customers is not None:
        desc += f", random subsample of {tx['customer_id'].nunique():,} customers"
    rfm = _split(tx)
    # Gamma-Gamma needs a positive mean repeat spend (CDNOW master has one customer whose
    # repeat purchases are all worth 0): such customers are left out of every model, and said so
    zero = ((rfm["frequency"] > 0) & (rfm["monetary_value"] <= 0)).to_numpy()
    if zero.any():
        attrs = dict(rfm.attrs)
        rfm = rfm[~zero].copy()
        rfm.attrs = attrs
        desc += (
            f"; {int(zero.sum())} customer(s) whose repeat purchases are all worth 0 left out "
            "(the spend model needs positive spend)"
        )
    return Dataset(name, desc, tx, rfm)


def simulate_transactions(n_customers: int, seed: int) -> pd.DataFrame:
    """A transaction log simulated from BG/NBD + Gamma-Gamma at :data:`TRUE_PARAMS`.

    Customers make their first purchase on a day drawn uniformly from the first 12 weeks of
    1997 (as the CDNOW cohort) and are followed to 1998-06-30.  Repeat purchases follow the
    BG/NBD process (:func:`clvbayes.math.bgnbd.simulate_purchase_times`, latent rates drawn
    from the population), every transaction value (first purchase included) is
    ``Gamma(p, nu_i)`` with ``nu_i ~ Gamma(q, gamma)``.  Purchase times are cut to calendar
    days, like real data (two purchases of a customer on one day become one occasion in the
    RFM summary: rare at these rates).
    """
    from clvbayes.math import bgnbd, gamma_gamma

    rng = np.random.default_rng(seed)
    t = TRUE_PARAMS
    start = pd.Timestamp("1997-01-01")
    first_day = rng.integers(0, 84, size=n_customers)
    window = (OBSERVATION_END - start).days - first_day + 1 - 1e-9  # days, through end of last day
    zeros = np.zeros(n_customers)
    alive, lam, p = bgnbd.sample_latent(
        rng, t["r"], t["alpha"], t["a"], t["b"], zeros, zeros, zeros
    )
    counts, times = bgnbd.simulate_purchase_times(rng, alive, lam, p, window / 7.0)
    owner = np.repeat(np.arange(n_customers), counts)
    nu = rng.standard_gamma(t["q"], size=n_customers) / t["gamma"]
    values = gamma_gamma.simulate_transaction_values(rng, t["p"], nu, counts + 1)
    # values: customer by customer, first purchase then repeats
    value_owner = np.repeat(np.arange(n_customers), counts + 1)
    is_first = np.r_[True, value_owner[1:] != value_owner[:-1]]
    days = np.concatenate([first_day, first_day[owner] + np.floor(times * 7.0).astype(np.int64)])
    who = np.concatenate([np.arange(n_customers), owner])
    amount = np.concatenate([values[is_first], values[~is_first]])
    tx = pd.DataFrame(
        {
            "customer_id": pd.Index([f"S{i:06d}" for i in range(n_customers)])[who],
            "date": start + pd.to_timedelta(days, unit="D"),
            "amount": np.round(amount, 2).clip(0.01),
        }
    )
    return tx.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# predictions and the model registry
# ------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Fit and scoring settings shared by every model of a run."""

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    seed: int = 1
    score_draws: int = 1000
    tracking_sims: int = 100
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """What a model says about the holdout.

    ``purchases`` / ``spend``: expected holdout purchases / spend per customer (None: the
    model does not predict it); ``score``: ranking score, higher = more valuable (default
    ``spend``); ``customers``: the :func:`~clvbayes.predict.score_customers` table (interval
    metrics); ``tracking``: the :func:`~clvbayes.plotting.checks.tracking_data` table, or
    ``holdout_curve(s)``: expected cumulative repeat purchases of the cohort ``s`` weeks into
    the holdout.
    """

    purchases: np.ndarray | None = None
    spend: np.ndarray | None = None
    score: np.ndarray | None = None
    customers: pd.DataFrame | None = None
    totals: dict[str, float] = field(default_factory=dict)
    elpd: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)
    params: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    tracking: pd.DataFrame | None = None
    holdout_curve: Callable[[np.ndarray], np.ndarray] | None = None
    fit_seconds: float = float("nan")


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: a name, a kind and ``run(dataset, settings) -> Prediction``."""

    name: str
    kind: str  # "bayesian", "baseline" or "truth"
    run: Callable[[Dataset, Settings], Prediction]
    description: str
    applies: Callable[[Dataset], bool] = lambda ds: True


@contextlib.contextmanager
def _quiet():
    """Silence the expected warnings of fitting (excluded one-time buyers, short smoke chains)."""
    from clvbayes.models import ConvergenceWarning, ExcludedCustomersWarning

    with warnings.catch_warnings():
        for category in (ExcludedCustomersWarning, ConvergenceWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        yield


def _param_intervals(model, z: float = 1.6449) -> dict[str, tuple[float, float, float]]:
    """(estimate, lower, upper) per parameter: posterior mean and 90% interval (NUTS), or the
    mode with a Laplace interval on the log scale (MAP)."""
    table = model.summary(prob=PROB)
    out = {}
    for name, row in table.iterrows():
        lo, hi = row[f"lower_{PROB:g}"], row[f"upper_{PROB:g}"]
        if lo == hi and np.isfinite(row["sd"]):  # one draw: MAP
            log_sd = row["sd"] / row["mean"]
            lo, hi = row["mean"] * np.exp(-z * log_sd), row["mean"] * np.exp(z * log_sd)
        out[str(name)] = (float(row["mean"]), float(lo), float(hi))
    return out


def predict_bayesian(
    ds: Dataset, st: Settings, purchase_model, spend_model, fit_seconds: float, elpd: bool
) -> Prediction:
    """Score the holdout with fitted clvbayes models (expectations and 90% intervals)."""
    from clvbayes.plotting.checks import tracking_data
    from clvbayes.predict import score_customers

    scores = score_customers(
        ds.rfm, purchase_model, spend_model, horizon=ds.horizon, prob=PROB, seed=st.seed,
        n_draws=st.score_draws,
        observed={"purchases": ds.holdout_purchases, "revenue": ds.holdout_spend},
    )  # fmt: skip
    c, seg = scores.customers, scores.segments["all"].iloc[0]
    pred = Prediction(
        purchases=c["purchases_mean"].to_numpy(),
        spend=c["revenue_mean"].to_numpy(),
        customers=c,
        fit_seconds=fit_seconds,
        totals={
            "purchases_lower": seg["purchases_total_pi_lower"],
            "purchases_upper": seg["purchases_total_pi_upper"],
            "spend_lower": seg["revenue_total_pi_lower"],
            "spend_upper": seg["revenue_total_pi_upper"],
        },
    )
    if elpd:
        for prefix, model in (("purchase", purchase_model), ("gg", spend_model)):
            loo = model.loo()
            pred.elpd[f"{prefix}_elpd_loo"] = loo.elpd
            pred.elpd[f"{prefix}_elpd_loo_se"] = loo.se
            pred.elpd[f"{prefix}_p_loo"] = loo.p_eff
            pred.elpd[f"{prefix}_max_pareto_k"] = loo.max_pareto_k
            pred.elpd[f"{prefix}_elpd_waic"] = model.waic().elpd
    for prefix, model in (("purchase", purchase_model), ("gg", spend_model)):
        info = getattr(model, "fit_info_", {})
        for key in ("max_r_hat", "divergences", "min_ess_bulk"):
            if key in info:
                pred.diagnostics[f"{prefix}_{key}"] = info[key]
        pred.params.update(_param_intervals(model))
    pred.tracking = tracking_data(
        purchase_model, ds.transactions, ds.rfm, prob=PROB, n_sims=st.tracking_sims,
        seed=st.seed,
    )  # fmt: skip
    return pred


#: Fitted models of this process, by (data set, class, method, seed, draws): the model-average
#: spec reuses the fits of the single-family specs instead of fitting them again.
_FITS: dict[tuple, tuple[Any, float]] = {}
#: Fit methods a spec may use; the model average needs posterior draws (not MAP).
METHODS = ("nuts", "laplace", "map")
_HOW = {"nuts": "NUTS posterior", "laplace": "Laplace approximation at the mode",
        "map": "posterior mode (MAP), one draw"}  # fmt: skip


def _fit(ds: Dataset, st: Settings, cls, method: str, seed: int):
    """``(fitted model, fit seconds)``, fitted once per process for the same settings."""
    key = (ds.name, id(ds.rfm), cls.__name__, method, seed, st.draws, st.tune, st.chains)
    if key not in _FITS:
        kwargs: dict[str, Any] = {}
        if method == "nuts":
            kwargs = dict(draws=st.draws, tune=st.tune, chains=st.chains, progressbar=False)
            kwargs.update(st.sampler_kwargs)
        elif method == "laplace":
            kwargs = dict(draws=st.draws * st.chains)
        with _quiet():
            t0 = time.perf_counter()
            model = cls().fit(ds.rfm, method=method, seed=seed, **kwargs)
            _FITS[key] = (model, time.perf_counter() - t0)
    return _FITS[key]


def _bayesian_spec(purchase_cls, spend_cls, method: str) -> ModelSpec:
    spend_name = "GG" if spend_cls.display_name == "Gamma-Gamma" else spend_cls.display_name
    name = f"{purchase_cls.display_name or purchase_cls.__name__} + {spend_name} {method.upper()}"

    def run(ds: Dataset, st: Settings) -> Prediction:
        pm_, t_p = _fit(ds, st, purchase_cls, method, st.seed)
        sm_, t_s = _fit(ds, st, spend_cls, method, st.seed + 1)
        with _quiet():
            return predict_bayesian(ds, st, pm_, sm_, t_p + t_s, elpd=method != "map")

    return ModelSpec(name, "bayesian", run, f"clvbayes {purchase_cls.__name__} + "
                     f"{spend_cls.__name__}, {_HOW[method]}; predictions by score_customers")  # fmt: skip


def _averaged_spec(purchase: dict[str, type], spend_cls, method: str) -> ModelSpec:
    """The stacking mixture of every purchase family (clvbayes.predict.averaging)."""
    spend_name = "GG" if spend_cls.display_name == "Gamma-Gamma" else spend_cls.display_name
    name = f"model average (stacking) + {spend_name} {method.upper()}"

    def run(ds: Dataset, st: Settings) -> Prediction:
        from clvbayes.predict import score_customers
        from clvbayes.predict.averaging import averaged_model

        fits = {k: _fit(ds, st, cls, method, st.seed) for k, cls in purchase.items()}
        sm_, t_s = _fit(ds, st, spend_cls, method, st.seed + 1)
        with _quiet():
            mix = averaged_model({k: m for k, (m, _) in fits.items()}, ds.rfm)
            scores = score_customers(
                ds.rfm, mix, sm_, horizon=ds.horizon, prob=PROB, seed=st.seed,
                n_draws=st.score_draws,
                observed={"purchases": ds.holdout_purchases, "revenue": ds.holdout_spend},
            )  # fmt: skip
        c, seg = scores.customers, scores.segments["all"].iloc[0]
        pred = Prediction(
            purchases=c["purchases_mean"].to_numpy(), spend=c["revenue_mean"].to_numpy(),
            customers=c, fit_seconds=t_s + sum(t for _, t in fits.values()),
            totals={"purchases_lower": seg["purchases_total_pi_lower"],
                    "purchases_upper": seg["purchases_total_pi_upper"],
                    "spend_lower": seg["revenue_total_pi_lower"],
                    "spend_upper": seg["revenue_total_pi_upper"]},
        )  # fmt: skip
        pred.diagnostics["stacking weights"] = ", ".join(
            f"{k} {w:.3f}" for k, w in mix.weights.items()
        )
        return pred

    return ModelSpec(
        name, "bayesian", run,
        f"the mixture of the {method.upper()} fits of {', '.join(purchase)} with stacking "
        "weights from PSIS-LOO (clvbayes.predict.averaging.averaged_model: each family's "
        "posterior draws in proportion to its weight) + the spend model; predictions by "
        "score_customers",
    )  # fmt: skip


def bayesian_specs(methods: tuple[str, ...] = ("nuts", "map")) -> list[ModelSpec]:
    """One spec per registered purchase model and method, and the model average per method
    with posterior draws (NUTS, Laplace).

    Purchase models are those of :func:`clvbayes.models.protocols.purchase_models` (every
    model implementing the :class:`~clvbayes.models.protocols.PurchaseModel` protocol); the
    spend model is the first model of :mod:`clvbayes.models` implementing ``SpendModel``.
    New models therefore join the comparison without editing this file.
    """
    import clvbayes.models as registry
    from clvbayes.models.protocols import SpendModel, missing_methods, purchase_models

    classes = [getattr(registry, n) for n in registry.__all__]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, registry.CLVModel)]
    purchase = purchase_models()
    spend = [c for c in classes if not missing_methods(c, SpendModel)]
    if not spend:
        return []
    specs = [_bayesian_spec(p, spend[0], m) for p in purchase.values() for m in methods]
    if len(purchase) > 1:
        specs += [_averaged_spec(purchase, spend[0], m) for m in methods if m != "map"]
    return specs


def _run_truth(ds: Dataset, st: Settings) -> Prediction:
    """BG/NBD + Gamma-Gamma predictions at the true parameters (same predictive code)."""
    from clvbayes.compat import posterior_from_arrays
    from clvbayes.models import BetaGeoModel, GammaGammaModel

    with _quiet():
        models = []
        for cls in (BetaGeoModel, GammaGammaModel):
            m = cls().fit(ds.rfm, method="map")  # sets the data; posterior replaced below
            m.posterior_ = posterior_from_arrays(
                {k: np.array([[ds.truth[k]]]) for k in cls.param_names}
            )
            m.fit_info_ = {}
            models.append(m)
        pred = predict_bayesian(ds, st, *models, fit_seconds=0.0, elpd=False)
    pred.params = {k: (v, v, v) for k, v in ds.truth.items()}
    return pred


# ---- baselines ---------------------------------------------------------------------------
def _rate(rfm: pd.DataFrame) -> np.ndarray:
    """Past repeat-purchase rate per week, x / T (0 for T = 0)."""
    x, T = rfm["frequency"].to_numpy(float), rfm["T"].to_numpy(float)
    return np.divide(x, T, out=np.zeros_like(x), where=T > 0)


def _order_value(rfm: pd.DataFrame) -> np.ndarray:
    """Average repeat order value (the RFM table's monetary_value; 0 without repeats)."""
    return rfm["monetary_value"].to_numpy(float)


def _linear_curve(weekly_total: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: weekly_total * np.asarray(s, dtype=float)


def _run_historical(ds: Dataset, st: Settings) -> Prediction:
    """(a) purchases = x / T * H; spend = average order value * x / T * H."""
    rate = _rate(ds.rfm)
    purchases = rate * ds.horizon
    return Prediction(
        purchases=purchases,
        spend=_order_value(ds.rfm) * purchases,
        holdout_curve=_linear_curve(rate.sum()),
        fit_seconds=0.0,
    )


def retention_rate(ds: Dataset, weeks: float = QUARTER_WEEKS) -> tuple[float, np.ndarray]:
    """Period retention rate and who is active in the last period of calibration.

    Returns ``(rho, active)``: ``rho`` = share of the customers with a purchase in the
    second-to-last ``weeks`` of calibration who also bought in the last ``weeks``;
    ``active[i]`` = customer ``i`` bought in the last ``weeks`` of calibration (first
    purchase included).
    """
    occ = ds.occasions()
    cal_end = pd.Timestamp(ds.rfm.attrs["calibration_end"])
    length = pd.Timedelta(days=7 * weeks)
    last = occ[(occ["day"] > cal_end - length) & (occ["day"] <= cal_end)]["customer_id"].unique()
    prev = occ[(occ["day"] > cal_end - 2 * length) & (occ["day"] <= cal_end - length)]
    prev = prev["customer_id"].unique()
    rho = float(np.isin(prev, last).mean()) if prev.size else 0.0
    return rho, ds.rfm.index.isin(last)


def _run_retention(ds: Dataset, st: Settings) -> Prediction:
    """(b) (a) for customers active in the last quarter, decayed by rho per quarter."""
    rho, active = retention_rate(ds)
    L, H = QUARTER_WEEKS, ds.horizon
    k = np.arange(1, int(np.ceil(H / L - 1e-9)) + 1)
    lengths = np.minimum(L, H - (k - 1) * L)
    rate = _rate(ds.rfm) * active
    purchases = rate * float(np.sum(rho**k * lengths))

    def curve(s):
        s = np.asarray(s, dtype=float)
        covered = np.clip(s[..., None] - (k - 1) * L, 0.0, lengths)  # weeks of quarter k by s
        return rate.sum() * np.sum(rho**k * covered, axis=-1)

    return Prediction(
        purchases=purchases, spend=_order_value(ds.rfm) * purchases, holdout_curve=curve,
        fit_seconds=0.0, diagnostics={"retention_rate_per_quarter": rho},
    )  # fmt: skip


def _run_rfm(ds: Dataset, st: Settings) -> Prediction:
    """(c) RFM score R + F + M (quintiles, 3..15): a ranking only."""
    from clvbayes.segments import rfm_scores

    s = rfm_scores(ds.rfm)
    score = (s["r_score"] + s["f_score"] + s["m_score"]).to_numpy(float)
    return Prediction(score=score, fit_seconds=0.0)


def _run_last_period(ds: Dataset, st: Settings) -> Prediction:
    """(d) repeat purchases and spend of the last quarter of calibration, times H / 13."""
    occ = ds.occasions()
    cal_end = pd.Timestamp(ds.rfm.attrs["calibration_end"])
    last = occ[
        occ["repeat"]
        & (occ["day"] > cal_end - pd.Timedelta(days=7 * QUARTER_WEEKS))
        & (occ["day"] <= cal_end)
    ]
    per = last.groupby("customer_id")["amount"].agg(["size", "sum"]).reindex(ds.rfm.index)
    scale = ds.horizon / QUARTER_WEEKS
    n = per["size"].fillna(0).to_numpy(float)
    return Prediction(
        purchases=n * scale,
        spend=per["sum"].fillna(0).to_numpy(float) * scale,
        holdout_curve=_linear_curve(n.sum() / QUARTER_WEEKS),
        fit_seconds=0.0,
    )


BASELINES: list[ModelSpec] = [
    ModelSpec("(a) historical value", "baseline", _run_historical,
              "purchases = x / T x H; spend = average repeat order value x x / T x H"),
    ModelSpec("(b) historical x retention", "baseline", _run_retention,
              "(a) for customers who bought in the last 13 calibration weeks, times "
              "sum_k rho^k over the holdout quarters (rho: quarter-on-quarter retention); 0 otherwise"),
    ModelSpec("(c) RFM score", "baseline", _run_rfm,
              "rank by R + F + M quintile scores (clvbayes.segments.rfm_scores); rank metrics only"),
    ModelSpec("(d) last-period repeats", "baseline", _run_last_period,
              "repeat purchases and spend of the last 13 calibration weeks, times H / 13"),
]  # fmt: skip
TRUTH = ModelSpec(
    "BG/NBD + GG at true parameters", "truth", _run_truth,
    "simulation truth: predictions at the parameters the data were simulated from",
    applies=lambda ds: ds.truth is not None,
)  # fmt: skip

#: Every model compared: clvbayes models (discovered), baselines, and the simulation truth.
MODELS: list[ModelSpec] = [*bayesian_specs(), *BASELINES, TRUTH]


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------
def gains_curve(score: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of customers vs share of total ``value``, customers ranked by ``score``.

    Customers with equal scores form one straight segment (the expected curve under random
    tie-breaking), so coarse scores such as RFM codes are neither helped nor hurt by the
    order of the rows.
    """
    score, value = np.asarray(score, float), np.asarray(value, float)
    order = np.argsort(-score, kind="stable")
    s, v = score[order], value[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    n_group = np.diff(np.r_[starts, s.size])
    v_group = np.add.reduceat(v, starts)
    x = np.r_[0.0, np.cumsum(n_group)] / s.size
    y = np.r_[0.0, np.cumsum(v_group)] / max(v.sum(), np.finfo(float).tiny)
    return x, y


def top_share(score: np.ndarray, value: np.ndarray, fraction: float) -> float:
    """Share of total ``value`` held by the top ``fraction`` of customers ranked by ``score``."""
    x, y = gains_curve(score, value)
    return float(np.interp(fraction, x, y))


def gini(score: np.ndarray, value: np.ndarray) -> float:
    """Normalised Gini of a ranking: 1 = the ranking by the actual values, 0 = random order.

    Gini of a ranking = 2 x (area under its gains curve) - 1; normalised by the Gini of the
    ranking by ``value`` itself.
    """

    def raw(sc):
        x, y = gains_curve(sc, value)
        return 2.0 * float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)) - 1.0

    best = raw(value)
    return raw(score) / best if best > 0 else float("nan")


def evaluate(ds: Dataset, spec: ModelSpec, pred: Prediction) -> dict[str, Any]:
    """One result row: point errors, rank quality, interval coverage, ELPD, fit time."""
    from scipy import stats

    y_p, y_s = ds.holdout_purchases, ds.holdout_spend
    row: dict[str, Any] = {"model": spec.name, "kind": spec.kind}
    for what, pred_v, actual in (("purchases", pred.purchases, y_p), ("spend", pred.spend, y_s)):
        if pred_v is None:
            row.update({f"{what} MAE": None, f"{what} RMSE": None, f"{what} total error %": None})
            continue
        err = pred_v - actual
        row[f"{what} MAE"] = float(np.mean(np.abs(err)))
        row[f"{what} RMSE"] = float(np.sqrt(np.mean(err**2)))
        row[f"{what} total error %"] = 100.0 * float(err.sum() / actual.sum())
    score = pred.score if pred.score is not None else pred.spend
    row["Spearman"] = float(stats.spearmanr(score, y_s).statistic)
    row["top 10% share"] = top_share(score, y_s, 0.1)
    row["top 20% share"] = top_share(score, y_s, 0.2)
    row["Gini"] = gini(score, y_s)
    c = pred.customers
    for what, col in (("purchases", "purchases"), ("spend", "revenue")):
        if c is not None and f"{col}_pi_covered" in c:
            row[f"{what} PI90 coverage"] = float(c[f"{col}_pi_covered"].mean())
            row[f"{what} PI90 width"] = float((c[f"{col}_pi_upper"] - c[f"{col}_pi_lower"]).mean())
        else:
            row[f"{what} PI90 coverage"] = row[f"{what} PI90 width"] = None
    for what, actual in (("purchases", y_p.sum()), ("spend", y_s.sum())):
        lo, hi = pred.totals.get(f"{what}_lower"), pred.totals.get(f"{what}_upper")
        row[f"total {what} PI90"] = None if lo is None else f"{lo:,.0f} to {hi:,.0f}"
        row[f"total {what} in PI90"] = None if lo is None else bool(lo <= actual <= hi)
    row.update(pred.elpd)
    row.update(pred.diagnostics)
    row["fit seconds"] = pred.fit_seconds
    return row


# ------------------------------------------------------------------------------------------
# tracking plot
# ------------------------------------------------------------------------------------------
def plot_tracking(ds: Dataset, specs: list[ModelSpec], preds: list[Prediction], path: Path):
    """Weekly cumulative repeat transactions, actual vs every model (bands: 90% intervals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [p.tracking for p in preds if p.tracking is not None]
    if not tables:
        return None
    base = tables[0]
    x = base.index.to_numpy()
    cal = base.attrs["calibration_end"]
    fig, (ax, ax_h) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    for axis in (ax, ax_h):
        axis.plot(x, base["cum_actual"], color="black", lw=2, label="actual", zorder=5)
    n_cal = float(ds.rfm["frequency"].sum())  # actual repeat transactions up to calibration end
    hold = x > cal
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)
    for spec, pred in zip(specs, preds, strict=True):
        color = next(colors)
        for axis in (ax, ax_h):
            if pred.tracking is not None:
                t = pred.tracking
                style = ":" if spec.kind == "truth" else "-"
                axis.fill_between(x, t["cum_pi_lower"], t["cum_pi_upper"], color=color, alpha=0.12,
                                  lw=0)  # fmt: skip
                if t.attrs["n_draws"] > 1:
                    axis.fill_between(x, t["cum_ci_lower"], t["cum_ci_upper"], color=color,
                                      alpha=0.35, lw=0)  # fmt: skip
                axis.plot(x, t["cum_expected"], style, color=color, lw=1.5, label=spec.name)
            elif pred.holdout_curve is not None:
                xs = np.r_[cal, x[hold]]
                axis.plot(xs, n_cal + pred.holdout_curve(xs - cal), "--", color=color, lw=1.5,
                          label=spec.name)  # fmt: skip
    for axis in (ax, ax_h):
        axis.axvline(cal, color="0.5", ls=":", lw=1)
        axis.set_xlabel(f"weeks since {base.attrs['start']:%Y-%m-%d}")
    ax.set_ylabel("cumulative repeat transactions")
    ax.set_title(f"{ds.name}: tracking, calibration | holdout")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    lo_x = cal - 2
    ax_h.set_xlim(lo_x, x[-1] + 0.5)
    visible = base["cum_actual"][x >= lo_x]
    ax_h.set_ylim(0.9 * visible.min(), None)
    ax_h.set_title("holdout (zoom); bands: 90% predictive (light), credible (dark)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------
POINT_COLUMNS = [
    "model", "purchases MAE", "purchases RMSE", "purchases total error %", "spend MAE",
    "spend RMSE", "spend total error %", "Spearman", "top 10% share", "top 20% share", "Gini",
]  # fmt: skip
INTERVAL_COLUMNS = [
    "model", "purchases PI90 coverage", "purchases PI90 width", "spend PI90 coverage",
    "spend PI90 width", "total purchases PI90", "total purchases in PI90", "total spend PI90",
    "total spend in PI90", "purchase_elpd_loo", "purchase_elpd_loo_se", "purchase_elpd_waic",
    "gg_elpd_loo", "gg_elpd_loo_se", "purchase_max_r_hat", "stacking weights", "fit seconds",
]  # fmt: skip


def run_dataset(
    ds: Dataset, st: Settings, out: Path, models: list[ModelSpec], info: dict[str, str]
) -> list[dict]:
    """Fit and score every applicable model on ``ds``; write the table, CSV and plot.

    ``info`` is the machine/version header (:func:`machine_info`, taken before the run).
    """
    specs = [m for m in models if m.applies(ds)]
    rows, preds = [], []
    for spec in specs:
        t0 = time.perf_counter()
        pred = spec.run(ds, st)
        rows.append(evaluate(ds, spec, pred))
        preds.append(pred)
        print(f"  {spec.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    y_p, y_s = ds.holdout_purchases, ds.holdout_spend
    stem = f"compare_models_{ds.name}"
    write_csv(out / f"{stem}.csv", rows)
    png = plot_tracking(ds, specs, preds, out / f"{stem}_tracking.png")

    md = [f"# Model comparison on the holdout: {ds.name}\n"]
    md.append(
        f"{ds.description}: {len(ds.rfm):,} customers, calibration to "
        f"{ds.rfm.attrs['calibration_end']}, holdout {ds.horizon:.1f} weeks to "
        f"{ds.rfm.attrs['observation_end']}. Actual holdout: {y_p.sum():,.0f} purchases, "
        f"spend {y_s.sum():,.2f}; {np.mean(y_p > 0):.1%} of customers buy. A perfect ranking "
        f"puts {top_share(y_s, y_s, 0.1):.1%} / {top_share(y_s, y_s, 0.2):.1%} of holdout spend "
        "in the top 10% / 20%.\n"
    )
    md.append("## Point predictions and ranking\n")
    md.append(markdown_table(rows, POINT_COLUMNS))
    md.append("\n## Intervals, model fit (ELPD) and diagnostics\n")
    md.append(markdown_table(rows, [c for c in INTERVAL_COLUMNS if any(c in r for r in rows)]))
    if ds.truth is not None:
        prow = _param_rows(ds, specs, preds)
        write_csv(out / f"{stem}_params.csv", prow)
        md.append("\n## Parameter recovery (90% intervals; MAP: Laplace on the log scale)\n")
        md.append(markdown_table(prow))
    md.append("\n## Models\n")
    md += [f"- **{s.name}** ({s.kind}): {s.description}" for s in specs]
    rho = next((p.diagnostics.get("retention_rate_per_quarter") for p in preds
                if "retention_rate_per_quarter" in p.diagnostics), None)  # fmt: skip
    if rho is not None:
        md.append(f"\nRetention rate per quarter (b): rho = {rho:.3f}.")
    md.append(
        "\n## Reading the table\n\n"
        "- x, T, H: repeat purchases in calibration, weeks since first purchase, holdout weeks.\n"
        "- MAE / RMSE: per customer, holdout purchases (count) and holdout spend (dollars).\n"
        "- total error %: (predicted total - actual total) / actual total.\n"
        "- Rank metrics rank customers by predicted holdout spend (RFM: by R + F + M) and "
        "compare with actual holdout spend; ties are split evenly (random tie-breaking in "
        "expectation). Gini is normalised: 1 = perfect ranking, 0 = random.\n"
        "- PI90: the 90% predictive interval of the customer's holdout outcome "
        "(coverage should be >= 0.90 for counts, ~0.90 for spend); totals: interval of "
        "the cohort total from per-draw sums.\n"
        "- ELPD (nats, higher is better, comparable only between purchase models, or between "
        "spend models, fitted to the same table): PSIS-LOO and WAIC of the NUTS fits "
        "(`model.loo()`, `model.waic()`).\n"
        "- fit seconds: in-process fit of both models (prediction time not included; see "
        "`speed.md` for timings in fresh processes).\n"
    )
    if png is not None:
        md.append(f"\n![tracking]({png.name})\n")
    md.append("\n## Run\n")
    md.append(
        f"NUTS {st.chains} chains x {st.draws} draws (tune {st.tune}); Laplace "
        f"{st.chains * st.draws} draws; predictions from "
        f"{st.score_draws} posterior draws; seed {st.seed}.\n\n"
    )
    md.append(info_block(info))
    load = load_average()
    md.append(f"- load average at end: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}\n")
    text = "\n".join(md)
    (out / f"{stem}.md").write_text(text)
    print(text)
    return rows


def _param_rows(ds: Dataset, specs, preds) -> list[dict[str, Any]]:
    rows = []
    for spec, pred in zip(specs, preds, strict=True):
        if spec.kind != "bayesian":
            continue
        for name, (est, lo, hi) in pred.params.items():
            true = ds.truth.get(name)
            if true is None:  # a parameter of another family than the simulated one
                continue
            rows.append({
                "model": spec.name, "parameter": name, "true": true, "estimate": est,
                "lower": lo, "upper": hi, "covered": bool(lo <= true <= hi),
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cdnow_sample", choices=[*DATASETS, "all"])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run for CI: 300 customers, 2 x 25 draws; writes to a temp folder")  # fmt: skip
    ap.add_argument("--draws", type=int, default=None, help="NUTS draws per chain (default 1000)")
    ap.add_argument("--tune", type=int, default=None, help="NUTS tuning steps (default = draws)")
    ap.add_argument("--chains", type=int, default=None, help="NUTS chains (default 4)")
    ap.add_argument("--customers", type=int, default=None,
                    help="subsample real data / size of the simulated data (default: all / 5000)")  # fmt: skip
    ap.add_argument("--methods", default="nuts,map",
                    help=f"fit methods of the clvbayes models, comma-separated from "
                    f"{', '.join(METHODS)} (default nuts,map); the model average is added for "
                    "each method with posterior draws")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)

    if args.smoke:
        st = Settings(draws=25, tune=25, chains=2, score_draws=50, tracking_sims=20,
                      sampler_kwargs={"cores": 1})  # fmt: skip
        n_customers = args.customers or 300
    else:
        st = Settings()
        n_customers = args.customers
    st.seed = args.seed
    st.draws = args.draws or st.draws
    st.tune = args.tune or (args.draws if args.draws else st.tune)
    st.chains = args.chains or st.chains
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        ap.error(f"--methods: unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    models = MODELS if methods == ("nuts", "map") else [*bayesian_specs(methods), *BASELINES,
                                                          TRUTH]  # fmt: skip
    out = resolve_out(args.out, args.smoke)
    names = DATASETS if args.dataset == "all" else (args.dataset,)
    for name in names:
        t0 = time.perf_counter()
        print(f"{name}: loading", file=sys.stderr, flush=True)
        info = machine_info(["clvbayes", "numpy", "pymc", "pytensor", "arviz"])
        ds = load_dataset(name, n_customers, seed=args.seed)
        run_dataset(ds, st, out, models, info)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"results written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
