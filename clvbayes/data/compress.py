"""Collapse customers with identical RFM rows, so likelihoods are evaluated once per row.

Many customers share a summary (all one-time buyers of a cohort share
``(frequency=0, recency=0, T)``), so a likelihood summed over customers equals the sum
over the unique rows weighted by how many customers have each:
``sum_i l(x_i) = sum_k counts_k * l(u_k)``.  :class:`CompressedRFM` keeps the unique rows,
the counts and the map back to customers (``expand``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clvbayes.data.validation import require_columns

__all__ = ["CompressedRFM", "compress"]


@dataclass(frozen=True, eq=False)
class CompressedRFM:
    """Unique rows of an RFM table and how customers map onto them.

    Attributes
    ----------
    values : dict of str to ndarray
        The unique rows, one array (length ``n_unique``) per column, sorted
        lexicographically by ``columns``.
    counts : ndarray of int64
        Customers per unique row (sums to ``n_customers``).
    inverse : ndarray of int64
        For each customer (in the input order) the index of its unique row.
    customer_ids : pandas.Index
        The input's index.
    columns : tuple of str
        The compressed columns.
    """

    values: dict[str, np.ndarray]
    counts: np.ndarray
    inverse: np.ndarray
    customer_ids: pd.Index
    columns: tuple[str, ...] = field(default=())

    @property
    def n_customers(self) -> int:
        """Number of customers (rows of the input)."""
        return int(self.inverse.size)

    @property
    def n_unique(self) -> int:
        """Number of unique rows."""
        return int(self.counts.size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def expand(self, values: np.ndarray, axis: int = -1) -> np.ndarray:
        """Map an array over unique rows back to customers along ``axis``.

        ``values`` has length ``n_unique`` along ``axis`` (e.g. draws x unique rows); the
        result has length ``n_customers`` there, in the input's customer order.
        """
        values = np.asarray(values)
        if values.shape[axis] != self.n_unique:
            raise ValueError(
                f"expand() needs length {self.n_unique} (unique rows) along axis {axis}, "
                f"got shape {values.shape}."
            )
        return np.take(values, self.inverse, axis=axis)


def compress(
    df: pd.DataFrame, columns: Sequence[str] = ("frequency", "recency", "T")
) -> CompressedRFM:
    """Find the unique rows of ``df[columns]``.

    Each column is factorized (hashing, sorted codes); the codes are combined into one
    int64 key per row (mixed radix, re-factorized whenever the radix would overflow), and
    the key is factorized once more.  This is linear in the number of rows apart from
    sorting the unique values, about 0.2 s for a million customers.

    Parameters
    ----------
    df : DataFrame
        An RFM table, one row per customer.
    columns : sequence of str
        Columns that define a unique row, e.g. ``("frequency", "monetary_value")`` for the
        Gamma-Gamma model.

    Returns
    -------
    CompressedRFM
    """
    columns = tuple(columns)
    require_columns(df, {c: c for c in columns}, what="RFM table")
    n = len(df)
    key = np.zeros(n, dtype=np.int64)
    radix = 1
    for col in columns:
        codes, uniques = pd.factorize(df[col].to_numpy(), sort=True, use_na_sentinel=False)
        m = max(len(uniques), 1)
        if radix * m >= 2**62:  # keep the mixed-radix key inside int64
            key, kept = pd.factorize(key, sort=True)
            key = key.astype(np.int64, copy=False)
            radix = max(len(kept), 1)
        key = key * m + codes
        radix *= m
    inverse, _ = pd.factorize(key, sort=True)
    inverse = inverse.astype(np.int64, copy=False)
    n_unique = int(inverse.max()) + 1 if n else 0
    representative = np.empty(n_unique, dtype=np.int64)  # any row of each unique row
    representative[inverse] = np.arange(n, dtype=np.int64)
    values = {col: df[col].to_numpy()[representative] for col in columns}
    counts = np.bincount(inverse, minlength=n_unique).astype(np.int64)
    return CompressedRFM(
        values=values,
        counts=counts,
        inverse=inverse,
        customer_ids=df.index,
        columns=columns,
    )
