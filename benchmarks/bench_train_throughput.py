"""Training throughput of the baby Transformer (configs/train/shakespeare_char.py), tokens/s.

Compares against an equivalent PyTorch model in the same run when torch is installed
(`pip install torch==2.13.0` takes the local CPU wheel; torch is not a dependency of lmjax).
Ratios measured in one run are what count on a shared machine.

    .venv/bin/python benchmarks/bench_train_throughput.py [--steps 30]
"""

import argparse
import dataclasses
import math
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lmjax import config as config_lib, models, parallel  # noqa: E402
from lmjax.jax_setup import setup_jax  # noqa: E402
from lmjax.train.optim import make_optimizer  # noqa: E402
from lmjax.train.step import make_steps  # noqa: E402

B, T, V = 12, 64, 65


def lmjax_step_seconds(steps: int) -> float:
    cfg = config_lib.load_config_file("configs/train/shakespeare_char.py")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=V))
    mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    st = make_steps(models.build(cfg.model), tx, lr, cfg, mesh)
    state = st.init(jax.random.key(0))
    batch = parallel.put_batch(np.random.randint(0, V, (B, T + 1)).astype(np.int32), mesh)
    for _ in range(3):
        state, m = st.train(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = st.train(state, batch)
    jax.block_until_ready(m)
    return (time.perf_counter() - t0) / steps


def torch_step_seconds(steps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "experiments", "nanogpt_reference"))
    from torch_reference import build_model  # the one PyTorch twin of the baby Transformer

    model = build_model(torch, V, 128, 4, 4, T)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    data = torch.randint(0, V, (B, T + 1))

    def step():
        loss = model.per_token_loss(data[:, :-1], data[:, 1:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    setup_jax()
    rows = [("lmjax (jax)", lmjax_step_seconds(args.steps))]
    t = torch_step_seconds(args.steps)
    if t is not None:
        rows.append(("pytorch", t))
    print(f"baby Transformer, batch {B} x context {T}, {os.cpu_count()} CPU cores")
    print(f"{'impl':<14} {'ms/step':>9} {'tokens/s':>10}")
    for name, s in rows:
        print(f"{name:<14} {s * 1e3:>9.1f} {B * T / s:>10.0f}")
    if len(rows) == 2:
        print(f"lmjax / pytorch step time: {rows[0][1] / rows[1][1]:.2f}x")
    flops = models.flops_per_token(dataclasses.replace(config_lib.load_config_file(
        "configs/train/shakespeare_char.py").model, vocab_size=V))
    print(f"model FLOPs per token {flops:.3g}; lmjax achieves {flops * B * T / rows[0][1] / 1e9:.1f} GFLOP/s")
    assert math.isfinite(rows[0][1])


if __name__ == "__main__":
    main()
