"""sBG against BdW on the same subscribers: PSIS-LOO, log-likelihood, and the choice.

``clvbayes subscriptions`` fits both retention models on each fit group (all subscribers,
or each plan or cohort with ``--fit-by``) and :func:`compare_retention_models` puts them
side by side, one row per (fit group, model), plus overall rows when there are several
groups:

* **PSIS-LOO** (Vehtari, Gelman & Gabry 2017) of each subscriber's history (periods,
  churned), computed once per distinct history and weighted by its subscribers, as
  :func:`clvbayes.report.comparison.pointwise_loo` does for the purchase models.  A history
  whose likelihood is the same under every draw (e.g. an active subscriber in her first
  period, ``log S(0) = 0``) has an exact LOO term; its Pareto k is undefined and left out of
  ``max_pareto_k``.  ``elpd_diff`` is the BdW's elpd minus the sBG's with the standard error
  of the paired per-history differences.
* the **log-likelihood** at the posterior mean (at the mode for MAP), comparable with the
  published maximum-likelihood values (FH2007: -1611.16 and -1680.27 on years 1-7).

The choice (:data:`CHOICE_RULE`) is made per fit group and uses LOO only (with MAP, which
gives no draws, a likelihood-ratio test), so the holdout figures stay an independent check.
The BdW contains the sBG (``c = 1``), so it always fits at least as well; the rule asks the
extra parameter to earn its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.comparison import _weighted_total

__all__ = [
    "CHOICE_RULE",
    "LR_CRITICAL",
    "MODEL_NAMES",
    "TIE_SE",
    "RetentionComparison",
    "compare_retention_models",
    "pointwise_retention_loo",
]

#: Display names of the retention models by key.
MODEL_NAMES = {"sbg": "sBG", "bdw": "BdW"}
#: BdW is used only when its elpd exceeds the sBG's by more than this many standard errors.
TIE_SE = 2.0
#: With MAP: 95 % quantile of chi-square with 1 degree of freedom (BdW has one more parameter).
LR_CRITICAL = 3.841458820694124
#: The rule, as the report states it.
CHOICE_RULE = (
    "For each fit group the forecasts use the sBG (Fader & Hardie 2007), unless the BdW "
    "(Fader, Hardie, Liu, Davin & Steenburgh 2018) predicts the subscribers' histories clearly "
    f"better: its PSIS-LOO elpd exceeds the sBG's by more than {TIE_SE:g} standard errors of "
    f"the paired difference (elpd_diff > {TIE_SE:g} x elpd_diff_se). The BdW contains the sBG "
    "(c = 1) and always fits at least as well, so the simpler model is kept when the data do "
    "not tell them apart. With --method map (a point estimate, no posterior draws for LOO) a "
    f"likelihood-ratio test decides instead: BdW when 2 x (loglik_BdW - loglik_sBG) > "
    f"{LR_CRITICAL:.2f} (chi-square, 1 degree of freedom, 5 %). The holdout figures do not "
    "enter the choice, so they remain an independent check of it."
)


@dataclass(frozen=True)
class RetentionComparison:
    """sBG vs BdW per fit group.

    Attributes
    ----------
    table : DataFrame
        One row per (fit group, model), and ``fit_group = "all"`` rows over every group when
        there are several; columns of ``SUBSCRIPTION_SCHEMA["model_comparison"]`` (without
        the holdout ones).
    chosen : dict of str to str
        Model key (``sbg`` or ``bdw``) the forecasts of each fit group use.
    reasons : dict of str to str
        Why, per fit group, with the figures.
    rule : str
    """

    table: pd.DataFrame
    chosen: dict[str, str]
    reasons: dict[str, str]
    rule: str = CHOICE_RULE
    notes: list[str] = field(default_factory=list)

    def to_summary(self) -> dict[str, Any]:
        """The ``model_comparison`` entry of ``model_summary.json``."""
        return {"chosen": dict(self.chosen), "reasons": dict(self.reasons), "rule": self.rule,
                "notes": list(self.notes)}  # fmt: skip


def _histories(model: Any) -> tuple[pd.DataFrame, np.ndarray]:
    data = model.data_
    weights = np.asarray(model._likelihood_weights(data), dtype=float)
    keep = weights > 0
    hist = pd.DataFrame({c: np.asarray(data[c])[keep] for c in model.history_columns})
    return hist, weights[keep]


def pointwise_retention_loo(model: Any, histories: pd.DataFrame):
    """PSIS-LOO terms per history row: ``(elpd_i, p_i, k_i)``; ``k_i`` NaN where exact.

    The computation of :meth:`clvbayes.models.CLVModel.loo_terms` (Pareto-smoothed importance
    weights with the relative efficiency of the draws), except for rows whose log-likelihood
    is the same under every posterior draw (e.g. an active subscriber in her first period,
    ``log S(0) = 0``): their LOO term is exactly ``log p(y_i)`` and they have no Pareto k
    (ArviZ 1.x refuses to smooth a constant tail).
    """
    from scipy.special import logsumexp

    from clvbayes import compat

    n = int(model.n_draws_)
    if n < 10:
        raise ValueError("LOO needs posterior draws: fit with method='nuts' or 'laplace'.")
    ess = compat.ess(model.posterior_, model.param_names, "mean")
    reff = float(np.mean(list(ess.values()))) / n
    ll = np.asarray(model.log_likelihood(histories, per="customer").values, dtype=float)
    ll = ll.reshape(n, len(histories)).T  # (rows, draws)
    constant = np.ptp(ll, axis=1) <= 1e-12 * np.maximum(1.0, np.abs(ll[:, 0]))
    elpd, p, k = ll[:, 0].copy(), np.zeros(len(ll)), np.full(len(ll), np.nan)
    vary = ~constant
    if vary.any():
        log_w, k_vary = compat.psis_log_weights(-ll[vary], reff)
        elpd[vary] = logsumexp(ll[vary] + log_w, axis=1)
        p[vary] = logsumexp(ll[vary], axis=1) - np.log(n) - elpd[vary]
        k[vary] = np.asarray(k_vary, dtype=float)
    return elpd, p, k


def _loglik_at_mean(model: Any) -> float:
    data = model.data_
    params = {k: np.asarray(float(np.mean(v))) for k, v in model.draws().items()}
    ll = np.asarray(model._loglik(params, data), dtype=float)
    return float(np.sum(np.asarray(model._likelihood_weights(data), dtype=float) * ll))


def _row(group: str, key: str, model: Any, terms, counts, base_terms) -> dict[str, Any]:
    draws = model.draws()
    n_draws = int(next(iter(draws.values())).size)
    row: dict[str, Any] = {
        "fit_group": group, "model": key, "model_name": MODEL_NAMES.get(key, key),
        "n_subscribers": int(counts.sum()), "n_histories": int(counts.size),
        "loglik": _loglik_at_mean(model),
        "alpha_mean": float(np.mean(draws["alpha"])), "beta_mean": float(np.mean(draws["beta"])),
        "c_mean": float(np.mean(draws["c"])) if "c" in draws else np.nan,
        "fit_seconds": float(getattr(model, "fit_info_", {}).get("fit_seconds", np.nan)),
    }  # fmt: skip
    if terms is None or n_draws < 10:
        row.update(elpd_loo=np.nan, elpd_loo_se=np.nan, p_loo=np.nan, max_pareto_k=np.nan,
                   elpd_diff=np.nan, elpd_diff_se=np.nan)  # fmt: skip
        return row
    elpd_i, p_i, k_i = terms
    total, se = _weighted_total(elpd_i, counts)
    diff, diff_se = _weighted_total(elpd_i - base_terms[0], counts)
    finite_k = k_i[np.isfinite(k_i)]
    row.update(
        elpd_loo=total, elpd_loo_se=se, p_loo=float(np.sum(counts * p_i)),
        max_pareto_k=float(finite_k.max()) if finite_k.size else np.nan,
        elpd_diff=diff, elpd_diff_se=diff_se,
    )  # fmt: skip
    return row


def _choose(group: str, rows: dict[str, dict[str, Any]], point: bool) -> tuple[str, str]:
    s, b = rows["sbg"], rows["bdw"]
    c_text = f"BdW's c = {b['c_mean']:.3g}"
    if point:
        lr = 2.0 * (b["loglik"] - s["loglik"])
        if lr > LR_CRITICAL:
            return "bdw", (
                f"MAP fit, so no LOO: the likelihood-ratio statistic 2 x ({b['loglik']:,.2f} - "
                f"({s['loglik']:,.2f})) = {lr:,.2f} exceeds {LR_CRITICAL:.2f} ({c_text}), so the "
                "duration dependence is supported and the BdW is used."
            )
        return "sbg", (
            f"MAP fit, so no LOO: the likelihood-ratio statistic 2 x ({b['loglik']:,.2f} - "
            f"({s['loglik']:,.2f})) = {lr:,.2f} is at most {LR_CRITICAL:.2f} ({c_text}), so the "
            "simpler sBG is kept."
        )
    diff, se = b["elpd_diff"], b["elpd_diff_se"]
    figures = (f"BdW elpd {b['elpd_loo']:,.1f} vs sBG {s['elpd_loo']:,.1f} nats: difference "
               f"{diff:+,.2f}, se {se:,.2f}; {c_text}")  # fmt: skip
    if diff > TIE_SE * se and diff > 0:
        reason = (
            f"{figures}. The BdW predicts clearly better (more than {TIE_SE:g} se), so it is used."
        )
        key = "bdw"
    else:
        reason = (f"{figures}. The difference is within {TIE_SE:g} se (or favours the sBG), so the "
                  "simpler sBG is kept.")  # fmt: skip
        key = "sbg"
    shaky = [r["model_name"] for r in (s, b) if np.isfinite(r["max_pareto_k"])
             and r["max_pareto_k"] > 0.7]  # fmt: skip
    if shaky:
        reason += (f" Caution: the LOO estimate of {' and '.join(shaky)} is unreliable (Pareto k "
                   "above 0.7); refit with --method nuts.")  # fmt: skip
    return key, reason


def compare_retention_models(fits: Mapping[str, Mapping[str, Any]]) -> RetentionComparison:
    """Compare the sBG and BdW fitted on each fit group, and choose one per group.

    Parameters
    ----------
    fits : mapping of str to mapping of str to fitted model
        ``{fit group: {"sbg": model, "bdw": model}}``, both models of a group fitted on the
        same subscribers (their training data, ``model.data_``, are compared).

    Returns
    -------
    RetentionComparison
    """
    from clvbayes.report.schema import _cast
    from clvbayes.report.subscriptions import SUBSCRIPTION_SCHEMA

    rows, chosen, reasons = [], {}, {}
    pooled: dict[str, list] = {"sbg": [], "bdw": []}
    point = False
    for group, models in fits.items():
        if set(models) != {"sbg", "bdw"}:
            raise ValueError(f"fit group {group!r}: need 'sbg' and 'bdw', got {sorted(models)}.")
        hist, counts = _histories(models["sbg"])
        n_draws = min(int(next(iter(m.draws().values())).size) for m in models.values())
        point = point or n_draws < 10
        terms = {k: (pointwise_retention_loo(m, hist) if n_draws >= 10 else None)
                 for k, m in models.items()}  # fmt: skip
        group_rows = {k: _row(group, k, m, terms[k], counts, terms["sbg"])
                      for k, m in models.items()}  # fmt: skip
        chosen[group], reasons[group] = _choose(group, group_rows, n_draws < 10)
        for k in ("sbg", "bdw"):
            group_rows[k]["chosen"] = k == chosen[group]
            rows.append(group_rows[k])
            pooled[k].append((terms[k], counts, group_rows[k]))
    if len(fits) > 1:
        for k in ("sbg", "bdw"):
            parts = pooled[k]
            counts = np.concatenate([c for _, c, _ in parts])
            row: dict[str, Any] = {
                "fit_group": "all", "model": k, "model_name": MODEL_NAMES[k],
                "chosen": all(ch == k for ch in chosen.values()),
                "n_subscribers": int(counts.sum()), "n_histories": int(counts.size),
                "loglik": float(sum(r["loglik"] for _, _, r in parts)),
                "alpha_mean": np.nan, "beta_mean": np.nan, "c_mean": np.nan,
                "fit_seconds": float(sum(r["fit_seconds"] for _, _, r in parts)),
            }  # fmt: skip
            if point:
                row.update(elpd_loo=np.nan, elpd_loo_se=np.nan, p_loo=np.nan,
                           max_pareto_k=np.nan, elpd_diff=np.nan, elpd_diff_se=np.nan)  # fmt: skip
            else:
                elpd_i = np.concatenate([t[0] for t, _, _ in parts])
                base = np.concatenate([t[0] for t, _, _ in pooled["sbg"]])
                total, se = _weighted_total(elpd_i, counts)
                diff, diff_se = _weighted_total(elpd_i - base, counts)
                ks = np.concatenate([t[2] for t, _, _ in parts])
                ks = ks[np.isfinite(ks)]
                row.update(
                    elpd_loo=total, elpd_loo_se=se,
                    p_loo=float(sum(np.sum(c * t[1]) for t, c, _ in parts)),
                    max_pareto_k=float(ks.max()) if ks.size else np.nan,
                    elpd_diff=diff, elpd_diff_se=diff_se,
                )  # fmt: skip
            rows.append(row)
    long = pd.DataFrame(rows)
    spec = [c for c in SUBSCRIPTION_SCHEMA["model_comparison"] if c.name in long.columns]
    table = pd.DataFrame({c.name: _cast(long[c.name], c.dtype) for c in spec})
    return RetentionComparison(table=table, chosen=chosen, reasons=reasons)
