"""An executed notebook with the live dashboard in it stays small.

Executes notebooks/02_health_dashboard.ipynb once with nbclient (the widget state
stored, as ``jupyter nbconvert --execute`` does) and checks the saved file is
under 1 MB while it still holds the dashboard's charts as widget state. With
plotly's ``FigureWidget`` each chart stored the whole plotly.js bundle: 10.3 MB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_health_dashboard.ipynb"
LIMIT = 1_000_000


def test_executed_dashboard_notebook_is_under_1_mb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("RC_TMP", "1")  # the kernel inherits: short story, temp folder
    monkeypatch.setenv("RC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("RC_DURATION", "3")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    out = tmp_path / "executed.ipynb"
    nbformat.write(nb, out)
    size = out.stat().st_size

    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    biggest = max(state.items(), key=lambda kv: len(json.dumps(kv[1])))
    assert size < LIMIT, (
        f"executed notebook is {size:,} bytes; largest widget {biggest[1]['model_name']}: "
        f"{len(json.dumps(biggest[1])):,} bytes"
    )
    charts = [m["state"]["figure"] for m in state.values() if "figure" in m["state"]]
    titles = sorted(c["layout"]["title"]["text"].split(",")[0] for c in charts)
    assert titles == ["Breaker state", "Ticks and rejects per second"], titles
    rates = next(c for c in charts if c["layout"]["title"]["text"].startswith("Ticks"))
    assert len(rates["data"][0]["x"]) > 0  # the final state was drawn, not an empty chart
