"""Benchmark: speed and memory of clvbayes against pymc-marketing and lifetimes on CDNOW.

In one run, on one machine, on the same customer table (the CDNOW sample summarised in weeks
to 1998-06-30, written once to a CSV file that every process reads) and with the same NUTS
settings (4 chains x 1000 draws after 1000 tuning steps by default, chains run in
``min(chains, CPUs)`` parallel processes by both PyMC-based libraries: clvbayes's default,
passed explicitly to pymc-marketing, whose PyMC default would be half the CPUs), each
measurement runs in a fresh Python process:

(i)   MAP fit (lifetimes: maximum likelihood) of BG/NBD, first call in the process and the
      median of repeated calls, and of Gamma-Gamma;
(ii)  NUTS fit of BG/NBD and Gamma-Gamma, compilation included, with the smallest bulk ESS
      over the model's parameters and ESS per second of fitting (clvbayes: once per NUTS
      back-end it supports that is installed: pymc, nutpie, numpyro);
(iii) per-customer predictions over 52 weeks from the NUTS posteriors: P(alive), expected
      purchases, CLV (10% a year discount), with 90% intervals;
and the total pipeline: a fresh process that reads the table, fits both models with NUTS and
predicts, timed from process start to exit (interpreter start and imports included).
Stages (ii) and (iii) are timed inside the pipeline process (predictions need the posterior);
every stage has its own wall time and peak memory (summed RSS of the process and its
sampler workers).

Peers (the ``bench`` extra: ``pip install clvbayes[bench]``) are optional and run only with
``--peers``, under ``--peer-python`` (default: this interpreter), so they can live in their own
virtual environment and never change the versions clvbayes runs with.  A peer that does not
install or import is recorded with the reason instead of a number.

Usage::

    python benchmarks/speed.py --smoke                        # tiny, clvbayes only (CI)
    python benchmarks/speed.py --peers --peer-python /work/peers-venv/bin/python

Writes ``speed.md``, ``speed.csv`` and ``speed.png`` to ``--out`` (default
``benchmarks/results``; a temporary folder for ``--smoke``) and prints the tables and the
ratios against the targets of issue 7.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    ChildResult,
    Meter,
    info_block,
    load_average,
    machine_info,
    markdown_table,
    resolve_out,
    run_child,
    write_csv,
    write_result,
)

SCRIPT = Path(__file__).resolve()
BACKENDS = ("pymc", "nutpie", "numpyro")
HORIZON_WEEKS = 52
ANNUAL_DISCOUNT = 0.10
PROB = 0.9
BG_PARAMS = ("r", "alpha", "a", "b")
GG_PARAMS = ("p", "q", "gamma")
PEERS = {"pymc-marketing": "pymc_marketing", "lifetimes": "lifetimes"}
PROFILE_FILTER = (
    r"clvbayes/|arviz/__init__|xarray/__init__|io_dict|scipy/optimize/_minimize|pymc/__init__"
)
"""Profile lines kept: clvbayes itself, the heavy imports it triggers, the optimiser."""
TARGETS = {
    "pipeline": 10.0,  # pymc-marketing pipeline time / clvbayes pipeline time >= 10
    "ess": 5.0,  # clvbayes ESS/s / pymc-marketing ESS/s >= 5
    "map": 3.0,  # clvbayes MAP time / lifetimes MLE time <= 3
}


# ==========================================================================================
# child processes: one measurement each
# ==========================================================================================
def _read_table(path: str):
    import pandas as pd

    df = pd.read_csv(path, dtype={"customer_id": str})
    return df


def _monthly_rate(annual: float) -> float:
    return (1.0 + annual) ** (1.0 / 12.0) - 1.0


def _interval_table(draws_by_name: dict[str, Any]):
    """Mean and equal-tailed 90% interval over (chain, draw) of per-customer draws (xarray)."""
    import pandas as pd

    cols = {}
    lo, hi = (1 - PROB) / 2, (1 + PROB) / 2
    for name, da in draws_by_name.items():
        stacked = da.stack(sample=("chain", "draw")).transpose("customer_id", "sample").values
        cols[f"{name}_mean"] = stacked.mean(axis=1)
        q = _quantiles(stacked, lo, hi)
        cols[f"{name}_lower"], cols[f"{name}_upper"] = q
    return pd.DataFrame(cols)


def _quantiles(values, lo: float, hi: float):
    import numpy as np

    q = np.quantile(values, [lo, hi], axis=1)
    return q[0], q[1]


def _min_ess(posterior, names) -> float:
    from clvbayes import compat

    return min(compat.ess(posterior, names, "bulk").values())


def _repeat(fn, n: int) -> float:
    """Median seconds of ``n`` calls of ``fn``."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) if times else math.nan


def child_clvbayes(spec: dict, meter: Meter) -> dict:
    sys.path.insert(0, str(ROOT))
    import warnings

    with meter.stage("import"):
        from clvbayes.models import BetaGeoModel, GammaGammaModel, default_nuts_sampler
        from clvbayes.predict import score_customers

        if spec["task"] != "map":  # NUTS needs PyMC (MAP does not): import it here, as peers do
            import pymc  # noqa: F401
    warnings.simplefilter("ignore")
    df = _read_table(spec["data"]).set_index("customer_id")
    df.attrs["time_unit"] = "weeks"
    out: dict[str, Any] = {"version": _version("clvbayes")}
    if spec["task"] == "map":
        with meter.stage("map_bgnbd_first"):
            bg = BetaGeoModel().fit(df, method="map")
        out["map_bgnbd_warm_s"] = _repeat(
            lambda: BetaGeoModel().fit(df, method="map"), spec["repeats"]
        )
        with meter.stage("map_gg_first"):
            GammaGammaModel().fit(df, method="map")
        out["map_gg_warm_s"] = _repeat(
            lambda: GammaGammaModel().fit(df, method="map"), spec["repeats"]
        )
        out["bgnbd_params"] = {k: float(v.ravel()[0]) for k, v in bg.draws().items()}
        return out
    backend = spec.get("backend") or default_nuts_sampler()
    kw = dict(
        draws=spec["draws"], tune=spec["tune"], chains=spec["chains"], seed=spec["seed"],
        nuts_sampler=backend, progressbar=False,
    )  # fmt: skip
    with meter.stage("nuts_bgnbd"):
        bg = BetaGeoModel().fit(df, method="nuts", **kw)
    with meter.stage("nuts_gg"):
        gg = GammaGammaModel().fit(df, method="nuts", **kw)
    out.update(
        backend=backend,
        ess_bgnbd=_min_ess(bg.posterior_, BG_PARAMS),
        ess_gg=_min_ess(gg.posterior_, GG_PARAMS),
        divergences=bg.fit_info_["divergences"] + gg.fit_info_["divergences"],
        max_r_hat=max(bg.fit_info_["max_r_hat"], gg.fit_info_["max_r_hat"]),
    )
    if spec["task"] == "pipeline":
        with meter.stage("predict"):
            scores = score_customers(
                df, bg, gg, horizon=HORIZON_WEEKS, annual_discount_rate=ANNUAL_DISCOUNT,
                prob=PROB, seed=spec["seed"],
            )  # fmt: skip
        c = scores.customers
        out.update(n_customers=len(c), clv_total=float(c["clv_mean"].sum()))
        out["note"] = "predictions: credible and predictive intervals (simulated outcomes)"
    return out


def child_pymc_marketing(spec: dict, meter: Meter) -> dict:
    import warnings

    with meter.stage("import"):
        from pymc_marketing import clv
    warnings.simplefilter("ignore")
    df = _read_table(spec["data"])
    repeat = df[df["frequency"] > 0].reset_index(drop=True)
    bg_cols = ["customer_id", "frequency", "recency", "T"]
    out: dict[str, Any] = {"version": _version("pymc-marketing")}
    if spec["task"] == "map":

        def fit_bg():
            return clv.BetaGeoModel().fit(data=df[bg_cols], method="map", progressbar=False)

        def fit_gg():
            return clv.GammaGammaModel().fit(data=repeat, method="map", progressbar=False)

        with meter.stage("map_bgnbd_first"):
            fit_bg()
        out["map_bgnbd_warm_s"] = _repeat(fit_bg, spec["repeats"])
        with meter.stage("map_gg_first"):
            fit_gg()
        out["map_gg_warm_s"] = _repeat(fit_gg, spec["repeats"])
        return out
    kw = dict(
        method="mcmc", draws=spec["draws"], tune=spec["tune"], chains=spec["chains"],
        random_seed=spec["seed"], progressbar=False,
        cores=min(spec["chains"], os.cpu_count() or 1),  # as clvbayes; PyMC's default is CPUs / 2
    )  # fmt: skip
    bg, gg = clv.BetaGeoModel(), clv.GammaGammaModel()
    with meter.stage("nuts_bgnbd"):
        bg.fit(data=df[bg_cols], **kw)
    with meter.stage("nuts_gg"):
        gg.fit(data=repeat, **kw)
    out.update(
        backend="pymc",
        ess_bgnbd=_min_ess(bg.idata.posterior, BG_PARAMS),
        ess_gg=_min_ess(gg.idata.posterior, ("p", "q", "v")),  # its name for gamma: v
    )
    if spec["task"] == "pipeline":
        with meter.stage("predict"):
            data = df.copy()
            draws = {
                "p_alive": bg.expected_probability_alive(data=data[bg_cols]),
                "purchases": bg.expected_purchases(data=data[bg_cols], future_t=HORIZON_WEEKS),
                "clv": gg.expected_customer_lifetime_value(
                    transaction_model=bg,
                    data=data,
                    future_t=12,
                    discount_rate=_monthly_rate(ANNUAL_DISCOUNT),
                    time_unit="W",
                ),
            }
            table = _interval_table(draws)
        out.update(n_customers=len(table), clv_total=float(table["clv_mean"].sum()))
        out["note"] = "predictions: credible intervals of the expectations only"
    return out


def child_lifetimes(spec: dict, meter: Meter) -> dict:
    import warnings

    with meter.stage("import"):
        from lifetimes import BetaGeoFitter, GammaGammaFitter
    warnings.simplefilter("ignore")
    df = _read_table(spec["data"])
    repeat = df[df["frequency"] > 0]
    out: dict[str, Any] = {"version": _version("lifetimes")}

    def fit_bg():
        return BetaGeoFitter().fit(df["frequency"], df["recency"], df["T"])

    def fit_gg():
        return GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])

    with meter.stage("map_bgnbd_first"):
        bg = fit_bg()
    if spec["task"] == "map":
        out["map_bgnbd_warm_s"] = _repeat(fit_bg, spec["repeats"])
    with meter.stage("map_gg_first"):
        gg = fit_gg()
    if spec["task"] == "map":
        out["map_gg_warm_s"] = _repeat(fit_gg, spec["repeats"])
        out["bgnbd_params"] = {k: float(v) for k, v in bg.params_.items()}
        return out
    with meter.stage("predict"):
        x, t_x, T = df["frequency"], df["recency"], df["T"]
        p_alive = bg.conditional_probability_alive(x, t_x, T)
        purchases = bg.conditional_expected_number_of_purchases_up_to_time(HORIZON_WEEKS, x, t_x, T)
        value = gg.customer_lifetime_value(
            bg, x, t_x, T, df["monetary_value"], time=12, freq="W",
            discount_rate=_monthly_rate(ANNUAL_DISCOUNT),
        )  # fmt: skip
    out.update(
        n_customers=len(value),
        clv_total=float(value.sum()),
        p_alive_mean=float(p_alive.mean()),
        purchases_total=float(purchases.sum()),
        note="maximum likelihood: point predictions, no intervals",
    )
    return out


CHILDREN = {
    "clvbayes": child_clvbayes,
    "pymc-marketing": child_pymc_marketing,
    "lifetimes": child_lifetimes,
}


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def run_as_child(spec: dict) -> int:
    """Entry point of a measurement process: run one task, report stages and results."""
    profile = {spec["profile_stage"]: spec["profile"]} if spec.get("profile") else None
    meter = Meter(profile=profile, profile_filter=PROFILE_FILTER)
    out = CHILDREN[spec["tool"]](spec, meter)
    out["stages"] = meter.stages
    out["peak_rss_mb"] = meter.peak_rss_mb
    meter.close()
    write_result(out)
    return 0


# ==========================================================================================
# parent: prepare data, run children, tabulate
# ==========================================================================================
def prepare_data(path: Path, dataset: str, n_customers: int | None, seed: int) -> int:
    """Summarise CDNOW in weeks (whole period) and write the shared customer table as CSV."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from clvbayes.data import summarize_transactions
    from clvbayes.datasets import load_cdnow_master_transactions, load_cdnow_transactions

    tx = (
        load_cdnow_transactions() if dataset == "cdnow_sample" else load_cdnow_master_transactions()
    )
    if n_customers is not None:
        ids = np.sort(tx["customer_id"].unique())
        keep = np.random.default_rng(seed).choice(
            ids, size=min(n_customers, ids.size), replace=False
        )
        tx = tx[tx["customer_id"].isin(keep)]
    rfm = summarize_transactions(tx, monetary_value_col="amount", time_unit="weeks")
    table = rfm[["frequency", "recency", "T", "monetary_value"]].reset_index()
    table.columns = ["customer_id", "frequency", "recency", "T", "monetary_value"]
    table.to_csv(path, index=False)
    return len(table)


def installed_backends() -> list[str]:
    """NUTS back-ends clvbayes can use in this environment (pymc always)."""
    import importlib.util

    return ["pymc"] + [b for b in BACKENDS[1:] if importlib.util.find_spec(b) is not None]


def check_peer(python: str, tool: str) -> tuple[bool, str]:
    """Whether ``tool`` imports under ``python``; (False, reason) if not."""
    import subprocess

    module = PEERS[tool]
    code = f"import {module}; from importlib import metadata; print(metadata.version({tool!r}))"
    try:
        res = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{python}: {exc}"
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        return False, f"does not import under {python}: {lines[-1] if lines else res.returncode}"
    return True, res.stdout.strip()


def run_measurement(python: str, spec: dict, timeout: float) -> ChildResult:
    env = dict(os.environ)
    if spec["tool"] == "clvbayes":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    label = f"{spec['tool']} {spec['task']}" + (
        f" ({spec['backend']})" if spec.get("backend") else ""
    )
    print(f"running {label} ...", file=sys.stderr, flush=True)
    res = run_child([python, str(SCRIPT), "--child", json.dumps(spec)], timeout=timeout, env=env)
    status = f"{res.wall_seconds:.1f} s" if res.ok else f"FAILED: {res.error()}"
    print(f"  {label}: {status}", file=sys.stderr, flush=True)
    return res


def _stage(res: ChildResult | None, name: str) -> dict[str, float]:
    if res is None or not res.ok:
        return {}
    return res.payload.get("stages", {}).get(name, {})


def _ratio(num: float | None, den: float | None) -> float:
    if num is None or den is None or not (den > 0) or math.isnan(num):
        return math.nan
    return num / den


def stage_rows(results: dict[tuple[str, str, str], ChildResult], reasons: dict[str, str]):
    """Rows of the main table: one per (tool, stage)."""
    rows = []

    def add(tool, stage, res, seconds=None, peak=None, ess=None, note=""):
        failed = res is not None and not res.ok
        rows.append({
            "tool": tool, "stage": stage,
            "seconds": None if failed else seconds,
            "peak RSS MiB": None if failed else peak,
            "min ESS bulk": None if failed else ess,
            "ESS per s": None if failed or ess is None or not seconds else ess / seconds,
            "note": (f"failed: {res.error()}" if failed else note),
        })  # fmt: skip

    for tool in ("clvbayes", "pymc-marketing", "lifetimes"):
        if tool in reasons:
            add(tool, "all", None, note=f"not measured: {reasons[tool]}")
            continue
        m = results.get((tool, "map", ""))
        p = results.get((tool, "pipeline", ""))
        if m is not None:
            fit = "MAP"  # lifetimes: maximum likelihood (its only fit), same row to compare
            mle = "maximum likelihood; " if tool == "lifetimes" else ""
            st = _stage(m, "map_bgnbd_first")
            add(tool, f"(i) BG/NBD {fit}, first call", m, st.get("seconds"),
                st.get("peak_rss_mb"), note=f"{mle}fresh process, imports excluded")  # fmt: skip
            add(tool, f"(i) BG/NBD {fit}, repeated call", m,
                m.payload.get("map_bgnbd_warm_s"), note=f"{mle}median of repeats")  # fmt: skip
            st = _stage(m, "map_gg_first")
            add(tool, f"(i) Gamma-Gamma {fit}, first call", m, st.get("seconds"),
                st.get("peak_rss_mb"), note=mle.rstrip("; "))  # fmt: skip
        if p is None:
            continue
        if tool != "lifetimes":
            backend = p.payload.get("backend", "")
            for key, label in (("bgnbd", "BG/NBD"), ("gg", "Gamma-Gamma")):
                st = _stage(p, f"nuts_{key}")
                add(tool, f"(ii) {label} NUTS incl. compile", p, st.get("seconds"),
                    st.get("peak_rss_mb"), p.payload.get(f"ess_{key}"),
                    note=f"back-end {backend}")  # fmt: skip
        st = _stage(p, "predict")
        add(tool, f"(iii) predictions + CLV, {HORIZON_WEEKS} weeks", p, st.get("seconds"),
            st.get("peak_rss_mb"), note=p.payload.get("note", ""))  # fmt: skip
        what = "MLE fits" if tool == "lifetimes" else "NUTS fits"
        add(tool, "pipeline total (fresh process)", p, p.wall_seconds, p.peak_rss_mb,
            note=f"interpreter start, imports, read table, {what}, predictions; "
            f"imports {_stage(p, 'import').get('seconds', math.nan):.1f} s")  # fmt: skip
    return rows


def backend_rows(results, default: str) -> list[dict[str, Any]]:
    """One row per clvbayes NUTS back-end: fit seconds, ESS and ESS per second."""
    rows = []
    for (tool, task, backend), res in results.items():
        if tool != "clvbayes" or task not in ("nuts", "pipeline"):
            continue
        backend = backend or res.payload.get("backend", "")
        row: dict[str, Any] = {"back-end": backend, "default": backend == default}
        if not res.ok:
            row["note"] = f"failed: {res.error()}"
            rows.append(row)
            continue
        for key, label in (("bgnbd", "BG/NBD"), ("gg", "GG")):
            sec = _stage(res, f"nuts_{key}").get("seconds")
            ess = res.payload.get(f"ess_{key}")
            row[f"{label} s"] = sec
            row[f"{label} min ESS"] = ess
            row[f"{label} ESS/s"] = _ratio(ess, sec)
        total = row["BG/NBD s"] + row["GG s"]
        row["ESS/s both"] = _ratio(min(row["BG/NBD min ESS"], row["GG min ESS"]), total)
        row["divergences"] = res.payload.get("divergences")
        row["max r_hat"] = res.payload.get("max_r_hat")
        row["note"] = "" if task == "nuts" else "measured in the pipeline process"
        rows.append(row)
    return sorted(rows, key=lambda r: -(r.get("ESS/s both") or -1))


def _ok(res: ChildResult | None) -> bool:
    return res is not None and res.ok


def _ess_per_s(res: ChildResult, key: str) -> float:
    return _ratio(res.payload.get(f"ess_{key}"), _stage(res, f"nuts_{key}").get("seconds"))


def _inner_seconds(res: ChildResult) -> float:
    """Fits + predictions inside the pipeline process (no interpreter start, no imports)."""
    return sum(_stage(res, s).get("seconds", 0.0) for s in ("nuts_bgnbd", "nuts_gg", "predict"))


def target_rows(results, backends: list[dict]) -> list[dict[str, Any]]:
    """Ratios against the targets of issue 7 (``met`` None: not measurable)."""
    rows: list[dict[str, Any]] = []

    def add(target: str, value: float, goal: float, higher_better: bool, detail: str) -> None:
        met = None if math.isnan(value) else (value >= goal if higher_better else value <= goal)
        sign = "≥" if higher_better else "≤"
        rows.append(
            {
                "target": target,
                "ratio": value,
                "goal": f"{sign} {goal:g}",
                "met": met,
                "detail": detail,
            }
        )

    cb_p = results.get(("clvbayes", "pipeline", ""))
    pm_p = results.get(("pymc-marketing", "pipeline", ""))
    if _ok(cb_p) and _ok(pm_p):
        pm_s, cb_s = pm_p.wall_seconds, cb_p.wall_seconds
        add(
            "pipeline: pymc-marketing time / clvbayes time", _ratio(pm_s, cb_s),
            TARGETS["pipeline"], True, f"{pm_s:.1f} s vs {cb_s:.1f} s, whole fresh processes",
        )  # fmt: skip
        pm_s, cb_s = _inner_seconds(pm_p), _inner_seconds(cb_p)
        add(
            "pipeline without interpreter start and imports", _ratio(pm_s, cb_s),
            TARGETS["pipeline"], True, f"{pm_s:.1f} s vs {cb_s:.1f} s (fits + predictions)",
        )  # fmt: skip
        for key, label in (("bgnbd", "BG/NBD"), ("gg", "Gamma-Gamma")):
            e_cb, e_pm = _ess_per_s(cb_p, key), _ess_per_s(pm_p, key)
            add(
                f"ESS per second, {label}: clvbayes / pymc-marketing", _ratio(e_cb, e_pm),
                TARGETS["ess"], True,
                f"{e_cb:.1f} vs {e_pm:.1f} ESS/s (min bulk ESS / fit seconds incl. compile)",
            )  # fmt: skip
    else:
        rows.append({"target": "pipeline, ESS/s vs pymc-marketing", "detail": _why_missing(pm_p)})
    cb_m = results.get(("clvbayes", "map", ""))
    lt_m = results.get(("lifetimes", "map", ""))
    if _ok(cb_m) and _ok(lt_m):
        cb_s = _stage(cb_m, "map_bgnbd_first").get("seconds")
        lt_s = _stage(lt_m, "map_bgnbd_first").get("seconds")
        add(
            "BG/NBD MAP vs lifetimes MLE, first call", _ratio(cb_s, lt_s), TARGETS["map"], False,
            f"{cb_s:.3f} s vs {lt_s:.3f} s (first fit in a fresh process, imports excluded)",
        )  # fmt: skip
        cb_s, lt_s = cb_m.payload.get("map_bgnbd_warm_s"), lt_m.payload.get("map_bgnbd_warm_s")
        add(
            "BG/NBD MAP vs lifetimes MLE, repeated call", _ratio(cb_s, lt_s), TARGETS["map"],
            False, f"{cb_s:.3f} s vs {lt_s:.3f} s (median of repeated fits in one process)",
        )  # fmt: skip
    else:
        rows.append({"target": "MAP vs lifetimes MLE", "detail": _why_missing(lt_m)})
    measured = [b for b in backends if not math.isnan(b.get("ESS/s both", math.nan))]
    if measured:
        best = max(measured, key=lambda b: b["ESS/s both"])
        default = next((b for b in measured if b["default"]), None)
        rows.append(
            {
                "target": "default NUTS back-end is the fastest by ESS/s (compile included)",
                "ratio": _ratio(best["ESS/s both"], default["ESS/s both"]) if default else math.nan,
                "goal": "= 1",
                "met": default is best,
                "detail": f"default {default['back-end'] if default else '?'}, fastest "
                f"{best['back-end']}; {len(measured)} back-end(s) measured; ratio = fastest / default",
            }
        )
    return rows


def _why_missing(res: ChildResult | None) -> str:
    if res is None:
        return "not measured (run with --peers)"
    return f"peer run failed: {res.error()}"


def closing_notes(results, targets, profile_text: str | None) -> list[str]:
    """What dominates the time where a target is missed."""
    notes = []
    for t in targets:
        if t.get("met") is False:
            notes.append(
                f"- Missed: {t['target']}: ratio {t['ratio']:.2f} (goal {t['goal']}); {t['detail']}."
            )
    for tool in ("clvbayes", "pymc-marketing"):
        p = results.get((tool, "pipeline", ""))
        if p is None or not p.ok:
            continue
        parts = ", ".join(
            f"{name} {_stage(p, name).get('seconds', math.nan):.1f} s"
            for name in ("import", "nuts_bgnbd", "nuts_gg", "predict")
        )
        notes.append(
            f"- {tool} pipeline {p.wall_seconds:.1f} s: {parts} (rest: interpreter start, reading the table)."
        )
    if profile_text:
        notes.append(
            "- Profile of the first BG/NBD MAP fit in a fresh clvbayes process (cProfile, "
            "cumulative seconds; clvbayes, the imports it triggers and the optimiser):\n"
        )
        notes.append("```\n" + profile_text + "\n```")
    return notes


def _profile_summary(path: Path, n: int = 12) -> str:
    lines = path.read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")), 0)
    text = "\n".join(lines[start : start + n + 1]).replace(str(ROOT) + os.sep, "")
    return re.sub(r"\S*site-packages/", "", text)


def plot(rows: list[dict], path: Path) -> Path | None:
    """Horizontal bars: seconds per stage and tool (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [r for r in rows if r.get("seconds")]
    if not data:
        return None
    stages = list(dict.fromkeys(r["stage"] for r in data))
    tools = list(dict.fromkeys(r["tool"] for r in data))
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * len(stages) * len(tools) / 1.5))
    height = 0.8 / len(tools)
    for j, tool in enumerate(tools):
        ys, xs = [], []
        for i, stage in enumerate(stages):
            v = next(
                (r["seconds"] for r in data if r["tool"] == tool and r["stage"] == stage), None
            )
            if v:
                ys.append(i + j * height)
                xs.append(v)
        ax.barh(ys, xs, height=height, label=tool)
    ax.set_yticks([i + height * (len(tools) - 1) / 2 for i in range(len(stages))], stages)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log scale; lower is better)")
    ax.legend(frameon=False)
    ax.set_title("clvbayes vs peers on CDNOW: time per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny run for CI: 200 customers, 1 chain x 20 draws, default back-end only")  # fmt: skip
    ap.add_argument(
        "--peers", action="store_true", help="also measure pymc-marketing and lifetimes"
    )
    ap.add_argument("--peer-python", default=sys.executable,
                    help="interpreter with the peers installed (default: this one)")  # fmt: skip
    ap.add_argument("--dataset", default="cdnow_sample", choices=["cdnow_sample", "cdnow_master"])
    ap.add_argument("--draws", type=int, default=None, help="NUTS draws per chain (default 1000)")
    ap.add_argument("--tune", type=int, default=None, help="NUTS tuning steps (default 1000)")
    ap.add_argument("--chains", type=int, default=None, help="NUTS chains (default 4)")
    ap.add_argument("--backends", nargs="*", default=None,
                    help=f"clvbayes NUTS back-ends to compare (default: installed of {BACKENDS})")  # fmt: skip
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_as_child(json.loads(args.child))

    sys.path.insert(0, str(ROOT))
    from clvbayes.models import default_nuts_sampler

    out = resolve_out(args.out, args.smoke)
    info = machine_info(["clvbayes", "numpy", "pymc", "pytensor", "nutpie", "numpyro", "jax"])
    draws = args.draws or (20 if args.smoke else 1000)
    tune = args.tune or (20 if args.smoke else 1000)
    chains = args.chains or (1 if args.smoke else 4)
    default = default_nuts_sampler()
    backends = args.backends if args.backends is not None else (
        [] if args.smoke else installed_backends()
    )  # fmt: skip
    results: dict[tuple[str, str, str], ChildResult] = {}
    reasons: dict[str, str] = {}
    peer_versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="clvbayes-speed-") as tmp:
        data = Path(tmp) / "customers.csv"
        n = prepare_data(data, args.dataset, 200 if args.smoke else None, args.seed)
        base = dict(data=str(data), draws=draws, tune=tune, chains=chains, seed=args.seed,
                    repeats=2 if args.smoke else 5)  # fmt: skip
        plan: list[tuple[str, str, dict]] = [
            (sys.executable, "clvbayes", {**base, "tool": "clvbayes", "task": "map"}),
            (sys.executable, "clvbayes", {**base, "tool": "clvbayes", "task": "pipeline"}),
        ]
        for b in backends:
            if b != default:
                plan.append((sys.executable, "clvbayes",
                             {**base, "tool": "clvbayes", "task": "nuts", "backend": b}))  # fmt: skip
        if args.peers:
            for tool in ("lifetimes", "pymc-marketing"):
                ok, msg = check_peer(args.peer_python, tool)
                if not ok:
                    reasons[tool] = msg
                    continue
                peer_versions[tool] = msg
                for task in ("map", "pipeline"):
                    plan.append((args.peer_python, tool, {**base, "tool": tool, "task": task}))
        for python, tool, spec in plan:
            key = (tool, spec["task"], spec.get("backend", ""))
            results[key] = run_measurement(python, spec, args.timeout)
        targets = target_rows(results, backend_rows(results, default))
        profile_text = None
        if any(t.get("met") is False and "MAP" in t["target"] for t in targets):
            prof = out / "speed_profile_map.txt"
            spec = {**base, "tool": "clvbayes", "task": "map", "repeats": 0, "profile": str(prof),
                    "profile_stage": "map_bgnbd_first"}  # fmt: skip
            if run_measurement(sys.executable, spec, args.timeout).ok and prof.exists():
                profile_text = _profile_summary(prof)

    rows = stage_rows(results, reasons)
    brows = backend_rows(results, default)
    load_end = load_average()
    md = ["# Speed and memory: clvbayes vs peers\n"]
    md.append(
        f"CDNOW ({args.dataset}, {n:,} customers, weeks, whole period to 1998-06-30); NUTS "
        f"{chains} chains x {draws} draws after {tune} tuning steps; predictions over "
        f"{HORIZON_WEEKS} weeks, {ANNUAL_DISCOUNT:.0%} a year discount, {PROB:.0%} intervals. "
        "Every row is measured in a fresh process; 'seconds' is the stage timed inside that "
        "process, 'peak RSS' the largest summed resident memory of the process and its "
        "sampler workers during the stage (pipeline total: whole process). ESS: smallest "
        "bulk effective sample size over the model's parameters; ESS per s = ESS / fit "
        "seconds including compilation.\n"
    )
    md.append("## Stages\n")
    md.append(markdown_table(rows))
    md.append("\n## clvbayes NUTS back-ends (ESS per second, compilation included)\n")
    md.append(markdown_table(brows) if brows else "_(none measured)_\n")
    md.append(f"\nDefault back-end (`default_nuts_sampler()`): **{default}**.\n")
    md.append("\n## Targets (issue 7)\n")
    md.append(markdown_table(targets, ["target", "ratio", "goal", "met", "detail"]))
    notes = closing_notes(results, targets, profile_text)
    if notes:
        md.append("\n## Closing notes\n")
        md += notes
    png = plot(rows, out / "speed.png")
    if png is not None:
        md.append(f"\n![time per stage]({png.name})\n")
    md.append("\n## Run\n")
    md.append(info_block(info))
    md.append(f"- load average at end: {'/'.join(f'{v:.2f}' for v in load_end)}\n")
    for tool, v in peer_versions.items():
        md.append(f"- {tool}: {v} (under {args.peer_python})\n")
    for tool, why in reasons.items():
        md.append(f"- {tool}: not measured: {why}\n")
    text = "\n".join(md)
    (out / "speed.md").write_text(text)
    raw = {" ".join(filter(None, k)): {**vars(r), "stdout": "", "stderr": r.stderr[-1000:]}
           for k, r in results.items()}  # fmt: skip
    (out / "speed_raw.json").write_text(json.dumps(raw, indent=1, default=str))
    write_csv(out / "speed.csv", [{"table": "stages", **r} for r in rows]
              + [{"table": "backends", **r} for r in brows]
              + [{"table": "targets", **r} for r in targets])  # fmt: skip
    print(text)
    print(f"results written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
