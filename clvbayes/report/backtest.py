"""The backtest report folder: the tables of :class:`clvbayes.backtest.BacktestResult`, a summary, plots.

==============================  ===============================================================
file                            content
==============================  ===============================================================
windows.csv                     one row per window run: calibration end, holdout end, lengths,
                                customers, purchase model, seconds
totals.csv                      predicted (mean, ci, pi, calibrated pi) vs actual purchases and
                                revenue of the whole base, segments, CLV deciles, ``--by``
                                groups, per window; in_ci / in_pi, standardised error z
customers.csv                   per window and quantity: per-customer PI coverage, mean PIT
pit_histogram.csv               per window and quantity: randomised-PIT histogram (10 bins)
model_choice.csv                with ``--purchase-model compare``: LOO and holdout per family
baselines.csv                   rules of thumb (and the model's mean) vs actual, per group
calibration.json                the calibration factors and the method, in words
backtest_summary.json / .md     settings, overall coverage, notes (windows not run and why)
backtest_totals.png             whole-base totals per window: intervals and actual
backtest_pit.png                PIT histograms over every window
.clvbayes-manifest.json         name, size and SHA-256 of every file above
==============================  ===============================================================

Written like every clvbayes report (:func:`clvbayes.report.lock.publish_staged`): under the
folder's lock, in a staging folder swapped into place, replacing only a folder that holds
nothing but an earlier clvbayes report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.report.folder import (
    _check_space,  # noqa: F401 - publish_staged checks the space
    _output_path,
    manifest_problems,
    staged_writing,
)
from clvbayes.report.lock import publish_staged

__all__ = ["BACKTEST_TABLES", "validate_backtest_report", "write_backtest_report"]

REPORT_KIND = "backtest"
#: Table name -> attribute of the result.
BACKTEST_TABLES = {
    "windows": "windows",
    "totals": "totals",
    "customers": "customers",
    "pit_histogram": "pit",
    "model_choice": "models",
    "baselines": "baselines",
}
PLOTS = ("backtest_totals.png", "backtest_pit.png")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return str(value)
    return value


def summary_markdown(result: Any) -> str:
    """``backtest_summary.md``: the section of :func:`clvbayes.backtest.backtest_section` and
    the per-window whole-base table."""
    from clvbayes.backtest import backtest_section

    s = result.settings
    lines = ["# clvbayes backtest", ""]
    lines.append(f"Input: {s.get('input')}; data {s.get('first_transaction')} to "
                 f"{s.get('observation_end')}; command: `{s.get('command')}`.")  # fmt: skip
    lines.append("")
    lines.append(backtest_section(result))
    t = result.totals
    whole = t[t["grouping"] == "all"]
    lines += ["## Whole base, per window", "",
              "| window | calibration end | forecast | quantity | actual | predicted mean | "
              f"{s.get('prob', 0.9):.0%} PI | in PI | calibrated PI | in it (out of sample) |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    ends = dict(zip(result.windows["window"], result.windows["calibration_end"], strict=True))
    for _, r in whole.iterrows():
        lowo = r["in_calibrated_pi_lowo"]
        lines.append(
            f"| {r['window']} | {ends[r['window']]} | {r['forecast']} | {r['quantity']} | "
            f"{r['actual']:,.0f} | "
            f"{r['predicted_mean']:,.0f} | {r['pi_lower']:,.0f} to {r['pi_upper']:,.0f} | "
            f"{'yes' if r['in_pi'] else 'no'} | {r['calibrated_pi_lower']:,.0f} to "
            f"{r['calibrated_pi_upper']:,.0f} | "
            f"{'n/a' if lowo is None or lowo != lowo else ('yes' if lowo else 'no')} |"
        )
    lines.append("")
    if len(result.models):
        m = result.models
        lines += ["## Which family PSIS-LOO chose, and how it did on the holdout", "",
                  "| window | model | elpd_loo | chosen | stacking weight | holdout total (actual) "
                  "| predicted | PI | MAE | best MAE |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for _, r in m.iterrows():
            lines.append(
                f"| {r['window']} | {r['model_name']} | {r['elpd_loo']:,.1f} | "
                f"{'yes' if r['chosen'] else ''} | {r.get('stacking_weight', float('nan')):.3f} | "
                f"{r['holdout_purchases_actual_total']:,} | "
                f"{r['holdout_purchases_predicted_total']:,.0f} | "
                f"{r['holdout_purchases_total_pi_lower']:,.0f} to "
                f"{r['holdout_purchases_total_pi_upper']:,.0f} | "
                f"{r['holdout_purchases_mae']:.3f} | {'yes' if r['best_on_holdout_mae'] else ''} |"
            )
        lines.append("")
    lines += ["## Method", "", result.calibration.get("method", ""), "",
              "Totals: per-draw sums over customers (clvbayes.predict.score_customers), never "
              "sums of intervals; `z = (actual - mean) / sd`, sd the normal-equivalent spread of "
              "the predictive interval. The group totals of one window share its parameter "
              "draws, so they are not independent; the binomial se treats them as if they were "
              "(a lower bound).", ""]  # fmt: skip
    return "\n".join(lines)


def _plot_totals(fig, result) -> None:
    t = result.totals[(result.totals["grouping"] == "all") & (result.totals["forecast"] == "model")]
    axes = fig.subplots(1, 2)
    for ax, q in zip(axes, ("purchases", "revenue"), strict=True):
        p = t[t["quantity"] == q].sort_values("window", ascending=False)
        x = np.arange(len(p))
        mean = p["predicted_mean"].to_numpy(float)
        ax.errorbar(x - 0.1, mean, yerr=[mean - p["pi_lower"], p["pi_upper"] - mean], fmt="o",
                    capsize=4, label="model 90% PI")  # fmt: skip
        ax.errorbar(x + 0.1, mean, yerr=[mean - p["calibrated_pi_lower"],
                                         p["calibrated_pi_upper"] - mean], fmt="none",
                    capsize=4, color="grey", label="calibrated PI")  # fmt: skip
        ax.plot(x, p["actual"], "kx", markersize=9, label="actual")
        ends = dict(zip(result.windows["window"], result.windows["calibration_end"], strict=True))
        ax.set_xticks(x, [ends[w] for w in p["window"]], rotation=30, fontsize=8)
        ax.set_title(f"whole-base holdout {q}")
        ax.set_xlabel("calibration end")
    axes[0].legend(fontsize=8)


def _plot_pit(fig, result) -> None:
    pit = result.pit[result.pit["forecast"] == "model"]
    pit = pit.groupby(["quantity", "bin_lower"], as_index=False)["count"].sum()
    axes = fig.subplots(1, 2)
    for ax, q in zip(axes, ("purchases", "revenue"), strict=True):
        p = pit[pit["quantity"] == q]
        share = p["count"] / p["count"].sum()
        ax.bar(p["bin_lower"], share, width=0.1, align="edge", edgecolor="white")
        ax.axhline(0.1, color="k", linestyle="--", linewidth=1, label="calibrated")
        ax.set_title(f"randomised PIT of customers' holdout {q}")
        ax.set_xlabel("PIT")
        ax.set_ylabel("share of customers")
    axes[0].legend(fontsize=8)


def write_backtest_report(
    out_dir: str | os.PathLike[str],
    result: Any,
    *,
    protect: Iterable[str | os.PathLike[str]] = (),
    plots: bool = True,
) -> Path:
    """Write the backtest report folder (see the module docstring); returns it (absolute).

    Raises
    ------
    ReportWriteError
        The folder cannot or must not be written (e.g. it holds files clvbayes did not write);
        any previous report there is unchanged.
    """
    from clvbayes import __version__

    out = _output_path(out_dir)
    tables = {name: getattr(result, attr) for name, attr in BACKTEST_TABLES.items()}
    need = sum(int(df.memory_usage(deep=True).sum()) * 3 for df in tables.values()) + (8 << 20)

    def fill(stage) -> None:
        writing = staged_writing(stage)
        tmp = stage.path
        written = []
        with writing(*[f"{n}.csv" for n in tables]):
            for name, df in tables.items():
                df.to_csv(tmp / f"{name}.csv", index=False)
        with writing("calibration.json"):
            (tmp / "calibration.json").write_text(
                json.dumps(_jsonable(result.calibration), indent=2, allow_nan=False) + "\n",
                encoding="utf-8",
            )
        if plots:
            from matplotlib.figure import Figure

            with writing(*PLOTS):
                for name, draw in zip(PLOTS, (_plot_totals, _plot_pit), strict=True):
                    fig = Figure(figsize=(11, 4), dpi=100)
                    try:
                        draw(fig, result)
                    except (ValueError, TypeError, KeyError):
                        continue
                    fig.tight_layout()
                    fig.savefig(tmp / name)
                    written.append(name)
        summary = {
            "clvbayes_report": 1,
            "report_kind": REPORT_KIND,
            "clvbayes_version": __version__,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": {"tables": [f"{n}.csv" for n in tables], "plots": written},
            "settings": result.settings,
            "summary": result.summary,
            "calibration_factors": result.calibration.get("factors"),
            "notes": result.notes,
            "seconds": result.seconds,
        }
        with writing("backtest_summary.json", "backtest_summary.md"):
            (tmp / "backtest_summary.json").write_text(
                json.dumps(_jsonable(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8"
            )
            (tmp / "backtest_summary.md").write_text(summary_markdown(result), encoding="utf-8")

    return publish_staged(out, protect, need, fill, validate_backtest_report)


def validate_backtest_report(out_dir: str | os.PathLike[str]) -> None:
    """Every file the summary lists is there and unchanged since clvbayes wrote it.

    Raises
    ------
    clvbayes.report.ReportError
        Naming every problem found.
    """
    from clvbayes.report import ReportError

    folder = Path(out_dir)
    try:
        summary = json.loads((folder / "backtest_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ReportError(f"{folder}: cannot read backtest_summary.json ({err}).") from err
    problems = []
    if summary.get("report_kind") != REPORT_KIND:
        problems.append(f"report_kind {summary.get('report_kind')!r}, expected {REPORT_KIND!r}")
    files = summary.get("files") or {}
    expected = ["backtest_summary.md", "calibration.json", *(files.get("tables") or []),
                *(files.get("plots") or [])]  # fmt: skip
    problems += [f"missing file {f}" for f in expected if not (folder / f).is_file()]
    problems += manifest_problems(folder, expected)
    if problems:
        raise ReportError(f"{folder}: " + "; ".join(problems))
