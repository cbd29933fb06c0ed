"""Contractual (subscription) example data, bundled with clvbayes.

- :func:`load_fh2007_survival` / :func:`load_fh2007_subscribers`: the two cohorts of Fader &
  Hardie (2007), "How to Project Customer Retention", *Journal of Interactive Marketing*
  21(1), 76-90: the percentage of 1,000 "High End" and 1,000 "Regular" customers still
  active in each of the 12 years after acquisition.  Years 1-7 are the paper's calibration
  data, years 8-12 the later actuals its projections are judged against.  The file
  (``files/fh2007_survival.csv``, sha256
  ``957eaf1d2a8bfdab81e813a3cdfc1b73410d8f9ff6750a131503fca7c7d253c7``) was written by hand
  from the published figures; as published figures it may be bundled (cite the paper).
  Reference: the sBG maximum-likelihood estimates on years 1-7 are alpha = 0.668, beta =
  3.806 (LL -1611.16) for High End and alpha = 0.704, beta = 1.182 (LL -1680.27) for
  Regular.
- :func:`load_subscription_box_charges`: a *simulated* monthly subscription box (three plans
  with different prices and retention, 2023-2024), as a log of recurring charges: the input
  of :func:`clvbayes.data.subscriptions.subscriptions_from_charges`.  It is the output of
  :func:`simulate_subscription_box` with its defaults (``benchmarks/make_subscription_box.py``
  writes it), so the true parameters behind it are known (:data:`BOX_PLANS`).

``clvbayes subscriptions --demo fh2007`` and ``--demo box`` run the report on them.
"""

from __future__ import annotations

import calendar
import datetime as dt
from importlib.resources import files

import numpy as np
import pandas as pd
from scipy import special

__all__ = [
    "BOX_AS_OF",
    "BOX_GRACE_DAYS",
    "BOX_PLANS",
    "FH2007_COHORTS",
    "load_fh2007_subscribers",
    "load_fh2007_survival",
    "load_subscription_box_charges",
    "simulate_subscription_box",
]

#: Cohort columns of the FH2007 file and the short labels the loaders give them.
FH2007_COHORTS = {"high_end_pct_surviving": "high_end", "regular_pct_surviving": "regular"}
_FH2007_FILE = "fh2007_survival.csv"
_FH2007_SOURCE = (
    "Fader & Hardie (2007), How to Project Customer Retention, Journal of Interactive "
    "Marketing 21(1), 76-90: % of 1,000 customers per cohort surviving years 0-12"
)

#: The simulated box's plans: price per month (currency units), the Beta(alpha, beta)
#: distribution of the monthly churn propensity theta, the discrete-Weibull shape c of each
#: subscriber's survival (1 - theta)^(t^c) (c = 1: the sBG; c > 1: a subscriber grows more
#: likely to cancel with tenure, as the premium plan's "box fatigue") and the plan's share of
#: sign-ups.  basic and plus follow the sBG, so the report keeps it there and uses the BdW for
#: premium.
BOX_PLANS = {
    "basic": {"price": 19.0, "alpha": 0.9, "beta": 3.0, "c": 1.0, "share": 0.5},
    "plus": {"price": 29.0, "alpha": 1.1, "beta": 6.0, "c": 1.0, "share": 0.3},
    "premium": {"price": 49.0, "alpha": 1.5, "beta": 12.0, "c": 1.4, "share": 0.2},
}
#: Observation date of the simulated box (the last day charges were extracted).
BOX_AS_OF = "2024-12-31"
#: Grace period of the box's billing: a renewal charge comes at most this many days late.
BOX_GRACE_DAYS = 7
_BOX_FILE = "subscription_box_charges.csv.gz"
_BOX_SEED = 2024


def _resource(name: str):
    return files(__package__).joinpath("files", name)


def load_fh2007_survival() -> pd.DataFrame:
    """The FH2007 survival table: years 0..12 and the % of each cohort still active.

    Returns
    -------
    DataFrame
        13 rows; columns ``year`` (int64, years since acquisition), ``high_end`` and
        ``regular`` (float64, % of the year-0 cohort of 1,000 still active; 100 at year 0).
        ``attrs``: ``source``, ``cohort_size`` (1000), ``calibration_periods`` (7, the
        paper's calibration years).

    Examples
    --------
    >>> table = load_fh2007_survival()
    >>> table.loc[7, ["high_end", "regular"]].tolist()
    [49.1, 24.1]
    """
    with _resource(_FH2007_FILE).open("rb") as fh:
        raw = pd.read_csv(fh)
    out = raw.rename(columns=FH2007_COHORTS).astype({"year": "int64"})
    out.attrs.update(source=_FH2007_SOURCE, cohort_size=1000, calibration_periods=7)
    return out


def load_fh2007_subscribers(calibration_periods: int | None = 7) -> pd.DataFrame:
    """The FH2007 cohorts as one row per customer (2,000 rows), for the retention models.

    Parameters
    ----------
    calibration_periods : int or None, default 7
        Years of data to keep (the paper calibrates on 1..7); None keeps all 12.  Customers
        still active at the last kept year are right-censored there.

    Returns
    -------
    DataFrame
        From :func:`clvbayes.data.subscriptions.subscribers_from_survival`: index
        ``"<cohort>:<i>"``, columns ``periods`` (years survived), ``churned`` and ``cohort``
        (``high_end``, ``regular``); ``attrs["period"] = "1 year"``.
    """
    from clvbayes.data.subscriptions import subscribers_from_survival

    table = load_fh2007_survival()
    subs = subscribers_from_survival(
        table, period_col="year", columns=list(FH2007_COHORTS.values()), cohort_size=1000,
        calibration_periods=calibration_periods, period="1 year",
    )  # fmt: skip
    subs.attrs["source"] = _FH2007_SOURCE
    return subs


def load_subscription_box_charges() -> pd.DataFrame:
    """The simulated subscription box's charge log (bundled, deterministic).

    Returns
    -------
    DataFrame
        One row per charge, sorted by date and customer: ``customer_id`` (str, ``"B00001"``
        ...), ``date`` (datetime64, day resolution), ``plan`` (str: basic, plus, premium)
        and ``amount`` (float64, the plan's monthly price, see :data:`BOX_PLANS`).
        ``attrs``: ``as_of`` (:data:`BOX_AS_OF`), ``grace_days`` (:data:`BOX_GRACE_DAYS`),
        ``period`` (``"month"``), ``source``.  Summarise it with
        ``subscriptions_from_charges(charges, as_of=BOX_AS_OF, grace_days=BOX_GRACE_DAYS,
        amount_col="amount", plan_col="plan")``.
    """
    with _resource(_BOX_FILE).open("rb") as fh:
        log = pd.read_csv(fh, compression="gzip", dtype={"customer_id": str, "plan": str},
                          parse_dates=["date"])  # fmt: skip
    log["amount"] = log["amount"].astype("float64")
    log.attrs.update(
        as_of=BOX_AS_OF, grace_days=BOX_GRACE_DAYS, period="month",
        source="simulated subscription box (clvbayes.datasets.subscriptions."
        f"simulate_subscription_box, seed {_BOX_SEED})",
    )  # fmt: skip
    return log


def _add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus calendar months, the day clipped to the month's length (31 Jan -> 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def simulate_subscription_box(
    *,
    seed: int = _BOX_SEED,
    first_month: str = "2023-01",
    months: int = 24,
    signups_first_month: float = 100.0,
    monthly_growth: float = 0.04,
    plans: dict[str, dict[str, float]] | None = None,
    p_late: float = 0.15,
    max_days_late: int = 3,
    p_return: float = 0.08,
    as_of: str = BOX_AS_OF,
) -> pd.DataFrame:
    """Simulate a monthly subscription box's charge log (calendar months, exact and seeded).

    Sign-ups: ``round(signups_first_month * (1 + monthly_growth) ** m)`` in month ``m`` (on
    a uniformly drawn day), each on a plan drawn by the plans' ``share``.  Each subscriber
    draws ``theta ~ Beta(alpha, beta)`` of her plan and a churn period ``T`` with ``P(T > t)
    = (1 - theta)^(t^c)`` (the beta-discrete-Weibull; c = 1 is the sBG): she pays at sign-up
    and at the next ``T - 1`` due dates, then cancels.  A due date is one calendar month
    after the previous charge (the rule of :func:`~clvbayes.data.subscriptions.
    subscriptions_from_charges`); a share ``p_late`` of renewals are charged 1 to
    ``max_days_late`` days late (card retries), within the :data:`BOX_GRACE_DAYS` grace
    period.  A share ``p_return`` of those who cancel come back 2 to 8 months after their
    last charge on the same plan (a new spell, with a fresh theta).  Charges after ``as_of``
    are not observed.

    Only uniform draws of ``numpy.random.default_rng(seed)`` are used, transformed by exact
    inverse CDFs, so the result does not depend on numpy's distribution algorithms.

    Returns
    -------
    DataFrame
        As :func:`load_subscription_box_charges` (without ``attrs``).
    """
    plans = plans or BOX_PLANS
    rng = np.random.default_rng(seed)
    names = list(plans)
    cum_share = np.cumsum([plans[p]["share"] for p in names])
    cum_share /= cum_share[-1]
    end = dt.date.fromisoformat(as_of)
    start_month = dt.date.fromisoformat(f"{first_month}-01")
    rows: list[tuple[str, dt.date, str, float]] = []
    n_customers = 0

    def spell(cid: str, plan: str, first: dt.date) -> dt.date | None:
        """Charges of one spell from ``first``; returns the last charge if she cancelled."""
        p = plans[plan]
        u_theta, u_churn = rng.random(2)
        theta = float(np.clip(special.betaincinv(p["alpha"], p["beta"], u_theta), 1e-9, 1 - 1e-9))
        # P(T > t) = (1 - theta)^(t^c): T = floor((log u / log(1 - theta))^(1/c)) + 1
        t_churn = int(np.floor((np.log(u_churn) / np.log1p(-theta)) ** (1.0 / p["c"]))) + 1
        charge = first
        for j in range(t_churn):
            if j > 0:
                late = rng.random() < p_late
                delay = 1 + int(rng.random() * max_days_late) if late else 0
                charge = _add_months(charge, 1) + dt.timedelta(days=delay)
            if charge > end:
                return None  # still active on as_of
            rows.append((cid, charge, plan, float(p["price"])))
        return charge

    for m in range(months):
        month_start = _add_months(start_month, m)
        n_days = calendar.monthrange(month_start.year, month_start.month)[1]
        n_signups = round(signups_first_month * (1 + monthly_growth) ** m)
        for _ in range(n_signups):
            n_customers += 1
            cid = f"B{n_customers:05d}"
            u_day, u_plan = rng.random(2)
            first = month_start + dt.timedelta(days=int(u_day * n_days))
            if first > end:
                continue
            plan = names[int(np.searchsorted(cum_share, u_plan, side="right"))]
            last = spell(cid, plan, first)
            while last is not None and rng.random() < p_return:
                gap = 2 + int(rng.random() * 7)  # months after the last charge
                back = _add_months(last, gap)
                if back > end:
                    break
                last = spell(cid, plan, back)
    log = pd.DataFrame(rows, columns=["customer_id", "date", "plan", "amount"])
    log["date"] = pd.to_datetime(log["date"])
    return log.sort_values(["date", "customer_id"], kind="stable").reset_index(drop=True)
