"""Benchmark: NUTS on every registered purchase model, on the CDNOW sample (39-week calibration).

For each model of :func:`clvbayes.models.protocols.purchase_models` (BG/NBD, MBG/NBD,
Pareto/NBD) and Gamma-Gamma, in a fresh process, ``model.fit(rfm, method="nuts")`` with each
NUTS back-end of ``--samplers`` (default: the default back-end, clvbayes' own) and settings (4 chains x 1000 draws after 1000 tuning steps, or each of ``--tune``; seed 1, or
``--seeds``): wall time
of the fit (compilation included), divergences, max r_hat, smallest bulk and tail ESS over the
parameters, and ESS per second of fit.  Each model is fitted ``--repeats`` times (fresh
processes; the first includes compiling into an empty or warm cache, as it finds it).

Usage::

    python benchmarks/nuts_families.py               # writes benchmarks/results/nuts_families.md
    python benchmarks/nuts_families.py --smoke       # 2 x 100 draws, to a temporary folder
    python benchmarks/nuts_families.py --samplers clvbayes,pymc   # both back-ends, side by side
    python benchmarks/nuts_families.py --tune 1000,500 --repeats 3 --seeds 1,2,3  # nuts_tuning_py3XX.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

from _common import ROOT, info_block, load_average, machine_info, markdown_table, resolve_out

_CHILD = textwrap.dedent(
    """
    import json, sys, time, warnings
    t0 = time.perf_counter()
    from clvbayes.data import calibration_holdout_split
    from clvbayes.datasets import CALIBRATION_END, OBSERVATION_END, load_cdnow_transactions
    from clvbayes.models import GammaGammaModel
    from clvbayes.models.protocols import purchase_models
    key, draws, tune, chains, seed = sys.argv[1], *map(int, sys.argv[2:5]), int(sys.argv[6])
    sampler = None if sys.argv[5] == "default" else sys.argv[5]
    rfm = calibration_holdout_split(
        load_cdnow_transactions(), calibration_end=CALIBRATION_END,
        observation_end=OBSERVATION_END, time_unit="weeks", duplicate_rows="keep",
        monetary_value_col="amount",
    )
    cls = GammaGammaModel if key == "gg" else purchase_models()[key]
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = cls().fit(rfm, method="nuts", draws=draws, tune=tune, chains=chains, seed=seed,
                          progressbar=False, nuts_sampler=sampler)
    fit_s = time.perf_counter() - t1
    info = model.fit_info_
    print(json.dumps({
        "model": cls.__name__, "key": key, "tune": tune, "seed": seed, "fit_s": fit_s,
        "import_and_data_s": t_import,
        "sampler": info.get("nuts_sampler"), "divergences": info.get("divergences"),
        "max_r_hat": info.get("max_r_hat"), "min_ess_bulk": info.get("min_ess_bulk"),
        "min_ess_tail": info.get("min_ess_tail"), "n_gradients": info.get("n_gradients"),
        "warnings": sorted({type(w.message).__name__ for w in caught}),
    }))
    """
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--samplers", default="default",
                        help="comma-separated NUTS back-ends (clvbayes, pymc, nutpie, numpyro)")
    parser.add_argument("--models", default=None,
                        help="comma-separated keys (bgnbd, mbgnbd, pnbd, gg); default all")
    parser.add_argument("--tune", default=None,
                        help="comma-separated tuning lengths, side by side (default 1000)")
    parser.add_argument("--seeds", default="1",
                        help="comma-separated seeds; each repeat of a (model, sampler, tune) "
                        "uses the next one (default 1: repeats differ only in time)")
    args = parser.parse_args(argv)
    from clvbayes.models.protocols import purchase_models

    draws, tune, chains = (100, 100, 2) if args.smoke else (1000, 1000, 4)
    tunes = [int(t) for t in args.tune.split(",")] if args.tune else [tune]
    seeds = [int(s) for s in args.seeds.split(",")]
    repeats = 1 if args.smoke else args.repeats
    rows = []
    keys = args.models.split(",") if args.models else [*purchase_models(), "gg"]
    jobs = [(k, s, t) for k in keys for s in args.samplers.split(",") for t in tunes]
    for key, sampler, tune in jobs:
        for rep in range(repeats):
            seed = seeds[rep % len(seeds)]
            argv_child = [key, str(draws), str(tune), str(chains), sampler, str(seed)]
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, *argv_child],
                capture_output=True, text=True, cwd=ROOT, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["run"] = rep + 1
            row["ess_bulk_per_s"] = row["min_ess_bulk"] / row["fit_s"]
            row["load_1min"] = load_average()[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    cols = ["model", "run", "sampler", "tune", "seed", "fit_s", "divergences", "max_r_hat", "min_ess_bulk",
            "min_ess_tail", "ess_bulk_per_s", "n_gradients", "load_1min"]  # fmt: skip
    text = (
        "# NUTS on every purchase model (CDNOW sample, 39-week calibration, 2,357 customers)\n\n"
        f"{chains} chains x {draws} draws after `tune` tuning steps, each fit in a fresh "
        "process; `fit_s` is the wall time of `model.fit` (compilation included). Command: "
        f"`python benchmarks/nuts_families.py {' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n"
        + markdown_table([{c: r.get(c) for c in cols} for r in rows])
        + "\n\n" + info_block(machine_info(["pymc", "pytensor", "arviz", "numpy", "nutpie"]))
    )  # fmt: skip
    out_dir = resolve_out(args.out, args.smoke)
    stem = "nuts_tuning" if args.tune else "nuts_families"  # --tune: its own results file
    name = f"{stem}_py{sys.version_info.major}{sys.version_info.minor}.md"
    (out_dir / name).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
