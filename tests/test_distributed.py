"""The Dask path gives the in-memory results, on a real two-worker ``distributed.LocalCluster``.

- summary: Parquet (whole files and row-group pieces), CSV and a dask DataFrame input give
  exactly the table of ``summarize_transactions`` on the whole log;
- scores: expectation columns equal the in-memory ones, and the whole table (predictive
  intervals included) is reproduced by ``score_customers`` per partition with
  ``partition_seed``; two runs with one seed write the same table;
- bad input: a malformed row in the middle of a file gives the in-memory message plus the
  file and row range, and a failed scoring job leaves no output behind.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from clvbayes.data import DataError, summarize_transactions  # noqa: E402
from clvbayes.datasets import load_cdnow_transactions  # noqa: E402
from clvbayes.distributed import (  # noqa: E402
    partition_seed,
    score_customers_dask,
    summarize_transactions_dask,
)
from clvbayes.predict import score_customers  # noqa: E402

SCORE = {"horizon": 52, "annual_discount_rate": 0.1, "n_outcome_samples": 60}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def tx():
    return load_cdnow_transactions()[["customer_id", "date", "amount"]]


@pytest.fixture(scope="module")
def expected(tx):
    return summarize_transactions(tx, monetary_value_col="amount")


def _split_rows(tx, n):
    """Row blocks of the log in file order: most customers' rows span several blocks."""
    return [tx.iloc[idx] for idx in np.array_split(np.arange(len(tx)), n)]


def _assert_same_summary(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.sort_index(), expected, check_exact=True)
    for key in ("time_unit", "observation_end", "merge_same_day", "n_transactions"):
        assert got.attrs[key] == expected.attrs[key], key


def test_import_does_not_need_dask():
    code = "import sys, clvbayes.distributed; assert 'dask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_summary_from_parquet_equals_in_memory(client, tx, expected, tmp_path):
    a, b, c = _split_rows(tx, 3)
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False, row_group_size=500)  # 5 row groups
    c.to_parquet(tmp_path / "c.parquet", index=False)
    rfm = summarize_transactions_dask(
        tmp_path, monetary_value_col="amount", rows_per_partition=1000, npartitions=3
    )
    assert rfm.npartitions == 3
    _assert_same_summary(rfm.compute(), expected)


def test_summary_from_csv_with_given_end_in_days(client, tx, tmp_path):
    for i, part in enumerate(_split_rows(tx, 2)):
        part.assign(date=part["date"].dt.strftime("%Y%m%d")).to_csv(
            tmp_path / f"tx{i}.csv", index=False
        )
    kwargs = {
        "monetary_value_col": "amount",
        "observation_end": "1998-12-31",
        "time_unit": "days",
        "datetime_format": "%Y%m%d",
    }
    rfm = summarize_transactions_dask(sorted(tmp_path.glob("*.csv")), **kwargs)
    _assert_same_summary(rfm.compute(), summarize_transactions(tx, **kwargs))


def test_summary_from_dask_dataframe(client, tx, expected):
    rfm = summarize_transactions_dask(
        dd.from_pandas(tx, npartitions=4), monetary_value_col="amount"
    )
    got = rfm.compute()
    # dask stores text as its own string dtype (dask.config "dataframe.convert-string")
    assert isinstance(got.index.dtype, pd.StringDtype)
    got.index = got.index.astype(expected.index.dtype)
    _assert_same_summary(got, expected)


def test_malformed_row_mid_file_names_file_rows_and_stops(client, tx, tmp_path):
    """Same message as in memory, prefixed with the file and the row range of its row groups."""
    a, b = _split_rows(tx, 2)
    a.to_parquet(tmp_path / "a.parquet", index=False)
    bad = b.astype({"amount": str}).reset_index(drop=True)
    bad.loc[1234, "amount"] = "12,50"
    bad.to_parquet(tmp_path / "b.parquet", index=False, row_group_size=1000)
    with pytest.raises(DataError) as in_memory:  # the partition's rows, as one table
        summarize_transactions(
            bad.iloc[1000:2000].reset_index(drop=True), monetary_value_col="amount"
        )
    with pytest.raises(DataError) as on_dask:
        summarize_transactions_dask(tmp_path, monetary_value_col="amount", rows_per_partition=1000)
    where = f"In file {str(tmp_path / 'b.parquet')!r}, rows 1,000-1,999 (counting from 0): "
    assert str(on_dask.value) == where + str(in_memory.value)
    assert "'12,50'" in str(on_dask.value)  # the in-memory message names the value and the id
    assert str(on_dask.value).endswith("Row (counting from 0): 234.")  # within the partition


def test_missing_column_message_is_the_in_memory_one_with_the_file(client, tx, tmp_path):
    tx.to_parquet(tmp_path / "tx.parquet", index=False)
    with pytest.raises(DataError) as in_memory:
        summarize_transactions(tx, monetary_value_col="value")
    with pytest.raises(DataError) as on_dask:
        summarize_transactions_dask(tmp_path, monetary_value_col="value")
    where = f"In file {str(tmp_path / 'tx.parquet')!r}: "
    assert str(on_dask.value) == where + str(in_memory.value)


@pytest.fixture(scope="module")
def models(expected):
    """Fast models with a small fake posterior (40 draws around the MAP fit)."""
    import arviz as az

    from clvbayes.models import BetaGeoModel, GammaGammaModel

    rng = np.random.default_rng(3)
    out = []
    for cls in (BetaGeoModel, GammaGammaModel):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls().fit(expected, method="map")
        post = {
            k: float(v) * np.exp(0.05 * rng.standard_normal((2, 20)))
            for k, v in zip(
                model.param_names, model.idata_.posterior.to_array().values.ravel(), strict=True
            )
        }
        model.idata_ = az.from_dict(posterior=post)
        out.append(model)
    return out


def test_scores_equal_in_memory_and_reproduce(client, expected, models, tmp_path):
    bg, gg = models
    rfm = dd.from_pandas(expected, npartitions=3)
    first = score_customers_dask(rfm, bg, gg, tmp_path / "s1", seed=7, **SCORE)
    again = score_customers_dask(rfm, bg, gg, tmp_path / "s2", seed=7, **SCORE)
    got = pd.read_parquet(first).sort_index()
    pd.testing.assert_frame_equal(got, pd.read_parquet(again).sort_index())
    assert got.index.equals(expected.index)

    # expectations (ci columns) do not depend on how customers are partitioned
    ref = score_customers(expected, bg, gg, seed=7, **SCORE).customers
    for col in got.columns:
        if "_pi_" in col:
            continue
        rtol = 1e-10 if col.startswith("clv") else 0  # clv: discount-schedule interpolation
        np.testing.assert_allclose(got[col], ref[col], rtol=rtol, atol=0, err_msg=col)

    # the whole table is score_customers per partition, seeded with partition_seed(seed, i)
    parts = [
        score_customers(rfm.partitions[i].compute(), bg, gg, seed=partition_seed(7, i), **SCORE)
        for i in range(rfm.npartitions)
    ]
    manual = pd.concat([p.customers for p in parts]).sort_index()
    manual.index = manual.index.astype(got.index.dtype)  # dask's string dtype -> pandas' default
    pd.testing.assert_frame_equal(got, manual, check_exact=True)
    assert len({partition_seed(7, i) for i in range(100)}) == 100

    with pytest.raises(FileExistsError, match="overwrite=True"):
        score_customers_dask(rfm, bg, gg, tmp_path / "s1", **SCORE)


def test_failed_scoring_writes_nothing(client, expected, models, tmp_path):
    bg, gg = models
    broken = expected.copy()
    broken.iloc[2000, broken.columns.get_loc("recency")] = 1000.0  # recency > T
    rfm = dd.from_pandas(broken, npartitions=3)
    with pytest.raises(DataError) as err:
        score_customers_dask(rfm, bg, gg, tmp_path / "scores", **SCORE)
    assert str(err.value).startswith("In partition 2 of the customer table: Column 'recency'")
    assert "recency > T" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left behind

    # an existing table survives a failed overwrite
    good = score_customers_dask(
        dd.from_pandas(expected, npartitions=2), bg, gg, tmp_path / "s", **SCORE
    )
    with pytest.raises(DataError):
        score_customers_dask(rfm, bg, gg, good, overwrite=True, **SCORE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert len(pd.read_parquet(good)) == len(expected)
