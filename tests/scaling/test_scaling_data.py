"""The tidy loader: sweep directories and CSV files map to one table."""

import numpy as np
import pandas as pd
import pytest

from lmjax.errors import DataError
from lmjax.scaling import load


def test_load_reference_csv(chinchilla_csv):
    data = load(chinchilla_csv)
    assert len(data.points) == 245 and data.curves is None and data.exact_flops
    assert {"N", "D", "C", "loss"} <= set(data.points.columns)
    np.testing.assert_allclose(data.points["C"], 6 * data.points["N"] * data.points["D"], rtol=1e-6)
    kept = data.drop_highest_loss(5)
    assert len(kept.points) == 240
    assert kept.points["loss"].max() < 3.44  # the dropped losses: 3.447, 3.766, 3.794, 4.665, 5.006
    assert data.families == []


def test_load_csv_without_flops(tmp_path):
    df = pd.DataFrame({"N": [1e7, 2e7, 4e7], "D": [1e9, 2e9, 4e9], "loss": [3.0, 2.8, 2.6], "family": "lstm"})
    df.to_csv(tmp_path / "p.csv", index=False)
    data = load(tmp_path / "p.csv")
    assert not data.exact_flops
    np.testing.assert_allclose(data.points["C"], 6 * df["N"] * df["D"])
    assert data.families == ["lstm"]


def test_load_sweep_directory(small_sweep):
    data = load(small_sweep)
    raw = pd.read_csv(small_sweep / "results.csv")
    assert len(data.points) == int(raw["final"].sum()) == 30
    assert len(data.curves) == len(raw)
    assert data.families == ["lstm", "transformer"]
    fam = data.family("lstm")
    assert len(fam.points) == 15 and set(fam.curves["family"]) == {"lstm"}
    final = raw[raw["final"]].reset_index(drop=True)
    np.testing.assert_allclose(data.points["N"], final["params_non_embedding"])
    np.testing.assert_allclose(data.points["D"], final["tokens"])
    np.testing.assert_allclose(data.points["C"], final["flops"])
    np.testing.assert_allclose(data.points["loss"], final["val_loss"])
    with pytest.raises(DataError, match="no family 'gru'"):
        data.family("gru")


def test_sweep_errors_name_rows_and_columns(tmp_path, small_sweep):
    raw = pd.read_csv(small_sweep / "results.csv")
    d1 = tmp_path / "a"
    d1.mkdir()
    bad = raw.copy()
    bad.loc[7, "val_loss"] = np.nan  # row 7 is a final row (8 evals per run)
    bad.to_csv(d1 / "results.csv", index=False)
    with pytest.raises(DataError, match=r"NaN.*\['loss'\], rows 7 "):
        load(d1)
    d2 = tmp_path / "b"
    d2.mkdir()
    raw.drop(columns="tokens").to_csv(d2 / "results.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['tokens'\]"):
        load(d2)
    d3 = tmp_path / "c"
    d3.mkdir()
    bad = raw.copy()
    bad["final"] = bad["final"].astype(str)
    bad.loc[3, "final"] = "maybe"
    bad.to_csv(d3 / "results.csv", index=False)
    with pytest.raises(DataError, match="column 'final' must be True/False; bad in rows 3 "):
        load(d3)


def test_sweep_with_an_ngram_family_and_missing_flops(tmp_path, small_sweep):
    raw = pd.read_csv(small_sweep / "results.csv")
    ngram = raw[raw["family"] == "lstm"].assign(family="ngram", params_non_embedding=0, flops=0.0)
    no_flops = raw.copy()
    no_flops.loc[no_flops["family"] == "lstm", "flops"] = 0.0  # a family without FLOP accounting
    pd.concat([no_flops, ngram]).to_csv(tmp_path / "results.csv", index=False)
    data = load(tmp_path)
    assert data.families == ["lstm", "transformer"]
    assert any("['ngram'] have no parameter count" in n for n in data.notes)
    assert any("C = 6 N D" in n for n in data.notes)
    lstm = data.family("lstm").points
    np.testing.assert_allclose(lstm["C"], 6 * lstm["N"] * lstm["D"])
