"""The benchmark scripts still work: tiny smoke runs, plus their measuring and scoring helpers.

The smoke runs start the scripts in fresh processes exactly as a user would
(``python benchmarks/compare_models.py --smoke``) and check the result files; the helpers are
checked against independent computations (hand counts, brute-force averages over random
tie-breaks, a known memory allocation).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import compare_models as cm  # noqa: E402


def _run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=ROOT,
    )  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------
# smoke runs of the scripts (fresh processes)
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_models_smoke_writes_one_row_per_registered_model(tmp_path):
    # every registered purchase family is fitted (NUTS and MAP): minutes on 2 cores
    res = _run("compare_models.py", "--dataset", "simulated", "--out", str(tmp_path), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    stem = tmp_path / "compare_models_simulated"
    for suffix in (".md", ".csv", "_tracking.png", "_params.csv"):
        assert Path(f"{stem}{suffix}").stat().st_size > 0, suffix
    rows = _rows(Path(f"{stem}.csv"))
    # every registered model is in the table, the simulation truth included
    assert [r["model"] for r in rows] == [m.name for m in cm.MODELS]
    for r in rows:
        assert 0 <= float(r["top 10% share"]) <= float(r["top 20% share"]) <= 1
        if r["purchases MAE"]:
            assert float(r["purchases MAE"]) >= 0
            assert float(r["purchases RMSE"]) >= float(r["purchases MAE"])
    bayes = [r for r in rows if r["kind"] in ("bayesian", "truth")]
    assert len(bayes) >= 3  # NUTS, MAP, truth
    for r in bayes:
        assert 0 < float(r["purchases PI90 coverage"]) <= 1
    nuts = next(r for r in rows if r["model"].endswith("NUTS"))
    assert float(nuts["purchase_elpd_loo"]) < 0  # a log density of count data
    text = Path(f"{stem}.md").read_text()
    assert "| model |" in text and "load average" in text


@pytest.mark.slow
def test_speed_smoke_measures_each_stage_in_a_fresh_process(tmp_path):
    res = _run("speed.py", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("speed.md", "speed.csv", "speed.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = _rows(tmp_path / "speed.csv")
    stages = {r["stage"]: r for r in rows if r["table"] == "stages" and r["tool"] == "clvbayes"}
    total = stages["pipeline total (fresh process)"]
    assert float(total["seconds"]) > 0
    assert float(total["peak RSS MiB"]) > 50  # a Python process with numpy and PyMC loaded
    nuts = stages["(ii) BG/NBD NUTS incl. compile"]
    assert float(nuts["min ESS bulk"]) > 0 and float(nuts["ESS per s"]) > 0
    # the fit stages are part of the pipeline process, so shorter than it
    assert float(nuts["seconds"]) < float(total["seconds"])
    backends = [r for r in rows if r["table"] == "backends"]
    assert [r["default"] for r in backends] == ["True"]
    assert "not measured (run with --peers)" in (tmp_path / "speed.md").read_text()


# ------------------------------------------------------------------------------------------
# rank metrics
# ------------------------------------------------------------------------------------------
def test_top_share_matches_sorting_without_ties(rng):
    value = rng.gamma(0.5, 10.0, size=200)
    score = value + rng.normal(0, 5, size=200)
    top = np.argsort(-score)[:20]
    assert cm.top_share(score, value, 0.1) == pytest.approx(value[top].sum() / value.sum())


def test_top_share_and_gini_split_ties_like_random_tie_breaking(rng):
    value = rng.gamma(0.5, 10.0, size=60)
    score = rng.integers(0, 4, size=60).astype(float)  # coarse score, many ties
    shares, ginis = [], []
    for _ in range(4000):
        jitter = score + rng.uniform(0, 1e-3, size=60)  # a random order within ties
        shares.append(cm.top_share(jitter, value, 0.2))
        ginis.append(cm.gini(jitter, value))
    assert cm.top_share(score, value, 0.2) == pytest.approx(np.mean(shares), abs=0.01)
    assert cm.gini(score, value) == pytest.approx(np.mean(ginis), abs=0.01)


def test_gini_is_one_for_the_perfect_ranking_and_minus_one_for_the_reverse():
    value = np.array([0.0, 1.0, 2.0, 5.0, 10.0])
    assert cm.gini(value, value) == pytest.approx(1.0)
    assert cm.gini(-value, value) == pytest.approx(-1.0)


# ------------------------------------------------------------------------------------------
# baselines, on a log small enough to count by hand
# ------------------------------------------------------------------------------------------
@pytest.fixture
def tiny():
    """Four customers; calibration ends 1997-09-30 (last quarter: 1997-07-02 .. 09-30)."""
    rows = [
        ("A", "1997-01-05", 10), ("A", "1997-05-01", 20), ("A", "1997-08-01", 30),
        ("A", "1997-09-01", 40), ("A", "1998-01-01", 50),   # bought in both quarters
        ("B", "1997-02-01", 10), ("B", "1997-06-01", 15),   # prev quarter only
        ("C", "1997-03-01", 10), ("C", "1997-09-30", 25),   # last quarter only (on the end day)
        ("D", "1997-01-20", 10), ("D", "1998-03-01", 60),   # nothing after the first purchase
    ]  # fmt: skip
    tx = pd.DataFrame(rows, columns=["customer_id", "date", "amount"])
    tx["date"] = pd.to_datetime(tx["date"])
    return cm.Dataset("tiny", "hand-made", tx, cm._split(tx))


def test_retention_rate_counts_customers_active_in_consecutive_quarters(tiny):
    rho, active = cm.retention_rate(tiny)
    # active in 1997-04-02 .. 07-01: A (05-01) and B (06-01); of those, A bought again in Q3
    assert rho == pytest.approx(1 / 2)
    assert dict(zip(tiny.rfm.index, active, strict=True)) == {
        "A": True, "B": False, "C": True, "D": False,
    }  # fmt: skip


def test_last_period_repeats_scale_the_last_quarter_to_the_holdout(tiny):
    pred = cm._run_last_period(tiny, cm.Settings())
    scale = tiny.horizon / 13.0
    by_id = dict(zip(tiny.rfm.index, zip(pred.purchases, pred.spend, strict=True), strict=True))
    assert by_id["A"] == pytest.approx((2 * scale, 70 * scale))
    assert by_id["B"] == pytest.approx((0.0, 0.0))
    assert by_id["C"] == pytest.approx((1 * scale, 25 * scale))


def test_historical_and_retention_baselines_follow_their_formulas(tiny):
    rfm, H = tiny.rfm, tiny.horizon
    hist = cm._run_historical(tiny, cm.Settings())
    rate = rfm["frequency"] / rfm["T"]
    np.testing.assert_allclose(hist.purchases, rate * H)
    np.testing.assert_allclose(hist.spend, rfm["monetary_value"] * rate * H)
    ret = cm._run_retention(tiny, cm.Settings())
    # rho = 1/2 per 13-week quarter over a 39-week holdout: 13 (1/2 + 1/4 + 1/8) weeks of buying
    weeks = 13 * (0.5 + 0.25 + 0.125)
    assert H == pytest.approx(39.0)
    expected = rate * weeks * np.array([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(ret.purchases, expected)
    assert ret.holdout_curve(np.array([H]))[0] == pytest.approx(expected.sum())


def test_model_registry_includes_every_purchase_model_with_both_methods():
    from clvbayes.models.protocols import purchase_models

    names = [m.name for m in cm.MODELS]
    assert "BG/NBD + GG NUTS" in names and "BG/NBD + GG MAP" in names
    assert {"bayesian", "baseline", "truth"} == {m.kind for m in cm.MODELS}
    assert len(purchase_models()) == 3  # BG/NBD, MBG/NBD, Pareto/NBD
    families = [m for m in cm.MODELS if m.kind == "bayesian" and "average" not in m.name]
    assert len(families) == 2 * len(purchase_models())
    # plus the stacking average of the families, for each method with posterior draws
    assert [m.name for m in cm.MODELS if "average" in m.name] == [
        "model average (stacking) + GG NUTS"
    ]


# ------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------
def test_run_child_reports_the_memory_a_child_allocates(tmp_path):
    code = textwrap.dedent(
        """
        import time, numpy as np
        import _common
        a = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        time.sleep(0.5)
        _common.write_result({"n": int(a.size)})
        """
    )
    script = tmp_path / "child.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    res = _common.run_child([sys.executable, str(script)], env=env, timeout=120)
    assert res.ok, res.stderr
    assert res.payload == {"n": 300 * 2**20 // 8}
    assert res.max_rss_mb >= 300
    if _common.psutil is not None:
        assert 300 <= res.peak_rss_mb <= res.max_rss_mb + 50
    assert res.wall_seconds >= 0.5


def test_run_child_kills_a_child_past_its_timeout(tmp_path):
    res = _common.run_child([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert res.timed_out and not res.ok
    assert res.wall_seconds < 30
    assert "timed out" in res.error()


def test_markdown_table_formats_numbers_and_marks_numeric_columns():
    text = _common.markdown_table(
        [{"name": "a", "x": 1234.5678, "y": None}, {"name": "b|c", "x": 0.012345, "y": 3}]
    )
    lines = text.strip().splitlines()
    assert lines[0] == "| name | x | y |"
    assert lines[1] == "|:---|---:|---:|"
    assert lines[2] == "| a | 1,235 |  |"
    assert lines[3] == "| b\\|c | 0.0123 | 3 |"


@pytest.mark.slow
def test_scale_smoke_runs_every_step_and_writes_results(tmp_path):
    """benchmarks/scale.py --smoke: simulate, summarise (vs DuckDB if installed), fit, score."""
    done = _run("scale.py", "--skip-peers", "--no-profile", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "scale.md").read_text()
    assert "RFM" in table and "score" in table
    assert (tmp_path / "scale.csv").exists() and (tmp_path / "scale.png").exists()


def test_peer_script_parses_its_sections_and_renders_a_table(tmp_path):
    """benchmarks/peer.py: argument parsing and the markdown of a made-up record (no peer run)."""
    import peer

    a = peer.parse_args(["fast-path", "--sizes", "1e3", "--peer-python", "/x/python"])
    assert (a.section, a.sizes, a.peer_python, a.rounds) == ("fast-path", ["1e3"], "/x/python", 2)
    assert peer.parse_args(["--render"]).render
    with pytest.raises(SystemExit):
        peer.parse_args([])  # a section or --render is required
    stages = {k: {"seconds": 1.0, "peak_rss_mb": 1.0} for k in ("fit_bgnbd", "fit_gg", "predict")}
    rec = {"section": "fast-path", "n": 1000, "ok": True, "wall_seconds": 4.0,
           "peak_rss_mb": 100.0, "load_at_start": 1.0, "load_at_end": 2.0, "stages": stages,
           "command": "python benchmarks/peer.py --child {}"}  # fmt: skip
    recs = [dict(rec, name=n) for n in ("clvbayes map", "pymc-marketing map", "lifetimes mle")]
    text = peer.render({"records": recs, "machine": {"python": "3.x"}}, tmp_path, "pytest")
    assert "| 1,000 | clvbayes map | 4.00 |" in text and "1.00 |" in text
    assert (tmp_path / "peer_pytest.md").read_text() == text


def test_a_child_stopped_at_its_limit_keeps_the_stages_it_finished(tmp_path):
    """A peer too slow to finish (pymc-marketing at 100k) still reports its finished stages,
    and the tables show them instead of 'timed out'."""
    import peer

    code = textwrap.dedent(
        """
        import time
        import _common
        meter = _common.Meter()
        meter.after_stage = lambda: _common.write_result({"stages": meter.stages, "partial": True})
        with meter.stage("fit_bgnbd"):
            time.sleep(0.2)
        with meter.stage("predict"):
            time.sleep(60)
        """
    )
    script = tmp_path / "child.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(BENCH))
    res = _common.run_child([sys.executable, str(script)], env=env, timeout=5)
    assert res.timed_out and not res.ok
    assert res.payload["partial"] and list(res.payload["stages"]) == ["fit_bgnbd"]
    assert res.payload["stages"]["fit_bgnbd"]["seconds"] >= 0.2
    rec = {"ok": False, "error": "timed out after 5 s", **res.payload}
    assert peer._span([rec], None, "fit_bgnbd").startswith("0.")
    assert peer._span([rec], None, "predict") == "timed out after 5 s"
    assert peer._span([rec], "wall_seconds") == "timed out after 5 s"
