"""The ``clvbayes`` command: the main job end to end, every user error path, save/load of the report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clvbayes import cli
from clvbayes.report import read_report_table, validate_report
from clvbayes.segments import named_segments

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundled_report(tmp_path_factory):
    """``clvbayes run --method map`` on the bundled CDNOW sample (the README's first command)."""
    out = tmp_path_factory.mktemp("cli") / "clvbayes-report"
    rc = cli.main(["run", "--method", "map", "--output", str(out), "--cac", "25", "--quiet"])
    assert rc == 0
    return out


def _summary(folder):
    return json.loads((folder / "model_summary.json").read_text())


def _transactions(n_customers=60, seed=11):
    """Small synthetic log: zero-padded ids, day-first dates, a channel, repeat buyers."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_customers):
        first = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 60)))
        n = 1 + rng.poisson(2.0) if i % 3 else 1
        days = np.sort(rng.integers(0, 300, n - 1)) if n > 1 else np.array([], dtype=int)
        for d in [0, *days.tolist()]:
            rows.append(
                {
                    "id": f"{i:04d}",
                    "when": (first + pd.Timedelta(days=int(d))).strftime("%d/%m/%Y"),
                    "value": round(float(rng.gamma(4.0, 6.0)), 2),
                    "channel": ["web", "store", "app"][i % 3] if i % 7 else None,
                }
            )
    return pd.DataFrame(rows)


def _write_csv(df, path):
    df.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- the main job
def test_map_run_on_bundled_data_validates(bundled_report):
    validate_report(bundled_report)
    s = _summary(bundled_report)
    bundled = REPO / "clvbayes" / "datasets" / "files" / "CDNOW_sample.txt"
    assert s["data"]["input"]["sha256"] == hashlib.sha256(bundled.read_bytes()).hexdigest()
    assert s["data"]["n_rows"] == 6919 and s["data"]["n_customers"] == 2357
    assert s["data"]["calibration_end"].startswith("1997-09-30")
    assert s["data"]["excluded"]["customers_first_seen_in_holdout"] == 0
    assert s["settings"]["horizon"] == 52 and s["settings"]["annual_discount_rate"] == 0.1
    assert s["settings"]["time_unit"] == "weeks" and s["settings"]["method"] == "map"
    assert set(s["models"]) == {"bgnbd", "gamma_gamma"}
    params = {p["parameter"]: p for p in s["models"]["bgnbd"]["parameters"]}
    assert set(params) == {"r", "alpha", "a", "b"}
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(params["r"])
    # a MAP fit is a point: no (zero-width) parameter interval in the summary
    assert "lower" not in params["r"] and "upper" not in params["r"]
    assert s["models"]["gamma_gamma"]["fit"]["n_customers_fitted"] == 946
    # the holdout check: 39 weeks, actual CDNOW holdout purchases 1,882
    h = s["holdout"]
    assert h["duration"] == 39 and h["purchases"]["actual_total"] == 1882
    assert 0.8 < h["purchases"]["customer_pi_coverage"] <= 1
    assert "Holdout check" in (bundled_report / "model_summary.md").read_text()


def test_bundled_report_tables(bundled_report):
    customers = read_report_table(bundled_report / "customers.csv")
    segments = read_report_table(bundled_report / "segments.parquet")
    assert len(customers) == 2357 and customers["customer_id"].str.len().eq(5).all()
    assert customers["customer_id"].iloc[0] == "00004"
    assert int(customers["frequency_holdout"].sum()) == 1882
    np.testing.assert_allclose(customers["clv_to_cac"], customers["clv_mean"] / 25, rtol=1e-15)
    # segment labels agree with the final predictions in the table
    relabelled = named_segments(customers.drop(columns=["segment"]).set_index("customer_id"))
    assert relabelled.tolist() == customers["segment"].tolist()
    # segment rows count the customers of each label
    by_label = segments[segments["grouping"] == "segment"].set_index("group")["n_customers"]
    assert by_label.to_dict() == customers["segment"].value_counts().to_dict()
    deciles = segments[segments["grouping"] == "clv_decile"]
    assert deciles["group"].tolist() == [str(k) for k in range(1, 11)]
    total = segments[segments["grouping"] == "all"].iloc[0]
    assert total["n_customers"] == 2357
    assert total["clv_total_mean"] == pytest.approx(customers["clv_mean"].sum(), rel=1e-9)
    assert total["clv_total_pi_lower"] < total["clv_total_mean"] < total["clv_total_pi_upper"]


def test_saved_models_reload_to_identical_predictions(bundled_report):
    from clvbayes.data import calibration_holdout_split
    from clvbayes.datasets import load_cdnow_transactions
    from clvbayes.models import BetaGeoModel, CLVModel, GammaGammaModel
    from clvbayes.predict import score_customers

    bg = CLVModel.load(bundled_report / "bgnbd.nc")
    gg = GammaGammaModel.load(bundled_report / "gamma_gamma.nc")
    assert isinstance(bg, BetaGeoModel) and bg.time_unit_ == "weeks"
    rfm = calibration_holdout_split(
        load_cdnow_transactions(), "1997-09-30", "1998-06-30", monetary_value_col="amount"
    )
    st = _summary(bundled_report)["settings"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = score_customers(
            rfm, bg, gg, horizon=st["horizon"], annual_discount_rate=st["annual_discount_rate"],
            margin=st["margin"], prob=st["prob"], seed=st["seed"],
        )  # fmt: skip
    written = read_report_table(bundled_report / "customers.csv").set_index("customer_id")
    cols = list(again.customers.columns)
    recomputed = again.customers.set_axis(written.index)
    pd.testing.assert_frame_equal(written[cols], recomputed, check_exact=True, check_names=False)
    # the training data travel with the model: same P(alive) without passing the table
    np.testing.assert_array_equal(bg.p_alive().values.ravel(), written["p_alive_mean"].to_numpy())


def test_user_csv_with_every_option(tmp_path, capsys):
    tx = _transactions()
    path = _write_csv(tx.rename(columns={"value": "spent"}), tmp_path / "orders.csv")
    out = tmp_path / "out" / "report"
    rc = cli.main(
        ["run", str(path), "--customer-id-col", "id", "--date-col", "when", "--amount-col",
         "spent", "--date-format", "%d/%m/%Y", "--time-unit", "days", "--calibration-end",
         "2024-07-31", "--horizon", "90", "--discount-rate-per-period", "0.0003",
         "--margin", "0.4", "--prob", "0.8", "--seed", "5", "--method", "map",
         "--group-by", "channel", "--format", "csv", "--output", str(out)]
    )  # fmt: skip
    err = capsys.readouterr()
    assert rc == 0, err.err
    # progress on stderr with step names and timings; the result line on stdout
    assert "fitting the BG/NBD purchase model (map)" in err.err and "done in" in err.err
    assert f"report written to {out}" in err.out
    validate_report(out)
    assert not (out / "customers.parquet").exists()
    customers = read_report_table(out / "customers.csv")
    assert customers["customer_id"].tolist() == sorted(tx["id"].unique())  # leading zeros kept
    assert customers["channel"].isna().sum() == sum(1 for i in range(60) if i % 7 == 0)
    assert "frequency_holdout" in customers.columns
    segments = read_report_table(out / "segments.csv")
    assert set(segments.loc[segments["grouping"] == "channel", "group"].dropna()) == {
        "web", "store", "app"
    }  # fmt: skip
    s = _summary(out)
    assert s["settings"]["time_unit"] == "days" and s["settings"]["horizon"] == 90
    assert s["settings"]["discount_rate_per_period"] == 0.0003 and s["settings"]["prob"] == 0.8
    assert s["data"]["columns"] == {"customer_id": "id", "date": "when", "amount": "spent"}
    assert s["data"]["input"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert s["holdout"]["time_unit"] == "days"
    dictionary = pd.read_csv(out / "data_dictionary.csv")
    assert dictionary.set_index("column").loc["recency", "unit"] == "days"
    assert "next 90 days" in dictionary.set_index("column").loc["clv_mean", "meaning"]


def test_parquet_input_without_holdout(tmp_path):
    tx = _transactions(seed=3).rename(columns={"id": "customer_id", "when": "date",
                                               "value": "amount"})  # fmt: skip
    tx["date"] = pd.to_datetime(tx["date"], format="%d/%m/%Y")
    path = tmp_path / "tx.parquet"
    tx.to_parquet(path)
    out = tmp_path / "r"
    assert cli.main(["run", str(path), "--method", "map", "-o", str(out), "-q"]) == 0
    validate_report(out)
    s = _summary(out)
    assert s["holdout"] is None and s["settings"]["horizon"] == 52
    assert "frequency_holdout" not in read_report_table(out, "customers").columns


# ---------------------------------------------------------------- user errors
def _bad_csv(tmp_path, kind):
    tx = _transactions(n_customers=12).rename(columns={"id": "customer_id", "when": "date",
                                                       "value": "amount"})  # fmt: skip
    tx["date"] = pd.to_datetime(tx["date"], format="%d/%m/%Y").dt.strftime("%Y-%m-%d")
    path = tmp_path / "tx.csv"
    if kind.startswith("wrong column"):
        tx = tx.rename(columns={"amount": "price"})
    elif kind == "bad date":
        tx.loc[3, "date"] = "2024-13-45"
    elif kind == "empty":
        tx = tx.iloc[:0]
    elif kind == "negative amount":
        tx.loc[2, "amount"] = -5.0
    elif kind == "no repeat buyers":
        tx = tx.drop_duplicates("customer_id")
    elif kind == "zero bytes":
        path.write_bytes(b"")
        return path
    elif kind == "unknown format":
        path = tmp_path / "tx.xlsx"
    return _write_csv(tx, path)


ERROR_CASES = {
    "missing file": ([], "input file not found"),
    "wrong column": ([], "Missing column(s) 'amount'"),
    "wrong column named in the message": ([], "pass --amount-col COL to name the column"),
    "bad date": ([], "unparseable dates (e.g. '2024-13-45')"),
    "empty": ([], "The transactions table is empty"),
    "zero bytes": ([], "cannot read"),
    "unknown format": ([], "Cannot tell the format"),
    "negative amount": ([], "negative amounts"),
    "no repeat buyers": ([], "None of the 12 customers made a repeat purchase"),
    "calibration after data": (["--calibration-end", "2030-01-01"], "after the last transaction"),
    "not a date": (
        ["--observation-end", "someday"],
        "--observation-end 'someday' is not a date; pass e.g. --observation-end '1997-09-30'",
    ),
    "missing group column": (["--group-by", "region"], "--group-by column(s) ['region']"),
    "group column named like a report column": (
        ["--group-by", "customer_id"],
        "name of a report column",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_exit_2_with_a_clear_message(case, tmp_path, capsys):
    extra, message = ERROR_CASES[case]
    path = tmp_path / "nope.csv" if case == "missing file" else _bad_csv(tmp_path, case)
    out = tmp_path / "report"
    rc = cli.main(["run", str(path), "--method", "map", "-o", str(out), "-q", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert err.startswith("clvbayes: error: ") and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_unwritable_output(tmp_path, capsys):
    path = _bad_csv(tmp_path, "fine")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = cli.main(["run", str(path), "--method", "map", "-q", "-o", str(blocker / "report")])
    assert rc == 2 and "cannot write the report" in capsys.readouterr().err

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc = cli.main(["run", str(path), "--method", "map", "-q", "-o", str(mine)])
    assert rc == 2 and "exists and is not a clvbayes report" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions"
)
def test_read_only_output_folder(tmp_path, capsys):
    path = _bad_csv(tmp_path, "fine")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = cli.main(["run", str(path), "--method", "map", "-q", "-o", str(locked / "r")])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 2 and "permission denied" in err.lower() and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prob", "1.5"], "must be between 0 and 1"),
        (["--horizon", "-3"], "must be a positive number"),
        (["--draws", "0"], "must be at least 1"),
        (["--method", "advi"], "invalid choice"),
        (["--discount-rate", "0.1", "--discount-rate-per-period", "0.01"], "not allowed with"),
    ],
)
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "run" in capsys.readouterr().err


def test_console_script_in_a_real_process(tmp_path):
    # the installed console script (next to this Python first), else the module
    exe = shutil.which("clvbayes", path=str(Path(sys.executable).parent)) or shutil.which(
        "clvbayes"
    )
    cmd = [exe] if exe else [sys.executable, "-m", "clvbayes.cli"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    missing = tmp_path / "missing.csv"
    proc = subprocess.run(
        [*cmd, "run", str(missing), "-o", str(tmp_path / "r")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"clvbayes: error: input file not found: {missing}"
    assert "Traceback" not in proc.stderr
    version = subprocess.run([*cmd, "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("clvbayes ")


@pytest.mark.slow
def test_nuts_run_with_tiny_draws(tmp_path):
    out = tmp_path / "nuts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["run", "--draws", "50", "--tune", "50", "--chains", "2", "-q",
                       "-o", str(out)])  # fmt: skip
    assert rc == 0
    validate_report(out)
    s = _summary(out)
    bg = s["models"]["bgnbd"]
    assert bg["fit"]["method"] == "nuts" and bg["fit"]["draws"] == 50
    assert bg["divergences"] is not None
    assert all(p["r_hat"] is not None for p in bg["parameters"])
    customers = read_report_table(out, "customers")
    # with a real posterior, credible intervals have width
    assert (customers["clv_ci_upper"] > customers["clv_ci_lower"]).mean() > 0.9


@pytest.mark.slow
def test_malformed_row_in_a_10m_row_file_stops_the_job_with_the_small_file_message(
    tmp_path, capsys
):
    """Bad input at scale: the same message as in a small file, naming the row and the
    customer, exit status 2 and no report (not even a partial one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, bad_row = 10_000_000, 6_123_457
    rng = np.random.default_rng(8)
    ids = rng.integers(0, 1_000_000, n)
    days = np.datetime64("2020-01-01", "D") + rng.integers(0, 731, n).astype("timedelta64[D]")
    amount = np.round(rng.gamma(6.0, 7.0, n), 2) + 0.01
    amount[bad_row] = -12.5
    table = pa.table({"customer_id": ids, "date": days, "amount": amount})
    big = tmp_path / "big.parquet"
    pq.write_table(table, big)
    del table
    out = tmp_path / "report"
    rc = cli.main(["run", str(big), "--method", "map", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "negative amounts" in err
    assert f"{bad_row:,}" in err or str(bad_row) in err  # the row
    assert str(ids[bad_row]) in err
    assert not out.exists()
    # the message is the one a small file gets
    small = pd.DataFrame(
        {"customer_id": ids[:5], "date": days[:5], "amount": [3.0, -12.5, 4.0, 5.0, 6.0]}
    )
    small.to_parquet(tmp_path / "small.parquet", index=False)
    rc_small = cli.main(
        ["run", str(tmp_path / "small.parquet"), "--method", "map", "-o", str(out), "-q"]
    )
    err_small = capsys.readouterr().err
    assert rc_small == 2 and "negative amounts" in err_small
    assert err.split(":")[:2] == err_small.split(":")[:2]
