"""Two processes on localhost (2 CPU devices each, gloo) train on a (data=2, fsdp=2) mesh, resume,
and match a one-process run."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from lmjax.logging import read_metrics

# Minutes of compiles on 2 cores: part of `make test-slow` (issue 5's acceptance tests).
pytestmark = pytest.mark.slow

OVERRIDES = ["--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=2",
             "--config.model.context=32", "--config.train.batch_size=8", "--config.train.steps=10",
             "--config.train.log_every=1", "--config.train.eval_every=5", "--config.train.eval_batches=2",
             "--config.train.checkpoint_every=5", "--config.optim.warmup_steps=3", "--config.log.wandb=disabled"]


def base_cmd(workdir, mesh):
    return [sys.executable, "-m", "lmjax", "train", "--config", "configs/train/shakespeare_char.py",
            "--workdir", str(workdir), *OVERRIDES, f"--config.mesh.shape={mesh}"]


def env(devices):
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, *extra):
    port = free_port()
    procs = [subprocess.Popen(base_cmd(workdir, "(2,2,1)") + list(extra) + [
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]


def losses(workdir):
    return [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in read_metrics(str(workdir))]


def test_two_processes_train_checkpoint_resume_match_one_process(tmp_path):
    ref = tmp_path / "ref"
    out = subprocess.run(base_cmd(ref, "(1,1,1)"), env=env(1), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    multi = tmp_path / "multi"
    run_two_processes(multi)
    got, want = losses(multi), losses(ref)
    assert [g[0] for g in got] == list(range(1, 11))
    for g, w in zip(got, want):
        assert g[0] == w[0]
        np.testing.assert_allclose([x for x in g[1:] if x is not None], [x for x in w[1:] if x is not None],
                                   rtol=1e-5)
    # only process 0 wrote the run files
    assert len(read_metrics(str(multi))) == 10

    # Lose everything after step 5 (as after a crash) and resume with two processes again.
    shutil.rmtree(multi / "checkpoints" / "10")
    os.remove(multi / "summary.json")
    run_two_processes(multi)
    resumed = losses(multi)
    assert [r[0] for r in resumed] == list(range(1, 11))
    for g, w in zip(resumed, want):
        np.testing.assert_allclose([x for x in g[1:] if x is not None], [x for x in w[1:] if x is not None],
                                   rtol=1e-5)


def test_sigterm_on_one_host_stops_both_at_the_same_step_and_resumes(tmp_path):
    """A preemption notice reaches one process only: both agree on a step (JAX's preemption sync
    manager), save one checkpoint together and exit 0 as 'preempted'; re-running finishes the run
    on the one-process trajectory."""
    import json
    import signal
    import time

    steps = ["--config.train.steps=400", "--config.train.checkpoint_every=1000", "--config.train.eval_every=0"]
    ref = tmp_path / "ref"
    out = subprocess.run(base_cmd(ref, "(1,1,1)") + steps, env=env(1), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    multi = tmp_path / "multi"
    port = free_port()
    procs = [subprocess.Popen(base_cmd(multi, "(2,2,1)") + steps + [
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 240
    while time.time() < deadline and len(read_metrics(str(multi)) if (multi / "metrics.jsonl").exists() else []) < 5:
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # the non-coordinator host only
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["status"] == "preempted" and 5 <= summary["steps"] < 400
    assert sorted(os.listdir(multi / "checkpoints")) == [str(summary["steps"])]

    os.remove(multi / "summary.json")
    run_two_processes(multi, *steps)
    got, want = losses(multi), losses(ref)
    assert [g[0] for g in got] == [w[0] for w in want] == list(range(1, 401))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[1], w[1], rtol=1e-5)
