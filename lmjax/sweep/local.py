"""The local backend: a pool of long-lived worker processes on this machine.

Each worker (``python -m lmjax.sweep.worker --serve``) gets its own share of the machine through
its environment, set before JAX starts:

    cpu  CPU affinity (LMJAX_WORKER_CPUS: cores // workers each), one XLA host device
         (--xla_force_host_platform_device_count=1), single-threaded Eigen when it has one core
    gpu  CUDA_VISIBLE_DEVICES (its GPU(s)); workers sharing a GPU split its memory
         (XLA_PYTHON_CLIENT_MEM_FRACTION) and do not preallocate
    tpu  TPU_VISIBLE_CHIPS and per-process TPU bounds/ports (one chip per worker)

The launcher hands tasks (a run, or a vmapped group of runs) to idle workers, largest first; a
worker trains run after run in one process (one JAX import, warm caches). Workers die with the
launcher (SIGTERM: the run in flight saves a checkpoint), and a worker that crashes is replaced;
the runs it held are recorded as failed with the exit code.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from lmjax.sweep import store
from lmjax.sweep.worker import PREFIX


@dataclasses.dataclass
class LocalOptions:
    workers: int = 0  # 0: one per core (cpu) or per device (gpu, tpu)
    platform: str = "auto"  # auto | cpu | gpu | tpu
    devices_per_worker: int = 0  # accelerators per worker (0: devices // workers, at least 1)


def detect_platform() -> tuple[str, int]:
    """(platform, device count) without importing JAX: CPU cores, NVIDIA GPUs or TPU chips."""
    forced = os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip().lower()
    if forced == "cpu":
        return "cpu", cpu_count()
    gpus = [p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)]
    if gpus and forced in ("", "cuda", "gpu"):
        return "gpu", len(gpus)
    chips = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    if chips and forced in ("", "tpu"):
        return "tpu", len(chips)
    return "cpu", cpu_count()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _xla_flags(base: str, extra: list[str]) -> str:
    drop = ("--xla_force_host_platform_device_count", "--xla_cpu_multi_thread_eigen")
    kept = [f for f in base.split() if not f.startswith(drop)]
    return " ".join(kept + extra)


def worker_envs(n_workers: int, platform: str, n_devices: int, devices_per_worker: int = 0) -> list[dict]:
    """The environment additions of each worker (what gives it its share of the machine)."""
    envs = []
    base_flags = os.environ.get("XLA_FLAGS", "")
    if platform == "cpu":
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(n_devices))
        per = max(1, len(cpus) // n_workers)
        for i in range(n_workers):
            mine = cpus[i * per:(i + 1) * per] if (i + 1) * per <= len(cpus) else [cpus[i % len(cpus)]]
            flags = ["--xla_force_host_platform_device_count=1"]
            if len(mine) == 1:
                flags.append("--xla_cpu_multi_thread_eigen=false")
            n = str(len(mine))
            envs.append({"JAX_PLATFORMS": "cpu", "LMJAX_WORKER_CPUS": ",".join(map(str, mine)),
                         "XLA_FLAGS": _xla_flags(base_flags, flags), "OMP_NUM_THREADS": n,
                         "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n})
        return envs
    per = devices_per_worker or max(1, n_devices // n_workers)
    sharing = max(1, -(-n_workers * per // max(n_devices, 1)))  # workers per device when oversubscribed
    for i in range(n_workers):
        ids = [(i * per + j) % max(n_devices, 1) for j in range(per)]
        if platform == "gpu":
            env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, ids))}
            if sharing > 1:
                env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false",
                           XLA_PYTHON_CLIENT_MEM_FRACTION=f"{0.9 / sharing:.3f}")
        else:  # tpu: one process per chip group (the documented multi-process-per-VM settings)
            env = {"TPU_VISIBLE_CHIPS": ",".join(map(str, ids)), "TPU_CHIPS_PER_PROCESS_BOUNDS": f"1,{per},1",
                   "TPU_PROCESS_BOUNDS": "1,1,1", "TPU_PROCESS_PORT": str(8476 + i),
                   "TPU_PROCESS_ADDRESSES": f"localhost:{8476 + i}", "CLOUD_TPU_TASK_ID": "0",
                   "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{8500 + i}",
                   "TPU_MESH_CONTROLLER_PORT": str(8500 + i)}
        envs.append(env)
    return envs


def default_workers(platform: str, n_devices: int) -> int:
    return max(1, n_devices)


class _Worker:
    def __init__(self, index: int, env_extra: dict, log_path: str, events: queue.Queue):
        self.index = index
        env = dict(os.environ)
        env.update(env_extra)
        env["LMJAX_LAUNCHER_PID"] = str(os.getpid())
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.log = open(log_path, "a")
        self.log.write(f"--- worker {index} started {time.strftime('%Y-%m-%d %H:%M:%S')} with "
                       f"{json.dumps(env_extra)}\n")
        self.log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "lmjax.sweep.worker", "--serve"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1)
        self.task = None
        self.ready = False
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events: queue.Queue) -> None:
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                events.put((self, json.loads(line[len(PREFIX):])))
        events.put((self, None))  # EOF: the process ended

    def send(self, task: dict) -> None:
        self.task = task
        self.proc.stdin.write(json.dumps(task) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass


def run(sweep_dir: str, tasks: list[dict], opts: LocalOptions, report) -> list[dict]:
    """Run tasks ({"id", "dirs", "vmap", "retry_failed"}) on a worker pool; returns all run results."""
    platform, n_devices = detect_platform() if opts.platform == "auto" else (opts.platform, None)
    if n_devices is None:
        n_devices = cpu_count() if platform == "cpu" else detect_platform()[1]
    n_workers = max(1, min(opts.workers or default_workers(platform, n_devices), len(tasks) or 1))
    envs = worker_envs(n_workers, platform, n_devices, opts.devices_per_worker)
    log_dir = os.path.join(sweep_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    report(f"local backend: {len(tasks)} task(s) on {n_workers} worker(s) ({platform}, {n_devices} "
           f"{'cores' if platform == 'cpu' else 'devices'}); logs in {log_dir}")
    events: queue.Queue = queue.Queue()
    pending = list(tasks)
    results: list[dict] = []
    workers: list[_Worker] = []
    old_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        old_term = None
    try:
        for i in range(n_workers):
            workers.append(_Worker(i, envs[i], os.path.join(log_dir, f"worker-{i}.log"), events))
        alive = len(workers)
        spawned = len(workers)
        while alive:
            w, msg = events.get()
            if msg is None:  # a worker ended
                alive -= 1
                code = w.proc.wait()
                if w.task is not None:  # it died with a task in flight
                    results += _died(w, code, report)
                    w.task = None
                    if pending and spawned < n_workers + 2 * len(tasks):
                        nw = _Worker(w.index, envs[w.index], os.path.join(log_dir, f"worker-{w.index}.log"), events)
                        workers.append(nw)
                        alive += 1
                        spawned += 1
                continue
            if msg.get("ready"):
                w.ready = True
                report(f"worker {w.index} ready (start-up {msg['startup_s']:.1f} s)", verbose=True)
            elif "results" in msg:
                for r in msg["results"]:
                    results.append(r)
                    report(r, kind="result")
                w.task = None
                if any(r["status"] in ("preempted", "pending") for r in msg["results"]):
                    w.close()
                    continue
            task = _next_task(pending, w, workers)
            if task is not None:
                w.send(task)
            else:
                w.close()
    except KeyboardInterrupt:
        report("interrupted: stopping workers (runs in flight save a checkpoint)")
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 120
        for w in workers:
            try:
                w.proc.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for w in workers:
            w.close()
            if w.proc.poll() is None:
                try:
                    w.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
            w.log.close()
    return results


def _next_task(pending: list[dict], w: "_Worker", workers: list) -> dict | None:
    """The next task for worker w: one with the model shape it just compiled (its init and eval
    programs come from the compilation cache), else the largest whose shape no other worker is on."""
    if not pending:
        return None
    last = getattr(w, "last_shape", None)
    busy = {getattr(o, "last_shape", None) for o in workers if o is not w and o.task is not None}
    pick = next((t for t in pending if last is not None and t.get("shape") == last), None)
    if pick is None:
        pick = next((t for t in pending if t.get("shape") not in busy), pending[0])
    pending.remove(pick)
    w.last_shape = pick.get("shape")
    return pick


def _died(w: _Worker, code: int, report) -> list[dict]:
    """Results for a task whose worker process ended without answering (crash, OOM kill)."""
    out = []
    for d in w.task["dirs"]:
        state = store.run_state(d)["state"]
        name = os.path.basename(d)
        if state == "done":
            out.append({"dir": d, "name": name, "status": "done"})
            continue
        reason = f"worker process died with exit code {code} (see {w.log.name})"
        if code in (-signal.SIGKILL, 137):
            reason += "; killed, possibly out of memory"
        store.record_failure(d, reason)
        out.append({"dir": d, "name": name, "status": "failed", "reason": reason})
    for r in out:
        report(r, kind="result")
    return out

