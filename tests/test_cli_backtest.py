"""``clvbayes backtest``: exit codes and messages (no traceback), and one run end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clvbayes.cli import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def short_log(tmp_path):
    path = tmp_path / "tx.csv"
    pd.DataFrame({"customer_id": ["a", "a", "b"], "date": ["2020-01-01", "2020-02-01", "2020-03-01"],
                  "amount": [1.0, 2.0, 3.0]}).to_csv(path, index=False)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["backtest", "missing.csv"], "input file not found: missing.csv"),
        (["backtest", "--demo", "donations"], "--demo donations cannot be backtested"),
        (["backtest", "--holdout", "1.5"], "--holdout 1.5 weeks is not a whole number of days"),
        (["backtest", "--by", "channel"], "--by column 'channel' is not in the transactions"),
        (["backtest", "--method", "map", "--purchase-model", "compare"], "needs posterior draws"),
        (["backtest", "--holdout", "60"], "too short for any window"),
    ],
)
def test_errors_exit_2_with_the_fix(argv, message, capsys, tmp_path):
    code, _out, err = _run([*argv, "-q", "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    assert message in err
    assert err.startswith("clvbayes: error: ")
    assert not (tmp_path / "out").exists()


def test_data_too_short_for_any_window(short_log, capsys, tmp_path):
    code, _, err = _run(["backtest", str(short_log), "-q", "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    assert "the data are too short for any window" in err
    assert "8.57143 weeks" in err


def test_missing_column_is_named_before_reading(short_log, capsys, tmp_path):
    code, _, err = _run(["backtest", str(short_log), "--amount-col", "value", "-q",
                         "-o", str(tmp_path / "o")], capsys)  # fmt: skip
    assert code == 2 and "Missing column(s) 'value'" in err


def test_refuses_a_folder_clvbayes_did_not_write(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    code, _, err = _run(["backtest", "-q", "-o", str(out)], capsys)
    assert code == 2 and "not a clvbayes report folder" in err
    assert (out / "notes.txt").read_text() == "x"


def test_bad_syntax_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--windows", "0"])
    assert exc.value.code == 2


def test_backtest_on_the_bundled_sample_end_to_end(capsys, tmp_path):
    out = tmp_path / "bt"
    code, stdout, err = _run(["backtest", "--windows", "2", "--draws", "200",
                              "--prediction-draws", "200", "--no-plots", "-q", "-o", str(out)],
                             capsys)  # fmt: skip
    assert code == 0, err
    assert stdout.startswith(f"clvbayes: backtest written to {out} (2 window(s)")
    summary = json.loads((out / "backtest_summary.json").read_text())
    assert summary["settings"]["command"].startswith("clvbayes backtest --windows 2")
    windows = pd.read_csv(out / "windows.csv")
    assert windows["calibration_end"].tolist() == ["1998-03-31", "1997-12-30"]
    assert (windows["n_customers"] == 2357).all()
    assert "How often did our intervals hold" in (out / "backtest_summary.md").read_text()
    # a second run replaces its own report
    code, _, err = _run(["backtest", "--windows", "1", "--draws", "100", "--prediction-draws",
                         "100", "--no-plots", "-q", "-o", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert len(pd.read_csv(out / "windows.csv")) == 1
