"""Time units: the one table, rate conversion, and reading a customer table's unit.

Conventions (used everywhere in clvbayes):

* A customer table's times (``recency``, ``T``), horizons and discount periods are in one
  time unit, recorded in ``rfm.attrs["time_unit"]`` by the summaries and in
  ``model.time_unit_`` by a fit.
* Units have a fixed length in days (:data:`TIME_UNITS`).  A year is the Julian year of
  :data:`DAYS_PER_YEAR` days.  Months are not a time unit (they have no fixed length).
* A purchase at time ``t`` after the end of observation falls in discount period
  ``ceil(t / period)`` (:func:`period_index`): period ``k`` is ``((k-1) period, k period]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "DAYS_PER_YEAR",
    "TIME_UNITS",
    "annual_to_period_rate",
    "days_per_unit",
    "period_index",
    "period_to_annual_rate",
    "table_time_unit",
]

#: Length of each time unit in days.
TIME_UNITS: dict[str, float] = {"days": 1.0, "weeks": 7.0}
#: Days in a year (the Julian year).
DAYS_PER_YEAR = 365.25


def days_per_unit(time_unit: str) -> float:
    """Length of ``time_unit`` in days; :class:`~clvbayes.errors.DataError` for an unknown unit."""
    if time_unit not in TIME_UNITS:
        from clvbayes.errors import DataError

        valid = ", ".join(repr(u) for u in TIME_UNITS)
        raise DataError(
            f"Unknown time_unit {time_unit!r}; use one of {valid}. Months are not offered "
            "because they have no fixed length: convert a horizon in months to weeks "
            "explicitly (e.g. 3 months ~ 13 weeks)."
        )
    return TIME_UNITS[time_unit]


def annual_to_period_rate(annual_rate: float, time_unit: str, period: float = 1.0) -> float:
    """Convert an annual discount rate to the rate per discount period, exactly.

    Parameters
    ----------
    annual_rate : float
        Discount rate per year (0.1 = 10 % a year); must be > -1.
    time_unit : {"days", "weeks"}
        Time unit of the data.
    period : float
        Discount period in that unit (default one unit).

    Returns
    -------
    float
        ``(1 + annual_rate) ** (period * days_per_unit / 365.25) - 1``.
    """
    if not annual_rate > -1:
        raise ValueError(f"annual discount rate must be > -1, got {annual_rate}.")
    years = period * days_per_unit(time_unit) / DAYS_PER_YEAR
    return float(np.expm1(np.log1p(annual_rate) * years))


def period_to_annual_rate(rate: float, time_unit: str, period: float = 1.0) -> float:
    """The annual rate that a rate per ``period`` compounds to (inf when it overflows)."""
    periods_per_year = DAYS_PER_YEAR / (period * days_per_unit(time_unit))
    with np.errstate(over="ignore"):
        return float(np.expm1(np.log1p(rate) * periods_per_year))


def period_index(t: np.ndarray, period: float) -> np.ndarray:
    """Discount period (1, 2, ...) of times ``t > 0`` after the end of observation.

    ``ceil(t / period)``, with a relative tolerance of 1e-12 so that a time equal to a
    period end up to rounding belongs to that period.
    """
    return np.ceil(np.asarray(t, dtype=float) / period - 1e-12).astype(np.int64)


def table_time_unit(rfm: Any, model: Any = None) -> str | None:
    """The time unit of a customer table, else of a fitted model, else ``None``.

    Raises ``ValueError`` when both are known and differ (the table must be summarised in
    the unit the model was fitted in).
    """
    table = getattr(rfm, "attrs", {}).get("time_unit") if rfm is not None else None
    fitted = getattr(model, "time_unit_", None) if model is not None else None
    if table and fitted and table != fitted:
        raise ValueError(
            f"The customer table is in {table} but the model was fitted in {fitted}: "
            f"summarise the transactions with time_unit={fitted!r}."
        )
    return table or fitted or None
