"""The quickstart acceptance run (slow: `make test-slow`): 30 runs locally within 10 minutes,
all done, a final row per run in results.csv; a second launch reuses everything."""

import os
import time

import pandas as pd
import pytest

from lmjax.sweep import quickstart, store

pytestmark = pytest.mark.slow


def test_quickstart_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    d = str(tmp_path / "quickstart")
    t0 = time.perf_counter()
    path = quickstart(d, report=lambda m, **k: print(m, flush=True))
    first = time.perf_counter() - t0
    assert first < 600, f"the quickstart took {first:.0f} s"
    _, rows = store.sweep_states(d)
    assert len(rows) == 30 and all(r["state"] == "done" for r in rows)
    df = pd.read_csv(path)
    assert df.groupby("run")["final"].sum().eq(1).all() and df["run"].nunique() == 30
    final = df[df["final"]]
    for _, fam in final.groupby("family"):  # more data and more parameters help, at every size
        table = fam.pivot_table(index="d_model", columns="train_tokens", values="val_loss")
        assert (table.diff(axis=1).iloc[:, 1:] < 0).all().all()
    t0 = time.perf_counter()
    assert quickstart(d, report=lambda m, **k: None) == path
    assert time.perf_counter() - t0 < 60
    assert os.path.isfile(os.path.join(d, "results.parquet"))
