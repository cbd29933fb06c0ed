"""The report folder: reporting-ready tables with a documented schema, plots, saved models.

A report folder holds (see :data:`SCHEMA` for every column):

==========================  ===========================================================
file                        content
==========================  ===========================================================
customers.csv / .parquet    one row per customer: RFM summary, segment labels, P(alive),
                            purchases, spend, revenue, CLV (mean, sd, both intervals)
segments.csv / .parquet     per segment (named segments, CLV deciles, ``--group-by``
                            columns, and ``all``): counts, totals and per-customer means
                            with intervals computed from per-draw sums
model_summary.json / .md    parameter tables (mean, sd, interval, r_hat, ESS),
                            divergences, fit and prediction settings, data provenance
                            (input sha256, row counts, excluded rows), holdout check
data_dictionary.csv / .md   every column of every table: type, unit, meaning
*.png                       P(alive) and CLV distributions, CLV by recency x frequency,
                            CLV totals by named segment with both intervals; discrete
                            runs: P(alive) by (frequency, recency) from the BG/BB model
                            (``p_alive_by_history.png``) and purchases by segment
bgnbd.nc, gamma_gamma.nc    the fitted models (``CLVModel.load(path)``); the purchase
                            model's file and key are its ``--purchase-model`` name
                            (``bgnbd.nc``, ``mbgnbd.nc``, ...); with ``compare`` every
                            compared model
model_comparison.csv /      ``--purchase-model compare`` only: one row per purchase
.parquet                    model (PSIS-LOO, holdout accuracy and coverage), the one the
                            tables use marked ``chosen``; ``model_summary`` says why
.clvbayes-manifest.json     name, size and SHA-256 of every file above
==========================  ===========================================================

What clvbayes writes and what it never touches: :func:`write_report` writes the whole
folder in a staging folder next to it and swaps it into place in one step, so the
folder is always either the old report or the new one.  It replaces an existing folder
only when every entry in it is a file its manifest lists, unchanged; a folder with
anything else (a copied input file, notes, a subfolder, an edited table, a report from a
clvbayes that wrote no manifest) is refused with the entries named.  One run writes a
folder at a time (a lock file ``.<name>.<hash>.lock`` beside it).  What a killed run
leaves beside the folder (``.<name>.<hash>.partial-*``, ``.<name>.<hash>.old-*``) is
removed by the next run only as far as the manifest or the staging journal proves it
clvbayes' own.  Free space is checked before anything is written.

Discrete-time reports (BG/BB on an opportunity grid, ``time_grid`` ``"discrete"`` in the
settings): ``recency`` and ``periods`` (instead of ``T``) count opportunities, horizons are
numbers of opportunities, ``p_alive`` is P(active at the last calibration opportunity), and
``dert_*`` columns give the discounted expected residual transactions; the settings name the
grid (``opportunity_grid``, ``opportunity_dates``).  With transaction values they have the
spend model and its columns too, a value being per opportunity (its amounts added up).  A
report without a spend model (e.g. the bundled donations data) has no value columns at all (no ``monetary_value``, spend, revenue, CLV, CLV deciles or churn flag)
and its segments are those of :data:`clvbayes.segments.PURCHASE_ONLY_RULES`;
:func:`~clvbayes.report.schema.report_kind` says which kind a report is and
:func:`validate_report` checks each kind's columns and plots.

MAP reports (``method="map"``, a point estimate of the parameters): the sd and
credible-interval columns of expectations are empty, and the data dictionary and
``model_summary`` say why; ``model_summary`` shows the Laplace sd of each parameter but
no interval.  Predictive intervals remain (the customers' own randomness only).

One schema definition (:data:`SCHEMA`) generates the data dictionary and is what
:func:`validate_report` checks the files against.  Tables round-trip exactly through
:func:`read_report_table` (CSV floats are written in their shortest exact form; Parquet
keeps types) and through SQL with :func:`export_sql` / :func:`read_sql_table`.

CSV conventions: comma separated, UTF-8, header row, ``.`` as decimal point, dates as
ISO ``YYYY-MM-DD[ HH:MM:SS]``, booleans ``True``/``False``, missing values as empty
fields (so an empty text value reads back as missing).  Text cells (ids, segment and
group values, input column names) that a spreadsheet would run as a formula -- starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return -- are written with a leading
``'`` (and text already starting with ``'`` gets one more); plain numbers such as ``-

Modules: :mod:`~clvbayes.report.schema` (the columns, the data dictionary),
:mod:`~clvbayes.report.tables` (building the tables), :mod:`~clvbayes.report.comparison`
(purchase models side by side, the choice among them), :mod:`~clvbayes.report.tablefiles`
(CSV/Parquet files, formula escaping, reading back), :mod:`~clvbayes.report.summary` (model
summary), :mod:`~clvbayes.report.plots`, :mod:`~clvbayes.report.folder` (replace rules,
manifest, staging, atomic swap, disk space), :mod:`~clvbayes.report.lock` (one writer per
folder), :mod:`~clvbayes.report.writer` (:func:`write_report`),
:mod:`~clvbayes.report.validate` (:func:`validate_report`) and :mod:`~clvbayes.report.sql`.
Every public name is importable from :mod:`clvbayes.report` itself.
"""

from __future__ import annotations

from clvbayes.report.comparison import (
    CHOICE_RULE,
    ModelComparison,
    choose_model,
    compare_purchase_models,
)
from clvbayes.report.folder import (
    MANIFEST,
    STAGING_JOURNAL,
    OutputFolderRefused,
    ReportBusy,
    ReportWarning,
    ReportWriteError,
    check_output_folder,
    replace_refusal,
)
from clvbayes.report.lock import output_lock
from clvbayes.report.schema import (
    DISCRETE_PLOT,
    FORMATS,
    OPTIONAL_TABLES,
    PANDAS_DTYPES,
    PLOTS,
    POINT_METHODS,
    REPORT_VERSION,
    RESERVED_NAMES,
    SCHEMA,
    TABLES,
    Column,
    ReportError,
    column_applies,
    data_dictionary,
    report_kind,
    required_plots,
)
from clvbayes.report.sql import MAX_SQL_NAME_BYTES, check_sql_table_name, export_sql, read_sql_table
from clvbayes.report.summary import file_provenance
from clvbayes.report.tablefiles import FORMULA_START, read_report_table
from clvbayes.report.tables import customer_table, segment_table
from clvbayes.report.validate import validate_report
from clvbayes.report.writer import write_report

__all__ = [
    "CHOICE_RULE",
    "DISCRETE_PLOT",
    "FORMATS",
    "FORMULA_START",
    "MANIFEST",
    "MAX_SQL_NAME_BYTES",
    "OPTIONAL_TABLES",
    "PANDAS_DTYPES",
    "PLOTS",
    "POINT_METHODS",
    "REPORT_VERSION",
    "RESERVED_NAMES",
    "SCHEMA",
    "STAGING_JOURNAL",
    "TABLES",
    "Column",
    "ModelComparison",
    "OutputFolderRefused",
    "ReportBusy",
    "ReportError",
    "ReportWarning",
    "ReportWriteError",
    "check_output_folder",
    "check_sql_table_name",
    "choose_model",
    "column_applies",
    "compare_purchase_models",
    "customer_table",
    "data_dictionary",
    "export_sql",
    "file_provenance",
    "output_lock",
    "read_report_table",
    "read_sql_table",
    "replace_refusal",
    "report_kind",
    "required_plots",
    "segment_table",
    "validate_report",
    "write_report",
]
