"""Benchmark: the whole job (transactions -> RFM -> NUTS fit -> scores) at 10k, 100k and 1M customers.

Synthetic data simulated from BG/NBD + Gamma-Gamma (:mod:`clvbayes.math`): N customers,
first purchases spread over the first 640 days, two years of daily transactions (a time of
day is added; about 10 rows per customer), written as Parquet; models in weeks.  For each N,
each step runs in a fresh process, and its peak memory is the ``ru_maxrss`` of that process
and its children (``os.wait4``):

- ``rfm``: ``summarize_transactions(read_transactions(path), ...)``; DuckDB's query for the
  same table (from ``benchmarks/rfm_summary.py``) when ``duckdb`` is installed, rounds
  alternating, ratio = median of paired ratios;
- ``fit``: BG/NBD and Gamma-Gamma by NUTS, 4 chains x 1000 draws (+ 1000 tuning), the
  default sampler; also the cost of one log-posterior gradient (``grad``);
- ``score``: :func:`clvbayes.predict.score_customers` for every customer: P(alive),
  purchases, spend, revenue and CLV over 52 weeks (10 % a year), credible and predictive
  intervals, 1000 posterior draws, with its progress bar;
- ``pymc-marketing`` (at 100k, with ``--peer-python``, a separate environment): its
  BetaGeoModel + GammaGammaModel fit (same NUTS settings) and its per-customer
  expectations (P(alive), purchases over 52 weeks, spend, CLV over 12 months in weeks)
  from 1000 draws.

Where a target at the largest N is missed, the step is profiled with cProfile (the fit:
one chain, 50 + 50 iterations; scoring: 200k of the customers) and the top entries go into
the results file.  A fit or scoring run longer than ``--fit-timeout`` / ``--score-timeout``
is stopped and reported as such.  ``--max-fit-customers`` fits only up to that size and
scores the larger ones with that posterior (scoring cost does not depend on its values).

Usage::

    python benchmarks/scale.py --smoke                        # tiny, writes to a temp dir
    python benchmarks/scale.py --peer-python /path/to/peers/bin/python
    python benchmarks/scale.py --customers 10000 100000 --skip-peers --out /tmp/scale
    python benchmarks/scale.py --render benchmarks/results/scale.json   # redo md/csv/png

Writes ``scale.json`` (every figure, the notes and profiles), ``scale.md``, ``scale.csv``
and ``scale.png`` to ``--out`` (default ``benchmarks/results``).  Top-level imports are the
standard library and NumPy only, so the peer environment can run this file's
pymc-marketing workers.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
START = np.datetime64("2020-01-01T00:00:00", "s")
DAYS = 731  # 2020-01-01 .. 2021-12-31
END = "2021-12-31"
ACQUISITION_DAYS = 640  # first purchases on days 0..639: every customer has T >= 13 weeks
TRUE_BGNBD = {"r": 0.9, "alpha": 3.0, "a": 0.6, "b": 6.0}  # weeks
TRUE_GG = {"p": 6.0, "q": 4.0, "gamma": 20.0}  # mean transaction value p gamma / (q - 1) = 40
SCORE_KW = {"horizon": 52, "annual_discount_rate": 0.10, "n_draws": 1000, "seed": 1}
TARGET_SECONDS = 180.0
TARGET_GB = 4.0
TARGET_RATIO = 1.5
PROFILE_FIT_ITERATIONS = 50  # tuning and draws of the one-chain fit that is profiled
PROFILE_SCORE_CUSTOMERS = 200_000  # customers scored under cProfile
FIT_KEYS = (
    "bg_seconds", "gg_seconds", "bg_histories", "gg_histories", "bg_sampler", "bg_min_ess_bulk",
    "gg_min_ess_bulk", "bg_max_rhat", "gg_max_rhat", "bg_leapfrog_steps", "gg_leapfrog_steps",
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# data


def simulate_log(n_customers: int, seed: int = 20240601):
    """A seeded BG/NBD + Gamma-Gamma transaction log (pyarrow Table), in time order.

    Customer i first buys on a uniform day in the first ``ACQUISITION_DAYS`` days; its
    repeat purchases in (0, T] follow :func:`clvbayes.math.bgnbd.simulate` (given x repeat
    purchases with the last at t_x, the other x - 1 are uniform on (0, t_x)); purchase
    times become days plus a uniform time of day; values are Gamma(p, nu_i) with
    nu_i ~ Gamma(q, gamma), rounded to cents.
    """
    import pyarrow as pa

    from clvbayes.math import bgnbd

    rng = np.random.default_rng(seed)
    first = rng.integers(0, ACQUISITION_DAYS, n_customers)
    T = (DAYS - 1 - first) / 7.0
    sim = bgnbd.simulate(rng, *TRUE_BGNBD.values(), T)
    x, t_x = sim["frequency"], sim["recency"]
    owner = np.repeat(np.arange(n_customers), x)
    slot = np.arange(owner.size) - (np.cumsum(x) - x)[owner]
    weeks = np.where(slot == x[owner] - 1, t_x[owner], rng.random(owner.size) * t_x[owner])
    customer = np.concatenate([np.arange(n_customers), owner])
    day = np.concatenate([first, first[owner] + np.floor(weeks * 7.0).astype(np.int64)])
    seconds = day * 86_400 + rng.integers(0, 86_400, customer.size)
    nu = rng.standard_gamma(TRUE_GG["q"], n_customers) / TRUE_GG["gamma"]
    amount = np.round(rng.standard_gamma(TRUE_GG["p"], customer.size) / nu[customer], 2)
    amount = np.maximum(amount, 0.01)
    order = np.argsort(seconds, kind="stable")
    return pa.table(
        {
            "customer_id": pa.array(customer[order]),
            "date": pa.array(START + seconds[order].astype("timedelta64[s]")),
            "amount": pa.array(amount[order]),
        }
    )


# ---------------------------------------------------------------------------------------
# workers: each runs in a fresh process and prints one JSON line


def _rss_gb() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(usage, children) / 1024**2  # Linux: KiB


def _w_sim(a) -> dict:
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    table = simulate_log(a.n)
    pq.write_table(table, a.dir / "tx.parquet")
    return {"seconds": time.perf_counter() - t0, "rows": table.num_rows}


def _w_rfm(a) -> dict:
    from clvbayes.data import read_transactions, summarize_transactions

    t0 = time.perf_counter()
    rfm = summarize_transactions(
        read_transactions(a.dir / "tx.parquet"),
        monetary_value_col="amount",
        observation_end=END,
        time_unit="weeks",
    )
    seconds = time.perf_counter() - t0
    rfm.drop(columns="first_purchase").to_parquet(a.dir / "rfm.parquet")
    return {"seconds": seconds, "rows": int(rfm.attrs["n_transactions"])}


def _w_duckdb(a) -> dict:
    import duckdb

    sys.path.insert(0, str(HERE))
    from rfm_summary import DUCKDB_QUERY

    con = duckdb.connect()
    t0 = time.perf_counter()
    con.sql(DUCKDB_QUERY.format(path=a.dir / "tx.parquet", end=END)).df()
    return {"seconds": time.perf_counter() - t0, "version": duckdb.__version__}


def _read_rfm(path: Path):
    import pandas as pd

    rfm = pd.read_parquet(path)
    rfm.attrs.setdefault("time_unit", "weeks")
    return rfm


def _w_fit(a) -> dict:
    import warnings

    from clvbayes.models import BetaGeoModel, GammaGammaModel

    rfm = _read_rfm(a.dir / "rfm.parquet")
    out, t_all = {}, time.perf_counter()
    for name, cls, seed in (("bg", BetaGeoModel, 1), ("gg", GammaGammaModel, 2)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls().fit(
                rfm,
                method="nuts",
                chains=a.chains,
                draws=a.draws,
                tune=a.tune,
                seed=seed,
                progressbar=False,
            )
        out[f"{name}_seconds"] = time.perf_counter() - t0
        out[f"{name}_histories"] = model.fit_info_["n_histories"]
        out[f"{name}_sampler"] = model.fit_info_.get("nuts_sampler")
        summary = model.summary()
        out[f"{name}_min_ess_bulk"] = float(summary["ess_bulk"].min())
        out[f"{name}_max_rhat"] = float(summary["r_hat"].max())
        stats = getattr(model, "sample_stats_", None)
        if stats is not None and "n_steps" in stats:
            out[f"{name}_leapfrog_steps"] = int(stats["n_steps"].sum())
        model.save(a.dir / f"{name}.nc", include_data=False)
    out["seconds"] = time.perf_counter() - t_all
    return out


def _w_grad(a) -> dict:
    """Seconds per log-posterior gradient (the unit of NUTS work), both models."""
    import warnings

    from clvbayes.models import BetaGeoModel, GammaGammaModel

    rfm = _read_rfm(a.dir / "rfm.parquet")
    out = {}
    for name, cls in (("bg", BetaGeoModel), ("gg", GammaGammaModel)):
        model = cls()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = model._compress(rfm)
        out[f"{name}_histories"] = data.n_unique
        pm_model = model.build_pymc_model(data, fast=True)  # what PyMC's NUTS runs
        dlogp = pm_model.compile_dlogp()
        point = pm_model.initial_point()
        dlogp(point)
        reps, t0 = 0, time.perf_counter()
        while reps < 5 or time.perf_counter() - t0 < 2.0:
            dlogp(point)
            reps += 1
        out[f"{name}_grad_seconds"] = (time.perf_counter() - t0) / reps
    return out


def _w_score(a) -> dict:
    from clvbayes.models import BetaGeoModel, GammaGammaModel
    from clvbayes.predict import score_customers

    rfm = _read_rfm(a.dir / "rfm.parquet")
    if a.subsample:
        rfm = rfm.iloc[: a.subsample]
    models = Path(a.models or a.dir)
    bg = BetaGeoModel.load(models / "bg.nc")
    gg = GammaGammaModel.load(models / "gg.nc")
    kw = SCORE_KW | {"n_draws": a.score_draws}
    t0 = time.perf_counter()
    scores = score_customers(rfm, bg, gg, progress=True, **kw)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "n_draws": scores.settings["n_draws"],
        "n_histories": scores.settings["n_histories"],
    }


def _pmm_data(a):
    import pandas as pd

    return pd.read_csv(a.dir / "rfm.csv")


def _w_pmm_fit(a) -> dict:
    import warnings

    from pymc_marketing import __version__
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    data = _pmm_data(a)
    out, t_all = {"version": __version__}, time.perf_counter()
    fit_kw = {"chains": a.chains, "draws": a.draws, "tune": a.tune, "progressbar": False}
    fit_kw["cores"] = min(a.chains, os.cpu_count() or 1)  # as clvbayes' fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        bg = BetaGeoModel()
        bg.fit(data=data[["customer_id", "frequency", "recency", "T"]], random_seed=1, **fit_kw)
        out["bg_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        repeat = data.loc[data["frequency"] > 0, ["customer_id", "frequency", "monetary_value"]]
        gg = GammaGammaModel()
        gg.fit(data=repeat, random_seed=2, **fit_kw)
        out["gg_seconds"] = time.perf_counter() - t0
    out["seconds"] = time.perf_counter() - t_all
    bg.save(str(a.dir / "pmm_bg.nc"), engine="h5netcdf")
    gg.save(str(a.dir / "pmm_gg.nc"), engine="h5netcdf")
    return out


def _w_pmm_score(a) -> dict:
    import warnings

    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    data = _pmm_data(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bg = BetaGeoModel.load(str(a.dir / "pmm_bg.nc"))
        gg = GammaGammaModel.load(str(a.dir / "pmm_gg.nc"))
        n_total = bg.idata.posterior.sizes["chain"] * bg.idata.posterior.sizes["draw"]
        keep = max(1, n_total // a.score_draws)
        bg, gg = bg.thin_fit_result(keep_every=keep), gg.thin_fit_result(keep_every=keep)
        monthly = (1.0 + SCORE_KW["annual_discount_rate"]) ** (1 / 12) - 1
        t0 = time.perf_counter()
        quantities = {
            "p_alive": lambda: bg.expected_probability_alive(data),
            "purchases": lambda: bg.expected_purchases(data, future_t=SCORE_KW["horizon"]),
            "spend": lambda: gg.expected_customer_spend(data),
            "clv": lambda: gg.expected_customer_lifetime_value(
                transaction_model=bg,
                data=data.copy(),
                future_t=12,
                discount_rate=monthly,
                time_unit="W",
            ),
        }
        table = {}
        for name, compute in quantities.items():
            draws = compute()
            table[f"{name}_mean"] = draws.mean(("chain", "draw")).values
            lo_hi = draws.quantile([0.05, 0.95], dim=("chain", "draw")).values
            table[f"{name}_ci_lower"], table[f"{name}_ci_upper"] = lo_hi
            del draws
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "n_draws": int(n_total // keep)}


WORKERS = {
    "sim": _w_sim,
    "rfm": _w_rfm,
    "duckdb": _w_duckdb,
    "fit": _w_fit,
    "grad": _w_grad,
    "score": _w_score,
    "pmm_fit": _w_pmm_fit,
    "pmm_score": _w_pmm_score,
}


def _worker_main(a) -> None:
    if a.worker not in ("pmm_fit", "pmm_score"):
        sys.path.insert(0, str(ROOT))
    func = WORKERS[a.worker]
    if a.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        result = prof.runcall(func, a)
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(12)
        result["profile_tottime"] = _trim_profile(buf.getvalue())
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        result["profile_cumulative"] = _trim_profile(buf.getvalue())
    else:
        result = func(a)
    result["worker_peak_rss_gb"] = _rss_gb()
    print("RESULT " + json.dumps(result, default=str), flush=True)


def _trim_profile(text: str) -> str:
    """The table of a pstats printout, with long paths shortened."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    out = []
    for line in lines[start:]:
        if not line.strip():
            continue
        for prefix in (str(ROOT) + "/", sys.prefix + "/lib/python3.11/site-packages/"):
            line = line.replace(prefix, "")
        out.append(line.rstrip())
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# parent: run the workers, collect, write


def _run(
    step: str,
    n: int,
    workdir: Path,
    opts,
    *,
    python: str | None = None,
    timeout: float | None = None,
    profile: bool = False,
    models: Path | None = None,
    subsample: int | None = None,
) -> dict:
    """Run one worker in a fresh process; its result plus wall time and peak RSS (GB).

    The worker's stderr is passed through (progress bars) and its last scoring progress
    ("scoring customers: done/total (..., seconds)") is kept, to estimate the total time of
    a run stopped at ``timeout``.
    """
    import re
    import threading

    cmd = [python or sys.executable, str(Path(__file__).resolve()), "--worker", step]
    cmd += ["--n", str(n), "--dir", str(workdir), "--chains", str(opts.chains)]
    cmd += ["--draws", str(opts.draws), "--tune", str(opts.tune)]
    cmd += ["--score-draws", str(opts.score_draws)]
    cmd += (["--profile"] if profile else []) + (["--models", str(models)] if models else [])
    cmd += ["--subsample", str(subsample)] if subsample else []
    progress: list[tuple[int, int, float]] = []
    pattern = re.compile(r"scoring customers: ([\d,]+)/([\d,]+) \(.*?, ([\d.]+) s\)")

    def pump(stream) -> None:
        text = ""
        while chunk := os.read(stream.fileno(), 4096):
            sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
            text = (text + chunk.decode(errors="replace"))[-2000:]
            for m in pattern.finditer(text):
                done, total = (int(g.replace(",", "")) for g in m.groups()[:2])
                progress.append((done, total, float(m.group(3))))

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    reader = threading.Thread(target=pump, args=(proc.stderr,), daemon=True)
    reader.start()
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    reader.join(timeout=5)
    wall = time.perf_counter() - t0
    lines = [line for line in (out or "").splitlines() if line.startswith("RESULT ")]
    if timed_out:
        result = {"timed_out": True, "seconds": wall, "wall_seconds": wall}
        if progress:
            done, total, seconds = progress[-1]
            result["fraction_done"] = done / total
            result["estimate_s"] = seconds * total / max(done, 1)
        return result
    if proc.returncode != 0 or not lines:
        return {"failed": f"exit code {proc.returncode}", "wall_seconds": wall}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_seconds"] = wall
    result["peak_rss_gb"] = result.pop("worker_peak_rss_gb")
    return result


def _fmt_n(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:g}M"
    return f"{n / 1e3:g}k" if n >= 1e3 else f"{n:g}"


def _fmt_s(s) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    return f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _fmt_gb(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _slope(xs, ys) -> str:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y and y > 0 and not math.isnan(y)]
    if len(pts) < 2:
        return "-"
    lx, ly = np.log10([p[0] for p in pts]), np.log10([p[1] for p in pts])
    return f"{np.polyfit(lx, ly, 1)[0]:.2f}"


def _peer_ok(python: str | None) -> tuple[bool, str]:
    if not python:
        return False, "no --peer-python given"
    code = "import pymc_marketing, pandas; print(pymc_marketing.__version__)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return False, f"pymc-marketing is not importable with {python}"
    return True, f"pymc-marketing {proc.stdout.strip()} ({python})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and draws")
    parser.add_argument("--skip-peers", action="store_true", help="do not run pymc-marketing")
    parser.add_argument("--peer-python", help="python of an environment with pymc-marketing")
    parser.add_argument("--peer-at", type=float, default=1e5, help="N at which to run peers")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--repeats", type=int, default=3, help="RFM rounds per method")
    parser.add_argument("--fit-timeout", type=float, default=1200.0, help="seconds per fit")
    parser.add_argument("--score-timeout", type=float, default=2400.0, help="seconds per scoring")
    parser.add_argument(
        "--max-fit-customers", type=int, help="fit only up to this N; larger N reuse that posterior"
    )
    parser.add_argument("--render", type=Path, help="only rewrite the outputs from a scale.json")
    parser.add_argument(
        "--peer-results",
        type=Path,
        help="reuse the pymc-marketing figures of an earlier scale.json (same data) instead of "
        "running pymc-marketing again (~30 min at 100k); the output says so",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip profiling misses")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--score-draws", type=int, default=1000)
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subsample", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.worker:
        _worker_main(a)
        return
    if a.render:
        out = a.out or a.render.parent
        out.mkdir(parents=True, exist_ok=True)
        _render(out, json.loads(a.render.read_text()))
        return
    sizes = [int(n) for n in a.customers]
    if a.smoke:
        sizes, a.repeats = [2000, 5000], 1
        a.chains, a.draws, a.tune, a.score_draws = 2, 100, 100, 100
        a.peer_at = 5000
    out_dir = a.out or (
        Path(tempfile.mkdtemp(prefix="clvbayes-scale-")) if a.smoke else HERE / "results"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import duckdb  # noqa: F401

        have_duckdb = True
    except ImportError:
        have_duckdb = False
        print("duckdb is not installed (pip install clvbayes[bench]): no DuckDB reference")
    peer_ok, peer_note = (
        (False, "skipped (--skip-peers)") if a.skip_peers else _peer_ok(a.peer_python)
    )
    print(f"peer: {peer_note}")
    load_before = os.getloadavg()[0]
    records: list[dict] = []
    profiles: list[tuple[str, str]] = []
    notes: list[str] = []
    last_models: Path | None = None
    with tempfile.TemporaryDirectory(prefix="clvbayes-scale-") as tmp:
        for n in sizes:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            rec: dict = {"customers": n}
            sim = _run("sim", n, work, a)
            rec["rows"] = sim["rows"]
            print(
                f"\n== {_fmt_n(n)} customers, {sim['rows']:,} transactions "
                f"(simulated in {sim['seconds']:.1f} s)",
                flush=True,
            )
            # ---- RFM summary, rounds alternating with DuckDB
            methods = ["rfm", "duckdb"] if have_duckdb else ["rfm"]
            times = {m: [] for m in methods}
            peaks = {m: 0.0 for m in methods}
            for round_ in range(a.repeats):
                for m in methods if round_ % 2 == 0 else methods[::-1]:
                    r = _run(m, n, work, a)
                    times[m].append(r["seconds"])
                    peaks[m] = max(peaks[m], r["peak_rss_gb"])
            rec["rfm_s"] = statistics.median(times["rfm"])
            rec["rfm_peak_gb"] = peaks["rfm"]
            if have_duckdb:
                rec["duckdb_s"] = statistics.median(times["duckdb"])
                rec["duckdb_peak_gb"] = peaks["duckdb"]
                rec["rfm_ratio"] = statistics.median(
                    x / y for x, y in zip(times["rfm"], times["duckdb"], strict=True)
                )
            print(
                f"  RFM summary  clvbayes {rec['rfm_s']:.2f} s (peak {rec['rfm_peak_gb']:.2f} GB)"
                + (
                    f", DuckDB {rec['duckdb_s']:.2f} s, ratio {rec['rfm_ratio']:.2f}"
                    if have_duckdb
                    else ""
                ),
                flush=True,
            )
            # ---- fit (only up to --max-fit-customers; larger sizes reuse the largest posterior)
            grad = _run("grad", n, work, a)
            for key in ("bg", "gg"):
                rec[f"{key}_grad_ms"] = 1e3 * grad.get(f"{key}_grad_seconds", float("nan"))
                rec[f"{key}_histories"] = grad.get(f"{key}_histories")
            models = last_models
            if a.max_fit_customers and n > a.max_fit_customers:
                fit: dict = {"skipped": True}
                print(f"  NUTS fit     not run (--max-fit-customers {a.max_fit_customers})")
            else:
                fit = _run("fit", n, work, a, timeout=a.fit_timeout)
                rec["fit_timed_out"] = bool(fit.get("timed_out"))
                for key in FIT_KEYS:
                    if fit.get(key) is not None:
                        rec[key] = fit[key]
            if fit.get("timed_out"):
                rec["fit_timeout"] = a.fit_timeout
                print(f"  NUTS fit     stopped after {a.fit_timeout:.0f} s", flush=True)
                notes.append(
                    f"{_fmt_n(n)}: the NUTS fit was stopped after {a.fit_timeout:.0f} s (its "
                    "time is only known to exceed that; see the profile)."
                )
            elif "failed" in fit:
                print(f"  NUTS fit     failed: {fit['failed']}", flush=True)
            elif not fit.get("skipped"):
                rec["fit_s"], rec["fit_peak_gb"] = fit["seconds"], fit["peak_rss_gb"]
                last_models = models = work
                print(
                    f"  NUTS fit     {rec['fit_s']:.1f} s (BG/NBD {rec['bg_seconds']:.1f} s on "
                    f"{rec['bg_histories']:,} histories, Gamma-Gamma {rec['gg_seconds']:.1f} s on "
                    f"{rec['gg_histories']:,}; gradient {rec['bg_grad_ms']:.1f} / "
                    f"{rec['gg_grad_ms']:.1f} ms; peak {rec['fit_peak_gb']:.2f} GB)",
                    flush=True,
                )
            if models is not None and models != work:
                notes.append(
                    f"{_fmt_n(n)}: scored with the posterior of the {_fmt_n(int(models.name[1:]))} "
                    "fit; the cost of scoring does not depend on the posterior's values."
                )
            # ---- scoring every customer
            if models is not None:
                score = _run("score", n, work, a, models=models, timeout=a.score_timeout)
                if score.get("timed_out"):
                    rec["score_timed_out"] = True
                    rec["score_timeout"] = a.score_timeout
                    frac = score.get("fraction_done", 0.0)
                    print(
                        f"  scoring      stopped after {a.score_timeout:.0f} s "
                        f"({frac:.0%} of the customers done)",
                        flush=True,
                    )
                    notes.append(
                        f"{_fmt_n(n)}: scoring was stopped after {a.score_timeout:.0f} s with "
                        f"{frac:.0%} of the customers done (the last chunks, the most frequent "
                        "buyers, are the slowest)."
                    )
                elif "failed" in score:
                    print(f"  scoring      failed: {score['failed']}", flush=True)
                else:
                    rec["score_s"] = score.get("seconds")
                    rec["score_peak_gb"] = score.get("peak_rss_gb")
                    rec["score_histories"] = score.get("n_histories")
                    print(
                        f"  scoring      {rec['score_s']:.1f} s, peak {rec['score_peak_gb']:.2f} GB "
                        f"({score.get('n_draws')} draws)",
                        flush=True,
                    )
            # ---- peers
            if peer_ok and n == int(a.peer_at):
                import pandas as pd

                pd.read_parquet(work / "rfm.parquet").reset_index().to_csv(
                    work / "rfm.csv", index=False
                )
                pfit = _run("pmm_fit", n, work, a, python=a.peer_python, timeout=2 * a.fit_timeout)
                rec["pmm_ran"] = True
                rec["pmm_fit_s"] = None if pfit.get("timed_out") else pfit.get("seconds")
                rec["pmm_fit_peak_gb"] = pfit.get("peak_rss_gb")
                rec["pmm_version"] = pfit.get("version")
                if pfit.get("timed_out"):
                    notes.append(
                        f"pymc-marketing fit at {_fmt_n(n)} stopped after {2 * a.fit_timeout:.0f} s."
                    )
                elif "failed" in pfit:
                    notes.append(f"pymc-marketing fit at {_fmt_n(n)} failed ({pfit['failed']}).")
                else:
                    pscore = _run("pmm_score", n, work, a, python=a.peer_python)
                    rec["pmm_score_s"] = pscore.get("seconds")
                    rec["pmm_score_peak_gb"] = pscore.get("peak_rss_gb")
                    if "failed" in pscore:
                        notes.append(
                            f"pymc-marketing predictions at {_fmt_n(n)} failed ({pscore['failed']})."
                        )
                print(
                    f"  pymc-marketing fit {_fmt_s(rec.get('pmm_fit_s'))} s, "
                    f"expectations {_fmt_s(rec.get('pmm_score_s'))} s "
                    f"(peak {rec.get('pmm_score_peak_gb') or float('nan'):.2f} GB)",
                    flush=True,
                )
            elif a.peer_results and n == int(a.peer_at):
                earlier = json.loads(a.peer_results.read_text())
                match = [r for r in earlier["records"] if r.get("customers") == n]
                if match and match[0].get("pmm_ran"):
                    rec.update({k: v for k, v in match[0].items() if k.startswith("pmm_")})
                    peer_note = earlier.get("peer_note", peer_note)
                    notes.append(
                        f"pymc-marketing figures at {_fmt_n(n)} are from an earlier run of this "
                        f"script on the same simulated data ({a.peer_results.name}, load average "
                        f"{earlier.get('load_before', float('nan')):.1f} at its start), not re-run."
                    )
            # ---- profiles of the misses at the largest size
            if n == max(sizes) and not a.no_profile:
                if rec.get("fit_timed_out") or (rec.get("fit_s") or 0) > TARGET_SECONDS:
                    it = PROFILE_FIT_ITERATIONS
                    short = argparse.Namespace(**{**vars(a), "chains": 1, "draws": it, "tune": it})
                    pf = _run("fit", n, work, short, profile=True, timeout=a.fit_timeout)
                    if "profile_tottime" in pf:
                        profiles.append(
                            (
                                f"NUTS fit at {_fmt_n(n)}: 1 chain, {it} + {it} iterations, "
                                f"{pf['seconds']:.0f} s under cProfile",
                                pf["profile_tottime"],
                            )
                        )
                if models is not None and (
                    rec.get("score_timed_out")
                    or (rec.get("score_s") or 0) > TARGET_SECONDS
                    or (rec.get("score_peak_gb") or 0) > TARGET_GB
                ):
                    k = min(n, PROFILE_SCORE_CUSTOMERS)
                    ps = _run("score", n, work, a, models=models, profile=True, subsample=k)
                    if "profile_tottime" in ps:
                        profiles.append(
                            (
                                f"scoring {_fmt_n(k)} of the {_fmt_n(n)} customers, "
                                f"{ps['seconds']:.0f} s under cProfile",
                                ps["profile_tottime"],
                            )
                        )
            records.append(rec)
    _write(out_dir, records, profiles, notes, peer_note, load_before, a)


# ---------------------------------------------------------------------------------------
# output


def _write(out_dir: Path, records, profiles, notes, peer_note, load_before, a) -> None:
    """scale.json (everything, for --render), scale.csv, scale.md and scale.png."""
    state = {
        "records": records,
        "profiles": profiles,
        "notes": notes,
        "peer_note": peer_note,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "args": {k: v for k, v in vars(a).items() if isinstance(v, int | float | str | bool)},
    }
    (out_dir / "scale.json").write_text(json.dumps(state, indent=1, default=str))
    _render(out_dir, state)


def _render(out_dir: Path, state: dict) -> None:
    records, profiles, notes = state["records"], state["profiles"], state["notes"]
    peer_note, load_before = state["peer_note"], state["load_before"]
    a = argparse.Namespace(**state["args"])
    fields = sorted({k for r in records for k in r}, key=lambda k: (k != "customers", k))
    with open(out_dir / "scale.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)
    ns = [r["customers"] for r in records]

    def col(key):
        return [r.get(key) if r.get(key) is not None else float("nan") for r in records]

    lines = [
        "# Scale: transactions -> RFM -> NUTS fit -> scores, "
        + " / ".join(_fmt_n(n) for n in ns)
        + " customers",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work: load "
        f"average {load_before:.1f} before and {state['load_after']:.1f} after), Python "
        f"{platform.python_version()}. Generated by `benchmarks/scale.py`"
        + (" --smoke" if a.smoke else "")
        + ".",
        "",
        "Data: BG/NBD (r, alpha, a, b = "
        + ", ".join(f"{v:g}" for v in TRUE_BGNBD.values())
        + ", weeks) + Gamma-Gamma (p, q, gamma = "
        + ", ".join(f"{v:g}" for v in TRUE_GG.values())
        + f") simulated customers, first purchases over {ACQUISITION_DAYS} days, two years of "
        "timestamped transactions (Parquet), weekly models. Every step runs in a fresh process; "
        "peak memory is that process's maximum resident set (its children included). "
        f"Fit: NUTS, {a.chains} chains x {a.draws} draws (+ {a.tune} tuning), default sampler. "
        f"Scoring: every customer, 52 weeks, 10 %/year, {a.score_draws} posterior draws, "
        "credible and predictive intervals.",
        "",
        "| customers | rows | RFM (s) | DuckDB (s) | ratio | RFM peak (GB) | fit (s) | fit peak (GB) "
        "| histories BG / GG | gradient BG / GG (ms) | score (s) | score peak (GB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        fit = _fmt_s(r.get("fit_s"))
        if r.get("fit_timed_out"):
            fit = f"> {r.get('fit_timeout', a.fit_timeout):.0f} (stopped)"
        hist = f"{r['bg_histories']:,} / {r['gg_histories']:,}" if r.get("bg_histories") else "-"
        score = _fmt_s(r.get("score_s"))
        if r.get("score_timed_out"):
            score = f"> {r.get('score_timeout', a.score_timeout):.0f} (stopped)"
        lines.append(
            f"| {_fmt_n(r['customers'])} | {r['rows']:,} | {r['rfm_s']:.2f} "
            f"| {_fmt_s(r.get('duckdb_s'))} | {r.get('rfm_ratio', float('nan')):.2f} "
            f"| {r['rfm_peak_gb']:.2f} | {fit} | {_fmt_gb(r.get('fit_peak_gb'))} "
            f"| {hist} | {r.get('bg_grad_ms', float('nan')):.1f} / {r.get('gg_grad_ms', float('nan')):.1f} "
            f"| {score} | {_fmt_gb(r.get('score_peak_gb'))} |"
        )
    lines += [
        "",
        "Growth (log-log slope of time vs customers; 1 = linear): "
        f"RFM {_slope(ns, col('rfm_s'))}, DuckDB {_slope(ns, col('duckdb_s'))}, "
        f"fit {_slope(ns, col('fit_s'))}, gradient {_slope(ns, col('bg_grad_ms'))}, "
        f"scoring {_slope(ns, col('score_s'))}.",
        "",
    ]
    big = records[-1]
    checks = [
        ("RFM summary within 1.5x DuckDB", big.get("rfm_ratio"), TARGET_RATIO, ""),
        ("RFM summary peak memory", big.get("rfm_peak_gb"), TARGET_GB, " GB"),
        (
            "NUTS fit, both models",
            big.get("fit_s") or (math.inf if big.get("fit_timed_out") else None),
            TARGET_SECONDS,
            " s",
        ),
        (
            "scoring time",
            big.get("score_s") or (math.inf if big.get("score_timed_out") else None),
            TARGET_SECONDS,
            " s",
        ),
        (
            "scoring peak memory",
            big.get("score_peak_gb"),
            TARGET_GB,
            " GB",
        ),
    ]
    lines += [
        f"## Targets at {_fmt_n(big['customers'])} customers",
        "",
        "| target | measured | limit | met |",
        "|---|---:|---:|---|",
    ]
    for name, value, limit, unit in checks:
        met = "-" if value is None else ("yes" if value <= limit else "**no**")
        shown = "-" if value is None else f"{value:.2f}{unit}"
        if value == math.inf:
            shown = "stopped, see the table"
        lines.append(f"| {name} | {shown} | {limit:g}{unit} | {met} |")
    fit_rows = [r for r in records if r.get("bg_min_ess_bulk")]
    if fit_rows:
        lines += [
            "",
            "NUTS: minimum bulk ESS per second of fit (BG/NBD, Gamma-Gamma): "
            + "; ".join(
                f"{_fmt_n(r['customers'])} {r['bg_min_ess_bulk'] / r['bg_seconds']:.1f}, "
                f"{r['gg_min_ess_bulk'] / r['gg_seconds']:.1f} (max r_hat {max(r['bg_max_rhat'], r['gg_max_rhat']):.3f})"
                for r in fit_rows
            )
            + f"; sampler {fit_rows[-1].get('bg_sampler')}.",
        ]
    peer = [r for r in records if r.get("pmm_ran")]
    lines += ["", "## pymc-marketing", ""]
    if peer:
        r = peer[0]
        lines += [
            f"{peer_note}; same RFM table and NUTS settings. Its expectations: P(alive), purchases "
            "over 52 weeks, spend and CLV (12 months, weekly data, monthly discounting with the "
            f"same annual rate) as mean and 90 % credible interval per customer from {a.score_draws} "
            "draws; it has no per-customer predictive intervals, so clvbayes does more work here.",
            "",
            "| customers | step | clvbayes (s) | pymc-marketing (s) | ratio | clvbayes peak (GB) | pymc-marketing peak (GB) |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for step, ours, theirs, ours_m, theirs_m in (
            ("NUTS fit", "fit_s", "pmm_fit_s", "fit_peak_gb", "pmm_fit_peak_gb"),
            (
                "per-customer predictions",
                "score_s",
                "pmm_score_s",
                "score_peak_gb",
                "pmm_score_peak_gb",
            ),
        ):
            o, t = r.get(ours), r.get(theirs)
            ratio = f"{t / o:.1f}x" if o and t else "-"
            lines.append(
                f"| {_fmt_n(r['customers'])} | {step} | {_fmt_s(o)} | {_fmt_s(t)} | {ratio} "
                f"| {r.get(ours_m) or float('nan'):.2f} | {r.get(theirs_m) or float('nan'):.2f} |"
            )
        lines.append("")
        lines.append("Ratio = pymc-marketing time / clvbayes time.")
    else:
        lines.append(f"Not run: {peer_note}.")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if profiles:
        lines += ["", "## Profiles of the missed targets (cProfile, top functions by own time)", ""]
        for title, text in profiles:
            lines += [f"### {title}", "", "```", text, "```", ""]
    (out_dir / "scale.md").write_text("\n".join(lines) + "\n")
    _plot(out_dir / "scale.png", records)
    print(f"\nwrote {out_dir / 'scale.md'}, scale.csv and scale.png")


def _plot(path: Path, records) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["customers"] for r in records]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    series = [
        ("RFM summary (clvbayes)", "rfm_s", "rfm_peak_gb", "o-"),
        ("RFM summary (DuckDB)", "duckdb_s", "duckdb_peak_gb", "o--"),
        ("NUTS fit, BG/NBD + Gamma-Gamma", "fit_s", "fit_peak_gb", "s-"),
        ("scoring every customer", "score_s", "score_peak_gb", "^-"),
    ]
    for label, key, mem, style in series:
        t = [r.get(key) for r in records]
        if any(v is not None for v in t):
            ax_t.plot(ns, [np.nan if v is None else v for v in t], style, label=label)
        m = [r.get(mem) for r in records]
        if any(v is not None for v in m):
            ax_m.plot(ns, [np.nan if v is None else v for v in m], style, label=label)
    for key, limit, style, label in (
        ("fit_timed_out", "fit_timeout", "sC2", "NUTS fit stopped (> limit)"),
        ("score_timed_out", "score_timeout", "^C3", "scoring stopped (> limit)"),
    ):
        stopped = [(r["customers"], r[limit]) for r in records if r.get(key) and r.get(limit)]
        if stopped:
            ax_t.plot(*zip(*stopped, strict=True), style, mfc="none", ms=9, label=label)
    ax_t.axhline(TARGET_SECONDS, color="grey", lw=0.8, ls=":", label="target at 1M (3 min)")
    ax_m.axhline(TARGET_GB, color="grey", lw=0.8, ls=":", label="target at 1M (4 GB)")
    for ax, ylabel in ((ax_t, "seconds"), (ax_m, "peak memory (GB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("customers")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    ax_t.set_title("time")
    ax_m.set_title("peak memory")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
