"""clvbayes.pipeline.run_report: the job behind ``clvbayes run``, called from Python."""

from __future__ import annotations

import inspect
import json

import pytest
from test_cli import _small_csv

from clvbayes import pipeline
from clvbayes.cli import build_parser
from clvbayes.pipeline import RunResult, run_report
from clvbayes.report import read_report_table, validate_report
from clvbayes.run_options import UserError


def test_defaults_are_the_command_line_defaults():
    """One set of defaults: ``clvbayes run`` passes its arguments straight to run_report."""
    parsed = vars(build_parser().parse_args(["run"]))
    params = inspect.signature(run_report).parameters
    options = [k for k in params if k not in ("command", "progress")]
    assert set(options) <= set(parsed), set(options) - set(parsed)
    for name in options:
        default = params[name].default
        expected = list(default) if isinstance(default, tuple) else default
        assert parsed[name] == expected, name
    # every run option of the parser reaches the job (only the CLI's own are left out)
    assert set(parsed) - set(options) == {"command", "debug"}


def test_run_report_from_python_writes_a_valid_report(tmp_path):
    path, tx = _small_csv(tmp_path)
    out = tmp_path / "r"
    result = run_report(str(path), output=str(out), method="map", prediction_draws=50,
                        format="csv", quiet=True, horizon=26)  # fmt: skip
    assert isinstance(result, RunResult) and result.path == out
    validate_report(out)
    assert result.n_customers == tx["customer_id"].nunique()
    assert result.horizon == 26 and result.time_unit == "weeks" and result.method == "map"
    assert result.purchase_model == "bgnbd" and result.prob == 0.9
    total = read_report_table(out / "segments.csv").query("grouping == 'all'").iloc[0]
    assert result.total["clv_total_mean"] == pytest.approx(total["clv_total_mean"], rel=1e-12)
    summary = json.loads((out / "model_summary.json").read_text())
    # the call is recorded with the arguments that differ from the defaults
    assert summary["command"] == (
        f"clvbayes.pipeline.run_report(path={str(path)!r}, output={str(out)!r}, horizon=26, "
        "method='map', prediction_draws=50, format='csv', quiet=True)"
    )


def test_run_report_checks_the_options_before_reading(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the job read the data before refusing the options")

    monkeypatch.setattr(pipeline, "_read_input", refuse)
    with pytest.raises(UserError, match="--margin 30 would multiply every customer's revenue"):
        run_report(margin=30, output=str(tmp_path / "r"), quiet=True)
    assert not (tmp_path / "r").exists()
