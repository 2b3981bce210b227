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


def run_two_processes(workdir):
    port = free_port()
    procs = [subprocess.Popen(base_cmd(workdir, "(2,2,1)") + [
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
