"""Generation speed: the Transformer's KV cache against recomputing the window at every step.

    .venv/bin/python benchmarks/bench_generate.py [--reps 2] [--batch 1 8]   (default: batch 1)

The model is configs/train/shakespeare_char.py's Transformer (d_model 128, 4 layers, 4 heads,
learned positions, tied embeddings, V = 65 characters; 0.8M parameters) with random weights:
speed does not depend on the weights. The prompt is "ROMEO:" (6 tokens) and 500 tokens are
sampled at T = 1.

Table 1, context 512 (learned positions extended to 512 slots): prompt + 500 tokens fit in the
context, so the cache never slides. "recompute" runs the full forward pass over a fixed
min(context, prompt + 500)-token window every step (one compiled shape, the fast form of
"recompute the prefix" in JAX) and reads the logits at the row's last position.

Table 2, context 64 (the config as trained): generation runs 442 tokens past the context. With
the default slide (keep = context - 1), every step past the context rebuilds the cache from the
last 63 tokens, which is exactly the recompute distribution and costs about as much; keep = 32
rebuilds every 32 steps (tokens then see 33..64 tokens of context).

Each row: first call (compile + run), then the median of --reps timed runs; speedup is against
the recompute row of the same table and batch. A greedy run checks that cache and recompute
produce the same tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lmjax import config as config_lib, models
from lmjax.generate import ModelBundle, generate

PROMPT = [30, 27, 25, 17, 27, 10]  # "ROMEO:" in the Tiny Shakespeare character vocabulary
NEW = 500


def make_bundle(context: int) -> ModelBundle:
    cfg = config_lib.load_config_file("configs/train/shakespeare_char.py").model
    cfg = dataclasses.replace(cfg, vocab_size=65, context=context)
    model = models.build(cfg)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, context), jnp.int32))["params"]
    return ModelBundle(cfg, params=params)


def timed(fn, reps: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def table(title: str, bundle: ModelBundle, modes: dict, batches: list[int], reps: int) -> None:
    print(f"\n{title}")
    print(f"{'batch':>5} {'mode':<28} {'first_s':>8} {'gen_s':>8} {'tokens/s':>10} {'speedup':>8}")
    for b in batches:
        prompts = [PROMPT] * b
        rows = {}
        for name, kw in modes.items():
            first, gen_s = timed(lambda: generate(bundle, prompts, NEW, jax.random.key(0), **kw), reps)
            rows[name] = (first, gen_s)
        base = rows["recompute (no cache)"][1]
        for name, (first, gen_s) in rows.items():
            print(f"{b:>5} {name:<28} {first:>8.2f} {gen_s:>8.3f} {b * NEW / gen_s:>10,.0f} {base / gen_s:>7.1f}x")


def check_same_tokens(bundle: ModelBundle, **kw) -> None:
    a = generate(bundle, [PROMPT], NEW, 0, temperature=0, **kw)
    b = generate(bundle, [PROMPT], NEW, 0, temperature=0, use_cache=False)
    assert np.array_equal(a.tokens_BM, b.tokens_BM), "cache and recompute disagree"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)); "
          f"prompt {len(PROMPT)} tokens + {NEW} new, T = 1")
    long = make_bundle(512)
    print(f"parameters: {models.param_counts(long.model_cfg)['total']:,} at context 512, "
          f"{models.param_counts(dataclasses.replace(long.model_cfg, context=64))['total']:,} at context 64")
    table("Table 1: context 512, no slide", long,
          {"KV cache": {}, "recompute (no cache)": {"use_cache": False}}, args.batch, args.reps)
    check_same_tokens(long)
    short = make_bundle(64)
    table("Table 2: context 64, sliding past the context", short,
          {"KV cache, slide keep 63": {}, "KV cache, slide keep 32": {"slide_keep": 32},
           "recompute (no cache)": {"use_cache": False}}, args.batch, args.reps)
    check_same_tokens(short)
    print("\ngreedy tokens: KV cache == recompute in both settings")


if __name__ == "__main__":
    main()
