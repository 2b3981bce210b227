"""Launch a sweep: load the grid, validate it, record it, and hand the unfinished runs to a backend.

Re-launching is always safe: finished runs are skipped, interrupted runs resume from their
checkpoints, failed runs are skipped unless ``retry_failed``, and runs another launcher is
training right now (their lock is held) are left to it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from lmjax.errors import LmjaxError
from lmjax.sweep import grid, spec, store, validate
from lmjax.sweep.local import LocalOptions
from lmjax.sweep.slurm import SlurmOptions
from lmjax.sweep.tpu import TpuOptions

BACKENDS = ("local", "slurm", "tpu")


class InvalidGrid(LmjaxError):
    """Some grid points are invalid (and --skip-invalid was not given)."""


@dataclasses.dataclass
class LaunchOptions:
    backend: str = "local"
    retry_failed: bool = False
    skip_invalid: bool = False
    dry_run: bool = False
    vmap: bool | None = None  # None: the sweep file's choice
    vmap_max: int = 8  # runs per vmapped group at most
    overrides: dict = dataclasses.field(default_factory=dict)  # dotted keys applied to every run
    local: LocalOptions = dataclasses.field(default_factory=LocalOptions)
    slurm: SlurmOptions = dataclasses.field(default_factory=SlurmOptions)
    tpu: TpuOptions = dataclasses.field(default_factory=TpuOptions)
    verbose: bool = False


class Reporter:
    """Prints launch progress: one line per finished run, with done / failed counters."""

    def __init__(self, total: int, stream=None, verbose: bool = False):
        self.total, self.stream, self.verbose = total, stream or sys.stdout, verbose
        self.done = self.failed = 0
        self.t0 = time.perf_counter()

    def __call__(self, msg, kind: str = "info", verbose: bool = False) -> None:
        if verbose and not self.verbose:
            return
        if kind == "result":
            msg = self._result_line(msg)
            if msg is None:
                return
        print(msg, file=self.stream, flush=True)

    def _result_line(self, r: dict) -> str | None:
        status = r["status"]
        if status == "done":
            self.done += 1
            v = r.get("val_loss")
            extra = f"val_loss {v:.4f}" if isinstance(v, (int, float)) else ""
            if r.get("wall_s"):
                extra += f"  ({r['wall_s']:.1f} s)"
        elif status == "failed":
            self.failed += 1
            extra = f"reason: {r.get('reason', '?')}"
        elif status in ("skipped", "busy"):
            extra = r.get("state") or r.get("reason", "")
        else:
            extra = f"step {r.get('step')}" if r.get("step") else ""
        elapsed = time.perf_counter() - self.t0
        return (f"[{self.done:3d}/{self.total} done, {self.failed} failed, {elapsed:6.0f} s] "
                f"{status:9s} {r['name']}  {extra}".rstrip())


def _launch_record(opts: LaunchOptions, sweep_file: str, n_points: int) -> dict:
    d = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "backend": opts.backend, "sweep_file": sweep_file,
         "points": n_points, "retry_failed": opts.retry_failed, "skip_invalid": opts.skip_invalid,
         "dry_run": opts.dry_run, "vmap": opts.vmap, "overrides": dict(opts.overrides), "argv": sys.argv[1:]}
    backend_opts = {"local": opts.local, "slurm": opts.slurm, "tpu": opts.tpu}[opts.backend]
    d[opts.backend] = dataclasses.asdict(backend_opts)
    return d


def make_tasks(points, sweep_dir: str, *, vmap, vmap_max: int, retry_failed: bool) -> list[dict]:
    """Tasks (largest first): a single run, or a group of runs that train together vmapped.

    vmap: True / False, or a function cfg -> bool choosing the runs that may be grouped.
    """
    from lmjax.sweep import vmap_train

    cfgs = [p.config for p in points]
    eligible = [i for i, c in enumerate(cfgs) if (vmap(c) if callable(vmap) else vmap)]
    index_groups = [[eligible[i] for i in g] for g in vmap_train.groups([cfgs[i] for i in eligible], vmap_max)]
    index_groups += [[i] for i in range(len(cfgs)) if i not in set(eligible)]
    tasks = []
    for idx in index_groups:
        cost = sum(_cost(cfgs[i]) for i in idx) / (len(idx) ** 0.5)
        tasks.append({"dirs": [store.run_dir(sweep_dir, cfgs[i].name) for i in idx],
                      "vmap": len(idx) > 1, "retry_failed": retry_failed, "cost": cost,
                      "shape": _shape_key(cfgs[idx[0]])})
    tasks.sort(key=lambda t: -t["cost"])
    for i, t in enumerate(tasks):
        t["id"] = i
        t.pop("cost")
    return tasks


def _shape_key(cfg) -> str:
    """Runs with equal keys share their init and eval programs (same model, batch and eval shapes)."""
    import hashlib
    import json

    from lmjax import config as config_lib

    d = config_lib.to_dict(cfg)
    key = [d["model"], d["train"]["batch_size"], d["train"]["eval_batch_size"], d["mesh"], d["data"]]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _cost(cfg) -> float:
    try:
        return grid.training_flops(cfg) + 1e9
    except Exception:  # noqa: BLE001 - ordering only
        return 1e9


def launch(sweep, sweep_dir: str, opts: LaunchOptions | None = None, report=None) -> dict:
    """Launch (or continue) ``sweep`` (a path to a sweep file, or a spec.Sweep) in ``sweep_dir``."""
    opts = opts or LaunchOptions()
    if opts.backend not in BACKENDS:
        raise LmjaxError(f"unknown backend {opts.backend!r}; valid: {', '.join(BACKENDS)}")
    sweep_file = os.path.abspath(sweep) if isinstance(sweep, str) else ""
    if isinstance(sweep, str):
        sweep = spec.load_sweep(sweep)
    points = spec.finalize(sweep, opts.overrides)
    report = report or Reporter(len(points), verbose=opts.verbose)
    if not points:
        raise LmjaxError("the sweep has no grid points")

    platform = None
    if opts.backend == "local":
        from lmjax.sweep.local import detect_platform

        platform = opts.local.platform if opts.local.platform != "auto" else detect_platform()[0]
    devices = 1 if platform == "cpu" else None
    problems = validate.check(points, devices_per_run=devices)
    if problems:
        text = validate.format_problems(problems)
        if not opts.skip_invalid:
            raise InvalidGrid(text + "\nnothing was started; fix them or pass --skip-invalid")
        report(text + "\n(--skip-invalid: launching the others)")
        points = [p for p in points if p.config.name not in problems]

    store.record_sweep(sweep_dir, sweep.name, points, _launch_record(opts, sweep_file, len(points)))
    todo, counts, running = [], {s: 0 for s in store.STATES}, []
    for p in points:
        st = store.run_state(store.run_dir(sweep_dir, p.config.name))
        counts[st["state"]] += 1
        if st["state"] == "pending" or (st["state"] == "failed" and opts.retry_failed):
            todo.append(p)
        elif st["state"] == "running":
            running.append(p.config.name)
    report(f"sweep {sweep.name}: {len(points)} runs in {sweep_dir}: {counts['done']} done, "
           f"{counts['running']} running elsewhere, {counts['failed']} failed"
           f"{' (retrying)' if opts.retry_failed and counts['failed'] else ''}, {counts['pending']} pending")
    if isinstance(report, Reporter):
        report.done = counts["done"]
    vmap = sweep.vmap if opts.vmap is None else opts.vmap
    tasks = make_tasks(todo, sweep_dir, vmap=vmap, vmap_max=opts.vmap_max, retry_failed=opts.retry_failed)
    out = {"sweep_dir": sweep_dir, "name": sweep.name, "runs": len(points), "tasks": len(tasks),
           "invalid": problems, "running_elsewhere": running}
    if tasks or opts.dry_run:
        if opts.backend == "local":
            if opts.dry_run:
                for t in tasks:
                    flags = " --vmap" if t["vmap"] else ""
                    report(f"{sys.executable} -m lmjax.sweep.worker{flags} " + " ".join(t["dirs"]))
            else:
                from lmjax.sweep import local

                out["results"] = local.run(sweep_dir, tasks, opts.local, report)
        elif opts.backend == "slurm":
            from lmjax.sweep import slurm

            if opts.dry_run:
                out.update(slurm.dry_run(sweep_dir, sweep.name, tasks, opts.slurm, report))
            else:
                out.update(slurm.submit(sweep_dir, sweep.name, tasks, opts.slurm, report))
        else:
            from lmjax.sweep import tpu

            out.update(tpu.launch(sweep_dir, sweep.name, tasks, opts.tpu, report, dry_run=opts.dry_run))
    final = {s: 0 for s in store.STATES}
    failed = {}
    for p in points:
        d = store.run_dir(sweep_dir, p.config.name)
        st = store.run_state(d)
        final[st["state"]] += 1
        if st["state"] == "failed":
            failed[p.config.name] = st["reason"]
    out["states"], out["failed"] = final, failed
    if not opts.dry_run:
        report(f"{store.bar(final)} {final['done']}/{len(points)} done | {final['running']} running | "
               f"{final['failed']} failed | {final['pending']} pending")
        for name, reason in failed.items():
            report(f"  failed: {name}: {reason}")
        if running:
            report(f"  {len(running)} run(s) were being trained by another launcher and were left to it")
    return out
