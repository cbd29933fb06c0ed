"""The bundled retention examples: the FH2007 file as published, the simulated box log as its
generator writes it (byte for byte), and the loaders' shapes and attributes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np

from clvbayes.datasets import (
    load_fh2007_subscribers,
    load_fh2007_survival,
    load_subscription_box_charges,
)
from clvbayes.datasets.subscriptions import BOX_PLANS

ROOT = Path(__file__).resolve().parents[1]
#: sha256 of ../shared/data/retention/fh2007_survival.csv (its README)
FH2007_SHA256 = "957eaf1d2a8bfdab81e813a3cdfc1b73410d8f9ff6750a131503fca7c7d253c7"


def test_fh2007_file_is_the_published_table():
    data = files("clvbayes.datasets").joinpath("files", "fh2007_survival.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == FH2007_SHA256
    table = load_fh2007_survival()
    assert table.columns.tolist() == ["year", "high_end", "regular"]
    assert table["year"].tolist() == list(range(13))
    assert table.loc[12, ["high_end", "regular"]].tolist() == [39.4, 17.3]


def test_fh2007_subscribers_per_calibration():
    subs = load_fh2007_subscribers()
    assert len(subs) == 2000 and subs.attrs["period"] == "1 year"
    high = subs[subs["cohort"] == "high_end"]
    assert int((high["churned"] == 0).sum()) == 491 and high["periods"].max() == 7
    full = load_fh2007_subscribers(calibration_periods=None)
    assert int((full["churned"] == 0).sum()) == 394 + 173


def test_box_charge_log():
    log = load_subscription_box_charges()
    assert log.columns.tolist() == ["customer_id", "date", "plan", "amount"]
    assert 15_000 < len(log) < 30_000 and 3_000 < log["customer_id"].nunique() < 5_000
    assert log["date"].min().year == 2023 and str(log["date"].max().date()) <= log.attrs["as_of"]
    prices = log.groupby("plan")["amount"].unique()
    assert {p: float(v[0]) for p, v in prices.items()} == {
        p: spec["price"] for p, spec in BOX_PLANS.items()
    }
    assert np.all(np.diff(log["date"].to_numpy()) >= np.timedelta64(0, "D"))


def test_box_file_is_what_the_generator_writes():
    script = ROOT / "benchmarks" / "make_subscription_box.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
