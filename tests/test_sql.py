"""SQL export: table names quoted by the dialect, strict names for DBAPI, a real PostgreSQL.

The PostgreSQL tests start a throw-away cluster (``initdb`` + ``pg_ctl``, listening on a
unix socket only) in a temporary folder and stop it afterwards.  PostgreSQL refuses to run
as root, so under root the server runs as ``nobody`` (via ``runuser``).  They are skipped,
with the reason shown by ``pytest -ra``, only where the server cannot start (no PostgreSQL
binaries, no driver); ``.ci/postgres-deps.sh`` installs both in CI.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clvbayes.report import (
    MAX_SQL_NAME_BYTES,
    check_sql_table_name,
    export_sql,
    read_sql_table,
)

sa = pytest.importorskip("sqlalchemy")

PG_BIN_DIRS = ["/usr/local/bin", *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def _table() -> pd.DataFrame:
    """A report-like table: text ids with leading zeros and formula-like text, exact floats."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series(["007", "0001", "=1+1", 'quo"te', "ünï"], dtype="str"),
            "frequency": np.array([0, 1, 2, 3, 4], dtype=np.int64),
            "clv_mean": [0.1, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308],
            "churn_risk": [True, False, True, False, True],
            "first_purchase": pd.to_datetime(
                ["1997-01-01", "1997-01-02 10:11:12.123456", "1997-02-01", "1998-06-30",
                 "1997-03-04"], format="ISO8601",
            ).as_unit("us"),
        }
    )  # fmt: skip


# ---------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "non-empty text"),
        ("a\x00b", "control character"),
        (" lead", "starts or ends with a space"),
        ("x" * (MAX_SQL_NAME_BYTES + 1), "at most 63 are accepted"),
        ("é" * 32, "64 bytes long"),
    ],
)
def test_bad_table_names_are_refused_everywhere(name, message):
    with pytest.raises(ValueError, match=message):
        check_sql_table_name(name)
    with pytest.raises(ValueError, match=message):
        export_sql(_table(), sqlite3.connect(":memory:"), name)


def test_dbapi_names_are_checked_strictly_before_writing():
    con = sqlite3.connect(":memory:")
    # before: export_sql wrote this table and read_sql_table then refused the name
    for name in ['quo"te', "a;b", "x y", "1abc"]:
        with pytest.raises(ValueError, match="only letters, digits and '_'"):
            export_sql(_table(), con, name)
        with pytest.raises(ValueError, match="only letters, digits and '_'"):
            read_sql_table(con, name)
    assert con.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    export_sql(_table(), con, "clv_2026")
    pd.testing.assert_frame_equal(read_sql_table(con, "clv_2026"), _table(), check_exact=True)


@pytest.mark.parametrize("name", ['quo"te', "Mixed Case", "semi;colon", 'x"; DROP TABLE keep; --'])
def test_sqlalchemy_quotes_any_name_sqlite(tmp_path, name):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    export_sql(_table().head(1), url, "keep")
    export_sql(_table(), url, name)
    pd.testing.assert_frame_equal(read_sql_table(url, name), _table(), check_exact=True)
    assert len(read_sql_table(url, "keep")) == 1  # the name was never run as SQL


# ---------------------------------------------------------------- a real PostgreSQL server
def _pg_bin(tool: str) -> str | None:
    for d in PG_BIN_DIRS:
        p = Path(d) / tool
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(tool)


@pytest.fixture(scope="module")
def postgres_url():
    """URL of a throw-away PostgreSQL cluster (unix socket), stopped and removed afterwards."""
    pytest.importorskip("psycopg", reason="the PostgreSQL tests need psycopg (pip install psycopg)")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found in /usr/local/bin, "
            "/usr/lib/postgresql/*/bin or PATH: run .ci/postgres-deps.sh"
        )
    root = Path(tempfile.mkdtemp(prefix="clvbayes-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(root)
            pytest.skip("running as root and runuser is missing: cannot start PostgreSQL")
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        prefix = [runuser, "-u", "nobody", "--"]
    root.chmod(0o755)
    data, log = root / "data", root / "server.log"
    started = False
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "clv", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", f"-k {root} -c listen_addresses='' -F", "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        started = True
        yield f"postgresql+psycopg://clv@/postgres?host={root}"
    except subprocess.CalledProcessError as err:
        text = (err.stderr or b"").decode(errors="replace")
        if log.exists():
            text += log.read_text(errors="replace")
        pytest.fail(f"PostgreSQL is installed but did not start: {text[-2000:]}")
    finally:
        if started:
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", ["clvbayes_customers", "Customers", 'quo"te', "a.b; c"])
def test_postgres_roundtrip_is_exact(postgres_url, name):
    export_sql(_table(), postgres_url, name)
    pd.testing.assert_frame_equal(read_sql_table(postgres_url, name), _table(), check_exact=True)


def test_postgres_types_nulls_and_append(postgres_url):
    df = _table()
    df.loc[1, "customer_id"] = np.nan
    df.loc[2, "clv_mean"] = np.nan
    engine = sa.create_engine(postgres_url)
    try:
        export_sql(df, engine, "typed")
        export_sql(df, engine, "typed", if_exists="append")
        back = read_sql_table(engine, "typed")
        pd.testing.assert_frame_equal(back, pd.concat([df, df], ignore_index=True))
        with pytest.raises(ValueError, match="already exists"):
            export_sql(df, engine, "typed", if_exists="fail")
        with engine.connect() as con:
            cols = {c["name"]: str(c["type"]) for c in sa.inspect(con).get_columns("typed")}
            ids = con.execute(sa.text('SELECT customer_id FROM "typed" LIMIT 1')).scalar_one()
        assert cols["customer_id"] == "TEXT" and cols["frequency"] == "BIGINT"
        assert cols["clv_mean"] == "DOUBLE PRECISION" and cols["churn_risk"] == "BOOLEAN"
        assert cols["first_purchase"].startswith("TIMESTAMP")
        assert ids == "007"  # leading zeros survive in the database itself
    finally:
        engine.dispose()


def test_postgres_name_is_never_run_as_sql(postgres_url):
    export_sql(_table(), postgres_url, "keep")
    evil = 'x"; DROP TABLE keep; --'
    export_sql(_table(), postgres_url, evil)
    assert len(read_sql_table(postgres_url, evil)) == len(_table())
    assert len(read_sql_table(postgres_url, "keep")) == len(_table())


# ---------------------------------------------------------------- never drop a foreign table
def test_replace_refuses_a_table_clvbayes_did_not_write(tmp_path):
    con = sqlite3.connect(tmp_path / "crm.db")
    con.execute("CREATE TABLE invoices (invoice_id INTEGER, amount REAL)")
    con.execute("INSERT INTO invoices VALUES (1, 9.5)")
    con.commit()
    with pytest.raises(ValueError, match=r"'invoices' exists and is not a clvbayes report table"):
        export_sql(_table(), con, "invoices")
    assert con.execute("SELECT * FROM invoices").fetchall() == [(1, 9.5)]
    export_sql(_table(), con, "clv")
    export_sql(_table().assign(channel="web"), con, "clv")  # a report table: replaced
    assert len(read_sql_table(con, "clv")) == len(_table())
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    with pytest.raises(ValueError, match=r"columns \['invoice_id', 'amount'\] are not report"):
        export_sql(_table(), url, "invoices")


def test_postgres_replace_refuses_a_foreign_table(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as con:
            con.execute(sa.text("CREATE TABLE orders (order_id int)"))
        with pytest.raises(ValueError, match="'orders' exists and is not a clvbayes report"):
            export_sql(_table(), engine, "orders")
        with engine.connect() as con:
            assert sa.inspect(con).has_table("orders")
    finally:
        engine.dispose()
