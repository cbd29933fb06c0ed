"""Model averaging of purchase models: stacking (and pseudo-BMA) weights from PSIS-LOO.

Which purchase family is right is uncertain too.  Stacking (Yao, Vehtari, Simpson & Gelman
2018, Bayesian Analysis 13(3), 917-1007, eq. 4) weighs the models so that the mixture of
their leave-one-out predictive distributions scores best on the customers' own histories:

    w = argmax over the simplex of  sum_i c_i log sum_k w_k exp(elpd_ik),

``elpd_ik`` the PSIS-LOO log predictive density of distinct history ``i`` under model ``k``
(:meth:`clvbayes.models.CLVModel.loo_terms`) and ``c_i`` the customers sharing it (the sum
over customers, computed once per distinct history).  Pseudo-BMA (Yao et al. 2018, eq. 6)
weighs by ``exp(elpd_k)``; pseudo-BMA+ averages those weights over a Bayesian bootstrap of
the customers (Dirichlet(1) per customer, i.e. Dirichlet(c_i) per distinct history).

API (what the backtests and the ``--purchase-model compare`` report call)::

    from clvbayes.predict.averaging import stacking_weights, averaged_model

    w = stacking_weights({"bgnbd": bg, "mbgnbd": mbg, "pnbd": pn}, rfm)  # pandas Series
    mix = averaged_model({"bgnbd": bg, "mbgnbd": mbg, "pnbd": pn}, rfm)  # MixturePurchaseModel
    scores = score_customers(rfm, mix, gg, horizon=39)                   # model-averaged

* :func:`stacking_weights` ``(models, rfm, *, method="stacking", seed=0, n_bootstrap=1000)``
  -> :class:`pandas.Series` of weights by model key (non-negative, adding up to 1), with
  ``attrs`` holding the method and the objective.  ``method``: ``"stacking"``,
  ``"pseudo_bma"`` or ``"pseudo_bma_plus"``.
* :func:`pointwise_elpd` ``(models, rfm)`` -> ``(elpd (n_histories, K), counts (n,), keys)``:
  the LOO terms of every model on the same distinct histories.
* :func:`weights_from_elpd` ``(elpd, counts, method="stacking", ...)`` -> ndarray ``(K,)``:
  the optimisation alone, on any matrix of pointwise log scores.
* :func:`averaged_model` ``(models, rfm, *, method="stacking", n_draws=None)`` ->
  :class:`~clvbayes.models.mixture.MixturePurchaseModel` with those weights.

``models`` is a mapping of key (``bgnbd``, ``mbgnbd``, ``pnbd``) to fitted purchase model,
each fitted by NUTS or Laplace on ``rfm`` (LOO needs posterior draws); ``rfm`` the customer
table they were fitted on.  Histories a model does not learn from (NaN terms) are left out
of the weights.

The stacking optimiser is our own: the objective is concave on the simplex, so it is solved
by SLSQP on the weights (sum 1, bounds [0, 1]) with the exact gradient from the uniform
start, then refined by EM steps for mixture weights (each step raises the objective, and a
weight that is 0 at the optimum shrinks to 0); :func:`stacking_check` gives the
Karush-Kuhn-Tucker gap.  ``tests/test_averaging.py`` pins it to ArviZ's stacking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "METHODS",
    "averaged_model",
    "pointwise_elpd",
    "stacking_check",
    "stacking_weights",
    "weights_from_elpd",
]

#: Weighting methods: stacking of predictive distributions, pseudo-BMA (exp elpd) and
#: pseudo-BMA+ (pseudo-BMA averaged over a Bayesian bootstrap of the customers).
METHODS = ("stacking", "pseudo_bma", "pseudo_bma_plus")


def pointwise_elpd(
    models: Mapping[str, Any], rfm: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """PSIS-LOO terms of every model on the same distinct histories of ``rfm``.

    Parameters
    ----------
    models : mapping of str to fitted purchase model
        Each with ``loo_terms`` (:class:`clvbayes.models.CLVModel`) and at least 10 draws.
    rfm : DataFrame
        Customer table (the models' history columns, in their time unit).

    Returns
    -------
    elpd : ndarray, shape (n_histories, K)
        LOO log predictive density of each distinct history under each model (nats).
    counts : ndarray, shape (n_histories,)
        Customers sharing each history.
    keys : list of str
        The model keys, in column order.
    """
    models = _as_mapping(models)
    columns = list(dict.fromkeys(c for m in models.values() for c in m.history_columns))
    grouped = rfm[columns].value_counts(sort=False)
    histories = grouped.index.to_frame(index=False)
    histories.attrs = dict(rfm.attrs)
    counts = grouped.to_numpy(dtype=float)
    terms = []
    for m in models.values():
        data, elpd_i, _, _ = m.loo_terms(histories)
        terms.append(elpd_i[data.inverse])  # back to the rows of ``histories``
    return np.column_stack(terms), counts, list(models)


def _objective(w: np.ndarray, dens: np.ndarray, c: np.ndarray, n: float):
    mix = dens @ w
    value = -float(np.sum(c * np.log(mix))) / n
    grad = -(dens.T @ (c / mix)) / n
    return value, grad


def _stack(elpd: np.ndarray, counts: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    from scipy.optimize import minimize

    k = elpd.shape[1]
    if k == 1:
        return np.ones(1)
    dens = np.exp(elpd - elpd.max(axis=1, keepdims=True))  # rows scaled: same argmax
    n = float(counts.sum())
    res = minimize(
        _objective, np.full(k, 1.0 / k), args=(dens, counts, n), jac=True, method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                      "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )  # fmt: skip
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)
    w = np.maximum(w, 1e-300)  # EM keeps a weight at exactly 0 there for ever
    for _ in range(10_000):  # EM for mixture weights: monotone, fixed point = optimum
        r = dens * w
        new = (counts / n) @ (r / r.sum(axis=1, keepdims=True))
        if np.max(np.abs(new - w)) < tol:
            w = new
            break
        w = new
    w = np.where(w < 1e-12, 0.0, w)
    return w / w.sum()


def stacking_check(elpd: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> float:
    """Karush-Kuhn-Tucker gap of stacking ``weights``: 0 at the optimum.

    With ``g_k`` the derivative of the mean log score in ``w_k``, the optimum has
    ``g_k = 1`` where ``w_k > 0`` and ``g_k <= 1`` where ``w_k = 0``; the gap is the largest
    violation.
    """
    dens = np.exp(elpd - elpd.max(axis=1, keepdims=True))
    n = float(np.sum(counts))
    g = dens.T @ (counts / (dens @ weights)) / n
    used = weights > 0
    return float(max(np.max(np.abs(g[used] - 1.0)), np.max(g[~used] - 1.0, initial=0.0)))


def weights_from_elpd(
    elpd: np.ndarray,
    counts: np.ndarray | None = None,
    method: str = "stacking",
    *,
    seed: int | None = 0,
    n_bootstrap: int = 1000,
) -> np.ndarray:
    """Model weights from pointwise log scores.

    Parameters
    ----------
    elpd : array_like, shape (n, K)
        Pointwise LOO log predictive densities (nats), one column per model.
    counts : array_like, shape (n,), optional
        How many customers each row stands for (default 1 each).
    method : {"stacking", "pseudo_bma", "pseudo_bma_plus"}
        See the module docstring.
    seed : int, optional
        Seed of the Bayesian bootstrap (``pseudo_bma_plus`` only).
    n_bootstrap : int
        Bootstrap replicates (``pseudo_bma_plus`` only).

    Returns
    -------
    ndarray, shape (K,)
        Non-negative weights adding up to 1.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    elpd = np.asarray(elpd, dtype=float)
    if elpd.ndim != 2 or elpd.shape[1] < 1 or elpd.shape[0] < 1:
        raise ValueError(f"elpd must be (n, K) with n, K >= 1, got shape {elpd.shape}.")
    counts = np.ones(elpd.shape[0]) if counts is None else np.asarray(counts, dtype=float)
    if counts.shape != (elpd.shape[0],) or (counts < 0).any():
        raise ValueError(
            f"counts must be {elpd.shape[0]} non-negative numbers (one per row of elpd)."
        )
    keep = np.isfinite(elpd).all(axis=1) & (counts > 0)
    elpd, counts = elpd[keep], counts[keep]
    if method == "stacking":
        return _stack(elpd, counts)
    if method == "pseudo_bma":
        return _softmax(counts @ elpd)
    rng = np.random.default_rng(seed)
    n = counts.sum()
    # Dirichlet(1) over customers, summed per history: Dirichlet(counts)
    alpha = rng.dirichlet(counts, size=n_bootstrap)  # (B, n)
    z = n * alpha @ elpd  # (B, K)
    return np.mean([_softmax(zb) for zb in z], axis=0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z))
    return e / e.sum()


def stacking_weights(
    models: Mapping[str, Any],
    rfm: pd.DataFrame,
    *,
    method: str = "stacking",
    seed: int | None = 0,
    n_bootstrap: int = 1000,
) -> pd.Series:
    """Weights of fitted purchase models for averaging, from PSIS-LOO per distinct history.

    Parameters
    ----------
    models : mapping of str to fitted purchase model
        By key (``bgnbd``, ``mbgnbd``, ``pnbd``), each fitted on ``rfm`` by NUTS or Laplace.
    rfm : DataFrame
        The customer table they were fitted on.
    method : {"stacking", "pseudo_bma", "pseudo_bma_plus"}
        Stacking of predictive distributions (default), pseudo-BMA or pseudo-BMA+.
    seed, n_bootstrap
        For ``pseudo_bma_plus``'s Bayesian bootstrap.

    Returns
    -------
    pandas.Series
        Weight of each model (index: the keys), non-negative, adding up to 1;
        ``attrs``: ``method``, ``n_customers``, ``n_histories`` and, for stacking,
        ``mean_log_score`` (nats per customer, of the weighted LOO mixture) and
        ``kkt_gap`` (:func:`stacking_check`).
    """
    elpd, counts, keys = pointwise_elpd(models, rfm)
    w = weights_from_elpd(elpd, counts, method, seed=seed, n_bootstrap=n_bootstrap)
    out = pd.Series(w, index=pd.Index(keys, name="model"), name="weight")
    keep = np.isfinite(elpd).all(axis=1)
    out.attrs.update(method=method, n_customers=int(counts[keep].sum()),
                     n_histories=int(keep.sum()))  # fmt: skip
    if method == "stacking":
        e, c = elpd[keep], counts[keep]
        top = e.max(axis=1)
        mix = np.log(np.exp(e - top[:, None]) @ w) + top
        out.attrs["mean_log_score"] = float(np.sum(c * mix) / c.sum())
        out.attrs["kkt_gap"] = stacking_check(e, c, w)
    return out


def averaged_model(
    models: Mapping[str, Any],
    rfm: pd.DataFrame | None = None,
    *,
    weights: Mapping[str, float] | pd.Series | None = None,
    method: str = "stacking",
    n_draws: int | None = None,
):
    """The mixture of ``models`` with weights from :func:`stacking_weights` (or ``weights``).

    Returns
    -------
    MixturePurchaseModel
        With ``weights`` (a Series by key; ``attrs`` as :func:`stacking_weights`).
    """
    from clvbayes.models.mixture import MixturePurchaseModel

    models = _as_mapping(models)
    if weights is None:
        if rfm is None:
            raise ValueError("averaged_model needs rfm (the customer table) or weights.")
        weights = stacking_weights(models, rfm, method=method)
    mix = MixturePurchaseModel(models, dict(weights), n_draws=n_draws)
    if isinstance(weights, pd.Series):
        mix.weights.attrs.update(weights.attrs)
    return mix


def _as_mapping(models) -> dict[str, Any]:
    if isinstance(models, Mapping):
        if not models:
            raise ValueError("no models given.")
        return {str(k): m for k, m in models.items()}
    models = list(models)
    if not models:
        raise ValueError("no models given.")
    return {str(i): m for i, m in enumerate(models)}
