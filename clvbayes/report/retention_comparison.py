"""sBG against BdW on the same subscribers: PSIS-LOO, log-likelihood, and the choice.

``clvbayes subscriptions`` fits both retention models on each fit group (all subscribers,
or each plan or cohort with ``--fit-by``) and :func:`compare_retention_models` puts them
side by side, one row per (fit group, model), plus overall rows when there are several
groups:

* **PSIS-LOO** (Vehtari, Gelman & Gabry 2017) of each subscriber's history (periods,
  churned): :meth:`clvbayes.models.CLVModel.loo_terms`, once per distinct history and
  weighted by its subscribers.  A history whose likelihood is the same under every draw
  (e.g. an active subscriber in her first period, ``log S(0) = 0``) has its exact LOO term
  and Pareto k 0 (no importance weights are involved).  With partial pooling
  (``clvbayes subscriptions --pool-by``) the terms are the pooled model's, split by group.  ``elpd_diff`` is the BdW's elpd minus the sBG's with the standard error
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


def _group_terms(model: Any, rows: np.ndarray | None = None):
    """``(counts, (elpd_i, p_i, k_i))`` of the distinct histories ``model`` was fitted on.

    :meth:`clvbayes.models.CLVModel.loo_terms`: PSIS-LOO per distinct history, weighted by
    its subscribers; a history whose likelihood no draw changes (an active subscriber in her
    first period, ``log S(0) = 0``) has its exact term and Pareto k 0.  ``rows`` selects
    histories (one group of a pooled fit); terms are None for a point fit.
    """
    data = model.data_
    weights = np.asarray(model._likelihood_weights(data), dtype=float)
    keep = weights > 0 if rows is None else (weights > 0) & rows
    terms = None
    if model.n_draws_ >= 10:
        _, elpd_i, p_i, k_i = model.loo_terms()
        terms = (elpd_i[keep], p_i[keep], k_i[keep])
    return weights[keep], terms, keep


def _histories_of(model: Any, keep: np.ndarray) -> np.ndarray:
    data = model.data_
    return np.stack([np.asarray(data[c], dtype=float)[keep] for c in model.history_columns])


def _loglik_at_mean(model: Any, data: Any = None, rows: np.ndarray | None = None) -> float:
    """Log-likelihood at the posterior mean (the mode for MAP) on ``data`` (default the
    training data; a subscribers table is compressed first); ``rows`` selects histories."""
    if data is None:
        data = model.data_
    elif isinstance(data, pd.DataFrame):
        data = model._compress(data)
    params = {k: np.asarray(float(np.mean(v))) for k, v in model.draws().items()}
    ll = np.asarray(model._loglik(params, data), dtype=float)
    w = np.asarray(model._likelihood_weights(data), dtype=float)
    if rows is not None:
        ll, w = ll[rows], w[rows]
    return float(np.sum(w * ll))


def _row(group: str, key: str, model: Any, terms, counts, base_terms, loglik: float,
         seconds: float) -> dict[str, Any]:  # fmt: skip
    draws = model.draws()
    n_draws = int(next(iter(draws.values())).size)
    row: dict[str, Any] = {
        "fit_group": group, "model": key, "model_name": MODEL_NAMES.get(key, key),
        "n_subscribers": int(counts.sum()), "n_histories": int(counts.size),
        "loglik": loglik,
        "alpha_mean": float(np.mean(draws["alpha"])), "beta_mean": float(np.mean(draws["beta"])),
        "c_mean": float(np.mean(draws["c"])) if "c" in draws else np.nan,
        "fit_seconds": seconds,
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


def compare_retention_models(
    fits: Mapping[str, Mapping[str, Any]], pooled: Mapping[str, Any] | None = None
) -> RetentionComparison:
    """Compare the sBG and BdW fitted on each fit group, and choose one per group.

    Parameters
    ----------
    fits : mapping of str to mapping of str to fitted model
        ``{fit group: {"sbg": model, "bdw": model}}``, both models of a group fitted on the
        same subscribers (their training data, ``model.data_``, are compared).
    pooled : mapping of str to fitted pooled model, optional
        ``{"sbg": PooledShiftedBetaGeometricModel, "bdw": PooledBetaDiscreteWeibullModel}``
        fitted on every group at once; ``fits`` then holds their group models
        (``group_model(g)``, which carry no data) and each group's LOO terms and
        log-likelihood are the pooled model's on that group's histories (pointwise terms of
        one joint fit, so a group's sum is its share of the pooled elpd).

    Returns
    -------
    RetentionComparison
    """
    from clvbayes.report.schema import _cast
    from clvbayes.report.subscriptions import SUBSCRIPTION_SCHEMA

    rows, chosen, reasons = [], {}, {}
    parts: dict[str, list] = {"sbg": [], "bdw": []}
    point = False
    notes = []
    if pooled is not None:
        notes.append(
            f"Partial pooling across {pooled['sbg'].pooled_by}: each model was fitted once on "
            "every group (a hierarchical prior on the groups' parameters); a group's rows hold "
            "the pooled fit's LOO terms and log-likelihood on that group's subscribers, and "
            "fit_seconds is the pooled fit's on the 'all' rows."
        )
    for group, models in fits.items():
        if set(models) != {"sbg", "bdw"}:
            raise ValueError(f"fit group {group!r}: need 'sbg' and 'bdw', got {sorted(models)}.")
        n_draws = min(int(next(iter(m.draws().values())).size) for m in models.values())
        point = point or n_draws < 10
        terms, loglik, seconds, counts, hist = {}, {}, {}, {}, {}
        for k, m in models.items():
            if pooled is None:
                counts[k], terms[k], keep = _group_terms(m)
                hist[k] = _histories_of(m, keep)
                loglik[k] = _loglik_at_mean(m)
                seconds[k] = float(getattr(m, "fit_info_", {}).get("fit_seconds", np.nan))
            else:
                pm = pooled[k]
                rows_g = np.asarray(pm.data_["group"]) == pm.groups_.index(str(group))
                counts[k], terms[k], keep = _group_terms(pm, rows_g)
                hist[k] = _histories_of(pm, keep)
                loglik[k] = _loglik_at_mean(pm, rows=rows_g)
                seconds[k] = np.nan
        if not (
            np.array_equal(hist["sbg"], hist["bdw"])
            and np.array_equal(counts["sbg"], counts["bdw"])
        ):
            raise ValueError(f"fit group {group!r}: the sBG and the BdW were fitted on different "
                             "subscribers; compare models fitted on the same table.")  # fmt: skip
        group_rows = {k: _row(group, k, m, terms[k], counts[k], terms["sbg"], loglik[k],
                              seconds[k]) for k, m in models.items()}  # fmt: skip
        chosen[group], reasons[group] = _choose(group, group_rows, n_draws < 10)
        for k in ("sbg", "bdw"):
            group_rows[k]["chosen"] = k == chosen[group]
            rows.append(group_rows[k])
            parts[k].append((terms[k], counts[k], group_rows[k]))
    if len(fits) > 1:
        for k in ("sbg", "bdw"):
            part = parts[k]
            counts = np.concatenate([c for _, c, _ in part])
            seconds = (float(pooled[k].fit_info_.get("fit_seconds", np.nan)) if pooled is not None
                       else float(sum(r["fit_seconds"] for _, _, r in part)))  # fmt: skip
            row: dict[str, Any] = {
                "fit_group": "all", "model": k, "model_name": MODEL_NAMES[k],
                "chosen": all(ch == k for ch in chosen.values()),
                "n_subscribers": int(counts.sum()), "n_histories": int(counts.size),
                "loglik": float(sum(r["loglik"] for _, _, r in part)),
                "alpha_mean": np.nan, "beta_mean": np.nan, "c_mean": np.nan,
                "fit_seconds": seconds,
            }  # fmt: skip
            if point:
                row.update(elpd_loo=np.nan, elpd_loo_se=np.nan, p_loo=np.nan,
                           max_pareto_k=np.nan, elpd_diff=np.nan, elpd_diff_se=np.nan)  # fmt: skip
            else:
                elpd_i = np.concatenate([t[0] for t, _, _ in part])
                base = np.concatenate([t[0] for t, _, _ in parts["sbg"]])
                total, se = _weighted_total(elpd_i, counts)
                diff, diff_se = _weighted_total(elpd_i - base, counts)
                ks = np.concatenate([t[2] for t, _, _ in part])
                ks = ks[np.isfinite(ks)]
                row.update(
                    elpd_loo=total, elpd_loo_se=se,
                    p_loo=float(sum(np.sum(c * t[1]) for t, c, _ in part)),
                    max_pareto_k=float(ks.max()) if ks.size else np.nan,
                    elpd_diff=diff, elpd_diff_se=diff_se,
                )  # fmt: skip
            rows.append(row)
    long = pd.DataFrame(rows)
    spec = [c for c in SUBSCRIPTION_SCHEMA["model_comparison"] if c.name in long.columns]
    table = pd.DataFrame({c.name: _cast(long[c.name], c.dtype) for c in spec})
    return RetentionComparison(table=table, chosen=chosen, reasons=reasons, notes=notes)
