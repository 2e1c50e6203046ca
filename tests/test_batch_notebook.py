"""notebooks/02-fleet-triage.ipynb runs from top to bottom (so it cannot rot) and is stored
without outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02-fleet-triage.ipynb"


def test_notebook_is_saved_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_fleet_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("NTDUMP_FLEET_DIR", str(tmp_path))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))
    text = json.dumps(nb["cells"])
    assert "srv-db1 tag 'None': 1,536.0 KiB/h" in text
    assert any(o.get("output_type") in ("display_data", "execute_result")
               and "image/png" in o.get("data", {})
               for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"])
    assert (tmp_path / "results" / "triage.parquet").is_file()
