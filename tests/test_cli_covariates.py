"""`clvbayes run` with customer attributes: --covariates-file, --covariate, --pool-by."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clvbayes import cli
from clvbayes.datasets import load_cdnow_transactions
from clvbayes.report import read_report_table, validate_report


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Transactions of 600 CDNOW customers, their attributes in a file and in the log."""
    root = tmp_path_factory.mktemp("cov")
    tx = load_cdnow_transactions()
    ids = tx["customer_id"].drop_duplicates().iloc[:600]
    tx = tx[tx["customer_id"].isin(ids)]
    rng = np.random.default_rng(4)
    attrs = pd.DataFrame({
        "customer_id": ids.to_numpy(), "channel": rng.choice(["web", "store", "ref"], len(ids)),
        "country": rng.choice(["DE", "FR", "JP"], len(ids), p=[0.5, 0.35, 0.15]),
    })  # fmt: skip
    tx.to_csv(root / "tx.csv", index=False)
    attrs.to_csv(root / "customers.csv", index=False)
    tx.merge(attrs, on="customer_id").to_csv(root / "tx_with_attrs.csv", index=False)
    return root


def _run(files, out, *extra):
    return cli.main(["run", str(files / "tx.csv"), "--method", "laplace", "--draws", "200",
                     "--duplicate-rows", "keep", "-q", "-o", str(out), *extra])  # fmt: skip


def test_covariates_and_pooling_end_to_end(files, tmp_path):
    out = tmp_path / "report"
    rc = _run(files, out, "--covariates-file", str(files / "customers.csv"),
              "--covariate", "channel", "--pool-by", "country")  # fmt: skip
    assert rc == 0
    validate_report(out)
    summary = json.loads((out / "model_summary.json").read_text())
    bg = summary["models"]["bgnbd"]
    names = [p["parameter"] for p in bg["parameters"]]
    assert "purchase:channel[store]" in names and "dropout:country=JP" in names
    assert [s["country"] for s in bg["pooling"]["segments"]] == ["DE", "FR", "JP"]
    assert "purchase_raw" in bg["pooling"]["segments"][0]
    gg = summary["models"]["gamma_gamma"]
    assert "spend:channel[store]" in [p["parameter"] for p in gg["parameters"]]
    md = (out / "model_summary.md").read_text()
    assert "Partial pooling by `country`" in md and "level against the reference 'ref'" in md
    segments = read_report_table(out, "segments")
    assert set(segments.loc[segments["grouping"] == "country", "group"]) == {"DE", "FR", "JP"}
    customers = read_report_table(out, "customers")
    assert {"channel", "country"} <= set(customers.columns)
    assert np.isfinite(customers["clv_mean"]).all()


def test_attributes_from_the_transactions(files, tmp_path):
    out = tmp_path / "report"
    rc = cli.main(["run", str(files / "tx_with_attrs.csv"), "--method", "map", "-q", "-o",
                   str(out), "--duplicate-rows", "keep", "--covariate", "channel"])  # fmt: skip
    assert rc == 0
    validate_report(out)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--covariate", "channel"], "--covariate/--pool-by column(s) ['channel'] not in the "
         "transactions"),
        (["--covariates-file", "CUSTOMERS", "--covariate", "chanel"],
         "column(s) ['chanel'] not in --covariates-file"),
        (["--covariates-file", "CUSTOMERS"], "no --covariate or --pool-by names a column"),
        (["--covariates-file", "CUSTOMERS", "--covariate", "country", "--pool-by", "country"],
         "is also a --covariate"),
        (["--covariate", "channel", "--covariate", "channel", "--covariates-file", "CUSTOMERS"],
         "given more than once"),
        (["--covariates-file", "NOFILE", "--covariate", "channel"], "no such file"),
        (["--covariates-file", "DUPS", "--covariate", "channel"],
         "customer id(s) on more than one row"),
        (["--covariates-file", "NOID", "--covariate", "channel"], "has no customer id column"),
    ],
    ids=["not-in-tx", "not-in-file", "no-columns", "pool-and-covariate", "twice", "no-file",
         "duplicate-ids", "no-id-column"],
)  # fmt: skip
def test_attribute_errors_exit_2_before_anything_slow(files, tmp_path, capsys, extra, message):
    attrs = pd.read_csv(files / "customers.csv", dtype=str)
    paths = {"CUSTOMERS": files / "customers.csv", "NOFILE": tmp_path / "none.csv",
             "DUPS": tmp_path / "dups.csv", "NOID": tmp_path / "noid.csv"}  # fmt: skip
    pd.concat([attrs, attrs.iloc[:2]]).to_csv(paths["DUPS"], index=False)
    attrs.rename(columns={"customer_id": "id"}).to_csv(paths["NOID"], index=False)
    extra = [str(paths.get(x, x)) for x in extra]
    out = tmp_path / "report"
    assert _run(files, out, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


def test_customers_missing_from_the_file_are_named(files, tmp_path, capsys):
    attrs = pd.read_csv(files / "customers.csv", dtype=str).iloc[5:]
    path = tmp_path / "partial.csv"
    attrs.to_csv(path, index=False)
    out = tmp_path / "report"
    assert _run(files, out, "--covariates-file", str(path), "--covariate", "channel") != 0
    err = capsys.readouterr().err
    assert "5 of 600 customers have no row in --covariates-file" in err and "Traceback" not in err
    assert not out.exists()


def test_bundled_data_have_no_attributes(tmp_path, capsys):
    rc = cli.main(["run", "--method", "map", "-q", "-o", str(tmp_path / "r"), "--pool-by", "x"])
    assert rc == 2
    assert "the bundled data do not have" in capsys.readouterr().err
