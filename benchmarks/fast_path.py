"""Benchmark: the fast path (Laplace, MAP) of BG/NBD + Gamma-Gamma against lifetimes' MLE on CDNOW.

Each measurement runs in a fresh Python process on the same customer table (the CDNOW sample
summarised in weeks, calibration to 1997-09-30, written once to a CSV file):

* ``import``: importing the fitting module (``clvbayes.models`` / ``lifetimes``);
* ``first``: the first fit of both models in that process (lazy imports included);
* ``repeated``: the median of further fits of both models in the same process.

clvbayes is measured with ``method="laplace"`` (1,000 posterior draws: real credible intervals)
and ``method="map"`` (a point); lifetimes with ``BetaGeoFitter`` and ``GammaGammaFitter``
(maximum likelihood, a point).  The target of issue 13: clvbayes' Laplace path within 3x of
lifetimes, first call and repeated.

Usage::

    python benchmarks/fast_path.py [--peer-python /path/to/python-with-lifetimes] [--repeats 5]

Prints a markdown table and writes ``fast_path.md`` / ``fast_path.json`` to ``--out``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
tool, method, data, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import pandas as pd
df = pd.read_csv(data, dtype={"customer_id": str}).set_index("customer_id")
t0 = time.perf_counter()
if tool == "clvbayes":
    from clvbayes.models import BetaGeoModel, GammaGammaModel
    df.attrs["time_unit"] = "weeks"
    def fit():
        BetaGeoModel().fit(df, method=method, seed=1)
        GammaGammaModel().fit(df, method=method, seed=2)
else:
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    rep = df[df["frequency"] > 0]
    def fit():
        BetaGeoFitter().fit(df["frequency"], df["recency"], df["T"])
        GammaGammaFitter().fit(rep["frequency"], rep["monetary_value"])
t1 = time.perf_counter()
fit()
t2 = time.perf_counter()
times = []
for _ in range(repeats):
    s = time.perf_counter(); fit(); times.append(time.perf_counter() - s)
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "repeated": sorted(times)[len(times) // 2]}))
"""


def write_data(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from clvbayes.data import calibration_holdout_split
    from clvbayes.datasets import load_cdnow_transactions

    rfm = calibration_holdout_split(
        load_cdnow_transactions(), "1997-09-30", "1998-06-30", monetary_value_col="amount"
    )
    rfm[["frequency", "recency", "T", "monetary_value"]].to_csv(path)


def measure(python: str, tool: str, method: str, data: Path, repeats: int) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(
        [python, "-c", CHILD, tool, method, str(data), str(repeats)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-python", default=sys.executable, help="Python with lifetimes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per measurement")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cdnow_weeks.csv"
        write_data(data)
        rows = {}
        for tool, method, python in [
            ("clvbayes", "laplace", sys.executable),
            ("clvbayes", "map", sys.executable),
            ("lifetimes", "mle", args.peer_python),
        ]:
            runs = [measure(python, tool, method, data, args.repeats) for _ in range(args.rounds)]
            ok = [r for r in runs if "error" not in r]
            if not ok:
                rows[f"{tool} {method}"] = {"error": runs[0]["error"]}
                continue
            rows[f"{tool} {method}"] = {
                k: statistics.median(r[k] for r in ok) for k in ("import", "first", "repeated")
            }
    base = rows.get("lifetimes mle", {})
    lines = [
        "| fit of BG/NBD + Gamma-Gamma (CDNOW sample) | import (s) | first fit (s) | "
        "repeated fit (s) | first / lifetimes | repeated / lifetimes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | |")
            continue
        ratio_first = r["first"] / base["first"] if "first" in base else float("nan")
        ratio_rep = r["repeated"] / base["repeated"] if "repeated" in base else float("nan")
        lines.append(
            f"| {name} | {r['import']:.2f} | {r['first']:.3f} | {r['repeated']:.3f} | "
            f"{ratio_first:.2f} | {ratio_rep:.2f} |"
        )
    text = "\n".join(lines)
    meta = {"python": platform.python_version(), "machine": platform.machine(),
            "rounds": args.rounds, "repeats": args.repeats}  # fmt: skip
    try:
        from importlib.metadata import version

        meta.update({d: version(d) for d in ("pymc", "arviz", "numpy", "scipy")})
    except Exception:
        pass
    print(text)
    print(json.dumps(meta))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stack = f"py{sys.version_info.major}{sys.version_info.minor}"
    (out / f"fast_path_{stack}.md").write_text(
        "# Fast path vs lifetimes (medians of fresh processes)\n\n" + text + "\n\n"
        + "```\n" + json.dumps(meta, indent=1) + "\n```\n"
    )  # fmt: skip
    (out / f"fast_path_{stack}.json").write_text(json.dumps({"rows": rows, "meta": meta}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
