"""Purchase models side by side: PSIS-LOO, holdout accuracy and coverage, and the choice.

``clvbayes run --purchase-model compare`` fits every registered purchase model
(:func:`clvbayes.models.protocols.purchase_models`), passes them to
:func:`compare_purchase_models` and writes its table as ``model_comparison.csv`` /
``.parquet`` (columns: ``SCHEMA["model_comparison"]``), with a section in
``model_summary.json`` / ``.md`` that says which model the main tables use and why.

What is compared, one row per model:

* **PSIS-LOO** (Vehtari, Gelman & Gabry 2017, Statistics and Computing 27, 1413-1432) of
  each customer's calibration history under the model: the expected log pointwise
  predictive density ``elpd_loo`` in nats (higher is better), its standard error, the
  effective number of parameters ``p_loo`` and the largest Pareto k (above 0.7 the estimate
  is unreliable).  It is computed once per distinct history (frequency, recency, T) and
  weighted by the number of customers sharing it, as :meth:`clvbayes.models.CLVModel.loo`
  does; ``elpd_diff`` and ``elpd_diff_se`` compare each model with the best one on the
  paired per-history values (the se of a difference is not the sum of the two se's).
* With a holdout period: each customer's actual holdout purchases against the model's
  expectation over the holdout length (mean absolute error, root mean squared error, in
  transactions per customer), the predicted against the actual total, the share of
  customers whose holdout purchases lie in their predictive interval (``prob``, e.g. 90 %:
  about ``prob`` when the intervals are calibrated) and the mean randomised PIT (0.5 when
  calibrated), from :func:`clvbayes.predict.score_customers` with ``observed=``.

The choice (:data:`CHOICE_RULE`, :func:`choose_model`) uses LOO only, so the holdout figures
stay an independent check of it.

**Model averaging** (``average=True``).  From the same per-history LOO terms the models get
stacking weights
(:func:`clvbayes.predict.averaging.weights_from_elpd`: the weights whose mixture of LOO
predictive distributions scores best, Yao, Vehtari, Simpson & Gelman 2018), in the table's
``stacking_weight``, and :attr:`ModelComparison.mixture` is the
:class:`~clvbayes.models.mixture.MixturePurchaseModel` of the models with those weights.
With a holdout period the mixture's holdout accuracy is computed as each model's
(:attr:`ModelComparison.averaging`).  ``clvbayes run`` then scores every customer with the
mixture too (the ``averaged_*`` columns of ``customers`` and ``segments``) and adds each
model's and the mixture's totals over the prediction horizon
(:meth:`ModelComparison.with_totals`); ``model_summary.md`` shows them side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.schema import SCHEMA, _cast

__all__ = [
    "AVERAGED_NAME",
    "CHOICE_RULE",
    "PREFERENCE",
    "TIE_SE",
    "TOTAL_COLUMNS",
    "ModelComparison",
    "choose_model",
    "compare_purchase_models",
    "pointwise_loo",
]

#: Order in which statistically tied models are preferred: BG/NBD, the default and the most
#: widely used (Fader, Hardie & Lee 2005), then MBG/NBD, then Pareto/NBD (the slowest to fit
#: and predict); keys not listed come after them, in the order they were given.
PREFERENCE = ("bgnbd", "mbgnbd", "pnbd")
#: Models whose elpd lies within ``TIE_SE`` standard errors of the difference from the best
#: are taken as tied with it.
TIE_SE = 2.0
#: The rule, as the report states it.
CHOICE_RULE = (
    "The main tables use the purchase model with the highest PSIS-LOO elpd. A model whose elpd "
    f"is below the best by no more than {TIE_SE:g} standard errors of the difference "
    f"(elpd_diff <= {TIE_SE:g} x elpd_diff_se) is not told apart from it by the data; among "
    "such tied models the first in the order BG/NBD (the default), MBG/NBD, Pareto/NBD is "
    "used. The "
    "holdout figures do not enter the choice, so they remain an independent check of it."
)


#: How the report names the stacking mixture of the compared models.
AVERAGED_NAME = "model average (stacking)"
#: Each model's totals over the prediction horizon in the comparison table (from the
#: ``all`` row of :func:`clvbayes.predict.score_customers`' segments).
TOTAL_COLUMNS = (
    "purchases_total_mean", "purchases_total_pi_lower", "purchases_total_pi_upper",
    "clv_total_mean", "clv_total_ci_lower", "clv_total_ci_upper", "clv_total_pi_lower",
    "clv_total_pi_upper",
)  # fmt: skip


@dataclass(frozen=True)
class ModelComparison:
    """The comparison of a report's purchase models.

    Attributes
    ----------
    table : DataFrame
        One row per model, columns of ``SCHEMA["model_comparison"]``, best elpd first.
    chosen : str
        Key of the model the main tables use.
    reason : str
        Why, in one paragraph (the figures that decided it).
    rule : str
        The rule applied (:data:`CHOICE_RULE`).
    averaging : dict
        The model average: ``method`` ("stacking"), ``weights`` and ``n_draws`` by model
        key, ``mean_log_score`` (nats per customer, of the LOO mixture), with a holdout
        period ``holdout`` (the mixture's ``holdout_purchases_*`` figures, as the table's)
        and, after :meth:`with_totals`, ``totals`` (the mixture's :data:`TOTAL_COLUMNS`)
        and ``holdout_check`` (the mixture's holdout check of purchases and revenue).
    mixture : MixturePurchaseModel or None
        The stacking mixture of the compared models (not written to the report).
    """

    table: pd.DataFrame
    chosen: str
    reason: str
    rule: str = CHOICE_RULE
    averaging: dict[str, Any] = field(default_factory=dict)
    mixture: Any = field(default=None, repr=False, compare=False)

    def to_summary(self) -> dict[str, Any]:
        """The ``model_comparison`` entry of ``model_summary.json``."""
        out = {
            "chosen": self.chosen,
            "reason": self.reason,
            "rule": self.rule,
            "models": self.table.to_dict(orient="records"),
        }
        if self.averaging:
            out["model_averaging"] = dict(self.averaging)
        return out

    def with_totals(
        self,
        totals: Mapping[str, Mapping[str, float]],
        averaged: Mapping[str, float] | None = None,
        holdout_check: Mapping[str, Any] | None = None,
    ) -> ModelComparison:
        """This comparison with each model's totals over the prediction horizon.

        Parameters
        ----------
        totals : mapping of model key to mapping
            The ``all`` row of each model's :func:`clvbayes.predict.score_customers`
            segments (with the spend model): :data:`TOTAL_COLUMNS` are taken from it.
        averaged : mapping, optional
            The same row for the mixture (:attr:`mixture`).
        holdout_check : mapping, optional
            The mixture's holdout check (as ``model_summary.json``'s ``holdout``).
        """
        table = self.table.copy()
        have = [c for c in TOTAL_COLUMNS if all(c in totals[k] for k in table["model"])]
        for c in have:
            table[c] = [float(totals[k][c]) for k in table["model"]]
        spec = [c for c in SCHEMA["model_comparison"] if c.name in table.columns]
        table = pd.DataFrame({c.name: _cast(table[c.name], c.dtype) for c in spec})
        averaging = dict(self.averaging)
        if averaged is not None:
            averaging["totals"] = {c: float(averaged[c]) for c in have if c in averaged}
        if holdout_check is not None:
            averaging["holdout_check"] = dict(holdout_check)
        return replace(self, table=table, averaging=averaging)


def pointwise_loo(
    model: Any, histories: pd.DataFrame, max_elements: int = 4_000_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSIS-LOO terms of each row of ``histories`` (one customer history per row).

    :meth:`clvbayes.models.CLVModel.loo_terms` (per distinct history, in chunks of at most
    ``max_elements`` log-likelihood values) expanded to the rows, so that two models can be
    compared row by row.

    Parameters
    ----------
    model : fitted purchase model
        With at least 10 posterior draws (NUTS or Laplace; a MAP fit has one).
    histories : DataFrame
        Rows of ``frequency``, ``recency`` and ``T`` (the model's time unit).
    max_elements : int
        Work size per chunk.

    Returns
    -------
    elpd_i, p_i, k_i : ndarray
        Per row: the LOO log predictive density (nats), its effective-parameter term
        (log predictive density of the full posterior minus ``elpd_i``) and Pareto k.
    """
    data, elpd, p, k = model.loo_terms(histories, max_elements=max_elements)
    return elpd[data.inverse], p[data.inverse], k[data.inverse]


def _distinct_histories(rfm: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct rows of ``rfm[columns]`` (attrs kept) and how many customers share each."""
    grouped = rfm[columns].value_counts(sort=False)
    histories = grouped.index.to_frame(index=False)
    histories.index = pd.RangeIndex(len(histories), name="history")
    histories.attrs = dict(rfm.attrs)
    return histories, grouped.to_numpy(dtype=float)


def _weighted_total(values: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Sum over customers of per-history ``values`` and its standard error.

    The se is that of :meth:`clvbayes.models.CLVModel.loo`: sqrt(n) times the sample sd
    (n - 1) over the n customers, as the loo R package and ArviZ 1.x compute it.
    """
    n = float(counts.sum())
    total = float(np.sum(counts * values))
    var = float(np.sum(counts * (values - total / n) ** 2) / max(n - 1, 1))
    return total, float(np.sqrt(n * var))


def _holdout_accuracy(
    rfm: pd.DataFrame, model: Any, prob: float, seed: int | None, n_draws: int | None
) -> dict[str, float]:
    """Holdout purchases against the model's predictions over the holdout length."""
    from clvbayes.predict import score_customers

    duration = float(rfm.attrs["holdout_duration"])
    actual = rfm["frequency_holdout"].to_numpy(float)
    scores = score_customers(
        rfm, model, None, horizon=duration, period=duration, discount_rate=0.0, prob=prob,
        seed=seed, n_draws=n_draws, observed={"purchases": actual},
    )  # fmt: skip
    c, total = scores.customers, scores.segments["all"].iloc[0]
    error = actual - c["purchases_mean"].to_numpy(float)
    return {
        "holdout_purchases_actual_total": int(rfm["frequency_holdout"].sum()),
        "holdout_purchases_predicted_total": float(total["purchases_total_mean"]),
        "holdout_purchases_total_pi_lower": float(total["purchases_total_pi_lower"]),
        "holdout_purchases_total_pi_upper": float(total["purchases_total_pi_upper"]),
        "holdout_purchases_mae": float(np.mean(np.abs(error))),
        "holdout_purchases_rmse": float(np.sqrt(np.mean(error**2))),
        "holdout_purchases_pi_coverage": float(c["purchases_pi_covered"].mean()),
        "holdout_purchases_mean_pit": float(c["purchases_pit"].mean()),
    }


def compare_purchase_models(
    rfm: pd.DataFrame,
    models: Mapping[str, Any],
    *,
    prob: float = 0.9,
    seed: int | None = 0,
    n_draws: int | None = None,
    names: Mapping[str, str] | None = None,
    average: bool = False,
) -> ModelComparison:
    """Compare fitted purchase models on the same customers, and choose one.

    Parameters
    ----------
    rfm : DataFrame
        The customer table the models were fitted on (``frequency``, ``recency``, ``T`` in
        its ``attrs["time_unit"]``).  With ``frequency_holdout`` and
        ``attrs["holdout_duration"]`` (from :func:`clvbayes.data.calibration_holdout_split`)
        the holdout columns are filled too.
    models : mapping of str to fitted purchase model
        By key (``bgnbd``, ``mbgnbd``, ``pnbd``), each fitted by NUTS or Laplace (LOO needs
        posterior draws); at least two.
    prob : float
        Probability of the predictive intervals behind the holdout coverage (default 0.9).
    seed : int, optional
        Seed of the holdout simulation (the same for every model).
    n_draws : int, optional
        Posterior draws used for the holdout predictions (evenly thinned; None: all).  LOO
        always uses every draw.
    names : mapping of str to str, optional
        Display names by key (e.g. ``{"bgnbd": "BG/NBD"}``); default the class names.
    average : bool
        Also average the models: stacking weights from the same LOO terms (the table's
        ``stacking_weight``), the mixture (:attr:`ModelComparison.mixture`) and, with a
        holdout period, its holdout accuracy (:attr:`ModelComparison.averaging`).  Off by
        default: it adds one holdout scoring of the mixture.

    Returns
    -------
    ModelComparison
        The table (best elpd first), the chosen key and the reason.
    """
    if len(models) < 2:
        raise ValueError(f"compare at least two purchase models, got {list(models)}.")
    columns = list(dict.fromkeys(c for m in models.values() for c in m.history_columns))
    histories, counts = _distinct_histories(rfm, columns)
    terms = {key: pointwise_loo(m, histories) for key, m in models.items()}
    totals = {key: _weighted_total(t[0], counts) for key, t in terms.items()}
    best = max(totals, key=lambda key: totals[key][0])
    holdout = "frequency_holdout" in rfm.columns and "holdout_duration" in rfm.attrs
    rows = []
    for key, model in models.items():
        elpd_i, p_i, k_i = terms[key]
        diff, diff_se = _weighted_total(terms[best][0] - elpd_i, counts)
        row: dict[str, Any] = {
            "model": key,
            "model_name": (names or {}).get(key, type(model).__name__),
            "model_class": type(model).__name__,
            "elpd_loo": totals[key][0],
            "elpd_loo_se": totals[key][1],
            "p_loo": float(np.sum(counts * p_i)),
            "elpd_diff": diff,
            "elpd_diff_se": diff_se,
            "max_pareto_k": float(np.max(k_i)),
            "n_customers": int(counts.sum()),
            "n_histories": len(histories),
        }
        if holdout:
            row.update(_holdout_accuracy(rfm, model, prob, seed, n_draws))
        rows.append(row)
    mixture, averaging = None, {}
    if average:
        mixture, averaging = _average(rfm, models, terms, counts, holdout, prob, seed, n_draws)
        for row in rows:
            row["stacking_weight"] = averaging["weights"][row["model"]]
    long = pd.DataFrame(rows).sort_values("elpd_loo", ascending=False, kind="stable")
    chosen, reason = choose_model(long)
    long["chosen"] = long["model"] == chosen
    long = long.reset_index(drop=True)
    spec = [c for c in SCHEMA["model_comparison"] if c.name in long.columns]
    table = pd.DataFrame({c.name: _cast(long[c.name], c.dtype) for c in spec})
    return ModelComparison(table=table, chosen=chosen, reason=reason, averaging=averaging,
                           mixture=mixture)  # fmt: skip


def _average(rfm, models, terms, counts, holdout, prob, seed, n_draws):
    """The stacking mixture of ``models`` and its ``averaging`` entry."""
    from clvbayes.models.mixture import MixturePurchaseModel
    from clvbayes.predict.averaging import weights_from_elpd

    elpd = np.column_stack([terms[k][0] for k in models])
    weights = weights_from_elpd(elpd, counts)
    mixture = MixturePurchaseModel(dict(models), weights)
    averaging: dict[str, Any] = {
        "method": "stacking",
        "weights": dict(zip(models, map(float, weights), strict=True)),
        "n_draws": {k: int(n) for k, n in mixture.n_per_component.items()},
        "mean_log_score": _mixture_log_score(elpd, counts, weights),
    }
    if holdout:
        averaging["holdout"] = _holdout_accuracy(rfm, mixture, prob, seed, n_draws)
    return mixture, averaging


def _mixture_log_score(elpd: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> float:
    """Mean over customers of log sum_k w_k exp(elpd_ik): the stacking objective (nats)."""
    keep = np.isfinite(elpd).all(axis=1)
    e, c = elpd[keep], counts[keep]
    top = e.max(axis=1)
    return float(np.sum(c * (np.log(np.exp(e - top[:, None]) @ weights) + top)) / c.sum())


def choose_model(table: pd.DataFrame) -> tuple[str, str]:
    """The model the main tables use, by :data:`CHOICE_RULE`, and the reason in words.

    Parameters
    ----------
    table : DataFrame
        With ``model``, ``model_name``, ``elpd_loo``, ``elpd_diff``, ``elpd_diff_se`` and
        ``max_pareto_k`` (as :func:`compare_purchase_models` builds it).

    Returns
    -------
    key, reason : str
    """
    t = table.set_index("model")
    best = str(t["elpd_loo"].idxmax())
    tied = [m for m in t.index if t.at[m, "elpd_diff"] <= TIE_SE * t.at[m, "elpd_diff_se"]]
    if best not in tied:  # a zero difference has a zero se: the best is always tied with itself
        tied.insert(0, best)
    rank = {m: i for i, m in enumerate(PREFERENCE)}
    chosen = min(tied, key=lambda m: (rank.get(m, len(rank)), list(t.index).index(m)))
    name = {m: str(t.at[m, "model_name"]) for m in t.index}

    def gap(m: str) -> str:
        return (
            f"{name[m]} ({t.at[m, 'elpd_diff']:,.1f} nats lower, se of the difference "
            f"{t.at[m, 'elpd_diff_se']:,.1f})"
        )

    def listing(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    lead = f"{name[best]} has the highest PSIS-LOO elpd ({t.at[best, 'elpd_loo']:,.1f} nats)"
    others = [m for m in t.index if m != best]
    if len(tied) == 1:
        runner = min(others, key=lambda m: t.at[m, "elpd_diff"])
        reason = (
            f"{lead}; the runner-up, {gap(runner)}, is more than {TIE_SE:g} se behind, so the "
            f"data favour {name[best]} clearly and the main tables use it."
        )
    else:
        ties = [m for m in tied if m != best]
        reason = (
            f"{lead}, but {listing([gap(m) for m in ties])} "
            f"{'is' if len(ties) == 1 else 'are'} within {TIE_SE:g} se of it, so the data do "
            f"not clearly tell {'these models' if len(tied) > 2 else 'the two'} apart. "
            f"{name[chosen]} is the first of them in the order of preference (BG/NBD, the "
            "default, then MBG/NBD, then Pareto/NBD), so the main tables use it."
        )
    shaky = [m for m in t.index if t.at[m, "max_pareto_k"] > 0.7]
    if shaky:
        reason += (
            " Caution: the LOO estimate of "
            + ", ".join(f"{name[m]} (max Pareto k {t.at[m, 'max_pareto_k']:.2f})" for m in shaky)
            + " is unreliable (Pareto k above 0.7); refit with --method nuts and more draws."
        )
    return chosen, reason


def comparison_markdown(entry: Mapping[str, Any]) -> list[str]:
    """The ``model_summary.md`` section of a ``model_summary.json`` ``model_comparison`` entry."""
    from clvbayes.report.summary import _md_table

    rows = pd.DataFrame(entry["models"])
    chosen = next((r["model_name"] for r in entry["models"] if r["model"] == entry["chosen"]),
                  entry["chosen"])  # fmt: skip
    lines = ["## Purchase-model comparison (`model_comparison.csv`)", ""]
    lines += [f"**The main tables use {chosen} (`{entry['chosen']}`).** {entry['reason']}", ""]
    lines += [f"Rule: {entry['rule']}", ""]
    loo = ["model_name", "chosen", "elpd_loo", "elpd_loo_se", "p_loo", "elpd_diff",
           "elpd_diff_se", "max_pareto_k", "n_histories"]  # fmt: skip
    lines += [_md_table(rows[[c for c in loo if c in rows.columns]].astype(object), "{:,.2f}")]
    hold = [c for c in rows.columns if c.startswith("holdout_")]
    avg = entry.get("model_averaging") or {}
    if hold:
        lines += ["", "Holdout period (not used for the choice):", ""]
        shown = rows[["model_name", *hold]]
        if avg.get("holdout"):
            mix = {"model_name": AVERAGED_NAME, **avg["holdout"]}
            shown = pd.concat([shown, pd.DataFrame([mix])[shown.columns]], ignore_index=True)
        shown = shown.rename(columns={c: c.removeprefix("holdout_purchases_") for c in hold})
        lines += [_md_table(shown.astype(object), "{:,.3f}")]
    if avg:
        lines += ["", *_averaging_markdown(rows, avg)]
    return lines


def _averaging_markdown(rows: pd.DataFrame, avg: Mapping[str, Any]) -> list[str]:
    """The model-averaging part of the comparison section."""
    from clvbayes.report.summary import _md_table

    weights = ", ".join(
        f"{r['model_name']} {r['stacking_weight']:.3f}" for _, r in rows.iterrows()
        if "stacking_weight" in rows.columns
    )  # fmt: skip
    lines = [
        "### Model average (stacking)",
        "",
        f"Stacking weights: {weights} -- the mixture of the models' leave-one-out predictive "
        "distributions that scores best on the customers' calibration histories (Yao, "
        "Vehtari, Simpson & Gelman 2018), mean log score "
        f"{avg.get('mean_log_score', float('nan')):.4f} nats per customer. The `averaged_*` "
        "columns of `customers` and `segments` are the predictions of this mixture: its "
        "posterior draws are the models' own, mixed in these proportions, so its intervals "
        "include the disagreement between the models. The unprefixed columns remain the "
        "chosen model's.",
    ]
    totals = [c for c in TOTAL_COLUMNS if c in rows.columns]
    if totals:
        shown = rows[["model_name", "stacking_weight", *totals]]
        if avg.get("totals"):
            mix = {"model_name": AVERAGED_NAME, "stacking_weight": "", **avg["totals"]}
            shown = pd.concat([shown, pd.DataFrame([mix])[shown.columns]], ignore_index=True)
        lines += ["", "Totals over the prediction horizon, whole customer base:", ""]
        lines += [_md_table(shown.astype(object), "{:,.2f}")]
    check = avg.get("holdout_check") or {}
    parts = []
    for q in ("purchases", "revenue"):
        c = check.get(q)
        if c:
            lo, hi = c["predicted_total_pi"]
            inside = "inside" if c["actual_total_in_pi"] else "OUTSIDE"
            parts.append(
                f"{q}: actual {c['actual_total']:,.0f}, predicted {c['predicted_total_mean']:,.0f} "
                f"({lo:,.0f} to {hi:,.0f}; the actual is {inside} the interval)"
            )
    if parts:
        lines += ["", "Holdout check of the model average: " + "; ".join(parts) + "."]
    return lines
