"""The sweep directory: sweep.json, one run directory per grid point, locks and failure records.

    DIR/sweep.json                 the grid (name, coordinates and config of every run) + launches
    DIR/runs/<name>/               a normal run directory (config.json, metrics.jsonl, summary.json,
                                   checkpoints/) plus:
        launch_config.json         the run's config as launched (the worker trains from it)
        failed.json                why the last attempt failed (absent once it succeeds)
        failures/                  earlier failure records, kept when a failed run is retried
        .lock                      flock()ed by the process training the run; owner in .owner.json
    DIR/logs/                      worker logs (local backend)

A run is done (summary.json says done, no failed.json), failed (failed.json), running (its lock
is held), or pending (anything else; ``progress`` says how far an interrupted run got).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import time
import traceback

from lmjax import config as config_lib
from lmjax.logging import read_metrics
from lmjax.train import rundir

SWEEP = "sweep.json"
RUNS = "runs"
LAUNCH_CONFIG = "launch_config.json"
FAILED = "failed.json"
FAILURES = "failures"
LOCK = ".lock"
OWNER = ".owner.json"
STATES = ("done", "running", "failed", "pending")


def write_json(path: str, obj) -> None:
    rundir.write_json(path, obj)


def read_json(path: str, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def run_dir(sweep_dir: str, name: str) -> str:
    return os.path.join(sweep_dir, RUNS, name)


def sweep_path(sweep_dir: str) -> str:
    return os.path.join(sweep_dir, SWEEP)


def load_sweep_json(sweep_dir: str) -> dict:
    data = read_json(sweep_path(sweep_dir))
    if data is None:
        from lmjax.errors import RunDirError

        raise RunDirError(f"{sweep_dir} holds no sweep ({SWEEP} not found)")
    return data


def record_sweep(sweep_dir: str, name: str, points, launch: dict) -> dict:
    """Write (or extend) sweep.json with the grid and this launch's settings."""
    os.makedirs(os.path.join(sweep_dir, RUNS), exist_ok=True)
    data = read_json(sweep_path(sweep_dir)) or {"version": 1, "name": name, "created": _now(), "runs": []}
    known = {r["name"]: r for r in data["runs"]}
    for p in points:
        known[p.config.name] = {"name": p.config.name, "dir": os.path.join(RUNS, p.config.name),
                                "coords": _jsonable(dict(p.coords)), "config": config_lib.to_dict(p.config)}
    data["runs"] = list(known.values())
    data["name"] = data.get("name") or name
    data["updated"] = _now()
    data["launch"] = launch
    data.setdefault("launches", []).append(launch)
    data["launches"] = data["launches"][-50:]
    write_json(sweep_path(sweep_dir), data)
    for p in points:
        d = run_dir(sweep_dir, p.config.name)
        os.makedirs(d, exist_ok=True)
        cfg_dict = config_lib.to_dict(p.config)
        if read_json(os.path.join(d, LAUNCH_CONFIG)) != cfg_dict:
            write_json(os.path.join(d, LAUNCH_CONFIG), cfg_dict)
        coords = _jsonable(dict(p.coords))
        if read_json(os.path.join(d, rundir.GRID)) != coords:
            write_json(os.path.join(d, rundir.GRID), coords)
    return data


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ----------------------------------------------------------------------------- locks

class RunLock:
    """An exclusive, non-blocking flock on run_dir/.lock, released when the holder exits or dies.

    flock works across processes on one machine and on NFSv4 / Lustre; on a filesystem without
    locks (e.g. gcsfuse) ``acquire`` succeeds with ``supported = False`` and the backend's job
    assignment is the only guard (the TPU backend gives each run to exactly one job).
    """

    def __init__(self, path: str):
        self.dir = path
        self.fd = None
        self.supported = True

    def acquire(self) -> bool:
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                return False
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                self.supported = False
            else:
                os.close(fd)
                raise
        self.fd = fd
        write_json(os.path.join(self.dir, OWNER), {"host": socket.gethostname(), "pid": os.getpid(),
                                                   "since": _now()})
        return True

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(os.path.join(self.dir, OWNER))
            except FileNotFoundError:
                pass
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def is_locked(path: str) -> bool:
    lock = os.path.join(path, LOCK)
    if not os.path.exists(lock):
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError as e:
        return e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- failures

def record_failure(path: str, reason: str, exc: BaseException | None = None, **extra) -> dict:
    rec = {"reason": reason, "time": _now(), "host": socket.gethostname(), "pid": os.getpid(), **extra}
    if exc is not None:
        rec["type"] = type(exc).__name__
        rec["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-8000:]
    write_json(os.path.join(path, FAILED), rec)
    return rec


def read_failure(path: str) -> dict | None:
    return read_json(os.path.join(path, FAILED))


def clear_failure(path: str) -> dict | None:
    """Move failed.json into failures/ (kept as history); returns the record."""
    rec = read_failure(path)
    if rec is None:
        return None
    hist = os.path.join(path, FAILURES)
    os.makedirs(hist, exist_ok=True)
    os.replace(os.path.join(path, FAILED), os.path.join(hist, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"))
    return rec


def non_finite_reason(summary: dict | None, path: str) -> str | None:
    """A reason string when a finished run's losses are not finite (a diverged run), else None."""
    if not summary:
        return None
    bad = []
    for key in ("final_train_loss", "final_val_loss"):
        v = summary.get(key)
        if isinstance(v, str) or (isinstance(v, float) and not math.isfinite(v)):
            bad.append(f"{key}={v}")
    if not bad:
        for rec in read_metrics(path):
            v = rec.get("train_loss")
            if isinstance(v, str) or (isinstance(v, float) and not math.isfinite(v)):
                bad.append(f"train_loss={v} at step {rec.get('step')}")
                break
    if not bad:
        return None
    return "non-finite loss (the run diverged): " + ", ".join(bad)


# ----------------------------------------------------------------------------- status

def run_state(path: str) -> dict:
    """{"state": done|running|failed|pending, "step": last logged step, "steps": total, ...}."""
    summary = rundir.read_summary(path)
    failure = read_failure(path)
    cfg = read_json(os.path.join(path, LAUNCH_CONFIG)) or read_json(os.path.join(path, rundir.CONFIG)) or {}
    steps = cfg.get("train", {}).get("steps")
    metrics = read_metrics(path)
    step = metrics[-1]["step"] if metrics else 0
    out = {"step": step, "steps": steps, "summary": summary}
    if is_locked(path):
        out["state"] = "running"
    elif failure is not None:
        out.update(state="failed", reason=failure.get("reason", "?"))
    elif summary and summary.get("status") == "done":
        out["state"] = "done"
    else:
        out["state"] = "pending"
        if step:
            out["interrupted"] = True
    return out


def sweep_states(sweep_dir: str) -> tuple[dict, list[dict]]:
    data = load_sweep_json(sweep_dir)
    rows = []
    for r in data["runs"]:
        st = run_state(os.path.join(sweep_dir, r["dir"]))
        rows.append({"name": r["name"], "dir": r["dir"], "coords": r.get("coords", {}), **st})
    return data, rows


def bar(fractions: dict, width: int = 40) -> str:
    """A text progress bar: '#' done, '>' running, 'x' failed, '.' pending."""
    total = sum(fractions.values()) or 1
    chars = {"done": "#", "running": ">", "failed": "x", "pending": "."}
    out, used = "", 0
    for i, state in enumerate(STATES):
        n = round(width * fractions.get(state, 0) / total) if i < len(STATES) - 1 else width - used
        n = max(0, min(n, width - used))
        out += chars[state] * n
        used += n
    return f"[{out}]"


def format_status(sweep_dir: str, *, verbose: bool = False) -> str:
    data, rows = sweep_states(sweep_dir)
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    n = len(rows)
    lines = [f"sweep {data.get('name', '?')} in {sweep_dir}: {n} runs",
             f"{bar(counts)} {counts['done']}/{n} done | {counts['running']} running | "
             f"{counts['failed']} failed | {counts['pending']} pending"]
    for r in rows:
        if r["state"] == "done" and not verbose:
            continue
        steps = r["steps"] or 0
        frac = r["step"] / steps if steps else 0.0
        detail = f"{r['step']}/{steps} steps" if steps else ""
        if r["state"] == "failed":
            detail += f"  reason: {r['reason']}"
        elif r["state"] == "pending" and r.get("interrupted"):
            detail += "  (interrupted; resumes from its last checkpoint)"
        elif r["state"] == "done" and r["summary"]:
            v = r["summary"].get("final_val_loss")
            detail += f"  val_loss {v:.4f}" if isinstance(v, float) else ""
        mini = bar({"done": frac, "pending": 1 - frac}, 10) if r["state"] != "done" else ""
        lines.append(f"  {r['state']:8s} {r['name']}  {mini} {detail}".rstrip())
    return "\n".join(lines)
