"""Report folder: schema, data dictionary, exact CSV/Parquet/SQLite round-trips, atomic writes."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pandas as pd
import pytest

from clvbayes import report
from clvbayes.report import (
    SCHEMA,
    ReportError,
    customer_table,
    export_sql,
    read_report_table,
    read_sql_table,
    segment_table,
    validate_report,
    write_report,
)
from clvbayes.segments import OTHERS, SEGMENT_RULES

# floats that a careless writer loses: shortest-repr edge cases, extremes, subnormals
TRICKY = [0.1, 1 / 3, 2 / 3 * 1e-300, 5e-324, 1.7976931348623157e308, -0.0, 123456789.12345679]
IDS = ["007", "0001", "NA", "null", "12", "a,b", 'quo"te', "ünï", "", "nan"]


def _rfm(n=len(IDS)):
    rng = np.random.default_rng(5)
    freq = rng.integers(0, 4, n)
    T = rng.uniform(5, 40, n)
    rec = np.where(freq > 0, T * rng.uniform(0, 1, n), 0.0)
    money = np.where(freq > 0, rng.uniform(1, 80, n), 0.0)
    ids = [i if i else "x" for i in IDS][:n]  # an empty id is not a valid customer id
    first = pd.to_datetime(["1997-01-01"] * n) + pd.to_timedelta(np.arange(n), unit="D")
    first = first.as_unit("us")
    rfm = pd.DataFrame(
        {
            "frequency": freq.astype(np.int64),
            "recency": rec,
            "T": T,
            "monetary_value": money,
            "first_purchase": first,
            "frequency_holdout": rng.integers(0, 3, n).astype(np.int64),
            "monetary_value_holdout": rng.uniform(0, 9, n),
            "total_value_holdout": rng.uniform(0, 30, n),
            # input grouping columns: text with a null and leading zeros, ints, bools
            "channel": pd.Series(["01", "web", None, "01", "NA"] * (n // 5 + 1))[:n].tolist(),
            "cohort": (np.arange(n) % 3).astype(np.int64),
            "vip": np.arange(n) % 2 == 0,
        },
        index=pd.Index(ids, name="customer_id"),
    )
    rfm.attrs["time_unit"] = "weeks"
    return rfm


def _predictions(rfm):
    rng = np.random.default_rng(6)
    names = [
        c.name
        for c in SCHEMA["customers"]
        if c.name.split("_")[0] in ("p", "purchases", "spend", "revenue", "clv")
        and c.name not in ("clv_to_cac", "clv_decile")
    ]
    cols = {c: rng.uniform(0, 100, len(rfm)) for c in names}
    for c in ("p_alive_mean", "p_alive_sd", "p_alive_ci_lower", "p_alive_ci_upper"):
        cols[c] = rng.uniform(0, 1, len(rfm))
    cols["spend_sd"] = np.array(TRICKY + [np.inf] * (len(rfm) - len(TRICKY)))[: len(rfm)]
    cols["revenue_sd"][1] = np.nan  # a null in a float column
    return pd.DataFrame(cols, index=rfm.index)


def _segments():
    cols = [
        c.name for c in SCHEMA["segments"] if c.required and c.name not in ("grouping", "group")
    ]
    rng = np.random.default_rng(7)

    def frame(labels, name):
        df = pd.DataFrame(rng.uniform(0, 10, (len(labels), len(cols))), columns=cols)
        df["n_customers"] = np.arange(1, len(labels) + 1, dtype=np.int64)
        df.index = pd.Index(labels, name=name)
        return df

    return {
        "all": frame(["all"], "segment"),
        "segment": frame([OTHERS, "new", "best", "at_risk"], "segment"),
        "clv_decile": frame([10, 2, 1, 9], "clv_decile"),
        "channel": frame(["web", "01", np.nan], "channel"),
    }


@pytest.fixture(scope="module")
def tables():
    rfm = _rfm()
    customers = customer_table(
        rfm, _predictions(rfm), group_cols=["channel", "cohort", "vip"], cac=12.5
    )
    segments = segment_table(_segments(), cac=12.5)
    return customers, segments


@pytest.fixture(scope="module")
def written(tables, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "report"
    customers, segments = tables
    settings = {"time_unit": "weeks", "horizon": 52, "prob": 0.8}
    write_report(out, customers, segments, {}, {"n_rows": 99}, fmt="both", settings=settings)
    return out


# ---------------------------------------------------------------- table building
def test_customer_table_follows_the_schema(tables):
    customers, _ = tables
    # a continuous-time report with a spend model: every column of that kind, no other
    # the averaged_* columns come only from --purchase-model compare (tests/test_compare.py)
    applies = [c for c in SCHEMA["customers"] if report.column_applies(c, "continuous", True)
               and not c.name.startswith(report.schema.AVERAGED_PREFIX)]  # fmt: skip
    schema = [c.name for c in applies]
    expected = [*schema[: schema.index("segment") + 1], "channel", "cohort", "vip"]
    expected += schema[schema.index("segment") + 1 :]
    assert list(customers.columns) == expected
    assert not {"periods", "first_opportunity", "dert_mean", "periods_holdout"} & set(expected)
    assert customers["customer_id"].tolist()[:5] == ["007", "0001", "NA", "null", "12"]
    assert customers["customer_id"].dtype == pd.Series([], dtype="str").dtype
    assert customers["cohort"].dtype == np.int64 and customers["vip"].dtype == bool
    assert customers["channel"].isna().sum() == 2
    for c in applies:
        want = pd.Series([], dtype=report.PANDAS_DTYPES[c.dtype]).dtype
        assert customers[c.name].dtype == want, c.name
    assert (customers["clv_to_cac"] == customers["clv_mean"] / 12.5).all()
    assert customers["segment"].isin([*SEGMENT_RULES, OTHERS]).all()


def test_segment_table_is_long_and_ordered(tables):
    _, segments = tables
    assert (
        segments["grouping"].tolist()
        == ["all"] + ["segment"] * 4 + ["clv_decile"] * 4 + ["channel"] * 3
    )
    groups = segments["group"].tolist()
    assert groups[:9] == ["all", "best", "at_risk", "new", OTHERS, "1", "2", "9", "10"]
    assert groups[9:11] == ["01", "web"] and pd.isna(groups[11])
    assert list(segments.columns) == [c.name for c in SCHEMA["segments"]
                                      if not c.name.startswith(report.schema.AVERAGED_PREFIX)]  # fmt: skip
    np.testing.assert_array_equal(
        segments["clv_to_cac_ci_lower"], segments["clv_per_customer_ci_lower"] / 12.5
    )


def test_group_columns_may_not_shadow_report_columns():
    rfm = _rfm().rename(columns={"channel": "segment"})
    with pytest.raises(ValueError, match="clash with report column"):
        customer_table(rfm, _predictions(rfm), group_cols=["segment"])


# ---------------------------------------------------------------- round-trips
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("table", ["customers", "segments"])
def test_file_roundtrip_is_exact(written, tables, fmt, table):
    original = dict(zip(["customers", "segments"], tables, strict=True))[table]
    back = read_report_table(written / f"{table}.{fmt}")
    pd.testing.assert_frame_equal(back, original, check_exact=True)
    # bit-for-bit floats, including the sign of zero
    for c in original.columns:
        if original[c].dtype == np.float64:
            a, b = original[c].to_numpy(), back[c].to_numpy()
            assert np.array_equal(a.view(np.int64), b.view(np.int64)) or (
                np.isnan(a).any() and np.array_equal(a, b, equal_nan=True)
            ), c


def test_folder_reader_prefers_parquet_and_needs_a_table(written, tables):
    pd.testing.assert_frame_equal(read_report_table(written, "customers"), tables[0])
    with pytest.raises(ValueError, match="table must be one of"):
        read_report_table(written)


def test_sqlite_roundtrip_dbapi(tables, tmp_path):
    customers, segments = tables
    con = sqlite3.connect(tmp_path / "crm.db")
    try:
        assert export_sql(customers, con, "customers") == len(customers)
        export_sql(segments, con, "segments")
        types = {"channel": "string", "cohort": "int64", "vip": "bool"}
        back = read_sql_table(con, "customers", dtypes=types)
        pd.testing.assert_frame_equal(back, customers, check_exact=True)
        pd.testing.assert_frame_equal(read_sql_table(con, "segments"), segments, check_exact=True)
        # ids are stored as text: leading zeros survive in SQL itself, not only in pandas
        stored = con.execute("SELECT customer_id, typeof(customer_id) FROM customers").fetchall()
        assert stored[0] == ("007", "text") and stored[3] == ("null", "text")
        assert con.execute("SELECT count(*) FROM customers WHERE channel IS NULL").fetchone() == (
            2,
        )
    finally:
        con.close()


def test_sqlite_roundtrip_sqlalchemy(tables, tmp_path):
    sa = pytest.importorskip("sqlalchemy")
    customers, _ = tables
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    types = {"channel": "string", "cohort": "int64", "vip": "bool"}
    export_sql(customers, url, "clv")
    pd.testing.assert_frame_equal(
        read_sql_table(url, "clv", dtypes=types), customers, check_exact=True
    )
    engine = sa.create_engine(url)
    try:
        export_sql(customers, engine, "clv", if_exists="append")
        assert len(read_sql_table(engine, "clv")) == 2 * len(customers)
        with pytest.raises(ValueError, match="already exists"):
            export_sql(customers, engine, "clv", if_exists="fail")
        with engine.connect() as con:
            cols = {c["name"]: str(c["type"]) for c in sa.inspect(con).get_columns("clv")}
        assert cols["customer_id"] == "TEXT" and cols["frequency"] == "BIGINT"
        assert cols["churn_risk"] == "BOOLEAN" and cols["first_purchase"] == "DATETIME"
    finally:
        engine.dispose()


def test_nullable_columns_roundtrip_through_sql(tmp_path):
    df = pd.DataFrame(
        {
            "customer_id": pd.Series(["001", "002", None], dtype="str"),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "x": [np.nan, 0.1, 1e-310],
            "t": pd.to_datetime(
                ["1997-01-01 10:11:12.123456", None, "1998-06-30"], format="ISO8601"
            ).as_unit("us"),
        }
    )
    con = sqlite3.connect(":memory:")
    export_sql(df, con, "t")
    back = read_sql_table(con, "t", dtypes={"n": "Int64", "flag": "boolean", "t": "datetime"})
    pd.testing.assert_frame_equal(back, df, check_exact=True)


# ---------------------------------------------------------------- dictionary and validation
def test_data_dictionary_describes_every_column(written, tables):
    d = pd.read_csv(written / "data_dictionary.csv", dtype=str, keep_default_na=False)
    for name, df in zip(["customers", "segments"], tables, strict=True):
        rows = d[d["table"] == name]
        assert rows["column"].tolist() == list(df.columns)
        assert (rows["meaning"] != "").all()
    assert not d["unit"].str.contains("{", regex=False).any()
    assert not d["meaning"].str.contains("{", regex=False).any()
    assert d.set_index("column").loc["recency", "unit"] == "weeks"
    assert "80 %" in d.set_index("column").loc["clv_ci_lower", "meaning"]
    inputs = d[d["source"] == "input"]
    assert dict(zip(inputs["column"], inputs["dtype"], strict=True)) == {
        "channel": "string", "cohort": "int64", "vip": "bool"
    }  # fmt: skip
    md = (written / "data_dictionary.md").read_text()
    assert all(f"| {c} |" in md for c in tables[0].columns)


def test_written_report_validates(written):
    validate_report(written)
    summary = json.loads((written / "model_summary.json").read_text())
    assert summary["clvbayes_report"] == report.REPORT_VERSION
    assert summary["data"] == {"n_rows": 99}
    assert oct((written).stat().st_mode & 0o777) != oct(0o700)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_validation_catches_tampering(written, tmp_path):
    bad = _copy(written, tmp_path / "a")
    df = pd.read_csv(bad / "customers.csv", dtype=str, keep_default_na=False)
    df.drop(columns="clv_mean").to_csv(bad / "customers.csv", index=False)
    with pytest.raises(ReportError, match=r"missing column\(s\) \['clv_mean'\]"):
        validate_report(bad)

    bad = _copy(written, tmp_path / "b")
    df = pd.read_parquet(bad / "segments.parquet")
    df["n_customers"] = df["n_customers"].astype(float)
    df.to_parquet(bad / "segments.parquet")
    with pytest.raises(ReportError, match="n_customers' has dtype float64"):
        validate_report(bad)

    bad = _copy(written, tmp_path / "c")
    df = pd.read_parquet(bad / "customers.parquet")
    df["surprise"] = 1
    df.to_parquet(bad / "customers.parquet")
    with pytest.raises(ReportError, match="'surprise' is neither in the schema"):
        validate_report(bad)

    bad = _copy(written, tmp_path / "d")
    (bad / "clv_distribution.png").unlink()
    with pytest.raises(ReportError, match=r"missing file clv_distribution\.png"):
        validate_report(bad)

    bad = _copy(written, tmp_path / "e")
    df = read_report_table(bad / "customers.csv")
    df.loc[0, "p_alive_mean"] = 1.5
    df.to_csv(bad / "customers.csv", index=False)
    with pytest.raises(ReportError, match="p_alive_mean outside"):
        validate_report(bad)


# ---------------------------------------------------------------- atomic writes
def _write(out, tables, **kw):
    return write_report(out, *tables, {}, {"n_rows": 1}, fmt="csv", **kw)


def test_failed_write_leaves_nothing_and_keeps_the_old_report(tables, tmp_path, monkeypatch):
    out = tmp_path / "report"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report.writer, "_write_plots", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(out, tables)
    assert list(tmp_path.iterdir()) == []  # no report, no temporary folder
    monkeypatch.undo()

    _write(out, tables)
    before = (out / "customers.csv").read_bytes()
    monkeypatch.setattr(report.writer, "_write_plots", boom)
    with pytest.raises(RuntimeError):
        _write(out, tables, extra={"note": "second"})
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert (out / "customers.csv").read_bytes() == before
    validate_report(out)


def test_replaces_an_old_report_but_not_a_foreign_folder(tables, tmp_path):
    out = tmp_path / "report"
    _write(out, tables)
    _write(out, tables, extra={"note": "second"})
    assert json.loads((out / "model_summary.json").read_text())["note"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a clvbayes report"):
        _write(foreign, tables)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_plots_drawn_in_a_nuts_worker_are_the_same_files(tables, tmp_path, monkeypatch):
    from clvbayes import nuts

    customers, segments = tables
    settings = {"time_unit": "weeks", "horizon": 52, "prob": 0.8}

    def write(out):
        return write_report(out, customers, segments, {}, {}, fmt="csv", settings=settings)

    nuts.stop_workers()
    here = write(tmp_path / "here")
    outcomes = []
    real = nuts.submit

    def spy(fn, *args):
        wait = real(fn, *args)

        def waited():
            outcomes.append(wait())
            return outcomes[-1]

        return waited

    monkeypatch.setattr(nuts, "submit", spy)
    nuts.start_workers(1)
    try:
        there = write(tmp_path / "there")
    finally:
        nuts.stop_workers()
    assert len(outcomes) == 1 and outcomes[0][0], "the plots were not drawn in the worker"
    names = json.loads((there / "model_summary.json").read_text())["files"]["plots"]
    assert names == outcomes[0][1] and len(names) >= 3
    for name in names:
        assert (there / name).read_bytes() == (here / name).read_bytes(), name
    validate_report(there)


def test_a_failure_before_the_plots_draws_none_here(tables, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(report.writer, "_write_plots", lambda *a: calls.append(a) or [])
    model = FakeModel(fail=OSError(28, "No space left on device"))
    with pytest.raises(report.ReportWriteError, match="model file"):
        write_report(tmp_path / "r", *tables, {"bgnbd": model}, {}, fmt="csv")
    assert calls == []  # the error is raised at once, without drawing the plots first
    assert list(tmp_path.iterdir()) == []


def test_format_option(tables, tmp_path):
    out = _write(tmp_path / "r", tables)
    assert (out / "customers.csv").exists() and not (out / "customers.parquet").exists()
    with pytest.raises(ValueError, match="format must be"):
        write_report(tmp_path / "x", *tables, {}, {}, fmt="xlsx")


# ---------------------------------------------------------------- never delete what is not ours
@pytest.fixture
def quick_plots(monkeypatch):
    """Stand-in plots (tiny files) for tests about files, not pictures: ~2 s saved per write."""

    def plots(folder, *args, **kwargs):
        for name in report.PLOTS:
            (folder / name).write_bytes(b"\x89PNG stand-in")
        return list(report.PLOTS)

    monkeypatch.setattr(report.writer, "_write_plots", plots)


class FakeModel:
    """Just enough of a fitted model for write_report: summary, fit_info_, save."""

    def __init__(self, method="nuts", fail=None):
        self.fit_info_ = {"method": method, "seed": 1, "laplace_sd": {"r": 0.01, "alpha": 0.3}}
        self.priors = {}
        self.time_unit_ = "weeks"
        self.fail = fail

    def summary(self, prob):
        return pd.DataFrame(
            {"mean": [0.24, 4.4], "sd": [0.01, 0.3], f"lower_{prob:g}": [0.24, 4.4],
             f"upper_{prob:g}": [0.24, 4.4]}, index=["r", "alpha"],
        )  # fmt: skip

    def save(self, path, include_data=True):
        with open(path, "wb") as fh:
            fh.write(b"CDF-ish model bytes")
            if self.fail is not None:
                raise self.fail


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_manifest_lists_every_file_with_size_and_hash(tables, tmp_path):
    import hashlib

    out = _write(tmp_path / "report", tables)
    manifest = json.loads((out / report.MANIFEST).read_text())["files"]
    on_disk = {p.name for p in out.iterdir()} - {report.MANIFEST}
    assert set(manifest) == on_disk and "model_summary.json" in on_disk
    for name, spec in manifest.items():
        data = (out / name).read_bytes()
        assert spec == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert not (out / report.STAGING_JOURNAL).exists()


@pytest.mark.usefixtures("quick_plots")
def test_a_report_folder_with_a_user_file_is_not_replaced(tables, tmp_path):
    # issue 12 #1: `clvbayes run -o rep && cp cdnow.csv rep/tx.csv && clvbayes run rep/tx.csv -o rep`
    out = _write(tmp_path / "rep", tables)
    (out / "tx.csv").write_text("customer_id,date,amount\n1,1997-01-01,5\n")
    (out / "notes").mkdir()
    before = _files(out)
    with pytest.raises(report.OutputFolderRefused) as err:
        _write(out, tables, extra={"note": "second"})
    msg = str(err.value)
    assert "tx.csv (not written by clvbayes)" in msg and "notes/ (a folder)" in msg
    assert "choose another --output" in msg
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, OSError)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no lock or staging left
    assert not report.folder._is_replaceable(out)
    assert "tx.csv" in report.replace_refusal(out)


@pytest.mark.usefixtures("quick_plots")
def test_a_changed_report_file_is_not_replaced(tables, tmp_path):
    out = _write(tmp_path / "rep", tables)
    with (out / "customers.csv").open("a") as fh:
        fh.write("# my edits\n")
    with pytest.raises(report.OutputFolderRefused, match=r"customers\.csv \(changed since"):
        _write(out, tables)
    assert (out / "customers.csv").read_text().endswith("# my edits\n")
    with pytest.raises(ReportError, match=r"customers\.csv changed since clvbayes wrote it"):
        validate_report(out)


@pytest.mark.usefixtures("quick_plots")
def test_a_copied_model_summary_does_not_make_a_folder_replaceable(tables, tmp_path):
    out = _write(tmp_path / "rep", tables)
    project = tmp_path / "project"
    project.mkdir()
    (project / "model_summary.json").write_bytes((out / "model_summary.json").read_bytes())
    (project / "analysis.ipynb").write_text("{}")
    with pytest.raises(report.OutputFolderRefused, match="older clvbayes, without the manifest"):
        _write(project, tables)
    assert sorted(p.name for p in project.iterdir()) == ["analysis.ipynb", "model_summary.json"]
    # an older report (no manifest) is refused too, naming what it holds
    (out / report.MANIFEST).unlink()
    with pytest.raises(report.OutputFolderRefused, match=r"it holds \.?[\w.]+, .* and \d+ more"):
        _write(out, tables)


@pytest.mark.usefixtures("quick_plots")
def test_links_inside_a_report_are_not_followed_or_deleted(tables, tmp_path):
    out = _write(tmp_path / "rep", tables)
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    (out / "link.txt").symlink_to(precious)
    with pytest.raises(report.OutputFolderRefused, match=r"link\.txt \(a link\)"):
        _write(out, tables)
    assert precious.read_text() == "mine" and (out / "link.txt").is_symlink()


# ---------------------------------------------------------------- publishing
@pytest.mark.usefixtures("quick_plots")
def test_no_leftovers_and_atomic_swap(tables, tmp_path, monkeypatch):
    out = _write(tmp_path / "rep", tables)
    swaps = []
    real = report.folder._exchange
    monkeypatch.setattr(
        report.folder, "_exchange", lambda a, b: swaps.append(real(a, b)) or swaps[-1]
    )
    _write(out, tables, extra={"note": "second"})
    assert swaps == [True]  # Linux: renameat2(RENAME_EXCHANGE), no moment without a report
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]
    assert json.loads((out / "model_summary.json").read_text())["note"] == "second"


@pytest.mark.usefixtures("quick_plots")
def test_fallback_publish_crash_between_renames_is_recovered(tables, tmp_path, monkeypatch):
    out = _write(tmp_path / "rep", tables)
    old_bytes = _files(out)
    monkeypatch.setattr(report.folder, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def crash_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # out -> .old-* done, staging -> out not yet: "the process dies"
            raise KeyboardInterrupt
        return real_rename(src, dst)

    monkeypatch.setattr(report.folder.os, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _write(out, tables, extra={"note": "second"})
    monkeypatch.setattr(report.folder.os, "rename", real_rename)
    assert _files(out) == old_bytes  # put back on the way out
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]

    # a real crash there (no except clause runs) leaves the old report only in .old-*
    old = tmp_path / f"{report.folder._sibling_prefix(out)}.old-abc123"
    real_rename(out, old)
    with pytest.warns(report.ReportWarning, match="restored the previous report"):
        report.folder._recover(out)
    assert _files(out) == old_bytes and not old.exists()
    validate_report(out)


def _run_py(code, *args, timeout=120):
    import subprocess
    import sys

    tests = os.path.dirname(__file__)
    prog = f"import sys; sys.path.insert(0, {tests!r})\n" + code
    return subprocess.run(
        [sys.executable, "-c", prog, *map(str, args)], capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


_KILLED_WRITER = """
import os, signal
from clvbayes import report
from test_report import _rfm, _predictions, _segments
rfm = _rfm()
customers = report.customer_table(rfm, _predictions(rfm), group_cols=["channel"])
segments = report.segment_table(_segments())
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
report.writer._write_plots = die
report.write_report(sys.argv[1], customers, segments, {}, {}, fmt="csv")
"""


@pytest.mark.usefixtures("quick_plots")
def test_staging_left_by_kill_9_is_cleaned_by_the_next_run(tables, tmp_path):
    out = tmp_path / "rep"
    res = _run_py(_KILLED_WRITER, out)
    assert res.returncode == -9, res.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and any(".partial-" in n for n in left)  # staging + lock file
    # someone's file in a leftover folder: that folder is kept, and said so
    res = _run_py(_KILLED_WRITER, out)
    partials = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    (partials[-1] / "mine.txt").write_text("keep me")
    with pytest.warns(report.ReportWarning, match=r"mine\.txt\); it was kept"):
        _write(out, tables)
    rest = sorted(p.name for p in tmp_path.iterdir())
    assert rest == sorted(["rep", partials[-1].name])
    assert (partials[-1] / "mine.txt").read_text() == "keep me"
    # the journal stays with what it cannot account for; the journaled files are gone
    assert sorted(p.name for p in partials[-1].iterdir()) == [report.STAGING_JOURNAL, "mine.txt"]
    validate_report(out)


_LOCK_HOLDER = """
import time
from clvbayes import report
with report.output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.mark.usefixtures("quick_plots")
def test_a_second_concurrent_writer_is_refused(tables, tmp_path):
    import subprocess
    import sys

    out = _write(tmp_path / "rep", tables)
    before = _files(out)
    tests = os.path.dirname(__file__)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {tests!r})\n" + _LOCK_HOLDER,
         str(out), "30"], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(report.ReportBusy, match=rf"pid {holder.pid}, started .* is writing"):
            _write(out, tables, extra={"note": "second"})
        assert _files(out) == before
    finally:
        holder.kill()
        holder.wait()
    _write(out, tables, extra={"note": "after"})  # the dead holder's lock is free again
    assert json.loads((out / "model_summary.json").read_text())["note"] == "after"
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_lock_is_reentrant_and_removed(tmp_path):
    out = tmp_path / "rep"
    with report.output_lock(out):
        with report.output_lock(out):
            assert report.lock._lock_path(out).exists()
        assert report.lock._lock_path(out).exists()
    assert not report.lock._lock_path(out).exists()


# ---------------------------------------------------------------- disk full, write errors
@pytest.mark.usefixtures("quick_plots")
def test_too_little_free_space_is_refused_before_writing(tables, tmp_path, monkeypatch):
    import shutil

    out = _write(tmp_path / "rep", tables)
    before = _files(out)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(report.folder.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    with pytest.raises(
        report.ReportWriteError, match=r"needs about [\d.]+ MB .* 0\.1 MB free"
    ) as e:
        _write(out, tables, extra={"note": "second"})
    assert e.value.errno == 28 and "previous report there is unchanged" in str(e.value)
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["rep"]


@pytest.mark.parametrize(
    "fail",
    [
        OSError(28, "No space left on device"),
        # what h5py raises on a failed write (seen with a full disk / file-size limit)
        RuntimeError("Set slist enabled failed (file write failed: errno = 28, error message = "
                     "'No space left on device')"),
    ],
)  # fmt: skip
@pytest.mark.usefixtures("quick_plots")
def test_disk_full_while_saving_a_model_keeps_the_old_report(tables, tmp_path, fail):
    out = tmp_path / "rep"
    write_report(out, *tables, {"bgnbd": FakeModel()}, {}, fmt="csv")
    before = _files(out)
    with pytest.raises(report.ReportWriteError, match=r"writing the model file bgnbd\.nc failed"
                       r".*the disk is full.*previous report there is unchanged") as err:  # fmt: skip
        write_report(out, *tables, {"bgnbd": FakeModel(fail=fail)}, {}, fmt="csv")
    assert err.value.errno == 28
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["rep"]


@pytest.mark.usefixtures("quick_plots")
def test_disk_full_while_writing_a_table(tables, tmp_path, monkeypatch):
    out = _write(tmp_path / "rep", tables)
    before = _files(out)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "customers.csv")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(report.ReportWriteError, match=r"writing customers\.csv.*No space left"):
        _write(out, tables)
    monkeypatch.undo()
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["rep"]


@pytest.mark.usefixtures("quick_plots")
def test_model_to_bytes_is_written_with_python_io(tables, tmp_path):
    class BytesModel(FakeModel):
        def save(self, path, include_data=True):  # pragma: no cover - must not be used
            raise AssertionError("save() called although to_bytes() exists")

        def to_bytes(self, include_data=True):
            return b"netcdf image"

    out = write_report(tmp_path / "rep", *tables, {"gg": BytesModel()}, {}, fmt="csv")
    assert (out / "gg.nc").read_bytes() == b"netcdf image"


# ---------------------------------------------------------------- siblings: where a report may go
@pytest.mark.usefixtures("quick_plots")
def test_output_that_is_a_file_or_a_link_is_refused(tables, tmp_path):
    data = tmp_path / "cdnow.csv"
    data.write_text("customer_id,date,amount\n")
    with pytest.raises(report.OutputFolderRefused, match="is a file, not a folder"):
        _write(data, tables)  # -o cdnow.csv (the input file itself)
    assert data.read_text() == "customer_id,date,amount\n"
    target = _write(tmp_path / "real", tables)
    link = tmp_path / "latest"
    link.symlink_to(target)
    before = _files(target)
    with pytest.raises(report.OutputFolderRefused, match="is a symbolic link"):
        _write(link, tables)
    assert link.is_symlink() and _files(target) == before


@pytest.mark.usefixtures("quick_plots")
def test_output_holding_the_input_is_refused(tables, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    tx = folder / "tx.csv"
    tx.write_text("x")
    with pytest.raises(report.OutputFolderRefused, match="holds the input file"):
        write_report(folder, *tables, {}, {}, fmt="csv", protect=[tx])
    with pytest.raises(report.OutputFolderRefused, match="holds the input file"):
        report.check_output_folder(tmp_path, protect=[tx])
    # an empty folder is fine, and so is an output next to the input
    write_report(folder / "rep", *tables, {}, {}, fmt="csv", protect=[tx])
    assert tx.read_text() == "x"


@pytest.mark.parametrize("bad", ["", "  ", "/", "."])
def test_output_names_that_name_no_new_folder(tables, tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(report.OutputFolderRefused, match=r"empty|root|current folder"):
        _write(bad, tables)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.usefixtures("quick_plots")
def test_long_output_names_work(tables, tmp_path):
    name = "r" * 250  # near NAME_MAX: sibling staging/lock names must stay short
    out = _write(tmp_path / name, tables)
    _write(out, tables)
    validate_report(out)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_unwritable_parent_is_a_clear_error(tables, tmp_path, monkeypatch):
    # as root, permissions are not enforced: simulate what the OS says to other users
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(report.lock.os, "open", denied)
    with pytest.raises(
        report.ReportWriteError, match=r"cannot create a file in .*Permission denied"
    ):
        _write(tmp_path / "rep", tables)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- CSV formula injection
FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx",
            "'quoted", "-5", "+1.5e3", "plain"]  # fmt: skip


def test_csv_neutralises_formulas_and_round_trips(tmp_path):
    rfm = _rfm(len(FORMULAS))
    rfm.index = pd.Index(FORMULAS, name="customer_id")
    rfm["channel"] = ["=cmd|' /C calc'!A0", "-x", "web", "@a", "b", "c", "d", "e", "f", "g"]
    rfm = rfm.rename(columns={"channel": "=grp"})
    pred = _predictions(rfm)
    pred["clv_mean"] = -np.arange(len(rfm), dtype=float) - 0.5  # negative numbers stay numbers
    customers = customer_table(rfm, pred, group_cols=["=grp"])
    segs = _segments()
    segs["=grp"] = segs.pop("channel")
    segs["=grp"].index = pd.Index(["=1+1", "-a", "ok"], name="=grp")
    segments = segment_table(segs)
    out = write_report(tmp_path / "rep", customers, segments, {}, {}, fmt="both")

    raw = pd.read_csv(out / "customers.csv", dtype=str, keep_default_na=False)
    assert raw["customer_id"].tolist() == [
        "'=HYPERLINK(\"http://x\",\"y\")", "'+1+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx",
        "''quoted", "-5", "+1.5e3", "plain",
    ]  # fmt: skip
    assert "'=grp" in raw.columns and raw["'=grp"].tolist()[:2] == ["'=cmd|' /C calc'!A0", "'-x"]
    assert raw["clv_mean"].tolist()[:2] == ["-0.5", "-1.5"]
    seg_raw = pd.read_csv(out / "segments.csv", dtype=str, keep_default_na=False)
    assert {"'=1+1", "'-a"} <= set(seg_raw["group"]) and "'=grp" in set(seg_raw["grouping"])
    dictionary = pd.read_csv(out / "data_dictionary.csv", dtype=str, keep_default_na=False)
    assert "'=grp" in set(dictionary["column"])
    # exact values back from CSV, and Parquet never escaped
    for fmt in ("csv", "parquet"):
        pd.testing.assert_frame_equal(read_report_table(out / f"customers.{fmt}"), customers)
        pd.testing.assert_frame_equal(read_report_table(out / f"segments.{fmt}"), segments)
    assert pd.read_parquet(out / "customers.parquet")["customer_id"].tolist() == FORMULAS
    validate_report(out)


# ---------------------------------------------------------------- MAP: no zero-width intervals
def _map_tables(tables):
    customers, segments = (t.copy() for t in tables)
    for df in (customers, segments):
        for c in df.columns:
            if c.endswith(("_sd", "_ci_lower", "_ci_upper")):
                df[c] = np.nan
    return customers, segments


@pytest.mark.usefixtures("quick_plots")
def test_map_report_explains_empty_interval_columns(tables, tmp_path):
    customers, segments = _map_tables(tables)
    out = write_report(tmp_path / "rep", customers, segments, {"bgnbd": FakeModel("map")}, {},
                       fmt="both", settings={"prob": 0.9})  # fmt: skip
    validate_report(out)
    d = pd.read_csv(out / "data_dictionary.csv", dtype=str, keep_default_na=False)
    meaning = d.set_index(["table", "column"])["meaning"]
    for key in [("customers", "clv_ci_lower"), ("customers", "p_alive_sd"),
                ("segments", "clv_total_ci_upper")]:  # fmt: skip
        assert "EMPTY in this report: the models were fitted by MAP" in meaning[key], key
    assert "EMPTY" not in meaning[("customers", "clv_pi_lower")]
    assert "This report comes from a MAP fit" in (out / "data_dictionary.md").read_text()
    summary = json.loads((out / "model_summary.json").read_text())
    m = summary["models"]["bgnbd"]
    assert summary["settings"]["method"] == "map"
    assert m["interval"] is None and m["interval_prob"] is None and "Laplace" in m["sd"]
    assert all("lower" not in row and "upper" not in row for row in m["parameters"])
    assert m["parameters"][0]["sd"] == 0.01
    md = (out / "model_summary.md").read_text()
    assert "no credible interval is shown" in md and "clv_total_ci_lower" not in md


@pytest.mark.usefixtures("quick_plots")
def test_map_filled_intervals_are_labelled_and_nuts_intervals_are_required(tables, tmp_path):
    out = write_report(tmp_path / "a", *tables, {"bgnbd": FakeModel("map")}, {}, fmt="csv")
    d = pd.read_csv(out / "data_dictionary.csv", dtype=str, keep_default_na=False)
    assert (
        "CAUTION: the models were fitted by MAP" in d.set_index("column").loc["clv_sd", "meaning"]
    )
    nuts = write_report(tmp_path / "b", *tables, {"bgnbd": FakeModel("nuts")}, {}, fmt="csv")
    m = json.loads((nuts / "model_summary.json").read_text())["models"]["bgnbd"]
    assert m["interval"].startswith("posterior credible interval")
    assert m["parameters"][0]["lower"] == 0.24
    # an empty P(alive) interval in a NUTS report is a defect
    customers, segments = _map_tables(tables)
    with pytest.raises(ReportError, match="p_alive_ci_lower has missing values"):
        write_report(tmp_path / "c", customers, segments, {"bgnbd": FakeModel("nuts")}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.usefixtures("quick_plots")
def test_lock_without_flock_uses_an_exclusive_file(tables, tmp_path, monkeypatch):
    monkeypatch.setattr(report.lock, "_HAVE_FLOCK", False)  # as on Windows
    out = tmp_path / "rep"
    with report.output_lock(out):
        assert report.lock._lock_path(out).exists()
    assert not report.lock._lock_path(out).exists()
    report.lock._lock_path(out).write_text("")  # left by a crash
    with pytest.raises(report.ReportBusy, match="left by a crash: delete the lock file"):
        _write(out, tables)
    assert not out.exists()
