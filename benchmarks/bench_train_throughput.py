"""Training throughput of the baby Transformer (configs/train/shakespeare_char.py), tokens/s.

Compares against an equivalent PyTorch model in the same run when torch is installed
(`pip install torch==2.13.0` takes the local CPU wheel; torch is not a dependency of lmjax).
Ratios measured in one run are what count on a shared machine.

    .venv/bin/python benchmarks/bench_train_throughput.py [--steps 30] [--rounds 5]
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


def lmjax_stepper(grad_accum: int):
    """(run n steps and wait, MiB of XLA temporary buffers the step needs)."""
    cfg = config_lib.load_config_file("configs/train/shakespeare_char.py")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=V),
                              train=dataclasses.replace(cfg.train, grad_accum=grad_accum))
    mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
    tx, lr = make_optimizer(cfg.optim, cfg.train.steps)
    st = make_steps(models.build(cfg.model), tx, lr, cfg, mesh)
    box = [st.init(jax.random.key(0))]
    batch = parallel.put_batch(np.random.randint(0, V, (B, T + 1)).astype(np.int32), mesh)
    temp_mib = st.train.lower(box[0], batch).compile().memory_analysis().temp_size_in_bytes / 2**20

    def run(n):
        for _ in range(n):
            box[0], m = st.train(box[0], batch)
        jax.block_until_ready(m)

    return run, temp_mib


def torch_stepper():
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

    def run(n):
        for _ in range(n):
            loss = model.per_token_loss(data[:, :-1], data[:, 1:]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; each implementation's best counts")
    args = ap.parse_args()
    setup_jax()
    # The config takes its batch as 2 accumulated microbatches (the same gradient): on a CPU
    # the one-pass step's ~50 MiB of buffers outgrow the L3 cache; see the config's docstring.
    impls = {f"lmjax accum {a}": lmjax_stepper(a) for a in (2, 1)}
    run_torch = torch_stepper()
    if run_torch is not None:
        impls["pytorch"] = (run_torch, math.nan)
    best = {name: math.inf for name in impls}
    for run, _ in impls.values():
        run(3)  # warm up
    for _ in range(args.rounds):  # interleaved, so a noisy minute hits every implementation
        for name, (run, _) in impls.items():
            t0 = time.perf_counter()
            run(args.steps)
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    print(f"baby Transformer, batch {B} x context {T}, {os.cpu_count()} CPU cores, "
          f"best of {args.rounds} rounds of {args.steps} steps")
    print(f"{'impl':<14} {'ms/step':>9} {'tokens/s':>10} {'XLA buffers MiB':>16}")
    for name, (_, mib) in impls.items():
        print(f"{name:<14} {best[name] * 1e3:>9.1f} {B * T / best[name]:>10.0f} {mib:>16.1f}")
    step_s = best["lmjax accum 2"]
    print(f"lmjax accum 1 / accum 2 step time: {best['lmjax accum 1'] / step_s:.2f}x")
    if "pytorch" in best:
        print(f"lmjax (accum 2, the config) / pytorch step time: {step_s / best['pytorch']:.2f}x")
    flops = models.flops_per_token(dataclasses.replace(config_lib.load_config_file(
        "configs/train/shakespeare_char.py").model, vocab_size=V))
    print(f"model FLOPs per token {flops:.3g}; lmjax achieves {flops * B * T / step_s / 1e9:.1f} GFLOP/s")
    assert math.isfinite(step_s)


if __name__ == "__main__":
    main()
