"""Vmapped training: the same losses as separate runs (within 1e-5), the same run files, checkpoints
the normal loop can restore, and grouping of the runs that can share one program."""

import json
import os

import jax
import numpy as np
import pytest

from lmjax.logging import read_metrics
from lmjax.sweep import spec, store, vmap_train
from lmjax.sweep.launcher import LaunchOptions, launch, make_tasks
from lmjax.sweep.local import LocalOptions
from sweep_helpers import write_sweep

TOL = 1e-5


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same 4 runs (2 learning rates x 2 lengths) launched one by one and as one vmapped group."""
    tmp = tmp_path_factory.mktemp("vmap")
    path = write_sweep(tmp, name="vm", lrs=(1e-3, 2e-3), steps_axis=(20, 15), eval_every=5)
    quiet = lambda m, **k: None  # noqa: E731
    sep, vm = str(tmp / "separate"), str(tmp / "vmapped")
    a = launch(path, sep, LaunchOptions(backend="local", vmap=False, local=LocalOptions(workers=1)), report=quiet)
    b = launch(path, vm, LaunchOptions(backend="local", vmap=True, local=LocalOptions(workers=1)), report=quiet)
    assert a["tasks"] == 4 and b["tasks"] == 1  # the vmapped launch trained the 4 runs as one group
    assert a["states"]["done"] == b["states"]["done"] == 4
    names = [r["name"] for r in store.load_sweep_json(sep)["runs"]]
    return sep, vm, names


def test_vmapped_losses_equal_separate_runs(both):
    sep, vm, names = both
    worst = 0.0
    for name in names:
        a = read_metrics(os.path.join(sep, "runs", name))
        b = read_metrics(os.path.join(vm, "runs", name))
        assert [r["step"] for r in a] == [r["step"] for r in b]
        assert sum("val_loss" in r for r in b) >= 3
        for ra, rb in zip(a, b):
            for key in ("train_loss", "val_loss", "val_bpb", "lr"):
                if key in ra:
                    assert abs(ra[key] - rb[key]) <= TOL, (name, ra["step"], key, ra[key], rb[key])
                    worst = max(worst, abs(ra[key] - rb[key]))
            assert ra["tokens"] == rb["tokens"] and ra["flops"] == rb["flops"]
    print(f"largest loss difference {worst:.2e}")


def test_vmapped_run_directories_match_the_loops(both):
    sep, vm, names = both
    for name in names:
        a_dir, b_dir = os.path.join(sep, "runs", name), os.path.join(vm, "runs", name)
        assert sorted(set(os.listdir(a_dir)) - {"attempts"}) == sorted(os.listdir(b_dir))
        ca, cb = (json.load(open(os.path.join(d, "config.json"))) for d in (a_dir, b_dir))
        assert ca == cb
        sa, sb = (json.load(open(os.path.join(d, "summary.json"))) for d in (a_dir, b_dir))
        assert sb["vmap_group"] == 4 and sa["steps"] == sb["steps"] == ca["train"]["steps"]
        assert set(sa) <= set(sb) and sb["status"] == "done"
        assert abs(sa["final_val_loss"] - sb["final_val_loss"]) <= TOL


def test_vmapped_checkpoints_restore_in_the_normal_loop(both):
    from lmjax.train.loop import restore_params

    sep, vm, names = both
    name = names[0]
    _, _, _, pa, sa = restore_params(os.path.join(sep, "runs", name))
    _, _, _, pb, sb = restore_params(os.path.join(vm, "runs", name))
    assert sa == sb
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-4)


def test_grouping(sweep_file):
    path = sweep_file(name="grp", widths=(16, 24), lrs=(1e-3, 2e-3), steps_axis=(10, 20), seeds=(0, 1))
    pts = spec.finalize(spec.load_sweep(path))
    cfgs = [p.config for p in pts]
    groups = vmap_train.groups(cfgs)
    assert sorted(len(g) for g in groups) == [8, 8]  # one program per width
    for g in groups:
        assert len({cfgs[i].model.d_model for i in g}) == 1
        assert [cfgs[i].train.steps for i in g] == sorted(cfgs[i].train.steps for i in g)
    assert sorted(len(g) for g in vmap_train.groups(cfgs, max_size=3)) == [2, 2, 3, 3, 3, 3]
    tasks = make_tasks(pts, "/x", vmap=True, vmap_max=8, retry_failed=False)
    assert len(tasks) == 2 and all(t["vmap"] and len(t["dirs"]) == 8 for t in tasks)
    assert len(make_tasks(pts, "/x", vmap=False, vmap_max=8, retry_failed=False)) == 16
    other = cfgs[0].__class__(**{**cfgs[0].__dict__,
                                 "optim": cfgs[0].optim.__class__(**{**cfgs[0].optim.__dict__, "b2": 0.95})})
    assert vmap_train.group_key(other) != vmap_train.group_key(cfgs[0])


def test_a_diverging_run_leaves_its_vmapped_group_early(tmp_path):
    """lr 1e4 diverges: that run stops at its first non-finite logged loss (failed, with the reason,
    no checkpoint of the diverged state); the other run of the group trains to its end."""
    path = write_sweep(tmp_path, name="vmdiv", lrs=(1e-3, 1e4), steps=20, eval_every=10, clip=0.0, vmap=True)
    out = launch(path, str(tmp_path / "sw"), LaunchOptions(backend="local", local=LocalOptions(workers=1)),
                 report=lambda m, **k: None)
    assert out["tasks"] == 1 and out["states"]["done"] == 1 and out["states"]["failed"] == 1
    for r in store.load_sweep_json(str(tmp_path / "sw"))["runs"]:
        d = os.path.join(str(tmp_path / "sw"), r["dir"])
        s = json.load(open(os.path.join(d, "summary.json")))
        if r["config"]["optim"]["lr"] == 1e4:
            assert s["status"] == "diverged" and s["steps"] < 20 and s["vmap_group"] == 2
            assert "non-finite" in json.load(open(os.path.join(d, store.FAILED)))["reason"]
            assert all(int(c) < s["steps"] for c in os.listdir(os.path.join(d, "checkpoints")))
        else:
            assert s["status"] == "done" and s["steps"] == 20


CHILD = """
import sys
from lmjax.sweep import spec, vmap_train
pts = spec.finalize(spec.load_sweep(sys.argv[1]))
vmap_train.train_group([p.config for p in pts], sys.argv[2:], announce=lambda m: None)
"""


def test_sigterm_preempts_a_vmapped_group_and_it_resumes_on_its_trajectory(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from sweep_helpers import ROOT, one_device_env

    path = write_sweep(tmp_path, name="vmterm", lrs=(1e-3, 2e-3), steps=300, eval_every=0, ckpt=1000, vmap=True)
    run = lambda dirs: [sys.executable, "-c", CHILD, path, *map(str, dirs)]  # noqa: E731
    ref = [tmp_path / "ref0", tmp_path / "ref1"]
    subprocess.run(run(ref), env=one_device_env(), cwd=ROOT, check=True, timeout=240)

    dirs = [tmp_path / "a0", tmp_path / "a1"]
    proc = subprocess.Popen(run(dirs), env=one_device_env(), cwd=ROOT)
    deadline = time.time() + 200
    while time.time() < deadline and not (
            (dirs[0] / "metrics.jsonl").exists() and len(read_metrics(str(dirs[0]))) >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    stopped = [json.load(open(d / "summary.json")) for d in dirs]
    assert [s["status"] for s in stopped] == ["preempted"] * 2 and stopped[0]["steps"] == stopped[1]["steps"] < 300
    assert os.listdir(dirs[0] / "checkpoints") == [str(stopped[0]["steps"])]

    subprocess.run(run(dirs), env=one_device_env(), cwd=ROOT, check=True, timeout=240)
    for d, r in zip(dirs, ref):
        assert json.load(open(d / "summary.json"))["status"] == "done"
        got, want = read_metrics(str(d)), read_metrics(str(r))
        assert [g["step"] for g in got] == [w["step"] for w in want]
        for g, w in zip(got, want):
            assert abs(g["train_loss"] - w["train_loss"]) <= TOL
