"""Mesh, logical-axis rules and sharded initialization.

Models name logical axes; RULES maps them to the mesh axes (data, fsdp, tensor). Switching data
parallelism to FSDP or FSDP + tensor parallelism is a config change (mesh.rules, mesh.shape).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lmjax.errors import ConfigError

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")  # the batch is split over both data-like axes

_COMMON = (("batch", BATCH), ("length", None), ("kv", None), ("layers", None))
RULES = {
    # parameters replicated; only the batch is split
    "dp": _COMMON + (("embed", None), ("hidden", None), ("mlp", None), ("heads", None), ("vocab", None)),
    # ZeRO-3: parameters and optimizer state split over fsdp along the model dimension
    "fsdp": _COMMON + (("embed", "fsdp"), ("hidden", "fsdp"), ("mlp", None), ("heads", None), ("vocab", None)),
    # FSDP + Megatron-style tensor parallelism over heads, mlp, vocab (and recurrent gates' inputs)
    "fsdp_tp": _COMMON + (("embed", "fsdp"), ("hidden", "tensor"), ("mlp", "tensor"), ("heads", "tensor"),
                          ("vocab", "tensor")),
}


def rules(name: str):
    if name not in RULES:
        raise ConfigError(f"unknown mesh.rules {name!r}; valid: {', '.join(RULES)}")
    return RULES[name]


def make_mesh(shape, devices=None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh; one entry may be -1 (the remaining devices)."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    shape = [int(s) for s in shape]
    if len(shape) != 3:
        raise ConfigError(f"mesh.shape must have 3 entries (data, fsdp, tensor), got {tuple(shape)}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ConfigError(f"mesh.shape {tuple(shape)}: entries must be positive, with at most one -1")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if n % known:
            raise ConfigError(f"mesh.shape {tuple(shape)} does not fit {n} devices")
        shape[shape.index(-1)] = n // known
    if math.prod(shape) != n:
        raise ConfigError(f"mesh.shape {tuple(shape)} has {math.prod(shape)} devices but {n} are available")
    return jax.make_mesh(tuple(shape), AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)


def logical_shardings(boxed_tree, mesh, rule_table):
    """NamedShardings for a tree of boxed (nn.Partitioned) abstract values, checking divisibility."""
    specs = nn.get_partition_spec(boxed_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rule_table)
    flat, _ = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(boxed_tree))
    flat_sh = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    logical = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
    for (path, leaf), sh, lspec in zip(flat, flat_sh, logical):
        for dim, axes, logical_axis in zip(leaf.shape, sh.spec, lspec):
            if axes is None:
                continue
            size = math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))
            if dim % size:
                name = "/".join(str(getattr(k, "key", k)) for k in path)
                hint = f" (pad it: --config.model.vocab_multiple={size})" if logical_axis == "vocab" else ""
                raise ConfigError(f"parameter {name} of shape {tuple(leaf.shape)} (logical axes {tuple(lspec)}): "
                                  f"dimension {dim} is not divisible by mesh axes {axes} of size {size}{hint}")
    return shardings


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch(global_batch: int, mesh) -> None:
    split = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % split:
        raise ConfigError(f"the global batch {global_batch} is not divisible by data x fsdp = {split}")


def make_batch(row_fn, global_shape: tuple, mesh) -> jax.Array:
    """A batch-sharded global array whose rows come from ``row_fn(rows: slice) -> np.ndarray``.

    Each process materializes only the rows its devices hold, whatever the mesh layout, so a
    multi-host job never loads the whole global batch on one host.
    """
    sharding = batch_sharding(mesh, len(global_shape))
    return jax.make_array_from_callback(tuple(global_shape), sharding, lambda idx: row_fn(idx[0]))


def put_batch(rows: np.ndarray, mesh) -> jax.Array:
    """Place a whole global batch held by every process (evaluation batches, tests)."""
    return make_batch(lambda sl: rows[sl], rows.shape, mesh)
