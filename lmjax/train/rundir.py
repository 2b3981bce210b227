"""Run directories: config.json, metrics.jsonl, summary.json, tokenizer.json, checkpoints/.

A workdir holds one run. Re-running the same config resumes it; a different config is refused
unless asked for a new run, and then the old run is moved aside, never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from lmjax import config as config_lib
from lmjax.errors import RunDirError

CONFIG = "config.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
GRID = "grid.json"  # a sweep run's grid coordinates (written by the sweep store, logged to wandb)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_summary(workdir: str) -> dict | None:
    path = os.path.join(workdir, SUMMARY)
    return read_json(path) if os.path.isfile(path) else None


def prepare(workdir: str, config_dict: dict, *, force_new: bool = False, announce=print) -> None:
    """Create the workdir, or check that the run it holds has the same trajectory-relevant config."""
    path = os.path.join(workdir, CONFIG)
    if os.path.isfile(path):
        old = read_json(path)
        changed = config_lib.trajectory_diff(old, config_dict)
        if changed and not force_new:
            shown = ", ".join(f"{k}: {_get(old, k)!r} -> {_get(config_dict, k)!r}" for k in changed[:4])
            more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
            raise RunDirError(f"{workdir} holds a run with a different config ({shown}{more}); "
                              f"use --force-new to start a new run there (the old one is moved aside)")
        if changed:
            aside = _aside_name(workdir)
            shutil.move(workdir, aside)
            announce(f"moved the previous run in {workdir} to {aside}")
    elif os.path.isdir(workdir) and os.listdir(workdir) and force_new:
        aside = _aside_name(workdir)
        shutil.move(workdir, aside)
        announce(f"moved the previous contents of {workdir} to {aside}")
    os.makedirs(workdir, exist_ok=True)


def _aside_name(workdir: str) -> str:
    """WORKDIR.old-<time>, with a counter if that name is taken (never moves into an old run)."""
    base = f"{os.path.abspath(workdir).rstrip('/')}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    name, i = base, 1
    while os.path.exists(name):
        name, i = f"{base}-{i}", i + 1
    return name


def _get(d: dict, dotted: str):
    """The value at a dotted key; a missing later-added field reads as its default."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return config_lib.ADDED_FIELDS.get(dotted)
        d = d[part]
    return d


def load_config(workdir: str):
    path = os.path.join(workdir, CONFIG)
    if not os.path.isfile(path):
        raise RunDirError(f"{workdir} holds no run ({CONFIG} not found)")
    return config_lib.from_dict(read_json(path))
