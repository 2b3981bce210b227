"""`lmjax sweep launch | status | collect`."""

from __future__ import annotations

import argparse

from lmjax.errors import LmjaxError


def _kv(items, what: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise LmjaxError(f"{what} {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="launch, track and collect grids of runs",
                              description="Grids of runs: launch them, watch them, collect their curves.")
    sub = p.add_subparsers(dest="sweep_command", required=True)

    lp = sub.add_parser("launch", help="launch (or continue) a sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="Re-launching skips finished runs, resumes interrupted ones from their checkpoints,\n"
                               "and leaves runs another launcher is training alone.")
    lp.add_argument("sweep_file", help="a configs/sweeps/*.py file defining get_sweep()")
    lp.add_argument("--dir", required=True, help="the sweep directory (sweep.json, runs/)")
    lp.add_argument("--backend", default="local", choices=("local", "slurm", "tpu"))
    lp.add_argument("--dry-run", action="store_true", help="print the commands / task files; start nothing")
    lp.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    lp.add_argument("--skip-invalid", action="store_true", help="launch the valid grid points when some are invalid")
    lp.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                    help="override a config field in every run, e.g. --set train.steps=100 (repeatable)")
    v = lp.add_mutually_exclusive_group()
    v.add_argument("--vmap", dest="vmap", action="store_true", default=None,
                   help="train runs differing only in seed / lr / train_tokens together (jax.vmap)")
    v.add_argument("--no-vmap", dest="vmap", action="store_false")
    lp.add_argument("--vmap-max", type=int, default=8, help="at most this many runs per vmapped group")
    lp.add_argument("-v", "--verbose", action="store_true")
    g = lp.add_argument_group("local backend")
    g.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core / device)")
    g.add_argument("--platform", default="auto", choices=("auto", "cpu", "gpu", "tpu"))
    g.add_argument("--devices-per-worker", type=int, default=0)
    g = lp.add_argument_group("slurm backend (submitit)")
    g.add_argument("--slurm-cluster", default="slurm", choices=("slurm", "local", "debug"),
                   help="submitit executor: slurm, or local / debug for testing on this machine")
    g.add_argument("--slurm-partition", default="")
    g.add_argument("--slurm-account", default="")
    g.add_argument("--slurm-qos", default="")
    g.add_argument("--slurm-constraint", default="")
    g.add_argument("--slurm-time", type=int, default=60, help="minutes per task")
    g.add_argument("--slurm-nodes", type=int, default=1, help="nodes per run (>1: jax.distributed across them)")
    g.add_argument("--slurm-gpus-per-node", type=int, default=0)
    g.add_argument("--slurm-cpus-per-task", type=int, default=0)
    g.add_argument("--slurm-mem-gb", type=float, default=0.0)
    g.add_argument("--slurm-array-parallelism", type=int, default=64)
    g.add_argument("--slurm-setup", action="append", default=[], help="shell line run before each task")
    g.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE", help="another sbatch parameter")
    g.add_argument("--wait", action="store_true", help="wait for the submitted tasks to finish")
    g = lp.add_argument_group("tpu backend (SkyPilot managed jobs)")
    g.add_argument("--tpu-accelerator", default="tpu-v5litepod-8")
    g.add_argument("--tpu-bucket", default="", help="gs://BUCKET/PATH holding the sweep directory")
    g.add_argument("--tpu-infra", default="gcp")
    g.add_argument("--tpu-runtime-version", default="")
    g.add_argument("--tpu-on-demand", action="store_true", help="on-demand instead of spot slices")
    g.add_argument("--tpu-runs-per-job", type=int, default=1)
    g.add_argument("--tpu-max-restarts", type=int, default=1)
    g.add_argument("--tpu-no-sync", action="store_true", help="the sweep directory already is the bucket (gcsfuse)")
    lp.set_defaults(func=cmd_launch)

    sp = sub.add_parser("status", help="done / running / failed / pending runs of a sweep")
    sp.add_argument("dir")
    sp.add_argument("-v", "--verbose", action="store_true", help="list finished runs too")
    sp.set_defaults(func=cmd_status)

    cp = sub.add_parser("collect", help="write DIR/results.csv and DIR/results.parquet")
    cp.add_argument("dir")
    cp.add_argument("--include-failed", action="store_true")
    cp.set_defaults(func=cmd_collect)


def cmd_launch(args) -> int:
    from lmjax.sweep.launcher import LaunchOptions, launch
    from lmjax.sweep.local import LocalOptions
    from lmjax.sweep.slurm import SlurmOptions
    from lmjax.sweep.tpu import TpuOptions

    opts = LaunchOptions(
        backend=args.backend, retry_failed=args.retry_failed, skip_invalid=args.skip_invalid,
        dry_run=args.dry_run, vmap=args.vmap, vmap_max=args.vmap_max, overrides=_kv(args.set, "--set"),
        verbose=args.verbose,
        local=LocalOptions(workers=args.workers, platform=args.platform, devices_per_worker=args.devices_per_worker),
        slurm=SlurmOptions(cluster=args.slurm_cluster, partition=args.slurm_partition, account=args.slurm_account,
                           qos=args.slurm_qos, constraint=args.slurm_constraint, time_min=args.slurm_time,
                           nodes=args.slurm_nodes, gpus_per_node=args.slurm_gpus_per_node,
                           cpus_per_task=args.slurm_cpus_per_task, mem_gb=args.slurm_mem_gb,
                           array_parallelism=args.slurm_array_parallelism, setup=tuple(args.slurm_setup),
                           additional=_kv(args.slurm_param, "--slurm-param"), wait=args.wait),
        tpu=TpuOptions(accelerator=args.tpu_accelerator, bucket=args.tpu_bucket, infra=args.tpu_infra,
                       runtime_version=args.tpu_runtime_version, spot=not args.tpu_on_demand,
                       runs_per_job=args.tpu_runs_per_job, max_restarts_on_errors=args.tpu_max_restarts,
                       sync=not args.tpu_no_sync),
    )
    out = launch(args.sweep_file, args.dir, opts)
    if args.dry_run:
        return 0
    if out["failed"]:
        return 1
    return 0


def cmd_status(args) -> int:
    from lmjax.sweep.store import format_status

    print(format_status(args.dir, verbose=args.verbose))
    return 0


def cmd_collect(args) -> int:
    import os

    from lmjax.sweep.results import collect

    df = collect(args.dir, include_failed=args.include_failed)
    n_runs = df["run"].nunique() if len(df) else 0
    print(f"{len(df)} rows from {n_runs} runs ({int(df['final'].sum()) if len(df) else 0} finished) -> "
          f"{os.path.join(args.dir, 'results.csv')} (+ .parquet)")
    return 0
