"""The first-run notice: numba's on-disk cache of the kernels, as a fresh install sees it.

Each check runs in a fresh process with ``NUMBA_CACHE_DIR`` pointing at an empty folder
(numba's cache then lives only there), so the state of this machine's caches cannot
leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    from clvbayes import kernel_cache
    before = kernel_cache.uncached_kernels()
    notice = kernel_cache.first_run_notice()
    from clvbayes.predict import summary
    rows = np.random.default_rng(0).normal(size=(400, 200))  # large enough for the kernel
    summary.draw_stats(rows, 0.9, axis=1)  # compiles the scoring kernel, writes its cache
    after = kernel_cache.uncached_kernels()
    print(json.dumps({"all": sorted(kernel_cache.cached_dispatchers()), "before": before,
                      "notice": notice, "after": after}))
    """
)


def _child(cache_dir: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # compiles into an empty cache: ~1 min
def test_an_empty_cache_is_reported_as_a_first_run_and_filled_by_it(tmp_path):
    seen = _child(tmp_path / "numba")
    # every cached kernel is missing from an empty cache, and the notice says so
    assert len(seen["all"]) >= 10 and sorted(seen["before"]) == seen["all"]
    assert seen["notice"].startswith(f"first run on this installation: {len(seen['all'])} ")
    assert "one-off" in seen["notice"]
    # compiling the scoring kernel wrote its cache entry (and its helper's), nothing else
    assert "clvbayes.predict.summary._row_stats_kernel" not in seen["after"]
    assert "clvbayes.math.bgnbd._futures_kernel" in seen["after"]
    # the next process finds it: no notice any more
    again = _child(tmp_path / "numba")
    assert again["notice"] is None
    assert "clvbayes.predict.summary._row_stats_kernel" not in again["before"]


@pytest.mark.slow  # two whole runs, the first one cold
def test_clvbayes_run_prints_the_notice_only_on_the_first_run(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    exe = Path(sys.executable).with_name("clvbayes")
    runs = []
    for i in range(2):
        res = subprocess.run(
            [str(exe), "run", "--method", "map", "--output", str(tmp_path / f"r{i}")],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        runs.append(res.stderr)
    assert "clvbayes: first run on this installation:" in runs[0]
    assert "first run" not in runs[1]


_COLD_JOB = textwrap.dedent(
    """
    import json, sys
    from numba.core import event
    compiled = []
    class Seen(event.Listener):
        def on_start(self, ev):
            f = ev.data["dispatcher"].py_func
            compiled.append(f"{f.__module__}.{f.__name__}")
        def on_end(self, ev):
            pass
    event.register("numba:compile", Seen())
    from clvbayes import cli
    rc = cli.main(["run", "--method", "map", "--output", sys.argv[1], "--quiet"])
    print(json.dumps({"rc": rc, "compiled": sorted(set(compiled))}))
    """
)


@pytest.mark.slow  # a whole run into an empty cache
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the warm-up uses a second core")
def test_a_first_run_compiles_the_outcome_kernels_in_a_worker_not_here(tmp_path):
    """On a first run the worker process compiles the outcome kernels while this one labels
    the segments, and the predictions load them from the cache: this process compiles the
    labels' kernels (the interval kernel) but none of the outcome simulation."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", _COLD_JOB, str(tmp_path / "report")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
                         check=True)  # fmt: skip
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["rc"] == 0
    assert "clvbayes.predict.summary._row_stats_kernel" in seen["compiled"]  # here, as before
    outcome = {"clvbayes.math.bgnbd._futures_kernel", "clvbayes.predict.clv._outcome_kernel"}
    assert not outcome & set(seen["compiled"]), seen["compiled"]
    assert (tmp_path / "report" / "customers.csv").is_file()
