"""The TPU backend: Cloud TPU VMs through SkyPilot managed jobs (``sky jobs launch``).

Why SkyPilot managed jobs rather than ``gcloud compute tpus queued-resources`` + ``tpu-vm ssh
--worker=all``: a managed job provisions the slice (queueing and failing over across zones),
runs the task's commands on every host of a multi-host slice, and, when a spot/preemptible slice
is preempted, provisions a new one and runs the same command again, which resumes every run from
its last checkpoint (the worker skips finished runs). With queued resources the preempted
resource stays dead and a watcher of our own would have to recreate it and re-ssh; that is the
part SkyPilot already does (and tests). See docs/sweeps.md.

Each job is one task YAML (DIR/tpu/<job>.yaml): ``file_mounts`` mounts the bucket holding the
sweep directory at /lmjax-sweep, ``setup`` installs lmjax, ``run`` starts on every host:

    python -m lmjax.sweep.worker --distributed tpu --root /lmjax-sweep runs/<name> ...

(jax.distributed.initialize() finds the slice's hosts by itself on Cloud TPU VMs; on a single-host
slice it is a no-op). ``--dry-run`` writes the YAMLs and prints the exact commands.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess

MOUNT = "/lmjax-sweep"


@dataclasses.dataclass
class TpuOptions:
    accelerator: str = "tpu-v5litepod-8"
    bucket: str = ""  # gs://bucket/path holding the sweep directory (required)
    infra: str = "gcp"  # SkyPilot infra: gcp, gcp/us-central1, gcp/us-central2/us-central2-b
    runtime_version: str = ""  # TPU software version (accelerator_args.runtime_version)
    spot: bool = True
    max_restarts_on_errors: int = 1  # extra restarts when the command itself fails
    runs_per_job: int = 1  # grid points trained one after another by one job (one slice)
    workdir: str = "."  # the lmjax checkout synced to the VMs
    setup: str = "pip install -q -e '.[test]' 'jax[tpu]'"
    sync: bool = True  # upload the sweep directory to the bucket before launching

    def check(self) -> None:
        from lmjax.errors import ConfigError

        if not self.bucket.startswith("gs://"):
            raise ConfigError("the tpu backend needs --tpu-bucket gs://BUCKET/PATH (where the sweep directory lives)")


def _yaml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if s == "" or any(c in s for c in ":#{}[],&*!|>'\"%@`") or s.strip() != s:
        return "'" + s.replace("'", "''") + "'"
    return s


def to_yaml(obj, indent: int = 0) -> str:
    """A small YAML writer for the task files (dicts, lists, scalars; multi-line strings as blocks)."""
    pad = "  " * indent
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(to_yaml(value, indent + 1))
        elif isinstance(value, str) and "\n" in value:
            lines.append(f"{pad}{key}: |")
            lines += [f"{pad}  {line}" if line else "" for line in value.rstrip("\n").split("\n")]
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}:")
            lines += [f"{pad}  - {_yaml_scalar(v)}" for v in value]
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(value)}")
    return "\n".join(lines)


def job_name(sweep_name: str, index: int) -> str:
    base = "".join(c if c.isalnum() else "-" for c in sweep_name.lower()).strip("-") or "sweep"
    return f"lmjax-{base[:40]}-{index:04d}"


def task_spec(sweep_dir: str, sweep_name: str, index: int, tasks: list[dict], opts: TpuOptions) -> dict:
    """The SkyPilot task (as a dict) that trains ``tasks`` one after another on one slice."""
    root = os.path.abspath(sweep_dir)
    lines = []
    for t in tasks:
        rel = [os.path.relpath(os.path.abspath(d), root) for d in t["dirs"]]
        flags = (" --vmap" if t["vmap"] else "") + (" --retry-failed" if t["retry_failed"] else "")
        lines.append(f"python -m lmjax.sweep.worker --distributed tpu --root {MOUNT}{flags} "
                     + " ".join(shlex.quote(r) for r in rel))
    resources = {"infra": opts.infra, "accelerators": opts.accelerator, "use_spot": opts.spot,
                 "job_recovery": {"strategy": "FAILOVER", "max_restarts_on_errors": opts.max_restarts_on_errors}}
    if opts.runtime_version:
        resources["accelerator_args"] = {"runtime_version": opts.runtime_version}
    return {
        "name": job_name(sweep_name, index),
        "workdir": opts.workdir,
        "resources": resources,
        "file_mounts": {MOUNT: {"source": opts.bucket.rstrip("/"), "mode": "MOUNT"}},
        "envs": {"LMJAX_CACHE": f"{MOUNT}/.cache", "WANDB_MODE": "offline"},
        "setup": "set -e\n" + opts.setup + "\n",
        # every host of the slice runs the same commands (one process per host); a restarted job
        # (after a preemption) runs them again: finished runs are skipped, others resume. No
        # `set -e`: a failed run is recorded in its failed.json and the next line goes on.
        "run": "\n".join(lines) + "\n",
    }


def plan(sweep_dir: str, sweep_name: str, tasks: list[dict], opts: TpuOptions) -> tuple[list[str], list[tuple]]:
    """(commands, [(yaml path, yaml text)]) that launch the sweep."""
    opts.check()
    out_dir = os.path.join(sweep_dir, "tpu")
    per = max(1, opts.runs_per_job)
    chunks = [tasks[i:i + per] for i in range(0, len(tasks), per)]
    files, commands = [], []
    if opts.sync:
        commands.append(f"gcloud storage rsync --recursive --exclude='^(tpu|logs|slurm)/' "
                        f"{shlex.quote(os.path.abspath(sweep_dir))} {shlex.quote(opts.bucket.rstrip('/'))}")
    for i, chunk in enumerate(chunks):
        spec = task_spec(sweep_dir, sweep_name, i, chunk, opts)
        path = os.path.join(out_dir, f"{spec['name']}.yaml")
        files.append((path, to_yaml(spec) + "\n"))
        commands.append(f"sky jobs launch --yes --async --name {spec['name']} {shlex.quote(path)}")
    return commands, files


def launch(sweep_dir: str, sweep_name: str, tasks: list[dict], opts: TpuOptions, report, *, dry_run: bool) -> dict:
    commands, files = plan(sweep_dir, sweep_name, tasks, opts)
    os.makedirs(os.path.join(sweep_dir, "tpu"), exist_ok=True)
    for path, text in files:
        with open(path, "w") as f:
            f.write(text)
    if dry_run:
        report(f"# dry run: {len(files)} SkyPilot managed job(s) for {len(tasks)} task(s)")
        for path, text in files:
            report(f"# {path}")
            report(text.rstrip())
        report("# commands")
        for c in commands:
            report(c)
        return {"commands": commands, "files": [p for p, _ in files]}
    if shutil.which("sky") is None:
        from lmjax.errors import LmjaxError

        raise LmjaxError("the tpu backend needs SkyPilot (pip install 'skypilot[gcp]'; sky check); "
                         "--dry-run shows the commands it would run")
    for c in commands:
        report(f"$ {c}")
        subprocess.run(c, shell=True, check=True)
    report(f"launched {len(files)} managed job(s); watch with `sky jobs queue`; then sync the bucket back "
           f"(gcloud storage rsync --recursive {opts.bucket} {sweep_dir}) for status / collect")
    return {"commands": commands, "files": [p for p, _ in files]}
