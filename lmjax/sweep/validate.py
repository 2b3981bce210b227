"""Check every grid point before anything starts: config errors, data fit, devices, memory plan.

``check(points, devices_per_run)`` returns {run name: [reasons]} for the invalid points. The checks:
the config's own validate(), the model family's counts (they build the model config), the data
(the tokenizer's vocabulary against model.vocab_size, the context against both splits), the batch
against the devices one run gets (when the backend knows it), and every hook in ``HOOKS``.

Memory: when ``lmjax.plan`` exists and defines ``check(cfg, devices=None) -> list[str]`` (problems;
empty when the run fits), it is called for every point. Other checks can be added with
``HOOKS.append(fn)``, fn(cfg) -> list[str] | str | None.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable

from lmjax import config as config_lib, models
from lmjax.errors import LmjaxError

HOOKS: list[Callable] = []


def _plan_hook():
    """lmjax.plan.check when that module exists (the memory planner), else None."""
    try:
        plan = importlib.import_module("lmjax.plan")
    except ModuleNotFoundError as e:
        if e.name and "lmjax.plan".startswith(e.name):
            return None
        raise
    return getattr(plan, "check", None)


def _as_list(found) -> list[str]:
    if not found:
        return []
    return [found] if isinstance(found, str) else [str(x) for x in found]


def check(points, devices_per_run: int | None = None) -> dict[str, list[str]]:
    from lmjax.data.dataset import load_dataset
    from lmjax.train.loop import resolve

    datasets: dict[str, object] = {}
    plan = _plan_hook()
    problems: dict[str, list[str]] = {}
    for p in points:
        cfg, why = p.config, []
        try:
            cfg.validate()
            models.param_counts(cfg.model)
            models.flops_per_token(cfg.model)
            key = str(sorted(config_lib.to_dict(cfg)["data"].items()))
            if key not in datasets:
                datasets[key] = load_dataset(cfg.data)
            cfg = resolve(cfg, datasets[key])
            if devices_per_run and cfg.model.family != "ngram":
                why += _mesh_problems(cfg, devices_per_run)
        except (LmjaxError, ValueError, TypeError) as e:
            why.append(f"{type(e).__name__}: {e}")
        if not why:
            for hook in ([plan] if plan else []) + HOOKS:
                try:
                    found = hook(cfg, devices=devices_per_run) if hook is plan else hook(cfg)
                except (LmjaxError, ValueError) as e:
                    found = f"{type(e).__name__}: {e}"
                why += _as_list(found)
        if why:
            problems[cfg.name or repr(p.coords)] = why
    return problems


def _mesh_problems(cfg, n_devices: int) -> list[str]:
    shape = [int(s) for s in cfg.mesh.shape]
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if n_devices % known:
            return [f"mesh.shape {tuple(shape)} does not fit the {n_devices} device(s) a run gets"]
        shape[shape.index(-1)] = n_devices // known
    elif math.prod(shape) != n_devices:
        return [f"mesh.shape {tuple(shape)} needs {math.prod(shape)} devices but a run gets {n_devices}"]
    split = shape[0] * shape[1]
    if cfg.train.batch_size % split:
        return [f"train.batch_size={cfg.train.batch_size} is not divisible by data x fsdp = {split}"]
    return []


def format_problems(problems: dict[str, list[str]]) -> str:
    lines = [f"{len(problems)} invalid grid point(s):"]
    for name, why in problems.items():
        lines.append(f"  {name}: " + "; ".join(why))
    return "\n".join(lines)
