"""`lmjax plan`: lower and compile the train step for a mesh without running it.

Prints memory per device (XLA's compiled memory analysis), FLOPs per step and per token, and
whether it fits a device memory. Sweeps call ``plan(cfg)`` to reject grid points before launch.

On a CPU it also compares the step's temporary buffers with the last-level cache: a step whose
buffers outgrow it runs markedly slower per token (the baby Transformer at batch 12: ~50 MiB
against 32 MiB of L3, 1.1-1.35x slower than as two accumulated microbatches of 28.5 MiB), so the
plan suggests a ``train.grad_accum`` that fits.
"""

from __future__ import annotations

import json
import os

from lmjax.errors import ConfigError

GIB = 1024**3
MIB = 1024**2


def cpu_cache_bytes() -> int | None:
    """Size of this machine's last-level CPU cache (Linux sysfs), or None where unknown."""
    sizes = {}
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in os.listdir(root):
            if not index.startswith("index"):
                continue
            with open(os.path.join(root, index, "level")) as f, open(os.path.join(root, index, "size")) as g:
                level, size = int(f.read()), g.read().strip()
            units = {"K": 1024, "M": MIB, "G": GIB}
            sizes[level] = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    except (OSError, ValueError):
        return None
    return sizes[max(sizes)] if sizes else None


def cache_note(temp_bytes: int, cache_bytes: int, batch: int, accum: int, split: int) -> tuple[int | None, str] | None:
    """(suggested grad_accum or None, note) when a CPU step's temporaries outgrow the cache, else None.

    Temporaries shrink roughly with the microbatch, so the suggestion is the smallest larger
    accumulation that divides the batch into data x fsdp-divisible microbatches and fits."""
    if temp_bytes <= cache_bytes:
        return None
    note = (f"the step's temporary buffers ({temp_bytes / MIB:.1f} MiB) exceed the CPU cache "
            f"({cache_bytes / MIB:.0f} MiB), which slows it per token")
    for k in range(accum + 1, batch + 1):
        if batch % k == 0 and (batch // k) % split == 0 and temp_bytes * accum / k <= cache_bytes:
            return k, f"{note}; try --config.train.grad_accum={k} (the same gradient, smaller microbatches)"
    return None, note


def plan(cfg, device_memory_gib: float | None = None, cache_bytes: int | None = None,
         compare_cache: bool = True) -> dict:
    """``cache_bytes``: the CPU cache to compare the step's buffers with (default: this machine's,
    when the mesh is on CPUs); ``compare_cache=False`` skips it (simulated devices stand in for
    accelerators)."""
    import jax

    from lmjax import models, parallel
    from lmjax.train.loop import load_run_data
    from lmjax.train.optim import make_optimizer
    from lmjax.train.step import make_steps

    if cfg.model.family == "ngram":
        raise ConfigError("the n-gram family has no train step to plan")
    cfg, _ = load_run_data(cfg)
    mesh = parallel.make_mesh(cfg.mesh.shape)
    parallel.check_batch(cfg.train.batch_size, mesh)
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    steps = make_steps(models.build(cfg.model), tx, lr, cfg, mesh)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         steps.abstract_state, steps.state_sharding)
    batch = jax.ShapeDtypeStruct((cfg.train.batch_size, cfg.model.context + 1), jax.numpy.int32,
                                 sharding=parallel.batch_sharding(mesh))
    compiled = steps.train.lower(state, batch).compile()
    mem = compiled.memory_analysis()
    per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                  - mem.alias_size_in_bytes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    tokens = cfg.train.batch_size * cfg.model.context
    counts = models.param_counts(cfg.model)
    out = {
        "family": cfg.model.family, "mesh": dict(mesh.shape), "devices": mesh.size,
        "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
        "tokens_per_step": tokens, "flops_per_token": models.flops_per_token(cfg.model),
        "flops_per_step": models.flops_per_token(cfg.model) * tokens,
        "xla_flops_per_step_per_device": float(cost.get("flops", 0.0)),
        "memory_per_device_gib": per_device / GIB,
        "memory_breakdown_gib": {"arguments": mem.argument_size_in_bytes / GIB,
                                 "outputs": mem.output_size_in_bytes / GIB,
                                 "temporaries": mem.temp_size_in_bytes / GIB,
                                 "aliased": mem.alias_size_in_bytes / GIB},
    }
    if compare_cache and not cache_bytes and mesh.devices.flat[0].platform == "cpu":
        cache_bytes = cpu_cache_bytes()
    if compare_cache and cache_bytes:
        out["cpu_cache_mib"] = cache_bytes / MIB
        found = cache_note(mem.temp_size_in_bytes, cache_bytes, cfg.train.batch_size, cfg.train.grad_accum,
                           mesh.shape["data"] * mesh.shape["fsdp"])
        if found:
            suggestion, out["note"] = found
            if suggestion:
                out["suggested_grad_accum"] = suggestion
    if device_memory_gib:
        out["device_memory_gib"] = device_memory_gib
        out["fits"] = per_device <= device_memory_gib * GIB
    return out


def run(args) -> int:
    from lmjax.cli import load_cli_config

    if args.simulate_devices:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.simulate_devices}"
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    cfg = load_cli_config(args.config, args.overrides)
    if args.mesh:
        try:
            shape = tuple(int(x) for x in args.mesh.split(","))
        except ValueError:
            raise ConfigError(f"--mesh must look like 2,2,2 (data,fsdp,tensor), got {args.mesh!r}") from None
        import dataclasses

        cfg = dataclasses.replace(cfg, mesh=dataclasses.replace(cfg.mesh, shape=shape)).validate()
    result = plan(cfg, args.device_memory_gib, compare_cache=not args.simulate_devices)
    print(json.dumps(result, indent=2))
    return 0 if result.get("fits", True) else 1


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plan", help="compile the train step for a mesh and report memory and FLOPs",
                              epilog="Override config fields with --config.SECTION.FIELD=VALUE.")
    p.add_argument("--config", required=True)
    p.add_argument("--mesh", help="data,fsdp,tensor (default: the config's mesh.shape)")
    p.add_argument("--device-memory-gib", type=float, help="exit 1 if the step needs more than this per device")
    p.add_argument("--simulate-devices", type=int, default=0,
                   help="plan on N simulated CPU devices (XLA host platform), e.g. for a pod slice's mesh")
    p.set_defaults(func=run)
