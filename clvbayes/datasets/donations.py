"""The donations reference data of the BG/BB paper (Fader, Hardie & Shang 2010), bundled.

A nonprofit's 1995 cohort of 11,104 first-time supporters, each with 6 annual opportunities
to donate again (1996-2001): Fader, Hardie & Shang (2010), "Customer-Base Analysis in a
Discrete-Time Noncontractual Setting", *Marketing Science* 29(6), 1086-1108.  The file
summarises that calibration period (the paper's holdout years are not included) as one row
per distinct history: ``frequency`` (x, repeat donations, 0..6), ``recency`` (t_x, the year
1..6 of the last one, 0 if none), ``periods`` (n = 6) and ``weights`` (donors with that
history; they sum to 11,104).

Provenance: ``files/donations_calibration.csv`` is ``lifetimes/datasets/donations.csv`` of the
lifetimes 0.11.3 wheel, byte-identical (sha256
``82c25f26a201ff047e1cd5fe3d7967a45db92a025ecedee72ff8940e50104544``), MIT licence,
"Copyright (c) 2015, Cameron Davidson-Pilon"; the licence text travels with it in
``files/donations_LICENSE.txt``.

:func:`load_donations_transactions` gives the same donors as a transaction log (one row per
donation, 1995-2001) that :func:`clvbayes.data.discrete.summarize_opportunities` with the
yearly grid turns back into this summary exactly; ``clvbayes run --demo donations`` runs on it.

Reference: the BG/BB maximum-likelihood estimates on these data are alpha = 1.2035,
beta = 0.7497, gamma = 0.6567, delta = 2.7834 with log-likelihood -33,225.58
(``tests/test_models_bgbb.py`` reproduces them).
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd

from clvbayes.data.discrete import validate_discrete_rfm

__all__ = ["FIRST_YEAR", "load_donations_summary", "load_donations_transactions"]

#: Year of the cohort's first donation; opportunity ``t`` (1..6) is the year ``FIRST_YEAR + t``.
FIRST_YEAR = 1995

_FILE = "donations_calibration.csv"
_SOURCE = (
    "Fader, Hardie & Shang (2010), donations 1995 cohort, calibration 1996-2001 "
    "(lifetimes 0.11.3 donations.csv, MIT)"
)


def load_donations_summary(compressed: bool = False) -> pd.DataFrame:
    """The donations calibration summary: 11,104 donors, 6 annual opportunities.

    Parameters
    ----------
    compressed : bool, default False
        Return the file's 22 distinct histories with their ``weights`` instead of one row
        per donor.

    Returns
    -------
    DataFrame
        ``compressed=False``: index ``customer_id`` (str ``"<history row>-<k>"``, one per
        donor), columns ``frequency``, ``recency``, ``periods`` (int64, in opportunities =
        years).  ``compressed=True``: a range index over the 22 histories and the same
        columns plus ``weights`` (int64, donors).  ``attrs``: ``time_unit="opportunities"``,
        ``opportunity_grid="year"``, ``calibration_end="2001"``, ``source``.
    """
    with files(__package__).joinpath("files", _FILE).open("rb") as fh:
        table = pd.read_csv(fh, dtype="int64")
    table.attrs.update(
        time_unit="opportunities", opportunity_grid="year", calibration_end="2001",
        source=_SOURCE,
    )  # fmt: skip
    if compressed:
        return table
    table.index = table.index.astype(str)
    return validate_discrete_rfm(table)


def load_donations_transactions() -> pd.DataFrame:
    """The donations summary as a transaction log: one row per donation, 1995-2001.

    The published data are the summary only (``x``, ``t_x``, ``n = 6`` per donor), so the log
    is built from it: every donor gives in 1995 (the cohort year) and in the ``x`` years
    ``1995 + t_x - x + 1 .. 1995 + t_x`` (the last repeat donation in year ``1995 + t_x``, the
    others in the years right before it).  Which earlier years a donor gave in is not in the
    published data and does not matter to BG/BB, whose likelihood depends on ``(x, t_x, n)``
    only; every donation is dated 1 March of its year (a placeholder: the yearly grid uses
    the year alone).  :func:`~clvbayes.data.discrete.summarize_opportunities` with
    ``grid="year"`` gives back :func:`load_donations_summary` exactly (same ids, same
    ``frequency``, ``recency``, ``periods``), which ``tests/test_cli_discrete.py`` checks.

    Returns
    -------
    DataFrame
        Columns ``customer_id`` (str, the ids of :func:`load_donations_summary`) and
        ``date`` (datetime64): 35,719 rows, the 11,104 first donations and 24,615 repeat
        ones, donor by donor (in the order of :func:`load_donations_summary`) and by date.  ``attrs``: ``source``.
    """
    summary = load_donations_summary()
    x = summary["frequency"].to_numpy()
    t_x = summary["recency"].to_numpy()
    rows = np.repeat(np.arange(len(summary)), x + 1)
    # k-th donation of a donor (k = 0 the first): year FIRST_YEAR for k = 0, else
    # FIRST_YEAR + t_x - x + k for k = 1..x
    k = np.arange(rows.size) - np.repeat(np.cumsum(x + 1) - (x + 1), x + 1)
    offset = np.where(k == 0, 0, t_x[rows] - x[rows] + k)
    years = FIRST_YEAR + offset
    dates = pd.to_datetime(pd.DataFrame({"year": years, "month": 3, "day": 1}))
    log = pd.DataFrame(
        {"customer_id": summary.index.to_numpy()[rows].astype(str), "date": dates.to_numpy()}
    )
    log.attrs["source"] = (
        f"{_SOURCE}; transaction-log form built from the summary (repeat years placed right "
        "before the last one, dated 1 March)"
    )
    return log
