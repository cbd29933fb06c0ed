"""Writing a whole report folder: :func:`write_report`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from clvbayes.report.comparison import ModelComparison
from clvbayes.report.folder import (
    MANIFEST,
    ReportWriteError,
    _model_bytes,
    _output_path,
    _Stage,
    _table_bytes,
    _write_failed,
    staged_writing,
)
from clvbayes.report.lock import publish_staged
from clvbayes.report.plots import _write_model_plots, _write_plots, draw_plots_soon
from clvbayes.report.schema import (
    _POINT_FIT_NOTE,
    DISCRETE_PLOT,
    FORMATS,
    PLOTS,
    REPORT_VERSION,
    _is_point_fit,
    data_dictionary,
)
from clvbayes.report.summary import _jsonable, _md_table, _model_summary, _summary_markdown
from clvbayes.report.tablefiles import _csv_safe, _normalise_formats, _to_csv, _write_table
from clvbayes.report.tables import segment_table
from clvbayes.report.validate import validate_report


def write_report(
    out_dir: str | os.PathLike[str],
    customers_table: pd.DataFrame,
    segments_tables: pd.DataFrame | Mapping[str, pd.DataFrame],
    models: Mapping[str, Any],
    provenance: Mapping[str, Any],
    fmt: str | Iterable[str] = FORMATS,
    *,
    settings: Mapping[str, Any] | None = None,
    holdout: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
    comparison: ModelComparison | None = None,
) -> Path:
    """Write a complete report folder, atomically, never deleting a file clvbayes did not write.

    Everything is written to a staging folder next to ``out_dir``, listed in a manifest
    (:data:`MANIFEST`: name, size, SHA-256 of every file), checked with
    :func:`validate_report` and then swapped into place, so a failure never leaves a
    partial report and never loses the previous one.  An existing ``out_dir`` is replaced
    only if it is empty or holds nothing but the unchanged files of its manifest; anything
    else is refused (:class:`OutputFolderRefused`, a ``FileExistsError``) with the first
    unexpected entries named.  One writer per folder: a second concurrent run is refused
    (:class:`ReportBusy`).  Leftovers of an interrupted earlier run are tidied first (see
    :func:`output_lock` and the module notes).

    Parameters
    ----------
    out_dir : path
        The report folder (its parent is created when missing).
    customers_table : DataFrame
        From :func:`customer_table`.
    segments_tables : DataFrame or mapping
        From :func:`segment_table`, or ``CustomerScores.segments`` (stacked here).
    models : mapping of str to fitted model
        Saved as ``{name}.nc`` with their data (e.g. ``{"bgnbd": bg, "gamma_gamma": gg}``).
    provenance : mapping
        Data provenance for ``model_summary`` (input file, sha256, row counts, exclusions).
    fmt : "csv", "parquet", "both" or a sequence of them
        Table formats (default both).
    settings : mapping, optional
        Prediction settings (``CustomerScores.settings``): horizon, time unit, discount,
        margin, interval probability, seed, and ``method`` (``nuts``, ``laplace``, ``map``);
        ``time_grid`` (``"continuous"`` or ``"discrete"``), ``spend_model`` (its key in
        ``models``, None for none) and ``purchase_model`` (its key in ``models``) decide the
        report's kind (:func:`~clvbayes.report.schema.report_kind`).
    holdout : mapping, optional
        Holdout check figures for ``model_summary``.
    extra : mapping, optional
        More entries for ``model_summary.json`` (command line, timings, warnings).
    protect : paths, optional
        The run's input files: refused as (or inside) the output folder.
    comparison : ModelComparison, optional
        The purchase models side by side (:func:`clvbayes.report.comparison.
        compare_purchase_models`): written as ``model_comparison.csv`` / ``.parquet``, with
        the chosen model and the reason in ``model_summary`` and in the data dictionary.

    Returns
    -------
    Path
        The report folder (absolute).

    Raises
    ------
    ReportWriteError
        (an ``OSError``) the folder cannot be written: refused folder, another writer, too
        little free space (checked before writing: about the tables' text size plus twice
        the models' arrays), a failed write.  The previous report is unchanged.
    """
    formats = _normalise_formats(fmt)
    out = _output_path(out_dir)
    segments = (
        segments_tables
        if isinstance(segments_tables, pd.DataFrame)
        else segment_table(segments_tables)
    )
    tables = {"customers": customers_table, "segments": segments}
    if comparison is not None:
        tables["model_comparison"] = comparison.table
    settings = dict(settings or {})
    if not settings.get("method"):
        methods = {getattr(m, "fit_info_", {}).get("method") for m in models.values()} - {None}
        if len(methods) == 1:
            settings["method"] = methods.pop()
    need = (
        sum(_table_bytes(df, formats) for df in tables.values())
        + sum(_model_bytes(m) for m in models.values())
        + (4 << 20)  # plots, dictionary, summaries
    )

    def fill(stage) -> None:
        _fill(stage, tables, models, provenance, formats, settings, holdout, extra, comparison)

    return publish_staged(out, protect, need, fill, validate_report)


def _fill(
    stage: _Stage,
    tables: Mapping[str, pd.DataFrame],
    models: Mapping[str, Any],
    provenance: Mapping[str, Any],
    formats: Sequence[str],
    settings: dict[str, Any],
    holdout: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None,
    comparison: ModelComparison | None = None,
) -> None:
    """Write every report file into the staging folder (each named in the journal first).

    The plots are started first (:func:`~clvbayes.report.plots.draw_plots_soon`: in a NUTS
    worker process when one is running) and collected after the tables and model files.
    """
    writing = staged_writing(stage)
    plot_files = (*PLOTS, "segment_totals.png", DISCRETE_PLOT)
    stage.expect(*plot_files)
    drawing = draw_plots_soon(
        _write_plots, stage.path, tables["customers"], tables["segments"], settings
    )
    try:
        _fill_rest(stage, writing, drawing, plot_files, tables, models, provenance, formats,
                   settings, holdout, extra, comparison)  # fmt: skip
    except BaseException:
        drawing(draw_here=False)  # no worker left writing into a staging folder removed
        raise


def _fill_rest(stage, writing, drawing, plot_files, tables, models, provenance, formats,
               settings, holdout, extra, comparison) -> None:  # fmt: skip
    """:func:`_fill` once the plots are under way (``drawing()`` waits for their names)."""
    tmp, out = stage.path, stage.out
    customers_table, segments = tables["customers"], tables["segments"]
    table_files = [f"{t}.{f}" for t in tables for f in formats]
    with writing(*table_files):
        for name, df in tables.items():
            _write_table(df, tmp, name, formats)
    dictionary = data_dictionary(tables, context=settings)
    with writing("data_dictionary.csv", "data_dictionary.md"):
        _to_csv(_csv_safe(dictionary), tmp / "data_dictionary.csv")
        md = ["# clvbayes report: data dictionary", ""]
        if _is_point_fit(settings.get("method")):
            md += [_POINT_FIT_NOTE, ""]
        for name in tables:
            md += [f"## {name}", "", _md_table(dictionary[dictionary["table"] == name]
                                               .drop(columns="table")), ""]  # fmt: skip
        (tmp / "data_dictionary.md").write_text("\n".join(md), encoding="utf-8")
    prob = float(settings.get("prob", 0.9))
    model_files = {}
    model_summaries = {}
    for name, model in models.items():
        file = f"{name}.nc"
        stage.expect(file)
        try:
            _save_model(model, tmp / file)
        except ReportWriteError:
            raise
        except Exception as err:  # h5py raises RuntimeError as well as OSError on write errors
            raise _write_failed(out, f"the model file {file}", err) from err
        model_files[name] = file
        model_summaries[name] = _model_summary(name, model, prob)
    with writing(*plot_files):
        plots = drawing()
        plots += _write_model_plots(tmp, models, settings)
    from clvbayes import __version__

    summary = {
        "clvbayes_report": REPORT_VERSION,
        "clvbayes_version": __version__,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "formats": list(formats),
        "files": {
            "tables": table_files,
            "models": model_files,
            "plots": plots,
            "manifest": MANIFEST,
        },
        "n_customers": len(customers_table),
        "data": dict(provenance),
        "settings": settings,
        "models": model_summaries,
        "holdout": dict(holdout) if holdout else None,
        **dict(extra or {}),
    }
    if comparison is not None:
        summary["model_comparison"] = comparison.to_summary()
    summary = _jsonable(summary)
    with writing("model_summary.json", "model_summary.md"):
        (tmp / "model_summary.json").write_text(
            json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        (tmp / "model_summary.md").write_text(_summary_markdown(summary, segments), "utf-8")


def _save_model(model: Any, path: Path) -> None:
    """Save one model file.

    A model that can serialise itself to bytes (``to_bytes()``) is written with plain
    Python I/O, so a full disk is an ordinary ``OSError``.  Otherwise ``model.save(path)``
    (netCDF through h5netcdf); HDF5 can crash the process after a failed write, which is
    why :func:`write_report` checks the free space first.
    """
    to_bytes = getattr(model, "to_bytes", None)
    if callable(to_bytes):
        data = to_bytes(include_data=True)
        with path.open("wb") as fh:
            fh.write(data)
        return
    model.save(path, include_data=True)
