"""The local backend end to end: a diverging grid point fails with its reason, the others finish;
status, collect, re-launch (nothing retrained) and --retry-failed."""

import json
import math
import os

import pandas as pd
import pytest

from sweep_helpers import write_sweep
from lmjax.cli import main as cli_main
from lmjax.sweep import store
from lmjax.sweep.results import COLUMNS, collect
from lmjax.sweep.launcher import LaunchOptions, launch
from lmjax.sweep.local import LocalOptions

BAD_LR = 1e4  # AdamW steps of size ~1e4: the parameters blow up and the loss becomes NaN


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    # two good runs (the same program: they differ only in their unique-data budget) and a bad one
    path = write_sweep(tmp, name="fail", unique=(0, 50_000), steps=20, extra=[{"optim.lr": BAD_LR}])
    sweep_dir = str(tmp / "sweep")
    lines = []
    out = launch(path, sweep_dir, LaunchOptions(backend="local", local=LocalOptions(workers=2)),
                 report=lambda m, **k: lines.append(m))
    return path, sweep_dir, out, lines


def _runs(sweep_dir):
    """{"bad" | train_tokens: run dir}."""
    data = store.load_sweep_json(sweep_dir)
    return {"bad" if r["config"]["optim"]["lr"] == BAD_LR else r["config"]["data"]["train_tokens"]:
            os.path.join(sweep_dir, r["dir"]) for r in data["runs"]}


def test_failure_is_recorded_and_the_others_finish(swept):
    _, sweep_dir, out, lines = swept
    runs = _runs(sweep_dir)
    assert out["states"] == {"done": 2, "running": 0, "failed": 1, "pending": 0}
    bad = runs["bad"]
    rec = json.load(open(os.path.join(bad, store.FAILED)))
    assert "nan" in rec["reason"].lower() or "finite" in rec["reason"].lower(), rec
    assert out["failed"] == {os.path.basename(bad): rec["reason"]}
    s = json.load(open(os.path.join(bad, "summary.json")))
    assert s["status"] == "diverged" and s["steps"] < 20  # stopped at a log step, not after all 20
    for key in (0, 50_000):
        s = json.load(open(os.path.join(runs[key], "summary.json")))
        assert s["status"] == "done" and s["steps"] == 20 and math.isfinite(s["final_val_loss"])
        assert not os.path.exists(os.path.join(runs[key], store.FAILED))
    assert any("failed" in str(m) and os.path.basename(bad) in str(m) for m in lines)


def test_status_shows_states_reasons_and_a_bar(swept, capsys):
    _, sweep_dir, _, _ = swept
    text = store.format_status(sweep_dir)
    assert "2/3 done" in text and "1 failed" in text and "0 pending" in text
    assert "[" in text and "#" in text and "x" in text  # the bar: done and failed parts
    assert "reason:" in text
    assert cli_main(["sweep", "status", sweep_dir, "-v"]) == 0
    printed = capsys.readouterr().out
    assert "2/3 done" in printed and printed.count("  done ") == 2


def test_collect_writes_the_table(swept):
    _, sweep_dir, _, _ = swept
    df = collect(sweep_dir)
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    assert os.path.isfile(os.path.join(sweep_dir, "results.parquet"))
    csv = pd.read_csv(os.path.join(sweep_dir, "results.csv"))
    assert len(csv) == len(df) == 4  # 2 finished runs x evaluations at steps 10 and 20
    assert not csv.duplicated(["run", "step"]).any()
    finals = csv[csv["final"]]
    assert len(finals) == 2 and set(finals["step"]) == {20}
    assert set(csv["unique_tokens"]) == {0, 50_000} and (csv["lr"] == 1e-3).all()
    assert (csv["family"] == "transformer").all()
    assert (csv["tokens"] == csv["step"] * 8 * 16).all()
    assert (csv["flops"] == csv["tokens"] * csv["flops_per_token"]).all()
    assert csv[COLUMNS].drop(columns=["final"]).notna().all().all()
    assert (csv["params_total"] > csv["params_non_embedding"]).all()
    with_failed = collect(sweep_dir, include_failed=True, write=False)
    # the diverged run stopped at a log step before its first evaluation (step 10 logs first): no rows
    assert len(with_failed) == 4 and not (with_failed["lr"] == BAD_LR).any()


def test_relaunch_reuses_finished_runs_and_retry_failed(swept):
    path, sweep_dir, _, _ = swept
    runs = _runs(sweep_dir)
    before = {lr: open(os.path.join(d, "summary.json")).read() for lr, d in runs.items() if lr != "bad"}
    quiet = lambda m, **k: None  # noqa: E731
    out = launch(path, sweep_dir, LaunchOptions(backend="local"), report=quiet)
    assert out["tasks"] == 0 and out["states"]["done"] == 2 and out["states"]["failed"] == 1
    out = launch(path, sweep_dir, LaunchOptions(backend="local", retry_failed=True, local=LocalOptions(workers=1)),
                 report=quiet)
    assert out["tasks"] == 1  # only the failed run was trained again (and failed again)
    bad = runs["bad"]
    assert len(os.listdir(os.path.join(bad, store.FAILURES))) == 1  # the first failure is kept
    assert os.path.isfile(os.path.join(bad, store.FAILED)) and out["states"]["failed"] == 1
    assert os.path.isdir(os.path.join(bad, "attempts"))  # the diverged attempt was moved aside
    after = {lr: open(os.path.join(d, "summary.json")).read() for lr, d in runs.items() if lr != "bad"}
    assert after == before
    data = store.load_sweep_json(sweep_dir)
    assert len(data["launches"]) == 3 and data["launches"][-1]["retry_failed"] is True
