"""The two embarrassingly parallel steps on a Dask cluster, for logs that do not fit one machine.

Install with ``pip install "clvbayes[dask]"`` (``dask[dataframe]`` and ``distributed``).
Dask is imported inside the functions, so ``import clvbayes.distributed`` works without it.

The job splits into three steps; only the first and the last touch every row:

1. :func:`summarize_transactions_dask` -- transactions -> RFM summary.  The log is read as
   partitions (Parquet row groups or whole files, CSV files, or your own dask DataFrame),
   shuffled so that all rows of a customer land in one partition, and each partition is
   summarised by the in-memory :func:`clvbayes.data.summarize_transactions` (the same
   code, no second implementation).  Because a customer's rows are all in one partition,
   the per-partition summaries together are exactly the in-memory summary.
2. The model fit runs in memory, on the client: collect the summary
   (``rfm = rfm_ddf.compute()``, about 50 bytes per customer) and fit
   :class:`~clvbayes.models.BetaGeoModel` and :class:`~clvbayes.models.GammaGammaModel`
   as usual.  The fit only sees the *distinct* histories (:func:`clvbayes.data.compress`),
   so its cost does not grow with the number of rows.
3. :func:`score_customers_dask` -- every customer scored by the in-memory
   :func:`clvbayes.predict.score_customers`, one partition at a time.  The fitted models
   (posterior draws only, a few hundred kB) are sent to each worker once; the per-customer
   table is written as partitioned Parquet.

Identical results.  The summary equals the in-memory one (row order aside: sort by
customer id), up to the order in which a customer's same-day amounts are added, which
can change ``monetary_value`` in the last bit.  Scores: ``p_alive``, expected purchases
and spend are computed per customer history and are identical; expected CLV sums a
discount schedule with an interpolation whose nodes depend on the histories scored
together, and agrees to about 1e-12 (relative).  Predictive intervals come from
simulation: partition ``i`` is scored with the seed :func:`partition_seed` (``seed``,
``i``), so the same input partitions and seed reproduce the whole table exactly; they
differ from an in-memory run, which draws its simulations in another order.

Segment totals are **not** produced here.  An interval for a total (a segment, the whole
base) needs the per-draw sums over all its customers, across partitions;
:func:`~clvbayes.predict.score_customers` reduces them to interval summaries inside each
call, and summaries of partitions cannot be added up.  Compute segment totals in memory
with :func:`~clvbayes.predict.score_customers` (``by=...``) on the summary, which holds
one row per customer and fits on one machine long after the transaction log does.

Bad input.  Every input partition is checked first (the same checks and the same
:class:`~clvbayes.data.DataError` messages as in memory, prefixed with the file and row
range or the partition), before anything is shuffled or written; the scores are written
to a temporary folder that is renamed into place only when every partition succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from clvbayes.data import DataError, read_transactions, summarize_transactions
from clvbayes.data.validation import require_columns

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd

__all__ = ["partition_seed", "score_customers_dask", "summarize_transactions_dask"]

_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".txt", ".tsv")
#: Name of the settings file written next to the Parquet parts of the scores.
SETTINGS_FILE = "_clvbayes.json"


def _require_dask():
    try:
        import dask
        import dask.dataframe as dd
    except ImportError as err:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "clvbayes.distributed needs Dask: pip install 'clvbayes[dask]' "
            "(dask[dataframe] and distributed)."
        ) from err
    return dask, dd


# ---------------------------------------------------------------------------------------
# input partitions


@dataclass(frozen=True)
class _Piece:
    """One input partition: a file, or some row groups of a Parquet file."""

    path: str
    row_groups: tuple[int, ...] | None  # None: the whole file
    first_row: int
    n_rows: int | None  # None: unknown (CSV)

    @property
    def label(self) -> str:
        if self.n_rows is None or self.row_groups is None:
            return f"file {self.path!r}"
        last = self.first_row + self.n_rows - 1
        return f"file {self.path!r}, rows {self.first_row:,}-{last:,} (counting from 0)"


def _hidden(relative: str) -> bool:
    """Whether a path below the searched folder has a part starting with ``_`` or ``.``."""
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def _list_files(source: str | os.PathLike[str] | list) -> list[str]:
    """Files of a path, a directory (recursively), a glob or a list of those."""
    import fsspec

    sources = source if isinstance(source, list | tuple) else [source]
    files: list[str] = []
    for item in sources:
        text = os.fspath(item)
        fs, _, paths = fsspec.core.get_fs_token_paths(text)
        for path in paths:
            if fs.isdir(path):
                found = sorted(
                    p
                    for p in fs.find(path)
                    if p.lower().endswith(_PARQUET + _CSV)
                    and not _hidden(p[len(path.rstrip("/")) :])
                )
                files += [fs.unstrip_protocol(p) if "://" in text else p for p in found]
            else:
                files.append(fs.unstrip_protocol(path) if "://" in text else path)
    if not files:
        raise DataError(
            f"No CSV or Parquet files found at {source!r}; supported endings are "
            f"{', '.join(_PARQUET + _CSV)}."
        )
    return files


def _parquet_pieces(path: str, rows_per_partition: int) -> list[_Piece]:
    """Consecutive row groups of one Parquet file, about ``rows_per_partition`` rows each."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    if sum(sizes) <= rows_per_partition or len(sizes) <= 1:
        return [_Piece(path, None, 0, sum(sizes))]
    pieces, groups, first, n = [], [], 0, 0
    for i, size in enumerate(sizes):
        if groups and n + size > rows_per_partition:
            pieces.append(_Piece(path, tuple(groups), first, n))
            groups, first, n = [], first + n, 0
        groups.append(i)
        n += size
    pieces.append(_Piece(path, tuple(groups), first, n))
    return pieces


def _read_piece(piece: _Piece, columns: list[str], customer_id_col: str, read_kwargs: dict):
    """Read one input partition with the reader of the in-memory path."""
    if piece.row_groups is None:
        return read_transactions(
            piece.path, customer_id_col=customer_id_col, columns=columns, **read_kwargs
        )
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(piece.path, "rb") as fh:
        table = pq.ParquetFile(fh).read_row_groups(list(piece.row_groups), columns=columns)
    return table.to_pandas()


def _input_frame(source, required: dict[str, str | None], rows_per_partition: int, read_kwargs):
    """The input as a dask DataFrame, a label per partition and the id dtype in pandas.

    The id dtype is the one :func:`~clvbayes.data.read_transactions` gives in memory
    (Dask may convert text columns to its own string dtype on the way).
    """
    _, dd = _require_dask()
    columns = [c for c in required.values() if c is not None]
    customer_id_col = required["customer_id_col"]
    if isinstance(source, dd.DataFrame):
        require_columns(pd.DataFrame(columns=list(source.columns)), required)
        source = source[columns]
        n = source.npartitions
        labels = [f"partition {i} of {n} of the input dask DataFrame" for i in range(n)]
        id_dtype = source.dtypes.get(customer_id_col)
        return source, labels, id_dtype
    if isinstance(source, pd.DataFrame):
        raise TypeError(
            "summarize_transactions_dask needs files or a dask DataFrame; for a pandas "
            "DataFrame use clvbayes.data.summarize_transactions."
        )
    pieces: list[_Piece] = []
    for path in _list_files(source):
        if path.lower().endswith(_PARQUET):
            pieces += _parquet_pieces(path, rows_per_partition)
        else:
            pieces.append(_Piece(path, None, 0, None))
    first = pieces[0]
    if first.path.lower().endswith(_PARQUET):
        import fsspec
        import pyarrow.parquet as pq

        with fsspec.open(first.path, "rb") as fh:
            schema = pq.ParquetFile(fh).schema_arrow
        meta = schema.empty_table().to_pandas()
    else:
        meta = read_transactions(
            first.path, customer_id_col=customer_id_col, nrows=20, **read_kwargs
        ).iloc[:0]
    require_columns(meta, required)
    meta = meta[columns]
    ddf = dd.from_map(
        _read_piece,
        pieces,
        columns=columns,
        customer_id_col=customer_id_col,
        read_kwargs=read_kwargs,
        meta=meta,
        enforce_metadata=False,
        label="clvbayes-read",
    )
    return ddf, [p.label for p in pieces], meta.dtypes.get(customer_id_col)


# ---------------------------------------------------------------------------------------
# transactions -> RFM


def _located(err: DataError, where: str) -> DataError:
    return DataError(f"In {where}: {err}")


def _check_partition(part: pd.DataFrame, label: str, kwargs: dict) -> dict[str, Any]:
    """Validate and summarise one input partition; return what the client needs."""
    if len(part) == 0:  # an empty file or row group is no error while others have rows
        return {"empty": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # negative_amounts="drop": warned once, globally
            summary = summarize_transactions(part, **kwargs)
    except DataError as err:
        raise _located(err, label) from None
    attrs = summary.attrs
    return {
        "observation_end": attrs["observation_end"],
        "n_transactions": attrs["n_transactions"],
        "n_negative_amount_rows": attrs.get("n_negative_amount_rows", 0),
        "n_negative_amount_rows_dropped": attrs.get("n_negative_amount_rows_dropped", 0),
        "meta": summary.iloc[:0],
    }


def _summarize_group(
    part: pd.DataFrame, kwargs: dict, meta: pd.DataFrame, attrs: dict, partition_info=None
) -> pd.DataFrame:
    """Summarise one customer-grouped partition (all rows of its customers are in it)."""
    if len(part) == 0:
        out = meta.copy()
    else:
        ids = kwargs["customer_id_col"]
        if part[ids].dtype != meta.index.dtype:  # undo Dask's string conversion
            part = part.assign(**{ids: part[ids].astype(meta.index.dtype)})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = summarize_transactions(part, **kwargs)
        except DataError as err:
            number = partition_info["number"] if partition_info else "?"
            where = f"partition {number} of the transactions grouped by customer"
            raise _located(err, where) from None
    out.attrs = dict(attrs)
    return out


def _latest(labels: list[str]) -> str:
    """The latest of the partitions' end labels (ISO dates or timestamps)."""
    try:
        return max(labels, key=pd.Timestamp)
    except TypeError as err:
        raise DataError(
            "The partitions mix timezone-aware and naive purchase times, so their last "
            f"transactions cannot be compared (e.g. {', '.join(sorted(set(labels))[:4])}). "
            "Store the times of every file in one way, or pass observation_end."
        ) from err


def summarize_transactions_dask(
    source: str | os.PathLike[str] | list[str | os.PathLike[str]] | dd.DataFrame,
    *,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    monetary_value_col: str | None = None,
    observation_end: Any = None,
    time_unit: str = "weeks",
    datetime_format: str | None = None,
    merge_same_day: bool = True,
    negative_amounts: str = "error",
    npartitions: int | None = None,
    rows_per_partition: int = 5_000_000,
    shuffle_method: str | None = None,
    **read_kwargs: Any,
) -> dd.DataFrame:
    """Summarise a partitioned transaction log into one RFM row per customer, with Dask.

    Runs on the current Dask scheduler (a ``distributed.Client`` if one is active).  Two
    passes over the input:

    1. *check* (computed now): every input partition is summarised on its own by
       :func:`clvbayes.data.summarize_transactions`, which validates it and reports its
       last transaction; a :class:`~clvbayes.data.DataError` names the file and rows (or
       the partition) and stops the job before anything is shuffled or written.  Unless
       ``observation_end`` is given, the summary ends at the latest transaction of all
       partitions, as in memory.
    2. *summary* (lazy): the rows are shuffled by customer id so that each customer's rows
       are in one partition, and each partition is summarised by the same function with
       the global ``observation_end``.

    Parameters
    ----------
    source : path, glob, list of paths, or dask.dataframe.DataFrame
        Parquet or CSV files (local or any fsspec URL such as ``s3://bucket/tx/``), a
        folder of them (searched recursively; names starting with ``_`` or ``.`` are
        skipped), or a dask DataFrame you built yourself (e.g. ``dd.read_csv(...,
        blocksize="64MB")`` to split one huge CSV).  Files are read with
        :func:`clvbayes.data.read_transactions`, one partition per CSV file and per
        ``rows_per_partition`` rows of Parquet row groups.
    customer_id_col, datetime_col, monetary_value_col, observation_end, time_unit, \
datetime_format, merge_same_day, negative_amounts
        As in :func:`clvbayes.data.summarize_transactions`.
    npartitions : int, optional
        Partitions of the summary (default: as many as the input).
    rows_per_partition : int
        Target rows per input partition when splitting Parquet files by row groups.
    shuffle_method : {"tasks", "p2p", "disk"}, optional
        Passed to :meth:`dask.dataframe.DataFrame.shuffle` (default: Dask's choice).
    **read_kwargs
        Passed to :func:`pandas.read_csv` for CSV files.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy; index: customer ids, columns as in
        :func:`~clvbayes.data.summarize_transactions`, customers grouped by a hash of their
        id (``.compute().sort_index()`` gives the in-memory row order).  Each partition's
        ``attrs`` (kept by ``.compute()``) hold ``time_unit``, ``observation_end``,
        ``merge_same_day`` and the input totals ``n_transactions`` (and, with amounts,
        ``n_negative_amount_rows`` and ``n_negative_amount_rows_dropped``).  Call
        ``.persist()`` to keep it in cluster memory for fitting and scoring.

    Raises
    ------
    DataError
        For any invalid input: the in-memory message prefixed with ``"In file '...',
        rows a-b: "`` (Parquet row groups), ``"In file '...': "`` (whole files) or
        ``"In partition i of n of the input dask DataFrame: "``.
    """
    dask, _ = _require_dask()
    required = {
        "customer_id_col": customer_id_col,
        "datetime_col": datetime_col,
        "monetary_value_col": monetary_value_col,
    }
    ddf, labels, id_dtype = _input_frame(source, required, rows_per_partition, read_kwargs)
    kwargs = {
        "customer_id_col": customer_id_col,
        "datetime_col": datetime_col,
        "monetary_value_col": monetary_value_col,
        "time_unit": time_unit,
        "datetime_format": datetime_format,
        "merge_same_day": merge_same_day,
        "negative_amounts": negative_amounts,
    }
    # pass 1: check every input partition where it can still be named
    check = dask.delayed(_check_partition, pure=True)
    parts = ddf.to_delayed()
    results = dask.compute(
        *[
            check(part, label, kwargs | {"observation_end": observation_end})
            for part, label in zip(parts, labels, strict=True)
        ]
    )
    results = [r for r in results if not r.get("empty")]
    if not results:
        raise DataError(
            "The transactions table is empty (0 rows): there is nothing to summarise. "
            "Check the files or the filter that produced them."
        )
    end = observation_end
    if end is None:
        end = _latest([r["observation_end"] for r in results])
    n_dropped = sum(r["n_negative_amount_rows_dropped"] for r in results)
    if n_dropped:
        warnings.warn(
            f"Dropped {n_dropped:,} rows with negative amounts in column "
            f"{monetary_value_col!r} (negative_amounts='drop'); customers with no other "
            "transaction are not in the summary. The counts are in the partitions' attrs.",
            UserWarning,
            stacklevel=2,
        )
    meta = results[0]["meta"]
    attrs: dict[str, Any] = {"time_unit": time_unit, "merge_same_day": merge_same_day}
    attrs["n_transactions"] = sum(r["n_transactions"] for r in results)
    if monetary_value_col is not None:
        attrs["n_negative_amount_rows"] = sum(r["n_negative_amount_rows"] for r in results)
        attrs["n_negative_amount_rows_dropped"] = n_dropped
    # pass 2: group each customer's rows into one partition, summarise with the global end
    grouped = ddf.shuffle(
        on=customer_id_col,
        npartitions=npartitions or ddf.npartitions,
        shuffle_method=shuffle_method,
    )
    summary_kwargs = kwargs | {"observation_end": end}
    # the end as summarize_transactions labels it (every partition reports a given end alike)
    attrs["observation_end"] = end if observation_end is None else results[0]["observation_end"]
    meta = meta.copy()
    if id_dtype is not None:
        meta.index = meta.index.astype(id_dtype)
    meta.attrs = dict(attrs)
    return grouped.map_partitions(
        _summarize_group, summary_kwargs, meta, attrs, meta=meta, enforce_metadata=False
    )


# ---------------------------------------------------------------------------------------
# scoring


def partition_seed(seed: int, partition: int) -> int:
    """The simulation seed of partition ``partition`` in :func:`score_customers_dask`.

    ``numpy.random.SeedSequence(seed, spawn_key=(partition,))``, the ``partition``-th child
    of ``SeedSequence(seed)``, reduced to one 64-bit integer: independent streams for
    different partitions, reproducible from ``seed`` alone.

    Parameters
    ----------
    seed : int
        The user's seed (>= 0).
    partition : int
        Partition number, from 0.

    Returns
    -------
    int
        The seed passed to :func:`clvbayes.predict.score_customers` for that partition.
    """
    state = np.random.SeedSequence(seed, spawn_key=(partition,)).generate_state(1, np.uint64)
    return int(state[0])


def _draws_only(model):
    """A copy of a fitted model holding only its posterior draws (small, cheap to ship)."""
    if model is None:
        return None
    import copy

    import arviz as az

    model.draws()  # raises NotFittedError with the usual message
    slim = copy.copy(model)
    slim.data_ = None
    slim.idata_ = az.InferenceData(posterior=model.idata_.posterior[list(model.param_names)])
    return slim


def _score_partition(
    part: pd.DataFrame, models, seed: int, kwargs: dict, meta, partition_info=None
):
    from clvbayes.predict import score_customers

    if len(part) == 0:
        return meta.copy()
    number = partition_info["number"] if partition_info else 0
    purchase_model, spend_model = models
    try:
        # one thread per task: Dask already runs partitions in parallel
        kwargs = {"n_jobs": 1, **kwargs}
        scores = score_customers(
            part, purchase_model, spend_model, seed=partition_seed(seed, number), **kwargs
        )
    except DataError as err:
        raise _located(err, f"partition {number} of the customer table") from None
    return scores.customers


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _compute(task, progress: bool) -> None:
    client = _client()
    if client is not None:
        future = client.compute(task)
        if progress:
            from distributed import progress as show

            show(future)
        future.result()
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar() if progress else contextlib.nullcontext():
        task.compute()


def score_customers_dask(
    rfm: dd.DataFrame,
    purchase_model,
    spend_model,
    out_path: str | os.PathLike[str],
    *,
    seed: int | None = 0,
    overwrite: bool = False,
    progress: bool = False,
    **score_kwargs: Any,
) -> str:
    """Score every customer of a partitioned customer table; write the scores as Parquet.

    Each partition is scored by :func:`clvbayes.predict.score_customers` with the same
    settings, the posterior draws of both models (sent to every worker once) and the seed
    :func:`partition_seed` (``seed``, partition number).  The table is written to a
    temporary folder next to ``out_path`` and renamed to ``out_path`` only when every
    partition has been written: a failed job leaves no partial output.

    Parameters
    ----------
    rfm : dask.dataframe.DataFrame
        One row per customer, in the models' time unit: ``frequency``, ``recency``, ``T``
        and, with a spend model, ``monetary_value`` (e.g. from
        :func:`summarize_transactions_dask`).  Each customer in one partition only.
    purchase_model : BetaGeoModel
        Fitted purchase model.
    spend_model : GammaGammaModel or None
        Fitted spend model; ``None`` scores only ``p_alive`` and ``purchases``.
    out_path : str or path
        Folder to create, on a filesystem every worker can write to (local disk for a
        ``LocalCluster``; a shared filesystem for a real cluster).
    seed : int, optional
        Base seed of the outcome simulation (default 0); ``None`` draws fresh entropy.
    overwrite : bool
        Replace an existing ``out_path`` (only after the new table is complete).
    progress : bool
        Show Dask's progress bar while scoring.
    **score_kwargs
        Passed to :func:`~clvbayes.predict.score_customers`: ``horizon`` (required),
        ``discount_rate`` or ``annual_discount_rate``, ``period``, ``margin``, ``prob``,
        ``n_draws``, ``n_outcome_samples``, ``max_chunk_elements``, ``n_jobs`` (threads per
        partition; default 1, as Dask runs partitions in parallel).  Not supported: ``by``
        (segment totals need per-draw sums across partitions; see the module docstring)
        and ``observed``.

    Returns
    -------
    str
        ``out_path``: a folder of ``part.*.parquet`` files (index: customer id; columns as
        :attr:`CustomerScores.customers <clvbayes.predict.CustomerScores>`) and
        ``_clvbayes.json`` with the settings and seeds.  Read it with
        ``pandas.read_parquet(out_path)`` or ``dask.dataframe.read_parquet(out_path)``.
    """
    dask, _ = _require_dask()
    from clvbayes.predict import score_customers

    for name, why in (
        ("by", "segment totals need per-draw sums across partitions, which are not collected"),
        ("observed", "pass observed outcomes as columns in memory instead"),
        ("progress", "use progress=True of score_customers_dask"),
    ):
        if name in score_kwargs:
            raise TypeError(f"score_customers_dask does not take {name}= ({why}).")
    if "horizon" not in score_kwargs:
        raise TypeError("score_customers_dask needs horizon= (in the data's time unit).")
    columns = ("frequency", "recency", "T") + (("monetary_value",) if spend_model else ())
    require_columns(
        pd.DataFrame(columns=list(rfm.columns)), {c: c for c in columns}, what="RFM table"
    )
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    out = Path(os.fspath(out_path))
    if out.exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} exists; pass overwrite=True to replace it.")
    models = (_draws_only(purchase_model), _draws_only(spend_model))

    # the output's columns and dtypes: score one made-up customer on the client
    probe = pd.DataFrame(
        {"frequency": [1], "recency": [1.0], "T": [2.0], "monetary_value": [1.0]},
        index=pd.Index([0], name=rfm.index.name),
    )
    probe_scores = score_customers(probe, *models, seed=0, **score_kwargs)
    meta = probe_scores.customers.iloc[:0]
    meta.index = pd.Index([], dtype=rfm.index.dtype, name=rfm.index.name)

    shipped = dask.delayed(models, pure=True)  # one task: each worker fetches it once
    scored = rfm.map_partitions(
        _score_partition, shipped, seed, score_kwargs, meta, meta=meta, enforce_metadata=False
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        _compute(scored.to_parquet(str(tmp), write_index=True, compute=False), progress)
        settings = {
            k: v
            for k, v in probe_scores.settings.items()
            if k not in ("n_customers", "n_histories", "seed")
        }
        settings |= {
            "seed": seed,
            "seeds": "partition i is scored with clvbayes.distributed.partition_seed(seed, i)",
            "n_partitions": rfm.npartitions,
        }
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, default=str))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out_path)
