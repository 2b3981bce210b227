"""notebooks/scaling_analysis.ipynb runs headless and reproduces the reference fit."""

import os


def test_scaling_notebook_runs(tmp_path, monkeypatch, run_notebook):
    monkeypatch.setenv("LMJAX_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("LMJAX_NOTEBOOK_BOOT", "100")
    result = run_notebook("scaling_analysis.ipynb")
    assert abs(result["E"] - 1.8172) < 0.002 and abs(result["alpha"] - 0.3473) < 0.001
    assert result["ci"]["beta"][0] < 0.3672 < result["ci"]["beta"][1]
    assert all(os.path.exists(p) for p in result["plots"]) and len(result["plots"]) == 6
