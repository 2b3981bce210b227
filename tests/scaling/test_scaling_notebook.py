"""notebooks/scaling_analysis.ipynb runs headless and reproduces the reference fit."""

import json
import os

import nbformat
from nbclient import NotebookClient

NB = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "scaling_analysis.ipynb")


def test_scaling_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LMJAX_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("LMJAX_NOTEBOOK_BOOT", "100")
    nb = nbformat.read(NB, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(NB))}})
    client.execute()  # raises CellExecutionError on any failing cell
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert abs(result["E"] - 1.8172) < 0.002 and abs(result["alpha"] - 0.3473) < 0.001
    assert result["ci"]["beta"][0] < 0.3672 < result["ci"]["beta"][1]
    assert all(os.path.exists(p) for p in result["plots"]) and len(result["plots"]) == 6
