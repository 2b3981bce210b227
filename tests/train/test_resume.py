"""Exact resume: SIGKILL at a random step, SIGTERM preemption, identical trajectories."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lmjax.logging import read_metrics

OVERRIDES = ["--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
             "--config.model.context=32", "--config.train.batch_size=8", "--config.train.steps=30",
             "--config.train.log_every=1", "--config.train.eval_every=10", "--config.train.eval_batches=2",
             "--config.train.checkpoint_every=5", "--config.optim.warmup_steps=5", "--config.log.wandb=disabled"]


def cmd(workdir):
    return [sys.executable, "-m", "lmjax", "train", "--config", "configs/train/shakespeare_char.py",
            "--workdir", str(workdir), *OVERRIDES]


def env():
    e = dict(os.environ)
    e["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return e


def start(workdir):
    return subprocess.Popen(cmd(workdir), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_step(proc, workdir, step, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        recs = read_metrics(str(workdir))
        if recs and recs[-1]["step"] >= step:
            return recs[-1]["step"]
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for training")


def finish(workdir):
    out = subprocess.run(cmd(workdir), env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def final_params(workdir):
    from lmjax.train.loop import restore_params

    _, _, _, params, step = restore_params(str(workdir))
    return step, jax.tree.map(np.asarray, jax.device_get(params))


def curve(workdir):
    keep = ("step", "train_loss", "lr", "grad_norm", "val_loss", "tokens", "flops")
    return [{k: r[k] for k in keep if k in r} for r in read_metrics(str(workdir))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ref") / "run"
    summary = finish(workdir)
    assert summary["status"] == "done" and summary["steps"] == 30
    return workdir


def assert_same_run(workdir, ref):
    step, params = final_params(workdir)
    ref_step, ref_params = final_params(ref)
    assert step == ref_step == 30
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        np.testing.assert_array_equal(a, b)  # bitwise
    assert curve(workdir) == curve(ref)
    steps = [r["step"] for r in read_metrics(str(workdir))]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no duplicated records after the resume


def test_sigkill_at_random_step_then_resume_is_bitwise_identical(tmp_path, uninterrupted):
    kill_at = random.Random().randint(2, 27)  # also before the first checkpoint (step 5) completes
    print(f"killing at step >= {kill_at}")
    workdir = tmp_path / "run"
    proc = start(workdir)
    wait_for_step(proc, workdir, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(workdir / "summary.json")
    summary = finish(workdir)
    assert summary["status"] == "done"
    assert_same_run(workdir, uninterrupted)


def test_sigterm_saves_checkpoint_and_resume_matches(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    proc = start(workdir)
    wait_for_step(proc, workdir, 12)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "preempted" and 12 <= summary["steps"] < 30
    ckpts = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert ckpts[-1] == summary["steps"]
    assert finish(workdir)["status"] == "done"
    assert_same_run(workdir, uninterrupted)
    # running again on a finished run changes nothing
    before = (workdir / "metrics.jsonl").read_text()
    assert finish(workdir)["steps"] == 30
    assert (workdir / "metrics.jsonl").read_text() == before
