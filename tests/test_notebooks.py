"""The notebooks in notebooks/ run top to bottom, and are committed executed.

Each notebook reads ``CLVBAYES_NOTEBOOK_FAST`` in its parameters cell (tagged
``parameters``); with ``1`` it uses short sampler settings, so a run takes well under a
minute.  The committed files keep the outputs of a full run (see each notebook's first cell).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = [
    "01_quickstart.ipynb",
    "02_model_checking.ipynb",
    "03_segments_and_reporting.ipynb",
    "04_subscriptions.ipynb",
    "05_backtests.ipynb",
]
MAX_BYTES = 1_500_000


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    nb = _read(name)
    monkeypatch.setenv("CLVBAYES_NOTEBOOK_FAST", "1")
    # the kernel inherits the environment: find clvbayes even when not installed, and keep
    # every temporary output folder of the notebook inside this test's tmp_path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_executed_and_small(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # a parameters cell comes first and reads the CI switch
    assert "parameters" in code[0].metadata.get("tags", [])
    assert "CLVBAYES_NOTEBOOK_FAST" in code[0].source
    # the first markdown cell says how to run the full version
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    assert "CLVBAYES_NOTEBOOK_FAST" in first_md.source and "nbconvert" in first_md.source
    # executed top to bottom in one session, without errors, with figures
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (NOTEBOOK_DIR / name).stat().st_size < MAX_BYTES
