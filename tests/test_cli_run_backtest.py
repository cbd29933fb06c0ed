"""`clvbayes run --backtest K`: the main report says how often its intervals held before."""

from __future__ import annotations

import json

import pytest

from clvbayes import cli
from clvbayes.report import validate_report


def test_run_with_backtest_adds_the_section(tmp_path):
    out = tmp_path / "report"
    assert cli.main(["run", "--method", "map", "--backtest", "2", "-q", "-o", str(out)]) == 0
    validate_report(out)
    md = (out / "model_summary.md").read_text()
    assert "## How often did our intervals hold on your history" in md
    assert "2 earlier calibration end(s)" in md and "Calibrated totals (opt-in)" in md
    summary = json.loads((out / "model_summary.json").read_text())
    assert "How often did our intervals hold" in summary["backtest"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backtest", "-1"], "--backtest -1: pass a whole number of windows"),
        (["--backtest", "2", "--demo", "donations", "--opportunities", "yearly"],
         "--backtest runs in continuous time only"),
    ],
    ids=["negative", "discrete"],
)  # fmt: skip
def test_backtest_option_errors(tmp_path, capsys, extra, message):
    out = tmp_path / "report"
    assert cli.main(["run", "--method", "map", "-q", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
