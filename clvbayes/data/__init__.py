"""The data layer: transaction logs in, validated RFM summaries out.

Imports neither PyMC nor PyTensor.

- :func:`read_transactions` reads CSV/Parquet (a DataFrame passes through);
- :func:`summarize_transactions` builds the RFM table (frequency, recency, T,
  monetary_value) from a transaction log;
- :func:`calibration_holdout_split` adds holdout-period counts for out-of-sample checks;
- :func:`validate_rfm` checks an RFM table that did not come from us;
- :func:`compress` collapses customers with identical rows for fast likelihoods;
- :func:`summarize_opportunities` (discrete time, BG/BB: opportunities on an explicit grid)
  and :func:`summarize_subscriptions` / :func:`subscribers_from_survival` /
  :func:`subscriptions_from_charges` (contractual: renewal periods and churn);
- :class:`DataError` is the one exception raised for bad input; suspicious but legal
  input (exact duplicate rows, dates after today, an end far after the data, ids that
  read like missing-value markers) raises a :class:`DataWarning`.  Nothing is dropped or
  reinterpreted without an explicit option (``negative_amounts``, ``duplicate_rows``,
  ``outlying_dates``, ``datetime_format``).
"""

from clvbayes.data.compress import CompressedRFM, compress
from clvbayes.data.discrete import summarize_opportunities, validate_discrete_rfm
from clvbayes.data.rfm import read_transactions, summarize_transactions
from clvbayes.data.split import calibration_holdout_split
from clvbayes.data.subscriptions import (
    subscribers_from_survival,
    subscriptions_from_charges,
    summarize_subscriptions,
    validate_subscribers,
)
from clvbayes.data.validation import (
    TIME_UNITS,
    DataError,
    DataWarning,
    validate_monetary,
    validate_rfm,
    validate_spend,
)

__all__ = [
    "TIME_UNITS",
    "CompressedRFM",
    "DataError",
    "DataWarning",
    "calibration_holdout_split",
    "compress",
    "read_transactions",
    "subscribers_from_survival",
    "subscriptions_from_charges",
    "summarize_opportunities",
    "summarize_subscriptions",
    "summarize_transactions",
    "validate_discrete_rfm",
    "validate_monetary",
    "validate_rfm",
    "validate_spend",
    "validate_subscribers",
]
