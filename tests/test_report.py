"""Report folder: schema, data dictionary, exact CSV/Parquet/SQLite round-trips, atomic writes."""

from __future__ import annotations

import json
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
    schema = [c.name for c in SCHEMA["customers"]]
    expected = [*schema[: schema.index("segment") + 1], "channel", "cohort", "vip"]
    expected += schema[schema.index("segment") + 1 :]
    assert list(customers.columns) == expected
    assert customers["customer_id"].tolist()[:5] == ["007", "0001", "NA", "null", "12"]
    assert customers["customer_id"].dtype == pd.Series([], dtype="str").dtype
    assert customers["cohort"].dtype == np.int64 and customers["vip"].dtype == bool
    assert customers["channel"].isna().sum() == 2
    for c in SCHEMA["customers"]:
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
    assert list(segments.columns) == [c.name for c in SCHEMA["segments"]]
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

    monkeypatch.setattr(report, "_write_plots", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(out, tables)
    assert list(tmp_path.iterdir()) == []  # no report, no temporary folder
    monkeypatch.undo()

    _write(out, tables)
    before = (out / "customers.csv").read_bytes()
    monkeypatch.setattr(report, "_write_plots", boom)
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


def test_format_option(tables, tmp_path):
    out = _write(tmp_path / "r", tables)
    assert (out / "customers.csv").exists() and not (out / "customers.parquet").exists()
    with pytest.raises(ValueError, match="format must be"):
        write_report(tmp_path / "x", *tables, {}, {}, fmt="xlsx")
