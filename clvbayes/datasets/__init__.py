"""The CDNOW reference data (Fader, Hardie & Lee 2005), bundled with clvbayes.

CDNOW sold music CDs online.  The data follow the 23,570 customers who made their first
purchase in the first quarter of 1997, through 1998-06-30 (78 weeks).  Bruce Hardie
published them for research use; these copies are those redistributed in the MIT-licensed
``lifetimes`` 0.11.3 package.

- :func:`load_cdnow_transactions`: the 1/10 sample, 2,357 customers, 6,919 rows;
- :func:`load_cdnow_master_transactions`: the whole cohort, 23,570 customers, 69,659 rows;
- :func:`load_donations_summary` (:mod:`clvbayes.datasets.donations`): the discrete-time
  donations summary of Fader, Hardie & Shang (2010), 11,104 donors, for BG/BB, and
  :func:`load_donations_transactions`, the same donors as a transaction log;
- :func:`load_fh2007_survival`, :func:`load_fh2007_subscribers` and
  :func:`load_subscription_box_charges` (:mod:`clvbayes.datasets.subscriptions`): the two
  retention cohorts of Fader & Hardie (2007) and a simulated subscription-box charge log;
- :func:`load_cdnow_summary`: the published calibration summary of the sample (weeks,
  39-week calibration ending 1997-09-30), used by the BG/NBD paper ("Counting your
  customers the easy way", Marketing Science 24(2), 2005).

The summary file numbers customers 1..2,357; that number is the sample file's second
column (``sample_id``), which orders customers by first purchase date and then master
id.  :func:`load_cdnow_summary` maps it to the master id, so its index matches
``summarize_transactions(load_cdnow_transactions())``.
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from clvbayes.data import validate_rfm
from clvbayes.datasets.donations import load_donations_summary, load_donations_transactions
from clvbayes.datasets.subscriptions import (
    load_fh2007_subscribers,
    load_fh2007_survival,
    load_subscription_box_charges,
)

__all__ = [
    "CALIBRATION_END",
    "OBSERVATION_END",
    "load_cdnow_master_transactions",
    "load_cdnow_summary",
    "load_cdnow_transactions",
    "load_donations_summary",
    "load_donations_transactions",
    "load_fh2007_subscribers",
    "load_fh2007_survival",
    "load_subscription_box_charges",
]

#: Last day of the 39-week calibration period of the published CDNOW analyses.
CALIBRATION_END = pd.Timestamp("1997-09-30")
#: Last day of the data (end of the 39-week holdout period).
OBSERVATION_END = pd.Timestamp("1998-06-30")


def _resource(name: str):
    return files(__name__).joinpath("files", name)


def _read_sample() -> pd.DataFrame:
    with _resource("CDNOW_sample.txt").open("rb") as fh:
        return pd.read_csv(
            fh,
            sep=r"\s+",
            header=None,
            names=["customer_id", "sample_id", "date", "quantity", "amount"],
            dtype={"customer_id": str, "sample_id": str, "date": str},
        )


def _tidy(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"].astype(str),
            "date": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "quantity": raw["quantity"].astype("int64"),
            "amount": raw["amount"].astype("float64"),
        }
    )


def load_cdnow_transactions() -> pd.DataFrame:
    """The CDNOW 1/10 sample: 6,919 transactions of 2,357 customers, 1997-01-01 .. 1998-06-30.

    Returns
    -------
    DataFrame
        Columns ``customer_id`` (str, the zero-padded master id, e.g. ``"00004"``),
        ``date`` (datetime64, day resolution), ``quantity`` (int64, number of CDs) and
        ``amount`` (float64, US dollars).  Several rows may share a customer and a day;
        21 rows are exact copies of another row (same customer, day, quantity and amount:
        two CDs at the same price on one day, as the published summaries count them), so
        :func:`~clvbayes.data.summarize_transactions` warns about them by default; pass
        ``duplicate_rows="keep"`` to say they are real (the published numbers need them).

    Examples
    --------
    >>> from clvbayes.data import calibration_holdout_split
    >>> tx = load_cdnow_transactions()
    >>> rfm = calibration_holdout_split(tx, "1997-09-30", "1998-06-30",
    ...                                 monetary_value_col="amount")
    >>> len(rfm), int(rfm["frequency_holdout"].sum())
    (2357, 1882)
    """
    return _tidy(_read_sample())


def load_cdnow_master_transactions() -> pd.DataFrame:
    """The whole CDNOW cohort: 69,659 transactions of 23,570 customers.

    Returns
    -------
    DataFrame
        The same columns as :func:`load_cdnow_transactions`; 255 rows are exact copies of
        another row (real same-price purchases on one day, see there).
    """
    with _resource("CDNOW_master.txt.gz").open("rb") as fh:
        raw = pd.read_csv(
            fh,
            sep=r"\s+",
            compression="gzip",
            dtype={"customer_id": str, "date": str},
        )
    raw = raw.rename(columns={"number_of_cds": "quantity", "dollar_value": "amount"})
    return _tidy(raw)


def load_cdnow_summary() -> pd.DataFrame:
    """The published calibration summary of the CDNOW sample (2,357 customers, weeks).

    Calibration: 1997-01-01 .. 1997-09-30 (39 weeks); purchases on one day count as one
    transaction.  ``recency``, ``T`` and ``monetary_value`` are rounded to 2 decimals in
    the published file.

    Returns
    -------
    DataFrame
        Index ``customer_id`` (str master id, mapped from the file's ``ID`` through the
        sample file's ``sample_id``), sorted; columns ``frequency`` (int64, the file's
        ``x``), ``recency`` (``t_x``), ``T`` and ``monetary_value`` (``zbar``, the mean
        repeat-transaction value in dollars).  ``attrs``: ``time_unit="weeks"``,
        ``observation_end`` (1997-09-30, the calibration end) and ``source``.
    """
    with _resource("cdnow_summary.csv").open("rb") as fh:
        published = pd.read_csv(fh)
    sample = _read_sample().drop_duplicates("sample_id")
    master_of = pd.Series(
        sample["customer_id"].to_numpy(), index=sample["sample_id"].astype("int64").to_numpy()
    )
    df = pd.DataFrame(
        {
            "frequency": published["x"].to_numpy(),
            "recency": published["t_x"].astype("float64").to_numpy(),
            "T": published["T"].astype("float64").to_numpy(),
            "monetary_value": published["zbar"].astype("float64").to_numpy(),
        },
        index=pd.Index(master_of.loc[published["ID"]].to_numpy(), name="customer_id"),
    ).sort_index()
    df.attrs.update(
        time_unit="weeks",
        observation_end=CALIBRATION_END,
        source="Fader, Hardie & Lee (2005), CDNOW sample calibration summary",
    )
    return validate_rfm(df)
