"""Parameter counts, training FLOPs per token, this machine's matmul peak and MFU.

Per-family counts live beside each model (lmjax.models.<family>.param_counts/flops_per_token)
and are re-exported here. Convention: training FLOPs = 3 x forward dense-matmul FLOPs; causal
attention is not halved (XLA computes the full score matrix); elementwise work is left out.
"""

from __future__ import annotations

import json
import os
import time

from lmjax.jax_setup import cache_dir
from lmjax.models import flops_per_token, param_counts  # noqa: F401  (re-exported)


def measure_matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    """Best observed float32 matmul FLOP/s on the first device (n x n x n, jitted)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def peak_flops_per_device() -> float:
    """The measured fp32 matmul peak, cached per device kind in the lmjax cache."""
    import jax

    dev = jax.devices()[0]
    key = f"{dev.platform}:{getattr(dev, 'device_kind', '')}:{os.cpu_count()}"
    path = os.path.join(cache_dir(), "peak_flops.json")
    table = {}
    if os.path.isfile(path):
        with open(path) as f:
            table = json.load(f)
    if key not in table:
        table[key] = measure_matmul_peak()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(table, f)
        os.replace(tmp, path)
    return table[key]


def mfu(flops_per_second: float, peak_per_device: float, n_devices: int) -> float:
    """Model FLOPs utilization: achieved model FLOP/s over the peak of all devices."""
    return flops_per_second / (peak_per_device * n_devices)
