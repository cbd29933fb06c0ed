"""Benchmark: transactions -> RFM summary, clvbayes vs one DuckDB query.

Simulates a transaction log (default 10M rows, 1M customers, two years, timestamps to the
second, several purchases per day possible), writes it to Parquet in a temporary folder
and times, each in a fresh process so that peak memory is per method:

(a) ``summarize_transactions(read_transactions(path), ...)`` (clvbayes, default options:
    same-day merge, weeks);
(b) the same summary as one DuckDB SQL query over the same Parquet file, fetched into a
    pandas DataFrame.

It checks that both give the same table, prints the times, the ratio and the peak memory,
and (unless ``--smoke``) writes ``benchmarks/results/rfm_summary.md`` and ``.csv``.

Usage::

    python benchmarks/rfm_summary.py                    # full size, int and string ids
    python benchmarks/rfm_summary.py --smoke            # tiny run, writes nothing
    python benchmarks/rfm_summary.py --rows 1e6 --customers 1e5 --id-type long

Needs ``duckdb`` (``pip install clvbayes[bench]``); without it only clvbayes is timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
START = np.datetime64("2020-01-01T00:00:00", "s")
DAYS = 731
END = "2021-12-31"
ID_TYPES = {
    "int": "int64 customer numbers 0..n-1",
    "str": "8-character text ids, 'C0000042'",
    "varstr": "text ids of varying length, '42'",
    "long": "20-character text ids, 'customer-0000000042'",
}

DUCKDB_QUERY = """
WITH daily AS (        -- same-day merge: one transaction per customer and day
    SELECT customer_id, CAST(date AS DATE) AS day, SUM(amount) AS amount
    FROM read_parquet('{path}')
    GROUP BY customer_id, day
), per_customer AS (
    SELECT customer_id,
           MIN(day) AS first_day,
           MAX(day) AS last_day,
           COUNT(*) AS n_days,
           SUM(amount) AS total,
           arg_min(amount, day) AS first_amount
    FROM daily
    GROUP BY customer_id
)
SELECT customer_id,
       n_days - 1 AS frequency,
       (last_day - first_day) / 7.0 AS recency,
       (DATE '{end}' - first_day) / 7.0 AS T,
       CASE WHEN n_days > 1 THEN (total - first_amount) / (n_days - 1) ELSE 0 END
           AS monetary_value,
       first_day AS first_purchase
FROM per_customer
ORDER BY customer_id
"""


def simulate(rows: int, customers: int, id_type: str, seed: int = 20240601):
    """A seeded transaction log as a pyarrow Table, in time order like a real log."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    # every customer buys at least once; the rest of the rows go to random customers
    who = np.concatenate([np.arange(customers), rng.integers(0, customers, rows - customers)])
    seconds = rng.integers(0, DAYS * 86_400, rows)
    order = np.argsort(seconds, kind="stable")
    who, seconds = who[order], seconds[order]
    amount = np.round(rng.lognormal(3.0, 0.8, rows), 2)
    if id_type == "int":
        ids = pa.array(who)
    else:
        fmt = {"str": "C{:07d}", "varstr": "{}", "long": "customer-{:010d}"}[id_type]
        labels = np.array([fmt.format(i) for i in range(customers)], dtype=object)
        ids = pa.array(labels).take(pa.array(who))
    return pa.table(
        {
            "customer_id": ids,
            "date": pa.array((START + seconds.astype("timedelta64[s]")).astype("datetime64[us]")),
            "amount": pa.array(amount),
        }
    )


# ---------------------------------------------------------------------------------------
# workers (run in a fresh process each)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def _worker(method: str, path: str, out: str, trace: bool) -> None:
    """Time one run of ``method`` in this (fresh) process; print a JSON line."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    if method == "clvbayes":
        from clvbayes.data import read_transactions, summarize_transactions

        def run() -> pd.DataFrame:
            return summarize_transactions(
                read_transactions(path),
                customer_id_col="customer_id",
                datetime_col="date",
                monetary_value_col="amount",
                observation_end=END,
            )

    else:
        import duckdb

        con = duckdb.connect()
        query = DUCKDB_QUERY.format(path=path, end=END)

        def run() -> pd.DataFrame:
            return con.sql(query).df()

    baseline = _rss_gb()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    result = run()
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    peak = _rss_gb()
    extra = {}
    if method == "clvbayes" and trace:  # traced NumPy/Python allocations of the summary
        import tracemalloc

        from clvbayes.data import read_transactions, summarize_transactions

        df = read_transactions(path)
        tracemalloc.start()
        summarize_transactions(df, monetary_value_col="amount", observation_end=END)
        extra["traced_peak_gb"] = tracemalloc.get_traced_memory()[1] / 1024**3
        tracemalloc.stop()
        del df
    elif method == "duckdb":
        import duckdb

        extra["threads"] = int(con.sql("SELECT current_setting('threads')").fetchall()[0][0])
        extra["version"] = duckdb.__version__
    result = result.reset_index() if "customer_id" not in result.columns else result
    result.to_parquet(out)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_gb": peak,
                "baseline_rss_gb": baseline,
                **extra,
            }
        )
    )


def _run_worker(method: str, path: Path, out: Path, trace: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--path", str(path)]
    cmd += ["--result", str(out)] + (["--trace"] if trace else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(ours: Path, theirs: Path) -> str:
    import pandas as pd

    a = pd.read_parquet(ours).set_index("customer_id").sort_index()
    b = pd.read_parquet(theirs).set_index("customer_id").sort_index()
    assert len(a) == len(b), (len(a), len(b))
    assert (a.index == b.index).all(), "customer ids differ"
    assert (a["frequency"].to_numpy() == b["frequency"].to_numpy()).all(), "frequency differs"
    for col in ("recency", "T", "monetary_value"):
        np.testing.assert_allclose(a[col], b[col].astype(float), rtol=1e-9, atol=1e-9)
    same_day = a["first_purchase"].to_numpy().astype("datetime64[D]") == b[
        "first_purchase"
    ].to_numpy().astype("datetime64[D]")
    assert same_day.all(), "first_purchase differs"
    return f"identical ({len(a):,} customers)"


def _fmt_rows(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n:,}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, default=10_000_000)
    parser.add_argument("--customers", type=float, default=1_000_000)
    parser.add_argument("--id-type", nargs="+", default=["int", "str"], choices=list(ID_TYPES))
    parser.add_argument("--repeats", type=int, default=5, help="rounds per method")
    parser.add_argument("--smoke", action="store_true", help="tiny run; writes no results")
    parser.add_argument("--worker", choices=["clvbayes", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.path, args.result, args.trace)
        return
    rows, customers, repeats = int(args.rows), int(args.customers), args.repeats
    if args.smoke:
        rows, customers, repeats = 20_000, 2_000, 1
    try:
        import duckdb  # noqa: F401

        methods = ["clvbayes", "duckdb"]
    except ImportError:
        print("duckdb is not installed (pip install clvbayes[bench]): timing clvbayes only")
        methods = ["clvbayes"]

    import pyarrow.parquet as pq

    records = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clvbayes-bench-") as tmp:
        for id_type in args.id_type:
            path = Path(tmp) / f"tx_{id_type}.parquet"
            t0 = time.perf_counter()
            pq.write_table(simulate(rows, customers, id_type), path)
            size_mb = path.stat().st_size / 1e6
            print(
                f"\n{_fmt_rows(rows)} rows, {_fmt_rows(customers)} customers, ids: "
                f"{ID_TYPES[id_type]} ({size_mb:.0f} MB Parquet, simulated in "
                f"{time.perf_counter() - t0:.1f} s)"
            )
            # rounds alternate the methods, each run in a fresh process, so that a
            # change in machine load hits both; the ratio is the median of paired ratios
            res = {m: {"times": [], "cpu": [], "peak_rss_gb": 0.0} for m in methods}
            for round_ in range(repeats):
                for method in methods if round_ % 2 == 0 else methods[::-1]:
                    out = Path(tmp) / f"{method}.parquet"
                    r = _run_worker(method, path, out, trace=round_ == 0)
                    res[method]["times"].append(r.pop("seconds"))
                    res[method]["cpu"].append(r.pop("cpu_seconds"))
                    res[method]["peak_rss_gb"] = max(
                        res[method]["peak_rss_gb"], r.pop("peak_rss_gb")
                    )
                    res[method].update(r)
            for method, r in res.items():
                print(
                    f"  {method:9s} best {min(r['times']):6.2f} s  median "
                    f"{statistics.median(r['times']):6.2f} s  CPU {statistics.median(r['cpu']):6.2f} s"
                    f"  peak RSS {r['peak_rss_gb']:.2f} GB"
                    + (
                        f"  (NumPy traced peak {r['traced_peak_gb']:.2f} GB)"
                        if "traced_peak_gb" in r
                        else f"  ({r.get('threads')} threads, duckdb {r.get('version')})"
                    )
                )
            agreement = "not compared"
            ratio = float("nan")
            if "duckdb" in res:
                agreement = _compare(Path(tmp) / "clvbayes.parquet", Path(tmp) / "duckdb.parquet")
                ratio = statistics.median(
                    a / b
                    for a, b in zip(res["clvbayes"]["times"], res["duckdb"]["times"], strict=True)
                )
                print(
                    f"  results {agreement}; ratio clvbayes/duckdb (median of rounds) {ratio:.2f}"
                )
            for method, r in res.items():
                records.append(
                    {
                        "rows": rows,
                        "customers": customers,
                        "id_type": id_type,
                        "method": method,
                        "best_s": round(min(r["times"]), 3),
                        "median_s": round(statistics.median(r["times"]), 3),
                        "median_cpu_s": round(statistics.median(r["cpu"]), 3),
                        "repeats": len(r["times"]),
                        "peak_rss_gb": round(r["peak_rss_gb"], 3),
                        "ratio_to_duckdb": round(ratio, 3) if method == "clvbayes" else 1.0,
                        "agreement": agreement,
                    }
                )
    if args.smoke:
        return
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "rfm_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    lines = [
        "# RFM summary: clvbayes vs DuckDB",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load_before:.1f} before the run "
        f"and {os.getloadavg()[0]:.1f} after. Generated by `benchmarks/rfm_summary.py`.",
        "",
        "Task: Parquet file -> one row per customer (same-day merge, repeat count, recency, "
        "T, mean repeat value, weeks). clvbayes: `summarize_transactions(read_transactions"
        "(path))`; DuckDB: one SQL query fetched with `.df()`. Each method runs in a fresh "
        "process, alternating between the methods round by round; times include reading the "
        "file; the ratio is the median over rounds of clvbayes time / DuckDB time. Peak RSS "
        "is the whole process (interpreter and imports included).",
        "",
        "| rows | customers | ids | method | best (s) | median (s) | median CPU (s) "
        "| peak RSS (GB) | ratio to DuckDB |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {_fmt_rows(r['rows'])} | {_fmt_rows(r['customers'])} | {r['id_type']} "
            f"| {r['method']} | {r['best_s']:.2f} | {r['median_s']:.2f} | {r['median_cpu_s']:.2f} "
            f"| {r['peak_rss_gb']:.2f} | {r['ratio_to_duckdb']:.2f} |"
        )
    lines += ["", "Id types: " + "; ".join(f"`{k}` = {v}" for k, v in ID_TYPES.items()), ""]
    (RESULTS / "rfm_summary.md").write_text("\n".join(lines))
    print(f"\nwrote {RESULTS / 'rfm_summary.md'} and .csv")


if __name__ == "__main__":
    main()
