"""Train grid points from their run directories: one at a time, as a vmapped group, or as a server.

    python -m lmjax.sweep.worker RUN_DIR [RUN_DIR ...] [--vmap] [--retry-failed] [--distributed auto]
    python -m lmjax.sweep.worker --serve        (the local backend's long-lived worker process)

Each run directory holds launch_config.json (written by the launcher). A worker takes the run's
lock, skips finished runs, resumes interrupted ones from their checkpoints (lmjax.train.loop),
records any error, and a finished run whose losses are not finite, in failed.json, and goes on
with the next run. In --serve mode it reads tasks as JSON lines on stdin and answers on stdout
(lines starting with ``@@lmjax``), so one process (one JAX import, one warm compilation cache)
trains many runs; it dies with its launcher (PR_SET_PDEATHSIG -> SIGTERM -> checkpoint and exit).

Only the standard library is imported at module level: the process's CPU affinity and XLA
flags must be in place before JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time

PREFIX = "@@lmjax "


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} worker {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def setup_process() -> None:
    """Pin this process to its CPUs (LMJAX_WORKER_CPUS) before JAX creates its thread pools."""
    cpus = os.environ.get("LMJAX_WORKER_CPUS")
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",") if c})
        except OSError as e:
            _log(f"could not pin to CPUs {cpus}: {e}")


def die_with_parent() -> None:
    """Get SIGTERM when the launcher dies, so a killed launcher leaves no orphan trainers behind."""
    parent = int(os.environ.get("LMJAX_LAUNCHER_PID", "0") or 0)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:  # the launcher died before prctl took effect
        sys.exit(0)


# ----------------------------------------------------------------------------- one run

def _has_checkpoint(path: str) -> bool:
    ckpt = os.path.join(path, "checkpoints")
    return os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt))


def _archive_attempt(path: str) -> None:
    """Move a finished-but-failed attempt's files aside so the retry starts from scratch."""
    dest = os.path.join(path, "attempts", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(dest, exist_ok=True)
    for name in ("config.json", "summary.json", "metrics.jsonl", "checkpoints", "tokenizer.json", "ngram.npz"):
        src = os.path.join(path, name)
        if os.path.exists(src):
            shutil.move(src, os.path.join(dest, name))


def prepare(path: str, retry_failed: bool) -> str:
    """What to do with a run: 'done' / 'failed' (skip) or 'train' (after clearing old state)."""
    from lmjax.logging import truncate_metrics
    from lmjax.sweep import store
    from lmjax.train import rundir

    summary = rundir.read_summary(path)
    failure = store.read_failure(path)
    if failure is not None:
        if not retry_failed:
            return "failed"
        store.clear_failure(path)
        if summary and summary.get("status") in ("done", "diverged"):
            _archive_attempt(path)
    elif summary and summary.get("status") == "done":
        return "done"
    if not _has_checkpoint(path):
        # a run killed before its first checkpoint restarts from step 0: drop its partial curve
        truncate_metrics(path, 0)
    return "train"


def _result(path: str, status: str, **extra) -> dict:
    return {"dir": path, "name": os.path.basename(os.path.normpath(path)), "status": status, **extra}


def _finish(path: str, summary: dict, t0: float, is_main: bool = True) -> dict:
    from lmjax.sweep import store

    if summary.get("status") not in ("done", "diverged"):  # preempted: the next launch resumes it
        return _result(path, summary.get("status", "preempted"), step=summary.get("steps"))
    reason = store.non_finite_reason(summary, path)
    if reason:
        if is_main:
            store.record_failure(path, reason)
        return _result(path, "failed", reason=reason)
    return _result(path, "done", val_loss=summary.get("final_val_loss"), wall_s=time.perf_counter() - t0)


def _fail(path: str, exc: BaseException, is_main: bool = True, prefix: str = "") -> dict:
    from lmjax.sweep import store

    reason = f"{prefix}{type(exc).__name__}: {exc}".strip()
    if is_main:
        store.record_failure(path, reason, exc)
    _log(f"{os.path.basename(path)} failed: {reason}")
    return _result(path, "failed", reason=reason)


def load_launch_config(path: str):
    from lmjax import config as config_lib
    from lmjax.sweep import store

    d = store.read_json(os.path.join(path, store.LAUNCH_CONFIG))
    if d is None:
        raise FileNotFoundError(f"{path} has no {store.LAUNCH_CONFIG}")
    return config_lib.from_dict(d)


def _train_one(path: str, announce) -> dict:
    import jax

    from lmjax.train.loop import train

    t0 = time.perf_counter()
    is_main = jax.process_index() == 0
    try:
        cfg = load_launch_config(path)
        summary = train(cfg, path, announce=announce)
    except Exception as e:  # noqa: BLE001 - any error is recorded and the sweep goes on
        return _fail(path, e, is_main)
    return _finish(path, summary, t0, is_main)


def _lock_all(paths: list[str], tries: int = 5):
    from lmjax.sweep.store import RunLock

    locks, busy = {}, []
    for p in paths:
        lock = RunLock(p)
        for i in range(tries):  # a concurrent `sweep status` holds the lock for a moment
            if lock.acquire():
                locks[p] = lock
                break
            time.sleep(0.1 * (i + 1))
        else:
            busy.append(p)
    return locks, busy


def run_task(paths: list[str], *, vmap: bool = False, retry_failed: bool = False, announce=None) -> list[dict]:
    """Train the runs in ``paths`` (as one vmapped group when asked and possible); one result each."""
    import jax

    announce = announce or _log
    multi = jax.process_count() > 1
    results: list[dict] = []
    if multi:
        return _run_task_multiprocess(paths, retry_failed=retry_failed, announce=announce)
    locks, busy = _lock_all(paths)
    try:
        results += [_result(p, "busy", reason="another launcher is training it") for p in busy]
        todo = []
        for p in locks:
            try:
                action = prepare(p, retry_failed)
            except Exception as e:  # noqa: BLE001
                results.append(_fail(p, e))
                continue
            if action == "train":
                todo.append(p)
            else:
                results.append(_result(p, "skipped", state=action))
        if vmap and len(todo) > 1:
            results += _train_vmapped(todo, announce)
        else:
            for p in todo:
                _log(f"start {os.path.basename(p)}")
                r = _train_one(p, announce)
                results.append(r)
                jax.clear_caches()
                if r["status"] == "preempted":
                    results += [_result(q, "pending") for q in todo[todo.index(p) + 1:]]
                    break
    finally:
        for lock in locks.values():
            lock.release()
    return results


def _train_vmapped(paths: list[str], announce) -> list[dict]:
    import jax

    from lmjax.sweep import vmap_train

    t0 = time.perf_counter()
    try:
        cfgs = [load_launch_config(p) for p in paths]
        _log(f"start vmapped group of {len(paths)}: {', '.join(os.path.basename(p) for p in paths)}")
        summaries = vmap_train.train_group(cfgs, paths, announce=announce)
    except vmap_train.NotGroupable as e:
        _log(f"training one by one: {e}")
        out = []
        for p in paths:
            out.append(_train_one(p, announce))
            if out[-1]["status"] == "preempted":
                out += [_result(q, "pending") for q in paths[len(out):]]
                break
        return out
    except Exception as e:  # noqa: BLE001
        return [_fail(p, e, prefix="vmapped group: ") for p in paths]
    finally:
        jax.clear_caches()
    return [_finish(p, s, t0) for p, s in zip(paths, summaries)]


def _run_task_multiprocess(paths, *, retry_failed: bool, announce) -> list[dict]:
    """Several processes (hosts) train each run together: process 0 decides, all follow."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from lmjax.sweep.store import RunLock

    main = jax.process_index() == 0
    results = []
    for p in paths:
        lock = RunLock(p)
        code = 0
        if main:
            if not lock.acquire():
                code = 1
            else:
                code = {"train": 0, "done": 2, "failed": 3}[prepare(p, retry_failed)]
        code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
        if code == 0:
            results.append(_train_one(p, announce))
        else:
            results.append(_result(p, "busy" if code == 1 else "skipped"))
        lock.release()
        if results[-1]["status"] == "preempted":
            break
    return results


# ----------------------------------------------------------------------------- entry points

def init_distributed(mode: str) -> None:
    """Start jax.distributed for a run spanning several processes (hosts).

    auto: from the environment JAX recognizes (SLURM, Cloud TPU VMs, Open MPI, ...), when more
    than one process is expected; submitit: from submitit's JobEnvironment (works for SLURM and
    submitit's local executor alike).
    """
    if mode == "none":
        return
    import jax

    if mode == "submitit":
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks <= 1:
            return
        port = 20000 + int(str(env.job_id).split("_")[0]) % 20000 if str(env.job_id).split("_")[0].isdigit() else 29500
        jax.distributed.initialize(coordinator_address=f"{env.hostnames[0]}:{port}",
                                   num_processes=env.num_tasks, process_id=env.global_rank)
    elif mode in ("auto", "slurm", "tpu"):
        jax.distributed.initialize()
    else:
        raise ValueError(f"unknown --distributed mode {mode!r}")


def serve() -> int:
    """Read tasks from stdin until EOF; answer each with one @@lmjax line on stdout."""
    t0 = time.perf_counter()
    die_with_parent()
    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printing to stdout goes to the log
    try:
        from lmjax.jax_setup import setup_jax

        setup_jax()
        import jax

        jax.devices()
    except KeyboardInterrupt:
        return 0
    _send(out, {"ready": True, "startup_s": time.perf_counter() - t0, "pid": os.getpid()})
    while not stop["flag"]:
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            break
        if not line:
            break
        task = json.loads(line)
        try:
            results = run_task(task["dirs"], vmap=task.get("vmap", False), retry_failed=task.get("retry_failed", False))
        except KeyboardInterrupt:  # SIGTERM outside a training loop: the runs stay resumable
            _send(out, {"id": task["id"], "results": [_result(p, "pending") for p in task["dirs"]]})
            break
        _send(out, {"id": task["id"], "results": results})
        if any(r["status"] == "preempted" for r in results):
            break
    return 0


def _send(out, obj) -> None:
    out.write(PREFIX + json.dumps(obj) + "\n")
    out.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lmjax.sweep.worker", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="*", help="run directories (each with launch_config.json)")
    p.add_argument("--root", default="", help="prefix for relative run directories")
    p.add_argument("--vmap", action="store_true", help="train the runs together as one vmapped group")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--distributed", default="none", choices=("none", "auto", "slurm", "tpu", "submitit"))
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    setup_process()
    if args.serve:
        return serve()
    from lmjax.jax_setup import setup_jax

    setup_jax()
    init_distributed(args.distributed)
    dirs = [os.path.join(args.root, d) if args.root else d for d in args.dirs]
    results = run_task(dirs, vmap=args.vmap, retry_failed=args.retry_failed)
    for r in results:
        print(PREFIX + json.dumps(r), flush=True)
    return 1 if any(r["status"] == "failed" for r in results) else 0


def submitit_task(dirs: list[str], vmap: bool = False, retry_failed: bool = False,
                  distributed: str = "submitit") -> list[dict]:
    """The function a SLURM array task runs (pickled by submitit): train its grid point(s)."""
    setup_process()
    from lmjax.jax_setup import setup_jax

    setup_jax()
    init_distributed(distributed)
    results = run_task(list(dirs), vmap=vmap, retry_failed=retry_failed)
    import jax

    if jax.process_count() > 1:
        jax.distributed.shutdown()
    return results


if __name__ == "__main__":
    sys.exit(main())
