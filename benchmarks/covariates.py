"""Benchmark: what covariates and partial pooling cost (clvbayes.models.segmented).

On simulated BG/NBD + Gamma-Gamma customers (a categorical ``channel`` with 3 levels, a
``country`` segment column with 8 segments, a continuous ``age``), in one process:

* fit time of BG/NBD and Gamma-Gamma (MAP and Laplace) without covariates, with the
  categorical covariate (3 cells), pooled by country with the covariate (24 cells: exact
  per-cell gradient) and with the continuous covariate (one cell per distinct value: the
  vectorised likelihood with central differences);
* ``score_customers`` (expectations and both interval kinds, 39-week horizon).

Usage::

    python benchmarks/covariates.py [--customers 20000] [--smoke] [--out benchmarks/results]

Prints a markdown table and writes ``covariates.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def simulate(n: int, seed: int = 0) -> pd.DataFrame:
    from clvbayes.math import bgnbd, gamma_gamma

    rng = np.random.default_rng(seed)
    channel = rng.choice(["ads", "referral", "web"], n)
    country = rng.choice([f"c{i}" for i in range(8)], n)
    age = rng.normal(40.0, 10.0, n)
    z = (channel == "referral") * 0.5 + 0.01 * (age - 40.0)
    sim = bgnbd.simulate(rng, 0.6, 6.0 * np.exp(-z), 0.8, 2.5, rng.uniform(20, 52, n))
    spend = gamma_gamma.simulate(rng, 5.0, 4.0, 15.0 * np.exp(0.2 * (channel == "web")),
                                 sim["frequency"])  # fmt: skip
    rfm = pd.DataFrame({
        "frequency": sim["frequency"], "recency": sim["recency"], "T": sim["T"],
        "monetary_value": spend["monetary_value"], "channel": channel, "country": country,
        "age": age,
    }, index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"))  # fmt: skip
    rfm.attrs["time_unit"] = "weeks"
    return rfm


VARIANTS = {
    "none": {},
    "channel (3 cells)": {"covariates": ["channel"]},
    "channel, pooled by country (24 cells)": {"covariates": ["channel"], "pooled_by": "country"},
    "age, continuous (1 cell per customer)": {"covariates": ["age"]},
}


def run(n: int, methods: tuple[str, ...]) -> list[dict]:
    from clvbayes.models import BetaGeoModel, GammaGammaModel
    from clvbayes.predict import score_customers

    rfm = simulate(n)
    rows = []
    for label, kw in VARIANTS.items():
        for method in methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                bg = BetaGeoModel(**kw).fit(rfm, method=method, seed=1)
                t1 = time.perf_counter()
                gg = GammaGammaModel(**kw).fit(rfm, method=method, seed=1)
                t2 = time.perf_counter()
                score_customers(rfm, bg, gg, horizon=39.0, seed=2, n_outcome_samples=200)
                t3 = time.perf_counter()
            rows.append({
                "variant": label, "method": method, "cells": int(bg._cells(bg.data_.values)[0].shape[1])
                if kw else 1, "bgnbd_fit_s": t1 - t0, "gg_fit_s": t2 - t1, "score_s": t3 - t2,
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--smoke", action="store_true", help="500 customers, MAP only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    n = 500 if args.smoke else args.customers
    rows = run(n, ("map",) if args.smoke else ("map", "laplace"))
    lines = [
        f"# Covariates and pooling: cost ({n:,} simulated customers)", "",
        f"`python benchmarks/covariates.py --customers {n}`; {platform.python_version()}, "
        f"{platform.machine()}, load {_load()}.", "",
        "| variant | method | cells | BG/NBD fit s | Gamma-Gamma fit s | score_customers s |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['variant']} | {r['method']} | {r['cells']:,} | {r['bgnbd_fit_s']:.2f} | "
                     f"{r['gg_fit_s']:.2f} | {r['score_s']:.2f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("covariates_smoke.md" if args.smoke else "covariates.md")).write_text(text)
    return 0


def _load() -> str:
    try:
        import os

        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
