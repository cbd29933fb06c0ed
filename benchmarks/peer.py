"""Benchmark: clvbayes against pymc-marketing 1.3 and lifetimes, side by side, in one run.

The targets of issue 19, each measured on one machine in one run, every number from a fresh
Python process (wall time from process start to exit, imports included, and peak memory of
the process tree: ``_common.run_child``), rounds alternating between the tools so that a
change of load hits all of them:

``fast-path`` (``--sizes``, default 100k and 1M simulated customers)
    MAP/MLE fit of BG/NBD + Gamma-Gamma and per-customer predictions over 52 weeks
    (P(alive), purchases, CLV at 10 % a year): clvbayes ``map`` (predictive intervals: 1,000
    simulated outcomes per history), clvbayes ``laplace`` (1,000 Laplace draws: credible and
    predictive intervals), clvbayes ``laplace-exp`` (Laplace, expectations with credible
    intervals only: ``score_customers(outcomes=False)``), lifetimes' MLE (point predictions)
    and pymc-marketing's MAP (point predictions: it gives no intervals at a MAP fit).
``nuts-cdnow``
    The Bayesian CDNOW job.  clvbayes: ``clvbayes run`` with its defaults (bundled CDNOW
    sample, BG/NBD + Gamma-Gamma NUTS 4 x 1000 after 1000 tuning steps, every prediction with
    both interval kinds, the report folder).  pymc-marketing: the same RFM table
    (calibration to 1997-09-30, weeks), its BetaGeoModel + GammaGammaModel NUTS with the same
    settings and its default sampler (PyMC 6.3: nutpie when installed), then P(alive),
    purchases over 52 weeks and CLV draws for every customer reduced to mean and 90 %
    interval.  ``warm``: compile caches as left by a previous run; ``cold``: empty PyTensor
    compiledir and numba cache (``PYTENSOR_FLAGS=compiledir=...``, ``NUMBA_CACHE_DIR``), as
    right after install.  Bulk ESS per second of each model's parameters (ESS / wall time
    of the whole job).
``nuts-scale`` (``--scale-n``, default 100k)
    NUTS fit of both models and predictions for every customer at that size, clvbayes
    against pymc-marketing (its default sampler), each step with a time limit
    (``--peer-timeout``): a run stopped there is reported as such.

Usage::

    python benchmarks/peer.py all --peer-python .venv-peer/bin/python
    python benchmarks/peer.py fast-path --sizes 1e5 1e6 --rounds 2 --peer-python ...
    python benchmarks/peer.py nuts-cdnow --rounds 2 --peer-python ...
    python benchmarks/peer.py nuts-scale --scale-n 1e5 --peer-timeout 900 --peer-python ...
    python benchmarks/peer.py --render            # rewrite the markdown from the JSON

Writes ``peer_py3XX.json`` (every measurement, merged by section) and ``peer_py3XX.md``
(tables; text after a line ``## Findings`` in an existing file is kept) to ``--out``
(default ``benchmarks/results``).  The peer environment needs pymc-marketing, lifetimes and
psutil (``python3.12 -m venv .venv-peer && .venv-peer/bin/pip install "pymc-marketing==1.3.*"
lifetimes psutil nutpie``); it is never needed by the tests.  Top-level imports are the
standard library only, so the peer interpreter runs this file's children.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ROOT,
    Meter,
    load_average,
    machine_info,
    markdown_table,
    run_child,
    write_result,
)

HORIZON = 52.0  # weeks
ANNUAL_DISCOUNT = 0.10
PROB = 0.9
SIM = {"r": 0.9, "alpha": 3.0, "a": 0.6, "b": 6.0, "p": 6.0, "q": 4.0, "gamma": 20.0}
SECTIONS = ("fast-path", "nuts-cdnow", "nuts-scale")
FAST_TOOLS = ("clvbayes map", "clvbayes laplace", "clvbayes laplace-exp", "lifetimes mle",
              "pymc-marketing map")  # fmt: skip


# ------------------------------------------------------------------------------ data
def write_simulated(n: int, path: Path, seed: int = 1) -> None:
    """``n`` customers from BG/NBD + Gamma-Gamma (``SIM``, weeks) as an RFM CSV.

    The parameters of ``benchmarks/scale.py``; first purchases uniform over 640 days of a
    two-year window, so ``T`` is 13-104 weeks; recency on whole days; the average repeat
    order value of a customer with ``x`` repeat purchases is Gamma(p x, nu x) with
    ``nu ~ Gamma(q, gamma)``, rounded to cents.
    """
    import numpy as np
    import pandas as pd

    from clvbayes.math import bgnbd

    rng = np.random.default_rng(seed)
    T = (730 - rng.integers(0, 640, n)) / 7.0
    sim = bgnbd.simulate(rng, SIM["r"], SIM["alpha"], SIM["a"], SIM["b"], T)
    x = sim["frequency"]
    t_x = np.floor(sim["recency"] * 7.0) / 7.0
    nu = rng.standard_gamma(SIM["q"], n) / SIM["gamma"]
    xs = np.maximum(x, 1)
    m = np.where(x > 0, rng.standard_gamma(SIM["p"] * xs) / (nu * xs), 0.0)
    pd.DataFrame(
        {"customer_id": np.arange(n).astype(str), "frequency": x, "recency": t_x, "T": T,
         "monetary_value": np.maximum(np.round(m, 2), np.where(x > 0, 0.01, 0.0))}
    ).to_csv(path, index=False)  # fmt: skip


def write_cdnow(path: Path) -> None:
    """The RFM table ``clvbayes run`` fits on the bundled sample: weeks, calibration to 1997-09-30."""
    from clvbayes.data import calibration_holdout_split
    from clvbayes.datasets import load_cdnow_transactions

    rfm = calibration_holdout_split(
        load_cdnow_transactions(), "1997-09-30", "1998-06-30", monetary_value_col="amount"
    )
    rfm[["frequency", "recency", "T", "monetary_value"]].to_csv(path)


# ------------------------------------------------------------------------------ children
def _read(path: str):
    import pandas as pd

    return pd.read_csv(path, dtype={"customer_id": str})


def _monthly_rate() -> float:
    return (1.0 + ANNUAL_DISCOUNT) ** (1 / 12) - 1


def child_clvbayes(task: str, spec: dict, meter: Meter) -> dict:
    sys.path.insert(0, str(ROOT))
    import warnings

    warnings.simplefilter("ignore")
    with meter.stage("import"):
        from clvbayes.models import BetaGeoModel, GammaGammaModel
        from clvbayes.predict import score_customers
    df = _read(spec["data"]).set_index("customer_id")
    df.attrs["time_unit"] = "weeks"
    method = {"map": "map", "laplace": "laplace", "laplace-exp": "laplace"}.get(task, "nuts")
    kw = {} if method != "nuts" else {
        "draws": spec["draws"], "tune": spec["tune"], "chains": spec["chains"],
        "progressbar": False,
    }  # fmt: skip
    with meter.stage("fit_bgnbd"):
        bg = BetaGeoModel().fit(df, method=method, seed=1, **kw)
    with meter.stage("fit_gg"):
        gg = GammaGammaModel().fit(df, method=method, seed=2, **kw)
    with meter.stage("predict"):
        scores = score_customers(
            df, bg, gg, horizon=HORIZON, annual_discount_rate=ANNUAL_DISCOUNT, prob=PROB,
            seed=3, outcomes=task != "laplace-exp", n_draws=spec.get("prediction_draws"),
        )  # fmt: skip
    out = {"n_customers": len(scores.customers),
           "clv_total": float(scores.customers["clv_mean"].sum()),
           "bgnbd": {k: float(v.mean()) for k, v in bg.draws().items()}}  # fmt: skip
    if method == "nuts":
        for name, m in (("bgnbd", bg), ("gg", gg)):
            out[f"ess_{name}"] = float(m.fit_info_["min_ess_bulk"])
            out[f"rhat_{name}"] = float(m.fit_info_["max_r_hat"])
    return out


def child_lifetimes(task: str, spec: dict, meter: Meter) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    with meter.stage("import"):
        from lifetimes import BetaGeoFitter, GammaGammaFitter
    df = _read(spec["data"])
    repeat = df[df["frequency"] > 0]
    with meter.stage("fit_bgnbd"):
        bg = BetaGeoFitter().fit(df["frequency"], df["recency"], df["T"])
    with meter.stage("fit_gg"):
        gg = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    with meter.stage("predict"):
        x, t_x, T = df["frequency"], df["recency"], df["T"]
        bg.conditional_probability_alive(x, t_x, T)
        bg.conditional_expected_number_of_purchases_up_to_time(HORIZON, x, t_x, T)
        clv = gg.customer_lifetime_value(
            bg, x, t_x, T, df["monetary_value"], time=12, freq="W",
            discount_rate=_monthly_rate(),
        )  # fmt: skip
    return {"n_customers": len(clv), "clv_total": float(clv.sum()),
            "bgnbd": {k: float(v) for k, v in bg.params_.items()}}  # fmt: skip


def _summarise_draws(da) -> dict:
    """Mean and equal-tailed PROB interval per customer over (chain, draw) (xarray)."""
    lo, hi = (1 - PROB) / 2, (1 + PROB) / 2
    mean = da.mean(("chain", "draw")).values
    da.quantile([lo, hi], dim=("chain", "draw")).values  # noqa: B018 - the work being timed
    return mean


def _dataset(node):
    """An xarray Dataset of a DataTree node (ArviZ 1.x) or of a Dataset (0.x)."""
    return node.to_dataset() if hasattr(node, "to_dataset") else node


def child_pymc_marketing(task: str, spec: dict, meter: Meter) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    with meter.stage("import"):
        from pymc_marketing import clv
    df = _read(spec["data"])
    bg_cols = ["customer_id", "frequency", "recency", "T"]
    repeat = df.loc[df["frequency"] > 0, ["customer_id", "frequency", "monetary_value"]]
    repeat = repeat.reset_index(drop=True)
    if task == "map":
        kw: dict[str, Any] = {"method": "map", "progressbar": False}
    else:
        kw = {"method": "mcmc", "draws": spec["draws"], "tune": spec["tune"],
              "chains": spec["chains"], "progressbar": False,
              "cores": min(spec["chains"], os.cpu_count() or 1)}  # fmt: skip
    bg, gg = clv.BetaGeoModel(), clv.GammaGammaModel()
    with meter.stage("fit_bgnbd"):
        bg.fit(data=df[bg_cols], random_seed=1, **kw)
    with meter.stage("fit_gg"):
        gg.fit(data=repeat, random_seed=2, **kw)
    out: dict[str, Any] = {}
    post = _dataset(bg.idata.posterior)
    out["sampler"] = str(bg.idata.attrs.get("sampling_method", bg.idata.posterior.attrs.get(
        "inference_library", "")))  # fmt: skip
    if task != "map":
        import arviz as az

        for name, m, names in (("bgnbd", bg, ["r", "alpha", "a", "b"]),
                               ("gg", gg, ["p", "q", "v"])):  # fmt: skip
            p = _dataset(m.idata.posterior)[names]
            ess, rhat = az.ess(p, method="bulk"), az.rhat(p)
            out[f"ess_{name}"] = float(min(float(ess[k]) for k in names))
            out[f"rhat_{name}"] = float(max(float(rhat[k]) for k in names))
        n_total = post.sizes["chain"] * post.sizes["draw"]
        keep = max(1, n_total // spec.get("prediction_draws", n_total))
        if keep > 1:
            bg, gg = bg.thin_fit_result(keep_every=keep), gg.thin_fit_result(keep_every=keep)
    with meter.stage("predict"):
        data = df.copy()
        p_alive = _summarise_draws(bg.expected_probability_alive(data=data[bg_cols]))
        _summarise_draws(bg.expected_purchases(data=data[bg_cols], future_t=HORIZON))
        clv_mean = _summarise_draws(gg.expected_customer_lifetime_value(
            transaction_model=bg, data=data, future_t=12, discount_rate=_monthly_rate(),
            time_unit="W",
        ))  # fmt: skip
    out.update(n_customers=len(clv_mean), clv_total=float(clv_mean.sum()),
               p_alive_mean=float(p_alive.mean()),
               bgnbd={k: float(post[k].mean()) for k in ("r", "alpha", "a", "b")})  # fmt: skip
    return out


CHILDREN = {"clvbayes": child_clvbayes, "lifetimes": child_lifetimes,
            "pymc-marketing": child_pymc_marketing}  # fmt: skip


def run_as_child(spec: dict) -> int:
    t0 = time.perf_counter()
    meter = Meter(interval=0.05)
    # the stages done so far, for a parent that stops this process at its time limit
    meter.after_stage = lambda: write_result({"stages": meter.stages, "partial": True})
    try:
        payload = CHILDREN[spec["tool"]](spec["task"], spec, meter)
    finally:
        meter.close()
    payload["stages"] = meter.stages
    payload["inner_seconds"] = time.perf_counter() - t0
    payload["peak_rss_mb"] = meter.peak_rss_mb
    write_result(payload)
    return 0


# ------------------------------------------------------------------------------ parent
def _record(res, argv, env_note: str = "") -> dict:
    rec = {
        "ok": res.ok, "wall_seconds": res.wall_seconds, "peak_rss_mb": res.peak_rss_mb,
        "load_at_end": round(load_average()[0], 2),
        "command": (env_note + " " if env_note else "") + " ".join(
            shlex.quote(os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(str(ROOT))
                        else a) for a in argv),
    }  # fmt: skip
    if not res.ok:
        rec["error"] = res.error()
    rec.update(res.payload)
    return rec


def _child(python: str, spec: dict, timeout: float, env=None) -> dict:
    argv = [python, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    load0 = round(load_average()[0], 2)
    rec = _record(run_child(argv, timeout=timeout, env=env, cwd=ROOT), argv)
    rec["load_at_start"] = load0
    return rec


def _cold_env(tag: str) -> tuple[dict, str]:
    base = Path(tempfile.mkdtemp(prefix=f"clvbayes-cold-{tag}-"))
    env = dict(os.environ)
    flags = env.get("PYTENSOR_FLAGS", "")
    env["PYTENSOR_FLAGS"] = ",".join(f for f in (flags, f"compiledir={base / 'pytensor'}") if f)
    env["NUMBA_CACHE_DIR"] = str(base / "numba")
    return env, f"PYTENSOR_FLAGS=compiledir={base}/pytensor NUMBA_CACHE_DIR={base}/numba"


def section_fast_path(a, tmp: Path) -> list[dict]:
    records = []
    for n in (int(float(s)) for s in a.sizes):
        data = tmp / f"sim_{n}.csv"
        write_simulated(n, data)
        for rnd in range(a.rounds):
            for name in FAST_TOOLS:
                tool, task = name.split()
                python = sys.executable if tool == "clvbayes" else a.peer_python
                if python is None:
                    continue
                spec = {"tool": tool, "task": task, "data": str(data)}
                rec = _child(python, spec, a.timeout)
                rec.update(section="fast-path", n=n, name=name, round=rnd)
                records.append(rec)
                _say(rec)
    return records


def section_nuts_cdnow(a, tmp: Path) -> list[dict]:
    data = tmp / "cdnow_weeks.csv"
    write_cdnow(data)
    exe = str(Path(sys.executable).with_name("clvbayes"))
    records = []
    nuts = {"draws": a.draws, "tune": a.tune, "chains": a.chains}
    for rnd in range(a.rounds):
        for cache in ("cold", "warm"):
            # clvbayes: the CLI job, report included
            env, note = _cold_env(f"cb{rnd}") if cache == "cold" else (None, "")
            out_dir = tmp / f"report_{cache}_{rnd}"
            argv = [exe, "run", "--output", str(out_dir), "--quiet", "--draws", str(a.draws),
                    "--tune", str(a.tune), "--chains", str(a.chains)]  # fmt: skip
            load0 = round(load_average()[0], 2)
            rec = _record(run_child(argv, timeout=a.timeout, env=env, cwd=tmp), argv, note)
            rec.update(section="nuts-cdnow", name="clvbayes run", cache=cache, round=rnd,
                       load_at_start=load0)  # fmt: skip
            if rec["ok"]:
                rec.update(_report_ess(out_dir))
            records.append(rec)
            _say(rec)
            if a.peer_python:
                env, note = _cold_env(f"pmm{rnd}") if cache == "cold" else (None, "")
                spec = {"tool": "pymc-marketing", "task": "nuts", "data": str(data), **nuts}
                argv = [a.peer_python, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
                load0 = round(load_average()[0], 2)
                rec = _record(run_child(argv, timeout=a.peer_timeout, env=env, cwd=ROOT), argv,
                              note)  # fmt: skip
                rec.update(section="nuts-cdnow", name="pymc-marketing nuts", cache=cache,
                           round=rnd, load_at_start=load0)  # fmt: skip
                records.append(rec)
                _say(rec)
    return records


def _report_ess(out_dir: Path) -> dict:
    """Bulk ESS and r_hat of both fitted models, read from the report's saved models."""
    import warnings

    sys.path.insert(0, str(ROOT))
    from clvbayes.models import BetaGeoModel, GammaGammaModel

    out = {}
    models = {p.name: p for p in out_dir.rglob("*.nc")}
    for name, cls in (("bgnbd", BetaGeoModel), ("gg", GammaGammaModel)):
        path = next((p for k, p in models.items() if ("gamma" in k) == (name == "gg")), None)
        if path is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = cls.load(path).summary()
        out[f"ess_{name}"] = float(s["ess_bulk"].min())
        out[f"rhat_{name}"] = float(s["r_hat"].max())
    return out


def section_nuts_scale(a, tmp: Path) -> list[dict]:
    n = int(float(a.scale_n))
    data = tmp / f"sim_{n}.csv"
    write_simulated(n, data)
    spec = {"task": "nuts", "data": str(data), "draws": a.draws, "tune": a.tune,
            "chains": a.chains, "prediction_draws": 1000}  # fmt: skip
    records = []
    for tool, python, timeout in (("clvbayes", sys.executable, a.timeout),
                                  ("pymc-marketing", a.peer_python, a.peer_timeout)):  # fmt: skip
        if python is None:
            continue
        rec = _child(python, {**spec, "tool": tool}, timeout)
        rec.update(section="nuts-scale", n=n, name=f"{tool} nuts")
        records.append(rec)
        _say(rec)
    return records


_SAVE: list = []  # [state, path] while main runs: every record is written as it comes


def _say(rec: dict) -> None:
    """Print one record and add it to the results file at once (a stopped run keeps it)."""
    stages = {k: round(v["seconds"], 2) for k, v in rec.get("stages", {}).items()}
    print(
        f"[{rec['section']}] {rec['name']} {rec.get('n', rec.get('cache', ''))}: "
        f"{rec['wall_seconds']:.1f} s, {rec['peak_rss_mb']:.0f} MiB, load "
        f"{rec.get('load_at_start')}->{rec['load_at_end']} {stages} "
        f"{rec.get('error', '')}",
        flush=True,
    )
    if _SAVE:
        state, path = _SAVE
        state["records"].append(rec)
        path.write_text(json.dumps(state, indent=1, default=str))


# ------------------------------------------------------------------------------ tables
def _med(recs, key, stage=None):
    vals = []
    for r in recs:
        if not r.get("ok"):
            continue
        v = r.get("stages", {}).get(stage, {}).get("seconds") if stage else r.get(key)
        if v is not None:
            vals.append(v)
    return statistics.median(vals) if vals else None


def _span(recs, key, stage=None) -> str:
    vals = (  # a stage finished before a process was stopped at its limit counts
        (r.get("stages", {}).get(stage, {}).get("seconds") if stage else r.get(key))
        for r in recs if r.get("ok") or stage
    )  # fmt: skip
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        errs = {r.get("error", "failed") for r in recs}
        return "; ".join(sorted(errs))[:120] or "-"
    med = statistics.median(vals)
    return f"{med:.2f}" if len(vals) == 1 else f"{med:.2f} ({vals[0]:.2f}-{vals[-1]:.2f})"


def _loads(recs) -> str:
    vals = [r.get("load_at_start") for r in recs] + [r.get("load_at_end") for r in recs]
    vals = [v for v in vals if v is not None]
    return f"{min(vals):.1f}-{max(vals):.1f}" if vals else "-"


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def render(state: dict, out: Path, stack: str) -> str:
    recs = state.get("records", [])
    lines = [f"# clvbayes vs pymc-marketing 1.3 and lifetimes, side by side ({stack})", ""]
    lines += ["Written by `benchmarks/peer.py` (its docstring says what each job does). Every "
              "number is a fresh process; seconds are medians over the rounds with the range "
              "in brackets; `load` is the 1-minute load average at the start and end of those "
              "processes (the 2-core machine was shared with other work, so compare ratios "
              "within a table, not across runs).", ""]  # fmt: skip
    for key, val in state.get("machine", {}).items():
        lines.append(f"- {key}: {val}")
    for key, val in state.get("peer_machine", {}).items():
        lines.append(f"- peer {key}: {val}")
    lines.append("")
    fast = [r for r in recs if r["section"] == "fast-path"]
    if fast:
        lines += ["## Fast path: MAP / MLE fit + predictions for every customer", ""]
        rows = []
        for n in sorted({r["n"] for r in fast}):
            ref = _med([r for r in fast if r["n"] == n and r["name"] == "pymc-marketing map"],
                       "wall_seconds")  # fmt: skip
            ref_fit = _fit_med([r for r in fast if r["n"] == n and r["name"] == "lifetimes mle"])
            for name in FAST_TOOLS:
                group = [r for r in fast if r["n"] == n and r["name"] == name]
                if not group:
                    continue
                rows.append({
                    "customers": f"{n:,}", "tool": name,
                    "whole process s": _span(group, "wall_seconds"),
                    "BG/NBD fit s": _span(group, None, "fit_bgnbd"),
                    "GG fit s": _span(group, None, "fit_gg"),
                    "predict s": _span(group, None, "predict"),
                    "both fits / lifetimes": _ratio(_fit_med(group), ref_fit),
                    "process / pmm MAP": _ratio(_med(group, "wall_seconds"), ref),
                    "peak MiB": f"{_med(group, 'peak_rss_mb') or 0:.0f}",
                    "load": _loads(group),
                })  # fmt: skip
        lines += [markdown_table(rows), "", "Commands (one per tool; `--child` runs one job):", ""]
        lines += _commands(fast)
    cdnow = [r for r in recs if r["section"] == "nuts-cdnow"]
    if cdnow:
        lines += ["## The Bayesian CDNOW job (NUTS 4 x 1000 after 1000 tuning steps)", ""]
        rows = []
        for cache in ("warm", "cold"):
            ref = _med([r for r in cdnow if r["cache"] == cache
                        and r["name"] == "pymc-marketing nuts"], "wall_seconds")  # fmt: skip
            for name in ("clvbayes run", "pymc-marketing nuts"):
                group = [r for r in cdnow if r["cache"] == cache and r["name"] == name]
                if not group:
                    continue
                wall = _med(group, "wall_seconds")
                ess = {m: _med(group, f"ess_{m}") for m in ("bgnbd", "gg")}
                rows.append({
                    "caches": cache, "tool": name, "whole job s": _span(group, "wall_seconds"),
                    "pmm / this": _ratio(ref, wall),
                    "BG/NBD ESS bulk (min)": f"{ess['bgnbd']:.0f}" if ess["bgnbd"] else "-",
                    "GG ESS bulk (min)": f"{ess['gg']:.0f}" if ess["gg"] else "-",
                    "BG/NBD ESS/s": f"{ess['bgnbd'] / wall:.0f}" if ess["bgnbd"] else "-",
                    "GG ESS/s": f"{ess['gg'] / wall:.0f}" if ess["gg"] else "-",
                    "peak MiB": f"{_med(group, 'peak_rss_mb') or 0:.0f}",
                    "load": _loads(group),
                })  # fmt: skip
        lines += [markdown_table(rows), "", "ESS per second is over the whole job (both fits, "
                  "predictions, report, imports).", "", "Commands:", ""]  # fmt: skip
        lines += _commands(cdnow)
    scale = [r for r in recs if r["section"] == "nuts-scale"]
    if scale:
        lines += [f"## NUTS at {scale[0]['n']:,} simulated customers", ""]
        rows = []
        for r in scale:
            rows.append({
                "tool": r["name"], "whole process s": _span([r], "wall_seconds"),
                "BG/NBD fit s": _span([r], None, "fit_bgnbd"),
                "GG fit s": _span([r], None, "fit_gg"),
                "predict s": _span([r], None, "predict"),
                "min ESS BG/NBD, GG": f"{r.get('ess_bgnbd', float('nan')):.0f}, "
                                      f"{r.get('ess_gg', float('nan')):.0f}",
                "peak MiB": f"{r['peak_rss_mb']:.0f}", "load": _loads([r]),
            })  # fmt: skip
        lines += [markdown_table(rows), "", "Commands:", "", *_commands(scale)]
    text = "\n".join(lines) + "\n"
    path = out / f"peer_{stack}.md"
    if path.exists():
        old = path.read_text()
        if "\n## Findings" in old:
            text += "\n## Findings" + old.split("\n## Findings", 1)[1]
    path.write_text(text)
    return text


def _fit_med(group):
    vals = [r["stages"]["fit_bgnbd"]["seconds"] + r["stages"]["fit_gg"]["seconds"]
            for r in group if r.get("ok") and "fit_gg" in r.get("stages", {})]  # fmt: skip
    return statistics.median(vals) if vals else None


def _commands(recs) -> list[str]:
    seen, out = set(), []
    for r in recs:
        cmd = r["command"]
        key = (r["name"], r.get("cache"), r.get("n"))
        if key in seen:
            continue
        seen.add(key)
        out.append(f"- {r['name']} ({r.get('cache') or r.get('n')}): `{cmd}`")
    return [*out, ""]


# ------------------------------------------------------------------------------ main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("section", nargs="?", choices=(*SECTIONS, "all"), default=None)
    ap.add_argument(
        "--peer-python", help="python of the environment with pymc-marketing, lifetimes"
    )
    ap.add_argument("--sizes", nargs="+", default=["1e5", "1e6"], help="fast-path customers")
    ap.add_argument("--scale-n", default="1e5", help="customers of nuts-scale")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per measurement")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per clvbayes process")
    ap.add_argument("--peer-timeout", type=float, default=1200.0, help="seconds per peer process")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is None and not a.render and a.section is None:
        ap.error("name a section (fast-path, nuts-cdnow, nuts-scale, all) or --render")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.child:
        return run_as_child(json.loads(a.child))
    sys.path.insert(0, str(ROOT))
    stack = f"py{sys.version_info.major}{sys.version_info.minor}"
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"peer_{stack}.json"
    state = json.loads(path.read_text()) if path.exists() else {"records": []}
    if not a.render:
        state["machine"] = machine_info(("clvbayes", "pymc", "pytensor", "arviz", "numpy",
                                         "numba", "nutpie"))  # fmt: skip
        if a.peer_python:
            state["peer_machine"] = _peer_versions(a.peer_python)
        sections = SECTIONS if a.section == "all" else (a.section,)
        _SAVE[:] = [state, path]
        with tempfile.TemporaryDirectory(prefix="clvbayes-peer-") as tmp:
            for section in sections:
                state["records"] = [r for r in state["records"] if r["section"] != section]
                new = {"fast-path": section_fast_path, "nuts-cdnow": section_nuts_cdnow,
                       "nuts-scale": section_nuts_scale}[section](a, Path(tmp))  # fmt: skip
                print(f"{section}: {len(new)} measurements", flush=True)
    print(render(state, a.out, stack))
    return 0


def _peer_versions(python: str) -> dict:
    import subprocess

    code = ("import json, platform; from importlib import metadata as m; d = {'python': "
            "platform.python_version()}\nfor k in ('pymc-marketing', 'pymc', 'pytensor', "
            "'nutpie', 'lifetimes', 'numpy'):\n    try: d[k] = m.version(k)\n    except "
            "Exception: d[k] = 'not installed'\nprint(json.dumps(d))")  # fmt: skip
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)
    except Exception as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    sys.exit(main())
