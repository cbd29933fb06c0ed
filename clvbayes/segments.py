"""Customer segmentation: RFM scores, the recency x frequency grid, CLV deciles, churn risk.

These are the segmentations practitioners use (Hughes 1994 for RFM cells; Fader, Hardie &
Lee 2005, "RFM and CLV: using iso-value curves", JMR 42(4), for the recency x frequency
view), here fed by the model: P(alive) and CLV come from :func:`clvbayes.predict.score_customers`.
Every function works on its own on plain pandas objects; none needs a fitted model.

Every threshold is defined once, in the block of constants below, and every rule of
:func:`named_segments` in :data:`SEGMENT_RULES`.  Pass other values as arguments instead of
editing them.

Ties: all scores are *rank based and tie-aware*: a customer's score depends only on how many
customers have a strictly better (or worse) value, never on the row order, so customers with
the same value always get the same score.  With heavy ties (most CDNOW customers have
frequency 0) some scores therefore stay empty, which is the honest outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ACTIVE_MIN_P_ALIVE",
    "BEST_MAX_CLV_DECILE",
    "BEST_MIN_P_ALIVE",
    "CHURN_P_ALIVE_THRESHOLD",
    "CHURN_VALUE_QUANTILE",
    "CLV_QUANTILES",
    "LAPSED_MAX_P_ALIVE",
    "NEW_MIN_R_SCORE",
    "PURCHASE_ONLY_RULES",
    "RFM_QUANTILES",
    "SEGMENT_RULES",
    "SegmentRule",
    "churn_risk",
    "clv_deciles",
    "clv_to_cac",
    "label_customers",
    "named_segments",
    "rf_table",
    "rfm_scores",
]

# ---------------------------------------------------------------------------------------
# Every threshold of this module, in one place.

#: Number of score levels of R, F and M (5 = quintiles; 5 is best).
RFM_QUANTILES = 5
#: Number of CLV groups of :func:`clv_deciles` (10 = deciles; 1 is the top group).
CLV_QUANTILES = 10
#: Churn risk: "high past value" means past repeat spend (frequency x monetary_value)
#: strictly above this quantile of all customers' past repeat spend.
CHURN_VALUE_QUANTILE = 0.8
#: Churn risk: ... and the posterior mean P(alive) is strictly below this.
CHURN_P_ALIVE_THRESHOLD = 0.5
#: Segment "best": CLV decile at most this (1 = top 10 %) ...
BEST_MAX_CLV_DECILE = 2
#: ... and P(alive) at least this.
BEST_MIN_P_ALIVE = 0.5
#: Segment "lapsed": P(alive) strictly below this.
LAPSED_MAX_P_ALIVE = 0.25
#: Segment "new": no repeat purchase yet and a first purchase recent enough for an
#: R score of at least this.
NEW_MIN_R_SCORE = 4


# ---------------------------------------------------------------------------------------
# rank-based scores


def _better_share(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Share of all values that are strictly worse than each value (ties count as equal)."""
    s = np.sort(values)
    n = values.size
    if higher_is_better:
        worse = np.searchsorted(s, values, side="left")  # strictly smaller
    else:
        worse = n - np.searchsorted(s, values, side="right")  # strictly larger
    return worse / n


def _score(values: np.ndarray, q: int, higher_is_better: bool = True) -> np.ndarray:
    """Scores 1..q: ``1 + floor(q * share of customers strictly worse)``.

    Customers with equal values get equal scores, whatever the row order; the best
    score ``q`` needs at least ``(q - 1) / q`` of the customers strictly worse.
    """
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    share = _better_share(values, higher_is_better)
    return np.minimum(1 + np.floor(q * share + 1e-12).astype(np.int64), q)


def _check_q(q: int, name: str = "q") -> int:
    if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {q!r}.")
    return int(q)


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} needs column(s) {missing}; the table has {list(map(str, df.columns))}."
        )


def _finite(values: pd.Series, name: str) -> np.ndarray:
    v = pd.to_numeric(values).to_numpy(dtype=np.float64, na_value=np.nan)
    if not np.isfinite(v).all():
        bad = values.index[~np.isfinite(v)][:5].tolist()
        raise ValueError(f"{name} has missing or infinite values (first ids: {bad}).")
    return v


def rfm_scores(rfm: pd.DataFrame, q: int = RFM_QUANTILES) -> pd.DataFrame:
    """RFM scores (quantile groups 1..q, higher is better) of every customer.

    Parameters
    ----------
    rfm : DataFrame
        One row per customer with ``frequency`` (repeat purchases), ``recency`` and ``T``
        (one time unit) and optionally ``monetary_value`` (mean repeat-purchase value), as
        from :func:`clvbayes.data.summarize_transactions`.  A discrete-time table
        (:func:`clvbayes.data.discrete.summarize_opportunities`) has ``periods`` instead of
        ``T``: recency and periods count opportunities.
    q : int
        Number of score levels (default :data:`RFM_QUANTILES` = 5, quintiles).

    Returns
    -------
    DataFrame
        Same index, columns:

        - ``time_since_last_purchase`` (float64, the table's time unit): ``T - recency``
          (discrete time: ``periods - recency``, opportunities since the last transaction);
        - ``r_score`` (int64): 1..q, q = most recent last purchase (smallest
          ``T - recency``);
        - ``f_score`` (int64): 1..q by ``frequency``; frequency 0 always gets 1;
        - ``m_score`` (int64, only with ``monetary_value``): 1..q by ``monetary_value``,
          ranked among customers with at least one repeat purchase (the only ones whose
          mean repeat spend is observed); customers with frequency 0 get 1;
        - ``rfm_code`` (str): the three scores, e.g. ``"545"`` (joined with ``"-"`` when
          ``q > 9``).

        A score is ``1 + floor(q * s)``, ``s`` the share of customers with a strictly worse
        value, so ties share a score and the result does not depend on the row order.
        ``attrs["rfm_q"]`` records ``q``.

    Examples
    --------
    >>> rfm = pd.DataFrame({"frequency": [0, 1, 2, 5], "recency": [0.0, 2, 8, 9],
    ...                     "T": [10.0, 10, 10, 10]})
    >>> rfm_scores(rfm, q=4)[["r_score", "f_score"]].to_numpy().tolist()
    [[1, 1], [2, 2], [3, 3], [4, 4]]
    """
    q = _check_q(q)
    end = "periods" if "T" not in rfm.columns and "periods" in rfm.columns else "T"
    _require(rfm, ["frequency", "recency", end], "rfm_scores")
    freq = _finite(rfm["frequency"], "frequency")
    since = _finite(rfm[end], end) - _finite(rfm["recency"], "recency")
    out = pd.DataFrame(index=rfm.index)
    out["time_since_last_purchase"] = since
    out["r_score"] = _score(since, q, higher_is_better=False)
    f_score = _score(freq, q)
    f_score[freq <= 0] = 1
    out["f_score"] = f_score
    parts = [out["r_score"], out["f_score"]]
    if "monetary_value" in rfm.columns:
        money = _finite(rfm["monetary_value"], "monetary_value")
        m_score = np.ones(freq.size, dtype=np.int64)
        repeat = freq > 0
        m_score[repeat] = _score(money[repeat], q)
        out["m_score"] = m_score
        parts.append(out["m_score"])
    sep = "" if q <= 9 else "-"
    code = parts[0].astype(str)
    for p in parts[1:]:
        code = code + sep + p.astype(str)
    out["rfm_code"] = code.astype("str")
    out.attrs["rfm_q"] = q
    return out


def rf_table(
    rfm_or_scores: pd.DataFrame,
    values: pd.Series | str | None = None,
    *,
    q: int | None = None,
) -> pd.DataFrame:
    """The recency x frequency grid: customer counts, or the mean of a value, per cell.

    Parameters
    ----------
    rfm_or_scores : DataFrame
        Either a table with ``r_score`` and ``f_score`` (from :func:`rfm_scores`, possibly
        joined with predictions) or an RFM table, which is scored first.
    values : Series or str, optional
        A value per customer (aligned on the index, e.g. ``scores.customers["clv_mean"]``)
        or the name of a column of ``rfm_or_scores``.  Without it, cells count customers.
    q : int, optional
        Number of score levels; default ``attrs["rfm_q"]`` of the scores, else the largest
        score present, else :data:`RFM_QUANTILES` when scoring an RFM table.

    Returns
    -------
    DataFrame
        Index ``r_score`` q..1 (most recent first), columns ``f_score`` 1..q, every cell
        present: counts (int64, 0 for empty cells) or means (float64, NaN for empty cells).
    """
    table = rfm_or_scores
    if not {"r_score", "f_score"} <= set(table.columns):
        table = rfm_scores(table, q=q or RFM_QUANTILES)
    if q is None:
        q = int(table.attrs.get("rfm_q") or max(RFM_QUANTILES, table["r_score"].max(),
                                               table["f_score"].max()))  # fmt: skip
    q = _check_q(q)
    levels = np.arange(1, q + 1)
    r = pd.Categorical(table["r_score"], categories=levels[::-1])
    f = pd.Categorical(table["f_score"], categories=levels)
    if values is None:
        out = pd.crosstab(r, f, dropna=False)
        out = out.reindex(index=levels[::-1], columns=levels, fill_value=0).astype(np.int64)
    else:
        v = table[values] if isinstance(values, str) else values
        if isinstance(v, pd.Series) and not isinstance(values, str):
            if not v.index.equals(table.index):
                v = v.reindex(table.index)
        v = pd.to_numeric(pd.Series(np.asarray(v), index=table.index))
        frame = pd.DataFrame({"r": r, "f": f, "v": v.to_numpy()})
        out = frame.pivot_table(index="r", columns="f", values="v", aggfunc="mean",
                                observed=False, dropna=False)  # fmt: skip
        out = out.reindex(index=levels[::-1], columns=levels).astype(np.float64)
    out.index = pd.Index(levels[::-1], name="r_score")
    out.columns = pd.Index(levels, name="f_score")
    return out


def clv_deciles(clv: pd.Series | np.ndarray, n: int = CLV_QUANTILES) -> pd.Series:
    """CLV groups 1..n, 1 = the highest CLV (deciles by default).

    Parameters
    ----------
    clv : Series or array
        CLV per customer (e.g. ``clv_mean``).  Missing values are refused.
    n : int
        Number of groups (default 10).

    Returns
    -------
    Series
        int64 named ``clv_decile`` with the index of ``clv``: ``1 + floor(n * s)``, ``s``
        the share of customers with a strictly higher CLV, so equal CLVs share a group and
        group 1 holds (at least) the top ``1/n`` of customers when values are distinct.
    """
    n = _check_q(n, "n")
    index = clv.index if isinstance(clv, pd.Series) else pd.RangeIndex(len(clv))
    v = _finite(pd.Series(np.asarray(clv), index=index), "clv")
    higher = _better_share(v, higher_is_better=False)  # share with a strictly higher CLV
    decile = np.minimum(1 + np.floor(n * higher + 1e-12).astype(np.int64), n)
    return pd.Series(decile, index=index, name="clv_decile")


def churn_risk(
    table: pd.DataFrame,
    *,
    p_alive_col: str = "p_alive_mean",
    value_quantile: float = CHURN_VALUE_QUANTILE,
    p_alive_threshold: float = CHURN_P_ALIVE_THRESHOLD,
) -> pd.Series:
    """Flag valuable customers the model believes are slipping away.

    A customer is at risk when both hold:

    - high past value: past repeat spend ``frequency x monetary_value`` strictly above
      the ``value_quantile`` quantile of all customers' past repeat spend (and positive);
    - ``P(alive) < p_alive_threshold`` (posterior mean; column ``p_alive_col``).

    Parameters
    ----------
    table : DataFrame
        One row per customer with ``frequency``, ``monetary_value`` and ``p_alive_col``.
    p_alive_col : str
        Column with P(alive) (default ``"p_alive_mean"`` of ``score_customers``).
    value_quantile : float
        In [0, 1); default :data:`CHURN_VALUE_QUANTILE` (0.8: the top 20 %).
    p_alive_threshold : float
        In (0, 1]; default :data:`CHURN_P_ALIVE_THRESHOLD` (0.5).

    Returns
    -------
    Series
        bool named ``churn_risk``, same index.
    """
    if not 0 <= value_quantile < 1:
        raise ValueError(f"value_quantile must be in [0, 1), got {value_quantile!r}.")
    if not 0 < p_alive_threshold <= 1:
        raise ValueError(f"p_alive_threshold must be in (0, 1], got {p_alive_threshold!r}.")
    _require(table, ["frequency", "monetary_value", p_alive_col], "churn_risk")
    past = _finite(table["frequency"], "frequency") * _finite(
        table["monetary_value"], "monetary_value"
    )
    p_alive = _finite(table[p_alive_col], p_alive_col)
    cut = np.quantile(past, value_quantile)
    flag = (past > cut) & (past > 0) & (p_alive < p_alive_threshold)
    return pd.Series(flag, index=table.index, name="churn_risk")


# ---------------------------------------------------------------------------------------
# named segments


@dataclass(frozen=True)
class SegmentRule:
    """One named segment: a description for reports and a row predicate.

    ``when(table)`` returns a boolean array over the rows of a table that has the RFM
    summary, ``r_score``/``f_score``, ``clv_decile``, ``churn_risk`` and ``p_alive``.
    """

    description: str
    when: Callable[[pd.DataFrame], Any]


#: The named segments, tested in this order; a customer gets the first that matches and
#: ``"others"`` when none does.  ``p_alive`` is the posterior mean P(alive).
SEGMENT_RULES: dict[str, SegmentRule] = {
    "best": SegmentRule(
        f"top CLV (decile <= {BEST_MAX_CLV_DECILE}) and likely active "
        f"(P(alive) >= {BEST_MIN_P_ALIVE})",
        lambda t: (t["clv_decile"] <= BEST_MAX_CLV_DECILE) & (t["p_alive"] >= BEST_MIN_P_ALIVE),
    ),
    "at_risk": SegmentRule(
        f"high past value (repeat spend above the {CHURN_VALUE_QUANTILE:g} quantile) but "
        f"P(alive) < {CHURN_P_ALIVE_THRESHOLD} (the churn_risk flag)",
        lambda t: t["churn_risk"].astype(bool),
    ),
    "lapsed": SegmentRule(
        f"probably gone: P(alive) < {LAPSED_MAX_P_ALIVE}",
        lambda t: t["p_alive"] < LAPSED_MAX_P_ALIVE,
    ),
    "new": SegmentRule(
        f"no repeat purchase yet, first purchase recent (R score >= {NEW_MIN_R_SCORE})",
        lambda t: (t["frequency"] == 0) & (t["r_score"] >= NEW_MIN_R_SCORE),
    ),
    "one_time": SegmentRule(
        "no repeat purchase, first purchase not recent",
        lambda t: t["frequency"] == 0,
    ),
}
OTHERS = "others"
#: Segment "active" (runs without CLV): P(alive) at least this.
ACTIVE_MIN_P_ALIVE = BEST_MIN_P_ALIVE
#: The named segments of a run without a spend model (no CLV, no past spend: e.g.
#: discrete-time BG/BB runs on data without transaction values), tested in this order:
#: "active" stands in for "best" and "at_risk", which need values; the others are those of
#: :data:`SEGMENT_RULES`.
PURCHASE_ONLY_RULES: dict[str, SegmentRule] = {
    "active": SegmentRule(
        f"likely active: P(alive) >= {ACTIVE_MIN_P_ALIVE} (runs without CLV only)",
        lambda t: t["p_alive"] >= ACTIVE_MIN_P_ALIVE,
    ),
    **{k: SEGMENT_RULES[k] for k in ("lapsed", "new", "one_time")},
}


def named_segments(
    table: pd.DataFrame,
    *,
    p_alive_col: str = "p_alive_mean",
    clv_col: str = "clv_mean",
    rules: Mapping[str, SegmentRule] | None = None,
) -> pd.Series:
    """Name each customer's segment with the first matching rule of ``rules``.

    Parameters
    ----------
    table : DataFrame
        One row per customer: the RFM summary (``frequency``, ``recency``, ``T``,
        ``monetary_value``) and predictions (``p_alive_col``, ``clv_col``).  Missing helper
        columns (``r_score``, ``f_score``, ``clv_decile``, ``churn_risk``) are computed
        with the defaults of :func:`rfm_scores`, :func:`clv_deciles` and :func:`churn_risk`.
    p_alive_col, clv_col : str
        Columns with P(alive) and CLV (defaults: ``score_customers`` names).
    rules : mapping of str to SegmentRule, optional
        Default :data:`SEGMENT_RULES` (best, at_risk, lapsed, new, one_time); tested in
        order; customers matching none are ``"others"``.

    Returns
    -------
    Series
        str named ``segment``, same index.
    """
    rules = SEGMENT_RULES if rules is None else rules
    t = pd.DataFrame(index=table.index)
    for c in ("frequency", "recency", "T", "monetary_value"):
        if c in table.columns:
            t[c] = table[c]
    if p_alive_col in table.columns:
        t["p_alive"] = table[p_alive_col]
    if {"r_score", "f_score"} <= set(table.columns):
        t["r_score"], t["f_score"] = table["r_score"], table["f_score"]
    elif {"frequency", "recency", "T"} <= set(t.columns):
        s = rfm_scores(t)
        t["r_score"], t["f_score"] = s["r_score"], s["f_score"]
    if "clv_decile" in table.columns:
        t["clv_decile"] = table["clv_decile"]
    elif clv_col in table.columns:
        t["clv_decile"] = clv_deciles(table[clv_col])
    if "churn_risk" in table.columns:
        t["churn_risk"] = table["churn_risk"]
    elif {"frequency", "monetary_value", "p_alive"} <= set(t.columns):
        t["churn_risk"] = churn_risk(t, p_alive_col="p_alive")
    labels = np.full(len(t), OTHERS, dtype=object)
    free = np.ones(len(t), dtype=bool)
    for name, rule in rules.items():
        try:
            hit = np.asarray(rule.when(t), dtype=bool)
        except KeyError as err:
            raise ValueError(
                f"segment rule {name!r} needs column {err.args[0]!r}; pass a table with "
                f"{p_alive_col!r}, {clv_col!r} and the RFM summary columns."
            ) from err
        take = free & hit
        labels[take] = name
        free &= ~take
    return pd.Series(labels, index=table.index, name="segment", dtype="str")


#: Columns added by :func:`label_customers`, in order.
LABEL_COLUMNS = (
    "time_since_last_purchase",
    "r_score",
    "f_score",
    "m_score",
    "rfm_code",
    "clv_decile",
    "churn_risk",
    "segment",
)


def label_customers(
    table: pd.DataFrame,
    *,
    p_alive_col: str = "p_alive_mean",
    clv_col: str | None = "clv_mean",
) -> pd.DataFrame:
    """Every segmentation of this module at once, with the default thresholds.

    Parameters
    ----------
    table : DataFrame
        One row per customer: ``frequency``, ``recency``, ``T`` (or ``periods`` on
        discrete opportunities, see :func:`rfm_scores`), ``monetary_value`` and the
        predictions ``p_alive_col`` and ``clv_col`` (e.g. an RFM table joined with
        ``score_customers(...).customers``).
    clv_col : str or None
        Column with CLV.  ``None``: a run without a spend model (no ``monetary_value``, no
        CLV): only the labels that
        need no value -- ``time_since_last_purchase``, ``r_score``, ``f_score``, ``rfm_code``
        (R and F) and ``segment`` by the :data:`PURCHASE_ONLY_RULES` (active, lapsed, new,
        one_time, else others).

    Returns
    -------
    DataFrame
        Same index, the columns :data:`LABEL_COLUMNS` (those that exist without CLV, when
        ``clv_col`` is None): :func:`rfm_scores`, :func:`clv_deciles`, :func:`churn_risk`
        and :func:`named_segments`.
    """
    if clv_col is None:
        out = rfm_scores(table.drop(columns=["monetary_value"], errors="ignore"))
        work = table[["frequency", p_alive_col]].join(out[["r_score", "f_score"]])
        out["segment"] = named_segments(work, p_alive_col=p_alive_col, rules=PURCHASE_ONLY_RULES)
        return out[[c for c in LABEL_COLUMNS if c in out.columns]]
    out = rfm_scores(table)
    out["clv_decile"] = clv_deciles(table[clv_col])
    work = table[["frequency", "monetary_value", p_alive_col]].copy()
    out["churn_risk"] = churn_risk(work, p_alive_col=p_alive_col)
    # T, or periods on discrete opportunities: only the scores use it, computed above
    time = ["T"] if "T" in table.columns else []
    work = table[["frequency", "recency", *time, "monetary_value", p_alive_col]].join(
        out[["r_score", "f_score", "clv_decile", "churn_risk"]]
    )
    out["segment"] = named_segments(work, p_alive_col=p_alive_col)
    return out[list(LABEL_COLUMNS)]


def clv_to_cac(
    clv: pd.Series | pd.DataFrame,
    cac: float | Mapping[Any, float] | pd.Series,
    by: str | pd.Series | None = None,
    *,
    clv_col: str = "clv_mean",
) -> pd.Series:
    """CLV-to-customer-acquisition-cost ratio of every customer.

    Parameters
    ----------
    clv : Series or DataFrame
        CLV per customer, or a customer table with column ``clv_col``.
    cac : float, mapping or Series
        Acquisition cost (currency, > 0): one number for everybody, or one per group
        (keys = values of ``by``).
    by : str or Series, optional
        The group of each customer (a column of ``clv`` when it is a DataFrame, or a
        Series aligned on its index); required when ``cac`` is per group.
    clv_col : str
        CLV column when ``clv`` is a DataFrame.

    Returns
    -------
    Series
        float64 named ``clv_to_cac``: CLV / CAC (above 1: the customer is worth more than
        it cost to acquire, on the CLV's margin basis).
    """
    if isinstance(clv, pd.DataFrame):
        _require(clv, [clv_col], "clv_to_cac")
        frame, values = clv, clv[clv_col]
    else:
        frame, values = None, clv
    values = pd.Series(pd.to_numeric(values).to_numpy(dtype=np.float64), index=values.index)
    if isinstance(cac, Mapping | pd.Series):
        if by is None:
            raise ValueError("cac is given per group: pass by=<the column holding the groups>.")
        if isinstance(by, str):
            if frame is None or by not in frame.columns:
                raise ValueError(f"by={by!r} is not a column of the customer table.")
            groups = frame[by]
        else:
            groups = by.reindex(values.index)
        costs = dict(cac.items())
        missing = sorted(set(groups.dropna().unique()) - set(costs), key=str)
        if missing or groups.isna().any():
            shown = missing[:5] + ([None] if groups.isna().any() else [])
            raise ValueError(f"no CAC given for group(s) {shown}; cac has {list(costs)}.")
        cost = groups.map(costs).to_numpy(dtype=np.float64)
    else:
        cost = np.full(len(values), float(cac))
    if not (np.isfinite(cost) & (cost > 0)).all():
        raise ValueError("every CAC must be a positive, finite amount.")
    return pd.Series(values.to_numpy() / cost, index=values.index, name="clv_to_cac")
