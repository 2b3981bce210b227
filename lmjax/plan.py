"""`lmjax plan`: lower and compile the train step for a mesh without running it.

Prints memory per device (XLA's compiled memory analysis), FLOPs per step and per token, and
whether it fits a device memory. Sweeps call ``plan(cfg)`` to reject grid points before launch.
"""

from __future__ import annotations

import json
import os

from lmjax.errors import ConfigError

GIB = 1024**3


def plan(cfg, device_memory_gib: float | None = None) -> dict:
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
    result = plan(cfg, args.device_memory_gib)
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
