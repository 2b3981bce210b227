"""Kill the launcher (and its worker) mid-sweep with SIGKILL, relaunch: every run ends done exactly
once, finished runs are not retrained, the interrupted run resumes its curve from its checkpoint,
and the results table has no duplicate rows."""

import json
import os
import signal
import subprocess
import time

import pandas as pd

from lmjax.logging import read_metrics
from lmjax.sweep import store
from lmjax.sweep.results import collect
from lmjax.sweep.launcher import LaunchOptions, launch
from lmjax.sweep.local import LocalOptions
from sweep_helpers import ROOT, lmjax_cmd, one_device_env, write_sweep

STEPS = 300


def _checkpoints(run):
    d = os.path.join(run, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _states(runs):
    return {r: (os.path.isfile(os.path.join(r, "summary.json"))
                and json.load(open(os.path.join(r, "summary.json")))["status"] == "done") for r in runs}


def test_kill_launcher_mid_sweep_then_relaunch(tmp_path):
    # three runs of one program (they differ only in their unique-data budget), one worker: they run in turn
    path = write_sweep(tmp_path, name="kill", unique=(0, 40_000, 60_000), steps=STEPS, ckpt=20, eval_every=100)
    sweep_dir = str(tmp_path / "sweep")
    proc = subprocess.Popen(lmjax_cmd("sweep", "launch", path, "--dir", sweep_dir, "--workers", "1"),
                            env=one_device_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    runs, victim, deadline = [], None, time.time() + 240
    try:
        while time.time() < deadline and victim is None:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            if not runs and os.path.isfile(os.path.join(sweep_dir, "sweep.json")):
                runs = [os.path.join(sweep_dir, r["dir"]) for r in store.load_sweep_json(sweep_dir)["runs"]]
            done = _states(runs)
            if any(done.values()):
                # a run in the middle: it has a checkpoint but is not finished
                for r in runs:
                    if not done[r] and _checkpoints(r) and _checkpoints(r)[-1] < STEPS - 40:
                        victim = r
            time.sleep(0.02)
        assert victim is not None, "never caught a run in the middle"
        before_done = {r: open(os.path.join(r, "summary.json")).read() for r, d in _states(runs).items() if d}
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its worker die at once, no clean-up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for _ in range(100):  # the kernel releases the flocks of dead processes
        if not any(store.is_locked(r) for r in runs):
            break
        time.sleep(0.1)
    ckpt_step = _checkpoints(victim)[-1]
    curve_before = [rec for rec in read_metrics(victim) if rec["step"] <= ckpt_step]
    assert 0 < ckpt_step < STEPS and store.run_state(victim)["state"] == "pending"

    lines = []
    out = launch(path, sweep_dir, LaunchOptions(backend="local", local=LocalOptions(workers=1)),
                 report=lambda m, **k: lines.append(str(m)))
    assert out["states"]["done"] == 3 and out["tasks"] == 3 - len(before_done)
    for r, text in before_done.items():  # finished before the kill: not trained again
        assert open(os.path.join(r, "summary.json")).read() == text
    for r in runs:
        steps = [rec["step"] for rec in read_metrics(r)]
        assert steps == sorted(set(steps)) and steps[-1] == STEPS, (r, steps)
        assert json.load(open(os.path.join(r, "summary.json")))["steps"] == STEPS
    # the interrupted run continued its curve from its checkpoint
    after = read_metrics(victim)
    assert after[:len(curve_before)] == curve_before
    log = open(os.path.join(sweep_dir, "logs", "worker-0.log")).read()
    assert f"{victim}: resuming from step {ckpt_step}" in log
    df = collect(sweep_dir)
    csv = pd.read_csv(os.path.join(sweep_dir, "results.csv"))
    assert not csv.duplicated(["run", "step"]).any() and len(csv) == len(df) == 3 * 3
    assert csv.groupby("run")["final"].sum().eq(1).all()
