"""Full-budget acceptance runs (minutes each on 2 cores): `make test-slow`."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def run(name, tmp_path):
    """`lmjax train` on one CPU device (the test session forces 8), as a user would run it."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    workdir = tmp_path / name
    out = subprocess.run([sys.executable, "-m", "lmjax", "train", "--config", f"configs/train/{name}.py",
                          "--workdir", str(workdir), "--config.log.wandb=disabled"],
                         env=env, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads((workdir / "summary.json").read_text())


def unigram_entropy_nats():
    from lmjax.data.sources import embedded_text, split_text

    _, val = split_text(embedded_text(), 0.1)
    _, counts = np.unique(np.frombuffer(val.encode("utf-32-le"), np.uint32), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_baby_transformer_reaches_nanogpt_loss(tmp_path):
    s = run("shakespeare_char", tmp_path)
    assert s["steps"] == 2000 and s["final_val_loss"] <= 1.90, s


def test_lstm_reaches_target(tmp_path):
    s = run("shakespeare_char_lstm", tmp_path)
    assert 0.7e6 < s["params_total"] < 0.9e6
    assert s["final_val_loss"] <= 1.75, s


@pytest.mark.parametrize("family", ["gru", "rnn", "ffnn"])
def test_every_family_beats_the_unigram(tmp_path, family):
    s = run(f"shakespeare_char_{family}", tmp_path)
    assert s["final_val_loss"] < unigram_entropy_nats(), s
    assert math.isfinite(s["final_val_bpb"])
