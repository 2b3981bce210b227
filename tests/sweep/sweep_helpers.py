"""Helpers for the sweep tests: tiny sweep files, launcher subprocesses, one-device workers.

Every training test uses the same tiny Transformer (d_model 16, 1 layer, context 16, batch 8) with
a cosine schedule of fixed length (optim.decay_steps=300): runs that differ only in train.steps or
data.train_tokens then compile to the same programs, and the persistent compilation cache serves
them (grid points vary train_tokens rather than seeds or learning rates where the test allows).
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SWEEP_TEMPLATE = '''
from lmjax.config import Config, DataConfig, LogConfig, OptimConfig, TrainConfig
from lmjax.models.transformer import TransformerConfig
from lmjax.config import apply_overrides
from lmjax.sweep import Point, Sweep, cartesian


def get_sweep():
    base = Config(model=TransformerConfig(context=16, d_model={d_model}, n_layers=1, n_heads=2),
                  data=DataConfig(source="shakespeare", tokenizer="char"),
                  optim=OptimConfig(lr=1e-3, warmup_steps=2, decay_steps=300, clip_norm={clip}),
                  train=TrainConfig(steps={steps}, batch_size={batch}, log_every=5, eval_every={eval_every},
                                    eval_batches=1, eval_batch_size=8, checkpoint_every={ckpt}),
                  log=LogConfig(wandb="disabled", progress=False))
    models = [TransformerConfig(context=16, d_model=d, n_layers=1, n_heads={heads}) for d in {widths}]
    points = cartesian(base, models=models, lrs={lrs}, steps={steps_axis}, seeds={seeds}, axes={axes})
    points += [Point(apply_overrides(base, o), o) for o in {extra}]
    return Sweep(points, name="{name}", vmap={vmap})
'''


def write_sweep(directory, *, name="tiny", lrs=(1e-3,), widths=(16,), steps=20, batch=8, eval_every=10,
                ckpt=5, heads=2, clip=1.0, vmap=False, steps_axis=(), seeds=(), unique=(), extra=()) -> str:
    """A sweep file: widths x lrs x steps_axis x seeds x unique (data.train_tokens) tiny Transformers,
    plus one point per dict of overrides in ``extra``."""
    axes = {"data.train_tokens": list(unique)} if unique else {}
    path = os.path.join(str(directory), f"{name}.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(SWEEP_TEMPLATE.format(
            d_model=widths[0], steps=steps, batch=batch, eval_every=eval_every, ckpt=ckpt, heads=heads,
            widths=list(widths), lrs=list(lrs), name=name, vmap=vmap, clip=clip, steps_axis=list(steps_axis),
            seeds=list(seeds), axes=axes, extra=list(extra))))
    return path


def one_device_env() -> dict:
    """The environment of a launcher subprocess (its workers pick their own XLA flags)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["WANDB_MODE"] = "disabled"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def lmjax_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "lmjax", *args]


def run_lmjax(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(lmjax_cmd(*args), env=one_device_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
