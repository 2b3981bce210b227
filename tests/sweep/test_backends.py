"""The slurm and tpu backends' dry runs (exact sbatch script / SkyPilot task files and commands),
slurm through submitit's local executor, and the lock that keeps two launchers off one run."""

import json
import os
import subprocess
import sys
import time

import pytest

from lmjax.cli import main as cli_main
from lmjax.errors import ConfigError
from lmjax.sweep import store, worker
from lmjax.sweep.launcher import LaunchOptions, launch
from lmjax.sweep.slurm import SlurmOptions
from lmjax.sweep.tpu import TpuOptions
from sweep_helpers import write_sweep

QUIET = lambda m, **k: None  # noqa: E731


def test_slurm_dry_run_writes_the_array_script(tmp_path, capsys):
    path = write_sweep(tmp_path, name="sl", unique=(0, 40_000, 60_000))
    d = str(tmp_path / "sweep")
    argv = ["sweep", "launch", path, "--dir", d, "--backend", "slurm", "--dry-run", "--slurm-partition", "gpu",
            "--slurm-nodes", "2", "--slurm-gpus-per-node", "4", "--slurm-time", "30", "--slurm-array-parallelism",
            "2", "--slurm-setup", "source venv/bin/activate", "--slurm-param", "mail_type=END"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    script = open(os.path.join(d, "slurm", "dry-run", "array.sbatch")).read()
    assert script.strip() in printed
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu",
                 "#SBATCH --time=30", "#SBATCH --ntasks-per-node=1", "#SBATCH --job-name=sl", "#SBATCH --mail-type=END",
                 "source venv/bin/activate"):
        assert line in script, line
    assert f"-m submitit.core._submit {os.path.abspath(d)}/slurm/%j" in script and script.startswith("#!/bin/bash")
    tasks = json.load(open(os.path.join(d, "slurm", "dry-run", "tasks.json")))
    runs = {os.path.join(os.path.abspath(d), r["dir"]) for r in store.load_sweep_json(d)["runs"]}
    assert [t["array_index"] for t in tasks] == [0, 1, 2]
    assert {t["dirs"][0] for t in tasks} == runs
    assert all("distributed='submitit'" in t["call"] and "submitit_task" in t["call"] for t in tasks)
    for r in runs:  # the tasks will train from the launch configs written now
        assert os.path.isfile(os.path.join(r, store.LAUNCH_CONFIG))
        assert store.run_state(r)["state"] == "pending"


def test_tpu_dry_run_writes_skypilot_tasks(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    path = write_sweep(tmp_path, name="tp", unique=(0, 40_000, 60_000))
    d = str(tmp_path / "sweep")
    opts = LaunchOptions(backend="tpu", dry_run=True,
                         tpu=TpuOptions(bucket="gs://my-bucket/sweeps/tp", accelerator="tpu-v5litepod-16",
                                        runs_per_job=2, runtime_version="v2-alpha-tpuv5-lite"))
    out = launch(path, d, opts)
    printed = capsys.readouterr().out
    assert len(out["files"]) == 2 and len(out["commands"]) == 3
    assert out["commands"][0].startswith("gcloud storage rsync --recursive") and "gs://my-bucket/sweeps/tp" in out["commands"][0]
    names = sorted(r["dir"] for r in store.load_sweep_json(d)["runs"])
    seen = []
    for i, f in enumerate(out["files"]):
        assert out["commands"][i + 1] == f"sky jobs launch --yes --async --name lmjax-tp-{i:04d} {f}"
        assert out["commands"][i + 1] in printed
        task = yaml.safe_load(open(f))
        assert task["name"] == f"lmjax-tp-{i:04d}"
        res = task["resources"]
        assert res["accelerators"] == "tpu-v5litepod-16" and res["use_spot"] is True
        assert res["accelerator_args"] == {"runtime_version": "v2-alpha-tpuv5-lite"}
        assert res["job_recovery"]["strategy"] == "FAILOVER"
        assert task["file_mounts"]["/lmjax-sweep"] == {"source": "gs://my-bucket/sweeps/tp", "mode": "MOUNT"}
        for line in task["run"].strip().splitlines():
            assert line.startswith("python -m lmjax.sweep.worker --distributed tpu --root /lmjax-sweep ")
            seen += line.split()[7:]
        assert "pip install" in task["setup"]
    assert sorted(seen) == names  # every run in exactly one job
    with pytest.raises(ConfigError):
        launch(path, d, LaunchOptions(backend="tpu", dry_run=True), report=QUIET)  # no bucket


def test_local_dry_run_prints_worker_commands(tmp_path, capsys):
    path = write_sweep(tmp_path, name="lo", unique=(0, 40_000))
    assert cli_main(["sweep", "launch", path, "--dir", str(tmp_path / "s"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("-m lmjax.sweep.worker") == 2


def test_slurm_backend_with_submitit_local_executor(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # what the jobs inherit
    path = write_sweep(tmp_path, name="sub", unique=(0, 40_000), steps=20)  # the same programs as test_local
    d = str(tmp_path / "sweep")
    opts = LaunchOptions(backend="slurm", slurm=SlurmOptions(cluster="local", wait=True, time_min=10))
    out = launch(path, d, opts, report=QUIET)
    assert len(out["job_ids"]) == 2 and out["cluster"] == "local"
    assert sorted(r["status"] for r in out["results"]) == ["done", "done"]
    assert out["states"]["done"] == 2
    data = store.load_sweep_json(d)
    assert data["launch"]["backend"] == "slurm" and data["launch"]["slurm"]["cluster"] == "local"


def test_lock_keeps_a_second_launcher_off_a_run(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(run)
    holder = subprocess.Popen([sys.executable, "-c",  # holds the lock as a worker does (flock on runs/<name>/.lock)
                               "import fcntl, os, sys, time; fd = os.open(os.path.join(sys.argv[1], '.lock'), "
                               "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); "
                               "print('locked', flush=True); time.sleep(60)", run], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.is_locked(run) and store.run_state(run)["state"] == "running"
        assert not store.RunLock(run).acquire()
        results = worker.run_task([run])  # a second launcher's worker leaves the run alone
        assert [r["status"] for r in results] == ["busy"]
    finally:
        holder.kill()
        holder.wait()
    for _ in range(50):
        if not store.is_locked(run):
            break
        time.sleep(0.05)
    lock = store.RunLock(run)
    assert lock.acquire()  # a dead holder's lock is free
    owner = json.load(open(os.path.join(run, store.OWNER)))
    assert owner["pid"] == os.getpid()
    lock.release()
    assert not os.path.exists(os.path.join(run, store.OWNER))
