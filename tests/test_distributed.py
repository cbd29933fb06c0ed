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

import json
import os
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
    from clvbayes.compat import posterior_from_arrays
    from clvbayes.models import BetaGeoModel, GammaGammaModel

    rng = np.random.default_rng(3)
    out = []
    for cls in (BetaGeoModel, GammaGammaModel):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cls().fit(expected, method="map")
        post = {
            k: float(v.ravel()[0]) * np.exp(0.05 * rng.standard_normal((2, 20)))
            for k, v in model.draws().items()
        }
        model.posterior_ = posterior_from_arrays(post)  # works with ArviZ 0.x and 1.x
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


# ---------------------------------------------------------------------------------------
# issue 12, defect 7 and its siblings: partitions that disagree, files that cannot be
# read, a customer in two partitions, and an output folder clvbayes did not write.
# Most use the synchronous scheduler: the behaviour under test needs no cluster.

dask = pytest.importorskip("dask")
from clvbayes.errors import DataWarning  # noqa: E402


@pytest.fixture
def sync():
    with dask.config.set({"scheduler": "synchronous", "dataframe.shuffle.method": "tasks"}):
        yield


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` with the DataWarnings about CDNOW's own duplicate rows silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "[0-9,]+ rows? .* exact cop", DataWarning)
        return fn(*args, **kwargs)


def test_ids_as_text_in_one_file_and_integers_in_another_are_refused(sync, tx, tmp_path):
    """Defect 7: 2,358 customers instead of 2,357 (one split in two), where memory refuses."""
    a, b = _split_rows(tx, 2)
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.astype({"customer_id": "int64"}).to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(DataError, match="mix types"):  # the in-memory path refuses them
        summarize_transactions(
            pd.concat([pd.read_parquet(p) for p in sorted(tmp_path.iterdir())]),
            monetary_value_col="amount",
        )
    with pytest.raises(DataError) as err:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    msg = str(err.value)
    assert msg.startswith("Column 'customer_id' is stored differently in the input partitions")
    assert f"as text in file {str(tmp_path / 'a.parquet')!r}" in msg
    assert f"as integers in file {str(tmp_path / 'b.parquet')!r}" in msg
    assert ".astype(str)" in msg  # the fix


def test_csv_text_ids_and_parquet_integer_ids_are_refused(sync, tx, tmp_path):
    a, b = _split_rows(tx, 2)
    a.to_csv(tmp_path / "a.csv", index=False)  # read as text: '00004'
    b.astype({"customer_id": "int64"}).to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(DataError, match=r"as integers in file .*b\.parquet"):
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")


def test_integer_ids_of_different_dtypes_are_one_customer_each(sync, tx, expected, tmp_path):
    """int32, Int64 and int64[pyarrow] ids of one customer must land in one partition."""
    ints = tx.astype({"customer_id": "int64"})
    want = _quiet(summarize_transactions, ints, monetary_value_col="amount")
    for i, (part, dtype) in enumerate(
        zip(_split_rows(ints, 3), ["int32", "Int64", "int64[pyarrow]"], strict=True)
    ):
        part.astype({"customer_id": dtype}).to_parquet(tmp_path / f"{i}.parquet", index=False)
    got = _quiet(
        summarize_transactions_dask, tmp_path, monetary_value_col="amount", npartitions=4
    ).compute()
    assert len(got) == len(expected) == 2357
    pd.testing.assert_frame_equal(got.sort_index(), want, check_exact=True, check_index_type=False)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("z.parquet", b"", "the file is empty (0 bytes)"),
        ("z.parquet", "truncated", "ArrowInvalid: Parquet magic bytes not found"),
        ("z.parquet", b"customer_id,date\n1,2024-01-01\n", "ArrowInvalid"),  # CSV named .parquet
    ],
)
def test_unreadable_parquet_file_is_named_with_the_fix(sync, tx, tmp_path, name, content, reason):
    """Defect 7: raw pyarrow errors that named no file."""
    tx.to_parquet(tmp_path / "a.parquet", index=False)
    if content == "truncated":
        content = (tmp_path / "a.parquet").read_bytes()[:1000]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as err:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    msg = str(err.value)
    assert msg.startswith(f"Cannot read file {str(tmp_path / name)!r}: {reason}")
    assert "truncated (an interrupted copy or export)" in msg
    assert "write it again, or leave it out of the input" in msg


def test_corrupt_row_group_names_the_file_and_rows(sync, tx, tmp_path):
    """A broken data page in the second row group: the error names the file and its rows."""
    path = tmp_path / "a.parquet"
    tx.to_parquet(path, index=False, row_group_size=2000, compression=None)
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(1).column(1)  # the dates of rows 2,000-3,999
    data = bytearray(path.read_bytes())
    start = col.data_page_offset
    data[start : start + 64] = b"\xff" * 64  # overwrite the page header
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        _quiet(
            summarize_transactions_dask, tmp_path, monetary_value_col="amount",
            rows_per_partition=2000,
        )  # fmt: skip
    where = f"Cannot read file {str(path)!r}, rows 2,000-3,999 (counting from 0): "
    assert str(err.value).startswith(where)


def test_empty_csv_file_is_named(sync, tx, tmp_path):
    tx.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "b.csv").write_bytes(b"")
    with pytest.raises(DataError) as err:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    assert str(err.value).startswith(f"In file {str(tmp_path / 'b.csv')!r}: ")
    assert "is empty" in str(err.value)


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_file_without_a_column_is_named(sync, tx, tmp_path, ext):
    """The first file has every column, the second lacks the amounts."""
    a, b = _split_rows(tx, 2)
    b = b.drop(columns="amount")
    for name, part in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.{ext}"
        part.to_parquet(path, index=False) if ext == "parquet" else part.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    msg = str(err.value)
    assert msg.startswith(f"In file {str(tmp_path / f'b.{ext}')!r}: Missing column(s) 'amount'")
    assert "columns present: 'customer_id', 'date'" in msg


def test_paths_that_match_nothing(sync, tmp_path):
    with pytest.raises(DataError, match=r"^The path '.*nope.parquet' matches no file or folder"):
        summarize_transactions_dask(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match=r"^The pattern '.*\*.parquet' matches no file or folder"):
        summarize_transactions_dask(str(tmp_path / "*.parquet"))
    (tmp_path / "notes.md").write_text("not data")
    with pytest.warns(DataWarning, match="Skipped 1 file"):
        with pytest.raises(DataError, match="holds no CSV or Parquet files"):
            summarize_transactions_dask(tmp_path)
    with pytest.raises(DataError, match="list of paths is empty"):
        summarize_transactions_dask([])


def test_files_with_other_endings_in_a_folder_are_named(sync, tx, expected, tmp_path):
    """A folder's files with unsupported endings were skipped without a word."""
    tx.to_parquet(tmp_path / "a.parquet", index=False)
    (tmp_path / "b.parquet.gz").write_bytes(b"\x1f\x8b")  # not read: say so
    (tmp_path / "_SUCCESS").write_text("")  # markers starting with _ or . stay silent
    with pytest.warns(DataWarning) as caught:
        got = summarize_transactions_dask(tmp_path, monetary_value_col="amount").compute()
    skipped = [str(w.message) for w in caught if "Skipped" in str(w.message)]
    assert len(skipped) == 1
    assert skipped[0].startswith(f"Skipped 1 file(s) in folder {str(tmp_path)!r}")
    assert "b.parquet.gz" in skipped[0] and "_SUCCESS" not in skipped[0]
    _assert_same_summary(got, expected)


@pytest.mark.parametrize("dtype", ["Int64", "int64[pyarrow]", "boolean"])
def test_missing_ids_of_nullable_dtypes_are_refused(sync, tx, tmp_path, dtype):
    """Defect 2 on the Dask path: <NA> ids were credited to another customer."""
    bad = tx.copy()
    if dtype == "boolean":
        bad["customer_id"] = (bad["customer_id"].astype(int) % 2 == 0).astype("boolean")
    else:
        bad["customer_id"] = bad["customer_id"].astype(int).astype(dtype)
    bad.loc[5, "customer_id"] = pd.NA
    bad.to_parquet(tmp_path / "a.parquet", index=False)
    assert str(pd.read_parquet(tmp_path / "a.parquet")["customer_id"].dtype) == dtype
    with pytest.raises(DataError) as in_memory:
        _quiet(summarize_transactions, bad, monetary_value_col="amount")
    with pytest.raises(DataError) as on_dask:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    assert str(on_dask.value) == f"In file {str(tmp_path / 'a.parquet')!r}: {in_memory.value}"
    assert "missing customer id" in str(on_dask.value)
    # the same through a dask DataFrame
    with pytest.raises(DataError, match=r"^In partition 0 of 2 .*missing customer id"):
        _quiet(
            summarize_transactions_dask,
            dd.from_pandas(bad, npartitions=2, sort=False),
            monetary_value_col="amount",
        )


@pytest.mark.parametrize(
    "change, text",
    [
        ({"date": lambda d: d.dt.tz_localize("UTC")}, "as datetime (UTC) in file"),
        ({"date": lambda d: d.dt.strftime("%Y-%m-%d")}, "as text in file"),
        ({"amount": lambda a: a.map("{:.2f}".format)}, "as text in file"),
    ],
)
def test_dates_or_amounts_stored_differently_are_refused(sync, tx, tmp_path, change, text):
    a, b = _split_rows(tx, 2)
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.assign(**{k: f(b[k]) for k, f in change.items()}).to_parquet(
        tmp_path / "b.parquet", index=False
    )
    (col,) = change
    with pytest.raises(DataError) as err:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    msg = str(err.value)
    assert msg.startswith(f"Column {col!r} is stored differently in the input partitions: ")
    assert f"{text} {str(tmp_path / 'b.parquet')!r}" in msg
    assert str(tmp_path / "a.parquet") in msg


def test_amounts_of_different_number_dtypes_agree_with_memory(sync, tx, tmp_path):
    ints = tx.assign(amount=tx["amount"].round().astype("int64"))
    a, b = _split_rows(ints, 2)
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.astype({"amount": "float32"}).to_parquet(tmp_path / "b.parquet", index=False)
    want = _quiet(summarize_transactions, ints, monetary_value_col="amount")
    got = _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount").compute()
    _assert_same_summary(got, want)


def _typo_rows(tx, n, date):
    rows = tx.iloc[:n].copy()
    rows["date"] = pd.Timestamp(date)
    return rows


def test_outlying_dates_are_judged_on_all_partitions(sync, tx, tmp_path):
    """A 2099 typo in its own file would become everyone's observation end (defect 4)."""
    typo = _typo_rows(tx, 3, "2099-01-01")
    tx.to_parquet(tmp_path / "a.parquet", index=False)
    typo.to_parquet(tmp_path / "b.parquet", index=False)
    both = pd.concat([tx, typo], ignore_index=True)
    with pytest.raises(DataError, match="far outside the bulk"):
        _quiet(summarize_transactions, both, monetary_value_col="amount")
    with pytest.raises(DataError) as err:
        _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount")
    msg = str(err.value)
    assert msg.startswith("Column 'date' has 3 row(s) with dates far outside the bulk")
    assert f"3 row(s) in file {str(tmp_path / 'b.parquet')!r}" in msg
    assert "'2099-01-01'" in msg and "outlying_dates='drop'" in msg
    # drop: the in-memory result
    want = _quiet(summarize_transactions, both, monetary_value_col="amount", outlying_dates="drop")
    with pytest.warns(DataWarning, match="Dropped these rows"):
        rfm = _quiet(
            summarize_transactions_dask, tmp_path, monetary_value_col="amount",
            outlying_dates="drop",
        )  # fmt: skip
    got = rfm.compute()
    pd.testing.assert_frame_equal(got.sort_index(), want, check_exact=True)
    assert got.attrs["observation_end"] == want.attrs["observation_end"] == "1998-06-30"


def test_a_quiet_file_is_not_an_outlier(sync, tx, tmp_path):
    """Per-partition rules would refuse a file whose own dates have a long gap (and an
    observation end long after one file's last purchase) that the whole log does not."""
    early = tx[tx["date"] < "1997-02-01"]
    late = tx[tx["date"] >= "1997-02-01"]
    late = late.sort_values("date", kind="stable")
    a = pd.concat([early, late.iloc[-1:]])  # January 1997, and one row of June 1998
    a.to_parquet(tmp_path / "a.parquet", index=False)
    late.iloc[:-1].to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(DataError, match="far outside the bulk"):  # file a on its own
        _quiet(summarize_transactions, a, monetary_value_col="amount")
    kwargs = {"monetary_value_col": "amount", "observation_end": "1998-06-30"}
    got = _quiet(summarize_transactions_dask, tmp_path, **kwargs).compute()
    _assert_same_summary(got, _quiet(summarize_transactions, tx, **kwargs))


def test_far_observation_end_is_judged_on_all_partitions(sync, tx, tmp_path):
    for i, part in enumerate(_split_rows(tx, 2)):
        part.to_parquet(tmp_path / f"{i}.parquet", index=False)
    with pytest.raises(DataError) as in_memory:
        _quiet(summarize_transactions, tx, observation_end="2099-06-30")
    with pytest.raises(DataError) as on_dask:
        _quiet(summarize_transactions_dask, tmp_path, observation_end="2099-06-30")
    assert str(on_dask.value) == str(in_memory.value)


def test_a_whole_file_far_from_the_others_is_warned_about(sync, tx, tmp_path):
    """Too many rows for the outlier rule (3%), but a whole file 100 years later."""
    typo = _typo_rows(tx, 200, "2099-01-01")
    tx.to_parquet(tmp_path / "a.parquet", index=False)
    typo.to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.warns(DataWarning) as caught:
        summarize_transactions_dask(tmp_path, monetary_value_col="amount")
    (msg,) = [str(w.message) for w in caught if "days away" in str(w.message)]
    assert msg.startswith(
        f"The dates in column 'date' of file {str(tmp_path / 'b.parquet')!r} (2099-01-01 to "
        "2099-01-01) are 36,710 days away from those of the other partitions (1997-01-01 to "
        "1998-06-30): they set the observation end (2099-01-01)"
    )


def test_partition_warnings_reach_the_caller(sync, tx, tmp_path):
    """Warnings raised inside a partition (CDNOW's 21 exact duplicate rows) were swallowed."""
    tx.to_parquet(tmp_path / "a.parquet", index=False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(DataWarning) as in_memory:
            warnings.simplefilter("error", DataWarning)
            summarize_transactions(tx, monetary_value_col="amount")
    with pytest.warns(DataWarning) as caught:
        summarize_transactions_dask(tmp_path, monetary_value_col="amount")
    where = f"In file {str(tmp_path / 'a.parquet')!r}: "
    assert where + str(in_memory.value) in [str(w.message) for w in caught]


def test_duplicate_rows_drop_removes_copies_across_files(sync, tx, tmp_path):
    """A double export (one file twice) with duplicate_rows='drop' gives the in-memory table."""
    tx.to_parquet(tmp_path / "a.parquet", index=False)
    tx.to_parquet(tmp_path / "a_copy.parquet", index=False)
    kwargs = {"monetary_value_col": "amount", "duplicate_rows": "drop"}
    want = _quiet(summarize_transactions, pd.concat([tx, tx]), **kwargs)
    got = _quiet(summarize_transactions_dask, tmp_path, **kwargs).compute()
    _assert_same_summary(got, want)
    # by default the copy is named (it doubled those customers' spend without a word)
    with pytest.warns(DataWarning) as caught:
        summarize_transactions_dask(tmp_path, monetary_value_col="amount")
    (msg,) = [str(w.message) for w in caught if "identical content" in str(w.message)]
    a, copy = str(tmp_path / "a.parquet"), str(tmp_path / "a_copy.parquet")
    assert msg.startswith(f"2 input files have identical content ({a!r} = {copy!r}): a copy")
    assert "duplicate_rows='drop'" in msg


# scoring: one row per customer, and an output folder clvbayes did not write


@pytest.fixture(scope="module")
def small(expected):
    """300 customers with the columns the models use (fast to score)."""
    return expected.iloc[:300].drop(columns="first_purchase")


FAST = {"horizon": 52, "annual_discount_rate": 0.1, "n_outcome_samples": 20}


def test_customer_in_two_partitions_is_refused(client, small, models, tmp_path):
    """Defect 7: a customer in two partitions got two output rows."""
    bg, gg = models
    rfm = dd.concat(
        [dd.from_pandas(small.iloc[:200], npartitions=1), dd.from_pandas(small.iloc[150:], 2)]
    )
    with pytest.raises(DataError) as err:
        score_customers_dask(rfm, bg, gg, tmp_path / "scores", **FAST)
    msg = str(err.value)
    first = small.index[150]
    assert msg.startswith(
        f"The customer table has 50 customer id(s) in more than one row ({first!r} "
        "(partitions 0 and 1)"
    )
    assert "summarize_transactions_dask" in msg  # the fix
    assert list(tmp_path.iterdir()) == []  # nothing published, no temporary folder left


def test_missing_or_mixed_type_index_ids_are_refused(sync, small, models, tmp_path):
    bg, gg = models
    na = small.copy()
    na.index = pd.Index([pd.NA, *na.index[1:].astype(int)], dtype="Int64", name="customer_id")
    with pytest.raises(DataError, match=r"^In partition 0 of the customer table: 1 customer"):
        score_customers_dask(dd.from_pandas(na, 2, sort=False), bg, gg, tmp_path / "a", **FAST)
    ints = small.iloc[150:].copy()
    ints.index = ints.index.astype(int)
    mixed = dd.from_map(
        lambda i: [small.iloc[:150], ints][i], [0, 1], meta=small.iloc[:0],
        enforce_metadata=False,
    )  # fmt: skip
    with pytest.raises(DataError) as err:
        score_customers_dask(mixed, bg, gg, tmp_path / "b", **FAST)
    assert str(err.value).startswith(
        "In partition 1 of the customer table: the customer ids (the index) are stored as "
        "integers (int64), but the table's index is text"
    )
    assert list(tmp_path.iterdir()) == []


def test_output_folder_not_written_by_clvbayes_is_never_replaced(sync, small, models, tmp_path):
    """overwrite=True used to delete whatever out_path held (a project folder, say)."""
    bg, gg = models
    rfm = dd.from_pandas(small, npartitions=2)
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    (project / "model_summary.json").write_text('{"clvbayes_report": 1}')
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as err:
            score_customers_dask(rfm, bg, gg, project, overwrite=overwrite, **FAST)
        assert str(err.value).startswith(
            f"{str(project)!r} holds 2 entries that score_customers_dask did not write "
            "('model_summary.json', 'notes.txt'); clvbayes never deletes"
        )
    assert sorted(p.name for p in project.iterdir()) == ["model_summary.json", "notes.txt"]
    assert (project / "notes.txt").read_text() == "mine"

    # its own table is replaced (only its listed files), an empty folder is used as is
    out = tmp_path / "scores"
    out.mkdir()
    score_customers_dask(rfm, bg, gg, out, **FAST)
    settings = json.loads((out / "_clvbayes.json").read_text())
    assert settings["files"] == ["part.0.parquet", "part.1.parquet"]
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        score_customers_dask(rfm, bg, gg, out, **FAST)
    score_customers_dask(dd.from_pandas(small, npartitions=3), bg, gg, out, overwrite=True, **FAST)
    assert sorted(p.name for p in out.iterdir()) == [
        "_clvbayes.json", "part.0.parquet", "part.1.parquet", "part.2.parquet"
    ]  # fmt: skip
    assert len(pd.read_parquet(out)) == len(small)

    # ... unless something else has been put in it
    (out / "tx.csv").write_text("customer_id,date\n")
    with pytest.raises(FileExistsError, match=r"holds 1 entry .*\('tx.csv'\)"):
        score_customers_dask(rfm, bg, gg, out, overwrite=True, **FAST)
    assert (out / "tx.csv").exists() and len(pd.read_parquet(out / "part.2.parquet")) > 0

    # a table written before the file list existed (part.N.parquet, N < n_partitions)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "part.0.parquet").write_bytes((out / "part.0.parquet").read_bytes())
    old = {"seed": 0, "seeds": "partition i is scored with ...", "n_partitions": 1}
    (legacy / "_clvbayes.json").write_text(json.dumps(old))
    (legacy / "part.1.parquet").write_bytes(b"")  # not one of its partitions
    with pytest.raises(FileExistsError, match=r"\('part.1.parquet'\)"):
        score_customers_dask(rfm, bg, gg, legacy, overwrite=True, **FAST)
    (legacy / "part.1.parquet").unlink()
    score_customers_dask(rfm, bg, gg, legacy, overwrite=True, **FAST)
    assert json.loads((legacy / "_clvbayes.json").read_text())["n_partitions"] == 2
    legacy_files = sorted(p.name for p in legacy.iterdir())
    assert legacy_files == ["_clvbayes.json", "part.0.parquet", "part.1.parquet"]

    # a file, or an empty path, is never taken for a folder
    (tmp_path / "file.parquet").write_text("x")
    with pytest.raises(FileExistsError, match="is a file or a link"):
        score_customers_dask(rfm, bg, gg, tmp_path / "file.parquet", overwrite=True, **FAST)
    with pytest.raises(ValueError, match="out_path is empty"):
        score_customers_dask(rfm, bg, gg, "", overwrite=True, **FAST)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["file.parquet", "legacy", "project", "scores"]  # no leftovers


def test_written_parts_with_ids_of_two_types_are_refused(sync, small, tmp_path):
    """The last check before publishing, for tables whose index dtype Dask cannot tell."""
    from clvbayes.distributed import _check_one_row_per_customer

    ints = small.iloc[150:].copy()
    ints.index = ints.index.astype(int)
    small.iloc[:150].to_parquet(tmp_path / "part.0.parquet")
    ints.to_parquet(tmp_path / "part.1.parquet")
    with pytest.raises(DataError) as err:
        _check_one_row_per_customer(tmp_path, 2)
    assert str(err.value).startswith(
        "The customer ids (the index) of the customer table are stored differently in its "
        "partitions: as integers in partition(s) 1; as text in partition(s) 0."
    )


def test_interrupted_replacement_is_recovered(sync, small, models, tmp_path):
    """A crash between the two renames left the previous table only in .{name}.old-*."""
    bg, gg = models
    rfm = dd.from_pandas(small, npartitions=2)
    out = tmp_path / "scores"
    score_customers_dask(rfm, bg, gg, out, **FAST)
    before = pd.read_parquet(out)
    os.rename(out, tmp_path / ".scores.old-0000abcd")  # the state after the first rename
    partial = tmp_path / ".scores.partial-0000abcd"  # kill -9 while writing
    partial.mkdir()
    (partial / "part.0.parquet").write_bytes(b"")
    with pytest.warns(DataWarning) as caught:
        with pytest.raises(FileExistsError, match="pass overwrite=True"):
            score_customers_dask(rfm, bg, gg, out, **FAST)
    messages = [str(w.message) for w in caught]
    assert f"Put back the previous table of scores at {str(out)!r}" in messages[0]
    assert "were left by interrupted runs" in messages[1] and str(partial) in messages[1]
    pd.testing.assert_frame_equal(pd.read_parquet(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scores.partial-0000abcd", "scores"]

    # with the new table in place, a verified leftover of the old one is removed
    (tmp_path / ".scores.old-0000beef").mkdir()
    for name in ("_clvbayes.json", "part.0.parquet"):
        (tmp_path / ".scores.old-0000beef" / name).write_bytes((out / name).read_bytes())
    with pytest.warns(DataWarning, match="interrupted runs"):
        score_customers_dask(rfm, bg, gg, out, overwrite=True, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scores.partial-0000abcd", "scores"]


def test_csv_and_parquet_files_together_equal_in_memory(sync, tx, expected, tmp_path):
    """Text ids read as two dtypes (CSV: pandas' str, Parquet through Dask: its string) are
    cast alike before the shuffle, and the summary keeps the in-memory index dtype."""
    text_dates = tx.assign(date=tx["date"].dt.strftime("%Y-%m-%d"))
    a, b = _split_rows(text_dates, 2)
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    got = _quiet(summarize_transactions_dask, tmp_path, monetary_value_col="amount").compute()
    _assert_same_summary(got, expected)


def test_two_runs_into_one_folder_are_refused(sync, small, models, tmp_path):
    """Two concurrent runs both reported success and one table silently won."""
    from clvbayes.distributed import OutputBusy, _out_lock

    bg, gg = models
    out = tmp_path / "scores"
    with _out_lock(out):  # another run holds the folder
        with pytest.raises(OutputBusy, match="Another run of score_customers_dask is writing"):
            score_customers_dask(dd.from_pandas(small, 2), bg, gg, out, **FAST)
    assert list(tmp_path.iterdir()) == []  # the lock file goes with its holder
    score_customers_dask(dd.from_pandas(small, 2), bg, gg, out, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"negative_amounts": "ignore"}, DataError, "^Unknown negative_amounts='ignore'; use one"),
        ({"duplicate_rows": "remove"}, DataError, "^Unknown duplicate_rows='remove'; use one"),
        ({"outlying_dates": "warn"}, DataError, "^Unknown outlying_dates='warn'; use one"),
        ({"time_unit": "months"}, DataError, "months"),
        ({"rows_per_partition": 0}, ValueError, "^rows_per_partition must be a whole number"),
        ({"npartitions": 2.5}, ValueError, "^npartitions must be a whole number"),
        ({"shuffle_method": "fast"}, ValueError, "^Unknown shuffle_method='fast'"),
    ],
)
def test_bad_options_are_refused_before_reading(tmp_path, kwargs, error, message):
    """Option errors used to surface from the first partition, as "In file ...: ..."."""
    (tmp_path / "a.parquet").write_bytes(b"")  # never read: the options fail first
    with pytest.raises(error, match=message):
        summarize_transactions_dask(tmp_path, **kwargs)


@pytest.mark.parametrize("seed", [-3, 1.5, True])
def test_bad_seed_is_refused_before_scoring(small, models, tmp_path, seed):
    bg, gg = models
    with pytest.raises(ValueError, match=r"^seed must be a whole number >= 0 or None"):
        score_customers_dask(dd.from_pandas(small, 2), bg, gg, tmp_path / "s", seed=seed, **FAST)
    assert list(tmp_path.iterdir()) == []
