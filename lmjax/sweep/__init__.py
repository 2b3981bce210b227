"""Sweeps: grids of runs, launch backends (local, slurm, tpu), the store, and the results table.

    from lmjax.sweep import cartesian, isoflop, Sweep, launch, collect, quickstart

See docs/sweeps.md. Attributes load lazily, so ``python -m lmjax.sweep.worker`` can pin its CPUs
before anything imports JAX.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Point": "lmjax.sweep.grid", "cartesian": "lmjax.sweep.grid", "isoflop": "lmjax.sweep.grid",
    "run_name": "lmjax.sweep.grid", "training_flops": "lmjax.sweep.grid", "warmup_and_evals": "lmjax.sweep.grid",
    "with_vocab": "lmjax.sweep.grid", "Sweep": "lmjax.sweep.spec", "load_sweep": "lmjax.sweep.spec",
    "LaunchOptions": "lmjax.sweep.launcher",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmjax.sweep' has no attribute {name!r}")


def launch(sweep, sweep_dir: str, opts=None, report=None) -> dict:
    """Launch (or continue) a sweep (a sweep file path or a Sweep); see lmjax.sweep.launcher."""
    from lmjax.sweep.launcher import launch as _launch

    return _launch(sweep, sweep_dir, opts, report)


def collect(sweep_dir: str, **kwargs):
    """Write DIR/results.csv and .parquet; returns the table (see lmjax.sweep.results)."""
    from lmjax.sweep.results import collect as _collect

    return _collect(sweep_dir, **kwargs)


def quickstart(sweep_dir: str, *, workers: int = 0, report=None) -> str:
    """Launch (or continue) the quickstart sweep on this machine and collect it; returns DIR/results.csv.

    Transformers and LSTMs, 5 sizes each x 3 training lengths on the embedded corpus (see
    lmjax.sweep.quickstart_grid); a second call reuses the finished runs.
    """
    import os

    from lmjax.sweep import quickstart_grid
    from lmjax.sweep.launcher import LaunchOptions
    from lmjax.sweep.local import LocalOptions

    launch(quickstart_grid.get_sweep(), sweep_dir,
           LaunchOptions(backend="local", local=LocalOptions(workers=workers)), report)
    collect(sweep_dir)
    return os.path.join(sweep_dir, "results.csv")


__all__ = ["LaunchOptions", "Point", "Sweep", "cartesian", "collect", "isoflop", "launch", "load_sweep",
           "quickstart", "run_name", "training_flops", "warmup_and_evals", "with_vocab"]
