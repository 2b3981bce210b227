"""Throughput of 4 tiny models trained together (jax.vmap) vs one after another (the normal loop).

    python benchmarks/bench_vmap.py [--family transformer|lstm] [--steps 300] [--d-model 16] [--models 4]

Both sides run in this process on one CPU device, compiling their programs (no persistent cache), exactly
as a sweep worker would: "sequential" calls lmjax.train.loop.train for each run, "vmapped" calls
lmjax.sweep.vmap_train.train_group once. The runs differ in seed and learning rate. Printed:
end-to-end wall time (compilation included), steady-state training throughput summed over the
runs (tokens/s from metrics.jsonl, compilation and evaluation excluded), and the largest
difference between the two sides' losses (train and validation, every logged step).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"


def configs(args):
    from lmjax.config import Config, DataConfig, LogConfig, OptimConfig, TrainConfig
    from lmjax.models.recurrent import RecurrentConfig
    from lmjax.models.transformer import TransformerConfig

    if args.family == "transformer":
        model = TransformerConfig(context=args.context, d_model=args.d_model, n_layers=args.layers, n_heads=2)
    else:
        model = RecurrentConfig(family=args.family, context=args.context, d_embed=args.d_model,
                                d_hidden=args.d_model, n_layers=args.layers)
    base = Config(model=model,
                  data=DataConfig(source="shakespeare", tokenizer="char"),
                  optim=OptimConfig(lr=1e-3, warmup_steps=args.steps // 10),
                  train=TrainConfig(steps=args.steps, batch_size=args.batch, log_every=args.steps // 10,
                                    eval_every=args.steps // 2, eval_batches=2, eval_batch_size=16,
                                    checkpoint_every=args.steps, peak_flops=1e11),
                  log=LogConfig(wandb="disabled", progress=False))
    lrs = [1e-3, 1.5e-3, 2e-3, 1.2e-3, 8e-4, 1.8e-3, 1.1e-3, 1.3e-3]
    return [dataclasses.replace(base, name=f"bench-{i}", optim=dataclasses.replace(base.optim, lr=lrs[i % len(lrs)]),
                                train=dataclasses.replace(base.train, seed=i)) for i in range(args.models)]


def steady_tps(workdir: str) -> float:
    """Median tokens/s of the log intervals after the first (which holds the compilation)."""
    from lmjax.logging import read_metrics

    tps = [r["tokens_per_s"] for r in read_metrics(workdir) if "tokens_per_s" in r][1:]
    return statistics.median(tps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--family", default="transformer", choices=("transformer", "lstm", "gru", "rnn"))
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="alternate the modes this often; best of each")
    args = p.parse_args(argv)

    import jax

    from lmjax.logging import read_metrics
    from lmjax.sweep import vmap_train
    from lmjax.train.loop import train

    cfgs = configs(args)
    n, tokens = len(cfgs), args.steps * args.batch * args.context
    quiet = lambda m: None  # noqa: E731
    best = {"seq": (float("inf"), 0.0), "vm": (float("inf"), 0.0)}
    diff = 0.0
    for rep in range(args.repeats):  # alternate the two modes; keep each one's best (the machine is shared)
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("seq", "vm"):
                jax.clear_caches()  # each mode compiles its programs (no persistent cache is set up here)
                dirs = [os.path.join(tmp, f"{mode}{i}") for i in range(n)]
                t0 = time.perf_counter()
                if mode == "seq":
                    for cfg, d in zip(cfgs, dirs):
                        train(cfg, d, announce=quiet)
                else:
                    vmap_train.train_group(cfgs, dirs, announce=quiet)
                wall = time.perf_counter() - t0
                if mode == "seq":
                    tps = n * tokens / sum(tokens / steady_tps(d) for d in dirs)
                else:
                    tps = n * steady_tps(dirs[0])
                best[mode] = (min(best[mode][0], wall), max(best[mode][1], tps))
            for i in range(n):
                a = read_metrics(os.path.join(tmp, f"seq{i}"))
                b = read_metrics(os.path.join(tmp, f"vm{i}"))
                assert [r["step"] for r in a] == [r["step"] for r in b]
                for ra, rb in zip(a, b):
                    for k in ("train_loss", "val_loss"):
                        if k in ra:
                            diff = max(diff, abs(ra[k] - rb[k]))
    (seq_wall, seq_tps), (vm_wall, vm_tps) = best["seq"], best["vm"]

    print(f"\n{n} {args.family} models, width {args.d_model}, {args.layers} layer(s), context {args.context}, "
          f"batch {args.batch}, {args.steps} steps each; {os.cpu_count()} CPU cores, 1 XLA device, "
          f"best of {args.repeats}\n")
    print("| mode | end-to-end wall s | steady tokens/s (all runs) | speed-up end-to-end | speed-up steady |")
    print("|---|---|---|---|---|")
    print(f"| one after another | {seq_wall:.1f} | {seq_tps:,.0f} | 1.00x | 1.00x |")
    print(f"| vmapped together | {vm_wall:.1f} | {vm_tps:,.0f} | {seq_wall / vm_wall:.2f}x | {vm_tps / seq_tps:.2f}x |")
    print(f"\nlargest |loss difference| over all logged steps: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
