"""Calibration/holdout split of a transaction log, for out-of-sample checks.

The calibration summary is the RFM table of :func:`~clvbayes.data.summarize_transactions`
with ``observation_end = calibration_end``; the holdout columns count what the same
customers did in (calibration_end, observation_end].  This is the set-up of Fader,
Hardie & Lee (2005, Marketing Science 24(2), section 4) for CDNOW: 39 calibration weeks
ending 1997-09-30 and 39 holdout weeks ending 1998-06-30.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from clvbayes.data.rfm import (
    _attrs,
    _count_first_last,
    _handle_duplicates,
    _occasions,
    _prepare,
    _resolve_end,
    _sum_by_customer,
    _summary_frame,
)
from clvbayes.data.validation import check_calibration_end, resolve_end

__all__ = ["calibration_holdout_split"]


def calibration_holdout_split(
    transactions: pd.DataFrame,
    calibration_end: Any,
    observation_end: Any = None,
    *,
    customer_id_col: str = "customer_id",
    datetime_col: str = "date",
    monetary_value_col: str | None = None,
    time_unit: str = "weeks",
    datetime_format: str | None = None,
    merge_same_day: bool = True,
    negative_amounts: str = "error",
    duplicate_rows: str = "warn",
    outlying_dates: str = "error",
) -> pd.DataFrame:
    """Summarise the calibration period and count holdout purchases per customer.

    Parameters
    ----------
    transactions : DataFrame
        One row per transaction.
    calibration_end : date-like
        Last day of the calibration period (transactions on it are in calibration).
        Must lie within the data and before ``observation_end``.
    observation_end : date-like, optional
        Last day of the holdout period; defaults to the last transaction date.
    customer_id_col, datetime_col, monetary_value_col, time_unit, datetime_format, \
merge_same_day, negative_amounts, duplicate_rows, outlying_dates
        As in :func:`~clvbayes.data.summarize_transactions`.

    Returns
    -------
    DataFrame
        The calibration RFM table (``frequency``, ``recency``, ``T`` measured to
        ``calibration_end``, ``monetary_value``, ``first_purchase``) of the customers
        whose first purchase is on or before ``calibration_end``, plus
        ``frequency_holdout`` (int64, transactions in (calibration_end, observation_end],
        same-day merged like calibration) and, with amounts, ``monetary_value_holdout``
        (mean holdout transaction value, 0 if none) and ``total_value_holdout``.
        ``attrs`` as in :func:`summarize_transactions` plus ``calibration_end``,
        ``observation_end``, ``holdout_duration`` (in ``time_unit``) and
        ``n_customers_first_seen_in_holdout``; ``n_customers_T0`` counts the customers
        whose first purchase is on ``calibration_end`` (``T = 0``, kept).

    Warns
    -----
    UserWarning
        When customers make their first purchase in the holdout period.  They are not
        part of the calibration cohort, so they are left out; the count is reported.

    Raises
    ------
    DataError
        For invalid transactions (see :func:`summarize_transactions`), a
        ``calibration_end`` before the first or after the last transaction, or not
        before ``observation_end``.
    """
    p = _prepare(
        transactions,
        customer_id_col=customer_id_col,
        datetime_col=datetime_col,
        monetary_value_col=monetary_value_col,
        time_unit=time_unit,
        datetime_format=datetime_format,
        merge_same_day=merge_same_day,
        negative_amounts=negative_amounts,
        duplicate_rows=duplicate_rows,
        outlying_dates=outlying_dates,
    )
    end = _resolve_end(p, observation_end, "observation_end")
    _, cal_ticks = resolve_end(calibration_end, p.tx, "calibration_end")
    cal = p.to_times(cal_ticks)
    first_t, last_t = int(p.times.min()), int(p.times.max())
    check_calibration_end(
        cal,
        first_t,
        last_t,
        end,
        {"cal": p.label(cal), "first": p.label(first_t), "last": p.label(last_t),
         "end": p.label(end)},
    )  # fmt: skip

    occ_code, occ_time = _occasions(p)
    _handle_duplicates(p, transactions, occ_code.size, duplicate_rows)
    in_calibration = occ_time <= cal
    count, first, last = _count_first_last(
        occ_code[in_calibration], occ_time[in_calibration], p.n_customers
    )
    cohort = count > 0
    n_new = int(p.n_customers - np.count_nonzero(cohort))
    holdout_count = np.bincount(occ_code[~in_calibration], minlength=p.n_customers)

    repeat_value = None
    if monetary_value_col is not None:
        repeat_rows = (p.times <= cal) & (p.times != first[p.codes])
        repeat_value = _sum_by_customer(p, repeat_rows)
    df = _summary_frame(p, cohort, count, first, last, cal, repeat_value)
    frequency_holdout = holdout_count[cohort].astype(np.int64)
    df["frequency_holdout"] = frequency_holdout
    if monetary_value_col is not None:
        total = _sum_by_customer(p, p.times > cal)[cohort]
        df["monetary_value_holdout"] = np.where(
            frequency_holdout > 0, total / np.maximum(frequency_holdout, 1), 0.0
        )
        df["total_value_holdout"] = total

    attrs = _attrs(p, time_unit, end, occ_code.size)
    attrs.update(
        n_customers=int(np.count_nonzero(cohort)),
        calibration_end=p.label(cal),
        holdout_duration=(end - cal) / p.time_scale,
        n_customers_first_seen_in_holdout=n_new,
        n_customers_T0=int(np.count_nonzero(df["T"].to_numpy() == 0)),
    )
    df.attrs.update(attrs)
    if n_new:
        warnings.warn(
            f"{n_new:,} customer(s) made their first purchase after calibration_end "
            f"{p.label(cal)}; they are not in the calibration cohort and are left out of "
            "the split (count in attrs['n_customers_first_seen_in_holdout']).",
            UserWarning,
            stacklevel=2,
        )
    return df
