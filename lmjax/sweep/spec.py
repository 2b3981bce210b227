"""Sweep files: configs/sweeps/*.py define ``get_sweep()`` returning a Sweep or a list of runs."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from lmjax import config as config_lib
from lmjax.config import Config
from lmjax.errors import ConfigError
from lmjax.sweep.grid import Point, run_name


@dataclasses.dataclass
class Sweep:
    """A grid of runs and the sweep's own settings.

    name: the sweep's name (the wandb group of its runs; default: the sweep file's name).
    vmap: train runs whose programs have the same shapes (differing in seed, learning-rate
    schedule, steps or unique data) together, one compiled vmapped program per group (see
    lmjax.sweep.vmap_train); True, False, or a function cfg -> bool choosing the runs that may be
    grouped. `sweep launch --vmap / --no-vmap` overrides it.
    """

    points: list
    name: str = ""
    vmap: Any = False
    description: str = ""


def as_points(items) -> list[Point]:
    out = []
    for item in items:
        if isinstance(item, Point):
            out.append(item)
        elif isinstance(item, Config):
            out.append(Point(item, {}))
        else:
            raise ConfigError(f"a sweep must list lmjax.config.Config or lmjax.sweep.Point, got {type(item).__name__}")
    return out


def load_sweep(path: str) -> Sweep:
    module = config_lib.load_python_file(path, "sweep")
    fn = getattr(module, "get_sweep", None) or getattr(module, "get_runs", None)
    if fn is None:
        raise ConfigError(f"sweep file {path} defines no get_sweep()")
    result = fn()
    sweep = result if isinstance(result, Sweep) else Sweep(points=list(result))
    sweep.points = as_points(sweep.points)
    if not sweep.name:
        sweep.name = os.path.splitext(os.path.basename(path))[0]
    return sweep


def finalize(sweep: Sweep, overrides: dict[str, Any] | None = None) -> list[Point]:
    """Apply launch-time overrides, set each run's name and wandb group; drop exact duplicates."""
    out, seen = [], set()
    for p in sweep.points:
        cfg = config_lib.apply_overrides(p.config, overrides or {})
        name = run_name(cfg)
        log = cfg.log if cfg.log.wandb_group else dataclasses.replace(cfg.log, wandb_group=sweep.name)
        cfg = dataclasses.replace(cfg, name=name, log=log)
        if name in seen:
            continue
        seen.add(name)
        out.append(Point(cfg, dict(p.coords)))
    return out
