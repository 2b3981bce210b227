"""report(): the quickstart's one-call analysis of a small sweep."""

import os

from lmjax.scaling import report


def test_report_small_sweep(small_sweep, tmp_path):
    out = tmp_path / "report"
    text = report(small_sweep, out)
    assert "lstm:" in text and "transformer:" in text
    assert "E + A/N^alpha + B/D^beta" in text
    assert "envelope: N_opt ~ C^" in text  # approach 1 from the training curves
    assert "approach 2 skipped" in text  # too few model sizes per FLOP budget in this sweep
    assert "extrapolation to N >=" in text
    assert "tokens/param" in text
    files = set(os.listdir(out))
    assert "scaling_report.txt" in files and "families.png" in files and "families.svg" in files
    for stem in ("loss_curves", "loss_vs_N_and_D", "residuals", "allocation"):
        for fam in ("lstm", "transformer"):
            assert {f"{fam}_{stem}.png", f"{fam}_{stem}.svg"} <= files, (fam, stem)
