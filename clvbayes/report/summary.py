"""``model_summary.json`` / ``.md``: data provenance, parameter tables, settings, holdout check."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.comparison import comparison_markdown
from clvbayes.report.schema import _is_point_fit


def file_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size (bytes) and SHA-256 of an input file (read in 1 MiB blocks)."""
    p = Path(path)
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"path": str(p.resolve()), "size_bytes": p.stat().st_size, "sha256": h.hexdigest()}


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: NaN/inf become null, numpy scalars Python numbers, dates ISO text."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


_INTERVAL_KIND = {
    "nuts": "posterior credible interval (NUTS draws)",
    "laplace": "approximate credible interval (draws from the Laplace approximation at the mode)",
}


def _model_summary(name: str, model: Any, prob: float) -> dict[str, Any]:
    table = model.summary(prob)
    table = table.rename(
        columns={f"lower_{prob:g}": "lower", f"upper_{prob:g}": "upper"}
    ).reset_index(names="parameter")
    info = dict(getattr(model, "fit_info_", {}))
    method = info.get("method")
    n_draws = getattr(model, "n_draws_", None)
    point = _is_point_fit(method) or n_draws == 1
    if point:
        # one parameter value: its "interval" would have zero width; show none
        table = table.drop(columns=[c for c in ("lower", "upper") if c in table.columns])
        interval = None
        sd_kind = (
            "Laplace approximation at the mode (from the curvature of the log posterior), "
            "not from posterior draws"
            if "laplace_sd" in info
            else None
        )
    else:
        interval = _INTERVAL_KIND.get(method, "credible interval from the posterior draws")
        sd_kind = "posterior standard deviation of the draws"
    return {
        "class": type(model).__name__,
        "file": f"{name}.nc",
        "time_unit": getattr(model, "time_unit_", None),
        "method": method,
        "interval_prob": None if point else prob,
        "interval": interval,
        "sd": sd_kind,
        "note": (
            f"{method or 'point'} fit: a point estimate of the parameters, so no credible "
            "interval is shown"
            if point
            else None
        ),
        "parameters": table.to_dict(orient="records"),
        **_structure_summary(model, prob),
        "divergences": info.get("divergences"),
        "fit": info,
        "priors": {k: p.to_dict() for k, p in model.priors.items()},
    }


def _structure_summary(model: Any, prob: float) -> dict[str, Any]:
    """Covariate coding, raw vs pooled segments and weak parameters of a segmented model."""
    from clvbayes.models.segmented import SegmentedModel

    if not isinstance(model, SegmentedModel):
        return {}
    out: dict[str, Any] = {
        "covariates": {
            "by_process": {p: c for p, c in model.covariates.items() if c},
            "terms": [
                {"term": t.label, "column": t.column,
                 "coding": "numeric, standardised internally; coefficient per original unit"
                 if t.level is None else
                 f"level against the reference {model._references_[t.column]!r}"}
                for t in model.terms_
            ],
            "convention": "theta_i = theta_0 exp(sign gamma' z_i): a positive coefficient raises "
            "the rate of its process; base parameters at the reference (numeric covariates at 0)",
        },
    }  # fmt: skip
    if model.pooled_by:
        try:
            table = model.segment_comparison(prob=prob).reset_index()
            out["pooling"] = {"pooled_by": model.pooled_by,
                              "segments": table.to_dict(orient="records")}  # fmt: skip
        except Exception as err:
            out["pooling"] = {"pooled_by": model.pooled_by, "error": str(err)}
    ident = model.identification(prob)
    weak = ident.index[ident["weak"]].tolist()
    out["weakly_identified"] = {
        k: {"interval_factor": float(ident.loc[k, "interval_factor"]),
            "contraction": float(ident.loc[k, "contraction"])}
        for k in weak
    }  # fmt: skip
    return out


def _structure_markdown(m: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    cov = m.get("covariates")
    if not cov:
        return lines
    if cov["terms"]:
        lines += ["", "Covariates (" + cov["convention"] + "):", ""]
        lines += [f"- `{t['term']}`: {t['coding']}" for t in cov["terms"]]
    pooling = m.get("pooling")
    if pooling:
        lines += ["", f"Partial pooling by `{pooling['pooled_by']}`: rate ratio of each segment "
                  "(1 = the base as a whole), raw (segment as a fixed covariate, MAP) vs pooled "
                  "(geometric mean and interval of the posterior):", ""]  # fmt: skip
        if "error" in pooling:
            lines.append(f"- raw fit failed: {pooling['error']}")
        else:
            lines.append(_md_table(pd.DataFrame(pooling["segments"]).astype(object)))
    weak = m.get("weakly_identified")
    if weak:
        lines += ["", "Weakly identified (90% interval spans more than a factor 10 and the "
                  "prior still matters; predictions that depend on them lean on the prior): "
                  + ", ".join(f"`{k}` (x{v['interval_factor']:.0f})" for k, v in weak.items())]  # fmt: skip
    return lines


def _md_table(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if not np.isfinite(v) else floatfmt.format(v)
        return "" if v is None else str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def _md_items(mapping: Mapping[str, Any], indent: int = 0) -> list[str]:
    """Nested bullet list of a mapping (empty values skipped)."""
    lines = []
    pad = "  " * indent
    for k, v in mapping.items():
        if v is None or (isinstance(v, Mapping | list) and not v):
            continue
        if isinstance(v, Mapping):
            lines.append(f"{pad}- **{k}**:")
            lines += _md_items(v, indent + 1)
        else:
            if isinstance(v, float):
                v = f"{v:.6g}"
            elif isinstance(v, list):
                v = ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)
            lines.append(f"{pad}- **{k}**: {v}")
    return lines


def _summary_markdown(summary: Mapping[str, Any], segments: pd.DataFrame) -> str:
    lines = ["# clvbayes report: model summary", ""]
    if summary.get("command"):
        lines += [f"Command: `{summary['command']}`", ""]
    lines += ["## Data", "", *_md_items(summary.get("data", {}))]
    lines += ["", "## Prediction settings", "", *_md_items(summary.get("settings", {}))]
    comparison = summary.get("model_comparison")
    if comparison:
        lines += ["", *comparison_markdown(comparison)]
    for name, m in summary.get("models", {}).items():
        used = " -- used for the tables" if comparison and comparison["chosen"] == name else ""
        lines += ["", f"## Model `{name}` ({m['class']}, file `{m['file']}`){used}", ""]
        lines.append(_md_table(pd.DataFrame(m["parameters"]).astype(object)))
        lines += _structure_markdown(m)
        if m.get("note"):
            lines += ["", f"- {m['note']}; sd: {m.get('sd') or 'not available'}"]
        elif m.get("interval"):
            lines += ["", f"- lower/upper: {100 * m['interval_prob']:g} % {m['interval']}"]
        fit = m.get("fit", {})
        lines += ["", f"- method: {fit.get('method')}, seed: {fit.get('seed')}, "
                  f"divergences: {m.get('divergences')}, customers fitted: "
                  f"{fit.get('n_customers_fitted')} of {fit.get('n_customers')}"]  # fmt: skip
        lines.append(
            "- priors: " + ", ".join(f"{k} ~ {v['dist']}" for k, v in m.get("priors", {}).items())
        )
    if summary.get("backtest"):  # clvbayes run --backtest K (clvbayes.backtest)
        lines += ["", summary["backtest"].rstrip()]
    holdout = summary.get("holdout")
    if holdout:
        lines += ["", "## Holdout check (predicted vs actual, holdout period)", ""]
        lines += _md_items(holdout)
    if summary.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in summary["warnings"]]
    all_row = segments[segments["grouping"] == "all"]
    if len(all_row):
        lines += ["", "## Whole customer base", ""]
        shown = ("clv_total", "purchases_total")
        if "clv_total_mean" not in segments.columns:  # no spend model: customers still active
            shown = ("alive_total", "purchases_total")
        cols = ["n_customers"] + [c for c in segments.columns if c.startswith(shown)]
        cols = [c for c in cols if not all_row[c].isna().all()]  # no empty interval columns
        if _is_point_fit((summary.get("settings") or {}).get("method")):
            lines += ["MAP fit: totals without parameter uncertainty; the predictive interval "
                      "(pi) shows the customers' own randomness only.", ""]  # fmt: skip
        lines.append(_md_table(all_row[cols].astype(object)))
    return "\n".join(lines) + "\n"
