"""Compile time of the train step vs depth: scan over layers keeps it flat (prints a table).

    .venv/bin/python benchmarks/bench_compile.py
"""

import dataclasses
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from lmjax import config as config_lib, models, parallel  # noqa: E402
from lmjax.train.optim import make_optimizer  # noqa: E402
from lmjax.train.step import make_steps  # noqa: E402


def compile_seconds(n_layers: int, scan: bool) -> float:
    cfg = config_lib.apply_overrides(config_lib.load_config_file("configs/train/shakespeare_char.py"), {
        "model.vocab_size": 65, "model.n_layers": n_layers, "model.scan_layers": scan})
    mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    steps = make_steps(models.build(cfg.model), tx, lr, cfg, mesh)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         steps.abstract_state, steps.state_sharding)
    batch = jax.ShapeDtypeStruct((12, 65), jax.numpy.int32, sharding=parallel.batch_sharding(mesh))
    t0 = time.perf_counter()
    steps.train.lower(state, batch).compile()
    return time.perf_counter() - t0


def main() -> int:
    jax.config.update("jax_enable_compilation_cache", False)  # measure real compiles
    rows = []
    for scan in (True, False):
        for n in (2, 24):
            rows.append((scan, n, compile_seconds(n, scan)))
    print(f"{'scan_layers':>12} {'layers':>7} {'compile_s':>10}")
    for scan, n, s in rows:
        print(f"{str(scan):>12} {n:>7} {s:>10.2f}")
    ratio = rows[1][2] / rows[0][2]
    print(f"scan: 24-layer / 2-layer compile time = {ratio:.2f}x (target <= 2x); "
          f"unrolled: {rows[3][2] / rows[2][2]:.2f}x")
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
