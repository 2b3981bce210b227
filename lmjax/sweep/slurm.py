"""The SLURM backend, through submitit: one array job, one grid point (or vmapped group) per task.

Each array task calls ``lmjax.sweep.worker.submitit_task(dirs)``: it takes the run's lock, trains
(resuming from checkpoints) and records failures, exactly like a local worker. A run that spans
several nodes (``--slurm-nodes N``, one task per node) starts jax.distributed from submitit's job
environment (the SLURM variables), with process 0 on the first node as the coordinator.

Submission returns at once (the job ids are recorded in sweep.json); ``--wait`` blocks until the
array finishes. ``--slurm-cluster local`` uses submitit's local executor (processes on this
machine) for testing; ``--dry-run`` writes and prints the sbatch script and the task table
without submitting anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys


@dataclasses.dataclass
class SlurmOptions:
    cluster: str = "slurm"  # slurm | local | debug (submitit executors)
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    mem_gb: float = 0.0
    array_parallelism: int = 64
    constraint: str = ""
    setup: tuple = ()  # shell lines run before the task (module load, venv activation)
    additional: dict = dataclasses.field(default_factory=dict)  # other sbatch parameters
    wait: bool = False

    def executor_parameters(self, name: str) -> dict:
        """Parameters for submitit.AutoExecutor.update_parameters."""
        p = {"name": name, "timeout_min": self.time_min, "nodes": self.nodes, "tasks_per_node": 1,
             "slurm_array_parallelism": self.array_parallelism}
        if self.gpus_per_node:
            p["gpus_per_node"] = self.gpus_per_node
        if self.cpus_per_task:
            p["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb:
            p["mem_gb"] = self.mem_gb
        slurm_only = {"slurm_partition": self.partition, "slurm_account": self.account, "slurm_qos": self.qos,
                      "slurm_constraint": self.constraint, "slurm_setup": list(self.setup)}
        p.update({k: v for k, v in slurm_only.items() if v})
        if self.additional:
            p["slurm_additional_parameters"] = dict(self.additional)
        return p


def import_submitit():
    """Import submitit without its logging.config.dictConfig, which closes every handler already
    configured in this process (absl's included, and with it the stream it writes to)."""
    if "submitit" not in sys.modules:
        old = os.environ.get("SUBMITIT_LOG_LEVEL")
        os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
        try:
            import submitit  # noqa: F401
        finally:
            if old is None:
                os.environ.pop("SUBMITIT_LOG_LEVEL", None)
            else:
                os.environ["SUBMITIT_LOG_LEVEL"] = old
        log = logging.getLogger("submitit")
        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setLevel(logging.WARNING)
            log.addHandler(handler)
    import submitit

    return submitit


def sbatch_parameters(opts: SlurmOptions, name: str) -> dict:
    """The same settings in submitit's sbatch vocabulary (for the dry run)."""
    p = {"job_name": name, "time": opts.time_min, "nodes": opts.nodes, "ntasks_per_node": 1,
         "array_parallelism": opts.array_parallelism}
    for key, value in (("partition", opts.partition), ("account", opts.account), ("qos", opts.qos),
                       ("constraint", opts.constraint), ("gpus_per_node", opts.gpus_per_node),
                       ("cpus_per_task", opts.cpus_per_task)):
        if value:
            p[key] = value
    if opts.mem_gb:
        p["mem"] = f"{int(opts.mem_gb)}GB"
    if opts.setup:
        p["setup"] = list(opts.setup)
    if opts.additional:
        p["additional_parameters"] = dict(opts.additional)
    return p


def _folder(sweep_dir: str) -> str:
    return os.path.join(os.path.abspath(sweep_dir), "slurm", "%j")


def dry_run(sweep_dir: str, name: str, tasks: list[dict], opts: SlurmOptions, report) -> dict:
    """Write DIR/slurm/dry-run/{array.sbatch, tasks.json} and print them; submit nothing."""
    import_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    folder = _folder(sweep_dir)
    python = shlex.quote(sys.executable)
    command = f"{python} -u -m submitit.core._submit {shlex.quote(folder)}"
    script = _make_sbatch_string(command=command, folder=folder, map_count=len(tasks),
                                 **sbatch_parameters(opts, name))
    table = [{"array_index": i, "dirs": [os.path.abspath(d) for d in t["dirs"]], "vmap": t["vmap"],
              "call": _call_repr(t, opts)} for i, t in enumerate(tasks)]
    out = os.path.join(sweep_dir, "slurm", "dry-run")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "array.sbatch"), "w") as f:
        f.write(script)
    with open(os.path.join(out, "tasks.json"), "w") as f:
        json.dump(table, f, indent=2)
    report(f"# dry run: {len(tasks)} array task(s); sbatch script {os.path.join(out, 'array.sbatch')}")
    report(script.rstrip())
    report("# array index -> task (each task runs lmjax.sweep.worker.submitit_task)")
    for row in table:
        report(f"{row['array_index']}\t{row['call']}")
    report(f"$ sbatch {os.path.join(out, 'array.sbatch')}   # what submitit runs (after pickling the tasks)")
    return {"script": script, "tasks": table}


def _call_repr(task: dict, opts: SlurmOptions) -> str:
    dist = "submitit" if opts.nodes > 1 else "none"
    dirs = ", ".join(repr(os.path.abspath(d)) for d in task["dirs"])
    return (f"lmjax.sweep.worker.submitit_task([{dirs}], vmap={task['vmap']}, "
            f"retry_failed={task['retry_failed']}, distributed={dist!r})")


def submit(sweep_dir: str, name: str, tasks: list[dict], opts: SlurmOptions, report) -> dict:
    from lmjax.sweep import worker

    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=_folder(sweep_dir), cluster=opts.cluster)
    params = opts.executor_parameters(name)
    if executor.cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        if executor.cluster == "local":
            params.pop("gpus_per_node", None)
    executor.update_parameters(**params)
    dist = "submitit" if opts.nodes > 1 else "none"
    jobs = executor.map_array(worker.submitit_task, [t["dirs"] for t in tasks], [t["vmap"] for t in tasks],
                              [t["retry_failed"] for t in tasks], [dist] * len(tasks))
    ids = [j.job_id for j in jobs]
    report(f"submitted {len(jobs)} task(s) to {executor.cluster}: job ids {', '.join(ids[:5])}"
           f"{' ...' if len(ids) > 5 else ''}; logs in {os.path.dirname(_folder(sweep_dir))}")
    out = {"job_ids": ids, "cluster": executor.cluster}
    if opts.wait:
        results = []
        for job in jobs:
            try:
                results += job.result()
            except Exception as e:  # noqa: BLE001 - the task itself failed (e.g. killed); runs record it
                report(f"task {job.job_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        for r in results:
            report(r, kind="result")
        out["results"] = results
    return out
