"""Benchmark: rolling-origin backtests of clvbayes on CDNOW (sample and master cohort).

How often do the models' 90 % intervals hold on real history, before and after model
averaging and after the opt-in calibration, and how long does the backtest take?  Each
dataset runs through the same path as ``clvbayes backtest`` (:func:`clvbayes.backtest.
backtest_job`: checks, reading, every window's summary, fits and predictions, the report
folder), in this process, timed from the first check to the written report.

Datasets (``--dataset``):

- ``cdnow_sample``: the bundled CDNOW 1/10 sample (2,357 customers, 1997-01-01 to 1998-06-30);
- ``cdnow_master``: the whole CDNOW cohort (23,570 customers, same dates).

The donations data (``clvbayes run --demo donations``) cannot be backtested: the bundled log
is the published calibration summary written out as transactions, so earlier calibration ends
would test made-up dates (``clvbayes backtest --demo donations`` refuses it and says so).

Settings: 4 windows of 13 weeks (calibration ends 1998-03-31, 1997-12-30, 1997-09-30,
1997-07-01), Laplace fits (1,000 draws), predictions from 1,000 draws, seed 0;
``--purchase-model compare`` (the default here) fits BG/NBD, MBG/NBD and Pareto/NBD in every
window, uses the one PSIS-LOO chooses ("model") and backtests their stacking average too
("averaged").

Usage::

    python benchmarks/backtest.py                                    # CDNOW sample, compare
    python benchmarks/backtest.py --dataset cdnow_master --purchase-model bgnbd
    python benchmarks/backtest.py --smoke --out /tmp/x               # 1 window, few draws

Writes ``backtest_<dataset>[_<purchase model>].md`` and ``..._totals.csv`` to ``--out``
(default ``benchmarks/results``; a temporary folder for ``--smoke``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEMOS = {"cdnow_sample": "cdnow", "cdnow_master": "cdnow-master"}


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f} %"


def _of(e: dict) -> str:
    """``k of n`` for a share entry (n/a without any: one window has no out-of-sample check)."""
    return "n/a" if not e["n"] else f"{round(e['share'] * e['n'])} of {e['n']}"


def run(dataset: str, purchase_model: str, windows: int, draws: int, out: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import clvbayes
    from clvbayes.backtest import FORECAST_NAMES, backtest_job, backtest_section

    report = Path(tempfile.mkdtemp(prefix="clvbayes-backtest-bench-")) / "report"
    t0 = time.perf_counter()
    result, _ = backtest_job(
        demo=DEMOS[dataset], output=str(report), windows=windows, holdout=13,
        purchase_model=purchase_model, method="laplace", draws=draws, prediction_draws=draws,
        seed=0, quiet=True, plots=False,
        command=f"python benchmarks/backtest.py --dataset {dataset} --purchase-model "
        f"{purchase_model}",
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    s = result.summary
    name = f"backtest_{dataset}" + ("" if purchase_model == "compare" else f"_{purchase_model}")
    lines = [
        f"# Backtest: {dataset.replace('_', ' ')} ({purchase_model})",
        "",
        f"`python benchmarks/backtest.py --dataset {dataset} --purchase-model {purchase_model}`"
        f" on {platform.node() or 'this machine'} ({os.cpu_count()} cores, Python "
        f"{platform.python_version()}, clvbayes {clvbayes.__version__}), "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
        "",
        f"**Time: {seconds:.0f} s** for {len(result.windows)} windows of 13 weeks, from the "
        "first check to the written report folder (per window: "
        + ", ".join(f"{x:.0f} s" for x in result.windows["seconds"])
        + "), Laplace fits and predictions from "
        f"{draws:,} draws, on a 2-core machine shared with other work.",
        "",
        "## Coverage of the 90 % predictive intervals of totals",
        "",
        "Totals: the whole base, the named segments and the CLV deciles of each window, for "
        "purchases and revenue (per-draw sums, not sums of intervals). Nominal: 90 %. "
        "'calibrated' is the opt-in widening, its coverage measured out of sample (each "
        "window against the factor of the other windows).",
        "",
        "| forecast | quantity | whole base in PI | all totals in PI (se) | in CI | "
        "calibration factor | calibrated, out of sample: all / whole base | customers in PI "
        "| mean PIT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fc, per_q in s["totals"].items():
        for q, e in per_q.items():
            wb, at, ci = e["whole_base_in_pi"], e["all_totals_in_pi"], e["all_totals_in_ci"]
            lo, lw = e["all_totals_in_calibrated_pi_lowo"], e["whole_base_in_calibrated_pi_lowo"]
            k = result.calibration["factors"][fc][q]
            c = s["customers"][fc][q]
            lines.append(
                f"| {FORECAST_NAMES.get(fc, fc)} | {q} | {_of(wb)} | {_pct(at['share'])} of "
                f"{at['n']} ({_pct(at['se'])}) | {_pct(ci['share'])} | {k:.2f}x | "
                f"{_pct(lo['share'])} / {_of(lw)} | {_pct(c['pi_coverage'])} | "
                f"{c['mean_pit']:.3f} |"
            )
    lines += ["", "## Whole base per window", "",
              "| window | calibration end | forecast | quantity | actual | mean | 90 % PI | "
              "calibrated PI | relative error |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    t = result.totals
    ends = dict(zip(result.windows["window"], result.windows["calibration_end"], strict=True))
    for _, r in t[t["grouping"] == "all"].iterrows():
        lines.append(
            f"| {r['window']} | {ends[r['window']]} | {r['forecast']} | {r['quantity']} | "
            f"{r['actual']:,.0f} | {r['predicted_mean']:,.0f} | {r['pi_lower']:,.0f} to "
            f"{r['pi_upper']:,.0f} | {r['calibrated_pi_lower']:,.0f} to "
            f"{r['calibrated_pi_upper']:,.0f} | {100 * r['relative_error']:+.1f} % |"
        )
    if len(result.models):
        m = result.models
        lines += ["", "## Which family PSIS-LOO chose per window", "",
                  "| window | model | elpd_loo | elpd_diff (se) | chosen | stacking weight | "
                  "holdout MAE | best MAE |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for _, r in m.iterrows():
            lines.append(
                f"| {r['window']} | {r['model_name']} | {r['elpd_loo']:,.1f} | "
                f"{r['elpd_diff']:.1f} ({r['elpd_diff_se']:.1f}) | {'yes' if r['chosen'] else ''} "
                f"| {r.get('stacking_weight', float('nan')):.2f} | {r['holdout_purchases_mae']:.3f}"
                f" | {'yes' if r['best_on_holdout_mae'] else ''} |"
            )
    lines += ["", "## The report's section", "", backtest_section(result, level=3)]
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{name}.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result.totals.to_csv(out / f"{name}_totals.csv", index=False)
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=(*DEMOS, "all"), default="cdnow_sample")
    p.add_argument("--purchase-model", default="compare",
                   choices=("compare", "bgnbd", "mbgnbd", "pnbd"))  # fmt: skip
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="1 window, 100 draws, a temp folder")
    a = p.parse_args(argv)
    if a.smoke:
        a.windows, a.draws = 1, 100
        a.out = a.out or Path(tempfile.mkdtemp(prefix="clvbayes-bench-"))
    out = a.out or RESULTS
    for d in DEMOS if a.dataset == "all" else [a.dataset]:
        print(run(d, a.purchase_model, a.windows, a.draws, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
