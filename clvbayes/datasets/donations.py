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

Reference: the BG/BB maximum-likelihood estimates on these data are alpha = 1.2035,
beta = 0.7497, gamma = 0.6567, delta = 2.7834 with log-likelihood -33,225.58
(``tests/test_models_bgbb.py`` reproduces them).
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from clvbayes.data.discrete import validate_discrete_rfm

__all__ = ["load_donations_summary"]

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
